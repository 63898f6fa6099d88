#pragma once
// The live progress of a run's files on stderr (never stdout, which carries the result).
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "catwalk/etl/loader.hpp"
#include "file_task.hpp"

namespace catwalk::etl {

// Live progress on stderr: on a terminal, one line per file redrawn in place (rows, MB/s, percent,
// ETA); otherwise one line per running file every 5 seconds, so CI logs stay short.
class Progress {
 public:
  // Starts the display thread unless `mode` is kOff. `tasks` must outlive the Progress.
  Progress(std::vector<std::unique_ptr<FileTask>>& tasks, LoadOptions::Progress mode);
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { stop(); }
  // True while live terminal lines are being redrawn (other stderr output would garble them).
  bool live();
  void stop();  // the last lines are drawn; idempotent

 private:
  void loop();
  void render();

  std::vector<std::unique_ptr<FileTask>>& tasks_;
  bool terminal_ = false, stopped_ = false;
  int drawn_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace catwalk::etl
