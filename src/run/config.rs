//! The `spillway run` / `replay` / `rules` config file: one YAML holding
//! datasources, rule files, destinations, relabeling, storage and server.
//!
//! ```yaml
//! datasource:            # PromQL/MetricsQL rules (vmalert -datasource.*)
//!   url: http://127.0.0.1:8428
//! vlogs_datasource:      # `type: vlogs` groups (optional)
//!   url: http://127.0.0.1:9428
//! rule_files: ["rules/*.yml"]
//! evaluation:
//!   interval: 1m         # groups without `interval:` (vmalert -evaluationInterval)
//!   max_catch_up: 1h     # how far back missed evaluations are made up after an outage
//!   eval_delay: 30s      # query time = now - eval_delay, aligned (vmalert -rule.evalDelay)
//!   vlogs_window: exact  # LogsQL rules read [T-interval, T); `vmalert`: [T-interval, T+1s)
//! external_labels: {cluster: eu1}
//! global_relabel_configs: []
//! relabel_dialect: victoriametrics  # or prometheus; every relabel_configs below
//! destinations:
//!   - name: incident_storage
//!     type: remote_write  # or vm_import
//!     url: http://incident-vm:8428/api/v1/write
//!     relabel_configs: [{source_labels: [export_target], regex: incident_storage, action: keep}]
//!     relabel_dialect: prometheus   # this destination's own
//! storage: {path: ./spillway-data}
//! server: {listen: 127.0.0.1:8880, max_concurrent_inserts: 2}  # receiver requests at once
//! captures: []           # breach captures, see `run::capture::config`
//! cluster: {members_count: 3, replication_factor: 1}  # member_num: from --cluster.member-num
//! ```

use crate::client::ConnectionSpec;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub datasource: Option<ConnectionSpec>,
    #[serde(default)]
    pub vlogs_datasource: Option<ConnectionSpec>,
    #[serde(default)]
    pub rule_files: Vec<String>,
    #[serde(default)]
    pub evaluation: EvaluationSpec,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub global_relabel_configs: Vec<crate::transform::relabel::RelabelConfig>,
    /// Whose relabeling semantics every `relabel_configs` follows unless its
    /// destination says otherwise: `victoriametrics` (vmagent's, default) or
    /// `prometheus`.
    #[serde(default)]
    pub relabel_dialect: Option<crate::transform::relabel::Dialect>,
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default)]
    pub server: ServerSpec,
    /// Breach captures (see `run::capture`).
    #[serde(default)]
    pub captures: Vec<super::capture::CaptureSpec>,
    /// Sharding across replicas (see `cluster.rs`); flags override it.
    #[serde(default)]
    pub cluster: super::cluster::ClusterSpec,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSpec {
    /// Interval of groups that set none (default 1m, as vmalert's -evaluationInterval).
    pub interval: Option<String>,
    /// Oldest missed evaluation made up after a datasource outage (default 1h; 0 disables).
    pub max_catch_up: Option<String>,
    /// vmalert's -rule.defaultRuleType: `prometheus` (default) or `vlogs`.
    pub default_rule_type: Option<String>,
    /// `eval_delay` of groups that set none (vmalert's -rule.evalDelay, default 30s).
    pub eval_delay: Option<String>,
    /// `step` of instant queries (vmalert's -datasource.queryStep, default 5m; 0 = the group interval).
    pub query_step: Option<String>,
    /// Logs a LogsQL rule reads at T: `exact` ([T-interval, T), default) or
    /// `vmalert` ([T-interval, T+1s), as vmalert's requests read).
    pub vlogs_window: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// Directory holding one queue directory per destination (default ./spillway-data).
    pub path: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// HTTP listen address (default 127.0.0.1:8880).
    pub listen: Option<String>,
    /// Receiver requests read, decoded and routed at once (vmagent's
    /// `-maxConcurrentInserts`; default one per core, at least two).
    pub max_concurrent_inserts: Option<usize>,
}

/// One destination; the connection fields are the same as a datasource's.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    pub name: String,
    /// `remote_write` (Prometheus remote write 1.0) or `vm_import` (JSON lines).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<crate::client::BasicAuthSpec>,
    pub bearer_token: Option<crate::client::Secret>,
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: Vec<crate::client::Secret>,
    pub tenant: Option<String>,
    #[serde(default)]
    pub tls: Option<crate::client::TlsSpec>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub relabel_configs: Vec<crate::transform::relabel::RelabelConfig>,
    /// This destination's relabel dialect (default: the top-level `relabel_dialect`).
    #[serde(default)]
    pub relabel_dialect: Option<crate::transform::relabel::Dialect>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    pub max_batch_samples: Option<usize>,
    pub flush_interval: Option<String>,
    pub concurrency: Option<usize>,
    pub max_disk_bytes: Option<String>,
    /// `drop_oldest` (default), `drop_newest` or `block`: what a full queue does.
    pub on_full: Option<String>,
    /// remote_write: `auto` (default), `prometheus` or `victoriametrics`.
    pub protocol: Option<String>,
    /// Samples outside these windows go to `outside_schedule` (any type).
    #[serde(default)]
    pub schedule: Option<crate::sink::schedule::ScheduleSpec>,
    /// `drop` (default) or the name of another destination.
    pub outside_schedule: Option<String>,
    // Event destinations (see `sink::event`); which type takes which is
    // checked in `route::events`.
    /// syslog over tls://: the client certificate and key (PEM).
    #[serde(default)]
    pub client_cert: Option<ClientCertSpec>,
    /// syslog: json|cef; splunk_hec: event|metric; file: jsonl|csv.
    pub format: Option<String>,
    /// Event field → new name (`""` or null drops it).
    #[serde(default)]
    pub fields: BTreeMap<String, Option<String>>,
    pub event_labels_as_fields: Option<bool>,
    pub app_name: Option<String>,
    pub facility: Option<String>,
    pub hostname: Option<String>,
    pub severity_from: Option<String>,
    /// syslog over relp://: frames in flight before answers are awaited.
    pub relp_window: Option<u32>,
    pub index: Option<String>,
    pub op_type: Option<String>,
    pub pipeline: Option<String>,
    pub gzip: Option<bool>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub sourcetype: Option<String>,
    pub source: Option<String>,
    pub host: Option<String>,
    pub ack: Option<bool>,
    pub ack_timeout: Option<String>,
    pub channel: Option<String>,
    pub body_template: Option<String>,
    pub one_event_per_request: Option<bool>,
    pub content_type: Option<String>,
    pub directory: Option<PathBuf>,
    pub file_name: Option<String>,
    pub max_bytes: Option<String>,
    pub rotate_every: Option<String>,
    pub keep: Option<usize>,
    pub dead_letter_max_bytes: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertSpec {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl DestinationSpec {
    pub fn connection(&self) -> ConnectionSpec {
        ConnectionSpec {
            url: self.url.clone(),
            basic_auth: self.basic_auth.clone(),
            bearer_token: self.bearer_token.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            headers: self.headers.clone(),
            tenant: self.tenant.clone(),
            tls: self.tls.clone(),
            timeout: self.timeout.clone(),
            retries: None,
            max_response_bytes: None,
        }
    }
}

/// A run config read from its file, with the lines of the parts that are
/// checked after parsing, so those problems still name a line.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: RunConfig,
    /// The file as named on the command line, for messages.
    pub source: String,
    pub lines: ConfigLines,
}

/// Lines of the lists whose content is judged after parsing.
#[derive(Clone, Debug, Default)]
pub struct ConfigLines {
    pub global_relabel_configs: Vec<ItemLines>,
    pub destinations: Vec<DestinationLines>,
    pub captures: Vec<ItemLines>,
}

/// An entry of a YAML list: its line and the line of each of its fields.
#[derive(Clone, Debug, Default)]
pub struct ItemLines {
    pub line: u64,
    pub fields: HashMap<String, u64>,
}

impl ItemLines {
    /// The field's line, or the entry's when the field is absent.
    pub fn field(&self, name: &str) -> u64 {
        self.fields.get(name).copied().unwrap_or(self.line)
    }
}

#[derive(Clone, Debug, Default)]
pub struct DestinationLines {
    pub item: ItemLines,
    pub relabel_configs: Vec<ItemLines>,
}

type SpannedItems = Vec<Spanned<HashMap<String, Spanned<IgnoredAny>>>>;

/// The same text read for layout only: which line each entry and field is on.
#[derive(serde::Deserialize, Default)]
struct Layout {
    #[serde(default)]
    global_relabel_configs: Option<SpannedItems>,
    #[serde(default)]
    destinations: Option<SpannedItems>,
    #[serde(default)]
    captures: Option<SpannedItems>,
}

#[derive(serde::Deserialize, Default)]
struct DestinationsLayout {
    #[serde(default)]
    destinations: Option<Vec<RelabelLayout>>,
}

#[derive(serde::Deserialize, Default)]
struct RelabelLayout {
    #[serde(default)]
    relabel_configs: Option<SpannedItems>,
}

fn item_lines(items: Option<SpannedItems>) -> Vec<ItemLines> {
    items
        .unwrap_or_default()
        .into_iter()
        .map(|it| ItemLines {
            line: it.referenced.line(),
            fields: it
                .value
                .into_iter()
                .map(|(k, v)| (k, v.referenced.line()))
                .collect(),
        })
        .collect()
}

impl RunConfig {
    /// Reads and parses `path`. Unknown fields and wrong types are reported
    /// with file:line and the field; what needs more than parsing (relabel
    /// rules, URLs, sizes) is checked by the parts that use the config.
    pub fn load(path: &Path) -> Result<LoadedConfig, String> {
        let text = crate::model::input::read_config(path, "a run config")
            .map_err(|e| format!("config: {e}"))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// [`RunConfig::load`] from text; `source` names it in messages.
    pub fn parse(text: &str, source: &str) -> Result<LoadedConfig, String> {
        let config: RunConfig = if text.trim().is_empty() {
            RunConfig::default()
        } else {
            crate::model::yaml::from_str(text, source).map_err(|e| e.message)?
        };
        // The text parsed as a RunConfig, so its layout reads too; a failure
        // here only costs line numbers.
        let layout: Layout = crate::model::yaml::parse(text).unwrap_or_default();
        let relabel: DestinationsLayout = crate::model::yaml::parse(text).unwrap_or_default();
        let captures = item_lines(layout.captures);
        let mut destinations: Vec<DestinationLines> = item_lines(layout.destinations)
            .into_iter()
            .map(|item| DestinationLines {
                item,
                relabel_configs: Vec::new(),
            })
            .collect();
        for (d, r) in destinations
            .iter_mut()
            .zip(relabel.destinations.unwrap_or_default())
        {
            d.relabel_configs = item_lines(r.relabel_configs);
        }
        Ok(LoadedConfig {
            config,
            source: source.to_string(),
            lines: ConfigLines {
                global_relabel_configs: item_lines(layout.global_relabel_configs),
                destinations,
                captures,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
external_labels: {cluster: eu1}
global_relabel_configs:
  - action: drop
    regex: x
destinations:
  - name: a
    url: http://127.0.0.1:1/api/v1/write
    max_disk_bytes: 1048576
  - name: b
    type: vm_import
    url: http://127.0.0.1:2
    max_disk_bytes: 500MiB
    relabel_configs:
      - source_labels: [x]
        regex: y
        action: keep
";

    #[test]
    fn loads_with_lines() {
        let loaded = RunConfig::parse(CONFIG, "run.yml").unwrap();
        let c = &loaded.config;
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(c.destinations[0].max_disk_bytes.as_deref(), Some("1048576"));
        assert_eq!(c.destinations[1].max_disk_bytes.as_deref(), Some("500MiB"));
        let lines = &loaded.lines;
        assert_eq!(lines.global_relabel_configs[0].line, 3);
        assert_eq!(lines.global_relabel_configs[0].field("regex"), 4);
        assert_eq!(lines.destinations[1].item.line, 9);
        assert_eq!(lines.destinations[1].item.field("url"), 11);
        assert_eq!(lines.destinations[1].relabel_configs[0].field("action"), 16);
        assert!(lines.destinations[0].relabel_configs.is_empty());
    }

    #[test]
    fn unknown_field_names_file_and_line() {
        let text = CONFIG.replace("    max_disk_bytes: 500MiB", "    max_disk_byte: 500MiB");
        let e = RunConfig::parse(&text, "run.yml").unwrap_err();
        assert!(e.starts_with("run.yml:12:"), "{e}");
        assert!(e.contains("max_disk_byte"), "{e}");
    }
}
