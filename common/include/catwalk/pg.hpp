#pragma once
// A thin RAII layer over libpq. One Connection per thread, never shared.
// Broken infrastructure is an exception (DbError); SQL input only ever travels as parameters.
#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace catwalk::pg {

// A failed database operation. `sqlstate` is empty when the server was never reached.
class DbError : public std::runtime_error {
 public:
  DbError(const std::string& what, std::string sqlstate)
      : std::runtime_error(what), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const { return sqlstate_; }
  // True when the connection itself is gone (server restart, network), not just the statement.
  bool connection_lost() const {
    return sqlstate_.empty() || sqlstate_.starts_with("08") || sqlstate_ == "57P01" ||
           sqlstate_ == "57P02" || sqlstate_ == "57P03";
  }

 private:
  std::string sqlstate_;
};

class Result {
 public:
  Result() = default;
  explicit Result(PGresult* r) : r_(r) {}
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  int columns() const { return r_ ? PQnfields(r_.get()) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  std::string_view get(int row, int col) const {
    return {PQgetvalue(r_.get(), row, col),
            static_cast<std::size_t>(PQgetlength(r_.get(), row, col))};
  }
  // The value as a whole number; throws DbError naming the value when it is not one (a NULL
  // or a column of another type: a bug in the query, never silently 0).
  long long get_int(int row, int col) const;
  PGresult* raw() const { return r_.get(); }

 private:
  struct Clear {
    void operator()(PGresult* r) const { PQclear(r); }
  };
  std::unique_ptr<PGresult, Clear> r_;
};

// Parameters are passed as text; std::nullopt is SQL NULL.
using Params = std::vector<std::optional<std::string>>;

class Connection {
 public:
  // Connects with a libpq conninfo string or URI ("" = libpq defaults from PG* variables).
  // Throws DbError naming the server libpq tried when the connection fails.
  explicit Connection(const std::string& conninfo);
  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = default;

  Result exec(const std::string& sql);
  Result exec(const std::string& sql, const Params& params);
  void prepare(const std::string& name, const std::string& sql);
  Result exec_prepared(const std::string& name, const Params& params);
  // Same, with parameters already as C strings (no allocation on a hot path).
  Result exec_prepared(const char* name, int n, const char* const* values);

  // COPY ... FROM STDIN: start with exec() of the COPY statement, then put_copy, then end_copy
  // (or use CopyIn, which aborts a COPY left unfinished).
  void put_copy(const char* data, std::size_t size);
  void end_copy();  // throws DbError if the server rejected the data
  // Ends a COPY in progress as failed, and drains its results. Never throws: it runs while
  // another error is being handled.
  void abort_copy(const char* reason) noexcept;
  // Rolls back the open transaction, if the connection still works. Never throws, for the
  // same reason; a broken connection has no transaction left to roll back.
  void rollback_quietly() noexcept;

  std::string quote_ident(std::string_view name) const;
  bool ok() const;
  std::string error_message() const;
  PGconn* raw() const { return c_.get(); }

 private:
  Result check(PGresult* r, const char* what);
  struct Finish {
    void operator()(PGconn* c) const { PQfinish(c); }
  };
  std::unique_ptr<PGconn, Finish> c_;
};

// One transaction: BEGIN when made, COMMIT only by commit(). Leaving the scope without
// commit() (an exception) rolls back, and the destructor never throws, so the error being
// handled is the one reported.
class Transaction {
 public:
  explicit Transaction(Connection& c);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();  // throws DbError when COMMIT fails (then nothing was committed)

 private:
  Connection& c_;
  bool open_ = true;
};

// One COPY ... FROM STDIN: runs the COPY statement when made; put() sends data, finish() ends
// it and throws DbError if the server rejected the data. Leaving the scope without finish()
// aborts the COPY (its rows are discarded) without throwing. Declare it after the Transaction
// it belongs to, so that it ends before the transaction rolls back.
class CopyIn {
 public:
  CopyIn(Connection& c, const std::string& copy_statement);
  ~CopyIn();
  CopyIn(const CopyIn&) = delete;
  CopyIn& operator=(const CopyIn&) = delete;
  void put(std::string_view data) { c_.put_copy(data.data(), data.size()); }
  void finish();

 private:
  Connection& c_;
  bool open_ = true;
};

}  // namespace catwalk::pg
