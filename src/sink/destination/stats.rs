//! A destination's counters, and how they show on `/metrics` and
//! `/api/v1/destinations`. Every metric carries `destination="<name>"`:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `spillway_queue_pending_bytes` | gauge | queued bytes not yet delivered (headers included) |
//! | `spillway_queue_pending_samples` | gauge | samples in those bytes |
//! | `spillway_queue_pending_blocks` | gauge | blocks (queue records) not yet delivered |
//! | `spillway_queue_disk_bytes` | gauge | queue files on disk, delivered data not yet deleted included |
//! | `spillway_queue_max_disk_bytes` | gauge | the configured cap |
//! | `spillway_samples_queued_total` | counter | samples accepted into the queue |
//! | `spillway_samples_sent_total` | counter | samples the destination answered 2xx for |
//! | `spillway_samples_dropped_total{reason}` | counter | `relabel`, `disk_full`, `rejected_4xx`, `too_large`, `damaged`, `schedule`, `dead_letter_full` (see the module docs) |
//! | `spillway_samples_duplicate_total` | counter | samples the destination refused as already stored (Prometheus' out-of-order answers to data sent again): not retried, not dropped |
//! | `spillway_queue_full_refusals_total` | counter | accepts refused because the queue was full and `on_full` is `block` |
//! | `spillway_dead_letter_total` | counter | events an event destination refused for good, written to its dead-letter file |
//! | `spillway_requests_total{status_code}` | counter | send attempts by HTTP status; `error` when no answer came |
//! | `spillway_retries_total` | counter | attempts after a first one failed |
//! | `spillway_remote_write_protocol_fallbacks_total` | counter | VictoriaMetrics-protocol (zstd) requests refused with 400/415 and sent again as Prometheus remote write (not in `spillway_requests_total`) |
//! | `spillway_send_duration_seconds` | histogram | time of one send attempt |
//!
//! Once the queue is idle, `queued = sent + duplicate + dead_letter +
//! dropped (all reasons but relabel and schedule)`; while it works, the
//! difference is `pending_samples`.
//! Counters live in atomics here and are copied into the metrics registry
//! when `/metrics` is scraped, so both views always agree.

use super::Shared;
use crate::model::time::{format_rfc3339_ms, now_ms};
use crate::queue::QueueStats;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Why samples did not reach a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The destination's `relabel_configs` filtered them out.
    Relabel,
    /// Pushed out of the queue by newer data past `max_disk_bytes`.
    DiskFull,
    /// The destination answered 4xx (not 429).
    Rejected4xx,
    /// One block larger than `max_disk_bytes`.
    TooLarge,
    /// A queued block failed its checksum or could not be decoded.
    Damaged,
    /// Outside the destination's `schedule`, with `outside_schedule: drop`.
    Schedule,
    /// Refused for good by an event destination whose dead-letter files
    /// were at `dead_letter_max_bytes`.
    DeadLetterFull,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Relabel,
        DropReason::DiskFull,
        DropReason::Rejected4xx,
        DropReason::TooLarge,
        DropReason::Damaged,
        DropReason::Schedule,
        DropReason::DeadLetterFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Relabel => "relabel",
            DropReason::DiskFull => "disk_full",
            DropReason::Rejected4xx => "rejected_4xx",
            DropReason::TooLarge => "too_large",
            DropReason::Damaged => "damaged",
            DropReason::Schedule => "schedule",
            DropReason::DeadLetterFull => "dead_letter_full",
        }
    }
}

/// A destination's counters, carried over to its replacement when a
/// reload rebuilds it, so `/metrics` counters do not restart.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    values: [u64; N_COUNTERS],
    last_error: Option<(String, i64)>,
}

/// What `/api/v1/destinations` shows for one destination.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DestinationStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Without credentials.
    pub url: String,
    pub pending_bytes: u64,
    pub pending_samples: u64,
    pub pending_blocks: u64,
    pub in_flight_blocks: u64,
    pub disk_bytes: u64,
    pub max_disk_bytes: u64,
    pub samples_queued: u64,
    pub samples_sent: u64,
    pub samples_dropped: BTreeMap<&'static str, u64>,
    /// Refused by the destination as already stored (not dropped).
    pub samples_duplicate: u64,
    pub on_full: &'static str,
    pub full_refusals: u64,
    /// Events refused for good and written to the dead-letter file.
    pub dead_letter: u64,
    pub retries: u64,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_error_time: Option<String>,
}

const N_COUNTERS: usize = 14;

pub(super) struct Stats {
    name: String,
    queued: AtomicU64,
    sent: AtomicU64,
    relabel: AtomicU64,
    /// Dropped by pushes for room; the queue's own total also holds damage.
    disk_full: AtomicU64,
    rejected: AtomicU64,
    too_large: AtomicU64,
    /// Damage the sender found (a block that would not decompress).
    undecodable: AtomicU64,
    retries: AtomicU64,
    duplicate: AtomicU64,
    full_refusals: AtomicU64,
    /// Damage found by the queues of the destinations this one replaces.
    damaged_before: AtomicU64,
    schedule: AtomicU64,
    dead_letter: AtomicU64,
    dead_letter_full: AtomicU64,
    last_error: Mutex<Option<(String, i64)>>,
    duration: metrics::Histogram,
}

impl Stats {
    pub fn new(name: &str) -> Self {
        Stats {
            name: name.to_string(),
            queued: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            relabel: AtomicU64::new(0),
            disk_full: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            full_refusals: AtomicU64::new(0),
            damaged_before: AtomicU64::new(0),
            schedule: AtomicU64::new(0),
            dead_letter: AtomicU64::new(0),
            dead_letter_full: AtomicU64::new(0),
            last_error: Mutex::new(None),
            duration: metrics::histogram!(
                "spillway_send_duration_seconds",
                "destination" => name.to_string()
            ),
        }
    }

    fn counters(&self) -> [&AtomicU64; N_COUNTERS] {
        [
            &self.queued,
            &self.sent,
            &self.relabel,
            &self.disk_full,
            &self.rejected,
            &self.too_large,
            &self.undecodable,
            &self.retries,
            &self.duplicate,
            &self.full_refusals,
            &self.schedule,
            &self.dead_letter,
            &self.dead_letter_full,
            // Last: `snapshot` adds the queue's damage counts to it.
            &self.damaged_before,
        ]
    }

    /// The counts so far, to be continued by a replacement; the queue's
    /// damage counts go with them (the replacement opens a new queue).
    pub fn snapshot(&self, queue: &QueueStats) -> Counters {
        let mut values = [0u64; N_COUNTERS];
        for (v, c) in values.iter_mut().zip(self.counters()) {
            *v = c.load(Relaxed);
        }
        values[N_COUNTERS - 1] += queue.damaged_samples_total;
        Counters {
            values,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Adds the counts of the destination this one replaces.
    pub fn continue_from(&self, previous: &Counters) {
        for (c, v) in self.counters().into_iter().zip(previous.values) {
            c.fetch_add(v, Relaxed);
        }
        if let Some(last) = &previous.last_error {
            let mut mine = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
            if mine.is_none() {
                *mine = Some(last.clone());
            }
        }
    }

    pub fn queued(&self, samples: u64, dropped_for_room: u64) {
        self.queued.fetch_add(samples, Relaxed);
        self.disk_full.fetch_add(dropped_for_room, Relaxed);
    }

    pub fn relabel_dropped(&self, samples: u64) {
        if samples > 0 {
            self.relabel.fetch_add(samples, Relaxed);
        }
    }

    pub fn sent(&self, samples: u64) {
        self.sent.fetch_add(samples, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason, samples: u64) {
        let counter = match reason {
            DropReason::Relabel => &self.relabel,
            DropReason::DiskFull => &self.disk_full,
            DropReason::Rejected4xx => &self.rejected,
            DropReason::TooLarge => &self.too_large,
            DropReason::Damaged => &self.undecodable,
            DropReason::Schedule => &self.schedule,
            DropReason::DeadLetterFull => &self.dead_letter_full,
        };
        counter.fetch_add(samples, Relaxed);
    }

    pub fn dead_lettered(&self, events: u64) {
        self.dead_letter.fetch_add(events, Relaxed);
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub fn duplicate(&self, samples: u64) {
        self.duplicate.fetch_add(samples, Relaxed);
    }

    pub fn full_refusal(&self) {
        self.full_refusals.fetch_add(1, Relaxed);
    }

    /// One send attempt: its duration and its answer (`None`: no answer).
    pub fn attempt(&self, seconds: f64, status: Option<u16>) {
        self.duration.record(seconds);
        let code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        metrics::counter!(
            "spillway_requests_total",
            "destination" => self.name.clone(),
            "status_code" => code
        )
        .increment(1);
    }

    /// A VictoriaMetrics-protocol (zstd) request refused with 400/415:
    /// the destination does not speak it (see `sender::send`).
    pub fn protocol_refusal(&self, seconds: f64) {
        self.duration.record(seconds);
        metrics::counter!(
            "spillway_remote_write_protocol_fallbacks_total",
            "destination" => self.name.clone()
        )
        .increment(1);
    }

    pub fn set_last_error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((message, now_ms()));
    }

    fn dropped_by_reason(&self, queue: &QueueStats) -> [(DropReason, u64); 7] {
        let disk_full = self.disk_full.load(Relaxed);
        let damaged = queue.damaged_samples_total
            + self.undecodable.load(Relaxed)
            + self.damaged_before.load(Relaxed);
        [
            (DropReason::Relabel, self.relabel.load(Relaxed)),
            (DropReason::DiskFull, disk_full),
            (DropReason::Rejected4xx, self.rejected.load(Relaxed)),
            (DropReason::TooLarge, self.too_large.load(Relaxed)),
            (DropReason::Damaged, damaged),
            (DropReason::Schedule, self.schedule.load(Relaxed)),
            (
                DropReason::DeadLetterFull,
                self.dead_letter_full.load(Relaxed),
            ),
        ]
    }

    /// Copies the counters and the queue's gauges into the metrics registry.
    pub fn collect(&self, queue: &QueueStats, max_disk_bytes: u64) {
        let d = || ("destination", self.name.clone());
        let gauges = [
            ("spillway_queue_pending_bytes", queue.pending_bytes),
            ("spillway_queue_pending_samples", queue.pending_samples),
            ("spillway_queue_pending_blocks", queue.pending_records),
            ("spillway_queue_disk_bytes", queue.disk_bytes),
            ("spillway_queue_max_disk_bytes", max_disk_bytes),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name, &[d()]).set(value as f64);
        }
        let counters = [
            ("spillway_samples_queued_total", self.queued.load(Relaxed)),
            ("spillway_samples_sent_total", self.sent.load(Relaxed)),
            ("spillway_retries_total", self.retries.load(Relaxed)),
            (
                "spillway_samples_duplicate_total",
                self.duplicate.load(Relaxed),
            ),
            (
                "spillway_queue_full_refusals_total",
                self.full_refusals.load(Relaxed),
            ),
            ("spillway_dead_letter_total", self.dead_letter.load(Relaxed)),
        ];
        for (name, value) in counters {
            metrics::counter!(name, &[d()]).absolute(value);
        }
        for (reason, value) in self.dropped_by_reason(queue) {
            metrics::counter!(
                "spillway_samples_dropped_total",
                "destination" => self.name.clone(),
                "reason" => reason.as_str()
            )
            .absolute(value);
        }
    }

    pub(super) fn status(&self, shared: &Shared) -> DestinationStatus {
        let queue = shared.queue.stats();
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        DestinationStatus {
            name: self.name.clone(),
            kind: shared.kind.as_str(),
            url: shared.display_url.clone(),
            pending_bytes: queue.pending_bytes,
            pending_samples: queue.pending_samples,
            pending_blocks: queue.pending_records,
            in_flight_blocks: queue.in_flight_records,
            disk_bytes: queue.disk_bytes,
            max_disk_bytes: shared.queue.options().max_disk_bytes,
            samples_queued: self.queued.load(Relaxed),
            samples_sent: self.sent.load(Relaxed),
            samples_dropped: self
                .dropped_by_reason(&queue)
                .into_iter()
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            samples_duplicate: self.duplicate.load(Relaxed),
            on_full: shared.on_full.as_str(),
            full_refusals: self.full_refusals.load(Relaxed),
            dead_letter: self.dead_letter.load(Relaxed),
            retries: self.retries.load(Relaxed),
            last_error_time: last.as_ref().map(|(_, t)| format_rfc3339_ms(*t)),
            last_error: last.map(|(m, _)| m),
        }
    }
}
