//! The axum pieces every spillway HTTP server shares (`run` now, `ui`
//! later): one error type that answers briefly and logs fully, `/health`,
//! `/metrics`, and signal handling for graceful shutdown and reload. Uses
//! only `model` and `telemetry`; each command builds its own router from
//! these parts plus its own routes (realworld-axum's `api_router` shape).

pub mod error;
pub mod health;
pub mod metrics;
pub mod shutdown;

pub use error::ApiError;

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
