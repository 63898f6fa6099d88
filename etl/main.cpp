// catwalk-etl: load the catalogue exports into PostgreSQL (see README.md for flags and exit codes).
#include <fmt/format.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "catwalk/config.hpp"
#include "catwalk/etl/errors.hpp"
#include "catwalk/etl/loader.hpp"
#include "catwalk/etl/migrations.hpp"
#include "catwalk/log.hpp"
#include "catwalk/pg.hpp"
#include "catwalk/version.hpp"

using namespace catwalk;
using namespace catwalk::etl;

int main(int argc, char** argv) {
  CLI::App app{"catwalk-etl: stream the Catwalk catalogue CSV exports into PostgreSQL"};
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("catwalk-etl {}", kVersionText));

  LoadOptions opts;
  std::string db_flag;
  bool json = false;
  std::string progress = "auto";
  std::int64_t max_rejects = -1;

  auto add_read_options = [&](CLI::App* cmd) {
    cmd->add_option("DIR", opts.dir, "folder holding product.csv, features.csv, ...")->required();
    cmd->add_option("--jobs,-j", opts.jobs, "files read (and copied) at once")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    cmd->add_option("--rejects-dir", opts.rejects_dir, "where the rejects files go")
        ->capture_default_str();
    cmd->add_option("--max-rejects", max_rejects,
                    "stop and publish nothing when more lines than this are rejected")
        ->check(CLI::NonNegativeNumber);
    cmd->add_flag("--allow-empty", opts.allow_empty,
                  "go on when product.csv yields no product (publishes an empty catalogue)");
    cmd->add_flag("--json", json, "print one JSON document on stdout instead of the table");
    cmd->add_option("--progress", progress, "progress on stderr: auto, terminal, lines, off")
        ->check(CLI::IsMember({"auto", "terminal", "lines", "off"}))
        ->capture_default_str();
  };

  auto* load = app.add_subcommand("load", "validate, load and publish an export folder");
  load->add_option("--db", db_flag, "PostgreSQL URL (else DATABASE_URL, else libpq PG* variables)");
  load->add_flag("--allow-shrink", opts.allow_shrink,
                 "publish even when the export has fewer than half the products published now");
  load->add_option("--work-dir", opts.work_dir,
                   "folder for the document work files, about the export's size (default: "
                   "TMPDIR, else /tmp)");
  bool no_space_check = false;
  load->add_flag("--no-space-check", no_space_check,
                 "skip the check that the work folder and the database's disk have room");
  add_read_options(load);
  auto* check = app.add_subcommand("check", "validate an export folder, no database");
  add_read_options(check);
  auto* migrate = app.add_subcommand("migrate", "apply the missing schema migrations");
  migrate->add_option("--db", db_flag,
                      "PostgreSQL URL (else DATABASE_URL, else libpq PG* variables)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }

  // The first log line says which build is running, for whoever reads the logs later.
  if (migrate->parsed()) {
    log("catwalk-etl {}: migrate", kVersionText);
  } else {
    log("catwalk-etl {}: {} {}", kVersionText, load->parsed() ? "load" : "check", opts.dir);
  }

  if (migrate->parsed()) {
    try {
      pg::Connection conn(resolve_db_url(db_flag));
      auto applied = apply_missing_migrations(conn);
      for (const auto& name : applied) std::cout << "applied " << name << "\n";
      if (applied.empty()) std::cout << "schema is up to date\n";
      return kExitOk;
    } catch (const pg::DbError& e) {
      log("error: {}", e.what());
      return kExitDatabase;
    }
  }

  opts.use_database = load->parsed();
  opts.space_check = !no_space_check;
  if (opts.use_database) opts.db_url = resolve_db_url(db_flag);
  if (max_rejects >= 0) opts.max_rejects = static_cast<std::uint64_t>(max_rejects);
  opts.progress = progress == "terminal" ? LoadOptions::Progress::kTerminal
                  : progress == "lines"  ? LoadOptions::Progress::kLines
                  : progress == "off"    ? LoadOptions::Progress::kOff
                                         : LoadOptions::Progress::kAuto;

  // Ctrl-C or SIGTERM: stop cleanly (nothing published, work files removed). A second signal
  // kills at once; even then the published data is untouched.
  struct sigaction stop {};
  stop.sa_handler = [](int) { request_stop(); };
  stop.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &stop, nullptr);
  sigaction(SIGTERM, &stop, nullptr);

  RunSummary summary = run(opts);
  std::string out = json ? render_json(summary) : render_table(summary);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  if (!summary.ok) {
    log("error: {}", summary.error);
    return summary.exit_code;
  }
  return kExitOk;
}
