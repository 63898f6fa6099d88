// The sharded, generation-checked document cache: see doc_cache.hpp.
#include "doc_cache.hpp"

namespace catwalk::api {

namespace {
// Per-entry overhead (node, control block, string header) counted against the budget.
constexpr std::size_t kEntryOverhead = 96;
}  // namespace

DocCache::DocCache(std::size_t budget_bytes) : budget_(budget_bytes) {}

DocCache::Doc DocCache::get(std::uint64_t key) {
  auto& s = shards_[key % kShards];
  Doc d;
  {
    std::lock_guard lock(s.mu);
    auto it = s.map.find(key);
    if (it != s.map.end()) d = it->second;
  }
  (d ? hits_ : misses_).fetch_add(1, std::memory_order_relaxed);
  return d;
}

DocCache::PutResult DocCache::put(std::uint64_t key, std::uint64_t generation, std::string doc,
                                  Evict evict) {
  const std::size_t shard_budget = budget_ / kShards;
  const std::size_t cost = doc.size() + kEntryOverhead;
  if (cost > shard_budget) return PutResult::kTooBig;
  auto value = std::make_shared<const std::string>(std::move(doc));
  auto& s = shards_[key % kShards];
  std::lock_guard lock(s.mu);
  // Checked under the shard lock: invalidate() bumps the generation before clearing each
  // shard under the same lock, so a stale put either fails here or is cleared afterwards.
  if (generation != generation_.load(std::memory_order_acquire)) return PutResult::kStale;
  if (s.map.contains(key)) return PutResult::kPresent;
  if (evict == Evict::kNo && s.bytes + cost > shard_budget) return PutResult::kFull;
  // Evict arbitrary entries until the new one fits: with random access over a catalogue
  // larger than the budget, any victim is as good as another, and this needs no LRU list.
  while (s.bytes + cost > shard_budget && !s.map.empty()) {
    auto victim = s.map.begin();
    s.bytes -= victim->second->size() + kEntryOverhead;
    s.map.erase(victim);
  }
  s.map.emplace(key, std::move(value));
  s.bytes += cost;
  return PutResult::kStored;
}

void DocCache::invalidate() {
  generation_.fetch_add(1, std::memory_order_acq_rel);
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  for (auto& s : shards_) {
    // Freed outside the lock: a warmed shard holds ~200k documents at full scale, and
    // requests on that shard must not wait for their destruction.
    std::unordered_map<std::uint64_t, Doc> old;
    {
      std::lock_guard lock(s.mu);
      old.swap(s.map);
      s.bytes = 0;
    }
  }
}

std::size_t DocCache::bytes() const {
  std::size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.bytes;
  }
  return n;
}

std::size_t DocCache::entries() const {
  std::size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.map.size();
  }
  return n;
}

}  // namespace catwalk::api
