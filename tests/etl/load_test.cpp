// Integration: catwalk-etl run as users run it, against a PostgreSQL the test starts itself.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "catwalk/gzip.hpp"
#include "catwalk/pg.hpp"
#include "pg_server.hpp"
#include "record.hpp"

using namespace catwalk;
using catwalk::test::run_command;
namespace fs = std::filesystem;

namespace {

std::string etl_bin() { return test::binary_path("catwalk-etl"); }
std::string samples() { return test::source_path("data-samples"); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh database on the shared server, so cases do not see each other's loads.
std::string fresh_database(const std::string& name) {
  auto& server = test::shared_server();
  pg::Connection admin(server.url());
  admin.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
  admin.exec("CREATE DATABASE " + name);
  std::string url = server.url();
  return url.replace(url.find("/catwalk?"), 9, "/" + name + "?");
}

test::CommandResult load(const std::string& url, const std::string& dir, const std::string& rejects,
                         const std::string& extra = "") {
  return run_command(etl_bin() + " load --db '" + url + "' --rejects-dir " + rejects +
                     " --progress lines --json " + extra + " " + dir);
}

// The summary's entry of one file, as a compact string to compare.
std::string file_entry(const std::string& json, const std::string& file) {
  auto at = json.find("{\"file\": \"" + file + "\"");
  if (at == std::string::npos) return "";
  return json.substr(at, json.find('}', json.find("\"rejects\"", at) + 12) - at + 1);
}

std::string rows(pg::Connection& c, const std::string& sql) {
  auto r = c.exec(sql);
  std::string out;
  for (int i = 0; i < r.rows(); ++i) {
    for (int j = 0; j < r.columns(); ++j) {
      out += j ? "|" : "";
      out += r.is_null(i, j) ? "NULL" : std::string(r.get(i, j));
    }
    out += "\n";
  }
  return out;
}

// One of product `id`'s stored documents (`column` of product_docs) as the API serves it to a
// client without gzip: inflated when the loader stored it gzipped (as it does the larger ones).
std::string document(pg::Connection& c, const std::string& column, int id) {
  auto r =
      c.exec("SELECT " + column + " FROM catwalk.product_docs WHERE id = $1", {std::to_string(id)});
  REQUIRE(r.rows() == 1);
  std::string_view hex = r.get(0, 0);  // bytea's text form: \x then two hex digits a byte
  REQUIRE(hex.starts_with("\\x"));
  std::string bytes;
  for (std::size_t i = 2; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  if (!gzip::is_gzip(bytes)) return bytes;
  std::string json;
  REQUIRE(gzip::Inflater().inflate(bytes, json));
  return json;
}

// product_docs as content: each row's id, rn and documents as JSON. Two loads of the same data
// store the same JSON, with the same trailers (what the ETag is made of), but not always the same
// gzip bytes: the encoder's learnt codes follow the documents each loader thread compressed
// before, and the threads take the partitions in whatever order they get to them.
std::string docs_content(pg::Connection& c) {
  auto r = c.exec("SELECT id, rn FROM catwalk.product_docs ORDER BY id");
  std::string out;
  for (int i = 0; i < r.rows(); ++i) {
    const int id = std::stoi(std::string(r.get(i, 0)));
    out += std::to_string(id) + "|" + std::string(r.get(i, 1));
    for (const char* column : {"detail", "styles", "related"}) {
      out += '|';
      out += document(c, column, id);
    }
    out += "\n";
  }
  return out;
}

// A copy of the samples whose skus.csv has `extra` more rows (of style 1), so a load's COPY
// runs long enough to be interrupted.
std::string samples_with_extra_skus(int extra) {
  std::string dir = test::make_temp_dir("catwalk-big");
  for (auto& e : fs::directory_iterator(samples())) fs::copy(e.path(), dir);
  std::ofstream out(dir + "/skus.csv", std::ios::app | std::ios::binary);
  std::string buf;
  for (int i = 1000; i < 1000 + extra; ++i) {
    buf += std::to_string(i) + ",1,\"M\"," + std::to_string(i % 50) + "\n";
  }
  out << buf;
  return dir;
}

// Starts `catwalk-etl load` in the background (output discarded), with TMPDIR set if given.
pid_t spawn_load(const std::string& url, const std::string& rejects, const std::string& dir,
                 const std::string& tmpdir = "") {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!tmpdir.empty()) setenv("TMPDIR", tmpdir.c_str(), 1);
    int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl(etl_bin().c_str(), "catwalk-etl", "load", "--db", url.c_str(), "--rejects-dir",
          rejects.c_str(), "--progress", "off", dir.c_str(), (char*)nullptr);
    _exit(127);
  }
  return pid;
}

// Waits (at most about 2 s) until a COPY is running on the server.
bool wait_for_copy(pg::Connection& c) {
  for (int i = 0; i < 1000; ++i) {
    auto r = c.exec(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %' AND state = 'active'");
    if (r.get(0, 0) != "0") return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

}  // namespace

TEST_CASE("the samples load with exact counts, rejects and table contents") {
  std::string url = fresh_database("samples");
  std::string rejects = test::make_temp_dir("catwalk-rejects");
  auto r = load(url, samples(), rejects);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string& j = r.out;
  CHECK(j.starts_with("{\"ok\": true, "));
  CHECK(
      file_entry(j, "product.csv")
          .starts_with(
              "{\"file\": \"product.csv\", \"table\": \"products\", \"read\": 16, \"loaded\": 12, "
              "\"rejected\": 4, \"repaired\": 0, \"rejects\": {\"column_count\": 1, \"bad_value\": "
              "1, "
              "\"duplicate_id\": 1, \"encoding\": 1}"));
  struct Expected {
    std::string file, counts;
  };
  std::vector<Expected> expected = {
      {"features.csv",
       "\"read\": 13, \"loaded\": 10, \"rejected\": 3, \"repaired\": 0, "
       "\"rejects\": {\"bad_value\": 1, \"orphan\": 2}"},
      {"styles.csv",
       "\"read\": 15, \"loaded\": 12, \"rejected\": 3, \"repaired\": 0, "
       "\"rejects\": {\"bad_value\": 2, \"orphan\": 1}"},
      {"photos.csv",
       "\"read\": 14, \"loaded\": 11, \"rejected\": 3, \"repaired\": 1, "
       "\"rejects\": {\"column_count\": 1, \"duplicate_id\": 1, \"orphan\": 1}"},
      {"skus.csv",
       "\"read\": 40, \"loaded\": 37, \"rejected\": 3, \"repaired\": 0, "
       "\"rejects\": {\"bad_value\": 2, \"orphan\": 1}"},
      {"related.csv",
       "\"read\": 19, \"loaded\": 16, \"rejected\": 3, \"repaired\": 0, "
       "\"rejects\": {\"column_count\": 1, \"orphan\": 2}"},
      {"cart.csv",
       "\"table\": \"cart\", \"read\": 6, \"loaded\": 4, \"rejected\": 2, "
       "\"repaired\": 0, \"rejects\": {\"bad_value\": 1, \"duplicate_id\": 1}"},
  };
  for (const auto& e : expected) {
    CAPTURE(e.file);
    CHECK(file_entry(j, e.file).find(e.counts) != std::string::npos);
  }

  pg::Connection c(url);
  CHECK(rows(c, "SELECT id, name, default_price, pos FROM products ORDER BY id") ==
        "1|Camo Onesie|140.00|2\n2|Bright Future Sunglasses|69.00|3\n3|Morning Joggers|40.00|4\n"
        "4|Slacker's Slacks|65.00|5\n5|Heir Force Ones|99.00|6\n6|Pumped Up Kicks|89.00|7\n"
        "7|Blues Suede Shoes|120.00|8\n8|YEasy 350|450.00|9\n9|Summer Shoes|59.00|10\n"
        "10|Infinity Stone|5000000.00|11\n11|Air Minis 250|49.00|12\n"
        "12|Comma, Quote \"Test\"|99.50|13\n");
  CHECK(rows(c, "SELECT slogan FROM products WHERE id = 12") == "Two  spaces  here\n");
  CHECK(rows(c, "SELECT id, product_id, feature, value FROM features ORDER BY pos") ==
        "1|1|Fabric|Canvas\n2|1|Buttons|Brass\n3|2|Lenses|Ultrasheen\n4|2|UV Protection|NULL\n"
        "5|2|Frames|LightCompose\n6|3|Fabric|100% Cotton\n7|3|Cut|Skinny\n"
        "8|4|Fabric|99% Cotton 1% Elastic\n9|4|Cut|Loose\n11|3|Fit|NULL\n");
  CHECK(rows(c,
             "SELECT id, product_id, sale_price, original_price, default_style FROM styles "
             "ORDER BY id") ==
        "1|1|NULL|140.00|t\n2|1|NULL|140.00|f\n3|1|100.00|140.00|f\n4|1|NULL|140.00|f\n"
        "5|1|100.00|140.00|f\n6|1|NULL|170.00|f\n7|2|NULL|69.00|f\n8|2|NULL|69.00|t\n"
        "9|3|NULL|40.00|t\n10|4|NULL|65.00|t\n11|5|NULL|99.00|t\n14|6|55.50|89.00|t\n");
  CHECK(rows(c, "SELECT string_agg(id::text, ',' ORDER BY pos) FROM photos") ==
        "1,2,3,5,4,6,7,8,9,10,12\n");
  // The repaired line: its closing quote was added, nothing else changed.
  CHECK(rows(c, "SELECT right(thumbnail_url, 20) FROM photos WHERE id = 10") ==
        "&fit=crop&w=300&q=80\n");
  CHECK(rows(c,
             "SELECT string_agg(id || ':' || size || ':' || quantity, ',' ORDER BY pos) "
             "FROM skus WHERE style_id IN (1, 2)") ==
        "1:XS:8,2:S:16,3:M:17,4:L:10,5:XL:15,6:XL:4,8:XS:8,7:S:16,9:M:17,10:L:10,11:XL:15,"
        "12:XXL:6\n");
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  CHECK(rows(c,
             "SELECT current_product_id, string_agg(related_product_id::text, ',' ORDER BY pos)"
             " FROM related GROUP BY 1 ORDER BY 1") ==
        "1|2,3,8,7\n2|3,7,6,5\n3|5,9,7,2,1\n4|4,5,5\n");
  // One row per cart.csv line, each of quantity 1.
  CHECK(
      rows(c,
           "SELECT id, user_session, product_id, active, quantity FROM public.cart ORDER BY id") ==
      "1|1234|1|t|1\n2|1234|1|t|1\n3|1234|3|f|1\n4|5678|8|t|1\n");
  // Tables answer to their plain names (search_path), with keys in place.
  CHECK(rows(c,
             "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND "
             "connamespace = 'catwalk'::regnamespace") == "6\n");
  // Validated by the database (never NOT VALID), and each checked column but
  // related_product_id leads an index of its own: what makes the check, and any lookup of a
  // parent's rows, cheap.
  CHECK(rows(c,
             "SELECT string_agg(k, ',' ORDER BY k) FROM (SELECT conrelid::regclass || '.' || "
             "a.attname || ':' || convalidated || ':' || EXISTS (SELECT 1 FROM pg_index i WHERE "
             "i.indrelid = conrelid AND i.indkey[0] = conkey[1]) AS k FROM pg_constraint JOIN "
             "pg_attribute a ON a.attrelid = conrelid AND a.attnum = conkey[1] WHERE contype = "
             "'f' AND connamespace = 'catwalk'::regnamespace) fks") ==
        "features.product_id:true:true,photos.style_id:true:true,"
        "related.current_product_id:true:true,related.related_product_id:true:false,"
        "skus.style_id:true:true,styles.product_id:true:true\n");
  CHECK(rows(c, "SELECT count(*) FROM products") == "12\n");
  CHECK(
      document(c, "detail", 1) ==
      R"({"id":1,"name":"Camo Onesie","slogan":"Blend in to your crowd","description":"The So Fatigues will wake you up and fit you in. This high energy camo will have you blending in to even the wildest surroundings.","category":"Jackets","default_price":"140","features":[{"feature":"Fabric","value":"Canvas"},{"feature":"Buttons","value":"Brass"}]})");

  // The fingerprints the loader writes are what the generated columns computed before (and what
  // catwalk-api's own fallback computes): the stored length, then for a gzip member of more than
  // 64 bytes its bytes 4-7 and last 8, else the whole document.
  auto fp_mismatches = [&](const std::string& col) {
    const std::string expr =
        "int4send(length(" + col + ")) || CASE WHEN length(" + col + ") > 64 AND substring(" + col +
        " FROM 1 FOR 2) = '\\x1f8b'::bytea THEN substring(" + col + " FROM 5 FOR 4) || substring(" +
        col + " FROM length(" + col + ") - 7) ELSE " + col + " END";
    return rows(c, "SELECT count(*) FROM catwalk.product_docs WHERE fp_" + col +
                       " IS DISTINCT FROM (" + expr + ")");
  };
  for (std::string col : {"detail", "styles", "related"}) {
    INFO(col);
    CHECK(fp_mismatches(col) == "0\n");
  }
  CHECK(rows(c, "SELECT count(*) > 0 FROM catwalk.product_docs WHERE length(fp_styles) = 16") ==
        "t\n");  // gzip members among them, not only short documents

  // The rejects files: one per input file, every rejected line with its number and reason.
  std::string pr = read_file(rejects + "/product.rejects.csv");
  CHECK(
      pr ==
      "line,column,kind,message,raw\n"
      "14,id,duplicate_id,id 3 already appeared on an earlier line; the first one is kept,"
      "\"3,\"\"Morning Joggers again\"\",\"\"dup\"\",\"\"dup\"\",\"\"Pants\"\",40\"\n"
      "15,default_price,bad_value,\"column default_price: \"\"12abc\"\" is not an amount like 140 "
      "or 99.50\",\"13,\"\"Bad Price\"\",\"\"x\"\",\"\"y\"\",\"\"z\"\",12abc\"\n"
      "16,,column_count,\"expected 6 fields as in the header, found 4\",\"14,\"\"Too Few\"\","
      "\"\"x\"\",\"\"y\"\"\"\n"
      "17,,encoding,line is not valid UTF-8 (or holds a NUL byte); re-export it as UTF-8,"
      "\"15,\"\"Bad \xFF Bytes\"\",\"\"x\"\",\"\"y\"\",\"\"z\"\",5\"\n");
  std::string ph = read_file(rejects + "/photos.rejects.csv");
  CHECK(ph.find("\n12,id,duplicate_id,") != std::string::npos);
  CHECK(ph.find("\n13,style_id,orphan,column style_id: style 13 does not exist") !=
        std::string::npos);
  CHECK(ph.find("\n15,,column_count,") != std::string::npos);
  std::string rel = read_file(rejects + "/related.rejects.csv");
  CHECK(rel.find("\n15,related_product_id,orphan,") != std::string::npos);
  CHECK(rel.find("\n19,related_product_id,orphan,") != std::string::npos);
  for (auto f : {"features", "styles", "skus", "cart"}) {
    CHECK(fs::exists(rejects + "/" + f + ".rejects.csv"));
  }
  fs::remove_all(rejects);
}

TEST_CASE("check validates without a database and reports the same counts") {
  std::string rejects = test::make_temp_dir("catwalk-check");
  auto r = run_command(etl_bin() + " check --json --progress off --rejects-dir " + rejects + " " +
                       samples());
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(file_entry(r.out, "photos.csv")
            .find("\"read\": 14, \"loaded\": 11, \"rejected\": 3, "
                  "\"repaired\": 1") != std::string::npos);
  CHECK(file_entry(r.out, "skus.csv").find("\"orphan\": 1") != std::string::npos);
  auto table =
      run_command(etl_bin() + " check --progress off --rejects-dir " + rejects + " " + samples());
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("product.csv    products") != std::string::npos);
  CHECK(table.out.find("total") != std::string::npos);
  fs::remove_all(rejects);
}

TEST_CASE("bad usage and bad input stop before anything is written, with named exit codes") {
  std::string url = fresh_database("badinput");
  std::string rejects = test::make_temp_dir("catwalk-bad");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);

  std::string dir = test::make_temp_dir("catwalk-missing");
  for (auto& e : fs::directory_iterator(samples())) fs::copy(e.path(), dir);
  fs::remove(dir + "/skus.csv");
  auto missing = load(url, dir, rejects);
  CHECK(missing.exit_code == 3);
  CHECK(missing.err.find("skus.csv is missing") != std::string::npos);
  CHECK(missing.out.starts_with("{\"ok\": false, \"error\": "));

  fs::copy(samples() + "/skus.csv", dir);
  std::ofstream(dir + "/styles.csv", std::ios::binary)
      << "id,productId,name,sale_price,original_price\n1,1,\"a\",null,5\n";
  auto column = load(url, dir, rejects);
  CHECK(column.exit_code == 3);
  CHECK(column.err.find("required column \"default_style\" is missing") != std::string::npos);

  CHECK(run_command(etl_bin() + " load --jobs 0 " + samples()).exit_code == 2);
  CHECK(run_command(etl_bin() + " frobnicate").exit_code == 2);
  CHECK(run_command(etl_bin() + " load").exit_code == 2);
  auto nodb = run_command(
      etl_bin() + " load --progress off --db 'postgresql:///nope?host=/nonexistent' " + samples());
  CHECK(nodb.exit_code == 4);
  CHECK(nodb.err.find("cannot connect to PostgreSQL") != std::string::npos);

  // The published data is the first load's, untouched.
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM styles") == "12\n");
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("--max-rejects: exceeding it publishes nothing") {
  std::string url = fresh_database("maxrejects");
  std::string rejects = test::make_temp_dir("catwalk-max");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  pg::Connection c(url);
  c.exec("UPDATE products SET name = 'marker' WHERE id = 1");
  auto r = load(url, samples(), rejects, "--max-rejects 5");
  CHECK(r.exit_code == 5);
  CHECK(r.err.find("more than 5 lines rejected") != std::string::npos);
  CHECK(rows(c, "SELECT name FROM products WHERE id = 1") == "marker\n");
  // 0 means none at all: the first rejected line stops the load.
  auto zero = load(url, samples(), rejects, "--max-rejects 0");
  CHECK(zero.exit_code == 5);
  CHECK(zero.err.find("more than 0 lines rejected") != std::string::npos);
  CHECK(rows(c, "SELECT name FROM products WHERE id = 1") == "marker\n");
  // Exactly at the limit is fine: the samples reject 21 lines.
  CHECK(load(url, samples(), rejects, "--max-rejects 21").exit_code == 0);
  CHECK(rows(c, "SELECT name FROM products WHERE id = 1") == "Camo Onesie\n");
  fs::remove_all(rejects);
}

TEST_CASE("carts written through the API survive a reload, existing cart.csv ids are left alone") {
  std::string url = fresh_database("carts");
  std::string rejects = test::make_temp_dir("catwalk-carts");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  pg::Connection c(url);
  // What POST /cart does: rows with ids from the sequence.
  c.exec(
      "INSERT INTO public.cart (user_session, product_id, active) VALUES (42, 5, true), (42, 5, "
      "true)");
  c.exec("UPDATE public.cart SET product_id = 9 WHERE id = 1");  // cart.csv id 1 differs now
  auto r = load(url, samples(), rejects);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("\"cart_rows_kept\": 4") != std::string::npos);
  CHECK(rows(c, "SELECT id, user_session, product_id FROM public.cart ORDER BY id") ==
        "1|1234|9\n2|1234|1\n3|1234|3\n4|5678|8\n5|42|5\n6|42|5\n");
  fs::remove_all(rejects);
}

TEST_CASE("a load killed with SIGKILL mid-COPY leaves the published data, the next run succeeds") {
  std::string url = fresh_database("killed");
  std::string rejects = test::make_temp_dir("catwalk-kill");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);

  std::string dir = samples_with_extra_skus(400000);
  pg::Connection c(url);
  bool seen_copy = false;
  for (int attempt = 0; attempt < 3; ++attempt) {
    pid_t pid = spawn_load(url, rejects, dir);
    seen_copy = wait_for_copy(c);  // kill it while a COPY is running
    ::kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    if (seen_copy) break;
  }
  CHECK(seen_copy);  // else the kill came before or after the COPY, and this proves nothing
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  CHECK(rows(c, "SELECT count(*) FROM products") == "12\n");
  CHECK(document(c, "styles", 1).starts_with(R"({"product_id":"1","results":[{"style_id":1,)"));
  auto rerun = load(url, dir, rejects);
  INFO(rerun.err);
  CHECK(rerun.exit_code == 0);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "400037\n");
  CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'catwalk%'") == "1\n");
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("a session still reading the published catalogue does not hold up the publish") {
  // A pg_dump or a report reading the old tables when a load publishes. The drop of the old
  // catalogue was in the swap's transaction: it waited for that session's lock, and every new
  // reader of the catalogue (the API's) queued behind the drop's locks, so nothing saw the new
  // catalogue, or any catalogue, until the old reader ended. Now the swap commits first and
  // only the loader's drop of the retired catalogue waits.
  std::string url = fresh_database("oldreader");
  std::string rejects = test::make_temp_dir("catwalk-oldreader");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  pg::Connection reader(url);
  reader.exec("BEGIN");
  reader.exec("SELECT count(*) FROM catwalk.skus");  // its lock lasts until the transaction ends
  pg::Connection c(url);
  c.exec("SET statement_timeout = '10s'");  // a read queued behind a lock fails, never hangs
  const std::string before = rows(c, "SELECT version FROM public.catwalk_publish");
  pid_t pid = spawn_load(url, rejects, samples());
  bool published = false;
  for (int i = 0; i < 600 && !published; ++i) {  // 60 s at most
    published = rows(c, "SELECT version FROM public.catwalk_publish") != before;
    if (!published) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(published);
  if (published) {
    // Readers get the new catalogue while the old reader still holds its lock, and the loader
    // is still waiting to drop the retired one.
    CHECK(rows(c, "SELECT count(*) FROM catwalk.products") == "12\n");
    CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'catwalk_retired'") == "1\n");
    CHECK(waitpid(pid, nullptr, WNOHANG) == 0);
  }
  reader.exec("COMMIT");
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'catwalk%'") == "1\n");
  fs::remove_all(rejects);
}

TEST_CASE("a load whose drop of the previous catalogue fails is published all the same") {
  // The drop comes after the swap has committed: failing there (here a lock_timeout while a
  // session still reads the old tables) must not report the published load as failed.
  std::string url = fresh_database("dropfails");
  std::string rejects = test::make_temp_dir("catwalk-dropfails");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  pg::Connection c(url);
  const std::string db = rows(c, "SELECT current_database()");
  const std::string name = db.substr(0, db.size() - 1);
  c.exec("ALTER DATABASE " + c.quote_ident(name) + " SET lock_timeout = '3s'");
  pg::Connection reader(url);
  reader.exec("BEGIN");
  reader.exec("SELECT count(*) FROM catwalk.skus");
  const std::string before = rows(c, "SELECT version FROM public.catwalk_publish");
  auto r = load(url, samples(), rejects);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("the previous catalogue (schema catwalk_retired) could not be dropped") !=
        std::string::npos);
  CHECK(rows(c, "SELECT version FROM public.catwalk_publish") != before);
  CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'catwalk_retired'") == "1\n");
  reader.exec("COMMIT");
  c.exec("ALTER DATABASE " + c.quote_ident(name) + " RESET lock_timeout");
  auto again = load(url, samples(), rejects);
  CHECK(again.exit_code == 0);
  CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'catwalk%'") == "1\n");
  fs::remove_all(rejects);
}

TEST_CASE("a catalogue left retired by a load stopped after its swap is dropped by the next load") {
  std::string url = fresh_database("retired");
  std::string rejects = test::make_temp_dir("catwalk-retired");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  pg::Connection c(url);
  // What a load killed between its swap and its drop leaves: the previous catalogue, renamed.
  c.exec("CREATE SCHEMA catwalk_retired");
  c.exec("CREATE TABLE catwalk_retired.products AS SELECT * FROM catwalk.products");
  auto r = load(url, samples(), rejects);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("\"previous catalogue dropped\"") != std::string::npos);
  CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'catwalk%'") == "1\n");
  CHECK(rows(c, "SELECT count(*) FROM catwalk.products") == "12\n");
  fs::remove_all(rejects);
}

TEST_CASE("migrate applies what is missing, once") {
  std::string url = fresh_database("migrate");
  auto first = run_command(etl_bin() + " migrate --db '" + url + "'");
  CHECK(first.exit_code == 0);
  CHECK(first.out.find("applied 001_global.sql") != std::string::npos);
  CHECK(first.out.find("applied 004_catalog_documents.sql") != std::string::npos);
  CHECK(first.out.find("applied 005_cart_quantity.sql") != std::string::npos);
  auto second = run_command(etl_bin() + " migrate --db '" + url + "'");
  CHECK(second.exit_code == 0);
  CHECK(second.out == "schema is up to date\n");
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM public.catwalk_migrations") == "5\n");
  CHECK(rows(c, "SELECT count(*) FROM catwalk.product_docs") == "0\n");
}

TEST_CASE("an over-long line is rejected with its number, the lines around it load") {
  std::string url = fresh_database("longline");
  std::string rejects = test::make_temp_dir("catwalk-long");
  std::string dir = test::make_temp_dir("catwalk-longdata");
  for (auto& e : fs::directory_iterator(samples())) fs::copy(e.path(), dir);
  {
    // Line 15 is 2 MiB long (one huge feature value), line 16 is fine again.
    std::ofstream out(dir + "/features.csv", std::ios::app | std::ios::binary);
    out << "20,5,\"Story\",\"" << std::string(2 << 20, 'x') << "\"\n";
    out << "21,5,\"Sole\",\"Rubber\"\n";
  }
  auto r = load(url, dir, rejects);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(file_entry(r.out, "features.csv")
            .find("\"read\": 15, \"loaded\": 11, \"rejected\": 4, "
                  "\"repaired\": 0, \"rejects\": {\"bad_value\": 1, "
                  "\"orphan\": 2, \"line_too_long\": 1}") != std::string::npos);
  std::string fr = read_file(rejects + "/features.rejects.csv");
  auto at = fr.find("\n15,,line_too_long,line is longer than 1048576 bytes");
  CHECK(at != std::string::npos);
  CHECK(fr.size() < 64 * 1024);  // the raw line is kept in part, not 2 MiB of it
  pg::Connection c(url);
  CHECK(rows(c, "SELECT feature, value FROM features WHERE id = 21") == "Sole|Rubber\n");
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("SIGTERM stops a load cleanly: exit 130, nothing published, no work files left") {
  std::string url = fresh_database("sigterm");
  std::string rejects = test::make_temp_dir("catwalk-term");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  std::string tmp = test::make_temp_dir("catwalk-tmpdir");
  // A dead loader's work folder (no process has this pid) is removed by the next load.
  fs::create_directories(tmp + "/catwalk-etl-docs-2147483646-abcdef/x");
  std::string dir = samples_with_extra_skus(1000000);
  pg::Connection c(url);
  pid_t pid = spawn_load(url, rejects, dir, tmp);
  bool seen_copy = wait_for_copy(c);
  CHECK(seen_copy);
  ::kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  CHECK(fs::is_empty(tmp));  // its own work folder and the dead one's are gone
  fs::remove_all(tmp);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("40 consecutive over-long photos lines are each rejected as line_too_long") {
  std::string rejects = test::make_temp_dir("catwalk-long40");
  std::string dir = test::make_temp_dir("catwalk-long40data");
  for (auto& e : fs::directory_iterator(samples())) fs::copy(e.path(), dir);
  constexpr int kLong = 42;
  {
    // Lines 16-57: about 1.2 MiB each, well-formed and with the last quote open in turn; some
    // cross the line reader's read boundaries. Line 58 is an ordinary line again.
    std::ofstream out(dir + "/photos.csv", std::ios::app | std::ios::binary);
    std::string pad(1258291, 'x');
    for (int i = 0; i < kLong; ++i) {
      out << 100 + i << ",1,\"https://x/" << pad << "\",\"https://y/" << pad << (i % 2 ? "" : "\"")
          << "\n";
    }
    out << "200,1,\"https://x/after\",\"https://y/after\"\n";
  }
  auto r =
      run_command(etl_bin() + " check --json --progress off --rejects-dir " + rejects + " " + dir);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(file_entry(r.out, "photos.csv")
            .find("\"read\": 57, \"loaded\": 12, \"rejected\": 45, \"repaired\": 1, "
                  "\"rejects\": {\"column_count\": 1, \"duplicate_id\": 1, \"orphan\": 1, "
                  "\"line_too_long\": 42}") != std::string::npos);
  std::string ph = read_file(rejects + "/photos.rejects.csv");
  for (int line = 16; line < 16 + kLong; ++line) {
    CAPTURE(line);
    CHECK(ph.find(fmt::format("\n{},,line_too_long,", line)) != std::string::npos);
  }
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

namespace {
// A copy of the samples to break one file of.
std::string samples_copy(const std::string& prefix) {
  std::string dir = test::make_temp_dir(prefix);
  for (auto& e : fs::directory_iterator(samples())) fs::copy(e.path(), dir);
  return dir;
}

// `check` with a time limit, so an input that blocks cannot hang the test.
test::CommandResult check_within(const std::string& dir, const std::string& rejects,
                                 const std::string& extra = "--json") {
  return run_command("timeout 60 " + etl_bin() + " check --progress off " + extra +
                     " --rejects-dir " + rejects + " " + dir);
}
}  // namespace

TEST_CASE("inputs that are not regular files are refused with exit 3 and say what they are") {
  std::string rejects = test::make_temp_dir("catwalk-odd");
  std::string dir = samples_copy("catwalk-odd-data");
  std::string product = dir + "/product.csv";

  fs::remove(product);
  fs::create_symlink("product.csv", product);  // a link to itself: a loop
  auto loop = check_within(dir, rejects);
  CHECK(loop.exit_code == 3);
  CHECK(loop.err.find("symbolic link loop") != std::string::npos);

  fs::remove(product);
  fs::create_directory(product);
  auto folder = check_within(dir, rejects);
  CHECK(folder.exit_code == 3);
  CHECK(folder.err.find("product.csv: is a folder, not a file") != std::string::npos);

  fs::remove(product);
  REQUIRE(::mkfifo(product.c_str(), 0600) == 0);
  auto fifo = check_within(dir, rejects);  // without the check it blocks until `timeout` (124)
  CHECK(fifo.exit_code == 3);
  CHECK(fifo.err.find("not a regular file") != std::string::npos);

  fs::remove(product);
  fs::create_symlink(samples() + "/product.csv", product);  // a link to a file is fine
  CHECK(check_within(dir, rejects).exit_code == 0);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("CR-only line ends get a short, clear message instead of the file as the header") {
  std::string rejects = test::make_temp_dir("catwalk-cr");
  std::string dir = samples_copy("catwalk-cr-data");
  std::string text = read_file(samples() + "/product.csv");
  std::replace(text.begin(), text.end(), '\n', '\r');
  std::ofstream(dir + "/product.csv", std::ios::binary) << text;
  auto r = check_within(dir, rejects);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("carriage return (CR) alone") != std::string::npos);
  CHECK(r.err.find("Camo Onesie") == std::string::npos);  // no data echoed as a "header"
  CHECK(r.err.size() < 600);
  CHECK(r.out.size() < 1500);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("binary bytes in a header keep the summary, JSON and log valid UTF-8") {
  std::string rejects = test::make_temp_dir("catwalk-bin");
  std::string dir = samples_copy("catwalk-bin-data");
  std::string text = read_file(samples() + "/product.csv");
  // The length from the array itself: the literal holds a NUL, so strlen would stop there.
  static constexpr char kHeader[] =
      "id,na\xFF\xC3me,\x01slogan,desc\xE2\x82ription,cat\0egory,default_price";
  text.replace(0, text.find('\n'), std::string(kHeader, sizeof kHeader - 1));
  std::ofstream(dir + "/product.csv", std::ios::binary) << text;
  auto json = check_within(dir, rejects);
  CHECK(json.exit_code == 3);
  CHECK(json.out.find("required column \\\"name\\\" is missing") != std::string::npos);
  CHECK(catwalk::etl::valid_utf8(json.out));
  CHECK(catwalk::etl::valid_utf8(json.err));
  auto table = check_within(dir, rejects, "");
  CHECK(table.exit_code == 3);
  CHECK(table.out.find("FAILED: ") != std::string::npos);
  CHECK(catwalk::etl::valid_utf8(table.out));
  CHECK(catwalk::etl::valid_utf8(table.err));
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

namespace {
// Rewrites a CSV file with its columns in the order `order` (indices of the original fields),
// each field quoted as it was. Lines with another field count are kept as they are.
void reorder_columns(const std::string& path, const std::vector<std::size_t>& order) {
  std::string text = read_file(path), out, line;
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3), out = "\xEF\xBB\xBF";  // BOM kept
  std::istringstream in(text);
  std::vector<catwalk::etl::Field> fields;
  std::string scratch;
  while (std::getline(in, line)) {
    bool crlf = !line.empty() && line.back() == '\r';  // kept as it was
    if (crlf) line.pop_back();
    catwalk::etl::split_fields(line, fields, scratch);
    if (fields.size() != order.size()) {
      out += line + (crlf ? "\r\n" : "\n");
      continue;
    }
    for (std::size_t i = 0; i < order.size(); ++i) {
      const auto& f = fields[order[i]];
      out += i ? "," : "";
      if (!f.quoted) {
        out += f.text;
        continue;
      }
      out += '"';
      for (char ch : f.text) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      out += '"';
    }
    out += crlf ? "\r\n" : "\n";
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << out;
}
}  // namespace

TEST_CASE("an export with its columns in another order loads each value into its column") {
  std::string plain_url = fresh_database("order_plain");
  std::string url = fresh_database("order_shuffled");
  std::string rejects = test::make_temp_dir("catwalk-order");
  std::string dir = samples_copy("catwalk-order-data");
  reorder_columns(dir + "/product.csv", {5, 4, 3, 2, 1, 0});
  reorder_columns(dir + "/styles.csv", {3, 5, 2, 1, 0, 4});
  reorder_columns(dir + "/features.csv", {3, 2, 1, 0});
  reorder_columns(dir + "/skus.csv", {3, 0, 2, 1});
  REQUIRE(read_file(dir + "/styles.csv").starts_with("sale_price,default_style,name,productId,id"));
  REQUIRE(load(plain_url, samples(), rejects).exit_code == 0);
  auto r = load(url, dir, rejects);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  pg::Connection plain(plain_url), shuffled(url);
  for (std::string sql : {"SELECT * FROM products ORDER BY id", "SELECT * FROM styles ORDER BY id",
                          "SELECT * FROM features ORDER BY id", "SELECT * FROM skus ORDER BY id"}) {
    CAPTURE(sql);
    std::string expected = rows(plain, sql);
    CHECK(expected.size() > 100);
    CHECK(rows(shuffled, sql) == expected);
  }
  const std::string docs = docs_content(plain);
  CHECK(docs.size() > 100);
  CHECK(docs_content(shuffled) == docs);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("quirks load: NULL sale price (with its photos and skus), spaced numbers, quoted null") {
  std::string url = fresh_database("quirks");
  std::string rejects = test::make_temp_dir("catwalk-quirks");
  std::string dir = samples_copy("catwalk-quirks-data");
  auto append = [&](const std::string& file, const std::string& text) {
    std::ofstream(dir + "/" + file, std::ios::app | std::ios::binary) << text;
  };
  append("styles.csv", "16,6,\"Upper\",NULL,89,0\n 17 , 6 ,\"Spaced\", 20 , 89 , 1 \n");
  append("photos.csv", "100,16,\"https://x/u\",\"https://x/t\"\n101, 17 ,\"https://x/v\",\"t\"\n");
  append("skus.csv", "100,16,\"M\",5\n101,17,\"L\", 3\n");
  append("features.csv", "13,6,\"Finish\",\"null\"\n");
  auto r = load(url, dir, rejects);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(file_entry(r.out, "styles.csv").find("\"read\": 17, \"loaded\": 14, \"rejected\": 3") !=
        std::string::npos);
  CHECK(file_entry(r.out, "photos.csv").find("\"read\": 16, \"loaded\": 13, \"rejected\": 3") !=
        std::string::npos);
  CHECK(file_entry(r.out, "skus.csv").find("\"read\": 42, \"loaded\": 39, \"rejected\": 3") !=
        std::string::npos);
  pg::Connection c(url);
  CHECK(rows(c, "SELECT id, sale_price, default_style FROM styles WHERE id > 15 ORDER BY id") ==
        "16|NULL|f\n17|20.00|t\n");
  CHECK(rows(c, "SELECT id, style_id FROM photos WHERE id >= 100 ORDER BY id") ==
        "100|16\n101|17\n");
  CHECK(rows(c, "SELECT id, quantity FROM skus WHERE id >= 100 ORDER BY id") == "100|5\n101|3\n");
  CHECK(rows(c, "SELECT value, value IS NULL FROM features WHERE id = 13") == "null|f\n");
  CHECK(document(c, "detail", 6).find(R"({"feature":"Finish","value":"null"})") !=
        std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("a header with a column named twice stops the load with exit 3, naming it") {
  std::string rejects = test::make_temp_dir("catwalk-twice");
  std::string dir = samples_copy("catwalk-twice-data");
  std::string text = read_file(samples() + "/skus.csv");
  text.replace(0, text.find('\n'), "id,styleId,size,quantity,style_id");
  std::ofstream(dir + "/skus.csv", std::ios::binary) << text;
  auto r = check_within(dir, rejects);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("column \"style_id\" appears twice in the header") != std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

namespace {
// Keeps the header and the first `keep` data lines of `file` in `dir`.
void keep_lines(const std::string& dir, const std::string& file, int keep) {
  std::istringstream in(read_file(samples() + "/" + file));
  std::string out, line;
  for (int n = 0; n <= keep && std::getline(in, line); ++n) out += line + "\n";
  std::ofstream(dir + "/" + file, std::ios::binary | std::ios::trunc) << out;
}
}  // namespace

TEST_CASE("an export that would publish no products is refused unless --allow-empty") {
  std::string url = fresh_database("empty");
  std::string rejects = test::make_temp_dir("catwalk-empty");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  pg::Connection c(url);
  c.exec("UPDATE products SET name = 'marker' WHERE id = 1");

  std::string headers = samples_copy("catwalk-headers-only");
  for (auto& e : fs::directory_iterator(samples())) keep_lines(headers, e.path().filename(), 0);
  auto r = load(url, headers, rejects);
  CHECK(r.exit_code == 6);
  CHECK(
      r.out.starts_with("{\"ok\": false, \"error\": \"product.csv holds only a header: the "
                        "catalogue would be empty; nothing was published. Pass --allow-empty"));
  CHECK(rows(c, "SELECT name FROM products WHERE id = 1") == "marker\n");
  CHECK(check_within(headers, rejects).exit_code == 6);  // check says what load would do

  // Every product line rejected: the same.
  std::string rejected = samples_copy("catwalk-all-rejected");
  std::string text = read_file(samples() + "/product.csv");
  std::ofstream(rejected + "/product.csv", std::ios::binary | std::ios::trunc)
      << text.substr(0, text.find('\n') + 1)
      << "x1,\"a\",\"b\",\"c\",\"d\",1\n0,\"a\",\"b\",\"c\",\"d\",1\n";
  auto all = load(url, rejected, rejects);
  CHECK(all.exit_code == 6);
  CHECK(all.err.find("every one of the 2 lines of product.csv was rejected") != std::string::npos);
  CHECK(rows(c, "SELECT name FROM products WHERE id = 1") == "marker\n");
  CHECK(rows(c, "SELECT count(*) FROM catwalk.product_docs") == "12\n");

  // Asked for explicitly, it publishes the empty catalogue.
  auto allowed = load(url, headers, rejects, "--allow-empty");
  INFO(allowed.err);
  CHECK(allowed.exit_code == 0);
  CHECK(rows(c, "SELECT count(*) FROM products") == "0\n");
  CHECK(check_within(headers, rejects, "--allow-empty").exit_code == 0);
  fs::remove_all(headers);
  fs::remove_all(rejected);
  fs::remove_all(rejects);
}

TEST_CASE(
    "a load keeping fewer than half the published products is refused unless --allow-shrink") {
  std::string url = fresh_database("shrink");
  std::string rejects = test::make_temp_dir("catwalk-shrink");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);  // 12 products
  pg::Connection c(url);
  std::string dir = samples_copy("catwalk-shrink-data");
  keep_lines(dir, "product.csv", 5);  // products 1-5: 5 < 12 / 2
  auto r = load(url, dir, rejects);
  CHECK(r.exit_code == 6);
  CHECK(r.err.find("this export has 5 products, fewer than half of the 12 published now") !=
        std::string::npos);
  CHECK(r.err.find("--allow-shrink") != std::string::npos);
  CHECK(rows(c, "SELECT count(*) FROM products") == "12\n");
  CHECK(check_within(dir, rejects).exit_code == 0);  // nothing published to compare with

  keep_lines(dir, "product.csv", 6);  // exactly half is fine
  auto half = load(url, dir, rejects);
  INFO(half.err);
  CHECK(half.exit_code == 0);
  CHECK(rows(c, "SELECT count(*) FROM products") == "6\n");

  keep_lines(dir, "product.csv", 2);
  auto allowed = load(url, dir, rejects, "--allow-shrink");
  CHECK(allowed.exit_code == 0);
  CHECK(rows(c, "SELECT count(*) FROM products") == "2\n");
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

namespace {
// The JSON summary without its timings, to compare two runs.
std::string without_seconds(const std::string& json) {
  return std::regex_replace(json, std::regex("\"seconds\": [0-9.]+"), "\"seconds\": _");
}

// A copy of the samples with every file gzip-compressed (X.csv replaced by X.csv.gz).
std::string gzipped_samples(const std::string& prefix) {
  std::string dir = samples_copy(prefix);
  REQUIRE(run_command("gzip " + dir + "/*.csv").exit_code == 0);
  return dir;
}

// Every rejects file of a folder, name -> content.
std::map<std::string, std::string> rejects_files(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out[e.path().filename()] = read_file(e.path());
  return out;
}
}  // namespace

TEST_CASE("a gzip-compressed export loads with the same summary, rejects and data as plain") {
  std::string url = fresh_database("gzip");
  std::string plain_rejects = test::make_temp_dir("catwalk-gz-plain");
  std::string gz_rejects = test::make_temp_dir("catwalk-gz-rejects");
  auto plain = load(url, samples(), plain_rejects);
  REQUIRE(plain.exit_code == 0);
  pg::Connection c(url);
  std::string plain_docs = docs_content(c);
  std::string dir = gzipped_samples("catwalk-gz-data");
  REQUIRE_FALSE(fs::exists(dir + "/product.csv"));
  auto gz = load(url, dir, gz_rejects);
  INFO(gz.err);
  REQUIRE(gz.exit_code == 0);
  auto summary = [](const std::string& json) {  // the files' entries: phases differ in time
    return without_seconds(json.substr(0, json.find("\"phases\"")));
  };
  CHECK(summary(gz.out) == summary(plain.out));
  CHECK(rejects_files(gz_rejects) == rejects_files(plain_rejects));
  CHECK(docs_content(c) == plain_docs);
  auto check = check_within(dir, gz_rejects);
  CHECK(check.exit_code == 0);
  CHECK(file_entry(check.out, "photos.csv")
            .find("\"read\": 14, \"loaded\": 11, \"rejected\": 3, \"repaired\": 1") !=
        std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(plain_rejects);
  fs::remove_all(gz_rejects);
}

TEST_CASE("a truncated .gz stops the load with exit 3 and a clear message, nothing published") {
  std::string url = fresh_database("gzipbad");
  std::string rejects = test::make_temp_dir("catwalk-gzbad");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  std::string dir = samples_copy("catwalk-gzbad-data");
  // Enough skus to span several gzip blocks; the cut falls inside the compressed data.
  {
    std::ofstream out(dir + "/skus.csv", std::ios::app | std::ios::binary);
    for (int i = 1000; i < 200000; ++i) out << i << ",1,\"M\"," << (i * 7919) % 1000 << "\n";
  }
  REQUIRE(run_command("gzip " + dir + "/skus.csv").exit_code == 0);
  fs::resize_file(dir + "/skus.csv.gz", fs::file_size(dir + "/skus.csv.gz") * 2 / 3);
  std::string tmp = test::make_temp_dir("catwalk-gzbad-tmp");
  auto r = run_command("TMPDIR=" + tmp + " " + etl_bin() + " load --db '" + url +
                       "' --progress off --json --rejects-dir " + rejects + " " + dir);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("skus.csv.gz: the gzip data is truncated") != std::string::npos);
  CHECK(r.err.find("nothing was published") != std::string::npos);
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  CHECK(fs::is_empty(tmp));  // no work files left
  CHECK(check_within(dir, rejects).exit_code == 3);
  fs::remove_all(tmp);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("when X.csv and X.csv.gz are both present the plain X.csv is read") {
  std::string rejects = test::make_temp_dir("catwalk-gzboth");
  std::string dir = samples_copy("catwalk-gzboth-data");
  // A .gz of a different styles.csv: if it were read, the counts would change.
  {
    std::ofstream(dir + "/other.csv", std::ios::binary)
        << "id,productId,name,sale_price,original_price,default_style\n1,1,\"a\",null,5,1\n";
  }
  REQUIRE(run_command("gzip -c " + dir + "/other.csv > " + dir + "/styles.csv.gz").exit_code == 0);
  fs::remove(dir + "/other.csv");
  auto r = check_within(dir, rejects);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(file_entry(r.out, "styles.csv").find("\"read\": 15") != std::string::npos);
  CHECK(r.err.find("both present: reading styles.csv, ignoring the .gz") != std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

namespace {
// A tmpfs of `size` mounted on a new folder for the life of the object (the test runs as root);
// mounted() is false where mounting is not allowed.
class SmallDisk {
 public:
  explicit SmallDisk(const std::string& size) : dir_(test::make_temp_dir("catwalk-smalldisk")) {
    mounted_ =
        run_command("mount -t tmpfs -o size=" + size + " catwalk-test " + dir_).exit_code == 0;
  }
  ~SmallDisk() {
    if (mounted_) run_command("umount " + dir_);
    fs::remove_all(dir_);
  }
  const std::string& dir() const { return dir_; }
  bool mounted() const { return mounted_; }

 private:
  std::string dir_;
  bool mounted_ = false;
};
}  // namespace

TEST_CASE("a work folder too small for the export stops the load before anything is written") {
  SmallDisk disk("1m");
  if (!disk.mounted()) {
    MESSAGE("mount -t tmpfs is not allowed here: the small-disk cases cannot run");
    return;
  }
  std::string url = fresh_database("workspace");
  std::string rejects = test::make_temp_dir("catwalk-workspace");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  std::string dir = samples_with_extra_skus(200000);  // about 3 MB of skus: 4+ MB of spill
  std::string fresh_rejects = rejects + "/not-yet";
  auto r = load(url, dir, fresh_rejects, "--work-dir " + disk.dir());
  CHECK(r.exit_code == 3);
  CHECK(r.err.find(disk.dir() + ": 0.00 GB free, but the document work files of this export "
                                "need about") != std::string::npos);
  CHECK(r.err.find("--work-dir") != std::string::npos);
  CHECK(fs::is_empty(disk.dir()));
  CHECK_FALSE(fs::exists(fresh_rejects));  // not even the rejects folder
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  auto missing = load(url, dir, rejects, "--work-dir " + dir + "/nope");
  CHECK(missing.exit_code == 3);
  CHECK(missing.err.find("nope: not a folder") != std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("a work folder filling up half-way: exit 3, published data untouched, no work files") {
  SmallDisk disk("1m");
  if (!disk.mounted()) {
    MESSAGE("mount -t tmpfs is not allowed here: the small-disk cases cannot run");
    return;
  }
  std::string url = fresh_database("workfull");
  std::string rejects = test::make_temp_dir("catwalk-workfull");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  std::string dir = samples_with_extra_skus(200000);
  // Past the space check on purpose: the disk fills while skus.csv is read.
  auto r = load(url, dir, rejects, "--no-space-check --work-dir " + disk.dir());
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("cannot write the document work file " + disk.dir() + "/catwalk-etl-docs-") !=
        std::string::npos);
  CHECK(r.err.find("No space left on device") != std::string::npos);
  CHECK(fs::is_empty(disk.dir()));
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  CHECK(rows(c, "SELECT count(*) FROM product_docs") == "12\n");
  // The same export loads once there is room.
  std::string roomy = test::make_temp_dir("catwalk-workroomy");
  auto ok = load(url, dir, rejects, "--work-dir " + roomy);
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "200037\n");
  CHECK(fs::is_empty(roomy));
  fs::remove_all(roomy);
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("a database disk too small for the export stops the load before anything is written") {
  std::string url = fresh_database("dbspace");
  std::string rejects = test::make_temp_dir("catwalk-dbspace");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  std::string dir = samples_copy("catwalk-dbspace-data");
  // A sparse 8 TiB cart.csv: no disk here holds three times that. Cart rows have no document,
  // so the work folder check passes and the database's is the one that stops the load.
  fs::resize_file(dir + "/cart.csv", std::uintmax_t{8} << 40);
  auto r = load(url, dir, rejects);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("the database's disk (") != std::string::npos);
  CHECK(r.err.find("but this load needs about 26388") != std::string::npos);
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM styles") == "12\n");
  CHECK(rows(c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'catwalk_next'") == "0\n");
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE("a database failure mid-COPY stays exit 4 even when cleaning up fails too") {
  std::string url = fresh_database("dbfail");
  std::string rejects = test::make_temp_dir("catwalk-dbfail");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  std::string dir = samples_with_extra_skus(1000000);
  // The skus rejects file sits on a "full disk": closing it fails, also on the failure path.
  fs::remove(rejects + "/skus.rejects.csv");
  fs::create_symlink("/dev/full", rejects + "/skus.rejects.csv");
  test::CommandResult r;
  std::thread loader([&] { r = load(url, dir, rejects); });
  pg::Connection c(url);
  int ended = 0;
  for (int i = 0; i < 6000 && ended == 0; ++i) {  // up to about 30 s
    ended = static_cast<int>(
        c.exec("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
               "query LIKE 'COPY \"skus\"%' AND state = 'active'")
            .get_int(0, 0));
    if (ended == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  loader.join();
  REQUIRE(ended == 1);  // the skus COPY was ended while it ran
  INFO(r.err);
  CHECK(r.exit_code == 4);
  CHECK(r.out.find("\"exit_code\": 4") != std::string::npos);
  CHECK(r.err.find("rejects file") == std::string::npos);
  CHECK(rows(c, "SELECT count(*) FROM skus") == "37\n");
  fs::remove_all(dir);
  fs::remove_all(rejects);
}

TEST_CASE(
    "a catwalk schema without its tables (dropped and recreated by hand) does not stop a load") {
  std::string url = fresh_database("emptyschema");
  std::string rejects = test::make_temp_dir("catwalk-emptyschema");
  REQUIRE(load(url, samples(), rejects).exit_code == 0);
  {
    pg::Connection c(url);
    // What an operator's DROP ... CASCADE + CREATE leaves.
    c.exec("DROP SCHEMA catwalk CASCADE");
    c.exec("CREATE SCHEMA catwalk");
  }
  auto r = load(url, samples(), rejects);
  CHECK(r.exit_code == 0);
  CAPTURE(r.err);
  pg::Connection c(url);
  CHECK(rows(c, "SELECT count(*) FROM catwalk.products") == "12\n");
  fs::remove_all(rejects);
}
