#pragma once
// One export file's part of a run: what plan() found (path, header, parents), what the worker
// reading it counts, and the live figures the progress display reads while it runs.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "catwalk/etl/summary.hpp"
#include "table_spec.hpp"
#include "validate.hpp"

namespace catwalk::etl {

using Clock = std::chrono::steady_clock;

struct FileTask {
  const TableSpec* spec = nullptr;
  std::string path;
  HeaderMap header;
  std::uint64_t size = 0;
  std::vector<std::size_t> parent_tasks;  // indices of tasks that must finish first
  IdSet ids;                              // accepted ids; read by child tasks once this one is done
  FileStats stats;
  // Live progress, written by the worker, read by the progress thread.
  std::atomic<std::uint64_t> live_rows{0};
  std::atomic<std::uint64_t> live_bytes{0};
  std::atomic<Clock::rep> live_started_ns{0};  // steady clock; 0 = not started
  std::atomic<bool> live_done{false};
};

}  // namespace catwalk::etl
