#include "record.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "catwalk/etl/errors.hpp"
#include "pg_server.hpp"

using namespace catwalk::etl;

namespace {
std::vector<std::string> split(std::string_view line, SplitStatus expect = SplitStatus::kOk) {
  std::vector<Field> fields;
  std::string scratch;
  auto r = split_fields(line, fields, scratch);
  CHECK(r.status == expect);
  std::vector<std::string> out;
  for (auto& f : fields) out.emplace_back(f.text);
  return out;
}
}  // namespace

TEST_CASE("split_fields: plain, quoted, escaped and empty fields") {
  struct Case {
    std::string line;
    std::vector<std::string> fields;
  };
  std::vector<Case> cases = {
      {"1,2,3", {"1", "2", "3"}},
      {R"(1,"Camo Onesie","Blend in",140)", {"1", "Camo Onesie", "Blend in", "140"}},
      {R"(1,"a, b","c ""q"" d",x)", {"1", "a, b", "c \"q\" d", "x"}},
      {R"(1,"Two  spaces")", {"1", "Two  spaces"}},
      {"1,,3", {"1", "", "3"}},
      {"1,2,", {"1", "2", ""}},
      {"", {""}},
      {R"("",x)", {"", "x"}},
      {R"(1,"""quoted""")", {"1", "\"quoted\""}},
  };
  for (auto& c : cases) {
    CAPTURE(c.line);
    CHECK(split(c.line) == c.fields);
  }
}

namespace {
// RFC 4180 as split_fields reads it, one byte at a time: the reference for random lines.
struct RefSplit {
  SplitStatus status = SplitStatus::kOk;
  std::vector<std::string> fields;
  std::vector<bool> quoted, escaped;
};
RefSplit reference_split(std::string_view line) {
  RefSplit r;
  std::size_t i = 0;
  while (true) {
    std::string text;
    if (i < line.size() && line[i] == '"') {
      bool closed = false, esc = false;
      for (++i; i < line.size(); ++i) {
        if (line[i] != '"') {
          text.push_back(line[i]);
        } else if (i + 1 < line.size() && line[i + 1] == '"') {
          text.push_back('"');
          esc = true;
          ++i;
        } else {
          closed = true;
          ++i;
          break;
        }
      }
      r.fields.push_back(text), r.quoted.push_back(true), r.escaped.push_back(esc);
      if (!closed) {
        r.status = SplitStatus::kRepaired;
        return r;
      }
      if (i == line.size()) return r;
      if (line[i] != ',') {
        r.status = SplitStatus::kMalformed;
        return r;
      }
      ++i;
    } else {
      while (i < line.size() && line[i] != ',') text.push_back(line[i++]);
      r.fields.push_back(text), r.quoted.push_back(false), r.escaped.push_back(false);
      if (i == line.size()) return r;
      ++i;
    }
    if (i == line.size()) {
      r.fields.emplace_back(), r.quoted.push_back(false), r.escaped.push_back(false);
      return r;
    }
  }
}
}  // namespace

TEST_CASE("split_fields: random lines split as a byte-by-byte reference does") {
  // Fields of every length around the 16 bytes that one compare covers, quoted or not, with
  // doubled quotes, stray quotes and commas, so every field end falls at every offset.
  std::uint64_t seed = 11;
  auto next = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::uint32_t>(seed >> 33);
  };
  std::size_t repaired = 0, malformed = 0, long_fields = 0;
  for (int i = 0; i < 30000; ++i) {
    std::string line;
    const std::uint32_t count = next() % 6 + 1;
    for (std::uint32_t f = 0; f < count; ++f) {
      if (f) line.push_back(',');
      const std::uint32_t length = next() % 40;
      const bool quoted = next() % 2;
      if (quoted) line.push_back('"');
      for (std::uint32_t k = 0; k < length; ++k) {
        const std::uint32_t r = next() % 40;
        line += r == 0 ? (quoted ? "\"\"" : "\"") : r == 1 ? "," : std::string(1, 'a' + r % 26);
      }
      long_fields += length >= 16;
      if (quoted && next() % 30) line.push_back('"');  // now and then left open
      if (next() % 50 == 0) line.push_back('x');       // now and then text after the quote
    }
    CAPTURE(line);
    std::vector<Field> fields;
    std::string scratch;
    const SplitResult got = split_fields(line, fields, scratch);
    const RefSplit want = reference_split(line);
    REQUIRE(got.status == want.status);
    repaired += want.status == SplitStatus::kRepaired;
    malformed += want.status == SplitStatus::kMalformed;
    if (want.status == SplitStatus::kMalformed) {
      CHECK(got.bad_field == want.fields.size() - 1);
      continue;
    }
    REQUIRE(fields.size() == want.fields.size());
    for (std::size_t k = 0; k < fields.size(); ++k) {
      CHECK(fields[k].text == want.fields[k]);
      CHECK(fields[k].quoted == want.quoted[k]);
      CHECK(fields[k].escaped == want.escaped[k]);
    }
  }
  CHECK(repaired > 100);
  CHECK(malformed > 100);
  CHECK(long_fields > 10000);
}

TEST_CASE("split_fields: a missing closing quote is closed at the end of the line") {
  CHECK(split(R"(10,6,"https://a/b?x=1","https://a/c?w=300)", SplitStatus::kRepaired) ==
        std::vector<std::string>{"10", "6", "https://a/b?x=1", "https://a/c?w=300"});
  CHECK(split(R"(1,"a ""b"" c)", SplitStatus::kRepaired) ==
        std::vector<std::string>{"1", "a \"b\" c"});
  // Open on a middle field: the rest of the line is swallowed, so the count comes out short.
  CHECK(split(R"(1,"open,2,3)", SplitStatus::kRepaired).size() == 2);
}

TEST_CASE("split_fields: text after a closing quote is malformed") {
  std::vector<Field> fields;
  std::string scratch;
  auto r = split_fields(R"(1,"ab"cd,3)", fields, scratch);
  CHECK(r.status == SplitStatus::kMalformed);
  CHECK(r.bad_field == 1);
}

TEST_CASE("valid_utf8") {
  CHECK(valid_utf8("plain ascii text that is long enough for the fast path"));
  CHECK(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x91\x9F"));
  CHECK_FALSE(valid_utf8("bad \xFF byte"));
  CHECK_FALSE(valid_utf8("truncated \xE2\x82"));
  CHECK_FALSE(valid_utf8("overlong \xC0\xAF"));
  CHECK_FALSE(valid_utf8("surrogate \xED\xA0\x80"));
  CHECK_FALSE(valid_utf8("too big \xF4\x90\x80\x80"));
}

namespace {
// The reference the line scan is held to: valid_utf8 and a byte-by-byte look for a backslash or
// a control character.
LineScan reference_scan(std::string_view s) {
  LineScan r;
  r.valid_utf8 = valid_utf8(s);
  if (!r.valid_utf8) return r;
  for (char c : s) r.json_specials |= static_cast<unsigned char>(c) < 0x20 || c == '\\';
  return r;
}
}  // namespace

TEST_CASE("scan_line: the SSE2 and portable paths agree with a byte-by-byte reference") {
  // Pieces placed at every offset around the 16-byte blocks: multi-byte characters across a
  // block's end, invalid sequences (a stray continuation, an overlong, a surrogate, past
  // U+10FFFF, a truncated sequence at the very end), and each special byte alone.
  const std::vector<std::string> pieces = {"\xC3\xA9",
                                           "\xE2\x82\xAC",
                                           "\xF0\x9F\x91\x9F",
                                           "\x80",
                                           "\xC0\xAF",
                                           "\xED\xA0\x80",
                                           "\xF4\x90\x80\x80",
                                           "\xE2\x82",
                                           "\xC3",
                                           "\\",
                                           std::string(1, 0),
                                           "\x1F",
                                           "\n",
                                           "\t",
                                           "\x7F",
                                           "\"",
                                           "\xEF\xBF\xBD\\",
                                           "\xFF",
                                           "\xF4\x8F\xBF\xBF"};
  std::size_t checked = 0, invalid = 0, special = 0;
  for (const auto& piece : pieces) {
    for (std::size_t before = 0; before <= 40; ++before) {
      for (std::size_t after : {0, 1, 7, 15, 16, 17, 33}) {
        const std::string line = std::string(before, 'a') + piece + std::string(after, 'b');
        CAPTURE(line);
        const LineScan want = reference_scan(line);
        for (const LineScan got : {scan_line(line), scan_line_portable(line)}) {
          CHECK(got.valid_utf8 == want.valid_utf8);
          CHECK(got.json_specials == want.json_specials);
        }
        ++checked;
        invalid += !want.valid_utf8;
        special += want.json_specials;
      }
    }
  }
  // Both outcomes were exercised many times (a reference that always said one thing would not).
  CHECK(invalid > 1000);
  CHECK(special > 1000);
  // Random lines of mostly ASCII with some multi-byte characters and the odd special or bad byte.
  std::uint64_t seed = 42;
  auto next = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::uint32_t>(seed >> 33);
  };
  for (int i = 0; i < 20000; ++i) {
    std::string line;
    const std::size_t n = next() % 200;
    while (line.size() < n) {
      const std::uint32_t r = next() % 1000;
      if (r < 900)
        line.push_back(static_cast<char>(0x20 + next() % 0x5F));
      else if (r < 990)
        line += pieces[next() % 3];
      else
        line += pieces[next() % pieces.size()];
    }
    CAPTURE(line);
    const LineScan want = reference_scan(line);
    CHECK(scan_line(line).valid_utf8 == want.valid_utf8);
    CHECK(scan_line(line).json_specials == want.json_specials);
    CHECK(scan_line_portable(line).valid_utf8 == want.valid_utf8);
    CHECK(scan_line_portable(line).json_specials == want.json_specials);
    ++checked;
  }
  CHECK(checked > 25000);
}

TEST_CASE("split_fields: escaped marks a quoted field that held a doubled quote") {
  std::vector<Field> fields;
  std::string scratch;
  split_fields(R"(1,"a ""b""","c",d"e,"open ""x)", fields, scratch);
  REQUIRE(fields.size() == 5);
  CHECK_FALSE(fields[0].escaped);
  CHECK(fields[1].escaped);
  CHECK(fields[1].text == "a \"b\"");
  CHECK_FALSE(fields[2].escaped);
  CHECK_FALSE(fields[3].quoted);  // an unquoted field may hold a quote: never json_plain
  CHECK(fields[4].escaped);       // the repaired last field, with a doubled quote
}

TEST_CASE("normalize_column_name") {
  CHECK(normalize_column_name("productId") == "product_id");
  CHECK(normalize_column_name(" name ") == "name");
  CHECK(normalize_column_name("styleId") == "style_id");
  CHECK(normalize_column_name("thumbnail_url") == "thumbnail_url");
  CHECK(normalize_column_name("Default_Price") == "default_price");
  CHECK(normalize_column_name("ID") == "id");
}

TEST_CASE("LineSource: BOM, CRLF, line numbers, long lines cut, NUL bytes flagged") {
  std::string dir = catwalk::test::make_temp_dir("catwalk-record");
  std::string path = dir + "/f.csv";
  {
    std::ofstream out(path, std::ios::binary);
    out << "\xEF\xBB\xBFid,name\r\n";
    out << "1,a\r\n";
    out << "2," << std::string(kMaxLineBytes + 10, 'x') << "\n";
    out << std::string("3,nul\0byte", 10) << "\n";
    out << "4,last-without-newline";
  }
  LineSource src(path);
  std::string_view line;
  REQUIRE(src.next(line));
  CHECK(line == "id,name");
  CHECK(src.line_number() == 1);
  REQUIRE(src.next(line));
  CHECK(line == "1,a");
  REQUIRE(src.next(line));
  CHECK(src.line_number() == 3);
  CHECK(line.size() == kMaxLineBytes + 1);  // cut, so validation rejects it as line_too_long
  REQUIRE(src.next(line));
  CHECK(src.line_number() == 4);
  CHECK_FALSE(valid_utf8(line));
  REQUIRE(src.next(line));
  CHECK(line == "4,last-without-newline");
  CHECK(src.line_number() == 5);
  CHECK_FALSE(src.next(line));
  CHECK(src.bytes_read() == std::filesystem::file_size(path));
  std::filesystem::remove_all(dir);
}

TEST_CASE("read_header_line") {
  std::string dir = catwalk::test::make_temp_dir("catwalk-header");
  {
    std::ofstream(dir + "/a.csv", std::ios::binary) << "\xEF\xBB\xBFid, name\r\n1,x\n";
    std::ofstream(dir + "/empty.csv", std::ios::binary) << "";
  }
  CHECK(read_header_line(dir + "/a.csv") == "id, name");
  CHECK_THROWS_AS(read_header_line(dir + "/empty.csv"), InputError);
  CHECK_THROWS_AS(read_header_line(dir + "/missing.csv"), InputError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("LineSource: every over-long line is cut to the limit, even across read boundaries") {
  // 40 lines of about 1.2 MiB: several cross the reader's 4 MiB refills. Each must come
  // out as kMaxLineBytes + 1 bytes (rejected as line_too_long), never shorter (loaded cut).
  std::string dir = catwalk::test::make_temp_dir("catwalk-longlines");
  std::string path = dir + "/photos.csv";
  constexpr int kLines = 44;
  const std::size_t long_len = kMaxLineBytes + kMaxLineBytes / 5;
  {
    std::ofstream out(path, std::ios::binary);
    out << "id,styleId,url,thumbnail_url\n";
    for (int i = 1; i <= kLines; ++i) {
      // Half well-formed, half with the last quote never closed.
      std::string head = std::to_string(i) + ",1,\"u\",\"";
      out << head << std::string(long_len - head.size() - (i % 2), 'x') << (i % 2 ? "" : "\"")
          << "\n";
    }
    out << "999,1,\"u\",\"t\"\n";
  }
  LineSource src(path);
  std::string_view line;
  REQUIRE(src.next(line));
  for (int i = 1; i <= kLines; ++i) {
    CAPTURE(i);
    REQUIRE(src.next(line));
    CHECK(src.line_number() == static_cast<std::uint64_t>(i + 1));
    CHECK(line.size() == kMaxLineBytes + 1);
    CHECK(line.starts_with(std::to_string(i) + ",1,"));
  }
  REQUIRE(src.next(line));
  CHECK(line == "999,1,\"u\",\"t\"");
  CHECK(src.line_number() == kLines + 2);
  CHECK_FALSE(src.next(line));
  std::filesystem::remove_all(dir);
}

namespace {
// Cuts `path` to `size` bytes.
void truncate_to(const std::string& path, std::uintmax_t size) {
  std::filesystem::resize_file(path, size);
}
}  // namespace

TEST_CASE("LineSource and read_header_line read a .gz as its decompressed text") {
  std::string dir = catwalk::test::make_temp_dir("catwalk-gz");
  std::string plain = dir + "/f.csv";
  {
    std::ofstream out(plain, std::ios::binary);
    out << "\xEF\xBB\xBFid,name\r\n";
    for (int i = 1; i <= 200000; ++i) out << i << ",name " << i * 7 << "\n";
    out << "last,line-without-newline";
  }
  REQUIRE(catwalk::test::run_command("gzip -k " + plain).exit_code == 0);
  CHECK(read_header_line(plain + ".gz") == "id,name");
  LineSource a(plain), b(plain + ".gz");
  std::string_view la, lb;
  std::uint64_t lines = 0;
  while (a.next(la)) {
    REQUIRE(b.next(lb));
    REQUIRE(la == lb);
    REQUIRE(a.line_number() == b.line_number());
    ++lines;
  }
  CHECK_FALSE(b.next(lb));
  CHECK(lines == 200002);
  CHECK(b.bytes_read() == std::filesystem::file_size(plain));  // decompressed bytes
  CHECK(b.input_bytes() == std::filesystem::file_size(plain + ".gz"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a truncated, corrupt or non-gzip .gz throws InputError, never reads as a short file") {
  std::string dir = catwalk::test::make_temp_dir("catwalk-badgz");
  std::string plain = dir + "/f.csv";
  {
    std::ofstream out(plain, std::ios::binary);
    out << "id,name\n";
    // Varied text, so the compressed stream is long and a cut falls inside the data.
    for (int i = 1; i <= 100000; ++i) out << i << ",n" << (i * 2654435761u) << "\n";
  }
  REQUIRE(catwalk::test::run_command("gzip -k " + plain).exit_code == 0);
  auto drain = [](const std::string& path) {
    LineSource src(path);
    std::string_view line;
    while (src.next(line)) {
    }
  };
  std::string gz = plain + ".gz";
  auto size = std::filesystem::file_size(gz);

  std::string cut = dir + "/cut.csv.gz";
  std::filesystem::copy_file(gz, cut);
  truncate_to(cut, size / 2);
  CHECK_THROWS_WITH_AS(drain(cut), doctest::Contains("truncated"), InputError);

  std::string flipped = dir + "/flipped.csv.gz";
  std::filesystem::copy_file(gz, flipped);
  {
    std::fstream f(flipped, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(size / 2));
    for (int i = 0; i < 64; ++i) f.put(static_cast<char>(0x55 ^ i));
  }
  CHECK_THROWS_WITH_AS(drain(flipped), doctest::Contains("corrupt"), InputError);

  std::string fake = dir + "/fake.csv.gz";
  std::filesystem::copy_file(plain, fake);
  CHECK_THROWS_WITH_AS(read_header_line(fake), doctest::Contains("not gzip data"), InputError);
  CHECK_THROWS_AS(drain(fake), InputError);
  std::ofstream(dir + "/empty.csv.gz", std::ios::binary) << "";
  CHECK_THROWS_AS(read_header_line(dir + "/empty.csv.gz"), InputError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("LineSource: lines across buffer refills match a plain split, byte for byte") {
  // Our own line splitter refills a 4 MiB buffer: lines of every length (empty to over the
  // limit) in LF and CRLF, with CRs and NULs inside, must come out as a plain split of the file
  // says: the text before each LF, one CR before it dropped, NUL as 0xFF, an over-long line cut
  // to kMaxLineBytes + 1 bytes, the last line without LF too. Seeded, so a failure repeats.
  std::string dir = catwalk::test::make_temp_dir("catwalk-refill");
  std::string path = dir + "/f.csv";
  std::string file;
  std::uint64_t rng = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
  };
  while (file.size() < (std::size_t{14} << 20)) {
    std::uint64_t r = next();
    std::size_t len = r % 8 == 0   ? kMaxLineBytes - 2 + next() % 5  // at the limit
                      : r % 8 == 1 ? next() % (3 * kMaxLineBytes)    // long
                      : r % 8 == 2 ? 0
                                   : next() % 300;
    std::size_t at = file.size();
    for (std::size_t k = 0; k < len; ++k) file.push_back(static_cast<char>('a' + k % 26));
    if (len > 0 && next() % 4 == 0) file[at + next() % len] = '\0';
    if (len > 0 && next() % 4 == 0) file[at + next() % len] = '\r';
    file += next() % 2 ? "\r\n" : "\n";
  }
  file += "last\r";
  { std::ofstream(path, std::ios::binary) << file; }
  std::vector<std::string> want;
  for (std::string_view rest = file; !rest.empty();) {
    std::size_t nl = rest.find('\n');
    std::string line(rest.substr(0, nl));
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    for (char& c : line) c = c == '\0' ? '\xFF' : c;
    if (line.size() > kMaxLineBytes) line.resize(kMaxLineBytes + 1);
    want.push_back(std::move(line));
  }
  LineSource src(path);
  std::string_view line;
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    REQUIRE(src.next(line));
    CHECK(src.line_number() == i + 1);
    REQUIRE(line.size() == want[i].size());
    if (line.size() > kMaxLineBytes) {
      // Past the cut only the length matters (a CR kept there reads as 0xFF).
      CHECK(line.substr(0, kMaxLineBytes) == std::string_view(want[i]).substr(0, kMaxLineBytes));
    } else {
      CHECK(line == want[i]);
    }
  }
  CHECK_FALSE(src.next(line));
  CHECK(src.bytes_read() == file.size());
  std::filesystem::remove_all(dir);
}
