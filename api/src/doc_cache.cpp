// The document cache: per generation, slot pages indexed by product id pointing into arena
// chunks. See doc_cache.hpp.
#include "doc_cache.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace catwalk::api {

namespace {
// A slot: 0 = not cached; else chunk index + 1 (16 bits), offset in the chunk (24 bits),
// length (24 bits). Chunks are 16 MiB, so offsets and lengths fit in 24 bits.
constexpr int kOffsetBits = 24, kLengthBits = 24;
constexpr std::uint64_t kMask24 = (1u << 24) - 1;
constexpr std::size_t kMaxChunks = (1u << 16) - 1;
constexpr std::size_t kPages =
    (static_cast<std::size_t>(DocCache::kMaxId) + 1) / DocCache::kPageIds;

struct Page {
  std::atomic<std::uint64_t> slots[DocCache::kKinds][DocCache::kPageIds];
};
static_assert(DocCache::kChunkBytes <= (1u << kOffsetBits));

// Chunks are mapped directly, not malloc'ed: the kernel backs a page only once it is written
// (a chunk costs RSS as it fills), and unmapping gives it back at once when a publish drops
// the generation (malloc may keep freed memory of this size in its heap).
char* map_chunk(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Huge pages where the kernel allows them (THP "madvise" mode, Debian's default): a full
  // catalogue is then a few hundred page faults instead of 200,000 while warming, and lookups
  // miss the TLB less. Advisory: without it the chunk works the same.
  ::madvise(p, bytes, MADV_HUGEPAGE);
  return static_cast<char*>(p);
}
}  // namespace

// One publish generation's documents. Pages and chunks are only added (under the cache's put
// mutex) and freed with the generation, so a reader holding the generation may follow any slot
// it loaded with acquire ordering.
struct DocCache::Generation {
  Generation(std::uint64_t n, std::size_t chunk)
      : number(n),
        chunk_bytes(chunk),
        pages(std::make_unique<std::atomic<Page*>[]>(kPages)),
        chunks(std::make_unique<std::atomic<char*>[]>(kMaxChunks)),
        chunk_used(chunk) {}
  ~Generation() {
    for (std::size_t i = 0; i < kPages; ++i) delete pages[i].load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < chunk_count; ++i)
      ::munmap(chunks[i].load(std::memory_order_relaxed), chunk_bytes);
  }
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  const std::uint64_t number;
  const std::size_t chunk_bytes;
  std::unique_ptr<std::atomic<Page*>[]> pages;
  std::unique_ptr<std::atomic<char*>[]> chunks;
  // Written under the put mutex only.
  std::size_t chunk_count = 0;
  std::size_t chunk_used;  // bytes used in the last chunk (= chunk_bytes: full, or none yet)
  std::atomic<std::size_t> bytes{0};  // chunks and pages allocated
  std::atomic<std::size_t> entries{0};
};

// Chunks of 1/32 of the budget (64 KiB to 16 MiB): large enough that the unused tail of each
// (less than one document) is noise, small enough that a small budget still holds several.
DocCache::DocCache(std::size_t budget_bytes)
    : budget_(budget_bytes),
      chunk_bytes_(std::clamp<std::size_t>(budget_bytes / 32, 64u << 10, kChunkBytes)),
      current_(std::make_shared<Generation>(1, chunk_bytes_)) {}

DocCache::~DocCache() = default;

std::shared_ptr<DocCache::Generation> DocCache::current() const {
  return current_.load(std::memory_order_acquire);
}

std::uint64_t DocCache::generation() const { return current()->number; }

DocCache::Doc DocCache::get(std::uint64_t key) {
  const auto kind = key >> 32;
  const auto id = static_cast<std::uint32_t>(key);
  Doc d;
  if (kind < kKinds && id <= kMaxId) {
    auto g = current();
    const Page* page = g->pages[id / kPageIds].load(std::memory_order_acquire);
    if (page != nullptr) {
      const std::uint64_t slot = page->slots[kind][id % kPageIds].load(std::memory_order_acquire);
      if (slot != 0) {
        const char* chunk =
            g->chunks[(slot >> (kOffsetBits + kLengthBits)) - 1].load(std::memory_order_acquire);
        d.bytes = {chunk + ((slot >> kLengthBits) & kMask24), slot & kMask24};
        d.owner = std::move(g);
      }
    }
  }
  (d ? hits_ : misses_).fetch_add(1, std::memory_order_relaxed);
  return d;
}

DocCache::PutResult DocCache::put(std::uint64_t key, std::uint64_t generation, std::string_view doc,
                                  std::size_t limit_bytes) {
  const auto kind = key >> 32;
  const auto id = static_cast<std::uint32_t>(key);
  if (kind >= kKinds || id > kMaxId || doc.size() > chunk_bytes_ || doc.empty())
    return PutResult::kTooBig;
  const std::size_t limit = std::min(limit_bytes, budget_);
  std::lock_guard lock(put_mu_);
  // Checked under the put mutex, which invalidate() holds while it swaps generations: a stale
  // put either fails here or lands in a generation nobody reads any more.
  auto g = current();
  if (g->number != generation) return PutResult::kStale;
  auto& page_ptr = g->pages[id / kPageIds];
  Page* page = page_ptr.load(std::memory_order_relaxed);
  if (page != nullptr && page->slots[kind][id % kPageIds].load(std::memory_order_relaxed) != 0)
    return PutResult::kPresent;
  const bool new_page = page == nullptr;
  const bool new_chunk = g->chunk_used + doc.size() > chunk_bytes_;
  const std::size_t grow = (new_page ? sizeof(Page) : 0) + (new_chunk ? chunk_bytes_ : 0);
  if (g->bytes.load(std::memory_order_relaxed) + grow > limit) return PutResult::kFull;
  if (new_chunk && g->chunk_count == kMaxChunks) return PutResult::kFull;
  if (new_page) {
    page = new Page();  // value-initialized: every slot 0
    page_ptr.store(page, std::memory_order_release);
  }
  if (new_chunk) {
    g->chunks[g->chunk_count].store(map_chunk(chunk_bytes_), std::memory_order_release);
    ++g->chunk_count;
    g->chunk_used = 0;
  }
  g->bytes.fetch_add(grow, std::memory_order_relaxed);
  const std::size_t chunk_index = g->chunk_count - 1;
  char* dst = g->chunks[chunk_index].load(std::memory_order_relaxed) + g->chunk_used;
  std::memcpy(dst, doc.data(), doc.size());
  const std::uint64_t slot =
      (static_cast<std::uint64_t>(chunk_index + 1) << (kOffsetBits + kLengthBits)) |
      (static_cast<std::uint64_t>(g->chunk_used) << kLengthBits) | doc.size();
  g->chunk_used += doc.size();
  page->slots[kind][id % kPageIds].store(slot, std::memory_order_release);
  g->entries.fetch_add(1, std::memory_order_relaxed);
  return PutResult::kStored;
}

void DocCache::invalidate() {
  std::shared_ptr<Generation> old;
  {
    std::lock_guard lock(put_mu_);
    auto fresh = std::make_shared<Generation>(current()->number + 1, chunk_bytes_);
    old = current_.exchange(std::move(fresh), std::memory_order_acq_rel);
  }
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  // `old` is freed here (the caller: the publish watcher), or by the last request still
  // reading one of its documents.
}

std::size_t DocCache::bytes() const { return current()->bytes.load(std::memory_order_relaxed); }

std::size_t DocCache::entries() const { return current()->entries.load(std::memory_order_relaxed); }

}  // namespace catwalk::api
