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

/// A small program linked with `link/hot-code.ld`, as release builds are
/// (build.rs): the script must link, and the function it names first (the
/// probe) must land in its `.text.hot` section, ahead of `.text`.
#[test]
fn the_hot_code_linker_script_links_and_places_what_it_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let probe = build_probe(dir.path(), Some(&format!("{root}/link/hot-code.ld")));
    let out = Command::new(&probe).output().expect("run the probe");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "156");
    let hot = section_range(&probe, ".text.hot").expect("the probe has a .text.hot section");
    let text = section_range(&probe, ".text").expect("the probe has a .text section");
    let address = symbol_address(&probe, "spillway_code_layout_probe");
    assert!(
        hot.contains(&address),
        "{address:x} outside .text.hot {hot:x?}"
    );
    assert!(
        hot.end <= text.start,
        ".text.hot {hot:x?} is not before .text {text:x?}"
    );
}

/// `scripts/code-layout.py script` keeps the functions on resident pages and
/// globs what changes with the toolchain (the legacy hash), so a rebuild
/// after `cargo update` still finds them.
#[test]
fn the_layout_script_names_the_functions_on_resident_pages() {
    let dir = tempfile::tempdir().unwrap();
    let probe = build_probe(dir.path(), None);
    let main_address = symbol_address(&probe, "_ZN5probe4main17h");
    // Base 0x10000: the page of probe::main, and nothing else, is resident.
    let script = dir.path().join("hot.ld");
    layout_py("script", &script, &probe, main_address);
    let script = std::fs::read_to_string(&script).unwrap();
    assert!(
        script.contains("    *(.text._ZN5probe4main17h*)\n"),
        "{script}"
    );
    let hashed = |l: &&str| l.contains("_ZN5probe4main17h") && !l.contains("17h*)");
    assert!(
        !script.lines().any(|l| hashed(&l)),
        "the hash was kept: {script}"
    );
    assert!(script.contains("*(.text.spillway_code_layout_probe)"));
    assert!(script.trim_end().ends_with("INSERT BEFORE .text;"));
}

/// `code-layout.py extend` adds what a build linked with the script ran
/// outside `.text.hot`, and keeps what the script already named.
#[test]
fn the_layout_script_is_extended_with_what_ran_outside_it() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hot.ld");
    std::fs::copy(format!("{root}/link/hot-code.ld"), &script).unwrap();
    let probe = build_probe(dir.path(), Some(script.to_str().unwrap()));
    let main_address = symbol_address(&probe, "_ZN5probe4main17h");
    let text = section_range(&probe, ".text").unwrap();
    assert!(text.contains(&main_address), "probe::main is not in .text");
    let before = std::fs::read_to_string(&script).unwrap();
    layout_py("extend", &script, &probe, main_address);
    let after = std::fs::read_to_string(&script).unwrap();
    assert!(after.contains("    *(.text._ZN5probe4main17h*)\n"));
    // Kept in their order, and followed by the functions of that page.
    let names = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("    *("))
            .map(str::to_string)
            .collect()
    };
    let (before, after) = (names(&before), names(&after));
    assert!(after.len() > before.len());
    assert_eq!(after[..before.len()], before[..]);
}

/// Runs `scripts/code-layout.py COMMAND SCRIPT PAGES PROBE` with a page map
/// (base 0x10000) in which only the page holding `address` is resident.
fn layout_py(command: &str, script: &Path, probe: &Path, address: u64) {
    let pages = script.with_file_name("pages");
    let map = format!("MAP 10000 90000 r--p\n{:x}\n", 0x10000 + (address & !0xfff));
    std::fs::write(&pages, map).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/code-layout.py"
        ))
        .arg(command)
        .args([script, &pages, probe])
        .output()
        .expect("run scripts/code-layout.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "code-layout.py {command}: {stderr}");
}

/// The address of the first function whose name starts with `prefix`.
fn symbol_address(binary: &Path, prefix: &str) -> u64 {
    let out = tool_output("nm", "--defined-only", binary);
    let line = out
        .lines()
        .find(|l| l.split(' ').nth(2).is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("nm lists no {prefix}…"));
    u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
}

fn build_probe(dir: &Path, linker_script: Option<&str>) -> std::path::PathBuf {
    let source = dir.join("probe.rs");
    std::fs::write(
        &source,
        "#[no_mangle]\n#[inline(never)]\npub extern \"C\" fn spillway_code_layout_probe(x: u64) -> u64 {\n    x.wrapping_mul(31) ^ 7\n}\n\
         fn main() {\n    println!(\"{}\", spillway_code_layout_probe(std::hint::black_box(5)));\n}\n",
    )
    .unwrap();
    let binary = dir.join("probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "-O", "--crate-name", "probe"])
        .arg(&source)
        .arg("-o")
        .arg(&binary);
    if let Some(script) = linker_script {
        cmd.arg("-C").arg(format!("link-arg=-Wl,-T,{script}"));
    }
    let out = cmd.output().expect("run rustc");
    assert!(
        out.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

fn section_range(binary: &Path, name: &str) -> Option<std::ops::Range<u64>> {
    tool_output("readelf", "-SW", binary)
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == name)?;
            let address = u64::from_str_radix(fields.get(at + 2)?, 16).ok()?;
            let size = u64::from_str_radix(fields.get(at + 4)?, 16).ok()?;
            Some(address..address + size)
        })
}

/// What `tool flag binary` prints (binutils' nm and readelf).
fn tool_output(tool: &str, flag: &str, binary: &Path) -> String {
    let out = Command::new(tool)
        .arg(flag)
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
