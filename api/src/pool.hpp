#pragma once
// A bounded pool of PostgreSQL connections. Each connection is lent to one borrower at a time
// (libpq connections are not thread-safe); borrowers beyond the pool size wait, with a deadline.
// Connections are opened lazily and reopened after a loss, at most one attempt per back-off
// interval, so a down database costs requests a fast failure, never a hang; every wait (for a
// free connection, to connect, for a statement) ends at the borrower's deadline, so a frozen
// database costs at most that.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "catwalk/pg.hpp"
#include "db_connection.hpp"

namespace catwalk::api {

// A named SQL statement that pooled connections prepare on first use (the catalogue may not be
// loaded yet when the API starts) and then execute with parameters only. The repository owns
// the statements; `slot` is a small index unique to each (< kMaxStatements).
struct Statement {
  static constexpr int kMaxStatements = 16;
  int slot;
  const char* name;
  const char* sql;
  bool binary_result = false;  // columns in binary form (bytea as raw bytes, not hex text)
};

// A pooled connection and which statements it has prepared.
class PooledConnection {
 public:
  PooledConnection(const std::string& conninfo, Deadline deadline) : conn_(conninfo, deadline) {}
  // Throws pg::DbError; past the deadline the connection is abandoned (ok() turns false).
  pg::Result exec(const Statement& s, int n, const char* const* values, Deadline deadline);
  bool ok() const { return conn_.ok(); }

 private:
  DbConnection conn_;
  bool prepared_[Statement::kMaxStatements] = {};
};

// No connection became free before the borrower's deadline (all busy), or the database could not
// be reached. Both mean 503 to a client.
class PoolUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PoolStats {
  int size = 0;
  int in_use = 0;
  std::uint64_t borrows = 0;
  std::uint64_t waits = 0;     // borrows that had to wait for a free connection
  std::uint64_t timeouts = 0;  // borrows that gave up
  std::uint64_t connects = 0;
  std::uint64_t connect_failures = 0;
};

class ConnectionPool {
 public:
  ConnectionPool(std::string conninfo, int size, std::chrono::milliseconds borrow_timeout);

  // A borrowed connection; returned to the pool when destroyed.
  class Lease {
   public:
    Lease(ConnectionPool* pool, int slot, bool fresh) : pool_(pool), slot_(slot), fresh_(fresh) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), slot_(o.slot_), fresh_(o.fresh_) {
      o.pool_ = nullptr;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    PooledConnection& conn() { return *pool_->slots_[slot_]; }
    // True when the connection was opened for this borrower (a failure on it is not a stale
    // connection left over from a server restart).
    bool fresh() const { return fresh_; }
    // Closes the connection: the next borrower of the slot reconnects.
    void discard();

   private:
    ConnectionPool* pool_;
    int slot_;
    bool fresh_;
  };

  // Throws PoolUnavailable (all busy past the deadline or the pool's borrow timeout, whichever
  // comes first, or the database is unreachable, or does not accept a connection by then).
  Lease borrow(Deadline deadline);
  PoolStats stats() const;

 private:
  void give_back(int slot);
  void hand_over(int slot);  // requires mu_

  // A borrower waiting in line; lives on its own stack, listed in waiters_ while it waits.
  struct Waiter {
    std::condition_variable cv;
    int slot = -1;
  };

  const std::string conninfo_;
  const std::chrono::milliseconds borrow_timeout_;
  std::vector<std::unique_ptr<PooledConnection>> slots_;  // a slot is touched only by its borrower

  mutable std::mutex mu_;
  std::deque<Waiter*> waiters_;  // FIFO
  std::vector<int> free_;        // LIFO: the hottest connection is reused first
  bool db_down_ = false;         // the last connect failed
  std::chrono::steady_clock::time_point next_connect_{};  // earliest next probe while down

  std::atomic<std::uint64_t> borrows_{0}, waits_{0}, timeouts_{0}, connects_{0},
      connect_failures_{0};
};

}  // namespace catwalk::api
