//! The relabel conformance corpus (`tests/conformance/relabel/`),
//! every case run under the dialect of the engine it came from. A case we
//! cannot pass must be listed in [`EXPECTED_FAILURES`] with the reason; the
//! test fails on an unlisted failure and on a listed case that now passes.

use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/relabel");

/// `(case id, why it fails)`.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

#[derive(Deserialize)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    name: String,
    input: BTreeMap<String, String>,
    relabel_configs: serde_json::Value,
    #[serde(default)]
    relabel_configs_yaml: Option<String>,
    output: Option<BTreeMap<String, String>>,
    #[serde(default)]
    is_finalize: bool,
}

#[derive(Deserialize)]
struct RegexFile {
    vectors: Vec<RegexVector>,
}

#[derive(Deserialize)]
struct RegexVector {
    regex: String,
    string: String,
    #[serde(rename = "match")]
    matches: bool,
}

fn read(name: &str) -> String {
    let path = format!("{DIR}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// What the upstream engine returned: `None` for dropped or no labels left
/// (the corpus README treats `null` and `{}` alike).
type Outcome = Option<BTreeMap<String, String>>;

fn outcome(
    rules: &RelabelRules,
    input: &BTreeMap<String, String>,
    finalize_after: bool,
) -> Outcome {
    let mut labels = Labels::from_pairs(input.clone());
    if !rules.apply(&mut labels) {
        return None;
    }
    if finalize_after {
        finalize(&mut labels);
    }
    let map: BTreeMap<String, String> = labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn run_case(case: &Case, dialect: Dialect) -> Result<(), String> {
    let configs: Vec<RelabelConfig> = serde_json::from_value(case.relabel_configs.clone())
        .map_err(|e| format!("relabel_configs do not deserialize: {e}"))?;
    let rules = RelabelRules::from_configs(configs, dialect).map_err(|e| e.to_string())?;
    let got = outcome(&rules, &case.input, case.is_finalize);

    // The YAML text, where given, must parse to rules that behave the same.
    if let Some(yaml) = case
        .relabel_configs_yaml
        .as_deref()
        .filter(|y| !y.trim().is_empty())
    {
        let from_yaml =
            RelabelRules::from_yaml(yaml, &case.id, dialect).map_err(|e| e.to_string())?;
        let via_yaml = outcome(&from_yaml, &case.input, case.is_finalize);
        if via_yaml != got {
            return Err(format!(
                "YAML and JSON configs disagree: {via_yaml:?} vs {got:?}"
            ));
        }
    }

    // The debug path must end where `apply` ends.
    let steps = rules.apply_debug(&Labels::from_pairs(case.input.clone()));
    let debug_end = match steps.last() {
        None => Some(Labels::from_pairs(case.input.clone())),
        Some(s) => s.after.clone(),
    };
    let mut debug_end = debug_end.filter(|l| !l.is_empty());
    if let (Some(l), true) = (debug_end.as_mut(), case.is_finalize) {
        finalize(l);
    }
    let debug_map = debug_end
        .map(|l| {
            l.iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|m| !m.is_empty());
    if debug_map != got {
        return Err(format!(
            "apply_debug ends at {debug_map:?}, apply at {got:?}"
        ));
    }

    let want = case.output.clone().filter(|m| !m.is_empty());
    if got != want {
        return Err(format!("got {got:?}, want {want:?}"));
    }
    Ok(())
}

#[test]
fn conformance_corpus() {
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut ran = 0;

    for (file, dialect) in [
        ("prometheus.json", Dialect::Prometheus),
        ("victoriametrics.json", Dialect::VictoriaMetrics),
    ] {
        let parsed: CaseFile =
            serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!parsed.cases.is_empty(), "{file} has no cases");
        for case in &parsed.cases {
            ran += 1;
            if let Err(why) = run_case(case, dialect) {
                failures.insert(
                    case.id.clone(),
                    format!("{} ({}): {why}", case.id, case.name),
                );
            }
        }
    }

    // Whole-value regex matching; the corpus says both engines agree here.
    let regexes: RegexFile = serde_json::from_str(&read("victoriametrics-regex-match.json"))
        .unwrap_or_else(|e| panic!("victoriametrics-regex-match.json: {e}"));
    for (i, v) in regexes.vectors.iter().enumerate() {
        for dialect in [Dialect::Prometheus, Dialect::VictoriaMetrics] {
            ran += 1;
            let id = format!("vm-regex-{:02}-{dialect:?}", i + 1);
            let config = RelabelConfig {
                action: Some("keep".into()),
                source_labels: vec!["x".into()],
                regex: Some(MultiLineRegex(v.regex.clone())),
                ..Default::default()
            };
            let result = RelabelRules::from_configs(vec![config], dialect).map(|rules| {
                let mut labels = Labels::from_pairs([("x", v.string.as_str()), ("y", "1")]);
                rules.apply(&mut labels)
            });
            match result {
                Ok(m) if m == v.matches => {}
                Ok(m) => {
                    failures.insert(
                        id.clone(),
                        format!("{id}: {:?} on {:?} matched={m}", v.regex, v.string),
                    );
                }
                Err(e) => {
                    failures.insert(id.clone(), format!("{id}: {e}"));
                }
            }
        }
    }

    let expected: BTreeMap<&str, &str> = EXPECTED_FAILURES.iter().copied().collect();
    let unexpected: Vec<&String> = failures
        .iter()
        .filter(|(id, _)| !expected.contains_key(id.as_str()))
        .map(|(_, why)| why)
        .collect();
    let now_passing: Vec<&str> = expected
        .keys()
        .filter(|id| !failures.contains_key(**id))
        .copied()
        .collect();
    println!(
        "relabel conformance: {ran} cases run, {} passed, {} expected failures",
        ran - failures.len(),
        expected.len()
    );
    assert!(
        ran >= 34 + 127 + 40,
        "only {ran} cases ran: is the corpus complete?"
    );
    assert!(
        unexpected.is_empty(),
        "{} conformance cases failed:\n{}",
        unexpected.len(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        now_passing.is_empty(),
        "these cases now pass; remove them from EXPECTED_FAILURES: {now_passing:?}"
    );
}
