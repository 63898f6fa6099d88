#include "catwalk/etl/summary.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "pg_server.hpp"
#include "rejects.hpp"

using namespace catwalk::etl;

TEST_CASE("rejects file: header, one row per rejected line, raw line quoted") {
  std::string dir = catwalk::test::make_temp_dir("catwalk-rejects");
  std::string path = dir + "/product.rejects.csv";
  RejectsWriter w(path);
  w.write({15, "default_price", RejectKind::kBadValue,
           "column default_price: \"12abc\" is not an amount"},
          R"(13,"Bad Price","x","y","z",12abc)");
  w.write({16, "", RejectKind::kColumnCount, "expected 6 fields as in the header, found 4"},
          R"(14,"Too Few","x","y")");
  w.close();
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  CHECK(ss.str() ==
        "line,column,kind,message,raw\n"
        "15,default_price,bad_value,\"column default_price: \"\"12abc\"\" is not an amount\","
        "\"13,\"\"Bad Price\"\",\"\"x\"\",\"\"y\"\",\"\"z\"\",12abc\"\n"
        "16,,column_count,\"expected 6 fields as in the header, found 4\","
        "\"14,\"\"Too Few\"\",\"\"x\"\",\"\"y\"\"\"\n");
  std::filesystem::remove_all(dir);
}

TEST_CASE("summary: table has a row per file and a total, JSON has the documented keys") {
  RunSummary s;
  s.seconds = 1.5;
  FileStats f;
  f.file = "product.csv";
  f.table = "products";
  f.read = 8;
  f.loaded = 4;
  f.rejected = 4;
  f.rejects[static_cast<int>(RejectKind::kDuplicateId)] = 1;
  f.rejects[static_cast<int>(RejectKind::kBadValue)] = 2;
  f.rejects[static_cast<int>(RejectKind::kColumnCount)] = 1;
  f.bytes = 634;
  f.seconds = 0.01;
  s.files.push_back(f);
  std::string table = render_table(s);
  CHECK(table.find("product.csv") != std::string::npos);
  CHECK(table.find("total") != std::string::npos);
  CHECK(table.find("1 column_count, 2 bad_value, 1 duplicate_id") != std::string::npos);
  CHECK(render_json(s) ==
        "{\"ok\": true, \"seconds\": 1.500, \"files\": [{\"file\": \"product.csv\", \"table\": "
        "\"products\", \"read\": 8, \"loaded\": 4, \"rejected\": 4, \"repaired\": 0, \"rejects\": "
        "{\"column_count\": 1, \"bad_value\": 2, \"duplicate_id\": 1}, \"bytes\": 634, "
        "\"seconds\": 0.010}]}\n");
  s.ok = false;
  s.error = "boom \"quoted\"";
  s.exit_code = 4;
  CHECK(render_json(s).starts_with(
      "{\"ok\": false, \"error\": \"boom \\\"quoted\\\"\", \"exit_code\": 4, "));
}

TEST_CASE("summary: the total row sums every file, and each file's rejects are listed by kind") {
  RunSummary s;
  s.seconds = 2;
  auto file = [](std::string name, std::uint64_t loaded, std::uint64_t rejected, RejectKind kind) {
    FileStats f;
    f.file = std::move(name);
    f.table = "t";
    f.read = loaded + rejected;
    f.loaded = loaded;
    f.rejected = rejected;
    f.repaired = rejected / 2;
    f.rejects[static_cast<int>(kind)] = rejected;
    f.bytes = 1'000'000;
    return f;
  };
  s.files = {file("product.csv", 10, 3, RejectKind::kBadValue),
             file("photos.csv", 20, 4, RejectKind::kOrphan),
             file("skus.csv", 30, 0, RejectKind::kOrphan)};
  std::string table = render_table(s);
  CAPTURE(table);
  // file, table, read, loaded, rejected, repaired, MB, seconds, rows/s
  CHECK(table.find("\ntotal                                67          60         7         3      "
                   "  3.0     2.00          34\n") != std::string::npos);
  CHECK(table.find("\nrejected in product.csv: 3 bad_value\n") != std::string::npos);
  CHECK(table.find("\nrejected in photos.csv: 4 orphan\n") != std::string::npos);
  CHECK(table.find("rejected in skus.csv") == std::string::npos);  // nothing rejected there
}
