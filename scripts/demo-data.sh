#!/usr/bin/env bash
# Prints a few hours of synthetic cpu / memory / http series as VictoriaMetrics
# import JSON lines, ending now. Usage: demo-data.sh [HOURS] [STEP_SECONDS]
set -euo pipefail
hours=${1:-4}
step=${2:-15}
now=$(date +%s)
awk -v now="$now" -v hours="$hours" -v step="$step" '
function series(name, labels, kind, base, amp, period, phase,    i, t, v, vals, ts, n, acc) {
  n = int(hours * 3600 / step); vals = ""; ts = ""; acc = 0
  for (i = 0; i <= n; i++) {
    t = now - (n - i) * step
    if (kind == "wave") v = base + amp * sin(2 * 3.14159265 * (t / period) + phase) + (rand() - 0.5) * amp * 0.2
    else if (kind == "grow") v = base + amp * (i / n) + (rand() - 0.5) * amp * 0.02
    else { acc += base + amp * (sin(2 * 3.14159265 * (t / period) + phase) + 1) * rand(); v = acc }
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
    series("cpu_usage_percent", l, "wave", 55 + h * 5, 35, 3600, h)
    series("memory_total_bytes", l, "grow", 8e9, 0, 1, 0)
    series("memory_used_bytes", l, "grow", 4e9 + h * 5e8, 3e9, 1, 0)
  }
  split("200 500", codes, " ")
  for (c = 1; c <= 2; c++) {
    l = sprintf("\"job\":\"api\",\"instance\":\"api-1:8080\",\"status\":\"%s\"", codes[c])
    series("http_requests_total", l, "counter", (c == 1 ? 50 : 1), (c == 1 ? 20 : 4), 1800, c)
  }
  series("http_request_duration_seconds", "\"job\":\"api\",\"instance\":\"api-1:8080\",\"quantile\":\"0.99\"", "wave", 0.35, 0.3, 2400, 0)
}'
