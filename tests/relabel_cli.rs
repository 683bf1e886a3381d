//! `spillway relabel` through the binary: step-by-step output, run configs
//! with `--destination`, exit code 2 with file:line for bad input, and every
//! relabel conformance vector (tests/conformance/relabel/) under
//! `--dialect` of the engine it came from.

mod common;

use common::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn prints_each_step_of_a_relabel_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "relabel.yml",
        "- action: labelmap\n  regex: meta_(.+)\n- source_labels: [team]\n  target_label: __tmp\n- action: drop\n  source_labels: [team]\n  regex: nobody\n",
    );
    let run = spillway(&[
        "relabel",
        "--config",
        &file,
        "--labels",
        r#"{__name__="up",meta_team="sre"}"#,
    ]);
    run.assert_code(0);
    let out = run.stdout();
    let expected = "\
input: up{meta_team=\"sre\"}

# relabel_configs (victoriametrics dialect)
step 1:
- action: labelmap
  regex: meta_(.+)
  in:  up{meta_team=\"sre\"}
  out: up{meta_team=\"sre\", team=\"sre\"}
step 2:
- source_labels: [team]
  target_label: __tmp
  in:  up{meta_team=\"sre\", team=\"sre\"}
  out: up{__tmp=\"sre\", meta_team=\"sre\", team=\"sre\"}
step 3:
- action: drop
  source_labels: [team]
  regex: nobody
  in:  up{__tmp=\"sre\", meta_team=\"sre\", team=\"sre\"}
  out: up{__tmp=\"sre\", meta_team=\"sre\", team=\"sre\"}
labels starting with __ removed (as vmagent does after relabeling):
  in:  up{__tmp=\"sre\", meta_team=\"sre\", team=\"sre\"}
  out: up{meta_team=\"sre\", team=\"sre\"}

result: up{meta_team=\"sre\", team=\"sre\"}
";
    assert_eq!(out, expected, "{}", run.describe());
}

#[test]
fn follows_a_run_config_through_a_destination() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "run.yml",
        "external_labels: {cluster: eu1}
global_relabel_configs:
  - {action: drop, source_labels: [__name__], regex: junk}
destinations:
  - name: incidents
    url: http://127.0.0.1:8428/api/v1/write
    relabel_configs:
      - {action: keep, source_labels: [severity], regex: critical}
    external_labels: {routed: 'yes'}
",
    );
    let run = spillway(&[
        "relabel",
        "-c",
        &file,
        "--destination",
        "incidents",
        "--labels",
        r#"cpu{severity="critical"}"#,
    ]);
    run.assert_code(0);
    let out = run.stdout();
    assert!(
        out.contains("# global_relabel_configs (victoriametrics dialect)\nstep 1:"),
        "{out}"
    );
    assert!(
        out.contains("# destinations[0] (incidents) relabel_configs"),
        "{out}"
    );
    assert!(
        out.ends_with("result: cpu{cluster=\"eu1\", routed=\"yes\", severity=\"critical\"}\n"),
        "{out}"
    );
    let run = spillway(&[
        "relabel",
        "-c",
        &file,
        "--destination",
        "incidents",
        "--labels",
        "cpu",
    ]);
    run.assert_code(0);
    assert!(
        run.stdout().ends_with("result: dropped\n"),
        "{}",
        run.stdout()
    );
}

#[test]
fn bad_configs_name_file_line_and_field_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "bad.yml",
        "- action: replace\n  source_labels: [a]\n  target_label: b\n- action: hashmod\n  source_labels: [a]\n  target_label: h\n",
    );
    let run = spillway(&["relabel", "--config", &file, "--labels", "{a=\"b\"}"]);
    run.assert_code(2);
    let err = run.stderr();
    assert!(err.contains(&format!("{file}:4")), "{err}");
    assert!(err.contains("relabel_configs[1].modulus"), "{err}");

    let typo = write(&dir, "typo.yml", "- action: keep\n  source_label: [a]\n");
    let run = spillway(&["relabel", "--config", &typo, "--labels", "{a=\"b\"}"]);
    run.assert_code(2);
    let err = run.stderr();
    assert!(err.contains(&format!("{typo}:2")), "{err}");
    assert!(err.contains("source_label"), "{err}");

    let ok = write(&dir, "ok.yml", "- action: keep\n  source_labels: [a]\n");
    let run = spillway(&["relabel", "--config", &ok, "--labels", "{a=~\"b\"}"]);
    run.assert_code(2);
    assert!(run.stderr().contains("--labels"), "{}", run.stderr());
}

#[test]
fn run_reports_every_config_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "run.yml",
        "destinations:
  - name: a
    url: http://127.0.0.1:1
    max_disk_bytes: 1 parsec
  - name: a
    relabel_configs:
      - action: keep
        source_labels: [x]
        regex: '('
",
    );
    let run = spillway(&["run", "-c", &file, "--http.listen", "127.0.0.1:0"]);
    run.assert_code(2);
    let err = run.stderr();
    for want in [
        format!("{file}:4: destinations[0].max_disk_bytes: invalid size"),
        format!("{file}:5: destinations[1].name: \"a\" is already the name of destinations[0]"),
        format!("{file}:5: destinations[1].url is missing"),
        format!("{file}:9: destinations[1].relabel_configs[0].regex"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    let unknown = write(&dir, "unknown.yml", "destinations: []\nstorage: {pth: x}\n");
    let run = spillway(&["run", "-c", &unknown]);
    run.assert_code(2);
    assert!(
        run.stderr().contains(&format!("{unknown}:2")),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("pth"), "{}", run.stderr());
}

/// The relabel conformance corpus through the binary: each Prometheus case
/// with `--dialect prometheus`, each vmagent case with `--dialect
/// victoriametrics`, each regex vector with both (issue 11: "the relabel
/// conformance vectors pass through `spillway relabel --dialect <their
/// engine>`"). Inputs are written as `--labels` literals: `{}` for the empty
/// set, quoted names for `utf-8.label` or `dropme-please`.
#[test]
fn conformance_vectors_pass_through_the_binary() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/relabel");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{corpus}/{name}")).unwrap()).unwrap()
    };
    let labels_arg = |input: &BTreeMap<String, String>| {
        spillway::model::Labels::from_pairs(input.clone()).to_string()
    };
    // What the rules made of the series: the labels before vmagent's `__`
    // cleanup (Prometheus does none; vmagent only when finalizing) or after.
    let outcome = |out: &str, finalized: bool| -> Option<BTreeMap<String, String>> {
        let lines: Vec<&str> = out.lines().collect();
        let result = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("result: "))?;
        let cleanup = lines
            .iter()
            .position(|l| l.starts_with("labels starting with __ removed"))
            .map(|i| {
                lines[i + 1]
                    .trim_start()
                    .strip_prefix("in:")
                    .unwrap()
                    .trim()
            });
        let text = match cleanup {
            Some(before) if !finalized => before,
            _ if result.starts_with("dropped") => return None,
            _ => result,
        };
        let mut labels = spillway::model::selector::parse_label_set(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        if finalized {
            // The command shows the cleanup only after rules that ran (as
            // routing applies it); the corpus finalizes after no rules too.
            spillway::transform::relabel::finalize(&mut labels);
        }
        let map: BTreeMap<String, String> = labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let mut ran = 0;
    let mut failures = Vec::new();
    for (file, dialect) in [
        ("prometheus.json", "prometheus"),
        ("victoriametrics.json", "victoriametrics"),
    ] {
        for case in read(file)["cases"].as_array().unwrap() {
            let id = case["id"].as_str().unwrap();
            let yaml = case["relabel_configs_yaml"]
                .as_str()
                .filter(|y| !y.trim().is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| case["relabel_configs"].to_string());
            let config = write(&dir, &format!("{id}.yml"), &yaml);
            let input: BTreeMap<String, String> =
                serde_json::from_value(case["input"].clone()).unwrap();
            let labels = labels_arg(&input);
            let run = spillway(&[
                "relabel",
                "-c",
                &config,
                "--dialect",
                dialect,
                "--labels",
                &labels,
            ]);
            ran += 1;
            if run.code() != 0 {
                failures.push(format!("{id}: {}", run.describe()));
                continue;
            }
            let want: Option<BTreeMap<String, String>> =
                serde_json::from_value(case["output"].clone()).unwrap();
            let want = want.filter(|m| !m.is_empty());
            let finalized = case["is_finalize"].as_bool().unwrap_or(false);
            let got = outcome(&run.stdout(), finalized);
            if got != want {
                failures.push(format!(
                    "{id} ({}): got {got:?}, want {want:?}\n{}",
                    case["name"],
                    run.stdout()
                ));
            }
        }
    }
    for (i, v) in read("victoriametrics-regex-match.json")["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let config = write(
            &dir,
            &format!("regex-{i}.yml"),
            &serde_json::json!([{"action": "keep", "source_labels": ["x"], "regex": v["regex"]}])
                .to_string(),
        );
        let input = BTreeMap::from([
            ("x".to_string(), v["string"].as_str().unwrap().to_string()),
            ("y".to_string(), "1".to_string()),
        ]);
        for dialect in ["prometheus", "victoriametrics"] {
            let run = spillway(&[
                "relabel",
                "-c",
                &config,
                "--dialect",
                dialect,
                "--labels",
                &labels_arg(&input),
            ]);
            ran += 1;
            let kept = !run.stdout().ends_with("result: dropped\n");
            if run.code() != 0 || kept != v["match"].as_bool().unwrap() {
                failures.push(format!("regex {i} ({dialect}): {}", run.describe()));
            }
        }
    }
    assert!(ran >= 34 + 127 + 40, "only {ran} vectors ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} vectors failed through the binary:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
