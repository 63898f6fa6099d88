#pragma once
// A PostgreSQL connection on which no wait outlives a deadline, whatever the server does: a
// frozen server (SIGSTOP, a hung host) accepts the socket and then never answers, and neither
// libpq's blocking calls nor statement_timeout (which runs in that server) can end the wait.
// Connecting runs PQconnectStart/PQconnectPoll and statements PQsendQueryPrepared, each waiting
// with poll() on the socket until the deadline. On the deadline the connection is abandoned: a
// cancel request for what was sent goes to a background thread (PQcancel itself blocks on a
// frozen server), and the socket is closed without waiting.
//
// Errors: pg::DbError. A deadline is sqlstate 57014 (query canceled) with ok() false afterwards;
// a lost or refused connection has connection_lost() true. Not thread-safe: one user at a time.
#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "catwalk/pg.hpp"

namespace catwalk::api {

using Deadline = std::chrono::steady_clock::time_point;

class DbConnection {
 public:
  // Connects by `deadline`, or throws pg::DbError (connection_lost()).
  DbConnection(const std::string& conninfo, Deadline deadline);
  ~DbConnection();
  DbConnection(const DbConnection&) = delete;
  DbConnection& operator=(const DbConnection&) = delete;

  bool ok() const;
  void prepare(const char* name, const char* sql, Deadline deadline);
  // `binary_result`: every column in its binary form (bytea as its bytes, int4 big-endian).
  pg::Result exec_prepared(const char* name, int n, const char* const* values, Deadline deadline,
                           bool binary_result = false);
  // Runs a statement without parameters (the extended protocol, so one statement only).
  pg::Result exec(const char* sql, Deadline deadline);
  // Runs an unprepared statement with `n` text parameters.
  pg::Result exec_params(const char* sql, int n, const char* const* values, Deadline deadline,
                         bool binary_result = false);
  // Runs `sql`, a COPY ... TO STDOUT, handing each message of data (one row, as COPY's format
  // writes it; in the binary format the first also carries the header and the last is the
  // trailer) to `row`. `row` returning false stops the COPY: the connection is then abandoned
  // (ok() false afterwards) and copy_out returns false. Each wait for the server is bounded by
  // `idle` (the whole COPY may take longer). True when the COPY ran to its end.
  bool copy_out(const char* sql, std::chrono::milliseconds idle,
                const std::function<bool(std::string_view)>& row);

 private:
  // Flushes what was sent and collects the one statement's result by `deadline`.
  pg::Result finish(Deadline deadline, const char* what);
  void wait_socket(bool for_write, Deadline deadline, const char* what);
  // Sends a cancel for the statement in flight (off this thread) and closes the connection.
  [[noreturn]] void abandon(const char* what);
  [[noreturn]] void fail(const char* what);

  struct Finish {
    void operator()(PGconn* c) const;
  };
  std::unique_ptr<PGconn, Finish> c_;
};

// Hands a cancel request to the process's canceller thread and returns at once. Bounded: while
// the thread is stuck on a frozen server, requests beyond a small backlog are dropped (the
// server then ends the statement when it finds the client gone, or by statement_timeout).
void cancel_in_background(PGcancel* cancel);

}  // namespace catwalk::api
