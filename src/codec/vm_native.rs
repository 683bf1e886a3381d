//! VictoriaMetrics' native export format, what `/api/v1/export/native`
//! answers and vmctl's `vm-native` mode reads: the storage's own compressed
//! blocks, sent as they are. The server spends almost nothing on it (0.07
//! CPU-s for 28.8 M samples where the JSON export spends 5 s printing
//! floats), so a client that decodes the blocks itself gets the same samples
//! for a fraction of the server's work.
//!
//! Layout (all integers big-endian unless "varint"):
//! - 16 bytes: the request's time range, `start` and `end` in ms (`i64`).
//! - Then per block: `u32` length + the series name, `u32` length + the
//!   block.
//! - Series name (`MetricName.Marshal` of a single node; a cluster vmselect
//!   writes the same, without the tenant): the metric name, then
//!   key, value, key, value…, each ended by byte 1, with bytes 0, 1 and 2
//!   inside escaped as `0 '0'`, `0 '1'`, `0 '2'`. Tags are sorted by key.
//! - Block (`Block.MarshalPortable`): zigzag varints `min_timestamp`,
//!   (since 1.82: `max_timestamp`), `first_value`, a varint row count, a
//!   zigzag varint decimal `scale`, one byte each for how timestamps and
//!   values are encoded, (since 1.82: one byte of precision bits), then the
//!   timestamp and value data, each as a varint length + bytes.
//! - Timestamps and values are `i64` arrays, encoded as a constant, a
//!   constant step, or varint (zigzag) deltas or deltas of deltas, the last
//!   two optionally zstd-compressed. A value is `v * 10^scale`, computed as
//!   Go computes it (the same float the server's own JSON export prints);
//!   three reserved integers stand for +Inf, -Inf and the staleness marker.
//!
//! The block layout changed in 1.82 with no version field, so the layout is
//! recognised from the first block: exactly one of the two reads the whole
//! frame with known encodings (both reading it is ruled out by decoding).
//!
//! Blocks are not cut to the requested range (the reader does that) and one
//! series may come as several blocks, not necessarily adjacent: each block
//! is read on its own, as the server's `reduce_mem_usage=1` JSON export
//! prints it.
//!
//! Hostile input: every length is checked against what arrived, a frame is
//! at most [`MAX_BLOCK_BYTES`], a block at most [`MAX_BLOCK_ROWS`] rows (the
//! server writes at most 8,192), and zstd output is capped by what the row
//! count allows.

use super::remote_write::read_varint;
use super::write_vm_json_decimal_parts;
use crate::model::{labels::METRIC_NAME, Label, Labels, Sample};

/// Longest frame (series name or block) accepted.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;
/// Most rows one block may claim; VictoriaMetrics writes at most 8,192.
pub const MAX_BLOCK_ROWS: usize = 1 << 20;
const HEADER_BYTES: usize = 16;

/// Why a native answer cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid VictoriaMetrics native export (block {block}): {reason}")]
pub struct NativeError {
    /// 1-based: the block being read.
    pub block: u64,
    pub reason: String,
}

/// The two block layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// VictoriaMetrics before 1.82 (Debian's 1.79): no `max_timestamp`, no
    /// precision bits.
    Before182,
    /// 1.82 and later.
    Since182,
}

/// Reads a native export as it arrives; [`NativeReader::feed`] calls back
/// once per block with the series and its decoded samples.
#[derive(Default)]
pub struct NativeReader {
    pending: Vec<u8>,
    header_seen: bool,
    layout: Option<Layout>,
    blocks: u64,
    block: BlockDecoder,
}

impl NativeReader {
    pub fn new() -> NativeReader {
        NativeReader::default()
    }

    /// The layout seen so far (`None` before the first block).
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    /// Takes the next piece of the body; calls `on_block` for each block it
    /// completes. `on_block` returning `false` stops reading (the rest of
    /// the chunk is left unread).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_block: impl FnMut(Labels, NativeBlock<'_>) -> Result<bool, String>,
    ) -> Result<bool, FeedError> {
        self.pending.extend_from_slice(chunk);
        let mut pos = 0;
        let result = loop {
            match self.next_block(&mut pos) {
                Ok(Some(labels)) => match on_block(labels, self.block.samples()) {
                    Ok(true) => {}
                    Ok(false) => break Ok(false),
                    Err(e) => break Err(FeedError::Sink(e)),
                },
                Ok(None) => break Ok(true),
                Err(e) => break Err(FeedError::Native(e)),
            }
        };
        self.pending.drain(..pos);
        result
    }

    /// Checks that the body ended between blocks.
    pub fn finish(&self) -> Result<(), NativeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(self.error(format!(
            "the answer ended inside a block ({} bytes left over)",
            self.pending.len()
        )))
    }

    fn error(&self, reason: String) -> NativeError {
        NativeError {
            block: self.blocks + 1,
            reason,
        }
    }

    /// Decodes the next whole block of `pending[*pos..]`, if it has arrived.
    fn next_block(&mut self, pos: &mut usize) -> Result<Option<Labels>, NativeError> {
        let rest = &self.pending[*pos..];
        if !self.header_seen {
            if rest.len() < HEADER_BYTES {
                return Ok(None);
            }
            self.header_seen = true;
            *pos += HEADER_BYTES;
            return self.next_block(pos);
        }
        let Some((name, after_name)) = frame(rest).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let Some((block, after_block)) = frame(&rest[after_name..]).map_err(|e| self.error(e))?
        else {
            return Ok(None);
        };
        let labels = decode_metric_name(name).map_err(|e| self.error(e))?;
        let layout = match self.layout {
            Some(layout) => {
                self.block
                    .decode(block, layout)
                    .map_err(|e| self.error(e))?;
                layout
            }
            None => self.block.recognise(block).map_err(|e| self.error(e))?,
        };
        self.layout = Some(layout);
        self.blocks += 1;
        *pos += after_name + after_block;
        Ok(Some(labels))
    }
}

/// One decoded block: `values[i] == decimals[i] * 10^scale` as the server
/// computes it, at `timestamps[i]`.
#[derive(Clone, Copy, Debug)]
pub struct NativeBlock<'a> {
    pub timestamps: &'a [i64],
    pub values: &'a [f64],
    pub decimals: &'a [i64],
    pub scale: i16,
}

impl NativeBlock<'_> {
    /// The line VictoriaMetrics' JSON export prints for these samples.
    pub fn write_json_line(&self, labels: &Labels, out: &mut Vec<u8>) {
        write_vm_json_decimal_parts(
            labels,
            self.timestamps,
            self.values,
            self.decimals,
            self.scale,
            out,
        );
    }

    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        (self.timestamps.iter().zip(self.values)).map(|(&t, &v)| Sample::new(t, v))
    }

    /// The samples with `start <= timestamp <= end`, as the server's JSON
    /// export cuts them: one run, since a decoded block is in time order.
    pub fn cut(&self, start: i64, end: i64) -> NativeBlock<'_> {
        let lo = self.timestamps.partition_point(|&t| t < start);
        let hi = self.timestamps.partition_point(|&t| t <= end).max(lo);
        NativeBlock {
            timestamps: &self.timestamps[lo..hi],
            values: &self.values[lo..hi],
            decimals: &self.decimals[lo..hi],
            scale: self.scale,
        }
    }
}

/// Why [`NativeReader::feed`] stopped.
#[derive(Debug)]
pub enum FeedError {
    Native(NativeError),
    /// The callback's error.
    Sink(String),
}

/// `u32` length + bytes: `Some((bytes, bytes consumed))` once all arrived.
fn frame(src: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let Some(len) = src.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > MAX_BLOCK_BYTES {
        return Err(format!(
            "a frame of {len} bytes is over the {MAX_BLOCK_BYTES}-byte limit"
        ));
    }
    Ok(src.get(4..4 + len).map(|b| (b, 4 + len)))
}

pub(crate) const ESCAPE: u8 = 0;
pub(crate) const TAG_END: u8 = 1;
pub(crate) const KV_SEPARATOR: u8 = 2;

/// A single-node `MetricName`: the metric name, then tag keys and values.
pub fn decode_metric_name(mut src: &[u8]) -> Result<Labels, String> {
    let mut fields = Vec::new();
    while !src.is_empty() {
        let end = memchr::memchr(TAG_END, src)
            .ok_or_else(|| "a series name field has no end marker".to_string())?;
        fields.push(unescape(&src[..end])?);
        src = &src[end + 1..];
    }
    let mut fields = fields.into_iter();
    let name = fields
        .next()
        .ok_or_else(|| "an empty series name".to_string())?;
    let mut labels = Vec::with_capacity(fields.len() / 2 + 1);
    if !name.is_empty() {
        labels.push(Label {
            name: METRIC_NAME.to_string(),
            value: name,
        });
    }
    while let Some(key) = fields.next() {
        let value = fields
            .next()
            .ok_or_else(|| format!("tag `{key}` has no value"))?;
        labels.push(Label { name: key, value });
    }
    Ok(Labels::from_vec(labels))
}

fn unescape(field: &[u8]) -> Result<String, String> {
    let bytes = if memchr::memchr(ESCAPE, field).is_none() {
        field.to_vec()
    } else {
        let mut out = Vec::with_capacity(field.len());
        let mut it = field.iter();
        while let Some(&b) = it.next() {
            if b != ESCAPE {
                out.push(b);
                continue;
            }
            out.push(match it.next() {
                Some(b'0') => ESCAPE,
                Some(b'1') => TAG_END,
                Some(b'2') => KV_SEPARATOR,
                Some(&c) => return Err(format!("unknown escape {c:#04x} in a series name")),
                None => return Err("an escape at the end of a series name field".into()),
            });
        }
        out
    };
    String::from_utf8(bytes).map_err(|_| "a series name field is not UTF-8".to_string())
}

/// One block's header, read in one layout.
#[derive(Clone, Copy, Debug)]
struct Header {
    min_timestamp: i64,
    max_timestamp: Option<i64>,
    first_value: i64,
    rows: usize,
    scale: i16,
    timestamps_type: u8,
    values_type: u8,
    precision_bits: u8,
}

/// Decodes blocks into reused buffers.
#[derive(Default)]
struct BlockDecoder {
    timestamps: Vec<i64>,
    values: Vec<f64>,
    ints: Vec<i64>,
    scale: i16,
    unzstd: Unzstd,
}

/// A zstd decompressor kept across blocks (making one is a tenth of the
/// decoding time) with its output buffer.
#[derive(Default)]
struct Unzstd {
    context: Option<zstd::bulk::Decompressor<'static>>,
    out: Vec<u8>,
}

impl Unzstd {
    /// Decompresses `src`, refusing more than `cap` bytes.
    fn run(&mut self, src: &[u8], cap: usize) -> Result<&[u8], String> {
        let context = match &mut self.context {
            Some(c) => c,
            None => self
                .context
                .insert(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?),
        };
        self.out.clear();
        self.out.reserve(cap);
        context
            .decompress_to_buffer(src, &mut self.out)
            .map_err(|e| format!("zstd data that does not decode to {cap} bytes or less: {e}"))?;
        Ok(&self.out)
    }
}

impl BlockDecoder {
    fn samples(&self) -> NativeBlock<'_> {
        NativeBlock {
            timestamps: &self.timestamps,
            values: &self.values,
            decimals: &self.ints,
            scale: self.scale,
        }
    }

    /// Decodes the first block, finding its layout.
    fn recognise(&mut self, block: &[u8]) -> Result<Layout, String> {
        let since = self.decode(block, Layout::Since182);
        if since.is_ok() {
            // A 1.79 block read as the newer layout would have to consume
            // exactly the frame with valid encodings and decode to
            // timestamps inside its own bounds: check the other reading
            // fails too, rather than trust the first that does not.
            let mut other = BlockDecoder::default();
            if other.decode(block, Layout::Before182).is_err() {
                return Ok(Layout::Since182);
            }
            return Err("the first block reads as both the old and the new layout".into());
        }
        match self.decode(block, Layout::Before182) {
            Ok(()) => Ok(Layout::Before182),
            Err(old) => Err(format!(
                "{} (as the layout of 1.82 and later: {})",
                old,
                since.expect_err("checked above")
            )),
        }
    }

    fn decode(&mut self, block: &[u8], layout: Layout) -> Result<(), String> {
        let mut r = Reader(block);
        let header = read_header(&mut r, layout)?;
        let timestamps_data = r.bytes("timestamp data")?;
        let values_data = r.bytes("value data")?;
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the value data", r.0.len()));
        }
        decode_ints(
            &mut self.timestamps,
            timestamps_data,
            header.timestamps_type,
            header.min_timestamp,
            header.rows,
            &mut self.unzstd,
        )
        .map_err(|e| format!("timestamps: {e}"))?;
        check_timestamps(&mut self.timestamps, &header)?;
        decode_ints(
            &mut self.ints,
            values_data,
            header.values_type,
            header.first_value,
            header.rows,
            &mut self.unzstd,
        )
        .map_err(|e| format!("values: {e}"))?;
        decimal_to_floats(&self.ints, header.scale, &mut self.values);
        self.scale = header.scale;
        Ok(())
    }
}

fn read_header(r: &mut Reader<'_>, layout: Layout) -> Result<Header, String> {
    let min_timestamp = r.varint("min timestamp")?;
    let max_timestamp = match layout {
        Layout::Since182 => Some(r.varint("max timestamp")?),
        Layout::Before182 => None,
    };
    let first_value = r.varint("first value")?;
    let rows = r.uvarint("row count")?;
    if rows == 0 || rows > MAX_BLOCK_ROWS as u64 {
        return Err(format!(
            "{rows} rows in a block (1 to {MAX_BLOCK_ROWS} accepted)"
        ));
    }
    let scale = r.varint("scale")?;
    let scale = i16::try_from(scale).map_err(|_| format!("scale {scale} is not an i16"))?;
    let timestamps_type = r.byte("timestamp encoding")?;
    let values_type = r.byte("value encoding")?;
    let precision_bits = match layout {
        Layout::Since182 => r.byte("precision bits")?,
        Layout::Before182 => 64,
    };
    if !(1..=64).contains(&precision_bits) {
        return Err(format!(
            "{precision_bits} precision bits (1 to 64 accepted)"
        ));
    }
    for (what, t) in [("timestamp", timestamps_type), ("value", values_type)] {
        if !(1..=6).contains(&t) {
            return Err(format!("unknown {what} encoding {t}"));
        }
    }
    Ok(Header {
        min_timestamp,
        max_timestamp,
        first_value,
        rows: rows as usize,
        scale,
        timestamps_type,
        values_type,
        precision_bits,
    })
}

/// What the server does after decoding: lossy timestamps are put back in
/// order inside the block's bounds; lossless ones must already be in order
/// (the storage writes blocks sorted; [`NativeBlock::cut`] relies on it)
/// and, where the layout has bounds, inside them.
fn check_timestamps(ts: &mut [i64], h: &Header) -> Result<(), String> {
    if let (Some(max), true) = (h.max_timestamp, h.precision_bits < 64) {
        ensure_non_decreasing(ts, h.min_timestamp, max);
        return Ok(());
    }
    if ts.windows(2).any(|w| w[1] < w[0]) {
        return Err("timestamps out of order".into());
    }
    let (first, last) = (ts[0], ts[ts.len() - 1]);
    let max = h.max_timestamp.unwrap_or(i64::MAX);
    if first < h.min_timestamp || last > max {
        return Err(format!(
            "timestamps {first}..{last} outside the block's bounds {}..{max}",
            h.min_timestamp
        ));
    }
    Ok(())
}

/// `encoding.EnsureNonDecreasingSequence`.
fn ensure_non_decreasing(a: &mut [i64], min: i64, max: i64) {
    let Some(first) = a.first_mut() else { return };
    *first = min;
    let mut prev = min;
    for v in a.iter_mut().skip(1) {
        if *v < prev {
            *v = prev;
        }
        prev = *v;
    }
    let last = a.len() - 1;
    if a[last] != max {
        a[last] = max;
        for v in a[..last].iter_mut().rev() {
            if *v <= max {
                break;
            }
            *v = max;
        }
    }
}

pub(crate) const CONST_TYPE: u8 = 3;
pub(crate) const DELTA_CONST_TYPE: u8 = 2;
const ZSTD_NEAREST_DELTA2: u8 = 1;
const ZSTD_NEAREST_DELTA: u8 = 4;
const NEAREST_DELTA2: u8 = 5;
pub(crate) const NEAREST_DELTA: u8 = 6;

/// `encoding.unmarshalInt64Array`; arithmetic wraps as Go's does.
fn decode_ints(
    dst: &mut Vec<i64>,
    src: &[u8],
    kind: u8,
    first: i64,
    rows: usize,
    unzstd: &mut Unzstd,
) -> Result<(), String> {
    dst.clear();
    match kind {
        CONST_TYPE => {
            if !src.is_empty() {
                return Err(format!("{} bytes after a constant", src.len()));
            }
            dst.resize(rows, first);
        }
        DELTA_CONST_TYPE => {
            let mut r = Reader(src);
            let step = r.varint("step")?;
            if !r.0.is_empty() {
                return Err(format!("{} bytes after a constant step", r.0.len()));
            }
            dst.reserve(rows);
            let mut v = first;
            for _ in 0..rows {
                dst.push(v);
                v = v.wrapping_add(step);
            }
        }
        ZSTD_NEAREST_DELTA | ZSTD_NEAREST_DELTA2 => {
            // Each of rows - 1 varints takes at most 10 bytes.
            let data = unzstd.run(src, rows * 10)?;
            deltas(dst, data, kind == ZSTD_NEAREST_DELTA2, first, rows)?;
        }
        NEAREST_DELTA | NEAREST_DELTA2 => deltas(dst, src, kind == NEAREST_DELTA2, first, rows)?,
        other => return Err(format!("unknown encoding {other}")),
    }
    Ok(())
}

/// Nearest delta (`rows - 1` deltas) or delta of deltas (the first delta,
/// then `rows - 2` changes to it).
fn deltas(
    dst: &mut Vec<i64>,
    src: &[u8],
    of_deltas: bool,
    first: i64,
    rows: usize,
) -> Result<(), String> {
    if of_deltas && rows < 2 {
        return Err("a delta-of-delta encoding of one row".into());
    }
    if src.len() < rows - 1 {
        return Err(format!("{} bytes for {} deltas", src.len(), rows - 1));
    }
    dst.reserve(rows);
    let mut r = Reader(src);
    let mut v = first;
    dst.push(v);
    let mut delta = 0i64;
    for i in 1..rows {
        let d = r.varint("delta")?;
        if of_deltas && i > 1 {
            delta = delta.wrapping_add(d);
        } else {
            delta = d;
        }
        v = v.wrapping_add(delta);
        dst.push(v);
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the deltas", r.0.len()));
    }
    Ok(())
}

pub(crate) const INF_POS: i64 = i64::MAX;
pub(crate) const INF_NEG: i64 = i64::MIN;
pub(crate) const V_MAX: i64 = i64::MAX - 2;
pub(crate) const V_MIN: i64 = i64::MIN + 1;
/// Prometheus' staleness marker.
pub(crate) const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);
/// `vStaleNaN`: the integer that stands for the staleness marker.
pub(crate) const STALE_NAN_INT: i64 = i64::MAX - 1;

/// `decimal.AppendDecimalToFloat`: the same float for each `v * 10^scale`.
pub(crate) fn decimal_to_floats(ints: &[i64], scale: i16, out: &mut Vec<f64>) {
    out.clear();
    if ints.iter().all(|&v| v == 0) {
        out.resize(ints.len(), 0.0);
        return;
    }
    // Go divides by 10^-scale for a negative scale (more exact than
    // multiplying by 10^scale); times 1.0 is exact for scale 0.
    let scale = i32::from(scale);
    let divide = scale < 0;
    let e10 = go_pow10(scale.abs());
    out.extend(ints.iter().map(|&v| match v {
        V_MIN..=V_MAX if divide => v as f64 / e10,
        V_MIN..=V_MAX => v as f64 * e10,
        INF_POS => f64::INFINITY,
        INF_NEG => f64::NEG_INFINITY,
        _ => STALE_NAN,
    }));
}

/// Go's `math.Pow10`, table for table: a correctly rounded 10^n would
/// differ from it in the last bit for some n, and with it the value.
pub(crate) fn go_pow10(n: i32) -> f64 {
    const TAB: [f64; 32] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31,
    ];
    const POS32: [f64; 10] = [
        1e0, 1e32, 1e64, 1e96, 1e128, 1e160, 1e192, 1e224, 1e256, 1e288,
    ];
    const NEG32: [f64; 11] = [
        1e-0, 1e-32, 1e-64, 1e-96, 1e-128, 1e-160, 1e-192, 1e-224, 1e-256, 1e-288, 1e-320,
    ];
    match n {
        0..=308 => POS32[n as usize / 32] * TAB[n as usize % 32],
        -323..=-1 => NEG32[(-n) as usize / 32] / TAB[(-n) as usize % 32],
        _ if n > 0 => f64::INFINITY,
        _ => 0.0,
    }
}

/// Varint reader over a block.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn uvarint(&mut self, what: &str) -> Result<u64, String> {
        let (v, len) =
            read_varint(self.0).ok_or_else(|| format!("the {what} is not a valid varint"))?;
        self.0 = &self.0[len..];
        Ok(v)
    }

    fn varint(&mut self, what: &str) -> Result<i64, String> {
        let u = self.uvarint(what)?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or_else(|| format!("the block ends before its {what}"))?;
        self.0 = rest;
        Ok(b)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.uvarint(what)?;
        if len > self.0.len() as u64 {
            return Err(format!(
                "the {what} claims {len} bytes, {} are left",
                self.0.len()
            ));
        }
        let (b, rest) = self.0.split_at(len as usize);
        self.0 = rest;
        Ok(b)
    }
}

#[cfg(test)]
#[path = "vm_native_tests.rs"]
mod tests;
