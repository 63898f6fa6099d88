// Accept-Encoding negotiation, ETags and If-None-Match (RFC 9110), table-driven.
#include "http_caching.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace catwalk::api;

TEST_CASE("accepts_gzip: q-values decide") {
  struct Case {
    const char* header;
    bool gzip;
  };
  const Case cases[] = {
      {"", false},
      {"gzip", true},
      {"GZIP", true},
      {"x-gzip", true},
      {"gzip, deflate, br", true},
      {"deflate, gzip;q=1.0, *;q=0.5", true},
      {"br;q=1.0, gzip;q=0.8, *;q=0.1", true},
      {"gzip;q=0", false},
      {"gzip; q=0.000", false},
      {"gzip;q=0.001", true},
      {"br", false},
      {"identity", false},
      {"*", true},
      {"*;q=0", false},
      {"*, gzip;q=0", false},
      {"gzip;q=0.5, identity;q=1", false},  // prefers identity
      {"gzip;q=1, identity;q=0.5", true},
      {"gzip;q=0.5, identity;q=0", true},
      {"*;q=0, gzip", true},
      {"gzip;q=abc", false},  // malformed q: that coding refused
      {"gzip;q=2", false},
      {"gzip;level=9", true},
      {" , ,gzip , ", true},
      {",,,;;;=", false},
  };
  for (const auto& c : cases) {
    INFO("Accept-Encoding: " << std::string(c.header));
    CHECK(accepts_gzip(c.header) == c.gzip);
  }
}

TEST_CASE("weak_etag and if_none_match") {
  const std::string tag = weak_etag(0xdeadbeef, 1234);
  CHECK(tag == "W/\"deadbeef-4d2\"");
  CHECK(weak_etag(1, 2) == "W/\"00000001-2\"");
  // With a member's content check (the loader's gzip header): 64 bits of checks in the tag.
  CHECK(weak_etag(1, 2, 0xabc) == "W/\"00000001-2-00000abc\"");
  CHECK(weak_etag(1, 2, 0) == weak_etag(1, 2));  // a member without one (an older loader)
  struct Case {
    const char* header;
    bool match;
  };
  const Case cases[] = {
      {"", false},
      {"*", true},
      {"W/\"deadbeef-4d2\"", true},
      {"\"deadbeef-4d2\"", true},  // weak comparison: the W/ is not part of the opaque tag
      {"\"other\", W/\"deadbeef-4d2\"", true},
      {"\"other\" ,  \"deadbeef-4d2\" ", true},
      {"\"other\"", false},
      {"W/\"deadbeef-4d3\"", false},
      {"deadbeef-4d2", false},    // not quoted: malformed
      {"\"deadbeef-4d2", false},  // unterminated
      {"\"x\" junk \"deadbeef-4d2\"", false},
  };
  for (const auto& c : cases) {
    INFO("If-None-Match: " << std::string(c.header));
    CHECK(if_none_match(c.header, tag) == c.match);
  }
}
