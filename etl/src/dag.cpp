#include "dag.hpp"

#include <algorithm>
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

std::vector<DagTask> build_run_graph(const std::vector<GraphFile>& files, bool documents,
                                     const std::vector<Step>& steps, int file_group) {
  const std::size_t n = files.size();
  std::vector<double> chain_bytes(n);
  for (std::size_t i = 0; i < n; ++i) chain_bytes[i] = files[i].bytes;
  for (std::size_t pass = 0; pass < n; ++pass) {
    for (std::size_t i = 0; i < n; ++i) {
      for (auto p : files[i].parents) {
        chain_bytes[p] = std::max(chain_bytes[p], files[p].bytes + chain_bytes[i]);
      }
    }
  }
  std::vector<DagTask> dag;
  for (std::size_t i = 0; i < n; ++i) {
    dag.push_back({files[i].parents, 1e12 + chain_bytes[i], file_group});
  }
  if (!documents) return dag;
  std::vector<std::size_t> all_files(n);
  for (std::size_t i = 0; i < n; ++i) all_files[i] = i;
  const std::size_t docs_task = dag.size();
  dag.push_back({all_files, 0});
  for (std::size_t i = 0; i < steps.size(); ++i) {
    DagTask t;
    bool names_its_inputs = false;
    for (const auto& name : steps[i].after) {
      if (name == "documents") t.after.push_back(docs_task), names_its_inputs = true;
      for (std::size_t f = 0; f < n; ++f) {
        if (files[f].table == name) t.after.push_back(f), names_its_inputs = true;
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (steps[j].name == name) t.after.push_back(docs_task + 1 + j), names_its_inputs = true;
      }
    }
    // A step that follows steps reads what they made, and starts when they are done (the
    // foreign keys once waited for every file: photos.csv, 10-15 s after their keys existed).
    if (!names_its_inputs) t.after.insert(t.after.end(), all_files.begin(), all_files.end());
    dag.push_back(std::move(t));
  }
  // Critical path first: priority is the longest chain of tasks waiting on a task
  // (dependencies only point backwards, so one reverse pass computes it); ties in order.
  std::vector<int> chain(dag.size(), 0);
  for (std::size_t i = dag.size(); i-- > docs_task;) {
    for (auto d : dag[i].after) chain[d] = std::max(chain[d], chain[i] + 1);
  }
  for (std::size_t i = docs_task; i < dag.size(); ++i) dag[i].priority = chain[i] * 1000.0 - i;
  return dag;
}

}  // namespace catwalk::etl
