//! URL forms users give us: single-node `http://vm:8428`, cluster
//! `http://vmselect:8481/select/0:1/prometheus` or
//! `http://vminsert:8480/insert/0/prometheus`, any vmauth prefix, and
//! Prometheus. API paths are appended to the base as given, which is what
//! makes all of these work the same way.
//!
//! How a URL is shown is decided here, once: [`display_url`] drops the
//! credentials and the values of the query string (`?authKey=…` is how
//! vmauth and many proxies take a secret), so every log line, error, metric
//! label, status page and bundle file names a server the same safe way.

use super::{Auth, ClientError, Secret};
use url::Url;

#[derive(Clone)]
pub struct Endpoint {
    base: Url,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.display())
    }
}

impl Endpoint {
    /// Parses a base URL; credentials in it are taken out and returned as basic auth.
    pub fn parse(input: &str) -> Result<(Endpoint, Option<Auth>), ClientError> {
        let input = input.trim();
        let mut url = Url::parse(input).map_err(|e| {
            ClientError::Config(format!(
                "invalid URL {:?}: {e}; expected e.g. http://127.0.0.1:8428 or http://vmselect:8481/select/0/prometheus",
                redact(input)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "invalid URL {:?}: scheme must be http or https",
                redact(input)
            )));
        }
        let auth = if url.username().is_empty() {
            None
        } else {
            let username = percent_decode(url.username());
            let password = Secret::new(url.password().map(percent_decode).unwrap_or_default());
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Some(Auth::Basic { username, password })
        };
        let path = strip_api_suffix(url.path().trim_end_matches('/')).to_string();
        url.set_path(&path);
        Ok((Endpoint { base: url }, auth))
    }

    /// `base + path`, keeping the base's own query parameters.
    pub fn join(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!(
            "{}/{}",
            self.base.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// The URL as it may be shown: never with credentials or query values.
    pub fn display(&self) -> String {
        display_url(&self.base)
    }

    /// `base + path` as it may be shown (see [`display_url`]).
    pub fn display_at(&self, path: &str) -> String {
        display_url(&self.join(path))
    }

    /// The tenant written in a cluster URL path (`/select/1:2/...`), if any.
    pub fn path_tenant(&self) -> Option<&str> {
        let mut segs = self.base.path_segments()?;
        while let Some(s) = segs.next() {
            if s == "select" || s == "insert" {
                return segs.next();
            }
        }
        None
    }

    /// Whether the path has the cluster vmselect form.
    pub fn is_cluster_select(&self) -> bool {
        self.base.path().contains("/select/")
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Replaces the base path (query parameters of the base are kept).
    pub fn set_path(&mut self, path: &str) {
        self.base.set_path(path.trim_end_matches('/'));
    }
}

/// Users paste `.../api/v1/query` or `.../api/v1/write`; the base is what comes before.
fn strip_api_suffix(path: &str) -> &str {
    match path.find("/api/v1/") {
        Some(i) => &path[..i],
        None => path.strip_suffix("/api/v1").unwrap_or(path),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The one way a URL is shown: without `user:pass@`, without a fragment,
/// and with every query value replaced by `<redacted>` (the names stay, so
/// `?authKey=<redacted>` still says what was sent). No trailing `/`.
pub fn display_url(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path().trim_end_matches('/'));
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

/// A query string with every value replaced by `<redacted>`; the names stay.
pub fn redact_query(query: &str) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, _)) => format!("{name}=<redacted>"),
            None => p.to_string(),
        })
        .collect();
    pairs.join("&")
}

/// [`display_url`] for text that may not parse as a URL (error messages
/// about a bad URL): credentials and the query string are cut out by hand.
pub fn redact(input: &str) -> String {
    if let Ok(url) = Url::parse(input.trim()) {
        if url.has_host() {
            return display_url(&url);
        }
    }
    let mut text = match input.split_once('?') {
        Some((before, _)) => format!("{before}?<redacted>"),
        None => input.to_string(),
    };
    if let (Some(s), Some(at)) = (text.find("://"), text.find('@')) {
        if at > s {
            text = format!("{}<redacted>@{}", &text[..s + 3], &text[at + 1..]);
        }
    }
    text
}

/// A VictoriaMetrics cluster tenant, sent as `AccountID` / `ProjectID` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub account_id: u32,
    pub project_id: u32,
}

impl Tenant {
    pub fn parse(input: &str) -> Result<Tenant, String> {
        let err = || {
            format!("invalid tenant {input:?}: expected AccountID or AccountID:ProjectID, e.g. 42 or 42:7")
        };
        let (a, p) = input.split_once(':').unwrap_or((input, "0"));
        Ok(Tenant {
            account_id: a.trim().parse().map_err(|_| err())?,
            project_id: p.trim().parse().map_err(|_| err())?,
        })
    }

    pub(super) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("AccountID", self.account_id.to_string())
            .header("ProjectID", self.project_id.to_string())
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.account_id, self.project_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let (e, a) = Endpoint::parse("http://127.0.0.1:8428/").unwrap();
        assert!(a.is_none());
        assert_eq!(
            e.join("/api/v1/query").as_str(),
            "http://127.0.0.1:8428/api/v1/query"
        );
        let (e, _) = Endpoint::parse("http://vmselect:8481/select/1:2/prometheus").unwrap();
        assert_eq!(
            e.join("/api/v1/query_range").as_str(),
            "http://vmselect:8481/select/1:2/prometheus/api/v1/query_range"
        );
        assert_eq!(e.path_tenant(), Some("1:2"));
        assert!(e.is_cluster_select());
        let (e, _) = Endpoint::parse("http://vm:8428/api/v1/query?x=1").unwrap();
        assert_eq!(
            e.join("/api/v1/export").as_str(),
            "http://vm:8428/api/v1/export?x=1"
        );
    }

    #[test]
    fn credentials_leave_the_url() {
        let (e, a) = Endpoint::parse("http://bob:s%40cret@vm:8428").unwrap();
        assert_eq!(e.display(), "http://vm:8428");
        match a {
            Some(Auth::Basic { username, password }) => {
                assert_eq!(username, "bob");
                assert_eq!(password.expose(), "s@cret");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(redact("http://u:p@h:1/x"), "http://h:1/x");
        assert_eq!(redact("not a url u:p@h?k=v"), "not a url u:p@h?<redacted>");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn query_values_never_show() {
        let (e, _) =
            Endpoint::parse("https://u:p@vmauth:8427/select/0/prometheus?authKey=s3cret&x")
                .unwrap();
        let shown = e.display();
        assert_eq!(
            shown,
            "https://vmauth:8427/select/0/prometheus?authKey=<redacted>&x"
        );
        assert!(!format!("{e:?}").contains("s3cret"));
        assert_eq!(
            e.display_at("/api/v1/query"),
            "https://vmauth:8427/select/0/prometheus/api/v1/query?authKey=<redacted>&x"
        );
        // The request itself still carries the key.
        assert!(e.join("/api/v1/query").as_str().contains("authKey=s3cret"));
        assert_eq!(
            redact("http://vm:8428/?authKey=k"),
            "http://vm:8428?authKey=<redacted>"
        );
    }

    #[test]
    fn tenants() {
        assert_eq!(Tenant::parse("42").unwrap().to_string(), "42:0");
        assert_eq!(Tenant::parse("42:7").unwrap().project_id, 7);
        assert!(Tenant::parse("x").is_err());
    }
}
