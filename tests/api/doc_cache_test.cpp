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

TEST_CASE("DocCache: a put that may not evict stops at the budget and keeps what is there") {
  DocCache c(16 * 4096);  // 4 KiB per shard
  c.set_usable(true);
  const auto g = c.generation();
  // Keys 0, 16, 32, ... share shard 0: three 1000-byte documents fit, the fourth does not.
  int stored = 0;
  DocCache::PutResult last = DocCache::PutResult::kStored;
  for (std::uint64_t k = 0; k < 16 * 10; k += 16) {
    last = c.put(k, g, std::string(1000, 'x'), DocCache::Evict::kNo);
    if (last != DocCache::PutResult::kStored) break;
    ++stored;
  }
  CHECK(last == DocCache::PutResult::kFull);
  CHECK(stored >= 3);
  CHECK(c.get(0));  // nothing was evicted
  CHECK(c.entries() == static_cast<std::size_t>(stored));
  CHECK(c.put(0, g, "again", DocCache::Evict::kNo) == DocCache::PutResult::kPresent);
  CHECK(c.put(1, g + 1, "other generation") == DocCache::PutResult::kStale);
  CHECK(c.put(2, g, std::string(5000, 'x')) == DocCache::PutResult::kTooBig);
  // A miss may evict to make room.
  CHECK(c.put(16 * 100, g, std::string(1000, 'y')) == DocCache::PutResult::kStored);
}
