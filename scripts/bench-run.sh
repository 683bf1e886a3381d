#!/usr/bin/env bash
# Continuous threshold export benchmark: `spillway run` alone against the pair
# it replaces, vmalert + vmagent, side by side in each run over the same window.
#
#   source VictoriaMetrics: SERIES series (default 50,000), constant values
#   rules: 20 recording rules in one group, every 5s, each over 1/20 of the
#          series and keeping ~80% of them (about 40,000 results per round)
#   routing: by the rules' export_target label to three destinations
#   (a) vmalert -> vmagent (3 x -remoteWrite.url + urlRelabelConfig) -> 3 VMs,
#       once per pair in PAIRS
#   (b) spillway run (3 destinations, same relabel configs)            -> 3 VMs
#
# All sides evaluate the same rules against the same source at the same time
# for WINDOW seconds (default 120) after a WARMUP (default 20), RUNS times
# (default 3; fresh destinations and processes each run, one source). Printed
# per run and as median [min-max] over the runs: CPU seconds over the window,
# peak RSS (vmalert + vmagent summed), iteration time from each tool's own
# metrics, and the delay until a result can be read back from its destination
# (one probe series per destination, polled every 100ms after a
# /internal/force_flush, so VictoriaMetrics' own ~1s ingestion buffer is not
# counted), measured twice: from the result's timestamp, and from the moment
# its tool started that evaluation (the group's lastEvaluation), which takes
# out when each tool chooses to fire.
#
# Firing phase: vmalert starts a group at a phase set by a hash of its file
# path (random here, the path is a temp dir). The group is pinned with
# `eval_offset: EVAL_OFFSET` (default 2s) for every vmalert that accepts it
# (1.79 does not: its phase stays free, which is why the delay from firing is
# reported) and for spillway.
#
#   scripts/bench-run.sh
#   SERIES=20000 WINDOW=60 RUNS=5 scripts/bench-run.sh
#   SPILLWAY=/path/to/spillway VMALERT=/opt/vmalert VMAGENT=/opt/vmagent scripts/bench-run.sh
#   PAIRS="vmalert:vmagent /opt/vmalert-1.150:/opt/vmagent-1.150" scripts/bench-run.sh
#
# SOURCE_VM: the source's victoria-metrics (default: from PATH). It runs with
# -search.latencyOffset=0s; releases that still answer a query for the last
# second as of a second ago (1.79 does) put that second into every side's
# delay from the timestamp (see README, Guarantees).
# SPILLWAY: binary to measure (default: release build made here). VMALERT,
# VMAGENT: the pair (default: from PATH). PAIRS: several pairs, space
# separated ALERT:AGENT, each measured in the same runs (overrides
# VMALERT/VMAGENT). A vmalert that knows -rule.evalDelay gets 0s, so it stamps
# like 1.79 and spillway. Needs victoria-metrics, curl and python3.
# Everything listens on loopback and lives in a temp dir, removed after every
# server started here has stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

SERIES=${SERIES:-50000}
WINDOW=${WINDOW:-120}
WARMUP=${WARMUP:-20}
RUNS=${RUNS:-3}
EVAL_OFFSET=${EVAL_OFFSET:-2s}
RULES=20

for bin in victoria-metrics curl python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/install-deps.sh" >&2; exit 2; }
done
PAIRS=${PAIRS:-"${VMALERT:-vmalert}:${VMAGENT:-vmagent}"}
ALERTS=(); AGENTS=(); LABELS=(); OFFSET_OK=(); DELAY_FLAGS=()
for spec in $PAIRS; do
  VMALERT=${spec%%:*}; VMAGENT=${spec#*:}
  bench_peer VMALERT vmalert; bench_peer VMAGENT vmagent
  ALERTS+=("$VMALERT"); AGENTS+=("$VMAGENT")
  LABELS+=("vmalert $(bench_label "$VMALERT") + vmagent $(bench_label "$VMAGENT")")
done
bench_spillway
bench_init
WORK=$BENCH_WORK
SP_VERSION=$("$SPILLWAY" --version | awk '{print $2}')

SOURCE_VM=$(command -v "${SOURCE_VM:-victoria-metrics}" || true)
[ -x "$SOURCE_VM" ] || { echo "SOURCE_VM: no victoria-metrics binary found" >&2; exit 2; }
echo "== source: $SERIES series"
BENCH_VM_BIN=$SOURCE_VM bench_start_vm SRC source -search.latencyOffset=0s -search.disableCache
# 30s resolution from 10 minutes ago to past the last run: every query the
# benchmark makes finds a fresh point.
SPAN=$((600 + RUNS * (WARMUP + WINDOW + 90)))
python3 - "$SERIES" "$RULES" "$SPAN" <<'PY' | curl -sf --data-binary @- "http://127.0.0.1:$SRC/api/v1/import"
import json, sys, time
series, rules, span = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
now = int(time.time())
ts = [(now - 600 + 30 * i) * 1000 for i in range((600 + span) // 30 + 1)]
for n in range(series):
    v = (n * 7) % 100
    line = {"metric": {"__name__": "bench_value", "series": str(n), "rule": f"r{n % rules}"},
            "values": [v] * len(ts), "timestamps": ts}
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
PY
curl -sf "http://127.0.0.1:$SRC/internal/force_flush" >/dev/null

# 20 rules; rules 0-6 go to destination d1, 7-13 to d2, 14-19 to d3.
write_rules() { # FILE OFFSET(or empty)
  {
    echo "groups:"
    echo "  - name: bench"
    echo "    interval: 5s"
    [ -n "$2" ] && echo "    eval_offset: $2"
    echo "    rules:"
    for ((r = 0; r < RULES; r++)); do
      echo "      - record: bench:r$r"
      echo "        expr: bench_value{rule=\"r$r\"} > 20"
      echo "        labels: {export_target: d$((r * 3 / RULES + 1))}"
    done
  } >"$1"
}
write_rules "$WORK/rules-pinned.yml" "$EVAL_OFFSET"
write_rules "$WORK/rules-free.yml" ""
for d in 1 2 3; do
  printf -- "- action: keep\n  source_labels: [export_target]\n  regex: d%s\n" "$d" >"$WORK/d$d.yml"
done
for i in "${!ALERTS[@]}"; do
  if "${ALERTS[$i]}" -dryRun -rule="$WORK/rules-pinned.yml" >/dev/null 2>&1; then
    OFFSET_OK+=(1)
  else
    OFFSET_OK+=(0)
  fi
  if "${ALERTS[$i]}" -help 2>&1 | grep -q -- '-rule.evalDelay'; then
    DELAY_FLAGS+=("-rule.evalDelay=0s")
  else
    DELAY_FLAGS+=("")
  fi
done

metric_sum() { # URL NAME -> sum of all series of NAME in the Prometheus text at URL
  curl -s "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%.6f", s}'
}

# start_pair I RUN: vmagent + vmalert of pair I with three fresh destinations.
start_pair() {
  local i=$1 run=$2 p
  bench_start_vm "D${i}_1" "r$run-pair$i-d1"
  bench_start_vm "D${i}_2" "r$run-pair$i-d2"
  bench_start_vm "D${i}_3" "r$run-pair$i-d3"
  local d1 d2 d3; d1=D${i}_1; d2=D${i}_2; d3=D${i}_3
  bench_free_port p; printf -v "AGENT_PORT_$i" '%s' "$p"
  bench_spawn "AGENT_PID_$i" "$WORK/r$run-vmagent$i.log" "${AGENTS[$i]}" \
    -httpListenAddr=127.0.0.1:$p -loggerLevel=WARN \
    -remoteWrite.tmpDataPath="$WORK/r$run-vmagent$i-queue" -remoteWrite.flushInterval=1s \
    -remoteWrite.url=http://127.0.0.1:${!d1}/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/d1.yml" \
    -remoteWrite.url=http://127.0.0.1:${!d2}/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/d2.yml" \
    -remoteWrite.url=http://127.0.0.1:${!d3}/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/d3.yml"
  local agent_pid="AGENT_PID_$i"
  bench_wait_http "http://127.0.0.1:$p/health" "${!agent_pid}"
  local rules="$WORK/rules-free.yml"
  [ "${OFFSET_OK[$i]}" = 1 ] && rules="$WORK/rules-pinned.yml"
  local ap; bench_free_port ap; printf -v "ALERT_PORT_$i" '%s' "$ap"
  # shellcheck disable=SC2086 # DELAY_FLAGS is empty or one flag
  bench_spawn "ALERT_PID_$i" "$WORK/r$run-vmalert$i.log" "${ALERTS[$i]}" \
    -httpListenAddr=127.0.0.1:$ap -loggerLevel=WARN ${DELAY_FLAGS[$i]} \
    -datasource.url=http://127.0.0.1:$SRC -rule="$rules" \
    -remoteWrite.url=http://127.0.0.1:$p -remoteWrite.flushInterval=1s \
    -notifier.url=http://127.0.0.1:1
  local alert_pid="ALERT_PID_$i"
  bench_wait_http "http://127.0.0.1:$ap/health" "${!alert_pid}"
}

start_spillway() { # RUN
  local run=$1
  bench_start_vm S1 "r$run-spillway-d1"
  bench_start_vm S2 "r$run-spillway-d2"
  bench_start_vm S3 "r$run-spillway-d3"
  bench_free_port SP_PORT
  cat >"$WORK/spillway.yml" <<YAML
datasource: {url: "http://127.0.0.1:$SRC"}
rule_files: ["$WORK/rules-pinned.yml"]
evaluation: {eval_delay: 0s}
storage: {path: "$WORK/r$run-spillway-data"}
destinations:
  - {name: d1, url: "http://127.0.0.1:$S1/api/v1/write", relabel_configs: [{action: keep, source_labels: [export_target], regex: d1}]}
  - {name: d2, url: "http://127.0.0.1:$S2/api/v1/write", relabel_configs: [{action: keep, source_labels: [export_target], regex: d2}]}
  - {name: d3, url: "http://127.0.0.1:$S3/api/v1/write", relabel_configs: [{action: keep, source_labels: [export_target], regex: d3}]}
YAML
  # shellcheck disable=SC2086 # SPILLWAY_WRAPPER is a command prefix (e.g. perf record)
  bench_spawn SP_PID "$WORK/r$run-spillway.log" ${SPILLWAY_WRAPPER:-} "$SPILLWAY" -q run \
    -c "$WORK/spillway.yml" --http.listen 127.0.0.1:$SP_PORT
  bench_wait_http "http://127.0.0.1:$SP_PORT/health" "$SP_PID"
}

# side_figures NAME PIDS... : "cpu" over the window from the CPU snapshots
cpu_now() { local s=0 p; for p in "$@"; do s=$(awk -v a="$s" -v b="$(bench_cpu_seconds "$p")" 'BEGIN{printf "%.3f", a+b}'); done; echo "$s"; }
rss_sum() { local s=0 p; for p in "$@"; do s=$(awk -v a="$s" -v b="$(bench_peak_rss_mib "$p")" 'BEGIN{printf "%.1f", a+b}'); done; echo "$s"; }

RESULTS=$WORK/results
: >"$RESULTS"
for ((run = 1; run <= RUNS; run++)); do
  echo "== run $run/$RUNS: starting ${#ALERTS[@]} pair(s) and spillway, 3 destinations each"
  RUN_PIDS_START=${#BENCH_PIDS[@]}
  for i in "${!ALERTS[@]}"; do start_pair "$i" "$run"; done
  start_spillway "$run"
  echo "== warming up for ${WARMUP}s"
  sleep "$WARMUP"

  # Per side: name, CPU PIDs, rules API, iteration metric base names, probe specs.
  SIDES=(); PROBES=()
  declare -A CPU0=() ITER0=()
  for i in "${!ALERTS[@]}"; do
    a=ALERT_PID_$i; g=AGENT_PID_$i; ap=ALERT_PORT_$i
    d1=D${i}_1; d2=D${i}_2; d3=D${i}_3
    SIDES+=("pair$i")
    CPU0[pair$i]=$(cpu_now "${!a}" "${!g}")
    ITER0[pair$i]="$(metric_sum "http://127.0.0.1:${!ap}/metrics" vmalert_iteration_duration_seconds_sum) $(metric_sum "http://127.0.0.1:${!ap}/metrics" vmalert_iteration_duration_seconds_count)"
    PROBES+=("pair$i|${!ap}|${!d1}|bench:r0" "pair$i|${!ap}|${!d2}|bench:r7" "pair$i|${!ap}|${!d3}|bench:r14")
  done
  SIDES+=(spillway)
  CPU0[spillway]=$(cpu_now "$SP_PID")
  ITER0[spillway]="$(metric_sum "http://127.0.0.1:$SP_PORT/metrics" spillway_group_iteration_duration_seconds_sum) $(metric_sum "http://127.0.0.1:$SP_PORT/metrics" spillway_group_iteration_duration_seconds_count)"
  PROBES+=("spillway|$SP_PORT|$S1|bench:r0" "spillway|$SP_PORT|$S2|bench:r7" "spillway|$SP_PORT|$S3|bench:r14")

  echo "== measuring for ${WINDOW}s"
  python3 - "$WINDOW" "$WORK/delays" "${PROBES[@]}" <<'PY'
import datetime, json, sys, time, urllib.parse, urllib.request
window, out = float(sys.argv[1]), sys.argv[2]
probes, rules_apis = [], {}
for spec in sys.argv[3:]:
    side, api_port, port, name = spec.split("|")
    # bench_value{series="N"} with N % 20 == rule and a value above 20.
    rule = int(name.rsplit("r", 1)[1])
    n = next(n for n in range(rule, 10**6, 20) if (n * 7) % 100 > 20)
    sel = '{__name__="%s",series="%d"}' % (name, n)
    url = "http://127.0.0.1:%s/api/v1/export?%s" % (port, urllib.parse.urlencode({"match[]": sel}))
    probes.append((side, port, url))
    rules_apis[side] = "http://127.0.0.1:%s/api/v1/rules" % api_port

def parse_time(s):
    # RFC 3339 with up to nanoseconds; Python takes microseconds.
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".")
        s = head + "." + frac[:6]
    return datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp()

firings = {side: set() for side in rules_apis}
def poll_firings():
    for side, url in rules_apis.items():
        try:
            groups = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["groups"]
        except Exception:
            continue
        for g in groups:
            t = parse_time(g.get("lastEvaluation", "0001-01-01T00:00:00Z")) if not g.get("lastEvaluation", "").startswith("0001") else None
            if t:
                firings[side].add(t)

start = time.time()
seen = {}  # (side, url, ts) -> first seen, before the flush that showed it
last_poll = 0.0
while time.time() - start < window:
    if time.time() - last_poll >= 1.0:
        # lastEvaluation changes once per 5s iteration: every second sees each.
        poll_firings()
        last_poll = time.time()
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
poll_firings()
with open(out, "w") as f:
    for (side, url, ts), t in seen.items():
        # Only timestamps evaluated inside the window count.
        if ts / 1000 < start:
            continue
        # The evaluation of ts started at the first lastEvaluation not before
        # ts (evalDelay 0: no tool evaluates a timestamp before it is due).
        fired = min((x for x in firings[side] if x >= ts / 1000 - 0.001), default=float("nan"))
        f.write("%s %.3f %.3f\n" % (side, t - ts / 1000, t - fired))
PY

  for i in "${!ALERTS[@]}"; do
    a=ALERT_PID_$i; g=AGENT_PID_$i; ap=ALERT_PORT_$i
    cpu=$(cpu_now "${!a}" "${!g}"); rss=$(rss_sum "${!a}" "${!g}")
    iter="$(metric_sum "http://127.0.0.1:${!ap}/metrics" vmalert_iteration_duration_seconds_sum) $(metric_sum "http://127.0.0.1:${!ap}/metrics" vmalert_iteration_duration_seconds_count)"
    echo "pair$i ${CPU0[pair$i]} $cpu $rss ${ITER0[pair$i]} $iter" >>"$WORK/raw-$run"
  done
  cpu=$(cpu_now "$SP_PID"); rss=$(rss_sum "$SP_PID")
  iter="$(metric_sum "http://127.0.0.1:$SP_PORT/metrics" spillway_group_iteration_duration_seconds_sum) $(metric_sum "http://127.0.0.1:$SP_PORT/metrics" spillway_group_iteration_duration_seconds_count)"
  echo "spillway ${CPU0[spillway]} $cpu $rss ${ITER0[spillway]} $iter" >>"$WORK/raw-$run"
  ROWS=""
  for i in "${!ALERTS[@]}"; do
    d1=D${i}_1; d2=D${i}_2; d3=D${i}_3
    ROWS+="pair$i $(($(bench_rows "${!d1}") + $(bench_rows "${!d2}") + $(bench_rows "${!d3}"))) "
  done
  ROWS+="spillway $(($(bench_rows "$S1") + $(bench_rows "$S2") + $(bench_rows "$S3")))"
  echo "   rows stored by the destinations: $ROWS"

  python3 - "$run" "$WORK/raw-$run" "$WORK/delays" "$RESULTS" <<'PY'
import sys
run, raw, delays, results = sys.argv[1:]
def pct(xs, p):
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
d = {}
for line in open(delays):
    side, a, b = line.split()
    d.setdefault(side, ([], []))
    d[side][0].append(float(a)); d[side][1].append(float(b))
sides = {}
with open(results, "a") as out:
    for line in open(raw):
        f = line.split()
        side = f[0]
        c0, c1, rss, s0, n0, s1, n1 = map(float, f[1:])
        iters = n1 - n0
        ts, fire = d.get(side, ([], []))
        row = [c1 - c0, rss, (s1 - s0) / max(iters, 1), pct(ts, 50), pct(ts, 99), pct(fire, 50), pct(fire, 99), len(ts)]
        sides[side] = row
        out.write(f"{run} {side} " + " ".join(f"{x:.3f}" for x in row) + "\n")
    sp = sides["spillway"]
    for side, row in sides.items():
        if side != "spillway":
            out.write(f"{run} spillway/{side} {sp[0] / row[0]:.3f} {sp[1] / row[1]:.3f}\n")
PY
  awk -v r="$run" '$1 == r' "$RESULTS" | sed 's/^/   /'
  # spillway's resident code: the executable pages of its binary. A stale
  # link/hot-code.ld lets code that runs spread over more of them
  # (scripts/code-layout.sh remakes it). Under a SPILLWAY_WRAPPER that forks
  # (perf record) the process is the wrapper's, and there is no figure.
  awk -v bin="$(readlink -f "$SPILLWAY")" '/^[0-9a-f]+-/ { x = ($2 ~ /x/ && $6 == bin); m = m || x } /^Rss:/ && x { k += $2 }
    END { if (m) printf "%.1f\n", k / 1024; else print "n/a" }' "/proc/$SP_PID/smaps" >>"$WORK/code-mib"
  echo "   spillway's resident code: $(tail -1 "$WORK/code-mib") MiB"
  # Stop this run's processes (and their destinations) before the next.
  bench_stop "${BENCH_PIDS[@]:$RUN_PIDS_START}"
  BENCH_PIDS=("${BENCH_PIDS[@]:0:$RUN_PIDS_START}")
done

echo
echo "$SERIES source series, 20 rules every 5s, 3 routed destinations, ${WINDOW}s window, $RUNS runs"
for i in "${!ALERTS[@]}"; do
  pinned="phase pinned with eval_offset $EVAL_OFFSET"
  [ "${OFFSET_OK[$i]}" = 1 ] || pinned="phase not pinned: this vmalert rejects eval_offset"
  echo "pair$i = ${LABELS[$i]} ($pinned)"
done
echo "spillway = $SPILLWAY $SP_VERSION (phase pinned with eval_offset $EVAL_OFFSET)"
echo "source = $(bench_label "$SOURCE_VM") with -search.latencyOffset=0s"
echo "columns: median [min-max] of CPU s | peak RSS MiB | iteration avg s | delay from timestamp p50 s | p99 s | delay from firing p50 s | p99 s | probe points"
echo "ratio rows: CPU | peak RSS"
bench_summary "$RESULTS"
echo "spillway's resident code (executable pages of its binary), per run: $(tr '\n' ' ' <"$WORK/code-mib")MiB"
