//! The one check path of a run config: `spillway run` at start and at every
//! reload, `replay` and `rules preview` all read a config through
//! [`Setup::load`], which checks everything before anything starts (as
//! vmagent's `-dryRun` and a reload share one path) and reports every
//! problem at once, each naming its file, line and field where it has them:
//! the config itself, the routing part ([`PipelineConfig::check`]), the
//! `evaluation:` options, every rule file, the datasources, and whether
//! each group has a datasource of its type.
//!
//! `rule_files` patterns that are relative are taken relative to the
//! directory of the config file, as Prometheus reads its `rule_files`, so a
//! config and its rules can be moved together and started from anywhere.
//! (vmalert has no config file: its `-rule` flags are relative to its
//! working directory.) Group and rule errors name the files as resolved,
//! e.g. `examples/threshold-export/rules/metrics.yml:12`.

use super::cluster::{ClusterFlags, ClusterView, Membership};
use super::config::{LoadedConfig, RunConfig};
use super::datasource::{ClientDatasource, VlogsWindow};
use super::engine::check_groups;
use super::options::EngineOptions;
use super::route::PipelineConfig;
use super::rules::{load_files, Group, LoadOptions, RuleType};
use crate::client::{Client, ConnectionSpec};
use crate::model::time::parse_duration;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Highest `server.max_concurrent_inserts`: each request at work may hold a
/// 32 MiB body and its decoded series, so a value past this is a typo
/// rather than a plan.
const MAX_CONCURRENT_INSERTS: usize = 1024;

/// A run config with everything it refers to, checked.
pub struct Setup {
    pub loaded: LoadedConfig,
    pub pipeline: PipelineConfig,
    pub engine: EngineOptions,
    pub groups: Vec<Group>,
    pub datasource: Arc<ClientDatasource>,
    /// `captures:`, checked, and the client they read raw samples with
    /// (the `datasource:` one).
    pub captures: super::capture::CaptureConfig,
    pub capture_source: Option<Client>,
    /// What the datasources were built from, so a reload can tell whether
    /// they changed (kept in memory only; it holds credentials).
    datasource_key: String,
    /// Things worth a log line that do not stop the start.
    pub warnings: Vec<String>,
    /// Which groups this member owns; `groups` holds only those.
    pub cluster: ClusterView,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("source", &self.loaded.source)
            .field("groups", &self.groups.len())
            .field("destinations", &self.pipeline.destinations.len())
            .finish_non_exhaustive()
    }
}

impl Setup {
    /// Reads and checks the config at `path` and every rule file it names;
    /// every group is kept, whatever the config's `cluster:` says (`rules
    /// preview`).
    pub fn load(path: &Path) -> Result<Setup, Vec<String>> {
        let loaded = RunConfig::load(path).map_err(|e| vec![e])?;
        Self::check(loaded, path)
    }

    /// [`Setup::load`] keeping only the groups this member owns under the
    /// config's `cluster:` and `flags` (`run`, its reloads, `replay`).
    pub fn load_with(path: &Path, flags: &ClusterFlags) -> Result<Setup, Vec<String>> {
        let loaded = RunConfig::load(path).map_err(|e| vec![e])?;
        let source = loaded.source.clone();
        let membership = Membership::resolve(&loaded.config.cluster, flags).map_err(|p| {
            p.into_iter()
                .map(|p| format!("{source}: {p}"))
                .collect::<Vec<_>>()
        });
        match (Self::check(loaded, path), membership) {
            (Ok(mut setup), Ok(m)) => {
                let dir = path.parent().unwrap_or(Path::new(""));
                let (view, mine) = ClusterView::assign(m, dir, std::mem::take(&mut setup.groups));
                setup.groups = mine;
                setup.cluster = view;
                Ok(setup)
            }
            (Err(mut p), Err(q)) => {
                p.extend(q);
                Err(p)
            }
            (Err(p), Ok(_)) | (Ok(_), Err(p)) => Err(p),
        }
    }

    /// [`Setup::load`] for a config already read; `path` places relative
    /// rule file patterns.
    pub fn check(loaded: LoadedConfig, path: &Path) -> Result<Setup, Vec<String>> {
        let source = loaded.source.clone();
        let config = &loaded.config;
        let mut problems = Vec::new();
        let mut warnings = Vec::new();

        let pipeline = PipelineConfig::check(&loaded)
            .map_err(|p| problems.extend(p))
            .ok();
        let engine = EngineOptions::from_spec(&config.evaluation, &config.external_labels)
            .map_err(|e| problems.push(format!("{source}: {e}")))
            .ok();
        let query_step = match config.evaluation.query_step.as_deref().map(parse_duration) {
            None => Some(super::datasource::DEFAULT_QUERY_STEP),
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                problems.push(format!("{source}: evaluation.query_step: {e}"));
                None
            }
        };
        let vlogs_window = match config.evaluation.vlogs_window.as_deref() {
            None => VlogsWindow::default(),
            Some(w) => VlogsWindow::parse(w).unwrap_or_else(|e| {
                problems.push(format!("{source}: evaluation.vlogs_window: {e}"));
                VlogsWindow::default()
            }),
        };
        if let Some(n) = config.server.max_concurrent_inserts {
            if !(1..=MAX_CONCURRENT_INSERTS).contains(&n) {
                problems.push(format!(
                    "{source}: server.max_concurrent_inserts: {n} is out of range; expected 1 to {MAX_CONCURRENT_INSERTS}"
                ));
            }
        }
        let load_opts = load_options(config.evaluation.default_rule_type.as_deref())
            .map_err(|e| problems.push(format!("{source}: {e}")))
            .ok();

        let base = path.parent().unwrap_or(Path::new(""));
        let patterns: Vec<String> = config
            .rule_files
            .iter()
            .map(|p| resolve_pattern(base, p))
            .collect();
        let groups = match &load_opts {
            Some(opts) => match load_files(&patterns, opts) {
                Ok(g) => g,
                Err(errors) => {
                    problems.extend(errors.iter().map(ToString::to_string));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        for (pattern, resolved) in config.rule_files.iter().zip(&patterns) {
            let matched = groups.iter().any(|g| matches_file(resolved, &g.file));
            if !matched && !problems.iter().any(|p| p.contains(resolved.as_str())) {
                warnings.push(format!(
                    "{source}: rule_files: {pattern:?} (as {resolved:?}) matches no file with rule groups"
                ));
            }
        }

        let prometheus = client(&config.datasource, "datasource", &source, &mut problems);
        let vlogs = client(
            &config.vlogs_datasource,
            "vlogs_datasource",
            &source,
            &mut problems,
        );
        let capture_source = prometheus.clone().flatten();
        let datasource = Arc::new(
            ClientDatasource::new(prometheus.flatten(), vlogs.flatten())
                .with_query_step(query_step)
                .with_vlogs_window(vlogs_window),
        );
        if let Some(opts) = &engine {
            if let Err(e) = check_groups(&groups, &*datasource, opts) {
                problems.extend(e.to_string().lines().map(str::to_string));
            }
        }
        let captures = match (&pipeline, &engine) {
            (Some(p), Some(e)) => {
                let checked = super::capture::config::check(&super::capture::config::Context {
                    loaded: &loaded,
                    destinations: p.destinations.iter().map(|d| d.name.clone()).collect(),
                    queue_dirs: p
                        .destinations
                        .iter()
                        .map(|d| crate::sink::destination::queue_dir_name(&d.name))
                        .collect(),
                    groups: &groups,
                    default_interval_ms: e.default_interval.as_millis() as i64,
                    lag_ms: e.default_eval_delay.as_millis() as i64,
                    storage: config
                        .storage
                        .path
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(super::route::DEFAULT_STORAGE_PATH)),
                    has_datasource: config.datasource.is_some(),
                });
                problems.extend(checked.problems);
                warnings.extend(checked.warnings);
                checked.config
            }
            _ => Default::default(),
        };
        if config.rule_files.is_empty() {
            warnings.push(format!(
                "{source}: rule_files: none; only what arrives at /api/v1/write and /api/v1/import is routed"
            ));
        }

        match (pipeline, engine) {
            (Some(pipeline), Some(engine)) if problems.is_empty() => {
                let datasource_key = format!(
                    "{:?}|{:?}|{:?}|{:?}",
                    config.datasource, config.vlogs_datasource, query_step, vlogs_window
                );
                let cluster = ClusterView::assign(
                    Membership::SINGLE,
                    path.parent().unwrap_or(Path::new("")),
                    groups.clone(),
                )
                .0;
                Ok(Setup {
                    loaded,
                    pipeline,
                    engine,
                    groups,
                    datasource,
                    captures,
                    capture_source,
                    datasource_key,
                    warnings,
                    cluster,
                })
            }
            _ => Err(problems),
        }
    }

    /// Whether `other` was built from different datasource settings.
    pub fn datasource_changed(&self, other: &Setup) -> bool {
        self.datasource_key != other.datasource_key
    }

    /// `server.listen` of the config.
    pub fn listen(&self) -> Option<&str> {
        self.loaded.config.server.listen.as_deref()
    }

    /// The receiver's limits: the defaults, with `server.max_concurrent_inserts`.
    pub fn receiver_limits(&self) -> super::receiver::Limits {
        let mut limits = super::receiver::Limits::default();
        if let Some(n) = self.loaded.config.server.max_concurrent_inserts {
            limits.requests_at_once = n;
        }
        limits
    }

    /// Groups whose name is in `names` (all when empty); unknown names are
    /// an error listing the known ones.
    pub fn select_groups(&self, names: &[String]) -> Result<Vec<Group>, String> {
        if names.is_empty() {
            return Ok(self.groups.clone());
        }
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !self.groups.iter().any(|g| &g.name == *n))
            .collect();
        if let Some(other) = unknown
            .iter()
            .find_map(|n| self.cluster.owners_of(n).map(|owners| (n, owners)))
        {
            let m = &self.cluster.membership;
            return Err(format!(
                "group {:?} is evaluated by cluster member(s) {:?}, not by this one ({} of {}); replay it there",
                other.0, other.1, m.member_num, m.members_count
            ));
        }
        if !unknown.is_empty() {
            let known: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(format!(
                "no group named {} in the rule files; groups: {}",
                unknown
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                known.join(", ")
            ));
        }
        Ok(self
            .groups
            .iter()
            .filter(|g| names.contains(&g.name))
            .cloned()
            .collect())
    }
}

/// Rule file loading options from `evaluation.default_rule_type`.
pub fn load_options(default_rule_type: Option<&str>) -> Result<LoadOptions, String> {
    let mut opts = LoadOptions::default();
    if let Some(t) = default_rule_type {
        opts.default_rule_type = match RuleType::parse(t) {
            Some(t @ (RuleType::Prometheus | RuleType::Vlogs)) => t,
            _ => {
                return Err(format!(
                    "evaluation.default_rule_type: {t:?} is not a rule type spillway evaluates; expected prometheus or vlogs"
                ))
            }
        };
    }
    Ok(opts)
}

/// A `rule_files` pattern as the loader should see it: absolute patterns
/// as written, relative ones under the config file's directory.
pub fn resolve_pattern(base: &Path, pattern: &str) -> String {
    if pattern.starts_with('/') || base.as_os_str().is_empty() {
        return pattern.to_string();
    }
    let joined: PathBuf = base.join(pattern);
    joined.display().to_string()
}

/// Whether `file` (as the loader named it) came from `pattern`; a cheap
/// test for the "matches nothing" warning: literal patterns must be equal,
/// glob patterns share the directory part before the first wildcard.
fn matches_file(pattern: &str, file: &str) -> bool {
    match pattern.find(['*', '?', '[']) {
        None => pattern == file,
        Some(i) => {
            let dir = &pattern[..pattern[..i].rfind('/').map_or(0, |j| j + 1)];
            file.starts_with(dir)
        }
    }
}

fn client(
    spec: &Option<ConnectionSpec>,
    what: &str,
    source: &str,
    problems: &mut Vec<String>,
) -> Option<Option<Client>> {
    let Some(spec) = spec else {
        return Some(None);
    };
    let built = spec
        .to_client_config(what)
        .and_then(|c| Client::new(c).map_err(|e| format!("{what}: {e}")));
    match built {
        Ok(c) => Some(Some(c)),
        Err(e) => {
            problems.push(format!("{source}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const RULES: &str =
        "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up == 0\n";
    const LOGS: &str =
        "groups:\n  - name: logs\n    type: vlogs\n    rules:\n      - record: errors\n        expr: 'error | stats count()'\n";

    #[test]
    fn rule_files_are_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "conf/rules/a.yml", RULES);
        let cfg = write(
            dir.path(),
            "conf/run.yml",
            "datasource: {url: 'http://127.0.0.1:1'}\nrule_files: ['rules/*.yml']\n\
             destinations: [{name: d, url: 'http://127.0.0.1:2'}]\n\
             server: {max_concurrent_inserts: 3}\n",
        );
        let s = Setup::load(&cfg).unwrap();
        assert_eq!(s.receiver_limits().requests_at_once, 3);
        assert_eq!(s.groups.len(), 1);
        assert_eq!(
            s.groups[0].file,
            dir.path().join("conf/rules/a.yml").display().to_string()
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn a_group_without_its_datasource_names_file_and_group() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "rules/metrics.yml", RULES);
        write(dir.path(), "rules/logs.yml", LOGS);
        let cfg = write(
            dir.path(),
            "run.yml",
            "rule_files: ['rules/logs.yml', 'rules/metrics.yml', 'rules/none-*.yml']\n\
             destinations: [{name: d, url: 'http://127.0.0.1:2'}]\n",
        );
        let problems = Setup::load(&cfg).unwrap_err();
        let all = problems.join("\n");
        let logs = dir.path().join("rules/logs.yml").display().to_string();
        let metrics = dir.path().join("rules/metrics.yml").display().to_string();
        assert!(
            all.contains(&format!("{logs}:2: group \"logs\": groups of type `vlogs` need a VictoriaLogs datasource: set `vlogs_datasource.url`")),
            "{all}"
        );
        assert!(
            all.contains(&format!(
                "{metrics}:2: group \"g\": groups of type `prometheus` need a datasource"
            )),
            "{all}"
        );
    }

    #[test]
    fn every_part_reports_its_problems() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "rules/bad.yml",
            "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: ''\n",
        );
        let cfg = write(
            dir.path(),
            "run.yml",
            "datasource: {url: 'http://127.0.0.1:1', timeout: soon}\nrule_files: ['rules/bad.yml']\n\
             evaluation: {interval: often, default_rule_type: graphite, vlogs_window: loose}\n\
             destinations: [{name: d, url: 'http://127.0.0.1:2', max_disk_bytes: lots}]\n\
             server: {max_concurrent_inserts: 0}\n",
        );
        let all = Setup::load(&cfg).unwrap_err().join("\n");
        for needle in [
            "destinations[0].max_disk_bytes",
            "evaluation.interval",
            "evaluation.default_rule_type: \"graphite\"",
            "evaluation.vlogs_window: \"loose\" is not a window",
            "datasource.timeout",
            "server.max_concurrent_inserts: 0 is out of range; expected 1 to 1024",
        ] {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
        // With a valid rule type the rule file is read and its error shown.
        std::fs::write(
            &cfg,
            "datasource: {url: 'http://127.0.0.1:1'}\nrule_files: ['rules/bad.yml']\n\
             destinations: [{name: d, url: 'http://127.0.0.1:2'}]\n",
        )
        .unwrap();
        let all = Setup::load(&cfg).unwrap_err().join("\n");
        assert!(
            all.contains("bad.yml:5: group \"g\", rule \"r\": field \"expr\""),
            "{all}"
        );
    }

    #[test]
    fn patterns() {
        assert_eq!(resolve_pattern(Path::new(""), "r/*.yml"), "r/*.yml");
        assert_eq!(
            resolve_pattern(Path::new("/etc/sw"), "r/*.yml"),
            "/etc/sw/r/*.yml"
        );
        assert_eq!(
            resolve_pattern(Path::new("/etc/sw"), "/x/*.yml"),
            "/x/*.yml"
        );
        assert!(matches_file("/a/r/*.yml", "/a/r/x.yml"));
        assert!(!matches_file("/a/q/*.yml", "/a/r/x.yml"));
        assert!(matches_file("/a/r/x.yml", "/a/r/x.yml"));
    }
}
