//! The writer under an [`AtomicFile`](super::AtomicFile): a buffered file
//! that, for a bulk file, goes past the page cache (`O_DIRECT`) once it is
//! big.
//!
//! Why: a buffered write copies every byte into the page cache, and ext4
//! then books each 4 KiB page on its own. On the 2-core test machine that
//! costs about 2 s of system CPU per GB: `dd` of 16.8 GB took 32.5 s of
//! system CPU buffered and 2.0 s with `oflag=direct` in 1 MiB writes. So
//! writing the 15.9 GB of a 24 h JSON-lines export through the page cache
//! took twice as long as fetching its data from the server
//! (`scripts/bench-export.sh` prints both floors). Direct writes also leave
//! the page cache to the machine's other programs instead of filling it
//! with a file this process never reads back.
//!
//! How: the first [`DIRECT_FROM`] bytes are written buffered, so small files
//! behave as they always did. Then the file descriptor gets `O_DIRECT`
//! (`fcntl`), and full 1 MiB pieces, aligned in memory and on disk, go to a
//! thread that writes them while the next piece is filled: two pieces, one
//! filling and one writing. The last piece's unaligned tail is written
//! buffered after `O_DIRECT` is turned off again, and the commit's fsync
//! makes the whole file durable as before (`O_DIRECT` skips the page cache,
//! not the disk's own cache).
//!
//! A file system that refuses `O_DIRECT` (when it is turned on, or on a
//! write) keeps the file buffered, with the same bytes written.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

/// Alignment of a direct write's memory, length and file offset: the
/// largest logical block size of common disks.
const ALIGN: usize = 4096;

/// Bytes of one direct write. Measured with `dd oflag=direct` on the test
/// machine, 4 GB took 3.3 s in 256 KiB writes, 1.8 s in 1 MiB and 1.7 s in
/// 2 MiB ones.
const PIECE: usize = 1 << 20;

/// Bytes a bulk file writes buffered before going direct: the file systems'
/// page cache serves small files well, and a multiple of [`ALIGN`] leaves
/// the file offset aligned for the direct writes.
pub(super) const DIRECT_FROM: u64 = 16 << 20;

/// Buffer size while buffered: large enough that formats writing many
/// small records (CSV, JSON lines) make few syscalls.
pub(super) const BUFFER_BYTES: usize = 256 * 1024;

/// A file being written: buffered, and for a bulk file direct past
/// [`DIRECT_FROM`] bytes.
#[derive(Debug)]
pub(super) struct FileWriter {
    stage: Stage,
    /// Where the file goes direct; `None`: never, or it already did.
    direct_from: Option<u64>,
    written: u64,
}

#[derive(Debug)]
enum Stage {
    Buffered(BufWriter<File>),
    Direct(DirectWriter),
}

impl FileWriter {
    pub(super) fn buffered(file: File) -> FileWriter {
        FileWriter {
            stage: Stage::Buffered(BufWriter::with_capacity(BUFFER_BYTES, file)),
            direct_from: None,
            written: 0,
        }
    }

    /// A writer for a fresh, empty `file` that goes direct past [`DIRECT_FROM`].
    pub(super) fn bulk(file: File) -> FileWriter {
        FileWriter {
            direct_from: Some(DIRECT_FROM),
            ..FileWriter::buffered(file)
        }
    }

    pub(super) fn file(&self) -> &File {
        match &self.stage {
            Stage::Buffered(w) => w.get_ref(),
            Stage::Direct(d) => &d.file,
        }
    }

    /// Bytes handed to the kernel's page cache so far; `None` once the file
    /// writes past the page cache.
    pub(super) fn in_page_cache(&self) -> Option<u64> {
        match &self.stage {
            Stage::Buffered(w) => Some(self.written - w.buffer().len() as u64),
            Stage::Direct(_) => None,
        }
    }

    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.stage, Stage::Direct(_))
    }

    /// Writes everything given so far to the file; nothing may be written after.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        match &mut self.stage {
            Stage::Buffered(w) => w.flush(),
            Stage::Direct(d) => d.finish(),
        }
    }

    /// The file, once no thread writes to it. Bytes that no
    /// [`finish`](Self::finish) wrote are dropped: after a finish there are
    /// none, and a file dropped without one is going away.
    pub(super) fn into_file(self) -> File {
        match self.stage {
            Stage::Buffered(w) => w.into_parts().0,
            Stage::Direct(d) => d.file,
        }
    }

    #[cfg(test)]
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Turns the file direct; a file system that refuses keeps it buffered.
    /// A failed flush stays in the buffer, for the next write to report.
    fn go_direct(&mut self) {
        self.direct_from = None;
        let Stage::Buffered(w) = &mut self.stage else {
            return;
        };
        if w.flush().is_err() {
            return;
        }
        let Ok(file) = w.get_ref().try_clone() else {
            return;
        };
        if let Ok(direct) = DirectWriter::start(file) {
            self.stage = Stage::Direct(direct);
        }
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.stage {
            Stage::Buffered(w) => {
                let room = self.direct_from.map_or(usize::MAX, |at| {
                    usize::try_from(at - self.written).unwrap_or(usize::MAX)
                });
                w.write(&buf[..buf.len().min(room)])?
            }
            Stage::Direct(d) => d.write(buf)?,
        };
        self.written += n as u64;
        if self.direct_from == Some(self.written) {
            self.go_direct();
        }
        Ok(n)
    }

    /// Buffered: pushes the buffer to the kernel. Direct: up to one piece
    /// stays in this process until [`finish`](FileWriter::finish), since
    /// only whole aligned pieces can be written direct (nobody reads a
    /// file before its commit).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stage {
            Stage::Buffered(w) => w.flush(),
            Stage::Direct(_) => Ok(()),
        }
    }
}

/// A piece of memory aligned to [`ALIGN`], in safe code: a vector with room
/// to spare, used from its first aligned byte (it never grows, so it never
/// moves).
#[derive(Default)]
struct Piece {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Piece({} of {PIECE} bytes)", self.len)
    }
}

impl Piece {
    fn new() -> Piece {
        let bytes = vec![0; PIECE + ALIGN];
        let address = bytes.as_ptr().addr();
        let start = address.next_multiple_of(ALIGN) - address;
        Piece {
            bytes,
            start,
            len: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    fn is_full(&self) -> bool {
        self.len == PIECE
    }

    /// Copies as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(PIECE - self.len);
        let at = self.start + self.len;
        self.bytes[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }
}

/// The direct stage: whole pieces go to [`Io`]'s thread, the rest at the end.
#[derive(Debug)]
struct DirectWriter {
    file: File,
    filling: Piece,
    /// `None` once finished.
    io: Option<Io>,
    failed: bool,
}

impl DirectWriter {
    /// Turns `file` (whose offset is a multiple of [`ALIGN`]) direct. The
    /// thread starts first: if the file system refuses `O_DIRECT`, it ends
    /// (dropped) having written nothing, and the file was never changed.
    fn start(file: File) -> io::Result<DirectWriter> {
        let io = Io::spawn(&file)?;
        set_direct(&file, true)?;
        Ok(DirectWriter {
            file,
            filling: Piece::new(),
            io: Some(io),
            failed: false,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(earlier_failure());
        }
        let io = self
            .io
            .as_mut()
            .ok_or_else(|| io::Error::other("written after the file was finished"))?;
        if self.filling.is_full() {
            match io.hand_over(std::mem::take(&mut self.filling)) {
                Ok(empty) => self.filling = empty,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(self.filling.push(buf))
    }

    /// Hands over the aligned part of the last piece, waits for the thread,
    /// turns `O_DIRECT` off and writes the tail. Done once; a failed writer
    /// keeps failing.
    fn finish(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(earlier_failure());
        }
        let Some(mut io) = self.io.take() else {
            return Ok(());
        };
        let finished = self.write_last_piece(&mut io);
        self.failed = finished.is_err();
        finished
    }

    fn write_last_piece(&mut self, io: &mut Io) -> io::Result<()> {
        let aligned = self.filling.len / ALIGN * ALIGN;
        let tail = self.filling.filled()[aligned..].to_vec();
        self.filling.len = aligned;
        if aligned > 0 {
            io.send(std::mem::take(&mut self.filling))?;
        }
        io.close()?;
        set_direct(&self.file, false)?;
        self.file.write_all(&tail)
    }
}

fn earlier_failure() -> io::Error {
    io::Error::other("an earlier write to this file failed")
}

/// The thread writing full pieces, and the two channels to it: full pieces
/// there, emptied ones (or the error that stopped it) back.
#[derive(Debug)]
struct Io {
    full: Option<SyncSender<Piece>>,
    emptied: Receiver<io::Result<Piece>>,
    /// The second piece, until it is first needed.
    spare: Option<Piece>,
    thread: Option<JoinHandle<()>>,
}

impl Io {
    fn spawn(file: &File) -> io::Result<Io> {
        let file = file.try_clone()?;
        let (full, pieces) = mpsc::sync_channel(1);
        let (done, emptied) = mpsc::sync_channel(2);
        let thread = thread::Builder::new()
            .name("direct-write".into())
            .spawn(move || write_pieces(file, pieces, done))?;
        Ok(Io {
            full: Some(full),
            emptied,
            spare: Some(Piece::new()),
            thread: Some(thread),
        })
    }

    /// Sends `full` to be written; returns an empty piece to fill next
    /// (waiting for the one being written when both are busy).
    fn hand_over(&mut self, full: Piece) -> io::Result<Piece> {
        self.send(full)?;
        if let Some(piece) = self.spare.take() {
            return Ok(piece);
        }
        match self.emptied.recv() {
            Ok(emptied) => emptied,
            Err(_) => Err(self.ended()),
        }
    }

    fn send(&mut self, piece: Piece) -> io::Result<()> {
        let sent = self
            .full
            .as_ref()
            .is_some_and(|full| full.send(piece).is_ok());
        if sent {
            return Ok(());
        }
        Err(self.ended())
    }

    /// Why the thread is gone: the error it sent back.
    fn ended(&mut self) -> io::Error {
        self.close()
            .err()
            .unwrap_or_else(|| io::Error::other("the file's writing thread ended"))
    }

    /// Lets the thread write what it was given and end; the first error it met.
    fn close(&mut self) -> io::Result<()> {
        drop(self.full.take());
        let mut first_error = None;
        while let Ok(result) = self.emptied.recv() {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                first_error.get_or_insert_with(|| io::Error::other("the writing thread panicked"));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The writing thread: writes each piece in turn and sends it back emptied;
/// stops at the first error, which it sends instead.
fn write_pieces(mut file: File, pieces: Receiver<Piece>, done: SyncSender<io::Result<Piece>>) {
    let mut direct = true;
    for mut piece in pieces {
        let result = write_through(&mut file, piece.filled(), &mut direct);
        piece.len = 0;
        let failed = result.is_err();
        if done.send(result.map(|()| piece)).is_err() || failed {
            return;
        }
    }
}

/// Writes all of `data`; a file system refusing the direct write (EINVAL,
/// EOPNOTSUPP) gets it, and every later write to the file, buffered.
fn write_through(file: &mut File, mut data: &[u8], direct: &mut bool) -> io::Result<()> {
    while !data.is_empty() {
        match file.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if *direct && refuses_direct(&e) => {
                set_direct(file, false)?;
                *direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a write failed because the file system takes no direct writes
/// (of this alignment), rather than for a reason a buffered write would share.
fn refuses_direct(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// Turns `O_DIRECT` on or off for `file`'s open file description.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL read and set the status flags of a
    // descriptor that stays open while `file` is borrowed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if wanted != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere files stay buffered: turning direct on fails, off has nothing to do.
#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        return Err(io::ErrorKind::Unsupported.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Bytes that differ at every offset of a piece, so a piece written
    /// twice, lost or out of place shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i ^ (i >> 8) ^ (i >> 20)) as u8)
            .collect()
    }

    fn direct_flag(file: &File) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: reads the status flags of an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_DIRECT != 0
    }

    /// Whether the file system of `dir` takes direct writes at all.
    fn takes_direct_writes(dir: &std::path::Path) -> bool {
        let file = File::create(dir.join("probe")).unwrap();
        set_direct(&file, true).is_ok()
    }

    /// A temp directory on a file system that takes direct writes; the
    /// tests of the direct path fail (never skip) without one.
    fn dir_taking_direct_writes() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            takes_direct_writes(dir.path()),
            "the test needs a temp directory on a file system that takes O_DIRECT (ext4, xfs, btrfs, tmpfs)"
        );
        dir
    }

    fn write_in_pieces(writer: &mut FileWriter, data: &[u8], sizes: &[usize]) {
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            writer.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            i += 1;
        }
    }

    /// Sizes just below, at and above where the file goes direct and the
    /// pieces' edges, written in pieces that straddle both: the file holds
    /// exactly the bytes, and goes direct where the file system allows.
    #[test]
    fn a_bulk_file_holds_exactly_what_was_written_across_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let direct_ok = takes_direct_writes(dir.path());
        let from = DIRECT_FROM as usize;
        for (n, len) in [
            from - 1,
            from,
            from + 1,
            from + PIECE,
            from + 2 * PIECE + ALIGN,
            from + 3 * PIECE + 4097,
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(len);
            let path = dir.path().join(format!("bulk-{n}"));
            let mut writer = FileWriter::bulk(File::create(&path).unwrap());
            write_in_pieces(
                &mut writer,
                &data,
                &[1, 4095, 333_333, PIECE + 7, 3 * PIECE],
            );
            let direct = writer.is_direct();
            assert_eq!(direct, direct_ok && len >= from, "length {len}");
            if direct {
                assert!(direct_flag(writer.file()));
            }
            writer.finish().unwrap();
            let file = writer.into_file();
            assert!(!direct_flag(&file), "O_DIRECT is off after the finish");
            file.sync_all().unwrap();
            assert!(fs::read(&path).unwrap() == data, "length {len}");
        }
    }

    #[test]
    fn a_plain_file_never_goes_direct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        let data = pattern(DIRECT_FROM as usize + PIECE);
        let mut writer = FileWriter::buffered(File::create(&path).unwrap());
        write_in_pieces(&mut writer, &data, &[PIECE]);
        assert!(!writer.is_direct());
        assert_eq!(writer.in_page_cache(), Some(data.len() as u64));
        writer.finish().unwrap();
        drop(writer.into_file());
        assert!(fs::read(&path).unwrap() == data);
    }

    /// A direct write the file system refuses (here: from memory that is not
    /// aligned) is written buffered, and so is every later one.
    #[test]
    fn a_refused_direct_write_is_written_buffered() {
        let dir = dir_taking_direct_writes();
        let path = dir.path().join("refused");
        let mut file = File::create(&path).unwrap();
        set_direct(&file, true).unwrap();
        let mut piece = Piece::new();
        piece.push(&pattern(PIECE));
        let unaligned = &piece.filled()[1..ALIGN + 1];
        let mut direct = true;
        write_through(&mut file, unaligned, &mut direct).unwrap();
        assert!(!direct);
        assert!(!direct_flag(&file));
        write_through(&mut file, &piece.filled()[..3], &mut direct).unwrap();
        let mut want = unaligned.to_vec();
        want.extend_from_slice(&piece.filled()[..3]);
        assert_eq!(fs::read(&path).unwrap(), want);
    }

    /// A failing write on the thread reaches the writer: at a later write or
    /// at the finish, never lost.
    #[test]
    fn an_error_of_the_writing_thread_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        fs::write(&path, b"").unwrap();
        let read_only = File::open(&path).unwrap();
        let Ok(mut writer) = DirectWriter::start(read_only) else {
            panic!("the test needs a file system that takes O_DIRECT");
        };
        let data = pattern(3 * PIECE);
        let outcome = (|| {
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = writer.write(rest)?;
                rest = &rest[n..];
            }
            writer.finish()
        })();
        let error = outcome.expect_err("a read-only descriptor cannot be written");
        assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error}");
        assert!(writer.finish().is_err(), "and the writer stays failed");
    }

    /// Descriptors of this process open on `path`.
    fn open_on(path: &std::path::Path) -> usize {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    /// Discarding a direct writer ends its thread: once it returns the
    /// file, nothing else holds the file open.
    #[test]
    fn discarding_a_direct_writer_ends_its_thread() {
        let dir = dir_taking_direct_writes();
        let path = dir.path().join("dropped");
        let mut writer = FileWriter::bulk(File::create(&path).unwrap());
        write_in_pieces(
            &mut writer,
            &pattern(DIRECT_FROM as usize + 3 * PIECE),
            &[PIECE],
        );
        assert!(writer.is_direct());
        assert_eq!(
            open_on(&path),
            2,
            "the writer's descriptor and its thread's"
        );
        let file = writer.into_file();
        assert_eq!(open_on(&path), 1);
        drop(file);
        assert_eq!(open_on(&path), 0);
    }
}
