// libFuzzer target for the loader's reading and validation: arbitrary bytes go through the same
// path an export file takes (header check, line reader, field splitter, row
// validator, rejects writer) and the contracts the README promises are checked on every line.
// Memory errors and undefined behaviour are caught by ASan/UBSan (the sanitize build); a broken
// contract prints what broke and aborts, so libFuzzer saves the input.
//
// Input: byte 0 picks the table (low 7 bits, modulo the number of export files) and whether the
// input carries its own header line (high bit; otherwise the table's canonical header is put in
// front). The rest is the file, except that FE n c with n > 0 stands for n * 16 KiB copies of
// byte c (FE 00 c is a literal FE then c), so that small inputs can hold the over-long lines that
// cross the line reader's refills of its 4 MiB buffer (at most kMaxExpanded bytes in all).
//
// Checked, per line of the file (the reference split is done here, independently):
//   - every physical line after the header reaches the validator exactly once, with its line
//     number: each is loaded or rejected (read = loaded + rejected, nothing lost or invented);
//   - a line of at most kMaxLineBytes (without its CR LF, NULs as 0xFF) arrives intact; a longer
//     one is rejected as line_too_long, never loaded cut short;
//   - a loaded line appends exactly one well-formed COPY binary row whose fields match value(c),
//     with text fields valid UTF-8 (one bad row would fail the whole COPY), numbers in range,
//     references to accepted parent ids, its line number as `pos`, and a new id;
//   - a rejected line leaves the COPY buffer as it was and names a known column (or none), with
//     a short message; the rejects file holds it as one CSV record whose raw field is the line
//     (its first 4 KiB for line_too_long);
//   - no exception escapes except InputError from the header check, which the loader documents.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "catwalk/etl/errors.hpp"
#include "record.hpp"
#include "rejects.hpp"
#include "table_spec.hpp"
#include "validate.hpp"

namespace etl = catwalk::etl;

namespace {

constexpr std::size_t kExpandUnit = 16 * 1024;
constexpr std::size_t kMaxExpanded = 40u << 20;  // several refills of the reader's 4 MiB
constexpr std::size_t kRejectRawMax = 4096;      // RejectsWriter keeps this much of a long line
constexpr std::size_t kMessageMax = 512;

[[noreturn]] void broken(const char* what, std::uint64_t line, std::string_view detail = {}) {
  std::fprintf(stderr, "\ncontract broken: %s (line %llu)", what,
               static_cast<unsigned long long>(line));
  if (!detail.empty()) {
    std::fprintf(stderr, ": %.*s", static_cast<int>(std::min<std::size_t>(detail.size(), 200)),
                 detail.data());
  }
  std::fputc('\n', stderr);
  std::abort();
}

#define CONTRACT(cond, line, ...)                                \
  do {                                                           \
    if (!(cond)) broken(#cond, line __VA_OPT__(, ) __VA_ARGS__); \
  } while (false)

// A file in memory that the loader opens by name, as it opens an export: no file system
// leftovers whatever happens to the process.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(memfd_create(name, 0)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  const std::string& path() const { return path_; }
  void write(std::string_view bytes) const {
    if (ftruncate(fd_, 0) != 0) std::abort();
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<std::size_t>(n);
    }
  }
  std::string read() const {
    std::string out;
    char buf[1 << 16];
    off_t at = 0;
    while (true) {
      ssize_t n = pread(fd_, buf, sizeof buf, at);
      if (n < 0) std::abort();
      if (n == 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
      at += n;
    }
  }

 private:
  int fd_;
  std::string path_;
};

// Parent ids every run validates against: dense ids except multiples of 7 (so both accepted
// references and orphans occur), and two ids past the bitmap (the sparse path).
const etl::IdSet& parent_ids() {
  static const etl::IdSet ids = [] {
    etl::IdSet s;
    for (std::int64_t i = 1; i <= 5000; ++i) {
      if (i % 7 != 0) s.insert(i);
    }
    s.insert(300'000'001);
    s.insert(2'147'483'647);
    return s;
  }();
  return ids;
}

std::string expand(const std::uint8_t* data, std::size_t size) {
  std::string out;
  out.reserve(size);
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0xFE && i + 2 < size) {
      std::size_t n = data[i + 1];
      char c = static_cast<char>(data[i + 2]);
      if (n == 0) {
        out.push_back('\xFE');
        out.push_back(c);
      } else if (out.size() + n * kExpandUnit <= kMaxExpanded) {
        out.append(n * kExpandUnit, c);
      }
      i += 2;
      continue;
    }
    out.push_back(static_cast<char>(data[i]));
  }
  return out;
}

// What each line after the header must arrive as: the file split at LF, one CR before the LF
// dropped, a BOM at the start of the file dropped, NUL bytes as 0xFF.
std::vector<std::string_view> reference_lines(std::string_view file) {
  std::vector<std::string_view> lines;
  if (file.starts_with("\xEF\xBB\xBF")) file.remove_prefix(3);
  while (!file.empty()) {
    std::size_t nl = file.find('\n');
    std::string_view line = file.substr(0, nl);
    file.remove_prefix(nl == std::string_view::npos ? file.size() : nl + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    lines.push_back(line);
  }
  return lines;
}

bool same_with_nul_as_ff(std::string_view got, std::string_view want) {
  if (got.size() != want.size()) return false;
  for (std::size_t i = 0; i < got.size(); ++i) {
    char w = want[i] == '\0' ? '\xFF' : want[i];
    if (got[i] != w) return false;
  }
  return true;
}

std::uint64_t be(std::string_view s, std::size_t at, int n) {
  std::uint64_t v = 0;
  for (int k = 0; k < n; ++k) v = (v << 8) | static_cast<unsigned char>(s[at + k]);
  return v;
}

std::string_view strip_zeros(std::string_view whole) {
  while (!whole.empty() && whole.front() == '0') whole.remove_prefix(1);
  return whole;
}

// Checks one COPY binary numeric field (no length prefix) against the decimal it was made of.
void check_numeric(std::string_view f, std::string_view decimal, std::uint64_t line) {
  CONTRACT(f.size() >= 8, line);
  std::size_t ndigits = be(f, 0, 2);
  auto weight = static_cast<std::int16_t>(be(f, 2, 2));
  std::size_t dscale = be(f, 6, 2);
  CONTRACT(be(f, 4, 2) == 0, line, decimal);  // positive
  CONTRACT(f.size() == 8 + 2 * ndigits, line, decimal);
  std::size_t dot = decimal.find('.');
  std::string_view frac = dot == std::string_view::npos ? "" : decimal.substr(dot + 1);
  CONTRACT(dscale == frac.size(), line, decimal);
  // Rebuild the digits: groups of 4 decimal digits from 10000^weight down.
  std::string whole, fraction;
  for (std::size_t i = 0; i < ndigits; ++i) {
    std::uint64_t g = be(f, 8 + 2 * i, 2);
    CONTRACT(g < 10000, line, decimal);
    int power = weight - static_cast<int>(i);
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04u", static_cast<unsigned>(g));
    (power >= 0 ? whole : fraction).append(buf);
    if (power < 0) CONTRACT(power == -1, line, decimal);  // two decimals fit one group
  }
  // Groups between the last digit group and 10000^0 are zeros not stored.
  for (int p = weight - static_cast<int>(ndigits) + 1; p > 0 && ndigits > 0; --p) whole += "0000";
  std::string want_frac(frac);
  while (!want_frac.empty() && want_frac.back() == '0') want_frac.pop_back();
  while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
  CONTRACT(strip_zeros(whole) == strip_zeros(decimal.substr(0, dot)), line, decimal);
  CONTRACT(fraction == want_frac, line, decimal);
}

// Checks the row validate() appended: structure, and each field against value(c).
void check_row(const etl::TableSpec& spec, const etl::RowValidator& v, std::string_view row,
               std::uint64_t line) {
  CONTRACT(row.size() >= 2, line);
  CONTRACT(be(row, 0, 2) == spec.columns.size() + 1, line);
  std::size_t at = 2;
  for (std::size_t c = 0; c <= spec.columns.size(); ++c) {
    CONTRACT(at + 4 <= row.size(), line);
    auto len = static_cast<std::int32_t>(be(row, at, 4));
    at += 4;
    if (c == spec.columns.size()) {  // pos
      CONTRACT(len == 4 && at + 4 == row.size(), line);
      CONTRACT(be(row, at, 4) == line, line);
      return;
    }
    const etl::ColumnSpec& col = spec.columns[c];
    const std::optional<std::string_view>& value = v.value(c);
    if (len == -1) {
      CONTRACT(!value.has_value(), line, col.name);
      CONTRACT(
          col.type == etl::ColumnType::kMoneyOrNull || col.type == etl::ColumnType::kTextOrNull,
          line, col.name);
      continue;
    }
    CONTRACT(len >= 0 && at + static_cast<std::size_t>(len) <= row.size(), line, col.name);
    CONTRACT(value.has_value(), line, col.name);
    std::string_view field = row.substr(at, static_cast<std::size_t>(len));
    at += static_cast<std::size_t>(len);
    switch (col.type) {
      case etl::ColumnType::kId:
      case etl::ColumnType::kRef:
      case etl::ColumnType::kPositiveInt:
      case etl::ColumnType::kQuantity:
      case etl::ColumnType::kBigId: {
        bool big = col.type == etl::ColumnType::kBigId;
        CONTRACT(field.size() == (big ? 8u : 4u), line, col.name);
        std::uint64_t n = be(field, 0, big ? 8 : 4);
        CONTRACT(
            std::to_string(n) == strip_zeros(*value) || (n == 0 && strip_zeros(*value).empty()),
            line, *value);
        CONTRACT(n <= (big ? std::uint64_t{INT64_MAX} : std::uint64_t{INT32_MAX}), line, *value);
        bool may_be_zero =
            col.type == etl::ColumnType::kRef || col.type == etl::ColumnType::kQuantity;
        CONTRACT(n > 0 || may_be_zero, line, *value);
        if (col.type == etl::ColumnType::kRef) {
          CONTRACT(parent_ids().contains(static_cast<std::int64_t>(n)), line, *value);
        }
        break;
      }
      case etl::ColumnType::kMoney:
      case etl::ColumnType::kMoneyOrNull:
        check_numeric(field, *value, line);
        break;
      case etl::ColumnType::kBool:
        CONTRACT(field.size() == 1 && (field[0] == 0 || field[0] == 1), line, col.name);
        CONTRACT(*value == (field[0] ? "true" : "false"), line, *value);
        break;
      case etl::ColumnType::kText:
      case etl::ColumnType::kTextOrNull:
        CONTRACT(field == *value, line, col.name);
        CONTRACT(etl::valid_utf8(field), line, col.name);
        break;
    }
  }
}

// Reads the rejects file back: one record per rejected line, in order, raw field exact.
void check_rejects(const MemFile& file, const std::vector<std::string>& raws,
                   const std::vector<bool>& too_long) {
  std::string text = file.read();
  std::string_view rest = text;
  std::vector<etl::Field> fields;
  std::string scratch;
  std::size_t record = 0;
  bool header = true;
  while (!rest.empty()) {
    std::size_t nl = rest.find('\n');
    CONTRACT(nl != std::string_view::npos, record, "rejects file: last record not terminated");
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
    if (header) {
      CONTRACT(line == "line,column,kind,message,raw", record, line);
      header = false;
      continue;
    }
    CONTRACT(record < raws.size(), record, "rejects file: more records than rejected lines");
    auto split = etl::split_fields(line, fields, scratch);
    CONTRACT(split.status == etl::SplitStatus::kOk && fields.size() == 5, record, line);
    std::string_view want = raws[record];
    if (too_long[record]) {
      want = want.substr(0, kRejectRawMax);
      CONTRACT(fields[2].text == "line_too_long", record, fields[2].text);
    }
    CONTRACT(fields[4].text == want, record, "rejects file: raw field is not the line");
    ++record;
  }
  CONTRACT(!header && record == raws.size(), record, "rejects file: records missing");
}

}  // namespace

// libFuzzer's entry point (declared here: libFuzzer ships no header for it).
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const MemFile input("catwalk-fuzz-input");
  static const MemFile rejects_file("catwalk-fuzz-rejects");
  const auto& specs = etl::table_specs();
  const etl::TableSpec& spec = specs[(data[0] & 0x7F) % specs.size()];
  bool own_header = (data[0] & 0x80) != 0;

  std::string file;
  if (!own_header) {
    for (const auto& c : spec.columns) file += (file.empty() ? "" : ",") + c.name;
    file += '\n';
  }
  file += expand(data + 1, size - 1);
  input.write(file);
  std::vector<std::string_view> want = reference_lines(file);

  // The header check: InputError is the documented answer to a header the loader cannot use.
  std::optional<etl::HeaderMap> header;
  try {
    header = etl::map_header(spec, etl::read_header_line(input.path()), input.path());
  } catch (const etl::InputError&) {
    return 0;
  }
  CONTRACT(!want.empty(), 1, "a header was accepted from an empty file");

  try {
    std::vector<const etl::IdSet*> parents;
    for (const auto& c : spec.columns)
      parents.push_back(c.parent.empty() ? nullptr : &parent_ids());
    etl::IdSet own_ids;
    etl::RowValidator validator(spec, *header, parents, own_ids);
    etl::RejectsWriter rejects(rejects_file.path());
    std::vector<std::string> rejected_raw;
    std::vector<bool> rejected_too_long;
    std::unordered_set<std::uint64_t> loaded_ids;

    etl::LineSource source(input.path());
    std::string_view line;
    CONTRACT(source.next(line), 1, "the header line was not read");
    std::string copy_out;
    std::size_t index = 1;  // into want: the line after the header
    etl::RowError error;
    bool repaired = false;
    while (source.next(line)) {
      std::uint64_t n = source.line_number();
      CONTRACT(index < want.size(), n, "a line the file does not hold");
      CONTRACT(n == index + 1, n, "line number");
      std::string_view expected = want[index];
      bool too_long = expected.size() > etl::kMaxLineBytes;
      if (too_long) {
        CONTRACT(line.size() > etl::kMaxLineBytes, n, "an over-long line arrived cut short");
      } else {
        CONTRACT(same_with_nul_as_ff(line, expected), n, "the line did not arrive intact");
      }

      std::size_t mark = copy_out.size();
      if (validator.validate(n, line, copy_out, repaired, error)) {
        CONTRACT(!too_long, n, "an over-long line was loaded");
        check_row(spec, validator, std::string_view(copy_out).substr(mark), n);
        // The id is the first column in every table; "01" and "1" are the same id.
        std::uint64_t id = std::strtoull(std::string(*validator.value(0)).c_str(), nullptr, 10);
        CONTRACT(loaded_ids.insert(id).second, n, "an id loaded twice");
      } else {
        CONTRACT(copy_out.size() == mark, n, "a rejected line left bytes in the COPY buffer");
        CONTRACT(error.line == n, n, "the reject names another line");
        CONTRACT(!too_long || error.kind == etl::RejectKind::kLineTooLong, n,
                 etl::reject_kind_name(error.kind));
        CONTRACT(static_cast<int>(error.kind) >= 0 &&
                     static_cast<int>(error.kind) < etl::kRejectKindCount,
                 n);
        bool known_column = error.column.empty();
        for (const auto& c : spec.columns) known_column = known_column || c.name == error.column;
        CONTRACT(known_column, n, error.column);
        CONTRACT(!error.message.empty() && error.message.size() <= kMessageMax, n, error.message);
        rejects.write(error, line);
        rejected_raw.emplace_back(line);
        rejected_too_long.push_back(error.kind == etl::RejectKind::kLineTooLong);
      }
      if (copy_out.size() > (1u << 22)) copy_out.clear();
      ++index;
    }
    CONTRACT(index == want.size(), index, "lines of the file never reached the validator");
    rejects.close();
    check_rejects(rejects_file, rejected_raw, rejected_too_long);
  } catch (const std::exception& e) {
    broken("an exception escaped reading or validation", 0, e.what());
  } catch (...) {
    broken("an exception escaped reading or validation", 0);
  }
  return 0;
}
