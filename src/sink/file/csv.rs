//! CSV: one row per sample, for spreadsheets and `pandas.read_csv`.
//!
//! Header `metric,labels,timestamp,timestamp_ms,value,out_of_range,alert,query`.
//! `labels` is the PromQL notation without the name (`{a="b", c="d"}`),
//! `timestamp` RFC 3339 UTC, `value` as the Prometheus API prints it
//! (`NaN`, `+Inf`, `-Inf` included), booleans `true`/`false`. Quoting follows
//! RFC 4180 as the `csv` crate does, so quotes, commas and newlines in labels
//! or queries survive; rows are built by hand because the per-field quoting
//! scan of a generic writer was the largest cost of a big export. No trailer: the run summary lives in the JSON outputs and
//! in SQLite.

use super::{
    bool_text, push_int, Encoder, FlaggedSample, RunInfo, RunOutcome, SinkError, TimestampFormatter,
};
use crate::fsutil::AtomicFile;
use crate::model::value::push_value;
use crate::model::Labels;
use std::io::{self, Write};

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
    out: AtomicFile,
    timestamps: TimestampFormatter,
    /// One series' rows, built here and written at once: rows allocate nothing.
    rows: Vec<u8>,
}

impl CsvFile {
    fn error(&self, error: io::Error) -> SinkError {
        SinkError::Write {
            path: self.out.path().to_path_buf(),
            error,
        }
    }
}

/// Appends `field` as RFC 4180 does (quoted when it holds `,`, `"`, CR or LF,
/// quotes doubled), the way the `csv` crate's default writer quotes.
fn push_field(out: &mut String, field: &str) {
    if !field.contains([',', '"', '\n', '\r']) {
        out.push_str(field);
        return;
    }
    out.push('"');
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

impl Encoder for CsvFile {
    fn start(mut file: AtomicFile, _run: &RunInfo) -> Result<Self, SinkError> {
        let header = format!("{}\n", HEADER.join(","));
        if let Err(error) = file.write_all(header.as_bytes()) {
            return Err(SinkError::Write {
                path: file.path().to_path_buf(),
                error,
            });
        }
        Ok(CsvFile {
            out: file,
            timestamps: TimestampFormatter::default(),
            rows: Vec::new(),
        })
    }

    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        // The series' own columns are the same on every row: escape them once.
        let mut prefix = String::new();
        push_field(&mut prefix, labels.metric_name());
        prefix.push(',');
        push_field(&mut prefix, &labels.format_without_name());
        prefix.push(',');
        let mut suffix = String::from(",");
        push_field(&mut suffix, query);
        suffix.push('\n');
        self.rows.clear();
        for s in samples {
            self.rows.extend_from_slice(prefix.as_bytes());
            self.timestamps.push(&mut self.rows, s.timestamp_ms);
            self.rows.push(b',');
            push_int(&mut self.rows, s.timestamp_ms);
            self.rows.push(b',');
            push_value(&mut self.rows, s.value);
            self.rows.push(b',');
            self.rows
                .extend_from_slice(bool_text(s.out_of_range).as_bytes());
            self.rows.push(b',');
            self.rows.extend_from_slice(bool_text(s.alert).as_bytes());
            self.rows.extend_from_slice(suffix.as_bytes());
        }
        let result = self.out.write_all(&self.rows);
        if self.rows.capacity() > 1 << 20 {
            self.rows = Vec::new();
        }
        result.map_err(|e| self.error(e))
    }

    fn close(self, _outcome: &RunOutcome) -> Result<AtomicFile, SinkError> {
        Ok(self.out)
    }
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
}
