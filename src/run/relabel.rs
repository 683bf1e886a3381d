//! `spillway relabel`: shows what relabeling does to one series, step by
//! step, like vmagent's relabel debug page. The config file is either a
//! plain `relabel_configs` list (what vmagent's `-remoteWrite.relabelConfig`
//! and `-remoteWrite.urlRelabelConfig` read) or a `spillway run` config:
//! then the series goes the way routed data goes, through
//! `global_relabel_configs` and `external_labels`, and with `--destination
//! NAME` on through that destination's `relabel_configs` and
//! `external_labels`. Each stage follows its dialect (`relabel_dialect` of
//! the run config or the destination; vmagent's for a plain list) unless
//! `--dialect` names one for all.

use super::config::{DestinationLines, RunConfig};
use super::route::{check_labels, compile_relabel};
use crate::model::selector::parse_label_set;
use crate::model::Labels;
use crate::transform::relabel::{Dialect, RelabelRules};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct RelabelOptions {
    pub config: PathBuf,
    /// `{__name__="x", a="b"}` or `x{a="b"}`.
    pub labels: String,
    pub destination: Option<String>,
    /// Overrides every stage's dialect.
    pub dialect: Option<Dialect>,
}

/// One stage of the path a series takes.
struct Stage {
    title: String,
    rules: RelabelRules,
    external_labels: Vec<(String, String)>,
}

/// The text to print, or every problem found (bad config or labels).
pub fn explain(opts: &RelabelOptions) -> Result<String, Vec<String>> {
    let input = parse_label_set(&opts.labels).map_err(|e| vec![format!("--labels: {e}")])?;
    let source = opts.config.display().to_string();
    let text = crate::model::input::read_config(&opts.config, "a relabel config")
        .map_err(|e| vec![e.to_string()])?;
    let stages = if is_list(&text) {
        if opts.destination.is_some() {
            return Err(vec![format!(
                "--destination: {source} is a plain relabel_configs list, not a run config with destinations"
            )]);
        }
        let dialect = opts.dialect.unwrap_or_default();
        let rules = RelabelRules::from_yaml(&text, &source, dialect).map_err(|e| {
            e.problems()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        })?;
        vec![Stage {
            title: format!("relabel_configs ({dialect} dialect)"),
            rules,
            external_labels: Vec::new(),
        }]
    } else {
        run_config_stages(&text, &source, opts.destination.as_deref(), opts.dialect)?
    };
    Ok(render(&input, &stages))
}

/// A YAML sequence at the top (possibly empty), rather than a mapping.
fn is_list(text: &str) -> bool {
    matches!(
        crate::model::yaml::parse::<serde_json::Value>(text),
        Ok(serde_json::Value::Array(_))
    )
}

fn run_config_stages(
    text: &str,
    source: &str,
    destination: Option<&str>,
    dialect: Option<Dialect>,
) -> Result<Vec<Stage>, Vec<String>> {
    let loaded = RunConfig::parse(text, source).map_err(|e| vec![e])?;
    let config = &loaded.config;
    let mut problems = Vec::new();
    let global_dialect = dialect.or(config.relabel_dialect).unwrap_or_default();
    let global = compile_relabel(
        &config.global_relabel_configs,
        global_dialect,
        source,
        "global_relabel_configs",
        &loaded.lines.global_relabel_configs,
    );
    let external = check_labels(&config.external_labels, "external_labels").map_err(|p| {
        p.into_iter()
            .map(|p| format!("{source}: {p}"))
            .collect::<Vec<_>>()
    });
    let mut stages = Vec::new();
    match (global, external) {
        (Ok(rules), Ok(external_labels)) => stages.push(Stage {
            title: format!("global_relabel_configs ({global_dialect} dialect)"),
            rules,
            external_labels,
        }),
        (g, e) => {
            problems.extend(g.err().unwrap_or_default());
            problems.extend(e.err().unwrap_or_default());
        }
    }
    if let Some(name) = destination {
        let Some(i) = config.destinations.iter().position(|d| d.name == name) else {
            let names: Vec<&str> = config
                .destinations
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            problems.push(format!(
                "--destination: {source} has no destination named {name:?}; it has: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
            return Err(problems);
        };
        let d = &config.destinations[i];
        let none = DestinationLines::default();
        let lines = loaded.lines.destinations.get(i).unwrap_or(&none);
        let path = format!("destinations[{i}].relabel_configs");
        let d_dialect = dialect
            .or(d.relabel_dialect)
            .or(config.relabel_dialect)
            .unwrap_or_default();
        let rules = compile_relabel(
            &d.relabel_configs,
            d_dialect,
            source,
            &path,
            &lines.relabel_configs,
        );
        let external = check_labels(
            &d.external_labels,
            &format!("destinations[{i}].external_labels"),
        )
        .map_err(|p| {
            p.into_iter()
                .map(|p| format!("{source}: {p}"))
                .collect::<Vec<_>>()
        });
        match (rules, external) {
            (Ok(rules), Ok(external_labels)) => stages.push(Stage {
                title: format!("destinations[{i}] ({name}) relabel_configs ({d_dialect} dialect)"),
                rules,
                external_labels,
            }),
            (r, e) => {
                problems.extend(r.err().unwrap_or_default());
                problems.extend(e.err().unwrap_or_default());
            }
        }
    }
    if problems.is_empty() {
        Ok(stages)
    } else {
        Err(problems)
    }
}

fn render(input: &Labels, stages: &[Stage]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "input: {input}");
    let mut current = input.clone();
    for stage in stages {
        let _ = writeln!(out, "\n# {}", stage.title);
        if stage.rules.is_empty() {
            let _ = writeln!(out, "(no rules)");
        }
        for (i, step) in stage.rules.apply_debug(&current).iter().enumerate() {
            let _ = writeln!(out, "step {}:\n{step}", i + 1);
        }
        if !stage.rules.is_empty() {
            if !stage.rules.apply(&mut current) {
                let _ = writeln!(out, "\nresult: dropped");
                return out;
            }
            let relabeled = current.clone();
            crate::transform::relabel::finalize(&mut current);
            if relabeled != current {
                let _ = writeln!(
                    out,
                    "labels starting with __ removed (as vmagent does after relabeling):\n  in:  {relabeled}\n  out: {current}"
                );
            }
            if current.is_empty() {
                let _ = writeln!(out, "\nresult: dropped (no label left)");
                return out;
            }
        }
        if !stage.external_labels.is_empty() {
            let before = current.clone();
            for (k, v) in &stage.external_labels {
                if current.get(k).is_none() {
                    current.set(k.as_str(), v.as_str());
                }
            }
            let names: Vec<String> = stage
                .external_labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let _ = writeln!(
                out,
                "external_labels ({}; a label the series has is kept):\n  in:  {before}\n  out: {current}",
                names.join(", ")
            );
        }
    }
    let _ = writeln!(out, "\nresult: {current}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn plain_list_step_by_step() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            &dir,
            "r.yml",
            "- action: replace\n  source_labels: [a]\n  target_label: c\n- action: drop\n  source_labels: [c]\n  regex: zz\n",
        );
        let out = explain(&RelabelOptions {
            config,
            labels: r#"{__name__="x",a="b"}"#.into(),
            destination: None,
            dialect: None,
        })
        .unwrap();
        assert!(out.starts_with("input: x{a=\"b\"}\n"), "{out}");
        assert!(out.contains("step 1:\n- action: replace"), "{out}");
        assert!(out.contains("  out: x{a=\"b\", c=\"b\"}"), "{out}");
        assert!(out.ends_with("result: x{a=\"b\", c=\"b\"}\n"), "{out}");
    }

    #[test]
    fn run_config_with_destination() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            &dir,
            "run.yml",
            "external_labels: {env: prod}\nglobal_relabel_configs:\n  - target_label: g\n    replacement: '1'\ndestinations:\n  - name: d1\n    url: http://127.0.0.1:1\n    relabel_configs:\n      - action: keep\n        source_labels: [env]\n        regex: dev\n",
        );
        let opts = RelabelOptions {
            config,
            labels: "x".into(),
            destination: Some("d1".into()),
            dialect: None,
        };
        let out = explain(&opts).unwrap();
        assert!(out.contains("# global_relabel_configs"), "{out}");
        assert!(
            out.contains("# destinations[0] (d1) relabel_configs (victoriametrics dialect)"),
            "{out}"
        );
        assert!(out.ends_with("result: dropped\n"), "{out}");
        let e = explain(&RelabelOptions {
            destination: Some("nope".into()),
            ..opts
        })
        .unwrap_err();
        assert!(e[0].contains("it has: d1"), "{e:?}");
    }

    /// Issue 11, item 7: a Prometheus user's `hashmod` sharding must give
    /// Prometheus' numbers (md5), per destination or for the whole config.
    #[test]
    fn dialect_per_destination_globally_and_from_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let hashmod =
            "      - {action: hashmod, source_labels: [c], target_label: shard, modulus: 1000}\n";
        let config = write(
            &dir,
            "run.yml",
            &format!(
                "global_relabel_configs:\n  - {{action: hashmod, source_labels: [c], target_label: g, modulus: 1000}}\ndestinations:\n  - name: prom\n    url: http://127.0.0.1:1\n    relabel_dialect: prometheus\n    relabel_configs:\n{hashmod}  - name: vm\n    url: http://127.0.0.1:2\n    relabel_configs:\n{hashmod}"
            ),
        );
        let run = |destination: &str, dialect: Option<Dialect>| {
            explain(&RelabelOptions {
                config: config.clone(),
                labels: r#"{c="baz"}"#.into(),
                destination: Some(destination.into()),
                dialect,
            })
            .unwrap()
        };
        // Prometheus' md5 hashmod of "baz" % 1000 is 976 (its own test);
        // vmagent's xxhash gives another shard.
        let prom = run("prom", None);
        assert!(prom.contains(", shard=\"976\"}\n"), "{prom}");
        assert!(
            prom.contains("(prom) relabel_configs (prometheus dialect)"),
            "{prom}"
        );
        assert!(!prom.contains("g=\"976\""), "{prom}");
        let vm = run("vm", None);
        assert!(!vm.contains("shard=\"976\""), "{vm}");
        // --dialect wins over the config, for every stage.
        let forced = run("vm", Some(Dialect::Prometheus));
        assert!(
            forced.ends_with("result: {c=\"baz\", g=\"976\", shard=\"976\"}\n"),
            "{forced}"
        );
        // The top-level key sets the default of every stage.
        std::fs::write(
            &config,
            format!("relabel_dialect: prometheus\ndestinations:\n  - name: vm\n    url: http://127.0.0.1:2\n    relabel_configs:\n{hashmod}"),
        )
        .unwrap();
        let global = run("vm", None);
        assert!(global.contains("shard=\"976\""), "{global}");
        // A wrong value names file, line and what is expected.
        std::fs::write(&config, "relabel_dialect: promql\n").unwrap();
        let e = explain(&RelabelOptions {
            config: config.clone(),
            labels: "x".into(),
            destination: None,
            dialect: None,
        })
        .unwrap_err()
        .join("\n");
        assert!(e.contains("run.yml:1") && e.contains("prometheus"), "{e}");
    }

    /// Issue 11, item 8: an empty input set is valid (vmagent's debug page
    /// takes it), and names that are not Prometheus-style are written quoted.
    #[test]
    fn empty_and_quoted_label_sets() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            &dir,
            "r.yml",
            "- {target_label: added, replacement: 'yes'}\n- {action: labeldrop, regex: 'drop.*'}\n",
        );
        let run = |labels: &str| {
            explain(&RelabelOptions {
                config: config.clone(),
                labels: labels.into(),
                destination: None,
                dialect: None,
            })
        };
        let out = run("{}").unwrap();
        assert!(out.starts_with("input: {}\n"), "{out}");
        assert!(out.ends_with("result: {added=\"yes\"}\n"), "{out}");
        let out = run(r#"{"dropme-please"="x", "keep.me-too"="y"}"#).unwrap();
        assert!(
            out.starts_with(r#"input: {"dropme-please"="x", "keep.me-too"="y"}"#),
            "{out}"
        );
        assert!(
            out.ends_with("result: {added=\"yes\", \"keep.me-too\"=\"y\"}\n"),
            "{out}"
        );
    }

    #[test]
    fn bad_rule_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            &dir,
            "run.yml",
            "destinations:\n  - name: d1\n    url: http://127.0.0.1:1\n    relabel_configs:\n      - action: hashmod\n        source_labels: [a]\n        target_label: b\n",
        );
        let e = explain(&RelabelOptions {
            config: config.clone(),
            labels: "x".into(),
            destination: Some("d1".into()),
            dialect: None,
        })
        .unwrap_err();
        let msg = e.join("\n");
        assert!(msg.contains("run.yml:5"), "{msg}");
        assert!(msg.contains("destinations[0].relabel_configs[0]"), "{msg}");
        assert!(msg.contains("modulus"), "{msg}");
    }
}
