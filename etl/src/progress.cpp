#include "progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

namespace catwalk::etl {

Progress::Progress(std::vector<std::unique_ptr<FileTask>>& tasks, LoadOptions::Progress mode)
    : tasks_(tasks) {
  terminal_ = mode == LoadOptions::Progress::kTerminal ||
              (mode == LoadOptions::Progress::kAuto && ::isatty(STDERR_FILENO));
  if (mode != LoadOptions::Progress::kOff) thread_ = std::thread([this] { loop(); });
}

bool Progress::live() {
  std::lock_guard lock(m_);
  return terminal_ && !stopped_;
}

void Progress::stop() {
  {
    std::lock_guard lock(m_);
    if (stopped_) return;
    stopped_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Progress::loop() {
  auto interval = terminal_ ? std::chrono::milliseconds(250) : std::chrono::seconds(5);
  std::unique_lock lock(m_);
  while (!cv_.wait_for(lock, interval, [this] { return stopped_; })) render();
  if (terminal_) render();  // the final state of every line
}

void Progress::render() {
  std::string out;
  if (drawn_ > 0) out += fmt::format("\x1b[{}A", drawn_);  // back to the first line
  int lines = 0;
  for (auto& t : tasks_) {
    bool done = t->live_done.load();
    auto started = t->live_started_ns.load();
    if (started == 0 || (done && !terminal_)) continue;
    std::uint64_t rows = t->live_rows.load(), bytes = t->live_bytes.load();
    double secs = done ? t->stats.seconds
                       : std::max(1e-3, (Clock::now().time_since_epoch().count() - started) / 1e9);
    double mbps = bytes / 1e6 / secs;
    std::string state = "done";
    if (!done) {
      double left = t->size > bytes && mbps > 0 ? (t->size - bytes) / 1e6 / mbps : 0;
      state = fmt::format("{:3.0f}%  ETA {}:{:02}", t->size ? 100.0 * bytes / t->size : 100.0,
                          static_cast<int>(left) / 60, static_cast<int>(left) % 60);
    }
    out += fmt::format("{}{:<13} {:>12} rows {:>8.1f} MB/s  {}\n", terminal_ ? "\x1b[2K" : "",
                       t->spec->file, rows, mbps, state);
    ++lines;
  }
  if (terminal_) drawn_ = lines;
  if (out.empty()) return;
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
}

}  // namespace catwalk::etl
