// gzip compression and inflation over libdeflate (whole-buffer: a document is always whole in
// memory, and libdeflate compresses it about 1.8x and inflates it 1.6x faster than zlib, with
// smaller output at the same level; bench/README.md has the figures). See catwalk/gzip.hpp.
#include "catwalk/gzip.hpp"

#include <libdeflate.h>

#include <new>
#include <stdexcept>

namespace catwalk::gzip {

namespace {
std::uint32_t le32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
}  // namespace

bool is_gzip(std::string_view data) {
  return data.size() >= 18 && static_cast<unsigned char>(data[0]) == 0x1f &&
         static_cast<unsigned char>(data[1]) == 0x8b && data[2] == 8;
}

std::optional<Trailer> trailer(std::string_view member) {
  if (!is_gzip(member)) return std::nullopt;
  const auto* end = reinterpret_cast<const unsigned char*>(member.data() + member.size());
  return Trailer{le32(end - 8), le32(end - 4)};
}

std::uint32_t crc32(std::string_view data, std::uint32_t previous) {
  return libdeflate_crc32(previous, data.data(), data.size());
}

std::uint32_t content_check(std::string_view data) {
  return libdeflate_adler32(1, data.data(), data.size());
}

std::uint32_t header_check(std::string_view member) {
  if (!is_gzip(member)) return 0;
  return le32(reinterpret_cast<const unsigned char*>(member.data()) + 4);
}

void Compressor::Deleter::operator()(libdeflate_compressor* c) const {
  libdeflate_free_compressor(c);
}

Compressor::Compressor(int level) : c_(libdeflate_alloc_compressor(level)) {
  if (!c_) throw std::bad_alloc();
}

void Compressor::compress(std::string_view in, std::string& out) {
  out.resize(libdeflate_gzip_compress_bound(c_.get(), in.size()));
  std::size_t n = libdeflate_gzip_compress(c_.get(), in.data(), in.size(), out.data(), out.size());
  // The bound always suffices; 0 would mean a libdeflate bug.
  if (n == 0) throw std::runtime_error("gzip: compression failed");
  out.resize(n);
}

void Inflater::Deleter::operator()(libdeflate_decompressor* d) const {
  libdeflate_free_decompressor(d);
}

Inflater::Inflater() : d_(libdeflate_alloc_decompressor()) {
  if (!d_) throw std::bad_alloc();
}

bool Inflater::inflate(std::string_view member, std::string& out) {
  auto t = trailer(member);
  if (!t) return false;
  // The trailer says how long the content is: one allocation, one call, which also checks the
  // CRC-32 and that exactly that many bytes come out.
  out.resize(t->size);
  return libdeflate_gzip_decompress(d_.get(), member.data(), member.size(), out.data(), out.size(),
                                    nullptr) == LIBDEFLATE_SUCCESS;
}

}  // namespace catwalk::gzip
