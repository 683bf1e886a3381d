//! `--incremental STATE`: where each query's next run starts, so repeated
//! cron runs continue exactly where the last one ended (no gap, no overlap).
//! Written under a temp name and renamed, only after the run's files are
//! complete, and only for queries that succeeded.

use crate::sink::atomic::AtomicFile;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct QueryState {
    /// First evaluation timestamp the next run exports.
    pub next_from_ms: i64,
    pub step_ms: i64,
    pub last_run: String,
}

#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct IncrementalState {
    pub version: u32,
    pub queries: BTreeMap<String, QueryState>,
}

impl IncrementalState {
    /// A missing file is a first run; a corrupt one is an error (never silently restart).
    pub fn load(path: &Path) -> Result<IncrementalState, String> {
        match crate::model::input::read_bytes(
            path,
            crate::model::input::MAX_CONFIG_FILE_BYTES,
            "an incremental state file",
        ) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "incremental state {} is not valid ({e}); fix or delete it to start over",
                    path.display()
                )
            }),
            Err(e) if e.is_not_found() => Ok(IncrementalState {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(format!("incremental state: {e}")),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<PathBuf> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::other(format!("{} is not a file path", path.display()))
        })?;
        let mut f = AtomicFile::create(dir, &name.to_string_lossy())?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.commit()
    }
}
