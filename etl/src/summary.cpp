#include "catwalk/etl/summary.hpp"

#include <fmt/format.h>

#include "catwalk/json.hpp"
#include "record.hpp"

namespace catwalk::etl {

namespace {

double rate(std::uint64_t rows, double seconds) { return seconds > 0 ? rows / seconds : 0; }

}  // namespace

std::string render_table(const RunSummary& s) {
  std::string out =
      fmt::format("{:<14} {:<12} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>11}\n", "file", "table",
                  "read", "loaded", "rejected", "repaired", "MB", "seconds", "rows/s");
  FileStats total;
  for (const auto& f : s.files) {
    out += fmt::format("{:<14} {:<12} {:>11} {:>11} {:>9} {:>9} {:>10.1f} {:>8.2f} {:>11.0f}\n",
                       f.file, f.table, f.read, f.loaded, f.rejected, f.repaired, f.bytes / 1e6,
                       f.seconds, rate(f.read, f.seconds));
    total.read += f.read;
    total.loaded += f.loaded;
    total.rejected += f.rejected;
    total.repaired += f.repaired;
    total.bytes += f.bytes;
  }
  for (const auto& p : s.phases) {
    out += fmt::format("{:<27} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8.2f}\n", p.name, "", "", "", "",
                       "", p.seconds);
  }
  out += fmt::format("{:<14} {:<12} {:>11} {:>11} {:>9} {:>9} {:>10.1f} {:>8.2f} {:>11.0f}\n",
                     "total", "", total.read, total.loaded, total.rejected, total.repaired,
                     total.bytes / 1e6, s.seconds, rate(total.read, s.seconds));
  for (const auto& f : s.files) {
    if (f.rejected == 0) continue;
    std::string kinds;
    for (int k = 0; k < kRejectKindCount; ++k) {
      if (f.rejects[k] == 0) continue;
      kinds += fmt::format("{}{} {}", kinds.empty() ? "" : ", ", f.rejects[k],
                           reject_kind_name(static_cast<RejectKind>(k)));
    }
    out += fmt::format("rejected in {}: {}\n", f.file, kinds);
  }
  if (s.cart_rows_kept && *s.cart_rows_kept > 0) {
    out += fmt::format("cart.csv: {} rows whose id was already in the cart were left alone\n",
                       *s.cart_rows_kept);
  }
  if (!s.ok) out += fmt::format("FAILED: {}\n", printable_text(s.error));
  return out;
}

std::string render_json(const RunSummary& s) {
  std::string out = fmt::format("{{\"ok\": {}, ", s.ok ? "true" : "false");
  if (!s.ok)
    out += fmt::format("\"error\": {}, \"exit_code\": {}, ", json_string(printable_text(s.error)),
                       s.exit_code);
  out += fmt::format("\"seconds\": {:.3f}, \"files\": [", s.seconds);
  for (std::size_t i = 0; i < s.files.size(); ++i) {
    const auto& f = s.files[i];
    std::string kinds;
    for (int k = 0; k < kRejectKindCount; ++k) {
      if (f.rejects[k] == 0) continue;
      kinds += fmt::format("{}\"{}\": {}", kinds.empty() ? "" : ", ",
                           reject_kind_name(static_cast<RejectKind>(k)), f.rejects[k]);
    }
    out += fmt::format(
        "{}{{\"file\": {}, \"table\": {}, \"read\": {}, \"loaded\": {}, \"rejected\": {}, "
        "\"repaired\": {}, \"rejects\": {{{}}}, \"bytes\": {}, \"seconds\": {:.3f}}}",
        i ? ", " : "", json_string(f.file), json_string(f.table), f.read, f.loaded, f.rejected,
        f.repaired, kinds, f.bytes, f.seconds);
  }
  out += "]";
  if (!s.phases.empty()) {
    out += ", \"phases\": [";
    for (std::size_t i = 0; i < s.phases.size(); ++i) {
      out += fmt::format("{}{{\"name\": {}, \"seconds\": {:.3f}}}", i ? ", " : "",
                         json_string(s.phases[i].name), s.phases[i].seconds);
    }
    out += "]";
  }
  if (s.cart_rows_kept) out += fmt::format(", \"cart_rows_kept\": {}", *s.cart_rows_kept);
  out += "}\n";
  return out;
}

}  // namespace catwalk::etl
