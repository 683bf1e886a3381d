//! `spillway run`: continuous threshold export.
//!
//! - `config`: the YAML config; `rules`: the vmalert rule-file loader that
//!   `run`, `replay` and `rules check` share;
//! - the evaluation engine: `schedule` (aligned timestamps, clock), `eval`
//!   (what a rule makes of a result), `datasource` (queries as vmalert sends
//!   them), `group` (one task per group: concurrency, catch-up), `engine`
//!   (start, reload, shutdown, the [`ResultSink`] seam), `state`
//!   (`/api/v1/rules`) and `replay` (backfill over a past range);
//! - routing: `route` (global relabeling, queued destinations), `receiver`
//!   (lets `run` stand where vmagent stands) and the `spillway relabel` tool.
//!
//! Start-up, in order, each step logged: read and check the whole config
//! (every problem reported, nothing started), open the destination queues
//! (repairing what a crash left), bind the listener, start the senders,
//! serve. Stop (SIGINT/SIGTERM), in reverse: stop taking requests and
//! finish those in progress, let the destinations deliver what they hold
//! for up to the shutdown timeout, close the queues. A second signal stops
//! at once; queued data waits on disk for the next start either way.

pub mod config;
pub mod datasource;
pub mod engine;
pub mod eval;
mod group;
pub mod receiver;
pub mod relabel;
pub mod replay;
pub mod route;
pub mod rules;
pub mod schedule;
pub mod state;

#[cfg(test)]
mod tests;

pub use datasource::{ClientDatasource, Datasource, QueryError, RuleQuery};
pub use engine::{
    preview, Engine, EngineError, EngineHandle, EngineOptions, MemorySink, PreviewRule,
    ReloadSummary, ResultSink,
};
pub use replay::{replay, ReplayOptions, ReplayProgress, ReplayReport};
pub use schedule::{Clock, Schedule, SystemClock, TokioClock};
pub use state::GroupsState;

use crate::server::shutdown::{ReloadSignal, StopSignals};
use route::{Pipeline, PipelineConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Listen address unless `server.listen` or `--http.listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8880";
/// How long a graceful stop waits for requests and deliveries.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Overrides `server.listen`.
    pub listen: Option<String>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Every problem found in the config, one per entry.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    #[error("{0:#}")]
    Fatal(anyhow::Error),
}

/// The HTTP app of `run`: health, metrics, receiver, destinations API.
pub fn app(pipeline: Arc<Pipeline>, limits: receiver::Limits) -> axum::Router {
    let collect_from = Arc::clone(&pipeline);
    let collect: Arc<dyn Fn() + Send + Sync> = Arc::new(move || collect_from.collect_metrics());
    axum::Router::new()
        .merge(crate::server::health::router())
        .merge(crate::server::metrics::router(collect))
        .merge(receiver::router(Arc::clone(&pipeline), limits))
        .merge(route::api_router(pipeline))
}

/// Runs until SIGINT or SIGTERM; see the module docs for the order of things.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let loaded = config::RunConfig::load(&opts.config).map_err(|e| RunError::Config(vec![e]))?;
    let pipeline_config = PipelineConfig::check(&loaded).map_err(RunError::Config)?;
    let listen = opts
        .listen
        .clone()
        .or_else(|| loaded.config.server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let fatal = |e: anyhow::Error| RunError::Fatal(e);
    let mut signals =
        StopSignals::new().map_err(|e| fatal(anyhow::anyhow!("cannot listen for signals: {e}")))?;
    let mut reload =
        ReloadSignal::new().map_err(|e| fatal(anyhow::anyhow!("cannot listen for SIGHUP: {e}")))?;

    crate::server::metrics::start();
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::open(pipeline_config))
        .await
        .map_err(|e| fatal(anyhow::anyhow!("opening destinations: {e}")))?
        .map_err(|e| fatal(anyhow::Error::new(e).context("opening destinations")))?;
    let pipeline = Arc::new(pipeline);
    let listener = crate::server::bind(&listen)
        .await
        .map_err(|e| fatal(anyhow::anyhow!("{e}; set server.listen or --http.listen")))?;
    let local = listener
        .local_addr()
        .map_err(|e| fatal(anyhow::anyhow!("listener address: {e}")))?;
    pipeline.start();
    tracing::info!(
        listen = %local,
        destinations = pipeline.destinations().len(),
        "spillway run started: /api/v1/write, /api/v1/import, /api/v1/destinations, /metrics, /health"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = app(Arc::clone(&pipeline), receiver::Limits::default());
    let mut server = tokio::spawn(crate::server::serve(listener, app, async move {
        let _ = stop_rx.await;
    }));

    let signal = loop {
        tokio::select! {
            s = signals.recv() => break Some(s),
            _ = reload.recv() => {
                tracing::warn!("SIGHUP received: config reload is not supported yet; restart spillway to apply config changes");
            }
            r = &mut server => {
                let e = match r {
                    Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("HTTP server"),
                    Err(e) => anyhow::anyhow!("HTTP server task: {e}"),
                };
                tracing::error!("{e:#}");
                break None;
            }
        }
    };
    if let Some(s) = signal {
        tracing::info!(signal = %s, "stopping: no new requests; finishing those in progress");
        let _ = stop_tx.send(());
        tokio::select! {
            r = tokio::time::timeout(opts.shutdown_timeout, &mut server) => {
                if r.is_err() {
                    tracing::warn!("requests still in progress after the shutdown timeout; closing them");
                    server.abort();
                }
            }
            s = signals.recv() => {
                tracing::warn!(signal = %s, "second signal: stopping now; undelivered data stays queued for the next start");
                return Ok(());
            }
        }
        tracing::info!("HTTP server stopped; delivering what the destinations hold");
    }
    tokio::select! {
        _ = pipeline.shutdown(opts.shutdown_timeout) => {}
        s = signals.recv() => {
            tracing::warn!(signal = %s, "second signal: stopping now; undelivered data stays queued for the next start");
            return Ok(());
        }
    }
    for st in pipeline.statuses() {
        tracing::info!(
            destination = %st.name,
            pending_samples = st.pending_samples,
            sent_samples = st.samples_sent,
            "destination stopped"
        );
    }
    tracing::info!("spillway run stopped");
    match signal {
        Some(_) => Ok(()),
        None => Err(fatal(anyhow::anyhow!(
            "the HTTP server failed; see the log"
        ))),
    }
}
