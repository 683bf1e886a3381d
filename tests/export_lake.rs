//! `spillway export --format parquet --partition-by ...` against a real
//! VictoriaMetrics, read back by DuckDB and by pandas with pyarrow (PyPI
//! `duckdb`, `pandas`, `pyarrow`; scripts/install-deps.sh installs them):
//! both must return exactly the samples the server returned, per series
//! (count, sum, min, max), and every file must sit in the partition its rows
//! belong to.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const STEP: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// (count, sum, min, max) per series key `metric{k=v,...}`.
type Stats = BTreeMap<String, (u64, f64, f64, f64)>;

/// The reader script: prints one JSON object per reader, series key → stats.
const READER: &str = r#"
import json, sys
try:
    import duckdb, pandas, pyarrow
except ImportError as e:
    sys.exit(f"python module missing: {e.name}; run scripts/install-deps.sh (pip install duckdb pandas pyarrow)")

tree, by = sys.argv[1], sys.argv[2]

def key(metric, labels):
    if isinstance(labels, dict) and set(labels) == {"key", "value"}:
        labels = dict(zip(labels["key"], labels["value"]))
    elif not isinstance(labels, dict):
        labels = dict(labels)
    inner = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    return f"{metric}{{{inner}}}"

con = duckdb.connect()
src = f"read_parquet('{tree}/**/*.parquet', hive_partitioning = true)"
rows = con.execute(f"SELECT metric, labels, count(*), sum(value), min(value), max(value) FROM {src} GROUP BY metric, labels").fetchall()
duck = {key(m, l): [c, s, lo, hi] for m, l, c, s, lo, hi in rows}
misplaced = 0
if by in ("day", "hour"):
    misplaced += con.execute(f"SELECT count(*) FROM {src} WHERE epoch_ms(timestamp) // 86400000 != date - DATE '1970-01-01'").fetchone()[0]
if by == "hour":
    misplaced += con.execute(f"SELECT count(*) FROM {src} WHERE (epoch_ms(timestamp) // 3600000) % 24 != hour").fetchone()[0]

df = pandas.read_parquet(tree)
df["key"] = [key(m, l) for m, l in zip(df["metric"].astype(str), df["labels"])]
g = df.groupby("key")["value"].agg(["count", "sum", "min", "max"])
pd_stats = {k: [int(r["count"]), float(r["sum"]), float(r["min"]), float(r["max"])] for k, r in g.iterrows()}
print(json.dumps({"duckdb": duck, "pandas": pd_stats, "misplaced": misplaced}))
"#;

/// Series of three metrics (one with colons, made path-safe) over a UTC
/// midnight, so day and hour partitions both split them.
fn fixture(midnight: i64) -> String {
    let mut out = String::new();
    for (metric, hosts) in [
        ("cpu_usage_percent", ["a", "b"]),
        ("job:requests:rate5m", ["a", "c"]),
        ("disk.used", ["b", "c"]),
    ] {
        for (h, host) in hosts.iter().enumerate() {
            let samples: Vec<(i64, f64)> = (-180..180)
                .map(|i| {
                    let v = ((i * 7 + h as i64 * 13).rem_euclid(97)) as f64 * 1.25 - 30.0;
                    (midnight + i * STEP, v)
                })
                .collect();
            out.push_str(&vm_line(&[("__name__", metric), ("host", host)], &samples));
            out.push('\n');
        }
    }
    out
}

/// What the server answers for `query` over [from, to] at 60 s: stats per series.
fn server_stats(vm: &Vm, query: &str, from: i64, to: i64) -> Stats {
    let url = format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step=60s&nocache=1",
        vm.url(),
        urlencode(query),
        from / 1000,
        to / 1000
    );
    let v: serde_json::Value = serde_json::from_str(&http_get(&url)).unwrap();
    let mut stats = Stats::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let labels = s["metric"].as_object().unwrap();
        let name = labels["__name__"].as_str().unwrap();
        let inner: Vec<String> = labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        let values: Vec<f64> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().parse().unwrap())
            .collect();
        let e = (
            values.len() as u64,
            values.iter().sum(),
            values.iter().copied().fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        stats.insert(format!("{name}{{{}}}", inner.join(",")), e);
    }
    stats
}

fn read_back(tree: &Path, by: &str, dir: &Path) -> serde_json::Value {
    let script = dir.join("read_lake.py");
    std::fs::write(&script, READER).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(tree)
        .arg(by)
        .output()
        .expect("python3 is needed to read the Parquet tree back (DuckDB, pandas)");
    assert!(
        out.status.success(),
        "reading the partitioned output back failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_same(reader: &str, got: &serde_json::Value, want: &Stats) {
    let got = got.as_object().unwrap();
    let keys: Vec<&String> = got.keys().collect();
    assert_eq!(keys, want.keys().collect::<Vec<_>>(), "{reader}: series");
    for (k, (count, sum, min, max)) in want {
        let g = &got[k];
        assert_eq!(g[0].as_u64(), Some(*count), "{reader}: count of {k}");
        let s = g[1].as_f64().unwrap();
        assert!(
            (s - sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{reader}: sum of {k}: {s} != {sum}"
        );
        assert_eq!(g[2].as_f64(), Some(*min), "{reader}: min of {k}");
        assert_eq!(g[3].as_f64(), Some(*max), "{reader}: max of {k}");
    }
}

fn part_files(tree: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p.strip_prefix(tree).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn partitioned_parquet_reads_back_exactly_in_duckdb_and_pandas() {
    let vm = Vm::start();
    let now = chrono::Utc::now().timestamp_millis();
    let midnight = now.div_euclid(DAY) * DAY - DAY;
    vm.import(&fixture(midnight));
    let (from, to) = (midnight - 3 * 3_600_000, midnight + 3 * 3_600_000 - STEP);
    let query = r#"{__name__=~"cpu_usage_percent|job:requests:rate5m|disk.used"}"#;
    let want = server_stats(&vm, query, from, to);
    assert_eq!(want.len(), 6, "the fixture's six series: {want:?}");
    assert_eq!(want.values().map(|s| s.0).sum::<u64>(), 6 * 360);

    for by in ["hour", "day", "metric"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        spillway(&[
            "--quiet",
            "export",
            "--url",
            &vm.url(),
            "--query",
            query,
            "--from",
            &(from / 1000).to_string(),
            "--to",
            &(to / 1000).to_string(),
            "--step",
            "60s",
            // Small windows: a partition's samples arrive in many calls.
            "--window",
            "50",
            "--format",
            "parquet",
            "--partition-by",
            by,
            "--out",
            out.to_str().unwrap(),
        ])
        .assert_code(0);
        let tree = out.join("samples");
        let files = part_files(&tree);
        let dirs: std::collections::BTreeSet<&str> = files
            .iter()
            .map(|f| f.rsplit_once('/').unwrap().0)
            .collect();
        let expected_dirs = match by {
            "hour" => 3 * 6,
            "day" => 3 * 2,
            _ => 3,
        };
        assert_eq!(dirs.len(), expected_dirs, "{by}: {files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.starts_with("metric=job%3Arequests%3Arate5m/")),
            "{by}: colons are percent-encoded: {files:?}"
        );
        assert!(
            files
                .iter()
                .all(|f| f.ends_with(".parquet")
                    && f.rsplit('/').next().unwrap().starts_with("part-")),
            "{by}: only part files in the tree: {files:?}"
        );
        if by != "metric" {
            assert!(
                files
                    .iter()
                    .any(|f| f.starts_with("metric=cpu_usage_percent/date=")),
                "{files:?}"
            );
        }
        // No staging directory or temp file is left in --out.
        let leftovers: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{by}: {leftovers:?}");

        let got = read_back(&tree, by, dir.path());
        assert_same(&format!("duckdb ({by})"), &got["duckdb"], &want);
        assert_same(&format!("pandas ({by})"), &got["pandas"], &want);
        assert_eq!(got["misplaced"], 0, "{by}: rows outside their partition");
    }
}

#[test]
fn partition_by_needs_parquet_and_a_known_cut() {
    let r = spillway(&[
        "export",
        "--url",
        "http://127.0.0.1:9",
        "--query",
        "up",
        "--format",
        "csv",
        "--partition-by",
        "day",
    ]);
    assert_eq!(r.code(), 2, "{}", r.describe());
    assert!(
        r.stderr().contains("--partition-by day") && r.stderr().contains("parquet"),
        "{}",
        r.describe()
    );
    let r = spillway(&[
        "export",
        "--url",
        "http://127.0.0.1:9",
        "--query",
        "up",
        "--format",
        "parquet",
        "--partition-by",
        "week",
    ]);
    assert_eq!(r.code(), 2, "{}", r.describe());
    assert!(
        r.stderr().contains("expected day, hour or metric"),
        "{}",
        r.describe()
    );
}
