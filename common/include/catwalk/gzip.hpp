#pragma once
// gzip members (RFC 1952) of the API's documents. The loader compresses each document once, at
// publish time; the API sends the stored bytes as they are to clients that accept gzip and
// inflates them for the others, so no request ever compresses.
//
// Thread-safety: a Compressor or an Inflater is used by one thread at a time (each keeps its
// state between calls, which saves allocations per document); the free functions are pure.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

struct libdeflate_compressor;
struct libdeflate_decompressor;

namespace catwalk::gzip {

// True when `data` starts like a gzip member (magic 1f 8b, method deflate). A JSON document
// never does (it starts with '{' or '['), so stored documents need no separate format flag.
bool is_gzip(std::string_view data);

// What a member's trailer says about the uncompressed content: its CRC-32 and its length mod
// 2^32. nullopt when `member` is too short to be a gzip member.
struct Trailer {
  std::uint32_t crc32 = 0;
  std::uint32_t size = 0;
};
std::optional<Trailer> trailer(std::string_view member);

// The CRC-32 (the one gzip uses) of `data`; with `previous`, of the bytes that gave `previous`
// followed by `data` (a CRC computed piece by piece).
std::uint32_t crc32(std::string_view data, std::uint32_t previous = 0);

// A second check of a document's content, independent of its CRC-32: its Adler-32. The loader's
// members carry it in the header's MTIME field (bytes 4-7, little-endian; inflaters ignore it), so
// that catwalk-api tells two versions of a document apart by 64 bits of checks plus the length
// (the trailer alone is 32 bits: a same-length change has a 1 in 2^32 chance of keeping it).
// A member written without one (MTIME 0: an older loader, or Compressor) has header_check 0.
std::uint32_t content_check(std::string_view data);
std::uint32_t header_check(std::string_view member);  // 0 when `member` is not gzip

class Compressor {
 public:
  // `level` 1 (fastest) to 12 (smallest).
  explicit Compressor(int level);
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  // Replaces `out` with one gzip member holding `in` (no file name, modification time 0: the
  // same input always gives the same bytes).
  // SmallCompressor's members (its fallback included) carry content_check(in) there instead.
  void compress(std::string_view in, std::string& out);

 private:
  struct Deleter {
    void operator()(libdeflate_compressor* c) const;
  };
  std::unique_ptr<libdeflate_compressor, Deleter> c_;
};

// gzip members of short documents, with our own DEFLATE (RFC 1951) encoder: one dynamic-Huffman
// block, greedy LZ77 over a small hash table that is never cleared between documents. On the
// loader's documents (a few hundred bytes to a few KiB) it is two to three times as fast as
// libdeflate level 1 at 0-3 % more size (bench/README.md, "Our own encoder"): for such inputs
// most of libdeflate's time is per call, not per byte. Inputs above kMaxInput go to libdeflate
// level 1 (a Compressor), so every input gets a valid member.
//
// State carries from one call to the next: after the first document, documents are written with
// a semi-static Huffman code, built from the symbols of the documents this compressor wrote
// before (two codes: for documents shorter and longer than the recent average) and rebuilt after 1,
// 2, 4, ... of them, then every 16,384 (and soon after one with a symbol the code lacks, which gets
// a code of its own). Its block header is computed once per rebuild and copied into every member
// (each member stays self-contained), and its code lengths are chosen to keep that header short: no
// code construction and no header writing per document, one pass. So use one compressor per kind of
// document (they learn its shape), and expect the same input to give other bytes after other
// documents: the content, and so the trailer (CRC-32 and length of the input), never changes. The
// same sequence of inputs into a new compressor gives the same bytes. Not thread-safe.
class SmallCompressor {
 public:
  // The largest input this encoder handles itself: one stored block can still hold it when it
  // does not compress, and all of it fits in 16-bit positions.
  static constexpr std::size_t kMaxInput = 65535;
  SmallCompressor();
  ~SmallCompressor();
  SmallCompressor(const SmallCompressor&) = delete;
  SmallCompressor& operator=(const SmallCompressor&) = delete;
  // Replaces `out` with one gzip member holding `in` (no file name, modification time 0).
  void compress(std::string_view in, std::string& out);

 private:
  // Writes `in` as one final DEFLATE block at dst, returns its end.
  unsigned char* deflate(const unsigned char* in, std::size_t n, unsigned char* dst);
  struct Model;  // the learnt code
  struct State;
  std::unique_ptr<State> s_;
  Compressor fallback_;
};

namespace detail {
// Sets lens[0..n) to the code lengths of a complete prefix code (Kraft sum exactly 1) for the
// frequencies freq[0..n), none longer than max_len (1 to 15; 2^max_len >= n): symbols of frequency
// 0 get 0. At least two symbols always get a code (unused ones of length 1 are added when needed)
// so that every inflater accepts it. n at most 286. Exposed for the tests.
void limited_code_lengths(const std::uint32_t* freq, int n, int max_len, std::uint8_t* lens);
// The learnt code's lengths for the expected frequencies per document freq[0..n) (n at most 286),
// when each code-length symbol 0-18 costs cl_bits[k] bits in the block header: a complete code
// (Kraft sum exactly 1), lengths at most 15, every symbol of non-zero frequency coded, which
// minimises about the header's bits plus the expected symbols' bits. False when it finds no such
// code with two codewords or more (lens unspecified). Exposed for the tests.
bool learnt_code_lengths(const float* freq, int n, const float* cl_bits, std::uint8_t* lens);
}  // namespace detail

class Inflater {
 public:
  Inflater();
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  // Replaces `out` with the content of the single gzip member `member`. False (out unspecified)
  // when it is not a complete, valid member whose trailer matches its content.
  bool inflate(std::string_view member, std::string& out);

 private:
  struct Deleter {
    void operator()(libdeflate_decompressor* d) const;
  };
  std::unique_ptr<libdeflate_decompressor, Deleter> d_;
};

}  // namespace catwalk::gzip
