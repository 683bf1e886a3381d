//! `GET /health`: answers `OK` while the process serves requests, as
//! VictoriaMetrics components do, so the same probes work.

use axum::routing::get;
use axum::Router;

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/health", get(|| async { "OK\n" }))
}
