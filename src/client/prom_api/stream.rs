//! The streaming reader of query answers: walks the envelope
//! (`{"status":..,"data":{"resultType":..,"result":[..]}}`, keys in any
//! order) over a window of the body and hands on each series of `result`
//! as soon as its closing brace arrives.
//!
//! Why not serde over the whole stream: `serde_json`'s reader-backed parser
//! goes byte by byte through `Read`, and a range answer is almost entirely
//! `[1700000000,"1.5"]` pairs; that parsing was a third of `spillway
//! export`'s CPU. A series in the form Prometheus and VictoriaMetrics print
//! is read here by [`fast_series`]; anything else (escapes, numbers for
//! values, exponents, duplicate keys, an error) goes to `serde_json` over
//! the series' own bytes, which decides exactly as it did before.

use super::decode::{parse_value, parse_value_bytes, to_ms, RawSeries};
use crate::model::value::leading_digits;
use crate::model::{Label, Labels, Sample, Series};
use serde::de::{DeserializeOwned, IgnoredAny};
use std::fmt;
use std::io::{self, Read};
use std::ops::Range;

/// How much is asked of the source per read.
const READ_SIZE: usize = 64 * 1024;

#[derive(Debug)]
pub(super) enum ScanError {
    /// The source failed (the body, or the size cap).
    Io(io::Error),
    /// The answer is not what the API documents.
    Json(String),
    /// The consumer stopped reading.
    Stopped,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ScanError::Io(e) => write!(f, "{e}"),
            ScanError::Json(e) => f.write_str(e),
            ScanError::Stopped => f.write_str("the consumer stopped reading"),
        }
    }
}

fn json(e: impl fmt::Display) -> ScanError {
    ScanError::Json(e.to_string())
}

/// Reads a query answer from `src`, giving each series to `send`, which
/// answers `false` once nobody wants more. A `"status":"error"` answer is
/// an error carrying the server's message.
pub(super) fn read_answer<R: Read>(
    src: R,
    mut send: impl FnMut(Series) -> bool,
) -> Result<(), ScanError> {
    read_envelope(src, |input| read_data(input, &mut send))
}

/// Reads a `/api/v1/series` answer from `src`, giving each label set of
/// `data` to `send` until it answers `false`.
pub(super) fn read_label_sets<R: Read>(
    src: R,
    mut send: impl FnMut(Labels) -> bool,
) -> Result<(), ScanError> {
    read_envelope(src, |input| {
        input.for_each_element("a label set of `data`", |input| {
            let labels = input.parse()?;
            if send(labels) {
                Ok(())
            } else {
                Err(ScanError::Stopped)
            }
        })
    })
}

/// The envelope of every API answer, `{"status":..,"error":..,"data":..}`
/// with keys in any order: `read_data` reads the first `data` as it comes,
/// and `"status":"error"` becomes an error naming the server's message.
fn read_envelope<R: Read>(
    src: R,
    mut read_data: impl FnMut(&mut Input<R>) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let mut input = Input::new(src);
    let mut status = None::<String>;
    let mut error = None::<String>;
    let mut data_read = false;
    input.expect(b'{')?;
    input.for_each_key(|input, key| {
        match key {
            "data" if !data_read => {
                data_read = true;
                read_data(input)?;
            }
            "status" => status = Some(input.parse()?),
            "error" => error = Some(input.parse()?),
            _ => input.skip()?,
        }
        Ok(())
    })?;
    if input.skip_ws()?.is_some() {
        return Err(json("trailing characters after the answer"));
    }
    match status.as_deref() {
        Some("error") => Err(json(format!(
            "the server answered status \"error\": {}",
            error.unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}

fn read_data<R: Read>(
    input: &mut Input<R>,
    send: &mut impl FnMut(Series) -> bool,
) -> Result<(), ScanError> {
    let mut result_type = String::new();
    input.expect(b'{')?;
    input.for_each_key(|input, key| match key {
        "resultType" => {
            result_type = input.parse()?;
            Ok(())
        }
        "result" if matches!(result_type.as_str(), "scalar" | "string") => {
            let (ts, value): (f64, String) = input.parse()?;
            let sample = Sample::new(to_ms(ts), parse_value(&value).map_err(json)?);
            deliver(send, Series::new(Labels::new(), vec![sample]))
        }
        "result" => read_result(input, send),
        _ => input.skip(),
    })
}

fn read_result<R: Read>(
    input: &mut Input<R>,
    send: &mut impl FnMut(Series) -> bool,
) -> Result<(), ScanError> {
    let mut points_hint = 0;
    input.for_each_element("a series of `result`", |input| {
        let series = input.series(&mut points_hint)?;
        deliver(send, series)
    })
}

fn deliver(send: &mut impl FnMut(Series) -> bool, series: Series) -> Result<(), ScanError> {
    if send(series) {
        Ok(())
    } else {
        Err(ScanError::Stopped)
    }
}

/// A window over the answer: `buf[pos..]` is read from the source but not
/// yet parsed.
struct Input<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl<R: Read> Input<R> {
    fn new(src: R) -> Self {
        Input {
            src,
            buf: Vec::with_capacity(4 * READ_SIZE),
            pos: 0,
            eof: false,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Appends what the source has next; `false` at its end. Parsed bytes
    /// are dropped once they are half the window, so a long value being
    /// collected is moved a bounded number of times.
    fn fill(&mut self) -> Result<bool, ScanError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_SIZE, 0);
        loop {
            match self.src.read(&mut self.buf[len..]) {
                Ok(n) => {
                    self.buf.truncate(len + n);
                    self.eof = n == 0;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(ScanError::Io(e));
                }
            }
        }
    }

    /// The next byte that is not whitespace, not consumed; `None` at the end.
    fn skip_ws(&mut self) -> Result<Option<u8>, ScanError> {
        loop {
            let unread = self.unread();
            match unread.iter().position(|b| !is_ws(*b)) {
                Some(i) => {
                    self.pos += i;
                    return Ok(Some(self.buf[self.pos]));
                }
                None => {
                    self.pos = self.buf.len();
                    if !self.fill()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn next_byte(&mut self) -> Result<Option<u8>, ScanError> {
        let b = self.skip_ws()?;
        if b.is_some() {
            self.pos += 1;
        }
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), ScanError> {
        match self.next_byte()? {
            Some(b) if b == want => Ok(()),
            Some(b) => Err(json(format!(
                "expected `{}`, found `{}`",
                want as char,
                b.escape_ascii()
            ))),
            None => Err(json(format!(
                "the answer ends where `{}` was expected",
                want as char
            ))),
        }
    }

    /// Calls `each` with every key of the object whose `{` was just read,
    /// the input standing at the key's value, then reads the closing `}`.
    fn for_each_key(
        &mut self,
        mut each: impl FnMut(&mut Self, &str) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if self.skip_ws()? == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key: String = self.parse()?;
            self.expect(b':')?;
            each(self, &key)?;
            match self.next_byte()? {
                Some(b',') => {}
                Some(b'}') => return Ok(()),
                _ => {
                    return Err(json(format!(
                        "expected `,` or `}}` after the value of {key:?}"
                    )))
                }
            }
        }
    }

    /// Calls `each` with the input at every element of the array that
    /// starts here (`what` names an element in errors), then reads its `]`.
    fn for_each_element(
        &mut self,
        what: &str,
        mut each: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.expect(b'[')?;
        if self.skip_ws()? == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            each(self)?;
            match self.next_byte()? {
                Some(b',') => {}
                Some(b']') => return Ok(()),
                _ => return Err(json(format!("expected `,` or `]` after {what}"))),
            }
        }
    }

    /// The bytes of the next JSON value, read whole into the window.
    fn take_value(&mut self) -> Result<Range<usize>, ScanError> {
        self.skip_ws()?;
        let mut scan = ValueScan::default();
        let len = loop {
            if let Some(len) = scan.resume(self.unread()) {
                break len;
            }
            if !self.fill()? {
                break scan.at_end();
            }
        };
        let start = self.pos;
        self.pos += len;
        Ok(start..start + len)
    }

    fn parse<T: DeserializeOwned>(&mut self) -> Result<T, ScanError> {
        let range = self.take_value()?;
        serde_json::from_slice(&self.buf[range]).map_err(json)
    }

    /// Skips a value, still checking that it is JSON.
    fn skip(&mut self) -> Result<(), ScanError> {
        self.parse::<IgnoredAny>().map(drop)
    }

    /// The next series of `result`. A series cut by the window's end is
    /// read again once the window has at least doubled, so each byte is
    /// parsed at most about twice however long the series.
    fn series(&mut self, points_hint: &mut usize) -> Result<Series, ScanError> {
        self.skip_ws()?;
        loop {
            match fast_series(self.unread(), *points_hint) {
                Fast::Done(series, len) => {
                    self.pos += len;
                    *points_hint = series.samples.len();
                    return Ok(series);
                }
                Fast::Other => break,
                Fast::Incomplete => {
                    // At least one more read, and no more reads than doubling
                    // needs: the per-series size cap counts what is read ahead.
                    let have = self.unread().len();
                    let target = (2 * have).max(have + 1);
                    if !self.fill_to(target)? {
                        break;
                    }
                }
            }
        }
        let raw: RawSeries = self.parse()?;
        Ok(raw.into_series())
    }

    /// Reads until `target` bytes are unread; `false` if the answer ends first.
    fn fill_to(&mut self, target: usize) -> Result<bool, ScanError> {
        while self.unread().len() < target {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Finds where a JSON value ends without parsing it, across reads:
/// strings, nesting (counted, never recursed), or a bare number or word.
#[derive(Default)]
struct ValueScan {
    offset: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ValueScan {
    /// The value's length once `bytes` (from the value's start) hold all
    /// of it; `None` when more is needed.
    fn resume(&mut self, bytes: &[u8]) -> Option<usize> {
        while let Some(&b) = bytes.get(self.offset) {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.offset + 1);
                    }
                }
                self.offset += 1;
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth == 0 => return Some(self.offset),
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.offset + 1);
                    }
                }
                b',' | b':' if self.depth == 0 => return Some(self.offset),
                b if self.depth == 0 && is_ws(b) => return Some(self.offset),
                _ => {}
            }
            self.offset += 1;
        }
        None
    }

    /// The length when the answer ends: all of it; a cut value then fails
    /// to parse and says so.
    fn at_end(&self) -> usize {
        self.offset
    }
}

/// What [`fast_series`] made of the window.
enum Fast {
    /// The series and how many bytes it took.
    Done(Series, usize),
    /// The window ends inside the series.
    Incomplete,
    /// Not the plain form: left to `serde_json`.
    Other,
}

/// Reads `{"metric":{"name":"value",..},"values":[[1700000000,"1.5"],..]}`
/// (or `"value":[..]`; keys in any order, whitespace allowed) when label
/// strings have no escapes, timestamps are plain decimals and values are
/// strings: the form servers print.
fn fast_series(bytes: &[u8], points_hint: usize) -> Fast {
    let mut cursor = Cursor { bytes, at: 0 };
    match cursor.series(points_hint) {
        Ok(series) => Fast::Done(series, cursor.at),
        Err(Miss::Incomplete) => Fast::Incomplete,
        Err(Miss::Other) => Fast::Other,
    }
}

enum Miss {
    Incomplete,
    Other,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&mut self) -> Result<u8, Miss> {
        while let Some(&b) = self.bytes.get(self.at) {
            if !is_ws(b) {
                return Ok(b);
            }
            self.at += 1;
        }
        Err(Miss::Incomplete)
    }

    fn byte(&mut self, want: u8) -> Result<(), Miss> {
        if self.peek()? != want {
            return Err(Miss::Other);
        }
        self.at += 1;
        Ok(())
    }

    /// `,` (true) or `close` (false).
    fn more(&mut self, close: u8) -> Result<bool, Miss> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Ok(true)
            }
            b if b == close => {
                self.at += 1;
                Ok(false)
            }
            _ => Err(Miss::Other),
        }
    }

    /// A string without escapes or control characters.
    fn plain_str(&mut self) -> Result<&'a str, Miss> {
        std::str::from_utf8(self.plain_bytes()?).map_err(|_| Miss::Other)
    }

    /// The bytes of a string without escapes or control characters, not
    /// yet checked as UTF-8.
    fn plain_bytes(&mut self) -> Result<&'a [u8], Miss> {
        self.byte(b'"')?;
        let rest = &self.bytes[self.at..];
        let len = memchr::memchr(b'"', rest).ok_or(Miss::Incomplete)?;
        let text = &rest[..len];
        if text.iter().any(|&b| b == b'\\' || b < 0x20) {
            return Err(Miss::Other);
        }
        self.at += len + 1;
        Ok(text)
    }

    fn series(&mut self, points_hint: usize) -> Result<Series, Miss> {
        let mut labels = None;
        let mut values = None;
        let mut value = None;
        self.byte(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                let key = self.plain_str()?;
                self.byte(b':')?;
                match key {
                    "metric" if labels.is_none() => labels = Some(self.labels()?),
                    "values" if values.is_none() => values = Some(self.points(points_hint)?),
                    "value" if value.is_none() => value = Some(self.point()?),
                    _ => return Err(Miss::Other),
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        let mut samples = values.unwrap_or_default();
        samples.extend(value);
        Ok(Series::new(labels.unwrap_or_default(), samples))
    }

    fn labels(&mut self) -> Result<Labels, Miss> {
        let mut pairs = Vec::new();
        self.byte(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Ok(Labels::new());
        }
        loop {
            let name = self.plain_str()?.to_owned();
            self.byte(b':')?;
            let value = self.plain_str()?.to_owned();
            pairs.push(Label { name, value });
            if !self.more(b'}')? {
                return Ok(Labels::from_vec(pairs));
            }
        }
    }

    fn points(&mut self, hint: usize) -> Result<Vec<Sample>, Miss> {
        let mut samples = Vec::with_capacity(hint);
        self.byte(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(samples);
        }
        loop {
            samples.push(self.point()?);
            if !self.more(b']')? {
                return Ok(samples);
            }
        }
    }

    /// `[1700000000.5,"1.5"]`.
    fn point(&mut self) -> Result<Sample, Miss> {
        self.byte(b'[')?;
        let timestamp_ms = self.timestamp_ms()?;
        self.byte(b',')?;
        let value = parse_value_bytes(self.plain_bytes()?).map_err(|_| Miss::Other)?;
        self.byte(b']')?;
        Ok(Sample::new(timestamp_ms, value))
    }

    /// Seconds as JSON `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, converted as
    /// `serde_json` (correctly rounded, `float_roundtrip`) and [`to_ms`]
    /// convert them; whole seconds of up to 12 digits exactly by integers.
    fn timestamp_ms(&mut self) -> Result<i64, Miss> {
        self.peek()?;
        let rest = &self.bytes[self.at..];
        // Whole seconds, what servers print: one pass over the digits.
        let (seconds, len) = leading_digits(rest);
        if (1..=12).contains(&len) && (len == 1 || rest[0] != b'0') {
            match rest.get(len) {
                None => return Err(Miss::Incomplete),
                Some(b'.' | b'-') => {}
                Some(_) => {
                    self.at += len;
                    return Ok(seconds as i64 * 1000);
                }
            }
        }
        let len = rest
            .iter()
            .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'.'))
            .ok_or(Miss::Incomplete)?;
        let text = &rest[..len];
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        let (whole, fraction) = match digits.iter().position(|&b| b == b'.') {
            Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
            None => (digits, None),
        };
        let plain = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
        if !plain(whole) || (whole.len() > 1 && whole[0] == b'0') || !fraction.is_none_or(plain) {
            return Err(Miss::Other);
        }
        self.at += len;
        if fraction.is_none() && whole.len() <= 12 {
            let seconds = whole.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
            let ms = seconds * 1000;
            return Ok(if text[0] == b'-' { -ms } else { ms });
        }
        // ASCII by the checks above.
        let text = std::str::from_utf8(text).map_err(|_| Miss::Other)?;
        text.parse::<f64>().map(to_ms).map_err(|_| Miss::Other)
    }
}

#[cfg(test)]
mod tests;
