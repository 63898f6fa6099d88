#pragma once
// Everything /metrics says, in the Prometheus text format: the request counters and latency
// histograms per route (Metrics, recorded by every worker, after the build-info line), and the
// families rendered from snapshots of the other parts (the connection pool, the document cache and
// its refresher). Recording is lock-free (relaxed atomics): it runs once per request on every
// worker.
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "pool.hpp"
#include "routes.hpp"

namespace catwalk::api {

// Appends `catwalk_build_info{version="...",revision="..."} 1`: the version of this build (the
// CMake project version, as --version prints it) and its git commit ("" when unknown), the
// Prometheus convention for telling which build a scraped process runs.
void render_build_info(std::string& out);

class Metrics {
 public:
  static constexpr std::array<double, 13> kBucketsSeconds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

  void record(Route route, int status, std::int64_t micros);
  // Appends the build info (render_build_info), then the request and latency families.
  void render(std::string& out) const;

 private:
  static constexpr int kRoutes = static_cast<int>(Route::kCount);
  static constexpr int kStatuses = 600;
  struct PerRoute {
    std::array<std::atomic<std::uint64_t>, kStatuses> by_status{};
    std::array<std::atomic<std::uint64_t>, kBucketsSeconds.size() + 1> buckets{};
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> sum_micros{0};
  };
  std::array<PerRoute, kRoutes> routes_{};
};

// A snapshot of the document cache and of what keeps it fresh (the publish watcher and the
// warmer), as /metrics shows it.
struct CacheStats {
  std::uint64_t hits = 0, misses = 0, invalidations = 0;
  std::size_t entries = 0, bytes = 0;
  bool warming = false;
  std::uint64_t warm_runs = 0, warm_runs_completed = 0, warmed_documents = 0;
  double warm_last_seconds = 0;
  long long publish_version = -1;  // -1: not read yet, or the database is unreachable
  std::uint64_t kept_documents = 0, waste_resets = 0, staged_swaps = 0, snapshot_loads = 0,
                snapshot_writes = 0;
  double refresh_last_seconds = 0;
  // Queries that served misses (one per batch: MissBatcher) and the requests they served.
  std::uint64_t miss_batches = 0, miss_batched_requests = 0;
  // The publish the cache's documents belong to (-1: none yet). It trails publish_version while
  // a publish is being checked (the previous one is served meanwhile): equal once swapped in.
  long long catalogue_version = -1;
};

// Append the catwalk_db_pool_* / catwalk_db_connect* families, and the cache_* and
// publish_version families.
void render_pool_metrics(const PoolStats& p, std::string& out);
void render_cache_metrics(const CacheStats& c, std::string& out);

}  // namespace catwalk::api
