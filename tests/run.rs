//! `spillway run`, `replay` and `rules` through the binary, against real
//! VictoriaMetrics servers: a source holding fixtures and destinations that
//! receive what the rules export. Rules evaluate every 2s with no
//! evaluation delay (the sources run with `-search.latencyOffset=0s`), so
//! each test sees several evaluations within seconds.

mod common;

use common::{http_get, post_status, series_points, spillway, vm_line, wait_for, SpillwayRun, Vm};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `temp{sensor}` one sample a second over `[from, to]`, value by `f(sensor, t)`.
fn temp_lines(sensors: &[&str], from: i64, to: i64, f: impl Fn(&str, i64) -> f64) -> String {
    let mut out = String::new();
    for s in sensors {
        let samples: Vec<(i64, f64)> = (from / 1000..=to / 1000)
            .map(|t| (t * 1000, f(s, t * 1000)))
            .collect();
        out.push_str(&vm_line(&[("__name__", "temp"), ("sensor", s)], &samples));
        out.push('\n');
    }
    out
}

/// A source with `temp` from 10 minutes ago to 3 minutes ahead, saved to
/// disk (a snapshot), so that a SIGKILL of the source does not lose it.
fn source_with(sensors: &[&str], f: impl Fn(&str, i64) -> f64) -> Vm {
    let vm = Vm::start();
    let now = now_ms();
    vm.import(&temp_lines(sensors, now - 600_000, now + 180_000, f));
    http_get(&format!("{}/snapshot/create", vm.url()));
    vm
}

fn config(source: &str, destinations: &str, extra: &str) -> String {
    format!(
        "datasource: {{url: '{source}', timeout: 5s}}
rule_files: ['rules/*.yml']
evaluation: {{eval_delay: 0s}}
storage: {{path: '{{dir}}/queues'}}
{extra}
destinations:
{destinations}"
    )
}

/// A remote-write destination keeping series whose `export_target` is `target`.
/// Its hour-long `flush_interval` means rule results only leave because
/// each group iteration ends by telling the destinations it is done.
fn destination(name: &str, vm: &Vm, target: &str) -> String {
    format!(
        "  - name: {name}
    url: {}/api/v1/write
    flush_interval: 1h
    relabel_configs:
      - {{action: keep, source_labels: [export_target], regex: {target}}}
",
        vm.url()
    )
}

/// The rule state of `group`/`rule` in `/api/v1/rules`.
fn rule(api: &serde_json::Value, group: &str, rule: &str) -> serde_json::Value {
    api["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {api}"))["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .unwrap_or_else(|| panic!("no rule {rule} in {group}"))
        .clone()
}

fn updates(rule: &serde_json::Value) -> usize {
    rule["updates"].as_array().map_or(0, |u| u.len())
}

const ROUTED_RULES: &str = "groups:
- name: hot
  interval: 2s
  labels: {team: ops}
  rules:
  - record: 'temp:hot'
    expr: temp > 60
    labels: {export_target: a, severity: critical}
- name: cold
  interval: 2s
  rules:
  - record: 'temp:cold'
    expr: temp < 30
    labels: {export_target: b}
";

#[test]
fn breaches_reach_their_destination_with_labels_and_stale_markers() {
    // s0 is hot for the next 8 seconds only, s1 always, s2 is cold.
    let cooled_at = now_ms() + 8_000;
    let src = source_with(&["s0", "s1", "s2"], move |s, t| match s {
        "s0" if t < cooled_at => 70.0,
        "s0" => 40.0,
        "s1" => 75.0,
        _ => 20.0,
    });
    let (a, b) = (Vm::start(), Vm::start());
    let destinations = destination("a", &a, "a") + &destination("b", &b, "b");
    // The engine adds `cluster` to rule results; the global rule removes it
    // from `temp:cold` and the router must not put it back.
    let extra = "external_labels: {cluster: test}
global_relabel_configs:
  - {target_label: via, replacement: spillway}
  - {action: labeldrop, regex: cluster, if: '{__name__=\"temp:cold\"}'}";
    let sp = SpillwayRun::start_files(
        &[
            ("run.yml", &config(&src.url(), &destinations, extra)),
            ("rules/routed.yml", ROUTED_RULES),
        ],
        &[],
    );
    let s0 = r#"temp:hot{cluster="test", export_target="a", sensor="s0", severity="critical", team="ops", via="spillway"}"#;
    wait_for(
        "the stale marker of s0 at destination a",
        Duration::from_secs(40),
        || {
            series_points(&a, r#"{__name__="temp:hot"}"#)
                .get(s0)
                .is_some_and(|p| p.last().is_some_and(|x| x.1 == "stale"))
        },
    );
    let got_a = series_points(&a, r#"{__name__=~"temp:.*"}"#);
    let got_b = series_points(&b, r#"{__name__=~"temp:.*"}"#);
    let keys_a: Vec<&str> = got_a.keys().map(String::as_str).collect();
    assert_eq!(
        keys_a,
        [
            s0,
            r#"temp:hot{cluster="test", export_target="a", sensor="s1", severity="critical", team="ops", via="spillway"}"#
        ],
        "destination a holds the hot series only"
    );
    let keys_b: Vec<&str> = got_b.keys().map(String::as_str).collect();
    assert_eq!(
        keys_b,
        [r#"temp:cold{export_target="b", sensor="s2", via="spillway"}"#],
        "destination b holds the cold series, without the dropped external label"
    );
    // Samples on the 2s grid, values of the fixture, one stale marker after
    // the last hot point of s0 and nothing after it.
    let s0_points = &got_a[s0];
    assert!(
        s0_points.iter().all(|(t, _)| t % 2000 == 0),
        "{s0_points:?}"
    );
    let (stale_at, _) = s0_points.last().unwrap();
    assert!(
        *stale_at >= cooled_at,
        "stale at {stale_at}, cooled at {cooled_at}"
    );
    assert!(s0_points[..s0_points.len() - 1]
        .iter()
        .all(|(t, v)| v == "70" && *t < cooled_at));
    assert!(s0_points.len() >= 3, "{s0_points:?}");

    // /api/v1/rules in vmalert's shape.
    let api = sp.rules();
    assert_eq!(api["status"], "success");
    let names: Vec<&str> = api["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hot", "cold"]);
    let g = &api["data"]["groups"][0];
    assert_eq!(g["interval"], 2.0);
    assert_eq!(g["type"], "prometheus");
    assert!(g["file"].as_str().unwrap().ends_with("rules/routed.yml"));
    assert!(g["id"].as_str().is_some());
    let hot = rule(&api, "hot", "temp:hot");
    assert_eq!(hot["type"], "recording");
    assert_eq!(hot["health"], "ok");
    assert_eq!(hot["lastError"], "");
    assert_eq!(hot["lastSamples"], 1, "only s1 is hot now");
    assert_eq!(hot["query"], "temp > 60");
    assert_eq!(hot["labels"]["team"], "ops");
    assert_eq!(hot["labels"]["cluster"], "test");
    assert_ne!(hot["lastEvaluation"], "0001-01-01T00:00:00Z");
    assert!(hot["evaluationTime"].as_f64().unwrap() >= 0.0);
    assert!(updates(&hot) >= 4);
    let alerts_only = http_get(&format!("{}/api/v1/rules?type=alert", sp.url()));
    let v: serde_json::Value = serde_json::from_str(&alerts_only).unwrap();
    assert!(v["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .is_empty());

    // Self-metrics: the engine's, the destinations', the reload state.
    let m = sp.metrics_text();
    for needle in [
        "spillway_rule_evaluations_total{",
        "spillway_group_iteration_duration_seconds_bucket{",
        "spillway_samples_sent_total{destination=\"a\"}",
        "spillway_queue_pending_samples{destination=\"b\"}",
        "spillway_config_last_reload_successful 1",
        "spillway_config_reloads_total{status=\"failure\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from /metrics:\n{m}");
    }
    // The web page and its assets are served.
    let page = http_get(&format!("{}/", sp.url()));
    assert!(page.contains("<title>spillway run</title>") && page.contains("ui/app.js"));
    assert!(http_get(&format!("{}/ui/app.js", sp.url())).contains("api/v1/rules"));
}

const KEEP_RULES: &str = "groups:
- name: keep
  interval: 2s
  rules:
  - record: 'temp:keep'
    expr: temp > 60
    labels: {export_target: a}
";
const CHANGE_RULES_V1: &str = "groups:
- name: change
  interval: 2s
  rules:
  - record: 'temp:change'
    expr: temp > 60
    labels: {export_target: a}
";

#[test]
fn reload_refuses_a_bad_rule_file_and_applies_a_good_one() {
    let src = source_with(&["s0"], |_, _| 70.0);
    let (a, a2) = (Vm::start(), Vm::start());
    let run_v1 = config(&src.url(), &destination("a", &a, "a"), "");
    let sp = SpillwayRun::start_files(
        &[
            ("run.yml", &run_v1),
            ("rules/keep.yml", KEEP_RULES),
            ("rules/change.yml", CHANGE_RULES_V1),
        ],
        &[],
    );
    wait_for(
        "two evaluations of each group",
        Duration::from_secs(20),
        || {
            let api = sp.rules();
            updates(&rule(&api, "keep", "temp:keep")) >= 2
                && updates(&rule(&api, "change", "temp:change")) >= 2
        },
    );

    // A rule file that does not check: refused with file:line, old rules run on.
    sp.write(&[(
        "rules/change.yml",
        "groups:\n- name: change\n  interval: 2s\n  rules:\n  - record: 'temp:change'\n    expr: temp > 60\n    bad_field: 5m\n",
    )]);
    let (code, body) = post_status(&format!("{}/-/reload", sp.url()), b"");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("rules/change.yml:7:"), "{body}");
    assert!(body.contains("previous config keeps running"), "{body}");
    let m = sp.metrics_text();
    assert!(
        m.contains("spillway_config_last_reload_successful 0"),
        "{m}"
    );
    assert!(
        m.contains("spillway_config_reloads_total{status=\"failure\"} 1"),
        "{m}"
    );
    let err_line = m
        .lines()
        .find(|l| l.starts_with("spillway_config_last_reload_error{"))
        .unwrap_or_else(|| panic!("no reload error metric:\n{m}"));
    assert!(
        err_line.contains("change.yml:7") && err_line.ends_with(" 1"),
        "{err_line}"
    );
    // SIGHUP goes the same way.
    sp.signal("HUP");
    wait_for(
        "the SIGHUP reload to be refused",
        Duration::from_secs(10),
        || {
            sp.metrics_text()
                .contains("spillway_config_reloads_total{status=\"failure\"} 2")
        },
    );
    // The old rules keep running.
    let before = sp.rules();
    let keep_before = rule(&before, "keep", "temp:keep");
    let change_before = rule(&before, "change", "temp:change");
    assert_eq!(change_before["health"], "ok");
    let mut after = sp.rules();
    wait_for(
        "both old rules to evaluate again",
        Duration::from_secs(20),
        || {
            after = sp.rules();
            rule(&after, "keep", "temp:keep")["lastEvaluation"] != keep_before["lastEvaluation"]
                && rule(&after, "change", "temp:change")["lastEvaluation"]
                    != change_before["lastEvaluation"]
        },
    );
    let oldest_keep_update = |api: &serde_json::Value| -> String {
        rule(api, "keep", "temp:keep")["updates"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first_keep = oldest_keep_update(&after);

    // A good change: one group changed, one added, one destination added.
    let run_v2 = config(
        &src.url(),
        &(destination("a", &a, "a") + &destination("a2", &a2, "a")),
        "",
    );
    sp.write(&[
        ("run.yml", &run_v2),
        (
            "rules/change.yml",
            // A group label: the rule keeps its id, so its state carries over.
            &CHANGE_RULES_V1.replace("  interval: 2s\n", "  interval: 2s\n  labels: {version: '2'}\n"),
        ),
        (
            "rules/new.yml",
            "groups:\n- name: new\n  interval: 2s\n  rules:\n  - record: 'temp:new'\n    expr: temp\n    labels: {export_target: a}\n",
        ),
    ]);
    let reloaded_at = now_ms();
    let (code, body) = post_status(&format!("{}/-/reload", sp.url()), b"");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("groups: 1 kept, 1 restarted, 1 started, 0 stopped"),
        "{body}"
    );
    assert!(
        body.contains("destinations: 1 kept, 0 rebuilt, 1 added, 0 removed"),
        "{body}"
    );
    let m = sp.metrics_text();
    assert!(
        m.contains("spillway_config_last_reload_successful 1"),
        "{m}"
    );
    assert!(
        m.contains("spillway_config_reloads_total{status=\"success\"} 1"),
        "{m}"
    );
    assert!(!m.contains("spillway_config_last_reload_error{"), "{m}");
    let api = sp.rules();
    let names: Vec<&str> = api["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["change", "keep", "new"], "groups in file order");
    // The unchanged group kept its state: its history reaches back before the reload.
    assert_eq!(oldest_keep_update(&api), first_keep);

    // The change applies: new labels, the new group, the new destination.
    wait_for(
        "the changed rule's new series at a2",
        Duration::from_secs(20),
        || {
            let got = series_points(&a2, r#"{__name__=~"temp:.*"}"#);
            got.keys()
                .any(|k| k.starts_with("temp:change{") && k.contains(r#"version="2""#))
                && got.keys().any(|k| k.starts_with("temp:new{"))
        },
    );
    let at_a = series_points(&a, r#"{__name__="temp:change"}"#);
    let v2 = at_a
        .iter()
        .find(|(k, _)| k.contains(r#"version="2""#))
        .expect("the new version at a");
    assert!(
        v2.1.iter().all(|(t, _)| *t >= reloaded_at - 4_000),
        "{v2:?}"
    );
    // The old version ended with a stale marker.
    let v1 = at_a
        .iter()
        .find(|(k, _)| !k.contains("version"))
        .expect("the old version at a");
    assert_eq!(v1.1.last().unwrap().1, "stale", "{v1:?}");
}

#[test]
fn sigkill_while_a_destination_is_down_loses_nothing() {
    let src = source_with(&["s0", "s1"], |_, _| 70.0);
    let mut dst = Vm::start();
    dst.server.stop();
    let rules = "groups:\n- name: g\n  interval: 2s\n  rules:\n  - record: 'temp:hot'\n    expr: temp > 60\n    labels: {export_target: a}\n";
    let mut sp = SpillwayRun::start_files(
        &[
            (
                "run.yml",
                &config(&src.url(), &destination("a", &dst, "a"), ""),
            ),
            ("rules/g.yml", rules),
        ],
        &[],
    );
    wait_for("5 evaluations queued", Duration::from_secs(30), || {
        updates(&rule(&sp.rules(), "g", "temp:hot")) >= 5
    });
    // Every evaluation the API shows as exported is on disk by now.
    let api = sp.rules();
    let exported: BTreeSet<i64> = rule(&api, "g", "temp:hot")["updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["exported"].as_u64().unwrap_or(0) == 2)
        .map(|u| {
            let at = u["at"].as_str().unwrap();
            chrono_ms(at)
        })
        .collect();
    assert!(exported.len() >= 5, "{api}");
    let pending = sp.destinations()["a"]["pending_samples"].as_u64().unwrap();
    assert!(pending >= 10, "pending {pending}");
    sp.server.stop(); // SIGKILL
    dst.server.restart();
    dst.server.wait_ready("/health");
    sp.restart();
    wait_for(
        "every queued evaluation at the destination",
        Duration::from_secs(30),
        || {
            let got = series_points(&dst, r#"{__name__="temp:hot"}"#);
            got.len() == 2
                && got
                    .values()
                    .all(|p| exported.iter().all(|t| p.iter().any(|(pt, _)| pt == t)))
        },
    );
}

/// `2024-01-02T03:04:05Z` (whole or fractional seconds) → unix ms.
fn chrono_ms(rfc3339: &str) -> i64 {
    spillway::model::time::parse_timestamp_ms(rfc3339).unwrap()
}

#[test]
fn source_outage_is_caught_up_through_the_binary() {
    let mut src = source_with(&["s0"], |_, t| (t / 1000 % 100) as f64);
    let dst = Vm::start();
    let rules = "groups:\n- name: g\n  interval: 2s\n  rules:\n  - record: 'temp:all'\n    expr: temp\n    labels: {export_target: a}\n";
    let sp = SpillwayRun::start_files(
        &[
            (
                "run.yml",
                &config(&src.url(), &destination("a", &dst, "a"), ""),
            ),
            ("rules/g.yml", rules),
        ],
        &[],
    );
    wait_for("the first evaluations", Duration::from_secs(20), || {
        updates(&rule(&sp.rules(), "g", "temp:all")) >= 2
    });
    src.server.stop();
    let down_at = now_ms();
    wait_for("the rule to fail", Duration::from_secs(20), || {
        rule(&sp.rules(), "g", "temp:all")["health"] == "err"
    });
    // The outage length is the thing under test: it must span several
    // 2s timestamps for the catch-up below to have something to do.
    std::thread::sleep(Duration::from_millis(
        (down_at + 12_000 - now_ms()).clamp(0, 12_000) as u64,
    ));
    src.server.restart();
    src.server.wait_ready("/health");
    let up_at = now_ms();
    let mut last = BTreeMap::new();
    wait_for(
        "evaluations after the outage",
        Duration::from_secs(30),
        || {
            last = series_points(&dst, r#"{__name__="temp:all"}"#);
            last.values()
                .next()
                .is_some_and(|p| p.last().is_some_and(|(t, _)| *t >= up_at + 2_000))
        },
    );
    let points = last.values().next().unwrap();
    let stamps: Vec<i64> = points.iter().map(|p| p.0).collect();
    let want: Vec<i64> = (0..)
        .map(|k| stamps[0] + 2_000 * k)
        .take_while(|t| t <= stamps.last().unwrap())
        .collect();
    assert_eq!(stamps, want, "every 2s timestamp, the outage included");
    assert!(
        stamps
            .iter()
            .filter(|t| **t > down_at && **t < up_at)
            .count()
            >= 5,
        "the outage covered several timestamps"
    );
    for (t, v) in points {
        // VictoriaMetrics answers a query for T that arrives within ~1 s of T
        // (likely right after its restart, or under load) as of T-1s while
        // stamping T; the value at T-1s is the server's doing, not ours.
        let at = |ms: i64| ((ms / 1000 % 100) as f64).to_string();
        assert!(
            v == &at(*t) || v == &at(t - 1000),
            "@{t}: {v}, expected {}",
            at(*t)
        );
    }
    // The outage shows in the metrics as failed evaluations. Whether an
    // iteration also started late (`spillway_group_iterations_missed_total`)
    // depends on how long the refused queries took, so it is not asserted.
    let m = sp.metrics_text();
    assert!(
        m.lines()
            .any(|l| l.starts_with("spillway_rule_evaluation_errors_total{")
                && l.contains("temp:all")
                && !l.ends_with(" 0")),
        "{m}"
    );
}

/// Issue 11, item 5: spillway frozen with SIGSTOP and resumed just after an
/// evaluation timestamp T became due evaluated T at once; VictoriaMetrics
/// answers a query for T sent before T+1s as of T-1s, so the value written
/// at T was the source's value at T-1s. Resumed 0.3s after T, spillway must
/// wait its wake margin and write the source's value at T, and at every
/// caught-up timestamp.
#[test]
fn a_paused_process_writes_the_source_value_at_the_resume_timestamp() {
    // A value that changes every second: an answer as of T-1s shows.
    let src = source_with(&["s0"], |_, t| (t / 1000 % 100) as f64);
    let dst = Vm::start();
    let rules = "groups:\n- name: g\n  interval: 2s\n  rules:\n  - record: 'temp:all'\n    expr: temp\n    labels: {export_target: a}\n";
    let sp = SpillwayRun::start_files(
        &[
            (
                "run.yml",
                &config(&src.url(), &destination("a", &dst, "a"), ""),
            ),
            ("rules/g.yml", rules),
        ],
        &[],
    );
    wait_for("the first evaluations", Duration::from_secs(20), || {
        updates(&rule(&sp.rules(), "g", "temp:all")) >= 2
    });
    // Two pauses, each stopping 0.3-0.6s after a 2s grid timestamp T0 (so
    // T0's wake-up, at T0+1.2s, passes while stopped) and resuming 0.3-0.6s
    // after a later timestamp T, inside T's wake margin (1.2s): one of ~2s
    // (T0 and T to evaluate), one of ~13s (a longer catch-up, then T).
    let phase = || (300..600).contains(&now_ms().rem_euclid(2_000));
    let mut resumed = Vec::new();
    for pause in [Duration::ZERO, Duration::from_secs(12)] {
        wait_for("0.3s past a timestamp", Duration::from_secs(5), phase);
        sp.signal("STOP");
        // The pause is the thing under test (a frozen process).
        std::thread::sleep(pause + Duration::from_secs(1));
        wait_for("0.3s past a timestamp", Duration::from_secs(5), phase);
        let at = now_ms();
        sp.signal("CONT");
        resumed.push(at - at.rem_euclid(2_000));
        std::thread::sleep(Duration::from_secs(3));
    }
    let resume_ts = *resumed.last().unwrap();
    let mut last = BTreeMap::new();
    wait_for(
        "evaluations after the resume",
        Duration::from_secs(30),
        || {
            last = series_points(&dst, r#"{__name__="temp:all"}"#);
            last.values()
                .next()
                .is_some_and(|p| p.last().is_some_and(|(t, _)| *t >= resume_ts + 4_000))
        },
    );
    let points = last.values().next().unwrap();
    let stamps: Vec<i64> = points.iter().map(|p| p.0).collect();
    let want: Vec<i64> = (0..)
        .map(|k| stamps[0] + 2_000 * k)
        .take_while(|t| t <= stamps.last().unwrap())
        .collect();
    assert_eq!(stamps, want, "every 2s timestamp, the pause included");
    for ts in &resumed {
        assert!(
            stamps.contains(ts),
            "{ts} (a resume timestamp) is missing: {stamps:?}"
        );
    }
    let at = |ms: i64| ((ms / 1000 % 100) as f64).to_string();
    let wrong: Vec<String> = points
        .iter()
        .filter(|(t, v)| v != &at(*t))
        .map(|(t, v)| {
            let which = if resumed.contains(t) { " (resume)" } else { "" };
            format!("@{t}{which}: {v}, source has {}", at(*t))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "values differ from the source's:\n{}\nlog:\n{}",
        wrong.join("\n"),
        sp.server.log()
    );
}

#[test]
fn replay_over_six_hours_exports_exactly_the_breaching_points() {
    let src = Vm::start();
    let dst = Vm::start();
    let now = now_ms();
    let start = now - now.rem_euclid(3_600_000) - 8 * 3_600_000;
    let end = start + 6 * 3_600_000;
    let value = |i: i64, t: i64| -> f64 { 40.0 + ((t / 60_000 + 7 * i).rem_euclid(30)) as f64 };
    let mut lines = String::new();
    for i in 0..3 {
        let sensor = format!("s{i}");
        let samples: Vec<(i64, f64)> = (0..=6 * 60 + 30)
            .map(|m| start - 10 * 60_000 + m * 60_000)
            .map(|t| (t, value(i, t)))
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "temp"), ("sensor", &sensor)],
            &samples,
        ));
        lines.push('\n');
    }
    src.import(&lines);
    let rules = "groups:\n- name: backfill\n  interval: 1m\n  labels: {origin: replay}\n  rules:\n  - record: 'temp:high'\n    expr: temp > 60\n    labels: {export_target: a}\n";
    let dir = tempfile::tempdir().unwrap();
    common::write_files(
        dir.path(),
        &[
            (
                "run.yml",
                &config(
                    &src.url(),
                    &destination("a", &dst, "a"),
                    "external_labels: {cluster: test}",
                ),
            ),
            ("rules/backfill.yml", rules),
        ],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let from = (start / 1000).to_string();
    let to = (end / 1000).to_string();
    let run = spillway(&[
        "replay",
        "-c",
        &cfg,
        "--from",
        &from,
        "--to",
        &to,
        "--max-datapoints-per-query",
        "31",
    ]);
    run.assert_code(0);
    let out = run.stdout();
    assert!(
        out.contains("1 group, 1 rule, 12 range requests"),
        "{}",
        run.describe()
    );
    assert!(out.contains("destination a:"), "{out}");

    let mut want: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for i in 0..3 {
        let key = format!(
            r#"temp:high{{cluster="test", export_target="a", origin="replay", sensor="s{i}"}}"#
        );
        let points: Vec<(i64, String)> = (0..=6 * 60)
            .map(|m| start + m * 60_000)
            .filter(|t| value(i, *t) > 60.0)
            .map(|t| (t, value(i, t).to_string()))
            .collect();
        want.insert(key, points);
    }
    let got = series_points(&dst, r#"{__name__="temp:high"}"#);
    assert_eq!(got, want);
    let total: usize = want.values().map(Vec::len).sum();
    assert!(out.contains(&format!("{total} samples exported")), "{out}");
}

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/vmalert-rules"
);

#[test]
fn rules_check_on_the_vmalert_corpus() {
    let json = std::fs::read_to_string(format!("{CORPUS}/EXPECTED.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    // Files only a query parser rejects are accepted by design (see
    // src/run/rules/tests.rs); the rest must be judged as vmalert judges.
    let parser_only = |e: &serde_json::Value| {
        e["needs"].as_array().is_some_and(|n| {
            n.iter()
                .any(|x| x.as_str().is_some_and(|x| x != "template-parse"))
        })
    };
    let path = |e: &serde_json::Value| format!("{CORPUS}/{}", e["file"].as_str().unwrap());
    let flagged = |e: &serde_json::Value, flag: &str| {
        e["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == flag))
    };
    let vlogs = "-rule.defaultRuleType=vlogs";
    let good: Vec<String> = entries
        .iter()
        .filter(|e| e["valid"] == true && !flagged(e, vlogs))
        .map(path)
        .collect();
    let good_vlogs: Vec<String> = entries
        .iter()
        .filter(|e| e["valid"] == true && flagged(e, vlogs))
        .map(path)
        .collect();
    let bad: Vec<String> = entries
        .iter()
        .filter(|e| e["valid"] == false && !parser_only(e))
        .map(path)
        .collect();
    assert!(good.len() > 20 && !good_vlogs.is_empty() && bad.len() > 20);

    let mut args = vec!["rules", "check"];
    args.extend(good.iter().map(String::as_str));
    let run = spillway(&args);
    run.assert_code(0);
    assert!(
        run.stdout().contains(&format!(
            "{} files checked: {} OK, 0 with errors",
            good.len(),
            good.len()
        )),
        "{}",
        run.describe()
    );
    let mut args = vec!["rules", "check", "--rule-type", "vlogs"];
    args.extend(good_vlogs.iter().map(String::as_str));
    spillway(&args).assert_code(0);

    // Every bad file is reported, each with file:line, all in one run.
    let mut args = vec!["rules", "check"];
    args.extend(bad.iter().map(String::as_str));
    let run = spillway(&args);
    run.assert_code(1);
    let err = run.stderr();
    for f in &bad {
        let with_line = err.lines().any(|l| {
            l.strip_prefix(f.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        });
        assert!(with_line, "{f} is not reported with file:line:\n{err}");
    }
    assert!(
        run.stdout().contains(&format!("{} with errors", bad.len())),
        "{}",
        run.describe()
    );
    // Good and bad together: the good ones still say OK, exit 1.
    let run = spillway(&["rules", "check", &good[0], &bad[0], "/nonexistent/x.yml"]);
    run.assert_code(1);
    assert!(
        run.stdout().contains(&format!("{}: OK", good[0])),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr().contains("/nonexistent/x.yml: no such file"),
        "{}",
        run.describe()
    );
}

/// Issue 11, item 4 (PromQL side): `rules check --datasource URL` has a
/// real VictoriaMetrics parse every expression, so the corpus files only a
/// MetricsQL parser rejects are rejected too, and the valid ones still pass.
#[test]
fn rules_check_with_a_datasource_has_the_server_parse_each_expr() {
    let vm = Vm::start();
    let json = std::fs::read_to_string(format!("{CORPUS}/EXPECTED.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let path = |e: &serde_json::Value| format!("{CORPUS}/{}", e["file"].as_str().unwrap());
    let metricsql_only: Vec<String> = entries
        .iter()
        .filter(|e| {
            e["valid"] == false
                && e["needs"]
                    .as_array()
                    .is_some_and(|n| n.iter().all(|x| x == "metricsql-parse") && !n.is_empty())
                && e["flags"].is_null()
        })
        .map(path)
        .collect();
    assert!(!metricsql_only.is_empty());
    let url = vm.url();
    let mut judged_by_the_server = 0;
    for f in &metricsql_only {
        // Accepted without a server (no Rust MetricsQL parser)...
        let alone = spillway(&["rules", "check", f]);
        if alone.code() == 1 {
            // ...unless something else in the file is wrong too.
            continue;
        }
        alone.assert_code(0);
        let run = spillway(&["rules", "check", "--datasource", &url, f]);
        run.assert_code(1);
        assert!(
            run.stderr().contains("the datasource rejects the query")
                && run.stderr().contains(&format!("{f}:")),
            "{}",
            run.describe()
        );
        judged_by_the_server += 1;
    }
    assert!(judged_by_the_server >= 2, "{metricsql_only:?}");
    let good: Vec<String> = entries
        .iter()
        .filter(|e| e["valid"] == true && e["flags"].is_null())
        .map(path)
        .collect();
    let mut args = vec!["rules", "check", "--datasource", &url];
    args.extend(good.iter().map(String::as_str));
    spillway(&args).assert_code(0);
}

#[test]
fn rules_preview_shows_what_each_destination_would_get() {
    let src = source_with(&["s0", "s1", "s2"], |s, _| match s {
        "s2" => 20.0,
        _ => 70.0,
    });
    let (a, b) = (Vm::start(), Vm::start());
    let dir = tempfile::tempdir().unwrap();
    common::write_files(
        dir.path(),
        &[
            (
                "run.yml",
                &config(
                    &src.url(),
                    &(destination("a", &a, "a") + &destination("b", &b, "b")),
                    "external_labels: {cluster: test}",
                ),
            ),
            ("rules/routed.yml", ROUTED_RULES),
        ],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&["rules", "preview", "-c", &cfg]);
    run.assert_code(0);
    let out = run.stdout();
    assert!(out.contains("hot / temp:hot @ "), "{out}");
    assert!(out.contains(": 2 series"), "{out}");
    let section = |name: &str| -> String {
        let start = out
            .find(&format!("destination {name} "))
            .unwrap_or_else(|| panic!("no section for {name}:\n{out}"));
        out[start..].split("\n\n").next().unwrap().to_string()
    };
    let sa = section("a");
    assert!(sa.contains("would receive 2 series"), "{sa}");
    assert!(sa.contains(r#"temp:hot{cluster="test", export_target="a", sensor="s0", severity="critical", team="ops"} 70"#), "{sa}");
    let sb = section("b");
    assert!(sb.contains("would receive 1 series"), "{sb}");
    assert!(
        sb.contains(r#"temp:cold{cluster="test", export_target="b", sensor="s2"} 20"#),
        "{sb}"
    );
    // Nothing was sent.
    assert_eq!(a.series_count(r#"{__name__=~".+"}"#), 0);
    assert_eq!(b.series_count(r#"{__name__=~".+"}"#), 0);
}

#[test]
fn config_errors_name_file_and_group_and_auth_guards_every_route() {
    let dir = tempfile::tempdir().unwrap();
    common::write_files(
        dir.path(),
        &[
            (
                "run.yml",
                "rule_files: ['rules/*.yml']\ndestinations: [{name: d, url: 'http://127.0.0.1:1'}]\nstorage: {path: '{dir}/q'}\n",
            ),
            (
                "rules/logs.yml",
                "groups:\n- name: errors\n  type: vlogs\n  rules:\n  - record: e\n    expr: 'error | stats count()'\n",
            ),
        ],
    );
    let cfg = dir.path().join("run.yml").display().to_string();
    let run = spillway(&["run", "-c", &cfg]);
    run.assert_code(2);
    let err = run.stderr();
    assert!(
        err.contains("rules/logs.yml:2: group \"errors\": groups of type `vlogs` need a VictoriaLogs datasource"),
        "{}",
        run.describe()
    );

    // The shipped example checks (its servers need not be up).
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/threshold-export/spillway.yml"
    );
    let run = spillway(&["run", "--dry-run", "-c", example]);
    run.assert_code(0);
    assert!(
        run.stdout()
            .contains("OK (5 rule groups, 7 rules, 5 destinations)"),
        "{}",
        run.describe()
    );

    let src = source_with(&["s0"], |_, _| 1.0);
    let dst = Vm::start();
    let sp_dir = config(&src.url(), &destination("a", &dst, "a"), "");
    let port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    common::write_files(
        tmp.path(),
        &[("run.yml", &sp_dir), ("rules/g.yml", KEEP_RULES)],
    );
    let server = common::Server::start_path(
        common::spillway_bin(),
        port,
        tmp,
        vec![
            "run".into(),
            "-c".into(),
            "{dir}/run.yml".into(),
            "--http.listen".into(),
            format!("127.0.0.1:{port}"),
            "--http.auth".into(),
            "user:secret".into(),
        ],
    );
    let url = server.url();
    wait_for("spillway to listen", Duration::from_secs(20), || {
        common::curl(&["-s", "-o", "/dev/null", &format!("{url}/health")])
            .is_ok_and(|o| o.status.success())
    });
    // One policy with `spillway ui` (and VictoriaMetrics): /health stays open for probes.
    let health = common::curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/health"),
    ])
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "200");
    for path in ["/", "/api/v1/rules", "/metrics", "/api/v1/destinations"] {
        let code = |auth: &[&str]| -> String {
            let target = format!("{url}{path}");
            let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
            args.extend_from_slice(auth);
            args.push(&target);
            String::from_utf8(common::curl(&args).unwrap().stdout).unwrap()
        };
        assert_eq!(code(&[]), "401", "{path} without credentials");
        assert_eq!(
            code(&["-u", "user:wrong"]),
            "401",
            "{path} with a wrong password"
        );
        assert_eq!(
            code(&["-u", "user:secret"]),
            "200",
            "{path} with credentials"
        );
    }
    let (code, _) = post_status(&format!("{url}/-/reload"), b"");
    assert_eq!(code, 401);
}
