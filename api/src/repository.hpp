#pragma once
// All the SQL of the API, behind typed calls. The repository never knows about HTTP; its
// callers never build SQL. Every call borrows one pooled connection for one prepared statement.
//
// Errors: PoolUnavailable or pg::DbError (classify with is_unavailable()) when the database
// cannot answer, also when it does not answer in time; values (std::nullopt) for "no such
// product" / "no such sku".
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "doc_cache.hpp"
#include "pool.hpp"

namespace catwalk::api {

enum class DocKind : int { kDetail = 0, kStyles = 1, kRelated = 2 };

// The document cache's key of a product's document of one kind.
inline std::uint64_t doc_key(DocKind kind, std::int32_t id) {
  return (static_cast<std::uint64_t>(kind) << 32) | static_cast<std::uint32_t>(id);
}

// One product's three documents as stored (a gzip member, or the JSON where gzip would not make
// it smaller: see migrations/002), as the warmer streams them; valid during the callback only.
struct ProductDocsView {
  std::int32_t id = 0;
  std::string_view detail, styles, related;
};

// One document a request asks for (MissBatcher batches them).
struct DocRequest {
  DocKind kind = DocKind::kDetail;
  std::int32_t id = 0;
};

struct CartLine {
  std::int64_t sku_id = 0;
  std::int64_t count = 0;
};

class Repository {
 public:
  // `pool` (the primary) serves the cart and every write; `catalogue` (a streaming replica, when
  // the API has --read-db) serves the catalogue reads: documents, pages and the warm-up.
  // Every call answers (or throws) within `timeout`, whatever the database does.
  Repository(ConnectionPool& pool, std::chrono::milliseconds timeout,
             ConnectionPool* catalogue = nullptr)
      : pool_(pool), catalogue_(catalogue != nullptr ? *catalogue : pool), timeout_(timeout) {}

  // The stored bodies of /products/:id, /styles or /related (gzip, or JSON where gzip would be
  // longer, as ProductDocsView holds them) for many documents in one statement, by `deadline`
  // (a batch of requests' misses: MissBatcher): sink(index in wanted, document) for each one
  // found, in no particular order; an unknown product gets no call.
  void product_docs(std::span<const DocRequest> wanted, Deadline deadline,
                    const std::function<void(std::size_t, std::string_view)>& sink);
  // The stored details (as product_docs') of the products with rn in (lo, hi], in rn order: the
  // page's entries are cut from them (list_item_of).
  std::vector<std::string> page_details(std::int32_t lo, std::int32_t hi);
  std::vector<CartLine> cart(std::int32_t session);
  // Adds `count` units as one row; returns the session's count for the sku after the (committed)
  // write, or nullopt when the sku does not exist (nothing written).
  std::optional<std::int64_t> add_to_cart(std::int32_t session, std::int32_t sku,
                                          std::int32_t count);
  void ping();            // the primary
  void ping_catalogue();  // the catalogue's database (the primary when it is the same pool)
  bool separate_catalogue() const { return &catalogue_ != &pool_; }

 private:
  // Runs a read; a connection found dead (e.g. PostgreSQL restarted since its last use) is
  // discarded and the read retried once on a fresh one, so a restart costs no client a 503
  // once the server is back.
  template <typename F>
  auto read(ConnectionPool& pool, Deadline deadline, F&& f);
  Deadline deadline() const { return std::chrono::steady_clock::now() + timeout_; }

  ConnectionPool& pool_;
  ConnectionPool& catalogue_;
  const std::chrono::milliseconds timeout_;
};

// The warm-up's read: every product's documents in one COPY (binary) on `conn`, a connection of
// the warmer's own (a pooled one would be held for seconds), handed to `sink` one product at a
// time; `sink` returning false stops it. Each wait for the server is bounded by `idle`. Throws
// pg::DbError as the repository's calls do; true when every product was handed over.
bool stream_product_docs(DbConnection& conn, std::chrono::milliseconds idle,
                         const std::function<bool(const ProductDocsView&)>& sink);

// What the refresher compares to tell an unchanged document from a changed one without reading
// it: its stored length and `probe`, the whole document when it is stored as JSON (or is short),
// else the gzip member's bytes 4-7 (the header's content check) and its last 8 bytes (the CRC-32
// and length of the JSON: what the ETag is made of); 8 bytes only in fp columns loaded before the
// check existed. Valid during the callback only.
struct DocFingerprint {
  std::uint32_t length = 0;
  std::string_view probe;
};
struct ProductFingerprints {
  std::int32_t id = 0;
  DocFingerprint docs[3];  // indexed by DocKind
};
// True when `cached` is the document `f` describes: the same JSON (equal bytes for a JSON
// document; for a gzip member, a gzip member with the same content check in its header
// (gzip::header_check, the Adler-32 of the JSON) and the same trailer (CRC-32 and length), of any
// compressed length: the loader's encoder may write the same JSON in other bytes from one load
// to the next. The trailer alone would leave a same-length change 1 chance in 2^32 of being
// taken for the old document; with the header's check, 64 bits decide. The fp columns of a
// catalogue loaded before the check existed hold the trailer alone: then the trailer decides.
bool matches(std::string_view cached, const DocFingerprint& f);

// The catalogue `conn` reads: the database's name and catwalk_publish's row. Throws pg::DbError.
CatalogueId read_catalogue_id(DbConnection& conn, Deadline deadline);

// The fingerprint scan: every product's three fingerprints in one COPY on `conn`, handed to
// `sink` one product at a time (false stops it): from the fp_* columns the loader's schema
// computes, by an index-only scan, when the catalogue has them (SET LOCAL in the caller's
// transaction), else computed from the documents (a scan of the whole heap). Throws pg::DbError;
// true when every product was handed over.
bool stream_fingerprints(DbConnection& conn, std::chrono::milliseconds idle,
                         const std::function<bool(const ProductFingerprints&)>& sink);
// Whether the published catalogue has the fp_* columns (loaded by a catwalk-etl whose schema
// has them). Throws pg::DbError.
bool catalogue_has_fingerprints(DbConnection& conn, Deadline deadline);
// The scan's SELECT: id and the three fingerprints (each: int4 length, then the probe), from
// the fp_* columns (`narrow`) or computed from the documents. For tests (EXPLAIN).
std::string fingerprint_select(bool narrow);

// The documents of `ids` (a few thousand at most per call; ids no longer in the catalogue are
// left out), one prepared-free parameterized SELECT on `conn`, handed to `sink` one product at a
// time. Throws pg::DbError.
void fetch_product_docs(DbConnection& conn, const std::vector<std::int32_t>& ids, Deadline deadline,
                        const std::function<void(const ProductDocsView&)>& sink);

// True when an exception means "the database cannot answer now" (503), as opposed to a bug.
bool is_unavailable(const std::exception& e);
// True when the database answers but holds no published catalogue (no migrations, or no load
// yet): also a 503, but one only an operator can fix. Implies is_unavailable().
bool is_catalogue_missing(const std::exception& e);

}  // namespace catwalk::api
