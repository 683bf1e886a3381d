//! The only HTTP client in spillway: every datasource and destination call
//! goes through [`Client`], which owns auth, tenant headers, TLS, timeouts
//! and the retry policy, so those behave the same in every mode.
//!
//! Uses only `model`. URLs are shown without credentials or query values
//! everywhere (errors, logs, metrics: [`display_url`]), and secrets print
//! as `<redacted>`.
//!
//! No answer is read without a bound: whole answers (instant queries,
//! series, build info, TSDB status, a server's `/metrics`) stop at
//! `max_response_bytes` ([`DEFAULT_MAX_RESPONSE_BYTES`] unless configured)
//! with [`ClientError::TooLarge`] naming the URL and the limit; streamed
//! range answers are parsed one series at a time and no single series may
//! exceed it; error bodies are read up to [`MAX_ERROR_BODY_BYTES`] only.
//! `/api/v1/export` streams stay unbounded streams (their reader holds one
//! line at a time).

mod auth;
mod endpoint;
mod prom_api;
mod retry;
mod spec;
mod tls;
mod vlogs_api;
mod vm_api;

pub use auth::{Auth, Secret};
pub use endpoint::{display_url, redact as redact_url, Endpoint, Tenant};
pub use prom_api::{
    duration_param, read_query_answer, seconds as seconds_param, InstantAnswer, InstantResult,
    QueryForm, QueryParams, SeriesList, SeriesStream,
};
pub use retry::RetryPolicy;
pub use spec::{BasicAuthSpec, ConnectionSpec, TlsSpec};
pub use tls::NO_ROOTS as TLS_NO_ROOTS;
pub use vlogs_api::{
    logsql_has_stats_pipe, logsql_has_time_filter, rename_stats_result, stats_query_form,
    stats_query_range_form, STATS_QUERY_PATH, STATS_QUERY_RANGE_PATH, STATS_RESULT_LABEL,
};
pub use vm_api::{BuildInfo, TsdbStatus};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

/// Default cap of an answer read whole (`max_response_bytes`).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// How much of an error answer is read: enough for any message a server
/// means to send, never a whole HTML page or an endless stream.
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Everything needed to talk to one server.
#[derive(Clone)]
pub struct ClientConfig {
    pub url: String,
    pub auth: Auth,
    pub tenant: Option<Tenant>,
    /// Extra headers, sent as given (`X-Scope-OrgID: 1`).
    pub headers: Vec<(String, Secret)>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// The largest answer read whole, and the largest series of a streamed one.
    pub max_response_bytes: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            url: String::new(),
            auth: Auth::None,
            tenant: None,
            headers: Vec::new(),
            tls_ca_file: None,
            tls_insecure_skip_verify: false,
            timeout: None,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The URL may carry a key in its query string: shown as [`display_url`] does.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &endpoint::redact(&self.url))
            .field("auth", &self.auth)
            .field("tenant", &self.tenant)
            .field("headers", &self.headers)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_insecure_skip_verify", &self.tls_insecure_skip_verify)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} did not answer within {after:?}; raise --timeout if the query is expected to be slow")]
    Timeout { url: String, after: Duration },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot read the answer of {url}: {reason}")]
    Decode { url: String, reason: String },
    /// The answer stopped before its end (the connection broke, or a proxy
    /// such as vmauth ended it cleanly when its backend went away): the
    /// same request may well succeed again.
    #[error("the answer of {url} ended early ({reason})")]
    CutShort { url: String, reason: String },
    #[error("{url} answered more than {} ({limit} bytes), the max_response_bytes limit{}; narrow the query (a shorter range, fewer series) or raise max_response_bytes (--max-response-bytes)", crate::model::size::format_size(*.limit), if *.per_series { " for one series" } else { "" })]
    TooLarge {
        url: String,
        limit: u64,
        /// The limit was hit inside one series of a streamed answer.
        per_series: bool,
    },
}

impl ClientError {
    /// Connection errors, timeouts, 5xx and 429 may succeed later; other 4xx will not.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::CutShort { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            ClientError::Config(_) | ClientError::Decode { .. } | ClientError::TooLarge { .. } => {
                false
            }
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A cheap-to-clone handle on one server.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    endpoint: Endpoint,
    auth: Auth,
    tenant: Option<Tenant>,
    headers: Vec<(String, Secret)>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    max_response_bytes: u64,
}

static CRYPTO: Once = Once::new();

fn install_crypto_provider() {
    // reqwest is built without a provider so that aws-lc-sys is not compiled; ring is ours.
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The TLS settings of a client that verifies certificates (see [`tls`]):
/// the shared system ones, or those plus the CA file's.
fn tls_settings(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let Some(ca) = ca else {
        return Ok((*tls::system()).clone());
    };
    let not_pem = |e: &dyn std::fmt::Display| {
        ClientError::Config(format!("TLS CA file {} is not PEM: {e}", ca.display()))
    };
    let pem = crate::model::input::read_bytes(ca, 16 << 20, "TLS CA file")
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| not_pem(&e))?;
    if certs.is_empty() {
        return Err(not_pem(&"no certificate in it"));
    }
    Ok((*tls::with_extra_roots(certs)).clone())
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        install_crypto_provider();
        let (endpoint, url_auth) = Endpoint::parse(&config.url)?;
        let auth = match (config.auth, url_auth) {
            (Auth::None, Some(from_url)) => from_url,
            (auth, _) => auth,
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("spillway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .no_proxy();
        builder = if config.tls_insecure_skip_verify {
            builder.danger_accept_invalid_certs(true)
        } else {
            builder.use_preconfigured_tls(tls_settings(config.tls_ca_file.as_deref())?)
        };
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoint,
                auth,
                tenant: config.tenant,
                headers: config.headers,
                timeout: config.timeout,
                retry: config.retry,
                max_response_bytes: config.max_response_bytes.max(1),
            }),
        })
    }

    /// The cap of answers read whole (`max_response_bytes`).
    pub fn max_response_bytes(&self) -> u64 {
        self.inner.max_response_bytes
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The same server, connection pool and credentials under another base
    /// path (vmauth path fix-ups such as `/rw/prometheus` → `/prometheus`).
    pub fn with_base_path(&self, path: &str) -> Client {
        let mut endpoint = self.inner.endpoint.clone();
        endpoint.set_path(path);
        self.with_endpoint(endpoint)
    }

    /// The same connection settings with another retry policy.
    pub fn with_retry(&self, retry: RetryPolicy) -> Client {
        let i = &self.inner;
        Client {
            inner: Arc::new(Inner {
                http: i.http.clone(),
                endpoint: i.endpoint.clone(),
                auth: i.auth.clone(),
                tenant: i.tenant.clone(),
                headers: i.headers.clone(),
                timeout: i.timeout,
                retry,
                max_response_bytes: i.max_response_bytes,
            }),
        }
    }

    fn with_endpoint(&self, endpoint: Endpoint) -> Client {
        let i = &self.inner;
        Client {
            inner: Arc::new(Inner {
                http: i.http.clone(),
                endpoint,
                auth: i.auth.clone(),
                tenant: i.tenant.clone(),
                headers: i.headers.clone(),
                timeout: i.timeout,
                retry: i.retry.clone(),
                max_response_bytes: i.max_response_bytes,
            }),
        }
    }

    /// A request to `path` at the server's root, ignoring the base path: the
    /// server's own pages (`/metrics`, `/health`, `/flags`) live there even
    /// when the API sits under `/select/0/prometheus`.
    pub fn request_at_root(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let mut endpoint = self.inner.endpoint.clone();
        endpoint.set_path("");
        self.with_endpoint(endpoint).request(method, path)
    }

    /// A request to `path` under the base URL with auth, tenant and headers applied.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        self.build(method, path, self.inner.timeout)
    }

    /// Like [`request`](Self::request) but without the whole-request timeout:
    /// for answers streamed for as long as they take (`/api/v1/export`); the
    /// reader bounds the silence between chunks with [`timeout`](Self::timeout).
    pub fn request_streaming(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        self.build(method, path, None)
    }

    /// The configured per-request timeout (`--timeout`).
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    fn build(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let url = self.inner.endpoint.join(path);
        let mut req = self.inner.http.request(method, url);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        req = self.inner.auth.apply(req)?;
        if let Some(t) = &self.inner.tenant {
            req = t.apply(req);
        }
        for (k, v) in &self.inner.headers {
            req = req.header(k.as_str(), v.expose());
        }
        Ok(req)
    }

    /// Sends once; non-2xx becomes [`ClientError::Status`] with the server's body.
    pub async fn send_once(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let display = self.inner.endpoint.display();
        let resp = req.send().await.map_err(|e| self.map_reqwest(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let (body, cut) = read_prefix(resp, MAX_ERROR_BODY_BYTES).await;
        let mut body = short_body(&String::from_utf8_lossy(&body));
        if cut {
            body.push_str(" (the answer was longer; only its first 64 KiB were read)");
        }
        Err(ClientError::Status {
            url: display,
            status: status.as_u16(),
            body,
        })
    }

    /// Reads a whole answer, failing with [`ClientError::TooLarge`] past
    /// `max_response_bytes` (checked against `Content-Length` first, then
    /// while the body arrives, so nothing beyond the cap is held).
    pub async fn read_body(&self, resp: reqwest::Response) -> Result<Bytes, ClientError> {
        let limit = self.inner.max_response_bytes;
        let too_large = |resp_url: &reqwest::Url| ClientError::TooLarge {
            url: display_url(resp_url),
            limit,
            per_series: false,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large(resp.url()));
        }
        let url = resp.url().clone();
        let mut body = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.map_reqwest(e))?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large(&url));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// [`read_body`](Self::read_body) as UTF-8 text (invalid bytes replaced).
    pub async fn read_text(&self, resp: reqwest::Response) -> Result<String, ClientError> {
        let bytes = self.read_body(resp).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Reads and drops an answer nobody needs (a destination's "ok"), up
    /// to [`MAX_ERROR_BODY_BYTES`], so a short answer leaves the connection
    /// reusable and a long one is not read at all.
    pub async fn discard_body(&self, resp: reqwest::Response) {
        let _ = read_prefix(resp, MAX_ERROR_BODY_BYTES).await;
    }

    /// Sends with the retry policy: `make` builds a fresh request for every attempt.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn() -> Result<reqwest::RequestBuilder, ClientError>,
    ) -> Result<reqwest::Response, ClientError> {
        self.fetch(what, make, |resp| async { Ok(resp) }).await
    }

    /// [`send`](Self::send), with the answer read by `read` inside each
    /// attempt: an answer cut short ([`ClientError::CutShort`]) is asked
    /// for again like a refused connection.
    pub async fn fetch<T, Fut>(
        &self,
        what: &str,
        make: impl Fn() -> Result<reqwest::RequestBuilder, ClientError>,
        read: impl Fn(reqwest::Response) -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        self.inner
            .retry
            .run(what, || async {
                read(self.send_once(make()?).await?).await
            })
            .await
    }

    pub(crate) fn map_reqwest(&self, e: reqwest::Error) -> ClientError {
        // reqwest's message names the full URL, query string included: ours is shown instead.
        let e = e.without_url();
        let url = self.inner.endpoint.display();
        if e.is_timeout() {
            return ClientError::Timeout {
                url,
                after: self.inner.timeout.unwrap_or_default(),
            };
        }
        if e.is_connect() || e.is_request() {
            return ClientError::Connect {
                url,
                reason: error_chain(&e),
            };
        }
        if e.is_body() {
            return ClientError::CutShort {
                url,
                reason: error_chain(&e),
            };
        }
        ClientError::Decode {
            url,
            reason: error_chain(&e),
        }
    }
}

/// The first `max` bytes of a body and whether there was more; a broken
/// stream ends the prefix (an error answer is already an error).
async fn read_prefix(resp: reqwest::Response, max: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = max - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return (out, true);
        }
        out.extend_from_slice(&chunk);
    }
    (out, false)
}

/// Why a request failed, in one line, without reqwest's copy of the URL
/// (which would show its query string): callers name the URL themselves.
pub fn reqwest_reason(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// The full `source()` chain in one line: reqwest hides the useful part ("connection refused") in it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Servers sometimes answer with whole HTML pages; keep errors readable.
/// Some echo the credentials they refused (vmauth 1.79: `cannot find the
/// provided auth token "Basic Ym9i..."`): those never reach a message.
fn short_body(body: &str) -> String {
    const MAX: usize = 2000;
    let redacted = redact_query_values(&redact_auth_tokens(body.trim()));
    let body = redacted.as_str();
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut cut = MAX;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &body[..cut], body.len())
}

/// Replaces the values of query strings in `text` with `<redacted>`:
/// VictoriaMetrics echoes the request URI in its errors (`requestURI:
/// /api/v1/write?authKey=...`), and a query value may be a credential.
fn redact_query_values(text: &str) -> String {
    let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ';' | ',' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(q) = rest.find('?') {
        out.push_str(&rest[..=q]);
        let query = &rest[q + 1..];
        let len = query.find(ends).unwrap_or(query.len());
        out.push_str(&endpoint::redact_query(&query[..len]));
        rest = &query[len..];
    }
    out.push_str(rest);
    out
}

/// Replaces the token after `Basic ` / `Bearer ` (any case) with `<redacted>`.
fn redact_auth_tokens(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &lower[i..];
        let scheme = ["basic ", "bearer "]
            .into_iter()
            .find(|p| rest.starts_with(p));
        match scheme {
            Some(p) => {
                out.push_str(&text[i..i + p.len()]);
                i += p.len();
                let token_len = text[i..]
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
                    .unwrap_or(text.len() - i);
                if token_len > 0 {
                    out.push_str("<redacted>");
                }
                i += token_len;
            }
            None => {
                let c = text[i..].chars().next().expect("inside the string");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_query_values_are_redacted() {
        let body = r#"remoteAddr: "127.0.0.1:1"; requestURI: /api/v1/write?authKey=k3y&extra_label=a; cannot decompress"#;
        let shown = short_body(body);
        assert!(!shown.contains("k3y"), "{shown}");
        assert!(
            shown.contains(
                "requestURI: /api/v1/write?authKey=<redacted>&extra_label=<redacted>; cannot"
            ),
            "{shown}"
        );
        assert_eq!(short_body("is it? yes"), "is it? yes");
    }

    #[test]
    fn echoed_credentials_are_redacted() {
        assert_eq!(
            short_body("cannot find the provided auth token \"Basic Ym9iOm5vcGU=\" in config"),
            "cannot find the provided auth token \"Basic <redacted>\" in config"
        );
        assert_eq!(
            short_body("got bearer abc.def ok"),
            "got bearer <redacted> ok"
        );
        assert_eq!(short_body("basically fine"), "basically fine");
    }
}
