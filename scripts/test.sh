#!/usr/bin/env bash
# Runs every check CI runs: installs missing servers, then fmt, clippy and all tests
# (unit tests and integration tests against real VictoriaMetrics/Prometheus servers).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== the checkout stands alone (no file refers to the shared folder beside it)"
# The pattern is written with escapes so this file does not match itself.
if outside=$(grep -rnE '\.\./shared|/work[/]shared' src tests scripts benches examples .ci 2>/dev/null); then
  echo "ERROR: these lines refer to files outside the repository; copy the data into tests/ (e.g. tests/conformance/) and read it from there:" >&2
  echo "$outside" >&2
  exit 1
fi

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
