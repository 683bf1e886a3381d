//! Relabeling: Prometheus `relabel_configs` plus the vmagent extensions, one
//! engine for `run` (global and per-destination relabeling), `export`, the
//! `spillway relabel` command and UI previews. Uses only `model`.
//!
//! Two dialects, because Prometheus and vmagent disagree on details that
//! change results (the shared conformance vectors show each one):
//!
//! | | [`Dialect::Prometheus`] | [`Dialect::VictoriaMetrics`] (default) |
//! |---|---|---|
//! | regex anchoring | `^(?s:re)$`: `.` matches `\n` | one `^`/`$` stripped, then `^(?:re)$` |
//! | `hashmod` | md5, last 8 bytes big-endian, `% modulus` | xxhash64, `% modulus` |
//! | label set to `""` | deleted at once | kept as `""` until the list ends, visible to later rules |
//! | all labels gone | later rules still run | processing stops |
//! | `{{label}}` in `replacement` | literal text | the label's value |
//! | checks | Prometheus' `Validate` (UTF-8 label names) | vmagent's `parseRelabelConfig` |
//!
//! spillway's users write vmagent configs and our differential tests run
//! against vmagent, so configs default to the VictoriaMetrics dialect; a
//! config that must reproduce Prometheus exactly (say, `hashmod` sharding
//! shared with a Prometheus server) chooses `prometheus`. The vmagent-only
//! actions, `if:` and graphite rules work in both dialects.
//!
//! Use: parse with [`RelabelRules::from_yaml`] (a file) or deserialize
//! `Vec<RelabelConfig>` inside another config and compile it with
//! [`RelabelRules::from_configs`] / [`RelabelRules::from_spanned`]; then call
//! [`RelabelRules::apply`] per series. Compiling checks every entry and
//! reports all problems with file, line and `relabel_configs[i].field`.
//! Applying edits the series in place and allocates only when a rule changes
//! it; regexes, templates and selectors are compiled once.
//!
//! Not done here, by design: vmagent's removal of `__`-prefixed labels after
//! scrape relabeling is the separate [`finalize`], for callers that want it.

mod apply;
mod compile;
mod config;
mod error;
mod graphite;
mod regex;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

pub use self::regex::go_to_rust;
pub use config::{IfSelectors, MultiLineRegex, RelabelConfig};
pub use error::{Problem, RelabelError};

use crate::model::Labels;
use apply::Work;
use compile::Rule;
use std::fmt;

/// Whose relabeling semantics to follow; see the table in the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Prometheus,
    #[default]
    #[serde(alias = "vmagent")]
    VictoriaMetrics,
}

impl Dialect {
    /// The name a config or `--dialect` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Prometheus => "prometheus",
            Dialect::VictoriaMetrics => "victoriametrics",
        }
    }

    /// `prometheus`, `victoriametrics` (or `vmagent`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "prometheus" => Ok(Dialect::Prometheus),
            "victoriametrics" | "vmagent" => Ok(Dialect::VictoriaMetrics),
            other => Err(format!(
                "{other:?} is not a relabel dialect; want `prometheus` (Prometheus' semantics: `(?s)` regexes, md5 hashmod) or `victoriametrics` (vmagent's, the default)"
            )),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked, compiled `relabel_configs` list. Cheap to share (`Arc`) and to
/// apply from many threads: applying needs only `&self`.
#[derive(Clone, Debug)]
pub struct RelabelRules {
    rules: Vec<Rule>,
    dialect: Dialect,
    /// [`RelabelRules::is_filter_only`], known once: a router asks it of
    /// every series, per destination.
    filter_only: bool,
}

/// One rule's effect, for `spillway relabel` and vmagent-style debug pages.
#[derive(Clone, Debug, PartialEq)]
pub struct DebugStep {
    /// The rule as YAML.
    pub rule: String,
    pub before: Labels,
    /// `None` when the rule dropped the series.
    pub after: Option<Labels>,
}

impl fmt::Display for DebugStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = self.rule.lines();
        if let Some(first) = lines.next() {
            writeln!(f, "- {first}")?;
        }
        for line in lines {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "  in:  {}", self.before)?;
        match &self.after {
            Some(after) => write!(f, "  out: {after}"),
            None => write!(f, "  out: (dropped)"),
        }
    }
}

impl RelabelRules {
    /// Rules that leave every series as it is.
    pub fn empty(dialect: Dialect) -> Self {
        Self::of(Vec::new(), dialect)
    }

    fn of(rules: Vec<Rule>, dialect: Dialect) -> Self {
        let filter_only = rules.iter().all(|r| r.is_filter());
        RelabelRules {
            rules,
            dialect,
            filter_only,
        }
    }

    /// Parses and compiles a YAML `relabel_configs` list (the whole text is
    /// the list). `source_name` (usually the file path) prefixes messages.
    pub fn from_yaml(
        text: &str,
        source_name: &str,
        dialect: Dialect,
    ) -> Result<Self, RelabelError> {
        let (configs, locations) = config::parse_yaml(text, source_name)?;
        let rules = compile::compile(&configs, dialect, &locations)?;
        Ok(Self::of(rules, dialect))
    }

    /// Compiles configs that came from elsewhere (another config file, code).
    /// Messages name `relabel_configs[i].field` but no file or line; use
    /// [`RelabelRules::from_spanned`] to keep them.
    pub fn from_configs(
        configs: Vec<RelabelConfig>,
        dialect: Dialect,
    ) -> Result<Self, RelabelError> {
        let locations = config::Locations::unknown("relabel_configs");
        let rules = compile::compile(&configs, dialect, &locations)?;
        Ok(Self::of(rules, dialect))
    }

    /// Compiles configs embedded in a larger YAML file as
    /// `Vec<serde_saphyr::Spanned<RelabelConfig>>`, so messages read
    /// `FILE:LINE: PATH[i].field: ...` with `path` such as
    /// `destinations[0].relabel_configs`.
    pub fn from_spanned(
        configs: Vec<serde_saphyr::Spanned<RelabelConfig>>,
        dialect: Dialect,
        source_name: &str,
        path: &str,
    ) -> Result<Self, RelabelError> {
        let locations = config::locations_from_spans(
            configs.iter().map(|c| c.referenced.line()),
            source_name,
            path,
        );
        let configs: Vec<RelabelConfig> = configs.into_iter().map(|c| c.value).collect();
        let rules = compile::compile(&configs, dialect, &locations)?;
        Ok(Self::of(rules, dialect))
    }

    /// Compiles configs embedded in a larger file whose positions the caller
    /// read itself: `items[i]` is entry `i`'s line and the line of each of
    /// its fields, so messages read `FILE:LINE: PATH[i].field: ...` with the
    /// field's own line.
    pub fn from_configs_at(
        configs: Vec<RelabelConfig>,
        dialect: Dialect,
        source_name: &str,
        path: &str,
        items: Vec<(u64, std::collections::HashMap<String, u64>)>,
    ) -> Result<Self, RelabelError> {
        let locations = config::Locations {
            source: Some(source_name.to_string()),
            path: path.to_string(),
            items: items
                .into_iter()
                .map(|(line, fields)| config::ItemLocation { line, fields })
                .collect(),
        };
        let rules = compile::compile(&configs, dialect, &locations)?;
        Ok(Self::of(rules, dialect))
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Relabels one series in place. Returns `false` when the series is
    /// dropped: by a filtering rule, or because no label is left (vmagent
    /// drops such series; `labels` is then empty).
    pub fn apply(&self, labels: &mut Labels) -> bool {
        let mut work = Work::new(labels, self.dialect);
        for rule in &self.rules {
            if !rule.apply(&mut work) {
                work.clear();
                return false;
            }
            if self.dialect == Dialect::VictoriaMetrics && work.is_empty() {
                return false;
            }
        }
        !labels.is_empty()
    }

    /// Whether every rule only keeps or drops series (`keep`, `drop`,
    /// `keep_if_equal`, ...): then [`RelabelRules::keeps`] decides without
    /// copying or editing the labels.
    pub fn is_filter_only(&self) -> bool {
        self.filter_only
    }

    /// For filter-only rules, whether `labels` survive them, without
    /// touching the labels; `None` when some rule may edit labels (use
    /// [`RelabelRules::apply`] on a copy then). Same verdict as `apply`.
    #[inline]
    pub fn keeps(&self, labels: &Labels) -> Option<bool> {
        if !self.filter_only {
            return None;
        }
        for rule in &self.rules {
            if !rule.decide(labels) {
                return Some(false);
            }
        }
        Some(!labels.is_empty())
    }

    /// Applies the rules one at a time and records each step. Stops at the
    /// step that drops the series (its `after` is `None`) or, under the
    /// vmagent dialect, leaves it without labels.
    pub fn apply_debug(&self, labels: &Labels) -> Vec<DebugStep> {
        let mut current = labels.clone();
        let mut work = Work::new(&mut current, self.dialect);
        let mut steps = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let before = work.labels.clone();
            let kept = rule.apply(&mut work);
            let after = kept.then(|| work.labels.clone());
            steps.push(DebugStep {
                rule: rule.text.clone(),
                before,
                after,
            });
            if !kept || (self.dialect == Dialect::VictoriaMetrics && work.is_empty()) {
                break;
            }
        }
        steps
    }
}

impl fmt::Display for RelabelRules {
    /// The rules as a YAML list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in &self.rules {
            for (i, line) in rule.text.lines().enumerate() {
                let prefix = if i == 0 { "- " } else { "  " };
                writeln!(f, "{prefix}{line}")?;
            }
        }
        Ok(())
    }
}

/// vmagent's `FinalizeLabels`: removes every label whose name starts with
/// `__`, except `__name__`. It does not add `instance` from `__address__`.
pub fn finalize(labels: &mut Labels) {
    labels.retain(|l| !is_temporary(&l.name));
}

/// Whether [`finalize`] would remove something. Labels are sorted by name,
/// so the names starting with `__` sit together: the first name past them
/// ends the search, which spares reading the other names (the router asks
/// this of every series it keeps, per destination).
pub fn has_temporary(labels: &Labels) -> bool {
    for l in labels.iter() {
        if l.name.starts_with("__") {
            if l.name != crate::model::labels::METRIC_NAME {
                return true;
            }
        } else if l.name.as_str() > "__" {
            return false;
        }
    }
    false
}

fn is_temporary(name: &str) -> bool {
    name.starts_with("__") && name != crate::model::labels::METRIC_NAME
}
