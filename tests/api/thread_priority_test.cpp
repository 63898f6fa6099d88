// run_in_background(): the work runs on its own thread at the lower priority asked for, the
// caller's priority is left as it was, and what the work throws reaches the caller.
#include "thread_priority.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace catwalk::api;

TEST_CASE("run_in_background: lower CPU and IO priority on its own thread, not the caller's") {
  const int before = thread_nice();
  const bool idle_before = thread_io_idle();
  int inside = -100;
  bool idle_inside = false;
  run_in_background("test-bg", {5, true}, [&] {
    inside = thread_nice();
    idle_inside = thread_io_idle();
  });
  CHECK(inside == std::min(before + 5, 19));
  CHECK(idle_inside);
  CHECK(thread_nice() == before);
  CHECK(thread_io_idle() == idle_before);
}

TEST_CASE("run_in_background: what the work throws is rethrown to the caller") {
  CHECK_THROWS_WITH(run_in_background("test-bg", {}, [] { throw std::runtime_error("boom"); }),
                    "boom");
}
