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
//! - this file: the [`Captures`] manager that ties them together, its
//!   worker, `/api/v1/captures`, the metrics; `command`: `spillway capture`.
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

pub mod command;
pub mod config;
mod fetch;
mod state;
mod store;
mod tracker;

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
        describe_metrics();
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

    /// Starts the worker of a live manager (`spillway run`).
    pub fn start(&self) {
        let mut w = lock(&self.inner.worker);
        if w.is_some() {
            return;
        }
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let this = self.clone();
        let task = tokio::spawn(async move {
            loop {
                if *rx.borrow() {
                    break;
                }
                let mut no_report = None;
                let worked = tokio::select! {
                    r = this.step(&mut no_report) => r,
                    _ = rx.changed() => break,
                };
                if !worked {
                    tokio::select! {
                        _ = this.inner.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = rx.changed() => break,
                    }
                }
            }
        });
        *w = Some((tx, task));
    }

    /// Stops the worker (a chunk in progress is abandoned: copied again at
    /// the next start) and saves every key.
    pub async fn shutdown(&self) {
        let worker = lock(&self.inner.worker).take();
        if let Some((tx, task)) = worker {
            let _ = tx.send(true);
            let _ = task.await;
        }
        self.save_dirty().await;
    }

    /// Copies every chunk that can be copied now, then returns what was done
    /// (`replay`, `spillway capture`).
    pub async fn run_until_idle(&self) -> CaptureReport {
        let started = self.inner.clock.now_ms();
        let mut report = CaptureReport::default();
        {
            let mut r = Some(&mut report);
            while self.step(&mut r).await {}
        }
        // Closes what was finished by the last chunk.
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let horizon = now - config.lag_ms;
        self.housekeeping(&config, now, horizon);
        self.save_dirty().await;
        let keys = lock(&self.inner.keys);
        for k in keys.values().filter(|k| config.def(&k.capture).is_some()) {
            for i in &k.instances {
                report.captures += 1;
                report.series += i.admitted.len() as u64;
                report.pending_ms += (i.end_ms() - horizon.max(i.from_ms)).max(0);
            }
            for s in k.history.iter().filter(|s| s.closed_at_ms >= started) {
                report.captures += 1;
                report.series += s.series as u64;
            }
        }
        report.method = self.source_note();
        report
    }

    fn source_note(&self) -> Option<String> {
        read(&self.inner.source).as_ref().map(|s| {
            let (m, note) = s.method();
            match (m, note) {
                (_, Some(n)) => n,
                (Some(m), None) => format!("raw samples via {}", m.as_str()),
                (None, None) => "not read yet".into(),
            }
        })
    }

    /// One round: housekeeping, then at most one chunk. Returns whether a
    /// chunk was tried (there may be more to do at once).
    async fn step(&self, report: &mut Option<&mut CaptureReport>) -> bool {
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let horizon = now - config.lag_ms;
        self.housekeeping(&config, now, horizon);
        // Live: a new capture is on disk before its first chunk (a restart
        // finds it). Batch runs are simply run again: their keys are
        // written with the first chunk.
        if self.inner.mode == Mode::Live {
            self.save_dirty().await;
        }
        let Some((id, job)) = self.next_job(&config, now, horizon) else {
            return false;
        };
        self.copy(id, job, report).await;
        true
    }

    fn housekeeping(&self, config: &CaptureConfig, now: i64, horizon: i64) {
        if self.inner.mode == Mode::Live {
            let mut events = Vec::new();
            lock(&self.inner.tracker).sweep(horizon, SILENCE_INTERVALS, &mut events);
            self.apply(events);
        }
        let max_interval = config
            .intervals
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(config.default_interval_ms);
        let grace = SILENCE_INTERVALS * max_interval + config.lag_ms;
        let restored_expired =
            self.inner.mode == Mode::Live && now - *lock(&self.inner.loaded_at_ms) > grace;
        let mut keys = lock(&self.inner.keys);
        let mut dirty = lock(&self.inner.dirty);
        let mut forget = Vec::new();
        for k in keys.values_mut() {
            let Some(def) = config.def(&k.capture) else {
                for s in k.close_finished(now) {
                    self.closed(&k.capture, &k.key, &s);
                    dirty.insert(k.key.clone());
                }
                continue;
            };
            if restored_expired && k.instances.iter().any(|i| i.restored) {
                k.expire_restored(def, config.default_interval_ms);
                dirty.insert(k.key.clone());
            }
            if k.check_max_duration(horizon) {
                metrics::counter!("spillway_captures_truncated_total", "capture" => def.name.to_string(), "reason" => "max_duration").increment(1);
                tracing::warn!(capture = %def.name, key = %k.key, "capture reached max_duration while the breach goes on; it stops there (truncated)");
                dirty.insert(k.key.clone());
            }
            for s in k.close_finished(now) {
                self.closed(&k.capture, &k.key, &s);
                dirty.insert(k.key.clone());
            }
            // Keys with nothing open are kept for a week (their copied
            // ranges prevent re-sending), then forgotten.
            if !k.is_active() && now - k.updated_at_ms > 7 * 86_400_000 {
                forget.push(k.key.clone());
            }
        }
        for id in forget {
            keys.remove(&id);
            dirty.remove(&id);
            if let Some(s) = lock(&self.inner.store).as_ref() {
                let _ = s.remove(&id);
            }
        }
    }

    fn closed(&self, capture: &str, key: &str, s: &state::Summary) {
        metrics::counter!("spillway_captures_closed_total", "capture" => capture.to_string())
            .increment(1);
        tracing::info!(
            capture,
            key,
            from = %format_rfc3339_ms(s.from_ms),
            to = %format_rfc3339_ms(s.to_ms),
            series = s.series,
            samples = s.samples,
            truncated = ?s.truncated,
            "capture closed"
        );
    }

    async fn save_dirty(&self) {
        let ids: Vec<String> = lock(&self.inner.dirty).drain().collect();
        if ids.is_empty() {
            return;
        }
        let Some(store) = lock(&self.inner.store).clone() else {
            return;
        };
        let states: Vec<KeyState> = {
            let keys = lock(&self.inner.keys);
            ids.iter().filter_map(|id| keys.get(id).cloned()).collect()
        };
        let result = tokio::task::spawn_blocking(move || {
            states
                .iter()
                .map(|k| store.save(k).map_err(|e| (k.key.clone(), e)))
                .filter_map(Result::err)
                .collect::<Vec<_>>()
        })
        .await;
        if let Ok(failed) = result {
            for (id, e) in failed {
                tracing::error!(key = %id, "cannot save the capture state: {e}; it is tried again");
                lock(&self.inner.dirty).insert(id);
            }
        }
    }

    /// The oldest ready chunk over all keys, as a job.
    fn next_job(
        &self,
        config: &CaptureConfig,
        now: i64,
        horizon: i64,
    ) -> Option<(String, PendingJob)> {
        let keys = lock(&self.inner.keys);
        let (k, def, chunk) = keys
            .values()
            .filter(|k| k.retry_at_ms <= now)
            .filter_map(|k| {
                let def = config.def(&k.capture)?;
                Some((k, def, k.next_chunk(def, horizon)?))
            })
            .min_by_key(|(_, _, c)| c.from_ms)?;
        let inst = &k.instances[chunk.instance];
        Some((
            k.key.clone(),
            PendingJob {
                def: def.clone(),
                selectors: k.selectors.clone(),
                from_ms: chunk.from_ms,
                to_ms: chunk.to_ms,
                admitted: inst.admitted.clone(),
                samples_left: def.max_samples.saturating_sub(inst.samples),
            },
        ))
    }

    async fn copy(&self, id: String, mut job: PendingJob, report: &mut Option<&mut CaptureReport>) {
        let Some(source) = read(&self.inner.source).clone() else {
            self.failed(&id, "no datasource to read raw samples from".into());
            return;
        };
        let def = &job.def;
        let out = Out {
            router: &*self.inner.router,
            origin: Origin {
                kind: ExportKind::Capture,
                capture: Some(Arc::clone(&def.name)),
                ..Origin::default()
            },
            destinations: &def.destinations,
        };
        let result = source
            .copy(
                Job {
                    selectors: &job.selectors,
                    from_ms: job.from_ms,
                    to_ms: job.to_ms,
                    max_series: def.max_series,
                    admitted: std::mem::take(&mut job.admitted),
                    samples_left: job.samples_left,
                    labels: &def.labels,
                    fallback_step_ms: def.fallback_step_ms,
                },
                &out,
            )
            .await;
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                let msg = format!(
                    "copying {} .. {}: {e}",
                    format_rfc3339_ms(job.from_ms),
                    format_rfc3339_ms(job.to_ms)
                );
                if let Some(r) = report.as_deref_mut() {
                    r.errors.push(format!(
                        "capture {} ({}): {msg}",
                        def.name,
                        job.selectors.join(" ")
                    ));
                }
                self.failed(&id, msg);
                return;
            }
        };
        let samples = outcome.samples;
        if !self.record(&id, &job, outcome, report) {
            return;
        }
        // The chunk counts as copied only once this is on disk.
        self.save_dirty().await;
        if let Some(r) = report.as_deref_mut() {
            r.chunks += 1;
            r.samples += samples;
        }
    }

    /// Applies a copied chunk to its key; `false` if the key is gone.
    fn record(
        &self,
        id: &str,
        job: &PendingJob,
        outcome: fetch::Outcome,
        report: &mut Option<&mut CaptureReport>,
    ) -> bool {
        let def = &job.def;
        let now = self.inner.clock.now_ms();
        let mut keys = lock(&self.inner.keys);
        let Some(k) = keys.get_mut(id) else {
            return false;
        };
        k.copied.add(job.from_ms, job.to_ms);
        k.last_error = None;
        k.failures = 0;
        k.updated_at_ms = now;
        if let Some(i) = k
            .instances
            .iter_mut()
            .find(|i| i.from_ms <= job.from_ms && job.from_ms < i.end_ms())
        {
            i.samples += outcome.samples;
            i.admitted.extend(outcome.admitted);
            i.refused_series += outcome.refused_series;
            let name = def.name.to_string();
            if outcome.series_limited && i.truncated.insert("max_series".into()) {
                metrics::counter!("spillway_captures_truncated_total", "capture" => name.clone(), "reason" => "max_series").increment(1);
                tracing::warn!(capture = %name, key = %id, max_series = def.max_series, "capture truncated: its selectors match more than max_series series; the first ones are copied");
                if let Some(r) = report.as_deref_mut() {
                    r.truncated.push(format!(
                        "capture {name} ({}): more than max_series ({}) series",
                        job.selectors.join(" "),
                        def.max_series
                    ));
                }
            }
            if outcome.samples_limited && i.truncated.insert("max_samples".into()) {
                i.stopped = true;
                metrics::counter!("spillway_captures_truncated_total", "capture" => name.clone(), "reason" => "max_samples").increment(1);
                tracing::warn!(capture = %name, key = %id, max_samples = def.max_samples, "capture truncated: max_samples reached; nothing more is copied for it");
                if let Some(r) = report.as_deref_mut() {
                    r.truncated.push(format!(
                        "capture {name} ({}): max_samples ({}) reached",
                        job.selectors.join(" "),
                        def.max_samples
                    ));
                }
            }
        }
        // Closed now, the key is written once for the chunk and the close.
        for s in k.close_finished(now) {
            self.closed(&k.capture, &k.key, &s);
        }
        lock(&self.inner.dirty).insert(id.to_string());
        true
    }

    fn failed(&self, id: &str, msg: String) {
        let now = self.inner.clock.now_ms();
        let mut keys = lock(&self.inner.keys);
        let Some(k) = keys.get_mut(id) else { return };
        k.failures += 1;
        let backoff = 1000i64 << k.failures.min(6);
        k.retry_at_ms = now + backoff;
        if k.failures == 1 || k.last_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!(capture = %k.capture, key = %id, retry_in_ms = backoff, "capture: {msg}");
        }
        k.last_error = Some(msg);
        metrics::counter!("spillway_capture_errors_total", "capture" => k.capture.clone(), "reason" => "copy").increment(1);
    }

    /// Refreshes the `/metrics` gauges.
    pub fn collect_metrics(&self) {
        let config = self.config();
        let mut open: BTreeMap<String, u64> = config
            .defs
            .iter()
            .map(|d| (d.name.to_string(), 0))
            .collect();
        for k in lock(&self.inner.keys).values() {
            if let Some(n) = open.get_mut(&k.capture) {
                *n += k.instances.len() as u64;
            }
        }
        for (capture, n) in open {
            metrics::gauge!("spillway_captures_open", "capture" => capture).set(n as f64);
        }
    }

    /// `GET /api/v1/captures`: open captures, then recent closed ones.
    pub fn api_json(&self) -> serde_json::Value {
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let horizon = now - config.lag_ms;
        let keys = lock(&self.inner.keys);
        let mut open = Vec::new();
        let mut recent = Vec::new();
        for k in keys.values() {
            for i in &k.instances {
                open.push(instance_json(k, i, horizon));
            }
            for s in &k.history {
                recent.push((s.closed_at_ms, summary_json(k, s)));
            }
        }
        let order = |c: &serde_json::Value| {
            ["from", "name", "key"].map(|f| c[f].as_str().unwrap_or_default().to_string())
        };
        open.sort_by_key(order);
        recent.sort_by_key(|r| std::cmp::Reverse(r.0));
        recent.truncate(100);
        let (method, note) = read(&self.inner.source)
            .as_ref()
            .map(|s| s.method())
            .unwrap_or((None, None));
        serde_json::json!({
            "status": "success",
            "data": {
                "configured": config.defs.iter().map(|d| serde_json::json!({
                    "name": &*d.name,
                    "match": d.matches,
                    "destinations": d.destinations,
                    "before": d.before_ms / 1000,
                    "after": d.after_ms / 1000,
                })).collect::<Vec<_>>(),
                "source": {"method": method.map(Method::as_str), "note": note},
                "captures": open.into_iter().chain(recent.into_iter().map(|r| r.1)).collect::<Vec<_>>(),
            }
        })
    }

    /// `GET /api/v1/captures/chart?key=K`: the captured series of the
    /// key's latest capture, read back from the source at about 200 points.
    pub async fn chart_json(&self, key: &str) -> Result<serde_json::Value, String> {
        let config = self.config();
        let horizon = self.inner.clock.now_ms() - config.lag_ms;
        let (selectors, from, to) = {
            let keys = lock(&self.inner.keys);
            let k = keys
                .get(key)
                .ok_or_else(|| format!("no capture key {key:?}"))?;
            let (from, to) = match (k.instances.last(), k.history.last()) {
                (Some(i), _) => (i.from_ms, i.end_ms().min(horizon)),
                (None, Some(s)) => (s.from_ms, s.to_ms),
                (None, None) => return Err(format!("capture key {key:?} has no capture")),
            };
            (k.selectors.clone(), from, to)
        };
        let source = read(&self.inner.source).clone().ok_or("no datasource")?;
        let series = source
            .chart(&selectors, from, to.max(from + 1000), 10, 200)
            .await
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({
            "status": "success",
            "data": {
                "from": format_rfc3339_ms(from),
                "to": format_rfc3339_ms(to),
                "series": series.iter().map(|s| serde_json::json!({
                    "labels": s.labels.to_string(),
                    "points": s.samples.iter().filter(|p| p.value.is_finite()).map(|p| [p.timestamp_ms as f64, p.value]).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }
        }))
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

struct PendingJob {
    def: CaptureDef,
    selectors: Vec<String>,
    from_ms: i64,
    to_ms: i64,
    admitted: HashSet<u64>,
    samples_left: u64,
}

/// Copied batches to the capture's destinations, counted per destination.
struct Out<'a> {
    router: &'a dyn CaptureRouter,
    origin: Origin,
    destinations: &'a [String],
}

impl BatchOut for Out<'_> {
    fn send(&self, batch: Vec<Series>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let samples = crate::model::series::sample_count(&batch) as u64;
            self.router
                .route_to(
                    ExportBatch::new(self.origin.clone(), batch),
                    self.destinations,
                )
                .await?;
            let capture = self
                .origin
                .capture
                .as_deref()
                .unwrap_or_default()
                .to_string();
            for d in self.destinations {
                metrics::counter!("spillway_capture_samples_total", "capture" => capture.clone(), "destination" => d.clone())
                    .increment(samples);
            }
            Ok(())
        })
    }
}

fn instance_json(k: &KeyState, i: &Instance, horizon: i64) -> serde_json::Value {
    let state = if i.stopped {
        "stopped"
    } else if i.breaching() {
        "open"
    } else {
        "closing"
    };
    let end = i.end_ms();
    let copied = k.copied.covered_ms(i.from_ms, end);
    serde_json::json!({
        "name": k.capture,
        "key": k.key,
        "selectors": k.selectors,
        "state": state,
        "breaching": k.breaching.values().collect::<Vec<_>>(),
        "breach_start": format_rfc3339_ms(i.breach_start_ms),
        "breach_end": i.breach_end_ms.map(format_rfc3339_ms),
        "from": format_rfc3339_ms(i.from_ms),
        "to": if i.breaching() && !i.truncated.contains("max_duration") { None } else { Some(format_rfc3339_ms(end)) },
        "copied_seconds": copied / 1000,
        "pending_seconds": ((end.min(horizon.max(i.from_ms)) - i.from_ms) - copied).max(0) / 1000,
        "series": i.admitted.len(),
        "samples": i.samples,
        "refused_series": i.refused_series,
        "truncated": i.truncated,
        "last_error": k.last_error,
    })
}

fn summary_json(k: &KeyState, s: &state::Summary) -> serde_json::Value {
    serde_json::json!({
        "name": k.capture,
        "key": k.key,
        "selectors": k.selectors,
        "state": "closed",
        "breaching": [],
        "breach_start": format_rfc3339_ms(s.breach_start_ms),
        "breach_end": s.breach_end_ms.map(format_rfc3339_ms),
        "from": format_rfc3339_ms(s.from_ms),
        "to": format_rfc3339_ms(s.to_ms),
        "closed_at": format_rfc3339_ms(s.closed_at_ms),
        "series": s.series,
        "samples": s.samples,
        "truncated": s.truncated,
        "last_error": null,
    })
}

/// `GET /api/v1/captures` and the chart route.
pub fn api_router(captures: Option<Captures>) -> axum::Router {
    use axum::extract::Query;
    use axum::routing::get;
    #[derive(serde::Deserialize)]
    struct ChartQuery {
        key: String,
    }
    let list = captures.clone();
    axum::Router::new()
        .route(
            "/api/v1/captures",
            get(move || {
                let c = list.clone();
                async move {
                    axum::Json(match c {
                        Some(c) => c.api_json(),
                        None => serde_json::json!({"status": "success", "data": {"configured": [], "source": null, "captures": []}}),
                    })
                }
            }),
        )
        .route(
            "/api/v1/captures/chart",
            get(move |Query(q): Query<ChartQuery>| {
                let c = captures.clone();
                async move {
                    let Some(c) = c else {
                        return Err(crate::server::ApiError::BadRequest("no captures configured".into()));
                    };
                    c.chart_json(&q.key)
                        .await
                        .map(axum::Json)
                        .map_err(crate::server::ApiError::BadRequest)
                }
            }),
        )
}

fn describe_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!("spillway_captures_opened_total", "Breach captures opened (a breach whose window overlaps an open capture joins it).");
        metrics::describe_counter!("spillway_captures_closed_total", "Breach captures whose window was copied after their breach ended.");
        metrics::describe_counter!("spillway_captures_truncated_total", "Breach captures that hit a limit: max_series, max_samples or max_duration.");
        metrics::describe_counter!("spillway_capture_samples_total", "Raw samples a capture handed to a destination (before the destination's relabeling).");
        metrics::describe_gauge!("spillway_captures_open", "Breach captures open now (breaching, or copying their after-part).");
        metrics::describe_counter!("spillway_capture_errors_total", "Breaches that opened no capture (reason bad_selector, max_breaching) and chunk copies that failed (reason copy; retried).");
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector::parse_label_set;
    use crate::model::Sample;
    use crate::run::schedule::TokioClock;

    /// Keeps what it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<(ExportBatch, Vec<String>)>>);

    impl CaptureRouter for Kept {
        fn route_to<'a>(
            &'a self,
            batch: ExportBatch,
            destinations: &'a [String],
        ) -> BoxFuture<'a, Result<(), String>> {
            lock(&self.0).push((batch, destinations.to_vec()));
            Box::pin(async { Ok(()) })
        }
    }

    fn config(dir: &std::path::Path, names: &[&str]) -> CaptureConfig {
        CaptureConfig {
            defs: names
                .iter()
                .map(|n| {
                    let mut d = CaptureDef::manual(
                        n,
                        vec![r#"{instance="{{ $labels.instance }}"}"#.into()],
                        vec!["d".into()],
                    );
                    d.before_ms = 60_000;
                    d.after_ms = 60_000;
                    d
                })
                .collect(),
            state_dir: dir.join(config::STATE_DIR),
            lag_ms: 0,
            default_interval_ms: 10_000,
            ..CaptureConfig::default()
        }
    }

    fn breach(at: i64, stale: bool) -> ExportBatch {
        let s = if stale {
            Sample::stale(at)
        } else {
            Sample::new(at, 1.0)
        };
        ExportBatch::new(
            Origin::rule(ExportKind::Recording, "g", "r"),
            vec![Series::new(
                parse_label_set(r#"r{instance="a"}"#).unwrap(),
                vec![s],
            )],
        )
    }

    fn states(c: &Captures) -> Vec<String> {
        c.api_json()["data"]["captures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["name"].as_str().unwrap(),
                    c["state"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn breaches_persist_and_a_reload_stops_removed_captures() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::starting_at(1_000_000));
        let open = |names: &[&str]| {
            Captures::open(
                config(dir.path(), names),
                None,
                Arc::new(Kept::default()),
                clock.clone(),
                Mode::Live,
            )
            .unwrap()
        };
        let c = open(&["cpu", "mem"]);
        c.observe(&breach(990_000, false));
        assert_eq!(states(&c), ["cpu open", "mem open"]);
        c.shutdown().await;
        // After a restart the open captures are back, still breaching.
        let c = open(&["cpu", "mem"]);
        assert_eq!(states(&c), ["cpu open", "mem open"]);
        // A reload without `mem`: its capture stops where it is.
        c.reconfigure(config(dir.path(), &["cpu"]), None).unwrap();
        assert_eq!(states(&c), ["cpu open", "mem stopped"]);
        // The engine finds the breach again after its restart; then its
        // stale marker ends it: copying the after part remains.
        c.observe(&breach(1_000_000, false));
        assert_eq!(states(&c), ["cpu open", "mem stopped"]);
        c.observe(&breach(1_010_000, true));
        assert!(
            states(&c).contains(&"cpu closing".to_string()),
            "{:?}",
            states(&c)
        );
    }
}
