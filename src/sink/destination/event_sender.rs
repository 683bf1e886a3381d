//! Accept and send for event destinations ([`crate::sink::event`]): the
//! same queue, relabeling, counters and lifecycle as the metric kinds, with
//! events instead of series.
//!
//! Accept writes one item per sample (relabeled labels, the batch's origin
//! and annotations) into blocks of at most `max_batch_samples` items.
//! Each sender owns one [`Transport`] (a syslog connection, the file, the
//! HTTP client), takes records like the metric senders do (small ones
//! merged for up to `flush_interval`), and delivers them with the one retry
//! policy: what the receiver accepted is counted sent, what it refused for
//! good goes to the dead-letter file (fsynced) and is counted there, what
//! failed for now is retried (alone: an Elasticsearch item answered 429 is
//! sent again without its delivered neighbours). The records are
//! acknowledged when nothing is pending; a stop in the middle leaves them
//! queued, to be sent again whole by the next start (at-least-once).

use super::sender::{ack, next_batch, stopped};
use super::{Accepted, DestinationError, DropReason, Phase, Shared};
use crate::client::ClientError;
use crate::model::BatchMeta;
use crate::model::Series;
use crate::queue::Record;
use crate::sink::event::dead_letter::{DeadLetter, Refused};
use crate::sink::event::encode::BlockBuilder;
use crate::sink::event::shape::EventRef;
use crate::sink::event::transport::{refused, Batch, Transport};
use crate::sink::event::EventConfig;
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

impl Shared {
    /// Relabels and encodes `batch` as events, then queues the blocks.
    pub(super) fn accept_events(
        &self,
        cfg: &EventConfig,
        batch: &[Series],
        meta: BatchMeta<'_>,
        relabel: bool,
    ) -> Result<Accepted, DestinationError> {
        let mut out = Accepted::default();
        let mut builder = BlockBuilder::new(self.max_batch_samples);
        for (i, s) in batch.iter().enumerate() {
            if s.samples.is_empty() {
                continue;
            }
            let labels = if relabel {
                self.relabeled(&s.labels)
            } else {
                Some(std::borrow::Cow::Borrowed(&s.labels))
            };
            let Some(labels) = labels else {
                out.relabel_dropped += s.samples.len() as u64;
                continue;
            };
            for &sample in &s.samples {
                let ev = EventRef {
                    sample,
                    labels: &labels,
                    origin: meta.origin,
                    annotations: meta.annotations_of(i),
                };
                builder.add(cfg, &ev);
            }
        }
        out.relabel_dropped += builder.skipped;
        self.stats.relabel_dropped(out.relabel_dropped);
        // Events keep no per-series order across senders (any sender reads
        // any lane), so every block goes to lane 0.
        let blocks: Vec<(Vec<u8>, u64, u8)> = builder
            .finish()
            .into_iter()
            .map(|(body, samples)| (body, samples, 0))
            .collect();
        if blocks.is_empty() {
            return Ok(out);
        }
        out.blocks = blocks.len();
        out.samples = blocks.iter().map(|b| b.1).sum();
        self.push_blocks(&blocks, out)
    }
}

/// One event sender (see the module docs).
pub(super) async fn run(shared: Arc<Shared>, cfg: Arc<EventConfig>, worker: usize) {
    tracing::debug!(destination = %shared.name, worker, "event sender started");
    let transport = match Transport::new(Arc::clone(&cfg), &shared.client) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("cannot set up the connection: {e}");
            tracing::error!(destination = %shared.name, "{msg}");
            shared.stats.set_last_error(msg);
            return;
        }
    };
    let transport = Arc::new(AsyncMutex::new(transport));
    let dead = DeadLetter::new(&cfg.dead_letter, &shared.name, cfg.dead_letter_max_bytes);
    let mut carry: Option<Record> = None;
    while let Some(records) = next_batch(&shared, None, &mut carry, usize::MAX).await {
        if shared.phase() == Phase::Stopped {
            break;
        }
        deliver(&shared, &transport, &dead, records).await;
    }
    if let Ok(t) = Arc::try_unwrap(transport) {
        t.into_inner().close().await;
    }
    tracing::debug!(destination = %shared.name, worker, "event sender stopped");
}

/// Delivers `records` until nothing is pending, or the destination stops.
async fn deliver(
    shared: &Arc<Shared>,
    transport: &Arc<AsyncMutex<Transport>>,
    dead: &DeadLetter,
    mut records: Vec<Record>,
) {
    let samples: u64 = records.iter().map(|r| r.samples).sum();
    // Only the ids are needed to acknowledge: the batch takes the bytes.
    let payloads = records
        .iter_mut()
        .map(|r| std::mem::take(&mut r.payload))
        .collect();
    let batch = match Batch::new(payloads) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("dropped {samples} queued events that cannot be decoded: {e}");
            tracing::error!(destination = %shared.name, "{msg}");
            shared.stats.dropped(DropReason::Damaged, samples);
            shared.stats.set_last_error(msg);
            ack(shared, &records, "events").await;
            return;
        }
    };
    let batch = Arc::new(AsyncMutex::new(batch));
    let what = format!("destination {}", shared.name);
    let mut phase = shared.phase.subscribe();
    let mut attempts = 0u32;
    let result = {
        let send = shared.retry.run(&what, || {
            let before_retry = attempts > 0;
            attempts += 1;
            let (shared, transport, batch) = (
                Arc::clone(shared),
                Arc::clone(transport),
                Arc::clone(&batch),
            );
            async move {
                if before_retry {
                    shared.stats.retry();
                }
                let started = std::time::Instant::now();
                let mut t = transport.lock().await;
                let mut b = batch.lock().await;
                let r = t.attempt(&mut b).await;
                shared
                    .stats
                    .attempt(started.elapsed().as_secs_f64(), attempt_status(&r));
                match r {
                    Ok(()) => Ok(()),
                    Err(e) if refused(&e) => Err(e),
                    Err(e) => {
                        shared.stats.set_last_error(e.to_string());
                        if e.is_retriable() {
                            Err(e)
                        } else {
                            Err(ClientError::Connect {
                                url: shared.display_url.clone(),
                                reason: e.to_string(),
                            })
                        }
                    }
                }
            }
        });
        tokio::select! {
            r = send => Some(r),
            _ = stopped(&mut phase) => None,
        }
    };
    let Some(result) = result else { return };
    let mut b = batch.lock().await;
    if let Err(e) = result {
        b.refuse_all(e.status(), &e.to_string());
    }
    if !records.iter().all(|r| shared.queue.is_pending(r.id)) {
        // Some were dropped for room (counted as disk_full): count only the rest.
        let lost: u64 = records
            .iter()
            .filter(|r| !shared.queue.is_pending(r.id))
            .map(|r| r.samples)
            .sum();
        b.delivered = b.delivered.saturating_sub(lost);
    }
    if !b.refused.is_empty() {
        let owned: Vec<(Vec<u8>, Option<u16>, String)> = b
            .refused
            .iter()
            .map(|(i, status, reason)| {
                (
                    event_part(shared, b.item(*i)).to_vec(),
                    *status,
                    reason.clone(),
                )
            })
            .collect();
        let n = owned.len() as u64;
        let dl = dead.clone();
        let outcome = crate::blocking::spawn_short(move || {
            let entries: Vec<Refused<'_>> = owned
                .iter()
                .map(|(event, status, reason)| Refused {
                    event,
                    status: *status,
                    reason,
                })
                .collect();
            dl.write(&entries)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let written = match outcome {
            Ok(w) => w,
            Err(e) => {
                let msg = format!(
                "cannot write {n} refused events to the dead-letter file {}: {e}; they stay queued",
                dead.path().display()
            );
                tracing::error!(destination = %shared.name, "{msg}");
                shared.stats.set_last_error(msg);
                return;
            }
        };
        let full = if written.dropped > 0 {
            format!(
                " ({} more dropped: the dead-letter files are at dead_letter_max_bytes)",
                written.dropped
            )
        } else {
            String::new()
        };
        let msg = format!(
            "{} events refused by the receiver went to {}{full}: {}",
            written.written,
            dead.path().display(),
            b.refused[0].2
        );
        tracing::warn!(destination = %shared.name, "{msg}");
        shared.stats.set_last_error(msg);
        shared.stats.dead_lettered(written.written);
        shared
            .stats
            .dropped(DropReason::DeadLetterFull, written.dropped);
    }
    shared.stats.sent(b.delivered);
    drop(b);
    ack(shared, &records, "events").await;
}

/// What of an item goes to the dead-letter file: the document of a bulk item.
fn event_part<'a>(shared: &Shared, item: &'a [u8]) -> &'a [u8] {
    match shared.kind {
        super::DestinationKind::Event(crate::sink::event::EventKind::Elasticsearch) => {
            crate::sink::event::elasticsearch::document_of(item)
        }
        _ => item,
    }
}

fn attempt_status(r: &Result<(), ClientError>) -> Option<u16> {
    match r {
        Ok(()) => Some(200),
        Err(e) => e.status(),
    }
}
