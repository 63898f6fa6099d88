#include "dag.hpp"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace catwalk::etl {

void run_dag(const std::vector<DagTask>& tasks, int workers,
             const std::function<void(std::size_t, int)>& run, std::atomic<bool>& cancelled,
             const std::vector<int>& group_limits) {
  for (const auto& t : tasks) {
    if (t.group >= static_cast<int>(group_limits.size()) ||
        (t.group >= 0 && group_limits[t.group] < 1)) {
      throw std::logic_error("run_dag: a task's group has no limit of at least 1");
    }
  }
  std::vector<int> group_running(group_limits.size(), 0);
  enum class State { kPending, kRunning, kDone };
  std::vector<State> state(tasks.size(), State::kPending);
  std::mutex m;
  std::condition_variable cv;
  std::exception_ptr failure;
  std::size_t running = 0;

  auto pick = [&]() -> std::ptrdiff_t {  // with m held
    std::ptrdiff_t best = -1;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      if (state[i] != State::kPending) continue;
      int g = tasks[i].group;
      if (g >= 0 && group_running[g] >= group_limits[g]) continue;
      bool ready = true;
      for (auto d : tasks[i].after) ready = ready && state[d] == State::kDone;
      if (ready && (best < 0 || tasks[i].priority > tasks[best].priority)) best = i;
    }
    return best;
  };
  auto pending = [&] {
    for (auto s : state) {
      if (s == State::kPending) return true;
    }
    return false;
  };

  auto worker = [&](int w) {
    std::unique_lock lock(m);
    while (true) {
      std::ptrdiff_t next = -1;
      cv.wait(lock, [&] { return failure || !pending() || (next = pick()) >= 0 || running == 0; });
      if (failure || next < 0) {
        // Pending tasks whose dependencies can never finish (a cycle) are an error.
        if (!failure && pending() && running == 0) {
          failure = std::make_exception_ptr(std::logic_error("dependency cycle among tasks"));
        }
        cv.notify_all();
        return;
      }
      state[next] = State::kRunning;
      ++running;
      if (tasks[next].group >= 0) ++group_running[tasks[next].group];
      lock.unlock();
      std::exception_ptr error;
      try {
        run(static_cast<std::size_t>(next), w);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      --running;
      if (tasks[next].group >= 0) --group_running[tasks[next].group];
      state[next] = State::kDone;
      if (error && !failure) {
        failure = error;
        cancelled = true;
      }
      cv.notify_all();
    }
  };

  std::vector<std::thread> threads;
  int n = std::max(1, std::min<int>(workers, static_cast<int>(tasks.size())));
  for (int i = 0; i < n; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace catwalk::etl
