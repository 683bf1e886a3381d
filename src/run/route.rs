//! Routing: the one way series enter the destinations of `spillway run`,
//! whether they come from the receiver (`/api/v1/write`, `/api/v1/import`)
//! or from the rule engine's evaluations.
//!
//! ```text
//! route(batch) ─► global_relabel_configs ─► external_labels ─┬─► destination A: accept (relabel, encode, queue)
//!                                                            └─► destination B: accept ...
//! ```
//!
//! [`Pipeline::route`] returns once every destination has the batch on
//! disk (or reports which could not take it), so a caller that gets `Ok`
//! may forget the batch: from here on delivery is the destinations' job
//! (at-least-once, see [`crate::sink::destination`]). A caller that gets
//! `Err` should retry the whole batch later (a receiver answers 503 so its
//! client does); destinations that had already taken it then hold it twice,
//! which is harmless downstream.
//!
//! Relabeling works as in vmagent's remote-write path: after the rules,
//! labels starting with `__` (other than `__name__`) are removed, and a
//! series left without labels is dropped. External labels follow
//! Prometheus: added to a series that does not have the label already. They are applied after global relabeling, and a
//! destination's own `external_labels` after its own relabeling.
//!
//! Breach captures hook in twice: a [`BatchObserver`] sees every batch of
//! rule results after global relabeling (a capture's `if:` selector is
//! written against those labels), and [`Pipeline::route_to`] takes the raw
//! samples a capture copied to the destinations it names. Those go through
//! each destination's relabeling, external labels and queue, but not
//! through `global_relabel_configs` or the run's `external_labels`: those
//! are written for rule results, and raw data keeps its own labels.

use super::config::{DestinationLines, DestinationSpec, ItemLines, LoadedConfig, RunConfig};
use crate::client::Endpoint;
use crate::model::size::{format_size, parse_size};
use crate::model::time::parse_duration;
use crate::model::{ExportBatch, Series};
use crate::sink::destination::{
    self, queue_dir_name, Destination, DestinationConfig, DestinationError, DestinationKind,
    DestinationStatus, DropReason, MIN_MAX_DISK_BYTES,
};
use crate::sink::schedule::{Outside, Schedule};
use crate::transform::relabel::{Dialect, RelabelConfig, RelabelRules};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where destination queues live unless `storage.path` says otherwise.
pub const DEFAULT_STORAGE_PATH: &str = "./spillway-data";

/// Everything the pipeline needs, checked.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub global_relabel: RelabelRules,
    pub external_labels: Vec<(String, String)>,
    pub destinations: Vec<DestinationConfig>,
}

impl PipelineConfig {
    /// Checks the routing part of a run config (global relabeling,
    /// external labels, destinations, storage) and reports every problem,
    /// each as `FILE:LINE: path.field: what is wrong`.
    pub fn check(loaded: &LoadedConfig) -> Result<PipelineConfig, Vec<String>> {
        let LoadedConfig {
            config,
            source,
            lines,
        } = loaded;
        let mut problems = Vec::new();
        let global_relabel = compile_relabel(
            &config.global_relabel_configs,
            config.relabel_dialect.unwrap_or_default(),
            source,
            "global_relabel_configs",
            &lines.global_relabel_configs,
        )
        .unwrap_or_else(|p| {
            problems.extend(p);
            RelabelRules::empty(Dialect::default())
        });
        let external_labels = check_labels(&config.external_labels, "external_labels")
            .unwrap_or_else(|p| {
                problems.extend(p.into_iter().map(|p| format!("{source}: {p}")));
                Vec::new()
            });
        let storage = config
            .storage
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_PATH));
        if config.destinations.is_empty() {
            problems.push(format!(
                "{source}: destinations: none configured; `spillway run` needs at least one, e.g.\n  \
                 destinations:\n    - name: incidents\n      type: remote_write\n      url: http://127.0.0.1:8428/api/v1/write"
            ));
        }
        let mut destinations = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut dirs: HashMap<String, usize> = HashMap::new();
        let no_lines = DestinationLines::default();
        for (i, spec) in config.destinations.iter().enumerate() {
            let dl = lines.destinations.get(i).unwrap_or(&no_lines);
            let place = Place {
                source,
                lines: &dl.item,
                index: i,
            };
            let at = |field: &str| place.at(field);
            let before = problems.len();
            if spec.name.trim().is_empty() {
                problems.push(format!(
                    "{}: missing; give each destination a unique name (it names its queue directory and its metrics)",
                    at("name")
                ));
            } else if let Some(&j) = seen.get(&spec.name) {
                problems.push(format!(
                    "{}: {:?} is already the name of destinations[{j}]; names must be unique",
                    at("name"),
                    spec.name
                ));
            } else {
                seen.insert(spec.name.clone(), i);
                let dir = queue_dir_name(&spec.name);
                if dir.len() > MAX_DESTINATION_NAME_BYTES {
                    problems.push(format!(
                        "{}: {} bytes long; a name becomes its queue directory's, which file systems limit: use at most {MAX_DESTINATION_NAME_BYTES} bytes",
                        at("name"),
                        spec.name.len()
                    ));
                } else if let Some(&j) = dirs.get(&dir) {
                    problems.push(format!(
                        "{}: {:?} and destinations[{j}] would share the queue directory {}; rename one",
                        at("name"),
                        spec.name,
                        storage.join(&dir).display()
                    ));
                }
                dirs.insert(dir, i);
            }
            let dialect = spec
                .relabel_dialect
                .or(config.relabel_dialect)
                .unwrap_or_default();
            match check_destination(spec, &place, &dl.relabel_configs, dialect, &storage) {
                Ok(d) if problems.len() == before => destinations.push(d),
                Ok(_) => {}
                Err(p) => problems.extend(p),
            }
        }
        for (i, spec) in config.destinations.iter().enumerate() {
            let Some(name) = spec.outside_schedule.as_deref().map(str::trim) else {
                continue;
            };
            if name != "drop" && name != spec.name && !seen.contains_key(name) {
                let dl = lines.destinations.get(i).unwrap_or(&no_lines);
                let place = Place {
                    source,
                    lines: &dl.item,
                    index: i,
                };
                let names: Vec<&str> = config
                    .destinations
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                problems.push(format!(
                    "{}: no destination is named {name:?}; name one of {} or `drop`",
                    place.at("outside_schedule"),
                    names.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(PipelineConfig {
                global_relabel,
                external_labels,
                destinations,
            })
        } else {
            Err(problems)
        }
    }
}

pub(crate) fn compile_relabel(
    configs: &[RelabelConfig],
    dialect: Dialect,
    source: &str,
    path: &str,
    lines: &[ItemLines],
) -> Result<RelabelRules, Vec<String>> {
    let items = (0..configs.len())
        .map(|i| {
            lines
                .get(i)
                .map_or((0, HashMap::new()), |l| (l.line, l.fields.clone()))
        })
        .collect();
    RelabelRules::from_configs_at(configs.to_vec(), dialect, source, path, items)
        .map_err(|e| e.problems().iter().map(|p| p.to_string()).collect())
}

/// The longest destination name: it names a directory, and file systems
/// refuse names over 255 bytes (the margin keeps room for a suffix).
pub const MAX_DESTINATION_NAME_BYTES: usize = 200;

/// Label names as Prometheus allows them; values must not be empty (an
/// empty value would mean "no such label").
pub(crate) fn check_labels(
    labels: &std::collections::BTreeMap<String, String>,
    path: &str,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut problems = Vec::new();
    for (k, v) in labels {
        let valid = k
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if k.is_empty() || !valid {
            problems.push(format!(
                "{path}: {k:?} is not a valid label name (letters, digits and _, not starting with a digit)"
            ));
        } else if v.is_empty() {
            problems.push(format!(
                "{path}.{k}: empty value; remove the label or give it a value"
            ));
        }
    }
    if problems.is_empty() {
        Ok(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    } else {
        Err(problems)
    }
}

/// Where a destination sits in the file, for messages.
struct Place<'a> {
    source: &'a str,
    lines: &'a ItemLines,
    index: usize,
}

impl Place<'_> {
    /// `FILE:LINE` of the field (of the entry when the field is absent).
    fn loc(&self, field: &str) -> String {
        match self.lines.field(field) {
            0 => self.source.to_string(),
            line => format!("{}:{line}", self.source),
        }
    }

    /// `FILE:LINE: destinations[i].field`.
    fn at(&self, field: &str) -> String {
        let path = format!("destinations[{}]", self.index);
        if field.is_empty() {
            format!("{}: {path}", self.loc(field))
        } else {
            format!("{}: {path}.{field}", self.loc(field))
        }
    }
}

fn check_destination(
    spec: &DestinationSpec,
    place: &Place<'_>,
    relabel_lines: &[ItemLines],
    dialect: Dialect,
    storage: &std::path::Path,
) -> Result<DestinationConfig, Vec<String>> {
    let i = place.index;
    let source = place.source;
    let at = |field: &str| place.at(field);
    let mut problems = Vec::new();
    let kind = match spec.kind.as_deref() {
        None => DestinationKind::RemoteWrite,
        Some(k) => DestinationKind::parse(k).unwrap_or_else(|e| {
            problems.push(format!("{}: {e}", at("type")));
            DestinationKind::RemoteWrite
        }),
    };
    let what = format!("destinations[{i}]");
    let event_kind = match kind {
        DestinationKind::Event(k) => Some(k),
        _ => None,
    };
    let http = event_kind.is_none_or(|k| k.is_http());
    let mut client = if !http {
        // Syslog and file destinations have no HTTP client.
        Some(crate::client::ClientConfig {
            url: spec.url.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else {
        match spec.connection().to_client_config(&what) {
            Ok(c) => {
                if let Err(e) = Endpoint::parse(&c.url) {
                    problems.push(format!("{}: {e}", at("url")));
                }
                Some(c)
            }
            Err(e) => {
                // The message starts with `destinations[i].field`; point at that field's line.
                let field: String = e
                    .strip_prefix(&format!("{what}."))
                    .unwrap_or("")
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                problems.push(format!("{}: {e}", place.loc(&field)));
                None
            }
        }
    };
    let event = match event_kind {
        Some(k) => events::check_event(
            spec,
            k,
            place,
            storage,
            if http { client.as_mut() } else { None },
            &mut problems,
        ),
        None => {
            problems.extend(events::check_metric_fields(spec, place));
            None
        }
    };
    let schedule = events::check_schedule(spec, place, &mut problems);
    let relabel = compile_relabel(
        &spec.relabel_configs,
        dialect,
        source,
        &format!("destinations[{i}].relabel_configs"),
        relabel_lines,
    )
    .unwrap_or_else(|p| {
        problems.extend(p);
        RelabelRules::empty(dialect)
    });
    let external_labels = check_labels(&spec.external_labels, &format!("{what}.external_labels"))
        .unwrap_or_else(|p| {
            let loc = place.loc("external_labels");
            problems.extend(p.into_iter().map(|p| format!("{loc}: {p}")));
            Vec::new()
        });
    let max_batch_samples = match spec.max_batch_samples {
        Some(0) => {
            problems.push(format!("{}: must be at least 1", at("max_batch_samples")));
            1
        }
        Some(n) => n,
        None => destination::DEFAULT_MAX_BATCH_SAMPLES,
    };
    let flush_interval = match spec.flush_interval.as_deref().map(parse_duration) {
        None => destination::DEFAULT_FLUSH_INTERVAL,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(format!("{}: {e}", at("flush_interval")));
            Duration::ZERO
        }
    };
    // One writer keeps a file whole and a syslog stream in order.
    let single = matches!(
        event_kind,
        Some(crate::sink::event::EventKind::File | crate::sink::event::EventKind::Syslog)
    );
    let concurrency = match spec.concurrency {
        Some(0) => {
            problems.push(format!("{}: must be at least 1", at("concurrency")));
            1
        }
        Some(n) if n > destination::MAX_CONCURRENCY => {
            problems.push(format!(
                "{}: must be at most {} (one sender per queue lane), got {n}",
                at("concurrency"),
                destination::MAX_CONCURRENCY
            ));
            1
        }
        Some(n) if n > 1 && event_kind == Some(crate::sink::event::EventKind::File) => {
            problems.push(format!(
                "{}: a file destination has one writer; remove concurrency or set 1",
                at("concurrency")
            ));
            1
        }
        Some(n) => n,
        None if single => 1,
        None => destination::default_concurrency(),
    };
    let max_disk_bytes = match spec.max_disk_bytes.as_deref().map(parse_size) {
        None => destination::DEFAULT_MAX_DISK_BYTES,
        Some(Ok(n)) if n < MIN_MAX_DISK_BYTES => {
            problems.push(format!(
                "{}: {} is too small; give at least {}",
                at("max_disk_bytes"),
                format_size(n),
                format_size(MIN_MAX_DISK_BYTES)
            ));
            MIN_MAX_DISK_BYTES
        }
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            problems.push(format!("{}: {e}", at("max_disk_bytes")));
            0
        }
    };
    let on_full = match spec
        .on_full
        .as_deref()
        .map(destination::OnFullPolicy::parse)
    {
        None => destination::OnFullPolicy::default(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            problems.push(format!("{}: {e}", at("on_full")));
            destination::OnFullPolicy::default()
        }
    };
    let protocol = destination::WriteProtocol::check(spec.protocol.as_deref(), kind)
        .map_err(|e| problems.push(format!("{}: {e}", at("protocol"))))
        .unwrap_or_default();
    match client {
        Some(client) if problems.is_empty() => Ok(DestinationConfig {
            name: spec.name.clone(),
            kind,
            client,
            relabel,
            external_labels,
            max_batch_samples,
            flush_interval,
            concurrency,
            max_disk_bytes,
            on_full,
            queue_dir: storage.join(queue_dir_name(&spec.name)),
            event,
            schedule,
            protocol,
        }),
        _ => Err(problems),
    }
}

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
    routing: std::sync::RwLock<Arc<Routing>>,
    /// Held shared by every batch in progress and exclusively by a reload,
    /// so a destination is never stopped under a batch it is taking.
    gate: tokio::sync::RwLock<()>,
    closed: AtomicBool,
    started: AtomicBool,
    routed_samples: AtomicU64,
    relabel_dropped: AtomicU64,
    /// Sees rule results after global relabeling (breach captures).
    observer: std::sync::RwLock<Option<Arc<dyn BatchObserver>>>,
}

/// Sees every batch of rule results after global relabeling, before the
/// destinations take it. Called on a blocking thread for every batch, and
/// again for a batch the engine retries: it must be quick and idempotent.
pub trait BatchObserver: Send + Sync {
    fn observe(&self, batch: &ExportBatch);
}

/// One configuration of the pipeline.
struct Routing {
    global: Arc<GlobalStage>,
    destinations: Arc<Vec<Arc<Destination>>>,
    /// Per destination, the config it was opened with.
    configs: Vec<DestinationConfig>,
}

impl Routing {
    /// Every destination's accept, with schedules applied: samples outside
    /// a destination's windows are dropped (counted) or handed, as that
    /// destination would send them (its relabeling and external labels
    /// applied), to its fallback, which sends them as they are (neither its
    /// own relabeling nor its schedule apply to them). Destinations with
    /// `on_full: block` are offered the batch first: when one of them is
    /// full the batch goes nowhere else either, so the retry that follows
    /// does not duplicate it in the others.
    fn accept(&self, batch: &ExportBatch) -> Vec<DestinationError> {
        let mut order: Vec<usize> = (0..self.destinations.len()).collect();
        order.sort_by_key(|&i| self.destinations[i].on_full() != destination::OnFullPolicy::Block);
        let mut errors = Vec::new();
        for i in order {
            self.accept_one(&self.destinations[i], &self.configs[i], batch, &mut errors);
            if errors
                .iter()
                .any(|e| matches!(e, DestinationError::Full { .. }))
            {
                break;
            }
        }
        errors
    }

    fn accept_one(
        &self,
        d: &Arc<Destination>,
        cfg: &DestinationConfig,
        batch: &ExportBatch,
        errors: &mut Vec<DestinationError>,
    ) {
        let Some(route) = &cfg.schedule else {
            errors.extend(d.accept_with(&batch.series, batch.meta()).err());
            return;
        };
        let Some((inside, outside)) = split_by_schedule(batch, &route.schedule) else {
            errors.extend(d.accept_with(&batch.series, batch.meta()).err());
            return;
        };
        if !inside.is_empty() {
            errors.extend(d.accept_with(&inside.series, inside.meta()).err());
        }
        let outside_samples = outside.sample_count() as u64;
        let fallback = match &route.outside {
            Outside::Drop => None,
            Outside::Fallback(name) => self.destinations.iter().find(|f| f.name() == name),
        };
        let Some(fallback) = fallback else {
            d.count_dropped(DropReason::Schedule, outside_samples);
            return;
        };
        let mut handed = outside;
        let mut filtered = 0u64;
        handed.retain_mut(|s| match d.relabeled_labels(&s.labels) {
            Some(l) => {
                s.labels = l;
                true
            }
            None => {
                filtered += s.samples.len() as u64;
                false
            }
        });
        d.count_dropped(DropReason::Relabel, filtered);
        if !handed.is_empty() {
            errors.extend(fallback.accept_as_is(&handed.series, handed.meta()).err());
        }
    }
}

/// The batch cut by `schedule` into (inside, outside); `None` when every
/// sample is inside (the common case costs no copy).
fn split_by_schedule(
    batch: &ExportBatch,
    schedule: &Schedule,
) -> Option<(ExportBatch, ExportBatch)> {
    let all_in = batch
        .series
        .iter()
        .all(|s| s.samples.iter().all(|p| schedule.contains(p.timestamp_ms)));
    if all_in {
        return None;
    }
    let mut inside = ExportBatch::new(batch.origin.clone(), Vec::new());
    let mut outside = ExportBatch::new(batch.origin.clone(), Vec::new());
    let annotated = !batch.annotations.is_empty();
    for (i, s) in batch.series.iter().enumerate() {
        let (a, b): (Vec<_>, Vec<_>) = s
            .samples
            .iter()
            .partition(|p| schedule.contains(p.timestamp_ms));
        for (part, samples) in [(&mut inside, a), (&mut outside, b)] {
            if samples.is_empty() {
                continue;
            }
            part.series.push(Series::new(s.labels.clone(), samples));
            if annotated {
                part.annotations.push(batch.annotations_of(i).cloned());
            }
        }
    }
    Some((inside, outside))
}

/// What a reload did to the routing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingChange {
    /// `global_relabel_configs` or `external_labels` changed.
    pub global: bool,
    pub kept: Vec<String>,
    /// Changed: stopped and opened again on the same queue directory.
    pub rebuilt: Vec<String>,
    pub added: Vec<String>,
    /// Stopped; their queue directories stay (see `sink::destination`).
    pub removed: Vec<String>,
}

impl RoutingChange {
    pub fn is_empty(&self) -> bool {
        !self.global && self.rebuilt.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

/// Everything a destination is built from, credentials included (hashed:
/// a changed password is a changed destination, and the hash is all that
/// is kept).
fn identity(d: &DestinationConfig) -> String {
    use crate::client::Auth;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{d:?}").as_bytes());
    match &d.client.auth {
        Auth::Basic { password, .. } => h.update(password.expose().as_bytes()),
        Auth::Bearer(token) => h.update(token.expose().as_bytes()),
        Auth::None | Auth::BearerFile(_) => {}
    }
    for (_, v) in &d.client.headers {
        h.update(b"\xff");
        h.update(v.expose().as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn global_identity(g: &GlobalStage) -> String {
    format!("{:?}|{:?}", g.rules, g.external_labels)
}

fn open_destination(d: DestinationConfig) -> Result<Destination, DestinationError> {
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
        let failed: Vec<DestinationError> = tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .filter_map(|d| d.accept_with(&batch.series, batch.meta()).err())
                .collect()
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        errors.extend(failed);
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

    fn current(&self) -> Arc<Routing> {
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
        self.route_and_return(batch).await.0
    }

    /// [`Pipeline::route`] for rule results (and captures): the engine
    /// added the run's `external_labels` already (as vmalert's
    /// `-external.label`, before global relabeling), so they are not added
    /// again here. The batch's origin reaches every destination.
    pub async fn route_results(&self, batch: ExportBatch) -> Result<(), RouteError> {
        self.route_inner(batch, false).await.0
    }

    /// [`Pipeline::route`] that also hands the batch back once every
    /// destination is done with it (`None` if it was consumed), so the
    /// receiver can decode the next request into the same strings.
    pub async fn route_and_return(
        &self,
        batch: Vec<Series>,
    ) -> (Result<(), RouteError>, Option<Vec<Series>>) {
        let (result, batch) = self.route_inner(ExportBatch::received(batch), true).await;
        (result, batch.map(|b| b.series))
    }

    async fn route_inner(
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
        let (batch, dropped, errors) = tokio::task::spawn_blocking(move || {
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
        let result = if errors.is_empty() {
            Ok(())
        } else if let Some((message, retry_after)) = full {
            Err(RouteError::Full {
                message,
                retry_after,
            })
        } else if errors
            .iter()
            .all(|e| matches!(e, DestinationError::Closed { .. }))
        {
            Err(RouteError::ShuttingDown)
        } else {
            Err(RouteError::Destinations(errors))
        };
        (result, batch)
    }

    /// Applies a reloaded routing config: the global stage is replaced,
    /// unchanged destinations keep running untouched, changed ones are
    /// stopped (without draining) and opened again on their queue directory
    /// (their queued data is kept and sent with the new settings), new ones
    /// are opened, removed ones are stopped and their queue directory left
    /// on disk. Batches wait while this runs. If a destination cannot be
    /// opened, the destinations already switched stay switched, the failed
    /// one is left out, and the error is returned.
    pub async fn reconfigure(&self, config: PipelineConfig) -> Result<RoutingChange, String> {
        enum Plan {
            Keep(Arc<Destination>),
            Rebuild(Arc<Destination>, Box<DestinationConfig>),
            Add,
        }
        let _gate = self.gate.write().await;
        let old = self.current();
        let global = Arc::new(GlobalStage {
            rules: config.global_relabel,
            external_labels: config.external_labels,
        });
        let mut change = RoutingChange {
            global: global_identity(&global) != global_identity(&old.global),
            ..RoutingChange::default()
        };
        let mut previous: Vec<Option<(Arc<Destination>, DestinationConfig)>> = old
            .destinations
            .iter()
            .cloned()
            .zip(old.configs.iter().cloned())
            .map(Some)
            .collect();
        let plans: Vec<(DestinationConfig, Plan)> = config
            .destinations
            .into_iter()
            .map(|d| {
                let found = previous
                    .iter()
                    .position(|o| o.as_ref().is_some_and(|o| o.0.name() == d.name))
                    .and_then(|i| previous[i].take());
                let plan = match found {
                    Some((p, was)) if identity(&was) == identity(&d) => Plan::Keep(p),
                    Some((p, was)) => Plan::Rebuild(p, Box::new(was)),
                    None => Plan::Add,
                };
                (d, plan)
            })
            .collect();
        let removed: Vec<Arc<Destination>> = previous.into_iter().flatten().map(|p| p.0).collect();

        // Batches wait on the gate; the old routing goes now, so the
        // destinations that stop are referenced from here only.
        drop(old);
        let kept_only: Vec<(Arc<Destination>, DestinationConfig)> = plans
            .iter()
            .filter_map(|(d, p)| match p {
                Plan::Keep(k) => Some((Arc::clone(k), d.clone())),
                _ => None,
            })
            .collect();
        self.publish(
            Arc::clone(&global),
            kept_only.iter().map(|k| Arc::clone(&k.0)).collect(),
            kept_only.into_iter().map(|k| k.1).collect(),
        );

        let mut next: Vec<Arc<Destination>> = Vec::new();
        let mut configs = Vec::new();
        let mut errors = Vec::new();
        let started = self.started.load(Ordering::SeqCst);
        for (d, plan) in plans {
            let name = d.name.clone();
            let opened = match plan {
                Plan::Keep(p) => {
                    change.kept.push(name);
                    next.push(p);
                    configs.push(d);
                    continue;
                }
                Plan::Rebuild(p, was) => {
                    p.stop().await;
                    let counters = p.counters();
                    // The queue directory is free once the old one is gone.
                    release(p).await;
                    match open_blocking(d.clone()).await {
                        Ok(dest) => {
                            change.rebuilt.push(name);
                            Ok((dest, d, Some(counters)))
                        }
                        Err(e) => {
                            // Keep delivering with the settings that worked.
                            let back = open_blocking((*was).clone()).await;
                            errors.push(format!(
                                "destination {name}: cannot apply the new settings: {e}{}",
                                if back.is_ok() {
                                    "; it keeps its previous settings"
                                } else {
                                    ""
                                }
                            ));
                            back.map(|dest| (dest, *was, Some(counters)))
                        }
                    }
                }
                Plan::Add => match open_blocking(d.clone()).await {
                    Ok(dest) => {
                        change.added.push(name);
                        Ok((dest, d, None))
                    }
                    Err(e) => Err(format!("destination {name}: {e}")),
                },
            };
            match opened {
                Ok((dest, cfg, previous)) => {
                    if let Some(c) = previous {
                        dest.continue_counters(&c);
                    }
                    if started {
                        dest.start();
                    }
                    next.push(Arc::new(dest));
                    configs.push(cfg);
                }
                Err(e) => errors.push(e),
            }
        }
        for p in removed {
            p.stop().await;
            change.removed.push(p.name().to_string());
            release(p).await;
        }
        self.publish(global, next, configs);
        if errors.is_empty() {
            Ok(change)
        } else {
            Err(errors.join("; "))
        }
    }

    fn publish(
        &self,
        global: Arc<GlobalStage>,
        destinations: Vec<Arc<Destination>>,
        configs: Vec<DestinationConfig>,
    ) {
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Routing {
            global,
            destinations: Arc::new(destinations),
            configs,
        });
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

async fn open_blocking(d: DestinationConfig) -> Result<Destination, String> {
    tokio::task::spawn_blocking(move || open_destination(d))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
}

/// Drops a stopped destination once its last users (a status read, a
/// sender's last blocking call) let go of it, which closes its queue files
/// and its lock; waits at most a few seconds.
async fn release(d: Arc<Destination>) {
    for _ in 0..500 {
        if Arc::strong_count(&d) == 1 && d.released() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        destination = d.name(),
        "the stopped destination is still in use after 5s; reopening its queue may fail"
    );
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
}

/// Global relabeling and run-level external labels.
#[derive(Debug)]
struct GlobalStage {
    rules: RelabelRules,
    external_labels: Vec<(String, String)>,
}

impl GlobalStage {
    /// Applies both (external labels only when `external_labels`) in
    /// place; returns the samples of the series relabeling dropped.
    fn apply(&self, mut batch: ExportBatch, external_labels: bool) -> (ExportBatch, u64) {
        let external: &[(String, String)] = if external_labels {
            &self.external_labels
        } else {
            &[]
        };
        if self.rules.is_empty() && external.is_empty() {
            return (batch, 0);
        }
        let mut dropped = 0u64;
        batch.retain_mut(|s| {
            if !self.rules.is_empty()
                && !destination::relabel_like_vmagent(&self.rules, &mut s.labels)
            {
                dropped += s.samples.len() as u64;
                return false;
            }
            for (k, v) in external {
                if s.labels.get(k).is_none() {
                    s.labels.set(k.as_str(), v.as_str());
                }
            }
            true
        });
        (batch, dropped)
    }
}

/// What each destination would receive of rule results, without opening
/// a queue or sending anything (`spillway rules preview`): global
/// relabeling (the run's external labels are the engine's job), then each
/// destination's relabeling and external labels, as [`Pipeline`] and the
/// destinations apply them. Returns, per destination in config order, its
/// name and its series.
pub fn dry_route(config: &PipelineConfig, batch: Vec<Series>) -> Vec<(String, Vec<Series>)> {
    let global = GlobalStage {
        rules: config.global_relabel.clone(),
        external_labels: Vec::new(),
    };
    let (batch, _) = global.apply(ExportBatch::received(batch), false);
    let batch = batch.series;
    config
        .destinations
        .iter()
        .map(|d| {
            let kept = batch
                .iter()
                .filter_map(|s| {
                    let mut labels = s.labels.clone();
                    if !d.relabel.is_empty()
                        && !destination::relabel_like_vmagent(&d.relabel, &mut labels)
                    {
                        return None;
                    }
                    for (k, v) in &d.external_labels {
                        if labels.get(k).is_none() {
                            labels.set(k.as_str(), v.as_str());
                        }
                    }
                    Some(Series::new(labels, s.samples.clone()))
                })
                .collect();
            (d.name.clone(), kept)
        })
        .collect()
}

/// What each event destination would receive of `batches` (rule results
/// with their origin and annotations), as the items it would send: the
/// RFC 5424 message, the bulk action and document, the HEC object, the
/// webhook body part or the file line. Global relabeling, the
/// destination's relabeling and its schedule apply as in [`Pipeline`].
/// Empty for metric destinations. For `spillway rules preview`.
pub fn dry_route_events(config: &PipelineConfig, batches: &[ExportBatch]) -> Vec<Vec<String>> {
    use crate::sink::event::{encode::write_item, shape::EventRef};
    let global = GlobalStage {
        rules: config.global_relabel.clone(),
        external_labels: Vec::new(),
    };
    let batches: Vec<ExportBatch> = batches
        .iter()
        .map(|b| global.apply(b.clone(), false).0)
        .collect();
    config
        .destinations
        .iter()
        .map(|d| {
            let Some(ev) = &d.event else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for b in &batches {
                for (i, s) in b.series.iter().enumerate() {
                    let mut labels = s.labels.clone();
                    if !d.relabel.is_empty()
                        && !destination::relabel_like_vmagent(&d.relabel, &mut labels)
                    {
                        continue;
                    }
                    for (k, v) in &d.external_labels {
                        if labels.get(k).is_none() {
                            labels.set(k.as_str(), v.as_str());
                        }
                    }
                    for &sample in &s.samples {
                        if d.schedule
                            .as_ref()
                            .is_some_and(|r| !r.schedule.contains(sample.timestamp_ms))
                        {
                            continue;
                        }
                        let e = EventRef {
                            sample,
                            labels: &labels,
                            origin: &b.origin,
                            annotations: b.annotations_of(i),
                        };
                        let mut item = Vec::new();
                        if write_item(ev, &e, &mut item) {
                            out.push(String::from_utf8_lossy(&item).trim_end().to_string());
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// The routing part of a config file, checked: what `spillway run` and
/// `spillway relabel` share.
pub fn load(path: &std::path::Path) -> Result<(LoadedConfig, PipelineConfig), Vec<String>> {
    let loaded = RunConfig::load(path).map_err(|e| vec![e])?;
    let pipeline = PipelineConfig::check(&loaded)?;
    Ok((loaded, pipeline))
}

mod events;
#[cfg(test)]
mod tests;

/// `GET /api/v1/destinations`: each destination's queue and counters, in
/// the Prometheus API envelope (`{"status":"success","data":{...}}`) that
/// vmalert's `/api/v1/rules` uses too.
pub fn api_router(pipeline: Arc<Pipeline>) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/destinations",
        axum::routing::get(move || {
            let pipeline = Arc::clone(&pipeline);
            async move {
                axum::Json(serde_json::json!({
                    "status": "success",
                    "data": {"destinations": pipeline.statuses()},
                }))
            }
        }),
    )
}
