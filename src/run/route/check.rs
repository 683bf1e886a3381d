//! Checking the routing part of a run config: global relabeling, external
//! labels, storage and each destination's connection, batching, queue and
//! relabel settings. It exists apart from the pipeline so `rules check`,
//! `rules preview` and `spillway relabel` can validate a file without
//! opening a queue; every problem is reported at once, each as
//! `FILE:LINE: destinations[i].field: what is wrong`. The fields that event
//! types and schedules add are checked in [`super::events`].

use super::events;
use crate::client::Endpoint;
use crate::model::size::{format_size, parse_size};
use crate::model::time::parse_duration;
use crate::run::config::{DestinationLines, DestinationSpec, ItemLines, LoadedConfig, RunConfig};
use crate::sink::destination::{
    self, queue_dir_name, DestinationConfig, DestinationKind, MIN_MAX_DISK_BYTES,
};
use crate::transform::relabel::{Dialect, RelabelConfig, RelabelRules};
use std::collections::HashMap;
use std::path::PathBuf;
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

/// The routing part of a config file, checked: what `spillway run` and
/// `spillway relabel` share.
pub fn load(path: &std::path::Path) -> Result<(LoadedConfig, PipelineConfig), Vec<String>> {
    let loaded = RunConfig::load(path).map_err(|e| vec![e])?;
    let pipeline = PipelineConfig::check(&loaded)?;
    Ok((loaded, pipeline))
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
pub(super) struct Place<'a> {
    source: &'a str,
    lines: &'a ItemLines,
    index: usize,
}

impl Place<'_> {
    /// `FILE:LINE` of the field (of the entry when the field is absent).
    pub(super) fn loc(&self, field: &str) -> String {
        match self.lines.field(field) {
            0 => self.source.to_string(),
            line => format!("{}:{line}", self.source),
        }
    }

    /// `FILE:LINE: destinations[i].field`.
    pub(super) fn at(&self, field: &str) -> String {
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
