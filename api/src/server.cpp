#include "catwalk/api/server.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

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

// The cache key of a product's document of one kind.
std::uint64_t doc_key(DocKind kind, std::int32_t id) {
  return (static_cast<std::uint64_t>(kind) << 32) | static_cast<std::uint32_t>(id);
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

  // Cache warming: the watcher asks for a warm-up of a cache generation (under watch_mu); the
  // warmer thread runs one at a time, newest request first.
  std::condition_variable warm_cv;
  std::uint64_t warm_wanted = 0;  // a generation to warm; 0 = nothing asked
  std::atomic<bool> warming{false};
  std::atomic<std::uint64_t> warm_runs{0}, warm_runs_completed{0}, warmed_docs{0};
  std::atomic<double> warm_last_seconds{0};

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
  void request_warm(std::uint64_t generation);
  void warm_loop();
  bool warm(std::uint64_t generation);
  bool stop_requested();

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
  // Tuning measured (bench/README.md, "cpp-httplib 0.11.4: the tuning, measured"): without
  // nodelay every keep-alive response waits for the client's delayed ACK; the worker pool must
  // cover every concurrent connection because a worker owns its connection for its keep-alive
  // life; keep-alive max count 5 (the default) forces a reconnect every 5 requests.
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
                 "No such route; see docs/openapi.yaml for the routes this API serves.");
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
                 "No such route; see docs/openapi.yaml for the routes this API serves.");
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
  const std::uint64_t key = doc_key(kind, *id);
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
      "# HELP catwalk_cache_warming 1 while a warm-up streams documents into the cache.\n"
      "# TYPE catwalk_cache_warming gauge\ncatwalk_cache_warming {}\n"
      "# HELP catwalk_cache_warm_runs_total Warm-ups started (at start and after each publish).\n"
      "# TYPE catwalk_cache_warm_runs_total counter\ncatwalk_cache_warm_runs_total {}\n"
      "# HELP catwalk_cache_warm_runs_completed_total Warm-ups that reached the end of the "
      "catalogue or the budget.\n"
      "# TYPE catwalk_cache_warm_runs_completed_total counter\n"
      "catwalk_cache_warm_runs_completed_total {}\n"
      "# HELP catwalk_cache_warmed_documents_total Documents stored by warm-ups.\n"
      "# TYPE catwalk_cache_warmed_documents_total counter\n"
      "catwalk_cache_warmed_documents_total {}\n"
      "# HELP catwalk_cache_warm_last_seconds Duration of the last completed warm-up.\n"
      "# TYPE catwalk_cache_warm_last_seconds gauge\ncatwalk_cache_warm_last_seconds {:.3f}\n"
      "# HELP catwalk_publish_version catwalk_publish.version last seen (-1: unknown).\n"
      "# TYPE catwalk_publish_version gauge\ncatwalk_publish_version {}\n",
      cache.hits(), cache.misses(), cache.invalidations(), cache.entries(), cache.bytes(),
      warming.load() ? 1 : 0, warm_runs.load(), warm_runs_completed.load(), warmed_docs.load(),
      warm_last_seconds.load(), publish_version.load());
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
                   "No such route; see docs/openapi.yaml for the routes this API serves.");
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
      const bool published = v != seen;
      if (published) {
        cache.invalidate();
        seen = v;
        publish_version.store(v);
      }
      cache.set_usable(true);
      // After the flush (and at start, and when the database is back): the new generation is
      // what the warmer fills; a warm-up of an older one sees the bump and gives way.
      if (published) request_warm(cache.generation());
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

void Server::Impl::request_warm(std::uint64_t generation) {
  {
    std::lock_guard lock(watch_mu);
    warm_wanted = generation;
  }
  warm_cv.notify_all();
}

bool Server::Impl::stop_requested() {
  std::lock_guard lock(watch_mu);
  return stopping;
}

// The warmer thread: runs the latest warm-up asked for, until stop(). A request that arrives
// while a warm-up runs is picked up when that one gives way (its generation is then stale).
void Server::Impl::warm_loop() {
  for (;;) {
    std::uint64_t generation;
    {
      std::unique_lock lock(watch_mu);
      warm_cv.wait(lock, [&] { return stopping || warm_wanted != 0; });
      if (stopping) return;
      generation = std::exchange(warm_wanted, 0);
    }
    warm(generation);
  }
}

// Streams every product's documents into the cache in id order until the catalogue ends or the
// budget is full, without evicting (a full cache stays as warmed; misses still fill it). Stops
// early, quietly, when the generation moves on (a publish or a lost database: the watcher asks
// again when it sees the new version or the database back), or on stop(). Returns true when
// the warm-up completed.
//
// Which documents: styles, detail and related, the three per-id routes a product page calls
// with ids all over the catalogue. The list pages are not warmed: they are cheap range scans
// of adjacent rows, any (page, count) pair is a different body, and the front end asks for few.
bool Server::Impl::warm(std::uint64_t generation) {
  warming.store(true);
  warm_runs.fetch_add(1);
  const auto t0 = Clock::now();
  std::uint64_t stored = 0;
  bool completed = false;
  std::int32_t after = 0;
  const int batch_rows = std::max(opt.warm_batch_rows, 1);
  bool logged = false;
  // Interruptible by stop(); true when stopping.
  auto pause = [&](std::chrono::milliseconds d) {
    std::unique_lock lock(watch_mu);
    return warm_cv.wait_for(lock, d, [&] { return stopping; });
  };
  for (;;) {
    if (stop_requested() || cache.generation() != generation) break;
    // One statement on one borrowed connection, returned before the documents are stored:
    // requests waiting for a connection get it between batches.
    std::vector<ProductDocs> batch;
    try {
      batch = repo.product_docs_after(after, batch_rows);
    } catch (const std::exception& e) {
      if (!logged) catwalk::log("cache warm-up paused after {} documents: {}", stored, e.what());
      logged = true;
      // No catalogue (or a bug): nothing to retry; a publish asks for a new warm-up.
      if (catalogue_missing(e) || !is_unavailable(e)) break;
      // Unreachable, or the pool still backing off after a restart: retry from the same id
      // while the generation holds. A database really down moves it on (the watcher flushes
      // the cache within a poll), which ends this warm-up; its return starts a new one.
      if (pause(std::chrono::milliseconds(200))) break;
      continue;
    }
    bool full = false, stale = false;
    for (auto& p : batch) {
      std::pair<DocKind, std::string*> docs[] = {{DocKind::kStyles, &p.styles},
                                                 {DocKind::kDetail, &p.detail},
                                                 {DocKind::kRelated, &p.related}};
      for (auto& [kind, doc] : docs) {
        auto r = cache.put(doc_key(kind, p.id), generation, std::move(*doc), DocCache::Evict::kNo);
        if (r == DocCache::PutResult::kStored) {
          ++stored;
          warmed_docs.fetch_add(1, std::memory_order_relaxed);
        } else if (r == DocCache::PutResult::kStale) {
          stale = true;
        } else if (r == DocCache::PutResult::kFull) {
          full = true;
        }
        if (stale || full) break;
      }
      if (stale || full) break;
    }
    if (stale) break;
    if (full || batch.size() < static_cast<std::size_t>(batch_rows)) {
      completed = true;
      break;
    }
    after = batch.back().id;
    if (opt.warm_pause_ms > 0 && pause(std::chrono::milliseconds(opt.warm_pause_ms))) break;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (completed) {
    warm_last_seconds.store(seconds);
    warm_runs_completed.fetch_add(1);
    catwalk::log("cache warm-up: {} documents, {} MiB cached, in {:.1f} s", stored,
                 cache.bytes() >> 20, seconds);
  }
  warming.store(false);
  return completed;
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
  std::thread warmer([&im] { im.warm_loop(); });
  bool stopping;
  {
    std::lock_guard lock(im.watch_mu);
    stopping = im.stopping;
  }
  if (!stopping) im.http.listen_after_bind();
  im.listen_returned.store(true);
  stop();
  watcher.join();
  warmer.join();
}

void Server::stop() {
  {
    std::lock_guard lock(impl_->watch_mu);
    impl_->stopping = true;
  }
  impl_->watch_cv.notify_all();
  impl_->warm_cv.notify_all();
}

}  // namespace catwalk::api
