//! `type: elasticsearch` (Elasticsearch and OpenSearch): the `_bulk` API.
//! An item is one action line and one document line; a request is the
//! items of a batch, optionally gzip-compressed, sent as
//! `application/x-ndjson` to `<url>/_bulk` (`?pipeline=` when set).
//!
//! The answer is read per item (Elasticsearch's "Bulk API" reference,
//! "Response body"): `{"errors": bool, "items": [{"<op>": {"status": 201, ...}}, ...]}`
//! in request order. 2xx items are delivered; items answered 429 or 5xx
//! are sent again on their own (with backoff); any other failed item goes to
//! the dead-letter file with its `error.type` and `error.reason`. A `200`
//! with `"errors": true` is therefore never taken for "all delivered", and
//! an answer that cannot be read is retried whole.

use super::config::{ElasticsearchConfig, OpType};
use super::shape::{civil_from_days, EventRef, EventShape};
use std::io::Write as _;

/// Appends the item (action and document, each with its newline).
pub fn write_item(
    out: &mut Vec<u8>,
    cfg: &ElasticsearchConfig,
    shape: &EventShape,
    ev: &EventRef<'_>,
) {
    let _ = write!(out, "{{\"{}\":{{\"_index\":", cfg.op_type.as_str());
    if cfg.index.contains('%') {
        // Consecutive events mostly share their hour: expand once per hour.
        thread_local! {
            static LAST: std::cell::RefCell<(String, i64, String)> = Default::default();
        }
        let hour = ev.sample.timestamp_ms.div_euclid(3_600_000);
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != cfg.index || last.1 != hour || last.2.is_empty() {
                *last = (
                    cfg.index.clone(),
                    hour,
                    expand_index(&cfg.index, ev.sample.timestamp_ms),
                );
            }
            super::shape::json_str(out, &last.2);
        });
    } else {
        super::shape::json_str(out, &cfg.index);
    }
    out.extend_from_slice(b"}}\n");
    shape.write_json(out, ev);
    out.push(b'\n');
}

/// The index name for an event at `ts_ms`: `%Y`, `%m`, `%d`, `%H` (UTC)
/// and `%%` are replaced; anything else is kept.
pub fn expand_index(pattern: &str, ts_ms: i64) -> String {
    if !pattern.contains('%') {
        return pattern.to_string();
    }
    let secs = ts_ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let h = secs.rem_euclid(86_400) / 3600;
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Checks an index pattern: only the documented `%` codes, and a name
/// Elasticsearch accepts (lowercase, none of `\/*?"<>| ,#`, not `_`/`-`/`+` first).
pub fn check_index(pattern: &str, op: OpType) -> Result<(), String> {
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd' | 'H' | '%') => {}
                other => {
                    return Err(format!(
                        "unknown date code %{} in {pattern:?}; use %Y, %m, %d, %H or %%",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            }
        }
    }
    let sample = expand_index(pattern, 0);
    if sample.is_empty() {
        return Err("the index name is empty".into());
    }
    if sample.starts_with(['_', '-', '+']) {
        return Err(format!("{pattern:?} must not start with _, - or +"));
    }
    if let Some(bad) = sample
        .chars()
        .find(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(*c))
    {
        return Err(format!(
            "{pattern:?} contains {bad:?}; index names are lowercase without \\ / * ? \" < > | space , # :"
        ));
    }
    let _ = op;
    Ok(())
}

/// What one item of a bulk answer said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemResult {
    Delivered,
    /// 429 or 5xx: send again.
    Retry(u16),
    /// Any other failure: dead-letter with this status and reason.
    Refused(u16, String),
}

/// Reads a 2xx bulk answer for `n` items. `Err` when it cannot be read or
/// does not have one result per item (then the whole request is retried).
pub fn parse_answer(body: &[u8], n: usize) -> Result<Vec<ItemResult>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        errors: Option<bool>,
        #[serde(default)]
        items: Vec<std::collections::HashMap<String, Item>>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        status: u16,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Summary {
        #[serde(default)]
        errors: Option<bool>,
    }
    // Most answers say no item failed: then reading the items costs for nothing.
    let s: Summary = serde_json::from_slice(body)
        .map_err(|e| format!("the bulk answer is not JSON as documented: {e}"))?;
    if s.errors == Some(false) {
        return Ok(vec![ItemResult::Delivered; n]);
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the bulk answer is not JSON as documented: {e}"))?;
    let Some(errors) = a.errors else {
        return Err("the bulk answer has no \"errors\" field".into());
    };
    if a.items.len() != n {
        if !errors && a.items.is_empty() {
            // filter_path may have removed the items; with no errors all are in.
            return Ok(vec![ItemResult::Delivered; n]);
        }
        return Err(format!(
            "the bulk answer has {} item results for {n} items",
            a.items.len()
        ));
    }
    Ok(a.items
        .into_iter()
        .map(|m| {
            let Some(item) = m.into_values().next() else {
                return ItemResult::Retry(0);
            };
            match item.status {
                200..=299 => ItemResult::Delivered,
                429 | 500..=599 => ItemResult::Retry(item.status),
                s => ItemResult::Refused(s, describe_error(item.error.as_ref())),
            }
        })
        .collect())
}

fn describe_error(e: Option<&serde_json::Value>) -> String {
    match e {
        None => "no reason given".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => {
            let t = v.get("type").and_then(|t| t.as_str()).unwrap_or("error");
            let r = v.get("reason").and_then(|t| t.as_str()).unwrap_or("");
            let caused = v
                .get("caused_by")
                .and_then(|c| c.get("reason"))
                .and_then(|t| t.as_str())
                .map(|c| format!(" (caused by: {c})"))
                .unwrap_or_default();
            format!("{t}: {r}{caused}")
        }
    }
}

/// The document line of an item, for the dead-letter file.
pub fn document_of(item: &[u8]) -> &[u8] {
    match memchr::memchr(b'\n', item) {
        Some(i) => item[i + 1..].strip_suffix(b"\n").unwrap_or(&item[i + 1..]),
        None => item,
    }
}

/// gzip at a fast level: bulk bodies are large and compress well.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut e = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    let _ = e.write_all(body);
    e.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_patterns() {
        assert_eq!(
            expand_index("spillway-%Y.%m.%d", 1_714_564_800_000),
            "spillway-2024.05.01"
        );
        assert_eq!(expand_index("x-%H%%", 3_600_000), "x-01%");
        assert_eq!(
            expand_index("logs-spillway-default", 0),
            "logs-spillway-default"
        );
        assert!(check_index("spillway-%Y.%m.%d", OpType::Index).is_ok());
        assert!(check_index("Spillway", OpType::Index)
            .unwrap_err()
            .contains("'S'"));
        assert!(check_index("x-%j", OpType::Index)
            .unwrap_err()
            .contains("%j"));
        assert!(check_index("_x", OpType::Create).is_err());
    }

    #[test]
    fn per_item_answers() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"a","status":201}},
            {"create":{"_index":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_index":"a","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [value]","caused_by":{"type":"x","reason":"not a number"}}}},
            {"create":{"_index":"a","status":503,"error":{"type":"unavailable_shards_exception","reason":"no shard"}}}]}"#;
        let r = parse_answer(body, 4).unwrap();
        assert_eq!(r[0], ItemResult::Delivered);
        assert_eq!(r[1], ItemResult::Retry(429));
        assert_eq!(
            r[2],
            ItemResult::Refused(
                400,
                "mapper_parsing_exception: failed to parse field [value] (caused by: not a number)"
                    .into()
            )
        );
        assert_eq!(r[3], ItemResult::Retry(503));
        assert!(parse_answer(br#"{"errors":false,"items":[]}"#, 2).is_ok());
        assert!(parse_answer(br#"{"errors":true,"items":[]}"#, 2).is_err());
        assert!(parse_answer(b"<html>", 1).is_err());
        assert_eq!(document_of(b"{\"index\":{}}\n{\"a\":1}\n"), b"{\"a\":1}");
    }
}
