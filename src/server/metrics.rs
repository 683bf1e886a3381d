//! `GET /metrics`: self-metrics in the Prometheus text format, recorded
//! through the `metrics` facade and rendered by `metrics-exporter-prometheus`
//! on our own route (its HTTP listener is not compiled in).
//!
//! One process-wide recorder, installed on first use. Gauges that mirror
//! state owned elsewhere (queue depth, say) are refreshed at scrape time by
//! the `collect` hook the router is built with, so a scrape always shows the
//! current value and nothing polls in between.
//!
//! Every scrape also carries `spillway_build_info{version, commit,
//! build_date, rustc} 1` and the usual `process_*` series (CPU seconds,
//! resident and virtual memory, open and maximum file descriptors, start
//! time), read from `/proc/self` at scrape time on Linux.

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Bucket bounds of every `*_duration_seconds` histogram: 1 ms to 2 min.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder handle, installing the recorder on first call.
/// If another recorder was installed first (a test harness), metrics still
/// render, but only from this handle's own registry, which then stays empty.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .expect("bucket list is not empty");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::debug!("metrics recorder already installed: {e}");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        record_build_info();
        handle
    })
}

fn record_build_info() {
    use crate::build_info as b;
    metrics::describe_gauge!(
        "spillway_build_info",
        "What this binary was built from; always 1."
    );
    metrics::gauge!(
        "spillway_build_info",
        "version" => b::VERSION,
        "commit" => b::COMMIT,
        "build_date" => b::BUILD_DATE,
        "rustc" => b::RUSTC
    )
    .set(1.0);
}

/// `process_*` in the text format (empty where `/proc` is not there).
pub fn process_text() -> String {
    let Some(p) = ProcessStats::read() else {
        return String::new();
    };
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    one(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        p.cpu_seconds,
    );
    one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes as f64,
    );
    one(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes as f64,
    );
    one(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        p.open_fds as f64,
    );
    if let Some(max) = p.max_fds {
        one(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the unix epoch, in seconds.",
        p.start_time_seconds,
    );
    out
}

/// What `/proc/self` says about this process.
#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    start_time_seconds: f64,
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is f[n - 3].
        let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = clock_ticks() as f64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })?;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            });
        Some(ProcessStats {
            cpu_seconds: (num(14)? + num(15)?) as f64 / ticks,
            virtual_bytes: num(23)?,
            resident_bytes: num(24)? * page_size(),
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
            max_fds,
            start_time_seconds: boot as f64 + num(22)? as f64 / ticks,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<ProcessStats> {
        None
    }
}

#[cfg(target_os = "linux")]
fn clock_ticks() -> u64 {
    const SC_CLK_TCK: std::os::raw::c_int = 2;
    sysconf(SC_CLK_TCK).unwrap_or(100)
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    const SC_PAGESIZE: std::os::raw::c_int = 30;
    sysconf(SC_PAGESIZE).unwrap_or(4096)
}

#[cfg(target_os = "linux")]
fn sysconf(name: std::os::raw::c_int) -> Option<u64> {
    extern "C" {
        fn sysconf(name: std::os::raw::c_int) -> std::os::raw::c_long;
    }
    // SAFETY: sysconf only reads a system constant.
    let v = unsafe { sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

/// Installs the recorder and starts its housekeeping (histogram buffers are
/// drained into buckets every few seconds even when nobody scrapes, so they
/// cannot grow without bound). Call once from inside the runtime.
pub fn start() -> &'static PrometheusHandle {
    let h = handle();
    static UPKEEP: OnceLock<()> = OnceLock::new();
    UPKEEP.get_or_init(|| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    });
    h
}

/// `GET /metrics`; `collect` runs first to refresh mirrored gauges.
pub fn router<S: Clone + Send + Sync + 'static>(collect: Arc<dyn Fn() + Send + Sync>) -> Router<S> {
    router_with_text(Arc::new(move || {
        collect();
        String::new()
    }))
}

/// [`router`] whose `collect` also returns text in the exposition format,
/// appended to the registry's: for series that must be able to disappear
/// (the registry cannot remove one).
pub fn router_with_text<S: Clone + Send + Sync + 'static>(
    collect: Arc<dyn Fn() -> String + Send + Sync>,
) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let collect = Arc::clone(&collect);
            async move {
                let mut extra = collect();
                extra.push_str(&process_text());
                let mut text = handle().render();
                if !extra.is_empty() {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&extra);
                }
                (
                    [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                    text,
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_read_proc() {
        // Enough work to show on the CPU clock (10 ms ticks), bounded by count.
        let mut x = 0u64;
        for i in 0..2_000u64 {
            if ProcessStats::read().is_some_and(|p| p.cpu_seconds > 0.0) {
                break;
            }
            for j in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i ^ j));
            }
        }
        let text = process_text();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in:\n{text}"));
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v > 0.0, "{line}");
        }
        let p = ProcessStats::read().unwrap();
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0,
            "{p:?}"
        );
    }
}

/// What tests of self-metrics share: a run under a recorder of its own.
#[cfg(test)]
pub(crate) mod testutil {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::BTreeMap;

    /// What a test left in its recorder, each keyed `name{k=v,...}` with
    /// the labels sorted.
    #[derive(Debug, Default)]
    pub(crate) struct Recorded {
        /// Counters and gauges.
        pub values: BTreeMap<String, f64>,
        /// How many observations each histogram holds.
        pub histograms: BTreeMap<String, usize>,
    }

    /// Runs `test` on a current-thread runtime (its clock paused when
    /// `paused`), with a recorder that only this run writes to.
    pub(crate) fn recorded<F: std::future::Future<Output = ()>>(
        paused: bool,
        test: impl FnOnce() -> F,
    ) -> Recorded {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .expect("a test runtime");
        metrics::with_local_recorder(&recorder, || rt.block_on(test()));
        let mut out = Recorded::default();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => {
                    out.values.insert(name, n as f64);
                }
                DebugValue::Gauge(g) => {
                    out.values.insert(name, g.into_inner());
                }
                DebugValue::Histogram(h) => {
                    out.histograms.insert(name, h.len());
                }
            }
        }
        out
    }
}
