//! `spillway replay`: evaluate the rules over a past range and export what
//! they produce with its original timestamps (backfill), as vmalert's
//! `-replay.timeFrom/-replay.timeTo` mode does.
//!
//! Each rule is evaluated with range queries (`query_range`, VictoriaLogs
//! `stats_query_range`) with `step` = the group interval, over the group's
//! evaluation grid from the first grid timestamp at or after `from` to the
//! last one at or before `to` (vmalert starts at `from` as given; starting
//! on the grid gives the timestamps live evaluation gives). The range is cut
//! into requests of at most `max_datapoints_per_query` points (vmalert's
//! `-replay.maxDatapointsPerQuery`, 1000) that do not overlap. Series stream
//! from the answer to the sink in batches, so memory holds one request's
//! worth of label sets, not the range.
//!
//! LogsQL rules (`type: vlogs`): the point at `T` is the bucket
//! `[T - interval, T)` of `stats_query_range`, moved from its start to `T`,
//! which is what live evaluation exports at `T` (see `datasource`): every
//! bucket of every request is whole (the request ends 1ms before its last
//! timestamp), and a window without matching lines exports nothing in both.
//!
//! Semantics, as vmalert's replay (`execRange`):
//! * recording rules: the live label rules (`record`, rule labels,
//!   `exported_`, empty deletes, duplicates are an error); `limit` does not
//!   apply (vmalert prints the same note); no stale markers — a backfill
//!   writes history, and vmalert's replay adds none either;
//! * alerting rules: per series, pending from its first point (or after a
//!   gap longer than the interval), firing once active for `for:`; only
//!   firing points are exported (`ALERTS{alertstate="firing"}` and
//!   `ALERTS_FOR_STATE`), and the state carries over between requests.
//!   `keep_firing_for` is not replayed (vmalert ignores it there too), and
//!   label templates see the first value of each request as `$value`.
//!
//! A failing rule is reported and the next one replayed; a sink that refuses
//! data stops the replay (nothing more can be kept).

use crate::model::range::{check_windows, Grid, Windows};
use crate::model::time::format_rfc3339_ms;
use crate::model::{Annotations, ExportBatch, Labels, Sample, Series};
use crate::run::datasource::{Datasource, RuleQuery};
use crate::run::eval::{
    alert_labels, recorded_labels, render_annotations, RuleSpec, ALERTS_FOR_STATE_METRIC,
    ALERTS_METRIC,
};
use crate::run::options::{rule_spec, EngineOptions};
use crate::run::results::ResultSink;
use crate::run::rules::{render_labels_with, Group, TemplateData};
use crate::run::schedule::{Mode, Schedule};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Points per range request (vmalert's `-replay.maxDatapointsPerQuery`).
    pub max_datapoints_per_query: usize,
    /// Series per batch handed to the sink.
    pub batch_series: usize,
    /// Default interval, external labels and the `alertgroup` label, as in `run`.
    pub engine: EngineOptions,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            max_datapoints_per_query: 1000,
            batch_series: 1000,
            engine: EngineOptions::default(),
        }
    }
}

/// Progress of a replay, one tick per range request.
pub trait ReplayProgress: Send + Sync {
    fn start(&self, total_requests: u64);
    fn request_done(&self, group: &str, rule: &str, start_ms: i64, end_ms: i64, samples: u64);
    fn finish(&self);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl ReplayProgress for NoProgress {
    fn start(&self, _: u64) {}
    fn request_done(&self, _: &str, _: &str, _: i64, _: i64, _: u64) {}
    fn finish(&self) {}
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    pub groups: usize,
    pub rules: usize,
    pub requests: u64,
    /// Series handed to the sink (one per series per request).
    pub series: u64,
    pub samples: u64,
    /// One line per rule that failed: `file: group "g", rule "r": reason`.
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--from must be before --to (got {from} and {to})")]
    EmptyRange { from: String, to: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot hand the replayed series to the destinations: {0}")]
    Sink(String),
}

/// The request windows `[start, end]` (both on the grid) covering the grid
/// timestamps in `[from, to]`, produced lazily (`model::range`).
pub fn replay_windows(schedule: &Schedule, from_ms: i64, to_ms: i64, max_points: usize) -> Windows {
    let step = schedule.interval_ms;
    let (first, last) = match schedule.mode {
        Mode::Unaligned { .. } => (from_ms, to_ms),
        _ => (
            schedule.first_at_or_after(from_ms),
            schedule.grid_floor(to_ms),
        ),
    };
    let per = u64::try_from(max_points).unwrap_or(u64::MAX).max(1);
    match Grid::new(first, last, step) {
        Some(grid) => grid.windows(per),
        None => Windows::empty(),
    }
}

/// Each group's schedule and request windows over `[from_ms, to_ms]`,
/// refused when a group would take more than `MAX_WINDOWS` requests. Cheap
/// (the windows are counted, not built), so `replay` checks it before it
/// opens any destination.
pub fn plan(
    groups: &[Group],
    from_ms: i64,
    to_ms: i64,
    opts: &ReplayOptions,
) -> Result<Vec<(Schedule, Windows)>, ReplayError> {
    if from_ms >= to_ms {
        return Err(ReplayError::EmptyRange {
            from: format_rfc3339_ms(from_ms),
            to: format_rfc3339_ms(to_ms),
        });
    }
    let plans: Vec<(Schedule, Windows)> = groups
        .iter()
        .map(|g| {
            // The delay does not matter for a past range; the grid does.
            let sched =
                Schedule::for_group(g, opts.engine.default_interval, Duration::ZERO, from_ms);
            let windows = replay_windows(&sched, from_ms, to_ms, opts.max_datapoints_per_query);
            (sched, windows)
        })
        .collect();
    for (g, (sched, windows)) in groups.iter().zip(&plans) {
        check_windows(
            windows.remaining(),
            &format!(
                "group {:?} (interval {}) over --from {} .. --to {}, {} points per request,",
                g.name,
                crate::model::time::format_duration(Duration::from_millis(
                    sched.interval_ms.unsigned_abs()
                )),
                format_rfc3339_ms(from_ms),
                format_rfc3339_ms(to_ms),
                opts.max_datapoints_per_query
            ),
            "shorten the range (--from/--to) or raise --max-datapoints-per-query",
        )
        .map_err(ReplayError::Invalid)?;
    }
    Ok(plans)
}

/// Replays `groups` over `[from_ms, to_ms]` into `sink`.
pub async fn replay(
    groups: &[Group],
    ds: &dyn Datasource,
    sink: &dyn ResultSink,
    from_ms: i64,
    to_ms: i64,
    opts: &ReplayOptions,
    progress: &dyn ReplayProgress,
) -> Result<ReplayReport, ReplayError> {
    let mut problems = Vec::new();
    for g in groups {
        if let Err(reason) = ds.supports(g.rule_type) {
            problems.push(format!(
                "{}:{}: group {:?}: {reason}",
                g.file, g.line, g.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ReplayError::Invalid(problems.join("\n")));
    }
    let plans = plan(groups, from_ms, to_ms, opts)?;
    let total: u64 = groups
        .iter()
        .zip(&plans)
        .map(|(g, (_, w))| (g.rules.len() as u64).saturating_mul(w.remaining()))
        .sum();
    progress.start(total);
    let mut report = ReplayReport {
        groups: groups.len(),
        ..ReplayReport::default()
    };
    for (g, (sched, windows)) in groups.iter().zip(&plans) {
        if g.limit > 0 {
            tracing::info!(group = %g.name, limit = g.limit, "`limit` has no effect during replay");
        }
        for rule in &g.rules {
            report.rules += 1;
            let spec = rule_spec(g, rule, &opts.engine);
            let query = RuleQuery::new(g, &rule.expr, sched.interval_ms);
            let mut rr = RuleReplay {
                spec: &spec,
                query: &query,
                step_ms: sched.interval_ms,
                sink,
                batch: Vec::new(),
                notes: Vec::new(),
                batch_limit: opts.batch_series.max(1),
                carried: HashMap::new(),
                series: 0,
                samples: 0,
                produced: 0,
            };
            let mut failed = None;
            for (s, e) in windows.clone() {
                report.requests += 1;
                let before = rr.produced;
                match rr.window(ds, s, e).await {
                    Ok(()) => {}
                    Err(WindowError::Sink(e)) => return Err(ReplayError::Sink(e)),
                    Err(WindowError::Rule(e)) => {
                        failed = Some(e);
                        break;
                    }
                }
                progress.request_done(&g.name, rule.name(), s, e, rr.produced - before);
            }
            if failed.is_none() {
                if let Err(e) = rr.flush().await {
                    return Err(ReplayError::Sink(e));
                }
            }
            report.series += rr.series;
            report.samples += rr.samples;
            if let Some(e) = failed {
                let line = format!(
                    "{}: group {:?}, rule {:?}: {e}",
                    g.file,
                    g.name,
                    rule.name()
                );
                tracing::error!("{line}");
                report.errors.push(line);
            }
        }
    }
    progress.finish();
    Ok(report)
}

enum WindowError {
    Rule(String),
    Sink(String),
}

/// An alert's state between points.
#[derive(Clone, Debug)]
struct ReplayAlert {
    firing: bool,
    active_at_ms: i64,
    prev_ms: i64,
}

struct RuleReplay<'a> {
    spec: &'a RuleSpec,
    query: &'a RuleQuery,
    step_ms: i64,
    sink: &'a dyn ResultSink,
    batch: Vec<Series>,
    /// Rendered annotations per series of `batch` (alerting rules).
    notes: Vec<Option<Annotations>>,
    batch_limit: usize,
    /// Alerts whose last point was the previous window's last timestamp.
    carried: HashMap<Labels, ReplayAlert>,
    /// Handed to the sink.
    series: u64,
    samples: u64,
    /// Produced so far (for progress).
    produced: u64,
}

impl RuleReplay<'_> {
    async fn window(&mut self, ds: &dyn Datasource, s: i64, e: i64) -> Result<(), WindowError> {
        let mut stream = ds.range(self.query, s, e).await.map_err(|err| {
            WindowError::Rule(format!(
                "failed to execute query {:?}: {err}",
                self.spec.expr
            ))
        })?;
        let mut seen: HashSet<Labels> = HashSet::new();
        let mut next_carried = HashMap::new();
        while let Some(item) = stream.recv().await {
            let series =
                item.map_err(|err| WindowError::Rule(format!("failed to read the answer: {err}")))?;
            // Only points of this window's grid.
            let samples: Vec<Sample> = series
                .samples
                .iter()
                .copied()
                .filter(|p| {
                    p.timestamp_ms >= s
                        && p.timestamp_ms <= e
                        && (p.timestamp_ms - s) % self.step_ms == 0
                })
                .collect();
            if samples.is_empty() {
                continue;
            }
            match &self.spec.alert {
                None => {
                    let labels =
                        recorded_labels(&self.spec.name, &self.spec.labels, &series.labels);
                    if !seen.insert(labels.clone()) {
                        return Err(WindowError::Rule(format!(
                            "original metric {}; resulting labels {labels}: result contains metrics with the same labelset after applying rule labels",
                            series.labels
                        )));
                    }
                    self.push(Series::new(labels, samples), None).await?;
                }
                Some(a) => {
                    let data = TemplateData {
                        labels: Some(&series.labels),
                        value: samples[0].value,
                        expr: &self.spec.expr,
                        external_labels: Some(&self.spec.external_labels),
                        for_: a.for_,
                        rule_type: self.spec.rule_type.as_str(),
                    };
                    let rendered = render_labels_with(&self.spec.labels, &data).map_err(|err| {
                        WindowError::Rule(format!("failed to expand labels: {err}"))
                    })?;
                    let group_label = a.group_label.then_some(self.spec.group.as_str());
                    let labels =
                        alert_labels(&series.labels, &rendered, &self.spec.name, group_label);
                    if !seen.insert(labels.clone()) {
                        return Err(WindowError::Rule(format!(
                            "labels {labels}: result contains metrics with the same labelset after applying rule labels"
                        )));
                    }
                    let for_ms = a.for_.as_millis() as i64;
                    let mut alert = self.carried.remove(&labels).unwrap_or(ReplayAlert {
                        firing: false,
                        active_at_ms: 0,
                        prev_ms: i64::MIN,
                    });
                    let mut state_pts = Vec::new();
                    let mut for_pts = Vec::new();
                    for p in &samples {
                        let at = p.timestamp_ms;
                        if alert.prev_ms == i64::MIN || at - alert.prev_ms > self.step_ms {
                            alert.firing = false;
                            alert.active_at_ms = at;
                        } else if at - alert.active_at_ms >= for_ms {
                            alert.firing = true;
                        }
                        alert.prev_ms = at;
                        if for_ms == 0 {
                            alert.firing = true;
                        }
                        if alert.firing {
                            state_pts.push(Sample::new(at, 1.0));
                            for_pts
                                .push(Sample::new(at, alert.active_at_ms.div_euclid(1000) as f64));
                        }
                    }
                    if alert.prev_ms == e {
                        next_carried.insert(labels.clone(), alert);
                    }
                    if !state_pts.is_empty() {
                        let mut state_labels = labels.clone();
                        state_labels.set(crate::model::labels::METRIC_NAME, ALERTS_METRIC);
                        state_labels.set("alertstate", "firing");
                        let note = (!self.spec.annotations.is_empty())
                            .then(|| render_annotations(self.spec, a, &labels, samples[0].value));
                        let mut for_labels = labels;
                        for_labels.set(crate::model::labels::METRIC_NAME, ALERTS_FOR_STATE_METRIC);
                        self.push(Series::new(state_labels, state_pts), note.clone())
                            .await?;
                        self.push(Series::new(for_labels, for_pts), note).await?;
                    }
                }
            }
        }
        self.carried = next_carried;
        Ok(())
    }

    async fn push(&mut self, s: Series, note: Option<Annotations>) -> Result<(), WindowError> {
        self.produced += s.samples.len() as u64;
        self.batch.push(s);
        self.notes.push(note);
        if self.batch.len() >= self.batch_limit {
            self.flush().await.map_err(WindowError::Sink)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let notes = std::mem::take(&mut self.notes);
        let series = batch.len() as u64;
        let samples: u64 = batch.iter().map(|s| s.samples.len() as u64).sum();
        let mut export = ExportBatch::new(self.spec.origin(), batch);
        if notes.iter().any(Option::is_some) {
            export.annotations = notes;
        }
        self.sink.export(export).await?;
        self.series += series;
        self.samples += samples;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{InstantAnswer, SeriesStream};
    use crate::model::selector::parse_label_set;
    use crate::run::datasource::QueryError;
    use crate::run::results::MemorySink;
    use crate::run::rules::{load_str, RuleType};
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;

    /// Answers range queries from fixed data: `series[i]` has a value at
    /// every timestamp where `f(i, ts)` says so.
    struct RangeData {
        labels: Vec<Labels>,
        value: fn(usize, i64) -> Option<f64>,
        requests: Mutex<Vec<(i64, i64)>>,
    }

    impl Datasource for RangeData {
        fn supports(&self, _: RuleType) -> Result<(), String> {
            Ok(())
        }
        fn instant<'a>(
            &'a self,
            _: &'a RuleQuery,
            _: i64,
        ) -> BoxFuture<'a, Result<InstantAnswer, QueryError>> {
            Box::pin(async { Err(QueryError::new("instant not used", false)) })
        }
        fn range<'a>(
            &'a self,
            q: &'a RuleQuery,
            s: i64,
            e: i64,
        ) -> BoxFuture<'a, Result<SeriesStream, QueryError>> {
            self.requests.lock().unwrap().push((s, e));
            let out: Vec<Series> = self
                .labels
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let mut samples = Vec::new();
                    let mut t = s;
                    while t <= e {
                        if let Some(v) = (self.value)(i, t) {
                            samples.push(Sample::new(t, v));
                        }
                        t += q.interval_ms;
                    }
                    (!samples.is_empty()).then(|| Series::new(l.clone(), samples))
                })
                .collect();
            Box::pin(async move { Ok(crate::client::SeriesStream::from_series(out)) })
        }
    }

    fn groups(yaml: &str) -> Vec<Group> {
        load_str("r.yml", yaml, &Default::default()).unwrap()
    }

    #[test]
    fn windows_do_not_overlap_and_stay_on_the_grid() {
        let g =
            &groups("groups:\n- name: g\n  interval: 1m\n  rules:\n  - record: r\n    expr: up\n")
                [0];
        let s = Schedule::for_group(g, Duration::from_secs(60), Duration::ZERO, 0);
        // 10:00:30 .. 10:10:00 with 4 points per request: 10:01..10:04, 10:05..10:08, 10:09..10:10.
        let w: Vec<_> = replay_windows(&s, 36_030_000, 36_600_000, 4).collect();
        assert_eq!(
            w,
            [
                (36_060_000, 36_240_000),
                (36_300_000, 36_480_000),
                (36_540_000, 36_600_000)
            ]
        );
    }

    #[tokio::test]
    async fn recording_rule_replays_breaches_with_their_timestamps() {
        let g = groups(
            "groups:\n- name: g\n  interval: 1m\n  labels: {team: db}\n  rules:\n  - record: high\n    expr: m > 10\n",
        );
        let ds = RangeData {
            labels: vec![
                parse_label_set(r#"m{i="a"}"#).unwrap(),
                parse_label_set(r#"m{i="b"}"#).unwrap(),
            ],
            // a breaches at minutes 2..=5, b at every even minute.
            value: |i, t| {
                let m = t / 60_000;
                match i {
                    0 => (2..=5).contains(&m).then_some(20.0),
                    _ => (m % 2 == 0).then_some(m as f64),
                }
            },
            requests: Mutex::new(Vec::new()),
        };
        let sink = MemorySink::new();
        let opts = ReplayOptions {
            max_datapoints_per_query: 3,
            ..ReplayOptions::default()
        };
        let report = replay(&g, &ds, &*sink, 0, 9 * 60_000, &opts, &NoProgress)
            .await
            .unwrap();
        assert_eq!(report.requests, 4);
        assert!(report.errors.is_empty());
        let mut points: Vec<String> = sink
            .series()
            .iter()
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(move |p| format!("{} {} @{}", s.labels, p.value, p.timestamp_ms / 60_000))
            })
            .collect();
        points.sort();
        let mut expected: Vec<String> = (2..=5)
            .map(|m| format!(r#"high{{i="a", team="db"}} 20 @{m}"#))
            .chain(
                (0..=9)
                    .filter(|m| m % 2 == 0)
                    .map(|m| format!(r#"high{{i="b", team="db"}} {m} @{m}"#)),
            )
            .collect();
        expected.sort();
        assert_eq!(points, expected);
        assert_eq!(report.samples, 9);
        assert_eq!(
            *ds.requests.lock().unwrap(),
            [
                (0, 120_000),
                (180_000, 300_000),
                (360_000, 480_000),
                (540_000, 540_000)
            ]
        );
    }

    #[tokio::test]
    async fn alerting_rule_replays_firing_points_across_requests() {
        let g = groups(
            "groups:\n- name: g\n  interval: 1m\n  rules:\n  - alert: High\n    expr: m > 10\n    for: 2m\n",
        );
        let ds = RangeData {
            labels: vec![parse_label_set(r#"m{i="a"}"#).unwrap()],
            // Breaching at minutes 1..=6 and 8..=9 (gap at 7).
            value: |_, t| {
                let m = t / 60_000;
                ((1..=6).contains(&m) || (8..=9).contains(&m)).then_some(20.0)
            },
            requests: Mutex::new(Vec::new()),
        };
        let sink = MemorySink::new();
        let opts = ReplayOptions {
            max_datapoints_per_query: 2,
            ..ReplayOptions::default()
        };
        replay(&g, &ds, &*sink, 0, 10 * 60_000, &opts, &NoProgress)
            .await
            .unwrap();
        let mut firing: Vec<(i64, f64)> = sink
            .series()
            .iter()
            .filter(|s| s.labels.metric_name() == ALERTS_FOR_STATE_METRIC)
            .flat_map(|s| s.samples.iter().map(|p| (p.timestamp_ms / 60_000, p.value)))
            .collect();
        firing.sort_by(|a, b| a.partial_cmp(b).unwrap());
        // Active at 1m, firing from 3m (for 2m) to 6m; after the gap active
        // again at 8m, not firing by 9m.
        assert_eq!(firing, [(3, 60.0), (4, 60.0), (5, 60.0), (6, 60.0)]);
        let alerts = sink
            .series()
            .into_iter()
            .find(|s| s.labels.metric_name() == ALERTS_METRIC)
            .unwrap();
        assert_eq!(
            alerts.labels.to_string(),
            r#"ALERTS{alertgroup="g", alertname="High", alertstate="firing", i="a"}"#
        );
    }

    #[tokio::test]
    async fn a_failing_rule_is_reported_and_the_next_replayed() {
        let g = groups(
            "groups:\n- name: g\n  interval: 1m\n  rules:\n  - record: dup\n    expr: m\n    labels: {i: ''}\n  - record: ok\n    expr: m\n",
        );
        let ds = RangeData {
            labels: vec![
                parse_label_set(r#"m{i="a"}"#).unwrap(),
                parse_label_set(r#"m{i="b"}"#).unwrap(),
            ],
            value: |_, _| Some(1.0),
            requests: Mutex::new(Vec::new()),
        };
        let sink = MemorySink::new();
        let r = replay(
            &g,
            &ds,
            &*sink,
            0,
            60_000,
            &ReplayOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].contains("rule \"dup\""), "{:?}", r.errors);
        assert!(sink.series().iter().all(|s| s.labels.metric_name() == "ok"));
        assert_eq!(r.series, 2);
    }
}
