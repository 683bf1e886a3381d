//! The routing's HTTP view, mounted on the run API server: kept apart so
//! the pipeline itself knows nothing of axum.

use super::Pipeline;
use std::sync::Arc;

/// `GET /api/v1/destinations`: each destination's queue and counters, in
/// the Prometheus API envelope (`{"status":"success","data":{...}}`) that
/// vmalert's `/api/v1/rules` uses too.
pub fn api_router(pipeline: Arc<Pipeline>) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/destinations",
        axum::routing::get(move || {
            let pipeline = Arc::clone(&pipeline);
            async move {
                axum::Json(serde_json::json!({
                    "status": "success",
                    "data": {"destinations": pipeline.statuses()},
                }))
            }
        }),
    )
}
