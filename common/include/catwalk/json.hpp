#pragma once
// JSON string literals, shared by both binaries' output.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace catwalk {

// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped,
// UTF-8 kept as is (the input is valid UTF-8: the loader rejects anything else).
void append_json_string(std::string& out, std::string_view s);

inline std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

}  // namespace catwalk
