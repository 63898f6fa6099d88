#pragma once
// A bounded queue of COPY chunks between two threads (the documents' assembler and the thread
// sending them to PostgreSQL).
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>

namespace catwalk::etl {

// A bounded hand-off of COPY chunks from one producer thread to one consumer: the documents are
// assembled while PostgreSQL ingests the previous chunks. close() ends the stream (producer
// side); cancel() makes both sides give up (consumer side, on a failed send).
class ChunkPipe {
 public:
  explicit ChunkPipe(std::size_t capacity) : capacity_(capacity) {}
  bool push(std::string chunk) {  // false once cancelled
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return cancelled_ || queue_.size() < capacity_; });
    if (cancelled_) return false;
    queue_.push_back(std::move(chunk));
    cv_.notify_all();
    return true;
  }
  bool pop(std::string& out) {  // false at the end of the stream or once cancelled
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return cancelled_ || closed_ || !queue_.empty(); });
    if (cancelled_ || queue_.empty()) return false;
    out = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
    cv_.notify_all();
  }
  void cancel() {
    std::lock_guard lock(m_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  std::size_t capacity_;
  std::deque<std::string> queue_;
  bool closed_ = false, cancelled_ = false;
  std::mutex m_;
  std::condition_variable cv_;
};

}  // namespace catwalk::etl
