//! Prometheus remote write 1.0: protobuf `WriteRequest` in one raw snappy
//! block.
//!
//! Encoding is the hot path of every remote-write destination, so
//! [`RemoteWriteEncoder`] writes the protobuf straight from borrowed
//! [`Series`] into a reused buffer, then compresses into the caller's buffer;
//! it never builds the owned [`proto`] message tree. Its output is
//! byte-for-byte what `prost` produces for the same message (a test holds it
//! to that), including proto3's rule that fields equal to their default
//! (empty string, `0.0`, `0`) are left out.
//!
//! The VictoriaMetrics remote-write protocol is the same protobuf in one zstd
//! frame (`Content-Encoding: zstd`, `X-VictoriaMetrics-Remote-Write-Version:
//! 1`); [`Compression`] picks it. A body says which it is by its first bytes
//! (a zstd frame opens with its magic number, which a valid snappy block
//! cannot), so decoding accepts both whatever the header said, as
//! VictoriaMetrics does.
//!
//! Decoding (the receiver) is written by hand too (`remote_write_decode`),
//! checks the decompressed size announced in the snappy header before
//! allocating, and rejects the framed snappy format by name, the most common
//! sender mistake. `prost` is only the tests' oracle: the [`proto`] structs
//! exist in test builds.

use super::CodecError;
use crate::model::{Label, Labels, Sample, Series, WireForm};

/// `Content-Encoding` a remote-write sender must set.
pub const CONTENT_ENCODING: &str = "snappy";
/// `Content-Type` a remote-write sender must set.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Name of the header carrying the protocol version.
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
/// Remote write 1.0 announces itself as version 0.1.0.
pub const VERSION: &str = "0.1.0";
/// `Content-Encoding` of the VictoriaMetrics remote-write protocol.
pub const VM_CONTENT_ENCODING: &str = "zstd";
/// Header announcing the VictoriaMetrics remote-write protocol.
pub const VM_VERSION_HEADER: &str = "X-VictoriaMetrics-Remote-Write-Version";
/// The VictoriaMetrics protocol version vmagent announces.
pub const VM_VERSION: &str = "1";
/// zstd level for VictoriaMetrics bodies: on remote-write bodies level 1
/// compresses as well as vmagent's default 3 (within 1%) and faster.
pub const ZSTD_LEVEL: i32 = 1;
/// The four bytes every zstd frame starts with.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a remote-write body is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Prometheus remote write 1.0: one raw snappy block.
    #[default]
    Snappy,
    /// The VictoriaMetrics protocol: one zstd frame.
    Zstd,
}

impl Compression {
    /// Which compression `body` uses, from its first bytes.
    pub fn of(body: &[u8]) -> Compression {
        if body.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::Snappy
        }
    }

    /// The headers a request with a body so compressed carries (besides
    /// `User-Agent`), as vmagent sends them.
    pub fn headers(self) -> [(&'static str, &'static str); 3] {
        match self {
            Compression::Snappy => HEADERS,
            Compression::Zstd => [
                ("Content-Encoding", VM_CONTENT_ENCODING),
                ("Content-Type", CONTENT_TYPE),
                (VM_VERSION_HEADER, VM_VERSION),
            ],
        }
    }
}

/// `User-Agent` spillway sends, so receivers' logs name the sender.
pub const USER_AGENT: &str = concat!("spillway/", env!("CARGO_PKG_VERSION"));
/// Every header a remote-write request carries besides `User-Agent`.
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", CONTENT_ENCODING),
    ("Content-Type", CONTENT_TYPE),
    (VERSION_HEADER, VERSION),
];

/// Largest decompressed body [`decode_write_request`] accepts. A snappy block
/// announces its decoded length up front, so a small hostile body cannot make
/// the receiver allocate gigabytes.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// The stream identifier chunk that opens every framed-snappy stream.
const FRAMED_SNAPPY_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// The remote write 1.0 messages (`prompb`), written by hand for `prost`
/// because the build has no `protoc`. Field numbers follow
/// `prometheus/prompb/remote.proto` and `types.proto`; fields spillway does not
/// use (exemplars, native histograms) are skipped on decode like any unknown
/// field. Test builds only: `prost` is a dev-dependency.
#[cfg(test)]
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct MetricMetadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        GaugeHistogram = 4,
        Summary = 5,
        Info = 6,
        StateSet = 7,
    }
}

// Protobuf keys, `(field_number << 3) | wire_type`, for the fields we write.
const KEY_TIMESERIES: u8 = 1 << 3 | 2; // WriteRequest.timeseries, length-delimited
const KEY_LABEL: u8 = 1 << 3 | 2; // TimeSeries.labels
const KEY_SAMPLE: u8 = 2 << 3 | 2; // TimeSeries.samples
const KEY_NAME: u8 = 1 << 3 | 2; // Label.name
const KEY_VALUE: u8 = 2 << 3 | 2; // Label.value
const KEY_SAMPLE_VALUE: u8 = 1 << 3 | 1; // Sample.value, 64-bit
const KEY_SAMPLE_TIMESTAMP: u8 = 2 << 3; // Sample.timestamp, varint

/// Encodes batches into remote-write bodies, reusing its buffers and snappy
/// state across calls. Keep one per destination worker.
pub struct RemoteWriteEncoder {
    proto: Vec<u8>,
    /// Snappy's output before it is copied out, kept at its largest size
    /// so that no block pays for zeroing it.
    scratch: Vec<u8>,
    snappy: snap::raw::Encoder,
    compression: Compression,
    /// Made at the first zstd body: a zstd context holds ~1 MiB.
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Default for RemoteWriteEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteWriteEncoder {
    pub fn new() -> Self {
        RemoteWriteEncoder {
            proto: Vec::new(),
            scratch: Vec::new(),
            snappy: snap::raw::Encoder::new(),
            compression: Compression::Snappy,
            zstd: None,
        }
    }

    /// Bodies finished from now on are compressed so (snappy by default).
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    fn compress(&mut self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self.compression {
            Compression::Snappy => {
                let n = compress_into_prefix(&mut self.snappy, &self.proto, &mut self.scratch)?;
                out.clear();
                out.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Compression::Zstd => compress_zstd(&mut self.zstd, &self.proto, out),
        }
    }

    /// Replaces `out` with the snappy-compressed `WriteRequest` for `series`.
    pub fn encode(&mut self, series: &[Series], out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.proto.clear();
        for s in series {
            put_timeseries(&mut self.proto, &s.labels, &s.samples);
        }
        self.compress(out)
    }

    /// Appends one series to the request being assembled, for callers that
    /// build a request series by series (a destination cutting blocks as it
    /// relabels); [`RemoteWriteEncoder::finish`] compresses it.
    pub fn add(&mut self, labels: &Labels, samples: &[Sample]) {
        put_timeseries(&mut self.proto, labels, samples);
    }

    /// Appends one series already encoded: `body` is the body of its
    /// `TimeSeries` message (as [`WireForm::series_bytes`] gives it).
    pub fn add_encoded(&mut self, body: &[u8]) {
        self.proto.reserve(nested_len(body.len()));
        self.proto.push(KEY_TIMESERIES);
        put_varint(&mut self.proto, body.len() as u64);
        self.proto.extend_from_slice(body);
    }

    /// Bytes of uncompressed protobuf added since the last `finish`.
    pub fn pending_len(&self) -> usize {
        self.proto.len()
    }

    /// Replaces `out` with the compressed request of everything added since
    /// the last `finish` (or `encode`), and starts a new one.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let result = self.compress(out);
        self.proto.clear();
        result
    }

    /// Replaces `out` with the uncompressed protobuf, for tests and debugging.
    pub fn encode_uncompressed(&mut self, series: &[Series], out: &mut Vec<u8>) {
        out.clear();
        for s in series {
            put_timeseries(out, &s.labels, &s.samples);
        }
    }

    /// Encodes `series` as consecutive bodies of at most `max_samples` samples
    /// each (a receiver's per-request limit), calling `emit` with each body in
    /// order. A long series is cut across bodies, its labels repeated; series
    /// without samples ride along in whichever body is open. An empty batch
    /// emits nothing. `max_samples` of 0 is taken as 1.
    pub fn encode_split(
        &mut self,
        series: &[Series],
        max_samples: usize,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), CodecError> {
        let max_samples = max_samples.max(1);
        self.proto.clear();
        let mut in_body = 0usize;
        let mut open = false;
        for s in series {
            let mut rest = s.samples.as_slice();
            loop {
                let take = rest.len().min(max_samples - in_body);
                put_timeseries(&mut self.proto, &s.labels, &rest[..take]);
                open = true;
                in_body += take;
                rest = &rest[take..];
                if in_body == max_samples {
                    let n = compress_into_prefix(&mut self.snappy, &self.proto, &mut self.scratch)?;
                    emit(&self.scratch[..n]);
                    self.proto.clear();
                    in_body = 0;
                    open = false;
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        if open {
            let n = compress_into_prefix(&mut self.snappy, &self.proto, &mut self.scratch)?;
            emit(&self.scratch[..n]);
        }
        Ok(())
    }
}

/// Replaces `buf` with the remote-write body for `series`. Allocates a fresh
/// encoder; hot paths keep a [`RemoteWriteEncoder`] instead.
pub fn encode_write_request(series: &[Series], buf: &mut Vec<u8>) -> Result<(), CodecError> {
    RemoteWriteEncoder::new().encode(series, buf)
}

/// Bodies of at most `max_samples` samples each; see
/// [`RemoteWriteEncoder::encode_split`].
pub fn split_for_limit(series: &[Series], max_samples: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut bodies = Vec::new();
    RemoteWriteEncoder::new().encode_split(series, max_samples, |b| bodies.push(b.to_vec()))?;
    Ok(bodies)
}

/// One body holding the series of `bodies` (snappy or zstd, each as its
/// magic says) in order, compressed as `to`: protobuf messages concatenate
/// into a valid message, `timeseries` being a repeated field. Refuses a body
/// that decompresses past `max_decoded_bytes`, and a merged message past
/// four times that.
pub fn merge_bodies(
    bodies: &[&[u8]],
    to: Compression,
    max_decoded_bytes: usize,
) -> Result<Vec<u8>, CodecError> {
    if to == Compression::Snappy
        && bodies.iter().all(|b| {
            Compression::of(b) == Compression::Snappy && !b.starts_with(FRAMED_SNAPPY_MAGIC)
        })
    {
        return concat_snappy(bodies, max_decoded_bytes.saturating_mul(4));
    }
    let mut proto = Vec::new();
    let mut one = Vec::new();
    for b in bodies {
        decompress_into(b, max_decoded_bytes, &mut one)?;
        if proto.len() + one.len() > max_decoded_bytes.saturating_mul(4) {
            return Err(CodecError::BodyTooLarge {
                decoded_bytes: proto.len() + one.len(),
                limit_bytes: max_decoded_bytes.saturating_mul(4),
            });
        }
        proto.extend_from_slice(&one);
    }
    let mut out = Vec::new();
    match to {
        Compression::Snappy => compress(&mut snap::raw::Encoder::new(), &proto, &mut out)?,
        Compression::Zstd => compress_zstd(&mut None, &proto, &mut out)?,
    }
    Ok(out)
}

/// Raw snappy blocks joined without decompressing them: a block is its
/// uncompressed length (a varint) and then elements whose back-references
/// never reach before the block's own start. So one header with the summed
/// length followed by each block's elements decodes to the concatenated
/// messages, and the sender saves a decompression and a compression of
/// every byte it merges.
fn concat_snappy(bodies: &[&[u8]], max_total: usize) -> Result<Vec<u8>, CodecError> {
    let mut total = 0usize;
    let mut elements = Vec::with_capacity(bodies.len());
    for b in bodies {
        let (len, header) = snappy_header(b)?;
        total = total.saturating_add(len);
        elements.push(&b[header..]);
    }
    // Snappy lengths are 32-bit; the merged one must be too.
    if total > max_total || total > u32::MAX as usize {
        return Err(CodecError::BodyTooLarge {
            decoded_bytes: total,
            limit_bytes: max_total.min(u32::MAX as usize),
        });
    }
    let size: usize = elements.iter().map(|e| e.len()).sum();
    let mut out = Vec::with_capacity(size + 10);
    put_varint(&mut out, total as u64);
    for e in elements {
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// A raw snappy block's uncompressed length and the bytes its header takes.
fn snappy_header(block: &[u8]) -> Result<(usize, usize), CodecError> {
    let mut r = super::remote_write_decode::Reader::new(block, 0);
    let len = r
        .varint()
        .ok()
        .and_then(|len| u32::try_from(len).ok())
        .ok_or_else(|| CodecError::Snappy("damaged block header".into()))?;
    Ok((len as usize, r.at()))
}

/// Decodes a remote-write body into series (labels sorted by the model,
/// metadata ignored), refusing bodies that decompress past
/// [`MAX_DECODED_BYTES`].
pub fn decode_write_request(body: &[u8]) -> Result<Vec<Series>, CodecError> {
    decode_write_request_with_limit(body, MAX_DECODED_BYTES)
}

/// [`decode_write_request`] with a caller-chosen decompressed-size limit.
pub fn decode_write_request_with_limit(
    body: &[u8],
    max_decoded_bytes: usize,
) -> Result<Vec<Series>, CodecError> {
    let raw = decompress(body, max_decoded_bytes)?;
    super::remote_write_decode::decode_series(&raw)
}

/// [`decode_write_request_with_limit`] into `out`, reusing the series,
/// label strings and sample vectors it holds (its content is replaced), and
/// `wire` for the decompressed message and where each series is in it (see
/// [`WireForm`]). A receiver that keeps both decodes request after request
/// without allocating. On error `out` and `wire` hold an unspecified part
/// of the request.
pub fn decode_write_request_into(
    body: &[u8],
    max_decoded_bytes: usize,
    out: &mut Vec<Series>,
    wire: &mut WireForm,
) -> Result<(), CodecError> {
    decompress_into(body, max_decoded_bytes, &mut wire.message)?;
    super::remote_write_decode::decode_series_into(&wire.message, out, Some(&mut wire.spans))
}

/// Undoes the snappy block or zstd frame, refusing the framed snappy format
/// and outputs past `max_decoded_bytes` before allocating them.
fn decompress(body: &[u8], max_decoded_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let mut raw = Vec::new();
    decompress_into(body, max_decoded_bytes, &mut raw)?;
    Ok(raw)
}

fn decompress_into(
    body: &[u8],
    max_decoded_bytes: usize,
    raw: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if Compression::of(body) == Compression::Zstd {
        return decompress_zstd(body, max_decoded_bytes, raw);
    }
    if body.starts_with(FRAMED_SNAPPY_MAGIC) {
        return Err(CodecError::FramedSnappy);
    }
    let decoded_bytes =
        snap::raw::decompress_len(body).map_err(|e| CodecError::Snappy(e.to_string()))?;
    if decoded_bytes > max_decoded_bytes {
        return Err(CodecError::BodyTooLarge {
            decoded_bytes,
            limit_bytes: max_decoded_bytes,
        });
    }
    // Only what the buffer never held is zeroed: snappy writes every byte
    // of a valid block, and a reused buffer is about the right size.
    if raw.len() < decoded_bytes {
        raw.resize(decoded_bytes, 0);
    } else {
        raw.truncate(decoded_bytes);
    }
    let n = snap::raw::Decoder::new()
        .decompress(body, raw)
        .map_err(|e| CodecError::Snappy(e.to_string()))?;
    raw.truncate(n);
    Ok(())
}

/// Decompresses and decodes into the raw protobuf message, metadata included.
#[cfg(test)]
pub fn decode_proto(
    body: &[u8],
    max_decoded_bytes: usize,
) -> Result<proto::WriteRequest, CodecError> {
    use prost::Message;
    let raw = decompress(body, max_decoded_bytes)?;
    proto::WriteRequest::decode(raw.as_slice()).map_err(|e| CodecError::Protobuf(e.to_string()))
}

fn compress(
    snappy: &mut snap::raw::Encoder,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let n = compress_into_prefix(snappy, input, out)?;
    out.truncate(n);
    Ok(())
}

/// Compresses `input` into the start of `buf` and returns the compressed
/// length. `buf` grows to snappy's bound when shorter (only the growth is
/// zeroed: snappy overwrites what it uses) and is never shortened, so a
/// buffer kept for this costs no zeroing after the first block.
fn compress_into_prefix(
    snappy: &mut snap::raw::Encoder,
    input: &[u8],
    buf: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    // max_compress_len is 0 past snappy's 4 GiB block limit; compress then
    // fails and the caller learns the batch was too big.
    let bound = snap::raw::max_compress_len(input.len());
    if buf.len() < bound {
        buf.resize(bound, 0);
    }
    snappy
        .compress(input, &mut buf[..bound])
        .map_err(|e| CodecError::Compress {
            size: input.len(),
            reason: e.to_string(),
        })
}

/// Replaces `out` with `input` in one zstd frame (recording its size, so a
/// receiver can check it before allocating).
fn compress_zstd(
    ctx: &mut Option<zstd::bulk::Compressor<'static>>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let err = |e: std::io::Error| CodecError::Compress {
        size: input.len(),
        reason: format!("zstd: {e}"),
    };
    let ctx = match ctx {
        Some(c) => c,
        None => ctx.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(err)?),
    };
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(input.len()));
    ctx.compress_to_buffer(input, out).map_err(err)?;
    Ok(())
}

/// Undoes one zstd frame into `raw`. A frame that records its size is
/// checked against `max_decoded_bytes` before allocating; one that does not
/// is read as a stream and cut at the limit.
fn decompress_zstd(
    body: &[u8],
    max_decoded_bytes: usize,
    raw: &mut Vec<u8>,
) -> Result<(), CodecError> {
    use std::io::Read;
    let bad = |e: String| CodecError::Zstd(e);
    let too_large = |decoded_bytes: usize| CodecError::BodyTooLarge {
        decoded_bytes,
        limit_bytes: max_decoded_bytes,
    };
    raw.clear();
    match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > max_decoded_bytes {
                return Err(too_large(n));
            }
            raw.reserve_exact(n);
            zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(body, raw))
                .map_err(|e| bad(e.to_string()))?;
        }
        Ok(None) => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| bad(e.to_string()))?;
            decoder
                .take(max_decoded_bytes as u64 + 1)
                .read_to_end(raw)
                .map_err(|e| bad(e.to_string()))?;
            if raw.len() > max_decoded_bytes {
                return Err(too_large(raw.len()));
            }
        }
        Err(_) => return Err(bad("the frame header is damaged".into())),
    }
    Ok(())
}

/// Writes one `WriteRequest.timeseries` entry. Lengths are computed first
/// because protobuf prefixes each nested message with its length as a
/// minimal varint.
fn put_timeseries(buf: &mut Vec<u8>, labels: &Labels, samples: &[Sample]) {
    let labels_len: usize = labels.iter().map(|l| nested_len(label_len(l))).sum();
    let samples_len: usize = samples.iter().map(|s| nested_len(sample_len(s))).sum();
    buf.reserve(nested_len(labels_len + samples_len));
    buf.push(KEY_TIMESERIES);
    put_varint(buf, (labels_len + samples_len) as u64);
    for l in labels {
        buf.push(KEY_LABEL);
        put_varint(buf, label_len(l) as u64);
        put_string(buf, KEY_NAME, &l.name);
        put_string(buf, KEY_VALUE, &l.value);
    }
    for s in samples {
        buf.push(KEY_SAMPLE);
        put_varint(buf, sample_len(s) as u64);
        // `!= 0.0` rather than a bit test: proto3 (prost, gogo) omits -0.0 too.
        if s.value != 0.0 {
            buf.push(KEY_SAMPLE_VALUE);
            buf.extend_from_slice(&s.value.to_bits().to_le_bytes());
        }
        if s.timestamp_ms != 0 {
            buf.push(KEY_SAMPLE_TIMESTAMP);
            // int64 is a two's-complement varint: negative times take 10 bytes.
            put_varint(buf, s.timestamp_ms as u64);
        }
    }
}

fn label_len(l: &Label) -> usize {
    string_len(&l.name) + string_len(&l.value)
}

fn sample_len(s: &Sample) -> usize {
    let value = if s.value != 0.0 { 9 } else { 0 };
    let ts = if s.timestamp_ms != 0 {
        1 + varint_len(s.timestamp_ms as u64)
    } else {
        0
    };
    value + ts
}

/// Key + length + body of a proto3 string field, nothing when empty.
fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        nested_len(s.len())
    }
}

/// Key + length prefix + body of a length-delimited field (keys here are 1 byte).
fn nested_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

pub(super) fn put_string(buf: &mut Vec<u8>, key: u8, s: &str) {
    if !s.is_empty() {
        buf.push(key);
        put_varint(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }
}

fn varint_len(v: u64) -> usize {
    // Each byte carries 7 bits; `| 1` makes zero take one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads what [`put_varint`] writes (protobuf's varint, Go's
/// `binary.Uvarint`): the value and its length in bytes, or `None` when
/// `buf` ends inside it or it runs past 64 bits.
#[inline]
pub(crate) fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    // Keys, lengths and most deltas fit in one byte.
    match buf.first() {
        Some(&b) if b < 0x80 => return Some((u64::from(b), 1)),
        None => return None,
        _ => {}
    }
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;
    use prost::Message;

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
        Series::new(
            Labels::from_pairs(pairs.iter().copied()),
            samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
        )
    }

    /// Builds a raw snappy block holding `data` as literals only, straight
    /// from the format description, so decode tests do not depend on our
    /// compressor.
    fn snappy_literal_block(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, data.len() as u64);
        for chunk in data.chunks(60) {
            out.push(((chunk.len() - 1) as u8) << 2); // literal tag, length-1 in the high 6 bits
            out.extend_from_slice(chunk);
        }
        out
    }

    /// `up{job="a"}` with samples (1000, 1.0) and (2000, stale), as protobuf
    /// bytes spelled out from remote.proto / types.proto.
    const GOLDEN_PROTO: &[u8] = &[
        0x0a, 0x36, // WriteRequest.timeseries (1, LEN), 54 bytes
        0x0a, 0x0e, // TimeSeries.labels (1, LEN), 14 bytes
        0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', // Label.name (1)
        0x12, 0x02, b'u', b'p', // Label.value (2)
        0x0a, 0x08, // TimeSeries.labels, 8 bytes
        0x0a, 0x03, b'j', b'o', b'b', // name
        0x12, 0x01, b'a', // value
        0x12, 0x0c, // TimeSeries.samples (2, LEN), 12 bytes
        0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // Sample.value (1, I64) = 1.0
        0x10, 0xe8, 0x07, // Sample.timestamp (2, VARINT) = 1000
        0x12, 0x0c, // TimeSeries.samples, 12 bytes
        0x09, 0x02, 0, 0, 0, 0, 0, 0xf0, 0x7f, // value = stale NaN 0x7ff0000000000002
        0x10, 0xd0, 0x0f, // timestamp = 2000
    ];

    fn golden_series() -> Series {
        Series::new(
            Labels::from_pairs([("__name__", "up"), ("job", "a")]),
            vec![Sample::new(1000, 1.0), Sample::stale(2000)],
        )
    }

    #[test]
    fn encoder_writes_the_golden_bytes() {
        let mut out = Vec::new();
        RemoteWriteEncoder::new().encode_uncompressed(&[golden_series()], &mut out);
        assert_eq!(out, GOLDEN_PROTO);
    }

    #[test]
    fn decodes_hand_built_body_with_metadata() {
        let mut proto = GOLDEN_PROTO.to_vec();
        // WriteRequest.metadata (3, LEN): type GAUGE (1, VARINT 2), family "up" (2).
        proto.extend_from_slice(&[0x1a, 0x06, 0x08, 0x02, 0x12, 0x02, b'u', b'p']);
        let body = snappy_literal_block(&proto);
        let got = decode_write_request(&body).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, golden_series().labels);
        assert_eq!(got[0].samples[0], Sample::new(1000, 1.0));
        assert_eq!(got[0].samples[1].timestamp_ms, 2000);
        assert_eq!(got[0].samples[1].value.to_bits(), STALE_NAN_BITS);

        let raw = decode_proto(&body, MAX_DECODED_BYTES).unwrap();
        assert_eq!(raw.metadata.len(), 1);
        assert_eq!(raw.metadata[0].r#type(), proto::MetricType::Gauge);
        assert_eq!(raw.metadata[0].metric_family_name, "up");
    }

    fn tricky_batch() -> Vec<Series> {
        vec![
            series(
                &[("__name__", "m"), ("q", "a\"b\\c\nd"), ("u", "ünï €")],
                &[
                    (0, 0.0),
                    (-1, -0.0),
                    (1, f64::NAN),
                    (2, f64::INFINITY),
                    (3, f64::NEG_INFINITY),
                    (4, f64::MIN_POSITIVE),
                    (i64::MAX, f64::MAX),
                    (i64::MIN, -1e-300),
                ],
            ),
            series(&[("__name__", "empty")], &[]),
            Series::new(
                Labels::from_pairs([("__name__", "s")]),
                vec![Sample::stale(1_700_000_000_000)],
            ),
            series(&[("x", &"v".repeat(300))], &[(5, 0.1)]),
        ]
    }

    fn to_proto(batch: &[Series]) -> proto::WriteRequest {
        proto::WriteRequest {
            timeseries: batch
                .iter()
                .map(|s| proto::TimeSeries {
                    labels: s
                        .labels
                        .iter()
                        .map(|l| proto::Label {
                            name: l.name.clone(),
                            value: l.value.clone(),
                        })
                        .collect(),
                    samples: s
                        .samples
                        .iter()
                        .map(|x| proto::Sample {
                            value: x.value,
                            timestamp: x.timestamp_ms,
                        })
                        .collect(),
                })
                .collect(),
            metadata: vec![],
        }
    }

    #[test]
    fn hand_encoding_matches_prost() {
        let batch = tricky_batch();
        let mut ours = Vec::new();
        RemoteWriteEncoder::new().encode_uncompressed(&batch, &mut ours);
        assert_eq!(ours, to_proto(&batch).encode_to_vec());
    }

    fn assert_same(a: &[Series], b: &[Series]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.labels, y.labels);
            assert_eq!(x.samples.len(), y.samples.len(), "{}", x.labels);
            for (p, q) in x.samples.iter().zip(&y.samples) {
                assert_eq!(p.timestamp_ms, q.timestamp_ms);
                // -0.0 is sent as an absent field, as Prometheus itself does.
                let expect = if p.value == 0.0 { 0.0f64 } else { p.value };
                assert_eq!(q.value.to_bits(), expect.to_bits(), "{}", x.labels);
            }
        }
    }

    #[test]
    fn round_trip_keeps_special_values_and_odd_labels() {
        let batch = tricky_batch();
        let mut body = Vec::new();
        let mut enc = RemoteWriteEncoder::new();
        enc.encode(&batch, &mut body).unwrap();
        assert_same(&batch, &decode_write_request(&body).unwrap());
        // A reused encoder gives the same bytes.
        let mut again = Vec::new();
        enc.encode(&batch, &mut again).unwrap();
        assert_eq!(body, again);
        let mut fresh = Vec::new();
        encode_write_request(&batch, &mut fresh).unwrap();
        assert_eq!(body, fresh);
    }

    #[test]
    fn empty_label_values_are_dropped_on_decode() {
        let req = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![
                    proto::Label {
                        name: "z".into(),
                        value: "1".into(),
                    },
                    proto::Label {
                        name: "empty".into(),
                        value: String::new(),
                    },
                    proto::Label {
                        name: "__name__".into(),
                        value: "m".into(),
                    },
                ],
                samples: vec![proto::Sample {
                    value: 2.0,
                    timestamp: 3,
                }],
            }],
            metadata: vec![],
        };
        let body = snappy_literal_block(&req.encode_to_vec());
        let got = decode_write_request(&body).unwrap();
        let names: Vec<_> = got[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "z"]);
    }

    #[test]
    fn empty_batch_is_a_valid_empty_request() {
        let mut body = Vec::new();
        encode_write_request(&[], &mut body).unwrap();
        assert!(decode_write_request(&body).unwrap().is_empty());
    }

    #[test]
    fn rejects_framed_snappy() {
        let proto = to_proto(&[golden_series()]).encode_to_vec();
        let mut framed = Vec::new();
        {
            use std::io::Write;
            let mut w = snap::write::FrameEncoder::new(&mut framed);
            w.write_all(&proto).unwrap();
        }
        let err = decode_write_request(&framed).unwrap_err();
        assert!(matches!(err, CodecError::FramedSnappy), "{err}");
        assert!(err.to_string().contains("raw snappy block"), "{err}");
    }

    #[test]
    fn rejects_oversize_body_before_allocating() {
        // A 7-byte body that claims 100 MiB of output.
        let mut body = Vec::new();
        put_varint(&mut body, 100 << 20);
        body.extend_from_slice(&[0x00, b'x']);
        let err = decode_write_request(&body).unwrap_err();
        match &err {
            CodecError::BodyTooLarge {
                decoded_bytes,
                limit_bytes,
            } => {
                assert_eq!(*decoded_bytes, 100 << 20);
                assert_eq!(*limit_bytes, MAX_DECODED_BYTES);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("limit"), "{err}");

        let mut small = Vec::new();
        encode_write_request(&tricky_batch(), &mut small).unwrap();
        assert!(matches!(
            decode_write_request_with_limit(&small, 10),
            Err(CodecError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            decode_write_request(b""),
            Err(CodecError::Snappy(_))
        ));
        // Valid snappy, invalid protobuf (field 1 LEN claiming 100 bytes).
        let body = snappy_literal_block(&[0x0a, 100, 1, 2]);
        let err = decode_write_request(&body).unwrap_err();
        assert!(matches!(err, CodecError::Protobuf(_)), "{err}");
    }

    #[test]
    fn split_respects_limit_and_keeps_every_sample() {
        let long: Vec<(i64, f64)> = (0..25).map(|i| (i, i as f64)).collect();
        let batch = vec![
            series(&[("__name__", "a")], &long),
            series(&[("__name__", "b")], &[]),
            series(&[("__name__", "c")], &long[..7]),
        ];
        let bodies = split_for_limit(&batch, 10).unwrap();
        let decoded: Vec<Vec<Series>> = bodies
            .iter()
            .map(|b| decode_write_request(b).unwrap())
            .collect();
        let counts: Vec<usize> = decoded
            .iter()
            .map(|d| d.iter().map(|s| s.samples.len()).sum())
            .collect();
        assert_eq!(counts, [10, 10, 10, 2]);
        // Reassemble per series in order: nothing lost, nothing duplicated.
        let mut merged: Vec<Series> = Vec::new();
        for s in decoded.into_iter().flatten() {
            match merged.last_mut() {
                Some(last) if last.labels == s.labels => last.samples.extend(s.samples),
                _ => merged.push(s),
            }
        }
        assert_same(&batch, &merged);

        assert!(split_for_limit(&[], 10).unwrap().is_empty());
        assert_eq!(split_for_limit(&batch, 0).unwrap().len(), 32);
        assert_eq!(split_for_limit(&batch, 1000).unwrap().len(), 1);
    }

    #[test]
    fn snappy_blocks_merge_by_concatenation() {
        // Repetitive series (back-references inside each block) and one
        // block past snappy's 64 KiB internal window.
        let batch = |name: &str, n: usize| -> Vec<Series> {
            (0..n)
                .map(|i| {
                    series(
                        &[
                            ("__name__", name),
                            ("instance", &format!("host-{i}:9100")),
                            ("job", "node"),
                        ],
                        &[(i as i64, i as f64 * 0.5)],
                    )
                })
                .collect()
        };
        let parts = [batch("a", 3), batch("b", 5000), batch("c", 1)];
        let bodies: Vec<Vec<u8>> = parts
            .iter()
            .map(|p| {
                let mut b = Vec::new();
                encode_write_request(p, &mut b).unwrap();
                b
            })
            .collect();
        assert!(snap::raw::decompress_len(&bodies[1]).unwrap() > 64 << 10);
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let merged = merge_bodies(&refs, Compression::Snappy, MAX_DECODED_BYTES).unwrap();
        let want: Vec<Series> = parts.concat();
        assert_eq!(decode_write_request(&merged).unwrap(), want);
        // No recompression: the merged body is the blocks' elements as they were.
        let elements: usize = bodies
            .iter()
            .map(|b| b.len() - snappy_header(b).unwrap().1)
            .sum();
        assert_eq!(merged.len(), elements + snappy_header(&merged).unwrap().1);
        // The merged size still counts against the limit.
        let small_limit = snap::raw::decompress_len(&bodies[1]).unwrap();
        let e = merge_bodies(&refs, Compression::Snappy, small_limit / 4).unwrap_err();
        assert!(matches!(e, CodecError::BodyTooLarge { .. }), "{e}");
        assert!(snappy_header(&[0x80, 0x80]).is_err());
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(b.len(), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }

    /// The one reader of varints (protobuf and VictoriaMetrics' native
    /// blocks) reads back what the writer wrote, and refuses what Go's
    /// `binary.Uvarint` refuses.
    #[test]
    fn varints_read_back_and_overflow_is_refused() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b.push(0x7f);
            assert_eq!(read_varint(&b), Some((v, varint_len(v))), "{v}");
        }
        assert_eq!(read_varint(&[]), None);
        assert_eq!(read_varint(&[0x80, 0x80]), None);
        let mut past_64_bits = vec![0xff; 9];
        past_64_bits.push(0x02);
        assert_eq!(read_varint(&past_64_bits), None);
        assert_eq!(read_varint(&[0xff; 11]), None);
    }

    #[test]
    fn header_constants() {
        assert!(USER_AGENT.starts_with("spillway/"));
        assert_eq!(HEADERS[2], ("X-Prometheus-Remote-Write-Version", "0.1.0"));
    }
}
