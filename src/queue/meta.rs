//! The small files beside the segments: the cursor (the acknowledged
//! position) and the lock that keeps a second process out.
//!
//! The cursor is replaced, never edited: temp file, fsync, rename, fsync of
//! the directory, so a crash leaves either the old value or the new one.
//! Being behind is harmless (records are sent again); garbage is detected by
//! its checksum and treated like a missing file.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{io_err, QueueError};

pub(crate) const CURSOR_FILE: &str = "cursor";
pub(crate) const LOCK_FILE: &str = "lock";
/// Every temporary file ends so; open removes the ones a crash left.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
const CURSOR_TMP: &str = "cursor.tmp";
/// How long open waits for a held lock before reporting it.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

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
    let tmp = dir.join(CURSOR_TMP);
    let path = dir.join(CURSOR_FILE);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&encode_cursor(offset))
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename to cursor", &tmp))?;
    sync_dir(dir)
}

/// Makes creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Takes the queue's exclusive lock. An flock, unlike a pid file, dies with
/// its process, so a `kill -9` never leaves a queue that refuses to open. The
/// pid written inside is only for the error message of the next contender.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    // A child forked by any thread of the holder shares the lock until it
    // execs, so a queue closed and reopened in a process that also spawns
    // programs can find it held for a moment. Wait that out before blaming
    // another instance.
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut attempt = f.try_lock();
    while matches!(attempt, Err(TryLockError::WouldBlock)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
        attempt = f.try_lock();
    }
    match attempt {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(QueueError::Locked {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    f.set_len(0)
        .and_then(|()| f.write_all(std::process::id().to_string().as_bytes()))
        .map_err(io_err("write lock file", &path))?;
    Ok(f)
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
