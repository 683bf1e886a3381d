//! The seam between rule evaluation and what is done with its results:
//! [`ResultSink`]. The engine, `replay` and `rules preview` hand it series;
//! `spillway run` implements it with the router (relabeling, destination
//! queues), tests with [`MemorySink`]. Kept apart from `engine` and `group`
//! so both can use it without depending on each other.

use crate::model::{ExportBatch, Series};
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where evaluated series go.
///
/// `export` gets the series one rule produced at one evaluation timestamp
/// (at most the rule's result, its stale markers, or its `ALERTS` series)
/// and resolves once they are safe: for `spillway run`, written to the
/// queue of every destination that keeps them. `Err(reason)` means "not
/// taken": the engine logs the reason on the rule, keeps its state, and
/// evaluates the same timestamp again later.
pub trait ResultSink: Send + Sync + 'static {
    fn export(&self, batch: ExportBatch) -> BoxFuture<'_, Result<(), String>>;

    /// A group finished an iteration: no more of its results are coming
    /// until the next one, so whatever waits to be merged with them can
    /// leave now.
    fn round_done(&self) {}
}

/// A sink that keeps every batch in memory (tests, `rules preview`).
#[derive(Debug, Default)]
pub struct MemorySink {
    batches: Mutex<Vec<ExportBatch>>,
    /// How many batches had arrived at each `round_done`.
    rounds: Mutex<Vec<usize>>,
    changed: tokio::sync::Notify,
}

impl MemorySink {
    pub fn new() -> Arc<MemorySink> {
        Arc::new(MemorySink::default())
    }

    /// Every batch so far, in arrival order.
    pub fn batches(&self) -> Vec<Vec<Series>> {
        self.exports().into_iter().map(|b| b.series).collect()
    }

    /// Every batch so far with its origin, in arrival order.
    pub fn exports(&self) -> Vec<ExportBatch> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Every series so far, in arrival order.
    pub fn series(&self) -> Vec<Series> {
        self.batches().into_iter().flatten().collect()
    }

    /// For each `round_done` so far, how many batches had arrived by then.
    pub fn rounds(&self) -> Vec<usize> {
        self.rounds.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Takes every batch so far.
    pub fn take(&self) -> Vec<Vec<Series>> {
        self.batches
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.series)
            .collect()
    }

    /// Waits until `done` holds for the series received so far, or
    /// `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Series]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if done(&self.series()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.series());
            }
        }
    }
}

impl ResultSink for MemorySink {
    fn export(&self, batch: ExportBatch) -> BoxFuture<'_, Result<(), String>> {
        if let Ok(mut b) = self.batches.lock() {
            b.push(batch);
        }
        self.changed.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn round_done(&self) {
        let batches = self.batches.lock().map(|b| b.len()).unwrap_or_default();
        if let Ok(mut r) = self.rounds.lock() {
            r.push(batches);
        }
    }
}
