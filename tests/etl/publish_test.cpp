// The publish guard: which catalogues a run refuses to publish, without a database.
#include "publish.hpp"

#include <doctest/doctest.h>

#include "catwalk/etl/errors.hpp"

using namespace catwalk::etl;

TEST_CASE("catalogue guard: empty refused unless allowed, under half refused unless allowed") {
  auto products = [](std::uint64_t read, std::uint64_t loaded) {
    FileStats f;
    f.file = "product.csv";
    f.read = read;
    f.loaded = loaded;
    f.rejected = read - loaded;
    return f;
  };
  LoadOptions o;
  CHECK_THROWS_WITH_AS(check_catalogue_size(products(0, 0), 0, o),
                       doctest::Contains("product.csv holds only a header"), RefusedPublish);
  CHECK_THROWS_WITH_AS(check_catalogue_size(products(3, 0), 0, o),
                       doctest::Contains("every one of the 3 lines"), RefusedPublish);
  CHECK_THROWS_WITH_AS(check_catalogue_size(products(4, 4), 9, o),
                       doctest::Contains("fewer than half of the 9 published"), RefusedPublish);
  CHECK_NOTHROW(check_catalogue_size(products(5, 5), 10, o));   // exactly half
  CHECK_NOTHROW(check_catalogue_size(products(12, 12), 0, o));  // a first load
  o.allow_shrink = true;
  CHECK_NOTHROW(check_catalogue_size(products(1, 1), 1000, o));
  CHECK_THROWS_AS(check_catalogue_size(products(0, 0), 1000, o), RefusedPublish);
  o.allow_empty = true;
  o.allow_shrink = false;
  CHECK_NOTHROW(check_catalogue_size(products(0, 0), 1000, o));  // empty was asked for
  LoadOptions check;
  check.use_database = false;  // check: nothing published to compare with
  CHECK_NOTHROW(check_catalogue_size(products(1, 1), 1000, check));
}
