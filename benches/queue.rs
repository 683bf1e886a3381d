//! Queue write and read throughput, swept over record sizes (1 KiB, 64 KiB,
//! 1 MiB) as VictoriaMetrics' `fastqueue_timing_test.go` sweeps block sizes.
//!
//! Every figure includes the fsyncs the guarantee costs, so it measures the
//! disk as much as the code: run it on the file system `storage.path` will
//! use (`SPILLWAY_BENCH_DIR`, default the system temp dir; tmpfs makes fsync
//! free and the numbers meaningless). Each push phase stops after 64 MiB or
//! 3 s, whichever comes first; the read phases share what was pushed.
//!
//! "meta every op" is `cursor_sync_interval = 0` (the meta file stored by
//! every push and ack: exact loss counting, nothing acknowledged sent
//! twice); "meta <= 1/s" is what destinations use.
//!
//! `cargo bench --bench queue`; `BENCH_SAVE=name` / `BENCH_BASELINE=name`:
//! see `support` (the figure kept is records per second).

mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spillway::queue::{Queue, QueueOptions};
use support::Baseline;

const PHASE_BYTES: usize = 64 << 20;
const PHASE_TIME: Duration = Duration::from_secs(3);
const WINDOW: usize = 16;

fn main() {
    let mut baseline = Baseline::from_env("queue");
    let base =
        std::env::var_os("SPILLWAY_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let root = base.join(format!("spillway-queue-bench-{}", std::process::id()));
    println!("queue benchmark in {}", root.display());
    println!(
        "{:>8}  {:<52} {:>8} {:>10} {:>10}",
        "record", "phase", "records", "MB/s", "records/s"
    );
    for size in [1 << 10, 64 << 10, 1 << 20] {
        let n = PHASE_BYTES / size;
        let payload: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
        let label = if size >= 1 << 20 {
            format!("{} MiB", size >> 20)
        } else {
            format!("{} KiB", size >> 10)
        };
        let mut row = |phase: &str, (records, secs): (usize, f64)| {
            let mb = (records * size) as f64 / 1e6;
            let rate = records as f64 / secs;
            let change = baseline.record(&format!("{label} {phase}"), rate);
            println!(
                "{label:>8}  {phase:<52} {records:>8} {:>10.1} {rate:>10.0}{change}",
                mb / secs,
            );
        };

        let dir = root.join(format!("{size}"));
        let q = open(&dir, Duration::ZERO, true);
        row(
            "push, 1 record per fsync, meta every op",
            timed(n / 2, |_| {
                q.push(&payload, 100).unwrap();
                1
            }),
        );
        drop(q);
        let q = open(&dir, Duration::from_secs(1), false);
        row(
            "push, 1 record per fsync, meta <= 1/s",
            timed(n / 2, |_| {
                q.push(&payload, 100).unwrap();
                1
            }),
        );
        row(
            &format!("push_batch, {WINDOW} records per fsync, meta <= 1/s"),
            timed(n, |done| {
                let records: Vec<(&[u8], u64)> = (0..WINDOW.min(n - done))
                    .map(|_| (payload.as_slice(), 100))
                    .collect();
                q.push_batch(&records).unwrap();
                records.len()
            }),
        );
        drop(q);

        let started = Instant::now();
        let q = open(&dir, Duration::ZERO, false);
        let pending = q.stats().pending_records as usize;
        row(
            "open: recovery scan of what is pending",
            (pending, started.elapsed().as_secs_f64()),
        );
        // Each read phase gets a third, so all three have records to read.
        let share = pending / 3;
        row(
            "read + ack each, meta every op",
            timed(share, |_| {
                let r = q.read_next().unwrap().expect("pending records remain");
                q.ack(black_box(r).id).unwrap();
                1
            }),
        );
        row(
            &format!("read {WINDOW}, ack newest first, meta every op"),
            timed(share, |done| {
                let window: Vec<u64> = std::iter::from_fn(|| q.read_next().unwrap())
                    .map(|r| black_box(r).id)
                    .take(WINDOW.min(share - done))
                    .collect();
                // As when concurrent senders finish out of order: every
                // ack is remembered, so every one stores the meta file.
                for id in window.iter().rev() {
                    q.ack(*id).unwrap();
                }
                window.len()
            }),
        );
        drop(q);
        let q = open(&dir, Duration::from_secs(1), false);
        row(
            "read + ack each, meta <= 1/s",
            timed(share, |_| {
                let r = q.read_next().unwrap().expect("pending records remain");
                q.ack(black_box(r).id).unwrap();
                1
            }),
        );
        drop(q);
        let _ = std::fs::remove_dir_all(&root);
    }
    baseline.finish();
}

fn open(dir: &Path, cursor_sync_interval: Duration, fresh: bool) -> Queue {
    if fresh {
        let _ = std::fs::remove_dir_all(dir);
    }
    let opts = QueueOptions {
        max_in_flight: WINDOW,
        cursor_sync_interval,
        ..QueueOptions::new(1 << 30)
    };
    Queue::open(dir, opts).expect("open queue").0
}

/// Runs `step` (which reports how many records it did) until `n` records
/// are done or the time is up; returns records done and seconds taken.
fn timed(n: usize, mut step: impl FnMut(usize) -> usize) -> (usize, f64) {
    let started = Instant::now();
    let mut done = 0;
    while done < n && started.elapsed() < PHASE_TIME {
        let did = step(done);
        if did == 0 {
            break;
        }
        done += did;
    }
    (done, started.elapsed().as_secs_f64())
}
