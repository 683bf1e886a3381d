//! One-time migration of a queue directory of the first on-disk format
//! (24-byte headers without counts or lanes, a `cursor` file instead of
//! `meta`) to the current one, at open, so that an upgrade keeps what an
//! older spillway had queued.
//!
//! The v1 records from the stored cursor on whose header and payload
//! checksums both match are pushed, in order, into a fresh queue in
//! `<dir>/v2.tmp` (lane 0, their sample counts kept; each push fsynced as
//! usual). Bytes that do not hold an intact record end the scan of their
//! segment (the old format cannot resynchronise) and are reported as
//! damage. The switch is crash-safe:
//!
//! 1. `v2.tmp` complete → renamed to `v2.ready` (the commit point; a crash
//!    before it leaves the v1 queue untouched and the next open starts over);
//! 2. the v1 segments and `cursor` are deleted, the directory fsynced, and
//!    `v2.ready/moving` written: from here on every `.seg` in the directory
//!    is a new one;
//! 3. the new files are renamed into the directory (fsynced), then
//!    `v2.ready` goes.
//!
//! A crash in step 2 or 3 is finished by the next open from where it was.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::meta::{self, META_FILE};
use super::recover::Corruption;
use super::segment;
use super::{io_err, OnFull, Queue, QueueError, QueueOptions};

const TMP_DIR: &str = "v2.tmp";
const READY_DIR: &str = "v2.ready";
const MOVING: &str = "moving";
const V1_CURSOR: &str = "cursor";
const V1_HEADER_LEN: u64 = 24;
/// Records pushed per batch: bounds the memory the copy holds.
const BATCH_BYTES: u64 = 64 << 20;

/// What a migration did, for the recovery report.
#[derive(Debug, Default)]
pub(crate) struct Migrated {
    pub records: u64,
    pub corruptions: Vec<Corruption>,
}

/// Migrates `dir` if it holds a v1 queue (or finishes a migration a crash
/// interrupted); `None` when there was nothing to do.
pub(crate) fn migrate_if_v1(
    dir: &Path,
    segment_bytes: u64,
) -> Result<Option<Migrated>, QueueError> {
    let ready = dir.join(READY_DIR);
    if ready.exists() {
        switch(dir, &ready)?;
        return Ok(Some(Migrated::default()));
    }
    let tmp = dir.join(TMP_DIR);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("remove unfinished migration", &tmp))?;
    }
    let v1 = v1_segments(dir)?;
    if v1.is_empty() {
        return Ok(None);
    }
    let migrated = copy(dir, &v1, &tmp, segment_bytes)?;
    meta::sync_dir(&tmp)?;
    fs::rename(&tmp, &ready).map_err(io_err("commit migration", &ready))?;
    meta::sync_dir(dir)?;
    switch(dir, &ready)?;
    Ok(Some(migrated))
}

/// The segments of `dir`, oldest first, when any starts with a v1 header.
fn v1_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, QueueError> {
    let mut segs = Vec::new();
    let mut any_v1 = false;
    for dirent in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let dirent = dirent.map_err(io_err("list", dir))?;
        let Some(start) = dirent
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_file_name)
        else {
            continue;
        };
        let path = dirent.path();
        let mut b = [0u8; V1_HEADER_LEN as usize];
        let file = File::open(&path).map_err(io_err("open segment", &path))?;
        any_v1 |= file.read_exact_at(&mut b, 0).is_ok() && segment::is_v1_header(&b);
        segs.push((start, path));
    }
    if !any_v1 {
        return Ok(Vec::new());
    }
    segs.sort();
    Ok(segs)
}

/// The v1 cursor: every record below it was acknowledged. A missing or
/// garbled one replays everything (duplicates, never loss).
fn v1_cursor(dir: &Path) -> u64 {
    let Ok(b) = fs::read(dir.join(V1_CURSOR)) else {
        return 0;
    };
    let ok = b.len() == 20
        && b[0..4] == *b"SWCR"
        && b[4] == 1
        && crc32fast::hash(&b[0..16]).to_le_bytes() == b[16..20];
    if ok {
        u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"))
    } else {
        0
    }
}

/// Pushes the pending v1 records into a new queue at `tmp`.
fn copy(
    dir: &Path,
    v1: &[(u64, PathBuf)],
    tmp: &Path,
    segment_bytes: u64,
) -> Result<Migrated, QueueError> {
    let cursor = v1_cursor(dir);
    let opts = QueueOptions {
        segment_bytes,
        on_full: OnFull::Refuse,
        // What the old queue held fits by definition; never drop any of it.
        ..QueueOptions::new(u64::MAX / 4)
    };
    let (q, _) = Queue::open(tmp, opts)?;
    let mut out = Migrated::default();
    let mut batch: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut batch_bytes = 0;
    for (start, path) in v1 {
        let file = File::open(path).map_err(io_err("open segment", path))?;
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        let mut pos = 0;
        while pos < len {
            let Some((payload, samples)) = read_v1(&file, pos, len) else {
                out.corruptions.push(Corruption {
                    segment: path.clone(),
                    offset: start + pos,
                    skipped_bytes: len - pos,
                    records: 1,
                    samples: None,
                    reason:
                        "no intact record of the first queue format here; the rest of this segment \
                             could not be migrated"
                            .into(),
                });
                break;
            };
            let record_len = V1_HEADER_LEN + payload.len() as u64;
            if start + pos >= cursor {
                batch_bytes += record_len;
                batch.push((payload, samples));
                if batch_bytes >= BATCH_BYTES {
                    out.records += push(&q, &mut batch)?;
                    batch_bytes = 0;
                }
            }
            pos += record_len;
        }
    }
    out.records += push(&q, &mut batch)?;
    q.close()?;
    Ok(out)
}

fn push(q: &Queue, batch: &mut Vec<(Vec<u8>, u64)>) -> Result<u64, QueueError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let refs: Vec<(&[u8], u64)> = batch.iter().map(|(p, s)| (p.as_slice(), *s)).collect();
    q.push_batch(&refs)?;
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}

/// The payload and samples of the v1 record at `pos`, if both checksums match.
fn read_v1(file: &File, pos: u64, len: u64) -> Option<(Vec<u8>, u64)> {
    let mut h = [0u8; V1_HEADER_LEN as usize];
    file.read_exact_at(&mut h, pos).ok()?;
    if !segment::is_v1_header(&h) {
        return None;
    }
    let n = u64::from(u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")));
    if n > len - pos - V1_HEADER_LEN {
        return None;
    }
    let mut payload = vec![0u8; n as usize];
    file.read_exact_at(&mut payload, pos + V1_HEADER_LEN).ok()?;
    let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    (crc32fast::hash(&payload) == crc).then(|| {
        (
            payload,
            u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        )
    })
}

/// Steps 2 and 3 of the module docs; safe to run again after a crash.
fn switch(dir: &Path, ready: &Path) -> Result<(), QueueError> {
    let moving = ready.join(MOVING);
    if !moving.exists() {
        for dirent in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let dirent = dirent.map_err(io_err("list", dir))?;
            let name = dirent.file_name();
            let name = name.to_str().unwrap_or("");
            if segment::parse_segment_file_name(name).is_some() || name == V1_CURSOR {
                let path = dirent.path();
                fs::remove_file(&path).map_err(io_err("remove migrated v1 file", &path))?;
            }
        }
        meta::sync_dir(dir)?;
        File::create(&moving)
            .and_then(|f| f.sync_all())
            .map_err(io_err("mark migration", &moving))?;
        meta::sync_dir(ready)?;
    }
    for dirent in fs::read_dir(ready).map_err(io_err("list", ready))? {
        let dirent = dirent.map_err(io_err("list", ready))?;
        let name = dirent.file_name();
        let keep = name
            .to_str()
            .is_some_and(|n| n == META_FILE || segment::parse_segment_file_name(n).is_some());
        if keep {
            let to = dir.join(&name);
            fs::rename(dirent.path(), &to).map_err(io_err("move migrated file", &to))?;
        }
    }
    meta::sync_dir(dir)?;
    fs::remove_dir_all(ready).map_err(io_err("remove migration directory", ready))?;
    meta::sync_dir(dir)
}
