//! Signals, temp files and closed pipes, through the binary (issue #14
//! item 10): SIGTERM (what cron, systemd and Kubernetes send) stops a command
//! like Ctrl-C, removing its partial output and exiting 130; temp files a
//! dead run left are removed at the next start; a reader that went away
//! (`| head -1`) ends the command quietly with 0.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Waits for `child` to exit (bounded) and returns its exit code (`None`
/// when a signal ended it) and its stderr, written to `stderr_file`.
fn wait_exit(child: &mut Child, stderr_file: &Path, timeout: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(stderr_file).unwrap_or_default();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "spillway did not exit within {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(stderr_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A VictoriaMetrics frozen with SIGSTOP: it accepts connections (the
/// kernel does) and never answers, so a command talking to it is stuck
/// mid-run for as long as the test likes. Thawed on drop.
struct Frozen<'a>(&'a Vm);

impl<'a> Frozen<'a> {
    fn new(vm: &'a Vm) -> Self {
        kill("STOP", vm.server.pid().unwrap());
        Frozen(vm)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.0.server.pid() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

fn export_args(vm: &Vm, out: &Path) -> Vec<String> {
    [
        "export",
        "--url",
        &vm.url(),
        "--query",
        "cpu_usage_percent",
        "--since",
        "2h",
        "--step",
        "1m",
        "--format",
        "csv,json,jsonl,parquet",
        "--out",
        &out.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// `signal` while the export waits for its first answer, its output files
/// open under temp names: it must exit 130 and leave nothing in `--out`.
fn signal_mid_export(signal: &str) {
    let vm = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stderr_file = dir.path().join("stderr");
    let frozen = Frozen::new(&vm);
    let mut child = Command::new(spillway_bin())
        .args(export_args(&vm, &out))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "the export's temp files in --out",
        Duration::from_secs(30),
        || {
            out.is_dir()
                && entries(&out)
                    .iter()
                    .any(|n| n.starts_with(".samples_") && n.contains(".csv.tmp."))
        },
    );
    kill(signal, child.id());
    let (code, stderr) = wait_exit(&mut child, &stderr_file, Duration::from_secs(30));
    drop(frozen);
    assert_eq!(code, Some(130), "{signal}: exit code; stderr:\n{stderr}");
    assert!(
        entries(&out).is_empty(),
        "{signal} left files in --out: {:?}\nstderr:\n{stderr}",
        entries(&out)
    );
    assert!(stderr.contains("no partial output was kept"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sigterm_mid_export_removes_partial_files_and_exits_130() {
    signal_mid_export("TERM");
}

#[test]
fn sigint_mid_export_removes_partial_files_and_exits_130() {
    signal_mid_export("INT");
}

/// A pid no process has: a child that already ended.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is alive"
    );
    pid
}

#[test]
fn temp_files_of_a_dead_run_are_removed_at_the_next_export() {
    let vm = Vm::start();
    let now = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let samples: Vec<(i64, f64)> = (1..60).map(|i| (now - i * 60_000, i as f64)).collect();
    vm.import(&vm_line(
        &[("__name__", "cpu_usage_percent"), ("host", "a")],
        &samples,
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // What a `kill -9` mid-export leaves: temp files named after a dead pid.
    let dead = dead_pid();
    let stale = [
        format!(".samples_20240101T000000.000Z.csv.tmp.{dead}.0"),
        format!(".alerts_20240101T000000.000Z.csv.tmp.{dead}.1"),
        format!(".summary_20240101T000000.000Z.json.tmp.{dead}.7"),
    ];
    // A live writer's temp file (this test process holds its lock), and
    // files that only look alike: all must stay.
    let live = format!(".samples_x.csv.tmp.{}.0", std::process::id());
    let others = ["notes.tmp", ".cache.tmp", "keep.csv.tmp.1.0"];
    for name in stale
        .iter()
        .chain([&live])
        .map(String::as_str)
        .chain(others)
    {
        std::fs::write(out.join(name), "partial").unwrap();
    }
    let held = std::fs::File::open(out.join(&live)).unwrap();
    held.try_lock().unwrap();

    let args = export_args(&vm, &out);
    let run = spillway(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run.assert_code(0);
    let left = entries(&out);
    for name in &stale {
        assert!(!left.contains(name), "{name} was not removed: {left:?}");
    }
    for name in [live.as_str()].into_iter().chain(others) {
        assert!(
            left.iter().any(|n| n == name),
            "{name} was removed: {left:?}"
        );
    }
    assert!(
        left.iter()
            .any(|n| n.starts_with("samples_") && n.ends_with(".csv")),
        "{left:?}"
    );
}

#[test]
fn incremental_state_is_locked_while_an_export_uses_it() {
    let vm = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let stderr_file = dir.path().join("stderr");
    let frozen = Frozen::new(&vm);
    let mut args = export_args(&vm, &dir.path().join("out1"));
    args.extend(["--incremental".to_string(), state.display().to_string()]);
    let mut first = Command::new(spillway_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let lock = PathBuf::from(format!("{}.lock", state.display()));
    wait_for("the state lock", Duration::from_secs(30), || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == first.id().to_string())
    });
    let mut args = export_args(&vm, &dir.path().join("out2"));
    args.extend(["--incremental".to_string(), state.display().to_string()]);
    let second = spillway(&args.iter().map(String::as_str).collect::<Vec<_>>());
    kill("TERM", first.id());
    let (code, stderr) = wait_exit(&mut first, &stderr_file, Duration::from_secs(30));
    drop(frozen);
    second.assert_code(2);
    assert!(
        second.stderr().contains("is in use by another export")
            && second.stderr().contains(&format!("process {}", first.id())),
        "{}",
        second.describe()
    );
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!state.exists(), "an interrupted run saved its state");
}

/// Runs spillway with stdout a pipe whose reader is gone, as after
/// `spillway ... | head -1` once head exited: every write fails with EPIPE.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(spillway_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn assert_quiet_exit(args: &[&str]) {
    let out = with_closed_stdout(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "spillway {} with a closed stdout; stderr:\n{stderr}",
        args.join(" ")
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

#[test]
fn relabel_into_a_closed_pipe_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relabel.yml");
    std::fs::write(
        &cfg,
        "- {source_labels: [a], target_label: b}\n- {action: labeldrop, regex: a}\n",
    )
    .unwrap();
    assert_quiet_exit(&[
        "relabel",
        "--config",
        &cfg.display().to_string(),
        "--labels",
        r#"{__name__="m", a="x"}"#,
    ]);
}

#[test]
fn gather_discover_into_a_closed_pipe_exits_0() {
    let vm = Vm::start();
    let now = chrono::Utc::now().timestamp_millis() / 1000 * 1000;
    let mut lines = String::new();
    for job in ["api", "db", "cache"] {
        lines.push_str(&vm_line(
            &[
                ("__name__", "up"),
                ("job", job),
                ("instance", "10.0.0.1:9100"),
            ],
            &[(now - 60_000, 1.0), (now - 30_000, 1.0)],
        ));
        lines.push('\n');
    }
    vm.import(&lines);
    assert_quiet_exit(&["gather", "--url", &vm.url(), "--since", "10m", "--discover"]);
}

#[test]
fn rules_preview_into_a_closed_pipe_exits_0() {
    let vm = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            (
                "run.yml",
                &format!(
                    "datasource: {{url: '{0}'}}
rule_files: ['{{dir}}/rules.yml']
storage: {{path: '{{dir}}/queues'}}
destinations:
  - name: a
    url: {0}/api/v1/write
",
                    vm.url()
                ),
            ),
            (
                "rules.yml",
                "groups:\n- name: g\n  rules:\n  - record: 'one:const'\n    expr: vector(1)\n",
            ),
        ],
    );
    assert_quiet_exit(&[
        "rules",
        "preview",
        "-c",
        &dir.path().join("run.yml").display().to_string(),
    ]);
}

#[test]
fn sigterm_stops_a_gather_waiting_on_its_server_with_130() {
    let vm = Vm::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stderr_file = dir.path().join("stderr");
    let frozen = Frozen::new(&vm);
    let mut child = Command::new(spillway_bin())
        .args(["gather", "--url", &vm.url(), "--since", "10m", "--out"])
        .arg(&out)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    // Stuck on its first request to the frozen server.
    wait_for("gather's first connection", Duration::from_secs(30), || {
        connected_to(vm.server.port)
    });
    kill("TERM", child.id());
    let (code, stderr) = wait_exit(&mut child, &stderr_file, Duration::from_secs(30));
    drop(frozen);
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("SIGTERM: stopped"), "{stderr}");
    let left: Vec<String> = if out.is_dir() {
        entries(&out)
    } else {
        Vec::new()
    };
    assert!(
        left.iter().all(|n| !n.contains(".tmp.")),
        "temp files left: {left:?}"
    );
}

/// Whether some connection to 127.0.0.1:`port` is established (the kernel
/// completes the handshake even for a stopped server): `/proc/net/tcp`.
fn connected_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[2] == remote && f[3] == "01"
    })
}

#[test]
fn a_second_ui_on_one_staging_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    let port = free_port();
    let mut first = Server::start_path(
        spillway_bin(),
        port,
        tempfile::tempdir().unwrap(),
        vec![
            "ui".into(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--staging".into(),
            staging.display().to_string(),
        ],
    );
    first.wait_ready("/health");
    // Bounded: without the lock it would serve on its own port for ever.
    let stderr_file = dir.path().join("stderr");
    let mut second = Command::new(spillway_bin())
        .args([
            "ui",
            "--addr",
            &format!("127.0.0.1:{}", free_port()),
            "--staging",
        ])
        .arg(&staging)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let (code, stderr) = wait_exit(&mut second, &stderr_file, Duration::from_secs(20));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("in use by another spillway ui"), "{stderr}");
    // The first stops gracefully on SIGTERM.
    assert_eq!(first.terminate(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_closed_stdout_does_not_hide_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &good,
        "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n",
    )
    .unwrap();
    std::fs::write(&bad, "groups:\n- name: g\n  rules:\n  - recrd: a\n").unwrap();
    let out = with_closed_stdout(&[
        "rules",
        "check",
        &good.display().to_string(),
        &bad.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.yml:4"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
