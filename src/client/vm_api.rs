//! VictoriaMetrics extras and server introspection: `/api/v1/export`,
//! `/api/v1/import` (JSON lines and native blocks), `status/buildinfo`,
//! `status/tsdb`.

use super::prom_api::ApiEnvelope;
use super::{Client, ClientError};
use crate::codec::vm_native::Layout;
use crate::codec::vm_native_write::native_probe;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct BuildInfo {
    #[serde(default)]
    pub version: String,
}

#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TsdbStatus {
    #[serde(default)]
    pub total_series: Option<u64>,
    #[serde(default)]
    pub series_count_by_metric_name: Vec<NameCount>,
}

#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct NameCount {
    pub name: String,
    pub value: u64,
}

impl Client {
    /// `/api/v1/status/buildinfo`; VictoriaMetrics answers it since v1.80, Prometheus always.
    pub async fn build_info(&self) -> Result<BuildInfo, ClientError> {
        let env: ApiEnvelope<BuildInfo> = self
            .fetch(
                "buildinfo",
                || self.request(reqwest::Method::GET, "/api/v1/status/buildinfo"),
                |resp| self.json(resp),
            )
            .await?;
        Ok(env.data)
    }

    pub async fn tsdb_status(&self) -> Result<TsdbStatus, ClientError> {
        let env: ApiEnvelope<TsdbStatus> = self
            .fetch(
                "status/tsdb",
                || self.request(reqwest::Method::GET, "/api/v1/status/tsdb"),
                |resp| self.json(resp),
            )
            .await?;
        Ok(env.data)
    }

    /// Streams `/api/v1/export` JSON lines for the matched series in
    /// `[start, end]` (both inclusive, millisecond precision). No
    /// whole-request timeout applies (see [`Client::request_streaming`]).
    pub async fn export(
        &self,
        matches: &[String],
        start_ms: i64,
        end_ms: i64,
        extra: &BTreeMap<String, String>,
    ) -> Result<reqwest::Response, ClientError> {
        self.export_at("/api/v1/export", matches, start_ms, end_ms, extra)
            .await
    }

    /// `/api/v1/export/native`: the same selection as [`Client::export`] as
    /// the storage's own blocks (see `codec::vm_native`), streamed.
    pub async fn export_native(
        &self,
        matches: &[String],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<reqwest::Response, ClientError> {
        self.export_at(
            "/api/v1/export/native",
            matches,
            start_ms,
            end_ms,
            &BTreeMap::new(),
        )
        .await
    }

    async fn export_at(
        &self,
        path: &'static str,
        matches: &[String],
        start_ms: i64,
        end_ms: i64,
        extra: &BTreeMap<String, String>,
    ) -> Result<reqwest::Response, ClientError> {
        // Built in a block: the serializer is not Send and must not live across the await.
        let body = {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for m in matches {
                s.append_pair("match[]", m);
            }
            // RFC 3339 with milliseconds: exact, where fractional unix seconds
            // go through a float on the server and can lose the last millisecond.
            s.append_pair("start", &rfc3339_ms(start_ms));
            s.append_pair("end", &rfc3339_ms(end_ms));
            for (k, v) in extra {
                s.append_pair(k, v);
            }
            s.finish()
        };
        // Streamed for as long as it takes: the reader times out on silence instead.
        self.send(path.trim_start_matches("/api/v1/"), || {
            Ok(self
                .request_streaming(reqwest::Method::POST, path)?
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.clone()))
        })
        .await
    }

    /// Sends one body of JSON lines to `/api/v1/import`, with the retry policy.
    pub async fn import(&self, body: bytes::Bytes) -> Result<(), ClientError> {
        self.post_import("import", "/api/v1/import", body).await
    }

    /// Sends one body of native blocks (`codec::vm_native_write`) to
    /// `/api/v1/import/native`, with the retry policy.
    pub async fn import_native(&self, body: bytes::Bytes) -> Result<(), ClientError> {
        self.post_import("import/native", "/api/v1/import/native", body)
            .await
    }

    /// The native layout the server reads at `/api/v1/import/native`,
    /// asked with bodies that write nothing (`codec::vm_native_write::native_probe`,
    /// the newer layout first); `None` when it reads neither or has no such
    /// route. Sent once each, without retries: a refusal is the answer.
    pub async fn native_import_layout(&self) -> Result<Option<Layout>, ClientError> {
        for layout in [Layout::Since182, Layout::Before182] {
            let probe = bytes::Bytes::from(native_probe(layout));
            let req = self
                .request(reqwest::Method::POST, "/api/v1/import/native")?
                .body(probe);
            match self.send_once(req).await {
                Ok(resp) => {
                    self.discard_body(resp).await;
                    return Ok(Some(layout));
                }
                Err(ClientError::Status {
                    status: 400 | 404 | 405 | 415 | 422,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn post_import(
        &self,
        what: &str,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<(), ClientError> {
        self.send(what, || {
            Ok(self
                .request(reqwest::Method::POST, path)?
                .body(body.clone()))
        })
        .await
        .map(|_| ())
    }
}

/// `2024-01-02T15:04:05.123Z`, always with milliseconds.
fn rfc3339_ms(ms: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => (ms / 1000).to_string(),
    }
}
