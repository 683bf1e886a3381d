//! File-system durability in one place: files that appear whole or not at
//! all, directory fsync, creating directories durably, the one locking
//! scheme, and removing the temp files a dead process left behind. Every
//! command and the queue use it; it uses nothing else in the crate (as
//! VictoriaMetrics' `lib/persistentqueue` uses only `lib/fs`).
//!
//! # Files written whole
//!
//! [`AtomicFile::create`] opens `<dir>/.<final_name>.tmp.<pid>.<n>` (a dot
//! file, so globbing for `*.csv` never picks up a half-written export; pid and
//! a per-process counter keep concurrent writers apart). [`AtomicFile::commit`]
//! flushes, fsyncs the file, renames it over the final name and fsyncs the
//! directory, so after a crash either the old state or the complete new file
//! is visible, never a truncated one. Dropping an `AtomicFile` without
//! committing removes the temp file: an error or a cancelled run leaves
//! nothing behind. While a file grows, every 8 MiB that reached the kernel
//! are put under writeback at once (`sync_file_range`, a hint), so the
//! fsync of the commit waits for the tail, not the whole file; files
//! made by [`AtomicFile::create_unsynced`] skip that. A file made by
//! [`AtomicFile::create_bulk`] (an export, up to gigabytes, never read back
//! here) is written past the page cache after its first 16 MiB (`direct.rs`).
//! [`write_atomic`] does all of it for bytes in memory. The
//! temp file lives beside the final name because a rename is atomic only
//! within one filesystem.
//!
//! # Temp files of a dead process
//!
//! `kill -9`, a power cut or an OOM kill skip `Drop`, so a temp file can
//! outlive its writer. The writer holds an flock on its temp file until the
//! rename; [`remove_stale_temps`] removes a file of our naming pattern only
//! when the pid in its name is not a running process *and* its lock is free.
//! The pid check covers the instant between creating a temp file and locking
//! it; the lock covers writers in another pid namespace (a container sharing
//! the volume). A pid reused by an unrelated process keeps the file until
//! the next sweep after that process ends: the mistake is always to keep.
//!
//! # Locks
//!
//! [`Lock::acquire`]: an exclusive flock on a lock file, which dies with its
//! process, so a `kill -9` never leaves a lock that refuses the next start.
//! The holder's pid is written inside only for the next contender's error
//! message. Dropping the lock unlinks the file before releasing it; a
//! contender that opened the old file and then gets its lock notices that
//! the path no longer names it and opens afresh, so two processes never
//! hold "the" lock on two inodes of one name.

mod direct;

use direct::FileWriter;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The infix of every temp file name: `.<final>` + `TEMP_INFIX` + `<pid>.<n>`.
const TEMP_INFIX: &str = ".tmp.";

/// Distinguishes temp files of one process that target the same final name.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// How long [`Lock::acquire`] waits for a held lock before reporting it.
/// A child forked by any thread of the holder shares the lock until it
/// execs, so a lock released and taken again in a process that also spawns
/// programs can look held for a moment.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

fn temp_path_for(dir: &Path, final_name: &str) -> PathBuf {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".{final_name}{TEMP_INFIX}{}.{n}",
        std::process::id()
    ))
}

/// Creates a fresh temp file and takes its lock (see the module docs).
fn create_temp(path: &Path) -> io::Result<File> {
    // create_new: never write into a file someone else owns, even a stale
    // temp file left by a crashed process that reused our pid.
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    // Best effort: a filesystem without flock still gets the pid check.
    let _ = file.try_lock();
    Ok(file)
}

/// Creates a fresh temp directory for `dir/final_name` (same naming as temp
/// files) and returns it with its lock: a `.lock` file inside, locked while
/// the returned `File` is open, so [`remove_stale_temps`] leaves it alone.
pub fn create_temp_dir(dir: &Path, final_name: &str) -> io::Result<(PathBuf, File)> {
    let path = temp_path_for(dir, final_name);
    fs::create_dir(&path)?;
    match create_temp(&path.join(".lock")) {
        Ok(lock) => Ok((path, lock)),
        Err(e) => {
            fs::remove_dir_all(&path).ok();
            Err(e)
        }
    }
}

/// The pid in a temp file name of ours, `.<final>.tmp.<pid>.<n>`; `None`
/// for any other name.
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (head, n) = rest.rsplit_once('.')?;
    let (head, pid) = head.rsplit_once('.')?;
    let final_name = head.strip_suffix(TEMP_INFIX.trim_end_matches('.'))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if final_name.is_empty() || !digits(n) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// A file being written under a temp name; see the module docs.
#[derive(Debug)]
pub struct AtomicFile {
    dir: PathBuf,
    final_path: PathBuf,
    temp_path: PathBuf,
    /// Taken by `commit`.
    writer: Option<FileWriter>,
    /// Set once the temp file became the final file: nothing left to clean up.
    renamed: bool,
    /// Whether `commit` fsyncs; see [`AtomicFile::create_unsynced`].
    durable: bool,
    /// The offset up to which the kernel was asked to start writing back
    /// (see [`WRITEBACK_BYTES`]).
    writeback_from: u64,
}

/// Bytes of written file data after which the kernel is asked to start
/// writing them to disk, without waiting. The final fsync then has only
/// the last of them left, instead of the whole file after the last byte:
/// measured on a 490 MB CSV export, that fsync took 0.11 s of a 1 s run.
const WRITEBACK_BYTES: u64 = 8 << 20;

impl AtomicFile {
    /// Creates the temp file for `dir/final_name`. The directory must exist.
    /// An existing file at the final name is untouched until [`commit`](Self::commit).
    pub fn create(dir: &Path, final_name: &str) -> io::Result<AtomicFile> {
        Self::open(dir, final_name, true, FileWriter::buffered)
    }

    /// [`create`](Self::create) for a file that may grow to gigabytes and
    /// that this process does not read back (an export): past its first
    /// 16 MiB it is written past the page cache (`O_DIRECT`, see
    /// `fsutil/direct.rs` for why and how), where the file system allows.
    pub fn create_bulk(dir: &Path, final_name: &str) -> io::Result<AtomicFile> {
        Self::open(dir, final_name, true, FileWriter::bulk)
    }

    /// [`create`](Self::create) for a file whose content is checked by
    /// other means after a crash (gather's window files, whose size and
    /// hash are in an fsynced journal): its [`commit`](Self::commit) renames
    /// into place without any fsync, and it starts no early writeback, since
    /// no fsync waits for it. A crash may leave the final name empty or
    /// short, never a reader-visible temp file.
    pub fn create_unsynced(dir: &Path, final_name: &str) -> io::Result<AtomicFile> {
        Self::open(dir, final_name, false, FileWriter::buffered)
    }

    fn open(
        dir: &Path,
        final_name: &str,
        durable: bool,
        writer: fn(File) -> FileWriter,
    ) -> io::Result<AtomicFile> {
        let temp_path = temp_path_for(dir, final_name);
        let file = create_temp(&temp_path)?;
        Ok(AtomicFile {
            dir: dir.to_path_buf(),
            final_path: dir.join(final_name),
            temp_path,
            writer: Some(writer(file)),
            renamed: false,
            durable,
            writeback_from: 0,
        })
    }

    /// The path the file will have once committed (what errors should name).
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Where the bytes are being written until the commit.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Flushes, fsyncs, renames to the final name and fsyncs the directory
    /// (no fsync at all for a file made by [`create_unsynced`](Self::create_unsynced)).
    /// Returns the final path. On error before the rename the temp file is
    /// removed (by `Drop`) and the final name keeps its previous content.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let mut writer = self.writer.take().expect("writer present until commit");
        writer.finish()?;
        let file = writer.into_file();
        if self.durable {
            file.sync_all()?;
        }
        // The file (and its lock) stays open across the rename, so a sweep
        // in another process never sees an unlocked temp file of ours.
        fs::rename(&self.temp_path, &self.final_path)?;
        self.renamed = true;
        drop(file);
        if self.durable {
            sync_dir(&self.dir)?;
        }
        Ok(self.final_path.clone())
    }

    /// [`commit`](Self::commit) that never replaces: when the final name
    /// exists (another process created it meanwhile) it fails with
    /// `AlreadyExists` and the temp file stays, for the caller to use or drop.
    pub fn commit_new(&mut self) -> io::Result<PathBuf> {
        let writer = self.writer.as_mut().expect("writer present until commit");
        writer.finish()?;
        writer.file().sync_all()?;
        // A hard link fails atomically when the name is taken; rename would replace it.
        fs::hard_link(&self.temp_path, &self.final_path)?;
        self.renamed = true;
        fs::remove_file(&self.temp_path)?;
        sync_dir(&self.dir)?;
        Ok(self.final_path.clone())
    }

    fn writer(&mut self) -> &mut FileWriter {
        self.writer.as_mut().expect("AtomicFile used after commit")
    }

    /// Every [`WRITEBACK_BYTES`] that reached the page cache, starts their
    /// writeback (direct writes skip the page cache: nothing to start).
    fn wrote(&mut self) {
        if !self.durable {
            return;
        }
        let writer = self.writer.as_ref().expect("AtomicFile used after commit");
        let Some(in_kernel) = writer.in_page_cache() else {
            return;
        };
        if in_kernel - self.writeback_from >= WRITEBACK_BYTES {
            start_writeback(writer.file(), self.writeback_from, in_kernel);
            self.writeback_from = in_kernel;
        }
    }
}

/// Asks the kernel to start writing `file`'s bytes `from..to` to disk and
/// returns at once. Only a hint: durability still comes from the fsync of
/// `commit`, so a failure (a file system without it) is ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    use std::os::raw::{c_int, c_uint};
    extern "C" {
        fn sync_file_range(fd: c_int, offset: i64, nbytes: i64, flags: c_uint) -> c_int;
    }
    const SYNC_FILE_RANGE_WRITE: c_uint = 2;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // the call only schedules I/O on it.
    unsafe { sync_file_range(file.as_raw_fd(), offset, len, SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _to: u64) {}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer().write(buf)?;
        self.wrote();
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)?;
        self.wrote();
        Ok(())
    }

    /// Pushes the buffer to the OS; durability comes only with `commit`.
    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Discard buffered bytes without writing them: they are going away.
        let file = self.writer.take().map(FileWriter::into_file);
        if !self.renamed {
            fs::remove_file(&self.temp_path).ok();
        }
        drop(file);
    }
}

/// Replaces `path` with `bytes` durably: temp file, fsync, rename, fsync of
/// the directory. A crash leaves the old content or the new, whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir, name) = split_path(path)?;
    let temp = temp_path_for(dir, name);
    let written = create_temp(&temp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&temp, path)
    });
    if let Err(e) = written {
        fs::remove_file(&temp).ok();
        return Err(e);
    }
    sync_dir(dir)
}

/// The directory (`.` for a bare name) and the file name of `path`.
fn split_path(path: &Path) -> io::Result<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{} is not a file path", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// Makes creations, renames and removals in `dir` durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; NTFS journals the rename.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// `create_dir_all` whose new entries survive a power cut: each directory
/// created is fsynced into its parent, so files fsynced inside it later are
/// not orphaned by a lost directory entry.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        missing.push(d);
        cur = d.parent();
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// Removes the temp files of ours in `dir` that no live process owns (see
/// the module docs) and returns their paths. A missing directory holds none.
/// Each removal is logged.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir && !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        // A temp directory's lock is its `.lock` file (see `create_temp_dir`).
        let lock_path = if is_dir {
            path.join(".lock")
        } else {
            path.clone()
        };
        let Ok(file) = File::open(&lock_path) else {
            continue;
        };
        // Held: a live writer the pid check cannot see (another pid namespace).
        if file.try_lock().is_err() {
            continue;
        }
        let removed_entry = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed_entry {
            Ok(()) => {
                tracing::info!(path = %path.display(), pid, "removed a temp file left by a stopped process");
                removed.push(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// [`remove_stale_temps`] in the directory of the file `path` (whose temp
/// files land there).
pub fn remove_stale_temps_beside(path: &Path) -> io::Result<Vec<PathBuf>> {
    remove_stale_temps(split_path(path)?.0)
}

/// Whether `pid` names a running process (zombies included: keeping is the
/// safe mistake).
#[cfg(target_os = "linux")]
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Without /proc every pid counts as alive: nothing is removed by pid alone.
#[cfg(not(target_os = "linux"))]
pub fn process_alive(_pid: u32) -> bool {
    true
}

/// Why [`Lock::acquire`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another open of the file in this one) holds it.
    #[error("{} is locked by {}", path.display(), holder_text(*holder))]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LockError {
    /// "process 1234", or "another process" when the file held no pid.
    pub fn holder(&self) -> String {
        match self {
            LockError::Held { holder, .. } => holder_text(*holder),
            LockError::Io { .. } => "another process".to_string(),
        }
    }
}

fn holder_text(holder: Option<u32>) -> String {
    holder.map_or_else(|| "another process".to_string(), |p| format!("process {p}"))
}

/// An exclusive lock held until dropped; see the module docs.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Locks `path` (created if missing; its directory must exist) and
    /// writes our pid into it. Waits up to half a second for a holder to let
    /// go, then fails with [`LockError::Held`] naming the holder's pid.
    pub fn acquire(path: &Path) -> Result<Lock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let deadline = Instant::now() + LOCK_PATIENCE;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        holder: text.trim().parse().ok(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
            // The previous holder may have removed the file between our
            // open and our lock: then we hold an orphan; open afresh.
            if !same_file(&file, path) {
                continue;
            }
            file.set_len(0)
                .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
                .map_err(io_err)?;
            return Ok(Lock {
                file,
                path: path.to_path_buf(),
            });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the lock file, then releases the lock, so a clean stop leaves no
/// file behind (a crash leaves it: harmless, the next holder takes it over).
/// Safe because only the holder unlinks, and a waiter that opened the old
/// file notices and opens afresh.
impl Drop for Lock {
    fn drop(&mut self) {
        if same_file(&self.file, &self.path) {
            fs::remove_file(&self.path).ok();
        }
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::direct::BUFFER_BYTES;
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A pid no process has: a child that already ended.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
        pid
    }

    #[test]
    fn commit_renames_to_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(dir.path(), "out.csv").unwrap();
        let temp = f.temp_path().to_path_buf();
        let temp_name = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(temp_name.starts_with(".out.csv.tmp."), "{temp_name}");
        assert_eq!(temp_owner(&temp_name), Some(std::process::id()));
        f.write_all(b"hello\n").unwrap();
        assert!(temp.exists());
        assert!(
            !dir.path().join("out.csv").exists(),
            "not visible before commit"
        );
        let path = f.commit().unwrap();
        assert_eq!(path, dir.path().join("out.csv"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        assert_eq!(entries(dir.path()), ["out.csv"]);
    }

    /// Writeback is started every `WRITEBACK_BYTES` that reached the kernel,
    /// never past them, and changes nothing in what the file holds; a file
    /// created unsynced never starts it.
    #[test]
    fn writeback_starts_behind_the_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(dir.path(), "big").unwrap();
        let mut unsynced = AtomicFile::create_unsynced(dir.path(), "big-unsynced").unwrap();
        let mut want = Vec::new();
        let mut i = 0u32;
        while want.len() < 5 * WRITEBACK_BYTES as usize / 2 {
            // Pieces below and above the buffer's size, through both calls.
            let piece: Vec<u8> = (0..(i * 7919) % (BUFFER_BYTES as u32 * 3))
                .map(|b| (b ^ i) as u8)
                .collect();
            for file in [&mut f, &mut unsynced] {
                if i.is_multiple_of(2) {
                    file.write_all(&piece).unwrap();
                } else {
                    let mut rest = &piece[..];
                    while !rest.is_empty() {
                        let n = file.write(rest).unwrap();
                        rest = &rest[n..];
                    }
                }
            }
            want.extend_from_slice(&piece);
            i += 1;
            let in_kernel = f.writer().in_page_cache().unwrap();
            assert!(f.writeback_from <= in_kernel);
            assert!(in_kernel - f.writeback_from < WRITEBACK_BYTES);
        }
        assert_eq!(f.writer().written(), want.len() as u64);
        assert!(
            f.writeback_from >= 2 * WRITEBACK_BYTES,
            "{}",
            f.writeback_from
        );
        assert_eq!(unsynced.writeback_from, 0);
        let path = f.commit().unwrap();
        assert!(
            fs::read(path).unwrap() == want,
            "the file holds what was written"
        );
        let path = unsynced.commit().unwrap();
        assert!(fs::read(path).unwrap() == want);
    }

    #[test]
    fn commit_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        let mut f = AtomicFile::create(dir.path(), "a").unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "new");
        let mut f = AtomicFile::create_unsynced(dir.path(), "a").unwrap();
        f.write_all(b"newer").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "newer");
        assert_eq!(entries(dir.path()), ["a"]);
    }

    #[test]
    fn drop_without_commit_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        {
            let mut f = AtomicFile::create(dir.path(), "a").unwrap();
            // More than the buffer, so some bytes really reached the temp file.
            f.write_all(&vec![b'x'; BUFFER_BYTES * 2]).unwrap();
            assert_eq!(entries(dir.path()).len(), 2);
        }
        assert_eq!(entries(dir.path()), ["a"]);
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "old");
    }

    /// A bulk file past the size where it goes direct: committed whole and
    /// in place, or, dropped uncommitted, gone with nothing else left.
    #[test]
    fn a_bulk_file_commits_whole_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let len = direct::DIRECT_FROM as usize + 5 * BUFFER_BYTES + 123;
        let want: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
        let mut f = AtomicFile::create_bulk(dir.path(), "big.jsonl").unwrap();
        for piece in want.chunks(BUFFER_BYTES + 17) {
            f.write_all(piece).unwrap();
        }
        f.flush().unwrap();
        let path = f.commit().unwrap();
        assert!(fs::read(&path).unwrap() == want);
        assert_eq!(entries(dir.path()), ["big.jsonl"]);

        let mut dropped = AtomicFile::create_bulk(dir.path(), "dropped.jsonl").unwrap();
        dropped.write_all(&want).unwrap();
        assert_eq!(entries(dir.path()).len(), 2);
        drop(dropped);
        assert_eq!(entries(dir.path()), ["big.jsonl"]);
    }

    #[test]
    fn two_writers_for_one_name_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let a = AtomicFile::create(dir.path(), "x").unwrap();
        let b = AtomicFile::create(dir.path(), "x").unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = AtomicFile::create(&dir.path().join("nope"), "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = write_atomic(&dir.path().join("nope/x"), b"1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cursor");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(dir.path()), ["cursor"]);
    }

    #[test]
    fn temp_names_are_recognised_exactly() {
        assert_eq!(temp_owner(".samples_1.csv.tmp.42.0"), Some(42));
        assert_eq!(temp_owner(".a.tmp.7.12"), Some(7));
        for other in [
            "samples.csv",
            "samples.csv.tmp.42.0",
            ".samples.csv.tmp",
            ".samples.csv.tmp.42",
            ".samples.csv.tmp.x.0",
            ".samples.csv.tmp.42.0x",
            "..tmp.42.0",
            ".tmp.42.0",
            ".gather.json.tmp",
            "cursor.tmp",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let stale = format!(".samples_1.csv.tmp.{dead}.0");
        let alive = format!(".samples_2.csv.tmp.{}.0", std::process::id());
        let held = format!(".samples_3.csv.tmp.{dead}.1");
        for name in [stale.as_str(), &alive, &held, "notes.tmp.1.0", ".x.tmp"] {
            fs::write(dir.path().join(name), "partial").unwrap();
        }
        // A writer in another pid namespace: its pid means nothing here,
        // its lock does.
        let holder = File::open(dir.path().join(&held)).unwrap();
        holder.try_lock().unwrap();
        // A live writer of ours, mid-write.
        let writing = AtomicFile::create(dir.path(), "samples_4.csv").unwrap();

        let removed = remove_stale_temps(dir.path()).unwrap();
        assert_eq!(removed, vec![dir.path().join(&stale)]);
        let left = entries(dir.path());
        assert!(!left.contains(&stale), "{left:?}");
        for kept in [alive.as_str(), &held, "notes.tmp.1.0", ".x.tmp"] {
            assert!(left.iter().any(|n| n == kept), "{kept} removed: {left:?}");
        }
        assert!(writing.temp_path().exists());
        assert!(remove_stale_temps(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn lock_is_exclusive_names_its_holder_and_survives_a_dead_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // A dead holder leaves its pid in the file but no flock.
        fs::write(&path, dead_pid().to_string()).unwrap();
        let lock = Lock::acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            std::process::id().to_string()
        );
        // flock is per open file: a second open, even in this process, is refused.
        match Lock::acquire(&path).unwrap_err() {
            LockError::Held { holder, .. } => assert_eq!(holder, Some(std::process::id())),
            other => panic!("{other}"),
        }
        drop(lock);
        assert!(!path.exists(), "a clean release leaves no lock file");
        let again = Lock::acquire(&path).unwrap();
        drop(again);
        assert!(!path.exists());
    }

    #[test]
    fn a_waiter_on_a_removed_lock_file_opens_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let first = Lock::acquire(&path).unwrap();
        let p = path.clone();
        let waiter = thread::spawn(move || Lock::acquire(&p));
        // The waiter retries for half a second; remove and release meanwhile.
        thread::sleep(Duration::from_millis(50));
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert!(same_file(&second.file, &path), "locked an orphan inode");
    }

    #[test]
    fn create_dir_all_makes_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
    }
}
