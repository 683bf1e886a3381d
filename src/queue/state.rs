//! The queue's books in memory: one entry per record from the cursor on,
//! what is unread, in flight or retired, the gauges and counters, and the
//! meta file's content derived from them.
//!
//! Everything here is plain data under the queue's `state` lock: no I/O.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::sync::Arc;

use super::meta::{Meta, Span, MAX_RANGES};
use super::segment::HEADER_LEN;

/// Lanes a record can be pushed into (its header has one byte for it).
pub(crate) const LANES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryState {
    Unread,
    InFlight,
    /// Acknowledged, or dropped (for room or damage): no longer pending.
    Retired,
}

/// One record in memory: 40 bytes, so a queue of a million records indexes
/// in 40 MB.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub id: u64,
    /// Records pushed before this one.
    pub seq: u64,
    /// Samples pushed before this one.
    pub samples_before: u64,
    pub samples: u64,
    pub len: u32,
    pub lane: u8,
    pub state: EntryState,
}

impl Entry {
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    fn next_counts(&self) -> (u64, u64) {
        (self.seq + 1, self.samples_before + self.samples)
    }
}

pub(crate) struct SegmentInfo {
    /// Committed length: bytes of records visible to readers.
    pub len: u64,
    /// Opened on first read and shared, so reads need no lock while they
    /// wait on the disk; a segment deleted meanwhile stays readable through
    /// it.
    pub reader: Option<Arc<File>>,
}

pub(crate) type Hook = Arc<dyn Fn() + Send + Sync>;

/// Which records a reader takes: those whose lane is `index` modulo `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaneFilter {
    pub index: usize,
    pub of: usize,
}

impl LaneFilter {
    fn matches(self, lane: u8) -> bool {
        usize::from(lane) % self.of == self.index
    }

    fn lanes(self) -> impl Iterator<Item = usize> {
        (self.index..LANES).step_by(self.of)
    }
}

pub(crate) struct State {
    pub segments: BTreeMap<u64, SegmentInfo>,
    /// The segment the writer appends to; never deleted for being acknowledged.
    pub active: Option<u64>,
    /// Every record from the cursor on, by id. The front is never `Retired`.
    pub index: VecDeque<Entry>,
    /// End of the last committed record.
    pub visible_end: u64,
    /// `(seq, samples before)` of the next record to be committed.
    pub next_counts: (u64, u64),
    /// `read_next` looks for an unread record from here on.
    pub read_pos: u64,
    /// The same, per lane, for readers of some lanes only.
    pub lane_pos: Vec<u64>,
    pub unread: usize,
    pub unread_by_lane: Vec<usize>,
    pub in_flight: usize,
    /// Retired entries still in the index (behind an unacknowledged one).
    pub retired_in_index: usize,
    /// Recovery left records out of the index (lost ones): the meta file
    /// must be derived entry by entry until the index has been emptied.
    pub gaps: bool,
    pub pending_records: u64,
    pub pending_samples: u64,
    pub pending_bytes: u64,
    pub disk_bytes: u64,
    pub dropped_records_total: u64,
    pub dropped_samples_total: u64,
    pub damaged_records_total: u64,
    pub damaged_samples_total: u64,
    /// Bumped by every change the meta file describes.
    pub generation: u64,
    pub closed: bool,
    pub hook: Option<Hook>,
}

impl State {
    /// Everything below is acknowledged or dropped.
    pub fn cursor(&self) -> u64 {
        self.index.front().map_or(self.visible_end, |e| e.id)
    }

    pub fn readable(&self, max_in_flight: usize) -> bool {
        !self.closed && self.unread > 0 && self.in_flight < max_in_flight
    }

    fn readable_in(&self, max_in_flight: usize, lanes: LaneFilter) -> bool {
        self.readable(max_in_flight) && lanes.lanes().any(|l| self.unread_by_lane[l] > 0)
    }

    pub fn find(&self, id: u64) -> Option<usize> {
        self.index.binary_search_by_key(&id, |e| e.id).ok()
    }

    /// Adds a committed record.
    pub fn push_entry(&mut self, e: Entry) {
        self.pending_records += 1;
        self.pending_samples += e.samples;
        self.pending_bytes += e.record_len();
        self.unread += 1;
        self.unread_by_lane[usize::from(e.lane)] += 1;
        self.next_counts = e.next_counts();
        self.index.push_back(e);
        self.generation += 1;
    }

    /// Picks the oldest unread record (of `lanes`, if given) and marks it in
    /// flight; returns its index.
    pub fn take_unread(
        &mut self,
        max_in_flight: usize,
        lanes: Option<LaneFilter>,
    ) -> Option<usize> {
        let i = match lanes {
            None if self.readable(max_in_flight) => {
                let from = self.index.partition_point(|e| e.id < self.read_pos);
                self.first_unread(from, |_| true)?
            }
            Some(f) if self.readable_in(max_in_flight, f) => {
                let pos = f.lanes().map(|l| self.lane_pos[l]).min().unwrap_or(0);
                let from = self.index.partition_point(|e| e.id < pos);
                self.first_unread(from, |lane| f.matches(lane))?
            }
            _ => return None,
        };
        let e = &mut self.index[i];
        e.state = EntryState::InFlight;
        let (id, lane) = (e.id, usize::from(e.lane));
        self.unread -= 1;
        self.unread_by_lane[lane] -= 1;
        self.in_flight += 1;
        self.read_pos = id + 1;
        self.lane_pos[lane] = id + 1;
        Some(i)
    }

    /// From `from` on, then from the front: a rewind or a read error may
    /// have left an unread record behind the read position.
    fn first_unread(&self, from: usize, lane: impl Fn(u8) -> bool) -> Option<usize> {
        (from..self.index.len())
            .chain(0..from)
            .find(|&i| self.index[i].state == EntryState::Unread && lane(self.index[i].lane))
    }

    /// Puts a record handed out back, e.g. after a read error.
    pub fn unread(&mut self, id: u64) {
        if let Some(i) = self.find(id) {
            let e = &mut self.index[i];
            if e.state == EntryState::InFlight {
                e.state = EntryState::Unread;
                let lane = usize::from(e.lane);
                self.in_flight -= 1;
                self.unread += 1;
                self.unread_by_lane[lane] += 1;
                self.read_pos = self.read_pos.min(id);
                self.lane_pos[lane] = self.lane_pos[lane].min(id);
            }
        }
    }

    /// Makes every in-flight record unread again; returns how many.
    pub fn rewind(&mut self) -> usize {
        let mut n = 0;
        for e in self.index.iter_mut() {
            if e.state == EntryState::InFlight {
                e.state = EntryState::Unread;
                self.unread_by_lane[usize::from(e.lane)] += 1;
                n += 1;
            }
        }
        self.in_flight -= n;
        self.unread += n;
        self.read_pos = self.cursor();
        let cursor = self.read_pos;
        self.lane_pos.iter_mut().for_each(|p| *p = cursor);
        n
    }

    /// Takes a record out of the pending set, returning it was pending before
    /// (so the caller may count it).
    pub fn retire(&mut self, i: usize) -> bool {
        let e = &mut self.index[i];
        match e.state {
            EntryState::Retired => return false,
            EntryState::Unread => {
                self.unread -= 1;
                self.unread_by_lane[usize::from(e.lane)] -= 1;
            }
            EntryState::InFlight => self.in_flight -= 1,
        }
        e.state = EntryState::Retired;
        let (len, samples) = (e.record_len(), e.samples);
        self.pending_records -= 1;
        self.pending_samples -= samples;
        self.pending_bytes -= len;
        self.retired_in_index += 1;
        self.generation += 1;
        true
    }

    /// Drops a record found damaged when read.
    pub fn drop_damaged(&mut self, i: usize) {
        if self.retire(i) {
            let samples = self.index[i].samples;
            self.dropped_records_total += 1;
            self.dropped_samples_total += samples;
            self.damaged_records_total += 1;
            self.damaged_samples_total += samples;
        }
    }

    /// Pops retired records off the front; true if the cursor moved.
    pub fn advance(&mut self) -> bool {
        let mut moved = false;
        while self
            .index
            .front()
            .is_some_and(|e| e.state == EntryState::Retired)
        {
            self.index.pop_front();
            self.retired_in_index -= 1;
            moved = true;
        }
        if self.index.is_empty() {
            self.gaps = false;
        }
        moved
    }

    /// Deletes oldest segments from the books until `needed` more bytes fit.
    /// With `pending_too` false only segments holding nothing pending go.
    /// Returns the dropped counts and the segments whose files must go.
    pub fn make_room(&mut self, needed: u64, max: u64, pending_too: bool) -> (u64, u64, Vec<u64>) {
        let (mut records, mut samples, mut doomed) = (0, 0, Vec::new());
        while self.disk_bytes + needed > max {
            let Some((&start, seg)) = self.segments.first_key_value() else {
                break;
            };
            let end = start + seg.len;
            if !pending_too && self.cursor() < end {
                break;
            }
            let seg = self.segments.remove(&start).expect("the first segment");
            self.disk_bytes -= seg.len;
            while self.index.front().is_some_and(|e| e.id < end) {
                if self.retire(0) {
                    records += 1;
                    samples += self.index[0].samples;
                }
                self.index.pop_front();
                self.retired_in_index -= 1;
            }
            if self.active == Some(start) {
                self.active = None;
            }
            doomed.push(start);
        }
        self.advance();
        self.read_pos = self.read_pos.max(self.cursor());
        self.dropped_records_total += records;
        self.dropped_samples_total += samples;
        self.generation += u64::from(!doomed.is_empty());
        (records, samples, doomed)
    }

    /// What the meta file should say now: the first pending record, the
    /// end of what was committed, and the retired runs in between.
    pub fn meta(&self) -> Meta {
        let mut pending = self.index.iter().filter(|e| e.state != EntryState::Retired);
        let Some(first) = pending.next() else {
            return Meta {
                cursor: self.visible_end,
                cursor_counts: self.next_counts,
                end_counts: self.next_counts,
                retired: Vec::new(),
            };
        };
        let mut meta = Meta {
            cursor: first.id,
            cursor_counts: (first.seq, first.samples_before),
            end_counts: self.next_counts,
            retired: Vec::new(),
        };
        let simple = self.retired_in_index == 0
            && !self.gaps
            && self
                .index
                .back()
                .is_some_and(|e| e.next_counts() == self.next_counts);
        if simple {
            return meta;
        }
        let mut prev = first;
        for e in pending.chain(std::iter::once(&END)) {
            let (from, to) = match e.id {
                u64::MAX => (prev.next_counts(), self.next_counts),
                _ => (prev.next_counts(), (e.seq, e.samples_before)),
            };
            if to.0 > from.0 {
                if meta.retired.len() == MAX_RANGES {
                    // Past the cap the meta file stops here: what follows
                    // counts as pending after a crash.
                    meta.end_counts = from;
                    break;
                }
                meta.retired.push(Span {
                    seq: (from.0, to.0),
                    samples: (from.1, to.1),
                });
            }
            prev = e;
        }
        meta
    }
}

/// Stands for "the end of the queue" after the last pending entry.
const END: Entry = Entry {
    id: u64::MAX,
    seq: 0,
    samples_before: 0,
    samples: 0,
    len: 0,
    lane: 0,
    state: EntryState::Unread,
};
