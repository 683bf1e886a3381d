#!/usr/bin/env bash
# RELP ceiling benchmark: how fast can anything deliver acknowledged syslog
# into rsyslog's imrelp on this machine? In one run, SAMPLES events each:
#   spillway      → `spillway run` with a relp:// destination (bench-events.sh)
#   rsyslog omrelp→ rsyslog's own RELP client (imtcp → omrelp) into the
#                   same kind of receiver, the peer a SIEM team would use
#   raw window W  → a minimal pipelined RELP client (Python: frames built
#                   beforehand, a reader thread that only counts answers)
#                   with W frames in flight (128, 1024, 16384): what
#                   imrelp itself can take
# Prints events/s per sender, median of RUNS, and spillway's ratio to each.
#
#   scripts/bench-relp.sh                 (SAMPLES=300000 RUNS=3)
#
# Needs rsyslog + rsyslog-relp, python3 (scripts/install-deps.sh). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${SAMPLES:-300000}
RUNS=${RUNS:-3}
RSYSLOGD=/usr/sbin/rsyslogd
[ -x "$RSYSLOGD" ] || { echo "missing rsyslogd: run scripts/install-deps.sh" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

receiver() { # dir port -> starts an imrelp receiver writing dir/out.log
  mkdir -p "$1"
  cat >"$1/rsyslog.conf" <<CONF
global(workDirectory="$1")
module(load="imrelp")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="out") { action(type="omfile" file="$1/out.log" template="msgonly" asyncWriting="on" ioBufferSize="1m" flushOnTXEnd="off") }
input(type="imrelp" port="$2" address="127.0.0.1" ruleset="out")
CONF
  "$RSYSLOGD" -n -f "$1/rsyslog.conf" -i "$1/pid" >"$1/log" 2>&1 &
  PIDS+=($!)
}

forwarder() { # dir in_port relp_port -> imtcp → omrelp
  mkdir -p "$1"
  cat >"$1/rsyslog.conf" <<CONF
global(workDirectory="$1")
module(load="imtcp")
module(load="omrelp")
ruleset(name="fwd") { action(type="omrelp" target="127.0.0.1" port="$3" queue.type="LinkedList" queue.size="2000000" queue.dequeueBatchSize="1024") }
input(type="imtcp" port="$2" address="127.0.0.1" ruleset="fwd")
CONF
  "$RSYSLOGD" -n -f "$1/rsyslog.conf" -i "$1/pid" >"$1/log" 2>&1 &
  PIDS+=($!)
}

cat >"$WORK/relp.py" <<'PY'
# Modes: "raw PORT N W" pipelines N RELP frames with W in flight;
# "tcp PORT N" writes N octet-counted frames; "wait FILE N SECONDS" waits
# for N lines in FILE. Prints events/s (from the start to the last line/ack).
import socket, sys, time
MSG = (b'<134>1 2026-12-02T04:00:00.000Z host spillway - recording - {"time":"2026-12-02T04:00:00.000Z",'
       b'"metric":"m","value":1.5,"labels":{"instance":"x:9100","job":"node"},"group":"g","rule":"r","type":"recording"}')
def connect(port):
    for _ in range(100):
        try: return socket.create_connection(("127.0.0.1", port))
        except OSError: time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")
mode = sys.argv[1]
if mode == "raw":
    # A writer that refills the window as soon as answers arrive and a
    # reader thread that only counts them: the least a sender can cost.
    import threading
    port, n, w = map(int, sys.argv[2:5])
    s = connect(port); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    offer = b"relp_version=0\nrelp_software=bench\ncommands=syslog"
    s.sendall(b"1 open %d %s\n" % (len(offer), offer))
    if not s.recv(4096).startswith(b"1 rsp"): raise SystemExit("open refused")
    frames = [b"%d syslog %d %s\n" % (i + 2, len(MSG), MSG) for i in range(n)]
    acked, closed, cv = 0, False, threading.Condition()
    def read():
        global acked, closed
        rest = b""
        while acked < n:
            d = s.recv(1 << 16)
            if not d: break
            rest += d
            end = rest.rfind(b"\n") + 1
            k = rest.count(b" rsp ", 0, end)  # whole frames only: a partial one is counted once it is complete
            rest = rest[end:]
            with cv:
                acked += k; cv.notify()
        with cv:
            closed = True; cv.notify()
    reader = threading.Thread(target=read, daemon=True); t0 = time.time(); reader.start()
    sent, deadline = 0, time.time() + 300
    while sent < n:
        with cv:
            while sent - acked >= w and not closed and time.time() < deadline: cv.wait(1)
            if closed or time.time() >= deadline: raise SystemExit("receiver closed or stalled")
            k = min(w - (sent - acked), n - sent)
        s.sendall(b"".join(frames[sent:sent + k])); sent += k
    reader.join(max(0, deadline - time.time()))
    if acked < n: raise SystemExit(f"only {acked} of {n} answered")
    print(f"{n / (time.time() - t0):.0f}")
elif mode == "tcp":
    port, n = map(int, sys.argv[2:4])
    s = connect(port)
    frame = b"%d %s" % (len(MSG), MSG)
    for i in range(0, n, 1000): s.sendall(frame * min(1000, n - i))
    s.close()
elif mode == "wait":
    path, n, limit = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    t0 = time.time(); seen = 0
    while time.time() - t0 < limit:
        try:
            with open(path, "rb") as f: seen = sum(1 for _ in f)
        except FileNotFoundError: seen = 0
        if seen >= n: break
        time.sleep(0.2)
    print(f"{seen / (time.time() - t0):.0f}" if seen >= n else f"{seen / limit:.0f}")
PY

RESULTS="$WORK/results"; : >"$RESULTS"
echo "== $SAMPLES events per run, $RUNS runs"
for run in $(seq 1 "$RUNS"); do
  rate=$(SAMPLES=$SAMPLES RUNS=1 TYPES=syslog_relp scripts/bench-events.sh 2>&1 | awk '/run 1:/ {print $4}')
  echo "spillway $rate" >>"$RESULTS"; echo "  run $run spillway:        $rate events/s"

  for w in 128 1024 16384; do
    port=$(free_port); receiver "$WORK/raw$w-$run" "$port"
    rate=$(python3 "$WORK/relp.py" raw "$port" "$SAMPLES" "$w")
    echo "raw_window_$w $rate" >>"$RESULTS"; echo "  run $run raw window $w:  $rate events/s"
  done

  port=$(free_port); in_port=$(free_port)
  receiver "$WORK/peer-$run" "$port"; forwarder "$WORK/fwd-$run" "$in_port" "$port"
  t0=$(date +%s.%N)
  python3 "$WORK/relp.py" tcp "$in_port" "$SAMPLES"
  rate=$(python3 "$WORK/relp.py" wait "$WORK/peer-$run/out.log" "$SAMPLES" 60)
  echo "rsyslog_omrelp $rate" >>"$RESULTS"; echo "  run $run rsyslog omrelp:  $rate events/s (60 s at most)"
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, v = line.split(); rows.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in rows.items()}
print(f"\n{'sender':18} {'events/s median':>16} {'(min..max)':>22} {'spillway / this':>16}")
for k, v in rows.items():
    print(f"{k:18} {med[k]:16.0f} {f'({min(v):.0f}..{max(v):.0f})':>22} {med['spillway'] / med[k]:15.2f}x")
PY
