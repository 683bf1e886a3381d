//! Support-bundle ZIP writer: `metrics.jsonl` deflated while it streams in,
//! then small entries (`metadata.json`, `README.txt`), then the archive's
//! SHA-256 beside it as `<name>.zip.sha256`.
//!
//! Layout of the file, in order:
//! 1. `metrics.jsonl`: written through [`BundleWriter::write_metrics`] in
//!    pieces of any size; deflate (level [`DEFLATE_LEVEL`]) runs as bytes
//!    arrive and a SHA-256 of the uncompressed bytes is kept, so there is no
//!    plaintext temp copy and memory holds one compressor window, whatever
//!    the size. Entries use data descriptors (sizes and CRC after the data),
//!    as a streaming writer must; every ZIP reader (Go's archive/zip used by
//!    vmgather, Python's zipfile, Info-ZIP) follows the central directory.
//!    With `large` set the entry carries ZIP64 sizes, needed past 4 GiB.
//! 2. the small entries, in the order they are added.
//! 3. the central directory.
//!
//! The archive goes to a hidden temp name through [`AtomicFile`] and is
//! renamed into place by [`BundleWriter::commit`]; the archive bytes are
//! hashed as they are written, so no second read is needed for the checksum.
//! Dropping the writer without committing removes the temp file. The
//! `.sha256` file (`<hex>  <name>`, the `sha256sum` format) is written the
//! same way, after the archive is in place.

use crate::fsutil::AtomicFile;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

/// zlib level 1: several times faster than the default 6 for export lines
/// (long runs of digits), at a modestly larger archive; gathering must keep
/// pace with the server's export.
pub const DEFLATE_LEVEL: i64 = 1;

/// The metrics entry every bundle has.
pub const METRICS_ENTRY: &str = "metrics.jsonl";

/// Bytes written and their running SHA-256.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct WrittenBundle {
    pub path: PathBuf,
    pub checksum_path: PathBuf,
    /// Hex SHA-256 of the archive file.
    pub sha256: String,
    pub bytes: u64,
}

/// A bundle being written; see the module docs.
pub struct BundleWriter {
    zip: ZipWriter<StreamWriter<Hashing<AtomicFile>>>,
    name: String,
    dir: PathBuf,
    metrics: Option<(Sha256, u64)>,
    options: SimpleFileOptions,
}

impl BundleWriter {
    /// Creates `dir/name` (under a temp name) and opens the `metrics.jsonl`
    /// entry. `large` must be set when metrics may exceed 4 GiB.
    pub fn create(dir: &Path, name: &str, large: bool) -> io::Result<BundleWriter> {
        let file = AtomicFile::create(dir, name)?;
        let mut zip = ZipWriter::new_stream(Hashing {
            inner: file,
            hasher: Sha256::new(),
            bytes: 0,
        });
        let now = chrono::Utc::now();
        let stamp = {
            use chrono::{Datelike, Timelike};
            zip::DateTime::from_date_and_time(
                now.year().clamp(1980, 2107) as u16,
                now.month() as u8,
                now.day() as u8,
                now.hour() as u8,
                now.minute() as u8,
                now.second() as u8,
            )
            .unwrap_or_default()
        };
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(DEFLATE_LEVEL))
            .last_modified_time(stamp)
            .unix_permissions(0o644);
        zip.start_file(METRICS_ENTRY, options.large_file(large))
            .map_err(zip_err)?;
        Ok(BundleWriter {
            zip,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            metrics: Some((Sha256::new(), 0)),
            options,
        })
    }

    /// Appends bytes to `metrics.jsonl`.
    pub fn write_metrics(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (hasher, n) = self
            .metrics
            .as_mut()
            .ok_or_else(|| io::Error::other("metrics.jsonl is already closed"))?;
        hasher.update(bytes);
        *n += bytes.len() as u64;
        self.zip.write_all(bytes)
    }

    /// Closes `metrics.jsonl`; returns its hex SHA-256 and size.
    pub fn finish_metrics(&mut self) -> io::Result<(String, u64)> {
        let (hasher, n) = self
            .metrics
            .take()
            .ok_or_else(|| io::Error::other("metrics.jsonl is already closed"))?;
        Ok((crate::model::hex(&hasher.finalize()), n))
    }

    /// Adds a small entry (metadata, README); closes `metrics.jsonl` first if open.
    pub fn add_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if self.metrics.is_some() {
            self.finish_metrics()?;
        }
        self.zip.start_file(name, self.options).map_err(zip_err)?;
        self.zip.write_all(bytes)
    }

    /// Writes the central directory, renames the archive into place and
    /// writes `<name>.sha256` beside it.
    pub fn commit(mut self) -> io::Result<WrittenBundle> {
        if self.metrics.is_some() {
            self.finish_metrics()?;
        }
        let stream = self.zip.finish().map_err(zip_err)?;
        let hashing = stream.into_inner();
        let sha256 = crate::model::hex(&hashing.hasher.finalize());
        let bytes = hashing.bytes;
        let path = hashing.inner.commit()?;
        let checksum_name = format!("{}.sha256", self.name);
        let mut sum = AtomicFile::create(&self.dir, &checksum_name)?;
        writeln!(sum, "{sha256}  {}", self.name)?;
        let checksum_path = sum.commit()?;
        Ok(WrittenBundle {
            path,
            checksum_path,
            sha256,
            bytes,
        })
    }
}

fn zip_err(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trip_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BundleWriter::create(dir.path(), "b.zip", false).unwrap();
        let line = b"{\"metric\":{\"__name__\":\"up\"},\"values\":[1],\"timestamps\":[1]}\n";
        for _ in 0..1000 {
            w.write_metrics(line).unwrap();
        }
        let (sha, n) = w.finish_metrics().unwrap();
        assert_eq!(n, 1000 * line.len() as u64);
        w.add_file("metadata.json", b"{}").unwrap();
        let written = w.commit().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let archive = std::fs::read(&written.path).unwrap();
        assert_eq!(crate::model::hex(&Sha256::digest(&archive)), written.sha256);
        assert_eq!(
            std::fs::read_to_string(&written.checksum_path).unwrap(),
            format!("{}  b.zip\n", written.sha256)
        );
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        let mut text = Vec::new();
        z.by_name(METRICS_ENTRY)
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text.len() as u64, n);
        assert_eq!(crate::model::hex(&Sha256::digest(&text)), sha);
        assert_eq!(z.len(), 2);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = BundleWriter::create(dir.path(), "b.zip", true).unwrap();
            w.write_metrics(&vec![b'x'; 1 << 20]).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
