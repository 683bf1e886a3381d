//! `GET /metrics`: self-metrics in the Prometheus text format, recorded
//! through the `metrics` facade and rendered by `metrics-exporter-prometheus`
//! on our own route (its HTTP listener is not compiled in).
//!
//! One process-wide recorder, installed on first use. Gauges that mirror
//! state owned elsewhere (queue depth, say) are refreshed at scrape time by
//! the `collect` hook the router is built with, so a scrape always shows the
//! current value and nothing polls in between.

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
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::debug!("metrics recorder already installed: {e}");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
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
                let extra = collect();
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
