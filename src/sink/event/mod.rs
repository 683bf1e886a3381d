//! Event destinations of `spillway run`: SIEMs and log pipelines that take
//! one **event** per exported sample instead of time series. Uses `client`
//! (the one HTTP client and retry policy), `model`, and nothing above `sink`.
//!
//! # The event
//!
//! Every sample becomes one event, the same shape for every type:
//!
//! ```json
//! {"time": "2024-05-01T12:00:00.000Z", "metric": "ALERTS", "value": 1,
//!  "labels": {"alertname": "DiskFull", "instance": "db1:9100"},
//!  "group": "disk", "rule": "DiskFull", "type": "alert",
//!  "annotations": {"summary": "db1 disk 97% full"}, "resolved": false}
//! ```
//!
//! `time` is RFC 3339 in UTC with milliseconds; `metric` is `__name__`
//! (absent from `labels`); `value` is a JSON number, or `"NaN"`, `"+Inf"`,
//! `"-Inf"` (Prometheus' JSON spelling) for what JSON cannot hold, and `null`
//! for a stale marker, whose event says `"resolved": true` (the breach
//! ended). `type` is `recording`, `alert`, `capture` or `received` (data
//! that came in over the write API, which has no group or rule: those are
//! `""`). `annotations` are an alert rule's annotations rendered with
//! vmalert's template functions (`{}` for everything else).
//!
//! `fields:` renames (`time: "@timestamp"`) or drops (`group: ""`) fields;
//! `event_labels_as_fields: true` writes the labels as top-level fields
//! instead of under `labels` (a label named like a kept field is written as
//! `label_<name>`).
//!
//! # Layout
//!
//! [`shape`] writes events; [`config`] holds the checked settings of each
//! type; [`encode`] turns series into queue blocks of ready-to-send items
//! (one item per event, in the type's wire form: an RFC 5424 message, a
//! bulk action and document, a HEC object, a JSON line, ...);
//! [`transport`] delivers items, one module per type ([`syslog`],
//! [`relp`], [`elasticsearch`], [`splunk`], [`webhook`], [`file`]); refused
//! items go to the [`dead_letter`] file. [`schedule`](crate::sink::schedule)
//! is shared with metric destinations.
//!
//! A queue block is a sequence of items, each `u32` little-endian length
//! then bytes, so blocks merge by concatenation and a sender can deliver,
//! retry or dead-letter items one by one.

pub mod config;
pub mod dead_letter;
pub mod elasticsearch;
pub mod encode;
pub mod file;
pub mod relp;
pub mod shape;
pub mod splunk;
pub mod syslog;
pub mod template;
pub mod transport;
pub mod webhook;

pub use config::{EventConfig, Target};
pub use shape::{EventShape, Field};

/// The event destination types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Syslog,
    Elasticsearch,
    SplunkHec,
    Webhook,
    File,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Syslog,
        EventKind::Elasticsearch,
        EventKind::SplunkHec,
        EventKind::Webhook,
        EventKind::File,
    ];

    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "syslog" => Some(EventKind::Syslog),
            "elasticsearch" | "opensearch" => Some(EventKind::Elasticsearch),
            "splunk_hec" => Some(EventKind::SplunkHec),
            "webhook" => Some(EventKind::Webhook),
            "file" => Some(EventKind::File),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Syslog => "syslog",
            EventKind::Elasticsearch => "elasticsearch",
            EventKind::SplunkHec => "splunk_hec",
            EventKind::Webhook => "webhook",
            EventKind::File => "file",
        }
    }

    /// Whether the type speaks HTTP through [`crate::client::Client`].
    pub fn is_http(self) -> bool {
        matches!(
            self,
            EventKind::Elasticsearch | EventKind::SplunkHec | EventKind::Webhook
        )
    }
}

/// Largest item accepted in a block; a longer length prefix means damage.
pub const MAX_ITEM_BYTES: usize = 16 << 20;

/// Appends one item (length prefix, then what `write` puts) to `block`.
pub fn push_item(block: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = block.len();
    block.extend_from_slice(&[0; 4]);
    write(block);
    let len = (block.len() - at - 4) as u32;
    block[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The items of one or more concatenated blocks; `Err` names the offset of
/// a length prefix that does not fit (a damaged block).
pub fn split_items(block: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = block;
    let mut offset = 0usize;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(format!("truncated item header at byte {offset}"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_ITEM_BYTES || len > rest.len() - 4 {
            return Err(format!(
                "item at byte {offset} claims {len} bytes, more than the block holds"
            ));
        }
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
        offset += 4 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_damage_is_named() {
        let mut b = Vec::new();
        push_item(&mut b, |o| o.extend_from_slice(b"one"));
        push_item(&mut b, |o| o.extend_from_slice(b""));
        push_item(&mut b, |o| o.extend_from_slice("zwei\nü".as_bytes()));
        let items = split_items(&b).unwrap();
        assert_eq!(items, vec![&b"one"[..], b"", "zwei\nü".as_bytes()]);
        let mut twice = b.clone();
        twice.extend_from_slice(&b);
        assert_eq!(split_items(&twice).unwrap().len(), 6);
        b.truncate(b.len() - 1);
        assert!(split_items(&b).unwrap_err().contains("byte 11"));
    }

    #[test]
    fn kinds_parse() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            EventKind::parse("opensearch"),
            Some(EventKind::Elasticsearch)
        );
        assert_eq!(EventKind::parse("kafka"), None);
    }
}
