#!/usr/bin/env bash
# The product on one machine, end to end (data and logs under .demo/):
#  1. `spillway run`: a source VictoriaMetrics with 4 hours of synthetic
#     cpu / memory / http series, two destination VictoriaMetrics, and the
#     rules of examples/threshold-export evaluated live for about a minute;
#     then what each destination received, and a replay (backfill) of the
#     last hour into the same destinations.
#  2. `spillway export`: the same source exported with thresholds to files.
# Usage: scripts/demo.sh [RUN_SECONDS]   (default 60)
#        SPILLWAY=PATH scripts/demo.sh     runs a binary built before (e.g. the static one
#                                          of scripts/package.sh) instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo="$root/.demo"
run_seconds=${1:-60}

scripts/install-deps.sh
if [ -n "${SPILLWAY:-}" ]; then
  bin=$SPILLWAY
  echo "== using $bin ($("$bin" --version | head -n 1))"
else
  echo "== building spillway (release)"
  cargo build --release --locked --quiet
  # Where cargo put it: CARGO_TARGET_DIR or build.target-dir may move it off ./target.
  bin=$(scripts/bin-path.sh release spillway)
fi
[ -x "$bin" ] || { echo "spillway was built but is not at $bin" >&2; exit 1; }

free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_ready() {
  for _ in $(seq 1 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "server at $1 did not start; see $2" >&2; exit 1
}

start_vm() { # NAME PORT
  victoria-metrics -httpListenAddr="127.0.0.1:$2" -storageDataPath="$demo/$1" \
    -retentionPeriod=100y -search.latencyOffset=0s -search.disableCache -loggerLevel=WARN >"$demo/$1.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$2/health" "$demo/$1.log"
}

# received URL: per metric name, series and samples a destination holds.
received() {
  curl -sf "$1/internal/force_flush" >/dev/null || true
  curl -sf "$1/api/v1/export" --data-urlencode 'match[]={__name__=~".+"}' |
    awk '{
      match($0, /"__name__":"[^"]*"/); name = substr($0, RSTART + 12, RLENGTH - 13)
      match($0, /"timestamps":\[[^]]*\]/); n = split(substr($0, RSTART + 14, RLENGTH - 15), _, ",")
      if (!(name in series)) names++
      series[name]++; samples[name] += n
    } END {
      if (names == 0) print "    (nothing)"
      for (k in series) printf "    %-32s %3d series %6d samples\n", k, series[k], samples[k]
    }' | sort
}

rm -rf "$demo"
mkdir -p "$demo"
src_port=$(free_port 18428); src="http://127.0.0.1:$src_port"
inc_port=$(free_port $((src_port + 1))); incidents="http://127.0.0.1:$inc_port"
lt_port=$(free_port $((inc_port + 1))); longterm="http://127.0.0.1:$lt_port"
ui_port=$(free_port 18880)

echo "== starting VictoriaMetrics: source $src, incident storage $incidents, long-term storage $longterm"
start_vm source-vm "$src_port"
start_vm incident-vm "$inc_port"
start_vm longterm-vm "$lt_port"

echo "== loading 4 hours (and the next 5 minutes) of synthetic cpu / memory / http series into the source"
scripts/demo-data.sh 4 15 5 | curl -sf --data-binary @- "$src/api/v1/import"
curl -sf "$src/internal/force_flush" >/dev/null

# The demo config: examples/threshold-export/spillway.yml with two of its four
# destinations (incident storage, long-term storage) pointed at the local
# VictoriaMetrics, and its metric rules. Its LogsQL rules (rules/logs.yml)
# need a VictoriaLogs, which no Debian package ships, so they are left out.
cat >"$demo/spillway.yml" <<EOF
datasource:
  url: $src
rule_files:
  - $root/examples/threshold-export/rules/metrics.yml
evaluation:
  interval: 1m
  max_catch_up: 1h
external_labels:
  exported_by: spillway
destinations:
  - name: incident_storage
    type: remote_write
    url: $incidents/api/v1/write
    relabel_configs:
      - if: '{export_target="incident_storage" or severity="critical"}'
        action: keep
  - name: long_term_storage
    type: remote_write
    url: $longterm/api/v1/write
    flush_interval: 5s
    relabel_configs:
      - action: labeldrop
        regex: export_target|prediction_horizon
storage:
  path: $demo/spillway-data
server:
  listen: 127.0.0.1:$ui_port
EOF
echo "   config: .demo/spillway.yml (from examples/threshold-export; two destinations instead of four;"
echo "   the LogsQL rules of rules/logs.yml are left out: no VictoriaLogs package exists to run them against)"

echo
echo "== spillway rules check"
"$bin" rules check "$root"/examples/threshold-export/rules/*.yml

echo
echo "== spillway rules preview: what each destination would get right now (nothing is sent)"
"$bin" rules preview -c "$demo/spillway.yml" 2>/dev/null || true

echo
echo "== spillway run for ${run_seconds}s"
"$bin" run -c "$demo/spillway.yml" >"$demo/spillway.log" 2>&1 &
run_pid=$!
pids+=($run_pid)
wait_ready "http://127.0.0.1:$ui_port/health" "$demo/spillway.log"
echo "   web page:    http://127.0.0.1:$ui_port/   (open it now; it refreshes itself)"
echo "   rules API:   http://127.0.0.1:$ui_port/api/v1/rules"
echo "   metrics:     http://127.0.0.1:$ui_port/metrics"
echo "   log:         .demo/spillway.log"
for ((s = 0; s < run_seconds; s += 10)); do
  sleep 10
  evals=$(curl -sf "http://127.0.0.1:$ui_port/metrics" | awk '/^spillway_rule_evaluations_total/ {n += $2} END {print n + 0}')
  sent=$(curl -sf "http://127.0.0.1:$ui_port/metrics" | awk '/^spillway_samples_sent_total/ {n += $2} END {print n + 0}')
  echo "   t=$((s + 10))s: $evals rule evaluations, $sent samples delivered"
done
echo "   stopping spillway (SIGTERM: rules stop, then destinations deliver what they hold)"
kill -TERM "$run_pid"
wait "$run_pid" || true

echo
echo "== what the destinations received"
echo "  incident storage ($incidents): critical breaches only"
received "$incidents"
echo "  long-term storage ($longterm): every breach, routing labels dropped"
received "$longterm"
echo "  a sample series in incident storage:"
curl -sf "$incidents/api/v1/export" --data-urlencode 'match[]={__name__="critical_cpu_usage_export"}' | head -n 1 | cut -c1-300

echo
echo "== spillway replay: backfill the last hour of static_thresholds into the same destinations"
"$bin" replay -c "$demo/spillway.yml" --from now-1h --group static_thresholds --drain-timeout 30s
echo "  incident storage after the replay:"
received "$incidents"

out="$demo/export"
echo
echo "== spillway export (thresholds: examples/export/thresholds.yml)"
(cd examples/export && "$bin" export --config export.yml --url "$src" --out "$out")
echo
echo "== export results in .demo/export"
ls -l "$out"
echo
echo "first alerts:"
head -n 6 "$out"/alerts_*.csv

# Breach capture (issue 9), a step of its own: the example's `cpu_context`
# capture copies the raw series around critical CPU breaches into a debug
# storage, here through a replay of the last half hour.
dbg_port=$(free_port $((lt_port + 1))); debug="http://127.0.0.1:$dbg_port"
echo
echo "== breach capture: the raw context of critical CPU breaches into a debug storage ($debug)"
start_vm debug-vm "$dbg_port"
cat >"$demo/capture.yml" <<EOF2
datasource:
  url: $src
rule_files:
  - $root/examples/threshold-export/rules/metrics.yml
destinations:
  - name: debug_storage
    type: remote_write
    url: $debug/api/v1/write
    relabel_configs:
      - source_labels: [export_target]
        regex: debug_storage
        action: keep
captures:
  - name: cpu_context
    if: '{severity="critical"}'
    rules: [static_thresholds/critical_cpu_usage_export]
    match: '{instance="{{ \$labels.instance }}"}'
    before: 10m
    after: 5m
    destinations: [debug_storage]
    labels: {export_target: debug_storage, captured_by: cpu_context}
storage:
  path: $demo/capture-data
EOF2
echo "   config: .demo/capture.yml (the debug storage and the capture of examples/threshold-export)"
"$bin" replay -c "$demo/capture.yml" --from now-30m --group static_thresholds --drain-timeout 30s
echo "  the captured series in debug storage (raw samples, every 15s, around the breach):"
curl -sf "$debug/internal/force_flush" >/dev/null || true
curl -sf "$debug/api/v1/export" --data-urlencode 'match[]={captured_by="cpu_context"}' |
  awk '{
    match($0, /"metric":\{[^}]*\}/); m = substr($0, RSTART + 9, RLENGTH - 9)
    match($0, /"timestamps":\[[^]]*\]/); n = split(substr($0, RSTART + 14, RLENGTH - 15), _, ",")
    printf "    %-110s %4d samples\n", m, n
  }' | sort
