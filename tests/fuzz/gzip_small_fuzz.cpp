// Fuzz target for gzip::SmallCompressor, the loader's own DEFLATE encoder: whatever the input,
// the member must inflate back to it in zlib (browsers, NGINX) and libdeflate (the API), and its
// trailer must hold the input's CRC-32 and size, also after other documents through the same
// compressor, which carries state from one to the next: its hash table (entries of earlier
// documents must never be taken for matches) and its learnt Huffman code (which must never
// lack a symbol a document it writes has). The input's first byte, when there is one, says which
// documents, made from the input, go first.
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

// `s` repeated until it is at least `min` bytes long (s itself when longer; empty stays empty).
std::string repeated(std::string_view s, std::size_t min) {
  std::string out(s);
  while (!s.empty() && out.size() < min) out += s;
  return out;
}

}  // namespace

// libFuzzer's entry point (declared here: libFuzzer ships no header for it).
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A fresh compressor per input, so that a failure replays from its input alone.
  catwalk::gzip::SmallCompressor z;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.empty()) {
    check(z, in);
    return 0;
  }
  const unsigned mode = static_cast<unsigned char>(in[0]);
  in.remove_prefix(1);
  // Documents before this one, made from it: pieces of it (entries they leave in the hash table
  // would look like matches), and the input repeated to 800 bytes and more (so that the learnt
  // code, which writes every document after the first, is built from the input's symbols,
  // rebuilt, and used).
  // With bit 4 of byte 0, their bytes are folded into 32-95 first: the documents after them then
  // have symbols (and lengths, distances) the learnt code never saw.
  const int before = static_cast<int>(mode % 16);
  for (int k = 0; k < before; ++k) {
    std::string doc = k % 2 == 0
                          ? std::string(in.substr(static_cast<std::size_t>(k) * in.size() / 16))
                          : repeated(in, 800 + 300 * static_cast<std::size_t>(k));
    if ((mode & 16) != 0) {
      for (auto& c : doc) c = static_cast<char>(32 + (static_cast<unsigned char>(c) & 63));
    }
    check(z, doc);
  }
  check(z, in);
  check(z, repeated(in, 1000));
  return 0;
}
