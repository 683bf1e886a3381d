//! Copying one chunk of raw data: count the series first, then stream the
//! samples from the source to the destinations in bounded batches.
//!
//! How the source is read, tried in this order and remembered:
//! 1. VictoriaMetrics `/api/v1/export` (single node, cluster
//!    `/select/<t>/prometheus`, vmauth): raw samples streamed as JSON
//!    lines, parsed one line at a time on a blocking thread;
//! 2. Prometheus remote read (`/api/v1/read`, `SAMPLES`): the answer comes
//!    whole, so a chunk whose answer would pass [`MAX_READ_ANSWER_BYTES`]
//!    is asked again in halves;
//! 3. `query_range` at the capture's `fallback_step`, only when neither
//!    raw API answers (404, 405, 403, vmauth's `missing route`): samples at
//!    steps, not raw; said once in the log and on `/api/v1/captures`.
//!
//! Limits come before data: `/api/v1/series` is asked for at most
//! `max_series` series of the chunk (reading stops there, however many the
//! selector matches). Beyond the limit the capture is truncated: only
//! series already copied plus the first new ones up to the limit are
//! fetched, by exact selectors. `max_samples` is counted while samples
//! stream and stops the fetch at the limit. What is held at any time is
//! one batch of at most [`BATCH_SAMPLES`] samples (plus, for remote read,
//! one answer).

use crate::client::{Client, ClientError};
use crate::codec::remote_read::ReadQuery;
use crate::codec::vm_native::NativeBlock;
use crate::model::selector::Selector;
use crate::model::{Labels, Series};
use crate::source::vm_export::{ExportMethod, Flow, LineSink, SourceError, VmExportSource};
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Samples per batch handed to the destinations: each batch costs one
/// fsync of every destination's queue, so batches are larger than a
/// destination's blocks (which it cuts itself), yet a few MiB at most.
pub const BATCH_SAMPLES: usize = 50_000;
/// Largest remote read answer held (decompressed); bigger chunks are split.
pub const MAX_READ_ANSWER_BYTES: usize = 16 << 20;
/// A chunk is not split below this when a remote read answer is too big.
const MIN_SPLIT_MS: i64 = 1000;

/// How raw samples are read from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Export,
    RemoteRead,
    QueryRange { step_ms: i64 },
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Export => "export",
            Method::RemoteRead => "remote_read",
            Method::QueryRange { .. } => "query_range",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the destinations did not take the copied samples: {0}")]
    Route(String),
    #[error("remote read answer for {ms} ms of data is still over {MAX_READ_ANSWER_BYTES} bytes; lower max_series or use a source with /api/v1/export")]
    TooDense { ms: i64 },
}

impl From<ClientError> for FetchError {
    fn from(e: ClientError) -> Self {
        FetchError::Source(SourceError::Client(e))
    }
}

/// The answer that says "this API is not served here": try the next one.
fn not_served(e: &SourceError) -> bool {
    match e {
        SourceError::Client(c) => client_not_served(c),
        _ => false,
    }
}

/// A 4xx saying the answer would pass a server-side limit on series.
fn over_server_limit(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status, body, .. } if (400..500).contains(status) => {
            let b = body.to_ascii_lowercase();
            b.contains("exceed") || b.contains("too many") || b.contains("limit")
        }
        _ => false,
    }
}

fn client_not_served(e: &ClientError) -> bool {
    matches!(e.status(), Some(403 | 404 | 405 | 501))
        || crate::source::vm_export::is_missing_route(e)
}

/// The source of raw samples (the run's `datasource`), with the method
/// found to work.
pub struct RawSource {
    client: Client,
    state: Mutex<SourceState>,
    /// Whether `Export` still reads the native export (see
    /// `VmExportSource::with_native`): the monitored server, likely busy
    /// in an incident, then spends almost nothing on the copy.
    native: Arc<AtomicBool>,
}

#[derive(Default)]
struct SourceState {
    method: Option<Method>,
    /// Why a method was left, for the log (once) and the API.
    note: Option<String>,
    series_api_missing: bool,
}

/// Where copied batches go; the manager adds origin, labels and destinations.
pub trait BatchOut: Send + Sync {
    fn send(&self, batch: Vec<Series>) -> BoxFuture<'_, Result<(), String>>;
}

/// One chunk to copy, with the limits of its capture instance.
pub struct Job<'a> {
    pub selectors: &'a [String],
    /// `[from, to)`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub max_series: usize,
    /// Series copied so far by the instance; grows up to `max_series`.
    pub admitted: HashSet<u64>,
    pub samples_left: u64,
    pub labels: &'a [(String, String)],
    pub fallback_step_ms: i64,
}

/// What a chunk copy did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub admitted: HashSet<u64>,
    pub samples: u64,
    /// New series turned away by `max_series` in this chunk.
    pub refused_series: u64,
    pub series_limited: bool,
    pub samples_limited: bool,
}

impl RawSource {
    pub fn new(client: Client) -> RawSource {
        RawSource {
            client,
            state: Mutex::new(SourceState::default()),
            native: Arc::new(AtomicBool::new(true)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The method in use (or to be tried first) and the note about it.
    pub fn method(&self) -> (Option<Method>, Option<String>) {
        let s = self.state();
        (s.method, s.note.clone())
    }

    /// Copies one chunk; see the module docs.
    pub async fn copy(&self, job: Job<'_>, out: &dyn BatchOut) -> Result<Outcome, FetchError> {
        let mut admit = Admit::new(&job);
        let selectors = self.plan(&job, &mut admit).await?;
        if selectors.is_empty() {
            return Ok(admit.into_outcome());
        }
        loop {
            let method = self.state().method.unwrap_or(Method::Export);
            let r = match method {
                Method::RemoteRead => self.remote_read(&selectors, &job, admit, out).await,
                m => self.export(&selectors, &job, m, admit, out).await,
            };
            match r {
                Ok(admit) => {
                    self.state().method.get_or_insert(method);
                    return Ok(admit.into_outcome());
                }
                Err((FetchError::Source(e), a)) if not_served(&e) => {
                    admit = a;
                    self.fall_back(method, &e, job.fallback_step_ms)?;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Moves to the next method after `method` was not served.
    fn fall_back(&self, method: Method, e: &SourceError, step_ms: i64) -> Result<(), FetchError> {
        let url = self.client.endpoint().display();
        let (next, note) = match method {
            Method::Export => (
                Method::RemoteRead,
                format!("{url}/api/v1/export is not available ({e}); reading raw samples with Prometheus remote read (/api/v1/read)"),
            ),
            Method::RemoteRead => {
                let before = self.state().note.clone().unwrap_or_default();
                (
                    Method::QueryRange { step_ms },
                    format!(
                        "neither /api/v1/export nor /api/v1/read is available at {url} ({e}{}); captures fall back to query_range at {}: samples at that step, not raw",
                        if before.is_empty() { String::new() } else { format!("; earlier: {before}") },
                        crate::model::time::format_duration(std::time::Duration::from_millis(step_ms as u64)),
                    ),
                )
            }
            Method::QueryRange { .. } => {
                return Err(FetchError::Source(SourceError::Body {
                    url,
                    reason: format!("query_range is not available either: {e}"),
                }))
            }
        };
        if matches!(next, Method::QueryRange { .. }) {
            tracing::warn!(source = %url, "{note}");
        } else {
            tracing::info!(source = %url, "{note}");
        }
        let mut s = self.state();
        s.method = Some(next);
        s.note = Some(note);
        Ok(())
    }

    /// Counts the chunk's series (up to the limit) and picks the selectors
    /// to fetch: the capture's own, or exact ones for the series allowed
    /// when the limit is passed.
    async fn plan(&self, job: &Job<'_>, admit: &mut Admit<'_>) -> Result<Vec<String>, FetchError> {
        if self.state().series_api_missing {
            return Ok(job.selectors.to_vec());
        }
        let list = match self
            .client
            .series_bounded(job.selectors, job.from_ms, job.to_ms - 1, job.max_series)
            .await
        {
            Ok(l) => l,
            Err(e) if client_not_served(&e) => {
                tracing::warn!(source = %self.client.endpoint().display(), error = %e, "/api/v1/series is not available: max_series is enforced while copying instead of before");
                self.state().series_api_missing = true;
                return Ok(job.selectors.to_vec());
            }
            Err(e) if over_server_limit(&e) => {
                // The server has more series than it lists (VictoriaMetrics'
                // -search.maxSeries): the copy streams and admits the
                // first max_series it meets, counting the rest.
                tracing::warn!(source = %self.client.endpoint().display(), error = %e, "the selectors match more series than the source lists; copying the first max_series met");
                return Ok(job.selectors.to_vec());
            }
            Err(e) => return Err(e.into()),
        };
        let new: Vec<&Labels> = list
            .series
            .iter()
            .filter(|l| !admit.admitted.contains(&series_hash(l)))
            .collect();
        let room = job.max_series.saturating_sub(admit.admitted.len());
        if !list.more && new.len() <= room {
            return Ok(job.selectors.to_vec());
        }
        // Over the limit: the series already copied and the first new ones.
        admit.series_limited = true;
        admit.refused += new.len().saturating_sub(room) as u64 + u64::from(list.more);
        for l in new.iter().take(room) {
            admit.admitted.insert(series_hash(l));
        }
        admit.closed = true;
        Ok(list
            .series
            .iter()
            .filter(|l| admit.admitted.contains(&series_hash(l)))
            .map(exact_selector)
            .collect())
    }

    async fn export(
        &self,
        selectors: &[String],
        job: &Job<'_>,
        method: Method,
        admit: Admit<'_>,
        out: &dyn BatchOut,
    ) -> Result<Admit<'static>, (FetchError, Admit<'static>)> {
        let export_method = match method {
            Method::QueryRange { step_ms } => ExportMethod::QueryRange { step_ms },
            _ => ExportMethod::Export,
        };
        let source = VmExportSource::new(self.client.clone(), selectors.to_vec(), export_method)
            .with_native_switch(self.native.clone());
        let (tx, mut rx) = mpsc::channel::<Vec<Series>>(1);
        let sink = ChunkSink {
            admit: admit.into_owned(),
            batch: Batcher::default(),
            tx,
        };
        let fetch = source.fetch_window(job.from_ms, job.to_ms - 1, sink, std::future::pending());
        tokio::pin!(fetch);
        let (sink, result) = loop {
            tokio::select! {
                Some(batch) = rx.recv() => {
                    if let Err(e) = out.send(batch).await {
                        // Dropping the fetch hangs up on the source.
                        return Err((FetchError::Route(e), Admit::empty()));
                    }
                }
                done = &mut fetch => break done,
            }
        };
        let ChunkSink {
            admit,
            mut batch,
            tx,
        } = sink;
        drop(tx);
        let mut pending = Vec::new();
        while let Some(b) = rx.recv().await {
            pending.push(b);
        }
        if let Err(e) = result {
            return Err((FetchError::Source(e), admit));
        }
        pending.extend(batch.take());
        for b in pending {
            if let Err(e) = out.send(b).await {
                return Err((FetchError::Route(e), admit));
            }
        }
        Ok(admit)
    }

    async fn remote_read(
        &self,
        selectors: &[String],
        job: &Job<'_>,
        admit: Admit<'_>,
        out: &dyn BatchOut,
    ) -> Result<Admit<'static>, (FetchError, Admit<'static>)> {
        let mut admit = admit.into_owned();
        let parsed: Vec<Selector> = match selectors.iter().map(|s| Selector::parse(s)).collect() {
            Ok(p) => p,
            Err(e) => {
                let e = SourceError::Sink(format!("cannot read the selector for remote read: {e}"));
                return Err((FetchError::Source(e), admit));
            }
        };
        // Oldest first; a range whose answer is too big comes back in halves.
        let mut ranges = vec![(job.from_ms, job.to_ms)];
        let mut batch = Batcher::default();
        while let Some((a, b)) = ranges.pop() {
            let queries: Vec<ReadQuery> = parsed
                .iter()
                .flat_map(|s| {
                    s.alternatives()
                        .iter()
                        .map(move |alt| ReadQuery::new(a, b - 1, alt))
                })
                .collect();
            let results = match self
                .client
                .remote_read(&queries, MAX_READ_ANSWER_BYTES)
                .await
            {
                Ok(r) => r,
                Err(ClientError::TooLarge { .. }) if b - a > MIN_SPLIT_MS => {
                    let mid = a + (b - a) / 2;
                    ranges.push((mid, b));
                    ranges.push((a, mid));
                    continue;
                }
                Err(ClientError::TooLarge { .. }) => {
                    return Err((FetchError::TooDense { ms: b - a }, admit))
                }
                Err(e) => return Err((FetchError::Source(SourceError::Client(e)), admit)),
            };
            // Alternatives and selectors may match a series twice.
            let mut merged: BTreeMap<Labels, Vec<crate::model::Sample>> = BTreeMap::new();
            for s in results.into_iter().flatten() {
                merged.entry(s.labels).or_default().extend(s.samples);
            }
            for (labels, mut samples) in merged {
                samples.sort_by_key(|s| s.timestamp_ms);
                samples.dedup_by_key(|s| s.timestamp_ms);
                let flow = admit.take(Series::new(labels, samples), &mut batch);
                if let Some(full) = batch.ready() {
                    if let Err(e) = out.send(full).await {
                        return Err((FetchError::Route(e), admit));
                    }
                }
                if flow == Flow::Stop {
                    ranges.clear();
                    break;
                }
            }
        }
        if let Some(rest) = batch.take() {
            if let Err(e) = out.send(rest).await {
                return Err((FetchError::Route(e), admit));
            }
        }
        Ok(admit)
    }

    /// Up to `max_series` series of `selectors` over `[from, to]` at about
    /// `points` steps, for the web page's chart (query_range: a picture,
    /// not the copy). Reading stops after `max_series`.
    pub async fn chart(
        &self,
        selectors: &[String],
        from_ms: i64,
        to_ms: i64,
        max_series: usize,
        points: i64,
    ) -> Result<Vec<Series>, ClientError> {
        let step = ((to_ms - from_ms) / points.max(1)).max(1000);
        let query = match selectors {
            [one] => one.clone(),
            many => many
                .iter()
                .map(|s| format!("({s})"))
                .collect::<Vec<_>>()
                .join(" or "),
        };
        let mut stream = self
            .client
            .query_range(&query, from_ms, to_ms, step, &Default::default())
            .await?;
        let mut out = Vec::new();
        while let Some(s) = stream.recv().await {
            out.push(s?);
            if out.len() >= max_series {
                break;
            }
        }
        Ok(out)
    }
}

/// Identity of a raw series for `max_series`.
pub fn series_hash(labels: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for l in labels {
        h.update(l.name.as_bytes());
        h.update(b"=");
        h.update(l.value.as_bytes());
        h.update(b"\0");
    }
    h.digest()
}

/// `{__name__="m", a="b"}`: every label of one series (a series with more
/// labels matches it too; the admitted set filters those out).
pub fn exact_selector(labels: &Labels) -> String {
    let mut out = String::from("{");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&l.name);
        out.push('=');
        crate::model::labels::push_quoted(&mut out, &l.value);
    }
    out.push('}');
    out
}

/// What may pass: the chunk's time range, the instance's series and
/// sample limits, and the capture's labels on top.
struct Admit<'a> {
    admitted: HashSet<u64>,
    /// No new series may join (the limit was applied when planning).
    closed: bool,
    max_series: usize,
    samples_left: u64,
    samples: u64,
    refused: u64,
    refused_seen: HashSet<u64>,
    series_limited: bool,
    samples_limited: bool,
    from_ms: i64,
    to_ms: i64,
    labels: std::borrow::Cow<'a, [(String, String)]>,
}

impl<'a> Admit<'a> {
    fn new(job: &'a Job<'_>) -> Admit<'a> {
        Admit {
            admitted: job.admitted.clone(),
            closed: false,
            max_series: job.max_series,
            samples_left: job.samples_left,
            samples: 0,
            refused: 0,
            refused_seen: HashSet::new(),
            series_limited: false,
            samples_limited: false,
            from_ms: job.from_ms,
            to_ms: job.to_ms,
            labels: std::borrow::Cow::Borrowed(job.labels),
        }
    }

    fn empty() -> Admit<'static> {
        Admit {
            admitted: HashSet::new(),
            closed: true,
            max_series: 0,
            samples_left: 0,
            samples: 0,
            refused: 0,
            refused_seen: HashSet::new(),
            series_limited: false,
            samples_limited: false,
            from_ms: 0,
            to_ms: 0,
            labels: std::borrow::Cow::Owned(Vec::new()),
        }
    }

    fn into_owned(self) -> Admit<'static> {
        Admit {
            labels: std::borrow::Cow::Owned(self.labels.into_owned()),
            admitted: self.admitted,
            closed: self.closed,
            max_series: self.max_series,
            samples_left: self.samples_left,
            samples: self.samples,
            refused: self.refused,
            refused_seen: self.refused_seen,
            series_limited: self.series_limited,
            samples_limited: self.samples_limited,
            from_ms: self.from_ms,
            to_ms: self.to_ms,
        }
    }

    /// Adds what passes of `s` to `batch`; `Stop` once `max_samples` is hit.
    fn take(&mut self, mut s: Series, batch: &mut Batcher) -> Flow {
        let (from, to) = (self.from_ms, self.to_ms);
        s.samples
            .retain(|p| p.timestamp_ms >= from && p.timestamp_ms < to);
        if s.samples.is_empty() {
            return Flow::Continue;
        }
        let h = series_hash(&s.labels);
        if !self.admitted.contains(&h) {
            if self.closed || self.admitted.len() >= self.max_series {
                self.series_limited = true;
                if self.refused_seen.insert(h) {
                    self.refused += 1;
                }
                return Flow::Continue;
            }
            self.admitted.insert(h);
        }
        let n = s.samples.len() as u64;
        if n >= self.samples_left {
            s.samples.truncate(self.samples_left as usize);
            self.samples_limited = n > self.samples_left || self.samples_limited;
        }
        self.samples_left -= s.samples.len() as u64;
        self.samples += s.samples.len() as u64;
        for (k, v) in self.labels.iter() {
            s.labels.set(k.as_str(), v.as_str());
        }
        if !s.samples.is_empty() {
            batch.push(s);
        }
        if self.samples_left == 0 {
            self.samples_limited = true;
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn into_outcome(self) -> Outcome {
        Outcome {
            admitted: self.admitted,
            samples: self.samples,
            refused_series: self.refused,
            series_limited: self.series_limited,
            samples_limited: self.samples_limited,
        }
    }
}

/// Series collected up to [`BATCH_SAMPLES`] samples.
#[derive(Default)]
struct Batcher {
    series: Vec<Series>,
    samples: usize,
}

impl Batcher {
    fn push(&mut self, s: Series) {
        self.samples += s.samples.len();
        self.series.push(s);
    }

    fn ready(&mut self) -> Option<Vec<Series>> {
        (self.samples >= BATCH_SAMPLES)
            .then(|| self.take())
            .flatten()
    }

    fn take(&mut self) -> Option<Vec<Series>> {
        self.samples = 0;
        (!self.series.is_empty()).then(|| std::mem::take(&mut self.series))
    }
}

/// Export lines in, batches out (on the blocking thread of the export).
struct ChunkSink {
    admit: Admit<'static>,
    batch: Batcher,
    tx: mpsc::Sender<Vec<Series>>,
}

impl LineSink for ChunkSink {
    fn line(&mut self, line: &[u8]) -> Result<Flow, String> {
        let series = crate::codec::parse_vm_json_line(line).map_err(|e| e.to_string())?;
        self.take(series)
    }

    fn series(&mut self, labels: Labels, block: NativeBlock<'_>) -> Result<Flow, String> {
        self.take(Series::new(labels, block.samples().collect()))
    }
}

impl ChunkSink {
    fn take(&mut self, series: Series) -> Result<Flow, String> {
        let flow = self.admit.take(series, &mut self.batch);
        if let Some(full) = self.batch.ready() {
            self.tx
                .blocking_send(full)
                .map_err(|_| "the copy was abandoned".to_string())?;
        }
        Ok(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector::parse_label_set;
    use crate::model::Sample;

    fn job<'a>(labels: &'a [(String, String)], max_series: usize, samples: u64) -> Job<'a> {
        Job {
            selectors: &[],
            from_ms: 1000,
            to_ms: 5000,
            max_series,
            admitted: HashSet::new(),
            samples_left: samples,
            labels,
            fallback_step_ms: 1000,
        }
    }

    fn s(l: &str, ts: &[i64]) -> Series {
        Series::new(
            parse_label_set(l).unwrap(),
            ts.iter().map(|&t| Sample::new(t, 1.0)).collect(),
        )
    }

    #[test]
    fn admit_filters_time_series_and_samples() {
        let labels = vec![("captured_by".to_string(), "c".to_string())];
        let j = job(&labels, 2, 5);
        let mut a = Admit::new(&j);
        let mut b = Batcher::default();
        // Half-open range: 5000 belongs to the next chunk.
        assert_eq!(
            a.take(s(r#"m{i="1"}"#, &[0, 1000, 2000, 5000]), &mut b),
            Flow::Continue
        );
        assert_eq!(a.take(s(r#"m{i="2"}"#, &[1000]), &mut b), Flow::Continue);
        assert_eq!(a.take(s(r#"m{i="3"}"#, &[1000]), &mut b), Flow::Continue);
        assert!(a.series_limited);
        assert_eq!(
            a.take(s(r#"m{i="1"}"#, &[3000, 4000, 4500]), &mut b),
            Flow::Stop
        );
        assert!(a.samples_limited);
        let out = a.into_outcome();
        assert_eq!(
            (out.samples, out.refused_series, out.admitted.len()),
            (5, 1, 2)
        );
        let batch = b.take().unwrap();
        assert_eq!(batch[0].labels.to_string(), r#"m{captured_by="c", i="1"}"#);
        assert_eq!(batch.iter().map(|s| s.samples.len()).sum::<usize>(), 5);
    }

    #[test]
    fn exact_selectors_parse_back() {
        let l = parse_label_set(r#"m{a="x\"y", b="1"}"#).unwrap();
        let sel = exact_selector(&l);
        assert_eq!(sel, r#"{__name__="m", a="x\"y", b="1"}"#);
        assert!(Selector::parse(&sel).unwrap().matches(&l));
    }
}
