// DocCache: generations, the budget, and the id-indexed arena layout.
#include "doc_cache.hpp"

#include <doctest/doctest.h>

#include <string>

#include "repository.hpp"

using namespace catwalk::api;

TEST_CASE("DocCache: a document read before an invalidation is never stored") {
  DocCache c(8 << 20);
  c.set_usable(true);
  REQUIRE(c.enabled());
  auto g = c.generation();
  CHECK(c.put(1, g, "old") == DocCache::PutResult::kStored);
  REQUIRE(c.get(1));
  CHECK(c.get(1).bytes == "old");
  auto before = c.generation();
  c.invalidate();
  CHECK(c.generation() == before + 1);
  CHECK_FALSE(c.get(1));
  CHECK(c.put(1, before, "stale") == DocCache::PutResult::kStale);  // read under the last publish
  CHECK_FALSE(c.get(1));
  CHECK(c.try_put(1, c.generation(), "new") == DocCache::PutResult::kStored);
  CHECK(c.get(1).bytes == "new");
  CHECK(c.try_put(1, before, "stale") == DocCache::PutResult::kStale);
  CHECK(c.hits() >= 2);
  CHECK(c.invalidations() == 1);
}

TEST_CASE("DocCache: a document stays readable while held, across an invalidation") {
  DocCache c(8 << 20);
  c.set_usable(true);
  c.put(doc_key(DocKind::kStyles, 7), c.generation(), std::string(3000, 's'));
  auto held = c.get(doc_key(DocKind::kStyles, 7));
  REQUIRE(held);
  c.invalidate();  // frees the generation only once `held` lets go
  CHECK(held.bytes == std::string(3000, 's'));
  CHECK_FALSE(c.get(doc_key(DocKind::kStyles, 7)));
}

TEST_CASE("DocCache: kinds and ids are separate keys, across pages and chunks") {
  DocCache c(64 << 20);  // 2 MiB chunks
  c.set_usable(true);
  const auto g = c.generation();
  // Ids on several slot pages (16,384 ids each) and far apart; documents spanning chunks.
  const std::int32_t ids[] = {1, 2, 16383, 16384, 16385, 1000000, 2147483647};
  for (std::int32_t id : ids) {
    for (auto kind : {DocKind::kDetail, DocKind::kStyles, DocKind::kRelated}) {
      std::string doc = std::to_string(id) + "/" + std::to_string(static_cast<int>(kind));
      doc.resize(doc.size() + 300000, 'x');
      REQUIRE(c.put(doc_key(kind, id), g, doc) == DocCache::PutResult::kStored);
    }
  }
  for (std::int32_t id : ids) {
    for (auto kind : {DocKind::kDetail, DocKind::kStyles, DocKind::kRelated}) {
      auto d = c.get(doc_key(kind, id));
      REQUIRE(d);
      CHECK(d.bytes.starts_with(std::to_string(id) + "/" + std::to_string(static_cast<int>(kind)) +
                                "x"));
      CHECK(d.bytes.size() == std::to_string(id).size() + 2 + 300000);
    }
  }
  CHECK(c.entries() == 21);
  CHECK_FALSE(c.get(doc_key(DocKind::kDetail, 3)));
  CHECK(c.put(doc_key(DocKind::kDetail, 1), g, "again") == DocCache::PutResult::kPresent);
  CHECK(c.get(doc_key(DocKind::kDetail, 1)).bytes.starts_with("1/0x"));
}

TEST_CASE("DocCache: stays within its byte budget and says when it is full") {
  const std::size_t budget = 4 << 20;  // 128 KiB chunks
  DocCache c(budget);
  c.set_usable(true);
  const auto g = c.generation();
  DocCache::PutResult last = DocCache::PutResult::kStored;
  int stored = 0;
  for (std::int32_t id = 1; id <= 100000; ++id) {
    last = c.put(doc_key(DocKind::kStyles, id), g, std::string(1000, 'x'));
    if (last != DocCache::PutResult::kStored) break;
    ++stored;
  }
  CHECK(last == DocCache::PutResult::kFull);
  CHECK(c.bytes() <= budget);
  CHECK(stored > 3000);                        // most of the budget holds documents
  CHECK(c.get(doc_key(DocKind::kStyles, 1)));  // nothing was evicted
  CHECK(c.entries() == static_cast<std::size_t>(stored));
  // A lower limit (the warmer's) stops earlier.
  DocCache w(budget);
  int warm = 0;
  for (std::int32_t id = 1; id <= 100000; ++id, ++warm) {
    if (w.put(doc_key(DocKind::kStyles, id), w.generation(), std::string(1000, 'x'), budget / 2) !=
        DocCache::PutResult::kStored)
      break;
  }
  CHECK(warm < stored * 2 / 3);
  CHECK(c.put(doc_key(DocKind::kStyles, 1), g, std::string(200 << 10, 'x')) ==
        DocCache::PutResult::kTooBig);  // larger than a chunk
  CHECK(c.put(doc_key(DocKind::kStyles, 2), g, "") == DocCache::PutResult::kTooBig);
  DocCache off(0);
  off.set_usable(true);
  CHECK_FALSE(off.enabled());
}

TEST_CASE("DocCache: a successor keeps the documents it is told to, same bytes, no copy") {
  DocCache c(8 << 20);
  c.set_usable(true);
  const auto g = c.generation();
  for (std::int32_t id = 1; id <= 3; ++id)
    REQUIRE(c.put(doc_key(DocKind::kStyles, id), g, "doc" + std::to_string(id)) ==
            DocCache::PutResult::kStored);
  auto held = c.get(doc_key(DocKind::kStyles, 2));
  auto s = c.successor();
  CHECK(s.previous(doc_key(DocKind::kStyles, 1)) == "doc1");
  CHECK(s.previous(doc_key(DocKind::kDetail, 1)).empty());
  CHECK(s.keep(doc_key(DocKind::kStyles, 1)));
  CHECK(s.keep(doc_key(DocKind::kStyles, 3)));
  CHECK_FALSE(s.keep(doc_key(DocKind::kStyles, 9)));
  CHECK(s.kept_entries() == 2);
  CHECK(s.kept_bytes() == 8);
  CHECK(s.previous_filled_bytes() == 12);
  const char* before = c.peek(doc_key(DocKind::kStyles, 1)).bytes.data();
  // Not visible before install().
  CHECK(c.get(doc_key(DocKind::kStyles, 2)));
  REQUIRE(c.install(std::move(s), CatalogueId{"db", 7, 70}));
  CHECK(c.catalogue() == CatalogueId{"db", 7, 70});
  CHECK(c.generation() > g);
  CHECK(c.entries() == 2);
  CHECK(c.get(doc_key(DocKind::kStyles, 1)).bytes == "doc1");
  CHECK(c.get(doc_key(DocKind::kStyles, 1)).bytes.data() == before);  // shared, not copied
  CHECK_FALSE(c.get(doc_key(DocKind::kStyles, 2)));                   // dropped
  CHECK(c.get(doc_key(DocKind::kStyles, 3)).bytes == "doc3");
  CHECK(held.bytes == "doc2");  // a reader of the previous generation is unaffected
  // A put read under the previous generation is stale; the new one appends after the shared
  // bytes (the chunk the previous generation was filling).
  CHECK(c.put(doc_key(DocKind::kStyles, 2), g, "old2") == DocCache::PutResult::kStale);
  CHECK(c.put(doc_key(DocKind::kStyles, 2), c.generation(), "new2") ==
        DocCache::PutResult::kStored);
  CHECK(c.get(doc_key(DocKind::kStyles, 2)).bytes == "new2");
  CHECK(c.get(doc_key(DocKind::kStyles, 3)).bytes == "doc3");
}

TEST_CASE("DocCache: a successor's prefetch changes nothing, whatever the key") {
  // The scan prefetches ids ahead of the row it checks: past the last id, ids of pages never
  // allocated, ids past kMaxId. None of that may fault, keep or change anything.
  DocCache c(8 << 20);
  REQUIRE(c.put(doc_key(DocKind::kStyles, 1), c.generation(), "doc1") ==
          DocCache::PutResult::kStored);
  auto s = c.successor();
  for (std::uint64_t id :
       {1ull, 2ull, 17ull, 1ull << 20, 0x7fffffffull, 0x80000010ull, 0xffffffffull})
    for (auto kind : {DocKind::kDetail, DocKind::kStyles, DocKind::kRelated})
      s.prefetch((static_cast<std::uint64_t>(kind) << 32) | id);
  CHECK(s.kept_entries() == 0);
  CHECK(s.previous(doc_key(DocKind::kStyles, 1)) == "doc1");
  CHECK(s.keep(doc_key(DocKind::kStyles, 1)));
  REQUIRE(c.install(std::move(s), CatalogueId{"db", 2, 0}));
  CHECK(c.entries() == 1);
  CHECK(c.get(doc_key(DocKind::kStyles, 1)).bytes == "doc1");
}

TEST_CASE("DocCache: a successor is not installed over an invalidation") {
  DocCache c(8 << 20);
  REQUIRE(c.put(doc_key(DocKind::kDetail, 1), c.generation(), "x") == DocCache::PutResult::kStored);
  auto s = c.successor();
  s.keep(doc_key(DocKind::kDetail, 1));
  c.invalidate();  // the database was lost meanwhile
  CHECK_FALSE(c.install(std::move(s), CatalogueId{"db", 2, 0}));
  CHECK(c.entries() == 0);
  CHECK_FALSE(c.catalogue());
  c.reset(CatalogueId{"db", 3, 0});
  CHECK(c.catalogue() == CatalogueId{"db", 3, 0});
  CHECK(c.entries() == 0);
}

TEST_CASE("DocCache: a staged generation is invisible until installed, and shares the budget") {
  const std::size_t budget = 4 << 20;  // 128 KiB chunks
  DocCache c(budget);
  c.set_usable(true);
  const auto g = c.generation();
  // The serving generation takes about half of the budget.
  int serving = 0;
  for (std::int32_t id = 1; c.bytes() < budget / 2; ++id, ++serving)
    REQUIRE(c.put(doc_key(DocKind::kStyles, id), g, std::string(1000, 'o')) ==
            DocCache::PutResult::kStored);
  auto st = c.staged();
  CHECK(st.room() == budget - c.bytes());
  CHECK(st.put(doc_key(DocKind::kStyles, 1), "new1") == DocCache::PutResult::kStored);
  CHECK(st.put(doc_key(DocKind::kStyles, 1), "again") == DocCache::PutResult::kPresent);
  CHECK(st.put(doc_key(DocKind::kStyles, 2), "") == DocCache::PutResult::kTooBig);
  CHECK(c.get(doc_key(DocKind::kStyles, 1)).bytes == std::string(1000, 'o'));  // not visible
  // The two generations together never pass the budget.
  DocCache::PutResult last = DocCache::PutResult::kStored;
  for (std::int32_t id = 2; id <= 100000 && last == DocCache::PutResult::kStored; ++id)
    last = st.put(doc_key(DocKind::kStyles, id), std::string(1000, 'n'));
  CHECK(last == DocCache::PutResult::kFull);
  CHECK(c.bytes() + st.bytes() <= budget);
  CHECK(st.entries() > 1000);
  CHECK(st.beside_current());
  const std::size_t staged_entries = st.entries();
  auto held = c.get(doc_key(DocKind::kStyles, 3));
  REQUIRE(c.install(std::move(st), CatalogueId{"db", 5, 50}));
  CHECK(c.catalogue() == CatalogueId{"db", 5, 50});
  CHECK(c.entries() == staged_entries);
  CHECK(c.get(doc_key(DocKind::kStyles, 1)).bytes == "new1");
  CHECK(c.get(doc_key(DocKind::kStyles, 3)).bytes == std::string(1000, 'n'));
  CHECK(held.bytes == std::string(1000, 'o'));  // a reader of the previous one is unaffected
  CHECK(c.put(doc_key(DocKind::kDetail, 1), g, "old") == DocCache::PutResult::kStale);
}

TEST_CASE("DocCache: a staged generation is not installed over an invalidation") {
  DocCache c(8 << 20);
  REQUIRE(c.put(doc_key(DocKind::kDetail, 1), c.generation(), "x") == DocCache::PutResult::kStored);
  auto st = c.staged();
  CHECK(st.put(doc_key(DocKind::kDetail, 1), "y") == DocCache::PutResult::kStored);
  c.invalidate();  // the database was lost meanwhile
  CHECK_FALSE(st.beside_current());
  CHECK_FALSE(c.install(std::move(st), CatalogueId{"db", 2, 0}));
  CHECK(c.entries() == 0);
  CHECK_FALSE(c.catalogue());
}
