#include "doc_cache.hpp"

#include <doctest/doctest.h>

using namespace catwalk::api;

TEST_CASE("DocCache: a document read before an invalidation is never stored") {
  DocCache c(1 << 20);
  c.set_usable(true);
  REQUIRE(c.enabled());
  auto g = c.generation();
  c.put(1, g, "old");
  REQUIRE(c.get(1));
  CHECK(*c.get(1) == "old");
  auto before = c.generation();
  c.invalidate();
  CHECK_FALSE(c.get(1));
  c.put(1, before, "stale");  // read under the previous publish
  CHECK_FALSE(c.get(1));
  c.put(1, c.generation(), "new");
  CHECK(*c.get(1) == "new");
  CHECK(c.hits() >= 2);
}

TEST_CASE("DocCache: stays within its byte budget") {
  DocCache c(16 * 4096);  // 4 KiB per shard
  c.set_usable(true);
  for (std::uint64_t k = 0; k < 1000; ++k) c.put(k, c.generation(), std::string(1000, 'x'));
  CHECK(c.bytes() <= 16 * 4096);
  CHECK(c.entries() > 0);
  DocCache off(0);
  off.set_usable(true);
  CHECK_FALSE(off.enabled());
}
