//! The job manager of `spillway ui`: export and import jobs run by
//! [`crate::bundle`] in the background, their last progress event kept for
//! `status` polls.
//!
//! At most [`MAX_RUNNING_EXPORTS`] exports fetch at once (each holds HTTP
//! streams to the source and a packer thread); up to
//! [`JobLimits::max_queued_exports`] more wait in FIFO order as `queued`
//! with their position, and a start beyond that is refused (429). At most
//! [`JobLimits::max_running_imports`] imports run at once, likewise.
//! Cancelling a queued job just drops it; cancelling a running one fires
//! the bundle job's `CancelToken`, which drops its HTTP streams and removes
//! its unfinished window and archive. Every job is driven by
//! [`crate::bundle::drive`], as the CLI's are.
//!
//! Finished jobs stay visible for the retention window, then a sweep (on a
//! blocking thread, off the async runtime) removes the entry and what the
//! job created: an export's own directory (made new by the job, never a
//! directory it was given), an import's uploaded bundle and its state file.
//! Uploads no job imported within the retention window, and `.part` files
//! no upload is writing any more, are swept too. Job ids are 128 random bits
//! from the OS generator: knowing one job's id says nothing of another's.
//!
//! Credentials: a job's [`ClientConfig`] lives only inside its running task
//! and is dropped when the task ends; entries keep the URL without them, and
//! `resume` takes the connection again from its request.
//!
//! The manager's methods sit by kind of job: `export.rs` and `import.rs`
//! (start, resume, progress, cancel, wait), `sweep.rs` (retention).

use crate::bundle::{
    drive, BundleError, CancelToken, ExportJob, ExportOutcome, ExportParams, ExportProgress,
    ImportJob, ImportOutcome, ImportParams, ImportProgress, ProgressTx,
};
use crate::client::ClientConfig;
use crate::model::time::now_ms;
use crate::transform::obfuscate::ObfuscationOptions;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

pub const MAX_RUNNING_EXPORTS: usize = 3;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

/// The bounds of the job manager (`spillway ui` flags).
#[derive(Clone, Debug)]
pub struct JobLimits {
    /// How long finished jobs, their files and unimported uploads are kept.
    pub retention: Duration,
    /// Exports waiting for one of the [`MAX_RUNNING_EXPORTS`] slots.
    pub max_queued_exports: usize,
    /// Imports running at once.
    pub max_running_imports: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            retention: DEFAULT_RETENTION,
            max_queued_exports: 16,
            max_running_imports: 2,
        }
    }
}

pub type JobFuture<T> = Pin<Box<dyn Future<Output = Result<T, BundleError>> + Send>>;

/// What actually runs a job: the bundle engine, or a stand-in in tests.
pub trait Runner: Send + Sync + 'static {
    fn export(
        &self,
        params: ExportParams,
        progress: ProgressTx<ExportProgress>,
    ) -> (CancelToken, JobFuture<ExportOutcome>);
    fn import(
        &self,
        params: ImportParams,
        progress: ProgressTx<ImportProgress>,
    ) -> (CancelToken, JobFuture<ImportOutcome>);
}

/// [`ExportJob`] and [`ImportJob`].
pub struct BundleRunner;

impl Runner for BundleRunner {
    fn export(
        &self,
        params: ExportParams,
        progress: ProgressTx<ExportProgress>,
    ) -> (CancelToken, JobFuture<ExportOutcome>) {
        let h = ExportJob::start(params, progress);
        (h.cancel_token(), Box::pin(h.wait()))
    }

    fn import(
        &self,
        params: ImportParams,
        progress: ProgressTx<ImportProgress>,
    ) -> (CancelToken, JobFuture<ImportOutcome>) {
        let h = ImportJob::start(params, progress);
        (h.cancel_token(), Box::pin(h.wait()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// An export without its connection: enough to run it again with `resume`.
#[derive(Clone, Debug)]
pub struct ExportSpec {
    pub source_url: String,
    pub selectors: Vec<String>,
    pub jobs: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: Option<i64>,
    pub batch_window_ms: Option<i64>,
    pub obfuscation: ObfuscationOptions,
    /// The job's own directory; the bundle lands here.
    pub out_dir: PathBuf,
    /// The job created `out_dir` (it did not exist): only then is it swept.
    pub owned_dir: bool,
}

impl ExportSpec {
    fn params(&self, client: ClientConfig, resume: bool) -> ExportParams {
        ExportParams {
            client,
            selectors: self.selectors.clone(),
            jobs: self.jobs.clone(),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            step_ms: self.step_ms,
            batch_window_ms: self.batch_window_ms,
            batch_samples: None,
            native: true,
            obfuscation: self.obfuscation.clone(),
            obfuscation_map: None,
            out_dir: self.out_dir.clone(),
            staging_dir: Some(self.out_dir.join("staging")),
            resume,
        }
    }
}

/// An import without its connection.
#[derive(Clone, Debug)]
pub struct ImportSpec {
    pub target_url: String,
    pub bundle: PathBuf,
    pub shift_to_now: bool,
    pub dry_run: bool,
    /// Removed with the job when it is swept (an uploaded bundle).
    pub owned_file: bool,
}

#[derive(Clone, Debug)]
pub struct ExportSnapshot {
    pub id: String,
    pub spec: ExportSpec,
    pub state: JobState,
    pub queue_position: Option<usize>,
    pub progress: Option<ExportProgress>,
    pub outcome: Option<ExportOutcome>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub runs: u32,
}

#[derive(Clone, Debug)]
pub struct ImportSnapshot {
    pub id: String,
    pub spec: ImportSpec,
    pub state: JobState,
    pub progress: Option<ImportProgress>,
    pub outcome: Option<ImportOutcome>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub runs: u32,
}

struct Entry<S> {
    snap: S,
    seq: u64,
    cancel: CancelToken,
    finished_at: Option<Instant>,
    state_tx: watch::Sender<JobState>,
}

impl<S> Entry<S> {
    /// Starts the retention clock and tells the waiters.
    fn finished(&mut self, state: JobState) {
        self.finished_at = Some(Instant::now());
        self.state_tx.send_replace(state);
    }
}

/// How a job ended, recorded the same way for exports and imports.
fn settle<O>(
    what: &str,
    id: &str,
    result: Result<O, BundleError>,
    state: &mut JobState,
    outcome: &mut Option<O>,
    error: &mut Option<String>,
) {
    match result {
        Ok(o) => {
            *state = JobState::Done;
            *outcome = Some(o);
        }
        Err(BundleError::Cancelled) => *state = JobState::Cancelled,
        Err(err) => {
            tracing::warn!(job = id, "{what} failed: {err}");
            *state = JobState::Failed;
            *error = Some(err.to_string());
        }
    }
}

#[derive(Default)]
struct Inner {
    exports: HashMap<String, Entry<ExportSnapshot>>,
    imports: HashMap<String, Entry<ImportSnapshot>>,
    seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no {kind} job {id:?}: it never existed or was cleaned up after the retention window")]
    Unknown { kind: &'static str, id: String },
    /// A bound of [`JobLimits`] is reached; try again later.
    #[error("{what} (the limit of this server); try again when one has finished")]
    Busy { what: String },
    #[error("{kind} job {id:?} is {state:?}; only a failed or cancelled job can be resumed")]
    NotResumable {
        kind: &'static str,
        id: String,
        state: JobState,
    },
}

pub struct JobManager {
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    runner: Arc<dyn Runner>,
    limits: JobLimits,
    /// Where uploads land; swept of bundles no import took.
    uploads: Option<PathBuf>,
    /// `.part` files being written now: never swept.
    uploading: Mutex<HashSet<PathBuf>>,
}

/// 128 random bits: ids are the only thing between a client and another's job.
fn new_id() -> String {
    crate::server::random_hex(16).unwrap_or_else(|e| panic!("{e}"))
}

impl JobManager {
    pub fn new(runner: Arc<dyn Runner>, limits: JobLimits) -> Arc<JobManager> {
        Arc::new(JobManager {
            inner: Mutex::new(Inner::default()),
            slots: Arc::new(Semaphore::new(MAX_RUNNING_EXPORTS)),
            runner,
            limits,
            uploads: None,
            uploading: Mutex::new(HashSet::new()),
        })
    }

    /// Like [`new`](Self::new), also sweeping `uploads` of orphaned bundles.
    pub fn with_uploads(
        runner: Arc<dyn Runner>,
        limits: JobLimits,
        uploads: PathBuf,
    ) -> Arc<JobManager> {
        let mut m = JobManager::new(runner, limits);
        Arc::get_mut(&mut m).expect("just created").uploads = Some(uploads);
        m
    }

    pub fn retention(&self) -> Duration {
        self.limits.retention
    }

    pub fn limits(&self) -> &JobLimits {
        &self.limits
    }

    /// Marks `part` as being written until the guard is dropped.
    pub fn uploading(self: &Arc<Self>, part: PathBuf) -> UploadGuard {
        self.uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part.clone());
        UploadGuard {
            manager: Arc::clone(self),
            part,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses when `max_queued_exports` wait already.
    fn check_export_queue(&self, inner: &Inner) -> Result<(), JobError> {
        let queued = inner
            .exports
            .values()
            .filter(|e| e.snap.state == JobState::Queued)
            .count();
        // Just-started jobs are `queued` until their task takes a free slot.
        let waiting = queued.saturating_sub(self.slots.available_permits());
        if waiting >= self.limits.max_queued_exports {
            return Err(JobError::Busy {
                what: format!(
                    "{waiting} exports are already waiting for one of the {MAX_RUNNING_EXPORTS} running ones to finish"
                ),
            });
        }
        Ok(())
    }

    /// Refuses when `max_running_imports` run already.
    fn check_imports(&self, inner: &Inner) -> Result<(), JobError> {
        let running = inner
            .imports
            .values()
            .filter(|e| e.snap.state == JobState::Running)
            .count();
        if running >= self.limits.max_running_imports {
            return Err(JobError::Busy {
                what: format!("{running} imports are already running"),
            });
        }
        Ok(())
    }
}

/// An upload in progress; its `.part` file is not swept while this lives.
pub struct UploadGuard {
    manager: Arc<JobManager>,
    part: PathBuf,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.manager
            .uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.part);
    }
}

mod export;
mod import;
mod sweep;
#[cfg(test)]
mod tests;
