#pragma once
// The last phase of a load: the guard that refuses a catalogue much smaller than the published
// one, then the swap that publishes the staging schema in one transaction.
#include <cstdint>

#include "catwalk/etl/loader.hpp"
#include "catwalk/etl/summary.hpp"
#include "catwalk/pg.hpp"

namespace catwalk::etl {

// Throws RefusedPublish when `products` (product.csv's figures) would publish no product
// (unless options.allow_empty), or, for a load, fewer than kMinKeptShare of the `published`
// products (unless options.allow_shrink).
void check_catalogue_size(const FileStats& products, std::uint64_t published,
                          const LoadOptions& options);

// In one transaction: the staging schema replaces the published one (dropped), cart.csv's
// rows merge into public.cart (ids already there are left alone), and the publish version
// is bumped for the API's watcher. Returns how many cart rows were inserted. Throws
// pg::DbError; then nothing changed.
std::uint64_t publish_staging(pg::Connection& c);

}  // namespace catwalk::etl
