//! Which remote-write protocol a `remote_write` destination speaks
//! (`protocol: auto|prometheus|victoriametrics`). Real servers prove the
//! fallback: Debian's VictoriaMetrics 1.79 predates the zstd protocol and
//! answers 400, Prometheus answers 415; both must end up with every sample
//! after exactly one refused request. A small axum receiver plays a
//! VictoriaMetrics that takes zstd (no packaged server here does) and
//! records what arrived: headers, bodies, bytes. Data is pushed to
//! spillway's own `/api/v1/import`.

mod common;

use common::*;
use spillway::codec::{decode_write_request, Compression};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERIES: usize = 500;
const ROUNDS: usize = 4;

/// A timestamp an hour ago, whole seconds: inside any retention.
fn base_ts() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now - 3_600_000) / 1000 * 1000
}

/// Series shaped like rule results: a recording-rule name, the rule's
/// label and a few result labels; one sample per round.
fn round(round: usize, ts: i64) -> String {
    let mut out = String::new();
    for s in 0..SERIES {
        out.push_str(&vm_line(
            &[
                ("__name__", "proto:bench"),
                ("export_target", "d1"),
                ("instance", &format!("10.0.{}.{}:9100", s / 256, s % 256)),
                ("job", "node"),
                ("series", &s.to_string()),
            ],
            &[(ts + round as i64 * 15_000, (s * 7 % 100) as f64)],
        ));
        out.push('\n');
    }
    out
}

/// Pushes every round, one request each, and returns the points sent.
fn push_all(sp: &SpillwayRun) -> BTreeSet<(String, i64)> {
    let base = base_ts();
    let mut lines = Vec::new();
    for r in 0..ROUNDS {
        let body = round(r, base);
        let (code, text) = post_status(&format!("{}/api/v1/import", sp.url()), body.as_bytes());
        assert_eq!(code, 204, "{text}");
        lines.extend(body.lines().map(str::to_string));
    }
    distinct_points(&lines)
}

fn config(url: &str, protocol: Option<&str>) -> String {
    let protocol = protocol.map_or(String::new(), |p| format!("    protocol: {p}\n"));
    format!(
        "destinations:
  - name: d
    url: {url}/api/v1/write
    flush_interval: 100ms
    concurrency: 1
{protocol}storage: {{path: \"{{dir}}/data\"}}
"
    )
}

/// zstd requests refused and sent again as snappy.
fn fallbacks(sp: &SpillwayRun) -> f64 {
    sp.metric(
        "spillway_remote_write_protocol_fallbacks_total",
        &[("destination", "d")],
    )
}

/// Requests the destination answered with `status`.
fn answered(sp: &SpillwayRun, status: &str) -> f64 {
    sp.metric(
        "spillway_requests_total",
        &[("destination", "d"), ("status_code", status)],
    )
}

#[test]
fn victoriametrics_1_79_refuses_zstd_once_and_gets_everything_as_snappy() {
    let vm = Vm::start();
    let sp = SpillwayRun::start(&config(&vm.url(), None));
    let sent = push_all(&sp);
    sp.wait_delivered(Duration::from_secs(30));
    let got = vm.distinct_points_until("{__name__=\"proto:bench\"}", |got| *got == sent);
    assert_eq!(got, sent, "every sample arrived");
    assert_eq!(fallbacks(&sp), 1.0, "one refusal, then remembered");
    assert_eq!(
        answered(&sp, "400"),
        0.0,
        "the negotiation is no 4xx of the data"
    );
    assert!(answered(&sp, "204") >= 1.0);
    assert_eq!(
        sp.metric(
            "spillway_samples_dropped_total",
            &[("destination", "d"), ("reason", "rejected_4xx")]
        ),
        0.0
    );
    assert!(
        sp.server
            .log()
            .contains("refused the VictoriaMetrics remote-write protocol"),
        "the fallback is logged:\n{}",
        sp.server.log()
    );
}

#[test]
fn prometheus_refuses_zstd_once_and_gets_everything_as_snappy() {
    let prom = Prometheus::start();
    let sp = SpillwayRun::start(&config(&prom.url(), None));
    let sent = push_all(&sp);
    sp.wait_delivered(Duration::from_secs(30));
    assert_eq!(fallbacks(&sp), 1.0, "one refusal, then remembered");
    let refused = answered(&sp, "415") + answered(&sp, "400");
    assert_eq!(refused, 0.0, "the negotiation is no 4xx of the data");
    let q = http_get(&format!(
        "{}/api/v1/query?query=count(count_over_time(%7B__name__%3D%22proto%3Abench%22%7D%5B2h%5D))",
        prom.url()
    ));
    let v: serde_json::Value = serde_json::from_str(&q).unwrap();
    let series: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert_eq!(series as usize, SERIES, "{q}");
    let q = http_get(&format!(
        "{}/api/v1/query?query=sum(count_over_time(%7B__name__%3D%22proto%3Abench%22%7D%5B2h%5D))",
        prom.url()
    ));
    let v: serde_json::Value = serde_json::from_str(&q).unwrap();
    let samples: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert_eq!(samples as usize, sent.len(), "{q}");
}

/// One request the fake receiver saw: `Content-Encoding`,
/// `X-VictoriaMetrics-Remote-Write-Version` and the body.
type Request = (Option<String>, Option<String>, Vec<u8>);

/// What the fake receiver saw, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

/// A remote-write receiver that takes both protocols and answers 204
/// (`zstd_status` to zstd bodies), recording every request. Stops on drop.
struct Receiver {
    url: String,
    seen: Seen,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(zstd_status: u16) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Seen::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move {
                    let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string());
                    let encoding = h("content-encoding");
                    record.0.lock().unwrap().push((
                        encoding.clone(),
                        h("x-victoriametrics-remote-write-version"),
                        body.to_vec(),
                    ));
                    let status = if encoding.as_deref() == Some("zstd") {
                        zstd_status
                    } else {
                        204
                    };
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        );
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            seen,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.0.lock().unwrap().clone()
    }
}

/// Samples in the bodies of `requests` that were accepted (not `refused`).
fn decoded_samples(requests: &[Request]) -> usize {
    requests
        .iter()
        .flat_map(|(_, _, b)| decode_write_request(b).unwrap())
        .map(|s| s.samples.len())
        .sum()
}

#[test]
fn a_receiver_that_takes_zstd_gets_the_victoriametrics_protocol() {
    let rx = Receiver::start(204);
    let sp = SpillwayRun::start(&config(&rx.url, None));
    let sent = push_all(&sp);
    sp.wait_delivered(Duration::from_secs(30));
    let reqs = rx.requests();
    assert!(!reqs.is_empty());
    for (encoding, version, body) in &reqs {
        assert_eq!(encoding.as_deref(), Some("zstd"));
        assert_eq!(version.as_deref(), Some("1"));
        assert_eq!(Compression::of(body), Compression::Zstd);
    }
    assert_eq!(decoded_samples(&reqs), sent.len());
    assert_eq!(answered(&sp, "415") + answered(&sp, "400"), 0.0);
}

#[test]
fn a_forced_protocol_is_kept() {
    let rx = Receiver::start(415);
    let sp = SpillwayRun::start(&config(&rx.url, Some("prometheus")));
    let sent = push_all(&sp);
    sp.wait_delivered(Duration::from_secs(30));
    let reqs = rx.requests();
    assert!(reqs.iter().all(|r| r.0.as_deref() == Some("snappy")));
    assert_eq!(decoded_samples(&reqs), sent.len());

    // victoriametrics: a refused zstd request is resent as snappy, but the
    // next ones try zstd again (vmagent's -remoteWrite.useVMProto).
    let rx = Receiver::start(415);
    let sp = SpillwayRun::start(&config(&rx.url, Some("victoriametrics")));
    push_all(&sp);
    sp.wait_delivered(Duration::from_secs(30));
    push_all(&sp);
    sp.wait_delivered(Duration::from_secs(30));
    let reqs = rx.requests();
    let zstd = reqs
        .iter()
        .filter(|r| r.0.as_deref() == Some("zstd"))
        .count();
    let snappy: Vec<_> = reqs
        .iter()
        .filter(|r| r.0.as_deref() == Some("snappy"))
        .cloned()
        .collect();
    assert!(zstd >= 2, "zstd tried again after a refusal: {zstd}");
    assert_eq!(zstd, snappy.len(), "each refused zstd request resent once");
    assert_eq!(decoded_samples(&snappy), 2 * SERIES * ROUNDS);
}

/// Queue bytes per sample for a destination that is down, by protocol:
/// what `spillway_queue_pending_bytes` counts (record headers included).
fn queued_bytes_per_sample(protocol: &str) -> f64 {
    let down = format!("http://127.0.0.1:{}", free_port());
    let sp = SpillwayRun::start(&config(&down, Some(protocol)));
    let sent = push_all(&sp);
    let bytes = sp.metric("spillway_queue_pending_bytes", &[("destination", "d")]);
    let samples = sp.destinations()["d"]["pending_samples"].as_f64().unwrap();
    assert_eq!(samples as usize, sent.len());
    bytes / samples
}

#[test]
fn zstd_blocks_take_less_queue_space_than_snappy() {
    let zstd = queued_bytes_per_sample("victoriametrics");
    let snappy = queued_bytes_per_sample("prometheus");
    eprintln!("queue bytes per sample: zstd {zstd:.2}, snappy {snappy:.2}");
    assert!(zstd > 0.0 && snappy > 0.0);
    assert!(
        zstd < snappy,
        "zstd {zstd:.2} >= snappy {snappy:.2} bytes per sample"
    );
}
