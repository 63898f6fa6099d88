#include "documents.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>
#include <type_traits>

#include "catwalk/etl/errors.hpp"
#include "copy_binary.hpp"
#include "copy_decode.hpp"
#include "pg_server.hpp"

using namespace catwalk::etl;

TEST_CASE("append_json_string escapes as JSON and keeps UTF-8") {
  struct Case {
    std::string in, out;
  };
  std::vector<Case> cases = {
      {"plain", "\"plain\""},
      {"a \"q\" \\ b", "\"a \\\"q\\\" \\\\ b\""},
      {"tab\there\nnl\r\x01", "\"tab\\there\\nnl\\r\\u0001\""},
      {"caf\xC3\xA9 / ok", "\"caf\xC3\xA9 / ok\""},
      {"", "\"\""},
  };
  for (auto& c : cases) {
    std::string out;
    catwalk::append_json_string(out, c.in);
    CHECK(out == c.out);
  }
}

TEST_CASE("append_money_json: whole amounts bare, others with two decimals, NULL as null") {
  struct Case {
    std::optional<std::string_view> in;
    std::string out;
  };
  std::vector<Case> cases = {
      {"140", "\"140\""},     {"140.00", "\"140\""},  {"99.5", "\"99.50\""},
      {"99.50", "\"99.50\""}, {"0140", "\"140\""},    {"0.5", "\"0.50\""},
      {"100.0", "\"100\""},   {std::nullopt, "null"}, {"5000000", "\"5000000\""}};
  for (auto& c : cases) {
    std::string out;
    append_money_json(out, c.in);
    CHECK(out == c.out);
  }
}

TEST_CASE("StrideDivider: n / d for every 32-bit n, by a multiplication") {
  std::uint64_t seed = 3;
  auto next = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::uint32_t>(seed >> 32);
  };
  std::vector<std::uint32_t> divisors = {1,   2,    3,     7,          64,          118,
                                         127, 1000, 65537, 0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu};
  for (int i = 0; i < 50; ++i) divisors.push_back(next() % 5000 + 1);
  for (std::uint32_t d : divisors) {
    CAPTURE(d);
    const StrideDivider div(d);
    std::vector<std::uint32_t> ns = {0,         1,           d - 1,       d,          d + 1,
                                     2 * d - 1, 0xFFFFFFFFu, 0xFFFFFFFEu, 0x80000000u};
    for (int k = 0; k < 2000; ++k) ns.push_back(next());
    for (std::uint32_t n : ns) {
      if (div(n) != n / d) {
        CAPTURE(n);
        FAIL_CHECK("wrong quotient");
      }
    }
  }
  CHECK(StrideDivider(0)(17) == 17);  // 0 is taken as 1, as the assembly's stride is
}

TEST_CASE("IdSet rank: 1-based position among members") {
  IdSet s;
  for (int id : {10, 3, 7, 1000, 64, 63}) s.insert(id);
  s.insert(5'000'000'000LL);
  s.finalize();
  CHECK(s.rank(3) == 1);
  CHECK(s.rank(7) == 2);
  CHECK(s.rank(10) == 3);
  CHECK(s.rank(63) == 4);
  CHECK(s.rank(64) == 5);
  CHECK(s.rank(1000) == 6);
  CHECK(s.rank(5'000'000'000LL) == 7);
}

namespace {
// Feeds one line through a validator of `table` and the store's writer for it.
struct Feeder {
  const TableSpec& spec;
  IdSet& own;
  RowValidator v;
  std::unique_ptr<DocumentStore::Writer> w;
  Feeder(DocumentStore& store, std::string_view table, std::string_view header, IdSet& own_ids,
         std::vector<const IdSet*> parents)
      : spec(*find_spec_by_table(table)),
        own(own_ids),
        v(spec, map_header(spec, header, "t.csv"), std::move(parents), own_ids),
        w(store.writer(spec)) {}
  void add(std::string_view line, std::uint32_t pos) {
    std::string copy;
    bool repaired;
    RowError e;
    REQUIRE(v.validate(pos, line, copy, repaired, e));
    w->add_row(v);
  }
};

// One file's rows fed to `store` (line numbers from 2), its writer closed.
void feed(DocumentStore& store, std::string_view table, std::string_view header, IdSet& own,
          std::vector<const IdSet*> parents, const std::vector<std::string>& lines) {
  Feeder f(store, table, header, own, std::move(parents));
  std::uint32_t pos = 2;
  for (const auto& line : lines) f.add(line, pos++);
  f.w->close();
}
constexpr std::string_view kProductsHeader = "id,name,slogan,description,category,default_price";
constexpr std::string_view kStylesHeader =
    "id,productId,name,sale_price,original_price,default_style";
}  // namespace

TEST_CASE("DocumentStore assembles every document of a product in the contract's shape and order") {
  std::string tmp = catwalk::test::make_temp_dir("catwalk-docs");
  std::string out, raw;
  {
    DocumentStore store(tmp, 4);
    IdSet products, styles, features, photos, skus, related;
    {
      Feeder f(store, "products", "id,name,slogan,description,category,default_price", products,
               {});
      f.add(R"(5,"Shoe","Run","A ""fast"" shoe","Kicks",99.5)", 2);
      f.add(R"(2,"Hat","Sun","Wide","Hats",20)", 3);
      f.w->close();
    }
    {
      Feeder f(store, "styles", "id,productId,name,sale_price,original_price,default_style", styles,
               {nullptr, &products, nullptr, nullptr, nullptr, nullptr});
      f.add(R"(9,5,"Red",null,99.5,1)", 2);
      f.add(R"(4,5,"Blue",80,99.5,0)", 3);
      f.w->close();
    }
    {
      Feeder f(store, "features", "id,product_id,feature,value", features,
               {nullptr, &products, nullptr, nullptr});
      f.add(R"(2,5,"Sole",null)", 2);
      // A value over 127 bytes: its length takes two bytes in the work file.
      f.add(R"(1,5,"Fabric","Mesh)" + std::string(300, 'h') + "\"", 3);
      f.w->close();
    }
    {
      Feeder f(store, "related", "id,current_product_id,related_product_id", related,
               {nullptr, &products, &products});
      f.add("1,5,2", 2);
      f.add("2,5,5", 3);
      f.w->close();
    }
    {
      Feeder f(store, "photos", "id,styleId,url,thumbnail_url", photos,
               {nullptr, &styles, nullptr, nullptr});
      f.add(R"(7,9,"u7","t7")", 2);
      f.add(R"(3,9,"u3","t3")", 3);
      f.w->close();
    }
    {
      Feeder f(store, "skus", "id,styleId,size,quantity", skus,
               {nullptr, &styles, nullptr, nullptr});
      f.add(R"(8,4,"XS",8)", 2);
      f.add(R"(7,4,"S",16)", 3);
      f.w->close();
    }
    products.finalize();
    std::string binary;
    // Three threads over four partitions: rows in any order, header first, trailer last.
    auto n = store.assemble(
        products, [&](const std::string& chunk) { binary += chunk; }, 3);
    CHECK(n == 2);
    REQUIRE(binary.starts_with(copy_binary::kHeader));
    CHECK(binary.ends_with("\xFF\xFF"));
    using catwalk::test::Bin;
    out = catwalk::test::decode_rows(binary,
                                     {Bin::kInt4, Bin::kInt4, Bin::kDocument, Bin::kDocument,
                                      Bin::kDocument, Bin::kSkip, Bin::kSkip, Bin::kSkip},
                                     copy_binary::kHeader.size());
    // Stored as the API sends them to gzip clients: product 5's styles (long) as a gzip member,
    // the short related lists as they are (gzip would make them longer).
    raw = catwalk::test::decode_rows(binary,
                                     {Bin::kInt4, Bin::kInt4, Bin::kText, Bin::kText, Bin::kText,
                                      Bin::kSkip, Bin::kSkip, Bin::kSkip},
                                     copy_binary::kHeader.size());
  }
  CHECK(std::filesystem::is_empty(tmp));  // the store removed its work folder
  CHECK(raw.find("\t\x1f\x8b\x08") != std::string::npos);
  CHECK(raw.find("\t[2,5]\n") != std::string::npos);
  CHECK(raw.find("\t[]\n") != std::string::npos);
  // Rows: id, rn, detail, styles, related (no list item: the API cuts it from the detail).
  CHECK(out.find("2\t1\t{\"id\":2,\"name\":\"Hat\",\"slogan\":\"Sun\",\"description\":\"Wide\","
                 "\"category\":\"Hats\",\"default_price\":\"20\",\"features\":[]}\t"
                 "{\"product_id\":\"2\",\"results\":[]}\t[]\n") != std::string::npos);
  CHECK(out.find("5\t2\t{\"id\":5,\"name\":\"Shoe\",\"slogan\":\"Run\",\"description\":\"A "
                 "\\\"fast\\\" shoe\",\"category\":\"Kicks\",\"default_price\":\"99.50\","
                 "\"features\":[") != std::string::npos);
  CHECK(out.find(",\"features\":[{\"feature\":\"Sole\",\"value\":null},"
                 "{\"feature\":\"Fabric\",\"value\":\"Mesh" +
                 std::string(300, 'h') + "\"}]}\t") != std::string::npos);
  CHECK(out.find(
            "{\"product_id\":\"5\",\"results\":["
            "{\"style_id\":4,\"name\":\"Blue\",\"original_price\":\"99.50\",\"sale_price\":\"80\","
            "\"default?\":false,\"photos\":[{\"thumbnail_url\":null,\"url\":null}],"
            "\"skus\":{\"8\":{\"quantity\":8,\"size\":\"XS\"},\"7\":{\"quantity\":16,\"size\":"
            "\"S\"}}},"
            "{\"style_id\":9,\"name\":\"Red\",\"original_price\":\"99.50\",\"sale_price\":null,"
            "\"default?\":true,\"photos\":[{\"thumbnail_url\":\"t7\",\"url\":\"u7\"},"
            "{\"thumbnail_url\":\"t3\",\"url\":\"u3\"}],"
            "\"skus\":{\"null\":{\"quantity\":null,\"size\":null}}}]}\t[2,5]\n") !=
        std::string::npos);
  std::filesystem::remove_all(tmp);
}

TEST_CASE("DocumentStore: a photo's url written against its thumbnail_url comes back whole") {
  // url and thumbnail_url: equal, one a prefix of the other, a shared prefix of over 127 bytes
  // (two bytes of length), nothing shared, escapes in the shared part, either one a bare null.
  const std::string longp = "https://images.example.com/photo-" + std::string(300, 'p');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\"same\"", "\"same\""},  {"\"abc\"", "\"abcdef\""},
      {"\"abcdef\"", "\"abc\""}, {"\"" + longp + "?w=668\"", "\"" + longp + "?w=300\""},
      {"\"xyz\"", "\"uvw\""},    {R"("a ""q"" \ b1")", R"("a ""q"" \ b2")"},
      {"null", "\"t\""},         {"\"u\"", "null"},
      {"\"\"", "\"\""},
  };
  auto json = [](const std::string& csv) {
    // Photos' url columns are NOT NULL: a bare null is the text "null" (as the loader stores it).
    if (csv == "null") return std::string("\"null\"");
    std::string inner = csv.substr(1, csv.size() - 2), out;
    for (std::size_t i = 0; i < inner.size(); ++i) {
      if (inner[i] == '"') ++i;  // a doubled quote
      out.push_back(inner[i]);
    }
    std::string j;
    catwalk::append_json_string(j, out);
    return j;
  };
  std::string tmp = catwalk::test::make_temp_dir("catwalk-docs-url");
  std::string out;
  {
    DocumentStore store(tmp, 2);
    IdSet products, styles, photos;
    feed(store, "products", kProductsHeader, products, {}, {R"(1,"P","S","D","C",1)"});
    feed(store, "styles", kStylesHeader, styles,
         {nullptr, &products, nullptr, nullptr, nullptr, nullptr}, {R"(3,1,"R",null,1,1)"});
    {
      Feeder f(store, "photos", "id,styleId,url,thumbnail_url", photos,
               {nullptr, &styles, nullptr, nullptr});
      for (std::size_t i = 0; i < cases.size(); ++i) {
        f.add(std::to_string(i + 1) + ",3," + cases[i].first + "," + cases[i].second, i + 2);
      }
      f.w->close();
    }
    products.finalize();
    std::string binary;
    store.assemble(
        products, [&](const std::string& chunk) { binary += chunk; }, 1);
    using catwalk::test::Bin;
    out = catwalk::test::decode_rows(binary,
                                     {Bin::kInt4, Bin::kInt4, Bin::kDocument, Bin::kDocument,
                                      Bin::kDocument, Bin::kSkip, Bin::kSkip, Bin::kSkip},
                                     copy_binary::kHeader.size());
  }
  std::string expected = "\"photos\":[";
  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (i) expected += ",";
    expected +=
        "{\"thumbnail_url\":" + json(cases[i].second) + ",\"url\":" + json(cases[i].first) + "}";
  }
  expected += "]";
  INFO(out);
  CHECK(out.find(expected) != std::string::npos);
  std::filesystem::remove_all(tmp);
}

TEST_CASE("DocumentStore: the style map's memory is given back before the assembly") {
  // A style id of 5,000,000 makes the dense map hold 4 bytes per id up to it (20 MB); one above
  // the dense range goes to the sparse map. The map is only read while photos and skus are
  // loaded. It was cleared with `= {}`, which keeps the capacity: at scale 4.0 its 32 MiB stayed
  // through the whole assembly, on top of the assembly's own memory.
  std::string tmp = catwalk::test::make_temp_dir("catwalk-docs-stylemap");
  {
    DocumentStore store(tmp, 2);
    IdSet products, styles;
    feed(store, "products", kProductsHeader, products, {}, {R"(5,"Shoe","Run","Fast","Kicks",99)"});
    feed(store, "styles", kStylesHeader, styles,
         {nullptr, &products, nullptr, nullptr, nullptr, nullptr},
         {R"(5000000,5,"Red",null,99,1)", R"(2000000000,5,"Blue",null,99,0)"});
    CHECK(store.style_map_bytes() >= 5'000'000 * sizeof(std::uint32_t));
    products.finalize();
    std::optional<std::size_t> at_first_chunk;
    auto n = store.assemble(products, [&](const std::string&) {
      if (!at_first_chunk) at_first_chunk = store.style_map_bytes();
    });
    CHECK(n == 1);
    REQUIRE(at_first_chunk);
    CHECK(*at_first_chunk == 0);
    CHECK(store.style_map_bytes() == 0);
  }
  std::filesystem::remove_all(tmp);
}

TEST_CASE("DocumentStore: products sharing a partition, ids near or far apart, assemble in order") {
  // Product 7 and product `big` in one partition. Ids 2,000,000,000 apart: the assembly's
  // counting pass by product does not apply and one comparison sort orders them. Ids 7 and 11
  // in partition 1 of 2: the counting pass groups them. The documents are the same.
  for (auto [big, partitions] : {std::pair<std::string, int>{"2000000000", 1}, {"11", 2}}) {
    CAPTURE(big);
    std::string tmp = catwalk::test::make_temp_dir("catwalk-docs-sparse");
    std::string out;
    {
      DocumentStore store(tmp, partitions);
      IdSet products, styles, features, photos, skus, related;
      {
        Feeder f(store, "products", "id,name,slogan,description,category,default_price", products,
                 {});
        f.add(big + R"(,"Big","s","d","c",1)", 2);
        f.add(R"(7,"Small","s","d","c",2)", 3);
        f.w->close();
      }
      {
        Feeder f(store, "styles", "id,productId,name,sale_price,original_price,default_style",
                 styles, {nullptr, &products, nullptr, nullptr, nullptr, nullptr});
        f.add(R"(1000000000,7,"B",null,1,0)", 2);
        f.add("3," + big + R"(,"X",null,1,1)", 3);
        f.add(R"(5,7,"A",null,1,1)", 4);
        f.w->close();
      }
      {
        Feeder f(store, "features", "id,product_id,feature,value", features,
                 {nullptr, &products, nullptr, nullptr});
        f.add(R"(9,7,"F9","v")", 2);
        f.add("1," + big + R"(,"F1","v")", 3);
        f.add(R"(4,7,"F4","v")", 4);
        f.w->close();
      }
      {
        Feeder f(store, "photos", "id,styleId,url,thumbnail_url", photos,
                 {nullptr, &styles, nullptr, nullptr});
        f.add(R"(1,1000000000,"u1","t1")", 2);
        f.add(R"(2,5,"u2","t2")", 3);
        f.add(R"(3,1000000000,"u3","t3")", 4);
        f.add(R"(4,3,"u4","t4")", 5);
        f.w->close();
      }
      {
        Feeder f(store, "skus", "id,styleId,size,quantity", skus,
                 {nullptr, &styles, nullptr, nullptr});
        f.add(R"(6,5,"M",1)", 2);
        f.add(R"(2,5,"S",2)", 3);
        f.w->close();
      }
      products.finalize();
      std::string binary;
      CHECK(store.assemble(products, [&](const std::string& chunk) { binary += chunk; }) == 2);
      using catwalk::test::Bin;
      out = catwalk::test::decode_rows(binary,
                                       {Bin::kInt4, Bin::kInt4, Bin::kDocument, Bin::kDocument,
                                        Bin::kDocument, Bin::kSkip, Bin::kSkip, Bin::kSkip},
                                       copy_binary::kHeader.size());
    }
    // Product 7 first (rank 1); its features in export order; its styles by id, each with its
    // photos and skus in export order.
    CHECK(out.starts_with("7\t1\t"));
    CHECK(out.find("\"features\":[{\"feature\":\"F9\",\"value\":\"v\"},"
                   "{\"feature\":\"F4\",\"value\":\"v\"}]}\t") != std::string::npos);
    CHECK(out.find("{\"product_id\":\"7\",\"results\":["
                   "{\"style_id\":5,\"name\":\"A\",\"original_price\":\"1\",\"sale_price\":null,"
                   "\"default?\":true,\"photos\":[{\"thumbnail_url\":\"t2\",\"url\":\"u2\"}],"
                   "\"skus\":{\"6\":{\"quantity\":1,\"size\":\"M\"},\"2\":{\"quantity\":2,"
                   "\"size\":\"S\"}}},"
                   "{\"style_id\":1000000000,\"name\":\"B\",\"original_price\":\"1\","
                   "\"sale_price\":null,\"default?\":false,\"photos\":[{\"thumbnail_url\":\"t1\","
                   "\"url\":\"u1\"},{\"thumbnail_url\":\"t3\",\"url\":\"u3\"}],"
                   "\"skus\":{\"null\":{\"quantity\":null,\"size\":null}}}]}\t") !=
          std::string::npos);
    CHECK(out.find("\n" + big + "\t2\t") != std::string::npos);
    CHECK(out.find("\"photos\":[{\"thumbnail_url\":\"t4\",\"url\":\"u4\"}]") != std::string::npos);
    std::filesystem::remove_all(tmp);
  }
}

static_assert(!std::is_copy_constructible_v<DocumentStore::Writer> &&
                  !std::is_copy_assignable_v<DocumentStore::Writer>,
              "a Writer owns its files: a copy would close them twice");

namespace {
// The store's one work folder under `root`.
std::string work_dir(const std::string& root) {
  for (const auto& e : std::filesystem::directory_iterator(root)) return e.path().string();
  FAIL("no work folder");
  return "";
}

// Writes two products (ids 1 and 65: the same partition of 64) and returns the partition file.
std::string two_products(DocumentStore& store, IdSet& products, const std::string& root) {
  Feeder f(store, "products", "id,name,slogan,description,category,default_price", products, {});
  f.add(R"(1,"Shoe","Run","A shoe","Kicks",99)", 2);
  f.add(R"(65,"Hat","Sun","Wide","Hats",20)", 3);
  f.w->close();
  products.finalize();
  return work_dir(root) + "/0.1";  // table 0 (products), partition 1
}
}  // namespace

TEST_CASE("DocumentStore: a damaged work file stops the assembly, never reads out of bounds") {
  std::string tmp = catwalk::test::make_temp_dir("catwalk-docs-damaged");
  for (int cut : {1, 10, 30}) {
    CAPTURE(cut);
    DocumentStore store(tmp, 64);
    IdSet products;
    std::string path = two_products(store, products, tmp);
    auto size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, size - cut);  // the last record runs past the end
    std::string binary;
    CHECK_THROWS_WITH_AS(store.assemble(products, [&](const std::string& c) { binary += c; }),
                         doctest::Contains("is damaged"), InputError);
  }
  {
    // A length field far past the end of the file.
    DocumentStore store(tmp, 64);
    IdSet products;
    std::string path = two_products(store, products, tmp);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4);  // the product id, then the first value's length (LEB128): 2^28 - 1
    const char huge[4] = {'\xFF', '\xFF', '\xFF', '\x7F'};
    f.write(huge, sizeof huge);
    f.close();
    CHECK_THROWS_AS(store.assemble(products, [](const std::string&) {}), InputError);
  }
  {
    // A length field that never ends (LEB128 bytes all with their high bit set).
    DocumentStore store(tmp, 64);
    IdSet products;
    std::string path = two_products(store, products, tmp);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4);
    const char endless[5] = {'\x80', '\x80', '\x80', '\x80', '\x80'};
    f.write(endless, sizeof endless);
    f.close();
    CHECK_THROWS_WITH_AS(store.assemble(products, [](const std::string&) {}),
                         doctest::Contains("is damaged"), InputError);
  }
  std::filesystem::remove_all(tmp);
}

TEST_CASE("DocumentStore: work files of many read pieces, records cut between pieces") {
  // One partition: about 2 MB of product records, several of the 256 KiB pieces the assembly
  // reads at a time, so records are cut at every piece's end; one record of 600 KB spans three
  // pieces. Every product's detail must come out whole, and a file cut short is still damaged.
  for (bool cut : {false, true}) {
    CAPTURE(cut);
    std::string tmp = catwalk::test::make_temp_dir("catwalk-docs-pieces");
    std::vector<std::string> details;
    std::string binary;
    bool threw = false;
    {
      DocumentStore store(tmp, 1);
      IdSet products;
      {
        Feeder f(store, "products", "id,name,slogan,description,category,default_price", products,
                 {});
        for (int id = 1; id <= 5000; ++id) {
          const std::size_t length = id == 2500 ? 600000 : static_cast<std::size_t>(id * 37 % 800);
          std::string description(length, static_cast<char>('a' + id % 26));
          if (id % 7 == 0) description += "\xC3\xA9 \"\"q\"\"";  // escaped on the way in
          f.add(fmt::format(R"({},"N{}","S","{}","C",{})", id, id, description, id % 90 + 1),
                static_cast<std::uint32_t>(id + 1));
          if (id % 7 == 0) description.replace(description.size() - 6, 6, " \\\"q\\\"");
          details.push_back(fmt::format(
              R"({{"id":{},"name":"N{}","slogan":"S","description":"{}","category":"C",)"
              R"("default_price":"{}","features":[]}})",
              id, id, description, id % 90 + 1));
        }
        f.w->close();
      }
      products.finalize();
      if (cut) {
        std::string path = work_dir(tmp) + "/0.0";
        REQUIRE(std::filesystem::file_size(path) > 4 * (std::size_t{256} << 10));
        std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
      }
      try {
        store.assemble(products, [&](const std::string& c) { binary += c; });
      } catch (const InputError& e) {
        threw = std::string(e.what()).find("is damaged") != std::string::npos;
      }
    }
    if (cut) {
      CHECK(threw);
    } else {
      REQUIRE_FALSE(threw);
      using catwalk::test::Bin;
      const std::string out =
          catwalk::test::decode_rows(binary,
                                     {Bin::kInt4, Bin::kInt4, Bin::kDocument, Bin::kDocument,
                                      Bin::kDocument, Bin::kSkip, Bin::kSkip, Bin::kSkip},
                                     copy_binary::kHeader.size());
      std::size_t found = 0;
      for (std::size_t i = 0; i < details.size(); ++i) {
        const std::string row = fmt::format("{}\t{}\t{}\t", i + 1, i + 1, details[i]);
        found += out.find(row) != std::string::npos;
      }
      CHECK(found == details.size());
    }
    std::filesystem::remove_all(tmp);
  }
}

TEST_CASE("DocumentStore: a failed work-file write stops at once with a clear error") {
  // A file size limit makes writes past 64 KiB fail (EFBIG) as a full disk would.
  std::string tmp = catwalk::test::make_temp_dir("catwalk-docs-full");
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  std::string error;
  {
    DocumentStore store(tmp, 1);
    IdSet products;
    Feeder f(store, "products", "id,name,slogan,description,category,default_price", products, {});
    struct rlimit small = old;
    small.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string description(40 * 1024, 'd');  // past the writer's 64 KiB buffer in two rows
    try {
      for (int id = 1; id <= 8; ++id) {
        f.add(fmt::format("{},\"n\",\"s\",\"{}\",\"c\",1", id, description), id + 1);
      }
    } catch (const InputError& e) {
      error = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    if (error.empty()) {
      try {
        f.w->close();
      } catch (const InputError&) {
      }
    }
  }
  std::signal(SIGXFSZ, old_handler);
  CHECK(error.find("cannot write the document work file") != std::string::npos);
  CHECK(error.find("File too large") != std::string::npos);
  CHECK(error.find("TMPDIR") != std::string::npos);
  std::filesystem::remove_all(tmp);
}
