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

// Where the previous catalogue goes at a publish, until drop_retired.
inline constexpr const char* kRetiredSchema = "catwalk_retired";

// In one transaction: the staging schema replaces the published one (renamed to
// kRetiredSchema), cart.csv's rows merge into public.cart (ids already there are left alone),
// and the publish version is bumped for the API's watcher. Returns how many cart rows were
// inserted. Throws pg::DbError; then nothing changed.
std::uint64_t publish_staging(pg::Connection& c);

// Drops the catalogue publish_staging retired, in a transaction of its own, after the swap has
// committed. In the swap's transaction the DROP held an ACCESS EXCLUSIVE lock on every old table
// until its commit had removed their files (1.5 s for the full-scale catalogue on a disk that
// discards, more for larger ones) and waited for any session still reading them (a pg_dump, a
// report): every reader of the catalogue, the API's included, queued behind it meanwhile. Now
// readers see the new catalogue as soon as the swap commits, and only this drop waits.
void drop_retired(pg::Connection& c);

}  // namespace catwalk::etl
