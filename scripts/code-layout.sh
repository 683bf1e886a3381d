#!/usr/bin/env bash
# Remakes link/hot-code.ld, the linker script that puts the code `spillway run`
# touches at the start of .text (see code_layout in build.rs for why).
#
#   sudo scripts/code-layout.sh      (about 30 minutes: three release builds
#                                     and three 75 s runs of scripts/bench-run.sh)
#
# How: two release builds without the script, one in the compiler's order and
# one in reverse. Each runs the bench-run workload once with the disk's
# readahead at 0 and its own file dropped from the page cache, so a page of
# code is resident only if it ran (fault-around maps cached pages only).
# 60 s in, its resident pages are read from /proc/PID/pagemap. A function on
# resident pages in both layouts is kept: the reversal drops the ones that only
# shared a page with code that ran. A third build, linked with the result, runs
# once more and adds what ran outside it. Needs root (readahead, pagemap), nm, the
# tools of scripts/bench-run.sh, and a disk under the target directory.
# The readahead is restored on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "code-layout.sh: needs root to set the disk's readahead and read pagemap" >&2; exit 2; }
for tool in nm findmnt python3; do
  command -v "$tool" >/dev/null || { echo "code-layout.sh: missing $tool" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/spillway-layout.XXXXXX)
target=$(dirname "$(scripts/bin-path.sh release spillway)")
mkdir -p "$target"
dev=$(findmnt -no SOURCE --target "$target")
# A partition's readahead is its disk's: /sys/class/block/<partition>/../queue.
queue=/sys/class/block/$(basename "$(realpath "$dev" 2>/dev/null || echo none)")
[ -d "$queue/queue" ] || queue=$queue/..
readahead_file=$queue/queue/read_ahead_kb
[ -w "$readahead_file" ] || { echo "code-layout.sh: $target is on $dev, whose readahead ($readahead_file) cannot be set here" >&2; exit 2; }
readahead=$(cat "$readahead_file")
trap 'echo "$readahead" >"$readahead_file"; rm -rf "$WORK"' EXIT

build() { # LAYOUT NAME
  echo "== release build, SPILLWAY_CODE_LAYOUT=$1"
  SPILLWAY_CODE_LAYOUT=$1 cargo build --release --locked --quiet --bin spillway
  cp "$target/spillway" "$WORK/$2"
  sync "$WORK/$2"
}

measure() { # NAME
  local binary=$WORK/$1
  cat >"$WORK/wrap-$1" <<EOF
#!/usr/bin/env bash
(sleep 60; python3 "$PWD/scripts/code-layout.py" pages \$\$ "$binary" "$WORK/pages-$1") &
exec "\$@"
EOF
  chmod +x "$WORK/wrap-$1"
  python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$binary"
  echo "== measuring $1 (scripts/bench-run.sh, one 60 s window)"
  echo 0 >"$readahead_file"
  SPILLWAY="$binary" SPILLWAY_WRAPPER="$WORK/wrap-$1" RUNS=1 WARMUP=15 WINDOW=60 scripts/bench-run.sh >"$WORK/bench-$1.txt"
  echo "$readahead" >"$readahead_file"
  [ -s "$WORK/pages-$1" ] || { echo "code-layout.sh: no page map was taken from $1 (see $WORK/bench-$1.txt)" >&2; exit 1; }
}

build off plain
nm -n --defined-only "$WORK/plain" | awk '$2 ~ /^[tTwW]$/ {print $3}' | tac >"$WORK/reversed.order"
build "$WORK/reversed.order" reversed
measure plain
measure reversed
python3 scripts/code-layout.py script link/hot-code.ld \
  "$WORK/pages-plain" "$WORK/plain" "$WORK/pages-reversed" "$WORK/reversed"
# Code taken only now and then (a buffer growing, a retry) ran in one of the
# two runs: a third run, linked with the script, adds what ran outside it.
build "" hot
measure hot
python3 scripts/code-layout.py extend link/hot-code.ld "$WORK/pages-hot" "$WORK/hot"
echo "== done; rebuild (cargo build --release) to link with it"
