#pragma once
// An in-process cache of precomputed documents, keyed by (kind, product id), bounded in bytes.
//
// Freshness: the whole cache belongs to one publish generation. invalidate() starts a new one
// (the publish watcher calls it when catwalk_publish.version changes, or when it cannot read
// it); put() stores a document only if the generation it was read under is still current, so a
// document read before a publish can never outlive the watcher noticing that publish.
// Thread-safe; sharded so concurrent workers rarely share a lock.
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace catwalk::api {

class DocCache {
 public:
  explicit DocCache(std::size_t budget_bytes);

  using Doc = std::shared_ptr<const std::string>;
  bool enabled() const { return budget_ > 0 && usable_.load(std::memory_order_acquire); }
  // Whether lookups may be answered from the cache: false until the watcher has read the
  // publish version once, and while the database is unreachable (GETs must then say 503).
  void set_usable(bool usable) { usable_.store(usable, std::memory_order_release); }

  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  Doc get(std::uint64_t key);

  // What put() did with a document.
  enum class PutResult {
    kStored,
    kPresent,  // the key was already cached (a request or the warmer got there first)
    kStale,    // read under an older generation: dropped
    kTooBig,   // larger than a shard's share of the budget: never cached
    kFull,     // no room without evicting, and the caller asked not to evict
  };
  enum class Evict { kYes, kNo };
  // A miss fills with Evict::kYes (any victim will do under random access); the warmer uses
  // Evict::kNo so that it stops at the budget instead of churning what it just stored.
  PutResult put(std::uint64_t key, std::uint64_t generation, std::string doc,
                Evict evict = Evict::kYes);
  void invalidate();

  std::uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  std::uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  std::uint64_t invalidations() const { return invalidations_.load(std::memory_order_relaxed); }
  std::size_t bytes() const;
  std::size_t entries() const;

 private:
  static constexpr std::size_t kShards = 16;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::uint64_t, Doc> map;
    std::size_t bytes = 0;
  };
  const std::size_t budget_;
  std::atomic<bool> usable_{false};
  std::atomic<std::uint64_t> generation_{1};
  std::array<Shard, kShards> shards_;
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, invalidations_{0};
};

}  // namespace catwalk::api
