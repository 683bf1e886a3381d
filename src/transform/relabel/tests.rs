//! Relabel tests in users' notation: a YAML rule list, a series as
//! `{a="b"}`, the series expected out (or `dropped`). Then config errors:
//! each must name the file, the line and the field.

use super::*;
use crate::model::selector::parse_label_set;

use Dialect::{Prometheus as P, VictoriaMetrics as VM};

fn series(s: &str) -> Labels {
    if s.trim() == "{}" {
        return Labels::new();
    }
    parse_label_set(s).unwrap_or_else(|e| panic!("bad test series {s}: {e}"))
}

fn relabel(dialect: Dialect, yaml: &str, input: &str) -> String {
    let rules = RelabelRules::from_yaml(yaml, "test.yml", dialect)
        .unwrap_or_else(|e| panic!("config rejected:\n{yaml}\n{e}"));
    let mut labels = series(input);
    if rules.apply(&mut labels) {
        labels.to_string()
    } else {
        "dropped".into()
    }
}

/// (dialects, config, input, expected output)
const CASES: &[(&[Dialect], &str, &str, &str)] = &[
    (
        &[P, VM],
        "- source_labels: [job]\n  target_label: service",
        r#"up{job="node"}"#,
        r#"up{job="node", service="node"}"#,
    ),
    (
        &[P, VM],
        "- source_labels: [instance]\n  regex: '(?P<host>[^:]+):(\\d+)'\n  target_label: host\n  replacement: $host/${2}",
        r#"{instance="db1:9100"}"#,
        r#"{host="db1/9100", instance="db1:9100"}"#,
    ),
    // Go's \d is ASCII only.
    (
        &[P, VM],
        "- source_labels: [n]\n  regex: '\\d+'\n  action: keep",
        r#"{n="١٢"}"#,
        "dropped",
    ),
    // A target_label that expands to nothing skips the rule.
    (
        &[P, VM],
        "- source_labels: [a]\n  regex: 'x(y?)'\n  target_label: $1\n  replacement: v",
        r#"{a="x"}"#,
        r#"{a="x"}"#,
    ),
    (
        &[P, VM],
        "- source_labels: [a, b]\n  separator: '-'\n  target_label: c\n  action: lowercase",
        r#"{a="X", b="Y"}"#,
        r#"{a="X", b="Y", c="x-y"}"#,
    ),
    (
        &[P, VM],
        "- action: drop\n  if: '{env=~\"dev|test\"}'",
        r#"up{env="dev"}"#,
        "dropped",
    ),
    (
        &[P, VM],
        "- action: keep\n  if: ['foo', '{env=\"prod\"}']",
        r#"up{env="dev"}"#,
        "dropped",
    ),
    (
        &[P, VM],
        "- action: keep_if_equal\n  source_labels: [a, b]",
        r#"{a="1", b="1"}"#,
        r#"{a="1", b="1"}"#,
    ),
    (
        &[P, VM],
        "- action: graphite\n  match: '*.cpu.*'\n  labels:\n    __name__: cpu_$2\n    host: ${1}",
        r#"{__name__="web1.cpu.idle"}"#,
        r#"cpu_idle{host="web1"}"#,
    ),
    (
        &[P, VM],
        "- action: labelmap_all\n  regex: '\\.'\n  replacement: _",
        r#"{a.b.c="1"}"#,
        r#"{a_b_c="1"}"#,
    ),
    (
        &[P, VM],
        "- action: drop_metrics\n  regex: [go_.*, process_.*]",
        r#"go_goroutines{job="a"}"#,
        "dropped",
    ),
    // `.` matches a newline only under Prometheus (`(?s)`).
    (&[P], "- source_labels: [a]\n  regex: 'x.y'\n  action: keep", "{a=\"x\\ny\"}", "{a=\"x\\ny\"}"),
    (&[VM], "- source_labels: [a]\n  regex: 'x.y'\n  action: keep", "{a=\"x\\ny\"}", "dropped"),
    // vmagent stops once no label is left; Prometheus carries on.
    (
        &[VM],
        "- action: labeldrop\n  regex: .*\n- target_label: b\n  replacement: x",
        r#"{a="1"}"#,
        "dropped",
    ),
    (
        &[P],
        "- action: labeldrop\n  regex: .*\n- target_label: b\n  replacement: x",
        r#"{a="1"}"#,
        r#"{b="x"}"#,
    ),
    // vmagent keeps a label set to "" until the end, and labelmap copies it.
    (
        &[VM],
        "- target_label: a\n  replacement: ''\n- action: labelmap\n  regex: a\n  replacement: b",
        r#"{a="1", b="2"}"#,
        "dropped",
    ),
    (
        &[P],
        "- target_label: a\n  replacement: ''\n- action: labelmap\n  regex: a\n  replacement: b",
        r#"{a="1", b="2"}"#,
        r#"{b="2"}"#,
    ),
    // labelmap reads a snapshot in Prometheus, current values in vmagent.
    (
        &[P],
        "- action: labelmap\n  regex: 'a(x?)'\n  replacement: a${1}x",
        r#"{a="1", ax="2"}"#,
        r#"{a="1", ax="1", axx="2"}"#,
    ),
    (
        &[VM],
        "- action: labelmap\n  regex: 'a(x?)'\n  replacement: a${1}x",
        r#"{a="1", ax="2"}"#,
        r#"{a="1", ax="1", axx="1"}"#,
    ),
    // {{label}} is vmagent's; Prometheus writes it as it is.
    (
        &[VM],
        "- target_label: id\n  replacement: '{{job}}/{{instance}}'",
        r#"{instance="h:1", job="j"}"#,
        r#"{id="j/h:1", instance="h:1", job="j"}"#,
    ),
    (
        &[P],
        "- target_label: id\n  replacement: '{{job}}'",
        r#"{job="j"}"#,
        r#"{id="{{job}}", job="j"}"#,
    ),
    // vmagent strips the anchors users add; the regex still matches whole values.
    (
        &[P, VM],
        "- action: labelkeep\n  regex: '^(__name__|job)$'",
        r#"up{job="a", x="y"}"#,
        r#"up{job="a"}"#,
    ),
    (
        &[P, VM],
        "- action: replace_all\n  source_labels: [path]\n  target_label: path\n  regex: '/+'\n  replacement: /",
        r#"{path="//a///b"}"#,
        r#"{path="/a/b"}"#,
    ),
    (&[P, VM], "[]", r#"up{a="b"}"#, r#"up{a="b"}"#),
];

#[test]
fn table() {
    for (dialects, yaml, input, want) in CASES {
        for &d in *dialects {
            let got = relabel(d, yaml, input);
            assert_eq!(&got, want, "dialect {d:?}\nconfig:\n{yaml}\ninput: {input}");
        }
    }
}

#[test]
fn unchanged_series_stays_equal() {
    let rules = RelabelRules::from_yaml(
        "- source_labels: [job]\n  target_label: job\n- action: labeldrop\n  regex: tmp_.*",
        "t",
        VM,
    )
    .unwrap();
    let before = series(r#"up{job="a"}"#);
    let mut labels = before.clone();
    assert!(rules.apply(&mut labels));
    assert_eq!(labels, before);
}

#[test]
fn debug_steps_show_each_rule() {
    let rules = RelabelRules::from_yaml(
        "- action: labeldrop\n  regex: 'foo.*'\n- target_label: foobar\n  replacement: abc\n- action: drop\n  source_labels: [a]\n  regex: b\n- target_label: never\n  replacement: x",
        "t",
        VM,
    )
    .unwrap();
    let steps = rules.apply_debug(&series(r#"m{a="b", foo="x", foobc="123"}"#));
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].rule, "action: labeldrop\nregex: foo.*\n");
    assert_eq!(
        steps[0].before.to_string(),
        r#"m{a="b", foo="x", foobc="123"}"#
    );
    assert_eq!(steps[0].after.as_ref().unwrap().to_string(), r#"m{a="b"}"#);
    assert_eq!(
        steps[1].after.as_ref().unwrap().to_string(),
        r#"m{a="b", foobar="abc"}"#
    );
    assert_eq!(steps[2].after, None);
    assert!(
        steps[2].to_string().ends_with("out: (dropped)"),
        "{}",
        steps[2]
    );
}

#[test]
fn dialect_reads_from_config() {
    #[derive(serde::Deserialize)]
    struct Destination {
        #[serde(default)]
        dialect: Dialect,
        relabel_configs: Vec<RelabelConfig>,
    }
    let d: Destination = serde_saphyr::from_str(
        "relabel_configs:\n  - action: hashmod\n    source_labels: [a]\n    target_label: shard\n    modulus: 1000\n",
    )
    .unwrap();
    assert_eq!(d.dialect, VM);
    let d: Destination = serde_saphyr::from_str(
        "dialect: prometheus\nrelabel_configs:\n  - action: hashmod\n    source_labels: [c]\n    target_label: d\n    modulus: 1000\n",
    )
    .unwrap();
    let rules = RelabelRules::from_configs(d.relabel_configs, d.dialect).unwrap();
    let mut labels = series(r#"{c="baz"}"#);
    rules.apply(&mut labels);
    assert_eq!(labels.get("d"), Some("976"));
}

#[test]
fn finalize_drops_double_underscore_labels() {
    let mut l = series(r#"{__name__="m", __address__="h", __tmp="x", a="b"}"#);
    finalize(&mut l);
    assert_eq!(l.to_string(), r#"m{a="b"}"#);
}

#[test]
fn has_temporary_says_whether_finalize_removes_something() {
    // Names sorting before, among and after the `__` ones.
    let cases = [
        (r#"{__name__="m", a="b"}"#, false),
        (r#"{__name__="m", __tmp="x", a="b"}"#, true),
        (r#"{A="1", Z="2", _a="3", __name__="m"}"#, false),
        (r#"{A="1", _="2", __z="3", a="b"}"#, true),
        (r#"{A="1", ___="2"}"#, true),
        (r#"{_="1", _a="2", a="3"}"#, false),
        (r#"{__name__="m"}"#, false),
        (r#"{__="x"}"#, true),
        ("{}", false),
    ];
    for (text, want) in cases {
        let l = series(text);
        assert_eq!(has_temporary(&l), want, "{text}");
        let mut finalized = l.clone();
        finalize(&mut finalized);
        assert_eq!(
            finalized != l,
            want,
            "{text}: has_temporary agrees with finalize"
        );
    }
}

// --- errors -------------------------------------------------------------

#[test]
fn yaml_type_error_names_file_line_and_field() {
    let yaml = "- action: keep\n  source_labels: [a]\n- action: drop\n  source_labels: a\n";
    let err = RelabelRules::from_yaml(yaml, "rules/relabel.yml", VM).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("rules/relabel.yml:4: relabel_configs[1].source_labels: "),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line, no snippet: {msg}");
}

#[test]
fn unknown_field_is_named() {
    let yaml = "- action: keep\n  source_labels: [a]\n  regexp: x\n";
    let msg = RelabelRules::from_yaml(yaml, "f.yml", VM)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("f.yml:3: relabel_configs[0].regexp: "),
        "{msg}"
    );
    assert!(msg.contains("unknown field `regexp`"), "{msg}");
}

#[test]
fn broken_yaml_still_gives_the_line() {
    let msg = RelabelRules::from_yaml("- action: [keep\n", "f.yml", VM)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("f.yml:1: relabel_configs"), "{msg}");
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let yaml = "\
- action: hashmod
  source_labels: [a]
  target_label: b
- action: replace
  source_labels: [a]
- action: keep_if_equal
  source_labels: [a]
- action: nope
- source_labels: [a]
  target_label: b
  regex: 'a('
- action: keep
  if: '{a=\"b\"'
";
    let err = RelabelRules::from_yaml(yaml, "r.yml", VM).unwrap_err();
    let got: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    let want_prefixes = [
        "r.yml:1: relabel_configs[0].modulus: `modulus` must be a positive number for `action: hashmod`",
        "r.yml:4: relabel_configs[1].target_label: `target_label` is required for `action: replace`",
        "r.yml:7: relabel_configs[2].source_labels: `source_labels` must list at least two label for `action: keep_if_equal`; got [\"a\"]",
        "r.yml:8: relabel_configs[3].action: unknown action \"nope\"; expected one of: replace, keep,",
        "r.yml:11: relabel_configs[4].regex: invalid regex \"a(\": ",
        "r.yml:13: relabel_configs[5].if: invalid series selector",
    ];
    assert_eq!(got.len(), want_prefixes.len(), "{err}");
    for (g, w) in got.iter().zip(want_prefixes) {
        assert!(g.starts_with(w), "got  {g}\nwant {w}...");
    }
}

#[test]
fn prometheus_checks_differ_from_vmagent() {
    // Prometheus accepts keep without source_labels; vmagent wants them (or `if`).
    let yaml = "- action: keep\n  regex: x";
    assert!(RelabelRules::from_yaml(yaml, "f", P).is_ok());
    let msg = RelabelRules::from_yaml(yaml, "f", VM)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("relabel_configs[0].source_labels"), "{msg}");
    // Prometheus allows only `regex` with labeldrop.
    let yaml = "- action: labeldrop\n  regex: x\n  replacement: y";
    assert!(RelabelRules::from_yaml(yaml, "f", VM).is_ok());
    let msg = RelabelRules::from_yaml(yaml, "f", P)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("f:3: relabel_configs[0].replacement: "),
        "{msg}"
    );
}

#[test]
fn embedded_configs_keep_their_lines() {
    #[derive(serde::Deserialize)]
    struct Outer {
        destinations: Vec<Dest>,
    }
    #[derive(serde::Deserialize)]
    struct Dest {
        relabel_configs: Vec<serde_saphyr::Spanned<RelabelConfig>>,
    }
    let yaml = "destinations:\n  - relabel_configs:\n      - action: drop\n        source_labels: [a]\n      - action: uppercase\n";
    let outer: Outer = serde_saphyr::from_str(yaml).unwrap();
    let configs = outer
        .destinations
        .into_iter()
        .next()
        .unwrap()
        .relabel_configs;
    let err = RelabelRules::from_spanned(
        configs,
        VM,
        "spillway.yml",
        "destinations[0].relabel_configs",
    )
    .unwrap_err();
    let first = err.problems()[0].to_string();
    assert!(
        first.starts_with("spillway.yml:5: destinations[0].relabel_configs[1].source_labels: "),
        "{err}"
    );
}

#[test]
fn configs_from_code_name_the_field() {
    let c = RelabelConfig {
        action: Some("hashmod".into()),
        source_labels: vec!["a".into()],
        target_label: Some("b".into()),
        ..Default::default()
    };
    let msg = RelabelRules::from_configs(vec![c], VM)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("relabel_configs[0].modulus: "), "{msg}");
}

/// Rough throughput on a typical destination config; run with
/// `cargo test --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let yaml = r#"
- action: drop
  if: '{__name__=~"go_.*|process_.*"}'
- source_labels: [instance]
  regex: '([^:]+):\d+'
  target_label: host
- action: labeldrop
  regex: 'tmp_.*|pod_template_hash'
- source_labels: [env]
  target_label: env
  regex: prod|production
  replacement: prod
- action: keep_metrics
  regex: [node_.*, up, http_requests_total]
- target_label: cluster
  replacement: eu-1
- action: hashmod
  source_labels: [instance]
  target_label: __tmp_shard
  modulus: 4
- action: labelmap
  regex: '__meta_(.+)'
"#;
    for dialect in [Dialect::VictoriaMetrics, Dialect::Prometheus] {
        let rules = RelabelRules::from_yaml(yaml, "bench", dialect).unwrap();
        let inputs: Vec<Labels> = (0..1000)
            .map(|i| {
                series(&format!(
                    r#"{{__name__="{}", instance="10.0.{}.{}:9100", job="node", env="production", pod_template_hash="abc", tmp_x="y", cluster="eu-1", a="1", b="2"}}"#,
                    ["node_cpu_seconds_total", "up", "go_goroutines", "http_requests_total"][i % 4],
                    i / 256,
                    i % 256
                ))
            })
            .collect();
        let start = std::time::Instant::now();
        let mut kept = 0;
        let rounds = 200;
        for _ in 0..rounds {
            for l in &inputs {
                let mut l = l.clone();
                kept += usize::from(rules.apply(&mut l));
            }
        }
        let n = rounds * inputs.len();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{dialect:?}: {:.0} series/s ({kept} of {n} kept, clone included)",
            n as f64 / secs
        );
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for l in &inputs {
                std::hint::black_box(l.clone());
            }
        }
        println!(
            "  clone alone: {:.0}/s",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn keeps_agrees_with_apply_for_filter_only_rules() {
    let configs = [
        "- action: keep\n  source_labels: [job]\n  regex: node|api",
        "- action: drop\n  source_labels: [__name__, job]\n  separator: '/'\n  regex: up/.*",
        "- action: keep_if_equal\n  source_labels: [a, b]\n- action: drop_if_equal\n  source_labels: [a, c]",
        "- if: '{env=\"prod\"}'\n  action: keep\n  source_labels: [job]\n  regex: api",
        "- if: 'up'\n  action: drop",
        "- action: keep_metrics\n  regex: up|down\n- action: drop_metrics\n  regex: down",
        "- action: keep_if_contains\n  source_labels: [a]\n  target_label: b",
        "- action: keepequal\n  source_labels: [a]\n  target_label: b",
    ];
    let inputs = [
        r#"up{job="node"}"#,
        r#"up{job="db", a="1", b="1"}"#,
        r#"down{job="api", env="prod", a="1", b="12", c="1"}"#,
        r#"other{job="api", env="dev"}"#,
        "{}",
    ];
    for dialect in [P, VM] {
        for yaml in configs {
            let rules = RelabelRules::from_yaml(yaml, "t.yml", dialect).unwrap();
            assert!(rules.is_filter_only(), "{yaml}");
            for input in inputs {
                let mut labels = series(input);
                let before = labels.clone();
                let applied = rules.apply(&mut labels);
                assert_eq!(rules.keeps(&before), Some(applied), "{yaml} on {input}");
                if applied {
                    assert_eq!(labels, before, "filters do not edit");
                }
            }
        }
    }
    let edits =
        RelabelRules::from_yaml("- target_label: a\n  replacement: b", "t.yml", VM).unwrap();
    assert!(!edits.is_filter_only());
    assert_eq!(edits.keeps(&series("{x=\"y\"}")), None);
}
