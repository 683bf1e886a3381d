//! The import job: a checked bundle uploaded to `/api/v1/import` in
//! line-aligned chunks, resumable, then verified with `/api/v1/series`.
//!
//! 1. **Check** (`verify.rs`): the archive's `.sha256`, ZIP safety, every line
//!    of `metrics.jsonl` and its SHA-256 against `metadata.json`. Nothing is
//!    sent from a bundle that fails any of it.
//! 2. **Plan**: the target's retention (`retentionTime` of
//!    `/api/v1/status/tsdb` if the server reports it, else the
//!    `-retentionPeriod` flag from `/metrics` or `/flags` at the server's
//!    root; a bare number counts months of 31 days, as VictoriaMetrics does)
//!    gives a cutoff `now - retention + 10 min` (the margin keeps points
//!    that would age out while the upload runs from being refused); points
//!    older are skipped and counted. `--shift-to-now` moves every timestamp
//!    by `now - last timestamp` (whole seconds).
//! 3. **Upload**: a blocking reader inflates `metrics.jsonl` again and cuts
//!    it into chunks of whole lines of about `chunk_bytes`; a line goes
//!    through unchanged unless points must be dropped or shifted, or its
//!    values use spellings VictoriaMetrics 1.79 refuses (`null`, quoted),
//!    then it is re-encoded. Chunks are sent one at a time, in order, with
//!    the client's retries; the *committed offset* (bytes of `metrics.jsonl`
//!    whose lines the target acknowledged) only moves after a 2xx.
//! 4. **State file** (default `<bundle>.import-state.json`, beside the
//!    bundle; `ImportParams::state_path` moves it): format, bundle name and
//!    `metrics.jsonl` digest, the target URL (never credentials), the chunk
//!    size, the committed offset and counters, and the shift and cutoff in
//!    use, so a resumed run sends the same bytes. It is written (temp +
//!    rename + fsync) at most once a second while uploading, on every
//!    failure and when the job is cancelled or dropped, and removed when the
//!    import completes. `--resume` skips to the saved offset; since a chunk
//!    is committed only after the target acknowledged it, nothing is sent
//!    twice and nothing is skipped, as long as the target keeps what it
//!    acknowledged.
//! 5. **Verify**: `/api/v1/series` over the imported range (for the bundle's
//!    metric names, or all names when there are many) is polled until it
//!    shows at least the bundle's series (minus those wholly older than the
//!    cutoff) or `verify_timeout` passes; the counts are reported. A target
//!    URL of the form `/insert/<tenant>/...` is read at `/select/<tenant>/...`.

use super::line;
use super::verify::{open_bundle, scan, OpenedBundle, SafetyLimits, VerifyReport};
use super::{emit, emit_last, eta, io_err, BundleError, CancelToken, JobHandle, ProgressTx};
use crate::client::{Client, ClientConfig, ClientError};
use crate::codec::vm_native::Layout;
use crate::codec::vm_native_write::{native_header, NativeWriter, NotNative};
use crate::codec::{parse_vm_json_line, write_vm_json_line};
use crate::fsutil::AtomicFile;
use crate::model::time::{format_rfc3339_ms, now_ms, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_CHUNK_BYTES: usize = 512 * 1024;

#[derive(Clone, Debug)]
pub struct ImportParams {
    /// Credentials live here, in memory only.
    pub client: ClientConfig,
    /// A `.zip` bundle or a `.jsonl` file.
    pub bundle: PathBuf,
    pub chunk_bytes: usize,
    /// Requests in flight at once (default [`IN_FLIGHT`]).
    pub concurrency: usize,
    pub resume: bool,
    pub shift_to_now: bool,
    /// Check and plan, send nothing.
    pub dry_run: bool,
    pub limits: SafetyLimits,
    /// Default: `<bundle>.import-state.json`.
    pub state_path: Option<PathBuf>,
    /// How long to wait for the imported series to become visible.
    pub verify_timeout: Duration,
    /// What the chunks travel as.
    pub wire: WireFormat,
}

/// What chunks are sent as (`--wire-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WireFormat {
    /// Native blocks where the target reads them, else JSON lines.
    #[default]
    Auto,
    /// Native blocks (`/api/v1/import/native`); fails if the target does
    /// not read them.
    Native,
    /// JSON lines (`/api/v1/import`).
    Json,
}

impl WireFormat {
    /// `--wire-format`'s value.
    pub fn parse(s: &str) -> Result<WireFormat, String> {
        match s {
            "auto" => Ok(WireFormat::Auto),
            "native" => Ok(WireFormat::Native),
            "json" => Ok(WireFormat::Json),
            other => Err(format!(
                "{other:?} is not a wire format; want `auto` (native blocks where the target \
                 reads them), `native` or `json`"
            )),
        }
    }
}

impl ImportParams {
    pub fn new(client: ClientConfig, bundle: PathBuf) -> ImportParams {
        ImportParams {
            client,
            bundle,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            concurrency: IN_FLIGHT,
            resume: false,
            shift_to_now: false,
            dry_run: false,
            limits: SafetyLimits::default(),
            state_path: None,
            verify_timeout: Duration::from_secs(30),
            wire: WireFormat::Auto,
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.state_path
            .clone()
            .unwrap_or_else(|| default_state_path(&self.bundle))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStage {
    Checking,
    Uploading,
    Verifying,
    Done,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportProgress {
    pub stage: ImportStage,
    /// Bytes of `metrics.jsonl` checked (Checking) or committed (Uploading).
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub lines: u64,
    pub samples: u64,
    pub skipped_samples: u64,
    pub chunks: u64,
    pub elapsed: Duration,
    pub eta: Option<Duration>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportOutcome {
    pub bundle: PathBuf,
    pub dry_run: bool,
    pub check: VerifyReport,
    /// Where the upload started (non-zero when resumed).
    pub resumed_from: u64,
    pub lines_sent: u64,
    pub samples_sent: u64,
    pub chunks: u64,
    /// Points older than the target's retention, not sent.
    pub skipped_samples: u64,
    /// Lines all of whose points were too old.
    pub skipped_lines: u64,
    pub retention_cutoff_ms: Option<i64>,
    pub retention_source: Option<String>,
    pub shift_ms: i64,
    /// What the chunks were sent as: `native blocks (...)` or `JSON lines`.
    pub wire: String,
    /// Chunks sent as JSON lines although the target reads native blocks.
    pub json_chunks: u64,
    /// Why the first of them could not go native.
    pub json_reason: Option<String>,
    /// Series of the bundle expected on the target (all but wholly skipped ones).
    pub series_expected: u64,
    pub series_found: Option<u64>,
    pub verified: Option<bool>,
    pub verify_note: Option<String>,
    /// Time spent checking the bundle, uploading, and waiting for the
    /// series to show up on the target.
    pub check_elapsed: Duration,
    pub upload_elapsed: Duration,
    pub verify_elapsed: Duration,
    pub elapsed: Duration,
}

/// Starts import jobs.
pub struct ImportJob;

impl ImportJob {
    pub fn start(
        params: ImportParams,
        progress: ProgressTx<ImportProgress>,
    ) -> JobHandle<ImportOutcome> {
        let cancel = CancelToken::default();
        let token = cancel.clone();
        let task = tokio::spawn(async move { run(params, progress, token).await });
        JobHandle { cancel, task }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct ImportState {
    format: u32,
    bundle: String,
    metrics_sha256: String,
    metrics_bytes: u64,
    /// The target without credentials.
    target: String,
    chunk_bytes: usize,
    committed_offset: u64,
    lines: u64,
    samples: u64,
    skipped_samples: u64,
    skipped_lines: u64,
    chunks: u64,
    #[serde(default)]
    json_chunks: u64,
    #[serde(default)]
    json_reason: Option<String>,
    shift_ms: i64,
    retention_cutoff_ms: Option<i64>,
    /// Acknowledged byte ranges past `committed_offset` (requests run in
    /// parallel and may finish out of order); a resumed run skips them.
    #[serde(default)]
    acked: Vec<[u64; 2]>,
    updated: String,
}

impl ImportState {
    /// Records an acknowledged chunk and moves the committed offset over
    /// every range that now joins it.
    fn acknowledge(&mut self, c: &Chunk) {
        self.lines += c.lines;
        self.samples += c.samples;
        self.skipped_samples += c.skipped_samples;
        self.skipped_lines += c.skipped_lines;
        self.chunks += 1;
        if let Some(why) = &c.json_fallback {
            self.json_chunks += 1;
            self.json_reason.get_or_insert_with(|| why.to_string());
        }
        self.acked.push([c.start_offset, c.end_offset]);
        self.acked.sort_unstable();
        let mut rest = Vec::new();
        for r in self.acked.drain(..) {
            if r[0] <= self.committed_offset {
                self.committed_offset = self.committed_offset.max(r[1]);
            } else {
                rest.push(r);
            }
        }
        self.acked = rest;
    }
}

/// Saves the state when the job ends without finishing, however it ends
/// (error, cancel, or its future being dropped at Ctrl-C).
struct StateGuard {
    path: PathBuf,
    state: ImportState,
    saved: ImportState,
    armed: bool,
}

impl StateGuard {
    fn save(&mut self) -> Result<(), BundleError> {
        self.state.updated = format_rfc3339_ms(now_ms());
        write_state(&self.path, &self.state)?;
        self.saved = self.state.clone();
        Ok(())
    }
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        if self.armed && self.state.committed_offset != self.saved.committed_offset {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "cannot save the import offset");
            }
        }
    }
}

fn write_state(path: &Path, state: &ImportState) -> Result<(), BundleError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| {
            BundleError::Params(format!("state file {}: not a file name", path.display()))
        })?
        .to_string_lossy()
        .into_owned();
    let mut f = AtomicFile::create(&dir, &name).map_err(|e| {
        BundleError::Params(format!(
            "cannot write the import state beside the bundle ({}): {e}; the bundle's directory must be writable",
            path.display()
        ))
    })?;
    serde_json::to_writer_pretty(&mut f, state)
        .map_err(|e| io_err(path)(std::io::Error::other(e)))?;
    f.commit().map_err(io_err(path))?;
    Ok(())
}

fn read_state(path: &Path) -> Result<Option<ImportState>, BundleError> {
    use crate::model::input::{read_bytes, MAX_CONFIG_FILE_BYTES};
    match read_bytes(path, MAX_CONFIG_FILE_BYTES, "an import state file") {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            BundleError::Params(format!(
                "{}: unreadable import state ({e}); delete it to start over",
                path.display()
            ))
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(BundleError::Params(e.to_string())),
    }
}

/// Requests in flight at once: the target parses them in parallel, and a
/// single stream of small requests would leave it idle between them.
pub const IN_FLIGHT: usize = 4;

/// One request's worth of whole lines: bytes `[start, end)` of `metrics.jsonl`.
struct Chunk {
    /// JSON lines: what is sent unless `native` is there (then emptied
    /// once the chunk is cut).
    body: Vec<u8>,
    /// The same lines as native blocks, when the target reads them and
    /// every series of the chunk could be written.
    native: Option<Vec<u8>>,
    /// Native blocks were wanted, and why a series could not be written.
    json_fallback: Option<NotNative>,
    start_offset: u64,
    end_offset: u64,
    lines: u64,
    samples: u64,
    skipped_samples: u64,
    skipped_lines: u64,
}

impl Chunk {
    /// Ready to send: the JSON lines are dropped when the native blocks
    /// will go, so a chunk waiting in the queue holds one body, not two.
    fn sealed(mut self) -> Chunk {
        if self.native.is_some() {
            self.body = Vec::new();
        }
        self
    }
}

/// The largest `--chunk-size`: a request body is held in memory, `--concurrency` at a time.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// The most request bodies held at once (`--chunk-size` × `--concurrency`).
pub const MAX_IN_FLIGHT_BYTES: usize = 512 << 20;

async fn run(
    params: ImportParams,
    progress: ProgressTx<ImportProgress>,
    cancel: CancelToken,
) -> Result<ImportOutcome, BundleError> {
    let started = Instant::now();
    if !(1024..=MAX_CHUNK_BYTES).contains(&params.chunk_bytes) {
        return Err(BundleError::Params(format!(
            "--chunk-size {} is outside 1KiB .. 64MiB (default 512KiB)",
            crate::model::size::format_size(params.chunk_bytes as u64)
        )));
    }
    if !(1..=64).contains(&params.concurrency)
        || params.chunk_bytes.saturating_mul(params.concurrency) > MAX_IN_FLIGHT_BYTES
    {
        return Err(BundleError::Params(format!(
            "--concurrency {} × --chunk-size {}: at most 64 requests and {} in flight",
            params.concurrency,
            crate::model::size::format_size(params.chunk_bytes as u64),
            crate::model::size::format_size(MAX_IN_FLIGHT_BYTES as u64)
        )));
    }
    let client = Client::new(params.client.clone())?;
    let target = client.endpoint().display();
    let state_path = params.state_path();

    // 1. Check.
    emit(
        &progress,
        stage_event(ImportStage::Checking, 0, 0, started, None),
    );
    let (opened, check) = check_bundle(&params, &progress, &cancel).await?;
    let check_elapsed = started.elapsed();

    // 2. Plan.
    let (state, retention_source) = plan(&params, &client, &check, &state_path, &target).await?;
    let shift_ms = state.shift_ms;
    let cutoff = state.retention_cutoff_ms;
    let series_expected = check
        .series_last_ts
        .values()
        .filter(|&&last| cutoff.is_none_or(|c| last + shift_ms >= c))
        .count() as u64;
    let resumed_from = state.committed_offset;

    // 3. Upload.
    let layout = if params.dry_run {
        None
    } else {
        wire_layout(&client, params.wire, &target).await?
    };
    let upload_started = Instant::now();
    let done = Upload {
        params: &params,
        layout,
        client: &client,
        target: &target,
        state_path: &state_path,
        check: &check,
        progress: &progress,
        cancel: &cancel,
        started,
    }
    .run(&opened, state)
    .await?;
    let upload_elapsed = upload_started.elapsed();

    // 4. Verify.
    let verify_started = Instant::now();
    let (series_found, verified, verify_note) = if params.dry_run {
        (None, None, Some("dry run: nothing was sent".to_string()))
    } else {
        emit(
            &progress,
            stage_event(
                ImportStage::Verifying,
                check.bytes,
                check.bytes,
                started,
                None,
            ),
        );
        let (min_ts, max_ts) = (check.min_ts.unwrap_or(0), check.max_ts.unwrap_or(0));
        let lo = match cutoff {
            Some(c) => (min_ts + shift_ms).max(c),
            None => min_ts + shift_ms,
        };
        verify_on_target(
            &client,
            &check,
            lo,
            max_ts + shift_ms,
            series_expected,
            params.verify_timeout,
            &cancel,
        )
        .await
    };
    let outcome = ImportOutcome {
        bundle: params.bundle.clone(),
        dry_run: params.dry_run,
        resumed_from,
        lines_sent: done.lines,
        samples_sent: done.samples,
        chunks: done.chunks,
        skipped_samples: done.skipped_samples,
        skipped_lines: done.skipped_lines,
        retention_cutoff_ms: cutoff,
        retention_source,
        shift_ms,
        wire: describe_wire(layout),
        json_chunks: done.json_chunks,
        json_reason: done.json_reason.clone(),
        series_expected,
        series_found,
        verified,
        verify_note,
        check_elapsed,
        upload_elapsed,
        verify_elapsed: verify_started.elapsed(),
        elapsed: started.elapsed(),
        check,
    };
    let mut last = stage_event(
        ImportStage::Done,
        outcome.check.bytes,
        outcome.check.bytes,
        started,
        None,
    );
    last.lines = done.lines;
    last.samples = done.samples;
    last.skipped_samples = done.skipped_samples;
    last.chunks = done.chunks;
    emit_last(&progress, last).await;
    Ok(outcome)
}

/// A progress event with no counters yet.
fn stage_event(
    stage: ImportStage,
    done: u64,
    total: u64,
    started: Instant,
    message: Option<String>,
) -> ImportProgress {
    ImportProgress {
        stage,
        bytes_done: done,
        bytes_total: total,
        lines: 0,
        samples: 0,
        skipped_samples: 0,
        chunks: 0,
        elapsed: started.elapsed(),
        eta: None,
        message,
    }
}

/// Step 1: opens the bundle and checks every line (blocking work, off the
/// async threads); nothing is sent from a bundle that fails it.
async fn check_bundle(
    params: &ImportParams,
    progress: &ProgressTx<ImportProgress>,
    cancel: &CancelToken,
) -> Result<(OpenedBundle, VerifyReport), BundleError> {
    let (bundle_path, limits) = (params.bundle.clone(), params.limits);
    let opened: OpenedBundle =
        tokio::task::spawn_blocking(move || open_bundle(&bundle_path, limits))
            .await
            .map_err(|e| BundleError::Params(format!("check panicked: {e}")))??;
    let total = opened.metrics_bytes;
    let (opened2, cancel2, progress2) = (opened.clone(), cancel.clone(), progress.clone());
    let check: VerifyReport = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        scan(&opened2, &cancel2, |done| {
            let mut e = stage_event(ImportStage::Checking, done, total, t0, None);
            e.eta = eta(t0.elapsed(), done as f64, total as f64);
            emit(&progress2, e);
        })
    })
    .await
    .map_err(|e| BundleError::Params(format!("check panicked: {e}")))??;
    let (min, max) = (
        check.min_ts.unwrap_or(MIN_TIMESTAMP_MS),
        check.max_ts.unwrap_or(MIN_TIMESTAMP_MS),
    );
    if min < MIN_TIMESTAMP_MS || max > MAX_TIMESTAMP_MS {
        return Err(BundleError::Rejected {
            path: params.bundle.clone(),
            reason: format!(
                "metrics.jsonl has timestamps from {min} to {max} ms, outside {} .. {} (what VictoriaMetrics stores)",
                format_rfc3339_ms(MIN_TIMESTAMP_MS),
                format_rfc3339_ms(MAX_TIMESTAMP_MS)
            ),
        });
    }
    Ok((opened, check))
}

/// Step 2: the state to upload from: the interrupted import's (`--resume`,
/// checked against this bundle and target) or a new one with the target's
/// retention and the `--shift-to-now` shift.
async fn plan(
    params: &ImportParams,
    client: &Client,
    check: &VerifyReport,
    state_path: &Path,
    target: &str,
) -> Result<(ImportState, Option<String>), BundleError> {
    crate::fsutil::remove_stale_temps_beside(state_path).map_err(io_err(state_path))?;
    let existing = read_state(state_path)?;
    let (mut state, mut retention_source) = match (params.resume, existing) {
        (true, None) => {
            return Err(BundleError::Params(format!(
            "--resume: no saved import state at {}; run without --resume to import from the start",
            state_path.display()
        )))
        }
        (true, Some(s)) => {
            if s.metrics_sha256 != check.metrics_sha256 {
                return Err(BundleError::Params(format!(
                    "--resume: {} belongs to another bundle (its metrics.jsonl digest differs); delete it to start over",
                    state_path.display()
                )));
            }
            if s.target != target {
                return Err(BundleError::Params(format!(
                    "--resume: the interrupted import went to {}, not {target}; use the same --url",
                    s.target
                )));
            }
            (s, None)
        }
        (false, existing) => {
            if let Some(s) = existing.filter(|s| s.committed_offset > 0) {
                tracing::warn!(
                    state = %state_path.display(),
                    committed = s.committed_offset,
                    "an earlier import of this bundle stopped part-way; starting from the beginning (pass --resume to continue it instead)"
                );
            }
            let (cutoff, source) = retention_cutoff(client).await;
            let shift_ms = match check.max_ts {
                Some(max_ts) if params.shift_to_now => (now_ms() - max_ts).div_euclid(1000) * 1000,
                _ => 0,
            };
            let state = ImportState {
                format: 1,
                bundle: params
                    .bundle
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                metrics_sha256: check.metrics_sha256.clone(),
                metrics_bytes: check.bytes,
                target: target.to_string(),
                chunk_bytes: params.chunk_bytes,
                shift_ms,
                retention_cutoff_ms: cutoff,
                ..Default::default()
            };
            (state, source)
        }
    };
    if params.resume {
        if state.retention_cutoff_ms.is_some() {
            retention_source = Some("the interrupted import's state".to_string());
        }
        state.chunk_bytes = params.chunk_bytes;
    }
    Ok((state, retention_source))
}

/// Step 3: chunks read on a blocking thread, `concurrency` requests at a
/// time, the committed offset saved as acknowledgements arrive.
struct Upload<'a> {
    params: &'a ImportParams,
    /// Native blocks in this layout, or JSON lines.
    layout: Option<Layout>,
    client: &'a Client,
    target: &'a str,
    state_path: &'a Path,
    check: &'a VerifyReport,
    progress: &'a ProgressTx<ImportProgress>,
    cancel: &'a CancelToken,
    started: Instant,
}

impl Upload<'_> {
    /// Uploads from `state`; returns the final state (counters of what was sent).
    async fn run(
        &self,
        opened: &OpenedBundle,
        state: ImportState,
    ) -> Result<ImportState, BundleError> {
        let check = self.check;
        let resumed_from = state.committed_offset;
        emit(
            self.progress,
            stage_event(
                ImportStage::Uploading,
                resumed_from,
                check.bytes,
                self.started,
                (resumed_from > 0)
                    .then(|| format!("resuming at byte {resumed_from} of {}", check.bytes)),
            ),
        );
        let mut guard = StateGuard {
            path: self.state_path.to_path_buf(),
            saved: state.clone(),
            state,
            armed: !self.params.dry_run,
        };
        // Lines pass unread unless points must be dropped, shifted or re-encoded
        // (a cutoff before the bundle's first point drops nothing).
        let raw = guard
            .state
            .retention_cutoff_ms
            .is_none_or(|c| check.min_ts.is_some_and(|min| min >= c))
            && guard.state.shift_ms == 0
            && check.special_lines == 0
            && guard.state.acked.is_empty()
            && self.layout.is_none();
        let in_flight = self.params.concurrency;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Chunk, BundleError>>(in_flight);
        let producer = self.spawn_producer(opened, &guard.state, raw, tx);
        let upload_started = Instant::now();
        let mut last_save = Instant::now();
        let mut inflight = futures_util::stream::FuturesUnordered::new();
        let mut producing = true;
        let mut failure: Option<String> = None;
        loop {
            // Keep `in_flight` requests going; stop feeding after a failure.
            while producing && failure.is_none() && inflight.len() < in_flight {
                let next = tokio::select! {
                    c = rx.recv() => c,
                    _ = self.cancel.cancelled() => {
                        guard.save()?;
                        return Err(BundleError::Cancelled);
                    }
                };
                match next {
                    None => producing = false,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(chunk)) => inflight.push(self.send(chunk)),
                }
            }
            if inflight.is_empty() {
                break;
            }
            let (chunk, sent) = tokio::select! {
                Some(done) = futures_util::StreamExt::next(&mut inflight) => done,
                _ = self.cancel.cancelled() => {
                    guard.save()?;
                    return Err(BundleError::Cancelled);
                }
            };
            if let Err(e) = sent {
                // Wait for the other requests: what they land must be recorded.
                failure.get_or_insert_with(|| format!("upload to {} failed: {e}", self.target));
                continue;
            }
            guard.state.acknowledge(&chunk);
            if !self.params.dry_run && last_save.elapsed() >= Duration::from_secs(1) {
                guard.save()?;
                last_save = Instant::now();
            }
            emit(
                self.progress,
                self.uploading(&guard.state, raw, resumed_from, upload_started),
            );
        }
        if let Some(reason) = failure {
            guard.save()?;
            return Err(BundleError::Interrupted {
                reason,
                committed: guard.state.committed_offset,
                total: check.bytes,
                state: self.state_path.to_path_buf(),
            });
        }
        producer
            .await
            .map_err(|e| BundleError::Params(format!("reader panicked: {e}")))?;
        if raw {
            // Lines are passed on unread in raw mode: the check counted them.
            guard.state.lines = check.lines;
            guard.state.samples = check.samples;
        }
        guard.armed = false;
        if !self.params.dry_run {
            std::fs::remove_file(self.state_path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(io_err(self.state_path)(e))
                }
            })?;
        }
        Ok(guard.state.clone())
    }

    /// The blocking reader that cuts `metrics.jsonl` into chunks.
    fn spawn_producer(
        &self,
        opened: &OpenedBundle,
        state: &ImportState,
        raw: bool,
        tx: tokio::sync::mpsc::Sender<Result<Chunk, BundleError>>,
    ) -> tokio::task::JoinHandle<()> {
        let opened = opened.clone();
        let cancel = self.cancel.clone();
        let acked = state.acked.clone();
        let (chunk_bytes, skip) = (self.params.chunk_bytes, state.committed_offset);
        let (shift_ms, cutoff) = (state.shift_ms, state.retention_cutoff_ms);
        let layout = self.layout;
        tokio::task::spawn_blocking(move || {
            let r = if raw {
                produce_raw(&opened, skip, chunk_bytes, &tx, &cancel)
            } else {
                produce(
                    &opened,
                    skip,
                    &acked,
                    chunk_bytes,
                    shift_ms,
                    cutoff,
                    layout,
                    &tx,
                    &cancel,
                )
            };
            if let Err(e) = r {
                let _ = tx.blocking_send(Err(e));
            }
        })
    }

    /// One request (nothing is sent in a dry run).
    fn send(
        &self,
        chunk: Chunk,
    ) -> impl std::future::Future<Output = (Chunk, Result<(), ClientError>)> + 'static {
        let importer = self.client.clone();
        let dry = self.params.dry_run;
        async move {
            let mut chunk = chunk;
            // A native chunk's JSON lines are gone; its line count says
            // whether it carries a series (raw bodies may end without '\n').
            let empty = match chunk.native {
                Some(_) => chunk.lines == 0,
                None => chunk.body.is_empty(),
            };
            let sent = if dry || empty {
                Ok(())
            } else if let Some(native) = chunk.native.take() {
                importer.import_native(Bytes::from(native)).await
            } else {
                // The body moves into the request; only the offsets are needed after.
                importer
                    .import(Bytes::from(std::mem::take(&mut chunk.body)))
                    .await
            };
            (chunk, sent)
        }
    }

    fn uploading(
        &self,
        s: &ImportState,
        raw: bool,
        resumed_from: u64,
        upload_started: Instant,
    ) -> ImportProgress {
        let check = self.check;
        let mut e = stage_event(
            ImportStage::Uploading,
            s.committed_offset,
            check.bytes,
            self.started,
            None,
        );
        e.lines = s.lines;
        e.samples = if raw {
            (check.samples as f64 * s.committed_offset as f64 / check.bytes.max(1) as f64) as u64
        } else {
            s.samples
        };
        e.skipped_samples = s.skipped_samples;
        e.chunks = s.chunks;
        e.eta = eta(
            upload_started.elapsed(),
            (s.committed_offset - resumed_from) as f64,
            (check.bytes - resumed_from) as f64,
        );
        e
    }
}

/// The blocking half when nothing changes: whole lines passed on unread.
fn produce_raw(
    bundle: &OpenedBundle,
    skip: u64,
    chunk_bytes: usize,
    tx: &tokio::sync::mpsc::Sender<Result<Chunk, BundleError>>,
    cancel: &CancelToken,
) -> Result<(), BundleError> {
    let mut reader = bundle.upload_reader();
    reader.skip_to(skip)?;
    loop {
        let start = reader.offset;
        let mut body = Vec::with_capacity(chunk_bytes + 64 * 1024);
        if !reader.read_lines(chunk_bytes, &mut body)? {
            return Ok(());
        }
        let chunk = Chunk {
            lines: memchr::memchr_iter(b'\n', &body).count() as u64,
            body,
            native: None,
            json_fallback: None,
            start_offset: start,
            end_offset: reader.offset,
            samples: 0,
            skipped_samples: 0,
            skipped_lines: 0,
        };
        if tx.blocking_send(Ok(chunk)).is_err() || cancel.is_cancelled() {
            return Ok(());
        }
    }
}

/// The blocking half: reads lines from `skip` (leaving out acknowledged
/// ranges), drops or shifts points where needed, cuts chunks, and with a
/// `layout` writes each chunk's lines as native blocks too.
#[allow(clippy::too_many_arguments)]
fn produce(
    bundle: &OpenedBundle,
    skip: u64,
    acked: &[[u64; 2]],
    chunk_bytes: usize,
    shift_ms: i64,
    cutoff: Option<i64>,
    layout: Option<Layout>,
    tx: &tokio::sync::mpsc::Sender<Result<Chunk, BundleError>>,
    cancel: &CancelToken,
) -> Result<(), BundleError> {
    // In the bundle's own time: points before this are older than the retention.
    let min_keep = cutoff.map(|c| c - shift_ms);
    let mut writer = layout.map(NativeWriter::new);
    let new_chunk = |start: u64| Chunk {
        body: Vec::with_capacity(chunk_bytes + 64 * 1024),
        native: layout.map(|_| {
            let mut native = Vec::with_capacity(chunk_bytes);
            native_header(&mut native);
            native
        }),
        json_fallback: None,
        start_offset: start,
        end_offset: start,
        lines: 0,
        samples: 0,
        skipped_samples: 0,
        skipped_lines: 0,
    };
    let mut reader = bundle.upload_reader();
    reader.skip_to(skip)?;
    let mut chunk = new_chunk(skip);
    let mut scratch = Vec::new();
    let path = reader.path().to_path_buf();
    let mut line_start = reader.offset;
    while let Some((n, line_end, l)) = reader.next_line()? {
        let already = acked.iter().any(|r| r[0] <= line_start && line_end <= r[1]);
        let this_start = std::mem::replace(&mut line_start, line_end);
        if already {
            // Sent by the interrupted run: close the chunk around the gap.
            if chunk.end_offset > chunk.start_offset {
                let full = std::mem::replace(&mut chunk, new_chunk(line_end));
                if tx.blocking_send(Ok(full.sealed())).is_err() || cancel.is_cancelled() {
                    return Ok(());
                }
            } else {
                chunk = new_chunk(line_end);
            }
            continue;
        }
        let scanned = line::scan_line(l).map_err(|e| BundleError::Rejected {
            path: path.clone(),
            reason: format!("metrics.jsonl line {n}: {e}"),
        })?;
        let keep_all = min_keep.is_none_or(|k| scanned.min_ts >= k);
        let drop_all = min_keep.is_some_and(|k| scanned.max_ts < k);
        scratch.clear();
        let parse = || {
            parse_vm_json_line(l).map_err(|e| BundleError::Rejected {
                path: path.clone(),
                reason: format!("metrics.jsonl line {n}: {e}"),
            })
        };
        let mut series = None;
        let (samples, skipped) = if drop_all {
            (0, scanned.samples as u64)
        } else if keep_all && shift_ms == 0 && scanned.plain_values {
            scratch.extend_from_slice(l);
            scratch.push(b'\n');
            (scanned.samples as u64, 0)
        } else {
            let parsed = series.insert(parse()?);
            let before = parsed.samples.len();
            if let Some(k) = min_keep {
                parsed.samples.retain(|s| s.timestamp_ms >= k);
            }
            for s in &mut parsed.samples {
                s.timestamp_ms += shift_ms;
            }
            write_vm_json_line(parsed, &mut scratch);
            (
                parsed.samples.len() as u64,
                (before - parsed.samples.len()) as u64,
            )
        };
        if !chunk.body.is_empty() && chunk.body.len() + scratch.len() > chunk_bytes {
            let full = std::mem::replace(&mut chunk, new_chunk(this_start));
            if tx.blocking_send(Ok(full.sealed())).is_err() || cancel.is_cancelled() {
                return Ok(());
            }
        }
        chunk.body.extend_from_slice(&scratch);
        if let (Some(writer), Some(native), true) =
            (writer.as_mut(), chunk.native.as_mut(), samples > 0)
        {
            let series = match series {
                Some(s) => s,
                None => parse()?,
            };
            if let Err(why) = writer.series(&series.labels, &series.samples, native) {
                chunk.native = None;
                chunk.json_fallback = Some(why);
            }
        }
        chunk.end_offset = line_end;
        chunk.samples += samples;
        chunk.skipped_samples += skipped;
        if samples > 0 {
            chunk.lines += 1;
        } else {
            chunk.skipped_lines += 1;
        }
    }
    // Blank lines at the end still move the offset.
    chunk.end_offset = reader.offset;
    if chunk.end_offset > chunk.start_offset {
        let _ = tx.blocking_send(Ok(chunk.sealed()));
    }
    reader.finish()?;
    Ok(())
}

/// The native layout to send in, or `None` for JSON lines. `auto` asks the
/// target (`Client::native_import_layout`) and sends JSON lines when it
/// cannot tell; `native` insists.
async fn wire_layout(
    client: &Client,
    wire: WireFormat,
    target: &str,
) -> Result<Option<Layout>, BundleError> {
    if wire == WireFormat::Json {
        return Ok(None);
    }
    let asked = client.native_import_layout().await;
    match (wire, asked) {
        (_, Ok(Some(layout))) => Ok(Some(layout)),
        (WireFormat::Native, Ok(None)) => Err(BundleError::Params(format!(
            "--wire-format native: {target} refused native blocks at /api/v1/import/native \
             in both layouts (VictoriaMetrics before and since 1.82); \
             use --wire-format json or auto"
        ))),
        (WireFormat::Native, Err(e)) => Err(BundleError::Params(format!(
            "--wire-format native: could not ask {target} which native layout it reads: {e}"
        ))),
        _ => Ok(None),
    }
}

fn describe_wire(layout: Option<Layout>) -> String {
    match layout {
        None => "JSON lines (/api/v1/import)".into(),
        Some(Layout::Before182) => {
            "native blocks (/api/v1/import/native, layout before 1.82)".into()
        }
        Some(Layout::Since182) => "native blocks (/api/v1/import/native, layout since 1.82)".into(),
    }
}

/// `(cutoff, where the retention came from)`; `(None, None)` when unknown.
async fn retention_cutoff(client: &Client) -> (Option<i64>, Option<String>) {
    const MARGIN_MS: i64 = 10 * 60_000;
    match retention(client).await {
        Some((ms, source)) => (Some(now_ms() - ms + MARGIN_MS), Some(source)),
        None => (None, None),
    }
}

/// The target's retention in ms and where it was read.
async fn retention(client: &Client) -> Option<(i64, String)> {
    #[derive(serde::Deserialize)]
    struct Env {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Data {
        #[serde(default)]
        retention_time: Option<String>,
    }
    let get = |req: Result<reqwest::RequestBuilder, ClientError>| async {
        let resp = client.send_once(req.ok()?).await.ok()?;
        client.read_text(resp).await.ok()
    };
    if let Some(text) = get(client.request(reqwest::Method::GET, "/api/v1/status/tsdb")).await {
        if let Some(ms) = serde_json::from_str::<Env>(&text)
            .ok()
            .and_then(|e| e.data.retention_time)
            .and_then(|r| parse_retention(&r))
        {
            return Some((ms, "/api/v1/status/tsdb".into()));
        }
    }
    if let Some(text) = get(client.request_at_root(reqwest::Method::GET, "/metrics")).await {
        for l in text
            .lines()
            .filter(|l| l.starts_with("flag{") && l.contains(r#"name="retentionPeriod""#))
        {
            if let Some(ms) = l
                .split("value=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .and_then(parse_retention)
            {
                return Some((ms, "-retentionPeriod in /metrics".into()));
            }
        }
    }
    if let Some(text) = get(client.request_at_root(reqwest::Method::GET, "/flags")).await {
        for l in text.lines().filter(|l| l.starts_with("-retentionPeriod=")) {
            if let Some(ms) = parse_retention(l["-retentionPeriod=".len()..].trim_matches('"')) {
                return Some((ms, "-retentionPeriod in /flags".into()));
            }
        }
    }
    None
}

/// VictoriaMetrics' `-retentionPeriod`: a duration (`30d`, `1y`, `12h`), or
/// a bare number of months (31 days each), as VictoriaMetrics reads it.
pub fn parse_retention(s: &str) -> Option<i64> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // A bare number parses as that many seconds; a month is 31 days of them.
        let months = crate::model::time::parse_duration(s).ok()?;
        months.checked_mul(31 * 86_400)?
    } else {
        crate::model::time::parse_duration(s).ok()?
    };
    let ms = crate::model::time::duration_ms(d);
    (ms > 0).then_some(ms)
}

/// Polls `/api/v1/series` until the expected series show up or time runs out.
async fn verify_on_target(
    client: &Client,
    check: &VerifyReport,
    start_ms: i64,
    end_ms: i64,
    expected: u64,
    timeout: Duration,
    cancel: &CancelToken,
) -> (Option<u64>, Option<bool>, Option<String>) {
    let base = client.endpoint().base().path().to_string();
    let reader = if base.contains("/insert/") {
        client.with_base_path(&base.replacen("/insert/", "/select/", 1))
    } else {
        client.clone()
    };
    let matcher = if check.names_truncated || check.metric_names.len() > 100 {
        r#"{__name__!=""}"#.to_string()
    } else {
        let names: Vec<String> = check
            .metric_names
            .iter()
            .map(|n| regex::escape(n))
            .collect();
        let mut m = String::from("{__name__=~");
        crate::model::labels::push_quoted(&mut m, &names.join("|"));
        m.push('}');
        m
    };
    if expected == 0 {
        return (
            Some(0),
            Some(true),
            Some("every point was older than the retention".into()),
        );
    }
    let deadline = Instant::now() + timeout;
    flush_target(client).await;
    let mut last: Option<u64> = None;
    let mut use_count = false;
    let mut pause = Duration::from_millis(100);
    loop {
        let found = if use_count {
            count_series(&reader, &matcher, start_ms, end_ms).await
        } else {
            reader
                .series(std::slice::from_ref(&matcher), start_ms, end_ms)
                .await
                .map(|s| s.len() as u64)
        };
        match found {
            Ok(n) => {
                last = Some(n);
                if n >= expected {
                    return (Some(n), Some(true), None);
                }
            }
            // Too many series for `/api/v1/series` (`-search.maxSeries`): count them instead.
            Err(ClientError::Status {
                status: 400 | 422, ..
            }) if !use_count => use_count = true,
            Err(e) if Instant::now() >= deadline => {
                return (last, None, Some(format!("verification failed: {e}")));
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline || cancel.is_cancelled() {
            let note = format!(
                "only {} of {expected} series were visible on the target after {}s",
                last.unwrap_or(0),
                timeout.as_secs()
            );
            return (last, Some(false), Some(note));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Asks a single-node VictoriaMetrics to make what it acknowledged
/// searchable now (`/internal/force_flush`) instead of at its next periodic
/// flush, which verification would otherwise wait for (seconds). Best
/// effort: a cluster, vmauth or Prometheus answers 404 or refuses, and
/// verification then polls as before.
async fn flush_target(client: &Client) {
    let Ok(req) = client.request_at_root(reqwest::Method::GET, "/internal/force_flush") else {
        return;
    };
    match client.send_once(req).await {
        Ok(resp) => client.discard_body(resp).await,
        Err(e) => tracing::debug!(error = %e, "no force_flush on the target; polling"),
    }
}

/// Distinct series matching `matcher` with a point in `[start, end]`, counted by the server.
async fn count_series(
    client: &Client,
    matcher: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<u64, ClientError> {
    let range = ((end_ms - start_ms) / 1000).max(1);
    let q = format!("count(last_over_time({matcher}[{range}s]))");
    let rows = client
        .query(&q, end_ms, &crate::client::QueryParams::default())
        .await?;
    Ok(rows
        .first()
        .and_then(|s| s.samples.first())
        .map_or(0, |s| s.value as u64))
}

/// Where `spillway import` keeps its offset for `bundle` by default.
pub fn default_state_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".import-state.json");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_values() {
        assert_eq!(parse_retention("1"), Some(31 * 86_400_000));
        assert_eq!(parse_retention("100y"), Some(100 * 365 * 86_400_000));
        assert_eq!(parse_retention("2w"), Some(14 * 86_400_000));
        assert_eq!(parse_retention("36h"), Some(36 * 3_600_000));
        assert_eq!(parse_retention("x"), None);
        assert_eq!(parse_retention(""), None);
    }
}
