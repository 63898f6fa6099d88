// The API's SQL (prepared statements) and the typed calls that run them: see repository.hpp.
#include "repository.hpp"

#include <fmt/format.h>

#include <charconv>
#include <stdexcept>

#include "catwalk/gzip.hpp"
#include "catwalk/pg.hpp"

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
// A page's entries are cut from the products' details (see list_item_of), not stored apart.
constexpr Statement kPage{
    3, "page",
    "SELECT detail FROM catwalk.product_docs WHERE rn > $1::int4 AND rn <= $2::int4 ORDER BY rn",
    true};
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
// A batch of documents (MissBatcher): $1 the ids, $2 each one's DocKind; each row is a position
// in the arrays (from 1) and that document. The CASE reads (and detoasts) only the column asked
// for.
constexpr Statement kDocs{
    7, "docs",
    "SELECT w.i::int4, CASE w.k WHEN 0 THEN d.detail WHEN 1 THEN d.styles ELSE d.related END "
    "FROM unnest($1::int4[], $2::int4[]) WITH ORDINALITY AS w(id, k, i) "
    "JOIN catwalk.product_docs d ON d.id = w.id",
    true};

// A big-endian uint32 (binary results, COPY's binary format).
std::uint32_t be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<std::uint32_t>(u[0]) << 24 | static_cast<std::uint32_t>(u[1]) << 16 |
         static_cast<std::uint32_t>(u[2]) << 8 | u[3];
}

}  // namespace

bool is_unavailable(const std::exception& e) {
  if (dynamic_cast<const PoolUnavailable*>(&e)) return true;
  if (auto* db = dynamic_cast<const pg::DbError*>(&e)) {
    const auto& st = db->sqlstate();
    // Lost connection, server shutting down/starting, statement timeout, catalogue not loaded;
    // 40001 on a hot standby: a read cancelled so that the replica can replay a publish (a
    // conflict with recovery, after max_standby_streaming_delay).
    return db->connection_lost() || st == "57014" || st == "42P01" || st == "3F000" ||
           st == "53300" || st == "40001";
  }
  return false;
}

bool is_catalogue_missing(const std::exception& e) {
  auto* db = dynamic_cast<const pg::DbError*>(&e);
  return db != nullptr && (db->sqlstate() == "42P01" || db->sqlstate() == "3F000");
}

template <typename F>
auto Repository::read(ConnectionPool& pool, Deadline deadline, F&& f) {
  for (int attempt = 0;; ++attempt) {
    auto lease = pool.borrow(deadline);
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

void Repository::product_docs(std::span<const DocRequest> wanted, Deadline deadline,
                              const std::function<void(std::size_t, std::string_view)>& sink) {
  if (wanted.empty()) return;
  // int4[] parameters in their text form: only our own integers go in.
  std::string ids = "{", kinds = "{";
  for (const DocRequest& w : wanted) {
    if (ids.size() > 1) {
      ids += ',';
      kinds += ',';
    }
    ids += std::to_string(w.id);
    kinds += std::to_string(static_cast<int>(w.kind));
  }
  ids += '}';
  kinds += '}';
  const char* values[] = {ids.c_str(), kinds.c_str()};
  read(catalogue_, deadline, [&](PooledConnection& c) {
    auto r = c.exec(kDocs, 2, values, deadline);
    for (int row = 0; row < r.rows(); ++row) {
      const std::string_view at = r.get(row, 0);
      if (at.size() != 4) throw std::runtime_error("a batch row's position is not an int4");
      const std::uint32_t i = be32(at.data());
      if (i < 1 || i > wanted.size()) throw std::runtime_error("a batch row's position is wrong");
      sink(i - 1, r.get(row, 1));
    }
    return 0;
  });
}

std::vector<std::string> Repository::page_details(std::int32_t lo, std::int32_t hi) {
  IntText a(lo), b(hi);
  const char* values[] = {a.c_str(), b.c_str()};
  const Deadline d = deadline();
  return read(catalogue_, d, [&](PooledConnection& c) {
    auto r = c.exec(kPage, 2, values, d);
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.get(i, 0));
    return out;
  });
}

std::vector<CartLine> Repository::cart(std::int32_t session) {
  IntText p(session);
  const char* values[] = {p.c_str()};
  const Deadline d = deadline();
  return read(pool_, d, [&](PooledConnection& c) {
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
  read(pool_, d, [&](PooledConnection& c) {
    c.exec(kPing, 0, nullptr, d);
    return 0;
  });
}

void Repository::ping_catalogue() {
  const Deadline d = deadline();
  read(catalogue_, d, [&](PooledConnection& c) {
    c.exec(kPing, 0, nullptr, d);
    return 0;
  });
}

namespace {
// COPY's binary format, as the server writes it: a header, then per row an int16 field count and
// per field an int32 length (-1: NULL) and the bytes, then an int16 -1.
constexpr std::string_view kCopySignature{"PGCOPY\n\377\r\n\0", 11};

}  // namespace

namespace {
// Parses one binary COPY message (see kCopySignature) into `fields`, skipping the header on the
// first message; false for the trailer.
template <std::size_t N>
bool copy_row(std::string_view m, bool& first, std::string_view (&fields)[N]) {
  if (first) {
    first = false;
    // Signature, flags (4 bytes), header extension length (4 bytes) and the extension.
    if (!m.starts_with(kCopySignature) || m.size() < 19)
      throw std::runtime_error("unexpected COPY header from the server");
    m.remove_prefix(15 + be32(m.data() + 15) + 4);
  }
  if (m.size() < 2 || (m[0] == '\xff' && m[1] == '\xff')) return false;  // the trailer
  std::size_t at = 2;
  for (auto& f : fields) {
    if (at + 4 > m.size()) throw std::runtime_error("a COPY row from the server is cut short");
    const std::uint32_t len = be32(m.data() + at);
    at += 4;
    if (len == 0xFFFFFFFFu || at + len > m.size())
      throw std::runtime_error("a COPY row from the server is malformed");
    f = m.substr(at, len);
    at += len;
  }
  return true;
}

std::int32_t int4_field(std::string_view f) {
  if (f.size() != 4) throw std::runtime_error("a COPY field is not an int4");
  return static_cast<std::int32_t>(be32(f.data()));
}

// The fingerprint scan's SELECT. Narrow: the fp_* columns the loader's schema computes
// (migrations/002: length, then the last 8 bytes or the whole short JSON), read by an index-only
// scan of the primary key that INCLUDEs them (004): about 70 MB at full scale. Otherwise (a
// catalogue loaded before those columns existed) the same values computed from the documents:
// substring() of a bytea stored EXTERNAL reads only the TOAST chunks holding the slice, and
// length() the stored size, but the scan still reads the whole 1.2 GB heap.
std::string compute_fingerprints_select() {
  std::string q = "SELECT id";
  for (const char* d : {"detail", "styles", "related"}) {  // DocKind's order
    q += fmt::format(
        ", int4send(length({0})) || CASE WHEN length({0}) > 64 AND substring({0} FROM 1 FOR 2) = "
        "'\\x1f8b'::bytea THEN substring({0} FROM 5 FOR 4) || substring({0} FROM length({0}) - 7) "
        "ELSE {0} END",
        d);
  }
  return q + " FROM catwalk.product_docs";
}
}  // namespace

std::string fingerprint_select(bool narrow) {
  if (narrow)
    return "SELECT id, fp_detail, fp_styles, fp_related FROM catwalk.product_docs ORDER BY id";
  return compute_fingerprints_select();
}

bool catalogue_has_fingerprints(DbConnection& conn, Deadline deadline) {
  auto r = conn.exec(
      "SELECT count(*) FROM pg_attribute WHERE attrelid = 'catwalk.product_docs'::regclass "
      "AND attname IN ('fp_detail', 'fp_styles', 'fp_related') AND NOT attisdropped",
      deadline);
  return r.rows() == 1 && r.get_int(0, 0) == 3;
}  // namespace

bool stream_product_docs(DbConnection& conn, std::chrono::milliseconds idle,
                         const std::function<bool(const ProductDocsView&)>& sink) {
  bool first = true;
  return conn.copy_out(
      "COPY catwalk.product_docs (id, detail, styles, related) TO STDOUT (FORMAT binary)", idle,
      [&](std::string_view m) {
        std::string_view f[4];
        if (!copy_row(m, first, f)) return true;
        return sink({int4_field(f[0]), f[1], f[2], f[3]});
      });
}

bool matches(std::string_view cached, const DocFingerprint& f) {
  if (f.probe.size() == f.length) return cached == f.probe;  // a JSON document, whole
  // A gzip member: the same JSON when its checks are the same, whatever the compressed bytes
  // (their length included): the loader's encoder writes a document's JSON according to the
  // documents before it, so an unchanged document may come back a few bytes longer or shorter.
  if (!gzip::is_gzip(cached)) return false;
  // 12 bytes: the header's content check (bytes 4-7, gzip::header_check), then the trailer.
  if (f.probe.size() == 12)
    return cached.substr(4, 4) == f.probe.substr(0, 4) && cached.ends_with(f.probe.substr(4));
  // 8: fp columns of a catalogue loaded before the check existed: the trailer alone.
  return f.probe.size() == 8 && cached.ends_with(f.probe);
}

CatalogueId read_catalogue_id(DbConnection& conn, Deadline deadline) {
  auto r = conn.exec(
      "SELECT current_database(), version, "
      "(extract(epoch FROM published_at) * 1000000)::int8 FROM public.catwalk_publish",
      deadline);
  // No row (the migration inserts one): as a catalogue never published.
  if (r.rows() == 0) return CatalogueId{"", 0, 0};
  return CatalogueId{std::string(r.get(0, 0)), r.get_int(0, 1), r.get_int(0, 2)};
}

bool stream_fingerprints(DbConnection& conn, std::chrono::milliseconds idle,
                         const std::function<bool(const ProductFingerprints&)>& sink) {
  const bool narrow = catalogue_has_fingerprints(conn, std::chrono::steady_clock::now() + idle);
  // The index-only scan whatever the statistics say (a sequential scan would read the heap).
  // SET LOCAL: the caller's transaction ends it.
  if (narrow) conn.exec("SET LOCAL enable_seqscan = off", std::chrono::steady_clock::now() + idle);
  const std::string sql = "COPY (" + fingerprint_select(narrow) + ") TO STDOUT (FORMAT binary)";
  bool first = true;
  return conn.copy_out(sql.c_str(), idle, [&](std::string_view m) {
    std::string_view f[4];
    if (!copy_row(m, first, f)) return true;
    ProductFingerprints p;
    p.id = int4_field(f[0]);
    // The columns come as detail, styles, related: DocKind's order. Each: the stored length
    // (int4), then the probe.
    for (int k = 0; k < 3; ++k) {
      const std::string_view fp = f[1 + k];
      if (fp.size() < 4) throw std::runtime_error("a fingerprint from the server is malformed");
      p.docs[k].length = be32(fp.data());
      p.docs[k].probe = fp.substr(4);
    }
    return sink(p);
  });
}

void fetch_product_docs(DbConnection& conn, const std::vector<std::int32_t>& ids, Deadline deadline,
                        const std::function<void(const ProductDocsView&)>& sink) {
  if (ids.empty()) return;
  // An int4[] parameter in its text form: only our own integers go in.
  std::string array = "{";
  for (std::int32_t id : ids) {
    if (array.size() > 1) array += ',';
    array += std::to_string(id);
  }
  array += '}';
  const char* values[] = {array.c_str()};
  auto r = conn.exec_params(
      "SELECT id, detail, styles, related FROM catwalk.product_docs WHERE id = ANY($1::int4[])", 1,
      values, deadline, true);
  for (int i = 0; i < r.rows(); ++i)
    sink({int4_field(r.get(i, 0)), r.get(i, 1), r.get(i, 2), r.get(i, 3)});
}

}  // namespace catwalk::api
