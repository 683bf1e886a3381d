//! The small files beside the segments: the meta file (what was
//! acknowledged and what was written) and the lock that keeps a second
//! process out.
//!
//! The meta file is replaced, never edited ([`fsutil::write_atomic`]: temp
//! file, fsync, rename, fsync of the directory), so a crash leaves either the
//! old value or the new one.
//! Being behind is harmless (records are sent again; a loss in the newest
//! records goes uncounted); garbage is detected by its checksum and treated
//! like a missing file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::{io_err, QueueError};
use crate::fsutil;

pub(crate) const META_FILE: &str = "meta";
pub(crate) const LOCK_FILE: &str = "lock";
/// Temporary files end so (older versions) or follow [`fsutil`]'s naming;
/// open removes the ones a crash left.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

const META_MAGIC: [u8; 4] = *b"SWMT";
const META_VERSION: u8 = 2;
const FIXED_LEN: usize = 52;
const RANGE_LEN: usize = 32;
/// Retired ranges stored at most (128 KiB). Past that the meta stops at the
/// first range left out, so the records after it count as pending after a
/// crash: sent again, never skipped.
pub(crate) const MAX_RANGES: usize = 4096;
const MAX_META_LEN: usize = FIXED_LEN + MAX_RANGES * RANGE_LEN + 4;

/// Records `seq.0..seq.1`, which carry samples `samples.0..samples.1` of the
/// queue's running sample count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub seq: (u64, u64),
    pub samples: (u64, u64),
}

/// What the meta file says, as of its last store.
///
/// Every record with a sequence number in `cursor.seq..end.seq` that is not
/// in a `retired` span was pushed (its push returned) and was still waiting
/// for its acknowledgement. Records before `cursor` (by offset and by
/// sequence number) are acknowledged or dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Logical offset of the first pending record.
    pub cursor: u64,
    /// `(seq, samples before)` of that record.
    pub cursor_counts: (u64, u64),
    /// `(seq, samples before)` of the next record to be pushed.
    pub end_counts: (u64, u64),
    /// Acknowledged or dropped records between the two, in order.
    pub retired: Vec<Span>,
}

/// What was found in the meta file at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorStatus {
    /// A valid meta file: every record below this logical offset was
    /// acknowledged.
    Loaded { offset: u64 },
    /// No meta file (a new queue, or one that never stored anything).
    Missing,
    /// The file exists but cannot be trusted; replay starts at the oldest
    /// segment, so records may be sent twice but none is skipped.
    Garbled { reason: String },
}

/// `magic "SWMT" | version u8 | 3 zero bytes | cursor u64 | cursor seq u64 |
/// cursor samples u64 | end seq u64 | end samples u64 | spans u32 |
/// spans × (seq from, seq to, samples from, samples to: u64) | crc32 of all before`
pub(crate) fn encode_meta(m: &Meta) -> Vec<u8> {
    let spans = &m.retired[..m.retired.len().min(MAX_RANGES)];
    let mut b = Vec::with_capacity(FIXED_LEN + spans.len() * RANGE_LEN + 4);
    b.extend_from_slice(&META_MAGIC);
    b.extend_from_slice(&[META_VERSION, 0, 0, 0]);
    for v in [
        m.cursor,
        m.cursor_counts.0,
        m.cursor_counts.1,
        m.end_counts.0,
        m.end_counts.1,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(spans.len() as u32).to_le_bytes());
    for s in spans {
        for v in [s.seq.0, s.seq.1, s.samples.0, s.samples.1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode_meta(b: &[u8]) -> Result<Meta, String> {
    if b.len() < FIXED_LEN + 4 {
        return Err(format!(
            "{} bytes, expected at least {}",
            b.len(),
            FIXED_LEN + 4
        ));
    }
    if b[0..4] != META_MAGIC {
        return Err("no magic bytes".to_string());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch".to_string());
    }
    if b[4] != META_VERSION {
        return Err(format!("unknown version {}", b[4]));
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let n = u32::from_le_bytes(b[48..52].try_into().expect("4 bytes")) as usize;
    if n > MAX_RANGES || body.len() != FIXED_LEN + n * RANGE_LEN {
        return Err(format!("{} bytes do not hold {n} spans", b.len()));
    }
    let retired = (0..n)
        .map(|k| {
            let i = FIXED_LEN + k * RANGE_LEN;
            Span {
                seq: (u64_at(i), u64_at(i + 8)),
                samples: (u64_at(i + 16), u64_at(i + 24)),
            }
        })
        .collect();
    Ok(Meta {
        cursor: u64_at(8),
        cursor_counts: (u64_at(16), u64_at(24)),
        end_counts: (u64_at(32), u64_at(40)),
        retired,
    })
}

/// The meta file's content, or why there is none to trust.
pub(crate) fn load_meta(dir: &Path) -> Result<Result<Meta, CursorStatus>, QueueError> {
    let path = dir.join(META_FILE);
    let mut buf = Vec::new();
    let read =
        File::open(&path).and_then(|f| f.take(MAX_META_LEN as u64 + 1).read_to_end(&mut buf));
    match read {
        Ok(_) => Ok(decode_meta(&buf).map_err(|reason| CursorStatus::Garbled { reason })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Err(CursorStatus::Missing)),
        Err(e) => Err(io_err("read meta", &path)(e)),
    }
}

pub(crate) fn store_meta(dir: &Path, meta: &Meta) -> Result<(), QueueError> {
    let path = dir.join(META_FILE);
    fsutil::write_atomic(&path, &encode_meta(meta)).map_err(io_err("write meta", &path))
}

/// Creates `dir` and any missing parents, then fsyncs the parent of each
/// directory it created, so the new entries survive a power cut.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), QueueError> {
    fsutil::create_dir_all(dir).map_err(io_err("create queue directory", dir))
}

/// Makes creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    fsutil::sync_dir(dir).map_err(io_err("fsync directory", dir))
}

/// Takes the queue's exclusive lock ([`fsutil::Lock`]: an flock, which dies
/// with its process, so a `kill -9` never leaves a queue that refuses to open).
pub(crate) fn lock_dir(dir: &Path) -> Result<fsutil::Lock, QueueError> {
    let path = dir.join(LOCK_FILE);
    fsutil::Lock::acquire(&path).map_err(|e| match e {
        fsutil::LockError::Held { .. } => QueueError::Locked {
            dir: dir.to_path_buf(),
            holder: e.holder(),
        },
        fsutil::LockError::Io { source, .. } => io_err("lock", &path)(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_meta(spans: usize) -> Meta {
        Meta {
            cursor: 0xdead_beef_0042,
            cursor_counts: (7, 700),
            end_counts: (9000, 900_000),
            retired: (0..spans as u64)
                .map(|k| Span {
                    seq: (10 + 3 * k, 11 + 3 * k),
                    samples: (1000 + 30 * k, 1010 + 30 * k),
                })
                .collect(),
        }
    }

    #[test]
    fn meta_round_trips_and_every_bit_flip_is_caught() {
        for spans in [0, 1, 3] {
            let m = sample_meta(spans);
            let enc = encode_meta(&m);
            assert_eq!(decode_meta(&enc), Ok(m));
            for bit in 0..enc.len() * 8 {
                let mut b = enc.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_meta(&b).is_err(), "bit {bit} flipped unnoticed");
            }
            assert!(decode_meta(&enc[..enc.len() - 1]).is_err());
        }
        assert!(decode_meta(b"").is_err());
    }

    #[test]
    fn spans_past_the_cap_are_left_out() {
        let m = sample_meta(MAX_RANGES + 5);
        let back = decode_meta(&encode_meta(&m)).unwrap();
        assert_eq!(back.retired.len(), MAX_RANGES);
        assert_eq!(back.retired[..], m.retired[..MAX_RANGES]);
    }
}
