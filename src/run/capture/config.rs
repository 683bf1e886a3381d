//! `captures:` of the run config: the YAML as written ([`CaptureSpec`]) and
//! checked ([`CaptureDef`]), with every problem reported at once as
//! `FILE:LINE: captures[i].field: what is wrong`.
//!
//! ```yaml
//! captures:
//!   - name: cpu_context
//!     if: '{severity="critical"}'          # over the rule result after global relabeling
//!     rules: [static_thresholds/critical_cpu_usage_export]  # GROUP/RULE globs; default all
//!     match: '{instance="{{ $labels.instance }}"}'          # one selector or a list
//!     before: 10m
//!     after: 5m
//!     max_duration: 6h
//!     destinations: [debug_storage]
//!     labels: {captured_by: cpu_context}
//!     max_series: 1000
//!     max_samples: 5000000
//!     chunk: 5m                            # time per raw fetch
//!     fallback_step: 15s                   # query_range step where no raw API exists
//! ```

use crate::model::selector::Selector;
use crate::model::time::parse_duration;
use crate::run::config::{ItemLines, LoadedConfig};
use crate::run::rules::{check_template, render_labels_with, Group, TemplateData};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const DEFAULT_BEFORE_MS: i64 = 5 * 60_000;
pub const DEFAULT_AFTER_MS: i64 = 5 * 60_000;
pub const DEFAULT_MAX_DURATION_MS: i64 = 6 * 3_600_000;
pub const DEFAULT_MAX_SERIES: usize = 1000;
pub const DEFAULT_MAX_SAMPLES: u64 = 5_000_000;
pub const DEFAULT_CHUNK_MS: i64 = 5 * 60_000;
pub const DEFAULT_FALLBACK_STEP_MS: i64 = 15_000;
/// The state directory under `storage.path`.
pub const STATE_DIR: &str = "capture-state";

/// `match:` as one selector or a list of them.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One entry of `captures:` as written.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "if", default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(rename = "match", default)]
    pub matches: Option<OneOrMany>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub max_duration: Option<String>,
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub max_series: Option<usize>,
    pub max_samples: Option<u64>,
    pub chunk: Option<String>,
    pub fallback_step: Option<String>,
}

/// A checked capture.
#[derive(Clone, Debug)]
pub struct CaptureDef {
    pub name: Arc<str>,
    /// `if:`; `None` takes every breach.
    pub condition: Option<Selector>,
    /// `GROUP/RULE` (or `RULE`) globs; empty takes every rule.
    pub rules: Vec<String>,
    /// Go templates, each rendering one series selector.
    pub matches: Vec<String>,
    pub before_ms: i64,
    pub after_ms: i64,
    pub max_duration_ms: i64,
    pub destinations: Vec<String>,
    /// Set on every copied series.
    pub labels: Vec<(String, String)>,
    pub max_series: usize,
    pub max_samples: u64,
    pub chunk_ms: i64,
    pub fallback_step_ms: i64,
}

impl CaptureDef {
    /// A capture made by hand (`spillway capture`): no condition, no
    /// rules, the given selectors as they are, no time cap.
    pub fn manual(name: &str, selectors: Vec<String>, destinations: Vec<String>) -> CaptureDef {
        CaptureDef {
            name: Arc::from(name),
            condition: None,
            rules: Vec::new(),
            matches: selectors,
            before_ms: 0,
            after_ms: 0,
            max_duration_ms: i64::MAX / 4,
            destinations,
            labels: Vec::new(),
            max_series: DEFAULT_MAX_SERIES,
            max_samples: DEFAULT_MAX_SAMPLES,
            chunk_ms: DEFAULT_CHUNK_MS,
            fallback_step_ms: DEFAULT_FALLBACK_STEP_MS,
        }
    }

    /// Whether breaches of `group`/`rule` may open this capture.
    pub fn takes_rule(&self, group: &str, rule: &str) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|p| rule_matches(p, group, rule))
    }

    /// The selectors to copy for one breaching series: each template
    /// rendered over its labels, parsed, sorted, duplicates removed. A
    /// selector every series would match (no matcher that needs a value)
    /// is refused: it would copy the whole database.
    pub fn render(&self, labels: &crate::model::Labels, value: f64) -> Result<Vec<String>, String> {
        let templates: BTreeMap<String, String> = self
            .matches
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{i:08}"), t.clone()))
            .collect();
        let data = TemplateData {
            labels: Some(labels),
            value,
            ..TemplateData::default()
        };
        let rendered = render_labels_with(&templates, &data)?;
        let mut out = Vec::new();
        for (_, sel) in rendered {
            let sel = sel.trim().to_string();
            check_selector(&sel)?;
            out.push(sel);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// A selector that parses and does not match every series.
pub fn check_selector(sel: &str) -> Result<Selector, String> {
    if sel.is_empty() {
        return Err("the selector is empty".into());
    }
    let parsed = Selector::parse(sel).map_err(|e| e.to_string())?;
    let empty = crate::model::Labels::new();
    let every = parsed
        .alternatives()
        .iter()
        .any(|alt| alt.iter().all(|m| m.matches(&empty)));
    if every {
        return Err(format!(
            "selector {sel:?} matches every series (each matcher of an alternative also matches an empty label); it needs at least one matcher that requires a value"
        ));
    }
    Ok(parsed)
}

/// `GROUP/RULE` against a rule; a pattern without `/` names the rule in any group.
fn rule_matches(pattern: &str, group: &str, rule: &str) -> bool {
    use crate::run::rules::segment_matches;
    match pattern.split_once('/') {
        Some((g, r)) => segment_matches(g, group) && segment_matches(r, rule),
        None => segment_matches(pattern, rule),
    }
}

/// Everything the capture manager needs, checked.
#[derive(Clone, Debug, Default)]
pub struct CaptureConfig {
    pub defs: Vec<CaptureDef>,
    /// `<storage.path>/capture-state`.
    pub state_dir: std::path::PathBuf,
    /// How far behind now the raw data is complete (`evaluation.eval_delay`).
    pub lag_ms: i64,
    /// Evaluation interval per group name, to tell a gap from a breach that goes on.
    pub intervals: HashMap<String, i64>,
    pub default_interval_ms: i64,
}

impl CaptureConfig {
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn def(&self, name: &str) -> Option<&CaptureDef> {
        self.defs.iter().find(|d| &*d.name == name)
    }

    pub fn interval_ms(&self, group: &str) -> i64 {
        self.intervals
            .get(group)
            .copied()
            .unwrap_or(self.default_interval_ms)
            .max(1)
    }
}

/// What the check found besides the config itself.
#[derive(Debug, Default)]
pub struct Checked {
    pub config: CaptureConfig,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// What the capture check needs from the rest of the config.
pub struct Context<'a> {
    pub loaded: &'a LoadedConfig,
    /// Names of the configured destinations.
    pub destinations: Vec<String>,
    /// Queue directory names of the destinations (to keep the state directory apart).
    pub queue_dirs: Vec<String>,
    pub groups: &'a [Group],
    pub default_interval_ms: i64,
    pub lag_ms: i64,
    pub storage: std::path::PathBuf,
    /// Whether `datasource:` is set (captures read from it).
    pub has_datasource: bool,
}

/// Checks `captures:`; problems and warnings name file, line and field.
pub fn check(ctx: &Context<'_>) -> Checked {
    let loaded = ctx.loaded;
    let source = &loaded.source;
    let mut out = Checked::default();
    let specs = &loaded.config.captures;
    let no_lines = ItemLines::default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let lines = loaded.lines.captures.get(i).unwrap_or(&no_lines);
        let at = |field: &str| {
            let loc = match lines.field(field) {
                0 => source.to_string(),
                l => format!("{source}:{l}"),
            };
            if field.is_empty() {
                format!("{loc}: captures[{i}]")
            } else {
                format!("{loc}: captures[{i}].{field}")
            }
        };
        if !spec.name.trim().is_empty() {
            if let Some(j) = seen.insert(&spec.name, i) {
                out.problems.push(format!(
                    "{}: {:?} is already the name of captures[{j}]; capture names must be unique",
                    at("name"),
                    spec.name
                ));
            }
        }
        match check_one(spec, ctx, &at, &mut out.warnings) {
            Ok(def) => out.config.defs.push(def),
            Err(p) => out.problems.extend(p),
        }
    }
    if !specs.is_empty() {
        if !ctx.has_datasource {
            out.problems.push(format!(
                "{source}: captures: the raw samples are read from `datasource:`, which is not set"
            ));
        }
        if let Some(i) = ctx.queue_dirs.iter().position(|d| d == STATE_DIR) {
            out.problems.push(format!(
                "{source}: destinations[{i}].name: its queue directory would be {}, where captures keep their state; rename the destination",
                ctx.storage.join(STATE_DIR).display()
            ));
        }
    }
    out.config.state_dir = ctx.storage.join(STATE_DIR);
    out.config.lag_ms = ctx.lag_ms;
    out.config.default_interval_ms = ctx.default_interval_ms;
    out.config.intervals = ctx
        .groups
        .iter()
        .map(|g| {
            let ms = g
                .interval
                .map_or(ctx.default_interval_ms, |d| d.as_millis() as i64);
            (g.name.clone(), ms)
        })
        .collect();
    out
}

fn check_one(
    spec: &CaptureSpec,
    ctx: &Context<'_>,
    at: &dyn Fn(&str) -> String,
    warnings: &mut Vec<String>,
) -> Result<CaptureDef, Vec<String>> {
    let mut problems = Vec::new();
    if spec.name.trim().is_empty() {
        problems.push(format!(
            "{}: missing; give each capture a unique name (it shows in logs, metrics and /api/v1/captures)",
            at("name")
        ));
    }
    let condition = spec.condition.as_deref().and_then(|c| {
        Selector::parse(c)
            .map_err(|e| problems.push(format!("{}: {e}", at("if"))))
            .ok()
    });
    let matches = spec
        .matches
        .as_ref()
        .map(OneOrMany::to_vec)
        .unwrap_or_default();
    if matches.is_empty() {
        problems.push(format!(
            "{}: missing; give the raw series to copy, e.g. match: '{{instance=\"{{{{ $labels.instance }}}}\"}}'",
            at("match")
        ));
    }
    for m in &matches {
        if let Err(e) = check_match(m) {
            problems.push(format!("{}: {m:?}: {e}", at("match")));
        }
    }
    let ms = |field: &str, v: &Option<String>, default: i64, problems: &mut Vec<String>| match v {
        None => default,
        Some(s) if s.trim_start().starts_with('-') => {
            problems.push(format!(
                "{}: {s:?} is negative; give a duration such as 5m",
                at(field)
            ));
            default
        }
        Some(s) => match parse_duration(s) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => {
                problems.push(format!("{}: {e}", at(field)));
                default
            }
        },
    };
    let before_ms = ms("before", &spec.before, DEFAULT_BEFORE_MS, &mut problems);
    let after_ms = ms("after", &spec.after, DEFAULT_AFTER_MS, &mut problems);
    let max_duration_ms = ms(
        "max_duration",
        &spec.max_duration,
        DEFAULT_MAX_DURATION_MS,
        &mut problems,
    );
    let chunk_ms = ms("chunk", &spec.chunk, DEFAULT_CHUNK_MS, &mut problems);
    let fallback_step_ms = ms(
        "fallback_step",
        &spec.fallback_step,
        DEFAULT_FALLBACK_STEP_MS,
        &mut problems,
    );
    if max_duration_ms <= 0 {
        problems.push(format!("{}: must be above 0, e.g. 6h", at("max_duration")));
    }
    for (field, v) in [("before", before_ms), ("after", after_ms)] {
        if v > max_duration_ms {
            problems.push(format!(
                "{}: {} is over max_duration ({}); a capture never spans more than max_duration",
                at(field),
                crate::model::time::format_duration(std::time::Duration::from_millis(v as u64)),
                crate::model::time::format_duration(std::time::Duration::from_millis(
                    max_duration_ms.max(0) as u64
                )),
            ));
        }
    }
    if chunk_ms < 1000 {
        problems.push(format!("{}: must be at least 1s", at("chunk")));
    }
    if fallback_step_ms < 1 {
        problems.push(format!(
            "{}: must be above 0, e.g. 15s",
            at("fallback_step")
        ));
    }
    if spec.destinations.is_empty() {
        problems.push(format!(
            "{}: none; name at least one of `destinations:` ({})",
            at("destinations"),
            ctx.destinations.join(", ")
        ));
    }
    for d in &spec.destinations {
        if !ctx.destinations.contains(d) {
            problems.push(format!(
                "{}: unknown destination {d:?}; destinations: {}",
                at("destinations"),
                ctx.destinations.join(", ")
            ));
        }
    }
    let labels = crate::run::route::check_labels(&spec.labels, "labels").unwrap_or_else(|p| {
        let loc = at("labels");
        problems.extend(p.into_iter().map(|p| format!("{loc}: {p}")));
        Vec::new()
    });
    if spec.max_series == Some(0) {
        problems.push(format!("{}: must be at least 1", at("max_series")));
    }
    if spec.max_samples == Some(0) {
        problems.push(format!("{}: must be at least 1", at("max_samples")));
    }
    for p in &spec.rules {
        let known = ctx
            .groups
            .iter()
            .any(|g| g.rules.iter().any(|r| rule_matches(p, &g.name, r.name())));
        if !known {
            warnings.push(format!(
                "{}: {p:?} matches no rule of the rule files (GROUP/RULE, `*` and `?` allowed); this capture opens for no breach of it",
                at("rules")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CaptureDef {
        name: Arc::from(spec.name.as_str()),
        condition,
        rules: spec.rules.clone(),
        matches,
        before_ms,
        after_ms,
        max_duration_ms,
        destinations: spec.destinations.clone(),
        labels,
        max_series: spec.max_series.unwrap_or(DEFAULT_MAX_SERIES),
        max_samples: spec.max_samples.unwrap_or(DEFAULT_MAX_SAMPLES),
        chunk_ms,
        fallback_step_ms,
    })
}

/// A `match:` entry: a template that parses and, rendered over a series
/// without labels, still gives a selector (a literal one must also be valid).
fn check_match(template: &str) -> Result<(), String> {
    check_template(template).map_err(|e| format!("not a valid template: {e}"))?;
    let data = TemplateData::default();
    let one = BTreeMap::from([("m".to_string(), template.to_string())]);
    let rendered = render_labels_with(&one, &data)?;
    let sel = rendered.get("m").map(|s| s.trim()).unwrap_or("");
    if sel.is_empty() {
        return Err("templates to an empty selector; it must give a series selector such as {instance=\"...\"}".into());
    }
    if template.contains("{{") {
        // Values come from the breaching series; only the shape can be checked.
        Selector::parse(sel).map(|_| ()).map_err(|e| {
            format!(
                "does not give a series selector (rendered without labels: {sel:?}): {}",
                e.reason
            )
        })
    } else {
        check_selector(sel).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use crate::run::config::RunConfig;
    use crate::run::rules::load_str;

    const RULES: &str = "groups:
- name: static_thresholds
  interval: 30s
  rules:
  - record: critical_cpu_usage_export
    expr: cpu > 90
  - alert: HighMem
    expr: mem > 90
";

    fn run_check(captures: &str) -> Checked {
        let text = format!(
            "datasource: {{url: 'http://127.0.0.1:1'}}\ndestinations:\n  - name: debug_storage\n    url: http://127.0.0.1:2\n  - name: siem\n    url: http://127.0.0.1:3\ncaptures:\n{captures}"
        );
        let loaded = RunConfig::parse(&text, "run.yml").unwrap();
        let groups = load_str("rules.yml", RULES, &Default::default()).unwrap();
        check(&Context {
            loaded: &loaded,
            destinations: vec!["debug_storage".into(), "siem".into()],
            queue_dirs: vec!["debug_storage".into(), "siem".into()],
            groups: &groups,
            default_interval_ms: 60_000,
            lag_ms: 30_000,
            storage: "/data".into(),
            has_datasource: true,
        })
    }

    #[test]
    fn the_issue_example_checks() {
        let c = run_check(
            "  - name: cpu_context
    if: '{severity=\"critical\"}'
    rules: [static_thresholds/critical_cpu_usage_export]
    match: '{instance=\"{{ $labels.instance }}\"}'
    before: 10m
    after: 5m
    max_duration: 6h
    destinations: [debug_storage]
    labels: {captured_by: cpu_context}
    max_series: 1000
    max_samples: 5000000
",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let d = &c.config.defs[0];
        assert_eq!((d.before_ms, d.after_ms), (600_000, 300_000));
        assert!(d.takes_rule("static_thresholds", "critical_cpu_usage_export"));
        assert!(!d.takes_rule("static_thresholds", "HighMem"));
        assert_eq!(c.config.interval_ms("static_thresholds"), 30_000);
        assert_eq!(
            c.config.state_dir,
            std::path::Path::new("/data/capture-state")
        );
        let labels = Labels::from_pairs([("__name__", "x"), ("instance", "db:9100")]);
        assert_eq!(d.render(&labels, 1.0).unwrap(), [r#"{instance="db:9100"}"#]);
        // A series without the label renders a selector that matches everything.
        let e = d
            .render(&Labels::from_pairs([("__name__", "x")]), 1.0)
            .unwrap_err();
        assert!(e.contains("matches every series"), "{e}");
    }

    #[test]
    fn every_bad_input_names_its_line() {
        let c = run_check(
            "  - name: a
    match: '{instance=\"{{ $labels.instance }\"}'
    destinations: [nowhere]
  - name: a
    match: ['{{ $labels.selector }}', 'up{']
    before: -5m
    after: 2h
    max_duration: 1h
    destinations: [siem]
    rules: [nogroup/*]
",
        );
        let all = c.problems.join("\n");
        for needle in [
            "run.yml:9: captures[0].match: \"{instance=\\\"{{ $labels.instance }\\\"}\": not a valid template",
            "run.yml:10: captures[0].destinations: unknown destination \"nowhere\"; destinations: debug_storage, siem",
            "run.yml:11: captures[1].name: \"a\" is already the name of captures[0]",
            "run.yml:12: captures[1].match: \"{{ $labels.selector }}\": templates to an empty selector",
            "run.yml:12: captures[1].match: \"up{\": invalid series selector",
            "run.yml:13: captures[1].before: \"-5m\" is negative",
            "run.yml:14: captures[1].after: 2h is over max_duration (1h)",
        ] {
            assert!(all.contains(needle), "{needle}\nmissing in:\n{all}");
        }
        assert!(
            c.warnings[0]
                .starts_with("run.yml:17: captures[1].rules: \"nogroup/*\" matches no rule"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn literal_selectors_must_not_match_everything() {
        let c = run_check("  - name: a\n    match: '{job=~\".*\"}'\n    destinations: [siem]\n");
        assert!(
            c.problems[0].contains("matches every series"),
            "{:?}",
            c.problems
        );
    }

    #[test]
    fn rule_globs() {
        assert!(rule_matches(
            "static_*/crit*",
            "static_thresholds",
            "critical"
        ));
        assert!(rule_matches("HighMem", "any", "HighMem"));
        assert!(!rule_matches("g/r", "g", "rr"));
    }
}
