//! `type: splunk_hec`: Splunk's HTTP Event Collector ("Format events for
//! HTTP Event Collector", "HTTP Event Collector REST API endpoints" and
//! "About HTTP Event Collector Indexer Acknowledgment" in the Splunk
//! Enterprise docs). Items are HEC JSON objects, concatenated into one
//! request body posted to `<url>/services/collector/event` with
//! `Authorization: Splunk <token>`.
//!
//! - `format: event`: `{"time": 1714564800.123, "host": ..., "source": ...,
//!   "sourcetype": ..., "index": ..., "event": <the event>}`;
//! - `format: metric`: `{"time": ..., "event": "metric", ..., "fields":
//!   {"metric_name:<metric>": <value>, "<label>": "<value>", "group": ..., "rule": ..., "type": ...}}`.
//!   A metric needs a number, so stale markers and non-finite values are
//!   not sent in this format (counted as `relabel`: not for this destination).
//!
//! Answers: `200 {"text":"Success","code":0}` delivered; `503` (code 9,
//! server busy) and `429` retried; other 4xx (`403` code 4 invalid token,
//! `400` code 6 invalid data format, ...) go to the dead-letter file with
//! the answer. An answer naming one event (`{"text":"Invalid data
//! format","code":6,"invalid-event-number":N}`: HEC indexed the events
//! before N, not N and not those after it) counts the events before N
//! delivered, dead-letters event N with the answer, and sends the rest
//! again at once. With `ack: true` every request carries
//! `X-Splunk-Request-Channel`, the answer's `ackId` is polled at
//! `/services/collector/ack` (`{"acks":[id]}` → `{"acks":{"id":true}}`),
//! and the batch leaves the queue only once acknowledged; one not
//! acknowledged within `ack_timeout` is sent again.

use super::config::{HecFormat, SplunkConfig};
use super::shape::{json_str, EventRef, EventShape};
use std::io::Write as _;

pub const EVENT_PATH: &str = "/services/collector/event";
pub const ACK_PATH: &str = "/services/collector/ack";

/// Appends one HEC object; `false` when the event cannot be sent in this
/// format (see the module docs).
pub fn write_item(
    out: &mut Vec<u8>,
    cfg: &SplunkConfig,
    shape: &EventShape,
    ev: &EventRef<'_>,
) -> bool {
    let v = ev.sample.value;
    if cfg.format == HecFormat::Metric && (ev.resolved() || !v.is_finite()) {
        return false;
    }
    let ts = ev.sample.timestamp_ms;
    let sign = if ts < 0 { "-" } else { "" };
    let _ = write!(
        out,
        "{{\"time\":{sign}{}.{:03}",
        ts.unsigned_abs() / 1000,
        ts.unsigned_abs() % 1000
    );
    for (key, tpl) in [
        ("host", &cfg.host),
        ("source", &cfg.source),
        ("sourcetype", &cfg.sourcetype),
        ("index", &cfg.index),
    ] {
        let Some(t) = tpl else { continue };
        let text = t.render(ev).unwrap_or_else(|e| {
            tracing::warn!("splunk_hec {key}: {e}; sent without it");
            String::new()
        });
        if !text.is_empty() {
            let _ = write!(out, ",\"{key}\":");
            json_str(out, &text);
        }
    }
    match cfg.format {
        HecFormat::Event => {
            out.extend_from_slice(b",\"event\":");
            shape.write_json(out, ev);
        }
        HecFormat::Metric => {
            out.extend_from_slice(b",\"event\":\"metric\",\"fields\":{");
            json_str(out, &format!("metric_name:{}", ev.metric()));
            out.push(b':');
            crate::model::value::push_value(out, v);
            for l in ev.labels.without_name() {
                out.push(b',');
                json_str(out, &l.name);
                out.push(b':');
                json_str(out, &l.value);
            }
            for (k, val) in [
                ("group", &*ev.origin.group),
                ("rule", &*ev.origin.rule),
                ("type", ev.origin.kind.as_str()),
            ] {
                if ev.labels.get(k).is_none() && !val.is_empty() {
                    let _ = write!(out, ",\"{k}\":");
                    json_str(out, val);
                }
            }
            out.push(b'}');
        }
    }
    out.push(b'}');
    true
}

/// The `ackId` of a success answer (`None` when the answer has none).
pub fn ack_id(body: &[u8]) -> Result<Option<u64>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        code: Option<i64>,
        #[serde(default, rename = "ackId")]
        ack_id: Option<u64>,
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the HEC answer is not JSON: {e}"))?;
    match a.code {
        Some(0) | None => Ok(a.ack_id),
        Some(c) => Err(format!("the HEC answered code {c}")),
    }
}

/// The `invalid-event-number` of a refusal (0-based within the request).
pub fn invalid_event_number(body: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "invalid-event-number")]
        n: usize,
    }
    let start = body.iter().position(|&b| b == b'{')?;
    serde_json::from_slice::<Answer>(&body[start..])
        .ok()
        .map(|a| a.n)
}

/// Whether the ack answer says `id` was indexed.
pub fn acked(body: &[u8], id: u64) -> Result<bool, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the HEC ack answer is not JSON: {e}"))?;
    Ok(v.get("acks")
        .and_then(|a| a.get(id.to_string()))
        .and_then(|b| b.as_bool())
        .unwrap_or(false))
}

/// A channel id as HEC wants it: a GUID.
pub fn new_channel() -> String {
    let r = || fastrand::u64(..);
    let (a, b) = (r(), r());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExportKind, Labels, Origin, Sample};
    use crate::sink::event::template::{no_funcs, EventTemplate};
    use std::time::Duration;

    fn cfg(format: HecFormat) -> SplunkConfig {
        SplunkConfig {
            format,
            index: Some(EventTemplate::parse("main", no_funcs).unwrap()),
            sourcetype: None,
            source: Some(EventTemplate::parse("spillway:{{ .group }}", no_funcs).unwrap()),
            host: Some(EventTemplate::parse("{{ .labels.instance }}", no_funcs).unwrap()),
            ack: false,
            ack_timeout: Duration::from_secs(1),
            ack_poll_interval: Duration::from_millis(10),
            channel: new_channel(),
        }
    }

    #[test]
    fn event_and_metric_formats() {
        let l = Labels::from_pairs([("__name__", "cpu"), ("instance", "db1")]);
        let o = Origin::rule(ExportKind::Recording, "g", "r");
        let ev = EventRef {
            sample: Sample::new(1_714_564_800_123, 0.5),
            labels: &l,
            origin: &o,
            annotations: None,
        };
        let mut out = Vec::new();
        assert!(write_item(
            &mut out,
            &cfg(HecFormat::Event),
            &EventShape::default(),
            &ev
        ));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], 1714564800.123);
        assert_eq!(v["host"], "db1");
        assert_eq!(v["source"], "spillway:g");
        assert_eq!(v["index"], "main");
        assert_eq!(v["event"]["metric"], "cpu");
        out.clear();
        assert!(write_item(
            &mut out,
            &cfg(HecFormat::Metric),
            &EventShape::default(),
            &ev
        ));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"], "metric");
        assert_eq!(v["fields"]["metric_name:cpu"], 0.5);
        assert_eq!(v["fields"]["instance"], "db1");
        let stale = EventRef {
            sample: Sample::stale(0),
            ..ev
        };
        assert!(!write_item(
            &mut out,
            &cfg(HecFormat::Metric),
            &EventShape::default(),
            &stale
        ));
    }

    #[test]
    fn answers() {
        assert_eq!(ack_id(br#"{"text":"Success","code":0}"#).unwrap(), None);
        assert_eq!(
            ack_id(br#"{"text":"Success","code":0,"ackId":7}"#).unwrap(),
            Some(7)
        );
        assert!(ack_id(br#"{"text":"Invalid token","code":4}"#).is_err());
        assert!(acked(br#"{"acks":{"7":true}}"#, 7).unwrap());
        assert!(!acked(br#"{"acks":{"7":false}}"#, 7).unwrap());
        assert_eq!(new_channel().len(), 36);
        let invalid = br#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#;
        assert_eq!(invalid_event_number(invalid), Some(3));
        assert_eq!(
            invalid_event_number(br#"{"text":"Invalid token","code":4}"#),
            None
        );
    }
}
