#pragma once
// gzip members (RFC 1952) of the API's documents. The loader compresses each document once, at
// publish time; the API sends the stored bytes as they are to clients that accept gzip and
// inflates them for the others, so no request ever compresses.
//
// Thread-safety: a Compressor or an Inflater is used by one thread at a time (each keeps its
// state between calls, which saves allocations per document); the free functions are pure.
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

class Compressor {
 public:
  // `level` 1 (fastest) to 12 (smallest).
  explicit Compressor(int level);
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  // Replaces `out` with one gzip member holding `in` (no file name, modification time 0: the
  // same input always gives the same bytes).
  void compress(std::string_view in, std::string& out);

 private:
  struct Deleter {
    void operator()(libdeflate_compressor* c) const;
  };
  std::unique_ptr<libdeflate_compressor, Deleter> c_;
};

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
