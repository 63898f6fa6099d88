#pragma once
// A PostgreSQL server of the test's own: initdb into a fresh temporary folder, unix socket only,
// stopped and removed when the object dies. Uses scripts/pg-local, which runs the server as the
// "postgres" user when the tests run as root. Tests never skip for want of a database.
#include <string>

namespace catwalk::test {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command, capturing stdout and stderr.
CommandResult run_command(const std::string& command);

// Path of a file inside the source tree (e.g. "data-samples").
std::string source_path(const std::string& relative);
// Path of a built executable (e.g. "catwalk-etl").
std::string binary_path(const std::string& name);
// A fresh empty temporary directory, removed by the caller (or left for inspection).
std::string make_temp_dir(const std::string& prefix);

class PgServer {
 public:
  PgServer();  // throws std::runtime_error with the server log when the start fails
  ~PgServer();
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  const std::string& url() const { return url_; }
  const std::string& dir() const { return dir_; }
  int port() const { return port_; }
  void stop();   // fast shutdown (for restart tests)
  void start();  // start again on the same folder and port
  // SIGSTOP / SIGCONT to the postmaster and every process it started: a frozen server accepts
  // connections and answers nothing (for deadline tests). Throws when the server is not running.
  void freeze();
  void thaw();

 private:
  std::string dir_;
  std::string url_;
  int port_ = 0;
};

// One server for the whole test binary, started on first use.
PgServer& shared_server();

}  // namespace catwalk::test
