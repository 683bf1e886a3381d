//! `spillway_prev_shutdown_unclean`: whether the previous `spillway run` on
//! this `storage.path` ended without its orderly stop (`kill -9`, OOM kill,
//! power loss, a panic). A marker file, `storage.path/spillway.running`, is
//! written once the queues are open (their locks make this process the
//! only one using the directory) and removed as the last step of any
//! stop that ran its course; finding it at start means the last one did
//! not. Queued data survives either way (the queues repair themselves);
//! the metric is there so an alert can page about crash loops.

use std::path::{Path, PathBuf};

/// The marker's name under `storage.path`.
pub const MARKER: &str = "spillway.running";

/// The marker of a running process; [`Marker::remove`] at a clean stop.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
    /// Whether the previous run left its marker behind.
    pub previous_unclean: bool,
}

impl Marker {
    /// Notes whether a marker was left, then writes this process's own
    /// (durably: a crash right after start must still be seen).
    pub fn create(storage: &Path) -> std::io::Result<Marker> {
        let path = storage.join(MARKER);
        let previous_unclean = path.exists();
        std::fs::create_dir_all(storage)?;
        let text = format!(
            "pid {}\nstarted {}\n",
            std::process::id(),
            crate::model::time::format_rfc3339_ms(crate::model::time::now_ms())
        );
        let mut file = crate::fsutil::AtomicFile::create(storage, MARKER)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.commit()?;
        metrics::describe_gauge!(
            "spillway_prev_shutdown_unclean",
            "1 when the previous run on this storage.path ended without an orderly stop (kill -9, OOM, crash)."
        );
        metrics::gauge!("spillway_prev_shutdown_unclean")
            .set(f64::from(u8::from(previous_unclean)));
        Ok(Marker {
            path,
            previous_unclean,
        })
    }

    /// The stop ran its course: the next start is a clean one.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the run marker; the next start will report an unclean stop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_left_behind_means_unclean() {
        let dir = tempfile::tempdir().unwrap();
        let first = Marker::create(dir.path()).unwrap();
        assert!(!first.previous_unclean);
        // The process dies here: the marker stays.
        drop(first);
        let second = Marker::create(dir.path()).unwrap();
        assert!(second.previous_unclean);
        second.remove();
        let third = Marker::create(dir.path()).unwrap();
        assert!(!third.previous_unclean);
        assert!(dir.path().join(MARKER).exists());
    }
}
