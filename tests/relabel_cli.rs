//! `spillway relabel` through the binary: step-by-step output, run configs
//! with `--destination`, and exit code 2 with file:line for bad input.

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

# relabel_configs
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
    assert!(out.contains("# global_relabel_configs\nstep 1:"), "{out}");
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
