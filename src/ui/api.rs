//! The REST API under `/api/*`: request and response shapes beside their
//! handlers. The router is built from [`ROUTES`], the same list the OpenAPI
//! document is checked against, so neither can drift from the other.
//!
//! Errors are `{"error": "..."}` with a 4xx status for anything the client
//! can fix (bad JSON, an unknown job, a path outside the staging root, an
//! unreachable server); 5xx only for our own failures.

use super::jobs::{ExportSnapshot, ExportSpec, ImportSnapshot, ImportSpec, JobError, JobState};
use super::AppState;
use crate::bundle::{
    self, BundleError, Discovery, ImportParams, SafetyLimits, SampleRow, ValidateReport,
    VerifyReport,
};
use crate::client::{BasicAuthSpec, Client, ClientConfig, ConnectionSpec, TlsSpec};
use crate::fsutil::AtomicFile;
use crate::model::time::{format_rfc3339_ms, now_ms};
use crate::server::ApiError;
use crate::source::vm_export::ExportMethod;
use crate::transform::obfuscate::{ObfuscationOptions, Obfuscator};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every API route: (method, path). The router and `/api/openapi.json` both
/// follow this list (the latter checked by a test).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/config"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/validate"),
    ("POST", "/api/discover"),
    ("POST", "/api/sample"),
    ("POST", "/api/export"),
    ("POST", "/api/export/start"),
    ("GET", "/api/export/status"),
    ("POST", "/api/export/cancel"),
    ("POST", "/api/export/resume"),
    ("GET", "/api/download"),
    ("GET", "/api/fs/list"),
    ("POST", "/api/fs/check"),
    ("POST", "/api/analyze"),
    ("POST", "/api/upload"),
    ("POST", "/api/import/start"),
    ("GET", "/api/import/status"),
    ("POST", "/api/import/resume"),
];

fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/api/health" => get(health),
        "/api/config" => get(config),
        "/api/openapi.json" => get(openapi),
        "/api/validate" => post(validate),
        "/api/discover" => post(discover),
        "/api/sample" => post(sample),
        "/api/export" => post(export_sync),
        "/api/export/start" => post(export_start),
        "/api/export/status" => get(export_status),
        "/api/export/cancel" => post(export_cancel),
        "/api/export/resume" => post(export_resume),
        "/api/download" => get(download),
        "/api/fs/list" => get(fs_list),
        "/api/fs/check" => post(fs_check),
        "/api/analyze" => post(analyze),
        "/api/upload" => post(upload),
        "/api/import/start" => post(import_start),
        "/api/import/status" => get(import_status),
        "/api/import/resume" => post(import_resume),
        other => unreachable!("route {other} in ROUTES has no handler"),
    }
}

pub fn router(state: AppState) -> Router<AppState> {
    let mut r = Router::new();
    for (_, path) in ROUTES {
        let mut h = handler(path);
        if *path == "/api/upload" {
            // The handler counts bytes itself and answers 413 with a message.
            h = h.layer(axum::extract::DefaultBodyLimit::disable());
        }
        r = r.route(path, h);
    }
    let _ = state;
    r
}

/// An [`ApiError`] answered as JSON.
pub struct UiError(pub ApiError);

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError(e)
    }
}

impl From<JobError> for UiError {
    fn from(e: JobError) -> Self {
        UiError(match e {
            JobError::Unknown { .. } => ApiError::NotFound(e.to_string()),
            JobError::NotResumable { .. } => ApiError::BadRequest(e.to_string()),
        })
    }
}

impl From<BundleError> for UiError {
    fn from(e: BundleError) -> Self {
        UiError(match e {
            // Our own disk: not the client's fault.
            BundleError::Io { .. } => ApiError::Internal(anyhow::Error::new(e)),
            // The server the client named answered badly or not at all:
            // the client can fix the URL, credentials or selector.
            other => ApiError::BadRequest(other.to_string()),
        })
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        self.0.into_json_response()
    }
}

type ApiResult<T> = Result<Json<T>, UiError>;

fn bad(msg: impl Into<String>) -> UiError {
    UiError(ApiError::BadRequest(msg.into()))
}

/// `Json` whose rejections say what is wrong with the body, as JSON.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(bad(format!("request body: {}", r.body_text()))),
        }
    }
}

/// `Query` whose rejections say which parameter is wrong, as JSON.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(bad(format!("query string: {}", r.body_text()))),
        }
    }
}

/// How to reach the server. Credentials stay in this request's memory.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// `AccountID[:ProjectID]`.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// e.g. `30s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

impl Connection {
    fn config(&self) -> Result<ClientConfig, UiError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(bad(
                "connection.url is empty: give the server URL, e.g. http://127.0.0.1:8428",
            ));
        }
        let blank = |s: &Option<String>| s.as_ref().filter(|v| !v.is_empty()).cloned();
        let spec = ConnectionSpec {
            url: Some(url.to_string()),
            basic_auth: blank(&self.username).map(|u| BasicAuthSpec {
                username: u,
                password: self.password.clone(),
                password_file: None,
            }),
            bearer_token: blank(&self.bearer_token),
            tenant: blank(&self.tenant),
            tls: self.insecure_skip_verify.then_some(TlsSpec {
                ca_file: None,
                insecure_skip_verify: true,
            }),
            timeout: blank(&self.timeout),
            retries: Some(1),
            ..Default::default()
        };
        spec.to_client_config("connection").map_err(bad)
    }

    fn client(&self) -> Result<Client, UiError> {
        Client::new(self.config()?).map_err(|e| bad(format!("connection: {e}")))
    }

    /// The URL without credentials, for job entries.
    fn public_url(&self) -> String {
        match url::Url::parse(self.url.trim()) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }
}

/// What to export: selectors and/or jobs over a range.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Range start, RFC 3339 or unix seconds; or use `since`.
    #[serde(default)]
    pub from: Option<String>,
    /// Range end (default now).
    #[serde(default)]
    pub to: Option<String>,
    /// The last DURATION up to `to` (default 1h).
    #[serde(default)]
    pub since: Option<String>,
}

impl Selection {
    /// `since`/`from`/`to`, read as every command reads a range (`model::range`).
    fn range(&self) -> Result<(i64, i64), UiError> {
        let input = crate::model::range::RangeInput {
            since: self.since.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        };
        let r = input
            .resolve(
                &crate::model::range::FIELDS,
                &crate::model::range::RangeDefaults::default(),
                now_ms(),
            )
            .map_err(|e| bad(e.to_string()))?;
        if r.from_ms >= r.to_ms {
            return Err(bad(format!(
                "the range is empty: from {} is not before to {}",
                format_rfc3339_ms(r.from_ms),
                format_rfc3339_ms(r.to_ms)
            )));
        }
        Ok((r.from_ms, r.to_ms))
    }

    fn selectors(&self) -> Result<Vec<String>, UiError> {
        let sel: Vec<String> = self
            .selectors
            .iter()
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .collect();
        bundle::build_selectors(&sel, &self.jobs)
            .map_err(|e| bad(e.replace("--selector", "selectors")))
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Obfuscation {
    #[serde(default)]
    pub ips: bool,
    #[serde(default)]
    pub jobs: bool,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub drop_labels: Vec<String>,
}

impl Obfuscation {
    fn options(&self) -> Result<ObfuscationOptions, UiError> {
        let o = ObfuscationOptions {
            ips: self.ips,
            jobs: self.jobs,
            labels: self.labels.clone(),
            drop_labels: self.drop_labels.clone(),
        };
        o.check().map_err(|e| bad(format!("obfuscation: {e}")))?;
        Ok(o)
    }
}

// ---- health, config, openapi

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
pub struct ConfigResponse {
    pub version: &'static str,
    pub staging_root: String,
    pub max_running_exports: usize,
    pub retention_seconds: u64,
    pub max_upload_bytes: u64,
    pub auth: bool,
    pub now_ms: i64,
}

async fn config(State(s): State<AppState>) -> Json<ConfigResponse> {
    Json(ConfigResponse {
        version: env!("CARGO_PKG_VERSION"),
        staging_root: s.confine.root().display().to_string(),
        max_running_exports: super::jobs::MAX_RUNNING_EXPORTS,
        retention_seconds: s.jobs.retention().as_secs(),
        max_upload_bytes: s.max_upload_bytes,
        auth: s.auth_header.is_some(),
        now_ms: now_ms(),
    })
}

async fn openapi() -> Response {
    (
        [("Content-Type", "application/json")],
        super::assets::OPENAPI_JSON,
    )
        .into_response()
}

// ---- validate, discover, sample

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub connection: Connection,
}

async fn validate(ApiJson(req): ApiJson<ValidateRequest>) -> ApiResult<ValidateReport> {
    let client = req.connection.client()?;
    Ok(Json(bundle::validate(&client).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverRequest {
    pub connection: Connection,
    #[serde(default, flatten)]
    pub selection: Selection,
}

#[derive(Serialize)]
pub struct DiscoverResponse {
    pub from_ms: i64,
    pub to_ms: i64,
    #[serde(flatten)]
    pub discovery: Discovery,
}

async fn discover(ApiJson(req): ApiJson<DiscoverRequest>) -> ApiResult<DiscoverResponse> {
    let client = req.connection.client()?;
    let (from_ms, to_ms) = req.selection.range()?;
    let selectors = req.selection.selectors()?;
    let discovery = bundle::discover(&client, &selectors, from_ms, to_ms).await?;
    Ok(Json(DiscoverResponse {
        from_ms,
        to_ms,
        discovery,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRequest {
    pub connection: Connection,
    #[serde(default, flatten)]
    pub selection: Selection,
    #[serde(default)]
    pub obfuscation: Obfuscation,
    /// Rows of the preview table (default 20, at most 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Serialize)]
pub struct ChartSeries {
    pub name: String,
    /// `[timestamp_ms, value]`.
    pub points: Vec<(i64, f64)>,
}

#[derive(Serialize)]
pub struct SampleResponse {
    pub rows: Vec<SampleRow>,
    /// A few series over the range, obfuscated the same way, for the chart.
    pub chart: Vec<ChartSeries>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub notes: Vec<String>,
}

const CHART_SERIES: usize = 3;
const CHART_POINTS: i64 = 60;

async fn sample(ApiJson(req): ApiJson<SampleRequest>) -> ApiResult<SampleResponse> {
    let client = req.connection.client()?;
    let (from_ms, to_ms) = req.selection.range()?;
    let selectors = req.selection.selectors()?;
    let obf = req.obfuscation.options()?;
    let report = bundle::validate(&client).await?;
    let components = bundle::discover_components(&client, from_ms, to_ms).await;
    let method = if report.export_api {
        ExportMethod::Export
    } else {
        ExportMethod::QueryRange {
            step_ms: bundle::batch_window_ms(to_ms - from_ms, None),
        }
    };
    let limit = req.limit.unwrap_or(20).clamp(1, 200);
    let rows = bundle::sample(
        &client,
        &selectors,
        method,
        to_ms,
        limit,
        &obf,
        components.job_components(),
    )
    .await?;
    let mut notes = components.notes.clone();
    let chart = match chart(&client, &selectors, from_ms, to_ms, &obf, &components).await {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("chart: {e}"));
            Vec::new()
        }
    };
    Ok(Json(SampleResponse {
        rows,
        chart,
        from_ms,
        to_ms,
        notes,
    }))
}

/// The first few series of the selection over the range, obfuscated.
async fn chart(
    client: &Client,
    selectors: &[String],
    from_ms: i64,
    to_ms: i64,
    obf: &ObfuscationOptions,
    components: &Discovery,
) -> Result<Vec<ChartSeries>, crate::client::ClientError> {
    let union = selectors
        .iter()
        .map(|s| format!("({s})"))
        .collect::<Vec<_>>()
        .join(" or ");
    let step = ((to_ms - from_ms) / CHART_POINTS).max(1000);
    let mut stream = client
        .query_range(&union, from_ms, to_ms, step, &Default::default())
        .await?;
    let mut o = Obfuscator::new(obf.clone());
    o.set_components(components.job_components());
    let mut out = Vec::new();
    while let Some(s) = stream.recv().await {
        let mut s = s?;
        o.apply(&mut s.labels);
        out.push(ChartSeries {
            name: s.labels.to_string(),
            points: s
                .samples
                .iter()
                .filter(|p| p.value.is_finite())
                .map(|p| (p.timestamp_ms, p.value))
                .collect(),
        });
        if out.len() >= CHART_SERIES {
            break;
        }
    }
    Ok(out)
}

// ---- export

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
    /// A directory inside the staging root (default `exports/<job>`).
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
    let out_dir = match &req.staging_dir {
        Some(d) if !d.trim().is_empty() => s.confine.resolve(d)?,
        _ => s.confine.resolve("exports")?.join(format!(
            "{}-{:04x}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S"),
            fastrand::u16(..)
        )),
    };
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| bad(format!("staging_dir {}: {e}", out_dir.display())))?;
    // Saturated, never wrapped: the job refuses what is too long.
    let secs = |v: Option<u64>| {
        v.filter(|v| *v > 0)
            .map(|v| i64::try_from(v.saturating_mul(1000)).unwrap_or(i64::MAX))
    };
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
        },
        client,
    ))
}

async fn export_start(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ExportRequest>,
) -> ApiResult<ExportStatus> {
    let (spec, client) = export_spec(&s, &req)?;
    let id = s.jobs.start_export(spec, client);
    Ok(Json(export_status_of(&s, s.jobs.export(&id)?)))
}

/// Runs the export and answers when it is finished (for scripts).
async fn export_sync(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ExportRequest>,
) -> Result<Response, UiError> {
    let (spec, client) = export_spec(&s, &req)?;
    let id = s.jobs.start_export(spec, client);
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

// ---- files

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    #[serde(default)]
    pub path: String,
}

async fn download(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<Response, UiError> {
    if q.path.trim().is_empty() {
        return Err(bad("path is required: the bundle path from export/status"));
    }
    let path = s.confine.existing_file(&q.path)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| UiError(ApiError::NotFound(format!("{}: {e}", q.path))))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace('"', ""))
        .unwrap_or_else(|| "bundle.zip".into());
    let body = axum::body::Body::from_stream(tokio_util_stream(file));
    Ok((
        [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Length", len.to_string()),
            (
                "Content-Disposition",
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// A file as a stream of 64 KiB chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

#[derive(Serialize)]
pub struct FsEntry {
    pub name: String,
    pub path: String,
    pub dir: bool,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct FsListResponse {
    pub path: String,
    pub root: String,
    pub writable: bool,
    pub entries: Vec<FsEntry>,
}

async fn fs_list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<FsListResponse> {
    let dir = s.confine.resolve(&q.path)?;
    let rd = std::fs::read_dir(&dir).map_err(|e| {
        UiError(ApiError::NotFound(format!(
            "cannot list {:?}: {e}",
            if q.path.is_empty() { "." } else { &q.path }
        )))
    })?;
    let mut entries = Vec::new();
    for e in rd.flatten() {
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue;
        };
        let full = e.path();
        // A symlink pointing out of the root is not listed.
        if s.confine.resolve(&full.to_string_lossy()).is_err() {
            continue;
        }
        entries.push(FsEntry {
            name: e.file_name().to_string_lossy().into_owned(),
            path: s.confine.relative(&full),
            dir: meta.is_dir(),
            bytes: if meta.is_dir() { 0 } else { meta.len() },
        });
    }
    entries.sort_by(|a, b| (!a.dir, &a.name).cmp(&(!b.dir, &b.name)));
    Ok(Json(FsListResponse {
        path: s.confine.relative(&dir),
        root: s.confine.root().display().to_string(),
        writable: writable(&dir),
        entries,
    }))
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".spillway-probe-{:08x}", fastrand::u32(..)));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsCheckRequest {
    pub path: String,
    /// Create the directory when missing (default true).
    #[serde(default)]
    pub create: Option<bool>,
}

#[derive(Serialize)]
pub struct FsCheckResponse {
    pub path: String,
    pub exists: bool,
    pub created: bool,
    pub writable: bool,
    pub free_hint: Option<String>,
}

async fn fs_check(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<FsCheckRequest>,
) -> ApiResult<FsCheckResponse> {
    let dir = s.confine.resolve(&req.path)?;
    let mut created = false;
    if !dir.exists() && req.create.unwrap_or(true) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| bad(format!("cannot create {:?}: {e}", req.path)))?;
        created = true;
    }
    if dir.exists() && !dir.is_dir() {
        return Err(bad(format!("{:?} exists and is not a directory", req.path)));
    }
    Ok(Json(FsCheckResponse {
        path: s.confine.relative(&dir),
        exists: dir.exists(),
        created,
        writable: dir.is_dir() && writable(&dir),
        free_hint: None,
    }))
}

// ---- import

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

async fn upload(State(s): State<AppState>, mut mp: Multipart) -> ApiResult<UploadResponse> {
    let dir = s.confine.resolve("uploads")?;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        UiError(ApiError::Internal(anyhow::anyhow!(
            "{}: {e}",
            dir.display()
        )))
    })?;
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(|e| bad(format!("multipart body: {e}")))?;
        let Some(mut field) = field else {
            return Err(bad(
                "no file in the upload: send multipart/form-data with a 'file' field",
            ));
        };
        if field.name() != Some("file") {
            continue;
        }
        let original = field.file_name().unwrap_or("bundle.zip").to_string();
        let ext = if original.ends_with(".jsonl") {
            "jsonl"
        } else {
            "zip"
        };
        let stem: String = Path::new(&original)
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
        let name = format!("{stem}-{:08x}.{ext}", fastrand::u32(..));
        let internal = |e: std::io::Error| {
            UiError(ApiError::Internal(anyhow::anyhow!(
                "{}: {e}",
                dir.join(&name).display()
            )))
        };
        // Written whole or not at all: an error, a disconnect or a stop
        // drops the file, which removes its temp name.
        let (d, n) = (dir.clone(), name.clone());
        let mut file = off_runtime(move || AtomicFile::create(&d, &n))
            .await
            .map_err(internal)?;
        let mut bytes = 0u64;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| bad(format!("upload interrupted: {e}")))?
        {
            bytes += chunk.len() as u64;
            if bytes > s.max_upload_bytes {
                return Err(UiError(ApiError::PayloadTooLarge(format!(
                    "the upload exceeds {} bytes, this server's limit; import big bundles with `spillway import`",
                    s.max_upload_bytes
                ))));
            }
            file = off_runtime(move || file.write_all(&chunk).map(|()| file))
                .await
                .map_err(internal)?;
        }
        let final_path = off_runtime(move || file.commit()).await.map_err(internal)?;
        return Ok(Json(UploadResponse {
            path: s.confine.relative(&final_path),
            name: original,
            bytes,
        }));
    }
}

/// File I/O off the async threads (what `tokio::fs` does per call).
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
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
    let id = s.jobs.start_import(spec, params);
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
