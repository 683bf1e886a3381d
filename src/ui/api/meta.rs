//! `health`, `config` (what the pages and scripts need to know, the CSRF
//! token included) and the OpenAPI document.

use crate::model::time::now_ms;
use crate::ui::jobs::MAX_RUNNING_EXPORTS;
use crate::ui::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use serde::Serialize;

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/config"),
    ("GET", "/api/openapi.json"),
];

pub(super) fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/api/health" => get(health),
        "/api/config" => get(config),
        "/api/openapi.json" => get(openapi),
        other => unreachable!("route {other} in ROUTES has no handler"),
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
pub struct ConfigResponse {
    pub version: &'static str,
    pub staging_root: String,
    pub max_running_exports: usize,
    pub max_queued_exports: usize,
    pub max_running_imports: usize,
    pub retention_seconds: u64,
    pub max_upload_bytes: u64,
    pub auth: bool,
    /// Send it back in `X-Spillway-CSRF` with every request that changes
    /// something and is not `application/json` (uploads).
    pub csrf_token: String,
    pub now_ms: i64,
}

async fn config(State(s): State<AppState>) -> Json<ConfigResponse> {
    let limits = s.jobs.limits();
    Json(ConfigResponse {
        version: env!("CARGO_PKG_VERSION"),
        staging_root: s.confine.root().display().to_string(),
        max_running_exports: MAX_RUNNING_EXPORTS,
        max_queued_exports: limits.max_queued_exports,
        max_running_imports: limits.max_running_imports,
        retention_seconds: s.jobs.retention().as_secs(),
        max_upload_bytes: s.uploads.max_upload_bytes,
        auth: s.policy.has_auth(),
        csrf_token: s.policy.csrf_token().to_string(),
        now_ms: now_ms(),
    })
}

async fn openapi() -> Response {
    (
        [("Content-Type", "application/json")],
        crate::ui::assets::OPENAPI_JSON,
    )
        .into_response()
}
