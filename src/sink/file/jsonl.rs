//! JSON lines: one object per sample, for `jq`, log pipelines and
//! line-by-line loaders.
//!
//! ```text
//! {"metric":"cpu","labels":{"instance":"h1"},"timestamp":"2024-01-02T15:04:05Z","timestamp_ms":1704207845000,"value":0.5,"out_of_range":false,"alert":false,"query":"cpu"}
//! ```
//! `labels` excludes `__name__`. `value` is a JSON number when finite;
//! `NaN`, `+Inf` and `-Inf` are the strings `"NaN"`, `"+Inf"`, `"-Inf"`
//! (JSON has no such numbers; the Prometheus API spells them the same way).
//! No header or trailer, so files can be concatenated.

use super::{
    bool_text, push_int, push_json_labels, push_json_str, write_err, Encoder, FlaggedSample,
    RunInfo, RunOutcome, SinkError, TimestampFormatter,
};
use crate::fsutil::AtomicFile;
use crate::model::value::push_json_value;
use crate::model::Labels;
use std::io::Write as _;

pub(super) struct JsonlFile {
    out: AtomicFile,
    timestamps: TimestampFormatter,
    /// One write call's lines, reused: the per-series parts are built once
    /// per call and the buffer goes to the file in one piece.
    line: Vec<u8>,
}

impl Encoder for JsonlFile {
    fn start(file: AtomicFile, _run: &RunInfo) -> Result<Self, SinkError> {
        Ok(JsonlFile {
            out: file,
            timestamps: TimestampFormatter::default(),
            line: Vec::new(),
        })
    }

    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        let mut head = String::from(r#"{"metric":"#);
        push_json_str(&mut head, labels.metric_name());
        head.push_str(r#","labels":"#);
        push_json_labels(&mut head, labels);
        head.push_str(r#","timestamp":""#);
        let mut tail = String::from(r#","query":"#);
        push_json_str(&mut tail, query);
        tail.push_str("}\n");

        // Chunks keep the buffer small when one call brings a long series.
        for chunk in samples.chunks(4096) {
            self.line.clear();
            for s in chunk {
                let line = &mut self.line;
                line.extend_from_slice(head.as_bytes());
                self.timestamps.push(line, s.timestamp_ms);
                line.extend_from_slice(br#"","timestamp_ms":"#);
                push_int(line, s.timestamp_ms);
                line.extend_from_slice(br#","value":"#);
                push_json_value(line, s.value);
                line.extend_from_slice(br#","out_of_range":"#);
                line.extend_from_slice(bool_text(s.out_of_range).as_bytes());
                line.extend_from_slice(br#","alert":"#);
                line.extend_from_slice(bool_text(s.alert).as_bytes());
                line.extend_from_slice(tail.as_bytes());
            }
            self.out
                .write_all(&self.line)
                .map_err(write_err(&self.out))?;
        }
        Ok(())
    }

    fn close(self, _outcome: &RunOutcome) -> Result<AtomicFile, SinkError> {
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, json_labels, json_value, Row};
    use super::super::{open, Format};
    use super::*;
    use serde_json::Value;
    use std::path::Path;

    fn read(path: &Path) -> Vec<Row> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
                assert_eq!(keys.len(), 8, "{line}");
                let timestamp_ms = v["timestamp_ms"].as_i64().unwrap();
                assert_eq!(
                    v["timestamp"],
                    crate::model::time::format_rfc3339_ms(timestamp_ms)
                );
                Row {
                    query: v["query"].as_str().unwrap().to_string(),
                    metric: v["metric"].as_str().unwrap().to_string(),
                    labels: json_labels(&v["labels"]),
                    timestamp_ms,
                    value: json_value(&v["value"]),
                    out_of_range: v["out_of_range"].as_bool().unwrap(),
                    alert: v["alert"].as_bool().unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn writes_every_sample_and_the_alerts_apart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = testutil::export(Format::Jsonl, dir.path());
        assert_eq!(
            paths,
            [
                dir.path().join("samples_20240102T150405Z.jsonl"),
                dir.path().join("alerts_20240102T150405Z.jsonl")
            ]
        );
        assert_eq!(read(&paths[0]), testutil::expected(false));
        assert_eq!(read(&paths[1]), testutil::expected(true));
        assert_eq!(testutil::files(dir.path()).len(), 2, "no temp files left");
    }

    #[test]
    fn exact_text_of_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(Format::Jsonl, dir.path(), &testutil::run_info()).unwrap();
        let labels = Labels::from_pairs([("__name__", "up"), ("a", "x\"y")]);
        let s = FlaggedSample {
            timestamp_ms: 1_704_207_845_000,
            value: f64::NAN,
            out_of_range: false,
            alert: true,
        };
        sink.write("up", &labels, &[s]).unwrap();
        let paths = sink.finish(&testutil::outcome()).unwrap();
        let line = r#"{"metric":"up","labels":{"a":"x\"y"},"timestamp":"2024-01-02T15:04:05Z","timestamp_ms":1704207845000,"value":"NaN","out_of_range":false,"alert":true,"query":"up"}"#;
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            format!("{line}\n")
        );
        assert_eq!(
            std::fs::read_to_string(&paths[1]).unwrap(),
            format!("{line}\n")
        );
    }

    #[test]
    fn abort_leaves_no_file() {
        testutil::abort_leaves_nothing(Format::Jsonl);
    }
}
