#pragma once
// Snapshots of the document cache on disk, so that a restart maps the catalogue it had instead
// of reading 850 MB from PostgreSQL again.
//
// A snapshot is one file per catalogue database in the cache folder (--cache-dir), written after
// a warm-up completes: a 4 KiB header, the arena (the documents back to back, in key order, none
// crossing a window of DocCache::kChunkBytes: so windows are chunks as they are), then the slot
// pages (the index). Positions are offsets within windows, so the file means the same wherever
// it is mapped. The header holds a format version, the catalogue it belongs to (database,
// publish version, published_at) and CRC-32s of itself and of the index. The arena is not
// checksummed (that would read every byte at start, what the snapshot is there to avoid): the
// index is, every slot is bounds-checked against the arena, and gzip members carry their own
// CRC (checked whenever one is inflated for an identity client).
//
// Loading maps the arena read-only (MAP_PRIVATE, PROT_READ): clean file pages, shared by every
// instance that maps the same file and reclaimable under memory pressure, where anonymous memory
// would make the OOM killer pick the process. A missing file is no snapshot; a damaged,
// truncated, foreign-owned, other-writable, wrong-version or over-budget one is ignored with a
// log line, never a failed start.
//
// Writing goes to a temporary file of this process's own (O_EXCL) in the same folder, fsync,
// then rename() over the snapshot: a reader (this instance after a restart, or another
// instance sharing the folder) sees the old file or the new one, never a mix, and two instances
// writing at once each write their own temporary file; the last rename wins, and either file is
// whole. A failed write (a full disk) is logged, its temporary file removed, and serving goes on.
//
// Thread-safety: load() and save() from one thread at a time (the refresher's warmer).
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "doc_cache.hpp"

namespace catwalk::api {

// $XDG_CACHE_HOME/catwalk-api, else $HOME/.cache/catwalk-api; "" when neither is set.
std::string default_cache_dir();

class SnapshotStore {
 public:
  // `dir`: the cache folder, created (mode 0700, parents too) when missing; "" turns snapshots
  // off. A folder that cannot be used (not a folder, owned by another user, cannot be created)
  // is logged once and snapshots are off. `catalogue_url`: the database the catalogue is read
  // from; the file is named after a hash of it (never the URL itself: it may hold a password).
  SnapshotStore(std::string dir, const std::string& catalogue_url);

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  // Maps the snapshot and installs it in `cache` as its current generation (not usable: the
  // caller checks its catalogue first). Returns that catalogue, or nullopt: no snapshot, or one
  // that cannot be used (logged, with why).
  std::optional<CatalogueId> load(DocCache& cache);

  // Maps the page tables of the last loaded snapshot's documents (MADV_POPULATE_READ: reads
  // them into the page cache first if need be), so that requests never take a page fault on
  // them. Blocks for as long as that takes: the warmer calls it once the snapshot serves. Does
  // nothing when that snapshot is no longer used, or on kernels before 5.14.
  void prefault();

  // Writes `generation` (labelled with its catalogue). `go_on(false)` is asked every 64 MiB
  // written and `go_on(true)` before the rename; false abandons the file (the process stops, a
  // newer publish came in). True when the snapshot was replaced. Failures are logged and leave
  // no temporary file.
  bool save(const DocCache::Reader& generation,
            const std::function<bool(bool before_rename)>& go_on);

  // Tests: every write fails with ENOSPC once this many bytes were written (a full disk).
  void fail_writes_after(std::size_t bytes) { write_limit_ = bytes; }

 private:
  std::string dir_;
  std::string path_;                 // "" = off
  std::weak_ptr<const void> arena_;  // the last loaded snapshot's documents, while mapped
  std::size_t arena_bytes_ = 0;
  std::size_t write_limit_ = SIZE_MAX;
};

}  // namespace catwalk::api
