#pragma once
// A whole run of `load` or `check`: read and validate every file, write the rejects, and (load)
// COPY into a fresh schema, build keys, indexes and the API's documents, then publish it in one
// transaction. Until that commit the previously published data stays exactly as it was.
#include <cstdint>
#include <optional>
#include <string>

#include "catwalk/etl/summary.hpp"

namespace catwalk::etl {

struct LoadOptions {
  std::string dir;           // folder holding the export files
  bool use_database = true;  // false: `check`, validation only
  std::string db_url;        // libpq conninfo/URI; "" = libpq defaults
  int jobs = 3;              // files read and copied at once (one connection each)
  std::string rejects_dir = "rejects";
  std::optional<std::uint64_t> max_rejects;  // more rejected lines than this: stop, publish nothing
  // Safety against a broken export replacing a good catalogue: a run whose product.csv yields
  // no product stops (load and check) unless allow_empty; a load that keeps fewer than
  // kMinKeptShare of the products published now stops unless allow_shrink.
  bool allow_empty = false;
  bool allow_shrink = false;
  enum class Progress { kAuto, kTerminal, kLines, kOff } progress = Progress::kAuto;
  // Where the document spill goes (a folder catwalk-etl-docs-<pid>-* inside it); "" = TMPDIR,
  // else /tmp.
  std::string work_dir;
  // Before writing anything, a load checks that the work folder and (when it can tell) the
  // database's disk have room for it, and stops with InputError (exit 3) if not.
  bool space_check = true;
};

// Never throws: failures are reported in the summary (ok = false, error, exit_code).
RunSummary run(const LoadOptions& options);

// Asks a running run() to stop as soon as it can (safe to call from a signal handler): nothing
// is published, work files are removed, and run() reports kExitInterrupted.
void request_stop();

// Estimates behind the space check and the spill's partition count, per byte of CSV text
// (decompressed): the document spill (measured 0.70 on bench/generate exports, whose photo
// urls repeat their thumbnail_url but for a size; 0.96 where they share nothing, 1.35 before the
// records left out the constant JSON; see bench/README.md) and the new catalogue in the
// database (tables, keys, indexes, documents: measured 2.75), each with a margin.
inline constexpr double kSpillPerTextByte = 1.5;
inline constexpr double kDatabasePerTextByte = 3.0;

// A load must keep at least this share of the currently published products (--allow-shrink).
inline constexpr double kMinKeptShare = 0.5;

// The schema a load is built in, and the published one.
inline constexpr const char* kStagingSchema = "catwalk_next";
inline constexpr const char* kPublishedSchema = "catwalk";

}  // namespace catwalk::etl
