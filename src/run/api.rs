//! The HTTP app of `spillway run`, one router per area merged into one:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the web page (`ui/`, embedded): groups, rules, destinations |
//! | `GET /api/v1/rules` | groups and rules in vmalert's JSON shape (`?type=record` or `alert` filters); `data.cluster`: the groups this member owns and the others' owners |
//! | `GET /api/v1/destinations` | queue depth, counters, last error per destination |
//! | `POST /-/reload` | re-read config and rule files: 200 with a summary, 400 with the reason |
//! | `GET /metrics` | engine, destinations, receiver and reload metrics |
//! | `GET /health` | `OK` |
//! | `POST /api/v1/write`, `/api/v1/import` | the receiver (`receiver.rs`) |
//!
//! With `--http.auth USER:PASS` every route asks for HTTP basic auth
//! (probes and remote-write clients included: they all support it).

use super::engine::EngineHandle;
use super::receiver;
use super::reload::Reloader;
use super::route::Pipeline;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
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
}

/// `user:password` for basic auth on every route.
#[derive(Clone)]
pub struct BasicAuth {
    /// The expected `Authorization` header value.
    expected: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

impl BasicAuth {
    /// Parses `user:password` (the password may contain `:`).
    pub fn parse(s: &str) -> Result<BasicAuth, String> {
        match s.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => Ok(BasicAuth {
                expected: format!("Basic {}", base64(s.as_bytes())),
            }),
            _ => Err("--http.auth: expected USER:PASSWORD, both non-empty".into()),
        }
    }

    fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let got = header.map(|h| h.as_bytes()).unwrap_or_default();
        constant_time_eq(got, self.expected.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 with padding (RFC 4648), all basic auth needs.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn require_auth(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    if auth.allows(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"spillway\"")],
        "authentication required (--http.auth)\n",
    )
        .into_response()
}

/// The whole app: web page, APIs, reload, metrics, health and receiver.
pub fn app(state: ApiState, limits: receiver::Limits, auth: Option<BasicAuth>) -> Router {
    let collect_from = Arc::clone(&state.pipeline);
    let reloader = Arc::clone(&state.reloader);
    let collect: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
        collect_from.collect_metrics();
        reloader.metrics_text() + &reloader.cluster().metrics_text()
    });
    let router = Router::new()
        .route("/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
        .route("/api/v1/rules", get(rules))
        .route("/-/reload", post(reload).put(reload))
        .with_state(state.clone())
        .merge(crate::server::health::router())
        .merge(crate::server::metrics::router_with_text(collect))
        .merge(receiver::router(Arc::clone(&state.pipeline), limits))
        .merge(super::route::api_router(state.pipeline));
    match auth {
        Some(a) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(a),
            require_auth,
        )),
        None => router,
    }
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
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

/// Whether `listen` (host:port) is reachable only from this machine.
pub fn is_loopback(listen: &str) -> bool {
    let host = match listen.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => listen,
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pa:ss", "dXNlcjpwYTpzcw=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
    }

    #[test]
    fn auth_flag() {
        let a = BasicAuth::parse("user:pa:ss").unwrap();
        assert!(a.allows(Some(&HeaderValue::from_static("Basic dXNlcjpwYTpzcw=="))));
        assert!(!a.allows(Some(&HeaderValue::from_static("Basic dXNlcjpwYTpzc2=="))));
        assert!(!a.allows(None));
        assert!(BasicAuth::parse("user").is_err());
        assert!(BasicAuth::parse(":x").is_err());
        assert!(!format!("{a:?}").contains("dXNl"));
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1:8880"));
        assert!(is_loopback("[::1]:8880"));
        assert!(is_loopback("localhost:8880"));
        assert!(!is_loopback("0.0.0.0:8880"));
        assert!(!is_loopback(":8880"));
        assert!(!is_loopback("10.1.2.3:8880"));
    }
}
