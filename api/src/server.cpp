// catwalk::api::Server: owns the parts (connection pool, repository, document cache and its
// refresher, metrics, handlers), wires the handlers into cpp-httplib with the measured tuning,
// optionally waits for a warm cache before binding (--warm-wait), and runs the listener until
// stop().
#include "catwalk/api/server.hpp"

#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "cache_refresher.hpp"
#include "catwalk/log.hpp"
#include "doc_cache.hpp"
#include "handlers.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "miss_batcher.hpp"
#include "pool.hpp"
#include "repository.hpp"

namespace catwalk::api {

namespace {

using httplib::Request;
using httplib::Response;
using HandlerResponse = httplib::Server::HandlerResponse;

constexpr int kListenBacklog = 1024;
using Clock = std::chrono::steady_clock;

std::string port_error(const std::string& host, int port) {
  return fmt::format(
      "cannot listen on {}:{}: the port is in use or not allowed; pick another with --port or PORT",
      host, port);
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o)
      : opt(std::move(o)),
        pool(opt.db_url, opt.db_pool, std::chrono::milliseconds(2000)),
        read_pool(opt.read_db_url.empty()
                      ? nullptr
                      : std::make_unique<ConnectionPool>(opt.read_db_url, opt.db_pool,
                                                         std::chrono::milliseconds(2000))),
        repo(pool, std::chrono::milliseconds(opt.db_timeout_ms), read_pool.get()),
        cache(opt.cache_mb * 1024 * 1024),
        // The watcher reads the publish version where the catalogue is read: the cache is
        // flushed when the replica has replayed a publish, not before.
        refresher({opt.read_db_url.empty() ? opt.db_url : opt.read_db_url, opt.cache_mb > 0,
                   opt.publish_poll_ms, opt.warm_batch_rows, opt.warm_pause_ms, opt.cache_dir,
                   opt.snapshot_write_limit, opt.snapshot_delay_ms},
                  repo, cache),
        misses(
            cache,
            [this](std::span<const DocRequest> wanted, Deadline deadline,
                   const MissBatcher::Sink& sink) { repo.product_docs(wanted, deadline, sink); },
            std::chrono::milliseconds(opt.db_timeout_ms)),
        handlers(repo, cache, misses, metrics, pool, refresher, opt.access_log, opt.max_age_s) {}

  ServerOptions opt;
  HttpServer http;
  ConnectionPool pool;                        // the primary: carts and writes
  std::unique_ptr<ConnectionPool> read_pool;  // the catalogue's replica (--read-db), or none
  Repository repo;
  DocCache cache;
  Metrics metrics;
  CacheRefresher refresher;
  MissBatcher misses;
  Handlers handlers;

  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopping = false;
  std::atomic<bool> listen_returned{false};

  void configure();
  void stop_listener();
};

void Server::Impl::configure() {
  // Tuning measured (bench/README.md, "cpp-httplib 0.11.4: the tuning, measured"): without
  // nodelay every keep-alive response waits for the client's delayed ACK; the worker pool must
  // cover every busy connection because a worker serves its connection while it sends requests;
  // keep-alive max count 5 (the default) forces a reconnect every 5 requests.
  http.set_tcp_nodelay(true);
  http.set_connection_limits({.threads = std::max(opt.threads, 2),
                              .max_queued = opt.max_queued,
                              .header_timeout_s = opt.header_timeout_s});
  http.set_keep_alive_max_count(100000);
  // An idle (keep-alive or never-used) connection frees its worker after io_timeout_s (at once
  // when others wait: http_server.hpp), so does a client that stops reading its response; a
  // stalled request after header_timeout_s.
  const auto timeout = static_cast<time_t>(std::max(opt.io_timeout_s, 1));
  http.set_keep_alive_timeout(timeout);
  http.set_read_timeout(timeout, 0);
  http.set_write_timeout(timeout, 0);
  http.set_payload_max_length(kMaxBodyBytes);
  http.set_default_headers({{"Access-Control-Allow-Origin", "*"}});

  http.set_pre_routing_handler(
      [this](const Request& req, Response& res) { return handlers.pre_route(req, res); });
  // Methods that carry a body reach the dispatch after cpp-httplib has read it (so the
  // connection stays usable and oversized bodies get 413); the others are dispatched from the
  // pre-routing hook.
  auto body_handler = [this](const Request& req, Response& res) { handlers.dispatch(req, res); };
  http.Post(".*", body_handler);
  http.Put(".*", body_handler);
  http.Patch(".*", body_handler);
  http.Delete(".*", body_handler);
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
        return handlers.error_response(req, res) ? HandlerResponse::Handled
                                                 : HandlerResponse::Unhandled;
      }));
  http.set_exception_handler([this](const Request&, Response& res, std::exception_ptr ep) {
    handlers.exception_response(res, ep);
  });
  http.set_logger(
      [this](const Request& req, const Response& res) { handlers.log_request(req, res); });
  http.set_connection_answer_hook(
      [this](const ConnectionAnswer& a) { handlers.log_connection_answer(a); });
}

// Waits for stop(), then stops the listener. stop() may have raced with the start of listen():
// keep stopping until run() is past it.
void Server::Impl::stop_listener() {
  {
    std::unique_lock lock(stop_mu);
    stop_cv.wait(lock, [&] { return stopping; });
  }
  while (!listen_returned.load()) {
    http.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->configure();
}

Server::~Server() = default;

int Server::bind() {
  auto& im = *impl_;
  int port = im.opt.port;
  if (port == 0) {
    port = im.http.bind_to_any_port(im.opt.host);
    if (port < 0)
      throw std::runtime_error(fmt::format("cannot bind {}: no free port", im.opt.host));
  } else if (!im.http.bind_to_port(im.opt.host, port)) {
    throw std::runtime_error(port_error(im.opt.host, port));
  }
  if (!im.http.relisten(kListenBacklog))
    catwalk::log("warning: could not raise the listen backlog");
  im.opt.port = port;
  return port;
}

// Binds (as the listener does: SO_REUSEADDR) without listen(), then closes: nothing can connect.
void Server::check_port() const {
  const auto& o = impl_->opt;
  if (o.port == 0) return;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(o.port);
  if (::getaddrinfo(o.host.c_str(), service.c_str(), &hints, &found) != 0)
    throw std::runtime_error(port_error(o.host, o.port));
  bool ok = false;
  for (const addrinfo* a = found; a != nullptr && !ok; a = a->ai_next) {
    const int s = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (s < 0) continue;
    const int yes = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    ok = ::bind(s, a->ai_addr, a->ai_addrlen) == 0;
    ::close(s);
  }
  ::freeaddrinfo(found);
  if (!ok) throw std::runtime_error(port_error(o.host, o.port));
}

std::optional<double> Server::warm_up() {
  auto& im = *impl_;
  if (im.opt.warm_wait_s <= 0) return 0.0;
  const auto t0 = Clock::now();
  im.refresher.start();
  const auto end = im.refresher.wait_ready(t0 + std::chrono::seconds(im.opt.warm_wait_s),
                                           !im.opt.warm_wait_for_db);
  if (end == CacheRefresher::WaitEnd::kStopped) return std::nullopt;
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  if (end == CacheRefresher::WaitEnd::kUnreachable) {
    // Nothing to warm from: serve (503 on the catalogue routes) rather than refuse connections;
    // the warm-up starts once the database answers.
    catwalk::log(
        "catwalk-api: the catalogue cannot be read (database unreachable): listening without "
        "a warm cache (an explicit --warm-wait S waits up to S seconds for the database)");
  }
  if (end == CacheRefresher::WaitEnd::kTimeout) {
    // Serving as a start without the wait would: misses read the database, which answers 503
    // while it cannot be reached; the warm-up goes on in the background.
    catwalk::log(
        "catwalk-api: the cache is not warm after --warm-wait {} s ({}; {} documents cached): "
        "listening anyway",
        im.opt.warm_wait_s,
        im.refresher.catalogue_readable()
            ? "the warm-up is still reading the catalogue"
            : "the catalogue cannot be read: database unreachable, or nothing published",
        im.cache.entries());
  }
  return waited;
}

void Server::run() {
  auto& im = *impl_;
  im.refresher.start();
  std::thread stopper([&im] { im.stop_listener(); });
  bool stopping;
  {
    std::lock_guard lock(im.stop_mu);
    stopping = im.stopping;
  }
  if (!stopping) im.http.listen_after_bind();
  im.listen_returned.store(true);
  stop();
  stopper.join();
  im.refresher.join();
}

void Server::stop() {
  {
    std::lock_guard lock(impl_->stop_mu);
    impl_->stopping = true;
  }
  impl_->stop_cv.notify_all();
  impl_->refresher.request_stop();
}

}  // namespace catwalk::api
