#!/usr/bin/env bash
# Benchmark of `spillway export` against the server's own limit: the same
# query_range calls fetched by curl to /dev/null. Loads SERIES series × 24 h at
# 15 s into a loopback VictoriaMetrics, then, RUNS times interleaved, measures
#   curl (the same windows spillway uses, one after the other)
#   spillway export --format csv,parquet,sqlite   (all three in one pass)
#   spillway export --format csv | parquet | sqlite | json | jsonl   (each alone)
# over a 6 h range and over the 24 h range (flat memory). For each it prints
# the median and the spread (min..max) of wall time, CPU-seconds of the client,
# CPU-seconds of the server during the command, and peak RSS, then the ratios
# of the medians against curl, and beside them what writing the same number of
# bytes with dd alone takes against curl, through the page cache and past it
# (oflag=direct, as spillway writes a big export: src/fsutil/direct.rs).
# Targets (issue 13): all three together <= 1.5x curl, each alone <= 1.2x,
# json/jsonl <= 1.3x, peak RSS <= 100 MB at both ranges.
# Usage: scripts/bench-export.sh [SERIES]   (default 10000)
# Env:   RUNS=3            runs per command (median and spread over them)
#        SPILLWAY=path     measure a prebuilt binary instead of building one
#        FORMATS="..."     the single-format list (default "csv parquet sqlite json jsonl")
#        RANGES="6h 24h"   which ranges to measure
#        WINDOW=720        points per query_range call, spillway's and curl's alike
#                          (spillway's --window; its default is 720)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
series=${1:-10000}
runs=${RUNS:-3}
formats=${FORMATS:-csv parquet sqlite json jsonl}
ranges=${RANGES:-6h 24h}
step=15
hours=24
. scripts/bench-lib.sh

scripts/install-deps.sh time
if [ -n "${SPILLWAY:-}" ]; then
  bin=$SPILLWAY
else
  cargo build --release --locked --quiet
  bin="${CARGO_TARGET_DIR:-$root/target}/release/spillway"
fi
echo "== measuring $bin"
work="$root/bench-out/export"
rm -rf "$work"; mkdir -p "$work"
results="$work/results.txt"; : >"$results"

port=$(free_port 18500)
vm="http://127.0.0.1:$port"
victoria-metrics -httpListenAddr="127.0.0.1:$port" -storageDataPath="$work/vm" -retentionPeriod=100y \
  -search.latencyOffset=0s -search.maxPointsPerTimeseries=100000 -loggerLevel=WARN >"$work/vm.log" 2>&1 &
vm_pid=$!
trap 'kill $vm_pid 2>/dev/null; wait 2>/dev/null || true' EXIT
wait_ready "$vm/health"

now=$(date +%s)
end=$(( (now / 3600) * 3600 - 3600 ))      # a whole hour, an hour ago: data is settled
start=$(( end - hours * 3600 ))
echo "== loading $series series x ${hours}h at ${step}s ($(( series * hours * 3600 / step )) samples)"
awk -v n="$series" -v start="$start" -v end="$end" -v step="$step" 'BEGIN {
  srand(7)
  for (s = 0; s < n; s++) {
    printf "{\"metric\":{\"__name__\":\"bench_metric\",\"instance\":\"host-%d:9100\",\"job\":\"job-%d\"},\"values\":[", s, s % 50
    v = 50
    for (t = start; t <= end; t += step) { v += (rand() - 0.5) * 4; printf "%s%.2f", (t == start ? "" : ","), v }
    printf "],\"timestamps\":["
    for (t = start; t <= end; t += step) printf "%s%d000", (t == start ? "" : ","), t
    printf "]}\n"
  }
}' | curl -sf -X POST -T - "$vm/api/v1/import"
curl -sf "$vm/internal/force_flush" >/dev/null
sleep 2

cat >"$work/thresholds.yml" <<'YML'
thresholds:
  - metric: bench_metric
    min: 0
    max: 100
    alert_above: 80
YML

# CPU-seconds the server has used so far (utime + stime from /proc).
server_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$vm_pid/stat"
}

# run NAME CMD...: `measure` plus the server's CPU during CMD, appended as field 5.
run() {
  local name=$1; shift
  local before after
  # Every command starts with no dirty pages left by the one before: a big
  # export's pace is set by writeback once dirty pages pile up.
  sync
  before=$(server_cpu)
  measure "$name" "$@"
  after=$(server_cpu)
  sed -i "\$s/\$/ $(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.2f", a-b}')/" "$results"
}

window_points=${WINDOW:-720}
write_curl() {
  local label=$1 from=$2 to=$3
  # The same windows spillway uses: the 15 s grid inside [from, to], WINDOW points per call.
  local first=$(( (from + step - 1) / step * step )) last=$(( to / step * step ))
  : >"$work/curl-$label.sh"
  for (( s = first; s <= last; s += window_points * step )); do
    e=$(( s + (window_points - 1) * step )); (( e > last )) && e=$last
    echo "curl -sf -o /dev/null --data-urlencode query=bench_metric -d start=$s -d end=$e -d step=${step}s -d nocache=1 $vm/api/v1/query_range" >>"$work/curl-$label.sh"
  done
  echo "== $label range: $(wc -l <"$work/curl-$label.sh") query_range calls"
}

export_run() {
  local label=$1 from=$2 to=$3 fmt=$4
  run "spillway-$label-$fmt" "$bin" --quiet export --url "$vm" --query bench_metric --from "$from" --to "$to" \
    --step ${step}s --window "$window_points" --thresholds "$work/thresholds.yml" --format "$fmt" --out "$work/out"
  local mib
  mib=$(( $(du -sb "$work/out" | cut -f1) / 1048576 ))
  rm -rf "$work/out"
  write_floor "$label-$fmt" "$mib"
}

# write_floor NAME MIB: the least any writer of that export's bytes can take
# here, in the same conditions: dd of as many bytes through the page cache
# (its copy and per-page bookkeeping cost ~2 s of system CPU per GB on the
# 2-core test machine, then the disk's writeback pace once dirty pages pile
# up), and dd of them past it (O_DIRECT, 1 MiB writes).
write_floor() {
  run "write-$1" dd if=/dev/zero of="$work/floor" bs=1M count="$2" status=none
  rm -f "$work/floor"
  run "direct-$1" dd if=/dev/zero of="$work/floor" bs=1M count="$2" oflag=direct status=none
  rm -f "$work/floor"
}

run_range() {
  local label=$1 from=$2 to=$3
  write_curl "$label" "$from" "$to"
  for (( i = 1; i <= runs; i++ )); do
    echo "-- $label run $i/$runs"
    run "curl-$label" bash "$work/curl-$label.sh"
    export_run "$label" "$from" "$to" csv,parquet,sqlite
    for f in $formats; do export_run "$label" "$from" "$to" "$f"; done
  done
}

for r in $ranges; do run_range "$r" $(( end - ${r%h} * 3600 )) "$end"; done

# summary: per name, median and min..max of wall, client CPU, server CPU, RSS.
summary() {
  sort -k1,1 -s "$results" | awk '
    function med(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    function flush(   k) {
      if (name == "") return
      printf "%-32s %3d runs  wall %7.2f (%.2f..%.2f)  cpu %7.2f (%.2f..%.2f)  server cpu %6.2f  RSS %6.1f MB (%.1f..%.1f)\n",
        name, n, med(w, n), w[1], w[n], med(c, n), c[1], c[n], med(s, n), med(r, n)/1024, r[1]/1024, r[n]/1024
      print name, med(w, n), med(c, n), med(r, n), med(s, n) > medians
      n = 0
    }
    $1 != name { flush(); name = $1 }
    { n++; w[n] = $2; c[n] = $3; r[n] = $4; s[n] = $5 }
    END { flush() }' medians="$work/medians.txt"
}
echo
echo "== medians and spread (min..max) over $runs runs; $series series"
summary

echo
echo "== ratios of medians (spillway / curl): wall and total CPU (client + server)"
# "all its CPU over N cores": the wall ratio the export would reach if its
# client and server CPU-seconds were spread perfectly over every core of the
# machine, with nothing waiting. Above the target, no overlap of fetching and
# writing can meet it; only spending less CPU can.
cores=$(nproc)
for r in $ranges; do
  for n in csv,parquet,sqlite $formats; do
    case $n in csv,parquet,sqlite) t=1.5 ;; json|jsonl) t=1.3 ;; *) t=1.2 ;; esac
    awk -v a="spillway-$r-$n" -v b="curl-$r" -v d="write-$r-$n" -v o="direct-$r-$n" -v t="$t" -v r="$r" -v f="$n" -v cores="$cores" '
      $1==a{aw=$2; ac=$3; ar=$4; as=$5} $1==b{bw=$2; bc=$3; bs=$5} $1==d{dw=$2} $1==o{ow=$2}
      END{ printf "%-4s %-20s wall %5.2fx (target <= %s)  cpu %5.2fx  all its CPU over %d cores %5.2fx  RSS %6.1f MB (target <= 100)  writing its bytes alone %5.2fx, direct %5.2fx\n",
           r, f, aw/bw, t, (ac+as)/(bc+bs), cores, (ac+as)/cores/bw, ar/1024, dw/bw, ow/bw }' "$work/medians.txt"
  done
done
# The server's peak over the whole run: what its windows (WINDOW points of
# every series per call) cost it; a window longer than the default costs more.
echo "server peak RSS over the whole run: $(awk '/VmHWM/ { printf "%.0f MB", $2 / 1024 }' "/proc/$vm_pid/status") with windows of $window_points points"
echo "RSS 24h / 6h (all three): $(awk '$1=="spillway-24h-csv,parquet,sqlite"{a=$4} $1=="spillway-6h-csv,parquet,sqlite"{b=$4} END{ if (a > 0 && b > 0) printf "%.2f", a/b; else printf "n/a" }' "$work/medians.txt")x (flat memory: about 1)"
