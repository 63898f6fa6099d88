#pragma once
// An in-process cache of the stored documents (as product_docs holds them: mostly gzip members),
// keyed by (kind, product id), bounded in bytes.
//
// Layout: product ids are dense (1..N), so a generation is arrays indexed by id (pages of
// kPageIds ids, allocated as ids arrive) whose 8-byte slots point into large arenas (chunks of
// at most kChunkBytes) holding the documents back to back. Per document that is 8 bytes of index
// and its own bytes: no node, no allocation, no reference count per entry. Documents are never
// evicted one by one: with uniform random access a full cache that keeps what it has hits as
// often as one that evicts at random, and the warmer stops short of the budget so misses can
// still bring in what is asked for most (see CacheRefresher).
//
// Generations: the whole cache belongs to one generation, labelled with the catalogue (database
// and publish) its documents were checked against. A publish does not empty it: the refresher
// builds a Successor that takes over, slot by slot, the documents the publish did not change
// (their bytes stay where they are: chunks are reference-counted and shared between
// generations), then install() swaps it in atomically. Chunks may also be windows of a mapped
// snapshot file (snapshot.hpp), which install_mapped() turns into a generation. invalidate()
// swaps in an empty, unlabelled generation. An old generation is freed once the last reader
// lets go; a chunk once the last generation holding it is freed.
//
// Freshness: put() stores a document only if the generation it was read under is still current,
// so a document read before a swap never lands in the generation that follows it; a Successor
// only takes over documents the refresher compared with the new publish's (CacheRefresher).
//
// Thread-safety: every member may be called from any thread. get() takes no lock (an atomic
// load of the generation and of the slot); put(), install*() and invalidate() serialize on one
// mutex, which try_put() never waits for. A Successor is used by one thread at a time.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace catwalk::api {

// What names one immutable catalogue: the database, and catwalk_publish's version and
// published_at (microseconds since the epoch). The loader never changes a published catalogue;
// it publishes a new one, which bumps the version and sets published_at.
struct CatalogueId {
  std::string database;
  std::int64_t version = -1;
  std::int64_t published_at_us = 0;
  bool operator==(const CatalogueId&) const = default;
};

class DocCache {
 public:
  static constexpr std::size_t kKinds = 3;               // DocKind: detail, styles, related
  static constexpr std::uint32_t kPageIds = 1u << 14;    // ids per slot page
  static constexpr std::size_t kChunkBytes = 16u << 20;  // largest arena chunk
  static constexpr std::uint32_t kMaxId = 0x7fffffffu;   // ids are positive int32

  explicit DocCache(std::size_t budget_bytes);
  ~DocCache();

  bool enabled() const { return budget_ > 0 && usable_.load(std::memory_order_acquire); }
  // Whether lookups may be answered from the cache: false until the refresher has checked the
  // generation against the published catalogue, and while the database is unreachable (GETs
  // must then say 503).
  void set_usable(bool usable) { usable_.store(usable, std::memory_order_release); }
  bool usable() const { return usable_.load(std::memory_order_acquire); }
  std::size_t budget() const { return budget_; }

  std::uint64_t generation() const;
  // The catalogue the current generation was checked against; nullopt when unlabelled (empty
  // after invalidate(), or not checked yet).
  std::optional<CatalogueId> catalogue() const;

  struct Generation;
  // A cached document: `bytes` stays valid while the Doc lives (it keeps its generation).
  struct Doc {
    std::shared_ptr<const Generation> owner;
    std::string_view bytes;
    explicit operator bool() const { return owner != nullptr; }
  };
  // `key` is doc_key(kind, id) (repository.hpp): kind in the high 32 bits, id in the low.
  Doc get(std::uint64_t key);
  // The same, without counting a hit or a miss (the refresher's look at what is cached).
  Doc peek(std::uint64_t key) const;

  // What put() did with a document.
  enum class PutResult {
    kStored,
    kPresent,  // the key was already cached (a request or the warmer got there first)
    kStale,    // read under an older generation: dropped
    kTooBig,   // larger than an arena chunk (1/32 of the budget, at most 16 MiB), or empty
    kFull,     // no room left in the budget
    kBusy,     // try_put() only: another put or a swap held the mutex
  };
  // `limit_bytes` (at most the budget) is where this put stops: the warmer passes less than
  // the budget so that requests' misses keep some room.
  PutResult put(std::uint64_t key, std::uint64_t generation, std::string_view doc,
                std::size_t limit_bytes = SIZE_MAX);
  // put() for requests: never waits for the mutex (the warmer, at a lower CPU priority, may
  // hold it while descheduled; a request that would wait behind it stalls for milliseconds).
  // kBusy then: the document is simply not cached this time.
  PutResult try_put(std::uint64_t key, std::uint64_t generation, std::string_view doc);
  void invalidate();

  // A generation under construction from the one current when it was made (its "previous"),
  // invisible to readers until install(). keep() takes a previous document over, same bytes.
  class Successor {
   public:
    Successor(Successor&&) noexcept;
    Successor& operator=(Successor&&) noexcept;
    ~Successor();
    // What the previous generation holds for `key` (empty when nothing).
    std::string_view previous(std::uint64_t key) const;
    // Takes previous(key) over; false when there is none.
    bool keep(std::uint64_t key);
    // Asks the CPU to bring the start and end of previous(key) into its cache (what a check
    // against a fingerprint reads), without waiting: a scan calls it some products ahead.
    void prefetch(std::uint64_t key) const;
    std::size_t kept_entries() const;
    std::size_t kept_bytes() const;
    // Bytes written in the previous generation's chunks (what the successor shares: its
    // documents, those earlier publishes dropped, padding) and its documents' bytes; what the
    // successor does not keep of the former is waste until the chunks are freed.
    std::size_t previous_filled_bytes() const;
    std::size_t previous_live_bytes() const;

   private:
    friend class DocCache;
    Successor(std::shared_ptr<Generation> from, std::shared_ptr<Generation> to);
    std::shared_ptr<Generation> from_, to_;
  };
  Successor successor();
  // Makes `s` current (sharing its previous generation's chunks), labelled `catalogue`. False,
  // and nothing changes, when the previous generation is no longer current (an invalidate() or
  // another install came in between).
  bool install(Successor s, CatalogueId catalogue);
  // Swaps in an empty generation labelled `catalogue`: what the warm-up fills from nothing.
  void reset(CatalogueId catalogue);

  // A generation filled out of sight while the current one serves (the refresher warms a
  // changed catalogue before its swap), then swapped in whole by install(). Its chunks are its
  // own; it shares nothing with the current generation, so both are held at once until the
  // swap: put() refuses (kFull) what would take the two past the budget together.
  class Staged {
   public:
    Staged(Staged&&) noexcept;
    Staged& operator=(Staged&&) noexcept;
    ~Staged();
    // Stores `doc` unless the key is present (kPresent), this generation would pass
    // `limit_bytes`, or both generations the budget (kFull).
    PutResult put(std::uint64_t key, std::string_view doc, std::size_t limit_bytes = SIZE_MAX);
    std::size_t bytes() const;
    std::size_t entries() const;
    // What this generation may take: the budget less what the serving one holds now.
    std::size_t room() const;
    // Whether the generation it was made beside is still current (install() would succeed).
    bool beside_current() const;

   private:
    friend class DocCache;
    Staged(DocCache& cache, std::shared_ptr<Generation> beside, std::shared_ptr<Generation> g);
    DocCache* cache_;
    std::shared_ptr<Generation> beside_, g_;
  };
  Staged staged();
  // Makes `s` current, labelled `catalogue`. False, and nothing changes, when the generation it
  // was made beside is no longer current (an invalidate() or another swap came in between).
  bool install(Staged s, CatalogueId catalogue);

  // A generation made of a mapped arena (a snapshot: snapshot.hpp). The arena is cut into
  // windows of kChunkBytes (the last may be shorter); `next_page(page, out)` yields the slot
  // pages one by one: a page number and its kKinds x kPageIds slots (kind-major) in the encoding
  // slot_of() gives, offsets within a window; false when there are no more. Every slot is
  // checked against the windows: false (nothing installed) when one points outside, or when the
  // whole does not fit the budget. `owner` keeps the arena's bytes valid (the mapping) and is
  // released with the last generation sharing it. The generation is labelled `catalogue`.
  bool install_mapped(
      CatalogueId catalogue, const char* arena, std::size_t arena_bytes,
      std::shared_ptr<const void> owner,
      const std::function<bool(std::uint32_t& page, std::uint64_t* out)>& next_page);
  // A slot's encoding (8 bytes): window (chunk) index + 1, offset in it, length; 0 is "none".
  static std::uint64_t slot_of(std::size_t chunk, std::size_t offset, std::size_t length);

  // Reads a generation as it is (the snapshot writer): documents in key order, kind by kind
  // within each page. Documents stored meanwhile may or may not be seen.
  class Reader {
   public:
    std::uint64_t number() const;
    std::optional<CatalogueId> catalogue() const;
    std::size_t entries() const;
    std::size_t live_bytes() const;
    // Calls f(page, kind, slot index in the page, document) for each document; stops when f
    // returns false. Returns false when stopped.
    bool for_each(const std::function<bool(std::uint32_t page, std::size_t kind,
                                           std::uint32_t index, std::string_view doc)>& f) const;

   private:
    friend class DocCache;
    std::shared_ptr<const Generation> g_;
  };
  Reader reader() const;

  std::uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  std::uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  std::uint64_t invalidations() const { return invalidations_.load(std::memory_order_relaxed); }
  // Memory taken: arena chunks and slot pages (what the budget bounds; chunks of a mapped
  // snapshot are file pages, shared and reclaimable, but counted all the same).
  std::size_t bytes() const;
  std::size_t entries() const;
  // Bytes of the documents themselves (bytes() less pages, chunk tails and waste).
  std::size_t live_bytes() const;

 private:
  std::shared_ptr<Generation> current() const;
  std::shared_ptr<Generation> fresh_generation() const;
  void swap_in(std::shared_ptr<Generation> g);  // under put_mu_
  PutResult put_locked(std::uint64_t key, std::uint64_t generation, std::string_view doc,
                       std::size_t limit);  // under put_mu_; key and size checked

  const std::size_t budget_;
  const std::size_t chunk_bytes_;
  std::atomic<bool> usable_{false};
  std::mutex put_mu_;  // serializes put(), install*(), reset() and invalidate()
  std::atomic<std::shared_ptr<Generation>> current_;
  Generation* locked_current_ = nullptr;           // current_, read and written under put_mu_
  std::atomic<std::uint64_t> current_number_{1};   // current_'s number, without its lock
  mutable std::atomic<std::uint64_t> numbers_{1};  // the last generation number handed out
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, invalidations_{0};
};

}  // namespace catwalk::api
