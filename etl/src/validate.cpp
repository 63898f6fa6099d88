#include "validate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "catwalk/etl/errors.hpp"
#include "copy_binary.hpp"

namespace catwalk::etl {

std::string_view reject_kind_name(RejectKind k) {
  switch (k) {
    case RejectKind::kColumnCount:
      return "column_count";
    case RejectKind::kBadValue:
      return "bad_value";
    case RejectKind::kDuplicateId:
      return "duplicate_id";
    case RejectKind::kOrphan:
      return "orphan";
    case RejectKind::kEncoding:
      return "encoding";
    case RejectKind::kLineTooLong:
      return "line_too_long";
  }
  return "bad_value";
}

bool IdSet::contains(std::int64_t id) const {
  if (id >= 0 && id < kBitmapLimit) {
    auto w = static_cast<std::size_t>(id >> 6);
    return w < bits_.size() && (bits_[w] >> (id & 63) & 1);
  }
  return sparse_.count(id) != 0;
}

bool IdSet::insert(std::int64_t id) {
  if (id >= 0 && id < kBitmapLimit) {
    auto w = static_cast<std::size_t>(id >> 6);
    if (w >= bits_.size()) bits_.resize(std::max(w + 1, bits_.size() * 2), 0);
    std::uint64_t mask = std::uint64_t{1} << (id & 63);
    if (bits_[w] & mask) return false;
    bits_[w] |= mask;
  } else if (!sparse_.insert(id).second) {
    return false;
  }
  ++count_;
  return true;
}

void IdSet::finalize() {
  prefix_.assign(bits_.size() + 1, 0);
  for (std::size_t w = 0; w < bits_.size(); ++w) {
    prefix_[w + 1] = prefix_[w] + static_cast<std::uint32_t>(__builtin_popcountll(bits_[w]));
  }
  sparse_sorted_.assign(sparse_.begin(), sparse_.end());
  std::sort(sparse_sorted_.begin(), sparse_sorted_.end());
}

std::uint32_t IdSet::rank(std::int64_t id) const {
  std::uint32_t dense_total = prefix_.empty() ? 0 : prefix_.back();
  if (id >= 0 && id < kBitmapLimit) {
    auto w = static_cast<std::size_t>(id >> 6);
    std::uint64_t below = bits_[w] & ((std::uint64_t{2} << (id & 63)) - 1);
    return prefix_[w] + static_cast<std::uint32_t>(__builtin_popcountll(below));
  }
  auto it = std::lower_bound(sparse_sorted_.begin(), sparse_sorted_.end(), id);
  // Negative ids (never valid) would sort first; exports only hold positive ones.
  return dense_total + static_cast<std::uint32_t>(it - sparse_sorted_.begin()) + 1;
}

HeaderMap map_header(const TableSpec& spec, std::string_view header_line, const std::string& path) {
  std::vector<Field> fields;
  std::string scratch;
  split_fields(header_line, fields, scratch);
  std::vector<std::string> names;
  for (const auto& f : fields) names.push_back(normalize_column_name(f.text));
  // Any name twice is ambiguous (which one holds the values?), even one the loader ignores.
  // By hash, not pair by pair: a hostile header of 150,000 names made the pairs a hang.
  std::unordered_map<std::string_view, std::size_t> first_at;
  first_at.reserve(names.size());
  for (std::size_t j = 0; j < names.size(); ++j) {
    if (names[j].empty()) continue;
    auto [at, fresh] = first_at.emplace(names[j], j);
    if (!fresh) {
      throw InputError(
          fmt::format("{}: column \"{}\" appears twice in the header (fields {} and {}); keep one",
                      path, printable_text(names[j], 80), at->second + 1, j + 1));
    }
  }
  HeaderMap map;
  map.field_count = names.size();
  for (const auto& col : spec.columns) {
    std::size_t found = names.size();
    for (std::size_t i = 0; i < names.size() && found == names.size(); ++i) {
      if (names[i] == col.name) found = i;
    }
    if (found == names.size()) {
      // The header as found, shown bounded and printable: it may be anything (binary bytes).
      std::string have;
      for (const auto& n : names) have += (have.empty() ? "" : ",") + n;
      have = printable_text(have, 200);
      throw InputError(fmt::format(
          "{}: required column \"{}\" is missing from the header (found: {}). Possible fixes: "
          "add the column, or check the file is the {} export",
          path, col.name, have, spec.file));
    }
    map.index.push_back(found);
  }
  return map;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

// One pass: each byte checked and accumulated at once (a digit check, then std::from_chars,
// took about 70 M calls' worth of CPU at full scale). 19 digits fit in 64 unsigned bits, so
// the only overflow is past INT64_MAX, which from_chars also refused.
bool parse_decimal_int(std::string_view s, std::int64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  std::uint64_t n = 0;
  for (char c : s) {
    const auto d = static_cast<unsigned>(static_cast<unsigned char>(c) - '0');
    if (d > 9) return false;
    n = n * 10 + d;
  }
  if (n > static_cast<std::uint64_t>(INT64_MAX)) return false;
  out = static_cast<std::int64_t>(n);
  return true;
}

namespace {

// Up to 12 integer digits and 2 decimals: what numeric(14,2) holds exactly.
bool valid_money(std::string_view s) {
  std::size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  if (whole.empty() || whole.size() > 12) return false;
  for (char c : whole) {
    if (c < '0' || c > '9') return false;
  }
  if (dot == std::string_view::npos) return true;
  std::string_view frac = s.substr(dot + 1);
  if (frac.empty() || frac.size() > 2) return false;
  for (char c : frac) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool is_zero_money(std::string_view s) {
  for (char c : s) {
    if (c != '0' && c != '.') return false;
  }
  return true;
}

bool equals_ci(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != b[i]) return false;
  }
  return true;
}

// A value quoted for a message: at most about 40 bytes, never a split UTF-8 character.
std::string shown(std::string_view v) { return fmt::format("\"{}\"", printable_text(v, 40)); }

}  // namespace

void copy_binary::numeric_field(std::string& out, std::string_view decimal) {
  std::size_t dot = decimal.find('.');
  std::string_view whole = decimal.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? "" : decimal.substr(dot + 1);
  while (!whole.empty() && whole.front() == '0') whole.remove_prefix(1);
  auto group = [](std::string_view d) {
    std::uint16_t g = 0;
    for (char c : d) g = static_cast<std::uint16_t>(g * 10 + (c - '0'));
    return g;
  };
  std::uint16_t digits[5];  // 12 integer digits: 3 groups, plus one for the fraction
  int n = 0;
  std::size_t first = whole.size() % 4 == 0 ? 4 : whole.size() % 4;
  for (std::size_t at = 0; at < whole.size(); at += (at == 0 ? first : 4)) {
    digits[n++] = group(whole.substr(at, at == 0 ? first : 4));
  }
  int weight = n - 1;  // the first group's power of 10000
  if (!frac.empty()) {
    std::uint16_t g = group(frac);
    for (std::size_t i = frac.size(); i < 4; ++i) g = static_cast<std::uint16_t>(g * 10);
    digits[n++] = g;
  }
  int begin = 0;
  while (begin < n && digits[begin] == 0) ++begin, --weight;  // only for 0.xx
  while (n > begin && digits[n - 1] == 0) --n;
  if (begin == n) weight = 0;  // zero
  int ndigits = n - begin;
  be32(out, static_cast<std::uint32_t>(8 + 2 * ndigits));
  be16(out, static_cast<std::uint16_t>(ndigits));
  be16(out, static_cast<std::uint16_t>(static_cast<std::int16_t>(weight)));
  be16(out, 0);                                        // sign: positive
  be16(out, static_cast<std::uint16_t>(frac.size()));  // display scale
  for (int i = begin; i < n; ++i) be16(out, digits[i]);
}

RowValidator::RowValidator(const TableSpec& spec, HeaderMap header,
                           std::vector<const IdSet*> parents, IdSet& own_ids)
    : spec_(spec), header_(std::move(header)), parents_(std::move(parents)), own_ids_(own_ids) {}

bool RowValidator::fail(RowError& e, std::uint64_t line, std::size_t spec_col, RejectKind kind,
                        std::string message) {
  e.line = line;
  e.column = spec_col < spec_.columns.size() ? spec_.columns[spec_col].name : "";
  e.kind = kind;
  e.message = std::move(message);
  return false;
}

bool RowValidator::validate(std::uint64_t line_number, std::string_view line, std::string& copy_out,
                            bool& repaired, RowError& error) {
  constexpr std::size_t kWholeLine = static_cast<std::size_t>(-1);
  repaired = false;
  if (line.size() > kMaxLineBytes) {
    return fail(
        error, line_number, kWholeLine, RejectKind::kLineTooLong,
        fmt::format("line is longer than {} bytes; split or shorten the record", kMaxLineBytes));
  }
  // One pass: the encoding, and whether any field could need JSON escaping (json_plain()).
  const LineScan scan = scan_line(line);
  if (!scan.valid_utf8) {
    return fail(error, line_number, kWholeLine, RejectKind::kEncoding,
                "line is not valid UTF-8 (or holds a NUL byte); re-export it as UTF-8");
  }
  SplitResult split = split_fields(line, fields_, scratch_);
  if (split.status == SplitStatus::kMalformed) {
    return fail(error, line_number, kWholeLine, RejectKind::kColumnCount,
                fmt::format("text after the closing quote of field {}; quote the whole field",
                            split.bad_field + 1));
  }
  if (fields_.size() != header_.field_count) {
    return fail(error, line_number, kWholeLine, RejectKind::kColumnCount,
                fmt::format("expected {} fields as in the header, found {}", header_.field_count,
                            fields_.size()));
  }
  std::size_t mark = copy_out.size();
  copy_binary::row(copy_out, static_cast<std::uint16_t>(spec_.columns.size() + 1));  // + pos
  values_.assign(spec_.columns.size(), std::nullopt);
  json_plain_.assign(spec_.columns.size(), 0);
  std::int64_t row_id = 0;
  std::size_t orphan_col = kWholeLine;
  std::int64_t orphan_value = 0;
  for (std::size_t c = 0; c < spec_.columns.size(); ++c) {
    const ColumnSpec& col = spec_.columns[c];
    const Field& f = fields_[header_.index[c]];
    std::string_view v = f.text;
    auto bad = [&](std::string_view why) {
      copy_out.resize(mark);
      return fail(error, line_number, c, RejectKind::kBadValue,
                  fmt::format("column {}: {} is not {}", col.name, shown(v), why));
    };
    switch (col.type) {
      case ColumnType::kId:
      case ColumnType::kBigId:
      case ColumnType::kRef:
      case ColumnType::kPositiveInt:
      case ColumnType::kQuantity: {
        v = trim(v);
        std::int64_t n = 0;
        std::int64_t max = col.type == ColumnType::kBigId ? INT64_MAX : INT32_MAX;
        bool nonneg = col.type == ColumnType::kRef || col.type == ColumnType::kQuantity;
        if (!parse_decimal_int(v, n) || n > max || (!nonneg && n == 0)) {
          return bad(nonneg ? "a whole number from 0 to 2147483647"
                            : (col.type == ColumnType::kBigId
                                   ? "a positive whole number"
                                   : "a whole number from 1 to 2147483647"));
        }
        if (c == 0) row_id = n;
        values_[c] = v;
        if (col.type == ColumnType::kRef && orphan_col == kWholeLine && !parents_[c]->contains(n)) {
          orphan_col = c;
          orphan_value = n;
        }
        if (col.type == ColumnType::kBigId) {
          copy_binary::int8_field(copy_out, static_cast<std::uint64_t>(n));
        } else {
          copy_binary::int4_field(copy_out, static_cast<std::uint32_t>(n));
        }
        break;
      }
      case ColumnType::kMoney:
        v = trim(v);
        if (!valid_money(v)) return bad("an amount like 140 or 99.50");
        values_[c] = v;
        copy_binary::numeric_field(copy_out, v);
        break;
      case ColumnType::kMoneyOrNull:
        v = trim(v);
        if (v.empty() || (!f.quoted && equals_ci(v, "null")) ||
            (valid_money(v) && is_zero_money(v))) {
          copy_binary::null_field(copy_out);
        } else if (!valid_money(v)) {
          return bad("an amount like 140 or 99.50, or null");
        } else {
          values_[c] = v;
          copy_binary::numeric_field(copy_out, v);
        }
        break;
      case ColumnType::kBool: {
        std::string_view t = trim(v);
        if (t == "1" || equals_ci(t, "true"))
          copy_binary::bool_field(copy_out, true), values_[c] = "true";
        else if (t == "0" || equals_ci(t, "false"))
          copy_binary::bool_field(copy_out, false), values_[c] = "false";
        else
          return bad("one of 0, 1, true, false");
        break;
      }
      case ColumnType::kTextOrNull:
        if (!f.quoted && (v.empty() || v == "null")) {
          copy_binary::null_field(copy_out);
          break;
        }
        values_[c] = v;
        json_plain_[c] = !scan.json_specials && f.quoted && !f.escaped;
        copy_binary::text_field(copy_out, v);
        break;
      case ColumnType::kText:
        values_[c] = v;
        json_plain_[c] = !scan.json_specials && f.quoted && !f.escaped;
        copy_binary::text_field(copy_out, v);
        break;
    }
  }
  if (own_ids_.contains(row_id)) {
    copy_out.resize(mark);
    return fail(
        error, line_number, 0, RejectKind::kDuplicateId,
        fmt::format("id {} already appeared on an earlier line; the first one is kept", row_id));
  }
  if (orphan_col != kWholeLine) {
    copy_out.resize(mark);
    const ColumnSpec& col = spec_.columns[orphan_col];
    return fail(error, line_number, orphan_col, RejectKind::kOrphan,
                fmt::format("column {}: {} {} does not exist (absent from {} or rejected there)",
                            col.name, find_spec_by_table(col.parent)->row_noun, orphan_value,
                            find_spec_by_table(col.parent)->file));
  }
  own_ids_.insert(row_id);
  copy_binary::int4_field(copy_out, static_cast<std::uint32_t>(line_number));
  repaired = split.status == SplitStatus::kRepaired;
  return true;
}

}  // namespace catwalk::etl
