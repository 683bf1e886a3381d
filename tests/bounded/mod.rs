//! Running the spillway binary on bad input and holding it to the promise
//! of issue #14: a clear message, the documented exit code, no panic or
//! abort, bounded memory, nothing left behind.
//!
//! The child's peak resident memory is exact: it is reaped with `wait4`,
//! whose `rusage` holds that child's `ru_maxrss` alone (not other tests'
//! children, as `RUSAGE_CHILDREN` would when tests share a process). While
//! it runs, `/proc/<pid>/status` is polled so that a child growing past
//! [`KILL_KIB`] is killed instead of taking the machine with it.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most a bad-input case may use. A debug build needs about 20 MiB to
/// start; the defects of #14 grew to gigabytes.
pub const MAX_RSS_KIB: u64 = 128 * 1024;
/// A child past this is killed at once (and the case fails).
const KILL_KIB: u64 = 1024 * 1024;
/// A case that runs longer failed (and is killed).
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Outcome {
    pub command: String,
    /// The exit code, or 128 + the signal that ended the process.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_kib: u64,
}

impl Outcome {
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {}\npeak RSS: {} KiB\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.peak_rss_kib, self.stdout, self.stderr
        )
    }

    /// The contract of a refused input: exit `code`, a message on stderr
    /// that contains every one of `wanted`, no panic, bounded memory.
    pub fn refused(&self, code: i32, wanted: &[&str]) -> &Self {
        assert_eq!(self.code, code, "{}", self.describe());
        for w in wanted {
            assert!(
                self.stderr.contains(w),
                "stderr lacks {w:?}\n{}",
                self.describe()
            );
        }
        self.no_panic().bounded()
    }

    pub fn no_panic(&self) -> &Self {
        for bad in [
            "panicked",
            "RUST_BACKTRACE",
            "overflowed its stack",
            "fatal runtime error",
        ] {
            assert!(!self.stderr.contains(bad), "{bad}\n{}", self.describe());
        }
        assert!(self.code < 128, "killed by a signal\n{}", self.describe());
        self
    }

    pub fn bounded(&self) -> &Self {
        assert!(
            self.peak_rss_kib <= MAX_RSS_KIB,
            "peak RSS {} KiB is over the {} KiB allowed\n{}",
            self.peak_rss_kib,
            MAX_RSS_KIB,
            self.describe()
        );
        self
    }
}

pub fn spillway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spillway"))
}

/// Runs `spillway args...` in `cwd` with `stdin` as its input.
pub fn run(cwd: &Path, args: &[&str]) -> Outcome {
    run_with_input(cwd, args, b"")
}

pub fn run_with_input(cwd: &Path, args: &[&str], stdin: &[u8]) -> Outcome {
    let mut child = Command::new(spillway_bin())
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start spillway");
    let pid = child.id() as i32;
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&stdin);
    });
    let readers = [
        reader(child.stdout.take().expect("stdout")),
        reader(child.stderr.take().expect("stderr")),
    ];
    let (status, maxrss) = reap(pid);
    let _ = feeder.join();
    let [out, err] = readers.map(|r| r.join().unwrap_or_default());
    // The child is reaped by `wait4`; `Child` must not wait for it again.
    std::mem::forget(child);
    Outcome {
        command: format!("spillway {}", args.join(" ")),
        code: status,
        stdout: out,
        stderr: err,
        peak_rss_kib: maxrss,
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` on 64-bit Linux: two timevals, then fourteen longs.
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;

/// Waits for `pid`, killing it past [`KILL_KIB`] or [`TIMEOUT`]; returns
/// its exit code (128 + signal when killed) and peak RSS in KiB.
fn reap(pid: i32) -> (i32, u64) {
    let started = Instant::now();
    loop {
        let mut status = 0i32;
        let mut usage = Rusage {
            utime: Timeval { sec: 0, usec: 0 },
            stime: Timeval { sec: 0, usec: 0 },
            maxrss: 0,
            rest: [0; 13],
        };
        // SAFETY: plain syscall on our own child with valid out-pointers.
        let r = unsafe { wait4(pid, &mut status, WNOHANG, &mut usage) };
        if r == pid {
            let code = if status & 0x7f == 0 {
                (status >> 8) & 0xff
            } else {
                128 + (status & 0x7f)
            };
            return (code, usage.maxrss.max(0) as u64);
        }
        assert!(r == 0, "wait4 failed for pid {pid}");
        let rss = current_hwm_kib(pid);
        if rss > KILL_KIB || started.elapsed() > TIMEOUT {
            // SAFETY: signalling our own child.
            unsafe { kill(pid, SIGKILL) };
            let (_, peak) = reap_blocking(pid);
            panic!(
                "killed spillway (pid {pid}) after {:?} at {rss} KiB (peak {peak} KiB): it grew without bound or never ended",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn reap_blocking(pid: i32) -> (i32, u64) {
    let mut status = 0i32;
    let mut usage = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        maxrss: 0,
        rest: [0; 13],
    };
    // SAFETY: as above, blocking.
    unsafe { wait4(pid, &mut status, 0, &mut usage) };
    (status, usage.maxrss.max(0) as u64)
}

/// The peak resident memory so far of a running process, in KiB.
pub fn current_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Every file under `dir` (relative paths), to compare before and after.
pub fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

/// A temp dir holding `files`, with a check that the command left nothing new.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    before: Vec<String>,
}

impl Scratch {
    pub fn new(files_: &[(&str, &[u8])]) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, body) in files_ {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(p, body).unwrap();
        }
        let before = files(dir.path());
        Scratch { dir, before }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes what was written into the dir since as part of the scene.
    pub fn adopt(mut self) -> Scratch {
        self.before = files(self.path());
        self
    }

    /// Runs spillway here and checks that no file appeared.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let o = run(self.path(), args);
        assert_eq!(
            files(self.path()),
            self.before,
            "files left behind\n{}",
            o.describe()
        );
        o
    }
}

/// `{{ ((((...1...)))) }}` nested `n` deep.
pub fn deep_template(n: usize) -> String {
    format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n))
}

/// A vmalert rule file with one alerting rule whose label is `template`.
pub fn alert_rule_file(template: &str) -> String {
    format!(
        "groups:\n- name: g\n  interval: 1m\n  rules:\n  - alert: A\n    expr: up > 0\n    labels:\n      x: '{template}'\n"
    )
}
