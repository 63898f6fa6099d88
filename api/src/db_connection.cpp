// Deadline-bounded libpq connections and the background canceller: see db_connection.hpp.
#include "db_connection.hpp"

#include <poll.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "catwalk/log.hpp"

namespace catwalk::api {

namespace {

using Clock = std::chrono::steady_clock;

std::string trimmed(const char* m) {
  std::string s = m ? m : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Waits until the socket is ready for `events` or the deadline passes; returns the ready events
// (0 on the deadline, POLLERR/POLLHUP count as ready: libpq then reports the failure).
short wait_for(PGconn* c, short events, Deadline deadline) {
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    pollfd p{PQsocket(c), events, 0};
    if (p.fd < 0) return POLLERR;
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return p.revents != 0 ? p.revents : events;
    if (n < 0 && errno != EINTR) return POLLERR;
  }
}

// One thread for the whole process, never joined: PQcancel may block for as long as a server is
// frozen, and a stuck cancel must hold up neither a request nor a shutdown. Its state is shared
// with the thread, so it outlives every Server and the static destructors at exit.
struct CancelQueue {
  static constexpr std::size_t kBacklog = 16;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<PGcancel*> pending;
  bool warned = false;
};

std::shared_ptr<CancelQueue> start_canceller() {
  auto q = std::make_shared<CancelQueue>();
  std::thread([q] {
    for (;;) {
      PGcancel* cancel;
      {
        std::unique_lock lock(q->mu);
        q->cv.wait(lock, [&] { return !q->pending.empty(); });
        cancel = q->pending.front();
        q->pending.pop_front();
      }
      char err[256];
      PQcancel(cancel, err, sizeof err);  // best effort: a failed cancel changes nothing here
      PQfreeCancel(cancel);
    }
  }).detach();
  return q;
}

}  // namespace

void cancel_in_background(PGcancel* cancel) {
  static const std::shared_ptr<CancelQueue> queue = start_canceller();
  std::unique_lock lock(queue->mu);
  if (queue->pending.size() >= CancelQueue::kBacklog) {
    if (!std::exchange(queue->warned, true))
      catwalk::log("database cancel requests are backing up (is the server frozen?); dropping");
    lock.unlock();
    PQfreeCancel(cancel);
    return;
  }
  queue->pending.push_back(cancel);
  lock.unlock();
  queue->cv.notify_one();
}

void DbConnection::Finish::operator()(PGconn* c) const {
  // Non-blocking, so the goodbye message PQfinish sends never waits on a frozen server.
  PQsetnonblocking(c, 1);
  PQfinish(c);
}

DbConnection::DbConnection(const std::string& conninfo, Deadline deadline)
    : c_(PQconnectStart(conninfo.c_str())) {
  if (!c_) throw pg::DbError("out of memory creating a database connection", "");
  if (PQstatus(c_.get()) == CONNECTION_BAD) fail("cannot connect to PostgreSQL");
  // As the libpq manual says: after PQconnectStart, behave as if the poll asked for writing.
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) fail("cannot connect to PostgreSQL");
    if (wait_for(c_.get(), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline) == 0) {
      c_.reset();
      throw pg::DbError("cannot connect to PostgreSQL: the server did not answer in time", "08001");
    }
    st = PQconnectPoll(c_.get());
  }
  if (PQsetnonblocking(c_.get(), 1) != 0) fail("cannot connect to PostgreSQL");
  // Our own messages go to stderr through the log; libpq's notices are noise for users.
  PQsetNoticeProcessor(
      c_.get(), [](void*, const char*) {}, nullptr);
}

DbConnection::~DbConnection() = default;

bool DbConnection::ok() const { return c_ && PQstatus(c_.get()) == CONNECTION_OK; }

void DbConnection::prepare(const char* name, const char* sql, Deadline deadline) {
  if (!ok()) fail("prepare failed");
  if (!PQsendPrepare(c_.get(), name, sql, 0, nullptr)) fail("prepare failed");
  finish(deadline, "prepare failed");
}

pg::Result DbConnection::exec_prepared(const char* name, int n, const char* const* values,
                                       Deadline deadline, bool binary_result) {
  if (!ok()) fail("query failed");
  if (!PQsendQueryPrepared(c_.get(), name, n, values, nullptr, nullptr, binary_result ? 1 : 0))
    fail("query failed");
  return finish(deadline, "query failed");
}

pg::Result DbConnection::exec(const char* sql, Deadline deadline) {
  if (!ok()) fail("query failed");
  if (!PQsendQueryParams(c_.get(), sql, 0, nullptr, nullptr, nullptr, nullptr, 0))
    fail("query failed");
  return finish(deadline, "query failed");
}

pg::Result DbConnection::exec_params(const char* sql, int n, const char* const* values,
                                     Deadline deadline, bool binary_result) {
  if (!ok()) fail("query failed");
  if (!PQsendQueryParams(c_.get(), sql, n, nullptr, values, nullptr, nullptr,
                         binary_result ? 1 : 0))
    fail("query failed");
  return finish(deadline, "query failed");
}

pg::Result DbConnection::finish(Deadline deadline, const char* what) {
  PGconn* c = c_.get();
  // Non-blocking mode: what does not fit the socket buffer is flushed as the server reads.
  for (int f; (f = PQflush(c)) != 0;) {
    if (f < 0) fail(what);
    short ready = wait_for(c, POLLIN | POLLOUT, deadline);
    if (ready == 0) abandon(what);
    if ((ready & POLLIN) && !PQconsumeInput(c)) fail(what);
  }
  pg::Result first;
  bool have = false;
  for (;;) {
    while (PQisBusy(c)) {
      if (wait_for(c, POLLIN, deadline) == 0) abandon(what);
      if (!PQconsumeInput(c)) fail(what);
    }
    PGresult* r = PQgetResult(c);
    if (r == nullptr) break;
    if (have) {
      PQclear(r);
    } else {
      first = pg::Result(r);
      have = true;
    }
  }
  if (!have) fail(what);
  PGresult* r = first.raw();
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return first;
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  std::string msg = trimmed(PQresultErrorMessage(r));
  if (msg.empty()) msg = trimmed(PQerrorMessage(c));
  throw pg::DbError(std::string(what) + ": " + msg, state ? state : "");
}

bool DbConnection::copy_out(const char* sql, std::chrono::milliseconds idle,
                            const std::function<bool(std::string_view)>& row) {
  const char* what = "COPY failed";
  if (!ok()) fail(what);
  PGconn* c = c_.get();
  if (!PQsendQueryParams(c, sql, 0, nullptr, nullptr, nullptr, nullptr, 0)) fail(what);
  for (int f; (f = PQflush(c)) != 0;) {
    if (f < 0) fail(what);
    short ready = wait_for(c, POLLIN | POLLOUT, Clock::now() + idle);
    if (ready == 0) abandon(what);
    if ((ready & POLLIN) && !PQconsumeInput(c)) fail(what);
  }
  while (PQisBusy(c)) {
    if (wait_for(c, POLLIN, Clock::now() + idle) == 0) abandon(what);
    if (!PQconsumeInput(c)) fail(what);
  }
  {
    pg::Result start(PQgetResult(c));
    if (start.raw() == nullptr) fail(what);
    if (PQresultStatus(start.raw()) != PGRES_COPY_OUT) {
      // An error (no catalogue, ...): finish() collects what follows and throws it.
      const char* state = PQresultErrorField(start.raw(), PG_DIAG_SQLSTATE);
      std::string error_state = state ? state : "";
      std::string msg = trimmed(PQresultErrorMessage(start.raw()));
      for (;;) {  // the statement's other results, if any, so the connection stays usable
        while (PQisBusy(c)) {
          if (wait_for(c, POLLIN, Clock::now() + idle) == 0) abandon(what);
          if (!PQconsumeInput(c)) fail(what);
        }
        PGresult* r = PQgetResult(c);
        if (r == nullptr) break;
        PQclear(r);
      }
      throw pg::DbError(std::string(what) + ": " + msg, error_state);
    }
  }
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(c, &buf, 1);  // async: 0 means wait for more
    if (n > 0) {
      const bool more = row(std::string_view(buf, static_cast<std::size_t>(n)));
      PQfreemem(buf);
      if (!more) {
        // Stopped on purpose: the server's rest of the COPY is not worth reading.
        if (PGcancel* cancel = PQgetCancel(c)) cancel_in_background(cancel);
        c_.reset();
        return false;
      }
    } else if (n == 0) {
      if (wait_for(c, POLLIN, Clock::now() + idle) == 0) abandon(what);
      if (!PQconsumeInput(c)) fail(what);
    } else if (n == -1) {
      break;  // the end of the data: the COPY's own result follows
    } else {
      fail(what);
    }
  }
  finish(Clock::now() + idle, what);
  return true;
}

void DbConnection::abandon(const char* what) {
  if (PGcancel* cancel = PQgetCancel(c_.get())) cancel_in_background(cancel);
  c_.reset();
  throw pg::DbError(std::string(what) + ": the database did not answer in time", "57014");
}

void DbConnection::fail(const char* what) {
  std::string msg = c_ ? trimmed(PQerrorMessage(c_.get())) : "the connection was closed";
  throw pg::DbError(std::string(what) + ": " + msg, "");
}

}  // namespace catwalk::api
