//! Bad input to `spillway ui`'s export API (issue #14, item 2): one
//! unauthenticated `POST /api/export/start` with `{"since":"10000y"}` made
//! the server grow by half a gigabyte a second. The range is now read as
//! every command reads it: refused with 400 and the field named, and a
//! range within bounds but too long to fetch fails its job at once; the
//! server stays up and small. (The HTTP guard and upload limits are
//! another change's; this file covers ranges only.)

mod bounded;
mod common;

use common::{curl, free_port, spillway_bin, wait_for, Server};
use std::time::Duration;

fn start_ui() -> Server {
    let port = free_port();
    let server = Server::start_path(
        spillway_bin(),
        port,
        tempfile::tempdir().unwrap(),
        vec![
            "ui".into(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--staging".into(),
            "{dir}/staging".into(),
        ],
    );
    server.wait_ready("/");
    server
}

fn export_start(ui: &Server, range: &str) -> (u16, String) {
    let body = format!(r#"{{"connection":{{"url":"http://127.0.0.1:9"}},{range}}}"#);
    let url = format!("{}/api/export/start", ui.url());
    let out = curl(&[
        "-sS",
        "-m",
        "30",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        "-w",
        "\n%{http_code}",
        &url,
    ])
    .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), answer.to_string())
}

#[test]
fn export_ranges_are_bounded() {
    let ui = start_ui();
    let pid = ui.pid().expect("running") as i32;
    for (range, field, wanted) in [
        (
            r#""since":"10000y""#,
            "since",
            "reaches back before 1970-01-01T00:00:00Z",
        ),
        (r#""since":"99999999999y""#, "since", "longer than 10000y"),
        (
            r#""from":"now-10000y""#,
            "from",
            "before 1970-01-01T00:00:00Z",
        ),
        (
            r#""from":"0","to":"9223372036854775807""#,
            "to",
            "after 9999-12-31T23:59:59.999Z",
        ),
        (
            r#""from":"-9223372036854775808""#,
            "from",
            "before 1970-01-01T00:00:00Z",
        ),
    ] {
        let (code, body) = export_start(&ui, range);
        assert_eq!(code, 400, "{range}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let error = v["error"].as_str().unwrap_or_default().to_string() + &v.to_string();
        assert!(error.contains(&format!("{field}:")), "{range}: {body}");
        assert!(error.contains(wanted), "{range}: {body}");
    }
    // In bounds but far too long to fetch in fixed windows: the job fails
    // before it plans a window (and before it contacts the server). Without
    // a window length the plan adapts and stays within the limit by
    // construction (src/bundle/windows.rs), so the window is given here.
    let (code, body) = export_start(
        &ui,
        r#""from":"0","to":"9999-12-31T23:59:59Z","batch_window_seconds":300"#,
    );
    assert_eq!(code, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id: {body}"))
        .to_string();
    let status_url = format!("{}/api/export/status?id={id}", ui.url());
    let mut last = String::new();
    wait_for("the job to fail", Duration::from_secs(20), || {
        last = common::http_get(&status_url);
        last.contains("more than the 100,000 allowed")
    });
    // #14.13: a step in seconds past i64 milliseconds was wrapped to a
    // negative number and printed so; it saturates and is refused in words.
    let (code, body) = export_start(
        &ui,
        r#""since":"1h","metric_step_seconds":18446744073709551615"#,
    );
    assert_eq!(code, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id: {body}"))
        .to_string();
    let status_url = format!("{}/api/export/status?id={id}", ui.url());
    wait_for(
        "the job to refuse the step",
        Duration::from_secs(20),
        || {
            last = common::http_get(&status_url);
            last.contains("step: longer than 24h")
        },
    );
    assert!(!last.contains("-1000"), "{last}");
    let hwm = bounded::current_hwm_kib(pid);
    assert!(
        hwm > 0 && hwm < bounded::MAX_RSS_KIB,
        "ui peak RSS {hwm} KiB; {last}"
    );
    println!("ui peak RSS after the bad ranges: {hwm} KiB");
}
