// Reading an export file: the line source (our own, flat-memory line splitter over plain or
// gzip input), the RFC 4180 field splitter, UTF-8 validation and header normalisation.
#include "record.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "catwalk/etl/errors.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace catwalk::etl {

SplitResult split_fields(std::string_view line, std::vector<Field>& fields, std::string& scratch) {
  fields.clear();
  scratch.clear();
  // Unescaped text is never longer than the line: with this reservation the views into
  // `scratch` stay valid while it grows.
  if (scratch.capacity() < line.size()) scratch.reserve(line.size());
  SplitResult result;
  const char* p = line.data();
  const char* end = p + line.size();
  while (true) {
    if (p < end && *p == '"') {
      ++p;
      const char* start = p;
      std::size_t scratch_begin = scratch.size();
      bool escaped = false;
      bool closed = false;
      while (p < end) {
        const char* q = static_cast<const char*>(std::memchr(p, '"', end - p));
        if (q == nullptr) break;
        if (q + 1 < end && q[1] == '"') {
          // A doubled quote: copy what came before plus one quote.
          if (!escaped)
            scratch.append(start, q - start), escaped = true;
          else
            scratch.append(p, q - p);
          scratch.push_back('"');
          p = q + 2;
          continue;
        }
        if (escaped) scratch.append(p, q - p);
        fields.push_back({escaped ? std::string_view(scratch).substr(scratch_begin)
                                  : std::string_view(start, q - start),
                          true, escaped});
        p = q + 1;
        closed = true;
        break;
      }
      if (!closed) {
        // The quirk: the closing quote is missing; the field ends with the line.
        if (escaped) scratch.append(p, end - p);
        fields.push_back({escaped ? std::string_view(scratch).substr(scratch_begin)
                                  : std::string_view(start, end - start),
                          true, escaped});
        result.status = SplitStatus::kRepaired;
        return result;
      }
      if (p == end) return result;
      if (*p != ',') {
        result.status = SplitStatus::kMalformed;
        result.bad_field = fields.size() - 1;
        return result;
      }
      ++p;
    } else {
      const char* comma = static_cast<const char*>(std::memchr(p, ',', end - p));
      const char* stop = comma ? comma : end;
      fields.push_back({std::string_view(p, stop - p), false});
      if (comma == nullptr) return result;
      p = comma + 1;
    }
    if (p == end) {  // a trailing comma: one more, empty field
      fields.push_back({std::string_view(p, 0), false});
      return result;
    }
  }
}

namespace {

// The length of the well-formed multi-byte UTF-8 sequence at `p` (its lead byte is >= 0x80),
// or 0 when it is not one (no overlongs, no surrogates, nothing past U+10FFFF).
std::size_t utf8_multibyte(const unsigned char* p, const unsigned char* end) {
  const unsigned char c = *p;
  int n;
  std::uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF)
    n = 1, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 2, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 3, cp = c & 0x07;
  else
    return 0;
  if (end - p <= n) return 0;
  for (int i = 1; i <= n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) {
    return 0;
  }
  return static_cast<std::size_t>(n) + 1;
}

bool is_json_special(unsigned char c) { return c < 0x20 || c == '\\'; }

}  // namespace

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // Fast path: eight ASCII bytes at a time.
    if (end - p >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        p += 8;
        continue;
      }
    }
    if (*p < 0x80) {
      ++p;
      continue;
    }
    const std::size_t n = utf8_multibyte(p, end);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

LineScan scan_line_portable(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  LineScan r;
  bool specials = false;
  while (p < end) {
    if (*p < 0x80) {
      specials |= is_json_special(*p);
      ++p;
      continue;
    }
    const std::size_t n = utf8_multibyte(p, end);
    if (n == 0) return r;
    p += n;
  }
  r.valid_utf8 = true;
  r.json_specials = specials;
  return r;
}

LineScan scan_line(std::string_view s) {
#if defined(__SSE2__)
  // Per 16 bytes: their high bits (any non-ASCII byte goes to the scalar decoder, one sequence,
  // then back here) and whether one is a backslash or below 0x20 (min(c, 0x1F) == c). A byte
  // >= 0x80 is never such a byte, so a block's special bits count whatever else it holds, and
  // a block seen twice (after a multi-byte sequence) only sets them again.
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  const __m128i k1f = _mm_set1_epi8(0x1F);
  const __m128i kBackslash = _mm_set1_epi8('\\');
  int specials = 0;
  LineScan r;
  while (end - p >= 16) {
    const __m128i v = _mm_loadu_si128(static_cast<const __m128i*>(static_cast<const void*>(p)));
    const __m128i special =
        _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(v, k1f), v), _mm_cmpeq_epi8(v, kBackslash));
    specials |= _mm_movemask_epi8(special);
    const int high = _mm_movemask_epi8(v);
    if (high == 0) {
      p += 16;
      continue;
    }
    p += __builtin_ctz(static_cast<unsigned>(high));  // the first non-ASCII byte
    const std::size_t n = utf8_multibyte(p, end);
    if (n == 0) return r;
    p += n;
  }
  // The last 0-15 bytes start at a sequence boundary: the portable scan finishes them.
  const LineScan tail = scan_line_portable(
      std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p)));
  if (!tail.valid_utf8) return r;
  r.valid_utf8 = true;
  r.json_specials = specials != 0 || tail.json_specials;
  return r;
#else
  return scan_line_portable(s);
#endif
}

namespace {
// Length of the valid UTF-8 sequence starting at `p` (at most `left` bytes), or 0 if invalid.
std::size_t utf8_sequence_length(const char* p, std::size_t left) {
  auto c = static_cast<unsigned char>(*p);
  std::size_t n = c < 0x80                 ? 1
                  : c >= 0xC2 && c <= 0xDF ? 2
                  : c >= 0xE0 && c <= 0xEF ? 3
                  : c >= 0xF0 && c <= 0xF4 ? 4
                                           : 0;
  if (n == 0 || n > left) return 0;
  return valid_utf8(std::string_view(p, n)) ? n : 0;
}
}  // namespace

std::string printable_text(std::string_view s, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes) + 3);
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence_length(s.data() + i, s.size() - i);
    std::string_view piece = n == 0 ? std::string_view("\xEF\xBF\xBD") : s.substr(i, n);
    if (n == 1 && (static_cast<unsigned char>(s[i]) < 0x20 || s[i] == 0x7F) && s[i] != '\t' &&
        s[i] != '\n') {
      piece = "?";
    }
    if (out.size() + piece.size() > max_bytes) {
      out += "...";
      break;
    }
    out.append(piece);
    i += n == 0 ? 1 : n;
  }
  return out;
}

std::string normalize_column_name(std::string_view raw) {
  std::size_t b = 0, e = raw.size();
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (b < e && space(raw[b])) ++b;
  while (e > b && space(raw[e - 1])) --e;
  std::string out;
  char prev = 0;
  for (std::size_t i = b; i < e; ++i) {
    char c = raw[i];
    if (c >= 'A' && c <= 'Z') {
      if ((prev >= 'a' && prev <= 'z') || (prev >= '0' && prev <= '9')) out.push_back('_');
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back(c == ' ' || c == '-' ? '_' : c);
    }
    prev = c;
  }
  return out;
}

// The bytes of an export file, plain or gzip-compressed (by its name: *.gz), read in order.
// read() returns 0 at the end and throws InputError when the data cannot be read: a corrupt or
// truncated gzip stream must never look like a shorter file.
class RawInput {
 public:
  virtual ~RawInput() = default;
  virtual std::size_t read(char* out, std::size_t size) = 0;
  // Bytes of the file itself consumed so far (compressed bytes for gzip), for progress.
  virtual std::uint64_t consumed() const = 0;
};

namespace {

class PlainInput : public RawInput {
 public:
  explicit PlainInput(const std::string& path)
      : path_(path), file_(std::fopen(path.c_str(), "rb")) {
    if (file_ == nullptr) {
      throw InputError(path + ": cannot open the file: " + std::strerror(errno));
    }
    ::posix_fadvise(::fileno(file_), 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  ~PlainInput() override { std::fclose(file_); }
  std::size_t read(char* out, std::size_t size) override {
    // Asks the kernel for the bytes ahead before they are needed: an export not (or no longer)
    // in the page cache was read on demand, and during a load the disk is busy writing what
    // PostgreSQL wrote, so the reading thread waited on it (about 3 s of a full-scale load,
    // measured off-CPU; bench/README.md). Hints only: an error changes nothing.
    while (prefetched_ < consumed_ + size + kAheadBytes) {
      ::posix_fadvise(::fileno(file_), static_cast<off_t>(prefetched_),
                      static_cast<off_t>(kHintBytes), POSIX_FADV_WILLNEED);
      prefetched_ += kHintBytes;
    }
    std::size_t n = std::fread(out, 1, size, file_);
    if (n == 0 && std::ferror(file_)) {
      throw InputError(path_ + ": cannot read the file: " + std::strerror(errno));
    }
    consumed_ += n;
    return n;
  }
  std::uint64_t consumed() const override { return consumed_; }

 private:
  // Kept 64 MiB ahead of what was read, in hints of 16 MiB.
  static constexpr std::uint64_t kAheadBytes = std::uint64_t{64} << 20;
  static constexpr std::uint64_t kHintBytes = std::uint64_t{16} << 20;
  std::string path_;
  std::FILE* file_;
  std::uint64_t consumed_ = 0;
  std::uint64_t prefetched_ = 0;  // a read-ahead hint was given up to here
};

// Streams the decompressed bytes with zlib's gz* interface: no temporary copy, memory bounded by
// zlib's buffers. Concatenated gzip members are read as one stream (as gunzip does).
class GzipInput : public RawInput {
 public:
  explicit GzipInput(const std::string& path) : path_(path) {
    // zlib reads a file that is not gzip at all as plain text: check the magic bytes first.
    unsigned char magic[2] = {0, 0};
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) throw InputError(path + ": cannot open the file: " + std::strerror(errno));
    std::size_t got = std::fread(magic, 1, 2, f);
    std::fclose(f);
    if (got == 0) throw InputError(path + ": the file is empty; expected gzip data");
    if (got < 2 || magic[0] != 0x1f || magic[1] != 0x8b) {
      throw InputError(path +
                       ": not gzip data (the name ends in .gz); rename it to .csv if it is "
                       "plain text, or compress it with gzip");
    }
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr)
      throw InputError(path + ": cannot open the file: " + std::strerror(errno));
    gzbuffer(file_, 1 << 18);
  }
  ~GzipInput() override { gzclose(file_); }
  std::size_t read(char* out, std::size_t size) override {
    int n = gzread(file_, out, static_cast<unsigned>(std::min<std::size_t>(size, 1u << 30)));
    int err = Z_OK;
    const char* msg = gzerror(file_, &err);
    if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) {
      // Z_BUF_ERROR at the end: the stream stops before its end marker (a cut download).
      std::string why = err == Z_BUF_ERROR ? "the gzip data is truncated (it ends before its end "
                                             "marker; was the copy cut short?)"
                                           : std::string("the gzip data is corrupt (") + msg + ")";
      throw InputError(
          fmt::format("{}: {}, after {} bytes of uncompressed data; nothing was "
                      "published",
                      path_, why, produced_));
    }
    produced_ += static_cast<std::uint64_t>(n);
    return static_cast<std::size_t>(n);
  }
  std::uint64_t consumed() const override {
    z_off_t at = gzoffset(file_);
    return at < 0 ? 0 : static_cast<std::uint64_t>(at);
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  std::uint64_t produced_ = 0;
};

std::unique_ptr<RawInput> open_input(const std::string& path) {
  if (is_gzip_path(path)) return std::make_unique<GzipInput>(path);
  return std::make_unique<PlainInput>(path);
}

}  // namespace

bool is_gzip_path(std::string_view path) { return path.ends_with(".gz"); }

std::string read_header_line(const std::string& path) {
  auto in = open_input(path);
  std::string line;
  line.reserve(256);
  char buf[4096];
  bool ended = false;  // a '\n' was seen
  while (!ended) {
    // Byte by byte from a small buffer: the header is short, and nothing past it is needed.
    std::size_t n = in->read(buf, sizeof buf);
    if (n == 0) break;
    const char* nl = static_cast<const char*>(std::memchr(buf, '\n', n));
    line.append(buf, nl ? static_cast<std::size_t>(nl - buf) : n);
    ended = nl != nullptr;
    if (line.size() > kMaxLineBytes) throw InputError(path + ": the header line is over 1 MiB");
  }
  if (line.empty() && !ended)
    throw InputError(path + ": the file is empty; expected a header line");
  if (line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.find('\r') != std::string::npos) {
    // Not a header with a stray byte: the whole file read as one line. Say so, briefly.
    throw InputError(path +
                     ": lines end with a carriage return (CR) alone, the old Mac style; the "
                     "loader reads LF or CRLF line ends. Convert the file, e.g. tr '\\r' '\\n'");
  }
  return line;
}

LineSource::LineSource(const std::string& path) : input_(open_input(path)), buffer_(kBufferBytes) {
  std::error_code ec;
  file_size_ = std::filesystem::file_size(path, ec);
  // A UTF-8 byte order mark before the header is dropped: read until 3 bytes are in (or the end).
  while (end_ < 3 && fill()) {
  }
  if (end_ >= 3 && std::memcmp(buffer_.data(), "\xEF\xBB\xBF", 3) == 0) begin_ = scan_ = 3;
}

LineSource::~LineSource() = default;

bool LineSource::fill() {
  if (eof_) return false;
  if (begin_ > 0) {
    // Only the start of the line being read moves (at most kMaxLineBytes + 1 bytes, usually a
    // few hundred): the rest of the buffer was consumed.
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    scan_ -= begin_;
    begin_ = 0;
  }
  const std::size_t got = input_->read(buffer_.data() + end_, buffer_.size() - end_);
  input_bytes_ = input_->consumed();
  if (got == 0) {
    eof_ = true;
    return false;
  }
  end_ += got;
  bytes_read_ += got;
  return true;
}

bool LineSource::next(std::string_view& line) {
  char* const buf = buffer_.data();
  for (;;) {
    const char* nl = static_cast<const char*>(std::memchr(buf + scan_, '\n', end_ - scan_));
    if (dropping_) {
      // The rest of an over-long line already returned cut: skipped unread.
      if (nl == nullptr) {
        begin_ = scan_ = end_;
        if (!fill()) return false;
        continue;
      }
      begin_ = scan_ = static_cast<std::size_t>(nl - buf) + 1;
      dropping_ = false;
      continue;
    }
    std::size_t len;
    std::size_t next_begin;
    if (nl != nullptr) {
      len = static_cast<std::size_t>(nl - buf) - begin_;
      next_begin = len + begin_ + 1;
    } else if (end_ - begin_ >= kMaxLineBytes + 2) {
      // No end in sight and already too long even without a CR before its LF: it is returned
      // cut (over the limit, so validation rejects it) and the rest is skipped.
      len = kMaxLineBytes + 1;
      next_begin = begin_ + len;
      dropping_ = true;
    } else {
      scan_ = end_;
      if (fill()) continue;
      if (begin_ == end_) return false;
      len = end_ - begin_;  // the last line, without a newline
      next_begin = end_;
    }
    char* l = buf + begin_;
    if (!dropping_ && len > 0 && l[len - 1] == '\r') --len;  // CRLF
    if (len > kMaxLineBytes) {
      // Cut to one byte over the limit: validation rejects it as line_too_long; nothing past
      // the cut is ever loaded or shown. A CR there would read as a line end: flagged instead.
      len = kMaxLineBytes + 1;
      if (l[len - 1] == '\r') l[len - 1] = '\xFF';
    }
    // NUL bytes become 0xFF, which UTF-8 validation rejects (header comment).
    for (char* z = l; (z = static_cast<char*>(std::memchr(z, '\0', l + len - z)));) *z = '\xFF';
    begin_ = scan_ = next_begin;
    ++line_number_;
    line = std::string_view(l, len);
    return true;
  }
}

}  // namespace catwalk::etl
