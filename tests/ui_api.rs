//! `spillway ui`'s REST API: every route against the OpenAPI document, bad
//! inputs answered 4xx with a message (405 and 404 included, all JSON), the
//! bounds (uploads, queued exports, running imports, staging directories,
//! orphaned uploads), and the gather → download → upload → import flow
//! against real VictoriaMetrics servers.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{vm_line, Proxy, ProxyRules, Vm};
use serde_json::{json, Value};
use sha2::Digest;
use spillway::server::{BasicAuth, Policy, ServerKind, CSRF_HEADER};
use spillway::ui::jobs::JobLimits;
use spillway::ui::{api, router, AppState, UploadLimits};
use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;
use tower::ServiceExt;

fn state(dir: &std::path::Path) -> AppState {
    AppState::new(dir, Duration::from_secs(3600)).unwrap()
}

async fn call(s: &AppState, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = router(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 30)
        .await
        .unwrap()
        .to_vec();
    (status, body)
}

async fn get(s: &AppState, uri: &str) -> (StatusCode, Value) {
    let (st, body) = call(s, Request::get(uri).body(Body::empty()).unwrap()).await;
    (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post(s: &AppState, uri: &str, body: Value) -> (StatusCode, Value) {
    post_raw(s, uri, body.to_string().into_bytes()).await
}

async fn post_raw(s: &AppState, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let (st, body) = call(
        s,
        Request::post(uri)
            .header("Content-Type", "application/json")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    (
        st,
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&body)})),
    )
}

fn multipart(name: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "spillwayboundary7d1";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// An upload as the import page sends it: multipart with the CSRF token.
async fn upload(s: &AppState, name: &str, data: &[u8]) -> (StatusCode, Value) {
    let (ct, body) = multipart(name, data);
    let (st, body) = call(
        s,
        Request::post("/api/upload")
            .header("Content-Type", ct)
            .header(CSRF_HEADER, s.policy.csrf_token())
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn assert_err(what: &str, got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    let msg = got.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error field in {}", got.1));
    assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let (st, doc) = get(&s, "/api/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = api::routes()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed, "openapi.json and api::ROUTES differ");
    // Every listed route is answered by its handler (not the fallback, not 405).
    for (m, p) in api::routes() {
        let req = Request::builder()
            .method(*m)
            .uri(*p)
            .header("Content-Type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (st, body) = call(&s, req).await;
        let body = String::from_utf8_lossy(&body);
        assert!(
            st != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no such page"),
            "{m} {p}: {st} {body}"
        );
        assert!(!st.is_server_error(), "{m} {p}: {st} {body}");
    }
    let (st, v) = get(&s, "/api/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("openapi.json"));
}

/// Regression (#14.13): a wrong method was answered 405 with an empty body.
#[tokio::test]
async fn every_error_is_json_405_included() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let (st, body) = call(
        &s,
        Request::delete("/api/export/start")
            .header(CSRF_HEADER, s.policy.csrf_token())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("DELETE") && msg.contains("/api/export/start"),
        "{msg}"
    );
    let (st, v) = get(&s, "/api/export/start").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"].as_str().is_some(), "{v}");
    // A body of the wrong type is answered as JSON too.
    let (st, body) = call(
        &s,
        Request::post("/api/validate")
            .header("Content-Type", "text/plain")
            .header(CSRF_HEADER, s.policy.csrf_token())
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert!(st.is_client_error(), "{st}");
    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert!(v["error"].as_str().is_some(), "{v}");
}

#[tokio::test]
async fn pages_and_assets_are_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    for (uri, needle) in [
        ("/", "Gather a support bundle"),
        ("/import", "Import a support bundle"),
        ("/assets/ui.css", "--accent"),
        ("/assets/wizard.js", "/api/export/start"),
        ("/assets/import.js", "/api/upload"),
        ("/assets/common.js", "drawChart"),
        ("/health", "OK"),
    ] {
        let (st, body) = call(&s, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(st, StatusCode::OK, "{uri}");
        assert!(String::from_utf8_lossy(&body).contains(needle), "{uri}");
    }
    let (st, v) = get(&s, "/api/config").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["max_running_exports"], 3);
    assert_eq!(get(&s, "/api/health").await.1["status"], "ok");
}

#[tokio::test]
async fn bad_inputs_answer_4xx_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(&dir.path().join("root"));
    s.uploads.max_upload_bytes = 1000;
    let bad = StatusCode::BAD_REQUEST;
    let nf = StatusCode::NOT_FOUND;

    let got = post_raw(&s, "/api/validate", b"{not json".to_vec()).await;
    assert_err("malformed json", got, bad, "request body");
    let got = post(&s, "/api/validate", json!({})).await;
    assert_err("missing connection", got, bad, "missing field `connection`");
    let got = post(&s, "/api/validate", json!({"connection": {"url": ""}})).await;
    assert_err("empty url", got, bad, "connection.url");
    let got = post(&s, "/api/validate", json!({"connection": {"url": "http://127.0.0.1:1", "password": "hunter2", "username": "u"}})).await;
    assert_eq!(got.0, bad, "{}", got.1);
    assert!(!got.1.to_string().contains("hunter2"), "{}", got.1);
    let got = post(
        &s,
        "/api/discover",
        json!({"connection": {"url": "http://127.0.0.1:1"}, "since": "yesterday"}),
    )
    .await;
    assert_err("bad since", got, bad, "since");
    let got = post(
        &s,
        "/api/sample",
        json!({"connection": {"url": "http://127.0.0.1:1"}, "selectors": ["up{"]}),
    )
    .await;
    assert_err("bad selector", got, bad, "selectors");
    let got = post(&s, "/api/export/start", json!({"connection": {"url": "http://x"}, "from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"})).await;
    assert_err("empty range", got, bad, "range is empty");
    let got = post(
        &s,
        "/api/export/start",
        json!({"connection": {"url": "http://x"}, "staging_dir": "../out"}),
    )
    .await;
    assert_err("staging traversal", got, bad, "single new directory name");

    // Unknown jobs.
    assert_err(
        "status",
        get(&s, "/api/export/status?id=nope").await,
        nf,
        "no export job",
    );
    assert_err(
        "status no id",
        get(&s, "/api/export/status").await,
        bad,
        "query string",
    );
    assert_err(
        "cancel",
        post(&s, "/api/export/cancel", json!({"id": "nope"})).await,
        nf,
        "nope",
    );
    let conn = json!({"url": "http://127.0.0.1:1"});
    assert_err(
        "resume",
        post(
            &s,
            "/api/export/resume",
            json!({"id": "nope", "connection": conn}),
        )
        .await,
        nf,
        "nope",
    );
    assert_err(
        "import status",
        get(&s, "/api/import/status?id=nope").await,
        nf,
        "no import job",
    );
    assert_err(
        "import resume",
        post(
            &s,
            "/api/import/resume",
            json!({"id": "nope", "connection": conn}),
        )
        .await,
        nf,
        "nope",
    );

    // Paths: traversal, absolute outside, symlink escape, missing.
    let root = s.confine.root().to_path_buf();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.zip")).unwrap();
    for p in [
        "../secret.txt",
        "a/../../secret.txt",
        "/etc/passwd",
        "escape/secret.txt",
        "link.zip",
    ] {
        let got = get(&s, &format!("/api/download?path={}", common::urlencode(p))).await;
        assert_err(p, got, bad, "");
        let got = get(&s, &format!("/api/fs/list?path={}", common::urlencode(p))).await;
        assert_eq!(got.0, bad, "fs/list {p}: {}", got.1);
        let got = post(&s, "/api/analyze", json!({"path": p})).await;
        assert_eq!(got.0, bad, "analyze {p}: {}", got.1);
    }
    assert_err(
        "fs/check ..",
        post(&s, "/api/fs/check", json!({"path": "x/../../y"})).await,
        bad,
        "'..'",
    );
    assert_err(
        "fs/check escape",
        post(&s, "/api/fs/check", json!({"path": "escape/new"})).await,
        bad,
        "outside",
    );
    assert!(!dir.path().join("new").exists());
    assert_err(
        "download missing",
        get(&s, "/api/download?path=none.zip").await,
        nf,
        "none.zip",
    );
    assert_err(
        "download empty",
        get(&s, "/api/download").await,
        bad,
        "path is required",
    );
    // fs/list does not show the escaping symlinks.
    let (st, list) = get(&s, "/api/fs/list").await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"escape") && !names.contains(&"link.zip"),
        "{names:?}"
    );

    // Uploads: too big (and nothing left behind), no file, not a bundle.
    assert_err(
        "oversized",
        upload(&s, "big.zip", &vec![b'x'; 5000]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "--max-upload-bytes",
    );
    let left: Vec<_> = std::fs::read_dir(root.join("uploads")).unwrap().collect();
    assert!(left.is_empty(), "partial upload left behind: {left:?}");
    let (st, v) = call(
        &s,
        Request::post("/api/upload")
            .header("Content-Type", "multipart/form-data; boundary=zz")
            .header(CSRF_HEADER, s.policy.csrf_token())
            .body(Body::from("--zz--\r\n"))
            .unwrap(),
    )
    .await;
    assert!(st.is_client_error(), "{st} {}", String::from_utf8_lossy(&v));
    let (st, v) = call(
        &s,
        Request::post("/api/upload")
            .header(CSRF_HEADER, s.policy.csrf_token())
            .body(Body::from("x"))
            .unwrap(),
    )
    .await;
    assert!(st.is_client_error(), "{st} {}", String::from_utf8_lossy(&v));
    let v: Value = serde_json::from_slice(&v).expect("a JSON error");
    assert!(v["error"].as_str().unwrap().contains("upload"), "{v}");
    let (st, up) = upload(&s, "junk.zip", b"this is not a zip").await;
    assert_eq!(st, StatusCode::OK, "{up}");
    let got = post(&s, "/api/analyze", json!({"path": up["path"]})).await;
    assert_eq!(got.0, bad, "{}", got.1);
    let got = post(
        &s,
        "/api/import/start",
        json!({"path": "missing.zip", "connection": conn}),
    )
    .await;
    assert_err("import missing", got, nf, "missing.zip");
}

#[tokio::test]
async fn fs_list_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let (st, v) = post(&s, "/api/fs/check", json!({"path": "bundles/today"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["created"].as_bool(), v["writable"].as_bool()),
        (Some(true), Some(true))
    );
    std::fs::write(dir.path().join("bundles/a.zip"), b"zip").unwrap();
    let (st, v) = get(&s, "/api/fs/list?path=bundles").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e[0]["name"], "today");
    assert_eq!(e[0]["dir"], true);
    assert_eq!(
        (e[1]["name"].as_str(), e[1]["bytes"].as_u64()),
        (Some("a.zip"), Some(3))
    );
    let (st, body) = call(
        &s,
        Request::get("/api/download?path=bundles/a.zip")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, &b"zip"[..]));
}

#[tokio::test]
async fn basic_auth_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path());
    s.policy = std::sync::Arc::new(
        Policy::local(ServerKind::Ui).with_auth(BasicAuth::parse("admin:pw").unwrap()),
    );
    let (st, _) = get(&s, "/api/config").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = get(&s, "/").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call(&s, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(
        &s,
        Request::get("/api/config")
            .header("Authorization", "Basic YWRtaW46cHc=")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

fn seed(vm: &Vm, now_ms: i64) {
    let mut lines = String::new();
    for (job, inst) in [
        ("api", "10.0.0.1:8080"),
        ("api", "10.0.0.2:8080"),
        ("db", "10.0.0.3:9100"),
    ] {
        let samples: Vec<(i64, f64)> = (0..60)
            .map(|i| (now_ms - (60 - i) * 30_000, i as f64))
            .collect();
        lines.push_str(&vm_line(
            &[
                ("__name__", "http_requests_total"),
                ("job", job),
                ("instance", inst),
            ],
            &samples,
        ));
        lines.push('\n');
        lines.push_str(&vm_line(
            &[("__name__", "up"), ("job", job), ("instance", inst)],
            &[(now_ms - 30_000, 1.0)],
        ));
        lines.push('\n');
    }
    vm.import(&lines);
}

async fn wait_export(s: &AppState, id: &str) -> Value {
    let mut last = Value::Null;
    // Generous: the machine running the suite may be busy.
    for _ in 0..1800 {
        let (st, v) = get(s, &format!("/api/export/status?id={id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if ["done", "failed", "cancelled"].contains(&v["state"].as_str().unwrap()) {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("export {id} did not finish in 180 s: {last}");
}

async fn wait_import(s: &AppState, id: &str) -> Value {
    for _ in 0..600 {
        let (st, v) = get(s, &format!("/api/import/status?id={id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["state"] != "running" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("import {id} did not finish in 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_download_upload_import_against_vm() {
    let src = Vm::start();
    let dst = Vm::start();
    let now = spillway::model::time::now_ms();
    seed(&src, now);
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let conn = json!({"url": src.url()});

    let (st, v) = post(&s, "/api/validate", json!({"connection": conn})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["flavour"], "single");
    assert_eq!(v["export_api"], true);

    let (st, v) = post(
        &s,
        "/api/discover",
        json!({"connection": conn, "since": "1h"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let jobs: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["api", "db"], "{v}");

    let sel = json!({"connection": conn, "since": "1h", "jobs": ["api"], "selectors": ["http_requests_total"], "obfuscation": {"ips": true, "jobs": true}});
    let (st, v) = post(&s, "/api/sample", sel.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains("10.0.0.") && !text.contains("\"api\""),
        "not obfuscated: {text}"
    );
    let chart = v["chart"].as_array().unwrap();
    assert_eq!(chart.len(), 2, "{v}");
    assert!(chart[0]["points"].as_array().unwrap().len() > 10, "{v}");

    // Asynchronous export → status → download.
    let (st, v) = post(&s, "/api/export/start", sel.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let v = wait_export(&s, &id).await;
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["percent"], 100.0);
    let b = &v["bundle"];
    let (st, zip_bytes) = call(
        &s,
        Request::get(b["download_url"].as_str().unwrap())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(zip_bytes.len() as u64, b["bytes"].as_u64().unwrap());
    assert_eq!(
        hex(&sha2::Sha256::digest(&zip_bytes)),
        b["sha256"].as_str().unwrap()
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.clone())).unwrap();
    let mut metrics = String::new();
    zip.by_name("metrics.jsonl")
        .unwrap()
        .read_to_string(&mut metrics)
        .unwrap();
    assert!(metrics.lines().count() >= 2, "{metrics}");
    assert!(
        metrics.contains("http_requests_total") && !metrics.contains("10.0.0."),
        "{metrics}"
    );
    let mut md = String::new();
    zip.by_name("metadata.json")
        .unwrap()
        .read_to_string(&mut md)
        .unwrap();
    let md: Value = serde_json::from_str(&md).unwrap();
    assert_eq!(md["obfuscated"], true, "{md}");
    // The job's file is credentials-free.
    let staged = std::fs::read_to_string(
        s.confine
            .root()
            .join(b["path"].as_str().unwrap())
            .with_extension("zip.sha256"),
    )
    .unwrap();
    assert!(staged.contains(b["sha256"].as_str().unwrap()));

    // Synchronous export with credentials: nothing on disk names them.
    let mut sync_req = sel.clone();
    sync_req["connection"] =
        json!({"url": src.url(), "username": "someone", "password": "pa55word-xyz"});
    let (st, v) = post(&s, "/api/export", sync_req).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "done");
    assert!(!v.to_string().contains("pa55word-xyz"));
    for entry in walk(s.confine.root()) {
        let data = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&data).contains("pa55word-xyz"),
            "{}",
            entry.display()
        );
    }

    // Upload the bundle, analyze it against the target, import, verify.
    let (st, up) = upload(&s, b["name"].as_str().unwrap(), &zip_bytes).await;
    assert_eq!(st, StatusCode::OK, "{up}");
    let dconn = json!({"url": dst.url()});
    let (st, a) = post(
        &s,
        "/api/analyze",
        json!({"path": up["path"], "connection": dconn}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(a["report"]["series"], 2, "{a}");
    assert_eq!(a["skipped_samples"], 0, "{a}");
    let (st, v) = post(
        &s,
        "/api/import/start",
        json!({"path": up["path"], "connection": dconn}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = wait_import(&s, v["id"].as_str().unwrap()).await;
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["result"]["verified"], true, "{v}");
    assert_eq!(dst.series_count("http_requests_total"), 2);
}

/// Cancel mid-export removes the partial files; resume then finishes the
/// job (#11.15: this used to be cancelled again instead of checked). The
/// source sits behind a proxy that holds every export request after the
/// third until released, so the cancel lands mid-export every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_removes_partial_files_and_resume_finishes() {
    let src = Vm::start();
    let now = spillway::model::time::now_ms();
    seed(&src, now);
    let proxy = Proxy::start(
        &src.url(),
        ProxyRules {
            hold_exports_after: Some(3),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let conn = json!({"url": proxy.url()});
    // 40 min in 30 s windows: 80 requests, most of them held.
    let req = json!({"connection": conn, "since": "40m", "batch_window_seconds": 30});
    let (st, v) = post(&s, "/api/export/start", req).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = get(&s, &format!("/api/export/status?id={id}")).await;
        if v["windows_done"].as_u64().unwrap_or(0) >= 1 && proxy.held_exports() > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no window done: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = post(&s, "/api/export/cancel", json!({"id": id})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    let windows_total = v["windows_total"].as_u64().unwrap();
    assert!(windows_total >= 80, "{v}");
    let job_dir = s.confine.root().join(v["staging_dir"].as_str().unwrap());
    for f in walk(&job_dir) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.ends_with(".zip") && !name.contains(".tmp"),
            "partial file left: {}",
            f.display()
        );
    }
    // Resume with the source answering again: the job finishes with every series.
    proxy.release_exports();
    let (st, v) = post(
        &s,
        "/api/export/resume",
        json!({"id": id, "connection": conn}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["runs"], 2);
    let v = wait_export(&s, &id).await;
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["windows_done"], v["windows_total"], "{v}");
    let path = s.confine.root().join(v["bundle"]["path"].as_str().unwrap());
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut metrics = String::new();
    zip.by_name("metrics.jsonl")
        .unwrap()
        .read_to_string(&mut metrics)
        .unwrap();
    // The seed: 3 series of http_requests_total over the last 30 min, and `up`.
    let mut points = std::collections::BTreeMap::<String, usize>::new();
    for line in metrics.lines() {
        let l: Value = serde_json::from_str(line).unwrap();
        *points.entry(l["metric"].to_string()).or_default() +=
            l["timestamps"].as_array().unwrap().len();
    }
    let requests: Vec<usize> = points
        .iter()
        .filter(|(k, _)| k.contains("http_requests_total"))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(requests, [60, 60, 60], "{points:?}");
}

/// #14.7: a job's directory is one new name under exports/, never the
/// staging root, the uploads or another job's directory (which the job's
/// sweep would delete).
#[tokio::test]
async fn staging_dir_is_a_new_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let root = s.confine.root().to_path_buf();
    let conn = json!({"url": "http://127.0.0.1:1"});
    for bad_name in [".", "..", "uploads/x", "/tmp/x", "a/b", ".hidden", "x y"] {
        let got = post(
            &s,
            "/api/export/start",
            json!({"connection": conn, "staging_dir": bad_name, "since": "5m"}),
        )
        .await;
        assert_err(
            bad_name,
            got,
            StatusCode::BAD_REQUEST,
            "single new directory name",
        );
    }
    let (st, first) = post(
        &s,
        "/api/export/start",
        json!({"connection": conn, "staging_dir": "mine", "since": "5m"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["staging_dir"], "exports/mine");
    // The same name again is another job's directory.
    let got = post(
        &s,
        "/api/export/start",
        json!({"connection": conn, "staging_dir": "mine", "since": "5m"}),
    )
    .await;
    assert_err("taken", got, StatusCode::CONFLICT, "exists already");
    // Before the fix "." was accepted and the sweep removed the staging root.
    let failed = wait_export(&s, first["id"].as_str().unwrap()).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let zero = AppState::new(dir.path(), Duration::ZERO).unwrap();
    let (_, v) = post(
        &zero,
        "/api/export/start",
        json!({"connection": conn, "staging_dir": "gone-soon", "since": "5m"}),
    )
    .await;
    wait_export(&zero, v["id"].as_str().unwrap()).await;
    zero.jobs.sweep();
    assert!(!root.join("exports/gone-soon").exists());
    assert!(root.is_dir() && root.join("exports/mine").is_dir());
}

/// #14.5: one upload, uploads at once and what waits unimported are
/// bounded (413/429, JSON), and uploads nobody imported are swept.
#[tokio::test]
async fn uploads_are_bounded_and_orphans_swept() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = AppState::with_options(
        dir.path(),
        JobLimits {
            retention: Duration::ZERO,
            ..Default::default()
        },
        UploadLimits {
            max_upload_bytes: 1000,
            max_stored_bytes: 2500,
            max_concurrent: 1,
        },
        Policy::local(ServerKind::Ui),
    )
    .unwrap();
    // Announced too big: refused before a byte is written.
    let (ct, body) = multipart("big.zip", &vec![b'x'; 200_000]);
    let (st, v) = call(
        &s,
        Request::post("/api/upload")
            .header("Content-Type", ct)
            .header("Content-Length", body.len().to_string())
            .header(CSRF_HEADER, s.policy.csrf_token())
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&v)
    );
    // Uploads at once.
    let held = s.upload_slots.clone().try_acquire_owned().unwrap();
    assert_err(
        "busy",
        upload(&s, "a.zip", b"zip").await,
        StatusCode::TOO_MANY_REQUESTS,
        "uploads are in progress",
    );
    drop(held);
    // What waits unimported: 900 + 900 fit, the third does not.
    for name in ["a.zip", "b.zip"] {
        let (st, v) = upload(&s, name, &[b'x'; 900]).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    assert_err(
        "store full",
        upload(&s, "c.zip", &[b'x'; 900]).await,
        StatusCode::TOO_MANY_REQUESTS,
        "import them",
    );
    let uploads = s.confine.root().join("uploads");
    assert!(
        !walk(&uploads)
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".part")),
        "a refused upload left its part file"
    );
    // Never imported: swept after the retention window (zero here).
    assert_eq!(walk(&uploads).len(), 2);
    s.jobs.sweep();
    assert!(walk(&uploads).is_empty(), "{:?}", walk(&uploads));
    s.uploads.max_stored_bytes = 10_000;
    let (st, _) = upload(&s, "d.zip", &[b'x'; 900]).await;
    assert_eq!(st, StatusCode::OK);
}

/// #14.5: a start beyond the bounds of queued exports is refused with 429
/// and leaves no directory behind.
#[tokio::test]
async fn export_queue_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = AppState::with_options(
        dir.path(),
        JobLimits {
            max_queued_exports: 0,
            ..Default::default()
        },
        UploadLimits::default(),
        Policy::local(ServerKind::Ui),
    )
    .unwrap();
    let got = post(
        &s,
        "/api/export/start",
        json!({"connection": {"url": "http://127.0.0.1:1"}, "staging_dir": "q", "since": "5m"}),
    )
    .await;
    assert_err(
        "queue",
        got,
        StatusCode::TOO_MANY_REQUESTS,
        "exports are already waiting",
    );
    assert!(!s.confine.root().join("exports/q").exists());
    let (_, cfg) = get(&s, "/api/config").await;
    assert_eq!(cfg["max_queued_exports"], 0, "{cfg}");
    assert_eq!(cfg["csrf_token"].as_str().unwrap(), s.policy.csrf_token());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
