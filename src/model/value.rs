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

/// Ryū prints the shortest round-trip digits in a fraction of `Display`'s
/// time (`Display` was the largest cost of the text formats). Up to 15
/// significant digits the shortest digits are unique, so both print the
/// same; from 16 on two candidates can round-trip and the two algorithms
/// may pick different ones (`...016.2` / `...016.3`), so those values, and
/// those Ryū prints with an exponent (Go's `'f'` format has none), take
/// `Display`, which is Go's algorithm. Ryū's `1.0` for 1 loses its `.0`.
pub(crate) fn push_finite(out: &mut impl TextOut, v: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The Ryū path prints exactly what `Display` prints: random doubles of
    /// every magnitude (the exponent case included), and two-decimal values
    /// like the ones servers send.
    #[test]
    fn fast_values_match_display() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
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
