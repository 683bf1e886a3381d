//! Raw series out of VictoriaMetrics for one time window, as export lines:
//! `/api/v1/export` streamed (or its native form, decoded here; see
//! [`VmExportSource::with_native`]), or `query_range` when that route is
//! missing.
//!
//! The export body is split into lines while it arrives and each line is
//! handed to a [`LineSink`] on a blocking thread, so the whole answer is never
//! in memory and the sink's work (parsing, obfuscation, writing) overlaps the
//! network. The fallback (`query_range` over the window's step grid, for
//! Prometheus and for vmauth setups that route only the query API) turns each
//! series into the same line format, so the sink cannot tell the two apart.
//!
//! Routes: a base path holding `/rw/prometheus` (a vmauth prefix meant for
//! writes) is read through `/prometheus` for the export API only, as
//! vmgather does; a 404, or a 400 whose body says `missing route` (vmauth)
//! or `unsupported path` (VictoriaMetrics), marks the export API as missing.
//! Uses `client`, `codec` and `model` only.

use crate::client::{Client, ClientError, QueryParams};
use crate::codec::vm_native::{FeedError, NativeBlock, NativeError, NativeReader};
use crate::codec::write_vm_json_line;
use crate::model::Labels;
use crate::source::query::RangePlan;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How windows are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum ExportMethod {
    /// `/api/v1/export`: raw samples, as stored.
    Export,
    /// `query_range` with this step: one point per series and step.
    QueryRange { step_ms: i64 },
}

/// Whether the sink wants more lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Enough (a bounded preview): the source stops reading and hangs up.
    Stop,
}

/// Receives export lines (without the newline) on a blocking thread.
pub trait LineSink: Send + 'static {
    fn line(&mut self, line: &[u8]) -> Result<Flow, String>;

    /// One block of a native export: sorted labels and the block's samples
    /// in the window (at least one). By default the line the JSON export
    /// would print for it.
    fn series(&mut self, labels: Labels, block: NativeBlock<'_>) -> Result<Flow, String> {
        let mut line = Vec::new();
        block.write_json_line(&labels, &mut line);
        line.pop();
        self.line(&line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The answer broke off or could not be read; the window can be fetched again.
    #[error("the answer of {url} broke off: {reason}")]
    Body { url: String, reason: String },
    #[error("{0}")]
    Sink(String),
    #[error("cancelled")]
    Cancelled,
}

impl SourceError {
    /// Worth fetching the window again.
    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Client(e) => e.is_retriable(),
            SourceError::Body { .. } => true,
            SourceError::Sink(_) | SourceError::Cancelled => false,
        }
    }

    /// The export route does not exist here (switch to `query_range`).
    pub fn is_missing_route(&self) -> bool {
        matches!(self, SourceError::Client(e) if is_missing_route(e))
    }
}

/// A 404, vmauth's `missing route`, or VictoriaMetrics' `unsupported path`.
pub fn is_missing_route(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status: 404, .. } => true,
        ClientError::Status {
            status: 400 | 403 | 405,
            body,
            ..
        } => {
            let b = body.to_ascii_lowercase();
            b.contains("missing route") || b.contains("unsupported path")
        }
        _ => false,
    }
}

/// The export API's base path: `/rw/prometheus` (first occurrence) read as `/prometheus`.
pub fn export_base_path(base_path: &str) -> Option<String> {
    base_path
        .find("/rw/prometheus")
        .map(|i| format!("{}/prometheus{}", &base_path[..i], &base_path[i + 14..]))
}

/// Reads windows of the series matched by `selectors`.
#[derive(Clone, Debug)]
pub struct VmExportSource {
    client: Client,
    export_client: Client,
    selectors: Vec<String>,
    pub method: ExportMethod,
    /// Read `Export` windows as native blocks while this holds (see
    /// [`VmExportSource::with_native`]); shared by clones.
    native: Option<Arc<AtomicBool>>,
}

impl VmExportSource {
    pub fn new(client: Client, selectors: Vec<String>, method: ExportMethod) -> VmExportSource {
        let export_client = match export_base_path(client.endpoint().base().path()) {
            Some(p) => client.with_base_path(&p),
            None => client.clone(),
        };
        VmExportSource {
            client,
            export_client,
            selectors,
            method,
            native: None,
        }
    }

    /// Reads `Export` windows from `/api/v1/export/native` and decodes the
    /// blocks here (`codec::vm_native`): the server then spends almost
    /// nothing where printing JSON cost it more CPU than everything the
    /// client does. The sink gets each block as
    /// [`LineSink::series`], samples cut to the window. A server without
    /// that route, or an answer that is not a native export, switches this
    /// source (and its clones) to the JSON export for good; a window that
    /// broke off that way fails as retriable and is fetched again.
    pub fn with_native(mut self, on: bool) -> VmExportSource {
        self.native = on.then(|| Arc::new(AtomicBool::new(true)));
        self
    }

    /// [`VmExportSource::with_native`] with the switch held by the caller,
    /// so what one source learnt (no native route here) outlives it.
    pub fn with_native_switch(mut self, switch: Arc<AtomicBool>) -> VmExportSource {
        self.native = Some(switch);
        self
    }

    /// Whether the next `Export` window is read as native blocks.
    fn reads_native(&self) -> bool {
        self.native
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn stop_native(&self, why: &str) {
        if let Some(flag) = &self.native {
            if flag.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    url = %self.export_client.endpoint().display(),
                    "{why}; reading /api/v1/export (JSON lines) instead"
                );
            }
        }
    }

    pub fn selectors(&self) -> &[String] {
        &self.selectors
    }

    /// One PromQL expression for all selectors (`or` removes duplicates as `match[]` does).
    fn union_query(&self) -> String {
        match self.selectors.as_slice() {
            [one] => one.clone(),
            many => many
                .iter()
                .map(|s| format!("({s})"))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// Streams the window `[start_ms, end_ms]` (inclusive) into `sink` and
    /// hands the sink back. `cancelled` resolving stops the stream and
    /// hangs up; the result is then [`SourceError::Cancelled`].
    pub async fn fetch_window<S: LineSink>(
        &self,
        start_ms: i64,
        end_ms: i64,
        sink: S,
        cancelled: impl Future<Output = ()>,
    ) -> (S, Result<u64, SourceError>) {
        let (tx, rx) = mpsc::channel::<Piece>(32);
        let worker = tokio::task::spawn_blocking(move || run_sink(sink, rx, start_ms, end_ms));
        let fed = tokio::select! {
            r = self.feed(start_ms, end_ms, &tx) => r,
            _ = cancelled => Err(SourceError::Cancelled),
        };
        drop(tx);
        let (sink, sunk) = match worker.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let result = match (fed, sunk) {
            (Err(SourceError::Cancelled), _) => Err(SourceError::Cancelled),
            // A body that stops inside a line was cut short (a proxy whose
            // backend went away may still end the answer cleanly): fetch
            // the window again rather than fail on half a line.
            (_, Err(SinkFailure::Truncated(reason))) => Err(SourceError::Body {
                url: self.export_client.endpoint().display(),
                reason: format!("the answer ended inside a line ({reason})"),
            }),
            // The answer broke off: the block it cut is no fault of the format.
            (Err(e), Err(SinkFailure::Native(_))) => Err(e),
            (_, Err(SinkFailure::Native(e))) => {
                self.stop_native(&format!("cannot read the native export: {e}"));
                Err(SourceError::Body {
                    url: self.export_client.endpoint().display(),
                    reason: e.to_string(),
                })
            }
            // The sink's error explains why feeding stopped (it hung up).
            (_, Err(SinkFailure::Sink(e))) => Err(SourceError::Sink(e)),
            (r, Ok(())) => r,
        };
        (sink, result)
    }

    /// The export answer, native when this source reads native and the
    /// server has the route; `(response, is_native)`.
    async fn open_export(
        &self,
        start_ms: i64,
        end_ms: i64,
        idle: Duration,
    ) -> Result<(reqwest::Response, bool), SourceError> {
        let url = self.export_client.endpoint().display();
        let timed_out = || ClientError::Timeout {
            url: url.clone(),
            after: idle,
        };
        if self.reads_native() {
            let native = self
                .export_client
                .export_native(&self.selectors, start_ms, end_ms);
            match tokio::time::timeout(idle, native).await {
                Ok(Ok(resp)) => return Ok((resp, true)),
                Ok(Err(e)) if is_missing_route(&e) => {
                    self.stop_native("/api/v1/export/native is not routed here")
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(timed_out().into()),
            }
        }
        let no_extra = BTreeMap::new();
        let json = self
            .export_client
            .export(&self.selectors, start_ms, end_ms, &no_extra);
        let resp = tokio::time::timeout(idle, json)
            .await
            .map_err(|_| timed_out())??;
        Ok((resp, false))
    }

    /// Sends the window's bytes (whole lines or body chunks) to the worker.
    /// Returns the number of bytes received.
    async fn feed(
        &self,
        start_ms: i64,
        end_ms: i64,
        tx: &mpsc::Sender<Piece>,
    ) -> Result<u64, SourceError> {
        match self.method {
            ExportMethod::Export => {
                // The answer streams for as long as it needs; silence longer
                // than the client's timeout is what fails it.
                let idle = self
                    .export_client
                    .timeout()
                    .unwrap_or(Duration::from_secs(60));
                let url = self.export_client.endpoint().display();
                let (resp, native) = self.open_export(start_ms, end_ms, idle).await?;
                let mut body = resp.bytes_stream();
                let mut bytes = 0u64;
                loop {
                    let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
                        SourceError::Body {
                            url: url.clone(),
                            reason: format!(
                                "no data for {idle:?} (raise --timeout if the server is that slow)"
                            ),
                        }
                    })?;
                    let Some(chunk) = next else { break };
                    let chunk = chunk.map_err(|e| SourceError::Body {
                        url: url.clone(),
                        reason: crate::client::reqwest_reason(e),
                    })?;
                    bytes += chunk.len() as u64;
                    let piece = if native {
                        Piece::Native(chunk)
                    } else {
                        Piece::Lines(chunk)
                    };
                    if tx.send(piece).await.is_err() {
                        // The sink stopped (enough lines, or its own error).
                        break;
                    }
                }
                Ok(bytes)
            }
            ExportMethod::QueryRange { step_ms } => {
                let Some(plan) =
                    RangePlan::new(start_ms, end_ms, step_ms, i64::MAX / step_ms.max(1))
                else {
                    return Ok(0);
                };
                let mut stream = self
                    .client
                    .query_range(
                        &self.union_query(),
                        plan.first_ms,
                        plan.last_ms,
                        step_ms,
                        &QueryParams::default(),
                    )
                    .await?;
                let mut bytes = 0u64;
                let mut buf = Vec::with_capacity(4096);
                while let Some(series) = stream.recv().await {
                    let series = series?;
                    buf.clear();
                    write_vm_json_line(&series, &mut buf);
                    if buf.is_empty() {
                        continue;
                    }
                    bytes += buf.len() as u64;
                    if tx
                        .send(Piece::Lines(Bytes::copy_from_slice(&buf)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(bytes)
            }
        }
    }
}

/// Longest export line held while it arrives: VictoriaMetrics writes a
/// block of one series per line (a few MiB at most); a source sending more
/// without a newline is refused instead of filling memory.
pub const MAX_EXPORT_LINE_BYTES: usize = 64 << 20;

/// Why the line worker stopped.
#[derive(Debug)]
enum SinkFailure {
    /// The sink refused a line (or could not write it).
    Sink(String),
    /// The body ended without a newline and that last piece is not a line
    /// the sink accepts: the answer was cut short.
    Truncated(String),
    /// A native answer that cannot be read (damaged, cut short, or not one).
    Native(NativeError),
}

/// A piece of the answer for the worker.
enum Piece {
    /// JSON lines (a chunk may end inside one).
    Lines(Bytes),
    /// Native export bytes (a chunk may end inside a block).
    Native(Bytes),
}

/// Splits chunks into lines, or decodes native blocks, and feeds the sink.
fn run_sink<S: LineSink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Piece>,
    start_ms: i64,
    end_ms: i64,
) -> (S, Result<(), SinkFailure>) {
    let mut partial: Vec<u8> = Vec::new();
    let mut native = NativeSamples::new(start_ms, end_ms);
    let result = (|| {
        while let Some(piece) = rx.blocking_recv() {
            let flow = match piece {
                Piece::Lines(chunk) => split_lines(&mut sink, &chunk, &mut partial)?,
                Piece::Native(chunk) => native.feed(&mut sink, &chunk)?,
            };
            if flow == Flow::Stop {
                return Ok(());
            }
        }
        native.reader.finish().map_err(SinkFailure::Native)?;
        if !partial.is_empty() {
            deliver(&mut sink, &partial).map_err(SinkFailure::Truncated)?;
        }
        Ok(())
    })();
    (sink, result)
}

fn split_lines<S: LineSink>(
    sink: &mut S,
    chunk: &[u8],
    partial: &mut Vec<u8>,
) -> Result<Flow, SinkFailure> {
    let mut rest = chunk;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        let flow = if partial.is_empty() {
            deliver(sink, &rest[..nl]).map_err(SinkFailure::Sink)?
        } else {
            partial.extend_from_slice(&rest[..nl]);
            let f = deliver(sink, partial).map_err(SinkFailure::Sink)?;
            partial.clear();
            f
        };
        if flow == Flow::Stop {
            return Ok(Flow::Stop);
        }
        rest = &rest[nl + 1..];
    }
    if partial.len() + rest.len() > MAX_EXPORT_LINE_BYTES {
        return Err(SinkFailure::Sink(format!(
            "an export line is longer than {MAX_EXPORT_LINE_BYTES} bytes; the source sent no newline"
        )));
    }
    partial.extend_from_slice(rest);
    Ok(Flow::Continue)
}

/// Native blocks to the sink, cut to the window as the JSON export cuts
/// them (the server sends whole blocks).
struct NativeSamples {
    reader: NativeReader,
    start_ms: i64,
    end_ms: i64,
}

impl NativeSamples {
    fn new(start_ms: i64, end_ms: i64) -> NativeSamples {
        NativeSamples {
            reader: NativeReader::new(),
            start_ms,
            end_ms,
        }
    }

    fn feed<S: LineSink>(&mut self, sink: &mut S, chunk: &[u8]) -> Result<Flow, SinkFailure> {
        let (start, end) = (self.start_ms, self.end_ms);
        let go_on = self.reader.feed(chunk, |labels, block| {
            let kept = block.cut(start, end);
            if kept.timestamps.is_empty() {
                return Ok(true);
            }
            Ok(sink.series(labels, kept)? == Flow::Continue)
        });
        match go_on {
            Ok(true) => Ok(Flow::Continue),
            Ok(false) => Ok(Flow::Stop),
            Err(FeedError::Sink(e)) => Err(SinkFailure::Sink(e)),
            Err(FeedError::Native(e)) => Err(SinkFailure::Native(e)),
        }
    }
}

fn deliver<S: LineSink>(sink: &mut S, line: &[u8]) -> Result<Flow, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Flow::Continue);
    }
    sink.line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<String>, usize);
    impl LineSink for Collect {
        fn line(&mut self, line: &[u8]) -> Result<Flow, String> {
            self.0.push(String::from_utf8_lossy(line).into_owned());
            Ok(if self.0.len() >= self.1 {
                Flow::Stop
            } else {
                Flow::Continue
            })
        }
    }

    #[test]
    fn lines_span_chunks() {
        let (tx, rx) = mpsc::channel(8);
        for c in ["{\"a\":1}\n{\"b\"", ":2}\r\n\n", "{\"c\":3}"] {
            tx.try_send(Piece::Lines(Bytes::from(c))).unwrap();
        }
        drop(tx);
        let (sink, r) = run_sink(Collect(vec![], 100), rx, i64::MIN, i64::MAX);
        r.unwrap();
        assert_eq!(sink.0, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn a_body_ending_inside_a_line_is_truncated_not_a_sink_error() {
        struct Json(usize);
        impl LineSink for Json {
            fn line(&mut self, line: &[u8]) -> Result<Flow, String> {
                serde_json::from_slice::<serde_json::Value>(line).map_err(|e| e.to_string())?;
                self.0 += 1;
                Ok(Flow::Continue)
            }
        }
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(Piece::Lines(Bytes::from("{\"a\":1}\n{\"b\":\"unterm")))
            .unwrap();
        drop(tx);
        let (sink, r) = run_sink(Json(0), rx, i64::MIN, i64::MAX);
        assert_eq!(sink.0, 1);
        assert!(matches!(r, Err(SinkFailure::Truncated(_))), "{r:?}");

        let (tx, rx) = mpsc::channel(8);
        tx.try_send(Piece::Lines(Bytes::from("{\"a\":1}\nnot json\n")))
            .unwrap();
        drop(tx);
        let (_, r) = run_sink(Json(0), rx, i64::MIN, i64::MAX);
        assert!(matches!(r, Err(SinkFailure::Sink(_))), "{r:?}");
    }

    /// A native answer of one series, 1.79's layout: `up{job="a"}`, values
    /// 7 at 1000, 2000, … (a constant step and a constant).
    fn native_body(rows: u8) -> Vec<u8> {
        let mut body = vec![0u8; 16];
        let name = b"up\x01job\x01a\x01";
        body.extend_from_slice(&(name.len() as u32).to_be_bytes());
        body.extend_from_slice(name);
        // zigzag 1000 = 2000 = [0xd0, 0x0f]; rows; scale 0; DeltaConst,
        // Const; step 1000 as 2 bytes; no value data.
        let block = [0xd0, 0x0f, 14, rows, 0, 2, 3, 2, 0xd0, 0x0f, 0];
        body.extend_from_slice(&(block.len() as u32).to_be_bytes());
        body.extend_from_slice(&block);
        body
    }

    #[test]
    fn native_blocks_reach_the_sink_as_lines_cut_to_the_window() {
        let (tx, rx) = mpsc::channel(8);
        let body = native_body(5);
        let (a, b) = body.split_at(20);
        tx.try_send(Piece::Native(Bytes::copy_from_slice(a)))
            .unwrap();
        tx.try_send(Piece::Native(Bytes::copy_from_slice(b)))
            .unwrap();
        drop(tx);
        let (sink, r) = run_sink(Collect(vec![], 100), rx, 2000, 4000);
        r.unwrap();
        assert_eq!(
            sink.0,
            [
                r#"{"metric":{"__name__":"up","job":"a"},"values":[7,7,7],"timestamps":[2000,3000,4000]}"#
            ]
        );
        // Nothing in the window: no line.
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(Piece::Native(Bytes::from(native_body(5))))
            .unwrap();
        drop(tx);
        let (sink, r) = run_sink(Collect(vec![], 100), rx, 9000, 9999);
        r.unwrap();
        assert!(sink.0.is_empty());
        // Cut inside the block: the answer broke off.
        let (tx, rx) = mpsc::channel(8);
        let mut body = native_body(5);
        body.pop();
        tx.try_send(Piece::Native(Bytes::from(body))).unwrap();
        drop(tx);
        let (_, r) = run_sink(Collect(vec![], 100), rx, 0, 9999);
        assert!(matches!(r, Err(SinkFailure::Native(_))), "{r:?}");
    }

    #[test]
    fn stop_ends_early() {
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(Piece::Lines(Bytes::from("1\n2\n3\n"))).unwrap();
        drop(tx);
        let (sink, r) = run_sink(Collect(vec![], 2), rx, i64::MIN, i64::MAX);
        r.unwrap();
        assert_eq!(sink.0, ["1", "2"]);
    }

    #[test]
    fn missing_routes() {
        let st = |status, body: &str| ClientError::Status {
            url: "u".into(),
            status,
            body: body.into(),
        };
        assert!(is_missing_route(&st(404, "")));
        assert!(is_missing_route(&st(
            400,
            "cannot determine targetURL: missing route for \"/api/v1/export\""
        )));
        assert!(is_missing_route(&st(
            400,
            "unsupported path requested: \"/x/api/v1/export\""
        )));
        assert!(!is_missing_route(&st(400, "bad match[]")));
        assert!(!is_missing_route(&st(401, "missing route")));
    }

    #[test]
    fn rw_prefix_is_read_through_prometheus() {
        assert_eq!(
            export_base_path("/1011/rw/prometheus").as_deref(),
            Some("/1011/prometheus")
        );
        assert_eq!(
            export_base_path("/rw/prometheus/rw/prometheus").as_deref(),
            Some("/prometheus/rw/prometheus")
        );
        assert_eq!(export_base_path("/select/0/prometheus"), None);
        assert_eq!(export_base_path("/1011/RW/PROMETHEUS"), None);
    }
}
