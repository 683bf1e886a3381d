//! `spillway export`: fetch a time range by PromQL/MetricsQL, flag every
//! sample against thresholds, write everything (and the alerts apart) to
//! CSV / JSON / JSONL / SQLite / Parquet.
//!
//! Pipeline: windowed `query_range` (source) → threshold flags (transform)
//! → a writer thread owning the file sinks. Network parsing and file
//! writing overlap, and memory is bounded by the channel between them, in
//! series and in samples ([`crate::budget`]), whatever the `--window`.
//! A failing query is reported and the others still run; files appear only
//! complete (temp name + rename); the incremental state moves only for
//! queries that succeeded, after the files are in place.

pub mod config;
pub mod state;
pub mod summary;

use crate::budget::{Held, SampleBudget, QUEUED_SAMPLES};
use crate::client::{Client, ClientError, QueryParams};
use crate::fsutil::AtomicFile;
use crate::model::time::{format_rfc3339_ms, now_ms};
use crate::model::Labels;
use crate::sink::file::{self, FlaggedSample, RecordSink, RunInfo, RunOutcome};
use crate::source::query::RangePlan;
pub use config::{ExportFile, ExportOptions};
use state::{IncrementalState, QueryState};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use summary::{QuerySummary, RunSummary};

/// How a run ended, for the exit code: 0 all queries fine, 1 some failed.
#[derive(Debug)]
pub struct ExportReport {
    pub summary: RunSummary,
    pub summary_path: PathBuf,
}

/// How progress is shown: a bar on a terminal, log lines otherwise.
pub trait Progress: Send + Sync {
    fn start(&self, total_windows: u64);
    fn window_done(&self, query: &str, start_ms: i64, end_ms: i64, samples: u64);
    fn finish(&self);
}

struct Chunk {
    query: Arc<str>,
    labels: Labels,
    samples: Vec<FlaggedSample>,
    /// The chunk's share of what may wait for the writers, given back
    /// when the last of them is done with it.
    _held: Held,
}

/// Runs one export; `Err` means nothing usable was written (bad output dir, sink failure).
pub async fn run(opts: ExportOptions, progress: &dyn Progress) -> anyhow::Result<ExportReport> {
    use anyhow::Context;
    let started = Instant::now();
    let started_ms = now_ms();
    // Milliseconds keep run ids (and file names) of back-to-back cron runs apart.
    let run_id = run_stamp(started_ms);
    let client = Client::new(opts.client.clone()).context("datasource")?;
    // Held until the state is saved, so overlapping runs cannot both start from it.
    let _state_lock = match &opts.incremental {
        Some(p) => {
            let lock = IncrementalState::lock(p).map_err(anyhow::Error::msg)?;
            crate::fsutil::remove_stale_temps_beside(p)
                .with_context(|| format!("cannot clean up beside {}", p.display()))?;
            Some(lock)
        }
        None => None,
    };
    // Read before anything is created: a bad state file leaves no empty --out.
    let mut state = match &opts.incremental {
        Some(p) => Some(IncrementalState::load(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    crate::fsutil::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create output directory {}", opts.out.display()))?;
    crate::fsutil::remove_stale_temps(&opts.out)
        .with_context(|| format!("cannot clean up output directory {}", opts.out.display()))?;
    let plans: Vec<(String, Option<RangePlan>)> = opts
        .queries
        .iter()
        .map(|q| {
            let from = state
                .as_ref()
                .and_then(|s| s.queries.get(q))
                .map_or(opts.from_ms, |s| s.next_from_ms);
            (
                q.clone(),
                RangePlan::new(from, opts.to_ms, opts.step_ms, opts.window_points),
            )
        })
        .collect();
    check_plans(&plans, &opts)?;

    let run_info = RunInfo {
        run_id: run_id.clone(),
        started_ms,
        from_ms: plans
            .iter()
            .filter_map(|p| p.1.map(|r| r.first_ms))
            .min()
            .unwrap_or(opts.from_ms),
        to_ms: opts.to_ms,
        step_ms: opts.step_ms,
        queries: opts.queries.clone(),
    };
    let mut sinks: Vec<Box<dyn RecordSink>> = Vec::new();
    for f in &opts.formats {
        let sink = match opts.partition_by {
            Some(by) if *f == file::Format::Parquet => {
                file::open_partitioned(&opts.out, &run_info, by)
            }
            _ => file::open(*f, &opts.out, &run_info),
        };
        sinks.push(sink.with_context(|| format!("cannot open the {f} output"))?);
    }
    let writers = SinkWriters::spawn(sinks);
    let tx = writers.sender();
    progress.start(
        plans
            .iter()
            .filter_map(|p| p.1.map(|r| r.window_count()))
            .sum(),
    );
    let mut summaries = Vec::new();
    for (query, plan) in &plans {
        let mut qs = QuerySummary::new(query);
        let t0 = Instant::now();
        match plan {
            None => {
                qs.from = format_rfc3339_ms(opts.from_ms);
                qs.to = format_rfc3339_ms(opts.to_ms);
                tracing::info!(%query, "nothing new to export for this query in the range");
            }
            Some(plan) => {
                qs.from = format_rfc3339_ms(plan.first_ms);
                qs.to = format_rfc3339_ms(plan.last_ms);
                if let Err(e) =
                    export_query(&client, query, plan, &opts, &tx, &mut qs, progress).await
                {
                    tracing::error!(%query, error = %e, "query failed; continuing with the others");
                    qs.error = Some(e.to_string());
                }
            }
        }
        qs.duration_seconds = t0.elapsed().as_secs_f64();
        summaries.push(qs);
    }
    drop(tx);
    progress.finish();
    let sinks = writers.join().map_err(anyhow::Error::msg)?;

    let failed: Vec<String> = summaries
        .iter()
        .filter(|q| q.error.is_some())
        .map(|q| q.query.clone())
        .collect();
    let outcome = RunOutcome {
        finished_ms: now_ms(),
        samples: summaries.iter().map(|q| q.samples).sum(),
        alerts: summaries.iter().map(|q| q.alerts).sum(),
        failed_queries: failed.clone(),
    };
    let mut files = Vec::new();
    for s in sinks {
        files.extend(
            s.finish(&outcome)
                .context("cannot complete the output files")?,
        );
    }
    let summary = RunSummary {
        run_id: run_id.clone(),
        url: client.endpoint().display(),
        from: format_rfc3339_ms(run_info.from_ms),
        to: format_rfc3339_ms(opts.to_ms),
        step_seconds: opts.step_ms as f64 / 1000.0,
        formats: opts.formats.iter().map(|f| f.to_string()).collect(),
        files: files.iter().map(|p| p.display().to_string()).collect(),
        samples: outcome.samples,
        alerts: outcome.alerts,
        failed_queries: failed,
        duration_seconds: started.elapsed().as_secs_f64(),
        queries: summaries,
    };
    let summary_path = write_summary(&opts.out, &summary).context("cannot write the summary")?;

    if let (Some(path), Some(state)) = (&opts.incremental, state.as_mut()) {
        for ((query, plan), qs) in plans.iter().zip(&summary.queries) {
            if let (Some(plan), None) = (plan, &qs.error) {
                state.queries.insert(
                    query.clone(),
                    QueryState {
                        next_from_ms: plan.next_from_ms(),
                        step_ms: opts.step_ms,
                        last_run: run_id.clone(),
                    },
                );
            }
        }
        state.version = 1;
        state
            .save(path)
            .with_context(|| format!("cannot save the incremental state {}", path.display()))?;
    }
    Ok(ExportReport {
        summary,
        summary_path,
    })
}

/// A query continued from an old `--incremental` state can reach back far
/// further than `--since`; its plan is held to the same request limit.
fn check_plans(plans: &[(String, Option<RangePlan>)], opts: &ExportOptions) -> anyhow::Result<()> {
    let Some(state) = &opts.incremental else {
        // Without a state file the range is the one `check` already held to the limit.
        return Ok(());
    };
    for (query, plan) in plans {
        let Some(plan) = plan else { continue };
        crate::model::range::check_windows(
            plan.window_count(),
            &format!(
                "query {query:?} from {} (where the incremental state {} continues) to {} at {} {}ms,",
                format_rfc3339_ms(plan.first_ms),
                state.display(),
                format_rfc3339_ms(plan.last_ms),
                opts.step_name,
                plan.step_ms
            ),
            "run once with a shorter --since and no --incremental, or delete the state file",
        )
        .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

async fn export_query(
    client: &Client,
    query: &str,
    plan: &RangePlan,
    opts: &ExportOptions,
    tx: &ChunkSender,
    qs: &mut QuerySummary,
    progress: &dyn Progress,
) -> Result<(), ClientError> {
    let query_arc: Arc<str> = Arc::from(query);
    // VictoriaMetrics would otherwise move start/end to its cache grid; ours is already aligned.
    let params = QueryParams {
        extra: vec![("nocache".into(), "1".into())],
    };
    // The next window is requested while this one is consumed, so the
    // server computes it while we write: wall time is max(server, us), not the sum.
    let fetch = |(start, end): (i64, i64)| {
        let (client, query, params, step) = (
            client.clone(),
            query.to_string(),
            params.clone(),
            opts.step_ms,
        );
        tokio::spawn(async move { client.query_range(&query, start, end, step, &params).await })
    };
    let mut windows = plan.windows().peekable();
    let mut next = windows.peek().map(|w| fetch(*w));
    while let Some((start, end)) = windows.next() {
        let pending = next.take().expect("one fetch per window");
        let mut stream = pending.await.map_err(|e| ClientError::Decode {
            url: client.endpoint().display(),
            reason: format!("request task failed: {e}"),
        })??;
        next = windows.peek().map(|w| fetch(*w));
        let before = qs.samples;
        qs.windows += 1;
        while let Some(series) = stream.recv().await {
            let series = series?;
            if series.samples.is_empty() {
                continue;
            }
            qs.add_series(&series.labels);
            let threshold = opts.thresholds.find(query, &series.labels);
            let samples: Vec<FlaggedSample> = series
                .samples
                .iter()
                .map(|s| {
                    let flags = threshold.map(|t| t.flags(s.value)).unwrap_or_default();
                    FlaggedSample {
                        timestamp_ms: s.timestamp_ms,
                        value: s.value,
                        out_of_range: flags.out_of_range,
                        alert: flags.alert,
                    }
                })
                .collect();
            qs.add_samples(&samples);
            if tx
                .send(query_arc.clone(), series.labels, samples)
                .await
                .is_err()
            {
                // The writer stopped on an error; its message is reported when it is joined.
                return Ok(());
            }
        }
        progress.window_done(query, start, end, qs.samples - before);
    }
    Ok(())
}

/// One thread per output format, so CSV, Parquet and SQLite encode in
/// parallel: the run takes as long as the slowest format, not their sum.
/// What waits for them is bounded by 256 chunks per format and, all
/// formats together, by [`QUEUED_SAMPLES`]: the slowest format's queue
/// holds the same memory whatever the `--window`.
struct SinkWriters {
    senders: Vec<tokio::sync::mpsc::Sender<Arc<Chunk>>>,
    budget: SampleBudget,
    threads: Vec<std::thread::JoinHandle<Result<Box<dyn RecordSink>, String>>>,
}

/// Hands each chunk to every format's thread; fails once any of them stopped.
#[derive(Clone)]
struct ChunkSender {
    senders: Vec<tokio::sync::mpsc::Sender<Arc<Chunk>>>,
    budget: SampleBudget,
}

impl ChunkSender {
    /// Waits until the samples fit in what may wait for the writers, then
    /// hands them to each.
    async fn send(
        &self,
        query: Arc<str>,
        labels: Labels,
        samples: Vec<FlaggedSample>,
    ) -> Result<(), ()> {
        let held = self.budget.hold(samples.len()).await;
        let chunk = Arc::new(Chunk {
            query,
            labels,
            samples,
            _held: held,
        });
        for s in &self.senders {
            s.send(chunk.clone()).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

impl SinkWriters {
    fn spawn(sinks: Vec<Box<dyn RecordSink>>) -> SinkWriters {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for mut sink in sinks {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Chunk>>(256);
            senders.push(tx);
            threads.push(std::thread::spawn(move || {
                while let Some(chunk) = rx.blocking_recv() {
                    sink.write(&chunk.query, &chunk.labels, &chunk.samples)
                        .map_err(|e| e.to_string())?;
                }
                Ok(sink)
            }));
        }
        SinkWriters {
            senders,
            budget: SampleBudget::new(QUEUED_SAMPLES),
            threads,
        }
    }

    fn sender(&self) -> ChunkSender {
        ChunkSender {
            senders: self.senders.clone(),
            budget: self.budget.clone(),
        }
    }

    /// Waits for every writer; the first error wins (its sinks are dropped, removing temp files).
    fn join(mut self) -> Result<Vec<Box<dyn RecordSink>>, String> {
        self.senders.clear();
        let mut sinks = Vec::new();
        let mut first_error = None;
        for t in std::mem::take(&mut self.threads) {
            match t.join() {
                Ok(Ok(s)) => sinks.push(s),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert("a file writer thread panicked".to_string());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(sinks),
        }
    }
}

/// An interrupted run (its future dropped on Ctrl-C) must not leave temp
/// files: close the channels and wait for the writers, whose sinks are then
/// dropped, which removes their temp files and rolls SQLite back, before the
/// process can exit.
impl Drop for SinkWriters {
    fn drop(&mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn write_summary(out: &std::path::Path, summary: &RunSummary) -> std::io::Result<PathBuf> {
    let mut f = AtomicFile::create(out, &format!("summary_{}.json", summary.run_id))?;
    f.write_all(&serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?)?;
    f.write_all(b"\n")?;
    f.commit()
}

/// `20240102T150405.123Z`: sortable, file-name safe, distinct for runs a millisecond apart.
fn run_stamp(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::file::SinkError;
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    /// A format that writes nothing until told to (or until nobody can
    /// tell it any more), then counts what it got.
    struct Stalled {
        go: std_mpsc::Receiver<()>,
        samples: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl RecordSink for Stalled {
        fn write(
            &mut self,
            _: &str,
            _: &Labels,
            samples: &[FlaggedSample],
        ) -> Result<(), SinkError> {
            self.go.recv().ok();
            self.samples
                .fetch_add(samples.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }

        fn finish(self: Box<Self>, _: &RunOutcome) -> Result<Vec<PathBuf>, SinkError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writers_queue_holds_samples_not_series() {
        let (go_tx, go) = std_mpsc::channel();
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stalled = Stalled {
            go,
            samples: Arc::clone(&written),
        };
        let writers = SinkWriters::spawn(vec![Box::new(stalled)]);
        // Declared after the writers, so a failing assertion drops it
        // first: the format stops waiting and the writers can be joined.
        let go_tx = go_tx;
        let tx = writers.sender();
        // 100 series of 20,000 points: far fewer chunks than the queue's 256.
        const SERIES: usize = 100;
        const POINTS: usize = 20_000;
        let sending = tokio::spawn(async move {
            for n in 0..SERIES {
                let sample = FlaggedSample {
                    timestamp_ms: 0,
                    value: 1.0,
                    out_of_range: false,
                    alert: false,
                };
                let labels = Labels::from_pairs([("n", n.to_string())]);
                tx.send(Arc::from("q"), labels, vec![sample; POINTS])
                    .await
                    .unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = writers.budget.held();
        assert!(!sending.is_finished(), "the sender waits for the writer");
        assert!(
            (QUEUED_SAMPLES - POINTS..=QUEUED_SAMPLES).contains(&held),
            "{held} samples held"
        );
        for _ in 0..SERIES {
            go_tx.send(()).unwrap();
        }
        sending.await.unwrap();
        let sinks = tokio::task::spawn_blocking(move || writers.join())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sinks.len(), 1);
        assert_eq!(
            written.load(std::sync::atomic::Ordering::SeqCst),
            SERIES * POINTS
        );
    }
}
