#!/usr/bin/env bash
# Continuous threshold export benchmark: `spillway run` alone against the pair
# it replaces, vmalert + vmagent, in one run over the same window.
#
#   source VictoriaMetrics: SERIES series (default 50,000), constant values
#   rules: 20 recording rules in one group, every 5s, each over 1/20 of the
#          series and keeping ~80% of them (about 40,000 results per round)
#   routing: by the rules' export_target label to three destinations
#   (a) vmalert -> vmagent (3 x -remoteWrite.url + urlRelabelConfig) -> 3 VMs
#   (b) spillway run (3 destinations, same relabel configs)            -> 3 VMs
#
# Both evaluate the same rule file against the same source at the same time
# for WINDOW seconds (default 120) after a WARMUP (default 20). Printed:
# CPU seconds over the window and peak RSS (vmalert + vmagent summed),
# evaluation latency from each tool's own iteration-duration metrics, and the
# delay from a result's evaluation timestamp to when it can be read back from
# its destination (one probe series per destination, polled every 100ms
# after a /internal/force_flush, so VictoriaMetrics' own ~1s ingestion buffer
# is not counted),
# then spillway / pair ratios.
#
#   scripts/bench-run.sh
#   SERIES=20000 WINDOW=60 scripts/bench-run.sh
#
# Needs victoria-metrics, vmagent, vmalert (scripts/install-deps.sh) and
# python3; builds the release binary. Everything listens on loopback and
# lives in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

SERIES=${SERIES:-50000}
WINDOW=${WINDOW:-120}
WARMUP=${WARMUP:-20}
RULES=20

for bin in victoria-metrics vmagent vmalert curl python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/install-deps.sh" >&2; exit 2; }
done

echo "== building (release)"
cargo build --release --quiet --bin spillway
SPILLWAY=$(pwd)/target/release/spillway

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
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; exit 1
}

start_vm() { # name -> prints port
  local port; port=$(free_port)
  victoria-metrics -httpListenAddr=127.0.0.1:$port -storageDataPath="$WORK/$1" \
    -retentionPeriod=100y -search.latencyOffset=0s -search.disableCache -loggerLevel=WARN \
    >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/health"
  echo "$port"
}

cpu_seconds() { # pid -> user+system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14+$15)/hz}' "/proc/$1/stat"
}

peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# metric_sum URL NAME -> sum of all series of NAME in the Prometheus text at URL
metric_sum() {
  curl -s "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%.6f", s}'
}

echo "== source: $SERIES series"
SRC=$(start_vm source)
python3 - "$SERIES" "$RULES" <<'PY' | curl -sf --data-binary @- "http://127.0.0.1:$SRC/api/v1/import"
import json, sys, time
series, rules = int(sys.argv[1]), int(sys.argv[2])
now = int(time.time())
# 15s resolution from 10 minutes ago to 10 minutes ahead: every query the
# benchmark makes finds a fresh point.
ts = [(now - 600 + 15 * i) * 1000 for i in range(81)]
for n in range(series):
    v = (n * 7) % 100
    line = {"metric": {"__name__": "bench_value", "series": str(n), "rule": f"r{n % rules}"},
            "values": [v] * len(ts), "timestamps": ts}
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
PY
curl -sf "http://127.0.0.1:$SRC/internal/force_flush" >/dev/null

# 20 rules; rules 0-6 go to destination d1, 7-13 to d2, 14-19 to d3.
{
  echo "groups:"
  echo "  - name: bench"
  echo "    interval: 5s"
  echo "    rules:"
  for ((r = 0; r < RULES; r++)); do
    d=$((r * 3 / RULES + 1))
    echo "      - record: bench:r$r"
    echo "        expr: bench_value{rule=\"r$r\"} > 20"
    echo "        labels: {export_target: d$d}"
  done
} >"$WORK/rules.yml"
for d in 1 2 3; do
  printf -- "- action: keep\n  source_labels: [export_target]\n  regex: d%s\n" "$d" >"$WORK/d$d.yml"
done

echo "== destinations: 3 for the pair, 3 for spillway"
A1=$(start_vm pair-d1); A2=$(start_vm pair-d2); A3=$(start_vm pair-d3)
B1=$(start_vm spillway-d1); B2=$(start_vm spillway-d2); B3=$(start_vm spillway-d3)

AGENT_PORT=$(free_port)
vmagent -httpListenAddr=127.0.0.1:$AGENT_PORT -loggerLevel=WARN \
  -remoteWrite.tmpDataPath="$WORK/vmagent-queue" -remoteWrite.flushInterval=1s \
  -remoteWrite.url=http://127.0.0.1:$A1/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/d1.yml" \
  -remoteWrite.url=http://127.0.0.1:$A2/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/d2.yml" \
  -remoteWrite.url=http://127.0.0.1:$A3/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/d3.yml" \
  >"$WORK/vmagent.log" 2>&1 &
AGENT_PID=$!; PIDS+=($AGENT_PID)
wait_http "http://127.0.0.1:$AGENT_PORT/health"

ALERT_PORT=$(free_port)
vmalert -httpListenAddr=127.0.0.1:$ALERT_PORT -loggerLevel=WARN \
  -datasource.url=http://127.0.0.1:$SRC -rule="$WORK/rules.yml" \
  -remoteWrite.url=http://127.0.0.1:$AGENT_PORT -remoteWrite.flushInterval=1s \
  -notifier.url=http://127.0.0.1:1 \
  >"$WORK/vmalert.log" 2>&1 &
ALERT_PID=$!; PIDS+=($ALERT_PID)
wait_http "http://127.0.0.1:$ALERT_PORT/health"

SP_PORT=$(free_port)
cat >"$WORK/spillway.yml" <<YAML
datasource: {url: "http://127.0.0.1:$SRC"}
rule_files: ["$WORK/rules.yml"]
evaluation: {eval_delay: 0s}
storage: {path: "$WORK/spillway-data"}
destinations:
  - {name: d1, url: "http://127.0.0.1:$B1/api/v1/write", relabel_configs: [{action: keep, source_labels: [export_target], regex: d1}]}
  - {name: d2, url: "http://127.0.0.1:$B2/api/v1/write", relabel_configs: [{action: keep, source_labels: [export_target], regex: d2}]}
  - {name: d3, url: "http://127.0.0.1:$B3/api/v1/write", relabel_configs: [{action: keep, source_labels: [export_target], regex: d3}]}
YAML
${SPILLWAY_WRAPPER:-} "$SPILLWAY" -q run -c "$WORK/spillway.yml" --http.listen 127.0.0.1:$SP_PORT >"$WORK/spillway.log" 2>&1 &
SP_PID=$!; PIDS+=($SP_PID)
wait_http "http://127.0.0.1:$SP_PORT/health"

echo "== warming up for ${WARMUP}s"
sleep "$WARMUP"

snapshot() { # -> "cpu_spillway cpu_vmalert cpu_vmagent sp_sum sp_count va_sum va_count"
  echo "$(cpu_seconds $SP_PID) $(cpu_seconds $ALERT_PID) $(cpu_seconds $AGENT_PID)" \
    "$(metric_sum http://127.0.0.1:$SP_PORT/metrics spillway_group_iteration_duration_seconds_sum)" \
    "$(metric_sum http://127.0.0.1:$SP_PORT/metrics spillway_group_iteration_duration_seconds_count)" \
    "$(metric_sum http://127.0.0.1:$ALERT_PORT/metrics vmalert_iteration_duration_seconds_sum)" \
    "$(metric_sum http://127.0.0.1:$ALERT_PORT/metrics vmalert_iteration_duration_seconds_count)"
}

echo "== measuring for ${WINDOW}s"
BEFORE=$(snapshot)
# One probe series per destination and side: the first series of the first
# rule routed there. Each new timestamp's delay = first seen - timestamp.
python3 - "$WINDOW" "$WORK/delays" \
  "pair:$A1:bench:r0" "pair:$A2:bench:r7" "pair:$A3:bench:r14" \
  "spillway:$B1:bench:r0" "spillway:$B2:bench:r7" "spillway:$B3:bench:r14" <<'PY'
import json, sys, time, urllib.parse, urllib.request
window, out = float(sys.argv[1]), sys.argv[2]
probes = []
for spec in sys.argv[3:]:
    side, port, name = spec.split(":", 2)
    # bench_value{series="N"} with N % 20 == rule and a value above 20.
    rule = int(name.rsplit("r", 1)[1])
    n = next(n for n in range(rule, 10**6, 20) if (n * 7) % 100 > 20)
    sel = '{__name__="%s",series="%d"}' % (name, n)
    url = "http://127.0.0.1:%s/api/v1/export?%s" % (port, urllib.parse.urlencode({"match[]": sel}))
    probes.append((side, port, url))
start = time.time()
seen = {}  # (side, url, ts) -> first seen, before the flush that showed it
while time.time() - start < window:
    for side, port, url in probes:
        now = time.time()
        try:
            # Make what arrived searchable now: the delay measured is the
            # pipeline's, not the destination's ingestion buffer (~1s).
            urllib.request.urlopen("http://127.0.0.1:%s/internal/force_flush" % port, timeout=5).read()
            body = urllib.request.urlopen(url, timeout=5).read().decode()
        except Exception:
            continue
        for line in body.splitlines():
            for ts in json.loads(line)["timestamps"]:
                seen.setdefault((side, url, ts), now)
    time.sleep(0.1)
with open(out, "w") as f:
    for (side, url, ts), t in seen.items():
        # Only timestamps evaluated inside the window count.
        if ts / 1000 >= start:
            f.write("%s %.3f\n" % (side, t - ts / 1000))
PY
AFTER=$(snapshot)
S_RSS=$(peak_rss_mib $SP_PID); VA_RSS=$(peak_rss_mib $ALERT_PID); AG_RSS=$(peak_rss_mib $AGENT_PID)
SENT=$(metric_sum http://127.0.0.1:$SP_PORT/metrics spillway_samples_sent_total)
ROWS_PAIR=0; ROWS_SP=0
for p in $A1 $A2 $A3; do ROWS_PAIR=$((ROWS_PAIR + $(curl -s "http://127.0.0.1:$p/metrics" | awk '/^vm_rows_inserted_total/ {s+=$2} END {printf "%d", s}'))); done
for p in $B1 $B2 $B3; do ROWS_SP=$((ROWS_SP + $(curl -s "http://127.0.0.1:$p/metrics" | awk '/^vm_rows_inserted_total/ {s+=$2} END {printf "%d", s}'))); done
VERSION=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null | cut -d- -f1 || true)

python3 - "$BEFORE" "$AFTER" "$S_RSS" "$VA_RSS" "$AG_RSS" "$WORK/delays" "$WINDOW" \
  "$SERIES" "$ROWS_PAIR" "$ROWS_SP" "${VERSION:-?}" "$("$SPILLWAY" --version | awk '{print $2}')" <<'PY'
import sys
b = list(map(float, sys.argv[1].split()))
a = list(map(float, sys.argv[2].split()))
s_rss, va_rss, ag_rss = map(float, sys.argv[3:6])
delays_file, window, series = sys.argv[6], float(sys.argv[7]), int(sys.argv[8])
rows_pair, rows_sp, vm_version, sp_version = int(sys.argv[9]), int(sys.argv[10]), sys.argv[11], sys.argv[12]
cpu_sp = a[0] - b[0]
cpu_va, cpu_ag = a[1] - b[1], a[2] - b[2]
cpu_pair = cpu_va + cpu_ag
lat_sp = (a[3] - b[3]) / max(a[4] - b[4], 1)
lat_va = (a[5] - b[5]) / max(a[6] - b[6], 1)
iters_sp, iters_va = a[4] - b[4], a[6] - b[6]
d = {"pair": [], "spillway": []}
for line in open(delays_file):
    side, v = line.split()
    d[side].append(float(v))
def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
print()
print(f"{series} source series, 20 rules every 5s, 3 routed destinations, {window:.0f}s window")
print(f"{'':32} {'CPU s':>8} {'peak RSS MiB':>13} {'iter avg s':>11} {'iters':>6} {'delay p50 s':>12} {'p99 s':>7} {'max s':>7} {'n':>4}")
print(f"{'vmalert + vmagent ' + vm_version:32} {cpu_pair:8.2f} {va_rss + ag_rss:13.1f} {lat_va:11.3f} {iters_va:6.0f} "
      f"{pct(d['pair'], 50):12.2f} {pct(d['pair'], 99):7.2f} {max(d['pair'] or [float('nan')]):7.2f} {len(d['pair']):4d}")
print(f"{'  vmalert':32} {cpu_va:8.2f} {va_rss:13.1f}")
print(f"{'  vmagent':32} {cpu_ag:8.2f} {ag_rss:13.1f}")
print(f"{'spillway ' + sp_version:32} {cpu_sp:8.2f} {s_rss:13.1f} {lat_sp:11.3f} {iters_sp:6.0f} "
      f"{pct(d['spillway'], 50):12.2f} {pct(d['spillway'], 99):7.2f} {max(d['spillway'] or [float('nan')]):7.2f} {len(d['spillway']):4d}")
print(f"{'spillway / pair':32} {cpu_sp / cpu_pair:8.2f} {s_rss / (va_rss + ag_rss):13.2f} {lat_sp / lat_va:11.2f}")
print(f"rows stored by the destinations so far: pair {rows_pair}, spillway {rows_sp}")
print(f"targets: CPU <= 0.5x ({'met' if cpu_sp <= 0.5 * cpu_pair else 'NOT met'}), "
      f"RSS <= 0.5x ({'met' if s_rss <= 0.5 * (va_rss + ag_rss) else 'NOT met'}), "
      f"delay p99 <= 2s ({'met' if pct(d['spillway'], 99) <= 2 else 'NOT met'})")
PY
