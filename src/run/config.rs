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
//! external_labels: {cluster: eu1}
//! global_relabel_configs: []
//! destinations:
//!   - name: incident_storage
//!     type: remote_write  # or vm_import
//!     url: http://incident-vm:8428/api/v1/write
//!     relabel_configs: [{source_labels: [export_target], regex: incident_storage, action: keep}]
//! storage: {path: ./spillway-data}
//! server: {listen: 127.0.0.1:8880}
//! ```

use crate::client::ConnectionSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default)]
    pub server: ServerSpec,
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
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: Vec<String>,
    pub tenant: Option<String>,
    #[serde(default)]
    pub tls: Option<crate::client::TlsSpec>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub relabel_configs: Vec<crate::transform::relabel::RelabelConfig>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    pub max_batch_samples: Option<usize>,
    pub flush_interval: Option<String>,
    pub concurrency: Option<usize>,
    pub max_disk_bytes: Option<String>,
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
        }
    }
}
