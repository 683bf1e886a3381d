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

use super::config::{DestinationLines, DestinationSpec, ItemLines, LoadedConfig, RunConfig};
use crate::client::Endpoint;
use crate::model::size::{format_size, parse_size};
use crate::model::time::parse_duration;
use crate::model::Series;
use crate::sink::destination::{
    self, queue_dir_name, Destination, DestinationConfig, DestinationError, DestinationKind,
    DestinationStatus, MIN_MAX_DISK_BYTES,
};
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
                if let Some(&j) = dirs.get(&dir) {
                    problems.push(format!(
                        "{}: {:?} and destinations[{j}] would share the queue directory {}; rename one",
                        at("name"),
                        spec.name,
                        storage.join(&dir).display()
                    ));
                }
                dirs.insert(dir, i);
            }
            match check_destination(spec, &place, &dl.relabel_configs, &storage) {
                Ok(d) if problems.len() == before => destinations.push(d),
                Ok(_) => {}
                Err(p) => problems.extend(p),
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
    RelabelRules::from_configs_at(configs.to_vec(), Dialect::default(), source, path, items)
        .map_err(|e| e.problems().iter().map(|p| p.to_string()).collect())
}

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
    let client = match spec.connection().to_client_config(&what) {
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
    };
    let relabel = compile_relabel(
        &spec.relabel_configs,
        source,
        &format!("destinations[{i}].relabel_configs"),
        relabel_lines,
    )
    .unwrap_or_else(|p| {
        problems.extend(p);
        RelabelRules::empty(Dialect::default())
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
    let concurrency = match spec.concurrency {
        Some(0) => {
            problems.push(format!("{}: must be at least 1", at("concurrency")));
            1
        }
        Some(n) => n,
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
            queue_dir: storage.join(queue_dir_name(&spec.name)),
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
}

/// Global relabeling, external labels and the destinations. Share it in an
/// `Arc`; every method takes `&self`.
pub struct Pipeline {
    global: Arc<GlobalStage>,
    destinations: Arc<Vec<Arc<Destination>>>,
    closed: AtomicBool,
    routed_samples: AtomicU64,
    relabel_dropped: AtomicU64,
}

impl Pipeline {
    /// Opens every destination's queue (repairing what a crash left).
    /// Blocking; senders start with [`Pipeline::start`].
    pub fn open(config: PipelineConfig) -> Result<Pipeline, DestinationError> {
        let mut destinations = Vec::new();
        for d in config.destinations {
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
            destinations.push(Arc::new(dest));
        }
        Ok(Pipeline {
            global: Arc::new(GlobalStage {
                rules: config.global_relabel,
                external_labels: config.external_labels,
            }),
            destinations: Arc::new(destinations),
            closed: AtomicBool::new(false),
            routed_samples: AtomicU64::new(0),
            relabel_dropped: AtomicU64::new(0),
        })
    }

    /// Starts every destination's senders. Call from inside the runtime.
    pub fn start(&self) {
        for d in self.destinations.iter() {
            d.start();
        }
    }

    /// Routes one batch: global relabeling, external labels, then every
    /// destination's `accept`, one after the other on a blocking thread.
    /// Returns once all of them hold it on disk. This is the entry point of the receiver and of the rule
    /// engine; see the module docs for what `Ok` and `Err` promise.
    pub async fn route(&self, batch: Vec<Series>) -> Result<(), RouteError> {
        self.route_and_return(batch).await.0
    }

    /// [`Pipeline::route`] that also hands the batch back once every
    /// destination is done with it (`None` if it was consumed), so the
    /// receiver can decode the next request into the same strings.
    pub async fn route_and_return(
        &self,
        batch: Vec<Series>,
    ) -> (Result<(), RouteError>, Option<Vec<Series>>) {
        if self.closed.load(Ordering::SeqCst) {
            return (Err(RouteError::ShuttingDown), Some(batch));
        }
        if batch.is_empty() {
            return (Ok(()), Some(batch));
        }
        let samples: u64 = batch.iter().map(|s| s.samples.len() as u64).sum();
        self.routed_samples.fetch_add(samples, Ordering::Relaxed);
        // One blocking task does the global stage and every destination's
        // accept in turn: relabeling and encoding are CPU work, queue pushes
        // wait for fsync, and one hand-off per batch costs less than one
        // per destination (the fsyncs are short; concurrent batches overlap).
        let global = Arc::clone(&self.global);
        let destinations = Arc::clone(&self.destinations);
        let (batch, dropped, errors) = tokio::task::spawn_blocking(move || {
            let (batch, dropped) = global.apply(batch);
            let errors: Vec<DestinationError> = if batch.is_empty() {
                Vec::new()
            } else {
                destinations
                    .iter()
                    .filter_map(|d| d.accept(&batch).err())
                    .collect()
            };
            (batch, dropped, errors)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.relabel_dropped.fetch_add(dropped, Ordering::Relaxed);
        let batch = Some(batch);
        let result = if errors.is_empty() {
            Ok(())
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

    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
    }

    pub fn statuses(&self) -> Vec<DestinationStatus> {
        self.destinations.iter().map(|d| d.status()).collect()
    }

    /// Refreshes the `/metrics` view of the pipeline and its destinations.
    pub fn collect_metrics(&self) {
        metrics::counter!("spillway_routed_samples_total")
            .absolute(self.routed_samples.load(Ordering::Relaxed));
        metrics::counter!("spillway_global_relabel_dropped_samples_total")
            .absolute(self.relabel_dropped.load(Ordering::Relaxed));
        for d in self.destinations.iter() {
            d.collect_metrics();
        }
    }

    /// Stops taking data, gives the destinations up to `timeout` (together)
    /// to deliver what they hold, and closes their queues.
    pub async fn shutdown(&self, timeout: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        let stops = self.destinations.iter().map(|d| d.shutdown(timeout));
        futures_util::future::join_all(stops).await;
    }
}

/// Global relabeling and run-level external labels.
struct GlobalStage {
    rules: RelabelRules,
    external_labels: Vec<(String, String)>,
}

impl GlobalStage {
    /// Applies both in place; returns the samples of the series
    /// relabeling dropped.
    fn apply(&self, mut batch: Vec<Series>) -> (Vec<Series>, u64) {
        if self.rules.is_empty() && self.external_labels.is_empty() {
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
            for (k, v) in &self.external_labels {
                if s.labels.get(k).is_none() {
                    s.labels.set(k.as_str(), v.as_str());
                }
            }
            true
        });
        (batch, dropped)
    }
}

/// The routing part of a config file, checked: what `spillway run` and
/// `spillway relabel` share.
pub fn load(path: &std::path::Path) -> Result<(LoadedConfig, PipelineConfig), Vec<String>> {
    let loaded = RunConfig::load(path).map_err(|e| vec![e])?;
    let pipeline = PipelineConfig::check(&loaded)?;
    Ok((loaded, pipeline))
}

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
