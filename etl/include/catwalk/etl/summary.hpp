#pragma once
// What a run did, per file: the summary table on stdout, or one JSON document with --json.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "catwalk/etl/reject_kind.hpp"

namespace catwalk::etl {

struct FileStats {
  std::string file;
  std::string table;
  std::uint64_t read = 0;  // data lines (not the header); read == loaded + rejected
  std::uint64_t loaded = 0;
  std::uint64_t rejected = 0;
  std::uint64_t repaired = 0;
  std::array<std::uint64_t, kRejectKindCount> rejects{};
  std::uint64_t bytes = 0;
  double seconds = 0;
};

struct Phase {
  std::string name;
  double seconds = 0;
};

struct RunSummary {
  bool ok = true;
  std::string error;  // when !ok
  int exit_code = 0;
  double seconds = 0;
  std::vector<FileStats> files;
  std::vector<Phase> phases;                    // keys and indexes, documents, publish (load only)
  std::optional<std::uint64_t> cart_rows_kept;  // cart.csv ids already present, left alone
};

std::string render_table(const RunSummary& s);
std::string render_json(const RunSummary& s);

}  // namespace catwalk::etl
