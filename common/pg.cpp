#include "catwalk/pg.hpp"

#include <charconv>

namespace catwalk::pg {

namespace {
std::string trim_message(const char* m) {
  std::string s = m ? m : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}
}  // namespace

long long Result::get_int(int row, int col) const {
  if (!r_ || row >= rows() || col >= columns() || is_null(row, col)) {
    throw DbError("expected a whole number at row " + std::to_string(row) + ", column " +
                      std::to_string(col) + " of a result, found none",
                  "");
  }
  auto v = get(row, col);
  long long out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size()) {
    throw DbError(
        "expected a whole number in a result, found \"" + std::string(v.substr(0, 40)) + "\"", "");
  }
  return out;
}

Connection::Connection(const std::string& conninfo) : c_(PQconnectdb(conninfo.c_str())) {
  if (!c_) throw DbError("out of memory creating a database connection", "");
  if (PQstatus(c_.get()) != CONNECTION_OK) {
    throw DbError("cannot connect to PostgreSQL: " + trim_message(PQerrorMessage(c_.get())) +
                      " (set --db, DATABASE_URL or PGHOST/PGPORT/PGDATABASE)",
                  "");
  }
  // Our own messages go to stderr through the log; libpq's notices (e.g. "table does not
  // exist, skipping") are noise for users.
  PQsetNoticeProcessor(
      c_.get(), [](void*, const char*) {}, nullptr);
}

bool Connection::ok() const { return c_ && PQstatus(c_.get()) == CONNECTION_OK; }

std::string Connection::error_message() const { return trim_message(PQerrorMessage(c_.get())); }

Result Connection::check(PGresult* r, const char* what) {
  Result res(r);
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_IN ||
      st == PGRES_COPY_OUT || st == PGRES_EMPTY_QUERY) {
    return res;
  }
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = r ? trim_message(PQresultErrorMessage(r)) : error_message();
  if (msg.empty()) msg = error_message();
  throw DbError(std::string(what) + ": " + msg, state ? state : "");
}

Result Connection::exec(const std::string& sql) {
  return check(PQexec(c_.get(), sql.c_str()), "query failed");
}

Result Connection::exec(const std::string& sql, const Params& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return check(PQexecParams(c_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                            values.data(), nullptr, nullptr, 0),
               "query failed");
}

void Connection::prepare(const std::string& name, const std::string& sql) {
  check(PQprepare(c_.get(), name.c_str(), sql.c_str(), 0, nullptr), "prepare failed");
}

Result Connection::exec_prepared(const std::string& name, const Params& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return exec_prepared(name.c_str(), static_cast<int>(values.size()), values.data());
}

Result Connection::exec_prepared(const char* name, int n, const char* const* values) {
  return check(PQexecPrepared(c_.get(), name, n, values, nullptr, nullptr, 0), "query failed");
}

void Connection::put_copy(const char* data, std::size_t size) {
  if (PQputCopyData(c_.get(), data, static_cast<int>(size)) != 1) {
    throw DbError("COPY failed while sending data: " + error_message(), "");
  }
}

void Connection::end_copy() {
  if (PQputCopyEnd(c_.get(), nullptr) != 1) {
    throw DbError("COPY failed at its end: " + error_message(), "");
  }
  // Drain every result: the COPY's own, then the final null.
  std::optional<DbError> failure;
  while (PGresult* r = PQgetResult(c_.get())) {
    try {
      check(r, "COPY failed");
    } catch (const DbError& e) {
      if (!failure) failure = e;
    }
  }
  if (failure) throw *failure;
}

void Connection::abort_copy(const char* reason) noexcept {
  if (!c_) return;
  if (PQstatus(c_.get()) == CONNECTION_OK) PQputCopyEnd(c_.get(), reason);
  // Drain the COPY's results (its error, then the end); a broken connection yields none.
  while (PGresult* r = PQgetResult(c_.get())) PQclear(r);
}

void Connection::rollback_quietly() noexcept {
  if (!ok()) return;
  PQclear(PQexec(c_.get(), "ROLLBACK"));
}

Transaction::Transaction(Connection& c) : c_(c) { c_.exec("BEGIN"); }

Transaction::~Transaction() {
  if (open_) c_.rollback_quietly();
}

void Transaction::commit() {
  open_ = false;  // whatever COMMIT answers, the transaction is over
  c_.exec("COMMIT");
}

CopyIn::CopyIn(Connection& c, const std::string& copy_statement) : c_(c) {
  c_.exec(copy_statement);
}

CopyIn::~CopyIn() {
  if (open_) c_.abort_copy("the load was stopped");
}

void CopyIn::finish() {
  open_ = false;  // end_copy drains the COPY's results even when it throws
  c_.end_copy();
}

std::string Connection::quote_ident(std::string_view name) const {
  char* q = PQescapeIdentifier(c_.get(), name.data(), name.size());
  if (!q) throw DbError("cannot quote identifier: " + error_message(), "");
  std::string out(q);
  PQfreemem(q);
  return out;
}

}  // namespace catwalk::pg
