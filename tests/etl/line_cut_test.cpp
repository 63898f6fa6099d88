// The line reader's cut of over-long lines (LineSource), in the cases the fuzz target found: a
// line over the limit must reach validation over the limit, whatever byte sits at the cut.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "pg_server.hpp"
#include "record.hpp"

using namespace catwalk::etl;

TEST_CASE("LineSource: a line cut where a CR sits is still over-long") {
  // Found by tests/fuzz (regressions/cr-at-cut): the line reader drops a CR before the end of a
  // line, so a cut whose last kept byte was a CR came out at exactly kMaxLineBytes and loaded.
  std::string dir = catwalk::test::make_temp_dir("catwalk-line-cut");
  std::string path = dir + "/f.csv";
  std::string head = "1,a,b,c,5,";
  {
    std::ofstream out(path, std::ios::binary);
    out << "id,name,slogan,category,default_price,description\n";
    out << head << std::string(kMaxLineBytes - head.size(), 'x') << '\r' << std::string(100, 'y')
        << "\n";
    out << "2,after\r\n";
  }
  LineSource src(path);
  std::string_view line;
  REQUIRE(src.next(line));
  REQUIRE(src.next(line));
  CHECK(line.size() > kMaxLineBytes);  // so validation rejects it as line_too_long
  REQUIRE(src.next(line));
  CHECK(line == "2,after");
  CHECK(src.line_number() == 3);
  CHECK_FALSE(src.next(line));
  std::filesystem::remove_all(dir);
}
