//! `spillway gather` and `spillway import` against real VictoriaMetrics and
//! vmauth servers (issue 5): round trip, obfuscation, the query_range
//! fallback, the cluster URL form, interrupted imports and gathers, rejected
//! bundles, and bundles in vmgather's layout.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A whole minute a little in the past, in ms.
fn recent_minute() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now / 60_000 - 2) * 60_000
}

fn secs(ms: i64) -> String {
    (ms / 1000).to_string()
}

/// One series per (labels), a sample every `step` ms in `[from, to]`, values
/// varied (fractions, negatives, large numbers) so formatting is exercised.
fn lines_for(series: &[Vec<(&str, String)>], from: i64, to: i64, step: i64) -> String {
    let mut out = String::new();
    for (i, labels) in series.iter().enumerate() {
        let samples: Vec<(i64, f64)> = (0..)
            .map(|k| from + k * step)
            .take_while(|t| *t <= to)
            .enumerate()
            .map(|(k, t)| {
                let v = match (i + k) % 4 {
                    0 => k as f64,
                    1 => -(k as f64) / 8.0,
                    2 => 1.5e9 + k as f64,
                    _ => 0.1 * k as f64,
                };
                (t, v)
            })
            .collect();
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.push_str(&vm_line(&l, &samples));
        out.push('\n');
    }
    out
}

fn find_bundle(dir: &Path) -> PathBuf {
    let zips: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .collect();
    assert_eq!(
        zips.len(),
        1,
        "expected one bundle in {}: {zips:?}",
        dir.display()
    );
    let name = zips[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("vmexport_") && name.len() > "vmexport_x_20240101_000000.zip".len() - 2,
        "{name}"
    );
    zips[0].clone()
}

fn zip_entry(bundle: &Path, name: &str) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut out = Vec::new();
    z.by_name(name).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// `(metric JSON, samples)` of each line of a bundle's metrics.jsonl, merged per series.
fn bundle_series(bundle: &Path) -> BTreeMap<String, Vec<(i64, f64)>> {
    let text = String::from_utf8(zip_entry(bundle, "metrics.jsonl")).unwrap();
    let mut map: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let metric: BTreeMap<String, String> = serde_json::from_value(v["metric"].clone()).unwrap();
        let ts: Vec<i64> = serde_json::from_value(v["timestamps"].clone()).unwrap();
        let vals: Vec<f64> = serde_json::from_value(v["values"].clone()).unwrap();
        map.entry(serde_json::to_string(&metric).unwrap())
            .or_default()
            .extend(ts.into_iter().zip(vals));
    }
    for v in map.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    map
}

fn total_samples(m: &BTreeMap<String, Vec<(i64, f64)>>) -> usize {
    m.values().map(Vec::len).sum()
}

/// No (series, timestamp) twice: a window fetched twice would show here.
fn assert_no_duplicates(m: &BTreeMap<String, Vec<(i64, f64)>>) {
    for (k, v) in m {
        let ts: BTreeSet<i64> = v.iter().map(|s| s.0).collect();
        assert_eq!(ts.len(), v.len(), "duplicate timestamps in {k}");
    }
}

fn metadata(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&zip_entry(bundle, "metadata.json")).unwrap()
}

/// Jobs and instances with addresses, plus `vm_app_version` so jobs have components.
fn fleet() -> Vec<Vec<(&'static str, String)>> {
    let mut series = Vec::new();
    for (j, job) in ["payments-api", "checkout-svc", "storage-prod"]
        .iter()
        .enumerate()
    {
        for i in 0..3 {
            let instance = format!("10.20.{j}.{}:9100", 40 + i);
            for metric in ["http_requests_total", "process_cpu_seconds_total"] {
                series.push(vec![
                    ("__name__", metric.to_string()),
                    ("job", job.to_string()),
                    ("instance", instance.clone()),
                    ("url", format!("http://10.20.{j}.{}:8080/metrics", 40 + i)),
                ]);
            }
        }
    }
    series.push(vec![
        ("__name__", "vm_app_version".to_string()),
        ("job", "storage-prod".to_string()),
        ("instance", "db-primary.internal:8482".to_string()),
        (
            "version",
            "vmstorage-20230313-123456-tags-v1.89.1-cluster-0-gabcdef".to_string(),
        ),
        ("short_version", "v1.89.1".to_string()),
    ]);
    series
}

#[test]
fn round_trip_gather_then_import_is_identical_but_for_obfuscated_labels() {
    let a = Vm::start();
    let b = Vm::start();
    let end = recent_minute();
    let start = end - 2 * 3_600_000;
    // 15 s scrapes with a few off-grid points, so window edges at ms precision matter.
    let mut data = lines_for(&fleet(), start, end, 15_000);
    data.push_str(&vm_line(
        &[("__name__", "edge"), ("job", "payments-api")],
        &[
            (start, 1.0),
            (start + 59_999, 2.0),
            (start + 60_000, 3.0),
            (end, 4.0),
        ],
    ));
    data.push('\n');
    a.import(&data);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let map = dir.path().join("map.json");
    let run = spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--obfuscate",
        "ips,jobs",
        "--obfuscation-map",
        map.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(run.stdout().contains("sha256:"), "{}", run.describe());
    let bundle = find_bundle(&out);
    let sum = std::fs::read_to_string(format!("{}.sha256", bundle.display())).unwrap();
    assert!(
        sum.ends_with(&format!(
            "  {}\n",
            bundle.file_name().unwrap().to_string_lossy()
        )),
        "{sum}"
    );
    assert!(
        !out.join("spillway-staging").exists(),
        "staging is removed after packing"
    );
    spillway(&["gather", "--verify", bundle.to_str().unwrap()]).assert_code(0);

    let md = metadata(&bundle);
    for field in [
        "export_id",
        "export_date",
        "time_range",
        "components",
        "jobs",
        "metrics_count",
        "obfuscated",
    ] {
        assert!(md.get(field).is_some(), "metadata lacks {field}: {md}");
    }
    assert_eq!(md["obfuscated"], true);
    assert_eq!(md["components"], serde_json::json!(["vmstorage"]));
    assert_eq!(
        md["jobs"],
        serde_json::json!(["other-job-1", "other-job-2", "vmstorage-job-1"])
    );
    assert_eq!(md["spillway_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(md["source_flavour"], "single");

    let imported = spillway(&["import", bundle.to_str().unwrap(), "--url", &b.url()]);
    imported.assert_code(0);
    assert!(
        imported.stdout().contains("verified: "),
        "{}",
        imported.describe()
    );

    // Undo the obfuscation with the local map: then B must equal A exactly.
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&map).unwrap()).unwrap();
    let rev = |section: &str| -> BTreeMap<String, String> {
        m[section]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (v.as_str().unwrap().to_string(), k.clone()))
            .collect()
    };
    let (ips, jobs) = (rev("ips"), rev("jobs"));
    assert_eq!(jobs.len(), 3);
    let fake_ip = regex::Regex::new(r"777\.777\.\d+\.\d+").unwrap();
    b.flush();
    let restored: BTreeMap<String, Vec<(i64, f64)>> = export_map(&b.url(), r#"{__name__!=""}"#)
        .into_iter()
        .map(|(k, v)| {
            let mut labels: BTreeMap<String, String> = serde_json::from_str(&k).unwrap();
            for (name, value) in labels.iter_mut() {
                if name == "job" {
                    *value = jobs[value.as_str()].clone();
                } else {
                    *value = fake_ip
                        .replace_all(value, |c: &regex::Captures| ips[&c[0]].clone())
                        .into_owned();
                }
            }
            (serde_json::to_string(&labels).unwrap(), v)
        })
        .collect();
    let original = export_map(&a.url(), r#"{__name__!=""}"#);
    assert_eq!(restored.len(), original.len());
    assert_eq!(restored, original);
}

#[test]
fn obfuscation_is_deterministic_and_leaves_no_trace_in_the_zip() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 30 * 60_000;
    let mut series = fleet();
    series.push(vec![
        ("__name__", "pod_info".to_string()),
        ("job", "checkout-svc".to_string()),
        ("instance", "[2001:db8::7]:9100".to_string()),
        ("pod", "checkout-7d9f".to_string()),
        ("secret", "hunter2".to_string()),
        ("peer", "10.20.1.41 and [2001:db8::7]".to_string()),
    ]);
    a.import(&lines_for(&series, start, end, 15_000));
    // Discovery and the preview, as the wizard will show them.
    let d = spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--discover",
        "--json",
    ]);
    d.assert_code(0);
    let disc: serde_json::Value = serde_json::from_str(&d.stdout()).unwrap();
    let jobs = disc["discover"]["jobs"].as_array().unwrap();
    let storage = jobs.iter().find(|j| j["job"] == "storage-prod").unwrap();
    assert_eq!(storage["component"], "vmstorage", "{disc}");
    assert_eq!(storage["series"], 7, "{disc}");
    assert_eq!(disc["discover"]["components"][0]["name"], "vmstorage");
    let sample = spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--to",
        &secs(end),
        "--sample",
        "5",
        "--obfuscate",
        "ips,jobs",
        "--obfuscate-label",
        "pod",
        "--drop-label",
        "secret",
        "--json",
    ]);
    sample.assert_code(0);
    let rows: serde_json::Value = serde_json::from_str(&sample.stdout()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 5, "{rows}");
    for o in [
        "10.20.",
        "payments-api",
        "checkout-svc",
        "storage-prod",
        "hunter2",
        "checkout-7d9f",
    ] {
        assert!(
            !sample.stdout().contains(o),
            "the preview shows {o}: {rows}"
        );
    }
    let table = spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--to",
        &secs(end),
        "--sample",
        "3",
        "--obfuscate",
        "ips",
    ]);
    table.assert_code(0);
    assert!(table.stdout().starts_with("METRIC"), "{}", table.describe());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--selector",
        r#"{job=~"payments-api|checkout-svc|storage-prod"}"#,
        "--job",
        "payments-api",
        "--job",
        "checkout-svc",
        "--job",
        "storage-prod",
        "--obfuscate",
        "ips,jobs",
        "--obfuscate-label",
        "pod",
        "--drop-label",
        "secret",
        "--out",
        out.to_str().unwrap(),
    ])
    .assert_code(0);
    let bundle = find_bundle(&out);
    let originals = [
        "10.20.",
        "db-primary",
        "2001:db8",
        "payments-api",
        "checkout-svc",
        "storage-prod",
        "checkout-7d9f",
        "hunter2",
    ];
    // The archive as stored (names, headers, compressed data)...
    let raw = std::fs::read(&bundle).unwrap();
    // ...and every entry inflated.
    let mut z = zip::ZipArchive::new(std::fs::File::open(&bundle).unwrap()).unwrap();
    let mut texts = vec![("zip bytes".to_string(), raw)];
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut t = Vec::new();
        f.read_to_end(&mut t).unwrap();
        texts.push((f.name().unwrap().to_string(), t));
    }
    assert_eq!(texts.len(), 4, "metrics.jsonl, metadata.json, README.txt");
    for (name, bytes) in &texts {
        for o in originals {
            assert!(
                !bytes.windows(o.len()).any(|w| w == o.as_bytes()),
                "{o:?} found in {name}"
            );
        }
    }
    let metrics = String::from_utf8(zip_entry(&bundle, "metrics.jsonl")).unwrap();
    assert!(
        metrics.contains(r#""__name__":"http_requests_total""#),
        "metric names stay"
    );
    assert!(
        metrics.contains("777.777."),
        "addresses are replaced, ports kept"
    );
    assert!(metrics.contains(":9100\""));
    let md = metadata(&bundle);
    assert!(md["selectors"].to_string().contains("<obfuscated>"), "{md}");

    // Deterministic within the run: every source series keeps one label set
    // across all windows, and no two series merge.
    let got = bundle_series(&bundle);
    assert_eq!(got.len(), series.len());
    assert_eq!(total_samples(&got), series.len() * 121);
    let pods: BTreeSet<String> = got
        .keys()
        .filter_map(|k| {
            serde_json::from_str::<BTreeMap<String, String>>(k)
                .unwrap()
                .get("pod")
                .cloned()
        })
        .collect();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods.iter().next().unwrap().len(), 16, "a hash");
    // One host, one fake address: the IPv6 instance and the same literal in `peer`.
    let pod_line = got.keys().find(|k| k.contains("pod_info")).unwrap();
    let labels: BTreeMap<String, String> = serde_json::from_str(pod_line).unwrap();
    let fake = labels["instance"].trim_end_matches(":9100").to_string();
    assert!(
        labels["peer"].ends_with(&format!("and {fake}")),
        "{labels:?}"
    );
}

const VMAUTH_QUERY_ONLY: &str = r#"users:
- username: "bob"
  password: "s3cret"
  url_map:
  - src_paths: ["/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels", "/api/v1/label/[^/]+/values"]
    url_prefix: "UPSTREAM"
"#;

#[test]
fn fallback_to_query_range_through_a_vmauth_that_denies_export() {
    let a = Vm::start();
    let b = Vm::start();
    let end = recent_minute();
    let start = end - 3_600_000;
    let series = fleet();
    a.import(&lines_for(&series, start - 600_000, end, 15_000));
    let auth = VmAuth::start(&VMAUTH_QUERY_ONLY.replace("UPSTREAM", &a.url()));
    let v = spillway(&[
        "gather",
        "--url",
        &auth.url(),
        "--username",
        "bob",
        "--password",
        "s3cret",
        "--validate-only",
        "--json",
    ]);
    v.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&v.stdout()).unwrap();
    assert_eq!(report["flavour"], "vmauth", "{report}");
    assert_eq!(report["export_api"], false, "{report}");
    let bad = spillway(&[
        "gather",
        "--url",
        &auth.url(),
        "--username",
        "bob",
        "--password",
        "nope",
        "--validate-only",
    ]);
    bad.assert_code(2);
    assert!(
        bad.stderr().contains("refused the credentials"),
        "{}",
        bad.describe()
    );
    assert!(!bad.stderr().contains("nope"), "the password never prints");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = spillway(&[
        "gather",
        "--url",
        &auth.url(),
        "--username",
        "bob",
        "--password",
        "s3cret",
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("via query_range"),
        "{}",
        run.describe()
    );
    let bundle = find_bundle(&out);
    let md = metadata(&bundle);
    assert_eq!(md["export_method"], "query_range");
    assert_eq!(md["step_seconds"], 60.0);
    assert!(!String::from_utf8_lossy(&std::fs::read(&bundle).unwrap()).contains("s3cret"));

    spillway(&["import", bundle.to_str().unwrap(), "--url", &b.url()]).assert_code(0);
    b.flush();
    // One point per minute of the range, each the source's sample at that minute.
    let src = export_map(&a.url(), r#"{__name__!=""}"#);
    let got = export_map(&b.url(), r#"{__name__!=""}"#);
    assert_eq!(got.len(), series.len());
    for (k, samples) in &got {
        let want: Vec<(i64, f64)> = src[k]
            .iter()
            .copied()
            .filter(|(t, _)| *t >= start && *t <= end && t % 60_000 == 0)
            .collect();
        assert_eq!(samples, &want, "{k}");
        assert_eq!(samples.len(), 61);
    }
}

#[test]
fn cluster_url_form_through_vmauth() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 20 * 60_000;
    let series = fleet();
    a.import(&lines_for(&series, start, end, 15_000));
    // Debian ships no vmselect: a forwarder answers /select/0/prometheus/... from the single node.
    let vmselect = Proxy::start(
        &a.url(),
        ProxyRules {
            strip_cluster_prefix: true,
            ..Default::default()
        },
    );
    let auth = VmAuth::start(&format!(
        "users:\n- username: \"ops\"\n  password: \"pw\"\n  url_map:\n  - src_paths: [\"/select/0/prometheus/.+\"]\n    url_prefix: \"{}\"\n",
        vmselect.url()
    ));
    let url = format!("{}/select/0/prometheus", auth.url());
    let v = spillway(&[
        "gather",
        "--url",
        &url,
        "--username",
        "ops",
        "--password",
        "pw",
        "--validate-only",
        "--json",
    ]);
    v.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&v.stdout()).unwrap();
    assert_eq!(report["flavour"], "vmauth", "{report}");
    assert_eq!(report["backend"], "cluster", "{report}");
    assert_eq!(report["tenant"], "0", "{report}");
    assert_eq!(report["export_api"], true, "{report}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = spillway(&[
        "gather",
        "--url",
        &url,
        "--username",
        "ops",
        "--password",
        "pw",
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(run.stdout().contains("via export"), "{}", run.describe());
    let bundle = find_bundle(&out);
    assert_eq!(metadata(&bundle)["source_flavour"], "vmauth");
    assert!(
        vmselect
            .export_requests
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    let got = bundle_series(&bundle);
    assert_eq!(got, export_map(&a.url(), r#"{__name__!=""}"#));
    assert_no_duplicates(&got);
}

fn vm_counter(url: &str, line_prefix: &str) -> u64 {
    http_get(&format!("{url}/metrics"))
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[test]
fn interrupted_import_resumes_to_an_exact_total() {
    // Import is at-least-once: a chunk the target stored but whose answer was
    // lost to the stop is sent again on resume. Deduplication on the target
    // (as production setups of VictoriaMetrics run it) makes the total exact.
    let mut b = Vm::start_with(&["-dedup.minScrapeInterval=1ms"]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.jsonl");
    let end = recent_minute();
    let start = end - 6 * 60_000;
    // Short lines and the smallest chunks: thousands of requests, so the
    // target can be stopped while most are still to come.
    let series: Vec<Vec<(&str, String)>> = (0..25_000)
        .map(|i| {
            vec![
                ("__name__", format!("m{}", i % 7)),
                ("job", "big".to_string()),
                ("instance", format!("h{i}:1")),
            ]
        })
        .collect();
    std::fs::write(&bundle, lines_for(&series, start, end, 15_000)).unwrap();
    let expected_samples = series.len() * 25;

    let mut child = Command::new(spillway_bin())
        .args([
            "import",
            bundle.to_str().unwrap(),
            "--url",
            &b.url(),
            "--chunk-size",
            "1KiB",
            "--retries",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the target once a good part of the upload went through.
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = b.url();
    loop {
        // Native blocks by default (the first two requests ask which layout).
        let reqs = vm_counter(
            &url,
            r#"vm_http_requests_total{path="/api/v1/import/native", protocol="nativeimport"}"#,
        ) + vm_counter(
            &url,
            r#"vm_http_requests_total{path="/api/v1/import", protocol="vmimport"}"#,
        );
        if reqs >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the import never got going");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("import ended before it could be interrupted: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    b.server.stop_gracefully();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    let state_path = dir.path().join("bundle.jsonl.import-state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let committed = state["committed_offset"].as_u64().unwrap();
    let total = std::fs::metadata(&bundle).unwrap().len();
    assert!(
        committed > 0 && committed < total,
        "committed {committed} of {total}"
    );
    assert!(!String::from_utf8_lossy(&std::fs::read(&state_path).unwrap()).contains("password"));

    b.server.start_again();
    b.server.wait_ready("/health");
    let resumed = spillway(&[
        "import",
        bundle.to_str().unwrap(),
        "--url",
        &b.url(),
        "--chunk-size",
        "1KiB",
        "--resume",
    ]);
    resumed.assert_code(0);
    assert!(
        resumed.stdout().contains("resumed at byte"),
        "{}",
        resumed.describe()
    );
    assert!(
        !state_path.exists(),
        "the state goes once the import is complete"
    );
    b.flush();
    let got = export_map(&b.url(), r#"{__name__!=""}"#);
    assert_eq!(got.len(), series.len());
    assert_no_duplicates(&got);
    assert_eq!(total_samples(&got), expected_samples);
}

#[test]
fn interrupted_gather_resumes_without_fetching_a_window_twice() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 10 * 60_000;
    let series = fleet();
    a.import(&lines_for(&series, start, end, 15_000));
    // The third window's answer breaks off half-way.
    let proxy = Proxy::start(
        &a.url(),
        ProxyRules {
            break_export: Some(4),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = [
        "gather",
        "--url",
        &proxy.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--retries",
        "0",
        "--batch-window",
        "30s",
        "--obfuscate",
        "ips,jobs",
        "--out",
        out.to_str().unwrap(),
    ];
    // (Request 1 is the validation's export probe, so request 4 is window 2.)
    let failed = spillway(&args);
    failed.assert_code(2);
    assert!(
        failed.stderr().contains("--resume"),
        "{}",
        failed.describe()
    );
    let staging = out.join("spillway-staging");
    let staged: BTreeSet<String> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        staged.contains("window-000000.jsonl") && staged.contains("window-000001.jsonl"),
        "{staged:?}"
    );
    assert!(!staged.contains("window-000002.jsonl"), "{staged:?}");
    assert!(
        staged.iter().all(|n| !n.starts_with('.')),
        "no partial file is left: {staged:?}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "spillway-staging")
        .collect();
    assert!(
        leftovers.is_empty(),
        "no partial archive is left: {leftovers:?}"
    );

    let mut resume_args = args.to_vec();
    resume_args.push("--resume");
    let resumed = spillway(&resume_args);
    resumed.assert_code(0);
    assert!(
        resumed.stdout().contains("(2 resumed)"),
        "{}",
        resumed.describe()
    );
    let bundle = find_bundle(&out);
    let got = bundle_series(&bundle);
    assert_no_duplicates(&got);
    assert_eq!(
        got.len(),
        series.len(),
        "one label set per series across the interruption"
    );
    assert_eq!(total_samples(&got), series.len() * 41);
    spillway(&["gather", "--verify", bundle.to_str().unwrap()]).assert_code(0);
}

/// A window whose answer breaks off is fetched again, and lands in the
/// bundle once: the lines the broken answer had already given (a small
/// window is all in the writer's buffer) are dropped with it, not packed.
#[test]
fn a_window_fetched_again_after_a_cut_answer_is_in_the_bundle_once() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 30 * 60_000;
    a.import(&lines_for(&fleet(), start, end, 15_000));
    let raw = export_map(&a.url(), r#"{__name__!=""}"#);
    for reader in [&[][..], &["--json-export"][..]] {
        // Request 1 is the validation's export probe, so request 3 is window 1.
        let proxy = Proxy::start(
            &a.url(),
            ProxyRules {
                break_export: Some(3),
                ..Default::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (url, from, to) = (proxy.url(), secs(start), secs(end));
        let mut args = vec![
            "-v",
            "gather",
            "--url",
            &url,
            "--from",
            &from,
            "--to",
            &to,
            "--batch-window",
            "10m",
            "--retries",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(reader);
        let run = spillway(&args);
        run.assert_code(0);
        assert!(
            run.stderr().contains("fetching it again"),
            "{reader:?}: the cut answer was retried: {}",
            run.describe()
        );
        let requests = proxy
            .export_requests
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            requests as u64,
            windows_of(&run) + 2,
            "{reader:?}: probe, windows, one retry"
        );
        let bundle = find_bundle(&out);
        let got = bundle_series(&bundle);
        assert_no_duplicates(&got);
        assert_eq!(got, raw, "{reader:?}");
        assert_eq!(metadata(&bundle)["samples_count"], total_samples(&raw));
        spillway(&["gather", "--verify", bundle.to_str().unwrap()]).assert_code(0);
    }
}

/// The windows line of a finished gather's output (`... in N windows ...`).
fn windows_of(run: &Run) -> u64 {
    let out = run.stdout();
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches([',', ')']) == "windows")
        .unwrap_or_else(|| panic!("no window count in {}", run.describe()));
    words[at - 1]
        .trim_start_matches('(')
        .parse()
        .unwrap_or_else(|_| panic!("no window count in {}", run.describe()))
}

/// #13: without `--batch-window` the windows are sized from the series the
/// index counts; a small fleet goes in one call, and the bundle holds
/// exactly the samples of one raw `/api/v1/export`.
#[test]
fn default_windows_return_exactly_one_raw_export() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 3 * 3_600_000;
    let series = fleet();
    a.import(&lines_for(&series, start, end, 15_000));
    let raw = export_map(&a.url(), r#"{__name__!=""}"#);
    assert_eq!(raw.len(), series.len());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert_eq!(windows_of(&run), 1, "{}", run.describe());
    let got = bundle_series(&find_bundle(&out));
    assert_no_duplicates(&got);
    let counts = |m: &BTreeMap<String, Vec<(i64, f64)>>| -> BTreeMap<String, usize> {
        m.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    };
    assert_eq!(counts(&got), counts(&raw));
    assert_eq!(got, raw);
}

/// Every sample of a bundle, per series (its metric as the bundle prints
/// it), in time order, values as bits: read with spillway's own line reader
/// since a bundle may hold `NaN` and `+Inf`, which JSON has not.
fn bundle_bits(bundle: &Path) -> BTreeMap<String, Vec<(i64, u64)>> {
    let text = zip_entry(bundle, "metrics.jsonl");
    let mut map: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let series = spillway::codec::parse_vm_json_line(line).unwrap();
        let samples = series
            .samples
            .iter()
            .map(|s| (s.timestamp_ms, s.value.to_bits()));
        map.entry(format!("{:?}", series.labels))
            .or_default()
            .extend(samples);
    }
    for v in map.values_mut() {
        v.sort();
    }
    map
}

/// #13: from a single node, `gather` reads `/api/v1/export/native` and
/// prints the lines itself. The bundle holds exactly the samples of the
/// JSON export, bit for bit: values of every shape (fractions, tiny, huge,
/// negative, infinite), label values with the bytes the native series name
/// escapes, series stored as several blocks and parts, and a range that
/// cuts blocks in the middle.
#[test]
fn native_export_gives_the_json_exports_samples_bit_for_bit() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 3 * 3_600_000;
    let shapes: [fn(i64) -> f64; 8] = [
        |k| k as f64,
        |k| -(k as f64) / 8.0,
        |k| 1.5e9 + k as f64 * 0.001,
        |k| 0.1 * k as f64,
        |k| 1e-7 * (k % 1000) as f64,
        |k| 1e20 * (k % 7) as f64 + 3.0,
        |k| (k as f64).sqrt() * 1e-3 - 12.5,
        |k| if k % 5 == 0 { 0.0 } else { 42.0 },
    ];
    let mut lines = String::new();
    for (i, shape) in shapes.iter().enumerate() {
        let (name, value) = ("shape", format!("s{i} \u{1}one \u{2}two \u{0}zero"));
        let samples: Vec<(i64, f64)> = (0..)
            .map(|k| (start + k * 1000, shape(k)))
            .take_while(|s| s.0 <= end)
            .collect();
        // 10,801 points each at 1 s: more than one 8,192-row block.
        lines.push_str(&vm_line(
            &[("__name__", "native_shapes"), (name, &value)],
            &samples,
        ));
        lines.push('\n');
    }
    // Infinities, which JSON has no number for, in the spelling VictoriaMetrics reads.
    lines.push_str(&format!(
        "{{\"metric\":{{\"__name__\":\"native_inf\"}},\"values\":[1,+Inf,-Inf,2.5],\"timestamps\":[{},{},{},{}]}}\n",
        start, start + 5_400_000, start + 5_460_000, end
    ));
    a.import(&lines);
    // A second part for the same series: more blocks per series.
    a.import(&lines_for(&fleet(), start, end, 15_000));
    a.import(&lines_for(&fleet(), start + 7_000, end, 15_000));
    let dir = tempfile::tempdir().unwrap();
    let gather = |out: &Path, extra: &[&str], from: i64, to: i64| {
        let mut args = vec![
            "gather".to_string(),
            "--url".into(),
            a.url(),
            "--from".into(),
            secs(from),
            "--to".into(),
            secs(to),
            "--out".into(),
            out.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = spillway(&args);
        run.assert_code(0);
        find_bundle(out)
    };
    // A range that starts and ends inside blocks.
    for (from, to) in [(start, end), (start + 3_601_000, end - 1_799_000)] {
        let native = gather(&dir.path().join(format!("n{from}")), &[], from, to);
        let json = gather(
            &dir.path().join(format!("j{from}")),
            &["--json-export"],
            from,
            to,
        );
        // The JSON export prints a series in one line per window (one
        // window here); the native export, one per block.
        let lines = |bundle: &Path| metadata(bundle)["metrics_count"].as_u64().unwrap();
        let series = (shapes.len() + 1 + fleet().len()) as u64;
        assert_eq!(lines(&json), series);
        assert!(lines(&native) > series, "the native export was not read");
        let (native, json) = (bundle_bits(&native), bundle_bits(&json));
        assert_eq!(native.len() as u64, series);
        assert!(native.values().all(|v| !v.is_empty()));
        for (k, v) in &json {
            assert!(
                v.iter().all(|s| (from..=to).contains(&s.0)),
                "{k} outside the range"
            );
        }
        assert_eq!(native, json);
    }
}

/// #13: a native answer that cannot be decoded is not trusted: the window
/// is fetched again from the JSON export, and the rest of the gather reads
/// that, so the bundle still holds exactly the raw export.
#[test]
fn an_undecodable_native_answer_falls_back_to_the_json_export() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 3_600_000;
    let series = fleet();
    a.import(&lines_for(&series, start, end, 15_000));
    let proxy = Proxy::start(
        &a.url(),
        ProxyRules {
            garble_native: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = spillway(&[
        "-v",
        "gather",
        "--url",
        &proxy.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--batch-window",
        "20m",
        "--retries",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stderr().contains("cannot read the native export"),
        "{}",
        run.describe()
    );
    let got = bundle_series(&find_bundle(&out));
    assert_no_duplicates(&got);
    assert_eq!(got, export_map(&a.url(), r#"{__name__!=""}"#));
}

/// `gather` of `[start, end]` from `url` in windows of ~1000 samples.
fn adaptive_gather_args(
    url: &str,
    start: i64,
    end: i64,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "gather".to_string(),
        "--url".into(),
        url.into(),
        "--from".into(),
        secs(start),
        "--to".into(),
        secs(end),
        "--retries".into(),
        "0".into(),
        "--batch-samples".into(),
        "1000".into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The bundle of an uninterrupted adaptive gather (checked against a raw
/// export) and its window count.
fn uninterrupted_adaptive_gather(
    a: &Vm,
    start: i64,
    end: i64,
    dir: &Path,
) -> (BTreeMap<String, Vec<(i64, f64)>>, u64) {
    let out = dir.join("whole");
    let args = adaptive_gather_args(&a.url(), start, end, &out, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let whole = spillway(&args);
    whole.assert_code(0);
    let windows = windows_of(&whole);
    // 19 series: a first window of ~9 minutes (at 10 s), then ~13-minute ones (at 15 s).
    assert!((6..=20).contains(&windows), "{}", whole.describe());
    let expected = bundle_series(&find_bundle(&out));
    assert_eq!(expected, export_map(&a.url(), r#"{__name__!=""}"#));
    (expected, windows)
}

/// #13: SIGKILL while an adaptive gather waits for its fourth window, then
/// `--resume`: the three staged windows are kept and the bundle is the
/// uninterrupted gather's, with no sample twice or missing.
#[test]
fn killed_adaptive_gather_resumes_to_the_same_bundle() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 2 * 3_600_000;
    a.import(&lines_for(&fleet(), start, end, 15_000));
    let dir = tempfile::tempdir().unwrap();
    let (expected, windows) = uninterrupted_adaptive_gather(&a, start, end, dir.path());
    // Request 1 is the validation's probe; 2..=4 are windows 0..=2; 5 is held.
    let proxy = Proxy::start(
        &a.url(),
        ProxyRules {
            hold_exports_after: Some(4),
            ..Default::default()
        },
    );
    let out = dir.path().join("out");
    let args = adaptive_gather_args(&proxy.url(), start, end, &out, &[]);
    let mut child = Command::new(spillway_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the fourth window to be held",
        Duration::from_secs(30),
        || proxy.held_exports() > 0,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.release_exports();
    let mut resume = args.clone();
    resume.push("--resume".into());
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    let resumed = spillway(&resume);
    resumed.assert_code(0);
    assert!(
        resumed.stdout().contains("(3 resumed)"),
        "{}",
        resumed.describe()
    );
    assert_eq!(windows_of(&resumed), windows, "{}", resumed.describe());
    let got = bundle_series(&find_bundle(&out));
    assert_no_duplicates(&got);
    assert_eq!(got, expected);
}

/// #13: an adaptive plan (windows sized by `--batch-samples`) cut off in
/// its third window resumes with the same bounds for the staged windows and
/// ends with the samples of an uninterrupted gather: none twice, none missed.
#[test]
fn interrupted_adaptive_gather_resumes_to_the_same_bundle() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 2 * 3_600_000;
    let series = fleet();
    a.import(&lines_for(&series, start, end, 15_000));
    let dir = tempfile::tempdir().unwrap();
    let gather = |url: &str, out: &Path, extra: &[&str]| {
        let args = adaptive_gather_args(url, start, end, out, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spillway(&args)
    };
    let (expected, windows) = uninterrupted_adaptive_gather(&a, start, end, dir.path());

    // Request 1 is the validation's probe, so request 4 is window 2.
    let proxy = Proxy::start(
        &a.url(),
        ProxyRules {
            break_export: Some(4),
            ..Default::default()
        },
    );
    let out = dir.path().join("out");
    gather(&proxy.url(), &out, &[]).assert_code(2);
    let staging = out.join("spillway-staging");
    let journal = std::fs::read_to_string(staging.join("windows.jsonl")).unwrap();
    let bounds: Vec<(i64, i64)> = journal
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["start_ms"].as_i64().unwrap(),
                v["end_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(bounds.len(), 2, "{journal}");
    assert_eq!(bounds[0].0, start);
    assert_eq!(bounds[0].1 + 1, bounds[1].0);
    assert!(
        bounds[1].1 - bounds[1].0 > bounds[0].1 - bounds[0].0,
        "{bounds:?}"
    );

    // Changing the plan's sizing on resume is refused, before any fetch.
    let refused = gather(&proxy.url(), &out, &["--resume", "--batch-window", "1m"]);
    refused.assert_code(2);
    assert!(
        refused.stderr().contains("--batch-window"),
        "{}",
        refused.describe()
    );
    let resumed = gather(&proxy.url(), &out, &["--resume"]);
    resumed.assert_code(0);
    assert!(
        resumed.stdout().contains("(2 resumed)"),
        "{}",
        resumed.describe()
    );
    assert_eq!(windows_of(&resumed), windows, "{}", resumed.describe());
    let got = bundle_series(&find_bundle(&out));
    assert_no_duplicates(&got);
    assert_eq!(got, expected);
}

/// A ZIP written with the `zip` crate: `(name, bytes)` entries, optional symlinks.
fn write_zip(path: &Path, entries: &[(&str, Vec<u8>)], symlinks: &[(&str, &str)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    for (name, target) in symlinks {
        z.add_symlink(*name, *target, opts).unwrap();
    }
    z.finish().unwrap();
}

/// A ZIP whose only entry declares `declared` bytes (ZIP64) but holds a tiny line.
fn write_lying_zip64(path: &Path, declared: u64) {
    let data = {
        let mut e =
            flate_raw(b"{\"metric\":{\"__name__\":\"x\"},\"values\":[1],\"timestamps\":[1]}\n");
        e.shrink_to_fit();
        e
    };
    let name = b"metrics.jsonl";
    let mut zip64 = Vec::new();
    zip64.extend_from_slice(&1u16.to_le_bytes());
    zip64.extend_from_slice(&16u16.to_le_bytes());
    zip64.extend_from_slice(&declared.to_le_bytes());
    zip64.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut f = Vec::new();
    // Local file header.
    f.extend_from_slice(&0x04034b50u32.to_le_bytes());
    f.extend_from_slice(&45u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&8u16.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&(zip64.len() as u16).to_le_bytes());
    f.extend_from_slice(name);
    f.extend_from_slice(&zip64);
    f.extend_from_slice(&data);
    let cd_start = f.len() as u32;
    // Central directory header.
    f.extend_from_slice(&0x02014b50u32.to_le_bytes());
    f.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
    f.extend_from_slice(&45u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&8u16.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&(zip64.len() as u16).to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&((0o100644u32) << 16).to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(name);
    f.extend_from_slice(&zip64);
    let cd_len = f.len() as u32 - cd_start;
    // End of central directory.
    f.extend_from_slice(&0x06054b50u32.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&cd_len.to_le_bytes());
    f.extend_from_slice(&cd_start.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, f).unwrap();
}

/// Raw deflate of `data`, through the zip crate (an entry's compressed bytes).
fn flate_raw(data: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        z.start_file("x", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
    }
    let bytes = buf.into_inner();
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    let f = z.by_index_raw(0).unwrap();
    let (start, len) = (
        f.data_start().unwrap() as usize,
        f.compressed_size() as usize,
    );
    bytes[start..start + len].to_vec()
}

#[test]
fn malformed_bundles_are_rejected_and_nothing_is_imported() {
    let b = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let good_line =
        b"{\"metric\":{\"__name__\":\"ok\"},\"values\":[1],\"timestamps\":[1700000000000]}\n"
            .to_vec();
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    let p = |n: &str| dir.path().join(n);

    write_zip(
        &p("no-metrics.zip"),
        &[("metadata.json", b"{}".to_vec())],
        &[],
    );
    cases.push((p("no-metrics.zip"), "no metrics.jsonl"));
    write_zip(
        &p("traversal.zip"),
        &[
            ("metrics.jsonl", good_line.clone()),
            ("../evil.sh", b"x".to_vec()),
        ],
        &[],
    );
    cases.push((p("traversal.zip"), "`..` in the path"));
    write_zip(
        &p("absolute.zip"),
        &[
            ("metrics.jsonl", good_line.clone()),
            ("/etc/cron.d/x", b"x".to_vec()),
        ],
        &[],
    );
    cases.push((p("absolute.zip"), "absolute path"));
    write_zip(
        &p("symlink.zip"),
        &[("metrics.jsonl", good_line.clone())],
        &[("link", "/etc/passwd")],
    );
    cases.push((p("symlink.zip"), "symbolic link"));
    // 128 MiB of newlines deflate about 1000:1.
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(p("bomb.zip")).unwrap());
        z.start_file("metrics.jsonl", zip::write::SimpleFileOptions::default())
            .unwrap();
        let block = vec![b'\n'; 1 << 20];
        for _ in 0..128 {
            z.write_all(&block).unwrap();
        }
        z.finish().unwrap();
    }
    cases.push((p("bomb.zip"), "decompression bomb"));
    write_lying_zip64(&p("huge.zip"), 100 << 30);
    cases.push((p("huge.zip"), "over the"));
    let mut bad_line = good_line.clone();
    bad_line.extend_from_slice(&good_line);
    bad_line.extend_from_slice(
        b"{\"metric\":{\"__name__\":\"x\"},\"values\":[1,2],\"timestamps\":[1]}\n",
    );
    write_zip(&p("bad-line.zip"), &[("metrics.jsonl", bad_line)], &[]);
    cases.push((p("bad-line.zip"), "line 3"));
    write_zip(
        &p("not-export.zip"),
        &[("metrics.jsonl", b"{\"foo\":1}\n".to_vec())],
        &[],
    );
    cases.push((
        p("not-export.zip"),
        "line 1 is not a VictoriaMetrics export line",
    ));
    write_zip(
        &p("metadata-sum.zip"),
        &[
            ("metrics.jsonl", good_line.clone()),
            (
                "metadata.json",
                format!("{{\"metrics_sha256\":\"{}\"}}", "ab".repeat(32)).into_bytes(),
            ),
        ],
        &[],
    );
    cases.push((p("metadata-sum.zip"), "checksum mismatch"));
    // A window packed twice keeps the digest true (it covers what was
    // packed) but not the counts of the gather that wrote it.
    write_zip(
        &p("counts.zip"),
        &[
            (
                "metrics.jsonl",
                [good_line.clone(), good_line.clone()].concat(),
            ),
            (
                "metadata.json",
                br#"{"spillway_version":"0.1.0","metrics_count":1,"samples_count":1}"#.to_vec(),
            ),
        ],
        &[],
    );
    cases.push((
        p("counts.zip"),
        "count mismatch: metrics.jsonl holds 2 lines and 2 samples, metadata.json says 1 lines and 1 samples",
    ));
    write_zip(
        &p("file-sum.zip"),
        &[("metrics.jsonl", good_line.clone())],
        &[],
    );
    std::fs::write(
        p("file-sum.zip.sha256"),
        format!("{}  file-sum.zip\n", "0".repeat(64)),
    )
    .unwrap();
    cases.push((p("file-sum.zip"), "checksum mismatch"));
    std::fs::write(p("plain.zip"), b"not a zip at all").unwrap();
    cases.push((p("plain.zip"), "not a ZIP archive"));

    for (path, want) in &cases {
        let run = spillway(&["import", path.to_str().unwrap(), "--url", &b.url()]);
        run.assert_code(2);
        assert!(
            run.stderr().contains(want),
            "{}: want {want:?}\n{}",
            path.display(),
            run.describe()
        );
        assert!(
            run.stderr().contains(&path.display().to_string()),
            "the error names the file\n{}",
            run.describe()
        );
        let verify = spillway(&["gather", "--verify", path.to_str().unwrap()]);
        verify.assert_code(2);
        assert!(verify.stderr().contains(want), "{}", verify.describe());
    }
    assert!(!dir.path().join("evil.sh").exists() && !Path::new("/etc/cron.d/x").exists());
    assert_eq!(
        b.series_count(r#"{__name__!=""}"#),
        0,
        "nothing was imported"
    );
}

#[test]
fn a_bundle_in_vmgathers_layout_imports() {
    let b = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let end = recent_minute();
    let ts: Vec<i64> = (0..20).map(|k| end - 19 * 15_000 + k * 15_000).collect();
    let ts_json = serde_json::to_string(&ts).unwrap();
    // vmgather's writer: json.Marshal of {Metric, Values, Timestamps} (map keys
    // sorted, `<` escaped), and its query_range fallback's map with sorted
    // keys (timestamps before values), one point per line.
    let mut metrics = String::new();
    for i in 0..5 {
        let vals: Vec<f64> = (0..20).map(|k| (i * 100 + k) as f64 / 4.0).collect();
        metrics.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"vm_requests_total\",\"instance\":\"777.777.1.{i}:8428\",\"job\":\"vmsingle-job-1\",\"path\":\"/api\\u003cv1\\u003e\"}},\"values\":{},\"timestamps\":{ts_json}}}\n",
            serde_json::to_string(&vals).unwrap()
        ));
    }
    for (k, t) in ts.iter().enumerate() {
        metrics.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"up\",\"job\":\"vmsingle-job-1\"}},\"timestamps\":[{}],\"values\":[{}]}}\n",
            t,
            k % 2
        ));
    }
    let md = serde_json::json!({
        "export_id": "export-1700000000",
        "export_date": "2023-11-14T22:13:20.123456789Z",
        "time_range": {"start": "2023-11-14T21:13:20Z", "end": "2023-11-14T22:13:20Z"},
        "components": ["vmsingle"],
        "jobs": ["vmsingle-job-1"],
        "metrics_count": 25,
        "obfuscated": true,
        "vmgather_version": "1.4.0"
    });
    let readme = "VictoriaMetrics Metrics Export\n================================\n";
    let bundle = dir
        .path()
        .join("vmexport_export-1700000000_20231114_221320.zip");
    write_zip(
        &bundle,
        &[
            ("metrics.jsonl", metrics.into_bytes()),
            ("metadata.json", serde_json::to_vec_pretty(&md).unwrap()),
            ("README.txt", readme.as_bytes().to_vec()),
        ],
        &[],
    );
    let run = spillway(&["import", bundle.to_str().unwrap(), "--url", &b.url()]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("25 lines, 6 series, 120 samples"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout().contains("metrics.jsonl not in metadata"),
        "{}",
        run.describe()
    );
    b.flush();
    let got = export_map(&b.url(), r#"{__name__!=""}"#);
    assert_eq!(got.len(), 6);
    assert_eq!(total_samples(&got), 120);
    let up = got.iter().find(|(k, _)| k.contains("\"up\"")).unwrap().1;
    assert_eq!(up.iter().map(|s| s.0).collect::<Vec<_>>(), ts);
    assert!(
        got.keys().any(|k| k.contains("/api<v1>")),
        "{:?}",
        got.keys()
    );
}

#[test]
fn retention_skips_old_points_and_shift_to_now_keeps_them() {
    let b = Vm::start_with(&["-retentionPeriod=1d"]);
    let dir = tempfile::tempdir().unwrap();
    let end = recent_minute() - 3 * 86_400_000;
    let start = end - 3_600_000;
    let bundle = dir.path().join("old.jsonl");
    let series: Vec<Vec<(&str, String)>> = (0..4)
        .map(|i| vec![("__name__", "old".to_string()), ("i", i.to_string())])
        .collect();
    let mut text = lines_for(&series, start, end, 60_000);
    let fresh = recent_minute();
    text.push_str(&vm_line(
        &[("__name__", "fresh")],
        &[(start, 1.0), (fresh, 2.0)],
    ));
    text.push('\n');
    std::fs::write(&bundle, &text).unwrap();

    let dry = spillway(&[
        "import",
        bundle.to_str().unwrap(),
        "--url",
        &b.url(),
        "--dry-run",
    ]);
    dry.assert_code(0);
    assert!(
        dry.stdout()
            .contains("would be skipped: 245 samples, 4 whole lines"),
        "{}",
        dry.describe()
    );
    assert_eq!(
        b.series_count(r#"{__name__!=""}"#),
        0,
        "a dry run sends nothing"
    );

    let run = spillway(&["import", bundle.to_str().unwrap(), "--url", &b.url()]);
    run.assert_code(0);
    assert!(
        run.stdout()
            .contains("were skipped: 245 samples, 4 whole lines"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout().contains("imported 1 samples in 1 lines"),
        "{}",
        run.describe()
    );
    b.flush();
    let got = export_map(&b.url(), r#"{__name__!=""}"#);
    assert_eq!(got.len(), 1);

    let old_only = dir.path().join("old-only.jsonl");
    std::fs::write(&old_only, lines_for(&series, start, end, 60_000)).unwrap();
    let shifted = spillway(&[
        "import",
        old_only.to_str().unwrap(),
        "--url",
        &b.url(),
        "--shift-to-now",
    ]);
    shifted.assert_code(0);
    assert!(
        shifted.stdout().contains("shifted by"),
        "{}",
        shifted.describe()
    );
    b.flush();
    let got = export_map(&b.url(), r#"{__name__="old"}"#);
    assert_eq!(got.len(), 4);
    assert_eq!(total_samples(&got), 4 * 61);
}

#[test]
fn prometheus_is_recognised_and_read_with_query_range() {
    let p = Prometheus::start();
    let end = recent_minute();
    let start = end - 20 * 60_000;
    let series: Vec<spillway::model::Series> = (0..3)
        .map(|i| {
            let labels = spillway::model::Labels::from_pairs([
                ("__name__", "node_load1".to_string()),
                ("job", "node".to_string()),
                ("instance", format!("10.9.9.{i}:9100")),
            ]);
            let samples = (0..=80)
                .map(|k| spillway::model::Sample::new(start + k * 15_000, (i * 100 + k) as f64))
                .collect();
            spillway::model::Series::new(labels, samples)
        })
        .collect();
    let mut body = Vec::new();
    spillway::codec::encode_write_request(&series, &mut body).unwrap();
    p.remote_write(&body);

    let v = spillway(&["gather", "--url", &p.url(), "--validate-only", "--json"]);
    v.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&v.stdout()).unwrap();
    assert_eq!(report["flavour"], "prometheus", "{report}");
    assert!(
        report["version"]
            .as_str()
            .is_some_and(|s| s.starts_with("2.")),
        "{report}"
    );
    assert_eq!(report["export_api"], false, "{report}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = spillway(&[
        "gather",
        "--url",
        &p.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--selector",
        "node_load1",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().contains("via query_range, prometheus"),
        "{}",
        run.describe()
    );
    let got = bundle_series(&find_bundle(&out));
    assert_eq!(got.len(), 3);
    for samples in got.values() {
        // A 20 min range: 1 min windows and step, so one point per minute.
        assert_eq!(samples.len(), 21, "{samples:?}");
        assert!(samples.iter().all(|(t, _)| t % 60_000 == 0));
    }
}

#[test]
fn export_and_import_jobs_report_progress_and_cancel_cleanly() {
    use spillway::bundle::{
        BundleError, ExportJob, ExportParams, ExportStage, ImportJob, ImportParams, ImportStage,
    };
    let a = Vm::start();
    let b = Vm::start();
    let end = recent_minute();
    let start = end - 6 * 3_600_000;
    a.import(&lines_for(&fleet(), start, end, 60_000));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let client = |url: String| spillway::client::ClientConfig {
        url,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 721 windows of 30 s: the job is cancelled long before the end.
        let params = ExportParams {
            client: client(a.url()),
            selectors: vec![],
            jobs: vec![],
            from_ms: start,
            to_ms: end,
            step_ms: None,
            batch_window_ms: Some(30_000),
            batch_samples: None,
            native: true,
            obfuscation: Default::default(),
            obfuscation_map: None,
            out_dir: out.clone(),
            staging_dir: None,
            resume: false,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let job = ExportJob::start(params, Some(tx));
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if ev.stage == ExportStage::Exporting && ev.windows_done >= 3 {
                assert_eq!(ev.windows_total, 721);
                assert!(ev.samples > 0 && ev.bytes > 0 && ev.eta.is_some(), "{ev:?}");
                break;
            }
        }
        job.cancel();
        assert!(matches!(job.wait().await, Err(BundleError::Cancelled)));
    });
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["spillway-staging"],
        "no archive or temp file is left"
    );
    let staged: Vec<String> = std::fs::read_dir(out.join("spillway-staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(staged.iter().all(|n| !n.starts_with('.')), "{staged:?}");
    assert!(
        staged.iter().filter(|n| n.starts_with("window-")).count() >= 3,
        "{staged:?}"
    );

    // Import: cancelled part-way, the offset is saved for --resume.
    let bundle = dir.path().join("big.jsonl");
    let series: Vec<Vec<(&str, String)>> = (0..10_000)
        .map(|i| vec![("__name__", "m".to_string()), ("i", i.to_string())])
        .collect();
    std::fs::write(&bundle, lines_for(&series, end - 6 * 60_000, end, 15_000)).unwrap();
    rt.block_on(async {
        let mut params = ImportParams::new(client(b.url()), bundle.clone());
        params.chunk_bytes = 1024;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let job = ImportJob::start(params, Some(tx));
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap();
            // Chunks are acknowledged out of order (requests run in
            // parallel): wait for the committed prefix to move, not only
            // for a number of acknowledged chunks.
            if ev.stage == ImportStage::Uploading && ev.chunks >= 5 && ev.bytes_done > 0 {
                break;
            }
        }
        job.cancel();
        assert!(matches!(job.wait().await, Err(BundleError::Cancelled)));
    });
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("big.jsonl.import-state.json")).unwrap(),
    )
    .unwrap();
    let committed = state["committed_offset"].as_u64().unwrap();
    assert!(
        committed > 0 && committed < std::fs::metadata(&bundle).unwrap().len(),
        "{state}"
    );
}

#[test]
fn step_keeps_one_point_per_interval() {
    let a = Vm::start();
    let end = recent_minute();
    let start = end - 10 * 60_000;
    a.import(&lines_for(&fleet(), start, end, 15_000));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    spillway(&[
        "gather",
        "--url",
        &a.url(),
        "--from",
        &secs(start),
        "--to",
        &secs(end),
        "--step",
        "1m",
        "--out",
        out.to_str().unwrap(),
    ])
    .assert_code(0);
    let bundle = find_bundle(&out);
    assert_eq!(metadata(&bundle)["step_seconds"], 60.0);
    let src = export_map(&a.url(), r#"{__name__!=""}"#);
    for (k, samples) in bundle_series(&bundle) {
        // The last sample of each minute, as -dedup.minScrapeInterval=1m keeps it.
        let mut want: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
        for &(t, v) in &src[&k] {
            want.insert(t.div_euclid(60_000), (t, v));
        }
        assert_eq!(samples, want.into_values().collect::<Vec<_>>(), "{k}");
    }
}

/// Native blocks and JSON lines must leave the same data on the server:
/// the same .jsonl imported both ways into two fresh servers, then both
/// exports compared line for line. The values are the awkward ones (more
/// digits than VictoriaMetrics keeps, magnitudes no single decimal scale
/// holds, integers past 2^53, ±Inf, a NaN and a subnormal that only JSON
/// carries, unsorted timestamps, escapes in labels); chunks of 1 KiB make
/// some chunks native and some JSON.
#[test]
fn native_and_json_imports_store_the_same_data() {
    let end = recent_minute();
    let t = |i: i64| end - 3_600_000 + i * 15_000;
    let mut lines = Vec::new();
    let raw = |name: &str, values: &str, timestamps: &[i64]| {
        let ts: Vec<String> = timestamps.iter().map(|t| t.to_string()).collect();
        format!(
            r#"{{"metric":{{"__name__":"{name}","note":"quote \" slash \\ tab \t é"}},"values":[{values}],"timestamps":[{}]}}"#,
            ts.join(",")
        )
    };
    lines.push(raw("subnormal", "5e-324,1", &[t(0), t(1)]));
    for s in 0..40 {
        let points: Vec<(i64, f64)> = (0..30)
            .map(|k| (t(k), (s * 31 + k) as f64 * 0.37 - 100.0))
            .collect();
        let job = format!("job-{s}");
        lines.push(vm_line(
            &[("__name__", "fleet_gauge"), ("job", &job)],
            &points,
        ));
    }
    lines.push(raw(
        "digits",
        "0.1234567890123456,-123456.7890123456,3.3333333333333335,1e-7,0.30000000000000004",
        &[t(0), t(1), t(2), t(3), t(4)],
    ));
    lines.push(raw(
        "mixed_scale",
        "3e17,0.07,5e-7,45,0.7",
        &[t(0), t(1), t(2), t(3), t(4)],
    ));
    lines.push(raw(
        "big_ints",
        "9007199254740993,18446744073709551615,-9223372036854775808,1e21",
        &[t(0), t(1), t(2), t(3)],
    ));
    lines.push(raw(
        "infinities",
        "1,+Inf,-Inf,2",
        &[t(0), t(1), t(2), t(3)],
    ));
    lines.push(raw("unsorted", "3,1,2", &[t(2), t(0), t(1)]));
    lines.push(raw("with_nan", "1,NaN,3", &[t(0), t(1), t(2)]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("awkward.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let import = |vm: &Vm, wire: &str| {
        let run = spillway(&[
            "import",
            file.to_str().unwrap(),
            "--url",
            &vm.url(),
            "--chunk-size",
            "1KiB",
            "--wire-format",
            wire,
        ]);
        run.assert_code(0);
        run.stdout()
    };
    let native = Vm::start();
    let json = Vm::start();
    let native_out = import(&native, "native");
    let json_out = import(&json, "json");
    assert!(
        native_out.contains("sent as native blocks (/api/v1/import/native, layout before 1.82)"),
        "{native_out}"
    );
    let fallback = regex::Regex::new(r"; (\d+) chunks? as JSON lines").unwrap();
    let json_chunks: u64 = fallback
        .captures(&native_out)
        .map(|c| c[1].parse().unwrap())
        .unwrap_or_else(|| panic!("no JSON fallback reported: {native_out}"));
    // The NaN's chunk and the subnormal's, at least; most chunks stay native.
    assert!((2..10).contains(&json_chunks), "{native_out}");
    assert!(
        json_out.contains("sent as JSON lines (/api/v1/import)"),
        "{json_out}"
    );
    let inserted = |vm: &Vm, kind: &str| {
        metric_value(
            &http_get(&format!("{}/metrics", vm.url())),
            "vm_rows_inserted_total",
            &[("type", kind)],
        )
        .unwrap_or(0.0)
    };
    let all = r#"{__name__!=""}"#;
    let want = json.export_until(all, |l| l.to_vec(), |l| l.len() == lines.len());
    let got = native.export_until(all, |l| l.to_vec(), |l| *l == want);
    assert_eq!(got.len(), lines.len());
    assert_eq!(got, want);
    // VictoriaMetrics' own counters (its /metrics lags a moment): most rows
    // came as native blocks to one server, none to the other.
    wait_for("native rows counted", Duration::from_secs(10), || {
        inserted(&native, "native") >= 1000.0
    });
    assert_eq!(inserted(&json, "native"), 0.0);
}

#[test]
fn native_import_to_a_server_without_it_says_so() {
    let prom = Prometheus::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.jsonl");
    std::fs::write(
        &file,
        vm_line(&[("__name__", "m")], &[(recent_minute(), 1.0)]) + "\n",
    )
    .unwrap();
    let run = spillway(&[
        "import",
        file.to_str().unwrap(),
        "--url",
        &prom.url(),
        "--wire-format",
        "native",
    ]);
    run.assert_code(2);
    assert!(
        run.stderr()
            .contains("refused native blocks at /api/v1/import/native in both layouts"),
        "{}",
        run.describe()
    );
}
