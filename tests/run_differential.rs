//! The whole pipeline against the pair it replaces: the same rule file and
//! source data through vmalert 1.79 → vmagent (two `-remoteWrite.url`, each
//! with its `-remoteWrite.urlRelabelConfig`) into VictoriaMetrics A1 and A2,
//! and through `spillway run` (two destinations with the same relabel
//! configs) into B1 and B2. After the same evaluation timestamps A1 holds
//! what B1 holds and A2 what B2 holds: the same series, timestamps and
//! values, stale markers included.
//!
//! Recording rules only: alerting rules are compared at the engine level
//! in `tests/engine.rs` (vmalert 1.79 writes alert series at unaligned
//! times and also writes pending alerts, which needs normalising that
//! would blur a pipeline comparison).

mod common;

use common::{series_points, vm_line, Server, SpillwayRun, Vm, Vmagent};
use spillway::run::rules::{load_str, LoadOptions};
use spillway::run::schedule::go_truncate;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RULES: &str = r#"groups:
- name: static
  interval: 5s
  rules:
  - record: rec_hot
    expr: temp > 55
    labels: {severity: high, export_target: one, source: ""}
  - record: rec_rate
    expr: rate(requests_total[30s]) > 1.5
    labels: {export_target: two}
- name: odd
  interval: 7s
  labels: {region: eu}
  rules:
  - record: rec_cmp
    expr: temp - temp offset 1m > 3
    labels: {export_target: one}
  - record: rec_predict
    expr: predict_linear(disk_free[2m], 600) < 0
  - record: rec_sum
    expr: sum by (source) (temp) > 220
    labels: {export_target: two}
"#;

/// Destination one keeps `export_target="one"`.
const RELABEL_ONE: &str = "- action: keep
  source_labels: [export_target]
  regex: one
";

/// Destination two takes everything else, without the routing label.
const RELABEL_TWO: &str = "- action: drop
  source_labels: [export_target]
  regex: one
- action: labeldrop
  regex: export_target
- target_label: routed
  replacement: 'two'
";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 1000
        * 1000
}

/// Fixtures from 15 minutes ago to 3 minutes ahead, one sample a second.
fn fixtures(from: i64, to: i64) -> String {
    let secs = || from / 1000..=to / 1000;
    let mut lines = String::new();
    for i in 0..4i64 {
        let sensor = format!("s{i}");
        // A 16s saw between 50 and 65.
        let samples: Vec<(i64, f64)> = secs()
            .map(|s| (s * 1000, 50.0 + (s + 5 * i).rem_euclid(16) as f64))
            .collect();
        lines.push_str(&vm_line(
            &[
                ("__name__", "temp"),
                ("sensor", &sensor),
                ("source", "fixture"),
            ],
            &samples,
        ));
        lines.push('\n');
    }
    for (i, path) in ["/a", "/b"].iter().enumerate() {
        let mut total = 0.0;
        let samples: Vec<(i64, f64)> = secs()
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
        let samples: Vec<(i64, f64)> = secs()
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
    lines
}

fn interval_of(labels: &str) -> i64 {
    if labels.starts_with("rec_hot") || labels.starts_with("rec_rate") {
        5_000
    } else {
        7_000
    }
}

type Points = BTreeMap<String, Vec<(i64, String)>>;

/// vmalert 1.79 stamps stale markers with its unaligned evaluation time;
/// results carry the aligned one. Align both to the group's grid.
fn aligned(points: Points) -> Points {
    points
        .into_iter()
        .map(|(labels, samples)| {
            let step = interval_of(&labels);
            let s = samples
                .into_iter()
                .map(|(t, v)| (go_truncate(t, step), v))
                .collect();
            (labels, s)
        })
        .collect()
}

/// First and last grid timestamp of `step`-interval series in `m`.
fn range(m: &Points, step: i64) -> (i64, i64) {
    let all: Vec<i64> = m
        .iter()
        .filter(|(l, _)| interval_of(l) == step)
        .flat_map(|(_, s)| s.iter().map(|x| x.0))
        .collect();
    (
        *all.iter().min().unwrap_or(&i64::MAX),
        *all.iter().max().unwrap_or(&i64::MIN),
    )
}

/// The `step`-interval series of `m` within `[lo, hi]`.
fn window(m: &Points, step: i64, lo: i64, hi: i64) -> Points {
    m.iter()
        .filter(|(l, _)| interval_of(l) == step)
        .map(|(l, s)| {
            let s: Vec<(i64, String)> = s
                .iter()
                .filter(|x| x.0 >= lo && x.0 <= hi)
                .cloned()
                .collect();
            (l.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

#[test]
fn vmalert_and_vmagent_pair_and_spillway_fill_their_destinations_alike() {
    let src = Vm::start();
    let (a1, a2, b1, b2) = (Vm::start(), Vm::start(), Vm::start(), Vm::start());
    let now = now_ms();
    src.import(&fixtures(now - 900_000, now + 180_000));

    // vmalert 1.79 evaluates each group at a fixed phase of its interval,
    // derived from the group id (file and name); VictoriaMetrics answers a
    // query for T sent before T+1s as of T-1s. Pick a file name whose
    // phases leave vmalert more than a second after each timestamp (see
    // tests/engine.rs for the measurements behind this).
    let dir = tempfile::tempdir().unwrap();
    let rule_file = (0..1000)
        .map(|n| dir.path().join(format!("rules-{n}.yml")))
        .find(|p| {
            load_str(&p.display().to_string(), RULES, &LoadOptions::default())
                .unwrap()
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
    std::fs::write(&rule_file, RULES).unwrap();

    let vmagent = Vmagent::start(
        &[("one.yml", RELABEL_ONE), ("two.yml", RELABEL_TWO)],
        &[
            format!("-remoteWrite.url={}/api/v1/write", a1.url()),
            "-remoteWrite.urlRelabelConfig={dir}/one.yml".into(),
            format!("-remoteWrite.url={}/api/v1/write", a2.url()),
            "-remoteWrite.urlRelabelConfig={dir}/two.yml".into(),
            "-remoteWrite.flushInterval=200ms".into(),
        ],
    );
    let port = common::free_port();
    let vmalert = Server::start(
        "vmalert",
        port,
        vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-datasource.url={}", src.url()),
            format!("-remoteWrite.url={}", vmagent.url()),
            "-remoteWrite.flushInterval=200ms".into(),
            format!("-rule={}", rule_file.display()),
            "-notifier.url=http://127.0.0.1:1".into(),
            "-loggerLevel=ERROR".into(),
        ],
    );
    vmalert.wait_ready("/health");

    let indent = |yaml: &str| -> String {
        yaml.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    let config = format!(
        "datasource: {{url: '{}'}}
rule_files: ['{}']
evaluation: {{eval_delay: 0s}}
storage: {{path: '{{dir}}/queues'}}
destinations:
  - name: one
    url: {}/api/v1/write
    flush_interval: 200ms
    relabel_configs:
{}  - name: two
    url: {}/api/v1/write
    flush_interval: 200ms
    relabel_configs:
{}",
        src.url(),
        rule_file.display(),
        b1.url(),
        indent(RELABEL_ONE),
        b2.url(),
        indent(RELABEL_TWO),
    );
    let sp = SpillwayRun::start(&config);

    // The sleep is the thing under test: both pipelines evaluate side by
    // side on the wall clock, and the comparison covers that run.
    std::thread::sleep(Duration::from_secs(36));
    // SIGTERM: vmalert flushes what it evaluated; spillway runs on, and
    // the comparison ends at vmalert's last timestamp.
    let mut vmalert = vmalert;
    vmalert.terminate(Duration::from_secs(10));
    let _ = &sp;
    let selector = r#"{__name__=~"rec_.*"}"#;
    // Wait (bounded) until spillway's destinations reach vmalert's newest
    // timestamp in both groups, so the common window covers vmalert's run.
    let newest =
        |pair: [Points; 2], step: i64| range(&pair[0], step).1.max(range(&pair[1], step).1);
    let reached = |step: i64| {
        let a = [
            aligned(series_points(&a1, selector)),
            aligned(series_points(&a2, selector)),
        ];
        let b = [series_points(&b1, selector), series_points(&b2, selector)];
        newest(b, step) >= newest(a, step)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ![5_000, 7_000].into_iter().all(reached) {
        assert!(
            Instant::now() < deadline,
            "spillway's destinations did not reach vmalert's newest timestamps within 30s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let a = [
        aligned(series_points(&a1, selector)),
        aligned(series_points(&a2, selector)),
    ];
    let b = [series_points(&b1, selector), series_points(&b2, selector)];
    let mut compared = 0;
    for step in [5_000, 7_000] {
        // The grid timestamps both sides evaluated (seen at either of their
        // destinations), without the first (what precedes it decides its
        // stale markers).
        let side = |pair: &[Points; 2]| {
            let (r1, r2) = (range(&pair[0], step), range(&pair[1], step));
            (r1.0.min(r2.0), r1.1.max(r2.1))
        };
        let ((a_lo, a_hi), (b_lo, b_hi)) = (side(&a), side(&b));
        let lo = a_lo.max(b_lo) + step;
        let hi = a_hi.min(b_hi);
        assert!(
            hi - lo >= 2 * step,
            "too short a common window for {step}ms: {lo}..{hi}"
        );
        for (i, name) in ["one", "two"].iter().enumerate() {
            let (wa, wb) = (window(&a[i], step, lo, hi), window(&b[i], step, lo, hi));
            assert_eq!(
                wa.keys().collect::<Vec<_>>(),
                wb.keys().collect::<Vec<_>>(),
                "destination {name}, {step}ms group: different series"
            );
            for (labels, sa) in &wa {
                assert_eq!(sa, &wb[labels], "destination {name}: {labels}");
                compared += sa.len();
            }
        }
    }
    // The routing did its job on both sides.
    let one = series_points(&b1, selector);
    assert!(
        one.keys().all(|k| k.contains(r#"export_target="one""#)),
        "{:?}",
        one.keys()
    );
    assert!(one.keys().any(|k| k.starts_with("rec_hot{")));
    assert!(one.keys().any(|k| k.starts_with("rec_cmp{")));
    let two = series_points(&b2, selector);
    assert!(two
        .keys()
        .all(|k| k.contains(r#"routed="two""#) && !k.contains("export_target")));
    for name in ["rec_rate{", "rec_sum{", "rec_predict{"] {
        assert!(
            two.keys().any(|k| k.starts_with(name)),
            "{name} missing: {:?}",
            two.keys()
        );
    }
    assert!(
        one.values()
            .chain(two.values())
            .flatten()
            .any(|(_, v)| v == "stale"),
        "no stale marker reached the destinations"
    );
    assert!(compared >= 40, "compared only {compared} samples");
    eprintln!("pipeline differential: {compared} samples identical across both destination pairs");
}
