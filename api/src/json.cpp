// The small JSON the API writes (error bodies) and reads (POST /cart bodies): see json.hpp.
#include "json.hpp"

#include <optional>

#include "routes.hpp"

namespace catwalk::api {

std::string error_body(std::string_view code, std::string_view message) {
  std::string out;
  out.reserve(32 + code.size() + message.size());
  out += "{\"error\":";
  append_json_string(out, code);
  out += ",\"message\":";
  append_json_string(out, message);
  out += "}";
  return out;
}

bool append_list_item(std::string& out, std::string_view detail) {
  constexpr std::string_view kFeatures = ",\"features\":[";
  if (detail.size() < 2 || detail.front() != '{' || !detail.ends_with("]}")) return false;
  const std::size_t at = detail.find(kFeatures);
  if (at == std::string_view::npos) return false;
  out.append(detail.substr(0, at));
  out.push_back('}');
  return true;
}

namespace {

// The length of the well-formed UTF-8 character at the start of `s` (RFC 3629, table 3-7 of
// the Unicode standard), or 0 when its first byte does not start one.
std::size_t utf8_char_length(std::string_view s) {
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return i < s.size() && b(i) >= lo && b(i) <= hi;
  };
  const unsigned c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    const unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

}  // namespace

std::string utf8_quotable(std::string_view s, std::size_t max_bytes) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  while (!s.empty()) {
    const std::size_t n = utf8_char_length(s);
    const std::string_view piece = n == 0 ? kReplacement : s.substr(0, n);
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    s.remove_prefix(n == 0 ? 1 : n);
  }
  return out;
}

namespace {

// A strict recursive-descent reader of one JSON document. It keeps only what the cart needs:
// for each top-level member, the raw text of a number or the decoded text of a string.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool at_end() {
    skip_ws();
    return pos_ == s_.size();
  }
  bool peek(char c) {
    skip_ws();
    return pos_ < s_.size() && s_[pos_] == c;
  }
  bool eat(char c) {
    if (!peek(c)) return false;
    ++pos_;
    return true;
  }

  // Decodes a string; \u escapes outside ASCII are kept only as a marker: the cart
  // only compares strings with digits.
  std::optional<std::string> string() {
    if (!eat('"')) return std::nullopt;
    std::string out;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) return std::nullopt;
      char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          out.push_back(' ');
          break;
        case 'u': {
          if (pos_ + 4 > s_.size()) return std::nullopt;
          unsigned v = 0;
          for (int i = 0; i < 4; ++i) {
            char h = s_[pos_++];
            v <<= 4;
            if (h >= '0' && h <= '9')
              v |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
              v |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              v |= static_cast<unsigned>(h - 'A' + 10);
            else
              return std::nullopt;
          }
          out.push_back(v < 0x80 ? static_cast<char>(v) : '?');
          break;
        }
        default:
          return std::nullopt;
      }
    }
    return std::nullopt;
  }

  // The raw text of a JSON number (validated against the grammar).
  std::optional<std::string_view> number() {
    skip_ws();
    std::size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (pos_ >= s_.size() || !isdigit(s_[pos_])) return std::nullopt;
    if (s_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < s_.size() && isdigit(s_[pos_])) ++pos_;
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (pos_ >= s_.size() || !isdigit(s_[pos_])) return std::nullopt;
      while (pos_ < s_.size() && isdigit(s_[pos_])) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (pos_ >= s_.size() || !isdigit(s_[pos_])) return std::nullopt;
      while (pos_ < s_.size() && isdigit(s_[pos_])) ++pos_;
    }
    return s_.substr(start, pos_ - start);
  }

  bool literal(std::string_view word) {
    skip_ws();
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  // Skips any value; depth-limited so a hostile body cannot exhaust the stack.
  bool skip_value(int depth = 0) {
    if (depth > 64) return false;
    skip_ws();
    if (pos_ >= s_.size()) return false;
    char c = s_[pos_];
    if (c == '"') return string().has_value();
    if (c == '{') {
      ++pos_;
      if (eat('}')) return true;
      do {
        if (!string() || !eat(':') || !skip_value(depth + 1)) return false;
      } while (eat(','));
      return eat('}');
    }
    if (c == '[') {
      ++pos_;
      if (eat(']')) return true;
      do {
        if (!skip_value(depth + 1)) return false;
      } while (eat(','));
      return eat(']');
    }
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    return number().has_value();
  }

 private:
  static bool isdigit(char c) { return c >= '0' && c <= '9'; }
  std::string_view s_;
  std::size_t pos_ = 0;
};

enum class FieldKind { kMissing, kNumber, kString, kOther };
struct Field {
  FieldKind kind = FieldKind::kMissing;
  std::string text;
};

// A field's value as a positive integer fitting in 32 bits, accepting 2, "2" (and 2.0, 2e0? no:
// integers only, as the reference service's parseInt-free validation did).
std::optional<std::int64_t> field_int(const Field& f) {
  if (f.kind != FieldKind::kNumber && f.kind != FieldKind::kString) return std::nullopt;
  return parse_positive(f.text);
}

}  // namespace

std::variant<CartAdd, std::string> parse_cart_add(std::string_view body) {
  Reader r(body);
  if (!r.eat('{'))
    return std::string("the body must be a JSON object like {\"sku_id\": 1, \"count\": 2}");
  Field sku, count;
  if (!r.eat('}')) {
    do {
      auto key = r.string();
      if (!key || !r.eat(':')) return std::string("the body is not valid JSON");
      Field* target = *key == "sku_id" ? &sku : *key == "count" ? &count : nullptr;
      if (target == nullptr) {
        if (!r.skip_value()) return std::string("the body is not valid JSON");
        continue;
      }
      if (r.peek('"')) {
        auto s = r.string();
        if (!s) return std::string("the body is not valid JSON");
        *target = {FieldKind::kString, std::move(*s)};
      } else if (r.peek('{') || r.peek('[') || r.peek('t') || r.peek('f') || r.peek('n')) {
        if (!r.skip_value()) return std::string("the body is not valid JSON");
        *target = {FieldKind::kOther, {}};
      } else {
        auto n = r.number();
        if (!n) return std::string("the body is not valid JSON");
        *target = {FieldKind::kNumber, std::string(*n)};
      }
    } while (r.eat(','));
    if (!r.eat('}')) return std::string("the body is not valid JSON");
  }
  if (!r.at_end())
    return std::string("the body is not valid JSON: unexpected text after the object");

  CartAdd out;
  if (sku.kind == FieldKind::kMissing)
    return std::string("sku_id is required: send {\"sku_id\": <sku id>, \"count\": <n>}");
  auto sku_id = field_int(sku);
  if (!sku_id || *sku_id > 2147483647)
    return std::string("sku_id must be a positive integer that fits in 32 bits");
  out.sku_id = static_cast<std::int32_t>(*sku_id);
  if (count.kind != FieldKind::kMissing) {
    auto n = field_int(count);
    if (!n || *n > kMaxCartCount) return std::string("count must be an integer from 1 to 1000");
    out.count = static_cast<std::int32_t>(*n);
  }
  return out;
}

}  // namespace catwalk::api
