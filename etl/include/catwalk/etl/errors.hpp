#pragma once
#include <stdexcept>
#include <string>

namespace catwalk::etl {

// Input the loader cannot work with at all (missing file or column, unreadable file): the load
// stops before anything is written. Row-level problems are never exceptions: see RowError.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// More rejected lines than --max-rejects allows.
class TooManyRejects : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A load that would publish no products, or far fewer than are published now, without the
// user asking for it (--allow-empty, --allow-shrink): nothing is published.
class RefusedPublish : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Named exit codes of catwalk-etl (documented in the README).
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,
  kExitUsage = 2,
  kExitBadInput = 3,
  kExitDatabase = 4,
  kExitTooManyRejects = 5,
  kExitRefused = 6,        // would publish an empty or much smaller catalogue (RefusedPublish)
  kExitInterrupted = 130,  // SIGINT or SIGTERM: stopped, nothing published
};

// A stop asked for by the user (SIGINT, SIGTERM).
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace catwalk::etl
