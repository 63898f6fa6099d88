#!/usr/bin/env bash
# Runs the gzip_small fuzz target for a bounded time.
#   run_gzip_fuzz.sh FUZZER SAMPLES_DIR WORK_DIR
# Environment: CATWALK_FUZZ_SECONDS (default 60), the total time of the run.
# Seeds: each sample file, and the samples repeated to documents of 65,534-65,536 and 69,999
# bytes (SmallCompressor::kMaxInput is 65,535; byte 0 of an input is not part of the document),
# which the fuzzer would take long to grow to, and one whose last documents have symbols the
# compressor's learnt code never saw. Inputs the fuzzer finds interesting are kept in
# WORK_DIR/corpus between local runs; a failing input is saved in WORK_DIR/artifacts/ and the
# fuzzer prints how to replay it (FUZZER FILE).
set -euo pipefail
fuzzer=$1 samples=$2 work=$3
seconds=${CATWALK_FUZZ_SECONDS:-60}
rm -rf "$work/seeds"
mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts"
for f in "$samples"/*.csv; do
  { printf '\000'; cat "$f"; } >"$work/seeds/$(basename "$f")"
done
all=$work/seeds/all.txt
for _ in $(seq 1 4); do cat "$samples"/*.csv; done >"$all"
while [[ $(stat -c %s "$all") -lt 70000 ]]; do cat "$all" "$all" >"$all.2" && mv "$all.2" "$all"; done
for n in 65534 65535 65536 69999; do
  { printf '\001'; head -c "$n" "$all"; } >"$work/seeds/big-$n"
done
# Byte 0 = 19: three documents before, their bytes folded into 32-95, so the learnt code lacks
# the lower-case letters of the last ones (the path for a symbol the code never saw).
{ printf '\023'; head -c 3000 "$all"; } >"$work/seeds/unseen-3000"
rm "$all"
# -max_len: past kMaxInput, so the fallback to libdeflate is fuzzed too.
exec "$fuzzer" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=70000 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$work/seeds"
