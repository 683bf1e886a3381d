//! `spillway ui` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over the W3C WebDriver protocol: the six-step
//! wizard against a real VictoriaMetrics (the bundle downloaded and opened),
//! a cancel mid-export, and the import page loading the bundle into a second
//! VictoriaMetrics; the `run` page's reload button; and a hostile page on
//! another origin that posts a form to the ui and a `no-cors` fetch to
//! `run`'s receiver, both refused by the guard while the servers' own pages
//! (which send the CSRF token) work. Screenshots of every step go to
//! `target/ui-screenshots/`.
//!
//! WebDriver is plain JSON over HTTP on loopback; requests go through curl
//! like the rest of the harness, so no WebDriver crate is needed.

mod common;

use common::{curl, free_port, post_status, vm_line, wait_for, Server, SpillwayRun, Vm};
use serde_json::{json, Value};
use sha2::Digest;
use spillway::ui::{router, AppState};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Driver {
    _server: Server,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn wd(method: &str, url: &str, body: Option<Value>) -> Value {
    let mut args = vec![
        "-s",
        "-X",
        method,
        url,
        "-H",
        "Content-Type: application/json",
    ];
    let data;
    if let Some(b) = body {
        data = b.to_string();
        args.push("--data-binary");
        args.push(&data);
    }
    let out = curl(&args).expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "webdriver {method} {url}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let server = Server::start("chromedriver", port, vec![format!("--port={port}")]);
        server.wait_ready("/status");
        let profile = tempfile::tempdir().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1200,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let v = wd("POST", &format!("{base}/session"), Some(caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Driver {
            _server: server,
            base,
            session,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn go(&self, url: &str) {
        wd("POST", &self.url("/url"), Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let v = wd(
            "POST",
            &self.url("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|e| e.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        let v = wd(
            "POST",
            &self.url(&format!("/element/{e}/click")),
            Some(json!({})),
        );
        assert!(v["value"].is_null(), "click {css}: {v}");
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        wd(
            "POST",
            &self.url(&format!("/element/{e}/clear")),
            Some(json!({})),
        );
        let v = wd(
            "POST",
            &self.url(&format!("/element/{e}/value")),
            Some(json!({"text": text})),
        );
        assert!(v["value"].is_null(), "type into {css}: {v}");
    }

    fn js(&self, script: &str) -> Value {
        wd(
            "POST",
            &self.url("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )["value"]
            .clone()
    }

    /// Waits until `script` (an expression) is truthy.
    fn wait(&self, what: &str, script: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let v = self.js(&format!("return !!({script});"));
            if v == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let msg = self.js("return document.querySelector('#msg') ? document.querySelector('#msg').textContent : ''");
        panic!("timed out waiting for {what}; page message: {msg}");
    }

    fn text(&self, css: &str) -> String {
        self.js(&format!(
            "return document.querySelector({css:?}).textContent"
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    fn screenshot(&self, name: &str) {
        let v = wd("GET", &self.url("/screenshot"), None);
        let png = base64_decode(v["value"].as_str().expect("screenshot"));
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = curl(&[
            "-s",
            "-X",
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
        ]);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Serves the ui in this process on a free loopback port.
fn serve_ui(rt: &tokio::runtime::Runtime, staging: &std::path::Path) -> (String, AppState) {
    let state = AppState::new(staging, Duration::from_secs(3600)).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state.clone());
    rt.spawn(async move {
        spillway::server::serve(listener, app, std::future::pending())
            .await
            .unwrap();
    });
    (url, state)
}

fn seed(vm: &Vm) {
    let now = spillway::model::time::now_ms();
    let mut lines = String::new();
    for (job, inst) in [
        ("api", "10.0.0.1:8080"),
        ("api", "10.0.0.2:8080"),
        ("db", "10.0.0.3:9100"),
    ] {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| {
                (
                    now - (120 - i) * 30_000,
                    (i as f64 / 7.0).sin() * 10.0 + 20.0,
                )
            })
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
            &[(now - 30_000, 1.0)],
        ));
        lines.push('\n');
    }
    vm.import(&lines);
}

#[test]
fn wizard_cancel_and_import_in_chromium() {
    let src = Vm::start();
    let dst = Vm::start();
    seed(&src);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let staging = tempfile::tempdir().unwrap();
    let (ui, state) = serve_ui(&rt, staging.path());
    let d = Driver::start();

    // 1. Connection.
    d.go(&format!("{ui}/"));
    d.wait(
        "the wizard",
        "document.querySelector('#step-1:not(.hidden)')",
        10,
    );
    d.type_into("#url", &src.url());
    d.screenshot("1-connection");
    d.click("#btn-validate");
    // 2. Validation.
    d.wait(
        "validation",
        "document.querySelector('#step-2:not(.hidden)')",
        20,
    );
    let v = d.text("#validate-result");
    assert!(v.contains("single") && v.contains("available"), "{v}");
    d.screenshot("2-validation");
    // 3. Discover and select.
    d.click("#btn-to-select");
    d.wait(
        "jobs",
        "document.querySelectorAll('#jobs-table tbody input').length == 2",
        20,
    );
    d.click("#jobs-table tbody input[value=api]");
    d.type_into("#selector", "http_requests_total");
    d.screenshot("3-select");
    // 4. Preview with its chart.
    d.click("#btn-preview");
    d.wait("preview", "document.querySelectorAll('#sample-table tbody td.mono').length == 2 && document.querySelectorAll('#chart path').length == 2", 20);
    let rows = d.text("#sample-table");
    assert!(
        !rows.contains("10.0.0.") && rows.contains("http_requests_total"),
        "{rows}"
    );
    d.screenshot("4-preview");
    // 5. Export, 6. download.
    d.click("#btn-export");
    d.wait(
        "export page",
        "document.querySelector('#step-5:not(.hidden), #step-6:not(.hidden)')",
        10,
    );
    d.screenshot("5-export");
    d.wait(
        "bundle",
        "document.querySelector('#step-6:not(.hidden)')",
        40,
    );
    d.screenshot("6-download");
    let sha = d.text("#bundle-sha");
    let href = d
        .js("return document.querySelector('#download-link').href")
        .as_str()
        .unwrap()
        .to_string();
    let out = curl(&["-sf", &href]).unwrap();
    assert!(out.status.success());
    let zip_bytes = out.stdout;
    let digest: String = sha2::Sha256::digest(&zip_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, sha);
    let size = d.text("#bundle-size").replace(',', "");
    assert!(size.contains(&zip_bytes.len().to_string()), "{size}");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.clone())).unwrap();
    let mut metrics = String::new();
    zip.by_name("metrics.jsonl")
        .unwrap()
        .read_to_string(&mut metrics)
        .unwrap();
    let lines = metrics
        .lines()
        .filter(|l| l.contains("http_requests_total"))
        .count();
    assert!(lines >= 2, "{metrics}");
    assert!(
        !metrics.contains("10.0.0.") && !metrics.contains("\"job\":\"api\""),
        "{metrics}"
    );
    let mut md = String::new();
    zip.by_name("metadata.json")
        .unwrap()
        .read_to_string(&mut md)
        .unwrap();
    let md: Value = serde_json::from_str(&md).unwrap();
    assert_eq!(md["obfuscated"], true);

    // Cancel mid-export: a week of every series.
    d.go(&format!("{ui}/"));
    d.wait(
        "the wizard",
        "document.querySelector('#step-1:not(.hidden)')",
        10,
    );
    d.type_into("#url", &src.url());
    d.click("#btn-validate");
    d.wait(
        "validation",
        "document.querySelector('#step-2:not(.hidden)')",
        20,
    );
    d.click("#btn-to-select");
    d.wait(
        "jobs",
        "document.querySelectorAll('#jobs-table tbody input').length == 2",
        20,
    );
    d.js("const s = document.querySelector('#since'); s.value = '7d'; s.onchange(); return 1;");
    d.js("window.confirm = () => true; return 1;");
    // The page lets the plan adapt to the data, which takes this small
    // week in one window, finished before a click could cancel it; fixed
    // five-minute windows (the API's batch_window_seconds) keep it running.
    d.js("const plain = exportRequest; exportRequest = () => Object.assign(plain(), {batch_window_seconds: 300}); return 1;");
    d.click("#btn-preview");
    d.wait(
        "preview",
        "document.querySelectorAll('#sample-table tbody td.mono').length > 0",
        20,
    );
    d.click("#btn-export");
    d.wait(
        "running",
        "/running/.test(document.querySelector('#export-state').textContent)",
        20,
    );
    d.click("#btn-cancel");
    d.wait(
        "cancelled",
        "/cancelled/.test(document.querySelector('#export-state').textContent)",
        20,
    );
    assert!(!d
        .js("return document.querySelector('#btn-resume').classList.contains('hidden')")
        .as_bool()
        .unwrap());
    d.screenshot("5b-cancelled");
    let cancelled: Vec<_> = state
        .jobs
        .exports()
        .into_iter()
        .filter(|j| j.state == spillway::ui::jobs::JobState::Cancelled)
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert!(!std::fs::read_dir(&cancelled[0].spec.out_dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".zip")));

    // Import page: the bundle into the second VictoriaMetrics.
    let bundle = staging.path().join("download.zip");
    std::fs::write(&bundle, &zip_bytes).unwrap();
    d.go(&format!("{ui}/import"));
    d.wait("import page", "document.querySelector('#dropzone')", 10);
    d.screenshot("7-import-empty");
    let e = d.find("#file");
    let v = wd(
        "POST",
        &d.url(&format!("/element/{e}/value")),
        Some(json!({"text": bundle.display().to_string()})),
    );
    assert!(v["value"].is_null(), "{v}");
    d.wait(
        "analysis",
        "document.querySelector('#analyze-panel:not(.hidden)')",
        20,
    );
    assert!(
        d.text("#analysis").contains("Series"),
        "{}",
        d.text("#analysis")
    );
    d.type_into("#url", &dst.url());
    d.click("#btn-check");
    d.wait(
        "retention check",
        "document.querySelector('#analyze-warnings .msg')",
        20,
    );
    d.screenshot("8-import-analyzed");
    d.click("#btn-import");
    d.wait("verification", "document.querySelector('#verify-msg')", 40);
    let verify = d.text("#verify-msg");
    assert!(
        verify.contains("of 2 series visible") || verify.contains("2 of"),
        "{verify}"
    );
    d.screenshot("9-import-done");
    assert!(dst.series_count("http_requests_total") >= 2);
    drop(d);
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// `spillway run`'s page in the browser: a breaching rule shows up with its
/// health, its last samples and a sparkline of recent result counts, and the
/// destination with its queue; the page has the shared look.
#[test]
fn run_page_shows_a_rule_in_chromium() {
    let src = Vm::start();
    let dst = Vm::start();
    seed(&src);
    let config = format!(
        "datasource: {{url: \"{}\"}}\nrule_files: [rules.yml]\nstorage: {{path: \"{{dir}}/data\"}}\n\
         destinations:\n  - name: incidents\n    url: \"{}/api/v1/write\"\n",
        src.url(),
        dst.url()
    );
    let rules = "groups:\n- name: web\n  interval: 2s\n  rules:\n  - record: up_export\n    expr: up > 0\n    labels: {export_target: incidents}\n";
    let run = SpillwayRun::start_files(&[("run.yml", &config), ("rules.yml", rules)], &[]);
    let driver = Driver::start();
    driver.go(&format!("{}/", run.url()));
    driver.wait(
        "the rule row with a sparkline",
        "[...document.querySelectorAll('#groups tr')].some(tr => tr.textContent.includes('up_export') && tr.querySelector('svg.spark polyline'))",
        30,
    );
    // The page refreshes itself: wait for a second evaluation to reach it.
    driver.wait(
        "three results in the last evaluation",
        "[...document.querySelectorAll('#groups tr')].some(tr => tr.textContent.includes('up_export') && / 3( |$)/.test(tr.textContent) )",
        30,
    );
    let groups = driver.text("#groups");
    assert!(
        groups.contains("web") && groups.contains("up > 0") && groups.contains("ok"),
        "{groups}"
    );
    assert!(driver.text("#destinations").contains("incidents"));
    let look =
        driver.js("return getComputedStyle(document.querySelector('header.top')).backgroundColor");
    assert_eq!(
        look,
        json!("rgb(31, 78, 121)"),
        "the shared look (ui.css) is applied"
    );
    driver.screenshot("run-page");
    // The page's own reload passes the guard (same origin, CSRF token).
    driver.click("#reload");
    driver.wait(
        "the reload answer",
        "!document.querySelector('#message').hidden && document.querySelector('#message').textContent.length > 0",
        20,
    );
    let msg = driver.text("#message");
    let failed = driver
        .js("return document.querySelector('#message').classList.contains('failed')")
        .as_bool()
        .unwrap();
    assert!(!failed, "the page's reload was refused: {msg}");
    assert_eq!(
        run.metric("spillway_config_reloads_total", &[("status", "success")]),
        1.0,
        "{msg}"
    );
}

/// A page on another origin, as any site the user visits could serve: it
/// submits a multipart form to the ui's `/api/upload` (which stored the
/// field as a bundle before the guard) and sends a `no-cors` fetch to
/// `run`'s `/api/v1/import` (which routed the series to every destination).
#[test]
fn a_foreign_page_cannot_upload_or_inject() {
    let dst = Vm::start();
    let run = SpillwayRun::start(&format!(
        "destinations:\n  - name: vm\n    url: {}/api/v1/write\n    flush_interval: 100ms\nstorage: {{path: \"{{dir}}/data\"}}\n",
        dst.url()
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let staging = tempfile::tempdir().unwrap();
    let (ui, _state) = serve_ui(&rt, staging.path());
    let ts = spillway::model::time::now_ms() / 1000 * 1000 - 60_000;
    let injected = vm_line(&[("__name__", "injected_by_page")], &[(ts, 1.0)]);
    let page = format!(
        r#"<!doctype html><html><head><title>loading</title></head><body>
<form id="f" method="POST" action="{ui}/api/upload" enctype="multipart/form-data">
<input type="hidden" name="file" value="evil-bundle"></form>
<script>
fetch("{run}/api/v1/import", {{method: "POST", mode: "no-cors", body: {body}}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"#,
        run = run.url(),
        body = serde_json::to_string(&injected).unwrap(),
    );
    let attacker = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let attacker_url = format!(
        "http://localhost:{}/",
        attacker.local_addr().unwrap().port()
    );
    rt.spawn(async move {
        let app = axum::Router::new().fallback(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        });
        let _ = axum::serve(attacker, app).await;
    });
    let d = Driver::start();
    d.go(&attacker_url);
    // The fetch settled, then the form navigated to the ui's answer.
    d.wait(
        "the form's answer",
        "location.href.includes('/api/upload') && document.body && document.body.textContent.length > 0",
        20,
    );
    let answer = d.js("return document.body.textContent");
    d.screenshot("attacker-page");
    assert!(
        answer.as_str().unwrap_or("").contains("error"),
        "the form was not refused: {answer}"
    );
    let uploads = staging.path().join("uploads");
    let stored = std::fs::read_dir(&uploads).map(|r| r.count()).unwrap_or(0);
    assert_eq!(stored, 0, "the foreign page's form upload was stored");
    // Then a machine write: once it is delivered, the page's would have been too.
    let (code, body) = post_status(
        &format!("{}/api/v1/import", run.url()),
        vm_line(&[("__name__", "by_machine")], &[(ts, 1.0)]).as_bytes(),
    );
    assert_eq!(code, 204, "{body}");
    run.wait_delivered(Duration::from_secs(20));
    wait_for("the machine write", Duration::from_secs(20), || {
        dst.series_count("by_machine") == 1
    });
    assert_eq!(
        dst.series_count("injected_by_page"),
        0,
        "the foreign page injected a series"
    );
    // The ui's own import page still uploads (the same form field, with the token).
    d.go(&format!("{ui}/import"));
    d.wait("import page", "document.querySelector('#dropzone')", 10);
    let status = d.js(
        "const fd = new FormData(); fd.append('file', new Blob(['not a zip']), 'x.zip');\
         const x = new XMLHttpRequest(); x.open('POST', '/api/upload', false);\
         x.setRequestHeader('X-Spillway-CSRF', csrfToken()); x.send(fd); return x.status;",
    );
    assert_eq!(status, json!(200));
    drop(d);
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// The run page's breach captures: a capture opened by a breaching rule is
/// listed with its window and counts, and its row draws a chart of the
/// captured series.
#[test]
fn run_page_shows_a_breach_capture_and_its_chart() {
    let src = Vm::start();
    let dst = Vm::start();
    seed(&src);
    let config = format!(
        "datasource: {{url: \"{}\"}}\nrule_files: [rules.yml]\nevaluation: {{eval_delay: 0s}}\nstorage: {{path: \"{{dir}}/data\"}}\n\
         destinations:\n  - name: debug\n    url: \"{}/api/v1/write\"\n\
         captures:\n  - name: job_context\n    match: '{{job=\"{{{{ $labels.job }}}}\"}}'\n    before: 10m\n    chunk: 5m\n    destinations: [debug]\n",
        src.url(),
        dst.url()
    );
    let rules = "groups:\n- name: web\n  interval: 2s\n  rules:\n  - record: api_seen\n    expr: http_requests_total{job=\"api\"} > 0\n";
    let run = SpillwayRun::start_files(&[("run.yml", &config), ("rules.yml", rules)], &[]);
    common::wait_for(
        "a capture with copied samples",
        Duration::from_secs(60),
        || {
            let v: Value =
                serde_json::from_str(&common::http_get(&format!("{}/api/v1/captures", run.url())))
                    .unwrap();
            v["data"]["captures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["samples"].as_u64().unwrap_or(0) > 0)
        },
    );
    let driver = Driver::start();
    driver.go(&format!("{}/", run.url()));
    driver.wait(
        "the capture row with copied samples",
        "[...document.querySelectorAll('#captures tbody tr')].some(tr => tr.textContent.includes('job_context') && tr.textContent.includes('open') && /^[1-9]/.test(tr.children[6].textContent))",
        30,
    );
    assert!(
        driver.text("#captures-source").contains("export"),
        "{}",
        driver.text("#captures-source")
    );
    driver.click("#captures tbody tr.pick");
    driver.wait(
        "the chart of the captured series",
        "document.querySelectorAll('#capture-chart svg polyline').length >= 2",
        30,
    );
    let legend = driver.text("#capture-chart .legend");
    assert!(legend.contains("job=\"api\""), "{legend}");
    driver.screenshot("run-page-capture");
}
