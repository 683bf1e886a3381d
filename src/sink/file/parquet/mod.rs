//! Parquet: typed columns for DuckDB, pandas/pyarrow and Spark.
//!
//! Schema (one row per sample):
//! ```text
//! message spillway_sample {
//!   required binary query (STRING);
//!   required binary metric (STRING);
//!   required group labels (MAP) {          -- without __name__
//!     repeated group key_value {
//!       required binary key (STRING);
//!       required binary value (STRING);
//!     }
//!   }
//!   required int64 timestamp (TIMESTAMP(MILLIS,true));
//!   required double value;                 -- NaN and ±Inf as IEEE 754
//!   required boolean out_of_range;
//!   required boolean alert;
//! }
//! ```
//! The run header and outcome are in the footer's key-value metadata as
//! JSON (`spillway.run`, `spillway.outcome`), the same objects the JSON
//! format writes.
//!
//! Written without arrow: rows are buffered column-wise and flushed as a
//! row group every [`ROW_GROUP_ROWS`] rows, or earlier once the buffered
//! strings pass [`SEGMENT_BYTES`], so memory is bounded by one row group.
//! Strings of one write call are stored once per call (a `Segment`,
//! extended by consecutive calls for the same series); [`strings`] encodes
//! the string columns from the segments, dictionary-encoded since they
//! repeat for every sample of a series, and parquet's column writers the
//! rest. Compression is Snappy; `timestamp` uses delta encoding (regular
//! steps compress to almost nothing) and, like `value`, no dictionary.
//! Every column but the map's leaves carries min/max statistics.
//!
//! The `labels` leaves `key` and `value` both have max repetition level 1
//! (`key_value` is repeated) and max definition level 1: a row with labels
//! writes one entry per label, repetition 0 for the first and 1 for the
//! rest, definition 1; a row without labels writes one level pair (0, 0)
//! and no value, which readers read as an empty map.

use super::{outcome_json, run_json, Encoder, FlaggedSample, RunInfo, RunOutcome, SinkError};
use crate::fsutil::AtomicFile;
use crate::model::Labels;
use ::parquet::basic::{Compression, Encoding};
use ::parquet::data_type::{BoolType, ByteArray, DataType, DoubleType, Int64Type};
use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::{
    SerializedColumnWriter, SerializedFileWriter, SerializedRowGroupWriter,
};
use ::parquet::schema::parser::parse_message_type;
use std::path::PathBuf;
use std::sync::Arc;
use strings::StringColumn;

mod hybrid;
mod strings;

/// Rows per row group: bounds memory (a few MB) while keeping row groups
/// large enough for readers to skip efficiently.
pub(super) const ROW_GROUP_ROWS: usize = 64 * 1024;

const SCHEMA: &str = "
message spillway_sample {
  required binary query (STRING);
  required binary metric (STRING);
  required group labels (MAP) {
    repeated group key_value {
      required binary key (STRING);
      required binary value (STRING);
    }
  }
  required int64 timestamp (TIMESTAMP(MILLIS,true));
  required double value;
  required boolean out_of_range;
  required boolean alert;
}";

/// Cap on the strings buffered with a row group. Series written one or two
/// samples at a time (sparse alerts) make a segment per row; this flushes
/// such row groups early instead of holding 64k copies of label sets.
pub(super) const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// Consecutive rows of one series in the buffer: its strings, once.
struct Segment {
    query: ByteArray,
    metric: ByteArray,
    keys: Vec<ByteArray>,
    values: Vec<ByteArray>,
    rows: usize,
}

impl Segment {
    fn new(query: &str, labels: &Labels) -> Segment {
        let bytes = |s: &str| ByteArray::from(s.as_bytes().to_vec());
        Segment {
            query: bytes(query),
            metric: bytes(labels.metric_name()),
            keys: labels.without_name().map(|l| bytes(&l.name)).collect(),
            values: labels.without_name().map(|l| bytes(&l.value)).collect(),
            rows: 0,
        }
    }

    /// Whether this segment holds (query, labels), so a write can extend it.
    fn is(&self, query: &str, labels: &Labels) -> bool {
        let mut pairs = self.keys.iter().zip(&self.values);
        self.query.data() == query.as_bytes()
            && self.metric.data() == labels.metric_name().as_bytes()
            && labels.without_name().all(|l| {
                pairs.next().is_some_and(|(k, v)| {
                    k.data() == l.name.as_bytes() && v.data() == l.value.as_bytes()
                })
            })
            && pairs.next().is_none()
    }

    /// Rough heap cost: the strings plus a shared-buffer header per string.
    fn heap_bytes(&self) -> usize {
        let strings = [&self.query, &self.metric]
            .into_iter()
            .chain(&self.keys)
            .chain(&self.values);
        std::mem::size_of::<Segment>() + strings.map(|b| b.len() + 64).sum::<usize>()
    }
}

/// How a file is laid out: the flat per-run files, or one file of a
/// partitioned (Hive) tree, whose path already names the metric.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Whether the `metric` column is stored (a `metric=` directory replaces it).
    pub with_metric: bool,
    pub compression: Compression,
    pub row_group_rows: usize,
}

impl Layout {
    /// `samples_<run>.parquet`: Snappy, every column (unchanged since the first release).
    pub const FLAT: Layout = Layout {
        with_metric: true,
        compression: Compression::SNAPPY,
        row_group_rows: ROW_GROUP_ROWS,
    };
}

pub(super) struct ParquetFile {
    path: PathBuf,
    layout: Layout,
    writer: SerializedFileWriter<AtomicFile>,
    segments: Vec<Segment>,
    /// [`Segment::heap_bytes`] of `segments`.
    segment_bytes: usize,
    timestamps: Vec<i64>,
    values: Vec<f64>,
    out_of_range: Vec<bool>,
    alerts: Vec<bool>,
}

impl ParquetFile {
    fn error(&self, error: ParquetError) -> SinkError {
        SinkError::Parquet {
            path: self.path.clone(),
            error,
        }
    }

    /// Writes the buffered rows as one row group, leaf columns in schema
    /// order: the string columns as chunks encoded by [`strings`], the
    /// others through parquet's column writers.
    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.timestamps.is_empty() {
            return Ok(());
        }
        let mut columns = vec![StringColumn::Query];
        if self.layout.with_metric {
            columns.push(StringColumn::Metric);
        }
        columns.extend([StringColumn::LabelKeys, StringColumn::LabelValues]);
        let schema = self.writer.schema_descr();
        let descrs: Vec<_> = (0..columns.len()).map(|i| schema.column(i)).collect();
        let segments = &self.segments;
        let mut group = self.writer.next_row_group()?;
        // One chunk at a time: each is held in memory until it is appended.
        for (column, descr) in columns.into_iter().zip(descrs) {
            let chunk = strings::encode(descr, column, segments, self.layout.compression)?;
            group.append_column(&chunk.bytes, chunk.close)?;
        }
        write_column::<Int64Type>(&mut group, |w| {
            w.write_batch(&self.timestamps, None, None).map(drop)
        })?;
        write_column::<DoubleType>(&mut group, |w| {
            w.write_batch(&self.values, None, None).map(drop)
        })?;
        write_column::<BoolType>(&mut group, |w| {
            w.write_batch(&self.out_of_range, None, None).map(drop)
        })?;
        write_column::<BoolType>(&mut group, |w| {
            w.write_batch(&self.alerts, None, None).map(drop)
        })?;
        group.close()?;
        self.segments.clear();
        self.segment_bytes = 0;
        self.timestamps.clear();
        self.values.clear();
        self.out_of_range.clear();
        self.alerts.clear();
        Ok(())
    }
}

/// Opens the next leaf column of `group`, lets `write` fill it, closes it.
fn write_column<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, AtomicFile>,
    write: impl FnOnce(
        &mut ::parquet::column::writer::ColumnWriterImpl<'_, T>,
    ) -> Result<(), ParquetError>,
) -> Result<(), ParquetError> {
    let mut column: SerializedColumnWriter<'_> = group
        .next_column()?
        .ok_or_else(|| ParquetError::General("more columns written than the schema has".into()))?;
    write(column.typed::<T>())?;
    column.close()
}

impl ParquetFile {
    /// Starts a file with `layout`; see [`Encoder::start`].
    pub(super) fn start_with(
        file: AtomicFile,
        run: &RunInfo,
        layout: Layout,
    ) -> Result<Self, SinkError> {
        let path = file.path().to_path_buf();
        let perr = |error| SinkError::Parquet {
            path: path.clone(),
            error,
        };
        let schema = if layout.with_metric {
            SCHEMA.to_string()
        } else {
            SCHEMA.replace("  required binary metric (STRING);\n", "")
        };
        let schema = Arc::new(parse_message_type(&schema).map_err(perr)?);
        let props = WriterProperties::builder()
            .set_compression(layout.compression)
            .set_created_by(format!("spillway {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(Some(layout.row_group_rows))
            .set_column_dictionary_enabled("timestamp".into(), false)
            .set_column_encoding("timestamp".into(), Encoding::DELTA_BINARY_PACKED)
            .set_column_dictionary_enabled("value".into(), false)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "spillway.run".into(),
                run_json(run).to_string(),
            )]))
            .build();
        let writer = SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(perr)?;
        Ok(ParquetFile {
            path,
            layout,
            writer,
            segments: Vec::new(),
            segment_bytes: 0,
            timestamps: Vec::new(),
            values: Vec::new(),
            out_of_range: Vec::new(),
            alerts: Vec::new(),
        })
    }

    /// Completes a file of a partitioned tree: like [`Encoder::close`] but
    /// without the run's outcome, which is not known yet when a file closes early.
    pub(super) fn close_part(mut self) -> Result<AtomicFile, SinkError> {
        self.flush().map_err(|e| self.error(e))?;
        let path = self.path;
        self.writer
            .into_inner()
            .map_err(|error| SinkError::Parquet { path, error })
    }

    /// Rows buffered for the next row group.
    pub(super) fn buffered_rows(&self) -> usize {
        self.timestamps.len()
    }

    /// Writes the buffered rows as a row group now (memory pressure).
    pub(super) fn flush_now(&mut self) -> Result<(), SinkError> {
        self.flush().map_err(|e| self.error(e))
    }
}

impl Encoder for ParquetFile {
    fn start(file: AtomicFile, run: &RunInfo) -> Result<Self, SinkError> {
        ParquetFile::start_with(file, run, Layout::FLAT)
    }

    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        mut samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        while !samples.is_empty() {
            let room = self.layout.row_group_rows - self.timestamps.len();
            let (now, later) = samples.split_at(samples.len().min(room));
            if !self.segments.last().is_some_and(|s| s.is(query, labels)) {
                let segment = Segment::new(query, labels);
                self.segment_bytes += segment.heap_bytes();
                self.segments.push(segment);
            }
            let segment = self.segments.last_mut().expect("pushed above");
            segment.rows += now.len();
            for s in now {
                self.timestamps.push(s.timestamp_ms);
                self.values.push(s.value);
                self.out_of_range.push(s.out_of_range);
                self.alerts.push(s.alert);
            }
            if self.timestamps.len() >= self.layout.row_group_rows
                || self.segment_bytes >= SEGMENT_BYTES
            {
                self.flush().map_err(|e| self.error(e))?;
            }
            samples = later;
        }
        Ok(())
    }

    fn close(mut self, outcome: &RunOutcome) -> Result<AtomicFile, SinkError> {
        self.flush().map_err(|e| self.error(e))?;
        self.writer.append_key_value_metadata(KeyValue::new(
            "spillway.outcome".into(),
            outcome_json(outcome).to_string(),
        ));
        let path = self.path;
        self.writer
            .into_inner()
            .map_err(|error| SinkError::Parquet { path, error })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, Row};
    use super::super::{open, Format};
    use super::*;
    use ::parquet::basic::{LogicalType, TimeUnit};
    use ::parquet::file::reader::{FileReader, SerializedFileReader};
    use ::parquet::record::Field;
    use std::path::Path;

    fn reader(path: &Path) -> SerializedFileReader<std::fs::File> {
        SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap()
    }

    fn text(f: &Field) -> String {
        match f {
            Field::Str(s) => s.clone(),
            other => panic!("expected a string, got {other:?}"),
        }
    }

    fn read(path: &Path) -> Vec<Row> {
        let reader = reader(path);
        let mut rows = Vec::new();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let fields: Vec<(&String, &Field)> = row.get_column_iter().collect();
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "query",
                    "metric",
                    "labels",
                    "timestamp",
                    "value",
                    "out_of_range",
                    "alert"
                ]
            );
            let Field::MapInternal(map) = fields[2].1 else {
                panic!("labels is not a map: {:?}", fields[2].1)
            };
            let Field::TimestampMillis(timestamp_ms) = *fields[3].1 else {
                panic!("timestamp is not TIMESTAMP(MILLIS): {:?}", fields[3].1)
            };
            let Field::Double(value) = *fields[4].1 else {
                panic!("value is not a double")
            };
            let (Field::Bool(out_of_range), Field::Bool(alert)) = (fields[5].1, fields[6].1) else {
                panic!("flags are not booleans")
            };
            rows.push(Row {
                query: text(fields[0].1),
                metric: text(fields[1].1),
                labels: map
                    .entries()
                    .iter()
                    .map(|(k, v)| (text(k), text(v)))
                    .collect(),
                timestamp_ms,
                value,
                out_of_range: *out_of_range,
                alert: *alert,
            });
        }
        rows
    }

    fn metadata(path: &Path, key: &str) -> serde_json::Value {
        let reader = reader(path);
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        let value = kv.iter().find(|kv| kv.key == key).unwrap().value.as_ref();
        serde_json::from_str(value.unwrap()).unwrap()
    }

    #[test]
    fn writes_every_sample_and_the_alerts_apart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = testutil::export(Format::Parquet, dir.path());
        assert_eq!(
            paths,
            [
                dir.path().join("samples_20240102T150405Z.parquet"),
                dir.path().join("alerts_20240102T150405Z.parquet")
            ]
        );
        let samples = read(&paths[0]);
        // Bit-exact values: Parquet keeps NaN payloads and -0.
        for (got, want) in samples.iter().zip(testutil::expected(false)) {
            assert_eq!(got.value.to_bits(), want.value.to_bits());
        }
        assert_eq!(samples, testutil::expected(false));
        assert_eq!(read(&paths[1]), testutil::expected(true));
        assert_eq!(
            metadata(&paths[0], "spillway.run")["run_id"],
            "20240102T150405Z"
        );
        assert_eq!(metadata(&paths[1], "spillway.outcome")["alerts"], 3);
        assert_eq!(testutil::files(dir.path()).len(), 2, "no temp files left");
    }

    #[test]
    fn schema_uses_logical_types() {
        let dir = tempfile::tempdir().unwrap();
        let paths = testutil::export(Format::Parquet, dir.path());
        let reader = reader(&paths[0]);
        let schema = reader.metadata().file_metadata().schema_descr();
        let root = schema.root_schema();
        let labels = &root.get_fields()[2];
        assert_eq!(
            labels.get_basic_info().logical_type_ref(),
            Some(&LogicalType::Map)
        );
        let kv = &labels.get_fields()[0];
        assert_eq!(
            kv.get_basic_info().repetition(),
            ::parquet::basic::Repetition::REPEATED
        );
        let key = schema.column(2);
        assert_eq!(key.path().string(), "labels.key_value.key");
        assert_eq!((key.max_def_level(), key.max_rep_level()), (1, 1));
        assert_eq!(key.logical_type_ref(), Some(&LogicalType::String));
        assert_eq!(
            schema.column(4).logical_type_ref(),
            Some(&LogicalType::timestamp(true, TimeUnit::MILLIS))
        );
        assert_eq!(
            reader.metadata().row_group(0).column(0).compression(),
            Compression::SNAPPY
        );
    }

    /// Readers prune row groups on the plain columns' minimum and maximum;
    /// the map's leaves carry none (see [`strings`]).
    #[test]
    fn statistics_cover_every_column_but_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let paths = testutil::export(Format::Parquet, dir.path());
        let reader = reader(&paths[0]);
        let group = reader.metadata().row_group(0);
        let with_min_max: Vec<String> = group
            .columns()
            .iter()
            .filter(|c| c.statistics().is_some_and(|s| s.min_bytes_opt().is_some()))
            .map(|c| c.column_path().string())
            .collect();
        assert_eq!(
            with_min_max,
            [
                "query",
                "metric",
                "timestamp",
                "value",
                "out_of_range",
                "alert"
            ]
        );
    }

    #[test]
    fn row_groups_bound_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(Format::Parquet, dir.path(), &testutil::run_info()).unwrap();
        let a = Labels::from_pairs([("__name__", "m"), ("i", "a")]);
        let b = Labels::from_pairs([("__name__", "m")]);
        let n = ROW_GROUP_ROWS * 2 + 10;
        let samples: Vec<FlaggedSample> = (0..n as i64)
            .map(|i| FlaggedSample {
                timestamp_ms: i * 1000,
                value: i as f64,
                out_of_range: i % 2 == 0,
                alert: i % 1000 == 0,
            })
            .collect();
        // One huge write, then small ones alternating series across a boundary.
        sink.write("q", &a, &samples[..ROW_GROUP_ROWS + 5]).unwrap();
        for chunk in samples[ROW_GROUP_ROWS + 5..].chunks(7) {
            sink.write("q", &b, chunk).unwrap();
            sink.write("q", &a, &chunk[..1]).unwrap();
        }
        let paths = sink.finish(&RunOutcome::default()).unwrap();
        let reader = reader(&paths[0]);
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert!(
            groups.iter().all(|&r| r <= ROW_GROUP_ROWS as i64),
            "{groups:?}"
        );
        assert_eq!(groups.len(), 3, "{groups:?}");
        let rows = read(&paths[0]);
        let tail = n - ROW_GROUP_ROWS - 5;
        assert_eq!(rows.len(), n + tail.div_ceil(7));
        assert_eq!(
            rows[ROW_GROUP_ROWS + 4].labels,
            [("i".to_string(), "a".to_string())]
        );
        assert!(rows[ROW_GROUP_ROWS + 5].labels.is_empty());
        assert_eq!(
            rows[ROW_GROUP_ROWS + 5].timestamp_ms,
            (ROW_GROUP_ROWS as i64 + 5) * 1000
        );
        assert_eq!(
            read(&paths[1]).len(),
            rows.iter().filter(|r| r.alert).count()
        );
    }

    #[test]
    fn many_small_series_flush_early() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(Format::Parquet, dir.path(), &testutil::run_info()).unwrap();
        let long = "x".repeat(1000);
        let n = 2 * SEGMENT_BYTES / 1000;
        for i in 0..n {
            let labels =
                Labels::from_pairs([("__name__", "m".to_string()), ("i", format!("{i}{long}"))]);
            let s = FlaggedSample {
                timestamp_ms: i as i64,
                value: 1.0,
                out_of_range: false,
                alert: false,
            };
            sink.write("q", &labels, &[s]).unwrap();
        }
        let paths = sink.finish(&RunOutcome::default()).unwrap();
        let reader = reader(&paths[0]);
        assert!(reader.metadata().num_row_groups() >= 2);
        let rows = read(&paths[0]);
        assert_eq!(rows.len(), n);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, r)| r.labels[0].1 == format!("{i}{long}")));
    }

    #[test]
    fn abort_leaves_no_file() {
        testutil::abort_leaves_nothing(Format::Parquet);
    }
}
