// Prometheus text rendering of every /metrics family: see metrics.hpp.
#include "metrics.hpp"

#include <fmt/format.h>

#include "catwalk/version.hpp"

namespace catwalk::api {

void render_build_info(std::string& out) {
  // Version and commit are digits, dots and hex: nothing to escape in a label value.
  out += "# HELP catwalk_build_info The running build: version and git commit. Always 1.\n";
  out += "# TYPE catwalk_build_info gauge\n";
  fmt::format_to(std::back_inserter(out),
                 "catwalk_build_info{{version=\"{}\",revision=\"{}\"}} 1\n", kVersion, kGitCommit);
}

void Metrics::record(Route route, int status, std::int64_t micros) {
  auto& r = routes_[static_cast<std::size_t>(route)];
  if (status < 0 || status >= kStatuses) status = 0;
  r.by_status[static_cast<std::size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  if (micros < 0) micros = 0;
  double seconds = static_cast<double>(micros) / 1e6;
  std::size_t b = 0;
  while (b < kBucketsSeconds.size() && seconds > kBucketsSeconds[b]) ++b;
  r.buckets[b].fetch_add(1, std::memory_order_relaxed);
  r.count.fetch_add(1, std::memory_order_relaxed);
  r.sum_micros.fetch_add(static_cast<std::uint64_t>(micros), std::memory_order_relaxed);
}

void Metrics::render(std::string& out) const {
  render_build_info(out);
  auto it = std::back_inserter(out);
  out += "# HELP catwalk_http_requests_total HTTP requests answered, by route and status.\n";
  out += "# TYPE catwalk_http_requests_total counter\n";
  for (int i = 0; i < kRoutes; ++i) {
    auto label = route_label(static_cast<Route>(i));
    for (int s = 0; s < kStatuses; ++s) {
      auto n = routes_[static_cast<std::size_t>(i)].by_status[static_cast<std::size_t>(s)].load(
          std::memory_order_relaxed);
      if (n)
        fmt::format_to(it, "catwalk_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", label,
                       s, n);
    }
  }
  out += "# HELP catwalk_http_request_duration_seconds Time from routing to response, by route.\n";
  out += "# TYPE catwalk_http_request_duration_seconds histogram\n";
  for (int i = 0; i < kRoutes; ++i) {
    const auto& r = routes_[static_cast<std::size_t>(i)];
    auto count = r.count.load(std::memory_order_relaxed);
    if (count == 0) continue;
    auto label = route_label(static_cast<Route>(i));
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kBucketsSeconds.size(); ++b) {
      cumulative += r.buckets[b].load(std::memory_order_relaxed);
      fmt::format_to(it,
                     "catwalk_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n",
                     label, kBucketsSeconds[b], cumulative);
    }
    cumulative += r.buckets[kBucketsSeconds.size()].load(std::memory_order_relaxed);
    fmt::format_to(it,
                   "catwalk_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n",
                   label, cumulative);
    fmt::format_to(it, "catwalk_http_request_duration_seconds_sum{{route=\"{}\"}} {:.6f}\n", label,
                   static_cast<double>(r.sum_micros.load(std::memory_order_relaxed)) / 1e6);
    fmt::format_to(it, "catwalk_http_request_duration_seconds_count{{route=\"{}\"}} {}\n", label,
                   cumulative);
  }
}

void render_pool_metrics(const PoolStats& p, std::string& out) {
  fmt::format_to(
      std::back_inserter(out),
      "# HELP catwalk_db_pool_size Database connections the pool may hold.\n"
      "# TYPE catwalk_db_pool_size gauge\ncatwalk_db_pool_size {}\n"
      "# HELP catwalk_db_pool_in_use Database connections lent to requests now.\n"
      "# TYPE catwalk_db_pool_in_use gauge\ncatwalk_db_pool_in_use {}\n"
      "# HELP catwalk_db_pool_borrows_total Connection borrows.\n"
      "# TYPE catwalk_db_pool_borrows_total counter\ncatwalk_db_pool_borrows_total {}\n"
      "# HELP catwalk_db_pool_waits_total Borrows that waited for a free connection.\n"
      "# TYPE catwalk_db_pool_waits_total counter\ncatwalk_db_pool_waits_total {}\n"
      "# HELP catwalk_db_pool_timeouts_total Borrows that gave up waiting (answered 503).\n"
      "# TYPE catwalk_db_pool_timeouts_total counter\ncatwalk_db_pool_timeouts_total {}\n"
      "# HELP catwalk_db_connects_total Database connections opened.\n"
      "# TYPE catwalk_db_connects_total counter\ncatwalk_db_connects_total {}\n"
      "# HELP catwalk_db_connect_failures_total Failed attempts to open a database connection.\n"
      "# TYPE catwalk_db_connect_failures_total counter\ncatwalk_db_connect_failures_total {}\n",
      p.size, p.in_use, p.borrows, p.waits, p.timeouts, p.connects, p.connect_failures);
}

void render_cache_metrics(const CacheStats& c, std::string& out) {
  fmt::format_to(
      std::back_inserter(out),
      "# HELP catwalk_cache_hits_total Document cache hits.\n"
      "# TYPE catwalk_cache_hits_total counter\ncatwalk_cache_hits_total {}\n"
      "# HELP catwalk_cache_misses_total Document cache misses.\n"
      "# TYPE catwalk_cache_misses_total counter\ncatwalk_cache_misses_total {}\n"
      "# HELP catwalk_cache_invalidations_total Cache flushes (database lost, a publish that "
      "changed too much, a snapshot mapped).\n"
      "# TYPE catwalk_cache_invalidations_total counter\ncatwalk_cache_invalidations_total {}\n"
      "# HELP catwalk_cache_entries Documents in the cache.\n"
      "# TYPE catwalk_cache_entries gauge\ncatwalk_cache_entries {}\n"
      "# HELP catwalk_cache_bytes Bytes of documents in the cache.\n"
      "# TYPE catwalk_cache_bytes gauge\ncatwalk_cache_bytes {}\n"
      "# HELP catwalk_cache_warming 1 while a warm-up streams documents into the cache.\n"
      "# TYPE catwalk_cache_warming gauge\ncatwalk_cache_warming {}\n"
      "# HELP catwalk_cache_warm_runs_total Refreshes started (at start and after each publish).\n"
      "# TYPE catwalk_cache_warm_runs_total counter\ncatwalk_cache_warm_runs_total {}\n"
      "# HELP catwalk_cache_warm_runs_completed_total Warm-ups that reached the end of the "
      "catalogue or the budget.\n"
      "# TYPE catwalk_cache_warm_runs_completed_total counter\n"
      "catwalk_cache_warm_runs_completed_total {}\n"
      "# HELP catwalk_cache_warmed_documents_total Documents stored by warm-ups.\n"
      "# TYPE catwalk_cache_warmed_documents_total counter\n"
      "catwalk_cache_warmed_documents_total {}\n"
      "# HELP catwalk_cache_warm_last_seconds Duration of the last completed warm-up.\n"
      "# TYPE catwalk_cache_warm_last_seconds gauge\ncatwalk_cache_warm_last_seconds {:.3f}\n"
      "# HELP catwalk_publish_version catwalk_publish.version last seen (-1: unknown).\n"
      "# TYPE catwalk_publish_version gauge\ncatwalk_publish_version {}\n"
      "# HELP catwalk_cache_kept_documents_total Documents a publish did not change, kept cached "
      "(not read again).\n"
      "# TYPE catwalk_cache_kept_documents_total counter\ncatwalk_cache_kept_documents_total {}\n"
      "# HELP catwalk_cache_waste_resets_total Publishes that changed so much that the cache "
      "started empty.\n"
      "# TYPE catwalk_cache_waste_resets_total counter\ncatwalk_cache_waste_resets_total {}\n"
      "# HELP catwalk_cache_staged_swaps_total Publishes that changed so much that they were "
      "warmed beside the cache and swapped in warm.\n"
      "# TYPE catwalk_cache_staged_swaps_total counter\ncatwalk_cache_staged_swaps_total {}\n"
      "# HELP catwalk_cache_snapshot_loads_total Snapshots mapped at start and served as they "
      "were.\n"
      "# TYPE catwalk_cache_snapshot_loads_total counter\ncatwalk_cache_snapshot_loads_total {}\n"
      "# HELP catwalk_cache_snapshot_writes_total Snapshots written to the cache folder.\n"
      "# TYPE catwalk_cache_snapshot_writes_total counter\n"
      "catwalk_cache_snapshot_writes_total {}\n"
      "# HELP catwalk_cache_refresh_last_seconds Time from a publish seen to its generation "
      "swapped in, last refresh.\n"
      "# TYPE catwalk_cache_refresh_last_seconds gauge\n"
      "catwalk_cache_refresh_last_seconds {:.3f}\n"
      "# HELP catwalk_cache_catalogue_version The publish version the cached documents belong "
      "to (-1: none); behind catwalk_publish_version until a publish is swapped in.\n"
      "# TYPE catwalk_cache_catalogue_version gauge\ncatwalk_cache_catalogue_version {}\n"
      "# HELP catwalk_cache_miss_batches_total Queries that read missed documents (one per "
      "batch of concurrent misses).\n"
      "# TYPE catwalk_cache_miss_batches_total counter\ncatwalk_cache_miss_batches_total {}\n"
      "# HELP catwalk_cache_miss_batched_requests_total Requests those queries answered.\n"
      "# TYPE catwalk_cache_miss_batched_requests_total counter\n"
      "catwalk_cache_miss_batched_requests_total {}\n",
      c.hits, c.misses, c.invalidations, c.entries, c.bytes, c.warming ? 1 : 0, c.warm_runs,
      c.warm_runs_completed, c.warmed_documents, c.warm_last_seconds, c.publish_version,
      c.kept_documents, c.waste_resets, c.staged_swaps, c.snapshot_loads, c.snapshot_writes,
      c.refresh_last_seconds, c.catalogue_version, c.miss_batches, c.miss_batched_requests);
}

}  // namespace catwalk::api
