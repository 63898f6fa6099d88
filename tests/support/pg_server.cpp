#include "pg_server.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

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

namespace {
// The postmaster (first line of postmaster.pid) and its children, from /proc.
std::vector<pid_t> server_processes(const std::string& data_dir) {
  std::ifstream pidfile(data_dir + "/postmaster.pid");
  pid_t postmaster = 0;
  if (!(pidfile >> postmaster) || postmaster <= 0)
    throw std::runtime_error("no running PostgreSQL in " + data_dir);
  std::vector<pid_t> out{postmaster};
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == postmaster) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}
}  // namespace

void PgServer::freeze() {
  for (pid_t p : server_processes(dir_ + "/data")) ::kill(p, SIGSTOP);
}

void PgServer::thaw() {
  for (pid_t p : server_processes(dir_ + "/data")) ::kill(p, SIGCONT);
}

namespace {
PgServer* g_shared = nullptr;
std::terminate_handler g_previous_terminate = nullptr;

// A test binary that dies by std::terminate (an exception escaping a thread, a throwing
// destructor) runs no static destructor: stop the shared server first, so that no PostgreSQL
// outlives the tests.
[[noreturn]] void stop_shared_then_terminate() {
  if (PgServer* s = std::exchange(g_shared, nullptr)) {
    try {
      s->thaw();  // a frozen server would not stop
    } catch (...) {
    }
    s->stop();
    std::error_code ec;
    fs::remove_all(s->dir(), ec);
  }
  if (g_previous_terminate != nullptr) g_previous_terminate();
  std::abort();
}
}  // namespace

PgServer::~PgServer() {
  if (g_shared == this) g_shared = nullptr;
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

PgServer& shared_server() {
  static PgServer server;
  static const bool hooked = [] {
    g_shared = &server;
    g_previous_terminate = std::set_terminate(stop_shared_then_terminate);
    return true;
  }();
  (void)hooked;
  return server;
}

}  // namespace catwalk::test
