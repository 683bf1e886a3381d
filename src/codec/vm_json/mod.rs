//! VictoriaMetrics JSON lines: the `/api/v1/export` output, `/api/v1/import`
//! input and the `metrics.jsonl` of support bundles.
//!
//! One series per line:
//! `{"metric":{"__name__":"up","job":"a"},"values":[1,0.5],"timestamps":[1700000000000,1700000015000]}`.
//! The writer prints what VictoriaMetrics' export prints (checked byte for
//! byte against victoria-metrics 1.79): `__name__` first, then the other labels
//! (sorted; VictoriaMetrics moves a few common names such as `job` forward,
//! which JSON readers ignore); `<` and `'` escaped as `\u003c` and `\u0027`
//! like its template engine; integral values as integers; other values in
//! shortest round-trip form without an exponent (Go's
//! `FormatFloat(v, 'f', -1, 64)`, Rust's `{}`).
//!
//! Special values are where versions differ. Export writes NaN as `null`
//! and infinities as bare `+Inf`/`-Inf` (1.79) or as `"Infinity"`/`"-Infinity"`
//! (current); import in 1.79 refuses `null` and strings, dropping the whole
//! line. We write the bare tokens `NaN`, `+Inf`, `-Inf`: not strict JSON, but
//! the only spelling every version's import (fastjson) reads. The reader
//! accepts all of these spellings, the quoted ones in any case
//! (`"NaN"`, `"inf"`, `"-Infinity"`), and `null`.
//!
//! Every NaN read becomes the Prometheus staleness marker: VictoriaMetrics
//! drops other NaNs at ingestion, so a NaN in its export is always a stale
//! marker, and reading it back as one keeps its meaning when forwarded by
//! remote write. (No JSON spelling imports a stale marker into
//! VictoriaMetrics: it parses them as plain NaN and drops them; remote write
//! carries them.)
//!
//! Reading has one home, [`scan`]: it finds the parts of a line without
//! recursing (bundles check and copy lines that way) and
//! [`parse_vm_json_line`] parses their samples with the standard library's
//! correctly rounded float parser, so a written value reads back to the
//! same bits.

mod scan;

pub use scan::{parse_metric, scan_line, scan_line_fast, ScannedLine};

use super::CodecError;
use crate::model::{labels::METRIC_NAME, Labels, Sample, Series};
use std::io::BufRead;

/// Longest line [`VmJsonLineReader`] accepts by default: VictoriaMetrics'
/// `-import.maxLineLen` default, so what it would import we read too.
pub const DEFAULT_MAX_LINE_BYTES: usize = 10 << 20;

/// Appends `series` as one line, newline included. A series without samples
/// writes nothing, as VictoriaMetrics' export does (its import rejects a line
/// with empty `values`).
pub fn write_vm_json_line(series: &Series, out: &mut Vec<u8>) {
    write_vm_json_parts(&series.labels, &series.samples, out)
}

/// [`write_vm_json_line`] for labels and samples held apart (a relabeled
/// copy of the labels with the original samples, say).
pub fn write_vm_json_parts(labels: &Labels, samples: &[Sample], out: &mut Vec<u8>) {
    write_line(
        labels,
        samples.iter().map(|s| s.timestamp_ms),
        samples.iter().map(|s| s.value),
        put_value,
        out,
    );
}

/// The one layout of a line: `metric`, then the values as `put` prints
/// them, then the timestamps; nothing for no samples.
fn write_line<V>(
    labels: &Labels,
    timestamps: impl ExactSizeIterator<Item = i64>,
    values: impl Iterator<Item = V>,
    mut put: impl FnMut(&mut Vec<u8>, V),
    out: &mut Vec<u8>,
) {
    if timestamps.len() == 0 {
        return;
    }
    out.extend_from_slice(b"{\"metric\":");
    write_vm_json_metric(labels, out);
    out.extend_from_slice(b",\"values\":[");
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put(out, v);
    }
    out.extend_from_slice(b"],\"timestamps\":[");
    for (i, t) in timestamps.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_i64(out, t);
    }
    out.extend_from_slice(b"]}\n");
}

/// Appends the `metric` object of a line, `{"__name__":"up","job":"a"}`, as
/// VictoriaMetrics prints it; for callers that copy the rest of a line as is.
pub fn write_vm_json_metric(labels: &Labels, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    // VictoriaMetrics prints the metric name first even where a label name
    // (`A`, `0`) sorts before `__name__`.
    if let Some(name) = labels.get(METRIC_NAME) {
        put_json_string(out, METRIC_NAME);
        out.push(b':');
        put_json_string(out, name);
        first = false;
    }
    for label in labels.without_name() {
        if !first {
            out.push(b',');
        }
        first = false;
        put_json_string(out, &label.name);
        out.push(b':');
        put_json_string(out, &label.value);
    }
    out.push(b'}');
}

/// Appends one line per series (series without samples are skipped).
pub fn write_vm_json_lines(batch: &[Series], out: &mut Vec<u8>) {
    for s in batch {
        write_vm_json_line(s, out);
    }
}

/// Parses one line (trailing `\r`/`\n` allowed) through [`scan_line_fast`]:
/// the one reader of these lines. Keys other than `metric`, `values` and
/// `timestamps` are ignored, as VictoriaMetrics' import ignores them. The
/// error names what is wrong; [`VmJsonLineReader`] adds the line number.
pub fn parse_vm_json_line(line: &[u8]) -> Result<Series, CodecError> {
    let invalid = |reason: String| CodecError::VmJson {
        line_number: None,
        reason,
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("empty line".into()));
    }
    let scanned = scan_line_fast(line).map_err(invalid)?;
    let labels = parse_metric(scanned.metric).map_err(invalid)?;
    if labels.is_empty() {
        return Err(invalid(
            "`metric` has no labels; a series needs at least `__name__`".into(),
        ));
    }
    let mut samples = Vec::with_capacity(scanned.samples);
    scan::for_each_timestamp(scanned.timestamps, |t| samples.push(Sample::new(t, 0.0)))
        .map_err(invalid)?;
    let mut next = samples.iter_mut();
    let mut missing = false;
    scan::for_each_value(scanned.values, |v| match next.next() {
        Some(s) => s.value = v,
        None => missing = true,
    })
    .map_err(invalid)?;
    if missing || next.next().is_some() {
        return Err(invalid(format!(
            "`values` and `timestamps` differ in length ({} timestamps)",
            samples.len()
        )));
    }
    Ok(Series::new(labels, samples))
}

/// Reads series from a JSON-lines stream, one `Result` per non-blank line,
/// the line number in every error. Lines over the limit are skipped whole and
/// reported, so one bad line does not end the stream; an I/O error does.
pub struct VmJsonLineReader<R> {
    inner: R,
    line: Vec<u8>,
    line_number: u64,
    max_line_bytes: usize,
    done: bool,
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

impl<R: BufRead> VmJsonLineReader<R> {
    pub fn new(inner: R) -> Self {
        VmJsonLineReader {
            inner,
            line: Vec::new(),
            line_number: 0,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            done: false,
        }
    }

    /// Sets the longest line accepted, in bytes, newline excluded.
    pub fn with_max_line_bytes(mut self, max_line_bytes: usize) -> Self {
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// Number of the line last read, 1-based (0 before the first).
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// The bytes of the line last read (without its newline), for callers
    /// that pass lines through unchanged.
    pub fn raw_line(&self) -> &[u8] {
        &self.line
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads up to the next `\n` into `self.line`, never buffering more than
    /// the limit: an over-long line is consumed and dropped.
    fn read_line(&mut self) -> std::io::Result<LineRead> {
        self.line.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(match (any, too_long) {
                    (false, _) => LineRead::Eof,
                    (true, true) => LineRead::TooLong,
                    (true, false) => LineRead::Line,
                });
            }
            any = true;
            let (chunk, used, end_of_line) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !too_long {
                if self.line.len() + chunk.len() > self.max_line_bytes {
                    too_long = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            self.inner.consume(used);
            if end_of_line {
                return Ok(if too_long {
                    LineRead::TooLong
                } else {
                    LineRead::Line
                });
            }
        }
    }
}

impl<R: BufRead> Iterator for VmJsonLineReader<R> {
    type Item = Result<Series, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let line_number = self.line_number + 1;
            let read = self.read_line();
            match read {
                Ok(LineRead::Eof) => self.done = true,
                Err(error) => {
                    self.done = true;
                    return Some(Err(CodecError::Io { line_number, error }));
                }
                Ok(LineRead::TooLong) => {
                    self.line_number = line_number;
                    return Some(Err(CodecError::LineTooLong {
                        line_number,
                        limit_bytes: self.max_line_bytes,
                    }));
                }
                Ok(LineRead::Line) => {
                    self.line_number = line_number;
                    // VictoriaMetrics' import skips blank lines too.
                    if self.line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(parse_vm_json_line(&self.line).map_err(|e| match e {
                        CodecError::VmJson { reason, .. } => CodecError::VmJson {
                            line_number: Some(line_number),
                            reason,
                        },
                        other => other,
                    }));
                }
            }
        }
        None
    }
}

// ---- writing ----

/// Bytes that need escaping inside a JSON string as VictoriaMetrics writes
/// it: control characters, `"` and `\`, plus `<` and `'` which its template
/// engine escapes for HTML safety.
const fn needs_escape_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'\'' as usize] = true;
    t
}
static NEEDS_ESCAPE: [bool; 256] = needs_escape_table();

fn put_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// 2^63: integral values below it print as integers, as Go's `int(f)` path
/// in VictoriaMetrics does.
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;

fn put_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else if v.fract() == 0.0 && v.abs() < I64_LIMIT {
        // Integers are most samples (counters, flags) and print much faster
        // this way; -0.0 prints as 0, as VictoriaMetrics prints it.
        put_i64(out, v as i64);
    } else {
        // The shortest string that reads back to the same bits, never in
        // exponent form: the digits of Go's 'f', -1.
        crate::model::value::push_finite(out, v);
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A line of samples held as VictoriaMetrics stores values, `decimals[i] *
/// 10^scale` (a native export block), with `values` the floats the server
/// computes from them. Prints what [`write_vm_json_parts`] prints for
/// `values`, but from the decimal digits wherever they are the float's
/// shortest form, which skips the float-to-text search for most values.
pub fn write_vm_json_decimal_parts(
    labels: &Labels,
    timestamps: &[i64],
    values: &[f64],
    decimals: &[i64],
    scale: i16,
    out: &mut Vec<u8>,
) {
    write_line(
        labels,
        timestamps.iter().copied(),
        values.iter().zip(decimals),
        |out, (&v, &d)| {
            if !crate::model::value::push_decimal(out, d, scale) {
                put_value(out, v);
            }
        },
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;
    use std::io::Cursor;

    fn line(series: &Series) -> String {
        let mut out = Vec::new();
        write_vm_json_line(series, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The decimal path prints exactly what the float path prints for the
    /// float VictoriaMetrics computes, wherever it takes a value: random
    /// decimals of every length, every scale it accepts and past them, and
    /// the edges (15 digits, 2^53, trailing zeros, zero, negatives).
    #[test]
    fn decimals_print_as_their_floats_print() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut taken = 0;
        let mut check = |d: i64, scale: i16| {
            let mut float = Vec::new();
            crate::codec::vm_native::decimal_to_floats(&[d], scale, &mut float);
            let (mut by_decimal, mut by_float) = (Vec::new(), Vec::new());
            put_value(&mut by_float, float[0]);
            if crate::model::value::push_decimal(&mut by_decimal, d, scale) {
                taken += 1;
                assert_eq!(
                    String::from_utf8_lossy(&by_decimal),
                    String::from_utf8_lossy(&by_float),
                    "{d}e{scale}"
                );
            }
        };
        for d in [
            0,
            1,
            -1,
            999_999_999_999_999,
            -999_999_999_999_999,
            1_000_000_000_000_000,
        ] {
            for scale in -24..=24 {
                check(d, scale);
            }
        }
        for (d, scale) in [
            (9_007_199_254_740_991, 0),
            (9_007_199_254_740, 3),
            (900_719_925_474, 4),
        ] {
            check(d, scale);
            check(-d, scale);
        }
        for _ in 0..400_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 17) as u32;
            let mut d = ((x >> 8) % 10u64.pow(digits).max(1)) as i64;
            if x & (1 << 40) != 0 {
                d = -d;
            }
            if x & (1 << 41) != 0 {
                // Trailing zeros, as decimals of whole-number floats have.
                d = d.saturating_mul(1000);
            }
            let scale = ((x >> 50) % 49) as i16 - 24;
            check(d, scale);
        }
        assert!(taken > 150_000, "the decimal path took only {taken} values");
    }

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
        Series::new(
            Labels::from_pairs(pairs.iter().copied()),
            samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
        )
    }

    fn parse_err(input: &str) -> String {
        parse_vm_json_line(input.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn golden_lines() {
        // Byte for byte what victoria-metrics 1.79 exports for this series
        // after receiving it by remote write.
        let s = series(
            &[
                ("__name__", "rw_labels"),
                ("q", "a\"b\\c\nd<>&'é\u{1}\t\u{8}\u{c}"),
                ("A", "x"),
            ],
            &[(1_700_000_000_000, 1.0), (1_700_000_015_000, 0.5)],
        );
        assert_eq!(
            line(&s),
            concat!(
                r#"{"metric":{"__name__":"rw_labels","A":"x","q":"a\"b\\c\nd\u003c>&\u0027é\u0001\t\u0008\u000c"},"#,
                r#""values":[1,0.5],"timestamps":[1700000000000,1700000015000]}"#,
                "\n"
            )
        );
        let s = series(
            &[("__name__", "t")],
            &[
                (1, 1e300),
                (2, 1e-10),
                (3, -0.0),
                (4, -3.25),
                (-5, 123456789.0),
            ],
        );
        let expected = format!(
            "{}{}{}",
            r#"{"metric":{"__name__":"t"},"values":[1"#,
            "0".repeat(300),
            ",0.0000000001,0,-3.25,123456789],\"timestamps\":[1,2,3,4,-5]}\n"
        );
        assert_eq!(line(&s), expected);
        let s = Series::new(
            Labels::from_pairs([("__name__", "s")]),
            vec![
                Sample::stale(1),
                Sample::new(2, f64::INFINITY),
                Sample::new(3, f64::NEG_INFINITY),
            ],
        );
        assert_eq!(
            line(&s),
            "{\"metric\":{\"__name__\":\"s\"},\"values\":[NaN,+Inf,-Inf],\"timestamps\":[1,2,3]}\n"
        );
        // No name: labels only. No samples: no line.
        assert_eq!(
            line(&series(&[("a", "b")], &[(7, 2.0)])),
            "{\"metric\":{\"a\":\"b\"},\"values\":[2],\"timestamps\":[7]}\n"
        );
        assert_eq!(line(&series(&[("__name__", "x")], &[])), "");
    }

    fn assert_round_trip(s: &Series) {
        let text = line(s);
        let back = parse_vm_json_line(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(back.labels, s.labels, "{text}");
        assert_eq!(back.samples.len(), s.samples.len());
        for (a, b) in s.samples.iter().zip(&back.samples) {
            assert_eq!(a.timestamp_ms, b.timestamp_ms);
            if a.value.is_nan() {
                // Every NaN comes back as the stale marker.
                assert_eq!(b.value.to_bits(), STALE_NAN_BITS, "{text}");
            } else if a.value == 0.0 {
                assert_eq!(b.value, 0.0);
            } else {
                assert_eq!(
                    a.value.to_bits(),
                    b.value.to_bits(),
                    "{} in {text}",
                    a.value
                );
            }
        }
    }

    #[test]
    fn round_trip_special_values_and_odd_labels() {
        let s = Series::new(
            Labels::from_pairs([
                ("__name__", "m"),
                ("quote", "a\"b"),
                ("backslash", "c:\\dir\\"),
                ("newline", "x\ny\r\n"),
                ("unicode", "ünï €😀 ∂"),
                ("control", "\u{0}\u{1f}\u{7f}"),
                ("empty", ""),
                ("A", "before __name__"),
            ]),
            vec![
                Sample::new(1, f64::NAN),
                Sample::stale(2),
                Sample::new(3, f64::INFINITY),
                Sample::new(4, f64::NEG_INFINITY),
                Sample::new(5, 0.1),
                Sample::new(6, -0.0),
                Sample::new(7, f64::MAX),
                Sample::new(8, f64::MIN_POSITIVE),
                Sample::new(9, 5e-324),
                Sample::new(10, 2f64.powi(62)),
                Sample::new(i64::MIN, -1.5),
                Sample::new(i64::MAX, 9_007_199_254_740_993.0),
            ],
        );
        assert!(
            s.labels.get("empty").is_none(),
            "the model drops empty values"
        );
        assert_round_trip(&s);
    }

    #[test]
    fn round_trip_many_floats_bit_exact() {
        // A cheap deterministic generator over all bit patterns, to catch a
        // parser that is off by one ulp (serde_json without float_roundtrip).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let samples: Vec<Sample> = (0..20_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = f64::from_bits(x);
                Sample::new(i, if v.is_nan() { 1.0 } else { v })
            })
            .collect();
        assert_round_trip(&Series::new(
            Labels::from_pairs([("__name__", "r")]),
            samples,
        ));
        let decimals: Vec<Sample> = (0..10_000)
            .map(|i| Sample::new(i, i as f64 * 0.001 + 0.3))
            .collect();
        assert_round_trip(&Series::new(
            Labels::from_pairs([("__name__", "d")]),
            decimals,
        ));
    }

    #[test]
    fn reads_every_special_spelling() {
        let text = r#"{"metric":{"__name__":"x"},"values":[NaN,"NaN",null,"nan",+Inf,"Inf",Inf,inf,"infinity","+Infinity",-Inf,"-Inf","-infinity",1.5e3,-2],"timestamps":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}"#;
        let s = parse_vm_json_line(text.as_bytes()).unwrap();
        let v: Vec<f64> = s.samples.iter().map(|s| s.value).collect();
        for x in &v[..4] {
            assert_eq!(x.to_bits(), STALE_NAN_BITS);
        }
        assert!(v[4..10].iter().all(|&x| x == f64::INFINITY), "{v:?}");
        assert!(v[10..13].iter().all(|&x| x == f64::NEG_INFINITY), "{v:?}");
        assert_eq!(&v[13..], &[1500.0, -2.0]);
    }

    #[test]
    fn reads_what_each_victoriametrics_exports() {
        // victoria-metrics 1.79, a stale marker received by remote write:
        // `null` for NaN, bare `+Inf`/`-Inf`.
        let old = r#"{"metric":{"__name__":"rw_special","job":"x"},"values":[1,null,+Inf,-Inf,0.25],"timestamps":[1700000000000,1700000001000,1700000002000,1700000003000,1700000004000]}"#;
        // Current VictoriaMetrics (convertValueToSpecialJSON): strict JSON.
        let new = r#"{"metric":{"__name__":"rw_special","job":"x"},"values":[1,null,"Infinity","-Infinity",0.25],"timestamps":[1700000000000,1700000001000,1700000002000,1700000003000,1700000004000]}"#;
        for text in [old, new] {
            let s = parse_vm_json_line(text.as_bytes()).unwrap();
            assert_eq!(s.labels.to_string(), r#"rw_special{job="x"}"#);
            let v: Vec<f64> = s.samples.iter().map(|s| s.value).collect();
            assert_eq!(v[0], 1.0);
            assert!(s.samples[1].is_stale(), "{text}");
            assert_eq!(&v[2..], &[f64::INFINITY, f64::NEG_INFINITY, 0.25]);
        }
    }

    #[test]
    fn bare_words_inside_strings_are_left_alone() {
        let text = r#"{"metric":{"__name__":"NaN","v":"\"Inf,","w":"-Infinity"},"values":[Inf],"timestamps":[1]}"#;
        let s = parse_vm_json_line(text.as_bytes()).unwrap();
        assert_eq!(s.labels.get("__name__"), Some("NaN"));
        assert_eq!(s.labels.get("v"), Some("\"Inf,"));
        assert_eq!(s.labels.get("w"), Some("-Infinity"));
        assert_eq!(s.samples[0].value, f64::INFINITY);
    }

    #[test]
    fn extra_fields_whitespace_and_crlf_are_fine() {
        let text = "  { \"timestamps\" : [ 5 ] , \"values\":[ 1 ], \"extra\": {\"a\": [1]}, \"metric\":{\"__name__\":\"x\"} }\r\n";
        let s = parse_vm_json_line(text.as_bytes()).unwrap();
        assert_eq!(s.samples, vec![Sample::new(5, 1.0)]);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = parse_err(r#"{"metric":{"__name__":"x"},"values":[1,2],"timestamps":[1]}"#);
        assert!(
            e.contains("`values` has 2 entries but `timestamps` has 1"),
            "{e}"
        );
        let e = parse_err(r#"{"metric":{"__name__":"x"},"values":[1]}"#);
        assert!(e.contains("`timestamps` is missing"), "{e}");
        let e = parse_err(r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1.7e12]}"#);
        assert!(e.contains("integers in milliseconds"), "{e}");
        let e = parse_err(r#"{"metric":{"__name__":"x"},"values":["high"],"timestamps":[1]}"#);
        assert!(
            e.contains("`\"high\"`") && e.contains("NaN, +Inf or -Inf"),
            "{e}"
        );
        let e = parse_err(r#"{"metric":{"__name__":1},"values":[1],"timestamps":[1]}"#);
        assert!(e.contains("invalid type: integer `1`"), "{e}");
        let e = parse_err(r#"{"metric":{},"values":[1],"timestamps":[1]}"#);
        assert!(e.contains("no labels"), "{e}");
        let e = parse_err(r#"{"metric":{"__name__":"x"},"values":[1,],"timestamps":[1]}"#);
        assert!(e.contains("empty entry"), "{e}");
        let e = parse_err(r#"{"metric":{"__name__":"x"},"values":[Infinite],"timestamps":[1]}"#);
        assert!(e.contains("invalid VictoriaMetrics JSON line"), "{e}");
        assert!(parse_err("  \r").contains("empty line"));
        let e = parse_err(r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1]} x"#);
        assert!(e.contains("after the object"), "{e}");
        let e = parse_err(r#"{"metric":{"a":"b"},"values":[1e999999999999],"timestamps":[1]}"#);
        assert!(e.contains("float range"), "{e}");
        let e = parse_err(
            r#"{"metric":{"a":"b"},"values":[1,2],"timestamps":[1 , 9223372036854775808]}"#,
        );
        assert!(e.contains("64-bit range"), "{e}");
    }

    #[test]
    fn reader_streams_with_line_numbers() {
        let mut text = Vec::new();
        write_vm_json_line(&series(&[("__name__", "a")], &[(1, 1.0)]), &mut text);
        text.extend_from_slice(b"\n   \r\n");
        text.extend_from_slice(
            b"{\"metric\":{\"__name__\":\"b\"},\"values\":[1,2],\"timestamps\":[1]}\n",
        );
        write_vm_json_line(&series(&[("__name__", "c")], &[(2, 2.0)]), &mut text);
        text.pop(); // last line without its newline
        let results: Vec<_> = VmJsonLineReader::new(Cursor::new(text)).collect();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap().labels.metric_name(), "a");
        let e = results[1].as_ref().unwrap_err();
        assert!(
            matches!(
                e,
                CodecError::VmJson {
                    line_number: Some(4),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("line 4: "), "{e}");
        assert_eq!(results[2].as_ref().unwrap().labels.metric_name(), "c");
    }

    #[test]
    fn reader_skips_over_long_lines_and_goes_on() {
        let mut text = Vec::new();
        write_vm_json_line(
            &series(&[("__name__", "long")], &vec![(1, 1.0); 100]),
            &mut text,
        );
        write_vm_json_line(&series(&[("__name__", "ok")], &[(1, 1.0)]), &mut text);
        // A tiny BufReader capacity exercises lines spanning many buffer fills.
        let reader = std::io::BufReader::with_capacity(7, Cursor::new(text));
        let mut r = VmJsonLineReader::new(reader).with_max_line_bytes(100);
        let e = r.next().unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                CodecError::LineTooLong {
                    line_number: 1,
                    limit_bytes: 100
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("max_rows_per_line"), "{e}");
        let ok = r.next().unwrap().unwrap();
        assert_eq!(ok.labels.metric_name(), "ok");
        assert_eq!(r.line_number(), 2);
        assert!(r.next().is_none());
        assert!(r.next().is_none());
    }

    #[test]
    fn reader_stops_after_io_error() {
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut r = VmJsonLineReader::new(std::io::BufReader::new(Failing));
        let e = r.next().unwrap().unwrap_err();
        assert!(
            e.to_string().contains("reading line 1: disk on fire"),
            "{e}"
        );
        assert!(r.next().is_none());
    }

    #[test]
    fn write_many_then_read_back() {
        let batch: Vec<Series> = (0..50)
            .map(|i| {
                series(
                    &[("__name__", "m"), ("i", &i.to_string())],
                    &[(i, i as f64 / 3.0), (i + 1, -(i as f64))],
                )
            })
            .collect();
        let mut out = Vec::new();
        write_vm_json_lines(&batch, &mut out);
        let back: Vec<Series> = VmJsonLineReader::new(Cursor::new(out))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, batch);
    }
}
