// Cache snapshots: the file format, writing (temporary file, fsync, rename) and loading (mapped,
// checked). See snapshot.hpp.
#include "snapshot.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "catwalk/gzip.hpp"
#include "catwalk/log.hpp"

namespace catwalk::api {

namespace {

constexpr char kMagic[8] = {'C', 'W', 'S', 'N', 'A', 'P', '\r', '\n'};
// Bumped whenever the layout or the slot encoding changes: an older file is then ignored.
constexpr std::uint32_t kFormatVersion = 1;
constexpr std::uint32_t kEndian = 0x01020304;  // read back otherwise on a foreign machine
constexpr std::size_t kHeaderBytes = 4096;     // the arena starts on a page of its own
constexpr std::size_t kPageSlots = DocCache::kKinds * DocCache::kPageIds;
// A page record: the page number, then its slots (kind-major).
constexpr std::size_t kRecordBytes = 8 + kPageSlots * 8;

struct Header {
  char magic[8];
  std::uint32_t format;
  std::uint32_t endian;
  std::uint64_t file_bytes;
  std::uint64_t arena_offset;
  std::uint64_t arena_bytes;
  std::uint64_t index_offset;
  std::uint64_t page_count;
  std::uint64_t entries;
  std::uint64_t live_bytes;
  std::uint64_t chunk_bytes;  // the window size the slots' offsets are relative to
  std::uint32_t kinds;
  std::uint32_t page_ids;
  std::int64_t publish_version;
  std::int64_t published_at_us;
  std::uint32_t database_len;
  char database[128];
  std::uint32_t index_crc;
  std::uint32_t header_crc;  // of every byte before it
};
static_assert(sizeof(Header) <= kHeaderBytes);

std::uint32_t header_crc(const Header& h) {
  return gzip::crc32(
      std::string_view(reinterpret_cast<const char*>(&h), offsetof(Header, header_crc)));
}

std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }

std::string errno_text(int e) { return std::system_category().message(e); }

// FNV-1a: a stable name per catalogue database that does not reveal its URL.
std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// mkdir -p with mode 0700 for every folder it creates.
bool make_dirs(const std::string& dir, std::string& why) {
  for (std::size_t at = 1; at <= dir.size(); ++at) {
    if (at != dir.size() && dir[at] != '/') continue;
    const std::string prefix = dir.substr(0, at);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      why = fmt::format("cannot create {}: {}", prefix, errno_text(errno));
      return false;
    }
  }
  return true;
}

// A file written through a buffer; remembers the first error.
class FileWriter {
 public:
  FileWriter(int fd, std::size_t limit) : fd_(fd), limit_(limit) { buf_.reserve(kBuffer); }
  bool write(std::string_view s) {
    if (error_ != 0) return false;
    buf_.append(s);
    return buf_.size() < kBuffer || flush();
  }
  bool zeros(std::size_t n) {
    static const char kZeros[4096] = {};
    while (n > 0 && error_ == 0) {
      const std::size_t k = std::min(n, sizeof kZeros);
      write(std::string_view(kZeros, k));
      n -= k;
    }
    return error_ == 0;
  }
  bool flush() {
    std::size_t at = 0;
    while (at < buf_.size() && error_ == 0) {
      std::size_t n = buf_.size() - at;
      if (written_ + n > limit_) {
        n = limit_ > written_ ? limit_ - written_ : 0;
        if (n == 0) {
          error_ = ENOSPC;  // the tests' full disk
          break;
        }
      }
      const ssize_t w = ::write(fd_, buf_.data() + at, n);
      if (w < 0) {
        if (errno != EINTR) error_ = errno;
        continue;
      }
      at += static_cast<std::size_t>(w);
      written_ += static_cast<std::size_t>(w);
    }
    buf_.clear();
    return error_ == 0;
  }
  std::uint64_t position() const { return written_ + buf_.size(); }
  int error() const { return error_; }

 private:
  static constexpr std::size_t kBuffer = 1u << 20;
  int fd_;
  std::size_t limit_;
  std::string buf_;
  std::uint64_t written_ = 0;
  int error_ = 0;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::shared_ptr<const void> map_file(int fd, std::size_t offset, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return nullptr;
  return std::shared_ptr<const void>(
      p, [bytes](const void* q) { ::munmap(const_cast<void*>(q), bytes); });
}

}  // namespace

std::string default_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/catwalk-api";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] == '/') return std::string(home) + "/.cache/catwalk-api";
  return {};
}

SnapshotStore::SnapshotStore(std::string dir, const std::string& catalogue_url)
    : dir_(std::move(dir)) {
  if (dir_.empty()) return;
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  std::string why;
  struct stat st {};
  if (make_dirs(dir_, why)) {
    if (::stat(dir_.c_str(), &st) != 0) {
      why = fmt::format("cannot read it: {}", errno_text(errno));
    } else if (!S_ISDIR(st.st_mode)) {
      why = "it is not a folder";
    } else if (st.st_uid != ::geteuid()) {
      why = "it belongs to another user";
    } else if (::access(dir_.c_str(), W_OK | X_OK) != 0) {
      why = fmt::format("cannot write in it: {}", errno_text(errno));
    }
  }
  if (!why.empty()) {
    catwalk::log("cache folder {}: {}; cache snapshots are off (choose one with --cache-dir)", dir_,
                 why);
    return;
  }
  path_ = fmt::format("{}/catalogue-{:016x}.snapshot", dir_, fnv1a(catalogue_url));
}

std::optional<CatalogueId> SnapshotStore::load(DocCache& cache) {
  if (!enabled()) return std::nullopt;
  auto ignored = [&](const std::string& why) {
    catwalk::log("cache snapshot {}: ignored: {}", path_, why);
    return std::nullopt;
  };
  Fd f{::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
  if (f.fd < 0) {
    if (errno == ENOENT) return std::nullopt;  // none yet: a cold start
    return ignored(fmt::format("cannot open it: {}", errno_text(errno)));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return ignored(errno_text(errno));
  if (!S_ISREG(st.st_mode)) return ignored("not a regular file");
  if (st.st_uid != ::geteuid()) return ignored("it belongs to another user");
  if ((st.st_mode & 022) != 0) return ignored("others may write it");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  Header h{};
  if (size < kHeaderBytes || ::pread(f.fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
    return ignored("truncated (no whole header)");
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return ignored("not a cache snapshot");
  if (h.header_crc != header_crc(h)) return ignored("damaged header (checksum)");
  if (h.endian != kEndian) return ignored("written on a machine of another byte order");
  if (h.format != kFormatVersion)
    return ignored(fmt::format("format version {}, this build reads {}", h.format, kFormatVersion));
  if (h.kinds != DocCache::kKinds || h.page_ids != DocCache::kPageIds ||
      h.chunk_bytes != DocCache::kChunkBytes || h.database_len > sizeof h.database)
    return ignored("another layout");
  if (h.file_bytes != size) {
    return ignored(
        fmt::format("truncated or extended: {} bytes, the header says {}", size, h.file_bytes));
  }
  if (h.arena_offset != kHeaderBytes || h.index_offset % 4096 != 0 ||
      h.index_offset < h.arena_offset + h.arena_bytes ||
      h.index_offset + h.page_count * kRecordBytes != size)
    return ignored("inconsistent sizes");
  if (h.arena_bytes > cache.budget()) {
    return ignored(fmt::format("{} MiB of documents do not fit the cache budget ({} MiB)",
                               h.arena_bytes >> 20, cache.budget() >> 20));
  }
  auto index = map_file(f.fd, h.index_offset, h.page_count * kRecordBytes);
  auto arena = map_file(f.fd, h.arena_offset, h.arena_bytes);
  if ((h.page_count > 0 && !index) || (h.arena_bytes > 0 && !arena))
    return ignored(fmt::format("cannot map it: {}", errno_text(errno)));
  const char* idx = static_cast<const char*>(index.get());
  const std::size_t index_bytes = h.page_count * kRecordBytes;
  if (gzip::crc32(std::string_view(idx, index_bytes)) != h.index_crc)
    return ignored("damaged index (checksum)");
  CatalogueId id{std::string(h.database, h.database_len), h.publish_version, h.published_at_us};
  std::size_t next = 0;
  const bool ok = cache.install_mapped(
      id, static_cast<const char*>(arena.get()), h.arena_bytes, arena,
      [&](std::uint32_t& page, std::uint64_t* out) {
        if (next == h.page_count) return false;
        const char* rec = idx + next++ * kRecordBytes;
        std::uint64_t number;
        std::memcpy(&number, rec, 8);
        page = number > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(number);
        std::memcpy(out, rec + 8, kPageSlots * 8);
        return true;
      });
  if (!ok) return ignored("an index entry points outside the documents (damaged)");
  arena_ = arena;
  arena_bytes_ = h.arena_bytes;
  // Nothing is read here: the documents may not even be in the page cache (after a reboot).
  // Requests fault them in as they come; prefault() reads and maps the rest once serving.
  catwalk::log("cache snapshot {}: mapped {} documents, {} MiB, of publish {}", path_,
               cache.entries(), h.arena_bytes >> 20, h.publish_version);
  return id;
}

// In slices, not one call over the whole arena: populating holds the process's mmap lock for
// reading, and a thread that must take it for writing meanwhile (a new malloc arena, a thread
// stack) waits for the call to end, with every request thread's page fault queued behind that
// writer. 4 MiB slices bound such a stall to about a millisecond.
void SnapshotStore::prefault() {
#ifdef MADV_POPULATE_READ
  constexpr std::size_t kSlice = 4u << 20;
  if (auto arena = arena_.lock()) {
    auto* base = static_cast<char*>(const_cast<void*>(arena.get()));
    for (std::size_t at = 0; at < arena_bytes_; at += kSlice) {
      if (::madvise(base + at, std::min(kSlice, arena_bytes_ - at), MADV_POPULATE_READ) != 0)
        return;  // an old kernel (EINVAL) or a vanished file: requests fault pages in themselves
      std::this_thread::yield();
    }
  }
#endif
}

bool SnapshotStore::save(const DocCache::Reader& generation,
                         const std::function<bool(bool)>& go_on) {
  if (!enabled()) return false;
  const auto catalogue = generation.catalogue();
  if (!catalogue) return false;
  Header h;
  std::memset(&h, 0, sizeof h);
  if (catalogue->database.size() > sizeof h.database) return false;
  static std::atomic<unsigned> counter{0};
  const std::string tmp =
      fmt::format("{}/.{}.tmp.{}.{}", dir_, path_.substr(dir_.size() + 1), ::getpid(), counter++);
  Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
  auto failed = [&](const std::string& why) {
    catwalk::log("cache snapshot {}: not written: {}", path_, why);
    ::unlink(tmp.c_str());
    return false;
  };
  if (f.fd < 0) return failed(fmt::format("cannot create {}: {}", tmp, errno_text(errno)));

  FileWriter out(f.fd, write_limit_);
  out.zeros(kHeaderBytes);
  // The arena, in the order the reader gives (page, kind, slot); the index as it goes.
  std::vector<std::pair<std::uint64_t, std::vector<std::uint64_t>>> pages;
  std::uint64_t arena = 0, entries = 0, live = 0, asked_at = 0;
  bool abandoned = false;
  generation.for_each([&](std::uint32_t page, std::size_t kind, std::uint32_t index,
                          std::string_view doc) {
    if (pages.empty() || pages.back().first != page)
      pages.emplace_back(page, std::vector<std::uint64_t>(kPageSlots, 0));
    // No document crosses a window: windows become chunks as they are.
    const std::size_t in_window = arena % DocCache::kChunkBytes;
    if (in_window + doc.size() > DocCache::kChunkBytes) {
      out.zeros(DocCache::kChunkBytes - in_window);
      arena += DocCache::kChunkBytes - in_window;
    }
    pages.back().second[kind * DocCache::kPageIds + index] =
        DocCache::slot_of(arena / DocCache::kChunkBytes, arena % DocCache::kChunkBytes, doc.size());
    out.write(doc);
    arena += doc.size();
    ++entries;
    live += doc.size();
    if (arena - asked_at >= (64u << 20)) {
      asked_at = arena;
      abandoned = !go_on(false);
    }
    return out.error() == 0 && !abandoned;
  });
  if (abandoned) {
    ::unlink(tmp.c_str());
    return false;
  }
  const std::uint64_t index_offset = round_up(kHeaderBytes + arena, 4096);
  out.zeros(index_offset - kHeaderBytes - arena);
  std::uint32_t index_crc = 0;
  for (const auto& [number, slots] : pages) {
    const std::string_view n(reinterpret_cast<const char*>(&number), 8);
    const std::string_view s(reinterpret_cast<const char*>(slots.data()), slots.size() * 8);
    index_crc = gzip::crc32(s, gzip::crc32(n, index_crc));
    out.write(n);
    out.write(s);
  }
  out.flush();
  if (out.error() != 0) return failed(errno_text(out.error()));

  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.format = kFormatVersion;
  h.endian = kEndian;
  h.file_bytes = index_offset + pages.size() * kRecordBytes;
  h.arena_offset = kHeaderBytes;
  h.arena_bytes = arena;
  h.index_offset = index_offset;
  h.page_count = pages.size();
  h.entries = entries;
  h.live_bytes = live;
  h.chunk_bytes = DocCache::kChunkBytes;
  h.kinds = DocCache::kKinds;
  h.page_ids = DocCache::kPageIds;
  h.publish_version = catalogue->version;
  h.published_at_us = catalogue->published_at_us;
  h.database_len = static_cast<std::uint32_t>(catalogue->database.size());
  std::memcpy(h.database, catalogue->database.data(), catalogue->database.size());
  h.index_crc = index_crc;
  h.header_crc = header_crc(h);
  if (::pwrite(f.fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
    return failed(errno_text(errno));
  if (::fsync(f.fd) != 0) return failed(fmt::format("fsync: {}", errno_text(errno)));
  if (!go_on(true)) {
    ::unlink(tmp.c_str());
    return false;
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0)
    return failed(fmt::format("rename: {}", errno_text(errno)));
  // The rename itself is durable once the folder is synced (best effort: a crash before that
  // leaves the previous snapshot, which is checked against the database like any other).
  Fd d{::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0) ::fsync(d.fd);
  catwalk::log("cache snapshot {}: wrote {} documents, {} MiB, of publish {}", path_, entries,
               arena >> 20, catalogue->version);
  return true;
}

}  // namespace catwalk::api
