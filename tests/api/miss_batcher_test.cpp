// MissBatcher with a fake query (no database): concurrent misses share a query, each request
// gets its own document, errors reach every request of a batch, a request's deadline holds
// whatever the batch ahead of it does, and a batch's documents are cached only in the
// generation they were read under.
#include "miss_batcher.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catwalk/pg.hpp"
#include "doc_cache.hpp"
#include "pool.hpp"
#include "repository.hpp"

using namespace catwalk::api;
using Clock = std::chrono::steady_clock;

namespace {
// What the fake database holds: every product with a positive id below 1000.
std::string doc_of(DocRequest w) {
  return "doc-" + std::to_string(static_cast<int>(w.kind)) + "-" + std::to_string(w.id);
}

// A fake query that records each batch's size and holds the first batch until open() (so that
// the requests after it queue up, deterministically).
struct FakeDb {
  std::mutex mu;
  std::condition_variable cv;
  bool open_ = false;
  std::vector<std::size_t> batches;

  void open() {
    std::lock_guard lock(mu);
    open_ = true;
    cv.notify_all();
  }
  MissBatcher::Fetch fetch() {
    return [this](std::span<const DocRequest> wanted, Deadline, const MissBatcher::Sink& sink) {
      {
        std::unique_lock lock(mu);
        batches.push_back(wanted.size());
        cv.wait_for(lock, std::chrono::seconds(10), [&] { return open_; });
      }
      for (std::size_t i = 0; i < wanted.size(); ++i)
        if (wanted[i].id > 0 && wanted[i].id < 1000) sink(i, doc_of(wanted[i]));
    };
  }
};
}  // namespace

TEST_CASE("MissBatcher: concurrent misses share a query, each gets its document, then cached") {
  DocCache cache(8 << 20);
  cache.set_usable(true);
  cache.reset(CatalogueId{"db", 1, 1});
  FakeDb db;
  MissBatcher misses(cache, db.fetch(), std::chrono::seconds(10));
  constexpr int kRequests = 40;  // distinct documents, the last ones of unknown products
  std::vector<std::optional<std::string>> got(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      const DocRequest w{static_cast<DocKind>(i % 3), i < 36 ? i + 1 : 5000 + i};
      got[static_cast<std::size_t>(i)] = misses.get(w.kind, w.id);
    });
  }
  // The first batch holds: the others queue behind it and go as one batch once it returns.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  db.open();
  for (auto& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    CAPTURE(i);
    const DocRequest w{static_cast<DocKind>(i % 3), i < 36 ? i + 1 : 5000 + i};
    if (i < 36) {
      REQUIRE(got[static_cast<std::size_t>(i)]);
      CHECK(*got[static_cast<std::size_t>(i)] == doc_of(w));
      auto cached = cache.peek(doc_key(w.kind, w.id));
      REQUIRE(cached);
      CHECK(cached.bytes == doc_of(w));
    } else {
      CHECK_FALSE(got[static_cast<std::size_t>(i)]);  // unknown: nothing, nothing cached
      CHECK_FALSE(cache.peek(doc_key(w.kind, w.id)));
    }
  }
  CHECK(misses.batched_requests() == kRequests);
  CHECK(misses.batches() == db.batches.size());
  // Sure to be at most 2 when the 300 ms sufficed for every thread to queue; a loaded machine
  // may start a few threads later. One query per request (no batching) would be 40.
  CHECK(misses.batches() <= 5);
}

TEST_CASE(
    "MissBatcher: a batch's error reaches each of its requests, and the next batch runs afresh") {
  DocCache cache(0);  // no cache: misses are still batched
  int calls = 0;
  MissBatcher misses(
      cache,
      [&](std::span<const DocRequest> wanted, Deadline, const MissBatcher::Sink& sink) {
        if (++calls == 1) throw catwalk::pg::DbError("canceling statement", "57014");
        sink(0, doc_of(wanted[0]));
      },
      std::chrono::seconds(5));
  CHECK_THROWS_AS(misses.get(DocKind::kStyles, 3), catwalk::pg::DbError);
  auto doc = misses.get(DocKind::kStyles, 3);
  REQUIRE(doc);
  CHECK(*doc == doc_of({DocKind::kStyles, 3}));
}

TEST_CASE("MissBatcher: each request is answered by its own deadline behind a hung batch") {
  // A query that hangs until its deadline (as DbConnection ends a frozen server's statement).
  // Requests arrive every 100 ms while every batch hangs: each must end by its own arrival plus
  // the timeout, whatever batch it waited behind or ran in: the batch's deadline is its
  // earliest request's, and a request still queued gives up at its own.
  const auto timeout = std::chrono::milliseconds(1000);
  for (const int max_batches : {1, 2}) {
    CAPTURE(max_batches);
    DocCache cache(0);
    MissBatcher misses(
        cache,
        [](std::span<const DocRequest>, Deadline deadline, const MissBatcher::Sink&) {
          std::this_thread::sleep_until(deadline);
          throw catwalk::pg::DbError("canceling statement due to the deadline", "57014");
        },
        timeout, max_batches);
    constexpr int kRequests = 16;
    std::vector<Clock::duration> waited(kRequests);
    std::vector<int> unavailable(kRequests, 0);
    std::vector<std::thread> threads;
    for (int i = 0; i < kRequests; ++i) {
      threads.emplace_back([&, i] {
        const auto t0 = Clock::now();
        try {
          misses.get(DocKind::kDetail, i + 1);
        } catch (const std::exception& e) {
          unavailable[static_cast<std::size_t>(i)] = is_unavailable(e) ? 1 : 0;
        }
        waited[static_cast<std::size_t>(i)] = Clock::now() - t0;
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kRequests; ++i) {
      CAPTURE(i);
      CHECK(unavailable[static_cast<std::size_t>(i)] == 1);  // a 503, as alone
      // The bound plus a margin for a loaded machine; a batch that took its own full timeout
      // after waiting behind another would take up to twice the bound.
      CHECK(waited[static_cast<std::size_t>(i)] < timeout + std::chrono::milliseconds(500));
    }
  }
}

TEST_CASE("MissBatcher: a batch read before a swap is not stored in the generation after it") {
  DocCache cache(8 << 20);
  cache.set_usable(true);
  cache.reset(CatalogueId{"db", 1, 1});
  bool swap = true;
  MissBatcher misses(
      cache,
      [&](std::span<const DocRequest> wanted, Deadline, const MissBatcher::Sink& sink) {
        // The query reads the old catalogue; a publish is swapped in before it returns.
        if (swap) cache.reset(CatalogueId{"db", 2, 2});
        sink(0, "old-" + doc_of(wanted[0]));
      },
      std::chrono::seconds(5));
  auto doc = misses.get(DocKind::kStyles, 7);
  REQUIRE(doc);
  CHECK(*doc == "old-" + doc_of({DocKind::kStyles, 7}));  // answered: it was current when asked
  CHECK_FALSE(cache.peek(doc_key(DocKind::kStyles, 7)));  // never served after the swap
  CHECK(cache.entries() == 0);
  // Without a swap the same path stores it (the check above is not vacuous).
  swap = false;
  REQUIRE(misses.get(DocKind::kStyles, 8));
  CHECK(cache.peek(doc_key(DocKind::kStyles, 8)));
}
