//! The REST API under `/api/*`, one router per area, each with its request
//! and response shapes beside their handlers:
//!
//! | area | routes |
//! |---|---|
//! | `meta` | `health`, `config`, `openapi.json` |
//! | `probe` | `validate`, `discover`, `sample` |
//! | `export` | `export`, `export/start|status|cancel|resume` |
//! | `files` | `download`, `fs/list`, `fs/check` |
//! | `import` | `analyze`, `upload`, `import/start|status|resume` |
//!
//! Each area builds its router from its own `ROUTES` list, and
//! [`routes()`] is the union the OpenAPI document is checked against, so
//! neither can drift from the other. This file holds what the areas share:
//! the JSON error type, extractors whose rejections are JSON, and the
//! connection, selection and obfuscation parts of requests.
//!
//! Errors are `{"error": "..."}` with a 4xx status for anything the client
//! can fix (bad JSON, an unknown job, a path outside the staging root, an
//! unreachable server), 429 when a bound is reached (queued exports,
//! running imports, uploads), 413 for an upload past the limit; 5xx only for
//! our own failures.

mod export;
mod files;
mod import;
mod meta;
mod probe;

pub use export::{BundleInfo, ExportRequest, ExportStatus, JobQuery, ResumeRequest};
pub use files::{FsCheckRequest, FsCheckResponse, FsEntry, FsListResponse, PathQuery};
pub use import::{AnalyzeRequest, AnalyzeResponse, ImportRequest, ImportStatus, UploadResponse};
pub use meta::ConfigResponse;
pub use probe::{
    ChartSeries, DiscoverRequest, DiscoverResponse, SampleRequest, SampleResponse, ValidateRequest,
};

use super::jobs::JobError;
use super::AppState;
use crate::bundle::{self, BundleError};
use crate::client::{BasicAuthSpec, Client, ClientConfig, ConnectionSpec, Secret, TlsSpec};
use crate::model::time::{format_rfc3339_ms, now_ms};
use crate::server::ApiError;
use crate::transform::obfuscate::ObfuscationOptions;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;

/// Every API route, (method, path), over all areas.
pub fn routes() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    [
        meta::ROUTES,
        probe::ROUTES,
        export::ROUTES,
        files::ROUTES,
        import::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// The areas' routers merged.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(area(meta::ROUTES, meta::handler))
        .merge(area(probe::ROUTES, probe::handler))
        .merge(area(export::ROUTES, export::handler))
        .merge(area(files::ROUTES, files::handler))
        .merge(area(import::ROUTES, import::handler))
}

/// An area's router: every path of its `ROUTES` with the handler its
/// `handler` names, so the route list and the router cannot drift apart.
fn area(
    routes: &[(&str, &str)],
    handler: fn(&str) -> axum::routing::MethodRouter<AppState>,
) -> Router<AppState> {
    routes
        .iter()
        .fold(Router::new(), |r, (_, path)| r.route(path, handler(path)))
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
            JobError::Busy { .. } => ApiError::TooManyRequests(e.to_string()),
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

pub(crate) type ApiResult<T> = Result<Json<T>, UiError>;

pub(crate) fn bad(msg: impl Into<String>) -> UiError {
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
    pub password: Option<Secret>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
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
    pub(crate) fn config(&self) -> Result<ClientConfig, UiError> {
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
            bearer_token: self.bearer_token.clone().filter(|t| !t.is_empty()),
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

    pub(crate) fn client(&self) -> Result<Client, UiError> {
        Client::new(self.config()?).map_err(|e| bad(format!("connection: {e}")))
    }

    /// The URL as it may be shown (no credentials, no query values), for job entries.
    pub(crate) fn public_url(&self) -> String {
        crate::client::redact_url(self.url.trim())
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
    pub(crate) fn range(&self) -> Result<(i64, i64), UiError> {
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

    pub(crate) fn selectors(&self) -> Result<Vec<String>, UiError> {
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
    pub(crate) fn options(&self) -> Result<ObfuscationOptions, UiError> {
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
