//! Files that appear whole or not at all: write under a hidden temp name in
//! the destination directory, then rename.
//!
//! [`AtomicFile::create`] opens `<dir>/.<final_name>.tmp.<pid>.<n>` (a dot
//! file, so globbing for `*.csv` never picks up a half-written export; pid and
//! a per-process counter keep concurrent writers apart). Writes go through a
//! buffer. [`AtomicFile::commit`] flushes, fsyncs the file, renames it over
//! the final name and fsyncs the directory, so after a crash either the old
//! state or the complete new file is visible, never a truncated one.
//! Dropping an `AtomicFile` without committing removes the temp file: an
//! error or a cancelled run leaves nothing behind.
//!
//! The temp file lives in the same directory as the final name because a
//! rename is only atomic within one filesystem. Used by every file sink and by
//! bundles; it depends on nothing else in the crate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer size for the writer: large enough that formats writing many small
/// records (CSV, JSON lines) make few syscalls.
const BUFFER_BYTES: usize = 256 * 1024;

/// Distinguishes temp files of one process that target the same final name.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temp name; see the module docs.
#[derive(Debug)]
pub struct AtomicFile {
    dir: PathBuf,
    final_path: PathBuf,
    temp_path: PathBuf,
    /// Taken by `commit`.
    writer: Option<BufWriter<File>>,
    /// Set once the temp file became the final file: nothing left to clean up.
    renamed: bool,
}

impl AtomicFile {
    /// Creates the temp file for `dir/final_name`. The directory must exist.
    /// An existing file at the final name is untouched until [`commit`](Self::commit).
    pub fn create(dir: &Path, final_name: &str) -> io::Result<AtomicFile> {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let temp_name = format!(".{final_name}.tmp.{}.{n}", std::process::id());
        let temp_path = dir.join(temp_name);
        // create_new: never write into a file someone else owns, even a stale
        // temp file left by a crashed process that reused our pid.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        Ok(AtomicFile {
            dir: dir.to_path_buf(),
            final_path: dir.join(final_name),
            temp_path,
            writer: Some(BufWriter::with_capacity(BUFFER_BYTES, file)),
            renamed: false,
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

    /// Flushes, fsyncs, renames to the final name and fsyncs the directory.
    /// Returns the final path. On error before the rename the temp file is
    /// removed (by `Drop`) and the final name keeps its previous content.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let writer = self.writer.take().expect("writer present until commit");
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp_path, &self.final_path)?;
        self.renamed = true;
        sync_dir(&self.dir)?;
        Ok(self.final_path.clone())
    }

    fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("AtomicFile used after commit")
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)
    }

    /// Pushes the buffer to the OS; durability comes only with `commit`.
    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Discard buffered bytes without writing them: they are going away.
            let (file, _) = writer.into_parts();
            drop(file);
        }
        if !self.renamed {
            fs::remove_file(&self.temp_path).ok();
        }
    }
}

/// Makes a rename durable: the new directory entry reaches the disk.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; NTFS journals the rename.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn commit_renames_to_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(dir.path(), "out.csv").unwrap();
        let temp = f.temp_path().to_path_buf();
        assert!(temp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".out.csv.tmp."));
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

    #[test]
    fn commit_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        let mut f = AtomicFile::create(dir.path(), "a").unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "new");
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
    }
}
