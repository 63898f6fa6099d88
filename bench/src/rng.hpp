// Fixed pseudo-random generators for the export generator.
// std::uniform_*_distribution is implementation-defined and differs between libstdc++ versions;
// these are specified bit for bit, so a seed gives the same export on every machine.
#pragma once

#include <cstdint>

namespace catwalk::bench {

// SplitMix64 (Steele, Lea, Flood 2014): used to seed and as a stateless hash.
constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Stateless: a value derived from (seed, stream, index). Lets two threads compute the same
// per-product attribute (price, default style) without sharing a generator.
constexpr std::uint64_t hash3(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  return splitmix64(splitmix64(seed ^ splitmix64(stream)) ^ index);
}

// xoshiro256** 1.0 (Blackman, Vigna): fast, good quality, 256-bit state.
class Rng {
 public:
  Rng(std::uint64_t seed, std::uint64_t stream) {
    std::uint64_t x = seed ^ splitmix64(stream + 0x51ed2701ULL);
    for (auto& word : s_) {
      x = splitmix64(x);
      word = x;
    }
  }

  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // In [0, n). Lemire's multiply-shift; the bias (< n / 2^64) is irrelevant here and the
  // result is fully determined by the state, which is what matters.
  std::uint64_t below(std::uint64_t n) {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

  // In [lo, hi].
  std::int64_t between(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(hi - lo + 1)));
  }

  // True with probability p.
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

}  // namespace catwalk::bench
