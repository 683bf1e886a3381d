//! `spillway export` against a real VictoriaMetrics: every format, thresholds,
//! windows, incremental runs, the cluster URL form through vmauth, failures
//! and bad input.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const STEP: i64 = 60_000;

/// Two hours ago, aligned to the step, so data is settled and grid-exact.
fn base_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now / STEP) * STEP - 2 * 3_600_000
}

/// cpu for two hosts: one sample per minute for `minutes`, values cycling 10..100.
fn cpu_fixture(base: i64, minutes: i64) -> String {
    let mut out = String::new();
    for host in ["a", "b"] {
        let samples: Vec<(i64, f64)> = (0..minutes)
            .map(|i| {
                (
                    base + i * STEP,
                    10.0 * ((i % 10) + 1) as f64 + if host == "b" { 1.0 } else { 0.0 },
                )
            })
            .collect();
        out.push_str(&vm_line(
            &[("__name__", "cpu_usage_percent"), ("host", host)],
            &samples,
        ));
        out.push('\n');
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn secs(ms: i64) -> String {
    (ms / 1000).to_string()
}

fn files_named(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The server's own answer for the same query_range call, as (labels, ts, value) rows.
fn server_rows(vm: &Vm, query: &str, start: i64, end: i64) -> BTreeSet<(String, i64, String)> {
    let url = format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step=60s&nocache=1",
        vm.url(),
        urlencode(query),
        secs(start),
        secs(end)
    );
    let v: serde_json::Value = serde_json::from_str(&http_get(&url)).unwrap();
    let mut rows = BTreeSet::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let host = s["metric"]["host"].as_str().unwrap_or("").to_string();
        for p in s["values"].as_array().unwrap() {
            let ts = (p[0].as_f64().unwrap() * 1000.0) as i64;
            rows.insert((host.clone(), ts, p[1].as_str().unwrap().to_string()));
        }
    }
    rows
}

fn csv_rows(path: &Path) -> BTreeSet<(String, i64, String)> {
    read_csv(path)
        .into_iter()
        .map(|r| {
            let host = r["labels"].split('"').nth(1).unwrap_or("").to_string();
            (host, r["timestamp_ms"].parse().unwrap(), r["value"].clone())
        })
        .collect()
}

#[test]
fn exports_every_format_with_flags_and_alerts_apart() {
    let vm = Vm::start();
    let base = base_ms();
    vm.import(&cpu_fixture(base, 60));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let th = write(
        tmp.path(),
        "th.yml",
        "thresholds:\n  - metric: cpu_usage_percent\n    min: 0\n    max: 85\n    alert_above: 80\n",
    );
    let (from, to) = (base, base + 59 * STEP);
    let run = spillway(&[
        "export",
        "--url",
        &vm.url(),
        "--query",
        "cpu_usage_percent",
        "--from",
        &secs(from),
        "--to",
        &secs(to),
        "--step",
        "1m",
        "--thresholds",
        &th,
        "--format",
        "csv,json,jsonl,sqlite,parquet",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stderr().contains("window exported"),
        "plain log lines without a terminal:\n{}",
        run.describe()
    );

    // CSV holds exactly what the server answers for the same call, with flags per sample.
    let samples_csv = &files_named(&out, "samples_")
        .into_iter()
        .find(|p| p.extension().unwrap() == "csv")
        .unwrap();
    let rows = read_csv(samples_csv);
    assert_eq!(
        csv_rows(samples_csv),
        server_rows(&vm, "cpu_usage_percent", from, to)
    );
    assert_eq!(rows.len(), 120);
    let header: Vec<_> = rows[0].keys().cloned().collect();
    for col in [
        "metric",
        "labels",
        "timestamp",
        "timestamp_ms",
        "value",
        "out_of_range",
        "alert",
        "query",
    ] {
        assert!(header.contains(&col.to_string()), "missing column {col}");
    }
    for r in &rows {
        let v: f64 = r["value"].parse().unwrap();
        assert_eq!(r["alert"], (v > 80.0).to_string(), "{r:?}");
        assert_eq!(r["out_of_range"], (v > 85.0).to_string(), "{r:?}");
        assert_eq!(r["metric"], "cpu_usage_percent");
        assert!(r["timestamp"].ends_with('Z'));
    }
    let alerts = read_csv(
        &files_named(&out, "alerts_")
            .into_iter()
            .find(|p| p.extension().unwrap() == "csv")
            .unwrap(),
    );
    let expected_alerts = rows.iter().filter(|r| r["alert"] == "true").count();
    assert!(expected_alerts > 0);
    assert_eq!(alerts.len(), expected_alerts);
    assert!(alerts.iter().all(|r| r["alert"] == "true"));

    // JSONL: one sample per line, same count; JSON: one document.
    let jsonl = std::fs::read_to_string(
        files_named(&out, "samples_")
            .into_iter()
            .find(|p| p.extension().unwrap() == "jsonl")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(jsonl.lines().count(), 120);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["metric"], "cpu_usage_percent");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            files_named(&out, "samples_")
                .into_iter()
                .find(|p| p.extension().unwrap() == "json")
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(json.is_object(), "one document per run");

    // SQLite: runs, samples, alerts tables.
    let db = rusqlite::Connection::open(out.join("spillway.sqlite")).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM runs"), 1);
    assert_eq!(count("SELECT COUNT(*) FROM samples"), 120);
    assert_eq!(count("SELECT COUNT(*) FROM alerts"), expected_alerts as i64);

    // Parquet: readable, same row count.
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let pq = files_named(&out, "samples_")
        .into_iter()
        .find(|p| p.extension().unwrap() == "parquet")
        .unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(pq).unwrap()).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 120);

    // Summary: per query figures.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files_named(&out, "summary_")[0]).unwrap()).unwrap();
    let q = &summary["queries"][0];
    assert_eq!(q["series"], 2);
    assert_eq!(q["samples"], 120);
    assert_eq!(q["alerts"], expected_alerts as u64);
    assert_eq!(q["max"], 101.0);
    assert_eq!(q["min"], 10.0);
    assert!(run.stdout().contains("cpu_usage_percent"));

    // No temp files left behind.
    assert!(
        files_named(&out, ".").is_empty(),
        "temp files left: {:?}",
        files_named(&out, ".")
    );

    // SQLite appends across runs.
    spillway(&[
        "export",
        "--url",
        &vm.url(),
        "--query",
        "cpu_usage_percent",
        "--from",
        &secs(from),
        "--to",
        &secs(to),
        "--step",
        "1m",
        "--format",
        "sqlite",
        "--out",
        out.to_str().unwrap(),
    ])
    .assert_code(0);
    assert_eq!(count("SELECT COUNT(*) FROM runs"), 2);
    assert_eq!(count("SELECT COUNT(*) FROM samples"), 240);
}

#[test]
fn windows_split_the_range_without_gap_or_overlap() {
    let vm = Vm::start();
    let base = base_ms();
    vm.import(&cpu_fixture(base, 60));
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (base, base + 59 * STEP);
    let mut results = vec![];
    for window in ["720", "7", "1"] {
        let out = tmp.path().join(format!("w{window}"));
        spillway(&[
            "export",
            "--url",
            &vm.url(),
            "-Q",
            "cpu_usage_percent",
            "--from",
            &secs(from),
            "--to",
            &secs(to),
            "--step",
            "1m",
            "--window",
            window,
            "--out",
            out.to_str().unwrap(),
        ])
        .assert_code(0);
        let csv = files_named(&out, "samples_")[0].clone();
        results.push((window, read_csv(&csv).len(), csv_rows(&csv)));
    }
    for (w, n, rows) in &results {
        assert_eq!(*n, rows.len(), "window {w}: duplicated rows");
        assert_eq!(rows, &results[0].2, "window {w} differs from a single call");
    }
    assert_eq!(results[0].1, 120);
}

#[test]
fn incremental_runs_continue_exactly_where_the_last_ended() {
    let vm = Vm::start();
    let base = base_ms();
    vm.import(&cpu_fixture(base, 30));
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let out = tmp.path().join("out");
    let args = |to: i64| {
        vec![
            "export".to_string(),
            "--url".into(),
            vm.url(),
            "-Q".into(),
            "cpu_usage_percent".into(),
            "--from".into(),
            secs(base),
            "--to".into(),
            secs(to),
            "--step".into(),
            "1m".into(),
            "--incremental".into(),
            state.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--format".into(),
            "csv,sqlite".into(),
        ]
    };
    let first_to = base + 29 * STEP;
    let a: Vec<String> = args(first_to);
    spillway(&a.iter().map(String::as_str).collect::<Vec<_>>()).assert_code(0);
    // More data arrives; the next cron run ends later.
    let mut more = String::new();
    for host in ["a", "b"] {
        let samples: Vec<(i64, f64)> = (30..60)
            .map(|i| (base + i * STEP, 500.0 + i as f64))
            .collect();
        more.push_str(&vm_line(
            &[("__name__", "cpu_usage_percent"), ("host", host)],
            &samples,
        ));
        more.push('\n');
    }
    vm.import(&more);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct run ids (second resolution)
    let second_to = base + 59 * STEP;
    let b: Vec<String> = args(second_to);
    spillway(&b.iter().map(String::as_str).collect::<Vec<_>>()).assert_code(0);

    let csvs = files_named(&out, "samples_");
    assert_eq!(csvs.len(), 2);
    let mut all = Vec::new();
    for c in &csvs {
        all.extend(read_csv(c).into_iter().map(|r| {
            (
                r["labels"].clone(),
                r["timestamp_ms"].parse::<i64>().unwrap(),
            )
        }));
    }
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), distinct.len(), "the two runs overlap");
    let expected: BTreeSet<_> = server_rows(&vm, "cpu_usage_percent", base, second_to)
        .into_iter()
        .map(|(h, ts, _)| (format!("{{host=\"{h}\"}}"), ts))
        .collect();
    assert_eq!(distinct, expected, "the two runs leave a gap");
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        st["queries"]["cpu_usage_percent"]["next_from_ms"],
        second_to + STEP
    );
    // A third run with nothing new: exit 0, nothing exported, state unchanged.
    let c: Vec<String> = args(second_to);
    let run = spillway(&c.iter().map(String::as_str).collect::<Vec<_>>());
    run.assert_code(0);
    assert!(
        run.stderr().contains("no data") || run.stderr().contains("nothing new"),
        "{}",
        run.describe()
    );
}

#[test]
fn cluster_url_form_through_vmauth() {
    // A single node serving under /select/0 looks like a cluster vmselect behind vmauth.
    let vm = Vm::start_with(&["-http.pathPrefix=/select/0"]);
    let base = base_ms();
    vm.import(&cpu_fixture(base, 10));
    let auth = VmAuth::start(&format!(
        "users:\n  - username: team\n    password: team-pw\n    url_prefix: \"{}\"\n",
        vm.server.url()
    ));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let url = format!("{}/select/0/prometheus", auth.url());
    let run = spillway(&[
        "export",
        "--url",
        &url,
        "-Q",
        "cpu_usage_percent",
        "--from",
        &secs(base),
        "--to",
        &secs(base + 9 * STEP),
        "--step",
        "1m",
        "--out",
        out.to_str().unwrap(),
        "--username",
        "team",
        "--password",
        "team-pw",
    ]);
    run.assert_code(0);
    let rows = read_csv(&files_named(&out, "samples_")[0]);
    assert_eq!(rows.len(), 20, "{}", run.describe());
    // Without credentials vmauth refuses: a 401, not retried.
    let run = spillway(&[
        "export",
        "--url",
        &url,
        "-Q",
        "cpu_usage_percent",
        "--since",
        "1h",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(run.stderr().contains("401"), "{}", run.describe());
}

#[test]
fn a_failing_query_is_reported_and_the_others_still_run() {
    let vm = Vm::start();
    let base = base_ms();
    vm.import(&cpu_fixture(base, 10));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = spillway(&[
        "export",
        "--url",
        &vm.url(),
        "-Q",
        "cpu_usage_percent{",
        "-Q",
        "cpu_usage_percent",
        "--from",
        &secs(base),
        "--to",
        &secs(base + 9 * STEP),
        "--step",
        "1m",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(
        run.stderr().contains("422"),
        "the server's status and body are shown:\n{}",
        run.describe()
    );
    assert!(run.stdout().contains("FAILED"), "{}", run.describe());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files_named(&out, "summary_")[0]).unwrap()).unwrap();
    assert_eq!(summary["failed_queries"][0], "cpu_usage_percent{");
    assert!(summary["queries"][0]["error"]
        .as_str()
        .unwrap()
        .contains("422"));
    assert_eq!(summary["queries"][1]["samples"], 20);
    assert_eq!(read_csv(&files_named(&out, "samples_")[0]).len(), 20);
}

#[test]
fn unreachable_and_unauthorized_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let run = spillway(&[
        "export",
        "--url",
        &dead,
        "-Q",
        "up",
        "--since",
        "10m",
        "--retries",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(
        run.stderr().contains("cannot connect"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr().contains("retrying"),
        "connection errors are retried:\n{}",
        run.describe()
    );

    let vm = Vm::start_with(&["-httpAuth.username=admin", "-httpAuth.password=s3cret-pw"]);
    let run = spillway(&[
        "export",
        "--url",
        &vm.url(),
        "-Q",
        "up",
        "--since",
        "10m",
        "--username",
        "admin",
        "--password",
        "wrong-pw",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(run.stderr().contains("401"), "{}", run.describe());
    assert!(
        !run.stderr().contains("retrying"),
        "4xx is never retried:\n{}",
        run.describe()
    );
    assert!(
        !run.stderr().contains("wrong-pw") && !run.stdout().contains("wrong-pw"),
        "credential printed"
    );
    // With the right password it works, also given in the URL (and not printed).
    let url = vm.url().replace("http://", "http://admin:s3cret-pw@");
    let run = spillway(&[
        "export",
        "--url",
        &url,
        "-Q",
        "up",
        "--since",
        "10m",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        !run.stderr().contains("s3cret-pw") && !run.stdout().contains("s3cret-pw"),
        "credential printed"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let base = ["export", "--url", url.as_str(), "-Q", "up"];
    let check = |extra: &[&str], needle: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let run = spillway(&args);
        run.assert_code(2);
        assert!(
            run.stderr().contains(needle),
            "expected {needle:?}:\n{}",
            run.describe()
        );
    };
    check(&["--format", "csv,xlsx"], "xlsx");
    check(
        &[
            "--from",
            "2024-01-02T00:00:00Z",
            "--to",
            "2024-01-01T00:00:00Z",
        ],
        "is after --to",
    );
    check(&["--from", "yesterday"], "RFC 3339");
    check(&["--step", "5x"], "invalid duration");
    let file_as_dir = write(tmp.path(), "plain-file", "x");
    check(
        &["--out", &format!("{file_as_dir}/sub")],
        "cannot create output directory",
    );
    let th = write(
        tmp.path(),
        "th.yml",
        "thresholds:\n  - metric: cpu\n    max: 10\n  - metric: mem\n    alert_above: lots\n",
    );
    check(&["--thresholds", &th], "th.yml:5");
    check(&["--thresholds", &th], "alert_above");
    let th2 = write(
        tmp.path(),
        "th2.yml",
        "thresholds:\n  - metric: cpu\n    maximum: 10\n",
    );
    check(&["--thresholds", &th2], "maximum");
    let cfg = write(
        tmp.path(),
        "cfg.yml",
        "datasource:\n  url: http://x\nqueries: [up]\nsince: 1h\nformats: [csv]\n",
    );
    let run = spillway(&["export", "--config", &cfg]);
    run.assert_code(2);
    assert!(
        run.stderr().contains("cfg.yml:5") && run.stderr().contains("formats"),
        "{}",
        run.describe()
    );
    let run = spillway(&["export", "--since", "1h"]);
    run.assert_code(2);
    assert!(
        run.stderr().contains("--url") && run.stderr().contains("--query"),
        "all problems at once:\n{}",
        run.describe()
    );
}

#[test]
fn config_file_with_flags_overriding() {
    let vm = Vm::start();
    let base = base_ms();
    vm.import(&cpu_fixture(base, 10));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = write(
        tmp.path(),
        "export.yml",
        &format!(
            "datasource:\n  url: http://127.0.0.1:1\nqueries: [cpu_usage_percent]\nfrom: '{}'\nto: '{}'\nstep: 1m\nformat: jsonl\nout: {}\nthresholds:\n  - metric: cpu_usage_percent\n    alert_above: 50\n",
            secs(base),
            secs(base + 9 * STEP),
            out.display()
        ),
    );
    // The file's URL is dead; the flag wins.
    let run = spillway(&["export", "--config", &cfg, "--url", &vm.url()]);
    run.assert_code(0);
    let jsonl = std::fs::read_to_string(&files_named(&out, "samples_")[0]).unwrap();
    assert_eq!(jsonl.lines().count(), 20);
    let alerts = jsonl
        .lines()
        .filter(|l| l.contains("\"alert\":true"))
        .count();
    assert_eq!(
        alerts, 11,
        "60..100 of host a and 51..101 of host b alert above 50"
    );
}

#[test]
fn empty_result_is_a_note_not_an_error() {
    let vm = Vm::start();
    let tmp = tempfile::tempdir().unwrap();
    let run = spillway(&[
        "export",
        "--url",
        &vm.url(),
        "-Q",
        "does_not_exist",
        "--since",
        "1h",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stderr().contains("note: the queries returned no data"),
        "{}",
        run.describe()
    );
}

/// A server that answers the first window and then hangs: interrupting the
/// run must leave neither a final-named file nor a temp file.
#[test]
fn interrupted_run_leaves_no_half_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    rt.spawn(async move {
        use axum::routing::post;
        let app = axum::Router::new().route(
            "/api/v1/query_range",
            post(move || {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                    }
                    r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"x"},"values":[[1700000000,"1"]]}]}}"#
                }
            }),
        );
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        axum::serve(l, app).await.unwrap();
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = std::process::Command::new(spillway_bin())
        .args([
            "export",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "-Q",
            "x",
            "--from",
            "1700000000",
            "--to",
            "1700003600",
            "--step",
            "1m",
            "--window",
            "10",
            "--format",
            "csv,json,jsonl,sqlite,parquet",
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while calls.load(std::sync::atomic::Ordering::SeqCst) < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the export never reached its second window"
    );
    // The SIGINT must land inside the second window, while it is fetched.
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let not_db: Vec<_> = left
        .iter()
        .filter(|n| !n.to_string_lossy().starts_with("spillway.sqlite"))
        .collect();
    assert!(
        not_db.is_empty(),
        "files left after an interrupted run: {left:?}"
    );
    if out.join("spillway.sqlite").exists() {
        let db = rusqlite::Connection::open(out.join("spillway.sqlite")).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
            .unwrap_or(0);
        assert_eq!(n, 0, "the interrupted run's rows were committed");
    }
}

/// Issue 11, items 9 and 12: a cron line of the pandas "vmselect data
/// processor" keeps working with `spillway export` in place of the script
/// (`--base-url`, `--hours`, `--queries q1 q2`, `--output-dir`, `--verbose`,
/// its thresholds JSON), and the SQLite output leaves no `-journal` file.
#[test]
fn vmselect_processor_cron_line_works_unchanged() {
    let vm = Vm::start();
    let base = base_ms();
    vm.import(&cpu_fixture(base, 60));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exports");
    let th = write(
        tmp.path(),
        "thresholds.json",
        r#"[
  {"metric_name": "cpu_usage_percent", "min_value": 0, "max_value": 85, "alert_threshold": 80},
  {"metric_name": "up", "min_value": null, "max_value": null, "alert_threshold": 0.5}
]"#,
    );
    let run = spillway(&[
        "export",
        "--base-url",
        &vm.url(),
        "--hours",
        "3",
        "--queries",
        "cpu_usage_percent",
        "up",
        "--output-dir",
        out.to_str().unwrap(),
        "--thresholds",
        &th,
        "--format",
        "csv,sqlite",
        "--verbose",
    ]);
    run.assert_code(0);
    let samples = files_named(&out, "samples_");
    let rows = read_csv(
        samples
            .iter()
            .find(|p| p.extension().unwrap() == "csv")
            .unwrap(),
    );
    // The hour of fixtures lies inside the last 3 hours (plus the points
    // the server repeats just after the last sample).
    assert!(rows.len() >= 120, "{}", run.describe());
    assert!(rows.iter().all(|r| r["metric"] == "cpu_usage_percent"));
    for r in &rows {
        let v: f64 = r["value"].parse().unwrap();
        assert_eq!(r["alert"], (v > 80.0).to_string(), "{r:?}");
        assert_eq!(r["out_of_range"], (v > 85.0).to_string(), "{r:?}");
    }
    let alerts = read_csv(
        files_named(&out, "alerts_")
            .iter()
            .find(|p| p.extension().unwrap() == "csv")
            .unwrap(),
    );
    assert_eq!(
        alerts.len(),
        rows.iter().filter(|r| r["alert"] == "true").count()
    );
    assert!(!alerts.is_empty());
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spillway.sqlite"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["spillway.sqlite"],
        "no journal next to the database"
    );
}
