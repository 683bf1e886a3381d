//! vmalert rule files, accepted unchanged: finding them, reading them, and
//! checking them the way vmalert does, into [`Group`]s that `run` evaluates.
//!
//! Two steps, as everywhere in spillway: `config.rs` reads YAML into a raw
//! view that keeps every key, line and unknown field; `validate.rs` turns it
//! into [`Group`] / [`Rule`] values that cannot hold an invalid state
//! (durations parsed, exactly one of record/alert, templates parsed), and
//! collects every problem as a [`RuleError`] that names file, line, group, rule
//! and field. `template.rs` holds vmalert's template function table, the
//! parse-only template check and [`render_labels`] for `alert:` rule labels;
//! `files.rs` expands `-rule`-style globs and `%{ENV}` placeholders.
//!
//! Each file is checked on its own (group names are unique per file, as in
//! vmalert). Expressions are passed through unparsed: no Rust library parses
//! MetricsQL, Graphite or LogsQL, and the datasource reports a bad query at
//! the first evaluation (or `rules check --datasource` asks it at once). Only
//! the shape vmalert insists on for LogsQL is checked: a `| stats` pipe.
//! [`Group::checksum`] changes whenever anything about a
//! group changes, so a reload can keep the state of untouched groups.
//!
//! Uses `model` (durations, labels, bounded file reads, the YAML budget),
//! the LogsQL lexer of `client::vlogs_api`, and the `metrics`/`tracing`
//! facades for template formatting errors; nothing here does network I/O.
//! Rule files are hostile input (a daemon reloads them): every limit is in
//! `model::yaml`, `config.rs` (groups and rules per file), `validate.rs`
//! (durations) and `template.rs` (depth).

mod config;
mod files;
mod template;
mod validate;

#[cfg(test)]
mod tests;

pub(crate) use files::segment_matches;
pub use template::{
    check_template, functions as template_functions, render_labels, render_labels_with,
    TemplateData,
};
pub use validate::MAX_RULE_DURATION;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The query language of a group (`type:`), which picks the datasource API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RuleType {
    /// PromQL / MetricsQL against a Prometheus-compatible query API.
    #[default]
    Prometheus,
    /// Graphite expressions. Accepted because vmalert accepts them; spillway
    /// has no Graphite datasource, so `run` has to refuse such groups.
    Graphite,
    /// LogsQL stats queries against VictoriaLogs.
    Vlogs,
}

impl RuleType {
    /// Parses `type:` or `-rule.defaultRuleType`.
    pub fn parse(s: &str) -> Option<RuleType> {
        match s {
            "prometheus" => Some(RuleType::Prometheus),
            "graphite" => Some(RuleType::Graphite),
            "vlogs" => Some(RuleType::Vlogs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Prometheus => "prometheus",
            RuleType::Graphite => "graphite",
            RuleType::Vlogs => "vlogs",
        }
    }
}

impl fmt::Display for RuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to load rule files. `Default` is vmalert's defaults.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Type of groups without `type:` (vmalert's `-rule.defaultRuleType`).
    pub default_rule_type: RuleType,
    /// Parse label and annotation templates (vmalert's
    /// `-rule.validateTemplates`, on by default).
    pub validate_templates: bool,
    /// Require `record:` names to be Prometheus metric names
    /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`). vmalert itself does not check, and
    /// VictoriaMetrics stores other names too; turn this off to accept
    /// everything vmalert accepts.
    pub strict_record_names: bool,
    /// Replace `%{ENV_VAR}` placeholders before parsing, as vmalert does.
    pub expand_env: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_rule_type: RuleType::Prometheus,
            validate_templates: true,
            strict_record_names: true,
            expand_env: true,
        }
    }
}

/// One `Key: value` entry of `headers:` / `notifier_headers:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A checked rule group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The file as matched by the pattern (relative patterns stay relative).
    pub file: String,
    /// Line of the group in `file`.
    pub line: u64,
    pub name: String,
    pub rule_type: RuleType,
    /// `None`: the run's default evaluation interval (also for `interval: 0`).
    pub interval: Option<Duration>,
    /// Evaluate at this offset within each interval. Always in
    /// `[0, interval)`: a negative `eval_offset` (counted back from the end of
    /// the interval, vmalert >= v1.117) is stored as the equivalent positive one.
    pub eval_offset: Option<Duration>,
    /// `None`: the run's default (vmalert's `-rule.evalDelay`).
    pub eval_delay: Option<Duration>,
    /// `None` means the default, which is aligned (`true`).
    pub eval_alignment: Option<bool>,
    /// Most series one rule may return; 0 = no limit.
    pub limit: usize,
    /// Rules evaluated at once; at least 1.
    pub concurrency: usize,
    /// Added to every rule's labels; the rule's own win
    /// (see [`Group::rule_labels`]).
    pub labels: BTreeMap<String, String>,
    /// Extra URL query parameters for every request of the group.
    pub params: BTreeMap<String, Vec<String>>,
    /// Extra HTTP headers for every request of the group (e.g. tenant headers).
    pub headers: Vec<Header>,
    /// Headers for notifications; kept for `/api/v1/rules`, unused otherwise.
    pub notifier_headers: Vec<Header>,
    pub debug: bool,
    pub rules: Vec<Rule>,
    /// SHA-256 (hex) of the file name and everything above. Equal checksums
    /// mean an identical group, so a reload may keep its state.
    pub checksum: String,
}

impl Group {
    /// Identity across reloads: a group is "the same group" when file and
    /// name are the same; its [`checksum`](Group::checksum) says whether it changed.
    pub fn key(&self) -> (&str, &str) {
        (&self.file, &self.name)
    }

    /// The labels a rule's results get: the group's, then the rule's own on
    /// top. vmalert's `NewGroup` merges them this way ("apply rules labels,
    /// it has priority on other labels"), and vmalert 1.79 logs `label "env"="group"
    /// for rule "g"."r" overwritten with external label "env"="rule"` when
    /// both set one. Empty values are kept: they mean "remove this label from
    /// the result".
    pub fn rule_labels(&self, rule: &Rule) -> BTreeMap<String, String> {
        let mut out = self.labels.clone();
        out.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// Whether a rule asks for debug logging (its own `debug:` wins).
    pub fn rule_debug(&self, rule: &Rule) -> bool {
        rule.debug.unwrap_or(self.debug)
    }
}

/// A checked rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Line of the rule in its file.
    pub line: u64,
    pub kind: RuleKind,
    /// The query, exactly as written (not parsed).
    pub expr: String,
    /// The rule's own `labels:`. Literal for recording rules; Go templates
    /// for alerting rules (see [`render_labels`]).
    pub labels: BTreeMap<String, String>,
    /// `None` when the rule does not say; the group's `debug` applies.
    pub debug: Option<bool>,
    pub update_entries_limit: Option<i64>,
    /// vmalert's rule hash (FNV-1a over expr, kind, name and labels): unique
    /// within a group.
    pub id: u64,
}

/// What a rule produces.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// `record:` writes every result series under this metric name.
    Recording { record: String },
    /// `alert:` exports the firing series: a series must breach for `for_`
    /// before it counts, and keeps counting for `keep_firing_for` after.
    Alerting {
        alert: String,
        for_: Duration,
        keep_firing_for: Duration,
        annotations: BTreeMap<String, String>,
    },
}

impl Rule {
    /// `record:` or `alert:` name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { record } => record,
            RuleKind::Alerting { alert, .. } => alert,
        }
    }

    pub fn is_alerting(&self) -> bool {
        matches!(self.kind, RuleKind::Alerting { .. })
    }
}

/// A group or rule in an error: its name, or its position (1-based) when it
/// has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemName {
    Named(String),
    Unnamed(usize),
}

impl fmt::Display for ItemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemName::Named(n) => write!(f, "{n:?}"),
            ItemName::Unnamed(i) => write!(f, "#{i} (no name)"),
        }
    }
}

/// One problem in a rule file. Displays as
/// `rules/a.yml:12: group "g1", rule "r1": field "expr": expression can't be empty`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: Option<u64>,
    pub group: Option<ItemName>,
    pub rule: Option<ItemName>,
    /// The YAML key at fault, dotted for map entries (`annotations.summary`).
    pub field: Option<String>,
    pub message: String,
}

impl RuleError {
    fn in_file(file: &str) -> RuleError {
        RuleError {
            file: file.to_string(),
            line: None,
            group: None,
            rule: None,
            field: None,
            message: String::new(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match (&self.group, &self.rule) {
            (Some(g), Some(r)) => write!(f, "group {g}, rule {r}: ")?,
            (Some(g), None) => write!(f, "group {g}: ")?,
            (None, Some(r)) => write!(f, "rule {r}: ")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "field {field:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuleError {}

/// The files a `-rule`-style pattern names, sorted (see `files.rs`); a
/// pattern that matches nothing gives an empty list.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    files::expand_glob(pattern)
}

/// Loads every file matching `patterns` (globs, as vmalert's `-rule`), each
/// checked on its own. Groups come back file by file (files sorted per
/// pattern), in the order they are written. All problems of all files are
/// returned together, so `rules check` can list them in one go.
pub fn load_files(patterns: &[String], opts: &LoadOptions) -> Result<Vec<Group>, Vec<RuleError>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut errors = Vec::new();
    for pattern in patterns {
        match files::expand_glob(pattern) {
            Ok(found) => {
                for p in found {
                    // vmalert refuses a file matched twice; so do we, as
                    // loading it twice would duplicate its groups.
                    if paths.contains(&p) {
                        errors.push(RuleError {
                            message: format!(
                                "file matched more than once (again by pattern {pattern:?}); file names must be unique: narrow the patterns"
                            ),
                            ..RuleError::in_file(&p.display().to_string())
                        });
                    } else {
                        paths.push(p);
                    }
                }
            }
            Err(e) => errors.push(RuleError {
                message: e,
                ..RuleError::in_file(pattern)
            }),
        }
    }
    let mut groups = Vec::new();
    for path in &paths {
        let name = path.display().to_string();
        let text = match crate::model::input::read_config(path, "a rule file") {
            Ok(t) => t,
            Err(crate::model::input::ReadError::NotText { .. }) => {
                errors.push(RuleError {
                    message: "not UTF-8 text; rule files are YAML".into(),
                    ..RuleError::in_file(&name)
                });
                continue;
            }
            Err(e) => {
                errors.push(RuleError {
                    message: e.reason(),
                    ..RuleError::in_file(&name)
                });
                continue;
            }
        };
        match load_str(&name, &text, opts) {
            Ok(mut g) => groups.append(&mut g),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// Checks one rule file's text; `file` is the name used in errors and in
/// [`Group::file`]. The same path as [`load_files`], for tests, `rules check`
/// on stdin, or files fetched by other means.
pub fn load_str(file: &str, text: &str, opts: &LoadOptions) -> Result<Vec<Group>, Vec<RuleError>> {
    let expanded;
    let text = if opts.expand_env {
        match files::expand_env(text, |name| std::env::var(name).ok()) {
            Ok(t) => {
                expanded = t;
                expanded.as_str()
            }
            Err((line, msg)) => {
                return Err(vec![RuleError {
                    line: Some(line),
                    message: format!(
                        "cannot expand environment vars: {msg}; set it or remove the %{{...}} placeholder"
                    ),
                    ..RuleError::in_file(file)
                }])
            }
        }
    } else {
        text
    };
    let docs = match config::parse_documents(text) {
        Ok(d) => d,
        Err(e) => return Err(vec![yaml_error(file, text, &e)]),
    };
    let (groups, errors) = validate::check_file(file, docs, opts);
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// A YAML-level failure (syntax, or a list where a mapping belongs), with
/// the position serde-saphyr found and yaml.v2's "cannot unmarshal" wording
/// for shape errors.
fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> RuleError {
    if let Some(message) = crate::model::yaml::budget_message(e) {
        return RuleError {
            message,
            ..RuleError::in_file(file)
        };
    }
    let plain = e.without_snippet().to_string();
    // serde-saphyr appends " at line L, column C"; the line goes in front.
    let mut message = match plain.rfind(" at line ") {
        Some(i) => plain[..i].to_string(),
        None => plain,
    };
    // Its duplicate-key text addresses the programmer ("set DuplicateKeyPolicy");
    // say it the way yaml.v2 does.
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest);
        message = format!("mapping key {key:?} already defined");
    }
    for (from, to) in [
        ("expected sequence start", "expected a list here"),
        (
            "expected mapping start",
            "expected a mapping (key: value) here",
        ),
        ("expected string scalar", "expected a string here"),
    ] {
        if message == from {
            message = to.to_string();
        }
    }
    // Our own limits (see config.rs) are already worded for the user.
    if message.contains("the most spillway reads") {
        return RuleError {
            line: e.location().map(|l| l.line()),
            message,
            ..RuleError::in_file(file)
        };
    }
    let shape = message.starts_with("invalid type")
        || message.starts_with("expected ")
        || message.contains("already defined");
    let message = if shape {
        format!("cannot unmarshal: {message}")
    } else {
        format!("cannot parse YAML: {message}")
    };
    // A document that is a bare scalar comes back without a position; in a
    // single-document file it can only be the first line with content.
    let line = e.location().map(|l| l.line()).or_else(|| {
        if text.contains("\n---") || text.starts_with("---") {
            return None;
        }
        text.lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|i| i as u64 + 1)
    });
    RuleError {
        line,
        message,
        ..RuleError::in_file(file)
    }
}

/// Canonical hash of a group: every field, length-prefixed, in a fixed order.
fn checksum(g: &Group) -> String {
    use sha2::{Digest, Sha256};
    struct Canon(Sha256);
    impl Canon {
        fn str(&mut self, s: &str) {
            self.0.update((s.len() as u64).to_le_bytes());
            self.0.update(s.as_bytes());
        }
        fn num(&mut self, n: u64) {
            self.0.update(n.to_le_bytes());
        }
        fn opt_dur(&mut self, d: Option<Duration>) {
            match d {
                Some(d) => {
                    self.num(1);
                    self.num(d.as_millis() as u64);
                }
                None => self.num(0),
            }
        }
        fn map(&mut self, m: &BTreeMap<String, String>) {
            self.num(m.len() as u64);
            for (k, v) in m {
                self.str(k);
                self.str(v);
            }
        }
        fn headers(&mut self, h: &[Header]) {
            self.num(h.len() as u64);
            for h in h {
                self.str(&h.name);
                self.str(&h.value);
            }
        }
    }
    let mut c = Canon(Sha256::new());
    c.str(&g.file);
    c.str(&g.name);
    c.str(g.rule_type.as_str());
    c.opt_dur(g.interval);
    c.opt_dur(g.eval_offset);
    c.opt_dur(g.eval_delay);
    c.num(match g.eval_alignment {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    c.num(g.limit as u64);
    c.num(g.concurrency as u64);
    c.map(&g.labels);
    c.num(g.params.len() as u64);
    for (k, vs) in &g.params {
        c.str(k);
        c.num(vs.len() as u64);
        for v in vs {
            c.str(v);
        }
    }
    c.headers(&g.headers);
    c.headers(&g.notifier_headers);
    c.num(u64::from(g.debug));
    c.num(g.rules.len() as u64);
    for r in &g.rules {
        // Rule order matters: it is evaluation order.
        c.str(&r.expr);
        c.map(&r.labels);
        c.num(match r.debug {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        match r.update_entries_limit {
            Some(n) => {
                c.num(1);
                c.num(n as u64);
            }
            None => c.num(0),
        }
        match &r.kind {
            RuleKind::Recording { record } => {
                c.str("record");
                c.str(record);
            }
            RuleKind::Alerting {
                alert,
                for_,
                keep_firing_for,
                annotations,
            } => {
                c.str("alert");
                c.str(alert);
                c.num(for_.as_millis() as u64);
                c.num(keep_firing_for.as_millis() as u64);
                c.map(annotations);
            }
        }
    }
    let digest = c.0.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
