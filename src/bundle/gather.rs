//! The export job: windows of the selected series, each obfuscated and staged
//! on disk as it finishes, then packed into the bundle.
//!
//! Staging directory (one run at a time; default `<out>/spillway-staging`):
//! - `gather.json`: the plan, written once (atomically) before the first
//!   window: export id, source URL (never credentials), selectors, range,
//!   window length (or, for an adaptive plan, the first window's length and
//!   `--batch-samples`; see `windows.rs`), step, method, obfuscation
//!   options, components.
//! - `window-<index>.jsonl`: the lines of one finished window, already
//!   obfuscated (nothing un-obfuscated touches the disk). Written under a
//!   temp name and renamed when the window is complete, so a window file is
//!   whole or absent after a process crash. Not fsynced (that would cost as
//!   much as the export itself): the journal records each file's size and
//!   xxh64, and a resumed run checks them and fetches again any window whose
//!   file an OS crash left short or damaged.
//! - `windows.jsonl`: an append-only journal, one line per finished window
//!   (`index`, its bounds, lines, samples, bytes, xxh64, jobs seen; an
//!   adaptive plan is continued from the last entry's bounds and counts),
//!   fsynced after the
//!   window file's rename. A window counts as done only once it is in the
//!   journal and its file matches; a torn last line (crash while appending)
//!   is ignored and that window is fetched again, overwriting its file. So
//!   `--resume` never duplicates a window and never skips one.
//! - `obfuscation.json`: the obfuscator's state (salt, counters, salted
//!   digests; no original value), saved before the window that introduced
//!   new mappings is renamed, so a resumed run maps every value the same way.
//!
//! Order per window: fetch → write temp file → save obfuscation state (if
//! changed) → rename window file → append journal.
//!
//! Packing overlaps fetching: a packer thread deflates each window's bytes
//! into `metrics.jsonl` of the ZIP (see `sink::zip`) as they are staged (a
//! resumed run first feeds it the staged windows). If a window fails after
//! some of its bytes reached the archive, the archive is dropped and packed
//! from the staged files at the end instead. Then `metadata.json` and
//! `README.txt` are added, the archive is renamed into place,
//! `<name>.zip.sha256` is written, and the staging directory is removed.
//! Cancelling drops the HTTP stream, the unfinished window and the
//! unfinished archive; finished windows stay for `--resume`.

use super::metadata::{BundleMetadata, ObfuscationSummary, TimeRange};
use super::windows::{first_window_ms, Limits, WindowPlanner};
use super::{
    batch_window_ms, build_selectors, emit, emit_last, eta, io_err, line, validate, BundleError,
    CancelToken, Flavour, JobHandle, ProgressTx,
};
use crate::client::{Client, ClientConfig};
use crate::codec::vm_native::NativeBlock;
use crate::codec::{parse_vm_json_line, write_vm_json_line, write_vm_json_metric};
use crate::fsutil::{self, AtomicFile};
use crate::model::range::{check_windows, Windows};
use crate::model::time::{format_rfc3339_ms, now_ms};
use crate::model::{Labels, Sample};
use crate::sink::zip::BundleWriter;
use crate::source::vm_export::{ExportMethod, Flow, LineSink, SourceError, VmExportSource};
use crate::transform::obfuscate::{
    ObfuscationMap, ObfuscationOptions, Obfuscator, ObfuscatorState,
};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

/// What to export and where.
#[derive(Clone, Debug)]
pub struct ExportParams {
    /// Credentials live here, in memory only.
    pub client: ClientConfig,
    pub selectors: Vec<String>,
    pub jobs: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Downsample to one point per step (export) / the query step (fallback).
    pub step_ms: Option<i64>,
    /// Custom window length (clamped to 30 s – 24 h); `None` sizes windows
    /// from the data (see `windows.rs`).
    pub batch_window_ms: Option<i64>,
    /// Samples per adaptive window (default `Limits::default()`).
    pub batch_samples: Option<u64>,
    /// Read VictoriaMetrics' native export and print the lines here
    /// (`VmExportSource::with_native`); `false` reads the JSON export.
    pub native: bool,
    pub obfuscation: ObfuscationOptions,
    /// Write original → replacement here (never into the bundle).
    pub obfuscation_map: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// Default `<out_dir>/spillway-staging`.
    pub staging_dir: Option<PathBuf>,
    /// Continue the run recorded in the staging directory.
    pub resume: bool,
}

impl ExportParams {
    pub fn staging(&self) -> PathBuf {
        self.staging_dir
            .clone()
            .unwrap_or_else(|| self.out_dir.join("spillway-staging"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportStage {
    Validating,
    Exporting,
    Packing,
    Done,
}

/// A progress event: running totals and an estimate of the time left.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportProgress {
    pub stage: ExportStage,
    pub windows_done: u64,
    pub windows_total: u64,
    /// Lines of `metrics.jsonl` so far (one per series and window; from a
    /// native export, one per stored block of a series in the window).
    pub lines: u64,
    pub samples: u64,
    /// Uncompressed bytes staged so far.
    pub bytes: u64,
    pub elapsed: Duration,
    pub eta: Option<Duration>,
    /// A notable event (fallback to query_range, resume), once.
    pub message: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportOutcome {
    pub bundle: PathBuf,
    pub checksum_file: PathBuf,
    /// Hex SHA-256 of the archive.
    pub sha256: String,
    pub archive_bytes: u64,
    pub metadata: BundleMetadata,
    pub windows: u64,
    /// Windows that an earlier, interrupted run had already staged.
    pub resumed_windows: u64,
    pub obfuscation_map: Option<PathBuf>,
    pub elapsed: Duration,
}

/// Starts export jobs.
pub struct ExportJob;

impl ExportJob {
    /// Runs the export in the background; events go to `progress`.
    pub fn start(
        params: ExportParams,
        progress: ProgressTx<ExportProgress>,
    ) -> JobHandle<ExportOutcome> {
        let cancel = CancelToken::default();
        let token = cancel.clone();
        let task = tokio::spawn(async move { run(params, progress, token).await });
        JobHandle { cancel, task }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Plan {
    format: u32,
    export_id: String,
    created_ms: i64,
    /// For the resume check and messages only; never credentials.
    source_url: String,
    flavour: Flavour,
    version: Option<String>,
    selectors: Vec<String>,
    jobs: Vec<String>,
    from_ms: i64,
    to_ms: i64,
    /// The window length, or the first window's when `adaptive`.
    window_ms: i64,
    /// Windows sized from what the previous one held (no `--batch-window`);
    /// their bounds are in the journal, since they depend on the data.
    #[serde(default)]
    adaptive: bool,
    /// `--batch-samples` of an adaptive plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_samples: Option<u64>,
    step_ms: Option<i64>,
    method: ExportMethod,
    obfuscation: ObfuscationOptions,
    components: Vec<String>,
    #[serde(default)]
    bundle_name: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct WindowDone {
    index: u64,
    lines: u64,
    samples: u64,
    bytes: u64,
    #[serde(default)]
    jobs: Vec<String>,
    /// Hex xxh64 of the window file, checked on resume.
    #[serde(default)]
    xxh64: Option<String>,
    /// The window's bounds (inclusive); an adaptive plan is made of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_ms: Option<i64>,
}

/// One gather per staging directory: an flock on `.lock` (see
/// [`crate::fsutil::Lock`]), which a crashed owner does not keep.
fn lock_staging(staging: &Path) -> Result<fsutil::Lock, BundleError> {
    let path = staging.join(".lock");
    fsutil::Lock::acquire(&path).map_err(|e| match e {
        fsutil::LockError::Held { .. } => BundleError::Params(format!(
            "{} is in use by another gather ({}); give each gather its own --staging",
            staging.display(),
            e.holder()
        )),
        fsutil::LockError::Io { source, .. } => io_err(&path)(source),
    })
}

const PLAN: &str = "gather.json";
const JOURNAL: &str = "windows.jsonl";
const OBF_STATE: &str = "obfuscation.json";

fn window_file(index: u64) -> String {
    format!("window-{index:06}.jsonl")
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    lines: u64,
    samples: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, lines: u64, samples: u64, bytes: u64) {
        self.lines += lines;
        self.samples += samples;
        self.bytes += bytes;
    }
}

/// Progress events with the running totals and the clock of one job.
struct Reporter {
    tx: ProgressTx<ExportProgress>,
    started: Instant,
    totals: Totals,
}

impl Reporter {
    fn event(
        &self,
        stage: ExportStage,
        done: u64,
        total: u64,
        message: Option<String>,
    ) -> ExportProgress {
        ExportProgress {
            stage,
            windows_done: done,
            windows_total: total,
            lines: self.totals.lines,
            samples: self.totals.samples,
            bytes: self.totals.bytes,
            elapsed: self.started.elapsed(),
            eta: None,
            message,
        }
    }

    fn emit(&self, stage: ExportStage, done: u64, total: u64, message: Option<String>) {
        emit(&self.tx, self.event(stage, done, total, message));
    }
}

/// The longest `--step` and the shortest: a step is a bucket of samples.
const MAX_STEP_MS: i64 = 86_400_000;

/// Checks what does not need the server: obfuscation, range, step.
fn check_params(params: &ExportParams) -> Result<(), BundleError> {
    params.obfuscation.check().map_err(BundleError::Params)?;
    if params.from_ms > params.to_ms {
        return Err(BundleError::Params(format!(
            "the range starts ({}) after it ends ({})",
            format_rfc3339_ms(params.from_ms),
            format_rfc3339_ms(params.to_ms)
        )));
    }
    match params.step_ms {
        Some(step) if step < 1 => {
            return Err(BundleError::Params(
                "step: must be greater than zero".into(),
            ))
        }
        Some(step) if step > MAX_STEP_MS => {
            return Err(BundleError::Params(
                "step: longer than 24h, the longest accepted".into(),
            ))
        }
        _ => {}
    }
    // An adaptive plan stays under MAX_WINDOWS by construction (see `windows.rs`).
    if params.batch_window_ms.is_none() {
        return Ok(());
    }
    let window_ms = plan_window_ms(
        params.to_ms - params.from_ms,
        params.batch_window_ms,
        params.step_ms,
    );
    let windows = Windows::aligned(
        params.from_ms,
        params.to_ms,
        window_ms,
        params.step_ms.unwrap_or(1),
    );
    check_windows(
        windows.remaining(),
        &format!(
            "the range {} .. {} in windows of {}",
            format_rfc3339_ms(params.from_ms),
            format_rfc3339_ms(params.to_ms),
            crate::model::time::format_duration(Duration::from_millis(window_ms.unsigned_abs()))
        ),
        "shorten the range or use a longer batch window (at most 24h)",
    )
    .map_err(BundleError::Params)
}

fn plan_limits(batch_samples: Option<u64>) -> Limits {
    Limits {
        target_samples: batch_samples.unwrap_or(Limits::default().target_samples),
        ..Limits::default()
    }
}

/// Most series counted for sizing the first adaptive window; past it (or
/// when the server refuses to list them) the first window is a short probe.
const SERIES_HINT_LIMIT: usize = 100_000;

/// The series the selectors match in the range, from the index (no samples
/// read), or `None` when they cannot be counted cheaply.
async fn count_series(
    client: &Client,
    selectors: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Option<u64> {
    match client
        .series_bounded(selectors, from_ms, to_ms, SERIES_HINT_LIMIT)
        .await
    {
        Ok(list) if !list.more => Some(list.series.len() as u64),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "series not counted; the first window is a probe");
            None
        }
    }
}

/// The windows of a plan, lazily, from its start.
fn plan_windows(plan: &Plan) -> WindowPlanner {
    let align = plan.step_ms.unwrap_or(1);
    if plan.adaptive {
        WindowPlanner::adaptive(
            plan.from_ms,
            plan.to_ms,
            plan.window_ms,
            align,
            plan_limits(plan.batch_samples),
        )
    } else {
        WindowPlanner::fixed(plan.from_ms, plan.to_ms, plan.window_ms, align)
    }
}

async fn run(
    params: ExportParams,
    progress: ProgressTx<ExportProgress>,
    cancel: CancelToken,
) -> Result<ExportOutcome, BundleError> {
    let started = Instant::now();
    check_params(&params)?;
    let selectors =
        build_selectors(&params.selectors, &params.jobs).map_err(BundleError::Params)?;
    let client = Client::new(params.client.clone())?;
    let mut report = Reporter {
        tx: progress,
        started,
        totals: Totals::default(),
    };
    report.emit(ExportStage::Validating, 0, 0, None);
    let checked = tokio::select! {
        r = validate(&client) => r?,
        _ = cancel.cancelled() => return Err(BundleError::Cancelled),
    };
    let staging = params.staging();
    fsutil::create_dir_all(&params.out_dir).map_err(io_err(&params.out_dir))?;
    fsutil::create_dir_all(&staging).map_err(io_err(&staging))?;
    let lock = lock_staging(&staging)?;
    for dir in [&params.out_dir, &staging] {
        fsutil::remove_stale_temps(dir).map_err(io_err(dir))?;
    }
    let discovery = super::discover_components(&client, params.from_ms, params.to_ms).await;
    let series_hint = if params.batch_window_ms.is_none() && !params.resume && checked.export_api {
        tokio::select! {
            n = count_series(&client, &selectors, params.from_ms, params.to_ms) => n,
            _ = cancel.cancelled() => return Err(BundleError::Cancelled),
        }
    } else {
        None
    };
    let plan = open_plan(
        &params,
        &staging,
        &selectors,
        &client,
        &checked,
        &discovery,
        series_hint,
    )?;
    let mut obf = load_obfuscator(&staging, &plan, params.obfuscation_map.as_deref())?;
    obf.set_components(discovery.job_components());
    if params.obfuscation_map.is_some() {
        obf.keep_map();
    }
    let staged = Staged::load(&staging, &plan).await?;
    let total = staged.total;
    report.totals = staged.totals;
    let message = (staged.count() > 0).then(|| {
        format!(
            "resuming export {}: {} of {total} windows already staged",
            plan.export_id,
            staged.count()
        )
    });
    report.emit(ExportStage::Exporting, staged.count(), total, message);
    let mut job = Gather {
        params: &params,
        client,
        staging,
        plan,
        cancel,
        report,
        total,
        obf: Some(obf),
        packer: None,
    };
    let bundle_name = job.bundle_name()?;
    // Deflate while fetching when the staged windows form a prefix (always,
    // unless a journal was damaged); otherwise pack from staging at the end.
    if staged.is_prefix() {
        job.packer = Packer::start(&params.out_dir, &bundle_name, &job.staging, staged.count());
    }
    let jobs_seen = job.fetch_all(&staged).await?;
    let outcome = job.finish(&bundle_name, jobs_seen, staged.count()).await?;
    drop(lock);
    std::fs::remove_dir(&job.staging).ok();
    emit_last(
        &job.report.tx,
        job.report
            .event(ExportStage::Done, job.total, job.total, None),
    )
    .await;
    Ok(outcome)
}

/// The plan of this run: the interrupted one (`--resume`, checked against
/// the options) or a new one, written before the first window.
fn open_plan(
    params: &ExportParams,
    staging: &Path,
    selectors: &[String],
    client: &Client,
    checked: &super::ValidateReport,
    discovery: &super::Discovery,
    series_hint: Option<u64>,
) -> Result<Plan, BundleError> {
    match (read_plan(staging)?, params.resume) {
        (Some(plan), true) => {
            check_resume(&plan, params, selectors, client)?;
            Ok(plan)
        }
        (None, true) => Err(BundleError::Params(format!(
            "--resume: {} holds no interrupted gather (no {PLAN}); run without --resume to start one",
            staging.display()
        ))),
        (existing, false) => {
            if existing.is_some() {
                tracing::warn!(staging = %staging.display(), "discarding an unfinished gather (pass --resume to continue one)");
                clear_staging(staging)?;
            }
            let range = params.to_ms - params.from_ms;
            let method = if checked.export_api {
                ExportMethod::Export
            } else {
                ExportMethod::QueryRange {
                    step_ms: params.step_ms.unwrap_or(batch_window_ms(range, None)),
                }
            };
            let plan = Plan {
                format: 1,
                export_id: format!("{:08x}", fastrand::u32(..)),
                created_ms: now_ms(),
                source_url: client.endpoint().display(),
                flavour: checked.flavour,
                version: checked.version.clone(),
                selectors: selectors.to_vec(),
                jobs: params.jobs.clone(),
                from_ms: params.from_ms,
                to_ms: params.to_ms,
                window_ms: match params.batch_window_ms {
                    Some(_) => plan_window_ms(range, params.batch_window_ms, params.step_ms),
                    None => first_window_ms(
                        params.from_ms,
                        params.to_ms,
                        params.step_ms.unwrap_or(1),
                        series_hint,
                        plan_limits(params.batch_samples),
                    ),
                },
                adaptive: params.batch_window_ms.is_none(),
                batch_samples: params.batch_samples,
                step_ms: params.step_ms,
                method,
                obfuscation: params.obfuscation.clone(),
                components: discovery.components_of(&params.jobs),
                bundle_name: None,
            };
            write_plan(staging, &plan)?;
            Ok(plan)
        }
    }
}

/// The windows an interrupted run finished (journal entries whose files
/// are intact), with their totals, and where its plan goes on.
struct Staged {
    done: BTreeSet<u64>,
    /// Adaptive plans: the bounds the journal recorded for windows `0..n`
    /// (fetched again with the same bounds if their file is damaged).
    known: Vec<(i64, i64)>,
    /// The plan after the `known` windows.
    planner: WindowPlanner,
    /// Windows in the plan (an estimate for adaptive plans).
    total: u64,
    jobs: BTreeSet<String>,
    totals: Totals,
}

/// The journal's entries, the last one per index, in index order.
fn latest_entries(entries: Vec<WindowDone>) -> Vec<WindowDone> {
    let mut by_index = std::collections::BTreeMap::new();
    for e in entries {
        by_index.insert(e.index, e);
    }
    by_index.into_values().collect()
}

/// Replays an adaptive plan's journal: the bounds of its windows `0..n`
/// while they follow each other from the range's start (an entry that
/// does not is dropped with all after it: those windows are planned and
/// fetched again), and the planner after them.
fn replay_adaptive(plan: &Plan, entries: &mut Vec<WindowDone>) -> (Vec<(i64, i64)>, WindowPlanner) {
    let mut planner = plan_windows(plan);
    let mut known = Vec::new();
    let mut next_start = plan.from_ms;
    let mut keep = 0;
    for (i, e) in entries.iter().enumerate() {
        let (Some(start), Some(end)) = (e.start_ms, e.end_ms) else {
            break;
        };
        if e.index != i as u64 || start != next_start || end < start || end > plan.to_ms {
            break;
        }
        planner.resume_after(start, end, e.samples, e.bytes);
        known.push((start, end));
        next_start = end.saturating_add(1);
        keep = i + 1;
    }
    entries.truncate(keep);
    (known, planner)
}

impl Staged {
    async fn load(staging: &Path, plan: &Plan) -> Result<Staged, BundleError> {
        let mut entries = latest_entries(read_journal(staging)?);
        let (known, planner, total) = if plan.adaptive {
            let (known, planner) = replay_adaptive(plan, &mut entries);
            let total = known.len() as u64 + planner.remaining_estimate();
            (known, planner, total)
        } else {
            let total = Windows::aligned(
                plan.from_ms,
                plan.to_ms,
                plan.window_ms,
                plan.step_ms.unwrap_or(1),
            )
            .remaining();
            (Vec::new(), plan_windows(plan), total)
        };
        let staging = staging.to_path_buf();
        // Hashing the files is blocking work.
        entries = tokio::task::spawn_blocking(move || {
            entries.retain(|w| w.index < total && window_intact(&staging, w));
            entries
        })
        .await
        .map_err(|e| BundleError::Params(format!("checking staged windows panicked: {e}")))?;
        let mut totals = Totals::default();
        for w in &entries {
            totals.add(w.lines, w.samples, w.bytes);
        }
        Ok(Staged {
            done: entries.iter().map(|w| w.index).collect(),
            known,
            planner,
            total,
            jobs: entries
                .iter()
                .flat_map(|w| w.jobs.iter().cloned())
                .collect(),
            totals,
        })
    }

    fn count(&self) -> u64 {
        self.done.len() as u64
    }

    /// Whether the staged windows are exactly `0..count`.
    fn is_prefix(&self) -> bool {
        self.done.iter().copied().eq(0..self.count())
    }
}

/// One fetched window, not yet committed.
struct Fetched {
    out: StagedFile,
    stats: WindowStats,
    jobs: BTreeSet<String>,
}

/// A running gather: fetches, commits and packs the windows of its plan.
struct Gather<'a> {
    params: &'a ExportParams,
    client: Client,
    staging: PathBuf,
    plan: Plan,
    cancel: CancelToken,
    report: Reporter,
    total: u64,
    /// Handed to each window's writer and back (`None` only meanwhile).
    obf: Option<Obfuscator>,
    packer: Option<Packer>,
}

impl Gather<'_> {
    /// The archive's name, chosen once and kept in the plan for `--resume`.
    fn bundle_name(&mut self) -> Result<String, BundleError> {
        if let Some(n) = &self.plan.bundle_name {
            return Ok(n.clone());
        }
        let stamp = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms())
            .map(|t| t.format("%Y%m%d_%H%M%S").to_string())
            .unwrap_or_default();
        let name = format!("vmexport_{}_{stamp}.zip", self.plan.export_id);
        self.plan.bundle_name = Some(name.clone());
        write_plan(&self.staging, &self.plan)?;
        Ok(name)
    }

    /// Fetches and commits every window not staged yet; returns the jobs seen.
    async fn fetch_all(&mut self, staged: &Staged) -> Result<BTreeSet<String>, BundleError> {
        let mut source = VmExportSource::new(
            self.client.clone(),
            self.plan.selectors.clone(),
            self.plan.method,
        )
        // `--step` keeps the last point per interval of a series: of its one
        // line, which native blocks (several per series) are not.
        .with_native(self.params.native && self.plan.step_ms.is_none());
        let mut journal = open_journal(&self.staging)?;
        let fetch_started = Instant::now();
        let mut fetched = 0u64;
        let mut jobs_seen = staged.jobs.clone();
        let mut planner = staged.planner.clone();
        let known = staged.known.len() as u64;
        let mut index = 0u64;
        loop {
            if let ExportMethod::QueryRange { step_ms } = self.plan.method {
                planner.cap_len(step_ms.saturating_mul(MAX_QUERY_POINTS));
            }
            let planned = index >= known;
            let (start, end) = match staged.known.get(index as usize) {
                Some(&b) => b,
                None => match planner.peek() {
                    Some(b) => b,
                    None => break,
                },
            };
            if staged.done.contains(&index) {
                if planned {
                    // Only fixed plans get here: their lengths do not depend on the data.
                    planner.advance(0, 0);
                }
                index += 1;
                continue;
            }
            let window = self
                .fetch_window(&mut source, index, start, end, staged.count() + fetched)
                .await?;
            if planned {
                planner.advance(window.stats.samples, window.stats.bytes);
            }
            self.total = known.max(index + 1) + planner.remaining_estimate();
            let entry = WindowDone {
                index,
                lines: window.stats.lines,
                samples: window.stats.samples,
                bytes: window.stats.bytes,
                jobs: window.jobs.into_iter().collect(),
                xxh64: None,
                start_ms: Some(start),
                end_ms: Some(end),
            };
            journal = self.commit(window.out, journal, entry.clone()).await?;
            tracing::debug!(window = index, "window committed");
            jobs_seen.extend(entry.jobs.iter().cloned());
            self.report
                .totals
                .add(window.stats.lines, window.stats.samples, window.stats.bytes);
            fetched += 1;
            let done = staged.count() + fetched;
            let mut ev = self
                .report
                .event(ExportStage::Exporting, done, self.total, None);
            ev.eta = eta(
                fetch_started.elapsed(),
                fetched as f64,
                self.total.saturating_sub(staged.count()) as f64,
            );
            emit(&self.report.tx, ev);
            index += 1;
        }
        self.total = index;
        Ok(jobs_seen)
    }

    /// Fetches one window into its staging file, again after retriable
    /// failures; falls back to `query_range` when `/api/v1/export` is missing.
    async fn fetch_window(
        &mut self,
        source: &mut VmExportSource,
        index: u64,
        start: i64,
        end: i64,
        done: u64,
    ) -> Result<Fetched, BundleError> {
        let retries = self.client.retry_policy().clone();
        let mut attempt = 0u32;
        loop {
            let obf = self
                .obf
                .take()
                .expect("the obfuscator is handed back after each window");
            let mut writer =
                WindowWriter::create(&self.staging, index, obf, plan_step(&self.plan))?;
            writer.tee = self.packer.as_ref().and_then(|p| p.sender());
            let t0 = Instant::now();
            let (writer, result) = source
                .fetch_window(start, end, writer, self.cancel.cancelled())
                .await;
            tracing::debug!(window = index, took = ?t0.elapsed(), "window fetched");
            let (out, obf, stats, jobs, teed) = writer.into_parts(result.is_ok());
            self.obf = Some(obf);
            if result.is_err() && teed {
                // Part of a failed window reached the archive: it cannot be
                // taken back from a stream, so pack from staging at the end.
                if let Some(p) = self.packer.take() {
                    p.abort();
                }
            }
            match result {
                Ok(_) => {
                    let out = out.map_err(BundleError::Params)?;
                    return Ok(Fetched { out, stats, jobs });
                }
                Err(e) if e.is_missing_route() && source.method == ExportMethod::Export => {
                    let step_ms = self
                        .plan
                        .step_ms
                        .unwrap_or(batch_window_ms(self.plan.to_ms - self.plan.from_ms, None));
                    self.plan.method = ExportMethod::QueryRange { step_ms };
                    write_plan(&self.staging, &self.plan)?;
                    *source = VmExportSource::new(
                        self.client.clone(),
                        self.plan.selectors.clone(),
                        self.plan.method,
                    );
                    let message = format!("{e}; falling back to query_range");
                    self.report
                        .emit(ExportStage::Exporting, done, self.total, Some(message));
                }
                Err(SourceError::Cancelled) => return Err(BundleError::Cancelled),
                Err(e) if e.is_retriable() && retries.max_retries.is_none_or(|m| attempt < m) => {
                    let pause = retries.backoff(attempt);
                    tracing::warn!(window = index, error = %e, retry_in = ?pause, "window failed, fetching it again");
                    attempt += 1;
                    self.cancel.sleep(pause).await?;
                }
                Err(SourceError::Sink(reason)) => {
                    return Err(BundleError::Params(format!(
                        "window {} .. {}: {reason}",
                        format_rfc3339_ms(start),
                        format_rfc3339_ms(end)
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes a fetched window durable (fsyncs and renames: off the async threads).
    async fn commit(
        &mut self,
        out: StagedFile,
        journal: std::fs::File,
        mut entry: WindowDone,
    ) -> Result<std::fs::File, BundleError> {
        let staging = self.staging.clone();
        let map = self.params.obfuscation_map.clone();
        let mut obf = self
            .obf
            .take()
            .expect("the obfuscator is here between windows");
        let (obf, journal, committed) = tokio::task::spawn_blocking(move || {
            let mut journal = journal;
            let r = commit_window(
                &staging,
                out,
                &mut obf,
                map.as_deref(),
                &mut journal,
                &mut entry,
            );
            (obf, journal, r)
        })
        .await
        .map_err(|e| BundleError::Params(format!("window commit panicked: {e}")))?;
        self.obf = Some(obf);
        committed?;
        Ok(journal)
    }

    /// What `metadata.json` says about this gather.
    fn metadata(&self, obf: &Obfuscator, jobs: BTreeSet<String>) -> BundleMetadata {
        let plan = &self.plan;
        let totals = &self.report.totals;
        BundleMetadata {
            export_id: plan.export_id.clone(),
            export_date: format_rfc3339_ms(now_ms()),
            time_range: TimeRange {
                start: format_rfc3339_ms(plan.from_ms),
                end: format_rfc3339_ms(plan.to_ms),
            },
            components: plan.components.clone(),
            jobs: jobs.into_iter().collect(),
            metrics_count: totals.lines,
            obfuscated: plan.obfuscation.is_enabled(),
            spillway_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            source_flavour: Some(plan.flavour.as_str().to_string()),
            source_version: plan.version.clone(),
            export_method: Some(
                match plan.method {
                    ExportMethod::Export => "export",
                    ExportMethod::QueryRange { .. } => "query_range",
                }
                .to_string(),
            ),
            step_seconds: match plan.method {
                ExportMethod::QueryRange { step_ms } => Some(step_ms as f64 / 1000.0),
                ExportMethod::Export => plan.step_ms.map(|s| s as f64 / 1000.0),
            },
            selectors: plan
                .selectors
                .iter()
                .map(|s| obf.redact_selector(s))
                .collect(),
            samples_count: Some(totals.samples),
            metrics_sha256: None,
            obfuscation: plan.obfuscation.is_active().then(|| ObfuscationSummary {
                ips: plan.obfuscation.ips,
                jobs: plan.obfuscation.jobs,
                labels: plan.obfuscation.labels.clone(),
                dropped_labels: plan.obfuscation.drop_labels.clone(),
            }),
        }
    }

    /// Packs the archive (finishing the streaming packer, or from staging),
    /// writes the map, clears staging.
    async fn finish(
        &mut self,
        bundle_name: &str,
        jobs: BTreeSet<String>,
        resumed: u64,
    ) -> Result<ExportOutcome, BundleError> {
        let total = self.total;
        self.report.emit(ExportStage::Packing, total, total, None);
        let obf = self
            .obf
            .take()
            .expect("the obfuscator is here after the last window");
        let metadata = self.metadata(&obf, jobs);
        let (out_dir, staging, name, token) = (
            self.params.out_dir.clone(),
            self.staging.clone(),
            bundle_name.to_string(),
            self.cancel.clone(),
        );
        let packer = self.packer.take();
        let (written, metadata) = tokio::task::spawn_blocking(move || {
            if let Some(p) = packer {
                match p.finish(metadata.clone()) {
                    Ok(done) => return Ok(done),
                    Err(e) => tracing::warn!(error = %e, "packing while fetching failed; packing from staging"),
                }
            }
            pack(&out_dir, &name, &staging, total, metadata, &token)
        })
        .await
        .map_err(|e| BundleError::Params(format!("packing panicked: {e}")))??;
        if let Some(map_path) = &self.params.obfuscation_map {
            save_map(map_path, &obf)?;
        }
        clear_staging(&self.staging)?;
        Ok(ExportOutcome {
            bundle: written.path,
            checksum_file: written.checksum_path,
            sha256: written.sha256,
            archive_bytes: written.bytes,
            metadata,
            windows: total,
            resumed_windows: resumed,
            obfuscation_map: self.params.obfuscation_map.clone(),
            elapsed: self.report.started.elapsed(),
        })
    }
}

/// Points per series in one `query_range` window (Prometheus refuses more
/// than 11,000).
const MAX_QUERY_POINTS: i64 = 10_000;

/// The window length: by range or custom (see `batch_window_ms`), made whole
/// steps with `--step` so that a step interval is never split (see `Windows::aligned`).
fn plan_window_ms(range_ms: i64, custom_ms: Option<i64>, step_ms: Option<i64>) -> i64 {
    let w = batch_window_ms(range_ms, custom_ms);
    match step_ms {
        Some(step) if step > 0 => (w + step - 1) / step * step,
        _ => w,
    }
}

fn plan_step(plan: &Plan) -> Option<i64> {
    match plan.method {
        ExportMethod::Export => plan.step_ms,
        // query_range already returns one point per step.
        ExportMethod::QueryRange { .. } => None,
    }
}

fn check_resume(
    plan: &Plan,
    params: &ExportParams,
    selectors: &[String],
    client: &Client,
) -> Result<(), BundleError> {
    let mut diffs = Vec::new();
    if plan.source_url != client.endpoint().display() {
        diffs.push(format!("--url (was {})", plan.source_url));
    }
    if plan.selectors != selectors {
        diffs.push("--selector/--job".to_string());
    }
    if plan.obfuscation != params.obfuscation {
        diffs.push("--obfuscate/--obfuscate-label/--drop-label".to_string());
    }
    if plan.step_ms != params.step_ms {
        diffs.push("--step".to_string());
    }
    if params.batch_samples.is_some() && params.batch_samples != plan.batch_samples {
        diffs.push("--batch-samples".to_string());
    }
    if params.batch_window_ms.is_some()
        && (plan.adaptive
            || plan_window_ms(0, params.batch_window_ms, params.step_ms) != plan.window_ms)
    {
        diffs.push("--batch-window".to_string());
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(BundleError::Params(format!(
            "--resume: {} differ from the interrupted gather {}; give the same options, or drop --resume to start over",
            diffs.join(", "),
            plan.export_id
        )))
    }
}

/// Writes one window's lines to its staging file: labels parsed, dropped or
/// obfuscated and printed again; samples copied as they came (re-encoded only
/// for `--step` or for special values an older import would refuse).
struct WindowWriter {
    out: Option<StagedFile>,
    obf: Obfuscator,
    step_ms: Option<i64>,
    /// The packer deflating while we fetch, if any; gets each flushed buffer.
    tee: Option<SyncSender<PackMsg>>,
    /// Something was handed to the packer.
    teed: bool,
    buf: Vec<u8>,
    stats: WindowStats,
    jobs: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct WindowStats {
    lines: u64,
    samples: u64,
    bytes: u64,
}

impl WindowWriter {
    fn create(
        dir: &Path,
        index: u64,
        obf: Obfuscator,
        step_ms: Option<i64>,
    ) -> Result<WindowWriter, BundleError> {
        let name = window_file(index);
        let out = StagedFile::create(dir, &name).map_err(io_err(&dir.join(&name)))?;
        Ok(WindowWriter {
            out: Some(out),
            obf,
            step_ms,
            tee: None,
            teed: false,
            buf: Vec::with_capacity(FLUSH_BYTES + 64 * 1024),
            stats: WindowStats::default(),
            jobs: BTreeSet::new(),
        })
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), String> {
        let scanned = line::scan_line_fast(line)?;
        let mut labels = line::parse_metric(scanned.metric)?;
        self.obfuscate(&mut labels);
        let start = self.buf.len();
        let samples = if self.step_ms.is_some() || !scanned.plain_values {
            let mut series = parse_vm_json_line(line).map_err(|e| e.to_string())?;
            series.labels = labels;
            if let Some(step) = self.step_ms {
                series.samples = downsample(&series.samples, step);
            }
            write_vm_json_line(&series, &mut self.buf);
            series.samples.len()
        } else {
            self.buf.extend_from_slice(b"{\"metric\":");
            write_vm_json_metric(&labels, &mut self.buf);
            self.buf.extend_from_slice(b",\"values\":[");
            self.buf.extend_from_slice(scanned.values);
            self.buf.extend_from_slice(b"],\"timestamps\":[");
            self.buf.extend_from_slice(scanned.timestamps);
            self.buf.extend_from_slice(b"]}\n");
            scanned.samples
        };
        self.written(start, samples)
    }

    /// A native block: printed as the JSON export prints a line.
    fn write_series(&mut self, mut labels: Labels, block: NativeBlock<'_>) -> Result<(), String> {
        // `fetch_all` reads the JSON export under `--step`, whose one point
        // per interval needs a series' whole line, not one of its blocks.
        if self.step_ms.is_some() {
            return Err("a native block cannot be downsampled with --step".into());
        }
        self.obfuscate(&mut labels);
        let start = self.buf.len();
        block.write_json_line(&labels, &mut self.buf);
        self.written(start, block.timestamps.len())
    }

    fn obfuscate(&mut self, labels: &mut Labels) {
        self.obf.apply(labels);
        if let Some(job) = labels.get("job") {
            if !self.jobs.contains(job) {
                self.jobs.insert(job.to_string());
            }
        }
    }

    /// Counts what the last write added from `start` and flushes when full.
    fn written(&mut self, start: usize, samples: usize) -> Result<(), String> {
        // Every line counts, an empty one too: `metrics_count` is checked
        // against the lines of `metrics.jsonl` on import.
        self.stats.lines += 1;
        self.stats.samples += samples as u64;
        self.stats.bytes += (self.buf.len() - start) as u64;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(out) = &mut self.out {
            out.write_all(&self.buf)
                .map_err(|e| format!("cannot write {}: {e}", out.path().display()))?;
        }
        match &self.tee {
            Some(tee) => {
                let data =
                    std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_BYTES + 64 * 1024));
                self.teed = true;
                if tee.send(PackMsg::Data(data)).is_err() {
                    // The packer gave up; the end of the run packs from staging.
                    self.tee = None;
                }
            }
            None => self.buf.clear(),
        }
        Ok(())
    }
}

impl LineSink for WindowWriter {
    fn line(&mut self, line: &[u8]) -> Result<Flow, String> {
        self.write_line(line)?;
        Ok(Flow::Continue)
    }

    fn series(&mut self, labels: Labels, block: NativeBlock<'_>) -> Result<Flow, String> {
        self.write_series(labels, block)?;
        Ok(Flow::Continue)
    }
}

/// What a window's writer hands back: its staged file, the obfuscator,
/// the counts, the jobs seen, and whether any data went to the packer.
type WindowParts = (
    Result<StagedFile, String>,
    Obfuscator,
    WindowStats,
    BTreeSet<String>,
    bool,
);

impl WindowWriter {
    /// Hands the parts back, after writing the buffered tail if the fetch
    /// `succeeded`. A failed attempt's tail is dropped, never teed: the
    /// retry sends the whole window again, and a small window lives wholly
    /// in that tail, so teeing it would put the window in the archive twice.
    /// An uncommitted file removes its temp file when dropped.
    fn into_parts(mut self, succeeded: bool) -> WindowParts {
        let out = if succeeded {
            self.flush().and_then(|()| {
                self.out
                    .take()
                    .ok_or_else(|| "the window file is gone".to_string())
            })
        } else {
            Err("the window's fetch failed".to_string())
        };
        (out, self.obf, self.stats, self.jobs, self.teed)
    }
}

/// Makes a fetched window durable, in the order the module doc gives.
fn commit_window(
    staging: &Path,
    out: StagedFile,
    obf: &mut Obfuscator,
    map_path: Option<&Path>,
    journal: &mut std::fs::File,
    entry: &mut WindowDone,
) -> Result<(), BundleError> {
    // The state that maps this window's values must be on disk before the window.
    if obf.take_dirty() {
        save_obfuscator(staging, obf, map_path)?;
    }
    let path = out.path().to_path_buf();
    let (bytes, hash) = out.commit().map_err(io_err(&path))?;
    entry.bytes = bytes;
    entry.xxh64 = Some(hash);
    append_journal(journal, staging, entry)
}

/// A window file under a hidden temp name until renamed by [`StagedFile::commit`];
/// removed when dropped uncommitted. Not fsynced: the journal records its
/// size and xxh64, and a resumed run fetches again any window whose file
/// does not match (what an OS crash could leave).
struct StagedFile {
    file: AtomicFile,
    hasher: xxhash_rust::xxh64::Xxh64,
    bytes: u64,
}

impl StagedFile {
    fn create(dir: &Path, name: &str) -> std::io::Result<StagedFile> {
        Ok(StagedFile {
            file: AtomicFile::create_unsynced(dir, name)?,
            hasher: xxhash_rust::xxh64::Xxh64::new(0),
            bytes: 0,
        })
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.file.write_all(data)
    }

    /// Renames into place; returns the size and hex xxh64.
    fn commit(self) -> std::io::Result<(u64, String)> {
        self.file.commit()?;
        Ok((self.bytes, format!("{:016x}", self.hasher.digest())))
    }
}

/// Whether a staged window file still holds what the journal recorded.
fn window_intact(staging: &Path, w: &WindowDone) -> bool {
    let p = staging.join(window_file(w.index));
    let Ok(meta) = std::fs::metadata(&p) else {
        return false;
    };
    if meta.len() != w.bytes {
        return false;
    }
    let Some(expected) = &w.xxh64 else {
        return true;
    };
    let Ok(mut f) = std::fs::File::open(&p) else {
        return false;
    };
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    &format!("{:016x}", h.digest()) == expected
}

/// The last sample of each step-aligned interval, as VictoriaMetrics'
/// deduplication (`-dedup.minScrapeInterval`) keeps it.
fn downsample(samples: &[Sample], step_ms: i64) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        let bucket = s.timestamp_ms.div_euclid(step_ms);
        match out.last_mut() {
            Some(last) if last.timestamp_ms.div_euclid(step_ms) == bucket => *last = *s,
            _ => out.push(*s),
        }
    }
    out
}

/// A file of the staging directory (or the user's map), read with a cap:
/// `None` when it does not exist.
fn read_staged(path: &Path, what: &'static str) -> Result<Option<Vec<u8>>, BundleError> {
    // The obfuscation state and map grow with the number of values mapped.
    const MAX_STATE_BYTES: u64 = 256 << 20;
    match crate::model::input::read_bytes(path, MAX_STATE_BYTES, what) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(BundleError::Params(e.to_string())),
    }
}

fn read_plan(staging: &Path) -> Result<Option<Plan>, BundleError> {
    let path = staging.join(PLAN);
    match read_staged(&path, "a gather plan")? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            BundleError::Params(format!(
                "{}: unreadable gather plan ({e}); remove the staging directory to start over",
                path.display()
            ))
        }),
        None => Ok(None),
    }
}

fn write_json_atomic<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<(), BundleError> {
    let path = dir.join(name);
    let mut f = AtomicFile::create(dir, name).map_err(io_err(&path))?;
    serde_json::to_writer_pretty(&mut f, value)
        .map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    f.commit().map_err(io_err(&path))?;
    Ok(())
}

fn write_plan(staging: &Path, plan: &Plan) -> Result<(), BundleError> {
    write_json_atomic(staging, PLAN, plan)
}

fn read_journal(staging: &Path) -> Result<Vec<WindowDone>, BundleError> {
    let path = staging.join(JOURNAL);
    let Some(text) = read_staged(&path, "a gather journal")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // A torn last line: that window is fetched again.
        match serde_json::from_slice::<WindowDone>(line) {
            Ok(w) => out.push(w),
            Err(_) => break,
        }
    }
    Ok(out)
}

fn open_journal(staging: &Path) -> Result<std::fs::File, BundleError> {
    let path = staging.join(JOURNAL);
    // Rewrite the valid entries first, so a torn tail is not followed by good lines.
    let entries = read_journal(staging)?;
    let mut text = Vec::new();
    for e in &entries {
        serde_json::to_writer(&mut text, e).expect("journal entry serializes");
        text.push(b'\n');
    }
    fsutil::write_atomic(&path, &text).map_err(io_err(&path))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))
}

fn append_journal(
    journal: &mut std::fs::File,
    staging: &Path,
    entry: &WindowDone,
) -> Result<(), BundleError> {
    let path = staging.join(JOURNAL);
    let mut line = serde_json::to_vec(entry).expect("journal entry serializes");
    line.push(b'\n');
    journal.write_all(&line).map_err(io_err(&path))?;
    journal.sync_data().map_err(io_err(&path))
}

fn clear_staging(staging: &Path) -> Result<(), BundleError> {
    let entries = match std::fs::read_dir(staging) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(staging)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == PLAN
            || name == JOURNAL
            || name == OBF_STATE
            || (name.starts_with("window-") && name.ends_with(".jsonl"))
            || name.starts_with(".window-")
            || name.starts_with(&format!(".{JOURNAL}"))
            || name.starts_with(&format!(".{OBF_STATE}"))
            || name.starts_with(&format!(".{PLAN}"));
        if ours {
            std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    Ok(())
}

fn load_obfuscator(
    staging: &Path,
    plan: &Plan,
    map_path: Option<&Path>,
) -> Result<Obfuscator, BundleError> {
    let path = staging.join(OBF_STATE);
    let state: Option<ObfuscatorState> = match read_staged(&path, "an obfuscation state")? {
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
            BundleError::Params(format!(
                "{}: unreadable obfuscation state ({e})",
                path.display()
            ))
        })?),
        None => None,
    };
    match state {
        None => Ok(Obfuscator::new(plan.obfuscation.clone())),
        Some(state) => {
            let map = map_path
                .and_then(|p| read_staged(p, "an obfuscation map").ok().flatten())
                .and_then(|b| serde_json::from_slice::<ObfuscationMap>(&b).ok());
            Obfuscator::restore(plan.obfuscation.clone(), state, map).map_err(BundleError::Params)
        }
    }
}

fn save_obfuscator(
    staging: &Path,
    obf: &Obfuscator,
    map_path: Option<&Path>,
) -> Result<(), BundleError> {
    write_json_atomic(staging, OBF_STATE, obf.state())?;
    if let Some(p) = map_path {
        save_map(p, obf)?;
    }
    Ok(())
}

/// The user's map file: original → replacement, readable by the owner only.
fn save_map(path: &Path, obf: &Obfuscator) -> Result<(), BundleError> {
    let empty = ObfuscationMap::default();
    let map = obf.map().unwrap_or(&empty);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| {
            BundleError::Params(format!(
                "--obfuscation-map {}: not a file name",
                path.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    fsutil::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut f = AtomicFile::create(&dir, &name).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f.temp_path(), std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    serde_json::to_writer_pretty(&mut f, map)
        .map_err(|e| io_err(path)(std::io::Error::other(e)))?;
    f.commit().map_err(io_err(path))?;
    Ok(())
}

/// Window data is written (and teed to the packer) in pieces of this size.
const FLUSH_BYTES: usize = 256 * 1024;

enum PackMsg {
    /// Copy a staged window (from an earlier, interrupted run).
    File(PathBuf),
    Data(Vec<u8>),
    Finish(Box<BundleMetadata>),
}

type PackResult = Result<(crate::sink::zip::WrittenBundle, BundleMetadata), BundleError>;

/// Deflates windows into the archive on its own thread while the next ones
/// are fetched. Dropping its sender without `Finish` (cancel, abort) makes
/// it drop the unfinished archive, which removes the temp file.
struct Packer {
    tx: Option<SyncSender<PackMsg>>,
    thread: Option<std::thread::JoinHandle<Option<PackResult>>>,
}

impl Packer {
    fn start(out_dir: &Path, name: &str, staging: &Path, staged: u64) -> Option<Packer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<PackMsg>(16);
        let bundle_path = out_dir.join(name);
        // ZIP64 sizes: the final size is unknown while streaming.
        let mut w = match BundleWriter::create(out_dir, name, true) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, path = %bundle_path.display(), "cannot start the archive; packing at the end");
                return None;
            }
        };
        let staging = staging.to_path_buf();
        let thread = std::thread::spawn(move || -> Option<PackResult> {
            let mut buf = vec![0u8; 1 << 20];
            let fail = |e: std::io::Error| Some(Err(io_err(&bundle_path)(e)));
            let msgs = (0..staged)
                .map(|i| PackMsg::File(staging.join(window_file(i))))
                .chain(rx);
            for msg in msgs {
                match msg {
                    PackMsg::Data(d) => {
                        if let Err(e) = w.write_metrics(&d) {
                            return fail(e);
                        }
                    }
                    PackMsg::File(p) => {
                        let mut f = match std::fs::File::open(&p) {
                            Ok(f) => f,
                            Err(e) => return Some(Err(io_err(&p)(e))),
                        };
                        loop {
                            match f.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if let Err(e) = w.write_metrics(&buf[..n]) {
                                        return fail(e);
                                    }
                                }
                                Err(e) => return Some(Err(io_err(&p)(e))),
                            }
                        }
                    }
                    PackMsg::Finish(md) => return Some(finish_bundle(w, *md, &bundle_path)),
                }
            }
            None
        });
        Some(Packer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn sender(&self) -> Option<SyncSender<PackMsg>> {
        self.tx.clone()
    }

    /// Stops and discards the archive (see `Drop`).
    fn abort(self) {}

    fn finish(mut self, metadata: BundleMetadata) -> PackResult {
        let tx = self.tx.take().expect("sender present until finish");
        let sent = tx.send(PackMsg::Finish(Box::new(metadata)));
        drop(tx);
        let thread = self.thread.take().expect("thread present until finish");
        match thread.join() {
            Ok(Some(r)) => r,
            Ok(None) => Err(BundleError::Params(format!(
                "the archive writer stopped early{}",
                if sent.is_err() {
                    " (it had failed)"
                } else {
                    ""
                }
            ))),
            Err(_) => Err(BundleError::Params("the archive writer panicked".into())),
        }
    }
}

impl Drop for Packer {
    /// Without `Finish` the thread drops the unfinished archive (its temp file
    /// goes with it); wait for that, so nothing is left behind on exit.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Closes `metrics.jsonl`, adds metadata (with its digest) and README, commits.
fn finish_bundle(
    mut w: BundleWriter,
    mut metadata: BundleMetadata,
    bundle_path: &Path,
) -> PackResult {
    let (sha, _) = w.finish_metrics().map_err(io_err(bundle_path))?;
    metadata.metrics_sha256 = Some(sha);
    w.add_file("metadata.json", &metadata.to_json())
        .map_err(io_err(bundle_path))?;
    w.add_file("README.txt", metadata.readme().as_bytes())
        .map_err(io_err(bundle_path))?;
    let written = w.commit().map_err(io_err(bundle_path))?;
    Ok((written, metadata))
}

/// Streams the staged windows into the archive (blocking).
fn pack(
    out_dir: &Path,
    name: &str,
    staging: &Path,
    windows: u64,
    metadata: BundleMetadata,
    cancel: &CancelToken,
) -> Result<(crate::sink::zip::WrittenBundle, BundleMetadata), BundleError> {
    let mut total = 0u64;
    for i in 0..windows {
        let p = staging.join(window_file(i));
        total += std::fs::metadata(&p).map_err(io_err(&p))?.len();
    }
    let bundle_path = out_dir.join(name);
    let mut w = BundleWriter::create(out_dir, name, total > (4 << 30) - (64 << 20))
        .map_err(io_err(&bundle_path))?;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..windows {
        if cancel.is_cancelled() {
            // Dropping the writer removes the unfinished archive.
            return Err(BundleError::Cancelled);
        }
        let p = staging.join(window_file(i));
        let mut f = std::fs::File::open(&p).map_err(io_err(&p))?;
        loop {
            let n = f.read(&mut buf).map_err(io_err(&p))?;
            if n == 0 {
                break;
            }
            w.write_metrics(&buf[..n]).map_err(io_err(&bundle_path))?;
        }
    }
    finish_bundle(w, metadata, &bundle_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gather_per_staging_directory() {
        let dir = tempfile::tempdir().unwrap();
        // A crashed owner left its pid but holds no lock: taken over.
        std::fs::write(dir.path().join(".lock"), "4000000000").unwrap();
        let lock = lock_staging(dir.path()).unwrap();
        // Held (here by this very process): a second job must not share it.
        let e = lock_staging(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another gather"), "{e}");
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(lock);
        assert!(!dir.path().join(".lock").exists());
    }

    #[test]
    fn downsample_keeps_the_last_per_step() {
        let s: Vec<Sample> = [0, 10, 20, 30, 65, 70]
            .iter()
            .map(|&t| Sample::new(t, t as f64))
            .collect();
        let d = downsample(&s, 30);
        let ts: Vec<i64> = d.iter().map(|s| s.timestamp_ms).collect();
        assert_eq!(ts, [20, 30, 70]);
    }

    #[test]
    fn window_writer_rewrites_labels_and_copies_samples() {
        let dir = tempfile::tempdir().unwrap();
        let obf = Obfuscator::new(ObfuscationOptions {
            ips: true,
            jobs: true,
            drop_labels: vec!["pod".into()],
            ..Default::default()
        });
        let mut w = WindowWriter::create(dir.path(), 0, obf, None).unwrap();
        w.line(br#"{"metric":{"__name__":"up","job":"node","instance":"10.1.2.3:9100","pod":"p"},"values":[1,2.5],"timestamps":[1000,2000]}"#).unwrap();
        w.line(br#"{"metric":{"__name__":"up","job":"node"},"timestamps":[3000],"values":[null]}"#)
            .unwrap();
        let (out, _, stats, jobs, _) = w.into_parts(true);
        let out = out.unwrap();
        let path = out.path().to_path_buf();
        out.commit().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "{\"metric\":{\"__name__\":\"up\",\"instance\":\"777.777.1.1:9100\",\"job\":\"other-job-1\"},\"values\":[1,2.5],\"timestamps\":[1000,2000]}\n\
             {\"metric\":{\"__name__\":\"up\",\"job\":\"other-job-1\"},\"values\":[NaN],\"timestamps\":[3000]}\n"
        );
        assert_eq!((stats.lines, stats.samples), (2, 3));
        assert_eq!(jobs.iter().collect::<Vec<_>>(), ["other-job-1"]);
    }
}
