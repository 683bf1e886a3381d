//! Build information for `spillway --version` and `spillway_build_info`:
//! the git commit (`git rev-parse`, or `SPILLWAY_GIT_COMMIT` for builds from
//! a tree without `.git`, else "unknown"), the build date (from
//! `SOURCE_DATE_EPOCH` when set, for reproducible builds; else now) and the
//! compiler. Reruns when HEAD or the branch it points to moves, and only
//! watches files that exist (a missing one would rebuild every time).
//!
//! Release builds for Linux also link with `link/hot-code.ld`, which puts the
//! code a running `spillway run` touches first (see `code_layout`).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=SPILLWAY_GIT_COMMIT");
    let commit = std::env::var("SPILLWAY_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            watch_git();
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_string());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SPILLWAY_GIT_COMMIT={}", commit.trim());
    println!("cargo:rustc-env=SPILLWAY_BUILD_DATE={}", rfc3339(epoch));
    println!("cargo:rustc-env=SPILLWAY_RUSTC_VERSION={rustc_version}");
    code_layout();
}

/// The kernel maps a binary's code in blocks of 16 pages or more (fault-around,
/// large page-cache folios), so a function that runs makes its neighbours
/// resident too. Laid out as the compiler leaves it, the code `run` touches
/// (about 6 MB) is spread over most of the 15 MB `.text`, and all of it
/// counts in RSS; `link/hot-code.ld` (made by `scripts/code-layout.sh`)
/// gathers it at the start. Names it no longer finds fall back to the
/// compiler's order, so a stale script costs memory, never correctness.
/// `SPILLWAY_CODE_LAYOUT=off` links without it; a path to a file links with
/// that symbol ordering instead (the script measures with a reversed one).
fn code_layout() {
    println!("cargo:rerun-if-env-changed=SPILLWAY_CODE_LAYOUT");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !release || !linux {
        return;
    }
    match std::env::var("SPILLWAY_CODE_LAYOUT").ok().as_deref() {
        Some("off") => {}
        Some(order) if !order.is_empty() => {
            println!("cargo:rerun-if-changed={order}");
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
        _ => {
            let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
            let script = Path::new(&dir).join("link/hot-code.ld");
            println!("cargo:rerun-if-changed={}", script.display());
            if script.exists() {
                println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
            }
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Reruns the build script when HEAD moves (in a worktree too).
fn watch_git() {
    let mut watched = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head);
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &reference]) {
            watched.push(p);
        }
        if let Some(p) = git(&["rev-parse", "--git-path", "packed-refs"]) {
            watched.push(p);
        }
    }
    for p in watched {
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` from unix seconds (civil-from-days, H. Hinnant).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
