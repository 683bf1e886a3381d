//! The receiver: `spillway run` takes data where vmagent would, so it can
//! stand behind an existing vmalert (`-remoteWrite.url`) or any remote-write
//! client, and route what arrives through the same [`Pipeline`] as rule
//! results.
//!
//! - `POST /api/v1/write` (also `/prometheus/api/v1/write`): Prometheus
//!   remote write 1.0, one snappy block holding a protobuf `WriteRequest`,
//!   or the same message in one zstd frame (vmagent's VictoriaMetrics
//!   protocol, `Content-Encoding: zstd`).
//! - `POST /api/v1/import` (also `/prometheus/api/v1/import`):
//!   VictoriaMetrics JSON lines, read as they stream in, routed every
//!   [`IMPORT_BATCH_SAMPLES`] samples; plain, or `Content-Encoding: gzip`
//!   (or `deflate`, zlib) as VictoriaMetrics and vmagent take them,
//!   decompressed as it streams in, at most
//!   [`MAX_IMPORT_DECODED_BYTES`] per request.
//!
//! Current vmagent sends zstd first and falls back to snappy on 400/415;
//! taking zstd saves it that round trip and its CPU (decoding decides by the
//! body's magic, as VictoriaMetrics does, not by the header).
//!
//! An answer of 204 means every destination holds the data on disk. Until
//! then the client keeps it: errors we can do nothing about (a body that
//! does not decode) are 4xx, so the client drops it; errors that pass
//! (shutting down, a queue that cannot write) are 503, so it retries. A bad
//! import line does not stop the others: good lines are routed, and the
//! answer is 400 naming the bad lines (VictoriaMetrics logs and skips them;
//! we say so to the client as well). A destination with `on_full: block`
//! that is full makes the answer 429 with `Retry-After` (as vmagent's
//! `-remoteWrite.dropSamplesOnOverload=false` queue answers): the client
//! keeps the data and sends it again later.
//!
//! At most `server.max_concurrent_inserts` requests (one per core by
//! default) are read and worked on at once, as vmagent's
//! `-maxConcurrentInserts`; the others wait with their bodies unread, and
//! one that waited [`MAX_TURN_WAIT`] is answered 503. Memory then follows
//! the cores, not the number of clients pushing at once. A request whose
//! body pauses for [`BODY_IDLE_TIMEOUT`] is answered 408 and gives its turn
//! up, so a stalled client cannot keep one.

use super::route::{Pipeline, RouteError};
use crate::codec::{self, CodecError};
use crate::model::{ExportBatch, Series};
use crate::server::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Largest compressed remote-write body accepted (vmagent's
/// `-maxInsertRequestSize` default).
pub const MAX_REMOTE_WRITE_BYTES: usize = 32 << 20;
/// Largest decompressed remote-write body accepted.
pub const MAX_DECODED_BYTES: usize = codec::remote_write::MAX_DECODED_BYTES;
/// Longest import line (VictoriaMetrics' `-import.maxLineLen` default).
pub const MAX_LINE_BYTES: usize = codec::vm_json::DEFAULT_MAX_LINE_BYTES;
/// An import is routed in batches of about this many samples.
pub const IMPORT_BATCH_SAMPLES: usize = 10_000;
/// Most bytes a compressed import may decompress to: the compressed body is
/// streamed, so this bounds the work one request can cause (a gzip bomb),
/// not memory, which one line and one batch bound already.
pub const MAX_IMPORT_DECODED_BYTES: u64 = 1 << 30;
/// Compressed bytes fed to the decoder at once: deflate expands at most
/// about 1032:1, so one step yields at most about 4 MiB.
const DECODE_STEP: usize = 4 << 10;
/// Bad import lines named in an answer; the rest are counted.
const SHOWN_BAD_LINES: usize = 5;

/// Decoded batches (with their decompressed messages) handed back by the
/// pipeline, decoded into again so a busy receiver does not allocate per
/// label (bounded: a burst's extra batches are freed).
const SPARE_BATCHES: usize = 4;

#[derive(Clone)]
struct Receiver {
    pipeline: Arc<Pipeline>,
    limits: Limits,
    spare: Arc<std::sync::Mutex<Vec<ExportBatch>>>,
    /// Body buffers, likewise reused.
    spare_bytes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// Turns to be read, decoded and routed ([`Limits::requests_at_once`]);
    /// a request waits for one before its body is read.
    turns: Arc<tokio::sync::Semaphore>,
}

impl Receiver {
    /// Waits for a request's turn, at most [`Limits::max_turn_wait`] (then
    /// 503, as vmagent answers after `-insert.maxQueueDuration`). Counted
    /// under vmagent's names, `spillway_`-prefixed: how often the limit
    /// was reached and how often the wait ran out.
    async fn turn(&self) -> Result<Turn<'_>, RxError> {
        let permit = match self.turns.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!("spillway_receiver_concurrent_inserts_limit_reached_total")
                    .increment(1);
                let wait = self.limits.max_turn_wait;
                match tokio::time::timeout(wait, self.turns.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return Err(unavailable("the receiver is shutting down")),
                    Err(_elapsed) => {
                        metrics::counter!(
                            "spillway_receiver_concurrent_inserts_limit_timeout_total"
                        )
                        .increment(1);
                        return Err(unavailable(&format!(
                            "{} requests are being worked on (server.max_concurrent_inserts) and \
                             this one waited {wait:?} for its turn; retry later",
                            self.limits.requests_at_once
                        )));
                    }
                }
            }
        };
        metrics::gauge!(CURRENT_INSERTS).increment(1.0);
        Ok(Turn { _permit: permit })
    }

    fn take_spare(&self) -> ExportBatch {
        let mut batch = self
            .spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        batch.origin = crate::model::Origin::received();
        batch.annotations.clear();
        batch
    }

    fn give_back(&self, batch: Option<ExportBatch>) {
        if let (Some(b), Ok(mut spare)) = (batch, self.spare.lock()) {
            if spare.len() < SPARE_BATCHES {
                spare.push(b);
            }
        }
    }

    fn take_bytes(&self) -> Vec<u8> {
        self.spare_bytes
            .lock()
            .map(|mut s| s.pop().unwrap_or_default())
            .unwrap_or_default()
    }

    fn give_back_bytes(&self, buffer: Vec<u8>) {
        if let Ok(mut spare) = self.spare_bytes.lock() {
            if spare.len() < SPARE_BATCHES {
                spare.push(buffer);
            }
        }
    }
}

const CURRENT_INSERTS: &str = "spillway_receiver_concurrent_inserts_current";

/// A request's turn; the gauge of requests at work follows it.
struct Turn<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        metrics::gauge!(CURRENT_INSERTS).decrement(1.0);
    }
}

fn unavailable(message: &str) -> RxError {
    RxError::Api(ApiError::Unavailable {
        message: message.to_string(),
        cause: None,
    })
}

/// Size limits, changeable for tests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_remote_write_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_line_bytes: usize,
    pub max_import_decoded_bytes: u64,
    /// Requests read, decoded and routed at once (`server.max_concurrent_inserts`).
    pub requests_at_once: usize,
    /// How long a request waits for its turn before the answer is 503.
    pub max_turn_wait: Duration,
    /// How long a request holding a turn may send no body bytes before the
    /// answer is 408: a stalled client must not keep one of few turns.
    pub body_idle_timeout: Duration,
}

/// The default of [`Limits::requests_at_once`]: one per core, at least two.
/// A request's work is CPU (decoding, relabeling, encoding) done on a pool
/// of that many threads, so taking more at once does not go faster: it only
/// holds more decoded requests in memory (on the router bench, 2 instead of
/// 4 at once: peak RSS 49 MiB instead of 65, and more samples per second).
pub fn default_requests_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// vmagent's `-insert.maxQueueDuration` default.
pub const MAX_TURN_WAIT: Duration = Duration::from_secs(60);
/// Default of [`Limits::body_idle_timeout`].
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_remote_write_bytes: MAX_REMOTE_WRITE_BYTES,
            max_decoded_bytes: MAX_DECODED_BYTES,
            max_line_bytes: MAX_LINE_BYTES,
            max_import_decoded_bytes: MAX_IMPORT_DECODED_BYTES,
            requests_at_once: default_requests_at_once(),
            max_turn_wait: MAX_TURN_WAIT,
            body_idle_timeout: BODY_IDLE_TIMEOUT,
        }
    }
}

/// The receiver's routes.
pub fn router(pipeline: Arc<Pipeline>, limits: Limits) -> Router {
    let at_once = limits.requests_at_once.max(1);
    let state = Receiver {
        pipeline,
        limits,
        spare: Default::default(),
        spare_bytes: Default::default(),
        turns: Arc::new(tokio::sync::Semaphore::new(at_once)),
    };
    metrics::gauge!("spillway_receiver_concurrent_inserts_capacity").set(at_once as f64);
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/prometheus/api/v1/write", post(remote_write))
        .route("/api/v1/import", post(import))
        .route("/prometheus/api/v1/import", post(import))
        .with_state(state)
}

/// An answer other than 204: an [`ApiError`], or 429 when a destination
/// with `on_full: block` is full.
#[derive(Debug)]
enum RxError {
    Api(ApiError),
    Full {
        message: String,
        retry_after: Duration,
    },
}

impl RxError {
    fn status_code(&self) -> StatusCode {
        match self {
            RxError::Api(e) => e.status_code(),
            RxError::Full { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl From<ApiError> for RxError {
    fn from(e: ApiError) -> Self {
        RxError::Api(e)
    }
}

impl IntoResponse for RxError {
    fn into_response(self) -> Response {
        match self {
            RxError::Api(e) => e.into_response(),
            RxError::Full {
                message,
                retry_after,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("Retry-After", retry_after.as_secs().max(1).to_string()),
                    ("Content-Type", "text/plain; charset=utf-8".to_string()),
                ],
                message + "\n",
            )
                .into_response(),
        }
    }
}

fn count_request(path: &'static str, status: StatusCode, samples: usize) {
    metrics::counter!(
        "spillway_receiver_requests_total",
        "path" => path,
        "status_code" => status.as_u16().to_string()
    )
    .increment(1);
    if samples > 0 {
        metrics::counter!("spillway_receiver_samples_total", "path" => path)
            .increment(samples as u64);
    }
}

async fn remote_write(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, RxError> {
    let result = remote_write_inner(&rx, &headers, body).await;
    match &result {
        Ok(samples) => count_request("/api/v1/write", StatusCode::NO_CONTENT, *samples),
        Err(e) => count_request("/api/v1/write", e.status_code(), 0),
    }
    result.map(|_| StatusCode::NO_CONTENT)
}

async fn remote_write_inner(
    rx: &Receiver,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, RxError> {
    match header(headers, "content-encoding").as_deref() {
        // zstd: vmagent's VictoriaMetrics protocol; the body's magic decides.
        None | Some("snappy") | Some("zstd") | Some("") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported here: remote write bodies are one raw snappy block (Content-Encoding: snappy) or one zstd frame (Content-Encoding: zstd)"
            ))
            .into())
        }
    }
    let _turn = rx.turn().await?;
    let limit = rx.limits.max_remote_write_bytes;
    let idle = rx.limits.body_idle_timeout;
    let body = read_body(body, headers, limit, idle, rx.take_bytes()).await?;
    let max_decoded = rx.limits.max_decoded_bytes;
    let mut batch = rx.take_spare();
    let (decoded, body) = crate::blocking::spawn_short(move || {
        let wire = batch.wire.get_or_insert_with(Default::default);
        let r = codec::decode_write_request_into(&body, max_decoded, &mut batch.series, wire);
        (r.map(|()| batch), body)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("decoding task failed: {e}")))?;
    rx.give_back_bytes(body);
    let batch = decoded.map_err(|e| match e {
        CodecError::BodyTooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    })?;
    let samples = batch.sample_count();
    let (result, batch) = rx.pipeline.route_and_return(batch).await;
    rx.give_back(batch);
    result.map_err(route_error)?;
    Ok(samples)
}

/// Reads the whole body into `out` (emptied first), refusing it as soon as
/// it passes `limit`.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    idle: Duration,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    let too_large = |size: String| {
        ApiError::PayloadTooLarge(format!(
            "request body of {size} bytes is over the {limit}-byte limit; send smaller batches \
             (Prometheus: queue_config.max_samples_per_send, vmagent: -remoteWrite.maxBlockSize)"
        ))
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        return Err(too_large(n.to_string()));
    }
    out.clear();
    out.reserve(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = next_chunk(&mut stream, idle, 0).await? {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The next piece of a body; 408 when none came for `idle` (`after_line`
/// says how far an import got).
async fn next_chunk<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    idle: Duration,
    after_line: u64,
) -> Result<Option<S::Item>, ApiError> {
    tokio::time::timeout(idle, stream.next())
        .await
        .map_err(|_| {
            let at = match after_line {
                0 => String::new(),
                n => format!(" after line {n}"),
            };
            ApiError::RequestTimeout(format!(
                "no body bytes came for {idle:?}{at}; the request is dropped so that its turn \
                 goes to the next (send bodies without pausing)"
            ))
        })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
}

async fn route(pipeline: &Pipeline, batch: Vec<Series>) -> Result<(), RxError> {
    pipeline.route(batch).await.map_err(route_error)
}

fn route_error(e: RouteError) -> RxError {
    match e {
        RouteError::ShuttingDown => RxError::Api(ApiError::Unavailable {
            message: e.to_string(),
            cause: None,
        }),
        RouteError::Destinations(_) => RxError::Api(ApiError::unavailable(
            format!("cannot queue the data, retry later: {e}"),
            e,
        )),
        RouteError::Full {
            message,
            retry_after,
        } => RxError::Full {
            message,
            retry_after,
        },
    }
}

async fn import(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, RxError> {
    let result = import_inner(&rx, &headers, body).await;
    match &result {
        Ok(samples) => count_request("/api/v1/import", StatusCode::NO_CONTENT, *samples),
        Err((e, samples)) => count_request("/api/v1/import", e.status_code(), *samples),
    }
    result.map(|_| StatusCode::NO_CONTENT).map_err(|(e, _)| e)
}

/// Returns the samples routed, also on error (bad lines do not stop the
/// good ones).
async fn import_inner(
    rx: &Receiver,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, (RxError, usize)> {
    let _turn = rx.turn().await.map_err(|e| (e, 0))?;
    let mut decoder = Decoder::for_encoding(
        header(headers, "content-encoding").as_deref(),
        rx.limits.max_import_decoded_bytes,
    )
    .map_err(|e| (e.into(), 0))?;
    let mut lines = LineSplitter::new(rx.limits.max_line_bytes);
    let mut batch: Vec<Series> = Vec::new();
    let mut batch_samples = 0usize;
    let mut routed = 0usize;
    let mut bad = BadLines::default();
    let mut stream = body.into_data_stream();
    loop {
        let next = next_chunk(&mut stream, rx.limits.body_idle_timeout, lines.line_number);
        let chunk = match next.await.map_err(|e| (e.into(), routed))? {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                let e = ApiError::BadRequest(format!(
                    "cannot read the request body after line {}: {e}",
                    lines.line_number
                ));
                return Err((e.into(), routed));
            }
            None => None,
        };
        let mut on_line = |n: u64, line: Line<'_>| match line {
            Line::TooLong => bad.add(
                n,
                format!(
                    "longer than the {}-byte line limit",
                    rx.limits.max_line_bytes
                ),
            ),
            Line::Text(text) => {
                if text.iter().all(u8::is_ascii_whitespace) {
                    return;
                }
                match codec::parse_vm_json_line(text) {
                    Ok(s) => {
                        batch_samples += s.samples.len();
                        if !s.samples.is_empty() {
                            batch.push(s);
                        }
                    }
                    Err(e) => bad.add(n, e.to_string()),
                }
            }
        };
        let fed = match &chunk {
            Some(c) => decoder.feed(c, |text| lines.feed(text, &mut on_line)),
            None => decoder
                .finish(|text| lines.feed(text, &mut on_line))
                .map(|()| lines.finish(&mut on_line)),
        };
        if let Err(e) = fed {
            return Err((e.into(), routed));
        }
        if batch_samples >= IMPORT_BATCH_SAMPLES || (chunk.is_none() && !batch.is_empty()) {
            let n = std::mem::take(&mut batch_samples);
            route(&rx.pipeline, std::mem::take(&mut batch))
                .await
                .map_err(|e| (e, routed))?;
            routed += n;
        }
        if chunk.is_none() {
            break;
        }
    }
    if bad.count > 0 {
        let e = ApiError::BadRequest(bad.message(lines.line_number));
        return Err((e.into(), routed));
    }
    Ok(routed)
}

/// Undoes an import's `Content-Encoding` as the body streams in, a small
/// step at a time, so no chunk can expand into much memory, and stops at
/// `limit` decoded bytes.
enum Decoder {
    Identity,
    Gzip(Box<Inflate<flate2::write::MultiGzDecoder<Vec<u8>>>>),
    Zlib(Box<Inflate<flate2::write::ZlibDecoder<Vec<u8>>>>),
}

struct Inflate<W> {
    writer: W,
    decoded: u64,
    limit: u64,
    name: &'static str,
}

/// The two flate2 writers, which hand their output to a `Vec`.
trait InflateWriter: Write {
    fn output(&mut self) -> &mut Vec<u8>;
    fn finish_stream(&mut self) -> std::io::Result<()>;
}

impl InflateWriter for flate2::write::MultiGzDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn finish_stream(&mut self) -> std::io::Result<()> {
        self.try_finish()
    }
}

impl InflateWriter for flate2::write::ZlibDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn finish_stream(&mut self) -> std::io::Result<()> {
        self.try_finish()
    }
}

impl Decoder {
    fn for_encoding(encoding: Option<&str>, limit: u64) -> Result<Decoder, ApiError> {
        Ok(match encoding {
            None | Some("identity") | Some("") => Decoder::Identity,
            Some("gzip") | Some("x-gzip") => Decoder::Gzip(Box::new(Inflate::new(
                flate2::write::MultiGzDecoder::new(Vec::new()),
                limit,
                "gzip",
            ))),
            Some("deflate") => Decoder::Zlib(Box::new(Inflate::new(
                flate2::write::ZlibDecoder::new(Vec::new()),
                limit,
                "deflate",
            ))),
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Encoding {other:?} is not supported on /api/v1/import: send the body plain, gzip or deflate"
                )))
            }
        })
    }

    fn feed(&mut self, chunk: &[u8], out: impl FnMut(&[u8])) -> Result<(), ApiError> {
        match self {
            Decoder::Identity => {
                let mut out = out;
                out(chunk);
                Ok(())
            }
            Decoder::Gzip(i) => i.feed(chunk, out),
            Decoder::Zlib(i) => i.feed(chunk, out),
        }
    }

    /// The end of the body: a compressed stream must be complete.
    fn finish(&mut self, out: impl FnMut(&[u8])) -> Result<(), ApiError> {
        match self {
            Decoder::Identity => Ok(()),
            Decoder::Gzip(i) => i.finish(out),
            Decoder::Zlib(i) => i.finish(out),
        }
    }
}

impl<W: InflateWriter> Inflate<W> {
    fn new(writer: W, limit: u64, name: &'static str) -> Self {
        Inflate {
            writer,
            decoded: 0,
            limit,
            name,
        }
    }

    fn feed(&mut self, chunk: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), ApiError> {
        for step in chunk.chunks(DECODE_STEP) {
            self.writer.write_all(step).map_err(|e| self.corrupt(e))?;
            self.drain(&mut out)?;
        }
        Ok(())
    }

    fn finish(&mut self, mut out: impl FnMut(&[u8])) -> Result<(), ApiError> {
        self.writer.finish_stream().map_err(|e| self.corrupt(e))?;
        self.drain(&mut out)
    }

    fn drain(&mut self, out: &mut impl FnMut(&[u8])) -> Result<(), ApiError> {
        let buf = self.writer.output();
        self.decoded += buf.len() as u64;
        if self.decoded > self.limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the {} body decompresses to more than the {}-byte limit of one import request; send it in several requests",
                self.name, self.limit
            )));
        }
        out(buf);
        buf.clear();
        Ok(())
    }

    fn corrupt(&self, e: std::io::Error) -> ApiError {
        ApiError::BadRequest(format!(
            "the body is not valid {} data (Content-Encoding: {}): {e}",
            self.name, self.name
        ))
    }
}

#[derive(Default)]
struct BadLines {
    count: u64,
    shown: Vec<String>,
}

impl BadLines {
    fn add(&mut self, line: u64, reason: String) {
        self.count += 1;
        if self.shown.len() < SHOWN_BAD_LINES {
            // Codec messages may carry their own "line N: " prefix; ours is authoritative.
            let reason = reason
                .strip_prefix("invalid VictoriaMetrics JSON line: ")
                .unwrap_or(&reason)
                .to_string();
            self.shown.push(format!("line {line}: {reason}"));
        }
    }

    fn message(&self, lines: u64) -> String {
        let mut m = format!(
            "{} of {lines} lines could not be read and were skipped (the other lines were accepted): {}",
            self.count,
            self.shown.join("; ")
        );
        if self.count > self.shown.len() as u64 {
            m.push_str(&format!(
                "; and {} more",
                self.count - self.shown.len() as u64
            ));
        }
        m
    }
}

enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// Cuts a stream of chunks into lines without holding more than one line
/// (at most `max` bytes) in memory; an over-long line is skipped whole and
/// reported once.
struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
    too_long: bool,
    line_number: u64,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        LineSplitter {
            partial: Vec::new(),
            max,
            too_long: false,
            line_number: 0,
        }
    }

    fn feed(&mut self, mut chunk: &[u8], on_line: &mut impl FnMut(u64, Line<'_>)) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&chunk[..i], &chunk[i + 1..]);
            self.line_number += 1;
            if self.too_long || self.partial.len() + head.len() > self.max {
                on_line(self.line_number, Line::TooLong);
            } else if self.partial.is_empty() {
                on_line(self.line_number, Line::Text(head));
            } else {
                self.partial.extend_from_slice(head);
                on_line(self.line_number, Line::Text(&self.partial));
            }
            self.partial.clear();
            self.too_long = false;
            chunk = rest;
        }
        if !self.too_long {
            if self.partial.len() + chunk.len() > self.max {
                self.too_long = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    /// The last line, when the body does not end with a newline.
    fn finish(&mut self, on_line: &mut impl FnMut(u64, Line<'_>)) {
        if self.too_long {
            self.line_number += 1;
            on_line(self.line_number, Line::TooLong);
        } else if !self.partial.is_empty() {
            self.line_number += 1;
            on_line(self.line_number, Line::Text(&self.partial));
        }
        self.partial.clear();
        self.too_long = false;
    }
}

#[cfg(test)]
mod tests;
