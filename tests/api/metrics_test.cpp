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

TEST_CASE("render_pool_metrics and render_cache_metrics: one sample per family, values in place") {
  PoolStats p;
  p.size = 6;
  p.in_use = 2;
  p.timeouts = 3;
  CacheStats c;
  c.hits = 7;
  c.warming = true;
  c.warm_last_seconds = 1.5;
  c.publish_version = 42;
  c.catalogue_version = 41;
  std::string out;
  render_pool_metrics(p, out);
  render_cache_metrics(c, out);
  for (const char* line :
       {"\ncatwalk_db_pool_size 6\n", "\ncatwalk_db_pool_in_use 2\n",
        "\ncatwalk_db_pool_timeouts_total 3\n", "\ncatwalk_cache_hits_total 7\n",
        "\ncatwalk_cache_warming 1\n", "\ncatwalk_cache_warm_last_seconds 1.500\n",
        "\ncatwalk_publish_version 42\n", "\ncatwalk_cache_catalogue_version 41\n"}) {
    CAPTURE(line);
    CHECK(out.find(line) != std::string::npos);
  }
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
