//! Self-monitoring, end to end: a VictoriaMetrics scrapes a dozen real
//! `spillway run` processes every second, each with one fault provoked;
//! the real vmalert evaluates `deploy/alerts/spillway.rules.yml` (a test
//! copy with `for:` shortened and groups evaluated every second) and writes
//! its `ALERTS` series back. Every alert that fired during the test, per
//! scenario (the scrape's `instance`), must be exactly the expected set:
//! the matching alert, and only it.
//!
//! Faults that need history the scrapes must not see (a queue filled while
//! its destination was down, a kill -9, a damaged queue file) are prepared
//! in a first run on a port nobody scrapes; the scraped second run starts
//! from what the first left on disk.
//!
//! Then every panel query of `deploy/grafana/spillway.json` runs against
//! that VictoriaMetrics and must return data, except for metrics other
//! features have not added yet ([`PENDING_METRICS`]).

mod common;

use common::{free_port, spillway_bin, vm_line, FakeDestination, Server, Vm, VmAuth};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Metrics that alerts and panels use but no code on this branch records
/// yet (breach captures are another feature's work): their alert is
/// loaded but not provoked, their panel not required to show data.
const PENDING_METRICS: &[&str] = &["spillway_captures_truncated_total"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The rules with `for:` shortened (SpillwayDown longer than the 7 s
/// pause of the `missed` scenario) and every group evaluated each second.
fn test_rules() -> String {
    let text = std::fs::read_to_string(repo().join("deploy/alerts/spillway.rules.yml")).unwrap();
    let mut out = String::new();
    let mut alert = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if let Some(name) = t.strip_prefix("- alert: ") {
            alert = name.to_string();
        }
        if t.starts_with("for: ") {
            let d = if alert == "SpillwayDown" { "15s" } else { "2s" };
            out.push_str(&format!("{indent}for: {d}\n"));
        } else if t.starts_with("interval: ") {
            out.push_str(&format!("{indent}interval: 1s\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every metric name the alert rules and the dashboard use.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["spillway_", "process_"] {
        let mut at = 0;
        while let Some(i) = text[at..].find(prefix) {
            let start = at + i;
            let end = start
                + text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - start);
            let before = start.checked_sub(1).map(|j| bytes[j] as char);
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(text[start..end].to_string());
            }
            at = end;
        }
    }
    names
}

fn all_source() -> String {
    let mut out = String::new();
    let mut stack = vec![repo().join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out
}

/// A typo in a rule or a panel would make it silently show nothing.
#[test]
fn alerts_and_panels_use_metrics_spillway_records() {
    let rules = std::fs::read_to_string(repo().join("deploy/alerts/spillway.rules.yml")).unwrap();
    let dash = std::fs::read_to_string(repo().join("deploy/grafana/spillway.json")).unwrap();
    let src = all_source();
    for name in metric_names(&rules).union(&metric_names(&dash)) {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        let known = src.contains(base);
        assert!(
            known || PENDING_METRICS.contains(&name.as_str()),
            "{name} is used by the alerts or the dashboard but recorded nowhere in src/"
        );
    }
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("deploy/alerts/spillway.rules.yml"))
        .output()
        .expect("promtool (apt-get install -y prometheus)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// One spillway under watch.
struct Scenario {
    name: &'static str,
    port: u16,
    expect: &'static [&'static str],
}

fn start_spillway(files: &[(&str, &str)], port: u16, extra: &[&str]) -> Server {
    let run_dir = tempfile::tempdir().unwrap();
    common::write_files(run_dir.path(), files);
    let mut args = vec![
        "run".to_string(),
        "-c".into(),
        "{dir}/run.yml".into(),
        "--http.listen".into(),
        format!("127.0.0.1:{port}"),
        "--shutdown-timeout".into(),
        "1s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_path(spillway_bin(), port, run_dir, args);
    server.wait_ready("/health");
    server
}

fn config(source: &str, dest_url: &str, storage: &Path, dest_extra: &str) -> String {
    format!(
        "datasource: {{url: '{source}', timeout: 5s}}
rule_files: ['rules/*.yml']
evaluation: {{eval_delay: 0s}}
storage: {{path: '{}'}}
destinations:
  - name: dest
    url: {dest_url}/api/v1/write
    flush_interval: 100ms
{dest_extra}",
        storage.display()
    )
}

/// Watched groups run every 3 s: a 1 s group on a loaded 2-core machine
/// wakes late now and then, which SpillwayEvaluationsMissed rightly reports.
fn rule(expr: &str) -> String {
    rule_every(expr, "3s")
}

fn rule_every(expr: &str, interval: &str) -> String {
    format!("groups:\n- name: g\n  interval: {interval}\n  rules:\n  - record: out\n    expr: '{expr}'\n")
}

fn destination(sp: &Server) -> serde_json::Value {
    let text = common::http_get(&format!("{}/api/v1/destinations", sp.url()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["data"]["destinations"][0].clone()
}

/// Runs `files` on an unwatched port until `done` holds for its
/// destination, then stops it (SIGTERM, or SIGKILL when `kill`).
fn prepare(files: &[(&str, &str)], done: impl Fn(&serde_json::Value) -> bool, kill: bool) {
    let mut sp = start_spillway(files, free_port(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = destination(&sp);
        if done(&d) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out preparing {}: destination {d}\nlog:\n{}",
            files[1].1,
            sp.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if kill {
        sp.stop();
    } else {
        assert_eq!(
            sp.terminate(Duration::from_secs(30)),
            Some(0),
            "{}",
            sp.log()
        );
    }
}

/// Flips a byte inside the payload of the first queued record.
fn damage_queue(storage: &Path) {
    let dir = storage.join("dest");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let seg = segs
        .first()
        .unwrap_or_else(|| panic!("no segment in {}", dir.display()));
    let mut bytes = std::fs::read(seg).unwrap();
    assert!(bytes.len() > 40, "segment too short: {}", bytes.len());
    bytes[30] ^= 0xff;
    std::fs::write(seg, bytes).unwrap();
}

fn firing(vmalert: &Server) -> BTreeSet<(String, String)> {
    let text = common::http_get(&format!("{}/api/v1/alerts", vmalert.url()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // vmalert answers `null` while nothing is active.
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (
                a["labels"]["instance"].as_str().unwrap_or("").to_string(),
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn each_fault_fires_its_alert_and_only_it_and_every_panel_has_data() {
    // Sources: `temp` (one series) and `big`, a sample every 10 s.
    let src = Vm::start();
    let now = now_ms();
    let mut lines = String::new();
    let ts: Vec<(i64, f64)> = ((now - 600_000) / 10_000..=(now + 600_000) / 10_000)
        .map(|t| (t * 10_000, 99.0))
        .collect();
    lines.push_str(&vm_line(&[("__name__", "temp"), ("sensor", "a")], &ts));
    lines.push('\n');
    // `big{i, pad}`: 200 series whose random 200-character label defeats
    // compression, so a queue fills in seconds without a costly rule.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..200 {
        let id = i.to_string();
        let pad: String = (0..200)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from_digit(((seed >> 33) % 16) as u32, 16).unwrap()
            })
            .collect();
        lines.push_str(&vm_line(
            &[("__name__", "big"), ("i", &id), ("pad", &pad)],
            &ts,
        ));
        lines.push('\n');
    }
    src.import(&lines);
    let source = src.url();
    let healthy_dest = Vm::start();
    let auth = VmAuth::start(&format!(
        "users:\n- username: u\n  password: p\n  url_prefix: {}\n",
        healthy_dest.url()
    ));
    let closed = format!("http://127.0.0.1:{}", free_port());
    let small = rule("temp > 50");
    let medium = rule(r#"big{i=~"1?[0-9]"} > 0"#);
    let big = rule("big > 0");
    // Fills 1 MiB within seconds, where nobody watches.
    let fast = rule_every("big > 0", "1s");
    let none = "groups: []\n";

    let scenarios = [
        Scenario {
            name: "healthy",
            port: free_port(),
            expect: &[],
        },
        Scenario {
            name: "dest_down",
            port: free_port(),
            expect: &["SpillwayDestinationQueueGrowing"],
        },
        Scenario {
            name: "filling_up",
            port: free_port(),
            expect: &["SpillwayDestinationQueueFillingUp"],
        },
        Scenario {
            name: "nearly_full",
            port: free_port(),
            expect: &["SpillwayDestinationQueueNearlyFull"],
        },
        Scenario {
            name: "full",
            port: free_port(),
            expect: &[
                "SpillwayDestinationQueueNearlyFull",
                "SpillwaySamplesDropped",
            ],
        },
        Scenario {
            name: "damaged",
            port: free_port(),
            expect: &["SpillwayQueueDamaged"],
        },
        Scenario {
            name: "rejects",
            port: free_port(),
            expect: &["SpillwayDestinationRejects"],
        },
        Scenario {
            name: "query_fails",
            port: free_port(),
            expect: &["SpillwayRuleEvaluationErrors"],
        },
        Scenario {
            name: "missed",
            port: free_port(),
            expect: &["SpillwayEvaluationsMissed"],
        },
        Scenario {
            name: "bad_reload",
            port: free_port(),
            expect: &["SpillwayConfigReloadFailed"],
        },
        Scenario {
            name: "unclean",
            port: free_port(),
            expect: &["SpillwayRestartedUncleanly"],
        },
        Scenario {
            name: "down",
            port: free_port(),
            expect: &["SpillwayDown"],
        },
    ];

    let storage: BTreeMap<&str, tempfile::TempDir> = scenarios
        .iter()
        .map(|s| (s.name, tempfile::tempdir().unwrap()))
        .collect();
    let port = |name: &str| scenarios.iter().find(|s| s.name == name).unwrap().port;
    let st = |name: &str| storage[name].path().to_path_buf();
    let mut running: Vec<Server> = Vec::new();

    // Prepared on unwatched ports first.
    let full_config =
        |name: &str| config(&source, &closed, &st(name), "    max_disk_bytes: 1MiB\n");
    prepare(
        &[
            ("run.yml", &full_config("nearly_full")),
            ("rules/r.yml", &fast),
        ],
        |d| d["disk_bytes"].as_f64().unwrap() > 0.85 * d["max_disk_bytes"].as_f64().unwrap(),
        false,
    );
    prepare(
        &[("run.yml", &full_config("full")), ("rules/r.yml", &fast)],
        // Not yet dropping: a queue that dropped for room reports phantom
        // damage after a restart (seen here; left to the queue's owners).
        |d| d["disk_bytes"].as_f64().unwrap() > 0.85 * d["max_disk_bytes"].as_f64().unwrap(),
        false,
    );
    prepare(
        &[
            ("run.yml", &config(&source, &closed, &st("damaged"), "")),
            ("rules/r.yml", &small),
        ],
        |d| d["pending_blocks"].as_u64().unwrap_or(0) >= 3,
        false,
    );
    damage_queue(&st("damaged"));
    prepare(
        &[
            (
                "run.yml",
                &config(&source, &healthy_dest.url(), &st("unclean"), ""),
            ),
            ("rules/r.yml", &small),
        ],
        |d| d["samples_sent"].as_u64().unwrap_or(0) > 0,
        true,
    );

    // The watched runs, started before anything scrapes their ports.
    let started = Instant::now();
    let watched: Vec<(&str, String, &str)> = vec![
        ("healthy", config(&source, &healthy_dest.url(), &st("healthy"), ""), small.as_str()),
        ("dest_down", config(&source, &closed, &st("dest_down"), ""), small.as_str()),
        ("filling_up", config(&source, &closed, &st("filling_up"), "    max_disk_bytes: 8MiB\n"), medium.as_str()),
        ("nearly_full", full_config("nearly_full"), none),
        ("full", full_config("full"), big.as_str()),
        ("damaged", config(&source, &healthy_dest.url(), &st("damaged"), ""), none),
        ("rejects", config(&source, &auth.url(), &st("rejects"), ""), small.as_str()),
        ("query_fails", config(&source, &healthy_dest.url(), &st("query_fails"), ""), "groups:\n- name: g\n  interval: 3s\n  rules:\n  - record: out\n    expr: nosuchfunc(temp)\n"),
        ("missed", config(&source, &healthy_dest.url(), &st("missed"), ""), small.as_str()),
        ("bad_reload", config(&source, &healthy_dest.url(), &st("bad_reload"), ""), small.as_str()),
        ("unclean", config(&source, &healthy_dest.url(), &st("unclean"), ""), small.as_str()),
    ];
    for (name, cfg, rules) in &watched {
        running.push(start_spillway(
            &[("run.yml", cfg), ("rules/r.yml", rules)],
            port(name),
            &[],
        ));
    }
    let by_name = |name: &str| watched.iter().position(|w| w.0 == name).unwrap();

    // The watcher: VictoriaMetrics scraping every scenario, vmalert on it.
    let mut scrape = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: spillway\n  static_configs:\n");
    for s in &scenarios {
        scrape.push_str(&format!(
            "  - targets: ['127.0.0.1:{}']\n    labels: {{instance: {}}}\n",
            s.port, s.name
        ));
    }
    let mon_dir = tempfile::tempdir().unwrap();
    std::fs::write(mon_dir.path().join("scrape.yml"), &scrape).unwrap();
    let scrape_flag = format!("-promscrape.config={}/scrape.yml", mon_dir.path().display());
    let mon = Vm::start_with(&[&scrape_flag]);
    let notifier = FakeDestination::start(200, "", Duration::ZERO);
    let vmalert_dir = tempfile::tempdir().unwrap();
    std::fs::write(vmalert_dir.path().join("rules.yml"), test_rules()).unwrap();
    let va_port = free_port();
    let vmalert = Server::start_in(
        "vmalert",
        va_port,
        vmalert_dir,
        vec![
            format!("-httpListenAddr=127.0.0.1:{va_port}"),
            "-rule={dir}/rules.yml".into(),
            format!("-datasource.url={}", mon.url()),
            format!("-remoteWrite.url={}", mon.url()),
            "-remoteWrite.flushInterval=1s".into(),
            format!("-notifier.url={}", notifier.url),
            "-evaluationInterval=1s".into(),
            "-loggerLevel=WARN".into(),
        ],
    );
    vmalert.wait_ready("/health");

    // Faults provoked while watched.
    std::thread::sleep(Duration::from_secs(3));
    let bad = &running[by_name("bad_reload")];
    std::fs::write(
        bad.dir.path().join("run.yml"),
        "destinations: [{name: x, url: 'not a url'}]\n",
    )
    .unwrap();
    let (code, body) = common::post_status(&format!("{}/-/reload", bad.url()), b"");
    assert_eq!(code, 400, "{body}");
    let missed = running[by_name("missed")].pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &missed])
        .status()
        .unwrap()
        .success());
    // The pause is the fault under test (missed evaluations).
    std::thread::sleep(Duration::from_secs(7));
    assert!(Command::new("kill")
        .args(["-CONT", &missed])
        .status()
        .unwrap()
        .success());

    // Every expected alert fires...
    let expected: BTreeSet<(String, String)> = scenarios
        .iter()
        .flat_map(|s| {
            s.expect
                .iter()
                .map(move |a| (s.name.to_string(), a.to_string()))
        })
        .collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !expected.is_subset(&seen) && Instant::now() < deadline {
        seen.extend(firing(&vmalert));
        std::thread::sleep(Duration::from_millis(300));
    }
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "alerts that did not fire within 120 s: {missing:?}\nfiring: {seen:?}\nqueues now:\n{}\nvmalert log:\n{}",
        ["spillway_queue_pending_bytes", "deriv(spillway_queue_pending_bytes[10m])", "spillway_queue_disk_bytes", "predict_linear(spillway_queue_disk_bytes[1h], 4 * 3600)"]
            .map(|q| format!("{q}: {}", query(&mon, q)))
            .join("\n"),
        vmalert.log()
    );
    // ... and, given time to misbehave, nothing else ever did.
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        seen.extend(firing(&vmalert));
        std::thread::sleep(Duration::from_millis(300));
    }
    mon.flush();
    let history: BTreeSet<(String, String)> = mon
        .export_lines(r#"ALERTS{alertstate="firing"}"#)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["metric"]["instance"].as_str().unwrap_or("").to_string(),
                v["metric"]["alertname"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.extend(history);
    assert_eq!(
        seen,
        expected,
        "fired alerts differ from the faults provoked (after {:?})",
        started.elapsed()
    );

    check_dashboard(&mon);
    for mut s in running {
        s.stop();
    }
}

/// An instant query's result as `instance=value` pairs.
fn query(mon: &Vm, q: &str) -> String {
    let out = common::curl(&[
        "-sS",
        &format!("{}/api/v1/query", mon.url()),
        "--data-urlencode",
        &format!("query={q}"),
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{}={}", r["metric"]["instance"], r["value"][1]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every panel's query, with the dashboard's variables set to "all".
fn check_dashboard(mon: &Vm) {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/spillway.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let query = expr
                .replace("$job", "spillway")
                .replace("$instance", ".*")
                .replace("$destination", ".*")
                .replace("$__rate_interval", "30s");
            let out = common::curl(&[
                "-sS",
                "--fail-with-body",
                &format!("{}/api/v1/query", mon.url()),
                "--data-urlencode",
                &format!("query={query}"),
            ])
            .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("{query}: {e}: {}", String::from_utf8_lossy(&out.stdout))
            });
            assert_eq!(v["status"], "success", "{query}: {v}");
            let n = v["data"]["result"].as_array().map_or(0, |r| r.len());
            if PENDING_METRICS.iter().any(|m| expr.contains(m)) {
                eprintln!(
                    "panel {:?}: metric not recorded on this branch yet, not required to have data",
                    panel["title"]
                );
                continue;
            }
            assert!(n > 0, "panel {:?} has no data: {query}", panel["title"]);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} panel queries checked");
}
