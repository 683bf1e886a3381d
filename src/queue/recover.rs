//! Open-time recovery: turns whatever an unclean stop left in the directory
//! into a consistent queue and says what it had to cut and what was lost.
//!
//! Order: remove temp files, read the meta file, list segments (refusing a
//! queue of the first format), delete the ones wholly below the cursor,
//! scan the rest (every header and every payload checksum from the cursor
//! on, resynchronising after damage), cut a torn tail off the last segment,
//! then account: every record the meta file says was pending and that is
//! not found intact is lost, counted with its samples. Nothing is ever
//! guessed back into existence: a record comes out of recovery only if both
//! its checksums match.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::meta::{self, CursorStatus, Meta, Span};
use super::segment::{self, Header, HEADER_LEN};
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
    /// Bytes cut off the end of the last segment. When they held records
    /// whose push had returned, those are in `corruptions` too; otherwise
    /// this is a write that was interrupted, nothing was lost.
    pub truncated_bytes: u64,
    /// Records that had been pushed successfully and are gone or damaged.
    pub corruptions: Vec<Corruption>,
    /// Sums over `corruptions`; they seed the queue's dropped totals.
    pub dropped_records: u64,
    pub dropped_samples: u64,
    /// Segments whose records were all acknowledged before the stop.
    pub removed_acked_segments: usize,
    pub removed_temp_files: usize,
    /// Pending records copied from a queue of the first format at this open.
    pub migrated_v1_records: u64,
}

impl RecoveryReport {
    /// True when open found nothing to repair and nothing to replay twice.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0
            && self.corruptions.is_empty()
            && !matches!(self.cursor, CursorStatus::Garbled { .. })
    }
}

/// One damaged spot: records that had been pushed and cannot be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub segment: PathBuf,
    /// Logical offset where the damage starts.
    pub offset: u64,
    /// Bytes given up from there (0 when the bytes themselves are gone).
    pub skipped_bytes: u64,
    /// Records lost. Exact when the meta file or an intact record before the
    /// damage gives the running counts; otherwise 1, a lower bound.
    pub records: u64,
    /// Samples lost; `None` only when `records` is a lower bound.
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
    /// The pending records, oldest first.
    pub entries: Vec<Entry>,
    /// Logical offset the next record gets.
    pub write_end: u64,
    /// `(seq, samples before)` the next record gets.
    pub next_counts: (u64, u64),
    /// The last segment when new records may be appended to it: it ends
    /// exactly at `write_end`.
    pub tail: Option<(u64, u64)>,
    /// The meta file as loaded, if it could be trusted.
    pub meta: Option<Meta>,
}

struct Listed {
    start: u64,
    path: PathBuf,
    len: u64,
}

/// A damaged spot seen by a scan, located in logical offsets.
struct Spot {
    segment: PathBuf,
    offset: u64,
    bytes: u64,
    reason: String,
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
        migrated_v1_records: 0,
    };
    let listed = list(dir, &mut report)?;
    let meta = match meta::load_meta(dir)? {
        Ok(m) => {
            report.cursor = CursorStatus::Loaded { offset: m.cursor };
            Some(m)
        }
        Err(status) => {
            report.cursor = status;
            None
        }
    };
    // Without a trusted meta file, everything still on disk is replayed.
    let cursor = meta.as_ref().map_or(0, |m| m.cursor);

    let mut segments = Vec::new();
    let mut found: Vec<Entry> = Vec::new();
    let mut spots: Vec<Spot> = Vec::new();
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
            let counts = meta.as_ref().map(|m| m.cursor_counts);
            len = scan_segment(
                seg,
                len,
                cursor,
                counts,
                is_last,
                &mut found,
                &mut spots,
                &mut report,
            )?;
        }
        segments.push((seg.start, len));
    }
    report.segments = segments.len();

    let last_end = segments.last().map(|&(start, len)| start + len);
    // Ids never go below the cursor, even when the segments behind it are
    // gone, so an old id can never name a new record.
    let write_end = last_end.unwrap_or(0).max(cursor);
    let tail_segment = segments.last().map(|&(start, _)| start);
    let (entries, next_counts) = account(
        found,
        meta.as_ref(),
        cursor,
        &spots,
        tail_segment.map(|s| (dir.join(segment::segment_file_name(s)), write_end)),
        &mut report,
    );
    for e in &entries {
        report.pending_records += 1;
        report.pending_samples += e.header.samples;
        report.pending_bytes += e.header.record_len();
    }
    for c in &report.corruptions {
        report.dropped_records += c.records;
        report.dropped_samples += c.samples.unwrap_or(0);
    }
    let tail = segments
        .last()
        .copied()
        .filter(|&(start, len)| start + len == write_end);
    Ok(Recovered {
        report,
        segments,
        entries,
        write_end,
        next_counts,
        tail,
        meta,
    })
}

/// Removes temp files and lists the segments, oldest first. A segment of
/// the first format (no sequence numbers) is refused, not guessed at.
fn list(dir: &Path, report: &mut RecoveryReport) -> Result<Vec<Listed>, QueueError> {
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
    for seg in &listed {
        let mut b = [0u8; 24];
        let file = File::open(&seg.path).map_err(io_err("open segment", &seg.path))?;
        if file.read_exact_at(&mut b, 0).is_ok() && segment::is_v1_header(&b) {
            return Err(QueueError::OldFormat {
                dir: dir.to_path_buf(),
            });
        }
    }
    Ok(listed)
}

/// Scans one segment, appends its intact records to `found` and its damaged
/// spots to `spots`, cuts a torn tail when it is the last segment, and
/// returns its length.
#[allow(clippy::too_many_arguments)]
fn scan_segment(
    seg: &Listed,
    len: u64,
    cursor: u64,
    cursor_counts: Option<(u64, u64)>,
    is_last: bool,
    found: &mut Vec<Entry>,
    spots: &mut Vec<Spot>,
    report: &mut RecoveryReport,
) -> Result<u64, QueueError> {
    let file = File::open(&seg.path).map_err(io_err("open segment", &seg.path))?;
    let verify_from = cursor.saturating_sub(seg.start).min(len);
    // Jump straight to the cursor when the record it names sits there, so
    // that acknowledged data is not read again; otherwise walk from the start.
    let from = if verify_from > 0 && record_at(&file, verify_from, len, cursor_counts) {
        verify_from
    } else {
        0
    };
    let scan =
        segment::scan(&file, from, len, verify_from).map_err(io_err("read segment", &seg.path))?;
    found.extend(scan.records.iter().map(|f| Entry {
        id: seg.start + f.pos,
        header: f.header,
    }));
    for d in &scan.damage {
        spots.push(Spot {
            segment: seg.path.clone(),
            offset: seg.start + d.pos,
            bytes: d.end - d.pos,
            reason: d.kind.describe(),
        });
    }
    let Some(stop) = scan.stop else {
        return Ok(len);
    };
    spots.push(Spot {
        segment: seg.path.clone(),
        offset: seg.start + stop.pos,
        bytes: len - stop.pos,
        reason: stop.kind.describe(),
    });
    if is_last {
        // Nothing valid follows: the writer appends here next, so the bytes
        // must go. Whether they held acknowledged pushes is for `account`.
        set_len(&seg.path, stop.pos)?;
        report.truncated_bytes += len - stop.pos;
        return Ok(stop.pos);
    }
    Ok(len)
}

/// Splits the intact records into pending ones and acknowledged ones,
/// counts every pending record that is missing, and returns the pending
/// records and the running counts the next push continues from.
fn account(
    found: Vec<Entry>,
    meta: Option<&Meta>,
    cursor: u64,
    spots: &[Spot],
    tail: Option<(PathBuf, u64)>,
    report: &mut RecoveryReport,
) -> (Vec<Entry>, (u64, u64)) {
    let retired: &[Span] = meta.map_or(&[], |m| &m.retired);
    let is_retired = |seq: u64| retired.iter().any(|s| s.seq.0 <= seq && seq < s.seq.1);
    let mut expect = meta.map(|m| m.cursor_counts);
    // Where the last intact record ended, to place a loss in the files.
    let mut after = cursor;
    let mut entries = Vec::new();
    for e in found {
        let h = e.header;
        if e.id < cursor || expect.is_some_and(|(seq, _)| h.seq < seq) {
            continue; // acknowledged before the stop
        }
        if let Some(from) = expect.filter(|&(seq, _)| h.seq > seq) {
            let lost = lost_between(from, (h.seq, h.samples_before), retired);
            report_loss(report, lost, spots, after, e.id, None);
        } else if expect.is_none() {
            // No meta file: the first intact record starts the count, and
            // damage before it can only be bounded.
            if let Some(s) = spots.iter().find(|s| s.offset < e.id) {
                report.corruptions.push(corruption(s, 1, None));
            }
        }
        expect = Some(h.next_counts());
        after = e.id + h.record_len();
        if !is_retired(h.seq) {
            entries.push(e);
        }
    }
    let end = meta.map(|m| m.end_counts);
    if let (Some(from), Some(to)) = (expect, end) {
        if to.0 > from.0 {
            let lost = lost_between(from, to, retired);
            let write_end = tail.as_ref().map_or(after, |t| t.1);
            report_loss(report, lost, spots, after, write_end, tail.map(|t| t.0));
        }
    }
    let next = match (expect, end) {
        (Some(a), Some(b)) => (a.0.max(b.0), a.1.max(b.1)),
        (a, b) => a.or(b).unwrap_or((0, 0)),
    };
    (entries, next)
}

/// Records and samples in `from..to` (running counts) that are not retired.
fn lost_between(from: (u64, u64), to: (u64, u64), retired: &[Span]) -> (u64, u64) {
    let (mut records, mut samples) = (to.0 - from.0, to.1.saturating_sub(from.1));
    for s in retired {
        let lo = s.seq.0.max(from.0);
        let hi = s.seq.1.min(to.0);
        if lo >= hi {
            continue;
        }
        // Each end of the overlap is an end of the span or of the gap, and
        // both carry their running sample counts.
        let s_lo = if lo == from.0 { from.1 } else { s.samples.0 };
        let s_hi = if hi == to.0 { to.1 } else { s.samples.1 };
        records -= hi - lo;
        samples = samples.saturating_sub(s_hi.saturating_sub(s_lo));
    }
    (records, samples)
}

/// Adds one corruption for records lost between logical offsets `from` and
/// `to`, named after the first damaged spot there. `tail` names the last
/// segment when the loss is at the end of the queue: records the meta file
/// says were pushed are not there, because the file was cut short.
fn report_loss(
    report: &mut RecoveryReport,
    (records, samples): (u64, u64),
    spots: &[Spot],
    from: u64,
    to: u64,
    tail: Option<PathBuf>,
) {
    if records == 0 {
        return;
    }
    let spot = spots.iter().find(|s| s.offset >= from && s.offset <= to);
    let mut c = match (spot, &tail) {
        (Some(s), _) => corruption(s, records, Some(samples)),
        (None, segment) => Corruption {
            segment: segment.clone().unwrap_or_default(),
            offset: from,
            skipped_bytes: to.saturating_sub(from),
            records,
            samples: Some(samples),
            reason: String::new(),
        },
    };
    if tail.is_some() {
        let cut = match spot {
            Some(s) => format!("cut inside a record ({})", s.reason),
            None => "cut at a record boundary".to_string(),
        };
        c.reason = format!(
            "the queue ends before records whose push had returned: the last segment was {cut}"
        );
    }
    report.corruptions.push(c);
}

fn corruption(s: &Spot, records: u64, samples: Option<u64>) -> Corruption {
    Corruption {
        segment: s.segment.clone(),
        offset: s.offset,
        skipped_bytes: s.bytes,
        records,
        samples,
        reason: s.reason.clone(),
    }
}

/// Whether an intact header sits at `pos`, and (when known) it is the one
/// the cursor names.
fn record_at(file: &File, pos: u64, len: u64, counts: Option<(u64, u64)>) -> bool {
    if len - pos < HEADER_LEN as u64 {
        return false;
    }
    let mut b = [0u8; HEADER_LEN];
    if file.read_exact_at(&mut b, pos).is_err() {
        return false;
    }
    match Header::decode(&b) {
        Ok(h) => counts.is_none_or(|(seq, _)| h.seq == seq),
        Err(_) => false,
    }
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
