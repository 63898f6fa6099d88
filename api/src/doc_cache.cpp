// The document cache: per generation, slot pages indexed by product id pointing into shared,
// reference-counted arena chunks. See doc_cache.hpp.
#include "doc_cache.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

namespace catwalk::api {

namespace {
// A slot: 0 = not cached; else chunk index + 1 (16 bits), offset in the chunk (24 bits),
// length (24 bits). Chunks are at most 16 MiB, so offsets and lengths fit in 24 bits.
constexpr int kOffsetBits = 24, kLengthBits = 24;
constexpr std::uint64_t kMask24 = (1u << 24) - 1;
constexpr std::size_t kMaxChunks = (1u << 16) - 1;
constexpr std::size_t kPages =
    (static_cast<std::size_t>(DocCache::kMaxId) + 1) / DocCache::kPageIds;

struct Page {
  std::atomic<std::uint64_t> slots[DocCache::kKinds][DocCache::kPageIds];
};
static_assert(DocCache::kChunkBytes <= (1u << kOffsetBits));

std::size_t slot_chunk(std::uint64_t slot) { return (slot >> (kOffsetBits + kLengthBits)) - 1; }
std::size_t slot_offset(std::uint64_t slot) { return (slot >> kLengthBits) & kMask24; }
std::size_t slot_length(std::uint64_t slot) { return slot & kMask24; }

// Chunks are mapped directly, not malloc'ed: the kernel backs a page only once it is written
// (a chunk costs RSS as it fills), and unmapping gives it back at once when the last generation
// holding it goes (malloc may keep freed memory of this size in its heap).
std::shared_ptr<const void> map_chunk(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // No MADV_HUGEPAGE: with the kernel's default THP defrag ("madvise"), every huge-page fault
  // in an madvised chunk compacts memory synchronously when free memory is fragmented (on a
  // machine whose page cache holds the database, it always is). Measured at full scale (2 vCPU)
  // while a changed catalogue warmed beside the serving one: compact_stall rose by one per huge
  // page, and styles p99 over 1-s windows reached 12-40 ms; with 4 KiB pages (200,000 faults,
  // about 0.2 s of CPU over the warm-up) it stayed at 2-7.5 ms, at the same throughput within
  // noise. A restart's mapped snapshot (4 KiB file pages) serves at 1.01x the warm rate, so
  // huge pages buy lookups little. Kernels with THP "always" still use them where it is free.
  return std::shared_ptr<const void>(
      p, [bytes](const void* q) { ::munmap(const_cast<void*>(q), bytes); });
}
}  // namespace

// One generation's documents. Pages and chunks are only added (under the cache's put mutex, or
// by the one thread building a successor before it is installed) and freed with the
// generation, so a reader holding the generation may follow any slot it loaded with acquire
// ordering.
struct DocCache::Generation {
  Generation(std::uint64_t n, std::size_t chunk)
      : number(n),
        chunk_bytes(chunk),
        pages(std::make_unique<std::atomic<Page*>[]>(kPages)),
        chunks(std::make_unique<std::atomic<const char*>[]>(kMaxChunks)),
        chunk_used(chunk) {}
  ~Generation() {
    for (std::size_t i = 0; i < kPages; ++i) delete pages[i].load(std::memory_order_relaxed);
  }
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // The page of `id`, allocated when missing; nullptr when that would pass `limit` bytes.
  Page* page_for(std::uint32_t id, std::size_t limit) {
    auto& ptr = pages[id / kPageIds];
    Page* page = ptr.load(std::memory_order_relaxed);
    if (page != nullptr) return page;
    if (bytes.load(std::memory_order_relaxed) + sizeof(Page) > limit) return nullptr;
    page = new Page();  // value-initialized: every slot 0
    ptr.store(page, std::memory_order_release);
    bytes.fetch_add(sizeof(Page), std::memory_order_relaxed);
    return page;
  }
  std::uint64_t slot(std::uint64_t key) const {
    const auto kind = key >> 32;
    const auto id = static_cast<std::uint32_t>(key);
    if (kind >= kKinds || id > kMaxId) return 0;
    const Page* page = pages[id / kPageIds].load(std::memory_order_acquire);
    return page == nullptr ? 0 : page->slots[kind][id % kPageIds].load(std::memory_order_acquire);
  }
  // Appends `doc` (key and size checked by the caller) unless the generation would pass
  // `limit` bytes; under the put mutex, or by the one thread filling a generation not current.
  PutResult store(std::uint64_t key, std::string_view doc, std::size_t limit) {
    const auto kind = key >> 32;
    const auto id = static_cast<std::uint32_t>(key);
    if (slot(key) != 0) return PutResult::kPresent;
    const bool new_chunk = chunk_used + doc.size() > chunk_bytes;
    const bool new_page = pages[id / kPageIds].load(std::memory_order_relaxed) == nullptr;
    const std::size_t grow = (new_page ? sizeof(Page) : 0) + (new_chunk ? chunk_bytes : 0);
    if (bytes.load(std::memory_order_relaxed) + grow > limit) return PutResult::kFull;
    if (new_chunk && chunk_count == kMaxChunks) return PutResult::kFull;
    Page* page = page_for(id, SIZE_MAX);
    if (new_chunk) {
      auto chunk = map_chunk(chunk_bytes);
      writable = static_cast<char*>(const_cast<void*>(chunk.get()));
      add_chunk(writable, chunk_bytes, std::move(chunk));
      chunk_used = 0;
    }
    std::memcpy(writable + chunk_used, doc.data(), doc.size());
    const std::uint64_t s = slot_of(chunk_count - 1, chunk_used, doc.size());
    chunk_used += doc.size();
    filled.fetch_add(doc.size(), std::memory_order_relaxed);
    page->slots[kind][id % kPageIds].store(s, std::memory_order_release);
    entries.fetch_add(1, std::memory_order_relaxed);
    live.fetch_add(doc.size(), std::memory_order_relaxed);
    return PutResult::kStored;
  }
  std::string_view doc(std::uint64_t slot) const {
    const char* chunk = chunks[slot_chunk(slot)].load(std::memory_order_acquire);
    return {chunk + slot_offset(slot), slot_length(slot)};
  }
  void add_chunk(const char* data, std::size_t size, std::shared_ptr<const void> owner) {
    chunks[chunk_count].store(data, std::memory_order_release);
    owners.push_back(std::move(owner));
    ++chunk_count;
    chunk_total.fetch_add(size, std::memory_order_relaxed);
    bytes.fetch_add(size, std::memory_order_relaxed);
  }

  const std::uint64_t number;
  const std::size_t chunk_bytes;  // of the chunks put() maps
  std::unique_ptr<std::atomic<Page*>[]> pages;
  std::unique_ptr<std::atomic<const char*>[]> chunks;
  // Written under the put mutex only (or before the generation is current).
  std::vector<std::shared_ptr<const void>> owners;  // keep chunks[i] alive
  std::size_t chunk_count = 0;
  char* writable = nullptr;           // the chunk put() appends to (the last one it mapped)
  std::size_t chunk_used;             // bytes used in `writable` (= chunk_bytes: full, or none)
  std::atomic<std::size_t> bytes{0};  // chunks and pages held
  std::atomic<std::size_t> chunk_total{0};  // chunks held
  std::atomic<std::size_t> entries{0};
  std::atomic<std::size_t> live{0};  // the documents' own bytes
  // Bytes of the chunks written so far, by this generation or the ones it shares chunks with:
  // documents (live or dropped by a publish since) and padding; unwritten tails are not.
  std::atomic<std::size_t> filled{0};
  std::optional<CatalogueId> catalogue;  // set before the generation becomes current
};

// Chunks of 1/32 of the budget (64 KiB to 16 MiB): large enough that the unused tail of each
// (less than one document) is noise, small enough that a small budget still holds several.
DocCache::DocCache(std::size_t budget_bytes)
    : budget_(budget_bytes),
      chunk_bytes_(std::clamp<std::size_t>(budget_bytes / 32, 64u << 10, kChunkBytes)),
      current_(std::make_shared<Generation>(1, chunk_bytes_)) {
  locked_current_ = current_.load().get();
}

DocCache::~DocCache() = default;

std::shared_ptr<DocCache::Generation> DocCache::current() const {
  return current_.load(std::memory_order_acquire);
}

std::shared_ptr<DocCache::Generation> DocCache::fresh_generation() const {
  return std::make_shared<Generation>(numbers_.fetch_add(1) + 1, chunk_bytes_);
}

std::uint64_t DocCache::generation() const {
  return current_number_.load(std::memory_order_acquire);
}

std::optional<CatalogueId> DocCache::catalogue() const { return current()->catalogue; }

std::uint64_t DocCache::slot_of(std::size_t chunk, std::size_t offset, std::size_t length) {
  return (static_cast<std::uint64_t>(chunk + 1) << (kOffsetBits + kLengthBits)) |
         (static_cast<std::uint64_t>(offset) << kLengthBits) | length;
}

DocCache::Doc DocCache::peek(std::uint64_t key) const {
  Doc d;
  auto g = current();
  if (const std::uint64_t slot = g->slot(key); slot != 0) {
    d.bytes = g->doc(slot);
    d.owner = std::move(g);
  }
  return d;
}

DocCache::Doc DocCache::get(std::uint64_t key) {
  Doc d = peek(key);
  (d ? hits_ : misses_).fetch_add(1, std::memory_order_relaxed);
  return d;
}

DocCache::PutResult DocCache::put(std::uint64_t key, std::uint64_t generation, std::string_view doc,
                                  std::size_t limit_bytes) {
  const auto kind = key >> 32;
  const auto id = static_cast<std::uint32_t>(key);
  if (kind >= kKinds || id > kMaxId || doc.size() > chunk_bytes_ || doc.empty())
    return PutResult::kTooBig;
  std::lock_guard lock(put_mu_);
  return put_locked(key, generation, doc, std::min(limit_bytes, budget_));
}

DocCache::PutResult DocCache::try_put(std::uint64_t key, std::uint64_t generation,
                                      std::string_view doc) {
  const auto kind = key >> 32;
  const auto id = static_cast<std::uint32_t>(key);
  if (kind >= kKinds || id > kMaxId || doc.size() > chunk_bytes_ || doc.empty())
    return PutResult::kTooBig;
  std::unique_lock lock(put_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return PutResult::kBusy;
  return put_locked(key, generation, doc, budget_);
}

DocCache::PutResult DocCache::put_locked(std::uint64_t key, std::uint64_t generation,
                                         std::string_view doc, std::size_t limit) {
  // Checked under the put mutex, which every swap holds: a stale put either fails here or lands
  // in a generation nobody reads any more. The plain pointer, not current_: loading an atomic
  // shared_ptr takes a lock inside libstdc++ that every request's get() takes too, and the
  // warmer (which puts most) runs at a lower priority: preempted while holding it, it would
  // stall every request until it runs again.
  Generation* g = locked_current_;
  if (g->number != generation) return PutResult::kStale;
  return g->store(key, doc, limit);
}

void DocCache::swap_in(std::shared_ptr<Generation> g) {
  locked_current_ = g.get();
  current_number_.store(g->number, std::memory_order_release);
  auto old = current_.exchange(std::move(g), std::memory_order_acq_rel);
  // `old` is freed here, or by the last request still reading one of its documents; its chunks
  // by the last generation sharing them.
  (void)old;
}

void DocCache::invalidate() {
  std::lock_guard lock(put_mu_);
  swap_in(fresh_generation());
  invalidations_.fetch_add(1, std::memory_order_relaxed);
}

void DocCache::reset(CatalogueId catalogue) {
  auto g = fresh_generation();
  g->catalogue = std::move(catalogue);
  std::lock_guard lock(put_mu_);
  swap_in(std::move(g));
  invalidations_.fetch_add(1, std::memory_order_relaxed);
}

// ---------------------------------------------------------------- successors

DocCache::Successor::Successor(std::shared_ptr<Generation> from, std::shared_ptr<Generation> to)
    : from_(std::move(from)), to_(std::move(to)) {}
DocCache::Successor::Successor(Successor&&) noexcept = default;
DocCache::Successor& DocCache::Successor::operator=(Successor&&) noexcept = default;
DocCache::Successor::~Successor() = default;

DocCache::Successor DocCache::successor() { return Successor(current(), fresh_generation()); }

std::string_view DocCache::Successor::previous(std::uint64_t key) const {
  const std::uint64_t slot = from_->slot(key);
  return slot == 0 ? std::string_view() : from_->doc(slot);
}

void DocCache::Successor::prefetch(std::uint64_t key) const {
  const std::uint64_t slot = from_->slot(key);
  if (slot == 0) return;
  const char* doc = from_->chunks[slot_chunk(slot)].load(std::memory_order_relaxed);
  if (doc == nullptr) return;
  doc += slot_offset(slot);
  __builtin_prefetch(doc);
  __builtin_prefetch(doc + slot_length(slot) - 1);
}

bool DocCache::Successor::keep(std::uint64_t key) {
  const std::uint64_t slot = from_->slot(key);
  if (slot == 0) return false;
  const auto id = static_cast<std::uint32_t>(key);
  auto& dst = to_->page_for(id, SIZE_MAX)->slots[key >> 32][id % kPageIds];
  if (dst.load(std::memory_order_relaxed) != 0) return true;
  // The slot's chunk index is the previous generation's, which install() hands over as is.
  dst.store(slot, std::memory_order_relaxed);
  to_->entries.fetch_add(1, std::memory_order_relaxed);
  to_->live.fetch_add(slot_length(slot), std::memory_order_relaxed);
  return true;
}

std::size_t DocCache::Successor::kept_entries() const { return to_->entries.load(); }
std::size_t DocCache::Successor::kept_bytes() const { return to_->live.load(); }
std::size_t DocCache::Successor::previous_filled_bytes() const { return from_->filled.load(); }
std::size_t DocCache::Successor::previous_live_bytes() const { return from_->live.load(); }

bool DocCache::install(Successor s, CatalogueId catalogue) {
  auto& to = s.to_;
  to->catalogue = std::move(catalogue);
  std::lock_guard lock(put_mu_);
  const auto& from = s.from_;
  if (locked_current_ != from.get()) return false;
  // Every chunk, in the same order: kept slots name chunks by index. Chunks the previous
  // generation added after a slot was kept are shared too (harmless, and counted as waste).
  // The successor goes on appending to the chunk the previous generation was filling: nobody
  // puts into that one any more (its puts are stale from now on), and its readers only follow
  // slots to bytes written before.
  for (std::size_t i = 0; i < from->chunk_count; ++i) {
    to->chunks[i].store(from->chunks[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  to->owners = from->owners;
  to->chunk_count = from->chunk_count;
  to->chunk_total.store(from->chunk_total.load());
  to->bytes.fetch_add(from->chunk_total.load());
  to->writable = from->writable;
  to->chunk_used = from->chunk_used;
  to->filled.store(from->filled.load());
  swap_in(std::move(to));
  return true;
}

// ---------------------------------------------------------------- staged generations

DocCache::Staged::Staged(DocCache& cache, std::shared_ptr<Generation> beside,
                         std::shared_ptr<Generation> g)
    : cache_(&cache), beside_(std::move(beside)), g_(std::move(g)) {}
DocCache::Staged::Staged(Staged&&) noexcept = default;
DocCache::Staged& DocCache::Staged::operator=(Staged&&) noexcept = default;
DocCache::Staged::~Staged() = default;

DocCache::Staged DocCache::staged() { return Staged(*this, current(), fresh_generation()); }

DocCache::PutResult DocCache::Staged::put(std::uint64_t key, std::string_view doc,
                                          std::size_t limit_bytes) {
  const auto kind = key >> 32;
  const auto id = static_cast<std::uint32_t>(key);
  if (kind >= kKinds || id > kMaxId || doc.size() > cache_->chunk_bytes_ || doc.empty())
    return PutResult::kTooBig;
  return g_->store(key, doc, std::min(limit_bytes, room()));
}

// The generation serving meanwhile may still grow (requests' misses): read each time. Its own
// pointer, not current(): see put_locked() on loading the atomic shared_ptr.
std::size_t DocCache::Staged::room() const {
  const std::size_t serving = beside_->bytes.load(std::memory_order_relaxed);
  return cache_->budget_ - std::min(cache_->budget_, serving);
}

std::size_t DocCache::Staged::bytes() const { return g_->bytes.load(); }
std::size_t DocCache::Staged::entries() const { return g_->entries.load(); }
bool DocCache::Staged::beside_current() const { return cache_->generation() == beside_->number; }

bool DocCache::install(Staged s, CatalogueId catalogue) {
  s.g_->catalogue = std::move(catalogue);
  std::lock_guard lock(put_mu_);
  if (locked_current_ != s.beside_.get()) return false;
  swap_in(std::move(s.g_));
  return true;
}

// ---------------------------------------------------------------- mapped snapshots

bool DocCache::install_mapped(
    CatalogueId catalogue, const char* arena, std::size_t arena_bytes,
    std::shared_ptr<const void> owner,
    const std::function<bool(std::uint32_t&, std::uint64_t*)>& next_page) {
  const std::size_t windows = (arena_bytes + kChunkBytes - 1) / kChunkBytes;
  if (windows > kMaxChunks || arena_bytes > budget_) return false;
  auto g = fresh_generation();
  g->catalogue = std::move(catalogue);
  for (std::size_t w = 0; w < windows; ++w) {
    g->add_chunk(arena + w * kChunkBytes, std::min(kChunkBytes, arena_bytes - w * kChunkBytes),
                 owner);
  }
  g->filled.store(arena_bytes);
  std::vector<std::uint64_t> buf(kKinds * kPageIds);
  std::uint32_t p = 0;
  std::size_t entries = 0, live = 0;  // counted here, added once: this runs before serving
  while (next_page(p, buf.data())) {
    if (p >= kPages || g->pages[p].load(std::memory_order_relaxed) != nullptr) return false;
    Page* page = g->page_for(p * kPageIds, budget_);
    if (page == nullptr) return false;  // over the budget
    for (std::size_t kind = 0; kind < kKinds; ++kind) {
      for (std::uint32_t i = 0; i < kPageIds; ++i) {
        const std::uint64_t s = buf[kind * kPageIds + i];
        if (s == 0) continue;
        const std::size_t c = s >> (kOffsetBits + kLengthBits);
        if (c == 0 || c > windows || slot_length(s) == 0 ||
            slot_offset(s) + slot_length(s) >
                std::min(kChunkBytes, arena_bytes - (c - 1) * kChunkBytes))
          return false;
        page->slots[kind][i].store(s, std::memory_order_relaxed);
        ++entries;
        live += slot_length(s);
      }
    }
  }
  g->entries.store(entries, std::memory_order_relaxed);
  g->live.store(live, std::memory_order_relaxed);
  std::lock_guard lock(put_mu_);
  swap_in(std::move(g));
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// ---------------------------------------------------------------- readers

DocCache::Reader DocCache::reader() const {
  Reader r;
  r.g_ = current();
  return r;
}

std::uint64_t DocCache::Reader::number() const { return g_->number; }
std::optional<CatalogueId> DocCache::Reader::catalogue() const { return g_->catalogue; }
std::size_t DocCache::Reader::entries() const { return g_->entries.load(); }
std::size_t DocCache::Reader::live_bytes() const { return g_->live.load(); }

bool DocCache::Reader::for_each(const std::function<bool(std::uint32_t, std::size_t, std::uint32_t,
                                                         std::string_view)>& f) const {
  for (std::uint32_t p = 0; p < kPages; ++p) {
    const Page* page = g_->pages[p].load(std::memory_order_acquire);
    if (page == nullptr) continue;
    for (std::size_t kind = 0; kind < kKinds; ++kind) {
      for (std::uint32_t i = 0; i < kPageIds; ++i) {
        const std::uint64_t s = page->slots[kind][i].load(std::memory_order_acquire);
        if (s != 0 && !f(p, kind, i, g_->doc(s))) return false;
      }
    }
  }
  return true;
}

std::size_t DocCache::bytes() const { return current()->bytes.load(std::memory_order_relaxed); }

std::size_t DocCache::entries() const { return current()->entries.load(std::memory_order_relaxed); }

std::size_t DocCache::live_bytes() const { return current()->live.load(std::memory_order_relaxed); }

}  // namespace catwalk::api
