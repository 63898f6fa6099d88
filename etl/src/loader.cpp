#include "catwalk/etl/loader.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "catwalk/etl/copy_binary.hpp"
#include "catwalk/etl/dag.hpp"
#include "catwalk/etl/documents.hpp"
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

// Set by request_stop(), from a signal handler: lock-free by construction.
std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void check_stop() {
  if (g_stop_requested.load(std::memory_order_relaxed)) {
    throw Interrupted(
        "interrupted: the load was stopped before publishing; the published data "
        "is unchanged");
  }
}

struct FileTask {
  const TableSpec* spec = nullptr;
  std::string path;
  HeaderMap header;
  std::uint64_t size = 0;
  std::vector<std::size_t> parent_tasks;  // indices of tasks that must finish first
  IdSet ids;                              // accepted ids; read by child tasks once this one is done
  FileStats stats;
  // Live progress, written by the worker, read by the progress thread.
  std::atomic<std::uint64_t> live_rows{0};
  std::atomic<std::uint64_t> live_bytes{0};
  std::atomic<Clock::rep> live_started_ns{0};  // steady clock; 0 = not started
  std::atomic<bool> live_done{false};
};

// Live progress on stderr: on a terminal, one line per file redrawn in place (rows, MB/s, percent,
// ETA); otherwise one line per running file every 5 seconds, so CI logs stay short.
class Progress {
 public:
  Progress(std::vector<std::unique_ptr<FileTask>>& tasks, LoadOptions::Progress mode)
      : tasks_(tasks) {
    terminal_ = mode == LoadOptions::Progress::kTerminal ||
                (mode == LoadOptions::Progress::kAuto && ::isatty(STDERR_FILENO));
    if (mode != LoadOptions::Progress::kOff) thread_ = std::thread([this] { loop(); });
  }
  ~Progress() { stop(); }
  // True while live terminal lines are being redrawn (other stderr output would garble them).
  bool live() {
    std::lock_guard lock(m_);
    return terminal_ && !stopped_;
  }
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
    std::unique_lock lock(m_);
    while (!cv_.wait_for(lock, interval, [this] { return stopped_; })) render();
    if (terminal_) render();  // the final state of every line
  }

  void render() {
    std::string out;
    if (drawn_ > 0) out += fmt::format("\x1b[{}A", drawn_);  // back to the first line
    int lines = 0;
    for (auto& t : tasks_) {
      bool done = t->live_done.load();
      auto started = t->live_started_ns.load();
      if (started == 0 || (done && !terminal_)) continue;
      std::uint64_t rows = t->live_rows.load(), bytes = t->live_bytes.load();
      double secs = done
                        ? t->stats.seconds
                        : std::max(1e-3, (Clock::now().time_since_epoch().count() - started) / 1e9);
      double mbps = bytes / 1e6 / secs;
      std::string state = "done";
      if (!done) {
        double left = t->size > bytes && mbps > 0 ? (t->size - bytes) / 1e6 / mbps : 0;
        state = fmt::format("{:3.0f}%  ETA {}:{:02}", t->size ? 100.0 * bytes / t->size : 100.0,
                            static_cast<int>(left) / 60, static_cast<int>(left) % 60);
      }
      out += fmt::format("{}{:<13} {:>12} rows {:>8.1f} MB/s  {}\n", terminal_ ? "\x1b[2K" : "",
                         t->spec->file, rows, mbps, state);
      ++lines;
    }
    if (terminal_) drawn_ = lines;
    if (out.empty()) return;
    ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
    (void)ignored;
  }

  std::vector<std::unique_ptr<FileTask>>& tasks_;
  bool terminal_ = false, stopped_ = false;
  int drawn_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  std::thread thread_;
};

// A bounded hand-off of COPY chunks from one producer thread to one consumer: the documents are
// assembled while PostgreSQL ingests the previous chunks. close() ends the stream (producer
// side); cancel() makes both sides give up (consumer side, on a failed send).
class ChunkPipe {
 public:
  explicit ChunkPipe(std::size_t capacity) : capacity_(capacity) {}
  bool push(std::string chunk) {  // false once cancelled
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return cancelled_ || queue_.size() < capacity_; });
    if (cancelled_) return false;
    queue_.push_back(std::move(chunk));
    cv_.notify_all();
    return true;
  }
  bool pop(std::string& out) {  // false at the end of the stream or once cancelled
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return cancelled_ || closed_ || !queue_.empty(); });
    if (cancelled_ || queue_.empty()) return false;
    out = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
    cv_.notify_all();
  }
  void cancel() {
    std::lock_guard lock(m_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  std::size_t capacity_;
  std::deque<std::string> queue_;
  bool closed_ = false, cancelled_ = false;
  std::mutex m_;
  std::condition_variable cv_;
};

class Run {
 public:
  explicit Run(const LoadOptions& o) : o_(o) {}

  void plan() {
    if (!fs::is_directory(o_.dir)) {
      throw InputError(
          fmt::format("{}: not a folder; pass the folder holding product.csv, ...", o_.dir));
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
      throw InputError(
          fmt::format("cannot create the rejects folder {}: {}", o_.rejects_dir, ec.message()));
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
    documents_ = std::make_unique<DocumentStore>(fs::temp_directory_path().string(), kPartitions);
  }

  // Everything between planning and publishing, as one graph over --jobs workers: the files
  // (parents first, largest first), then the documents and the post-data steps (keys, indexes),
  // critical path first.
  void run_graph(RunSummary& summary) {
    progress_ = std::make_unique<Progress>(tasks_, o_.progress);
    std::vector<DagTask> dag;
    for (auto& t : tasks_) dag.push_back({t->parent_tasks, 1e12 + static_cast<double>(t->size)});
    std::vector<std::size_t> all_files(tasks_.size());
    for (std::size_t i = 0; i < tasks_.size(); ++i) all_files[i] = i;

    std::vector<Step> steps;
    std::size_t docs_task = dag.size();
    if (o_.use_database) {
      dag.push_back({all_files, 0});
      std::vector<std::string> external = {"documents"};
      for (const auto& spec : table_specs()) external.push_back(spec.table);
      steps = post_data_steps(external);
      for (std::size_t i = 0; i < steps.size(); ++i) {
        DagTask t;
        bool waits_for_a_table = false;
        for (const auto& name : steps[i].after) {
          if (name == "documents") t.after.push_back(docs_task), waits_for_a_table = true;
          for (std::size_t f = 0; f < tasks_.size(); ++f) {
            if (tasks_[f]->spec->table == name) t.after.push_back(f), waits_for_a_table = true;
          }
          for (std::size_t j = 0; j < i; ++j) {
            if (steps[j].name == name) t.after.push_back(docs_task + 1 + j);
          }
        }
        // A step that names no table may read any of them: it waits for every file.
        if (!waits_for_a_table) t.after.insert(t.after.end(), all_files.begin(), all_files.end());
        dag.push_back(std::move(t));
      }
      // Critical path first: priority is the longest chain of tasks waiting on a task
      // (dependencies only point backwards, so one reverse pass computes it); ties in order.
      std::vector<int> chain(dag.size(), 0);
      for (std::size_t i = dag.size(); i-- > docs_task;) {
        for (auto d : dag[i].after) chain[d] = std::max(chain[d], chain[i] + 1);
      }
      for (std::size_t i = docs_task; i < dag.size(); ++i) dag[i].priority = chain[i] * 1000.0 - i;
    }
    std::vector<double> seconds(dag.size(), 0);
    std::atomic<std::size_t> files_done{0};
    Clock::time_point post_start = Clock::now();
    worker_conns_.resize(o_.jobs);
    try {
      run_dag(
          dag, o_.jobs,
          [&](std::size_t i, int w) {
            if (i < tasks_.size()) {
              run_task(*tasks_[i], w);
              if (++files_done == tasks_.size()) {
                progress_->stop();  // the live lines end here; the rest is logged
                post_start = Clock::now();
              }
              return;
            }
            check_stop();
            auto t = Clock::now();
            std::string name = i == docs_task ? "documents" : steps[i - docs_task - 1].name;
            if (i == docs_task)
              build_documents(worker_connection(w));
            else
              worker_connection(w).exec(steps[i - docs_task - 1].sql);
            seconds[i] = since(t);
            if (!progress_->live()) log("built {} in {:.2f} s", name, seconds[i]);
          },
          cancelled_);
    } catch (const Cancelled&) {
      // Only raised when another task failed first, and that failure is what run_dag rethrows.
    }
    progress_->stop();
    if (o_.use_database) {
      summary.phases.push_back({"documents", seconds[docs_task]});
      for (std::size_t i = 0; i < steps.size(); ++i) {
        summary.phases.push_back({steps[i].name, seconds[docs_task + 1 + i]});
      }
      summary.phases.push_back({"after the last file (wall)", since(post_start)});
    }
  }

  // COPYs every product's documents into product_docs, assembled from the fragments the file
  // tasks spilled.
  void build_documents(pg::Connection& c) {
    const IdSet* products = nullptr;
    for (auto& t : tasks_) {
      if (t->spec->table != "products") continue;
      t->ids.finalize();  // every file task is done: the set is final, ranks can be computed
      products = &t->ids;
    }
    c.exec("BEGIN");
    ChunkPipe pipe(4);
    std::exception_ptr assembly_error;
    std::thread assembler([&] {
      try {
        // --jobs threads gzip the documents (the step's main CPU cost) while PostgreSQL
        // ingests: each holds one spill partition, about export size / 64.
        documents_->assemble(
            *products,
            [&](const std::string& chunk) {
              if (cancelled_ || g_stop_requested || !pipe.push(chunk)) throw Cancelled{};
            },
            o_.jobs);
      } catch (const Cancelled&) {
      } catch (...) {
        assembly_error = std::current_exception();
      }
      pipe.close();
    });
    try {
      c.exec("TRUNCATE product_docs");
      c.exec(
          "COPY product_docs (id, rn, item, detail, styles, related) FROM STDIN "
          "WITH (FORMAT binary, FREEZE)");
      std::string chunk;
      while (pipe.pop(chunk)) c.put_copy(chunk.data(), chunk.size());
      assembler.join();
      if (assembly_error) std::rethrow_exception(assembly_error);
      check_stop();
      if (cancelled_) throw Cancelled{};
      c.end_copy();
      c.exec("COMMIT");
    } catch (...) {
      pipe.cancel();
      if (assembler.joinable()) assembler.join();
      if (c.ok()) {
        c.abort_copy("load cancelled");
        c.exec("ROLLBACK");
      }
      throw;
    }
  }

  void publish(RunSummary& summary) {
    check_stop();  // the last moment a stop is honoured: past here the swap commits
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
          summary.cart_rows_kept =
              task->stats.loaded - static_cast<std::uint64_t>(ins.get_int(0, 0));
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
    task.live_started_ns = start.time_since_epoch().count();
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
      conn->exec(
          fmt::format("COPY {} ({}pos) FROM STDIN WITH (FORMAT binary, FREEZE)", table, cols));
    }

    std::unique_ptr<DocumentStore::Writer> docs;
    if (documents_) docs = documents_->writer(*task.spec);
    LineSource source(task.path);
    std::string_view line;
    source.next(line);  // the header, checked in plan()
    std::string buffer;
    constexpr std::size_t kFlushAt = 1 << 20;
    buffer.reserve(kFlushAt + (1 << 16));
    buffer.append(copy_binary::kHeader);
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
          if (docs) docs->add_row(validator, static_cast<std::uint32_t>(source.line_number()));
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
          check_stop();
        }
      }
      if (conn) {
        copy_binary::trailer(buffer);
        conn->put_copy(buffer.data(), buffer.size());
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
    if (docs) docs->close();
    st.bytes = source.bytes_read();
    st.seconds = since(start);
    publish_live();
    task.live_done = true;
  }

  const LoadOptions& o_;
  std::vector<std::unique_ptr<FileTask>> tasks_;
  std::unique_ptr<pg::Connection> main_;
  std::vector<std::unique_ptr<pg::Connection>> worker_conns_;
  std::unique_ptr<DocumentStore> documents_;  // load only
  std::unique_ptr<Progress> progress_;
  // Spill partitions of the documents: about export size / 64 in memory while assembling.
  static constexpr int kPartitions = 64;
  std::atomic<bool> cancelled_{false};
  std::atomic<std::uint64_t> total_rejects_{0};
};

}  // namespace

void request_stop() { g_stop_requested.store(true); }

RunSummary run(const LoadOptions& options) {
  RunSummary summary;
  auto start = Clock::now();
  Run r(options);
  try {
    r.plan();
    if (options.use_database) r.prepare_database();
    r.run_graph(summary);
    if (options.use_database) r.publish(summary);
  } catch (const Interrupted& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitInterrupted;
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
