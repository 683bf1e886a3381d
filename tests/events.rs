//! Event destinations end to end through the routing pipeline of `spillway
//! run` (config text → checked config → queues → transports): syslog
//! against a real rsyslog (TCP, TLS, UDP, RELP with `kill -9`),
//! Elasticsearch and Splunk HEC against fakes that answer the documented
//! shapes kept in `tests/events_data/`, a webhook with a template, file
//! rotation under a tailing reader, schedules across DST and midnight, and
//! the config errors of bad input.

mod common;

use common::*;
use spillway::model::{ExportBatch, ExportKind, Labels, Origin, Sample, Series};
use spillway::run::config::RunConfig;
use spillway::run::route::{Pipeline, PipelineConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pipeline from the `destinations:` part of a config.
fn pipeline(destinations: &str, storage: &Path) -> Arc<Pipeline> {
    let text = format!(
        "storage: {{path: {}}}\ndestinations:\n{destinations}",
        storage.display()
    );
    let loaded = RunConfig::parse(&text, "test.yml").unwrap();
    let config = PipelineConfig::check(&loaded).unwrap_or_else(|p| panic!("{p:#?}\n{text}"));
    let p = Arc::new(Pipeline::open(config).unwrap());
    p.start();
    p
}

/// `n` one-sample series `events_total{seq="i", ...}` whose labels carry a
/// line break, a pipe and non-ASCII text, at `ts0 + i` ms.
fn events(from: usize, n: usize, ts0: i64) -> Vec<Series> {
    (from..from + n)
        .map(|i| {
            Series::new(
                Labels::from_pairs([
                    ("__name__", "events_total".to_string()),
                    ("seq", i.to_string()),
                    ("note", format!("zeile 1\nzeile 2 | ü=€ {i}")),
                    ("severity", "critical".to_string()),
                ]),
                vec![Sample::new(ts0 + i as i64, i as f64 + 0.5)],
            )
        })
        .collect()
}

fn alert_batch(series: Vec<Series>) -> ExportBatch {
    let mut b = ExportBatch::new(
        Origin::rule(ExportKind::Alert, "security", "BruteForce"),
        series,
    );
    let note = Arc::new(BTreeMap::from([(
        "summary".to_string(),
        "too many logins: a=b \\ c".to_string(),
    )]));
    b.annotations = vec![Some(note); b.series.len()];
    b
}

async fn route(p: &Pipeline, batch: ExportBatch) {
    p.route_results(batch).await.unwrap();
}

fn status(p: &Pipeline, name: &str) -> spillway::sink::destination::DestinationStatus {
    p.statuses().into_iter().find(|s| s.name == name).unwrap()
}

/// Waits until `name` has sent (or dead-lettered) `n` events.
async fn wait_done(p: &Pipeline, name: &str, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(p, name);
        if s.samples_sent + s.dead_letter >= n && s.pending_samples == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {} sent + {} dead-lettered of {n} after {timeout:?}; last error {:?}",
            s.samples_sent,
            s.dead_letter,
            s.last_error
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn seq_of(v: &serde_json::Value) -> usize {
    v["labels"]["seq"].as_str().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------
// rsyslog

struct Rsyslog {
    server: Server,
    out: PathBuf,
}

fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("rsyslogd is not installed: run scripts/install-deps.sh (apt-get install -y rsyslog rsyslog-gnutls rsyslog-relp)");
}

/// rsyslogd in the foreground on a free loopback port, writing every
/// message's MSG (`%msg%`) as one line to `out.log`, processed before the
/// input answers (a direct queue), so what RELP acknowledged is written.
fn start_rsyslog(input: &str, extra_global: &str, port: u16, dir: tempfile::TempDir) -> Rsyslog {
    let d = dir.path().to_path_buf();
    let out = d.join("out.log");
    let conf = format!(
        r#"global(workDirectory="{d}" {extra_global})
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="out" queue.type="Direct") {{
  action(type="omfile" file="{out}" template="msgonly")
}}
{input}
"#,
        d = d.display(),
        out = out.display(),
        input = input.replace("{port}", &port.to_string()),
    );
    std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
    let args = vec![
        "-n".to_string(),
        "-f".to_string(),
        "{dir}/rsyslog.conf".to_string(),
        "-i".to_string(),
        "{dir}/rsyslog.pid".to_string(),
    ];
    let server = Server::start_path(rsyslogd(), port, dir, args);
    let r = Rsyslog { server, out };
    r.wait_listening();
    r
}

impl Rsyslog {
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.server.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {}; log:\n{}",
                self.server.port,
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until `n` lines arrived.
    async fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.lines();
            if l.len() >= n {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslog wrote {} of {n} lines; log:\n{}",
                l.len(),
                self.server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn json_seqs(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l.trim_start())
                .unwrap_or_else(|e| panic!("not one whole JSON event ({e}): {l:?}"));
            seq_of(&v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tcp_json_every_event_once_with_framing_intact() {
    let port = free_port();
    let rs = start_rsyslog(
        r#"module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="out")"#,
        "",
        port,
        tempfile::tempdir().unwrap(),
    );
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!("  - {{name: siem, type: syslog, url: 'tcp://127.0.0.1:{port}', facility: authpriv, max_batch_samples: 500}}\n"),
        storage.path(),
    );
    let n = 2000;
    for chunk in 0..4 {
        route(&p, alert_batch(events(chunk * 500, 500, 1_714_564_800_000))).await;
    }
    wait_done(&p, "siem", n as u64, Duration::from_secs(30)).await;
    let lines = rs.wait_lines(n, Duration::from_secs(30)).await;
    let seqs = json_seqs(&lines);
    assert_eq!(seqs.len(), n, "every event once");
    assert_eq!(seqs.iter().copied().collect::<BTreeSet<_>>().len(), n);
    let v: serde_json::Value = serde_json::from_str(lines[0].trim_start()).unwrap();
    assert!(v["labels"]["note"]
        .as_str()
        .unwrap()
        .starts_with("zeile 1\nzeile 2 | ü=€"));
    assert_eq!(v["annotations"]["summary"], "too many logins: a=b \\ c");
    assert_eq!(v["type"], "alert");
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_udp_cef_is_escaped_as_the_spec_says() {
    let port = free_port();
    // Listen on TCP as well, only so that readiness can be seen.
    let rs = start_rsyslog(
        r#"module(load="imudp")
module(load="imtcp")
input(type="imudp" port="{port}" address="127.0.0.1" ruleset="out")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="out")"#,
        "",
        port,
        tempfile::tempdir().unwrap(),
    );
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!("  - {{name: siem, type: syslog, url: 'udp://127.0.0.1:{port}', format: cef}}\n"),
        storage.path(),
    );
    route(&p, alert_batch(events(7, 1, 1_714_564_800_000))).await;
    wait_done(&p, "siem", 1, Duration::from_secs(10)).await;
    let lines = rs.wait_lines(1, Duration::from_secs(10)).await;
    let cef = lines[0].trim_start();
    assert_eq!(
        cef,
        format!(
            "CEF:0|spillway|spillway|{}|BruteForce|events_total|8|rt=1714564800007 cat=alert cs1Label=group cs1=security cs2Label=rule cs2=BruteForce cfp1Label=value cfp1=7.5 outcome=breach msg=too many logins: a\\=b \\\\ c note=zeile 1\\nzeile 2 | ü\\=€ 7 seq=7 severity=critical annotation_summary=too many logins: a\\=b \\\\ c",
            env!("CARGO_PKG_VERSION")
        )
    );
    p.shutdown(Duration::from_secs(5)).await;
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: run scripts/install-deps.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tls_verifies_the_receiver_with_the_ca_file() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let d = dir.path().display().to_string();
    let rs = start_rsyslog(
        r#"module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="out")"#,
        &format!(
            r#"DefaultNetstreamDriverCAFile="{d}/ca.pem" DefaultNetstreamDriverCertFile="{d}/cert.pem" DefaultNetstreamDriverKeyFile="{d}/key.pem""#
        ),
        port,
        dir,
    );
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!("  - {{name: siem, type: syslog, url: 'tls://127.0.0.1:{port}', tls: {{ca_file: '{d}/ca.pem'}}}}\n"),
        storage.path(),
    );
    route(&p, alert_batch(events(0, 300, 1_714_564_800_000))).await;
    wait_done(&p, "siem", 300, Duration::from_secs(30)).await;
    let lines = rs.wait_lines(300, Duration::from_secs(30)).await;
    assert_eq!(
        json_seqs(&lines).into_iter().collect::<BTreeSet<_>>().len(),
        300
    );
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_relp_loses_nothing_when_rsyslog_is_killed_mid_stream() {
    let port = free_port();
    let mut rs = start_rsyslog(
        r#"module(load="imrelp")
input(type="imrelp" port="{port}" address="127.0.0.1" ruleset="out")"#,
        "",
        port,
        tempfile::tempdir().unwrap(),
    );
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!("  - {{name: siem, type: syslog, url: 'relp://127.0.0.1:{port}', max_batch_samples: 200, flush_interval: 10ms}}\n"),
        storage.path(),
    );
    let n = 6000;
    let sender = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            for chunk in 0..30 {
                route(&p, alert_batch(events(chunk * 200, 200, 1_714_564_800_000))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Kill it once some, but not all, arrived.
    rs.wait_lines(500, Duration::from_secs(30)).await;
    rs.server.stop(); // SIGKILL
    tokio::time::sleep(Duration::from_millis(300)).await;
    rs.server.restart();
    rs.wait_listening();
    sender.await.unwrap();
    wait_done(&p, "siem", n as u64, Duration::from_secs(60)).await;
    let lines = rs.wait_lines(n, Duration::from_secs(30)).await;
    let got: BTreeSet<usize> = json_seqs(&lines).into_iter().collect();
    let missing: Vec<usize> = (0..n).filter(|i| !got.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "lost over RELP: {} events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    p.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------
// HTTP fakes

/// `app` served on a loopback port until the test ends.
struct Fake {
    url: String,
}

async fn serve(app: axum::Router) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { url }
}

fn data(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/events_data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[derive(Default)]
struct EsState {
    /// Documents stored, by seq.
    stored: Vec<serde_json::Value>,
    /// Seqs answered 429 once already.
    rejected_once: BTreeSet<usize>,
    requests: usize,
    gzip_requests: usize,
    indexes: BTreeSet<String>,
}

/// `_bulk` as Elasticsearch documents it: documents whose `seq` is a
/// multiple of 10 are rejected once with 429 (then stored), those whose
/// `seq` ends in 3 are refused with 400; the first request is answered
/// 200 with `"errors": true` and a 429 for every item.
async fn es_fake() -> (Fake, Arc<Mutex<EsState>>) {
    let shapes = data("es_bulk_answer.json");
    let ok = shapes["items"][0]["create"].clone();
    let busy = shapes["items"][1]["create"].clone();
    let bad = shapes["items"][2]["create"].clone();
    let state = Arc::new(Mutex::new(EsState::default()));
    let st = Arc::clone(&state);
    let app = axum::Router::new().route(
        "/_bulk",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let st = Arc::clone(&st);
                let (ok, busy, bad) = (ok.clone(), busy.clone(), bad.clone());
                async move {
                    let gz = headers.get("content-encoding").is_some_and(|v| v == "gzip");
                    let body = if gz {
                        use std::io::Read;
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut out)
                            .unwrap();
                        out
                    } else {
                        body.to_vec()
                    };
                    assert_eq!(headers["content-type"], "application/x-ndjson");
                    let mut s = st.lock().unwrap();
                    s.requests += 1;
                    s.gzip_requests += gz as usize;
                    let first = s.requests == 1;
                    let text = String::from_utf8(body).unwrap();
                    let lines: Vec<&str> = text.lines().collect();
                    let mut items = Vec::new();
                    let mut errors = false;
                    for pair in lines.chunks(2) {
                        let action: serde_json::Value = serde_json::from_str(pair[0]).unwrap();
                        let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
                        let index = meta["_index"].as_str().unwrap().to_string();
                        let doc: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
                        let seq = seq_of(&doc);
                        let mut item =
                            if first || (seq.is_multiple_of(10) && s.rejected_once.insert(seq)) {
                                busy.clone()
                            } else if seq % 10 == 3 {
                                bad.clone()
                            } else {
                                s.stored.push(doc);
                                s.indexes.insert(index.clone());
                                ok.clone()
                            };
                        errors |= item["status"] != 201;
                        item["_index"] = serde_json::Value::String(index);
                        items.push(serde_json::json!({ op: item }));
                    }
                    axum::Json(serde_json::json!({"took": 1, "errors": errors, "items": items}))
                }
            },
        ),
    );
    (serve(app).await, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_reads_every_bulk_item() {
    let (es, state) = es_fake().await;
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - name: elastic\n    type: elasticsearch\n    url: {}\n    index: 'spillway-%Y.%m.%d'\n    op_type: create\n    gzip: true\n    api_key: c2VjcmV0\n    fields: {{time: '@timestamp'}}\n    max_batch_samples: 100\n",
            es.url
        ),
        storage.path(),
    );
    let n = 400;
    route(&p, alert_batch(events(0, n, 1_714_564_800_000))).await;
    wait_done(&p, "elastic", n as u64, Duration::from_secs(60)).await;
    let s = status(&p, "elastic");
    let refused = (0..n).filter(|i| i % 10 == 3).count();
    assert_eq!(s.dead_letter, refused as u64, "{s:?}");
    assert_eq!(
        s.samples_sent,
        (n - refused) as u64,
        "a 200 with errors:true is not delivered"
    );
    {
        let st = state.lock().unwrap();
        let stored: BTreeSet<usize> = st.stored.iter().map(seq_of).collect();
        assert_eq!(stored.len(), n - refused);
        assert!(stored.contains(&10), "429 items are sent again alone");
        assert_eq!(st.stored.len(), n - refused, "no document stored twice");
        assert_eq!(st.gzip_requests, st.requests);
        assert_eq!(
            st.indexes,
            BTreeSet::from(["spillway-2024.05.01".to_string()])
        );
        assert!(st.stored[0].get("@timestamp").is_some());
    }
    let dead = storage.path().join("dead-letter/elastic.jsonl");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), refused);
    assert_eq!(lines[0]["status"], 400);
    assert!(lines[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("document_parsing_exception: [1:42] failed to parse field [value]"));
    assert_eq!(seq_of(&lines[0]["event"]) % 10, 3);
    p.collect_metrics();
    p.shutdown(Duration::from_secs(5)).await;
}

#[derive(Default)]
struct HecState {
    /// Events indexed (acknowledged or not).
    events: Vec<serde_json::Value>,
    next_ack: u64,
    /// ackIds that will never be acknowledged (the indexer lost them).
    lost: BTreeSet<u64>,
    acked_polls: usize,
    requests: usize,
    bad_token: usize,
}

/// HEC with indexer acknowledgement: the first request is 503 (busy), the
/// second one's ackId is never acknowledged (so it must be sent again),
/// a wrong token is 403; answers are the documented ones.
async fn hec_fake(token: &'static str) -> (Fake, Arc<Mutex<HecState>>) {
    let shapes = data("splunk_hec_answers.json");
    let state = Arc::new(Mutex::new(HecState::default()));
    let answer = |name: &str| {
        let a = &shapes[name];
        (
            axum::http::StatusCode::from_u16(a["status"].as_u64().unwrap() as u16).unwrap(),
            a["body"].clone(),
        )
    };
    let (busy, invalid, success) = (
        answer("busy"),
        answer("invalid_token"),
        answer("success_ack"),
    );
    let st = Arc::clone(&state);
    let st2 = Arc::clone(&state);
    let app = axum::Router::new()
        .route(
            "/services/collector/event",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let st = Arc::clone(&st);
                let (busy, invalid, mut success) = (busy.clone(), invalid.clone(), success.clone());
                async move {
                    let mut s = st.lock().unwrap();
                    s.requests += 1;
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(&format!("Splunk {token}"))
                    {
                        s.bad_token += 1;
                        return (invalid.0, axum::Json(invalid.1));
                    }
                    assert!(headers.contains_key("x-splunk-request-channel"));
                    if s.requests == 1 {
                        return (busy.0, axum::Json(busy.1));
                    }
                    let de =
                        serde_json::Deserializer::from_str(&body).into_iter::<serde_json::Value>();
                    for v in de {
                        s.events.push(v.unwrap());
                    }
                    let id = s.next_ack;
                    s.next_ack += 1;
                    if id == 0 {
                        s.lost.insert(id);
                    }
                    success.1["ackId"] = id.into();
                    (success.0, axum::Json(success.1))
                }
            }),
        )
        .route(
            "/services/collector/ack",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                let st = Arc::clone(&st2);
                async move {
                    let mut s = st.lock().unwrap();
                    let mut acks = serde_json::Map::new();
                    for id in body["acks"].as_array().unwrap() {
                        let id = id.as_u64().unwrap();
                        let done = id < s.next_ack && !s.lost.contains(&id);
                        s.acked_polls += done as usize;
                        acks.insert(id.to_string(), done.into());
                    }
                    axum::Json(serde_json::json!({ "acks": acks }))
                }
            }),
        );
    (serve(app).await, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_leaves_the_queue_only_when_acknowledged() {
    let (hec, state) = hec_fake("tok-123").await;
    let storage = tempfile::tempdir().unwrap();
    std::env::set_var("SPILLWAY_TEST_HEC_TOKEN", "tok-123");
    let p = pipeline(
        &format!(
            "  - name: splunk\n    type: splunk_hec\n    url: {}/services/collector/event\n    token_env: SPILLWAY_TEST_HEC_TOKEN\n    index: security\n    sourcetype: 'spillway:{{{{ .type }}}}'\n    host: '{{{{ .labels.seq }}}}'\n    ack: true\n    ack_timeout: 1s\n    concurrency: 1\n",
            hec.url
        ),
        storage.path(),
    );
    route(&p, alert_batch(events(0, 50, 1_714_564_800_000))).await;
    wait_done(&p, "splunk", 50, Duration::from_secs(60)).await;
    let s = status(&p, "splunk");
    assert_eq!(s.samples_sent, 50);
    assert_eq!(s.dead_letter, 0);
    let st = std::mem::take(&mut *state.lock().unwrap());
    // The un-acknowledged batch was sent again: each event twice at least once.
    let seqs: BTreeSet<String> = st
        .events
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seqs.len(), 50);
    assert!(
        st.events.len() >= 100,
        "the batch whose ack never came was sent again"
    );
    assert!(st.acked_polls >= 1);
    let e = &st.events[0];
    assert_eq!(e["index"], "security");
    assert_eq!(e["sourcetype"], "spillway:alert");
    assert_eq!(e["event"]["rule"], "BruteForce");
    p.shutdown(Duration::from_secs(5)).await;
}

/// HEC as Splunk documents a batch with a bad event: it indexes the events
/// before it and answers 400 `{"text":"Invalid data format","code":6,
/// "invalid-event-number":N}` (N counted from 0 in that request). Events
/// whose `seq` label is in `bad` are the bad ones.
async fn hec_picky_fake(bad: &'static [usize]) -> (Fake, Arc<Mutex<Vec<usize>>>) {
    let shape = data("splunk_hec_answers.json")["invalid_data"].clone();
    let indexed = Arc::new(Mutex::new(Vec::new()));
    let st = Arc::clone(&indexed);
    let app = axum::Router::new().route(
        "/services/collector/event",
        axum::routing::post(move |body: String| {
            let (st, mut shape) = (Arc::clone(&st), shape.clone());
            async move {
                let mut indexed = st.lock().unwrap();
                let de = serde_json::Deserializer::from_str(&body).into_iter::<serde_json::Value>();
                for (n, v) in de.enumerate() {
                    let seq: usize = v.unwrap()["host"].as_str().unwrap().parse().unwrap();
                    if bad.contains(&seq) {
                        shape["body"]["invalid-event-number"] = n.into();
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::Json(shape["body"].clone()),
                        );
                    }
                    indexed.push(seq);
                }
                let ok = serde_json::json!({"text": "Success", "code": 0});
                (axum::http::StatusCode::OK, axum::Json(ok))
            }
        }),
    );
    (serve(app).await, indexed)
}

/// An answer naming one invalid event keeps the events before it, sends
/// that one event to the dead-letter file and the rest again: every good
/// event indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_invalid_event_number_dead_letters_only_that_event() {
    let (hec, indexed) = hec_picky_fake(&[0, 7, 8, 19]).await;
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - {{name: splunk, type: splunk_hec, url: '{}', token: t, host: '{{{{ .labels.seq }}}}', concurrency: 1}}\n",
            hec.url
        ),
        storage.path(),
    );
    route(&p, alert_batch(events(0, 20, 1_000))).await;
    wait_done(&p, "splunk", 20, Duration::from_secs(30)).await;
    let s = status(&p, "splunk");
    assert_eq!((s.samples_sent, s.dead_letter), (16, 4), "{s:?}");
    let mut got = indexed.lock().unwrap().clone();
    got.sort();
    let want: Vec<usize> = (0..20).filter(|i| ![0, 7, 8, 19].contains(i)).collect();
    assert_eq!(got, want, "every good event indexed exactly once");
    let dead = std::fs::read_to_string(storage.path().join("dead-letter/splunk.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<&str> = dead
        .iter()
        .map(|d| d["event"]["host"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, ["0", "7", "8", "19"]);
    assert_eq!(dead[0]["status"], 400);
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Invalid data format"),
        "{}",
        dead[0]
    );
    p.shutdown(Duration::from_secs(5)).await;
}

/// Past `dead_letter_max_bytes` refused events are counted as dropped,
/// never written: the files stay within the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_files_stay_within_their_cap() {
    let (hec, state) = hec_fake("right").await;
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - {{name: splunk, type: splunk_hec, url: '{}', token: wrong, dead_letter_max_bytes: 4KiB}}\n",
            hec.url
        ),
        storage.path(),
    );
    route(&p, alert_batch(events(0, 100, 1_000))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status(&p, "splunk");
        let full = s
            .samples_dropped
            .get("dead_letter_full")
            .copied()
            .unwrap_or(0);
        if s.dead_letter + full >= 100 && s.pending_samples == 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(state.lock().unwrap().bad_token >= 1);
    assert!(
        s.dead_letter > 0 && s.samples_dropped["dead_letter_full"] > 0,
        "{s:?}"
    );
    let dir = storage.path().join("dead-letter");
    let mut total = 0;
    let mut lines = 0;
    for f in ["splunk.jsonl", "splunk.1.jsonl"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        total += text.len();
        lines += text.lines().count() as u64;
    }
    assert!(total <= 4096, "{total} bytes of dead letters");
    assert_eq!(lines, s.dead_letter);
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_invalid_token_goes_to_the_dead_letter_file() {
    let (hec, state) = hec_fake("right").await;
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - {{name: splunk, type: splunk_hec, url: '{}', token: wrong, format: metric}}\n",
            hec.url
        ),
        storage.path(),
    );
    route(
        &p,
        ExportBatch::new(
            Origin::rule(ExportKind::Recording, "g", "r"),
            events(0, 5, 1_000),
        ),
    )
    .await;
    wait_done(&p, "splunk", 5, Duration::from_secs(30)).await;
    assert_eq!(status(&p, "splunk").dead_letter, 5);
    assert_eq!(state.lock().unwrap().bad_token, 1);
    let dead = std::fs::read_to_string(storage.path().join("dead-letter/splunk.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(first["status"], 403);
    assert!(first["reason"].as_str().unwrap().contains("Invalid token"));
    assert!(!dead.contains("wrong"), "the token never reaches the file");
    assert_eq!(first["event"]["fields"]["metric_name:events_total"], 0.5);
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_renders_a_template_per_request() {
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let g = Arc::clone(&got);
    let hook = serve(axum::Router::new().route(
        "/api/v1/hooks/soc",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let g = Arc::clone(&g);
            async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                g.lock().unwrap().push((auth, body));
                "ok"
            }
        }),
    ))
    .await;
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - name: soar\n    type: webhook\n    url: {}/api/v1/hooks/soc\n    bearer_token: s3cret\n    one_event_per_request: true\n    body_template: '{{\"text\": \"{{{{ .rule }}}} on {{{{ $labels.seq }}}}: {{{{ $value | humanize }}}} ({{{{ .annotations.summary | jsonEscape }}}})\"}}'\n",
            hook.url
        ),
        storage.path(),
    );
    let mut b = alert_batch(events(0, 2, 0));
    b.series[1].samples[0].value = 123456.0;
    route(&p, b).await;
    wait_done(&p, "soar", 2, Duration::from_secs(20)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "Bearer s3cret");
    let bodies: BTreeSet<&str> = got.iter().map(|g| g.1.as_str()).collect();
    assert!(
        bodies.contains(r#"{"text": "BruteForce on 0: 500m ("too many logins: a=b \\ c")"}"#),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(r#"{"text": "BruteForce on 1: 123.5k ("too many logins: a=b \\ c")"}"#),
        "{bodies:?}"
    );
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_array_and_4xx_dead_letter() {
    let calls: Arc<Mutex<usize>> = Arc::default();
    let c = Arc::clone(&calls);
    let hook = serve(axum::Router::new().fallback(move |body: String| {
        let c = Arc::clone(&c);
        async move {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v.is_array());
            let mut n = c.lock().unwrap();
            *n += 1;
            if *n == 1 {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "later")
            } else {
                (axum::http::StatusCode::UNPROCESSABLE_ENTITY, "no thanks")
            }
        }
    }))
    .await;
    let storage = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!("  - {{name: hook, type: webhook, url: '{}'}}\n", hook.url),
        storage.path(),
    );
    route(&p, alert_batch(events(0, 3, 0))).await;
    wait_done(&p, "hook", 3, Duration::from_secs(20)).await;
    let s = status(&p, "hook");
    assert_eq!(
        (s.samples_sent, s.dead_letter),
        (0, 3),
        "503 retried, 422 refused"
    );
    assert!(s.last_error.unwrap().contains("no thanks"));
    p.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------
// file

/// Reads `<dir>` as a log shipper does (Filebeat's harvesters): follows
/// the live `events.jsonl`, and when it was renamed away, finishes it, then
/// reads every rotated file it has not read yet (oldest first), then opens
/// the new live file. Every line it reads must be a whole JSON event and no
/// half line may be left at a rotation; returns the seqs seen, in order.
fn tail(
    dir: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<usize>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    fn take_lines(partial: &mut Vec<u8>, seen: &mut Vec<usize>) {
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!("half a line? {e}: {:?}", String::from_utf8_lossy(&line))
            });
            seen.push(seq_of(&v));
        }
    }
    /// Reads the rotated files not read yet, oldest first (but `open`).
    fn catch_up(dir: &Path, done: &mut BTreeSet<u64>, open: Option<u64>, seen: &mut Vec<usize>) {
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("events-")
            })
            .collect();
        rotated.sort();
        for r in rotated {
            let Ok(mut f) = std::fs::File::open(&r) else {
                continue;
            };
            let ino = f.metadata().unwrap().ino();
            if Some(ino) != open && done.insert(ino) {
                let mut partial = Vec::new();
                f.read_to_end(&mut partial).unwrap();
                take_lines(&mut partial, seen);
                assert!(
                    partial.is_empty(),
                    "a rotated file ends in a half line: {}",
                    r.display()
                );
            }
        }
    }
    std::thread::spawn(move || {
        let path = dir.join("events.jsonl");
        let mut seen = Vec::new();
        let mut done: BTreeSet<u64> = BTreeSet::new();
        let mut file: Option<(std::fs::File, u64)> = None;
        let mut partial = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "tailer ran too long");
            let finishing = stop.load(std::sync::atomic::Ordering::SeqCst);
            if file.is_none() {
                if let Ok(f) = std::fs::File::open(&path) {
                    let ino = f.metadata().unwrap().ino();
                    // Files rotated while we were away come first.
                    catch_up(&dir, &mut done, Some(ino), &mut seen);
                    file = Some((f, ino));
                }
            }
            let mut progressed = false;
            if let Some((f, ino)) = &mut file {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).unwrap();
                progressed = !buf.is_empty();
                partial.extend_from_slice(&buf);
                take_lines(&mut partial, &mut seen);
                let rotated = std::fs::metadata(&path)
                    .map(|m| m.ino() != *ino)
                    .unwrap_or(true);
                if rotated && !progressed {
                    assert!(
                        partial.is_empty(),
                        "a half line at rotation: {:?}",
                        String::from_utf8_lossy(&partial)
                    );
                    done.insert(*ino);
                    file = None;
                    continue;
                }
            }
            if finishing && !progressed {
                return seen;
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rotates_under_load_and_a_tailer_sees_whole_lines() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - {{name: events, type: file, directory: '{}', max_bytes: 64KiB, keep: 1000, max_batch_samples: 100, flush_interval: 1ms}}\n",
            out.path().display()
        ),
        storage.path(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailer = tail(out.path().to_path_buf(), Arc::clone(&stop));
    let n = 20_000;
    for chunk in 0..100 {
        route(&p, alert_batch(events(chunk * 200, 200, 0))).await;
    }
    wait_done(&p, "events", n as u64, Duration::from_secs(60)).await;
    p.shutdown(Duration::from_secs(5)).await;
    // Let the tailer read the end, then stop it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tailer.join().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 20, "rotated by size: {} files", files.len());
    let mut on_disk = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.ends_with('\n'));
        assert!(
            std::fs::metadata(f).unwrap().len() <= 64 * 1024,
            "{} too big",
            f.display()
        );
        on_disk.extend(
            text.lines()
                .map(|l| seq_of(&serde_json::from_str(l).unwrap())),
        );
    }
    let want: BTreeSet<usize> = (0..n).collect();
    assert!(
        on_disk.iter().copied().collect::<BTreeSet<_>>() == want,
        "lost on disk"
    );
    assert_eq!(on_disk.len(), n, "nothing written twice");
    let tailed: BTreeSet<usize> = seen.iter().copied().collect();
    let missed: Vec<&usize> = want.difference(&tailed).take(10).collect();
    assert!(
        missed.is_empty(),
        "the tailer missed {} events, e.g. {missed:?}",
        want.len() - tailed.len()
    );
    assert_eq!(seen.len(), n, "the tailer read no event twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_keeps_n_rotated_csv_files() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - {{name: trends, type: file, format: csv, file_name: trends, directory: '{}', max_bytes: 2KiB, keep: 3, max_batch_samples: 5, flush_interval: 1ms, fields: {{annotations: '', group: grp}}}}\n",
            out.path().display()
        ),
        storage.path(),
    );
    route(&p, alert_batch(events(0, 100, 0))).await;
    wait_done(&p, "trends", 100, Duration::from_secs(30)).await;
    p.shutdown(Duration::from_secs(5)).await;
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "live + 3 kept: {names:?}");
    let live = std::fs::read_to_string(out.path().join("trends.csv")).unwrap();
    assert!(
        live.starts_with("time,metric,value,labels,grp,rule,type,resolved\n"),
        "{live}"
    );
}

// ---------------------------------------------------------------------------
// schedules

fn ts(s: &str) -> i64 {
    spillway::model::time::parse_timestamp_ms(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_routes_by_sample_time_across_dst_and_midnight() {
    let storage = tempfile::tempdir().unwrap();
    let day = tempfile::tempdir().unwrap();
    let night = tempfile::tempdir().unwrap();
    let dropped = tempfile::tempdir().unwrap();
    let p = pipeline(
        &format!(
            "  - name: team\n    type: file\n    directory: '{}'\n    file_name: events\n    flush_interval: 1ms\n    schedule: {{days: [mon-fri], hours: '09:00-18:00', timezone: Europe/Berlin}}\n    outside_schedule: oncall\n  - name: oncall\n    type: file\n    directory: '{}'\n    file_name: events\n    flush_interval: 1ms\n    relabel_configs: [{{action: drop, source_labels: [__name__], regex: '.+'}}]\n  - name: nightly\n    type: file\n    directory: '{}'\n    file_name: events\n    flush_interval: 1ms\n    schedule: {{days: [sat], hours: '22:00-02:00', timezone: Europe/Berlin}}\n",
            day.path().display(),
            night.path().display(),
            dropped.path().display()
        ),
        storage.path(),
    );
    // The sample timestamps are the clock.
    let when = [
        ("2024-03-29T08:30:00Z", true),  // Fri 09:30 CET
        ("2024-03-29T17:30:00Z", false), // Fri 18:30 CET
        ("2024-03-31T21:30:00Z", false), // Sun 23:30 CEST
        ("2024-04-01T06:30:00Z", false), // Mon 08:30 CEST: before 9 (08:30Z would be 10:30)
        ("2024-04-01T07:30:00Z", true),  // Mon 09:30 CEST
        ("2024-10-26T21:30:00Z", false), // Sat 23:30 CEST
        ("2024-10-26T23:30:00Z", false), // Sun 01:30 CEST (still Saturday night's window)
        ("2024-10-28T07:30:00Z", false), // Mon 08:30 CET
        ("2024-10-28T08:30:00Z", true),  // Mon 09:30 CET
    ];
    let series: Vec<Series> = when
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            Series::new(
                Labels::from_pairs([("__name__", "x".to_string()), ("seq", i.to_string())]),
                vec![Sample::new(ts(t), 1.0)],
            )
        })
        .collect();
    route(&p, ExportBatch::received(series)).await;
    let inside = when.iter().filter(|w| w.1).count() as u64;
    let outside = when.len() as u64 - inside;
    wait_done(&p, "team", inside, Duration::from_secs(20)).await;
    wait_done(&p, "oncall", outside, Duration::from_secs(20)).await;
    wait_done(&p, "nightly", 2, Duration::from_secs(20)).await;
    let read = |d: &Path| -> BTreeSet<usize> {
        std::fs::read_to_string(d.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| seq_of(&serde_json::from_str(l).unwrap()))
            .collect()
    };
    let want_day: BTreeSet<usize> = when
        .iter()
        .enumerate()
        .filter(|w| w.1 .1)
        .map(|w| w.0)
        .collect();
    let want_night: BTreeSet<usize> = when
        .iter()
        .enumerate()
        .filter(|w| !w.1 .1)
        .map(|w| w.0)
        .collect();
    assert_eq!(read(day.path()), want_day);
    assert_eq!(
        read(night.path()),
        want_night,
        "the fallback takes what the team does not, past its own relabeling"
    );
    assert_eq!(
        read(dropped.path()),
        BTreeSet::from([5, 6]),
        "Saturday 22:00 to Sunday 02:00"
    );
    let n = status(&p, "nightly");
    assert_eq!(n.samples_dropped["schedule"], when.len() as u64 - 2);
    p.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------
// bad input

fn dry_run(config: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spillway.yml");
    std::fs::write(&path, config).unwrap();
    let run = spillway(&["run", "--dry-run", "-c", path.to_str().unwrap()]);
    drop(dir);
    run
}

#[test]
fn bad_input_is_named_with_file_and_line() {
    let base = "datasource: {url: 'http://127.0.0.1:1'}\ndestinations:\n";
    let cases: &[(&str, &str)] = &[
        (
            "  - name: a\n    type: kafka\n    url: http://x\n",
            r#":4: destinations[0].type: unknown destination type "kafka": expected remote_write, vm_import, syslog, elasticsearch, splunk_hec, webhook or file"#,
        ),
        (
            "  - name: a\n    type: syslog\n    url: ftp://siem:514\n",
            r#":5: destinations[0].url: scheme "ftp" is not a syslog transport; use tcp://, tls://, udp:// or relp://"#,
        ),
        (
            "  - name: a\n    type: webhook\n    url: http://x\n    body_template: '{{ .rule'\n",
            ":6: destinations[0].body_template: template \"{{ .rule\" does not parse: line 1",
        ),
        (
            "  - name: a\n    type: file\n    directory: /tmp/x\n    schedule: {timezone: Mars/Olympus}\n",
            r#":6: destinations[0].schedule.timezone: "Mars/Olympus" is not a time zone of the IANA database"#,
        ),
        (
            "  - name: a\n    type: file\n    directory: /tmp/x\n    schedule: {hours: '09:00-25:00'}\n",
            r#":6: destinations[0].schedule.hours: "25:00" is not a time of day"#,
        ),
        (
            "  - name: a\n    type: file\n    directory: /tmp/x\n    schedule: {hours: '09:00-17:00'}\n    outside_schedule: a\n",
            r#":7: destinations[0].outside_schedule: "a" is this destination itself"#,
        ),
        (
            "  - name: a\n    type: file\n    directory: /tmp/x\n    schedule: {hours: '09:00-17:00'}\n    outside_schedule: nope\n",
            r#":7: destinations[0].outside_schedule: no destination is named "nope"; name one of a or `drop`"#,
        ),
        (
            "  - name: a\n    type: syslog\n    url: tcp://siem:514\n    index: x\n",
            ":6: destinations[0].index: not a field of type syslog; it applies to elasticsearch, splunk_hec",
        ),
        (
            "  - name: a\n    type: splunk_hec\n    url: http://x\n",
            ":3: destinations[0].token: missing; give the HEC token as token, token_file or token_env",
        ),
        (
            "  - name: a\n    type: syslog\n    url: tcp://siem:514\n    relp_window: 64\n",
            ":6: destinations[0].relp_window: needs a relp:// URL",
        ),
        (
            "  - name: a\n    type: syslog\n    url: relp://siem:2514\n    relp_window: 0\n",
            ":6: destinations[0].relp_window: 0 is not between 1 and 16384",
        ),
        (
            "  - name: a\n    type: elasticsearch\n    url: http://x\n    index: Bad-%Y\n",
            ":6: destinations[0].index: \"Bad-%Y\" contains 'B'",
        ),
    ];
    for (dest, want) in cases {
        let run = dry_run(&format!("{base}{dest}"));
        assert_eq!(run.code(), 2, "{}", run.describe());
        let err = run.stderr();
        assert!(
            err.contains(&format!("spillway.yml{want}")),
            "want {want:?} in:\n{err}"
        );
    }
    let ok = dry_run(&format!(
        "{base}  - {{name: siem, type: syslog, url: 'relp://127.0.0.1:2514', format: cef, relp_window: 1024}}\n  - {{name: f, type: file, directory: /tmp/x, schedule: {{days: [mon-fri], hours: '09:00-18:00', timezone: Europe/Berlin}}, outside_schedule: siem}}\n"
    ));
    assert_eq!(ok.code(), 0, "{}", ok.describe());
}
