#!/usr/bin/env bash
# Benchmark of `spillway gather` / `spillway import` against their peers (issue 5).
#
# Loads SERIES series x HOURS hours at STEP seconds into a local VictoriaMetrics
# (A), then, in one run:
#   - curl of /api/v1/export to /dev/null (the server's own limit)
#     vs `spillway gather --obfuscate ips,jobs` (ZIP, deflate), with the
#     default windows and with one window (--batch-window 24h), both
#     reading the native export, and with one window and --json-export
#     (what gather read before it decoded native blocks);
#   - curl --data-binary of the bundle's metrics.jsonl to /api/v1/import of a
#     fresh VictoriaMetrics (B) vs `spillway import` of the bundle (its
#     default: native blocks where B reads them) and, where the build has
#     the flag, `spillway import --wire-format json`;
#   - vmctl vm-native from A to a fresh B, the migration peer;
#   - `spillway gather --verify` of the bundle: the check an import makes
#     before sending anything, alone (its CPU is all client).
# Prints throughput (samples/s), client CPU and peak RSS (/usr/bin/time -v),
# the server's CPU (from /proc) and the ratios. Each timed step runs RUNS
# times; the median is shown. Not a test: nothing fails on slow numbers.
#
# Each ratio is taken per run (run i of one side against run i of the other)
# and printed as median [min-max] over the runs.
#
# Usage: scripts/bench-bundle.sh            (SERIES=20000 HOURS=6 STEP=15 RUNS=3)
#        SPILLWAY=/path/to/spillway scripts/bench-bundle.sh   (a prebuilt binary;
#        otherwise a release build into $CARGO_TARGET_DIR, default target/)
#        PIN=1 scripts/bench-bundle.sh   (imports only: the target B on CPU 0,
#        every client and the source A on CPU 1, as when the target is
#        another machine: its CPU, not the client's, sets the pace)
set -euo pipefail
cd "$(dirname "$0")/.."

SERIES=${SERIES:-20000}
HOURS=${HOURS:-6}
STEP=${STEP:-15}
RUNS=${RUNS:-3}
PIN=${PIN:-}
PORT_A=${PORT_A:-18701}
PORT_B=${PORT_B:-18702}

[ -x /usr/bin/time ] || scripts/install-deps.sh time
for b in victoria-metrics vmctl curl unzip script awk; do
  command -v "$b" >/dev/null || { echo "missing $b: run scripts/install-deps.sh victoria-metrics unzip" >&2; exit 1; }
done
if [ -n "${SPILLWAY:-}" ]; then
  BIN=$(realpath "$SPILLWAY")
else
  cargo build --release --locked --quiet
  BIN=$(realpath "${CARGO_TARGET_DIR:-target}")/release/spillway
fi
[ -x "$BIN" ] || { echo "no spillway binary at $BIN" >&2; exit 1; }
[ -z "$PIN" ] || command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
echo "== spillway: $BIN ($("$BIN" --version 2>/dev/null || echo unknown version))"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# With PIN, from the imports on: the target (b) on CPU 0, everything else on CPU 1.
pinning=
server_cpu() { [ -z "$PIN" ] || [ "$1" != b ] || echo "taskset -c 0"; }
client_cpu() { [ -z "$pinning" ] || echo "taskset -c 1"; }
# start_vm NAME PORT: a fresh single node; sets VM_PID.
start_vm() {
  local name=$1 port=$2
  rm -rf "$work/$name"
  $(server_cpu "$name") victoria-metrics -httpListenAddr=127.0.0.1:$port -storageDataPath="$work/$name" \
    -retentionPeriod=100y -search.latencyOffset=0s -loggerLevel=WARN >"$work/$name.log" 2>&1 &
  VM_PID=$!
  pids+=("$VM_PID")
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && return 0
    sleep 0.1
  done
  echo "$name did not start; log:" >&2; cat "$work/$name.log" >&2; exit 1
}
stop_vm() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

points=$((HOURS * 3600 / STEP))
samples=$((SERIES * points))
end=$(( $(date +%s) / 60 * 60 - 120 ))
from=$(( end - HOURS * 3600 - 60 ))
to=$(( end + 60 ))

echo "== data: $SERIES series x $points points = $samples samples ($HOURS h at ${STEP}s); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v series="$SERIES" -v n="$points" -v step="$STEP" -v end="$end" '
BEGIN {
  srand(7)
  ts = ""
  for (i = 0; i < n; i++) ts = ts (i ? "," : "") sprintf("%d000", end - (n - 1 - i) * step)
  for (t = 0; t < 100; t++) {
    v = ""; x = rand() * 100
    for (i = 0; i < n; i++) { x += (rand() - 0.5) * 2; v = v (i ? "," : "") sprintf("%.3f", x) }
    tmpl[t] = v
  }
  split("node_cpu_seconds_total node_load1 node_memory_MemFree_bytes http_requests_total process_resident_memory_bytes go_goroutines vm_rows_inserted_total up scrape_duration_seconds node_network_receive_bytes_total", names, " ")
  for (s = 0; s < series; s++) {
    inst = int(s / 10)
    printf "{\"metric\":{\"__name__\":\"%s\",\"job\":\"job-%02d\",\"instance\":\"10.%d.%d.%d:9100\"},\"values\":[%s],\"timestamps\":[%s]}\n", names[s % 10 + 1], inst % 20, int(inst / 65536) % 256, int(inst / 256) % 256, inst % 256, tmpl[s % 100], ts
  }
}' >"$work/data.jsonl"
start_vm a "$PORT_A"; A_PID=$VM_PID
A=http://127.0.0.1:$PORT_A
B=http://127.0.0.1:$PORT_B
curl -sf --data-binary @"$work/data.jsonl" "$A/api/v1/import"
curl -sf "$A/internal/force_flush" >/dev/null
rm -f "$work/data.jsonl"
for _ in $(seq 1 300); do
  n=$(curl -s "$A/api/v1/series/count" | tr -dc '0-9')
  [ "${n:-0}" -ge "$SERIES" ] && break
  sleep 0.2
done
sleep 5 # let the first background merges settle

# run LABEL SERVER_PID CMD...: one timed run; appends "wall user sys rss_kb server_s" to $work/LABEL.
run() {
  local label=$1 spid=$2; shift 2
  local c0 c1
  c0=$(cpu_ticks "$spid")
  /usr/bin/time -v -o "$work/time.txt" $(client_cpu) "$@" >"$work/$label.out" 2>"$work/$label.err" || {
    echo "$label failed:" >&2; cat "$work/$label.err" >&2; exit 1; }
  c1=$(cpu_ticks "$spid")
  awk -v s="$(( c1 - c0 ))" -v hz="$hz" '
    /Elapsed \(wall clock\)/ { n = split($NF, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time/ { u = $NF } /System time/ { sy = $NF } /Maximum resident/ { r = $NF }
    END { printf "%.3f %.2f %.2f %d %.2f\n", w, u, sy, r, s / hz }' "$work/time.txt" >>"$work/$label"
}
# median LABEL FIELD: median of a column over the runs.
median() { awk -v f="$2" '{print $f}' "$work/$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

json_flag=$("$BIN" gather --help | grep -o -- --json-export | head -1 || true)
echo "== export"
for i in $(seq 1 "$RUNS"); do
  run curl_export "$A_PID" curl -sf -o /dev/null "$A/api/v1/export" \
    --data-urlencode 'match[]={__name__!=""}' -d start=$from -d end=$to
  rm -rf "$work/g1"
  run gather_1w "$A_PID" "$BIN" -q gather --url "$A" --from $from --to $to \
    --obfuscate ips,jobs --batch-window 24h --out "$work/g1"
  rm -rf "$work/gd"
  run gather_default "$A_PID" "$BIN" -q gather --url "$A" --from $from --to $to --obfuscate ips,jobs --out "$work/gd"
  if [ -n "$json_flag" ]; then
    rm -rf "$work/gj"
    run gather_json "$A_PID" "$BIN" -q gather --url "$A" --from $from --to $to \
      --obfuscate ips,jobs --batch-window 24h --json-export --out "$work/gj"
  fi
done
windows_default=$(grep -o '[0-9]* windows' "$work/gather_default.out" | cut -d' ' -f1)
bundle=$(ls "$work"/g1/*.zip)
unzip -p "$bundle" metrics.jsonl >"$work/bundle.jsonl"
bundle_mb=$(( $(stat -c %s "$bundle") / 1048576 ))
jsonl_mb=$(( $(stat -c %s "$work/bundle.jsonl") / 1048576 ))

echo "== import"
if [ -n "$PIN" ]; then
  pinning=1
  taskset -apc 1 "$A_PID" >/dev/null
fi
c1=$("$BIN" import --help | grep -o -- --concurrency | head -1 || true)
# Builds with native blocks (the default where the target reads them) can
# still send JSON lines: measured too, side by side.
wf=$("$BIN" import --help | grep -o -- --wire-format | head -1 || true)
for i in $(seq 1 "$RUNS"); do
  # The check an import makes before it sends anything, alone (no server).
  run check_only "$A_PID" "$BIN" -q gather --verify "$bundle"
  start_vm b "$PORT_B"
  run curl_import "$VM_PID" curl -sf --data-binary @"$work/bundle.jsonl" "$B/api/v1/import"
  stop_vm "$VM_PID"
  start_vm b "$PORT_B"
  run spill_import "$VM_PID" "$BIN" -q import "$bundle" --url "$B"
  # Check + upload, without the wait for the target to show the new series.
  awk '/^checked in/ { gsub("s,", ""); gsub("s$", ""); print $3 + $6 }' "$work/spill_import.out" >>"$work/spill_import_cu"
  stop_vm "$VM_PID"
  if [ -n "$wf" ]; then
    start_vm b "$PORT_B"
    run spill_import_json "$VM_PID" "$BIN" -q import "$bundle" --url "$B" --wire-format json
    awk '/^checked in/ { gsub("s,", ""); gsub("s$", ""); print $3 + $6 }' "$work/spill_import_json.out" >>"$work/spill_import_json_cu"
    stop_vm "$VM_PID"
  fi
  # One request at a time, as vmctl vm-native sends one stream (older builds lack the flag).
  if [ -n "$c1" ]; then
    start_vm b "$PORT_B"
    run spill_import_c1 "$VM_PID" "$BIN" -q import "$bundle" --url "$B" --concurrency 1
    awk '/^checked in/ { gsub("s,", ""); gsub("s$", ""); print $3 + $6 }' "$work/spill_import_c1.out" >>"$work/spill_import_c1_cu"
    stop_vm "$VM_PID"
  fi
done

echo "== vmctl vm-native"
for i in $(seq 1 "$RUNS"); do
  start_vm b "$PORT_B"
  # vmctl 1.79 insists on a terminal for its progress bars.
  run vmctl "$VM_PID" script -qec "vmctl vm-native --vm-native-src-addr $A --vm-native-dst-addr $B \
    --vm-native-filter-match '{__name__!=\"\"}' --vm-native-filter-time-start $from --vm-native-filter-time-end $to" /dev/null
  stop_vm "$VM_PID"
done

rate() { awk -v s="$samples" -v w="$1" 'BEGIN { printf "%.2fM", s / w / 1e6 }'; }
row() {
  local label=$1 name=$2 w u sy r s
  w=$(median "$label" 1); u=$(median "$label" 2); sy=$(median "$label" 3); r=$(median "$label" 4); s=$(median "$label" 5)
  printf "%-44s %8s %10s %8.2f %8d %9s\n" "$name" "$w" "$(rate "$w")" "$(awk -v a="$u" -v b="$sy" 'BEGIN{print a+b}')" $(( r / 1024 )) "$s"
}
echo
echo "samples: $samples; bundle: ${bundle_mb} MiB zip, ${jsonl_mb} MiB metrics.jsonl; runs: $RUNS (median)${PIN:+; imports pinned: target on CPU 0, clients on CPU 1}; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-44s %8s %10s %8s %8s %9s\n" "step" "wall s" "samples/s" "cpu s" "rss MiB" "server s"
row curl_export "curl /api/v1/export > /dev/null"
row gather_1w "spillway gather (1 window, obfuscated, zip)"
row gather_default "spillway gather (default: $windows_default windows)"
[ -z "$json_flag" ] || row gather_json "spillway gather --json-export (1 window)"
row curl_import "curl --data-binary metrics.jsonl > import"
row check_only "spillway gather --verify (import's check)"
row spill_import "spillway import (check+upload+verify)"
printf "%-44s %8s %10s\n" "spillway import (check+upload)" "$(median spill_import_cu 1)" "$(rate "$(median spill_import_cu 1)")"
[ -z "$wf" ] || row spill_import_json "spillway import --wire-format json (c+u+v)"
[ -z "$wf" ] || printf "%-44s %8s %10s\n" "spillway import --wire-format json (c+u)" "$(median spill_import_json_cu 1)" "$(rate "$(median spill_import_json_cu 1)")"
[ -z "$c1" ] || printf "%-44s %8s %10s\n" "spillway import --concurrency 1 (chk+upl)" "$(median spill_import_c1_cu 1)" "$(rate "$(median spill_import_c1_cu 1)")"
row vmctl "vmctl vm-native A -> B"
echo
# ratios NUM DEN: per-run NUM/DEN of the wall times, as "median [min-max]".
ratios() {
  paste -d' ' <(awk '{print $1}' "$work/$1") <(awk '{print $1}' "$work/$2") |
    awk '{ print $1 / $2 }' | sort -g |
    awk '{ a[NR] = $1 } END { printf "%.2f [%.2f-%.2f]", a[int((NR + 1) / 2)], a[1], a[NR] }'
}
awk '{print $1}' "$work/spill_import_cu" >"$work/spill_import_cu1"
paste -d' ' <(awk '{print $1}' "$work/gather_1w") "$work/spill_import_cu1" | awk '{ print $1 + $2 }' >"$work/gather_import"
echo "gather (1 window) / raw export throughput:    $(ratios curl_export gather_1w)"
echo "gather (default windows) / raw export:        $(ratios curl_export gather_default)   (target >= 0.9)"
[ -z "$json_flag" ] || echo "gather --json-export (1 window) / raw export:  $(ratios curl_export gather_json)"
echo "import (check+upload) / raw curl import:      $(ratios curl_import spill_import_cu1)   (target >= 0.95)"
echo "import (with verification) / raw curl import: $(ratios curl_import spill_import)   (target >= 0.8)"
echo "vmctl vm-native / import (check+upload):      $(ratios vmctl spill_import_cu1)   (target >= 1)"
[ -z "$c1" ] || echo "vmctl vm-native / import --concurrency 1:     $(ratios vmctl spill_import_c1_cu)   (one stream each)"
[ -z "$wf" ] || echo "import JSON lines / default (check+upload):   $(ratios spill_import_json_cu spill_import_cu1)   (above 1: the default is faster)"
echo "gather+import / vmctl vm-native:              $(ratios vmctl gather_import)"
# The import's CPU-seconds (client and target, with verification) spread
# perfectly over the cores it may use: the least wall time any overlap of
# checking, converting and sending could reach here. vmctl's wall against
# that: below 1, "import >= vmctl" needs less CPU, not better overlap.
cores=$(nproc)
awk -v cores="$cores" -v pin="$PIN" '{ c = $2 + $3; print (pin ? (c > $5 ? c : $5) : (c + $5) / cores) }' \
  "$work/spill_import" >"$work/import_cpu_floor"
over="$cores cores"; [ -z "$PIN" ] || over="the two pinned CPUs"
echo "vmctl vm-native / import's CPU (with verification) over $over: $(ratios vmctl import_cpu_floor)"
echo "peak RSS: gather $(( $(median gather_1w 4) / 1024 )) MiB, import $(( $(median spill_import 4) / 1024 )) MiB   (target <= 100 MiB)"
