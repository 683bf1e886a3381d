//! The state of one capture key (a capture and the selectors its template
//! gave): which time ranges are wanted, which were copied, and the
//! capture instances that want them. Pure data and arithmetic, no I/O: the
//! manager feeds it breach starts and ends, asks it for the next chunk to
//! copy, and records what a copy did; the store writes it to disk.
//!
//! An *instance* is one capture as users see it: the window
//! `[first breach start - before, last breach end + after)`, capped at
//! `max_duration` from its start. A breach whose own window would overlap
//! an instance's joins that instance (a flapping breach, a second rule, a
//! second series of the same instance: one capture); otherwise it opens a
//! new instance. `copied` holds every range already sent, for every
//! instance the key ever had, so overlapping instances never send a raw
//! sample twice.

use super::config::CaptureDef;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Version of the on-disk format.
pub const STATE_VERSION: u32 = 1;
/// Closed instances remembered per key, for `/api/v1/captures`.
const HISTORY: usize = 10;
/// Copied ranges kept per key; the oldest are forgotten beyond this.
const MAX_COPIED_RANGES: usize = 1000;
/// Breaching series shown per key.
pub const MAX_SHOWN_BREACHING: usize = 20;

/// Half-open `[from, to)` ranges in ms, sorted, disjoint and not touching.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Intervals(Vec<(i64, i64)>);

impl Intervals {
    pub fn add(&mut self, from: i64, to: i64) {
        if from >= to {
            return;
        }
        let (mut from, mut to) = (from, to);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < from {
                out.push((a, b));
            } else if a > to {
                if !placed {
                    out.push((from, to));
                    placed = true;
                }
                out.push((a, b));
            } else {
                from = from.min(a);
                to = to.max(b);
            }
        }
        if !placed {
            out.push((from, to));
        }
        self.0 = out;
        if self.0.len() > MAX_COPIED_RANGES {
            let extra = self.0.len() - MAX_COPIED_RANGES;
            self.0.drain(..extra);
        }
    }

    /// The first part of `[from, to)` not covered.
    pub fn first_gap(&self, from: i64, to: i64) -> Option<(i64, i64)> {
        let mut at = from;
        for &(a, b) in &self.0 {
            if at >= to {
                return None;
            }
            if b <= at {
                continue;
            }
            if a > at {
                return Some((at, a.min(to)));
            }
            at = b;
        }
        (at < to).then_some((at, to))
    }

    pub fn covers(&self, from: i64, to: i64) -> bool {
        self.first_gap(from, to).is_none()
    }

    /// Milliseconds of `[from, to)` covered.
    pub fn covered_ms(&self, from: i64, to: i64) -> i64 {
        self.0
            .iter()
            .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
            .sum()
    }

    #[cfg(test)]
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.0
    }
}

/// One capture: see the module docs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub from_ms: i64,
    /// `breach end + after`; `None` while something breaches.
    pub to_ms: Option<i64>,
    pub breach_start_ms: i64,
    /// The latest breach end seen.
    pub breach_end_ms: Option<i64>,
    /// The window never reaches past `from + max_duration`.
    pub max_duration_ms: i64,
    /// Data time of the latest breaching sample seen.
    pub last_seen_ms: i64,
    pub samples: u64,
    /// Hashes of the series copied so far (at most `max_series`).
    #[serde(with = "hash_set")]
    pub admitted: HashSet<u64>,
    /// Series refused for `max_series`.
    pub refused_series: u64,
    /// Limits hit: `max_series`, `max_samples`, `max_duration`.
    pub truncated: BTreeSet<String>,
    /// Nothing more is copied (`max_samples` hit, or the capture removed).
    pub stopped: bool,
    /// Wall time it opened.
    pub opened_at_ms: i64,
    /// Breaching series of this instance now; not kept across restarts
    /// (the engine finds them again at its first evaluation).
    #[serde(skip)]
    pub open: u32,
    /// Breaching when the process stopped, not yet seen again since.
    #[serde(skip)]
    pub restored: bool,
}

impl Instance {
    fn new(from_ms: i64, breach_start_ms: i64, max_duration_ms: i64, now_ms: i64) -> Instance {
        Instance {
            from_ms,
            to_ms: None,
            breach_start_ms,
            breach_end_ms: None,
            max_duration_ms,
            last_seen_ms: breach_start_ms,
            samples: 0,
            admitted: HashSet::new(),
            refused_series: 0,
            truncated: BTreeSet::new(),
            stopped: false,
            opened_at_ms: now_ms,
            open: 0,
            restored: false,
        }
    }

    /// An instance for a range given by hand: already closed.
    pub fn manual(from_ms: i64, to_ms: i64, now_ms: i64) -> Instance {
        let mut i = Instance::new(from_ms, from_ms, (to_ms - from_ms).max(1), now_ms);
        i.to_ms = Some(to_ms);
        i.breach_end_ms = Some(to_ms);
        i
    }

    pub fn breaching(&self) -> bool {
        self.to_ms.is_none()
    }

    /// The end of the window now (the cap while breaching).
    pub fn end_ms(&self) -> i64 {
        let cap = self.from_ms.saturating_add(self.max_duration_ms);
        self.to_ms.map_or(cap, |t| t.min(cap))
    }

    /// Whether `[from, to]` touches the window known so far (while
    /// breaching: up to `after` past the latest breaching sample seen).
    fn overlaps(&self, from: i64, to: i64, after_ms: i64) -> bool {
        let end = if self.breaching() {
            self.last_seen_ms.saturating_add(after_ms)
        } else {
            self.end_ms()
        };
        from <= end && to >= self.from_ms
    }

    fn absorb(&mut self, other: Instance) {
        self.from_ms = self.from_ms.min(other.from_ms);
        self.breach_start_ms = self.breach_start_ms.min(other.breach_start_ms);
        self.to_ms = match (self.to_ms, other.to_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        self.breach_end_ms = self.breach_end_ms.max(other.breach_end_ms);
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
        self.samples += other.samples;
        self.admitted.extend(other.admitted);
        self.refused_series += other.refused_series;
        self.truncated.extend(other.truncated);
        self.stopped |= other.stopped;
        self.opened_at_ms = self.opened_at_ms.min(other.opened_at_ms);
        self.open += other.open;
        self.restored &= other.restored;
    }
}

/// What `/api/v1/captures` shows of a closed instance.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub from_ms: i64,
    pub to_ms: i64,
    pub breach_start_ms: i64,
    pub breach_end_ms: Option<i64>,
    pub series: usize,
    pub samples: u64,
    pub truncated: BTreeSet<String>,
    pub closed_at_ms: i64,
}

/// A chunk to copy: `[from, to)` for instance `instance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub instance: usize,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Everything known about one capture key.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyState {
    pub version: u32,
    /// `xxh64` of the capture name and the selectors, hex; names the file.
    pub key: String,
    pub capture: String,
    pub selectors: Vec<String>,
    pub copied: Intervals,
    pub instances: Vec<Instance>,
    pub history: Vec<Summary>,
    pub last_error: Option<String>,
    /// Wall time of the last change.
    pub updated_at_ms: i64,
    /// Breaching series by identity, for display.
    #[serde(skip)]
    pub breaching: BTreeMap<u64, String>,
    /// Wall time before which no copy is tried (after a failure).
    #[serde(skip)]
    pub retry_at_ms: i64,
    #[serde(skip)]
    pub failures: u32,
}

/// What applying a breach start did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// A new capture instance.
    Opened,
    /// Joined an instance (merged).
    Joined,
}

impl KeyState {
    pub fn new(key: String, capture: &str, selectors: Vec<String>, now_ms: i64) -> KeyState {
        KeyState {
            version: STATE_VERSION,
            key,
            capture: capture.to_string(),
            selectors,
            copied: Intervals::default(),
            instances: Vec::new(),
            history: Vec::new(),
            last_error: None,
            updated_at_ms: now_ms,
            breaching: BTreeMap::new(),
            retry_at_ms: 0,
            failures: 0,
        }
    }

    /// After loading from disk: instances that were breaching wait to be
    /// seen again (see [`KeyState::expire_restored`]).
    pub fn restored(mut self) -> KeyState {
        for i in &mut self.instances {
            i.restored = i.breaching();
            i.open = 0;
        }
        self
    }

    /// A series of this key started breaching at `at_ms`.
    pub fn start(
        &mut self,
        def: &CaptureDef,
        at_ms: i64,
        identity: u64,
        shown: &str,
        now_ms: i64,
    ) -> Started {
        if self.breaching.len() < MAX_SHOWN_BREACHING || self.breaching.contains_key(&identity) {
            self.breaching.insert(identity, shown.to_string());
        }
        self.updated_at_ms = now_ms;
        let (from, to) = (at_ms - def.before_ms, at_ms + def.after_ms);
        let found = self
            .instances
            .iter()
            .position(|i| i.overlaps(from, to, def.after_ms));
        let started = match found {
            Some(idx) => {
                let i = &mut self.instances[idx];
                i.from_ms = i.from_ms.min(from);
                i.breach_start_ms = i.breach_start_ms.min(at_ms);
                i.last_seen_ms = i.last_seen_ms.max(at_ms);
                i.to_ms = None;
                i.open += 1;
                i.restored = false;
                Started::Joined
            }
            None => {
                let mut i = Instance::new(from, at_ms, def.max_duration_ms, now_ms);
                i.open = 1;
                self.instances.push(i);
                Started::Opened
            }
        };
        self.coalesce(def.after_ms);
        started
    }

    /// A series of this key stopped breaching at `at_ms` (its stale marker).
    pub fn end(&mut self, def: &CaptureDef, at_ms: i64, identity: u64, now_ms: i64) {
        self.breaching.remove(&identity);
        self.updated_at_ms = now_ms;
        let Some(idx) = self.open_instance_at(at_ms) else {
            return;
        };
        let i = &mut self.instances[idx];
        i.open -= 1;
        i.breach_end_ms = Some(i.breach_end_ms.map_or(at_ms, |e| e.max(at_ms)));
        if i.open == 0 {
            i.to_ms = i.breach_end_ms.map(|e| e + def.after_ms);
        }
    }

    /// A breaching sample of this key at `at_ms` (the latest is kept for
    /// restarts, and extends the window a new breach may join).
    pub fn seen(&mut self, at_ms: i64) {
        if let Some(idx) = self.open_instance_at(at_ms) {
            let i = &mut self.instances[idx];
            i.last_seen_ms = i.last_seen_ms.max(at_ms);
        }
    }

    /// The breaching instance a sample at `at_ms` belongs to: the latest
    /// one that started before it.
    fn open_instance_at(&self, at_ms: i64) -> Option<usize> {
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.open > 0 && i.from_ms <= at_ms)
            .max_by_key(|(_, i)| i.from_ms)
            .map(|(idx, _)| idx)
    }

    /// Instances that were breaching before a restart and have not been
    /// seen since `grace_ms` ago: their breach ended while the process
    /// was down, at most an interval after it was last seen.
    pub fn expire_restored(&mut self, def: &CaptureDef, interval_ms: i64) {
        for i in &mut self.instances {
            if i.restored && i.open == 0 {
                i.restored = false;
                let end = i.last_seen_ms + interval_ms;
                i.breach_end_ms = Some(end);
                i.to_ms = Some(end + def.after_ms);
            }
        }
    }

    fn coalesce(&mut self, after_ms: i64) {
        if self.instances.len() < 2 {
            return;
        }
        self.instances.sort_by_key(|i| i.from_ms);
        let mut out: Vec<Instance> = Vec::with_capacity(self.instances.len());
        for i in std::mem::take(&mut self.instances) {
            match out.last_mut() {
                Some(prev) if prev.overlaps(i.from_ms, i.end_ms(), after_ms) => prev.absorb(i),
                _ => out.push(i),
            }
        }
        self.instances = out;
    }

    /// The next chunk to copy, oldest first: a part of an instance's
    /// window not copied yet, at most `chunk` long, ending at or before
    /// `horizon_ms` (data older than that is complete at the source).
    pub fn next_chunk(&self, def: &CaptureDef, horizon_ms: i64) -> Option<Chunk> {
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, i)| !i.stopped)
            .find_map(|(idx, i)| {
                let (a, gap_end) = self.copied.first_gap(i.from_ms, i.end_ms())?;
                let b = gap_end.min(a.saturating_add(def.chunk_ms));
                (b <= horizon_ms).then_some(Chunk {
                    instance: idx,
                    from_ms: a,
                    to_ms: b,
                })
            })
    }

    /// Marks limits reached by time: a window capped by `max_duration`
    /// while its breach goes on is truncated once the cap is behind the
    /// horizon. Returns whether this is new.
    pub fn check_max_duration(&mut self, horizon_ms: i64) -> bool {
        let mut new = false;
        for i in &mut self.instances {
            let cap = i.from_ms.saturating_add(i.max_duration_ms);
            let cut = i.to_ms.is_none_or(|t| t > cap);
            if cut && cap <= horizon_ms && i.truncated.insert("max_duration".into()) {
                new = true;
            }
        }
        new
    }

    /// Instances that are over: nothing breaches, and their window is
    /// copied (or copying stopped). They move to the history.
    pub fn close_finished(&mut self, now_ms: i64) -> Vec<Summary> {
        let mut closed = Vec::new();
        let copied = &self.copied;
        let (done, keep): (Vec<Instance>, Vec<Instance>) = std::mem::take(&mut self.instances)
            .into_iter()
            .partition(|i| {
                let over = i.open == 0 && !i.restored && !i.breaching();
                over && (i.stopped || copied.covers(i.from_ms, i.end_ms()))
            });
        self.instances = keep;
        for i in done {
            let s = Summary {
                from_ms: i.from_ms,
                to_ms: i.end_ms(),
                breach_start_ms: i.breach_start_ms,
                breach_end_ms: i.breach_end_ms,
                series: i.admitted.len(),
                samples: i.samples,
                truncated: i.truncated,
                closed_at_ms: now_ms,
            };
            closed.push(s.clone());
            self.history.push(s);
        }
        if self.history.len() > HISTORY {
            let extra = self.history.len() - HISTORY;
            self.history.drain(..extra);
        }
        if !closed.is_empty() {
            self.updated_at_ms = now_ms;
        }
        closed
    }

    /// Whether anything is left to do or show as open.
    pub fn is_active(&self) -> bool {
        !self.instances.is_empty()
    }
}

mod hash_set {
    use std::collections::HashSet;

    pub fn serialize<S: serde::Serializer>(set: &HashSet<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<u64> = set.iter().copied().collect();
        v.sort_unstable();
        serde::Serialize::serialize(&v, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashSet<u64>, D::Error> {
        let v: Vec<u64> = serde::Deserialize::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    fn def() -> CaptureDef {
        let mut d = CaptureDef::manual("c", vec!["{a=\"1\"}".into()], vec!["d".into()]);
        d.before_ms = 10 * M;
        d.after_ms = 5 * M;
        d.max_duration_ms = 60 * M;
        d.chunk_ms = 5 * M;
        d
    }

    #[test]
    fn intervals_merge_and_find_gaps() {
        let mut iv = Intervals::default();
        iv.add(10, 20);
        iv.add(30, 40);
        iv.add(20, 25);
        assert_eq!(iv.ranges(), [(10, 25), (30, 40)]);
        assert_eq!(iv.first_gap(0, 100), Some((0, 10)));
        assert_eq!(iv.first_gap(10, 100), Some((25, 30)));
        assert_eq!(iv.first_gap(30, 40), None);
        assert_eq!(iv.first_gap(35, 50), Some((40, 50)));
        iv.add(5, 45);
        assert_eq!(iv.ranges(), [(5, 45)]);
        assert!(iv.covers(5, 45));
        assert_eq!(iv.covered_ms(0, 10), 5);
    }

    #[test]
    fn a_breach_streams_in_chunks_and_closes_after() {
        let d = def();
        let mut k = KeyState::new("k".into(), "c", vec![], 0);
        assert_eq!(k.start(&d, 100 * M, 1, "x", 0), Started::Opened);
        // The part before is copyable at once, in chunks.
        let c = k.next_chunk(&d, 100 * M).unwrap();
        assert_eq!((c.from_ms, c.to_ms), (90 * M, 95 * M));
        k.copied.add(c.from_ms, c.to_ms);
        k.copied.add(95 * M, 100 * M);
        // While breaching, only whole chunks behind the horizon.
        assert_eq!(k.next_chunk(&d, 104 * M), None);
        assert_eq!(k.next_chunk(&d, 105 * M).unwrap().to_ms, 105 * M);
        k.copied.add(100 * M, 105 * M);
        k.end(&d, 107 * M, 1, 0);
        assert_eq!(k.instances[0].to_ms, Some(112 * M));
        // The last chunk waits for its end to pass the horizon.
        assert_eq!(k.next_chunk(&d, 109 * M), None);
        let c = k.next_chunk(&d, 112 * M).unwrap();
        assert_eq!((c.from_ms, c.to_ms), (105 * M, 110 * M));
        k.copied.add(105 * M, 110 * M);
        assert!(k.close_finished(0).is_empty());
        k.copied.add(110 * M, 112 * M);
        let closed = k.close_finished(1);
        assert_eq!(closed[0].from_ms, 90 * M);
        assert_eq!(closed[0].to_ms, 112 * M);
        assert!(!k.is_active());
    }

    #[test]
    fn flapping_and_second_series_join_one_instance() {
        let d = def();
        let mut k = KeyState::new("k".into(), "c", vec![], 0);
        k.start(&d, 100 * M, 1, "x", 0);
        k.start(&d, 101 * M, 2, "y", 0);
        k.end(&d, 102 * M, 1, 0);
        assert!(k.instances[0].breaching());
        k.end(&d, 103 * M, 2, 0);
        assert_eq!(k.instances[0].to_ms, Some(108 * M));
        // Back within the after-window: the same instance, breaching again.
        assert_eq!(k.start(&d, 110 * M, 1, "x", 0), Started::Joined);
        assert_eq!(k.instances.len(), 1);
        k.end(&d, 111 * M, 1, 0);
        assert_eq!(k.instances[0].to_ms, Some(116 * M));
        // Far later: a new instance; copied ranges keep it from re-sending.
        k.copied.add(90 * M, 116 * M);
        k.close_finished(0);
        assert_eq!(k.start(&d, 121 * M, 1, "x", 0), Started::Opened);
        let c = k.next_chunk(&d, 200 * M).unwrap();
        assert_eq!(c.from_ms, 116 * M, "starts where the last capture ended");
    }

    #[test]
    fn breaches_in_any_order_give_the_same_windows() {
        // Replay hands one rule's breaches after the other's.
        let d = def();
        let mut k = KeyState::new("k".into(), "c", vec![], 0);
        k.start(&d, 300 * M, 1, "a", 0);
        k.end(&d, 310 * M, 1, 0);
        k.start(&d, 100 * M, 2, "b", 0);
        k.end(&d, 120 * M, 2, 0);
        k.start(&d, 305 * M, 3, "c", 0);
        k.end(&d, 306 * M, 3, 0);
        let mut w: Vec<(i64, i64)> = k
            .instances
            .iter()
            .map(|i| (i.from_ms / M, i.end_ms() / M))
            .collect();
        w.sort();
        assert_eq!(w, [(90, 125), (290, 315)]);
    }

    #[test]
    fn max_duration_caps_a_long_breach() {
        let d = def();
        let mut k = KeyState::new("k".into(), "c", vec![], 0);
        k.start(&d, 100 * M, 1, "x", 0);
        assert_eq!(k.instances[0].end_ms(), 150 * M);
        assert!(!k.check_max_duration(149 * M));
        assert!(k.check_max_duration(150 * M));
        assert!(!k.check_max_duration(151 * M), "counted once");
        k.copied.add(90 * M, 150 * M);
        assert_eq!(k.next_chunk(&d, 500 * M), None);
        // Still breaching: the instance stays until its series end.
        assert!(k.close_finished(0).is_empty());
        k.end(&d, 400 * M, 1, 0);
        assert_eq!(k.close_finished(0).len(), 1);
    }

    #[test]
    fn a_restored_breach_that_is_not_seen_again_ends() {
        let d = def();
        let mut k = KeyState::new("k".into(), "c", vec![], 0);
        k.start(&d, 100 * M, 1, "x", 0);
        k.seen(104 * M);
        let json = serde_json::to_string(&k).unwrap();
        let mut back: KeyState = serde_json::from_str::<KeyState>(&json).unwrap().restored();
        assert!(back.instances[0].restored);
        back.expire_restored(&d, M);
        assert_eq!(back.instances[0].to_ms, Some(110 * M));
        // Seen again in time instead: it joins and goes on.
        let mut again: KeyState = serde_json::from_str::<KeyState>(&json).unwrap().restored();
        again.start(&d, 105 * M, 7, "x", 0);
        again.expire_restored(&d, M);
        assert!(again.instances[0].breaching());
    }
}
