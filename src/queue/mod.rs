//! The crash-safe on-disk queue each destination sends from: bytes in, bytes
//! out. It uses nothing else in the crate but `fsutil` (a leaf on std, as
//! VictoriaMetrics' `lib/persistentqueue` uses only `lib/fs`); sinks put ready-to-send bodies in (encoded and
//! compressed already, so a replay rebuilds nothing) and acknowledge them
//! once the destination answered 2xx.
//!
//! # Constraints
//!
//! - At-least-once: a record whose push returned `Ok` survives any crash,
//!   `kill -9` included, until it is acknowledged or dropped for space. A
//!   crash may cause records to be sent again; it never skips one.
//! - Losses are counted, never silent: a record whose push returned `Ok` and
//!   that a damaged or cut file lost is counted with its samples in the
//!   damaged totals and named in the [`RecoveryReport`] (segment, offset,
//!   records, samples, why).
//! - Bounded: the segment files never exceed `max_disk_bytes`. When a push
//!   would pass it, [`OnFull`] decides: whole oldest segments go, with
//!   whatever they hold (acknowledged bytes, pending records, in-flight ones
//!   included), every dropped record and sample counted; or the push is
//!   refused with [`QueueError::Full`]. A record dropped while in flight
//!   counts as dropped even if its send then succeeds; its later `ack` is a
//!   no-op.
//! - One process per queue directory: an flock on `lock`, which dies with
//!   its process, so `kill -9` never leaves a queue that will not open.
//! - Records are opaque byte blocks of up to 4 GiB - 1 (typically 10 KiB to
//!   4 MiB) plus the number of samples they carry, so drops can be counted
//!   in samples, and a lane (0..=255) that lets several readers each take
//!   their own records in order.
//! - Unix only: reads are positional (`pread`) and durability leans on
//!   directory fsync.
//!
//! # Layout
//!
//! ```text
//! <dir>/lock                   flock; holds the owner's pid for error messages
//! <dir>/meta                   what was acknowledged and written (below)
//! <dir>/0000000000000000.seg   segment files, named by the logical offset of
//! <dir>/0000000000a00018.seg   their first byte (16 lowercase hex digits)
//! <dir>/*.tmp                  half-written replacements; removed at open
//! ```
//!
//! Records are numbered by logical byte offset: a segment named `S` holds
//! offsets `S..S+len`, and the next segment starts where the previous one
//! ended, so an id says both which file a record lives in and where. The id
//! of a record is the offset of its header; the cursor lives in the same
//! space. Gaps are allowed (after damage, or when the cursor is ahead of the
//! files), overlaps are not. Records are also counted: each header carries
//! its sequence number (records pushed before it) and the samples pushed
//! before it, so between any two intact records recovery knows exactly how
//! many records and samples lie, whatever happened to the bytes.
//!
//! # Record format
//!
//! A 40-byte header, then the payload. Little-endian:
//!
//! ```text
//! 0..2 magic "SW" | 2 version=2 | 3 lane | 4..8 payload len u32 | 8..16 samples u64 |
//! 16..24 seq u64 | 24..32 samples before u64 | 32..36 crc32(payload) | 36..40 crc32(bytes 0..36)
//! ```
//!
//! The header checksum covers the payload checksum, so together they cover
//! every byte. Keeping them apart means a damaged payload still has a
//! trustworthy length: recovery drops that one record and carries on. A
//! damaged header costs only the records it overlaps: the scan searches the
//! following bytes for the next intact header (magic, version, checksum, and
//! counts that can follow the last good record) and resumes there. A queue
//! of the first format (24-byte headers, no counts, a `cursor` file) is
//! migrated once at open: its pending records are copied into the current
//! format and the directory switched over crash-safely (see `migrate.rs`).
//!
//! # Meta file
//!
//! `meta` says, as of its last store: the cursor (offset, sequence number
//! and running sample count of the first record not yet acknowledged), the
//! end (the counts the next push gets), and the retired runs between them:
//! records acknowledged or dropped out of order, as sequence ranges with
//! their sample counts (at most 4096 runs, 128 KiB; past that the stored end
//! stops at the first run left out). Layout: `"SWMT" | version u8 | 3 zero
//! bytes | cursor u64 | cursor seq u64 | cursor samples u64 | end seq u64 |
//! end samples u64 | runs u32 | runs × 4 u64 | crc32`.
//!
//! So after a crash, only records acknowledged since the last store are sent
//! again, whatever order senders finished in; and every record that the meta
//! file calls pending and that is no longer intact on disk is a loss that
//! recovery counts, including records cut off the end of the last segment
//! at a record boundary, where the bytes say nothing.
//!
//! It is replaced atomically (`meta.tmp`, fsync, rename, directory fsync).
//! A segment file is deleted only once the stored cursor is past it (a
//! push dropping segments for room stores the meta first), so a segment
//! missing above the stored cursor is always damage.
//!
//! # Writing and reading
//!
//! A push appends to the newest segment and rolls to a new one once the
//! current one holds `segment_bytes` or more (so a segment exceeds it by at
//! most one record). The batch is fdatasync'ed before `push_batch` returns;
//! only then do its records become visible to readers. A failed push is
//! rolled back (the segment is cut to its previous length).
//!
//! `read_next` hands out the oldest record not yet handed out, up to
//! `max_in_flight` unacknowledged at once, so several senders can work in
//! parallel; `read_next_lane` does the same among the records of some
//! lanes only, so a sender that owns its lanes sees their records in push
//! order. `ack` retires one. `rewind` makes every in-flight record readable
//! again, for senders that went away without acknowledging. Each read
//! checks both checksums again; a record that fails is dropped and counted,
//! never returned.
//!
//! # Recovery (at open)
//!
//! - temp files are removed;
//! - a missing or garbled meta file means "replay from the oldest segment":
//!   duplicates, never loss (and losses can then be counted only between
//!   intact records);
//! - segments wholly below the cursor are deleted;
//! - every header and payload from the cursor on is checked, skipping over
//!   damage to the next intact header. In the last segment, bytes after
//!   which nothing valid follows are cut (`truncated_bytes`): a write that
//!   was interrupted, or damage;
//! - then the counts: every record the meta file calls pending that was not
//!   found intact is lost, and counted with its samples
//!   (`dropped_records`, `dropped_samples`, one [`Corruption`] per spot).
//!   A cut-off record whose push had not returned yet is not a loss. The
//!   meta file is stored again, so a loss is counted once.
//!
//! Opening therefore reads every pending byte once. That is a sequential
//! read of at most `max_disk_bytes`, traded for exact pending counts and
//! damage found at start rather than halfway through a replay.
//!
//! # Cost of the guarantee
//!
//! Per `push_batch`: one fdatasync for the whole batch, plus a file and a
//! directory fsync when it starts a segment. The meta file is stored (a
//! temp file of 56 bytes plus 32 per retired run, its fsync, a rename and a
//! directory fsync: about 3x a push on ext4) at most once per
//! `cursor_sync_interval`, by whichever push, ack or `flush` finds it due.
//! With an interval of zero every push and every ack stores it: nothing
//! acknowledged is ever sent again and every loss is counted, at about 4x
//! the cost of a bare push. With an interval (destinations use 1 s) a crash
//! re-sends at most that interval's acknowledged records, and a file cut
//! back at a record boundary loses uncounted at most the records pushed in
//! that interval (a disk that keeps its fsync promises never does that).
//! Per record: 40 header bytes on disk, 40 bytes in memory.
//!
//! # Concurrency
//!
//! Every method takes `&self`; share the queue in an `Arc` and call it from
//! `spawn_blocking`. Three locks, always taken in this order and never the
//! other way: `writer` (one push at a time, held across its fsync), then
//! `persisted` (one meta store at a time), then `state` (indexes and
//! counters, held for memory updates only, never across a read, write or
//! fsync). So a push waiting on fsync never delays a read or an ack.
//! Waiting for data: `wait_for_data` (a `Condvar`), or `set_notify_hook`
//! to wake an async task (e.g. `tokio::sync::Notify`).

mod meta;
mod migrate;
mod recover;
mod segment;
mod state;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use meta::CursorStatus;
pub use recover::{Corruption, RecoveryReport};

use segment::{Header, HEADER_LEN};
use state::{Entry, EntryState, LaneFilter, SegmentInfo, State, LANES};

/// Errors of the queue boundary. Callers match on them: `Io` is worth a
/// retry after the disk recovers, `Full` once records are acknowledged;
/// the others are not.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "queue directory {dir} is in use by {holder}; \
         stop that spillway, or give each instance its own storage.path"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error(
        "{what} of {bytes} bytes cannot fit in max_disk_bytes = {max_disk_bytes}; \
         raise max_disk_bytes or send smaller batches"
    )]
    TooLarge {
        what: &'static str,
        bytes: u64,
        max_disk_bytes: u64,
    },
    #[error(
        "queue is full: {needed} more bytes do not fit in max_disk_bytes = {max_disk_bytes} \
         until the destination takes what is pending"
    )]
    Full { needed: u64, max_disk_bytes: u64 },
    #[error(
        "queue directory {dir} was written by an older spillway (record format 1); \
         deliver it with that version, or move the directory away to start empty"
    )]
    OldFormat { dir: PathBuf },
    #[error("invalid queue options: {0}")]
    InvalidOptions(String),
    #[error("queue is closed")]
    Closed,
    #[error("ack of id {id}, which is no record in this queue")]
    UnknownId { id: u64 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What a push does when the files would pass `max_disk_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFull {
    /// Drop whole oldest segments, pending records included (counted).
    #[default]
    DropOldest,
    /// Free only segments holding nothing pending; if that is not enough,
    /// refuse the push with [`QueueError::Full`] and touch nothing.
    Refuse,
}

/// Limits of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// Cap on the bytes of all segment files together.
    pub max_disk_bytes: u64,
    /// A segment is closed once it holds this much. Space is freed one whole
    /// segment at a time, so keep it well under `max_disk_bytes`.
    pub segment_bytes: u64,
    /// Records handed out by `read_next` and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Zero: every push and every ack stores the meta file before
    /// returning, so an acknowledged record is never sent again and every
    /// loss is counted. Otherwise it is stored at most this often (and by
    /// `flush`, `close`, drop): pushes and acks get cheaper, and a crash
    /// re-sends what was acknowledged since the last store. Call `flush` on
    /// a timer so an idle queue catches up.
    pub cursor_sync_interval: Duration,
    pub on_full: OnFull,
}

impl QueueOptions {
    /// Segments of 1/16 of the cap (64 KiB to 64 MiB), 16 records in
    /// flight, the meta file stored on every push and ack, oldest dropped
    /// when full.
    pub fn new(max_disk_bytes: u64) -> QueueOptions {
        QueueOptions {
            max_disk_bytes,
            segment_bytes: (max_disk_bytes / 16).clamp(64 << 10, 64 << 20),
            max_in_flight: 16,
            cursor_sync_interval: Duration::ZERO,
            on_full: OnFull::DropOldest,
        }
    }

    fn check(&self) -> Result<(), QueueError> {
        let mut problems = Vec::new();
        if self.max_disk_bytes <= HEADER_LEN as u64 {
            problems.push(format!(
                "max_disk_bytes must exceed the {HEADER_LEN}-byte record header, got {}",
                self.max_disk_bytes
            ));
        }
        if self.segment_bytes == 0 {
            problems.push("segment_bytes must be positive".to_string());
        }
        if self.max_in_flight == 0 {
            problems.push("max_in_flight must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(QueueError::InvalidOptions(problems.join("; ")))
        }
    }
}

/// A record handed out by [`Queue::read_next`]. Pass `id` to [`Queue::ack`]
/// once the destination accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub samples: u64,
    pub lane: u8,
    pub payload: Vec<u8>,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Ids given to the pushed records, in order.
    pub ids: Vec<u64>,
    /// Unacknowledged records (and their samples) dropped to make room,
    /// in-flight ones included.
    pub dropped_records: u64,
    pub dropped_samples: u64,
}

/// A snapshot of the queue's gauges and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Header and payload bytes of unacknowledged records.
    pub pending_bytes: u64,
    pub pending_records: u64,
    pub pending_samples: u64,
    /// Handed out by `read_next`, not yet acknowledged (part of pending).
    pub in_flight_records: u64,
    /// Bytes of all segment files, acknowledged data not yet deleted included.
    pub disk_bytes: u64,
    /// Since open, recovery's losses included: records removed without being
    /// acknowledged, for space or because they were damaged. A record dropped
    /// while in flight is counted even if its send later succeeds, so these
    /// overstate the loss by at most `max_in_flight` records per drop.
    pub dropped_records_total: u64,
    pub dropped_samples_total: u64,
    /// The part of the dropped totals lost to damage (at open or on read).
    pub damaged_records_total: u64,
    pub damaged_samples_total: u64,
}

/// A durable FIFO of byte records in one directory. See the module docs for
/// the format and guarantees.
pub struct Queue {
    dir: PathBuf,
    opts: QueueOptions,
    writer: Mutex<Writer>,
    /// What the meta file on disk says.
    persisted: Mutex<Persisted>,
    state: Mutex<State>,
    readable: Condvar,
    // Held for the queue's lifetime; the flock goes with the descriptor.
    _lock: crate::fsutil::Lock,
}

struct Writer {
    active: Option<Active>,
    /// Logical offset the next record gets.
    end: u64,
    /// `(seq, samples before)` the next record gets.
    counts: (u64, u64),
}

struct Active {
    start: u64,
    len: u64,
    file: BufWriter<File>,
}

struct Persisted {
    /// The state generation stored.
    generation: u64,
    /// The cursor stored: segments wholly below it may be deleted.
    cursor: u64,
    at: Instant,
}

struct Snapshot {
    end: u64,
    counts: (u64, u64),
    active: Option<(u64, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a queue lock is a bug in this module, and the
    // books may be half-updated: better to stop every user than to lose data.
    m.lock().expect("queue lock poisoned by an earlier panic")
}

enum ReadError {
    Damaged,
    Io(io::Error),
}

fn read_record(file: &File, pos: u64, e: &Entry) -> Result<Vec<u8>, ReadError> {
    let mut hb = [0u8; HEADER_LEN];
    file.read_exact_at(&mut hb, pos).map_err(ReadError::Io)?;
    let header = Header::decode(&hb).map_err(|_| ReadError::Damaged)?;
    if header.len != e.len || header.samples != e.samples || header.seq != e.seq {
        return Err(ReadError::Damaged);
    }
    let mut payload = vec![0u8; e.len as usize];
    file.read_exact_at(&mut payload, pos + HEADER_LEN as u64)
        .map_err(ReadError::Io)?;
    if crc32fast::hash(&payload) != header.payload_crc {
        return Err(ReadError::Damaged);
    }
    Ok(payload)
}

/// The index position and what `read_record` needs, of a record just taken.
struct Taken {
    id: u64,
    start: u64,
    file: Arc<File>,
    entry: Entry,
}

impl Queue {
    /// Opens (creating if needed) the queue in `dir`, repairing what an
    /// unclean stop left. Fails with [`QueueError::Locked`] while another
    /// `Queue` (in any process) has the directory open.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: QueueOptions,
    ) -> Result<(Queue, RecoveryReport), QueueError> {
        opts.check()?;
        let dir = dir.as_ref().to_path_buf();
        meta::create_dir_durably(&dir)?;
        let lock_file = meta::lock_dir(&dir)?;
        let migrated = migrate::migrate_if_v1(&dir, opts.segment_bytes)?;
        let mut rec = recover::recover(&dir)?;
        if let Some(m) = migrated {
            rec.report.migrated_v1_records = m.records;
            rec.report.dropped_records += m.corruptions.iter().map(|c| c.records).sum::<u64>();
            rec.report.corruptions.extend(m.corruptions);
        }
        let gaps = rec
            .entries
            .windows(2)
            .any(|w| w[1].header.seq != w[0].header.seq + 1)
            || rec
                .entries
                .last()
                .is_some_and(|e| e.header.next_counts() != rec.next_counts);
        let mut st = State {
            segments: rec
                .segments
                .iter()
                .map(|&(start, len)| (start, SegmentInfo { len, reader: None }))
                .collect(),
            active: None,
            index: Default::default(),
            visible_end: rec.write_end,
            next_counts: rec.next_counts,
            read_pos: 0,
            lane_pos: vec![0; LANES],
            unread: 0,
            unread_by_lane: vec![0; LANES],
            in_flight: 0,
            retired_in_index: 0,
            gaps,
            pending_records: 0,
            pending_samples: 0,
            pending_bytes: 0,
            disk_bytes: rec.segments.iter().map(|&(_, len)| len).sum(),
            dropped_records_total: rec.report.dropped_records,
            dropped_samples_total: rec.report.dropped_samples,
            damaged_records_total: rec.report.dropped_records,
            damaged_samples_total: rec.report.dropped_samples,
            generation: 0,
            closed: false,
            hook: None,
        };
        for e in &rec.entries {
            st.push_entry(Entry {
                id: e.id,
                seq: e.header.seq,
                samples_before: e.header.samples_before,
                samples: e.header.samples,
                len: e.header.len,
                lane: e.header.lane,
                state: EntryState::Unread,
            });
        }
        st.next_counts = rec.next_counts;

        let mut writer = Writer {
            active: None,
            end: rec.write_end,
            counts: rec.next_counts,
        };
        if let Some((start, len)) = rec.tail.filter(|&(_, len)| len < opts.segment_bytes) {
            let path = dir.join(segment::segment_file_name(start));
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err("open segment", &path))?;
            writer.active = Some(Active {
                start,
                len,
                file: BufWriter::with_capacity(256 << 10, file),
            });
            st.active = Some(start);
        }

        // Store what recovery settled on, so a garbled file is replaced and
        // a loss found now is not found (and counted) again next time.
        let settled = st.meta();
        if rec.meta.as_ref() != Some(&settled) {
            meta::store_meta(&dir, &settled)?;
        }
        let q = Queue {
            dir,
            opts,
            writer: Mutex::new(writer),
            persisted: Mutex::new(Persisted {
                generation: st.generation,
                cursor: settled.cursor,
                at: Instant::now(),
            }),
            state: Mutex::new(st),
            readable: Condvar::new(),
            _lock: lock_file,
        };
        Ok((q, rec.report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> QueueOptions {
        self.opts
    }

    /// Appends one record durably; see [`Queue::push_batch`].
    pub fn push(&self, payload: &[u8], samples: u64) -> Result<PushOutcome, QueueError> {
        self.push_batch(&[(payload, samples)])
    }

    /// Appends records durably, in lane 0; see [`Queue::push_lanes`].
    pub fn push_batch(&self, records: &[(&[u8], u64)]) -> Result<PushOutcome, QueueError> {
        let in_lane_0: Vec<(&[u8], u64, u8)> = records.iter().map(|&(p, s)| (p, s, 0)).collect();
        self.push_lanes(&in_lane_0)
    }

    /// Appends `(payload, samples, lane)` records durably: when this returns
    /// `Ok` they are fsynced and survive a crash. All or nothing: on `Err`
    /// none of them is in the queue. If the batch would push the files past
    /// `max_disk_bytes`, [`OnFull`] decides what goes or whether the push is
    /// refused.
    pub fn push_lanes(&self, records: &[(&[u8], u64, u8)]) -> Result<PushOutcome, QueueError> {
        let max = self.opts.max_disk_bytes;
        let mut needed = 0u64;
        for (payload, _, _) in records {
            let bytes = HEADER_LEN as u64 + payload.len() as u64;
            if payload.len() > u32::MAX as usize || bytes > max {
                return Err(QueueError::TooLarge {
                    what: "record",
                    bytes,
                    max_disk_bytes: max,
                });
            }
            needed += bytes;
        }
        if needed > max {
            return Err(QueueError::TooLarge {
                what: "batch",
                bytes: needed,
                max_disk_bytes: max,
            });
        }
        if records.is_empty() {
            return Ok(PushOutcome::default());
        }
        let result = self.push_locked(records, needed);
        // Outside the writer lock, so a hook may call back into the queue.
        // Even a failed push may have dropped records and freed in-flight slots.
        self.notify();
        let outcome = result?;
        // The records are durable already, so a failed store must not turn
        // the push into an error (the caller would send them again). It
        // only delays loss accounting: the next store retries, and `ack`,
        // `flush` and `close` report the error.
        let _ = self.persist(false);
        Ok(outcome)
    }

    fn push_locked(
        &self,
        records: &[(&[u8], u64, u8)],
        needed: u64,
    ) -> Result<PushOutcome, QueueError> {
        let mut w = lock(&self.writer);
        let (dropped_records, dropped_samples) = self.reserve(&mut w, needed)?;
        let before = Snapshot {
            end: w.end,
            counts: w.counts,
            active: w.active.as_ref().map(|a| (a.start, a.len)),
        };
        let mut created = Vec::new();
        let mut sealed = Vec::new();
        let mut entries = Vec::with_capacity(records.len());
        if let Err(e) = self.append(&mut w, records, &mut created, &mut sealed, &mut entries) {
            self.roll_back(&mut w, &before, &created, needed);
            return Err(e);
        }

        let ids = entries.iter().map(|e| e.id).collect();
        {
            let mut st = lock(&self.state);
            let active = w.active.as_ref().expect("append leaves a segment open");
            for (start, len) in sealed.into_iter().chain([(active.start, active.len)]) {
                st.segments
                    .entry(start)
                    .or_insert(SegmentInfo {
                        len: 0,
                        reader: None,
                    })
                    .len = len;
            }
            st.active = Some(active.start);
            for e in entries {
                st.push_entry(e);
            }
            st.visible_end = w.end;
        }
        Ok(PushOutcome {
            ids,
            dropped_records,
            dropped_samples,
        })
    }

    /// Makes room for `needed` bytes as [`OnFull`] says and books them.
    /// Dropped segments are deleted only after the meta file says the
    /// cursor is past them, so a missing segment is never mistaken for
    /// damage.
    fn reserve(&self, w: &mut Writer, needed: u64) -> Result<(u64, u64), QueueError> {
        let max = self.opts.max_disk_bytes;
        let pending_too = self.opts.on_full == OnFull::DropOldest;
        let (records, samples, doomed) = {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(QueueError::Closed);
            }
            let made = st.make_room(needed, max, pending_too);
            if st.disk_bytes + needed > max {
                // Only `Refuse` gets here: what was freed held nothing pending.
                drop(st);
                self.drop_segments(w, &made.2)?;
                return Err(QueueError::Full {
                    needed,
                    max_disk_bytes: max,
                });
            }
            st.disk_bytes += needed;
            made
        };
        if let Err(e) = self.drop_segments(w, &doomed) {
            lock(&self.state).disk_bytes -= needed;
            return Err(e);
        }
        Ok((records, samples))
    }

    fn drop_segments(&self, w: &mut Writer, doomed: &[u64]) -> Result<(), QueueError> {
        if doomed.is_empty() {
            return Ok(());
        }
        if w.active.as_ref().is_some_and(|a| doomed.contains(&a.start)) {
            w.active = None;
        }
        self.persist(true)?;
        for start in doomed {
            let path = self.segment_path(*start);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove segment", &path)(e)),
            }
        }
        Ok(())
    }

    fn append(
        &self,
        w: &mut Writer,
        records: &[(&[u8], u64, u8)],
        created: &mut Vec<u64>,
        sealed: &mut Vec<(u64, u64)>,
        entries: &mut Vec<Entry>,
    ) -> Result<(), QueueError> {
        for &(payload, samples, lane) in records {
            if w.active
                .as_ref()
                .is_none_or(|a| a.len >= self.opts.segment_bytes)
            {
                self.roll_segment(w, created, sealed)?;
            }
            let a = w.active.as_mut().expect("opened above");
            let (seq, before) = w.counts;
            let header = Header::for_payload(payload, samples, lane, seq, before);
            a.file
                .write_all(&header.encode())
                .and_then(|()| a.file.write_all(payload))
                .map_err(io_err("write segment", &self.segment_path(a.start)))?;
            entries.push(Entry {
                id: w.end,
                seq,
                samples_before: before,
                samples,
                len: header.len,
                lane,
                state: EntryState::Unread,
            });
            a.len += header.record_len();
            w.end += header.record_len();
            w.counts = header.next_counts();
        }
        let a = w.active.as_mut().expect("records is not empty");
        a.file
            .flush()
            .and_then(|()| a.file.get_ref().sync_data())
            .map_err(io_err("fsync segment", &self.segment_path(a.start)))?;
        if !created.is_empty() {
            meta::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Seals the active segment (if any) and starts a new one at `w.end`.
    fn roll_segment(
        &self,
        w: &mut Writer,
        created: &mut Vec<u64>,
        sealed: &mut Vec<(u64, u64)>,
    ) -> Result<(), QueueError> {
        if let Some(mut old) = w.active.take() {
            let path = self.segment_path(old.start);
            old.file
                .flush()
                .and_then(|()| old.file.get_ref().sync_data())
                .map_err(io_err("fsync segment", &path))?;
            sealed.push((old.start, old.len));
        }
        let path = self.segment_path(w.end);
        // create_new: an existing file of that name would be data we
        // do not know about; refuse rather than append after it.
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create segment", &path))?;
        created.push(w.end);
        w.active = Some(Active {
            start: w.end,
            len: 0,
            file: BufWriter::with_capacity(256 << 10, file),
        });
        Ok(())
    }

    /// Undoes a failed append as far as the disk lets us. Whatever cannot be
    /// cut is beyond the committed length; recovery cuts it at the next open.
    fn roll_back(&self, w: &mut Writer, before: &Snapshot, created: &[u64], reserved: u64) {
        if let Some(a) = w.active.take() {
            // Discard the buffer instead of letting Drop flush it.
            let _ = a.file.into_parts();
        }
        for start in created {
            let _ = fs::remove_file(self.segment_path(*start));
        }
        if let Some((start, len)) = before.active {
            let path = self.segment_path(start);
            let _ = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len).and_then(|()| f.sync_data()));
        }
        // The next push starts a fresh segment where the committed data ends,
        // so nothing is ever appended after bytes of unknown state.
        w.end = before.end;
        w.counts = before.counts;
        let mut st = lock(&self.state);
        st.disk_bytes -= reserved;
        st.active = None;
    }

    /// Hands out the oldest record not yet handed out, or `None` when there
    /// is none, `max_in_flight` records are out, or the queue is closed. The
    /// cursor does not move until [`Queue::ack`].
    pub fn read_next(&self) -> Result<Option<Record>, QueueError> {
        self.read_where(None)
    }

    /// [`Queue::read_next`] among the records whose lane is `index` modulo
    /// `of`: a reader that owns those lanes gets their records in push order.
    pub fn read_next_lane(&self, index: usize, of: usize) -> Result<Option<Record>, QueueError> {
        assert!(index < of && of > 0, "lane {index} of {of}");
        self.read_where(Some(LaneFilter { index, of }))
    }

    fn read_where(&self, lanes: Option<LaneFilter>) -> Result<Option<Record>, QueueError> {
        loop {
            let Some(t) = self.take(lanes)? else {
                return Ok(None);
            };
            match read_record(&t.file, t.id - t.start, &t.entry) {
                Ok(payload) => {
                    return Ok(Some(Record {
                        id: t.id,
                        samples: t.entry.samples,
                        lane: t.entry.lane,
                        payload,
                    }))
                }
                Err(ReadError::Io(e)) => {
                    lock(&self.state).unread(t.id);
                    return Err(io_err("read segment", &self.segment_path(t.start))(e));
                }
                Err(ReadError::Damaged) => {
                    // Damaged after open: count it and move on to the next.
                    {
                        let mut st = lock(&self.state);
                        if let Some(i) = st.find(t.id) {
                            st.drop_damaged(i);
                        }
                        st.advance();
                    }
                    self.notify();
                    self.persist(false)?;
                }
            }
        }
    }

    /// Marks the next unread record in flight and opens its segment.
    fn take(&self, lanes: Option<LaneFilter>) -> Result<Option<Taken>, QueueError> {
        let mut st = lock(&self.state);
        let Some(i) = st.take_unread(self.opts.max_in_flight, lanes) else {
            return Ok(None);
        };
        let entry = st.index[i];
        let id = entry.id;
        let (&start, seg) = st
            .segments
            .range_mut(..=id)
            .next_back()
            .expect("a pending record lives in a segment");
        let opened = match &seg.reader {
            Some(f) => Ok(Arc::clone(f)),
            None => File::open(self.segment_path(start))
                .map(|f| Arc::clone(seg.reader.insert(Arc::new(f)))),
        };
        match opened {
            Ok(file) => Ok(Some(Taken {
                id,
                start,
                file,
                entry,
            })),
            Err(e) => {
                st.unread(id);
                Err(io_err("open segment", &self.segment_path(start))(e))
            }
        }
    }

    /// Marks a record delivered. The cursor moves over contiguously
    /// acknowledged records; the meta file (which also remembers records
    /// acknowledged out of order) is stored before this returns, unless
    /// `cursor_sync_interval` defers it. Acknowledging twice, or a record
    /// already dropped for space, is a no-op.
    pub fn ack(&self, id: u64) -> Result<(), QueueError> {
        {
            let mut st = lock(&self.state);
            match st.find(id) {
                Some(i) => {
                    st.retire(i);
                    st.advance();
                }
                None if id < st.cursor() => return Ok(()),
                None => return Err(QueueError::UnknownId { id }),
            }
        }
        self.notify();
        self.persist(false)
    }

    /// Whether `id` is still waiting for its `ack`: false once it was
    /// acknowledged, or dropped to make room. A sender retrying a record
    /// asks before each attempt, so a record dropped (and counted) while
    /// the destination was down is not delivered after all.
    pub fn is_pending(&self, id: u64) -> bool {
        let st = lock(&self.state);
        st.find(id)
            .is_some_and(|i| st.index[i].state != EntryState::Retired)
    }

    /// Makes every record handed out and not yet acknowledged readable
    /// again, oldest first. For a sender restarting after it gave up on its
    /// in-flight records; returns how many there were.
    pub fn rewind(&self) -> usize {
        let n = lock(&self.state).rewind();
        self.notify();
        n
    }

    /// Blocks until `read_next` would return a record, the queue is closed,
    /// or `timeout` passes; returns whether a record is readable.
    pub fn wait_for_data(&self, timeout: Duration) -> bool {
        let max = self.opts.max_in_flight;
        let st = lock(&self.state);
        let (st, _) = self
            .readable
            .wait_timeout_while(st, timeout, |st| !st.closed && !st.readable(max))
            .expect("queue lock poisoned by an earlier panic");
        st.readable(max)
    }

    /// Registers a callback run (outside the queue's locks) whenever
    /// records may have become readable or the queue closed: after a push,
    /// an ack, a rewind, a drop. Meant for waking async code, e.g.
    /// `move || notify.notify_one()`. Replaces any earlier hook.
    pub fn set_notify_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        lock(&self.state).hook = Some(Arc::new(hook));
    }

    pub fn stats(&self) -> QueueStats {
        let st = lock(&self.state);
        QueueStats {
            pending_bytes: st.pending_bytes,
            pending_records: st.pending_records,
            pending_samples: st.pending_samples,
            in_flight_records: st.in_flight as u64,
            disk_bytes: st.disk_bytes,
            dropped_records_total: st.dropped_records_total,
            dropped_samples_total: st.dropped_samples_total,
            damaged_records_total: st.damaged_records_total,
            damaged_samples_total: st.damaged_samples_total,
        }
    }

    /// Stores the meta file and deletes acknowledged segments. Pushes are
    /// durable on their own; this only saves re-sending after a crash and
    /// keeps loss counting current.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.persist(true)
    }

    /// Stops pushes and reads (waiters wake up), then flushes. Acks still
    /// work, so senders can finish what they hold. The directory stays
    /// locked until the `Queue` is dropped.
    pub fn close(&self) -> Result<(), QueueError> {
        {
            // Taking the writer lock waits for a push in progress to finish.
            let _w = lock(&self.writer);
            lock(&self.state).closed = true;
        }
        self.notify();
        self.flush()
    }

    fn notify(&self) {
        let hook = lock(&self.state).hook.clone();
        self.readable.notify_all();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn segment_path(&self, start: u64) -> PathBuf {
        self.dir.join(segment::segment_file_name(start))
    }

    /// Stores the meta file if anything it describes changed (and, unless
    /// `force`, if `cursor_sync_interval` has passed since the last store),
    /// then deletes the segments wholly below the stored cursor.
    fn persist(&self, force: bool) -> Result<(), QueueError> {
        let mut persisted = lock(&self.persisted);
        let due = force || persisted.at.elapsed() >= self.opts.cursor_sync_interval;
        let wanted = {
            let st = lock(&self.state);
            (due && st.generation != persisted.generation).then(|| (st.generation, st.meta()))
        };
        if let Some((generation, m)) = wanted {
            meta::store_meta(&self.dir, &m)?;
            *persisted = Persisted {
                generation,
                cursor: m.cursor,
                at: Instant::now(),
            };
        }
        let cursor = persisted.cursor;
        let doomed: Vec<u64> = {
            let mut st = lock(&self.state);
            let doomed: Vec<u64> = st
                .segments
                .iter()
                .filter(|&(&start, seg)| start + seg.len <= cursor && st.active != Some(start))
                .map(|(&start, _)| start)
                .collect();
            for start in &doomed {
                let seg = st.segments.remove(start).expect("listed above");
                st.disk_bytes -= seg.len;
            }
            doomed
        };
        for start in doomed {
            let path = self.segment_path(start);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Gone from the books already; the next open deletes it as
                // wholly acknowledged.
                Err(e) => return Err(io_err("remove acknowledged segment", &path)(e)),
            }
        }
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Best effort: an unstored meta file only means records are sent
        // again. After a panic under a lock the books cannot be trusted;
        // leave the stored one behind rather than write a wrong one.
        if !self.state.is_poisoned() && !self.persisted.is_poisoned() {
            let _ = self.persist(true);
        }
    }
}
