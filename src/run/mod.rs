//! `spillway run`: continuous threshold export.
//!
//! - `config`: the YAML config; `rules`: the vmalert rule-file loader that
//!   `run`, `replay` and `rules check` share;
//! - the evaluation engine: `schedule` (aligned timestamps, clock), `eval`
//!   (what a rule makes of a result), `datasource` (queries as vmalert sends
//!   them), `options` (what every group shares), `results` (the
//!   [`ResultSink`] seam), `group` (one task per group: concurrency,
//!   catch-up), `engine` (start, reload, shutdown), `state`
//!   (`/api/v1/rules`) and `replay` (backfill over a past range);
//! - routing: `route` (global relabeling, queued destinations), `receiver`
//!   (lets `run` stand where vmagent stands) and the `spillway relabel` tool;
//! - `capture`: breach captures (raw data around every breach) and
//!   `spillway capture`;
//! - the daemon: `setup` (the one check path of start, reload, replay and
//!   preview), `reload`, `api` (HTTP routes and the embedded web page in
//!   `ui/`) and `tools` (`replay`, `rules check`, `rules preview`).
//!
//! Start-up, in order, each step logged: read and check the whole config
//! and every rule file (every problem reported, nothing started), open the
//! destination queues (repairing what a crash left), bind the listener,
//! start the senders, start the rule groups, serve. Stop (SIGINT/SIGTERM),
//! in reverse: stop taking requests and finish those in progress, stop the
//! rule groups (an evaluation in progress is abandoned and done again at
//! the next start), stop the captures (a chunk in progress is copied again
//! at the next start), let the destinations deliver what they hold for up to
//! the shutdown timeout, close the queues. A second signal stops at once;
//! queued data waits on disk for the next start either way. SIGHUP reloads
//! (see `reload`); `--config.check-interval` reloads when the files change
//! (`watch`). A marker in `storage.path` tells the next start whether this
//! one stopped in order (`unclean`); `cluster` picks the groups this member
//! of a sharded deployment evaluates.

pub mod api;
pub mod capture;
pub mod cluster;
pub mod config;
pub mod datasource;
pub mod engine;
pub mod eval;
mod group;
mod margin;
pub mod options;
pub mod probe;
pub mod receiver;
pub mod relabel;
pub mod reload;
pub mod replay;
pub mod results;
pub mod route;
pub mod rules;
pub mod schedule;
pub mod setup;
pub mod state;
pub mod tools;
pub mod unclean;
pub mod watch;

#[cfg(test)]
mod tests;

pub use datasource::{ClientDatasource, Datasource, QueryError, RuleQuery, VlogsWindow};
pub use engine::{preview, Engine, EngineError, EngineHandle, PreviewRule, ReloadSummary};
pub use options::EngineOptions;
pub use replay::{replay, ReplayOptions, ReplayProgress, ReplayReport};
pub use results::{MemorySink, ResultSink};
pub use schedule::{Clock, Schedule, SystemClock, TokioClock};
pub use state::GroupsState;

use crate::server::shutdown::{ReloadSignal, StopSignals};
use route::Pipeline;
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
    /// `--http.*`; its `listen` overrides `server.listen`.
    pub http: crate::server::HttpOptions,
    pub shutdown_timeout: Duration,
    /// Check the config and every rule file, then exit (vmagent's `-dryRun`).
    pub dry_run: bool,
    /// `--cluster.*`: which share of the rule groups this process evaluates.
    pub cluster: cluster::ClusterFlags,
    /// Reload when the config or a rule file changes (`--config.check-interval`).
    pub config_check_interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Every problem found in the config, one per entry.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    #[error("{0:#}")]
    Fatal(anyhow::Error),
}

/// Runs until SIGINT or SIGTERM; see the module docs for the order of things.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let fatal = |e: anyhow::Error| RunError::Fatal(e);
    let config_path = opts.config.clone();
    let flags = opts.cluster.clone();
    let setup = tokio::task::spawn_blocking(move || setup::Setup::load_with(&config_path, &flags))
        .await
        .map_err(|e| fatal(anyhow::anyhow!("reading the config: {e}")))?
        .map_err(RunError::Config)?;
    for w in &setup.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        config = %opts.config.display(),
        groups = setup.groups.len(),
        rules = setup.groups.iter().map(|g| g.rules.len()).sum::<usize>(),
        destinations = setup.pipeline.destinations.len(),
        cluster_member = setup.cluster.membership.member_num,
        cluster_members = setup.cluster.membership.members_count,
        groups_not_owned = setup.cluster.others.len(),
        "config checked"
    );
    let default_listen = setup.listen().unwrap_or(DEFAULT_LISTEN).to_string();
    let receiver_limits = setup.receiver_limits();
    let (listen, policy) = opts
        .http
        .resolve(&default_listen, crate::server::ServerKind::Run)
        .map_err(|e| RunError::Config(vec![e]))?;
    if opts.dry_run {
        crate::outln!(
            "{}: OK ({} rule groups, {} rules, {} destinations)",
            opts.config.display(),
            setup.groups.len(),
            setup.groups.iter().map(|g| g.rules.len()).sum::<usize>(),
            setup.pipeline.destinations.len()
        );
        return Ok(());
    }
    let mut signals =
        StopSignals::new().map_err(|e| fatal(anyhow::anyhow!("cannot listen for signals: {e}")))?;
    let mut hangup =
        ReloadSignal::new().map_err(|e| fatal(anyhow::anyhow!("cannot listen for SIGHUP: {e}")))?;

    crate::server::metrics::start();
    let pipeline_config = setup.pipeline.clone();
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::open(pipeline_config))
        .await
        .map_err(|e| fatal(anyhow::anyhow!("opening destinations: {e}")))?
        .map_err(|e| fatal(anyhow::Error::new(e).context("opening destinations")))?;
    let pipeline = Arc::new(pipeline);
    tracing::info!(hosts = %policy.allowed_hosts(), auth = policy.has_auth(), "serving these Host names");
    let listener = crate::server::bind(&listen)
        .await
        .map_err(|e| fatal(anyhow::anyhow!("{e}; set server.listen or --http.listen")))?;
    let local = listener
        .local_addr()
        .map_err(|e| fatal(anyhow::anyhow!("listener address: {e}")))?;
    pipeline.start();
    tracing::info!(
        destinations = pipeline.destinations().len(),
        "destinations started"
    );
    let captures = capture::Captures::open(
        setup.captures.clone(),
        setup.capture_source.clone(),
        Arc::clone(&pipeline) as Arc<dyn capture::CaptureRouter>,
        Arc::new(SystemClock),
        capture::Mode::Live,
    )
    .map_err(|e| fatal(anyhow::Error::new(e).context("opening breach captures")))?;
    pipeline.set_observer(Some(Arc::new(captures.clone())));
    captures.start();
    if !captures.is_empty() {
        tracing::info!(
            captures = setup.captures.defs.len(),
            "breach captures started"
        );
    }
    let engine = Engine::start(
        setup.groups.clone(),
        setup.datasource.clone(),
        Arc::clone(&pipeline) as Arc<dyn ResultSink>,
        Arc::new(SystemClock),
        setup.engine.clone(),
    )
    .map_err(|e| RunError::Config(e.to_string().lines().map(str::to_string).collect()))?;
    tracing::info!(groups = setup.groups.len(), "rule groups started");
    let storage = setup
        .loaded
        .config
        .storage
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(route::DEFAULT_STORAGE_PATH));
    let marker = unclean::Marker::create(&storage).map_err(|e| {
        fatal(anyhow::anyhow!(
            "{}: {e}",
            storage.join(unclean::MARKER).display()
        ))
    })?;
    if marker.previous_unclean {
        tracing::warn!("the previous run on this storage.path did not stop in order (kill -9, OOM, crash); queued data was recovered");
    }
    let reloader = Arc::new(
        reload::Reloader::new(
            opts.config.clone(),
            setup,
            engine.clone(),
            Arc::clone(&pipeline),
        )
        .with_captures(captures.clone())
        .with_cluster_flags(opts.cluster.clone()),
    );
    let _watcher = opts
        .config_check_interval
        .filter(|d| !d.is_zero())
        .map(|every| {
            AbortOnDrop(tokio::spawn(watch::watch(
                opts.config.clone(),
                every,
                Arc::clone(&reloader),
            )))
        });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = api::ApiState {
        pipeline: Arc::clone(&pipeline),
        engine: engine.clone(),
        reloader: Arc::clone(&reloader),
        captures: Some(captures.clone()),
    };
    let app = api::app(state, receiver_limits, Arc::new(policy));
    let mut server = tokio::spawn(crate::server::serve(listener, app, async move {
        let _ = stop_rx.await;
    }));
    tracing::info!(
        listen = %local,
        "spillway run started: web page at http://{local}/ ; /api/v1/rules, /api/v1/destinations, /api/v1/captures, /-/reload, /metrics, /health, /api/v1/write, /api/v1/import"
    );

    let signal = loop {
        tokio::select! {
            s = signals.recv() => break Some(s),
            _ = hangup.recv() => {
                // Problems are logged and counted by the reloader.
                let _ = reloader.reload("SIGHUP").await;
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
                marker.remove();
                return Ok(());
            }
        }
        tracing::info!("HTTP server stopped");
    }
    tokio::select! {
        _ = engine.shutdown() => {}
        s = signals.recv() => {
            tracing::warn!(signal = %s, "second signal: stopping now; undelivered data stays queued for the next start");
            marker.remove();
            return Ok(());
        }
    }
    tokio::select! {
        _ = captures.shutdown() => {}
        s = signals.recv() => {
            tracing::warn!(signal = %s, "second signal: stopping now; undelivered data stays queued for the next start");
            return Ok(());
        }
    }
    tracing::info!("rule groups and captures stopped; delivering what the destinations hold");
    tokio::select! {
        _ = pipeline.shutdown(opts.shutdown_timeout) => {}
        s = signals.recv() => {
            tracing::warn!(signal = %s, "second signal: stopping now; undelivered data stays queued for the next start");
            marker.remove();
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
    marker.remove();
    tracing::info!("spillway run stopped");
    match signal {
        Some(_) => Ok(()),
        None => Err(fatal(anyhow::anyhow!(
            "the HTTP server failed; see the log"
        ))),
    }
}

/// Aborts a background task when the run ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
