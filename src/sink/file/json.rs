//! JSON: one document per run and per file, for tools that load a whole
//! file at once.
//!
//! ```text
//! {"run":{"run_id":"20240102T150405Z","started_at":..,"from":..,"to":..,"step_ms":..,"queries":[..]},
//! "series":[
//! {"query":"cpu","metric":"cpu","labels":{"instance":"h1"},"samples":[[1704207845000,0.5,false,false],..]},
//! ..
//! ],
//! "outcome":{"finished_at":..,"samples":..,"alerts":..,"failed_queries":[..]}}
//! ```
//! A sample is `[timestamp_ms, value, out_of_range, alert]`; `value` is a
//! number, or `"NaN"`, `"+Inf"`, `"-Inf"` (JSON has no such numbers).
//! `labels` excludes `__name__`.
//!
//! The document is written as samples arrive, never held in memory: the
//! `series` element stays open while writes continue the same (query,
//! labels), so consecutive calls for one series merge into one element. A
//! series fetched in several windows, with other series written in between,
//! appears in several elements; readers should group by (query, labels).
//! `outcome` comes last because it is only known at the end.

use super::{
    bool_text, outcome_json, push_int, push_json_labels, push_json_str, run_json, write_err,
    Encoder, FlaggedSample, RunInfo, RunOutcome, SinkError,
};
use crate::fsutil::AtomicFile;
use crate::model::value::push_json_value;
use crate::model::Labels;
use std::fmt::Write as _;
use std::io::Write as _;

pub(super) struct JsonFile {
    out: AtomicFile,
    /// The (query, labels) whose `series` element is open, if any.
    open: Option<(String, Labels)>,
    /// Whether a `series` element was written (the next one needs a comma).
    any_series: bool,
    buf: String,
}

impl JsonFile {
    fn put(&mut self, text: &str) -> Result<(), SinkError> {
        self.out
            .write_all(text.as_bytes())
            .map_err(write_err(&self.out))
    }
}

impl Encoder for JsonFile {
    fn start(file: AtomicFile, run: &RunInfo) -> Result<Self, SinkError> {
        let mut this = JsonFile {
            out: file,
            open: None,
            any_series: false,
            buf: String::new(),
        };
        let head = format!("{{\"run\":{},\n\"series\":[", run_json(run));
        this.put(&head)?;
        Ok(this)
    }

    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        let continues = matches!(&self.open, Some((q, l)) if q == query && l == labels);
        self.buf.clear();
        if continues {
            self.buf.push(',');
        } else {
            if self.open.is_some() {
                self.buf.push_str("]}");
            }
            if self.any_series {
                self.buf.push(',');
            }
            self.buf.push_str("\n{\"query\":");
            push_json_str(&mut self.buf, query);
            self.buf.push_str(",\"metric\":");
            push_json_str(&mut self.buf, labels.metric_name());
            self.buf.push_str(",\"labels\":");
            push_json_labels(&mut self.buf, labels);
            self.buf.push_str(",\"samples\":[");
            self.open = Some((query.to_string(), labels.clone()));
            self.any_series = true;
        }
        for chunk in samples.chunks(4096) {
            for (i, s) in chunk.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                self.buf.push('[');
                push_int(&mut self.buf, s.timestamp_ms);
                self.buf.push(',');
                push_json_value(&mut self.buf, s.value);
                self.buf.push(',');
                self.buf.push_str(bool_text(s.out_of_range));
                self.buf.push(',');
                self.buf.push_str(bool_text(s.alert));
                self.buf.push(']');
            }
            let text = std::mem::take(&mut self.buf);
            self.put(&text)?;
            self.buf = text;
            self.buf.clear();
            // The next chunk continues the same array.
            self.buf.push(',');
        }
        Ok(())
    }

    fn close(mut self, outcome: &RunOutcome) -> Result<AtomicFile, SinkError> {
        let mut tail = String::new();
        if self.open.is_some() {
            tail.push_str("]}");
        }
        write!(tail, "\n],\n\"outcome\":{}}}\n", outcome_json(outcome))
            .expect("writing to a String cannot fail");
        self.put(&tail)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, json_labels, json_value, Row};
    use super::super::{open, Format};
    use super::*;
    use serde_json::{json, Value};

    /// Flattens a document back into rows and returns the document too.
    fn read(path: &std::path::Path) -> (Value, Vec<Row>) {
        let doc: Value = serde_json::from_reader(std::fs::File::open(path).unwrap()).unwrap();
        let mut rows = Vec::new();
        for series in doc["series"].as_array().unwrap() {
            let samples = series["samples"].as_array().unwrap();
            assert!(!samples.is_empty(), "no empty series elements");
            for s in samples {
                let s = s.as_array().unwrap();
                assert_eq!(s.len(), 4);
                rows.push(Row {
                    query: series["query"].as_str().unwrap().to_string(),
                    metric: series["metric"].as_str().unwrap().to_string(),
                    labels: json_labels(&series["labels"]),
                    timestamp_ms: s[0].as_i64().unwrap(),
                    value: json_value(&s[1]),
                    out_of_range: s[2].as_bool().unwrap(),
                    alert: s[3].as_bool().unwrap(),
                });
            }
        }
        (doc, rows)
    }

    #[test]
    fn writes_every_sample_and_the_alerts_apart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = testutil::export(Format::Json, dir.path());
        assert_eq!(
            paths,
            [
                dir.path().join("samples_20240102T150405Z.json"),
                dir.path().join("alerts_20240102T150405Z.json")
            ]
        );
        let (doc, rows) = read(&paths[0]);
        assert_eq!(rows, testutil::expected(false));
        // Writes 1 and 2 continue one series and merge; write 4 comes after
        // another series and opens a new element; the empty write adds none.
        assert_eq!(doc["series"].as_array().unwrap().len(), 4);
        assert_eq!(
            doc["run"],
            json!({
                "run_id": "20240102T150405Z",
                "started_at": "2024-01-02T15:04:05Z",
                "started_ms": 1_704_207_845_000i64,
                "from": "2024-01-01T15:04:05Z",
                "from_ms": 1_704_121_445_000i64,
                "to": "2024-01-02T15:04:05Z",
                "to_ms": 1_704_207_845_000i64,
                "step_ms": 60_000,
                "queries": ["cpu", "q,\"odd\"\nquery"],
            })
        );
        assert_eq!(
            doc["outcome"],
            json!({
                "finished_at": "2024-01-02T15:05:00.500Z",
                "finished_ms": 1_704_207_900_500i64,
                "samples": 9,
                "alerts": 3,
                "failed_queries": ["broken("],
            })
        );
        let (doc, rows) = read(&paths[1]);
        assert_eq!(rows, testutil::expected(true));
        assert_eq!(doc["outcome"]["alerts"], 3);
        assert_eq!(testutil::files(dir.path()).len(), 2, "no temp files left");
    }

    #[test]
    fn a_run_without_samples_is_a_valid_document() {
        let dir = tempfile::tempdir().unwrap();
        let sink = open(Format::Json, dir.path(), &testutil::run_info()).unwrap();
        let paths = sink.finish(&RunOutcome::default()).unwrap();
        for path in paths {
            let (doc, rows) = read(&path);
            assert!(rows.is_empty());
            assert_eq!(doc["series"], json!([]));
        }
    }

    #[test]
    fn long_series_span_chunks_in_one_element() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(Format::Json, dir.path(), &testutil::run_info()).unwrap();
        let labels = Labels::from_pairs([("__name__", "m")]);
        let samples: Vec<FlaggedSample> = (0..10_000)
            .map(|i| FlaggedSample {
                timestamp_ms: i,
                value: i as f64 / 4.0,
                out_of_range: false,
                alert: i % 3 == 0,
            })
            .collect();
        sink.write("m", &labels, &samples[..5000]).unwrap();
        sink.write("m", &labels, &samples[5000..]).unwrap();
        let paths = sink.finish(&RunOutcome::default()).unwrap();
        let (doc, rows) = read(&paths[0]);
        assert_eq!(doc["series"].as_array().unwrap().len(), 1);
        assert_eq!(rows.len(), 10_000);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, r)| r.timestamp_ms == i as i64
                && r.value == i as f64 / 4.0
                && r.alert == (i % 3 == 0)));
        let (_, alerts) = read(&paths[1]);
        assert_eq!(alerts.len(), 3334);
    }

    #[test]
    fn abort_leaves_no_file() {
        testutil::abort_leaves_nothing(Format::Json);
    }
}
