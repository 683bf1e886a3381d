//! Prometheus query API (`query`, `query_range`, `series`), answered by
//! Prometheus, VictoriaMetrics and VictoriaLogs' `stats_query*` alike, and
//! Prometheus remote read (`/api/v1/read`, raw samples).
//!
//! Range answers are parsed while they arrive: a blocking thread reads the
//! body from a channel and hands over one series at a time, so memory holds
//! one series, not the whole answer, however long the range. The reader
//! counts what it hands the parser: no series of a range answer, and no
//! answer collected whole (instant queries), may pass `max_response_bytes`.
//!
//! This file holds the requests; `decode.rs` the streaming parser they
//! hand answers to (kept apart: it is blocking serde visitor machinery,
//! and its tests feed it answers without a server).

use super::{display_url, Client, ClientError};
use crate::budget::{Held, SampleBudget, QUEUED_SAMPLES};
use crate::model::{Labels, Series};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub(crate) use decode::InstantEnvelope;
use decode::{Cap, ChannelReader, Limit};

/// Series arriving one by one; an `Err` ends the stream.
///
/// What waits in it is bounded twice: 256 series, and
/// [`QUEUED_SAMPLES`](crate::budget::QUEUED_SAMPLES) samples (each queued
/// series holds its share of the budget until it is received), so a long
/// window or a server's long series cannot make it hold more memory.
pub struct SeriesStream {
    rx: mpsc::Receiver<(Result<Series, ClientError>, Held)>,
    then: Option<SeriesMap>,
    #[cfg(test)]
    budget: SampleBudget,
}

type SeriesMap = Box<dyn FnMut(Series) -> Result<Series, ClientError> + Send>;

impl SeriesStream {
    /// The next series (or the error that ends the stream); `None` after the last.
    pub async fn recv(&mut self) -> Option<Result<Series, ClientError>> {
        let (item, _held) = self.rx.recv().await?;
        Some(match (item, &mut self.then) {
            (Ok(series), Some(then)) => then(series),
            (item, _) => item,
        })
    }

    /// The same stream with `f` applied to each series as it is received
    /// (after any earlier one): no task and no second queue in between.
    pub fn map(
        mut self,
        mut f: impl FnMut(Series) -> Result<Series, ClientError> + Send + 'static,
    ) -> SeriesStream {
        self.then = Some(match self.then.take() {
            None => Box::new(f),
            Some(mut first) => Box::new(move |s| first(s).and_then(&mut f)),
        });
        self
    }

    /// A stream of series already at hand (for fakes of a datasource).
    #[cfg(test)]
    pub(crate) fn from_series(series: Vec<Series>) -> SeriesStream {
        let (tx, rx) = mpsc::channel(series.len().max(1));
        let budget = SampleBudget::new(series.iter().map(|s| s.samples.len().max(1)).sum());
        for s in series {
            let held = budget
                .try_hold(s.samples.len())
                .expect("room for every series");
            tx.try_send((Ok(s), held)).expect("room for every series");
        }
        SeriesStream {
            rx,
            then: None,
            budget,
        }
    }

    /// Samples of the series read from the answer and not yet received.
    #[cfg(test)]
    pub(crate) fn queued_samples(&self) -> usize {
        self.budget.held()
    }
}

/// Label sets of `/api/v1/series`, cut at a limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesList {
    /// At most the limit asked for.
    pub series: Vec<Labels>,
    /// The server had more than the limit (reading stopped there).
    pub more: bool,
}

/// Longest `/api/v1/series` answer [`Client::series_bounded`] reads.
const MAX_SERIES_ANSWER_BYTES: u64 = 64 << 20;

/// Each series of an instant query carries one sample at the evaluation time.
pub type InstantResult = Vec<Series>;

/// Extra URL parameters (vmalert's group `params`, `nocache`, ...).
#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pub extra: Vec<(String, String)>,
}

/// Unix seconds as the query APIs take them: `1700000000`, or with
/// milliseconds when there are some (`1700000000.500`).
/// The form of a `/api/v1/series` request.
fn series_pairs(matches: &[String], start_ms: i64, end_ms: i64) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&str, String)> = matches.iter().map(|m| ("match[]", m.clone())).collect();
    pairs.push(("start", seconds(start_ms)));
    pairs.push(("end", seconds(end_ms)));
    pairs
}

pub fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 1000.0)
    }
}

fn form(pairs: &[(&str, String)], extra: &QueryParams) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    for (k, v) in &extra.extra {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A `step` (or other duration) parameter: whole seconds as `300s`, the
/// form vmalert sends and every Prometheus-compatible server reads, else `1500ms`.
pub fn duration_param(ms: i64) -> String {
    let ms = ms.max(1);
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Every form parameter of one query request, plus headers for this request
/// only. Callers that need full control over the parameters (vmalert's group
/// `params` replace parameters of the same name) build one of these instead
/// of using [`QueryParams`].
#[derive(Clone, Debug, Default)]
pub struct QueryForm {
    /// Sent in order, as `application/x-www-form-urlencoded`.
    pub pairs: Vec<(String, String)>,
    /// Replace the client's own headers of the same name (group `headers:`
    /// win over the datasource's, as in vmalert).
    pub headers: Vec<(String, String)>,
}

impl QueryForm {
    /// `base` parameters, then `extra` ones; a name present in `extra`
    /// drops every `base` parameter of that name (vmalert's `setReqParams`:
    /// group `params` are prior to the defaults, and may repeat a name).
    pub fn with_overrides(base: Vec<(String, String)>, extra: &[(String, String)]) -> QueryForm {
        let mut pairs: Vec<(String, String)> = base
            .into_iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .collect();
        pairs.extend(extra.iter().cloned());
        QueryForm {
            pairs,
            headers: Vec::new(),
        }
    }

    /// The first value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn encode(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

/// The answer of an instant query with the statistics VictoriaMetrics
/// (v1.90+) adds: `stats.seriesFetched`, shown as `lastSeriesFetched` by
/// vmalert. `None` when the server does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstantAnswer {
    pub series: Vec<Series>,
    pub series_fetched: Option<u64>,
}

impl Client {
    /// Instant query at `time_ms` against `path` (`/api/v1/query` or VictoriaLogs' `/select/logsql/stats_query`).
    pub async fn query_at(
        &self,
        path: &str,
        expr: &str,
        time_ms: i64,
        params: &QueryParams,
    ) -> Result<InstantResult, ClientError> {
        let body = form(
            &[("query", expr.to_string()), ("time", seconds(time_ms))],
            params,
        );
        let mut stream = self.post_form_stream(path, body, Cap::Whole).await?;
        let mut out = Vec::new();
        while let Some(s) = stream.recv().await {
            out.push(s?);
        }
        Ok(out)
    }

    pub async fn query(
        &self,
        expr: &str,
        time_ms: i64,
        params: &QueryParams,
    ) -> Result<InstantResult, ClientError> {
        self.query_at("/api/v1/query", expr, time_ms, params).await
    }

    /// Range query; series stream in as the answer is read.
    pub async fn query_range_at(
        &self,
        path: &str,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        params: &QueryParams,
    ) -> Result<SeriesStream, ClientError> {
        let body = form(
            &[
                ("query", expr.to_string()),
                ("start", seconds(start_ms)),
                ("end", seconds(end_ms)),
                ("step", format!("{}ms", step_ms.max(1))),
            ],
            params,
        );
        self.post_form_stream(path, body, Cap::PerSeries).await
    }

    pub async fn query_range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        params: &QueryParams,
    ) -> Result<SeriesStream, ClientError> {
        self.query_range_at(
            "/api/v1/query_range",
            expr,
            start_ms,
            end_ms,
            step_ms,
            params,
        )
        .await
    }

    /// Label sets of series matching any of `matches` in `[start, end]`.
    pub async fn series(
        &self,
        matches: &[String],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, ClientError> {
        let body = form(
            &series_pairs(matches, start_ms, end_ms),
            &QueryParams::default(),
        );
        let parsed: ApiEnvelope<Vec<BTreeMap<String, String>>> = self
            .fetch(
                "series",
                || {
                    Ok(self
                        .request(reqwest::Method::POST, "/api/v1/series")?
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(body.clone()))
                },
                |resp| self.json(resp),
            )
            .await?;
        Ok(parsed.data.into_iter().map(Labels::from_pairs).collect())
    }

    /// [`Client::series`] that stops reading after `limit` series, so a
    /// selector matching millions of series costs the server's first
    /// answer bytes and `limit` label sets here, not the whole list. The
    /// `limit` parameter is sent too (servers that know it stop early).
    pub async fn series_bounded(
        &self,
        matches: &[String],
        start_ms: i64,
        end_ms: i64,
        limit: usize,
    ) -> Result<SeriesList, ClientError> {
        let mut pairs = series_pairs(matches, start_ms, end_ms);
        // One more than wanted tells "exactly limit" from "more".
        pairs.push(("limit", (limit + 1).to_string()));
        let body = form(&pairs, &QueryParams::default());
        let resp = self
            .send("series", || {
                Ok(self
                    .request_streaming(reqwest::Method::POST, "/api/v1/series")?
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone()))
            })
            .await?;
        let answer_cap = Limit {
            max: self.max_response_bytes(),
            per_series: false,
            url: display_url(resp.url()),
        };
        let rx = self.body_channel(resp);
        let url = self.endpoint().display();
        tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader::new(rx, Arc::new(AtomicU64::new(0)), answer_cap);
            let mut list = SeriesList::default();
            let capped = (&mut reader).take(MAX_SERIES_ANSWER_BYTES);
            let result = stream::read_label_sets(capped, |labels| {
                if list.series.len() == limit {
                    list.more = true;
                    return false;
                }
                list.series.push(labels);
                true
            });
            match result {
                Ok(()) => Ok(list),
                Err(stream::ScanError::Stopped) => Ok(list),
                Err(e) => Err(reader.scan_error(
                    url,
                    format!("{e} (answers are read up to {MAX_SERIES_ANSWER_BYTES} bytes)"),
                )),
            }
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Prometheus remote read (`POST /api/v1/read`, `SAMPLES`): per query,
    /// in order, the raw samples of its series. The answer arrives whole,
    /// so it is refused (as [`ClientError::TooLarge`], before it is held)
    /// past `max_answer_bytes` decompressed; ask for shorter ranges then.
    pub async fn remote_read(
        &self,
        queries: &[crate::codec::remote_read::ReadQuery],
        max_answer_bytes: usize,
    ) -> Result<Vec<Vec<Series>>, ClientError> {
        use crate::codec::remote_read as rr;
        let url = self.endpoint().display();
        let body = Bytes::from(rr::encode_read_request(queries).map_err(|e| {
            ClientError::Config(format!("cannot encode the remote read request: {e}"))
        })?);
        let resp = self
            .send("remote read", || {
                Ok(self
                    .request(reqwest::Method::POST, "/api/v1/read")?
                    .header("Content-Encoding", rr::CONTENT_ENCODING)
                    .header("Content-Type", rr::CONTENT_TYPE)
                    .header(rr::VERSION_HEADER, rr::VERSION)
                    .body(body.clone()))
            })
            .await?;
        let too_large = || ClientError::TooLarge {
            url: url.clone(),
            limit: max_answer_bytes as u64,
            per_series: false,
        };
        let max_body = snap::raw::max_compress_len(max_answer_bytes).max(max_answer_bytes);
        if resp.content_length().is_some_and(|n| n > max_body as u64) {
            return Err(too_large());
        }
        let mut raw = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.map_reqwest(e))?;
            if raw.len() + chunk.len() > max_body {
                return Err(too_large());
            }
            raw.extend_from_slice(&chunk);
        }
        if snap::raw::decompress_len(&raw).is_ok_and(|n| n > max_answer_bytes) {
            return Err(too_large());
        }
        rr::decode_read_response(&raw, max_answer_bytes).map_err(|e| ClientError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })
    }

    /// Instant query with every parameter given by `form`, answered in full
    /// (instant answers are bounded by the number of series, and the
    /// statistics come after the data). The answer is read inside the
    /// retry: one cut short is asked for again.
    pub async fn query_instant_form(
        &self,
        path: &str,
        form: &QueryForm,
    ) -> Result<InstantAnswer, ClientError> {
        let envelope: InstantEnvelope = self
            .post_query_form(path, form, |resp| self.json(resp))
            .await?;
        envelope
            .into_answer()
            .map_err(|reason| ClientError::Decode {
                url: self.endpoint().display(),
                reason,
            })
    }

    /// Range query with every parameter given by `form`; series stream in as
    /// the answer is read.
    pub async fn query_range_form(
        &self,
        path: &str,
        form: &QueryForm,
    ) -> Result<SeriesStream, ClientError> {
        let resp = self
            .post_query_form(path, form, |resp| async { Ok(resp) })
            .await?;
        Ok(self.stream_series(resp, Cap::PerSeries))
    }

    /// POSTs `form` with the retry policy, the answer read by `read` inside each attempt.
    async fn post_query_form<T, Fut>(
        &self,
        path: &str,
        form: &QueryForm,
        read: impl Fn(reqwest::Response) -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let body = form.encode();
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &form.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| ClientError::Config(format!("invalid header name {k:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(v.trim())
                .map_err(|_| ClientError::Config(format!("invalid value for header {k:?}")))?;
            headers.insert(name, value);
        }
        let make = || {
            // `headers()` replaces headers of the same name set by the client.
            Ok(self
                .request(reqwest::Method::POST, path)?
                .header("Content-Type", "application/x-www-form-urlencoded")
                .headers(headers.clone())
                .body(body.clone()))
        };
        self.fetch(path, make, read).await
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = self.read_body(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let url = self.endpoint().display();
            let reason = e.to_string();
            if e.is_eof() {
                ClientError::CutShort { url, reason }
            } else {
                ClientError::Decode { url, reason }
            }
        })
    }

    async fn post_form_stream(
        &self,
        path: &str,
        body: String,
        cap: Cap,
    ) -> Result<SeriesStream, ClientError> {
        let resp = self
            .send(path, || {
                Ok(self
                    .request(reqwest::Method::POST, path)?
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone()))
            })
            .await?;
        Ok(self.stream_series(resp, cap))
    }

    /// The answer's body as a channel of chunks, fed by a task that stops
    /// (hanging up) once the receiver is dropped.
    fn body_channel(&self, resp: reqwest::Response) -> mpsc::Receiver<Result<Bytes, ClientError>> {
        let (bytes_tx, bytes_rx) = mpsc::channel::<Result<Bytes, ClientError>>(8);
        let this = self.clone();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| this.map_reqwest(e));
                let stop = chunk.is_err();
                if bytes_tx.send(chunk).await.is_err() || stop {
                    break;
                }
            }
        });
        bytes_rx
    }

    fn stream_series(&self, resp: reqwest::Response, cap: Cap) -> SeriesStream {
        let limit = Limit {
            max: self.max_response_bytes(),
            per_series: cap == Cap::PerSeries,
            url: display_url(resp.url()),
        };
        let (tx, rx) = mpsc::channel(256);
        let budget = SampleBudget::new(QUEUED_SAMPLES);
        let stream = SeriesStream {
            rx,
            then: None,
            #[cfg(test)]
            budget: budget.clone(),
        };
        let bytes_rx = self.body_channel(resp);
        let url = self.endpoint().display();
        let counted = Arc::new(AtomicU64::new(0));
        tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader::new(bytes_rx, Arc::clone(&counted), limit);
            let per_series = cap == Cap::PerSeries;
            let result = stream::read_answer(&mut reader, |series| {
                if per_series {
                    counted.store(0, Ordering::Relaxed);
                }
                // A receiver gone meanwhile dropped what it held: the wait ends.
                let held = budget.hold_blocking(series.samples.len());
                tx.blocking_send((Ok(series), held)).is_ok()
            });
            match result {
                Ok(()) | Err(stream::ScanError::Stopped) => {}
                Err(e) => {
                    let err = reader.scan_error(url, e.to_string());
                    // The receiver may be gone (the caller stopped reading): nothing left to tell.
                    let _ = tx.blocking_send((Err(err), budget.hold_blocking(0)));
                }
            }
        });
        stream
    }
}

/// Reads a query answer (matrix, vector, scalar) from `src` as the client
/// does, giving each series to `send` until it answers `false`. Public for
/// the benchmarks; the client streams answers through it.
pub fn read_query_answer(
    src: impl std::io::Read,
    send: impl FnMut(Series) -> bool,
) -> Result<(), String> {
    match stream::read_answer(src, send) {
        Ok(()) | Err(stream::ScanError::Stopped) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `{"status":"success","data":...}` for small answers parsed at once.
#[derive(serde::Deserialize)]
pub(crate) struct ApiEnvelope<T> {
    pub data: T,
}

mod decode;
mod stream;
#[cfg(test)]
mod tests;
