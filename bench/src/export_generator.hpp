// Generates a catalogue export shaped like the real one (see docs/csv-exports.md), with the
// real quirks at low rates, and predicts exactly what the loader must report for it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace catwalk::bench {

struct GeneratorOptions {
  double scale = 1.0;  // 1.0 = the full export: 1,000,011 products
  std::uint64_t seed = 1;
  std::filesystem::path out_dir;
  unsigned jobs = 2;  // files are written concurrently, one per thread
};

// What was written to one file and what the loader must make of it.
struct FileReport {
  std::string file;
  std::string table;
  std::uint64_t lines = 0;  // data lines, header excluded (= the loader's "read")
  std::uint64_t bytes = 0;
  double seconds = 0;
  // Rows carrying each quirk, valid or not (a row carries at most one quirk).
  std::map<std::string, std::uint64_t> quirks;
  // Shape facts that are not per-row quirks (products without styles, ...).
  std::map<std::string, std::uint64_t> shape;
  // The loader's expected outcome: read = lines = loaded + sum(rejects).
  std::uint64_t loaded = 0;
  std::uint64_t repaired = 0;
  std::map<std::string, std::uint64_t> rejects;
  // Line numbers (header = 1) that PostgreSQL's COPY ... CSV cannot parse at all.
  std::vector<std::uint64_t> copy_unloadable_lines;

  std::uint64_t rejected() const;
};

struct ExportSummary {
  GeneratorOptions options;
  std::uint64_t products = 0;
  double seconds = 0;
  std::vector<FileReport>
      files;  // in loader order: product, features, styles, photos, skus, related, cart
};

// Writes the seven CSV files into options.out_dir (which must exist). Deterministic for
// (scale, seed) whatever options.jobs is. Throws std::runtime_error on I/O failure.
ExportSummary generate_export(const GeneratorOptions& options);

// The summary as a JSON document (expected.json), shaped like `catwalk-etl load --json`.
std::string to_json(const ExportSummary& summary);

// The summary as a human-readable table.
std::string to_table(const ExportSummary& summary);

}  // namespace catwalk::bench
