// The route handlers and their dispatch: see handlers.hpp.
#include "handlers.hpp"

#include <fmt/format.h>

#include <chrono>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>

#include "catwalk/gzip.hpp"
#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"
#include "http_caching.hpp"
#include "json.hpp"

namespace catwalk::api {

namespace {

using Clock = std::chrono::steady_clock;
using Request = httplib::Request;
using Response = httplib::Response;

const std::string kJsonType = "application/json; charset=utf-8";

// What the logger needs to know about the request a worker is answering. A worker thread
// serves one request at a time, so a thread_local is the request's own slot.
struct RequestState {
  Clock::time_point start{};
  Route route = Route::kUnmatched;
};
thread_local RequestState t_request;

// Replaces `out` with the JSON of the stored gzip member `stored`, with the worker's inflater (a
// worker serves one request at a time: it is reused, never shared). A member that does not
// inflate is a damaged catalogue: a 500, logged.
void inflate_stored(std::string_view stored, std::string& out) {
  thread_local gzip::Inflater inflater;
  if (!inflater.inflate(stored, out))
    throw std::runtime_error("a stored document is not a valid gzip member; reload the catalogue");
}

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

void send_not_found_route(Response& res) {
  send_error(res, 404, "not_found",
             "No such route; see docs/openapi.yaml for the routes this API serves.");
}

std::string invalid_id_message(std::string_view raw) {
  std::string m =
      "The product id must be a positive whole number up to 2147483647, like /products/1; got \"";
  m += utf8_quotable(raw, 40);  // the body stays valid UTF-8 whatever the path held
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

// The methods cpp-httplib reads a body for and has handlers for (server.cpp registers them);
// every other one, TRACE and CONNECT included, is dispatched from the pre-routing hook, else
// cpp-httplib would answer it a bare 400.
bool has_body_method(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

}  // namespace

Handlers::Handlers(Repository& repo, DocCache& cache, MissBatcher& misses, Metrics& metrics,
                   const ConnectionPool& pool, const CacheRefresher& refresher, bool access_log,
                   int max_age_s)
    : repo_(repo),
      cache_(cache),
      misses_(misses),
      metrics_(metrics),
      pool_(pool),
      refresher_(refresher),
      access_log_(access_log),
      cache_control_(fmt::format("public, max-age={}", std::max(max_age_s, 0))) {}

template <typename F>
void Handlers::guarded(Response& res, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    if (is_catalogue_missing(e)) {
      // Its own code: an operator must load a catalogue, retrying alone will not help.
      res.set_header("Retry-After", "5");
      send_error(res, 503, "not_loaded",
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

Handlers::HandlerResponse Handlers::pre_route(const Request& req, Response& res) {
  // Matched here already, to label the request's metrics: a request cpp-httplib refuses after
  // this point (a body over the limit) is still counted under its route.
  const RouteMatch m = match_route(req.path);
  t_request = {Clock::now(), m.route};
  if (has_body_method(req.method)) return HandlerResponse::Unhandled;
  dispatch(req, res, m);
  return HandlerResponse::Handled;
}

void Handlers::dispatch(const Request& req, Response& res) {
  dispatch(req, res, match_route(req.path));
}

void Handlers::dispatch(const Request& req, Response& res, const RouteMatch& m) {
  guarded(res, [&] {
    if (m.route == Route::kUnmatched) return send_not_found_route(res);
    if (req.method == "OPTIONS") return preflight(m.route, req, res);
    if (!method_allowed(m.route, req.method)) return method_not_allowed(m.route, req, res);
    switch (m.route) {
      case Route::kStyles:
        return product_doc(DocKind::kStyles, req, m.id, res);
      case Route::kProduct:
        return product_doc(DocKind::kDetail, req, m.id, res);
      case Route::kRelated:
        return product_doc(DocKind::kRelated, req, m.id, res);
      case Route::kProducts:
        return product_page(req, res);
      case Route::kCart:
        return req.method == "POST" ? post_cart(req, res) : get_cart(req, res);
      case Route::kHealth:
        return send_json(res, 200, R"({"status":"ok"})");
      case Route::kReady:
        return ready(res);
      case Route::kMetrics:
        return render_metrics(res);
      default:
        return send_not_found_route(res);
    }
  });
}

// CORS preflight: browsers send it before a POST with a JSON body or a user_session header.
void Handlers::preflight(Route route, const Request& req, Response& res) {
  res.status = 204;
  std::string allow(allowed_methods(route));
  res.set_header("Allow", allow);
  res.set_header("Access-Control-Allow-Methods", allow);
  auto requested = req.get_header_value("Access-Control-Request-Headers");
  res.set_header("Access-Control-Allow-Headers",
                 requested.empty() ? "Content-Type, user_session" : requested);
  res.set_header("Access-Control-Max-Age", "86400");
}

void Handlers::method_not_allowed(Route route, const Request& req, Response& res) {
  res.set_header("Allow", std::string(allowed_methods(route)));
  send_error(res, 405, "method_not_allowed",
             fmt::format("{} is not allowed here; this route accepts {}.", printable(req.method),
                         allowed_methods(route)));
}

// The hot path: a cache lookup, else the stored document read from the database (with the
// other requests' misses of the moment: MissBatcher) and cached; nothing is parsed,
// re-serialized or compressed.
void Handlers::product_doc(DocKind kind, const Request& req, std::string_view raw_id,
                           Response& res) {
  auto id = parse_id(raw_id);
  if (!id) return send_error(res, 400, "invalid_id", invalid_id_message(raw_id));
  if (cache_.enabled()) {
    if (auto doc = cache_.get(doc_key(kind, *id))) return send_document(req, res, doc.bytes);
  }
  auto doc = misses_.get(kind, *id);
  if (!doc) {
    return send_error(res, 404, "not_found", fmt::format("No product has id {}.", *id));
  }
  send_document(req, res, *doc);
}

bool Handlers::validated(const Request& req, Response& res, const std::string& etag,
                         std::size_t full_length) {
  res.set_header("ETag", etag);
  res.set_header("Cache-Control", cache_control_);
  if (!if_none_match(req.get_header_value("If-None-Match"), etag)) return false;
  res.status = 304;  // no body: the client's copy is current
  // A 304 may carry Content-Length only as the 200 would have (RFC 9110 8.6); cpp-httplib
  // would otherwise add "0" for the empty body.
  res.set_header("Content-Length", std::to_string(full_length));
  return true;
}

void Handlers::send_document(const Request& req, Response& res, std::string_view stored) {
  // The ETag is of the JSON, whichever encoding goes out: gzip's trailer already holds its
  // CRC-32 and length, so a gzip member costs nothing to tag.
  const auto trailer = gzip::trailer(stored);
  const std::string etag =
      trailer ? weak_etag(trailer->crc32, trailer->size, gzip::header_check(stored))
              : weak_etag(gzip::crc32(stored), stored.size());
  // Every answer of these routes may differ by Accept-Encoding (shared caches must key on it).
  res.set_header("Vary", "Accept-Encoding");
  const bool send_gzip = trailer && accepts_gzip(req.get_header_value("Accept-Encoding"));
  if (validated(req, res, etag, trailer && !send_gzip ? trailer->size : stored.size())) return;
  res.status = 200;
  res.set_header("Content-Type", kJsonType);
  if (!trailer) {
    res.body.assign(stored);
  } else if (send_gzip) {
    res.set_header("Content-Encoding", "gzip");
    res.body.assign(stored);
  } else {
    inflate_stored(stored, res.body);
  }
}

void Handlers::product_page(const Request& req, Response& res) {
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
  std::string body = "[";
  if (bounds) {
    std::string json;
    for (const std::string& stored : repo_.page_details(bounds->first, bounds->second)) {
      std::string_view detail = stored;
      if (gzip::trailer(stored)) {
        inflate_stored(stored, json);
        detail = json;
      }
      if (body.size() > 1) body.push_back(',');
      if (!append_list_item(body, detail))
        throw std::runtime_error(
            "a stored detail has no \"features\" member to cut a list entry at");
    }
  }
  body.push_back(']');
  // Tagged by its content (a CRC-32 of a few KB per request): a publish that changes the page
  // changes the tag.
  if (validated(req, res, weak_etag(gzip::crc32(body), body.size()), body.size())) return;
  send_json(res, 200, std::move(body));
}

std::optional<std::int32_t> Handlers::session(const Request& req, Response& res) {
  // A cart is one user's and changes with every add: no cache may keep or share it.
  res.set_header("Cache-Control", "no-store");
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

void Handlers::get_cart(const Request& req, Response& res) {
  auto s = session(req, res);
  if (!s) return;
  auto lines = repo_.cart(*s);
  std::string out = "[";
  for (const auto& l : lines) {
    if (out.size() > 1) out += ',';
    fmt::format_to(std::back_inserter(out), R"({{"sku_id":{},"count":{}}})", l.sku_id, l.count);
  }
  out += ']';
  send_json(res, 200, std::move(out));
}

void Handlers::post_cart(const Request& req, Response& res) {
  auto s = session(req, res);
  if (!s) return;
  auto parsed = parse_cart_add(req.body);
  if (auto* message = std::get_if<std::string>(&parsed))
    return send_error(res, 400, "invalid_body", *message);
  const auto& add = std::get<CartAdd>(parsed);
  auto total = repo_.add_to_cart(*s, add.sku_id, add.count);
  if (!total) {
    return send_error(
        res, 400, "unknown_sku",
        fmt::format("No sku has id {}; use a sku id from /products/:id/styles.", add.sku_id));
  }
  send_json(res, 201, fmt::format(R"({{"sku_id":{},"count":{}}})", add.sku_id, *total));
}

// Every database the instance depends on, by role: the primary, and the replica with --read-db.
// 503 (the contract's error shape; the message names each database's state) when one does not
// answer. libpq's words name hosts and socket paths: they go to the log, never to the client.
void Handlers::ready(Response& res) {
  auto check = [](const char* role, auto&& ping) {
    try {
      ping();
      return true;
    } catch (const std::exception& e) {
      catwalk::log("ready: the {} database does not answer: {}", role, e.what());
      return false;
    }
  };
  const bool primary = check("primary", [&] { repo_.ping(); });
  const bool replica =
      !repo_.separate_catalogue() || check("replica", [&] { repo_.ping_catalogue(); });
  const auto state = [](bool ok) { return ok ? "ok" : "unavailable"; };
  if (primary && replica) {
    return send_json(res, 200,
                     repo_.separate_catalogue()
                         ? R"({"status":"ok","databases":{"primary":"ok","replica":"ok"}})"
                         : R"({"status":"ok","databases":{"primary":"ok"}})");
  }
  res.set_header("Retry-After", "1");
  send_error(res, 503, "unavailable",
             repo_.separate_catalogue()
                 ? fmt::format("A database does not answer (primary: {}, replica: {}); retry in "
                               "a few seconds.",
                               state(primary), state(replica))
                 : "The database does not answer; retry in a few seconds.");
}

void Handlers::render_metrics(Response& res) {
  CacheStats c;
  c.hits = cache_.hits();
  c.misses = cache_.misses();
  c.invalidations = cache_.invalidations();
  c.entries = cache_.entries();
  c.bytes = cache_.bytes();
  c.warming = refresher_.warming();
  c.warm_runs = refresher_.warm_runs();
  c.warm_runs_completed = refresher_.warm_runs_completed();
  c.warmed_documents = refresher_.warmed_documents();
  c.warm_last_seconds = refresher_.warm_last_seconds();
  c.publish_version = refresher_.publish_version();
  c.kept_documents = refresher_.kept_documents();
  c.waste_resets = refresher_.waste_resets();
  c.staged_swaps = refresher_.staged_swaps();
  c.snapshot_loads = refresher_.snapshot_loads();
  c.snapshot_writes = refresher_.snapshot_writes();
  c.refresh_last_seconds = refresher_.refresh_last_seconds();
  c.miss_batches = misses_.batches();
  c.miss_batched_requests = misses_.batched_requests();
  if (const auto catalogue = cache_.catalogue()) c.catalogue_version = catalogue->version;
  std::string out;
  out.reserve(8192);
  metrics_.render(out);
  render_pool_metrics(pool_.stats(), out);
  render_cache_metrics(c, out);
  res.status = 200;
  res.body = std::move(out);
  res.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
}

bool Handlers::error_response(const Request& req, Response& res) {
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
    case 404:
      // No handler took the request: the dispatch says which 404 or 405 it is.
      res.status = 0;
      dispatch(req, res);
      break;
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

void Handlers::exception_response(Response& res, std::exception_ptr ep) {
  guarded(res, [&] {
    if (ep) std::rethrow_exception(ep);
    throw std::runtime_error("unknown exception");
  });
}

void Handlers::log_request(const Request& req, const Response& res) {
  // Requests cpp-httplib rejected before routing never set a start time: count them as 0 ms.
  auto now = Clock::now();
  std::int64_t micros = 0;
  Route route = Route::kUnmatched;
  if (t_request.start != Clock::time_point{}) {
    micros = std::chrono::duration_cast<std::chrono::microseconds>(now - t_request.start).count();
    route = t_request.route;
  }
  t_request = {};
  metrics_.record(route, res.status, micros);
  if (access_log_) {
    catwalk::log("{} {} {} {} {:.3f}ms", printable(req.method), printable(req.path), res.status,
                 res.body.size(), static_cast<double>(micros) / 1000.0);
  }
}

void Handlers::log_connection_answer(const ConnectionAnswer& a) {
  metrics_.record(Route::kUnmatched, a.status, a.micros);
  // A full queue's 503s come from the accepting thread, by the thousand in a flood: counted
  // here, summed up in the log by the connection layer (every 10 s), never written one by one.
  if (access_log_ && !a.on_accept_thread) {
    catwalk::log("{} {} {} {} {:.3f}ms", printable(a.method), printable(a.path), a.status,
                 a.body_bytes, static_cast<double>(a.micros) / 1000.0);
  }
}

}  // namespace catwalk::api
