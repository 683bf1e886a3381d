//! The evaluation engine against real servers: a source VictoriaMetrics
//! with fixtures, vmalert itself for the differential test, and (the one
//! fake) a VictoriaLogs stand-in that answers with recorded responses.

mod common;

use common::{vm_line, Server, Vm};
use futures_util::future::BoxFuture;
use spillway::client::{Client, ClientConfig, RetryPolicy};
use spillway::codec::remote_write::{RemoteWriteEncoder, HEADERS};
use spillway::model::{ExportBatch, Labels, Series};
use spillway::run::replay::NoProgress;
use spillway::run::rules::{load_str, Group, LoadOptions};
use spillway::run::schedule::go_truncate;
use spillway::run::{
    replay, ClientDatasource, Clock, Datasource, Engine, EngineOptions, MemorySink, ReplayOptions,
    ResultSink, RuleQuery, SystemClock, TokioClock, VlogsWindow,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn client(url: &str) -> Client {
    Client::new(ClientConfig {
        url: url.to_string(),
        timeout: Some(Duration::from_secs(5)),
        retry: RetryPolicy::never(),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn groups(file: &str, yaml: &str) -> Vec<Group> {
    load_str(file, yaml, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn no_delay() -> EngineOptions {
    EngineOptions {
        default_eval_delay: Duration::ZERO,
        ..EngineOptions::default()
    }
}

/// A whole hour, 3 hours ago: fixtures live in the past, away from "now".
fn past_hour() -> i64 {
    let now = SystemClock.now_ms();
    now - now.rem_euclid(3_600_000) - 3 * 3_600_000
}

/// `temp{sensor="sI"}` at second `t`: a 16s saw between 50 and 65.
fn temp(i: i64, t_ms: i64) -> f64 {
    50.0 + ((t_ms / 1000 + 5 * i).rem_euclid(16)) as f64
}

/// Import lines for `temp` of sensors 0..n, one sample per second over [from, to].
fn temp_lines(n: i64, from: i64, to: i64, extra: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for i in 0..n {
        let sensor = format!("s{i}");
        let mut labels = vec![("__name__", "temp"), ("sensor", sensor.as_str())];
        labels.extend_from_slice(extra);
        let samples: Vec<(i64, f64)> = (from / 1000..=to / 1000)
            .map(|s| (s * 1000, temp(i, s * 1000)))
            .collect();
        out.push_str(&vm_line(&labels, &samples));
        out.push('\n');
    }
    out
}

/// (labels, timestamp, value or "stale") of every sample a sink received, sorted.
fn points(series: &[Series]) -> Vec<(String, i64, String)> {
    let mut out: Vec<(String, i64, String)> = series
        .iter()
        .flat_map(|s| {
            s.samples.iter().map(move |p| {
                let v = if p.is_stale() {
                    "stale".to_string()
                } else {
                    p.value.to_string()
                };
                (s.labels.to_string(), p.timestamp_ms, v)
            })
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_evaluation_exports_breaches_at_aligned_timestamps() {
    let vm = Vm::start();
    let t0 = past_hour();
    vm.import(&temp_lines(3, t0 - 600_000, t0 + 120_000, &[]));
    let rules = groups(
        "live.yml",
        r#"groups:
- name: live
  interval: 2s
  labels: {env: test}
  rules:
  - record: hot
    expr: temp > 55
    labels: {severity: high}
  - alert: Hot
    expr: temp > 60
    for: 4s
    labels: {summary: "{{ $labels.sensor }} is hot"}
- name: filtered
  interval: 2s
  params: {extra_label: ["sensor=s1"]}
  rules:
  - record: only_s1
    expr: temp
- name: limited
  interval: 2s
  limit: 2
  rules:
  - record: too_many
    expr: temp
"#,
    );
    let sink = MemorySink::new();
    // Time is an input: a clock set 3h back, running at real pace.
    let clock = Arc::new(TokioClock::starting_at(t0 + 500));
    let ds = Arc::new(ClientDatasource::new(Some(client(&vm.url())), None));
    let engine = Engine::start(rules, ds, sink.clone(), clock, no_delay()).unwrap();
    // Once +12s started, every rule finished +10s.
    let done = sink
        .wait_until(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.samples[0].timestamp_ms >= t0 + 12_000)
        })
        .await;
    let api = engine.rules_api_json();
    engine.shutdown().await;
    assert!(
        done,
        "no evaluation reached +12s: {:?}",
        points(&sink.series())
    );

    // Group `params` reach VictoriaMetrics (extra_label filters to s1);
    // `limit` discards a result that is too long, with vmalert's message.
    let last = t0 + 10_000;
    let all: Vec<_> = points(&sink.series())
        .into_iter()
        .filter(|p| p.1 <= last)
        .collect();
    let only_s1: Vec<_> = all
        .iter()
        .filter(|p| p.0.starts_with("only_s1"))
        .cloned()
        .collect();
    let want_s1: Vec<_> = (0..=5)
        .map(|k| t0 + 2000 * k)
        .map(|t| {
            (
                r#"only_s1{sensor="s1"}"#.to_string(),
                t,
                temp(1, t).to_string(),
            )
        })
        .collect();
    assert_eq!(only_s1, want_s1);
    assert!(all.iter().all(|p| !p.0.starts_with("too_many")));
    let limited = &api["data"]["groups"][2]["rules"][0];
    assert_eq!(limited["health"], "err");
    assert_eq!(
        limited["lastError"],
        "exec exceeded limit of 2 with 3 series"
    );
    assert_eq!(limited["lastSamples"], 3);

    // Evaluated timestamps: t0, t0+2s, ... without gaps or repeats.
    let got: Vec<_> = all
        .into_iter()
        .filter(|p| p.0.starts_with("hot") || p.0.starts_with("ALERTS"))
        .collect();
    let stamps: BTreeSet<i64> = got.iter().map(|p| p.1).collect();
    let want_stamps: Vec<i64> = (0..)
        .map(|k| t0 + 2000 * k)
        .take_while(|t| *t <= last)
        .collect();
    assert_eq!(stamps.iter().copied().collect::<Vec<_>>(), want_stamps);

    // What the rules should export, computed from the fixture alone.
    let alert = |sensor: &str, name: &str, firing: bool| -> String {
        let summary = format!("{sensor} is hot");
        let mut l = Labels::from_pairs([
            ("__name__", name),
            ("alertgroup", "live"),
            ("alertname", "Hot"),
            ("env", "test"),
            ("sensor", sensor),
            ("summary", summary.as_str()),
        ]);
        if firing {
            l.set("alertstate", "firing");
        }
        l.to_string()
    };
    let mut want = Vec::new();
    for i in 0..3 {
        let sensor = format!("s{i}");
        let hot = format!(r#"hot{{env="test", sensor="{sensor}", severity="high"}}"#);
        let mut since: Option<i64> = None;
        let mut was_firing = false;
        for (k, ts) in want_stamps.iter().enumerate() {
            let v = temp(i, *ts);
            if v > 55.0 {
                want.push((hot.clone(), *ts, v.to_string()));
            } else if k > 0 && temp(i, ts - 2000) > 55.0 {
                want.push((hot.clone(), *ts, "stale".into()));
            }
            if v > 60.0 {
                let active = *since.get_or_insert(*ts);
                was_firing = ts - active >= 4000;
                if was_firing {
                    want.push((alert(&sensor, "ALERTS", true), *ts, "1".into()));
                    want.push((
                        alert(&sensor, "ALERTS_FOR_STATE", false),
                        *ts,
                        (active / 1000).to_string(),
                    ));
                }
            } else {
                if was_firing {
                    want.push((alert(&sensor, "ALERTS", true), *ts, "stale".into()));
                    want.push((
                        alert(&sensor, "ALERTS_FOR_STATE", false),
                        *ts,
                        "stale".into(),
                    ));
                }
                since = None;
                was_firing = false;
            }
        }
    }
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_over_six_hours_exports_exactly_the_breaching_points() {
    let vm = Vm::start();
    let start = past_hour() - 7 * 3_600_000;
    let end = start + 6 * 3_600_000;
    // One sample a minute from an hour before to an hour after the range.
    let value =
        |i: i64, t: i64| -> f64 { ((t / 60_000 * (i + 1) + 7 * i).rem_euclid(37)) as f64 * 4.0 };
    let mut lines = String::new();
    for i in 0..4 {
        let host = format!("h{i}");
        let samples: Vec<(i64, f64)> = (0..=8 * 60)
            .map(|m| start - 3_600_000 + m * 60_000)
            .map(|t| (t, value(i, t)))
            .collect();
        lines.push_str(&vm_line(&[("__name__", "load"), ("host", &host)], &samples));
        lines.push('\n');
    }
    vm.import(&lines);
    let rules = groups(
        "replay.yml",
        r#"groups:
- name: backfill
  interval: 1m
  rules:
  - record: load:high
    expr: load > 100
    labels: {tier: gold}
  - alert: LoadHigh
    expr: load > 120
"#,
    );
    let sink = MemorySink::new();
    let ds = ClientDatasource::new(Some(client(&vm.url())), None);
    let opts = ReplayOptions {
        max_datapoints_per_query: 100,
        ..ReplayOptions::default()
    };
    let report = replay(&rules, &ds, &*sink, start, end, &opts, &NoProgress)
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // 361 points per rule in requests of 100: 4 each.
    assert_eq!(report.requests, 8);

    let mut want = Vec::new();
    for i in 0..4 {
        for m in 0..=360 {
            let t = start + m * 60_000;
            let v = value(i, t);
            if v > 100.0 {
                want.push((
                    format!(r#"load:high{{host="h{i}", tier="gold"}}"#),
                    t,
                    v.to_string(),
                ));
            }
            if v > 120.0 {
                let l = format!(r#"alertgroup="backfill", alertname="LoadHigh", host="h{i}""#);
                want.push((
                    format!(r#"ALERTS{{alertgroup="backfill", alertname="LoadHigh", alertstate="firing", host="h{i}"}}"#),
                    t,
                    "1".into(),
                ));
                // for: 0 fires at once; active since the first point of its run.
                let mut since = t;
                while since > start && value(i, since - 60_000) > 120.0 {
                    since -= 60_000;
                }
                want.push((
                    format!("ALERTS_FOR_STATE{{{l}}}"),
                    t,
                    (since / 1000).to_string(),
                ));
            }
        }
    }
    want.sort();
    let got = points(&sink.series());
    assert!(
        want.len() > 200,
        "the fixture should breach often: {}",
        want.len()
    );
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(report.samples as usize, want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_outage_is_caught_up_after_restart() {
    let mut vm = Vm::start();
    let t0 = past_hour();
    vm.import(&temp_lines(2, t0 - 600_000, t0 + 300_000, &[]));
    // VictoriaMetrics 1.79 keeps fresh data in memory for several seconds; a
    // snapshot writes it to disk, so the SIGKILL below makes an outage and
    // does not lose the fixture.
    common::http_get(&format!("{}/snapshot/create", vm.url()));
    let rules = groups(
        "outage.yml",
        "groups:\n- name: outage\n  interval: 2s\n  rules:\n  - record: t\n    expr: temp\n",
    );
    let sink = MemorySink::new();
    let clock = Arc::new(TokioClock::starting_at(t0 + 500));
    let ds = Arc::new(ClientDatasource::new(Some(client(&vm.url())), None));
    let engine = Engine::start(rules, ds, sink.clone(), clock.clone(), no_delay()).unwrap();
    let evaluated = sink
        .wait_until(Duration::from_secs(20), |s| !s.is_empty())
        .await;
    assert!(evaluated, "no evaluation before the outage");
    let stopped_at = clock.now_ms();
    tokio::task::block_in_place(|| vm.server.stop());
    // The outage must span several evaluation timestamps (asserted below):
    // wait until the rule has failed and three intervals have passed.
    let outage = engine_wait(Duration::from_secs(30), || {
        !engine.snapshot().groups[0].rules[0].status.healthy()
            && clock.now_ms() >= stopped_at + 7_000
    })
    .await;
    assert!(outage, "the rule did not fail within 30s of the outage");
    let snap = engine.snapshot();
    let status = &snap.groups[0].rules[0].status;
    assert!(
        !status.healthy(),
        "the rule should fail while the source is down"
    );
    let restarted_at = clock.now_ms();
    tokio::task::block_in_place(|| {
        vm.server.restart();
        vm.server.wait_ready("/health");
    });
    let target = restarted_at + 4_000;
    let done = sink
        .wait_until(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.samples[0].timestamp_ms >= target)
        })
        .await;
    let snap = engine.snapshot();
    engine.shutdown().await;
    assert!(
        done,
        "no evaluation after the restart; last updates: {:?}\nvm log: {}",
        snap.groups[0].rules[0]
            .status
            .updates
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>(),
        vm.server.log()
    );
    let got = points(&sink.series());
    let stamps: Vec<i64> = got
        .iter()
        .map(|p| p.1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let want: Vec<i64> = (0..)
        .map(|k| t0 + 2000 * k)
        .take_while(|t| t <= stamps.last().unwrap())
        .collect();
    assert_eq!(
        stamps, want,
        "every timestamp, including the outage, exactly once"
    );
    let during = stamps
        .iter()
        .filter(|t| **t > stopped_at && **t < restarted_at)
        .count();
    assert!(
        during >= 3,
        "the outage should cover several timestamps: {during}"
    );
    // Values are those of the fixture at each timestamp.
    for (labels, ts, v) in &got {
        let i = if labels.contains("s0") { 0 } else { 1 };
        assert_eq!(v, &temp(i, *ts).to_string(), "{labels} @{ts}");
    }
    assert_eq!(got.len(), 2 * stamps.len());
}

// ---------------------------------------------------------------------------
// VictoriaLogs: the only fake. It answers with the bodies recorded from a
// real VictoriaLogs v1.26 (tests/conformance/victorialogs/responses.json)
// and records every request to check what spillway sends.

#[derive(Clone, Debug)]
struct SeenRequest {
    path: String,
    params: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
}

struct FakeLogs {
    url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    _server: tokio::task::JoinHandle<()>,
}

fn recorded() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/victorialogs/responses.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn recorded_case(cases: &serde_json::Value, request_prefix: &str) -> (u16, serde_json::Value) {
    let case = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["request"].as_str().unwrap().starts_with(request_prefix))
        .unwrap_or_else(|| panic!("no recorded case {request_prefix:?}"));
    let status: u16 = case["status"]
        .as_str()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, case["body"].clone())
}

async fn fake_logs() -> FakeLogs {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    let cases = recorded();
    // The instant answer to a query with `| filter` (two series) and the
    // range answer with `| filter error_count:>25, step=5m`.
    let (_, instant) = recorded_case(&cases, "same, time=<integer unix seconds>");
    let (_, range) = recorded_case(&cases, "stats_query_range with | filter error_count:>25");
    let (status_422, no_stats) = recorded_case(&cases, "stats_query without a | stats pipe");
    let (_, syntax) = recorded_case(&cases, "syntax error");
    let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
    type St = (
        Arc<Mutex<Vec<SeenRequest>>>,
        serde_json::Value,
        serde_json::Value,
        (serde_json::Value, serde_json::Value),
        u16,
    );
    async fn handle(
        State((seen, instant, range, (no_stats, syntax), status_422)): State<St>,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        let params: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        seen.lock().unwrap().push(SeenRequest {
            path: uri.path().to_string(),
            params: params.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        });
        let query = params.get("query").cloned().unwrap_or_default();
        if !query.contains("| stats") {
            return (
                StatusCode::from_u16(status_422).unwrap(),
                axum::Json(no_stats),
            );
        }
        if query.matches('(').count() != query.matches(')').count() {
            return (
                StatusCode::from_u16(status_422).unwrap(),
                axum::Json(syntax),
            );
        }
        if uri.path().ends_with("stats_query_range") {
            // The recorded shape, moved to the requested range: the first
            // recorded bucket lands on `start`, spacing kept.
            let mut body = range;
            let start: i64 = params["start"].parse().unwrap();
            let first = body["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| {
                    r["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v[0].as_i64().unwrap())
                })
                .min()
                .unwrap();
            for r in body["data"]["result"].as_array_mut().unwrap() {
                for v in r["values"].as_array_mut().unwrap() {
                    v[0] = serde_json::json!(start + v[0].as_i64().unwrap() - first);
                }
            }
            return (StatusCode::OK, axum::Json(body));
        }
        // The recorded shape, at the requested time (as VictoriaLogs does).
        let mut body = instant;
        let time: f64 = params["time"].parse().unwrap();
        for r in body["data"]["result"].as_array_mut().unwrap() {
            r["value"][0] = serde_json::json!(time as i64);
        }
        (StatusCode::OK, axum::Json(body))
    }
    let app = axum::Router::new()
        .route("/select/logsql/stats_query", axum::routing::post(handle))
        .route(
            "/select/logsql/stats_query_range",
            axum::routing::post(handle),
        )
        .with_state((seen.clone(), instant, range, (no_stats, syntax), status_422));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    FakeLogs {
        url,
        seen,
        _server: server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlogs_rules_query_stats_api_as_vmalert_does() {
    let logs = fake_logs().await;
    let vlogs = Client::new(ClientConfig {
        url: logs.url.clone(),
        tenant: Some(spillway::client::Tenant::parse("3:4").unwrap()),
        retry: RetryPolicy::never(),
        ..ClientConfig::default()
    })
    .unwrap();
    let rules = groups(
        "logs.yml",
        r#"groups:
- name: logs
  type: vlogs
  interval: 1m
  headers: ["ProjectID: 9"]
  params: {extra: ["yes"]}
  rules:
  - record: errors:spike
    expr: 'level:error | stats by (service, container) count() as error_count | filter error_count:>50'
    labels: {export_target: incident_storage}
  - record: errors:last5m
    expr: '_time:5m level:error | stats by (service, container) count() as error_count | filter error_count:>50'
  - record: broken
    expr: '_time:5m level:error | stats by (service count('
"#,
    );
    // Without a stats pipe the rule does not even load (issue 11, item 4).
    let no_stats = load_str(
        "logs.yml",
        "groups:\n- name: logs\n  type: vlogs\n  rules:\n  - record: r\n    expr: '_time:5m level:error'\n",
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        no_stats[0]
            .to_string()
            .contains("logs.yml:6: group \"logs\", rule \"r\": field \"expr\": bad LogsQL expr: missing `| stats ...` pipe"),
        "{no_stats:?}"
    );
    let sink = MemorySink::new();
    let t0 = past_hour();
    let clock = Arc::new(TokioClock::starting_at(t0 + 1_000));
    let ds =
        Arc::new(ClientDatasource::new(None, Some(vlogs)).with_vlogs_window(VlogsWindow::Vmalert));
    let engine = Engine::start(rules.clone(), ds.clone(), sink.clone(), clock, no_delay()).unwrap();
    let done = sink
        .wait_until(Duration::from_secs(10), |s| s.len() >= 4)
        .await;
    // The failing rule finishes on its own schedule: wait for its error.
    let failed = engine_wait(Duration::from_secs(10), || {
        engine.rules_api_json()["data"]["groups"][0]["rules"][2]["health"] == "err"
    })
    .await;
    assert!(failed, "the broken rule reported no error within 10s");
    let api = engine.rules_api_json();
    engine.shutdown().await;
    assert!(done);

    // Results: `__name__` became `stats_result`, the record name is the metric.
    let got = points(&sink.series());
    let ts = t0;
    assert_eq!(
        got,
        [
            (r#"errors:last5m{container="api-1", service="api", stats_result="error_count"}"#.to_string(), ts, "70".to_string()),
            (r#"errors:last5m{container="payments-1", service="payments", stats_result="error_count"}"#.to_string(), ts, "60".to_string()),
            (r#"errors:spike{container="api-1", export_target="incident_storage", service="api", stats_result="error_count"}"#.to_string(), ts, "70".to_string()),
            (r#"errors:spike{container="payments-1", export_target="incident_storage", service="payments", stats_result="error_count"}"#.to_string(), ts, "60".to_string()),
        ]
    );
    // Requests: time, the last interval as start/end unless the query has a
    // `_time` filter, group params, the tenant as AccountID/ProjectID with
    // the group's header winning.
    let seen = logs.seen.lock().unwrap().clone();
    let by_query = |needle: &str| {
        seen.iter()
            .find(|r| r.params["query"].starts_with(needle))
            .unwrap()
            .clone()
    };
    let spike = by_query("level:error");
    assert_eq!(spike.path, "/select/logsql/stats_query");
    assert_eq!(spike.params["time"], (ts / 1000).to_string());
    assert_eq!(spike.params["start"], ((ts - 60_000) / 1000).to_string());
    assert_eq!(spike.params["end"], (ts / 1000).to_string());
    assert_eq!(spike.params["extra"], "yes");
    assert!(!spike.params.contains_key("step"));
    assert_eq!(spike.headers["accountid"], "3");
    assert_eq!(spike.headers["projectid"], "9");
    let last5m = by_query("_time:5m level:error |");
    assert!(!last5m.params.contains_key("start") && !last5m.params.contains_key("end"));
    // VictoriaLogs' 422 is the rule's error, with its message.
    let broken = &api["data"]["groups"][0]["rules"][2];
    assert_eq!(broken["health"], "err");
    let err = broken["lastError"].as_str().unwrap();
    assert!(
        err.contains("422") && err.contains("cannot parse query"),
        "{err}"
    );

    // Replay goes to stats_query_range with step = interval; the rule with
    // a `_time` filter is refused as vmalert refuses it.
    let sink = MemorySink::new();
    let report = replay(
        &rules,
        &*ds,
        &*sink,
        ts - 3_600_000,
        ts,
        &ReplayOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    let range = logs
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.path.ends_with("stats_query_range"))
        .unwrap()
        .clone();
    // Buckets [T-1m, T) for T from the first to the last grid timestamp:
    // from one step before the first, to 1ms before the last.
    assert_eq!(range.params["step"], "60s");
    assert_eq!(range.params["start"], ((ts - 3_660_000) / 1000).to_string());
    assert_eq!(range.params["end"], format!("{}.999", ts / 1000 - 1));
    assert!(!range.params.contains_key("offset"));
    assert_eq!(range.headers["accountid"], "3");
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(
        report.errors[0].contains("errors:last5m")
            && report.errors[0].contains("contains time filter")
    );
    assert!(report.errors[1].contains("broken"));
    // The recorded range answer (5m buckets) lands on the 1m grid where it has points.
    let replayed = points(&sink.series());
    assert!(!replayed.is_empty());
    assert!(
        replayed
            .iter()
            .all(|p| p.0.starts_with("errors:spike{")
                && p.0.contains(r#"stats_result="error_count""#))
    );
}

// ---------------------------------------------------------------------------
// A VictoriaLogs model: the test double above answers with fixed bodies; this
// one holds log lines and answers what VictoriaLogs v1.26 answers for them,
// as far as the rules below need (a `field:value` filter, `| stats [by (f,
// ...)] count() [as name]`, `| filter name:>N`), reproducing what was
// measured against the real server (tests/conformance/victorialogs/, issue
// 11):
// * `start` / `end` bound `_time` inclusively at the precision they are
//   written in: `end=1700000060` lets in the whole second 1700000060,
//   `end=1700000059.999` ends with that millisecond;
// * `stats_query` without `by` gives one row even over no lines (count 0);
// * `stats_query_range` cuts the data at `end` before bucketing, buckets
//   `_time` by multiples of `step` since the epoch plus `offset`, stamps each
//   bucket with its start, and has no row for a bucket without lines;
// * a query without a stats pipe or one it cannot parse is a 422, with the
//   recorded body's shape.

#[derive(Clone, Debug)]
struct LogLine {
    time_ms: i64,
    fields: BTreeMap<&'static str, &'static str>,
}

fn line(time_ms: i64, service: &'static str, level: &'static str) -> LogLine {
    LogLine {
        time_ms,
        fields: BTreeMap::from([("service", service), ("level", level)]),
    }
}

struct ParsedQuery {
    filter: Vec<(String, String)>,
    by: Vec<String>,
    name: String,
    above: Option<f64>,
}

fn parse_logsql(q: &str) -> Result<ParsedQuery, String> {
    let parts: Vec<&str> = q.split('|').map(str::trim).collect();
    if parts[0].is_empty() {
        return Err(format!(
            "cannot parse query [{q}]: missing query; context: []"
        ));
    }
    let filter = parts[0]
        .split_whitespace()
        .filter(|w| *w != "*")
        .map(|w| {
            w.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("cannot parse query [{q}]: unsupported filter {w:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(stats) = parts.get(1).and_then(|p| p.strip_prefix("stats")) else {
        return Err(format!("missing `| stats ...` pipe in the query [{q}]"));
    };
    let mut stats = stats.trim();
    let mut by = Vec::new();
    if let Some(rest) = stats.strip_prefix("by") {
        let rest = rest.trim_start();
        let (fields, after) = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .ok_or_else(|| format!("cannot parse query [{q}]: cannot parse 'stats' pipe"))?;
        by = fields.split(',').map(|f| f.trim().to_string()).collect();
        stats = after.trim();
    }
    let rest = stats
        .strip_prefix("count()")
        .ok_or_else(|| format!("cannot parse query [{q}]: only count() is modelled"))?;
    let name = match rest.trim().strip_prefix("as") {
        Some(n) => n.trim().to_string(),
        None if rest.trim().is_empty() => "count(*)".to_string(),
        None => return Err(format!("cannot parse query [{q}]: unexpected {rest:?}")),
    };
    let above = match parts.get(2) {
        None => None,
        Some(f) => {
            let n = f
                .strip_prefix("filter")
                .and_then(|f| f.trim().strip_prefix(&format!("{name}:>")))
                .ok_or_else(|| format!("cannot parse query [{q}]: unsupported pipe {f:?}"))?;
            Some(
                n.parse()
                    .map_err(|e| format!("cannot parse query [{q}]: {e}"))?,
            )
        }
    };
    Ok(ParsedQuery {
        filter,
        by,
        name,
        above,
    })
}

/// Unix seconds as VictoriaLogs reads them: `(ns, ns of the last instant
/// the written precision covers)`.
fn vl_time(s: &str) -> (i64, i64) {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let unit = 10i64.pow(9 - frac.len() as u32);
    let frac_ns = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().unwrap() * unit
    };
    let ns = whole.parse::<i64>().unwrap() * 1_000_000_000 + frac_ns;
    (ns, ns + unit - 1)
}

fn vl_duration_ms(s: &str) -> i64 {
    if let Some(ms) = s.strip_suffix("ms") {
        ms.parse().unwrap()
    } else {
        s.strip_suffix('s').unwrap().parse::<i64>().unwrap() * 1000
    }
}

fn vl_seconds(ms: i64) -> serde_json::Value {
    if ms % 1000 == 0 {
        serde_json::json!(ms / 1000)
    } else {
        serde_json::json!(ms as f64 / 1000.0)
    }
}

struct ModelLogs {
    url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn model_logs(lines: Vec<LogLine>) -> ModelLogs {
    use axum::extract::State;
    use axum::http::{StatusCode, Uri};
    type St = (Arc<Mutex<Vec<SeenRequest>>>, Arc<Vec<LogLine>>);
    async fn handle(
        State((seen, lines)): State<St>,
        uri: Uri,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        let params: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        seen.lock().unwrap().push(SeenRequest {
            path: uri.path().to_string(),
            params: params.clone(),
            headers: BTreeMap::new(),
        });
        let q = match parse_logsql(params.get("query").map_or("", String::as_str)) {
            Ok(q) => q,
            Err(e) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(
                        serde_json::json!({"status": "error", "errorType": "422", "error": e}),
                    ),
                )
            }
        };
        let start = params.get("start").map_or(i64::MIN, |s| vl_time(s).0);
        let end = params.get("end").map_or(i64::MAX, |s| vl_time(s).1);
        let selected = lines.iter().filter(|l| {
            let ns = l.time_ms * 1_000_000;
            ns >= start
                && ns <= end
                && q.filter
                    .iter()
                    .all(|(k, v)| l.fields.get(k.as_str()) == Some(&v.as_str()))
        });
        let range = uri.path().ends_with("stats_query_range");
        let step = params.get("step").map(|s| vl_duration_ms(s));
        let offset = params.get("offset").map_or(0, |s| vl_duration_ms(s));
        // (by values, bucket start) -> count
        let mut rows: BTreeMap<(Vec<String>, i64), u64> = BTreeMap::new();
        if !range && q.by.is_empty() {
            rows.insert((Vec::new(), 0), 0);
        }
        for l in selected {
            let key: Vec<String> =
                q.by.iter()
                    .map(|f| l.fields.get(f.as_str()).unwrap_or(&"").to_string())
                    .collect();
            let bucket = match (range, step) {
                (true, Some(step)) => l.time_ms - (l.time_ms - offset).rem_euclid(step),
                _ => 0,
            };
            *rows.entry((key, bucket)).or_default() += 1;
        }
        let mut series: BTreeMap<Vec<String>, Vec<(i64, u64)>> = BTreeMap::new();
        for ((key, bucket), n) in rows {
            if q.above.is_none_or(|a| n as f64 > a) {
                series.entry(key).or_default().push((bucket, n));
            }
        }
        let result: Vec<serde_json::Value> = series
            .into_iter()
            .map(|(key, points)| {
                let mut metric = serde_json::Map::new();
                metric.insert("__name__".into(), serde_json::json!(q.name));
                for (f, v) in q.by.iter().zip(key) {
                    metric.insert(f.clone(), serde_json::json!(v));
                }
                if range {
                    let values: Vec<serde_json::Value> = points
                        .iter()
                        .map(|(t, n)| serde_json::json!([vl_seconds(*t), n.to_string()]))
                        .collect();
                    serde_json::json!({"metric": metric, "values": values})
                } else {
                    let time: serde_json::Value = serde_json::from_str(&params["time"]).unwrap();
                    serde_json::json!({"metric": metric, "value": [time, points[0].1.to_string()]})
                }
            })
            .collect();
        let kind = if range { "matrix" } else { "vector" };
        (
            StatusCode::OK,
            axum::Json(
                serde_json::json!({"status": "success", "data": {"resultType": kind, "result": result}}),
            ),
        )
    }
    let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
    let app = axum::Router::new()
        .route("/select/logsql/stats_query", axum::routing::post(handle))
        .route(
            "/select/logsql/stats_query_range",
            axum::routing::post(handle),
        )
        .with_state((seen.clone(), Arc::new(lines)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    ModelLogs {
        url,
        seen,
        _server: server,
    }
}

fn vlogs_ds(url: &str, window: VlogsWindow) -> ClientDatasource {
    ClientDatasource::new(None, Some(client(url))).with_vlogs_window(window)
}

/// (value at each timestamp) of the one series `q` gives live at `ts`.
async fn live_counts(ds: &ClientDatasource, q: &RuleQuery, stamps: &[i64]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for ts in stamps {
        let answer = ds.instant(q, *ts).await.unwrap();
        assert!(answer.series.len() <= 1, "{:?}", answer.series);
        out.push(
            answer
                .series
                .first()
                .map(|s| s.samples.last().unwrap().value.to_string()),
        );
    }
    out
}

/// Issue 11, item 2: vmalert's `start=T-interval&end=T` reads
/// `[T-interval, T+1s)`, so the lines of the second at T were counted by two
/// evaluations. The default window is exact; `vlogs_window: vmalert` keeps
/// the old reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlogs_live_windows_count_each_line_once() {
    let t = past_hour();
    let lines = vec![
        line(t - 60_000, "api", "error"), // first instant of [T-1m, T)
        line(t - 1, "api", "error"),      // last millisecond of it
        line(t, "api", "error"),          // first instant of the next window
        line(t + 500, "api", "error"),
        line(t + 59_999, "api", "error"),
        line(t + 60_000, "api", "error"), // the window after
        line(t + 30_000, "api", "info"),  // filtered out
    ];
    let logs = model_logs(lines).await;
    let group = &groups(
        "w.yml",
        "groups:\n- name: w\n  type: vlogs\n  interval: 1m\n  rules:\n  - record: n\n    expr: 'level:error | stats count() as n'\n",
    )[0];
    let q = RuleQuery::new(group, &group.rules[0].expr, 60_000);
    let stamps = [t, t + 60_000, t + 120_000];
    let exact = live_counts(&vlogs_ds(&logs.url, VlogsWindow::Exact), &q, &stamps).await;
    // [T-1m, T): 2 lines; [T, T+1m): 3; [T+1m, T+2m): 1. Six error lines, each once.
    let counts: Vec<Option<&str>> = exact.iter().map(|c| c.as_deref()).collect();
    assert_eq!(counts, [Some("2"), Some("3"), Some("1")]);
    let seen = logs.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|r| r.path.ends_with("stats_query_range")
        && r.params["step"] == "60s"
        && r.params["end"].ends_with(".999")));
    // vmalert's window also counts the second at T (2 lines) in the
    // evaluation at T, and the one at T+1m in the evaluation at T+1m.
    let vmalert = live_counts(&vlogs_ds(&logs.url, VlogsWindow::Vmalert), &q, &stamps).await;
    let counts: Vec<Option<&str>> = vmalert.iter().map(|c| c.as_deref()).collect();
    assert_eq!(counts, [Some("4"), Some("4"), Some("1")]);
}

/// Issue 11, items 1 and 3: replay lost the last bucket of every request
/// (VictoriaLogs cuts at `end` before bucketing) and exported buckets at
/// their start, while live evaluation at T reads the interval before T.
/// Replay must export, at every timestamp and whatever the request size,
/// what live evaluation exports there; a window without lines exports
/// nothing in both, also for a bare `count()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlogs_replay_exports_what_live_evaluation_exports() {
    let t0 = past_hour();
    // 21 minutes of lines: service `api` one every 7s, `web` every 13s and
    // `db` only in minutes 3..5; nothing at all from 10m to 11m30s (an empty
    // window on either grid).
    let mut lines = Vec::new();
    for ms in (0..21 * 60_000).step_by(1_000) {
        if (10 * 60_000..11 * 60_000 + 30_000).contains(&ms) {
            continue;
        }
        let t = t0 + ms;
        if ms % 7_000 == 0 {
            lines.push(line(t, "api", "error"));
        }
        if ms % 13_000 == 0 {
            lines.push(line(t, "web", "error"));
        }
        if (3 * 60_000..6 * 60_000).contains(&ms) {
            lines.push(line(t, "db", "error"));
        }
    }
    let logs = model_logs(lines).await;
    let rules = groups(
        "r.yml",
        "groups:
- name: by_service
  type: vlogs
  interval: 1m
  rules:
  - record: errors
    expr: 'level:error | stats by (service) count() as errors | filter errors:>5'
- name: total
  type: vlogs
  interval: 1m
  eval_offset: 30s
  rules:
  - record: total
    expr: 'level:error | stats count() as total'
",
    );
    let ds = vlogs_ds(&logs.url, VlogsWindow::Exact);
    let (from, to) = (t0 + 60_000, t0 + 20 * 60_000);
    // Live: every timestamp of each group's grid in [from, to].
    let mut live: Vec<(String, i64, String)> = Vec::new();
    for g in &rules {
        let sched =
            spillway::run::Schedule::for_group(g, Duration::from_secs(60), Duration::ZERO, from);
        let q = RuleQuery::new(g, &g.rules[0].expr, 60_000);
        let mut ts = sched.first_at_or_after(from);
        while ts <= to {
            let answer = ds.instant(&q, ts).await.unwrap();
            for s in answer.series {
                let mut labels = s.labels.clone();
                labels.set("__name__", g.rules[0].name());
                live.push((labels.to_string(), ts, s.samples[0].value.to_string()));
            }
            ts += 60_000;
        }
    }
    live.sort();
    assert!(live.iter().any(|p| p.0.contains("db")), "{live:?}");
    // The empty minute: neither group has a point at its end.
    assert!(!live
        .iter()
        .any(|p| p.1 == t0 + 11 * 60_000 || p.1 == t0 + 11 * 60_000 + 30_000));
    assert!(live.iter().any(|p| p.1 == t0 + 12 * 60_000 + 30_000));
    for max_points in [1000, 4, 1] {
        let sink = MemorySink::new();
        let opts = ReplayOptions {
            max_datapoints_per_query: max_points,
            ..ReplayOptions::default()
        };
        let report = replay(&rules, &ds, &*sink, from, to, &opts, &NoProgress)
            .await
            .unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let replayed = points(&sink.series());
        assert_eq!(
            replayed, live,
            "replay with {max_points} points per request differs from live evaluation"
        );
    }
    // The 30s-offset group's buckets are moved onto its grid with `offset`.
    let seen = logs.seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .any(|r| r.params.get("offset").is_some_and(|o| o == "30s")));
}

/// Issue 11, item 4: `rules check --vlogs-datasource URL` has VictoriaLogs
/// parse every LogsQL query once, over a zero-length window, so a syntax
/// error shows before `spillway run` starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_check_asks_victorialogs_to_parse_each_query() {
    let logs = model_logs(vec![line(past_hour(), "api", "error")]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs.yml");
    std::fs::write(
        &file,
        "groups:\n- name: logs\n  type: vlogs\n  rules:\n  - record: good\n    expr: 'level:error | stats count() as n'\n  - record: typo\n    expr: 'level:error | stats by (service count() as n'\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let local = tokio::task::block_in_place(|| common::spillway(&["rules", "check", &path]));
    assert_eq!(local.code(), 0, "{}", local.describe());
    let checked = tokio::task::block_in_place(|| {
        common::spillway(&["rules", "check", "--vlogs-datasource", &logs.url, &path])
    });
    assert_eq!(checked.code(), 1, "{}", checked.describe());
    let err = checked.stderr();
    assert!(
        err.contains(&format!(
            "{path}:7: group \"logs\", rule \"typo\": the datasource rejects the query"
        )) && err.contains("422")
            && err.contains("cannot parse query"),
        "{err}"
    );
    assert!(!err.contains("rule \"good\""), "{err}");
    let seen = logs.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one request per query: {seen:?}");
    for r in &seen {
        assert_eq!(r.path, "/select/logsql/stats_query");
        assert_eq!(
            (r.params["start"].as_str(), r.params["end"].as_str()),
            ("0", "0")
        );
    }
}

// ---------------------------------------------------------------------------
// Differential: the same rules and data through vmalert 1.79 and through
// spillway, each writing to its own VictoriaMetrics.

/// Writes batches to a VictoriaMetrics with Prometheus remote write.
struct RemoteWriteSink {
    client: Client,
}

impl ResultSink for RemoteWriteSink {
    fn export(&self, batch: ExportBatch) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut body = Vec::new();
            RemoteWriteEncoder::new()
                .encode(&batch.series, &mut body)
                .map_err(|e| e.to_string())?;
            self.client
                .send("remote write", || {
                    let mut req = self
                        .client
                        .request(reqwest::Method::POST, "/api/v1/write")?;
                    for (k, v) in HEADERS {
                        req = req.header(k, v);
                    }
                    Ok(req.body(body.clone()))
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Export lines of `vm` as (labels, [(ts, value or "stale")]).
fn exported(vm: &Vm, selector: &str) -> BTreeMap<String, Vec<(i64, String)>> {
    let mut out = BTreeMap::new();
    for line in vm.export_lines(selector) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let labels: BTreeMap<String, String> = serde_json::from_value(v["metric"].clone()).unwrap();
        let labels = Labels::from_pairs(labels).to_string();
        let samples: Vec<(i64, String)> = v["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["values"].as_array().unwrap())
            .map(|(t, x)| {
                let x = if x.is_null() {
                    "stale".to_string()
                } else {
                    x.to_string()
                };
                (t.as_i64().unwrap(), x)
            })
            .collect();
        out.insert(labels, samples);
    }
    out
}

const DIFF_RULES: &str = r#"groups:
- name: static
  interval: 5s
  rules:
  - record: rec_hot
    expr: temp > 55
    labels: {severity: high, source: ""}
  - record: rec_rate
    expr: rate(requests_total[30s]) > 1.5
  - alert: HighPressure
    expr: pressure > 80
    for: 10s
    labels: {team: "{{ $labels.sensor }}-oncall"}
- name: odd
  interval: 7s
  labels: {region: eu}
  rules:
  - record: rec_cmp
    expr: temp - temp offset 1m > 3
  - record: rec_predict
    expr: predict_linear(disk_free[2m], 600) < 0
  - record: rec_sum
    expr: sum by (source) (temp) > 220
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_against_vmalert() {
    let src = Vm::start();
    let dst_a = Vm::start();
    let dst_b = Vm::start();
    let now = SystemClock.now_ms() / 1000 * 1000;
    let (from, to) = (now - 900_000, now + 180_000);
    let mut lines = temp_lines(4, from, to, &[("source", "fixture")]);
    // A minute-long saw: above 80 for 29s of every minute, sensors 10s
    // apart, so some alert starts (and fires) within any 20s.
    for i in 0..6i64 {
        let sensor = format!("s{i}");
        let samples: Vec<(i64, f64)> = (from / 1000..=to / 1000)
            .map(|s| (s * 1000, 50.0 + (s + 10 * i).rem_euclid(60) as f64))
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "pressure"), ("sensor", &sensor)],
            &samples,
        ));
        lines.push('\n');
    }
    for (i, path) in ["/a", "/b"].iter().enumerate() {
        let mut total = 0.0;
        let samples: Vec<(i64, f64)> = (from / 1000..=to / 1000)
            .map(|s| {
                total += 1.0 + ((s / 10 + i as i64).rem_euclid(3)) as f64;
                (s * 1000, total)
            })
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "requests_total"), ("path", path)],
            &samples,
        ));
        lines.push('\n');
    }
    for (mount, slope) in [("/", 2.0), ("/data", 0.0)] {
        let samples: Vec<(i64, f64)> = (from / 1000..=to / 1000)
            .map(|s| {
                (
                    s * 1000,
                    1000.0 - slope * ((s * 1000 - from) / 1000) as f64 / 2.0,
                )
            })
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "disk_free"), ("mount", mount)],
            &samples,
        ));
        lines.push('\n');
    }
    src.import(&lines);

    // vmalert 1.79 evaluates each group at a fixed phase of its interval
    // derived from the group id (a hash of file and name); VictoriaMetrics
    // answers a query for T sent before T+1s as of T-1s. Pick a file name
    // whose phases leave vmalert more than a second after each timestamp, so
    // the comparison is not at the mercy of the temp dir's name.
    let dir = tempfile::tempdir().unwrap();
    let rule_file = (0..1000)
        .map(|n| dir.path().join(format!("rules-{n}.yml")))
        .find(|p| {
            groups(&p.display().to_string(), DIFF_RULES)
                .iter()
                .all(|g| {
                    let i = g.interval.unwrap().as_millis() as i64;
                    let phase = (spillway::run::state::group_id(g) as f64 / 2f64.powi(64)
                        * i as f64) as i64;
                    let grid = go_truncate(0, i).rem_euclid(i);
                    let lag = (phase - grid).rem_euclid(i);
                    (1_500..i - 500).contains(&lag)
                })
        })
        .unwrap();
    std::fs::write(&rule_file, DIFF_RULES).unwrap();
    let port = common::free_port();
    let vmalert = Server::start(
        "vmalert",
        port,
        vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-datasource.url={}", src.url()),
            format!("-remoteWrite.url={}", dst_a.url()),
            "-remoteWrite.flushInterval=500ms".into(),
            format!("-rule={}", rule_file.display()),
            "-notifier.url=http://127.0.0.1:1".into(),
            "-loggerLevel=ERROR".into(),
        ],
    );
    vmalert.wait_ready("/health");

    let rules = groups(&rule_file.display().to_string(), DIFF_RULES);
    let engine = Engine::start(
        rules,
        Arc::new(ClientDatasource::new(Some(client(&src.url())), None)),
        Arc::new(RemoteWriteSink {
            client: client(&dst_b.url()),
        }),
        Arc::new(SystemClock),
        no_delay(),
    )
    .unwrap();
    // The sleep is the thing under test: both engines evaluate side by side
    // on the wall clock for 30s, and the comparison below covers that run.
    tokio::time::sleep(Duration::from_secs(30)).await;
    engine.shutdown().await;
    // vmalert keeps evaluating and flushes every 500ms: wait (bounded) until
    // its destination reaches the newest timestamp spillway's holds, so the
    // common window covers all of spillway's run.
    let newest = |vm: &Vm, step: i64| {
        exported(vm, r#"{__name__=~"rec_.*|ALERTS.*"}"#)
            .iter()
            .filter(|(l, _)| l.contains(r#"region="eu""#) == (step == 7_000))
            .flat_map(|(_, s)| s.iter().map(|x| go_truncate(x.0, step)))
            .max()
            .unwrap_or(i64::MIN)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while [5_000, 7_000]
        .iter()
        .any(|&step| newest(&dst_a, step) < newest(&dst_b, step))
    {
        assert!(
            Instant::now() < deadline,
            "vmalert's destination did not reach spillway's newest timestamps within 30s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(vmalert);

    let a = exported(&dst_a, r#"{__name__=~"rec_.*|ALERTS.*"}"#);
    let b = exported(&dst_b, r#"{__name__=~"rec_.*|ALERTS.*"}"#);
    let interval_of = |labels: &str| {
        if labels.starts_with("rec_hot")
            || labels.starts_with("rec_rate")
            || labels.starts_with("ALERTS")
        {
            5_000
        } else {
            7_000
        }
    };

    // vmalert evaluated at the phase its group id predicts (this checks
    // spillway's group id and the reading of vmalert's scheduler above).
    let static_group = &groups(&rule_file.display().to_string(), DIFF_RULES)[0];
    let phase =
        (spillway::run::state::group_id(static_group) as f64 / 2f64.powi(64) * 5_000.0) as i64;
    let raw_alert_stamps: BTreeSet<i64> = a
        .iter()
        .filter(|(l, _)| l.starts_with("ALERTS"))
        .flat_map(|(_, s)| s.iter().map(|x| x.0 - go_truncate(x.0, 5_000)))
        .collect();
    assert_eq!(
        raw_alert_stamps,
        BTreeSet::from([phase / 1000 * 1000]),
        "vmalert's evaluation phase"
    );

    // vmalert 1.79 writes alert series and stale markers at its (unaligned)
    // evaluation time and also writes pending alerts; spillway uses the aligned time (as later
    // vmalert versions do) and exports firing alerts only. Align vmalert's
    // alert samples and keep its firing ones before comparing.
    let mut a_norm: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let firing_at: BTreeMap<String, BTreeSet<i64>> = a
        .iter()
        .filter(|(l, _)| l.contains(r#"alertstate="firing""#))
        .map(|(l, s)| {
            let key = l
                .replace(r#", alertstate="firing""#, "")
                .replace("ALERTS{", "ALERTS_FOR_STATE{");
            (key, s.iter().map(|(t, _)| go_truncate(*t, 5_000)).collect())
        })
        .collect();
    for (labels, samples) in &a {
        if labels.contains(r#"alertstate="pending""#) {
            continue;
        }
        // vmalert 1.79 also stamps stale markers with the unaligned time.
        let step = interval_of(labels);
        let mut s: Vec<(i64, String)> = samples
            .iter()
            .map(|(t, v)| (go_truncate(*t, step), v.clone()))
            .collect();
        if labels.starts_with("ALERTS") {
            s = s
                .into_iter()
                .map(|(t, v)| {
                    let v = if labels.starts_with("ALERTS_FOR_STATE") && v != "stale" {
                        (go_truncate(v.parse::<i64>().unwrap() * 1000, 5_000) / 1000).to_string()
                    } else {
                        v
                    };
                    (t, v)
                })
                .collect();
            if labels.starts_with("ALERTS_FOR_STATE") {
                let at = firing_at.get(labels).cloned().unwrap_or_default();
                s.retain(|(t, _)| at.contains(t));
            }
        }
        a_norm.insert(labels.clone(), s);
    }

    // An alert that became active before vmalert's first evaluation has an
    // earlier activeAt in spillway: compare only alerts both saw begin.
    let vmalert_first = a
        .iter()
        .filter(|(l, _)| interval_of(l) == 5_000)
        .flat_map(|(_, s)| s.iter().map(|x| go_truncate(x.0, 5_000)))
        .min()
        .unwrap();
    let early: BTreeSet<String> = b
        .iter()
        .filter(|(l, s)| {
            l.starts_with("ALERTS_FOR_STATE")
                && s.iter()
                    .any(|(_, v)| v != "stale" && v.parse::<i64>().unwrap() * 1000 < vmalert_first)
        })
        .map(|(l, _)| l.trim_start_matches("ALERTS_FOR_STATE").to_string())
        .collect();
    let late_alert = |l: &String| {
        !(l.starts_with("ALERTS")
            && early.contains(
                l.trim_start_matches("ALERTS_FOR_STATE")
                    .trim_start_matches("ALERTS")
                    .replace(r#", alertstate="firing""#, "")
                    .as_str(),
            ))
    };
    a_norm.retain(|l, _| late_alert(l));
    let b: BTreeMap<String, Vec<(i64, String)>> =
        b.into_iter().filter(|(l, _)| late_alert(l)).collect();
    assert!(
        b.keys().any(|l| l.starts_with("ALERTS{")),
        "no alert began and fired within the window"
    );

    // Compare over the timestamps both evaluated, skipping the first common
    // one (stale markers there depend on who evaluated before it).
    let stamps = |m: &BTreeMap<String, Vec<(i64, String)>>, step: i64| -> (i64, i64) {
        let all: Vec<i64> = m
            .iter()
            .filter(|(l, _)| interval_of(l) == step)
            .flat_map(|(_, s)| s.iter().map(|x| x.0))
            .collect();
        (
            *all.iter().min().unwrap_or(&i64::MAX),
            *all.iter().max().unwrap_or(&i64::MIN),
        )
    };
    let mut compared = 0;
    for step in [5_000, 7_000] {
        let (a_lo, a_hi) = stamps(&a_norm, step);
        let (b_lo, b_hi) = stamps(&b, step);
        let lo = a_lo.max(b_lo) + step;
        let hi = a_hi.min(b_hi);
        assert!(
            hi - lo >= 2 * step,
            "too short a common window for {step}ms: {lo}..{hi}"
        );
        let window =
            |m: &BTreeMap<String, Vec<(i64, String)>>| -> BTreeMap<String, Vec<(i64, String)>> {
                m.iter()
                    .filter(|(l, _)| interval_of(l) == step)
                    .map(|(l, s)| {
                        (
                            l.clone(),
                            s.iter()
                                .filter(|x| x.0 >= lo && x.0 <= hi)
                                .cloned()
                                .collect::<Vec<_>>(),
                        )
                    })
                    .filter(|(_, s)| !s.is_empty())
                    .collect()
            };
        let (wa, wb) = (window(&a_norm), window(&b));
        assert_eq!(
            wa.keys().collect::<Vec<_>>(),
            wb.keys().collect::<Vec<_>>(),
            "series of the {step}ms group differ"
        );
        for (labels, sa) in &wa {
            assert_eq!(sa, &wb[labels], "{labels}");
            compared += sa.len();
        }
        // The 7s group is aligned the way Go truncates: Unix seconds ≡ 3 (mod 7).
        if step == 7_000 {
            assert!(wb.values().flatten().all(|(t, _)| (t / 1000) % 7 == 3));
        }
    }
    for name in [
        "rec_hot",
        "rec_rate",
        "rec_cmp",
        "rec_predict",
        "rec_sum",
        "ALERTS{",
        "ALERTS_FOR_STATE",
    ] {
        assert!(
            b.keys().any(|l| l.starts_with(name)),
            "{name} never produced anything: {:?}",
            b.keys()
        );
    }
    assert!(
        b.values().flatten().any(|(_, v)| v == "stale"),
        "no stale marker in the window"
    );
    assert!(compared >= 40, "compared only {compared} samples");
    eprintln!(
        "differential: {compared} samples identical in vmalert's and spillway's destinations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_matches_vmalert_replay() {
    let src = Vm::start();
    let dst_a = Vm::start();
    let dst_b = Vm::start();
    let start = past_hour() - 4 * 3_600_000;
    let end = start + 2 * 3_600_000;
    let value =
        |i: i64, t: i64| -> f64 { ((t / 60_000 * (i + 2) + 5 * i).rem_euclid(23)) as f64 * 7.0 };
    let mut lines = String::new();
    for i in 0..4 {
        let host = format!("h{i}");
        let samples: Vec<(i64, f64)> = (0..=3 * 60)
            .map(|m| start - 1_800_000 + m * 60_000)
            .map(|t| (t, value(i, t)))
            .collect();
        lines.push_str(&vm_line(&[("__name__", "load"), ("host", &host)], &samples));
        lines.push('\n');
    }
    src.import(&lines);
    let rules_yaml = r#"groups:
- name: backfill
  interval: 1m
  labels: {origin: replay}
  rules:
  - record: load:high
    expr: load > 100
    labels: {tier: gold}
  - alert: LoadHigh
    expr: load > 80
    for: 3m
    labels: {host_alias: "{{ $labels.host }}-x"}
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replay.yml");
    std::fs::write(&file, rules_yaml).unwrap();

    let rfc = |ms: i64| spillway::model::time::format_rfc3339_ms(ms);
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("vmalert")
            .args([
                format!("-rule={}", file.display()),
                format!("-datasource.url={}", src.url()),
                format!("-remoteWrite.url={}", dst_a.url()),
                format!("-replay.timeFrom={}", rfc(start)),
                format!("-replay.timeTo={}", rfc(end)),
                "-replay.disableProgressBar".into(),
                "-replay.rulesDelay=0s".into(),
                // 1.79 steps range queries by -datasource.queryStep (5m)
                // when set; later versions, and spillway, by the interval.
                "-datasource.queryStep=0s".into(),
                "-loggerLevel=ERROR".into(),
            ])
            .output()
            .expect("vmalert")
    });
    assert!(
        out.status.success(),
        "vmalert replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = groups(&file.display().to_string(), rules_yaml);
    let ds = ClientDatasource::new(Some(client(&src.url())), None);
    let sink = RemoteWriteSink {
        client: client(&dst_b.url()),
    };
    // Smaller requests than vmalert's: the alert state must carry over.
    let opts = ReplayOptions {
        max_datapoints_per_query: 17,
        ..ReplayOptions::default()
    };
    let report = replay(&rules, &ds, &sink, start, end, &opts, &NoProgress)
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.requests, 2 * 8);

    let a = exported(&dst_a, r#"{__name__=~"load:high|ALERTS.*"}"#);
    let b = exported(&dst_b, r#"{__name__=~"load:high|ALERTS.*"}"#);
    // vmalert also writes pending alerts; spillway exports firing ones only.
    let firing: BTreeMap<String, BTreeSet<i64>> = a
        .iter()
        .filter(|(l, _)| l.contains(r#"alertstate="firing""#))
        .map(|(l, s)| {
            let key = l
                .replace(r#", alertstate="firing""#, "")
                .replace("ALERTS{", "ALERTS_FOR_STATE{");
            (key, s.iter().map(|x| x.0).collect())
        })
        .collect();
    let a: BTreeMap<String, Vec<(i64, String)>> = a
        .into_iter()
        .filter(|(l, _)| !l.contains(r#"alertstate="pending""#))
        .map(|(l, s)| {
            if !l.starts_with("ALERTS_FOR_STATE") {
                return (l, s);
            }
            let at = firing.get(&l).cloned().unwrap_or_default();
            let s = s.into_iter().filter(|x| at.contains(&x.0)).collect();
            (l, s)
        })
        .filter(|(_, s): &(String, Vec<(i64, String)>)| !s.is_empty())
        .collect();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut compared = 0;
    for (labels, sa) in &a {
        assert_eq!(sa, &b[labels], "{labels}");
        compared += sa.len();
    }
    assert!(b.keys().any(|l| l.starts_with("ALERTS{")));
    assert!(compared > 100, "compared only {compared} samples");
}

/// Polls `done` until it holds or `timeout` passes; says which.
async fn engine_wait(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lag `run::margin` measures: how far behind the time asked for a
/// source answers `time()` sent now.
async fn lag_of(url: &str) -> i64 {
    let ds = ClientDatasource::new(Some(client(url)), None);
    let group = &groups(
        "lag.yml",
        "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n",
    )[0];
    let probe = RuleQuery::new(group, "time()", 60_000);
    let now = SystemClock.now_ms();
    ds.answer_lag(&probe, now)
        .await
        .unwrap_or_else(|| panic!("no lag measured from {url}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn datasource_lag_is_measured_from_the_answer_to_time() {
    // Prometheus evaluates at the time asked for.
    let prom = common::Prometheus::start();
    assert_eq!(lag_of(&prom.url()).await, 0);
    // VictoriaMetrics answers as of its present minus the latency offset
    // (the request's travel time comes off it, never adds to it).
    let vm = Vm::start_with(&["-search.latencyOffset=5s"]);
    let lag = lag_of(&vm.url()).await;
    assert!((3000..=5001).contains(&lag), "lag {lag} ms for a 5s offset");
    // A query for a time far enough back is answered as asked.
    let ds = ClientDatasource::new(Some(client(&vm.url())), None);
    let group = &groups(
        "lag.yml",
        "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n",
    )[0];
    let probe = RuleQuery::new(group, "time()", 60_000);
    let back = SystemClock.now_ms() - 60_000;
    let answer = ds.instant(&probe, back).await.unwrap();
    assert_eq!(
        (answer.series[0].samples[0].value * 1000.0).round() as i64,
        back
    );
}
