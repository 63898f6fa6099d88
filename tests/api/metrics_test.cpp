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
