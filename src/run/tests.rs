//! Engine tests on tokio's paused clock with a datasource that is a
//! function: scheduling, catch-up, concurrency, sink refusals, reload.

use super::datasource::{Datasource, QueryError, RuleQuery};
use super::engine::{Engine, EngineHandle};
use super::options::EngineOptions;
use super::results::{MemorySink, ResultSink};
use super::rules::{load_str, Group, RuleType};
use super::schedule::TokioClock;
use crate::client::{InstantAnswer, SeriesStream};
use crate::model::{ExportBatch, Labels, Sample, Series};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 2023-11-14T22:13:23Z: 3s past a 10s boundary.
const T0: i64 = 1_700_000_003_000;
const BASE: i64 = 1_700_000_000_000;

type Answer = dyn Fn(&str, i64) -> Result<Vec<Series>, QueryError> + Send + Sync;

struct FnDatasource {
    answer: Box<Answer>,
    /// How long each query takes, by timestamp.
    delay: Box<dyn Fn(i64) -> Duration + Send + Sync>,
    down: AtomicBool,
    calls: Mutex<Vec<(String, i64)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// What `answer_lag` says (`None`: it cannot tell).
    lag: Mutex<Option<i64>>,
}

impl FnDatasource {
    fn new(
        answer: impl Fn(&str, i64) -> Result<Vec<Series>, QueryError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(FnDatasource {
            answer: Box::new(answer),
            delay: Box::new(|_| Duration::ZERO),
            down: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            lag: Mutex::new(None),
        })
    }

    fn with_delay(
        answer: impl Fn(&str, i64) -> Result<Vec<Series>, QueryError> + Send + Sync + 'static,
        delay: impl Fn(i64) -> Duration + Send + Sync + 'static,
    ) -> Arc<Self> {
        let mut ds = Arc::into_inner(Self::new(answer)).unwrap();
        ds.delay = Box::new(delay);
        Arc::new(ds)
    }
}

impl Datasource for FnDatasource {
    fn supports(&self, t: RuleType) -> Result<(), String> {
        match t {
            RuleType::Graphite => Err("type `graphite` is not supported by spillway".into()),
            _ => Ok(()),
        }
    }

    fn instant<'a>(
        &'a self,
        q: &'a RuleQuery,
        ts: i64,
    ) -> BoxFuture<'a, Result<InstantAnswer, QueryError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push((q.expr.clone(), ts));
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep((self.delay)(ts)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(QueryError::new(
                    "cannot connect to http://src: connection refused",
                    true,
                ));
            }
            (self.answer)(&q.expr, ts).map(|series| InstantAnswer {
                series,
                series_fetched: None,
            })
        })
    }

    fn range<'a>(
        &'a self,
        _: &'a RuleQuery,
        _: i64,
        _: i64,
    ) -> BoxFuture<'a, Result<SeriesStream, QueryError>> {
        Box::pin(async { Err(QueryError::new("not used", false)) })
    }

    fn answer_lag<'a>(&'a self, probe: &'a RuleQuery, _: i64) -> BoxFuture<'a, Option<i64>> {
        assert_eq!(probe.expr, "time()");
        let lag = *self.lag.lock().unwrap();
        Box::pin(async move { lag })
    }
}

fn one(labels: &str, ts: i64, v: f64) -> Series {
    Series::new(
        crate::model::selector::parse_label_set(labels).unwrap(),
        vec![Sample::new(ts, v)],
    )
}

fn groups(yaml: &str) -> Vec<Group> {
    load_str("rules.yml", yaml, &Default::default()).unwrap()
}

fn start(groups: Vec<Group>, ds: Arc<dyn Datasource>, sink: Arc<dyn ResultSink>) -> EngineHandle {
    Engine::start(
        groups,
        ds,
        sink,
        Arc::new(TokioClock::starting_at(T0)),
        EngineOptions::default(),
    )
    .unwrap()
}

/// (metric name, timestamp offset from BASE in s, value or "stale") of every sample.
fn exported(sink: &MemorySink) -> Vec<(String, i64, String)> {
    sink.series()
        .iter()
        .flat_map(|s| {
            s.samples.iter().map(move |p| {
                (
                    s.labels.to_string(),
                    (p.timestamp_ms - BASE) / 1000,
                    if p.is_stale() {
                        "stale".to_string()
                    } else {
                        p.value.to_string()
                    },
                )
            })
        })
        .collect()
}

const TEN_SECONDS: &str =
    "groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: r\n    expr: m\n";

#[tokio::test(start_paused = true)]
async fn evaluates_at_aligned_timestamps() {
    let ds =
        FnDatasource::new(|_, ts| Ok(vec![one(r#"m{a="1"}"#, ts, ((ts - BASE) / 1000) as f64)]));
    let sink = MemorySink::new();
    let engine = start(groups(TEN_SECONDS), ds.clone(), sink.clone());
    tokio::time::sleep(Duration::from_secs(35)).await;
    engine.shutdown().await;
    // Started at +3s: evaluates +0 at once, then +10 at +10s, +20, +30.
    let want: Vec<(String, i64, String)> = [0, 10, 20, 30]
        .iter()
        .map(|t| (r#"r{a="1"}"#.to_string(), *t, t.to_string()))
        .collect();
    assert_eq!(exported(&sink), want);
}

/// Runs the rule file `yaml` for `seconds` against a source where `m` is
/// always 1, and returns what reached the sink.
async fn run_on_constant_source(yaml: &str, seconds: u64) -> Arc<MemorySink> {
    let ds = FnDatasource::new(|_, ts| Ok(vec![one("m", ts, 1.0)]));
    let sink = MemorySink::new();
    let engine = start(groups(yaml), ds, sink.clone());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    engine.shutdown().await;
    sink
}

#[tokio::test(start_paused = true)]
async fn exports_carry_their_rule_and_group() {
    let sink = run_on_constant_source("groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: r\n    expr: m\n  - alert: A\n    expr: m\n", 5).await;
    let mut origins: Vec<(String, String, &str)> = sink
        .exports()
        .iter()
        .map(|b| {
            (
                b.origin.group.to_string(),
                b.origin.rule.to_string(),
                b.origin.kind.as_str(),
            )
        })
        .collect();
    origins.sort();
    origins.dedup();
    assert_eq!(
        origins,
        [
            ("g".to_string(), "A".to_string(), "alert"),
            ("g".to_string(), "r".to_string(), "recording")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn each_iteration_ends_with_round_done_after_its_results() {
    let sink = run_on_constant_source("groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: r\n    expr: m\n  - record: q\n    expr: m\n", 35).await;
    // Four iterations of two rules: the destinations hear "done" once
    // both results of an iteration are in, not before.
    assert_eq!(sink.rounds(), [2, 4, 6, 8]);
}

#[tokio::test(start_paused = true)]
async fn eval_delay_shifts_the_timestamps_back() {
    let sink = run_on_constant_source("groups:\n- name: g\n  interval: 10s\n  eval_delay: 15s\n  rules:\n  - record: r\n    expr: m\n", 30).await;
    // At +3s the query time is truncate(+3 - 15) = -20; +30 -> +10.
    let ts: Vec<i64> = exported(&sink).iter().map(|e| e.1).collect();
    assert_eq!(ts, [-20, -10, 0, 10]);
}

#[tokio::test(start_paused = true)]
async fn outage_is_caught_up_in_order() {
    let ds = FnDatasource::new(|_, ts| Ok(vec![one("m", ts, ((ts - BASE) / 1000) as f64)]));
    let sink = MemorySink::new();
    let engine = start(groups(TEN_SECONDS), ds.clone(), sink.clone());
    tokio::time::sleep(Duration::from_secs(15)).await; // +0, +10 done
    ds.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await; // +20, +30, +40 fail
    let snap = engine.snapshot();
    let status = &snap.groups[0].rules[0].status;
    assert!(!status.healthy());
    assert!(status
        .last()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .contains("connection refused"));
    ds.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await; // +50 due at +53s: catch-up
    engine.shutdown().await;
    let ts: Vec<i64> = exported(&sink).iter().map(|e| e.1).collect();
    assert_eq!(ts, [0, 10, 20, 30, 40, 50]);
    let values: Vec<String> = exported(&sink).into_iter().map(|e| e.2).collect();
    assert_eq!(values, ["0", "10", "20", "30", "40", "50"]);
    let snap = engine.snapshot();
    assert!(snap.groups.is_empty(), "shutdown unpublishes the groups");
}

#[tokio::test(start_paused = true)]
async fn catch_up_is_bounded_by_max_catch_up() {
    let ds = FnDatasource::new(|_, ts| Ok(vec![one("m", ts, 1.0)]));
    let sink = MemorySink::new();
    let opts = EngineOptions {
        max_catch_up: Duration::from_secs(20),
        ..EngineOptions::default()
    };
    let engine = Engine::start(
        groups(TEN_SECONDS),
        ds.clone(),
        sink.clone(),
        Arc::new(TokioClock::starting_at(T0)),
        opts,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // +0
    ds.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(50)).await; // +10..+50 fail
    ds.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await; // +60 due: +40, +50, +60 only
    engine.shutdown().await;
    let ts: Vec<i64> = exported(&sink).iter().map(|e| e.1).collect();
    assert_eq!(ts, [0, 40, 50, 60]);
}

#[tokio::test(start_paused = true)]
async fn late_iterations_are_caught_up() {
    // The query at +10 takes 25s: +20 is never started on time.
    let ds = FnDatasource::with_delay(
        |_, ts| Ok(vec![one("m", ts, 1.0)]),
        |ts| {
            if ts == BASE + 10_000 {
                Duration::from_secs(25)
            } else {
                Duration::ZERO
            }
        },
    );
    let sink = MemorySink::new();
    let engine = start(groups(TEN_SECONDS), ds.clone(), sink.clone());
    tokio::time::sleep(Duration::from_secs(45)).await;
    engine.shutdown().await;
    let ts: Vec<i64> = exported(&sink).iter().map(|e| e.1).collect();
    assert_eq!(ts, [0, 10, 20, 30, 40]);
}

/// What [`lag_recorder`] records: (timestamp from BASE, ms after it).
type Lags = Arc<Mutex<Vec<(i64, i64)>>>;

/// A datasource that records, for each query, its timestamp (from BASE) and
/// how long after that timestamp it was asked (ms), by `clock`.
fn lag_recorder(clock: TokioClock) -> (Arc<FnDatasource>, Lags) {
    use super::schedule::Clock;
    let lags = Lags::default();
    let seen = Arc::clone(&lags);
    let ds = FnDatasource::new(move |_, ts| {
        seen.lock().unwrap().push((ts - BASE, clock.now_ms() - ts));
        Ok(vec![one("m", ts, 1.0)])
    });
    (ds, lags)
}

/// Issue 11, item 5: a process frozen (SIGSTOP) and resumed just after a
/// timestamp became due evaluated that timestamp at once, inside the wake
/// margin, so VictoriaMetrics answered as of a second earlier. Every
/// evaluation, caught up or not, must come at least the margin after its
/// timestamp.
#[tokio::test(start_paused = true)]
async fn a_resumed_process_waits_the_wake_margin_for_the_newest_timestamp() {
    let clock = TokioClock::starting_at(T0);
    let (ds, lags) = lag_recorder(clock);
    let sink = MemorySink::new();
    let opts = EngineOptions::default();
    let margin = opts.wake_margin.as_millis() as i64;
    let engine = Engine::start(
        groups(TEN_SECONDS),
        ds.clone(),
        sink.clone(),
        Arc::new(clock),
        opts,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await; // +28s: +0, +10, +20 done
                                                       // Frozen for 22.5s: the monotonic clock and the wall clock jump
                                                       // together, and the process resumes at +50.5s, 0.5s after +50 is due.
    tokio::time::advance(Duration::from_millis(22_500)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    engine.shutdown().await;
    let lags = lags.lock().unwrap().clone();
    let stamps: Vec<i64> = lags.iter().map(|(ts, _)| ts / 1000).collect();
    assert_eq!(stamps, [0, 10, 20, 30, 40, 50]);
    for (ts, lag) in &lags {
        assert!(
            *lag >= margin,
            "+{}s evaluated {lag}ms after its time, inside the {margin}ms wake margin: {lags:?}",
            ts / 1000
        );
    }
    let exported: Vec<i64> = exported(&sink).iter().map(|e| e.1).collect();
    assert_eq!(exported, [0, 10, 20, 30, 40, 50]);
}

/// The wake margin follows the datasource's measured lag beyond the
/// group's delay (`run::margin`), and is measured again every 5 minutes.
#[tokio::test(start_paused = true)]
async fn the_wake_margin_follows_the_measured_lag() {
    use super::margin::{ALLOWANCE_MS, PROBE_EVERY_MS};
    let clock = TokioClock::starting_at(T0);
    let (ds, lags) = lag_recorder(clock);
    // A source that evaluates at the time asked for (Prometheus).
    *ds.lag.lock().unwrap() = Some(0);
    let engine = Engine::start(
        groups(TEN_SECONDS),
        ds.clone(),
        MemorySink::new(),
        Arc::new(clock),
        EngineOptions::default(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    // Now it lags 1s (VictoriaMetrics 1.79 with latencyOffset 0): taken at
    // the next measurement.
    *ds.lag.lock().unwrap() = Some(1000);
    tokio::time::sleep(Duration::from_millis(PROBE_EVERY_MS as u64 + 20_000)).await;
    engine.shutdown().await;
    let lags = lags.lock().unwrap().clone();
    // The first one (+0s) was due before the start (at +3s).
    let first: Vec<i64> = lags.iter().skip(1).take(3).map(|l| l.1).collect();
    assert_eq!(first, [ALLOWANCE_MS; 3], "{lags:?}");
    let last: Vec<i64> = lags.iter().rev().take(3).map(|l| l.1).collect();
    assert_eq!(last, [1000 + ALLOWANCE_MS; 3], "{lags:?}");
}

#[tokio::test(start_paused = true)]
async fn concurrency_bounds_parallel_rules() {
    for (concurrency, want) in [(1, 1), (2, 2), (8, 4)] {
        let ds = FnDatasource::with_delay(
            |_, ts| Ok(vec![one("m", ts, 1.0)]),
            |_| Duration::from_secs(1),
        );
        let sink = MemorySink::new();
        let yaml = format!(
            "groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  concurrency: {concurrency}\n  rules:\n{}",
            (0..4).map(|i| format!("  - record: r{i}\n    expr: m{i}\n")).collect::<String>()
        );
        let engine = start(groups(&yaml), ds.clone(), sink.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        engine.shutdown().await;
        assert_eq!(
            ds.max_in_flight.load(Ordering::SeqCst),
            want,
            "concurrency {concurrency}"
        );
        assert_eq!(sink.series().len(), 4);
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_datasource_stops_the_other_rules_of_the_iteration() {
    let ds = FnDatasource::new(|_, ts| Ok(vec![one("m", ts, 1.0)]));
    ds.down.store(true, Ordering::SeqCst);
    let sink = MemorySink::new();
    let yaml = "groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: a\n    expr: a\n  - record: b\n    expr: b\n";
    let engine = start(groups(yaml), ds.clone(), sink.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ds.calls.lock().unwrap().len(),
        1,
        "b waits for a's datasource"
    );
    ds.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    engine.shutdown().await;
    let mut got: Vec<(String, i64)> = sink
        .series()
        .iter()
        .map(|s| {
            (
                s.labels.to_string(),
                (s.samples[0].timestamp_ms - BASE) / 1000,
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("a".into(), 0),
            ("a".into(), 10),
            ("b".into(), 0),
            ("b".into(), 10)
        ]
    );
}

/// Refuses the first `fail` batches.
struct FlakySink {
    fail: AtomicUsize,
    inner: Arc<MemorySink>,
}

impl ResultSink for FlakySink {
    fn export(&self, batch: ExportBatch) -> BoxFuture<'_, Result<(), String>> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Box::pin(async { Err("queue directory is not writable".to_string()) });
        }
        self.inner.export(batch)
    }
}

#[tokio::test(start_paused = true)]
async fn refused_batches_are_evaluated_again() {
    let ds = FnDatasource::new(|_, ts| Ok(vec![one("m", ts, 1.0)]));
    let mem = MemorySink::new();
    let sink = Arc::new(FlakySink {
        fail: AtomicUsize::new(2),
        inner: mem.clone(),
    });
    let engine = start(groups(TEN_SECONDS), ds.clone(), sink);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let snap = engine.snapshot();
    let err = snap.groups[0].rules[0]
        .status
        .last()
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(err.contains("queue directory is not writable"), "{err}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    engine.shutdown().await;
    let ts: Vec<i64> = exported(&mem).iter().map(|e| e.1).collect();
    assert_eq!(
        ts,
        [0, 10, 20, 30],
        "each timestamp exported once, in order"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_markers_through_the_engine() {
    // Series b breaches at +0 and +10 only.
    let ds = FnDatasource::new(|_, ts| {
        let mut out = vec![one(r#"m{i="a"}"#, ts, 1.0)];
        if ts - BASE <= 10_000 {
            out.push(one(r#"m{i="b"}"#, ts, 2.0));
        }
        Ok(out)
    });
    let sink = MemorySink::new();
    let engine = start(groups(TEN_SECONDS), ds, sink.clone());
    tokio::time::sleep(Duration::from_secs(35)).await;
    engine.shutdown().await;
    let b: Vec<(i64, String)> = exported(&sink)
        .into_iter()
        .filter(|e| e.0.contains('b'))
        .map(|e| (e.1, e.2))
        .collect();
    assert_eq!(b, [(0, "2".into()), (10, "2".into()), (20, "stale".into())]);
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_unchanged_groups_and_carries_rule_state() {
    let ds = FnDatasource::new(|expr, ts| {
        // `gone` breaches until +10 only, to see a stale marker after the restart.
        if expr == "gone" && ts - BASE > 10_000 {
            return Ok(vec![]);
        }
        Ok(vec![one(expr, ts, 1.0)])
    });
    let sink = MemorySink::new();
    let v1 = "groups:
- name: keep
  interval: 10s
  eval_delay: 0s
  rules: [{record: k, expr: k}]
- name: change
  interval: 10s
  eval_delay: 0s
  rules: [{record: c, expr: gone}]
- name: drop
  interval: 10s
  eval_delay: 0s
  rules: [{record: d, expr: d}]
";
    let engine = start(groups(v1), ds.clone(), sink.clone());
    tokio::time::sleep(Duration::from_secs(15)).await; // +0 and +10 everywhere
    let v2 = "groups:
- name: keep
  interval: 10s
  eval_delay: 0s
  rules: [{record: k, expr: k}]
- name: change
  interval: 10s
  eval_delay: 0s
  labels: {new: label}
  rules: [{record: c, expr: gone}]
- name: added
  interval: 10s
  eval_delay: 0s
  rules: [{record: n, expr: n}]
";
    // An invalid set is refused and changes nothing.
    let bad = load_str(
        "rules.yml",
        "groups:\n- name: g\n  type: graphite\n  rules: [{record: x, expr: x}]\n",
        &Default::default(),
    )
    .unwrap();
    let err = engine.reload(bad).await.unwrap_err().to_string();
    assert!(err.contains("graphite"), "{err}");
    assert_eq!(engine.snapshot().groups.len(), 3);

    let summary = engine.reload(groups(v2)).await.unwrap();
    assert_eq!(summary.kept, ["rules.yml: keep"]);
    assert_eq!(summary.restarted, ["rules.yml: change"]);
    assert_eq!(summary.started, ["rules.yml: added"]);
    assert_eq!(summary.stopped, ["rules.yml: drop"]);
    let names: Vec<String> = engine
        .snapshot()
        .groups
        .iter()
        .map(|g| g.group.name.clone())
        .collect();
    assert_eq!(names, ["keep", "change", "added"]);
    tokio::time::sleep(Duration::from_secs(10)).await; // +20
    engine.shutdown().await;

    let got = exported(&sink);
    let of = |name: &str| -> Vec<(i64, String)> {
        got.iter()
            .filter(|e| e.0.starts_with(name))
            .map(|e| (e.1, e.2.clone()))
            .collect()
    };
    // The kept group went on as if nothing happened.
    assert_eq!(
        of("k"),
        [(0, "1".into()), (10, "1".into()), (20, "1".into())]
    );
    // The restarted group's rule (same id: labels of the group are not part
    // of it) remembered what it exported: the end gets a stale marker, and
    // no evaluation was lost or repeated.
    assert_eq!(
        of("c"),
        [(0, "1".into()), (10, "1".into()), (20, "stale".into())]
    );
    assert_eq!(of("d"), [(0, "1".into()), (10, "1".into())]);
    // A new group starts with the newest due timestamp.
    assert_eq!(of("n"), [(10, "1".into()), (20, "1".into())]);
}

#[tokio::test(start_paused = true)]
async fn reload_with_new_options_restarts_every_group_keeping_rule_state() {
    let ds = FnDatasource::new(|expr, ts| Ok(vec![one(expr, ts, 1.0)]));
    let sink = MemorySink::new();
    let engine = start(groups(TEN_SECONDS), ds.clone(), sink.clone());
    tokio::time::sleep(Duration::from_secs(15)).await; // +0 and +10
                                                       // The same groups and options: nothing restarts.
    let same = engine
        .reload_with(groups(TEN_SECONDS), None, Some(EngineOptions::default()))
        .await
        .unwrap();
    assert_eq!(same.kept, ["rules.yml: g"]);
    // New external labels: every group restarts, the rule keeps its state.
    let opts = EngineOptions {
        external_labels: [("dc".to_string(), "x".to_string())].into(),
        ..EngineOptions::default()
    };
    let summary = engine
        .reload_with(groups(TEN_SECONDS), None, Some(opts))
        .await
        .unwrap();
    assert_eq!(summary.restarted, ["rules.yml: g"]);
    tokio::time::sleep(Duration::from_secs(10)).await; // +20
    engine.shutdown().await;
    assert_eq!(
        exported(&sink),
        [
            ("r".to_string(), 0, "1".to_string()),
            ("r".to_string(), 10, "1".to_string()),
            ("r".to_string(), 20, "stale".to_string()),
            (r#"r{dc="x"}"#.to_string(), 20, "1".to_string()),
        ]
    );
}

#[test]
fn graphite_and_bad_offsets_are_refused_at_start() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let ds = FnDatasource::new(|_, _| Ok(vec![]));
        let g = load_str(
            "rules.yml",
            "groups:\n- name: g\n  type: graphite\n  rules: [{record: x, expr: x}]\n",
            &Default::default(),
        )
        .unwrap();
        let err = Engine::start(
            g,
            ds,
            MemorySink::new(),
            Arc::new(TokioClock::starting_at(T0)),
            EngineOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("rules.yml:2: group \"g\": type `graphite`"),
            "{err}"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn api_json_after_evaluations() {
    let ds = FnDatasource::new(|expr, ts| match expr {
        "bad" => Err(QueryError::new(
            "rules.yml answered 422: unknown function",
            false,
        )),
        _ => Ok(vec![one(r#"m{a="1"}"#, ts, 50.0)]),
    });
    let sink = MemorySink::new();
    let yaml = "groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: r\n    expr: m\n  - record: e\n    expr: bad\n  - alert: A\n    expr: m\n    for: 10s\n";
    let engine = start(groups(yaml), ds, sink.clone());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let v = engine.rules_api_json();
    engine.shutdown().await;
    let rules = v["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules[0]["health"], "ok");
    assert_eq!(rules[0]["lastSamples"], 1);
    assert_eq!(rules[0]["updates"].as_array().unwrap().len(), 2);
    // +10 is due at 22:13:30; the group wakes 1.2s later (wake_margin).
    assert_eq!(rules[0]["lastEvaluation"], "2023-11-14T22:13:31.200Z");
    assert_eq!(rules[1]["health"], "err");
    assert_eq!(
        rules[1]["lastError"],
        "failed to execute query \"bad\": rules.yml answered 422: unknown function"
    );
    // Active at +0, firing at +10.
    assert_eq!(rules[2]["state"], "firing");
    assert_eq!(rules[2]["alerts"][0]["activeAt"], "2023-11-14T22:13:20Z");
    assert_eq!(
        v["data"]["groups"][0]["lastEvaluation"],
        "2023-11-14T22:13:31.200Z"
    );
    // The alert exported at +10 only.
    let alerts: Vec<Labels> = sink
        .series()
        .into_iter()
        .map(|s| s.labels)
        .filter(|l| l.metric_name().starts_with("ALERTS"))
        .collect();
    assert_eq!(alerts.len(), 2);
}

#[test]
fn self_metrics() {
    let recorded = crate::server::metrics::testutil::recorded(true, || async {
        // Queries at +10 take 25s, so +20 starts late.
        let ds = FnDatasource::with_delay(
            |expr, ts| match expr {
                "bad" => Err(QueryError::new("422: bad query", false)),
                _ => Ok(vec![one("m", ts, 1.0)]),
            },
            |ts| {
                if ts == BASE + 10_000 {
                    Duration::from_secs(25)
                } else {
                    Duration::ZERO
                }
            },
        );
        let yaml = "groups:\n- name: g\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: ok\n    expr: slow\n- name: h\n  interval: 10s\n  eval_delay: 0s\n  rules:\n  - record: err\n    expr: bad\n";
        let engine = start(groups(yaml), ds, MemorySink::new());
        tokio::time::sleep(Duration::from_secs(45)).await;
        engine.shutdown().await;
    });
    let counters = recorded.values;
    for key in recorded.histograms.keys() {
        assert!(
            key == "spillway_group_iteration_duration_seconds{file=rules.yml,group=g}"
                || key == "spillway_group_iteration_duration_seconds{file=rules.yml,group=h}",
            "{key}"
        );
    }
    let histograms: usize = recorded.histograms.values().sum();
    // +0 .. +40 for both rules; `err` fails each time.
    assert_eq!(
        counters["spillway_rule_evaluations_total{file=rules.yml,group=g,rule=ok}"],
        5.0
    );
    assert_eq!(
        counters["spillway_rule_evaluations_total{file=rules.yml,group=h,rule=err}"],
        5.0
    );
    assert_eq!(
        counters["spillway_rule_evaluation_errors_total{file=rules.yml,group=h,rule=err}"],
        5.0
    );
    assert!(!counters
        .contains_key("spillway_rule_evaluation_errors_total{file=rules.yml,group=g,rule=ok}"));
    assert_eq!(
        counters["spillway_rule_last_samples{file=rules.yml,group=g,rule=ok}"],
        1.0
    );
    assert_eq!(
        counters["spillway_group_iterations_missed_total{file=rules.yml,group=g}"],
        1.0
    );
    assert_eq!(
        counters["spillway_group_iterations_missed_total{file=rules.yml,group=h}"],
        1.0
    );
    // Per group: +0, +10 (slow), +20 and +30 caught up together, +40.
    assert_eq!(histograms, 8);
}

#[tokio::test(start_paused = true)]
async fn reload_with_a_new_interval_starts_on_the_new_grid() {
    let ds = FnDatasource::new(|_, ts| Ok(vec![one("m", ts, 1.0)]));
    let sink = MemorySink::new();
    let engine = start(groups(TEN_SECONDS), ds, sink.clone());
    tokio::time::sleep(Duration::from_secs(15)).await; // +0, +10
    let v2 = TEN_SECONDS.replace("interval: 10s", "interval: 15s");
    let summary = engine.reload(groups(&v2)).await.unwrap();
    assert_eq!(summary.restarted, ["rules.yml: g"]);
    tokio::time::sleep(Duration::from_secs(25)).await; // now +43
    engine.shutdown().await;
    let ts: Vec<i64> = exported(&sink).iter().map(|e| e.1).collect();
    // The 15s grid here is +10, +25, +40. +10 was done on the old grid and
    // the old cursor was +20, so the new one continues at +25: nothing is
    // evaluated twice, nothing after +20 is skipped.
    assert_eq!(ts, [0, 10, 25, 40]);
}

/// The handle lives in the HTTP server's state and `reload` runs in a
/// handler: both must cross threads.
#[test]
fn handle_and_its_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let ds = FnDatasource::new(|_, _| Ok(vec![]));
        let engine = start(groups(TEN_SECONDS), ds, MemorySink::new());
        send_sync(&engine);
        let reload = engine.reload(groups(TEN_SECONDS));
        send(&reload);
        reload.await.unwrap();
        let shutdown = engine.shutdown();
        send(&shutdown);
        shutdown.await;
    });
}

#[tokio::test(start_paused = true)]
async fn preview_evaluates_once_without_state() {
    let ds = FnDatasource::new(|expr, ts| match expr {
        "bad" => Err(QueryError::new("422: bad query", false)),
        _ => Ok(vec![one(r#"m{a="1"}"#, ts, 7.0)]),
    });
    let yaml = "groups:\n- name: g\n  interval: 10s\n  rules:\n  - record: r\n    expr: m\n  - record: e\n    expr: bad\n  - alert: A\n    expr: m\n";
    let opts = EngineOptions::default();
    let out = super::preview(&groups(yaml), &*ds, &opts, T0)
        .await
        .unwrap();
    // Default eval_delay 30s: truncate(+3s - 30s, 10s) = -30s.
    assert!(out.iter().all(|r| r.at_ms == BASE - 30_000));
    assert_eq!(out[0].series[0].labels.to_string(), r#"r{a="1"}"#);
    assert_eq!(out[0].series[0].samples, [Sample::new(BASE - 30_000, 7.0)]);
    assert!(out[1].error.as_ref().unwrap().contains("422: bad query"));
    assert_eq!(
        out[2].series.len(),
        2,
        "ALERTS and ALERTS_FOR_STATE of a for: 0 alert"
    );
}
