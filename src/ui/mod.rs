//! `spillway ui`: the gather wizard, the import page and their REST API
//! under `/api/*`, served from one binary with embedded assets.
//!
//! The handlers (`api.rs`) only translate JSON into [`crate::bundle`] calls
//! and jobs (`jobs.rs`); the HTTP plumbing (errors, `/health`, bind, serve,
//! signals) is `crate::server`'s. Every path a client names (`fs/*`,
//! `download`, `analyze`, a staging directory) is resolved inside the
//! staging roots by [`Confine`]: no `..`, no absolute path elsewhere, no
//! symlink leading out. With `--auth`, every route but `/health` needs
//! HTTP basic auth; binding a non-loopback address without it is refused.

pub mod api;
pub mod assets;
pub mod jobs;

use crate::server::{self, ApiError};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Default upload limit: big enough for a week of a busy cluster's bundle.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 8 << 30;

#[derive(Clone, Debug)]
pub struct UiOptions {
    pub addr: String,
    pub open: bool,
    /// `user:pass`.
    pub auth: Option<String>,
    pub staging: PathBuf,
    pub retention: Duration,
    pub max_upload_bytes: u64,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub jobs: Arc<jobs::JobManager>,
    pub confine: Arc<Confine>,
    /// `Basic <base64(user:pass)>` when `--auth` was given.
    pub auth_header: Option<Arc<str>>,
    pub max_upload_bytes: u64,
}

impl AppState {
    /// State over `staging` (created if missing) running real bundle jobs.
    pub fn new(
        staging: &Path,
        auth: Option<&str>,
        retention: Duration,
    ) -> Result<AppState, String> {
        Ok(AppState {
            jobs: jobs::JobManager::new(Arc::new(jobs::BundleRunner), retention),
            confine: Arc::new(Confine::new(staging)?),
            auth_header: auth.map(|a| format!("Basic {}", base64(a.as_bytes())).into()),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        })
    }
}

/// The whole app: assets, `/api/*`, `/health`.
pub fn router(state: AppState) -> Router {
    let auth = state.auth_header.clone();
    let app = Router::new()
        .merge(assets::router())
        .merge(api::router(state.clone()))
        .merge(server::metrics::router(Arc::new(|| {})))
        .fallback(|| async {
            ApiError::NotFound(
                "no such page or API route; the API is listed at /api/openapi.json".into(),
            )
            .into_json_response()
        })
        .with_state(state);
    let app = match auth {
        Some(expected) => app.layer(axum::middleware::from_fn(move |req, next| {
            require_auth(Arc::clone(&expected), req, next)
        })),
        None => app,
    };
    app.merge(server::health::router())
}

async fn require_auth(expected: Arc<str>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return next.run(req).await;
    }
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::WWW_AUTHENTICATE,
            "Basic realm=\"spillway ui\"",
        )],
        axum::Json(serde_json::json!({
            "error": "this spillway ui needs a user name and password (its --auth)"
        })),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
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

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
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
    let addr: SocketAddr = opts.addr.parse().map_err(|e| {
        format!(
            "--addr {:?}: {e}; expected IP:PORT such as 127.0.0.1:8080",
            opts.addr
        )
    })?;
    if let Some(a) = &opts.auth {
        if !a.contains(':') || a.starts_with(':') {
            return Err("--auth must be USER:PASSWORD".into());
        }
    }
    if !is_loopback(&addr) && opts.auth.is_none() {
        return Err(format!(
            "--addr {addr} is reachable from other machines: add --auth USER:PASSWORD, or bind 127.0.0.1"
        ));
    }
    let mut state = AppState::new(&opts.staging, opts.auth.as_deref(), opts.retention)?;
    state.max_upload_bytes = opts.max_upload_bytes;
    let sweeper = state.jobs.spawn_sweeper();
    let listener = bind_next_free(addr).await?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening socket: {e}"))?;
    let url = format!("http://{local}/");
    if local.port() != addr.port() && addr.port() != 0 {
        println!("port {} is busy; using {}", addr.port(), local.port());
    }
    println!(
        "spillway ui: {url}  (staging: {})",
        state.confine.root().display()
    );
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
    eprintln!("note: could not open a browser; visit {url}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

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
    async fn non_loopback_needs_auth() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(UiOptions {
            addr: "0.0.0.0:0".into(),
            open: false,
            auth: None,
            staging: dir.path().into(),
            retention: jobs::DEFAULT_RETENTION,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        })
        .await
        .unwrap_err();
        assert!(e.contains("--auth"), "{e}");
    }
}
