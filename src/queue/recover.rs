//! Open-time recovery: turns whatever an unclean stop left in the directory
//! into a consistent queue and says what it had to cut.
//!
//! Order: remove temp files, read the cursor, list segments, delete the ones
//! wholly below the cursor, scan the rest (every header and every payload
//! checksum from the cursor on), cut a torn tail off the last segment, and
//! note damage in older ones. Nothing is ever guessed back into existence:
//! a record comes out of recovery only if both its checksums match.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::meta::{self, CursorStatus};
use super::segment::{self, Header, StopKind, HEADER_LEN};
use super::{io_err, QueueError};

/// What [`super::Queue::open`] found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub cursor: CursorStatus,
    /// Segment files kept.
    pub segments: usize,
    pub pending_records: u64,
    pub pending_samples: u64,
    /// Header and payload bytes of the pending records.
    pub pending_bytes: u64,
    /// Bytes cut off the end of the last segment: a record whose write was
    /// interrupted. It was never reported as pushed, so it is not counted as
    /// dropped.
    pub truncated_bytes: u64,
    /// Damage found in records that had been pushed successfully.
    pub corruptions: Vec<Corruption>,
    /// Sums over `corruptions`; they seed the queue's dropped totals.
    pub dropped_records: u64,
    pub dropped_samples: u64,
    /// Segments whose records were all acknowledged before the stop.
    pub removed_acked_segments: usize,
    pub removed_temp_files: usize,
}

impl RecoveryReport {
    /// True when open found nothing to repair and nothing to replay twice.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0
            && self.corruptions.is_empty()
            && !matches!(self.cursor, CursorStatus::Garbled { .. })
    }
}

/// One damaged spot in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub segment: PathBuf,
    /// Logical offset (record id) where the damage starts.
    pub offset: u64,
    /// Bytes given up from there.
    pub skipped_bytes: u64,
    /// Records lost. When a header is unreadable the rest of its segment
    /// cannot be split into records, so this is 1: a lower bound.
    pub records: u64,
    /// Samples lost, when the header that carries the count was intact.
    pub samples: Option<u64>,
    pub reason: String,
}

/// A record recovery vouches for.
pub(crate) struct Entry {
    pub id: u64,
    pub header: Header,
}

pub(crate) struct Recovered {
    pub report: RecoveryReport,
    /// `(start, len)` of every kept segment, oldest first.
    pub segments: Vec<(u64, u64)>,
    pub entries: Vec<Entry>,
    /// Logical offset the next record gets.
    pub write_end: u64,
    /// The last segment when new records may be appended to it: it ends
    /// exactly at `write_end`.
    pub tail: Option<(u64, u64)>,
    pub cursor: u64,
}

struct Listed {
    start: u64,
    path: PathBuf,
    len: u64,
}

pub(crate) fn recover(dir: &Path) -> Result<Recovered, QueueError> {
    let mut report = RecoveryReport {
        cursor: CursorStatus::Missing,
        segments: 0,
        pending_records: 0,
        pending_samples: 0,
        pending_bytes: 0,
        truncated_bytes: 0,
        corruptions: Vec::new(),
        dropped_records: 0,
        dropped_samples: 0,
        removed_acked_segments: 0,
        removed_temp_files: 0,
    };

    let mut listed = Vec::new();
    for dirent in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let dirent = dirent.map_err(io_err("list", dir))?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = dirent.path();
        if name.ends_with(meta::TMP_SUFFIX) || crate::fsutil::temp_owner(name).is_some() {
            // A temp file is by construction not yet the real thing: its
            // rename never happened, so nothing refers to it.
            fs::remove_file(&path).map_err(io_err("remove temp file", &path))?;
            report.removed_temp_files += 1;
        } else if let Some(start) = segment::parse_segment_file_name(name) {
            let len = dirent.metadata().map_err(io_err("stat", &path))?.len();
            listed.push(Listed { start, path, len });
        }
    }
    listed.sort_by_key(|s| s.start);

    report.cursor = meta::load_cursor(dir)?;
    // Without a trusted cursor, everything still on disk is replayed.
    let cursor = match report.cursor {
        CursorStatus::Loaded { offset } => offset,
        _ => 0,
    };

    let mut segments = Vec::new();
    let mut entries = Vec::new();
    let count = listed.len();
    for (i, seg) in listed.iter().enumerate() {
        let is_last = i + 1 == count;
        let mut len = seg.len;
        if let Some(next) = listed.get(i + 1) {
            // Only a write that failed and could not be rolled back leaves a
            // segment running into its successor; those bytes were never
            // committed, and the successor owns that range of offsets.
            let room = next.start - seg.start;
            if len > room {
                set_len(&seg.path, room)?;
                len = room;
            }
        }
        let end = seg.start + len;
        if end <= cursor && !is_last {
            fs::remove_file(&seg.path).map_err(io_err("remove acknowledged segment", &seg.path))?;
            report.removed_acked_segments += 1;
            continue;
        }
        if end > cursor {
            len = scan_segment(seg, len, cursor, is_last, &mut entries, &mut report)?;
        }
        segments.push((seg.start, len));
    }
    report.segments = segments.len();

    for e in &entries {
        report.pending_records += 1;
        report.pending_samples += e.header.samples;
        report.pending_bytes += e.header.record_len();
    }
    for c in &report.corruptions {
        report.dropped_records += c.records;
        report.dropped_samples += c.samples.unwrap_or(0);
    }

    let last_end = segments.last().map(|&(start, len)| start + len);
    // Ids never go below the cursor, even when the segments behind it are
    // gone, so an old id can never name a new record.
    let write_end = last_end.unwrap_or(0).max(cursor);
    let tail = segments
        .last()
        .copied()
        .filter(|&(start, len)| start + len == write_end);
    let cursor = entries.first().map_or(write_end, |e| e.id);
    Ok(Recovered {
        report,
        segments,
        entries,
        write_end,
        tail,
        cursor,
    })
}

/// Scans one segment, appends its good records to `entries`, reports damage,
/// cuts a torn tail when it is the last segment, and returns its length.
fn scan_segment(
    seg: &Listed,
    len: u64,
    cursor: u64,
    is_last: bool,
    entries: &mut Vec<Entry>,
    report: &mut RecoveryReport,
) -> Result<u64, QueueError> {
    let file = File::open(&seg.path).map_err(io_err("open segment", &seg.path))?;
    let verify_from = cursor.saturating_sub(seg.start).min(len);
    // Jump straight to the cursor when a valid header sits there, so that
    // acknowledged data is not read again; otherwise walk from the start.
    let from = if verify_from > 0 && header_at(&file, verify_from, len) {
        verify_from
    } else {
        0
    };
    let scan =
        segment::scan(&file, from, len, verify_from).map_err(io_err("read segment", &seg.path))?;

    entries.extend(scan.records.iter().map(|f| Entry {
        id: seg.start + f.pos,
        header: f.header,
    }));
    for f in &scan.bad_payloads {
        report.corruptions.push(Corruption {
            segment: seg.path.clone(),
            offset: seg.start + f.pos,
            skipped_bytes: f.header.record_len(),
            records: 1,
            samples: Some(f.header.samples),
            reason: "payload checksum mismatch".to_string(),
        });
    }

    let Some(stop) = scan.stop else {
        return Ok(len);
    };
    if is_last {
        // Whatever stops the scan in the last segment is where the last write
        // was cut short: the writer appends here next, so the bytes must go.
        set_len(&seg.path, stop.pos)?;
        report.truncated_bytes += len - stop.pos;
        return Ok(stop.pos);
    }
    let (samples, reason) = match stop.kind {
        StopKind::ShortHeader => (None, "segment ends inside a record header".to_string()),
        StopKind::BadHeader(e) => (None, e.describe()),
        StopKind::PastEnd(h) => (
            Some(h.samples),
            "record runs past the end of its segment".to_string(),
        ),
        StopKind::BadPayloadAtEnd(h) => (Some(h.samples), "payload checksum mismatch".to_string()),
    };
    report.corruptions.push(Corruption {
        segment: seg.path.clone(),
        offset: seg.start + stop.pos,
        skipped_bytes: len - stop.pos,
        records: 1,
        samples,
        reason,
    });
    Ok(len)
}

fn header_at(file: &File, pos: u64, len: u64) -> bool {
    if len - pos < HEADER_LEN as u64 {
        return false;
    }
    let mut b = [0u8; HEADER_LEN];
    let mut f = file;
    f.seek(SeekFrom::Start(pos))
        .and_then(|_| f.read_exact(&mut b))
        .is_ok()
        && Header::decode(&b).is_ok()
}

fn set_len(path: &Path, len: u64) -> Result<(), QueueError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment", path))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(io_err("truncate segment", path))
}
