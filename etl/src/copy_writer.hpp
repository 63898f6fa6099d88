#pragma once
// The rows of one export file into its table: one transaction, the table truncated in it, then
// one COPY in binary format (see copy_binary.hpp). Truncating in the same transaction lets COPY
// FREEZE the rows and, with wal_level = minimal, skip the WAL.
// The chunks go to PostgreSQL from a thread of the writer's own, so that the loader forms the
// next chunk while the server ingests the previous ones: sent from the validating thread, a
// chunk's send blocked until the server had read most of it (a socket buffer is far smaller
// than a chunk), and the two took turns, each about half busy (product.csv: loader and backend
// at about 50 % of a core each for its 3.4 s, with the other core idle).
#include <exception>
#include <string>
#include <thread>

#include "catwalk/pg.hpp"
#include "chunk_pipe.hpp"
#include "table_spec.hpp"

namespace catwalk::etl {

class CopyWriter {
 public:
  // Starts the transaction and the COPY of `spec`'s columns plus `pos` (search_path decides the
  // schema). Throws pg::DbError.
  CopyWriter(pg::Connection& c, const TableSpec& spec);
  CopyWriter(const CopyWriter&) = delete;
  CopyWriter& operator=(const CopyWriter&) = delete;
  // Leaving without finish() (another error) stops the sending thread, aborts the COPY and
  // rolls back, never throwing.
  ~CopyWriter();

  // Where rows are appended (RowValidator::validate writes into it), after the stream header.
  std::string& rows() { return rows_; }
  // Hands the rows to the sending thread once they make a large enough chunk. Throws
  // pg::DbError when sending an earlier chunk failed.
  void send_if_full() {
    if (rows_.size() >= kChunkBytes) hand_off();
  }
  // Sends the rest and the trailer, ends the COPY and commits. Throws pg::DbError.
  void finish();

  // Rows are sent in chunks of about this size: large enough for few round trips, small
  // enough to keep memory flat.
  static constexpr std::size_t kChunkBytes = 1 << 20;
  // Chunks waiting for the sending thread: with the one being sent and the one being filled,
  // at most 4 MiB per writer.
  static constexpr std::size_t kQueuedChunks = 2;

 private:
  void hand_off();
  void send_loop();
  [[noreturn]] void rethrow_send_error();

  pg::Transaction tx_;
  pg::CopyIn copy_;  // declared after tx_: it ends before the transaction rolls back
  std::string rows_;
  ChunkPipe pipe_{kQueuedChunks};
  std::exception_ptr send_error_;  // set by the sending thread before it cancels pipe_
  std::thread sender_;             // last: starts once the rest is built
};

// Appends rows in the same binary form when there is no database (`check`): they are dropped
// once large, so validation costs the same and memory stays flat.
inline void drop_if_full(std::string& rows) {
  if (rows.size() >= CopyWriter::kChunkBytes) rows.clear();
}

}  // namespace catwalk::etl
