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

}  // namespace catwalk::api
