//! `spillway ui`: the gather wizard, the import page and their REST API
//! under `/api/*`, served from one binary with embedded assets.
//!
//! The handlers (`api/`, one route table per area) only translate JSON into
//! [`crate::bundle`] calls and jobs (`jobs/`); the HTTP plumbing (errors,
//! `/health`, bind, serve, signals) and the request guard (Host, cross-site,
//! CSRF token, basic auth: [`crate::server::guard`]) are `crate::server`'s,
//! shared with `spillway run`. Every error, the router's own 404 and 405
//! included, is `{"error": "..."}`. Every path a client names (`fs/*`,
//! `download`, `analyze`) is resolved inside the staging root by
//! [`Confine`]: no `..`, no absolute path elsewhere, no symlink leading out.
//! Binding a non-loopback address without `--http.auth` is refused.

pub mod api;
pub mod assets;
pub mod jobs;

use crate::server::guard::{self, HttpOptions, Policy, ServerKind};
use crate::server::{self, ApiError};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where `spillway ui` listens unless `--http.listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default upload limit: a day of a busy cluster's bundle; bigger ones go
/// through `spillway import`.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct UiOptions {
    pub http: HttpOptions,
    pub open: bool,
    pub staging: PathBuf,
    pub jobs: jobs::JobLimits,
    pub uploads: UploadLimits,
}

/// The bounds of `/api/upload`.
#[derive(Clone, Debug)]
pub struct UploadLimits {
    /// One upload (`--max-upload-bytes`).
    pub max_upload_bytes: u64,
    /// All uploads waiting to be imported together.
    pub max_stored_bytes: u64,
    /// Uploads in progress at once.
    pub max_concurrent: usize,
}

impl UploadLimits {
    /// `max_upload_bytes` per upload, four of them waiting, two at once.
    pub fn new(max_upload_bytes: u64) -> UploadLimits {
        UploadLimits {
            max_upload_bytes,
            max_stored_bytes: max_upload_bytes.saturating_mul(4),
            max_concurrent: 2,
        }
    }
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits::new(DEFAULT_MAX_UPLOAD_BYTES)
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub jobs: Arc<jobs::JobManager>,
    pub confine: Arc<Confine>,
    pub policy: Arc<Policy>,
    pub uploads: UploadLimits,
    pub upload_slots: Arc<Semaphore>,
}

impl AppState {
    /// State over `staging` (created if missing) running real bundle jobs,
    /// guarded for loopback without auth; see [`AppState::with_options`].
    pub fn new(staging: &Path, retention: Duration) -> Result<AppState, String> {
        let limits = jobs::JobLimits {
            retention,
            ..Default::default()
        };
        AppState::with_options(
            staging,
            limits,
            UploadLimits::default(),
            Policy::local(ServerKind::Ui),
        )
    }

    pub fn with_options(
        staging: &Path,
        limits: jobs::JobLimits,
        uploads: UploadLimits,
        policy: Policy,
    ) -> Result<AppState, String> {
        let confine = Confine::new(staging)?;
        let jobs = jobs::JobManager::with_uploads(
            Arc::new(jobs::BundleRunner),
            limits,
            confine.root().join("uploads"),
        );
        Ok(AppState {
            jobs,
            confine: Arc::new(confine),
            policy: Arc::new(policy),
            upload_slots: Arc::new(Semaphore::new(uploads.max_concurrent.max(1))),
            uploads,
        })
    }
}

/// The whole app: pages, `/api/*`, `/health`, behind the guard.
pub fn router(state: AppState) -> Router {
    let policy = Arc::clone(&state.policy);
    let app = Router::new()
        .merge(assets::router(policy.csrf_token()))
        .merge(api::router())
        .merge(server::health::router())
        .merge(server::metrics::router(Arc::new(|| {})))
        .fallback(|| async {
            ApiError::NotFound(
                "no such page or API route; the API is listed at /api/openapi.json".into(),
            )
            .into_json_response()
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!(
                "{} is not allowed on {}; /api/openapi.json lists each route's methods",
                req.method(),
                req.uri().path()
            ))
            .into_json_response()
        })
        .with_state(state)
        .layer(axum::middleware::from_fn(json_errors));
    guard::layer(app, policy)
}

/// Largest error body rewrapped as JSON; longer ones are cut.
const MAX_ERROR_BODY: usize = 4 << 10;

/// Errors that did not come from our handlers (extractor rejections such as
/// a body over axum's limit) get the `{"error": ...}` shape too.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let mut out = (status, axum::Json(serde_json::json!({ "error": text }))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Paths from clients, kept inside the staging root.
#[derive(Debug)]
pub struct Confine {
    /// Canonical.
    root: PathBuf,
}

impl Confine {
    pub fn new(root: &Path) -> Result<Confine, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("--staging {}: cannot create it: {e}", root.display()))?;
        let root = root
            .canonicalize()
            .map_err(|e| format!("--staging {}: {e}", root.display()))?;
        Ok(Confine { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (relative to the root, or absolute inside it) as a canonical
    /// path inside the root; it need not exist yet, but whatever part of it
    /// exists must resolve (symlinks included) inside the root.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ApiError> {
        let p = Path::new(path.trim());
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(ApiError::BadRequest(format!(
                "path {path:?}: '..' is not allowed; give a path inside {}",
                self.root.display()
            )));
        }
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        };
        // Canonicalize the longest existing prefix, then re-append the rest.
        let mut existing = joined.clone();
        let mut rest = Vec::new();
        let canonical = loop {
            match existing.canonicalize() {
                Ok(c) => break c,
                Err(_) => match (existing.file_name(), existing.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name.to_os_string());
                        existing = parent.to_path_buf();
                    }
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "path {path:?} is outside the staging directory {}",
                            self.root.display()
                        )))
                    }
                },
            }
        };
        let mut full = canonical;
        for name in rest.into_iter().rev() {
            full.push(name);
        }
        if !full.starts_with(&self.root) {
            return Err(ApiError::BadRequest(format!(
                "path {path:?} is outside the staging directory {} (symlinks leading out are refused too)",
                self.root.display()
            )));
        }
        Ok(full)
    }

    /// Like [`resolve`](Self::resolve) for a file that must exist.
    pub fn existing_file(&self, path: &str) -> Result<PathBuf, ApiError> {
        let p = self.resolve(path)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            Ok(_) => Err(ApiError::BadRequest(format!("{path:?} is not a file"))),
            Err(_) => Err(ApiError::NotFound(format!(
                "no file {path:?} in the staging directory {}",
                self.root.display()
            ))),
        }
    }

    /// The path as clients see it: relative to the root.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

/// Binds `addr`, or the next free port above it (up to 20 tries).
async fn bind_next_free(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let mut last = String::new();
    for i in 0..20u16 {
        let Some(port) = addr.port().checked_add(i) else {
            break;
        };
        let candidate = SocketAddr::new(addr.ip(), port);
        match server::bind(&candidate.to_string()).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                if addr.port() == 0 {
                    return Err(e);
                }
                last = e;
            }
        }
    }
    Err(format!("no free port from {addr} on: {last}"))
}

/// Runs `spillway ui` until SIGINT/SIGTERM.
pub async fn run(opts: UiOptions) -> Result<(), String> {
    let (listen, policy) = opts.http.resolve(DEFAULT_LISTEN, ServerKind::Ui)?;
    let addr: SocketAddr = listen.parse().map_err(|e| {
        format!("--http.listen {listen:?}: {e}; expected IP:PORT such as 127.0.0.1:8080")
    })?;
    let allowed = policy.allowed_hosts();
    let state = AppState::with_options(&opts.staging, opts.jobs, opts.uploads, policy)?;
    let _staging_lock = claim_staging(state.confine.root())?;
    let sweeper = state.jobs.spawn_sweeper();
    let listener = bind_next_free(addr).await?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening socket: {e}"))?;
    let url = format!("http://{local}/");
    if local.port() != addr.port() && addr.port() != 0 {
        crate::outln!("port {} is busy; using {}", addr.port(), local.port());
    }
    crate::outln!(
        "spillway ui: {url}  (staging: {})",
        state.confine.root().display()
    );
    tracing::info!(hosts = %allowed, auth = state.policy.has_auth(), "serving these Host names");
    if opts.open {
        open_browser(&url);
    }
    let mut signals =
        server::shutdown::StopSignals::new().map_err(|e| format!("signal handlers: {e}"))?;
    let shutdown = async move {
        let s = signals.recv().await;
        tracing::info!("{s}: stopping the ui");
    };
    let result = server::serve(listener, router(state), shutdown).await;
    sweeper.abort();
    result.map_err(|e| format!("serving {url}: {e}"))
}

/// One `spillway ui` per staging root (its retention sweep would remove
/// another's jobs); also removes the temp files a stopped one left in
/// `uploads/`.
fn claim_staging(root: &Path) -> Result<crate::fsutil::Lock, String> {
    use crate::fsutil::{self, LockError};
    let lock = fsutil::Lock::acquire(&root.join(".lock")).map_err(|e| match e {
        LockError::Held { .. } => format!(
            "--staging {} is in use by another spillway ui ({}); give each its own --staging",
            root.display(),
            e.holder()
        ),
        other => format!("--staging: {other}"),
    })?;
    let uploads = root.join("uploads");
    fsutil::remove_stale_temps(&uploads).map_err(|e| format!("{}: {e}", uploads.display()))?;
    Ok(lock)
}

fn open_browser(url: &str) {
    for cmd in ["xdg-open", "open"] {
        if std::process::Command::new(cmd)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
    crate::errln!("note: could not open a browser; visit {url}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confine_paths() {
        let dir = tempfile::tempdir().unwrap();
        let c = Confine::new(&dir.path().join("root")).unwrap();
        let root = c.root().to_path_buf();
        std::fs::create_dir(root.join("a")).unwrap();
        assert_eq!(c.resolve("a").unwrap(), root.join("a"));
        assert_eq!(c.resolve("a/new/x").unwrap(), root.join("a/new/x"));
        assert_eq!(c.resolve("").unwrap(), root);
        assert!(c.resolve(root.join("a").to_str().unwrap()).is_ok());
        assert!(c.resolve("../x").is_err());
        assert!(c.resolve("a/../../x").is_err());
        assert!(c.resolve("/etc").is_err());
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        let e = c.resolve("out/x").unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        assert!(c.existing_file("a").is_err());
    }

    #[tokio::test]
    async fn next_free_port() {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = first.local_addr().unwrap();
        let l = bind_next_free(taken).await.unwrap();
        assert!(l.local_addr().unwrap().port() > taken.port());
    }

    #[tokio::test]
    async fn errors_from_outside_our_handlers_become_json() {
        use tower::ServiceExt;
        let app = Router::new()
            .route(
                "/text",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "length limit exceeded",
                    )
                }),
            )
            .route(
                "/empty",
                axum::routing::get(|| async { axum::http::StatusCode::METHOD_NOT_ALLOWED }),
            )
            .layer(axum::middleware::from_fn(json_errors));
        for (uri, status, message) in [
            ("/text", 413, "length limit exceeded"),
            ("/empty", 405, "method not allowed"),
        ] {
            let resp = app
                .clone()
                .oneshot(Request::get(uri).body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status);
            let body = axum::body::to_bytes(resp.into_body(), 1 << 10)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], message);
        }
    }

    #[tokio::test]
    async fn non_loopback_needs_auth() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(UiOptions {
            http: HttpOptions {
                listen: Some("0.0.0.0:0".into()),
                ..Default::default()
            },
            open: false,
            staging: dir.path().into(),
            jobs: Default::default(),
            uploads: Default::default(),
        })
        .await
        .unwrap_err();
        assert!(e.contains("--http.auth"), "{e}");
    }
}
