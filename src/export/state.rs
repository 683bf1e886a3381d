//! `--incremental STATE`: where each query's next run starts, so repeated
//! cron runs continue exactly where the last one ended (no gap, no overlap).
//! Written under a temp name and renamed, only after the run's files are
//! complete, and only for queries that succeeded.

use crate::fsutil;
use std::collections::BTreeMap;
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

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        fsutil::write_atomic(path, &text)
    }

    /// Keeps a second export with the same state file out for as long as
    /// the guard lives: both would start from the same place and the later
    /// would overwrite the earlier's progress. The lock is `<STATE>.lock`.
    pub fn lock(path: &Path) -> Result<fsutil::Lock, String> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the directory of --incremental {}: {e}",
                    path.display()
                )
            })?;
        }
        fsutil::Lock::acquire(&lock_path).map_err(|e| match e {
            fsutil::LockError::Held { .. } => format!(
                "incremental state {} is in use by another export ({}); runs sharing a state file must not overlap",
                path.display(),
                e.holder()
            ),
            other => other.to_string(),
        })
    }
}
