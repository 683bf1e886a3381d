//! Decoding remote-write `WriteRequest`s straight into [`Series`], without
//! `prost`'s intermediate message tree: the receiver decodes every request
//! it gets, and building `proto::TimeSeries` first, then our `Labels` from
//! it, allocated each label vector twice and re-sorted it one insert at a
//! time. Here each series allocates its label vector, one `String` per
//! name and value, and its sample vector, once each.
//!
//! Fields spillway does not use (metadata, exemplars, native histograms,
//! anything unknown) are skipped by wire type, as protobuf requires.
//! Errors say what was malformed and at which byte of the decompressed
//! message.

use super::remote_write::read_varint;
use super::CodecError;
use crate::model::labels::name_before;
use crate::model::wire::NO_SPAN;
use crate::model::{Label, Labels, Sample, Series};

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole message, for messages.
    base: usize,
}

/// One field of a message, as [`Reader::field`] reads it.
pub(super) enum Field<'a> {
    /// A length-delimited field: its number, its bytes and their offset.
    Bytes(u64, &'a [u8], usize),
    /// Any other: its number and wire type, its value still to read (or
    /// [`Reader::skip`]).
    Other(u64, u8),
}

pub(super) fn bad(at: usize, what: &str) -> CodecError {
    CodecError::Protobuf(format!("{what} at byte {at}"))
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub(super) fn at(&self) -> usize {
        self.base + self.pos
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, CodecError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, len) = read_varint(rest)
            .ok_or_else(|| bad(self.at(), "truncated varint, or one past 64 bits"))?;
        self.pos += len;
        Ok(v)
    }

    fn fixed64(&mut self) -> Result<u64, CodecError> {
        let end = self.pos + 8;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| bad(self.at(), "truncated 64-bit field"))?;
        self.pos = end;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A length-delimited field's bytes, with their offset in the message.
    pub(super) fn bytes(&mut self) -> Result<(&'a [u8], usize), CodecError> {
        let len = self.varint()? as usize;
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad(self.at(), "length-delimited field runs past the end"))?;
        self.pos = end;
        Ok((&self.buf[start..end], self.base + start))
    }

    /// The next field. A length-delimited one whose key and length take a
    /// byte each, which is how every encoder writes labels and samples, is
    /// read without decoding varints.
    #[inline]
    pub(super) fn field(&mut self) -> Result<Field<'a>, CodecError> {
        if let (Some(&key), Some(&len)) = (self.buf.get(self.pos), self.buf.get(self.pos + 1)) {
            // One-byte key (no continuation bit) of wire type 2, length < 128.
            let start = self.pos + 2;
            if key & 0x87 == 0x02 && len < 0x80 {
                if let Some(bytes) = self.buf.get(start..start + usize::from(len)) {
                    self.pos = start + bytes.len();
                    return Ok(Field::Bytes(u64::from(key >> 3), bytes, self.base + start));
                }
            }
        }
        match self.key()? {
            (f, 2) => {
                let (bytes, at) = self.bytes()?;
                Ok(Field::Bytes(f, bytes, at))
            }
            (f, w) => Ok(Field::Other(f, w)),
        }
    }

    /// `(field number, wire type)`.
    pub(super) fn key(&mut self) -> Result<(u64, u8), CodecError> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    pub(super) fn skip(&mut self, wire_type: u8) -> Result<(), CodecError> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => self.fixed64().map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => {
                if self.pos + 4 > self.buf.len() {
                    return Err(bad(self.at(), "truncated 32-bit field"));
                }
                self.pos += 4;
                Ok(())
            }
            other => Err(bad(self.at(), &format!("unsupported wire type {other}"))),
        }
    }
}

/// `bytes` as text; `known_ascii` when the caller already checked a span
/// holding them (a whole label: one check instead of one per string).
/// In line because the decoder calls it twice per label: out of line,
/// `scripts/bench-router.sh` measured 0.450 against 0.407 CPU-s per
/// million samples.
#[inline]
fn utf8<'a>(
    bytes: &'a [u8],
    known_ascii: bool,
    at: usize,
    what: &str,
) -> Result<&'a str, CodecError> {
    if known_ascii || bytes.is_ascii() {
        debug_assert!(bytes.is_ascii());
        // SAFETY: ASCII is valid UTF-8. Label names and values are nearly
        // always ASCII, and this check is several times cheaper than full
        // validation on such short strings.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    non_ascii_utf8(bytes, at, what)
}

/// The rare non-ASCII label, kept out of line so `utf8` stays small.
#[cold]
#[inline(never)]
fn non_ascii_utf8<'a>(bytes: &'a [u8], at: usize, what: &str) -> Result<&'a str, CodecError> {
    std::str::from_utf8(bytes).map_err(|_| bad(at, &format!("{what} is not valid UTF-8")))
}

/// Decodes a decompressed `WriteRequest`.
pub(super) fn decode_series(message: &[u8]) -> Result<Vec<Series>, CodecError> {
    let mut out = Vec::new();
    decode_series_into(message, &mut out, None)?;
    Ok(out)
}

/// Decodes into `out`, replacing what it held but reusing its series'
/// vectors and label strings: a receiver that hands the same batch back
/// decodes request after request without allocating per label. With
/// `spans`, it is replaced by each series' [`WireForm`] span: the range of
/// its `TimeSeries` body in `message`, or [`NO_SPAN`] when that body is
/// not exactly what the decoded series would encode to.
///
/// [`WireForm`]: crate::model::WireForm
pub(super) fn decode_series_into(
    message: &[u8],
    out: &mut Vec<Series>,
    mut spans: Option<&mut Vec<(u32, u32)>>,
) -> Result<(), CodecError> {
    let mut r = Reader::new(message, 0);
    let mut n = 0;
    // Spans are u32 offsets; a message past 4 GiB simply has none.
    let spans_fit = u32::try_from(message.len()).is_ok();
    if let Some(s) = spans.as_deref_mut() {
        s.clear();
    }
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                let (ts, at) = r.bytes()?;
                if n == out.len() {
                    out.push(Series::default());
                }
                let plain = time_series(ts, at, &mut out[n])?;
                if let Some(s) = spans.as_deref_mut() {
                    s.push(if plain && spans_fit && !ts.is_empty() {
                        (at as u32, (at + ts.len()) as u32)
                    } else {
                        NO_SPAN
                    });
                }
                n += 1;
            }
            (1, w) => return Err(bad(r.at(), &format!("timeseries has wire type {w}, not 2"))),
            (_, w) => r.skip(w)?,
        }
    }
    out.truncate(n);
    Ok(())
}

/// Decodes one `TimeSeries` into `into`. `true` when the message holds
/// labels and samples only, each label with one non-empty name and value
/// and the labels strictly sorted by name, each sample with at most one
/// value and one timestamp: then it means exactly the decoded series and
/// may be forwarded as it is.
pub(super) fn time_series(buf: &[u8], base: usize, into: &mut Series) -> Result<bool, CodecError> {
    let mut r = Reader::new(buf, base);
    let mut labels: Vec<Label> = std::mem::take(&mut into.labels).into_vec();
    let mut used = 0;
    let mut plain = true;
    // Sorted, unique, no empty value: what `Labels::from_vec` would check.
    let mut clean = true;
    into.samples.clear();
    while !r.done() {
        match r.field()? {
            Field::Bytes(1, bytes, at) => {
                if used == labels.len() {
                    labels.push(Label::default());
                }
                let this = &mut labels[used];
                plain &= label(bytes, at, this)?;
                clean &= !this.value.is_empty();
                clean &= used == 0 || name_before(&labels[used - 1].name, &labels[used].name);
                used += 1;
            }
            Field::Bytes(2, bytes, at) => {
                let (s, plain_sample) = sample(bytes, at)?;
                plain &= plain_sample;
                into.samples.push(s);
            }
            Field::Other(f @ (1 | 2), w) => {
                return Err(bad(
                    r.at(),
                    &format!("field {f} of TimeSeries has wire type {w}, not 2"),
                ))
            }
            // Exemplars, histograms, fields spillway does not know.
            Field::Bytes(..) => plain = false,
            Field::Other(_, w) => {
                plain = false;
                r.skip(w)?
            }
        }
    }
    labels.truncate(used);
    into.labels = if clean {
        Labels::from_clean_vec(labels)
    } else {
        Labels::from_vec(labels)
    };
    Ok(plain && clean)
}

/// Decodes one label into `into`, reusing its strings' buffers. `true`
/// when it had one non-empty name, one non-empty value and nothing else.
fn label(buf: &[u8], base: usize, into: &mut Label) -> Result<bool, CodecError> {
    // What every encoder writes for names and values under 128 bytes:
    // name (key 0x0a, length), value (key 0x12, length), nothing else.
    if let [0x0a, n, rest @ ..] = buf {
        let n = usize::from(*n);
        if let Some((name, [0x12, m, value @ ..])) = rest.split_at_checked(n) {
            if n < 0x80 && usize::from(*m) == value.len() && *m < 0x80 && n > 0 && *m > 0 {
                // The keys and lengths around the two strings are ASCII too.
                let ascii = buf.is_ascii();
                into.name.clear();
                into.name
                    .push_str(utf8(name, ascii, base + 2, "label name")?);
                into.value.clear();
                into.value
                    .push_str(utf8(value, ascii, base + 4 + n, "label value")?);
                return Ok(true);
            }
        }
    }
    label_fields(buf, base, into)
}

/// [`label`] for any encoding of a `Label`, field by field.
fn label_fields(buf: &[u8], base: usize, into: &mut Label) -> Result<bool, CodecError> {
    let mut r = Reader::new(buf, base);
    into.name.clear();
    into.value.clear();
    let (mut names, mut values, mut other) = (0u32, 0u32, false);
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                let (b, at) = r.bytes()?;
                into.name.clear();
                into.name.push_str(utf8(b, false, at, "label name")?);
                names += 1;
            }
            (2, 2) => {
                let (b, at) = r.bytes()?;
                into.value.clear();
                into.value.push_str(utf8(b, false, at, "label value")?);
                values += 1;
            }
            (f @ (1 | 2), w) => {
                return Err(bad(
                    r.at(),
                    &format!("field {f} of Label has wire type {w}, not 2"),
                ))
            }
            (_, w) => {
                other = true;
                r.skip(w)?
            }
        }
    }
    Ok(names == 1 && values == 1 && !other && !into.name.is_empty() && !into.value.is_empty())
}

/// One sample, and whether it had at most one value, at most one timestamp
/// and nothing else.
fn sample(buf: &[u8], base: usize) -> Result<(Sample, bool), CodecError> {
    // What every encoder writes for a non-zero value at a non-zero time:
    // value (key 0x09, 8 bytes), timestamp (key 0x10, varint), nothing else.
    if buf.len() > 10 && buf[0] == 0x09 && buf[9] == 0x10 {
        let ts = &buf[10..];
        if let Some((t, len)) = read_varint(ts) {
            if len == ts.len() {
                let bits = u64::from_le_bytes(buf[1..9].try_into().expect("8 bytes"));
                return Ok((Sample::new(t as i64, f64::from_bits(bits)), true));
            }
        }
    }
    sample_fields(buf, base)
}

/// [`sample`] for any encoding of a `Sample`, field by field.
fn sample_fields(buf: &[u8], base: usize) -> Result<(Sample, bool), CodecError> {
    let mut r = Reader::new(buf, base);
    let mut s = Sample::new(0, 0.0);
    let (mut values, mut timestamps, mut other) = (0u32, 0u32, false);
    while !r.done() {
        match r.key()? {
            (1, 1) => {
                s.value = f64::from_bits(r.fixed64()?);
                values += 1;
            }
            (2, 0) => {
                s.timestamp_ms = r.varint()? as i64;
                timestamps += 1;
            }
            (f @ (1 | 2), w) => {
                return Err(bad(
                    r.at(),
                    &format!("field {f} of Sample has wire type {w}"),
                ))
            }
            (_, w) => {
                other = true;
                r.skip(w)?
            }
        }
    }
    Ok((s, values <= 1 && timestamps <= 1 && !other))
}

#[cfg(test)]
mod tests {
    use super::super::remote_write::{proto, RemoteWriteEncoder};
    use super::*;
    use prost::Message;

    #[test]
    fn agrees_with_prost_on_what_prost_writes() {
        let req = proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    // Unsorted, a duplicate (later wins) and an empty value (absent).
                    labels: vec![
                        proto::Label {
                            name: "job".into(),
                            value: "a".into(),
                        },
                        proto::Label {
                            name: "__name__".into(),
                            value: "up".into(),
                        },
                        proto::Label {
                            name: "job".into(),
                            value: "b".into(),
                        },
                        proto::Label {
                            name: "gone".into(),
                            value: "".into(),
                        },
                    ],
                    samples: vec![
                        proto::Sample {
                            value: 1.5,
                            timestamp: -5,
                        },
                        proto::Sample {
                            value: f64::from_bits(crate::model::STALE_NAN_BITS),
                            timestamp: 1_700_000_000_000,
                        },
                    ],
                },
                proto::TimeSeries::default(),
            ],
            metadata: vec![proto::MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: "".into(),
            }],
        };
        let bytes = req.encode_to_vec();
        let got = decode_series(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].labels,
            Labels::from_pairs([("__name__", "up"), ("job", "b")])
        );
        assert_eq!(got[0].samples[0], Sample::new(-5, 1.5));
        assert!(got[0].samples[1].is_stale());
        assert!(got[1].labels.is_empty() && got[1].samples.is_empty());
    }

    #[test]
    fn round_trips_our_encoder() {
        let series = vec![Series::new(
            Labels::from_pairs([("__name__", "m"), ("a", "é")]),
            vec![Sample::new(1, 2.0)],
        )];
        let mut raw = Vec::new();
        RemoteWriteEncoder::new().encode_uncompressed(&series, &mut raw);
        assert_eq!(decode_series(&raw).unwrap(), series);
    }

    #[test]
    fn decoding_into_a_used_batch_replaces_it() {
        let first = vec![
            Series::new(
                Labels::from_pairs([("__name__", "long_name_here"), ("a", "1"), ("b", "2")]),
                vec![Sample::new(1, 1.0), Sample::new(2, 2.0)],
            ),
            Series::new(Labels::from_pairs([("x", "y")]), vec![Sample::new(3, 3.0)]),
        ];
        let second = vec![Series::new(
            Labels::from_pairs([("__name__", "m"), ("z", "9")]),
            vec![Sample::new(5, 5.0)],
        )];
        let mut batch = Vec::new();
        let mut raw = Vec::new();
        let mut enc = RemoteWriteEncoder::new();
        enc.encode_uncompressed(&first, &mut raw);
        decode_series_into(&raw, &mut batch, None).unwrap();
        assert_eq!(batch, first);
        enc.encode_uncompressed(&second, &mut raw);
        decode_series_into(&raw, &mut batch, None).unwrap();
        assert_eq!(batch, second);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut raw = Vec::new();
        RemoteWriteEncoder::new().encode_uncompressed(
            &[Series::new(
                Labels::from_pairs([("a", "b")]),
                vec![Sample::new(1, 1.0)],
            )],
            &mut raw,
        );
        for cut in 0..raw.len() {
            // Every strict prefix is either an error or a shorter valid message.
            let _ = decode_series(&raw[..cut]);
        }
        let e = decode_series(b"\x0a\xff").unwrap_err().to_string();
        assert!(
            e.contains("runs past the end") || e.contains("truncated"),
            "{e}"
        );
        let e = decode_series(b"\x0b").unwrap_err().to_string();
        assert!(e.contains("wire type"), "{e}");
        let bad_utf8 = [0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        let e = decode_series(&bad_utf8).unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
        // The usual two-field label, checked in one piece when ASCII.
        let request = |name: &[u8], value: &[u8]| {
            let mut label = vec![0x0a, name.len() as u8];
            label.extend_from_slice(name);
            label.extend_from_slice(&[0x12, value.len() as u8]);
            label.extend_from_slice(value);
            let mut series = vec![0x0a, label.len() as u8];
            series.extend_from_slice(&label);
            let mut message = vec![0x0a, series.len() as u8];
            message.extend_from_slice(&series);
            decode_series(&message)
        };
        let e = request(b"n", &[0xff, 0xfe]).unwrap_err().to_string();
        assert!(e.contains("label value is not valid UTF-8"), "{e}");
        let e = request(&[0xc3], b"v").unwrap_err().to_string();
        assert!(e.contains("label name is not valid UTF-8"), "{e}");
        let decoded = request("ré".as_bytes(), "café".as_bytes()).unwrap();
        assert_eq!(decoded[0].labels.get("ré"), Some("café"));
    }

    /// Spans of `message` decoded, as `Some(bytes)` / `None` per series.
    fn spans_of(message: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        decode_series_into(message, &mut out, Some(&mut spans)).unwrap();
        assert_eq!(spans.len(), out.len());
        spans
            .iter()
            .map(|&(a, b)| (a != b).then(|| message[a as usize..b as usize].to_vec()))
            .collect()
    }

    fn label(name: &str, value: &str) -> proto::Label {
        proto::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn one_series(labels: Vec<proto::Label>) -> proto::TimeSeries {
        proto::TimeSeries {
            labels,
            samples: vec![proto::Sample {
                value: 1.0,
                timestamp: 5,
            }],
        }
    }

    #[test]
    fn spans_point_at_series_that_mean_what_they_decode_to() {
        let series = vec![
            Series::new(
                Labels::from_pairs([("__name__", "m"), ("a", "1")]),
                vec![Sample::new(1, 2.0), Sample::new(2, 0.0)],
            ),
            Series::new(Labels::from_pairs([("b", "2")]), vec![Sample::new(0, 1.0)]),
        ];
        let mut raw = Vec::new();
        let mut enc = RemoteWriteEncoder::new();
        enc.encode_uncompressed(&series, &mut raw);
        let spans = spans_of(&raw);
        // Each span is exactly what the encoder writes for that series alone.
        for (s, span) in series.iter().zip(&spans) {
            let mut alone = Vec::new();
            enc.encode_uncompressed(std::slice::from_ref(s), &mut alone);
            let mut again = RemoteWriteEncoder::new();
            again.add_encoded(span.as_deref().expect("a canonical series has a span"));
            let mut copied = Vec::new();
            again.finish(&mut copied).unwrap();
            assert_eq!(
                decode_series(&snap::raw::Decoder::new().decompress_vec(&copied).unwrap()).unwrap(),
                vec![s.clone()]
            );
            assert!(alone.ends_with(span.as_deref().unwrap()));
        }
    }

    #[test]
    fn series_that_decode_to_something_else_have_no_span() {
        let exemplar = {
            // TimeSeries field 3 (exemplars), which spillway skips.
            let mut m = one_series(vec![label("a", "1")]).encode_to_vec();
            m.extend_from_slice(&[0x1a, 0x00]);
            m
        };
        let sample_extra = {
            // A sample with an unknown field 3.
            let mut ts = one_series(vec![label("a", "1")]);
            ts.samples.clear();
            let mut m = ts.encode_to_vec();
            m.extend_from_slice(&[0x12, 0x04, 0x10, 0x05, 0x18, 0x01]);
            m
        };
        let wrap = |ts: Vec<u8>| {
            let mut m = vec![0x0a];
            super::super::remote_write::put_varint(&mut m, ts.len() as u64);
            m.extend_from_slice(&ts);
            m
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "unsorted",
                proto::WriteRequest {
                    timeseries: vec![one_series(vec![label("b", "1"), label("a", "1")])],
                    metadata: vec![],
                }
                .encode_to_vec(),
            ),
            (
                "duplicate name",
                proto::WriteRequest {
                    timeseries: vec![one_series(vec![label("a", "1"), label("a", "2")])],
                    metadata: vec![],
                }
                .encode_to_vec(),
            ),
            (
                "empty value",
                proto::WriteRequest {
                    timeseries: vec![one_series(vec![label("a", "1"), label("b", "")])],
                    metadata: vec![],
                }
                .encode_to_vec(),
            ),
            ("exemplar", wrap(exemplar)),
            ("unknown sample field", wrap(sample_extra)),
        ];
        for (what, message) in cases {
            assert_eq!(spans_of(&message), vec![None], "{what}");
        }
        let plain = proto::WriteRequest {
            timeseries: vec![one_series(vec![label("a", "1"), label("b", "1")])],
            metadata: vec![],
        }
        .encode_to_vec();
        assert!(spans_of(&plain)[0].is_some(), "the control case has a span");
    }

    #[test]
    fn the_sample_fast_path_agrees_with_the_field_reader() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (value, timestamp) in [
            (1.5, 1_700_000_000_000),
            (-2.0, 1),
            (0.0, 5),
            (3.0, 0),
            (0.0, 0),
            (f64::NAN, -1),
            (7.0, i64::MIN),
        ] {
            cases.push(proto::Sample { value, timestamp }.encode_to_vec());
        }
        let value = 1.5f64.to_bits().to_le_bytes();
        let with = |pre: &[u8], post: &[u8]| [pre, &value[..], post].concat();
        // Timestamp first, a repeated value, a trailing unknown field,
        // truncated and over-long timestamps, a non-minimal varint.
        cases.push([&[0x10, 0x05, 0x09][..], &value[..]].concat());
        cases.push(with(&[0x09], &[0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x05]));
        cases.push(with(&[0x09], &[0x10, 0x05, 0x18, 0x01]));
        cases.push(with(&[0x09], &[0x10, 0x85]));
        cases.push(with(&[0x09], &[0x10]));
        cases.push(with(
            &[0x09],
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
        ));
        cases.push(with(&[0x09], &[0x10, 0x85, 0x00]));
        cases.push(value[..5].to_vec());
        for bytes in &cases {
            let a = super::sample(bytes, 7).map_err(|e| e.to_string());
            let b = sample_fields(bytes, 7).map_err(|e| e.to_string());
            // Compared bit for bit: NaN is a value here, not "unequal".
            let bits = |r: &Result<(Sample, bool), String>| {
                r.clone()
                    .map(|(s, plain)| (s.timestamp_ms, s.value.to_bits(), plain))
            };
            assert_eq!(bits(&a), bits(&b), "{bytes:?}");
        }
    }

    /// The series of `reference` written with every key and length as a
    /// two-byte varint (valid protobuf, which no encoder writes): the
    /// decoder reads those field by field, without its fast paths.
    fn with_long_varints(reference: &proto::TimeSeries) -> Vec<u8> {
        let long = |out: &mut Vec<u8>, v: u8| out.extend_from_slice(&[v | 0x80, 0x00]);
        let field = |out: &mut Vec<u8>, key: u8, body: &[u8]| {
            long(out, key);
            long(out, body.len() as u8);
            out.extend_from_slice(body);
        };
        let mut ts = Vec::new();
        for l in &reference.labels {
            let mut body = Vec::new();
            field(&mut body, 0x0a, l.name.as_bytes());
            field(&mut body, 0x12, l.value.as_bytes());
            field(&mut ts, 0x0a, &body);
        }
        for s in &reference.samples {
            field(&mut ts, 0x12, &s.encode_to_vec());
        }
        ts
    }

    #[test]
    fn the_field_fast_path_agrees_with_the_field_reader() {
        let reference = proto::TimeSeries {
            labels: vec![
                label("__name__", "up"),
                label("job", "a"),
                label("zone", "z"),
            ],
            samples: vec![
                proto::Sample {
                    value: 1.0,
                    timestamp: 5,
                },
                proto::Sample {
                    value: 0.0,
                    timestamp: 6,
                },
            ],
        };
        let fast = reference.encode_to_vec();
        let slow = with_long_varints(&reference);
        assert_ne!(fast, slow);
        let (mut a, mut b) = (Series::default(), Series::default());
        let plain_fast = time_series(&fast, 0, &mut a).unwrap();
        let plain_slow = time_series(&slow, 0, &mut b).unwrap();
        assert_eq!((&a, plain_fast), (&b, plain_slow));
        assert!(plain_fast);
        assert_eq!(a.labels.get("zone"), Some("z"));
        assert_eq!(a.samples, vec![Sample::new(5, 1.0), Sample::new(6, 0.0)]);
        // Fields it does not know, either way, make the series not plain.
        for extra in [&[0x1a, 0x00][..], &[0x9a, 0x00, 0x00]] {
            let mut m = fast.clone();
            m.extend_from_slice(extra);
            let mut c = Series::default();
            assert!(!time_series(&m, 0, &mut c).unwrap(), "{extra:?}");
            assert_eq!(c, a);
        }
        // A field running past the end is an error on both paths.
        for body in [&fast, &slow] {
            let cut = &body[..body.len() - 1];
            let e = time_series(cut, 0, &mut Series::default()).unwrap_err();
            assert!(
                e.to_string().contains("past the end") || e.to_string().contains("truncated"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_label_fast_path_agrees_with_the_field_reader() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (n, v) in [
            (1, 1),
            (127, 1),
            (128, 3),
            (5, 127),
            (5, 128),
            (0, 3),
            (3, 0),
        ] {
            let l = label("n".repeat(n).as_str(), "v".repeat(v).as_str());
            cases.push(l.encode_to_vec());
        }
        // Value first, a repeated name, a trailing unknown field, truncations.
        cases.push(vec![0x12, 0x01, b'v', 0x0a, 0x01, b'n']);
        cases.push(vec![0x0a, 0x01, b'a', 0x0a, 0x01, b'b', 0x12, 0x01, b'v']);
        cases.push(vec![0x0a, 0x01, b'n', 0x12, 0x01, b'v', 0x18, 0x01]);
        cases.push(vec![0x0a, 0x01, b'n', 0x12, 0x02, b'v']);
        cases.push(vec![0x0a, 0x05, b'n']);
        cases.push(vec![0x0a, 0x01, 0xff, 0x12, 0x01, b'v']);
        for bytes in &cases {
            let (mut fast, mut slow) = (Label::default(), Label::default());
            let a = super::label(bytes, 7, &mut fast).map_err(|e| e.to_string());
            let b = label_fields(bytes, 7, &mut slow).map_err(|e| e.to_string());
            assert_eq!(a, b, "{bytes:?}");
            if a.is_ok() {
                assert_eq!(fast, slow, "{bytes:?}");
            }
        }
    }
}
