#include "documents.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "catwalk/etl/errors.hpp"
#include "catwalk/gzip.hpp"
#include "copy_binary.hpp"

namespace catwalk::etl {

namespace fs = std::filesystem;

void append_money_json(std::string& out, const std::optional<std::string_view>& money) {
  if (!money) {
    out += "null";
    return;
  }
  // Validated already: digits, optionally '.' and one or two digits.
  std::string_view v = *money;
  std::size_t dot = v.find('.');
  std::string_view whole = v.substr(0, dot);
  while (whole.size() > 1 && whole.front() == '0') whole.remove_prefix(1);
  std::string_view frac = dot == std::string_view::npos ? "" : v.substr(dot + 1);
  out.push_back('"');
  out.append(whole);
  if (frac.find_first_not_of('0') != std::string_view::npos) {
    out.push_back('.');
    out.append(frac);
    if (frac.size() == 1) out.push_back('0');
  }
  out.push_back('"');
}

namespace {

// Fragment kinds, in the order they are assembled within a product.
enum Kind : std::uint8_t {
  kItem = 0,
  kFeature = 1,
  kRelated = 2,
  kStyle = 3,
  kPhoto = 4,
  kSku = 5
};
enum Table { kProducts, kFeatures, kRelatedTable, kStyles, kPhotos, kSkus, kTableCount };

// A work file holds the fragments of one table, so of one kind (a table's index is its kind's).
// A record: the product id (4 bytes, native order: the same process reads it back), for styles,
// photos and skus the style id (4 bytes), then the fragment's values (their number is fixed per
// kind): first each value's length (LEB128, at most 4 bytes), then their bytes back to back.
// The JSON around the values, the same for every fragment of a kind (keys, braces), is not
// written: kPieces holds it, and the assembly puts it back. Before, each record carried a
// 17-byte header and its whole JSON fragment: about 0.9 GB more of the 3 GB spilled at full scale.
// A photo's url (its second value) is written against its thumbnail_url, which it nearly always
// repeats but for a size parameter: the length of their common prefix (LEB128), then the rest of
// the url. About 0.65 GB less of the 2.1 GB spilled at full scale (5.7 M photos).

constexpr std::array<int, 6> kValueCount = {6, 2, 1, 5, 2, 3};
constexpr int kMaxValues = 6;
// Value k of a fragment of kind K goes between kPieces[K][k] and kPieces[K][k + 1].
constexpr std::array<std::array<std::string_view, kMaxValues + 1>, 6> kPieces = {{
    {"{\"id\":", ",\"name\":", ",\"slogan\":", ",\"description\":", ",\"category\":",
     ",\"default_price\":", "}"},
    {"{\"feature\":", ",\"value\":", "}"},
    {"", ""},
    // A style stays open: its photos and skus follow when it is assembled.
    {"{\"style_id\":", ",\"name\":", ",\"original_price\":", ",\"sale_price\":", ",\"default?\":",
     ""},
    {"{\"thumbnail_url\":", ",\"url\":", "}"},
    {"\"", "\":{\"quantity\":", ",\"size\":", "}"},
}};
constexpr std::size_t kMaxLengthBytes = 4;  // a value under 2^28 bytes (a line is under 1 MiB)
// The most a record's header takes: product, style, and every value's length.
constexpr std::size_t kMaxRecordHead = 8 + kMaxValues * kMaxLengthBytes;
// How much of a work file is read at a time when it is read back (see read_partition).
constexpr std::size_t kReadPiece = std::size_t{256} << 10;

// Which spill table a file's fragments go to, by its role; -1: the file has no document part.
int table_of(const TableSpec& spec) {
  switch (spec.role) {
    case TableRole::kProducts:
      return kProducts;
    case TableRole::kFeatures:
      return kFeatures;
    case TableRole::kRelated:
      return kRelatedTable;
    case TableRole::kStyles:
      return kStyles;
    case TableRole::kPhotos:
      return kPhotos;
    case TableRole::kSkus:
      return kSkus;
    case TableRole::kCart:
      return -1;
  }
  return -1;
}

// The columns the fragments read, by name; where each sits comes from the table spec.
enum Col : std::uint8_t {
  kColId,
  kColProductId,
  kColStyleId,
  kColCurrentProductId,
  kColRelatedProductId,
  kColName,
  kColSlogan,
  kColDescription,
  kColCategory,
  kColDefaultPrice,
  kColFeature,
  kColValue,
  kColSalePrice,
  kColOriginalPrice,
  kColDefaultStyle,
  kColUrl,
  kColThumbnailUrl,
  kColSize,
  kColQuantity,
  kColCount
};
constexpr std::string_view kColNames[kColCount] = {"id",
                                                   "product_id",
                                                   "style_id",
                                                   "current_product_id",
                                                   "related_product_id",
                                                   "name",
                                                   "slogan",
                                                   "description",
                                                   "category",
                                                   "default_price",
                                                   "feature",
                                                   "value",
                                                   "sale_price",
                                                   "original_price",
                                                   "default_style",
                                                   "url",
                                                   "thumbnail_url",
                                                   "size",
                                                   "quantity"};

constexpr std::uint32_t kDenseStyles = 1u << 26;

// The served documents are gzipped once per load by gzip::SmallCompressor, our own encoder for
// short inputs: two to three times as fast as libdeflate level 1 (the level used before, and
// still the fallback above SmallCompressor::kMaxInput) at 2 % more size. The API sends these
// bytes to gzip clients and caches them, so size is memory there; see bench/README.md, "Document
// compression", for the measured trade (libdeflate's level 1 to 9: a few percent of size against
// several times the CPU). Its bytes for a document depend on the documents it compressed before
// (not its content, CRC-32 and length, which the ETag and the API's fingerprints rely on).

// A document as product_docs stores it: its gzip member, or the JSON itself when gzip would not
// make it smaller (a short related list: gzip's 18 bytes of framing outweigh what it saves).
// The API tells the two apart by the gzip magic, which JSON never starts with.
std::string_view stored_form(gzip::SmallCompressor& z, const std::string& json, std::string& gz) {
  z.compress(json, gz);
  return gz.size() < json.size() ? std::string_view(gz) : std::string_view(json);
}

// A stored document's fingerprint (product_docs.fp_*, migration 002): its length (int4, network
// order), then for a gzip member of more than 64 bytes its header's bytes 4-7 and its last 8
// bytes, else the whole document. In `buf`, which the returned view points into.
std::string_view fingerprint(std::string_view stored, std::string& buf) {
  buf.clear();
  copy_binary::be32(buf, static_cast<std::uint32_t>(stored.size()));
  if (stored.size() > 64 && gzip::is_gzip(stored)) {
    buf.append(stored.substr(4, 4));
    buf.append(stored.substr(stored.size() - 8));
  } else {
    buf.append(stored);
  }
  return buf;
}

[[noreturn]] void damaged_work_file(const std::string& path) {
  throw InputError(fmt::format(
      "the document work file {} is damaged (a record runs past its end): was it changed or "
      "truncated while the load ran? Nothing was published; run the load again",
      path));
}

// A fragment read back from a work file: where it goes (product, style, kind) and its values'
// lengths and bytes (`data`: the first length), inside the partition's buffer, checked to lie
// within it.
struct Ref {
  std::uint32_t product, style;
  std::uint8_t kind;
  const char* data;
};

// Appends the fragment `r` as JSON: its values with the kind's constant text around them.
void append_fragment(std::string& out, const Ref& r) {
  const auto& pieces = kPieces[r.kind];
  const int n = kValueCount[r.kind];
  std::array<std::uint32_t, kMaxValues> length;
  const auto* p = reinterpret_cast<const unsigned char*>(r.data);
  for (int k = 0; k < n; ++k) {
    std::uint32_t v = 0;
    for (int shift = 0;; shift += 7) {
      const unsigned char b = *p++;
      v |= static_cast<std::uint32_t>(b & 0x7F) << shift;
      if (b < 0x80) break;
    }
    length[k] = v;
  }
  out += pieces[0];
  const unsigned char* first = p;
  for (int k = 0; k < n; ++k) {
    if (r.kind == kPhoto && k == 1) {
      // The url: the first `shared` bytes of the thumbnail_url, then the rest as written.
      const unsigned char* end = p + length[k];
      std::uint32_t shared = 0;
      for (int shift = 0;; shift += 7) {
        if (p == end || shift > 28) throw InputError("a document work file is damaged");
        const unsigned char b = *p++;
        shared |= static_cast<std::uint32_t>(b & 0x7F) << shift;
        if (b < 0x80) break;
      }
      if (shared > length[0]) throw InputError("a document work file is damaged");
      out.append(reinterpret_cast<const char*>(first), shared);
      out.append(reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p));
      p = end;
    } else {
      out.append(reinterpret_cast<const char*>(p), length[k]);
      p += length[k];
    }
    out += pieces[k + 1];
  }
}

// Where a fragment goes within its product, as one number: item, features, related (kinds 0-2,
// style 0), then per style by id: the style, its photos, its skus.
std::uint64_t place_in_product(const Ref& r) {
  if (r.kind < kStyle) return r.kind;
  return 3 + (std::uint64_t{r.style} << 2 | static_cast<std::uint64_t>(r.kind - kStyle));
}

}  // namespace

StrideDivider::StrideDivider(std::uint32_t d)
    : m_(d <= 1 ? 0 : ~std::uint64_t{0} / d + 1), d_(d <= 1 ? 1 : d) {}

std::uint32_t StrideDivider::operator()(std::uint32_t n) const {
  // m_ = ceil(2^64 / d): for 32-bit n the high 64 bits of n * m_ are exactly n / d (d >= 2).
  if (d_ == 1) return n;
  return static_cast<std::uint32_t>((static_cast<unsigned __int128>(m_) * n) >> 64);
}

namespace {

// Sorts a partition's fragments into assembly order: by product, then place_in_product(), then
// export order. Each kind comes from one work file, written in export order and read back in
// turn, so export order within a kind is the order read: the sort is stable on (product, place)
// rather than comparing line numbers. A partition's products are ids `stride` (the partition
// count) apart, and nearly dense among those: a counting pass groups them by id / stride, then
// each product's 20-30 fragments are sorted alone. This replaced one comparison sort of the
// whole partition, which cost about 1.2 CPU-seconds of a full-scale load.
void sort_for_assembly(std::vector<Ref>& refs, std::uint32_t stride) {
  const std::size_t n = refs.size();
  if (n == 0) return;
  std::vector<std::uint64_t> place(n);
  std::uint32_t lo = refs[0].product, hi = refs[0].product;
  for (std::size_t i = 0; i < n; ++i) {
    place[i] = place_in_product(refs[i]);
    lo = std::min(lo, refs[i].product);
    hi = std::max(hi, refs[i].product);
  }
  std::vector<std::uint32_t> order(n);
  // By product, place, then order read. Comparing the product too keeps a bucket right should a
  // (damaged) work file put two products in it.
  auto before = [&](std::uint32_t a, std::uint32_t b) {
    if (refs[a].product != refs[b].product) return refs[a].product < refs[b].product;
    return place[a] != place[b] ? place[a] < place[b] : a < b;
  };
  stride = std::max<std::uint32_t>(stride, 1);
  const std::uint64_t buckets = (hi - lo) / stride + 1;
  if (buckets <= 4 * n + 1024) {
    // Counting sort by bucket (stable), then each bucket's run. The bucket, (product - lo) /
    // stride, by a multiplication: two divisions per fragment were most of this pass's time.
    const StrideDivider bucket_of(stride);
    std::vector<std::uint32_t> start(buckets + 1, 0);
    for (const Ref& r : refs) ++start[bucket_of(r.product - lo) + 1];
    for (std::size_t b = 1; b <= buckets; ++b) start[b] += start[b - 1];
    std::vector<std::uint32_t> next(start.begin(), start.end() - 1);
    for (std::size_t i = 0; i < n; ++i) {
      order[next[bucket_of(refs[i].product - lo)]++] = static_cast<std::uint32_t>(i);
    }
    for (std::size_t b = 0; b < buckets; ++b) {
      if (start[b + 1] - start[b] > 1) {
        std::sort(order.begin() + start[b], order.begin() + start[b + 1], before);
      }
    }
  } else {  // far-apart ids: one comparison sort
    for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<std::uint32_t>(i);
    std::sort(order.begin(), order.end(), before);
  }
  std::vector<Ref> sorted(n);
  for (std::size_t i = 0; i < n; ++i) sorted[i] = refs[order[i]];
  refs.swap(sorted);
}

// A partition's bytes as read back: a buffer that grows but never zeroes what it adds
// (std::vector<char>::resize() zero-filled the whole partition before fread overwrote it: 3 GB of
// memset in a full-scale load).
class ReadBuffer {
 public:
  // Room for n bytes; the previous contents are dropped.
  char* room(std::size_t n) {
    if (n > capacity_) {
      data_.reset();  // freed before the larger one is taken: peak memory, not both
      capacity_ = n + n / 8;
      data_.reset(new char[capacity_]);
    }
    return data_.get();
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t capacity_ = 0;
};

// Reads one partition's work files (one per table; missing or empty ones are skipped, each is
// handed to `done` once read, to be removed) into `buffer`, and lists their fragments in `refs` in
// assembly order: per product, item, features, related, then each style (by id) with its photos and
// skus; within each, export order. The files are ours, but they sit in a shared folder: a record
// that runs past its file's end (a truncated or damaged file) stops the load instead of reading out
// of bounds. `stride`: the partition count, how far apart the partition's product ids are.
void read_partition(const std::vector<std::string>& paths, std::uint32_t stride, ReadBuffer& buffer,
                    std::vector<Ref>& refs, const std::function<void(const std::string&)>& done) {
  refs.clear();
  // The non-empty files, their sizes and kinds (a path's index is its table's, so its kind).
  struct File {
    const std::string* path;
    std::size_t size;
    std::uint8_t kind;
  };
  std::vector<File> files;
  std::size_t total = 0;
  for (std::size_t t = 0; t < paths.size(); ++t) {
    std::error_code ec;
    auto size = fs::file_size(paths[t], ec);
    if (ec || size == 0) continue;
    files.push_back({&paths[t], size, static_cast<std::uint8_t>(t)});
    total += size;
  }
  char* const data = buffer.room(total);
  const auto* bytes = reinterpret_cast<const unsigned char*>(data);
  std::size_t filled = 0;
  for (const File& file : files) {
    // Read in pieces, each one's records listed as soon as it is in: while it is still in the
    // cache. Reading the whole file first and then walking it (18 MB per partition at full
    // scale) made every record a cache miss: read_partition was 6.5 % of a load's CPU.
    std::FILE* f = std::fopen(file.path->c_str(), "rb");
    if (f == nullptr) throw InputError("cannot read back the document work file " + *file.path);
    const std::size_t end = filled + file.size;
    const std::size_t ids = file.kind >= kStyle ? 8 : 4;
    const int value_count = kValueCount[file.kind];
    std::size_t at = filled;     // the next record's first byte
    std::size_t avail = filled;  // bytes read so far (absolute)
    while (avail < end) {
      const std::size_t want = std::min(kReadPiece, end - avail);
      if (std::fread(data + avail, 1, want, f) != want) {
        std::fclose(f);
        throw InputError("cannot read back the document work file " + *file.path);
      }
      avail += want;
      // The records wholly within what was read; one cut by the piece's end waits for the next
      // piece. Past the file's end, it is damaged.
      while (at < avail) {
        std::size_t p = at;
        Ref r{0, 0, file.kind, nullptr};
        bool whole = avail - p >= ids;
        if (whole) {
          std::memcpy(&r.product, data + p, 4);
          if (ids == 8) std::memcpy(&r.style, data + p + 4, 4);
          p += ids;
          r.data = data + p;
          std::size_t values = 0;
          for (int k = 0; k < value_count && whole; ++k) {
            std::size_t v = 0;
            for (std::size_t i = 0;; ++i) {
              if (i == kMaxLengthBytes) damaged_work_file(*file.path);
              if (p == avail) {
                whole = false;
                break;
              }
              const unsigned char b = bytes[p++];
              v |= static_cast<std::size_t>(b & 0x7F) << (7 * i);
              if (b < 0x80) break;
            }
            values += v;
          }
          whole = whole && values <= avail - p;
          p += values;
        }
        if (!whole) {
          if (avail == end) damaged_work_file(*file.path);
          break;
        }
        at = p;
        refs.push_back(r);
      }
    }
    std::fclose(f);
    if (at != end) damaged_work_file(*file.path);
    done(*file.path);
    filled = end;
  }
  sort_for_assembly(refs, stride);
}

// One product's texts: the three documents (the API's exact bodies).
struct ProductTexts {
  std::string detail, styles, related;
};

// Builds `t` from the product's fragments refs[begin, end), sorted by read_partition, the item
// first.
void build_product(const std::vector<Ref>& refs, std::size_t begin, std::size_t end,
                   std::uint32_t product, ProductTexts& t) {
  // The item fragment is the list entry, {...}: the detail is it with "features" added.
  t.detail.clear();
  append_fragment(t.detail, refs[begin]);
  t.detail.pop_back();  // its closing brace
  t.detail += ",\"features\":[";
  t.related.clear();  // not `= "["`: GCC 12 warns falsely (-Wrestrict) on that assignment
  t.related.push_back('[');
  t.styles = fmt::format("{{\"product_id\":\"{}\",\"results\":[", product);
  bool first_feature = true, first_related = true, first_style = true;
  for (std::size_t k = begin + 1; k < end;) {
    const Ref& r = refs[k];
    if (r.kind == kFeature) {
      if (!first_feature) t.detail.push_back(',');
      first_feature = false;
      append_fragment(t.detail, r);
      ++k;
    } else if (r.kind == kRelated) {
      if (!first_related) t.related.push_back(',');
      first_related = false;
      append_fragment(t.related, r);
      ++k;
    } else if (r.kind == kStyle) {
      if (!first_style) t.styles.push_back(',');
      first_style = false;
      append_fragment(t.styles, r);
      std::size_t s = k + 1;
      // The style's fragments of one kind, comma-separated, or the reference service's
      // shape for "none" (front ends test for it).
      auto append_run = [&](std::uint8_t kind, std::string_view none) {
        bool any = false;
        for (; s < end && refs[s].style == r.style && refs[s].kind == kind; ++s) {
          if (any) t.styles.push_back(',');
          any = true;
          append_fragment(t.styles, refs[s]);
        }
        if (!any) t.styles += none;
      };
      t.styles += ",\"photos\":[";
      append_run(kPhoto, "{\"thumbnail_url\":null,\"url\":null}");
      t.styles += "],\"skus\":{";
      append_run(kSku, "\"null\":{\"quantity\":null,\"size\":null}");
      t.styles += "}}";
      k = s;
    } else {
      ++k;  // photos or skus of a style that was never accepted: cannot happen
    }
  }
  t.detail += "]}";
  t.related += "]";
  t.styles += "]}";
}

}  // namespace

namespace {
constexpr std::string_view kDirPrefix = "catwalk-etl-docs-";

// Work folders are named catwalk-etl-docs-<pid>-XXXXXX. A loader killed with SIGKILL cannot
// remove its own: the next one removes every folder whose process is gone.
void remove_orphaned_work_dirs(const fs::path& root) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    std::string name = entry.path().filename().string();
    if (!name.starts_with(kDirPrefix) || !entry.is_directory(ec)) continue;
    long pid = std::strtol(name.c_str() + kDirPrefix.size(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(entry.path(), ec);
  }
}
}  // namespace

DocumentStore::DocumentStore(const std::string& temp_root, int partitions)
    : partitions_(partitions) {
  remove_orphaned_work_dirs(temp_root);
  std::string tmpl =
      (fs::path(temp_root) / fmt::format("{}{}-XXXXXX", kDirPrefix, ::getpid())).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw InputError(
        fmt::format("cannot create a work folder under {}: {}; pass --work-dir DIR (or set "
                    "TMPDIR) to a writable folder with room for about the size of the export",
                    temp_root, std::strerror(errno)));
  }
  dir_ = tmpl;
}

DocumentStore::~DocumentStore() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string DocumentStore::partition_path(int table, int partition) const {
  return fmt::format("{}/{}.{}", dir_, table, partition);
}

void DocumentStore::set_style_product(std::uint32_t style, std::uint32_t product) {
  if (style < kDenseStyles) {
    if (style >= style_product_.size())
      style_product_.resize(std::max<std::size_t>(style + 1, style_product_.size() * 2), 0);
    style_product_[style] = product;
  } else {
    style_product_sparse_[style] = product;
  }
}

std::uint32_t DocumentStore::product_of_style(std::uint32_t style) const {
  if (style < kDenseStyles) return style < style_product_.size() ? style_product_[style] : 0;
  auto it = style_product_sparse_.find(style);
  return it == style_product_sparse_.end() ? 0 : it->second;
}

std::size_t DocumentStore::style_map_bytes() const {
  // An empty unordered_map has one bucket of its own, not allocated.
  const std::size_t buckets = style_product_sparse_.bucket_count();
  return style_product_.capacity() * sizeof(std::uint32_t) +
         (buckets > 1 ? buckets * sizeof(void*) : 0) +
         style_product_sparse_.size() * (2 * sizeof(std::uint32_t) + sizeof(void*));
}

std::unique_ptr<DocumentStore::Writer> DocumentStore::writer(const TableSpec& spec) {
  if (table_of(spec) < 0) return nullptr;  // cart rows have no document
  return std::make_unique<Writer>(*this, spec);
}

DocumentStore::Writer::Writer(DocumentStore& store, const TableSpec& spec)
    : store_(store), spec_(spec), table_(table_of(spec)) {
  for (std::string_view name : kColNames) at_.push_back(spec.column_index(name));
  for (int p = 0; p < store.partitions_; ++p) {
    std::string path = store.partition_path(table_, p);
    std::unique_ptr<std::FILE, Close> f(std::fopen(path.c_str(), "wb"));
    if (f == nullptr) write_failed(p, errno);
    // Buffers for every partition of a running task: about 4 MiB in all, whatever the count.
    std::setvbuf(
        f.get(), nullptr, _IOFBF,
        std::clamp<std::size_t>((std::size_t{4} << 20) / store.partitions_, 4096, 1 << 16));
    files_.push_back(std::move(f));
  }
}

DocumentStore::Writer::~Writer() = default;

void DocumentStore::Writer::write_failed(int partition, int err) const {
  throw InputError(fmt::format(
      "cannot write the document work file {}: {}; nothing was published and the work files "
      "are removed. They need up to about the export's size: free some room, or pass "
      "--work-dir DIR (or set TMPDIR) on a disk with more",
      store_.partition_path(table_, partition), std::strerror(err)));
}

void DocumentStore::Writer::close() {
  for (std::size_t p = 0; p < files_.size(); ++p) {
    errno = 0;
    bool failed = std::fflush(files_[p].get()) != 0 || std::ferror(files_[p].get());
    int err = errno;
    failed |= std::fclose(files_[p].release()) != 0;
    if (failed) {
      files_.clear();
      write_failed(static_cast<int>(p), err ? err : errno ? errno : EIO);
    }
  }
  files_.clear();
}

void DocumentStore::Writer::end_value() { value_ends_[values_++] = scratch_.size(); }

void DocumentStore::Writer::put(std::uint32_t product, std::uint32_t style, std::uint8_t kind) {
  // The record's head is written right before the values, into the room scratch_ keeps for it,
  // so that the record goes out in one fwrite.
  static_assert(kMaxRecordHead <= kRecordRoom);
  unsigned char head[kMaxRecordHead];
  std::size_t h = 0;
  std::memcpy(head, &product, 4);
  h = 4;
  if (kind >= kStyle) {
    std::memcpy(head + 4, &style, 4);
    h = 8;
  }
  std::size_t prev = kRecordRoom;
  for (int k = 0; k < values_; ++k) {
    std::size_t v = value_ends_[k] - prev;
    prev = value_ends_[k];
    // A value comes from one line (at most 1 MiB, 6 MiB once escaped): 4 bytes always do.
    if (v >> (7 * kMaxLengthBytes)) throw std::length_error("a document value over 256 MiB");
    for (; v >= 0x80; v >>= 7) head[h++] = static_cast<unsigned char>(v | 0x80);
    head[h++] = static_cast<unsigned char>(v);
  }
  char* record = scratch_.data() + kRecordRoom - h;
  std::memcpy(record, head, h);
  const std::size_t size = scratch_.size() - (kRecordRoom - h);
  std::size_t p = product % files_.size();
  // Unlocked: a writer's files are used by its own thread only, and one lock per record (26 M
  // of them at full scale) is not free.
  if (fwrite_unlocked(record, 1, size, files_[p].get()) != size) {
    write_failed(static_cast<int>(p), errno);
  }
}

namespace {
std::uint32_t to_u32(const std::optional<std::string_view>& v) {
  std::uint32_t n = 0;
  for (char c : *v) n = n * 10 + static_cast<std::uint32_t>(c - '0');
  return n;
}
}  // namespace

void DocumentStore::Writer::add_row(const RowValidator& row) {
  std::string& j = scratch_;
  j.assign(kRecordRoom, '\0');
  values_ = 0;
  // A column of this file by name; the spec has every column its fragment reads. Each value is
  // appended as its JSON text (kPieces says what goes around it).
  auto value = [&](Col c) -> const std::optional<std::string_view>& { return row.value(at_[c]); };
  auto raw = [&](Col c) {
    j += *value(c);
    end_value();
  };
  auto json_text = [&](Col c, std::string& out) {
    const auto& v = value(c);
    if (!v) {
      out += "null";
    } else if (row.json_plain(at_[c])) {
      // Nothing to escape (the validator's line scan says so): no second scan of the text.
      out.push_back('"');
      out.append(*v);
      out.push_back('"');
    } else {
      append_json_string(out, *v);
    }
  };
  auto text = [&](Col c) {
    json_text(c, j);
    end_value();
  };
  auto money = [&](Col c) {
    append_money_json(j, value(c));
    end_value();
  };
  switch (table_) {
    case kProducts:
      raw(kColId), text(kColName), text(kColSlogan), text(kColDescription), text(kColCategory);
      money(kColDefaultPrice);
      put(to_u32(value(kColId)), 0, kItem);
      break;
    case kFeatures:
      text(kColFeature), text(kColValue);
      put(to_u32(value(kColProductId)), 0, kFeature);
      break;
    case kRelatedTable:
      raw(kColRelatedProductId);
      put(to_u32(value(kColCurrentProductId)), 0, kRelated);
      break;
    case kStyles: {
      std::uint32_t id = to_u32(value(kColId)), product = to_u32(value(kColProductId));
      store_.set_style_product(id, product);
      raw(kColId), text(kColName), money(kColOriginalPrice), money(kColSalePrice);
      raw(kColDefaultStyle);
      put(product, id, kStyle);  // closed with photos and skus when assembled
      break;
    }
    case kPhotos: {
      std::uint32_t style = to_u32(value(kColStyleId));
      text(kColThumbnailUrl);
      // The url against the thumbnail_url (the record format above): their common prefix's
      // length, then the rest.
      std::string& url = delta_;
      url.clear();
      json_text(kColUrl, url);
      const std::string_view thumb(j.data() + kRecordRoom, j.size() - kRecordRoom);
      const std::size_t limit = std::min(thumb.size(), url.size());
      std::size_t shared = 0;
      while (shared < limit && thumb[shared] == url[shared]) ++shared;
      for (std::size_t v = shared;; v >>= 7) {
        if (v < 0x80) {
          j.push_back(static_cast<char>(v));
          break;
        }
        j.push_back(static_cast<char>((v & 0x7F) | 0x80));
      }
      j.append(url, shared, std::string::npos);
      end_value();
      put(store_.product_of_style(style), style, kPhoto);
      break;
    }
    case kSkus: {
      std::uint32_t style = to_u32(value(kColStyleId));
      raw(kColId), raw(kColQuantity), text(kColSize);
      put(store_.product_of_style(style), style, kSku);
      break;
    }
  }
}

std::uint64_t DocumentStore::assemble(const IdSet& products,
                                      const std::function<void(const std::string&)>& sink,
                                      int threads) {
  // Every fragment has found its product: the style map's memory is better spent here.
  // Swapped with empty ones: `= {}` would assign an empty list and keep the memory (the dense
  // map's 32 MiB at scale 4.0 stayed through the whole assembly).
  std::vector<std::uint32_t>().swap(style_product_);
  decltype(style_product_sparse_)().swap(style_product_sparse_);
  // Hands what the file phase freed back to the system before the assembly allocates its own.
  // glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so the
  // file phase's growing buffers (the style map: 31 MB at scale 4.0) end up in its heaps, and
  // freeing them there does not lower the RSS: the assembly's memory came on top of the file
  // phase's, and the peak grew with the export (142 MiB at scale 1.0, 200 MiB at 4.0).
  ::malloc_trim(0);
  // The chunks go to `sink` one at a time, in no particular order of products (COPY does not
  // care): the header first, the trailer last.
  std::mutex sink_mu;
  auto send = [&](std::string& out) {
    std::lock_guard lock(sink_mu);
    sink(out);
    out.clear();
  };
  {
    std::string header(copy_binary::kHeader);
    send(header);
  }
  // Read work files are removed on a thread of their own: on a filesystem mounted with
  // `discard` (as here) each removal waits for the disk to discard the file's blocks, which kept
  // the assembling threads waiting for about 1.8 s of a full-scale load (measured off-CPU;
  // bench/README.md). The thread is joined before this returns: the files are gone by then.
  std::mutex remove_mu;
  std::condition_variable remove_cv;
  std::deque<std::string> to_remove;
  bool no_more = false;
  std::thread remover([&] {
    std::unique_lock lock(remove_mu);
    while (true) {
      remove_cv.wait(lock, [&] { return no_more || !to_remove.empty(); });
      if (to_remove.empty()) return;
      std::string path = std::move(to_remove.front());
      to_remove.pop_front();
      lock.unlock();
      std::error_code ec;
      fs::remove(path, ec);
      lock.lock();
    }
  });
  struct JoinRemover {
    std::mutex& mu;
    std::condition_variable& cv;
    bool& no_more;
    std::thread& thread;
    ~JoinRemover() {
      {
        std::lock_guard lock(mu);
        no_more = true;
      }
      cv.notify_one();
      thread.join();
    }
  } join_remover{remove_mu, remove_cv, no_more, remover};
  auto done_with = [&](const std::string& path) {
    {
      std::lock_guard lock(remove_mu);
      to_remove.push_back(path);
    }
    remove_cv.notify_one();
  };
  const int n = std::clamp(threads, 1, partitions_);
  // Asks the kernel to read a partition's work files ahead (they may have been written back
  // and evicted from the page cache under the load's writes): a hint, errors change nothing.
  auto prefetch_partition = [&](int p) {
    if (p >= partitions_) return;
    for (int t = 0; t < kTableCount; ++t) {
      int fd = ::open(partition_path(t, p).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
      ::close(fd);
    }
  };
  std::atomic<int> next_partition{0};
  std::atomic<std::uint64_t> total{0};
  // Partitions are independent: each thread takes the next one, with its own buffers and
  // compressor, so gzipping the documents (most of this step's CPU) runs on `threads` cores.
  auto work = [&] {
    std::string out;
    out.reserve(1 << 21);
    ProductTexts texts;
    std::string detail_gz, styles_gz, related_gz, fp;
    // One compressor per kind: each learns its kind's semi-static code (gzip.hpp), which a
    // mixture of the three would fit worse.
    gzip::SmallCompressor detail_z, styles_z, related_z;
    std::uint64_t written = 0;
    ReadBuffer buffer;
    std::vector<Ref> refs;
    for (int p; (p = next_partition.fetch_add(1)) < partitions_;) {
      std::vector<std::string> paths;
      for (int t = 0; t < kTableCount; ++t) paths.push_back(partition_path(t, p));
      read_partition(paths, static_cast<std::uint32_t>(partitions_), buffer, refs, done_with);
      prefetch_partition(p + n);  // read ahead while this one is assembled
      for (std::size_t i = 0; i < refs.size();) {
        std::uint32_t product = refs[i].product;
        std::size_t end = i;
        while (end < refs.size() && refs[end].product == product) ++end;
        if (refs[i].kind != kItem) {  // cannot happen: fragments only come from accepted rows
          i = end;
          continue;
        }
        build_product(refs, i, end, product, texts);
        // One row of COPY's binary format: PostgreSQL ingests it in well under half the time of
        // the text format (no scanning for delimiters and escapes in 2.6 GB of documents).
        const std::string_view detail = stored_form(detail_z, texts.detail, detail_gz);
        const std::string_view styles = stored_form(styles_z, texts.styles, styles_gz);
        const std::string_view related = stored_form(related_z, texts.related, related_gz);
        copy_binary::row(out, 8);
        copy_binary::int4_field(out, product);
        copy_binary::int4_field(out, products.rank(product));
        copy_binary::bytea_field(out, detail);
        copy_binary::bytea_field(out, styles);
        copy_binary::bytea_field(out, related);
        copy_binary::bytea_field(out, fingerprint(detail, fp));
        copy_binary::bytea_field(out, fingerprint(styles, fp));
        copy_binary::bytea_field(out, fingerprint(related, fp));
        ++written;
        if (out.size() >= (1 << 20)) {
          send(out);
        }
        i = end;
      }
    }
    if (!out.empty()) send(out);
    total.fetch_add(written);
  };
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) {
    pool.emplace_back([&, t] {
      try {
        work();
      } catch (...) {
        errors[static_cast<std::size_t>(t)] = std::current_exception();
        next_partition.store(partitions_);  // the others stop at their next partition
      }
    });
  }
  try {
    work();
  } catch (...) {
    errors[0] = std::current_exception();
    next_partition.store(partitions_);
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  std::string trailer;
  copy_binary::trailer(trailer);
  send(trailer);
  return total.load();
}

}  // namespace catwalk::etl
