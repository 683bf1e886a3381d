//! The small files beside the segments: the cursor (the acknowledged
//! position) and the lock that keeps a second process out.
//!
//! The cursor is replaced, never edited ([`fsutil::write_atomic`]: temp file,
//! fsync, rename, fsync of the directory), so a crash leaves either the old
//! value or the new one.
//! Being behind is harmless (records are sent again); garbage is detected by
//! its checksum and treated like a missing file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::{io_err, QueueError};
use crate::fsutil;

pub(crate) const CURSOR_FILE: &str = "cursor";
pub(crate) const LOCK_FILE: &str = "lock";
/// Temporary files end so (older versions) or follow [`fsutil`]'s naming;
/// open removes the ones a crash left.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// `magic "SWCR" | version u8 | 3 zero bytes | offset u64 LE | crc32 u32 LE of bytes 0..16`
const CURSOR_MAGIC: [u8; 4] = *b"SWCR";
const CURSOR_VERSION: u8 = 1;
const CURSOR_LEN: usize = 20;

/// What was found in the cursor file at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorStatus {
    /// A valid cursor: every record below this logical offset was acknowledged.
    Loaded { offset: u64 },
    /// No cursor file (a new queue, or one that never acknowledged anything).
    Missing,
    /// The file exists but cannot be trusted; replay starts at the oldest
    /// segment, so records may be sent twice but none is skipped.
    Garbled { reason: String },
}

pub(crate) fn encode_cursor(offset: u64) -> [u8; CURSOR_LEN] {
    let mut b = [0u8; CURSOR_LEN];
    b[0..4].copy_from_slice(&CURSOR_MAGIC);
    b[4] = CURSOR_VERSION;
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_cursor(b: &[u8]) -> Result<u64, String> {
    if b.len() != CURSOR_LEN {
        return Err(format!("{} bytes, expected {CURSOR_LEN}", b.len()));
    }
    if b[0..4] != CURSOR_MAGIC {
        return Err("no magic bytes".to_string());
    }
    let stored = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&b[0..16]) != stored {
        return Err("checksum mismatch".to_string());
    }
    if b[4] != CURSOR_VERSION {
        return Err(format!("unknown version {}", b[4]));
    }
    Ok(u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")))
}

pub(crate) fn load_cursor(dir: &Path) -> Result<CursorStatus, QueueError> {
    let path = dir.join(CURSOR_FILE);
    let mut buf = Vec::with_capacity(CURSOR_LEN);
    let read = File::open(&path).and_then(|f| f.take(CURSOR_LEN as u64 + 1).read_to_end(&mut buf));
    match read {
        Ok(_) => Ok(match decode_cursor(&buf) {
            Ok(offset) => CursorStatus::Loaded { offset },
            Err(reason) => CursorStatus::Garbled { reason },
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CursorStatus::Missing),
        Err(e) => Err(io_err("read cursor", &path)(e)),
    }
}

pub(crate) fn store_cursor(dir: &Path, offset: u64) -> Result<(), QueueError> {
    let path = dir.join(CURSOR_FILE);
    fsutil::write_atomic(&path, &encode_cursor(offset)).map_err(io_err("write cursor", &path))
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

    #[test]
    fn cursor_round_trips_and_every_bit_flip_is_caught() {
        let enc = encode_cursor(0xdead_beef_0042);
        assert_eq!(decode_cursor(&enc), Ok(0xdead_beef_0042));
        for bit in 0..CURSOR_LEN * 8 {
            let mut b = enc;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_cursor(&b).is_err(), "bit {bit} flipped unnoticed");
        }
        assert!(decode_cursor(&enc[..CURSOR_LEN - 1]).is_err());
        assert!(decode_cursor(b"").is_err());
    }
}
