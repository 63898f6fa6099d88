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
  pg::Transaction tx(conn);  // all or nothing
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
  tx.commit();
  return applied;
}

namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == ',')) s.pop_back();
  while (!s.empty() && s.front() == ' ') s.erase(0, 1);
  return s;
}
}  // namespace

std::vector<Step> post_data_steps(const std::vector<std::string>& external) {
  std::vector<Step> steps;
  auto known = [&](const std::string& name) {
    if (std::find(external.begin(), external.end(), name) != external.end()) return true;
    for (const auto& st : steps) {
      if (st.name == name) return true;
    }
    return false;
  };
  for (const auto& m : migrations()) {
    if (m.scope != MigrationScope::kCatalogPostData) continue;
    std::size_t first_step = steps.size();
    std::size_t pos = 0;
    std::string preamble;
    while (pos < m.sql.size()) {
      std::size_t eol = m.sql.find('\n', pos);
      if (eol == std::string::npos) eol = m.sql.size();
      std::string line = m.sql.substr(pos, eol - pos);
      pos = eol + 1;
      if (line.starts_with("-- step:")) {
        Step st;
        std::string spec = line.substr(8);
        std::size_t a = spec.find(" after:");
        st.name = trim(spec.substr(0, a));
        if (a != std::string::npos) {
          std::string deps = spec.substr(a + 7);
          std::size_t p = 0;
          while (p <= deps.size()) {
            std::size_t c = deps.find(',', p);
            if (c == std::string::npos) c = deps.size();
            std::string d = trim(deps.substr(p, c - p));
            if (!d.empty()) {
              if (!known(d)) {
                throw std::logic_error(m.name + ": step " + st.name + " comes after unknown step " +
                                       d);
              }
              st.after.push_back(d);
            }
            p = c + 1;
          }
        }
        if (st.name.empty() || known(st.name)) throw std::logic_error(m.name + ": bad step name");
        steps.push_back(std::move(st));
      } else if (steps.size() > first_step) {
        steps.back().sql += line + "\n";
      } else if (!line.starts_with("--")) {
        preamble += line + "\n";
      }
    }
    if (steps.size() == first_step)
      steps.push_back({m.name, {}, m.sql});
    else if (preamble.find_first_not_of(" \n\r\t") != std::string::npos) {
      throw std::logic_error(m.name + ": SQL before the first step marker");
    }
  }
  return steps;
}

void replay_catalog_phase(pg::Connection& conn, const std::string& schema, MigrationScope phase) {
  conn.exec(fmt::format("SET search_path = {}, public", conn.quote_ident(schema)));
  for (const auto& m : migrations()) {
    if (m.scope == phase) conn.exec(m.sql);
  }
  conn.exec("RESET search_path");
}

}  // namespace catwalk::etl
