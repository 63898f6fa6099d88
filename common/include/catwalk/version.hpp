#pragma once
// The version of every Catwalk binary, from project(catwalk VERSION ...) in the top
// CMakeLists.txt, plus the git commit the build was configured from. Defined in
// common/version.cpp from values CMake generates; link the `catwalk_version` target to use it.
// Constant-initialized (constinit): safe to read from anywhere, static initializers included.
#include <string_view>

namespace catwalk {

// The project version, "MAJOR.MINOR.PATCH".
extern const std::string_view kVersion;
// The git commit the build was configured from (12 hex digits), or "" when the source was not
// a git checkout or git was not installed.
extern const std::string_view kGitCommit;
// What --version prints after the program name and what the logs show: "0.1.0" or
// "0.1.0 (commit 0123456789ab)".
extern const std::string_view kVersionText;

}  // namespace catwalk
