//! File sinks of `spillway export`: every flagged sample of a run goes to
//! CSV, JSON, JSON lines, SQLite or Parquet, and the alert-flagged ones also
//! to a separate `alerts` file or table.
//!
//! A run opens one [`RecordSink`] per format with [`open`], calls
//! [`RecordSink::write`] for each series as its windows stream in, and ends
//! with [`RecordSink::finish`]. Memory stays bounded by a buffer whatever the
//! size of the run: rows are encoded as they arrive and nothing is kept per
//! run. Nothing is half-written: files are written under a temp name and
//! renamed in `finish` ([`crate::fsutil::AtomicFile`]); SQLite appends a whole run
//! in one transaction. Dropping a sink without `finish` aborts the run: temp
//! files are removed and the transaction is rolled back.
//!
//! Files are named after the run: `samples_<run_id>.<ext>` and
//! `alerts_<run_id>.<ext>`, `run_id` being the run's start as a file stamp
//! (`20240102T150405Z`). SQLite is the exception: one `spillway.sqlite` per
//! output directory accumulates runs, so cron jobs build a history.
//!
//! Values print the way the Prometheus API prints them (shortest text that
//! reads back to the same float; `NaN`, `+Inf`, `-Inf`); labels exclude
//! `__name__`, which has its own `metric` column or field.
//!
//! Uses `model` and `fsutil` only.

mod csv;
mod json;
mod jsonl;
mod parquet;
mod partition;
mod sqlite;

pub use partition::{PartitionBy, UnknownPartitioning};
/// The SQLite sink's row insert, for the sinks bench's floor cases (the same
/// statement without the rest of the schema).
#[doc(hidden)]
pub use sqlite::{insert_sql as sqlite_insert_sql, BATCH_ROWS as SQLITE_BATCH_ROWS};

use crate::fsutil::AtomicFile;
use crate::model::time::format_rfc3339_ms;
use crate::model::value::TextOut;
use crate::model::Labels;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One sample with the flags the thresholds gave it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlaggedSample {
    pub timestamp_ms: i64,
    pub value: f64,
    /// Outside the acceptable `min`..`max` range.
    pub out_of_range: bool,
    /// Past `alert_above` / `alert_below`: also written to the alerts output.
    pub alert: bool,
}

/// An output format of `spillway export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Csv,
    Json,
    Jsonl,
    Sqlite,
    Parquet,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Csv,
        Format::Json,
        Format::Jsonl,
        Format::Sqlite,
        Format::Parquet,
    ];

    /// The name users type, also the file extension.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Sqlite => "sqlite",
            Format::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: honours widths in tables (`{:8}`).
        f.pad(self.name())
    }
}

/// A `--format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected one of csv, json, jsonl, sqlite, parquet")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Case-insensitive, surrounding blanks ignored (`--format "csv, json"`).
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        let wanted = s.trim();
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// What a run asked for; written at the top of JSON files and to the SQLite
/// `runs` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// `file_stamp` of `started_ms`, e.g. `20240102T150405Z`; names the files.
    pub run_id: String,
    pub started_ms: i64,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    pub queries: Vec<String>,
}

/// How a run ended; written as the trailer of JSON files and to `runs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOutcome {
    pub finished_ms: i64,
    pub samples: u64,
    pub alerts: u64,
    pub failed_queries: Vec<String>,
}

/// Where a run's flagged samples go. One per output format.
///
/// Dropping a sink without calling [`finish`](RecordSink::finish) aborts:
/// no file is left behind and the SQLite transaction is rolled back.
pub trait RecordSink: Send {
    /// One series' samples for one query (called many times per series as
    /// windows stream in). Alert-flagged samples also go to the alerts output.
    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError>;

    /// Completes the run: writes trailers, commits (renames temp files /
    /// commits the SQLite transaction) and returns the final paths.
    fn finish(self: Box<Self>, outcome: &RunOutcome) -> Result<Vec<PathBuf>, SinkError>;
}

/// What went wrong, naming the file and the step that failed.
///
/// Messages carry the cause's text themselves (no `source()` chain), so a
/// caller printing the error alone shows everything once.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create {}: {}", path.display(), io_reason(error))]
    Create { path: PathBuf, error: io::Error },
    #[error("cannot write {}: {}", path.display(), io_reason(error))]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot write {}: {error}", path.display())]
    Parquet {
        path: PathBuf,
        error: ::parquet::errors::ParquetError,
    },
    #[error("cannot {action} {}: {error}", path.display())]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        error: rusqlite::Error,
    },
    #[error(
        "{} has schema version {found}, newer than this spillway understands ({supported}); \
         upgrade spillway or write to another --out directory",
        path.display()
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "run {run_id} is already in {}: another run started in the same second; \
         retry in a second",
        path.display()
    )]
    RunExists { path: PathBuf, run_id: String },
}

/// `Permission denied (os error 13)` → `permission denied`: the OS code adds
/// nothing for users and the message reads as the end of our sentence.
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Opens a sink writing `format` into `out_dir` (created if missing).
pub fn open(
    format: Format,
    out_dir: &Path,
    run: &RunInfo,
) -> Result<Box<dyn RecordSink>, SinkError> {
    crate::fsutil::create_dir_all(out_dir).map_err(|error| SinkError::Create {
        path: out_dir.to_path_buf(),
        error,
    })?;
    Ok(match format {
        Format::Csv => Box::new(Split::<csv::CsvFile>::open(out_dir, run, "csv")?),
        Format::Jsonl => Box::new(Split::<jsonl::JsonlFile>::open(out_dir, run, "jsonl")?),
        Format::Json => Box::new(Split::<json::JsonFile>::open(out_dir, run, "json")?),
        Format::Parquet => Box::new(Split::<parquet::ParquetFile>::open(
            out_dir, run, "parquet",
        )?),
        Format::Sqlite => Box::new(sqlite::SqliteSink::open(out_dir, run)?),
    })
}

/// Opens the Parquet sink writing a Hive-partitioned tree under
/// `out_dir/samples` (see `partition`'s docs) instead of the flat files.
pub fn open_partitioned(
    out_dir: &Path,
    run: &RunInfo,
    by: PartitionBy,
) -> Result<Box<dyn RecordSink>, SinkError> {
    crate::fsutil::create_dir_all(out_dir).map_err(|error| SinkError::Create {
        path: out_dir.to_path_buf(),
        error,
    })?;
    Ok(Box::new(partition::Partitioned::open(out_dir, run, by)?))
}

/// One output file of a file format, written under a temp name.
trait Encoder: Send + Sized {
    /// Creates the file (and writes its header). `file` is already open.
    fn start(file: AtomicFile, run: &RunInfo) -> Result<Self, SinkError>;
    /// Appends the samples of one series; never called with an empty slice.
    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError>;
    /// Writes the trailer and hands the file back, ready to commit.
    fn close(self, outcome: &RunOutcome) -> Result<AtomicFile, SinkError>;
}

/// The shape every file format shares: a samples file with everything and an
/// alerts file with the alert-flagged samples.
struct Split<E> {
    samples: E,
    alerts: E,
    /// Reused to gather one write's alerts, so filtering allocates nothing.
    alert_buf: Vec<FlaggedSample>,
}

impl<E: Encoder> Split<E> {
    fn open(dir: &Path, run: &RunInfo, ext: &str) -> Result<Self, SinkError> {
        let samples = E::start(create(dir, &format!("samples_{}.{ext}", run.run_id))?, run)?;
        let alerts = E::start(create(dir, &format!("alerts_{}.{ext}", run.run_id))?, run)?;
        Ok(Split {
            samples,
            alerts,
            alert_buf: Vec::new(),
        })
    }
}

impl<E: Encoder> RecordSink for Split<E> {
    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        if samples.is_empty() {
            return Ok(());
        }
        self.samples.write(query, labels, samples)?;
        self.alert_buf.clear();
        self.alert_buf
            .extend(samples.iter().filter(|s| s.alert).copied());
        if !self.alert_buf.is_empty() {
            self.alerts.write(query, labels, &self.alert_buf)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>, outcome: &RunOutcome) -> Result<Vec<PathBuf>, SinkError> {
        let Split {
            samples, alerts, ..
        } = *self;
        // Close (and fsync) both before renaming either, so a failure in one
        // leaves neither file published.
        let samples = samples.close(outcome)?;
        let alerts = alerts.close(outcome)?;
        Ok(vec![commit(samples)?, commit(alerts)?])
    }
}

/// Opens `dir/name` under a temp name, refusing to replace an earlier run's
/// export (two runs started in the same second).
fn create(dir: &Path, name: &str) -> Result<AtomicFile, SinkError> {
    let path = dir.join(name);
    if path.exists() {
        return Err(SinkError::Create {
            path,
            error: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "already exists (another run started in the same second?)",
            ),
        });
    }
    AtomicFile::create_bulk(dir, name).map_err(|error| SinkError::Create { path, error })
}

fn commit(file: AtomicFile) -> Result<PathBuf, SinkError> {
    let path = file.path().to_path_buf();
    file.commit()
        .map_err(|error| SinkError::Write { path, error })
}

/// Maps an I/O error of `file` to [`SinkError::Write`].
fn write_err(file: &AtomicFile) -> impl FnOnce(io::Error) -> SinkError + '_ {
    move |error| SinkError::Write {
        path: file.path().to_path_buf(),
        error,
    }
}

/// Appends `n` in decimal without `fmt`'s machinery (one per row and column).
fn push_int(out: &mut impl TextOut, n: i64) {
    out.push_text(itoa::Buffer::new().format(n));
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping is the reference; a String target cannot fail.
    out.push_str(&serde_json::to_string(s).expect("strings always serialize"));
}

/// Appends the labels except `__name__` as a JSON object.
fn push_json_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.without_name().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, &l.name);
        out.push(':');
        push_json_str(out, &l.value);
    }
    out.push('}');
}

/// Formats RFC 3339 timestamps exactly as [`format_rfc3339_ms`] does, fast:
/// the date part is cached per day, since a series' samples are mostly on
/// the same day, and the time of day is plain arithmetic into one buffer,
/// appended at once. Row-based formats print one per row, where chrono's
/// formatter, then a push per character, showed in profiles.
struct TimestampFormatter {
    day: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the date part that of `day`.
    text: [u8; 24],
}

impl Default for TimestampFormatter {
    fn default() -> Self {
        TimestampFormatter {
            day: None,
            text: *b"0000-00-00T00:00:00.000Z",
        }
    }
}

impl TimestampFormatter {
    const DAY_MS: i64 = 86_400_000;

    /// Bytes, not a `String`: the text is ASCII by construction, and a
    /// `str` of it would be checked as UTF-8 on every row.
    fn push(&mut self, out: &mut Vec<u8>, ts_ms: i64) {
        let day = ts_ms.div_euclid(Self::DAY_MS);
        if self.day != Some(day) {
            let midnight = format_rfc3339_ms(day * Self::DAY_MS);
            // Years of four digits only; others (outside chrono's range too)
            // print as the model does.
            if midnight.len() != "YYYY-MM-DDT00:00:00Z".len() {
                out.extend_from_slice(format_rfc3339_ms(ts_ms).as_bytes());
                return;
            }
            self.text[..11].copy_from_slice(&midnight.as_bytes()[..11]);
            self.day = Some(day);
        }
        let in_day = ts_ms.rem_euclid(Self::DAY_MS);
        let (secs, ms) = (in_day / 1000, in_day % 1000);
        put_digits(&mut self.text[11..13], secs / 3600);
        put_digits(&mut self.text[14..16], secs / 60 % 60);
        put_digits(&mut self.text[17..19], secs % 60);
        if ms != 0 {
            put_digits(&mut self.text[20..23], ms);
            out.extend_from_slice(&self.text);
        } else {
            out.extend_from_slice(&self.text[..19]);
            out.push(b'Z');
        }
    }
}

/// `n` (`0 <= n < 10^out.len()`) as decimal digits with leading zeros.
fn put_digits(out: &mut [u8], mut n: i64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `{"run_id":..,"started_at":..,...}`: the run header of JSON files.
fn run_json(run: &RunInfo) -> serde_json::Value {
    serde_json::json!({
        "run_id": run.run_id,
        "started_at": format_rfc3339_ms(run.started_ms),
        "started_ms": run.started_ms,
        "from": format_rfc3339_ms(run.from_ms),
        "from_ms": run.from_ms,
        "to": format_rfc3339_ms(run.to_ms),
        "to_ms": run.to_ms,
        "step_ms": run.step_ms,
        "queries": run.queries,
    })
}

/// `{"finished_at":..,"samples":..,...}`: the trailer of JSON files.
fn outcome_json(outcome: &RunOutcome) -> serde_json::Value {
    serde_json::json!({
        "finished_at": format_rfc3339_ms(outcome.finished_ms),
        "finished_ms": outcome.finished_ms,
        "samples": outcome.samples,
        "alerts": outcome.alerts,
        "failed_queries": outcome.failed_queries,
    })
}

/// Data and helpers the format tests share: series with awkward labels and
/// values, written over several calls, and the rows expected back.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn run_info() -> RunInfo {
        RunInfo {
            run_id: "20240102T150405Z".into(),
            started_ms: 1_704_207_845_000,
            from_ms: 1_704_121_445_000,
            to_ms: 1_704_207_845_000,
            step_ms: 60_000,
            queries: vec!["cpu".into(), "q,\"odd\"\nquery".into()],
        }
    }

    pub fn outcome() -> RunOutcome {
        RunOutcome {
            finished_ms: 1_704_207_900_500,
            samples: 9,
            alerts: 3,
            failed_queries: vec!["broken(".into()],
        }
    }

    fn s(timestamp_ms: i64, value: f64, out_of_range: bool, alert: bool) -> FlaggedSample {
        FlaggedSample {
            timestamp_ms,
            value,
            out_of_range,
            alert,
        }
    }

    /// The write calls of one run, in order: the first series arrives in
    /// three calls (two consecutive, one after another series), values
    /// include NaN, ±Inf, -0 and long decimals, label values hold quotes,
    /// commas, newlines, backslashes and non-ASCII.
    pub fn writes() -> Vec<(String, Labels, Vec<FlaggedSample>)> {
        let t = 1_704_207_845_000;
        let a = Labels::from_pairs([
            ("__name__", "cpu"),
            ("instance", "h1:9100"),
            ("note", "a \"quoted\", comma\nnew line \\ back"),
        ]);
        let b = Labels::from_pairs([("job", "Grüße €"), ("z", "{x=\"y\"}")]);
        let c = Labels::from_pairs([("__name__", "only_name")]);
        let q2 = "q,\"odd\"\nquery".to_string();
        vec![
            (
                "cpu".into(),
                a.clone(),
                vec![s(t, 1.5, false, false), s(t + 123, f64::NAN, false, true)],
            ),
            (
                "cpu".into(),
                a.clone(),
                vec![s(t + 60_000, f64::INFINITY, true, true)],
            ),
            (
                q2.clone(),
                b,
                vec![
                    s(t, f64::NEG_INFINITY, true, false),
                    s(-1, 0.1 + 0.2, false, false),
                ],
            ),
            (
                "cpu".into(),
                a,
                vec![
                    s(t + 120_000, -0.0, false, false),
                    s(t + 180_000, 1e-7, false, true),
                ],
            ),
            ("cpu".into(), c.clone(), vec![]),
            (
                q2,
                c,
                vec![
                    s(0, 123456789.125, false, false),
                    s(t, -2.5e300, true, false),
                ],
            ),
        ]
    }

    /// Calls `write` for each of [`writes`].
    pub fn feed(sink: &mut dyn RecordSink) {
        for (query, labels, samples) in writes() {
            sink.write(&query, &labels, &samples).unwrap();
        }
    }

    /// A whole run of [`writes`] in `format` into `dir`: the files it made.
    pub fn export(format: Format, dir: &Path) -> Vec<PathBuf> {
        let mut sink = open(format, dir, &run_info()).unwrap();
        feed(sink.as_mut());
        sink.finish(&outcome()).unwrap()
    }

    /// One flat sample as every format can return it.
    #[derive(Debug, Clone)]
    pub struct Row {
        pub query: String,
        pub metric: String,
        /// Without `__name__`, sorted by name.
        pub labels: Vec<(String, String)>,
        pub timestamp_ms: i64,
        pub value: f64,
        pub out_of_range: bool,
        pub alert: bool,
    }

    /// Exact comparison, except that any NaN equals any NaN (text formats
    /// cannot keep NaN payloads).
    impl PartialEq for Row {
        fn eq(&self, o: &Row) -> bool {
            let same_value = self.value.to_bits() == o.value.to_bits()
                || (self.value.is_nan() && o.value.is_nan());
            same_value
                && (&self.query, &self.metric, &self.labels, self.timestamp_ms)
                    == (&o.query, &o.metric, &o.labels, o.timestamp_ms)
                && (self.out_of_range, self.alert) == (o.out_of_range, o.alert)
        }
    }

    /// What reading everything back must give, in write order.
    pub fn expected(alerts_only: bool) -> Vec<Row> {
        let mut rows = Vec::new();
        for (query, labels, samples) in writes() {
            for s in samples.into_iter().filter(|s| s.alert || !alerts_only) {
                rows.push(Row {
                    query: query.clone(),
                    metric: labels.metric_name().to_string(),
                    labels: labels
                        .without_name()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    timestamp_ms: s.timestamp_ms,
                    value: s.value,
                    out_of_range: s.out_of_range,
                    alert: s.alert,
                });
            }
        }
        rows
    }

    /// Parses what [`push_value`] wrote.
    pub fn parse_value(s: &str) -> f64 {
        match s {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            s => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
        }
    }

    /// Parses a non-finite value string or a number, rejecting anything else.
    pub fn json_value(v: &serde_json::Value) -> f64 {
        match v {
            serde_json::Value::Number(n) => n.as_f64().unwrap(),
            serde_json::Value::String(s) if ["NaN", "+Inf", "-Inf"].contains(&s.as_str()) => {
                parse_value(s)
            }
            other => panic!("bad value {other}"),
        }
    }

    pub fn json_labels(v: &serde_json::Value) -> Vec<(String, String)> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    }

    /// Names in `dir`, sorted, temp files included.
    pub fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writes everything, then drops the sink: nothing may remain.
    pub fn abort_leaves_nothing(format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(format, dir.path(), &run_info()).unwrap();
        feed(sink.as_mut());
        assert!(
            !files(dir.path()).is_empty(),
            "temp files exist while writing"
        );
        drop(sink);
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        assert_eq!(" JSONL ".parse::<Format>().unwrap(), Format::Jsonl);
        let err = "xml".parse::<Format>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown format "xml": expected one of csv, json, jsonl, sqlite, parquet"#
        );
    }

    #[test]
    fn fast_timestamps_match_the_model() {
        let mut f = TimestampFormatter::default();
        let mut ts = -86_400_000 * 400 - 1;
        // Steps that cross days, ms fractions and whole seconds, both signs.
        while ts < 1_900_000_000_000 {
            let mut s = Vec::new();
            f.push(&mut s, ts);
            assert_eq!(
                String::from_utf8(s).unwrap(),
                format_rfc3339_ms(ts),
                "ts {ts}"
            );
            ts += 7_777_777_777;
            ts += ts.rem_euclid(1000) % 2;
        }
        for ts in [0, 999, 1000, 1_704_207_845_000, 1_704_207_845_123, i64::MAX] {
            let mut s = Vec::new();
            f.push(&mut s, ts);
            assert_eq!(
                String::from_utf8(s).unwrap(),
                format_rfc3339_ms(ts),
                "ts {ts}"
            );
        }
    }

    #[test]
    fn io_reasons_read_as_a_sentence_end() {
        let e = io::Error::from_raw_os_error(13);
        let reason = io_reason(&e);
        assert!(!reason.contains("os error"), "{reason}");
        assert!(reason.starts_with(|c: char| c.is_lowercase()), "{reason}");
    }

    #[test]
    fn unwritable_out_dir_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a directory is expected fails even for root, unlike
        // permission bits.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let out = blocker.join("out");
        for format in Format::ALL {
            let err = match open(format, &out, &testutil::run_info()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{format}: open succeeded"),
            };
            assert!(
                err.contains(&out.display().to_string()) && err.starts_with("cannot create"),
                "{format}: {err}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn read_only_out_dir_names_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(dir.path().join("probe"), "").is_ok() {
            // Running as root: permission bits do not apply.
            return;
        }
        for format in Format::ALL {
            let err = match open(format, dir.path(), &testutil::run_info()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{format}: open succeeded"),
            };
            assert!(
                err.contains(&dir.path().display().to_string()),
                "{format}: {err}"
            );
            if format != Format::Sqlite {
                assert!(err.contains("permission denied"), "{format}: {err}");
            }
        }
    }

    #[test]
    fn refuses_to_replace_an_earlier_export() {
        let dir = tempfile::tempdir().unwrap();
        let run = testutil::run_info();
        let name = format!("samples_{}.csv", run.run_id);
        std::fs::write(dir.path().join(&name), "earlier").unwrap();
        let err = match open(Format::Csv, dir.path(), &run) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("open succeeded"),
        };
        assert!(
            err.contains(&name) && err.contains("already exists"),
            "{err}"
        );
        assert_eq!(testutil::files(dir.path()), [name]);
    }
}
