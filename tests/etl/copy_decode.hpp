#pragma once
// Test helper: renders COPY binary rows as readable text ("f1\tf2\t...\n", NULL as \N), so
// expectations stay legible. Knows the column types the loader writes.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "catwalk/gzip.hpp"
#include "table_spec.hpp"

namespace catwalk::test {

// kDocument: a product_docs document, shown as JSON whether stored gzipped or as is.
// kSkip: a field left out of the text (product_docs' fingerprints, checked on their own).
enum class Bin { kInt4, kInt8, kBool, kNumeric, kText, kDocument, kSkip };

inline std::vector<Bin> binary_columns(const etl::TableSpec& spec) {
  std::vector<Bin> out;
  for (const auto& c : spec.columns) {
    switch (c.type) {
      case etl::ColumnType::kBigId:
        out.push_back(Bin::kInt8);
        break;
      case etl::ColumnType::kMoney:
      case etl::ColumnType::kMoneyOrNull:
        out.push_back(Bin::kNumeric);
        break;
      case etl::ColumnType::kBool:
        out.push_back(Bin::kBool);
        break;
      case etl::ColumnType::kText:
      case etl::ColumnType::kTextOrNull:
        out.push_back(Bin::kText);
        break;
      default:
        out.push_back(Bin::kInt4);
    }
  }
  out.push_back(Bin::kInt4);  // pos
  return out;
}

// Decodes the rows in `in` from `at` on (no header), until the end or the trailer.
inline std::string decode_rows(const std::string& in, const std::vector<Bin>& types,
                               std::size_t at = 0) {
  auto u8 = [&](std::size_t i) {
    return static_cast<std::uint64_t>(static_cast<unsigned char>(in[i]));
  };
  auto be = [&](std::size_t i, int n) {
    std::uint64_t v = 0;
    for (int k = 0; k < n; ++k) v = (v << 8) | u8(i + k);
    return v;
  };
  std::string out;
  while (at < in.size()) {
    auto fields = be(at, 2);
    at += 2;
    if (fields == 0xFFFF) break;
    REQUIRE(fields == types.size());
    for (std::size_t f = 0; f < fields; ++f) {
      auto len = static_cast<std::int32_t>(be(at, 4));
      at += 4;
      if (types[f] == Bin::kSkip) {
        at += len < 0 ? 0 : static_cast<std::size_t>(len);
        continue;
      }
      out += f ? "\t" : "";
      if (len < 0) {
        out += "\\N";
        continue;
      }
      switch (types[f]) {
        case Bin::kInt4:
          out += std::to_string(be(at, 4));
          break;
        case Bin::kInt8:
          out += std::to_string(be(at, 8));
          break;
        case Bin::kBool:
          out += in[at] ? "t" : "f";
          break;
        case Bin::kText:
          out += in.substr(at, len);
          break;
        case Bin::kSkip:  // handled above
          break;
        case Bin::kDocument: {
          std::string stored = in.substr(at, len), json;
          if (gzip::is_gzip(stored)) {
            REQUIRE(gzip::Inflater().inflate(stored, json));
            out += json;
          } else {
            out += stored;
          }
          break;
        }
        case Bin::kNumeric: {
          auto ndigits = be(at, 2);
          auto weight = static_cast<std::int16_t>(be(at + 2, 2));
          auto dscale = be(at + 6, 2);
          std::string whole, frac;
          for (int w = std::max<int>(weight, 0); w >= 0; --w) {
            std::size_t i = static_cast<std::size_t>(weight - w);
            std::uint64_t g = (weight >= 0 && i < ndigits) ? be(at + 8 + 2 * i, 2) : 0;
            std::string s = std::to_string(g);
            if (!whole.empty()) whole.append(4 - s.size(), '0');
            whole += s;
          }
          for (int i = 0; i * 4 < static_cast<int>(dscale); ++i) {
            int idx = weight + 1 + i;
            std::uint64_t g = (idx >= 0 && static_cast<std::uint64_t>(idx) < ndigits)
                                  ? be(at + 8 + 2 * idx, 2)
                                  : 0;
            std::string s = std::to_string(g);
            frac.append(4 - s.size(), '0');
            frac += s;
          }
          out += whole;
          if (dscale) {
            out.push_back('.');
            out.append(frac, 0, dscale);
          }
          break;
        }
      }
      at += static_cast<std::size_t>(len);
    }
    out += "\n";
  }
  return out;
}

}  // namespace catwalk::test
