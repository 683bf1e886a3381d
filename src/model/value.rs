//! Sample values as text, written once for every format that prints them
//! (CSV, JSON, JSONL, event destinations, CEF, templates): the way the
//! Prometheus API prints them, which is Go's
//! `strconv.FormatFloat(v, 'f', -1, 64)` — the shortest decimal that reads
//! back to the same float, never an exponent, `-0` for negative zero —
//! and `NaN`, `+Inf`, `-Inf`.

/// Where value text goes: a `String` (file sinks) or bytes (event items).
pub trait TextOut {
    fn push_text(&mut self, s: &str);
    /// `v` by its `Display`, written in place (no temporary string).
    fn push_display(&mut self, v: f64);
}

impl TextOut for String {
    fn push_text(&mut self, s: &str) {
        self.push_str(s);
    }
    fn push_display(&mut self, v: f64) {
        use std::fmt::Write as _;
        write!(self, "{v}").expect("writing to a String cannot fail");
    }
}

impl TextOut for Vec<u8> {
    fn push_text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    fn push_display(&mut self, v: f64) {
        use std::io::Write as _;
        write!(self, "{v}").expect("writing to a Vec cannot fail");
    }
}

/// Appends `v` (see the module docs).
pub fn push_value(out: &mut impl TextOut, v: f64) {
    if v.is_nan() {
        out.push_text("NaN");
    } else if v == f64::INFINITY {
        out.push_text("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_text("-Inf");
    } else {
        push_finite(out, v);
    }
}

/// Appends `v` as a JSON value: a number when finite, else the string
/// Prometheus uses (`"NaN"`, `"+Inf"`, `"-Inf"`), since JSON has no
/// non-finite numbers.
pub fn push_json_value(out: &mut impl TextOut, v: f64) {
    if v.is_finite() {
        push_finite(out, v);
    } else {
        out.push_text("\"");
        push_value(out, v);
        out.push_text("\"");
    }
}

/// `v` as text (see the module docs).
pub fn value_text(v: f64) -> String {
    let mut s = String::new();
    push_value(&mut s, v);
    s
}

/// Reads `-?D+(\.D+)?` with at most 15 digits in all, the form servers
/// print sample values in, as `m / 10^s`; `None` for anything else (signs,
/// exponents, `1.`, longer numbers, `NaN`), which `str::parse` reads.
///
/// Why it equals `str::parse`: below 10^15 the digits `m` are an exact
/// float, and so is `10^s` for `s <= 15`; IEEE division rounds the exact
/// quotient correctly, and that quotient is the decimal itself. It saves
/// the UTF-8 check and the general parser on every sample.
pub(crate) fn parse_short_decimal(text: &[u8]) -> Option<f64> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    const MAX_DIGITS: usize = 15;
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (whole, whole_len) = leading_digits(digits);
    if whole_len == 0 || whole_len > MAX_DIGITS {
        return None;
    }
    let (mantissa, scale) = match &digits[whole_len..] {
        [] => (whole, 0),
        [b'.', fraction @ ..] => {
            let (part, scale) = leading_digits(fraction);
            if scale == 0 || scale != fraction.len() || whole_len + scale > MAX_DIGITS {
                return None;
            }
            (whole * 10u64.pow(scale as u32) + part, scale)
        }
        _ => return None,
    };
    let v = mantissa as f64 / POWERS[scale];
    Some(if negative { -v } else { v })
}

/// The value of the digits `b` starts with (wrapped past 19 of them) and
/// their count, eight at a time where eight bytes are there to load.
#[inline]
pub(crate) fn leading_digits(b: &[u8]) -> (u64, usize) {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const POW10: [u64; 9] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
    ];
    let (mut acc, mut pos) = (0u64, 0usize);
    while let Some(word) = b.get(pos..pos + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // A high bit per byte that is not an ASCII digit.
        let not_digit =
            (x.wrapping_sub(ZEROS) | x.wrapping_add(0x4646_4646_4646_4646)) & 0x8080_8080_8080_8080;
        let k = (not_digit.trailing_zeros() / 8) as usize;
        if k == 0 {
            return (acc, pos);
        }
        // The k digits moved to the end of the word, '0's before them.
        let x = if k == 8 {
            x
        } else {
            (x << (8 * (8 - k))) | (ZEROS >> (8 * k))
        };
        acc = acc.wrapping_mul(POW10[k]).wrapping_add(eight_digits(x));
        pos += k;
        if k < 8 {
            return (acc, pos);
        }
    }
    while let Some(d) = b.get(pos).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        acc = acc.wrapping_mul(10).wrapping_add(u64::from(d));
        pos += 1;
    }
    (acc, pos)
}

/// The value of eight ASCII digits loaded little-endian (first digit in the low byte).
#[inline]
fn eight_digits(x: u64) -> u64 {
    let x = x.wrapping_sub(0x3030_3030_3030_3030);
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_ffff_0000_ffff;
    (x.wrapping_mul(10_000) + (x >> 32)) & 0xffff_ffff
}

/// Ryū prints the shortest round-trip digits in a fraction of `Display`'s
/// time (`Display` was the largest cost of the text formats). Up to 15
/// significant digits the shortest digits are unique, so both print the
/// same; from 16 on two candidates can round-trip and the two algorithms
/// may pick different ones (`...016.2` / `...016.3`), so those values, and
/// those Ryū prints with an exponent (Go's `'f'` format has none), take
/// `Display`, which is Go's algorithm. Ryū's `1.0` for 1 loses its `.0`.
/// Most samples (integers, gauges with a few decimals) take neither: see
/// [`push_short_decimal`].
pub(crate) fn push_finite(out: &mut impl TextOut, v: f64) {
    if push_short_decimal(out, v) {
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    let significant = text
        .trim_start_matches(['-', '0', '.'])
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    if significant > 15 || text.contains('e') {
        out.push_display(v);
    } else {
        out.push_text(text.strip_suffix(".0").unwrap_or(text));
    }
}

/// Prints `v` from the first `m * 10^-s` (s = 0, 1, .. 8, |m| < 10^15)
/// that rounds back to `v`; `false` when there is none (or for -0, which
/// keeps its sign through the general path).
///
/// Why that is the shortest form: `m / 10^s` is one correctly rounded
/// division of two exact floats, so it equals `v` exactly when the decimal
/// rounds to `v`, and by [`push_decimal`]'s argument a decimal of at most
/// 15 digits that does is `v`'s shortest. A shorter one, with fewer
/// decimals, would have been found at its own `s`: `v * 10^s` lies well
/// within half a unit of that shorter decimal's digits (at most 15 digits
/// against a 53-bit float), so rounding finds them.
fn push_short_decimal(out: &mut impl TextOut, v: f64) -> bool {
    const POWERS: [f64; 9] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
    const MAX_DIGITS: f64 = 1e15;
    if v == 0.0 && v.is_sign_negative() {
        return false;
    }
    for (s, p) in POWERS.iter().enumerate() {
        let Some(m) = round_below(v * p, MAX_DIGITS) else {
            return false;
        };
        if m as f64 / p == v {
            return push_decimal(out, m, -(s as i16));
        }
    }
    false
}

/// `x.round()` as an integer when its magnitude is below `limit` (at most
/// 2^52, where `x` minus its integer part is exact). Without SSE4.1
/// `f64::round` is a libm call, a measurable share of printing a sample.
fn round_below(x: f64, limit: f64) -> Option<i64> {
    if x.is_nan() || x.abs() >= limit {
        return None;
    }
    let whole = x as i64;
    let fraction = x - whole as f64;
    let m = whole + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5);
    (m.unsigned_abs() < limit as u64).then_some(m)
}

/// Prints `d * 10^scale` when that is the text [`push_finite`] prints for
/// the float nearest to it (the one VictoriaMetrics computes from a stored
/// decimal); `false` otherwise, printing nothing.
///
/// Why they agree: with |d| < 10^15 the decimal has at most 15 significant
/// digits; with |scale| <= 22 the power of ten is exact, so one division
/// or multiplication rounds the decimal correctly. A decimal of at most 15
/// digits is the only one of its length or shorter that rounds to that
/// float, so it is the float's shortest form. Integral results must equal
/// the float exactly (integer printers take them as integers): below 2^53
/// they do. Zero prints as `0`.
pub(crate) fn push_decimal(out: &mut impl TextOut, d: i64, scale: i16) -> bool {
    const MAX_DIGITS: u64 = 1_000_000_000_000_000;
    const EXACT: u64 = 1 << 53;
    const ZEROS: &str = "0000000000000000000000";
    let magnitude = d.unsigned_abs();
    if magnitude >= MAX_DIGITS || !(-22..=22).contains(&scale) {
        return false;
    }
    let sign = if d < 0 { "-" } else { "" };
    if scale >= 0 {
        let Some(m) = 10u64
            .checked_pow(scale as u32)
            .and_then(|p| magnitude.checked_mul(p))
        else {
            return false;
        };
        if m >= EXACT {
            return false;
        }
        out.push_text(sign);
        out.push_text(itoa::Buffer::new().format(m));
        return true;
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(magnitude);
    let point = digits.len() as i64 + i64::from(scale);
    // Trailing zeros after the point are not printed (nor is the point).
    let keep = digits.trim_end_matches('0').len();
    if keep == 0 {
        out.push_text("0");
        return true;
    }
    out.push_text(sign);
    if point >= keep as i64 {
        // Integral: the digits before the point.
        out.push_text(&digits[..point as usize]);
    } else if point > 0 {
        out.push_text(&digits[..point as usize]);
        out.push_text(".");
        out.push_text(&digits[point as usize..keep]);
    } else {
        out.push_text("0.");
        out.push_text(&ZEROS[..(-point) as usize]);
        out.push_text(&digits[..keep]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps a xorshift64 generator: reproducible inputs without a crate.
    fn xorshift(x: &mut u64) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
    }

    /// Rounding by integers agrees with `f64::round` (half away from zero),
    /// halves and the limit included.
    #[test]
    fn rounding_below_the_limit_is_round() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut cases: Vec<f64> = vec![
            0.5,
            -0.5,
            1.5,
            -2.5,
            0.49999999999999994,
            1e15 - 0.5,
            1e15 - 1.0,
            -1e15 + 0.5,
            1e15,
            0.0,
            -0.0,
        ];
        for _ in 0..200_000 {
            xorshift(&mut x);
            let scale = [1.0, 1e3, 1e9, 1e15][(x % 4) as usize];
            cases.push(((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0 * scale);
        }
        for v in cases {
            let want = (v.round().abs() < 1e15).then(|| v.round() as i64);
            assert_eq!(round_below(v, 1e15), want, "{v}");
        }
    }

    /// The short path reads exactly what `str::parse` reads, bit for bit,
    /// and leaves the rest to it.
    #[test]
    fn short_decimals_parse_as_str_parse() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut short = 0;
        for _ in 0..400_000 {
            xorshift(&mut x);
            let digits = (x % 17) as usize;
            let point = ((x >> 8) % (digits as u64 + 2)) as usize;
            let sign = if (x >> 16).is_multiple_of(3) { "-" } else { "" };
            let body: String = format!("{:017}", x >> 20)[..digits].to_string();
            let text = match point {
                0 => format!("{sign}{body}"),
                p if p > digits => format!("{sign}{body}."),
                p => format!("{sign}{}.{}", &body[..p], &body[p..]),
            };
            let parsed = text.parse::<f64>().ok();
            match parse_short_decimal(text.as_bytes()) {
                Some(v) => {
                    short += 1;
                    assert_eq!(Some(v.to_bits()), parsed.map(f64::to_bits), "{text}");
                }
                None => {
                    let count = text.bytes().filter(u8::is_ascii_digit).count();
                    let unsigned = text.trim_start_matches('-');
                    let plain = (1..=15).contains(&count)
                        && !unsigned.starts_with('.')
                        && !unsigned.ends_with('.');
                    assert!(!plain, "{text} is plain but was not read");
                }
            }
        }
        assert!(short > 200_000, "only {short} took the short path");
        for (text, want) in [
            ("-0", Some(-0.0f64)),
            ("0.10", Some(0.1)),
            ("007", Some(7.0)),
        ] {
            assert_eq!(
                parse_short_decimal(text.as_bytes()).map(f64::to_bits),
                want.map(f64::to_bits),
                "{text}"
            );
        }
        for text in [
            "",
            "-",
            ".5",
            "1.",
            "+1",
            "1e5",
            "NaN",
            "+Inf",
            "1.5 ",
            "1234567890123456",
            "12345678.12345678",
            "--1",
            "1.2.3",
        ] {
            assert_eq!(parse_short_decimal(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn digits_eight_at_a_time() {
        let mut n = 1u64;
        for len in 1..=19 {
            let text = format!("{n},x");
            assert_eq!(leading_digits(text.as_bytes()), (n, len), "{text}");
            let tail = format!("{n}");
            assert_eq!(leading_digits(tail.as_bytes()), (n, len), "{tail}");
            n = n * 10 + (len as u64 % 10);
        }
        assert_eq!(leading_digits(b"x12345678"), (0, 0));
        assert_eq!(leading_digits(b"1234/6789"), (1234, 4));
        assert_eq!(leading_digits(b"1234:6789"), (1234, 4));
    }

    /// The Ryū path prints exactly what `Display` prints: random doubles of
    /// every magnitude (the exponent case included), and two-decimal values
    /// like the ones servers send.
    #[test]
    fn fast_values_match_display() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..300_000 {
            xorshift(&mut x);
            let v = match i % 3 {
                0 => f64::from_bits(x),
                // Exponents around 1e-7..1e18: where Ryū prints without `e`, and its edges.
                1 => f64::from_bits((x & !(0x7ff << 52)) | ((1000 + (x >> 52) % 85) << 52)),
                _ => (x % 2_000_000) as f64 / 100.0 - 10_000.0,
            };
            if !v.is_finite() {
                continue;
            }
            assert_eq!(value_text(v), v.to_string(), "bits {:#x}", v.to_bits());
        }
        for v in [
            0.0,
            -0.0,
            1.0,
            1e15,
            1e16,
            1e-5,
            1e-4,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            assert_eq!(value_text(v), v.to_string());
        }
    }

    /// The short-decimal path prints what `Display` prints: decimals of 1
    /// to 17 digits with 0 to 10 decimals (past both of its limits), their
    /// negatives, and neighbours one bit away that have no short form.
    #[test]
    fn short_decimals_print_as_display_prints() {
        let mut x: u64 = 0x0123_4567_89AB_CDEF;
        let mut short = 0;
        for _ in 0..400_000 {
            xorshift(&mut x);
            let digits = 1 + (x >> 59) as u32 % 17;
            let m = (x % 10u64.pow(digits)) as f64;
            let scale = (x >> 40) as i32 % 11;
            let v = m / 10f64.powi(scale);
            for v in [v, -v, f64::from_bits(v.to_bits() + 1)] {
                let mut s = String::new();
                if push_short_decimal(&mut s, v) {
                    short += 1;
                    assert_eq!(s, v.to_string(), "bits {:#x}", v.to_bits());
                }
                assert_eq!(value_text(v), v.to_string(), "bits {:#x}", v.to_bits());
            }
        }
        // Most of them took the short path: the check above is not vacuous.
        assert!(short > 600_000, "{short}");
    }

    #[test]
    fn values_print_like_prometheus() {
        let cases = [
            (1.0, "1"),
            (-0.5, "-0.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            push_value(&mut s, v);
            assert_eq!(s, want);
            if v.is_finite() {
                assert_eq!(s.parse::<f64>().unwrap(), v, "round trip of {s}");
            }
        }
        let mut s = String::new();
        push_json_value(&mut s, f64::NEG_INFINITY);
        assert_eq!(s, r#""-Inf""#);
        // Event items are bytes; negative zero keeps its sign, as in Go.
        let mut bytes = Vec::new();
        push_json_value(&mut bytes, -0.0);
        push_json_value(&mut bytes, f64::NAN);
        assert_eq!(bytes, b"-0\"NaN\"");
    }
}
