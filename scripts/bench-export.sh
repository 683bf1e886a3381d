#!/usr/bin/env bash
# Benchmark of `spillway export` against the server's own limit: the same
# query_range calls fetched by curl to /dev/null. Loads SERIES series × 24 h at
# 15 s into a loopback VictoriaMetrics, then, in one run, times
#   curl (the same windows spillway uses) vs spillway export --format csv,parquet,sqlite
# over a 6 h range and over the 24 h range (flat memory), printing wall time,
# CPU time, peak RSS and the ratios. Targets: wall <= 1.5x curl; RSS <= 150 MB.
# Usage: scripts/bench-export.sh [SERIES]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
series=${1:-10000}
step=15
hours=24
. scripts/bench-lib.sh

scripts/install-deps.sh time
cargo build --release --locked --quiet
bin="$root/target/release/spillway"
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

window_points=720
run_range() {
  local label=$1 from=$2 to=$3
  # The same windows spillway uses: the 15 s grid inside [from, to], 720 points per call.
  local first=$(( (from + step - 1) / step * step )) last=$(( to / step * step ))
  : >"$work/curl-$label.sh"
  for (( s = first; s <= last; s += window_points * step )); do
    e=$(( s + (window_points - 1) * step )); (( e > last )) && e=$last
    echo "curl -sf -o /dev/null --data-urlencode query=bench_metric -d start=$s -d end=$e -d step=${step}s -d nocache=1 $vm/api/v1/query_range" >>"$work/curl-$label.sh"
  done
  echo "== $label range: $(wc -l <"$work/curl-$label.sh") query_range calls"
  measure "curl-$label" bash "$work/curl-$label.sh"
  measure "spillway-$label" "$bin" --quiet export --url "$vm" --query bench_metric --from "$from" --to "$to" \
    --step ${step}s --thresholds "$work/thresholds.yml" --format csv,parquet,sqlite --out "$work/out-$label"
  ls -l "$work/out-$label" | tail -n +2
  # The same without SQLite, to show what the database costs on its own.
  measure "spillway-$label-csv,parquet" "$bin" --quiet export --url "$vm" --query bench_metric --from "$from" --to "$to" \
    --step ${step}s --thresholds "$work/thresholds.yml" --format csv,parquet --out "$work/out-$label-nosql"
  rm -rf "$work/out-$label" "$work/out-$label-nosql"
}

run_range 6h $(( end - 6 * 3600 )) "$end"
run_range 24h "$start" "$end"

echo
echo "== ratios (spillway / curl)"
for r in 6h 24h; do
  echo "$r: wall $(ratio spillway-$r curl-$r 2)x (target <= 1.5), cpu $(ratio spillway-$r curl-$r 3)x," \
       "spillway peak RSS $(awk -v n=spillway-$r '$1==n{printf "%.1f", $4/1024}' "$results") MB (target <= 150);" \
       "without sqlite: wall $(ratio spillway-$r-csv,parquet curl-$r 2)x"
done
echo "RSS 24h / 6h: $(ratio spillway-24h spillway-6h 4)x (flat memory: about 1)"
