#include "export_generator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>

#include "out_file.hpp"
#include "rng.hpp"

namespace catwalk::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Row counts of the real full export (csv-exports.md) at scale 1.0.
constexpr double kProductsAtScale1 = 1'000'011;
constexpr double kCartRowsAtScale1 = 20'000;

// Quirk rates, per row of the file that carries them. Each quirk also has a floor so that a
// --scale 0.01 run still exercises every path.
constexpr double kSwapRate = 0.002;               // adjacent ids written in swapped order
constexpr double kBrokenQuoteRate = 1e-5;         // photos: last field's closing quote missing
constexpr double kDuplicatePhotoRate = 5e-6;      // photos: an extra line reusing an earlier id
constexpr double kRelatedZeroRate = 2e-5;         // related_product_id = 0
constexpr double kSelfLinkRate = 1e-4;            // related to itself
constexpr double kDuplicatePairRate = 1e-4;       // the same pair twice for one product
constexpr double kNegativeQuantityRate = 1e-6;    // skus: bad_value
constexpr double kFeatureColumnCountRate = 1e-6;  // features: a line missing its last field
constexpr double kSameSizeTwiceRate = 0.01;       // per style: the last size repeated (valid)

// Streams: one independent generator per purpose, so files can be written in any order.
enum Stream : std::uint64_t {
  kPlanStream = 1,
  kProductStream,
  kFeatureStream,
  kStyleStream,
  kPhotoStream,
  kSkuStream,
  kRelatedStream,
  kCartStream,
  kPriceHash,
  kDefaultStyleHash,
  kSizeHash,
  kProductIdStream,
  kStyleIdStream,
};

// A discrete distribution over small counts, weights in per-mille.
struct CountDistribution {
  std::vector<std::pair<std::uint8_t, std::uint16_t>> weights;

  std::uint8_t pick(Rng& rng) const {
    auto r = static_cast<std::uint16_t>(rng.below(1000));
    for (const auto& [value, weight] : weights) {
      if (r < weight) return value;
      r = static_cast<std::uint16_t>(r - weight);
    }
    return weights.back().first;
  }
};

// Means chosen to match csv-exports.md: 1.958 styles and 2.219 features per product,
// 2.888 photos and 5.783 skus per style, 4.508 related per product.
const CountDistribution kStylesPerProduct{
    {{0, 70}, {1, 330}, {2, 340}, {3, 160}, {4, 60}, {5, 20}, {6, 20}}};
const CountDistribution kFeaturesPerProduct{{{0, 60}, {1, 200}, {2, 350}, {3, 250}, {4, 140}}};
const CountDistribution kPhotosPerStyle{
    {{0, 100}, {1, 130}, {2, 180}, {3, 220}, {4, 180}, {5, 110}, {6, 80}}};
const CountDistribution kSkusPerStyle{
    {{0, 50}, {4, 100}, {5, 150}, {6, 450}, {7, 100}, {8, 100}, {9, 50}}};
const CountDistribution kRelatedPerProduct{
    {{2, 50}, {3, 150}, {4, 300}, {5, 300}, {6, 150}, {7, 50}}};

// Ids 1..total, in increasing order except that now and then two adjacent ids come out
// swapped, as in the real skus.csv (8 before 7).
class IdSequence {
 public:
  IdSequence(std::uint64_t total, Rng rng) : total_(total), rng_(rng) {}

  std::uint64_t next() {
    if (held_ != 0) {
      auto id = held_;
      held_ = 0;
      return id;
    }
    if (next_ + 1 <= total_ && rng_.chance(kSwapRate)) {
      held_ = next_;
      next_ += 2;
      ++swaps_;
      return next_ - 1;
    }
    return next_++;
  }
  std::uint64_t swaps() const { return swaps_; }

 private:
  std::uint64_t total_;
  Rng rng_;
  std::uint64_t next_ = 1;
  std::uint64_t held_ = 0;  // the smaller id of a swapped pair, still to come; 0 = none
  std::uint64_t swaps_ = 0;
};

// k distinct row indices in [0, n), sorted; consumed in order by a cursor while writing.
class Positions {
 public:
  Positions() = default;
  explicit Positions(std::vector<std::uint64_t> sorted) : at_(std::move(sorted)) {}

  bool take(std::uint64_t index) {
    if (next_ < at_.size() && at_[next_] == index) {
      ++next_;
      return true;
    }
    return false;
  }

 private:
  std::vector<std::uint64_t> at_;
  std::size_t next_ = 0;
};

std::uint64_t quirk_count(double rate, std::uint64_t rows, std::uint64_t floor) {
  auto k = static_cast<std::uint64_t>(std::llround(rate * static_cast<double>(rows)));
  return std::min(rows, std::max(k, floor));
}

// Draws disjoint position sets of the given sizes from [0, n).
std::vector<Positions> draw_positions(Rng& rng, std::uint64_t n,
                                      const std::vector<std::uint64_t>& sizes) {
  std::uint64_t total = 0;
  for (auto s : sizes) total += s;
  total = std::min(total, n);
  std::vector<std::uint64_t> order;  // in draw order, so each set is a random subset
  std::set<std::uint64_t> seen;
  while (order.size() < total) {
    auto p = rng.below(n);
    if (seen.insert(p).second) order.push_back(p);
  }
  std::vector<Positions> out;
  std::size_t from = 0;
  for (auto s : sizes) {
    auto to = std::min(order.size(), from + static_cast<std::size_t>(s));
    std::vector<std::uint64_t> part(order.begin() + static_cast<std::ptrdiff_t>(from),
                                    order.begin() + static_cast<std::ptrdiff_t>(to));
    std::sort(part.begin(), part.end());
    out.emplace_back(std::move(part));
    from = to;
  }
  return out;
}

template <std::size_t N>
std::string_view pick(Rng& rng, const std::array<std::string_view, N>& words) {
  return words[rng.below(N)];
}

constexpr std::array<std::string_view, 24> kAdjectives{
    "Camo",     "Bright",  "Morning",  "Slacker's", "Heir",   "Pumped", "Blues",  "Summer",
    "Infinity", "Air",     "Classic",  "Retro",     "Urban",  "Trail",  "Velvet", "Denim",
    "Alpine",   "Coastal", "Midnight", "Golden",    "Rugged", "Silky",  "Bold",   "Quiet"};
constexpr std::array<std::string_view, 24> kNouns{
    "Onesie", "Sunglasses", "Joggers", "Slacks", "Kicks",  "Shoes",   "Stone",    "Minis",
    "Jacket", "Hoodie",     "Beanie",  "Shorts", "Tee",    "Sweater", "Boots",    "Sandals",
    "Cap",    "Scarf",      "Gloves",  "Vest",   "Blazer", "Socks",   "Backpack", "Belt"};
constexpr std::array<std::string_view, 12> kCategories{
    "Jackets", "Accessories", "Pants",    "Kicks", "Dress Shoes", "Basketball Shoes",
    "Tees",    "Shorts",      "Sweaters", "Hats",  "Boots",       "Sandals"};
constexpr std::array<std::string_view, 12> kSlogans{"Blend in to your crowd",
                                                    "You've got to wear shades",
                                                    "Make yourself a morning person",
                                                    "Comfortable for everything, or nothing",
                                                    "A sneaker dynasty",
                                                    "Faster than a just about anything",
                                                    "2019 fashion meets 1956 fashion",
                                                    "Just jumped over jumpman",
                                                    "A risky call in the spring or fall",
                                                    "Reality is different for every being",
                                                    "Full court support",
                                                    "Made for the long, long weekend"};
constexpr std::array<std::string_view, 14> kSentences{
    "The So Fatigues will wake you up and fit you in.",
    "This high energy camo will have you blending in to even the wildest surroundings.",
    "Where you're going you might not need roads, but you definitely need some shades.",
    "Give those baby blues a rest and let the future shine bright on these timeless lenses.",
    "Whether you're a morning person or not.",
    "Whether you're gym bound or not.",
    "Everyone looks good in joggers.",
    "I'll tell you how great they are after I nap for a bit.",
    "The Pumped Up serves up crisp court style with a modern look.",
    "The best of both worlds: a classic look that will never go out of style.",
    "These stretchy knit shoes show off asymmetrical lacing and a big sculpted rubber midsole.",
    "Low-top panelled buffed leather and mesh sneakers.",
    "Sizing embroidered in black at round toe.",
    "This optimized air cushion pairs a soft upper with a heavy-duty outsole."};
constexpr std::array<std::string_view, 12> kFeatureNames{
    "Fabric", "Buttons",  "Lenses",   "UV Protection", "Frames",  "Cut",
    "Sole",   "Material", "Mid-Sole", "Stitching",     "Non-GMO", "Green Leaf Certified"};
constexpr std::array<std::string_view, 14> kFeatureValues{"Canvas",
                                                          "Brass",
                                                          "Ultrasheen",
                                                          "LightCompose",
                                                          "100% Cotton",
                                                          "Skinny",
                                                          "99% Cotton 1% Elastic",
                                                          "Loose",
                                                          "Rubber",
                                                          "FullControlSkin",
                                                          "Double Stitch",
                                                          "Copper",
                                                          "Black Resin, Matte",
                                                          "Wood"};
constexpr std::array<std::string_view, 16> kColors{
    "Forest Green", "Black",    "Desert Brown", "Tan",       "Ocean Blue", "Grey",
    "Digital Red",  "Sky Blue", "White",        "Dark Grey", "Gold",       "Khaki",
    "Navy",         "Olive",    "Crimson",      "Cream"};
constexpr std::array<std::string_view, 9> kClothingSizes{"XXS", "XS",  "S",    "M",  "L",
                                                         "XL",  "XXL", "XXXL", "4XL"};
constexpr std::array<std::string_view, 14> kShoeSizes{
    "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "11.5", "12", "12.5", "13", "14"};

// Price in cents, derived from the product's index so styles.csv agrees with product.csv
// without sharing state between threads.
std::int64_t product_price_cents(std::uint64_t seed, std::uint64_t product_index) {
  auto h = hash3(seed, kPriceHash, product_index);
  std::int64_t dollars = 5 + static_cast<std::int64_t>(h % 996);
  auto cents_kind = (h >> 32) % 20;
  std::int64_t cents = cents_kind == 0 ? 50 : cents_kind == 1 ? 99 : 0;
  return dollars * 100 + cents;
}

// Money as the export writes it: "140", or "99.50".
void write_money(OutFile& out, std::int64_t cents) {
  out.write_int(cents / 100);
  if (cents % 100 != 0) {
    out.put('.');
    out.put(static_cast<char>('0' + (cents % 100) / 10));
    out.put(static_cast<char>('0' + cents % 10));
  }
}

// Everything that more than one file needs, computed once before the files are written.
struct Plan {
  std::uint64_t seed = 0;
  std::uint64_t products = 0;
  std::vector<std::uint32_t> product_ids;    // in file order
  std::vector<std::uint8_t> feature_counts;  // per product, file order
  std::vector<std::uint8_t> related_counts;  // per product
  std::vector<std::uint32_t>
      style_begin;                       // per product: first index into style_ids; size products+1
  std::vector<std::uint32_t> style_ids;  // in file order
  std::vector<std::uint8_t> photo_counts;  // per style, file order
  std::vector<std::uint8_t> sku_counts;    // per style
  std::uint64_t features = 0, related = 0, photos = 0, skus = 0, cart = 0;
  std::uint64_t product_swaps = 0, style_swaps = 0;
};

Plan make_plan(const GeneratorOptions& options) {
  Plan plan;
  plan.seed = options.seed;
  plan.products = std::max<std::uint64_t>(
      20, static_cast<std::uint64_t>(std::llround(kProductsAtScale1 * options.scale)));
  plan.cart = std::max<std::uint64_t>(
      10, static_cast<std::uint64_t>(std::llround(kCartRowsAtScale1 * options.scale)));
  Rng rng(options.seed, kPlanStream);

  IdSequence product_ids(plan.products, Rng(options.seed, kProductIdStream));
  plan.product_ids.reserve(plan.products);
  plan.feature_counts.reserve(plan.products);
  plan.related_counts.reserve(plan.products);
  plan.style_begin.reserve(plan.products + 1);
  std::vector<std::uint8_t> styles_per_product;
  styles_per_product.reserve(plan.products);
  std::uint64_t styles = 0;
  for (std::uint64_t i = 0; i < plan.products; ++i) {
    plan.product_ids.push_back(static_cast<std::uint32_t>(product_ids.next()));
    auto f = kFeaturesPerProduct.pick(rng);
    auto r = kRelatedPerProduct.pick(rng);
    auto s = kStylesPerProduct.pick(rng);
    plan.feature_counts.push_back(f);
    plan.related_counts.push_back(r);
    plan.style_begin.push_back(static_cast<std::uint32_t>(styles));
    plan.features += f;
    plan.related += r;
    styles += s;
  }
  plan.style_begin.push_back(static_cast<std::uint32_t>(styles));
  plan.product_swaps = product_ids.swaps();

  IdSequence style_ids(styles, Rng(options.seed, kStyleIdStream));
  plan.style_ids.reserve(styles);
  plan.photo_counts.reserve(styles);
  plan.sku_counts.reserve(styles);
  for (std::uint64_t j = 0; j < styles; ++j) {
    plan.style_ids.push_back(static_cast<std::uint32_t>(style_ids.next()));
    auto p = kPhotosPerStyle.pick(rng);
    auto k = kSkusPerStyle.pick(rng);
    plan.photo_counts.push_back(p);
    plan.sku_counts.push_back(k);
    plan.photos += p;
    plan.skus += k;
  }
  plan.style_swaps = style_ids.swaps();
  return plan;
}

// Counts lines as they are written so reports can name line numbers (header = line 1).
class CsvFile {
 public:
  CsvFile(const std::filesystem::path& path, std::string_view header) : out_(path) {
    out_.write(header);
    out_.put('\n');
  }
  OutFile& out() { return out_; }
  // Ends the current data line; returns its line number.
  std::uint64_t end_line() {
    out_.put('\n');
    ++lines_;
    return lines_ + 1;
  }
  std::uint64_t lines() const { return lines_; }
  std::uint64_t bytes() const { return out_.bytes(); }
  void close() { out_.close(); }

 private:
  OutFile out_;
  std::uint64_t lines_ = 0;
};

FileReport make_report(std::string file, std::string table) {
  FileReport report;
  report.file = std::move(file);
  report.table = std::move(table);
  return report;
}

void finish(FileReport& report, CsvFile& csv) {
  csv.close();
  report.lines = csv.lines();
  report.bytes = csv.bytes();
  std::uint64_t rejected = 0;
  for (const auto& [kind, n] : report.rejects) rejected += n;
  report.loaded = report.lines - rejected;
}

FileReport write_products(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("product.csv", "products");
  // The real product.csv header has spaces after the commas.
  CsvFile csv(dir / report.file, "id, name, slogan, description, category, default_price");
  report.quirks["header_spaces"] = 1;
  Rng rng(plan.seed, kProductStream);
  auto& out = csv.out();
  std::string text;
  std::uint64_t doubled = 0, embedded_quotes = 0, commas = 0;
  for (std::uint64_t i = 0; i < plan.products; ++i) {
    out.write_int(plan.product_ids[i]);
    out.put(',');
    text.assign(pick(rng, kAdjectives));
    text += ' ';
    text += pick(rng, kNouns);
    if (rng.chance(0.3)) {
      text += ' ';
      text += std::to_string(rng.between(1, 999));
    }
    if (rng.chance(0.001)) {  // a name with a comma and quotes, written as "" in the file
      text += ", \"Limited\"";
      ++embedded_quotes;
    }
    out.write_quoted(text);
    out.put(',');
    out.write_quoted(pick(rng, kSlogans));
    out.put(',');
    text.clear();
    auto sentences = rng.between(1, 4);
    bool has_doubled = false;
    for (std::int64_t s = 0; s < sentences; ++s) {
      if (s != 0) {
        bool two = rng.chance(0.15);  // the real descriptions often have two spaces after a period
        has_doubled |= two;
        text += two ? "  " : " ";
      }
      text += pick(rng, kSentences);
    }
    doubled += has_doubled;
    commas += text.find(',') != std::string::npos;
    out.write_quoted(text);
    out.put(',');
    out.write_quoted(pick(rng, kCategories));
    out.put(',');
    write_money(out, product_price_cents(plan.seed, i));
    csv.end_line();
  }
  report.quirks["ids_swapped_pairs"] = plan.product_swaps;
  report.quirks["doubled_spaces"] = doubled;
  report.quirks["embedded_quotes"] = embedded_quotes;
  report.shape["descriptions_with_commas"] = commas;
  finish(report, csv);
  return report;
}

FileReport write_features(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("features.csv", "features");
  CsvFile csv(dir / report.file, "id,product_id,feature,value");
  Rng rng(plan.seed, kFeatureStream);
  IdSequence ids(plan.features, Rng(plan.seed, kFeatureStream + 100));
  auto positions =
      draw_positions(rng, plan.features, {quirk_count(kFeatureColumnCountRate, plan.features, 1)});
  auto& out = csv.out();
  std::uint64_t row = 0, nulls = 0, empties = 0, short_lines = 0, without = 0;
  for (std::uint64_t i = 0; i < plan.products; ++i) {
    without += plan.feature_counts[i] == 0;
    for (unsigned f = 0; f < plan.feature_counts[i]; ++f, ++row) {
      out.write_int(static_cast<std::int64_t>(ids.next()));
      out.put(',');
      out.write_int(plan.product_ids[i]);
      out.put(',');
      out.write_quoted(pick(rng, kFeatureNames));
      if (positions[0].take(row)) {
        // A line missing its value field altogether: column_count.
        ++short_lines;
        report.copy_unloadable_lines.push_back(csv.end_line());
        continue;
      }
      out.put(',');
      auto v = rng.below(100);
      if (v < 8) {
        out.write("null");
        ++nulls;
      } else if (v < 9) {
        ++empties;  // empty field: also NULL
      } else {
        out.write_quoted(pick(rng, kFeatureValues));
      }
      csv.end_line();
    }
  }
  report.quirks["value_null"] = nulls;
  report.quirks["value_empty"] = empties;
  report.quirks["column_count"] = short_lines;
  report.quirks["ids_swapped_pairs"] = ids.swaps();
  report.shape["products_without_features"] = without;
  report.rejects["column_count"] = short_lines;
  finish(report, csv);
  return report;
}

FileReport write_styles(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("styles.csv", "styles");
  CsvFile csv(dir / report.file, "id,productId,name,sale_price,original_price,default_style");
  Rng rng(plan.seed, kStyleStream);
  auto& out = csv.out();
  std::string name;
  std::uint64_t nulls = 0, zeros = 0, without = 0;
  for (std::uint64_t i = 0; i < plan.products; ++i) {
    auto begin = plan.style_begin[i], end = plan.style_begin[i + 1];
    without += begin == end;
    auto price = product_price_cents(plan.seed, i);
    auto default_at =
        begin == end ? 0 : begin + hash3(plan.seed, kDefaultStyleHash, i) % (end - begin);
    for (auto j = begin; j < end; ++j) {
      out.write_int(plan.style_ids[j]);
      out.put(',');
      out.write_int(plan.product_ids[i]);
      out.put(',');
      name.assign(pick(rng, kColors));
      if (rng.chance(0.6)) {
        name += " & ";
        name += pick(rng, kColors);
      }
      out.write_quoted(name);
      out.put(',');
      auto original = rng.chance(0.8) ? price : price + 100 * rng.between(5, 50);
      auto v = rng.below(1000);
      if (v < 820) {
        out.write("null");
        ++nulls;
      } else if (v < 825) {
        out.write("0");  // loads as NULL: no sale
        ++zeros;
      } else {
        write_money(out, original * rng.between(50, 90) / 100 / 100 * 100);
      }
      out.put(',');
      write_money(out, original);
      out.put(',');
      out.put(j == default_at ? '1' : '0');
      csv.end_line();
    }
  }
  report.quirks["sale_price_null"] = nulls;
  report.quirks["sale_price_zero"] = zeros;
  report.quirks["ids_swapped_pairs"] = plan.style_swaps;
  report.shape["products_without_styles"] = without;
  finish(report, csv);
  return report;
}

// An Unsplash-like URL of 104 to 130 characters; w=668 for the image, w=300 for the thumbnail.
void write_photo_url(OutFile& out, std::uint64_t photo_key, std::uint64_t variant, bool thumbnail,
                     bool close_quote) {
  static constexpr std::array<std::string_view, 4> kQueries{
      "?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9&auto=format&fit=crop&w=%&q=80",
      "?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9&auto=format&w=%&q=80",
      "?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9&w=%&q=80",
      "?ixlib=rb-1.2.1&auto=format&fit=crop&w=%&q=80"};
  static constexpr char kHex[] = "0123456789abcdef";
  auto query = kQueries[variant % kQueries.size()];
  // The longest query only with the 10-digit photo number keeps every URL within 130 characters.
  bool long_number = variant % kQueries.size() != 0 && (variant >> 8) % 2 == 1;
  out.put('"');
  out.write("https://images.unsplash.com/photo-");
  std::uint64_t number = long_number ? 1'400'000'000'000ULL + photo_key % 200'000'000'000ULL
                                     : 1'400'000'000ULL + photo_key % 200'000'000ULL;
  out.write_int(static_cast<std::int64_t>(number));
  out.put('-');
  auto h = splitmix64(photo_key);
  for (int k = 0; k < 12; ++k) out.put(kHex[(h >> (4 * k)) & 15]);
  auto pct = query.find('%');
  out.write(query.substr(0, pct));
  out.write(thumbnail ? "300" : "668");
  out.write(query.substr(pct + 1));
  if (close_quote) out.put('"');
}

FileReport write_photos(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("photos.csv", "photos");
  CsvFile csv(dir / report.file, "id,styleId,url,thumbnail_url");
  Rng rng(plan.seed, kPhotoStream);
  IdSequence ids(plan.photos, Rng(plan.seed, kPhotoStream + 100));
  auto positions = draw_positions(rng, plan.photos,
                                  {quirk_count(kBrokenQuoteRate, plan.photos, 3),
                                   quirk_count(kDuplicatePhotoRate, plan.photos, 2)});
  auto& out = csv.out();
  std::uint64_t row = 0, broken = 0, duplicates = 0, without = 0;
  auto write_row = [&](std::uint64_t id, std::uint32_t style_id, bool close_quote) {
    out.write_int(static_cast<std::int64_t>(id));
    out.put(',');
    out.write_int(style_id);
    out.put(',');
    auto key = rng.next();
    auto variant = rng.next();
    write_photo_url(out, key, variant, false, true);
    out.put(',');
    // Most thumbnails are the same photo at w=300; some point at another photo.
    write_photo_url(out, rng.chance(0.85) ? key : rng.next(), variant, true, close_quote);
    return csv.end_line();
  };
  for (std::size_t j = 0; j < plan.style_ids.size(); ++j) {
    without += plan.photo_counts[j] == 0;
    for (unsigned p = 0; p < plan.photo_counts[j]; ++p, ++row) {
      auto id = ids.next();
      if (positions[0].take(row)) {
        // Missing closing quote on the last field: the loader closes it at the end of the line.
        ++broken;
        report.copy_unloadable_lines.push_back(write_row(id, plan.style_ids[j], false));
      } else {
        write_row(id, plan.style_ids[j], true);
      }
      if (positions[1].take(row)) {
        // A later line reusing the id just written: the first stays, this one is a duplicate_id.
        ++duplicates;
        write_row(id, plan.style_ids[j], true);
      }
    }
  }
  report.quirks["missing_closing_quote"] = broken;
  report.quirks["duplicate_id"] = duplicates;
  report.quirks["ids_swapped_pairs"] = ids.swaps();
  report.shape["styles_without_photos"] = without;
  report.rejects["duplicate_id"] = duplicates;
  report.repaired = broken;
  finish(report, csv);
  return report;
}

FileReport write_skus(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("skus.csv", "skus");
  CsvFile csv(dir / report.file, "id,styleId,size,quantity");
  Rng rng(plan.seed, kSkuStream);
  IdSequence ids(plan.skus, Rng(plan.seed, kSkuStream + 100));
  auto positions =
      draw_positions(rng, plan.skus, {quirk_count(kNegativeQuantityRate, plan.skus, 1)});
  auto& out = csv.out();
  std::uint64_t row = 0, negative = 0, same_size = 0, without = 0;
  for (std::size_t j = 0; j < plan.style_ids.size(); ++j) {
    auto count = plan.sku_counts[j];
    without += count == 0;
    if (count == 0) continue;
    bool shoes = hash3(plan.seed, kSizeHash, j) % 3 == 0;
    std::size_t n_sizes = shoes ? kShoeSizes.size() : kClothingSizes.size();
    auto first = rng.below(n_sizes - std::min<std::size_t>(count, n_sizes) + 1);
    bool repeat_last = count >= 2 && rng.chance(kSameSizeTwiceRate);
    for (unsigned k = 0; k < count; ++k, ++row) {
      auto size_index = first + (repeat_last && k == count - 1u ? k - 1 : k);
      size_index = std::min<std::uint64_t>(size_index, n_sizes - 1);
      out.write_int(static_cast<std::int64_t>(ids.next()));
      out.put(',');
      out.write_int(plan.style_ids[j]);
      out.put(',');
      out.write_quoted(shoes ? kShoeSizes[size_index] : kClothingSizes[size_index]);
      out.put(',');
      if (positions[0].take(row)) {
        out.write_int(-rng.between(1, 9));  // bad_value: a quantity cannot be negative
        ++negative;
      } else {
        out.write_int(rng.between(0, 60));
      }
      csv.end_line();
    }
    same_size += repeat_last;
  }
  report.quirks["negative_quantity"] = negative;
  report.quirks["same_size_twice"] = same_size;
  report.quirks["ids_swapped_pairs"] = ids.swaps();
  report.shape["styles_without_skus"] = without;
  report.rejects["bad_value"] = negative;
  finish(report, csv);
  return report;
}

FileReport write_related(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("related.csv", "related");
  CsvFile csv(dir / report.file, "id,current_product_id,related_product_id");
  Rng rng(plan.seed, kRelatedStream);
  IdSequence ids(plan.related, Rng(plan.seed, kRelatedStream + 100));
  auto positions = draw_positions(
      rng, plan.related,
      {quirk_count(kRelatedZeroRate, plan.related, 2), quirk_count(kSelfLinkRate, plan.related, 2),
       quirk_count(kDuplicatePairRate, plan.related, 2)});
  auto& out = csv.out();
  std::uint64_t row = 0, zeros = 0, self_links = 0, duplicate_pairs = 0;
  std::vector<std::uint32_t> taken;  // this product's related ids so far
  for (std::uint64_t i = 0; i < plan.products; ++i) {
    auto current = plan.product_ids[i];
    taken.clear();
    for (unsigned r = 0; r < plan.related_counts[i]; ++r, ++row) {
      std::uint32_t related = 0;
      bool zero = positions[0].take(row);
      bool self = positions[1].take(row);
      bool duplicate = positions[2].take(row);
      if (zero) {
        ++zeros;  // orphan: product 0 does not exist
      } else if (self) {
        related = current;
        ++self_links;
      } else if (duplicate && !taken.empty()) {
        related = taken[rng.below(taken.size())];
        ++duplicate_pairs;
      } else {
        // A fresh id, neither itself nor one it already relates to, so the counts stay exact.
        do {
          related = static_cast<std::uint32_t>(1 + rng.below(plan.products));
        } while (related == current ||
                 std::find(taken.begin(), taken.end(), related) != taken.end());
      }
      if (related != 0 && related != current) taken.push_back(related);
      out.write_int(static_cast<std::int64_t>(ids.next()));
      out.put(',');
      out.write_int(current);
      out.put(',');
      out.write_int(related);
      csv.end_line();
    }
  }
  report.quirks["related_zero"] = zeros;
  report.quirks["self_link"] = self_links;
  report.quirks["duplicate_pair"] = duplicate_pairs;
  report.quirks["ids_swapped_pairs"] = ids.swaps();
  report.rejects["orphan"] = zeros;
  finish(report, csv);
  return report;
}

FileReport write_cart(const Plan& plan, const std::filesystem::path& dir) {
  auto report = make_report("cart.csv", "cart");
  CsvFile csv(dir / report.file, "id,user_session,product_id,active");
  Rng rng(plan.seed, kCartStream);
  auto& out = csv.out();
  for (std::uint64_t i = 1; i <= plan.cart; ++i) {
    out.write_int(static_cast<std::int64_t>(i));
    out.put(',');
    out.write_int(rng.between(1000, 99999));
    out.put(',');
    out.write_int(static_cast<std::int64_t>(
        1 + rng.below(std::max<std::uint64_t>(plan.skus, 1))));  // a sku id
    out.put(',');
    out.put(rng.chance(0.8) ? '1' : '0');
    csv.end_line();
  }
  finish(report, csv);
  return report;
}

std::string format_counts(const std::map<std::string, std::uint64_t>& counts) {
  std::string s;
  for (const auto& [k, v] : counts) {
    if (!s.empty()) s += ' ';
    s += fmt::format("{}={}", k, v);
  }
  return s.empty() ? "-" : s;
}

std::string json_counts(const std::map<std::string, std::uint64_t>& counts, bool skip_zero) {
  std::string s = "{";
  for (const auto& [k, v] : counts) {
    if (skip_zero && v == 0) continue;
    if (s.size() > 1) s += ", ";
    s += fmt::format("\"{}\": {}", k, v);
  }
  return s + "}";
}

}  // namespace

std::uint64_t FileReport::rejected() const {
  std::uint64_t n = 0;
  for (const auto& [kind, count] : rejects) n += count;
  return n;
}

ExportSummary generate_export(const GeneratorOptions& options) {
  auto start = Clock::now();
  Plan plan = make_plan(options);
  const auto& dir = options.out_dir;

  // Largest first, so two workers finish close together (photos.csv is over half the bytes).
  using Writer = std::function<FileReport(const Plan&, const std::filesystem::path&)>;
  const std::vector<Writer> writers{write_photos,   write_skus,   write_products, write_related,
                                    write_features, write_styles, write_cart};
  std::vector<FileReport> reports(writers.size());
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    for (std::size_t k; (k = next.fetch_add(1)) < writers.size();) {
      try {
        auto t0 = Clock::now();
        reports[k] = writers[k](plan, dir);
        reports[k].seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        std::fprintf(stderr, "catwalk-generate: %-13s %11llu lines %8.1f MB %6.1f s\n",
                     reports[k].file.c_str(), static_cast<unsigned long long>(reports[k].lines),
                     static_cast<double>(reports[k].bytes) / 1e6, reports[k].seconds);
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = writers.size();  // stop handing out work
      }
    }
  };
  {
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < std::max(1u, options.jobs); ++t) threads.emplace_back(worker);
  }
  if (failure) std::rethrow_exception(failure);

  ExportSummary summary;
  summary.options = options;
  summary.products = plan.products;
  const std::array<std::string_view, 7> loader_order{"product.csv", "features.csv", "styles.csv",
                                                     "photos.csv",  "skus.csv",     "related.csv",
                                                     "cart.csv"};
  for (auto name : loader_order) {
    for (auto& r : reports) {
      if (r.file == name) summary.files.push_back(std::move(r));
    }
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return summary;
}

std::string to_json(const ExportSummary& summary) {
  std::string s = fmt::format(
      "{{\n  \"generator\": {{\"scale\": {}, \"seed\": {}, \"products\": {}}},\n"
      "  \"files\": [\n",
      summary.options.scale, summary.options.seed, summary.products);
  for (std::size_t i = 0; i < summary.files.size(); ++i) {
    const auto& f = summary.files[i];
    std::string lines;
    for (auto l : f.copy_unloadable_lines) lines += (lines.empty() ? "" : ", ") + std::to_string(l);
    s += fmt::format(
        "    {{\"file\": \"{}\", \"table\": \"{}\", \"read\": {}, \"loaded\": {}, \"rejected\": "
        "{}, "
        "\"repaired\": {}, \"rejects\": {}, \"bytes\": {},\n"
        "     \"quirks\": {}, \"shape\": {}, \"copy_unloadable_lines\": [{}]}}{}\n",
        f.file, f.table, f.lines, f.loaded, f.rejected(), f.repaired, json_counts(f.rejects, true),
        f.bytes, json_counts(f.quirks, false), json_counts(f.shape, false), lines,
        i + 1 < summary.files.size() ? "," : "");
  }
  return s + "  ]\n}\n";
}

std::string to_table(const ExportSummary& summary) {
  std::string s = fmt::format(
      "export: scale {} seed {}, {} products, written in {:.1f} s with {} jobs -> {}\n\n",
      summary.options.scale, summary.options.seed, summary.products, summary.seconds,
      summary.options.jobs, summary.options.out_dir.string());
  s += fmt::format(
      "{:<13} {:>11} {:>10}  | expected loader outcome: {:>11} {:>11} {:>8} {:>8}  {}\n", "file",
      "lines", "MB", "read", "loaded", "rejected", "repaired", "rejects by kind");
  std::uint64_t lines = 0, bytes = 0, loaded = 0, rejected = 0, repaired = 0;
  for (const auto& f : summary.files) {
    s += fmt::format("{:<13} {:>11} {:>10.1f}  | {:>36} {:>11} {:>8} {:>8}  {}\n", f.file, f.lines,
                     static_cast<double>(f.bytes) / 1e6, f.lines, f.loaded, f.rejected(),
                     f.repaired, format_counts([&] {
                       std::map<std::string, std::uint64_t> nz;
                       for (const auto& [k, v] : f.rejects)
                         if (v != 0) nz[k] = v;
                       return nz;
                     }()));
    lines += f.lines;
    bytes += f.bytes;
    loaded += f.loaded;
    rejected += f.rejected();
    repaired += f.repaired;
  }
  s += fmt::format("{:<13} {:>11} {:>10.1f}  | {:>36} {:>11} {:>8} {:>8}\n\n", "total", lines,
                   static_cast<double>(bytes) / 1e6, lines, loaded, rejected, repaired);
  s += "quirk rows written (each row carries at most one quirk):\n";
  for (const auto& f : summary.files)
    s += fmt::format("  {:<13} {}\n", f.file, format_counts(f.quirks));
  s += "shape:\n";
  for (const auto& f : summary.files) {
    if (!f.shape.empty()) s += fmt::format("  {:<13} {}\n", f.file, format_counts(f.shape));
  }
  s += "lines PostgreSQL COPY ... CSV cannot parse (the baseline loads a copy without them):\n";
  for (const auto& f : summary.files) {
    if (!f.copy_unloadable_lines.empty())
      s += fmt::format("  {:<13} {}\n", f.file, f.copy_unloadable_lines.size());
  }
  return s;
}

}  // namespace catwalk::bench
