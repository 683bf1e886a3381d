#!/usr/bin/env bash
# Prints synthetic cpu / memory / http series as VictoriaMetrics import JSON
# lines: HOURS of history up to now, plus AHEAD_MINUTES past now (so a live
# `spillway run` finds fresh points while the demo runs; queries never see
# points later than their own time).
# Usage: demo-data.sh [HOURS] [STEP_SECONDS] [AHEAD_MINUTES]
#
# Waves are phased relative to now, so what breaches at the end does not
# depend on the time of day: with the rules of examples/threshold-export,
# web-1 is above 80% CPU and web-2 above 92%, every host's memory is
# predicted to run out within the hour, db-1's CPU is 50% above an hour
# ago, the 5xx share of api-1 is above 5% and its p99 latency above 0.6s.
set -euo pipefail
hours=${1:-4}
step=${2:-15}
ahead=${3:-0}
now=$(date +%s)
awk -v now="$now" -v hours="$hours" -v step="$step" -v ahead="$ahead" '
function series(name, labels, kind, base, amp, period, phase,    i, t, v, vals, ts, n, m, acc) {
  n = int(hours * 3600 / step); m = int(ahead * 60 / step); vals = ""; ts = ""; acc = 0
  for (i = 0; i <= n + m; i++) {
    t = now - (n - i) * step
    if (kind == "wave") v = base + amp * sin(2 * 3.14159265 * ((t - now) / period) + phase) + (rand() - 0.5) * amp * 0.1
    else if (kind == "grow") v = base + amp * (i / n) + (rand() - 0.5) * amp * 0.02
    else { acc += base + amp * (sin(2 * 3.14159265 * ((t - now) / period) + phase) + 1) * rand(); v = acc }
    vals = vals (i ? "," : "") sprintf("%.4f", v)
    ts = ts (i ? "," : "") sprintf("%d000", t)
  }
  printf "{\"metric\":{\"__name__\":\"%s\",%s},\"values\":[%s],\"timestamps\":[%s]}\n", name, labels, vals, ts
}
BEGIN {
  srand(42)
  split("web-1 web-2 db-1 cache-1", hosts, " ")
  for (h = 1; h <= 4; h++) {
    l = sprintf("\"job\":\"node\",\"instance\":\"%s:9100\",\"host\":\"%s\"", hosts[h], hosts[h])
    series("cpu_usage_percent", l, "wave", 55 + h * 5, 35, 5400, h)
    series("memory_total_bytes", l, "grow", 8e9, 0, 1, 0)
    series("memory_used_bytes", l, "grow", 4e9 + h * 5e8, 3e9, 1, 0)
  }
  split("200 500", codes, " ")
  for (c = 1; c <= 2; c++) {
    l = sprintf("\"job\":\"api\",\"instance\":\"api-1:8080\",\"status\":\"%s\"", codes[c])
    series("http_requests_total", l, "counter", (c == 1 ? 50 : 3), (c == 1 ? 20 : 4), 1800, c)
  }
  series("http_request_duration_seconds", "\"job\":\"api\",\"instance\":\"api-1:8080\",\"quantile\":\"0.99\"", "wave", 0.35, 0.3, 2400, 1.5708)
}'
