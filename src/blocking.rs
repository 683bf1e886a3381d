//! Short blocking work on a small pool of its own.
//!
//! Decoding a received remote-write body, relabeling and encoding a batch,
//! pushing it into a queue (an fsync), reading and acknowledging queued
//! blocks: each holds a thread for milliseconds, many times a second. On
//! tokio's blocking pool these calls wake whichever of its idle threads
//! comes next, so a `spillway run` with three destinations kept 13 of them
//! alive, each with the allocator's own partly used pages. Here at most
//! one thread per core takes them: `run` in `scripts/bench-run.sh` peaked
//! 5 MiB lower (of about 40) with 7 % less CPU, the router in
//! `scripts/bench-router.sh` 4.6 MiB lower (of about 73).
//!
//! Only work that never waits for other blocking work belongs here: a task
//! that waited on a channel could hold every thread of the pool. Long or
//! waiting work (stream decoders, file writers, startup) stays on
//! `tokio::task::spawn_blocking`.

use std::sync::LazyLock;
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// A runtime used only for its blocking pool; it is never driven and
/// lives as long as the process.
static POOL: LazyLock<Option<Runtime>> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    Builder::new_current_thread()
        .max_blocking_threads(threads)
        .thread_name("spillway-work")
        .build()
        .ok()
});

/// `tokio::task::spawn_blocking` on the pool of short work (on tokio's own
/// pool if the pool could not be started).
pub fn spawn_short<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match POOL.as_ref() {
        Some(pool) => pool.spawn_blocking(work),
        None => tokio::task::spawn_blocking(work),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_on_at_most_one_thread_per_core_and_panics_reach_the_caller() {
        let names = Arc::new(Mutex::new(HashSet::new()));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let names = Arc::clone(&names);
                spawn_short(move || {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    let me = std::thread::current();
                    names.lock().unwrap().insert(format!("{:?}", me.id()));
                    assert_eq!(me.name(), Some("spillway-work"));
                    i * 2
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i * 2);
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let used = names.lock().unwrap().len();
        assert!(used <= cores, "{used} threads for {cores} cores");
        let failed = spawn_short(|| panic!("boom")).await.unwrap_err();
        assert!(failed.is_panic());
    }
}
