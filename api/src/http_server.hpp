#pragma once
// The HTTP/1.1 connection layer under the API's routes: cpp-httplib 0.11.4 with our own
// per-connection loop, because the library's loses pipelined requests and lets slow or idle
// clients hold every worker.
//
// What the library still does: accept(), parse a request and its body, route it to the
// handlers, write the response (Server::process_request). What this layer does instead of it:
// - one read buffer per connection, for its whole life: bytes a client sends ahead (pipelined
//   requests, or bytes after a body) are the next request's, answered in order;
// - the request head (request line and headers) is read here before the library parses it, with
//   a deadline for the whole request (head and body) counted from its first byte and a size cap,
//   so a client trickling bytes frees its worker after the deadline (408) whatever its pace, or
//   after 1 s when other connections wait for a worker;
// - framing the library would misread is refused before it reads anything: a Transfer-Encoding
//   other than a lone "chunked" (501), or one with a Content-Length (400), and a malformed or
//   conflicting Content-Length (400); the connection is then closed (no desync behind a proxy);
// - header lines ending in a bare LF, folded lines and whitespace before a header's colon are
//   refused (400) too; a request with neither Content-Length nor Transfer-Encoding has no body
//   (the library would read one until the client closes); a body no route read is skipped;
// - an encoded slash (%2F) in the path is kept encoded, so it never acts as a separator;
// - the worker pool has a bounded queue: a connection that finds it full gets a 503 JSON with
//   Retry-After at once, from the accepting thread, and is closed (logged at most every 10 s);
//   and an idle connection gives its worker up when others wait for one;
// - the listening socket is bound with SO_REUSEADDR only (the library's default SO_REUSEPORT
//   lets a second server share a busy port).
// The answers this layer gives itself are told to a hook (set_connection_answer_hook), so that
// /metrics and the access log see them like routed ones.
//
// Thread-safety: configure before listening; the rest is called by cpp-httplib's threads.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

namespace catwalk::api {

struct ConnectionLimits {
  int threads = 128;             // workers; each serves one connection at a time
  std::size_t max_queued = 512;  // accepted connections waiting for a worker; over it: 503
  int header_timeout_s = 5;      // a request's head and body must arrive within this of its start
};

// An answer the connection layer gave by itself, without routing the request: 408 (too slow),
// 431 (head too large), 400/411/413/414/501 (framing refused), or 503 (every worker busy).
struct ConnectionAnswer {
  int status = 0;
  std::string_view method, path;  // from the request line; empty when it had not arrived whole
  std::size_t body_bytes = 0;     // the JSON error body's size
  std::int64_t micros = 0;        // from the request's first byte to the answer (0: the 503)
  bool on_accept_thread = false;  // the 503: nothing done with it may block
};

class WorkerPool;

class HttpServer : public httplib::Server {
 public:
  HttpServer();
  ~HttpServer() override;
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Before listen. Keep-alive idle timeout, keep-alive max count, write timeout and body limit
  // are the library's own setters (set_keep_alive_timeout, ...), which this layer honours.
  void set_connection_limits(const ConnectionLimits& limits);

  // cpp-httplib 0.11.4 listens with a backlog of 5 and offers no setter; the listening socket is
  // a protected member, and Linux resizes the backlog on a second listen() of a bound socket.
  bool relisten(int backlog);

  // Before listen. Told of every ConnectionAnswer, so that /metrics and the access log count
  // them like routed answers (a flood of slow clients shows there as 408s).
  void set_connection_answer_hook(std::function<void(const ConnectionAnswer&)> hook) {
    answer_hook_ = std::move(hook);
  }

 private:
  bool process_and_close_socket(socket_t sock) override;
  void serve_connection(socket_t sock);
  void reject_connection(socket_t sock);

  // Tells the hook (if any) of a canned answer to the request whose received bytes are `data`.
  // `started`: the request's first byte (unset for the 503).
  void tell(int status, const std::string& canned, std::string_view data,
            std::chrono::steady_clock::time_point started, bool on_accept_thread);

  ConnectionLimits limits_;
  std::function<void(const ConnectionAnswer&)> answer_hook_;
  // The pool cpp-httplib made with new_task_queue and owns; set while listen() runs.
  std::atomic<WorkerPool*> pool_{nullptr};
  // Connections answered 503 because the queue was full, since the last log line about them
  // (written at most every kRejectLogInterval), and when that line was written.
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::int64_t> rejected_logged_at_{0};
};

}  // namespace catwalk::api
