// Integration tests of the deployment: `scripts/cluster up` (NGINX over two catwalk-api
// instances, a PostgreSQL primary and a streaming replica) in a temporary folder on free
// loopback ports, then what an operator relies on: NGINX answers exactly what an instance
// answers, a killed instance costs no GET, a POST is never sent twice, a publish reaches every
// instance, a stopped replica costs no 500 and no hang, `down` leaves nothing running.
// The cases run in file order on one cluster (the last one takes it down).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pg_server.hpp"

namespace fs = std::filesystem;
using catwalk::test::binary_path;
using catwalk::test::run_command;
using catwalk::test::source_path;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kInstances = 2;

std::string shell_quote(const std::string& s) { return "'" + s + "'"; }

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool port_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// `count` consecutive free loopback ports (the cluster numbers its instances from a base).
int free_ports(int count) {
  std::random_device rd;
  for (int attempt = 0; attempt < 200; ++attempt) {
    int base = 21000 + static_cast<int>(rd() % 20000);
    bool ok = true;
    for (int i = 0; i < count && ok; ++i) ok = port_free(base + i);
    if (ok) return base;
  }
  throw std::runtime_error("no free ports");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Running (a zombie waiting for its reaper does not count).
bool alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close == std::string::npos || stat.compare(close + 2, 1, "Z") != 0;
}

// The pid and every descendant of it (from /proc), so a test can check none outlives `down`.
std::set<int> process_tree(int root) {
  std::map<int, std::vector<int>> children;
  for (auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_file(e.path().string() + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    int ppid = 0;
    rest >> state >> ppid;
    children[ppid].push_back(std::stoi(name));
  }
  std::set<int> out{root};
  std::vector<int> todo{root};
  while (!todo.empty()) {
    int p = todo.back();
    todo.pop_back();
    for (int c : children[p])
      if (out.insert(c).second) todo.push_back(c);
  }
  return out;
}

struct Part {
  std::string url;
  int pid = 0;
  int port = 0;  // HTTP parts
};

// `NAME URL PID` lines -> parts by name; fails the test on any other line.
std::map<std::string, Part> parse_parts(const std::string& out) {
  std::map<std::string, Part> parts;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string name, url, pid, extra;
    f >> name >> url >> pid;
    INFO("stdout line: " << line);
    REQUIRE((!name.empty() && !url.empty() && !pid.empty() && !(f >> extra)));
    Part p;
    p.url = url;
    p.pid = std::stoi(pid);
    if (url.rfind("http://127.0.0.1:", 0) == 0) p.port = std::stoi(url.substr(17));
    parts[name] = p;
  }
  return parts;
}

// One cluster for the whole binary, in a temporary folder, on free ports.
struct Cluster {
  std::string dir = catwalk::test::make_temp_dir("catwalk-cluster");
  int nginx_port = free_ports(1);
  int api_base = free_ports(kInstances + 1);
  std::string env;
  std::map<std::string, Part> parts;

  Cluster() {
    std::random_device rd;
    env = "CLUSTER_DIR=" + shell_quote(dir + "/c") + " CLUSTER_PORT=" + std::to_string(nginx_port) +
          " CLUSTER_API_PORT=" + std::to_string(api_base) +
          " CLUSTER_PG_PORT=" + std::to_string(30000 + rd() % 20000) +
          " CATWALK_BIN_DIR=" + shell_quote(CATWALK_BINARY_DIR) + " CLUSTER_WAIT=120 ";
  }
  ~Cluster() {
    run("down");
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  catwalk::test::CommandResult run(const std::string& args) {
    return run_command(env + source_path("scripts/cluster") + " " + args);
  }
  std::string cluster_dir() const { return dir + "/c"; }
  int api_port(int n) const { return api_base + n - 1; }
};

Cluster& cluster() {
  static Cluster c;
  return c;
}

httplib::Client client(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5);
  c.set_read_timeout(15);
  return c;
}

struct Answer {
  int status = -1;  // -1: no HTTP answer at all
  std::string body, content_type;
  double seconds = 0;
};

Answer get(int port, const std::string& path, httplib::Headers headers = {}) {
  auto c = client(port);
  auto t0 = Clock::now();
  auto r = c.Get(path.c_str(), headers);
  Answer a;
  a.seconds = seconds_since(t0);
  if (r) {
    a.status = r->status;
    a.body = r->body;
    a.content_type = r->get_header_value("Content-Type");
  }
  return a;
}

Answer post_cart(int port, int session, int sku, int count) {
  auto c = client(port);
  auto t0 = Clock::now();
  auto r = c.Post("/cart", {{"user_session", std::to_string(session)}},
                  fmt::format(R"({{"sku_id": {}, "count": {}}})", sku, count), "application/json");
  Answer a;
  a.seconds = seconds_since(t0);
  if (r) {
    a.status = r->status;
    a.body = r->body;
  }
  return a;
}

// The session's count of a sku, read from an instance directly (the cart is on the primary).
long cart_count(int port, int session, int sku) {
  auto a = get(port, "/cart", {{"user_session", std::to_string(session)}});
  REQUIRE(a.status == 200);
  auto key = fmt::format(R"("sku_id":{},"count":)", sku);
  auto p = a.body.find(key);
  if (p == std::string::npos) return 0;
  return std::stol(a.body.substr(p + key.size()));
}

// A fake instance that accepts a connection, reads the whole request and closes it without a
// word: an instance that dies in the middle of a request. A POST /cart it gets is first applied
// on the real instance at `real_port` (so it has acted, as an instance that dies after its
// commit and before its answer), then dropped.
class Trap {
 public:
  explicit Trap(int real_port) : real_port_(real_port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    REQUIRE(::listen(fd_, 64) == 0);
    thread_ = std::thread([this] { loop(); });
  }
  ~Trap() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  int posts() const { return posts_.load(); }
  int gets() const { return gets_.load(); }
  int applied() const { return applied_.load(); }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      timeval tv{2, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string req;
      char buf[4096];
      std::size_t want = std::string::npos;
      while (req.size() < want) {
        auto n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
        auto end = req.find("\r\n\r\n");
        if (end != std::string::npos && want == std::string::npos) {
          want = end + 4;
          auto cl = req.find("Content-Length: ");
          if (cl != std::string::npos && cl < end) want += std::stoul(req.substr(cl + 16));
        }
      }
      if (req.rfind("POST ", 0) == 0) {
        ++posts_;
        apply(req);
      }
      if (req.rfind("GET ", 0) == 0) ++gets_;
      ::close(c);  // reset-free close, no answer: NGINX sees "upstream prematurely closed"
    }
  }
  // Replays a POST /cart (its user_session and body) on the real instance.
  void apply(const std::string& req) {
    auto end = req.find("\r\n\r\n");
    std::string head = req.substr(0, end);
    for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto s = head.find("\r\nuser_session: ");
    if (s == std::string::npos) return;
    auto session = head.substr(s + 16, head.find("\r\n", s + 2) - s - 16);
    auto r =
        client(real_port_)
            .Post("/cart", {{"user_session", session}}, req.substr(end + 4), "application/json");
    if (r && r->status == 201) ++applied_;
  }
  int real_port_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> posts_{0}, gets_{0}, applied_{0};
  std::thread thread_;
};

std::string samples_with_product1_renamed(const std::string& name) {
  std::string dir = catwalk::test::make_temp_dir("catwalk-cluster-reload");
  fs::copy(source_path("data-samples"), dir, fs::copy_options::recursive);
  std::string text = read_file(dir + "/product.csv");
  auto p = text.find("\"Camo Onesie\"");
  REQUIRE(p != std::string::npos);
  text.replace(p, 13, "\"" + name + "\"");
  std::ofstream(dir + "/product.csv", std::ios::binary | std::ios::trunc) << text;
  return dir;
}

// pg_ctl on the replica's data folder (as the postgres user when root, as scripts/cluster).
void replica_ctl(const std::string& action) {
  const std::string pg_ctl = "/usr/lib/postgresql/15/bin/pg_ctl";
  REQUIRE(fs::exists(pg_ctl));
  std::string cmd = pg_ctl + " -D " + shell_quote(cluster().cluster_dir() + "/replica/data") +
                    " -m fast -w " + action;
  if (::getuid() == 0) cmd = "runuser -u postgres -- " + cmd;
  auto r = run_command(cmd);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}

}  // namespace

TEST_CASE("up: one line per part on stdout, every instance serves, up again changes nothing") {
  auto& c = cluster();
  auto r = c.run("up --instances " + std::to_string(kInstances));
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  c.parts = parse_parts(r.out);
  REQUIRE(c.parts.size() == 2 + kInstances + 1);
  CHECK(c.parts["nginx"].url == fmt::format("http://127.0.0.1:{}", c.nginx_port));
  for (int n = 1; n <= kInstances; ++n)
    CHECK(c.parts[fmt::format("api-{}", n)].port == c.api_port(n));
  CHECK(c.parts["primary"].url.rfind("postgresql://", 0) == 0);
  CHECK(c.parts["replica"].url.rfind("postgresql://", 0) == 0);
  for (auto& [name, p] : c.parts) {
    INFO(name);
    CHECK(alive(p.pid));
  }
  // The replica really is a streaming standby of the primary.
  auto rec = run_command("psql -X -tAc 'SELECT pg_is_in_recovery()' " +
                         shell_quote(c.parts["replica"].url));
  CHECK(rec.out == "t\n");

  auto again = c.run("up --instances " + std::to_string(kInstances));
  REQUIRE(again.exit_code == 0);
  CHECK(again.out == r.out);  // same parts, same pids: nothing restarted
  CHECK(c.run("status").out == r.out);
}

TEST_CASE("through NGINX every contract answer is byte-identical to each instance's own") {
  auto& c = cluster();
  const std::vector<std::string> paths = {"/products/1",
                                          "/products/1/styles",
                                          "/products/1/related",
                                          "/products/2/styles",
                                          "/products?page=1&count=5",
                                          "/products?page=2&count=3",
                                          "/products",
                                          "/catwalk/products/1",
                                          "/catwalk/products/1/styles",
                                          "/products/999999",
                                          "/products/abc",
                                          "/products?count=0",
                                          "/nope",
                                          "/health"};
  for (const auto& path : paths) {
    auto via = get(c.nginx_port, path);
    for (int n = 1; n <= kInstances; ++n) {
      auto own = get(c.api_port(n), path);
      INFO(path << " api-" << n);
      CHECK(via.status == own.status);
      CHECK(via.content_type == own.content_type);
      CHECK(via.body == own.body);
    }
  }
  // The cart, read through NGINX, is the primary's.
  httplib::Headers session{{"user_session", "1"}};
  CHECK(get(c.nginx_port, "/cart", session).body == get(c.api_port(1), "/cart", session).body);
  // NGINX's own errors keep the API's shape: a body over 16 KiB never reaches an instance.
  auto big =
      client(c.nginx_port)
          .Post("/cart", {{"user_session", "1"}}, std::string(20000, ' '), "application/json");
  REQUIRE(big);
  CHECK(big->status == 413);
  CHECK(big->body.find(R"("error":"payload_too_large")") != std::string::npos);
  // /metrics is for the monitoring host (loopback here): still served.
  CHECK(get(c.nginx_port, "/metrics").status == 200);
}

namespace {

// A raw loopback connection to `port` that sends `bytes` and then nothing more.
int stalled_client(int port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::send(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  return fd;
}

// Seconds from `t0` until the server closes `fd` (reading and dropping what it sends), or -1
// past `limit`.
double seconds_until_closed(int fd, Clock::time_point t0, double limit) {
  char buf[4096];
  while (seconds_since(t0) < limit) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0 && ::recv(fd, buf, sizeof buf, 0) <= 0) return seconds_since(t0);
  }
  return -1;
}

}  // namespace

TEST_CASE("NGINX drops clients that stall in their headers or body (5 s), many at once") {
  // cpp-httplib gives each connection a thread and has no whole-request deadline: NGINX's
  // client_header_timeout and client_body_timeout are what free a stalled client. Its default
  // is 60 s: the bound below fails without them. 150 stalled clients at once, more than an
  // instance's threads behind NGINX, while GETs through NGINX are still answered at once.
  auto& c = cluster();
  std::vector<int> header_stalls, body_stalls;
  const auto t0 = Clock::now();
  for (int i = 0; i < 150; ++i)
    header_stalls.push_back(
        stalled_client(c.nginx_port, "GET /products/1 HTTP/1.1\r\nHost: x\r\n"));
  for (int i = 0; i < 20; ++i) {
    body_stalls.push_back(stalled_client(c.nginx_port,
                                         "POST /cart HTTP/1.1\r\nHost: x\r\nuser_session: 9\r\n"
                                         "Content-Type: application/json\r\nContent-Length: 40\r\n"
                                         "\r\n{\"sku_id\":"));
  }
  for (int i = 0; i < 20; ++i) {
    auto a = get(c.nginx_port, "/products/1/styles");
    CHECK(a.status == 200);
    CHECK(a.seconds < 2.0);
  }
  const double header_s = seconds_until_closed(header_stalls.front(), t0, 15.0);
  const double body_s = seconds_until_closed(body_stalls.front(), t0, 15.0);
  MESSAGE("stalled header closed after " << header_s << " s, stalled body after " << body_s
                                         << " s");
  CHECK(header_s > 0);
  CHECK(body_s > 0);
  for (int fd : header_stalls) ::close(fd);
  for (int fd : body_stalls) ::close(fd);
}

TEST_CASE("concurrent POST /cart through NGINX raise the count exactly") {
  auto& c = cluster();
  const int session = 424242, sku = 1, threads = 8, per_thread = 25;
  const long before = cart_count(c.api_port(1), session, sku);
  std::atomic<int> created{0}, other{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        auto a = post_cart(c.nginx_port, session, sku, 1);
        (a.status == 201 ? created : other)++;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(other.load() == 0);
  CHECK(created.load() == threads * per_thread);
  for (int n = 1; n <= kInstances; ++n)
    CHECK(cart_count(c.api_port(n), session, sku) == before + threads * per_thread);
}

TEST_CASE("a POST that reached an instance which then died is never sent to another") {
  // A second NGINX, rendered from the same template, over the trap and a real instance. The
  // trap takes every other request (least_conn ties rotate; passive health checks off so it is
  // never taken out) and closes it unanswered. A GET it swallows is retried on the instance:
  // 200. A POST it swallows has been applied (the trap replays it on the real instance first,
  // as an instance that commits and dies before answering): the client must get an error and
  // the add must count once. A retry on the real instance would count it twice.
  auto& c = cluster();
  Trap trap(c.api_port(1));
  std::string run = c.dir + "/trap-nginx";
  int port = free_ports(1);
  auto r = run_command("NGINX_MAX_FAILS=0 " + source_path("deploy/nginx/render") + " " + run +
                       " 127.0.0.1:" + std::to_string(port) + " 127.0.0.1:" +
                       std::to_string(trap.port()) + " 127.0.0.1:" + std::to_string(c.api_port(1)));
  REQUIRE(r.exit_code == 0);
  std::string nginx_args =
      "-p " + run + " -c " + run + "/nginx.conf -e " + run + "/nginx-error.log";
  r = run_command((fs::exists("/usr/sbin/nginx") ? "/usr/sbin/nginx " : "nginx ") + nginx_args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  struct Stop {
    std::string pid_file;
    ~Stop() {
      auto pid = read_file(pid_file);
      if (!pid.empty()) ::kill(std::stoi(pid), SIGQUIT);
    }
  } stop{run + "/nginx.pid"};

  for (int i = 0; i < 10; ++i) CHECK(get(port, "/products/1").status == 200);
  CHECK(trap.gets() >= 1);  // some GETs hit the trap, and were retried

  const int session = 515151, sku = 2, posts = 20;
  const long before = cart_count(c.api_port(1), session, sku);
  int created = 0, failed = 0;
  for (int i = 0; i < posts; ++i) {
    auto a = post_cart(port, session, sku, 1);
    INFO(a.status << " " << a.body);
    CHECK((a.status == 201 || a.status == 503));
    (a.status == 201 ? created : failed)++;
  }
  CHECK(trap.posts() >= 1);
  CHECK(trap.applied() == trap.posts());
  CHECK(failed == trap.posts());  // every POST the trap swallowed failed: none was retried
  // Each POST counted exactly once: by the real instance (201) or by the trap (error).
  CHECK(cart_count(c.api_port(1), session, sku) == before + posts);
}

TEST_CASE("SIGKILL an instance during concurrent GETs: no GET fails, restarted, it serves") {
  auto& c = cluster();
  const auto& victim = c.parts["api-1"];
  REQUIRE(alive(victim.pid));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::string> failures;
  std::mutex mu;
  const std::vector<std::string> paths = {"/products/1/styles", "/products/2",
                                          "/products?page=1&count=5", "/products/3/related"};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      // Bounded: at most 4000 requests or until told to stop.
      for (int i = 0; i < 4000 && !stop; ++i) {
        auto a = get(c.nginx_port, paths[(t + i) % paths.size()]);
        if (a.status == 200) {
          ++ok;
        } else {
          ++failed;
          std::lock_guard lock(mu);
          failures.push_back(std::to_string(a.status) + " " + a.body);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const int ok_before_kill = ok.load();
  REQUIRE(::kill(victim.pid, SIGKILL) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  stop = true;
  for (auto& t : ts) t.join();
  INFO("first failures: " << (failures.empty() ? "" : failures.front()));
  CHECK(ok_before_kill > 0);
  CHECK(ok.load() > ok_before_kill);
  CHECK(failed.load() == 0);
  CHECK_FALSE(alive(victim.pid));

  // `up` again restarts what is missing (the killed instance only).
  auto r = c.run("up --instances " + std::to_string(kInstances));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto parts = parse_parts(r.out);
  CHECK(parts["api-1"].pid != victim.pid);
  CHECK(parts["api-2"].pid == c.parts["api-2"].pid);
  CHECK(parts["nginx"].pid == c.parts["nginx"].pid);
  c.parts = parts;

  // It takes traffic again once NGINX's fail_timeout (5 s) has passed: the access log names
  // the instance that answered.
  const std::string log = c.cluster_dir() + "/nginx-access.log";
  const auto offset = fs::file_size(log);
  const std::string mark = fmt::format("up=\"127.0.0.1:{}\"", c.api_port(1));
  bool served = false;
  auto t0 = Clock::now();
  while (!served && seconds_since(t0) < 20) {
    for (int i = 0; i < 10; ++i) REQUIRE(get(c.nginx_port, "/products/1").status == 200);
    served = read_file(log).substr(offset).find(mark) != std::string::npos;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  CHECK(served);
}

TEST_CASE("a publish on the primary is served by every instance, from its replica, within 5 s") {
  auto& c = cluster();
  std::string data = samples_with_product1_renamed("Replicated Onesie");
  std::string rejects = catwalk::test::make_temp_dir("catwalk-cluster-rejects");
  auto r =
      run_command(binary_path("catwalk-etl") + " load --db " + shell_quote(c.parts["primary"].url) +
                  " --rejects-dir " + rejects + " " + data);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto t0 = Clock::now();
  std::vector<bool> seen(kInstances + 1, false);
  int left = kInstances;
  while (left > 0 && seconds_since(t0) < 5.0) {
    for (int n = 1; n <= kInstances; ++n) {
      if (seen[n]) continue;
      if (get(c.api_port(n), "/products/1").body.find("Replicated Onesie") != std::string::npos) {
        seen[n] = true;
        --left;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  MESSAGE("every instance served the publish after " << seconds_since(t0) << " s");
  CHECK(left == 0);
  CHECK(get(c.nginx_port, "/products/1").body.find("Replicated Onesie") != std::string::npos);
  fs::remove_all(data);
  fs::remove_all(rejects);
}

TEST_CASE(
    "the replica stopped: cached 200s or fast 503s, never a 500 or a hang; carts still work") {
  auto& c = cluster();
  replica_ctl("stop");
  const std::vector<std::string> paths = {"/products/1",         "/products/1/styles",
                                          "/products/2",         "/products?page=1&count=5",
                                          "/products/5/related", "/products/999999"};
  std::map<int, int> statuses;
  auto t0 = Clock::now();
  while (seconds_since(t0) < 3.0) {  // across the watcher's polls and the pool's reconnects
    for (const auto& path : paths) {
      for (int port : {c.nginx_port, c.api_port(1), c.api_port(2)}) {
        auto a = get(port, path);
        INFO(path << " on port " << port << ": " << a.status << " " << a.body);
        CHECK((a.status == 200 || a.status == 404 || a.status == 503));
        CHECK(a.seconds < 3.0);
        statuses[a.status]++;
      }
    }
  }
  for (auto [s, n] : statuses) MESSAGE("status " << s << ": " << n);
  // The cart lives on the primary: reads and writes carry on.
  CHECK(post_cart(c.nginx_port, 616161, 1, 1).status == 201);
  // /ready names the database that is down, and nothing of its internals.
  auto ready = get(c.api_port(1), "/ready");
  CHECK(ready.status == 503);
  CHECK(ready.body ==
        R"({"error":"unavailable","message":"A database does not answer (primary: ok, replica: )"
        R"(unavailable); retry in a few seconds."})");
  CHECK(ready.body.find(c.cluster_dir()) == std::string::npos);

  // `up` brings the replica back (it catches up through its slot) and everything serves again.
  auto r = c.run("up --instances " + std::to_string(kInstances));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  c.parts = parse_parts(r.out);
  auto t1 = Clock::now();
  while (get(c.api_port(1), "/ready").status != 200 && seconds_since(t1) < 10)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(get(c.api_port(1), "/ready").body ==
        R"({"status":"ok","databases":{"primary":"ok","replica":"ok"}})");
  CHECK(get(c.nginx_port, "/products/1").status == 200);
}

TEST_CASE("down stops every process it started, down again is harmless") {
  auto& c = cluster();
  std::set<int> pids;
  for (auto& [name, p] : c.parts) {
    auto tree = process_tree(p.pid);
    pids.insert(tree.begin(), tree.end());
  }
  REQUIRE(pids.size() > c.parts.size());  // NGINX workers, PostgreSQL's own processes
  auto r = c.run("down");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.empty());
  for (int pid : pids) {
    INFO("pid " << pid << " outlived down");
    CHECK_FALSE(alive(pid));
  }
  CHECK(c.run("status").out.empty());
  auto again = c.run("down");
  CHECK(again.exit_code == 0);
  CHECK(again.out.empty());
}
