//! Breach capture: when a series starts breaching, copy the *raw* samples
//! of the series its capture names (`match:`), from `before` the breach to
//! `after` its end, from the datasource to the capture's destinations.
//!
//! - `config`: `captures:` of the run config, checked with file:line;
//! - `tracker`: which rule results start or stop breaching (first sample
//!   after absence; the stale marker, or a gap in replay);
//! - `state`: one capture *key* (capture + rendered selectors): its
//!   instances (windows), the ranges already copied, limits hit;
//! - `store`: keys on disk under `<storage.path>/capture-state/`;
//! - `fetch`: one chunk from the source (export, remote read, or
//!   query_range as a named fallback) to the destinations, limits first;
//! - this file: the [`Captures`] manager that ties them together and
//!   takes rule results; `worker`: the one task that copies chunks;
//!   `api`: `/api/v1/captures`, charts and the metrics;
//!   `command`: `spillway capture`.
//!
//! # Flow
//!
//! ```text
//! engine ─► Pipeline::route_results ─► global relabeling ─► BatchObserver (Captures::observe)
//!                                                            └─ tracker: start/end ─► keys (in memory, dirty)
//! worker (one task): every second or when woken
//!   sweep silent series ─► close finished instances ─► save dirty keys
//!   ─► next chunk of the oldest key: copied ∌ [a, b), b ≤ now - lag
//!   ─► fetch (series count, then samples in batches) ─► Pipeline::route_to(destinations)
//!   ─► copied += [a, b), save the key (temp + rename + fsync)
//! ```
//!
//! # Guarantees
//!
//! - Merging: breaches of one key whose windows overlap form one instance;
//!   `copied` spans every instance a key had, so overlapping captures of
//!   the same selector (two rules, two series of one instance, a flapping
//!   breach, a replay run twice, `spillway capture` over a range already
//!   captured) send each raw (series, timestamp) once.
//! - Resuming: a chunk counts as copied once every batch of it is in the
//!   destinations' queues and the key is saved. After any stop (SIGTERM,
//!   `kill -9`) the chunk in progress is copied again: the at-least-once
//!   window of a capture is one chunk (`chunk:`, 5m of data by default), on
//!   top of the queues' own (a second of deliveries). VictoriaMetrics and
//!   Prometheus keep one sample per series and timestamp, so these
//!   duplicates do not show in queries.
//! - Memory: one worker copies one chunk at a time, holding one batch of at
//!   most `fetch::BATCH_SAMPLES` samples (remote read: one answer of at
//!   most 16 MiB); `max_series` is checked before fetching.
//! - Lag: a chunk is copied once its end is `evaluation.eval_delay` old,
//!   so late samples at the source are not missed.

mod api;
pub mod command;
pub mod config;
mod fetch;
mod state;
mod store;
#[cfg(test)]
mod tests;
mod tracker;
mod worker;

pub use api::api_router;

pub use command::{capture_command, CaptureCommand, CaptureOutcome};
pub use config::{CaptureConfig, CaptureDef, CaptureSpec};
pub use fetch::Method;
pub use state::Instance;
pub use tracker::CaptureKey;

use crate::client::Client;
use crate::model::time::format_rfc3339_ms;
use crate::model::{ExportBatch, ExportKind, Origin, Series};
use crate::run::route::{BatchObserver, Pipeline};
use crate::run::schedule::Clock;
use fetch::{BatchOut, Job, RawSource};
use futures_util::future::BoxFuture;
use state::{KeyState, Started};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::Store;
use tracker::{Event, Tracker};

/// Intervals of silence after which a breaching series counts as ended
/// (its stale marker never came).
const SILENCE_INTERVALS: i64 = 3;
/// Error messages logged once per capture; later repeats are counted only.
const MAX_LOGGED: usize = 1000;

/// Where copied batches go: the run's destinations by name.
pub trait CaptureRouter: Send + Sync {
    fn route_to<'a>(
        &'a self,
        batch: ExportBatch,
        destinations: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>>;
}

impl CaptureRouter for Pipeline {
    fn route_to<'a>(
        &'a self,
        batch: ExportBatch,
        destinations: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            Pipeline::route_to(self, batch, destinations)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Whether the manager follows the clock (`run`) or copies what is there
/// and stops (`replay`, `spillway capture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Batch,
}

/// The capture manager; cheap to clone.
#[derive(Clone)]
pub struct Captures {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<Arc<CaptureConfig>>,
    tracker: Mutex<Tracker>,
    keys: Mutex<HashMap<String, KeyState>>,
    dirty: Mutex<HashSet<String>>,
    /// Opened once captures are configured.
    store: Mutex<Option<Arc<Store>>>,
    source: RwLock<Option<Arc<RawSource>>>,
    router: Arc<dyn CaptureRouter>,
    clock: Arc<dyn Clock>,
    wake: tokio::sync::Notify,
    mode: Mode,
    /// Wall time the keys were loaded; breaches restored from disk wait a
    /// grace period to be seen again.
    loaded_at_ms: Mutex<i64>,
    logged: Mutex<HashSet<String>>,
    worker: Mutex<
        Option<(
            tokio::sync::watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
}

/// What a batch run did (`replay`, `spillway capture`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureReport {
    /// Captures worked on (open ones and those closed by this run).
    pub captures: u64,
    pub chunks: u64,
    pub samples: u64,
    pub series: u64,
    /// One line per limit hit.
    pub truncated: Vec<String>,
    /// One line per chunk that failed (it stays to do).
    pub errors: Vec<String>,
    /// Ranges not copied because they reach past `now - lag`.
    pub pending_ms: i64,
    /// How raw samples were read, and why, if not by export.
    pub method: Option<String>,
}

impl Captures {
    /// A manager over `config`, reading raw samples with `source` and
    /// sending them through `router`. Loads the keys on disk.
    pub fn open(
        config: CaptureConfig,
        source: Option<Client>,
        router: Arc<dyn CaptureRouter>,
        clock: Arc<dyn Clock>,
        mode: Mode,
    ) -> std::io::Result<Captures> {
        api::describe_metrics();
        let c = Captures {
            inner: Arc::new(Inner {
                config: RwLock::new(Arc::new(CaptureConfig::default())),
                tracker: Mutex::new(Tracker::default()),
                keys: Mutex::new(HashMap::new()),
                dirty: Mutex::new(HashSet::new()),
                store: Mutex::new(None),
                source: RwLock::new(source.map(|c| Arc::new(RawSource::new(c)))),
                router,
                clock,
                wake: tokio::sync::Notify::new(),
                mode,
                loaded_at_ms: Mutex::new(0),
                logged: Mutex::new(HashSet::new()),
                worker: Mutex::new(None),
            }),
        };
        c.set_config(config)?;
        Ok(c)
    }

    /// Applies a reloaded `captures:`: new definitions apply from now on;
    /// series of captures no longer configured are forgotten and their
    /// open instances stop where they are. `source` replaces the datasource
    /// when given.
    pub fn reconfigure(
        &self,
        config: CaptureConfig,
        source: Option<Client>,
    ) -> std::io::Result<()> {
        if let Some(c) = source {
            *write(&self.inner.source) = Some(Arc::new(RawSource::new(c)));
        }
        self.set_config(config)?;
        self.inner.wake.notify_one();
        Ok(())
    }

    fn set_config(&self, config: CaptureConfig) -> std::io::Result<()> {
        let mut store = lock(&self.inner.store);
        if store.is_none() && !config.is_empty() {
            let s = Store::open(&config.state_dir).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "capture state directory {}: {e}",
                        config.state_dir.display()
                    ),
                )
            })?;
            let (keys, problems) = s.load();
            for p in problems {
                tracing::warn!("{p}");
            }
            let mut map = lock(&self.inner.keys);
            for k in keys {
                map.insert(k.key.clone(), k);
            }
            if !map.is_empty() {
                tracing::info!(keys = map.len(), dir = %s.dir().display(), "capture state loaded: unfinished captures continue where they stopped");
            }
            *lock(&self.inner.loaded_at_ms) = self.inner.clock.now_ms();
            *store = Some(Arc::new(s));
        }
        drop(store);
        lock(&self.inner.tracker).retain(&config);
        {
            let mut keys = lock(&self.inner.keys);
            let now = self.inner.clock.now_ms();
            // Only the daemon owns its captures; `replay` and `spillway
            // capture` leave those of other definitions alone.
            let live = self.inner.mode == Mode::Live;
            for k in keys.values_mut().filter(|_| live) {
                if config.def(&k.capture).is_none() && k.instances.iter().any(|i| !i.stopped) {
                    for i in &mut k.instances {
                        i.stopped = true;
                        i.open = 0;
                        i.restored = false;
                        i.to_ms.get_or_insert(now);
                    }
                    k.breaching.clear();
                    lock(&self.inner.dirty).insert(k.key.clone());
                }
            }
        }
        *write(&self.inner.config) = Arc::new(config);
        Ok(())
    }

    fn config(&self) -> Arc<CaptureConfig> {
        Arc::clone(&read(&self.inner.config))
    }

    pub fn is_empty(&self) -> bool {
        self.config().is_empty()
    }

    /// Ends every breach still open (the end of a replay).
    pub fn finish_breaches(&self) {
        let mut events = Vec::new();
        lock(&self.inner.tracker).finish(&mut events);
        self.apply(events);
    }

    /// Adds a window copied by hand (`spillway capture`) for the capture
    /// `def` (which must be in the config).
    pub fn add_window(&self, def: &CaptureDef, from_ms: i64, to_ms: i64) -> String {
        let key = CaptureKey::new(&def.name, def.matches.clone());
        let id = key.id();
        let now = self.inner.clock.now_ms();
        let mut keys = lock(&self.inner.keys);
        let k = keys
            .entry(id.clone())
            .or_insert_with(|| KeyState::new(id.clone(), &def.name, key.selectors.clone(), now));
        k.instances.push(Instance::manual(from_ms, to_ms, now));
        lock(&self.inner.dirty).insert(id.clone());
        metrics::counter!("spillway_captures_opened_total", "capture" => def.name.to_string())
            .increment(1);
        id
    }

    /// Applies tracker events to the keys.
    fn apply(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let mut keys = lock(&self.inner.keys);
        let mut dirty = lock(&self.inner.dirty);
        let mut wake = false;
        for e in events {
            match e {
                Event::Start {
                    key,
                    identity,
                    at_ms,
                    series,
                } => {
                    let Some(def) = config.def(&key.capture) else {
                        continue;
                    };
                    let id = key.id();
                    let k = keys.entry(id.clone()).or_insert_with(|| {
                        KeyState::new(id.clone(), &key.capture, key.selectors.clone(), now)
                    });
                    if k.start(def, at_ms, identity, &series, now) == Started::Opened {
                        metrics::counter!("spillway_captures_opened_total", "capture" => def.name.to_string())
                            .increment(1);
                        tracing::info!(
                            capture = %def.name,
                            key = %id,
                            selectors = %key.selectors.join(" "),
                            breach = %series,
                            from = %format_rfc3339_ms(at_ms - def.before_ms),
                            "capture opened"
                        );
                    }
                    dirty.insert(id);
                    wake = true;
                }
                Event::End {
                    key,
                    identity,
                    at_ms,
                } => {
                    let Some(def) = config.def(&key.capture) else {
                        continue;
                    };
                    let id = key.id();
                    if let Some(k) = keys.get_mut(&id) {
                        k.end(def, at_ms, identity, now);
                        dirty.insert(id);
                        wake = true;
                    }
                }
                Event::Seen { key, at_ms } => {
                    if let Some(k) = keys.get_mut(&key.id()) {
                        k.seen(at_ms);
                    }
                }
                Event::Refused {
                    capture,
                    reason,
                    message,
                } => {
                    metrics::counter!("spillway_capture_errors_total", "capture" => capture.to_string(), "reason" => reason)
                        .increment(1);
                    self.log_once(&capture, &message);
                }
            }
        }
        if wake {
            self.inner.wake.notify_one();
        }
    }

    fn log_once(&self, capture: &str, message: &str) {
        let mut logged = lock(&self.inner.logged);
        if logged.len() < MAX_LOGGED && logged.insert(format!("{capture}\0{message}")) {
            tracing::warn!(capture, "{message}");
        }
    }
}

impl BatchObserver for Captures {
    fn observe(&self, batch: &ExportBatch) {
        let config = self.config();
        if config.is_empty() {
            return;
        }
        let mut events = Vec::new();
        lock(&self.inner.tracker).observe(batch, &config, &mut events);
        self.apply(events);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
