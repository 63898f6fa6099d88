#pragma once
// The rejects file of one input file: CSV with line,column,kind,message,raw.
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "validate.hpp"

namespace catwalk::etl {

class RejectsWriter {
 public:
  // Creates (or truncates) `path` and writes the header. Throws InputError when it cannot.
  explicit RejectsWriter(const std::string& path);
  // A file not close()d (another error stopped the file) gets what was buffered, and is closed
  // quietly: write errors then are not reported, the error being handled is.
  ~RejectsWriter();
  RejectsWriter(const RejectsWriter&) = delete;
  RejectsWriter& operator=(const RejectsWriter&) = delete;
  // Throws InputError when the file cannot be written (e.g. disk full).
  void write(const RowError& e, std::string_view raw_line);
  void close();  // flushes; throws InputError on a write error (e.g. disk full)
  const std::string& path() const { return path_; }

 private:
  void flush();  // writes the buffer out; throws InputError
  struct Close {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Close> file_;
  std::string buf_;
};

// Appends `v` as one CSV field, quoted when needed.
void append_csv_field(std::string& out, std::string_view v);

}  // namespace catwalk::etl
