//! Relabeling cost per series, swept over rule sets and batch sizes, and
//! the whole per-destination accept path (relabel + encode + durable queue
//! push) that `spillway run` pays for every routed batch.
//!
//! A plain `main` timed with `Instant` (`harness = false`):
//! `cargo bench --bench relabel`. Each case repeats for about a second and
//! prints the mean time per series and series per second. "clone only" is
//! the baseline: a destination relabels a copy of each series' labels, so
//! that copy is part of every other case. `BENCH_SAVE=name` /
//! `BENCH_BASELINE=name`: see `support` (the figure kept is series per second).

mod support;

use spillway::client::ClientConfig;
use spillway::model::{Labels, Sample, Series};
use spillway::sink::destination::{Destination, DestinationConfig, DestinationKind};
use spillway::transform::relabel::{Dialect, RelabelRules};
use std::hint::black_box;
use std::time::Duration;
use support::{time_mean, Baseline};

const BATCHES: [usize; 2] = [1_000, 10_000];

const RULE_SETS: &[(&str, &str)] = &[
    ("clone only", "[]"),
    ("keep by label", "- action: keep\n  source_labels: [route]\n  regex: a\n"),
    (
        "replace, groups",
        "- source_labels: [instance]\n  regex: '(.+):(\\d+)'\n  target_label: host\n  replacement: $1\n",
    ),
    ("labelmap", "- action: labelmap\n  regex: 'p(.*)'\n  replacement: x_$1\n"),
    ("labeldrop", "- action: labeldrop\n  regex: path|method\n"),
    (
        "hashmod + keep",
        "- action: hashmod\n  source_labels: [instance]\n  modulus: 4\n  target_label: __shard\n- action: keep\n  source_labels: [__shard]\n  regex: '1'\n",
    ),
    ("if: + replace", "- if: '{code=~\"5..\"}'\n  target_label: severity\n  replacement: page\n"),
    (
        "chain of 5",
        "- action: drop\n  source_labels: [__name__]\n  regex: go_.*\n- source_labels: [instance]\n  regex: '(.+):\\d+'\n  target_label: host\n- action: labeldrop\n  regex: path\n- target_label: env\n  replacement: prod\n- action: keep\n  source_labels: [code]\n  regex: '[2-5]..'\n",
    ),
];

fn batch(series: usize) -> Vec<Series> {
    (0..series)
        .map(|i| {
            let labels = Labels::from_pairs([
                ("__name__", "http_requests_total".to_string()),
                ("job", "api-server".to_string()),
                (
                    "instance",
                    format!("10.0.{}.{}:9100", (i / 256) % 256, i % 256),
                ),
                ("method", ["GET", "POST", "PUT"][i % 3].to_string()),
                ("code", ["200", "404", "500", "503"][i % 4].to_string()),
                ("path", format!("/api/v1/items/{}", i % 97)),
                ("route", ["a", "b"][i % 2].to_string()),
            ]);
            Series::new(labels, vec![Sample::new(1_700_000_000_000, i as f64)])
        })
        .collect()
}

fn report(baseline: &mut Baseline, case: &str, series: usize, per_batch: Duration) {
    let secs = per_batch.as_secs_f64();
    let rate = series as f64 / secs;
    let change = baseline.record(&format!("{case} {series}"), rate);
    println!(
        "{case:<40} {series:>7} {:>12.1} {:>14.2}{change}",
        secs * 1e9 / series as f64,
        rate / 1e6
    );
}

fn main() {
    let mut baseline = Baseline::from_env("relabel");
    println!(
        "{:<40} {:>7} {:>12} {:>14}",
        "case", "series", "ns/series", "Mseries/s"
    );
    for &(name, yaml) in RULE_SETS {
        let rules = RelabelRules::from_yaml(yaml, name, Dialect::VictoriaMetrics).unwrap();
        for &n in &BATCHES {
            let series = batch(n);
            let per = time_mean(|| {
                let mut kept = 0usize;
                for s in &series {
                    let mut labels = s.labels.clone();
                    if rules.is_empty() || rules.apply(&mut labels) {
                        kept += labels.len();
                    }
                    black_box(&labels);
                }
                black_box(kept);
            });
            report(&mut baseline, name, n, per);
        }
    }

    // Filter-only rules decide on the original labels, no copy: what a
    // destination with `keep`/`drop` rules pays per series.
    let rules = RelabelRules::from_yaml(RULE_SETS[1].1, "keep", Dialect::VictoriaMetrics).unwrap();
    for &n in &BATCHES {
        let series = batch(n);
        let per = time_mean(|| {
            let kept = series
                .iter()
                .filter(|s| rules.keeps(&s.labels) == Some(true))
                .count();
            black_box(kept);
        });
        report(&mut baseline, "keep by label, no copy (keeps)", n, per);
    }

    // The whole accept path of one destination: relabel, encode blocks,
    // fdatasync'ed queue push. Senders are not started, so the queue only grows.
    let dir = tempfile::tempdir().unwrap();
    for (name, kind, yaml) in [
        (
            "accept remote_write, keep half",
            DestinationKind::RemoteWrite,
            RULE_SETS[1].1,
        ),
        (
            "accept remote_write, no rules",
            DestinationKind::RemoteWrite,
            "[]",
        ),
        (
            "accept vm_import, keep half",
            DestinationKind::VmImport,
            RULE_SETS[1].1,
        ),
    ] {
        for &n in &BATCHES {
            let mut config = DestinationConfig::new(
                &format!("{name} {n}"),
                kind,
                ClientConfig {
                    url: "http://127.0.0.1:1".into(),
                    ..Default::default()
                },
                dir.path(),
            );
            config.relabel = RelabelRules::from_yaml(yaml, name, Dialect::VictoriaMetrics).unwrap();
            config.max_disk_bytes = 16 << 30;
            let (dest, _) = Destination::open(config).unwrap();
            let series = batch(n);
            let per = time_mean(|| {
                black_box(dest.accept(&series).unwrap());
            });
            report(&mut baseline, name, n, per);
        }
    }
    baseline.finish();
}
