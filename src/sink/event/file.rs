//! `type: file`: events as JSON lines (or CSV) in `<directory>/<name>.jsonl`
//! (`.csv`), the file a log shipper (Filebeat, Splunk UF, Vector, rsyslog
//! imfile) tails.
//!
//! Rotation: before a write would take the live file past `max_bytes`, or
//! once it is older than `rotate_every`, the live file is fsynced and
//! renamed to `<name>-<seq>-<UTC yyyymmddThhmmss.mmm>.<ext>` (the directory
//! fsynced too), and a new live file starts (CSV: with its header). Only
//! `keep` rotated files stay; older ones are deleted. Age is told by `seq`
//! (one more than the highest in the directory, ten digits so names sort
//! the same way), never by the time stamp: two rotations within one
//! millisecond, or a clock stepped back, must not make `keep` delete the
//! newest file. Names of the earlier `<name>-<time>[-n]` form count as
//! older than any numbered one. Nothing is ever
//! written to a file but whole lines, each delivery in one `write`, and
//! rotation only happens between deliveries, so a tailer following the
//! name sees complete lines in the old file and then the new one: never a
//! half line. Every delivery is fdatasync'ed before its events leave the
//! queue.

use super::config::{FileConfig, FileFormat};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct FileWriter {
    cfg: FileConfig,
    header: Vec<u8>,
    file: Option<File>,
    size: u64,
    opened: Instant,
}

impl FileWriter {
    /// `header` is written at the start of every new file (CSV), may be empty.
    pub fn new(cfg: FileConfig, header: Vec<u8>) -> FileWriter {
        FileWriter {
            cfg,
            header,
            file: None,
            size: 0,
            opened: Instant::now(),
        }
    }

    fn ext(&self) -> &'static str {
        match self.cfg.format {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Csv => "csv",
        }
    }

    /// The live file.
    pub fn live_path(&self) -> PathBuf {
        self.cfg
            .directory
            .join(format!("{}.{}", self.cfg.name, self.ext()))
    }

    fn open(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.cfg.directory)?;
        let path = self.live_path();
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut size = f.metadata()?.len();
        if size == 0 && !self.header.is_empty() {
            f.write_all(&self.header)?;
            size = self.header.len() as u64;
        }
        self.file = Some(f);
        self.size = size;
        self.opened = Instant::now();
        Ok(())
    }

    /// Appends `lines` (whole lines) in one write, rotating first if due,
    /// and syncs them to disk.
    pub fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        let has_data = self.size > self.header.len() as u64;
        let too_big = self
            .cfg
            .max_bytes
            .is_some_and(|m| self.size + lines.len() as u64 > m);
        let too_old = self
            .cfg
            .rotate_every
            .is_some_and(|d| self.opened.elapsed() >= d);
        if has_data && (too_big || too_old) {
            self.rotate()?;
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(lines)?;
        f.sync_data()?;
        self.size += lines.len() as u64;
        Ok(())
    }

    /// Renames the live file aside and starts a new one (see the module docs).
    pub fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let live = self.live_path();
        let seq = self.rotated()?.last().map_or(0, |p| self.seq_of(p)) + 1;
        let stamp = {
            let mut b = Vec::new();
            super::shape::write_rfc3339_ms(&mut b, crate::model::time::now_ms());
            String::from_utf8_lossy(&b)
                .replace(['-', ':'], "")
                .trim_end_matches('Z')
                .to_string()
        };
        let target = self.cfg.directory.join(format!(
            "{}-{seq:010}-{stamp}.{}",
            self.cfg.name,
            self.ext()
        ));
        std::fs::rename(&live, &target)?;
        sync_dir(&self.cfg.directory)?;
        self.open()?;
        sync_dir(&self.cfg.directory)?;
        self.prune()
    }

    /// The rotation number in a rotated file's name; 0 for the older
    /// `<name>-<time>` form (see the module docs).
    fn seq_of(&self, path: &Path) -> u64 {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let rest = name.get(self.cfg.name.len() + 1..).unwrap_or("");
        match rest.split_once('-') {
            Some((seq, _)) if seq.bytes().all(|b| b.is_ascii_digit()) => seq.parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// The rotated files, oldest first.
    pub fn rotated(&self) -> std::io::Result<Vec<PathBuf>> {
        let prefix = format!("{}-", self.cfg.name);
        let suffix = format!(".{}", self.ext());
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.cfg.directory)?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with(&prefix)
                    && n.ends_with(&suffix)
                    && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
            })
            .map(|e| e.path())
            .collect();
        out.sort_by_cached_key(|p| (self.seq_of(p), p.clone()));
        Ok(out)
    }

    fn prune(&self) -> std::io::Result<()> {
        let files = self.rotated()?;
        if files.len() > self.cfg.keep {
            for f in &files[..files.len() - self.cfg.keep] {
                std::fs::remove_file(f)?;
            }
        }
        Ok(())
    }

    /// How long until a time rotation is due (for tests and idle checks).
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, max: Option<u64>, keep: usize) -> FileWriter {
        FileWriter::new(
            FileConfig {
                directory: dir.to_path_buf(),
                name: "events".into(),
                format: FileFormat::Csv,
                max_bytes: max,
                rotate_every: None,
                keep,
            },
            b"h\n".to_vec(),
        )
    }

    #[test]
    fn rotates_by_size_keeps_n_and_never_splits_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), Some(10), 2);
        for i in 0..6 {
            w.write(format!("line{i}\n").as_bytes()).unwrap();
        }
        let rotated = w.rotated().unwrap();
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let live = std::fs::read_to_string(w.live_path()).unwrap();
        assert_eq!(live, "h\nline5\n");
        let last = std::fs::read_to_string(&rotated[1]).unwrap();
        assert_eq!(last, "h\nline4\n");
        // A write bigger than max_bytes still goes whole into a fresh file.
        w.write(b"0123456789abcdef\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(w.live_path()).unwrap(),
            "h\n0123456789abcdef\n"
        );
    }

    /// Rotations closer together than the clock's resolution, or after
    /// the clock stepped back, still keep the newest files: a rotated file
    /// named with a time far in the future (a clock set back since) is
    /// older than every rotation after it.
    #[test]
    fn keep_follows_rotation_order_not_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("events-99991231T235959.999.csv"),
            "h
old0
",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("events-0000000007-99991231T235959.999.csv"),
            "h
old7
",
        )
        .unwrap();
        let mut w = writer(dir.path(), Some(10), 3);
        for i in 0..4 {
            w.write(format!("line{i}\n").as_bytes()).unwrap();
        }
        let rotated = w.rotated().unwrap();
        let names: Vec<String> = rotated
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].starts_with("events-0000000008-"), "{names:?}");
        assert!(names[2].starts_with("events-0000000010-"), "{names:?}");
        let contents: Vec<String> = rotated
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(contents, ["h\nline0\n", "h\nline1\n", "h\nline2\n"]);
    }

    #[test]
    fn a_restart_appends_without_a_second_header() {
        let dir = tempfile::tempdir().unwrap();
        writer(dir.path(), None, 1).write(b"a\n").unwrap();
        writer(dir.path(), None, 1).write(b"b\n").unwrap();
        let live = std::fs::read_to_string(dir.path().join("events.csv")).unwrap();
        assert_eq!(live, "h\na\nb\n");
    }
}
