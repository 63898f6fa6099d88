#pragma once
// Background work of catwalk-api (the staged warm-up, the snapshot write) run at a lower CPU
// and IO priority than the threads serving requests, on a thread of its own: an unprivileged
// thread may lower its priority but never raise it back, so the warmer never lowers its own.
#include <functional>

namespace catwalk::api {

struct BackgroundPriority {
  int nice = 0;          // added to the thread's nice value (0-19)
  bool io_idle = false;  // IO scheduling class "idle" (honoured by BFQ; ignored by others)
};

// Runs `fn` on a new thread named `name` (at most 15 characters: what top and /proc show) at
// priority `p`, waits for it, and rethrows what it threw. A priority the kernel refuses is
// ignored (`fn` runs all the same).
void run_in_background(const char* name, BackgroundPriority p, const std::function<void()>& fn);

// The calling thread's nice value and whether its IO class is idle (tests, logs).
int thread_nice();
bool thread_io_idle();

}  // namespace catwalk::api
