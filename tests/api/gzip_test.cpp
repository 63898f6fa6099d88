// The gzip helpers the loader and the API share: round trip, trailer, corrupt input.
#include "catwalk/gzip.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace catwalk;

TEST_CASE(
    "gzip: a compressed document inflates to itself, and the trailer holds its CRC and size") {
  gzip::Compressor z(1);
  gzip::Inflater inflater;
  for (std::string doc : {std::string("{\"product_id\":\"1\",\"results\":[]}"), std::string("[]"),
                          std::string(100000, 'a'), std::string("caf\xc3\xa9 \"quoted\"")}) {
    std::string gz, back;
    z.compress(doc, gz);
    REQUIRE(gzip::is_gzip(gz));
    CHECK_FALSE(gzip::is_gzip(doc));
    REQUIRE(inflater.inflate(gz, back));
    CHECK(back == doc);
    auto t = gzip::trailer(gz);
    REQUIRE(t);
    CHECK(t->size == doc.size());
    CHECK(t->crc32 == gzip::crc32(doc));
    std::string again;
    z.compress(doc, again);
    CHECK(again == gz);  // deterministic: the same document, the same bytes and ETag
  }
}

TEST_CASE("gzip: a corrupt or cut member does not inflate") {
  gzip::Compressor z(1);
  gzip::Inflater inflater;
  std::string gz, out;
  z.compress(std::string(5000, 'x') + "tail", gz);
  CHECK_FALSE(inflater.inflate(gz.substr(0, gz.size() - 1), out));
  std::string flipped = gz;
  flipped[gz.size() / 2] ^= 0x55;
  CHECK_FALSE(inflater.inflate(flipped, out));
  CHECK_FALSE(inflater.inflate("not gzip", out));
  CHECK(inflater.inflate(gz, out));  // still usable after failures
  CHECK(out.ends_with("tail"));
  CHECK(gzip::crc32("123456789") == 0xcbf43926u);  // the CRC-32 check value
}
