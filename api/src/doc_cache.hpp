#pragma once
// An in-process cache of the stored documents (as product_docs holds them: mostly gzip members),
// keyed by (kind, product id), bounded in bytes.
//
// Layout: product ids are dense (1..N), so a generation is arrays indexed by id (pages of
// kPageIds ids, allocated as ids arrive) whose 8-byte slots point into large arenas (chunks of
// kChunkBytes) holding the documents back to back. Per document that is 8 bytes of index and
// its own bytes: no node, no allocation, no reference count per entry. Documents are never
// evicted one by one: with uniform random access a full cache that keeps what it has hits as
// often as one that evicts at random, and the warmer stops short of the budget so misses can
// still bring in what is asked for most (see CacheRefresher).
//
// Freshness: the whole cache belongs to one publish generation. invalidate() swaps in an empty
// generation (the publish watcher calls it when catwalk_publish.version changes, or when it
// cannot read it) and frees the old one once the last reader lets go; put() stores a document
// only if the generation it was read under is still current, so a document read before a
// publish can never outlive the watcher noticing that publish.
//
// Thread-safety: every member may be called from any thread. get() takes no lock (an atomic
// load of the generation and of the slot); put() serializes on one mutex (a memcpy of a few
// hundred bytes).
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

namespace catwalk::api {

class DocCache {
 public:
  static constexpr std::size_t kKinds = 3;               // DocKind: detail, styles, related
  static constexpr std::uint32_t kPageIds = 1u << 14;    // ids per slot page
  static constexpr std::size_t kChunkBytes = 16u << 20;  // largest arena chunk
  static constexpr std::uint32_t kMaxId = 0x7fffffffu;   // ids are positive int32

  explicit DocCache(std::size_t budget_bytes);
  ~DocCache();

  bool enabled() const { return budget_ > 0 && usable_.load(std::memory_order_acquire); }
  // Whether lookups may be answered from the cache: false until the watcher has read the
  // publish version once, and while the database is unreachable (GETs must then say 503).
  void set_usable(bool usable) { usable_.store(usable, std::memory_order_release); }
  std::size_t budget() const { return budget_; }

  std::uint64_t generation() const;

  struct Generation;
  // A cached document: `bytes` stays valid while the Doc lives (it keeps its generation).
  struct Doc {
    std::shared_ptr<const Generation> owner;
    std::string_view bytes;
    explicit operator bool() const { return owner != nullptr; }
  };
  // `key` is doc_key(kind, id) (repository.hpp): kind in the high 32 bits, id in the low.
  Doc get(std::uint64_t key);

  // What put() did with a document.
  enum class PutResult {
    kStored,
    kPresent,  // the key was already cached (a request or the warmer got there first)
    kStale,    // read under an older generation: dropped
    kTooBig,   // larger than an arena chunk (1/32 of the budget, at most 16 MiB), or empty
    kFull,     // no room left in the budget
  };
  // `limit_bytes` (at most the budget) is where this put stops: the warmer passes less than
  // the budget so that requests' misses keep some room.
  PutResult put(std::uint64_t key, std::uint64_t generation, std::string_view doc,
                std::size_t limit_bytes = SIZE_MAX);
  void invalidate();

  std::uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  std::uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  std::uint64_t invalidations() const { return invalidations_.load(std::memory_order_relaxed); }
  // Memory taken: arena chunks and slot pages allocated (what the budget bounds).
  std::size_t bytes() const;
  std::size_t entries() const;

 private:
  std::shared_ptr<Generation> current() const;

  const std::size_t budget_;
  const std::size_t chunk_bytes_;
  std::atomic<bool> usable_{false};
  std::mutex put_mu_;  // serializes put() and invalidate()
  std::atomic<std::shared_ptr<Generation>> current_;
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, invalidations_{0};
};

}  // namespace catwalk::api
