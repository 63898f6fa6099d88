#include "pool.hpp"

namespace catwalk::api {

namespace {
struct StmtDef {
  const char* name;
  const char* sql;
};
// Names in catwalk.* are resolved again by PostgreSQL when the loader swaps the schema and
// drops the old one (plan invalidation), so these survive a publish.
constexpr StmtDef kStmts[] = {
    {"detail", "SELECT detail FROM catwalk.product_docs WHERE id = $1::int4"},
    {"styles", "SELECT styles FROM catwalk.product_docs WHERE id = $1::int4"},
    {"related", "SELECT related FROM catwalk.product_docs WHERE id = $1::int4"},
    {"page",
     "SELECT '[' || coalesce(string_agg(item, ',' ORDER BY rn), '') || ']' "
     "FROM catwalk.product_docs WHERE rn > $1::int4 AND rn <= $2::int4"},
    {"cart_get",
     "SELECT product_id, count(*) FROM public.cart WHERE user_session = $1::int4 AND active "
     "GROUP BY product_id ORDER BY min(id)"},
    // One statement, so one implicit transaction: the units are inserted only when the sku
    // exists, and the answer counts the session's line including them. The CTE's rows are not
    // visible to the outer count (same snapshot), hence the sum.
    {"cart_add",
     "WITH ins AS ("
     "  INSERT INTO public.cart (user_session, product_id, active)"
     "  SELECT $1::int4, $2::int4, true FROM generate_series(1, $3::int4)"
     "  WHERE EXISTS (SELECT 1 FROM catwalk.skus WHERE id = $2::int4)"
     "  RETURNING 1) "
     "SELECT (SELECT count(*) FROM ins), "
     "(SELECT count(*) FROM public.cart WHERE user_session = $1::int4 AND product_id = $2::int4 "
     "AND active)"},
    {"ping", "SELECT 1"},
};
static_assert(std::size(kStmts) == static_cast<std::size_t>(Stmt::kCount));
}  // namespace

pg::Result PooledConnection::exec(Stmt s, int n, const char* const* values) {
  auto i = static_cast<int>(s);
  if (!prepared_[i]) {
    conn_.prepare(kStmts[i].name, kStmts[i].sql);
    prepared_[i] = true;
  }
  return conn_.exec_prepared(kStmts[i].name, n, values);
}

ConnectionPool::ConnectionPool(std::string conninfo, int size,
                               std::chrono::milliseconds borrow_timeout)
    : conninfo_(std::move(conninfo)), borrow_timeout_(borrow_timeout) {
  if (size < 1) size = 1;
  slots_.resize(static_cast<std::size_t>(size));
  for (int i = size - 1; i >= 0; --i) free_.push_back(i);
}

ConnectionPool::Lease ConnectionPool::borrow() {
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
      me.cv.wait_for(lock, borrow_timeout_, [&] { return me.slot >= 0; });
      if (me.slot < 0) {
        std::erase(waiters_, &me);
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        throw PoolUnavailable("every database connection stayed busy; retry shortly");
      }
      slot = me.slot;
    }
  }
  auto& c = slots_[static_cast<std::size_t>(slot)];
  if (c && c->raw().ok()) return Lease(this, slot, false);

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
    c = std::make_unique<PooledConnection>(conninfo_);
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
