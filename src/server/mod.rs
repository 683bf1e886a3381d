//! The axum pieces both spillway HTTP servers (`run`, `ui`) share: one
//! error type that answers briefly and logs fully, `/health`, `/metrics`,
//! signal handling for graceful shutdown and reload, and the one request
//! guard and auth policy (`guard`, `auth`: Host, cross-site, CSRF token,
//! basic auth) with their flags. Uses only `model` and `telemetry`; each
//! command builds its own router from these parts plus its own routes
//! (realworld-axum's `api_router` shape) and puts the guard in front.

pub mod auth;
pub mod error;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod shutdown;

pub use auth::BasicAuth;
pub use error::ApiError;
pub use guard::{HttpOptions, Policy, ServerKind, CSRF_HEADER};

/// `bytes` random bytes from the operating system's generator, as hex:
/// CSRF tokens and job ids, which must not be guessable.
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| format!("the operating system's random generator failed: {e}"))?;
    Ok(crate::model::hex(&buf))
}

use std::future::Future;
use std::net::SocketAddr;

/// Binds `addr`, naming it in the error ("127.0.0.1:8880: address in use").
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(listener)
}

/// Serves `app` until `shutdown` resolves, then lets requests in progress
/// finish (new connections are refused at once).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
