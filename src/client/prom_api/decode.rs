//! What the streaming reader of answers ([`super::stream`]) stands on: a
//! [`Read`] over the body's chunks that counts what it hands on against
//! `max_response_bytes`, and the serde forms of a series and its samples.
//! Runs on a blocking thread (see [`super`]).

use super::{ClientError, InstantAnswer};
use crate::model::value::parse_short_decimal;
use crate::model::{Labels, Sample, Series};
use bytes::Bytes;
use serde::de::{Deserializer, Visitor};
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What `max_response_bytes` bounds in a streamed answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Cap {
    /// The answer is collected whole (instant queries).
    Whole,
    /// The answer is handed over series by series (range queries).
    PerSeries,
}

pub(super) struct Limit {
    pub(super) max: u64,
    pub(super) per_series: bool,
    /// Shown in the error.
    pub(super) url: String,
}

pub(super) struct ChannelReader {
    pub(super) rx: mpsc::Receiver<Result<Bytes, ClientError>>,
    pub(super) current: Bytes,
    pub(super) error: Option<ClientError>,
    /// Bytes handed to the parser since the start (or the last series).
    pub(super) counted: Arc<AtomicU64>,
    pub(super) limit: Limit,
    /// The body ended (cleanly) and the parser asked for more.
    pub(super) ended: bool,
}

impl ChannelReader {
    pub(super) fn new(
        rx: mpsc::Receiver<Result<Bytes, ClientError>>,
        counted: Arc<AtomicU64>,
        limit: Limit,
    ) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            error: None,
            counted,
            limit,
            ended: false,
        }
    }

    /// Why a scan of this body failed: the body's own error, the body
    /// ending before the JSON did (cut short: worth asking again), or an
    /// answer that is not the JSON the API documents.
    pub(super) fn scan_error(&mut self, url: String, reason: String) -> ClientError {
        match self.error.take() {
            Some(e) => e,
            None if self.ended => ClientError::CutShort { url, reason },
            None => ClientError::Decode { url, reason },
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.counted.load(Ordering::Relaxed) > self.limit.max {
            let e = ClientError::TooLarge {
                url: self.limit.url.clone(),
                limit: self.limit.max,
                per_series: self.limit.per_series,
            };
            let msg = e.to_string();
            self.error = Some(e);
            return Err(std::io::Error::other(msg));
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => {
                    self.ended = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        self.counted.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(serde::Deserialize)]
pub(super) struct RawSeries {
    #[serde(default)]
    metric: Labels,
    #[serde(default)]
    values: Vec<(f64, Value)>,
    #[serde(default)]
    value: Option<(f64, Value)>,
}

impl RawSeries {
    pub(super) fn into_series(self) -> Series {
        let samples = self
            .values
            .iter()
            .chain(self.value.iter())
            .map(|(ts, v)| Sample::new(to_ms(*ts), v.0))
            .collect();
        Series::new(self.metric, samples)
    }
}

/// The `result` of an answer, read straight from the text: series objects
/// for vector and matrix, `[time, "value"]` for scalar and string, nothing
/// for `null`. No `serde_json::Value` tree in between: for answers of tens
/// of thousands of series that tree was a tenth of `spillway run`'s CPU.
#[derive(Default)]
struct ResultItems(Vec<ResultItem>);

enum ResultItem {
    Series(RawSeries),
    Number(f64),
    Text(String),
}

impl<'de> serde::Deserialize<'de> for ResultItems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultItems;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of series or [time, \"value\"]")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ResultItems, E> {
                Ok(ResultItems::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<ResultItems, E> {
                Ok(ResultItems::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResultItems, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<ResultItem>()? {
                    items.push(item);
                }
                Ok(ResultItems(items))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for ResultItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a series object, a time or a value string")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ResultItem, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                <RawSeries as serde::Deserialize>::deserialize(d).map(ResultItem::Series)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ResultItem, E> {
                Ok(ResultItem::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A sample value parsed straight from the transient string serde hands us:
/// no allocation per point, which dominates long range answers.
struct Value(f64);

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample value string such as \"1.5\" or \"NaN\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
                parse_value(v).map(Value).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// Prometheus sends values as strings: `"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`.
pub fn parse_value(v: &str) -> Result<f64, String> {
    parse_value_bytes(v.as_bytes())
}

/// [`parse_value`] of a string's bytes, not yet checked as UTF-8: the
/// plain decimals servers print are read without that check or the
/// general float parser ([`parse_short_decimal`]).
pub(crate) fn parse_value_bytes(v: &[u8]) -> Result<f64, String> {
    if let Some(value) = parse_short_decimal(v) {
        return Ok(value);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| format!("invalid sample value {:?}", String::from_utf8_lossy(v)))
}

/// An instant-query answer as JSON gives it (vector, scalar, string or
/// matrix: VictoriaLogs answers matrices to some stats queries, plus
/// `stats`); [`InstantEnvelope::into_answer`] checks it. Apart so the
/// client reads the JSON inside its retry (a body cut short is asked for
/// again) and checks what it read once.
#[derive(serde::Deserialize)]
pub(crate) struct InstantEnvelope {
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<InstantData>,
    #[serde(default)]
    stats: Option<InstantStats>,
}

#[derive(serde::Deserialize)]
struct InstantData {
    #[serde(default, rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: ResultItems,
}

#[derive(serde::Deserialize)]
struct InstantStats {
    #[serde(default, rename = "seriesFetched")]
    series_fetched: Option<serde_json::Value>,
}

impl InstantEnvelope {
    pub(crate) fn into_answer(self) -> Result<InstantAnswer, String> {
        if self.status.as_deref() == Some("error") {
            return Err(format!(
                "the server answered status \"error\" ({}): {}",
                self.error_type.unwrap_or_default(),
                self.error.unwrap_or_default()
            ));
        }
        let mut series = Vec::new();
        if let Some(data) = self.data {
            let items = data.result.0;
            match data.result_type.as_str() {
                "scalar" | "string" => match items.as_slice() {
                    [ResultItem::Number(ts), ResultItem::Text(v)] => series.push(Series::new(
                        Labels::new(),
                        vec![Sample::new(to_ms(*ts), parse_value(v)?)],
                    )),
                    _ => {
                        return Err(format!(
                            "a {} result is [time, \"value\"]",
                            data.result_type
                        ))
                    }
                },
                _ => {
                    for item in items {
                        match item {
                            ResultItem::Series(r) => series.push(r.into_series()),
                            _ => {
                                return Err("a vector or matrix result holds series objects".into())
                            }
                        }
                    }
                }
            }
        }
        // VictoriaMetrics sends the count as a string ("12"); accept a number too.
        let series_fetched = self
            .stats
            .and_then(|s| s.series_fetched)
            .and_then(|v| match v {
                serde_json::Value::String(s) => s.parse().ok(),
                serde_json::Value::Number(n) => n.as_u64(),
                _ => None,
            });
        Ok(InstantAnswer {
            series,
            series_fetched,
        })
    }
}
