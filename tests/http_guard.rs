//! The request guard of both servers through the real binary, as a hostile
//! web page would meet it (#14.6, #14.8): a DNS-rebinding page (a foreign
//! `Host`), a cross-site form or `no-cors` fetch (`Origin`,
//! `Sec-Fetch-Site`), a form that the UI's CSRF token stops; and the
//! machine clients that must keep working (vmagent remote-writing to
//! `spillway run`, curl reloading it, a script driving the UI's JSON API).
//! Headers are set with curl; what would have been injected is looked for
//! in a real VictoriaMetrics.

mod common;

use common::*;
use std::time::Duration;

/// `(status, body)` of a curl call; `args` come before the URL.
fn curl_status(args: &[&str], url: &str) -> (u16, String) {
    let mut all = vec!["-sS", "-m", "30", "-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all).expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Runs spillway with `args`; its exit code and stderr, or `None` if it was
/// still running after `deadline` (then it is killed).
fn exit_within(args: &[&str], deadline: Duration) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(spillway_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn spillway");
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    (code, stderr)
}

fn start_ui(extra: &[&str]) -> Server {
    let port = free_port();
    let mut args = vec![
        "ui".to_string(),
        "--http.listen".into(),
        format!("127.0.0.1:{port}"),
        "--staging".into(),
        "{dir}/staging".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_path(spillway_bin(), port, tempfile::tempdir().unwrap(), args);
    server.wait_ready("/health");
    server
}

fn json_error(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_string()
}

#[test]
fn ui_refuses_rebinding_and_cross_site_but_serves_its_pages_and_scripts() {
    let ui = start_ui(&["--http.allowed-hosts", "spillway.example"]);
    let url = ui.url();
    let port = ui.port.to_string();

    // DNS rebinding: the page's own name in Host. Every route, reads too.
    for path in ["/", "/api/config", "/api/download?path=x", "/health"] {
        let (code, body) = curl_status(&["-H", "Host: attacker.example"], &format!("{url}{path}"));
        assert_eq!(code, 403, "{path}: {body}");
        assert!(json_error(&body).contains("--http.allowed-hosts"), "{body}");
    }
    let (code, _) = curl_status(
        &["-H", &format!("Host: localhost:{port}")],
        &format!("{url}/"),
    );
    assert_eq!(code, 200);
    let (code, _) = curl_status(&["-H", "Host: spillway.example"], &format!("{url}/"));
    assert_eq!(code, 200, "--http.allowed-hosts");

    // The page carries the token; /api/config gives it to scripts.
    let (code, page) = curl_status(&[], &format!("{url}/"));
    assert_eq!(code, 200);
    let (_, cfg) = curl_status(&[], &format!("{url}/api/config"));
    let token = serde_json::from_str::<serde_json::Value>(&cfg).unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        page.contains(&format!(
            "<meta name=\"spillway-csrf\" content=\"{token}\">"
        )),
        "{page}"
    );

    // A cross-site form posting a "file" field: before the guard it was stored.
    let uploads = ui.dir.path().join("staging/uploads");
    let form = ["-F", "file=evil-bundle"];
    for extra in [
        vec!["-H", "Origin: http://attacker.example"],
        vec!["-H", "Origin: null"],
        vec!["-H", "Sec-Fetch-Site: cross-site"],
        vec!["-H", "Sec-Fetch-Site: same-site"],
        // An old browser sends neither header: the missing token stops it.
        vec![],
    ] {
        let mut args = form.to_vec();
        args.extend(extra.iter());
        let (code, body) = curl_status(&args, &format!("{url}/api/upload"));
        assert_eq!(code, 403, "{extra:?}: {body}");
        json_error(&body);
    }
    let stored = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "a refused upload was stored");
    // The import page's way: same origin, with the token.
    let mut args = form.to_vec();
    let origin = format!("Origin: {url}");
    let csrf = format!("X-Spillway-CSRF: {token}");
    args.extend([
        "-H",
        &origin,
        "-H",
        "Sec-Fetch-Site: same-origin",
        "-H",
        &csrf,
    ]);
    let (code, body) = curl_status(&args, &format!("{url}/api/upload"));
    assert_eq!(code, 200, "{body}");

    // JSON from another site is refused; a script's JSON (no Origin) is served.
    let json = [
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"connection":{"url":"http://127.0.0.1:1"}}"#,
    ];
    let mut cross = json.to_vec();
    cross.extend(["-H", "Origin: http://attacker.example"]);
    let (code, body) = curl_status(&cross, &format!("{url}/api/validate"));
    assert_eq!(code, 403, "{body}");
    let (code, body) = curl_status(&json, &format!("{url}/api/validate"));
    assert_eq!(code, 400, "a script reaches the handler: {body}");
    assert!(json_error(&body).contains("127.0.0.1:1"), "{body}");

    // 405 has the JSON shape of every other error.
    let csrf_arg = format!("X-Spillway-CSRF: {token}");
    let (code, body) = curl_status(
        &["-X", "DELETE", "-H", &csrf_arg],
        &format!("{url}/api/validate"),
    );
    assert_eq!(code, 405);
    assert!(json_error(&body).contains("DELETE"), "{body}");
}

#[test]
fn run_refuses_cross_site_writes_and_keeps_machine_clients() {
    let dst = Vm::start();
    let sp = SpillwayRun::start(&format!(
        "destinations:\n  - name: vm\n    url: {}/api/v1/write\n    flush_interval: 100ms\nstorage: {{path: \"{{dir}}/data\"}}\n",
        dst.url()
    ));
    let ts = spillway::model::time::now_ms() / 1000 * 1000 - 60_000;
    let line = |name: &str| vm_line(&[("__name__", name)], &[(ts, 1.0)]);
    let import = format!("{}/api/v1/import", sp.url());

    // A page's no-cors fetch or form: text/plain, with the browser's headers.
    let injected = line("injected");
    for headers in [
        vec!["Origin: http://attacker.example"],
        vec!["Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors"],
        vec!["Host: attacker.example"],
    ] {
        let mut args = vec!["-H", "Content-Type: text/plain", "--data-binary", &injected];
        for h in &headers {
            args.extend(["-H", h]);
        }
        let (code, body) = curl_status(&args, &import);
        assert_eq!(code, 403, "{headers:?}: {body}");
    }
    let (code, body) = curl_status(
        &["-X", "POST", "-H", "Origin: http://attacker.example"],
        &format!("{}/-/reload", sp.url()),
    );
    assert_eq!(code, 403, "cross-site reload: {body}");

    // A wrong method says so (it was an empty 405).
    let (code, body) = curl_status(&["-X", "DELETE"], &format!("{}/api/v1/rules", sp.url()));
    assert_eq!(code, 405);
    assert!(body.contains("DELETE"), "{body:?}");

    // Machines: curl imports and reloads; vmagent remote-writes.
    let (code, body) = curl_status(&["--data-binary", &line("by_curl")], &import);
    assert_eq!(code, 204, "{body}");
    let (code, body) = curl_status(&["-X", "POST"], &format!("{}/-/reload", sp.url()));
    assert_eq!(code, 200, "{body}");
    let agent = Vmagent::start(
        &[],
        &[
            format!("-remoteWrite.url={}/api/v1/write", sp.url()),
            "-remoteWrite.flushInterval=100ms".into(),
        ],
    );
    http_post(
        &format!("{}/api/v1/import", agent.url()),
        line("by_vmagent").as_bytes(),
    );
    wait_for(
        "both machine writes in the destination",
        Duration::from_secs(30),
        || dst.series_count("{__name__=~\"by_curl|by_vmagent\"}") == 2,
    );
    sp.wait_delivered(Duration::from_secs(20));
    assert_eq!(
        dst.series_count("injected"),
        0,
        "a cross-site write got through"
    );
    assert_eq!(
        sp.metric(
            "spillway_receiver_requests_total",
            &[("path", "/api/v1/import"), ("status_code", "204")]
        ),
        1.0
    );
}

#[test]
fn non_loopback_needs_auth_and_the_password_stays_out_of_argv() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yml");
    std::fs::write(
        &config,
        format!(
            "destinations:\n  - name: d\n    url: http://127.0.0.1:1/api/v1/write\nstorage: {{path: \"{}/data\"}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    // Refused (`run` only warned before, and served), for run and ui alike.
    let staging = dir.path().join("s").display().to_string();
    for args in [
        vec![
            "run",
            "-c",
            config.to_str().unwrap(),
            "--http.listen",
            &listen,
        ],
        vec!["ui", "--addr", &listen, "--staging", &staging],
    ] {
        let (code, stderr) = exit_within(&args, Duration::from_secs(30));
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--http.auth-file"), "{args:?}: {stderr}");
    }

    // With the credentials in a file: served, auth on every route but /health.
    let auth = dir.path().join("http-auth");
    std::fs::write(&auth, "admin:s3cret-pw\n").unwrap();
    let server = Server::start_path(
        spillway_bin(),
        port,
        tempfile::tempdir().unwrap(),
        vec![
            "run".into(),
            "-c".into(),
            config.display().to_string(),
            "--http.listen".into(),
            listen,
            "--http.auth-file".into(),
            auth.display().to_string(),
        ],
    );
    server.wait_ready("/health");
    let url = server.url();
    let (code, _) = curl_status(&[], &format!("{url}/api/v1/rules"));
    assert_eq!(code, 401);
    let (code, _) = curl_status(&["-u", "admin:s3cret-pw"], &format!("{url}/api/v1/rules"));
    assert_eq!(code, 200);
    let (code, _) = curl_status(&[], &format!("{url}/health"));
    assert_eq!(code, 200, "probes need no credentials");
    let ps = std::fs::read_to_string(format!("/proc/{}/cmdline", server.pid().unwrap())).unwrap();
    assert!(!ps.contains("s3cret-pw"));
    assert!(!server.log().contains("s3cret-pw"), "{}", server.log());
}
