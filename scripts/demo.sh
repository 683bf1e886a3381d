#!/usr/bin/env bash
# The main job on a local demo: starts a loopback VictoriaMetrics (data under
# .demo/), loads a few hours of synthetic cpu/memory/http series, runs
# `spillway export` with thresholds on it, and prints where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo="$root/.demo"

scripts/install-deps.sh
echo "== building spillway (release)"
cargo build --release --locked --quiet
bin="$root/target/release/spillway"

free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_ready() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "server at $1 did not start; see $2" >&2; exit 1
}

mkdir -p "$demo"
port=$(free_port 18428)
vm="http://127.0.0.1:$port"
echo "== starting VictoriaMetrics on $vm (data: .demo/source-vm)"
victoria-metrics -httpListenAddr="127.0.0.1:$port" -storageDataPath="$demo/source-vm" \
  -retentionPeriod=100y -search.latencyOffset=0s -loggerLevel=WARN >"$demo/source-vm.log" 2>&1 &
pids+=($!)
wait_ready "$vm/health" "$demo/source-vm.log"

echo "== loading 4 hours of synthetic cpu / memory / http series"
scripts/demo-data.sh 4 15 | curl -sf --data-binary @- "$vm/api/v1/import"
curl -sf "$vm/internal/force_flush" >/dev/null

out="$demo/export"
rm -rf "$out"
echo "== spillway export (thresholds: examples/export/thresholds.yml)"
(cd examples/export && "$bin" export --config export.yml --url "$vm" --out "$out")

echo
echo "== results in $out"
ls -l "$out"
echo
echo "first alerts:"
head -n 6 "$out"/alerts_*.csv
