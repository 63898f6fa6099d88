#include "catwalk/config.hpp"

#include <cstdlib>
#include <regex>

namespace catwalk {

std::string resolve_db_url(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  if (const char* env = std::getenv("DATABASE_URL"); env != nullptr && *env != '\0') return env;
  return "";
}

std::string redact_db_url(const std::string& url) {
  static const std::regex kUriPassword(R"(^(postgres(?:ql)?://[^:/@]*):[^@]*@)");
  static const std::regex kKeywordPassword(R"((password\s*=\s*)('[^']*'|\S+))");
  std::string out = std::regex_replace(url, kUriPassword, "$1:***@");
  return std::regex_replace(out, kKeywordPassword, "$1***");
}

}  // namespace catwalk
