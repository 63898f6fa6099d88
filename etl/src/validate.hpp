#pragma once
// Row validation: a record becomes a COPY text line, or a RowError. Bad data is a value.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "catwalk/etl/reject_kind.hpp"
#include "record.hpp"
#include "table_spec.hpp"

namespace catwalk::etl {

struct RowError {
  std::uint64_t line = 0;
  std::string column;  // header name, or "" when the whole line is at fault
  RejectKind kind = RejectKind::kBadValue;
  std::string message;
};

// A set of ids: a bitmap for the dense ids exports use, a hash set past that, so memory stays
// proportional to the largest id (a few MB for the full catalogue), not to the row count.
class IdSet {
 public:
  bool contains(std::int64_t id) const;
  // Returns false when the id was already there.
  bool insert(std::int64_t id);
  std::size_t size() const { return count_; }
  // 1-based rank of a member among all members in ascending order. Call finalize() once after
  // the last insert; rank() is then safe to call from many threads.
  void finalize();
  std::uint32_t rank(std::int64_t id) const;

 private:
  std::vector<std::uint32_t> prefix_;        // members in words before each bitmap word
  std::vector<std::int64_t> sparse_sorted_;  // sparse members, sorted, after finalize()
  static constexpr std::int64_t kBitmapLimit = std::int64_t{1} << 28;  // 32 MiB of bits at most
  std::vector<std::uint64_t> bits_;
  std::unordered_set<std::int64_t> sparse_;
  std::size_t count_ = 0;
};

// Where each spec column sits in a file's records. Built from the header line; throws
// InputError naming the file and the missing (or doubled) column.
struct HeaderMap {
  std::vector<std::size_t> index;  // per spec column: field index in a record
  std::size_t field_count = 0;     // fields in the header = fields every record must have
};
HeaderMap map_header(const TableSpec& spec, std::string_view header_line, const std::string& path);

// `s` as a whole number: 1 to 19 ASCII digits (leading zeros allowed, no sign, no spaces) whose
// value is at most INT64_MAX. False otherwise, `out` untouched.
bool parse_decimal_int(std::string_view s, std::int64_t& out);

// Validates the records of one file. Not thread-safe: one per file task.
class RowValidator {
 public:
  // `parents` holds, per spec column with a parent, the accepted ids of that parent table
  // (nullptr for other columns). `own_ids` collects this file's accepted ids.
  RowValidator(const TableSpec& spec, HeaderMap header, std::vector<const IdSet*> parents,
               IdSet& own_ids);

  // Checks one line. On success appends one row in COPY binary format (see copy_binary.hpp;
  // the line number last, as `pos`) to `copy_out` and returns true; `repaired` tells whether a
  // quote had to be closed. On failure fills `error` and leaves `copy_out` as it was.
  bool validate(std::uint64_t line_number, std::string_view line, std::string& copy_out,
                bool& repaired, RowError& error);

  // After a successful validate(): the value of spec column `c` as loaded (numbers trimmed,
  // booleans as "true"/"false"), or nullopt for SQL NULL. Valid until the next validate().
  const std::optional<std::string_view>& value(std::size_t c) const { return values_[c]; }
  // After a successful validate(), for a text column: true when value(c) needs no JSON escaping
  // (it was quoted without a doubled quote, on a line without a backslash or control
  // character), so its JSON string is the text between two quotes. False says nothing.
  bool json_plain(std::size_t c) const { return json_plain_[c] != 0; }

 private:
  bool fail(RowError& e, std::uint64_t line, std::size_t spec_col, RejectKind kind,
            std::string message);
  const TableSpec& spec_;
  HeaderMap header_;
  std::vector<const IdSet*> parents_;
  IdSet& own_ids_;
  std::vector<Field> fields_;
  std::vector<std::optional<std::string_view>> values_;
  std::vector<char> json_plain_;  // per spec column, see json_plain()
  std::string scratch_;
};

}  // namespace catwalk::etl
