// The version constants declared in catwalk/version.hpp, from the values CMake generated.
#include "catwalk/version.hpp"

#include "version_values.hpp"

namespace catwalk {

constinit const std::string_view kVersion = generated::kVersion;
constinit const std::string_view kGitCommit = generated::kGitCommit;
constinit const std::string_view kVersionText = generated::kVersionText;

}  // namespace catwalk
