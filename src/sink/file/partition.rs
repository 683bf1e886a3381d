//! `--format parquet --partition-by day|hour|metric`: the samples of a run
//! as a Hive-partitioned Parquet tree that DuckDB, Spark, Trino or pandas
//! read as one table:
//! ```text
//! <out>/samples/metric=<name>/date=<YYYY-MM-DD>/part-<run>-<n>.parquet   -- day
//! <out>/samples/metric=<name>/date=<YYYY-MM-DD>/hour=<HH>/part-...       -- hour
//! <out>/samples/metric=<name>/part-<run>-<n>.parquet                     -- metric
//! ```
//! Dates and hours are UTC. The files hold the flat schema without the
//! `metric` column (readers take it from the directory; keeping both makes
//! pyarrow refuse the dataset), compressed with zstd, in row groups of up to
//! [`ROW_GROUP_ROWS`] rows. Alerts are the rows with `alert = true`; there
//! is no separate alerts tree. Each file carries the run header
//! (`spillway.run`); the run's outcome is in `summary_<run>.json`.
//!
//! Metric names are made path-safe by percent-encoding every byte outside
//! `A-Z a-z 0-9 _ -` (`a:b` → `a%3Ab`), which is how Hive escapes and how
//! DuckDB and pyarrow decode; a series without a name goes to
//! `metric=__HIVE_DEFAULT_PARTITION__`, read back as null.
//!
//! Memory stays bounded whatever the number of partitions: at most
//! [`MAX_OPEN`] files are open (the least recently written one is closed and
//! a later sample of its partition starts `part-<run>-<n+1>`), and the rows
//! buffered over all open files are capped at [`BUFFERED_ROWS`] (the fullest
//! file writes its row group early).
//!
//! Nothing appears half-done: files are completed in a staging directory
//! `<out>/.samples.tmp.<pid>.<n>` and moved into the tree by `finish`; a
//! failed or interrupted run removes the staging directory (a killed one
//! leaves it to the next run's sweep), and a failure while moving removes
//! the files already moved.

use super::parquet::{Layout, ParquetFile};
use super::{Encoder, FlaggedSample, RecordSink, RunInfo, RunOutcome, SinkError};
use crate::fsutil::AtomicFile;
use crate::model::Labels;
use ::parquet::basic::{Compression, ZstdLevel};
use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Rows per row group: DuckDB's own default size, large enough for scans
/// to skip by statistics, small enough to keep memory flat.
pub const ROW_GROUP_ROWS: usize = 122_880;
/// Files open at once (each holds a buffer and a descriptor).
pub const MAX_OPEN: usize = 64;
/// Rows buffered over all open files (about 20 bytes each plus strings).
pub const BUFFERED_ROWS: usize = 1 << 20;
/// The longest directory name a metric may produce (file systems allow 255 bytes).
const MAX_DIR_NAME: usize = 255;
/// Where the samples tree starts under `--out`.
pub const TREE: &str = "samples";

/// How `--partition-by` cuts the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionBy {
    Day,
    Hour,
    Metric,
}

impl fmt::Display for PartitionBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PartitionBy::Day => "day",
            PartitionBy::Hour => "hour",
            PartitionBy::Metric => "metric",
        })
    }
}

/// A `--partition-by` value that names no partitioning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown partitioning {0:?}: expected day, hour or metric")]
pub struct UnknownPartitioning(pub String);

impl FromStr for PartitionBy {
    type Err = UnknownPartitioning;

    fn from_str(s: &str) -> Result<PartitionBy, UnknownPartitioning> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" => Ok(PartitionBy::Day),
            "hour" => Ok(PartitionBy::Hour),
            "metric" => Ok(PartitionBy::Metric),
            _ => Err(UnknownPartitioning(s.to_string())),
        }
    }
}

/// Which partition of its metric a sample at `ts_ms` is in (cheaper to
/// compare than the directory name).
fn bucket(by: PartitionBy, ts_ms: i64) -> i64 {
    match by {
        PartitionBy::Metric => 0,
        PartitionBy::Day => ts_ms.div_euclid(86_400_000),
        PartitionBy::Hour => ts_ms.div_euclid(3_600_000),
    }
}

/// The directory (relative to the tree) of a sample of `metric` at `ts_ms`.
fn partition_dir(by: PartitionBy, metric_dir: &str, ts_ms: i64) -> String {
    const HOUR_MS: i64 = 3_600_000;
    let mut dir = metric_dir.to_string();
    if by == PartitionBy::Metric {
        return dir;
    }
    let hour = ts_ms.div_euclid(HOUR_MS);
    let day_start = hour.div_euclid(24) * 24 * HOUR_MS;
    let date = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(day_start)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "__HIVE_DEFAULT_PARTITION__".into());
    write!(dir, "/date={date}").expect("writing to a String cannot fail");
    if by == PartitionBy::Hour {
        write!(dir, "/hour={:02}", hour.rem_euclid(24)).expect("writing to a String cannot fail");
    }
    dir
}

/// `metric=<name>` with the name percent-encoded (see the module docs).
pub fn metric_dir(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Ok("metric=__HIVE_DEFAULT_PARTITION__".into());
    }
    let mut dir = String::from("metric=");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            dir.push(b as char);
        } else {
            write!(dir, "%{b:02X}").expect("writing to a String cannot fail");
        }
    }
    if dir.len() > MAX_DIR_NAME {
        return Err(format!(
            "metric name {name:?} is {} bytes as a partition directory, over the limit of \
             {MAX_DIR_NAME}; use --partition-by without it or relabel the name shorter",
            dir.len()
        ));
    }
    Ok(dir)
}

struct OpenPart {
    file: ParquetFile,
    last_use: u64,
}

pub(super) struct Partitioned {
    by: PartitionBy,
    run: RunInfo,
    /// `<out>/samples`, where finished files go.
    tree: PathBuf,
    /// The staging directory and its lock (see the module docs).
    stage: PathBuf,
    _stage_lock: fs::File,
    open: HashMap<String, OpenPart>,
    /// The next part number per partition directory.
    next_part: HashMap<String, u32>,
    /// Completed files in the stage, relative to it.
    staged: Vec<PathBuf>,
    clock: u64,
    /// The last write's metric and its directory name.
    last_metric: Option<(String, String)>,
    done: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SinkError + '_ {
    move |error| SinkError::Create {
        path: path.to_path_buf(),
        error,
    }
}

impl Partitioned {
    pub(super) fn open(out: &Path, run: &RunInfo, by: PartitionBy) -> Result<Self, SinkError> {
        let (stage, lock) = crate::fsutil::create_temp_dir(out, TREE).map_err(io_err(out))?;
        Ok(Partitioned {
            by,
            run: run.clone(),
            tree: out.join(TREE),
            stage,
            _stage_lock: lock,
            open: HashMap::new(),
            next_part: HashMap::new(),
            staged: Vec::new(),
            clock: 0,
            last_metric: None,
            done: false,
        })
    }

    fn metric_dir(&mut self, labels: &Labels) -> Result<String, SinkError> {
        let name = labels.metric_name();
        if let Some((m, dir)) = &self.last_metric {
            if m == name {
                return Ok(dir.clone());
            }
        }
        let dir = metric_dir(name).map_err(|reason| SinkError::Create {
            path: self.tree.clone(),
            error: io::Error::new(io::ErrorKind::InvalidInput, reason),
        })?;
        self.last_metric = Some((name.to_string(), dir.clone()));
        Ok(dir)
    }

    /// The open file of partition `dir`, opening it (and closing the least
    /// recently used one when [`MAX_OPEN`] are open).
    fn part(&mut self, dir: &str) -> Result<&mut ParquetFile, SinkError> {
        self.clock += 1;
        if !self.open.contains_key(dir) {
            if self.open.len() >= MAX_OPEN {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, p)| p.last_use)
                    .map(|(d, _)| d.clone())
                    .expect("MAX_OPEN > 0");
                self.close_part(&oldest)?;
            }
            let n = self.next_part.entry(dir.to_string()).or_insert(0);
            let name = format!("part-{}-{n}.parquet", self.run.run_id);
            *n += 1;
            let stage_dir = self.stage.join(dir);
            fs::create_dir_all(&stage_dir).map_err(io_err(&stage_dir))?;
            let file = AtomicFile::create(&stage_dir, &name).map_err(io_err(&stage_dir))?;
            let layout = Layout {
                with_metric: false,
                compression: Compression::ZSTD(ZstdLevel::default()),
                row_group_rows: ROW_GROUP_ROWS,
            };
            let file = ParquetFile::start_with(file, &self.run, layout)?;
            self.open
                .insert(dir.to_string(), OpenPart { file, last_use: 0 });
        }
        let part = self.open.get_mut(dir).expect("inserted above");
        part.last_use = self.clock;
        Ok(&mut part.file)
    }

    fn close_part(&mut self, dir: &str) -> Result<(), SinkError> {
        let Some(part) = self.open.remove(dir) else {
            return Ok(());
        };
        let file = part.file.close_part()?;
        let path = super::commit(file)?;
        let rel = path
            .strip_prefix(&self.stage)
            .expect("staged files live in the stage")
            .to_path_buf();
        self.staged.push(rel);
        Ok(())
    }

    /// Keeps the rows buffered over all open files under [`BUFFERED_ROWS`].
    fn bound_memory(&mut self) -> Result<(), SinkError> {
        let total: usize = self.open.values().map(|p| p.file.buffered_rows()).sum();
        if total <= BUFFERED_ROWS {
            return Ok(());
        }
        if let Some(p) = self
            .open
            .values_mut()
            .max_by_key(|p| p.file.buffered_rows())
        {
            p.file.flush_now()?;
        }
        Ok(())
    }

    /// Moves every staged file into the tree; on failure removes the moved ones.
    fn publish(&mut self) -> Result<Vec<PathBuf>, SinkError> {
        let mut moved = Vec::new();
        let result = self.move_all(&mut moved);
        if result.is_err() {
            for p in &moved {
                fs::remove_file(p).ok();
            }
        }
        result.map(|()| moved)
    }

    fn move_all(&self, moved: &mut Vec<PathBuf>) -> Result<(), SinkError> {
        let mut dirs = BTreeSet::new();
        for rel in &self.staged {
            let to = self.tree.join(rel);
            let dir = to.parent().expect("a part file has a directory");
            crate::fsutil::create_dir_all(dir).map_err(io_err(dir))?;
            if to.exists() {
                return Err(io_err(&to)(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "already exists (another run with the same id?)",
                )));
            }
            fs::rename(self.stage.join(rel), &to).map_err(io_err(&to))?;
            moved.push(to.clone());
            dirs.insert(dir.to_path_buf());
        }
        for d in dirs {
            crate::fsutil::sync_dir(&d).map_err(io_err(&d))?;
        }
        Ok(())
    }
}

impl RecordSink for Partitioned {
    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        mut samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        let metric = self.metric_dir(labels)?;
        while let Some(first) = samples.first() {
            let dir = partition_dir(self.by, &metric, first.timestamp_ms);
            let b = bucket(self.by, first.timestamp_ms);
            // Samples come in time order, so a partition is one run of them.
            let n = samples
                .iter()
                .position(|s| bucket(self.by, s.timestamp_ms) != b)
                .unwrap_or(samples.len());
            let (now, later) = samples.split_at(n);
            self.part(&dir)?.write(query, labels, now)?;
            samples = later;
        }
        self.bound_memory()
    }

    fn finish(mut self: Box<Self>, _outcome: &RunOutcome) -> Result<Vec<PathBuf>, SinkError> {
        let dirs: Vec<String> = self.open.keys().cloned().collect();
        for d in dirs {
            self.close_part(&d)?;
        }
        self.staged.sort();
        let files = self.publish()?;
        self.done = true;
        fs::remove_dir_all(&self.stage).ok();
        Ok(files)
    }
}

impl Drop for Partitioned {
    fn drop(&mut self) {
        // Close the open files first: their temp files go with them.
        self.open.clear();
        if !self.done {
            fs::remove_dir_all(&self.stage).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_path_safe() {
        assert_eq!(metric_dir("node_cpu").unwrap(), "metric=node_cpu");
        assert_eq!(metric_dir("a:b.c/..").unwrap(), "metric=a%3Ab%2Ec%2F%2E%2E");
        assert_eq!(metric_dir("").unwrap(), "metric=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(metric_dir("Grüße").unwrap(), "metric=Gr%C3%BC%C3%9Fe");
        let err = metric_dir(&"x:".repeat(100)).unwrap_err();
        assert!(err.contains("over the limit of 255"), "{err}");
    }

    #[test]
    fn partition_directories_are_utc_days_and_hours() {
        let ts = 1_704_207_845_000; // 2024-01-02T15:04:05Z
        let m = "metric=cpu";
        assert_eq!(partition_dir(PartitionBy::Metric, m, ts), "metric=cpu");
        assert_eq!(
            partition_dir(PartitionBy::Day, m, ts),
            "metric=cpu/date=2024-01-02"
        );
        assert_eq!(
            partition_dir(PartitionBy::Hour, m, ts),
            "metric=cpu/date=2024-01-02/hour=15"
        );
        assert_eq!(
            partition_dir(PartitionBy::Hour, m, -1),
            "metric=cpu/date=1969-12-31/hour=23"
        );
    }

    fn sample(ts: i64) -> FlaggedSample {
        FlaggedSample {
            timestamp_ms: ts,
            value: 1.0,
            out_of_range: false,
            alert: false,
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    fn rows(path: &Path) -> i64 {
        use ::parquet::file::reader::{FileReader, SerializedFileReader};
        let r = SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
        r.metadata().file_metadata().num_rows()
    }

    /// More partitions than [`MAX_OPEN`]: the oldest close and reopen as the
    /// next part; every row lands once.
    #[test]
    fn many_partitions_stay_bounded_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run = super::super::testutil::run_info();
        let mut sink = Partitioned::open(dir.path(), &run, PartitionBy::Metric).unwrap();
        let metrics: Vec<Labels> = (0..MAX_OPEN + 10)
            .map(|i| Labels::from_pairs([("__name__", format!("m{i}").as_str())]))
            .collect();
        for round in 0..2 {
            for l in &metrics {
                sink.write("q", l, &[sample(round), sample(round + 1)])
                    .unwrap();
                assert!(sink.open.len() <= MAX_OPEN);
            }
        }
        let published = Box::new(sink).finish(&RunOutcome::default()).unwrap();
        let all = files(dir.path());
        assert_eq!(all, {
            let mut p = published.clone();
            p.sort();
            p
        });
        let total: i64 = all.iter().map(|p| rows(p)).sum();
        assert_eq!(total, 4 * metrics.len() as i64);
        // Every metric was evicted once between its two rounds.
        assert_eq!(all.len(), 2 * metrics.len(), "{all:?}");
        assert!(all
            .iter()
            .any(|p| p.ends_with("samples/metric=m0/part-20240102T150405Z-1.parquet")));
    }

    #[test]
    fn an_aborted_run_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run = super::super::testutil::run_info();
        let mut sink = Partitioned::open(dir.path(), &run, PartitionBy::Hour).unwrap();
        let l = Labels::from_pairs([("__name__", "cpu")]);
        sink.write("q", &l, &[sample(0), sample(7_200_000)])
            .unwrap();
        assert!(!files(dir.path()).is_empty(), "staged while running");
        drop(sink);
        assert_eq!(files(dir.path()), Vec::<PathBuf>::new());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn parses_and_prints() {
        for by in [PartitionBy::Day, PartitionBy::Hour, PartitionBy::Metric] {
            assert_eq!(by.to_string().parse::<PartitionBy>(), Ok(by));
        }
        assert_eq!(" Day ".parse::<PartitionBy>(), Ok(PartitionBy::Day));
        assert!("week".parse::<PartitionBy>().is_err());
    }
}
