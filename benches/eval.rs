//! Cost of one recording-rule evaluation per result series, the part of
//! `spillway run` between the datasource's answer and the destinations:
//! vmalert's labelling, the duplicate check, what the rule remembers for
//! stale markers, and the sort. Swept over result sizes (100, 2k, 20k
//! series; scripts/bench-run.sh has 2k per rule); every round finds the
//! same series as the previous one (the steady state), except a tenth
//! replaced (stale markers and new series).
//!
//! A plain `main` timed with `Instant` (`harness = false`), like the other
//! benches: `cargo bench --bench eval`. Prints the mean time per
//! evaluation and per series. `BENCH_SAVE=name` / `BENCH_BASELINE=name`:
//! see `support` (the figure kept is series per second).

mod support;

use spillway::model::{Labels, Sample, Series};
use spillway::run::eval::{evaluate, RuleMemory, RuleSpec};
use spillway::run::rules::RuleType;
use std::collections::BTreeMap;
use std::hint::black_box;
use support::{time_for, time_mean, Baseline, CASE_TIME};

const SIZES: [usize; 3] = [100, 2_000, 20_000];

/// A query answer shaped like scripts/bench-run.sh's: `bench_value` series
/// with `series` and `rule` labels; `shift` renames a tenth of them.
fn answer(n: usize, shift: usize) -> Vec<Series> {
    (0..n)
        .map(|i| {
            let id = if i % 10 == 0 { i + shift * n } else { i };
            Series::new(
                Labels::from_pairs([
                    ("__name__", "bench_value".to_string()),
                    ("rule", "r3".to_string()),
                    ("series", id.to_string()),
                ]),
                vec![Sample::new(1_700_000_000_000, (i * 7 % 100) as f64)],
            )
        })
        .collect()
}

fn spec() -> RuleSpec {
    RuleSpec {
        group: "bench".into(),
        file: "rules.yml".into(),
        rule_type: RuleType::Prometheus,
        name: "bench:r3".into(),
        expr: "bench_value{rule=\"r3\"} > 20".into(),
        labels: BTreeMap::from([("export_target".to_string(), "d1".to_string())]),
        limit: 0,
        external_labels: BTreeMap::new(),
        alert: None,
        annotations: BTreeMap::new(),
    }
}

fn main() {
    let mut baseline = Baseline::from_env("eval");
    println!(
        "{:<22} {:>8} {:>12} {:>12}",
        "case", "series", "ms/eval", "ns/series"
    );
    let spec = spec();
    for &n in &SIZES {
        let answers = [answer(n, 0), answer(n, 1)];
        let mut memory = RuleMemory::default();
        let mut ts = 1_700_000_000_000i64;
        let mut round = 0usize;
        let mut step = || {
            let result = answers[round % 2].clone();
            round += 1;
            ts += 5_000;
            let out = evaluate(&spec, black_box(&memory), ts, result);
            assert!(out.error.is_none());
            memory = out.memory.unwrap();
            black_box(out.export);
        };
        // Cloning the answer is part of every round; time it alone too.
        let clone = time_for(CASE_TIME / 4, || {
            black_box(answers[0].clone());
        });
        let per = time_mean(&mut step).saturating_sub(clone);
        let change = baseline.record(
            &format!("recording (steady) {n}"),
            n as f64 / per.as_secs_f64(),
        );
        println!(
            "{:<22} {:>8} {:>12.3} {:>12.0}{change}",
            "recording (steady)",
            n,
            per.as_secs_f64() * 1e3,
            per.as_secs_f64() * 1e9 / n as f64
        );
    }
    baseline.finish();
}
