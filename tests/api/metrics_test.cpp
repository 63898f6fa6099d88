#include "metrics.hpp"

#include <doctest/doctest.h>

using namespace catwalk::api;

TEST_CASE("Metrics: counters by route and status, cumulative histogram") {
  Metrics m;
  m.record(Route::kStyles, 200, 300);         // 0.3 ms
  m.record(Route::kStyles, 200, 2'000);       // 2 ms
  m.record(Route::kStyles, 404, 10'000'000);  // 10 s: only +Inf
  m.record(Route::kUnmatched, 404, 50);
  std::string out;
  m.render(out);
  CHECK(out.find("catwalk_http_requests_total{route=\"styles\",status=\"200\"} 2\n") !=
        std::string::npos);
  CHECK(out.find("catwalk_http_requests_total{route=\"styles\",status=\"404\"} 1\n") !=
        std::string::npos);
  CHECK(out.find("catwalk_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n") !=
        std::string::npos);
  CHECK(out.find(
            "catwalk_http_request_duration_seconds_bucket{route=\"styles\",le=\"0.0005\"} 1\n") !=
        std::string::npos);
  CHECK(out.find(
            "catwalk_http_request_duration_seconds_bucket{route=\"styles\",le=\"0.0025\"} 2\n") !=
        std::string::npos);
  CHECK(out.find("catwalk_http_request_duration_seconds_bucket{route=\"styles\",le=\"5\"} 2\n") !=
        std::string::npos);
  CHECK(
      out.find("catwalk_http_request_duration_seconds_bucket{route=\"styles\",le=\"+Inf\"} 3\n") !=
      std::string::npos);
  CHECK(out.find("catwalk_http_request_duration_seconds_count{route=\"styles\"} 3\n") !=
        std::string::npos);
  CHECK(out.find("route=\"product\"") == std::string::npos);  // nothing recorded, nothing shown
}

TEST_CASE("Metrics: the build-info line carries the CMake project version, first") {
  Metrics m;
  std::string out;
  m.render(out);
  const std::string line =
      std::string("catwalk_build_info{version=\"") + CATWALK_EXPECTED_VERSION + "\",revision=\"";
  auto at = out.find(line);
  REQUIRE(at != std::string::npos);
  auto end = out.find('\n', at);
  REQUIRE(end != std::string::npos);
  CHECK(out.substr(at, end - at).ends_with("\"} 1"));
  CHECK(out.find("# TYPE catwalk_build_info gauge\n") < at);
  // Rendered even before any request: a scrape always says which build answers.
  CHECK(out.starts_with("# HELP catwalk_build_info "));
}
