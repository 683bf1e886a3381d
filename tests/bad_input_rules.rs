//! Bad input to `spillway rules check` and `spillway relabel` (issue #14:
//! crashes, memory that grows with the input, unclear errors). Every case
//! runs the binary and expects a clear message, exit code 1 (`rules check`
//! found problems) or 2 (bad usage or config), no panic, bounded memory and
//! no file left behind (see `bounded/mod.rs`).

mod bounded;

use bounded::{alert_rule_file, deep_template, Scratch};

/// #14.1: ~1,000 `(` in a label template overflowed the stack; `rules
/// check` died at ~5,000.
#[test]
fn deeply_nested_templates_are_refused() {
    for n in [1_000, 5_000, 100_000] {
        let s = Scratch::new(&[("r.yml", alert_rule_file(&deep_template(n)).as_bytes())]);
        s.run(&["rules", "check", "r.yml"]).refused(
            1,
            &[
                "r.yml:7: group \"g\", rule \"A\": field \"labels.x\"",
                &format!("nested {n} levels deep"),
                "at most 32 are allowed",
            ],
        );
    }
}

/// #14.3: `rules check /dev/zero` read without limit.
#[test]
fn endless_files_are_capped() {
    let s = Scratch::new(&[]);
    s.run(&["rules", "check", "/dev/zero"]).refused(
        1,
        &["/dev/zero: larger than 32MiB, the most spillway reads from a rule file"],
    );
}

/// #14.13: `interval: 10000y` passed `rules check` and then never evaluated.
#[test]
fn absurd_intervals_are_refused() {
    let text = "groups:\n- name: g\n  interval: 10000y\n  rules:\n  - record: r\n    expr: up\n";
    let s = Scratch::new(&[("r.yml", text.as_bytes())]);
    s.run(&["rules", "check", "r.yml"]).refused(
        1,
        &["r.yml:3: group \"g\": field \"interval\": interval 10000y is longer than 1y"],
    );
    let text = "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    for: 99999999999999999999y\n";
    let s = Scratch::new(&[("r.yml", text.as_bytes())]);
    s.run(&["rules", "check", "r.yml"])
        .refused(1, &["field \"for\"", "longer than 10000y"]);
}

/// #14.1: YAML nesting is bounded by the parser's budget, with a worded message.
#[test]
fn deeply_nested_yaml_is_refused() {
    let text = format!("groups: {}{}", "[".repeat(5_000), "]".repeat(5_000));
    let s = Scratch::new(&[("r.yml", text.as_bytes())]);
    s.run(&["rules", "check", "r.yml"]).refused(
        1,
        &["r.yml: the YAML nests lists and mappings more than 64 levels deep"],
    );
}

/// #14.13: the node budget (250k) refused a valid 50,000-rule file that
/// vmalert accepts, with a raw `budget breached: Nodes {..}` message.
#[test]
fn a_50k_rule_file_loads_and_a_larger_one_is_refused_in_words() {
    let mut text = String::from("groups:\n");
    for g in 0..500 {
        text.push_str(&format!("- name: group_{g}\n  interval: 1m\n  rules:\n"));
        for r in 0..100 {
            if r % 2 == 0 {
                text.push_str(&format!(
                    "  - alert: High_{g}_{r}\n    expr: metric_{r}{{job=\"job_{g}\"}} > {r}\n    for: 5m\n    labels:\n      severity: warning\n      team: team_{g}\n    annotations:\n      summary: \"{{{{ $labels.instance }}}} is high\"\n      description: \"value {{{{ $value | humanize }}}} above {r}\"\n"
                ));
            } else {
                text.push_str(&format!(
                    "  - record: job:metric_{r}:rate5m_{g}\n    expr: sum by (job) (rate(metric_{r}{{job=\"job_{g}\"}}[5m]))\n    labels:\n      source: rule_{g}\n      tier: t{r}\n"
                ));
            }
        }
    }
    let s = Scratch::new(&[("r.yml", text.as_bytes())]);
    let o = s.run(&["rules", "check", "r.yml"]);
    assert_eq!(o.code, 0, "{}", o.describe());
    assert!(
        o.stdout.contains("r.yml: OK (500 groups, 50000 rules)"),
        "{}",
        o.describe()
    );
    o.no_panic();
    // vmalert -dryRun takes about 230 MiB for the same file.
    assert!(o.peak_rss_kib < 256 * 1024, "{}", o.describe());
    println!("50,000 rules: peak RSS {} KiB", o.peak_rss_kib);

    // Past each limit a file is refused in words, before its cost grows further.
    let cases: [(String, &str); 3] = [
        (
            format!("groups: [{}]\n", "{name: x},".repeat(20_000)),
            "more than 10000 groups in one file, the most spillway reads from one rule file; split it into several files",
        ),
        (
            format!("groups:\n- name: g\n  rules: [{}]\n", "{record: a, expr: b},".repeat(200_000)),
            "more than 100000 rules in one file",
        ),
        (
            format!("groups:\n- name: g\n  junk: [{}]\n", "1,".repeat(1_300_000)),
            "r.yml: the YAML holds more than 1,200,000 values, lists and mappings, the most spillway reads from one file; split it into several files",
        ),
    ];
    for (text, message) in cases {
        let s = Scratch::new(&[("r.yml", text.as_bytes())]);
        let o = s.run(&["rules", "check", "r.yml"]);
        o.refused(1, &[message]);
        assert!(!o.stderr.contains("budget"), "{}", o.describe());
    }
}

/// The costliest rule file within the limits (one rule with labels up to
/// the node budget) stays near what a real 50,000-rule file costs.
#[test]
fn the_costliest_rule_file_is_bounded() {
    let labels: Vec<String> = (0..590_000).map(|i| format!("l{i}: v")).collect();
    let text = format!(
        "groups:\n- name: g\n  rules:\n  - record: a\n    expr: b\n    labels: {{{}}}\n",
        labels.join(",")
    );
    let s = Scratch::new(&[("r.yml", text.as_bytes())]);
    let o = s.run(&["rules", "check", "r.yml"]);
    assert_eq!(o.code, 0, "{}", o.describe());
    o.no_panic();
    assert!(o.peak_rss_kib < 256 * 1024, "{}", o.describe());
    println!("590,000 labels: peak RSS {} KiB", o.peak_rss_kib);
}

/// #14.13: `relabel` took a label given twice, an unknown escape (`\q`)
/// and a `target_label` no exposition format can carry, silently.
#[test]
fn relabel_refuses_duplicate_labels_unknown_escapes_and_bad_target_labels() {
    let cfg = "- action: replace\n  target_label: t\n  replacement: x\n";
    let s = Scratch::new(&[("r.yml", cfg.as_bytes())]);
    s.run(&["relabel", "-c", "r.yml", "--labels", r#"{a="1", a="2"}"#])
        .refused(2, &["--labels", "label \"a\" is given twice"]);
    s.run(&["relabel", "-c", "r.yml", "--labels", r#"{a="x\qy"}"#])
        .refused(2, &["--labels", "unknown escape \\q"]);
    let bad_target = "- action: replace\n  target_label: \"a\\nb\"\n  replacement: x\n";
    let s = Scratch::new(&[("r.yml", bad_target.as_bytes())]);
    s.run(&["relabel", "-c", "r.yml", "--labels", r#"{a="1"}"#])
        .refused(
            2,
            &[
                "target_label",
                "is not a valid label name: it contains the control character U+000A",
            ],
        );
    let s = Scratch::new(&[]);
    s.run(&["relabel", "-c", "/dev/zero", "--labels", "up"])
        .refused(
            2,
            &["/dev/zero is larger than 32MiB, the most spillway reads from a relabel config"],
        );
}
