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
//! status applies.
//!
//! Bounded by `dead_letter_max_bytes` ([`DEFAULT_MAX_BYTES`] unless
//! configured): once the file would pass half of it, it is renamed to
//! `<destination>.1.jsonl` (fsynced, the directory too) and a new one
//! starts; while that rotated file is still there, a live file at half the
//! cap is full. Refused events that no longer fit are not written: they
//! are counted in `spillway_samples_dropped_total{reason="dead_letter_full"}`
//! instead of `spillway_dead_letter_total`. spillway never deletes a
//! dead-letter file: re-send what one holds and delete it by hand, which
//! makes room again. Keeping the oldest lines (rather than overwriting
//! them) keeps the evidence of when refusals started.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest reason kept per line.
const MAX_REASON: usize = 2000;

/// `dead_letter_max_bytes` unless configured: both files together.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug)]
pub struct DeadLetter {
    path: PathBuf,
    destination: String,
    max_bytes: u64,
}

/// What [`DeadLetter::write`] did with the refused events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub written: u64,
    /// Left out: the files were at `dead_letter_max_bytes`.
    pub dropped: u64,
}

/// One refused event.
#[derive(Clone, Copy)]
pub struct Refused<'a> {
    pub event: &'a [u8],
    pub status: Option<u16>,
    pub reason: &'a str,
}

impl DeadLetter {
    pub fn new(path: &Path, destination: &str, max_bytes: u64) -> DeadLetter {
        DeadLetter {
            path: path.to_path_buf(),
            destination: destination.to_string(),
            max_bytes,
        }
    }

    /// `<destination>.1.jsonl`: the file rotated aside.
    pub fn rotated_path(&self) -> PathBuf {
        self.path.with_extension("1.jsonl")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs what fits (see the module docs); blocking.
    pub fn write(&self, refused: &[Refused<'_>]) -> std::io::Result<Written> {
        let mut done = Written::default();
        if refused.is_empty() {
            return Ok(done);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let half = (self.max_bytes / 2).max(1);
        let mut size = file_len(&self.path)?;
        let mut out = Vec::new();
        let mut now = Vec::new();
        super::shape::write_rfc3339_ms(&mut now, crate::model::time::now_ms());
        for r in refused {
            let at = out.len();
            self.line(&mut out, &now, r);
            let len = (out.len() - at) as u64;
            if size + len > half && size > 0 && !self.rotated_path().exists() {
                self.append(&out[..at])?;
                out.drain(..at);
                self.rotate()?;
                size = 0;
            }
            if size + len > half {
                out.truncate(out.len() - len as usize);
                done.dropped += 1;
                continue;
            }
            size += len;
            done.written += 1;
        }
        self.append(&out)?;
        Ok(done)
    }

    fn line(&self, out: &mut Vec<u8>, now: &[u8], r: &Refused<'_>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(now);
        out.extend_from_slice(b"\",\"destination\":");
        super::shape::json_str(out, &self.destination);
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
        super::shape::json_str(out, reason);
        out.extend_from_slice(b",\"event\":");
        let trimmed = r.event.trim_ascii();
        if serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok() {
            out.extend_from_slice(trimmed);
        } else {
            super::shape::json_str(out, &String::from_utf8_lossy(r.event));
        }
        out.extend_from_slice(b"}\n");
    }

    fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(lines)?;
        f.sync_data()
    }

    fn rotate(&self) -> std::io::Result<()> {
        std::fs::rename(&self.path, self.rotated_path())?;
        match self.path.parent() {
            Some(dir) => crate::fsutil::sync_dir(dir),
            None => Ok(()),
        }
    }
}

fn file_len(path: &Path) -> std::io::Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_hold_the_reason_and_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeadLetter::new(&dir.path().join("dl/x.jsonl"), "siem", DEFAULT_MAX_BYTES);
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

    /// The files rotate at half the cap and never pass it; what does not fit
    /// is counted, not written; deleting the rotated file makes room again.
    #[test]
    fn rotates_at_half_the_cap_and_drops_beyond_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeadLetter::new(&dir.path().join("x.jsonl"), "siem", 2000);
        let event = vec![b'e'; 200];
        let reason = "r".repeat(10);
        let one = Refused {
            event: &event,
            status: Some(400),
            reason: &reason,
        };
        let line_len = {
            let mut l = Vec::new();
            d.line(&mut l, b"2024-05-01T12:00:00.000Z", &one);
            l.len() as u64
        };
        let per_file = 1000 / line_len;
        let batch: Vec<Refused<'_>> = vec![one; 10];
        let w = d.write(&batch).unwrap();
        assert_eq!(w.written, 2 * per_file, "{w:?}");
        assert_eq!(w.dropped, 10 - 2 * per_file);
        let live = std::fs::metadata(d.path()).unwrap().len();
        let rotated = std::fs::metadata(d.rotated_path()).unwrap().len();
        assert!(live <= 1000 && rotated <= 1000, "{live} {rotated}");
        assert_eq!(d.write(&batch[..1]).unwrap().dropped, 1);
        // Handled by hand: room for a new file again.
        std::fs::remove_file(d.rotated_path()).unwrap();
        assert_eq!(d.write(&batch[..1]).unwrap().written, 1);
        let lines = std::fs::read_to_string(d.path()).unwrap().lines().count() as u64;
        assert_eq!(lines, 1);
        // A line longer than half the cap never fits.
        let huge = vec![b'h'; 1500];
        let w = d
            .write(&[Refused {
                event: &huge,
                ..one
            }])
            .unwrap();
        assert_eq!((w.written, w.dropped), (0, 1));
    }
}
