// --version on every binary, and the version in the loader's first log line: the version each
// prints must be the CMake project version (CATWALK_EXPECTED_VERSION, given by CMake).
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "pg_server.hpp"

namespace {

using catwalk::test::binary_path;
using catwalk::test::run_command;

constexpr const char* kExpected = CATWALK_EXPECTED_VERSION;

// "NAME VERSION\n" or "NAME VERSION (commit HEX)\n", nothing else.
bool is_version_line(const std::string& out, const std::string& name) {
  const std::string head = name + " " + kExpected;
  if (out == head + "\n") return true;
  const std::string commit_open = head + " (commit ";
  if (!out.starts_with(commit_open) || !out.ends_with(")\n")) return false;
  std::string hex = out.substr(commit_open.size(), out.size() - commit_open.size() - 2);
  return !hex.empty() && hex.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

// --version alone is enough: catwalk-etl otherwise requires a subcommand, catwalk-generate an
// OUT_DIR.
TEST_CASE("every binary's --version exits 0 and prints the CMake project version") {
  for (std::string name : {"catwalk-etl", "catwalk-api", "catwalk-generate"}) {
    CAPTURE(name);
    auto r = run_command(binary_path(name) + " --version");
    INFO("stdout: " << r.out << "stderr: " << r.err);
    CHECK(r.exit_code == 0);
    CHECK(is_version_line(r.out, name));
  }
}

TEST_CASE("the loader's first log line names the version") {
  std::string rejects = catwalk::test::make_temp_dir("catwalk-version");
  auto r = run_command(binary_path("catwalk-etl") + " check --progress off --rejects-dir " +
                       rejects + " " + catwalk::test::source_path("data-samples"));
  std::filesystem::remove_all(rejects);
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 0);
  std::string first = r.err.substr(0, r.err.find('\n'));
  CHECK(first.find(std::string("catwalk-etl ") + kExpected) != std::string::npos);
  CHECK(first.find(": check ") != std::string::npos);
}
