#!/usr/bin/env bash
# Router benchmark: the same remote-write load pushed into (a) vmagent with two
# relabel-routed -remoteWrite.url and (b) `spillway run` with the same two
# routes, each delivering into its own pair of local VictoriaMetrics. Prints
# samples/s (push start to last sample stored), CPU seconds per million
# samples and peak RSS of the router process, per run and as median
# [min-max] over RUNS runs (default 3; fresh processes and destinations each
# run), and spillway/vmagent ratios.
#
#   scripts/bench-router.sh                 # 4M samples over 20k series
#   SAMPLES=5000000 SERIES=50000 RUNS=5 scripts/bench-router.sh
#   SPILLWAY=/path/to/spillway VMAGENT=/opt/vmagent scripts/bench-router.sh
#   VMAGENTS="vmagent /opt/vmagent-1.150" scripts/bench-router.sh
#   SPILLWAYS="/tmp/before /tmp/after" RUNS=5 scripts/bench-router.sh
#
# SPILLWAY: binary to measure (default: release build made here);
# SPILLWAYS: several, space separated, each measured in every run (for a
# change's before and after: the machine's drift between runs then falls
# on both alike), with their CPU per sample against the first. VMAGENT:
# the vmagent to compare (default: from PATH); VMAGENTS: several, space
# separated, each measured in every run. LOADGEN: a prebuilt
# examples/remote_write_load (default: built here). SPILLWAY_WRAPPER: a
# command put before spillway, a profiler (the figures printed for spillway
# are then the wrapper's), e.g. to count instructions, which unlike CPU
# time on a shared machine come out the same run after run:
#   SAMPLES=1000000 RUNS=1 SPILLWAY_WRAPPER="valgrind --tool=callgrind \
#     --callgrind-out-file=/tmp/cg.out" scripts/bench-router.sh
#   callgrind_annotate --inclusive=yes /tmp/cg.out
# Needs victoria-metrics,
# curl and python3. Everything listens on loopback and lives in a temp dir,
# removed after every server started here has stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

SAMPLES=${SAMPLES:-4000000}
SERIES=${SERIES:-20000}
PER_REQUEST=${PER_REQUEST:-10000}
CONCURRENCY=${CONCURRENCY:-4}
RUNS=${RUNS:-3}

for bin in victoria-metrics curl python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run scripts/install-deps.sh" >&2; exit 2; }
done
AGENTS=(); LABELS=()
for a in ${VMAGENTS:-${VMAGENT:-vmagent}}; do
  VMAGENT=$a; bench_peer VMAGENT vmagent
  AGENTS+=("$VMAGENT"); LABELS+=("$(bench_label "$VMAGENT")")
done
SPILLWAY_BINS=(); SPILLWAY_NAMES=()
if [ -n "${SPILLWAYS:-}" ]; then
  for b in $SPILLWAYS; do
    [ -x "$b" ] || { echo "SPILLWAYS: $b is not an executable file" >&2; exit 2; }
    SPILLWAY_NAMES+=("spillway${#SPILLWAY_BINS[@]}"); SPILLWAY_BINS+=("$b")
  done
else
  bench_spillway
  SPILLWAY_BINS=("$SPILLWAY"); SPILLWAY_NAMES=(spillway)
fi
bench_loadgen
bench_init
WORK=$BENCH_WORK

printf -- "- action: keep\n  source_labels: [route]\n  regex: a\n" >"$WORK/route_a.yml"
printf -- "- action: keep\n  source_labels: [route]\n  regex: b\n" >"$WORK/route_b.yml"

# Every series gets SAMPLES/SERIES samples; half go each way.
HALF=$((SAMPLES / 2))

# measure NAME PID PUSH_URL PORT_A PORT_B -> "samples_per_s cpu_per_million peak_rss wall cpu"
measure() {
  local name=$1 pid=$2 url=$3 pa=$4 pb=$5
  local cpu0 t0 t1 cpu1 rss
  cpu0=$(bench_cpu_seconds "$pid")
  t0=$(date +%s.%N)
  "$LOADGEN" --url "$url" --series "$SERIES" --samples "$SAMPLES" \
    --per-request "$PER_REQUEST" --concurrency "$CONCURRENCY" >"$WORK/$name.load" 2>"$WORK/$name.loaderr"
  local deadline=$((SECONDS + 600))
  while :; do
    local ra rb; ra=$(bench_rows "$pa"); rb=$(bench_rows "$pb")
    if [ "$ra" -ge "$HALF" ] && [ "$rb" -ge "$HALF" ]; then break; fi
    [ $SECONDS -lt $deadline ] || { echo "$name: destinations got $ra + $rb of $SAMPLES" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  cpu1=$(bench_cpu_seconds "$pid")
  rss=$(bench_peak_rss_mib "$pid")
  python3 - "$t0" "$t1" "$cpu0" "$cpu1" "$rss" "$SAMPLES" <<'PY'
import sys
t0, t1, c0, c1, rss, n = map(float, sys.argv[1:])
print(f"{n/(t1-t0):.0f} {(c1-c0)/(n/1e6):.3f} {rss:.1f} {t1-t0:.2f} {c1-c0:.2f}")
PY
}

RESULTS=$WORK/results
: >"$RESULTS"
echo "== $SAMPLES samples, $SERIES series, $PER_REQUEST samples/request, $CONCURRENCY pushers, $RUNS runs"
for ((run = 1; run <= RUNS; run++)); do
  for i in "${!AGENTS[@]}"; do
    bench_start_vm VA "r$run-vmagent$i-dest-a"; bench_start_vm VB "r$run-vmagent$i-dest-b"
    bench_free_port AGENT_PORT
    bench_spawn AGENT_PID "$WORK/r$run-vmagent$i.log" "${AGENTS[$i]}" \
      -httpListenAddr=127.0.0.1:$AGENT_PORT -loggerLevel=WARN \
      -remoteWrite.tmpDataPath="$WORK/r$run-vmagent$i-queue" \
      -remoteWrite.url=http://127.0.0.1:$VA/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/route_a.yml" \
      -remoteWrite.url=http://127.0.0.1:$VB/api/v1/write -remoteWrite.urlRelabelConfig="$WORK/route_b.yml"
    bench_wait_http "http://127.0.0.1:$AGENT_PORT/health" "$AGENT_PID"
    read -r rate cpu rss secs cpus < <(measure "r$run-vmagent$i" "$AGENT_PID" \
      "http://127.0.0.1:$AGENT_PORT/api/v1/write" "$VA" "$VB")
    echo "$run vmagent$i $rate $cpu $rss $secs $cpus" >>"$RESULTS"
    bench_stop "$AGENT_PID" "$VA_PID" "$VB_PID"
  done

  for k in "${!SPILLWAY_BINS[@]}"; do
    name=${SPILLWAY_NAMES[$k]}
    bench_start_vm SA "r$run-$name-dest-a"; bench_start_vm SB "r$run-$name-dest-b"
    bench_free_port SP_PORT
    cat >"$WORK/spillway.yml" <<YAML
storage: {path: "$WORK/r$run-$name-data"}
destinations:
  - name: route_a
    url: http://127.0.0.1:$SA/api/v1/write
    relabel_configs: [{action: keep, source_labels: [route], regex: a}]
  - name: route_b
    url: http://127.0.0.1:$SB/api/v1/write
    relabel_configs: [{action: keep, source_labels: [route], regex: b}]
YAML
    # shellcheck disable=SC2086 # SPILLWAY_WRAPPER is a command prefix (e.g. perf record)
    bench_spawn SP_PID "$WORK/r$run-$name.log" ${SPILLWAY_WRAPPER:-} "${SPILLWAY_BINS[$k]}" -q run \
      -c "$WORK/spillway.yml" --http.listen 127.0.0.1:$SP_PORT
    bench_wait_http "http://127.0.0.1:$SP_PORT/health" "$SP_PID"
    read -r rate cpu rss secs cpus < <(measure "r$run-$name" "$SP_PID" \
      "http://127.0.0.1:$SP_PORT/api/v1/write" "$SA" "$SB")
    echo "$run $name $rate $cpu $rss $secs $cpus" >>"$RESULTS"
    bench_stop "$SP_PID" "$SA_PID" "$SB_PID"
  done

  python3 - "$run" "$RESULTS" <<'PY'
import sys
run, results = sys.argv[1:]
rows = {f[1]: list(map(float, f[2:])) for f in (l.split() for l in open(results)) if f[0] == run}
spillways = [n for n in rows if n.startswith("spillway")]
with open(results, "a") as out:
    for sp in spillways:
        for name, r in list(rows.items()):
            if name.startswith("vmagent"):
                s = rows[sp]
                out.write(f"{run} {sp}/{name} {s[0]/r[0]:.3f} {s[1]/r[1]:.3f} {s[2]/r[2]:.3f}\n")
    first = rows[spillways[0]]
    for sp in spillways[1:]:
        s = rows[sp]
        out.write(f"{run} {sp}/{spillways[0]} {s[0]/first[0]:.3f} {s[1]/first[1]:.3f} {s[2]/first[2]:.3f}\n")
PY
  awk -v r="$run" '$1 == r' "$RESULTS" | sed 's/^/   /'
done

echo
for i in "${!AGENTS[@]}"; do echo "vmagent$i = ${LABELS[$i]}"; done
for k in "${!SPILLWAY_BINS[@]}"; do
  echo "${SPILLWAY_NAMES[$k]} = ${SPILLWAY_BINS[$k]} $("${SPILLWAY_BINS[$k]}" --version | awk '{print $2}')"
done
echo "columns: median [min-max] of samples/s | CPU s per 1M samples | peak RSS MiB | wall s | CPU s"
echo "ratio rows: samples/s | CPU per sample | peak RSS (targets: CPU per sample <= 0.5, RSS <= 0.3)"
bench_summary "$RESULTS"
