//! Checks a bundle before anything is imported (and for `gather --verify`).
//!
//! In this order, stopping at the first problem:
//! 1. The archive's SHA-256 against `<bundle>.sha256` beside it, when present.
//! 2. ZIP safety, from the central directory, before any byte is inflated:
//!    no entry name that is absolute, has a drive letter or a `..`
//!    component; no symlink; no encrypted entry; no duplicate names; at most
//!    [`SafetyLimits::max_entries`] entries; a `metrics.jsonl` at the root;
//!    declared sizes within [`SafetyLimits::max_uncompressed_bytes`] and a
//!    declared ratio (uncompressed / compressed) within
//!    [`SafetyLimits::max_ratio`].
//! 3. While inflating (headers can lie): the same size and ratio limits on
//!    the bytes actually produced, the entry's CRC-32, and every line of
//!    `metrics.jsonl` taken apart by [`line::scan_line`] (the error names
//!    the line number), with its SHA-256 compared to `metrics_sha256` of
//!    `metadata.json` (bundles of vmgather have none: then this check is
//!    reported as skipped), and the lines and samples it holds compared to
//!    `metrics_count` and `samples_count` of a spillway bundle.
//!
//! A plain `.jsonl` bundle gets steps 1 and 3. The scan also yields what the
//! import needs: lines, samples, distinct series, time range, metric names.

use super::line::{self, ScannedLine};
use super::metadata::BundleMetadata;
use super::{io_err, BundleError, CancelToken};
use crate::model::hex;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Limits that tell a bundle from a decompression bomb.
#[derive(Clone, Copy, Debug)]
pub struct SafetyLimits {
    /// Largest uncompressed `metrics.jsonl` accepted (default 32 GiB).
    pub max_uncompressed_bytes: u64,
    /// Largest uncompressed/compressed ratio accepted once an entry exceeds
    /// [`Self::ratio_floor_bytes`] (default 200; export lines deflate
    /// about 5–30×, deflate itself cannot exceed ~1032×).
    pub max_ratio: f64,
    /// Entries smaller than this are not held to the ratio (default 64 MiB).
    pub ratio_floor_bytes: u64,
    pub max_entries: usize,
    /// Largest `metadata.json` read (default 16 MiB).
    pub max_metadata_bytes: u64,
    /// Longest line accepted (default 64 MiB).
    pub max_line_bytes: usize,
}

impl Default for SafetyLimits {
    fn default() -> Self {
        SafetyLimits {
            max_uncompressed_bytes: 32 << 30,
            max_ratio: 200.0,
            ratio_floor_bytes: 64 << 20,
            max_entries: 1000,
            max_metadata_bytes: 16 << 20,
            max_line_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Zip {
        metrics_index: usize,
        compressed: u64,
    },
    Jsonl,
}

/// A bundle whose container passed the checks of steps 1 and 2.
#[derive(Clone, Debug)]
pub struct OpenedBundle {
    pub path: PathBuf,
    kind: Kind,
    /// Size of the file on disk.
    pub file_bytes: u64,
    /// Declared (zip) or actual (jsonl) size of `metrics.jsonl`.
    pub metrics_bytes: u64,
    pub metadata: Option<BundleMetadata>,
    pub archive_sha256: String,
    /// `Some(true)` when a `.sha256` file beside it matched.
    pub archive_checksum: Option<bool>,
    limits: SafetyLimits,
}

fn reject(path: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::Rejected {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Steps 1 and 2 of the module doc.
pub fn open_bundle(path: &Path, limits: SafetyLimits) -> Result<OpenedBundle, BundleError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_bytes = file.metadata().map_err(io_err(path))?.len();
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io_err(path))?;
    let is_zip = n == 4 && &magic == b"PK\x03\x04" || &magic[..n.min(4)] == b"PK\x05\x06";
    let lower = path.to_string_lossy().to_ascii_lowercase();
    if !is_zip && lower.ends_with(".zip") {
        return Err(reject(
            path,
            "not a ZIP archive (no ZIP signature at the start)",
        ));
    }
    let archive_sha256 = sha256_file(path)?;
    let archive_checksum = match read_checksum_file(path)? {
        None => None,
        Some(expected) if expected == archive_sha256 => Some(true),
        Some(expected) => {
            return Err(reject(
                path,
                format!(
                "checksum mismatch: the file's SHA-256 is {archive_sha256}, {} says {expected}; \
                     the bundle is damaged or was changed (copy it again)",
                checksum_path(path).display()
            ),
            ))
        }
    };
    if !is_zip {
        return Ok(OpenedBundle {
            path: path.to_path_buf(),
            kind: Kind::Jsonl,
            file_bytes,
            metrics_bytes: file_bytes,
            metadata: None,
            archive_sha256,
            archive_checksum,
            limits,
        });
    }
    let file = File::open(path).map_err(io_err(path))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| reject(path, format!("not a readable ZIP archive: {e}")))?;
    let meta = zip.metadata();
    if meta.has_duplicate_names() {
        return Err(reject(
            path,
            "the archive holds two entries with the same name",
        ));
    }
    if meta.len() > limits.max_entries {
        return Err(reject(
            path,
            format!(
                "{} entries, more than the {} a bundle may hold",
                meta.len(),
                limits.max_entries
            ),
        ));
    }
    let mut metrics = None;
    let mut metadata_index = None;
    let mut names = Vec::new();
    for i in 0..meta.len() {
        let e = meta
            .entry(i)
            .map_err(|e| reject(path, format!("entry {i}: {e}")))?;
        let raw = e.name_raw();
        let name = String::from_utf8_lossy(raw).into_owned();
        if let Some(why) = unsafe_name(raw) {
            return Err(reject(
                path,
                format!("entry {name:?}: {why}; refusing a path-traversal archive"),
            ));
        }
        if e.is_symlink() {
            return Err(reject(
                path,
                format!("entry {name:?} is a symbolic link; bundles hold plain files only"),
            ));
        }
        if e.encrypted() {
            return Err(reject(path, format!("entry {name:?} is encrypted")));
        }
        let size = e.size();
        let compressed = e.compressed_size().max(1);
        if size > limits.max_uncompressed_bytes {
            return Err(reject(
                path,
                format!(
                    "entry {name:?} declares {size} bytes uncompressed, over the {}-byte limit (a decompression bomb?)",
                    limits.max_uncompressed_bytes
                ),
            ));
        }
        let ratio = size as f64 / compressed as f64;
        if size > limits.ratio_floor_bytes && ratio > limits.max_ratio {
            return Err(reject(
                path,
                format!(
                    "entry {name:?} declares a compression ratio of {ratio:.0}:1 ({size} from {compressed} bytes), \
                     over {:.0}:1: a decompression bomb",
                    limits.max_ratio
                ),
            ));
        }
        match name.as_str() {
            "metrics.jsonl" => metrics = Some((i, compressed, size)),
            "metadata.json" => metadata_index = Some(i),
            _ => {}
        }
        names.push(name);
    }
    let Some((metrics_index, compressed, metrics_bytes)) = metrics else {
        return Err(reject(
            path,
            format!(
                "no metrics.jsonl at the root of the archive (entries: {}); not a support bundle",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let metadata = match metadata_index {
        None => None,
        Some(i) => {
            let f = zip
                .by_index(i)
                .map_err(|e| reject(path, format!("metadata.json: {e}")))?;
            let mut bytes = Vec::new();
            f.take(limits.max_metadata_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| reject(path, format!("metadata.json: {e}")))?;
            if bytes.len() as u64 > limits.max_metadata_bytes {
                return Err(reject(path, "metadata.json is too large"));
            }
            Some(
                serde_json::from_slice::<BundleMetadata>(&bytes)
                    .map_err(|e| reject(path, format!("metadata.json is not valid: {e}")))?,
            )
        }
    };
    Ok(OpenedBundle {
        path: path.to_path_buf(),
        kind: Kind::Zip {
            metrics_index,
            compressed,
        },
        file_bytes,
        metrics_bytes,
        metadata,
        archive_sha256,
        archive_checksum,
        limits,
    })
}

/// Why an entry name is unsafe to have in an archive, if it is.
fn unsafe_name(raw: &[u8]) -> Option<&'static str> {
    if raw.is_empty() {
        return Some("empty name");
    }
    if raw.contains(&0) {
        return Some("NUL in the name");
    }
    if raw[0] == b'/' || raw[0] == b'\\' {
        return Some("absolute path");
    }
    if raw.len() >= 2 && raw[1] == b':' && raw[0].is_ascii_alphabetic() {
        return Some("drive-letter path");
    }
    if raw.split(|&b| b == b'/' || b == b'\\').any(|c| c == b"..") {
        return Some("`..` in the path");
    }
    None
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub fn checksum_path(bundle: &Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The hex digest in `<bundle>.sha256` (`<hex>  <name>` or just `<hex>`), if the file exists.
fn read_checksum_file(bundle: &Path) -> Result<Option<String>, BundleError> {
    let p = checksum_path(bundle);
    let read = crate::model::input::read_text(
        &p,
        crate::model::input::MAX_SMALL_FILE_BYTES,
        "a .sha256 file",
    );
    match read {
        Ok(text) => {
            let hexd = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if hexd.len() != 64 || !hexd.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(reject(
                    bundle,
                    format!("{} does not hold a SHA-256 digest", p.display()),
                ));
            }
            Ok(Some(hexd))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(reject(bundle, e.to_string())),
    }
}

fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Counts what it reads; stops a bomb by size and ratio.
struct Guard<R> {
    inner: R,
    bytes: u64,
    compressed: Option<u64>,
    limits: SafetyLimits,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limits.max_uncompressed_bytes {
            return Err(io::Error::other(format!(
                "metrics.jsonl inflates past the {}-byte limit (a decompression bomb?)",
                self.limits.max_uncompressed_bytes
            )));
        }
        if let Some(c) = self.compressed {
            if self.bytes > self.limits.ratio_floor_bytes
                && self.bytes as f64 / c as f64 > self.limits.max_ratio
            {
                return Err(io::Error::other(format!(
                    "metrics.jsonl inflates more than {:.0}:1 (a decompression bomb)",
                    self.limits.max_ratio
                )));
            }
        }
        Ok(n)
    }
}

/// Blocks of `metrics.jsonl`, inflated and checked against the limits on a
/// thread of their own (and hashed on another, see [`hash_blocks`]), so
/// inflating overlaps whatever the reader does with the lines.
enum Block {
    Data(Vec<u8>),
    Failed(BundleError),
    /// End of the entry, with the hex SHA-256 of all of it.
    Done(String),
}

/// Blocks queued between two stages of the reader (1 MiB each).
const BLOCKS_IN_FLIGHT: usize = 4;

/// The hashing stage: passes the blocks on and puts the SHA-256 of all of
/// them into the closing [`Block::Done`]. The upload pass has none (the
/// check before it hashed the same bytes, and the ZIP's CRC still guards them).
fn hash_blocks(rx: std::sync::mpsc::Receiver<Block>, tx: std::sync::mpsc::SyncSender<Block>) {
    let mut hasher = Sha256::new();
    for block in rx {
        let last = match block {
            Block::Data(d) => {
                hasher.update(&d);
                if tx.send(Block::Data(d)).is_err() {
                    return;
                }
                continue;
            }
            Block::Done(_) => Block::Done(hex(&hasher.finalize())),
            Block::Failed(e) => Block::Failed(e),
        };
        let _ = tx.send(last);
        return;
    }
}

/// A `Read` over the blocks; the digest and any failure are kept aside.
struct BlockRead {
    rx: std::sync::mpsc::Receiver<Block>,
    /// Read blocks go back to the pump, so their pages are not faulted in again.
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    digest: Option<String>,
    failure: Option<BundleError>,
}

impl Read for BlockRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.digest.is_some() {
                return Ok(0);
            }
            if let Some(f) = &self.failure {
                return Err(io::Error::other(f.to_string()));
            }
            match self.rx.recv() {
                Ok(Block::Data(d)) => {
                    let used = std::mem::replace(&mut self.current, d);
                    let _ = self.recycle.try_send(used);
                    self.pos = 0;
                }
                Ok(Block::Done(digest)) => self.digest = Some(digest),
                Ok(Block::Failed(e)) => self.failure = Some(e),
                Err(_) => {
                    self.failure = Some(BundleError::Params("the bundle reader stopped".into()))
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `(line number, offset after the line, the line without its newline)`.
pub type NumberedLine<'a> = (u64, u64, &'a [u8]);

/// Reads `metrics.jsonl` line by line from the start, checked and hashed.
pub struct MetricsReader {
    reader: BufReader<BlockRead>,
    path: PathBuf,
    line: Vec<u8>,
    line_number: u64,
    /// Byte offset in `metrics.jsonl` after the last line read.
    pub offset: u64,
    max_line: usize,
}

impl OpenedBundle {
    /// Starts reading `metrics.jsonl` (see [`Block`]), hashed.
    pub fn metrics_reader(&self) -> MetricsReader {
        self.reader(true)
    }

    /// [`metrics_reader`](Self::metrics_reader) without the SHA-256 (its
    /// [`MetricsReader::finish`] returns an empty digest): for the upload,
    /// after a check that hashed the same entry.
    pub fn upload_reader(&self) -> MetricsReader {
        self.reader(false)
    }

    fn reader(&self, hashed: bool) -> MetricsReader {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Block>(BLOCKS_IN_FLIGHT);
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let this = self.clone();
        // Hashing on a thread of its own: inflating, hashing and reading the
        // lines each take about as long, so one thread for two would set the pace.
        let pump_tx = if hashed {
            let (pump_tx, hash_rx) = std::sync::mpsc::sync_channel::<Block>(BLOCKS_IN_FLIGHT);
            std::thread::spawn(move || hash_blocks(hash_rx, tx));
            pump_tx
        } else {
            tx
        };
        std::thread::spawn(move || {
            let last = match this.pump(&pump_tx, &recycled) {
                Ok(()) => Block::Done(String::new()),
                Err(e) => Block::Failed(e),
            };
            let _ = pump_tx.send(last);
        });
        MetricsReader {
            reader: BufReader::with_capacity(
                1 << 20,
                BlockRead {
                    rx,
                    recycle,
                    current: Vec::new(),
                    pos: 0,
                    digest: None,
                    failure: None,
                },
            ),
            path: self.path.clone(),
            line: Vec::new(),
            line_number: 0,
            offset: 0,
            max_line: self.limits.max_line_bytes,
        }
    }

    /// Sends the blocks. Stops quietly when the reader hangs up.
    fn pump(
        &self,
        tx: &std::sync::mpsc::SyncSender<Block>,
        recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), BundleError> {
        let file = File::open(&self.path).map_err(io_err(&self.path))?;
        match &self.kind {
            Kind::Jsonl => self.send_all(self.guard(Box::new(file), None), tx, recycled),
            Kind::Zip {
                metrics_index,
                compressed,
            } => {
                let mut zip = zip::ZipArchive::new(file)
                    .map_err(|e| reject(&self.path, format!("not a readable ZIP archive: {e}")))?;
                let entry = zip
                    .by_index(*metrics_index)
                    .map_err(|e| reject(&self.path, format!("metrics.jsonl: {e}")))?;
                self.send_all(self.guard(Box::new(entry), Some(*compressed)), tx, recycled)
            }
        }
    }

    fn guard<'a>(
        &self,
        inner: Box<dyn Read + 'a>,
        compressed: Option<u64>,
    ) -> Guard<Box<dyn Read + 'a>> {
        Guard {
            inner,
            bytes: 0,
            compressed,
            limits: self.limits,
        }
    }

    fn send_all(
        &self,
        mut g: Guard<Box<dyn Read + '_>>,
        tx: &std::sync::mpsc::SyncSender<Block>,
        recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), BundleError> {
        loop {
            let mut block = recycled.try_recv().unwrap_or_default();
            block.resize(1 << 20, 0);
            let mut n = 0;
            while n < block.len() {
                match g.read(&mut block[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(reject(&self.path, format!("reading metrics.jsonl: {e}")))
                    }
                }
            }
            if n == 0 {
                return Ok(());
            }
            block.truncate(n);
            if tx.send(Block::Data(block)).is_err() {
                return Ok(());
            }
        }
    }

    pub fn is_zip(&self) -> bool {
        matches!(self.kind, Kind::Zip { .. })
    }
}

impl MetricsReader {
    /// The next non-blank line (without its newline), its 1-based number and
    /// the offset just after it.
    pub fn next_line(&mut self) -> Result<Option<NumberedLine<'_>>, BundleError> {
        loop {
            self.line.clear();
            let n = (&mut self.reader)
                .take(self.max_line as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| self.failure(e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_number += 1;
            if self.line.len() > self.max_line && self.line.last() != Some(&b'\n') {
                return Err(reject(
                    &self.path,
                    format!(
                        "metrics.jsonl line {}: longer than {} bytes",
                        self.line_number, self.max_line
                    ),
                ));
            }
            self.offset += n as u64;
            let mut l: &[u8] = &self.line;
            if let Some(x) = l.strip_suffix(b"\n") {
                l = x;
            }
            if let Some(x) = l.strip_suffix(b"\r") {
                l = x;
            }
            if l.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Reborrow for the caller.
            let len = l.len();
            return Ok(Some((self.line_number, self.offset, &self.line[..len])));
        }
    }

    /// Appends whole lines (newlines and blank lines included, unread) until
    /// `out` holds at least `target` bytes or the entry ends; `false` at the end.
    pub fn read_lines(&mut self, target: usize, out: &mut Vec<u8>) -> Result<bool, BundleError> {
        let before = out.len();
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) => return Err(self.failure(e)),
            };
            if buf.is_empty() {
                return Ok(out.len() > before);
            }
            let room = target.saturating_sub(out.len());
            let take = if buf.len() <= room {
                buf.len()
            } else {
                match memchr::memchr(b'\n', &buf[room..]) {
                    Some(k) => room + k + 1,
                    None => buf.len(),
                }
            };
            out.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            self.offset += take as u64;
            if out.len() >= target && out.last() == Some(&b'\n') {
                return Ok(true);
            }
            if out.len() - before > target + self.max_line {
                return Err(reject(
                    &self.path,
                    format!(
                        "metrics.jsonl has a line longer than {} bytes",
                        self.max_line
                    ),
                ));
            }
        }
    }

    /// Skips whole lines until `offset` (a line boundary saved earlier).
    pub fn skip_to(&mut self, offset: u64) -> Result<(), BundleError> {
        while self.offset < offset {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| self.failure(e))?;
            if n == 0 {
                break;
            }
            self.line_number += 1;
            self.offset += n as u64;
        }
        if self.offset != offset {
            return Err(reject(
                &self.path,
                format!("the saved offset {offset} is not a line boundary of metrics.jsonl (the bundle changed?)"),
            ));
        }
        Ok(())
    }

    /// Reads what is left (so the CRC and the hash cover everything) and
    /// returns the hex SHA-256 of all of `metrics.jsonl`.
    pub fn finish(mut self) -> Result<String, BundleError> {
        io::copy(&mut self.reader, &mut io::sink()).map_err(|e| self.failure(e))?;
        let inner = self.reader.into_inner();
        inner
            .digest
            .ok_or_else(|| BundleError::Params("metrics.jsonl was not read to its end".into()))
    }

    /// The reader thread's own error (bomb, CRC, I/O) rather than its echo.
    fn failure(&mut self, e: io::Error) -> BundleError {
        match self.reader.get_mut().failure.take() {
            Some(f) => f,
            None => reject(&self.path, format!("reading metrics.jsonl: {e}")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the scan of `metrics.jsonl` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub archive_sha256: String,
    /// `Some(true)`: `<bundle>.sha256` matched; `None`: there is none.
    pub archive_checksum: Option<bool>,
    pub metrics_sha256: String,
    /// `Some(true)`: `metadata.json` names this digest; `None`: it names none.
    pub metrics_checksum: Option<bool>,
    pub metadata: Option<BundleMetadata>,
    pub bytes: u64,
    pub lines: u64,
    pub samples: u64,
    pub series: u64,
    /// Lines whose values use NaN/Inf/null/quoted spellings.
    pub special_lines: u64,
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
    /// Distinct metric names (at most [`MAX_NAMES`]; `names_truncated` says if more).
    pub metric_names: BTreeSet<String>,
    pub names_truncated: bool,
    #[serde(skip)]
    pub series_last_ts: HashMap<u64, i64>,
}

pub const MAX_NAMES: usize = 1000;

/// Step 3: every line checked, totals gathered, the checksum compared.
pub fn scan(
    bundle: &OpenedBundle,
    cancel: &CancelToken,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, BundleError> {
    let mut r = VerifyReport {
        path: bundle.path.clone(),
        archive_sha256: bundle.archive_sha256.clone(),
        archive_checksum: bundle.archive_checksum,
        metadata: bundle.metadata.clone(),
        ..Default::default()
    };
    let scanned_all: Result<(), BundleError> = (|| {
        let mut reader = bundle.metrics_reader();
        let (mut min, mut max) = (i64::MAX, i64::MIN);
        let mut last_report = 0u64;
        while let Some((n, _, l)) = reader.next_line()? {
            let scanned: ScannedLine = line::scan_line(l).map_err(|e| {
                reject(
                    &bundle.path,
                    format!("metrics.jsonl line {n} is not a VictoriaMetrics export line: {e}"),
                )
            })?;
            let labels = line::parse_metric(scanned.metric).map_err(|e| {
                reject(
                    &bundle.path,
                    format!("metrics.jsonl line {n} is not a VictoriaMetrics export line: {e}"),
                )
            })?;
            let h = line::series_hash(&labels);
            let last = r.series_last_ts.entry(h).or_insert(i64::MIN);
            *last = (*last).max(scanned.max_ts);
            if r.metric_names.len() < MAX_NAMES {
                r.metric_names.insert(labels.metric_name().to_string());
            } else if !r.metric_names.contains(labels.metric_name()) {
                r.names_truncated = true;
            }
            r.lines += 1;
            r.samples += scanned.samples as u64;
            min = min.min(scanned.min_ts);
            max = max.max(scanned.max_ts);
            if reader.offset - last_report >= 8 << 20 {
                last_report = reader.offset;
                progress(reader.offset);
                if cancel.is_cancelled() {
                    return Err(BundleError::Cancelled);
                }
            }
        }
        r.bytes = reader.offset;
        r.metrics_sha256 = reader.finish()?;
        progress(r.bytes);
        if r.lines > 0 {
            r.min_ts = Some(min);
            r.max_ts = Some(max);
        }
        Ok(())
    })();
    scanned_all?;
    r.series = r.series_last_ts.len() as u64;
    r.metrics_checksum = match r.metadata.as_ref().and_then(|m| m.metrics_sha256.clone()) {
        None => None,
        Some(expected) if expected.eq_ignore_ascii_case(&r.metrics_sha256) => Some(true),
        Some(expected) => {
            return Err(reject(
                &bundle.path,
                format!(
                "checksum mismatch: metrics.jsonl has SHA-256 {}, metadata.json says {expected}; \
                     the bundle is damaged or was changed",
                r.metrics_sha256
            ),
            ))
        }
    };
    if r.lines == 0 {
        return Err(reject(&bundle.path, "metrics.jsonl holds no series"));
    }
    if let Some(reason) = r.metadata.as_ref().and_then(|m| count_mismatch(m, &r)) {
        return Err(reject(&bundle.path, reason));
    }
    Ok(r)
}

/// What a spillway bundle's `metadata.json` counts against what
/// `metrics.jsonl` holds: the digest covers the bytes the packer wrote, so
/// a window written twice would pass it, not these. Bundles of vmgather
/// (no `spillway_version`) are not held to counts they never defined.
fn count_mismatch(metadata: &BundleMetadata, r: &VerifyReport) -> Option<String> {
    metadata.spillway_version.as_ref()?;
    let lines_differ = metadata.metrics_count != r.lines;
    let samples_differ = metadata.samples_count.is_some_and(|s| s != r.samples);
    (lines_differ || samples_differ).then(|| {
        format!(
            "count mismatch: metrics.jsonl holds {} lines and {} samples, metadata.json says \
             {} lines and {} samples; the bundle is damaged or was changed",
            r.lines,
            r.samples,
            metadata.metrics_count,
            metadata
                .samples_count
                .map_or_else(|| "no count of".to_string(), |s| s.to_string())
        )
    })
}

/// `spillway gather --verify`: all checks, nothing sent.
pub fn verify_bundle(path: &Path, limits: SafetyLimits) -> Result<VerifyReport, BundleError> {
    let opened = open_bundle(path, limits)?;
    scan(&opened, &CancelToken::default(), |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names() {
        for bad in ["/etc/passwd", "\\x", "C:/x", "a/../b", "..", "a\\..\\b"] {
            assert!(unsafe_name(bad.as_bytes()).is_some(), "{bad}");
        }
        for ok in ["metrics.jsonl", "a/b.json", "a..b"] {
            assert!(unsafe_name(ok.as_bytes()).is_none(), "{ok}");
        }
    }

    #[test]
    fn the_hashing_stage_digests_every_block_and_the_upload_pass_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        // Several 1 MiB blocks and a partial one.
        let line = "{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[10]}\n";
        let text = line.repeat((3 << 20) / line.len() + 7);
        std::fs::write(&p, &text).unwrap();
        let opened = open_bundle(&p, SafetyLimits::default()).unwrap();
        let mut reader = opened.metrics_reader();
        let mut lines = 0;
        while reader.next_line().unwrap().is_some() {
            lines += 1;
        }
        assert_eq!(lines, (3 << 20) / line.len() + 7);
        assert_eq!(
            reader.finish().unwrap(),
            hex(&Sha256::digest(text.as_bytes()))
        );
        let mut upload = opened.upload_reader();
        let mut body = Vec::new();
        while upload.read_lines(1 << 20, &mut body).unwrap() {}
        assert_eq!(body, text.as_bytes());
        assert_eq!(upload.finish().unwrap(), "");
    }

    #[test]
    fn jsonl_bundle_scans() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        std::fs::write(
            &p,
            "{\"metric\":{\"__name__\":\"a\"},\"values\":[1,2],\"timestamps\":[10,20]}\n\n\
             {\"metric\":{\"__name__\":\"a\"},\"values\":[3],\"timestamps\":[30]}\n\
             {\"metric\":{\"__name__\":\"b\",\"x\":\"1\"},\"values\":[3],\"timestamps\":[5]}",
        )
        .unwrap();
        let r = verify_bundle(&p, SafetyLimits::default()).unwrap();
        assert_eq!((r.lines, r.samples, r.series), (3, 4, 2));
        assert_eq!((r.min_ts, r.max_ts), (Some(5), Some(30)));
        assert_eq!(r.archive_checksum, None);
        std::fs::write(checksum_path(&p), format!("{}  m.jsonl\n", "0".repeat(64))).unwrap();
        let e = verify_bundle(&p, SafetyLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        std::fs::write(checksum_path(&p), format!("{}\n", r.archive_sha256)).unwrap();
        assert_eq!(
            verify_bundle(&p, SafetyLimits::default())
                .unwrap()
                .archive_checksum,
            Some(true)
        );
        std::fs::write(
            &p,
            "{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[1]}\nnot json\n",
        )
        .unwrap();
        std::fs::remove_file(checksum_path(&p)).unwrap();
        let e = verify_bundle(&p, SafetyLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
