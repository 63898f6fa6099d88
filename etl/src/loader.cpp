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
  enum class State { kPending, kRunning, kDone } state = State::kPending;
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
    std::vector<std::thread> workers;
    int n = std::max(1, std::min<int>(o_.jobs, static_cast<int>(tasks_.size())));
    for (int i = 0; i < n; ++i) workers.emplace_back([this] { worker(); });
    for (auto& w : workers) w.join();
    progress.stop();
    if (failure_) std::rethrow_exception(failure_);
  }

  void build_and_publish(RunSummary& summary) {
    main_->exec("SET maintenance_work_mem = '1GB'");
    main_->exec("SET work_mem = '256MB'");
    main_->exec(fmt::format("SET search_path = {}, public", kStagingSchema));
    for (const auto& m : migrations()) {
      if (m.scope != MigrationScope::kCatalogPostData) continue;
      log("building {}", m.name);
      auto t = Clock::now();
      main_->exec(m.sql);
      summary.phases.push_back({m.name, since(t)});
    }
    main_->exec("RESET search_path");
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
  void worker() {
    while (true) {
      FileTask* task = nullptr;
      {
        std::unique_lock lock(m_);
        cv_.wait(lock, [&] { return failure_ || (task = pick_ready()) || all_started(); });
        if (failure_ || task == nullptr) return;
        task->state = FileTask::State::kRunning;
      }
      try {
        run_task(*task);
      } catch (const Cancelled&) {
        return;
      } catch (...) {
        std::lock_guard lock(m_);
        if (!failure_) failure_ = std::current_exception();
        cancelled_ = true;
        cv_.notify_all();
        return;
      }
      std::lock_guard lock(m_);
      task->state = FileTask::State::kDone;
      cv_.notify_all();
    }
  }

  // Called with m_ held: the largest pending file whose parents are done.
  FileTask* pick_ready() {
    FileTask* best = nullptr;
    for (auto& t : tasks_) {
      if (t->state != FileTask::State::kPending) continue;
      bool ready = true;
      for (auto p : t->parent_tasks) ready &= tasks_[p]->state == FileTask::State::kDone;
      if (ready && (!best || t->size > best->size)) best = t.get();
    }
    return best;
  }
  bool all_started() const {
    for (auto& t : tasks_) {
      if (t->state == FileTask::State::kPending) return false;
    }
    return true;
  }

  void run_task(FileTask& task) {
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

    std::unique_ptr<pg::Connection> conn;
    if (o_.use_database) {
      conn = std::make_unique<pg::Connection>(o_.db_url);
      std::string table = conn->quote_ident(task.spec->table);
      std::string cols;
      for (const auto& c : task.spec->columns) cols += conn->quote_ident(c.name) + ", ";
      conn->exec("BEGIN");
      conn->exec(fmt::format("SET LOCAL search_path = {}, public", kStagingSchema));
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
      if (conn && conn->ok()) conn->abort_copy("load cancelled");
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
  std::mutex m_;
  std::condition_variable cv_;
  std::exception_ptr failure_;
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
    if (options.use_database) r.build_and_publish(summary);
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
