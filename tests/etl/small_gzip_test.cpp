// gzip::SmallCompressor, the loader's own DEFLATE encoder: every member it writes must inflate
// to the input in zlib (what browsers and NGINX use) and in libdeflate (what the API uses), with
// a trailer holding the input's CRC-32 and size, also after many documents through the same
// compressor (its semi-static code carries over from one to the next); and its length-limited
// Huffman codes must be complete and within their limit.
#include <doctest/doctest.h>
#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "catwalk/gzip.hpp"

using namespace catwalk;

namespace {

// Inflates a gzip member with zlib; false unless it is exactly one complete, valid member.
bool zlib_inflate(const std::string& member, std::size_t size, std::string& out) {
  z_stream z{};
  if (inflateInit2(&z, 16 + 15) != Z_OK) return false;
  out.assign(size + 1, '\0');  // one more: inflating too much shows
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(member.data()));
  z.avail_in = static_cast<uInt>(member.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&z, Z_FINISH);
  bool ok = rc == Z_STREAM_END && z.avail_in == 0;
  out.resize(z.total_out);
  inflateEnd(&z);
  return ok;
}

bool libdeflate_inflate(const std::string& member, std::size_t size, std::string& out) {
  libdeflate_decompressor* d = libdeflate_alloc_decompressor();
  out.assign(size, '\0');
  std::size_t in_used = 0;
  std::size_t out_used = 0;
  auto rc = libdeflate_gzip_decompress_ex(d, member.data(), member.size(), out.data(), out.size(),
                                          &in_used, &out_used);
  libdeflate_free_decompressor(d);
  out.resize(out_used);
  return rc == LIBDEFLATE_SUCCESS && in_used == member.size();
}

// Compresses `doc` and checks the member in both inflaters and its trailer; returns its size.
void check_member(const std::string& gz, const std::string& doc);

std::size_t check_round_trip(gzip::SmallCompressor& z, const std::string& doc) {
  std::string gz;
  z.compress(doc, gz);
  check_member(gz, doc);
  return gz.size();
}

// Checks that `gz` is a member holding `doc`, in both inflaters, with its trailer and check.
void check_member(const std::string& gz, const std::string& doc) {
  REQUIRE(gzip::is_gzip(gz));
  std::string back;
  CHECK(zlib_inflate(gz, doc.size(), back));
  bool same = back == doc;  // not CHECK(back == doc): doctest would print 64 KiB documents
  CHECK(same);
  CHECK(libdeflate_inflate(gz, doc.size(), back));
  same = back == doc;
  CHECK(same);
  auto t = gzip::trailer(gz);
  REQUIRE(t);
  CHECK(t->crc32 == gzip::crc32(doc));
  CHECK(t->size == doc.size());
  // The content check in the header's MTIME field, on every path (stored, a code of its own,
  // the learnt code, libdeflate past kMaxInput): what catwalk-api's fingerprints compare.
  CHECK(gzip::header_check(gz) == gzip::content_check(doc));
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

// JSON shaped like the loader's documents, from random words.
std::string json_like(std::size_t approx, unsigned seed) {
  static const char* const kWords[] = {"linen", "blue",     "shirt",    "slim", "cotton", "size",
                                       "price", "\"sku\":", "{\"id\":", "},",   "wool",   "coat"};
  std::mt19937 rng(seed);
  std::string s = "{\"product_id\":\"123\",\"styles\":[";
  while (s.size() < approx) {
    s += "{\"style_id\":\"";
    s += std::to_string(rng() % 100000);
    s += "\",\"name\":\"";
    s += kWords[rng() % 12];
    s += ' ';
    s += kWords[rng() % 12];
    s += "\",\"original_price\":\"";
    s += std::to_string(rng() % 300);
    s += ".00\"},";
  }
  s += "]}";
  return s;
}

}  // namespace

TEST_CASE("SmallCompressor: edge-case inputs inflate to themselves in zlib and libdeflate") {
  gzip::SmallCompressor z;
  check_round_trip(z, "");
  check_round_trip(z, "x");
  check_round_trip(z, "ab");
  check_round_trip(z, "abcd");
  check_round_trip(z, std::string(63, 'q'));  // below the stored threshold
  check_round_trip(z, std::string(64, 'q'));  // the first compressed size
  // All-same bytes: distance 1, lengths of 258 again and again; it must compress well.
  CHECK(check_round_trip(z, std::string(10000, 'a')) < 100);
  CHECK(check_round_trip(z, std::string(258 + 1, 'b')) < 40);
  // Literal-only blocks (no match at all): still a valid distance code.
  check_round_trip(z, "0123456789abcdefghijklmnopqrstuvwxyz!#$%&()*+,-./:;<=>?@[]^_`{|}~ ");
  // Incompressible: falls back to a stored block, at most 23 bytes over the input.
  for (std::size_t n : {100u, 1000u, 40000u, 65535u}) {
    CHECK(check_round_trip(z, random_bytes(n, static_cast<unsigned>(n))) <= n + 23);
  }
  // Every length and the lengths just around each length code's boundaries.
  for (std::size_t len = 4; len <= 300; ++len) {
    std::string s = "0123456789abcdefghij";
    s += std::string(len, 'z');
    s += s.substr(0, 20);
    check_round_trip(z, s);
  }
}

TEST_CASE("SmallCompressor: matches reach exactly to the window's edge and never beyond") {
  gzip::SmallCompressor z;
  const std::string head = random_bytes(300, 7);
  // Filler of one byte value hashes to one slot only, so the head's entries stay in the table.
  // About 545 bytes when the repeated head is a match (the first head's literals and the
  // filler), about 270 more when it must be sent as literals again.
  for (std::size_t distance : {32767u, 32768u, 32769u, 40000u}) {
    std::string s = head + std::string(distance - head.size(), 'f') + head;
    std::size_t size = check_round_trip(z, s);
    if (distance <= 32768) {
      CHECK(size < 650);  // the repeated head was found as a match, at this distance
    } else {
      CHECK(size > 700);  // out of the window: the head must be sent again as literals
    }
  }
}

TEST_CASE("SmallCompressor: inputs at and past kMaxInput, and documents one after another") {
  gzip::SmallCompressor z;
  const std::size_t max = gzip::SmallCompressor::kMaxInput;
  for (std::size_t n : {max - 1, max, max + 1, 3 * max}) {
    check_round_trip(z, json_like(n, static_cast<unsigned>(n)).substr(0, n));
    check_round_trip(z, std::string(n, 'r'));
  }
  // Many documents in a row through one compressor: entries left in the hash table by earlier
  // documents must never be taken as matches (they would point at other bytes).
  std::size_t total = 0;
  std::size_t raw = 0;
  for (unsigned seed = 0; seed < 300; ++seed) {
    std::string doc = json_like(100 + seed * 37 % 5000, seed);
    raw += doc.size();
    total += check_round_trip(z, doc);
  }
  CHECK(total * 2 < raw);  // and such documents do compress
}

// Documents after the first are written with the semi-static code learnt from the documents
// before: each must still inflate alone, hold its own trailer, and survive the code's rebuilds
// (after 1, 2, 4, ... documents).
TEST_CASE(
    "SmallCompressor: a thousand documents in a row inflate one by one, with their trailers") {
  gzip::SmallCompressor z;
  std::size_t total = 0;
  std::size_t raw = 0;
  for (unsigned seed = 0; seed < 1000; ++seed) {
    // Mostly long JSON, some short, some of other bytes.
    std::string doc = seed % 7 == 3
                          ? random_bytes(900 + seed % 300, seed)
                          : json_like(seed % 5 == 0 ? 300 : 800 + seed * 131 % 6000, seed);
    raw += doc.size();
    total += check_round_trip(z, doc);
  }
  CHECK(total * 2 < raw);
}

TEST_CASE("SmallCompressor: the learnt code is used, and changes the bytes but not the content") {
  // The same long document, first from a fresh compressor (its own code), then after 300 of its
  // kind (the learnt one, whose header lists every symbol seen): other bytes, the same trailer.
  gzip::SmallCompressor fresh, trained;
  const std::string doc = json_like(3000, 1);
  std::string first, later;
  fresh.compress(doc, first);
  for (unsigned seed = 2; seed < 300; ++seed) check_round_trip(trained, json_like(2000, seed));
  trained.compress(doc, later);
  CHECK(first != later);
  CHECK(gzip::trailer(first)->crc32 == gzip::trailer(later)->crc32);
  CHECK(gzip::trailer(first)->size == gzip::trailer(later)->size);
  check_round_trip(trained, doc);
}

TEST_CASE("SmallCompressor: a document with symbols the learnt code never saw still inflates") {
  // Hundreds of JSON documents (letters, digits, punctuation; short matches), then long ones
  // made of bytes none of them had: control bytes, bytes above 127, and long repeats (length
  // and distance codes the JSON never needed). The code has no codeword for them: each such
  // document must be written some other way, and the next ones too.
  gzip::SmallCompressor z;
  for (unsigned seed = 0; seed < 600; ++seed)
    check_round_trip(z, json_like(900 + seed % 500, seed));
  std::string unseen;
  for (int k = 0; unseen.size() < 1200; ++k) unseen += static_cast<char>(128 + k % 100);
  check_round_trip(z, unseen);
  std::string controls;
  for (int k = 0; controls.size() < 1000; ++k) controls += static_cast<char>(k % 9 + 1);
  check_round_trip(z, controls);
  // A match 258 long at a distance past 16 KiB: length code 285, distance codes 26-29.
  const std::string head = random_bytes(400, 11);
  check_round_trip(z, head + json_like(20000, 12).substr(0, 20000) + head + head);
  for (unsigned seed = 0; seed < 50; ++seed) check_round_trip(z, json_like(1500, 1000 + seed));
}

TEST_CASE("SmallCompressor: output stays within 3 % of libdeflate level 1 on JSON documents") {
  gzip::SmallCompressor small;
  gzip::Compressor libdeflate(1);
  std::size_t ours = 0;
  std::size_t theirs = 0;
  std::string gz;
  for (unsigned seed = 0; seed < 200; ++seed) {
    std::string doc = json_like(400 + seed * 53 % 4000, seed);
    small.compress(doc, gz);
    ours += gz.size();
    libdeflate.compress(doc, gz);
    theirs += gz.size();
  }
  CHECK(ours < theirs * 103 / 100);
}

TEST_CASE("limited_code_lengths: complete codes within the limit, even for skewed frequencies") {
  auto check = [](const std::vector<std::uint32_t>& freq, int max_len) {
    std::vector<std::uint8_t> lens(freq.size());
    gzip::detail::limited_code_lengths(freq.data(), static_cast<int>(freq.size()), max_len,
                                       lens.data());
    std::uint64_t kraft = 0;  // scaled by 2^max_len
    int coded = 0;
    for (std::size_t i = 0; i < freq.size(); ++i) {
      CHECK(lens[i] <= max_len);
      if (freq[i] != 0) CHECK(lens[i] > 0);
      if (lens[i] != 0) {
        kraft += std::uint64_t{1} << (max_len - lens[i]);
        ++coded;
      }
    }
    CHECK(coded >= 2);
    CHECK(kraft == (std::uint64_t{1} << max_len));  // complete: every inflater accepts it
    return lens;
  };
  // Fibonacci frequencies give the deepest Huffman trees: 30 symbols would need 29 bits.
  std::vector<std::uint32_t> fib(286, 0);
  std::uint32_t a = 1, b = 1;
  for (int i = 0; i < 30; ++i) {
    fib[i * 9] = a;
    std::uint32_t c = a + b;
    a = b;
    b = c;
  }
  auto lens = check(fib, 15);
  CHECK(*std::max_element(lens.begin(), lens.end()) == 15);  // the limit was needed, and held
  std::vector<std::uint32_t> cl19(19);
  for (int i = 0; i < 19; ++i) cl19[i] = fib[i * 9];
  check(cl19, 7);
  // One used symbol, none, all equal, all 286.
  std::vector<std::uint32_t> one(30, 0);
  one[5] = 10;
  check(one, 15);
  check(std::vector<std::uint32_t>(30, 0), 15);
  check(std::vector<std::uint32_t>(19, 4), 7);
  check(std::vector<std::uint32_t>(286, 1), 15);
  // Where no limit is needed the lengths are Huffman's: 1, 2, 3, 3 for 8, 4, 2, 2.
  auto plain = check({8, 4, 2, 2}, 15);
  CHECK(plain == std::vector<std::uint8_t>{1, 2, 3, 3});
}

TEST_CASE("limited_code_lengths: Huffman-optimal where the limit does not bind, any frequencies") {
  // The frequencies are sorted by a radix sort whose bucket count follows their largest value
  // (one to three passes): a wrong order would still give a complete code, only a worse one. So
  // compare the code's cost (sum of frequency x length) with Huffman's, computed here with a
  // priority queue, for random frequencies of every magnitude and symbol count.
  std::mt19937 rng(12345);
  for (int round = 0; round < 3000; ++round) {
    const int n = round % 3 == 0 ? 19 : round % 3 == 1 ? 30 : 286;
    const std::uint32_t top = std::uint32_t{1} << (1 + round % 22);  // 2 to 2^22
    std::vector<std::uint32_t> freq(static_cast<std::size_t>(n), 0);
    const int used = 2 + static_cast<int>(rng() % 12);  // few symbols: no length reaches 15
    for (int k = 0; k < used; ++k) freq[rng() % static_cast<std::uint32_t>(n)] = 1 + rng() % top;
    std::vector<std::uint8_t> lens(freq.size());
    gzip::detail::limited_code_lengths(freq.data(), n, 15, lens.data());
    std::uint64_t cost = 0;
    std::priority_queue<std::uint64_t, std::vector<std::uint64_t>, std::greater<>> queue;
    for (int i = 0; i < n; ++i) {
      cost += std::uint64_t{freq[i]} * lens[i];
      if (freq[i] != 0) queue.push(freq[i]);
    }
    std::uint64_t huffman = 0;  // each merge adds its weight once per level it descends
    while (queue.size() > 1) {
      std::uint64_t a = queue.top();
      queue.pop();
      std::uint64_t b = queue.top();
      queue.pop();
      huffman += a + b;
      queue.push(a + b);
    }
    CAPTURE(round);
    if (std::count_if(freq.begin(), freq.end(), [](std::uint32_t f) { return f != 0; }) >= 2) {
      CHECK(cost == huffman);
    }
  }
}

TEST_CASE("SmallCompressor: a code-length code that needs its 7-bit limit still inflates") {
  // Code lengths spread over many values (from literals of very different frequencies) make the
  // code-length code deep: Fibonacci-like literal counts, shuffled so that few matches form.
  gzip::SmallCompressor z;
  std::string s;
  std::uint32_t a = 1, b = 1;
  for (int sym = 0; sym < 22; ++sym) {
    s.append(a, static_cast<char>('A' + sym));
    std::uint32_t c = a + b;
    a = b;
    b = c;
  }
  std::mt19937 rng(3);
  std::shuffle(s.begin(), s.end(), rng);
  s.resize(std::min(s.size(), gzip::SmallCompressor::kMaxInput));
  check_round_trip(z, s);
}

namespace {

// JSON shaped like the loader's detail documents (about 250-600 bytes: a product's name,
// slogan, description and features), from a vocabulary of words in both cases.
std::string detail_like(unsigned seed) {
  static const char* const kWords[] = {
      "Golden",  "beanie", "reality", "is",      "different", "for",    "every", "being",
      "Sizing",  "black",  "round",   "toe",     "Everyone",  "looks",  "good",  "in",
      "joggers", "Low",    "top",     "leather", "mesh",      "Trail",  "shoes", "wear",
      "shades",  "Brass",  "Cotton",  "100%",    "UV",        "Frames", "Cut",   "sandals"};
  std::mt19937 rng(seed);
  auto words = [&](int count) {
    std::string s;
    for (int k = 0; k < count; ++k) {
      if (k != 0) s += rng() % 9 == 0 ? ". " : " ";
      s += kWords[rng() % 32];
    }
    return s;
  };
  std::string s = "{\"id\":" + std::to_string(rng() % 1000000) + ",\"name\":\"" + words(2) +
                  "\",\"slogan\":\"" + words(3 + static_cast<int>(rng() % 5)) +
                  "\",\"description\":\"" + words(8 + static_cast<int>(rng() % 30)) +
                  ".\",\"category\":\"" + words(1) + "\",\"default_price\":\"" +
                  std::to_string(rng() % 1000) + "\",\"features\":[";
  const int features = static_cast<int>(rng() % 5);
  for (int k = 0; k < features; ++k) {
    if (k != 0) s += ',';
    s += "{\"feature\":\"" + words(1) + "\",\"value\":\"" + words(1 + static_cast<int>(rng() % 2)) +
         "\"}";
  }
  return s + "]}";
}

}  // namespace

TEST_CASE(
    "SmallCompressor: 70,000 documents across every rebuild of the learnt code inflate alike in "
    "zlib and libdeflate, and the same inputs give the same bytes") {
  // Past the rebuilds after 1, 2, 4, ... 8,192 documents and the first one every 16,384 (after
  // 32,767 documents of a code's length class: the compressor has two), and rebuilds after
  // documents with symbols the code lacks: bytes above 127 and control bytes now and then, random
  // bytes (stored blocks), long repeats (length and distance codes the short documents never need),
  // JSON of other shapes and lengths. A second compressor given the same inputs must give the same
  // bytes (the loader's output is reproducible for the same partitions).
  gzip::SmallCompressor z, twin;
  std::string gz, again;
  std::size_t total = 0;
  std::size_t raw = 0;
  bool same_bytes = true;
  for (unsigned k = 0; k < 70000; ++k) {
    std::string doc = detail_like(k);
    if (k % 997 == 5) {
      doc.insert(doc.size() / 2, "\xC3\xA9t\xC3\xA9 \xE2\x82\xAC");  // UTF-8: new literals
    } else if (k % 1499 == 7) {
      doc += std::string(1, static_cast<char>(1 + k % 31));  // a control byte
    } else if (k % 2003 == 11) {
      doc = random_bytes(200 + k % 700, k);
    } else if (k % 2503 == 13) {
      doc = doc + std::string(600, 'x') + doc;  // a long match
    } else if (k % 101 == 17) {
      doc = json_like(300 + k % 3000, k);
    }
    raw += doc.size();
    z.compress(doc, gz);
    check_member(gz, doc);
    total += gz.size();
    twin.compress(doc, again);
    same_bytes = same_bytes && again == gz;
  }
  CHECK(same_bytes);
  CHECK(total * 10 < raw * 8);
}

TEST_CASE("SmallCompressor: the learnt code keeps ~400-byte documents within 5 % of own codes") {
  // A code shared by all documents but with Huffman's lengths needs a header listing every
  // symbol the kind uses: about 11 % larger on such documents than a code of each document's
  // own (bench/README.md). The learnt code's lengths are chosen for a short header too.
  gzip::SmallCompressor learnt;
  std::string gz;
  for (unsigned k = 0; k < 3000; ++k) learnt.compress(detail_like(k), gz);  // learning
  std::size_t shared = 0;
  std::size_t own = 0;
  for (unsigned k = 3000; k < 4000; ++k) {
    const std::string doc = detail_like(k);
    shared += check_round_trip(learnt, doc);
    gzip::SmallCompressor fresh;  // its first document: a code of the document's own
    fresh.compress(doc, gz);
    own += gz.size();
  }
  CAPTURE(shared);
  CAPTURE(own);
  CHECK(shared < own * 105 / 100);
}

TEST_CASE("learnt_code_lengths: complete codes within 15 bits, every used symbol coded") {
  auto check = [](const std::vector<float>& freq, const std::vector<float>& cl_bits) {
    std::vector<std::uint8_t> lens(freq.size());
    const bool ok = gzip::detail::learnt_code_lengths(freq.data(), static_cast<int>(freq.size()),
                                                      cl_bits.data(), lens.data());
    const auto used = std::count_if(freq.begin(), freq.end(), [](float f) { return f > 0; });
    if (used >= 2) REQUIRE(ok);
    if (!ok) return;
    std::uint64_t kraft = 0;
    int coded = 0;
    for (std::size_t i = 0; i < freq.size(); ++i) {
      CHECK(lens[i] <= 15);
      if (freq[i] > 0) CHECK(lens[i] > 0);
      if (lens[i] != 0) {
        kraft += std::uint64_t{1} << (15 - lens[i]);
        ++coded;
      }
    }
    CHECK(coded >= 2);
    CHECK(kraft == (std::uint64_t{1} << 15));  // complete: every inflater accepts it
  };
  std::mt19937 rng(99);
  for (int round = 0; round < 300; ++round) {
    const int n = round % 2 == 0 ? 30 : 286;
    std::vector<float> freq(static_cast<std::size_t>(n), 0.0f);
    const int used = 1 + static_cast<int>(rng() % static_cast<unsigned>(n));
    for (int k = 0; k < used; ++k) {
      // Per-document frequencies from rare (1 in 10,000 documents) to hundreds.
      freq[rng() % static_cast<unsigned>(n)] = std::ldexp(
          1.0f + static_cast<float>(rng() % 1000) / 1000.0f, static_cast<int>(rng() % 23) - 14);
    }
    std::vector<float> cl_bits(19);
    for (auto& b : cl_bits) b = static_cast<float>(1 + rng() % 7);
    CAPTURE(round);
    check(freq, cl_bits);
  }
  // Fibonacci-like skew (Huffman would need 29 bits), one symbol, none.
  std::vector<float> fib(286, 0.0f);
  float a = 1, b = 1;
  for (int i = 0; i < 30; ++i) {
    fib[static_cast<std::size_t>(i) * 9] = a * 1e-6f;
    const float c = a + b;
    a = b;
    b = c;
  }
  const std::vector<float> flat(19, 4.0f);
  check(fib, flat);
  std::vector<float> one(30, 0.0f);
  one[3] = 2.0f;
  check(one, flat);
  check(std::vector<float>(30, 0.0f), flat);
  check(std::vector<float>(286, 0.5f), flat);
}
