//! Importing: `upload` (bounded in size, in number at once and in what
//! waits unimported), `analyze` (check a bundle, optionally against the
//! target's retention), `import/start|status|resume`.

use super::{bad, ApiJson, ApiQuery, ApiResult, Connection, JobQuery, ResumeRequest, UiError};
use crate::bundle::{self, ImportParams, SafetyLimits, VerifyReport};
use crate::fsutil::AtomicFile;
use crate::model::size::format_size;
use crate::server::ApiError;
use crate::ui::jobs::{ImportSnapshot, ImportSpec, JobState};
use crate::ui::AppState;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/analyze"),
    ("POST", "/api/upload"),
    ("POST", "/api/import/start"),
    ("GET", "/api/import/status"),
    ("POST", "/api/import/resume"),
];

pub(super) fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/api/analyze" => post(analyze),
        // The handler counts bytes itself and answers 413 with a message.
        "/api/upload" => post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
        "/api/import/start" => post(import_start),
        "/api/import/status" => get(import_status),
        "/api/import/resume" => post(import_resume),
        other => unreachable!("route {other} in ROUTES has no handler"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// A bundle inside the staging root (as `upload` returned it).
    pub path: String,
    /// With a target, also how its retention would cut the bundle.
    #[serde(default)]
    pub connection: Option<Connection>,
    #[serde(default)]
    pub shift_to_now: bool,
}

#[derive(Serialize)]
pub struct AnalyzeResponse {
    pub path: String,
    pub report: VerifyReport,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub retention_cutoff_ms: Option<i64>,
    pub retention_source: Option<String>,
    pub skipped_samples: u64,
    pub warnings: Vec<String>,
}

async fn analyze(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<AnalyzeRequest>,
) -> ApiResult<AnalyzeResponse> {
    let path = s.confine.existing_file(&req.path)?;
    let p2 = path.clone();
    let report =
        tokio::task::spawn_blocking(move || bundle::verify_bundle(&p2, SafetyLimits::default()))
            .await
            .map_err(|e| UiError(ApiError::Internal(anyhow::anyhow!("verify task: {e}"))))??;
    let mut out = AnalyzeResponse {
        path: s.confine.relative(&path),
        from_ms: report.min_ts,
        to_ms: report.max_ts,
        report,
        retention_cutoff_ms: None,
        retention_source: None,
        skipped_samples: 0,
        warnings: Vec::new(),
    };
    if out.report.archive_checksum == Some(false) {
        out.warnings
            .push("the archive does not match its .sha256 file".into());
    }
    if let Some(conn) = &req.connection {
        let mut params = ImportParams::new(conn.config()?, path);
        params.dry_run = true;
        params.shift_to_now = req.shift_to_now;
        params.state_path = Some(
            std::env::temp_dir().join(format!("spillway-analyze-{:016x}.json", fastrand::u64(..))),
        );
        let o = bundle::ImportJob::start(params, None).wait().await?;
        out.retention_cutoff_ms = o.retention_cutoff_ms;
        out.retention_source = o.retention_source.clone();
        out.skipped_samples = o.skipped_samples;
        if o.skipped_samples > 0 {
            out.warnings.push(format!(
                "{} samples are older than the target's retention ({}) and will be skipped; \
                 import with shift_to_now to keep them",
                o.skipped_samples,
                o.retention_source.as_deref().unwrap_or("retention")
            ));
        }
    }
    Ok(Json(out))
}

#[derive(Serialize)]
pub struct UploadResponse {
    pub path: String,
    pub name: String,
    pub bytes: u64,
}

/// Multipart framing around the file: headers, boundaries, other fields.
const MULTIPART_SLACK: u64 = 64 << 10;

async fn upload(
    State(s): State<AppState>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<UploadResponse> {
    let limits = &s.uploads;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_upload_bytes.saturating_add(MULTIPART_SLACK)) {
        return Err(too_large(limits.max_upload_bytes));
    }
    let _slot = Arc::clone(&s.upload_slots).try_acquire_owned().map_err(|_| {
        UiError(ApiError::TooManyRequests(format!(
            "{} uploads are in progress (the limit of this server); try again when one has finished",
            limits.max_concurrent
        )))
    })?;
    let mut mp = mp.map_err(|e| bad(format!("upload: {}", e.body_text())))?;
    let dir = s.confine.resolve("uploads")?;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| internal(&dir, e))?;
    let held = stored_bytes(&dir);
    if held.saturating_add(declared.unwrap_or(0)) > limits.max_stored_bytes {
        return Err(UiError(ApiError::TooManyRequests(format!(
            "uploaded bundles waiting for import hold {} of the {} this server keeps; import them, \
             or wait until the unimported ones are removed after the retention window",
            format_size(held),
            format_size(limits.max_stored_bytes)
        ))));
    }
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(|e| bad(format!("multipart body: {e}")))?;
        let Some(field) = field else {
            return Err(bad(
                "no file in the upload: send multipart/form-data with a 'file' field",
            ));
        };
        if field.name() != Some("file") {
            continue;
        }
        let original = field.file_name().unwrap_or("bundle.zip").to_string();
        let name = upload_name(&original);
        let limit = limits
            .max_upload_bytes
            .min(limits.max_stored_bytes.saturating_sub(held));
        let (final_path, bytes) = save(field, &dir, &name, limit, limits.max_upload_bytes).await?;
        return Ok(Json(UploadResponse {
            path: s.confine.relative(&final_path),
            name: original,
            bytes,
        }));
    }
}

fn too_large(max: u64) -> UiError {
    UiError(ApiError::PayloadTooLarge(format!(
        "the upload exceeds {} ({max} bytes), this server's limit (--max-upload-bytes); \
         import big bundles with `spillway import`",
        format_size(max)
    )))
}

fn internal(path: &Path, e: std::io::Error) -> UiError {
    UiError(ApiError::Internal(anyhow::anyhow!(
        "{}: {e}",
        path.display()
    )))
}

/// `<stem>-<random>.zip` (or `.jsonl`): the client's name, made safe.
fn upload_name(original: &str) -> String {
    let ext = if original.ends_with(".jsonl") {
        "jsonl"
    } else {
        "zip"
    };
    let stem: String = Path::new(original)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!("{stem}-{:08x}.{ext}", fastrand::u32(..))
}

/// Writes the field under a temp name ([`AtomicFile`]: whole or not at all;
/// an error, a disconnect or a stop drops the temp file) and renames it to
/// `dir/name`; past `limit` bytes, stops with 413 (naming `max`, the
/// per-upload limit) or 429 (the store is full).
async fn save(
    mut field: axum::extract::multipart::Field<'_>,
    dir: &Path,
    name: &str,
    limit: u64,
    max: u64,
) -> Result<(PathBuf, u64), UiError> {
    let target = dir.join(name);
    let failed = |e: std::io::Error| internal(&target, e);
    let (d, n) = (dir.to_path_buf(), name.to_string());
    let mut file = off_runtime(move || AtomicFile::create(&d, &n))
        .await
        .map_err(failed)?;
    let mut bytes = 0u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| bad(format!("upload interrupted: {e}")))?
    {
        bytes += chunk.len() as u64;
        if bytes > max {
            return Err(too_large(max));
        }
        if bytes > limit {
            return Err(UiError(ApiError::TooManyRequests(
                "uploaded bundles waiting for import fill what this server keeps; import them first"
                    .into(),
            )));
        }
        file = off_runtime(move || file.write_all(&chunk).map(|()| file))
            .await
            .map_err(failed)?;
    }
    let path = off_runtime(move || file.commit()).await.map_err(failed)?;
    Ok((path, bytes))
}

/// File I/O off the async threads (what `tokio::fs` does per call).
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// What the files in `uploads/` hold now.
fn stored_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub path: String,
    pub connection: Connection,
    #[serde(default)]
    pub shift_to_now: bool,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize)]
pub struct ImportStatus {
    pub id: String,
    pub state: JobState,
    pub stage: Option<crate::bundle::ImportStage>,
    pub target_url: String,
    pub bundle: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub percent: f64,
    pub lines: u64,
    pub samples: u64,
    pub elapsed_seconds: f64,
    pub eta_seconds: Option<f64>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub runs: u32,
    pub result: Option<crate::bundle::ImportOutcome>,
}

fn import_status_of(s: &AppState, snap: ImportSnapshot) -> ImportStatus {
    let p = snap.progress.as_ref();
    let (done, total) = p.map_or((0, 0), |p| (p.bytes_done, p.bytes_total));
    let percent = match (snap.state, total) {
        (JobState::Done, _) => 100.0,
        (_, 0) => 0.0,
        _ => (done as f64 * 100.0 / total as f64).min(99.9),
    };
    ImportStatus {
        id: snap.id,
        state: snap.state,
        stage: p.map(|p| p.stage),
        target_url: snap.spec.target_url,
        bundle: s.confine.relative(&snap.spec.bundle),
        bytes_done: done,
        bytes_total: total,
        percent,
        lines: p.map_or(0, |p| p.lines),
        samples: p.map_or(0, |p| p.samples),
        elapsed_seconds: p.map_or(0.0, |p| p.elapsed.as_secs_f64()),
        eta_seconds: p.and_then(|p| p.eta).map(|d| d.as_secs_f64()),
        message: p.and_then(|p| p.message.clone()),
        error: snap.error,
        runs: snap.runs,
        result: snap.outcome,
    }
}

fn import_params(
    conn: &Connection,
    bundle: PathBuf,
    req_shift: bool,
) -> Result<ImportParams, UiError> {
    let mut params = ImportParams::new(conn.config()?, bundle);
    params.shift_to_now = req_shift;
    Ok(params)
}

async fn import_start(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ImportRequest>,
) -> ApiResult<ImportStatus> {
    let path = s.confine.existing_file(&req.path)?;
    let mut params = import_params(&req.connection, path.clone(), req.shift_to_now)?;
    params.dry_run = req.dry_run;
    let uploads = s.confine.resolve("uploads")?;
    let spec = ImportSpec {
        target_url: req.connection.public_url(),
        owned_file: path.starts_with(&uploads),
        bundle: path,
        shift_to_now: req.shift_to_now,
        dry_run: req.dry_run,
    };
    let id = s.jobs.start_import(spec, params)?;
    Ok(Json(import_status_of(&s, s.jobs.import(&id)?)))
}

async fn import_status(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<ImportStatus> {
    Ok(Json(import_status_of(&s, s.jobs.import(&q.id)?)))
}

async fn import_resume(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ResumeRequest>,
) -> ApiResult<ImportStatus> {
    let snap = s.jobs.import(&req.id)?;
    let params = import_params(
        &req.connection,
        snap.spec.bundle.clone(),
        snap.spec.shift_to_now,
    )?;
    s.jobs.resume_import(&req.id, params)?;
    Ok(Json(import_status_of(&s, s.jobs.import(&req.id)?)))
}
