//! Bad input to `spillway export`, by flags and by config file (issue #14).
//! Every case runs the binary and expects a clear message naming the flag
//! or field, exit code 2 (bad usage or config), no panic, bounded memory
//! and nothing written: the checks come before the first request, so the
//! datasource URL is never contacted.

mod bounded;

use bounded::Scratch;

const URL: &str = "http://127.0.0.1:9";

fn export(s: &Scratch, extra: &[&str]) -> bounded::Outcome {
    let mut args = vec!["export", "--url", URL, "--query", "up", "--out", "out"];
    args.extend_from_slice(extra);
    s.run(&args)
}

/// #14.2: `--since 1y --step 1ms` planned ~700 MB of windows before the
/// first request; `--since 20y --step 1ms` aborted on a 2 GiB allocation.
#[test]
fn huge_plans_are_refused_before_they_are_built() {
    let s = Scratch::new(&[]);
    for since in ["1y", "20y"] {
        export(&s, &["--since", since, "--step", "1ms"]).refused(
            2,
            &[
                "at --step 1ms, 720 points per request",
                "more than the 100,000 allowed",
                "use a larger --step or --window",
            ],
        );
    }
}

/// #14.2: ranges reaching before 1970 or past 9999, or timestamps near the
/// 64-bit limit, are refused with the flag named.
#[test]
fn out_of_range_times_are_refused() {
    let s = Scratch::new(&[]);
    export(&s, &["--since", "10000y"]).refused(
        2,
        &[
            "--since: 10000y before",
            "reaches back before 1970-01-01T00:00:00Z",
        ],
    );
    export(&s, &["--since", "10001y"]).refused(2, &["--since", "longer than 10000y"]);
    export(&s, &["--from", "0", "--to", "9223372036854775807"])
        .refused(2, &["--to", "after 9999-12-31T23:59:59.999Z"]);
    export(&s, &["--from", "-9223372036854775808"])
        .refused(2, &["--from", "before 1970-01-01T00:00:00Z"]);
    export(&s, &["--step", "1e30"]).refused(2, &["--step", "invalid duration \"1e30\""]);
    export(&s, &["--window", "99999999999"])
        .refused(2, &["--window", "more than the 1000000 allowed"]);
    // `now-6h` works here as in every command.
    export(&s, &["--from", "now-6h", "--to", "now-7h"])
        .refused(2, &["--from", "is after --to", "must run forward"]);
}

/// The same limits through `--config`: the message names the field.
#[test]
fn config_fields_are_named_as_fields() {
    let cfg = format!("datasource: {{url: '{URL}'}}\nqueries: [up]\nsince: 10000y\nout: out\n");
    let s = Scratch::new(&[("e.yml", cfg.as_bytes())]);
    s.run(&["export", "-c", "e.yml"])
        .refused(2, &["since: 10000y before"]);
    let cfg =
        format!("datasource: {{url: '{URL}'}}\nqueries: [up]\nsince: 1y\nstep: 1ms\nout: out\n");
    let s = Scratch::new(&[("e.yml", cfg.as_bytes())]);
    s.run(&["export", "-c", "e.yml"])
        .refused(2, &["at step 1ms", "use a larger step or --window"]);
    let s = Scratch::new(&[]);
    s.run(&["export", "-c", "/dev/zero"]).refused(
        2,
        &["/dev/zero is larger than 32MiB, the most spillway reads from an export config"],
    );
}

/// #14.13: a missing `--thresholds` file was reported as "unexpected end of
/// input"; #14.3: `/dev/zero` as a thresholds file was read without limit.
#[test]
fn thresholds_files_are_named_and_capped() {
    let s = Scratch::new(&[("empty.yml", b"")]);
    let o = export(&s, &["--since", "1h", "--thresholds", "missing.yml"]);
    o.refused(
        2,
        &["thresholds file: cannot read missing.yml: No such file or directory"],
    );
    assert!(
        !o.stderr.contains("unexpected end of input"),
        "{}",
        o.describe()
    );
    export(&s, &["--since", "1h", "--thresholds", "/dev/zero"]).refused(
        2,
        &["/dev/zero is larger than 32MiB, the most spillway reads from a thresholds file"],
    );
    export(&s, &["--since", "1h", "--thresholds", "empty.yml"])
        .refused(2, &["thresholds file empty.yml is empty"]);
}

/// #14.3: an incremental state file is read with a cap, before `--out` is made.
#[test]
fn incremental_state_is_capped() {
    let s = Scratch::new(&[]);
    export(&s, &["--since", "1h", "--incremental", "/dev/zero"])
        .refused(2, &["incremental state: /dev/zero is larger than 32MiB"]);
}
