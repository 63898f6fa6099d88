#pragma once
// Keeps the document cache in step with what the loader published. Two threads:
// - the publish watcher reads public.catwalk_publish.version on a connection of its own every
//   poll interval and flushes the cache when it changes, so a reload is served within a second
//   without a restart; while the version cannot be read the cache is off (requests then reach
//   the database and answer 503 when it is down);
// - the warmer, asked by the watcher after each flush (and at start), streams every product's
//   documents into the new cache generation, one COPY on a connection of its own, until the
//   catalogue or the budget ends.
//
// Thread-safety: start() and join() from the thread that owns the object; request_stop() and
// stats() from any thread.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "doc_cache.hpp"
#include "repository.hpp"

namespace catwalk::api {

class CacheRefresher {
 public:
  struct Options {
    std::string db_url;          // the watcher's own connection
    bool cache_on = true;        // false: the watcher idles (nothing to keep fresh)
    int poll_ms = 250;           // clamped to 10-500 ms
    int warm_batch_rows = 5000;  // products between two checks for a stop (and pauses)
    int warm_pause_ms = 0;       // pause every warm_batch_rows products (tests slow it with it)
  };

  CacheRefresher(Options options, Repository& repo, DocCache& cache);
  ~CacheRefresher();  // request_stop() and join()
  CacheRefresher(const CacheRefresher&) = delete;
  CacheRefresher& operator=(const CacheRefresher&) = delete;

  void start();         // starts both threads (once)
  void request_stop();  // asks both threads to end promptly; does not wait
  void join();          // waits for both threads (after request_stop())

  // The publish version last seen (-1: unknown) and the warm-up counters.
  long long publish_version() const { return publish_version_.load(); }
  bool warming() const { return warming_.load(); }
  std::uint64_t warm_runs() const { return warm_runs_.load(); }
  std::uint64_t warm_runs_completed() const { return warm_runs_completed_.load(); }
  std::uint64_t warmed_documents() const { return warmed_docs_.load(); }
  double warm_last_seconds() const { return warm_last_seconds_.load(); }

 private:
  void watch_loop();
  void warm_loop();
  void request_warm(std::uint64_t generation);
  bool warm(std::uint64_t generation);
  // Stores one batch in the cache; says whether the generation moved on or the budget is full.
  enum class BatchEnd { kMore, kStale, kFull };
  BatchEnd store(const ProductDocsView& p, std::uint64_t generation, std::uint64_t& stored);
  bool stop_requested();
  // Waits up to `d`, woken early by request_stop(); true when stopping.
  bool pause(std::chrono::milliseconds d);

  const Options opt_;
  Repository& repo_;
  DocCache& cache_;

  std::mutex mu_;
  std::condition_variable watch_cv_, warm_cv_;
  bool stopping_ = false;
  std::uint64_t warm_wanted_ = 0;  // a generation to warm; 0 = nothing asked (under mu_)
  std::thread watcher_, warmer_;
  std::optional<DbConnection> warm_conn_;  // the warmer thread's own

  std::atomic<long long> publish_version_{-1};
  std::atomic<bool> warming_{false};
  std::atomic<std::uint64_t> warm_runs_{0}, warm_runs_completed_{0}, warmed_docs_{0};
  std::atomic<double> warm_last_seconds_{0};
};

}  // namespace catwalk::api
