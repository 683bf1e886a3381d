#!/usr/bin/env bash
# Installs what the demo and the tests need, only where missing (idempotent).
# Debian/Ubuntu; run as root or with sudo available.
set -euo pipefail

need=()
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v vmagent >/dev/null 2>&1 || need+=(victoria-metrics)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)  # scripts/bench-run.sh
command -v strace >/dev/null 2>&1 || need+=(strace)    # the queue's directory-fsync test traces syscalls
# tests/events.rs: syslog destinations against a real rsyslog (TCP, UDP, TLS, RELP).
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need+=(rsyslog-gnutls)
ls /usr/lib/*/rsyslog/imrelp.so >/dev/null 2>&1 || need+=(rsyslog-relp)
# The ui browser tests (tests/ui_browser.rs) drive Debian's chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# tests/operate.rs: the .deb (dpkg-deb), the static binary (readelf, strip), the image (podman).
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
command -v readelf >/dev/null 2>&1 || need+=(binutils)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
for extra in "$@"; do
  case "$extra" in
    chromium) command -v chromium >/dev/null 2>&1 || need+=(chromium) ;;
    time) [ -x /usr/bin/time ] || need+=(time) ;;
    *) need+=("$extra") ;;
  esac
done

if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The Debian packages enable system services; the tests start their own
# instances on free ports, so stop the packaged ones if they are running.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for svc in victoria-metrics prometheus vmagent vmalert vmauth rsyslog; do
    systemctl is-active --quiet "$svc" 2>/dev/null && { ${sudo:-} systemctl stop "$svc" || true; }
  done
fi

# tests/operate.rs validates the Kubernetes manifests offline; this version bundles its schemas.
if ! python3 -c "import kubernetes_validate" >/dev/null 2>&1; then
  echo "installing: kubernetes-validate==1.37.0 (pip)"
  python3 -m pip install --quiet kubernetes-validate==1.37.0 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
fi

# tests/export_lake.rs reads the partitioned Parquet export back with DuckDB and pandas/pyarrow.
if ! python3 -c "import duckdb, pandas, pyarrow" >/dev/null 2>&1; then
  echo "installing: duckdb==2.0.1 pandas==3.1.1 pyarrow==26.0.1 (pip)"
  python3 -m pip install --quiet duckdb==2.0.1 pandas==3.1.1 pyarrow==26.0.1 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages duckdb==2.0.1 pandas==3.1.1 pyarrow==26.0.1
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install a Rust toolchain (rustup) first" >&2; exit 1; }
exit 0
