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
//
// Thread-safety: configure before listening; the rest is called by cpp-httplib's threads.
#include <httplib.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace catwalk::api {

struct ConnectionLimits {
  int threads = 128;             // workers; each serves one connection at a time
  std::size_t max_queued = 512;  // accepted connections waiting for a worker; over it: 503
  int header_timeout_s = 5;      // a request's head and body must arrive within this of its start
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

 private:
  bool process_and_close_socket(socket_t sock) override;
  void serve_connection(socket_t sock);
  void reject_connection(socket_t sock);

  ConnectionLimits limits_;
  // The pool cpp-httplib made with new_task_queue and owns; set while listen() runs.
  std::atomic<WorkerPool*> pool_{nullptr};
  // Connections answered 503 because the queue was full, since the last log line about them
  // (written at most every kRejectLogInterval), and when that line was written.
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::int64_t> rejected_logged_at_{0};
};

}  // namespace catwalk::api
