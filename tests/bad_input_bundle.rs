//! Bad input to `spillway gather` and `spillway import` (issue #14). Every
//! case runs the binary and expects a clear message, exit code 2, no
//! panic, bounded memory and nothing left behind. Range and size checks
//! come before any request, so the server URL is never contacted.

mod bounded;

use bounded::Scratch;

const URL: &str = "http://127.0.0.1:9";

/// #14.2: `gather --since 10000y` grew to 16 GB in 30 s planning windows.
#[test]
fn gather_refuses_ranges_out_of_bounds() {
    let s = Scratch::new(&[]);
    let gather = |extra: &[&str]| {
        let mut args = vec!["gather", "--url", URL, "--out", "out"];
        args.extend_from_slice(extra);
        s.run(&args)
    };
    gather(&["--since", "10000y"]).refused(
        2,
        &["--since: 10000y before", "before 1970-01-01T00:00:00Z"],
    );
    gather(&["--from", "now-10000y"]).refused(2, &["--from", "before 1970-01-01T00:00:00Z"]);
    gather(&["--from", "0", "--to", "9223372036854775807"])
        .refused(2, &["--to", "after 9999-12-31T23:59:59.999Z"]);
    // Within 1970..9999, but more windows than any gather should make.
    gather(&[
        "--from",
        "0",
        "--to",
        "9999-12-31T23:59:59Z",
        "--batch-window",
        "5m",
    ])
    .refused(
        2,
        &[
            "in windows of 5m",
            "more than the 100,000 allowed",
            "shorten the range or use a longer batch window",
        ],
    );
    gather(&["--since", "1h", "--step", "0s"]).refused(2, &["--step: must be greater than zero"]);
    gather(&["--since", "1h", "--batch-window", "1e30"])
        .refused(2, &["--batch-window", "invalid duration"]);
}

/// #14.3: `.sha256` files are read with a cap (`/dev/zero` beside a bundle).
#[test]
fn checksum_files_are_capped() {
    let line = br#"{"metric":{"__name__":"up"},"values":[1],"timestamps":[1700000000000]}"#;
    let s = Scratch::new(&[("b.jsonl", line)]);
    std::os::unix::fs::symlink("/dev/zero", s.path().join("b.jsonl.sha256")).unwrap();
    let s = s.adopt();
    s.run(&["gather", "--verify", "b.jsonl"]).refused(
        2,
        &["b.jsonl.sha256 is larger than 64KiB, the most spillway reads from a .sha256 file"],
    );
    s.run(&["import", "b.jsonl", "--url", URL, "--dry-run"])
        .refused(2, &["b.jsonl.sha256 is larger than 64KiB"]);
}

/// Sizes are parsed one way (`model::size`) and bounded; points outside
/// 1970..9999 would make the `--shift-to-now` arithmetic wrap.
#[test]
fn import_refuses_absurd_sizes_and_timestamps() {
    let far =
        br#"{"metric":{"__name__":"up"},"values":[1,2],"timestamps":[-5000,900000000000000000]}"#;
    let s = Scratch::new(&[("far.jsonl", far)]);
    s.run(&["import", "far.jsonl", "--url", URL, "--chunk-size", "1TiB"])
        .refused(2, &["--chunk-size 1TiB is outside 1KiB .. 64MiB"]);
    s.run(&[
        "import",
        "far.jsonl",
        "--url",
        URL,
        "--chunk-size",
        "99999999999999999999TiB",
    ])
    .refused(2, &["--chunk-size", "invalid size"]);
    // Request bodies in flight are bounded, whatever the two flags say.
    s.run(&[
        "import",
        "far.jsonl",
        "--url",
        URL,
        "--chunk-size",
        "64MiB",
        "--concurrency",
        "64",
    ])
    .refused(2, &["--concurrency 64 × --chunk-size 64MiB", "in flight"]);
    s.run(&["import", "far.jsonl", "--url", URL, "--concurrency", "65"])
        .refused(2, &["--concurrency"]);
    s.run(&[
        "import",
        "far.jsonl",
        "--url",
        URL,
        "--dry-run",
        "--shift-to-now",
    ])
    .refused(
        2,
        &[
            "far.jsonl",
            "outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z",
        ],
    );
}

/// #14.3: an import state file is read with a cap.
#[test]
fn import_state_is_capped() {
    let line = br#"{"metric":{"__name__":"up"},"values":[1],"timestamps":[1700000000000]}"#;
    let s = Scratch::new(&[("b.jsonl", line)]);
    std::os::unix::fs::symlink("/dev/zero", s.path().join("b.jsonl.import-state.json")).unwrap();
    let s = s.adopt();
    s.run(&["import", "b.jsonl", "--url", URL, "--resume"])
        .refused(2, &["b.jsonl.import-state.json is larger than 32MiB"]);
}
