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
//! - Bounded: the segment files never exceed `max_disk_bytes`. To make room
//!   whole oldest segments go, with whatever they hold (acknowledged bytes,
//!   pending records, in-flight ones included), and every dropped record and
//!   sample is counted. A record dropped while in flight counts as dropped
//!   even if its send then succeeds; its later `ack` is a no-op.
//! - One process per queue directory: an flock on `lock`, which dies with
//!   its process, so `kill -9` never leaves a queue that will not open.
//! - Records are opaque byte blocks of up to 4 GiB - 1 (typically 10 KiB to
//!   4 MiB) plus the number of samples they carry, so drops can be counted
//!   in samples.
//! - Unix only: reads are positional (`pread`) and durability leans on
//!   directory fsync.
//!
//! # Layout
//!
//! ```text
//! <dir>/lock                   flock (fsutil::Lock); holds the owner's pid for error messages
//! <dir>/cursor                 the acknowledged position (20 bytes, below)
//! <dir>/0000000000000000.seg   segment files, named by the logical offset of
//! <dir>/0000000000a00018.seg   their first byte (16 lowercase hex digits)
//! <dir>/.*.tmp.<pid>.<n>, *.tmp half-written replacements; removed at open
//! ```
//!
//! Records are numbered by logical byte offset: a segment named `S` holds
//! offsets `S..S+len`, and the next segment starts where the previous one
//! ended, so an id says both which file a record lives in and where. The id
//! of a record is the offset of its header; the cursor lives in the same
//! space. Gaps are allowed (after damage, or when the cursor is ahead of the
//! files), overlaps are not.
//!
//! # Record format
//!
//! A 24-byte header, then the payload. Little-endian:
//!
//! ```text
//! 0..2 magic "SW" | 2 version=1 | 3 flags=0 | 4..8 payload len u32 |
//! 8..16 samples u64 | 16..20 crc32(payload) | 20..24 crc32(bytes 0..20)
//! ```
//!
//! The header checksum covers the payload checksum, so together they cover
//! every byte. Keeping them apart means a damaged payload still has a
//! trustworthy length: recovery drops that one record and carries on, and
//! only a damaged header costs the rest of its segment.
//!
//! # Cursor
//!
//! `cursor` holds the offset below which every record has been acknowledged
//! (or dropped): `"SWCR" | version u8 | 3 zero bytes | offset u64 | crc32 of
//! the first 16 bytes`. It only moves over contiguously acknowledged
//! records: if record 2 is acknowledged before record 1, the cursor stays
//! in front of 1 until 1 is acknowledged too. It is replaced atomically
//! (`fsutil::write_atomic`: temp file, fsync, rename, directory fsync).
//! Segments wholly below the cursor are deleted, except the one being
//! appended to.
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
//! parallel; `ack` retires one. `rewind` makes every in-flight record
//! readable again, for senders that went away without acknowledging. Each
//! read checks both checksums again; a record that fails is dropped and
//! counted, never returned.
//!
//! # Recovery (at open)
//!
//! - temp files are removed;
//! - a missing or garbled cursor means "replay from the oldest segment":
//!   duplicates, never loss;
//! - segments wholly below the cursor are deleted;
//! - every header and payload from the cursor on is checked. In the last
//!   segment the first record that fails (too short, running past the end
//!   of the file, a bad header, or a bad payload with nothing after it) is
//!   where a write was cut short: the file is truncated there and the bytes
//!   cut are reported
//!   (`truncated_bytes`), not counted as dropped because the push never
//!   returned `Ok`. A bad payload with more records after it is damage, not
//!   a torn write: in any segment that one record is dropped and counted
//!   with its samples. A bad header in an older segment drops the rest of
//!   that segment, counted as one record (its samples if the header still
//!   held them); later segments are unaffected.
//!
//! Opening therefore reads every pending byte once. That is a sequential
//! read of at most `max_disk_bytes`, traded for exact pending counts and
//! damage found at start rather than halfway through a replay.
//!
//! # Cost of the guarantee
//!
//! Per `push_batch`: one fdatasync for the whole batch, plus a file and a
//! directory fsync when it starts a segment. Per `ack` that moves the
//! cursor: a 20-byte temp file write, its fsync, a rename and a directory
//! fsync (about 3x a push on ext4; acks of concurrent senders that land
//! during one store share the next). Per record on disk: 24 header bytes.
//! Send larger batches to spread the push fsyncs; set
//! `cursor_sync_interval` to trade the ack fsyncs for re-sending up to that
//! interval's acknowledged records after a crash (duplicates, never loss).
//!
//! # Concurrency
//!
//! Every method takes `&self`; share the queue in an `Arc` and call it from
//! `spawn_blocking`. Three locks, always taken in this order and never the
//! other way: `writer` (one push at a time, held across its fsync) or
//! `persisted` (one cursor write at a time), then `state` (indexes and
//! counters, held for memory updates only, never across a read, write or
//! fsync). So a push waiting on fsync never delays a read or an ack.
//! Waiting for data: `wait_for_data` (a `Condvar`), or `set_notify_hook`
//! to wake an async task (e.g. `tokio::sync::Notify`).

mod meta;
mod recover;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use meta::CursorStatus;
pub use recover::{Corruption, RecoveryReport};

use segment::{Header, HEADER_LEN};

/// Errors of the queue boundary. Callers match on them: `Io` is worth a
/// retry after the disk recovers; the others are not.
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
    /// Zero: every `ack` that moves the cursor stores it before returning,
    /// so an acknowledged record is never sent again. Otherwise the cursor
    /// is stored at most this often (and by `flush`, `close`, drop): acks get
    /// cheap, and a crash re-sends what was acknowledged since the last
    /// store. Call `flush` on a timer so an idle queue catches up.
    pub cursor_sync_interval: Duration,
}

impl QueueOptions {
    /// Segments of 1/16 of the cap (64 KiB to 64 MiB), 16 records in
    /// flight, the cursor stored on every ack.
    pub fn new(max_disk_bytes: u64) -> QueueOptions {
        QueueOptions {
            max_disk_bytes,
            segment_bytes: (max_disk_bytes / 16).clamp(64 << 10, 64 << 20),
            max_in_flight: 16,
            cursor_sync_interval: Duration::ZERO,
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
    /// Since open, recovery's drops included: records removed without being
    /// acknowledged, for space or because they were damaged. A record dropped
    /// while in flight is counted even if its send later succeeds, so these
    /// overstate the loss by at most `max_in_flight` records per drop.
    pub dropped_records_total: u64,
    pub dropped_samples_total: u64,
}

/// A durable FIFO of byte records in one directory. See the module docs for
/// the format and guarantees.
pub struct Queue {
    dir: PathBuf,
    opts: QueueOptions,
    writer: Mutex<Writer>,
    /// The cursor value last stored on disk.
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
}

struct Active {
    start: u64,
    len: u64,
    file: BufWriter<File>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    Unread,
    InFlight,
    Acked,
}

/// One pending record in memory: 24 bytes, so a queue of a million records
/// indexes in 24 MB.
struct Entry {
    id: u64,
    samples: u64,
    len: u32,
    state: EntryState,
}

impl Entry {
    fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

struct SegmentInfo {
    /// Committed length: bytes of records visible to readers.
    len: u64,
    /// Opened on first read and shared, so reads need no lock while they
    /// wait on the disk; a segment deleted meanwhile stays readable through
    /// it.
    reader: Option<Arc<File>>,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

struct State {
    segments: BTreeMap<u64, SegmentInfo>,
    /// The segment the writer appends to; never deleted for being acknowledged.
    active: Option<u64>,
    /// Every record from the cursor on, by id. The front is never `Acked`.
    index: VecDeque<Entry>,
    /// End of the last committed record.
    visible_end: u64,
    /// `read_next` looks for an unread record from here on.
    read_pos: u64,
    unread: usize,
    in_flight: usize,
    pending_records: u64,
    pending_samples: u64,
    pending_bytes: u64,
    disk_bytes: u64,
    dropped_records_total: u64,
    dropped_samples_total: u64,
    closed: bool,
    hook: Option<Hook>,
}

impl State {
    /// Everything below is acknowledged or dropped.
    fn cursor(&self) -> u64 {
        self.index.front().map_or(self.visible_end, |e| e.id)
    }

    fn readable(&self, max_in_flight: usize) -> bool {
        !self.closed && self.unread > 0 && self.in_flight < max_in_flight
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.index.binary_search_by_key(&id, |e| e.id).ok()
    }

    /// Takes a record out of the pending set, returning it was not acknowledged
    /// before (so the caller may count it).
    fn retire(&mut self, i: usize) -> bool {
        let e = &mut self.index[i];
        match e.state {
            EntryState::Acked => return false,
            EntryState::Unread => self.unread -= 1,
            EntryState::InFlight => self.in_flight -= 1,
        }
        e.state = EntryState::Acked;
        let (len, samples) = (e.record_len(), e.samples);
        self.pending_records -= 1;
        self.pending_samples -= samples;
        self.pending_bytes -= len;
        true
    }

    fn drop_entry(&mut self, i: usize) {
        if self.retire(i) {
            self.dropped_records_total += 1;
            self.dropped_samples_total += self.index[i].samples;
        }
    }

    /// Pops acknowledged records off the front; true if the cursor moved.
    fn advance(&mut self) -> bool {
        let mut moved = false;
        while self
            .index
            .front()
            .is_some_and(|e| e.state == EntryState::Acked)
        {
            self.index.pop_front();
            moved = true;
        }
        moved
    }

    /// Deletes oldest segments from the books until `needed` more bytes fit.
    /// Returns the dropped counts and the segments whose files must go.
    fn make_room(&mut self, needed: u64, max: u64) -> (u64, u64, Vec<u64>) {
        let (mut records, mut samples, mut doomed) = (0, 0, Vec::new());
        while self.disk_bytes + needed > max {
            let Some((start, seg)) = self.segments.pop_first() else {
                break;
            };
            self.disk_bytes -= seg.len;
            let end = start + seg.len;
            while self.index.front().is_some_and(|e| e.id < end) {
                if self.retire(0) {
                    records += 1;
                    samples += self.index[0].samples;
                }
                self.index.pop_front();
            }
            if self.active == Some(start) {
                self.active = None;
            }
            doomed.push(start);
        }
        self.dropped_records_total += records;
        self.dropped_samples_total += samples;
        (records, samples, doomed)
    }
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

fn read_record(file: &File, pos: u64, len: u32, samples: u64) -> Result<Vec<u8>, ReadError> {
    let mut hb = [0u8; HEADER_LEN];
    file.read_exact_at(&mut hb, pos).map_err(ReadError::Io)?;
    let header = Header::decode(&hb).map_err(|_| ReadError::Damaged)?;
    if header.len != len || header.samples != samples {
        return Err(ReadError::Damaged);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, pos + HEADER_LEN as u64)
        .map_err(ReadError::Io)?;
    if crc32fast::hash(&payload) != header.payload_crc {
        return Err(ReadError::Damaged);
    }
    Ok(payload)
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
        crate::fsutil::create_dir_all(&dir).map_err(io_err("create queue directory", &dir))?;
        let lock_file = meta::lock_dir(&dir)?;
        let rec = recover::recover(&dir)?;

        let mut st = State {
            segments: rec
                .segments
                .iter()
                .map(|&(start, len)| (start, SegmentInfo { len, reader: None }))
                .collect(),
            active: None,
            index: rec
                .entries
                .iter()
                .map(|e| Entry {
                    id: e.id,
                    samples: e.header.samples,
                    len: e.header.len,
                    state: EntryState::Unread,
                })
                .collect(),
            visible_end: rec.write_end,
            read_pos: 0,
            unread: rec.entries.len(),
            in_flight: 0,
            pending_records: rec.report.pending_records,
            pending_samples: rec.report.pending_samples,
            pending_bytes: rec.report.pending_bytes,
            disk_bytes: rec.segments.iter().map(|&(_, len)| len).sum(),
            dropped_records_total: rec.report.dropped_records,
            dropped_samples_total: rec.report.dropped_samples,
            closed: false,
            hook: None,
        };

        let mut writer = Writer {
            active: None,
            end: rec.write_end,
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

        // Store the cursor recovery settled on, so a garbled file is replaced
        // and the next open does not redo the same work.
        if rec.report.cursor != (CursorStatus::Loaded { offset: rec.cursor }) {
            meta::store_cursor(&dir, rec.cursor)?;
        }
        let q = Queue {
            dir,
            opts,
            writer: Mutex::new(writer),
            persisted: Mutex::new(Persisted {
                offset: rec.cursor,
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

    /// Appends records durably: when this returns `Ok` they are fsynced and
    /// survive a crash. All or nothing: on `Err` none of them is in the queue.
    /// Makes room first by dropping the oldest segments if the batch would
    /// push the files past `max_disk_bytes`.
    pub fn push_batch(&self, records: &[(&[u8], u64)]) -> Result<PushOutcome, QueueError> {
        let max = self.opts.max_disk_bytes;
        let mut needed = 0u64;
        for (payload, _) in records {
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
        result
    }

    fn push_locked(
        &self,
        records: &[(&[u8], u64)],
        needed: u64,
    ) -> Result<PushOutcome, QueueError> {
        let max = self.opts.max_disk_bytes;
        let mut w = lock(&self.writer);
        let (dropped_records, dropped_samples, doomed) = {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(QueueError::Closed);
            }
            let made = st.make_room(needed, max);
            st.disk_bytes += needed;
            made
        };
        if w.active.as_ref().is_some_and(|a| doomed.contains(&a.start)) {
            w.active = None;
        }
        for start in &doomed {
            let path = self.segment_path(*start);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    lock(&self.state).disk_bytes -= needed;
                    return Err(io_err("remove segment", &path)(e));
                }
            }
        }

        let before = Snapshot {
            end: w.end,
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
                st.pending_records += 1;
                st.pending_samples += e.samples;
                st.pending_bytes += e.record_len();
                st.unread += 1;
                st.index.push_back(e);
            }
            st.visible_end = w.end;
        }
        Ok(PushOutcome {
            ids,
            dropped_records,
            dropped_samples,
        })
    }

    fn append(
        &self,
        w: &mut Writer,
        records: &[(&[u8], u64)],
        created: &mut Vec<u64>,
        sealed: &mut Vec<(u64, u64)>,
        entries: &mut Vec<Entry>,
    ) -> Result<(), QueueError> {
        for &(payload, samples) in records {
            if w.active
                .as_ref()
                .is_none_or(|a| a.len >= self.opts.segment_bytes)
            {
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
            }
            let a = w.active.as_mut().expect("opened above");
            let header = Header::for_payload(payload, samples);
            a.file
                .write_all(&header.encode())
                .and_then(|()| a.file.write_all(payload))
                .map_err(io_err("write segment", &self.segment_path(a.start)))?;
            entries.push(Entry {
                id: w.end,
                samples,
                len: header.len,
                state: EntryState::Unread,
            });
            a.len += header.record_len();
            w.end += header.record_len();
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
        let mut st = lock(&self.state);
        st.disk_bytes -= reserved;
        st.active = None;
    }

    /// Hands out the oldest record not yet handed out, or `None` when there
    /// is none, `max_in_flight` records are out, or the queue is closed. The
    /// cursor does not move until [`Queue::ack`].
    pub fn read_next(&self) -> Result<Option<Record>, QueueError> {
        loop {
            let (id, len, samples, start, file) = {
                let mut guard = lock(&self.state);
                let st = &mut *guard;
                if !st.readable(self.opts.max_in_flight) {
                    return Ok(None);
                }
                let from = st.index.partition_point(|e| e.id < st.read_pos);
                let i = (from..st.index.len())
                    .chain(0..from)
                    .find(|&i| st.index[i].state == EntryState::Unread)
                    .expect("unread > 0 means an unread entry exists");
                let e = &mut st.index[i];
                e.state = EntryState::InFlight;
                let (id, len, samples) = (e.id, e.len, e.samples);
                st.unread -= 1;
                st.in_flight += 1;
                st.read_pos = id + 1;
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
                    Ok(file) => (id, len, samples, start, file),
                    Err(e) => {
                        Self::unread(st, id);
                        return Err(io_err("open segment", &self.segment_path(start))(e));
                    }
                }
            };
            match read_record(&file, id - start, len, samples) {
                Ok(payload) => {
                    return Ok(Some(Record {
                        id,
                        samples,
                        payload,
                    }))
                }
                Err(ReadError::Io(e)) => {
                    Self::unread(&mut lock(&self.state), id);
                    return Err(io_err("read segment", &self.segment_path(start))(e));
                }
                Err(ReadError::Damaged) => {
                    // Damaged after open: count it and move on to the next.
                    let moved = {
                        let mut st = lock(&self.state);
                        if let Some(i) = st.find(id) {
                            st.drop_entry(i);
                        }
                        st.advance()
                    };
                    self.notify();
                    if moved {
                        self.persist_cursor(false)?;
                    }
                }
            }
        }
    }

    /// Puts a record handed out by `read_next` back, e.g. after a read error.
    fn unread(st: &mut State, id: u64) {
        if let Some(i) = st.find(id) {
            if st.index[i].state == EntryState::InFlight {
                st.index[i].state = EntryState::Unread;
                st.in_flight -= 1;
                st.unread += 1;
                st.read_pos = st.read_pos.min(id);
            }
        }
    }

    /// Marks a record delivered. The cursor moves only over contiguously
    /// acknowledged records, and is stored durably before this returns
    /// (unless `cursor_sync_interval` defers it).
    /// Acknowledging twice, or a record already dropped for space, is a
    /// no-op.
    pub fn ack(&self, id: u64) -> Result<(), QueueError> {
        let moved = {
            let mut st = lock(&self.state);
            match st.find(id) {
                Some(i) => {
                    st.retire(i);
                    st.advance()
                }
                None if id < st.cursor() => return Ok(()),
                None => return Err(QueueError::UnknownId { id }),
            }
        };
        self.notify();
        if moved {
            self.persist_cursor(false)?;
        }
        Ok(())
    }

    /// Whether `id` is still waiting for its `ack`: false once it was
    /// acknowledged, or dropped to make room. A sender retrying a record
    /// asks before each attempt, so a record dropped (and counted) while
    /// the destination was down is not delivered after all.
    pub fn is_pending(&self, id: u64) -> bool {
        let st = lock(&self.state);
        st.find(id)
            .is_some_and(|i| st.index[i].state != EntryState::Acked)
    }

    /// Makes every record handed out and not yet acknowledged readable
    /// again, oldest first. For a sender restarting after it gave up on its
    /// in-flight records; returns how many there were.
    pub fn rewind(&self) -> usize {
        let n = {
            let mut st = lock(&self.state);
            let mut n = 0;
            for e in st
                .index
                .iter_mut()
                .filter(|e| e.state == EntryState::InFlight)
            {
                e.state = EntryState::Unread;
                n += 1;
            }
            st.in_flight -= n;
            st.unread += n;
            st.read_pos = st.cursor();
            n
        };
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
        }
    }

    /// Stores the cursor and deletes acknowledged segments. Pushes are
    /// durable on their own; this only saves re-sending after a crash.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.persist_cursor(true)
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

    /// Stores the cursor if it moved (and, unless `force`, if
    /// `cursor_sync_interval` has passed since the last store), then deletes
    /// the segments wholly below the cursor.
    fn persist_cursor(&self, force: bool) -> Result<(), QueueError> {
        let mut persisted = lock(&self.persisted);
        let cursor = lock(&self.state).cursor();
        let due = force || persisted.at.elapsed() >= self.opts.cursor_sync_interval;
        if cursor != persisted.offset && due {
            meta::store_cursor(&self.dir, cursor)?;
            *persisted = Persisted {
                offset: cursor,
                at: Instant::now(),
            };
        }
        // Acknowledged data may go before the stored cursor catches up: a
        // crash then finds the cursor below the oldest segment and starts
        // there, which skips only acknowledged records.
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

struct Persisted {
    offset: u64,
    at: Instant,
}

struct Snapshot {
    end: u64,
    active: Option<(u64, u64)>,
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Best effort: an unstored cursor only means records are sent again.
        // After a panic under a lock the books cannot be trusted; leave the
        // stored cursor behind rather than write a wrong one.
        if !self.state.is_poisoned() && !self.persisted.is_poisoned() {
            let _ = self.persist_cursor(true);
        }
    }
}
