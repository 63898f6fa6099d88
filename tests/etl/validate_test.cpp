#include "validate.hpp"

#include <doctest/doctest.h>

#include <charconv>
#include <chrono>

#include "catwalk/etl/errors.hpp"
#include "catwalk/json.hpp"
#include "copy_decode.hpp"

using namespace catwalk::etl;

namespace {

struct Outcome {
  bool ok;
  std::string copy;
  RowError error;
  bool repaired;
};

// Validates lines of `table` against a header, with parent ids 1..10 present.
struct Harness {
  const TableSpec& spec;
  IdSet parent, own;
  RowValidator validator;
  Harness(std::string_view table, std::string_view header)
      : spec(*find_spec_by_table(table)),
        validator(spec, map_header(spec, header, "test.csv"), parents(), own) {}
  std::vector<const IdSet*> parents() {
    for (int i = 1; i <= 10; ++i) parent.insert(i);
    std::vector<const IdSet*> out;
    for (auto& c : spec.columns) out.push_back(c.parent.empty() ? nullptr : &parent);
    return out;
  }
  // o.copy is the row rendered as text (see copy_decode.hpp).
  Outcome check(std::string_view line, std::uint64_t n = 2) {
    Outcome o;
    std::string binary;
    o.ok = validator.validate(n, line, binary, o.repaired, o.error);
    o.copy = catwalk::test::decode_rows(binary, catwalk::test::binary_columns(spec));
    return o;
  }
};

}  // namespace

TEST_CASE("products: a valid row becomes one COPY line ending with its position") {
  Harness h("products", "id,name,slogan,description,category,default_price");
  auto o = h.check(R"(1,"Camo Onesie","Blend in","A, b ""c""","Jackets",140)", 2);
  REQUIRE(o.ok);
  CHECK(o.copy == "1\tCamo Onesie\tBlend in\tA, b \"c\"\tJackets\t140\t2\n");
  CHECK_FALSE(o.repaired);
}

TEST_CASE("header: names trimmed, camelCase matched, any order, a missing column throws") {
  Harness h("styles", "name , productId,ID,default_style,original_price,sale_price");
  auto o = h.check(R"("Red",3,7,1,140,null)");
  REQUIRE(o.ok);
  CHECK(o.copy == "7\t3\tRed\t\\N\t140\tt\t2\n");
  const TableSpec& spec = *find_spec_by_table("styles");
  CHECK_THROWS_AS(map_header(spec, "id,productId,name,sale_price,original_price", "s.csv"),
                  InputError);
  CHECK_THROWS_AS(
      map_header(spec, "id,id,productId,name,sale_price,original_price,default_style", "s.csv"),
      InputError);
}

TEST_CASE("rejections name the kind and the column") {
  struct Case {
    std::string table, header, line;
    RejectKind kind;
    std::string column;
  };
  std::vector<Case> cases = {
      {"products", "id,name,slogan,description,category,default_price", R"(1,"a","b","c")",
       RejectKind::kColumnCount, ""},
      {"products", "id,name,slogan,description,category,default_price",
       R"(1,"a","b","c","d",12abc)", RejectKind::kBadValue, "default_price"},
      {"products", "id,name,slogan,description,category,default_price", R"(x1,"a","b","c","d",12)",
       RejectKind::kBadValue, "id"},
      {"products", "id,name,slogan,description,category,default_price", R"(0,"a","b","c","d",12)",
       RejectKind::kBadValue, "id"},
      {"products", "id,name,slogan,description,category,default_price",
       R"(99999999999,"a","b","c","d",12)", RejectKind::kBadValue, "id"},
      {"products", "id,name,slogan,description,category,default_price",
       "1,\"a\xFF\",\"b\",\"c\",\"d\",12", RejectKind::kEncoding, ""},
      {"products", "id,name,slogan,description,category,default_price", R"(1,"a"x,"b","c","d",12)",
       RejectKind::kColumnCount, ""},
      {"products", "id,name,slogan,description,category,default_price",
       R"(1,"a","b","c","d",1234567890123)", RejectKind::kBadValue, "default_price"},
      {"styles", "id,productId,name,sale_price,original_price,default_style",
       R"(1,1,"a",null,140,2)", RejectKind::kBadValue, "default_style"},
      {"styles", "id,productId,name,sale_price,original_price,default_style",
       R"(1,1,"a",null,-5,0)", RejectKind::kBadValue, "original_price"},
      {"styles", "id,productId,name,sale_price,original_price,default_style", R"(1,1,"a",abc,5,0)",
       RejectKind::kBadValue, "sale_price"},
      {"styles", "id,productId,name,sale_price,original_price,default_style",
       R"(1,77,"a",null,5,0)", RejectKind::kOrphan, "product_id"},
      {"skus", "id,styleId,size,quantity", R"(1,1,"XS",-1)", RejectKind::kBadValue, "quantity"},
      {"skus", "id,styleId,size,quantity", R"(1,1,"XS",1.5)", RejectKind::kBadValue, "quantity"},
      {"related", "id,current_product_id,related_product_id", "1,1,0", RejectKind::kOrphan,
       "related_product_id"},
      {"related", "id,current_product_id,related_product_id", "1,11,2", RejectKind::kOrphan,
       "current_product_id"},
      {"related", "id,current_product_id,related_product_id", "1,1,-2", RejectKind::kBadValue,
       "related_product_id"},
      {"cart_import", "id,user_session,product_id,active", "1,1234,x,1", RejectKind::kBadValue,
       "product_id"},
      {"products", "id,name,slogan,description,category,default_price",
       "1," + std::string(kMaxLineBytes + 1, 'x'), RejectKind::kLineTooLong, ""},
  };
  for (auto& c : cases) {
    CAPTURE(c.line.substr(0, 80));
    Harness h(c.table, c.header);
    auto o = h.check(c.line);
    CHECK_FALSE(o.ok);
    CHECK(reject_kind_name(o.error.kind) == reject_kind_name(c.kind));
    CHECK(o.error.column == c.column);
    CHECK(o.error.line == 2);
    CHECK_FALSE(o.error.message.empty());
    CHECK(o.copy.empty());
  }
}

TEST_CASE("duplicate ids: the first is kept, later ones rejected") {
  Harness h("photos", "id,styleId,url,thumbnail_url");
  CHECK(h.check(R"(1,1,"u","t")", 2).ok);
  auto dup = h.check(R"(1,2,"u2","t2")", 3);
  CHECK_FALSE(dup.ok);
  CHECK(dup.error.kind == RejectKind::kDuplicateId);
  CHECK(dup.error.column == "id");
}

TEST_CASE("an orphan's id does not count as seen") {
  Harness h("photos", "id,styleId,url,thumbnail_url");
  CHECK_FALSE(h.check(R"(5,99,"u","t")", 2).ok);
  CHECK(h.check(R"(5,1,"u","t")", 3).ok);
}

TEST_CASE("photos: a missing closing quote is repaired") {
  Harness h("photos", "id,styleId,url,thumbnail_url");
  auto o = h.check(R"(10,6,"https://x/a","https://x/b)");
  REQUIRE(o.ok);
  CHECK(o.repaired);
  CHECK(o.copy == "10\t6\thttps://x/a\thttps://x/b\t2\n");
}

TEST_CASE("nulls, zero sale price, booleans, COPY escaping") {
  Harness styles("styles", "id,productId,name,sale_price,original_price,default_style");
  CHECK(styles.check(R"(1,1,"a",0,140,true)").copy == "1\t1\ta\t\\N\t140\tt\t2\n");
  CHECK(styles.check(R"(2,1,"a",,140,FALSE)").copy == "2\t1\ta\t\\N\t140\tf\t2\n");
  CHECK(styles.check(R"(3,1,"a",0.00,140,0)").copy == "3\t1\ta\t\\N\t140\tf\t2\n");
  CHECK(styles.check(R"(4,1,"a",99.5,140,1)").copy == "4\t1\ta\t99.5\t140\tt\t2\n");
  Harness features("features", "id,product_id,feature,value");
  CHECK(features.check(R"(1,1,"UV",null)").copy == "1\t1\tUV\t\\N\t2\n");
  CHECK(features.check(R"(2,1,"UV",)").copy == "2\t1\tUV\t\\N\t2\n");
  CHECK(features.check(R"(3,1,"Tab	here","back\slash")").copy ==
        "3\t1\tTab\there\tback\\slash\t2\n");  // raw bytes: binary COPY needs no escaping
  Harness products("products", "id,name,slogan,description,category,default_price");
  for (auto [price, shown] :
       std::vector<std::pair<std::string, std::string>>{{"140", "140"},
                                                        {"99.50", "99.50"},
                                                        {"5000000", "5000000"},
                                                        {"0.5", "0.5"},
                                                        {"123456789012.34", "123456789012.34"},
                                                        {"0", "0"},
                                                        {"007", "7"},
                                                        {"10000.01", "10000.01"}}) {
    CAPTURE(price);
    CHECK(products.check("1,\"a\",\"b\",\"c\",\"d\"," + price).copy ==
          "1\ta\tb\tc\td\t" + shown + "\t2\n");
    products.own = IdSet();
  }
}

TEST_CASE("IdSet: dense and sparse ids") {
  IdSet s;
  CHECK(s.insert(1));
  CHECK_FALSE(s.insert(1));
  CHECK(s.insert(5'000'000'000LL));
  CHECK(s.contains(5'000'000'000LL));
  CHECK_FALSE(s.contains(2));
  CHECK(s.size() == 2);
}

TEST_CASE("a rejected value quoted in the message is cut at a character boundary") {
  Harness h("products", "id,name,slogan,description,category,default_price");
  std::string price = "1";
  for (int i = 0; i < 30; ++i) price += "\xC3\xA9";  // 'é': the 40-byte cut falls inside one
  auto o = h.check("1,\"a\",\"b\",\"c\",\"d\"," + price);
  REQUIRE_FALSE(o.ok);
  CHECK(o.error.kind == RejectKind::kBadValue);
  CHECK(valid_utf8(o.error.message));
  CHECK(o.error.message.find("...\"") != std::string::npos);
}

TEST_CASE("printable_text: invalid bytes replaced, controls shown as '?', cut on a boundary") {
  CHECK(printable_text("plain") == "plain");
  CHECK(printable_text("a\xFF"
                       "b") ==
        "a\xEF\xBF\xBD"
        "b");
  CHECK(printable_text("x\x01y") == "x?y");
  CHECK(printable_text("\xC3\xA9\xC3\xA9", 3) == "\xC3\xA9...");
  CHECK(printable_text("trunc \xE2\x82") == "trunc \xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(valid_utf8(printable_text(std::string("\0\xC0\xAF\xED\xA0\x80", 6))));
}

TEST_CASE("quirks: NULL in any case, numbers with spaces around them, a quoted \"null\" is text") {
  // Unquoted null (any case) or empty is SQL NULL in sale_price; the style is loaded.
  Harness styles("styles", "id,productId,name,sale_price,original_price,default_style");
  CHECK(styles.check(R"(1,1,"a",NULL,140,1)").copy == "1\t1\ta\t\\N\t140\tt\t2\n");
  CHECK(styles.check(R"(2,1,"a",Null,140,0)").copy == "2\t1\ta\t\\N\t140\tf\t2\n");
  CHECK_FALSE(styles.check(R"(3,1,"a","null",140,0)").ok);  // quoted: text, not an amount
  // Spaces around numbers are trimmed (as around header names), values inside quotes kept.
  CHECK(styles.check(R"( 4 , 1 ,"a", 99.50 , 140 , 1 )").copy == "4\t1\ta\t99.50\t140\tt\t2\n");
  Harness skus("skus", "id,styleId,size,quantity");
  CHECK(skus.check("\t7,\t2,\"M\",  8  ").copy == "7\t2\tM\t8\t2\n");
  // features.value: unquoted null is NULL; a quoted "null" is the text null.
  Harness features("features", "id,product_id,feature,value");
  CHECK(features.check(R"(1,1,"UV","null")").copy == "1\t1\tUV\tnull\t2\n");
  CHECK(features.check(R"(2,1,"UV",null)").copy == "2\t1\tUV\t\\N\t2\n");
}

TEST_CASE("header: a hundred thousand fields are checked at once, not pair by pair") {
  // Found by the fuzzer: the duplicate-name check compared every pair of fields, so a header of
  // 150,000 distinct names (1 MB, the line limit) took minutes: a hang, not an error.
  const TableSpec& spec = *find_spec_by_table("features");
  std::string header = "id,product_id,feature,value";
  for (int i = 0; i < 150000; ++i) header += ",c" + std::to_string(i);
  const auto t0 = std::chrono::steady_clock::now();
  HeaderMap map = map_header(spec, header, "features.csv");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(map.field_count == 150004);
  CHECK(seconds < 5.0);
  // A doubled name far apart is still found, with both positions.
  header += ",feature";
  try {
    map_header(spec, header, "features.csv");
    FAIL("accepted a header with a doubled column");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("(fields 3 and 150005)") != std::string::npos);
  }
}

TEST_CASE("header: a column named twice is refused with a message naming it") {
  const TableSpec& spec = *find_spec_by_table("features");
  for (std::string header :
       {"id,product_id,feature,value,feature", "id,productId,product_id,feature,value",
        "id,product_id,feature,value,extra,Extra"}) {
    CAPTURE(header);
    try {
      map_header(spec, header, "features.csv");
      FAIL("accepted a header with a doubled column");
    } catch (const InputError& e) {
      CHECK(std::string(e.what()).find("appears twice in the header") != std::string::npos);
    }
  }
}

TEST_CASE("json_plain: a value said to need no escaping is its JSON string between two quotes") {
  // Lines whose text fields hold every kind of byte JSON escapes, alone or with a quoted field
  // beside them: where json_plain() says true, append_json_string must add nothing but quotes.
  Harness h("features", "id,product_id,feature,value");
  const std::vector<std::string> texts = {
      R"("plain")", R"("a ""q"" b")", R"("back\slash")",         "\"tab\there\"",
      "unquoted",   "un\"quoted",     "\"caf\xC3\xA9\"",         "\"ctl\x01\"",
      R"("")",      "\"nl\x1F\"",     R"("https://x/y?a=1&b=2")"};
  std::size_t plain = 0, not_plain = 0;
  std::int64_t id = 1;
  for (const auto& a : texts) {
    for (const auto& b : texts) {
      const std::string line = std::to_string(id++) + ",1," + a + "," + b;
      CAPTURE(line);
      std::string copy;
      bool repaired = false;
      RowError error;
      REQUIRE(h.validator.validate(2, line, copy, repaired, error));
      for (std::size_t c = 2; c < 4; ++c) {
        const auto& v = h.validator.value(c);
        if (!v) continue;
        std::string escaped;
        catwalk::append_json_string(escaped, *v);
        std::string quoted(1, '"');  // not "\"" + ...: GCC 12 warns falsely (-Wrestrict)
        quoted.append(*v);
        quoted.push_back('"');
        const bool same = escaped == quoted;
        if (h.validator.json_plain(c)) {
          CHECK(same);
          ++plain;
        } else {
          ++not_plain;
        }
        // A quoted field on a line free of specials is plain whenever it can be.
        if (same && line.find('\\') == std::string::npos && line.find('\t') == std::string::npos &&
            line.find('\x01') == std::string::npos && line.find('\x1F') == std::string::npos &&
            (c == 2 ? a : b).front() == '"') {
          CHECK(h.validator.json_plain(c));
        }
      }
    }
  }
  CHECK(plain > 10);
  CHECK(not_plain > 10);
}

namespace {
// The rule parse_decimal_int keeps: digits only, at most 19 of them, and from_chars' value.
bool reference_int(std::string_view s, std::int64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}
}  // namespace

TEST_CASE("parse_decimal_int: digits only, up to INT64_MAX, as from_chars reads them") {
  struct Case {
    std::string in;
    bool ok;
    std::int64_t value;
  };
  const std::vector<Case> cases = {
      {"0", true, 0},
      {"7", true, 7},
      {"2147483647", true, 2147483647},
      {"9223372036854775807", true, INT64_MAX},
      {"9223372036854775808", false, 0},
      {"9999999999999999999", false, 0},
      {"0000000000000000001", true, 1},
      {"00000000000000000001", false, 0},  // 20 characters
      {"", false, 0},
      {"-1", false, 0},
      {"+1", false, 0},
      {" 1", false, 0},
      {"1 ", false, 0},
      {"1a", false, 0},
      {"/", false, 0},
      {":", false, 0},
      {"1.0", false, 0},
      {"\xB1", false, 0},
      {std::string("1\0", 2), false, 0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.in);
    std::int64_t n = -5;
    CHECK(parse_decimal_int(c.in, n) == c.ok);
    CHECK(n == (c.ok ? c.value : -5));
  }
  // Random strings of digits and near-digits, every length up to 20, against the reference.
  std::uint64_t seed = 7;
  const std::string alphabet = "0123456789999/:a \xB0";
  for (int i = 0; i < 200000; ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    std::string s;
    const std::size_t length = (seed >> 40) % 21;
    for (std::size_t k = 0; k < length; ++k) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      // Mostly digits, so long valid numbers (and overflows) come up often.
      s.push_back((seed >> 61) == 0 ? alphabet[(seed >> 33) % alphabet.size()]
                                    : static_cast<char>('0' + (seed >> 33) % 10));
    }
    std::int64_t got = -1, want = -1;
    const bool ok = parse_decimal_int(s, got);
    CAPTURE(s);
    REQUIRE(ok == reference_int(s, want));
    if (ok) REQUIRE(got == want);
  }
}
