//! The one reader of a VictoriaMetrics JSON line: taken apart into the
//! `metric` object and the `values` and `timestamps` arrays as byte ranges,
//! with their count, first and last timestamp, and then, for callers that
//! need series, parsed sample by sample (see `parse_vm_json_line`).
//!
//! Gathering rewrites only the labels and copies the arrays as they came;
//! importing checks every line this way before anything is sent and sends
//! lines untouched unless their samples must change; the receiver and the
//! sources parse them into series. Every caller accepts the key orders that
//! exist in the wild (VictoriaMetrics prints `metric, values, timestamps`;
//! vmgather's fallback prints `metric, timestamps, values`), other keys
//! (skipped, as VictoriaMetrics' import skips them; reported in
//! [`ScannedLine::unknown_key`] for callers that refuse them), and the special
//! values of every version (`NaN`, `+Inf`, `null`, `"Infinity"`);
//! [`ScannedLine::plain_values`] tells whether the values can be passed on to
//! a VictoriaMetrics 1.79 import unchanged (it refuses `null` and strings).
//!
//! Nothing here recurses: nesting in skipped values is counted, not followed,
//! so no input decides the stack depth; `metric` goes through serde_json,
//! whose recursion limit stays on.

use crate::model::value::{leading_digits, parse_short_decimal};
use crate::model::{Labels, STALE_NAN_BITS};
use serde::Deserialize;

/// The parts of a line; see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct ScannedLine<'a> {
    /// The `metric` object, braces included.
    pub metric: &'a [u8],
    /// Inside the brackets of `values`.
    pub values: &'a [u8],
    /// Inside the brackets of `timestamps`.
    pub timestamps: &'a [u8],
    pub samples: usize,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Every value is a plain JSON number.
    pub plain_values: bool,
    /// The first key other than `metric`, `values` and `timestamps`.
    pub unknown_key: Option<&'a [u8]>,
}

/// Takes a line apart (surrounding whitespace allowed); the error says what
/// is wrong (the caller adds the line number).
pub fn scan_line(line: &[u8]) -> Result<ScannedLine<'_>, String> {
    let mut p = Cursor { b: line, i: 0 };
    p.ws();
    p.expect(b'{', "a line must be a JSON object starting with `{`")?;
    let (mut metric, mut values, mut timestamps) = (None, None, None);
    let mut unknown_key = None;
    loop {
        p.ws();
        let key = p.key()?;
        p.ws();
        p.expect(b':', "expected `:` after a key")?;
        p.ws();
        let slot = match key {
            b"metric" => &mut metric,
            b"values" => &mut values,
            b"timestamps" => &mut timestamps,
            other => {
                unknown_key.get_or_insert(other);
                p.skip_value()?;
                p.ws();
                if p.next_is_end()? {
                    break;
                }
                continue;
            }
        };
        if slot.is_some() {
            return Err(format!(
                "key {:?} appears twice",
                String::from_utf8_lossy(key)
            ));
        }
        *slot = Some(if key == b"metric" {
            p.object()?
        } else {
            p.array()?
        });
        p.ws();
        if p.next_is_end()? {
            break;
        }
    }
    p.ws();
    if p.i != line.len() {
        return Err(format!("unexpected bytes after the object at byte {}", p.i));
    }
    let metric = metric.ok_or("`metric` is missing")?;
    let values = values.ok_or("`values` is missing")?;
    let timestamps = timestamps.ok_or("`timestamps` is missing")?;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let samples = for_each_timestamp(timestamps, |t| {
        min_ts = min_ts.min(t);
        max_ts = max_ts.max(t);
    })?;
    let (value_count, plain_values) = scan_values(values)?;
    if value_count != samples {
        return Err(format!(
            "`values` has {value_count} entries but `timestamps` has {samples}; each value needs its timestamp"
        ));
    }
    if samples == 0 {
        return Err("`values` and `timestamps` are empty".into());
    }
    Ok(ScannedLine {
        metric,
        values,
        timestamps,
        samples,
        min_ts,
        max_ts,
        plain_values,
        unknown_key,
    })
}

/// [`scan_line`] for lines straight from the server, in the layout
/// VictoriaMetrics prints (`{"metric":{..},"values":[..],"timestamps":[..]}`):
/// the arrays are found with `memchr` and counted, not parsed, and
/// `min_ts`/`max_ts` are left at 0. Any other layout goes through
/// [`scan_line`]. The server is trusted to send numbers or special values;
/// any of those marks the line not plain.
pub fn scan_line_fast(line: &[u8]) -> Result<ScannedLine<'_>, String> {
    const HEAD: &[u8] = b"{\"metric\":";
    const VALUES: &[u8] = b",\"values\":[";
    const TIMESTAMPS: &[u8] = b"],\"timestamps\":[";
    let fast = || -> Option<ScannedLine<'_>> {
        let rest = line.trim_ascii_end().strip_prefix(HEAD)?;
        let mut c = Cursor { b: rest, i: 0 };
        let metric = c.object().ok()?;
        let rest = rest[c.i..].strip_prefix(VALUES)?;
        let v_end = memchr::memchr(b']', rest)?;
        let values = &rest[..v_end];
        let rest = rest[v_end..].strip_prefix(TIMESTAMPS)?;
        let t_end = memchr::memchr(b']', rest)?;
        let timestamps = &rest[..t_end];
        if &rest[t_end..] != b"]}" || values.is_empty() || timestamps.is_empty() {
            return None;
        }
        let samples = memchr::memchr_iter(b',', timestamps).count() + 1;
        if memchr::memchr_iter(b',', values).count() + 1 != samples {
            return None;
        }
        // Every special spelling (NaN, Inf, Infinity, null, quoted) has an
        // `n`, an `N` or a quote; numbers have none of them.
        let plain = memchr::memchr3(b'n', b'N', b'"', values).is_none();
        Some(ScannedLine {
            metric,
            values,
            timestamps,
            samples,
            min_ts: 0,
            max_ts: 0,
            plain_values: plain,
            unknown_key: None,
        })
    };
    match fast() {
        Some(l) => Ok(l),
        None => scan_line(line),
    }
}

/// The labels of a `metric` object; values must be strings. A later
/// duplicate name wins and empty values are dropped, as in
/// [`Labels::from_pairs`].
pub fn parse_metric(metric: &[u8]) -> Result<Labels, String> {
    let mut de = serde_json::Deserializer::from_slice(metric);
    Labels::deserialize(&mut de)
        .and_then(|labels| de.end().map(|()| labels))
        .map_err(|e| format!("`metric` is not an object of string labels: {e}"))
}

/// Calls `each` with every timestamp of an array body (integer unix
/// milliseconds, the whole `i64` range; floats are refused, as
/// VictoriaMetrics refuses them) and returns their count.
pub(super) fn for_each_timestamp(b: &[u8], mut each: impl FnMut(i64)) -> Result<usize, String> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    // What every server prints (bare digits, a comma right after) is read
    // here without per-digit overflow checks: 18 digits cannot overflow.
    // Anything else, from the first such entry on, goes to the strict reader.
    let mut count = 0usize;
    let mut pos = 0usize;
    loop {
        let start = pos;
        let (acc, digits) = leading_digits(&b[pos..]);
        pos += digits;
        let at_end = pos == b.len();
        if digits == 0 || digits > 18 || !(at_end || b[pos] == b',') {
            let rest = timestamps_strict(b, start, &mut each)?;
            return Ok(count + rest);
        }
        // At most 18 digits: below 10^18, within i64.
        each(acc as i64);
        count += 1;
        if at_end {
            return Ok(count);
        }
        pos += 1;
    }
}

/// The strict reader of [`for_each_timestamp`] from `from` (the start of an
/// entry) on: signs, whitespace, the full `i64` range, the errors.
fn timestamps_strict(b: &[u8], from: usize, each: &mut impl FnMut(i64)) -> Result<usize, String> {
    let bad = || {
        format!(
            "timestamps [{}] are not all integers in milliseconds",
            String::from_utf8_lossy(&b[..b.len().min(60)])
        )
    };
    let beyond = || format!("{} (beyond the 64-bit range)", bad());
    let mut count = 0usize;
    // Accumulated as a negative number, so i64::MIN fits too.
    let (mut acc, mut digits, mut neg, mut ended) = (0i64, 0usize, false, false);
    let mut finish = |acc: i64, digits: usize, neg: bool| -> Result<(), String> {
        if digits == 0 {
            return Err(bad());
        }
        each(if neg {
            acc
        } else {
            acc.checked_neg().ok_or_else(beyond)?
        });
        count += 1;
        Ok(())
    };
    for &c in &b[from..] {
        match c {
            b'0'..=b'9' if !ended => {
                acc = acc
                    .checked_mul(10)
                    .and_then(|a| a.checked_sub(i64::from(c - b'0')))
                    .ok_or_else(beyond)?;
                digits += 1;
            }
            b'-' if digits == 0 && !neg && !ended => neg = true,
            b',' => {
                finish(acc, digits, neg)?;
                (acc, digits, neg, ended) = (0, 0, false, false);
            }
            c if c.is_ascii_whitespace() => ended = digits > 0 || neg,
            _ => return Err(bad()),
        }
    }
    finish(acc, digits, neg)?;
    Ok(count)
}

/// Calls `each` with every value of an array body, numbers and special
/// values alike (see [`special_value`]).
pub(super) fn for_each_value(b: &[u8], mut each: impl FnMut(f64)) -> Result<(), String> {
    for tok in tokens(b) {
        let tok = tok?;
        let v = if let Some(v) = parse_short_decimal(tok) {
            v
        } else if is_number(tok) {
            let v = std::str::from_utf8(tok)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .ok_or_else(|| not_a_value(tok))?;
            // An overflow, not a deliberate +Inf (which is spelled out).
            if !v.is_finite() {
                return Err(format!(
                    "value `{}` is beyond the 64-bit float range",
                    String::from_utf8_lossy(&tok[..tok.len().min(60)])
                ));
            }
            v
        } else {
            special_value(tok).ok_or_else(|| not_a_value(tok))?
        };
        each(v);
    }
    Ok(())
}

fn not_a_value(tok: &[u8]) -> String {
    format!(
        "value `{}` is neither a number nor null, NaN, +Inf or -Inf",
        String::from_utf8_lossy(&tok[..tok.len().min(60)])
    )
}

/// The special values VictoriaMetrics' import understands, bare or quoted,
/// in any case, with an optional sign: `nan`, `null`, `inf`, `infinity`.
/// NaN is the stale marker (see the module doc of `vm_json`).
pub(super) fn special_value(word: &[u8]) -> Option<f64> {
    let word = word
        .strip_prefix(b"\"")
        .and_then(|w| w.strip_suffix(b"\""))
        .unwrap_or(word);
    let (negative, rest) = match word.first() {
        Some(b'-') => (true, &word[1..]),
        Some(b'+') => (false, &word[1..]),
        _ => (false, word),
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        })
    } else if rest.eq_ignore_ascii_case(b"nan") || rest.eq_ignore_ascii_case(b"null") {
        Some(f64::from_bits(STALE_NAN_BITS))
    } else {
        None
    }
}

/// Bytes a plain number may hold.
const NUMBER_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    t[b'.' as usize] = true;
    t[b'e' as usize] = true;
    t[b'E' as usize] = true;
    t[b'+' as usize] = true;
    t[b'-' as usize] = true;
    t
};

/// Count of the values and whether all are plain numbers, without parsing them.
fn scan_values(b: &[u8]) -> Result<(usize, bool), String> {
    // What servers print: digits, `.`, `-`, `e`, `E`, `+` and commas, a digit
    // before every comma and at the end (so no entry is empty). Checked
    // without branches per byte, so the compiler can do it in vectors.
    let last_is_digit = b.last().is_some_and(u8::is_ascii_digit);
    if last_is_digit && b[0] != b',' {
        let bytes_ok = b.iter().fold(true, |ok, &c| {
            ok & (c.is_ascii_digit() | matches!(c, b'.' | b'-' | b'e' | b'E' | b'+' | b','))
        });
        let commas_ok = b
            .windows(2)
            .fold(true, |ok, w| ok & ((w[1] != b',') | w[0].is_ascii_digit()));
        if bytes_ok && commas_ok {
            return Ok((memchr::memchr_iter(b',', b).count() + 1, true));
        }
    }
    // Plain numbers only (the usual case): one pass over the bytes.
    if memchr::memchr3(b'n', b'N', b'"', b).is_none() {
        let (mut count, mut digit, mut ok) = (0usize, false, true);
        for &c in b {
            if c == b',' {
                ok &= digit;
                count += 1;
                digit = false;
            } else if c.is_ascii_digit() {
                digit = true;
            } else if !NUMBER_BYTES[c as usize] && !c.is_ascii_whitespace() {
                ok = false;
            }
        }
        let empty = b.iter().all(u8::is_ascii_whitespace);
        if ok && (digit || empty) {
            return Ok((if empty { 0 } else { count + 1 }, true));
        }
        // Fall through for the precise error.
    }
    let mut count = 0usize;
    let mut plain = true;
    for tok in tokens(b) {
        let tok = tok?;
        count += 1;
        if is_number(tok) {
            continue;
        }
        if special_value(tok).is_none() {
            return Err(not_a_value(tok));
        }
        plain = false;
    }
    Ok((count, plain))
}

/// A JSON-ish number: digits with an optional sign, fraction and exponent.
fn is_number(t: &[u8]) -> bool {
    let mut i = 0;
    if matches!(t.first(), Some(b'-' | b'+')) {
        i = 1;
    }
    let mut digits = 0;
    let mut seen_e = false;
    while i < t.len() {
        match t[i] {
            b'0'..=b'9' => digits += 1,
            b'.' if !seen_e => {}
            b'e' | b'E' if digits > 0 && !seen_e => {
                seen_e = true;
                if matches!(t.get(i + 1), Some(b'-' | b'+')) {
                    i += 1;
                }
            }
            _ => return false,
        }
        i += 1;
    }
    digits > 0
}

/// Comma-separated tokens of an array body, whitespace trimmed.
fn tokens(b: &[u8]) -> impl Iterator<Item = Result<&[u8], String>> {
    let empty = b.iter().all(u8::is_ascii_whitespace);
    b.split(|&c| c == b',')
        .take(if empty { 0 } else { usize::MAX })
        .map(|t| {
            let t = t.trim_ascii();
            if t.is_empty() {
                Err("an array has an empty entry (`,,` or a trailing comma)".to_string())
            } else {
                Ok(t)
            }
        })
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.b.get(self.i).copied();
        self.i += 1;
        c
    }

    fn expect(&mut self, c: u8, msg: &str) -> Result<(), String> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(msg.to_string())
        }
    }

    /// After a member: `,` (more follow) or `}` (the object ends).
    fn next_is_end(&mut self) -> Result<bool, String> {
        match self.next() {
            Some(b',') => Ok(false),
            Some(b'}') => Ok(true),
            _ => Err(format!("expected `,` or `}}` at byte {}", self.i - 1)),
        }
    }

    /// A quoted key, raw (escapes left as they are: no key we look for has any).
    fn key(&mut self) -> Result<&'a [u8], String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err("expected a quoted key".into());
        }
        let start = self.i + 1;
        self.string()?;
        Ok(&self.b[start..self.i - 1])
    }

    /// Skips a string; the cursor is on its opening quote.
    fn string(&mut self) -> Result<(), String> {
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => self.i += 1,
            }
        }
        Err("unterminated string".into())
    }

    /// Skips the value of an unknown key, nested ones included, by counting
    /// brackets (not recursing); stops before the `,` or `}` that follows.
    fn skip_value(&mut self) -> Result<(), String> {
        let start = self.i;
        let mut depth = 0usize;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => break,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        break;
                    }
                }
                b',' if depth == 0 => break,
                _ => {}
            }
            self.i += 1;
        }
        if depth > 0 {
            return Err("a value is not closed".into());
        }
        if self.b[start..self.i].trim_ascii().is_empty() {
            return Err(format!("a key has no value at byte {start}"));
        }
        Ok(())
    }

    /// `{ ... }` with strings skipped; returns it braces included.
    fn object(&mut self) -> Result<&'a [u8], String> {
        let start = self.i;
        if self.b.get(self.i) != Some(&b'{') {
            return Err("`metric` must be an object".into());
        }
        let mut depth = 0usize;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(&self.b[start..self.i]);
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        Err("`metric` is not closed".into())
    }

    /// `[ ... ]` of scalars; returns the inside.
    fn array(&mut self) -> Result<&'a [u8], String> {
        if self.b.get(self.i) != Some(&b'[') {
            return Err("`values` and `timestamps` must be arrays".into());
        }
        self.i += 1;
        let start = self.i;
        while let Some(k) = memchr::memchr3(b']', b'"', b'[', &self.b[self.i..]) {
            self.i += k;
            match self.b[self.i] {
                b'"' => self.string()?,
                b']' => {
                    let inside = &self.b[start..self.i];
                    self.i += 1;
                    return Ok(inside);
                }
                _ => return Err("arrays must hold numbers, not arrays or objects".into()),
            }
        }
        Err("an array is not closed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_and_vmgather_orders() {
        let l = scan_line(
            br#"{"metric":{"__name__":"up","job":"a"},"values":[1,0.5,NaN],"timestamps":[3,1,2]}"#,
        )
        .unwrap();
        assert_eq!(
            (l.samples, l.min_ts, l.max_ts, l.plain_values),
            (3, 1, 3, false)
        );
        assert_eq!(l.values, b"1,0.5,NaN");
        assert_eq!(l.unknown_key, None);
        assert_eq!(
            parse_metric(l.metric).unwrap().to_string(),
            r#"up{job="a"}"#
        );
        let g = scan_line(br#" { "metric" : {"job":"a}","__name__":"x"} , "timestamps":[5] , "values":[ -1.5e3 ] } "#).unwrap();
        assert_eq!((g.samples, g.plain_values), (1, true));
        assert_eq!(parse_metric(g.metric).unwrap().get("job"), Some("a}"));
        for special in ["null", "\"Infinity\"", "-Inf", "\"nan\""] {
            let line =
                format!(r#"{{"metric":{{"__name__":"x"}},"values":[{special}],"timestamps":[1]}}"#);
            assert!(
                !scan_line(line.as_bytes()).unwrap().plain_values,
                "{special}"
            );
        }
    }

    #[test]
    fn other_keys_are_skipped_and_reported() {
        let l = scan_line(
            br#"{"a":{"b":[1,{"c":"]}"}]},"metric":{"__name__":"x"},"z\"q":null,"values":[1],"timestamps":[1],"w":[[]]}"#,
        )
        .unwrap();
        assert_eq!(l.unknown_key, Some(&b"a"[..]));
        assert_eq!((l.samples, l.values), (1, &b"1"[..]));
        let e = scan_line(br#"{"a":,"metric":{}}"#).unwrap_err();
        assert!(e.contains("no value"), "{e}");
        for bad in [r#"{"a":[1,"metric":{}}"#, r#"{"a":"#, r#"{"a":[[["#] {
            assert!(scan_line(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_cover_the_whole_64_bit_range() {
        let mut seen = Vec::new();
        let n = for_each_timestamp(b"-9223372036854775808, 9223372036854775807 ,0,-1", |t| {
            seen.push(t)
        })
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(seen, [i64::MIN, i64::MAX, 0, -1]);
        for bad in [
            &b"9223372036854775808"[..],
            b"-9223372036854775809",
            b"1.5",
            b"1 2",
            b"-",
            b"1,",
        ] {
            assert!(for_each_timestamp(bad, |_| {}).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fast_timestamps_agree_with_the_strict_reader() {
        let cases: [&[u8]; 18] = [
            b"1700000000000,1700000015000,1700000030000",
            b"1700000000000, 1700000015000",
            b"1,2,-3,4",
            b"0",
            b"999999999999999999,1000000000000000000",
            b"9223372036854775807,9223372036854775808",
            b"12,,3",
            b"12,",
            b",12",
            b"12 ,3",
            b"12,3 ",
            b" 12,3",
            b"1.5,2",
            b"00000000000000000000000001,2",
            b"1,2,x",
            b"-9223372036854775808,1",
            b"12345678,123456789,1234567,87654321,0,7",
            b"1700000000000,17000000000001,170000000,1",
        ];
        for case in cases {
            let (mut fast, mut strict) = (Vec::new(), Vec::new());
            let a = for_each_timestamp(case, |t| fast.push(t));
            let b = timestamps_strict(case, 0, &mut |t| strict.push(t));
            assert_eq!(a, b, "{}", String::from_utf8_lossy(case));
            if a.is_ok() {
                assert_eq!(fast, strict, "{}", String::from_utf8_lossy(case));
            }
        }
    }

    #[test]
    fn quick_value_check_agrees_with_the_token_reader() {
        for case in [
            "1,2.5,-3,4e5,6E-7,+8",
            "1,,2",
            ",1",
            "1,",
            "-,1",
            "1.,2",
            "e,1",
            "1,.",
            "1, 2",
            " 1,2",
            "1,NaN",
            "1,\"2\"",
            "1,x",
            "7",
            "",
        ] {
            let b = case.as_bytes();
            let quick = scan_values(b);
            let mut count = 0usize;
            let mut plain = true;
            let tokens: Result<(usize, bool), String> = tokens(b)
                .try_for_each(|t| {
                    let t = t?;
                    count += 1;
                    if !is_number(t) {
                        special_value(t).ok_or_else(|| not_a_value(t))?;
                        plain = false;
                    }
                    Ok::<(), String>(())
                })
                .map(|()| (count, plain));
            assert_eq!(quick, tokens, "{case}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_line() {
        let cases = [
            ("[1,2]", "JSON object"),
            (
                r#"{"metric":{"__name__":"x"},"values":[1]}"#,
                "`timestamps` is missing",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1,2],"timestamps":[1]}"#,
                "2 entries",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[],"timestamps":[]}"#,
                "empty",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1.5]}"#,
                "not all integers",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1,2],"timestamps":[1 2,3]}"#,
                "not all integers",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1,-],"timestamps":[1,2]}"#,
                "neither a number",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":["a"],"timestamps":[1]}"#,
                "neither a number",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1,],"timestamps":[1]}"#,
                "empty entry",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1]} x"#,
                "after the object",
            ),
            (
                r#"{"metric":{"__name__":"x"},"metric":{},"values":[1],"timestamps":[1]}"#,
                "appears twice",
            ),
            (r#"{"metric":{"__name__":"x""#, "not closed"),
        ];
        for (line, want) in cases {
            let e = scan_line(line.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        assert!(parse_metric(br#"{"__name__":1}"#).is_err());
        assert!(parse_metric(br#"{"a":"b"} x"#).is_err());
    }

    #[test]
    fn fast_scan_agrees_with_the_strict_one() {
        for line in [
            r#"{"metric":{"__name__":"up","job":"a]"},"values":[1,0.5,2e3],"timestamps":[3,1,2]}"#,
            r#"{"metric":{"__name__":"up"},"values":[NaN],"timestamps":[3]}"#,
            r#"{"metric":{"__name__":"up"},"timestamps":[3],"values":[null]}"#,
            r#"{"metric":{"__name__":"up"},"values":["Infinity"],"timestamps":[3]}"#,
            "{\"metric\":{\"__name__\":\"up\"},\"values\":[1],\"timestamps\":[3]}\r",
        ] {
            let (f, s) = (
                scan_line_fast(line.as_bytes()).unwrap(),
                scan_line(line.as_bytes()).unwrap(),
            );
            assert_eq!(
                (f.metric, f.values, f.timestamps),
                (s.metric, s.values, s.timestamps),
                "{line}"
            );
            assert_eq!(
                (f.samples, f.plain_values),
                (s.samples, s.plain_values),
                "{line}"
            );
        }
        let bad = r#"{"metric":{"__name__":"up"},"values":[1,2],"timestamps":[3]}"#;
        assert!(scan_line_fast(bad.as_bytes())
            .unwrap_err()
            .contains("2 entries"));
    }
}
