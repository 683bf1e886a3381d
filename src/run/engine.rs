//! The evaluation engine of `spillway run`: one task per rule group,
//! started together, reloaded in place, stopped together.
//!
//! The seam to the rest of `run` is [`ResultSink`] (in `results`): the
//! engine hands it every batch of series a rule produced at one timestamp
//! (results, alert series and stale markers) and waits for `Ok` before it
//! remembers having exported them. `spillway run` implements it with the
//! router, which relabels and writes into each destination's durable queue;
//! tests use
//! [`MemorySink`](crate::run::results::MemorySink). An `Err` keeps the timestamp pending: it is
//! evaluated again at the next iteration (see `group.rs` for catch-up).
//! The options every group shares are in `options`; `engine` uses `group`,
//! never the other way round.
//!
//! Reload ([`EngineHandle::reload`]) compares groups by file and name:
//! identical ones (same checksum) keep running untouched; changed ones are
//! stopped and started again with the new definition, and each rule whose
//! id (name, expression, labels) is unchanged keeps its cursor, stale-marker
//! memory, alerts and history, as vmalert keeps them; removed ones stop.
//! New definitions are checked first, so a refused reload changes nothing.

use crate::model::Series;
use crate::run::datasource::Datasource;
use crate::run::group::{GroupShared, GroupTask, RuleCarry};
use crate::run::rules::Group;
use crate::run::schedule::Clock;
use crate::run::state::{GroupState, GroupsState, RuleState};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::run::options::EngineOptions;
use crate::run::results::ResultSink;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Groups that cannot be evaluated, one line each.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// What a reload did, by group (`file: name`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub kept: Vec<String>,
    pub restarted: Vec<String>,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
}

struct Running {
    key: (String, String),
    checksum: String,
    shared: Arc<GroupShared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<HashMap<u64, RuleCarry>>,
}

struct Inner {
    /// Replaced by a reload that changes the datasource or the options;
    /// each group task holds the ones it was started with.
    ds: RwLock<Arc<dyn Datasource>>,
    sink: Arc<dyn ResultSink>,
    clock: Arc<dyn Clock>,
    opts: RwLock<EngineOptions>,
    running: tokio::sync::Mutex<Vec<Running>>,
    /// What the API reads, in config order.
    shared: RwLock<Vec<Arc<GroupShared>>>,
}

/// The entry point: [`Engine::start`].
pub struct Engine;

impl Engine {
    /// Checks `groups` and starts one task per group on the current tokio
    /// runtime.
    pub fn start(
        groups: Vec<Group>,
        ds: Arc<dyn Datasource>,
        sink: Arc<dyn ResultSink>,
        clock: Arc<dyn Clock>,
        opts: EngineOptions,
    ) -> Result<EngineHandle, EngineError> {
        describe_metrics();
        check_groups(&groups, &*ds, &opts)?;
        let inner = Arc::new(Inner {
            ds: RwLock::new(ds),
            sink,
            clock,
            opts: RwLock::new(opts),
            running: tokio::sync::Mutex::new(Vec::new()),
            shared: RwLock::new(Vec::new()),
        });
        let mut running = Vec::new();
        for g in groups {
            running.push(inner.spawn(g, HashMap::new()));
        }
        inner.publish(&running);
        *inner
            .running
            .try_lock()
            .expect("nobody else holds the lock yet") = running;
        Ok(EngineHandle { inner })
    }
}

/// Refuses what vmalert would evaluate but spillway cannot: graphite
/// groups, a type without a datasource, intervals of zero. [`Engine::start`]
/// and reloads run it; `run` runs it first, with the rest of the config.
pub fn check_groups(
    groups: &[Group],
    ds: &dyn Datasource,
    opts: &EngineOptions,
) -> Result<(), EngineError> {
    let mut problems = Vec::new();
    for g in groups {
        if let Err(reason) = ds.supports(g.rule_type) {
            problems.push(format!(
                "{}:{}: group {:?}: {reason}",
                g.file, g.line, g.name
            ));
        }
        let interval = g.interval.unwrap_or(opts.default_interval);
        if interval < Duration::from_millis(1) {
            problems.push(format!(
                "{}:{}: group {:?}: the evaluation interval must be at least 1ms",
                g.file, g.line, g.name
            ));
        }
        if let Some(off) = g.eval_offset {
            if off >= interval {
                problems.push(format!(
                    "{}:{}: group {:?}: eval_offset should be smaller than interval; now eval_offset: {:?}, interval: {:?}",
                    g.file, g.line, g.name, off, interval
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Invalid(problems))
    }
}

impl Inner {
    fn spawn(&self, group: Group, carry: HashMap<u64, RuleCarry>) -> Running {
        let key = (group.file.clone(), group.name.clone());
        let checksum = group.checksum.clone();
        let ds = self.ds.read().unwrap_or_else(|p| p.into_inner()).clone();
        let opts = self.opts.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (task, shared) = GroupTask::new(
            group,
            ds,
            self.sink.clone(),
            self.clock.clone(),
            &opts,
            carry,
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(task.run(stop_rx));
        Running {
            key,
            checksum,
            shared,
            stop,
            task,
        }
    }

    fn publish(&self, running: &[Running]) {
        if let Ok(mut s) = self.shared.write() {
            *s = running.iter().map(|r| r.shared.clone()).collect();
        }
    }
}

async fn stop(r: Running) -> HashMap<u64, RuleCarry> {
    let _ = r.stop.send(true);
    match r.task.await {
        Ok(carry) => carry,
        Err(e) => {
            tracing::error!(group = %r.key.1, file = %r.key.0, error = %e, "group task ended abnormally");
            HashMap::new()
        }
    }
}

/// A running engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl EngineHandle {
    /// Replaces the groups: unchanged ones keep running, changed ones
    /// restart (rules keep their state by id), removed ones stop. Invalid
    /// groups refuse the whole reload and leave everything as it was.
    pub async fn reload(&self, groups: Vec<Group>) -> Result<ReloadSummary, EngineError> {
        self.reload_with(groups, None, None).await
    }

    /// [`EngineHandle::reload`] that may also replace the datasource and the
    /// options (`None`: keep the current ones). A new datasource, or options
    /// that differ, restart every group; rules keep their state by id as in
    /// any restart, so nothing is evaluated twice or skipped.
    pub async fn reload_with(
        &self,
        groups: Vec<Group>,
        ds: Option<Arc<dyn Datasource>>,
        opts: Option<EngineOptions>,
    ) -> Result<ReloadSummary, EngineError> {
        let mut running = self.inner.running.lock().await;
        let current_opts = self
            .inner
            .opts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let opts_changed = opts.as_ref().is_some_and(|o| *o != current_opts);
        let restart_all = ds.is_some() || opts_changed;
        {
            let check_ds = ds.clone().unwrap_or_else(|| {
                self.inner
                    .ds
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            });
            check_groups(&groups, &*check_ds, opts.as_ref().unwrap_or(&current_opts))?;
        }
        if let Some(ds) = ds {
            *self.inner.ds.write().unwrap_or_else(|p| p.into_inner()) = ds;
        }
        if let Some(o) = opts.filter(|_| opts_changed) {
            *self.inner.opts.write().unwrap_or_else(|p| p.into_inner()) = o;
        }
        let mut old: Vec<Option<Running>> = std::mem::take(&mut *running)
            .into_iter()
            .map(Some)
            .collect();
        let mut summary = ReloadSummary::default();
        let mut next = Vec::with_capacity(groups.len());
        for g in groups {
            let name = format!("{}: {}", g.file, g.name);
            let found = old.iter().position(|o| {
                o.as_ref()
                    .is_some_and(|o| o.key.0 == g.file && o.key.1 == g.name)
            });
            match found.and_then(|i| old[i].take()) {
                Some(o) if o.checksum == g.checksum && !restart_all => {
                    summary.kept.push(name);
                    next.push(o);
                }
                Some(o) => {
                    let carry = stop(o).await;
                    summary.restarted.push(name);
                    next.push(self.inner.spawn(g, carry));
                }
                None => {
                    summary.started.push(name);
                    next.push(self.inner.spawn(g, HashMap::new()));
                }
            }
        }
        for o in old.into_iter().flatten() {
            summary.stopped.push(format!("{}: {}", o.key.0, o.key.1));
            stop(o).await;
        }
        self.inner.publish(&next);
        *running = next;
        tracing::info!(
            kept = summary.kept.len(),
            restarted = summary.restarted.len(),
            started = summary.started.len(),
            stopped = summary.stopped.len(),
            "rule groups reloaded"
        );
        Ok(summary)
    }

    /// Stops every group (an evaluation in progress is abandoned; its
    /// timestamp was not recorded as done) and waits for them.
    pub async fn shutdown(&self) {
        let mut running = self.inner.running.lock().await;
        for r in std::mem::take(&mut *running) {
            stop(r).await;
        }
        self.inner.publish(&[]);
    }

    /// The groups, their rules and their status now.
    pub fn snapshot(&self) -> GroupsState {
        let shared = self
            .inner
            .shared
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        GroupsState {
            groups: shared
                .iter()
                .map(|g| GroupState {
                    group: g.group.clone(),
                    interval: g.interval,
                    last_evaluation_ms: g.last_evaluation_ms.lock().ok().and_then(|l| *l),
                    rules: g
                        .rules
                        .iter()
                        .map(|r| RuleState {
                            rule: r.rule.clone(),
                            labels: r.labels.clone(),
                            status: r
                                .status
                                .lock()
                                .map(|s| s.clone())
                                .unwrap_or_else(|_| crate::run::state::RuleStatus::new(1)),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// `GET /api/v1/rules`, in vmalert's shape.
    pub fn rules_api_json(&self) -> serde_json::Value {
        self.snapshot().to_api_json()
    }
}

/// One rule's result in [`preview`].
#[derive(Clone, Debug)]
pub struct PreviewRule {
    pub file: String,
    pub group: String,
    pub rule: String,
    /// The evaluation timestamp used.
    pub at_ms: i64,
    /// What the rule would export (for `alert:` rules: firing alerts, so
    /// only those with `for: 0` can appear in a single evaluation).
    pub series: Vec<Series>,
    pub error: Option<String>,
    /// Where the series come from and their rendered annotations, as
    /// event destinations would show them.
    pub export: crate::model::ExportBatch,
}

/// Evaluates every rule once, at the timestamp its group would use at
/// `now_ms`, without state (no stale markers) and without exporting:
/// `spillway rules preview`.
pub async fn preview(
    groups: &[Group],
    ds: &dyn Datasource,
    opts: &EngineOptions,
    now_ms: i64,
) -> Result<Vec<PreviewRule>, EngineError> {
    use crate::run::schedule::Schedule;
    check_groups(groups, ds, opts)?;
    let mut out = Vec::new();
    for g in groups {
        let sched = Schedule::for_group(g, opts.default_interval, opts.default_eval_delay, now_ms);
        let at_ms = sched.timestamp_at(now_ms);
        for rule in &g.rules {
            let spec = crate::run::options::rule_spec(g, rule, opts);
            let query = crate::run::datasource::RuleQuery::new(g, &rule.expr, sched.interval_ms);
            let mut export = crate::model::ExportBatch::new(spec.origin(), Vec::new());
            let (series, error) = match ds.instant(&query, at_ms).await {
                Err(e) => (
                    Vec::new(),
                    Some(format!("failed to execute query {:?}: {e}", rule.expr)),
                ),
                Ok(answer) => {
                    let o = crate::run::eval::evaluate(
                        &spec,
                        &crate::run::eval::RuleMemory::default(),
                        at_ms,
                        answer.series,
                    );
                    if let Some(m) = &o.memory {
                        export.annotations = crate::run::eval::annotate(&spec, m, &o.export);
                    }
                    (o.export, o.error)
                }
            };
            export.series = series.clone();
            out.push(PreviewRule {
                file: g.file.clone(),
                group: g.name.clone(),
                rule: rule.name().to_string(),
                at_ms,
                series,
                error,
                export,
            });
        }
    }
    Ok(out)
}

/// HELP texts for the engine's metrics (shown by the exporter).
fn describe_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(
            "spillway_rule_evaluations_total",
            "Rule evaluations, including catch-up ones."
        );
        metrics::describe_counter!(
            "spillway_rule_evaluation_errors_total",
            "Rule evaluations that ended with an error (query, limit, duplicates, templates, sink)."
        );
        metrics::describe_gauge!(
            "spillway_rule_last_samples",
            "Series the datasource returned at the rule's last evaluation."
        );
        metrics::describe_histogram!(
            "spillway_group_iteration_duration_seconds",
            metrics::Unit::Seconds,
            "Time to evaluate all rules of a group once (catch-up included)."
        );
        metrics::describe_counter!(
            "spillway_group_iterations_missed_total",
            "Evaluation timestamps a group did not start on time (evaluated late by catch-up)."
        );
        metrics::describe_gauge!(
            "spillway_group_wake_margin_seconds",
            metrics::Unit::Seconds,
            "How long after a timestamp is due the group evaluates it: the datasource's measured lag beyond the group's eval_delay, plus 150ms, at most 1.2s."
        );
        metrics::describe_counter!(
            "spillway_rule_catch_up_dropped_total",
            "Missed evaluation timestamps older than max_catch_up, given up."
        );
    });
}
