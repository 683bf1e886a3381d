//! CSV: one row per sample, for spreadsheets and `pandas.read_csv`.
//!
//! Header `metric,labels,timestamp,timestamp_ms,value,out_of_range,alert,query`.
//! `labels` is the PromQL notation without the name (`{a="b", c="d"}`),
//! `timestamp` RFC 3339 UTC, `value` as the Prometheus API prints it
//! (`NaN`, `+Inf`, `-Inf` included), booleans `true`/`false`. Quoting follows
//! RFC 4180 (the `csv` crate), so quotes, commas and newlines in labels or
//! queries survive. No trailer: the run summary lives in the JSON outputs and
//! in SQLite.

use super::{
    push_value, Encoder, FlaggedSample, RunInfo, RunOutcome, SinkError, TimestampFormatter,
};
use crate::model::Labels;
use crate::sink::atomic::AtomicFile;
use std::io;

pub(super) const HEADER: [&str; 8] = [
    "metric",
    "labels",
    "timestamp",
    "timestamp_ms",
    "value",
    "out_of_range",
    "alert",
    "query",
];

pub(super) struct CsvFile {
    out: csv::Writer<AtomicFile>,
    timestamps: TimestampFormatter,
    /// Per-row text fields, reused so rows allocate nothing.
    timestamp: String,
    timestamp_ms: String,
    value: String,
}

impl CsvFile {
    fn error(&self, error: csv::Error) -> SinkError {
        SinkError::Write {
            path: self.out.get_ref().path().to_path_buf(),
            error: csv_io(error),
        }
    }
}

/// The `csv` writer only fails on I/O or on misuse (unequal row lengths,
/// which our fixed row shape rules out).
fn csv_io(error: csv::Error) -> io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

impl Encoder for CsvFile {
    fn start(file: AtomicFile, _run: &RunInfo) -> Result<Self, SinkError> {
        // AtomicFile buffers already; a small csv buffer avoids copying twice.
        let out = csv::WriterBuilder::new()
            .buffer_capacity(8 * 1024)
            .from_writer(file);
        let mut this = CsvFile {
            out,
            timestamps: TimestampFormatter::default(),
            timestamp: String::new(),
            timestamp_ms: String::new(),
            value: String::new(),
        };
        if let Err(e) = this.out.write_record(HEADER) {
            return Err(this.error(e));
        }
        Ok(this)
    }

    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        let metric = labels.metric_name();
        let label_text = labels.format_without_name();
        for s in samples {
            self.timestamp.clear();
            self.timestamps.push(&mut self.timestamp, s.timestamp_ms);
            self.timestamp_ms.clear();
            self.timestamp_ms
                .push_str(itoa(s.timestamp_ms, &mut [0; 20]));
            self.value.clear();
            push_value(&mut self.value, s.value);
            let row = [
                metric,
                &label_text,
                &self.timestamp,
                &self.timestamp_ms,
                &self.value,
                bool_text(s.out_of_range),
                bool_text(s.alert),
                query,
            ];
            if let Err(e) = self.out.write_record(row) {
                return Err(self.error(e));
            }
        }
        Ok(())
    }

    fn close(self, _outcome: &RunOutcome) -> Result<AtomicFile, SinkError> {
        let path = self.out.get_ref().path().to_path_buf();
        self.out.into_inner().map_err(|e| SinkError::Write {
            path,
            error: e.into_error(),
        })
    }
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Formats an integer into `buf` without allocating.
fn itoa(n: i64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, Row};
    use super::super::{open, Format};
    use super::*;
    use std::path::Path;

    /// Reads a CSV export back, checking the header and every field's form.
    fn read(path: &Path) -> Vec<Row> {
        let mut reader = csv::Reader::from_path(path).unwrap();
        assert_eq!(reader.headers().unwrap(), HEADER.as_slice());
        let mut rows = Vec::new();
        for record in reader.records() {
            let r = record.unwrap();
            let timestamp_ms: i64 = r[3].parse().unwrap();
            assert_eq!(
                &r[2],
                crate::model::time::format_rfc3339_ms(timestamp_ms),
                "timestamp column"
            );
            let labels = parse_labels(&r[1]);
            // The labels column is exactly the model's notation.
            assert_eq!(
                &r[1],
                Labels::from_pairs(labels.clone()).format_without_name()
            );
            rows.push(Row {
                metric: r[0].to_string(),
                labels,
                timestamp_ms,
                value: testutil::parse_value(&r[4]),
                out_of_range: parse_bool(&r[5]),
                alert: parse_bool(&r[6]),
                query: r[7].to_string(),
            });
        }
        rows
    }

    fn parse_bool(s: &str) -> bool {
        match s {
            "true" => true,
            "false" => false,
            _ => panic!("bad boolean {s:?}"),
        }
    }

    /// Parses `{a="b", c="d"}` with Go escapes, enough to check round trips.
    fn parse_labels(s: &str) -> Vec<(String, String)> {
        let inner = s.strip_prefix('{').unwrap().strip_suffix('}').unwrap();
        let mut out = Vec::new();
        let mut chars = inner.chars().peekable();
        while chars.peek().is_some() {
            let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '"' => break,
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            out.push((name.trim_start_matches([',', ' ']).to_string(), value));
        }
        out
    }

    #[test]
    fn writes_every_sample_and_the_alerts_apart() {
        let dir = tempfile::tempdir().unwrap();
        let run = testutil::run_info();
        let mut sink = open(Format::Csv, dir.path(), &run).unwrap();
        testutil::feed(sink.as_mut());
        let paths = sink.finish(&testutil::outcome()).unwrap();
        let samples = dir.path().join("samples_20240102T150405Z.csv");
        let alerts = dir.path().join("alerts_20240102T150405Z.csv");
        assert_eq!(paths, [samples.clone(), alerts.clone()]);
        assert_eq!(read(&samples), testutil::expected(false));
        assert_eq!(read(&alerts), testutil::expected(true));
        assert_eq!(testutil::files(dir.path()).len(), 2, "no temp files left");
    }

    #[test]
    fn exact_text_of_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(Format::Csv, dir.path(), &testutil::run_info()).unwrap();
        let labels = Labels::from_pairs([("__name__", "up"), ("a", "x\"y"), ("b", "1,2")]);
        let s = FlaggedSample {
            timestamp_ms: 1_704_207_845_120,
            value: f64::INFINITY,
            out_of_range: true,
            alert: false,
        };
        sink.write("up > 0", &labels, &[s]).unwrap();
        let paths = sink.finish(&testutil::outcome()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            "metric,labels,timestamp,timestamp_ms,value,out_of_range,alert,query\n\
             up,\"{a=\"\"x\\\"\"y\"\", b=\"\"1,2\"\"}\",2024-01-02T15:04:05.120Z,\
             1704207845120,+Inf,true,false,up > 0\n"
        );
        assert_eq!(
            std::fs::read_to_string(&paths[1]).unwrap(),
            "metric,labels,timestamp,timestamp_ms,value,out_of_range,alert,query\n"
        );
    }

    #[test]
    fn abort_leaves_no_file() {
        testutil::abort_leaves_nothing(Format::Csv);
    }

    #[test]
    fn itoa_matches_to_string() {
        for n in [0, 7, -7, 1_704_207_845_123, i64::MIN, i64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string());
        }
    }
}
