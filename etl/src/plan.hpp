#pragma once
// The first phase of a run: find every export file, check what it is and its header, and
// order the files by their parents, before anything is read or written.
#include <memory>
#include <vector>

#include "catwalk/etl/loader.hpp"
#include "file_task.hpp"

namespace catwalk::etl {

// One task per export file present (X.csv, else X.csv.gz), with its header mapped and its
// parent tasks. Throws InputError naming the file (or folder) and what is wrong with it.
std::vector<std::unique_ptr<FileTask>> plan_files(const LoadOptions& options);

// Makes the rejects folder (the run's first write, after every check). Throws InputError.
void make_rejects_folder(const LoadOptions& options);

}  // namespace catwalk::etl
