//! Parquet's RLE / bit-packing hybrid encoding, as the string columns'
//! dictionary indices and levels use it ([`super::strings`]).

use crate::codec::remote_write::put_varint;

/// Parquet's RLE / bit-packing hybrid encoding of `width`-bit unsigned
/// integers: runs of one value as (count, value), everything else packed
/// eight values at a time, least significant bit first.
pub(super) struct Hybrid {
    width: u8,
    out: Vec<u8>,
    /// The bit-packed run being built, and how many values it holds.
    packed: Vec<u8>,
    packed_values: usize,
    /// Bits of `packed` not yet a whole byte.
    acc: u64,
    acc_bits: u32,
    /// A run of one value not yet written.
    run_value: u32,
    run_len: usize,
}

impl Hybrid {
    pub(super) fn new(width: u8) -> Hybrid {
        Hybrid {
            width,
            out: Vec::new(),
            packed: Vec::new(),
            packed_values: 0,
            acc: 0,
            acc_bits: 0,
            run_value: 0,
            run_len: 0,
        }
    }

    pub(super) fn width(&self) -> u8 {
        self.width
    }

    /// Bytes written so far, roughly.
    pub(super) fn len(&self) -> usize {
        self.out.len() + self.packed.len()
    }

    /// `n` times `value`.
    pub(super) fn repeat(&mut self, value: u32, n: usize) {
        if n == 0 {
            return;
        }
        if self.run_len > 0 && self.run_value == value {
            self.run_len += n;
            return;
        }
        self.end_run();
        self.run_value = value;
        self.run_len = n;
    }

    /// `values`, `times` times over.
    pub(super) fn pattern(&mut self, values: &[u32], times: usize) {
        let Some((&first, rest)) = values.split_first() else {
            return;
        };
        if rest.iter().all(|&v| v == first) {
            return self.repeat(first, values.len() * times);
        }
        self.end_run();
        let total = values.len() * times;
        let value = |i: usize| values[i % values.len()];
        let mut i = 0;
        while i < total && !self.packed_values.is_multiple_of(8) {
            self.pack(value(i));
            i += 1;
        }
        // From a group boundary on, a unit of the pattern packs into whole
        // bytes that repeat: pack one unit, then copy what is packed,
        // doubling it, so a series' rows cost a few copies.
        let unit = unit_values(values.len());
        let units = (total - i) / unit;
        if units > 1 {
            let start = self.packed.len();
            for k in i..i + unit {
                self.pack(value(k));
            }
            let unit_bytes = self.packed.len() - start;
            let mut copied = 1;
            while copied < units {
                let more = copied.min(units - copied);
                self.packed
                    .extend_from_within(start..start + more * unit_bytes);
                copied += more;
            }
            self.packed_values += (units - 1) * unit;
            i += units * unit;
        }
        while i < total {
            self.pack(value(i));
            i += 1;
        }
    }

    /// Writes the pending run: as a run once it is long enough to be worth
    /// one (after filling the bit-packed group in progress), else packed.
    fn end_run(&mut self) {
        let (value, mut n) = (self.run_value, std::mem::take(&mut self.run_len));
        let fill = (8 - self.packed_values % 8) % 8;
        if n < fill + 8 {
            for _ in 0..n {
                self.pack(value);
            }
            return;
        }
        for _ in 0..fill {
            self.pack(value);
        }
        n -= fill;
        self.flush_packed();
        put_varint(&mut self.out, (n as u64) << 1);
        let bytes = usize::from(self.width).div_ceil(8);
        self.out.extend_from_slice(&value.to_le_bytes()[..bytes]);
    }

    fn pack(&mut self, value: u32) {
        self.acc |= u64::from(value) << self.acc_bits;
        self.acc_bits += u32::from(self.width);
        while self.acc_bits >= 8 {
            self.packed.push(self.acc as u8);
            self.acc >>= 8;
            self.acc_bits -= 8;
        }
        self.packed_values += 1;
    }

    /// Writes the bit-packed run, its last group padded with zeros (readers
    /// stop at the page's value count).
    fn flush_packed(&mut self) {
        if self.packed_values == 0 {
            return;
        }
        while !self.packed_values.is_multiple_of(8) {
            self.pack(0);
        }
        put_varint(&mut self.out, ((self.packed_values / 8) as u64) << 1 | 1);
        self.out.append(&mut self.packed);
        self.packed_values = 0;
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.end_run();
        self.flush_packed();
        self.out
    }
}

/// Values of a pattern of `period` values that pack into whole bytes
/// whatever the width: a multiple of eight values and of the period.
fn unit_values(period: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    period / gcd(period, 8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the hybrid encoding back: an independent decoder of the format.
    fn decode(width: u8, mut bytes: &[u8], count: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while out.len() < count {
            let (header, len) = crate::codec::remote_write::read_varint(bytes).unwrap();
            bytes = &bytes[len..];
            if header & 1 == 0 {
                let n = (header >> 1) as usize;
                let len = usize::from(width).div_ceil(8);
                let mut v = [0u8; 4];
                v[..len].copy_from_slice(&bytes[..len]);
                bytes = &bytes[len..];
                out.extend(std::iter::repeat_n(u32::from_le_bytes(v), n));
            } else {
                let n = (header >> 1) as usize * 8;
                let len = n * usize::from(width) / 8;
                let (packed, rest) = bytes.split_at(len);
                bytes = rest;
                for i in 0..n {
                    let mut v = 0u32;
                    for bit in 0..usize::from(width) {
                        let at = i * usize::from(width) + bit;
                        v |= u32::from(packed[at / 8] >> (at % 8) & 1) << bit;
                    }
                    out.push(v);
                }
            }
        }
        assert!(bytes.is_empty(), "{} bytes left over", bytes.len());
        out.truncate(count);
        out
    }

    #[test]
    fn the_hybrid_encoding_reads_back() {
        enum Op {
            Repeat(u32, usize),
            Pattern(Vec<u32>, usize),
        }
        use Op::{Pattern, Repeat};
        let cases: Vec<(u8, Vec<Op>)> = vec![
            (0, vec![Repeat(0, 5), Pattern(vec![0, 0], 3)]),
            (1, vec![Repeat(1, 100)]),
            (
                1,
                vec![
                    Pattern(vec![0, 1], 720),
                    Repeat(0, 3),
                    Pattern(vec![0, 1, 1], 5),
                ],
            ),
            (
                1,
                vec![Repeat(0, 3), Repeat(1, 9), Repeat(0, 16), Repeat(1, 1)],
            ),
            (
                3,
                vec![
                    Repeat(5, 7),
                    Repeat(5, 1),
                    Repeat(2, 20),
                    Pattern(vec![7], 30),
                ],
            ),
            (
                7,
                vec![
                    Pattern(vec![3, 90], 100),
                    Repeat(90, 8),
                    Pattern(vec![1, 2, 3], 1),
                ],
            ),
            (17, vec![Pattern(vec![70_000, 1], 9), Repeat(131_071, 300)]),
            (
                32,
                vec![Repeat(u32::MAX, 2), Pattern(vec![u32::MAX, 0, 1], 11)],
            ),
        ];
        for (width, ops) in cases {
            let mut hybrid = Hybrid::new(width);
            let mut want = Vec::new();
            for op in &ops {
                match op {
                    Repeat(v, n) => {
                        hybrid.repeat(*v, *n);
                        want.extend(std::iter::repeat_n(*v, *n));
                    }
                    Pattern(p, n) => {
                        hybrid.pattern(p, *n);
                        for _ in 0..*n {
                            want.extend(p);
                        }
                    }
                }
            }
            let bytes = hybrid.finish();
            assert_eq!(decode(width, &bytes, want.len()), want, "width {width}");
        }
    }

    #[test]
    fn long_runs_are_runs() {
        let mut hybrid = Hybrid::new(20);
        hybrid.repeat(3, 1_000_000);
        // Header (varint of 2_000_000) and the value in 3 bytes.
        assert_eq!(hybrid.finish().len(), 3 + 3);
    }

    #[test]
    fn patterns_copied_by_block_read_back_at_every_phase() {
        for width in [1u8, 3, 7, 8, 13, 32] {
            let max = if width == 32 {
                u32::MAX
            } else {
                (1u32 << width) - 1
            };
            for period in 2..=5usize {
                let pattern: Vec<u32> = (0..period as u32).map(|k| max - k.min(max)).collect();
                for lead in 0..9 {
                    for times in [1, 7, 64, 65, 1000] {
                        let mut hybrid = Hybrid::new(width);
                        let mut want = Vec::new();
                        // 3 values a time: every phase of a group of 8.
                        hybrid.pattern(&[1, 0, 1], lead);
                        for _ in 0..lead {
                            want.extend([1, 0, 1]);
                        }
                        hybrid.pattern(&pattern, times);
                        for _ in 0..times {
                            want.extend(&pattern);
                        }
                        let got = decode(width, &hybrid.finish(), want.len());
                        assert_eq!(
                            got, want,
                            "width {width} period {period} lead {lead} times {times}"
                        );
                    }
                }
            }
        }
        assert_eq!(unit_values(2), 8);
        assert_eq!(unit_values(3), 24);
        assert_eq!(unit_values(8), 8);
    }
}
