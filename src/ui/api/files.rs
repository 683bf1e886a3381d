//! Files inside the staging root: `download` (streamed), `fs/list`,
//! `fs/check`. Every path goes through [`crate::ui::Confine`].

use super::{bad, ApiJson, ApiQuery, ApiResult, UiError};
use crate::server::ApiError;
use crate::ui::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/download"),
    ("GET", "/api/fs/list"),
    ("POST", "/api/fs/check"),
];

pub(super) fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/api/download" => get(download),
        "/api/fs/list" => get(fs_list),
        "/api/fs/check" => post(fs_check),
        other => unreachable!("route {other} in ROUTES has no handler"),
    }
}

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

pub(super) fn writable(dir: &Path) -> bool {
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
