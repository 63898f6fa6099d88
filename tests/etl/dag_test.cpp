#include "dag.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "catwalk/etl/migrations.hpp"
#include "table_spec.hpp"

using namespace catwalk::etl;

TEST_CASE("run_dag: every task runs once, after its dependencies, on every worker count") {
  // 0 <- 1, 0 <- 2, {1,2} <- 3, 4 alone
  std::vector<DagTask> tasks = {{{}, 0}, {{0}, 0}, {{0}, 0}, {{1, 2}, 0}, {{}, 0}};
  for (int workers : {1, 2, 4}) {
    std::mutex m;
    std::vector<std::size_t> order;
    std::atomic<bool> cancelled{false};
    run_dag(
        tasks, workers,
        [&](std::size_t i, int w) {
          CHECK(w < workers);
          std::lock_guard lock(m);
          order.push_back(i);
        },
        cancelled);
    REQUIRE(order.size() == 5);
    auto at = [&](std::size_t t) {
      return std::find(order.begin(), order.end(), t) - order.begin();
    };
    CHECK(at(0) < at(1));
    CHECK(at(0) < at(2));
    CHECK(at(1) < at(3));
    CHECK(at(2) < at(3));
  }
}

TEST_CASE("run_dag: ready tasks start by priority") {
  std::vector<DagTask> tasks = {{{}, 1}, {{}, 5}, {{}, 3}};
  std::vector<std::size_t> order;
  std::atomic<bool> cancelled{false};
  run_dag(
      tasks, 1, [&](std::size_t i, int) { order.push_back(i); }, cancelled);
  CHECK(order == std::vector<std::size_t>{1, 2, 0});
}

TEST_CASE("run_dag: a failure stops what has not started and is rethrown") {
  std::vector<DagTask> tasks = {{{}, 2}, {{0}, 1}, {{}, 0}};
  std::vector<std::size_t> ran;
  std::atomic<bool> cancelled{false};
  CHECK_THROWS_WITH_AS(run_dag(
                           tasks, 1,
                           [&](std::size_t i, int) {
                             ran.push_back(i);
                             if (i == 0) throw std::runtime_error("boom");
                           },
                           cancelled),
                       "boom", std::runtime_error);
  CHECK(ran == std::vector<std::size_t>{0});
  CHECK(cancelled);
}

TEST_CASE("post-data steps: parsed from the migrations with their dependencies") {
  // "documents" is the loader's own step, and steps may wait for a table's file.
  CHECK_THROWS_AS(post_data_steps(), std::logic_error);
  std::vector<std::string> external = {"documents"};
  for (const auto& spec : table_specs()) external.push_back(spec.table);
  auto steps = post_data_steps(external);
  auto find = [&](const std::string& name) -> const Step* {
    for (auto& s : steps) {
      if (s.name == name) return &s;
    }
    return nullptr;
  };
  REQUIRE(find("products_keys") != nullptr);
  for (auto child : {"styles", "features", "photos", "skus", "related"}) {
    REQUIRE(find(std::string(child) + "_fkeys") != nullptr);
    CHECK(find(std::string(child) + "_fkeys")->after.size() == 2);
  }
  REQUIRE(find("product_docs_keys") != nullptr);
  CHECK(find("photos_fkeys")->after == std::vector<std::string>{"styles_keys", "photos_keys"});
  // The documents' two indexes are built at once, then the key is attached.
  REQUIRE(find("product_docs_id_index") != nullptr);
  REQUIRE(find("product_docs_rn_index") != nullptr);
  CHECK(find("product_docs_id_index")->after == std::vector<std::string>{"documents"});
  CHECK(find("product_docs_rn_index")->after == std::vector<std::string>{"documents"});
  CHECK(find("product_docs_keys")->after ==
        std::vector<std::string>{"product_docs_id_index", "product_docs_rn_index"});
  CHECK(find("skus_keys")->after == std::vector<std::string>{"skus"});
  CHECK(find("product_docs_keys")->sql.find("product_docs_pkey") != std::string::npos);
  CHECK(find("products_keys")->sql.find("-- step:") == std::string::npos);
  // Every migration file is accounted for and in order.
  int last = 0;
  for (const auto& m : migrations()) {
    CHECK(m.version > last);
    last = m.version;
  }
}

TEST_CASE(
    "run_dag: a group never runs more tasks at once than its limit, and other tasks run beside "
    "it") {
  // Six tasks of group 0 (limit 2) and four without a group, on five workers.
  std::vector<DagTask> tasks;
  for (int i = 0; i < 6; ++i) tasks.push_back({{}, 1, 0});
  for (int i = 0; i < 4; ++i) tasks.push_back({{}, 0, -1});
  std::mutex m;
  int in_group = 0, max_in_group = 0, running = 0, max_running = 0;
  std::atomic<bool> cancelled{false};
  run_dag(tasks, 5,
          [&](std::size_t i, int) {
            {
              std::lock_guard lock(m);
              if (tasks[i].group == 0) max_in_group = std::max(max_in_group, ++in_group);
              max_running = std::max(max_running, ++running);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            std::lock_guard lock(m);
            if (tasks[i].group == 0) --in_group;
            --running;
          },
          cancelled, {2});
  CHECK(max_in_group == 2);
  CHECK(max_running > 2);  // the ungrouped tasks ran beside the group's two
  CHECK_THROWS_AS(run_dag(tasks, 2, [](std::size_t, int) {}, cancelled, {}), std::logic_error);
}

namespace {
// The graph of a full-scale export (the file sizes of bench/generate --scale 1.0).
std::vector<GraphFile> full_scale_files() {
  const std::map<std::string, double> bytes = {
      {"products", 223.7e6}, {"features", 83.0e6}, {"styles", 80.0e6},    {"photos", 1445.0e6},
      {"skus", 265.4e6},     {"related", 96.9e6},  {"cart_import", 0.4e6}};
  std::vector<GraphFile> files;
  for (const auto& spec : table_specs()) files.push_back({spec.table, {}, bytes.at(spec.table)});
  for (std::size_t i = 0; i < files.size(); ++i) {
    for (const auto& parent : table_specs()[i].parents()) {
      for (std::size_t p = 0; p < files.size(); ++p) {
        if (files[p].table == parent) files[i].parents.push_back(p);
      }
    }
  }
  return files;
}

// Every task `task` waits for, directly or not.
std::set<std::size_t> waits_for(const std::vector<DagTask>& dag, std::size_t task) {
  std::set<std::size_t> seen;
  std::vector<std::size_t> todo = dag[task].after;
  while (!todo.empty()) {
    std::size_t t = todo.back();
    todo.pop_back();
    if (!seen.insert(t).second) continue;
    todo.insert(todo.end(), dag[t].after.begin(), dag[t].after.end());
  }
  return seen;
}
}  // namespace

TEST_CASE(
    "run graph: foreign keys wait for their own tables only, styles.csv before larger files") {
  auto files = full_scale_files();
  std::vector<std::string> external = {"documents"};
  for (const auto& spec : table_specs()) external.push_back(spec.table);
  auto steps = post_data_steps(external);
  auto dag = build_run_graph(files, true, steps, 0);
  REQUIRE(dag.size() == files.size() + 1 + steps.size());
  auto file = [&](const std::string& table) {
    for (std::size_t i = 0; i < files.size(); ++i) {
      if (files[i].table == table) return i;
    }
    FAIL("no file for " << table);
    return std::size_t{0};
  };
  auto step = [&](const std::string& name) {
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (steps[i].name == name) return files.size() + 1 + i;
    }
    FAIL("no step " << name);
    return std::size_t{0};
  };
  // photos' foreign key starts once photos and styles (and so products) have their keys, not
  // after every file: it used to wait for all of them, photos.csv last, 10-15 s at full scale.
  auto fk = waits_for(dag, step("photos_fkeys"));
  CHECK(fk.count(step("photos_keys")) == 1);
  CHECK(fk.count(step("styles_keys")) == 1);
  CHECK(fk.count(file("products")) == 1);
  CHECK(fk.count(file("related")) == 0);
  CHECK(fk.count(file("skus")) == 0);
  CHECK(fk.count(file("features")) == 0);
  CHECK(fk.count(files.size()) == 0);  // nor the documents
  CHECK(waits_for(dag, step("related_fkeys")).count(file("photos")) == 0);
  // Files in the file group; styles.csv (gating photos.csv) before the larger features.csv.
  CHECK(dag[file("styles")].group == 0);
  CHECK(dag[file("styles")].priority > dag[file("features")].priority);
  CHECK(dag[file("styles")].priority > dag[file("related")].priority);
  CHECK(dag[file("products")].priority > dag[file("styles")].priority);
  CHECK(dag[step("photos_keys")].group == -1);
  // A step naming nothing it follows waits for every file.
  std::vector<Step> bare = {{"anything", {}, "SELECT 1"}};
  auto small = build_run_graph(files, true, bare, 0);
  CHECK(waits_for(small, files.size() + 1).size() == files.size());
}
