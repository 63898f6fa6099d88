// catwalk-generate: writes a synthetic catalogue export and the loader outcome it expects.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>

#include "catwalk/version.hpp"
#include "export_generator.hpp"

namespace {
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitIo = 3;
}  // namespace

int main(int argc, char** argv) {
  catwalk::bench::GeneratorOptions options;
  CLI::App app{"Writes product.csv ... cart.csv shaped like the real export, plus expected.json"};
  app.set_version_flag("--version", "catwalk-generate " + std::string(catwalk::kVersionText));
  app.add_option("--scale", options.scale, "1.0 = the full export (1,000,011 products)")
      ->check(CLI::Range(0.0001, 10.0));
  app.add_option("--seed", options.seed, "same seed and scale, same bytes");
  app.add_option("--jobs", options.jobs, "files written concurrently")->check(CLI::Range(1u, 16u));
  app.add_option("OUT_DIR", options.out_dir, "created if missing")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  try {
    std::filesystem::create_directories(options.out_dir);
    auto summary = catwalk::bench::generate_export(options);
    std::ofstream json(options.out_dir / "expected.json");
    json << catwalk::bench::to_json(summary);
    json.close();
    if (!json)
      throw std::runtime_error("cannot write " + (options.out_dir / "expected.json").string());
    std::fputs(catwalk::bench::to_table(summary).c_str(), stdout);
    std::printf("expected loader outcome written to %s\n",
                (options.out_dir / "expected.json").c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "catwalk-generate: %s\n", e.what());
    return kExitIo;
  }
  return kExitOk;
}
