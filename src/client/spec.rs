//! How users describe a connection in YAML (`datasource:` of `export`,
//! datasources and destinations of `run`) and on the command line; both
//! become one [`ClientConfig`].

use super::{Auth, ClientConfig, RetryPolicy, Secret, Tenant};
use crate::model::time::parse_duration;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSpec {
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// May carry a key in its query string: shown only through `redact_url`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthSpec>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// `"Name: value"` strings, as vmalert's `-datasource.headers`; values
    /// are often credentials, so the whole string is kept secret.
    #[serde(default)]
    pub headers: Vec<Secret>,
    /// `AccountID[:ProjectID]`, sent as headers.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    /// Largest answer read whole (e.g. `64MiB`, the default).
    #[serde(default)]
    pub max_response_bytes: Option<String>,
}

impl std::fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field("url", &self.url.as_deref().map(super::redact_url))
            .field("basic_auth", &self.basic_auth)
            .field("bearer_token", &self.bearer_token)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("headers", &self.headers)
            .field("tenant", &self.tenant)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl ConnectionSpec {
    /// Fields set in `over` replace ours (command-line flags over the file).
    pub fn overlay(mut self, over: ConnectionSpec) -> ConnectionSpec {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            url,
            basic_auth,
            bearer_token,
            bearer_token_file,
            tenant,
            tls,
            timeout,
            retries,
            max_response_bytes
        );
        if !over.headers.is_empty() {
            self.headers = over.headers;
        }
        self
    }

    /// Checks and converts; `what` names the place for messages (e.g. `datasource`).
    pub fn to_client_config(&self, what: &str) -> Result<ClientConfig, String> {
        let url = self.url.clone().ok_or_else(|| {
            format!("{what}.url is missing: give the server URL, e.g. http://127.0.0.1:8428")
        })?;
        let auth = match (
            &self.basic_auth,
            &self.bearer_token,
            &self.bearer_token_file,
        ) {
            (None, None, None) => Auth::None,
            (Some(b), None, None) => {
                let password = match (&b.password, &b.password_file) {
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "{what}.basic_auth: set `password` or `password_file`, not both"
                        ))
                    }
                    (Some(p), None) => p.expose().to_string(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| {
                            format!("{what}.basic_auth.password_file {}: {e}", f.display())
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    (None, None) => String::new(),
                };
                Auth::Basic {
                    username: b.username.clone(),
                    password: Secret::new(password),
                }
            }
            (None, Some(t), None) => Auth::Bearer(t.clone()),
            (None, None, Some(f)) => Auth::BearerFile(f.clone()),
            _ => {
                return Err(format!(
                    "{what}: use only one of basic_auth, bearer_token, bearer_token_file"
                ))
            }
        };
        let tenant = self
            .tenant
            .as_deref()
            .map(Tenant::parse)
            .transpose()
            .map_err(|e| format!("{what}.tenant: {e}"))?;
        let mut headers = Vec::new();
        for h in &self.headers {
            // The value is not echoed: it is often a credential.
            let (k, v) = h.expose().split_once(':').ok_or_else(|| {
                format!("{what}.headers: an entry has no `:`; expected `Name: value`")
            })?;
            headers.push((k.trim().to_string(), Secret::new(v.trim())));
        }
        let timeout = self
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("{what}.timeout: {e}"))?;
        let mut retry = RetryPolicy::default();
        if let Some(r) = self.retries {
            retry.max_retries = Some(r);
        }
        let max_response_bytes = match &self.max_response_bytes {
            None => super::DEFAULT_MAX_RESPONSE_BYTES,
            Some(text) => match crate::model::size::parse_size(text) {
                Ok(n) if n > 0 => n,
                Ok(_) => {
                    return Err(format!(
                        "{what}.max_response_bytes: must be greater than zero"
                    ))
                }
                Err(e) => return Err(format!("{what}.max_response_bytes: {e}")),
            },
        };
        let tls = self.tls.clone().unwrap_or_default();
        Ok(ClientConfig {
            url,
            auth,
            tenant,
            headers,
            tls_ca_file: tls.ca_file,
            tls_insecure_skip_verify: tls.insecure_skip_verify,
            timeout: timeout.or(Some(std::time::Duration::from_secs(60))),
            retry,
            max_response_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_convert() {
        let file: ConnectionSpec = crate::model::yaml::from_str(
            "url: http://a:1\nbearer_token: t\ntenant: '3:4'\nheaders: ['X-A: 1']\ntimeout: 5s",
            "f",
        )
        .unwrap();
        let flags = ConnectionSpec {
            url: Some("http://b:2".into()),
            ..Default::default()
        };
        let cfg = file.overlay(flags).to_client_config("datasource").unwrap();
        assert_eq!(cfg.url, "http://b:2");
        assert!(matches!(cfg.auth, Auth::Bearer(_)));
        assert_eq!(cfg.tenant.unwrap().to_string(), "3:4");
        assert_eq!(cfg.headers[0].0, "X-A");
        assert_eq!(cfg.timeout, Some(std::time::Duration::from_secs(5)));
    }

    #[test]
    fn errors_name_the_field() {
        let e = ConnectionSpec::default()
            .to_client_config("datasource")
            .unwrap_err();
        assert!(e.contains("datasource.url"), "{e}");
        let s = ConnectionSpec {
            url: Some("http://a".into()),
            tenant: Some("x".into()),
            ..Default::default()
        };
        assert!(s.to_client_config("d").unwrap_err().contains("d.tenant"));
        let s = ConnectionSpec {
            url: Some("http://a".into()),
            max_response_bytes: Some("lots".into()),
            ..Default::default()
        };
        let e = s.to_client_config("d").unwrap_err();
        assert!(e.contains("d.max_response_bytes"), "{e}");
    }

    #[test]
    fn secrets_stay_secret_in_debug() {
        let mut file: ConnectionSpec = crate::model::yaml::from_str(
            "url: http://a:1/x?authKey=k3y\nbearer_token: t0ken\nheaders: ['Authorization: Basic c2VjcmV0']\nbasic_auth: {username: u, password: pa55}\nmax_response_bytes: 1MiB",
            "f",
        )
        .unwrap();
        let shown = format!("{file:?}");
        for secret in ["k3y", "t0ken", "c2VjcmV0", "pa55"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        file.bearer_token = None;
        let cfg = file.to_client_config("d").unwrap();
        assert_eq!(cfg.max_response_bytes, 1 << 20);
        assert!(!format!("{cfg:?}").contains("k3y"));
    }
}
