// Tests of the connection layer (api/src/http_server.*) over raw loopback sockets: pipelining,
// request framing, methods cpp-httplib has no handlers for, encoded slashes, the busy port, and
// slow, idle and too many clients. No database: the routes used answer without one (/health,
// 404, 405, 400 on a bad id or missing session), so a database answer would show as a 503.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "catwalk/api/server.hpp"
#include "pg_server.hpp"

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// A database nobody answers at: data routes would say 503 at once.
const char* const kNoDatabase = "host=/nonexistent-catwalk-http-test dbname=none connect_timeout=1";

// An API server of the test's own on a free loopback port, stopped when it goes out of scope.
struct TestServer {
  std::unique_ptr<catwalk::api::Server> server;
  std::thread thread;
  int port = 0;

  explicit TestServer(catwalk::api::ServerOptions opt = {}, bool access_log = false) {
    opt.db_url = kNoDatabase;
    opt.host = "127.0.0.1";
    opt.port = 0;
    opt.cache_mb = 0;
    opt.access_log = access_log;
    if (opt.threads == catwalk::api::ServerOptions{}.threads) opt.threads = 8;
    server = std::make_unique<catwalk::api::Server>(opt);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~TestServer() {
    server->stop();
    thread.join();
  }
};

// A client socket on 127.0.0.1:port; -1 when the connect fails.
int connect_to(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

bool send_text(int s, const std::string& text) {
  std::size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n = ::send(s, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

struct Answer {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// Reads HTTP/1.1 responses from one connection (bodies by Content-Length; none after HEAD).
class Reader {
 public:
  explicit Reader(int sock) : sock_(sock) {}

  // The next response, or std::nullopt when the connection ends or `limit` passes first.
  std::optional<Answer> next(std::chrono::milliseconds limit, bool head = false) {
    const auto deadline = Clock::now() + limit;
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!more(deadline)) return std::nullopt;
    }
    Answer a;
    std::string head_text = buf_.substr(0, end + 2);
    buf_.erase(0, end + 4);
    if (head_text.size() < 12 || !head_text.starts_with("HTTP/1.1 ")) return std::nullopt;
    a.status = std::stoi(head_text.substr(9, 3));
    for (std::size_t p = head_text.find("\r\n") + 2; p < head_text.size();) {
      std::size_t e = head_text.find("\r\n", p);
      std::string line = head_text.substr(p, e - p);
      p = e + 2;
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      a.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    }
    std::size_t length =
        head ? 0
             : std::stoul(a.headers.count("content-length") != 0 ? a.headers["content-length"]
                                                                 : std::string("0"));
    while (buf_.size() < length) {
      if (!more(deadline)) return std::nullopt;
    }
    a.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return a;
  }

  // Whether the server closes the connection (EOF or reset) within `limit`, with nothing more.
  bool closed_within(std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (buf_.empty()) {
      if (!more(deadline)) return eof_;
    }
    return false;
  }

 private:
  bool more(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{sock_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char tmp[16384];
    ssize_t n = ::recv(sock_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }

  int sock_;
  std::string buf_;
  bool eof_ = false;
};

// Checks the contract's error shape.
void check_json_error(const Answer& a, int status, const std::string& code) {
  CHECK(a.status == status);
  CHECK(a.headers.count("content-type") == 1);
  CHECK(a.headers.at("content-type") == "application/json; charset=utf-8");
  CHECK(a.body.starts_with("{\"error\":\"" + code + "\",\"message\":\""));
}

// One request on a fresh connection; its answer.
std::optional<Answer> ask(int port, const std::string& request, std::chrono::milliseconds limit) {
  int s = connect_to(port);
  if (s < 0) return std::nullopt;
  std::optional<Answer> a;
  if (send_text(s, request)) a = Reader(s).next(limit);
  ::close(s);
  return a;
}

const std::string kHealth = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

// The value of catwalk_http_requests_total for an unrouted answer of `status`, as /metrics says
// it (0 when absent).
long unrouted_count(int port, int status) {
  auto m = ask(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 20s);
  if (!m) return -1;
  const std::string key =
      "catwalk_http_requests_total{route=\"unmatched\",status=\"" + std::to_string(status) + "\"} ";
  const auto at = m->body.find(key);
  return at == std::string::npos ? 0 : std::stol(m->body.substr(at + key.size()));
}

// stderr (where the access log goes) into a file while it lives; text() reads what was written.
class StderrCapture {
 public:
  StderrCapture()
      : dir_(catwalk::test::make_temp_dir("catwalk-http-stderr")), path_(dir_ + "/stderr.txt") {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (saved_ >= 0 && fd >= 0) ::dup2(fd, 2);
    if (fd >= 0) ::close(fd);
  }
  ~StderrCapture() {
    std::fflush(stderr);
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
    std::filesystem::remove_all(dir_);
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  std::string text() const {
    std::fflush(stderr);
    std::ifstream in(path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string dir_, path_;
  int saved_ = -1;
};

}  // namespace

TEST_CASE("pipelined requests in one write each get their answer in order") {
  TestServer server;
  int s = connect_to(server.port);
  REQUIRE(s >= 0);
  REQUIRE(send_text(s, kHealth + "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" +
                           "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n" + kHealth));
  Reader r(s);
  auto a1 = r.next(5s);
  auto a2 = r.next(5s);
  auto a3 = r.next(5s, true);
  auto a4 = r.next(5s);
  REQUIRE(a1);
  REQUIRE(a2);
  REQUIRE(a3);
  REQUIRE(a4);
  CHECK(a1->status == 200);
  CHECK(a1->body == R"({"status":"ok"})");
  check_json_error(*a2, 404, "not_found");
  CHECK(a3->status == 200);
  CHECK(a4->status == 200);
  ::close(s);
}

TEST_CASE("bytes after a request body are the next request") {
  TestServer server;
  int s = connect_to(server.port);
  REQUIRE(s >= 0);
  // A short POST body, then a GET that carries a body of its own (nobody reads it), then /health.
  REQUIRE(send_text(s,
                    "POST /cart HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 12\r\n\r\n{\"sku_id\":1}" +
                        std::string("GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
                                    "hello") +
                        kHealth));
  Reader r(s);
  auto a1 = r.next(5s);
  auto a2 = r.next(5s);
  auto a3 = r.next(5s);
  REQUIRE(a1);
  check_json_error(*a1, 400, "invalid_session");
  REQUIRE(a2);
  CHECK(a2->status == 200);
  REQUIRE(a3);
  CHECK(a3->status == 200);
  CHECK(a3->body == R"({"status":"ok"})");
  ::close(s);
}

TEST_CASE("Expect: 100-continue is answered before the body is sent") {
  TestServer server;
  int s = connect_to(server.port);
  REQUIRE(s >= 0);
  REQUIRE(send_text(s,
                    "POST /cart HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"));
  Reader r(s);
  auto interim = r.next(2s);  // curl waits 1 s for it before sending the body anyway
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(send_text(s, "{\"sku_id\":1}"));
  auto a = r.next(5s);
  REQUIRE(a);
  check_json_error(*a, 400, "invalid_session");
  ::close(s);
}

TEST_CASE("a POST without Content-Length has an empty body and is answered at once") {
  TestServer server;
  auto a = ask(server.port, "POST /cart HTTP/1.1\r\nHost: x\r\nuser_session: 1\r\n\r\n", 3s);
  REQUIRE(a);
  check_json_error(*a, 400, "invalid_body");
}

TEST_CASE("TRACE and CONNECT get 405 with Allow like other methods") {
  TestServer server;
  auto trace = ask(server.port, "TRACE /health HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
  REQUIRE(trace);
  check_json_error(*trace, 405, "method_not_allowed");
  CHECK(trace->headers["allow"] == "GET, HEAD, OPTIONS");
  auto connect = ask(server.port, "CONNECT /cart HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
  REQUIRE(connect);
  check_json_error(*connect, 405, "method_not_allowed");
  CHECK(connect->headers["allow"] == "GET, HEAD, POST, OPTIONS");
  auto elsewhere = ask(server.port, "TRACE /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
  REQUIRE(elsewhere);
  check_json_error(*elsewhere, 404, "not_found");
}

TEST_CASE(
    "unknown Transfer-Encoding or one with Content-Length is refused and the connection closed") {
  TestServer server;
  struct Case {
    std::string headers;
    int status;
  };
  const Case cases[] = {
      {"Transfer-Encoding: gzip\r\nContent-Length: 12\r\n", 400},
      {"Transfer-Encoding: chunked\r\nContent-Length: 12\r\n", 400},
      {"Transfer-Encoding: gzip\r\n", 501},
      {"Transfer-Encoding: gzip, chunked\r\n", 501},
      {"Content-Length: 12\r\nContent-Length: 13\r\n", 400},
      {"Content-Length: +12\r\n", 400},
      {"Transfer-Encoding : chunked\r\nContent-Length: 12\r\n", 400},
  };
  for (const auto& c : cases) {
    CAPTURE(c.headers);
    int s = connect_to(server.port);
    REQUIRE(s >= 0);
    // Read by length, the body would be a complete request and the next line another one.
    REQUIRE(send_text(s, "POST /cart HTTP/1.1\r\nHost: x\r\nuser_session: 1\r\n" + c.headers +
                             "\r\n{\"sku_id\":1}" + kHealth));
    Reader r(s);
    auto a = r.next(5s);
    REQUIRE(a);
    check_json_error(*a, c.status, c.status == 501 ? "not_implemented" : "bad_request");
    CHECK(a->headers["connection"] == "close");
    CHECK(r.closed_within(5s));
    ::close(s);
  }
}

TEST_CASE("an encoded slash is not a path separator") {
  TestServer server;
  for (const char* path :
       {"/products/1%2fstyles", "/products/1%2Fstyles", "/catwalk/products/1%2Frelated"}) {
    CAPTURE(path);
    auto a = ask(server.port, std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
    REQUIRE(a);
    check_json_error(*a, 400, "invalid_id");
  }
  auto a = ask(server.port, "GET /products%2F1 HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
  REQUIRE(a);
  check_json_error(*a, 404, "not_found");
  // Other escapes still decode: /%68ealth is /health.
  auto h = ask(server.port, "GET /%68ealth HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
  REQUIRE(h);
  CHECK(h->status == 200);
}

TEST_CASE("oversized heads get 431 and bare LF header lines 400") {
  TestServer server;
  auto big = ask(
      server.port,
      "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(40 * 1024, 'a') + "\r\n\r\n", 5s);
  REQUIRE(big);
  check_json_error(*big, 431, "header_too_large");
  auto lf =
      ask(server.port, "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\n\r\n", 5s);
  REQUIRE(lf);
  check_json_error(*lf, 400, "bad_request");
}

TEST_CASE("answers the connection layer gives itself are counted in /metrics and access-logged") {
  // Before: 408, 431 and refused framing never reached the library's logger, so an operator saw
  // neither a flood of slow clients nor oversized heads, in /metrics or in the log.
  catwalk::api::ServerOptions opt;
  opt.header_timeout_s = 1;
  StderrCapture err;
  {
    TestServer server(opt, /*access_log=*/true);
    auto big = ask(
        server.port,
        "GET /big?x=1 HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(40 * 1024, 'a') + "\r\n\r\n",
        5s);
    REQUIRE(big);
    CHECK(big->status == 431);
    auto te =
        ask(server.port, "POST /cart HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 5s);
    REQUIRE(te);
    CHECK(te->status == 501);
    // A head that never completes: 408 at the 1 s header deadline.
    auto slow = ask(server.port, "GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: a", 10s);
    REQUIRE(slow);
    CHECK(slow->status == 408);
    auto cut = ask(server.port, "GET /cu", 10s);  // not even a whole request line
    REQUIRE(cut);
    CHECK(cut->status == 408);
    CHECK(unrouted_count(server.port, 431) == 1);
    CHECK(unrouted_count(server.port, 501) == 1);
    CHECK(unrouted_count(server.port, 408) == 2);
  }
  const std::string log = err.text();
  INFO(log);
  CHECK(log.find("GET /big 431 ") != std::string::npos);
  CHECK(log.find("POST /cart 501 ") != std::string::npos);
  CHECK(log.find("GET /slow 408 ") != std::string::npos);
  CHECK(log.find("- - 408 ") != std::string::npos);
}

TEST_CASE("a second catwalk-api on a busy port exits 3 with a clear message") {
  TestServer first;
  const auto r = catwalk::test::run_command(
      "timeout 15 " + catwalk::test::binary_path("catwalk-api") + " --host 127.0.0.1 --port " +
      std::to_string(first.port) + " --db '" + kNoDatabase + "' --cache-mb 0 --no-access-log");
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(first.port)) !=
        std::string::npos);
  // The first one still answers.
  auto a = ask(first.port, kHealth, 5s);
  REQUIRE(a);
  CHECK(a->status == 200);
}

TEST_CASE("clients trickling their headers free their workers at the header deadline") {
  catwalk::api::ServerOptions opt;
  opt.threads = 4;
  opt.header_timeout_s = 2;
  opt.io_timeout_s = 5;
  TestServer server(opt);
  // Twice as many tricklers as workers, each sending a header byte every 300 ms (each read
  // arrives well within the 5 s I/O timeout) for up to 15 s.
  constexpr int kTricklers = 8;
  std::atomic<bool> stop{false};
  std::vector<std::thread> tricklers;
  std::atomic<int> timed_out{0};
  for (int i = 0; i < kTricklers; ++i) {
    int s = connect_to(server.port);
    REQUIRE(s >= 0);
    tricklers.emplace_back([s, &stop, &timed_out] {
      const std::string head = "GET /health HTTP/1.1\r\nX-Slow: " + std::string(200, 'a');
      const auto until = Clock::now() + 15s;
      for (std::size_t k = 0; k < head.size() && !stop.load() && Clock::now() < until; ++k) {
        if (::send(s, &head[k], 1, MSG_NOSIGNAL) != 1) break;
        std::this_thread::sleep_for(300ms);
      }
      Reader r(s);
      if (auto a = r.next(100ms); a && a->status == 408) timed_out.fetch_add(1);
      ::close(s);
    });
  }
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  auto a = ask(server.port, kHealth, 20s);
  const auto waited = Clock::now() - t0;
  stop.store(true);
  for (auto& t : tricklers) t.join();
  REQUIRE(a);
  CHECK(a->status == 200);
  // Two rounds of 2 s deadlines, then the answer: 10 s leaves room for a loaded machine; today's
  // server held the workers for as long as the trickle lasted (15 s).
  CHECK(waited < 10s);
  CHECK(timed_out.load() >= kTricklers / 2);
}

TEST_CASE("a request head must arrive within the header timeout however it trickles") {
  catwalk::api::ServerOptions opt;
  opt.header_timeout_s = 2;
  opt.io_timeout_s = 5;
  TestServer server(opt);
  int s = connect_to(server.port);
  REQUIRE(s >= 0);
  const auto t0 = Clock::now();
  const std::string head = "GET /health HTTP/1.1\r\nX-Slow: " + std::string(40, 'a');
  Reader r(s);
  std::optional<Answer> a;
  // A byte every 250 ms, for up to 10 s, until the server answers.
  for (std::size_t i = 0; i < head.size() && !a; ++i) {
    if (::send(s, &head[i], 1, MSG_NOSIGNAL) != 1) break;
    a = r.next(250ms);
  }
  if (!a) a = r.next(1s);
  const auto waited = Clock::now() - t0;
  ::close(s);
  REQUIRE(a);
  check_json_error(*a, 408, "request_timeout");
  CHECK(waited > 1500ms);
  CHECK(waited < 6s);
}

TEST_CASE("thousands of idle connections: a new client is served or told 503 at once") {
  catwalk::api::ServerOptions opt;
  opt.threads = 4;
  opt.max_queued = 16;
  opt.io_timeout_s = 5;
  TestServer server(opt);
  constexpr int kIdle = 2000;
  std::vector<int> idle;
  idle.reserve(kIdle);
  for (int i = 0; i < kIdle; ++i) {
    int s = connect_to(server.port);
    if (s < 0) break;
    idle.push_back(s);
  }
  CHECK(idle.size() == static_cast<std::size_t>(kIdle));
  std::this_thread::sleep_for(200ms);
  // Each of a few clients gets an answer within 3 s (today's server made them wait while 4
  // workers sat out 5 s keep-alive timeouts of 2,000 connections, minutes): 200, or a 503 with
  // Retry-After.
  int served = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    auto a = ask(server.port, kHealth, 10s);
    const auto waited = Clock::now() - t0;
    REQUIRE(a);
    CHECK(waited < 3s);
    if (a->status == 200) {
      ++served;
    } else {
      check_json_error(*a, 503, "unavailable");
      CHECK(a->headers["retry-after"] == "1");
    }
  }
  for (int s : idle) ::close(s);
  // Once the crowd is gone the server answers normally.
  bool ok = false;
  for (auto t0 = Clock::now(); !ok && Clock::now() - t0 < 5s;) {
    auto a = ask(server.port, kHealth, 5s);
    ok = a && a->status == 200;
    if (!ok) std::this_thread::sleep_for(100ms);
  }
  CHECK(ok);
  MESSAGE("clients served while 2,000 connections were idle: " << served << " of 5");
}

TEST_CASE("when every worker is busy and the queue full a new connection gets 503 at once") {
  catwalk::api::ServerOptions opt;
  opt.threads = 2;
  opt.max_queued = 1;
  opt.header_timeout_s = 10;
  TestServer server(opt);
  // Three connections mid-request: two hold the workers, one waits in the queue.
  std::vector<int> busy;
  for (int i = 0; i < 3; ++i) {
    int s = connect_to(server.port);
    REQUIRE(s >= 0);
    REQUIRE(send_text(s, "GET /health HTTP/1.1\r\n"));
    busy.push_back(s);
  }
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  auto a = ask(server.port, kHealth, 20s);
  const auto waited = Clock::now() - t0;
  REQUIRE(a);
  check_json_error(*a, 503, "unavailable");
  CHECK(a->headers["retry-after"] == "1");
  CHECK(a->headers["connection"] == "close");
  CHECK(waited < 1s);  // not after the 10 s header timeout of the others
  for (int s : busy) ::close(s);
  // Counted in /metrics, like a routed answer (before, it showed nowhere but a log line).
  // A /metrics probe sent before the workers have seen the closes is itself turned away with
  // 503, and counted too (a loaded machine showed it): such probes add to the expected count.
  const std::string key = "catwalk_http_requests_total{route=\"unmatched\",status=\"503\"} ";
  bool counted = false;
  long turned_away = 0;
  for (auto t1 = Clock::now(); !counted && Clock::now() - t1 < 10s;) {
    auto m = ask(server.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 20s);
    if (m && m->status == 503) {
      ++turned_away;
    } else if (m && m->status == 200) {
      const auto at = m->body.find(key);
      counted =
          at != std::string::npos && std::stol(m->body.substr(at + key.size())) == 1 + turned_away;
    }
    if (!counted) std::this_thread::sleep_for(100ms);
  }
  INFO("probes turned away: " << turned_away);
  CHECK(counted);
}

TEST_CASE("an idle keep-alive connection gives its worker to a waiting one") {
  catwalk::api::ServerOptions opt;
  opt.threads = 2;
  opt.io_timeout_s = 30;
  TestServer server(opt);
  // Two kept-alive connections hold both workers, idle after their first request.
  std::vector<int> held;
  for (int i = 0; i < 2; ++i) {
    int s = connect_to(server.port);
    REQUIRE(s >= 0);
    REQUIRE(send_text(s, kHealth));
    auto a = Reader(s).next(5s);
    REQUIRE(a);
    held.push_back(s);
  }
  const auto t0 = Clock::now();
  auto a = ask(server.port, kHealth, 20s);
  const auto waited = Clock::now() - t0;
  REQUIRE(a);
  CHECK(a->status == 200);
  CHECK(waited < 5s);  // not the 30 s keep-alive timeout
  for (int s : held) ::close(s);
}
