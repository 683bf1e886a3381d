#!/usr/bin/env bash
# Event destinations benchmark: the same remote-write load (default 1M
# samples) pushed into `spillway run`, whose one destination is, in turn:
#   remote_write  → a local VictoriaMetrics (the baseline)
#   syslog tcp    → a local rsyslogd (octet-counted TCP, JSON events)
#   syslog relp   → the same rsyslogd over RELP (every message acknowledged)
#   elasticsearch → a fake _bulk (Python) answering 201 for every item
#   splunk_hec    → a fake HEC (Python) answering {"text":"Success","code":0}
#   webhook       → a fake receiver (Python) of JSON arrays
#   file          → JSON lines in a temp dir, rotated at 64 MiB
# For each, RUNS runs (default 3): events/s (push start to the last event
# counted as sent by spillway) and spillway's CPU seconds per million
# events; then the median and the spread (min..max) per type, and the
# ratio of CPU per event to remote_write's.
#
#   scripts/bench-events.sh
#   SAMPLES=200000 RUNS=1 TYPES="remote_write file" scripts/bench-events.sh
#   RELP_WINDOW=1024 TYPES=syslog_relp scripts/bench-events.sh   (relp_window)
#
# SPILLWAY, LOADGEN: prebuilt binaries to measure (spillway, and
# examples/remote_write_load); without them a release build is made here.
# Needs rsyslog (+ rsyslog-relp), victoria-metrics, python3, curl
# (scripts/install-deps.sh). Everything listens on loopback and lives in a
# temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

SAMPLES=${SAMPLES:-1000000}
SERIES=${SERIES:-10000}
PER_REQUEST=${PER_REQUEST:-10000}
CONCURRENCY=${CONCURRENCY:-2}
RUNS=${RUNS:-3}
TYPES=${TYPES:-"remote_write syslog_tcp syslog_relp elasticsearch splunk_hec webhook file"}

for bin in victoria-metrics curl python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/install-deps.sh" >&2; exit 2; }
done
RSYSLOGD=/usr/sbin/rsyslogd
[ -x "$RSYSLOGD" ] || { echo "missing rsyslogd: run scripts/install-deps.sh" >&2; exit 2; }

bench_spillway
bench_loadgen

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

wait_tcp() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timeout waiting for port $1" >&2; exit 1
}

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14+$15)/hz}' "/proc/$1/stat"; }

# --- receivers --------------------------------------------------------------

VM_PORT=$(free_port)
victoria-metrics -httpListenAddr=127.0.0.1:$VM_PORT -storageDataPath="$WORK/vm" \
  -retentionPeriod=100y -loggerLevel=WARN >"$WORK/vm.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$VM_PORT/health"

TCP_PORT=$(free_port); RELP_PORT=$(free_port)
mkdir -p "$WORK/rsyslog"
cat >"$WORK/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$WORK/rsyslog")
module(load="imtcp")
module(load="imrelp")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="out") { action(type="omfile" file="$WORK/rsyslog/out.log" template="msgonly" asyncWriting="on" ioBufferSize="1m" flushOnTXEnd="off") }
input(type="imtcp" port="$TCP_PORT" address="127.0.0.1" ruleset="out")
input(type="imrelp" port="$RELP_PORT" address="127.0.0.1" ruleset="out")
EOF
"$RSYSLOGD" -n -f "$WORK/rsyslog/rsyslog.conf" -i "$WORK/rsyslog/pid" >"$WORK/rsyslog.log" 2>&1 &
PIDS+=($!)
wait_tcp "$TCP_PORT"; wait_tcp "$RELP_PORT"

# One Python process plays Elasticsearch _bulk, Splunk HEC and a webhook;
# it counts events with byte counts only, so it stays out of the way.
FAKE_PORT=$(free_port)
cat >"$WORK/fake.py" <<'PY'
import http.server, json, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/_bulk"):
            n = body.count(b"\n") // 2
            out = b'{"took":1,"errors":false,"items":[' + b",".join([b'{"index":{"status":201}}'] * n) + b"]}"
        elif self.path.startswith("/services/collector"):
            out = b'{"text":"Success","code":0}'
        else:
            out = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$WORK/fake.py" "$FAKE_PORT" >"$WORK/fake.log" 2>&1 &
PIDS+=($!)
wait_tcp "$FAKE_PORT"

destination() { # type -> the destinations: entry
  case $1 in
    remote_write) echo "{name: d, type: remote_write, url: 'http://127.0.0.1:$VM_PORT/api/v1/write'}" ;;
    syslog_tcp) echo "{name: d, type: syslog, url: 'tcp://127.0.0.1:$TCP_PORT'}" ;;
    syslog_relp) echo "{name: d, type: syslog, url: 'relp://127.0.0.1:$RELP_PORT'${RELP_WINDOW:+, relp_window: $RELP_WINDOW}}" ;;
    elasticsearch) echo "{name: d, type: elasticsearch, url: 'http://127.0.0.1:$FAKE_PORT', index: 'spillway-%Y.%m.%d'}" ;;
    splunk_hec) echo "{name: d, type: splunk_hec, url: 'http://127.0.0.1:$FAKE_PORT', token: t}" ;;
    webhook) echo "{name: d, type: webhook, url: 'http://127.0.0.1:$FAKE_PORT/hook'}" ;;
    file) echo "{name: d, type: file, directory: '$WORK/files', max_bytes: 64MiB, keep: 2}" ;;
  esac
}

sent() { # port -> events the destination answered for
  curl -s "http://127.0.0.1:$1/api/v1/destinations" | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]["destinations"][0]
print(d["samples_sent"] + d["dead_letter"] if "dead_letter" in d else d["samples_sent"])'
}

run_one() { # type run -> "events_per_s cpu_per_million"
  local type=$1 run=$2 port dir
  port=$(free_port); dir="$WORK/$type-$run"
  mkdir -p "$dir"; rm -rf "$WORK/files"
  cat >"$dir/spillway.yml" <<EOF
server: {listen: 127.0.0.1:$port}
storage: {path: $dir/queues}
destinations:
  - $(destination "$type")
EOF
  "$SPILLWAY" run -c "$dir/spillway.yml" --log-format json >"$dir/spillway.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  wait_http "http://127.0.0.1:$port/health"
  local cpu0 t0 t1 cpu1
  cpu0=$(cpu_seconds "$pid"); t0=$(date +%s.%N)
  "$LOADGEN" --url "http://127.0.0.1:$port/api/v1/write" --series "$SERIES" --samples "$SAMPLES" \
    --per-request "$PER_REQUEST" --concurrency "$CONCURRENCY" --start-ms $(( ($(date +%s) - 86400) * 1000 )) \
    >"$dir/load.log" 2>&1
  local deadline=$((SECONDS + 900))
  while [ "$(sent "$port")" -lt "$SAMPLES" ]; do
    [ $SECONDS -lt $deadline ] || { echo "$type: only $(sent "$port") of $SAMPLES sent; see $dir" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N); cpu1=$(cpu_seconds "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "import sys; t0,t1,c0,c1,n=map(float,sys.argv[1:]); print(f'{n/(t1-t0):.0f} {(c1-c0)/(n/1e6):.3f}')" \
    "$t0" "$t1" "$cpu0" "$cpu1" "$SAMPLES"
}

echo "== $SAMPLES events per run ($SERIES series), $RUNS runs per type"
RESULTS="$WORK/results"
: >"$RESULTS"
for type in $TYPES; do
  for run in $(seq 1 "$RUNS"); do
    r=$(run_one "$type" "$run")
    echo "$type $r" >>"$RESULTS"
    printf '  %-14s run %d: %9s events/s  %7s CPU-s per million\n' "$type" "$run" $r
  done
done

echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    t, rate, cpu = line.split()
    rows.setdefault(t, []).append((float(rate), float(cpu)))
base = statistics.median(c for _, c in rows["remote_write"]) if "remote_write" in rows else None
print(f"{'type':14} {'events/s median':>16} {'(min..max)':>22} {'CPU-s/M median':>15} {'(min..max)':>16} {'CPU vs remote_write':>20}")
for t, v in rows.items():
    rates = [r for r, _ in v]; cpus = [c for _, c in v]
    rel = f"{statistics.median(cpus)/base:.2f}x" if base else "n/a"
    print(f"{t:14} {statistics.median(rates):16.0f} {f'({min(rates):.0f}..{max(rates):.0f})':>22} "
          f"{statistics.median(cpus):15.3f} {f'({min(cpus):.3f}..{max(cpus):.3f})':>16} {rel:>20}")
PY
