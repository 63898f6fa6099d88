#include "catwalk/log.hpp"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <string>

namespace catwalk {

void log_write(std::string_view line) {
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t t = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = fmt::format("{}.{:03}Z {}\n", stamp, ms, line);
  // One write(2) per line: atomic with respect to other threads' lines.
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
}

}  // namespace catwalk
