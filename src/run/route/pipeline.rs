//! The pipeline that batches go through: [`Pipeline`] owns the current
//! routing, takes batches from the receiver, the rule engine and breach
//! captures, and reports whether every destination holds them on disk.
//! What a batch goes through inside is in [`super::fanout`]; how the
//! routing is replaced on reload is in [`super::reload`].

use super::fanout::{GlobalStage, Routing};
use super::PipelineConfig;
use crate::model::{ExportBatch, Series};
use crate::sink::destination::{
    Destination, DestinationConfig, DestinationError, DestinationStatus,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a batch was not (wholly) taken.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("spillway is shutting down and takes no more data; send it again after the restart")]
    ShuttingDown,
    /// These destinations could not queue the batch; the others did.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Destinations(Vec<DestinationError>),
    /// A destination with `on_full: block` is full; nothing was queued
    /// anywhere after it. Send the batch again after `retry_after`.
    #[error("{message}")]
    Full {
        message: String,
        retry_after: Duration,
    },
}

/// Global relabeling, external labels and the destinations. Share it in an
/// `Arc`; every method takes `&self`. A reload swaps the routing in place
/// ([`Pipeline::reconfigure`]), so the receiver and the engine keep the
/// same `Pipeline`.
pub struct Pipeline {
    /// What batches go through now; replaced whole by a reload.
    pub(super) routing: std::sync::RwLock<Arc<Routing>>,
    /// Held shared by every batch in progress and exclusively by a reload,
    /// so a destination is never stopped under a batch it is taking.
    pub(super) gate: tokio::sync::RwLock<()>,
    closed: AtomicBool,
    pub(super) started: AtomicBool,
    routed_samples: AtomicU64,
    pub(super) relabel_dropped: AtomicU64,
    /// Sees rule results after global relabeling (breach captures).
    observer: std::sync::RwLock<Option<Arc<dyn BatchObserver>>>,
}

/// Sees every batch of rule results after global relabeling, before the
/// destinations take it. Called on a blocking thread for every batch, and
/// again for a batch the engine retries: it must be quick and idempotent.
pub trait BatchObserver: Send + Sync {
    fn observe(&self, batch: &ExportBatch);
}

pub(super) fn open_destination(d: DestinationConfig) -> Result<Destination, DestinationError> {
    let (dest, report) = Destination::open(d)?;
    tracing::info!(
        destination = dest.name(),
        url = dest.display_url(),
        pending_samples = report.pending_samples,
        pending_bytes = report.pending_bytes,
        "opened destination queue"
    );
    if report.dropped_records > 0 || report.truncated_bytes > 0 {
        tracing::warn!(
            destination = dest.name(),
            dropped_samples = report.dropped_samples,
            truncated_bytes = report.truncated_bytes,
            "the queue was repaired after an unclean stop: damaged blocks dropped, a torn write at its end cut off"
        );
    }
    Ok(dest)
}

impl Pipeline {
    /// Opens every destination's queue (repairing what a crash left).
    /// Blocking; senders start with [`Pipeline::start`].
    pub fn open(config: PipelineConfig) -> Result<Pipeline, DestinationError> {
        let mut destinations = Vec::new();
        let mut configs = Vec::new();
        for d in config.destinations {
            configs.push(d.clone());
            destinations.push(Arc::new(open_destination(d)?));
        }
        Ok(Pipeline {
            routing: std::sync::RwLock::new(Arc::new(Routing {
                global: Arc::new(GlobalStage {
                    rules: config.global_relabel,
                    external_labels: config.external_labels,
                }),
                destinations: Arc::new(destinations),
                configs,
            })),
            gate: tokio::sync::RwLock::new(()),
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            routed_samples: AtomicU64::new(0),
            relabel_dropped: AtomicU64::new(0),
            observer: std::sync::RwLock::new(None),
        })
    }

    /// Installs (or removes) the observer of rule results.
    pub fn set_observer(&self, observer: Option<Arc<dyn BatchObserver>>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = observer;
    }

    /// Routes raw samples copied by a breach capture to the destinations
    /// named: their relabeling, external labels and queues apply; global
    /// relabeling and the run's external labels do not (see the module
    /// docs). Promises what [`Pipeline::route`] promises; a name that is
    /// not (or no longer) a destination is an error for that name.
    pub async fn route_to(&self, batch: ExportBatch, names: &[String]) -> Result<(), RouteError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(RouteError::ShuttingDown);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let _gate = self.gate.read().await;
        let routing = self.current();
        let mut errors = Vec::new();
        let mut targets = Vec::new();
        for n in names {
            match routing.destinations.iter().find(|d| d.name() == n) {
                Some(d) => targets.push(Arc::clone(d)),
                None => errors.push(DestinationError::Config {
                    name: n.clone(),
                    reason: "not a configured destination (removed by a reload?)".into(),
                }),
            }
        }
        self.routed_samples
            .fetch_add(batch.sample_count() as u64, Ordering::Relaxed);
        let failed: Vec<DestinationError> = crate::blocking::spawn_short(move || {
            targets
                .iter()
                .filter_map(|d| d.accept_with(&batch.series, batch.meta()).err())
                .collect()
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        errors.extend(failed);
        destination_errors(errors)
    }

    pub(super) fn current(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts every destination's senders. Call from inside the runtime.
    pub fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        for d in self.current().destinations.iter() {
            d.start();
        }
    }

    /// Routes one batch: global relabeling, external labels, then every
    /// destination's `accept`, one after the other on a blocking thread.
    /// Returns once all of them hold it on disk. This is the entry point of
    /// the receiver; see the module docs for what `Ok` and `Err` promise.
    pub async fn route(&self, batch: Vec<Series>) -> Result<(), RouteError> {
        self.route_and_return(ExportBatch::received(batch)).await.0
    }

    /// [`Pipeline::route`] for rule results (and captures): the engine
    /// added the run's `external_labels` already (as vmalert's
    /// `-external.label`, before global relabeling), so they are not added
    /// again here. The batch's origin reaches every destination.
    pub async fn route_results(&self, batch: ExportBatch) -> Result<(), RouteError> {
        self.route_inner(batch, false).await.0
    }

    /// [`Pipeline::route`] for a received batch (with its wire form, if it
    /// came by remote write) that also hands the batch back once every
    /// destination is done with it (`None` if it was consumed), so the
    /// receiver can decode the next request into the same buffers.
    pub async fn route_and_return(
        &self,
        batch: ExportBatch,
    ) -> (Result<(), RouteError>, Option<ExportBatch>) {
        self.route_inner(batch, true).await
    }

    pub(super) async fn route_inner(
        &self,
        batch: ExportBatch,
        external_labels: bool,
    ) -> (Result<(), RouteError>, Option<ExportBatch>) {
        if self.closed.load(Ordering::SeqCst) {
            return (Err(RouteError::ShuttingDown), Some(batch));
        }
        if batch.is_empty() {
            return (Ok(()), Some(batch));
        }
        let _gate = self.gate.read().await;
        let routing = self.current();
        self.routed_samples
            .fetch_add(batch.sample_count() as u64, Ordering::Relaxed);
        // Rule results only (the receiver's data opens no capture).
        let observer = if external_labels {
            None
        } else {
            self.observer
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        // One blocking task does the global stage and every destination's
        // accept in turn: relabeling and encoding are CPU work, queue pushes
        // wait for fsync, and one hand-off per batch costs less than one
        // per destination (the fsyncs are short; concurrent batches overlap).
        let global = Arc::clone(&routing.global);
        let (batch, dropped, errors) = crate::blocking::spawn_short(move || {
            let (batch, dropped) = global.apply(batch, external_labels);
            if let Some(o) = &observer {
                o.observe(&batch);
            }
            let errors = if batch.is_empty() {
                Vec::new()
            } else {
                routing.accept(&batch)
            };
            (batch, dropped, errors)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.relabel_dropped.fetch_add(dropped, Ordering::Relaxed);
        let batch = Some(batch);
        let full = errors.iter().find_map(|e| match e {
            DestinationError::Full { retry_after, .. } => Some((e.to_string(), *retry_after)),
            _ => None,
        });
        let result = match full {
            Some((message, retry_after)) => Err(RouteError::Full {
                message,
                retry_after,
            }),
            None => destination_errors(errors),
        };
        (result, batch)
    }

    pub fn destinations(&self) -> Vec<Arc<Destination>> {
        self.current().destinations.iter().cloned().collect()
    }

    pub fn statuses(&self) -> Vec<DestinationStatus> {
        self.current()
            .destinations
            .iter()
            .map(|d| d.status())
            .collect()
    }

    /// Refreshes the `/metrics` view of the pipeline and its destinations.
    pub fn collect_metrics(&self) {
        metrics::counter!("spillway_routed_samples_total")
            .absolute(self.routed_samples.load(Ordering::Relaxed));
        metrics::counter!("spillway_global_relabel_dropped_samples_total")
            .absolute(self.relabel_dropped.load(Ordering::Relaxed));
        for d in self.current().destinations.iter() {
            d.collect_metrics();
        }
    }

    /// Stops taking data, gives the destinations up to `timeout` (together)
    /// to deliver what they hold, and closes their queues.
    pub async fn shutdown(&self, timeout: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        let routing = self.current();
        let stops = routing.destinations.iter().map(|d| d.shutdown(timeout));
        futures_util::future::join_all(stops).await;
    }
}

/// The engine's seam: rule results go through [`Pipeline::route_results`].
/// While a destination with `on_full: block` is full, the results are held
/// here (the group waits; evaluations it misses meanwhile are caught up
/// afterwards), and each hold is timed in
/// `spillway_results_held_duration_seconds`.
impl crate::run::results::ResultSink for Pipeline {
    fn export(
        &self,
        mut batch: ExportBatch,
    ) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut held: Option<std::time::Instant> = None;
            loop {
                match self.route_inner(batch, false).await {
                    (Err(RouteError::Full { retry_after, .. }), Some(back)) => {
                        held.get_or_insert_with(std::time::Instant::now);
                        batch = back;
                        tokio::time::sleep(retry_after).await;
                    }
                    (result, _) => {
                        if let Some(since) = held {
                            metrics::histogram!("spillway_results_held_duration_seconds")
                                .record(since.elapsed().as_secs_f64());
                        }
                        return result.map_err(|e| e.to_string());
                    }
                }
            }
        })
    }

    fn round_done(&self) {
        for d in self.current().destinations.iter() {
            d.producers_idle();
        }
    }
}

/// What the destinations' refusals mean for the caller: nothing, a
/// shutdown (every refusal says the destination closed), or the errors.
fn destination_errors(errors: Vec<DestinationError>) -> Result<(), RouteError> {
    if errors.is_empty() {
        Ok(())
    } else if errors
        .iter()
        .all(|e| matches!(e, DestinationError::Closed { .. }))
    {
        Err(RouteError::ShuttingDown)
    } else {
        Err(RouteError::Destinations(errors))
    }
}
