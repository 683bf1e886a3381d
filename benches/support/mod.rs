//! What the benches share: timing a case, and saved baselines so that a
//! regression shows.
//!
//! `BENCH_SAVE=name cargo bench --bench X` stores every figure of the run in
//! `$CARGO_TARGET_DIR/bench-baselines/X-name.txt` (one `case rate` per line;
//! a run of some cases, `-- word`, replaces those and keeps the others);
//! `BENCH_BASELINE=name cargo bench --bench X` prints beside each figure its
//! change against that file, marks those more than [`REGRESSION_PERCENT`]
//! below it, and ends with how many were. Every figure is a rate (more is
//! better), so a negative change is always a slowdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A figure this far below its baseline is marked. Runs on the 2-core test
/// machine move by a few percent between themselves; this is past that.
const REGRESSION_PERCENT: f64 = 10.0;

/// How long a case repeats (at least three times) for its mean.
#[allow(dead_code)] // the queue and sinks benches time whole phases instead
pub const CASE_TIME: Duration = Duration::from_secs(1);

/// The mean time of one run of `f` over [`CASE_TIME`]; see [`time_for`].
#[allow(dead_code)] // the queue and sinks benches time whole phases instead
pub fn time_mean(f: impl FnMut()) -> Duration {
    time_for(CASE_TIME, f)
}

/// Runs `f` once to warm caches and buffers, then until `target` has
/// passed (at least 3 times); returns the mean time of one run.
#[allow(dead_code)] // the queue and sinks benches time whole phases instead
pub fn time_for(target: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while runs < 3 || start.elapsed() < target {
        f();
        runs += 1;
    }
    start.elapsed() / runs
}

/// The figures of one bench run, compared with and saved as a baseline.
pub struct Baseline {
    bench: &'static str,
    name: Option<String>,
    earlier: BTreeMap<String, f64>,
    recorded: BTreeMap<String, f64>,
    compared: usize,
    regressions: usize,
}

impl Baseline {
    /// Reads `BENCH_BASELINE`. A baseline that cannot be read is said, not
    /// skipped in silence: the run then compares nothing.
    pub fn from_env(bench: &'static str) -> Baseline {
        let name = std::env::var("BENCH_BASELINE").ok();
        let earlier = name.as_ref().map_or_else(BTreeMap::new, |name| {
            let path = path(bench, name);
            match std::fs::read_to_string(&path) {
                Ok(text) => parse(&text),
                Err(e) => {
                    println!(
                        "BENCH_BASELINE={name}: cannot read {}: {e} (save one with BENCH_SAVE={name})",
                        path.display()
                    );
                    BTreeMap::new()
                }
            }
        });
        Baseline {
            bench,
            name,
            earlier,
            recorded: BTreeMap::new(),
            compared: 0,
            regressions: 0,
        }
    }

    /// Records `rate` (per second; more is better) for `case` and returns
    /// what to print after the figure: its change against the baseline, or
    /// nothing without one.
    pub fn record(&mut self, case: &str, rate: f64) -> String {
        let case = case.split_whitespace().collect::<Vec<_>>().join(" ");
        self.recorded.insert(case.clone(), rate);
        let (Some(name), Some(&before)) = (&self.name, self.earlier.get(&case)) else {
            return String::new();
        };
        self.compared += 1;
        let change = (rate / before - 1.0) * 100.0;
        let mark = if change < -REGRESSION_PERCENT {
            self.regressions += 1;
            "  SLOWER"
        } else {
            ""
        };
        format!("  ({change:+.1}% against {name}){mark}")
    }

    /// Prints the comparison's tally and stores the figures under `BENCH_SAVE`.
    pub fn finish(self) {
        if let Some(name) = &self.name {
            println!(
                "{} of {} figures more than {REGRESSION_PERCENT}% below baseline {name}",
                self.regressions, self.compared
            );
        }
        if let Ok(name) = std::env::var("BENCH_SAVE") {
            let path = path(self.bench, &name);
            let mut figures =
                std::fs::read_to_string(&path).map_or_else(|_| BTreeMap::new(), |t| parse(&t));
            figures.extend(self.recorded);
            let text: String = figures
                .iter()
                .map(|(case, rate)| format!("{case} {rate:.1}\n"))
                .collect();
            std::fs::create_dir_all(path.parent().expect("a baseline path has a directory"))
                .and_then(|()| std::fs::write(&path, text))
                .unwrap_or_else(|e| panic!("BENCH_SAVE={name}: {}: {e}", path.display()));
            println!("saved as {}", path.display());
        }
    }
}

fn path(bench: &str, name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target)
        .join("bench-baselines")
        .join(format!("{bench}-{name}.txt"))
}

/// `case rate` lines; the case may hold spaces, the rate is the last word.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(case, rate)| Some((case.to_string(), rate.parse().ok()?)))
        .collect()
}
