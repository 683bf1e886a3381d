#!/usr/bin/env bash
# Benchmark of breach capture (issue 9): copying the raw data of SERIES
# series x HOURS hours at STEP seconds from one VictoriaMetrics (A) to a
# second one (B), through a capture (`spillway capture`: series count,
# chunked /api/v1/export, parsing, the destination's relabeling, encoding,
# disk queue and remote write, until B acknowledged everything), against
# the pipe that does the same with nothing in between:
#   curl A/api/v1/export | curl --data-binary @- B/api/v1/import
# Each side runs RUNS times against a fresh B; shown are the median, the
# spread (min..max), throughput in samples/s, client CPU and peak RSS, the
# CPU the source server (A, the one in an incident) spent on the copy, and
# the ratio of the throughputs. Not a test: nothing fails on slow numbers.
#
# Usage: scripts/bench-capture.sh            (SERIES=1000 HOURS=1 STEP=15 RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

SERIES=${SERIES:-1000}
HOURS=${HOURS:-1}
STEP=${STEP:-15}
RUNS=${RUNS:-3}

[ -x /usr/bin/time ] || scripts/install-deps.sh time
for b in victoria-metrics curl awk; do
  command -v "$b" >/dev/null || { echo "missing $b: run scripts/install-deps.sh" >&2; exit 1; }
done
cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/spillway

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_vm NAME PORT: a fresh single node; sets VM_PID.
start_vm() {
  local name=$1 port=$2
  rm -rf "$work/$name"
  victoria-metrics -httpListenAddr=127.0.0.1:$port -storageDataPath="$work/$name" \
    -retentionPeriod=100y -search.latencyOffset=0s -loggerLevel=WARN >"$work/$name.log" 2>&1 &
  VM_PID=$!
  pids+=("$VM_PID")
  wait_ready "http://127.0.0.1:$port/health"
}
stop_vm() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

PORT_A=$(free_port 18801)
PORT_B=$(free_port $((PORT_A + 1)))
A=http://127.0.0.1:$PORT_A
B=http://127.0.0.1:$PORT_B
points=$((HOURS * 3600 / STEP))
samples=$((SERIES * points))
end=$(( $(date +%s) / 60 * 60 - 600 ))
from=$(( end - HOURS * 3600 ))
to=$(( end - 1 ))

echo "== data: $SERIES series x $points points = $samples samples ($HOURS h at ${STEP}s); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v series="$SERIES" -v n="$points" -v step="$STEP" -v from="$from" '
BEGIN {
  srand(11)
  for (s = 0; s < series; s++) {
    v = ""; ts = ""; x = rand() * 100
    for (i = 0; i < n; i++) {
      x += (rand() - 0.5) * 2
      v = v (i ? "," : "") sprintf("%.3f", x)
      # Raw scrape times: the step plus a jitter of up to a second.
      # %d of mawk stops at 2^31: seconds and milliseconds are printed apart.
      ts = ts (i ? "," : "") sprintf("%d%03d", from + i * step, int(rand() * 1000))
    }
    printf "{\"metric\":{\"__name__\":\"node_cpu_usage\",\"job\":\"bench\",\"instance\":\"host-%04d:9100\"},\"values\":[%s],\"timestamps\":[%s]}\n", s, v, ts
  }
}' >"$work/data.jsonl"
start_vm a "$PORT_A"; A_PID=$VM_PID
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
curl -sf --data-binary @"$work/data.jsonl" "$A/api/v1/import"
curl -sf "$A/internal/force_flush" >/dev/null
rm -f "$work/data.jsonl"
got=$(curl -sf "$A/api/v1/export" --data-urlencode 'match[]={job="bench"}' -d start=$from -d end=$to | awk -F'"timestamps":[[]' '{n += split($2, t, ",")} END {print n+0}')
[ "$got" -eq "$samples" ] || { echo "source holds $got samples, expected $samples" >&2; exit 1; }
sleep 3

cat >"$work/run.yml" <<EOF
datasource: {url: '$A'}
storage: {path: '$work/spill'}
destinations:
  - name: b
    url: $B/api/v1/write
EOF

# run LABEL CMD...: one timed run; appends "wall cpu rss_kb source_cpu" to $work/LABEL.
run() {
  local label=$1 c0 c1; shift
  c0=$(cpu_ticks "$A_PID")
  /usr/bin/time -f "%e %U %S %M" -o "$work/time.txt" "$@" >"$work/$label.out" 2>"$work/$label.err" || {
    echo "$label failed:" >&2; cat "$work/$label.out" "$work/$label.err" >&2; exit 1; }
  c1=$(cpu_ticks "$A_PID")
  awk -v s="$(( c1 - c0 ))" -v hz="$hz" '{ printf "%.3f %.2f %d %.2f\n", $1, $2 + $3, $4, s / hz }' "$work/time.txt" >>"$work/$label"
}
# check: B holds every sample (not timed).
check() {
  curl -sf "$B/internal/force_flush" >/dev/null
  local n
  n=$(curl -sf "$B/api/v1/export" --data-urlencode 'match[]={job="bench"}' -d start=$from -d end=$to | awk -F'"timestamps":[[]' '{n += split($2, t, ",")} END {print n+0}')
  [ "$n" -eq "$samples" ] || { echo "$1: B holds $n samples, expected $samples" >&2; exit 1; }
}

for i in $(seq 1 "$RUNS"); do
  echo "== run $i/$RUNS"
  start_vm b "$PORT_B"
  run pipe bash -c "curl -sf '$A/api/v1/export' --data-urlencode 'match[]={job=\"bench\"}' -d start=$from -d end=$to \
    | curl -sf --data-binary @- '$B/api/v1/import'"
  check pipe
  stop_vm "$VM_PID"
  start_vm b "$PORT_B"
  rm -rf "$work/spill"
  run capture "$BIN" -q capture -c "$work/run.yml" --match '{job="bench"}' --from $from --to $to \
    --destination b --max-series $((SERIES * 2)) --max-samples $((samples * 2)) --drain-timeout 5m
  check capture
  stop_vm "$VM_PID"
done

# stat LABEL FIELD: "median min max" of a column over the runs.
stat() { awk -v f="$2" '{print $f}' "$work/$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[1], a[NR]}'; }
row() {
  local label=$1 name=$2 w lo hi c r a
  read -r w lo hi < <(stat "$label" 1)
  read -r c _ _ < <(stat "$label" 2)
  read -r r _ _ < <(stat "$label" 3)
  read -r a _ _ < <(stat "$label" 4)
  printf "%-46s %8s %16s %12s %8s %8d %9s\n" "$name" "$w" "$lo..$hi" \
    "$(awk -v s="$samples" -v w="$w" 'BEGIN { printf "%.0f", s / w }')" "$c" $(( r / 1024 )) "$a"
}
echo
echo "samples: $samples; runs: $RUNS; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-46s %8s %16s %12s %8s %8s %9s\n" "step" "wall s" "spread s" "samples/s" "cpu s" "rss MiB" "source s"
row pipe "curl export | curl import"
row capture "spillway capture (export -> queue -> write)"
read -r pw _ _ < <(stat pipe 1)
read -r cw _ _ < <(stat capture 1)
read -r cr _ _ < <(stat capture 3)
echo
echo "capture / pipe throughput: $(awk -v p="$pw" -v c="$cw" 'BEGIN { printf "%.2f", p / c }')   (target >= 0.8)"
echo "capture peak RSS: $(( cr / 1024 )) MiB   (target <= 100 MiB)"
