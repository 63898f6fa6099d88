// Accept-Encoding, ETag and If-None-Match handling: see http_caching.hpp.
#include "http_caching.hpp"

#include <fmt/format.h>

#include <cctype>
#include <optional>

namespace catwalk::api {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

// A qvalue ("0", "0.5", "1", "1.000"); nullopt when malformed. In thousandths.
std::optional<int> parse_qvalue(std::string_view v) {
  v = trim(v);
  if (v.empty() || (v[0] != '0' && v[0] != '1')) return std::nullopt;
  int q = (v[0] - '0') * 1000;
  if (v.size() == 1) return q;
  if (v[1] != '.' || v.size() > 5) return std::nullopt;
  int scale = 100;
  for (char c : v.substr(2)) {
    if (c < '0' || c > '9') return std::nullopt;
    q += (c - '0') * scale;
    scale /= 10;
  }
  return q <= 1000 ? std::optional<int>(q) : std::nullopt;
}

}  // namespace

bool accepts_gzip(std::string_view header) {
  int gzip = -1, identity = -1, star = -1;  // thousandths; -1 = not listed
  while (!header.empty()) {
    std::size_t comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    std::size_t semi = item.find(';');
    std::string_view coding = trim(item.substr(0, semi));
    int q = 1000;
    // Parameters: only q matters; a malformed q refuses that coding.
    for (std::string_view params = semi == std::string_view::npos ? "" : item.substr(semi + 1);
         !params.empty();) {
      std::size_t next = params.find(';');
      std::string_view p = trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
      if (p.size() >= 2 && (p[0] == 'q' || p[0] == 'Q') && trim(p.substr(1)).starts_with('=')) {
        auto v = parse_qvalue(trim(p.substr(1)).substr(1));
        q = v ? *v : 0;
      }
    }
    int* slot = nullptr;
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip"))
      slot = &gzip;
    else if (iequals(coding, "identity"))
      slot = &identity;
    else if (coding == "*")
      slot = &star;
    if (slot != nullptr) *slot = std::max(*slot, q);
  }
  if (gzip < 0) gzip = star < 0 ? 0 : star;
  // gzip whenever acceptable, unless the client ranks identity above it explicitly.
  return gzip > 0 && gzip >= identity;
}

std::string weak_etag(std::uint32_t crc32, std::uint64_t length, std::uint32_t check) {
  if (check == 0) return fmt::format("W/\"{:08x}-{:x}\"", crc32, length);
  return fmt::format("W/\"{:08x}-{:x}-{:08x}\"", crc32, length, check);
}

bool if_none_match(std::string_view header, std::string_view etag) {
  if (etag.starts_with("W/")) etag.remove_prefix(2);
  header = trim(header);
  if (header == "*") return true;
  while (!header.empty()) {
    header = trim(header);
    if (header.starts_with("W/")) header.remove_prefix(2);
    if (!header.starts_with('"')) return false;
    std::size_t close = header.find('"', 1);
    if (close == std::string_view::npos) return false;
    if (header.substr(0, close + 1) == etag) return true;
    header = trim(header.substr(close + 1));
    if (header.empty()) break;
    if (header.front() != ',') return false;
    header.remove_prefix(1);
  }
  return false;
}

}  // namespace catwalk::api
