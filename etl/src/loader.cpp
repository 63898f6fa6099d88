#include "catwalk/etl/loader.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "catwalk/etl/errors.hpp"
#include "catwalk/etl/migrations.hpp"
#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"
#include "chunk_pipe.hpp"
#include "copy_writer.hpp"
#include "dag.hpp"
#include "documents.hpp"
#include "file_task.hpp"
#include "plan.hpp"
#include "progress.hpp"
#include "publish.hpp"
#include "record.hpp"
#include "rejects.hpp"
#include "validate.hpp"

namespace catwalk::etl {

namespace fs = std::filesystem;

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

// The decompressed size of an export file: its size, or for a .gz the size its gzip trailer
// records (modulo 2^32, so the smallest such size not below the compressed one: a lower bound
// when a member holds 4 GiB or more; concatenated members count the last one only).
std::uint64_t text_size_estimate(const std::string& path, std::uint64_t size) {
  if (!is_gzip_path(path) || size < 18) return size;
  std::ifstream in(path, std::ios::binary);
  in.seekg(-4, std::ios::end);
  unsigned char b[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(b), 4);
  std::uint64_t isize = b[0] | (b[1] << 8) | (b[2] << 16) | (std::uint64_t{b[3]} << 24);
  while (isize < size) isize += std::uint64_t{1} << 32;
  return isize;
}

// Free bytes for an unprivileged writer on the filesystem holding `path`.
std::optional<std::uint64_t> free_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return std::nullopt;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string gigabytes(double bytes) { return fmt::format("{:.2f} GB", bytes / 1e9); }

// Spill partitions: each is read back whole while its documents are assembled, so their count
// follows the export's size to keep that memory under kPartitionBudget whatever the size. Each
// running file task keeps one file open per partition: the count is capped by the open-files
// limit (raised to its hard maximum first).
constexpr double kPartitionBudget = 24.0 * (1 << 20);
constexpr int kMinPartitions = 64;

// The run graph's group of file tasks (at most --jobs at once), and the workers beyond --jobs
// that run SQL steps meanwhile.
constexpr int kFileGroup = 0;
constexpr int kExtraSqlWorkers = 2;

int assembly_threads(int jobs) {
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores > 0 ? std::min(jobs, cores) : jobs);
}

int partitions_for(double spill_bytes, int jobs) {
  int wanted =
      std::max(kMinPartitions, static_cast<int>(std::ceil(spill_bytes / kPartitionBudget)));
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    if (lim.rlim_cur < lim.rlim_max) {
      rlimit raised = lim;
      raised.rlim_cur = std::min<rlim_t>(lim.rlim_max, 1 << 20);
      if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
    }
    // Room for the connections, the inputs, rejects files and the rest.
    int cap = static_cast<int>((std::min<rlim_t>(lim.rlim_cur, 1 << 20) - 256) / jobs);
    if (wanted > cap) {
      log("the open-files limit ({}) allows {} document partitions, not the {} this export "
          "wants: assembling them takes more memory (raise ulimit -n)",
          lim.rlim_cur, std::max(kMinPartitions, cap), wanted);
      wanted = std::max(kMinPartitions, cap);
    }
  }
  return wanted;
}

class Run {
 public:
  explicit Run(const LoadOptions& o) : o_(o) {}

  void plan() {
    tasks_ = plan_files(o_);
    for (const auto& t : tasks_) {
      std::uint64_t text = text_size_estimate(t->path, t->size);
      text_bytes_ += text;
      if (t->spec->table != "cart_import") document_text_bytes_ += text;
    }
    if (o_.use_database) check_work_space();  // before the first write: the rejects folder
    make_rejects_folder(o_);
  }

  void prepare_database() {
    main_ = std::make_unique<pg::Connection>(o_.db_url);
    // One load at a time per database; a killed loader's lock dies with its connection.
    auto got = main_->exec("SELECT pg_try_advisory_lock(hashtext('catwalk-load'))");
    if (got.get(0, 0) != "t") {
      log("another catwalk-etl load is running on this database; waiting for it to finish");
      main_->exec("SELECT pg_advisory_lock(hashtext('catwalk-load'))");
    }
    // A load killed earlier may have left its unpublished schema behind, or (stopped between its
    // swap and its drop) the catalogue it retired: their disk space is wanted, and counted by the
    // space check.
    main_->exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", kStagingSchema));
    drop_retired(*main_);
    check_database_space();
    for (const auto& name : apply_missing_migrations(*main_)) log("applied migration {}", name);
    // What is published now, to compare the new catalogue with before replacing it.
    // Two statements: a query naming a table that does not exist fails when it is planned,
    // even behind a CASE (a schema left without its tables, e.g. dropped and recreated by hand).
    auto exists =
        main_->exec(fmt::format("SELECT to_regclass('{}.products') IS NOT NULL", kPublishedSchema));
    published_products_ = 0;
    if (exists.get(0, 0) == "t") {
      auto published =
          main_->exec(fmt::format("SELECT count(*) FROM {}.products", kPublishedSchema));
      published_products_ = static_cast<std::uint64_t>(published.get_int(0, 0));
    }
    main_->exec(fmt::format("CREATE SCHEMA {}", kStagingSchema));
    replay_catalog_phase(*main_, kStagingSchema, MigrationScope::kCatalogPreData);
    int partitions = partitions_for(kSpillPerTextByte * document_text_bytes_, o_.jobs);
    documents_ = std::make_unique<DocumentStore>(work_root_, partitions);
  }

  // The work folder (--work-dir, else TMPDIR, else /tmp) must exist and have room for the
  // document spill: a load that would fill the disk half-way stops here, before writing.
  void check_work_space() {
    if (!o_.work_dir.empty()) {
      std::error_code ec;
      if (!fs::is_directory(o_.work_dir, ec)) {
        throw InputError(
            fmt::format("--work-dir {}: not a folder; pass an existing folder for the work files",
                        o_.work_dir));
      }
      work_root_ = o_.work_dir;
    } else {
      std::error_code ec;
      fs::path temp = fs::temp_directory_path(ec);
      if (ec) {
        throw InputError(fmt::format(
            "no folder for work files: {}; set TMPDIR or pass --work-dir DIR", ec.message()));
      }
      work_root_ = temp.string();
    }
    double need = kSpillPerTextByte * static_cast<double>(document_text_bytes_);
    auto free = free_bytes(work_root_);
    if (!o_.space_check || !free) return;
    if (static_cast<double>(*free) < need) {
      throw InputError(fmt::format(
          "{}: {} free, but the document work files of this export need about {}; nothing was "
          "written. Free some space, or pass --work-dir DIR on a disk with room (--no-space-check "
          "to try anyway)",
          work_root_, gigabytes(*free), gigabytes(need)));
    }
  }

  // The new catalogue is built beside the published one: the database's disk must hold it.
  // PostgreSQL has no SQL for free disk space: the loader asks for the data directory and
  // measures it itself when the server is on this machine; otherwise it says it cannot check.
  void check_database_space() {
    if (!o_.space_check) return;
    double need = kDatabasePerTextByte * static_cast<double>(text_bytes_);
    auto r = main_->exec("SELECT setting FROM pg_settings WHERE name = 'data_directory'");
    std::string host = PQhost(main_->raw()) ? PQhost(main_->raw()) : "";
    bool local = host.empty() || host.starts_with('/') || host == "localhost" ||
                 host == "127.0.0.1" || host == "::1";
    std::string why;
    std::optional<std::uint64_t> free;
    std::string data_dir = r.rows() > 0 ? std::string(r.get(0, 0)) : "";
    if (data_dir.empty()) {
      why = "this role may not read data_directory (pg_read_all_settings grants it)";
    } else if (!local) {
      why = fmt::format("the server is on another host ({})", host);
    } else if (!(free = free_bytes(data_dir))) {
      why = fmt::format("cannot look at its data directory {}: {}", data_dir, std::strerror(errno));
    }
    if (!why.empty()) {
      log("not checking the free space on the database's disk: {}; this load needs about {} "
          "there",
          why, gigabytes(need));
      return;
    }
    if (static_cast<double>(*free) < need) {
      throw InputError(fmt::format(
          "the database's disk ({}) has {} free, but this load needs about {} there (the new "
          "catalogue is built beside the published one); nothing was written. Free some space "
          "(--no-space-check to try anyway)",
          data_dir, gigabytes(*free), gigabytes(need)));
    }
  }

  // Everything between planning and publishing, as one graph (build_run_graph): the files,
  // --jobs at once (parents first, then by the bytes waiting on them), then the documents and
  // the post-data steps (keys, foreign keys, indexes), critical path first, on kExtraSqlWorkers
  // more workers.
  void run_graph(RunSummary& summary) {
    progress_ = std::make_unique<Progress>(tasks_, o_.progress);
    std::vector<GraphFile> files;
    for (const auto& t : tasks_) {
      files.push_back({t->spec->table, t->parent_tasks, static_cast<double>(t->size)});
    }
    std::vector<Step> steps;
    if (o_.use_database) {
      std::vector<std::string> external = {"documents"};
      for (const auto& spec : table_specs()) external.push_back(spec.table);
      steps = post_data_steps(external);
    }
    std::vector<DagTask> dag = build_run_graph(files, o_.use_database, steps, kFileGroup);
    const std::size_t docs_task = tasks_.size();
    std::vector<double> seconds(dag.size(), 0);
    std::atomic<std::size_t> files_done{0};
    Clock::time_point post_start = Clock::now();
    // --jobs files at once; the SQL steps (keys, foreign keys) only wait on PostgreSQL, and
    // with --jobs workers alone they queued behind the documents and the skus keys while a
    // core idled (the foreign keys ran last, alone, 4-6 s at full scale): they get
    // kExtraSqlWorkers more workers, and connections, of their own.
    int workers = o_.use_database ? o_.jobs + kExtraSqlWorkers : o_.jobs;
    worker_conns_.resize(workers);
    try {
      run_dag(dag, workers,
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
              cancelled_, {o_.jobs});
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
      if (t->spec->role != TableRole::kProducts) {
        // Every file task is done and only the products' ranks are read from here on: the other
        // sets' memory (a bit per id: 13 MB in all at scale 4.0) is better spent assembling.
        t->ids = IdSet{};
        continue;
      }
      t->ids.finalize();  // every file task is done: the set is final, ranks can be computed
      products = &t->ids;
    }
    pg::Transaction tx(c);
    // Truncated in this transaction: COPY may FREEZE and, with wal_level=minimal, skip WAL.
    c.exec("TRUNCATE product_docs");
    pg::CopyIn copy(
        c,
        "COPY product_docs (id, rn, detail, styles, related, fp_detail, fp_styles, fp_related) "
        "FROM STDIN "
        "WITH (FORMAT binary, FREEZE)");
    ChunkPipe pipe(4);
    std::exception_ptr assembly_error;
    std::thread assembler([&] {
      try {
        // --jobs threads, but no more than there are cores, gzip the documents (the step's
        // main CPU cost) while PostgreSQL ingests: each holds one spill partition (at most
        // kPartitionBudget) at a time, so each thread costs memory, and one more than the
        // cores only waits for its turn.
        documents_->assemble(
            *products,
            [&](const std::string& chunk) {
              if (cancelled_ || g_stop_requested || !pipe.push(chunk)) throw Cancelled{};
            },
            assembly_threads(o_.jobs));
      } catch (const Cancelled&) {
      } catch (...) {
        assembly_error = std::current_exception();
      }
      pipe.close();
    });
    // Whatever fails here, the assembler stops and is joined first; then the COPY and the
    // transaction are abandoned by their destructors, which never throw.
    struct JoinAssembler {
      ChunkPipe& pipe;
      std::thread& thread;
      ~JoinAssembler() {
        pipe.cancel();
        if (thread.joinable()) thread.join();
      }
    } joiner{pipe, assembler};
    std::string chunk;
    while (pipe.pop(chunk)) copy.put(chunk);
    assembler.join();
    if (assembly_error) std::rethrow_exception(assembly_error);
    check_stop();
    if (cancelled_) throw Cancelled{};
    copy.finish();
    tx.commit();
  }

  void check_catalogue_size() const {
    for (const auto& t : tasks_) {
      if (t->spec->role == TableRole::kProducts)
        etl::check_catalogue_size(t->stats, published_products_, o_);
    }
  }

  void publish(RunSummary& summary) {
    check_stop();  // the last moment a stop is honoured: past here the swap commits
    log("publishing");
    auto t = Clock::now();
    std::uint64_t cart_inserted = publish_staging(*main_);
    for (auto& task : tasks_) {
      if (task->spec->role == TableRole::kCart)
        summary.cart_rows_kept = task->stats.loaded - cart_inserted;
    }
    summary.phases.push_back({"publish", since(t)});
    log("published; dropping the previous catalogue");
    t = Clock::now();
    try {
      drop_retired(*main_);
      summary.phases.push_back({"previous catalogue dropped", since(t)});
    } catch (const pg::DbError& e) {
      // The new catalogue is published: the load succeeded. The old one only takes room until
      // the next load, which drops it first.
      log("the previous catalogue (schema {}) could not be dropped: {}; the next load drops it, "
          "or DROP SCHEMA {} CASCADE does",
          kRetiredSchema, printable_text(e.what(), 1024), kRetiredSchema);
    }
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
      // A load keeps every core busy (--jobs connections, the loader's own threads): parallel
      // index builds would only add work. Their workers sort into temporary files that the
      // leader reads back and merges, where one process sorts in memory: the skus indexes took
      // 8.0-8.6 CPU-seconds with 2 workers and 6.0-6.2 alone, in the same wall time even on
      // idle cores (bench/README.md, "Round of 2026-11-25 (2)").
      c->exec("SET max_parallel_maintenance_workers = 0");
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

    // The file's rows go to its table (load only). On any failure the writer aborts the COPY
    // and rolls back without throwing, and the rejects file is closed quietly: the error that
    // stopped the task is the one reported.
    std::optional<CopyWriter> copy;
    if (o_.use_database) copy.emplace(worker_connection(worker), *task.spec);
    std::string no_database_rows;  // `check`: rows are formed the same way, then dropped
    std::string& buffer = copy ? copy->rows() : no_database_rows;

    std::unique_ptr<DocumentStore::Writer> docs;
    if (documents_) docs = documents_->writer(*task.spec);
    LineSource source(task.path);
    std::string_view line;
    source.next(line);  // the header, checked in plan()
    RowError error;
    bool repaired = false;
    auto publish_live = [&] {
      task.live_rows.store(st.read, std::memory_order_relaxed);
      // Compared with the file's size on disk: compressed bytes for a .gz.
      task.live_bytes.store(source.input_bytes(), std::memory_order_relaxed);
    };
    while (source.next(line)) {
      ++st.read;
      if (validator.validate(source.line_number(), line, buffer, repaired, error)) {
        ++st.loaded;
        st.repaired += repaired;
        if (docs) docs->add_row(validator);
        if (copy)
          copy->send_if_full();
        else
          drop_if_full(buffer);
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
    rejects.close();
    if (docs) docs->close();
    if (copy) copy->finish();
    st.bytes = source.bytes_read();
    st.seconds = since(start);
    publish_live();
    task.live_done = true;
  }

  const LoadOptions& o_;
  std::vector<std::unique_ptr<FileTask>> tasks_;
  std::unique_ptr<pg::Connection> main_;
  std::uint64_t published_products_ = 0;  // products published before this load
  std::vector<std::unique_ptr<pg::Connection>> worker_conns_;
  std::unique_ptr<DocumentStore> documents_;  // load only
  std::unique_ptr<Progress> progress_;
  std::string work_root_;                  // where the document spill folder is made
  std::uint64_t text_bytes_ = 0;           // CSV text of every file (decompressed)
  std::uint64_t document_text_bytes_ = 0;  // of the files that feed the documents
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
    r.check_catalogue_size();
    if (options.use_database) r.publish(summary);
  } catch (const Interrupted& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitInterrupted;
  } catch (const InputError& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitBadInput;
  } catch (const TooManyRejects& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitTooManyRejects;
  } catch (const RefusedPublish& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitRefused;
  } catch (const pg::DbError& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitDatabase;
  } catch (const std::exception& e) {
    summary.ok = false, summary.error = e.what(), summary.exit_code = kExitInternal;
  }
  // Messages may quote paths and header text from the input: keep what is shown valid UTF-8.
  if (!summary.ok) summary.error = printable_text(summary.error, 4096);
  r.collect(summary);
  summary.seconds = since(start);
  return summary;
}

}  // namespace catwalk::etl
