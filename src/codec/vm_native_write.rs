//! Writing VictoriaMetrics' native format, for `/api/v1/import/native`:
//! the layout [`super::vm_native`] reads, encoded from samples.
//!
//! Why: the server parses native blocks for less CPU than JSON lines (10.4
//! against 14.1 CPU-s for the bundle benchmark's 28.8 M samples), and on a
//! small machine the destination's CPU is the import's wall time.
//!
//! What the server stores must not depend on the wire format. A value goes
//! in as a decimal `m * 10^scale` that the server turns back into a float
//! (`decimal.AppendDecimalToFloat`); its storage then keeps
//! `decimal.FromFloat` of that float, as it keeps `FromFloat` of the float
//! it parses from a JSON line. So a series is written natively only when,
//! for every value, `FromFloat` of the float the server will compute equals
//! `FromFloat` of the value itself ([`NativeWriter::series`] checks each
//! one, computing both as Go does); otherwise it says so, and the caller
//! sends JSON. A NaN is never written, not even the staleness marker (a
//! JSON `NaN` is what the server's parser makes of it, not a decimal we can
//! prove equal).
//!
//! Each block is at most [`ROWS_PER_BLOCK`] rows (the server refuses more
//! than 16,384), sorted by timestamp (the server's range filter assumes
//! it), with timestamps and values as a constant, a constant step, or
//! plain varint deltas (no zstd: loopback bytes are cheaper than the
//! server's decompression).

use super::remote_write::put_varint;
use super::vm_native::{
    decimal_to_floats, go_pow10, Layout, CONST_TYPE, DELTA_CONST_TYPE, ESCAPE, INF_NEG, INF_POS,
    KV_SEPARATOR, NEAREST_DELTA, STALE_NAN, STALE_NAN_INT, TAG_END, V_MAX, V_MIN,
};
use crate::model::{labels::METRIC_NAME, Labels, Sample};

/// Rows per block, as the server's own storage cuts them.
pub const ROWS_PER_BLOCK: usize = 8192;
/// The server's limit on a series name or a block (`1024*1024` bytes).
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Why a series cannot be written natively; the caller sends it as JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotNative {
    #[error("a NaN value: only a JSON line keeps what the server makes of it")]
    NaN,
    #[error("value {0} does not survive the server's decimal conversion unchanged")]
    Inexact(f64),
    #[error("a series name of {0} bytes, over the server's 1 MiB for native blocks")]
    NameTooLong(usize),
}

/// The 16-byte header of a request body: the time range blocks are cut to
/// (`encoding.MarshalInt64`, zigzag big-endian). `[i64::MIN, i64::MAX]`
/// cuts nothing.
pub fn native_header(out: &mut Vec<u8>) {
    native_header_range(i64::MIN, i64::MAX, out);
}

/// A body that asks which layout a server reads and writes nothing: its
/// one row lies outside the header's range `[0, 0]`, so a server that
/// reads the block drops the row, and one that reads the other layout
/// refuses the body (read in the other layout, the block claims 0 rows).
pub fn native_probe(layout: Layout) -> Vec<u8> {
    let mut body = Vec::new();
    native_header_range(0, 0, &mut body);
    let name = Labels::from_vec(vec![crate::model::Label {
        name: METRIC_NAME.to_string(),
        value: "spillway_native_probe".to_string(),
    }]);
    NativeWriter::new(layout)
        .series(&name, &[Sample::new(1000, 0.0)], &mut body)
        .expect("a zero is always written");
    body
}

fn native_header_range(min: i64, max: i64, out: &mut Vec<u8>) {
    for v in [min, max] {
        out.extend_from_slice(&zigzag(v).to_be_bytes());
    }
}

/// Encodes series into one body, reusing its buffers.
pub struct NativeWriter {
    layout: Layout,
    order: Vec<usize>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
    decimals: Vec<i64>,
    exponents: Vec<i16>,
    scaled: Vec<i64>,
    floats: Vec<f64>,
    name: Vec<u8>,
    timestamp_data: Vec<u8>,
    value_data: Vec<u8>,
}

impl NativeWriter {
    pub fn new(layout: Layout) -> NativeWriter {
        NativeWriter {
            layout,
            order: Vec::new(),
            timestamps: Vec::new(),
            values: Vec::new(),
            decimals: Vec::new(),
            exponents: Vec::new(),
            scaled: Vec::new(),
            floats: Vec::new(),
            name: Vec::new(),
            timestamp_data: Vec::new(),
            value_data: Vec::new(),
        }
    }

    /// Appends the series' blocks to `out` (after a [`native_header`]), or
    /// leaves `out` as it was and says why it cannot.
    pub fn series(
        &mut self,
        labels: &Labels,
        samples: &[Sample],
        out: &mut Vec<u8>,
    ) -> Result<(), NotNative> {
        if samples.is_empty() {
            return Ok(());
        }
        self.name.clear();
        write_metric_name(labels, &mut self.name);
        if self.name.len() > MAX_FRAME_BYTES {
            return Err(NotNative::NameTooLong(self.name.len()));
        }
        self.sort(samples)?;
        let rollback = out.len();
        let mut start = 0;
        while start < self.timestamps.len() {
            let end = (start + ROWS_PER_BLOCK).min(self.timestamps.len());
            if let Err(e) = self.blocks(start, end, out) {
                out.truncate(rollback);
                return Err(e);
            }
            start = end;
        }
        Ok(())
    }

    /// Samples in timestamp order (stable: equal timestamps keep theirs),
    /// with each value's own decimal.
    fn sort(&mut self, samples: &[Sample]) -> Result<(), NotNative> {
        self.timestamps.clear();
        self.values.clear();
        self.decimals.clear();
        self.exponents.clear();
        if samples.is_sorted_by_key(|s| s.timestamp_ms) {
            return samples.iter().try_for_each(|s| self.push(s));
        }
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..samples.len());
        order.sort_by_key(|&i| samples[i].timestamp_ms);
        let pushed = order.iter().try_for_each(|&i| self.push(&samples[i]));
        self.order = order;
        pushed
    }

    fn push(&mut self, s: &Sample) -> Result<(), NotNative> {
        // `from_float` takes the staleness marker; a line's NaN is not one.
        let (m, e) = match from_float(s.value) {
            Some(decimal) if !s.value.is_nan() => decimal,
            _ => return Err(NotNative::NaN),
        };
        self.timestamps.push(s.timestamp_ms);
        self.values.push(s.value);
        self.decimals.push(m);
        self.exponents.push(e);
        Ok(())
    }

    /// Rows `start..end` as one block, or as halves where one scale for
    /// all of them would change a value (values of very different sizes).
    fn blocks(&mut self, start: usize, end: usize, out: &mut Vec<u8>) -> Result<(), NotNative> {
        let scale = common_scale(
            &self.decimals[start..end],
            &self.exponents[start..end],
            &mut self.scaled,
        );
        if let Some(bad) = self.first_changed(start, scale) {
            if end - start == 1 {
                return Err(NotNative::Inexact(self.values[start + bad]));
            }
            let mid = start + (end - start) / 2;
            self.blocks(start, mid, out)?;
            return self.blocks(mid, end, out);
        }
        self.write_block(start, end, scale, out);
        Ok(())
    }

    /// The first row whose value the server would store differently. A
    /// float that comes back bit for bit needs no second conversion.
    fn first_changed(&mut self, start: usize, scale: i16) -> Option<usize> {
        decimal_to_floats(&self.scaled, scale, &mut self.floats);
        let originals = &self.values[start..];
        let decimals = self.decimals[start..].iter().zip(&self.exponents[start..]);
        (self.floats.iter().zip(originals).zip(decimals)).position(|((&back, &sent), (&m, &e))| {
            back.to_bits() != sent.to_bits() && from_float(back) != Some((m, e))
        })
    }

    /// The series name and the block, framed, straight into `out` (the
    /// block's length is filled in once it is written).
    fn write_block(&mut self, start: usize, end: usize, scale: i16, out: &mut Vec<u8>) {
        let timestamps = &self.timestamps[start..end];
        let ts_type = encode_ints(timestamps, &mut self.timestamp_data);
        let value_type = encode_ints(&self.scaled, &mut self.value_data);
        put_frame(out, &self.name);
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        put_signed(out, timestamps[0]);
        if self.layout == Layout::Since182 {
            put_signed(out, timestamps[timestamps.len() - 1]);
        }
        put_signed(out, self.scaled[0]);
        put_varint(out, timestamps.len() as u64);
        put_signed(out, i64::from(scale));
        out.push(ts_type);
        out.push(value_type);
        if self.layout == Layout::Since182 {
            out.push(64);
        }
        put_bytes(out, &self.timestamp_data);
        put_bytes(out, &self.value_data);
        // At most about 160 KiB for 8,192 rows: far under the server's 1 MiB.
        let length = (out.len() - length_at - 4) as u32;
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
}

/// `u32` big-endian length + bytes.
fn put_frame(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// `encoding.marshalInt64Array` at full precision, without zstd: the
/// encoding type, its data written into `data` (the first value travels in
/// the header).
fn encode_ints(a: &[i64], data: &mut Vec<u8>) -> u8 {
    data.clear();
    if a.iter().all(|&v| v == a[0]) {
        return CONST_TYPE;
    }
    let step = a[1].wrapping_sub(a[0]);
    if a.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step) {
        put_signed(data, step);
        return DELTA_CONST_TYPE;
    }
    for w in a.windows(2) {
        put_signed(data, w[1].wrapping_sub(w[0]));
    }
    NEAREST_DELTA
}

/// `MetricName.Marshal`: the metric name, then each other label's name and
/// value, each ended by byte 1, with bytes 0, 1 and 2 escaped.
pub fn write_metric_name(labels: &Labels, out: &mut Vec<u8>) {
    write_field(labels.get(METRIC_NAME).unwrap_or(""), out);
    for l in labels.iter().filter(|l| l.name != METRIC_NAME) {
        write_field(&l.name, out);
        write_field(&l.value, out);
    }
}

fn write_field(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        match b {
            ESCAPE => out.extend_from_slice(&[ESCAPE, b'0']),
            TAG_END => out.extend_from_slice(&[ESCAPE, b'1']),
            KV_SEPARATOR => out.extend_from_slice(&[ESCAPE, b'2']),
            _ => out.push(b),
        }
    }
    out.push(TAG_END);
}

/// `decimal.AppendFloatToDecimal`'s choice of one scale for a block: the
/// smallest exponent, raised as far as the largest mantissa needs to stay
/// in an `i64`; mantissas scaled to it into `out`.
fn common_scale(decimals: &[i64], exponents: &[i16], out: &mut Vec<i64>) -> i16 {
    let special = |v: i64| !(V_MIN..=V_MAX).contains(&v);
    let mut min_exp = (decimals.iter().zip(exponents))
        .filter(|(&v, _)| !special(v))
        .map(|(_, &e)| e)
        .min()
        .unwrap_or(0);
    let down = (decimals.iter().zip(exponents))
        .map(|(&v, &e)| e.saturating_sub(min_exp).saturating_sub(max_up_exponent(v)))
        .max()
        .unwrap_or(0)
        .max(0);
    min_exp = min_exp.saturating_add(down);
    out.clear();
    out.extend(decimals.iter().zip(exponents).map(|(&v, &e)| {
        if special(v) {
            return v;
        }
        let mut v = v;
        for _ in min_exp..e {
            v = v.wrapping_mul(10);
        }
        for _ in e..min_exp {
            v /= 10;
        }
        v
    }));
    min_exp
}

/// How many times `v` can be multiplied by 10 and stay an `i64` (Go's
/// `maxUpExponent`, which also allows 1024 for zero and special values).
fn max_up_exponent(v: i64) -> i16 {
    if v == 0 || !(V_MIN..=V_MAX).contains(&v) {
        return 1024;
    }
    let v = v.unsigned_abs();
    (0..=18)
        .rev()
        .find(|&n| v <= UP_LIMITS[n])
        .map_or(0, |n| n as i16)
}

/// `i64::MAX / 10^n`: the largest magnitude that `n` more digits keep in an `i64`.
const UP_LIMITS: [u64; 19] = {
    let mut limits = [0u64; 19];
    let mut n = 0;
    while n < 19 {
        limits[n] = i64::MAX as u64 / 10u64.pow(n as u32);
        n += 1;
    }
    limits
};

/// `decimal.FromFloat` as Go computes it: `f == m * 10^e` with `m` as
/// small as it goes, or the reserved integers for ±Inf and the staleness
/// marker. `None` for any other NaN (Go's answer for those is undefined).
pub fn from_float(f: f64) -> Option<(i64, i16)> {
    if f == 0.0 {
        return Some((0, 0));
    }
    if f.to_bits() == STALE_NAN.to_bits() {
        return Some((STALE_NAN_INT, 0));
    }
    if f.is_nan() {
        return None;
    }
    if f.is_infinite() {
        return Some((if f > 0.0 { INF_POS } else { INF_NEG }, 0));
    }
    if f > 0.0 {
        let (v, e) = positive_to_decimal(f);
        return Some((v.min(V_MAX), e));
    }
    let (v, e) = positive_to_decimal(-f);
    Some(((-v).max(V_MIN), e))
}

fn positive_to_decimal(f: f64) -> (i64, i16) {
    // Go's uint64(f) wraps to 0 from 2^64 up on amd64; Rust saturates.
    if f >= 18_446_744_073_709_551_616.0 {
        return positive_to_decimal_slow(f);
    }
    let u = f as u64;
    if u as f64 != f {
        return positive_to_decimal_slow(f);
    }
    if u < 1 << 55 && !u.is_multiple_of(10) {
        return (u as i64, 0);
    }
    decimal_and_scale(u)
}

fn decimal_and_scale(mut u: u64) -> (i64, i16) {
    let mut scale = 0i16;
    while u >= 1 << 55 {
        // A float64 has 53 significant bits: the rest is conversion noise.
        u /= 10;
        scale += 1;
    }
    if !u.is_multiple_of(10) {
        return (u as i64, scale);
    }
    u /= 10;
    scale += 1;
    while u != 0 && u.is_multiple_of(10) {
        u /= 10;
        scale += 1;
    }
    (u as i64, scale)
}

fn positive_to_decimal_slow(mut f: f64) -> (i64, i16) {
    let mut scale = 0i16;
    let mut precision = 1e12;
    if !(1e-6..=1e6).contains(&f) {
        if f > 1e6 {
            precision = 1e15;
        }
        let exp = frexp_exponent(f).clamp(-1022, 1023);
        scale = (f64::from(exp) * std::f64::consts::LOG10_2) as i16;
        f *= go_pow10(-i32::from(scale));
    }
    while f < precision {
        // `f` is positive and below 1e15 here: the cast truncates exactly
        // (and does not call libm's trunc).
        let whole = (f as u64) as f64;
        let frac = f - whole;
        if frac * precision < whole {
            f = whole;
            break;
        }
        if (1.0 - frac) * precision < whole {
            f = whole + 1.0;
            break;
        }
        f *= 100.0;
        scale -= 2;
    }
    let u = f as u64;
    if !u.is_multiple_of(10) {
        return (u as i64, scale);
    }
    ((u / 10) as i64, scale + 1)
}

/// The `exp` of Go's `math.Frexp(f) = frac * 2^exp` with `frac` in
/// `[0.5, 1)`, for a finite positive `f`.
fn frexp_exponent(f: f64) -> i32 {
    let biased = ((f.to_bits() >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: normalise by 2^52 first, as Go does.
        let scaled = f * f64::from_bits(0x4330_0000_0000_0000);
        return ((scaled.to_bits() >> 52) & 0x7ff) as i32 - 1022 - 52;
    }
    biased - 1022
}

#[cfg(test)]
#[path = "vm_native_write_tests.rs"]
mod tests;
