//! `--config.check-interval`: reload when the config or a rule file changes
//! on disk, without a signal (vmalert's `-configCheckInterval`). Meant for
//! Kubernetes, where a ConfigMap update replaces the mounted files (an
//! atomic swap of the `..data` symlink) and nothing sends SIGHUP.
//!
//! Every interval the config file and every file its `rule_files` patterns
//! match are hashed (streamed, so a file's size does not decide memory);
//! when the fingerprint differs from the last one, the reloader runs, the
//! same path as SIGHUP. A refused reload is not retried until the files
//! change again. A file that cannot be read changes the fingerprint like
//! any edit; the reload then names the problem.

use super::config::RunConfig;
use super::reload::Reloader;
use super::setup::resolve_pattern;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Hash of the config file and every rule file it names, in order.
pub fn fingerprint(config: &Path) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    hash_file(&mut h, config);
    if let Ok(loaded) = RunConfig::load(config) {
        let base = config.parent().unwrap_or(Path::new(""));
        for pattern in &loaded.config.rule_files {
            let resolved = resolve_pattern(base, pattern);
            for file in super::rules::expand(&resolved).unwrap_or_default() {
                h.update(file.as_os_str().as_encoded_bytes());
                hash_file(&mut h, &file);
            }
        }
    }
    h.digest()
}

fn hash_file(h: &mut xxhash_rust::xxh64::Xxh64, path: &Path) {
    h.update(&[0xff]);
    let Ok(mut f) = std::fs::File::open(path) else {
        h.update(b"<unreadable>");
        return;
    };
    let mut buf = [0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => {
                h.update(b"<read error>");
                break;
            }
        }
    }
}

/// Checks every `interval` until the task is dropped.
pub async fn watch(config: std::path::PathBuf, interval: Duration, reloader: Arc<Reloader>) {
    let path = config.clone();
    let mut last = tokio::task::spawn_blocking(move || fingerprint(&path))
        .await
        .unwrap_or(0);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let path = config.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&path)).await else {
            continue;
        };
        if now != last {
            last = now;
            // Problems are logged and counted by the reloader.
            let _ = reloader.reload("config files changed").await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_file_edit_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("run.yml");
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(&cfg, "rule_files: ['rules/*.yml']\n").unwrap();
        let a = fingerprint(&cfg);
        assert_eq!(a, fingerprint(&cfg));
        std::fs::write(dir.path().join("rules/a.yml"), "groups: []\n").unwrap();
        let b = fingerprint(&cfg);
        assert_ne!(a, b);
        std::fs::write(dir.path().join("rules/a.yml"), "groups: [] \n").unwrap();
        let c = fingerprint(&cfg);
        assert_ne!(b, c);
        std::fs::write(&cfg, "rule_files: ['rules/*.yml']\n# x\n").unwrap();
        assert_ne!(c, fingerprint(&cfg));
    }
}
