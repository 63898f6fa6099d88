# Shared by bench/load and bench/api (sourced, not run).
# Everything a benchmark creates lives under $bench_work (outside the repository).

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${CATWALK_BUILD_DIR:-$root/build}
bench_work=${CATWALK_BENCH_DIR:-/tmp/catwalk-bench}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# "2 vCPU, 24 GiB": printed with every figure, because figures mean nothing without the machine.
machine() {
  local gib
  gib=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
  echo "$(nproc) vCPU, ${gib} GiB"
}

now() { date +%s.%N; }
# elapsed START [END]: seconds with 2 decimals
elapsed() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.2f", b - a }'; }
# ratio A B: A / B with 2 decimals, "n/a" when B is 0 or missing
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
per_second() { awk -v n="$1" -v s="$2" 'BEGIN { if (s + 0 == 0) print "n/a"; else printf "%.0f", n / s }'; }

# ensure_export DIR SCALE SEED: generates an export into DIR unless one is already there.
ensure_export() {
  local dir=$1 scale=$2 seed=$3
  if [[ -f "$dir/product.csv" && -f "$dir/photos.csv" ]]; then
    log "using the export in $dir"
    return
  fi
  log "generating an export at scale $scale, seed $seed into $dir"
  mkdir -p "$dir"
  "$root/bench/generate" --scale "$scale" --seed "$seed" "$dir" >"$dir/generate.txt"
  cat "$dir/generate.txt" >&2
}

# start_pg DIR PORT: starts (or reuses) the project-local PostgreSQL and sets $db_url.
start_pg() {
  db_url=$("$root/scripts/pg-local" start "$1" "$2")
  log "PostgreSQL at $db_url"
}

# psql_db ARGS...: psql on the bench database, stop at the first error, no ~/.psqlrc.
psql_db() { psql -X -q -v ON_ERROR_STOP=1 "$db_url" "$@"; }

require_etl() {
  etl=$build/catwalk-etl
  [[ -x "$etl" ]] || die "$etl is missing: build it (cmake --build $build -j2 --target catwalk-etl)"
}

# peak_rss_mib FILE: "Maximum resident set size" from a /usr/bin/time -v report, in MiB.
peak_rss_mib() { awk -F: '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }

# Keep NOTICEs (DROP ... CASCADE, IF EXISTS) out of the benchmark output.
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
