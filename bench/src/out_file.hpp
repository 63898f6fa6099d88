// A write-only file with a large user-space buffer: the generator appends a few bytes at a
// time, and one fwrite per few MiB keeps it disk-bound instead of call-bound.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace catwalk::bench {

class OutFile {
 public:
  static constexpr std::size_t kBufferBytes = 8u << 20;

  explicit OutFile(const std::filesystem::path& path) : path_(path), buf_(kBufferBytes) {
    file_ = std::fopen(path.c_str(), "wb");
    if (file_ == nullptr) {
      throw std::runtime_error("cannot create " + path.string() + ": " + std::strerror(errno) +
                               " (does the output directory exist and is it writable?)");
    }
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile() {
    // Destructor path is for unwinding only; close() reports errors on the normal path.
    if (file_ != nullptr) {
      std::fclose(file_);
    }
  }

  void put(char c) {
    if (used_ == buf_.size()) {
      flush();
    }
    buf_[used_++] = c;
  }

  void write(std::string_view s) {
    if (buf_.size() - used_ < s.size()) {
      flush();
      if (s.size() > buf_.size()) {
        raw_write(s.data(), s.size());
        return;
      }
    }
    std::memcpy(buf_.data() + used_, s.data(), s.size());
    used_ += s.size();
  }

  void write_int(std::int64_t v) {
    char tmp[24];
    auto [end, ec] = std::to_chars(tmp, tmp + sizeof tmp, v);
    write(std::string_view(tmp, static_cast<std::size_t>(end - tmp)));
  }

  // RFC 4180: wrap in double quotes, a quote inside becomes two.
  void write_quoted(std::string_view s) {
    put('"');
    if (s.find('"') == std::string_view::npos) {
      write(s);
    } else {
      for (char c : s) {
        if (c == '"') put('"');
        put(c);
      }
    }
    put('"');
  }

  std::uint64_t bytes() const { return flushed_ + used_; }

  void close() {
    flush();
    if (std::fclose(file_) != 0) {
      file_ = nullptr;
      throw std::runtime_error("closing " + path_.string() + ": " + std::strerror(errno));
    }
    file_ = nullptr;
  }

 private:
  void flush() {
    raw_write(buf_.data(), used_);
    used_ = 0;
  }
  void raw_write(const char* p, std::size_t n) {
    if (n != 0 && std::fwrite(p, 1, n, file_) != n) {
      throw std::runtime_error("writing " + path_.string() + ": " + std::strerror(errno) +
                               " (disk full?)");
    }
    flushed_ += n;
  }

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  std::vector<char> buf_;
  std::size_t used_ = 0;
  std::uint64_t flushed_ = 0;
};

}  // namespace catwalk::bench
