#include "plan.hpp"

#include <fmt/format.h>

#include <filesystem>

#include "catwalk/etl/errors.hpp"
#include "catwalk/log.hpp"
#include "record.hpp"

namespace catwalk::etl {

namespace fs = std::filesystem;

namespace {

// What an input path is, asked without opening it (opening a FIFO would block).
enum class PathKind { kMissing, kRegular, kDirectory, kOther };

PathKind path_kind(const fs::path& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) return PathKind::kMissing;
  if (ec) {
    if (ec == std::errc::too_many_symbolic_link_levels) {
      throw InputError(fmt::format(
          "{}: a symbolic link loop (the link points back at itself); point it at the file",
          path.string()));
    }
    throw InputError(fmt::format("{}: cannot read it: {}", path.string(), ec.message()));
  }
  if (st.type() == fs::file_type::directory) return PathKind::kDirectory;
  if (st.type() == fs::file_type::regular) return PathKind::kRegular;
  return PathKind::kOther;
}

}  // namespace

std::vector<std::unique_ptr<FileTask>> plan_files(const LoadOptions& o) {
  std::vector<std::unique_ptr<FileTask>> tasks;
  if (path_kind(o.dir) != PathKind::kDirectory) {
    throw InputError(
        fmt::format("{}: not a folder; pass the folder holding product.csv, ...", o.dir));
  }
  for (const auto& spec : table_specs()) {
    fs::path path = fs::path(o.dir) / spec.file;
    PathKind kind = path_kind(path);
    // A compressed export is read when the plain file is absent; the plain one wins when both
    // are there (say so: the user may expect the other one).
    fs::path gz = path.string() + ".gz";
    if (kind == PathKind::kMissing && path_kind(gz) != PathKind::kMissing) {
      path = gz;
      kind = path_kind(path);
    } else if (kind != PathKind::kMissing && path_kind(gz) != PathKind::kMissing) {
      log("{} and {} are both present: reading {}, ignoring the .gz", path.string(),
          gz.filename().string(), spec.file);
    }
    if (kind == PathKind::kDirectory) {
      throw InputError(fmt::format("{}: is a folder, not a file; expected the {} export",
                                   path.string(), spec.file));
    }
    if (kind == PathKind::kOther) {
      throw InputError(
          fmt::format("{}: not a regular file (a FIFO, socket or device); the loader reads "
                      "regular files only: save the export to a file first",
                      path.string()));
    }
    if (kind == PathKind::kMissing) {
      if (!spec.required) continue;
      throw InputError(fmt::format(
          "{}: required file {} is missing; nothing was loaded. Expected product.csv, "
          "features.csv, styles.csv, photos.csv, skus.csv, related.csv (cart.csv optional), "
          "each either plain or gzip-compressed (product.csv.gz, ...)",
          o.dir, spec.file));
    }
    auto t = std::make_unique<FileTask>();
    t->spec = &spec;
    t->path = path.string();
    t->header = map_header(spec, read_header_line(t->path), t->path);
    t->size = fs::file_size(path);
    t->stats.file = spec.file;
    t->stats.table = spec.shown_table;
    tasks.push_back(std::move(t));
  }
  for (auto& t : tasks) {
    for (const auto& parent : t->spec->parents()) {
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (tasks[i]->spec->table == parent) t->parent_tasks.push_back(i);
      }
    }
  }
  return tasks;
}

void make_rejects_folder(const LoadOptions& o) {
  std::error_code ec;
  fs::create_directories(o.rejects_dir, ec);
  if (!fs::is_directory(o.rejects_dir)) {
    throw InputError(
        fmt::format("cannot create the rejects folder {}: {}", o.rejects_dir, ec.message()));
  }
}

}  // namespace catwalk::etl
