//! The shared client's connection options end to end through the binary:
//! auth headers, tenant headers, custom headers, TLS CA and skip-verify,
//! retries on 5xx but not on 4xx.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A fake datasource recording request headers; answers 503 `fail_first` times first.
fn fake_datasource(rt: &tokio::runtime::Runtime, fail_first: usize) -> (u16, Seen) {
    let port = free_port();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let failures = Arc::new(Mutex::new(fail_first));
    rt.spawn(async move {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let s = s.clone();
            let failures = failures.clone();
            async move {
                let hs = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                s.lock().unwrap().push((uri.path().to_string(), hs));
                let mut f = failures.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return (StatusCode::SERVICE_UNAVAILABLE, "busy".to_string());
                }
                (
                    StatusCode::OK,
                    r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
                        .to_string(),
                )
            }
        });
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        axum::serve(l, app).await.unwrap();
    });
    (port, seen)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn auth_tenant_and_custom_headers_are_sent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, seen) = fake_datasource(&rt, 0);
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "tok-from-file\n").unwrap();
    let url = format!("http://127.0.0.1:{port}/select/3:4/prometheus");
    let out = tmp.path().join("out");
    spillway(&[
        "export",
        "--url",
        &url,
        "-Q",
        "up",
        "--since",
        "5m",
        "--tenant",
        "3:4",
        "--header",
        "X-Scope-OrgID: team-a",
        "--bearer-token-file",
        token_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .assert_code(0);
    spillway(&[
        "export",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "-Q",
        "up",
        "--since",
        "5m",
        "--username",
        "bob",
        "--password",
        "pw",
        "--out",
        out.to_str().unwrap(),
    ])
    .assert_code(0);
    let seen = seen.lock().unwrap();
    let (path, h) = &seen[0];
    assert_eq!(path, "/select/3:4/prometheus/api/v1/query_range");
    assert_eq!(header(h, "accountid"), Some("3"));
    assert_eq!(header(h, "projectid"), Some("4"));
    assert_eq!(header(h, "x-scope-orgid"), Some("team-a"));
    assert_eq!(header(h, "authorization"), Some("Bearer tok-from-file"));
    let (_, h) = seen.last().unwrap();
    assert_eq!(header(h, "authorization"), Some("Basic Ym9iOnB3")); // bob:pw
    assert!(header(h, "user-agent").unwrap().starts_with("spillway/"));
}

#[test]
fn retries_5xx_until_success() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, seen) = fake_datasource(&rt, 2);
    let tmp = tempfile::tempdir().unwrap();
    let run = spillway(&[
        "export",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "-Q",
        "up",
        "--since",
        "5m",
        "--retries",
        "3",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "two 503 answers, then success"
    );
    let (port, seen) = fake_datasource(&rt, 10);
    let run = spillway(&[
        "export",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "-Q",
        "up",
        "--since",
        "5m",
        "--retries",
        "1",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert_eq!(seen.lock().unwrap().len(), 2, "gives up after --retries");
    assert!(
        run.stderr().contains("503") && run.stderr().contains("busy"),
        "{}",
        run.describe()
    );
}

#[test]
fn tls_ca_file_and_skip_verify() {
    let tmp = tempfile::tempdir().unwrap();
    // A CA and a server certificate it signs (rustls refuses a CA used as the server's own cert).
    let (ca, ca_key) = (tmp.path().join("ca.pem"), tmp.path().join("ca.key"));
    let (cert, key, csr) = (
        tmp.path().join("cert.pem"),
        tmp.path().join("key.pem"),
        tmp.path().join("req.csr"),
    );
    let ext = tmp.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("openssl is needed for the TLS test: apt-get install -y openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=spillway test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let _ = (&ca_key, &csr);
    let vm = Vm::start();
    let port = free_port();
    let args = vec![
        format!("-httpListenAddr=127.0.0.1:{port}"),
        "-auth.config={dir}/auth.yml".into(),
        "-tls".into(),
        format!("-tlsCertFile={}", cert.display()),
        format!("-tlsKeyFile={}", key.display()),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("auth.yml"),
        format!(
            "users:\n  - username: u\n    password: p\n    url_prefix: \"{}\"\n",
            vm.url()
        ),
    )
    .unwrap();
    let _auth = Server::start_in("vmauth", port, dir, args);
    let url = format!("https://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !curl(&["-skf", "-o", "/dev/null", &format!("{url}/health")])
        .unwrap()
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "vmauth with TLS did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = tmp.path().join("out");
    let base = [
        "export",
        "--url",
        url.as_str(),
        "-Q",
        "up",
        "--since",
        "5m",
        "--username",
        "u",
        "--password",
        "p",
        "--retries",
        "0",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--out", out.to_str().unwrap()]);
        spillway(&a)
    };
    let run = with(&[]);
    run.assert_code(1);
    assert!(
        run.stderr().to_lowercase().contains("certificate"),
        "{}",
        run.describe()
    );
    with(&["--tls-ca-file", ca.to_str().unwrap()]).assert_code(0);
    with(&["--tls-insecure-skip-verify"]).assert_code(0);
}

/// The library client against a real VictoriaMetrics: every API it offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_apis_against_victoria_metrics() {
    use spillway::client::{Client, ClientConfig, QueryParams};
    let vm = tokio::task::spawn_blocking(Vm::start).await.unwrap();
    let client = Client::new(ClientConfig {
        url: vm.url(),
        ..Default::default()
    })
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000 - 600_000;
    let lines = format!(
        "{}\n{}\n",
        vm_line(
            &[("__name__", "m"), ("job", "a")],
            &[(now, 1.0), (now + 60_000, 2.0)]
        ),
        vm_line(&[("__name__", "m"), ("job", "b")], &[(now, 3.0)])
    );
    client.import(bytes::Bytes::from(lines)).await.unwrap();
    vm.flush();

    let series = client
        .series(&["m".to_string()], now - 60_000, now + 120_000)
        .await
        .unwrap();
    assert_eq!(series.len(), 2);
    let instant = client
        .query("sum(m)", now + 60_000, &QueryParams::default())
        .await
        .unwrap();
    assert_eq!(
        instant[0].samples[0].value, 5.0,
        "2 (job a at +60s) + 3 (job b, looked back)"
    );
    let mut stream = client
        .query_range(
            "m{job=\"a\"}",
            now,
            now + 60_000,
            60_000,
            &QueryParams::default(),
        )
        .await
        .unwrap();
    let s = stream.recv().await.unwrap().unwrap();
    assert_eq!(
        s.samples.iter().map(|p| p.value).collect::<Vec<_>>(),
        [1.0, 2.0]
    );
    assert!(stream.recv().await.is_none());

    let resp = client
        .export(
            &["m".to_string()],
            now - 60_000,
            now + 120_000,
            &Default::default(),
        )
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert_eq!(body.lines().count(), 2, "{body}");
    let tsdb = client.tsdb_status().await.unwrap();
    assert!(tsdb
        .series_count_by_metric_name
        .iter()
        .any(|n| n.name == "m"));
    // VictoriaMetrics 1.79 answers buildinfo without a version; it must still parse.
    client.build_info().await.unwrap();

    let err = client
        .query("sum(", now, &QueryParams::default())
        .await
        .unwrap_err();
    assert!(!err.is_retriable());
    assert!(matches!(err.status(), Some(400 | 422)), "{err}");
}

/// #14.4: answers read whole stop at `max_response_bytes` with an error
/// naming the URL and the limit; a range answer may be longer than the cap
/// as long as no single series is. Against a real VictoriaMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_stop_at_max_response_bytes() {
    use spillway::client::{Client, ClientConfig, ClientError, QueryParams};
    let vm = tokio::task::spawn_blocking(Vm::start).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000 - 3_600_000;
    let mut lines = String::new();
    for i in 0..500 {
        lines.push_str(&vm_line(
            &[("__name__", "wide"), ("i", &format!("{i:04}"))],
            &[(now, i as f64)],
        ));
        lines.push('\n');
    }
    let long: Vec<(i64, f64)> = (0..2000).map(|k| (now + k * 1000, k as f64)).collect();
    lines.push_str(&vm_line(&[("__name__", "long")], &long));
    lines.push('\n');
    let capped = |bytes: u64| {
        Client::new(ClientConfig {
            url: format!("{}/?authKey=k3y-in-url", vm.url()),
            max_response_bytes: bytes,
            ..Default::default()
        })
        .unwrap()
    };
    capped(1 << 20)
        .import(bytes::Bytes::from(lines))
        .await
        .unwrap();
    vm.flush();
    let small = capped(8 << 10);
    let too_large = |e: ClientError, path: &str| {
        let text = e.to_string();
        assert!(matches!(e, ClientError::TooLarge { .. }), "{text}");
        assert!(text.contains(path) && text.contains("8KiB"), "{text}");
        assert!(text.contains("max_response_bytes"), "{text}");
        assert!(!text.contains("k3y-in-url"), "{text}");
    };
    // Instant query: 500 series, ~35 KB.
    let e = small
        .query("wide", now, &QueryParams::default())
        .await
        .unwrap_err();
    too_large(e, "/api/v1/query");
    // Series API: ~17 KB.
    let e = small
        .series(&["wide".to_string()], now - 60_000, now + 60_000)
        .await
        .unwrap_err();
    too_large(e, "/api/v1/series");
    // Range: 500 small series stream through; one long series does not.
    let mut stream = small
        .query_range("wide", now, now + 60_000, 60_000, &QueryParams::default())
        .await
        .unwrap();
    let mut n = 0;
    while let Some(s) = stream.recv().await {
        s.unwrap();
        n += 1;
    }
    assert_eq!(n, 500);
    let mut stream = small
        .query_range("long", now, now + 1_999_000, 1000, &QueryParams::default())
        .await
        .unwrap();
    let e = stream.recv().await.unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::TooLarge {
                per_series: true,
                ..
            }
        ),
        "{e}"
    );
    too_large(e, "/api/v1/query_range");
    // The default cap lets all of it through.
    let all = capped(spillway::client::DEFAULT_MAX_RESPONSE_BYTES)
        .query("wide", now, &QueryParams::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 500);
}

/// A server that never stops answering (what no real server does on
/// purpose): the answer ends at the cap and an error body at 64 KiB, where
/// both used to be read to the end, i.e. forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_answers_are_cut() {
    use axum::http::StatusCode;
    use spillway::client::{Client, ClientConfig, ClientError, QueryParams};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let endless = |status: StatusCode, head: &'static str, item: &'static str| {
        let chunks = futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(head.as_bytes()))
        })
        .chain(futures_util::stream::repeat_with(move || {
            Ok(bytes::Bytes::from_static(item.as_bytes()))
        }));
        (status, axum::body::Body::from_stream(chunks))
    };
    use futures_util::StreamExt;
    let app = axum::Router::new()
        .route(
            "/ok/api/v1/query",
            axum::routing::post(move || async move {
                endless(
                    StatusCode::OK,
                    r#"{"status":"success","data":{"resultType":"vector","result":["#,
                    r#"{"metric":{"__name__":"x"},"value":[1,"1"]},"#,
                )
            }),
        )
        .route(
            "/fail/api/v1/query",
            axum::routing::post(move || async move {
                endless(StatusCode::INTERNAL_SERVER_ERROR, "boom ", "and more ")
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = |path: &str| {
        Client::new(ClientConfig {
            url: format!("{url}{path}"),
            max_response_bytes: 1 << 20,
            retry: spillway::client::RetryPolicy::never(),
            ..Default::default()
        })
        .unwrap()
    };
    let deadline = Duration::from_secs(60);
    let e = tokio::time::timeout(
        deadline,
        client("/ok").query("x", 1000, &QueryParams::default()),
    )
    .await
    .expect("an endless answer must end at the cap")
    .unwrap_err();
    assert!(matches!(e, ClientError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("1MiB"), "{e}");
    let e = tokio::time::timeout(
        deadline,
        client("/fail").query("x", 1000, &QueryParams::default()),
    )
    .await
    .expect("an endless error body must end at 64 KiB")
    .unwrap_err();
    assert_eq!(e.status(), Some(500));
    let text = e.to_string();
    assert!(text.contains("boom") && text.contains("64 KiB"), "{text}");
    assert!(text.len() < 4096, "{}", text.len());
}

/// #14.9: a key in the URL's query string (`?authKey=`) never shows: not in
/// errors, the run's status API, metrics and log, nor in a bundle.
#[test]
fn url_query_values_never_show() {
    let vm = Vm::start();
    let ts = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 120_000;
    vm.import(&format!(
        "{}\n",
        vm_line(&[("__name__", "up"), ("job", "a")], &[(ts, 1.0)])
    ));
    vm.flush();
    let key = "k3y-4-url";
    // An error naming the URL.
    let out = tempfile::tempdir().unwrap();
    let run = spillway(&[
        "export",
        "--url",
        &format!("http://127.0.0.1:1/?authKey={key}"),
        "-Q",
        "up",
        "--since",
        "5m",
        "--retries",
        "0",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_ne!(run.code(), 0);
    assert!(
        run.describe().contains("authKey=<redacted>"),
        "{}",
        run.describe()
    );
    let shown = format!("{}{}", run.stdout(), run.stderr());
    assert!(!shown.contains(key), "{}", run.describe());
    // A bundle and its summary.
    let out = tempfile::tempdir().unwrap();
    let g = spillway(&[
        "gather",
        "--url",
        &format!("{}/?authKey={key}", vm.url()),
        "--since",
        "10m",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    g.assert_code(0);
    let shown = format!("{}{}", g.stdout(), g.stderr());
    assert!(!shown.contains(key), "{}", g.describe());
    let mut files = 0;
    for e in std::fs::read_dir(out.path()).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "zip") {
            let mut zip = zip::ZipArchive::new(std::fs::File::open(&p).unwrap()).unwrap();
            for i in 0..zip.len() {
                let mut f = zip.by_index(i).unwrap();
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f, &mut text).unwrap();
                assert!(!text.contains(key), "{:?} in the bundle", f.name());
                files += 1;
            }
        }
    }
    assert!(files >= 2, "no bundle written: {}", g.describe());
    // A destination of `spillway run`.
    let sp = SpillwayRun::start(&format!(
        "destinations:\n  - name: vm\n    url: \"{}/api/v1/write?authKey={key}\"\n    flush_interval: 100ms\nstorage: {{path: \"{{dir}}/data\"}}\n",
        vm.url()
    ));
    let (code, body) = post_status(
        &format!("{}/api/v1/import", sp.url()),
        vm_line(&[("__name__", "through")], &[(ts, 1.0)]).as_bytes(),
    );
    assert_eq!(code, 204, "{body}");
    sp.wait_delivered(Duration::from_secs(20));
    let status = http_get(&format!("{}/api/v1/destinations", sp.url()));
    assert!(status.contains("authKey=<redacted>"), "{status}");
    for (what, text) in [
        ("/api/v1/destinations", status),
        ("/metrics", sp.metrics_text()),
        ("log", sp.server.log()),
    ] {
        assert!(!text.contains(key), "{what}: {text}");
    }
}

/// A machine without a CA bundle (a static binary in an empty root): the
/// client still starts and plain http:// works; only an https:// URL fails,
/// at the handshake, saying that the trust store is missing.
#[test]
fn http_works_without_a_ca_bundle() {
    let vm = Vm::start();
    let run = |url: &str| {
        let out = std::process::Command::new(spillway_bin())
            .args(["gather", "--url", url, "--since", "10m", "--discover"])
            .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
            .env("SSL_CERT_DIR", "/nonexistent")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&vm.url());
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // It asked the server: the export API was found there.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("export API") && l.ends_with("yes")),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The same server spoken to with TLS: refused for want of roots, clearly.
    let https = vm.url().replace("http://", "https://");
    let (code, stdout, stderr) = run(&https);
    assert_ne!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("builder error"), "{stderr}");
}
