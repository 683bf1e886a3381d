//! Breach captures through the binary, against real servers: a
//! VictoriaMetrics (or Prometheus) source holding raw samples at irregular
//! times, and destinations that must end up with exactly the source's raw
//! samples around each breach, compared sample by sample with the source's
//! own `/api/v1/export` (or, for Prometheus, its range vectors).

mod common;

use common::{
    http_get, metric_value, spillway, vm_line, wait_for, write_files, Prometheus, SpillwayRun, Vm,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Raw points by series: labels (without `drop`) → timestamp → value.
type Points = BTreeMap<String, BTreeMap<i64, f64>>;

/// Every sample `/api/v1/export` gives for `selector`, and how many there
/// were with duplicates.
fn export_points(url: &str, selector: &str, drop: &[&str]) -> (Points, usize) {
    let out = common::curl(&[
        "-sS",
        "--fail-with-body",
        &format!("{url}/api/v1/export"),
        "--data-urlencode",
        &format!("match[]={selector}"),
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut points = Points::new();
    let mut total = 0;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(&line.replace("NaN", "null")).unwrap();
        let mut metric: BTreeMap<String, String> =
            serde_json::from_value(v["metric"].clone()).unwrap();
        for d in drop {
            metric.remove(*d);
        }
        let key = format!("{metric:?}");
        let ts: Vec<i64> = serde_json::from_value(v["timestamps"].clone()).unwrap();
        let vals: Vec<Option<f64>> = serde_json::from_value(v["values"].clone()).unwrap();
        total += ts.len();
        let e = points.entry(key).or_default();
        for (t, x) in ts.into_iter().zip(vals) {
            e.insert(t, x.unwrap_or(f64::NAN));
        }
    }
    (points, total)
}

/// `points` restricted to `[from, to)`, empty series left out.
fn window(points: &Points, from: i64, to: i64) -> Points {
    points
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.range(from..to)
                    .map(|(t, x)| (*t, *x))
                    .collect::<BTreeMap<_, _>>(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Irregular raw timestamps (not on any evaluation grid): every `every_ms`
/// plus a few ms that depend on the series.
fn raw_times(from: i64, to: i64, every_ms: i64, salt: i64) -> Vec<i64> {
    (0..)
        .map(|i| from + i * every_ms + (i * 7 + salt) % 13)
        .take_while(|t| *t <= to)
        .collect()
}

fn rfc3339_ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

fn vm_destination(name: &str, vm: &Vm, extra: &str) -> String {
    format!(
        "  - name: {name}\n    url: {}/api/v1/write\n    flush_interval: 100ms\n{extra}",
        vm.url()
    )
}

/// The capture's own series only (rule results carry no `captured_by`).
const KEEP_CAPTURED: &str =
    "    relabel_configs:\n      - {action: keep, source_labels: [captured_by], regex: '.+'}\n";

#[test]
fn replay_copies_exactly_the_raw_samples_around_a_spike() {
    let src = Vm::start();
    let debug = Vm::start();
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    let spike = (t0 + 20 * 60_000, t0 + 25 * 60_000);
    let mut lines = String::new();
    for (name, instance, salt) in [("cpu", "a", 1), ("mem", "a", 5), ("cpu", "b", 9)] {
        let samples: Vec<(i64, f64)> = raw_times(t0 - 10 * 60_000, t0 + 60 * 60_000, 10_000, salt)
            .into_iter()
            .map(|t| {
                let hot = name == "cpu" && instance == "a" && t >= spike.0 && t < spike.1;
                (
                    t,
                    if hot {
                        95.0
                    } else {
                        40.0 + (t % 1000) as f64 / 100.0
                    },
                )
            })
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", name), ("instance", instance)],
            &samples,
        ));
        lines.push('\n');
    }
    src.import(&lines);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "datasource: {{url: '{}'}}
rule_files: ['rules.yml']
storage: {{path: '{{dir}}/data'}}
destinations:
{}
captures:
  - name: cpu_context
    if: '{{severity=\"critical\"}}'
    rules: [static_thresholds/cpu_high]
    match: '{{instance=\"{{{{ $labels.instance }}}}\"}}'
    before: 5m
    after: 3m
    chunk: 2m
    destinations: [debug]
    labels: {{captured_by: cpu_context}}
",
        src.url(),
        vm_destination("debug", &debug, KEEP_CAPTURED)
    );
    write_files(
        dir.path(),
        &[
            ("run.yml", &config),
            (
                "rules.yml",
                "groups:\n- name: static_thresholds\n  interval: 1m\n  rules:\n  - record: cpu_high\n    expr: cpu > 90\n    labels: {severity: critical}\n",
            ),
        ],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let (from, to) = (
        (t0 / 1000).to_string(),
        ((t0 + 3_600_000) / 1000).to_string(),
    );
    let run = spillway(&["replay", "-c", &cfg, "--from", &from, "--to", &to]);
    run.assert_code(0);
    let out = run.stdout();
    assert!(
        out.contains("captures: 1 capture, 2 series"),
        "{}",
        run.describe()
    );

    // The breach as replay sees it: the grid points where the rule returns the series.
    let q = http_get(&format!(
        "{}/api/v1/query_range?query=cpu%3E90&start={}&end={}&step=60s&nocache=1",
        src.url(),
        t0 / 1000,
        (t0 + 3_600_000) / 1000
    ));
    let v: serde_json::Value = serde_json::from_str(&q).unwrap();
    let grid: Vec<i64> = v["data"]["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap() * 1000.0) as i64)
        .collect();
    let (start, end) = (grid[0], grid[grid.len() - 1] + 60_000);
    assert!(
        grid.windows(2).all(|w| w[1] - w[0] == 60_000),
        "one breach: {grid:?}"
    );

    let (source, _) = export_points(&src.url(), r#"{instance="a"}"#, &[]);
    let want = window(&source, start - 5 * 60_000, end + 3 * 60_000);
    wait_for(
        "the debug storage to hold the capture",
        Duration::from_secs(30),
        || {
            debug.flush();
            export_points(
                &debug.url(),
                r#"{captured_by="cpu_context"}"#,
                &["captured_by"],
            )
            .0 == want
        },
    );
    let (got, total) = export_points(&debug.url(), r#"{__name__=~".+"}"#, &["captured_by"]);
    assert_eq!(
        got, want,
        "exactly the raw samples of instance a in the window, nothing else"
    );
    let distinct: usize = got.values().map(BTreeMap::len).sum();
    assert_eq!(total, distinct, "no sample sent twice");
    assert_eq!(got.len(), 2, "cpu and mem of instance a");

    // Replaying again copies nothing: the ranges are on disk.
    let again = spillway(&["replay", "-c", &cfg, "--from", &from, "--to", &to]);
    again.assert_code(0);
    assert!(
        again.stdout().contains("0 raw samples copied"),
        "{}",
        again.describe()
    );
}

#[test]
fn two_rules_and_a_flapping_breach_make_one_capture_without_duplicates() {
    let src = Vm::start();
    let debug = Vm::start();
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 2 * 3_600_000;
    let m = |n: i64| t0 + n * 60_000;
    let hot = |name: &str, t: i64| match name {
        // cpu flaps: hot, a 2-minute pause, hot again; mem overlaps both.
        "cpu" => (m(10)..m(12)).contains(&t) || (m(14)..m(16)).contains(&t),
        "mem" => (m(11)..m(13)).contains(&t),
        _ => false,
    };
    let mut lines = String::new();
    for (name, salt) in [("cpu", 2), ("mem", 3), ("disk", 4)] {
        let samples: Vec<(i64, f64)> = raw_times(m(-10), m(40), 15_000, salt)
            .into_iter()
            .map(|t| (t, if hot(name, t) { 99.0 } else { 10.0 }))
            .collect();
        lines.push_str(&vm_line(&[("__name__", name), ("instance", "a")], &samples));
        lines.push('\n');
    }
    src.import(&lines);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "datasource: {{url: '{}'}}
rule_files: ['rules.yml']
storage: {{path: '{{dir}}/data'}}
destinations:
{}
captures:
  - name: host
    match: '{{instance=\"{{{{ $labels.instance }}}}\"}}'
    before: 2m
    after: 2m
    chunk: 3m
    destinations: [debug]
    labels: {{captured_by: host}}
",
        src.url(),
        vm_destination("debug", &debug, KEEP_CAPTURED)
    );
    write_files(
        dir.path(),
        &[
            ("run.yml", &config),
            (
                "rules.yml",
                "groups:\n- name: g\n  interval: 1m\n  rules:\n  - record: cpu_high\n    expr: cpu > 90\n  - alert: MemHigh\n    expr: mem > 90\n",
            ),
        ],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&[
        "replay",
        "-c",
        &cfg,
        "--from",
        &(m(0) / 1000).to_string(),
        "--to",
        &(m(30) / 1000).to_string(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("captures: 1 capture, 3 series"),
        "{}",
        run.describe()
    );
    let (source, _) = export_points(&src.url(), r#"{instance="a"}"#, &[]);
    wait_for("the capture to arrive", Duration::from_secs(30), || {
        debug.flush();
        !export_points(&debug.url(), r#"{captured_by="host"}"#, &[])
            .0
            .is_empty()
    });
    let (got, total) = export_points(&debug.url(), r#"{captured_by="host"}"#, &["captured_by"]);
    let distinct: usize = got.values().map(BTreeMap::len).sum();
    assert_eq!(total, distinct, "no raw sample sent twice");
    // One window from the first breach to the last, whatever the evaluation grid made of them.
    let first = got.values().flat_map(|p| p.keys()).min().copied().unwrap();
    let last = got.values().flat_map(|p| p.keys()).max().copied().unwrap();
    let at = |t: i64| (t - t0) as f64 / 60_000.0;
    assert!(
        first >= m(10) - 3 * 60_000 && first < m(10) - 60_000 + 15_000,
        "starts before the first breach: {} min",
        at(first)
    );
    assert!(
        last >= m(16) + 60_000 && last < m(16) + 4 * 60_000,
        "ends after the last breach: {} min",
        at(last)
    );
    assert_eq!(
        got,
        window(&source, first, last + 1),
        "the whole window without holes"
    );
}

/// The live-run config: rules every 2s, a capture per sensor.
fn live_files(src: &Vm, debug: &Vm) -> Vec<(&'static str, String)> {
    let config = format!(
        "datasource: {{url: '{}', timeout: 5s}}
rule_files: ['rules.yml']
evaluation: {{eval_delay: 0s}}
storage: {{path: '{{dir}}/data'}}
destinations:
{}
captures:
  - name: sensor
    match: '{{sensor=\"{{{{ $labels.sensor }}}}\", __name__=~\"temp|fan\"}}'
    before: 20s
    after: 10s
    chunk: 5s
    destinations: [debug]
",
        src.url(),
        vm_destination("debug", debug, "")
    );
    let rules = "groups:\n- name: hot\n  interval: 2s\n  rules:\n  - record: temp_hot\n    expr: temp > 60\n".to_string();
    vec![("run.yml", config), ("rules.yml", rules)]
}

/// The captures `/api/v1/captures` lists, by state.
fn captures(sp: &SpillwayRun) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{}/api/v1/captures", sp.url()))).unwrap();
    v["data"]["captures"].as_array().unwrap().clone()
}

fn closed_capture(sp: &SpillwayRun, selector_part: &str) -> Option<serde_json::Value> {
    captures(sp).into_iter().find(|c| {
        c["state"] == "closed" && c["selectors"][0].as_str().unwrap().contains(selector_part)
    })
}

/// The raw samples the debug storage must hold for a closed capture.
fn check_capture(src: &Vm, debug: &Vm, c: &serde_json::Value, sensor: &str) {
    let from = rfc3339_ms(c["from"].as_str().unwrap());
    let to = rfc3339_ms(c["to"].as_str().unwrap());
    let breach_start = rfc3339_ms(c["breach_start"].as_str().unwrap());
    let breach_end = rfc3339_ms(c["breach_end"].as_str().unwrap());
    assert_eq!(
        (from, to),
        (breach_start - 20_000, breach_end + 10_000),
        "{c}"
    );
    let sel = format!(r#"{{sensor="{sensor}", __name__=~"temp|fan"}}"#);
    let (source, _) = export_points(&src.url(), &sel, &[]);
    let want = window(&source, from, to);
    wait_for(
        "the capture to be delivered",
        Duration::from_secs(30),
        || {
            debug.flush();
            export_points(&debug.url(), &sel, &[]).0 == want
        },
    );
    // The rule results say when the breach started and ended.
    let (rule, _) = export_points(
        &debug.url(),
        &format!(r#"temp_hot{{sensor="{sensor}"}}"#),
        &[],
    );
    let points = rule.values().next().unwrap();
    assert_eq!(
        *points.keys().next().unwrap(),
        breach_start,
        "breach start = first evaluation returning it"
    );
    let stale = points.iter().find(|(_, v)| v.is_nan()).map(|(t, _)| *t);
    assert_eq!(stale, Some(breach_end), "breach end = its stale marker");
}

#[test]
fn live_captures_resume_after_sigterm_and_kill_without_gaps() {
    let src = Vm::start();
    // Deduplicating destination: resent chunks collapse.
    let debug = Vm::start_with(&["-dedup.minScrapeInterval=1ms"]);
    let t0 = now_ms();
    let hot = |sensor: &str, t: i64| match sensor {
        "s0" => t >= t0 + 8_000 && t < t0 + 20_000,
        _ => t >= t0 + 8_000 && t < t0 + 80_000,
    };
    let mut lines = String::new();
    for (sensor, salt) in [("s0", 1), ("s1", 6)] {
        for (name, every) in [("temp", 1000), ("fan", 700)] {
            let samples: Vec<(i64, f64)> = raw_times(t0 - 120_000, t0 + 240_000, every, salt)
                .into_iter()
                .map(|t| {
                    (
                        t,
                        if name == "temp" && hot(sensor, t) {
                            70.0
                        } else {
                            20.0
                        },
                    )
                })
                .collect();
            lines.push_str(&vm_line(
                &[("__name__", name), ("sensor", sensor)],
                &samples,
            ));
            lines.push('\n');
        }
    }
    src.import(&lines);
    let files = live_files(&src, &debug);
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut sp = SpillwayRun::start_files(&files, &[]);

    // s0 breaches and stops while spillway runs.
    wait_for("the s0 capture to close", Duration::from_secs(60), || {
        closed_capture(&sp, "s0").is_some()
    });
    let c0 = closed_capture(&sp, "s0").unwrap();
    check_capture(&src, &debug, &c0, "s0");
    let m = sp.metrics_text();
    assert_eq!(
        metric_value(
            &m,
            "spillway_captures_opened_total",
            &[("capture", "sensor")]
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "spillway_captures_closed_total",
            &[("capture", "sensor")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "spillway_captures_open", &[("capture", "sensor")]),
        Some(1.0)
    );
    assert!(
        metric_value(
            &m,
            "spillway_capture_samples_total",
            &[("capture", "sensor"), ("destination", "debug")]
        )
        .unwrap()
            > 0.0
    );

    // s1 still breaches: stop it gracefully, then kill it while it copies.
    let open = |sp: &SpillwayRun| {
        captures(sp)
            .into_iter()
            .find(|c| c["state"] == "open" && c["selectors"][0].as_str().unwrap().contains("s1"))
    };
    wait_for("s1 to stream its breach", Duration::from_secs(30), || {
        open(&sp).is_some_and(|c| c["copied_seconds"].as_i64().unwrap() >= 30)
    });
    assert_eq!(sp.server.terminate(Duration::from_secs(20)), Some(0));
    // The downtime is the thing under test: the capture resumes after it.
    std::thread::sleep(Duration::from_secs(3));
    sp.server.start_again();
    sp.server.wait_ready("/health");
    let copied = |sp: &SpillwayRun| open(sp).map_or(0, |c| c["copied_seconds"].as_i64().unwrap());
    let before = copied(&sp);
    wait_for(
        "s1 to go on copying after the restart",
        Duration::from_secs(30),
        || copied(&sp) > before,
    );
    sp.server.stop();
    // The downtime after a SIGKILL is the thing under test.
    std::thread::sleep(Duration::from_secs(2));
    sp.server.start_again();
    sp.server.wait_ready("/health");

    wait_for("the s1 capture to close", Duration::from_secs(120), || {
        closed_capture(&sp, "s1").is_some()
    });
    let c1 = closed_capture(&sp, "s1").unwrap();
    check_capture(&src, &debug, &c1, "s1");
    // No gap, and after VictoriaMetrics' dedup no duplicate either.
    let sel = r#"{sensor="s1", __name__=~"temp|fan"}"#;
    let (got, total) = export_points(&debug.url(), sel, &[]);
    assert_eq!(total, got.values().map(BTreeMap::len).sum::<usize>());
}

#[test]
fn prometheus_as_source_through_remote_read_and_as_destination() {
    let src = Prometheus::start();
    let dst = Prometheus::start();
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 40 * 60_000;
    let spike = (t0 + 15 * 60_000, t0 + 18 * 60_000);
    let series: Vec<spillway::model::Series> = [("cpu", "a", 3), ("mem", "a", 8), ("cpu", "b", 4)]
        .iter()
        .map(|(name, instance, salt)| {
            let samples = raw_times(t0, t0 + 35 * 60_000, 10_000, *salt)
                .into_iter()
                .map(|t| {
                    let hot = *name == "cpu" && *instance == "a" && t >= spike.0 && t < spike.1;
                    spillway::model::Sample::new(t, if hot { 95.0 } else { 30.0 })
                })
                .collect();
            spillway::model::Series::new(
                spillway::model::Labels::from_pairs([("__name__", *name), ("instance", *instance)]),
                samples,
            )
        })
        .collect();
    let mut body = Vec::new();
    spillway::codec::encode_write_request(&series, &mut body).unwrap();
    src.remote_write(&body);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "datasource: {{url: '{}'}}
rule_files: ['rules.yml']
storage: {{path: '{{dir}}/data'}}
destinations:
  - name: prom
    url: {}/api/v1/write
    concurrency: 1
captures:
  - name: cpu_context
    match: '{{instance=\"{{{{ $labels.instance }}}}\"}}'
    before: 4m
    after: 2m
    chunk: 5m
    destinations: [prom]
    labels: {{captured_by: cpu_context}}
",
        src.url(),
        dst.url()
    );
    write_files(
        dir.path(),
        &[
            ("run.yml", &config),
            ("rules.yml", "groups:\n- name: g\n  interval: 1m\n  rules:\n  - record: cpu_high\n    expr: cpu > 90\n"),
        ],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&[
        "replay",
        "-c",
        &cfg,
        "--from",
        &(t0 / 1000).to_string(),
        "--to",
        &((t0 + 30 * 60_000) / 1000).to_string(),
    ]);
    run.assert_code(0);
    let out = run.stdout();
    assert!(
        out.contains("captures: 1 capture, 2 series"),
        "{}",
        run.describe()
    );
    assert!(
        out.contains("reading raw samples with Prometheus remote read"),
        "{out}"
    );

    // Raw samples of a Prometheus: a range vector over everything.
    let raw = |url: &str, selector: &str| -> Points {
        let q = common::curl(&[
            "-sS",
            "--fail-with-body",
            &format!("{url}/api/v1/query"),
            "--data-urlencode",
            &format!("query={selector}[2h]"),
            "--data-urlencode",
            &format!("time={}", now_ms() / 1000),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut metric: BTreeMap<String, String> =
                    serde_json::from_value(s["metric"].clone()).unwrap();
                metric.remove("captured_by");
                let points = s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                        (t, p[1].as_str().unwrap().parse::<f64>().unwrap())
                    })
                    .collect();
                (format!("{metric:?}"), points)
            })
            .collect()
    };
    let got = raw(&dst.url(), r#"{captured_by="cpu_context"}"#);
    assert_eq!(got.len(), 2, "{got:?}");
    let first = got.values().flat_map(|p| p.keys()).min().copied().unwrap();
    let last = got.values().flat_map(|p| p.keys()).max().copied().unwrap();
    assert!(
        first <= spike.0 - 3 * 60_000 && last >= spike.1 + 60_000,
        "window {first} .. {last} around the spike {spike:?}"
    );
    assert_eq!(
        got,
        window(&raw(&src.url(), r#"{instance="a"}"#), first, last + 1)
    );
}

#[test]
fn limits_are_counted_and_a_down_destination_gets_the_capture_later() {
    let src = Vm::start();
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 3_600_000;
    let mut lines = String::new();
    for i in 0..5 {
        let samples: Vec<(i64, f64)> = raw_times(t0, t0 + 10 * 60_000, 10_000, i)
            .into_iter()
            .map(|t| (t, i as f64))
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "up"), ("job", "x"), ("i", &i.to_string())],
            &samples,
        ));
        lines.push('\n');
    }
    src.import(&lines);
    let mut debug = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "datasource: {{url: '{}'}}\nstorage: {{path: '{{dir}}/data'}}\ndestinations:\n{}",
        src.url(),
        vm_destination("debug", &debug, "")
    );
    write_files(dir.path(), &[("run.yml", &config)]);
    let cfg = dir.path().join("run.yml").display().to_string();
    let (from, to) = (
        (t0 / 1000).to_string(),
        ((t0 + 10 * 60_000) / 1000).to_string(),
    );
    let capture = |extra: &[&str]| {
        let mut args = vec![
            "capture",
            "-c",
            &cfg,
            "--match",
            r#"{job="x"}"#,
            "--from",
            &from,
            "--to",
            &to,
            "--destination",
            "debug",
        ];
        args.extend_from_slice(extra);
        spillway(&args)
    };

    // max_series: three of five series, said so.
    let run = capture(&["--name", "few", "--max-series", "3"]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("truncated: capture few"),
        "{}",
        run.describe()
    );
    assert!(run.stdout().contains("3 series"), "{}", run.describe());
    debug.flush();
    assert_eq!(debug.series_count(r#"{job="x"}"#), 3);

    // max_samples: exactly that many.
    let run = capture(&[
        "--name",
        "some",
        "--max-samples",
        "50",
        "--label",
        "run=some",
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("max_samples (50) reached"),
        "{}",
        run.describe()
    );
    debug.flush();
    let (got, _) = export_points(&debug.url(), r#"{run="some"}"#, &[]);
    assert_eq!(got.values().map(BTreeMap::len).sum::<usize>(), 50);

    // The destination is down: the capture waits in its queue.
    debug.server.stop_gracefully();
    let run = capture(&[
        "--name",
        "later",
        "--label",
        "run=later",
        "--drain-timeout",
        "2s",
    ]);
    run.assert_code(0);
    assert!(run.stdout().contains("still queued"), "{}", run.describe());
    debug.server.start_again();
    debug.server.wait_ready("/health");
    // The next run delivers it; the range is not copied a second time.
    let run = capture(&[
        "--name",
        "later",
        "--label",
        "run=later",
        "--drain-timeout",
        "30s",
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("0 samples in 0 chunks"),
        "{}",
        run.describe()
    );
    let (source, _) = export_points(&src.url(), r#"{job="x"}"#, &[]);
    debug.flush();
    let (got, total) = export_points(&debug.url(), r#"{run="later"}"#, &["run"]);
    assert_eq!(got, window(&source, t0, t0 + 10 * 60_000 + 1));
    assert_eq!(total, got.values().map(BTreeMap::len).sum::<usize>());
}

#[test]
fn max_series_truncation_is_counted_by_run() {
    let src = Vm::start();
    let debug = Vm::start();
    let t0 = now_ms();
    let mut lines = String::new();
    for i in 0..4 {
        let samples: Vec<(i64, f64)> = raw_times(t0 - 60_000, t0 + 120_000, 1000, i)
            .into_iter()
            .map(|t| (t, if i == 0 && t > t0 + 4_000 { 99.0 } else { 1.0 }))
            .collect();
        lines.push_str(&vm_line(
            &[
                ("__name__", "load"),
                ("host", "h"),
                ("core", &i.to_string()),
            ],
            &samples,
        ));
        lines.push('\n');
    }
    src.import(&lines);
    let config = format!(
        "datasource: {{url: '{}'}}
rule_files: ['rules.yml']
evaluation: {{eval_delay: 0s}}
storage: {{path: '{{dir}}/data'}}
destinations:
{}
captures:
  - name: host
    match: '{{host=\"{{{{ $labels.host }}}}\"}}'
    before: 10s
    chunk: 5s
    max_series: 2
    destinations: [debug]
",
        src.url(),
        vm_destination("debug", &debug, "")
    );
    let rules = "groups:\n- name: g\n  interval: 2s\n  rules:\n  - record: load_high\n    expr: load > 50\n";
    let sp = SpillwayRun::start_files(&[("run.yml", &config), ("rules.yml", rules)], &[]);
    wait_for(
        "the truncation to be counted",
        Duration::from_secs(60),
        || {
            sp.metric(
                "spillway_captures_truncated_total",
                &[("capture", "host"), ("reason", "max_series")],
            ) == 1.0
        },
    );
    let c = captures(&sp)
        .into_iter()
        .find(|c| c["state"] == "open")
        .unwrap();
    assert_eq!(c["series"], 2, "{c}");
    assert_eq!(c["truncated"][0], "max_series", "{c}");
    wait_for("the two series to arrive", Duration::from_secs(30), || {
        debug.flush();
        debug.series_count(r#"{__name__="load"}"#) == 2
    });
    // Later chunks admit no third series.
    let copied = |sp: &SpillwayRun| {
        captures(sp)
            .into_iter()
            .find(|c| c["state"] == "open")
            .map_or(0, |c| c["copied_seconds"].as_i64().unwrap())
    };
    let before = copied(&sp);
    wait_for("another chunk", Duration::from_secs(30), || {
        copied(&sp) >= before + 5
    });
    sp.wait_delivered(Duration::from_secs(30));
    debug.flush();
    assert_eq!(debug.series_count(r#"{__name__="load"}"#), 2);
}

#[test]
fn bad_capture_config_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[(
            "run.yml",
            "datasource: {url: 'http://127.0.0.1:1'}
destinations:
  - name: debug
    url: http://127.0.0.1:2
captures:
  - name: a
    match: '{instance=\"{{ $labels.instance }\"}'
    destinations: [debug, nowhere]
    before: -1m
  - name: a
    match: '{job=~\".*\"}'
    after: 7h
    destinations: [debug]
",
        )],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&["run", "-c", &cfg, "--dry-run"]);
    run.assert_code(2);
    let err = run.stderr();
    for needle in [
        ":7: captures[0].match:",
        ":8: captures[0].destinations: unknown destination \"nowhere\"",
        ":9: captures[0].before: \"-1m\" is negative",
        ":10: captures[1].name: \"a\" is already the name of captures[0]",
        ":11: captures[1].match: \"{job=~\\\".*\\\"}\": selector",
        ":12: captures[1].after: 7h is over max_duration (6h)",
    ] {
        assert!(
            err.contains(needle),
            "{needle} missing:\n{}",
            run.describe()
        );
    }
}

#[test]
fn without_export_or_remote_read_captures_fall_back_to_query_range_and_say_so() {
    let src = Vm::start();
    let debug = Vm::start();
    let auth = common::VmAuth::start(&format!(
        "users:\n- username: \"bob\"\n  password: \"s3cret\"\n  url_map:\n  - src_paths: [\"/api/v1/query\", \"/api/v1/query_range\", \"/api/v1/series\"]\n    url_prefix: \"{}\"\n",
        src.url()
    ));
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 3_600_000;
    let samples: Vec<(i64, f64)> = raw_times(t0 - 60_000, t0 + 6 * 60_000, 10_000, 3)
        .into_iter()
        .map(|t| (t, (t / 10_000 % 7) as f64))
        .collect();
    src.import(&vm_line(&[("__name__", "up"), ("job", "x")], &samples));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "datasource: {{url: '{}', basic_auth: {{username: bob, password: s3cret}}}}\nstorage: {{path: '{{dir}}/data'}}\ndestinations:\n{}",
        auth.url(),
        vm_destination("debug", &debug, "")
    );
    write_files(dir.path(), &[("run.yml", &config)]);
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&[
        "capture",
        "-c",
        &cfg,
        "--match",
        r#"{job="x"}"#,
        "--from",
        &(t0 / 1000).to_string(),
        "--to",
        &((t0 + 5 * 60_000) / 1000).to_string(),
        "--destination",
        "debug",
    ]);
    run.assert_code(0);
    let out = run.stdout();
    assert!(
        out.contains("captures fall back to query_range at 15s"),
        "{}",
        run.describe()
    );
    assert!(!out.contains("s3cret"), "{out}");
    debug.flush();
    let (got, _) = export_points(&debug.url(), r#"{job="x"}"#, &[]);
    let times: Vec<i64> = got.values().flat_map(|p| p.keys().copied()).collect();
    // One point per 15s step of the range, on the step grid.
    assert_eq!(times.len(), 21, "{times:?}");
    assert!(times.iter().all(|t| t % 15_000 == 0), "{times:?}");
}

#[test]
fn a_selector_over_the_sources_series_limit_is_truncated_not_failed() {
    // The source refuses to list more than 4 series (-search.maxSeries).
    let src = Vm::start_with(&["-search.maxSeries=4"]);
    let debug = Vm::start();
    let now = now_ms();
    let t0 = now - now.rem_euclid(60_000) - 3_600_000;
    let mut lines = String::new();
    for i in 0..6 {
        let samples: Vec<(i64, f64)> = raw_times(t0, t0 + 5 * 60_000, 10_000, i)
            .into_iter()
            .map(|t| (t, i as f64))
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "up"), ("job", "many"), ("i", &i.to_string())],
            &samples,
        ));
        lines.push('\n');
    }
    src.import(&lines);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "datasource: {{url: '{}'}}\nstorage: {{path: '{{dir}}/data'}}\ndestinations:\n{}",
        src.url(),
        vm_destination("debug", &debug, "")
    );
    write_files(dir.path(), &[("run.yml", &config)]);
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&[
        "capture",
        "-c",
        &cfg,
        "--match",
        r#"{job="many"}"#,
        "--from",
        &(t0 / 1000).to_string(),
        "--to",
        &((t0 + 5 * 60_000) / 1000).to_string(),
        "--destination",
        "debug",
        "--max-series",
        "3",
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("more than max_series (3) series"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr()
            .contains("match more series than the source lists"),
        "{}",
        run.describe()
    );
    debug.flush();
    assert_eq!(debug.series_count(r#"{job="many"}"#), 3);
}
