//! Retention: finished jobs, what they created and uploads no job took
//! are removed once the retention window has passed, on a blocking thread.

use super::*;

impl JobManager {
    /// Removes jobs finished more than the retention window ago, with what
    /// they created, and uploads no job took; returns how many jobs and
    /// orphaned uploads were removed. Blocking file work: call it from a
    /// blocking thread ([`spawn_sweeper`](Self::spawn_sweeper) does).
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let retention = self.limits.retention;
        let expired = |f: Option<Instant>| f.is_some_and(|t| now.duration_since(t) >= retention);
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        let mut removed = 0;
        let mut inner = self.lock();
        inner.exports.retain(|_, e| {
            let keep = !expired(e.finished_at);
            if !keep {
                removed += 1;
                if e.snap.spec.owned_dir {
                    dirs.push(e.snap.spec.out_dir.clone());
                }
            }
            keep
        });
        inner.imports.retain(|_, e| {
            let keep = !expired(e.finished_at);
            if !keep {
                removed += 1;
                if e.snap.spec.owned_file {
                    files.push(e.snap.spec.bundle.clone());
                    files.push(crate::bundle::import::default_state_path(
                        &e.snap.spec.bundle,
                    ));
                }
            }
            keep
        });
        let referenced: HashSet<PathBuf> = inner
            .imports
            .values()
            .map(|e| e.snap.spec.bundle.clone())
            .collect();
        drop(inner);
        for d in dirs {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing expired job directory {}: {e}", d.display());
                }
            }
        }
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        removed + self.sweep_orphaned_uploads(&referenced)
    }

    /// Uploads older than the retention window that no job imports (with
    /// their state files), and `.part` files no upload is writing.
    fn sweep_orphaned_uploads(&self, referenced: &HashSet<PathBuf>) -> usize {
        let Some(dir) = &self.uploads else {
            return 0;
        };
        // Temp files of uploads in progress are locked by their writer; those
        // of a process that died are removed here (and at start).
        if let Err(e) = crate::fsutil::remove_stale_temps(dir) {
            tracing::warn!("cleaning up {}: {e}", dir.display());
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let writing = self
            .uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            // A modification time ahead of the clock counts as "just now".
            let old = meta
                .modified()
                .ok()
                .map(|m| m.elapsed().unwrap_or(Duration::ZERO))
                .is_some_and(|age| age >= self.limits.retention);
            let temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| crate::fsutil::temp_owner(n).is_some());
            if !meta.is_file() || !old || temp || writing.contains(&path) {
                continue;
            }
            if referenced.contains(&upload_of(&path)) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!("removed {} (uploaded, never imported)", path.display());
                    removed += 1;
                }
                Err(e) => tracing::warn!("removing orphaned upload {}: {e}", path.display()),
            }
        }
        removed
    }

    /// Sweeps every quarter of the retention window (at most every minute),
    /// each time on a blocking thread.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let every =
            (self.limits.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = me.upgrade() else { return };
                let n = tokio::task::spawn_blocking(move || m.sweep())
                    .await
                    .unwrap_or(0);
                if n > 0 {
                    tracing::info!("removed {n} finished job(s) and unimported upload(s) past the retention window");
                }
            }
        })
    }
}

/// The upload a file in `uploads/` belongs to: itself, or the bundle of a
/// `<bundle>.import-state.json`.
fn upload_of(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    match text.strip_suffix(".import-state.json") {
        Some(bundle) => PathBuf::from(bundle),
        None => path.to_path_buf(),
    }
}
