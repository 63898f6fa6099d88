// The connection layer of http_server.hpp: the worker pool with its bounded queue, the buffered
// per-connection stream, the request-head reader and framing checks, and the connection loop.
#include "http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "catwalk/log.hpp"
#include "json.hpp"

namespace catwalk::api {

namespace {

// A non-blocking call found nothing to do. POSIX allows EWOULDBLOCK to differ from EAGAIN; on
// Linux they are one value, which is why this is not written as a two-way test (-Wlogical-op).
bool would_block(int e) {
#if EAGAIN == EWOULDBLOCK
  return e == EAGAIN;
#else
  return e == EAGAIN || e == EWOULDBLOCK;
#endif
}

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A request head (request line and headers) larger than this is answered 431. cpp-httplib
// itself caps the request line and each header line at 8 KiB but not their number.
constexpr std::size_t kMaxHeadBytes = 32 * 1024;
// How often a connection waiting for its next request checks whether others wait for a worker
// (and whether the server stops).
constexpr auto kIdleSlice = 50ms;
// How long a connection that has been answered may sit idle before it gives way to waiting
// ones: its client may be about to send the next request (a busy client under load takes
// tens of milliseconds), and closing then loses that request to the close race. A connection
// that never sent anything gives way after one slice.
constexpr auto kKeepAliveGrace = 250ms;
// A request head takes one round trip to arrive from a client that is not slow on purpose.
// Past this, while connections wait for a worker, an incomplete head is answered 408.
constexpr auto kHeadGrace = 1s;
// After a response that ends the connection, how long unread client bytes are drained so that
// closing does not reset the connection before the client read the response.
constexpr auto kDrainTime = 200ms;
constexpr std::size_t kDrainBytes = 64 * 1024;
// How often connections refused for a full queue are reported on stderr, at most.
constexpr auto kRejectLogInterval = 10s;
// Responses are gathered and sent with one system call; a larger body goes out directly.
constexpr std::size_t kCoalesceBytes = 16 * 1024;

// Set by WorkerPool::enqueue on the accepting thread while it runs a job itself because the
// queue is full: the job (process_and_close_socket) then answers 503 and closes.
thread_local bool t_over_capacity = false;

bool is_space_or_tab(char c) { return c == ' ' || c == '\t'; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space_or_tab(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space_or_tab(s.back())) s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_encoded_slash(std::string_view s, std::size_t i) {
  return i + 2 < s.size() && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'f';
}

// The path of a request target, percent-decoded except for encoded slashes, which stay "%2F":
// an encoded slash is part of a segment, never a separator.
std::string decode_path_keeping_slashes(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 &&
        hex_value(raw[i + 2]) >= 0) {
      if (is_encoded_slash(raw, i)) {
        out += "%2F";
      } else {
        out.push_back(static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2])));
      }
      i += 2;
    } else {
      out.push_back(raw[i]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

// Where a request head ends, found incrementally as bytes arrive, with cpp-httplib's framing:
// lines end at '\n', the first line is the request line, and the head ends after a line that is
// exactly "\r\n".
struct HeadScan {
  std::size_t pos = 0;         // where scanning resumes
  std::size_t line_start = 0;  // start of the line being scanned
  bool past_first_line = false;

  // The head's length if it is complete within [d, d + n), else std::nullopt.
  std::optional<std::size_t> scan(const char* d, std::size_t n) {
    while (pos < n) {
      const void* nl = std::memchr(d + pos, '\n', n - pos);
      if (nl == nullptr) {
        pos = n;
        return std::nullopt;
      }
      const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - d) + 1;
      if (past_first_line && end - line_start == 2 && d[line_start] == '\r') return end;
      past_first_line = true;
      line_start = end;
      pos = end;
    }
    return std::nullopt;
  }
};

// What the connection loop needs from a complete request head; cpp-httplib parses it again.
struct Head {
  bool chunked = false;         // Transfer-Encoding: chunked (alone)
  std::uint64_t length = 0;     // Content-Length (0 when absent)
  int error_status = 0;         // non-zero: answer this and close, without calling the library
  std::string_view error_code;  // the JSON error code of error_status
  std::string error_message;    // ... and its message
};

Head parse_head(std::string_view head) {
  Head h;
  auto fail = [&h](int status, std::string_view code, std::string message) {
    if (h.error_status == 0) {
      h.error_status = status;
      h.error_code = code;
      h.error_message = std::move(message);
    }
  };
  std::size_t te_count = 0, cl_count = 0;
  std::string_view te_value;
  bool first = true;
  while (!head.empty()) {
    const std::size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    head.remove_prefix(nl + 1);
    if (line.empty() || line.back() != '\r') {
      // A bare LF: cpp-httplib would skip the line, a proxy might not; neither may guess.
      fail(400, "bad_request", "Header lines must end with CRLF.");
      continue;
    }
    line.remove_suffix(1);
    if (first) {
      first = false;
      continue;  // the request line: cpp-httplib's to parse
    }
    if (line.empty()) break;  // the blank line that ends the head
    if (is_space_or_tab(line.front())) {
      fail(400, "bad_request", "Folded header lines (obs-fold) are not accepted.");
      continue;
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // cpp-httplib ignores it too
    const std::string_view name = line.substr(0, colon);
    if (std::any_of(name.begin(), name.end(), is_space_or_tab)) {
      fail(400, "bad_request", "A header name must not contain or end with whitespace.");
      continue;
    }
    const std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "Transfer-Encoding")) {
      ++te_count;
      te_value = value;
    } else if (iequals(name, "Content-Length")) {
      std::uint64_t v = 0;
      const bool digits =
          !value.empty() && value.size() <= 18 &&
          std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digits) {
        for (char c : value) v = v * 10 + static_cast<std::uint64_t>(c - '0');
      }
      if (!digits || (cl_count > 0 && v != h.length)) {
        fail(400, "bad_request", "Content-Length must be one whole number of bytes.");
      }
      h.length = v;
      ++cl_count;
    }
  }
  if (te_count > 0 && cl_count > 0) {
    fail(400, "bad_request",
         "A request must not have both Transfer-Encoding and Content-Length; send one.");
  } else if (te_count > 1 || (te_count == 1 && !iequals(te_value, "chunked"))) {
    fail(501, "not_implemented",
         "Only Transfer-Encoding: chunked is supported; send the body with Content-Length.");
  }
  h.chunked = te_count == 1;
  return h;
}

// Statuses after which the request's framing may not have been read as sent: the connection is
// closed rather than the rest read as a next request. (A 400 may be a handler's answer to a
// well-framed request; cpp-httplib's own 400s stop reading early, which the loop sees.)
bool closes_connection(int status) {
  return status == 408 || status == 411 || status == 413 || status == 414 || status == 431 ||
         status == 501;
}

std::string_view reason(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

// A complete error response of the contract's JSON shape, ending the connection.
std::string canned_response(int status, std::string_view code, std::string_view message,
                            std::string_view extra_headers = {}) {
  const std::string body = error_body(code, message);
  std::string out = "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += reason(status);
  out += "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  out += body;
  return out;
}

// The size of a canned response's body (what follows its head).
std::size_t canned_body_size(const std::string& canned) {
  const std::size_t end = canned.find("\r\n\r\n");
  return end == std::string::npos ? 0 : canned.size() - end - 4;
}

// The method and path (query cut off) of the request line at the start of `data`; both empty
// while that line has not arrived whole.
std::pair<std::string_view, std::string_view> request_line(std::string_view data) {
  const std::size_t nl = data.find('\n');
  if (nl == std::string_view::npos) return {};
  std::string_view line = data.substr(0, nl);
  if (line.ends_with('\r')) line.remove_suffix(1);
  const std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return {line, {}};
  std::string_view target = line.substr(sp + 1);
  target = target.substr(0, target.find(' '));
  return {line.substr(0, sp), target.substr(0, target.find('?'))};
}

void endpoint(int sock, bool peer, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  auto* sa = reinterpret_cast<sockaddr*>(&a);
  if ((peer ? ::getpeername(sock, sa, &len) : ::getsockname(sock, sa, &len)) != 0) return;
  char text[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    port = ntohs(in6->sin6_port);
  }
  ip = text;
}

// Waits until `sock` is ready for `events` (or has an error or hang-up to report) or `deadline`
// passes; false on timeout.
bool wait_ready(int sock, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{sock, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return true;  // let the next recv/send report it
  }
}

// Discards what the client still sends, for up to kDrainTime or until it closes, then closes.
// The write side is shut first so the client sees the response end.
void close_gracefully(int sock, bool drain) {
  ::shutdown(sock, SHUT_WR);
  char scrap[4096];
  const auto deadline = Clock::now() + kDrainTime;
  std::size_t drained = 0;
  for (;;) {
    const ssize_t n = ::recv(sock, scrap, sizeof scrap, MSG_DONTWAIT);
    if (n > 0) {
      drained += static_cast<std::size_t>(n);
      if (drained < kDrainBytes) continue;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && would_block(errno) && drain && wait_ready(sock, POLLIN, deadline)) {
      continue;
    }
    break;
  }
  ::close(sock);
}

// ---------------------------------------------------------------------------------------------

// The one stream of a connection for its whole life: reads come from a buffer refilled with
// whatever the socket has (so bytes sent ahead stay for the next request), against the current
// request's deadline; writes are gathered and sent at flush() or when large, within the write
// timeout. Not thread-safe: one worker owns it.
class ConnectionStream final : public httplib::Stream {
 public:
  enum class Fill { kData, kTimeout, kEof };

  ConnectionStream(int sock, std::chrono::milliseconds write_timeout)
      : sock_(sock), write_timeout_(write_timeout) {
    buf_.resize(16 * 1024);
  }

  bool is_readable() const override {
    return available() > 0 || wait_ready(sock_, POLLIN, read_deadline_);
  }
  bool is_writable() const override { return !broken_; }

  ssize_t read(char* ptr, size_t size) override {
    if (available() == 0) {
      const Fill f = fill(read_deadline_);
      if (f != Fill::kData) return f == Fill::kEof ? 0 : -1;
    }
    const std::size_t n = std::min(size, available());
    std::memcpy(ptr, data(), n);
    consume(n);
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (broken_) return -1;
    if (status_ == 0 && size >= 12 && std::memcmp(ptr, "HTTP/1.", 7) == 0) {
      // An interim "100 Continue" goes out at once: the client waits for it to send its body.
      if (ptr[9] == '1') return send_all(ptr, size) ? static_cast<ssize_t>(size) : -1;
      status_ = (ptr[9] - '0') * 100 + (ptr[10] - '0') * 10 + (ptr[11] - '0');
    }
    if (out_.size() + size <= kCoalesceBytes) {
      out_.append(ptr, size);
      return static_cast<ssize_t>(size);
    }
    if (!send_all(ptr, size)) return -1;
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    if (remote_port_ < 0) endpoint(sock_, true, remote_ip_, remote_port_);
    ip = remote_ip_;
    port = remote_port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    if (local_port_ < 0) endpoint(sock_, false, local_ip_, local_port_);
    ip = local_ip_;
    port = local_port_;
  }
  socket_t socket() const override { return sock_; }

  std::size_t available() const { return end_ - begin_; }
  const char* data() const { return buf_.data() + begin_; }
  void consume(std::size_t n) {
    begin_ += n;
    consumed_ += n;
  }
  // Bytes handed out since the connection opened.
  std::uint64_t consumed() const { return consumed_; }

  // Reads what the socket has (waiting for it until `deadline`) after what is buffered.
  Fill fill(Clock::time_point deadline) {
    if (begin_ == end_) begin_ = end_ = 0;
    if (end_ == buf_.size()) {
      if (begin_ > 0) {
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      } else {
        buf_.resize(buf_.size() * 2);
      }
    }
    for (;;) {
      const ssize_t n = ::recv(sock_, buf_.data() + end_, buf_.size() - end_, MSG_DONTWAIT);
      if (n > 0) {
        end_ += static_cast<std::size_t>(n);
        return Fill::kData;
      }
      if (n == 0) return Fill::kEof;
      if (errno == EINTR) continue;
      if (!would_block(errno)) return Fill::kEof;
      if (!wait_ready(sock_, POLLIN, deadline)) return Fill::kTimeout;
    }
  }

  // Discards the next n bytes of the request (a body nobody read); false if they do not come.
  bool skip(std::uint64_t n, Clock::time_point deadline) {
    while (n > 0) {
      if (available() == 0 && fill(deadline) != Fill::kData) return false;
      const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, available()));
      consume(k);
      n -= k;
    }
    return true;
  }

  void begin_request(Clock::time_point deadline) {
    read_deadline_ = deadline;
    status_ = 0;
  }
  // The status of the response written since begin_request (0 if none).
  int status() const { return status_; }

  bool flush() {
    if (out_.empty() || broken_) return !broken_;
    const bool ok = send_all(nullptr, 0);
    return ok;
  }

  // Sends `text` after anything gathered.
  bool send_now(std::string_view text) {
    if (broken_) return false;
    return send_all(text.data(), text.size());
  }

 private:
  // Sends the gathered output then [ptr, ptr + size), in one system call when the socket takes
  // it, within the write timeout. Marks the stream broken on failure.
  bool send_all(const char* ptr, std::size_t size) {
    const auto deadline = Clock::now() + write_timeout_;
    std::size_t out_sent = 0, sent = 0;
    while (out_sent < out_.size() || sent < size) {
      iovec iov[2];
      int n_iov = 0;
      if (out_sent < out_.size()) {
        iov[n_iov++] = {out_.data() + out_sent, out_.size() - out_sent};
      }
      if (sent < size) iov[n_iov++] = {const_cast<char*>(ptr) + sent, size - sent};
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<std::size_t>(n_iov);
      const ssize_t n = ::sendmsg(sock_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        auto k = static_cast<std::size_t>(n);
        const std::size_t from_out = std::min(k, out_.size() - out_sent);
        out_sent += from_out;
        sent += k - from_out;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && would_block(errno) && wait_ready(sock_, POLLOUT, deadline)) {
        continue;
      }
      broken_ = true;
      out_.clear();
      return false;
    }
    out_.clear();
    return true;
  }

  int sock_;
  std::chrono::milliseconds write_timeout_;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
  std::uint64_t consumed_ = 0;
  Clock::time_point read_deadline_{};
  std::string out_;
  bool broken_ = false;
  int status_ = 0;
  mutable std::string remote_ip_, local_ip_;
  mutable int remote_port_ = -1, local_port_ = -1;
};

// Waits for the first byte of a connection's next request. False when the connection should
// end: the client closed or stayed idle past the keep-alive timeout, the server stops, or
// connections wait for a worker while this one is idle (at once for a connection that never
// sent a request, after kKeepAliveGrace for one between requests).
bool wait_for_request(ConnectionStream& conn, bool fresh, std::chrono::seconds idle_timeout,
                      const std::function<bool()>& under_pressure,
                      const std::function<bool()>& stopping) {
  if (conn.available() > 0) return true;
  const auto start = Clock::now();
  const auto deadline = start + idle_timeout;
  const auto grace = fresh ? kIdleSlice : kKeepAliveGrace;
  for (;;) {
    const auto f = conn.fill(std::min(Clock::now() + kIdleSlice, deadline));
    if (f == ConnectionStream::Fill::kData) return true;
    if (f == ConnectionStream::Fill::kEof) return false;
    if (stopping() || Clock::now() >= deadline) return false;
    if (Clock::now() - start >= grace && under_pressure()) {
      // A request that arrived meanwhile is served rather than lost to the close.
      return conn.fill(Clock::now()) == ConnectionStream::Fill::kData;
    }
  }
}

// A request head read whole into the connection's buffer: its length, or the canned answer
// that ends the connection (431 too large, 408 too slow); neither when the client closed.
struct HeadRead {
  std::optional<std::size_t> length;
  int status = 0;  // of `error`
  std::string error;
};

// Reads the request line and headers, whole, before the library parses them, in slices: a
// head still incomplete after kHeadGrace while connections wait for a worker is a slow
// client's, and gives way too.
HeadRead read_head(ConnectionStream& conn, Clock::time_point started, Clock::time_point deadline,
                   const std::function<bool()>& under_pressure) {
  HeadScan scan;
  HeadRead out;
  while (!(out.length = scan.scan(conn.data(), conn.available()))) {
    if (conn.available() >= kMaxHeadBytes) {
      out.status = 431;
      out.error =
          canned_response(431, "header_too_large", "The request line and headers exceed 32 KiB.");
      return out;
    }
    const auto f = conn.fill(std::min(Clock::now() + kIdleSlice, deadline));
    if (f == ConnectionStream::Fill::kTimeout && Clock::now() < deadline &&
        !(Clock::now() - started > kHeadGrace && under_pressure())) {
      continue;
    }
    if (f == ConnectionStream::Fill::kTimeout) {
      out.status = 408;
      out.error =
          canned_response(408, "request_timeout",
                          "The request did not arrive in time; send the whole request at once.");
      return out;
    }
    if (f == ConnectionStream::Fill::kEof) return out;
  }
  return out;
}

// After an answer, whether the connection's buffer now starts at the next request: the library
// read exactly the request's own bytes (`used` of them), or left a small body no route read (a
// GET with a body), which is skipped. Anything else means the framing is unknown: close.
bool at_next_request(ConnectionStream& conn, std::uint64_t used, std::size_t head_len,
                     const Head& head, std::size_t max_skip, Clock::time_point deadline) {
  if (used < head_len) return false;  // the library stopped inside the head
  if (head.chunked) return false;     // where a chunked body ended is the library's to know
  const std::uint64_t end = head_len + head.length;
  if (used > end) return false;
  return used == end || (end - used <= max_skip && conn.skip(end - used, deadline));
}

// Set on each request before routing: a request with neither Content-Length nor
// Transfer-Encoding has no body (RFC 9112 6.3; cpp-httplib would read one until the client
// closes), and an encoded slash in the target stays encoded in req.path.
void prepare_request(httplib::Request& req) {
  // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112 6.3);
  // cpp-httplib would read one until the client closes.
  if (!req.has_header("Content-Length") && !req.has_header("Transfer-Encoding"))
    req.headers.emplace("Content-Length", "0");
  const std::string_view raw = std::string_view(req.target).substr(0, req.target.find('?'));
  for (std::size_t i = 0; i + 2 < raw.size(); ++i) {
    if (is_encoded_slash(raw, i)) {
      req.path = decode_path_keeping_slashes(raw);
      break;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

// cpp-httplib's ThreadPool with a bounded queue. A job that finds the queue full runs at once
// on the enqueuing (accepting) thread with t_over_capacity set, so that it answers 503 without
// blocking and closes. Knows whether connections are waiting for a worker.
class WorkerPool final : public httplib::TaskQueue {
 public:
  WorkerPool(std::size_t threads, std::size_t max_queued)
      : n_threads_(threads), max_queued_(max_queued) {
    threads_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::unique_lock lock(mu_);
      // Jobs up to the number of workers not busy are about to be taken: only the rest wait.
      if (jobs_.size() + busy_.load(std::memory_order_relaxed) < n_threads_ + max_queued_ ||
          shutdown_) {
        jobs_.push_back(std::move(fn));
        waiting_.store(jobs_.size(), std::memory_order_relaxed);
        lock.unlock();
        cv_.notify_one();
        return;
      }
    }
    t_over_capacity = true;
    fn();
    t_over_capacity = false;
  }

  // Runs the jobs still queued, then joins the workers. Idempotent.
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (shutdown_ && threads_.empty()) return;
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  // Whether accepted connections wait because no worker is free.
  bool under_pressure() const {
    return waiting_.load(std::memory_order_relaxed) + busy_.load(std::memory_order_relaxed) >
           n_threads_;
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shutting down, nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        waiting_.store(jobs_.size(), std::memory_order_relaxed);
        busy_.fetch_add(1, std::memory_order_relaxed);
      }
      fn();
      std::lock_guard lock(mu_);
      busy_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  const std::size_t n_threads_, max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::atomic<std::size_t> waiting_{0}, busy_{0};  // written under mu_
  std::vector<std::thread> threads_;
};

HttpServer::HttpServer() {
  // SO_REUSEADDR lets a restart bind while old connections linger in TIME_WAIT; unlike the
  // library's default SO_REUSEPORT it does not let a second server bind a port in use.
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  set_tcp_nodelay(true);
  set_connection_limits(limits_);
}

HttpServer::~HttpServer() = default;

void HttpServer::set_connection_limits(const ConnectionLimits& limits) {
  limits_ = limits;
  limits_.threads = std::max(limits_.threads, 1);
  limits_.header_timeout_s = std::max(limits_.header_timeout_s, 1);
  // cpp-httplib calls this once in listen() and deletes the queue after shutting it down.
  new_task_queue = [this] {
    auto* pool = new WorkerPool(static_cast<std::size_t>(limits_.threads), limits_.max_queued);
    pool_.store(pool);
    return pool;
  };
}

bool HttpServer::relisten(int backlog) {
  auto sock = svr_sock_.load();
  return sock != INVALID_SOCKET && ::listen(sock, backlog) == 0;
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (t_over_capacity) {
    reject_connection(sock);
  } else {
    serve_connection(sock);
  }
  return true;
}

void HttpServer::reject_connection(socket_t sock) {
  rejected_.fetch_add(1, std::memory_order_relaxed);
  const std::int64_t now = Clock::now().time_since_epoch().count();
  std::int64_t last = rejected_logged_at_.load(std::memory_order_relaxed);
  const auto interval = std::chrono::duration_cast<Clock::duration>(kRejectLogInterval).count();
  if (now - last >= interval && rejected_logged_at_.compare_exchange_strong(last, now)) {
    catwalk::log(
        "catwalk-api: {} connections answered 503: every worker busy and {} waiting (raise "
        "--threads or --max-queued, or put a proxy in front)",
        rejected_.exchange(0), limits_.max_queued);
  }
  static const std::string kBusy = canned_response(
      503, "unavailable", "The server is at its connection limit; retry in a second.",
      "Retry-After: 1\r\n");
  // On the accepting thread: nothing here may block.
  (void)::send(sock, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  tell(503, kBusy, {}, {}, true);
  close_gracefully(sock, false);
}

void HttpServer::tell(int status, const std::string& canned, std::string_view data,
                      Clock::time_point started, bool on_accept_thread) {
  if (!answer_hook_) return;
  const auto [method, path] = request_line(data);
  const std::int64_t micros =
      started == Clock::time_point{}
          ? 0
          : std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
  answer_hook_({.status = status,
                .method = method,
                .path = path,
                .body_bytes = canned_body_size(canned),
                .micros = micros,
                .on_accept_thread = on_accept_thread});
}

void HttpServer::serve_connection(socket_t sock) {
  int yes = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
  const auto write_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::seconds(std::max<time_t>(write_timeout_sec_, 1)) +
      std::chrono::microseconds(write_timeout_usec_));
  ConnectionStream conn(sock, write_timeout);
  const auto idle_timeout = std::chrono::seconds(std::max<time_t>(keep_alive_timeout_sec_, 1));
  const auto request_timeout = std::chrono::seconds(limits_.header_timeout_s);
  const std::function<void(httplib::Request&)> setup = prepare_request;  // built once

  const std::function<bool()> under_pressure = [this] {
    auto* pool = pool_.load();
    return pool != nullptr && pool->under_pressure();
  };
  const std::function<bool()> stopping = [this] { return svr_sock_ == INVALID_SOCKET; };

  // Whether the connection ends right after an answer, when the client may still be sending:
  // then closing drains. An idle connection is closed at once.
  bool drain = false;
  bool first = true;
  for (std::size_t left = std::max<std::size_t>(keep_alive_max_count_, 1); left > 0; --left) {
    drain = false;
    if (stopping() || !wait_for_request(conn, first, idle_timeout, under_pressure, stopping)) break;
    first = false;
    const auto started = Clock::now();
    const auto deadline = started + request_timeout;
    conn.begin_request(deadline);

    const HeadRead read = read_head(conn, started, deadline, under_pressure);
    if (!read.error.empty()) {
      conn.send_now(read.error);
      tell(read.status, read.error, std::string_view(conn.data(), conn.available()), started,
           false);
      drain = true;
      break;
    }
    if (!read.length) break;  // the client closed mid-head
    const std::optional<std::size_t> head_len = read.length;
    const Head head = parse_head(std::string_view(conn.data(), *head_len));
    if (head.error_status != 0) {
      const std::string answer =
          canned_response(head.error_status, head.error_code, head.error_message);
      conn.send_now(answer);
      tell(head.error_status, answer, std::string_view(conn.data(), *head_len), started, false);
      drain = true;
      break;
    }

    const std::uint64_t start = conn.consumed();
    const bool last = left == 1;
    bool closed = false;
    const bool ok = process_request(conn, last, closed, setup);
    drain = true;
    if (!conn.flush() || !ok || closed || last) break;
    if (!at_next_request(conn, conn.consumed() - start, *head_len, head, payload_max_length_,
                         deadline)) {
      break;
    }
    if (closes_connection(conn.status())) break;
  }
  conn.flush();
  close_gracefully(sock, drain);
}

}  // namespace catwalk::api
