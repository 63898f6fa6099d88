// Fuzz target for gzip::SmallCompressor, the loader's own DEFLATE encoder: whatever the input,
// the member must inflate back to it in zlib (browsers, NGINX) and libdeflate (the API), and its
// trailer must hold the input's CRC-32 and size. The input's first byte, when there is one,
// says how many documents before it go through the same compressor (entries they leave in its
// hash table must never be taken for matches).
#include <libdeflate.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "catwalk/gzip.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "gzip_small_fuzz: %s\n", what);
  std::abort();
}

void check(catwalk::gzip::SmallCompressor& z, std::string_view doc) {
  std::string gz;
  z.compress(doc, gz);
  if (!catwalk::gzip::is_gzip(gz)) fail("not a gzip member");
  // zlib
  std::string out(doc.size() + 1, '\0');
  z_stream s{};
  if (inflateInit2(&s, 16 + 15) != Z_OK) fail("zlib init");
  s.next_in = reinterpret_cast<Bytef*>(gz.data());
  s.avail_in = static_cast<uInt>(gz.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&s, Z_FINISH);
  std::size_t got = s.total_out;
  inflateEnd(&s);
  if (rc != Z_STREAM_END || s.avail_in != 0) fail("zlib rejects the member");
  if (std::string_view(out.data(), got) != doc) fail("zlib inflates other bytes");
  // libdeflate
  libdeflate_decompressor* d = libdeflate_alloc_decompressor();
  std::size_t in_used = 0, out_used = 0;
  auto lrc = libdeflate_gzip_decompress_ex(d, gz.data(), gz.size(), out.data(), out.size(),
                                           &in_used, &out_used);
  libdeflate_free_decompressor(d);
  if (lrc != LIBDEFLATE_SUCCESS || in_used != gz.size()) fail("libdeflate rejects the member");
  if (std::string_view(out.data(), out_used) != doc) fail("libdeflate inflates other bytes");
  auto t = catwalk::gzip::trailer(gz);
  if (!t || t->crc32 != catwalk::gzip::crc32(doc) || t->size != doc.size()) fail("trailer");
}

}  // namespace

// libFuzzer's entry point (declared here: libFuzzer ships no header for it).
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static catwalk::gzip::SmallCompressor z;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (!in.empty()) {
    int before = static_cast<unsigned char>(in[0]) % 4;
    in.remove_prefix(1);
    // Earlier documents: pieces of this one, so that stale table entries would look like matches.
    for (int k = 0; k < before; ++k) check(z, in.substr(k * in.size() / 4));
  }
  check(z, in);
  return 0;
}
