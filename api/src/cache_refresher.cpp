// The publish watcher and the cache warmer (fingerprint scans, successor generations,
// snapshots): see cache_refresher.hpp.
#include "cache_refresher.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <utility>

#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"
#include "db_connection.hpp"
#include "thread_priority.hpp"

namespace catwalk::api {

namespace {
using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kWatchTimeout{2000};
// The warm-up's COPY gives up when the server sends nothing for this long (a frozen server).
constexpr std::chrono::milliseconds kWarmIdle{5000};
// Missing products fetched per SELECT (WHERE id = ANY($1)): a few MB of documents each.
constexpr std::size_t kFetchBatch = 2000;
// How long a start may wait to confirm a snapshot's catalogue before it listens.
constexpr std::chrono::milliseconds kStartCheck{500};
// The calling thread's time on a core and runnable but waiting for one, since it started
// (/proc/thread-self/schedstat; zeros where the kernel does not have it).
struct ThreadTimes {
  double on_cpu_s = 0, queued_s = 0;
};
ThreadTimes thread_times() {
  ThreadTimes t;
  if (std::FILE* f = std::fopen("/proc/thread-self/schedstat", "r")) {
    unsigned long long run_ns = 0, wait_ns = 0;
    if (std::fscanf(f, "%llu %llu", &run_ns, &wait_ns) == 2) {
      t.on_cpu_s = static_cast<double>(run_ns) / 1e9;
      t.queued_s = static_cast<double>(wait_ns) / 1e9;
    }
    std::fclose(f);
  }
  return t;
}
// The staged warm-up and the snapshot writer run below the requests' threads, so that on a busy
// machine they take what CPU requests leave (each on a thread of its own: see
// thread_priority.hpp). The staged warm-up at nice 10: measured at full scale with wrk
// saturating both cores, the windows before the swap had fewer p99 spikes (the largest of 5
// windows under 10 ms in 5 of 9 runs, against 0 of 5 at nice 0), and the swap came 6.1-7.8 s
// after the publish (5.8-8.1 s at nice 0). The snapshot at nice 19 and idle IO: nobody but a
// restart needs it.
constexpr BackgroundPriority kStagePriority{10, false};
constexpr BackgroundPriority kSnapshotPriority{19, true};
// How many products ahead the fingerprint scan prefetches the cached documents it will compare.
constexpr std::uint32_t kPrefetchAhead = 16;
}  // namespace

CacheRefresher::CacheRefresher(Options options, Repository& repo, DocCache& cache)
    : opt_(std::move(options)),
      repo_(repo),
      cache_(cache),
      snapshots_(opt_.cache_on ? opt_.cache_dir : std::string(), opt_.db_url) {
  snapshots_.fail_writes_after(opt_.snapshot_write_limit);
}

CacheRefresher::~CacheRefresher() {
  request_stop();
  join();
}

void CacheRefresher::start() {
  if (watcher_.joinable()) return;
  if (opt_.cache_on) {
    load_snapshot();
    confirm_snapshot();
  }
  watcher_ = std::thread([this] { watch_loop(); });
  warmer_ = std::thread([this] { warm_loop(); });
}

void CacheRefresher::request_stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  watch_cv_.notify_all();
  warm_cv_.notify_all();
  ready_cv_.notify_all();
}

CacheRefresher::WaitEnd CacheRefresher::wait_ready(Clock::time_point deadline,
                                                   bool until_unreachable) {
  if (!opt_.cache_on) return WaitEnd::kReady;
  std::unique_lock lock(mu_);
  if (!ready_cv_.wait_until(
          lock, deadline, [&] { return stopping_ || ready_ || (until_unreachable && db_failed_); }))
    return WaitEnd::kTimeout;
  if (stopping_) return WaitEnd::kStopped;
  return ready_ ? WaitEnd::kReady : WaitEnd::kUnreachable;
}

bool CacheRefresher::catalogue_readable() {
  std::lock_guard lock(mu_);
  return db_ok_;
}

void CacheRefresher::mark_not_loaded() {
  bool tell;
  {
    std::lock_guard lock(mu_);
    // Once, and not when a warm-up has completed already (a catalogue dropped by hand later).
    tell = !std::exchange(told_not_loaded_, true) && !ready_;
  }
  if (tell) {
    catwalk::log(
        "document cache: nothing is published in this database yet (run catwalk-etl load); "
        "nothing to warm");
  }
  mark_ready();
}

void CacheRefresher::mark_ready() {
  {
    std::lock_guard lock(mu_);
    ready_ = true;
  }
  ready_cv_.notify_all();
}

void CacheRefresher::join() {
  if (watcher_.joinable()) watcher_.join();
  if (warmer_.joinable()) warmer_.join();
}

bool CacheRefresher::stop_requested() {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool CacheRefresher::refresh_pending() {
  std::lock_guard lock(mu_);
  return stopping_ || refresh_wanted_;
}

bool CacheRefresher::wait_unless_pending(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return warm_cv_.wait_for(lock, d, [&] { return stopping_ || refresh_wanted_; });
}

bool CacheRefresher::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return warm_cv_.wait_for(lock, d, [&] { return stopping_; });
}

void CacheRefresher::update_usable() { cache_.set_usable(db_ok_ && !unchecked_); }

DbConnection& CacheRefresher::warm_conn() {
  if (!warm_conn_ || !warm_conn_->ok()) {
    warm_conn_.reset();
    const Deadline d = Clock::now() + kWatchTimeout;
    warm_conn_.emplace(opt_.db_url, d);
    // The statement_timeout catwalk-api sets for requests (PGOPTIONS) is not for the warmer: a
    // COPY of the whole catalogue lasts longer at full scale on a busy machine (the server waits
    // on the socket while the warmer catches up), and was cancelled and read again from the
    // start. The warmer bounds its own waits (kWarmIdle without a byte: abandoned).
    try {
      warm_conn_->exec("SET statement_timeout = 0", d);
    } catch (...) {
      warm_conn_.reset();  // never kept with the requests' timeout
      throw;
    }
  }
  return *warm_conn_;
}

// One connection of its own, so a busy pool never delays noticing a publish.
void CacheRefresher::watch_loop() {
  std::optional<DbConnection> conn;
  std::optional<CatalogueId> seen;
  const auto interval = std::chrono::milliseconds(std::clamp(opt_.poll_ms, 10, 500));
  for (bool first = true;; first = false) {
    {
      // The first poll at once: a snapshot serves as soon as its catalogue is confirmed.
      std::unique_lock lock(mu_);
      if (watch_cv_.wait_for(lock, first ? std::chrono::milliseconds(0) : interval,
                             [&] { return stopping_; }))
        return;
    }
    if (!opt_.cache_on) continue;
    try {
      // Bounded like a request: a frozen database must not hold up shutdown.
      const Deadline deadline = Clock::now() + kWatchTimeout;
      if (!conn || !conn->ok()) {
        conn.reset();
        conn.emplace(opt_.db_url, deadline);
      }
      CatalogueId id = read_catalogue_id(*conn, deadline);
      const bool changed = !seen || *seen != id;
      publish_version_.store(id.version);
      seen = std::move(id);
      {
        std::lock_guard lock(mu_);
        db_ok_ = true;
        // A new catalogue (a publish, the first poll, the database back): the warmer brings the
        // cache to it; a refresh of an older one under way sees the request and gives way.
        if (changed) refresh_wanted_ = true;
        update_usable();
      }
      if (changed) warm_cv_.notify_all();
    } catch (const std::exception& e) {
      // Never migrated: no catalogue to warm, which a --warm-wait start must not wait for.
      if (is_catalogue_missing(e)) mark_not_loaded();
      if (cache_.enabled())
        catwalk::log("publish watcher: cannot read catwalk_publish; document cache off");
      {
        std::lock_guard lock(mu_);
        db_ok_ = false;
        db_failed_ = true;
        update_usable();
      }
      ready_cv_.notify_all();
      // Nothing of a catalogue that cannot be checked survives: when the database is back (maybe
      // restored, maybe another publish) the cache starts again from what it then holds.
      cache_.invalidate();
      seen.reset();
      conn.reset();
    }
  }
}

// Before the first request is accepted (start() runs before the listener): a snapshot of the
// catalogue published now serves from the first request on, instead of after the threads' first
// round trips (the requests of those 100-200 ms went to the database). Bounded by kStartCheck:
// a database that does not answer leaves it to the refresh, as any other snapshot.
void CacheRefresher::confirm_snapshot() {
  {
    std::lock_guard lock(mu_);
    if (!unchecked_) return;
  }
  try {
    const Deadline d = Clock::now() + kStartCheck;
    DbConnection conn(opt_.db_url, d);
    const CatalogueId id = read_catalogue_id(conn, d);
    if (cache_.catalogue() != id) return;
    std::lock_guard lock(mu_);
    unchecked_ = false;
    db_ok_ = true;
    update_usable();
    snapshot_loads_.fetch_add(1);
    prefault_pending_ = true;
    ready_ = true;
    catwalk::log("cache snapshot: serving publish {} from it, nothing to read", id.version);
  } catch (const std::exception&) {
  }
}

void CacheRefresher::warm_loop() {
  // Not niced: measured at full scale, a warmer at nice 10 stalled requests for hundreds of
  // milliseconds (cold start p99 414 ms against 15 ms): preempted while holding a lock that
  // request threads take too (a malloc arena's, an atomic shared_ptr's), it kept them waiting
  // until it ran again. The staged warm-up is niced all the same (kStagePriority, on a thread of
  // its own): it fills chunks no request reads before the swap, and measured, it stalled
  // requests less at nice 10 than at 0, not more.
  for (;;) {
    {
      std::unique_lock lock(mu_);
      warm_cv_.wait(lock, [&] { return stopping_ || refresh_wanted_; });
      if (stopping_) return;
      refresh_wanted_ = false;
    }
    refresh();
  }
}

// Maps the cache folder's snapshot, if any, as the current generation: unchecked (not usable)
// until refresh() has compared its catalogue with the published one.
void CacheRefresher::load_snapshot() {
  if (!snapshots_.enabled()) return;
  {
    std::lock_guard lock(mu_);
    unchecked_ = true;
    update_usable();
  }
  if (!snapshots_.load(cache_)) {
    std::lock_guard lock(mu_);
    unchecked_ = false;
    update_usable();
  }
}

// Reads the new catalogue's fingerprints (in `conn`'s open transaction, which it commits) and
// swaps in a successor holding the documents they match; the products left to fetch go to
// `missing`, their count to `products`. When keeping them would waste more than a quarter of the
// shared chunks, empties the cache instead (kReset).
CacheRefresher::ScanEnd CacheRefresher::keep_unchanged(DbConnection& conn, const CatalogueId& id,
                                                       std::chrono::steady_clock::time_point t0,
                                                       std::vector<std::int32_t>& missing,
                                                       std::size_t& products, bool& changed,
                                                       bool may_stage) {
  auto s = cache_.successor();
  const std::size_t pause_every = static_cast<std::size_t>(std::max(opt_.warm_batch_rows, 1));
  const ThreadTimes before = thread_times();
  const auto scan_start = Clock::now();
  const bool whole = stream_fingerprints(conn, kWarmIdle, [&](const ProductFingerprints& p) {
    // Rows come in id order and the warm-up stored documents in that order too: the ones a few
    // products on are where the scan reads next. Without this, most of the scan's CPU time was
    // two cache misses per document (its first byte and its last 8), taken one after the other.
    // (An id past the last, or past kMaxId, finds nothing: prefetch() does nothing then.)
    const auto ahead = static_cast<std::int32_t>(static_cast<std::uint32_t>(p.id) + kPrefetchAhead);
    for (int k = 0; k < 3; ++k) s.prefetch(doc_key(static_cast<DocKind>(k), ahead));
    bool miss = false;
    for (int k = 0; k < 3; ++k) {
      const auto key = doc_key(static_cast<DocKind>(k), p.id);
      const auto prev = s.previous(key);
      if (!prev.empty() && matches(prev, p.docs[k])) {
        s.keep(key);
      } else {
        miss = true;
      }
    }
    if (miss) missing.push_back(p.id);
    return ++products % pause_every != 0 || !stop_requested();
  });
  if (!whole) return ScanEnd::kStopped;
  // Where the scan's time went, for the log lines below: the warmer's own CPU time, its time
  // runnable but waiting for a core, the rest waiting for PostgreSQL's rows.
  const ThreadTimes after = thread_times();
  const double scan_s = std::chrono::duration<double>(Clock::now() - scan_start).count();
  const double cpu_s = after.on_cpu_s - before.on_cpu_s, queue_s = after.queued_s - before.queued_s;
  const std::string scan_times =
      after.on_cpu_s > 0 ? fmt::format(
                               "scan {:.2f} s: {:.2f} s on a core, {:.2f} s waiting for one, "
                               "{:.2f} s for PostgreSQL",
                               scan_s, cpu_s, queue_s, std::max(0.0, scan_s - cpu_s - queue_s))
                         : fmt::format("scan {:.2f} s", scan_s);
  conn.exec("COMMIT", Clock::now() + kWatchTimeout);
  // Waste: bytes written in the shared chunks that no kept document uses (documents this
  // publish or earlier ones dropped). Past a quarter of them, the kept documents are not
  // worth their chunks: start from nothing (the cold path), which frees every chunk once
  // the previous generation's readers let go. Chunks then never hold more than 4/3 of the
  // documents' bytes, however many publishes come.
  const std::size_t chunks = s.previous_filled_bytes();
  const std::size_t waste = chunks - std::min(chunks, s.kept_bytes());
  const std::size_t kept = s.kept_entries();
  const std::size_t dropped = cache_.entries() - std::min(cache_.entries(), kept);
  if (waste > chunks / 4) {
    // Room for a second generation as large as this one beside it, and the eighth of the
    // budget the warm-up leaves to requests' misses: warm the new catalogue out of sight while
    // this one serves, and swap it in warm (stage_all()).
    if (may_stage && 2 * cache_.bytes() + cache_.budget() / 8 < cache_.budget()) {
      catwalk::log(
          "cache refresh: publish {} changed too much to keep ({} documents unchanged, {} MiB "
          "of {} MiB unused): warming it beside the cache, which serves publish {} until the "
          "swap",
          id.version, kept, waste >> 20, chunks >> 20,
          cache_.catalogue() ? cache_.catalogue()->version : -1);
      return ScanEnd::kStage;
    }
    waste_resets_.fetch_add(1);
    catwalk::log(
        "cache refresh: publish {} keeps {} documents but leaves {} MiB of {} MiB unused: "
        "starting from an empty cache",
        id.version, kept, waste >> 20, chunks >> 20);
    cache_.reset(id);
    return ScanEnd::kReset;
  }
  // The watcher emptied the cache meanwhile (database lost): it asks again.
  if (!cache_.install(std::move(s), id)) return ScanEnd::kLost;
  kept_docs_.fetch_add(kept);
  changed = dropped > 0 || !missing.empty();
  catwalk::log(
      "cache refresh: publish {} swapped in after {:.2f} s ({}): {} documents kept, {} "
      "dropped, {} products to fetch",
      id.version, std::chrono::duration<double>(Clock::now() - t0).count(), scan_times, kept,
      dropped, missing.size());
  return ScanEnd::kInstalled;
}

// Brings the cache to the catalogue the database holds now (see the class comment). Returns
// true when it completed: the generation holds every document the budget allows.
bool CacheRefresher::refresh() {
  warming_.store(true);
  warm_runs_.fetch_add(1);
  const auto t0 = Clock::now();
  std::uint64_t stored = 0;
  bool completed = false;
  bool changed = false;  // the generation differs from the snapshot on disk
  bool logged = false;
  for (;;) {
    if (stop_requested()) break;
    try {
      auto& conn = warm_conn();
      const Deadline d = Clock::now() + kWatchTimeout;
      // One snapshot for the identity and the scan: the fingerprints are of that catalogue.
      conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", d);
      const CatalogueId id = read_catalogue_id(conn, d);
      const auto label = cache_.catalogue();
      bool checking_snapshot;
      {
        std::lock_guard lock(mu_);
        checking_snapshot = unchecked_;
      }
      bool from_nothing = false;
      bool mapped_snapshot = false;  // serving a snapshot's pages: prefault them
      std::vector<std::int32_t> missing;
      std::size_t products = 0;
      if (label && *label == id) {
        // The generation is that catalogue already (a snapshot of it): nothing to read.
        conn.exec("COMMIT", Clock::now() + kWatchTimeout);
        if (checking_snapshot) {
          snapshot_loads_.fetch_add(1);
          catwalk::log("cache snapshot: serving publish {} from it, nothing to read", id.version);
        }
        mapped_snapshot = checking_snapshot;
      } else if (!label || cache_.entries() == 0) {
        // Nothing checked to keep: an unlabelled generation holds only what requests cached
        // since the start or since the database came back (a few documents), not worth a scan.
        conn.exec("COMMIT", Clock::now() + kWatchTimeout);
        cache_.reset(id);
        from_nothing = true;
      } else {
        // A snapshot not checked yet never serves while another catalogue is warmed: the
        // process has just started, and what it serves must be what is published.
        const ScanEnd end =
            keep_unchanged(conn, id, t0, missing, products, changed, !checking_snapshot);
        if (end == ScanEnd::kStopped || end == ScanEnd::kLost) break;
        if (end == ScanEnd::kStage) {
          completed = stage_all(id, t0, stored);
          changed = true;
          break;
        }
        from_nothing = end == ScanEnd::kReset;
      }
      refresh_last_seconds_.store(std::chrono::duration<double>(Clock::now() - t0).count());
      {
        std::lock_guard lock(mu_);
        unchecked_ = false;
        update_usable();
      }
      // Serving already; what is left is taking page faults off the requests' path.
      if (std::exchange(prefault_pending_, false) || mapped_snapshot ||
          (checking_snapshot && !from_nothing))
        snapshots_.prefault();
      const std::uint64_t generation = cache_.generation();
      // Many products to fetch (a budget-bound cache, or most of a catalogue changed): one COPY
      // of everything skipping what is present reads sequentially and beats that many lookups.
      if (from_nothing || missing.size() > products / 4) {
        completed = warm_all(generation, stored);
        changed = true;
      } else {
        completed = warm_ids(generation, missing, stored);
      }
      break;
    } catch (const std::exception& e) {
      if (!logged) catwalk::log("cache refresh paused: {}", e.what());
      logged = true;
      warm_conn_.reset();
      bool was_unchecked;
      {
        std::lock_guard lock(mu_);
        was_unchecked = unchecked_;
      }
      // A generation that could not be checked must not serve: empty it (the watcher asks for a
      // refresh again when the database is back).
      if (was_unchecked || !is_unavailable(e) || is_catalogue_missing(e)) {
        cache_.invalidate();
        std::lock_guard lock(mu_);
        unchecked_ = false;
        update_usable();
      }
      if (is_catalogue_missing(e)) mark_not_loaded();  // its schema dropped by hand
      if (is_catalogue_missing(e) || !is_unavailable(e)) break;
      // Unreachable: retry while no newer catalogue waits. A database really down makes the
      // watcher empty the cache and ask again once it is back.
      if (refresh_pending() || pause(std::chrono::milliseconds(200))) break;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (completed) {
    warm_last_seconds_.store(seconds);
    warm_runs_completed_.fetch_add(1);
    catwalk::log("cache warm-up: {} documents fetched, {} cached, {} MiB, in {:.1f} s", stored,
                 cache_.entries(), cache_.live_bytes() >> 20, seconds);
    mark_ready();  // before the snapshot is written: a waiting start listens now
  }
  warming_.store(false);
  if (completed && changed && snapshots_.enabled()) {
    const auto reader = cache_.reader();
    bool saved = false;
    run_in_background("catwalk-snapshot", kSnapshotPriority, [&] {
      // Not in the first seconds after the swap: writing 815 MiB then (page cache, writeback,
      // fsync) took requests' p99 from 2-4 ms to 26-132 ms in the 5 s after a full-scale swap
      // (measured with wrk on 2 vCPU), at nice 19 as at 0. A newer publish or a stop during the
      // delay drops the write (the newer refresh writes its own).
      if (opt_.snapshot_delay_ms > 0 &&
          wait_unless_pending(std::chrono::milliseconds(opt_.snapshot_delay_ms)))
        return;
      saved = snapshots_.save(reader, [&](bool before_rename) {
        if (refresh_pending() || cache_.generation() != reader.number()) return false;
        if (!before_rename) return true;
        // A document stored by a request after a newer publish would be in the file under the
        // older label: only a catalogue still published may be written.
        try {
          return read_catalogue_id(warm_conn(), Clock::now() + kWatchTimeout) == reader.catalogue();
        } catch (const std::exception&) {
          warm_conn_.reset();
          return false;
        }
      });
    });
    if (saved) snapshot_writes_.fetch_add(1);
  }
  return completed;
}

// After a failed read of documents (logged once per warm-up): whether to try again. No
// catalogue (or a bug): nothing to retry; a publish asks for a new refresh. Unreachable: retry
// while the generation holds (what is cached stays: those documents are skipped as present). A
// database really down moves the generation on (the watcher empties the cache within a poll),
// which ends the warm-up; its return starts a refresh.
bool CacheRefresher::retry_after(const std::exception& e, std::uint64_t stored, bool& logged) {
  if (!logged) catwalk::log("cache warm-up paused after {} documents: {}", stored, e.what());
  logged = true;
  warm_conn_.reset();
  if (is_catalogue_missing(e) || !is_unavailable(e)) return false;
  return !pause(std::chrono::milliseconds(200));
}

// Streams every product's documents into the cache until the catalogue ends or seven eighths
// of the budget are used (misses fill the rest; nothing is ever evicted); present documents are
// skipped. Stops early, quietly, when the generation moves on or a newer catalogue waits, or
// when stopping. Returns true when it completed.
//
// How: one COPY of product_docs in binary format on the warmer's connection, parsed as it
// streams, each document copied once, into the cache. The stored documents are mostly gzip
// (about a third of the JSON), so the full catalogue arrives in seconds; until then a miss
// costs one primary-key SELECT, as before.
//
// Which documents: styles, detail and related, the three per-id routes a product page calls
// with ids all over the catalogue. The list pages are not warmed: they are cheap range scans
// of adjacent rows, any (page, count) pair is a different body, and the front end asks for few.
bool CacheRefresher::warm_all(std::uint64_t generation, std::uint64_t& stored) {
  bool logged = false;
  const std::size_t pause_every = static_cast<std::size_t>(std::max(opt_.warm_batch_rows, 1));
  for (;;) {
    if (refresh_pending() || cache_.generation() != generation) return false;
    try {
      std::size_t rows = 0;
      BatchEnd end = BatchEnd::kMore;
      const bool whole = stream_product_docs(warm_conn(), kWarmIdle, [&](const ProductDocsView& p) {
        end = store(p, generation, stored);
        if (end != BatchEnd::kMore) return false;
        if (++rows % pause_every == 0) {
          if (refresh_pending()) return false;
          if (opt_.warm_pause_ms > 0 && pause(std::chrono::milliseconds(opt_.warm_pause_ms)))
            return false;
        }
        return true;
      });
      return whole || end == BatchEnd::kFull;
    } catch (const std::exception& e) {
      if (!retry_after(e, stored, logged)) return false;
    }
  }
}

// A changed catalogue warmed beside the generation serving (see keep_unchanged()): every
// product's documents streamed into a staged generation, as warm_all() does, then swapped in
// whole, so that requests never see a cold cache. The previous publish serves meanwhile (4-8 s
// at full scale, after the scan). When the two generations together reach the budget
// (the serving one grew, or the new catalogue is larger), what is staged is swapped in and the
// rest is warmed as on the cold path. Stops, leaving the serving generation as it is, when a
// newer catalogue waits, the serving generation was emptied (database lost), or stopping.
bool CacheRefresher::stage_all(const CatalogueId& id, std::chrono::steady_clock::time_point t0,
                               std::uint64_t& stored) {
  auto staged = cache_.staged();
  const std::size_t warm_limit = this->warm_limit();
  const std::size_t pause_every = static_cast<std::size_t>(std::max(opt_.warm_batch_rows, 1));
  bool logged = false;
  bool full = false;
  bool crowded = false;  // full because the serving generation holds the rest of the budget
  bool streamed = false;
  // At a lower priority than requests (see kStagePriority): the previous publish serves
  // meanwhile, nobody waits for this but the swap.
  run_in_background("catwalk-stage", kStagePriority, [&] {
    for (;;) {
      if (refresh_pending() || !staged.beside_current()) return;
      try {
        std::size_t rows = 0;
        const bool whole =
            stream_product_docs(warm_conn(), kWarmIdle, [&](const ProductDocsView& p) {
              const BatchEnd end =
                  store_each(p, stored, [&](std::uint64_t key, std::string_view doc) {
                    return staged.put(key, doc, warm_limit);
                  });
              if (end == BatchEnd::kFull) {
                full = true;
                crowded = staged.room() < warm_limit;
                return false;
              }
              if (++rows % pause_every == 0) {
                if (refresh_pending() || !staged.beside_current()) return false;
                if (opt_.warm_pause_ms > 0 && pause(std::chrono::milliseconds(opt_.warm_pause_ms)))
                  return false;
              }
              return true;
            });
        streamed = whole || full;
        return;
      } catch (const std::exception& e) {
        if (!retry_after(e, stored, logged)) return;
      }
    }
  });
  if (!streamed) return false;
  const std::size_t entries = staged.entries(), bytes = staged.bytes();
  // The watcher emptied the cache meanwhile (database lost): it asks again.
  if (!cache_.install(std::move(staged), id)) return false;
  staged_swaps_.fetch_add(1);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  refresh_last_seconds_.store(seconds);
  catwalk::log("cache refresh: publish {} swapped in warm after {:.2f} s: {} documents, {} MiB",
               id.version, seconds, entries, bytes >> 20);
  // Full at the warm-up's own limit: complete, as warm_all() would be. Full because the
  // generation it replaced held the rest of the budget: that is free now, go on as cold.
  if (crowded) return warm_all(cache_.generation(), stored);
  return true;
}

// The documents of the products a refresh found missing or changed, kFetchBatch ids per SELECT,
// with the same stops as warm_all().
bool CacheRefresher::warm_ids(std::uint64_t generation, const std::vector<std::int32_t>& ids,
                              std::uint64_t& stored) {
  bool logged = false;
  std::size_t at = 0;
  std::vector<std::int32_t> batch;
  while (at < ids.size()) {
    if (refresh_pending() || cache_.generation() != generation) return false;
    batch.assign(ids.begin() + static_cast<std::ptrdiff_t>(at),
                 ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), at + kFetchBatch)));
    try {
      BatchEnd end = BatchEnd::kMore;
      fetch_product_docs(warm_conn(), batch, Clock::now() + kWarmIdle,
                         [&](const ProductDocsView& p) {
                           if (end == BatchEnd::kMore) end = store(p, generation, stored);
                         });
      if (end == BatchEnd::kFull) return true;
      if (end == BatchEnd::kStale) return false;
      at += batch.size();
      if (opt_.warm_pause_ms > 0 && pause(std::chrono::milliseconds(opt_.warm_pause_ms)))
        return false;
    } catch (const std::exception& e) {
      if (!retry_after(e, stored, logged)) return false;
    }
  }
  return true;
}

// The warm-up leaves an eighth of the budget to requests' misses: when the catalogue does not
// fit, what clients ask for beyond the warmed ids still gets cached.
std::size_t CacheRefresher::warm_limit() const { return cache_.budget() - cache_.budget() / 8; }

template <typename Put>
CacheRefresher::BatchEnd CacheRefresher::store_each(const ProductDocsView& p, std::uint64_t& stored,
                                                    Put&& put) {
  const std::pair<DocKind, std::string_view> docs[] = {
      {DocKind::kStyles, p.styles}, {DocKind::kDetail, p.detail}, {DocKind::kRelated, p.related}};
  for (const auto& [kind, doc] : docs) {
    switch (put(doc_key(kind, p.id), doc)) {
      case DocCache::PutResult::kStored:
        ++stored;
        warmed_docs_.fetch_add(1, std::memory_order_relaxed);
        break;
      case DocCache::PutResult::kStale:
        return BatchEnd::kStale;
      case DocCache::PutResult::kFull:
        return BatchEnd::kFull;
      default:
        break;
    }
  }
  return BatchEnd::kMore;
}

CacheRefresher::BatchEnd CacheRefresher::store(const ProductDocsView& p, std::uint64_t generation,
                                               std::uint64_t& stored) {
  const std::size_t limit = warm_limit();
  return store_each(p, stored, [&](std::uint64_t key, std::string_view doc) {
    return cache_.put(key, generation, doc, limit);
  });
}

}  // namespace catwalk::api
