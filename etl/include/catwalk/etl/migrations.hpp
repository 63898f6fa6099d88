#pragma once
// The schema's migrations (migrations/NNN_name.sql, compiled into the binary).
// Each file's first line says where it applies:
//   -- catwalk: global               once, to the database (cart, publish record, functions)
//   -- catwalk: catalog pre-data     to the catalog schema, before its data is copied in
//   -- catwalk: catalog post-data    to the catalog schema, after its data is copied in
// `migrate` applies what is missing (catalog files to the published schema "catwalk") and records
// each in public.catwalk_migrations. Every load replays the catalog files into a fresh schema.
#include <string>
#include <vector>

#include "catwalk/pg.hpp"

namespace catwalk::etl {

struct EmbeddedMigration {
  const char* file;
  const char* sql;
};
const std::vector<EmbeddedMigration>& embedded_migrations();

enum class MigrationScope { kGlobal, kCatalogPreData, kCatalogPostData };

struct Migration {
  int version = 0;
  std::string name;  // file name
  MigrationScope scope = MigrationScope::kGlobal;
  std::string sql;
};

// Parsed and ordered by version. Throws std::logic_error on a malformed file (a build defect).
const std::vector<Migration>& migrations();

// Applies the missing migrations; returns the names applied. Safe to run concurrently
// (serialized by an advisory lock). Throws pg::DbError.
std::vector<std::string> apply_missing_migrations(pg::Connection& conn);

// A piece of a post-data migration, marked "-- step: NAME after: A, B". A load runs the steps of
// all post-data files as a graph over its connections; `migrate` runs whole files in order.
// A post-data file without markers is one step named after the file.
struct Step {
  std::string name;
  std::vector<std::string> after;
  std::string sql;
};
// Steps of every catalog post-data migration, in file order. Throws std::logic_error when a step
// names an unknown step or one further down (a build defect, caught by the unit tests).
// `external` names steps the caller runs itself (the loader's "documents") that steps may follow.
std::vector<Step> post_data_steps(const std::vector<std::string>& external = {});

// Runs the catalog migrations of one phase in `schema` (search_path = schema, public).
void replay_catalog_phase(pg::Connection& conn, const std::string& schema, MigrationScope phase);

}  // namespace catwalk::etl
