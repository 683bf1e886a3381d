//! One VictoriaMetrics export line taken apart without parsing its samples:
//! the `metric` object, and the `values` and `timestamps` arrays as byte
//! ranges with their count, first and last timestamp.
//!
//! Gathering rewrites only the labels and copies the arrays as they came;
//! importing checks every line this way before anything is sent and sends
//! lines untouched unless their samples must change. Both accept the key
//! orders that exist in the wild (VictoriaMetrics prints `metric, values,
//! timestamps`; vmgather's fallback prints `metric, timestamps, values`) and
//! the special values of every version (`NaN`, `+Inf`, `null`, `"Infinity"`);
//! [`ScannedLine::plain_values`] tells whether the values can be passed on
//! to a VictoriaMetrics 1.79 import unchanged (it refuses `null` and strings).

use crate::model::labels::METRIC_NAME;
use crate::model::Labels;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::fmt;

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
}

/// Takes a line apart; the error says what is wrong (the caller adds the line number).
pub fn scan_line(line: &[u8]) -> Result<ScannedLine<'_>, String> {
    let mut p = Cursor { b: line, i: 0 };
    p.ws();
    p.expect(b'{', "a line must be a JSON object starting with `{`")?;
    let (mut metric, mut values, mut timestamps) = (None, None, None);
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
                return Err(format!(
                "unexpected key {:?}; an export line has only `metric`, `values` and `timestamps`",
                String::from_utf8_lossy(other)
            ))
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
        match p.next() {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => return Err(format!("expected `,` or `}}` at byte {}", p.i)),
        }
    }
    p.ws();
    if p.i != line.len() {
        return Err(format!("unexpected bytes after the object at byte {}", p.i));
    }
    let metric = metric.ok_or("`metric` is missing")?;
    let values = values.ok_or("`values` is missing")?;
    let timestamps = timestamps.ok_or("`timestamps` is missing")?;
    let (samples, min_ts, max_ts) = scan_timestamps(timestamps)?;
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
        let rest = line.strip_prefix(HEAD)?;
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
        })
    };
    match fast() {
        Some(l) => Ok(l),
        None => scan_line(line),
    }
}

/// The labels of a `metric` object; `__name__` is required, values must be strings.
pub fn parse_metric(metric: &[u8]) -> Result<Labels, String> {
    let mut de = serde_json::Deserializer::from_slice(metric);
    let labels = de
        .deserialize_map(LabelsVisitor)
        .map_err(|e| format!("`metric` is not an object of string labels: {e}"))?;
    if labels.get(METRIC_NAME).is_none() {
        return Err("`metric` has no `__name__`".into());
    }
    Ok(labels)
}

struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Labels;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of label names to string values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(16);
        while let Some(pair) = map.next_entry::<String, String>()? {
            pairs.push(pair);
        }
        Ok(Labels::from_pairs(pairs))
    }
}

/// A 64-bit identity of a label set (for counting distinct series).
pub fn series_hash(labels: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for l in labels {
        h.update(l.name.as_bytes());
        h.update(&[0]);
        h.update(l.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// Count, min and max of an array of integer milliseconds, in one pass.
fn scan_timestamps(b: &[u8]) -> Result<(usize, i64, i64), String> {
    let mut count = 0usize;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    let (mut acc, mut digits, mut neg, mut ended) = (0i64, 0usize, false, false);
    let bad = |b: &[u8]| {
        format!(
            "timestamps [{}] are not all integers in milliseconds",
            String::from_utf8_lossy(&b[..b.len().min(60)])
        )
    };
    let mut finish = |acc: i64, digits: usize, neg: bool| -> bool {
        if digits == 0 || digits > 18 {
            return false;
        }
        let v = if neg { -acc } else { acc };
        min = min.min(v);
        max = max.max(v);
        count += 1;
        true
    };
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok((0, 0, 0));
    }
    for &c in b {
        match c {
            b'0'..=b'9' if !ended => {
                acc = acc.wrapping_mul(10).wrapping_add(i64::from(c - b'0'));
                digits += 1;
            }
            b'-' if digits == 0 && !neg && !ended => neg = true,
            b',' => {
                if !finish(acc, digits, neg) {
                    return Err(bad(b));
                }
                (acc, digits, neg, ended) = (0, 0, false, false);
            }
            c if c.is_ascii_whitespace() => ended = digits > 0 || neg,
            _ => return Err(bad(b)),
        }
    }
    if !finish(acc, digits, neg) {
        return Err(bad(b));
    }
    Ok((count, min, max))
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

fn scan_values(b: &[u8]) -> Result<(usize, bool), String> {
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
        let word = tok
            .strip_prefix(b"\"")
            .and_then(|t| t.strip_suffix(b"\""))
            .unwrap_or(tok);
        let bare = word
            .strip_prefix(b"+")
            .or_else(|| word.strip_prefix(b"-"))
            .unwrap_or(word);
        let special = word.eq_ignore_ascii_case(b"null")
            || bare.eq_ignore_ascii_case(b"nan")
            || bare.eq_ignore_ascii_case(b"inf")
            || bare.eq_ignore_ascii_case(b"infinity");
        if !special {
            return Err(format!(
                "value {:?} is neither a number nor NaN/Inf/null",
                String::from_utf8_lossy(tok)
            ));
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

    fn key(&mut self) -> Result<&'a [u8], String> {
        self.expect(b'"', "expected a quoted key")?;
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i] != b'"' {
            if self.b[self.i] == b'\\' {
                return Err("keys with escapes are not export keys".into());
            }
            self.i += 1;
        }
        let key = &self.b[start..self.i];
        self.expect(b'"', "unterminated key")?;
        Ok(key)
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
    fn rejects_what_is_not_an_export_line() {
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
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1],"x":1}"#,
                "unexpected key",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1,],"timestamps":[1]}"#,
                "empty entry",
            ),
            (
                r#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1]} x"#,
                "after the object",
            ),
            (r#"{"metric":{"__name__":"x""#, "not closed"),
        ];
        for (line, want) in cases {
            let e = scan_line(line.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        assert!(parse_metric(br#"{"job":"a"}"#)
            .unwrap_err()
            .contains("__name__"));
        assert!(parse_metric(br#"{"__name__":1}"#).is_err());
    }

    #[test]
    fn fast_scan_agrees_with_the_strict_one() {
        for line in [
            r#"{"metric":{"__name__":"up","job":"a]"},"values":[1,0.5,2e3],"timestamps":[3,1,2]}"#,
            r#"{"metric":{"__name__":"up"},"values":[NaN],"timestamps":[3]}"#,
            r#"{"metric":{"__name__":"up"},"timestamps":[3],"values":[null]}"#,
            r#"{"metric":{"__name__":"up"},"values":["Infinity"],"timestamps":[3]}"#,
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

    #[test]
    fn hashes_ignore_label_order() {
        let a = parse_metric(br#"{"__name__":"x","a":"1","b":"2"}"#).unwrap();
        let b = parse_metric(br#"{"b":"2","__name__":"x","a":"1"}"#).unwrap();
        assert_eq!(series_hash(&a), series_hash(&b));
        let c = parse_metric(br#"{"__name__":"x","a":"12"}"#).unwrap();
        assert_ne!(series_hash(&a), series_hash(&c));
    }
}
