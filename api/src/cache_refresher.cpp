// The publish watcher and the cache warmer: see cache_refresher.hpp.
#include "cache_refresher.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"
#include "db_connection.hpp"

namespace catwalk::api {

namespace {
using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kWatchTimeout{2000};
// The warm-up's COPY gives up when the server sends nothing for this long (a frozen server).
constexpr std::chrono::milliseconds kWarmIdle{5000};
}  // namespace

CacheRefresher::CacheRefresher(Options options, Repository& repo, DocCache& cache)
    : opt_(std::move(options)), repo_(repo), cache_(cache) {}

CacheRefresher::~CacheRefresher() {
  request_stop();
  join();
}

void CacheRefresher::start() {
  if (watcher_.joinable()) return;
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
}

void CacheRefresher::join() {
  if (watcher_.joinable()) watcher_.join();
  if (warmer_.joinable()) warmer_.join();
}

bool CacheRefresher::stop_requested() {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool CacheRefresher::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return warm_cv_.wait_for(lock, d, [&] { return stopping_; });
}

// One connection of its own, so a busy pool never delays noticing a publish.
void CacheRefresher::watch_loop() {
  std::optional<DbConnection> conn;
  long long seen = -1;
  const auto interval = std::chrono::milliseconds(std::clamp(opt_.poll_ms, 10, 500));
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (watch_cv_.wait_for(lock, interval, [&] { return stopping_; })) return;
    }
    if (!opt_.cache_on) continue;
    try {
      // Bounded like a request: a frozen database must not hold up shutdown.
      const Deadline deadline = Clock::now() + kWatchTimeout;
      if (!conn || !conn->ok()) {
        conn.reset();
        conn.emplace(opt_.db_url, deadline);
      }
      auto r = conn->exec("SELECT version FROM public.catwalk_publish", deadline);
      long long v = r.rows() > 0 ? r.get_int(0, 0) : 0;
      const bool published = v != seen;
      if (published) {
        cache_.invalidate();
        seen = v;
        publish_version_.store(v);
      }
      cache_.set_usable(true);
      // After the flush (and at start, and when the database is back): the new generation is
      // what the warmer fills; a warm-up of an older one sees the bump and gives way.
      if (published) request_warm(cache_.generation());
    } catch (const std::exception&) {
      if (cache_.enabled())
        catwalk::log("publish watcher: cannot read catwalk_publish; document cache off");
      cache_.set_usable(false);
      cache_.invalidate();
      seen = -1;
      conn.reset();
    }
  }
}

void CacheRefresher::request_warm(std::uint64_t generation) {
  {
    std::lock_guard lock(mu_);
    warm_wanted_ = generation;
  }
  warm_cv_.notify_all();
}

// Runs the latest warm-up asked for, until stopped. A request that arrives while a warm-up runs
// is picked up when that one gives way (its generation is then stale).
void CacheRefresher::warm_loop() {
  for (;;) {
    std::uint64_t generation;
    {
      std::unique_lock lock(mu_);
      warm_cv_.wait(lock, [&] { return stopping_ || warm_wanted_ != 0; });
      if (stopping_) return;
      generation = std::exchange(warm_wanted_, 0);
    }
    warm(generation);
  }
}

// Streams every product's documents into the cache until the catalogue ends or seven eighths
// of the budget are used (misses fill the rest; nothing is ever evicted). Stops early, quietly,
// when the generation moves on (a publish or a lost database: the watcher asks again when it
// sees the new version or the database back), or when stopping. Returns true when the warm-up
// completed.
//
// How: one COPY of product_docs in binary format on a connection of the warmer's own, parsed as
// it streams, each document copied once, into the cache. The stored documents are mostly gzip
// (about a third of the JSON), so the full catalogue arrives in seconds; until then a miss
// costs one primary-key SELECT, as before.
//
// Which documents: styles, detail and related, the three per-id routes a product page calls
// with ids all over the catalogue. The list pages are not warmed: they are cheap range scans
// of adjacent rows, any (page, count) pair is a different body, and the front end asks for few.
bool CacheRefresher::warm(std::uint64_t generation) {
  warming_.store(true);
  warm_runs_.fetch_add(1);
  const auto t0 = Clock::now();
  std::uint64_t stored = 0;
  bool completed = false;
  bool logged = false;
  const std::size_t pause_every = static_cast<std::size_t>(std::max(opt_.warm_batch_rows, 1));
  for (;;) {
    if (stop_requested() || cache_.generation() != generation) break;
    try {
      if (!warm_conn_ || !warm_conn_->ok()) {
        warm_conn_.reset();
        warm_conn_.emplace(opt_.db_url, Clock::now() + kWatchTimeout);
      }
      std::size_t rows = 0;
      BatchEnd end = BatchEnd::kMore;
      const bool whole = stream_product_docs(*warm_conn_, kWarmIdle, [&](const ProductDocsView& p) {
        end = store(p, generation, stored);
        if (end != BatchEnd::kMore) return false;
        if (++rows % pause_every == 0) {
          if (stop_requested()) return false;
          if (opt_.warm_pause_ms > 0 && pause(std::chrono::milliseconds(opt_.warm_pause_ms)))
            return false;
        }
        return true;
      });
      completed = whole || end == BatchEnd::kFull;
      break;
    } catch (const std::exception& e) {
      if (!logged) catwalk::log("cache warm-up paused after {} documents: {}", stored, e.what());
      logged = true;
      warm_conn_.reset();
      // No catalogue (or a bug): nothing to retry; a publish asks for a new warm-up.
      if (is_catalogue_missing(e) || !is_unavailable(e)) break;
      // Unreachable: retry while the generation holds (what is cached stays: those documents
      // are skipped as present). A database really down moves the generation on (the watcher
      // flushes the cache within a poll), which ends this warm-up; its return starts a new one.
      if (pause(std::chrono::milliseconds(200))) break;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (completed) {
    warm_last_seconds_.store(seconds);
    warm_runs_completed_.fetch_add(1);
    catwalk::log("cache warm-up: {} documents, {} MiB cached, in {:.1f} s", stored,
                 cache_.bytes() >> 20, seconds);
  }
  warming_.store(false);
  return completed;
}

CacheRefresher::BatchEnd CacheRefresher::store(const ProductDocsView& p, std::uint64_t generation,
                                               std::uint64_t& stored) {
  // The warm-up leaves an eighth of the budget to requests' misses: when the catalogue does not
  // fit, what clients ask for beyond the warmed ids still gets cached.
  const std::size_t warm_limit = cache_.budget() - cache_.budget() / 8;
  const std::pair<DocKind, std::string_view> docs[] = {
      {DocKind::kStyles, p.styles}, {DocKind::kDetail, p.detail}, {DocKind::kRelated, p.related}};
  for (const auto& [kind, doc] : docs) {
    switch (cache_.put(doc_key(kind, p.id), generation, doc, warm_limit)) {
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

}  // namespace catwalk::api
