//! The dead-letter file of an event destination: events the receiver
//! refused for good (an Elasticsearch item answered 400, a webhook's 4xx,
//! a HEC `invalid data format`, ...) are appended to
//! `<storage.path>/dead-letter/<destination>.jsonl`, one JSON line each,
//! fsynced before they leave the queue, and counted in
//! `spillway_dead_letter_total{destination}`:
//!
//! ```json
//! {"time":"2024-05-01T12:00:01.000Z","destination":"siem","status":400,"reason":"mapper_parsing_exception: ...","event":{...}}
//! ```
//!
//! `event` is the event as it would have been sent (JSON, or a string for
//! syslog messages and templated bodies); `status` is `null` when no HTTP
//! status applies. The file is never rotated or trimmed by spillway:
//! re-send what it holds and delete it by hand.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest reason kept per line.
const MAX_REASON: usize = 2000;

#[derive(Clone, Debug)]
pub struct DeadLetter {
    path: PathBuf,
    destination: String,
}

/// One refused event.
pub struct Refused<'a> {
    pub event: &'a [u8],
    pub status: Option<u16>,
    pub reason: &'a str,
}

impl DeadLetter {
    pub fn new(path: &Path, destination: &str) -> DeadLetter {
        DeadLetter {
            path: path.to_path_buf(),
            destination: destination.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs; blocking.
    pub fn write(&self, refused: &[Refused<'_>]) -> std::io::Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = Vec::new();
        let mut now = Vec::new();
        super::shape::write_rfc3339_ms(&mut now, crate::model::time::now_ms());
        for r in refused {
            out.extend_from_slice(b"{\"time\":\"");
            out.extend_from_slice(&now);
            out.extend_from_slice(b"\",\"destination\":");
            super::shape::json_str(&mut out, &self.destination);
            match r.status {
                Some(s) => {
                    let _ = write!(out, ",\"status\":{s}");
                }
                None => out.extend_from_slice(b",\"status\":null"),
            }
            out.extend_from_slice(b",\"reason\":");
            let mut reason = r.reason;
            if reason.len() > MAX_REASON {
                let mut cut = MAX_REASON;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason = &reason[..cut];
            }
            super::shape::json_str(&mut out, reason);
            out.extend_from_slice(b",\"event\":");
            let trimmed = r.event.trim_ascii();
            if serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok() {
                out.extend_from_slice(trimmed);
            } else {
                super::shape::json_str(&mut out, &String::from_utf8_lossy(r.event));
            }
            out.extend_from_slice(b"}\n");
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&out)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_hold_the_reason_and_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeadLetter::new(&dir.path().join("dl/x.jsonl"), "siem");
        d.write(&[
            Refused {
                event: br#"{"a":1}"#,
                status: Some(400),
                reason: "bad",
            },
            Refused {
                event: b"<13>1 - msg",
                status: None,
                reason: "too big",
            },
        ])
        .unwrap();
        let text = std::fs::read_to_string(d.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"]["a"], 1);
        assert_eq!(lines[0]["status"], 400);
        assert_eq!(lines[1]["event"], "<13>1 - msg");
        assert_eq!(lines[1]["destination"], "siem");
    }
}
