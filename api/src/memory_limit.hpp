#pragma once
// How much memory this process may use, and the document cache's default budget from it, so
// that a default start never gets the process killed for memory (a 1 GiB VM or container).
//
// The limit is the smallest of: the cgroup v2 memory.max of the process's cgroup and of its
// ancestors, the cgroup v1 memory.limit_in_bytes, and MemTotal from /proc/meminfo. `root` is
// the file system root ("/"; tests pass a folder laid out like one).
#include <cstddef>
#include <optional>
#include <string>

namespace catwalk::api {

struct MemoryLimit {
  std::size_t bytes = 0;
  std::string source;  // where it came from, for the log: "cgroup v2 memory.max", "MemTotal", ...
};
// nullopt when nothing could be read (then the caller picks a fixed default).
std::optional<MemoryLimit> memory_limit(const std::string& root = "/");

// The default --cache-mb: half of the limit (the rest is the process itself: threads, request
// buffers, inflating for identity clients; and a database on the same machine), capped at
// kMaxDefaultCacheMb; kFallbackCacheMb when the limit is unknown.
inline constexpr std::size_t kFallbackCacheMb = 512;
inline constexpr std::size_t kMaxDefaultCacheMb = 4096;
std::size_t default_cache_mb(const std::optional<MemoryLimit>& limit);

}  // namespace catwalk::api
