#!/usr/bin/env bash
# Router benchmark: the same remote-write load pushed into (a) vmagent with two
# relabel-routed -remoteWrite.url and (b) `spillway run` with the same two
# routes, each delivering into its own pair of local VictoriaMetrics. Prints
# samples/s (push start to last sample stored), CPU seconds per million
# samples and peak RSS of the router process, and spillway/vmagent ratios.
#
#   scripts/bench-router.sh                 # 4M samples over 20k series
#   SAMPLES=5000000 SERIES=50000 scripts/bench-router.sh
#
# Needs victoria-metrics and vmagent (scripts/install-deps.sh) and a release
# build (done here). Everything listens on loopback and lives in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${SAMPLES:-4000000}
SERIES=${SERIES:-20000}
PER_REQUEST=${PER_REQUEST:-10000}
CONCURRENCY=${CONCURRENCY:-4}

for bin in victoria-metrics vmagent curl python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/install-deps.sh" >&2; exit 2; }
done

echo "== building (release)"
cargo build --release --quiet --bin spillway --example remote_write_load
SPILLWAY=target/release/spillway
LOADGEN=target/release/examples/remote_write_load

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() {
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; exit 1
}

start_vm() { # name -> prints port
  local port; port=$(free_port)
  victoria-metrics -httpListenAddr=127.0.0.1:$port -storageDataPath="$WORK/$1" \
    -retentionPeriod=100y -loggerLevel=WARN >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/health"
  echo "$port"
}

rows() { # port -> rows stored by that VictoriaMetrics
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^vm_rows_inserted_total/ {s+=$2} END {printf "%d", s}'
}

cpu_seconds() { # pid -> user+system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14+$15)/hz}' "/proc/$1/stat"
}

peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

cat >"$WORK/route_a.yml" <<'YAML'
- action: keep
  source_labels: [route]
  regex: a
YAML
cat >"$WORK/route_b.yml" <<'YAML'
- action: keep
  source_labels: [route]
  regex: b
YAML

# Every series gets SAMPLES/SERIES samples; half go each way.
HALF=$((SAMPLES / 2))

measure() { # name pid push_url port_a port_b -> "samples_per_s cpu_per_million peak_rss"
  local name=$1 pid=$2 url=$3 pa=$4 pb=$5
  local cpu0 t0 t1 cpu1 rss
  cpu0=$(cpu_seconds "$pid")
  t0=$(date +%s.%N)
  "$LOADGEN" --url "$url" --series "$SERIES" --samples "$SAMPLES" \
    --per-request "$PER_REQUEST" --concurrency "$CONCURRENCY" >"$WORK/$name.load" 2>"$WORK/$name.loaderr"
  local deadline=$((SECONDS + 600))
  while :; do
    local ra rb; ra=$(rows "$pa"); rb=$(rows "$pb")
    if [ "$ra" -ge "$HALF" ] && [ "$rb" -ge "$HALF" ]; then break; fi
    [ $SECONDS -lt $deadline ] || { echo "$name: destinations got $ra + $rb of $SAMPLES" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  cpu1=$(cpu_seconds "$pid")
  rss=$(peak_rss_mib "$pid")
  python3 - "$t0" "$t1" "$cpu0" "$cpu1" "$rss" "$SAMPLES" <<'PY'
import sys
t0, t1, c0, c1, rss, n = map(float, sys.argv[1:])
print(f"{n/(t1-t0):.0f} {(c1-c0)/(n/1e6):.3f} {rss:.1f} {t1-t0:.2f} {c1-c0:.2f}")
PY
}

echo "== $SAMPLES samples, $SERIES series, $PER_REQUEST samples/request, $CONCURRENCY pushers"

# (a) vmagent
VA=$(start_vm vmagent-dest-a); VB=$(start_vm vmagent-dest-b)
AGENT_PORT=$(free_port)
vmagent -httpListenAddr=127.0.0.1:$AGENT_PORT -loggerLevel=WARN \
  -remoteWrite.tmpDataPath="$WORK/vmagent-queue" \
  -remoteWrite.url=http://127.0.0.1:$VA/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/route_a.yml" \
  -remoteWrite.url=http://127.0.0.1:$VB/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/route_b.yml" \
  >"$WORK/vmagent.log" 2>&1 &
AGENT_PID=$!; PIDS+=($AGENT_PID)
wait_http "http://127.0.0.1:$AGENT_PORT/health"
# Debian's build reports an empty vm_app_version; ask the package instead.
AGENT_VERSION=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null | cut -d- -f1 || true)
read -r A_RATE A_CPU A_RSS A_SECS A_CPUS < <(measure vmagent "$AGENT_PID" \
  "http://127.0.0.1:$AGENT_PORT/api/v1/write" "$VA" "$VB")
kill "$AGENT_PID"

# (b) spillway
SA=$(start_vm spillway-dest-a); SB=$(start_vm spillway-dest-b)
SP_PORT=$(free_port)
cat >"$WORK/spillway.yml" <<YAML
storage: {path: "$WORK/spillway-data"}
destinations:
  - name: route_a
    url: http://127.0.0.1:$SA/api/v1/write
    relabel_configs: [{action: keep, source_labels: [route], regex: a}]
  - name: route_b
    url: http://127.0.0.1:$SB/api/v1/write
    relabel_configs: [{action: keep, source_labels: [route], regex: b}]
YAML
"$SPILLWAY" -q run -c "$WORK/spillway.yml" --http.listen 127.0.0.1:$SP_PORT >"$WORK/spillway.log" 2>&1 &
SP_PID=$!; PIDS+=($SP_PID)
wait_http "http://127.0.0.1:$SP_PORT/health"
read -r S_RATE S_CPU S_RSS S_SECS S_CPUS < <(measure spillway "$SP_PID" \
  "http://127.0.0.1:$SP_PORT/api/v1/write" "$SA" "$SB")
kill "$SP_PID"

echo
printf "%-22s %14s %18s %14s %10s %10s\n" router "samples/s" "CPU s / 1M samples" "peak RSS MiB" "wall s" "CPU s"
printf "%-22s %14s %18s %14s %10s %10s\n" "vmagent ${AGENT_VERSION:-?}" "$A_RATE" "$A_CPU" "$A_RSS" "$A_SECS" "$A_CPUS"
printf "%-22s %14s %18s %14s %10s %10s\n" "spillway $($SPILLWAY --version | awk '{print $2}')" "$S_RATE" "$S_CPU" "$S_RSS" "$S_SECS" "$S_CPUS"
python3 - "$A_RATE" "$A_CPU" "$A_RSS" "$S_RATE" "$S_CPU" "$S_RSS" <<'PY'
import sys
ar, ac, am, sr, sc, sm = map(float, sys.argv[1:])
print(f"{'spillway / vmagent':<22} {sr/ar:>14.2f} {sc/ac:>18.2f} {sm/am:>14.2f}")
print(f"targets: CPU per sample <= 0.70 ({'met' if sc/ac <= 0.7 else 'NOT met'}), peak RSS <= 0.70 ({'met' if sm/am <= 0.7 else 'NOT met'})")
PY
