//! Tests in the users' notation: rule files as YAML text, errors as the line
//! a user would read. The conformance test feeds the vmalert corpus
//! (`tests/conformance/vmalert-rules/`, see its README) through the same
//! [`load_str`] that `run` and `rules check` use.

use super::files::{expand_env, expand_glob, segment_matches};
use super::validate::hash_rule;
use super::*;
use crate::model::time::{format_go_duration, parse_signed_duration_ms};
use crate::model::Labels;
use std::collections::{BTreeMap, HashMap};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/conformance/vmalert-rules"
);

/// Entries whose verdict depends on parsing the query language, which
/// spillway deliberately does not do (queries go to the server unchanged,
/// and no Rust parser knows MetricsQL, GraphiteQL or LogsQL). All of them
/// are files vmalert rejects and we accept; the datasource rejects the query
/// at the first evaluation instead. `(file, need, reason)`.
const EXPECTED_EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "rules1-bad.rules",
        "graphite-parse",
        "Graphite expr followed by PromQL-style `by instance`",
    ),
    (
        "inline-12-bad.rules",
        "metricsql-parse",
        "`up | 0` is not MetricsQL",
    ),
    (
        "inline-13-bad.rules",
        "graphite-parse",
        "`up == 1` is not a Graphite expression",
    ),
    (
        "inline-16-bad.rules",
        "graphite-parse",
        "a PromQL expr in a graphite group",
    ),
    (
        "inline-18-bad.rules",
        "metricsql-parse",
        "a LogsQL expr in a prometheus group",
    ),
];

/// Entries that are valid only with their `flags`: without them vmalert
/// rejects the expression (`without_flags`), which needs the same parsers.
const WITHOUT_FLAGS_EXCEPTIONS: &[(&str, &str)] = &[
    (
        "vlog-dir-rules0-good.rules",
        "LogsQL in a group that defaults to prometheus: needs metricsql-parse",
    ),
    (
        "inline-19-good.rules",
        "`up | 0` rejected only by the MetricsQL parser",
    ),
];

/// Rejected as vmalert rejects them, but vmalert's message comes from a
/// query parser, so it cannot appear in ours.
const WHY_EXCEPTIONS: &[(&str, &str)] = &[(
    "rules0-bad.rules",
    "\"unexpected token\" is MetricsQL's; the file is still rejected for its empty expr and nameless alert",
)];

/// (file, group, rule, field), the last three in display form.
type Where = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// For each rejected entry: what one of its errors must name. Every error
/// also has a line.
const CONTEXT: &[Where] = &[
    (
        "dir-rules-update0-good.rules",
        Some("\"TestUpdateGroup\""),
        Some("\"up graphite\""),
        Some("type"),
    ),
    (
        "dir-rules-update1-good.rules",
        Some("\"TestUpdateGroup\""),
        Some("\"up graphite\""),
        Some("type"),
    ),
    (
        "dir-rules0-bad.rules",
        Some("\"group\""),
        Some("\"InvalidAnnotations\""),
        Some("annotations.summary"),
    ),
    (
        "dir-rules1-bad.rules",
        Some("\"sameGroup\""),
        None,
        Some("name"),
    ),
    (
        "dir-rules3-bad.rules",
        Some("\"group\""),
        Some("#1 (no name)"),
        Some("record"),
    ),
    (
        "dir-rules4-bad.rules",
        Some("\"group\""),
        Some("\"rows\""),
        Some("record"),
    ),
    (
        "dir-rules6-bad.rules",
        Some("\"group\""),
        None,
        Some("headers"),
    ),
    (
        "rules0-bad.rules",
        Some("\"group\""),
        Some("\"EmptyExpr\""),
        Some("expr"),
    ),
    (
        "top-rules3-good.rules",
        Some("\"TestGroupPromMixed\""),
        Some("\"HostDown\""),
        Some("type"),
    ),
    (
        "group-interval-offset-explicit-bad.rules",
        Some("\"EvalOffsetGroup\""),
        None,
        Some("interval_offset"),
    ),
    (
        "group-interval-offset-explicit-good.rules",
        Some("\"EvalOffsetGroup\""),
        None,
        Some("interval_offset"),
    ),
    (
        "rules-multi-doc-bad.rules",
        None,
        None,
        Some("invalid-field-1"),
    ),
    (
        "rules-multi-doc-duplicates-bad.rules",
        Some("\"foo\""),
        None,
        Some("name"),
    ),
    (
        "rules1-good-interval-offset.rules",
        Some("\"groupTest\""),
        None,
        Some("interval_offset"),
    ),
    (
        "rules_interval_bad.rules",
        Some("\"groupTest\""),
        None,
        Some("eval_offset"),
    ),
    (
        "inline-01-bad.rules",
        Some("#1 (no name)"),
        None,
        Some("name"),
    ),
    (
        "inline-02-bad.rules",
        Some("\"both record and alert are not set\""),
        Some("#1 (no name)"),
        Some("record"),
    ),
    (
        "inline-03-bad.rules",
        Some("\"negative interval\""),
        None,
        Some("interval"),
    ),
    (
        "inline-04-bad.rules",
        Some("\"too big eval_offset\""),
        None,
        Some("eval_offset"),
    ),
    (
        "inline-05-bad.rules",
        Some("\"too big negative eval_offset\""),
        None,
        Some("eval_offset"),
    ),
    (
        "inline-06-bad.rules",
        Some("\"wrong limit\""),
        None,
        Some("limit"),
    ),
    (
        "inline-07-bad.rules",
        Some("\"wrong concurrency\""),
        None,
        Some("concurrency"),
    ),
    (
        "inline-08-bad.rules",
        Some("\"test\""),
        Some("\"alert\""),
        None,
    ),
    (
        "inline-09-bad.rules",
        Some("\"test\""),
        Some("\"alert\""),
        None,
    ),
    (
        "inline-10-bad.rules",
        Some("\"test\""),
        Some("\"record\""),
        None,
    ),
    (
        "inline-11-bad.rules",
        Some("\"test thanos\""),
        None,
        Some("type"),
    ),
    (
        "inline-14-bad.rules",
        Some("\"test vlogs expr\""),
        Some("\"alert\""),
        Some("expr"),
    ),
    (
        "inline-15-bad.rules",
        Some("\"test vlogs expr multipart\""),
        Some("\"alert\""),
        Some("expr"),
    ),
    (
        "inline-17-bad.rules",
        Some("\"test vlogs with prometheus expr\""),
        Some("\"r1\""),
        Some("expr"),
    ),
    (
        "vlog-rules0-bad.rules",
        Some("\"InvalidStatsLogsql\""),
        Some("\"MissingStatsPipe\""),
        Some("expr"),
    ),
    (
        "inline-24-bad.rules",
        Some("\"test\""),
        Some("\"record\""),
        Some("labels.__name__"),
    ),
    (
        "inline-25-bad.rules",
        Some("\"test\""),
        Some("#1 (no name)"),
        Some("record"),
    ),
    (
        "inline-26-bad.rules",
        Some("\"test\""),
        Some("\"alert\""),
        Some("expr"),
    ),
    ("inline-31-bad.rules", None, None, None),
    ("inline-32-bad.rules", None, None, Some("bad_field")),
];

fn options_for(flags: &[String]) -> LoadOptions {
    let mut opts = LoadOptions::default();
    for flag in flags {
        let (name, value) = flag.split_once('=').expect("flags are -name=value");
        match name {
            "-rule.defaultRuleType" => {
                opts.default_rule_type = RuleType::parse(value).expect("known rule type")
            }
            "-rule.validateTemplates" => opts.validate_templates = value == "true",
            // We never parse expressions, so there is nothing to turn off.
            "-rule.validateExpressions" => {}
            other => panic!("conformance flag {other} is not mapped to a LoadOptions field"),
        }
    }
    opts
}

fn load_corpus_file(file: &str, opts: &LoadOptions) -> Result<Vec<Group>, Vec<RuleError>> {
    let text = std::fs::read_to_string(format!("{CORPUS}/{file}"))
        .unwrap_or_else(|e| panic!("read {CORPUS}/{file}: {e}"));
    load_str(file, &text, opts)
}

#[test]
fn vmalert_conformance_corpus() {
    let json = std::fs::read_to_string(format!("{CORPUS}/EXPECTED.json"))
        .expect("tests/conformance/vmalert-rules/EXPECTED.json");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).expect("EXPECTED.json");
    let (mut accepted, mut rejected, mut excepted, mut excepted_without_flags) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let mut excepted_seen = Vec::new();

    for e in &entries {
        let file = e["file"].as_str().expect("file");
        let valid = e["valid"].as_bool().expect("valid");
        let why = e["why"].as_str().unwrap_or_default();
        let needs: Vec<&str> = e["needs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .collect();
        let flags: Vec<String> = e["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        let result = load_corpus_file(file, &options_for(&flags));

        if let Some((_, need, reason)) = EXPECTED_EXCEPTIONS.iter().find(|x| x.0 == file) {
            assert!(
                needs.contains(need) && *need != "template-parse",
                "{file}: listed as needing {need}, but EXPECTED.json says {needs:?}"
            );
            excepted_seen.push(file);
            if result.is_ok() != valid {
                excepted += 1;
                println!("excepted {file}: needs {need}: {reason}");
            } else {
                failures.push(format!(
                    "{file} is in EXPECTED_EXCEPTIONS but now matches vmalert; remove it from the list"
                ));
            }
            continue;
        }

        match (&result, valid) {
            (Ok(groups), true) => {
                accepted += 1;
                assert!(groups.iter().all(|g| g.file == file));
            }
            (Err(errors), false) => {
                rejected += 1;
                let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
                // vmalert's own words, where they are not a parser's.
                let needle = why.split(" (").next().unwrap_or(why);
                if !WHY_EXCEPTIONS.iter().any(|x| x.0 == file)
                    && !shown.iter().any(|s| s.contains(needle))
                {
                    failures.push(format!("{file}: no error contains {needle:?}: {shown:#?}"));
                }
                // Where: file and line always; group, rule and field where the
                // problem has them.
                let (_, g, r, f) = CONTEXT
                    .iter()
                    .find(|c| c.0 == file)
                    .unwrap_or_else(|| panic!("{file}: add its expected context to CONTEXT"));
                let ok = errors.iter().any(|err| {
                    let s = err.to_string();
                    s.starts_with(&format!("{file}:"))
                        && err.line.is_some()
                        && g.is_none_or(|g| s.contains(&format!("group {g}")))
                        && r.is_none_or(|r| s.contains(&format!("rule {r}")))
                        && f.is_none_or(|f| s.contains(&format!("field {f:?}")))
                });
                if !ok {
                    failures.push(format!(
                        "{file}: no error names file:line, group {g:?}, rule {r:?}, field {f:?}: {shown:#?}"
                    ));
                }
            }
            (Ok(_), false) => {
                failures.push(format!("{file}: accepted, vmalert rejects it ({why})"))
            }
            (Err(errors), true) => failures.push(format!(
                "{file}: rejected, vmalert accepts it: {:#?}",
                errors.iter().map(ToString::to_string).collect::<Vec<_>>()
            )),
        }

        if e.get("without_flags").is_some() {
            let without = load_corpus_file(file, &LoadOptions::default());
            match WITHOUT_FLAGS_EXCEPTIONS.iter().find(|x| x.0 == file) {
                Some((_, reason)) if without.is_ok() => {
                    excepted_without_flags += 1;
                    println!("excepted {file} without its flags: {reason}");
                }
                Some(_) => failures.push(format!(
                    "{file} without flags now fails as vmalert does; remove it from WITHOUT_FLAGS_EXCEPTIONS"
                )),
                None if without.is_err() => {}
                None => failures.push(format!("{file}: accepted without its flags {flags:?}")),
            }
        }
    }

    for (file, _, _) in EXPECTED_EXCEPTIONS {
        assert!(
            excepted_seen.contains(file),
            "{file} is not in EXPECTED.json any more"
        );
    }
    println!(
        "vmalert corpus: {} entries: {accepted} accepted and {rejected} rejected as vmalert does, \
         {excepted} excepted (need an expression parser); \
         re-run without their flags: {excepted_without_flags} excepted",
        entries.len()
    );
    assert_eq!(accepted + rejected + excepted, entries.len());
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Loading and validation.

fn load(yaml: &str) -> Result<Vec<Group>, Vec<String>> {
    load_str("rules/a.yml", yaml, &LoadOptions::default())
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn load_err(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(g) => panic!("expected an error, got {g:#?}"),
        Err(e) => e,
    }
}

#[test]
fn error_names_file_line_group_rule_field() {
    let errs =
        load_err("groups:\n  - name: g1\n    rules:\n      - record: r1\n        expr: ''\n");
    assert_eq!(
        errs,
        [r#"rules/a.yml:5: group "g1", rule "r1": field "expr": expression can't be empty"#]
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let errs = load_err(
        "groups:\n- name: g\n  interval: -1m\n  limit: -2\n  rules:\n  - alert: a\n    expr: up\n    for: soon\n    bogus: 1\n    other: 2\n",
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with(
        "rules/a.yml:3: group \"g\": field \"interval\": interval shouldn't be lower than 0"
    ));
    assert!(errs[1].starts_with("rules/a.yml:4: group \"g\": field \"limit\": invalid limit -2"));
    assert!(errs.iter().any(|e| e.starts_with(
        "rules/a.yml:9: group \"g\", rule \"a\": field \"bogus\": unknown fields in rule: bogus, other; allowed: record, alert"
    )));
    assert!(errs.iter().any(|e| e.starts_with(
        "rules/a.yml:8: group \"g\", rule \"a\": field \"for\": cannot unmarshal into a duration"
    )));
}

#[test]
fn yaml_errors_carry_the_line() {
    let errs = load_err("groups:\n  - name: g\n    rules: nope\n");
    assert_eq!(
        errs,
        ["rules/a.yml:3: cannot unmarshal: expected a list here"]
    );
    let errs = load_err("groups:\n- name: a\n  name: b\n");
    assert_eq!(
        errs,
        [r#"rules/a.yml:3: cannot unmarshal: mapping key "name" already defined"#]
    );
    let errs = load_err("groups:\n  - name: g\n   bad indent: 1\n");
    assert!(
        errs[0].starts_with("rules/a.yml:3: cannot parse YAML"),
        "{errs:?}"
    );
}

#[test]
fn checked_group_fields() {
    let groups = load(
        r#"
groups:
  - name: g
    type: prometheus
    interval: 1.5m
    eval_offset: -30s
    eval_delay: 10s
    eval_alignment: false
    limit: 0x10
    concurrency: 0
    labels: {team: core, tier: 1}
    params: {nocache: ["1"], extra_label: ["env=dev", "dc=a"]}
    headers: ["AccountID: 1", "", "X-Scope: a:b "]
    notifier_headers: ["TenantID: foo"]
    debug: yes
    rules:
      - record: "job:up:sum"
        expr: 0.95
        labels: {recording: true, empty: ""}
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        debug: false
        update_entries_limit: -1
        labels: {severity: '{{ $labels.sev }}'}
        annotations: {summary: "{{ $value | humanize }}"}
"#,
    )
    .unwrap();
    let g = &groups[0];
    assert_eq!(
        (g.file.as_str(), g.line, g.name.as_str()),
        ("rules/a.yml", 3, "g")
    );
    assert_eq!(g.rule_type, RuleType::Prometheus);
    assert_eq!(g.interval, Some(Duration::from_secs(90)));
    // -30s within a 90s interval is the same instant as +60s.
    assert_eq!(g.eval_offset, Some(Duration::from_secs(60)));
    assert_eq!(g.eval_delay, Some(Duration::from_secs(10)));
    assert_eq!(g.eval_alignment, Some(false));
    assert_eq!((g.limit, g.concurrency, g.debug), (16, 1, true));
    assert_eq!(g.labels["tier"], "1");
    assert_eq!(g.params["extra_label"], ["env=dev", "dc=a"]);
    assert_eq!(
        g.headers,
        [
            Header {
                name: "AccountID".into(),
                value: "1".into()
            },
            Header {
                name: "X-Scope".into(),
                value: "a:b".into()
            },
        ]
    );
    assert_eq!(g.notifier_headers.len(), 1);

    let rec = &g.rules[0];
    assert_eq!(
        rec.kind,
        RuleKind::Recording {
            record: "job:up:sum".into()
        }
    );
    assert_eq!(
        (rec.name(), rec.expr.as_str(), rec.line),
        ("job:up:sum", "0.95", 17)
    );
    // Literal, and the empty value is kept: it means "drop this label".
    assert_eq!(rec.labels["recording"], "true");
    assert_eq!(rec.labels["empty"], "");
    assert!(g.rule_debug(rec));

    let alert = &g.rules[1];
    let RuleKind::Alerting {
        alert: name,
        for_,
        keep_firing_for,
        annotations,
    } = &alert.kind
    else {
        panic!("alerting rule expected");
    };
    assert_eq!(name, "Down");
    assert_eq!(
        (*for_, *keep_firing_for),
        (Duration::from_secs(300), Duration::from_secs(60))
    );
    assert_eq!(annotations["summary"], "{{ $value | humanize }}");
    assert_eq!(alert.update_entries_limit, Some(-1));
    assert!(!g.rule_debug(alert));
    // The rule's own labels win over the group's.
    let merged = g.rule_labels(alert);
    assert_eq!(merged["severity"], "{{ $labels.sev }}");
    assert_eq!(merged["team"], "core");
}

#[test]
fn rule_labels_override_group_labels() {
    let g = &load("groups:\n- name: g\n  labels: {env: prod}\n  rules:\n  - record: r\n    expr: x\n    labels: {env: dev, a: b}\n").unwrap()[0];
    let merged = g.rule_labels(&g.rules[0]);
    assert_eq!(
        merged,
        BTreeMap::from([("a".into(), "b".into()), ("env".into(), "dev".into())])
    );
}

#[test]
fn eval_offset_must_fit_the_interval() {
    assert!(load("groups:\n- name: g\n  interval: 1m\n  eval_offset: 1m\n").is_ok());
    let errs = load_err("groups:\n- name: g\n  eval_offset: 10s\n");
    assert!(errs[0].contains(
        "eval_offset should be smaller than interval; now eval_offset: 10s, interval: 0s"
    ));
    let g = &load("groups:\n- name: g\n  interval: 1h\n  eval_offset: -5m\n").unwrap()[0];
    assert_eq!(g.eval_offset, Some(Duration::from_secs(55 * 60)));
    // interval 0 means "the default", stored as None.
    let g = &load("groups:\n- name: g\n  interval: 0s\n").unwrap()[0];
    assert_eq!(g.interval, None);
}

#[test]
fn duplicates_follow_vmalert_rule_identity() {
    // Same name and expr, different labels: not duplicates.
    assert!(load("groups:\n- name: g\n  rules:\n  - record: r\n    expr: x\n    labels: {a: '1'}\n  - record: r\n    expr: x\n    labels: {a: '2'}\n").is_ok());
    // Alert and record with the same name: not duplicates.
    assert!(load(
        "groups:\n- name: g\n  rules:\n  - record: r\n    expr: x\n  - alert: r\n    expr: x\n"
    )
    .is_ok());
    // `for` and annotations do not count.
    let errs = load_err("groups:\n- name: g\n  rules:\n  - alert: r\n    expr: x\n    for: 1m\n  - alert: r\n    expr: x\n    annotations: {a: b}\n");
    assert_eq!(
        errs,
        [
            r#"rules/a.yml:7: group "g", rule "r": is a duplicate in group: rule #1 (line 4) has the same name, expr and labels"#
        ]
    );
    // Group names: unique per file, free across files.
    let errs = load_err("groups:\n- name: g\n---\ngroups:\n- name: g\n");
    assert!(errs[0].starts_with(r#"rules/a.yml:5: group "g": field "name": group name "g" duplicate in file; first defined at line 2"#));
}

#[test]
fn rule_hash_matches_vmalert() {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let none = labels(&[]);
    assert_ne!(
        hash_rule("up == 1", "", "record", &none),
        hash_rule("up == 1", "record", "", &none)
    );
    assert_ne!(
        hash_rule("up == 1", "r", "", &none),
        hash_rule("up == 2", "r", "", &none)
    );
    assert_ne!(
        hash_rule("e", "", "a", &labels(&[("foo", "bar"), ("baz", "foo")])),
        hash_rule("e", "", "a", &labels(&[("baz", "foo"), ("foo", "baz")]))
    );
    assert_eq!(
        hash_rule("e", "", "a", &labels(&[("foo", "bar"), ("baz", "foo")])),
        hash_rule("e", "", "a", &labels(&[("baz", "foo"), ("foo", "bar")]))
    );
    // FNV-1a 64 of the bytes "x" + "recording" + "r", as Go's hash/fnv computes it.
    assert_eq!(
        hash_rule("x", "r", "", &none),
        fnv_reference(b"xrecordingr")
    );
}

fn fnv_reference(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn record_names_are_metric_names_unless_relaxed() {
    let yaml =
        "groups:\n- name: g\n  rules:\n  - record: recordingTenant124-456:789\n    expr: x\n";
    let errs = load_err(yaml);
    assert!(errs[0]
        .contains(r#"field "record": "recordingTenant124-456:789" is not a valid metric name"#));
    let relaxed = LoadOptions {
        strict_record_names: false,
        ..LoadOptions::default()
    };
    assert!(load_str("a.yml", yaml, &relaxed).is_ok());
    // Alert names are never checked (vmalert's testdata uses `VMRows-2`).
    assert!(load("groups:\n- name: g\n  rules:\n  - alert: VMRows-2\n    expr: x\n").is_ok());
}

#[test]
fn templates_are_parsed_with_vmalert_functions() {
    let errs = load_err("groups:\n- name: g\n  rules:\n  - alert: a\n    expr: x\n    annotations:\n      summary: '{{ unknown | query }}'\n");
    assert_eq!(
        errs,
        [
            r#"rules/a.yml:6: group "g", rule "a": field "annotations.summary": invalid annotations: template "{{ unknown | query }}": line 1, column 4: function unknown not defined"#
        ]
    );
    // Recording-rule labels are literal, but vmalert still parses them.
    let errs = load_err("groups:\n- name: g\n  rules:\n  - record: r\n    expr: x\n    labels: {a: '{{ $nope }}'}\n");
    assert!(errs[0].contains(r#"field "labels.a": invalid labels: template "{{ $nope }}": line 1, column 4: undefined variable $nope"#), "{errs:?}");
    // Turned off, nothing is parsed.
    let off = LoadOptions {
        validate_templates: false,
        ..LoadOptions::default()
    };
    assert!(load_str(
        "a.yml",
        "groups:\n- name: g\n  rules:\n  - record: r\n    expr: x\n    labels: {a: '{{'}\n",
        &off
    )
    .is_ok());
    for ok in [
        "{{ $value | humanize }} {{ $labels.instance }} {{ $expr | queryEscape }}",
        "{{ with printf \"up{instance=%q}\" .Labels.instance | query }}{{ . | first | value | humanize1024 }}{{ end }}",
        "{{ range query \"up\" | sortByLabel \"job\" }}{{ . | label \"job\" }} {{ . | strvalue }}{{ end }}",
        "{{ ($activeAt.Add (parseDurationTime \"1h\")).UnixMilli }} {{ $externalLabels.dc }} {{ $externalURL }} {{ $for }} {{ $alertID }} {{ $groupID }}",
        "{{ humanizeDuration 90 }} {{ humanizePercentage 0.5 }} {{ humanizeTimestamp 0 }} {{ toTime 0 }} {{ now }}",
        "{{ title \"a\" | toUpper | toLower }} {{ match \"a\" \"b\" }} {{ reReplaceAll \"a\" \"b\" \"c\" }} {{ parseDuration \"1m\" }}",
        "{{ pathEscape \"a\" }} {{ jsonEscape \"a\" }} {{ quotesEscape \"a\" }} {{ crlfEscape \"a\" }} {{ htmlEscape \"a\" }} {{ safeHtml \"a\" }}",
        "{{ stripPort \"a:1\" }} {{ stripDomain \"a.b\" }} {{ args 1 2 }} {{ externalURL }} {{ pathPrefix }} {{ graphLink \"up\" }} {{ tableLink \"up\" }}",
        "{{ if eq .Type \"vlogs\" }}logs{{ end }} {{ $type }}",
    ] {
        assert_eq!(check_template(ok), Ok(()), "{ok}");
    }
}

#[test]
fn group_label_templates_are_checked_when_they_will_run() {
    // Merged into alert labels, which are templated: checked.
    let errs = load_err(
        "groups:\n- name: g\n  labels: {a: '{{ bad'}\n  rules:\n  - alert: x\n    expr: y\n",
    );
    assert!(
        errs[0].contains(r#"group "g": field "labels.a": invalid labels"#),
        "{errs:?}"
    );
    // Recording rules only: literal, never run, not checked (as vmalert).
    assert!(load(
        "groups:\n- name: g\n  labels: {a: '{{ bad'}\n  rules:\n  - record: x\n    expr: y\n"
    )
    .is_ok());
}

#[test]
fn vlogs_time_buckets_are_rejected() {
    let bad = "groups:\n- name: g\n  type: vlogs\n  rules:\n  - record: r\n    expr: '* | stats by (path, _time:1m) count()'\n";
    assert!(load_err(bad)[0].contains("bad LogsQL expr: cannot contain time buckets"));
    // Sorting by _time is fine, and so is a prometheus group.
    assert!(load("groups:\n- name: g\n  type: vlogs\n  rules:\n  - record: r\n    expr: '* | stats by (path) count() | sort by (_time)'\n").is_ok());
    assert!(
        load("groups:\n- name: g\n  rules:\n  - record: r\n    expr: 'sum(x) by (_time)'\n")
            .is_ok()
    );
}

/// Issue 11, item 4: a LogsQL query without a stats pipe passed `rules
/// check` and then failed every evaluation; vmalert refuses it at load.
#[test]
fn vlogs_rules_need_a_stats_pipe() {
    let rule = |expr: &str| {
        format!("groups:\n- name: g\n  type: vlogs\n  rules:\n  - record: r\n    expr: '{expr}'\n")
    };
    for bad in [
        "_time:5m level:error",
        "stats count(*) as requests",
        "error | fields a",
    ] {
        let errs = load_err(&rule(bad));
        assert!(
            errs[0].contains("rules/a.yml:6:")
                && errs[0].contains("bad LogsQL expr: missing `| stats ...` pipe"),
            "{bad}: {errs:?}"
        );
    }
    for good in [
        "level:error | stats count()",
        "error | count() as n | filter n:>5",
        "* | extract \"ip=<ip> \" | stats by (ip) count() as n",
    ] {
        assert!(load(&rule(good)).is_ok(), "{good}");
    }
    // PromQL groups are not LogsQL.
    assert!(load("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n").is_ok());
}

#[test]
fn unknown_fields_at_every_level() {
    let errs = load_err("bad_field: 1\ngroups:\n- name: g\n  interval_offset: 3\n  rules:\n  - record: r\n    expr: x\n    type: graphite\n");
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with(
        r#"rules/a.yml:1: field "bad_field": unknown fields in config: bad_field; allowed: groups"#
    ));
    assert!(errs.iter().any(|e| e.starts_with(
        r#"rules/a.yml:8: group "g", rule "r": field "type": unknown fields in rule: type"#
    )));
    assert!(errs.iter().any(|e| e.starts_with(r#"rules/a.yml:4: group "g": field "interval_offset": unknown fields in group "g": interval_offset"#)));
}

#[test]
fn empty_and_null_documents() {
    assert_eq!(load("").unwrap().len(), 0);
    assert_eq!(load("# nothing\n").unwrap().len(), 0);
    assert_eq!(load("---\ngroups:\n---\n").unwrap().len(), 0);
    let g = load("groups:\n- name: g\n  rules:\n- name: h\n").unwrap();
    assert_eq!(g.len(), 2);
    assert!(g[0].rules.is_empty());
}

#[test]
fn checksum_tracks_every_change() {
    let base = "groups:\n- name: g\n  interval: 1m\n  rules:\n  - record: a\n    expr: x\n  - alert: b\n    expr: y\n    for: 1m\n";
    let sum = |yaml: &str, file: &str| {
        load_str(file, yaml, &LoadOptions::default()).unwrap()[0]
            .checksum
            .clone()
    };
    let first = sum(base, "a.yml");
    assert_eq!(first.len(), 64);
    assert_eq!(first, sum(base, "a.yml"), "stable");
    // Comments and formatting do not matter; content does.
    assert_eq!(first, sum(&format!("# header\n{base}"), "a.yml"));
    assert_ne!(first, sum(base, "b.yml"), "file is part of the identity");
    assert_ne!(first, sum(&base.replace("for: 1m", "for: 2m"), "a.yml"));
    assert_ne!(
        first,
        sum(&base.replace("interval: 1m", "interval: 2m"), "a.yml")
    );
    let reordered = "groups:\n- name: g\n  interval: 1m\n  rules:\n  - alert: b\n    expr: y\n    for: 1m\n  - record: a\n    expr: x\n";
    assert_ne!(
        first,
        sum(reordered, "a.yml"),
        "rule order is evaluation order"
    );
}

#[test]
fn env_placeholders() {
    let env: HashMap<&str, &str> = HashMap::from([("TENANT", "42"), ("a.b-c", "x")]);
    let look = |n: &str| env.get(n).map(|v| v.to_string());
    assert_eq!(
        expand_env("t: %{TENANT} %{a.b-c}", look).unwrap(),
        "t: 42 x"
    );
    // Not a variable name: left as written (templates may contain `%{`).
    assert_eq!(
        expand_env("a: '%{ not a name }'", look).unwrap(),
        "a: '%{ not a name }'"
    );
    assert_eq!(
        expand_env("a\nb: %{MISSING}", look),
        Err((2, "missing \"MISSING\" env var".to_string()))
    );
    let err = load_str(
        "a.yml",
        "groups:\n- name: '%{SPILLWAY_TEST_SURELY_UNSET}'\n",
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(err[0]
        .to_string()
        .starts_with("a.yml:2: cannot expand environment vars: missing"));
}

#[test]
fn globs() {
    assert!(segment_matches("*.yml", "a.yml"));
    assert!(!segment_matches("*.yml", "a.yaml"));
    assert!(segment_matches("rules?-[0-9].y*ml", "rules1-7.yaml"));
    assert!(segment_matches("[!a]*", "b"));
    assert!(!segment_matches("[^a]*", "abc"));
    assert!(segment_matches("\\*", "*"));

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("..data")).unwrap();
    for f in [
        "a.yml",
        "b.yml",
        "c.txt",
        "sub/d.yml",
        "sub/deeper/e.yml",
        "..data/x.yml",
    ] {
        std::fs::write(root.join(f), "groups: []\n").unwrap();
    }
    let names = |pattern: &str| -> Vec<String> {
        expand_glob(&format!("{}/{pattern}", root.display()))
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect()
    };
    assert_eq!(names("*.yml"), ["a.yml", "b.yml"]);
    assert_eq!(names("*/*.yml"), ["sub/d.yml"], "hidden ..data is skipped");
    assert_eq!(
        names("**/*.yml"),
        ["a.yml", "b.yml", "sub/d.yml", "sub/deeper/e.yml"]
    );
    assert_eq!(names("a.yml"), ["a.yml"]);
    assert!(names("nothing*.yml").is_empty());
    assert!(expand_glob(&format!("{}/[a.yml", root.display())).is_err());
}

#[test]
fn load_files_checks_each_file_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let g = "groups:\n- name: same\n  rules:\n  - record: r\n    expr: x\n";
    std::fs::write(dir.path().join("a.yml"), g).unwrap();
    std::fs::write(dir.path().join("b.yml"), g).unwrap();
    std::fs::write(dir.path().join("c.yml"), "groups:\n- name: ''\n").unwrap();
    let pattern = |p: &str| format!("{}/{p}", dir.path().display());

    let groups = load_files(&[pattern("[ab].yml")], &LoadOptions::default()).unwrap();
    assert_eq!(groups.len(), 2, "the same group name in two files is fine");
    assert!(groups[0].file.ends_with("a.yml") && groups[1].file.ends_with("b.yml"));
    assert_ne!(groups[0].checksum, groups[1].checksum);

    let errs = load_files(
        &[pattern("*.yml"), pattern("a.yml")],
        &LoadOptions::default(),
    )
    .unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert!(shown
        .iter()
        .any(|e| e.contains("a.yml: file matched more than once (again by pattern")));
    assert!(
        shown
            .iter()
            .any(|e| e
                .contains("c.yml:2: group #1 (no name): field \"name\": group name must be set"))
    );
}

// ---------------------------------------------------------------------------
// Templated alert labels.

fn series(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn tpl(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn render_labels_with_labels_value_and_expr() {
    let out = render_labels(
        &tpl(&[
            ("instance", "{{ $labels.instance }}"),
            ("job_copy", "{{ .Labels.job }}-x"),
            ("value", "{{ $value }}"),
            ("pretty", "{{ $value | humanize }}"),
            ("fixed", "{{ printf \"%.2f\" $value }}"),
            ("expr", "{{ $expr }}"),
            ("link", "/q?query={{ $expr | queryEscape }}"),
            ("severity", "critical"),
            ("drop_me", ""),
        ]),
        &series(&[("__name__", "up"), ("instance", "h1:9100"), ("job", "node")]),
        1234.0,
        "up == 0",
    )
    .unwrap();
    assert_eq!(
        out,
        tpl(&[
            ("instance", "h1:9100"),
            ("job_copy", "node-x"),
            ("value", "1234"),
            ("pretty", "1.234k"),
            ("fixed", "1234.00"),
            ("expr", "up == 0"),
            ("link", "/q?query=up+%3D%3D+0"),
            ("severity", "critical"),
            ("drop_me", ""),
        ])
    );
}

#[test]
fn render_labels_missing_label_is_empty_as_in_vmalert() {
    // vmalert uses missingkey=zero: an absent label renders as "".
    let out = render_labels(
        &tpl(&[
            ("x", "a{{ $labels.nope }}b"),
            ("y", "{{ $labels.nope | toUpper }}"),
        ]),
        &series(&[]),
        0.0,
        "",
    )
    .unwrap();
    assert_eq!(out, tpl(&[("x", "ab"), ("y", "")]));
}

#[test]
fn render_labels_values_print_as_go_does() {
    let r = |v: f64| {
        render_labels(&tpl(&[("v", "{{ $value }}")]), &series(&[]), v, "").unwrap()["v"].clone()
    };
    assert_eq!(r(3.0), "3");
    assert_eq!(r(0.1 + 0.2), "0.30000000000000004");
    assert_eq!(r(1e21), "1e+21");
    assert_eq!(r(f64::NAN), "NaN");
}

#[test]
fn render_labels_with_external_labels_and_for() {
    let external = tpl(&[("dc", "eu1")]);
    let labels = series(&[("instance", "h")]);
    let data = TemplateData {
        labels: Some(&labels),
        value: 1.0,
        expr: "x",
        external_labels: Some(&external),
        for_: Duration::from_secs(300),
        rule_type: "prometheus",
    };
    let out = render_labels_with(
        &tpl(&[("a", "{{ $externalLabels.dc }}/{{ $for }}/{{ .Type }}")]),
        &data,
    )
    .unwrap();
    assert_eq!(out["a"], "eu1/5m0s/prometheus");
}

#[test]
fn render_labels_errors_name_the_label() {
    let err = render_labels(
        &tpl(&[("q", "{{ query \"up\" | first | value }}")]),
        &series(&[]),
        0.0,
        "",
    )
    .unwrap_err();
    assert!(
        err.starts_with("label \"q\", template \"{{ query \\\"up\\\" | first | value }}\":"),
        "{err}"
    );
    assert!(
        err.contains("query is not available in label templates"),
        "{err}"
    );
    let err = render_labels(&tpl(&[("b", "{{ $value")]), &series(&[]), 0.0, "").unwrap_err();
    assert!(err.contains("unclosed action"), "{err}");
}

#[test]
fn template_functions_behave_like_vmalerts() {
    let r = |t: &str| render_labels(&tpl(&[("x", t)]), &series(&[]), 0.0, "").unwrap()["x"].clone();
    assert_eq!(r("{{ humanize 0.00123 }}"), "1.23m");
    assert_eq!(r("{{ humanize1024 1048576 }}"), "1Mi");
    assert_eq!(r("{{ humanize1024 0.5 }}"), "0.5");
    assert_eq!(r("{{ humanizePercentage 0.1234 }}"), "12.34%");
    assert_eq!(r("{{ humanizeDuration 93784 }}"), "1d 2h 3m 4s");
    assert_eq!(r("{{ humanizeDuration 1.5 }}"), "1.5s");
    assert_eq!(r("{{ humanizeDuration 0.25 }}"), "250ms");
    assert_eq!(
        r("{{ humanizeTimestamp 1704207845.5 }}"),
        "2024-01-02 15:04:05.5 +0000 UTC"
    );
    assert_eq!(r("{{ \"a b/c\" | pathEscape }}"), "a%20b%2Fc");
    assert_eq!(
        r("{{ \"<a \\\"b\\\">\" | jsonEscape }}"),
        "\"\\u003ca \\\"b\\\"\\u003e\""
    );
    assert_eq!(r("{{ \"a\\nb\" | crlfEscape }}"), "a\\nb");
    assert_eq!(
        r("{{ stripPort \"host:9100\" }} {{ stripPort \"[::1]:80\" }} {{ stripPort \"host\" }}"),
        "host ::1 host"
    );
    assert_eq!(
        r("{{ stripDomain \"a.b.c:9100\" }} {{ stripDomain \"10.0.0.1:1\" }}"),
        "a:9100 10.0.0.1:1"
    );
    assert_eq!(r("{{ reReplaceAll \"(a+)\" \"<$1>\" \"xaay\" }}"), "x<aa>y");
    assert_eq!(r("{{ if match \"^h\" \"host\" }}yes{{ end }}"), "yes");
    assert_eq!(r("{{ title \"hello wide-world\" }}"), "Hello Wide-World");
    assert_eq!(r("{{ parseDuration \"1m30s\" }}"), "90");
    assert_eq!(r("{{ (args 1 \"b\").arg1 }}"), "b");
}

#[test]
fn check_template_positions_are_the_users() {
    assert_eq!(
        check_template("ok {{ $value }"),
        Err("line 1, column 14: unexpected } in operand".into())
    );
    assert_eq!(
        check_template("line one\n{{ nope }}"),
        Err("line 2, column 4: function nope not defined".into())
    );
}

#[test]
fn durations() {
    assert_eq!(parse_signed_duration_ms("5m"), Ok(300_000));
    assert_eq!(parse_signed_duration_ms("-1h30m"), Ok(-5_400_000));
    assert_eq!(parse_signed_duration_ms("1.5h"), Ok(5_400_000));
    assert_eq!(parse_signed_duration_ms("300"), Ok(300_000));
    assert_eq!(parse_signed_duration_ms("1ms"), Ok(1));
    assert!(parse_signed_duration_ms("soon").is_err());
    assert!(parse_signed_duration_ms("").is_err());
    assert_eq!(format_go_duration(Duration::from_secs(3900)), "1h5m0s");
    assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(format_go_duration(Duration::ZERO), "0s");
}

#[test]
fn anchors_and_merge_keys() {
    // yaml.v2 resolves `&anchor`, `*alias` and `<<:` merges; so do we.
    let g = load("groups:\n- &c\n  name: g\n  interval: 1m\n  labels: &l {a: b}\n  rules:\n  - record: r\n    expr: x\n    labels: *l\n- <<: *c\n  name: h\n").unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(
        (g[1].name.as_str(), g[1].interval),
        ("h", Some(Duration::from_secs(60)))
    );
    assert_eq!(g[1].rules[0].labels["a"], "b");
    assert_ne!(g[0].checksum, g[1].checksum);
}
