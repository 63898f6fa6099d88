// The API's SQL (prepared statements) and the typed calls that run them: see repository.hpp.
#include "repository.hpp"

#include <charconv>

namespace catwalk::api {

namespace {
// Formats an int32 into a caller-provided buffer: no allocation on the hot path.
struct IntText {
  char buf[16];  // "-2147483648" and a NUL fit
  explicit IntText(std::int32_t v) {
    auto end = std::to_chars(buf, buf + sizeof buf - 1, v).ptr;
    *end = '\0';
  }
  const char* c_str() const { return buf; }
};

// All the SQL of the API. Names in catwalk.* are resolved again by PostgreSQL when the loader
// swaps the schema and drops the old one (plan invalidation), so these survive a publish.
// The documents are bytea (mostly gzip members): read in binary form, as their bytes.
constexpr Statement kDetail{0, "detail",
                            "SELECT detail FROM catwalk.product_docs WHERE id = $1::int4", true};
constexpr Statement kStyles{1, "styles",
                            "SELECT styles FROM catwalk.product_docs WHERE id = $1::int4", true};
constexpr Statement kRelated{2, "related",
                             "SELECT related FROM catwalk.product_docs WHERE id = $1::int4", true};
constexpr Statement kPage{3, "page",
                          "SELECT '[' || coalesce(string_agg(item, ',' ORDER BY rn), '') || ']' "
                          "FROM catwalk.product_docs WHERE rn > $1::int4 AND rn <= $2::int4"};
// A line's count is the sum of its rows' quantities (a cart.csv line is a row of quantity 1, a
// POST one row of its count); lines come in order of first addition.
constexpr Statement kCartGet{
    4, "cart_get",
    "SELECT product_id, sum(quantity) FROM public.cart WHERE user_session = $1::int4 AND active "
    "GROUP BY product_id ORDER BY min(id)"};
// One statement, so one implicit transaction: one row holding the quantity is inserted only when
// the sku exists (a POST costs one row whatever its count), and the answer sums the session's
// line including it. The CTE's row is not visible to the outer sum (same snapshot), hence the
// addition. Ids come from the bigserial: concurrent adds never collide.
constexpr Statement kCartAdd{
    5, "cart_add",
    "WITH ins AS ("
    "  INSERT INTO public.cart (user_session, product_id, active, quantity)"
    "  SELECT $1::int4, $2::int4, true, $3::int4"
    "  WHERE EXISTS (SELECT 1 FROM catwalk.skus WHERE id = $2::int4)"
    "  RETURNING quantity) "
    "SELECT (SELECT coalesce(sum(quantity), 0) FROM ins), "
    "(SELECT coalesce(sum(quantity), 0) FROM public.cart WHERE user_session = $1::int4 "
    "AND product_id = $2::int4 AND active)"};
constexpr Statement kPing{6, "ping", "SELECT 1"};
constexpr Statement kDocsAfter{
    7, "docs_after",
    "SELECT id, detail, styles, related FROM catwalk.product_docs WHERE id > $1::int4 "
    "ORDER BY id LIMIT $2::int4",
    true};

const Statement& doc_statement(DocKind k) {
  switch (k) {
    case DocKind::kDetail:
      return kDetail;
    case DocKind::kStyles:
      return kStyles;
    default:
      return kRelated;
  }
}
}  // namespace

bool is_unavailable(const std::exception& e) {
  if (dynamic_cast<const PoolUnavailable*>(&e)) return true;
  if (auto* db = dynamic_cast<const pg::DbError*>(&e)) {
    const auto& st = db->sqlstate();
    // Lost connection, server shutting down/starting, statement timeout, catalogue not loaded.
    return db->connection_lost() || st == "57014" || st == "42P01" || st == "3F000" ||
           st == "53300";
  }
  return false;
}

bool is_catalogue_missing(const std::exception& e) {
  auto* db = dynamic_cast<const pg::DbError*>(&e);
  return db != nullptr && (db->sqlstate() == "42P01" || db->sqlstate() == "3F000");
}

template <typename F>
auto Repository::read(Deadline deadline, F&& f) {
  for (int attempt = 0;; ++attempt) {
    auto lease = pool_.borrow(deadline);
    try {
      return f(lease.conn());
    } catch (const pg::DbError& e) {
      bool lost = e.connection_lost() || !lease.conn().ok();
      if (lost) lease.discard();
      // A deadline (57014) also leaves the connection closed, but its time is spent: no retry.
      if (lost && !lease.fresh() && attempt == 0 && e.sqlstate() != "57014") continue;
      throw;
    }
  }
}

std::optional<std::string> Repository::product_doc(DocKind kind, std::int32_t id) {
  IntText p(id);
  const char* values[] = {p.c_str()};
  const Deadline d = deadline();
  return read(d, [&](PooledConnection& c) -> std::optional<std::string> {
    auto r = c.exec(doc_statement(kind), 1, values, d);
    if (r.rows() == 0) return std::nullopt;
    return std::string(r.get(0, 0));
  });
}

std::vector<ProductDocs> Repository::product_docs_after(std::int32_t after_id, std::int32_t limit) {
  IntText a(after_id), n(limit);
  const char* values[] = {a.c_str(), n.c_str()};
  const Deadline d = std::chrono::steady_clock::now() + kBatchTimeout;
  return read(d, [&](PooledConnection& c) {
    auto r = c.exec(kDocsAfter, 2, values, d);
    std::vector<ProductDocs> out;
    out.reserve(static_cast<std::size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) {
      // Binary results: the id is int4 in network byte order.
      std::string_view id = r.get(i, 0);
      std::uint32_t v = 0;
      for (char c : id.substr(0, 4)) v = (v << 8) | static_cast<unsigned char>(c);
      out.push_back({static_cast<std::int32_t>(v), std::string(r.get(i, 1)),
                     std::string(r.get(i, 2)), std::string(r.get(i, 3))});
    }
    return out;
  });
}

std::string Repository::product_page(std::int32_t lo, std::int32_t hi) {
  IntText a(lo), b(hi);
  const char* values[] = {a.c_str(), b.c_str()};
  const Deadline d = deadline();
  return read(d, [&](PooledConnection& c) {
    auto r = c.exec(kPage, 2, values, d);
    return std::string(r.get(0, 0));
  });
}

std::vector<CartLine> Repository::cart(std::int32_t session) {
  IntText p(session);
  const char* values[] = {p.c_str()};
  const Deadline d = deadline();
  return read(d, [&](PooledConnection& c) {
    auto r = c.exec(kCartGet, 1, values, d);
    std::vector<CartLine> out;
    out.reserve(static_cast<std::size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) out.push_back({r.get_int(i, 0), r.get_int(i, 1)});
    return out;
  });
}

std::optional<std::int64_t> Repository::add_to_cart(std::int32_t session, std::int32_t sku,
                                                    std::int32_t count) {
  IntText a(session), b(sku), n(count);
  const char* values[] = {a.c_str(), b.c_str(), n.c_str()};
  // Not retried: a connection lost mid-statement may or may not have committed, and a retry
  // could add the units twice. The client sees 503 and decides.
  const Deadline d = deadline();
  auto lease = pool_.borrow(d);
  try {
    auto r = lease.conn().exec(kCartAdd, 3, values, d);
    std::int64_t inserted = r.get_int(0, 0);
    if (inserted == 0) return std::nullopt;
    return inserted + r.get_int(0, 1);
  } catch (const pg::DbError& e) {
    if (e.connection_lost() || !lease.conn().ok()) lease.discard();
    throw;
  }
}

void Repository::ping() {
  const Deadline d = deadline();
  read(d, [&](PooledConnection& c) {
    c.exec(kPing, 0, nullptr, d);
    return 0;
  });
}

}  // namespace catwalk::api
