#pragma once
// Serves the document cache's misses, batching those of concurrent requests: one query for
// every document asked for meanwhile, instead of one query each.
//
// Why: right after a start the cache is empty while the warm-up streams the catalogue beside the
// requests on the same cores, and on a machine whose --cache-mb cannot hold the catalogue misses
// never end. A miss used to cost a primary-key SELECT of its own: a round trip, a statement
// and a wake-up of a PostgreSQL backend per request. A batch pays those once for all of them.
//
// How: a request that misses joins the queue. While fewer than `max_batches` batches run (one
// by default), it leads one: it takes the queue (itself included, at most kMaxBatch requests) and
// runs the query for all of them (Fetch: Repository::product_docs); requests arriving meanwhile
// queue for the next batch, which the first of them to find a batch slot free leads. The leader
// hands each request its document, or the batch's error, and stores the documents in the cache.
//
// Bounds: each request keeps the deadline it would have had alone (its arrival plus the
// repository's timeout): a batch's query ends by the earliest deadline among its requests, and
// a request still queued at its deadline gives up (PoolUnavailable: a 503, as a request that
// waited past its deadline for a pooled connection). A database that hangs answers no request
// later than before.
//
// Freshness: the leader reads the cache's generation before its query starts, and stores what
// the query returns under that generation (DocCache::try_put drops it when a publish or an
// invalidation moved the cache on meanwhile): a document read for an old generation never lands
// in a newer one.
//
// Thread-safety: get() from any thread; the counters from any thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "doc_cache.hpp"
#include "repository.hpp"

namespace catwalk::api {

class MissBatcher {
 public:
  // Requests one batch serves at most (the query's arrays stay a few KB).
  static constexpr std::size_t kMaxBatch = 256;

  // Reads the stored documents of `wanted` in one query that ends by `deadline`, calling
  // sink(index in wanted, document) for each one found (an unknown product: no call). Throws
  // as the repository does.
  using Sink = std::function<void(std::size_t, std::string_view)>;
  using Fetch =
      std::function<void(std::span<const DocRequest> wanted, Deadline deadline, const Sink& sink)>;

  // `timeout`: a request's whole wait (the repository's). `max_batches`: batches that may run
  // at once (each holds one pooled connection while its query runs). One by default: measured
  // at full scale in the first 5 s of a cold start (2 vCPU, wrk -c64 on styles), one at a time
  // served 20-29k requests/s (p99 6-15 ms), two 18-26k (p99 30-40 ms: requests wait behind
  // smaller batches), six 19-23k (p99 46-160 ms); one query per miss 13-21k (bench/README.md).
  MissBatcher(DocCache& cache, Fetch fetch, std::chrono::milliseconds timeout, int max_batches = 1);

  // The stored document (as Repository::product_docs reads it), cached when the cache is on;
  // nullopt for an unknown product. Throws PoolUnavailable or pg::DbError (is_unavailable())
  // when the database does not answer by the request's deadline.
  std::optional<std::string> get(DocKind kind, std::int32_t id);

  // Queries run, and the requests they served: their ratio is the batching's gain.
  std::uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  std::uint64_t batched_requests() const { return batched_.load(std::memory_order_relaxed); }

 private:
  // A request waiting for its document; lives on its thread's stack while it waits.
  struct Waiter {
    DocRequest wanted;
    Deadline deadline;
    bool taken = false;  // in a running batch: its leader answers it by the batch's deadline
    bool done = false;
    std::optional<std::string> doc;
    std::exception_ptr error;
    std::condition_variable cv;
  };
  // Takes the queue's head as a batch, runs it unlocked, answers its requests. Requires mu_.
  void run_batch(std::unique_lock<std::mutex>& lock);

  DocCache& cache_;
  const Fetch fetch_;
  const std::chrono::milliseconds timeout_;
  const int max_batches_;

  std::mutex mu_;
  std::deque<Waiter*> queue_;  // FIFO: the oldest requests go first
  int running_ = 0;            // batches running now

  std::atomic<std::uint64_t> batches_{0}, batched_{0};
};

}  // namespace catwalk::api
