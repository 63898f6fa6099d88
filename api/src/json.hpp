#pragma once
// The little JSON the API writes and reads itself: error bodies, cart lines, the POST /cart
// request body, and a list entry cut from a product's detail. Catalogue documents are never
// built here: the loader stores them.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "catwalk/json.hpp"

namespace catwalk::api {

// JSON string literals: the one escaper both binaries share.
using catwalk::append_json_string;

// {"error":"<code>","message":"<message>"}
std::string error_body(std::string_view code, std::string_view message);

// Client text (a path id) made fit to quote in a body: at most `max_bytes` bytes of valid UTF-8,
// never a character cut in half; each byte that is not part of a well-formed UTF-8 character
// (overlong forms, surrogates and code points past U+10FFFF included) becomes U+FFFD.
std::string utf8_quotable(std::string_view s, std::size_t max_bytes);

// A product's entry in GET /products is its detail document without the "features" member, which
// the loader writes last: {"id":1,...,"default_price":"140","features":[...]} gives
// {"id":1,...,"default_price":"140"}. Appends it to `out`; false (out unchanged) when `detail` is
// not of that shape. No string can hide the member's key: inside a JSON string every quote is
// escaped, so the first unescaped ,"features":[ is the member itself.
bool append_list_item(std::string& out, std::string_view detail);

inline constexpr std::int64_t kMaxCartCount = 1000;

struct CartAdd {
  std::int32_t sku_id = 0;
  std::int32_t count = 1;
};

// Parses a POST /cart body: a JSON object with "sku_id" (required) and "count" (default 1),
// each a JSON integer or a string of digits; "product_id" and unknown fields are ignored.
// Returns the request, or a message saying what is wrong, for a 400.
std::variant<CartAdd, std::string> parse_cart_add(std::string_view body);

}  // namespace catwalk::api
