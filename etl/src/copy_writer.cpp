#include "copy_writer.hpp"

#include <fmt/format.h>

#include "copy_binary.hpp"

namespace catwalk::etl {

namespace {
// Runs inside the writer's transaction, before its COPY starts (member order): truncates the
// table and returns the COPY statement.
std::string truncate_then_copy_statement(pg::Connection& c, const TableSpec& spec) {
  std::string table = c.quote_ident(spec.table);
  std::string cols;
  for (const auto& col : spec.columns) cols += c.quote_ident(col.name) + ", ";
  c.exec("TRUNCATE " + table);
  return fmt::format("COPY {} ({}pos) FROM STDIN WITH (FORMAT binary, FREEZE)", table, cols);
}
}  // namespace

CopyWriter::CopyWriter(pg::Connection& c, const TableSpec& spec)
    : tx_(c), copy_(c, truncate_then_copy_statement(c, spec)) {
  rows_.reserve(kChunkBytes + (1 << 16));
  rows_.append(copy_binary::kHeader);
}

void CopyWriter::send_if_full() {
  if (rows_.size() < kChunkBytes) return;
  copy_.put(rows_);
  rows_.clear();
}

void CopyWriter::finish() {
  copy_binary::trailer(rows_);
  copy_.put(rows_);
  rows_.clear();
  copy_.finish();
  tx_.commit();
}

}  // namespace catwalk::etl
