// Concurrent cache misses served by batched queries: see miss_batcher.hpp.
#include "miss_batcher.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

#include "catwalk/pg.hpp"
#include "pool.hpp"

namespace catwalk::api {

namespace {
// A copy of the batch's error for one of its requests: each request's thread then throws and
// reads an exception object of its own, never one another thread may be freeing. The types the
// handlers tell apart (a 503, a catalogue not loaded) are kept; anything else is a 500 anyway.
std::exception_ptr own_copy(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const pg::DbError& e) {
    return std::make_exception_ptr(e);
  } catch (const PoolUnavailable& e) {
    return std::make_exception_ptr(e);
  } catch (const std::exception& e) {
    return std::make_exception_ptr(std::runtime_error(e.what()));
  } catch (...) {
    return std::make_exception_ptr(std::runtime_error("unknown error reading documents"));
  }
}
}  // namespace

MissBatcher::MissBatcher(DocCache& cache, Fetch fetch, std::chrono::milliseconds timeout,
                         int max_batches)
    : cache_(cache),
      fetch_(std::move(fetch)),
      timeout_(timeout),
      max_batches_(std::max(max_batches, 1)) {}

std::optional<std::string> MissBatcher::get(DocKind kind, std::int32_t id) {
  Waiter me;
  me.wanted = {kind, id};
  me.deadline = std::chrono::steady_clock::now() + timeout_;
  std::unique_lock lock(mu_);
  queue_.push_back(&me);
  while (!me.done) {
    if (!me.taken && running_ < max_batches_) {
      run_batch(lock);  // takes the queue's head: this request, unless more than kMaxBatch wait
      continue;
    }
    // Taken: the leader answers by the batch's deadline, which is at most this one's.
    if (me.taken) {
      me.cv.wait(lock, [&] { return me.done; });
      break;
    }
    if (me.cv.wait_until(lock, me.deadline) == std::cv_status::timeout && !me.taken && !me.done) {
      std::erase(queue_, &me);
      // It may have been the one woken to lead: the next in line leads instead.
      if (running_ < max_batches_ && !queue_.empty()) queue_.front()->cv.notify_one();
      throw PoolUnavailable("the database did not answer in time; retry shortly");
    }
  }
  if (me.error) std::rethrow_exception(me.error);
  return std::move(me.doc);
}

void MissBatcher::run_batch(std::unique_lock<std::mutex>& lock) {
  ++running_;
  std::vector<Waiter*> batch;
  std::vector<DocRequest> wanted;
  Deadline deadline = Deadline::max();
  while (!queue_.empty() && batch.size() < kMaxBatch) {
    Waiter* w = queue_.front();
    queue_.pop_front();
    w->taken = true;
    batch.push_back(w);
    wanted.push_back(w->wanted);
    deadline = std::min(deadline, w->deadline);
  }
  lock.unlock();

  // Read before the query starts (see DocCache::put): a publish swapped in while it runs makes
  // the documents stale, and try_put drops them.
  const bool caching = cache_.enabled();
  const std::uint64_t generation = caching ? cache_.generation() : 0;
  std::exception_ptr error;
  try {
    fetch_(wanted, deadline, [&](std::size_t i, std::string_view doc) {
      batch[i]->doc.emplace(doc);
      if (caching) cache_.try_put(doc_key(wanted[i].kind, wanted[i].id), generation, doc);
    });
  } catch (...) {
    error = std::current_exception();
  }
  batches_.fetch_add(1, std::memory_order_relaxed);
  batched_.fetch_add(batch.size(), std::memory_order_relaxed);

  lock.lock();
  --running_;
  for (Waiter* w : batch) {
    w->done = true;
    if (error) {
      w->doc.reset();
      w->error = own_copy(error);
    }
    w->cv.notify_one();  // under the lock: the waiter cannot have returned (and freed it) yet
  }
  // A batch slot is free: the oldest queued request leads the next batch.
  if (!queue_.empty()) queue_.front()->cv.notify_one();
}

}  // namespace catwalk::api
