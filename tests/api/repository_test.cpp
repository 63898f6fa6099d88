// Unit tests of how the repository classifies database errors: what answers 503 (the database
// cannot answer now) and what is a bug (500).
#include "repository.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

#include "catwalk/pg.hpp"

using catwalk::api::is_unavailable;
using catwalk::pg::DbError;

TEST_CASE("is_unavailable: a hot standby cancelling a read to replay a publish is a 503") {
  // "canceling statement due to conflict with recovery": what a replica (--read-db) raises
  // when a publish's DROP SCHEMA must be replayed past max_standby_streaming_delay.
  CHECK(is_unavailable(DbError("canceling statement due to conflict with recovery", "40001")));
}

TEST_CASE("is_unavailable: lost connections, timeouts and a missing catalogue, not bugs") {
  CHECK(is_unavailable(DbError("server closed the connection unexpectedly", "")));
  CHECK(is_unavailable(DbError("terminating connection due to administrator command", "57P01")));
  CHECK(is_unavailable(DbError("canceling statement due to statement timeout", "57014")));
  CHECK(is_unavailable(DbError("relation does not exist", "42P01")));
  CHECK_FALSE(is_unavailable(DbError("syntax error", "42601")));
  CHECK_FALSE(is_unavailable(std::runtime_error("a bug")));
}
