//! The shell scripts' own logic that tests can reach without a release
//! build: `scripts/bin-path.sh`, which `scripts/demo.sh` asks where cargo
//! put the binary (issue 11, item 12: the demo ran `target/release/spillway`
//! and failed whenever `CARGO_TARGET_DIR` was set).

use std::path::Path;
use std::process::Command;

fn bin_path(target_dir: Option<&Path>) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(format!("{root}/scripts/bin-path.sh"));
    cmd.args(["release", "spillway"])
        .env_remove("CARGO_TARGET_DIR");
    if let Some(dir) = target_dir {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let out = cmd.output().expect("run scripts/bin-path.sh");
    assert!(
        out.status.success(),
        "bin-path.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_demo_finds_the_binary_where_cargo_puts_it() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        bin_path(Some(dir.path())),
        format!("{}/release/spillway", dir.path().display())
    );
    // Without the variable: the package's target directory (unless the
    // machine's cargo config moves it, which cargo metadata also reports).
    let default = bin_path(None);
    assert!(default.ends_with("/release/spillway"), "{default}");
    // demo.sh asks the script rather than guessing.
    let demo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh")).unwrap();
    assert!(demo.contains("scripts/bin-path.sh release spillway"));
    assert!(!demo.contains("target/release/spillway"));
}
