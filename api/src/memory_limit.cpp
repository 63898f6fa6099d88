// Reading the process's memory limit (cgroups, /proc/meminfo): see memory_limit.hpp.
#include "memory_limit.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace catwalk::api {

namespace {

namespace fs = std::filesystem;

std::optional<std::string> read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<std::size_t> parse_size(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  std::size_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;  // "max", garbage
  return v;
}

void take(std::optional<MemoryLimit>& best, std::size_t bytes, std::string source) {
  if (!best || bytes < best->bytes) best = MemoryLimit{bytes, std::move(source)};
}

}  // namespace

std::optional<MemoryLimit> memory_limit(const std::string& root) {
  std::optional<MemoryLimit> best;
  const fs::path r(root);
  // cgroup v2: "0::/a/b" in /proc/self/cgroup; the limit of /a/b and of every ancestor applies.
  // In a container with its own cgroup namespace the path is "/" and the limit sits at the root.
  std::string cgroup_path = "/";
  if (auto self = read_text(r / "proc/self/cgroup")) {
    std::istringstream lines(*self);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("0::")) cgroup_path = line.substr(3);
    }
  }
  for (fs::path p = fs::path(cgroup_path).relative_path();; p = p.parent_path()) {
    if (auto text = read_text(r / "sys/fs/cgroup" / p / "memory.max")) {
      if (auto v = parse_size(*text)) take(best, *v, "cgroup memory.max");
    }
    if (p.empty()) break;
  }
  // cgroup v1: no limit reads as a huge number (about 2^63), which MemTotal then beats.
  if (auto text = read_text(r / "sys/fs/cgroup/memory/memory.limit_in_bytes")) {
    if (auto v = parse_size(*text)) take(best, *v, "cgroup memory.limit_in_bytes");
  }
  if (auto meminfo = read_text(r / "proc/meminfo")) {
    std::istringstream lines(*meminfo);
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("MemTotal:")) continue;
      std::istringstream fields(line.substr(9));
      std::size_t kib = 0;
      if (fields >> kib) take(best, kib * 1024, "MemTotal");
    }
  }
  return best;
}

std::size_t default_cache_mb(const std::optional<MemoryLimit>& limit) {
  if (!limit || limit->bytes == 0) return kFallbackCacheMb;
  return std::clamp<std::size_t>(limit->bytes / 2 / (1024 * 1024), 1, kMaxDefaultCacheMb);
}

}  // namespace catwalk::api
