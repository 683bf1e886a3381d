//! The one guard in front of both HTTP servers (`spillway ui` and
//! `spillway run`): what a web page in the user's browser must not be able
//! to do to a server on `localhost`, and the basic auth of [`super::auth`].
//!
//! Every request, in this order:
//! 1. **Host.** A DNS-rebinding page reaches us under its own name
//!    (`Host: evil.example:8080`), so only these hosts are served: IP
//!    literals (a page opened by IP is that origin; nothing to rebind),
//!    `localhost` and `*.localhost`, the host of the listen address, and
//!    what `--http.allowed-hosts` adds (`name`, `.suffix`, or `*` for any).
//!    A request without `Host` (HTTP/1.0) is no browser's.
//! 2. **Cross-site** (state-changing methods: all but GET, HEAD, OPTIONS).
//!    `Sec-Fetch-Site: cross-site` or `same-site` (another port of the same
//!    machine is "same-site") is refused, and so is an `Origin` that is not
//!    this server's own. vmagent, Prometheus, curl and scripts send neither
//!    header, so machine-to-machine endpoints (`/api/v1/write`, `/-/reload`
//!    by curl) are unaffected.
//! 3. **CSRF token.** A random token per process is put in the server's own
//!    pages (`<meta name="spillway-csrf">`) and sent back by their scripts
//!    in the `X-Spillway-CSRF` header. A state-changing request that comes
//!    from a browser (it carries `Origin` or `Sec-Fetch-*`) needs it; on the
//!    `ui`, so does any state-changing request a plain HTML form or a
//!    `no-cors` fetch could send (anything but `application/json`), which
//!    covers old browsers that send neither header. Scripts read the token
//!    from `GET /api/config`.
//! 4. **Basic auth** (when configured) on every route but `/health`.
//!
//! Refusals are 403 (401 for auth) with a message naming the flag to change,
//! as JSON on the `ui` and plain text on `run`, like their other errors.

use super::auth::{self, BasicAuth};
use super::ApiError;
use crate::model::secret::Secret;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The header the pages send their CSRF token in.
pub const CSRF_HEADER: &str = "x-spillway-csrf";

/// The HTTP flags both servers share.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// `--http.listen` (the command's default when `None`).
    pub listen: Option<String>,
    /// `--http.auth USER:PASSWORD`.
    pub auth: Option<Secret>,
    /// `--http.auth-file FILE`.
    pub auth_file: Option<PathBuf>,
    /// `--http.allowed-hosts`.
    pub allowed_hosts: Vec<String>,
}

/// Which server: they differ only in how they answer browsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// `spillway ui`: a JSON API driven by its pages; errors as JSON.
    Ui,
    /// `spillway run`: machine endpoints plus a status page; errors as text.
    Run,
}

/// The resolved guard of one server.
#[derive(Debug)]
pub struct Policy {
    auth: Option<BasicAuth>,
    hosts: AllowedHosts,
    csrf: Secret,
    kind: ServerKind,
}

impl HttpOptions {
    /// The listen address (`default` unless `--http.listen`) and the policy;
    /// a listen address reachable from other machines requires auth.
    pub fn resolve(&self, default: &str, kind: ServerKind) -> Result<(String, Policy), String> {
        let listen = self.listen.clone().unwrap_or_else(|| default.to_string());
        let auth = auth::resolve(self.auth.as_ref(), self.auth_file.as_deref())?;
        if auth.is_none() && !is_loopback(&listen) {
            return Err(format!(
                "--http.listen {listen} is reachable from other machines: require a password with \
                 --http.auth-file FILE (one line USER:PASSWORD) or --http.auth, or listen on 127.0.0.1"
            ));
        }
        let hosts = AllowedHosts::new(&listen, &self.allowed_hosts)?;
        let policy = Policy {
            auth,
            hosts,
            csrf: Secret::new(super::random_hex(16)?),
            kind,
        };
        Ok((listen, policy))
    }
}

impl Policy {
    /// Loopback only, no auth: tests and embedders that build a router themselves.
    pub fn local(kind: ServerKind) -> Policy {
        Policy {
            auth: None,
            hosts: AllowedHosts::default(),
            csrf: Secret::new(super::random_hex(16).unwrap_or_else(|e| panic!("{e}"))),
            kind,
        }
    }

    pub fn with_auth(mut self, auth: BasicAuth) -> Policy {
        self.auth = Some(auth);
        self
    }

    /// The token the server's own pages send back in [`CSRF_HEADER`].
    pub fn csrf_token(&self) -> &str {
        self.csrf.expose()
    }

    pub fn has_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// What `--http.allowed-hosts` and the listen address allow, for the start-up log.
    pub fn allowed_hosts(&self) -> String {
        self.hosts.describe()
    }

    fn respond(&self, refusal: Refusal) -> Response {
        match refusal {
            Refusal::Forbidden(message) => {
                ApiError::Forbidden(message).into_response_as(self.kind == ServerKind::Ui)
            }
            Refusal::Unauthorized => self.unauthorized(),
        }
    }

    fn check(&self, req: &Request) -> Result<(), Refusal> {
        let headers = req.headers();
        let host = request_host(req);
        if let Some(host) = &host {
            if !self.hosts.allows(host) {
                return Err(Refusal::Forbidden(format!(
                    "Host {:?} is not served here (a page using another name for this server is refused, \
                     against DNS rebinding); add it with --http.allowed-hosts",
                    truncate(host, 100)
                )));
            }
        }
        if is_state_changing(req.method()) {
            self.check_cross_site(headers, host.as_deref())?;
            if self.needs_token(headers) && !self.token_matches(headers) {
                return Err(Refusal::Forbidden(format!(
                    "this request needs the {CSRF_HEADER} header: the server's own pages send it; \
                     scripts read the token from GET /api/config (field csrf_token)"
                )));
            }
        }
        if req.uri().path() != "/health" {
            if let Some(auth) = &self.auth {
                if !auth.allows(headers.get(header::AUTHORIZATION)) {
                    return Err(Refusal::Unauthorized);
                }
            }
        }
        Ok(())
    }

    fn check_cross_site(&self, headers: &HeaderMap, host: Option<&str>) -> Result<(), Refusal> {
        if let Some(site) = header_str(headers, "sec-fetch-site") {
            if !matches!(site, "same-origin" | "none") {
                return Err(Refusal::Forbidden(format!(
                    "a {site} request may not change anything here: only this server's own pages may"
                )));
            }
        }
        if let Some(origin) = header_str(headers, header::ORIGIN.as_str()) {
            if !same_origin(origin, host) {
                return Err(Refusal::Forbidden(format!(
                    "a request from the page at {:?} may not change anything here: only this server's own pages may",
                    truncate(origin, 100)
                )));
            }
        }
        Ok(())
    }

    /// A browser sent it, or (`ui`) a form or `no-cors` fetch could have.
    fn needs_token(&self, headers: &HeaderMap) -> bool {
        let from_browser = ["origin", "sec-fetch-site", "sec-fetch-mode"]
            .iter()
            .any(|h| headers.contains_key(*h));
        from_browser || (self.kind == ServerKind::Ui && !is_json(headers))
    }

    fn token_matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get(CSRF_HEADER)
            .is_some_and(|v| v.as_bytes().ct_eq(self.csrf.expose().as_bytes()).into())
    }

    fn unauthorized(&self) -> Response {
        let realm = match self.kind {
            ServerKind::Ui => "Basic realm=\"spillway ui\"",
            ServerKind::Run => "Basic realm=\"spillway\"",
        };
        let message = "this server needs a user name and password (its --http.auth)";
        let mut resp = match self.kind {
            ServerKind::Ui => (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response(),
            ServerKind::Run => (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response(),
        };
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(realm));
        resp
    }
}

/// `html` with the CSRF token in a `<meta name="spillway-csrf">` of its head,
/// where the page's scripts read it.
pub fn with_csrf_meta(html: &str, token: &str) -> String {
    let meta = format!("<meta name=\"spillway-csrf\" content=\"{token}\">\n");
    match html.find("</head>") {
        Some(i) => format!("{}{meta}{}", &html[..i], &html[i..]),
        None => format!("{meta}{html}"),
    }
}

/// Puts `policy` in front of every route of `router`.
pub fn layer(router: Router, policy: Arc<Policy>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(policy, guard))
}

async fn guard(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    match policy.check(&req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => policy.respond(refusal),
    }
}

/// Why a request is not served.
enum Refusal {
    /// 403 with what to change.
    Forbidden(String),
    /// 401 with `WWW-Authenticate`.
    Unauthorized,
}

fn is_state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

fn is_json(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// `Host`, or the authority of an absolute-form request line.
fn request_host(req: &Request) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(h) => Some(h.to_str().unwrap_or("(not text)").to_string()),
        None => req.uri().authority().map(|a| a.to_string()),
    }
}

/// `host[:port]` split; `[v6]` without its brackets; the name lower-cased.
fn split_host(authority: &str) -> (String, Option<u16>) {
    let authority = authority.trim();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (rest, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (authority, None),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (host, port.and_then(|p| p.parse().ok()))
}

/// Whether `Origin` names the server the request was sent to (`Host`).
/// Without a port in `Host` (a proxy in front), the hosts alone decide.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let Ok(url) = url::Url::parse(origin) else {
        return false; // "null" (sandboxed frames, file: pages) included
    };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    let origin_host = origin_host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let (host, port) = split_host(host);
    origin_host == host && port.is_none_or(|p| url.port_or_known_default() == Some(p))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `listen` (host:port) is reachable only from this machine.
pub fn is_loopback(listen: &str) -> bool {
    let (host, _) = split_host(listen);
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Clone, Debug, Default)]
struct AllowedHosts {
    any: bool,
    names: Vec<String>,
    /// `.example.com`: that domain's subdomains.
    suffixes: Vec<String>,
}

impl AllowedHosts {
    fn new(listen: &str, extra: &[String]) -> Result<AllowedHosts, String> {
        let mut hosts = AllowedHosts::default();
        let (listen_host, _) = split_host(listen);
        if !listen_host.is_empty() {
            hosts.names.push(listen_host);
        }
        for entry in extra.iter().flat_map(|e| e.split(',')) {
            let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            if e.is_empty() {
                continue;
            }
            if e == "*" {
                hosts.any = true;
            } else if e.starts_with('.') {
                hosts.suffixes.push(e);
            } else if e.contains(['/', '@', ' ', '*']) {
                return Err(format!(
                    "--http.allowed-hosts {entry:?}: expected a host name (spillway.example), \
                     a domain suffix (.example) or *"
                ));
            } else {
                hosts.names.push(split_host(&e).0);
            }
        }
        Ok(hosts)
    }

    fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let (host, _) = split_host(authority);
        host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.names.contains(&host)
            || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }

    fn describe(&self) -> String {
        if self.any {
            return "any".into();
        }
        let mut out = vec!["IP addresses".to_string(), "localhost".to_string()];
        out.extend(self.names.iter().cloned());
        out.extend(self.suffixes.iter().map(|s| format!("*{s}")));
        out.dedup();
        out.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn app(policy: Policy) -> Router {
        let r = Router::new()
            .route("/page", get(|| async { "page" }))
            .route("/health", get(|| async { "OK" }))
            .route("/act", post(|| async { "done" }));
        layer(r, Arc::new(policy))
    }

    async fn status(app: &Router, req: axum::http::request::Builder, body: &str) -> u16 {
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        resp.status().as_u16()
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> axum::http::request::Builder {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b
    }

    #[tokio::test]
    async fn foreign_hosts_are_refused() {
        let (_, policy) = HttpOptions {
            allowed_hosts: vec!["spillway.example,.corp.example".into()],
            ..Default::default()
        }
        .resolve("127.0.0.1:8080", ServerKind::Run)
        .unwrap();
        let app = app(policy);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:8080",
            "10.1.2.3",
            "spillway.example:8880",
            "a.corp.example",
        ] {
            assert_eq!(
                status(&app, req("GET", "/page", &[("host", ok)]), "").await,
                200,
                "{ok}"
            );
        }
        for bad in [
            "evil.example:8080",
            "corp.example.evil",
            "localhost.evil.example",
        ] {
            assert_eq!(
                status(&app, req("GET", "/page", &[("host", bad)]), "").await,
                403,
                "{bad}"
            );
        }
        // Every method, /health included.
        assert_eq!(
            status(&app, req("GET", "/health", &[("host", "evil.example")]), "").await,
            403
        );
        assert_eq!(
            status(&app, req("POST", "/act", &[("host", "evil.example")]), "").await,
            403
        );
    }

    #[tokio::test]
    async fn cross_site_writes_are_refused_machines_pass() {
        let app = app(Policy::local(ServerKind::Run));
        let host = ("host", "127.0.0.1:8880");
        // vmagent, curl: no Origin, no Sec-Fetch-*.
        assert_eq!(
            status(
                &app,
                req("POST", "/act", &[host, ("content-type", "text/plain")]),
                "x"
            )
            .await,
            200
        );
        for h in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:9999"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert_eq!(
                status(&app, req("POST", "/act", &[host, h]), "").await,
                403,
                "{h:?}"
            );
        }
        // A cross-site page may still load a GET (it cannot read the answer).
        assert_eq!(
            status(
                &app,
                req("GET", "/page", &[host, ("sec-fetch-site", "cross-site")]),
                ""
            )
            .await,
            200
        );
        // The server's own page: same origin, but without the token it is refused.
        let own = [
            host,
            ("origin", "http://127.0.0.1:8880"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(status(&app, req("POST", "/act", &own), "").await, 403);
    }

    #[tokio::test]
    async fn own_pages_send_the_token() {
        let policy = Policy::local(ServerKind::Ui);
        let token = policy.csrf_token().to_string();
        assert_eq!(token.len(), 32);
        let app = app(policy);
        let host = ("host", "localhost:8080");
        let own = [
            host,
            ("origin", "http://localhost:8080"),
            ("sec-fetch-site", "same-origin"),
        ];
        let mut with = own.to_vec();
        with.push((CSRF_HEADER, &token));
        assert_eq!(status(&app, req("POST", "/act", &with), "").await, 200);
        let mut wrong = own.to_vec();
        wrong.push((CSRF_HEADER, "0123"));
        assert_eq!(status(&app, req("POST", "/act", &wrong), "").await, 403);
        // ui: a script posting JSON needs no token; anything a form could send does.
        let json = [host, ("content-type", "application/json; charset=utf-8")];
        assert_eq!(status(&app, req("POST", "/act", &json), "{}").await, 200);
        for ct in [
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/x-www-form-urlencoded",
        ] {
            assert_eq!(
                status(&app, req("POST", "/act", &[host, ("content-type", ct)]), "").await,
                403,
                "{ct}"
            );
            let ok = [host, ("content-type", ct), (CSRF_HEADER, token.as_str())];
            assert_eq!(
                status(&app, req("POST", "/act", &ok), "").await,
                200,
                "{ct}"
            );
        }
        assert_eq!(
            status(&app, req("POST", "/act", &[host]), "").await,
            403,
            "no content type"
        );
    }

    #[tokio::test]
    async fn auth_on_everything_but_health() {
        let policy = Policy::local(ServerKind::Ui).with_auth(BasicAuth::parse("admin:pw").unwrap());
        let app = app(policy);
        let host = ("host", "127.0.0.1:1");
        assert_eq!(status(&app, req("GET", "/page", &[host]), "").await, 401);
        assert_eq!(status(&app, req("GET", "/health", &[host]), "").await, 200);
        let auth = ("authorization", "Basic YWRtaW46cHc=");
        assert_eq!(
            status(&app, req("GET", "/page", &[host, auth]), "").await,
            200
        );
        let resp = app
            .clone()
            .oneshot(req("GET", "/page", &[host]).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(resp.headers().contains_key("www-authenticate"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 10)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("--http.auth"));
    }

    #[test]
    fn non_loopback_needs_auth() {
        let opts = HttpOptions {
            listen: Some("0.0.0.0:8880".into()),
            ..Default::default()
        };
        let e = opts.resolve("127.0.0.1:8880", ServerKind::Run).unwrap_err();
        assert!(
            e.contains("--http.auth-file") && e.contains("0.0.0.0:8880"),
            "{e}"
        );
        let opts = HttpOptions {
            auth: Some(Secret::new("a:b")),
            ..opts
        };
        let (listen, policy) = opts.resolve("127.0.0.1:8880", ServerKind::Run).unwrap();
        assert_eq!(listen, "0.0.0.0:8880");
        assert!(policy.has_auth());
        let e = HttpOptions {
            allowed_hosts: vec!["http://x/".into()],
            ..Default::default()
        }
        .resolve("127.0.0.1:1", ServerKind::Ui)
        .unwrap_err();
        assert!(e.contains("--http.allowed-hosts"), "{e}");
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

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same_origin("http://[::1]:8080", Some("[::1]:8080")));
        assert!(same_origin(
            "https://spillway.example",
            Some("spillway.example")
        ));
        assert!(!same_origin(
            "http://127.0.0.1:8081",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin(
            "http://localhost:8080",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin("null", Some("127.0.0.1:8080")));
        assert!(!same_origin("http://a", None));
    }
}
