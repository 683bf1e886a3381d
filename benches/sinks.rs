//! Row-write throughput of `spillway export`'s file sinks: CSV, JSON, JSONL,
//! SQLite (a fresh file: the bulk load; and an append to an existing one;
//! and `sqlite-floor`, the bare sample table with no index: SQLite's own
//! insert cost, the least any layout of these rows can take;
//! `sqlite-floor-indexed`, the same plus a `(series_id, timestamp_ms)`
//! index built after the load, which queries by series and time need;
//! `sqlite-floor-clustered`, the table stored in that order instead, as
//! the sink stores it), Parquet (flat) and Parquet partitioned by day, each
//! fed 2,000 series × 720 samples in write calls of one series and one
//! window, two windows of 360 one after the other, as the export pipeline
//! writes a range of two windows (a series' second window lands between
//! rows already stored, where a table in series order must insert it).
//!
//! A plain `main` timed with `Instant` (`harness = false`), like the other
//! benches: `cargo bench --bench sinks` (`-- sqlite csv`: only the cases
//! whose name contains one of the words). Prints rows per second per sink.
//! `BENCH_SAVE=name` / `BENCH_BASELINE=name`: see `support`.

mod support;

use spillway::model::Labels;
use spillway::sink::file::{self, FlaggedSample, Format, PartitionBy, RunInfo, RunOutcome};
use std::path::{Path, PathBuf};
use std::time::Instant;
use support::Baseline;

const SERIES: usize = 2_000;
const SAMPLES: usize = 720;
/// Windows per series, written one after the other (each of `SAMPLES / WINDOWS`).
const WINDOWS: usize = 2;
const RUNS: usize = 3;

fn run_info(n: usize) -> RunInfo {
    RunInfo {
        run_id: format!("20240102T150405.{n:03}Z"),
        started_ms: 1_704_207_845_000,
        from_ms: 1_704_121_445_000,
        to_ms: 1_704_207_845_000,
        step_ms: 15_000,
        queries: vec!["bench_metric".into()],
    }
}

fn input() -> Vec<(Labels, Vec<FlaggedSample>)> {
    (0..SERIES)
        .map(|s| {
            let labels = Labels::from_pairs([
                ("__name__", "bench_metric".to_string()),
                ("instance", format!("host-{s}:9100")),
                ("job", format!("job-{}", s % 50)),
            ]);
            let mut v = 50.0;
            let samples = (0..SAMPLES)
                .map(|i| {
                    v += ((i * 7919 + s * 104_729) % 400) as f64 / 100.0 - 2.0;
                    let value = (v * 100.0_f64).round() / 100.0;
                    FlaggedSample {
                        timestamp_ms: 1_704_121_445_000 + i as i64 * 15_000,
                        value,
                        out_of_range: !(0.0..=100.0).contains(&value),
                        alert: value > 80.0,
                    }
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

type Open = fn(&Path, &RunInfo) -> Box<dyn file::RecordSink>;
/// A case: its name, how to open the sink, what to prepare (untimed) before each run.
type Case = (&'static str, Open, fn(&Path));

/// The best of `RUNS` runs, in rows per second. `prepare` runs untimed before each.
fn measure(
    dir: &Path,
    input: &[(Labels, Vec<FlaggedSample>)],
    open: Open,
    prepare: fn(&Path),
) -> f64 {
    let rows = (SERIES * SAMPLES) as f64;
    let mut best = f64::MAX;
    for n in 0..RUNS {
        let out = dir.join(format!("run-{n}"));
        std::fs::create_dir_all(&out).unwrap();
        prepare(&out);
        let t0 = Instant::now();
        let mut sink = open(&out, &run_info(n + 1));
        for window in 0..WINDOWS {
            for (labels, samples) in input {
                let samples = samples.chunks(SAMPLES / WINDOWS).nth(window).unwrap();
                sink.write("bench_metric", labels, samples).unwrap();
            }
        }
        sink.finish(&RunOutcome::default()).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&out).unwrap();
    }
    rows / best
}

fn nothing(_: &Path) {}

/// An earlier (small) run, so the measured one appends to an existing database.
fn earlier_sqlite_run(dir: &Path) {
    let sink = file::open(Format::Sqlite, dir, &run_info(0)).unwrap();
    sink.finish(&RunOutcome::default()).unwrap();
}

/// The least any SQLite layout of these rows can cost: the sample table
/// alone (no series table, no constraint), loaded the way the real sink
/// loads a fresh file (journal and sync off, one transaction, its own
/// 64-row statement). What the real sink spends above `Layout::Bare` is
/// what queries need (an order by series and time, the alert index) and
/// its series rows; this floor against curl's time is why SQLite export
/// cannot reach the other formats' ratio.
struct SqliteFloor {
    conn: rusqlite::Connection,
    /// Write calls so far: the series id repeats in every window.
    calls: usize,
    /// The statement for a full batch of rows, built once.
    batch_sql: String,
    layout: Layout,
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// `sqlite-floor`: a rowid table, no index.
    Bare,
    /// `sqlite-floor-indexed`: plus an index by series and time, built
    /// after the load (one sort of every row).
    Indexed,
    /// `sqlite-floor-clustered`: the table itself in series and time order
    /// (`WITHOUT ROWID`), as the sink stores it.
    Clustered,
}

fn open_sqlite_floor(dir: &Path, _: &RunInfo) -> Box<dyn file::RecordSink> {
    sqlite_floor(dir, Layout::Bare)
}

fn open_sqlite_floor_indexed(dir: &Path, _: &RunInfo) -> Box<dyn file::RecordSink> {
    sqlite_floor(dir, Layout::Indexed)
}

fn open_sqlite_floor_clustered(dir: &Path, _: &RunInfo) -> Box<dyn file::RecordSink> {
    sqlite_floor(dir, Layout::Clustered)
}

fn sqlite_floor(dir: &Path, layout: Layout) -> Box<dyn file::RecordSink> {
    let conn = rusqlite::Connection::open(dir.join("floor.sqlite")).unwrap();
    let order = if layout == Layout::Clustered {
        ", PRIMARY KEY (series_id, timestamp_ms, run)) WITHOUT ROWID"
    } else {
        ")"
    };
    conn.execute_batch(&format!(
        "PRAGMA page_size = 16384; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         PRAGMA cache_size = -16384;
         CREATE TABLE sample_rows (run INTEGER NOT NULL, series_id INTEGER NOT NULL,
             timestamp_ms INTEGER NOT NULL, value REAL, out_of_range INTEGER NOT NULL,
             alert INTEGER NOT NULL{order};
         BEGIN;"
    ))
    .unwrap();
    Box::new(SqliteFloor {
        conn,
        calls: 0,
        batch_sql: file::sqlite_insert_sql(file::SQLITE_BATCH_ROWS),
        layout,
    })
}

impl SqliteFloor {
    /// One multi-row `INSERT` of `rows` (prepared once per row count).
    fn insert(&self, series: i64, rows: &[FlaggedSample]) {
        let mut stmt = if rows.len() == file::SQLITE_BATCH_ROWS {
            self.conn.prepare_cached(&self.batch_sql)
        } else {
            self.conn
                .prepare_cached(&file::sqlite_insert_sql(rows.len()))
        }
        .unwrap();
        stmt.raw_bind_parameter(1, 1).unwrap();
        stmt.raw_bind_parameter(2, series).unwrap();
        for (i, s) in rows.iter().enumerate() {
            let p = 3 + 4 * i;
            stmt.raw_bind_parameter(p, s.timestamp_ms).unwrap();
            stmt.raw_bind_parameter(p + 1, s.value).unwrap();
            stmt.raw_bind_parameter(p + 2, s.out_of_range).unwrap();
            stmt.raw_bind_parameter(p + 3, s.alert).unwrap();
        }
        stmt.raw_execute().unwrap();
    }
}

impl file::RecordSink for SqliteFloor {
    fn write(
        &mut self,
        _: &str,
        _: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), file::SinkError> {
        // Series come in the same order in every window.
        let series = (self.calls % SERIES) as i64 + 1;
        self.calls += 1;
        for rows in samples.chunks(file::SQLITE_BATCH_ROWS) {
            self.insert(series, rows);
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RunOutcome) -> Result<Vec<PathBuf>, file::SinkError> {
        if self.layout == Layout::Indexed {
            self.conn
                .execute_batch("CREATE INDEX series_time ON sample_rows(series_id, timestamp_ms)")
                .unwrap();
        }
        self.conn.execute_batch("COMMIT").unwrap();
        Ok(Vec::new())
    }
}

fn main() {
    let input = input();
    let dir = tempfile::tempdir().unwrap();
    let cases: [Case; 11] = [
        (
            "csv",
            |d, r| file::open(Format::Csv, d, r).unwrap(),
            nothing,
        ),
        (
            "json",
            |d, r| file::open(Format::Json, d, r).unwrap(),
            nothing,
        ),
        (
            "jsonl",
            |d, r| file::open(Format::Jsonl, d, r).unwrap(),
            nothing,
        ),
        (
            "sqlite-fresh",
            |d, r| file::open(Format::Sqlite, d, r).unwrap(),
            nothing,
        ),
        (
            "sqlite-append",
            |d, r| file::open(Format::Sqlite, d, r).unwrap(),
            earlier_sqlite_run,
        ),
        ("sqlite-floor", open_sqlite_floor, nothing),
        ("sqlite-floor-indexed", open_sqlite_floor_indexed, nothing),
        (
            "sqlite-floor-clustered",
            open_sqlite_floor_clustered,
            nothing,
        ),
        (
            "parquet",
            |d, r| file::open(Format::Parquet, d, r).unwrap(),
            nothing,
        ),
        (
            "parquet-by-day",
            |d, r| file::open_partitioned(d, r, PartitionBy::Day).unwrap(),
            nothing,
        ),
        (
            "parquet-by-hour",
            |d, r| file::open_partitioned(d, r, PartitionBy::Hour).unwrap(),
            nothing,
        ),
    ];
    let mut baseline = Baseline::from_env("sinks");
    println!("{SERIES} series x {SAMPLES} samples in {WINDOWS} windows, best of {RUNS}");
    // `cargo bench --bench sinks -- sqlite parquet`: only the cases whose name contains a word.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for (name, open, prepare) in cases {
        if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        let rate = measure(dir.path(), &input, open, prepare);
        let change = baseline.record(name, rate);
        println!("{name:24} {:8.2} M rows/s{change}", rate / 1e6);
    }
    baseline.finish();
}
