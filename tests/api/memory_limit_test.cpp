// The default cache budget from the memory limit, on fake /proc and /sys trees.
#include "memory_limit.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace catwalk::api;
namespace fs = std::filesystem;

namespace {
struct FakeRoot {
  fs::path dir;
  FakeRoot() {
    dir = fs::temp_directory_path() /
          ("catwalk-memlimit-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::create_directories(dir);
  }
  ~FakeRoot() { fs::remove_all(dir); }
  static int& counter() {
    static int n = 0;
    return n;
  }
  void write(const std::string& rel, const std::string& text) {
    fs::create_directories((dir / rel).parent_path());
    std::ofstream(dir / rel) << text;
  }
  std::string root() const { return dir.string(); }
};
constexpr std::size_t kMiB = 1024 * 1024;
const char* kMeminfo24G = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
}  // namespace

TEST_CASE("memory_limit: a cgroup v2 limit of 1 GiB wins over the machine's memory") {
  FakeRoot r;
  r.write("proc/meminfo", kMeminfo24G);
  r.write("proc/self/cgroup", "0::/system.slice/catwalk.service\n");
  r.write("sys/fs/cgroup/memory.max", "max\n");
  r.write("sys/fs/cgroup/system.slice/memory.max", "max\n");
  r.write("sys/fs/cgroup/system.slice/catwalk.service/memory.max", "1073741824\n");
  auto limit = memory_limit(r.root());
  REQUIRE(limit);
  CHECK(limit->bytes == 1073741824);
  CHECK(limit->source == "cgroup memory.max");
  // Half for the cache: a full cache plus the process stays well under the limit.
  CHECK(default_cache_mb(limit) == 512);
}

TEST_CASE("memory_limit: an ancestor cgroup's limit applies, and a container's root one") {
  FakeRoot r;
  r.write("proc/meminfo", kMeminfo24G);
  r.write("proc/self/cgroup", "0::/a/b\n");
  r.write("sys/fs/cgroup/a/memory.max", "805306368\n");  // 768 MiB on the parent
  r.write("sys/fs/cgroup/a/b/memory.max", "max\n");
  CHECK(default_cache_mb(memory_limit(r.root())) == 384);
  FakeRoot c;
  c.write("proc/meminfo", kMeminfo24G);
  c.write("proc/self/cgroup", "0::/\n");
  c.write("sys/fs/cgroup/memory.max", "536870912\n");
  CHECK(default_cache_mb(memory_limit(c.root())) == 256);
}

TEST_CASE("memory_limit: cgroup v1, then MemTotal, then the fixed fallback") {
  FakeRoot v1;
  v1.write("proc/meminfo", kMeminfo24G);
  v1.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n");
  CHECK(default_cache_mb(memory_limit(v1.root())) == 512);
  FakeRoot unlimited;
  unlimited.write("proc/meminfo", "MemTotal:        1015808 kB\n");  // a "1 GB" VM
  unlimited.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  auto limit = memory_limit(unlimited.root());
  REQUIRE(limit);
  CHECK(limit->source == "MemTotal");
  CHECK(default_cache_mb(limit) == 1015808 / 1024 / 2);
  FakeRoot big;
  big.write("proc/meminfo", kMeminfo24G);
  CHECK(default_cache_mb(memory_limit(big.root())) == kMaxDefaultCacheMb);
  FakeRoot empty;
  CHECK_FALSE(memory_limit(empty.root()));
  CHECK(default_cache_mb(std::nullopt) == kFallbackCacheMb);
  (void)kMiB;
}
