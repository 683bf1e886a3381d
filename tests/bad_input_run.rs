//! Bad input to `spillway run` (at start, `--dry-run`, and a running daemon
//! on reload), `rules preview` and `replay` (issue #14). Every one-shot case
//! runs the binary and expects a clear message, exit code 2 (bad config or
//! usage), no panic, bounded memory and no file left behind; the daemon
//! must refuse a hostile reload with 400 and keep running.

mod bounded;
mod common;

use bounded::{alert_rule_file, deep_template, Scratch};
use common::{post_status, wait_for, SpillwayRun, Vm};
use std::time::Duration;

/// A run config in `dir` whose rule files are `rules/*.yml` beside it and
/// whose queues would go to `dir/queues`.
fn run_config(dir: &std::path::Path, destination_name: &str) -> String {
    format!(
        "datasource: {{url: 'http://127.0.0.1:9'}}
rule_files: ['{}/rules/*.yml']
storage: {{path: '{}/queues'}}
destinations:
  - name: '{destination_name}'
    url: http://127.0.0.1:9/api/v1/write
",
        dir.display(),
        dir.display()
    )
}

fn scratch_with_rules(rules: &str) -> Scratch {
    let s = Scratch::new(&[("rules/r.yml", rules.as_bytes())]);
    let cfg = run_config(s.path(), "d");
    std::fs::write(s.path().join("run.yml"), cfg).unwrap();
    // The config is part of the scene, not something a run left behind.
    Scratch::adopt(s)
}

/// #14.1: a deeply nested template overflowed the stack in `run --dry-run`,
/// `rules preview` and `run` at start.
#[test]
fn deep_templates_are_refused_by_dry_run_preview_and_start() {
    let s = scratch_with_rules(&alert_rule_file(&deep_template(1_000)));
    let wanted = [
        "rules/r.yml:7",
        "field \"labels.x\"",
        "at most 32 are allowed",
    ];
    s.run(&["run", "-c", "run.yml", "--dry-run"])
        .refused(2, &wanted);
    s.run(&["rules", "preview", "-c", "run.yml"])
        .refused(2, &wanted);
    s.run(&["run", "-c", "run.yml", "--http.listen", "127.0.0.1:0"])
        .refused(2, &wanted);
}

/// #14.13: `run --dry-run` accepted a destination name that `run` then
/// could not make a directory for.
#[test]
fn dry_run_refuses_a_destination_name_no_directory_can_have() {
    let s = Scratch::new(&[(
        "rules/r.yml",
        b"groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n",
    )]);
    let name = "d".repeat(300);
    std::fs::write(s.path().join("run.yml"), run_config(s.path(), &name)).unwrap();
    let s = Scratch::adopt(s);
    s.run(&["run", "-c", "run.yml", "--dry-run"]).refused(
        2,
        &[
            "destinations[0].name",
            "300 bytes long",
            "at most 200 bytes",
        ],
    );
}

/// #14.3: configs are read with a cap.
#[test]
fn endless_configs_are_capped() {
    let s = Scratch::new(&[]);
    s.run(&["run", "-c", "/dev/zero", "--dry-run"]).refused(
        2,
        &["/dev/zero is larger than 32MiB, the most spillway reads from a run config"],
    );
}

/// #14.2 and #14.13: `replay --from=-9223372036854775808` was taken as
/// "now"; `--from now-10000y` and `--from 0 --to <max>` planned without
/// bound before anything was fetched.
#[test]
fn replay_refuses_ranges_out_of_bounds() {
    let s = scratch_with_rules(
        "groups:\n- name: g\n  interval: 1m\n  rules:\n  - record: r\n    expr: up\n",
    );
    s.run(&["replay", "-c", "run.yml", "--from=-9223372036854775808"])
        .refused(
            2,
            &[
                "--from",
                "-9223372036854775808",
                "before 1970-01-01T00:00:00Z",
            ],
        );
    s.run(&["replay", "-c", "run.yml", "--from", "now-10000y"])
        .refused(2, &["--from", "now-10000y", "before 1970-01-01T00:00:00Z"]);
    s.run(&[
        "replay",
        "-c",
        "run.yml",
        "--from",
        "0",
        "--to",
        "9223372036854775807",
    ])
    .refused(2, &["--to", "after 9999-12-31T23:59:59.999Z"]);
    // In range, but four million requests at one-minute steps: refused
    // before any queue directory is made (the scratch dir stays as it was).
    s.run(&[
        "replay",
        "-c",
        "run.yml",
        "--from",
        "0",
        "--to",
        "9999-12-31T23:59:59Z",
    ])
    .refused(
        2,
        &[
            "group \"g\"",
            "more than the 100,000 allowed",
            "--max-datapoints-per-query",
        ],
    );
    s.run(&[
        "replay",
        "-c",
        "run.yml",
        "--from",
        "now-1h",
        "--max-datapoints-per-query",
        "0",
    ])
    .refused(2, &["--max-datapoints-per-query"]);
}

/// #14.1: a running daemon took a hostile rule file on `POST /-/reload`
/// (or SIGHUP) and died of a stack overflow; now it answers 400, keeps the
/// old config and stays within its memory.
#[test]
fn a_running_daemon_survives_hostile_reloads() {
    let vm = Vm::start();
    let good = "groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: r\n    expr: vector(1)\n";
    let cfg = format!(
        "datasource: {{url: '{0}'}}
rule_files: ['rules/*.yml']
storage: {{path: '{{dir}}/queues'}}
destinations:
  - name: d
    url: {0}/api/v1/write
",
        vm.url()
    );
    let sp = SpillwayRun::start_files(&[("run.yml", &cfg), ("rules/r.yml", good)], &[]);
    let pid = sp.server.pid().expect("running") as i32;
    let hostile: Vec<(String, &str)> = vec![
        (
            alert_rule_file(&deep_template(1_000)),
            "at most 32 are allowed",
        ),
        (
            alert_rule_file(&deep_template(100_000)),
            "at most 32 are allowed",
        ),
        (
            format!("groups: {}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "more than 64 levels deep",
        ),
        (
            "groups:\n- name: g\n  interval: 10000y\n  rules:\n  - record: r\n    expr: up\n"
                .into(),
            "longer than 1y",
        ),
    ];
    for (i, (text, wanted)) in hostile.iter().enumerate() {
        sp.write(&[("rules/r.yml", text)]);
        let (code, body) = post_status(&format!("{}/-/reload", sp.url()), b"");
        assert_eq!(code, 400, "{body}");
        assert!(body.contains(wanted), "{wanted}: {body}");
        assert!(body.contains("previous config keeps running"), "{body}");
        // SIGHUP takes the same path.
        sp.signal("HUP");
        wait_for(
            "the SIGHUP reload to be refused",
            Duration::from_secs(20),
            || {
                sp.metrics_text().contains(&format!(
                    "spillway_config_reloads_total{{status=\"failure\"}} {}",
                    2 * (i + 1)
                ))
            },
        );
    }
    // /dev/zero as a rule file is refused by its size.
    std::fs::remove_file(sp.server.dir.path().join("rules/r.yml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", sp.server.dir.path().join("rules/r.yml")).unwrap();
    let (code, body) = post_status(&format!("{}/-/reload", sp.url()), b"");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("larger than 32MiB"), "{body}");

    let rules = sp.rules();
    assert_eq!(rules["data"]["groups"][0]["name"], "g", "{rules}");
    let hwm = bounded::current_hwm_kib(pid);
    assert!(
        hwm > 0 && hwm < bounded::MAX_RSS_KIB,
        "daemon peak RSS {hwm} KiB"
    );
    println!("daemon peak RSS after hostile reloads: {hwm} KiB");
}
