//! Support bundles: `spillway gather` and `spillway import`, as a library
//! the CLI (and the web UI) drive.
//!
//! - [`validate()`]: reachability, auth, flavour (single, cluster vmselect,
//!   vmauth, Prometheus), version, whether `/api/v1/export` is routed.
//! - [`discover()`]: components and jobs (`vm_app_version`, `up`), series per job.
//! - [`sample()`]: a bounded, obfuscated preview.
//! - [`ExportJob`]: windows → staged files → ZIP bundle, with progress events,
//!   cancellation and `--resume`; see `gather.rs` for the staging layout.
//! - [`drive()`]: runs either job with progress and cancel, for the CLI and the UI.
//! - [`ImportJob`]: checks a bundle (`verify.rs`), uploads it in line-aligned
//!   chunks with a resumable committed offset, verifies with `/api/v1/series`;
//!   see `import.rs`.
//!
//! Credentials stay in [`ClientConfig`](crate::client::ClientConfig) in
//! memory: staging files, state files, metadata and log lines name the server
//! by its URL without them. Uses `source`, `transform`, `sink`, `client`,
//! `model`.

pub mod discover;
pub mod drive;
pub mod gather;
pub mod import;
pub mod line;
pub mod metadata;
pub mod validate;
pub mod verify;
pub mod windows;

pub use discover::{discover, discover_components, sample, Discovery, SampleRow};
pub use drive::drive;
pub use gather::{ExportJob, ExportOutcome, ExportParams, ExportProgress, ExportStage};
pub use import::{ImportJob, ImportOutcome, ImportParams, ImportProgress, ImportStage};
pub use metadata::BundleMetadata;
pub use validate::{validate, Flavour, ValidateReport};
pub use verify::{verify_bundle, SafetyLimits, VerifyReport};

use crate::client::ClientError;
use crate::model::Selector;
use crate::source::vm_export::SourceError;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Source(SourceError),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Bad parameters (flags, selectors, ranges).
    #[error("{0}")]
    Params(String),
    /// The bundle is malformed or unsafe; nothing was imported.
    #[error("{}: {reason}", path.display())]
    Rejected { path: PathBuf, reason: String },
    /// An import stopped part-way; `--resume` continues from the saved offset.
    #[error("{reason}\n  {committed} of {total} bytes of metrics.jsonl were imported; the offset is saved in {}\n  fix the target, then run the same command with --resume", state.display())]
    Interrupted {
        reason: String,
        committed: u64,
        total: u64,
        state: PathBuf,
    },
    #[error("cancelled")]
    Cancelled,
}

impl From<SourceError> for BundleError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Cancelled => BundleError::Cancelled,
            SourceError::Client(c) => BundleError::Client(c),
            other => BundleError::Source(other),
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |error| BundleError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Stops a job: HTTP streams are dropped, partial files removed.
#[derive(Clone, Debug)]
pub struct CancelToken {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken {
            tx: std::sync::Arc::new(watch::channel(false).0),
        }
    }
}

impl CancelToken {
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once [`cancel`](Self::cancel) was called.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Sleeps unless cancelled first.
    pub(crate) async fn sleep(&self, d: Duration) -> Result<(), BundleError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancelled() => Err(BundleError::Cancelled),
        }
    }
}

/// A running job: cancel it or wait for its outcome.
#[derive(Debug)]
pub struct JobHandle<T> {
    cancel: CancelToken,
    task: tokio::task::JoinHandle<Result<T, BundleError>>,
}

impl<T> JobHandle<T> {
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    pub fn cancel(&self) {
        self.cancel.cancel()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub async fn wait(self) -> Result<T, BundleError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(BundleError::Cancelled),
        }
    }
}

/// Progress events go here; a slow reader misses intermediate events (each
/// carries running totals), never the last one.
pub type ProgressTx<P> = Option<tokio::sync::mpsc::Sender<P>>;

pub(crate) fn emit<P>(tx: &ProgressTx<P>, event: P) {
    if let Some(tx) = tx {
        let _ = tx.try_send(event);
    }
}

pub(crate) async fn emit_last<P>(tx: &ProgressTx<P>, event: P) {
    if let Some(tx) = tx {
        let _ = tx.send(event).await;
    }
}

/// Remaining time from the fraction done so far.
pub(crate) fn eta(elapsed: Duration, done: f64, total: f64) -> Option<Duration> {
    if done <= 0.0 || total <= done {
        return (total <= done && total > 0.0).then_some(Duration::ZERO);
    }
    Some(elapsed.mul_f64((total - done) / done))
}

/// The `match[]` selectors for `--selector`s and `--job`s: every alternative
/// of every selector (VictoriaMetrics' `or` inside braces) becomes its own
/// selector with `job=~"j1|j2"` added; jobs alone select all their series;
/// nothing at all selects every series.
pub fn build_selectors(selectors: &[String], jobs: &[String]) -> Result<Vec<String>, String> {
    let job_matcher = (!jobs.is_empty()).then(|| {
        let alts: Vec<String> = jobs.iter().map(|j| regex::escape(j)).collect();
        format!("job=~{}", quote(&alts.join("|")))
    });
    let mut out = Vec::new();
    for s in selectors {
        let parsed = Selector::parse(s).map_err(|e| format!("--selector: {e}"))?;
        match &job_matcher {
            None => out.push(s.trim().to_string()),
            Some(jm) => {
                for alt in parsed.alternatives() {
                    let mut parts: Vec<String> = alt
                        .iter()
                        .map(|m| {
                            let op = match m.op {
                                crate::model::MatchOp::Equal => "=",
                                crate::model::MatchOp::NotEqual => "!=",
                                crate::model::MatchOp::Regex => "=~",
                                crate::model::MatchOp::NotRegex => "!~",
                            };
                            format!("{}{op}{}", m.name, quote(&m.value))
                        })
                        .collect();
                    parts.push(jm.clone());
                    out.push(format!("{{{}}}", parts.join(", ")));
                }
            }
        }
    }
    if out.is_empty() {
        out.push(match &job_matcher {
            Some(jm) => format!("{{{jm}}}"),
            None => r#"{__name__!=""}"#.to_string(),
        });
    }
    Ok(out)
}

fn quote(s: &str) -> String {
    let mut out = String::new();
    crate::model::labels::push_quoted(&mut out, s);
    out
}

/// The window length for a range: 30 s up to 15 min, 1 min up to 6 h, else
/// 5 min (vmgather's choice); a custom one is clamped to 30 s – 24 h.
pub fn batch_window_ms(range_ms: i64, custom_ms: Option<i64>) -> i64 {
    const MIN: i64 = 30_000;
    const MAX: i64 = 86_400_000;
    match custom_ms {
        Some(c) => c.clamp(MIN, MAX),
        None if range_ms <= 15 * 60_000 => 30_000,
        None if range_ms <= 6 * 3_600_000 => 60_000,
        None => 300_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_jobs() {
        assert_eq!(build_selectors(&[], &[]).unwrap(), [r#"{__name__!=""}"#]);
        assert_eq!(
            build_selectors(&[], &["a.b".into(), "c".into()]).unwrap(),
            [r#"{job=~"a\\.b|c"}"#]
        );
        assert_eq!(
            build_selectors(&[r#"up{x="1" or y!="2"}"#.into()], &["j".into()]).unwrap(),
            [
                r#"{__name__="up", x="1", job=~"j"}"#,
                r#"{__name__="up", y!="2", job=~"j"}"#
            ]
        );
        assert_eq!(build_selectors(&[" up ".into()], &[]).unwrap(), ["up"]);
        assert!(build_selectors(&["up{".into()], &[])
            .unwrap_err()
            .contains("--selector"));
    }

    #[test]
    fn window_sizes() {
        assert_eq!(batch_window_ms(15 * 60_000, None), 30_000);
        assert_eq!(batch_window_ms(6 * 3_600_000, None), 60_000);
        assert_eq!(batch_window_ms(7 * 3_600_000, None), 300_000);
        assert_eq!(batch_window_ms(1, Some(1_000)), 30_000);
        assert_eq!(batch_window_ms(1, Some(100 * 3_600_000)), 86_400_000);
    }

    #[test]
    fn eta_from_fraction() {
        assert_eq!(
            eta(Duration::from_secs(10), 1.0, 3.0),
            Some(Duration::from_secs(20))
        );
        assert_eq!(eta(Duration::from_secs(10), 0.0, 3.0), None);
    }
}
