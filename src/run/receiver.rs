//! The receiver: `spillway run` takes data where vmagent would, so it can
//! stand behind an existing vmalert (`-remoteWrite.url`) or any remote-write
//! client, and route what arrives through the same [`Pipeline`] as rule
//! results.
//!
//! - `POST /api/v1/write` (also `/prometheus/api/v1/write`): Prometheus
//!   remote write 1.0, one snappy block holding a protobuf `WriteRequest`.
//! - `POST /api/v1/import` (also `/prometheus/api/v1/import`):
//!   VictoriaMetrics JSON lines, read as they stream in, routed every
//!   [`IMPORT_BATCH_SAMPLES`] samples.
//!
//! An answer of 204 means every destination holds the data on disk. Until
//! then the client keeps it: errors we can do nothing about (a body that
//! does not decode) are 4xx, so the client drops it; errors that pass
//! (shutting down, a queue that cannot write) are 503, so it retries. A bad
//! import line does not stop the others: good lines are routed, and the
//! answer is 400 naming the bad lines (VictoriaMetrics logs and skips them;
//! we say so to the client as well).

use super::route::{Pipeline, RouteError};
use crate::codec::{self, CodecError};
use crate::model::Series;
use crate::server::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use std::sync::Arc;

/// Largest compressed remote-write body accepted (vmagent's
/// `-maxInsertRequestSize` default).
pub const MAX_REMOTE_WRITE_BYTES: usize = 32 << 20;
/// Largest decompressed remote-write body accepted.
pub const MAX_DECODED_BYTES: usize = codec::remote_write::MAX_DECODED_BYTES;
/// Longest import line (VictoriaMetrics' `-import.maxLineLen` default).
pub const MAX_LINE_BYTES: usize = codec::vm_json::DEFAULT_MAX_LINE_BYTES;
/// An import is routed in batches of about this many samples.
pub const IMPORT_BATCH_SAMPLES: usize = 10_000;
/// Bad import lines named in an answer; the rest are counted.
const SHOWN_BAD_LINES: usize = 5;

/// Decoded batches handed back by the pipeline, decoded into again so a
/// busy receiver does not allocate per label (bounded: a burst's extra
/// batches are freed).
const SPARE_BATCHES: usize = 4;

#[derive(Clone)]
struct Receiver {
    pipeline: Arc<Pipeline>,
    limits: Limits,
    spare: Arc<std::sync::Mutex<Vec<Vec<Series>>>>,
    /// Body and decompression buffers, likewise reused.
    spare_bytes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Receiver {
    fn take_spare(&self) -> Vec<Series> {
        self.spare
            .lock()
            .map(|mut s| s.pop().unwrap_or_default())
            .unwrap_or_default()
    }

    fn give_back(&self, batch: Option<Vec<Series>>) {
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

    fn give_back_bytes(&self, buffers: [Vec<u8>; 2]) {
        if let Ok(mut spare) = self.spare_bytes.lock() {
            for b in buffers {
                if spare.len() < 2 * SPARE_BATCHES {
                    spare.push(b);
                }
            }
        }
    }
}

/// Size limits, changeable for tests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_remote_write_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_remote_write_bytes: MAX_REMOTE_WRITE_BYTES,
            max_decoded_bytes: MAX_DECODED_BYTES,
            max_line_bytes: MAX_LINE_BYTES,
        }
    }
}

/// The receiver's routes.
pub fn router(pipeline: Arc<Pipeline>, limits: Limits) -> Router {
    let state = Receiver {
        pipeline,
        limits,
        spare: Default::default(),
        spare_bytes: Default::default(),
    };
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/prometheus/api/v1/write", post(remote_write))
        .route("/api/v1/import", post(import))
        .route("/prometheus/api/v1/import", post(import))
        .with_state(state)
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
) -> Result<StatusCode, ApiError> {
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
) -> Result<usize, ApiError> {
    match header(headers, "content-encoding").as_deref() {
        None | Some("snappy") | Some("") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported here: remote write 1.0 bodies are one raw snappy block (Content-Encoding: snappy)"
            )))
        }
    }
    let limit = rx.limits.max_remote_write_bytes;
    let body = read_body(body, headers, limit, rx.take_bytes()).await?;
    let max_decoded = rx.limits.max_decoded_bytes;
    let mut batch = rx.take_spare();
    let mut scratch = rx.take_bytes();
    let (decoded, body, scratch) = tokio::task::spawn_blocking(move || {
        let r = codec::decode_write_request_into(&body, max_decoded, &mut batch, &mut scratch);
        (r.map(|()| batch), body, scratch)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("decoding task failed: {e}")))?;
    rx.give_back_bytes([body, scratch]);
    let batch = decoded.map_err(|e| match e {
        CodecError::BodyTooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    })?;
    let samples = crate::model::series::sample_count(&batch);
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
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
}

async fn route(pipeline: &Pipeline, batch: Vec<Series>) -> Result<(), ApiError> {
    pipeline.route(batch).await.map_err(route_error)
}

fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::ShuttingDown => ApiError::Unavailable {
            message: e.to_string(),
            cause: None,
        },
        RouteError::Destinations(_) => {
            ApiError::unavailable(format!("cannot queue the data, retry later: {e}"), e)
        }
    }
}

async fn import(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
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
) -> Result<usize, (ApiError, usize)> {
    match header(headers, "content-encoding").as_deref() {
        None | Some("identity") | Some("") => {}
        Some(other) => {
            return Err((
                ApiError::UnsupportedMediaType(format!(
                    "Content-Encoding {other:?} is not supported: send /api/v1/import bodies uncompressed"
                )),
                0,
            ))
        }
    }
    let mut lines = LineSplitter::new(rx.limits.max_line_bytes);
    let mut batch: Vec<Series> = Vec::new();
    let mut batch_samples = 0usize;
    let mut routed = 0usize;
    let mut bad = BadLines::default();
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match stream.next().await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                let e = ApiError::BadRequest(format!(
                    "cannot read the request body after line {}: {e}",
                    lines.line_number
                ));
                return Err((e, routed));
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
        match &chunk {
            Some(c) => lines.feed(c, &mut on_line),
            None => lines.finish(&mut on_line),
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
        return Err((ApiError::BadRequest(bad.message(lines.line_number)), routed));
    }
    Ok(routed)
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
