//! What a line of a bundle's `metrics.jsonl` must be, on top of the one
//! reader of VictoriaMetrics JSON lines ([`crate::codec::vm_json`]): only
//! the keys an export line has (`metric`, `values`, `timestamps`) and a
//! `__name__` in `metric`. Gathering rewrites the labels of lines taken
//! apart this way and copies their arrays as they came; importing and
//! verifying check every line with it; the reader adds nothing here but
//! these rules, and [`series_hash`] for counting distinct series.

use crate::codec::vm_json;
use crate::model::labels::METRIC_NAME;
use crate::model::Labels;

pub use vm_json::ScannedLine;

/// [`vm_json::scan_line`] refusing keys an export line does not have.
pub fn scan_line(line: &[u8]) -> Result<ScannedLine<'_>, String> {
    export_keys_only(vm_json::scan_line(line)?)
}

/// [`vm_json::scan_line_fast`] refusing keys an export line does not have.
pub fn scan_line_fast(line: &[u8]) -> Result<ScannedLine<'_>, String> {
    export_keys_only(vm_json::scan_line_fast(line)?)
}

fn export_keys_only(line: ScannedLine<'_>) -> Result<ScannedLine<'_>, String> {
    match line.unknown_key {
        Some(key) => Err(format!(
            "unexpected key {:?}; an export line has only `metric`, `values` and `timestamps`",
            String::from_utf8_lossy(key)
        )),
        None => Ok(line),
    }
}

/// The labels of a `metric` object; `__name__` is required, values must be strings.
pub fn parse_metric(metric: &[u8]) -> Result<Labels, String> {
    let labels = vm_json::parse_metric(metric)?;
    if labels.get(METRIC_NAME).is_none() {
        return Err("`metric` has no `__name__`".into());
    }
    Ok(labels)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_export_keys_and_a_name() {
        let extra = br#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1],"x":1}"#;
        for e in [
            scan_line(extra).unwrap_err(),
            scan_line_fast(extra).unwrap_err(),
        ] {
            assert!(e.contains("unexpected key \"x\""), "{e}");
        }
        let ok = br#"{"metric":{"__name__":"x"},"values":[1],"timestamps":[1]}"#;
        assert_eq!(scan_line_fast(ok).unwrap().samples, 1);
        assert!(parse_metric(br#"{"job":"a"}"#)
            .unwrap_err()
            .contains("__name__"));
        assert!(parse_metric(br#"{"__name__":1}"#).is_err());
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
