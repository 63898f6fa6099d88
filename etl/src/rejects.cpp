#include "rejects.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "catwalk/etl/errors.hpp"

namespace catwalk::etl {

void append_csv_field(std::string& out, std::string_view v) {
  if (v.find_first_of(",\"\r\n") == std::string_view::npos) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (char c : v) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
}

RejectsWriter::RejectsWriter(const std::string& path)
    : path_(path), file_(std::fopen(path.c_str(), "wb")) {
  if (!file_) {
    throw InputError(fmt::format("cannot write the rejects file {}: {}; pass --rejects-dir DIR",
                                 path, std::strerror(errno)));
  }
  buf_ = "line,column,kind,message,raw\n";
}

RejectsWriter::~RejectsWriter() {
  if (file_) std::fwrite(buf_.data(), 1, buf_.size(), file_.get());  // then closed, unchecked
}

void RejectsWriter::write(const RowError& e, std::string_view raw_line) {
  constexpr std::size_t kRawMax = 4096;  // an over-long line is kept in part, not 1 MiB of it
  fmt::format_to(std::back_inserter(buf_), "{},", e.line);
  append_csv_field(buf_, e.column);
  buf_.push_back(',');
  buf_.append(reject_kind_name(e.kind));
  buf_.push_back(',');
  append_csv_field(buf_, e.message);
  buf_.push_back(',');
  append_csv_field(buf_,
                   e.kind == RejectKind::kLineTooLong ? raw_line.substr(0, kRawMax) : raw_line);
  buf_.push_back('\n');
  if (buf_.size() > (1 << 16)) flush();
}

void RejectsWriter::flush() {
  if (std::fwrite(buf_.data(), 1, buf_.size(), file_.get()) != buf_.size()) {
    int err = errno;
    file_.reset();
    throw InputError(
        fmt::format("cannot write the rejects file {}: {}; free some room or pass "
                    "--rejects-dir DIR",
                    path_, std::strerror(err)));
  }
  buf_.clear();
}

void RejectsWriter::close() {
  if (!file_) return;
  flush();
  errno = 0;
  bool failed = std::fflush(file_.get()) != 0 || std::ferror(file_.get());
  int err = errno;
  failed |= std::fclose(file_.release()) != 0;
  if (failed) {
    throw InputError(
        fmt::format("cannot write the rejects file {}: {}; free some room or pass "
                    "--rejects-dir DIR",
                    path_, std::strerror(err ? err : errno)));
  }
}

}  // namespace catwalk::etl
