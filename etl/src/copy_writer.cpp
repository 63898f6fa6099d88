#include "copy_writer.hpp"

#include <fmt/format.h>

#include <stdexcept>

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
    : tx_(c), copy_(c, truncate_then_copy_statement(c, spec)), sender_([this] { send_loop(); }) {
  rows_.reserve(kChunkBytes + (1 << 16));
  rows_.append(copy_binary::kHeader);
}

CopyWriter::~CopyWriter() {
  // The connection is the sending thread's until it has stopped; then copy_ and tx_ abort.
  pipe_.cancel();
  if (sender_.joinable()) sender_.join();
}

// Runs on sender_: the only user of the connection between the constructor and finish().
void CopyWriter::send_loop() {
  try {
    std::string chunk;
    while (pipe_.pop(chunk)) copy_.put(chunk);
  } catch (...) {
    send_error_ = std::current_exception();
    pipe_.cancel();  // the validating thread's next hand-off sees it and rethrows
  }
}

void CopyWriter::rethrow_send_error() {
  if (sender_.joinable()) sender_.join();
  if (send_error_) std::rethrow_exception(send_error_);
  throw std::logic_error("CopyWriter: the sending thread stopped without an error");
}

void CopyWriter::hand_off() {
  std::string next;
  next.reserve(kChunkBytes + (1 << 16));
  std::swap(next, rows_);
  if (!pipe_.push(std::move(next))) rethrow_send_error();
}

void CopyWriter::finish() {
  copy_binary::trailer(rows_);
  hand_off();
  pipe_.close();
  sender_.join();
  if (send_error_) std::rethrow_exception(send_error_);
  copy_.finish();
  tx_.commit();
}

}  // namespace catwalk::etl
