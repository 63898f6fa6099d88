// Unit tests of how the repository classifies database errors: what answers 503 (the database
// cannot answer now) and what is a bug (500).
#include "repository.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "catwalk/gzip.hpp"
#include "catwalk/pg.hpp"

using catwalk::api::is_unavailable;
using catwalk::pg::DbError;

TEST_CASE("is_unavailable: a hot standby cancelling a read to replay a publish is a 503") {
  // "canceling statement due to conflict with recovery": what a replica (--read-db) raises
  // when a publish's DROP SCHEMA must be replayed past max_standby_streaming_delay.
  CHECK(is_unavailable(DbError("canceling statement due to conflict with recovery", "40001")));
}

TEST_CASE("is_unavailable: lost connections, timeouts and a missing catalogue, not bugs") {
  CHECK(is_unavailable(DbError("server closed the connection unexpectedly", "")));
  CHECK(is_unavailable(DbError("terminating connection due to administrator command", "57P01")));
  CHECK(is_unavailable(DbError("canceling statement due to statement timeout", "57014")));
  CHECK(is_unavailable(DbError("relation does not exist", "42P01")));
  CHECK_FALSE(is_unavailable(DbError("syntax error", "42601")));
  CHECK_FALSE(is_unavailable(std::runtime_error("a bug")));
}

TEST_CASE("matches: a fingerprint tells an unchanged stored document from a changed one") {
  using catwalk::api::DocFingerprint;
  using catwalk::api::matches;
  catwalk::gzip::Compressor z(6);
  std::string a, b, a_again;
  const std::string json_a(500, 'a'), json_b = std::string(499, 'a') + "b";
  z.compress(json_a, a);
  z.compress(json_b, b);
  z.compress(json_a, a_again);
  auto tail = [](const std::string& s) {
    return DocFingerprint{static_cast<std::uint32_t>(s.size()),
                          std::string_view(s).substr(s.size() - 8)};
  };
  CHECK(matches(a, tail(a_again)));
  // The same length, another JSON: only the trailer (CRC-32, length) tells them apart.
  CHECK_FALSE(matches(a, DocFingerprint{static_cast<std::uint32_t>(a.size()),
                                        std::string_view(b).substr(b.size() - 8)}));
  CHECK_FALSE(matches(a.substr(1), tail(a)));  // not a gzip member
  // The same JSON in other gzip bytes (another encoder, or the loader's after other
  // documents): kept, whatever its length, since the trailer and so the ETag are the same.
  std::string text = "{\"features\":[";
  const char* const words[] = {"linen", "blue", "shirt", "slim", "cotton", "wool", "coat", "red"};
  for (unsigned k = 0; k < 400; ++k) text += words[(k * 7 + k / 3) % 8] + std::to_string(k % 13);
  text += "]}";
  std::string fast, best;
  catwalk::gzip::Compressor(1).compress(text, fast);
  catwalk::gzip::Compressor(12).compress(text, best);
  REQUIRE(fast.size() != best.size());
  CHECK(matches(fast, tail(best)));
  CHECK(matches(best, tail(fast)));
  // Documents stored as JSON come whole.
  const std::string j1 = "[1,2]", j2 = "[1,3]";
  CHECK(matches(j1, DocFingerprint{5, j1}));
  CHECK_FALSE(matches(j1, DocFingerprint{5, j2}));
  // A JSON document never matches a gzip trailer, even of its length.
  const std::string fake = std::string(a.size() - 8, '{') + a.substr(a.size() - 8);
  CHECK_FALSE(matches(fake, tail(a)));
}

TEST_CASE("matches: the header's content check decides with the trailer (12-byte probes)") {
  using catwalk::api::DocFingerprint;
  using catwalk::api::matches;
  // What the fp_* columns hold for a gzip member: bytes 4-7, then the last 8.
  auto checks = [](const std::string& s) { return s.substr(4, 4) + s.substr(s.size() - 8); };
  std::string text = "{\"results\":[";
  for (unsigned k = 0; k < 300; ++k) text += "{\"sku\":" + std::to_string(k * 37 % 1000) + "},";
  text += "{}]}";
  // The same JSON from two compressors (other bytes, other histories): kept.
  catwalk::gzip::SmallCompressor one, two;
  std::string warm, x, y;
  for (int k = 0; k < 5; ++k) two.compress(text.substr(0, text.size() - 10 * k) + "]}", warm);
  one.compress(text, x);
  two.compress(text, y);
  CHECK(catwalk::gzip::header_check(x) == catwalk::gzip::content_check(text));
  const std::string px = checks(x), py = checks(y);
  CHECK(matches(x, DocFingerprint{static_cast<std::uint32_t>(y.size()), py}));
  CHECK(matches(y, DocFingerprint{static_cast<std::uint32_t>(x.size()), px}));
  // Another JSON whose trailer happens to be the same (a CRC-32 collision, forged here by
  // giving the member another header check): the header's check tells them apart.
  std::string collided = x;
  collided[5] = static_cast<char>(collided[5] ^ 0x5a);
  CHECK_FALSE(
      matches(x, DocFingerprint{static_cast<std::uint32_t>(collided.size()), checks(collided)}));
  // An 8-byte probe (fp columns from before the check): the trailer alone, as before.
  CHECK(matches(collided, DocFingerprint{static_cast<std::uint32_t>(x.size()), px.substr(4)}));
}
