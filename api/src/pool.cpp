// The bounded PostgreSQL connection pool with reconnect back-off: see pool.hpp.
#include "pool.hpp"

namespace catwalk::api {

pg::Result PooledConnection::exec(const Statement& s, int n, const char* const* values,
                                  Deadline deadline) {
  if (!prepared_[s.slot]) {
    conn_.prepare(s.name, s.sql, deadline);
    prepared_[s.slot] = true;
  }
  return conn_.exec_prepared(s.name, n, values, deadline, s.binary_result);
}

ConnectionPool::ConnectionPool(std::string conninfo, int size,
                               std::chrono::milliseconds borrow_timeout)
    : conninfo_(std::move(conninfo)), borrow_timeout_(borrow_timeout) {
  if (size < 1) size = 1;
  slots_.resize(static_cast<std::size_t>(size));
  for (int i = size - 1; i >= 0; --i) free_.push_back(i);
}

ConnectionPool::Lease ConnectionPool::borrow(Deadline deadline) {
  borrows_.fetch_add(1, std::memory_order_relaxed);
  int slot;
  {
    std::unique_lock lock(mu_);
    if (!free_.empty() && waiters_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      // Wait in line: a returned connection is handed to the oldest waiter directly, so no
      // borrower starves behind luckier threads (tail latency) and none is woken for nothing.
      waits_.fetch_add(1, std::memory_order_relaxed);
      Waiter me;
      waiters_.push_back(&me);
      me.cv.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + borrow_timeout_),
                       [&] { return me.slot >= 0; });
      if (me.slot < 0) {
        std::erase(waiters_, &me);
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        throw PoolUnavailable("every database connection stayed busy; retry shortly");
      }
      slot = me.slot;
    }
  }
  auto& c = slots_[static_cast<std::size_t>(slot)];
  if (c && c->ok()) return Lease(this, slot, false);

  c.reset();
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    if (db_down_) {
      // After a failed connect, one borrower at a time probes, once per back-off interval;
      // the others fail fast, so a down database is not hammered by every request.
      if (now < next_connect_) {
        hand_over(slot);
        throw PoolUnavailable("the database is unreachable; retrying in the background");
      }
      next_connect_ = std::chrono::steady_clock::time_point::max();
    }
  }
  try {
    c = std::make_unique<PooledConnection>(conninfo_, deadline);
    connects_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mu_);
    db_down_ = false;
  } catch (const pg::DbError& e) {
    connect_failures_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      db_down_ = true;
      next_connect_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    }
    give_back(slot);
    throw PoolUnavailable(std::string("the database is unreachable: ") + e.what());
  }
  return Lease(this, slot, true);
}

void ConnectionPool::give_back(int slot) {
  std::lock_guard lock(mu_);
  hand_over(slot);
}

void ConnectionPool::hand_over(int slot) {
  if (waiters_.empty()) {
    free_.push_back(slot);
    return;
  }
  Waiter* w = waiters_.front();
  waiters_.pop_front();
  w->slot = slot;
  w->cv.notify_one();
}

ConnectionPool::Lease::~Lease() {
  if (pool_) pool_->give_back(slot_);
}

void ConnectionPool::Lease::discard() { pool_->slots_[static_cast<std::size_t>(slot_)].reset(); }

PoolStats ConnectionPool::stats() const {
  PoolStats s;
  s.size = static_cast<int>(slots_.size());
  {
    std::lock_guard lock(mu_);
    s.in_use = s.size - static_cast<int>(free_.size());
  }
  s.borrows = borrows_.load(std::memory_order_relaxed);
  s.waits = waits_.load(std::memory_order_relaxed);
  s.timeouts = timeouts_.load(std::memory_order_relaxed);
  s.connects = connects_.load(std::memory_order_relaxed);
  s.connect_failures = connect_failures_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace catwalk::api
