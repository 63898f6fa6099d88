// fast-cpp-csv-parser copies file names with strncpy into fixed buffers, which GCC flags when
// inlined here; the truncation is its documented behaviour, not ours to fix.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-truncation"
#include <libfccp/csv.h>
#pragma GCC diagnostic pop

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "catwalk/etl/errors.hpp"
#include "record.hpp"

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
                          true});
        p = q + 1;
        closed = true;
        break;
      }
      if (!closed) {
        // The quirk: the closing quote is missing; the field ends with the line.
        if (escaped) scratch.append(p, end - p);
        fields.push_back({escaped ? std::string_view(scratch).substr(scratch_begin)
                                  : std::string_view(start, end - start),
                          true});
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
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF)
      n = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
      n = 2, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
      n = 3, cp = c & 0x07;
    else
      return false;
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    p += n + 1;
  }
  return true;
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

namespace {

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

class PlainInput : public RawInput {
 public:
  explicit PlainInput(const std::string& path)
      : path_(path), file_(std::fopen(path.c_str(), "rb")) {
    if (file_ == nullptr) {
      throw InputError(path + ": cannot open the file: " + std::strerror(errno));
    }
  }
  ~PlainInput() override { std::fclose(file_); }
  std::size_t read(char* out, std::size_t size) override {
    std::size_t n = std::fread(out, 1, size, file_);
    if (n == 0 && std::ferror(file_)) {
      throw InputError(path_ + ": cannot read the file: " + std::strerror(errno));
    }
    consumed_ += n;
    return n;
  }
  std::uint64_t consumed() const override { return consumed_; }

 private:
  std::string path_;
  std::FILE* file_;
  std::uint64_t consumed_ = 0;
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

namespace {

// Feeds the line reader. Cuts over-long lines and replaces NUL bytes (see LineSource).
class FilteringSource : public io::ByteSourceBase {
 public:
  FilteringSource(std::unique_ptr<RawInput> input,
                  std::shared_ptr<std::atomic<std::uint64_t>> counter,
                  std::shared_ptr<std::atomic<std::uint64_t>> consumed)
      : input_(std::move(input)),
        counter_(std::move(counter)),
        consumed_(std::move(consumed)),
        in_(kChunk) {}

  int read(char* out, int size) override {
    int produced = 0;
    while (produced < size) {
      if (pos_ == end_) {
        end_ = input_->read(in_.data(), in_.size());
        pos_ = 0;
        consumed_->store(input_->consumed(), std::memory_order_relaxed);
        if (end_ == 0) break;
        counter_->fetch_add(end_, std::memory_order_relaxed);
      }
      const char* chunk = in_.data() + pos_;
      std::size_t avail = end_ - pos_;
      const char* nl = static_cast<const char*>(std::memchr(chunk, '\n', avail));
      if (dropping_) {
        if (nl == nullptr) {
          pos_ = end_;
          continue;
        }
        pos_ += nl - chunk;  // keep the '\n' itself
        dropping_ = false;
        continue;
      }
      std::size_t seg = nl ? static_cast<std::size_t>(nl - chunk) + 1 : avail;  // incl. '\n'
      std::size_t text = nl ? seg - 1 : seg;
      std::size_t room_in_line = kMaxLineBytes + 1 - line_len_;
      bool over = text > room_in_line;
      std::size_t take = std::min<std::size_t>(over ? room_in_line : seg,
                                               static_cast<std::size_t>(size - produced));
      // Drop the rest of the line only once the kept part is complete: when the output window
      // ends first, the next read() goes on copying the same line.
      if (over && take == room_in_line) dropping_ = true;
      std::memcpy(out + produced, chunk, take);
      for (char* z = out + produced;
           (z = static_cast<char*>(std::memchr(z, '\0', out + produced + take - z)));) {
        *z = '\xFF';
      }
      // The line reader drops a CR before the end of a line: a cut line ending in one would come
      // out at exactly kMaxLineBytes and be loaded cut short. Its kept bytes past the limit are
      // never loaded nor shown (over-long lines are rejected, their first 4 KiB kept).
      if (dropping_ && take > 0 && out[produced + take - 1] == '\r')
        out[produced + take - 1] = '\xFF';
      if (take > 0 && out[produced + take - 1] == '\n')
        line_len_ = 0;
      else
        line_len_ += take;
      produced += static_cast<int>(take);
      pos_ += take;
    }
    return produced;
  }

 private:
  static constexpr std::size_t kChunk = 1 << 20;
  std::unique_ptr<RawInput> input_;
  std::shared_ptr<std::atomic<std::uint64_t>> counter_, consumed_;
  std::vector<char> in_;
  std::size_t pos_ = 0, end_ = 0;
  std::size_t line_len_ = 0;
  bool dropping_ = false;
};

}  // namespace

LineSource::LineSource(const std::string& path)
    : bytes_read_(std::make_shared<std::atomic<std::uint64_t>>(0)),
      input_bytes_(std::make_shared<std::atomic<std::uint64_t>>(0)) {
  auto input = open_input(path);
  std::error_code ec;
  file_size_ = std::filesystem::file_size(path, ec);
  std::unique_ptr<io::ByteSourceBase> source =
      std::make_unique<FilteringSource>(std::move(input), bytes_read_, input_bytes_);
  reader_ = std::make_unique<io::LineReader>(path, std::move(source));
}

LineSource::~LineSource() = default;

bool LineSource::next(std::string_view& line) {
  char* l = reader_->next_line();
  if (l == nullptr) return false;
  line_number_ = reader_->get_file_line();
  line = std::string_view(l);
  return true;
}

}  // namespace catwalk::etl
