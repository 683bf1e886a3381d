# Shared helpers for scripts/bench-*.sh (sourced, not run).

free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

wait_ready() {
  for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "server at $1 did not start" >&2; exit 1
}

# measure NAME CMD...: runs CMD under GNU time; appends "NAME wall cpu rss_kb" to $results.
measure() {
  local name=$1; shift
  local tf; tf=$(mktemp)
  /usr/bin/time -f "%e %U %S %M" -o "$tf" "$@"
  read -r wall user sys rss <"$tf"; rm -f "$tf"
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')
  echo "$name $wall $cpu $rss" >>"$results"
  printf '%-34s wall %7.2fs  cpu %7.2fs  peak RSS %7.1f MB\n' "$name" "$wall" "$cpu" "$(awk -v k="$rss" 'BEGIN{print k/1024}')"
}

# ratio A B FIELD(2=wall,3=cpu,4=rss): prints A/B for that field.
ratio() {
  awk -v a="$1" -v b="$2" -v f="$3" '$1==a{x=$f} $1==b{y=$f} END{ if (y>0) printf "%.2f", x/y; else print "n/a" }' "$results"
}

# --- servers started in the background (bench-run.sh, bench-router.sh) ---
# Every helper below runs in the calling shell, never in `$(...)`: a PID
# recorded in a subshell never reaches BENCH_PIDS, so its server would outlive
# the script and its data directory would be deleted under it.

BENCH_PIDS=()
BENCH_WORK=""

# bench_init: makes BENCH_WORK and arranges that every server started with
# bench_spawn is stopped (TERM, then KILL after 10s) before BENCH_WORK is
# removed, however the script ends.
bench_init() {
  BENCH_WORK=$(mktemp -d)
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  done
  for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  BENCH_PIDS=()
  [ -n "$BENCH_WORK" ] && rm -rf "$BENCH_WORK"
}

# bench_stop PID...: stops these servers now (TERM, wait, KILL after 10s).
bench_stop() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}

# bench_spawn VAR LOG CMD...: starts CMD in the background, output to LOG,
# records its PID for cleanup and stores it in VAR.
bench_spawn() {
  local var=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  BENCH_PIDS+=($!)
  printf -v "$var" '%s' "$!"
}

bench_free_port() { # VAR
  printf -v "$1" '%s' "$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
}

bench_wait_http() { # URL [PID]: waits up to 30s; fails early if PID died
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$1" && return 0
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
      echo "server for $1 exited before it answered" >&2; return 1
    fi
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; return 1
}

# bench_start_vm PORTVAR NAME [FLAGS...]: a VictoriaMetrics with its data in
# BENCH_WORK/NAME; stores its port in PORTVAR (and its PID in PORTVAR_PID).
# BENCH_VM_BIN: the victoria-metrics binary (default: from PATH).
bench_start_vm() {
  local var=$1 name=$2; shift 2
  local port pid
  bench_free_port port
  bench_spawn pid "$BENCH_WORK/$name.log" "${BENCH_VM_BIN:-victoria-metrics}" -httpListenAddr=127.0.0.1:$port \
    -storageDataPath="$BENCH_WORK/$name" -retentionPeriod=100y -loggerLevel=WARN "$@"
  bench_wait_http "http://127.0.0.1:$port/health" "$pid"
  printf -v "$var" '%s' "$port"
  printf -v "${var}_PID" '%s' "$pid"
}

# bench_spillway: sets SPILLWAY to the binary to measure: $SPILLWAY if given
# (a prebuilt binary), else a release build made here, found by asking cargo.
bench_spillway() {
  if [ -n "${SPILLWAY:-}" ]; then
    [ -x "$SPILLWAY" ] || { echo "SPILLWAY=$SPILLWAY is not an executable file" >&2; exit 2; }
    return
  fi
  echo "== building spillway (release; SPILLWAY=path measures a prebuilt binary)"
  cargo build --release --quiet --bin spillway
  SPILLWAY=$(scripts/bin-path.sh release spillway)
}

# bench_loadgen: LOADGEN (a prebuilt examples/remote_write_load) or a
# release build of it made here; exits when it is not an executable file.
bench_loadgen() {
  if [ -z "${LOADGEN:-}" ]; then
    cargo build --release --quiet --example remote_write_load
    LOADGEN=$(dirname "$(scripts/bin-path.sh release spillway)")/examples/remote_write_load
  fi
  [ -x "$LOADGEN" ] || { echo "LOADGEN=$LOADGEN is not an executable file" >&2; exit 2; }
}

# bench_peer VAR NAME: VAR's value (a path) or NAME from PATH, resolved to an
# absolute path; exits when missing.
bench_peer() {
  local var=$1 name=$2 path
  path=${!var:-$name}
  path=$(command -v "$path" || true)
  [ -n "$path" ] && [ -x "$path" ] || {
    echo "missing $name (set $var=/path/to/$name or run scripts/install-deps.sh)" >&2; exit 2; }
  printf -v "$var" '%s' "$(readlink -f "$path")"
}

# bench_label BIN: what the binary says with -version; builds without version
# information print nothing, then the path (and the Debian package version
# when dpkg owns that file).
bench_label() {
  local v pkg
  v=$("$1" -version 2>/dev/null | head -1 | tr -d '\r' || true)
  if [ -n "$v" ]; then echo "$v"; return; fi
  pkg=$(dpkg-query -S "$1" 2>/dev/null | head -1 | cut -d: -f1 || true)
  if [ -n "$pkg" ]; then
    echo "$1 (Debian $pkg $(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null))"
  else
    echo "$1"
  fi
}

bench_cpu_seconds() { # PID -> user+system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14+$15)/hz}' "/proc/$1/stat"
}

bench_peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

bench_rows() { # PORT -> rows stored by that VictoriaMetrics
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^vm_rows_inserted_total/ {s+=$2} END {printf "%d", s}'
}

# bench_summary FILE: FILE has lines "RUN NAME VALUE..." (one per run and
# measured figure); prints, per NAME and column, median and [min-max] over
# the runs.
bench_summary() {
  python3 - "$1" <<'PY'
import sys, statistics
rows = {}
order = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 3:
        continue
    name = f[1]
    if name not in rows:
        rows[name] = []
        order.append(name)
    rows[name].append([float(x) for x in f[2:]])
for name in order:
    cols = list(zip(*rows[name]))
    cells = []
    for c in cols:
        c = [x for x in c if x == x]
        if not c:
            cells.append(f"{'n/a':>22}")
            continue
        cells.append(f"{statistics.median(c):9.3f} [{min(c):.3f}-{max(c):.3f}]".rjust(22))
    print(f"{name:34} " + " ".join(cells) + f"  ({len(rows[name])} runs)")
PY
}
