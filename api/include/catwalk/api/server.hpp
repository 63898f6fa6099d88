#pragma once
// The Catwalk HTTP API server: every route of the contract (docs/api-contract.md), at the root
// and under /catwalk, on cpp-httplib, reading the documents the loader precomputed at publish time.
//
// Thread-safety: construct, warm_up(), bind() and run() from one thread; stop() may be called
// from any thread (a signal-handling thread, a test): it ends warm_up() at once and makes run()
// return after in-flight requests end.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace catwalk::api {

struct ServerOptions {
  std::string db_url;       // libpq conninfo or URI; "" = libpq defaults (PG* variables)
  std::string read_db_url;  // catalogue reads (a streaming replica); "" = db_url serves them too
  std::string host = "0.0.0.0";
  int port = 3000;             // 0 = any free port (tests)
  int threads = 128;           // HTTP workers: one per concurrently busy connection
  int db_pool = 6;             // database connections, each borrowed by one request at a time
  int db_timeout_ms = 2000;    // a request's whole wait for the database (connection, statement)
  std::size_t cache_mb = 512;  // document cache budget; 0 disables it (used as filled; the
                               // binary's default follows the memory limit: memory_limit.hpp)
  int max_age_s = 60;          // Cache-Control max-age of the catalogue routes' answers
  int publish_poll_ms = 250;   // how often catwalk_publish.version is checked (<= 500 ms)
  int warm_batch_rows = 5000;  // warm-up: products between two checks for a stop or a pause
  int warm_pause_ms = 0;       // warm-up: pause every warm_batch_rows; tests slow it with it
  std::string cache_dir;       // the cache's snapshots (snapshot.hpp); "" = none (the binary's
                               // default: $XDG_CACHE_HOME/catwalk-api or ~/.cache/catwalk-api)
  std::size_t snapshot_write_limit = SIZE_MAX;  // tests: a full disk after this many bytes
  int snapshot_delay_ms = 10000;  // how long after a warm-up or a publish's swap it is written
  int io_timeout_s = 5;           // idle keep-alive, and writing a response to a slow client
  int header_timeout_s = 5;       // a request's head and body must arrive within this of its start
  std::size_t max_queued = 512;   // connections waiting for a worker; beyond it new ones get 503
  bool access_log = true;         // one stderr line per request
  int warm_wait_s = 0;  // > 0: warm_up() waits at most this long for a warm cache (--warm-wait)
  // warm_up() waits for a database that cannot be read (yet), up to warm_wait_s; false: a poll
  // that failed ends the wait (catwalk-api's default gate, without an explicit --warm-wait).
  bool warm_wait_for_db = true;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket (backlog 1024). Returns the bound port, or throws
  // std::runtime_error naming the address when it is taken. Does not touch the database:
  // the API starts (and answers /health, and 503 on data routes) while PostgreSQL is down.
  int bind();
  // Throws as bind() would when the port cannot be bound now, without binding it: a start that
  // waits for its cache before bind() fails at once, not after the wait. Best effort (another
  // process may take the port meanwhile, which bind() then reports).
  void check_port() const;
  // A readiness gate for a start behind a load balancer, called before bind() (a port that is
  // not bound refuses connections, so the balancer sends requests elsewhere): with warm_wait_s
  // > 0, starts the cache's warm-up and waits until the cache serves the published catalogue
  // completely (at once when a snapshot of it was mapped), or warm_wait_s at most, which it
  // logs with the reason (a database that cannot be read never keeps the server from
  // listening longer; with warm_wait_for_db false not at all). Returns the seconds waited, or
  // nothing when stop() came first (do not listen). With warm_wait_s 0 returns 0 at once: the
  // warm-up starts in run(), while serving.
  std::optional<double> warm_up();
  // Serves until stop(). Returns after in-flight requests finish.
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace catwalk::api
