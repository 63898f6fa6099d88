#pragma once
// Runs a set of tasks with dependencies over a fixed number of worker threads.
#include <atomic>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "catwalk/etl/migrations.hpp"

namespace catwalk::etl {

struct DagTask {
  std::vector<std::size_t> after;  // indices of tasks that must finish first
  double priority = 0;             // among ready tasks, the highest starts first
  int group = -1;  // index into run_dag's group_limits: at most that many of the group at once
};

// Calls run(task, worker) for every task, on `workers` threads (worker is 0-based, so callers
// can keep one database connection per worker). When a call throws, no further task starts,
// `cancelled` is set so running tasks can stop early, and the first exception is rethrown
// once every worker has returned. Throws std::logic_error on a dependency cycle.
// A task with a group (>= 0) starts only while fewer than group_limits[group] tasks of that
// group run: the loader runs at most --jobs files at once, while the SQL steps that only wait
// on PostgreSQL take the other workers.
void run_dag(const std::vector<DagTask>& tasks, int workers,
             const std::function<void(std::size_t task, int worker)>& run,
             std::atomic<bool>& cancelled, const std::vector<int>& group_limits = {});

// A load's graph: one task per file (index i for files[i]), then, with `documents`, the
// documents task (index files.size()) and one per step (in order, after it). Files come first,
// each by the bytes on its longest chain of dependent files (styles.csv gates photos.csv, the
// longest file, so it starts before larger files nothing waits for), all in `file_group`. A step
// follows the files, steps and "documents" it names; one that names none of them may read any
// table and waits for every file. Steps go critical path first.
struct GraphFile {
  std::string table;
  std::vector<std::size_t> parents;  // indices into the files
  double bytes = 0;
};
std::vector<DagTask> build_run_graph(const std::vector<GraphFile>& files, bool documents,
                                     const std::vector<Step>& steps, int file_group);

}  // namespace catwalk::etl
