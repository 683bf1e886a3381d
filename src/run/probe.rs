//! `spillway health`: asks a running `spillway run` (or `ui`) for
//! `/health` and exits 0 when it answers 200. A `FROM scratch` image has no
//! curl, so Docker's `HEALTHCHECK` and other probes call the binary itself.
//! Goes through the one HTTP client, so `--http.auth` (or
//! `SPILLWAY_HTTP_AUTH`, as the server reads it) and TLS behave as
//! everywhere else; no retries: a probe that fails is the answer.

use crate::client::{BasicAuthSpec, Client, ConnectionSpec};
use std::time::Duration;

/// What to probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Base URL of the server (`http://127.0.0.1:8880`).
    pub url: String,
    /// `USER:PASSWORD` when the server requires basic auth.
    pub auth: Option<String>,
    pub timeout: Duration,
}

/// `Ok` with the answer's first line, or why the server is not healthy.
pub async fn probe(p: &Probe) -> Result<String, String> {
    let basic_auth = p.auth.as_deref().map(|a| {
        let (user, pass) = a.split_once(':').unwrap_or((a, ""));
        BasicAuthSpec {
            username: user.to_string(),
            password: Some(pass.to_string().into()),
            password_file: None,
        }
    });
    let spec = ConnectionSpec {
        url: Some(p.url.clone()),
        basic_auth,
        timeout: Some(format!("{}ms", p.timeout.as_millis().max(1))),
        retries: Some(0),
        ..ConnectionSpec::default()
    };
    let config = spec.to_client_config("--url")?;
    let client = Client::new(config).map_err(|e| e.to_string())?;
    let req = client
        .request_at_root(reqwest::Method::GET, "/health")
        .map_err(|e| e.to_string())?;
    let resp = client.send_once(req).await.map_err(|e| e.to_string())?;
    let body = resp.text().await.unwrap_or_default();
    Ok(body.lines().next().unwrap_or("").to_string())
}
