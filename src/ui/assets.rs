//! The embedded front end: plain HTML, CSS and JavaScript compiled into the
//! binary (no build step, no CDN: the UI works offline), and the OpenAPI
//! document of `/api/*`. `ui.css` is the shared look, meant for the `run`
//! page too.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const IMPORT_HTML: &str = include_str!("assets/import.html");
pub const UI_CSS: &str = include_str!("assets/ui.css");
pub const COMMON_JS: &str = include_str!("assets/common.js");
pub const WIZARD_JS: &str = include_str!("assets/wizard.js");
pub const IMPORT_JS: &str = include_str!("assets/import.js");
pub const FAVICON_SVG: &str = include_str!("assets/favicon.svg");
pub const OPENAPI_JSON: &str = include_str!("assets/openapi.json");

fn asset(body: &'static str, mime: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    const HTML: &str = "text/html; charset=utf-8";
    Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, HTML) }))
        .route("/import", get(|| async { asset(IMPORT_HTML, HTML) }))
        .route(
            "/assets/ui.css",
            get(|| async { asset(UI_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/common.js",
            get(|| async { asset(COMMON_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/wizard.js",
            get(|| async { asset(WIZARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/import.js",
            get(|| async { asset(IMPORT_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset(FAVICON_SVG, "image/svg+xml") }),
        )
}
