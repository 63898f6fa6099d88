#include "catwalk/etl/loader.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "catwalk/etl/dag.hpp"
#include "catwalk/etl/errors.hpp"
#include "catwalk/etl/migrations.hpp"
#include "catwalk/etl/record.hpp"
#include "catwalk/etl/rejects.hpp"
#include "catwalk/etl/validate.hpp"
#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"

namespace catwalk::etl {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Thrown inside a worker when another worker failed: this one stops quietly.
struct Cancelled {};

struct FileTask {
  const TableSpec* spec = nullptr;
  std::string path;
  HeaderMap header;
  std::uint64_t size = 0;
  std::vector<std::size_t> parent_tasks;  // indices of tasks that must finish first
  IdSet ids;  // accepted ids; read by child tasks once this one is done
  FileStats stats;
  // Live progress, written by the worker, read by the progress thread.
  std::atomic<std::uint64_t> live_rows{0};
  std::atomic<std::uint64_t> live_bytes{0};
  std::atomic<bool> live_running{false};
  std::atomic<bool> live_done{false};
};

class Progress {
 public:
  Progress(std::vector<std::unique_ptr<FileTask>>& tasks, LoadOptions::Progress mode)
      : tasks_(tasks) {
    terminal_ = mode == LoadOptions::Progress::kTerminal ||
                (mode == LoadOptions::Progress::kAuto && ::isatty(STDERR_FILENO));
    enabled_ = mode != LoadOptions::Progress::kOff;
    if (enabled_) thread_ = std::thread([this] { loop(); });
  }
  ~Progress() { stop(); }
  void stop() {
    {
      std::lock_guard lock(m_);
      if (stopped_) return;
      stopped_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    auto interval = terminal_ ? std::chrono::milliseconds(250) : std::chrono::seconds(5);
    auto start = Clock::now();
    std::unique_lock lock(m_);
    while (!cv_.wait_for(lock, interval, [this] { return stopped_; })) render(since(start), false);
    render(since(start), true);
  }

  void render(double elapsed, bool final) {
    std::string out;
    if (terminal_ && drawn_ > 0) out += fmt::format("\x1b[{}A", drawn_);
    int lines = 0;
    for (auto& t : tasks_) {
      bool running = t->live_running.load(), done = t->live_done.load();
      if (!running && !done) continue;
      if (!terminal_ && !running) continue;  // plain lines: only what is moving
      std::uint64_t rows = t->live_rows.load(), bytes = t->live_bytes.load();
      double secs = done ? t->stats.seconds : std::max(1e-3, elapsed - started_at(*t, elapsed));
      double mbps = bytes / 1e6 / std::max(secs, 1e-3);
      std::string eta = "done";
      if (!done) {
        double left = t->size > bytes && mbps > 0 ? (t->size - bytes) / 1e6 / mbps : 0;
        eta = fmt::format("{:3.0f}%  ETA {}:{:02}", t->size ? 100.0 * bytes / t->size : 100.0,
                          static_cast<int>(left) / 60, static_cast<int>(left) % 60);
      }
      out += fmt::format("{}{:<13} {:>12} rows {:>8.1f} MB/s  {}{}\n", terminal_ ? "\x1b[2K" : "",
                         t->spec->file, rows, mbps, eta, terminal_ ? "" : "");
      ++lines;
    }
    if (!terminal_ && lines == 0) return;
    if (terminal_) drawn_ = lines;
    (void)final;
    ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
    (void)ignored;
  }

  // When a task started, as seen by this thread (first time it was seen running).
  double started_at(FileTask& t, double now) {
    for (auto& [task, at] : starts_) {
      if (task == &t) return at;
    }
    starts_.push_back({&t, now});
    return now;
  }

  std::vector<std::unique_ptr<FileTask>>& tasks_;
  std::vector<std::pair<FileTask*, double>> starts_;
  bool terminal_ = false, enabled_ = false, stopped_ = false;
  int drawn_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  std::thread thread_;
};

class Run {
 public:
  explicit Run(const LoadOptions& o) : o_(o) {}

  void plan() {
    if (!fs::is_directory(o_.dir)) {
      throw InputError(fmt::format("{}: not a folder; pass the folder holding product.csv, ...", o_.dir));
    }
    for (const auto& spec : table_specs()) {
      fs::path path = fs::path(o_.dir) / spec.file;
      if (!fs::exists(path)) {
        if (!spec.required) continue;
        throw InputError(fmt::format(
            "{}: required file {} is missing; nothing was loaded. Expected product.csv, "
            "features.csv, styles.csv, photos.csv, skus.csv, related.csv (cart.csv optional)",
            o_.dir, spec.file));
      }
      auto t = std::make_unique<FileTask>();
      t->spec = &spec;
      t->path = path.string();
      t->header = map_header(spec, read_header_line(t->path), t->path);
      t->size = fs::file_size(path);
      t->stats.file = spec.file;
      t->stats.table = spec.table == "cart_import" ? "cart" : spec.table;
      tasks_.push_back(std::move(t));
    }
    for (auto& t : tasks_) {
      for (const auto& parent : t->spec->parents()) {
        for (std::size_t i = 0; i < tasks_.size(); ++i) {
          if (tasks_[i]->spec->table == parent) t->parent_tasks.push_back(i);
        }
      }
    }
    std::error_code ec;
    fs::create_directories(o_.rejects_dir, ec);
    if (!fs::is_directory(o_.rejects_dir)) {
      throw InputError(fmt::format("cannot create the rejects folder {}: {}", o_.rejects_dir,
                                   ec.message()));
    }
  }

  void prepare_database() {
    main_ = std::make_unique<pg::Connection>(o_.db_url);
    // One load at a time per database; a killed loader's lock dies with its connection.
    auto got = main_->exec("SELECT pg_try_advisory_lock(hashtext('catwalk-load'))");
    if (got.get(0, 0) != "t") {
      log("another catwalk-etl load is running on this database; waiting for it to finish");
      main_->exec("SELECT pg_advisory_lock(hashtext('catwalk-load'))");
    }
    for (const auto& name : apply_missing_migrations(*main_)) log("applied migration {}", name);
    // A load killed earlier may have left its unpublished schema behind.
    main_->exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", kStagingSchema));
    main_->exec(fmt::format("CREATE SCHEMA {}", kStagingSchema));
    replay_catalog_phase(*main_, kStagingSchema, MigrationScope::kCatalogPreData);
  }

  void load_files() {
    Progress progress(tasks_, o_.progress);
    std::vector<DagTask> dag;
    for (auto& t : tasks_) dag.push_back({t->parent_tasks, static_cast<double>(t->size)});
    worker_conns_.resize(o_.jobs);
    try {
      run_dag(dag, o_.jobs, [this](std::size_t i, int w) { run_task(*tasks_[i], w); }, cancelled_);
    } catch (const Cancelled&) {
      // Only raised when another task failed first, and that failure is what run_dag rethrows.
    }
    progress.stop();
  }

  // Keys, indexes and documents: the post-data steps, in parallel over the workers'
  // connections, each step's time reported as a phase.
  void build_post_data(RunSummary& summary) {
    auto steps = post_data_steps();
    std::vector<DagTask> dag;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      DagTask t;
      for (const auto& name : steps[i].after) {
        for (std::size_t j = 0; j < i; ++j) {
          if (steps[j].name == name) t.after.push_back(j);
        }
      }
      dag.push_back(std::move(t));
    }
    // Critical path first: a step's priority is the longest chain of steps waiting on it
    // (dependencies only point backwards, so one reverse pass computes it); ties in file order.
    std::vector<int> chain(steps.size(), 0);
    for (std::size_t i = steps.size(); i-- > 0;) {
      for (auto d : dag[i].after) chain[d] = std::max(chain[d], chain[i] + 1);
    }
    for (std::size_t i = 0; i < steps.size(); ++i) dag[i].priority = chain[i] * 1000.0 - i;
    std::vector<double> seconds(steps.size());
    auto start = Clock::now();
    log("building keys, indexes and documents: {} steps on {} connections", steps.size(), o_.jobs);
    run_dag(dag, o_.jobs, [&](std::size_t i, int w) {
      pg::Connection& c = worker_connection(w);
      auto t = Clock::now();
      c.exec(steps[i].sql);
      seconds[i] = since(t);
      log("built {} in {:.2f} s", steps[i].name, seconds[i]);
    }, cancelled_);
    for (std::size_t i = 0; i < steps.size(); ++i) summary.phases.push_back({steps[i].name, seconds[i]});
    summary.phases.push_back({"post-data (wall)", since(start)});
  }

  void publish(RunSummary& summary) {
    log("publishing");
    auto t = Clock::now();
    main_->exec("BEGIN");
    try {
      main_->exec("SELECT version FROM public.catwalk_publish FOR UPDATE");
      main_->exec(fmt::format("ALTER SCHEMA {} RENAME TO catwalk_retired", kPublishedSchema));
      main_->exec(fmt::format("ALTER SCHEMA {} RENAME TO {}", kStagingSchema, kPublishedSchema));
      main_->exec("DROP SCHEMA catwalk_retired CASCADE");
      // Carts written through the API survive: rows whose id is present are left alone.
      auto ins = main_->exec(
          "WITH ins AS (INSERT INTO public.cart (id, user_session, product_id, active)"
          " SELECT id, user_session, product_id, active FROM catwalk.cart_import ORDER BY pos"
          " ON CONFLICT (id) DO NOTHING RETURNING 1) SELECT count(*) FROM ins");
      main_->exec(
          "SELECT setval('public.cart_id_seq', m) FROM (SELECT max(id) AS m FROM public.cart) x"
          " WHERE m > (SELECT last_value FROM public.cart_id_seq)");
      main_->exec("UPDATE public.catwalk_publish SET version = version + 1, published_at = now()");
      main_->exec("COMMIT");
      for (auto& task : tasks_) {
        if (task->spec->table == "cart_import") {
          summary.cart_rows_kept = task->stats.loaded - static_cast<std::uint64_t>(ins.get_int(0, 0));
        }
      }
    } catch (...) {
      if (main_->ok()) main_->exec("ROLLBACK");
      throw;
    }
    summary.phases.push_back({"publish", since(t)});
  }

  void collect(RunSummary& s) {
    for (auto& t : tasks_) s.files.push_back(t->stats);
  }

 private:
  // The worker's own connection, made on first use, with the staging schema first in its path.
  pg::Connection& worker_connection(int w) {
    auto& c = worker_conns_[w];
    if (!c) {
      c = std::make_unique<pg::Connection>(o_.db_url);
      c->exec(fmt::format("SET search_path = {}, public", kStagingSchema));
      c->exec("SET maintenance_work_mem = '1GB'");
      c->exec("SET work_mem = '256MB'");
      // The work tables have no statistics yet: estimates are far off and would trigger JIT
      // compilation that costs more than it saves.
      c->exec("SET jit = off");
      // Large documents are TOASTed: lz4 compresses several times faster than the default pglz.
      c->exec("SET default_toast_compression = 'lz4'");
    }
    return *c;
  }

  void run_task(FileTask& task, int worker) {
    auto start = Clock::now();
    task.live_running = true;
    FileStats& st = task.stats;
    std::vector<const IdSet*> parents;
    for (const auto& col : task.spec->columns) {
      const IdSet* p = nullptr;
      for (auto i : task.parent_tasks) {
        if (tasks_[i]->spec->table == col.parent) p = &tasks_[i]->ids;
      }
      parents.push_back(p);
    }
    RowValidator validator(*task.spec, task.header, parents, task.ids);
    std::string stem = fs::path(task.spec->file).stem().string();
    RejectsWriter rejects((fs::path(o_.rejects_dir) / (stem + ".rejects.csv")).string());

    pg::Connection* conn = o_.use_database ? &worker_connection(worker) : nullptr;
    if (conn) {
      std::string table = conn->quote_ident(task.spec->table);
      std::string cols;
      for (const auto& c : task.spec->columns) cols += conn->quote_ident(c.name) + ", ";
      conn->exec("BEGIN");
      // Truncated in this transaction: COPY may FREEZE and, with wal_level=minimal, skip WAL.
      conn->exec("TRUNCATE " + table);
      conn->exec(fmt::format("COPY {} ({}pos) FROM STDIN WITH (FREEZE)", table, cols));
    }

    LineSource source(task.path);
    std::string_view line;
    source.next(line);  // the header, checked in plan()
    std::string buffer;
    constexpr std::size_t kFlushAt = 1 << 20;
    buffer.reserve(kFlushAt + (1 << 16));
    RowError error;
    bool repaired = false;
    auto publish_live = [&] {
      task.live_rows.store(st.read, std::memory_order_relaxed);
      task.live_bytes.store(source.bytes_read(), std::memory_order_relaxed);
    };
    try {
      while (source.next(line)) {
        ++st.read;
        if (validator.validate(source.line_number(), line, buffer, repaired, error)) {
          ++st.loaded;
          st.repaired += repaired;
          if (buffer.size() >= kFlushAt) {
            if (conn) conn->put_copy(buffer.data(), buffer.size());
            buffer.clear();
          }
        } else {
          ++st.rejected;
          ++st.rejects[static_cast<int>(error.kind)];
          rejects.write(error, line);
          std::uint64_t total = ++total_rejects_;
          if (o_.max_rejects && total > *o_.max_rejects) {
            throw TooManyRejects(fmt::format(
                "more than {} lines rejected (--max-rejects); stopped at {} line {}; nothing "
                "was published. See the rejects in {}",
                *o_.max_rejects, task.spec->file, source.line_number(), o_.rejects_dir));
          }
        }
        if ((st.read & 4095) == 0) {
          publish_live();
          if (cancelled_) throw Cancelled{};
        }
      }
      if (conn) {
        if (!buffer.empty()) conn->put_copy(buffer.data(), buffer.size());
        conn->end_copy();
        conn->exec("COMMIT");
      }
    } catch (...) {
      if (conn && conn->ok()) {
        conn->abort_copy("load cancelled");
        conn->exec("ROLLBACK");
      }
      rejects.close();
      throw;
    }
    rejects.close();
    st.bytes = source.bytes_read();
    st.seconds = since(start);
    publish_live();
    task.live_done = true;
    task.live_running = false;
  }

  const LoadOptions& o_;
  std::vector<std::unique_ptr<FileTask>> tasks_;
  std::unique_ptr<pg::Connection> main_;
  std::vector<std::unique_ptr<pg::Connection>> worker_conns_;
  std::atomic<bool> cancelled_{false};
  std::atomic<std::uint64_t> total_rejects_{0};
};

}  // namespace

RunSummary run(const LoadOptions& options) {
  RunSummary summary;
  auto start = Clock::now();
  Run r(options);
  try {
    r.plan();
    if (options.use_database) r.prepare_database();
    r.load_files();
    if (options.use_database) {
      r.build_post_data(summary);
      r.publish(summary);
    }
  } catch (const InputError& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitBadInput;
  } catch (const TooManyRejects& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitTooManyRejects;
  } catch (const pg::DbError& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitDatabase;
  } catch (const std::exception& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitInternal;
  }
  r.collect(summary);
  summary.seconds = since(start);
  return summary;
}

}  // namespace catwalk::etl
