//! Step 1 of a gather: can we reach the server, are the credentials good,
//! what is it, and is `/api/v1/export` routed?
//!
//! How the flavour is decided (first match wins):
//! 1. **vmauth**: the server's own `/metrics` (at the URL's root, which vmauth
//!    serves itself, unauthenticated) has `vmauth_` metrics or the
//!    `-auth.config` flag. What sits behind it is read from the path: a
//!    `/select/<tenant>/prometheus` path means a cluster.
//! 2. **Prometheus**: `/api/v1/status/buildinfo` carries Prometheus' own
//!    fields (`revision`, `branch`, `goVersion`), or `/metrics` has
//!    `prometheus_build_info`. (VictoriaMetrics ≥ 1.80 answers buildinfo
//!    too, but with a bare Prometheus-compatible `version`.)
//! 3. **cluster vmselect**: `vm_app_version{version="vmselect-..."}` or a
//!    `/select/<tenant>/prometheus` path.
//! 4. **single**: `vm_app_version{version="victoria-metrics-..."}` or the
//!    `-storageDataPath` flag in `/metrics`.
//!
//! The version comes from `vm_app_version` (`short_version`, else the
//! `-tags-v1.2.3-` part of `version`), or Prometheus' buildinfo. Some
//! builds report an empty version (Debian's 1.79): then it is unknown.

use super::BundleError;
use crate::client::{Client, ClientError, QueryParams};
use crate::model::time::now_ms;
use crate::source::vm_export::{is_missing_route, VmExportSource};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    Single,
    Cluster,
    #[serde(rename = "vmauth")]
    VmAuth,
    Prometheus,
    Unknown,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Single => "single",
            Flavour::Cluster => "cluster",
            Flavour::VmAuth => "vmauth",
            Flavour::Prometheus => "prometheus",
            Flavour::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ValidateReport {
    /// The URL without credentials.
    pub url: String,
    pub flavour: Flavour,
    /// Behind vmauth: what the path says (cluster), if anything.
    pub backend: Option<Flavour>,
    pub version: Option<String>,
    /// The tenant written in a cluster URL path.
    pub tenant: Option<String>,
    /// Whether `/api/v1/export` answers; otherwise gathering uses `query_range`.
    pub export_api: bool,
    pub notes: Vec<String>,
}

/// Checks the server; connection and auth failures are errors that say what to fix.
pub async fn validate(client: &Client) -> Result<ValidateReport, BundleError> {
    let url = client.endpoint().display();
    let mut notes = Vec::new();
    // One quick attempt: validation should answer fast, and say why it failed.
    let quick = client.with_retry(crate::client::RetryPolicy::never());
    match quick
        .query("vector(1)", now_ms(), &QueryParams::default())
        .await
    {
        Ok(_) => {}
        Err(ClientError::Status { status, body, .. })
            if matches!(status, 401 | 403)
                || (status == 400 && body.contains("cannot find the provided auth token")) =>
        {
            return Err(BundleError::Params(format!(
                "{url} refused the credentials ({status}: {body}); check --username/--password, \
                 --bearer-token or --header"
            )))
        }
        Err(e) if is_missing_route(&e) => {
            notes.push("the query API (/api/v1/query) is not routed here".to_string())
        }
        Err(e @ (ClientError::Connect { .. } | ClientError::Timeout { .. })) => {
            return Err(BundleError::Client(e))
        }
        Err(e) => notes.push(format!("test query failed: {e}")),
    }

    let metrics = root_metrics(&quick).await;
    let app = metrics.as_deref().and_then(vm_app_version);
    let build = buildinfo(&quick).await;
    let path_cluster = client.endpoint().is_cluster_select();
    let is_vmauth = metrics.as_deref().is_some_and(|m| {
        m.lines()
            .any(|l| l.starts_with("vmauth_") || l.contains(r#"name="auth.config""#))
    }) || app.as_ref().is_some_and(|(v, _)| v.starts_with("vmauth-"));
    let prom_version = build
        .as_ref()
        .filter(|b| {
            b.contains_key("revision") || b.contains_key("goVersion") || b.contains_key("branch")
        })
        .and_then(|b| b.get("version").cloned())
        .or_else(|| metrics.as_deref().and_then(prometheus_version));

    let (flavour, backend, version) = if is_vmauth {
        let backend = if path_cluster {
            Some(Flavour::Cluster)
        } else if prom_version.is_some() {
            Some(Flavour::Prometheus)
        } else {
            None
        };
        (Flavour::VmAuth, backend, app.and_then(|a| a.1))
    } else if let Some(v) = prom_version {
        (Flavour::Prometheus, None, Some(v))
    } else if let Some((full, short)) = app {
        let f = if full.starts_with("vmselect-") || path_cluster {
            Flavour::Cluster
        } else {
            Flavour::Single
        };
        (f, None, short)
    } else if path_cluster {
        (Flavour::Cluster, None, None)
    } else if metrics
        .as_deref()
        .is_some_and(|m| m.contains(r#"name="storageDataPath""#))
    {
        (Flavour::Single, None, None)
    } else {
        (Flavour::Unknown, None, None)
    };
    if version.is_none() && flavour != Flavour::Unknown {
        notes.push("the server does not report its version".to_string());
    }

    let export_api = if flavour == Flavour::Prometheus || backend == Some(Flavour::Prometheus) {
        false
    } else {
        probe_export(&quick, &mut notes).await?
    };
    if !export_api {
        notes.push("/api/v1/export is not available: gathering falls back to query_range".into());
    }
    Ok(ValidateReport {
        url,
        flavour,
        backend,
        version,
        tenant: client.endpoint().path_tenant().map(str::to_string),
        export_api,
        notes,
    })
}

async fn root_metrics(client: &Client) -> Option<String> {
    let req = client
        .request_at_root(reqwest::Method::GET, "/metrics")
        .ok()?;
    let resp = client.send_once(req).await.ok()?;
    client.read_text(resp).await.ok()
}

async fn buildinfo(client: &Client) -> Option<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Env {
        data: BTreeMap<String, serde_json::Value>,
    }
    let req = client
        .request(reqwest::Method::GET, "/api/v1/status/buildinfo")
        .ok()?;
    let resp = client.send_once(req).await.ok()?;
    let env: Env = client.json(resp).await.ok()?;
    Some(
        env.data
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect(),
    )
}

/// `(version, short version)` of the first `vm_app_version` line.
fn vm_app_version(metrics: &str) -> Option<(String, Option<String>)> {
    let line = metrics.lines().find(|l| l.starts_with("vm_app_version{"))?;
    let version = label_value(line, "version").unwrap_or_default();
    let short = label_value(line, "short_version")
        .filter(|s| !s.is_empty())
        .or_else(|| {
            // victoria-metrics-20230313-123456-tags-v1.79.5-0-g1234abcd
            let i = version.find("-tags-")?;
            let rest = &version[i + 6..];
            Some(rest.split('-').next()?.to_string())
        });
    Some((version, short))
}

fn prometheus_version(metrics: &str) -> Option<String> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("prometheus_build_info{"))?;
    label_value(line, "version")
}

fn label_value(line: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=\"");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        // A whole label name, not the tail of another (`short_version`).
        let prev = line[..at].chars().last();
        if matches!(prev, Some('{' | ',' | ' ')) {
            let rest = &line[at + pat.len()..];
            return rest.find('"').map(|end| rest[..end].to_string());
        }
        from = at + pat.len();
    }
    None
}

/// An empty export: 200 means routed; a missing route means fall back.
async fn probe_export(client: &Client, notes: &mut Vec<String>) -> Result<bool, BundleError> {
    let now = now_ms();
    let source = VmExportSource::new(
        client.clone(),
        vec![r#"{__name__="spillway_export_probe"}"#.to_string()],
        crate::source::vm_export::ExportMethod::Export,
    );
    struct Drain;
    impl crate::source::vm_export::LineSink for Drain {
        fn line(&mut self, _: &[u8]) -> Result<crate::source::vm_export::Flow, String> {
            Ok(crate::source::vm_export::Flow::Stop)
        }
    }
    let (_, r) = source
        .fetch_window(now - 60_000, now, Drain, std::future::pending())
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.is_missing_route() => Ok(false),
        Err(e) => {
            notes.push(format!("export probe failed: {e}"));
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_metrics() {
        let m = "vm_app_version{version=\"vmselect-20230313-tags-v1.89.1-cluster-0-gabc\", short_version=\"v1.89.1\"} 1\n";
        assert_eq!(
            vm_app_version(m),
            Some((
                "vmselect-20230313-tags-v1.89.1-cluster-0-gabc".into(),
                Some("v1.89.1".into())
            ))
        );
        let m = "vm_app_version{version=\"victoria-metrics-20230313-tags-v1.79.5-0-g1\", short_version=\"\"} 1\n";
        assert_eq!(vm_app_version(m).unwrap().1.as_deref(), Some("v1.79.5"));
        let m = "vm_app_version{version=\"\", short_version=\"\"} 1\n";
        assert_eq!(vm_app_version(m), Some((String::new(), None)));
        let p = "prometheus_build_info{branch=\"HEAD\",goversion=\"go1.19\",revision=\"x\",version=\"2.42.0\"} 1\n";
        assert_eq!(prometheus_version(p).as_deref(), Some("2.42.0"));
    }
}
