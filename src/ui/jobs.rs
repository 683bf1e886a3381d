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

    /// Queues an export; it starts once fewer than three are running.
    pub fn start_export(
        self: &Arc<Self>,
        spec: ExportSpec,
        client: ClientConfig,
    ) -> Result<String, JobError> {
        let mut inner = self.lock();
        self.check_export_queue(&inner)?;
        inner.seq += 1;
        let seq = inner.seq;
        let id = new_id();
        let cancel = CancelToken::default();
        inner.exports.insert(
            id.clone(),
            Entry {
                snap: ExportSnapshot {
                    id: id.clone(),
                    spec: spec.clone(),
                    state: JobState::Queued,
                    queue_position: None,
                    progress: None,
                    outcome: None,
                    error: None,
                    created_ms: now_ms(),
                    runs: 1,
                },
                seq,
                cancel: cancel.clone(),
                finished_at: None,
                state_tx: watch::channel(JobState::Queued).0,
            },
        );
        drop(inner);
        tokio::spawn(Arc::clone(self).run_export(id.clone(), spec, client, cancel, false));
        Ok(id)
    }

    /// Runs a failed or cancelled export again, keeping its staged windows.
    pub fn resume_export(self: &Arc<Self>, id: &str, client: ClientConfig) -> Result<(), JobError> {
        let mut inner = self.lock();
        self.check_export_queue(&inner)?;
        inner.seq += 1;
        let seq = inner.seq;
        let e = inner.exports.get_mut(id).ok_or_else(|| JobError::Unknown {
            kind: "export",
            id: id.to_string(),
        })?;
        if !matches!(e.snap.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::NotResumable {
                kind: "export",
                id: id.to_string(),
                state: e.snap.state,
            });
        }
        let cancel = CancelToken::default();
        e.seq = seq;
        e.cancel = cancel.clone();
        e.finished_at = None;
        e.snap.state = JobState::Queued;
        e.snap.error = None;
        e.snap.runs += 1;
        e.state_tx.send_replace(JobState::Queued);
        let spec = e.snap.spec.clone();
        drop(inner);
        tokio::spawn(Arc::clone(self).run_export(id.to_string(), spec, client, cancel, true));
        Ok(())
    }

    async fn run_export(
        self: Arc<Self>,
        id: String,
        spec: ExportSpec,
        client: ClientConfig,
        cancel: CancelToken,
        resume: bool,
    ) {
        let permit = tokio::select! {
            p = Arc::clone(&self.slots).acquire_owned() => p,
            _ = cancel.cancelled() => {
                self.finish_export(&id, Err(BundleError::Cancelled));
                return;
            }
        };
        let Ok(_permit) = permit else {
            self.finish_export(&id, Err(BundleError::Params("job manager closed".into())));
            return;
        };
        self.update_export(&id, |s| s.state = JobState::Running);
        let result = drive(
            |tx| self.runner.export(spec.params(client, resume), tx),
            cancel.cancelled(),
            |p| self.update_export(&id, |s| s.progress = Some(p)),
        )
        .await;
        self.finish_export(&id, result);
    }

    fn update_export(&self, id: &str, f: impl FnOnce(&mut ExportSnapshot)) {
        let mut inner = self.lock();
        if let Some(e) = inner.exports.get_mut(id) {
            f(&mut e.snap);
            e.state_tx.send_replace(e.snap.state);
        }
    }

    fn finish_export(&self, id: &str, result: Result<ExportOutcome, BundleError>) {
        let mut inner = self.lock();
        let Some(e) = inner.exports.get_mut(id) else {
            return;
        };
        let snap = &mut e.snap;
        settle(
            "export",
            id,
            result,
            &mut snap.state,
            &mut snap.outcome,
            &mut snap.error,
        );
        let state = snap.state;
        e.finished(state);
    }

    pub fn export(&self, id: &str) -> Result<ExportSnapshot, JobError> {
        let inner = self.lock();
        let e = inner.exports.get(id).ok_or_else(|| JobError::Unknown {
            kind: "export",
            id: id.to_string(),
        })?;
        let mut snap = e.snap.clone();
        if snap.state == JobState::Queued {
            let ahead = inner
                .exports
                .values()
                .filter(|o| o.snap.state == JobState::Queued && o.seq < e.seq)
                .count();
            snap.queue_position = Some(ahead + 1);
        }
        Ok(snap)
    }

    pub fn exports(&self) -> Vec<ExportSnapshot> {
        let ids: Vec<String> = self.lock().exports.keys().cloned().collect();
        let mut out: Vec<ExportSnapshot> =
            ids.iter().filter_map(|id| self.export(id).ok()).collect();
        out.sort_by_key(|s| s.created_ms);
        out
    }

    /// Asks a job to stop; a finished job is left as it is.
    pub fn cancel_export(&self, id: &str) -> Result<JobState, JobError> {
        let inner = self.lock();
        let e = inner.exports.get(id).ok_or_else(|| JobError::Unknown {
            kind: "export",
            id: id.to_string(),
        })?;
        if !e.snap.state.is_finished() {
            e.cancel.cancel();
        }
        Ok(e.snap.state)
    }

    /// Resolves when the export has finished.
    pub async fn wait_export(&self, id: &str) -> Result<ExportSnapshot, JobError> {
        let mut rx = {
            let inner = self.lock();
            inner
                .exports
                .get(id)
                .ok_or_else(|| JobError::Unknown {
                    kind: "export",
                    id: id.to_string(),
                })?
                .state_tx
                .subscribe()
        };
        let _ = rx.wait_for(|s| s.is_finished()).await;
        self.export(id)
    }

    pub fn start_import(
        self: &Arc<Self>,
        spec: ImportSpec,
        params: ImportParams,
    ) -> Result<String, JobError> {
        let mut inner = self.lock();
        self.check_imports(&inner)?;
        inner.seq += 1;
        let seq = inner.seq;
        let id = new_id();
        let cancel = CancelToken::default();
        inner.imports.insert(
            id.clone(),
            Entry {
                snap: ImportSnapshot {
                    id: id.clone(),
                    spec,
                    state: JobState::Running,
                    progress: None,
                    outcome: None,
                    error: None,
                    created_ms: now_ms(),
                    runs: 1,
                },
                seq,
                cancel: cancel.clone(),
                finished_at: None,
                state_tx: watch::channel(JobState::Running).0,
            },
        );
        drop(inner);
        tokio::spawn(Arc::clone(self).run_import(id.clone(), params, cancel));
        Ok(id)
    }

    /// Runs a failed import again from its saved offset.
    pub fn resume_import(
        self: &Arc<Self>,
        id: &str,
        mut params: ImportParams,
    ) -> Result<(), JobError> {
        let mut inner = self.lock();
        if inner.imports.contains_key(id) {
            self.check_imports(&inner)?;
        }
        let e = inner.imports.get_mut(id).ok_or_else(|| JobError::Unknown {
            kind: "import",
            id: id.to_string(),
        })?;
        if !matches!(e.snap.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::NotResumable {
                kind: "import",
                id: id.to_string(),
                state: e.snap.state,
            });
        }
        let cancel = CancelToken::default();
        e.cancel = cancel.clone();
        e.finished_at = None;
        e.snap.state = JobState::Running;
        e.snap.error = None;
        e.snap.runs += 1;
        e.state_tx.send_replace(JobState::Running);
        params.bundle = e.snap.spec.bundle.clone();
        params.resume = true;
        drop(inner);
        tokio::spawn(Arc::clone(self).run_import(id.to_string(), params, cancel));
        Ok(())
    }

    async fn run_import(self: Arc<Self>, id: String, params: ImportParams, cancel: CancelToken) {
        let result = drive(
            |tx| self.runner.import(params, tx),
            cancel.cancelled(),
            |p| self.update_import(&id, |s| s.progress = Some(p)),
        )
        .await;
        let mut inner = self.lock();
        let Some(e) = inner.imports.get_mut(&id) else {
            return;
        };
        let snap = &mut e.snap;
        settle(
            "import",
            &id,
            result,
            &mut snap.state,
            &mut snap.outcome,
            &mut snap.error,
        );
        let state = snap.state;
        e.finished(state);
    }

    fn update_import(&self, id: &str, f: impl FnOnce(&mut ImportSnapshot)) {
        let mut inner = self.lock();
        if let Some(e) = inner.imports.get_mut(id) {
            f(&mut e.snap);
        }
    }

    pub fn import(&self, id: &str) -> Result<ImportSnapshot, JobError> {
        self.lock()
            .imports
            .get(id)
            .map(|e| e.snap.clone())
            .ok_or_else(|| JobError::Unknown {
                kind: "import",
                id: id.to_string(),
            })
    }

    pub async fn wait_import(&self, id: &str) -> Result<ImportSnapshot, JobError> {
        let mut rx = {
            let inner = self.lock();
            inner
                .imports
                .get(id)
                .ok_or_else(|| JobError::Unknown {
                    kind: "import",
                    id: id.to_string(),
                })?
                .state_tx
                .subscribe()
        };
        let _ = rx.wait_for(|s| s.is_finished()).await;
        self.import(id)
    }

    /// Removes jobs finished more than the retention window ago, with what
    /// they created, and uploads no job took; returns how many jobs and
    /// orphaned uploads were removed. Blocking file work: call it from a
    /// blocking thread ([`spawn_sweeper`](Self::spawn_sweeper) does).
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let retention = self.limits.retention;
        let expired = |f: Option<Instant>| f.is_some_and(|t| now.duration_since(t) >= retention);
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        let mut removed = 0;
        let mut inner = self.lock();
        inner.exports.retain(|_, e| {
            let keep = !expired(e.finished_at);
            if !keep {
                removed += 1;
                if e.snap.spec.owned_dir {
                    dirs.push(e.snap.spec.out_dir.clone());
                }
            }
            keep
        });
        inner.imports.retain(|_, e| {
            let keep = !expired(e.finished_at);
            if !keep {
                removed += 1;
                if e.snap.spec.owned_file {
                    files.push(e.snap.spec.bundle.clone());
                    files.push(crate::bundle::import::default_state_path(
                        &e.snap.spec.bundle,
                    ));
                }
            }
            keep
        });
        let referenced: HashSet<PathBuf> = inner
            .imports
            .values()
            .map(|e| e.snap.spec.bundle.clone())
            .collect();
        drop(inner);
        for d in dirs {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing expired job directory {}: {e}", d.display());
                }
            }
        }
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        removed + self.sweep_orphaned_uploads(&referenced)
    }

    /// Uploads older than the retention window that no job imports (with
    /// their state files), and `.part` files no upload is writing.
    fn sweep_orphaned_uploads(&self, referenced: &HashSet<PathBuf>) -> usize {
        let Some(dir) = &self.uploads else {
            return 0;
        };
        // Temp files of uploads in progress are locked by their writer; those
        // of a process that died are removed here (and at start).
        if let Err(e) = crate::fsutil::remove_stale_temps(dir) {
            tracing::warn!("cleaning up {}: {e}", dir.display());
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let writing = self
            .uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            // A modification time ahead of the clock counts as "just now".
            let old = meta
                .modified()
                .ok()
                .map(|m| m.elapsed().unwrap_or(Duration::ZERO))
                .is_some_and(|age| age >= self.limits.retention);
            let temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| crate::fsutil::temp_owner(n).is_some());
            if !meta.is_file() || !old || temp || writing.contains(&path) {
                continue;
            }
            if referenced.contains(&upload_of(&path)) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!("removed {} (uploaded, never imported)", path.display());
                    removed += 1;
                }
                Err(e) => tracing::warn!("removing orphaned upload {}: {e}", path.display()),
            }
        }
        removed
    }

    /// Sweeps every quarter of the retention window (at most every minute),
    /// each time on a blocking thread.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let every =
            (self.limits.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = me.upgrade() else { return };
                let n = tokio::task::spawn_blocking(move || m.sweep())
                    .await
                    .unwrap_or(0);
                if n > 0 {
                    tracing::info!("removed {n} finished job(s) and unimported upload(s) past the retention window");
                }
            }
        })
    }
}

/// The upload a file in `uploads/` belongs to: itself, or the bundle of a
/// `<bundle>.import-state.json`.
fn upload_of(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    match text.strip_suffix(".import-state.json") {
        Some(bundle) => PathBuf::from(bundle),
        None => path.to_path_buf(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ConnectionSpec;

    /// Export jobs that run until cancelled or released.
    struct Fake {
        release: Arc<tokio::sync::Notify>,
    }

    impl Runner for Fake {
        fn export(
            &self,
            params: ExportParams,
            _progress: ProgressTx<ExportProgress>,
        ) -> (CancelToken, JobFuture<ExportOutcome>) {
            let cancel = CancelToken::default();
            let c = cancel.clone();
            let release = Arc::clone(&self.release);
            let fut = async move {
                std::fs::create_dir_all(&params.out_dir).unwrap();
                tokio::select! {
                    _ = c.cancelled() => Err(BundleError::Cancelled),
                    _ = release.notified() => Err(BundleError::Params("released".into())),
                }
            };
            (cancel, Box::pin(fut))
        }

        fn import(
            &self,
            _params: ImportParams,
            _progress: ProgressTx<ImportProgress>,
        ) -> (CancelToken, JobFuture<ImportOutcome>) {
            (
                CancelToken::default(),
                Box::pin(async { Err(BundleError::Params("target down".into())) }),
            )
        }
    }

    fn spec(dir: &std::path::Path, n: usize) -> ExportSpec {
        ExportSpec {
            source_url: "http://127.0.0.1:1".into(),
            selectors: vec!["up".into()],
            jobs: vec![],
            from_ms: 0,
            to_ms: 1,
            step_ms: None,
            batch_window_ms: None,
            obfuscation: Default::default(),
            out_dir: dir.join(format!("job{n}")),
            owned_dir: true,
        }
    }

    fn client() -> ClientConfig {
        ConnectionSpec {
            url: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        }
        .to_client_config("test")
        .unwrap()
    }

    fn limits(retention: Duration) -> JobLimits {
        JobLimits {
            retention,
            max_queued_exports: 2,
            max_running_imports: 1,
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_run_the_fourth_waits_then_retention_cleans() {
        let dir = tempfile::tempdir().unwrap();
        let release = Arc::new(tokio::sync::Notify::new());
        let m = JobManager::new(
            Arc::new(Fake {
                release: Arc::clone(&release),
            }),
            limits(Duration::from_secs(600)),
        );
        let ids: Vec<String> = (0..5)
            .map(|n| m.start_export(spec(dir.path(), n), client()).unwrap())
            .collect();
        // 128 random bits each.
        assert!(ids.iter().all(|id| id.len() == 32), "{ids:?}");
        settle().await;
        let states: Vec<_> = ids.iter().map(|id| m.export(id).unwrap()).collect();
        assert_eq!(
            states.iter().map(|s| s.state).collect::<Vec<_>>(),
            [
                JobState::Running,
                JobState::Running,
                JobState::Running,
                JobState::Queued,
                JobState::Queued
            ]
        );
        assert_eq!(states[3].queue_position, Some(1));
        assert_eq!(states[4].queue_position, Some(2));

        // A queued job cancelled never starts; a running one cancelled frees its slot.
        m.cancel_export(&ids[4]).unwrap();
        m.cancel_export(&ids[0]).unwrap();
        settle().await;
        assert_eq!(m.export(&ids[4]).unwrap().state, JobState::Cancelled);
        assert_eq!(m.export(&ids[0]).unwrap().state, JobState::Cancelled);
        assert_eq!(m.export(&ids[3]).unwrap().state, JobState::Running);
        assert!(!dir.path().join("job4").exists(), "a queued job never ran");

        // Retention: kept until the window passes, then removed with its files.
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(m.sweep(), 0);
        assert!(dir.path().join("job0").is_dir());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.sweep(), 2);
        assert!(matches!(m.export(&ids[0]), Err(JobError::Unknown { .. })));
        assert!(!dir.path().join("job0").exists());
        // Running jobs are never swept.
        assert_eq!(m.export(&ids[1]).unwrap().state, JobState::Running);

        // The sweeper does it by itself.
        let sweeper = m.spawn_sweeper();
        release.notify_waiters();
        settle().await;
        assert_eq!(m.export(&ids[1]).unwrap().state, JobState::Failed);
        assert_eq!(
            m.export(&ids[1]).unwrap().error.as_deref(),
            Some("released")
        );
        tokio::time::sleep(Duration::from_secs(600 + 200)).await;
        settle().await;
        assert!(m.exports().is_empty(), "{:?}", m.exports().len());
        sweeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn resume_only_finished_failures() {
        let dir = tempfile::tempdir().unwrap();
        let release = Arc::new(tokio::sync::Notify::new());
        let m = JobManager::new(
            Arc::new(Fake {
                release: Arc::clone(&release),
            }),
            limits(DEFAULT_RETENTION),
        );
        let id = m.start_export(spec(dir.path(), 0), client()).unwrap();
        settle().await;
        assert!(matches!(
            m.resume_export(&id, client()),
            Err(JobError::NotResumable { .. })
        ));
        m.cancel_export(&id).unwrap();
        let snap = m.wait_export(&id).await.unwrap();
        assert_eq!(snap.state, JobState::Cancelled);
        m.resume_export(&id, client()).unwrap();
        settle().await;
        let snap = m.export(&id).unwrap();
        assert_eq!((snap.state, snap.runs), (JobState::Running, 2));
        assert!(matches!(
            m.resume_export("nope", client()),
            Err(JobError::Unknown { .. })
        ));

        let imp = m
            .start_import(
                ImportSpec {
                    target_url: "http://127.0.0.1:1".into(),
                    bundle: dir.path().join("b.zip"),
                    shift_to_now: false,
                    dry_run: false,
                    owned_file: false,
                },
                ImportParams::new(client(), dir.path().join("b.zip")),
            )
            .unwrap();
        let snap = m.wait_import(&imp).await.unwrap();
        assert_eq!(snap.state, JobState::Failed);
        assert_eq!(snap.error.as_deref(), Some("target down"));
        m.resume_import(&imp, ImportParams::new(client(), "x".into()))
            .unwrap();
        let snap = m.wait_import(&imp).await.unwrap();
        assert_eq!((snap.state, snap.runs), (JobState::Failed, 2));
    }

    /// A job that keeps running until released: imports that never end.
    struct Endless {
        release: Arc<tokio::sync::Notify>,
    }

    impl Runner for Endless {
        fn export(
            &self,
            _params: ExportParams,
            _progress: ProgressTx<ExportProgress>,
        ) -> (CancelToken, JobFuture<ExportOutcome>) {
            let release = Arc::clone(&self.release);
            let fut = async move {
                release.notified().await;
                Err(BundleError::Params("released".into()))
            };
            (CancelToken::default(), Box::pin(fut))
        }

        fn import(
            &self,
            _params: ImportParams,
            _progress: ProgressTx<ImportProgress>,
        ) -> (CancelToken, JobFuture<ImportOutcome>) {
            let release = Arc::clone(&self.release);
            let fut = async move {
                release.notified().await;
                Err(BundleError::Params("released".into()))
            };
            (CancelToken::default(), Box::pin(fut))
        }
    }

    fn import_spec(bundle: PathBuf) -> ImportSpec {
        ImportSpec {
            target_url: "http://127.0.0.1:1".into(),
            bundle,
            shift_to_now: false,
            dry_run: false,
            owned_file: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn queue_and_imports_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let release = Arc::new(tokio::sync::Notify::new());
        let m = JobManager::new(
            Arc::new(Endless {
                release: Arc::clone(&release),
            }),
            limits(DEFAULT_RETENTION),
        );
        // Three run, two wait; the sixth is refused.
        for n in 0..5 {
            m.start_export(spec(dir.path(), n), client()).unwrap();
        }
        settle().await;
        let e = m.start_export(spec(dir.path(), 5), client()).unwrap_err();
        assert!(matches!(e, JobError::Busy { .. }), "{e}");
        assert!(
            e.to_string().contains("2 exports are already waiting"),
            "{e}"
        );
        // One import runs; a second is refused until it ends.
        let b = dir.path().join("b.zip");
        let first = m
            .start_import(
                import_spec(b.clone()),
                ImportParams::new(client(), b.clone()),
            )
            .unwrap();
        let e = m
            .start_import(
                import_spec(b.clone()),
                ImportParams::new(client(), b.clone()),
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("1 imports are already running"),
            "{e}"
        );
        settle().await;
        release.notify_waiters();
        m.wait_import(&first).await.unwrap();
        m.start_import(import_spec(b.clone()), ImportParams::new(client(), b))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_removes_only_what_jobs_created() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = dir.path().join("uploads");
        std::fs::create_dir(&uploads).unwrap();
        let release = Arc::new(tokio::sync::Notify::new());
        let m = JobManager::with_uploads(
            Arc::new(Fake {
                release: Arc::clone(&release),
            }),
            limits(Duration::ZERO),
            uploads.clone(),
        );
        // A directory the job was given (not created by it) survives its sweep.
        let mut given = spec(dir.path(), 0);
        given.owned_dir = false;
        std::fs::create_dir_all(&given.out_dir).unwrap();
        std::fs::write(given.out_dir.join("keep.txt"), b"x").unwrap();
        let id = m.start_export(given.clone(), client()).unwrap();
        settle().await;
        m.cancel_export(&id).unwrap();
        m.wait_export(&id).await.unwrap();
        // Uploads: one imported (kept while its job lives), one orphaned, one being written.
        let imported = uploads.join("a.zip");
        let orphan = uploads.join("b.zip");
        let orphan_state = uploads.join("b.zip.import-state.json");
        let part = uploads.join(".c.zip.part");
        for f in [&imported, &orphan, &orphan_state, &part] {
            std::fs::write(f, b"zip").unwrap();
        }
        let _writing = m.uploading(part.clone());
        let imp = m
            .start_import(
                import_spec(imported.clone()),
                ImportParams::new(client(), imported.clone()),
            )
            .unwrap();
        // Not finished yet: a running import's bundle is never swept.
        let n = m.sweep();
        assert!(imported.exists() && part.exists());
        assert!(!orphan.exists() && !orphan_state.exists());
        assert!(
            given.out_dir.join("keep.txt").exists(),
            "a given directory was swept"
        );
        assert!(n >= 3, "{n}");
        let _ = imp;
    }
}
