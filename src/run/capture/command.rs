//! `spillway capture -c CONFIG --match SEL --from T --to T --destination
//! NAME`: copy a selector's raw data once, by hand, through the path
//! breach captures take: the run config's datasource and destinations
//! (their relabeling and queues), the limits, and the copied ranges kept
//! under `storage.path` (running it twice over the same range copies
//! nothing the second time). Then the destinations get time to deliver.

use super::config::{check_selector, CaptureDef, STATE_DIR};
use super::{CaptureReport, Captures, Mode};
use crate::model::time::{format_rfc3339_ms, now_ms};
use crate::run::route::Pipeline;
use crate::run::schedule::SystemClock;
use crate::run::setup::Setup;
use crate::sink::destination::{queue_dir_name, DestinationStatus};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `spillway capture`.
#[derive(Clone, Debug)]
pub struct CaptureCommand {
    pub config: PathBuf,
    pub matches: Vec<String>,
    pub from_ms: i64,
    /// Inclusive.
    pub to_ms: i64,
    pub destinations: Vec<String>,
    /// Names the capture key: the same name and selectors share copied ranges.
    pub name: String,
    pub max_series: Option<usize>,
    pub max_samples: Option<u64>,
    /// Data per fetch: the unit of resuming an interrupted run.
    pub chunk: Duration,
    pub labels: Vec<(String, String)>,
    pub drain_timeout: Duration,
    pub storage_path: Option<PathBuf>,
}

/// What `spillway capture` did.
#[derive(Debug)]
pub struct CaptureOutcome {
    pub from_ms: i64,
    pub to_ms: i64,
    /// `to` as copied (at most `now - eval_delay`).
    pub copied_to_ms: i64,
    pub report: CaptureReport,
    pub destinations: Vec<DestinationStatus>,
    pub elapsed: Duration,
}

impl CaptureOutcome {
    pub fn render(&self) -> String {
        let r = &self.report;
        let mut out = format!(
            "captured {} .. {} in {:.1}s: {} series, {} samples in {} chunks\n",
            format_rfc3339_ms(self.from_ms),
            format_rfc3339_ms(self.to_ms),
            self.elapsed.as_secs_f64(),
            r.series,
            r.samples,
            r.chunks,
        );
        if self.copied_to_ms < self.to_ms {
            let _ = writeln!(
                out,
                "  only up to {}: newer data may still arrive at the source (evaluation.eval_delay)",
                format_rfc3339_ms(self.copied_to_ms)
            );
        }
        if let Some(m) = &r.method {
            let _ = writeln!(out, "  source: {m}");
        }
        for d in &self.destinations {
            let _ = writeln!(
                out,
                "  destination {}: {} samples queued, {} delivered, {} still queued",
                d.name, d.samples_queued, d.samples_sent, d.pending_samples
            );
        }
        if self.destinations.iter().any(|d| d.pending_samples > 0) {
            out.push_str("  what is still queued is delivered by the next `spillway run` (or capture, replay) with the same storage.path\n");
        }
        for t in &r.truncated {
            let _ = writeln!(out, "  truncated: {t}");
        }
        for e in &r.errors {
            let _ = writeln!(out, "  failed: {e}");
        }
        out
    }

    /// Whether something failed (exit code 1).
    pub fn failed(&self) -> bool {
        !self.report.errors.is_empty()
    }
}

/// Runs `spillway capture`; `Err` holds usage or config problems.
pub async fn capture_command(opts: &CaptureCommand) -> Result<CaptureOutcome, Vec<String>> {
    let started = std::time::Instant::now();
    let path = opts.config.clone();
    let mut setup = tokio::task::spawn_blocking(move || Setup::load(&path))
        .await
        .map_err(|e| vec![format!("reading the config: {e}")])??;
    for w in &setup.warnings {
        tracing::warn!("{w}");
    }
    let mut problems = Vec::new();
    if opts.from_ms > opts.to_ms {
        problems.push(format!(
            "--from must not be after --to (got {} and {})",
            format_rfc3339_ms(opts.from_ms),
            format_rfc3339_ms(opts.to_ms)
        ));
    }
    if opts.matches.is_empty() {
        problems.push(
            "--match: give at least one series selector, e.g. --match '{instance=\"db1:9100\"}'"
                .into(),
        );
    }
    for m in &opts.matches {
        if let Err(e) = check_selector(m.trim()) {
            problems.push(format!("--match {m:?}: {e}"));
        }
    }
    let known: Vec<String> = setup
        .pipeline
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .collect();
    if opts.destinations.is_empty() {
        problems.push(format!(
            "--destination: name at least one of {}",
            known.join(", ")
        ));
    }
    for d in &opts.destinations {
        if !known.contains(d) {
            problems.push(format!(
                "--destination {d:?}: not in {}; destinations: {}",
                setup.loaded.source,
                known.join(", ")
            ));
        }
    }
    if setup.capture_source.is_none() {
        problems.push(format!(
            "{}: datasource: not set; `spillway capture` reads raw samples from it",
            setup.loaded.source
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(dir) = &opts.storage_path {
        for d in &mut setup.pipeline.destinations {
            d.queue_dir = dir.join(queue_dir_name(&d.name));
        }
        setup.captures.state_dir = dir.join(STATE_DIR);
    }
    let mut def = CaptureDef::manual(
        &opts.name,
        opts.matches.iter().map(|m| m.trim().to_string()).collect(),
        opts.destinations.clone(),
    );
    if let Some(n) = opts.max_series {
        def.max_series = n.max(1);
    }
    if let Some(n) = opts.max_samples {
        def.max_samples = n.max(1);
    }
    def.labels = opts.labels.clone();
    def.chunk_ms = (opts.chunk.as_millis() as i64).max(1000);
    let mut config = setup.captures.clone();
    config.defs = vec![def.clone()];

    let pipeline_config = setup.pipeline.clone();
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::open(pipeline_config))
        .await
        .map_err(|e| vec![format!("opening destinations: {e}")])?
        .map_err(|e| {
            vec![format!(
                "opening destinations: {e}; if `spillway run` uses this storage.path, give capture its own with --storage.path DIR"
            )]
        })?;
    let pipeline = Arc::new(pipeline);
    pipeline.start();
    let lag = config.lag_ms;
    let captures = Captures::open(
        config,
        setup.capture_source.clone(),
        Arc::clone(&pipeline) as Arc<dyn super::CaptureRouter>,
        Arc::new(SystemClock),
        Mode::Batch,
    )
    .map_err(|e| vec![e.to_string()])?;
    let end = (opts.to_ms + 1).min(now_ms() - lag).max(opts.from_ms);
    captures.add_window(&def, opts.from_ms, end);
    let report = captures.run_until_idle().await;
    tracing::info!(timeout = ?opts.drain_timeout, "capture done; waiting for the destinations to deliver");
    pipeline.shutdown(opts.drain_timeout).await;
    Ok(CaptureOutcome {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        copied_to_ms: end - 1,
        report,
        destinations: pipeline
            .statuses()
            .into_iter()
            .filter(|d| opts.destinations.contains(&d.name))
            .collect(),
        elapsed: started.elapsed(),
    })
}
