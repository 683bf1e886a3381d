//! Destinations against a tiny in-process HTTP server that records what it
//! gets and answers what the test tells it to (the fault injection no real
//! server does on demand; real servers are in `tests/route.rs`).

use super::*;
use crate::client::ClientConfig;
use crate::codec::decode_write_request;
use crate::model::Sample;
use axum::http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;
use std::time::Instant;

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// What the fake answered.
    status: u16,
}

/// Answers from `script` first, then `default`.
#[derive(Default)]
struct Fake {
    received: StdMutex<Vec<Received>>,
    script: StdMutex<VecDeque<(u16, &'static str)>>,
    default: StdMutex<(u16, &'static str)>,
    /// Longest random pause before answering, so parallel requests overlap.
    jitter_ms: std::sync::atomic::AtomicU64,
}

impl Fake {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn fake_server(default: u16) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    *fake.default.lock().unwrap() = (default, "");
    let state = Arc::clone(&fake);
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let state = Arc::clone(&state);
            async move {
                let (code, text) = state
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(*state.default.lock().unwrap());
                state.received.lock().unwrap().push(Received {
                    path: uri.path().to_string(),
                    headers,
                    body: body.to_vec(),
                    status: code,
                });
                let jitter = state.jitter_ms.load(std::sync::atomic::Ordering::Relaxed);
                if jitter > 0 {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=jitter))).await;
                }
                (StatusCode::from_u16(code).unwrap(), text)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

fn config(name: &str, kind: DestinationKind, url: &str, dir: &Path) -> DestinationConfig {
    let mut c = DestinationConfig::new(
        name,
        kind,
        ClientConfig {
            url: url.to_string(),
            ..Default::default()
        },
        dir,
    );
    c.concurrency = 1;
    c.flush_interval = Duration::from_millis(50);
    c.max_disk_bytes = 1 << 20;
    // These tests count requests of the Prometheus protocol; the zstd first
    // try of `auto` and its fallback are tested in tests/remote_write_protocol.rs.
    c.protocol = WriteProtocol::Prometheus;
    c
}

fn series(name: &str, job: &str, samples: &[(i64, f64)]) -> Series {
    Series::new(
        Labels::from_pairs([("__name__", name), ("job", job)]),
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    )
}

/// Polls `cond` for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn decode_all(received: &[Received]) -> Vec<Series> {
    received
        .iter()
        .flat_map(|r| decode_write_request(&r.body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_delivers_with_the_spec_headers_and_acks() {
    let (fake, url) = fake_server(204).await;
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = Destination::open(config(
        "rw_delivers",
        DestinationKind::RemoteWrite,
        &format!("{url}/api/v1/write"),
        dir.path(),
    ))
    .unwrap();
    d.start();
    let batch = vec![
        series("up", "a", &[(1000, 1.0), (2000, 0.0)]),
        series(
            "up",
            "b",
            &[(1000, f64::from_bits(crate::model::STALE_NAN_BITS))],
        ),
    ];
    let acc = d.accept(&batch).unwrap();
    assert_eq!((acc.samples, acc.blocks), (3, 1));
    eventually("delivery", || d.status().samples_sent == 3).await;
    let got = fake.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/api/v1/write");
    let h = &got[0].headers;
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    let back = decode_all(&got);
    assert_eq!(back.len(), 2);
    assert_eq!(back[0], batch[0]);
    assert!(back[1].samples[0].is_stale(), "stale marker bits survive");
    // Counted sent when the server answered; acknowledged in the queue after.
    eventually("acknowledged", || {
        let st = d.status();
        (st.pending_samples, st.pending_blocks) == (0, 0)
    })
    .await;
    d.shutdown(Duration::from_secs(1)).await;
    assert!(matches!(
        d.accept(&batch),
        Err(DestinationError::Closed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_counted_logged_and_not_retried() {
    let (fake, url) = fake_server(400).await;
    *fake.default.lock().unwrap() = (400, "cannot parse: label name too long");
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = Destination::open(config(
        "rw_400",
        DestinationKind::RemoteWrite,
        &url,
        dir.path(),
    ))
    .unwrap();
    d.start();
    d.accept(&[series("up", "a", &[(1, 1.0), (2, 2.0)])])
        .unwrap();
    eventually("drop", || d.status().samples_dropped["rejected_4xx"] == 2).await;
    // One sender, oldest first: had the first block been retried, its
    // retries would reach the server before the second block does.
    d.accept(&[series("up", "b", &[(3, 3.0)])]).unwrap();
    eventually("second drop", || {
        d.status().samples_dropped["rejected_4xx"] == 3
    })
    .await;
    assert_eq!(fake.received().len(), 2, "a 4xx is not retried");
    eventually("acknowledged", || d.status().pending_samples == 0).await;
    let st = d.status();
    assert_eq!(st.samples_sent, 0);
    let err = st.last_error.unwrap();
    assert!(
        err.contains("400") && err.contains("label name too long"),
        "{err}"
    );
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_429_are_retried_until_delivered() {
    let (fake, url) = fake_server(204).await;
    fake.script
        .lock()
        .unwrap()
        .extend([(503, "busy"), (429, "slow down")]);
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = Destination::open(config(
        "rw_retry",
        DestinationKind::VmImport,
        &url,
        dir.path(),
    ))
    .unwrap();
    d.start();
    let batch = vec![series("up", "a", &[(1000, 1.5)])];
    d.accept(&batch).unwrap();
    eventually("delivery after retries", || d.status().samples_sent == 1).await;
    let got = fake.received();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.path == "/api/v1/import"));
    assert_eq!(got[0].body, got[2].body, "the same bytes each time");
    assert_eq!(
        String::from_utf8(got[2].body.clone()).unwrap(),
        "{\"metric\":{\"__name__\":\"up\",\"job\":\"a\"},\"values\":[1.5],\"timestamps\":[1000]}\n"
    );
    let st = d.status();
    assert_eq!(st.retries, 2);
    assert!(st.last_error.unwrap().contains("429"));
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabel_and_external_labels_apply_per_destination() {
    let (fake, url) = fake_server(204).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("rw_relabel", DestinationKind::RemoteWrite, &url, dir.path());
    c.relabel = RelabelRules::from_yaml(
        "- action: keep\n  source_labels: [job]\n  regex: keep.*\n",
        "test",
        Default::default(),
    )
    .unwrap();
    c.external_labels = vec![("dc".into(), "x".into()), ("job".into(), "ignored".into())];
    let (d, _) = Destination::open(c).unwrap();
    d.start();
    let batch = vec![
        series("m", "keep1", &[(1, 1.0)]),
        series("m", "other", &[(1, 1.0), (2, 2.0)]),
        series("m", "empty", &[]),
    ];
    let acc = d.accept(&batch).unwrap();
    assert_eq!((acc.samples, acc.relabel_dropped), (1, 2));
    eventually("delivery", || d.status().samples_sent == 1).await;
    let back = decode_all(&fake.received());
    assert_eq!(
        back[0].labels,
        Labels::from_pairs([("__name__", "m"), ("job", "keep1"), ("dc", "x")])
    );
    assert_eq!(d.status().samples_dropped["relabel"], 2);
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_are_merged_and_big_batches_split() {
    let (fake, url) = fake_server(204).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("rw_merge", DestinationKind::RemoteWrite, &url, dir.path());
    c.max_batch_samples = 10;
    c.flush_interval = Duration::from_millis(300);
    let (d, _) = Destination::open(c).unwrap();
    // Queue first, then start: the sender finds three small blocks waiting.
    for job in ["a", "b", "c"] {
        d.accept(&[series("m", job, &[(1, 1.0)])]).unwrap();
    }
    let long: Vec<(i64, f64)> = (0..25).map(|i| (i, i as f64)).collect();
    let acc = d.accept(&[series("m", "long", &long)]).unwrap();
    assert_eq!(acc.blocks, 3, "25 samples in blocks of 10");
    d.start();
    eventually("delivery", || d.status().samples_sent == 28).await;
    let got = fake.received();
    let sizes: Vec<usize> = got
        .iter()
        .map(|r| {
            decode_write_request(&r.body)
                .unwrap()
                .iter()
                .map(|s| s.samples.len())
                .sum()
        })
        .collect();
    // Three 1-sample blocks travel together; full blocks go alone.
    assert_eq!(sizes.iter().sum::<usize>(), 28);
    assert!(sizes.contains(&3) || sizes.contains(&13), "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_end_the_wait_for_company() {
    let (fake, url) = fake_server(204).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("rw_idle", DestinationKind::RemoteWrite, &url, dir.path());
    c.max_batch_samples = 10;
    // Only the hint can send these small blocks within the test's time.
    c.flush_interval = Duration::from_secs(3600);
    let (d, _) = Destination::open(c).unwrap();
    d.start();
    for job in ["a", "b", "c"] {
        d.accept(&[series("m", job, &[(1, 1.0)])]).unwrap();
    }
    d.producers_idle();
    eventually("delivery after the hint", || d.status().samples_sent == 3).await;
    let received = fake.received();
    let shapes: Vec<usize> = received
        .iter()
        .map(|r| decode_write_request(&r.body).unwrap().len())
        .collect();
    assert_eq!(
        received.len(),
        1,
        "the three blocks leave together: {shapes:?}"
    );

    // An accept after the hint waits for company again, until the next hint.
    d.accept(&[series("m", "d", &[(2, 2.0)])]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.status().samples_sent, 3, "sent without a hint");
    d.producers_idle();
    eventually("delivery after the second hint", || {
        d.status().samples_sent == 4
    })
    .await;
    d.shutdown(Duration::from_secs(1)).await;
}

/// The interleaving behind a batch split in two by the idle hint: the
/// sender reads the queue empty, an accept then pushes a block and the hint
/// follows it, and only then does the sender ask whether the producers are
/// idle. They are, but its read missed that block, so it must read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_hint_waits_for_accepts_that_raced_the_read() {
    let (_fake, url) = fake_server(204).await;
    let dir = tempfile::tempdir().unwrap();
    let c = config("rw_race", DestinationKind::RemoteWrite, &url, dir.path());
    let (d, _) = Destination::open(c).unwrap();
    d.accept(&[series("m", "a", &[(1, 1.0)])]).unwrap();
    let done_before_read = d.shared.accepts_done();
    d.accept(&[series("m", "b", &[(1, 1.0)])]).unwrap();
    d.producers_idle();
    assert!(!d.shared.producers_are_idle(done_before_read));
    assert!(d.shared.producers_are_idle(d.shared.accepts_done()));
    // An accept with nothing to push counts as finished too, or the hint
    // would never end a wait again.
    d.accept(&[]).unwrap();
    d.producers_idle();
    assert!(d.shared.producers_are_idle(d.shared.accepts_done()));
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_destination_keeps_data_queued_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let c = config(
        "rw_down",
        DestinationKind::RemoteWrite,
        "http://127.0.0.1:1",
        dir.path(),
    );
    let (d, _) = Destination::open(c.clone()).unwrap();
    d.start();
    d.accept(&[series("m", "a", &[(1, 1.0), (2, 2.0)])])
        .unwrap();
    eventually("a failed attempt", || d.status().last_error.is_some()).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        d.shutdown(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown gives up on a destination that is down");
    assert!(d.status().last_error.unwrap().contains("cannot connect"));
    drop(d);

    let (fake, url) = fake_server(204).await;
    let mut c = c;
    c.client.url = url;
    let (d, report) = Destination::open(c).unwrap();
    assert_eq!(report.pending_samples, 2, "still queued after the restart");
    d.start();
    eventually("delivery after restart", || d.status().samples_sent == 2).await;
    assert_eq!(decode_all(&fake.received()).len(), 1);
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cap_drops_oldest_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, url) = fake_server(503).await;
    let mut c = config("rw_cap", DestinationKind::VmImport, &url, dir.path());
    c.max_disk_bytes = 1 << 20;
    let (d, _) = Destination::open(c).unwrap();
    d.start();
    // ~100 KB blocks of 10000 samples: 30 of them cannot all fit in 1 MiB.
    let mut accepted = 0u64;
    for i in 0..30 {
        let samples: Vec<(i64, f64)> = (0..10_000).map(|t| (t, (i * 10_000 + t) as f64)).collect();
        accepted += d
            .accept(&[series("m", &format!("j{i}"), &samples)])
            .unwrap()
            .samples;
    }
    let st = d.status();
    assert!(st.disk_bytes <= 1 << 20, "{}", st.disk_bytes);
    let dropped = st.samples_dropped["disk_full"];
    assert!(dropped > 0);
    assert_eq!(dropped % 10_000, 0, "whole blocks go");
    assert_eq!(st.pending_samples + dropped, accepted);
    // Back up: what is still queued arrives, nothing dropped arrives too.
    *fake.default.lock().unwrap() = (204, "");
    eventually("delivery", || d.status().pending_samples == 0).await;
    let st = d.status();
    assert_eq!(st.samples_sent + st.samples_dropped["disk_full"], accepted);
    let delivered: std::collections::BTreeSet<String> = fake
        .received()
        .iter()
        .filter(|r| r.status == 204)
        .flat_map(|r| {
            String::from_utf8(r.body.clone())
                .unwrap()
                .lines()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let delivered_samples = delivered.len() as u64 * 10_000;
    assert_eq!(
        delivered_samples, st.samples_sent,
        "no dropped block was sent after all"
    );
    d.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn request_paths_follow_the_url_forms() {
    let rw = DestinationKind::RemoteWrite;
    assert_eq!(
        rw.request_path("http://vm:8428/api/v1/write"),
        "/api/v1/write"
    );
    assert_eq!(rw.request_path("http://vm:8428"), "/api/v1/write");
    assert_eq!(rw.request_path("http://mimir/api/v1/push"), "/api/v1/push");
    assert_eq!(
        rw.request_path("http://vminsert:8480/insert/0/prometheus/api/v1/write"),
        "/api/v1/write"
    );
    assert_eq!(
        rw.request_path("http://vminsert:8480/insert/0/prometheus"),
        "/api/v1/write"
    );
    let vm = DestinationKind::VmImport;
    assert_eq!(
        vm.request_path("http://vm:8428/api/v1/import"),
        "/api/v1/import"
    );
    assert_eq!(vm.request_path("http://vm:8428"), "/api/v1/import");
}

#[test]
fn queue_dir_names_are_safe() {
    assert_eq!(queue_dir_name("incident_storage"), "incident_storage");
    assert_eq!(queue_dir_name("a/b c"), "a_b_c");
    assert_eq!(queue_dir_name(".."), "_..");
    assert_eq!(queue_dir_name(""), "_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_series_arrives_in_order_whatever_the_concurrency() {
    // Regression, issue 11 item 6: parallel senders delivered a catch-up
    // burst out of order, and Prometheus refused it ("out of order sample").
    let (fake, url) = fake_server(204).await;
    fake.jitter_ms
        .store(15, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("rw_order", DestinationKind::RemoteWrite, &url, dir.path());
    c.concurrency = 4;
    c.max_batch_samples = 40;
    let (d, _) = Destination::open(c).unwrap();
    // A backlog first (the destination was down), then live batches.
    let batch = |t: i64| -> Vec<Series> {
        (0..20)
            .map(|k| series("m", &format!("s{k}"), &[(t * 1000, t as f64)]))
            .collect()
    };
    for t in 0..60 {
        d.accept(&batch(t)).unwrap();
    }
    d.start();
    for t in 60..80 {
        d.accept(&batch(t)).unwrap();
    }
    eventually("delivery", || d.status().samples_sent == 80 * 20).await;
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for s in decode_all(&fake.received()) {
        let key = s.labels.value("job").to_string();
        for sample in &s.samples {
            let prev = last.insert(key.clone(), sample.timestamp_ms);
            assert!(
                prev.is_none_or(|p| p < sample.timestamp_ms),
                "series {key}: {} arrived after {prev:?}",
                sample.timestamp_ms
            );
        }
    }
    assert_eq!(last.len(), 20);
    assert!(last.values().all(|&t| t == 79_000));
    d.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_stored_answers_split_merged_requests_and_count_apart() {
    let (fake, url) = fake_server(204).await;
    // Prometheus 2.42's answer to a request holding a sample it has already.
    const OOO: &str = "out of order sample";
    fake.script.lock().unwrap().push_back((400, OOO));
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("rw_ooo", DestinationKind::RemoteWrite, &url, dir.path());
    c.flush_interval = Duration::from_millis(300);
    let (d, _) = Destination::open(c).unwrap();
    for job in ["a", "b", "c"] {
        d.accept(&[series("m", job, &[(1, 1.0)])]).unwrap();
    }
    d.start();
    eventually("delivery", || d.status().samples_sent == 3).await;
    let got = fake.received();
    assert_eq!(
        got.len(),
        4,
        "one merged request refused, then one per block"
    );
    assert_eq!(decode_all(&got[..1]).len(), 3);
    assert!(got[1..]
        .iter()
        .all(|r| decode_write_request(&r.body).unwrap().len() == 1));

    // A single block refused so is counted apart: not retried, not dropped.
    *fake.default.lock().unwrap() = (400, OOO);
    d.accept(&[series("m", "d", &[(1, 1.0), (2, 2.0)])])
        .unwrap();
    eventually("settled", || {
        let st = d.status();
        st.samples_duplicate == 2 && st.pending_samples == 0
    })
    .await;
    let st = d.status();
    assert_eq!(st.samples_dropped.values().sum::<u64>(), 0, "{st:?}");
    assert_eq!((st.samples_sent, st.pending_samples), (3, 0));
    assert_eq!(fake.received().len(), 5);
    d.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn only_prometheus_already_stored_answers_count_as_duplicates() {
    let err = |status: u16, body: &str| crate::client::ClientError::Status {
        url: "u".into(),
        status,
        body: body.into(),
    };
    let rw = DestinationKind::RemoteWrite;
    for body in [
        "out of order sample",
        "duplicate sample for timestamp",
        "out of bounds",
        "too old sample",
    ] {
        assert!(sender::already_stored(rw, &err(400, body)), "{body}");
    }
    assert!(!sender::already_stored(
        rw,
        &err(400, "label name too long")
    ));
    assert!(!sender::already_stored(
        rw,
        &err(500, "out of order sample")
    ));
    assert!(!sender::already_stored(
        DestinationKind::VmImport,
        &err(400, "out of order sample")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_what_is_queued_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(
        "rw_newest",
        DestinationKind::VmImport,
        "http://127.0.0.1:1",
        dir.path(),
    );
    c.on_full = OnFullPolicy::DropNewest;
    c.max_disk_bytes = 1 << 20;
    let (d, _) = Destination::open(c).unwrap();
    let (mut queued, mut dropped) = (0, 0);
    for i in 0..30 {
        let samples: Vec<(i64, f64)> = (0..10_000).map(|t| (t, (i * 10_000 + t) as f64)).collect();
        let acc = d
            .accept(&[series("m", &format!("j{i}"), &samples)])
            .unwrap();
        queued += acc.samples;
        dropped += acc.full_dropped;
    }
    let st = d.status();
    assert!(dropped > 0 && queued > 0);
    assert_eq!(queued + dropped, 300_000);
    assert_eq!(st.pending_samples, queued, "the oldest stay queued");
    assert_eq!(st.samples_dropped["disk_full"], dropped);
    assert_eq!(st.on_full, "drop_newest");
    d.shutdown(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_damage_found_at_open_is_counted_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        "rw_damage",
        DestinationKind::VmImport,
        "http://127.0.0.1:1",
        dir.path(),
    );
    {
        let (d, _) = Destination::open(c.clone()).unwrap();
        for i in 0..10 {
            d.accept(&[series("m", &format!("j{i}"), &[(1, 1.0), (2, 2.0)])])
                .unwrap();
        }
        d.stop().await;
    }
    // The last segment rolled back after a power cut: half its blocks gone.
    let seg = std::fs::read_dir(&c.queue_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (d, report) = Destination::open(c).unwrap();
    let lost = report.dropped_samples;
    assert!(lost >= 8, "{report:?}");
    assert_eq!(report.pending_samples + lost, 20);
    let st = d.status();
    assert_eq!(st.samples_dropped["damaged"], lost);
    assert_eq!(st.samples_dropped["disk_full"], 0);
}

#[test]
fn lanes_are_the_streaming_xxh64_of_the_labels_as_before() {
    // Lanes of queued blocks survive restarts and upgrades: the one-shot
    // hash must place every series where the piecewise one did.
    let streaming = |labels: &Labels, lanes: usize| {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for l in labels.iter() {
            h.update(l.name.as_bytes());
            h.update(&[0xff]);
            h.update(l.value.as_bytes());
            h.update(&[0xfe]);
        }
        (h.digest() % lanes as u64) as u8
    };
    let mut key = Vec::new();
    for i in 0..500 {
        let labels = Labels::from_pairs([
            ("__name__", format!("metric_{}", i % 7)),
            ("instance", format!("host-{i}:9100")),
            ("job", "x".repeat(i % 40)),
        ]);
        for lanes in [1, 2, 3, 4, 8, 64] {
            let want = if lanes == 1 {
                0
            } else {
                streaming(&labels, lanes)
            };
            assert_eq!(
                super::lane_of(&labels, lanes, &mut key),
                want,
                "{labels:?} / {lanes}"
            );
        }
    }
}

#[test]
fn lane_order_groups_by_lane_and_keeps_order_within_each() {
    let lanes = [2u8, 0, 1, 2, 0, 0, 3, 1];
    let order = super::lane_order(lanes.iter().copied(), 4);
    assert_eq!(order, [1, 4, 5, 2, 7, 0, 3, 6]);
    assert!(super::lane_order(std::iter::empty(), 1).is_empty());
    assert_eq!(super::lane_order([0u8, 0].into_iter(), 1), [0, 1]);
}

#[test]
fn marking_relabeling_agrees_with_relabeling_and_says_what_changed() {
    let rule_lists = [
        "- action: keep\n  source_labels: [job]\n  regex: a.*\n",
        "- action: drop\n  source_labels: [job]\n  regex: b\n",
        "- action: keep\n  source_labels: [job]\n  regex: .*\n",
        "- action: replace\n  source_labels: [job]\n  target_label: team\n  replacement: t-$1\n",
        "- action: labeldrop\n  regex: job\n",
    ];
    let label_sets = [
        Labels::from_pairs([("__name__", "m"), ("job", "a1")]),
        Labels::from_pairs([("__name__", "m"), ("job", "b")]),
        Labels::from_pairs([("__name__", "m"), ("__tmp", "x"), ("job", "a2")]),
        Labels::from_pairs([("job", "a3")]),
        Labels::from_pairs([("__tmp", "only")]),
        Labels::default(),
    ];
    for yaml in rule_lists {
        let rules = RelabelRules::from_yaml(yaml, "test", Default::default()).unwrap();
        for labels in &label_sets {
            let mut plain = labels.clone();
            let kept = relabel_like_vmagent(&rules, &mut plain);
            let mut marked = labels.clone();
            let verdict = relabel_like_vmagent_marking(&rules, &mut marked);
            assert_eq!(verdict.is_some(), kept, "{yaml} on {labels:?}");
            if let Some(changed) = verdict {
                assert_eq!(marked, plain, "{yaml} on {labels:?}");
                // Editing rules may report a change that left the labels
                // equal; an unchanged verdict must never hide a change.
                if !changed {
                    assert_eq!(&marked, labels, "{yaml} on {labels:?}");
                }
            }
        }
    }
}
