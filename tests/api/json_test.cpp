#include "json.hpp"

#include <doctest/doctest.h>

using namespace catwalk::api;

namespace {
CartAdd ok(const char* body) {
  auto r = parse_cart_add(body);
  REQUIRE_MESSAGE(std::holds_alternative<CartAdd>(r), body);
  return std::get<CartAdd>(r);
}
}  // namespace

TEST_CASE("parse_cart_add: numbers, numeric strings, defaults, ignored fields") {
  auto a = ok(R"({"sku_id": 1281032, "count": 2})");
  CHECK(a.sku_id == 1281032);
  CHECK(a.count == 2);
  auto b = ok(R"({"sku_id":"5","count":"3"})");
  CHECK(b.sku_id == 5);
  CHECK(b.count == 3);
  CHECK(ok(R"({"sku_id":5})").count == 1);
  CHECK(ok(R"( {"product_id": {"x":[1,2,null]}, "sku_id": 9, "note": "a\"b\u0041"} )").sku_id == 9);
  CHECK(ok(R"({"sku_id":9,"count":1000})").count == 1000);
}

TEST_CASE("parse_cart_add: every bad body is a message, never a throw") {
  for (const char* bad : {"",
                          "null",
                          "[]",
                          "{",
                          "{}",
                          R"({"count":2})",
                          R"({"sku_id":0})",
                          R"({"sku_id":-1})",
                          R"({"sku_id":1.5})",
                          R"({"sku_id":"abc"})",
                          R"({"sku_id":99999999999})",
                          R"({"sku_id":1,"count":0})",
                          R"({"sku_id":1,"count":1001})",
                          R"({"sku_id":1,"count":null})",
                          R"({"sku_id":1,"count":true})",
                          R"({"sku_id":1} x)",
                          R"({"sku_id":1,})",
                          R"({'sku_id':1})",
                          R"({"sku_id":1e2})",
                          "{\"sku_id\":\"1\x01\"}"}) {
    CAPTURE(bad);
    auto r = parse_cart_add(bad);
    CHECK(std::holds_alternative<std::string>(r));
  }
  std::string deep(10000, '[');
  auto r = parse_cart_add(std::string(R"({"x":)") + deep);
  CHECK(std::holds_alternative<std::string>(r));
}

TEST_CASE("error_body escapes") {
  CHECK(error_body("bad", "a \"b\"\n") == R"({"error":"bad","message":"a \"b\"\n"})");
}

TEST_CASE("utf8_quotable: valid UTF-8 within the byte budget, never half a character") {
  const std::string e_acute = "\xC3\xA9", fffd = "\xEF\xBF\xBD";
  const std::pair<std::string, std::string> cases[] = {
      {"123", "123"},
      {"\xFF", fffd},
      {"a\xFF"
       "b",
       "a" + fffd + "b"},
      {std::string(39, 'a') + e_acute, std::string(39, 'a')},  // é would end past byte 40
      {std::string(38, 'a') + e_acute, std::string(38, 'a') + e_acute},
      {"\xC0\xAF", fffd + fffd},                        // overlong '/'
      {"\xED\xA0\x80", fffd + fffd + fffd},             // a surrogate
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},  // past U+10FFFF
      {"\xE2\x82", fffd + fffd},                        // cut short
      {"\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80"},         // an emoji is fine
  };
  for (const auto& [in, want] : cases) {
    CAPTURE(in);
    CHECK(utf8_quotable(in, 40) == want);
  }
  CHECK(utf8_quotable(std::string(40, '\xFF'), 40) ==
        fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd);
}

TEST_CASE("append_list_item: the detail without its features member") {
  std::string out = "[";
  CHECK(append_list_item(out, R"({"id":1,"name":"A","default_price":"140","features":[]})"));
  CHECK(out == R"([{"id":1,"name":"A","default_price":"140"})");
  // The key's text inside a string is escaped, so it is not taken for the member.
  out.clear();
  CHECK(append_list_item(out, R"({"id":2,"description":"x\",\"features\":[1]","default_price":"1",)"
                              R"("features":[{"feature":"F","value":"features"}]})"));
  CHECK(out == R"({"id":2,"description":"x\",\"features\":[1]","default_price":"1"})");
  // Not a detail: refused, nothing appended.
  out = "keep";
  for (const char* bad :
       {"", "{}", "[1,2]", R"({"id":1,"features":[)", R"({"id":1})", R"({"id":1,"features":{}})"}) {
    CAPTURE(bad);
    CHECK_FALSE(append_list_item(out, bad));
    CHECK(out == "keep");
  }
}
