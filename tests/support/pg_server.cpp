#include "pg_server.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace catwalk::test {

namespace fs = std::filesystem;

std::string source_path(const std::string& relative) {
  return std::string(CATWALK_SOURCE_DIR) + "/" + relative;
}

std::string binary_path(const std::string& name) {
  return std::string(CATWALK_BINARY_DIR) + "/" + name;
}

std::string make_temp_dir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  fs::permissions(tmpl, fs::perms::all, fs::perm_options::add);
  return tmpl;
}

CommandResult run_command(const std::string& command) {
  std::string err_dir = make_temp_dir("catwalk-cmd");
  std::string err_file = err_dir + "/stderr";
  CommandResult r;
  FILE* p = ::popen((command + " 2>" + err_file).c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + command);
  std::array<char, 65536> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(err_file);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  fs::remove_all(err_dir);
  return r;
}

PgServer::PgServer() {
  dir_ = make_temp_dir("catwalk-pg");
  std::random_device rd;
  port_ = 20000 + static_cast<int>(rd() % 20000);
  start();
}

void PgServer::start() {
  auto r =
      run_command(source_path("scripts/pg-local") + " start " + dir_ + " " + std::to_string(port_));
  if (r.exit_code != 0) {
    throw std::runtime_error("could not start the test PostgreSQL in " + dir_ + ": " + r.err);
  }
  url_ = r.out;
  while (!url_.empty() && (url_.back() == '\n' || url_.back() == ' ')) url_.pop_back();
}

void PgServer::stop() { run_command(source_path("scripts/pg-local") + " stop " + dir_); }

PgServer::~PgServer() {
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

PgServer& shared_server() {
  static PgServer server;
  return server;
}

}  // namespace catwalk::test
