//! Applying compiled rules to one series, in place on its [`Labels`].
//!
//! The one thing `Labels` cannot hold is vmagent's label-with-an-empty-value:
//! there, a label set to `""` stays in the set (read as `""`, counted, visited
//! by `labelmap`) until the whole list has run. [`Work`] keeps those names on
//! the side, so the series itself is edited in place and nothing is copied
//! when no rule changes it. Under the Prometheus dialect the side list stays
//! empty: an empty value deletes the label at once, as `labels.Builder` does.

use super::compile::{Hash, Op, Replacement, Rule};
use super::Dialect;
use crate::model::Labels;
use std::borrow::Cow;

pub(crate) struct Work<'a> {
    pub labels: &'a mut Labels,
    /// Labels present with an empty value (vmagent dialect only).
    empties: Vec<String>,
    defer_empty: bool,
}

impl<'a> Work<'a> {
    pub fn new(labels: &'a mut Labels, dialect: Dialect) -> Self {
        Work {
            labels,
            empties: Vec::new(),
            defer_empty: dialect == Dialect::VictoriaMetrics,
        }
    }

    /// No label left, counting empty-valued ones: vmagent stops relabeling here.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.empties.is_empty()
    }

    /// True when setting `name` to `value` would change nothing.
    fn is_current(&self, name: &str, value: &str) -> bool {
        if value.is_empty() {
            self.labels.get(name).is_none()
                && (!self.defer_empty || self.empties.iter().any(|e| e == name))
        } else {
            self.labels.get(name) == Some(value)
        }
    }

    fn set(&mut self, name: &str, value: String) {
        if name.is_empty() {
            return;
        }
        if value.is_empty() {
            self.labels.remove(name);
            if self.defer_empty && !self.empties.iter().any(|e| e == name) {
                self.empties.push(name.to_string());
            }
        } else {
            self.labels.set(name, value);
            if !self.empties.is_empty() {
                self.empties.retain(|e| e != name);
            }
        }
    }

    fn set_if_changed(&mut self, name: &str, value: Cow<'_, str>) {
        if !self.is_current(name, &value) {
            let value = value.into_owned();
            self.set(name, value);
        }
    }

    pub fn clear(&mut self) {
        *self.labels = Labels::new();
        self.empties.clear();
    }
}

impl Rule {
    /// For a rule that only keeps or drops (never edits labels; the
    /// caller checked [`Rule::is_filter`] once for the whole list): whether
    /// the series survives, read from borrowed labels. The vmagent
    /// dialect's empty-valued labels need no care here: filtering reads an
    /// absent label and an empty one alike.
    #[inline]
    pub(crate) fn decide(&self, labels: &Labels) -> bool {
        if !self.filter.is_empty() && !self.filter.iter().any(|s| s.matches(labels)) {
            return !self.drop_on_filter_miss;
        }
        self.filter_op(labels)
            .expect("only rules that pass is_filter are decided")
    }

    /// Whether this rule only keeps or drops series.
    pub(crate) fn is_filter(&self) -> bool {
        matches!(
            self.op,
            Op::Keep { .. }
                | Op::Drop { .. }
                | Op::KeepEqual { .. }
                | Op::DropEqual { .. }
                | Op::KeepIfEqual { .. }
                | Op::DropIfEqual { .. }
                | Op::KeepIfContains { .. }
                | Op::DropIfContains { .. }
        )
    }

    /// The verdict of a filtering op; `None` for ops that edit.
    #[inline]
    fn filter_op(&self, labels: &Labels) -> Option<bool> {
        Some(match &self.op {
            Op::Keep { sources, regex } => regex.is_any() || sources.match_joined(labels, regex),
            Op::Drop { sources, regex } => !(regex.is_any() || sources.match_joined(labels, regex)),
            Op::KeepEqual { sources, target } => sources.join(labels) == labels.value(target),
            Op::DropEqual { sources, target } => sources.join(labels) != labels.value(target),
            Op::KeepIfEqual { names } => all_equal(labels, names),
            Op::DropIfEqual { names } => !all_equal(labels, names),
            Op::KeepIfContains { names, target } => contains_all(labels, target, names),
            Op::DropIfContains { names, target } => !contains_all(labels, target, names),
            _ => return None,
        })
    }

    /// Applies this rule; `false` means the series is dropped.
    pub(crate) fn apply(&self, work: &mut Work<'_>) -> bool {
        if !self.filter.is_empty() && !self.filter.iter().any(|s| s.matches(work.labels)) {
            return !self.drop_on_filter_miss;
        }
        let labels: &Labels = work.labels;
        if let Some(keep) = self.filter_op(labels) {
            return keep;
        }
        match &self.op {
            Op::Replace {
                sources,
                regex,
                target,
                replacement,
            } => {
                let filled;
                let runtime;
                let replacement = match replacement {
                    Replacement::Template(t) => t,
                    Replacement::WithLabelRefs(raw) => {
                        filled = fill_label_refs(raw, labels);
                        runtime = regex.template(&filled);
                        &runtime
                    }
                };
                let joined = sources.join(labels);
                let need_groups = target.has_groups() || replacement.has_groups();
                let Some(groups) = regex.groups(&joined, need_groups) else {
                    return true;
                };
                let name = target.expand(&groups);
                let value = replacement.expand(&groups);
                if name.is_empty() || work.is_current(&name, &value) {
                    return true;
                }
                let (name, value) = (name.into_owned(), value.into_owned());
                work.set(&name, value);
            }
            Op::ReplaceAll {
                sources,
                regex,
                target,
                replacement,
            } => {
                let joined = sources.join(labels);
                let value = regex.replace_all(&joined, replacement);
                if value != joined {
                    let value = value.into_owned();
                    work.set_if_changed(target, Cow::Owned(value));
                }
            }
            Op::Keep { .. }
            | Op::Drop { .. }
            | Op::KeepEqual { .. }
            | Op::DropEqual { .. }
            | Op::KeepIfEqual { .. }
            | Op::DropIfEqual { .. }
            | Op::KeepIfContains { .. }
            | Op::DropIfContains { .. } => unreachable!("filter_op decided"),
            Op::HashMod {
                sources,
                target,
                modulus,
                hash,
            } => {
                let joined = sources.join(labels);
                let h = match hash {
                    Hash::Md5 => {
                        use md5::Digest;
                        let digest = md5::Md5::digest(joined.as_bytes());
                        let mut tail = [0u8; 8];
                        tail.copy_from_slice(&digest[8..16]);
                        u64::from_be_bytes(tail)
                    }
                    Hash::Xxh64 => xxhash_rust::xxh64::xxh64(joined.as_bytes(), 0),
                };
                work.set_if_changed(target, Cow::Owned((h % modulus).to_string()));
            }
            Op::LabelMap { regex, replacement } => {
                // Prometheus maps a snapshot of the labels; vmagent reads each
                // label's current value, so an earlier mapping in the same rule
                // is visible to a later one.
                let mut moves: Vec<(String, String, String)> = Vec::new();
                for (name, value) in all_labels(labels, &work.empties) {
                    if let Some(g) = regex.groups(name, replacement.has_groups()) {
                        let new = replacement.expand(&g);
                        if *new != *name && !new.is_empty() {
                            moves.push((new.into_owned(), name.to_string(), value.to_string()));
                        }
                    }
                }
                for (new, old, snapshot) in moves {
                    let value = if work.defer_empty {
                        work.labels.value(&old).to_string()
                    } else {
                        snapshot
                    };
                    work.set(&new, value);
                }
            }
            Op::LabelMapAll { regex, replacement } => {
                let changes = all_labels(labels, &work.empties)
                    .any(|(name, _)| regex.replace_all(name, replacement) != name);
                if !changes {
                    return true;
                }
                // Renaming can merge two labels into one name; vmagent then
                // reads the first, so the first one in order wins here.
                let renamed: Vec<(String, String)> = all_labels(labels, &work.empties)
                    .map(|(n, v)| {
                        (
                            regex.replace_all(n, replacement).into_owned(),
                            v.to_string(),
                        )
                    })
                    .collect();
                let mut fresh = Labels::new();
                let mut empties: Vec<String> = Vec::new();
                for (name, value) in renamed {
                    if name.is_empty() || fresh.get(&name).is_some() || empties.contains(&name) {
                        continue;
                    }
                    if value.is_empty() {
                        empties.push(name);
                    } else {
                        fresh.set(name, value);
                    }
                }
                *work.labels = fresh;
                work.empties = empties;
            }
            Op::LabelDrop { regex } => {
                work.labels.retain(|l| !regex.is_match(&l.name));
                work.empties.retain(|n| !regex.is_match(n));
            }
            Op::LabelKeep { regex } => {
                work.labels.retain(|l| regex.is_match(&l.name));
                work.empties.retain(|n| regex.is_match(n));
            }
            Op::Lowercase { sources, target } => {
                let joined = sources.join(labels);
                let value = if joined.chars().any(|c| c.to_lowercase().ne([c])) {
                    Cow::Owned(joined.chars().flat_map(char::to_lowercase).collect())
                } else {
                    joined
                };
                if !work.is_current(target, &value) {
                    let value = value.into_owned();
                    work.set(target, value);
                }
            }
            Op::Uppercase { sources, target } => {
                let joined = sources.join(labels);
                let value = if joined.chars().any(|c| c.to_uppercase().ne([c])) {
                    Cow::Owned(joined.chars().flat_map(char::to_uppercase).collect())
                } else {
                    joined
                };
                if !work.is_current(target, &value) {
                    let value = value.into_owned();
                    work.set(target, value);
                }
            }
            Op::Graphite {
                matcher,
                labels: rules,
            } => {
                let Some(caps) = matcher.captures(labels.metric_name()) else {
                    return true;
                };
                let values: Vec<String> = rules.iter().map(|(_, t)| t.expand(&caps)).collect();
                for ((target, _), value) in rules.iter().zip(values) {
                    work.set_if_changed(target, Cow::Owned(value));
                }
            }
        }
        true
    }
}

/// Every label in order, then the empty-valued ones vmagent still holds.
fn all_labels<'a>(
    labels: &'a Labels,
    empties: &'a [String],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .chain(empties.iter().map(|n| (n.as_str(), "")))
}

fn all_equal(labels: &Labels, names: &[String]) -> bool {
    let Some((first, rest)) = names.split_first() else {
        return true;
    };
    let v = labels.value(first);
    rest.iter().all(|n| labels.value(n) == v)
}

/// vmagent's `keep_if_contains`: the target's value contains every source
/// value as a substring (an empty or absent source is always contained).
fn contains_all(labels: &Labels, target: &str, names: &[String]) -> bool {
    let t = labels.value(target);
    names.iter().all(|n| t.contains(labels.value(n)))
}

/// Replaces vmagent's `{{name}}` references with label values (absent = empty).
pub(crate) fn fill_label_refs(template: &str, labels: &Labels) -> String {
    let mut out = String::with_capacity(template.len());
    let mut s = template;
    while let Some(n) = s.find("{{") {
        out.push_str(&s[..n]);
        s = &s[n + 2..];
        match s.find("}}") {
            Some(m) => {
                out.push_str(labels.value(&s[..m]));
                s = &s[m + 2..];
            }
            None => {
                out.push_str("{{");
                break;
            }
        }
    }
    out.push_str(s);
    out
}
