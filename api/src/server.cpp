#include "catwalk/api/server.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"
#include "doc_cache.hpp"
#include "json.hpp"
#include "metrics.hpp"
#include "pool.hpp"
#include "repository.hpp"
#include "routes.hpp"

namespace catwalk::api {

namespace {

using Clock = std::chrono::steady_clock;
using httplib::Request;
using httplib::Response;
using HandlerResponse = httplib::Server::HandlerResponse;

const std::string kJsonType = "application/json; charset=utf-8";
constexpr std::size_t kMaxBodyBytes = 16 * 1024;
constexpr int kListenBacklog = 1024;

// cpp-httplib 0.11.4 listens with a backlog of 5 and offers no setter; the listening socket is a
// protected member, and Linux resizes the backlog on a second listen() of a bound socket.
class HttpServer : public httplib::Server {
 public:
  bool relisten(int backlog) {
    auto sock = svr_sock_.load();
    return sock != INVALID_SOCKET && ::listen(sock, backlog) == 0;
  }
};

// What the logger needs to know about the request a worker is answering. A worker thread
// serves one request at a time, so a thread_local is the request's own slot.
struct RequestState {
  Clock::time_point start{};
  Route route = Route::kUnmatched;
};
thread_local RequestState t_request;

void send_json(Response& res, int status, std::string body) {
  res.status = status;
  res.body = std::move(body);
  res.set_header("Content-Type", kJsonType);
}

void send_error(Response& res, int status, std::string_view code, std::string_view message) {
  send_json(res, status, error_body(code, message));
}

void send_unavailable(Response& res) {
  res.set_header("Retry-After", "1");
  send_error(res, 503, "unavailable",
             "The database is unreachable right now; retry in a few seconds.");
}

// The database answers but has no published catalogue (no migrations, or no load yet).
bool catalogue_missing(const std::exception& e) {
  auto* db = dynamic_cast<const pg::DbError*>(&e);
  return db != nullptr && (db->sqlstate() == "42P01" || db->sqlstate() == "3F000");
}

std::string invalid_id_message(std::string_view raw) {
  std::string m =
      "The product id must be a positive whole number up to 2147483647, like /products/1; got \"";
  m.append(raw.substr(0, 40));
  m += "\".";
  return m;
}

// Keeps log lines one line each and short, whatever the client put in the path.
std::string printable(std::string_view s) {
  if (s.empty()) return "-";
  std::string out;
  out.reserve(std::min<std::size_t>(s.size(), 200));
  for (char c : s.substr(0, 200)) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f || c == ' ' ? '?' : c);
  }
  if (s.size() > 200) out += "...";
  return out;
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o)
      : opt(std::move(o)),
        pool(opt.db_url, opt.db_pool, std::chrono::milliseconds(2000)),
        repo(pool),
        cache(opt.cache_mb * 1024 * 1024) {}

  ServerOptions opt;
  HttpServer http;
  ConnectionPool pool;
  Repository repo;
  DocCache cache;
  Metrics metrics;
  std::atomic<long long> publish_version{-1};

  std::mutex watch_mu;
  std::condition_variable watch_cv;
  bool stopping = false;
  std::atomic<bool> listen_returned{false};

  void configure();
  HandlerResponse pre_route(const Request& req, Response& res);
  void handle_with_body(const Request& req, Response& res);
  void handle_get(const RouteMatch& m, const Request& req, Response& res);
  void product_doc(DocKind kind, std::string_view raw_id, Response& res);
  void product_page(const Request& req, Response& res);
  std::optional<std::int32_t> session(const Request& req, Response& res);
  void get_cart(const Request& req, Response& res);
  void post_cart(const Request& req, Response& res);
  void ready(Response& res);
  void render_metrics(Response& res);
  bool error_response(const Request& req, Response& res);
  void log_request(const Request& req, const Response& res);
  void watch_publish();

  // Runs a handler body, turning infrastructure failures into the contract's 503 and anything
  // unexpected into a logged 500: no exception ever reaches cpp-httplib from a handler.
  template <typename F>
  void guarded(Response& res, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      if (catalogue_missing(e)) {
        res.set_header("Retry-After", "5");
        send_error(res, 503, "unavailable",
                   "The catalogue is not loaded yet: run `catwalk-etl migrate` and `catwalk-etl "
                   "load` on this database.");
      } else if (is_unavailable(e)) {
        send_unavailable(res);
      } else {
        catwalk::log("error: {}", e.what());
        send_error(res, 500, "internal",
                   "The server failed to answer this request; it has been logged.");
      }
    }
  }
};

void Server::Impl::configure() {
  // Tuning measured in shared/perf-notes.md: without nodelay every keep-alive response waits
  // for the client's delayed ACK; the worker pool must cover every concurrent connection
  // because a worker owns its connection for its keep-alive life; keep-alive max count 5
  // (the default) forces a reconnect every 5 requests.
  http.set_tcp_nodelay(true);
  const int threads = std::max(opt.threads, 2);
  // cpp-httplib owns and deletes the queue it gets from this factory.
  http.new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<std::size_t>(threads));
  };
  http.set_keep_alive_max_count(100000);
  // An idle (keep-alive or never-used) connection frees its worker after io_timeout_s; so does
  // a client that stalls mid-request or stops reading its response.
  const auto timeout = static_cast<time_t>(std::max(opt.io_timeout_s, 1));
  http.set_keep_alive_timeout(timeout);
  http.set_read_timeout(timeout, 0);
  http.set_write_timeout(timeout, 0);
  http.set_payload_max_length(kMaxBodyBytes);
  http.set_default_headers({{"Access-Control-Allow-Origin", "*"}});

  http.set_pre_routing_handler(
      [this](const Request& req, Response& res) { return pre_route(req, res); });
  // Methods that carry a body reach these after cpp-httplib has read it (so the connection
  // stays usable and oversized bodies get 413); everything else is answered in pre_route.
  auto body_handler = [this](const Request& req, Response& res) { handle_with_body(req, res); };
  http.Post(".*", body_handler);
  http.Put(".*", body_handler);
  http.Patch(".*", body_handler);
  http.Delete(".*", body_handler);
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
        return error_response(req, res) ? HandlerResponse::Handled : HandlerResponse::Unhandled;
      }));
  http.set_exception_handler([this](const Request&, Response& res, std::exception_ptr ep) {
    guarded(res, [&] {
      if (ep) std::rethrow_exception(ep);
      throw std::runtime_error("unknown exception");
    });
  });
  http.set_logger([this](const Request& req, const Response& res) { log_request(req, res); });
}

HandlerResponse Server::Impl::pre_route(const Request& req, Response& res) {
  t_request.start = Clock::now();
  RouteMatch m = match_route(req.path);
  t_request.route = m.route;
  const std::string& method = req.method;
  if (method != "GET" && method != "HEAD" && method != "OPTIONS") return HandlerResponse::Unhandled;
  guarded(res, [&] {
    if (m.route == Route::kUnmatched) {
      send_error(res, 404, "not_found",
                 "No such route; see openapi.yaml for the routes this API serves.");
    } else if (method == "OPTIONS") {
      // CORS preflight: browsers send it before a POST with a JSON body or a user_session header.
      res.status = 204;
      std::string allow(allowed_methods(m.route));
      res.set_header("Allow", allow);
      res.set_header("Access-Control-Allow-Methods", allow);
      auto requested = req.get_header_value("Access-Control-Request-Headers");
      res.set_header("Access-Control-Allow-Headers",
                     requested.empty() ? "Content-Type, user_session" : requested);
      res.set_header("Access-Control-Max-Age", "86400");
    } else {
      handle_get(m, req, res);
    }
  });
  return HandlerResponse::Handled;
}

void Server::Impl::handle_get(const RouteMatch& m, const Request& req, Response& res) {
  switch (m.route) {
    case Route::kStyles:
      return product_doc(DocKind::kStyles, m.id, res);
    case Route::kProduct:
      return product_doc(DocKind::kDetail, m.id, res);
    case Route::kRelated:
      return product_doc(DocKind::kRelated, m.id, res);
    case Route::kProducts:
      return product_page(req, res);
    case Route::kCart:
      return get_cart(req, res);
    case Route::kHealth:
      return send_json(res, 200, R"({"status":"ok"})");
    case Route::kReady:
      return ready(res);
    case Route::kMetrics:
      return render_metrics(res);
    default:
      send_error(res, 404, "not_found", "No such route.");
  }
}

void Server::Impl::handle_with_body(const Request& req, Response& res) {
  guarded(res, [&] {
    RouteMatch m = match_route(req.path);
    if (m.route == Route::kUnmatched) {
      send_error(res, 404, "not_found",
                 "No such route; see openapi.yaml for the routes this API serves.");
    } else if (!method_allowed(m.route, req.method)) {
      res.set_header("Allow", std::string(allowed_methods(m.route)));
      send_error(res, 405, "method_not_allowed",
                 fmt::format("{} is not allowed here; this route accepts {}.",
                             printable(req.method), allowed_methods(m.route)));
    } else {
      post_cart(req, res);
    }
  });
}

// The hot path: a cache lookup, else one prepared primary-key SELECT returning the finished
// body as text; nothing is parsed or re-serialized.
void Server::Impl::product_doc(DocKind kind, std::string_view raw_id, Response& res) {
  auto id = parse_id(raw_id);
  if (!id) return send_error(res, 400, "invalid_id", invalid_id_message(raw_id));
  const std::uint64_t key =
      (static_cast<std::uint64_t>(kind) << 32) | static_cast<std::uint32_t>(*id);
  const bool use_cache = cache.enabled();
  std::uint64_t generation = 0;
  if (use_cache) {
    if (auto doc = cache.get(key)) return send_json(res, 200, *doc);
    // Read before the query: see DocCache::put.
    generation = cache.generation();
  }
  auto doc = repo.product_doc(kind, *id);
  if (!doc) {
    return send_error(res, 404, "not_found", fmt::format("No product has id {}.", *id));
  }
  if (use_cache) cache.put(key, generation, *doc);
  send_json(res, 200, std::move(*doc));
}

void Server::Impl::product_page(const Request& req, Response& res) {
  std::int64_t page = 1, count = 5;
  if (req.has_param("page")) {
    auto v = parse_positive(req.get_param_value("page"));
    if (!v)
      return send_error(res, 400, "invalid_query",
                        "page must be a positive whole number, like ?page=2.");
    page = *v;
  }
  if (req.has_param("count")) {
    auto v = parse_positive(req.get_param_value("count"));
    if (!v || *v > 1000) {
      return send_error(res, 400, "invalid_query",
                        "count must be a whole number from 1 to 1000, like ?count=5.");
    }
    count = *v;
  }
  auto bounds = page_bounds(page, count);
  if (!bounds) return send_json(res, 200, "[]");
  send_json(res, 200, repo.product_page(bounds->first, bounds->second));
}

std::optional<std::int32_t> Server::Impl::session(const Request& req, Response& res) {
  if (!req.has_header("user_session")) {
    send_error(
        res, 400, "invalid_session",
        "The user_session header is required: a positive whole number identifying the cart.");
    return std::nullopt;
  }
  auto s = parse_id(req.get_header_value("user_session"));
  if (!s) {
    send_error(res, 400, "invalid_session",
               "The user_session header must be a positive whole number up to 2147483647.");
  }
  return s;
}

void Server::Impl::get_cart(const Request& req, Response& res) {
  auto s = session(req, res);
  if (!s) return;
  auto lines = repo.cart(*s);
  std::string out = "[";
  for (const auto& l : lines) {
    if (out.size() > 1) out += ',';
    fmt::format_to(std::back_inserter(out), R"({{"sku_id":{},"count":{}}})", l.sku_id, l.count);
  }
  out += ']';
  send_json(res, 200, std::move(out));
}

void Server::Impl::post_cart(const Request& req, Response& res) {
  auto s = session(req, res);
  if (!s) return;
  auto parsed = parse_cart_add(req.body);
  if (auto* message = std::get_if<std::string>(&parsed))
    return send_error(res, 400, "invalid_body", *message);
  const auto& add = std::get<CartAdd>(parsed);
  auto total = repo.add_to_cart(*s, add.sku_id, add.count);
  if (!total) {
    return send_error(
        res, 400, "unknown_sku",
        fmt::format("No sku has id {}; use a sku id from /products/:id/styles.", add.sku_id));
  }
  send_json(res, 201, fmt::format(R"({{"sku_id":{},"count":{}}})", add.sku_id, *total));
}

void Server::Impl::ready(Response& res) {
  try {
    repo.ping();
    send_json(res, 200, R"({"status":"ready"})");
  } catch (const std::exception& e) {
    res.set_header("Retry-After", "1");
    send_error(res, 503, "unavailable", fmt::format("The database does not answer: {}", e.what()));
  }
}

void Server::Impl::render_metrics(Response& res) {
  std::string out;
  out.reserve(8192);
  metrics.render(out);
  auto it = std::back_inserter(out);
  auto p = pool.stats();
  fmt::format_to(
      it,
      "# HELP catwalk_db_pool_size Database connections the pool may hold.\n"
      "# TYPE catwalk_db_pool_size gauge\ncatwalk_db_pool_size {}\n"
      "# HELP catwalk_db_pool_in_use Database connections lent to requests now.\n"
      "# TYPE catwalk_db_pool_in_use gauge\ncatwalk_db_pool_in_use {}\n"
      "# HELP catwalk_db_pool_borrows_total Connection borrows.\n"
      "# TYPE catwalk_db_pool_borrows_total counter\ncatwalk_db_pool_borrows_total {}\n"
      "# HELP catwalk_db_pool_waits_total Borrows that waited for a free connection.\n"
      "# TYPE catwalk_db_pool_waits_total counter\ncatwalk_db_pool_waits_total {}\n"
      "# HELP catwalk_db_pool_timeouts_total Borrows that gave up waiting (answered 503).\n"
      "# TYPE catwalk_db_pool_timeouts_total counter\ncatwalk_db_pool_timeouts_total {}\n"
      "# HELP catwalk_db_connects_total Database connections opened.\n"
      "# TYPE catwalk_db_connects_total counter\ncatwalk_db_connects_total {}\n"
      "# HELP catwalk_db_connect_failures_total Failed attempts to open a database connection.\n"
      "# TYPE catwalk_db_connect_failures_total counter\ncatwalk_db_connect_failures_total {}\n",
      p.size, p.in_use, p.borrows, p.waits, p.timeouts, p.connects, p.connect_failures);
  fmt::format_to(
      it,
      "# HELP catwalk_cache_hits_total Document cache hits.\n"
      "# TYPE catwalk_cache_hits_total counter\ncatwalk_cache_hits_total {}\n"
      "# HELP catwalk_cache_misses_total Document cache misses.\n"
      "# TYPE catwalk_cache_misses_total counter\ncatwalk_cache_misses_total {}\n"
      "# HELP catwalk_cache_invalidations_total Cache flushes (publishes seen, database lost).\n"
      "# TYPE catwalk_cache_invalidations_total counter\ncatwalk_cache_invalidations_total {}\n"
      "# HELP catwalk_cache_entries Documents in the cache.\n"
      "# TYPE catwalk_cache_entries gauge\ncatwalk_cache_entries {}\n"
      "# HELP catwalk_cache_bytes Bytes of documents in the cache.\n"
      "# TYPE catwalk_cache_bytes gauge\ncatwalk_cache_bytes {}\n"
      "# HELP catwalk_publish_version catwalk_publish.version last seen (-1: unknown).\n"
      "# TYPE catwalk_publish_version gauge\ncatwalk_publish_version {}\n",
      cache.hits(), cache.misses(), cache.invalidations(), cache.entries(), cache.bytes(),
      publish_version.load());
  res.status = 200;
  res.body = std::move(out);
  res.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
}

// Called by cpp-httplib for every response with status >= 400. Responses a handler already
// wrote keep their body; the ones cpp-httplib made itself (unparseable request, body too large,
// URI too long, no handler) get the contract's JSON shape here.
bool Server::Impl::error_response(const Request& req, Response& res) {
  if (!res.body.empty()) return false;
  switch (res.status) {
    case 413:
      send_error(res, 413, "payload_too_large",
                 fmt::format("The request body is larger than {} bytes; send a smaller body.",
                             kMaxBodyBytes));
      break;
    case 414:
      send_error(res, 414, "uri_too_long", "The request URI is too long.");
      break;
    case 404: {
      RouteMatch m = match_route(req.path);
      if (m.route != Route::kUnmatched) {
        res.set_header("Allow", std::string(allowed_methods(m.route)));
        send_error(res, 405, "method_not_allowed",
                   fmt::format("This route accepts {}.", allowed_methods(m.route)));
      } else {
        send_error(res, 404, "not_found",
                   "No such route; see openapi.yaml for the routes this API serves.");
      }
      break;
    }
    case 400:
      send_error(res, 400, "bad_request", "The request is not valid HTTP/1.1.");
      break;
    case 503:
      send_unavailable(res);
      break;
    default:
      if (res.status >= 500) {
        send_error(res, res.status, "internal",
                   "The server failed to answer this request; it has been logged.");
      } else {
        send_error(res, res.status, "bad_request", "The request cannot be answered as sent.");
      }
  }
  return true;
}

void Server::Impl::log_request(const Request& req, const Response& res) {
  // Requests cpp-httplib rejected before routing never set a start time: count them as 0 ms.
  auto now = Clock::now();
  std::int64_t micros = 0;
  Route route = Route::kUnmatched;
  if (t_request.start != Clock::time_point{}) {
    micros = std::chrono::duration_cast<std::chrono::microseconds>(now - t_request.start).count();
    route = t_request.route;
  }
  t_request = {};
  metrics.record(route, res.status, micros);
  if (opt.access_log) {
    catwalk::log("{} {} {} {} {:.3f}ms", printable(req.method), printable(req.path), res.status,
                 res.body.size(), static_cast<double>(micros) / 1000.0);
  }
}

// Watches public.catwalk_publish.version on a connection of its own and flushes the document
// cache when it changes, so a publish is served within one poll interval. While the version
// cannot be read the cache is off: GETs then reach the database and answer 503 if it is down.
void Server::Impl::watch_publish() {
  std::optional<pg::Connection> conn;
  long long seen = -1;
  const auto interval = std::chrono::milliseconds(std::clamp(opt.publish_poll_ms, 10, 500));
  for (;;) {
    {
      std::unique_lock lock(watch_mu);
      if (watch_cv.wait_for(lock, interval, [&] { return stopping; })) break;
    }
    if (opt.cache_mb == 0) continue;
    try {
      if (!conn || !conn->ok()) {
        conn.reset();
        conn.emplace(opt.db_url);
      }
      auto r = conn->exec("SELECT version FROM public.catwalk_publish");
      long long v = r.rows() > 0 ? r.get_int(0, 0) : 0;
      if (v != seen) {
        cache.invalidate();
        seen = v;
        publish_version.store(v);
      }
      cache.set_usable(true);
    } catch (const std::exception&) {
      if (cache.enabled())
        catwalk::log("publish watcher: cannot read catwalk_publish; document cache off");
      cache.set_usable(false);
      cache.invalidate();
      seen = -1;
      conn.reset();
    }
  }
  // stop() may have raced with the start of listen(): keep stopping until run() is past it.
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
    throw std::runtime_error(
        fmt::format("cannot listen on {}:{}: the port is in use or not allowed; pick another with "
                    "--port or PORT",
                    im.opt.host, port));
  }
  if (!im.http.relisten(kListenBacklog))
    catwalk::log("warning: could not raise the listen backlog");
  im.opt.port = port;
  return port;
}

void Server::run() {
  auto& im = *impl_;
  std::thread watcher([&im] { im.watch_publish(); });
  bool stopping;
  {
    std::lock_guard lock(im.watch_mu);
    stopping = im.stopping;
  }
  if (!stopping) im.http.listen_after_bind();
  im.listen_returned.store(true);
  stop();
  watcher.join();
}

void Server::stop() {
  {
    std::lock_guard lock(impl_->watch_mu);
    impl_->stopping = true;
  }
  impl_->watch_cv.notify_all();
}

}  // namespace catwalk::api
