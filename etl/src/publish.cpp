#include "publish.hpp"

#include <fmt/format.h>

#include "catwalk/etl/errors.hpp"
#include "table_spec.hpp"

namespace catwalk::etl {

// Refuses to publish a catalogue that is empty, or much smaller than the published one,
// unless the user asked for it: a truncated or mis-exported product.csv must not replace
// a good catalogue (the API would serve 404s for everything).
void check_catalogue_size(const FileStats& products, std::uint64_t published,
                          const LoadOptions& o) {
  if (products.loaded == 0 && !o.allow_empty) {
    std::string why = products.read == 0
                          ? "product.csv holds only a header"
                          : fmt::format(
                                "every one of the {} lines of product.csv was rejected "
                                "(see {})",
                                products.read, o.rejects_dir);
    throw RefusedPublish(fmt::format(
        "{}: the catalogue would be empty; nothing was published. Pass --allow-empty to "
        "publish an empty catalogue on purpose",
        why));
  }
  if (products.loaded == 0) return;  // --allow-empty: emptying it is what was asked for
  if (o.use_database && !o.allow_shrink &&
      static_cast<double>(products.loaded) < kMinKeptShare * static_cast<double>(published)) {
    throw RefusedPublish(fmt::format(
        "this export has {} products, fewer than half of the {} published now; nothing was "
        "published. Check the export is complete, or pass --allow-shrink if it is meant to "
        "be this small",
        products.loaded, published));
  }
}

std::uint64_t publish_staging(pg::Connection& c) {
  pg::Transaction tx(c);
  c.exec("SELECT version FROM public.catwalk_publish FOR UPDATE");
  // Left by a load stopped between its swap and its drop_retired (the load's start drops it
  // too); absent, this takes no lock.
  c.exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", kRetiredSchema));
  c.exec(fmt::format("ALTER SCHEMA {} RENAME TO {}", kPublishedSchema, kRetiredSchema));
  c.exec(fmt::format("ALTER SCHEMA {} RENAME TO {}", kStagingSchema, kPublishedSchema));
  // Carts written through the API survive: rows whose id is present are left alone.
  std::string cart_import = c.quote_ident(spec_of(TableRole::kCart).table);
  auto ins = c.exec(
      fmt::format("WITH ins AS (INSERT INTO public.cart (id, user_session, product_id, active)"
                  " SELECT id, user_session, product_id, active FROM {}.{} ORDER BY pos"
                  " ON CONFLICT (id) DO NOTHING RETURNING 1) SELECT count(*) FROM ins",
                  kPublishedSchema, cart_import));
  c.exec(
      "SELECT setval('public.cart_id_seq', m) FROM (SELECT max(id) AS m FROM public.cart) x"
      " WHERE m > (SELECT last_value FROM public.cart_id_seq)");
  c.exec("UPDATE public.catwalk_publish SET version = version + 1, published_at = now()");
  tx.commit();
  return static_cast<std::uint64_t>(ins.get_int(0, 0));
}

void drop_retired(pg::Connection& c) {
  c.exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", kRetiredSchema));
}

}  // namespace catwalk::etl
