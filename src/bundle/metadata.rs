//! `metadata.json` and `README.txt` of a bundle.
//!
//! The fields vmgather writes come first and keep its names and meaning
//! (`metrics_count` is the number of lines of `metrics.jsonl`, times are RFC
//! 3339); ours follow and are optional when reading, so bundles of either
//! tool load in both. The obfuscation mapping is never part of it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObfuscationSummary {
    pub ips: bool,
    pub jobs: bool,
    /// Label names whose values were hashed (names only).
    pub labels: Vec<String>,
    pub dropped_labels: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BundleMetadata {
    // vmgather's fields.
    #[serde(default)]
    pub export_id: String,
    #[serde(default)]
    pub export_date: String,
    #[serde(default)]
    pub time_range: TimeRange,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Lines of `metrics.jsonl` (one series per window each).
    #[serde(default)]
    pub metrics_count: u64,
    #[serde(default)]
    pub obfuscated: bool,
    // spillway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spillway_version: Option<String>,
    /// `single`, `cluster`, `vmauth`, `prometheus` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_flavour: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// `export` or `query_range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_seconds: Option<f64>,
    /// The series selectors (matcher values hidden when obfuscated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_count: Option<u64>,
    /// Hex SHA-256 of `metrics.jsonl`; `spillway import` checks it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obfuscation: Option<ObfuscationSummary>,
}

impl BundleMetadata {
    /// The time range in ms, when it parses.
    pub fn range_ms(&self) -> Option<(i64, i64)> {
        let p = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis())
        };
        Some((p(&self.time_range.start)?, p(&self.time_range.end)?))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("metadata serializes");
        v.push(b'\n');
        v
    }

    /// The human-readable companion, in the spirit of vmgather's.
    pub fn readme(&self) -> String {
        let mut r = String::new();
        r.push_str("VictoriaMetrics Metrics Export\n================================\n\n");
        r.push_str(&format!("Export ID: {}\n", self.export_id));
        r.push_str(&format!("Export Date: {}\n", self.export_date));
        r.push_str(&format!(
            "Time Range: {} to {}\n",
            self.time_range.start, self.time_range.end
        ));
        if let Some(f) = &self.source_flavour {
            r.push_str(&format!(
                "Source: {f}{}\n",
                self.source_version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default()
            ));
        }
        r.push_str("\nComponents Exported:\n");
        if self.components.is_empty() {
            r.push_str("  (none detected)\n");
        }
        for c in &self.components {
            r.push_str(&format!("  - {c}\n"));
        }
        r.push_str(&format!("\nTotal Metrics: {} lines", self.metrics_count));
        if let Some(s) = self.samples_count {
            r.push_str(&format!(", {s} samples"));
        }
        r.push('\n');
        if self.obfuscated {
            r.push_str("\n[WARN] OBFUSCATION APPLIED\n");
            if let Some(o) = &self.obfuscation {
                if o.ips {
                    r.push_str("Instance hosts and IP addresses were replaced by 777.777.X.Y (ports kept).\n");
                }
                if o.jobs {
                    r.push_str("Job names were replaced by <component>-job-<n>.\n");
                }
                if !o.labels.is_empty() {
                    r.push_str(&format!(
                        "Values of these labels were replaced by salted hashes: {}.\n",
                        o.labels.join(", ")
                    ));
                }
            }
            r.push_str("The mapping is not part of this archive.\n");
        }
        if let Some(o) = &self.obfuscation {
            if !o.dropped_labels.is_empty() {
                r.push_str(&format!(
                    "Dropped labels: {}.\n",
                    o.dropped_labels.join(", ")
                ));
            }
        }
        r.push_str("\nFiles in this archive:\n");
        r.push_str("  - metrics.jsonl: Exported metrics in JSONL format (VictoriaMetrics /api/v1/export lines)\n");
        r.push_str("  - metadata.json: Export metadata\n");
        r.push_str("  - README.txt: This file\n");
        if let Some(s) = &self.metrics_sha256 {
            r.push_str(&format!("\nSHA-256 of metrics.jsonl: {s}\n"));
        }
        r.push_str("\nLoad it into VictoriaMetrics with `spillway import <this file> --url http://victoria-metrics:8428`\n");
        r.push_str("(or vmgather's importer); the archive's own SHA-256 is in the .sha256 file beside it.\n");
        r.push_str("\nFor support inquiries, send this archive to VictoriaMetrics Support Team.\n");
        r.push_str(&format!(
            "Generated by spillway v{}\n",
            self.spillway_version
                .as_deref()
                .unwrap_or(env!("CARGO_PKG_VERSION"))
        ));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmgather_metadata() {
        // As vmgather's archive writer prints it (Go time.Time, indent 2).
        let text = r#"{
  "export_id": "export-1700000000",
  "export_date": "2023-11-14T22:13:20.123456789Z",
  "time_range": {"start": "2023-11-14T21:13:20Z", "end": "2023-11-14T22:13:20Z"},
  "components": ["vmstorage"],
  "jobs": ["vmstorage-prod"],
  "metrics_count": 42,
  "obfuscated": false,
  "vmgather_version": "1.2.3"
}"#;
        let m: BundleMetadata = serde_json::from_str(text).unwrap();
        assert_eq!(m.metrics_count, 42);
        assert_eq!(
            m.range_ms(),
            Some((1_700_000_000_000 - 3_600_000, 1_700_000_000_000))
        );
        assert!(m.metrics_sha256.is_none());
    }

    #[test]
    fn writes_vmgather_fields_first() {
        let m = BundleMetadata {
            export_id: "x".into(),
            spillway_version: Some("0.1.0".into()),
            ..Default::default()
        };
        let text = String::from_utf8(m.to_json()).unwrap();
        let id = text.find("export_id").unwrap();
        let ours = text.find("spillway_version").unwrap();
        for f in [
            "export_date",
            "time_range",
            "components",
            "jobs",
            "metrics_count",
            "obfuscated",
        ] {
            let at = text.find(f).unwrap();
            assert!(id <= at && at < ours, "{f}");
        }
        assert!(m.readme().contains("Export ID: x"));
    }
}
