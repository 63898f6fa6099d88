#pragma once
// Keeps the document cache in step with what the loader published. Two threads:
// - the publish watcher reads the catalogue's identity (database, catwalk_publish's version and
//   published_at) on a connection of its own every poll interval and asks the warmer for a
//   refresh when it changes; while it cannot be read the cache is off and emptied (requests then
//   reach the database and answer 503 when it is down);
// - the warmer brings the cache to the catalogue the watcher saw, on a connection of its own:
//   * a cache that holds nothing checked (empty, or only what requests cached since the start or
//     since the database came back) starts empty, labelled with the catalogue, and is filled by
//     one COPY of every product's documents (a cold start: what the warm-up always did);
//   * a cache that holds documents (a publish, or a snapshot of another publish) is checked by a
//     fingerprint scan: one COPY of each document's length and last 8 bytes, in the same
//     transaction as the identity it is labelled with. A successor generation takes over the
//     documents that match (their bytes stay where they are), and is swapped in; then only the
//     missing products' documents are fetched. Until the swap the previous generation serves
//     (the previous publish: 3-4 s at full scale on 2 vCPU). When the documents dropped would
//     leave more than a quarter of the shared chunks as waste, nothing is kept (waste never
//     grows past that): when the budget holds a second generation as large beside the one
//     serving, the new catalogue is warmed into a staged one, out of sight, and swapped in warm
//     (the previous publish serves meanwhile); else it starts from an empty generation (the
//     cold path).
//   * at start, a snapshot of the cache folder (snapshot.hpp) is mapped first, before the server
//     listens; it serves from the first request when its catalogue is the published one (one
//     round trip, bounded), else it is checked as above;
//     either way its page tables are then populated in the background (no fault per request).
//   After a refresh that changed the cache completes, the generation is written to the snapshot:
//   snapshot_delay_ms later (not in the first seconds of a swap or a start), unless a newer
//   catalogue came in meanwhile, on a thread at the lowest CPU and IO priority.
//   A changed catalogue warmed beside the serving one is read on a thread at nice 10.
//
// Thread-safety: start() and join() from the thread that owns the object; request_stop(),
// wait_ready() and the getters from any thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "doc_cache.hpp"
#include "repository.hpp"
#include "snapshot.hpp"

namespace catwalk::api {

class CacheRefresher {
 public:
  struct Options {
    std::string db_url;          // the watcher's and the warmer's own connections
    bool cache_on = true;        // false: the watcher idles (nothing to keep fresh)
    int poll_ms = 250;           // clamped to 10-500 ms
    int warm_batch_rows = 5000;  // products between two checks for a stop (and pauses)
    int warm_pause_ms = 0;       // pause every warm_batch_rows products (tests slow it with it)
    std::string cache_dir;       // snapshots' folder; "" = no snapshots
    std::size_t snapshot_write_limit = SIZE_MAX;  // tests: a full disk after this many bytes
    int snapshot_delay_ms = 10000;  // a refresh's snapshot is written this long after it ends
  };

  CacheRefresher(Options options, Repository& repo, DocCache& cache);
  ~CacheRefresher();  // request_stop() and join()
  CacheRefresher(const CacheRefresher&) = delete;
  CacheRefresher& operator=(const CacheRefresher&) = delete;

  // Maps the cache folder's snapshot and, when the database says it is the catalogue published
  // now, makes it serve at once (a round trip, at most 500 ms); then starts both threads (once).
  void start();
  void request_stop();  // asks both threads to end promptly; does not wait
  void join();          // waits for both threads (after request_stop())

  // For a start that listens only once warm (--warm-wait): waits, after start(), until the cache
  // serves the published catalogue completely (a snapshot confirmed in start(), or a refresh
  // that completed: every document the budget allows, a budget that filled up counts), or the
  // database answers that nothing is published (no catalogue to warm: waiting would only delay
  // the 503 not_loaded), until `deadline`, or until request_stop(). With the cache off there is
  // nothing to wait for. A database that does not answer is waited for (it may be starting),
  // unless `until_unreachable`: then a poll that failed ends the wait (kUnreachable).
  enum class WaitEnd { kReady, kTimeout, kStopped, kUnreachable };
  WaitEnd wait_ready(std::chrono::steady_clock::time_point deadline,
                     bool until_unreachable = false);
  // The watcher's last poll read the catalogue's identity (false: unreachable, or none loaded).
  bool catalogue_readable();

  // The publish version last seen (-1: unknown) and the warm-up counters.
  long long publish_version() const { return publish_version_.load(); }
  bool warming() const { return warming_.load(); }
  std::uint64_t warm_runs() const { return warm_runs_.load(); }
  std::uint64_t warm_runs_completed() const { return warm_runs_completed_.load(); }
  std::uint64_t warmed_documents() const { return warmed_docs_.load(); }
  double warm_last_seconds() const { return warm_last_seconds_.load(); }
  // Documents a refresh carried over unchanged (not fetched again), refreshes that fell back to
  // an empty generation for waste, snapshots mapped at start and confirmed, snapshots written.
  std::uint64_t kept_documents() const { return kept_docs_.load(); }
  std::uint64_t waste_resets() const { return waste_resets_.load(); }
  // Changed catalogues warmed beside the serving generation and swapped in warm.
  std::uint64_t staged_swaps() const { return staged_swaps_.load(); }
  std::uint64_t snapshot_loads() const { return snapshot_loads_.load(); }
  std::uint64_t snapshot_writes() const { return snapshot_writes_.load(); }
  double refresh_last_seconds() const { return refresh_last_seconds_.load(); }

 private:
  void watch_loop();
  void warm_loop();
  // Sets the cache usable when the database answers and the generation holds nothing unchecked.
  void update_usable();    // under mu_
  bool refresh();          // the warmer's job: see the class comment; true when complete
  void mark_ready();       // a refresh completed: wakes wait_ready()
  void mark_not_loaded();  // nothing is published: logs it once, then mark_ready()
  // How a fingerprint scan ended: stopping, a successor swapped in, the cache emptied for the
  // waste, or the generation lost to the watcher meanwhile.
  // kStage: keep nothing, warm the new catalogue beside the serving one (`may_stage`, and the
  // budget holds both).
  enum class ScanEnd { kStopped, kInstalled, kReset, kStage, kLost };
  ScanEnd keep_unchanged(DbConnection& conn, const CatalogueId& id,
                         std::chrono::steady_clock::time_point t0,
                         std::vector<std::int32_t>& missing, std::size_t& products, bool& changed,
                         bool may_stage);
  // Warms catalogue `id` into a staged generation and swaps it in (kStage).
  bool stage_all(const CatalogueId& id, std::chrono::steady_clock::time_point t0,
                 std::uint64_t& stored);
  void load_snapshot();
  void confirm_snapshot();  // in start(), before the threads and the listener
  // Streams every product's documents into generation `generation` (the cold path).
  bool warm_all(std::uint64_t generation, std::uint64_t& stored);
  bool retry_after(const std::exception& e, std::uint64_t stored, bool& logged);
  // Fetches the documents of `ids` into generation `generation`, in batches.
  bool warm_ids(std::uint64_t generation, const std::vector<std::int32_t>& ids,
                std::uint64_t& stored);
  // Stores one product's documents in the cache; says whether the generation moved on or the
  // budget is full.
  enum class BatchEnd { kMore, kStale, kFull };
  BatchEnd store(const ProductDocsView& p, std::uint64_t generation, std::uint64_t& stored);
  // The three documents of `p` handed to `put` (the current generation's put, or a staged
  // one's) as (key, document) -> DocCache::PutResult, counting what it stored; stops at the
  // first kStale or kFull. A template (defined in the .cpp, its only user): it runs for every
  // row of a warm-up, where a std::function would cost a call through a pointer per document
  // and, capturing more than two references, an allocation per product.
  template <typename Put>
  BatchEnd store_each(const ProductDocsView& p, std::uint64_t& stored, Put&& put);
  // Where the warm-up stops filling (less than the budget: see store_each()'s callers).
  std::size_t warm_limit() const;
  bool stop_requested();
  bool refresh_pending();  // a newer catalogue waits: stop what runs and do that
  // Waits up to `d`, woken early by request_stop(); true when stopping.
  bool pause(std::chrono::milliseconds d);
  // The same, woken early by a newer catalogue too; true when stopping or one waits.
  bool wait_unless_pending(std::chrono::milliseconds d);
  DbConnection& warm_conn();

  const Options opt_;
  Repository& repo_;
  DocCache& cache_;
  SnapshotStore snapshots_;

  std::mutex mu_;
  std::condition_variable watch_cv_, warm_cv_;
  bool stopping_ = false;
  bool refresh_wanted_ = false;    // the watcher saw a catalogue the cache is not labelled with
  bool db_ok_ = false;             // the watcher's last poll succeeded
  bool db_failed_ = false;         // a poll has failed (it could not read the catalogue's id)
  bool unchecked_ = false;         // the generation is a snapshot not yet checked
  bool prefault_pending_ = false;  // a snapshot confirmed in start(): the warmer prefaults it
  bool ready_ = false;             // served completely once: see wait_ready()
  bool told_not_loaded_ = false;   // the "nothing published" line was logged
  std::condition_variable ready_cv_;
  std::thread watcher_, warmer_;
  std::optional<DbConnection> warm_conn_;  // the warmer thread's own

  std::atomic<long long> publish_version_{-1};
  std::atomic<bool> warming_{false};
  std::atomic<std::uint64_t> warm_runs_{0}, warm_runs_completed_{0}, warmed_docs_{0};
  std::atomic<std::uint64_t> kept_docs_{0}, waste_resets_{0}, staged_swaps_{0}, snapshot_loads_{0},
      snapshot_writes_{0};
  std::atomic<double> warm_last_seconds_{0}, refresh_last_seconds_{0};
};

}  // namespace catwalk::api
