//! The HTTP app of `spillway run`, one router per area merged into one:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the web page (`ui/`, embedded): groups, rules, destinations |
//! | `GET /api/v1/rules` | groups and rules in vmalert's JSON shape (`?type=record` or `alert` filters); `data.cluster`: the groups this member owns and the others' owners |
//! | `GET /api/v1/destinations` | queue depth, counters, last error per destination |
//! | `GET /api/v1/captures` | open and recent breach captures (`/chart?key=K`: their series) |
//! | `POST /-/reload` | re-read config and rule files: 200 with a summary, 400 with the reason |
//! | `GET /metrics` | engine, destinations, receiver and reload metrics |
//! | `GET /health` | `OK` |
//! | `POST /api/v1/write`, `/api/v1/import` | the receiver (`receiver.rs`) |
//!
//! Everything sits behind [`crate::server::guard`], the guard `spillway ui`
//! uses too: foreign `Host` names and cross-site writes are refused (the
//! receiver's clients, vmagent and Prometheus, send no `Origin` and are
//! unaffected), the page's own reload carries the CSRF token, and with
//! `--http.auth` every route but `/health` asks for basic auth.

use super::engine::EngineHandle;
use super::receiver;
use super::reload::Reloader;
use super::route::Pipeline;
use crate::server::guard::with_csrf_meta;
use crate::server::Policy;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
/// The look shared with `spillway ui`, then what only this page needs.
const STYLE_CSS: &str = concat!(
    include_str!("../ui/assets/ui.css"),
    include_str!("ui/style.css")
);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub pipeline: Arc<Pipeline>,
    pub engine: EngineHandle,
    pub reloader: Arc<Reloader>,
    pub captures: Option<super::capture::Captures>,
}

/// The whole app: web page, APIs, reload, metrics, health and receiver.
pub fn app(state: ApiState, limits: receiver::Limits, policy: Arc<Policy>) -> Router {
    let collect_from = Arc::clone(&state.pipeline);
    let reloader = Arc::clone(&state.reloader);
    let captures = state.captures.clone();
    let collect: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
        collect_from.collect_metrics();
        if let Some(c) = &captures {
            c.collect_metrics();
        }
        reloader.metrics_text() + &reloader.cluster().metrics_text()
    });
    let page = with_csrf_meta(INDEX_HTML, policy.csrf_token());
    let router = Router::new()
        .route("/", get(move || index(page)))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
        .route("/api/v1/rules", get(rules))
        .route("/-/reload", post(reload).put(reload))
        .with_state(state.clone())
        .merge(crate::server::health::router())
        .merge(crate::server::metrics::router_with_text(collect))
        .merge(receiver::router(Arc::clone(&state.pipeline), limits))
        .merge(super::capture::api_router(state.captures.clone()))
        .merge(super::route::api_router(state.pipeline))
        .method_not_allowed_fallback(|req: Request| async move {
            crate::server::ApiError::MethodNotAllowed(format!(
                "{} is not allowed on {}",
                req.method(),
                req.uri().path()
            ))
            .into_response()
        });
    crate::server::guard::layer(router, policy)
}

async fn index(page: String) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The CSRF token is per process: never serve a cached page.
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

#[derive(serde::Deserialize)]
struct RulesQuery {
    /// vmalert's filter: `alert` or `record`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn rules(
    State(state): State<ApiState>,
    Query(q): Query<RulesQuery>,
) -> Result<axum::Json<serde_json::Value>, crate::server::ApiError> {
    let mut v = state.engine.rules_api_json();
    // Which groups this member evaluates, and who evaluates the others.
    v["data"]["cluster"] = state.reloader.cluster().api_json();
    let keep = match q.kind.as_deref() {
        None | Some("") => None,
        Some("alert") => Some("alerting"),
        Some("record") => Some("recording"),
        Some(other) => {
            return Err(crate::server::ApiError::BadRequest(format!(
                "type={other:?}: expected `alert` or `record`"
            )))
        }
    };
    if let Some(keep) = keep {
        if let Some(groups) = v["data"]["groups"].as_array_mut() {
            for g in groups {
                if let Some(rules) = g["rules"].as_array_mut() {
                    rules.retain(|r| r["type"] == keep);
                }
            }
        }
    }
    Ok(axum::Json(v))
}

async fn reload(State(state): State<ApiState>) -> Response {
    match state.reloader.reload("/-/reload").await {
        Ok(report) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.render(),
        )
            .into_response(),
        Err(problems) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "config reload refused; the previous config keeps running:\n{}\n",
                problems.join("\n")
            ),
        )
            .into_response(),
    }
}
