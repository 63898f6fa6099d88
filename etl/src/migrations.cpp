#include "catwalk/etl/migrations.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace catwalk::etl {

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> all = [] {
    std::vector<Migration> out;
    for (const auto& e : embedded_migrations()) {
      Migration m;
      m.name = e.file;
      m.sql = e.sql;
      m.version = std::stoi(m.name.substr(0, m.name.find('_')));
      std::string first = m.sql.substr(0, m.sql.find('\n'));
      if (first.find("catalog pre-data") != std::string::npos) {
        m.scope = MigrationScope::kCatalogPreData;
      } else if (first.find("catalog post-data") != std::string::npos) {
        m.scope = MigrationScope::kCatalogPostData;
      } else if (first.find("global") != std::string::npos) {
        m.scope = MigrationScope::kGlobal;
      } else {
        throw std::logic_error("migration " + m.name + " lacks a '-- catwalk: <scope>' first line");
      }
      out.push_back(std::move(m));
    }
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.version < b.version; });
    return out;
  }();
  return all;
}

std::vector<std::string> apply_missing_migrations(pg::Connection& conn) {
  std::vector<std::string> applied;
  conn.exec("BEGIN");
  try {
    // Transaction-scoped: two migrators never interleave; released at COMMIT or ROLLBACK.
    conn.exec("SELECT pg_advisory_xact_lock(hashtext('catwalk-migrate'))");
    conn.exec(
        "CREATE TABLE IF NOT EXISTS public.catwalk_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())");
    auto done = conn.exec("SELECT version FROM public.catwalk_migrations");
    std::vector<long long> have;
    for (int i = 0; i < done.rows(); ++i) have.push_back(done.get_int(i, 0));
    for (const auto& m : migrations()) {
      if (std::find(have.begin(), have.end(), m.version) != have.end()) continue;
      conn.exec(m.scope == MigrationScope::kGlobal ? "SET LOCAL search_path = public"
                                                   : "SET LOCAL search_path = catwalk, public");
      conn.exec(m.sql);
      conn.exec("INSERT INTO public.catwalk_migrations (version, name) VALUES ($1, $2)",
                {std::to_string(m.version), m.name});
      applied.push_back(m.name);
    }
    conn.exec("COMMIT");
  } catch (...) {
    if (conn.ok()) conn.exec("ROLLBACK");
    throw;
  }
  return applied;
}

void replay_catalog_phase(pg::Connection& conn, const std::string& schema, MigrationScope phase) {
  conn.exec(fmt::format("SET search_path = {}, public", conn.quote_ident(schema)));
  for (const auto& m : migrations()) {
    if (m.scope == phase) conn.exec(m.sql);
  }
  conn.exec("RESET search_path");
}

}  // namespace catwalk::etl
