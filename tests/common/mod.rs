//! Real servers for integration tests: victoria-metrics, vmauth, vmagent,
//! vmalert and prometheus from Debian's packages, each on a free loopback
//! port with its own temp data dir, stopped on drop (also when a test panics).
//! A missing binary fails the test with the command that installs it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn spillway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spillway"))
}

/// A port nobody listens on. Picked at random below the kernel's ephemeral
/// range (which outgoing connections and `bind(0)` in other test processes
/// use), never handed out twice by this process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = 10_000 + (fastrand::u16(..) % 20_000);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port found in 10000..30000");
}

fn require_binary(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed. The integration tests run against real servers: \
         run scripts/test.sh (it installs them) or `apt-get install -y victoria-metrics prometheus`."
    );
}

/// A child process that is killed and reaped on drop; its output goes to a log file.
pub struct Server {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    binary: PathBuf,
}

impl Server {
    pub fn start(binary: &str, port: u16, args: Vec<String>) -> Server {
        Self::start_in(binary, port, tempfile::tempdir().expect("temp dir"), args)
    }

    /// Starts with a prepared temp dir; `{dir}` in `args` stands for its path.
    pub fn start_in(binary: &str, port: u16, dir: tempfile::TempDir, args: Vec<String>) -> Server {
        Self::start_path(require_binary(binary), port, dir, args)
    }

    /// Starts a binary given by path (e.g. the spillway under test).
    pub fn start_path(
        binary: PathBuf,
        port: u16,
        dir: tempfile::TempDir,
        args: Vec<String>,
    ) -> Server {
        let d = dir.path().display().to_string();
        let args = args.into_iter().map(|a| a.replace("{dir}", &d)).collect();
        let mut server = Server {
            name: binary.file_name().unwrap().to_string_lossy().into_owned(),
            port,
            dir,
            child: None,
            args,
            binary,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the process (SIGKILL) and keeps its data dir.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `timeout` for it;
    /// returns its exit code, or kills it and panics after the timeout.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within {timeout:?} of SIGTERM; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts again with the same arguments and data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn wait_ready(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}{}", self.url(), path);
        while Instant::now() < deadline {
            if let Ok(out) = curl(&["-sf", "-o", "/dev/null", &url]) {
                if out.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} did not become ready at {url}; log:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Tests talk HTTP through curl so that they do not depend on the code under test.
pub fn curl(args: &[&str]) -> std::io::Result<Output> {
    Command::new("curl").args(args).output()
}

pub fn http_get(url: &str) -> String {
    let out = curl(&["-sS", "--fail-with-body", url]).expect("curl");
    assert!(
        out.status.success(),
        "GET {url} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn http_post(url: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    let out = curl(&[
        "-sS",
        "--fail-with-body",
        "-X",
        "POST",
        "--data-binary",
        &data,
        url,
    ])
    .expect("curl");
    assert!(
        out.status.success(),
        "POST {url} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A single-node VictoriaMetrics.
pub struct Vm {
    pub server: Server,
    /// `-http.pathPrefix`, e.g. `/select/0` to look like a cluster vmselect.
    pub prefix: String,
}

impl Vm {
    pub fn start() -> Vm {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Vm {
        let port = free_port();
        let mut args = vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-storageDataPath={dir}/data".into(),
            "-retentionPeriod=100y".into(),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=WARN".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let prefix = extra
            .iter()
            .find_map(|a| a.strip_prefix("-http.pathPrefix="))
            .unwrap_or("")
            .to_string();
        let server = Server::start("victoria-metrics", port, args);
        server.wait_ready(&format!("{prefix}/health"));
        Vm { server, prefix }
    }

    pub fn url(&self) -> String {
        format!("{}{}", self.server.url(), self.prefix)
    }

    /// Imports JSON lines and makes them searchable at once.
    pub fn import(&self, lines: &str) {
        http_post(&format!("{}/api/v1/import", self.url()), lines.as_bytes());
        self.flush();
    }

    pub fn flush(&self) {
        http_get(&format!("{}/internal/force_flush", self.url()));
    }

    /// `/api/v1/export` lines for `selector`, sorted, for comparisons.
    pub fn export_lines(&self, selector: &str) -> Vec<String> {
        self.flush();
        let url = format!(
            "{}/api/v1/export?match[]={}",
            self.url(),
            urlencode(selector)
        );
        let mut lines: Vec<String> = http_get(&url).lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// What `read` makes of [`Vm::export_lines`], looked at again every
    /// 500 ms (for up to 10 s) until `complete` accepts it; the last look
    /// either way. For checks right after a burst: VictoriaMetrics 1.79 has
    /// answered an export just after `/internal/force_flush` without whole
    /// series (34 of 100) that its own counters said were created and
    /// stored, and with all of them 500 ms later.
    pub fn export_until<T>(
        &self,
        selector: &str,
        read: impl Fn(&[String]) -> T,
        complete: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = read(&self.export_lines(selector));
            if complete(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// [`distinct_points`] of the export, by [`Vm::export_until`].
    pub fn distinct_points_until(
        &self,
        selector: &str,
        complete: impl Fn(&std::collections::BTreeSet<(String, i64)>) -> bool,
    ) -> std::collections::BTreeSet<(String, i64)> {
        self.export_until(selector, distinct_points, complete)
    }

    pub fn series_count(&self, selector: &str) -> usize {
        self.export_lines(selector).len()
    }
}

/// A vmauth in front of other servers, configured with `config_yaml`.
pub struct VmAuth {
    pub server: Server,
}

impl VmAuth {
    pub fn start(config_yaml: &str) -> VmAuth {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("auth.yml"), config_yaml).unwrap();
        let args = vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-auth.config={dir}/auth.yml".into(),
            "-loggerLevel=WARN".into(),
        ];
        let server = Server::start_in("vmauth", port, dir, args);
        server.wait_ready("/health");
        VmAuth { server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `/api/v1/import` JSON lines: one series per (labels, samples).
pub fn vm_line(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> String {
    let metric: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let timestamps: Vec<i64> = samples.iter().map(|s| s.0).collect();
    serde_json::json!({"metric": metric, "values": values, "timestamps": timestamps}).to_string()
}

/// Runs the spillway binary and returns its output; prints everything on failure to help debugging.
pub struct Run {
    pub output: Output,
    pub command: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "{}", self.describe());
        self
    }
}

pub fn spillway(args: &[&str]) -> Run {
    spillway_in(None, args)
}

pub fn spillway_in(cwd: Option<&Path>, args: &[&str]) -> Run {
    spillway_env(cwd, &[], args)
}

/// `spillway_in` with extra environment variables.
pub fn spillway_env(cwd: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = Command::new(spillway_bin());
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let output = cmd.output().expect("run spillway");
    Run {
        output,
        command: format!("spillway {}", args.join(" ")),
    }
}

/// A vmagent on a free port; `extra` are its flags (`-remoteWrite.url=...`).
/// Its queue lives in its temp dir; data is pushed to its `/api/v1/import`.
pub struct Vmagent {
    pub server: Server,
}

impl Vmagent {
    /// `files` are written into its temp dir first; `{dir}` in `extra` is that dir.
    pub fn start(files: &[(&str, &str)], extra: &[String]) -> Vmagent {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut args = vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-remoteWrite.tmpDataPath={dir}/queue".into(),
            "-loggerLevel=WARN".into(),
        ];
        args.extend(extra.iter().cloned());
        let server = Server::start_in("vmagent", port, dir, args);
        server.wait_ready("/health");
        Vmagent { server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// `spillway run` with a config written into its temp dir (`{dir}` in the
/// config text stands for that dir, e.g. `storage: {path: "{dir}/data"}`).
pub struct SpillwayRun {
    pub server: Server,
}

impl SpillwayRun {
    pub fn start(config: &str) -> SpillwayRun {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra: &[&str]) -> SpillwayRun {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let text = config.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(dir.path().join("run.yml"), text).unwrap();
        let mut args = vec![
            "run".to_string(),
            "-c".into(),
            "{dir}/run.yml".into(),
            "--http.listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = Server::start_path(spillway_bin(), port, dir, args);
        server.wait_ready("/health");
        SpillwayRun { server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn restart(&mut self) {
        self.server.restart();
        self.server.wait_ready("/health");
    }

    /// `/api/v1/destinations`, by destination name.
    pub fn destinations(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let text = http_get(&format!("{}/api/v1/destinations", self.url()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["data"]["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["name"].as_str().unwrap().to_string(), d.clone()))
            .collect()
    }

    /// One value from `/metrics`: `name{labels}` exactly as rendered
    /// (labels in any order are matched as a set); 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = http_get(&format!("{}/metrics", self.url()));
        metric_value(&text, name, labels).unwrap_or(0.0)
    }

    /// Waits (bounded) until every destination has nothing pending.
    pub fn wait_delivered(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ds = self.destinations();
            if ds.values().all(|d| d["pending_samples"] == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "destinations still pending after {timeout:?}: {ds:?}\nlog:\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Finds `name{a="b",...}` in Prometheus text output.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        let count = rest.matches("=\"").count();
        if all && count == labels.len() {
            return value.parse().ok();
        }
    }
    None
}

/// `(labels without order, timestamp)` pairs in export lines: what a
/// destination holds, duplicates (at-least-once) folded.
pub fn distinct_points(lines: &[String]) -> std::collections::BTreeSet<(String, i64)> {
    let mut out = std::collections::BTreeSet::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let metric: std::collections::BTreeMap<String, String> =
            serde_json::from_value(v["metric"].clone()).unwrap();
        let key = format!("{metric:?}");
        for t in v["timestamps"].as_array().unwrap() {
            out.insert((key.clone(), t.as_i64().unwrap()));
        }
    }
    out
}

/// POSTs `body` and returns the HTTP status (0 when there was no answer,
/// e.g. connection refused) and the answer's body.
pub fn post_status(url: &str, body: &[u8]) -> (u16, String) {
    use std::io::Write;
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "30",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            "@-",
            url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), answer.to_string())
}

/// A destination that no real server can play: answers every request with
/// `status` and `body` after `delay`, counting requests. Runs on its own
/// runtime thread; stops on drop.
pub struct FakeDestination {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeDestination {
    pub fn start(status: u16, body: &'static str, delay: Duration) -> FakeDestination {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counter = std::sync::Arc::clone(&requests);
        let app = axum::Router::new().fallback(move || {
            let counter = std::sync::Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        });
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeDestination {
            url,
            requests,
            _runtime: runtime,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Waits (bounded) for `cond`, panicking with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Server {
    /// Stops the process with SIGTERM and waits (up to 20 s, then SIGKILL):
    /// VictoriaMetrics finishes the requests in flight and flushes what it
    /// acknowledged, which SIGKILL would lose. Keeps the data dir.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again after a stop, with the same arguments and data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.spawn();
    }
}

/// What [`Proxy`] does besides forwarding.
#[derive(Clone, Debug, Default)]
pub struct ProxyRules {
    /// Strip `/select/<tenant>/prometheus` from paths, as a cluster vmselect
    /// would serve them: makes a single node answer the cluster URL form.
    pub strip_cluster_prefix: bool,
    /// Break the answer of this export request (1-based, JSON or native):
    /// half of the body, then the connection is cut.
    pub break_export: Option<usize>,
    /// Hold every export request after this many (counted on arrival) until
    /// [`Proxy::release_exports`]: a job stays mid-export for as long as a
    /// test needs.
    pub hold_exports_after: Option<usize>,
    /// Answer `/api/v1/export/native` with a body that is no native export
    /// (a whole, well-ended answer of the wrong kind).
    pub garble_native: bool,
}

/// A tiny HTTP forwarder for what no real server here can do (there is no
/// cluster vmselect in Debian's package, and faults must be injected on
/// purpose). Stopped on drop.
pub struct Proxy {
    pub port: u16,
    pub export_requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hold: ExportHold,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    rules: ProxyRules,
    http: reqwest::Client,
    exports: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hold: ExportHold,
}

/// Export requests arrived and held, and the switch that lets them go.
#[derive(Clone)]
struct ExportHold {
    arrived: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub fn start(upstream: &str, rules: ProxyRules) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let exports = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hold = ExportHold {
            arrived: Default::default(),
            held: Default::default(),
            released: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        };
        // reqwest is built without a TLS crypto provider; pick ring as spillway does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            rules,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            exports: exports.clone(),
            hold: hold.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .fallback(proxy_forward)
                    .with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Proxy {
            port,
            export_requests: exports,
            hold,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Export requests waiting for [`release_exports`](Self::release_exports).
    pub fn held_exports(&self) -> usize {
        self.hold.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets held export requests (and every later one) through.
    pub fn release_exports(&self) {
        self.hold.released.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn proxy_forward(
    axum::extract::State(st): axum::extract::State<ProxyState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let method = req.method().clone();
    let mut path = req.uri().path().to_string();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    if st.rules.strip_cluster_prefix {
        let parts: Vec<&str> = path.splitn(5, '/').collect();
        // ["", "select", "<tenant>", "prometheus", rest]
        if parts.len() == 5 && parts[1] == "select" && parts[3] == "prometheus" {
            path = format!("/{}", parts[4]);
        }
    }
    if is_export(&path) {
        use std::sync::atomic::Ordering;
        let n = st.hold.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        if st.rules.hold_exports_after.is_some_and(|after| n > after) {
            st.hold.held.fetch_add(1, Ordering::SeqCst);
            let mut rx = st.hold.released.subscribe();
            let _ = rx.wait_for(|r| *r).await;
            st.hold.held.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let content_type = req.headers().get("content-type").cloned();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut up = st
        .http
        .request(method, format!("{}{path}{query}", st.upstream))
        .body(body);
    if let Some(ct) = content_type {
        up = up.header("content-type", ct);
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap_or_default();
    if st.rules.garble_native && path.ends_with("/api/v1/export/native") {
        let junk = vec![0xffu8; 64];
        return (axum::http::StatusCode::OK, junk).into_response();
    }
    if is_export(&path) {
        let n = st.exports.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if st.rules.break_export == Some(n) {
            use futures_util::StreamExt;
            let half = bytes.slice(..bytes.len() / 2);
            // The cut comes after the half has left: a fault ready at once
            // would let the server drop the answer before its head.
            let cut = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("injected fault: connection cut"))
            });
            let parts =
                futures_util::stream::once(async { Ok::<_, std::io::Error>(half) }).chain(cut);
            return axum::response::Response::builder()
                .status(200)
                .body(axum::body::Body::from_stream(parts))
                .unwrap();
        }
    }
    (status, bytes).into_response()
}

/// `/api/v1/export`, JSON lines or native blocks.
fn is_export(path: &str) -> bool {
    path.ends_with("/api/v1/export") || path.ends_with("/api/v1/export/native")
}

/// Every series of `/api/v1/export` for `selector`: canonical label JSON → samples.
pub fn export_map(
    url: &str,
    selector: &str,
) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    let out = curl(&[
        "-sS",
        "--fail-with-body",
        &format!("{url}/api/v1/export"),
        "--data-urlencode",
        &format!("match[]={selector}"),
    ])
    .expect("curl");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut map = std::collections::BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let metric: std::collections::BTreeMap<String, String> =
            serde_json::from_value(v["metric"].clone()).unwrap();
        let ts: Vec<i64> = serde_json::from_value(v["timestamps"].clone()).unwrap();
        let vals: Vec<f64> = serde_json::from_value(v["values"].clone()).unwrap();
        let entry: &mut Vec<(i64, f64)> = map
            .entry(serde_json::to_string(&metric).unwrap())
            .or_default();
        entry.extend(ts.into_iter().zip(vals));
    }
    for v in map.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    map
}

/// A Prometheus with the remote-write receiver on (data arrives that way).
pub struct Prometheus {
    pub server: Server,
}

impl Prometheus {
    pub fn start() -> Prometheus {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  scrape_interval: 1h\n",
        )
        .unwrap();
        let args = vec![
            "--config.file={dir}/prometheus.yml".into(),
            "--storage.tsdb.path={dir}/data".into(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
            "--log.level=warn".into(),
        ];
        let server = Server::start_in("prometheus", port, dir, args);
        server.wait_ready("/-/ready");
        Prometheus { server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Sends a remote-write body (snappy-compressed protobuf).
    pub fn remote_write(&self, body: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body");
        std::fs::write(&file, body).unwrap();
        let out = curl(&[
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            "-H",
            "Content-Encoding: snappy",
            "-H",
            "Content-Type: application/x-protobuf",
            "-H",
            "X-Prometheus-Remote-Write-Version: 0.1.0",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{}/api/v1/write", self.url()),
        ])
        .expect("curl");
        assert!(
            out.status.success(),
            "remote write failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
impl SpillwayRun {
    /// `spillway run -c {dir}/run.yml` with `files` (`run.yml` among them,
    /// rule files beside it) written into its temp dir first; `{dir}` in
    /// any file stands for that dir.
    pub fn start_files(files: &[(&str, &str)], extra: &[&str]) -> SpillwayRun {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), files);
        let mut args = vec![
            "run".to_string(),
            "-c".into(),
            "{dir}/run.yml".into(),
            "--http.listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = Server::start_path(spillway_bin(), port, dir, args);
        server.wait_ready("/health");
        SpillwayRun { server }
    }

    /// Writes (replaces) files in its dir, `{dir}` expanded.
    pub fn write(&self, files: &[(&str, &str)]) {
        write_files(self.server.dir.path(), files);
    }

    /// `/api/v1/rules` as JSON.
    pub fn rules(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(&format!("{}/api/v1/rules", self.url()))).unwrap()
    }

    /// `/metrics` text.
    pub fn metrics_text(&self) -> String {
        http_get(&format!("{}/metrics", self.url()))
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.server.pid().expect("running").to_string();
        let ok = Command::new("kill")
            .args([format!("-{name}").as_str(), pid.as_str()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {pid}");
    }
}

/// Writes `files` under `dir` (creating directories), `{dir}` expanded.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    let d = dir.display().to_string();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text.replace("{dir}", &d)).unwrap();
    }
}

/// The series a VictoriaMetrics holds for `selector`: `name{a="b", ...}`
/// (labels sorted) → `(timestamp, value or "stale")`, sorted by time,
/// duplicates folded.
pub fn series_points(
    vm: &Vm,
    selector: &str,
) -> std::collections::BTreeMap<String, Vec<(i64, String)>> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, String>> =
        Default::default();
    for line in vm.export_lines(selector) {
        // VictoriaMetrics 1.79 writes a stale marker as `null` or as a bare `NaN`.
        let json = line.replace("NaN", "null");
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("export line {line:?}: {e}"));
        let mut metric: std::collections::BTreeMap<String, String> =
            serde_json::from_value(v["metric"].clone()).unwrap();
        let name = metric.remove("__name__").unwrap_or_default();
        let rest: Vec<String> = metric.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let key = format!("{name}{{{}}}", rest.join(", "));
        let entry = out.entry(key).or_default();
        for (t, x) in v["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["values"].as_array().unwrap())
        {
            let x = if x.is_null() {
                "stale".to_string()
            } else {
                x.to_string()
            };
            entry.insert(t.as_i64().unwrap(), x);
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}
