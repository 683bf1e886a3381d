//! Export jobs: `export/start` (queued, polled with `export/status`),
//! `export` (answers when finished, for scripts), `cancel` and `resume`.
//! Each job gets a new directory of its own under `exports/`.

use super::{bad, ApiJson, ApiQuery, ApiResult, Connection, Obfuscation, Selection, UiError};
use crate::client::ClientConfig;
use crate::server::ApiError;
use crate::ui::jobs::{ExportSnapshot, ExportSpec, JobState};
use crate::ui::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/export"),
    ("POST", "/api/export/start"),
    ("GET", "/api/export/status"),
    ("POST", "/api/export/cancel"),
    ("POST", "/api/export/resume"),
];

pub(super) fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/api/export" => post(export_sync),
        "/api/export/start" => post(export_start),
        "/api/export/status" => get(export_status),
        "/api/export/cancel" => post(export_cancel),
        "/api/export/resume" => post(export_resume),
        other => unreachable!("route {other} in ROUTES has no handler"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub connection: Connection,
    #[serde(default, flatten)]
    pub selection: Selection,
    #[serde(default)]
    pub obfuscation: Obfuscation,
    #[serde(default)]
    pub metric_step_seconds: Option<u64>,
    #[serde(default)]
    pub batch_window_seconds: Option<u64>,
    /// A new directory name for the job, created under `exports/` of the
    /// staging root (default: a dated random name). Never an existing one:
    /// the job's directory is removed with the job.
    #[serde(default)]
    pub staging_dir: Option<String>,
}

#[derive(Serialize)]
pub struct BundleInfo {
    /// Relative to the staging root; give it to `download`.
    pub path: String,
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub download_url: String,
    /// Lines of metrics.jsonl (one per series and window).
    pub metrics_count: u64,
    pub metadata: crate::bundle::BundleMetadata,
}

#[derive(Serialize)]
pub struct ExportStatus {
    pub id: String,
    pub state: JobState,
    pub queue_position: Option<usize>,
    pub stage: Option<crate::bundle::ExportStage>,
    pub source_url: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub staging_dir: String,
    pub windows_done: u64,
    pub windows_total: u64,
    pub percent: f64,
    pub lines: u64,
    pub samples: u64,
    pub bytes: u64,
    pub elapsed_seconds: f64,
    pub eta_seconds: Option<f64>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub runs: u32,
    pub bundle: Option<BundleInfo>,
}

fn export_status_of(s: &AppState, snap: ExportSnapshot) -> ExportStatus {
    let p = snap.progress.as_ref();
    let (done, total) = p.map_or((0, 0), |p| (p.windows_done, p.windows_total));
    let percent = match (snap.state, total) {
        (JobState::Done, _) => 100.0,
        (_, 0) => 0.0,
        _ => (done as f64 * 100.0 / total as f64).min(99.9),
    };
    let bundle = snap.outcome.as_ref().map(|o| {
        let path = s.confine.relative(&o.bundle);
        BundleInfo {
            download_url: format!("/api/download?path={}", urlencode(&path)),
            name: o
                .bundle
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path,
            sha256: o.sha256.clone(),
            bytes: o.archive_bytes,
            metrics_count: o.metadata.metrics_count,
            metadata: o.metadata.clone(),
        }
    });
    ExportStatus {
        id: snap.id,
        state: snap.state,
        queue_position: snap.queue_position,
        stage: p.map(|p| p.stage),
        source_url: snap.spec.source_url,
        from_ms: snap.spec.from_ms,
        to_ms: snap.spec.to_ms,
        staging_dir: s.confine.relative(&snap.spec.out_dir),
        windows_done: done,
        windows_total: total,
        percent,
        lines: p.map_or(0, |p| p.lines),
        samples: p.map_or(0, |p| p.samples),
        bytes: p.map_or(0, |p| p.bytes),
        elapsed_seconds: p.map_or(0.0, |p| p.elapsed.as_secs_f64()),
        eta_seconds: p.and_then(|p| p.eta).map(|d| d.as_secs_f64()),
        message: p.and_then(|p| p.message.clone()),
        error: snap.error,
        runs: snap.runs,
        bundle,
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn export_spec(s: &AppState, req: &ExportRequest) -> Result<(ExportSpec, ClientConfig), UiError> {
    let client = req.connection.config()?;
    let (from_ms, to_ms) = req.selection.range()?;
    // Validated here so a bad selector fails the request, not the job.
    req.selection.selectors()?;
    let obfuscation = req.obfuscation.options()?;
    // Saturated, never wrapped: the job refuses what is too long.
    let secs = |v: Option<u64>| {
        v.filter(|v| *v > 0)
            .map(|v| i64::try_from(v.saturating_mul(1000)).unwrap_or(i64::MAX))
    };
    let out_dir = job_dir(s, req.staging_dir.as_deref())?;
    Ok((
        ExportSpec {
            source_url: req.connection.public_url(),
            selectors: req
                .selection
                .selectors
                .iter()
                .filter(|s| !s.trim().is_empty())
                .cloned()
                .collect(),
            jobs: req.selection.jobs.clone(),
            from_ms,
            to_ms,
            step_ms: secs(req.metric_step_seconds),
            batch_window_ms: secs(req.batch_window_seconds),
            obfuscation,
            out_dir,
            owned_dir: true,
        },
        client,
    ))
}

/// Longest `staging_dir` name.
const MAX_DIR_NAME: usize = 100;

/// Creates the job's own directory, `exports/<name>`: `name` is one new
/// directory name, so a job can never be pointed at the staging root, the
/// uploads or another job's files, which its sweep would remove.
fn job_dir(s: &AppState, name: Option<&str>) -> Result<PathBuf, UiError> {
    let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => {
            check_dir_name(n)?;
            n.to_string()
        }
        None => format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S"),
            crate::server::random_hex(4)
                .map_err(|e| UiError(ApiError::Internal(anyhow::anyhow!(e))))?
        ),
    };
    let exports = s.confine.resolve("exports")?;
    let internal = |e: std::io::Error, p: &std::path::Path| {
        UiError(ApiError::Internal(anyhow::anyhow!("{}: {e}", p.display())))
    };
    std::fs::create_dir_all(&exports).map_err(|e| internal(e, &exports))?;
    let dir = exports.join(&name);
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(UiError(ApiError::Conflict(format!(
                "staging_dir {name:?}: exports/{name} exists already; give a new name (or none for a generated one)"
            ))))
        }
        Err(e) => Err(internal(e, &dir)),
    }
}

fn check_dir_name(name: &str) -> Result<(), UiError> {
    let ok = name.len() <= MAX_DIR_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    Err(bad(format!(
        "staging_dir {:?}: expected a single new directory name (letters, digits, '-', '_', '.'; \
         starting with a letter or digit; at most {MAX_DIR_NAME} characters), created under exports/",
        name.chars().take(MAX_DIR_NAME + 20).collect::<String>()
    )))
}

/// Starts the export, or removes its just-made directory if it cannot start.
fn start(s: &AppState, spec: ExportSpec, client: ClientConfig) -> Result<String, UiError> {
    let dir = spec.out_dir.clone();
    s.jobs.start_export(spec, client).map_err(|e| {
        let _ = std::fs::remove_dir(&dir);
        UiError::from(e)
    })
}

async fn export_start(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ExportRequest>,
) -> ApiResult<ExportStatus> {
    let (spec, client) = export_spec(&s, &req)?;
    let id = start(&s, spec, client)?;
    Ok(Json(export_status_of(&s, s.jobs.export(&id)?)))
}

/// Runs the export and answers when it is finished (for scripts).
async fn export_sync(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ExportRequest>,
) -> Result<Response, UiError> {
    let (spec, client) = export_spec(&s, &req)?;
    let id = start(&s, spec, client)?;
    let snap = s.jobs.wait_export(&id).await?;
    let status = export_status_of(&s, snap);
    if status.state == JobState::Failed {
        return Err(bad(format!(
            "export failed: {}",
            status.error.unwrap_or_default()
        )));
    }
    Ok(Json(status).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    pub id: String,
}

async fn export_status(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<ExportStatus> {
    Ok(Json(export_status_of(&s, s.jobs.export(&q.id)?)))
}

async fn export_cancel(
    State(s): State<AppState>,
    ApiJson(q): ApiJson<JobQuery>,
) -> ApiResult<ExportStatus> {
    s.jobs.cancel_export(&q.id)?;
    let snap = tokio::time::timeout(Duration::from_secs(10), s.jobs.wait_export(&q.id))
        .await
        .unwrap_or_else(|_| s.jobs.export(&q.id))?;
    Ok(Json(export_status_of(&s, snap)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    pub id: String,
    pub connection: Connection,
}

async fn export_resume(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ResumeRequest>,
) -> ApiResult<ExportStatus> {
    let client = req.connection.config()?;
    s.jobs.resume_export(&req.id, client)?;
    Ok(Json(export_status_of(&s, s.jobs.export(&req.id)?)))
}
