// Lower-priority threads for background work: see thread_priority.hpp.
#include "thread_priority.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <thread>

namespace catwalk::api {

namespace {
// linux/ioprio.h's values (the header is not in every libc's set).
constexpr int kIoprioWhoProcess = 1;  // with who = 0: the calling thread
constexpr int kIoprioClassShift = 13;
constexpr int kIoprioClassIdle = 3;

void lower_priority(BackgroundPriority p) {
  const auto tid = static_cast<id_t>(::gettid());
  if (p.nice > 0) {
    errno = 0;
    const int now = ::getpriority(PRIO_PROCESS, tid);
    if (errno == 0) (void)::setpriority(PRIO_PROCESS, tid, now + p.nice);
  }
  if (p.io_idle)
    (void)::syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, kIoprioClassIdle << kIoprioClassShift);
}
}  // namespace

void run_in_background(const char* name, BackgroundPriority p, const std::function<void()>& fn) {
  std::exception_ptr error;
  std::thread t([&] {
    ::pthread_setname_np(::pthread_self(), name);
    lower_priority(p);
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

int thread_nice() {
  errno = 0;
  const int n = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  return errno == 0 ? n : 0;
}

bool thread_io_idle() {
  const long v = ::syscall(SYS_ioprio_get, kIoprioWhoProcess, 0);
  return v >= 0 && (v >> kIoprioClassShift) == kIoprioClassIdle;
}

}  // namespace catwalk::api
