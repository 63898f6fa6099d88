// The route table: path matching, allowed methods, id and query validation: see routes.hpp.
#include "routes.hpp"

#include <charconv>
#include <limits>

namespace catwalk::api {

std::string_view route_label(Route r) {
  switch (r) {
    case Route::kProducts:
      return "products";
    case Route::kProduct:
      return "product";
    case Route::kStyles:
      return "styles";
    case Route::kRelated:
      return "related";
    case Route::kCart:
      return "cart";
    case Route::kHealth:
      return "health";
    case Route::kReady:
      return "ready";
    case Route::kMetrics:
      return "metrics";
    default:
      return "unmatched";
  }
}

RouteMatch match_route(std::string_view path) {
  constexpr std::string_view kPrefix = "/catwalk";
  if (path.starts_with(kPrefix) && (path.size() == kPrefix.size() || path[kPrefix.size()] == '/')) {
    path.remove_prefix(kPrefix.size());
  }
  if (path == "/products") return {Route::kProducts, {}};
  if (path == "/cart") return {Route::kCart, {}};
  if (path == "/health") return {Route::kHealth, {}};
  if (path == "/ready") return {Route::kReady, {}};
  if (path == "/metrics") return {Route::kMetrics, {}};
  constexpr std::string_view kProducts = "/products/";
  if (!path.starts_with(kProducts)) return {};
  path.remove_prefix(kProducts.size());
  auto slash = path.find('/');
  if (slash == std::string_view::npos) return {Route::kProduct, path};
  std::string_view id = path.substr(0, slash);
  std::string_view rest = path.substr(slash);
  if (rest == "/styles") return {Route::kStyles, id};
  if (rest == "/related") return {Route::kRelated, id};
  return {};
}

std::string_view allowed_methods(Route r) {
  switch (r) {
    case Route::kCart:
      return "GET, HEAD, POST, OPTIONS";
    case Route::kUnmatched:
      return "";
    default:
      return "GET, HEAD, OPTIONS";
  }
}

bool method_allowed(Route r, std::string_view method) {
  if (r == Route::kUnmatched) return false;
  if (method == "GET" || method == "HEAD" || method == "OPTIONS") return true;
  return r == Route::kCart && method == "POST";
}

namespace {
template <typename Int>
std::optional<Int> parse_digits(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  Int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}
}  // namespace

std::optional<std::int32_t> parse_id(std::string_view s) { return parse_digits<std::int32_t>(s); }

std::optional<std::int64_t> parse_positive(std::string_view s) {
  return parse_digits<std::int64_t>(s);
}

std::optional<std::pair<std::int32_t, std::int32_t>> page_bounds(std::int64_t page,
                                                                 std::int64_t count) {
  constexpr std::int64_t kMaxRank = std::numeric_limits<std::int32_t>::max();
  // (page-1)*count without overflow: past kMaxRank no product can be on the page.
  if (page - 1 > kMaxRank / count) return std::nullopt;
  std::int64_t lo = (page - 1) * count;
  if (lo >= kMaxRank) return std::nullopt;
  std::int64_t hi = count > kMaxRank - lo ? kMaxRank : lo + count;
  return std::pair{static_cast<std::int32_t>(lo), static_cast<std::int32_t>(hi)};
}

}  // namespace catwalk::api
