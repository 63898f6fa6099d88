// SnapshotStore: the cache's snapshot file round trip, and every file it must refuse (damaged,
// truncated, wrong version, foreign-owned), a full disk while writing, two writers at once.
#include "snapshot.hpp"

#include <doctest/doctest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "catwalk/gzip.hpp"
#include "repository.hpp"

using namespace catwalk::api;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "catwalk-snapshot-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const CatalogueId kCatalogue{"catwalk", 12, 1700000000123456};
constexpr std::size_t kBudget = 512u << 20;

// A labelled cache: documents on several pages and kinds, and 20 documents of about 1 MB so
// that the arena passes a 16 MiB window (where the writer pads).
void fill(DocCache& c) {
  c.reset(kCatalogue);
  const auto g = c.generation();
  for (std::int32_t id : {1, 2, 16384, 16385, 1000000}) {
    for (auto kind : {DocKind::kDetail, DocKind::kStyles, DocKind::kRelated}) {
      REQUIRE(c.put(doc_key(kind, id), g,
                    std::to_string(id) + "/" + std::to_string(static_cast<int>(kind))) ==
              DocCache::PutResult::kStored);
    }
  }
  for (std::int32_t id = 100; id < 120; ++id) {
    REQUIRE(c.put(doc_key(DocKind::kStyles, id), g, std::string(1000000 + id, 'a' + id % 26)) ==
            DocCache::PutResult::kStored);
  }
}

void check_same(DocCache& a, DocCache& b) {
  CHECK(a.entries() == b.entries());
  std::size_t seen = 0;
  a.reader().for_each(
      [&](std::uint32_t page, std::size_t kind, std::uint32_t i, std::string_view doc) {
        const auto key = (static_cast<std::uint64_t>(kind) << 32) | (page * DocCache::kPageIds + i);
        auto got = b.peek(key);
        CHECK(got);
        CHECK(got.bytes == doc);
        ++seen;
        return true;
      });
  CHECK(seen == a.entries());
}

std::string snapshot_written(const std::string& dir) {
  DocCache c(kBudget);
  fill(c);
  SnapshotStore store(dir, "postgresql:///catwalk");
  REQUIRE(store.enabled());
  REQUIRE(store.save(c.reader(), [](bool) { return true; }));
  return store.path();
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

void patch(const std::string& path, std::size_t offset, const void* bytes, std::size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
}

// The header's layout as snapshot.cpp writes it (format version 1): the version after the
// 8-byte magic, the database's name at 108, the header's CRC-32 of the bytes before it at 240.
constexpr std::size_t kVersionOffset = 8, kDatabaseOffset = 108, kHeaderCrcOffset = 240;

void expect_ignored(const std::string& dir) {
  DocCache d(kBudget);
  SnapshotStore store(dir, "postgresql:///catwalk");
  CHECK_FALSE(store.load(d));
  CHECK(d.entries() == 0);  // nothing installed
  CHECK_FALSE(d.catalogue());
}

}  // namespace

TEST_CASE("snapshot: a written snapshot maps back to the same documents and catalogue") {
  TempDir t;
  const std::string dir = t.path + "/nested/cache";  // created, parents too
  DocCache c(kBudget);
  fill(c);
  SnapshotStore store(dir, "postgresql:///catwalk");
  REQUIRE(store.enabled());
  REQUIRE(store.save(c.reader(), [](bool) { return true; }));
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat(store.path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(files_in(dir).size() == 1);  // no temporary file left

  DocCache d(kBudget);
  auto loaded = store.load(d);
  REQUIRE(loaded);
  CHECK(*loaded == kCatalogue);
  CHECK(d.catalogue() == kCatalogue);
  check_same(c, d);
  CHECK(d.peek(doc_key(DocKind::kRelated, 1000000)).bytes == "1000000/2");
  // Requests go on as usual: a put appends to a chunk of its own.
  d.set_usable(true);
  CHECK(d.put(doc_key(DocKind::kStyles, 5), d.generation(), "five") ==
        DocCache::PutResult::kStored);
  CHECK(d.get(doc_key(DocKind::kStyles, 5)).bytes == "five");
  // Another database's snapshot is another file.
  SnapshotStore other(dir, "postgresql:///other");
  CHECK(other.path() != store.path());
  DocCache e(kBudget);
  CHECK_FALSE(other.load(e));
}

TEST_CASE(
    "snapshot: damaged, truncated, wrong-version, foreign and over-budget files are ignored") {
  TempDir t;
  SUBCASE("a damaged header") {
    const auto path = snapshot_written(t.path);
    // A byte of the database's name: nothing but the header's checksum can tell.
    const char x = 'X';
    patch(path, kDatabaseOffset + 2, &x, 1);
    expect_ignored(t.path);
  }
  SUBCASE("a damaged index") {
    const auto path = snapshot_written(t.path);
    const auto size = fs::file_size(path);
    const std::uint64_t junk = 0x0123456789abcdefull;
    patch(path, size - 1000, &junk, sizeof junk);
    expect_ignored(t.path);
  }
  SUBCASE("truncated") {
    const auto path = snapshot_written(t.path);
    fs::resize_file(path, fs::file_size(path) - 1);
    expect_ignored(t.path);
    fs::resize_file(path, 100);
    expect_ignored(t.path);
  }
  SUBCASE("another format version (with a valid header checksum)") {
    const auto path = snapshot_written(t.path);
    std::string header(kHeaderCrcOffset, '\0');
    std::ifstream(path, std::ios::binary).read(header.data(), kHeaderCrcOffset);
    const std::uint32_t version = 2;
    std::memcpy(header.data() + kVersionOffset, &version, 4);
    const std::uint32_t crc = catwalk::gzip::crc32(header);
    patch(path, kVersionOffset, &version, 4);
    patch(path, kHeaderCrcOffset, &crc, 4);
    expect_ignored(t.path);
  }
  SUBCASE("writable by others") {
    const auto path = snapshot_written(t.path);
    REQUIRE(::chmod(path.c_str(), 0666) == 0);
    expect_ignored(t.path);
  }
  SUBCASE("owned by another user") {
    const auto path = snapshot_written(t.path);
    if (::geteuid() == 0) {
      REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
    } else {
      // Not root: no file of another user can be made here; a symbolic link to one of root's
      // is refused all the same (opened with O_NOFOLLOW, never followed).
      fs::remove(path);
      fs::create_symlink("/etc/passwd", path);
    }
    expect_ignored(t.path);
  }
  SUBCASE("not a snapshot at all") {
    const auto path = snapshot_written(t.path);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string(8192, '{');
    expect_ignored(t.path);
  }
  SUBCASE("larger than this instance's budget") {
    snapshot_written(t.path);
    DocCache small(8u << 20);
    SnapshotStore store(t.path, "postgresql:///catwalk");
    CHECK_FALSE(store.load(small));
    CHECK(small.entries() == 0);
  }
}

TEST_CASE("snapshot: a full disk while writing leaves no file behind and the old snapshot whole") {
  TempDir t;
  const auto path = snapshot_written(t.path);
  const auto size = fs::file_size(path);
  DocCache c(kBudget);
  fill(c);
  c.reset(CatalogueId{"catwalk", 13, 1});  // a newer, empty generation...
  c.put(doc_key(DocKind::kStyles, 1), c.generation(), std::string(3000000, 'z'));
  SnapshotStore store(t.path, "postgresql:///catwalk");
  store.fail_writes_after(1u << 20);  // ...whose file does not fit
  CHECK_FALSE(store.save(c.reader(), [](bool) { return true; }));
  CHECK(files_in(t.path) == std::vector<std::string>{fs::path(path).filename().string()});
  CHECK(fs::file_size(path) == size);
  DocCache d(kBudget);
  CHECK(store.load(d) == kCatalogue);  // the previous snapshot, intact

  // The same on a real full file system when this process may mount one (root): a 1 MiB tmpfs.
  const std::string mnt = t.path + "/tmpfs";
  fs::create_directory(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m,mode=0700") == 0) {
    {
      SnapshotStore small(mnt, "postgresql:///catwalk");
      REQUIRE(small.enabled());
      DocCache e(kBudget);
      fill(e);
      CHECK_FALSE(small.save(e.reader(), [](bool) { return true; }));
      CHECK(files_in(mnt).empty());
    }
    ::umount(mnt.c_str());
  } else {
    MESSAGE("no tmpfs could be mounted here ("
            << std::strerror(errno) << "): the full disk was checked by fault injection only");
  }
}

TEST_CASE("snapshot: abandoned when told to, and never written over by a torn file") {
  TempDir t;
  DocCache c(kBudget);
  fill(c);
  SnapshotStore store(t.path, "postgresql:///catwalk");
  CHECK_FALSE(store.save(c.reader(), [](bool) { return false; }));
  CHECK(files_in(t.path).empty());
  CHECK_FALSE(store.save(c.reader(), [](bool before_rename) { return !before_rename; }));
  CHECK(files_in(t.path).empty());
}

TEST_CASE("snapshot: two instances writing into one folder at once leave one whole file") {
  TempDir t;
  DocCache a(kBudget), b(kBudget);
  fill(a);
  b.reset(CatalogueId{"catwalk", 99, 5});
  for (std::int32_t id = 1; id <= 2000; ++id)
    b.put(doc_key(DocKind::kDetail, id), b.generation(), std::string(1000, 'b'));
  SnapshotStore sa(t.path, "postgresql:///catwalk"), sb(t.path, "postgresql:///catwalk");
  REQUIRE(sa.path() == sb.path());
  for (int round = 0; round < 3; ++round) {
    std::thread ta([&] { sa.save(a.reader(), [](bool) { return true; }); });
    std::thread tb([&] { sb.save(b.reader(), [](bool) { return true; }); });
    ta.join();
    tb.join();
    CHECK(files_in(t.path).size() == 1);
    DocCache d(kBudget);
    auto got = sa.load(d);
    REQUIRE(got);
    if (*got == kCatalogue) {
      check_same(a, d);
    } else {
      CHECK(*got == CatalogueId{"catwalk", 99, 5});
      check_same(b, d);
    }
  }
}

TEST_CASE("snapshot: an unusable folder turns snapshots off, never fails") {
  TempDir t;
  const std::string file = t.path + "/file";
  std::ofstream(file) << "x";
  SnapshotStore not_a_folder(file, "postgresql:///catwalk");
  CHECK_FALSE(not_a_folder.enabled());
  SnapshotStore below_a_file(file + "/cache", "postgresql:///catwalk");
  CHECK_FALSE(below_a_file.enabled());
  SnapshotStore off("", "postgresql:///catwalk");
  CHECK_FALSE(off.enabled());
  DocCache c(kBudget);
  CHECK_FALSE(off.load(c));
  CHECK_FALSE(off.save(c.reader(), [](bool) { return true; }));
}
