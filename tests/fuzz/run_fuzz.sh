#!/usr/bin/env bash
# Runs the etl_records fuzz target for a bounded time on a seed corpus made from data-samples/.
#   run_fuzz.sh FUZZER SAMPLES_DIR FUZZ_SOURCE_DIR WORK_DIR
# Environment: CATWALK_FUZZ_SECONDS (default 60), the total time of the run.
# Seeds: each sample file whole (with its own header), each data line alone under the file's
# header, and each file's data lines under the table's canonical header (see the target's input
# format). Inputs the fuzzer finds interesting are kept in WORK_DIR/corpus between local runs;
# tests/fuzz/regressions/ holds inputs that once broke something and are replayed every run.
# A crash or a broken contract fails the run; the input is saved in WORK_DIR/artifacts/ and the
# fuzzer prints how to replay it (FUZZER FILE).
set -euo pipefail
fuzzer=$1 samples=$2 srcdir=$3 work=$4
seconds=${CATWALK_FUZZ_SECONDS:-60}

rm -rf "$work/seeds"
mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts"
# Byte 0 of an input: the table's index in table_specs() order, high bit = own header.
tables=(product features styles photos skus related cart)
selector() { printf "\\$(printf %03o "$1")"; }
for i in "${!tables[@]}"; do
  f=$samples/${tables[$i]}.csv
  [[ -f $f ]] || continue
  { selector $((128 + i)); cat "$f"; } >"$work/seeds/${tables[$i]}-file"
  { selector "$i"; tail -n +2 "$f"; } >"$work/seeds/${tables[$i]}-body"
  header=$(head -n 1 "$f")
  n=0
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    { selector $((128 + i)); printf '%s\n%s\n' "$header" "$line"; } >"$work/seeds/${tables[$i]}-line$n"
  done < <(tail -n +2 "$f")
done

dirs=("$work/corpus" "$work/seeds")
[[ -d $srcdir/regressions ]] && dirs+=("$srcdir/regressions")
echo "fuzzing for ${seconds}s: $(ls "$work/seeds" | wc -l) seeds, corpus in $work/corpus"
# -timeout: one input taking over 30 s is a hang; -rss_limit_mb: the line reader takes 48 MiB
# per file and ASan keeps freed memory in quarantine for a while.
exec "$fuzzer" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" -dict="$srcdir/etl_records.dict" "${dirs[@]}"
