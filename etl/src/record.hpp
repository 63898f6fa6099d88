#pragma once
// Reading an export file: physical lines -> records of fields. One record per physical line
// (the exports never put a newline inside a field), read by LineSource.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace catwalk::etl {

class RawInput;  // a file's bytes, plain or decompressed (record.cpp)

// Lines longer than this are rejected as line_too_long (docs/csv-exports.md).
inline constexpr std::size_t kMaxLineBytes = 1 << 20;

struct Field {
  std::string_view text;
  bool quoted = false;
  // A quoted field that held a doubled quote: its text (in `scratch`) contains '"'. A quoted
  // field without one never does, which lets its JSON string skip the escaping scan.
  bool escaped = false;
};

enum class SplitStatus { kOk, kRepaired, kMalformed };

struct SplitResult {
  SplitStatus status = SplitStatus::kOk;
  std::size_t bad_field = 0;  // 0-based field index, for kMalformed
};

// Splits one line (no line terminator) into RFC 4180 fields. `""` inside a quoted field is one
// quote. A quoted field still open at the end of the line is closed there (kRepaired), the
// photos.csv quirk. Text after a closing quote other than a comma is kMalformed.
// Field texts point into `line` or into `scratch`, which must outlive them.
SplitResult split_fields(std::string_view line, std::vector<Field>& fields, std::string& scratch);

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF).
bool valid_utf8(std::string_view s);

// What one pass over a line finds: whether it is valid UTF-8 (as valid_utf8), and whether it
// holds a byte that a JSON string must escape other than '"': a backslash or a control character
// (below 0x20). A line without one needs no escaping scan of its quoted, unescaped fields.
struct LineScan {
  bool valid_utf8 = false;
  bool json_specials = false;
};
// 16 bytes at a time with SSE2 (always there on x86-64), else scan_line_portable().
LineScan scan_line(std::string_view s);
// The same result without SIMD: the path for other CPUs, and the reference the tests compare
// the SSE2 path with.
LineScan scan_line_portable(std::string_view s);

// `s` made safe to show a person (messages, the summary, JSON): each byte that is not part of
// valid UTF-8 becomes U+FFFD, control characters other than tab become '?', and text over
// `max_bytes` is cut at a character boundary and ends with "...". Always valid UTF-8.
std::string printable_text(std::string_view s, std::size_t max_bytes = std::string::npos);

// A header name as the loader matches it: trimmed, camelCase to snake_case, lower case.
// "productId" -> "product_id", " Name " -> "name".
std::string normalize_column_name(std::string_view raw);

// True for a gzip-compressed export (the name ends in ".gz"): read decompressed, streaming.
bool is_gzip_path(std::string_view path);

// Reads the first line of a file (the header), BOM and CR removed; a *.gz file is decompressed.
// Throws InputError when the file cannot be opened, is empty, or (gzip) is not valid gzip.
std::string read_header_line(const std::string& path);

// Physical lines of one file, streamed with flat memory (one 4 MiB buffer). Lines over
// kMaxLineBytes are returned cut to kMaxLineBytes + 1 bytes (the caller sees an over-long line to
// reject; the rest of it is skipped unread); NUL bytes become 0xFF so they fail UTF-8 validation.
// Our own splitter: the input is read straight into the buffer and each byte is looked at once
// by memchr for the line end; only the unfinished line moves when the buffer is refilled
// (fast-cpp-csv-parser's LineReader, used before, copied every byte three times and scanned it
// byte by byte: about 2 CPU-seconds of a full-scale load, bench/README.md).
// A *.gz path is decompressed as it is read (line numbers count decompressed lines); corrupt or
// truncated gzip data throws InputError from next().
class LineSource {
 public:
  explicit LineSource(const std::string& path);
  ~LineSource();
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;

  // The next line, without its terminator (LF or CRLF; a leading UTF-8 BOM is dropped).
  // Returns false at the end of the file. The view stays valid until the next call.
  bool next(std::string_view& line);
  // 1-based physical line number of the line last returned (the header is line 1).
  std::uint64_t line_number() const { return line_number_; }
  // Bytes of CSV text read so far (decompressed for gzip: the summary's "bytes").
  std::uint64_t bytes_read() const { return bytes_read_; }
  // Bytes of the file itself read so far (compressed for gzip), to compare with file_size().
  std::uint64_t input_bytes() const { return input_bytes_; }
  // The file's size on disk.
  std::uint64_t file_size() const { return file_size_; }

 private:
  static constexpr std::size_t kBufferBytes = std::size_t{4} << 20;  // > kMaxLineBytes + 2
  // Moves the unread part to the buffer's start and reads more after it; false at the end.
  bool fill();
  static_assert(kBufferBytes > kMaxLineBytes + 2, "a cut line must fit with room to read");
  std::unique_ptr<RawInput> input_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;  // the next line's first byte
  std::size_t scan_ = 0;   // searched for '\n' up to here
  std::size_t end_ = 0;    // bytes in the buffer
  bool eof_ = false;
  bool dropping_ = false;  // skipping the rest of an over-long line
  std::uint64_t bytes_read_ = 0, input_bytes_ = 0;
  std::uint64_t line_number_ = 0;
  std::uint64_t file_size_ = 0;
};

}  // namespace catwalk::etl
