// SmallCompressor: our own DEFLATE (RFC 1951) encoder in a gzip member (RFC 1952), for the short
// documents the loader stores (see catwalk/gzip.hpp). Written from the RFCs alone.
//
// Why it is faster than libdeflate level 1 on a 400-2,000 byte document: it does the least per
// call. One dynamic-Huffman block, always (no choice between block types to evaluate, except
// a stored block when the data does not compress at all); greedy matching with one candidate per
// hash slot; a hash table that is never cleared (positions are stored offset by a base that grows
// with every document, so entries of earlier documents are simply below the base); no
// allocation per call. The cost is a few percent of size against libdeflate's level 1.
//
// After the first document, documents skip even the Huffman construction and the header: they
// are written in one pass with a semi-static code (Model), learnt from the documents before,
// whose header is computed once per rebuild and copied into each member. Its code lengths are
// chosen for the header's size as much as for the symbols' (header_aware_lengths): with
// Huffman's lengths the shared header listed every symbol the kind uses in about 74 bytes, a
// detail document's own 48, which made a 400-byte document 11 % larger; with these the learnt
// code's header is 45 bytes, and the detail documents are 2.5-2.7 % larger than with their own
// codes, at a third of the time (bench/README.md, "A learnt code for every document").

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "catwalk/gzip.hpp"

namespace catwalk::gzip {

namespace {

// 2^14 slots (64 KiB): against 2^13, 3 % faster on both kinds of document (fewer collisions,
// so more matches and fewer literals to write) and a few hundred bytes smaller per 20,000; 2^15
// measured the same as 2^14, 2^12 and 2^11 slower (bench/README.md, round (4)).
constexpr int kHashBits = 14;
constexpr std::uint32_t kWindow = 32768;
constexpr std::size_t kMinMatch = 4;
constexpr std::size_t kMaxMatch = 258;
constexpr int kNumLitLen = 286;  // 0-255 literals, 256 end of block, 257-285 lengths
constexpr int kNumDist = 30;
constexpr int kNumCodeLen = 19;
constexpr int kEndOfBlock = 256;
// The learnt code is rebuilt after 1, 2, 4, ... documents, then every kRebuildEvery; and
// kRebuildAfterMiss documents after one with a symbol it lacks.
constexpr std::uint32_t kRebuildEvery = 16384;
constexpr std::uint32_t kRebuildAfterMiss = 32;
// The base is reset (and the table cleared) before it could overflow.
constexpr std::uint32_t kBaseLimit = 0xFFFFFFFFu - 2 * (SmallCompressor::kMaxInput + 1);

// RFC 1951 3.2.5: length codes 257-285 and distance codes 0-29, base and extra bits.
constexpr std::array<std::uint16_t, 29> kLenBase = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                                    15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                                    67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr std::array<std::uint8_t, 29> kLenExtra = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                    2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr std::array<std::uint16_t, 30> kDistBase = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr std::array<std::uint8_t, 30> kDistExtra = {0, 0, 0,  0,  1,  1,  2,  2,  3,  3,
                                                     4, 4, 5,  5,  6,  6,  7,  7,  8,  8,
                                                     9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
// RFC 1951 3.2.7: the order in which the code-length code's lengths are sent.
constexpr std::array<std::uint8_t, kNumCodeLen> kCodeLenOrder = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                                 11, 4,  12, 3, 13, 2, 14, 1, 15};

// Symbol lookups: length -> length code (0-28), distance -> distance code. Distances above 256
// have codes whose ranges start at 128k + 1, so (d - 1) >> 7 indexes them.
struct Tables {
  std::array<std::uint8_t, kMaxMatch + 1> len_code{};
  std::array<std::uint8_t, 256> dist_small{};  // by d - 1, d <= 256
  std::array<std::uint8_t, 256> dist_large{};  // by (d - 1) >> 7, d > 256
  std::array<std::uint8_t, 256> reverse8{};
  constexpr Tables() {
    for (int c = 0; c < 29; ++c) {
      for (int l = kLenBase[c]; l < kLenBase[c] + (1 << kLenExtra[c]) && l <= 258; ++l) {
        len_code[l] = static_cast<std::uint8_t>(c);
      }
    }
    len_code[258] = 28;  // 258 also lies in code 27's range; RFC 1951 gives it code 285
    // Codes 16 and up span multiples of 128 distances: one table entry per 128 (which also keeps
    // the constant evaluation within compilers' step limits).
    for (int c = 0; c < 30; ++c) {
      const int first = kDistBase[c];
      const int end = first + (1 << kDistExtra[c]);
      if (c < 16) {
        for (int d = first; d < end; ++d) dist_small[d - 1] = static_cast<std::uint8_t>(c);
      } else {
        for (int d = first; d < end; d += 128)
          dist_large[(d - 1) >> 7] = static_cast<std::uint8_t>(c);
      }
    }
    for (int b = 0; b < 256; ++b) {
      int r = 0;
      for (int k = 0; k < 8; ++k) r |= ((b >> k) & 1) << (7 - k);
      reverse8[b] = static_cast<std::uint8_t>(r);
    }
  }
};
constexpr Tables kTables;

std::uint32_t dist_code(std::uint32_t d) {
  return d <= 256 ? kTables.dist_small[d - 1] : kTables.dist_large[(d - 1) >> 7];
}

std::uint32_t load32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

std::uint64_t load64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// How many bytes a and b have in common from the start, at least kMinMatch (known equal) and at
// most max.
std::size_t match_length(const unsigned char* a, const unsigned char* b, std::size_t max) {
  std::size_t len = kMinMatch;
  for (; len + 8 <= max; len += 8) {
    const std::uint64_t diff = load64(a + len) ^ load64(b + len);
    if (diff != 0) {
      if constexpr (std::endian::native == std::endian::little) {
        return len + (static_cast<std::size_t>(std::countr_zero(diff)) >> 3);
      } else {
        return len + (static_cast<std::size_t>(std::countl_zero(diff)) >> 3);
      }
    }
  }
  while (len < max && a[len] == b[len]) ++len;
  return len;
}

std::uint32_t hash4(std::uint32_t v) { return (v * 0x9E3779B1u) >> (32 - kHashBits); }

void store_le32(unsigned char* p, std::uint32_t v) {
  for (int k = 0; k < 4; ++k) p[k] = static_cast<unsigned char>(v >> (8 * k));
}

// Writes bits from the least significant end (RFC 1951 3.1.1). The caller flushes after at most
// 56 bits of puts; `p` must have 8 bytes of room past the last byte written.
class BitWriter {
 public:
  explicit BitWriter(unsigned char* p) : p_(p) {}
  // Continues after `bits` bits already at p (the last, partial byte's unused high bits zero).
  BitWriter(unsigned char* p, std::size_t bits)
      : p_(p + bits / 8), buf_(bits % 8 != 0 ? p[bits / 8] : 0), n_(bits % 8) {}
  void put(std::uint64_t bits, unsigned count) {
    buf_ |= bits << n_;
    n_ += count;
  }
  void flush() {
    store();
    p_ += n_ >> 3;
    buf_ >>= n_ & ~7u;  // n_ < 64 here
    n_ &= 7;
  }
  // Bits written since `origin` (the p given to the constructor of a fresh writer).
  std::size_t bits_since(const unsigned char* origin) const {
    return static_cast<std::size_t>(p_ - origin) * 8 + n_;
  }
  // Flushes with the last byte padded with zero bits; returns the end of the output.
  unsigned char* finish() {
    store();
    return p_ + ((n_ + 7) >> 3);
  }

 private:
  void store() {
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(p_, &buf_, 8);
    } else {
      for (int k = 0; k < 8; ++k) p_[k] = static_cast<unsigned char>(buf_ >> (8 * k));
    }
  }
  unsigned char* p_;
  std::uint64_t buf_ = 0;
  unsigned n_ = 0;
};

// Writes `in` as one final stored block (RFC 1951 3.2.4; n <= 65535) at p; returns its end.
unsigned char* stored_block(const unsigned char* in, std::size_t n, unsigned char* p) {
  *p++ = 1;  // BFINAL, BTYPE 00, padded to the byte
  const auto len = static_cast<std::uint16_t>(n);
  const auto nlen = static_cast<std::uint16_t>(~len);
  *p++ = static_cast<unsigned char>(len);
  *p++ = static_cast<unsigned char>(len >> 8);
  *p++ = static_cast<unsigned char>(nlen);
  *p++ = static_cast<unsigned char>(nlen >> 8);
  if (n != 0) std::memcpy(p, in, n);
  return p + n;
}

// Below this many bytes a document is stored, not compressed: the gzip framing (18 bytes) and a
// dynamic block's header (20 bytes or more) leave almost no document shorter than its text, and
// the loader stores whichever of the two is shorter anyway.
constexpr std::size_t kStoreBelow = 64;

// One sequence item: a literal byte (< 2^16), or a match: distance << 16 | length.
constexpr std::uint32_t kMatchFlag = 1u << 16;

// A length-limited canonical Huffman code for the frequencies freq[0..n): lens[0..n) as
// detail::limited_code_lengths says, and codes[s] for each symbol s with a length (others are
// left as they were): canonical codes (RFC 1951 3.2.2), bit-reversed, because DEFLATE sends a
// code from its most significant bit and the writer fills bytes from their least significant.
void build_code(const std::uint32_t* freq, int n, int max_len, std::uint8_t* lens,
                std::uint16_t* codes) {
  // The used symbols in symbol order (for the canonical codes), and sorted by frequency,
  // ascending: frequency << 9 | symbol (n <= 286 < 512; a frequency is at most kMaxInput + 1 <
  // 2^23).
  std::array<std::uint16_t, kNumLitLen> used;
  int m = 0;
  std::memset(lens, 0, static_cast<std::size_t>(n));
  // The used symbols from a bit mask of the non-zero frequencies, 64 at a time: a loop appending
  // each symbol conditionally is one long dependency chain through m (9 % of a detail document's
  // time), while most of the 286 literal/length symbols are unused.
  for (int base = 0; base < n; base += 64) {
    const int count = std::min(64, n - base);
    std::uint64_t mask = 0;
    int j = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; j + 4 <= count; j += 4) {
      __m128i f;
      std::memcpy(&f, freq + base + j, sizeof f);
      const auto is_zero =
          static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(f, zero))));
      mask |= static_cast<std::uint64_t>(~is_zero & 15u) << j;
    }
#endif
    for (; j < count; ++j) mask |= static_cast<std::uint64_t>(freq[base + j] != 0) << j;
    for (; mask != 0; mask &= mask - 1) {
      used[m++] = static_cast<std::uint16_t>(base + std::countr_zero(mask));
    }
  }
  // A code of one codeword is incomplete, which inflaters accept only in some cases (zlib, for
  // distances): give unused symbols a codeword too, so that two have length 1 and the code is
  // complete.
  if (m < 2) {
    for (int i = 0; m < 2 && i < n; ++i) {
      if (freq[i] == 0) used[m++] = static_cast<std::uint16_t>(i);
    }
    std::sort(used.begin(), used.begin() + m);
  }
  // Sorted by frequency, ties in symbol order: a stable radix sort of the used symbols, 8 bits of
  // frequency per pass (one pass unless a frequency reaches 256). It is branch-free, unlike a
  // comparison sort, whose mispredicted branches cost more than the rest of a small document.
  std::uint32_t all_bits = 0;
  for (int k = 0; k < m; ++k) all_bits |= freq[used[k]];
  std::array<std::uint16_t, kNumLitLen> order = used;
  std::array<std::uint16_t, kNumLitLen> scratch;
  for (int shift = 0; shift < 24 && (shift == 0 || (all_bits >> shift) != 0); shift += 8) {
    // Only as many buckets as this pass's digits need (all_bits bounds them): the prefix sum is
    // a serial chain, and 256 buckets for a document whose frequencies stay below 64 was the
    // largest single cost of the code's construction. Two histograms, even and odd positions,
    // halve the chains of increments to one bucket (many symbols share a frequency).
    const int digit_bits = std::min(8, static_cast<int>(std::bit_width(all_bits >> shift)));
    const int buckets = 1 << digit_bits;
    std::array<std::uint16_t, 257> start;
    std::array<std::uint16_t, 256> odd;
    std::fill_n(start.begin(), buckets + 1, 0);
    std::fill_n(odd.begin(), buckets, 0);
    int k = 0;
    for (; k + 2 <= m; k += 2) {
      ++start[((freq[order[k]] >> shift) & 0xFF) + 1];
      ++odd[(freq[order[k + 1]] >> shift) & 0xFF];
    }
    if (k < m) ++start[((freq[order[k]] >> shift) & 0xFF) + 1];
    for (int d = 1; d <= buckets; ++d) start[d] += start[d - 1] + odd[d - 1];
    for (k = 0; k < m; ++k) scratch[start[(freq[order[k]] >> shift) & 0xFF]++] = order[k];
    std::copy_n(scratch.begin(), m, order.begin());
  }
  std::array<std::uint32_t, kNumLitLen> sorted;  // frequency << 9 | symbol
  for (int k = 0; k < m; ++k) sorted[k] = freq[order[k]] << 9 | order[k];

  // Huffman's algorithm with two queues: the leaves in ascending order of weight, and the
  // internal nodes, which are created in ascending order of weight too; the lighter head is taken
  // (the leaf on a tie), without a branch: each queue ends in a weight no real one reaches.
  // parent[] numbers the leaves 0..m-1 and the internal nodes m..2m-2, the root last.
  std::array<std::uint32_t, kNumLitLen + 1> leaf_weight;
  std::array<std::uint32_t, kNumLitLen> node_weight;
  std::array<std::uint16_t, 2 * kNumLitLen> parent;
  constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  for (int k = 0; k < m; ++k) leaf_weight[k] = sorted[k] >> 9;
  leaf_weight[m] = kNone;
  int leaf = 0, node = 0;
  for (int j = 0; j < m - 1; ++j) {
    node_weight[j] = kNone;  // not made yet
    std::uint32_t sum = 0;
    for (int t = 0; t < 2; ++t) {
      const bool take_leaf = leaf_weight[leaf] <= node_weight[node];
      sum += take_leaf ? leaf_weight[leaf] : node_weight[node];
      parent[take_leaf ? leaf : m + node] = static_cast<std::uint16_t>(m + j);
      leaf += take_leaf;
      node += !take_leaf;
    }
    node_weight[j] = sum;
  }
  // Depths: a parent always has a higher index than its children, the root the highest.
  std::array<std::uint16_t, 2 * kNumLitLen> depth;
  depth[2 * m - 2] = 0;
  for (int k = 2 * m - 3; k >= 0; --k) depth[k] = depth[parent[k]] + 1;

  // How many leaves at each length, the deeper ones counted at max_len for now.
  // Four histograms in turn: neighbouring leaves mostly share a depth, and one histogram would
  // make each increment wait for the last.
  std::array<std::array<int, 16>, 4> counts{};
  for (int k = 0; k < m; ++k) ++counts[k & 3][std::min<int>(depth[k], max_len)];
  std::array<int, 16> count;
  for (int l = 0; l < 16; ++l) count[l] = counts[0][l] + counts[1][l] + counts[2][l] + counts[3][l];
  // Kraft's inequality, scaled by 2^max_len: a complete code has sum(count[l] << (max_len - l))
  // == 2^max_len. Clamping made the sum too large: move leaves one level deeper, each time from
  // the deepest level below max_len (the smallest step, and a rarely used symbol's), until it
  // fits; that may leave it too small, which the second loop fills by moving the deepest leaves
  // one level up (each step is the smallest unit of the sum, so it ends exactly at 2^max_len).
  const std::uint32_t full = 1u << max_len;
  std::uint32_t kraft = 0;
  for (int l = 1; l <= max_len; ++l) kraft += static_cast<std::uint32_t>(count[l]) << (max_len - l);
  while (kraft > full) {
    int l = max_len - 1;
    while (count[l] == 0) --l;
    --count[l];
    ++count[l + 1];
    kraft -= 1u << (max_len - l - 1);
  }
  while (kraft < full) {
    int l = max_len;
    while (count[l] == 0) --l;
    --count[l];
    ++count[l - 1];
    kraft += 1u << (max_len - l);
  }
  // The rarest symbols get the longest codes.
  int k = 0;
  for (int l = max_len; l >= 1; --l) {
    for (int c = count[l]; c > 0; --c) lens[sorted[k++] & 511] = static_cast<std::uint8_t>(l);
  }
  std::array<std::uint16_t, 16> next{};
  std::uint32_t code = 0;
  for (int bits = 1; bits <= max_len; ++bits) {
    code = (code + static_cast<std::uint32_t>(count[bits - 1])) << 1;
    next[bits] = static_cast<std::uint16_t>(code);
  }
  for (k = 0; k < m; ++k) {
    const int s = used[k];
    const int len = lens[s];
    const std::uint32_t c = next[len]++;
    const std::uint32_t r = static_cast<std::uint32_t>(kTables.reverse8[c & 0xFF]) << 8 |
                            kTables.reverse8[(c >> 8) & 0xFF];
    codes[s] = static_cast<std::uint16_t>(r >> (16 - len));
  }
}

}  // namespace

namespace detail {

void limited_code_lengths(const std::uint32_t* freq, int n, int max_len, std::uint8_t* lens) {
  std::array<std::uint16_t, kNumLitLen> codes;
  build_code(freq, n, max_len, lens, codes.data());
}

}  // namespace detail

namespace {

// A block's two codes: each symbol's length (0: no codeword) and its codeword, bit-reversed.
struct BlockCode {
  std::array<std::uint8_t, kNumLitLen> lit_len;
  std::array<std::uint16_t, kNumLitLen> lit_code;
  std::array<std::uint8_t, kNumDist> dist_len;
  std::array<std::uint16_t, kNumDist> dist_code;
};

void build_block_code(const std::uint32_t* lit_freq, const std::uint32_t* dist_freq, BlockCode& c) {
  build_code(lit_freq, kNumLitLen, 15, c.lit_len.data(), c.lit_code.data());
  build_code(dist_freq, kNumDist, 15, c.dist_len.data(), c.dist_code.data());
}

// Writes a final dynamic block's header for `c` (RFC 1951 3.2.7): BFINAL, BTYPE, and the two
// codes' lengths, themselves Huffman coded. With `cl_lens`, also sets cl_lens[0..19) to the
// code-length code's lengths (what each symbol of the header cost: header_aware_lengths's input).
void write_header(const BlockCode& c, BitWriter& w, std::uint8_t* cl_lens = nullptr) {
  int hlit = kNumLitLen;
  while (hlit > 257 && c.lit_len[hlit - 1] == 0) --hlit;
  int hdist = kNumDist;
  while (hdist > 1 && c.dist_len[hdist - 1] == 0) --hdist;
  // Both length lists as one sequence (a repeat may run from one into the other), run-length
  // coded: 16 = the previous length 3-6 times, 17 = 3-10 zeros, 18 = 11-138 zeros. Each entry:
  // symbol | extra bits << 5.
  // 8 bytes of room past the end: runs are measured a word at a time, up to a sentinel.
  std::array<std::uint8_t, kNumLitLen + kNumDist + 8> lens;
  std::copy_n(c.lit_len.begin(), hlit, lens.begin());
  std::copy_n(c.dist_len.begin(), hdist, lens.begin() + hlit);
  const int total = hlit + hdist;
  std::memset(lens.data() + total, 0xFF, 8);  // no length is 255
  std::array<std::uint16_t, kNumLitLen + kNumDist> rle;
  int rle_count = 0;
  std::array<std::uint32_t, kNumCodeLen> cl_freq{};
  auto emit = [&](int sym, int extra) {
    rle[rle_count++] = static_cast<std::uint16_t>(sym | extra << 5);
    ++cl_freq[sym];
  };
  for (int k = 0; k < total;) {
    const int v = lens[k];
    // The run's length: the first byte that differs from v, 8 at a time (a byte-wise loop
    // mispredicted at the end of each of the header's many short runs).
    const std::uint64_t pattern = 0x0101010101010101ull * static_cast<std::uint64_t>(v);
    int run = 1;
    for (;;) {
      const std::uint64_t diff = load64(lens.data() + k + run) ^ pattern;
      if (diff != 0) {
        if constexpr (std::endian::native == std::endian::little) {
          run += std::countr_zero(diff) >> 3;
        } else {
          run += std::countl_zero(diff) >> 3;
        }
        break;
      }
      run += 8;
    }
    k += run;
    if (v == 0) {
      for (; run >= 11; run -= std::min(run, 138)) emit(18, std::min(run, 138) - 11);
      if (run >= 3) {
        emit(17, run - 3);
        run = 0;
      }
      for (; run > 0; --run) emit(0, 0);
    } else {
      emit(v, 0);
      --run;
      for (; run >= 3; run -= std::min(run, 6)) emit(16, std::min(run, 6) - 3);
      for (; run > 0; --run) emit(v, 0);
    }
  }
  std::array<std::uint8_t, kNumCodeLen> cl_len;
  std::array<std::uint16_t, kNumCodeLen> cl_code;
  build_code(cl_freq.data(), kNumCodeLen, 7, cl_len.data(), cl_code.data());
  if (cl_lens != nullptr) std::copy_n(cl_len.begin(), kNumCodeLen, cl_lens);
  int hclen = kNumCodeLen;
  while (hclen > 4 && cl_len[kCodeLenOrder[hclen - 1]] == 0) --hclen;

  w.put(1, 1);  // BFINAL
  w.put(2, 2);  // BTYPE 10: dynamic Huffman codes
  w.put(static_cast<unsigned>(hlit - 257), 5);
  w.put(static_cast<unsigned>(hdist - 1), 5);
  w.put(static_cast<unsigned>(hclen - 4), 4);
  w.flush();
  for (int k = 0; k < hclen; ++k) {
    w.put(cl_len[kCodeLenOrder[k]], 3);
    w.flush();
  }
  static constexpr std::array<std::uint8_t, 19> kRepeatBits = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                               0, 0, 0, 0, 0, 0, 2, 3, 7};
  for (int k = 0; k < rle_count; ++k) {
    const int sym = rle[k] & 31;
    w.put(cl_code[sym] | static_cast<std::uint64_t>(rle[k] >> 5) << cl_len[sym],
          cl_len[sym] + kRepeatBits[sym]);
    w.flush();
  }
}

// Greedy LZ77 over in[0..n): calls lit(byte) or match(length, distance) for each item, in
// order. Positions go into `table` as base + position; entries below base are of earlier
// documents and never taken.
template <typename Lit, typename Match>
void parse(std::uint32_t* table, std::uint32_t base, const unsigned char* in, std::size_t n,
           Lit&& lit, Match&& match) {
  std::size_t i = 0;
  if (n >= kMinMatch) {
    const std::size_t last = n - kMinMatch;  // the last position 4 bytes can be read from
    while (i <= last) {
      const std::uint32_t cur = load32(in + i);
      std::uint32_t& slot = table[hash4(cur)];
      const std::uint32_t cand = slot;
      slot = base + static_cast<std::uint32_t>(i);
      const std::size_t ref = cand - base;
      if (cand >= base && i - ref <= kWindow && load32(in + ref) == cur) {
        const std::size_t len = match_length(in + ref, in + i, std::min(kMaxMatch, n - i));
        match(static_cast<std::uint32_t>(len), static_cast<std::uint32_t>(i - ref));
        // Later matches may start inside this one (JSON repeats its keys and their quotes), but
        // only near its start: entering every position of a long match costs 20 % of the time
        // on the styles documents and, by pushing older and longer candidates out of their
        // slots, even makes the output larger (measured: first 8 positions 1,092,659 bytes, all
        // 1,099,622, none 1,099,244 on 2,000 styles documents).
        const std::size_t end = i + len;
        const std::size_t insert_end = std::min({end, last + 1, i + 9});
        for (std::size_t j = i + 1; j < insert_end; ++j) {
          table[hash4(load32(in + j))] = base + static_cast<std::uint32_t>(j);
        }
        i = end;
      } else {
        lit(in[i]);
        ++i;
      }
    }
  }
  for (; i < n; ++i) lit(in[i]);
}

// The largest header write_header writes: 17 bits, 19 x 3 bits, and at most 316 lengths of at
// most 7 + 7 bits each (4,498 bits), plus the writer's 8 bytes of room.
constexpr std::size_t kHeaderRoom = 576 + 8;

// Writes a match of `len` bytes at distance `dist` with code `c` (RFC 1951 3.2.5); returns its
// length symbol (257-285) and distance symbol, for the callers' frequencies.
inline std::pair<std::uint32_t, std::uint32_t> put_match(BitWriter& w, const BlockCode& c,
                                                         std::uint32_t len, std::uint32_t dist) {
  const std::uint32_t lc = kTables.len_code[len];
  w.put(c.lit_code[257 + lc], c.lit_len[257 + lc]);
  w.put(len - kLenBase[lc], kLenExtra[lc]);
  const std::uint32_t dc = dist_code(dist);
  w.put(c.dist_code[dc], c.dist_len[dc]);
  w.put(dist - kDistBase[dc], kDistExtra[dc]);
  return {257 + lc, dc};
}

// Canonical codes (RFC 1951 3.2.2), bit-reversed as build_code makes them, for given lengths.
void canonical_codes(const std::uint8_t* lens, int n, std::uint16_t* codes) {
  std::array<int, 16> count{};
  for (int k = 0; k < n; ++k) ++count[lens[k]];
  count[0] = 0;
  std::array<std::uint16_t, 16> next{};
  std::uint32_t code = 0;
  for (int bits = 1; bits <= 15; ++bits) {
    code = (code + static_cast<std::uint32_t>(count[bits - 1])) << 1;
    next[bits] = static_cast<std::uint16_t>(code);
  }
  for (int s = 0; s < n; ++s) {
    const int len = lens[s];
    if (len == 0) continue;
    const std::uint32_t c = next[len]++;
    const std::uint32_t r = static_cast<std::uint32_t>(kTables.reverse8[c & 0xFF]) << 8 |
                            kTables.reverse8[(c >> 8) & 0xFF];
    codes[s] = static_cast<std::uint16_t>(r >> (16 - len));
  }
}

// Code lengths for a code whose header goes out with every document (the learnt code): they
// minimise the header's bits plus the expected bits of one document's symbols, where Huffman's
// lengths minimise the symbols' bits alone. A header lists the lengths run-length coded, so
// lengths in long runs of one value cost little to send: on the detail documents (about 400
// bytes) Huffman's learnt code has a 591-bit header against 386 bits for a document's own code
// (it lists every symbol the kind uses), which made them 11.4 % larger; these lengths give a
// 364-bit header for the same symbols (bench/README.md, "A learnt code for every document").
//
// A dynamic programme over the symbols in order, with what write_header would emit for each run
// as the cost of the run (cl_bits: each code-length symbol's bits in the header, extra bits
// added here), and the Kraft sum priced at `lambda` bits per unit (a Lagrangian relaxation: the
// caller searches lambda for a sum of at most 1). Symbols with freq 0 may take a length too, when
// that extends a run more cheaply than a run of zeros would break it (they then need no fallback).
// freq: expected occurrences per document. Sets lens[0..n), returns the Kraft sum in units of
// 2^-15. `back` is scratch (n x kDpStates).
constexpr int kDpZeroStates = 11;  // runs of zeros: 1, 2, 3, ..., 10, 11 or more
constexpr int kDpRunStates = 7;  // runs of a length v: v sent, then m repeats with m % 6 = 1..5, 0
constexpr int kDpStates = kDpZeroStates + 15 * kDpRunStates;
std::uint32_t lengths_for_lambda(const float* freq, int n, const float* cl_bits, float lambda,
                                 std::uint8_t* back, std::uint8_t* lens) {
  constexpr float kInf = 1e30f;
  std::array<float, kDpStates> cur, nxt;
  std::array<float, 16> kraft_price;
  for (int v = 1; v <= 15; ++v) kraft_price[v] = lambda * std::ldexp(1.0f, -v);
  const float c0 = cl_bits[0];
  const float c16 = cl_bits[16] + 2, c17 = cl_bits[17] + 3, c18 = cl_bits[18] + 7;
  cur.fill(kInf);
  for (int i = 0; i < n; ++i) {
    std::uint8_t* from = back + static_cast<std::size_t>(i) * kDpStates;
    // A new run may follow any state (the one before it ends there); the first has no previous.
    float best = i == 0 ? 0.0f : kInf;
    int best_state = 0;
    for (int st = 0; st < kDpStates; ++st) {
      if (cur[st] < best) {
        best = cur[st];
        best_state = st;
      }
    }
    auto set = [&](int st, float value, int prev) {
      nxt[st] = value;
      from[st] = static_cast<std::uint8_t>(prev);
    };
    if (freq[i] == 0) {
      // Zeros: 0, 0, then 17 (3-10, 3 extra bits), then 18 (11-138, 7 extra bits; longer runs
      // are rare enough to price as one).
      set(0, best + c0, best_state);
      set(1, cur[0] + c0, 0);
      set(2, cur[1] + c17 - 2 * c0, 1);
      for (int z = 3; z < 10; ++z) set(z, cur[z - 1], z - 1);
      if (cur[9] + c18 - c17 < cur[10]) {
        set(10, cur[9] + c18 - c17, 9);
      } else {
        set(10, cur[10], 10);
      }
    } else {
      for (int z = 0; z < kDpZeroStates; ++z) set(z, kInf, 0);
    }
    for (int v = 1; v <= 15; ++v) {
      const int b = kDpZeroStates + (v - 1) * kDpRunStates;
      const float sym = freq[i] * static_cast<float>(v) + kraft_price[v];
      const float cv = cl_bits[v];
      // write_header: v, then 16 (3-6 repeats, 2 extra bits) while 3 or more are left, then v.
      set(b, best + cv + sym, best_state);
      if (cur[b] <= cur[b + 6]) {
        set(b + 1, cur[b] + cv + sym, b);
      } else {
        set(b + 1, cur[b + 6] + cv + sym, b + 6);
      }
      set(b + 2, cur[b + 1] + cv + sym, b + 1);
      set(b + 3, cur[b + 2] + c16 - 2 * cv + sym, b + 2);
      set(b + 4, cur[b + 3] + sym, b + 3);
      set(b + 5, cur[b + 4] + sym, b + 4);
      set(b + 6, cur[b + 5] + sym, b + 5);
    }
    cur = nxt;
  }
  int st = 0;
  for (int k = 1; k < kDpStates; ++k) {
    if (cur[k] < cur[st]) st = k;
  }
  std::uint32_t kraft = 0;
  for (int i = n - 1; i >= 0; --i) {
    const int v = st < kDpZeroStates ? 0 : (st - kDpZeroStates) / kDpRunStates + 1;
    lens[i] = static_cast<std::uint8_t>(v);
    if (v != 0) kraft += 1u << (15 - v);
    st = back[static_cast<std::size_t>(i) * kDpStates + st];
  }
  return kraft;
}

// The lengths of header-aware lengths' programme for the smallest lambda (searched from `lambda`,
// which is updated) whose Kraft sum is at most 1, then made complete by shortening codewords.
// False when that gives no valid code (fewer than two codewords, or no way to fill the sum):
// the caller then takes Huffman's lengths.
bool header_aware_lengths(const float* freq, int n, const float* cl_bits, float& lambda,
                          std::uint8_t* lens) {
  constexpr std::uint32_t kFull = 1u << 15;
  std::vector<std::uint8_t> back(static_cast<std::size_t>(n) * kDpStates);
  std::array<std::uint8_t, kNumLitLen> trial;
  // A bracket around the last search's lambda (the code changes little between rebuilds), then
  // bisection: each step is one pass of the programme.
  float hi = lambda > 0 ? lambda * 1.25f : 64.0f;
  for (int k = 0;
       k < 40 && lengths_for_lambda(freq, n, cl_bits, hi, back.data(), trial.data()) > kFull; ++k) {
    hi *= 2;
  }
  float lo = hi * 0.5f;
  for (int k = 0; k < 40 && lo > 1e-3f &&
                  lengths_for_lambda(freq, n, cl_bits, lo, back.data(), trial.data()) <= kFull;
       ++k) {
    hi = lo;
    lo *= 0.5f;
  }
  for (int k = 0; k < 10; ++k) {
    const float mid = 0.5f * (lo + hi);
    if (lengths_for_lambda(freq, n, cl_bits, mid, back.data(), trial.data()) > kFull) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  lambda = hi;
  std::uint32_t kraft = lengths_for_lambda(freq, n, cl_bits, hi, back.data(), lens);
  if (kraft > kFull) return false;
  // Fill the rest of the sum: shorten the most frequent codeword whose step still fits (the
  // longest codeword's always does, so this ends exactly at 1 unless no codeword can shorten).
  while (kraft < kFull) {
    const std::uint32_t slack = kFull - kraft;
    int pick = -1;
    for (int s = 0; s < n; ++s) {
      if (lens[s] > 1 && (1u << (15 - lens[s])) <= slack && (pick < 0 || freq[s] > freq[pick]))
        pick = s;
    }
    if (pick < 0) return false;
    kraft += 1u << (15 - lens[pick]);
    --lens[pick];
  }
  int coded = 0;
  for (int s = 0; s < n; ++s) coded += lens[s] != 0;
  return coded >= 2;
}
}  // namespace

namespace detail {

bool learnt_code_lengths(const float* freq, int n, const float* cl_bits, std::uint8_t* lens) {
  float lambda = 0;
  return header_aware_lengths(freq, n, cl_bits, lambda, lens);
}

}  // namespace detail

// The semi-static code (see gzip.hpp): built from the symbol frequencies of the documents this
// compressor wrote before, halved at every scheduled rebuild so that the recent ones weigh most.
// Its lengths are header-aware (header_aware_lengths): the header goes out with every document,
// so it is priced in, per document, against the symbols' bits. Symbols seen lately always get a
// codeword; others only where that makes the header cheaper (a run of equal lengths through
// them). A document with a symbol the code lacks is written with its own code instead, and the
// code is rebuilt soon with the new symbol.
struct SmallCompressor::Model {
  BlockCode code;
  std::array<unsigned char, kHeaderRoom> header{};
  std::size_t header_bits = 0;
  bool ready = false;
  std::array<std::uint32_t, kNumLitLen> lit_freq{};
  std::array<std::uint32_t, kNumDist> dist_freq{};
  std::uint32_t weight = 0;    // documents counted into the frequencies (halved with them)
  std::uint32_t docs = 0;      // documents since the last scheduled rebuild
  std::uint32_t since = 0;     // documents since the last rebuild of any kind
  bool missed = false;         // a document since then had a symbol the code lacks
  std::uint32_t interval = 1;  // documents between rebuilds: 1, 2, 4, ..., kRebuildEvery
  // What the last rebuild found: each code-length symbol's bits in its header (once known), and
  // the Lagrange multipliers of its searches (where the next search starts).
  std::array<float, kNumCodeLen> cl_bits{};
  bool cl_bits_known = false;
  float lambda_lit = 0;
  float lambda_dist = 0;

  // Expected bits per document with `c`: its header plus the frequencies' codewords (extra
  // bits left out: they are the same whatever the code); sets cl to its code-length code.
  static float cost(const BlockCode& c, const float* lf, const float* df, std::uint8_t* cl) {
    std::array<unsigned char, kHeaderRoom> scratch{};
    BitWriter w(scratch.data());
    write_header(c, w, cl);
    float bits = static_cast<float>(w.bits_since(scratch.data()));
    for (int k = 0; k < kNumLitLen; ++k) bits += lf[k] * static_cast<float>(c.lit_len[k]);
    for (int k = 0; k < kNumDist; ++k) bits += df[k] * static_cast<float>(c.dist_len[k]);
    return bits;
  }

  // Builds the code and its header from the frequencies; `decay` halves them afterwards.
  void rebuild(bool decay) {
    // Huffman's code first: the start of the search, and what stays if it finds nothing better.
    // build_code needs frequencies below 2^23 (a long run of large documents could pass it).
    std::uint32_t max = 0;
    for (std::uint32_t f : lit_freq) max = std::max(max, f);
    for (std::uint32_t f : dist_freq) max = std::max(max, f);
    int shift = 0;
    while ((max >> shift) >= (1u << 20)) ++shift;
    std::array<std::uint32_t, kNumLitLen> lf;
    std::array<std::uint32_t, kNumDist> df;
    for (int k = 0; k < kNumLitLen; ++k)
      lf[k] = lit_freq[k] == 0 ? 0 : std::max(lit_freq[k] >> shift, 1u);
    for (int k = 0; k < kNumDist; ++k)
      df[k] = dist_freq[k] == 0 ? 0 : std::max(dist_freq[k] >> shift, 1u);
    lf[kEndOfBlock] = 1 + (lit_freq[kEndOfBlock] >> shift);
    build_block_code(lf.data(), df.data(), code);

    // Then header-aware lengths, per document: frequencies over the documents counted.
    const float docs_counted = static_cast<float>(std::max(weight, 1u));
    std::array<float, kNumLitLen> lit_per_doc;
    std::array<float, kNumDist> dist_per_doc;
    for (int k = 0; k < kNumLitLen; ++k) lit_per_doc[k] = static_cast<float>(lf[k]) / docs_counted;
    for (int k = 0; k < kNumDist; ++k) dist_per_doc[k] = static_cast<float>(df[k]) / docs_counted;
    std::array<std::uint8_t, kNumCodeLen> cl;
    float best = cost(code, lit_per_doc.data(), dist_per_doc.data(), cl.data());
    // The header's symbol costs are those of the code the search starts from: the last
    // rebuild's (the code changes little), else Huffman's; a second round with the costs of
    // the first one's result when there was no last rebuild.
    const bool first = !cl_bits_known;
    if (first) {
      for (int k = 0; k < kNumCodeLen; ++k) cl_bits[k] = cl[k] != 0 ? cl[k] : 7.0f;
      cl_bits_known = true;
    }
    for (int round = 0; round < (first ? 2 : 1); ++round) {
      BlockCode candidate{};  // zeroed: codes of unused symbols are never garbage
      if (!header_aware_lengths(lit_per_doc.data(), kNumLitLen, cl_bits.data(), lambda_lit,
                                candidate.lit_len.data()) ||
          !header_aware_lengths(dist_per_doc.data(), kNumDist, cl_bits.data(), lambda_dist,
                                candidate.dist_len.data())) {
        break;
      }
      canonical_codes(candidate.lit_len.data(), kNumLitLen, candidate.lit_code.data());
      canonical_codes(candidate.dist_len.data(), kNumDist, candidate.dist_code.data());
      const float bits = cost(candidate, lit_per_doc.data(), dist_per_doc.data(), cl.data());
      for (int k = 0; k < kNumCodeLen; ++k) cl_bits[k] = cl[k] != 0 ? cl[k] : 7.0f;
      if (bits < best) {
        best = bits;
        code = candidate;
      }
    }

    header.fill(0);
    BitWriter w(header.data());
    write_header(code, w);
    header_bits = w.bits_since(header.data());
    w.finish();
    if (decay) {
      for (auto& f : lit_freq) f >>= 1;
      for (auto& f : dist_freq) f >>= 1;
      weight >>= 1;
    }
    ready = true;
  }
};

struct SmallCompressor::State {
  std::vector<std::uint32_t> table = std::vector<std::uint32_t>(std::size_t{1} << kHashBits, 0);
  // Every entry below `base` belongs to an earlier document (0 never is a valid entry).
  std::uint32_t base = 1;
  std::vector<std::uint32_t> items = std::vector<std::uint32_t>(kMaxInput);
  // Room for the worst case: the block header (< 600 bytes) plus at most 48 bits (a match's
  // codes and extra bits) per 4 input bytes or 15 bits per literal, plus the writer's 8.
  std::vector<unsigned char> buf = std::vector<unsigned char>(2 * kMaxInput + 1024);
  // Two learnt codes: for the documents shorter than a moving average of the lengths, and for
  // the others. Short documents have more of the kind's fixed keys and punctuation, long ones
  // more text: on 20,000 detail documents 0.3 % smaller than one code, on styles 0.8 %, at the
  // same speed (a code per length class beyond two gained nothing, measured offline).
  std::array<Model, 2> models;
  float mean_length = 0;  // over about the last 256 documents

  // The base for a document of n bytes (the table cleared before the base could overflow).
  std::uint32_t take_base(std::size_t n) {
    if (base > kBaseLimit) {
      std::fill(table.begin(), table.end(), 0);
      base = 1;
    }
    const std::uint32_t b = base;
    base += static_cast<std::uint32_t>(n) + 1;
    return b;
  }
};

SmallCompressor::SmallCompressor() : s_(std::make_unique<State>()), fallback_(1) {}
SmallCompressor::~SmallCompressor() = default;

void SmallCompressor::compress(std::string_view text, std::string& out) {
  if (text.size() > kMaxInput) {
    fallback_.compress(text, out);
    store_le32(reinterpret_cast<unsigned char*>(out.data()) + 4, content_check(text));
    return;
  }
  State& s = *s_;
  const auto* in = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  unsigned char* const start = s.buf.data();
  // ID1 ID2 CM=deflate FLG=0 MTIME XFL=0 OS=255 (unknown). MTIME holds content_check(text), not
  // a time (gzip.hpp): the same text gets the same header on every system.
  const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  std::memcpy(start, header, 10);
  store_le32(start + 4, content_check(text));
  unsigned char* end =
      n < kStoreBelow ? stored_block(in, n, start + 10) : deflate(in, n, start + 10);
  store_le32(end, crc32(text));
  store_le32(end + 4, static_cast<std::uint32_t>(n));
  end += 8;
  out.assign(reinterpret_cast<const char*>(start), static_cast<std::size_t>(end - start));
}

unsigned char* SmallCompressor::deflate(const unsigned char* in, std::size_t n,
                                        unsigned char* dst) {
  State& s = *s_;
  Model& m = s.models[static_cast<float>(n) >= s.mean_length];
  s.mean_length += (static_cast<float>(n) - s.mean_length) * (1.0f / 256);
  std::uint32_t* table = s.table.data();
  unsigned char* end = nullptr;
  bool missing = false;
  if (m.ready) {
    // One pass with the model's code: its header copied, each item written as it is found.
    std::memcpy(dst, m.header.data(), (m.header_bits + 7) / 8);
    BitWriter w(dst, m.header_bits);
    const BlockCode& c = m.code;
    std::uint32_t* lit_freq = m.lit_freq.data();
    std::uint32_t* dist_freq = m.dist_freq.data();
    parse(
        table, s.take_base(n), in, n,
        [&](std::uint32_t b) {
          w.put(c.lit_code[b], c.lit_len[b]);
          missing |= c.lit_len[b] == 0;
          ++lit_freq[b];
          w.flush();
        },
        [&](std::uint32_t len, std::uint32_t dist) {
          const auto [ls, dc] = put_match(w, c, len, dist);
          missing |= c.lit_len[ls] == 0;
          missing |= c.dist_len[dc] == 0;
          ++lit_freq[ls];
          ++dist_freq[dc];
          w.flush();
        });
    w.put(c.lit_code[kEndOfBlock], c.lit_len[kEndOfBlock]);
    ++lit_freq[kEndOfBlock];
    end = w.finish();
  }
  if (end == nullptr || missing) {
    // A code of the document's own: the items, then the code, then the block. For the first
    // document, and one with a symbol the model lacks (whose frequencies the model pass above
    // has counted already).
    std::array<std::uint32_t, kNumLitLen> lit_freq{};
    std::array<std::uint32_t, kNumDist> dist_freq{};
    std::uint32_t* items = s.items.data();
    std::size_t count = 0;
    parse(
        table, s.take_base(n), in, n,
        [&](std::uint32_t b) {
          items[count++] = b;
          ++lit_freq[b];
        },
        [&](std::uint32_t len, std::uint32_t dist) {
          items[count++] = dist << 16 | len;
          ++lit_freq[257 + kTables.len_code[len]];
          ++dist_freq[dist_code(dist)];
        });
    lit_freq[kEndOfBlock] = 1;
    BlockCode c;
    build_block_code(lit_freq.data(), dist_freq.data(), c);
    BitWriter w(dst);
    write_header(c, w);
    for (std::size_t k = 0; k < count; ++k) {
      const std::uint32_t item = items[k];
      if (item < kMatchFlag) {
        w.put(c.lit_code[item], c.lit_len[item]);
      } else {
        put_match(w, c, item & 0xFFFF, item >> 16);
      }
      w.flush();
    }
    w.put(c.lit_code[kEndOfBlock], c.lit_len[kEndOfBlock]);
    end = w.finish();
    if (!missing) {
      for (int k = 0; k < kNumLitLen; ++k) m.lit_freq[k] += lit_freq[k];
      for (int k = 0; k < kNumDist; ++k) m.dist_freq[k] += dist_freq[k];
    }
  }
  // Rebuilds: scheduled ones (1, 2, 4, ... documents, then every kRebuildEvery), and soon after a
  // document the code could not write (not at once: a rebuild costs as much as a few hundred
  // documents, and a new symbol often comes with others).
  ++m.weight;
  ++m.since;
  m.missed |= missing;
  if (++m.docs >= m.interval) {
    m.rebuild(true);
    m.docs = 0;
    m.since = 0;
    m.missed = false;
    m.interval = std::min(2 * m.interval, kRebuildEvery);
  } else if (m.missed && m.since >= kRebuildAfterMiss) {
    m.rebuild(false);  // with the symbols it lacked
    m.since = 0;
    m.missed = false;
  }

  // Data that does not compress: one stored block instead, at most 5 bytes more than the data.
  if (static_cast<std::size_t>(end - dst) > n + 5) end = stored_block(in, n, dst);
  return end;
}

}  // namespace catwalk::gzip
