//! Differential test of relabeling against the real vmagent (Debian's
//! 1.79): the same series go through vmagent with
//! `-remoteWrite.urlRelabelConfig` into VictoriaMetrics A, and through
//! `spillway run` (receiver + destinations with the same `relabel_configs`)
//! into VictoriaMetrics B; both must hold exactly the same series.
//!
//! All cases run in one start of each server: case `cN` is one
//! `-remoteWrite.url` / one spillway destination, and both write to
//! `/api/v1/write?extra_label=relabel_case=cN`, so VictoriaMetrics tags each
//! case's output without a relabel rule of ours. Only features vmagent 1.79
//! has are used: it lacks `keepequal`, `dropequal`, `keep_if_contains`,
//! `drop_if_contains`, a list under `if:`, and `{{label}}` placeholders in
//! `replacement` (it writes them literally); the conformance vectors and
//! unit tests cover those.
//!
//! vmagent is fed one series per request: 1.79 matches `if:` against the
//! labels of every series relabeled so far in the same request, not just
//! the current one (a bug fixed in later versions), so with several series
//! per request a selector sees a neighbour's labels.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// (what it covers, the relabel_configs YAML list)
const CASES: &[(&str, &str)] = &[
    ("replace copy", "- source_labels: [job]\n  target_label: job_copy\n"),
    (
        "replace with groups",
        "- source_labels: [instance]\n  regex: '(.+):(\\d+)'\n  target_label: host\n  replacement: $1\n",
    ),
    (
        "replace joining sources with a separator",
        "- source_labels: [job, instance, missing]\n  separator: '@'\n  target_label: joined\n",
    ),
    (
        "replace with a group in target_label",
        "- source_labels: [env]\n  regex: '(p.*)'\n  target_label: env_$1\n  replacement: yes\n",
    ),
    ("keep", "- action: keep\n  source_labels: [env]\n  regex: prod|stage\n"),
    ("drop", "- action: drop\n  source_labels: [__name__]\n  regex: '.*_total'\n"),
    ("labelmap", "- action: labelmap\n  regex: meta_(.+)\n  replacement: $1\n"),
    ("labeldrop", "- action: labeldrop\n  regex: meta_.*|Mixed\n"),
    ("labelkeep", "- action: labelkeep\n  regex: __name__|job|env\n"),
    (
        "hashmod (xxhash, VictoriaMetrics dialect)",
        "- action: hashmod\n  source_labels: [instance]\n  modulus: 4\n  target_label: shard\n",
    ),
    ("keep_if_equal", "- action: keep_if_equal\n  source_labels: [a, b]\n"),
    ("drop_if_equal", "- action: drop_if_equal\n  source_labels: [a, b]\n"),
    (
        "if: on replace",
        "- if: '{env=\"prod\"}'\n  target_label: tier\n  replacement: gold\n",
    ),
    (
        "if: on drop, with a regex matcher",
        "- if: 'http_requests_total{code=~\"5..\"}'\n  action: drop\n",
    ),
    ("lowercase", "- action: lowercase\n  source_labels: [Mixed]\n  target_label: mixed_lower\n"),
    ("uppercase", "- action: uppercase\n  source_labels: [env]\n  target_label: ENV\n"),
    (
        "replace_all",
        "- action: replace_all\n  source_labels: [path]\n  target_label: path\n  regex: /\n  replacement: _\n",
    ),
    ("labelmap_all", "- action: labelmap_all\n  regex: meta_\n  replacement: m_\n"),
    ("keep_metrics", "- action: keep_metrics\n  regex: up|node_.*\n"),
    ("drop_metrics", "- action: drop_metrics\n  regex: node_.*\n"),
    ("regex as a list", "- action: keep\n  source_labels: [job]\n  regex: [api, db]\n"),
    ("constant label", "- target_label: constant\n  replacement: c1\n"),
    (
        "graphite",
        "- action: graphite\n  match: 'foo.*.bar'\n  labels:\n    __name__: foo_bar\n    part: $1\n",
    ),
    (
        "temporary __ label removed after relabeling",
        "- source_labels: [job]\n  target_label: __tmp_job\n- source_labels: [__tmp_job]\n  regex: a(.*)\n  target_label: job_tail\n",
    ),
    (
        "empty replacement deletes a label",
        "- source_labels: [meta_secret]\n  regex: '.+'\n  target_label: meta_secret\n  replacement: ''\n",
    ),
    (
        "non-matching regex changes nothing",
        "- source_labels: [job]\n  regex: nomatch\n  target_label: job\n  replacement: x\n",
    ),
    ("labelkeep of nothing drops the series", "- action: labelkeep\n  regex: nomatch\n"),
    (
        "a chain: labelmap, labeldrop, replace, keep",
        "- action: labelmap\n  regex: meta_(.+)\n- action: labeldrop\n  regex: meta_.*\n- source_labels: [team, owner]\n  separator: ''\n  target_label: who\n- action: keep\n  source_labels: [who]\n  regex: '.+'\n",
    ),
];

/// The input: varied names, labels that the cases look at, one sample each.
fn input(ts: i64) -> String {
    let series: &[&[(&str, &str)]] = &[
        &[
            ("__name__", "up"),
            ("job", "api"),
            ("instance", "10.0.0.1:9100"),
            ("env", "prod"),
            ("meta_team", "a"),
            ("a", "x"),
            ("b", "x"),
            ("Mixed", "AbC"),
            ("path", "/a/b"),
        ],
        &[
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("instance", "10.0.0.2:8080"),
            ("env", "stage"),
            ("code", "500"),
            ("a", "x"),
            ("b", "y"),
        ],
        &[
            ("__name__", "http_requests_total"),
            ("job", "db"),
            ("instance", "db1:9187"),
            ("env", "dev"),
            ("code", "200"),
            ("meta_owner", "z"),
        ],
        &[
            ("__name__", "node_cpu_seconds_total"),
            ("job", "node"),
            ("instance", "n1:9100"),
            ("env", "prod"),
            ("cpu", "0"),
            ("mode", "idle"),
        ],
        &[
            ("__name__", "node_load1"),
            ("job", "node"),
            ("instance", "n2:9100"),
            ("env", "prod"),
        ],
        &[("__name__", "foo.x.bar"), ("instance", "h1")],
        &[("__name__", "foo.y.baz"), ("instance", "h2")],
        &[
            ("__name__", "m"),
            ("job", "Api"),
            ("env", "PROD"),
            ("path", "/x/y/z"),
            ("Mixed", "lower"),
        ],
        &[
            ("__name__", "process_open_fds"),
            ("job", "db"),
            ("instance", "db2:9187"),
            ("meta_secret", "s"),
            ("meta_team", "b"),
            ("env", "prod"),
        ],
        &[
            ("__name__", "up"),
            ("job", "db"),
            ("instance", "[::1]:9100"),
            ("env", "stage"),
            ("b", ""),
        ],
        &[
            ("__name__", "up"),
            ("job", "abc"),
            ("instance", "x:1"),
            ("env", "prod"),
            ("meta_owner", "o"),
        ],
    ];
    let mut out = String::new();
    for (i, labels) in series.iter().enumerate() {
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .copied()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        out.push_str(&vm_line(&labels, &[(ts, i as f64 + 0.5)]));
        out.push('\n');
    }
    out
}

/// Export lines parsed into comparable form, grouped by case.
type Rows = BTreeMap<String, BTreeSet<String>>;

fn by_case(lines: &[String]) -> Rows {
    let mut out: Rows = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut metric: BTreeMap<String, String> =
            serde_json::from_value(v["metric"].clone()).unwrap();
        let case = metric.remove("relabel_case").unwrap_or_default();
        out.entry(case)
            .or_default()
            .insert(format!("{metric:?} {} {}", v["values"], v["timestamps"]));
    }
    out
}

fn indent(yaml: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    yaml.lines().map(|l| format!("{pad}{l}\n")).collect()
}

#[test]
fn spillway_relabels_exactly_like_vmagent() {
    assert!(CASES.len() >= 20);
    let vm_a = Vm::start();
    let vm_b = Vm::start();

    let files: Vec<(String, &str)> = CASES
        .iter()
        .enumerate()
        .map(|(i, (_, yaml))| (format!("c{i}.yml"), *yaml))
        .collect();
    let file_refs: Vec<(&str, &str)> = files.iter().map(|(n, y)| (n.as_str(), *y)).collect();
    let mut flags = vec!["-remoteWrite.flushInterval=100ms".to_string()];
    for i in 0..CASES.len() {
        flags.push(format!(
            "-remoteWrite.url={}/api/v1/write?extra_label=relabel_case=c{i}",
            vm_a.url()
        ));
        flags.push(format!("-remoteWrite.urlRelabelConfig={{dir}}/c{i}.yml"));
    }
    let agent = Vmagent::start(&file_refs, &flags);

    let mut config = String::from("storage: {path: \"{dir}/data\"}\ndestinations:\n");
    for (i, (_, yaml)) in CASES.iter().enumerate() {
        config.push_str(&format!(
            "  - name: c{i}\n    url: {}/api/v1/write?extra_label=relabel_case=c{i}\n    flush_interval: 100ms\n    concurrency: 1\n    relabel_configs:\n{}",
            vm_b.url(),
            indent(yaml, 6)
        ));
    }
    let sp = SpillwayRun::start(&config);

    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 600_000)
        / 1000
        * 1000;
    let body = input(ts);
    for line in body.lines() {
        http_post(&format!("{}/api/v1/import", agent.url()), line.as_bytes());
    }
    http_post(&format!("{}/api/v1/import", sp.url()), body.as_bytes());

    sp.wait_delivered(Duration::from_secs(20));
    let b = by_case(&vm_b.export_lines("{relabel_case!=\"\"}"));
    // vmagent has no delivery API to ask: wait until A stops changing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut a = by_case(&vm_a.export_lines("{relabel_case!=\"\"}"));
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let again = by_case(&vm_a.export_lines("{relabel_case!=\"\"}"));
        if again == a && (a == b || Instant::now() > deadline) {
            break;
        }
        a = again;
    }

    let mut failures = Vec::new();
    for (i, (what, yaml)) in CASES.iter().enumerate() {
        let case = format!("c{i}");
        let (va, vb) = (
            a.get(&case).cloned().unwrap_or_default(),
            b.get(&case).cloned().unwrap_or_default(),
        );
        if va != vb {
            failures.push(format!(
                "case {case} ({what}):\n{yaml}  vmagent only:\n{}\n  spillway only:\n{}",
                va.difference(&vb)
                    .map(|s| format!("    {s}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                vb.difference(&va)
                    .map(|s| format!("    {s}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    // The cases did something: most kept some series, and they did not all agree by doing nothing.
    let non_empty = (0..CASES.len())
        .filter(|i| b.contains_key(&format!("c{i}")))
        .count();
    assert!(
        non_empty >= CASES.len() - 2,
        "{non_empty} cases produced series"
    );
    assert!(
        !b.contains_key(&format!("c{}", CASES.len() - 2)),
        "labelkeep of nothing drops everything"
    );
    let distinct: BTreeSet<&BTreeSet<String>> = b.values().collect();
    assert!(
        distinct.len() > CASES.len() / 2,
        "cases produce different outputs"
    );
}
