//! Prometheus query API (`query`, `query_range`, `series`), answered by
//! Prometheus, VictoriaMetrics and VictoriaLogs' `stats_query*` alike, and
//! Prometheus remote read (`/api/v1/read`, raw samples).
//!
//! Range answers are parsed while they arrive: a blocking thread reads the
//! body from a channel and hands over one series at a time, so memory holds
//! one series, not the whole answer, however long the range. The reader
//! counts what it hands the parser: no series of a range answer, and no
//! answer collected whole (instant queries), may pass `max_response_bytes`.

use super::{display_url, Client, ClientError};
use crate::model::{Labels, Sample, Series};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Series arriving one by one; an `Err` ends the stream.
pub type SeriesStream = mpsc::Receiver<Result<Series, ClientError>>;

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
        let mut pairs: Vec<(&str, String)> =
            matches.iter().map(|m| ("match[]", m.clone())).collect();
        pairs.push(("start", seconds(start_ms)));
        pairs.push(("end", seconds(end_ms)));
        let body = form(&pairs, &QueryParams::default());
        let resp = self
            .send("series", || {
                Ok(self
                    .request(reqwest::Method::POST, "/api/v1/series")?
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone()))
            })
            .await?;
        let parsed: ApiEnvelope<Vec<BTreeMap<String, String>>> = self.json(resp).await?;
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
        let mut pairs: Vec<(&str, String)> =
            matches.iter().map(|m| ("match[]", m.clone())).collect();
        pairs.push(("start", seconds(start_ms)));
        pairs.push(("end", seconds(end_ms)));
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
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
                error: None,
                counted: Arc::new(AtomicU64::new(0)),
                limit: answer_cap,
            };
            let mut list = SeriesList::default();
            let result = {
                let capped = (&mut reader).take(MAX_SERIES_ANSWER_BYTES);
                let buffered = std::io::BufReader::with_capacity(64 * 1024, capped);
                let mut de = serde_json::Deserializer::from_reader(buffered);
                SeriesListSeed {
                    limit,
                    list: &mut list,
                }
                .deserialize(&mut de)
            };
            match result {
                Ok(()) => Ok(list),
                Err(_) if list.more => Ok(list),
                Err(e) => Err(reader.error.take().unwrap_or(ClientError::Decode {
                    url,
                    reason: format!("{e} (answers are read up to {MAX_SERIES_ANSWER_BYTES} bytes)"),
                })),
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
    /// statistics come after the data).
    pub async fn query_instant_form(
        &self,
        path: &str,
        form: &QueryForm,
    ) -> Result<InstantAnswer, ClientError> {
        let resp = self.post_query_form(path, form).await?;
        let bytes = self.read_body(resp).await?;
        parse_instant_answer(&bytes).map_err(|reason| ClientError::Decode {
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
        let resp = self.post_query_form(path, form).await?;
        Ok(self.stream_series(resp, Cap::PerSeries))
    }

    async fn post_query_form(
        &self,
        path: &str,
        form: &QueryForm,
    ) -> Result<reqwest::Response, ClientError> {
        let body = form.encode();
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &form.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| ClientError::Config(format!("invalid header name {k:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(v.trim())
                .map_err(|_| ClientError::Config(format!("invalid value for header {k:?}")))?;
            headers.insert(name, value);
        }
        self.send(path, || {
            // `headers()` replaces headers of the same name set by the client.
            Ok(self
                .request(reqwest::Method::POST, path)?
                .header("Content-Type", "application/x-www-form-urlencoded")
                .headers(headers.clone())
                .body(body.clone()))
        })
        .await
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = self.read_body(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: self.endpoint().display(),
            reason: format!("{e}"),
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
        let bytes_rx = self.body_channel(resp);
        let url = self.endpoint().display();
        let counted = Arc::new(AtomicU64::new(0));
        tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx: bytes_rx,
                current: Bytes::new(),
                error: None,
                counted: Arc::clone(&counted),
                limit,
            };
            let reset = (cap == Cap::PerSeries).then_some(counted.as_ref());
            let result = {
                let buffered = std::io::BufReader::with_capacity(64 * 1024, &mut reader);
                let mut de = serde_json::Deserializer::from_reader(buffered);
                ResponseSeed { tx: &tx, reset }
                    .deserialize(&mut de)
                    .and_then(|()| de.end())
            };
            if let Err(e) = result {
                let err = reader.error.take().unwrap_or(ClientError::Decode {
                    url,
                    reason: e.to_string(),
                });
                // The receiver may be gone (the caller stopped reading): nothing left to tell.
                let _ = tx.blocking_send(Err(err));
            }
        });
        rx
    }
}

/// Reads `{"status":..., "data": [{labels}, ...]}` into a [`SeriesList`],
/// failing on purpose (to stop reading) once it holds more than `limit`.
struct SeriesListSeed<'a> {
    limit: usize,
    list: &'a mut SeriesList,
}

impl<'de> DeserializeSeed<'de> for SeriesListSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SeriesListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus API answer object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut status = None::<String>;
        let mut error = None::<String>;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => map.next_value_seed(SeriesItems {
                    limit: self.limit,
                    list: &mut *self.list,
                })?,
                "status" => status = Some(map.next_value()?),
                "error" => error = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match status.as_deref() {
            Some("error") => Err(serde::de::Error::custom(format!(
                "the server answered status \"error\": {}",
                error.unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }
}

struct SeriesItems<'a> {
    limit: usize,
    list: &'a mut SeriesList,
}

impl<'de> DeserializeSeed<'de> for SeriesItems<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SeriesItems<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of label sets")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(labels) = seq.next_element::<BTreeMap<String, String>>()? {
            if self.list.series.len() == self.limit {
                self.list.more = true;
                return Err(serde::de::Error::custom("enough series"));
            }
            self.list.series.push(Labels::from_pairs(labels));
        }
        Ok(())
    }
}

/// `{"status":"success","data":...}` for small answers parsed at once.
#[derive(serde::Deserialize)]
pub(crate) struct ApiEnvelope<T> {
    pub data: T,
}

/// What `max_response_bytes` bounds in a streamed answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// The answer is collected whole (instant queries).
    Whole,
    /// The answer is handed over series by series (range queries).
    PerSeries,
}

struct Limit {
    max: u64,
    per_series: bool,
    /// Shown in the error.
    url: String,
}

struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, ClientError>>,
    current: Bytes,
    error: Option<ClientError>,
    /// Bytes handed to the parser since the start (or the last series).
    counted: Arc<AtomicU64>,
    limit: Limit,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.counted.load(Ordering::Relaxed) > self.limit.max {
            let e = ClientError::TooLarge {
                url: self.limit.url.clone(),
                limit: self.limit.max,
                per_series: self.limit.per_series,
            };
            let msg = e.to_string();
            self.error = Some(e);
            return Err(std::io::Error::other(msg));
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        self.counted.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Tx<'a> = &'a mpsc::Sender<Result<Series, ClientError>>;

/// Signals that the consumer hung up; surfaces as a serde error and ends parsing.
const CONSUMER_GONE: &str = "consumer stopped reading";

struct ResponseSeed<'a> {
    tx: Tx<'a>,
    /// Zeroed after each series when the cap is per series.
    reset: Option<&'a AtomicU64>,
}

impl<'de> DeserializeSeed<'de> for ResponseSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus API answer object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut status = None::<String>;
        let mut error = None::<String>;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => map.next_value_seed(DataSeed {
                    tx: self.tx,
                    reset: self.reset,
                })?,
                "status" => status = Some(map.next_value()?),
                "error" => error = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match status.as_deref() {
            Some("error") => Err(serde::de::Error::custom(format!(
                "the server answered status \"error\": {}",
                error.unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }
}

struct DataSeed<'a> {
    tx: Tx<'a>,
    reset: Option<&'a AtomicU64>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `data` object with resultType and result")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut result_type = String::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resultType" => result_type = map.next_value()?,
                "result" => map.next_value_seed(ResultSeed {
                    tx: self.tx,
                    reset: self.reset,
                    scalar: matches!(result_type.as_str(), "scalar" | "string"),
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ResultSeed<'a> {
    tx: Tx<'a>,
    reset: Option<&'a AtomicU64>,
    scalar: bool,
}

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.scalar {
            let ts: f64 = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::custom("scalar without timestamp"))?;
            let v: String = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::custom("scalar without value"))?;
            let sample = Sample::new(
                to_ms(ts),
                parse_value(&v).map_err(serde::de::Error::custom)?,
            );
            return self.send(Series::new(Labels::new(), vec![sample]));
        }
        while let Some(raw) = seq.next_element::<RawSeries>()? {
            let series = raw.into_series().map_err(serde::de::Error::custom)?;
            self.send(series)?;
        }
        Ok(())
    }
}

impl ResultSeed<'_> {
    fn send<E: serde::de::Error>(&self, s: Series) -> Result<(), E> {
        if let Some(counter) = self.reset {
            counter.store(0, Ordering::Relaxed);
        }
        self.tx
            .blocking_send(Ok(s))
            .map_err(|_| E::custom(CONSUMER_GONE))
    }
}

#[derive(serde::Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, Value)>,
    #[serde(default)]
    value: Option<(f64, Value)>,
}

impl RawSeries {
    fn into_series(self) -> Result<Series, String> {
        let samples = self
            .values
            .iter()
            .chain(self.value.iter())
            .map(|(ts, v)| Sample::new(to_ms(*ts), v.0))
            .collect();
        Ok(Series::new(Labels::from_pairs(self.metric), samples))
    }
}

/// The `result` of an answer, read straight from the text: series objects
/// for vector and matrix, `[time, "value"]` for scalar and string, nothing
/// for `null`. No `serde_json::Value` tree in between: for answers of tens
/// of thousands of series that tree was a tenth of `spillway run`'s CPU.
#[derive(Default)]
struct ResultItems(Vec<ResultItem>);

enum ResultItem {
    Series(RawSeries),
    Number(f64),
    Text(String),
}

impl<'de> serde::Deserialize<'de> for ResultItems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultItems;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of series or [time, \"value\"]")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ResultItems, E> {
                Ok(ResultItems::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<ResultItems, E> {
                Ok(ResultItems::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResultItems, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<ResultItem>()? {
                    items.push(item);
                }
                Ok(ResultItems(items))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for ResultItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a series object, a time or a value string")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ResultItem, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                <RawSeries as serde::Deserialize>::deserialize(d).map(ResultItem::Series)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ResultItem, E> {
                Ok(ResultItem::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A sample value parsed straight from the transient string serde hands us:
/// no allocation per point, which dominates long range answers.
struct Value(f64);

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample value string such as \"1.5\" or \"NaN\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
                parse_value(v).map(Value).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

fn to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// Prometheus sends values as strings: `"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`.
pub fn parse_value(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .map_err(|_| format!("invalid sample value {v:?}"))
}

/// Parses a whole instant-query answer: vector, scalar, string or matrix
/// (VictoriaLogs answers matrices to some stats queries), plus `stats`.
pub(crate) fn parse_instant_answer(body: &[u8]) -> Result<InstantAnswer, String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        status: Option<String>,
        #[serde(default, rename = "errorType")]
        error_type: Option<String>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        data: Option<Data>,
        #[serde(default)]
        stats: Option<Stats>,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(default, rename = "resultType")]
        result_type: String,
        #[serde(default)]
        result: ResultItems,
    }
    #[derive(serde::Deserialize)]
    struct Stats {
        #[serde(default, rename = "seriesFetched")]
        series_fetched: Option<serde_json::Value>,
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if env.status.as_deref() == Some("error") {
        return Err(format!(
            "the server answered status \"error\" ({}): {}",
            env.error_type.unwrap_or_default(),
            env.error.unwrap_or_default()
        ));
    }
    let mut series = Vec::new();
    if let Some(data) = env.data {
        let items = data.result.0;
        match data.result_type.as_str() {
            "scalar" | "string" => match items.as_slice() {
                [ResultItem::Number(ts), ResultItem::Text(v)] => series.push(Series::new(
                    Labels::new(),
                    vec![Sample::new(to_ms(*ts), parse_value(v)?)],
                )),
                _ => {
                    return Err(format!(
                        "a {} result is [time, \"value\"]",
                        data.result_type
                    ))
                }
            },
            _ => {
                for item in items {
                    match item {
                        ResultItem::Series(r) => series.push(r.into_series()?),
                        _ => return Err("a vector or matrix result holds series objects".into()),
                    }
                }
            }
        }
    }
    // VictoriaMetrics sends the count as a string ("12"); accept a number too.
    let series_fetched = env
        .stats
        .and_then(|s| s.series_fetched)
        .and_then(|v| match v {
            serde_json::Value::String(s) => s.parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        });
    Ok(InstantAnswer {
        series,
        series_fetched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_answer_with_stats() {
        let a = parse_instant_answer(br#"{"status":"success","isPartial":false,"data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1700000000,"1"]}]},"stats":{"seriesFetched": "3","executionTimeMsec":1}}"#).unwrap();
        assert_eq!(a.series.len(), 1);
        assert_eq!(a.series[0].samples[0], Sample::new(1_700_000_000_000, 1.0));
        assert_eq!(a.series_fetched, Some(3));
        let a = parse_instant_answer(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"2"]}}"#,
        )
        .unwrap();
        assert_eq!(a.series[0].samples[0], Sample::new(1_700_000_000_500, 2.0));
        assert_eq!(a.series_fetched, None);
        let a = parse_instant_answer(
            br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        )
        .unwrap();
        assert!(a.series.is_empty());
        let e = parse_instant_answer(
            br#"{"status":"error","errorType":"422","error":"missing `| stats ...` pipe"}"#,
        )
        .unwrap_err();
        assert!(e.contains("missing `| stats ...` pipe"), "{e}");
    }

    #[test]
    fn group_params_replace_defaults() {
        let f = QueryForm::with_overrides(
            vec![
                ("query".into(), "up".into()),
                ("step".into(), "300s".into()),
            ],
            &[
                ("step".into(), "1m".into()),
                ("extra_label".into(), "a=1".into()),
                ("extra_label".into(), "b=2".into()),
            ],
        );
        assert_eq!(
            f.encode(),
            "query=up&step=1m&extra_label=a%3D1&extra_label=b%3D2"
        );
        assert_eq!(f.get("step"), Some("1m"));
        assert_eq!(duration_param(300_000), "300s");
        assert_eq!(duration_param(1500), "1500ms");
    }

    fn parse(body: &str) -> Result<Vec<Series>, String> {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut de = serde_json::Deserializer::from_str(body);
        ResponseSeed {
            tx: &tx,
            reset: None,
        }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
        drop(tx);
        let mut out = vec![];
        while let Ok(s) = rx.try_recv() {
            out.push(s.unwrap());
        }
        Ok(out)
    }

    #[test]
    fn matrix_vector_scalar() {
        let m = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1.5,"1"],[3,"NaN"]]}]}}"#).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].labels.to_string(), r#"up{job="a"}"#);
        assert_eq!(m[0].samples[0], Sample::new(1500, 1.0));
        assert!(m[0].samples[1].value.is_nan());
        let v = parse(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[2,"+Inf"]}]}}"#).unwrap();
        assert_eq!(v[0].samples[0].value, f64::INFINITY);
        let s = parse(r#"{"status":"success","data":{"resultType":"scalar","result":[2,"-4"]}}"#)
            .unwrap();
        assert_eq!(s[0].samples[0], Sample::new(2000, -4.0));
    }

    #[test]
    fn error_status_is_an_error() {
        let e = parse(r#"{"status":"error","errorType":"bad_data","error":"boom"}"#).unwrap_err();
        assert!(e.contains("boom"), "{e}");
    }

    #[test]
    fn seconds_format() {
        assert_eq!(seconds(1_700_000_000_000), "1700000000");
        assert_eq!(seconds(1_700_000_000_500), "1700000000.500");
    }
}
