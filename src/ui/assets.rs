//! The embedded front end: plain HTML, CSS and JavaScript compiled into the
//! binary (no build step, no CDN: the UI works offline), and the OpenAPI
//! document of `/api/*`. `ui.css` is the shared look, meant for the `run`
//! page too. The HTML pages carry the process's CSRF token in
//! `<meta name="spillway-csrf">`; `common.js` sends it back with every
//! request that changes something (see [`crate::server::guard`]).

use crate::server::guard::with_csrf_meta;
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

fn page(html: &str, token: &str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The token is per process: never serve a cached page.
            (header::CACHE_CONTROL, "no-store"),
        ],
        with_csrf_meta(html, token),
    )
}

pub fn router<S: Clone + Send + Sync + 'static>(csrf_token: &str) -> Router<S> {
    let index = page(INDEX_HTML, csrf_token);
    let import = page(IMPORT_HTML, csrf_token);
    Router::new()
        .route("/", get(move || async move { index }))
        .route("/import", get(move || async move { import }))
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
