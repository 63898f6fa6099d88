#include "routes.hpp"

#include <doctest/doctest.h>

#include <limits>

using namespace catwalk::api;

TEST_CASE("match_route: every route at the root and under /catwalk") {
  struct Case {
    const char* path;
    Route route;
    const char* id;
  };
  const Case cases[] = {
      {"/products", Route::kProducts, ""},
      {"/catwalk/products", Route::kProducts, ""},
      {"/products/1", Route::kProduct, "1"},
      {"/catwalk/products/42", Route::kProduct, "42"},
      {"/products/1/styles", Route::kStyles, "1"},
      {"/catwalk/products/abc/styles", Route::kStyles, "abc"},
      {"/products/7/related", Route::kRelated, "7"},
      {"/products/", Route::kProduct, ""},
      {"/products//styles", Route::kStyles, ""},
      {"/cart", Route::kCart, ""},
      {"/catwalk/cart", Route::kCart, ""},
      {"/health", Route::kHealth, ""},
      {"/ready", Route::kReady, ""},
      {"/metrics", Route::kMetrics, ""},
      {"/", Route::kUnmatched, ""},
      {"/catwalk", Route::kUnmatched, ""},
      {"/catwalkproducts", Route::kUnmatched, ""},
      {"/products/1/reviews", Route::kUnmatched, ""},
      {"/products/1/styles/2", Route::kUnmatched, ""},
      {"/catwalk/catwalk/products", Route::kUnmatched, ""},
      {"/productsx", Route::kUnmatched, ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.path);
    auto m = match_route(c.path);
    CHECK(m.route == c.route);
    CHECK(m.id == c.id);
  }
}

TEST_CASE("parse_id accepts only positive 32-bit decimals") {
  CHECK(parse_id("1") == 1);
  CHECK(parse_id("2147483647") == 2147483647);
  CHECK(parse_id("007") == 7);
  for (const char* bad : {"", "0", "-1", "+1", "1.5", "abc", "1a", " 1", "1 ", "2147483648",
                          "99999999999", ":product_id", "0x10", "1e3", "000000000000000000001"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_id(bad).has_value());
  }
}

TEST_CASE("method_allowed: GET everywhere, POST only on /cart") {
  CHECK(method_allowed(Route::kCart, "POST"));
  CHECK(method_allowed(Route::kProduct, "GET"));
  CHECK_FALSE(method_allowed(Route::kProduct, "POST"));
  CHECK_FALSE(method_allowed(Route::kCart, "DELETE"));
  CHECK_FALSE(method_allowed(Route::kUnmatched, "GET"));
}

TEST_CASE("page_bounds: 64-bit care, past the end is empty") {
  CHECK(page_bounds(1, 5) == std::pair{0, 5});
  CHECK(page_bounds(2, 5) == std::pair{5, 10});
  CHECK(page_bounds(429496730, 5) == std::pair{2147483645, 2147483647});
  CHECK_FALSE(page_bounds(429496731, 5).has_value());
  CHECK_FALSE(page_bounds(std::numeric_limits<std::int64_t>::max(), 1000).has_value());
  CHECK(page_bounds(1, std::numeric_limits<std::int64_t>::max()) == std::pair{0, 2147483647});
}
