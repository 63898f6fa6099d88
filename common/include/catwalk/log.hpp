#pragma once
// Logging: one line per event on stderr, written whole so lines of concurrent threads never mix.
#include <fmt/format.h>

#include <string_view>

namespace catwalk {

void log_write(std::string_view line);

template <typename... Args>
void log(fmt::format_string<Args...> f, Args&&... args) {
  log_write(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace catwalk
