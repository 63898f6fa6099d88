#pragma once
// The contract's route handlers (docs/api-contract.md) and the one dispatch that maps a
// matched route and method to its handler, plus the hooks cpp-httplib calls around them: the
// pre-routing entry, the JSON shape of errors cpp-httplib makes itself, and the access log and
// request metrics. Socket setup and tuning stay in server.cpp.
//
// Errors: no exception leaves a handler; infrastructure failures become the contract's 503,
// anything unexpected a logged 500. Thread-safety: every member may run on any worker at once.
#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "cache_refresher.hpp"
#include "doc_cache.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "miss_batcher.hpp"
#include "pool.hpp"
#include "repository.hpp"
#include "routes.hpp"

namespace catwalk::api {

// The request body limit (cpp-httplib answers 413 past it; the message names it).
inline constexpr std::size_t kMaxBodyBytes = 16 * 1024;

class Handlers {
 public:
  using Request = httplib::Request;
  using Response = httplib::Response;
  using HandlerResponse = httplib::Server::HandlerResponse;

  // `max_age_s`: the Cache-Control max-age of the catalogue routes' answers.
  // `misses` serves (and caches) the documents `cache` does not hold.
  Handlers(Repository& repo, DocCache& cache, MissBatcher& misses, Metrics& metrics,
           const ConnectionPool& pool, const CacheRefresher& refresher, bool access_log,
           int max_age_s);

  // cpp-httplib's pre-routing hook: starts the request's clock and answers every method that
  // carries no body (GET, HEAD, OPTIONS) through dispatch(); returns Unhandled for the others,
  // which cpp-httplib reads the body of and hands to dispatch() itself.
  HandlerResponse pre_route(const Request& req, Response& res);
  // The one dispatch: the route's handler, the CORS preflight, or 404/405.
  void dispatch(const Request& req, Response& res);
  // The same, for a path already matched (the pre-routing hook matches once per request).
  void dispatch(const Request& req, Response& res, const RouteMatch& m);
  // cpp-httplib's error hook (status >= 400): gives the responses it made itself (unparseable
  // request, body too large, URI too long) the contract's JSON shape. True when it wrote one.
  bool error_response(const Request& req, Response& res);
  // cpp-httplib's exception hook: the same answer guarded() gives.
  void exception_response(Response& res, std::exception_ptr ep);
  // cpp-httplib's logger: request metrics, and the access log line when enabled.
  void log_request(const Request& req, const Response& res);
  // The same for an answer the connection layer gave without routing (HttpServer's hook).
  void log_connection_answer(const ConnectionAnswer& a);

 private:
  void product_doc(DocKind kind, const Request& req, std::string_view raw_id, Response& res);
  // Answers with a stored document: 304 when If-None-Match matches its ETag, else the stored
  // gzip member to a gzip client, the JSON (inflated if stored gzipped) to any other.
  void send_document(const Request& req, Response& res, std::string_view stored);
  // ETag, Cache-Control; and 304 (true) when the request's If-None-Match matches `etag`.
  // `full_length`: the body's length in the 200 this request would get.
  bool validated(const Request& req, Response& res, const std::string& etag,
                 std::size_t full_length);
  void product_page(const Request& req, Response& res);
  std::optional<std::int32_t> session(const Request& req, Response& res);
  void get_cart(const Request& req, Response& res);
  void post_cart(const Request& req, Response& res);
  void ready(Response& res);
  void render_metrics(Response& res);
  void preflight(Route route, const Request& req, Response& res);
  void method_not_allowed(Route route, const Request& req, Response& res);

  // Runs a handler body, turning infrastructure failures into the contract's 503 and anything
  // unexpected into a logged 500: no exception ever reaches cpp-httplib from a handler.
  template <typename F>
  void guarded(Response& res, F&& f);

  Repository& repo_;
  DocCache& cache_;
  MissBatcher& misses_;
  Metrics& metrics_;
  const ConnectionPool& pool_;
  const CacheRefresher& refresher_;
  const bool access_log_;
  const std::string cache_control_;  // of the catalogue routes' answers
};

}  // namespace catwalk::api
