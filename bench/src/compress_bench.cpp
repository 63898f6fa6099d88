// Microbenchmark of document compression: gzip::SmallCompressor (our encoder) against
// gzip::Compressor at level 1 (libdeflate), on files of documents, one per line, each compressed
// alone as the loader stores it, in file order through one compressor (as the loader's compressor
// for that kind of document sees them: SmallCompressor learns its code from the ones before).
// Prints CPU time per document (this thread's, so other load on the machine inflates it less than
// wall time) and the total compressed bytes, and checks that every member inflates back to its
// document.
//   catwalk-compress-bench [--rounds N] FILE...
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "catwalk/gzip.hpp"

namespace {

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Result {
  double seconds = 0;  // the best round's
  std::size_t bytes = 0;
};

template <typename Z>
Result run(Z& z, const std::vector<std::string>& docs, int rounds) {
  Result r{1e30, 0};
  std::string out;
  for (int round = 0; round < rounds; ++round) {
    std::size_t bytes = 0;
    double t0 = cpu_seconds();
    for (const auto& d : docs) {
      z.compress(d, out);
      bytes += out.size();
    }
    double dt = cpu_seconds() - t0;
    if (dt < r.seconds) r.seconds = dt;
    r.bytes = bytes;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  std::vector<std::string> files;
  for (int a = 1; a < argc; ++a) {
    std::string arg = argv[a];
    if (arg == "--rounds" && a + 1 < argc) {
      rounds = std::atoi(argv[++a]);
    } else {
      files.push_back(arg);
    }
  }
  if (files.empty() || rounds < 1) {
    std::fprintf(stderr, "usage: catwalk-compress-bench [--rounds N] FILE...\n");
    return 2;
  }
  catwalk::gzip::Compressor libdeflate(1);
  catwalk::gzip::Inflater inflater;
  std::printf("%-24s %8s %10s %12s %12s %10s %10s %7s\n", "file", "docs", "raw B", "libdeflate B",
              "small B", "libd us", "small us", "speedup");
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 1;
    }
    std::vector<std::string> docs;
    std::size_t raw = 0;
    for (std::string line; std::getline(in, line);) {
      raw += line.size();
      docs.push_back(std::move(line));
    }
    if (docs.empty()) continue;
    // A compressor per file, as the loader has one per kind of document.
    catwalk::gzip::SmallCompressor small;
    std::string gz, back;
    for (const auto& d : docs) {
      small.compress(d, gz);
      if (!inflater.inflate(gz, back) || back != d) {
        std::fprintf(stderr, "%s: a document does not survive the round trip\n", f.c_str());
        return 1;
      }
    }
    // Alternate the two so that a change in the machine's load hits both alike.
    Result l{1e30, 0}, s{1e30, 0};
    for (int round = 0; round < rounds; ++round) {
      Result lr = run(libdeflate, docs, 1), sr = run(small, docs, 1);
      if (lr.seconds < l.seconds) l = lr;
      if (sr.seconds < s.seconds) s = sr;
    }
    double n = static_cast<double>(docs.size());
    std::printf("%-24s %8zu %10zu %12zu %12zu %10.2f %10.2f %6.2fx\n", f.c_str(), docs.size(), raw,
                l.bytes, s.bytes, l.seconds / n * 1e6, s.seconds / n * 1e6, l.seconds / s.seconds);
  }
  return 0;
}
