// catwalk-api: serves the published catalogue and the carts over HTTP (see docs/api-contract.md).
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdlib>
#include <optional>
#include <thread>

#include "catwalk/api/server.hpp"
#include "catwalk/config.hpp"
#include "catwalk/log.hpp"
#include "catwalk/version.hpp"
#include "memory_limit.hpp"
#include "snapshot.hpp"

namespace {
// Exit codes (documented in the README).
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitCannotListen = 3;
constexpr int kDefaultWarmWait = 60;  // seconds: see --warm-wait

// The PORT variable, as platforms (Heroku, Cloud Run, ...) set it; 0 when unset.
// Throws CLI::ValidationError when it is set to something that is not a port.
int port_from_env() {
  const char* p = std::getenv("PORT");
  if (p == nullptr || *p == '\0') return 0;
  char* end = nullptr;
  long v = std::strtol(p, &end, 10);
  if (*end != '\0' || v < 1 || v > 65535) {
    throw CLI::ValidationError("PORT",
                               fmt::format("PORT=\"{}\" is not a port number (1-65535)", p));
  }
  return static_cast<int>(v);
}
}  // namespace

int main(int argc, char** argv) {
  catwalk::api::ServerOptions opt;
  std::string db_flag;
  int port = 0;
  CLI::App app{"catwalk-api: the Catwalk products and cart HTTP API"};
  app.set_version_flag("--version", fmt::format("catwalk-api {}", catwalk::kVersionText));
  app.add_option("--db", db_flag,
                 "PostgreSQL URL or conninfo (default: DATABASE_URL, else libpq PG* variables)");
  app.add_option("--read-db", opt.read_db_url,
                 "PostgreSQL URL or conninfo of a streaming replica for the catalogue reads "
                 "(documents, pages, publish watcher, warm-up); carts and writes stay on --db "
                 "(default: --db serves everything)");
  app.add_option("--port", port, "TCP port (default: PORT, else 3000)")
      ->check(CLI::Range(1, 65535));
  app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
  app.add_option("--threads", opt.threads,
                 "HTTP worker threads: at least the number of concurrent client connections")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  app.add_option("--db-pool", opt.db_pool, "database connections (a few per CPU core is best)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  // The default follows the memory this process may use (cgroup limit, else the machine's).
  const auto limit = catwalk::api::memory_limit();
  opt.cache_mb = catwalk::api::default_cache_mb(limit);
  app.add_option("--cache-mb", opt.cache_mb,
                 "document cache budget in MiB (0 disables the cache; default: half the memory "
                 "limit, at most 4096)")
      ->capture_default_str();
  opt.cache_dir = catwalk::api::default_cache_dir();
  app.add_option("--cache-dir", opt.cache_dir,
                 "folder of the cache's snapshots, which a restart maps instead of reading the "
                 "catalogue again (created 0700; '' disables snapshots)")
      ->capture_default_str();
  int snapshot_delay_s = opt.snapshot_delay_ms / 1000;
  app.add_option("--snapshot-delay", snapshot_delay_s,
                 "seconds between a warm-up (a start, a publish's swap) and writing its snapshot: "
                 "not in the first seconds, when requests need the cores")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  app.add_option("--max-age", opt.max_age_s,
                 "Cache-Control max-age, in seconds, of the catalogue routes' answers")
      ->check(CLI::Range(0, 31536000))
      ->capture_default_str();
  app.add_option(
         "--timeout", opt.io_timeout_s,
         "seconds an idle keep-alive connection, or a stalled response write, may hold a worker")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--header-timeout", opt.header_timeout_s,
                 "seconds a request's line, headers and body may take to arrive (else 408)")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--max-queued", opt.max_queued,
                 "connections that may wait for a free worker; more are answered 503 at once")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  // The default gate: a cold start answers every request from the database while the warm-up
  // reads the whole catalogue on the same cores (measured at full scale: 0.34-0.48x the warm
  // throughput, p99 7-10 ms, in its first 5 s); listening once warm serves at the warm rate.
  opt.warm_wait_s = kDefaultWarmWait;
  auto* warm_wait =
      app.add_option("--warm-wait", opt.warm_wait_s,
                     "seconds to wait, at most, for the document cache to be warm before "
                     "listening when no snapshot serves (the port refuses connections meanwhile, "
                     "so a load balancer sends requests to warm instances). Given explicitly, it "
                     "also waits for a database that cannot be read yet; by default an "
                     "unreachable database opens the port at once. 0 listens at once and warms "
                     "while serving")
          ->check(CLI::Range(0, 86400))
          ->capture_default_str();
  bool quiet = false;
  app.add_flag("--no-access-log", quiet, "do not log one line per request on stderr");
  try {
    app.parse(argc, argv);
    if (port == 0) port = port_from_env();
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  opt.access_log = !quiet;
  opt.warm_wait_for_db = warm_wait->count() > 0;
  opt.snapshot_delay_ms = snapshot_delay_s * 1000;
  opt.port = port != 0 ? port : 3000;
  opt.db_url = catwalk::resolve_db_url(db_flag);
  // Requests stop waiting after ServerOptions::db_timeout_ms whatever the server does; this makes
  // the server itself end a statement whose cancel did not reach it (unless the operator chose
  // otherwise through libpq's own variable).
  setenv("PGOPTIONS", "-c statement_timeout=5000", 0);

  // SIGTERM/SIGINT are taken by a thread of ours (blocked everywhere else, inherited by every
  // thread created below), which stops the server: run() returns once in-flight requests end.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  catwalk::api::Server server(opt);
  std::atomic<bool> done{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (!done.load()) {
      catwalk::log("catwalk-api: signal {} received, finishing in-flight requests", sig);
      server.stop();
    }
  });
  const auto end_signals = [&] {
    done.store(true);
    pthread_kill(signals.native_handle(), SIGTERM);  // wakes the signal thread if no signal came
    signals.join();
  };

  // With --warm-wait the port is bound only once the cache is warm: a taken port is told at
  // once, not after the wait.
  int bound = 0;
  std::optional<double> warmed;
  try {
    if (opt.warm_wait_s > 0) {
      server.check_port();
      catwalk::log(
          "catwalk-api: warming the document cache before listening on {}:{} (at most "
          "{} s, --warm-wait; 0 listens at once)",
          opt.host, opt.port, opt.warm_wait_s);
    }
    warmed = server.warm_up();
    if (warmed) bound = server.bind();
  } catch (const std::exception& e) {
    catwalk::log("catwalk-api: {}", e.what());
    end_signals();
    return kExitCannotListen;
  }
  if (!warmed) {  // a signal during the wait: nothing was served
    end_signals();
    catwalk::log("catwalk-api stopped before listening");
    return kExitOk;
  }
  catwalk::log(
      "catwalk-api {} listening on http://{}:{}{} (database {}, {} threads, {} db connections, "
      "document cache {} MiB, snapshots {}; memory limit {})",
      catwalk::kVersionText, opt.host == "0.0.0.0" ? "localhost" : opt.host, bound,
      opt.warm_wait_s > 0 ? fmt::format(" after {:.1f} s warm-up", *warmed) : std::string(),
      opt.db_url.empty() ? "from PG* variables" : catwalk::redact_db_url(opt.db_url), opt.threads,
      opt.db_pool, opt.cache_mb, opt.cache_dir.empty() ? "off" : "in " + opt.cache_dir,
      limit ? fmt::format("{} MiB from {}", limit->bytes >> 20, limit->source) : "unknown");
  if (!opt.read_db_url.empty())
    catwalk::log("catwalk-api: catalogue reads from {}", catwalk::redact_db_url(opt.read_db_url));

  server.run();
  end_signals();
  catwalk::log("catwalk-api stopped");
  return kExitOk;
}
