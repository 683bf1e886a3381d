//! From [`RelabelConfig`] to [`Rule`]: checks every entry against the rules
//! of its dialect, reports all problems at once, and precompiles regexes,
//! templates and selectors so applying a rule does no parsing.
//!
//! The checks follow Prometheus' `Config.Validate` (UTF-8 label names, as in
//! Prometheus 3) for the Prometheus dialect and vmagent's
//! `parseRelabelConfig` for the VictoriaMetrics one. vmagent-only actions,
//! `if`, and graphite rules are accepted in both dialects and checked as
//! vmagent checks them.

use super::config::{IfSelectors, Locations, RelabelConfig};
use super::error::RelabelError;
use super::graphite::{GraphiteMatch, GraphiteTemplate};
use super::regex::{AnchoredRegex, Template, UnanchoredRegex};
use super::Dialect;
use crate::model::{Labels, Selector};
use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Replace,
    ReplaceAll,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    KeepIfEqual,
    DropIfEqual,
    KeepIfContains,
    DropIfContains,
    KeepMetrics,
    DropMetrics,
    HashMod,
    LabelMap,
    LabelMapAll,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
    Graphite,
}

const ACTIONS: &[(&str, Action)] = &[
    ("replace", Action::Replace),
    ("keep", Action::Keep),
    ("drop", Action::Drop),
    ("keepequal", Action::KeepEqual),
    ("dropequal", Action::DropEqual),
    ("hashmod", Action::HashMod),
    ("labelmap", Action::LabelMap),
    ("labeldrop", Action::LabelDrop),
    ("labelkeep", Action::LabelKeep),
    ("lowercase", Action::Lowercase),
    ("uppercase", Action::Uppercase),
    ("replace_all", Action::ReplaceAll),
    ("keep_if_equal", Action::KeepIfEqual),
    ("drop_if_equal", Action::DropIfEqual),
    ("keep_if_contains", Action::KeepIfContains),
    ("drop_if_contains", Action::DropIfContains),
    ("keep_metrics", Action::KeepMetrics),
    ("drop_metrics", Action::DropMetrics),
    ("labelmap_all", Action::LabelMapAll),
    ("graphite", Action::Graphite),
];

/// The label values a rule reads, joined with its separator.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    names: Vec<String>,
    separator: String,
}

impl Sources {
    /// `regex` on [`Sources::join`]: the value of a single source is
    /// matched where it is, without building the `Cow` (routing's
    /// `keep` / `drop` rules ask this of every series, per destination).
    #[inline]
    pub fn match_joined(&self, labels: &Labels, regex: &AnchoredRegex) -> bool {
        match self.names.as_slice() {
            [one] => regex.is_match(labels.value(one)),
            _ => regex.is_match(&self.join(labels)),
        }
    }

    #[inline]
    pub fn join<'a>(&self, labels: &'a Labels) -> Cow<'a, str> {
        match self.names.as_slice() {
            [] => Cow::Borrowed(""),
            [one] => Cow::Borrowed(labels.value(one)),
            many => {
                let mut s = String::new();
                for (i, n) in many.iter().enumerate() {
                    if i > 0 {
                        s.push_str(&self.separator);
                    }
                    s.push_str(labels.value(n));
                }
                Cow::Owned(s)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    /// Prometheus: last 8 bytes of md5, big-endian.
    Md5,
    /// vmagent: xxhash64 with seed 0.
    Xxh64,
}

#[derive(Clone, Debug)]
pub(crate) enum Replacement {
    Template(Template),
    /// vmagent's `{{label}}` references: filled per series, then parsed as a template.
    WithLabelRefs(String),
}

/// A checked rule, ready to apply.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Replace {
        sources: Sources,
        regex: AnchoredRegex,
        target: Template,
        replacement: Replacement,
    },
    ReplaceAll {
        sources: Sources,
        regex: UnanchoredRegex,
        target: String,
        replacement: Template,
    },
    Keep {
        sources: Sources,
        regex: AnchoredRegex,
    },
    Drop {
        sources: Sources,
        regex: AnchoredRegex,
    },
    KeepEqual {
        sources: Sources,
        target: String,
    },
    DropEqual {
        sources: Sources,
        target: String,
    },
    KeepIfEqual {
        names: Vec<String>,
    },
    DropIfEqual {
        names: Vec<String>,
    },
    KeepIfContains {
        names: Vec<String>,
        target: String,
    },
    DropIfContains {
        names: Vec<String>,
        target: String,
    },
    HashMod {
        sources: Sources,
        target: String,
        modulus: u64,
        hash: Hash,
    },
    LabelMap {
        regex: AnchoredRegex,
        replacement: Template,
    },
    LabelMapAll {
        regex: UnanchoredRegex,
        replacement: Template,
    },
    LabelDrop {
        regex: AnchoredRegex,
    },
    LabelKeep {
        regex: AnchoredRegex,
    },
    Lowercase {
        sources: Sources,
        target: String,
    },
    Uppercase {
        sources: Sources,
        target: String,
    },
    Graphite {
        matcher: GraphiteMatch,
        labels: Vec<(String, GraphiteTemplate)>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// The rule as the user wrote it, for debug output.
    pub text: String,
    /// `if:` selectors, OR-ed; empty means every series.
    pub filter: Vec<Selector>,
    /// `keep` (and `keep_metrics`) drop a series that fails `if:`; other actions skip it.
    pub drop_on_filter_miss: bool,
    pub op: Op,
}

pub(crate) fn compile(
    configs: &[RelabelConfig],
    dialect: Dialect,
    locations: &Locations,
) -> Result<Vec<Rule>, RelabelError> {
    let mut problems = Vec::new();
    let mut rules = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let mut report = |field: &str, message: String| {
            problems.push(locations.problem(i, field, message));
        };
        if let Some(rule) = compile_one(config, dialect, &mut report) {
            rules.push(rule);
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(RelabelError::new(problems))
    }
}

fn compile_one(
    c: &RelabelConfig,
    dialect: Dialect,
    report: &mut dyn FnMut(&str, String),
) -> Option<Rule> {
    let prom = dialect == Dialect::Prometheus;
    let action_text = c.action.as_deref().unwrap_or("").to_ascii_lowercase();
    let action_text = if action_text.is_empty() {
        "replace".to_string()
    } else {
        action_text
    };
    let action = ACTIONS
        .iter()
        .find(|(name, _)| *name == action_text)
        .map(|&(_, a)| a);
    if action.is_none() {
        let names: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
        report(
            "action",
            format!(
                "unknown action {:?}; expected one of: {}",
                c.action.as_deref().unwrap_or(""),
                names.join(", ")
            ),
        );
    }

    let filter = compile_filter(c.if_expr.as_ref(), report);
    let has_if = c.if_expr.is_some();
    let target = c.target_label.clone().unwrap_or_default();
    let sources = &c.source_labels;
    let regex_text = c.regex.as_ref().map(|r| r.0.as_str());
    let replacement = c.replacement.as_deref().unwrap_or("$1");
    let separator = c.separator.as_deref().unwrap_or(";");
    let modulus = c.modulus.unwrap_or(0);
    let a = action_text.as_str();

    // Shape checks. Each pushes a problem and lets the others run, so one
    // pass reports everything wrong with the entry.
    let mut ok = action.is_some();
    let mut fail = |field: &str, msg: String| {
        ok = false;
        report(field, msg);
    };
    let need_target = |fail: &mut dyn FnMut(&str, String)| {
        if target.is_empty() {
            fail(
                "target_label",
                format!("`target_label` is required for `action: {a}`"),
            );
        }
    };
    let need_sources = |fail: &mut dyn FnMut(&str, String), min: usize| {
        if sources.len() < min {
            let what = if min == 1 {
                "at least one"
            } else {
                "at least two"
            };
            fail(
                "source_labels",
                format!(
                    "`source_labels` must list {what} label for `action: {a}`; got {sources:?}"
                ),
            );
        }
    };
    let forbid = |fail: &mut dyn FnMut(&str, String), field: &str, set: bool| {
        if set {
            fail(
                field,
                format!("`{field}` cannot be used with `action: {a}`"),
            );
        }
    };
    let prom_default_only = |fail: &mut dyn FnMut(&str, String), field: &str, is_default: bool| {
        if !is_default {
            fail(
                field,
                format!("`{field}` cannot be set for `action: {a}` (Prometheus allows only its default)"),
            );
        }
    };

    // Prometheus 3 and vmagent take any UTF-8 label name, but not one that
    // no exposition format can carry: a control character is a typo
    // (a stray `\n` from a YAML block scalar), never a name.
    if let Some(c) = target.chars().find(|c| c.is_control()) {
        fail(
            "target_label",
            format!(
                "{target:?} is not a valid label name: it contains the control character U+{:04X}",
                u32::from(c)
            ),
        );
    }
    match action {
        Some(Action::Replace) => need_target(&mut fail),
        Some(Action::ReplaceAll) => {
            need_sources(&mut fail, 1);
            need_target(&mut fail);
        }
        Some(Action::Keep | Action::Drop) if !prom && sources.is_empty() && !has_if => {
            fail(
                "source_labels",
                format!("`source_labels` (or `if`) is required for `action: {a}`"),
            );
        }
        Some(Action::KeepEqual | Action::DropEqual) => {
            need_target(&mut fail);
            if prom {
                prom_default_only(&mut fail, "regex", regex_text.is_none_or(|r| r == "(.*)"));
                prom_default_only(&mut fail, "modulus", modulus == 0);
                prom_default_only(&mut fail, "separator", separator == ";");
                prom_default_only(&mut fail, "replacement", replacement == "$1");
            } else {
                forbid(&mut fail, "regex", regex_text.is_some());
            }
        }
        Some(Action::KeepIfEqual | Action::DropIfEqual) => {
            need_sources(&mut fail, 2);
            forbid(&mut fail, "target_label", !target.is_empty());
            forbid(&mut fail, "regex", regex_text.is_some());
        }
        Some(Action::KeepIfContains | Action::DropIfContains) => {
            need_target(&mut fail);
            need_sources(&mut fail, 1);
            forbid(&mut fail, "regex", regex_text.is_some());
        }
        Some(Action::KeepMetrics | Action::DropMetrics) => {
            if regex_text.is_none_or(str::is_empty) && !has_if {
                fail(
                    "regex",
                    format!("`regex` (or `if`) must be set for `action: {a}`"),
                );
            }
            forbid(&mut fail, "source_labels", !sources.is_empty());
        }
        Some(Action::HashMod) => {
            if !prom {
                need_sources(&mut fail, 1);
            }
            need_target(&mut fail);
            if modulus == 0 {
                fail(
                    "modulus",
                    format!("`modulus` must be a positive number for `action: {a}`"),
                );
            }
        }
        Some(Action::Lowercase | Action::Uppercase) => {
            if !prom {
                need_sources(&mut fail, 1);
            }
            need_target(&mut fail);
            if prom {
                prom_default_only(&mut fail, "replacement", replacement == "$1");
            }
        }
        Some(Action::LabelDrop | Action::LabelKeep) if prom => {
            for (field, set) in [
                ("source_labels", !sources.is_empty()),
                ("target_label", !target.is_empty()),
                ("modulus", modulus != 0),
                ("separator", separator != ";"),
                ("replacement", replacement != "$1"),
            ] {
                prom_default_only(&mut fail, field, !set);
            }
        }
        Some(Action::Graphite) => {
            if c.graphite_match.as_deref().is_none_or(str::is_empty) {
                fail(
                    "match",
                    "`match` is required for `action: graphite`, e.g. `match: foo.*.bar`".into(),
                );
            }
            if c.labels.as_ref().is_none_or(|l| l.is_empty()) {
                fail(
                    "labels",
                    "`labels` is required for `action: graphite`, e.g. `labels: {job: $1}`".into(),
                );
            }
            forbid(&mut fail, "source_labels", !sources.is_empty());
            forbid(&mut fail, "target_label", !target.is_empty());
            forbid(&mut fail, "replacement", c.replacement.is_some());
            forbid(&mut fail, "regex", regex_text.is_some());
        }
        // labelmap, labelmap_all, and the cases above whose guard did not hold.
        _ => {}
    }
    if action != Some(Action::Graphite) {
        let only_graphite = |field: &str| {
            format!("`{field}` applies only to `action: graphite`, not `action: {a}`")
        };
        if c.graphite_match.is_some() {
            fail("match", only_graphite("match"));
        }
        if c.labels.is_some() {
            fail("labels", only_graphite("labels"));
        }
    }

    // Regexes are compiled even when a check failed, so a bad one is reported too.
    let unanchored = matches!(action, Some(Action::ReplaceAll | Action::LabelMapAll));
    let anchored = if unanchored {
        None
    } else {
        match regex_text.map(|r| AnchoredRegex::new(r, dialect)) {
            None => Some(AnchoredRegex::default_regex()),
            Some(Ok(re)) => Some(re),
            Some(Err(e)) => {
                fail("regex", e);
                None
            }
        }
    };
    let unanchored = if unanchored {
        let written = regex_text.unwrap_or(".*");
        match UnanchoredRegex::new(written, dialect) {
            Ok(re) => Some(re),
            Err(e) => {
                fail("regex", e);
                None
            }
        }
    } else {
        None
    };
    let filter = filter?;
    if !ok {
        return None;
    }
    let action = action?;

    let joined = || Sources {
        names: sources.clone(),
        separator: separator.to_string(),
    };
    let hash = if prom { Hash::Md5 } else { Hash::Xxh64 };
    let op = match action {
        Action::Replace => {
            let regex = anchored?;
            let replacement = if !prom && replacement.contains("{{") {
                Replacement::WithLabelRefs(replacement.to_string())
            } else {
                Replacement::Template(regex.template(replacement))
            };
            Op::Replace {
                sources: joined(),
                target: regex.template(&target),
                regex,
                replacement,
            }
        }
        Action::ReplaceAll => {
            let regex = unanchored?;
            Op::ReplaceAll {
                sources: joined(),
                replacement: regex.template(replacement),
                regex,
                target,
            }
        }
        Action::Keep | Action::KeepMetrics | Action::Drop | Action::DropMetrics => {
            let sources = if matches!(action, Action::KeepMetrics | Action::DropMetrics) {
                Sources {
                    names: vec!["__name__".into()],
                    separator: separator.to_string(),
                }
            } else {
                joined()
            };
            let regex = anchored?;
            if matches!(action, Action::Keep | Action::KeepMetrics) {
                Op::Keep { sources, regex }
            } else {
                Op::Drop { sources, regex }
            }
        }
        Action::KeepEqual => Op::KeepEqual {
            sources: joined(),
            target,
        },
        Action::DropEqual => Op::DropEqual {
            sources: joined(),
            target,
        },
        Action::KeepIfEqual => Op::KeepIfEqual {
            names: sources.clone(),
        },
        Action::DropIfEqual => Op::DropIfEqual {
            names: sources.clone(),
        },
        Action::KeepIfContains => Op::KeepIfContains {
            names: sources.clone(),
            target,
        },
        Action::DropIfContains => Op::DropIfContains {
            names: sources.clone(),
            target,
        },
        Action::HashMod => Op::HashMod {
            sources: joined(),
            target,
            modulus,
            hash,
        },
        Action::LabelMap => {
            let regex = anchored?;
            Op::LabelMap {
                replacement: regex.template(replacement),
                regex,
            }
        }
        Action::LabelMapAll => {
            let regex = unanchored?;
            Op::LabelMapAll {
                replacement: regex.template(replacement),
                regex,
            }
        }
        Action::LabelDrop => Op::LabelDrop { regex: anchored? },
        Action::LabelKeep => Op::LabelKeep { regex: anchored? },
        Action::Lowercase => Op::Lowercase {
            sources: joined(),
            target,
        },
        Action::Uppercase => Op::Uppercase {
            sources: joined(),
            target,
        },
        Action::Graphite => Op::Graphite {
            matcher: GraphiteMatch::new(c.graphite_match.as_deref().unwrap_or_default()),
            labels: c
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), GraphiteTemplate::new(v)))
                .collect(),
        },
    };
    Some(Rule {
        text: c.to_yaml(),
        filter,
        drop_on_filter_miss: matches!(action, Action::Keep | Action::KeepMetrics),
        op,
    })
}

fn compile_filter(
    selectors: Option<&IfSelectors>,
    report: &mut dyn FnMut(&str, String),
) -> Option<Vec<Selector>> {
    let Some(IfSelectors(list)) = selectors else {
        return Some(Vec::new());
    };
    if list.is_empty() {
        report(
            "if",
            "`if` must hold a series selector, e.g. `if: '{job=\"node\"}'`".into(),
        );
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for s in list {
        match Selector::parse(s) {
            Ok(sel) => out.push(sel),
            Err(e) => {
                ok = false;
                report("if", e.to_string());
            }
        }
    }
    ok.then_some(out)
}
