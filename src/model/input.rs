//! Bounded reads of the files a user names: configs, rule files, thresholds,
//! relabel configs, state files, `.sha256` files. A file is read through
//! `take(limit + 1)`, so neither a huge file nor `/dev/zero` can decide how
//! much memory spillway uses; the error names the file and the limit.
//!
//! The one exception to "nothing in `model` does I/O", as `yaml::from_file`:
//! every command reads its inputs through here.

use super::size::format_size;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Configs, rule files, thresholds, relabel configs and state files: three
/// times a 50,000-rule vmalert file (10 MiB).
pub const MAX_CONFIG_FILE_BYTES: u64 = 32 << 20;
/// Files that hold one short value: `.sha256` files, passwords, tokens.
pub const MAX_SMALL_FILE_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is larger than {}, the most spillway reads from {what}", path.display(), format_size(*limit))]
    TooLarge {
        path: PathBuf,
        limit: u64,
        what: &'static str,
    },
    #[error("{} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

impl ReadError {
    /// Whether the file does not exist (some files are optional).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }

    /// The message without the path, for errors that name the file already.
    pub fn reason(&self) -> String {
        match self {
            ReadError::Io { error, .. } => format!("cannot read: {error}"),
            ReadError::TooLarge { limit, what, .. } => format!(
                "larger than {}, the most spillway reads from {what}",
                format_size(*limit)
            ),
            ReadError::NotText { .. } => "not UTF-8 text".to_string(),
        }
    }
}

/// Reads at most `limit` bytes of `path`; more is an error naming `what`
/// the file is ("a rule file").
pub fn read_bytes(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // Room for the whole read at once: growing by doubling would reserve
    // twice the limit for `/dev/zero`. Pages are only touched as filled.
    let known = file.metadata().map(|m| m.len()).unwrap_or(0);
    let room = if known > 0 { known.min(limit) } else { limit };
    let mut buf = Vec::with_capacity(usize::try_from(room.saturating_add(1)).unwrap_or(usize::MAX));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
            what,
        });
    }
    Ok(buf)
}

/// [`read_bytes`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, ReadError> {
    String::from_utf8(read_bytes(path, limit, what)?).map_err(|_| ReadError::NotText {
        path: path.to_path_buf(),
    })
}

/// A config-sized text file ([`MAX_CONFIG_FILE_BYTES`]).
pub fn read_config(path: &Path, what: &'static str) -> Result<String, ReadError> {
    read_text(path, MAX_CONFIG_FILE_BYTES, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (#14.3): `rules check /dev/zero` read without limit.
    #[cfg(unix)]
    #[test]
    fn dev_zero_stops_at_the_limit() {
        let e = read_text(Path::new("/dev/zero"), 1024, "a rule file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero is larger than 1KiB, the most spillway reads from a rule file"
        );
    }

    #[test]
    fn small_files_missing_files_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(read_text(&p, 5, "x").unwrap(), "hello");
        assert!(matches!(
            read_text(&p, 4, "x"),
            Err(ReadError::TooLarge { limit: 4, .. })
        ));
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_text(&p, 5, "x")
            .unwrap_err()
            .to_string()
            .ends_with("is not UTF-8 text"));
        let e = read_text(&dir.path().join("missing"), 5, "x").unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }
}
