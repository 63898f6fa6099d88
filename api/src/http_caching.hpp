#pragma once
// HTTP content negotiation and validation for the catalogue routes (RFC 9110): which encoding a
// client takes (Accept-Encoding with q-values), the documents' entity tags, If-None-Match.
// Pure functions: no I/O, no state; safe from any thread.
#include <cstdint>
#include <string>
#include <string_view>

namespace catwalk::api {

// True when the client's Accept-Encoding lets us send gzip: "gzip", "x-gzip" or (gzip not
// named) "*" with q > 0, unless "identity" is listed with a higher q. No header, "gzip;q=0",
// "identity", "br" alone, or garbage: false. A malformed q-value counts as q=0 for its coding.
bool accepts_gzip(std::string_view accept_encoding);

// A weak entity tag, W/"<crc32>-<length>" of the identity body (hex), W/"<crc32>-<length>-<check>"
// when a second check of the content is known (a stored gzip member's gzip::header_check, non-0):
// then 64 bits of checks tell two versions of a document apart, not 32. Weak: one tag stands for
// both encodings of the same JSON (they are equivalent, not byte-identical), which is what
// If-None-Match compares (weakly) and what a cache keyed with Vary: Accept-Encoding needs.
std::string weak_etag(std::uint32_t crc32, std::uint64_t length, std::uint32_t check = 0);

// True when the If-None-Match field value matches `etag` by the weak comparison: "*", or a
// listed tag whose opaque part equals etag's (W/ prefixes ignored). Malformed lists match
// nothing (the request is then answered in full, never wrongly with 304).
bool if_none_match(std::string_view header, std::string_view etag);

}  // namespace catwalk::api
