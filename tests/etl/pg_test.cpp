// The libpq layer in common/: results, and the RAII transaction and COPY, against a PostgreSQL
// the test starts itself.
#include "catwalk/pg.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <stdexcept>

#include "pg_server.hpp"

using namespace catwalk;

namespace {
// A one-column result holding `values` (nullptr = NULL), made without a server.
pg::Result one_column(std::initializer_list<const char*> values) {
  PGresult* r = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
  PGresAttDesc column{};
  column.name = const_cast<char*>("v");
  column.typid = 25;  // text
  column.typlen = -1;
  column.atttypmod = -1;
  REQUIRE(PQsetResultAttrs(r, 1, &column) == 1);
  int row = 0;
  for (const char* v : values) {
    REQUIRE(
        PQsetvalue(r, row++, 0, const_cast<char*>(v), v ? static_cast<int>(std::strlen(v)) : -1));
  }
  return pg::Result(r);
}

// The backend pid of `c`, to end it from another connection.
std::string backend_pid(pg::Connection& c) {
  return std::string(c.exec("SELECT pg_backend_pid()").get(0, 0));
}
}  // namespace

TEST_CASE("Result::get_int: whole numbers parse, anything else is an error, not 0") {
  auto r = one_column({"42", "-7", "12x", "", nullptr, "99999999999999999999"});
  CHECK(r.get_int(0, 0) == 42);
  CHECK(r.get_int(1, 0) == -7);
  CHECK_THROWS_WITH_AS(r.get_int(2, 0), doctest::Contains("\"12x\""), pg::DbError);
  CHECK_THROWS_AS(r.get_int(3, 0), pg::DbError);
  CHECK_THROWS_AS(r.get_int(4, 0), pg::DbError);  // NULL
  CHECK_THROWS_AS(r.get_int(5, 0), pg::DbError);  // out of range
  CHECK_THROWS_AS(r.get_int(6, 0), pg::DbError);  // no such row
}

TEST_CASE("Transaction commits only on commit(), rolls back otherwise, never throws doing so") {
  pg::Connection c(test::shared_server().url());
  c.exec("DROP TABLE IF EXISTS public.tx_test");
  c.exec("CREATE TABLE public.tx_test (v int)");
  {
    pg::Transaction tx(c);
    c.exec("INSERT INTO public.tx_test VALUES (1)");
  }
  CHECK(c.exec("SELECT count(*) FROM public.tx_test").get_int(0, 0) == 0);
  {
    pg::Transaction tx(c);
    c.exec("INSERT INTO public.tx_test VALUES (2)");
    tx.commit();
  }
  CHECK(c.exec("SELECT count(*) FROM public.tx_test").get_int(0, 0) == 1);
  try {
    pg::Transaction tx(c);
    c.exec("SELECT 1/0");  // a failed statement: the transaction is aborted
    FAIL("no error");
  } catch (const pg::DbError& e) {
    CHECK(std::string(e.what()).find("division by zero") != std::string::npos);
  }
  CHECK(c.exec("SELECT 1").get_int(0, 0) == 1);  // rolled back: usable again

  // The connection dies inside the transaction: the original error is the one that arrives.
  pg::Connection victim(test::shared_server().url());
  try {
    pg::Transaction tx(victim);
    c.exec("SELECT pg_terminate_backend(" + backend_pid(victim) + ")");
    throw std::runtime_error("the original error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "the original error");
  }
  c.exec("DROP TABLE public.tx_test");
}

TEST_CASE("CopyIn: finish() makes the rows, leaving it unfinished aborts without throwing") {
  pg::Connection c(test::shared_server().url());
  c.exec("DROP TABLE IF EXISTS public.copy_test");
  c.exec("CREATE TABLE public.copy_test (v int)");
  try {
    pg::Transaction tx(c);
    pg::CopyIn copy(c, "COPY public.copy_test FROM STDIN");
    copy.put("1\n2\n");
    throw std::runtime_error("stop");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "stop");
  }
  CHECK(c.exec("SELECT count(*) FROM public.copy_test").get_int(0, 0) == 0);
  {
    pg::Transaction tx(c);
    pg::CopyIn copy(c, "COPY public.copy_test FROM STDIN");
    copy.put("1\n2\n");
    copy.finish();
    tx.commit();
  }
  CHECK(c.exec("SELECT count(*) FROM public.copy_test").get_int(0, 0) == 2);
  {
    // Data the server rejects: finish() throws, and the connection stays usable.
    pg::Transaction tx(c);
    pg::CopyIn copy(c, "COPY public.copy_test FROM STDIN");
    copy.put("not a number\n");
    CHECK_THROWS_AS(copy.finish(), pg::DbError);
  }
  CHECK(c.exec("SELECT count(*) FROM public.copy_test").get_int(0, 0) == 2);
  c.exec("DROP TABLE public.copy_test");
}
