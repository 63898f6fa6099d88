#pragma once
// Configuration shared by both binaries: where the database is.
#include <string>

namespace catwalk {

// The libpq connection string to use: the --db flag when given, else DATABASE_URL,
// else "" (libpq then reads PGHOST, PGPORT, PGDATABASE, PGUSER, ... itself).
std::string resolve_db_url(const std::string& flag_value);

// A connection string with any password replaced by "***", safe to print.
std::string redact_db_url(const std::string& url);

}  // namespace catwalk
