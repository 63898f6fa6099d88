#pragma once
// The route table of the contract, independent of HTTP plumbing: which route a path names,
// which methods it allows, and how a path id or query number is validated. Pure functions.
#include <cstdint>
#include <optional>
#include <string_view>

namespace catwalk::api {

enum class Route : int {
  kProducts,  // /products
  kProduct,   // /products/:id
  kStyles,    // /products/:id/styles
  kRelated,   // /products/:id/related
  kCart,      // /cart
  kHealth,
  kReady,
  kMetrics,
  kUnmatched,  // anything else: 404
  kCount
};

// The metrics label of a route ("products", "product", ..., "unmatched").
std::string_view route_label(Route r);

struct RouteMatch {
  Route route = Route::kUnmatched;
  std::string_view id;  // the raw :id segment for kProduct/kStyles/kRelated (may be invalid)
};

// Matches a decoded request path, at the root or under the /catwalk prefix.
RouteMatch match_route(std::string_view path);

// The methods a matched route answers (besides OPTIONS), for 405 and the Allow header.
std::string_view allowed_methods(Route r);
bool method_allowed(Route r, std::string_view method);

// A path id: a positive decimal integer that fits in 32 bits, digits only (no sign, no spaces,
// no leading "+", no fraction). std::nullopt otherwise.
std::optional<std::int32_t> parse_id(std::string_view s);

// A positive decimal integer that fits in 63 bits, digits only. std::nullopt otherwise.
std::optional<std::int64_t> parse_positive(std::string_view s);

// The rn bounds (lo, hi] of page `page` of size `count` (both >= 1), clamped to 32 bits.
// std::nullopt when the page starts past any possible rank: the answer is [] without a query.
std::optional<std::pair<std::int32_t, std::int32_t>> page_bounds(std::int64_t page,
                                                                 std::int64_t count);

}  // namespace catwalk::api
