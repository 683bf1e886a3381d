//! The receiver's answers, through `oneshot` (no socket). Destinations are
//! opened but not started, so what was accepted stays in their queues where
//! the tests can count it.

use super::*;
use crate::client::ClientConfig;
use crate::codec::encode_write_request;
use crate::model::{Labels, Sample};
use crate::run::route::PipelineConfig;
use crate::sink::destination::{DestinationConfig, DestinationKind};
use crate::transform::relabel::RelabelRules;
use axum::http::Request;
use std::io::Write;
use tower::ServiceExt;

fn pipeline(dir: &std::path::Path, global: &str) -> Arc<Pipeline> {
    pipeline_with(dir, global, |_| {})
}

fn pipeline_with(
    dir: &std::path::Path,
    global: &str,
    edit: impl FnOnce(&mut DestinationConfig),
) -> Arc<Pipeline> {
    let mut dest = DestinationConfig::new(
        "d",
        DestinationKind::RemoteWrite,
        ClientConfig {
            url: "http://127.0.0.1:1".into(),
            ..Default::default()
        },
        dir,
    );
    edit(&mut dest);
    let config = PipelineConfig {
        global_relabel: RelabelRules::from_yaml(global, "test", Default::default()).unwrap(),
        external_labels: vec![("cluster".into(), "c1".into())],
        destinations: vec![dest],
    };
    Arc::new(Pipeline::open(config).unwrap())
}

fn small_limits() -> Limits {
    Limits {
        max_remote_write_bytes: 1 << 10,
        max_decoded_bytes: 4 << 10,
        max_line_bytes: 200,
        max_import_decoded_bytes: 64 << 10,
        ..Limits::default()
    }
}

async fn call(
    app: &Router,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut req = Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn series(name: &str, n: usize) -> Series {
    Series::new(
        Labels::from_pairs([("__name__", name)]),
        (0..n).map(|i| Sample::new(i as i64, 1.0)).collect(),
    )
}

fn pending(p: &Pipeline) -> u64 {
    p.statuses()[0].pending_samples
}

#[tokio::test]
async fn remote_write_is_queued_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(
        dir.path(),
        "- action: drop\n  regex: dropme\n  source_labels: [__name__]\n",
    );
    let app = router(Arc::clone(&p), small_limits());
    let mut body = Vec::new();
    encode_write_request(&[series("a", 3), series("dropme", 2)], &mut body).unwrap();
    let (status, text) = call(
        &app,
        "/api/v1/write",
        &[("Content-Encoding", "snappy")],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(pending(&p), 3, "global relabeling dropped 2");
}

#[tokio::test]
async fn remote_write_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let app = router(Arc::clone(&p), small_limits());

    let (status, text) = call(&app, "/api/v1/write", &[], b"\x05not snappy".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("not a valid raw snappy block"), "{text}");

    let (status, text) = call(
        &app,
        "/api/v1/write",
        &[],
        b"\xff\x06\x00\x00sNaPpY".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("framed snappy"), "{text}");

    let garbage = snap::raw::Encoder::new()
        .compress_vec(b"\xff\xff\xff\xff")
        .unwrap();
    let (status, text) = call(&app, "/api/v1/write", &[], garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("not a valid protobuf WriteRequest"), "{text}");

    let (status, text) = call(&app, "/api/v1/write", &[], vec![0u8; 2000]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text.contains("1024-byte limit"), "{text}");

    // Small on the wire, too big once decompressed.
    let mut big = Vec::new();
    let wide = Series::new(
        Labels::from_pairs([("__name__", "a"), ("pad", &"x".repeat(8000))]),
        vec![Sample::new(1, 1.0)],
    );
    encode_write_request(&[wide], &mut big).unwrap();
    assert!(big.len() < 1 << 10, "{}", big.len());
    let (status, text) = call(&app, "/api/v1/write", &[], big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text.contains("decompresses to"), "{text}");

    let (status, text) = call(
        &app,
        "/api/v1/write",
        &[("Content-Encoding", "gzip")],
        vec![1],
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(text.contains("snappy"), "{text}");
    assert_eq!(pending(&p), 0);
}

#[tokio::test]
async fn import_reads_lines_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let app = router(Arc::clone(&p), small_limits());
    let long = format!(
        "{{\"metric\":{{\"__name__\":\"{}\"}},\"values\":[1],\"timestamps\":[1]}}",
        "x".repeat(300)
    );
    let body = format!(
        "{}\n{}\n\n{}\n{long}\n{}",
        r#"{"metric":{"__name__":"a"},"values":[1,2],"timestamps":[1,2]}"#,
        r#"{"metric":{"__name__":"b"},"values":[1],"timestamps":"#,
        r#"{"metric":{"__name__":"c"},"values":[1,2],"timestamps":[1]}"#,
        r#"{"metric":{"__name__":"d"},"values":[5],"timestamps":[9]}"#,
    );
    let (status, text) = call(&app, "/api/v1/import", &[], body.into_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.starts_with("3 of 6 lines could not be read"), "{text}");
    assert!(text.contains("line 2: "), "{text}");
    assert!(text.contains("line 4: `values` has 2 entries"), "{text}");
    assert!(
        text.contains("line 5: longer than the 200-byte line limit"),
        "{text}"
    );
    assert_eq!(pending(&p), 3, "lines 1 and 6 were accepted");
}

#[tokio::test]
async fn import_of_good_lines_answers_204_and_routes_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let app = router(Arc::clone(&p), Limits::default());
    let mut body = String::new();
    for i in 0..25 {
        let values: Vec<String> = (0..1000).map(|v| v.to_string()).collect();
        body.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"m\",\"i\":\"{i}\"}},\"values\":[{}],\"timestamps\":[{}]}}\n",
            values.join(","),
            values.join(",")
        ));
    }
    let (status, text) = call(&app, "/api/v1/import", &[], body.into_bytes()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let st = &p.statuses()[0];
    assert_eq!(st.pending_samples, 25_000);
    assert!(
        st.pending_blocks >= 3,
        "routed in several batches: {}",
        st.pending_blocks
    );
}

#[tokio::test]
async fn shutting_down_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let app = router(Arc::clone(&p), small_limits());
    p.shutdown(std::time::Duration::from_millis(10)).await;
    let mut body = Vec::new();
    encode_write_request(&[series("a", 1)], &mut body).unwrap();
    let (status, text) = call(&app, "/api/v1/write", &[], body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("shutting down"), "{text}");
}

#[test]
fn line_splitter_handles_chunk_boundaries() {
    let mut s = LineSplitter::new(5);
    let mut got = Vec::new();
    let mut on = |n: u64, l: Line<'_>| {
        got.push(match l {
            Line::Text(t) => format!("{n}:{}", String::from_utf8_lossy(t)),
            Line::TooLong => format!("{n}:TOO LONG"),
        })
    };
    for chunk in ["ab", "c\nde", "fghij", "k\n\nxy"] {
        s.feed(chunk.as_bytes(), &mut on);
    }
    s.finish(&mut on);
    assert_eq!(got, ["1:abc", "2:TOO LONG", "3:", "4:xy"]);
}

fn import_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"metric\":{{\"__name__\":\"z\",\"i\":\"{i}\"}},\"values\":[1],\"timestamps\":[{i}]}}\n"))
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn import_takes_gzip_and_deflate_bodies() {
    // Regression, issue 14 item 14: gzip bodies were refused with 415,
    // where VictoriaMetrics and vmagent take them.
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let app = router(Arc::clone(&p), small_limits());
    let body = import_lines(100);
    let (status, text) = call(
        &app,
        "/api/v1/import",
        &[("Content-Encoding", "gzip")],
        gzip(body.as_bytes()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(pending(&p), 100);

    // Two gzip members back to back (`cat a.gz b.gz`) are one stream.
    let mut two = gzip(import_lines(3).as_bytes());
    two.extend(gzip(import_lines(4).as_bytes()));
    let (status, text) = call(&app, "/api/v1/import", &[("Content-Encoding", "gzip")], two).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(pending(&p), 107);

    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(import_lines(5).as_bytes()).unwrap();
    let (status, text) = call(
        &app,
        "/api/v1/import",
        &[("Content-Encoding", "deflate")],
        z.finish().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(pending(&p), 112);
}

#[tokio::test]
async fn compressed_imports_are_bounded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let app = router(Arc::clone(&p), small_limits());
    // 16 MiB of newlines in about 16 KiB: past the 64 KiB decoded limit.
    let bomb = gzip(&vec![b'\n'; 16 << 20]);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let (status, text) = call(
        &app,
        "/api/v1/import",
        &[("Content-Encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("65536-byte limit"), "{text}");

    let mut cut = gzip(import_lines(50).as_bytes());
    cut.truncate(cut.len() / 2);
    let (status, text) = call(&app, "/api/v1/import", &[("Content-Encoding", "gzip")], cut).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("not valid gzip data"), "{text}");

    let (status, text) = call(
        &app,
        "/api/v1/import",
        &[("Content-Encoding", "br")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(text.contains("plain, gzip or deflate"), "{text}");
}

#[tokio::test]
async fn a_full_destination_that_blocks_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline_with(dir.path(), "[]", |d| {
        d.on_full = crate::sink::destination::OnFullPolicy::Block;
        d.max_disk_bytes = 4 << 10;
    });
    let app = router(Arc::clone(&p), Limits::default());
    let mut answers = Vec::new();
    for i in 0..40 {
        let mut body = Vec::new();
        encode_write_request(&[series(&format!("m{i}"), 20)], &mut body).unwrap();
        let req = Request::post("/api/v1/write")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let retry_after = resp.headers().get("retry-after").cloned();
        answers.push((resp.status(), retry_after));
        if resp.status() != StatusCode::NO_CONTENT {
            break;
        }
    }
    let (status, retry_after) = answers.last().unwrap().clone();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answers:?}");
    assert_eq!(retry_after.unwrap(), "2");
    let accepted = (answers.len() - 1) as u64;
    assert!(accepted > 0);
    let st = &p.statuses()[0];
    assert_eq!(
        st.pending_samples,
        accepted * 20,
        "the refused batch is not queued"
    );
    assert_eq!(
        st.samples_dropped.values().sum::<u64>(),
        0,
        "nothing dropped"
    );
    assert_eq!(st.full_refusals, 1);
}

#[test]
fn requests_past_max_concurrent_inserts_wait_their_turn_then_get_503() {
    let recorded = crate::server::metrics::testutil::recorded(false, || async {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path(), "[]");
        let limits = Limits {
            requests_at_once: 1,
            max_turn_wait: Duration::from_millis(300),
            ..small_limits()
        };
        let app = router(Arc::clone(&p), limits);

        // A body that arrives only as the test feeds it: with room for one
        // chunk, the second send returns once the receiver is reading the body,
        // that is, once the request holds the one turn.
        let (tx, slow) = fed_by_hand(&app, "/api/v1/import");
        tx.send(bytes::Bytes::from_static(b"{")).await.unwrap();
        tx.send(bytes::Bytes::from_static(b"\"metric\""))
            .await
            .unwrap();

        let mut body = Vec::new();
        encode_write_request(&[series("a", 1)], &mut body).unwrap();
        let (status, text) = call(&app, "/api/v1/write", &[], body.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert!(text.contains("server.max_concurrent_inserts"), "{text}");
        let (status, text) = call(&app, "/api/v1/import", &[], import_lines(1).into_bytes()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert_eq!(pending(&p), 0, "nothing waiting for a turn was routed");

        // The first request ends (a bad line), and its turn goes to the next.
        tx.send(bytes::Bytes::from_static(b"}\n")).await.unwrap();
        drop(tx);
        assert_eq!(slow.await.unwrap().0, StatusCode::BAD_REQUEST);
        let (status, text) = call(&app, "/api/v1/write", &[], body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
        assert_eq!(pending(&p), 1);
    });
    for (name, expected) in [
        ("spillway_receiver_concurrent_inserts_capacity", 1.0),
        ("spillway_receiver_concurrent_inserts_current", 0.0),
        (
            "spillway_receiver_concurrent_inserts_limit_reached_total",
            2.0,
        ),
        (
            "spillway_receiver_concurrent_inserts_limit_timeout_total",
            2.0,
        ),
    ] {
        let key = format!("{name}{{}}");
        assert_eq!(
            recorded.values.get(&key),
            Some(&expected),
            "{key} in {recorded:?}"
        );
    }
}

/// A request whose body arrives only as the test sends it: the channel has
/// room for one piece, so a second send returns once the receiver is
/// reading the body (it holds a turn).
fn fed_by_hand(
    app: &Router,
    path: &'static str,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<(StatusCode, String)>,
) {
    let (tx, body_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let app = app.clone();
    let answer = tokio::spawn(async move {
        let req = Request::post(path).body(Body::from_stream(stream)).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    (tx, answer)
}

#[tokio::test]
async fn a_body_that_stalls_is_dropped_with_408_and_frees_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "[]");
    let limits = Limits {
        requests_at_once: 1,
        body_idle_timeout: Duration::from_millis(200),
        ..small_limits()
    };
    let app = router(Arc::clone(&p), limits);
    let mut body = Vec::new();
    encode_write_request(&[series("a", 1)], &mut body).unwrap();
    for (path, first, where_) in [
        ("/api/v1/write", body[..2].to_vec(), ""),
        (
            "/api/v1/import",
            import_lines(2).into_bytes(),
            " after line 2",
        ),
    ] {
        let (tx, stalled) = fed_by_hand(&app, path);
        tx.send(first.into()).await.unwrap();
        tx.send(bytes::Bytes::new()).await.unwrap();
        let (status, text) = stalled.await.unwrap();
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{path}: {text}");
        assert!(
            text.contains(&format!("no body bytes came for 200ms{where_}")),
            "{text}"
        );
        drop(tx);
        let (status, text) = call(&app, "/api/v1/write", &[], body.clone()).await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "{path}: the turn is free: {text}"
        );
    }
    assert_eq!(pending(&p), 2, "only the complete requests were routed");
}
