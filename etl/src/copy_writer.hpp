#pragma once
// The rows of one export file into its table: one transaction, the table truncated in it, then
// one COPY in binary format (see copy_binary.hpp). Truncating in the same transaction lets COPY
// FREEZE the rows and, with wal_level = minimal, skip the WAL.
#include <string>

#include "catwalk/pg.hpp"
#include "table_spec.hpp"

namespace catwalk::etl {

class CopyWriter {
 public:
  // Starts the transaction and the COPY of `spec`'s columns plus `pos` (search_path decides the
  // schema). Throws pg::DbError.
  CopyWriter(pg::Connection& c, const TableSpec& spec);
  CopyWriter(const CopyWriter&) = delete;
  CopyWriter& operator=(const CopyWriter&) = delete;
  // Leaving without finish() (another error) aborts the COPY and rolls back, never throwing.
  ~CopyWriter() = default;

  // Where rows are appended (RowValidator::validate writes into it), after the stream header.
  std::string& rows() { return rows_; }
  // Sends the rows once they make a large enough chunk. Throws pg::DbError.
  void send_if_full();
  // Sends the rest and the trailer, ends the COPY and commits. Throws pg::DbError.
  void finish();

  // Rows are sent in chunks of about this size: large enough for few round trips, small
  // enough to keep memory flat.
  static constexpr std::size_t kChunkBytes = 1 << 20;

 private:
  pg::Transaction tx_;
  pg::CopyIn copy_;  // declared after tx_: it ends before the transaction rolls back
  std::string rows_;
};

// Appends rows in the same binary form when there is no database (`check`): they are dropped
// once large, so validation costs the same and memory stays flat.
inline void drop_if_full(std::string& rows) {
  if (rows.size() >= CopyWriter::kChunkBytes) rows.clear();
}

}  // namespace catwalk::etl
