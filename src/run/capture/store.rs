//! Capture keys on disk: `<storage.path>/capture-state/<key>.json`, one
//! file per key ([`KeyState`] as JSON), replaced whole under a temp name
//! and renamed, with the file and the directory fsynced
//! ([`crate::sink::atomic`]). A key is written after every copied chunk,
//! so after any stop (SIGTERM, `kill -9`) it says which ranges reached the
//! destinations' queues; at most the chunk in progress is copied again.
//! A file that cannot be read is renamed to `<key>.json.bad` and reported.

use super::state::{KeyState, STATE_VERSION};
use crate::fsutil::AtomicFile;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A state file bigger than this is not ours: refused before reading.
const MAX_FILE_BYTES: u64 = 32 << 20;

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates the directory if needed.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every key on disk, and a line per file that could not be read.
    pub fn load(&self) -> (Vec<KeyState>, Vec<String>) {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (keys, problems);
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for p in paths {
            match read_key(&p) {
                Ok(k) => keys.push(k),
                Err(e) => {
                    let bad = p.with_extension("json.bad");
                    let _ = std::fs::rename(&p, &bad);
                    problems.push(format!(
                        "capture state {}: {e}; moved to {} and ignored (that capture's copied ranges are forgotten)",
                        p.display(),
                        bad.display()
                    ));
                }
            }
        }
        (keys, problems)
    }

    /// Writes `key` durably (see the module docs).
    pub fn save(&self, key: &KeyState) -> std::io::Result<()> {
        let json = serde_json::to_vec(key).map_err(std::io::Error::other)?;
        let mut f = AtomicFile::create(&self.dir, &format!("{}.json", key.key))?;
        f.write_all(&json)?;
        f.commit().map(|_| ())
    }

    /// Forgets a key no longer needed.
    pub fn remove(&self, key: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{key}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn read_key(path: &Path) -> Result<KeyState, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let key: KeyState = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if key.version != STATE_VERSION {
        return Err(format!(
            "format version {} (this spillway reads {STATE_VERSION})",
            key.version
        ));
    }
    Ok(key.restored())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("capture-state")).unwrap();
        let mut k = KeyState::new("00ff".into(), "c", vec!["{a=\"1\"}".into()], 5);
        k.copied.add(10, 20);
        store.save(&k).unwrap();
        k.copied.add(30, 40);
        store.save(&k).unwrap();
        std::fs::write(store.dir().join("broken.json"), "{not json").unwrap();
        let (keys, problems) = store.load();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].copied.ranges(), [(10, 20), (30, 40)]);
        assert!(problems[0].contains("broken.json"), "{problems:?}");
        assert!(store.dir().join("broken.json.bad").exists());
        // No temp files are left behind.
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        store.remove("00ff").unwrap();
        store.remove("00ff").unwrap();
        assert!(store.load().0.is_empty());
    }
}
