//! The queue broken on purpose: torn tails at every byte, flipped bits,
//! garbage cursors, a full disk, a second opener and a `kill -9` mid-write,
//! each followed by a check of exactly what came back and what was counted.
//!
//! Sizes are picked so offsets are easy to follow: a 76-byte payload makes a
//! 100-byte record, and `segment_bytes = 300` puts three in a segment.

use std::collections::{btree_map, BTreeMap};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;

const REC100: usize = 100 - HEADER_LEN;

fn opts(max_disk_bytes: u64, segment_bytes: u64) -> QueueOptions {
    QueueOptions {
        max_disk_bytes,
        segment_bytes,
        max_in_flight: 1 << 20,
        cursor_sync_interval: Duration::ZERO,
        on_full: OnFull::DropOldest,
    }
}

fn roomy() -> QueueOptions {
    opts(1 << 30, 1 << 20)
}

/// Payload `k`: recognisable, and different for every `k` and length.
fn payload(k: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (k as usize * 31 + i * 7) as u8).collect()
}

fn open(dir: &Path, o: QueueOptions) -> (Queue, RecoveryReport) {
    Queue::open(dir, o).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// Pushes records 0..n, each alone, with 100-byte records and `samples = k + 1`.
fn push_n(q: &Queue, ks: std::ops::Range<u64>) -> Vec<u64> {
    ks.map(|k| {
        let out = q.push(&payload(k, REC100), k + 1).unwrap();
        assert_eq!((out.dropped_records, out.dropped_samples), (0, 0));
        out.ids[0]
    })
    .collect()
}

/// Everything readable, without acknowledging.
fn read_all(q: &Queue) -> Vec<Record> {
    std::iter::from_fn(|| q.read_next().unwrap()).collect()
}

fn samples_of(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.samples).collect()
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

fn seg(start: u64) -> String {
    segment::segment_file_name(start)
}

fn flip(path: &Path, pos: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[pos as usize] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn round_trip() {
    let tmp = TempDir::new().unwrap();
    let (q, report) = open(tmp.path(), roomy());
    assert!(report.is_clean());
    assert_eq!(report.cursor, CursorStatus::Missing);
    let bodies = [b"".to_vec(), b"x".to_vec(), payload(7, 70_000)];
    let batch: Vec<(&[u8], u64)> = bodies
        .iter()
        .zip([0, 1, 999])
        .map(|(b, s)| (b.as_slice(), s))
        .collect();
    let out = q.push_batch(&batch).unwrap();
    assert_eq!(out.ids, vec![0, 40, 81]);
    let st = q.stats();
    assert_eq!(
        (
            st.pending_records,
            st.pending_samples,
            st.pending_bytes,
            st.disk_bytes
        ),
        (3, 1000, 3 * 40 + 70_001, 3 * 40 + 70_001)
    );
    let got = read_all(&q);
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), out.ids);
    assert_eq!(
        got.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        bodies
    );
    assert_eq!(samples_of(&got), vec![0, 1, 999]);
    assert_eq!(q.stats().in_flight_records, 3);
    for r in &got {
        q.ack(r.id).unwrap();
    }
    let st = q.stats();
    assert_eq!(
        (
            st.pending_records,
            st.pending_samples,
            st.pending_bytes,
            st.in_flight_records
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(q.read_next().unwrap(), None);
}

#[test]
fn order_holds_across_batches_and_segments() {
    let tmp = TempDir::new().unwrap();
    let (q, _) = open(tmp.path(), opts(1 << 20, 1000));
    let mut pushed = Vec::new();
    let mut k = 0u64;
    for batch_len in [1, 5, 2, 17, 1, 9, 30] {
        let bodies: Vec<Vec<u8>> = (k..k + batch_len)
            .map(|k| payload(k, (k as usize * 37) % 300))
            .collect();
        let batch: Vec<(&[u8], u64)> = bodies
            .iter()
            .zip(k..)
            .map(|(b, k)| (b.as_slice(), k))
            .collect();
        pushed.extend(q.push_batch(&batch).unwrap().ids.into_iter().zip(bodies));
        k += batch_len;
    }
    assert!(seg_files(tmp.path()).len() > 5, "want several segments");
    let got = read_all(&q);
    assert_eq!(got.len(), pushed.len());
    for (i, (r, (id, body))) in got.iter().zip(&pushed).enumerate() {
        assert_eq!((r.id, &r.payload, r.samples), (*id, body, i as u64));
    }
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn ack_out_of_order_is_remembered_and_the_cursor_waits_for_the_oldest() {
    let tmp = TempDir::new().unwrap();
    let ids = {
        let (q, _) = open(tmp.path(), roomy());
        let ids = push_n(&q, 0..3);
        assert_eq!(read_all(&q).len(), 3);
        q.ack(ids[1]).unwrap();
        q.ack(ids[1]).unwrap(); // twice is a no-op
        let st = q.stats();
        assert_eq!(
            (st.pending_records, st.pending_samples, st.in_flight_records),
            (2, 1 + 3, 2)
        );
        assert!(matches!(
            q.ack(ids[1] + 1),
            Err(QueueError::UnknownId { .. })
        ));
        ids
    };
    // Record 0 was never acknowledged, so the cursor stayed in front of it;
    // record 1 was, and is not sent again.
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.cursor, CursorStatus::Loaded { offset: ids[0] });
    assert_eq!(samples_of(&read_all(&q)), vec![1, 3]);
    q.ack(ids[2]).unwrap();
    drop(q);
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.cursor, CursorStatus::Loaded { offset: ids[0] });
    assert_eq!(samples_of(&read_all(&q)), vec![1]);
    q.ack(ids[0]).unwrap();
    drop(q);
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.pending_records, 0);
    assert_eq!(q.read_next().unwrap(), None);
    // Below the cursor: already done, not an error.
    q.ack(ids[0]).unwrap();
}

#[test]
fn restart_after_clean_close_resumes_at_cursor() {
    let tmp = TempDir::new().unwrap();
    let ids = {
        let (q, _) = open(tmp.path(), roomy());
        let ids = push_n(&q, 0..10);
        for _ in 0..4 {
            let r = q.read_next().unwrap().unwrap();
            q.ack(r.id).unwrap();
        }
        q.close().unwrap();
        assert!(matches!(q.push(b"late", 1), Err(QueueError::Closed)));
        assert_eq!(q.read_next().unwrap(), None);
        ids
    };
    let (q, report) = open(tmp.path(), roomy());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.cursor, CursorStatus::Loaded { offset: ids[4] });
    assert_eq!(
        (report.pending_records, report.pending_samples),
        (6, (5..=10).sum())
    );
    let got = read_all(&q);
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), ids[4..]);
    assert_eq!(got[0].payload, payload(4, REC100));
}

#[test]
fn restart_without_ack_replays_everything() {
    let tmp = TempDir::new().unwrap();
    {
        let (q, _) = open(tmp.path(), roomy());
        push_n(&q, 0..5);
        assert_eq!(read_all(&q).len(), 5);
    }
    let (q, _) = open(tmp.path(), roomy());
    assert_eq!(samples_of(&read_all(&q)), vec![1, 2, 3, 4, 5]);
}

#[test]
fn torn_final_record_is_cut_at_every_byte_and_nothing_before_it() {
    // A write interrupted by a crash: the meta file was last stored before
    // the final push, whose push never returned. Cutting it is no loss.
    let pristine = TempDir::new().unwrap();
    let sizes = [100usize, 200, 300, 400, 37];
    let ids = {
        let (q, _) = open(pristine.path(), roomy());
        let mut ids = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            if k == 4 {
                fs::copy(
                    pristine.path().join(meta::META_FILE),
                    pristine.path().join("meta.before"),
                )
                .unwrap();
            }
            ids.push(q.push(&payload(k as u64, n), k as u64).unwrap().ids[0]);
        }
        ids
    };
    fs::rename(
        pristine.path().join("meta.before"),
        pristine.path().join(meta::META_FILE),
    )
    .unwrap();
    let last = ids[4];
    let full = (HEADER_LEN + 37) as u64;
    for cut in 0..=full {
        let tmp = TempDir::new().unwrap();
        copy_dir(pristine.path(), tmp.path());
        let path = tmp.path().join(seg(0));
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(last + cut)
            .unwrap();

        let (q, report) = open(tmp.path(), roomy());
        let torn = cut < full;
        assert_eq!(
            report.truncated_bytes,
            if torn { cut } else { 0 },
            "cut {cut}"
        );
        assert!(report.corruptions.is_empty(), "cut {cut}: {report:?}");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            if torn { last } else { last + full }
        );
        let got = read_all(&q);
        let kept = if torn { 4 } else { 5 };
        assert_eq!(got.len(), kept, "cut {cut}");
        for (k, r) in got.iter().enumerate() {
            assert_eq!(
                (r.id, &r.payload),
                (ids[k], &payload(k as u64, sizes[k])),
                "cut {cut}"
            );
        }
        // The writer carries on right after the last good record.
        let id = q.push(b"after", 77).unwrap().ids[0];
        assert_eq!(id, if torn { last } else { last + full });
        drop(q);
        let (q, report) = open(tmp.path(), roomy());
        assert!(report.is_clean(), "cut {cut}: {report:?}");
        let got = read_all(&q);
        assert_eq!(got.len(), kept + 1);
        assert_eq!(
            (got[kept].id, got[kept].payload.as_slice()),
            (id, &b"after"[..])
        );
    }
}

#[test]
fn zeros_after_the_last_record_are_cut() {
    // What a power cut can leave: the file grew, the data never landed.
    let tmp = TempDir::new().unwrap();
    {
        let (q, _) = open(tmp.path(), roomy());
        push_n(&q, 0..3);
    }
    let path = tmp.path().join(seg(0));
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0u8; 4096])
        .unwrap();
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.truncated_bytes, 4096);
    assert_eq!(samples_of(&read_all(&q)), vec![1, 2, 3]);
}

/// Three segments of three 100-byte records; samples of record k are k + 1.
fn nine_records() -> (TempDir, Vec<u64>) {
    nine_records_then(|_| {})
}

/// [`nine_records`], calling `before_last` just before the ninth push.
fn nine_records_then(before_last: impl FnOnce(&Path)) -> (TempDir, Vec<u64>) {
    let tmp = TempDir::new().unwrap();
    let (q, _) = open(tmp.path(), opts(1 << 20, 300));
    let mut ids = push_n(&q, 0..8);
    before_last(tmp.path());
    ids.extend(push_n(&q, 8..9));
    assert_eq!(seg_files(tmp.path()), vec![seg(0), seg(300), seg(600)]);
    (tmp, ids)
}

#[test]
fn flipped_payload_bit_drops_exactly_that_record() {
    let (tmp, _) = nine_records();
    // Record 1 in the first segment, record 7 in the middle of the last one.
    flip(&tmp.path().join(seg(0)), 100 + HEADER_LEN as u64 + 10);
    flip(&tmp.path().join(seg(600)), 100 + HEADER_LEN as u64 + 59);
    let (q, report) = open(tmp.path(), opts(1 << 20, 300));
    let offsets: Vec<_> = report
        .corruptions
        .iter()
        .map(|c| (c.offset, c.skipped_bytes, c.records, c.samples))
        .collect();
    assert_eq!(
        offsets,
        vec![(100, 100, 1, Some(2)), (700, 100, 1, Some(8))]
    );
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!((report.dropped_records, report.dropped_samples), (2, 10));
    let st = q.stats();
    assert_eq!(
        (st.dropped_records_total, st.dropped_samples_total),
        (2, 10)
    );
    assert_eq!(samples_of(&read_all(&q)), vec![1, 3, 4, 5, 6, 7, 9]);
}

#[test]
fn flipped_bit_in_the_final_record_counts_as_a_torn_write() {
    // The final record's push never returned (the meta file predates it).
    let (tmp, _) = nine_records_then(|dir| {
        fs::copy(dir.join(meta::META_FILE), dir.join("meta.before")).unwrap();
    });
    fs::rename(
        tmp.path().join("meta.before"),
        tmp.path().join(meta::META_FILE),
    )
    .unwrap();
    flip(&tmp.path().join(seg(600)), 200 + HEADER_LEN as u64 + 3);
    let (q, report) = open(tmp.path(), opts(1 << 20, 300));
    assert_eq!(report.truncated_bytes, 100);
    assert!(report.corruptions.is_empty(), "{report:?}");
    assert_eq!(samples_of(&read_all(&q)), (1..=8).collect::<Vec<_>>());
}

#[test]
fn flipped_bit_in_the_final_record_is_counted_once_its_push_returned() {
    let (tmp, _) = nine_records();
    flip(&tmp.path().join(seg(600)), 200 + HEADER_LEN as u64 + 3);
    let (q, report) = open(tmp.path(), opts(1 << 20, 300));
    assert_eq!(report.truncated_bytes, 100);
    let c: Vec<_> = report
        .corruptions
        .iter()
        .map(|c| (c.offset, c.records, c.samples))
        .collect();
    assert_eq!(c, [(800, 1, Some(9))]);
    assert_eq!(samples_of(&read_all(&q)), (1..=8).collect::<Vec<_>>());
    assert_eq!(q.stats().damaged_samples_total, 9);
    drop(q);
    let (_, report) = open(tmp.path(), opts(1 << 20, 300));
    assert!(report.is_clean(), "counted once: {report:?}");
}

#[test]
fn flipped_header_bit_loses_only_that_record() {
    let (tmp, _) = nine_records();
    flip(&tmp.path().join(seg(0)), 100 + 5); // the length field of record 1
    let (q, report) = open(tmp.path(), opts(1 << 20, 300));
    assert_eq!(report.corruptions.len(), 1);
    let c = &report.corruptions[0];
    assert_eq!(
        (c.offset, c.skipped_bytes, c.records, c.samples),
        (100, 100, 1, Some(2))
    );
    assert!(c.reason.contains("header checksum"), "{}", c.reason);
    assert_eq!(c.segment, tmp.path().join(seg(0)));
    assert_eq!(samples_of(&read_all(&q)), vec![1, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(q.stats().dropped_records_total, 1);
}

#[test]
fn short_older_segment_counts_the_cut_record_with_its_samples() {
    let (tmp, _) = nine_records();
    OpenOptions::new()
        .write(true)
        .open(tmp.path().join(seg(0)))
        .unwrap()
        .set_len(290)
        .unwrap();
    let (q, report) = open(tmp.path(), opts(1 << 20, 300));
    let c = &report.corruptions[0];
    assert_eq!(
        (c.offset, c.skipped_bytes, c.records, c.samples),
        (200, 90, 1, Some(3))
    );
    assert_eq!(samples_of(&read_all(&q)), vec![1, 2, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn damage_after_open_is_caught_on_read() {
    let tmp = TempDir::new().unwrap();
    let (q, _) = open(tmp.path(), roomy());
    push_n(&q, 0..3);
    flip(&tmp.path().join(seg(0)), 100 + HEADER_LEN as u64 + 1);
    assert_eq!(samples_of(&read_all(&q)), vec![1, 3]);
    let st = q.stats();
    assert_eq!((st.dropped_records_total, st.dropped_samples_total), (1, 2));
    assert_eq!((st.pending_records, st.pending_samples), (2, 4));
}

#[test]
fn garbled_or_missing_cursor_replays_from_the_oldest_segment() {
    for garble in [Some(&b"hello"[..]), Some(&[0u8; 20][..]), None] {
        let tmp = TempDir::new().unwrap();
        let ids = {
            let (q, _) = open(tmp.path(), opts(1 << 20, 300));
            let ids = push_n(&q, 0..10);
            for _ in 0..5 {
                let r = q.read_next().unwrap().unwrap();
                q.ack(r.id).unwrap();
            }
            ids
        };
        assert_eq!(seg_files(tmp.path()), vec![seg(300), seg(600), seg(900)]);
        let cursor = tmp.path().join(meta::META_FILE);
        match garble {
            Some(bytes) => fs::write(&cursor, bytes).unwrap(),
            None => fs::remove_file(&cursor).unwrap(),
        }
        let (q, report) = open(tmp.path(), opts(1 << 20, 300));
        match garble {
            Some(_) => assert!(
                matches!(report.cursor, CursorStatus::Garbled { .. }),
                "{report:?}"
            ),
            None => assert_eq!(report.cursor, CursorStatus::Missing),
        }
        // Records 3 and 4 come again (they share a segment with unacknowledged
        // ones); none of the unacknowledged 5..9 is missing.
        let got = read_all(&q);
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), ids[3..]);
        drop(q);
        let (_, report) = open(tmp.path(), opts(1 << 20, 300));
        assert_eq!(report.cursor, CursorStatus::Loaded { offset: ids[3] });
    }
}

#[test]
fn cursor_sync_interval_defers_the_store_until_flush() {
    let tmp = TempDir::new().unwrap();
    let o = QueueOptions {
        cursor_sync_interval: Duration::from_secs(3600),
        ..opts(1 << 20, 300)
    };
    let (q, _) = open(tmp.path(), o);
    let ids = push_n(&q, 0..4);
    for _ in 0..3 {
        let r = q.read_next().unwrap().unwrap();
        q.ack(r.id).unwrap();
    }
    let stored = || meta::load_meta(tmp.path()).unwrap().unwrap();
    assert_eq!(stored().cursor, 0);
    // A segment goes only once the stored cursor is past it.
    assert_eq!(seg_files(tmp.path()), vec![seg(0), seg(300)]);
    q.flush().unwrap();
    assert_eq!(stored().cursor, ids[3]);
    assert_eq!(stored().end_counts, (4, 1 + 2 + 3 + 4));
    assert_eq!(seg_files(tmp.path()), vec![seg(300)]);
    drop(q);
    let (q, report) = open(tmp.path(), o);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(samples_of(&read_all(&q)), vec![4]);
}

#[test]
fn leftover_temp_files_are_removed() {
    let tmp = TempDir::new().unwrap();
    fs::write(tmp.path().join("cursor.tmp"), b"half").unwrap();
    fs::write(tmp.path().join("0000000000000000.seg.tmp"), b"half").unwrap();
    let (_q, report) = open(tmp.path(), roomy());
    assert_eq!(report.removed_temp_files, 2);
    assert!(!tmp.path().join("cursor.tmp").exists());
}

#[test]
fn disk_cap_drops_oldest_and_counts_exactly() {
    let tmp = TempDir::new().unwrap();
    let o = opts(1000, 300);
    let (q, _) = open(tmp.path(), o);
    let ids = push_n(&q, 0..10); // exactly 1000 bytes: fits
    assert_eq!(q.stats().disk_bytes, 1000);
    let r0 = q.read_next().unwrap().unwrap();
    q.ack(r0.id).unwrap();
    let r1 = q.read_next().unwrap().unwrap(); // in flight when dropped

    // Segment 0 goes: record 0 was acknowledged (not counted), 1 and 2 were not.
    let out = q.push(&payload(10, REC100), 11).unwrap();
    assert_eq!((out.dropped_records, out.dropped_samples), (2, 2 + 3));
    q.ack(r1.id).unwrap(); // dropped while in flight: a no-op
    let st = q.stats();
    assert_eq!(
        st,
        QueueStats {
            pending_bytes: 800,
            pending_records: 8,
            pending_samples: (4..=11).sum(),
            in_flight_records: 0,
            disk_bytes: 800,
            dropped_records_total: 2,
            dropped_samples_total: 5,
            damaged_records_total: 0,
            damaged_samples_total: 0,
        }
    );
    assert!(!tmp.path().join(seg(0)).exists());

    push_n(&q, 11..13);
    let out = q.push(&payload(13, REC100), 14).unwrap();
    assert_eq!((out.dropped_records, out.dropped_samples), (3, 4 + 5 + 6));

    // Too big for the cap: refused, nothing touched.
    let before = q.stats();
    let err = q.push(&payload(0, 1000 - HEADER_LEN + 1), 1).unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::TooLarge {
                what: "record",
                bytes: 1001,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("raise max_disk_bytes"), "{err}");
    let half = payload(0, 500);
    let err = q.push_batch(&[(&half, 1), (&half, 1)]).unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::TooLarge {
                what: "batch",
                bytes: 1080,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(q.stats(), before);

    // A record the size of the cap leaves room for nothing else.
    let out = q.push(&payload(99, 1000 - HEADER_LEN), 1000).unwrap();
    assert_eq!(
        (out.dropped_records, out.dropped_samples),
        (8, (7..=14).sum())
    );
    assert_eq!(out.ids, vec![1400]);
    let st = q.stats();
    assert_eq!(
        (st.dropped_records_total, st.dropped_samples_total),
        (13, 5 + 15 + 84)
    );
    assert_eq!((st.pending_records, st.disk_bytes), (1, 1000));
    assert_eq!(seg_files(tmp.path()), vec![seg(1400)]);
    drop(q);

    let (q, report) = open(tmp.path(), o);
    assert!(report.is_clean(), "{report:?}");
    let got = read_all(&q);
    assert_eq!((got.len(), got[0].id, got[0].samples), (1, 1400, 1000));
    assert_eq!(ids.len(), 10);
}

#[test]
fn segments_roll_over_and_acknowledged_ones_are_deleted() {
    let tmp = TempDir::new().unwrap();
    let o = opts(1 << 20, 300);
    {
        let (q, _) = open(tmp.path(), o);
        let ids = push_n(&q, 0..10);
        // Files are named by the id of their first record.
        assert_eq!(
            seg_files(tmp.path()),
            vec![seg(ids[0]), seg(ids[3]), seg(ids[6]), seg(ids[9])]
        );
        let ack_next = |n: usize| {
            for _ in 0..n {
                let r = q.read_next().unwrap().unwrap();
                q.ack(r.id).unwrap();
            }
        };
        ack_next(2);
        assert_eq!(seg_files(tmp.path()).len(), 4);
        ack_next(1);
        assert_eq!(seg_files(tmp.path()), vec![seg(300), seg(600), seg(900)]);
        ack_next(7);
        // The segment being appended to stays, even when fully acknowledged.
        assert_eq!(seg_files(tmp.path()), vec![seg(900)]);
        assert_eq!(q.stats().disk_bytes, 100);
    }
    let (q, report) = open(tmp.path(), o);
    assert!(report.is_clean());
    assert_eq!(report.pending_records, 0);
    let ids = push_n(&q, 10..13);
    assert_eq!(ids, vec![1000, 1100, 1200]);
    assert_eq!(seg_files(tmp.path()), vec![seg(900), seg(1200)]);
    for r in read_all(&q) {
        q.ack(r.id).unwrap();
    }
    assert_eq!(seg_files(tmp.path()), vec![seg(1200)]);
    assert_eq!(q.stats().disk_bytes, 100);
}

#[test]
fn second_open_of_the_same_directory_fails_clearly() {
    let tmp = TempDir::new().unwrap();
    let (q, _) = open(tmp.path(), roomy());
    let err = Queue::open(tmp.path(), roomy())
        .err()
        .expect("second open must fail");
    let msg = err.to_string();
    assert!(matches!(err, QueueError::Locked { .. }), "{msg}");
    assert!(
        msg.contains(&format!("in use by process {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("storage.path"), "{msg}");
    drop(q);
    open(tmp.path(), roomy());
}

#[test]
fn bad_options_are_all_reported() {
    let tmp = TempDir::new().unwrap();
    let bad = QueueOptions {
        max_disk_bytes: 10,
        segment_bytes: 0,
        max_in_flight: 0,
        cursor_sync_interval: Duration::ZERO,
        on_full: OnFull::DropOldest,
    };
    let msg = Queue::open(tmp.path(), bad).err().unwrap().to_string();
    for want in ["max_disk_bytes", "segment_bytes", "max_in_flight"] {
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn in_flight_limit_wait_rewind_and_hook() {
    let tmp = TempDir::new().unwrap();
    let o = QueueOptions {
        max_in_flight: 2,
        ..roomy()
    };
    let (q, _) = open(tmp.path(), o);
    let q = Arc::new(q);
    let wakeups = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&wakeups);
    q.set_notify_hook(move || {
        w.fetch_add(1, Ordering::SeqCst);
    });
    assert!(!q.wait_for_data(Duration::from_millis(10)));

    let pusher = {
        let q = Arc::clone(&q);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            push_n(&q, 0..3)
        })
    };
    assert!(q.wait_for_data(Duration::from_secs(10)));
    let ids = pusher.join().unwrap();
    assert!(wakeups.load(Ordering::SeqCst) >= 3);

    let r0 = q.read_next().unwrap().unwrap();
    let r1 = q.read_next().unwrap().unwrap();
    assert_eq!((r0.id, r1.id), (ids[0], ids[1]));
    assert_eq!(q.read_next().unwrap(), None, "two in flight is the limit");
    assert!(!q.wait_for_data(Duration::from_millis(10)));
    q.ack(r1.id).unwrap();
    assert!(q.wait_for_data(Duration::from_millis(10)));
    assert_eq!(q.read_next().unwrap().unwrap().id, ids[2]);

    // A sender gave up on what it held: hand it out again, oldest first.
    assert_eq!(q.rewind(), 2);
    assert_eq!(q.read_next().unwrap().unwrap().id, ids[0]);
    assert_eq!(q.read_next().unwrap().unwrap().id, ids[2]);

    let waiter = {
        let q = Arc::clone(&q);
        thread::spawn(move || q.wait_for_data(Duration::from_secs(10)))
    };
    thread::sleep(Duration::from_millis(20));
    q.close().unwrap();
    assert!(!waiter.join().unwrap(), "close wakes waiters");
    q.ack(ids[0]).unwrap();
    q.ack(ids[2]).unwrap();
    assert_eq!(q.stats().pending_records, 0);
}

// --- kill -9 -------------------------------------------------------------

const CRASH_CHILD_ENV: &str = "SPILLWAY_QUEUE_CRASH_CHILD_DIR";

/// Helper, not a test: `kill_9_loses_nothing_pushed` runs it by name (it is
/// ignored, so a plain test run never does) with
/// `SPILLWAY_QUEUE_CRASH_CHILD_DIR` set; it pushes until killed, printing
/// each id once its push returned, and each id it acknowledges before and
/// after the ack.
#[test]
#[ignore = "a child process of kill_9_loses_nothing_pushed, not a test"]
fn crash_child() {
    let dir = std::env::var_os(CRASH_CHILD_ENV)
        .expect("run by kill_9_loses_nothing_pushed, which sets SPILLWAY_QUEUE_CRASH_CHILD_DIR");
    let o = QueueOptions {
        max_disk_bytes: 1 << 30,
        segment_bytes: 256 << 10,
        max_in_flight: 1,
        cursor_sync_interval: Duration::ZERO,
        on_full: OnFull::DropOldest,
    };
    let (q, _) = Queue::open(&dir, o).unwrap();
    let mut out = std::io::stdout().lock();
    let seq0: u64 = std::env::var("SPILLWAY_QUEUE_CRASH_SEQ")
        .unwrap()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = seq0;
    let mut budget: usize = 96 << 20;
    for round in 0..200_000u64 {
        if Instant::now() > deadline {
            break;
        }
        if budget == 0 {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let bodies: Vec<(u64, Vec<u8>)> = (0..1 + round % 4)
            .map(|i| {
                let s = seq + i;
                // Mostly small, now and then big, so kills land mid-write too.
                let len = if s.is_multiple_of(7) {
                    200_000 + (s as usize % 50_000)
                } else {
                    (s as usize * 613) % 9000
                };
                (s, payload(s, len))
            })
            .collect();
        budget = budget.saturating_sub(bodies.iter().map(|(_, b)| b.len()).sum());
        let batch: Vec<(&[u8], u64)> = bodies.iter().map(|(s, b)| (b.as_slice(), *s)).collect();
        let ids = q.push_batch(&batch).unwrap().ids;
        for (id, (s, b)) in ids.iter().zip(&bodies) {
            writeln!(out, "pushed {id} {s} {}", b.len()).unwrap();
        }
        seq += bodies.len() as u64;
        if round % 3 == 0 {
            if let Some(r) = q.read_next().unwrap() {
                // A kill between the ack and its line leaves the parent unsure.
                writeln!(out, "acking {}", r.id).unwrap();
                q.ack(r.id).unwrap();
                writeln!(out, "acked {}", r.id).unwrap();
            }
        }
    }
}

#[test]
fn kill_9_loses_nothing_pushed() {
    let tmp = TempDir::new().unwrap();
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::crash_child",
        module_path!().split_once("::").unwrap().1
    );
    // What must be in the queue: id -> (sequence number, payload length).
    let mut expected: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    let mut next_seq = 0u64;
    for kill_after in [
        Duration::from_millis(250),
        Duration::from_millis(700),
        Duration::from_millis(1500),
    ] {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                &name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CRASH_CHILD_ENV, tmp.path())
            .env("SPILLWAY_QUEUE_CRASH_SEQ", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            // Only whole lines: a kill may cut the last one short.
            while r.read_until(b'\n', &mut buf).unwrap() > 0 {
                if buf.ends_with(b"\n") {
                    lines.push(String::from_utf8(buf.clone()).unwrap());
                }
                buf.clear();
            }
            lines
        });
        let started = Instant::now();
        while started.elapsed() < kill_after && child.try_wait().unwrap().is_none() {
            thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        // Killed by us, not finished and not panicked.
        assert_eq!(
            status.signal(),
            Some(9),
            "child ended by itself: {status:?}"
        );
        let lines = reader.join().unwrap();

        let mut acked = Vec::new();
        let mut acking = None;
        let mut max_pushed = None;
        for line in &lines {
            // libtest may print "test ... " in front of the child's first line.
            let start = ["pushed ", "acking ", "acked "]
                .iter()
                .filter_map(|k| line.find(k))
                .min()
                .unwrap_or(0);
            let f: Vec<&str> = line[start..].split_whitespace().collect();
            match f.as_slice() {
                ["pushed", id, seq, len] => {
                    let id: u64 = id.parse().unwrap();
                    let seq: u64 = seq.parse().unwrap();
                    expected.insert(id, (seq, len.parse().unwrap()));
                    max_pushed = Some(id);
                    next_seq = next_seq.max(seq + 1);
                }
                ["acking", id] => acking = Some(id.parse::<u64>().unwrap()),
                ["acked", id] => acked.push(id.parse::<u64>().unwrap()),
                _ => {}
            }
        }
        let max_pushed = max_pushed.expect("the child pushed nothing before it was killed");
        for id in &acked {
            expected.remove(id);
        }
        // Acknowledged when the kill came, or not yet: either way is right.
        let unsure = acking.filter(|id| !acked.contains(id));
        if let Some(id) = unsure {
            expected.remove(&id);
        }

        let (q, report) = Queue::open(tmp.path(), roomy()).unwrap();
        assert!(report.corruptions.is_empty(), "{report:?}");
        let got = read_all(&q);
        let got_ids: BTreeMap<u64, &Record> = got.iter().map(|r| (r.id, r)).collect();
        for (id, (seq, len)) in &expected {
            let r = got_ids
                .get(id)
                .unwrap_or_else(|| panic!("id {id} was pushed, then lost by kill -9 ({report:?})"));
            assert_eq!(
                (r.samples, &r.payload),
                (*seq, &payload(*seq, *len)),
                "id {id}"
            );
        }
        for id in &acked {
            assert!(
                !got_ids.contains_key(id),
                "id {id} was acknowledged, yet replayed"
            );
        }
        // Extra records can only be the batch whose push had not returned
        // yet, or the one whose ack had not. From now on they must stay.
        for r in &got {
            if let btree_map::Entry::Vacant(slot) = expected.entry(r.id) {
                if Some(r.id) != unsure {
                    assert!(r.id > max_pushed, "unexpected id {} ({report:?})", r.id);
                }
                assert_eq!(r.payload, payload(r.samples, r.payload.len()));
                slot.insert((r.samples, r.payload.len()));
                next_seq = next_seq.max(r.samples + 1);
            }
        }
    }
}

#[test]
fn queue_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Queue>();
}

#[test]
fn is_pending_turns_false_on_ack_and_on_drop_for_space() {
    let dir = TempDir::new().unwrap();
    // Three 100-byte records per segment, room for two segments.
    let (q, _) = open(dir.path(), opts(600, 300));
    let ids = push_n(&q, 0..3);
    let first = q.read_next().unwrap().unwrap();
    assert_eq!(first.id, ids[0]);
    assert!(q.is_pending(ids[0]) && q.is_pending(ids[1]));
    q.ack(ids[1]).unwrap();
    assert!(!q.is_pending(ids[1]));
    // Three more fill the second segment; three after that drop the first
    // segment, in-flight record included.
    push_n(&q, 3..6);
    assert!(q.is_pending(ids[0]));
    let out = q.push(&payload(6, REC100), 7).unwrap();
    assert_eq!(
        out.dropped_records, 2,
        "the first segment's unacked records"
    );
    assert!(!q.is_pending(ids[0]), "dropped while in flight");
    assert!(!q.is_pending(u64::MAX));
}

// --- issue 14 item 11: every loss of pushed data is counted ----------------

/// 30 records of 1000 bytes carrying 100 samples each, in one segment: the
/// shape of the damage scenarios (100-sample blocks).
fn thirty_blocks(dir: &Path, o: QueueOptions) -> Vec<u64> {
    let (q, _) = open(dir, o);
    (0..30)
        .map(|k| q.push(&payload(k, 1000 - HEADER_LEN), 100).unwrap().ids[0])
        .collect()
}

#[test]
fn last_segment_cut_mid_record_counts_every_record_that_vanished() {
    // Regression, issue 14 item 11: 23 records (2,300 acknowledged samples)
    // were gone, counted 0, logged only as the bytes of the partial record.
    let tmp = TempDir::new().unwrap();
    let ids = thirty_blocks(tmp.path(), roomy());
    let path = tmp.path().join(seg(0));
    // Keep 7 records and 560 bytes of the 8th.
    let cut = ids[7] + 560;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.truncated_bytes, 560);
    assert_eq!((report.dropped_records, report.dropped_samples), (23, 2300));
    assert_eq!(report.corruptions.len(), 1, "{report:?}");
    let c = &report.corruptions[0];
    assert_eq!((c.segment.clone(), c.offset), (path, ids[7]));
    assert_eq!((c.records, c.samples), (23, Some(2300)));
    assert!(c.reason.contains("cut inside a record"), "{}", c.reason);
    let st = q.stats();
    assert_eq!(
        (st.damaged_records_total, st.damaged_samples_total),
        (23, 2300)
    );
    assert_eq!(read_all(&q).len(), 7);
    // New records continue the count; the loss is not found again.
    q.push(b"after", 1).unwrap();
    drop(q);
    let (q, report) = open(tmp.path(), roomy());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(read_all(&q).len(), 8);
}

#[test]
fn last_segment_cut_at_a_record_boundary_is_noticed_and_counted() {
    // Regression, issue 14 item 11: a file size rolled back after power loss
    // lost whole records with no warning at all.
    let tmp = TempDir::new().unwrap();
    let ids = thirty_blocks(tmp.path(), roomy());
    let path = tmp.path().join(seg(0));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(ids[7])
        .unwrap();

    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!((report.dropped_records, report.dropped_samples), (23, 2300));
    let c = &report.corruptions[0];
    assert_eq!((c.offset, c.records, c.samples), (ids[7], 23, Some(2300)));
    assert!(c.reason.contains("record boundary"), "{}", c.reason);
    assert_eq!(read_all(&q).len(), 7);
}

#[test]
fn a_cut_that_only_loses_acknowledged_records_is_no_loss() {
    let tmp = TempDir::new().unwrap();
    let ids = {
        let (q, _) = open(tmp.path(), roomy());
        let ids = push_n(&q, 0..6);
        // Acknowledge the last three out of order: they are retired, not pending.
        for r in read_all(&q) {
            if r.id >= ids[3] {
                q.ack(r.id).unwrap();
            }
        }
        ids
    };
    OpenOptions::new()
        .write(true)
        .open(tmp.path().join(seg(0)))
        .unwrap()
        .set_len(ids[3])
        .unwrap();
    let (q, report) = open(tmp.path(), roomy());
    assert!(report.corruptions.is_empty(), "{report:?}");
    assert_eq!(samples_of(&read_all(&q)), vec![1, 2, 3]);
}

#[test]
fn four_kib_overwritten_in_an_older_segment_loses_only_the_damaged_records() {
    // Regression, issue 14 item 11: one damaged record was counted, then the
    // next header was garbage and recovery dropped the rest of the segment
    // (25 intact records, 2,500 samples, uncounted).
    let tmp = TempDir::new().unwrap();
    let o = opts(1 << 30, 30_000);
    let ids = thirty_blocks(tmp.path(), o);
    let more: Vec<u64> = {
        let (q, _) = open(tmp.path(), o);
        (30..40)
            .map(|k| q.push(&payload(k, 1000 - HEADER_LEN), 100).unwrap().ids[0])
            .collect()
    };
    assert_eq!(seg_files(tmp.path()), vec![seg(0), seg(30_000)]);
    let path = tmp.path().join(seg(0));
    let mut rng = fastrand::Rng::with_seed(14);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    std::os::unix::fs::FileExt::write_all_at(
        &OpenOptions::new().write(true).open(&path).unwrap(),
        &garbage,
        10_500,
    )
    .unwrap();

    let (q, report) = open(tmp.path(), o);
    // Records 10..=14 overlap bytes 10500..14596; nothing else is touched.
    assert_eq!((report.dropped_records, report.dropped_samples), (5, 500));
    assert_eq!(report.corruptions.len(), 1, "{report:?}");
    let c = &report.corruptions[0];
    assert_eq!((c.segment.clone(), c.offset), (path, ids[10]));
    assert_eq!((c.records, c.samples), (5, Some(500)));
    assert_eq!(c.skipped_bytes, 5000);
    let got: Vec<u64> = read_all(&q).iter().map(|r| r.id).collect();
    let want: Vec<u64> = ids[..10]
        .iter()
        .chain(&ids[15..])
        .chain(&more)
        .copied()
        .collect();
    assert_eq!(got, want);
}

#[test]
fn damage_without_a_meta_file_is_counted_between_intact_records() {
    let (tmp, _) = nine_records();
    fs::remove_file(tmp.path().join(meta::META_FILE)).unwrap();
    flip(&tmp.path().join(seg(300)), 100 + 5);
    let (q, report) = open(tmp.path(), opts(1 << 20, 300));
    let c: Vec<_> = report
        .corruptions
        .iter()
        .map(|c| (c.offset, c.records, c.samples))
        .collect();
    assert_eq!(c, [(400, 1, Some(5))]);
    assert_eq!(samples_of(&read_all(&q)), vec![1, 2, 3, 4, 6, 7, 8, 9]);
}

/// The v1 fixture (`testdata/v1`, written by `testdata/gen_v1.py` from the
/// first format's description): five records, the first acknowledged.
fn v1_fixture() -> TempDir {
    let tmp = TempDir::new().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/queue/testdata/v1"),
        tmp.path(),
    );
    tmp
}

fn v1_payload(k: usize) -> Vec<u8> {
    format!("v1 record {k} ").repeat(k + 1).into_bytes()
}

/// A queue an older spillway wrote is migrated at open: its pending
/// records come out in order with their sample counts, nothing
/// acknowledged comes back, the files are of the current format, and the
/// queue works on (pushes, acks, a restart) as any other.
#[test]
fn a_queue_of_the_first_format_is_migrated_once() {
    let tmp = v1_fixture();
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.migrated_v1_records, 4, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert!(!tmp.path().join("cursor").exists());
    assert!(!tmp.path().join("v2.ready").exists() && !tmp.path().join("v2.tmp").exists());
    let got = read_all(&q);
    assert_eq!(samples_of(&got), vec![20, 30, 40, 50]);
    for (r, k) in got.iter().zip(1..) {
        assert_eq!(r.payload, v1_payload(k));
    }
    q.ack(got[0].id).unwrap();
    let id = q.push(b"new", 7).unwrap().ids[0];
    drop(q);
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.migrated_v1_records, 0);
    assert!(report.is_clean(), "{report:?}");
    let got = read_all(&q);
    assert_eq!(samples_of(&got), vec![30, 40, 50, 7]);
    assert_eq!(got[3].id, id);
}

/// A crash after the migration's commit point is finished by the next
/// open; one before it starts over from the untouched v1 files.
#[test]
fn an_interrupted_migration_finishes_or_starts_over() {
    // Before the commit: a half-built v2.tmp is thrown away.
    let tmp = v1_fixture();
    fs::create_dir(tmp.path().join("v2.tmp")).unwrap();
    fs::write(tmp.path().join("v2.tmp").join(seg(0)), b"half").unwrap();
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.migrated_v1_records, 4);
    assert_eq!(samples_of(&read_all(&q)), vec![20, 30, 40, 50]);
    drop(q);

    // After the commit, in the middle of moving files in.
    let migrated = TempDir::new().unwrap();
    copy_dir(tmp.path(), migrated.path());
    let crashed = v1_fixture();
    let ready = crashed.path().join("v2.ready");
    fs::create_dir(&ready).unwrap();
    for name in seg_files(crashed.path()) {
        fs::remove_file(crashed.path().join(name)).unwrap();
    }
    fs::remove_file(crashed.path().join("cursor")).unwrap();
    fs::write(ready.join("moving"), b"").unwrap();
    let names = seg_files(migrated.path());
    let (first, rest) = names.split_first().unwrap();
    fs::copy(migrated.path().join(first), crashed.path().join(first)).unwrap();
    for n in rest.iter().map(String::as_str).chain(["meta"]) {
        fs::copy(migrated.path().join(n), ready.join(n)).unwrap();
    }
    let (q, report) = open(crashed.path(), roomy());
    assert!(report.is_clean(), "{report:?}");
    assert!(!ready.exists());
    assert_eq!(samples_of(&read_all(&q)), vec![20, 30, 40, 50]);
}

/// Damage in a v1 segment is reported, not guessed at: the intact records
/// before it are migrated, the damage is counted.
#[test]
fn damage_in_a_v1_queue_is_counted_by_the_migration() {
    let tmp = v1_fixture();
    let second = tmp.path().join(seg(0x90));
    flip(&second, 30);
    let (q, report) = open(tmp.path(), roomy());
    assert_eq!(report.migrated_v1_records, 2, "{report:?}");
    assert_eq!(report.corruptions.len(), 1, "{report:?}");
    assert_eq!(report.corruptions[0].offset, 0x90);
    assert_eq!(q.stats().damaged_records_total, 1);
    assert_eq!(samples_of(&read_all(&q)), vec![20, 30]);
}

// --- issue 14 item 12: acknowledgements out of order survive a crash -------

/// What a `kill -9` would leave: the directory's files as they are now.
fn crash_copy(dir: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "lock" {
            fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

#[test]
fn acks_out_of_order_are_not_sent_again_after_a_crash() {
    // Regression, issue 14 item 12: a sender held the oldest record while
    // the others delivered everything behind it; the stored cursor stayed at
    // the start and a crash resent the whole backlog.
    let tmp = TempDir::new().unwrap();
    let (q, _) = open(tmp.path(), roomy());
    let ids = push_n(&q, 0..10);
    let held = q.read_next().unwrap().unwrap();
    for r in read_all(&q).iter().filter(|r| r.id != ids[5]) {
        q.ack(r.id).unwrap();
    }
    let crashed = crash_copy(tmp.path());
    let (q2, report) = open(crashed.path(), roomy());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.cursor, CursorStatus::Loaded { offset: held.id });
    assert_eq!(
        samples_of(&read_all(&q2)),
        vec![1, 6],
        "only the unacknowledged"
    );
    assert_eq!(report.pending_samples, 7);
}

#[test]
fn with_a_sync_interval_a_crash_resends_only_what_was_acked_since_the_last_store() {
    let tmp = TempDir::new().unwrap();
    let o = QueueOptions {
        cursor_sync_interval: Duration::from_secs(3600),
        ..roomy()
    };
    let (q, _) = open(tmp.path(), o);
    push_n(&q, 0..10);
    let held = q.read_next().unwrap().unwrap();
    let rest = read_all(&q);
    for r in &rest[..4] {
        q.ack(r.id).unwrap();
    }
    q.flush().unwrap(); // the timer's store
    for r in &rest[4..] {
        q.ack(r.id).unwrap();
    }
    let crashed = crash_copy(tmp.path());
    let (q2, _) = open(crashed.path(), o);
    // Acked before the store: not again. After it: again, at most that interval's.
    assert_eq!(samples_of(&read_all(&q2)), vec![1, 6, 7, 8, 9, 10]);
    drop(q2);
    q.flush().unwrap();
    let crashed = crash_copy(tmp.path());
    let (q3, _) = open(crashed.path(), o);
    assert_eq!(
        read_all(&q3).iter().map(|r| r.id).collect::<Vec<_>>(),
        [held.id]
    );
}

#[test]
fn past_the_span_cap_the_meta_file_stops_at_the_first_span_left_out() {
    let tmp = TempDir::new().unwrap();
    let o = QueueOptions {
        cursor_sync_interval: Duration::from_secs(3600),
        ..roomy()
    };
    let (q, _) = open(tmp.path(), o);
    let n = 2 * meta::MAX_RANGES as u64 + 10;
    let bodies: Vec<Vec<u8>> = (0..n).map(|k| payload(k, 8)).collect();
    let batch: Vec<(&[u8], u64)> = bodies.iter().map(|b| (b.as_slice(), 1)).collect();
    q.push_batch(&batch).unwrap();
    // Every odd record acknowledged: one retired span per record.
    for r in read_all(&q) {
        if (r.id / 48) % 2 == 1 {
            q.ack(r.id).unwrap();
        }
    }
    q.flush().unwrap();
    let m = meta::load_meta(tmp.path()).unwrap().unwrap();
    assert_eq!(m.retired.len(), meta::MAX_RANGES);
    let first_left_out = 2 * meta::MAX_RANGES as u64 + 1;
    assert_eq!(m.end_counts, (first_left_out, first_left_out));
    // After a crash: the evens, plus everything past the cap, come again.
    let crashed = crash_copy(tmp.path());
    let (q2, report) = open(crashed.path(), o);
    assert!(report.corruptions.is_empty(), "{report:?}");
    let expected = (0..n)
        .filter(|k| k % 2 == 0 || *k >= first_left_out)
        .count();
    assert_eq!(read_all(&q2).len(), expected);
}

// --- lanes and overflow policy ---------------------------------------------

#[test]
fn a_lane_reader_gets_its_lanes_in_push_order_across_a_restart() {
    let tmp = TempDir::new().unwrap();
    {
        let (q, _) = open(tmp.path(), roomy());
        let bodies: Vec<Vec<u8>> = (0..12).map(|k| payload(k, 10)).collect();
        let batch: Vec<(&[u8], u64, u8)> = bodies
            .iter()
            .enumerate()
            .map(|(k, b)| (b.as_slice(), k as u64, (k % 4) as u8))
            .collect();
        q.push_lanes(&batch).unwrap();
        // A reader of lanes 1 and 3 (of 2 readers: odd lanes).
        let odd: Vec<u64> = std::iter::from_fn(|| q.read_next_lane(1, 2).unwrap())
            .map(|r| r.samples)
            .collect();
        assert_eq!(odd, [1, 3, 5, 7, 9, 11]);
    }
    let (q, _) = open(tmp.path(), roomy());
    let lane2: Vec<(u64, u8)> = std::iter::from_fn(|| q.read_next_lane(2, 4).unwrap())
        .map(|r| (r.samples, r.lane))
        .collect();
    assert_eq!(lane2, [(2, 2), (6, 2), (10, 2)]);
    assert_eq!(q.read_next_lane(2, 4).unwrap(), None);
    let even: Vec<u64> = std::iter::from_fn(|| q.read_next_lane(0, 2).unwrap())
        .map(|r| r.samples)
        .collect();
    assert_eq!(even, [0, 4, 8], "lane 2's records are in flight already");
}

#[test]
fn refuse_when_full_drops_nothing_and_frees_only_delivered_segments() {
    let tmp = TempDir::new().unwrap();
    let o = QueueOptions {
        on_full: OnFull::Refuse,
        // Delivered segments stay on disk until a push needs their room.
        cursor_sync_interval: Duration::from_secs(3600),
        ..opts(1000, 300)
    };
    let (q, _) = open(tmp.path(), o);
    let ids = push_n(&q, 0..10);
    let before = q.stats();
    let err = q.push(&payload(10, REC100), 11).unwrap_err();
    assert!(matches!(err, QueueError::Full { needed: 100, .. }), "{err}");
    assert_eq!(q.stats(), before, "nothing dropped");
    // Delivering a whole segment makes room for exactly that.
    for r in read_all(&q).iter().take(3) {
        q.ack(r.id).unwrap();
    }
    assert!(tmp.path().join(seg(ids[0])).exists());
    for k in 10..13 {
        let out = q.push(&payload(k, REC100), k + 1).unwrap();
        assert_eq!((out.dropped_records, out.dropped_samples), (0, 0));
    }
    assert!(!tmp.path().join(seg(ids[0])).exists());
    assert!(matches!(
        q.push(&payload(13, REC100), 14),
        Err(QueueError::Full { .. })
    ));
    let st = q.stats();
    assert_eq!((st.dropped_records_total, st.pending_records), (0, 10));
}

// --- fsync of a new queue directory's parent --------------------------------

const OPEN_CHILD_ENV: &str = "SPILLWAY_QUEUE_OPEN_CHILD_DIR";

/// Helper, not a test: opens the queue named by `SPILLWAY_QUEUE_OPEN_CHILD_DIR`,
/// for `a_new_queue_directory_is_made_durable_in_its_parent` to trace.
#[test]
#[ignore = "a child process of a_new_queue_directory_is_made_durable_in_its_parent, not a test"]
fn open_child() {
    let dir = std::env::var_os(OPEN_CHILD_ENV).expect("run by its parent test");
    Queue::open(dir, roomy()).unwrap();
}

#[test]
fn a_new_queue_directory_is_made_durable_in_its_parent() {
    // Issue 14 item 11: a destination's directory created and written to,
    // but its entry in the parent never fsynced, can vanish in a power cut
    // with everything queued in it.
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "strace is not installed: run scripts/install-deps.sh or `apt-get install -y strace`",
        );
    let tmp = TempDir::new().unwrap();
    let storage = tmp.path().join("storage");
    let dir = storage.join("dest");
    let trace = tmp.path().join("trace");
    let name = format!("{}::open_child", module_path!().split_once("::").unwrap().1);
    let out = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=mkdir,mkdirat,openat,fsync", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--ignored", "--test-threads=1", "-q"])
        .env(OPEN_CHILD_ENV, &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = fs::read_to_string(trace).unwrap();
    for (created, parent) in [(&storage, tmp.path()), (&dir, storage.as_path())] {
        assert!(
            synced_after_mkdir(&trace, created, parent),
            "{} was created, but {} not fsynced after it:\n{trace}",
            created.display(),
            parent.display()
        );
    }
}

/// Whether `trace` (strace output) shows `created` made, then `parent`
/// opened and that descriptor fsynced.
fn synced_after_mkdir(trace: &str, created: &Path, parent: &Path) -> bool {
    let quoted = |p: &Path| format!("\"{}\"", p.display());
    let mut lines = trace.lines();
    if !lines
        .by_ref()
        .any(|l| l.contains("mkdir") && l.contains(&quoted(created)) && l.ends_with("= 0"))
    {
        return false;
    }
    let mut fds = Vec::new();
    for l in lines {
        if l.contains("openat(") && l.contains(&format!("{},", quoted(parent))) {
            if let Some(fd) = l
                .rsplit("= ")
                .next()
                .and_then(|fd| fd.trim().parse::<i64>().ok())
            {
                fds.push(fd);
            }
        } else if let Some(rest) = l.split("fsync(").nth(1) {
            let fd = rest.split(')').next().and_then(|fd| fd.parse::<i64>().ok());
            if fd.is_some_and(|fd| fds.contains(&fd)) && l.ends_with("= 0") {
                return true;
            }
        }
    }
    false
}

#[test]
fn an_index_entry_is_40_bytes_as_documented() {
    assert_eq!(std::mem::size_of::<Entry>(), 40);
}

/// A queue that dropped records for room and then stopped cleanly has lost
/// nothing it did not already count: its next open reports nothing damaged,
/// whatever was acknowledged, in flight or pending when the drops happened.
#[test]
fn drops_for_room_are_not_damage_after_a_clean_restart() {
    for sync in [Duration::ZERO, Duration::from_secs(3600)] {
        for acked_every in [0u64, 1, 2, 3] {
            let tmp = TempDir::new().unwrap();
            let o = QueueOptions {
                cursor_sync_interval: sync,
                ..opts(1000, 300)
            };
            let (q, _) = open(tmp.path(), o);
            let mut dropped = 0;
            for k in 0..40u64 {
                dropped += q.push(&payload(k, REC100), k + 1).unwrap().dropped_records;
                if acked_every > 0 && k % acked_every == 0 {
                    let r = q.read_next().unwrap().unwrap();
                    if k % (2 * acked_every) == 0 {
                        q.ack(r.id).unwrap();
                    }
                }
            }
            assert!(dropped > 0, "the test must drop for room");
            let before = q.stats();
            q.close().unwrap();
            drop(q);
            let (q, report) = open(tmp.path(), o);
            let ctx = format!("sync {sync:?}, ack every {acked_every}: {report:?}");
            assert!(report.is_clean(), "{ctx}");
            assert_eq!(
                (report.dropped_records, report.dropped_samples),
                (0, 0),
                "{ctx}"
            );
            let st = q.stats();
            assert_eq!(
                (st.damaged_records_total, st.damaged_samples_total),
                (0, 0),
                "{ctx}"
            );
            assert_eq!(st.pending_records, before.pending_records, "{ctx}");
        }
    }
}

/// The same as a destination drives it: batches over lanes, segments of
/// 1/16 of the cap, acks out of order, the meta file stored once a second.
#[test]
fn drops_for_room_in_lane_batches_are_not_damage_after_a_clean_restart() {
    let tmp = TempDir::new().unwrap();
    let o = QueueOptions {
        cursor_sync_interval: Duration::from_secs(1),
        max_in_flight: 64,
        ..QueueOptions::new(1 << 20)
    };
    let (q, _) = open(tmp.path(), o);
    let mut dropped = 0;
    let mut held = Vec::new();
    for k in 0..120u64 {
        let bodies: Vec<Vec<u8>> = (0..3)
            .map(|j| payload(k * 3 + j, 9_000 + j as usize * 1_000))
            .collect();
        let batch: Vec<(&[u8], u64, u8)> = bodies
            .iter()
            .enumerate()
            .map(|(j, b)| (b.as_slice(), 100 + j as u64, j as u8))
            .collect();
        dropped += q.push_lanes(&batch).unwrap().dropped_records;
        if let Some(r) = q.read_next_lane((k % 2) as usize, 2).unwrap() {
            held.push(r.id);
        }
        if k % 3 == 2 {
            // Newest first: out of order, some of them already dropped.
            while let Some(id) = held.pop() {
                q.ack(id).unwrap();
                if held.len() % 2 == 0 {
                    break;
                }
            }
        }
    }
    assert!(dropped > 0, "the test must drop for room");
    let before = q.stats();
    q.close().unwrap();
    drop(q);
    let (q, report) = open(tmp.path(), o);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (report.dropped_records, report.dropped_samples),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(q.stats().damaged_records_total, 0);
    assert_eq!(report.pending_records, before.pending_records, "{report:?}");
}
