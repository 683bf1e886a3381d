//! One task per group: wait for the next timestamp to be due, evaluate the
//! group's rules at it (up to `concurrency` at once), hand their series to
//! the sink, record health and history, repeat.
//!
//! Catch-up. Each rule has a cursor: the oldest timestamp it has not
//! evaluated yet. Every iteration evaluates, per rule and oldest first, all
//! grid timestamps from its cursor to the newest due one, at most
//! `max_catch_up` back (older ones are given up, logged and counted). A
//! timestamp counts as done when it was evaluated, successfully or with an
//! error that will not pass (a bad query, a limit, duplicates); it stays
//! pending when the datasource could not be reached (connection error,
//! timeout, 5xx/429 after the client's retries) or the sink refused the
//! result. So a datasource outage, a process that was paused, or an
//! iteration that overran its interval all end with every timestamp
//! evaluated once, in order, which also keeps stale markers and alert
//! states right. When one rule finds the datasource unreachable, the other
//! rules of that iteration do not try (they would only wait for the same
//! timeouts); they catch up with it.
//!
//! State is committed only after the sink took the series: a rule's memory
//! (what it exported, its alerts) and its cursor move together.
//!
//! Every evaluation, scheduled or caught up, happens at least the wake
//! margin (`run::margin`) after its timestamp is due: an
//! iteration evaluates up to the newest timestamp whose margin has passed,
//! so a process resumed from a pause (or a clock that jumped) inside a
//! timestamp's margin leaves that timestamp to the next wake-up.

use crate::model::{ExportBatch, Origin};
use crate::run::datasource::{Datasource, RuleQuery};
use crate::run::eval::{annotate, evaluate, RuleMemory, RuleSpec};
use crate::run::margin::WakeMargin;
use crate::run::options::{rule_spec, EngineOptions};
use crate::run::results::ResultSink;
use crate::run::rules::{Group, Rule};
use crate::run::schedule::{catch_up_plan, sleep_until, Clock, Schedule};
use crate::run::state::{RuleStatus, Update};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the API reads while the task runs.
#[derive(Debug)]
pub(crate) struct GroupShared {
    pub group: Group,
    pub interval: Duration,
    pub rules: Vec<RuleShared>,
    pub last_evaluation_ms: Mutex<Option<i64>>,
}

#[derive(Debug)]
pub(crate) struct RuleShared {
    pub rule: Rule,
    pub labels: BTreeMap<String, String>,
    pub status: Mutex<RuleStatus>,
}

/// What a rule keeps when its group is restarted by a reload: vmalert keeps
/// the state of rules whose id (expression, name, labels) did not change.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleCarry {
    pub cursor: Option<i64>,
    pub memory: RuleMemory,
    pub status: Option<RuleStatus>,
}

enum Step {
    /// Evaluated (maybe with an error that will not pass): move on.
    Done,
    /// The datasource could not be reached: keep this timestamp.
    Unreachable,
    /// The sink refused the series: keep this timestamp.
    SinkFailed,
}

struct RuleRunner {
    index: usize,
    spec: RuleSpec,
    query: RuleQuery,
    debug: bool,
    cursor: Option<i64>,
    memory: RuleMemory,
    metric_labels: Vec<metrics::Label>,
    /// Carried by every export of this rule.
    origin: Origin,
}

pub(crate) struct GroupTask {
    shared: Arc<GroupShared>,
    schedule: Schedule,
    rules: Vec<RuleRunner>,
    ds: Arc<dyn Datasource>,
    sink: Arc<dyn ResultSink>,
    clock: Arc<dyn Clock>,
    max_catch_up: Duration,
    /// Added to the due time of each timestamp (see `run::margin`).
    margin: WakeMargin,
    metric_labels: Vec<metrics::Label>,
}

/// Everything a rule evaluation borrows from its group.
struct Ctx<'a> {
    shared: &'a GroupShared,
    ds: &'a dyn Datasource,
    sink: &'a dyn ResultSink,
    clock: &'a dyn Clock,
    step_ms: i64,
    max_catch_up: Duration,
    ds_down: &'a AtomicBool,
}

/// The history length of a rule: its `update_entries_limit`, else the default.
fn history_len(rule: &Rule, opts: &EngineOptions) -> usize {
    match rule.update_entries_limit {
        Some(n) if n > 0 => n as usize,
        Some(_) => 1,
        None => opts.history_len,
    }
}

/// The longest wake margin of a group: the configured one, at most 3/4 of
/// its interval.
fn wake_margin_cap(opts: &EngineOptions, schedule: &Schedule) -> i64 {
    (opts.wake_margin.as_millis() as i64).min(schedule.interval_ms * 3 / 4)
}

impl GroupTask {
    pub(crate) fn new(
        group: Group,
        ds: Arc<dyn Datasource>,
        sink: Arc<dyn ResultSink>,
        clock: Arc<dyn Clock>,
        opts: &EngineOptions,
        mut carry: HashMap<u64, RuleCarry>,
    ) -> (GroupTask, Arc<GroupShared>) {
        let schedule = Schedule::for_group(
            &group,
            opts.default_interval,
            opts.default_eval_delay,
            clock.now_ms(),
        );
        let interval = Duration::from_millis(schedule.interval_ms as u64);
        let group_labels = vec![
            metrics::Label::new("group", group.name.clone()),
            metrics::Label::new("file", group.file.clone()),
        ];
        let mut rules = Vec::new();
        let mut shared_rules = Vec::new();
        for (index, rule) in group.rules.iter().enumerate() {
            let spec = rule_spec(&group, rule, opts);
            let mut kept = carry.remove(&rule.id).unwrap_or_default();
            // A new interval or offset moves the grid: continue from the
            // first new timestamp after what the old grid already did.
            kept.cursor = kept.cursor.map(|c| schedule.first_at_or_after(c));
            let status = kept
                .status
                .unwrap_or_else(|| RuleStatus::new(history_len(rule, opts)));
            shared_rules.push(RuleShared {
                rule: rule.clone(),
                labels: spec.labels.clone(),
                status: Mutex::new(status),
            });
            let mut metric_labels = group_labels.clone();
            metric_labels.push(metrics::Label::new("rule", rule.name().to_string()));
            rules.push(RuleRunner {
                index,
                query: RuleQuery::new(&group, &rule.expr, schedule.interval_ms),
                debug: group.rule_debug(rule),
                origin: spec.origin(),
                spec,
                cursor: kept.cursor,
                memory: kept.memory,
                metric_labels,
            });
        }
        let shared = Arc::new(GroupShared {
            group,
            interval,
            rules: shared_rules,
            last_evaluation_ms: Mutex::new(None),
        });
        let task = GroupTask {
            shared: shared.clone(),
            schedule,
            rules,
            ds,
            sink,
            clock,
            max_catch_up: opts.max_catch_up,
            margin: WakeMargin::new(&shared.group, &schedule, wake_margin_cap(opts, &schedule)),
            metric_labels: group_labels,
        };
        (task, shared)
    }

    fn publish_margin(&self) {
        metrics::gauge!(
            "spillway_group_wake_margin_seconds",
            self.metric_labels.clone()
        )
        .set(self.margin.ms() as f64 / 1000.0);
    }

    /// Runs until `stop` changes (or its sender is dropped); returns what
    /// the rules carry into a restarted group.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> HashMap<u64, RuleCarry> {
        let step = self.schedule.interval_ms;
        tracing::info!(
            group = %self.shared.group.name,
            file = %self.shared.group.file,
            interval = ?self.shared.interval,
            concurrency = self.shared.group.concurrency,
            "group started"
        );
        let mut next_ts = self.schedule.timestamp_at(self.clock.now_ms());
        loop {
            if self.margin.stale(self.clock.now_ms()) {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    _ = self.margin.refresh(&*self.ds, &*self.clock) => self.publish_margin(),
                }
            }
            let wake = self.schedule.due_at(next_ts) + self.margin.ms();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = sleep_until(&*self.clock, wake) => {}
            }
            // The newest timestamp whose margin has passed, not the newest
            // due one: after a pause or a clock jump `now` may sit inside
            // the margin of a newer timestamp, and evaluating it at once
            // gets the answer as of a second before it (see
            // `run::margin`). It waits for the next turn.
            let due = self
                .schedule
                .timestamp_at(self.clock.now_ms() - self.margin.ms())
                .max(next_ts);
            if due > next_ts {
                let missed = ((due - next_ts) / step) as u64;
                metrics::counter!(
                    "spillway_group_iterations_missed_total",
                    self.metric_labels.clone()
                )
                .increment(missed);
                tracing::warn!(
                    group = %self.shared.group.name,
                    missed,
                    "evaluation started late (process paused or previous iteration overran); catching up"
                );
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = self.iterate(due) => {}
            }
            next_ts = due + step;
        }
        tracing::info!(group = %self.shared.group.name, file = %self.shared.group.file, "group stopped");
        self.rules
            .into_iter()
            .map(|r| {
                let status = self.shared.rules[r.index]
                    .status
                    .lock()
                    .map(|s| s.clone())
                    .ok();
                (
                    self.shared.rules[r.index].rule.id,
                    RuleCarry {
                        cursor: r.cursor,
                        memory: r.memory,
                        status,
                    },
                )
            })
            .collect()
    }

    /// Evaluates every rule up to `due`.
    async fn iterate(&mut self, due: i64) {
        let started = std::time::Instant::now();
        // vmalert's group `lastEvaluation` is when the iteration started.
        let started_ms = self.clock.now_ms();
        let ds_down = AtomicBool::new(false);
        let ctx = Ctx {
            shared: &self.shared,
            ds: &*self.ds,
            sink: &*self.sink,
            clock: &*self.clock,
            step_ms: self.schedule.interval_ms,
            max_catch_up: self.max_catch_up,
            ds_down: &ds_down,
        };
        let concurrency = self.shared.group.concurrency.max(1);
        futures_util::stream::iter(self.rules.iter_mut())
            .for_each_concurrent(concurrency, |r| r.catch_up(&ctx, due))
            .await;
        self.sink.round_done();
        metrics::histogram!(
            "spillway_group_iteration_duration_seconds",
            self.metric_labels.clone()
        )
        .record(started.elapsed().as_secs_f64());
        if let Ok(mut last) = self.shared.last_evaluation_ms.lock() {
            *last = Some(started_ms);
        }
    }
}

impl RuleRunner {
    async fn catch_up(&mut self, ctx: &Ctx<'_>, due: i64) {
        let (plan, dropped) = catch_up_plan(self.cursor, due, ctx.step_ms, ctx.max_catch_up);
        if dropped > 0 {
            tracing::warn!(
                group = %ctx.shared.group.name,
                rule = %self.spec.name,
                dropped,
                max_catch_up = ?ctx.max_catch_up,
                "evaluations older than max_catch_up are given up; raise `evaluation.max_catch_up` to keep more"
            );
            metrics::counter!(
                "spillway_rule_catch_up_dropped_total",
                self.metric_labels.clone()
            )
            .increment(dropped);
        }
        let Some(first) = plan.first() else {
            return;
        };
        self.cursor = Some(*first);
        if plan.len() > 1 {
            tracing::info!(
                group = %ctx.shared.group.name,
                rule = %self.spec.name,
                evaluations = plan.len(),
                from = %crate::model::time::format_rfc3339_ms(*first),
                "catching up missed evaluations"
            );
        }
        for ts in plan {
            if ctx.ds_down.load(Ordering::Relaxed) {
                return;
            }
            match self.eval_once(ctx, ts).await {
                Step::Done => self.cursor = Some(ts + ctx.step_ms),
                Step::Unreachable => {
                    ctx.ds_down.store(true, Ordering::Relaxed);
                    return;
                }
                Step::SinkFailed => return,
            }
        }
    }

    async fn eval_once(&mut self, ctx: &Ctx<'_>, ts: i64) -> Step {
        let time_ms = ctx.clock.now_ms();
        let started = std::time::Instant::now();
        let answer = ctx.ds.instant(&self.query, ts).await;
        metrics::counter!(
            "spillway_rule_evaluations_total",
            self.metric_labels.clone()
        )
        .increment(1);
        let mut update = Update {
            time_ms,
            at_ms: ts,
            ..Update::default()
        };
        let step = match answer {
            Err(e) => {
                update.error = Some(format!(
                    "failed to execute query {:?}: {}",
                    self.spec.expr, e
                ));
                update.duration = started.elapsed();
                if e.unreachable {
                    Step::Unreachable
                } else {
                    Step::Done
                }
            }
            Ok(answer) => {
                update.samples = answer.series.len();
                update.series_fetched = answer.series_fetched;
                let out = evaluate(&self.spec, &self.memory, ts, answer.series);
                update.duration = started.elapsed();
                update.exported = out.export.len();
                if self.debug {
                    tracing::info!(
                        group = %ctx.shared.group.name,
                        rule = %self.spec.name,
                        at = %crate::model::time::format_rfc3339_ms(ts),
                        samples = update.samples,
                        exported = update.exported,
                        error = ?out.error,
                        "rule evaluated"
                    );
                }
                let sent = if out.export.is_empty() {
                    Ok(())
                } else {
                    let mut batch = ExportBatch::new(self.origin.clone(), out.export);
                    let memory = out.memory.as_ref().unwrap_or(&self.memory);
                    batch.annotations = annotate(&self.spec, memory, &batch.series);
                    ctx.sink.export(batch).await
                };
                match sent {
                    Ok(()) => {
                        if let Some(m) = out.memory {
                            self.memory = m;
                        }
                        update.error = out.error;
                        Step::Done
                    }
                    Err(e) => {
                        update.exported = 0;
                        update.error = Some(format!(
                            "cannot hand the results to the destinations: {e}; the evaluation will be repeated"
                        ));
                        Step::SinkFailed
                    }
                }
            }
        };
        metrics::gauge!("spillway_rule_last_samples", self.metric_labels.clone())
            .set(update.samples as f64);
        if update.error.is_some() {
            metrics::counter!(
                "spillway_rule_evaluation_errors_total",
                self.metric_labels.clone()
            )
            .increment(1);
        }
        self.record(ctx, update);
        step
    }

    /// Stores the update for the API; logs when health changes or the
    /// error does, not at every failing evaluation.
    fn record(&self, ctx: &Ctx<'_>, update: Update) {
        let shared = &ctx.shared.rules[self.index];
        let Ok(mut status) = shared.status.lock() else {
            return;
        };
        let previous = status.last().and_then(|u| u.error.clone());
        match (&previous, &update.error) {
            (prev, Some(e)) if prev.as_ref() != Some(e) => tracing::warn!(
                group = %ctx.shared.group.name,
                file = %ctx.shared.group.file,
                rule = %self.spec.name,
                at = %crate::model::time::format_rfc3339_ms(update.at_ms),
                error = %e,
                "rule evaluation failed"
            ),
            (Some(_), None) => tracing::info!(
                group = %ctx.shared.group.name,
                rule = %self.spec.name,
                "rule evaluates again"
            ),
            _ => {}
        }
        status.push(update);
        if self.spec.alert.is_some() {
            let mut alerts: Vec<_> = self.memory.alerts.values().cloned().collect();
            alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
            status.alerts = alerts;
        }
    }
}
