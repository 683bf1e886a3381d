//! Reload of `spillway run` (SIGHUP, `POST /-/reload`): the config and
//! every rule file are read again through the start's own check path
//! ([`Setup::load`]). A config that fails the check is refused as a whole,
//! its reason logged and shown on `/metrics`, and the running config stays
//! untouched. A config that passes is applied in two steps, routing first so
//! that rule results of new groups find their destinations:
//!
//! 1. the pipeline ([`Pipeline::reconfigure`]): new global relabeling and
//!    external labels; unchanged destinations untouched, changed ones
//!    rebuilt on their queue directory (queued data kept), new ones opened,
//!    removed ones stopped with their queue left on disk;
//! 2. the engine ([`EngineHandle::reload_with`]): unchanged groups keep
//!    running, changed ones restart with their rules' state, removed ones
//!    stop; a changed datasource or `evaluation:`/`external_labels`
//!    restarts every group (rules keep their state).
//!
//! `server.listen` is read at start only; a change is logged as needing a
//! restart. Reloads are serialized: one at a time. Every read applies the
//! `--cluster.*` flags of the start, so a new `cluster.members_count` moves
//! groups to their new owners at the reload (see `cluster.rs`).
//!
//! Metrics: `spillway_config_last_reload_successful` (1/0),
//! `spillway_config_last_reload_success_timestamp_seconds`,
//! `spillway_config_reloads_total{status="success"|"failure"}`, and, while
//! the last reload failed, `spillway_config_last_reload_error{error="..."} 1`
//! carrying the first problem (the log has all of them).

use super::cluster::{ClusterFlags, ClusterView};
use super::engine::EngineHandle;
use super::route::Pipeline;
use super::setup::Setup;
use crate::model::time::now_ms;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Longest error text put in the metric's label.
const MAX_ERROR_LABEL: usize = 300;

/// What a successful reload changed, for the log and `/-/reload`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub groups: super::ReloadSummary,
    pub routing: super::route::RoutingChange,
}

impl ReloadReport {
    /// A few lines a person reads after `curl -X POST /-/reload`.
    pub fn render(&self) -> String {
        let g = &self.groups;
        let r = &self.routing;
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "config reloaded\n\
             groups: {} kept, {} restarted, {} started, {} stopped\n  restarted: {}\n  started: {}\n  stopped: {}\n\
             destinations: {} kept, {} rebuilt, {} added, {} removed\n  rebuilt: {}\n  added: {}\n  removed: {}\n\
             global relabeling / external labels: {}\n",
            g.kept.len(),
            g.restarted.len(),
            g.started.len(),
            g.stopped.len(),
            list(&g.restarted),
            list(&g.started),
            list(&g.stopped),
            r.kept.len(),
            r.rebuilt.len(),
            r.added.len(),
            r.removed.len(),
            list(&r.rebuilt),
            list(&r.added),
            list(&r.removed),
            if r.global { "changed" } else { "unchanged" },
        )
    }
}

#[derive(Debug, Default)]
struct Status {
    successes: u64,
    failures: u64,
    /// The first problem of the last reload, when it failed.
    last_error: Option<String>,
    last_success_ms: i64,
}

/// Owns the running config and applies new ones.
pub struct Reloader {
    path: PathBuf,
    engine: EngineHandle,
    pipeline: Arc<Pipeline>,
    /// The config now running; the lock also serializes reloads.
    current: tokio::sync::Mutex<Setup>,
    status: Mutex<Status>,
    /// Breach captures, given the new `captures:` last.
    captures: Option<super::capture::Captures>,
    /// `--cluster.*`: applied to every config read.
    cluster_flags: ClusterFlags,
    /// Ownership under the running config, readable while a reload runs.
    cluster: Mutex<Arc<ClusterView>>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        running: Setup,
        engine: EngineHandle,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Reloader {
            path,
            engine,
            pipeline,
            cluster: Mutex::new(Arc::new(running.cluster.clone())),
            cluster_flags: ClusterFlags::default(),
            current: tokio::sync::Mutex::new(running),
            status: Mutex::new(Status {
                last_success_ms: now_ms(),
                ..Status::default()
            }),
            captures: None,
        }
    }

    /// Reloads apply `captures:` to `captures` too (after the engine).
    pub fn with_captures(mut self, captures: super::capture::Captures) -> Self {
        self.captures = Some(captures);
        self
    }

    /// Reloads read the config with these `--cluster.*` flags.
    pub fn with_cluster_flags(mut self, flags: ClusterFlags) -> Self {
        self.cluster_flags = flags;
        self
    }

    /// Which groups this member owns under the running config.
    pub fn cluster(&self) -> Arc<ClusterView> {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads and applies the config again; `trigger` names the cause for
    /// the log. `Err` holds every problem (the old config keeps running).
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, Vec<String>> {
        let mut current = self.current.lock().await;
        tracing::info!(trigger, config = %self.path.display(), "reloading the config");
        let path = self.path.clone();
        let flags = self.cluster_flags.clone();
        let checked = tokio::task::spawn_blocking(move || Setup::load_with(&path, &flags))
            .await
            .unwrap_or_else(|e| Err(vec![format!("reading the config: {e}")]));
        let next = match checked {
            Ok(next) => next,
            Err(problems) => return Err(self.failed(problems)),
        };
        for w in &next.warnings {
            tracing::warn!("{w}");
        }
        if next.listen() != current.listen() {
            tracing::warn!(
                old = current.listen().unwrap_or(super::DEFAULT_LISTEN),
                new = next.listen().unwrap_or(super::DEFAULT_LISTEN),
                "server.listen changed: it applies at the next start; restart spillway to listen there"
            );
        }
        let inserts = |s: &Setup| s.receiver_limits().requests_at_once;
        if inserts(&next) != inserts(&current) {
            tracing::warn!(
                old = inserts(&current),
                new = inserts(&next),
                "server.max_concurrent_inserts changed: it applies at the next start"
            );
        }
        let routing = match self.pipeline.reconfigure(next.pipeline.clone()).await {
            Ok(change) => change,
            Err(e) => {
                // Some destinations may have switched already; the rules
                // have not. Report it as a failed reload.
                return Err(self.failed(vec![e]));
            }
        };
        let ds: Option<Arc<dyn super::Datasource>> = if next.datasource_changed(&current) {
            Some(next.datasource.clone())
        } else {
            None
        };
        let groups = match self
            .engine
            .reload_with(next.groups.clone(), ds, Some(next.engine.clone()))
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.failed(e.to_string().lines().map(str::to_string).collect())),
        };
        if let Some(c) = &self.captures {
            let source = next
                .datasource_changed(&current)
                .then(|| next.capture_source.clone())
                .flatten();
            if let Err(e) = c.reconfigure(next.captures.clone(), source) {
                return Err(self.failed(vec![e.to_string()]));
            }
        }
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(next.cluster.clone());
        *current = next;
        let report = ReloadReport { groups, routing };
        {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            st.successes += 1;
            st.last_error = None;
            st.last_success_ms = now_ms();
        }
        tracing::info!(
            groups_kept = report.groups.kept.len(),
            groups_restarted = report.groups.restarted.len(),
            groups_started = report.groups.started.len(),
            groups_stopped = report.groups.stopped.len(),
            destinations_kept = report.routing.kept.len(),
            destinations_rebuilt = report.routing.rebuilt.len(),
            destinations_added = report.routing.added.len(),
            destinations_removed = report.routing.removed.len(),
            global_changed = report.routing.global,
            "config reloaded"
        );
        Ok(report)
    }

    fn failed(&self, problems: Vec<String>) -> Vec<String> {
        for p in &problems {
            tracing::error!("config reload refused: {p}");
        }
        tracing::error!(
            "config reload refused ({} problem(s)); the previous config keeps running",
            problems.len()
        );
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.failures += 1;
        st.last_error = Some(
            problems
                .first()
                .cloned()
                .unwrap_or_else(|| "unknown".to_string()),
        );
        problems
    }

    /// The reload metrics in Prometheus text format, appended to `/metrics`
    /// (rendered here because an error series must disappear once a reload
    /// succeeds, which the metrics registry cannot do).
    pub fn metrics_text(&self) -> String {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP spillway_config_last_reload_successful Whether the last config reload succeeded (1) or was refused (0).\n");
        out.push_str("# TYPE spillway_config_last_reload_successful gauge\n");
        out.push_str(&format!(
            "spillway_config_last_reload_successful {}\n",
            u8::from(st.last_error.is_none())
        ));
        out.push_str("# HELP spillway_config_last_reload_success_timestamp_seconds When the running config was loaded.\n");
        out.push_str("# TYPE spillway_config_last_reload_success_timestamp_seconds gauge\n");
        out.push_str(&format!(
            "spillway_config_last_reload_success_timestamp_seconds {}\n",
            st.last_success_ms / 1000
        ));
        out.push_str(
            "# HELP spillway_config_reloads_total Config reloads by outcome (SIGHUP and /-/reload).\n",
        );
        out.push_str("# TYPE spillway_config_reloads_total counter\n");
        out.push_str(&format!(
            "spillway_config_reloads_total{{status=\"success\"}} {}\n",
            st.successes
        ));
        out.push_str(&format!(
            "spillway_config_reloads_total{{status=\"failure\"}} {}\n",
            st.failures
        ));
        if let Some(e) = &st.last_error {
            out.push_str("# HELP spillway_config_last_reload_error The first problem of the last, refused, reload (present only then).\n");
            out.push_str("# TYPE spillway_config_last_reload_error gauge\n");
            out.push_str(&format!(
                "spillway_config_last_reload_error{{error=\"{}\"}} 1\n",
                label_value(e)
            ));
        }
        out
    }
}

/// One line, at most [`MAX_ERROR_LABEL`] characters, escaped for the text format.
fn label_value(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = one_line.chars().take(MAX_ERROR_LABEL).collect();
    short
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_label_is_one_escaped_line() {
        assert_eq!(
            label_value("a.yml:3: field \"expr\":\n  bad \\ x"),
            "a.yml:3: field \\\"expr\\\": bad \\\\ x"
        );
        assert_eq!(label_value(&"x".repeat(1000)).len(), MAX_ERROR_LABEL);
    }

    #[test]
    fn report_lists_what_changed() {
        let r = ReloadReport {
            groups: super::super::ReloadSummary {
                kept: vec!["a.yml: g1".into()],
                restarted: vec!["a.yml: g2".into()],
                ..Default::default()
            },
            routing: super::super::route::RoutingChange {
                global: true,
                kept: vec!["d1".into()],
                added: vec!["d2".into()],
                ..Default::default()
            },
        };
        let text = r.render();
        assert!(
            text.contains("groups: 1 kept, 1 restarted, 0 started, 0 stopped"),
            "{text}"
        );
        assert!(text.contains("restarted: a.yml: g2"), "{text}");
        assert!(
            text.contains("destinations: 1 kept, 0 rebuilt, 1 added, 0 removed"),
            "{text}"
        );
        assert!(text.contains("external labels: changed"), "{text}");
    }
}
