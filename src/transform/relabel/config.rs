//! `relabel_configs` as users write them: the serde types, YAML loading with
//! file:line locations, and the YAML-ish text of one rule for debug output.
//!
//! These types only check shape (`deny_unknown_fields`, strings vs lists);
//! whether a rule makes sense is decided when it is compiled into
//! [`RelabelRules`](super::RelabelRules), which reports every problem at once.
//! They are plain serde types so other configs (destinations'
//! `relabel_configs`, `global_relabel_configs`) can embed `Vec<RelabelConfig>`.

use super::error::{Problem, RelabelError};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// One entry of `relabel_configs`, with Prometheus' and vmagent's field names.
/// Absent fields take the defaults when the rule is compiled: `action:
/// replace`, `separator: ";"`, `regex: "(.*)"`, `replacement: "$1"`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default)]
    pub regex: Option<MultiLineRegex>,
    #[serde(default)]
    pub modulus: Option<u64>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    /// vmagent's `if:` series selector(s); the rule applies only to matching series.
    #[serde(default, rename = "if")]
    pub if_expr: Option<IfSelectors>,
    /// Graphite name template for `action: graphite`, e.g. `foo.*.bar`.
    #[serde(default, rename = "match")]
    pub graphite_match: Option<String>,
    /// Labels to set for `action: graphite`; values may use `$1`, `${2}`.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `regex` as a string, or (vmagent) a list of alternatives joined with `|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiLineRegex(pub String);

impl<'de> Deserialize<'de> for MultiLineRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrList {
            what: "a regex string or a list of regex strings",
        })
        .map(|parts| MultiLineRegex(parts.join("|")))
    }
}

/// `if` as one series selector or (OR-ed) a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfSelectors(pub Vec<String>);

impl<'de> Deserialize<'de> for IfSelectors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrList {
            what: "a series selector string or a list of them",
        })
        .map(IfSelectors)
    }
}

/// Accepts a scalar (numbers and booleans read as their text, as Go's YAML
/// does for a string field) or a list of scalars.
struct StringOrList {
    what: &'static str,
}

impl<'de> Visitor<'de> for StringOrList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(vec![v.to_string()])
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(vec![v.to_string()])
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(vec![v.to_string()])
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(vec![v.to_string()])
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(vec![v.to_string()])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            out.push(item.0);
        }
        Ok(out)
    }
}

struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where each entry and each of its fields sits in the YAML text, so problems
/// found after parsing can still name a line.
#[derive(Clone, Debug, Default)]
pub(crate) struct Locations {
    pub source: Option<String>,
    /// The list's name in messages: `relabel_configs`, or a longer path when embedded.
    pub path: String,
    pub items: Vec<ItemLocation>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ItemLocation {
    pub line: u64,
    /// Line of each field's value.
    pub fields: HashMap<String, u64>,
}

impl Locations {
    pub fn unknown(path: &str) -> Self {
        Locations {
            path: path.to_string(),
            ..Default::default()
        }
    }

    /// A problem with entry `index`, field `field` (empty for the entry as a whole).
    pub fn problem(&self, index: usize, field: &str, message: String) -> Problem {
        let item = self.items.get(index);
        let line = item.and_then(|it| it.fields.get(field).copied().or(Some(it.line)));
        let mut path = format!("{}[{index}]", self.path);
        if !field.is_empty() {
            path.push('.');
            path.push_str(field);
        }
        Problem {
            source: self.source.clone(),
            line: line.filter(|&l| l > 0),
            path,
            message,
        }
    }
}

type FieldLines = Vec<serde_saphyr::Spanned<HashMap<String, serde_saphyr::Spanned<IgnoredAny>>>>;

/// Reads the layout of a `relabel_configs` list without judging its content;
/// `None` when the text is not a list of mappings at all.
fn field_lines(text: &str) -> Option<Vec<ItemLocation>> {
    let items: FieldLines = crate::model::yaml::parse(text).ok()?;
    Some(
        items
            .into_iter()
            .map(|item| ItemLocation {
                line: item.referenced.line(),
                fields: item
                    .value
                    .into_iter()
                    .map(|(k, v)| (k, v.referenced.line()))
                    .collect(),
            })
            .collect(),
    )
}

/// Parses a YAML `relabel_configs` list. On error the message names the
/// file, the line and, when the layout is readable, `relabel_configs[i].field`.
pub(crate) fn parse_yaml(
    text: &str,
    source_name: &str,
) -> Result<(Vec<RelabelConfig>, Locations), RelabelError> {
    let items = field_lines(text).unwrap_or_default();
    let locations = Locations {
        source: Some(source_name.to_string()),
        path: "relabel_configs".into(),
        items,
    };
    match crate::model::yaml::parse::<Option<Vec<RelabelConfig>>>(text) {
        Ok(configs) => Ok((configs.unwrap_or_default(), locations)),
        Err(err) => {
            let line = err.location().map(|l| l.line()).filter(|&l| l > 0);
            let message = saphyr_message(&err);
            let mut path = locations.path.clone();
            if let Some(line) = line {
                if let Some((i, item)) = locations
                    .items
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, it)| it.line <= line)
                {
                    let field = item
                        .fields
                        .iter()
                        .filter(|(_, &l)| l <= line)
                        .max_by_key(|(name, &l)| (l, std::cmp::Reverse((*name).clone())))
                        .map(|(name, _)| name.clone());
                    path = format!("{path}[{i}]");
                    if let Some(f) = field {
                        path = format!("{path}.{f}");
                    }
                }
            }
            Err(RelabelError::from(Problem {
                source: Some(source_name.to_string()),
                line,
                path,
                message,
            }))
        }
    }
}

/// serde-saphyr's message alone: no location prefix, no source snippet
/// (we print our own `file:line`), control characters escaped.
fn saphyr_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    if let Some(m) = crate::model::yaml::budget_message(err) {
        return m;
    }
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(err.without_snippet());
    raw.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

pub(crate) fn locations_from_spans(
    lines: impl IntoIterator<Item = u64>,
    source_name: &str,
    path: &str,
) -> Locations {
    Locations {
        source: Some(source_name.to_string()),
        path: path.to_string(),
        items: lines
            .into_iter()
            .map(|line| ItemLocation {
                line,
                fields: HashMap::new(),
            })
            .collect(),
    }
}

impl RelabelConfig {
    /// The rule as YAML, fields in vmagent's order, only those that are set:
    /// what the relabel debug output shows for each step.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        if let Some(IfSelectors(sels)) = &self.if_expr {
            out.push_str("if: ");
            match sels.as_slice() {
                [one] => push_scalar(&mut out, one),
                many => push_flow_list(&mut out, many),
            }
            out.push('\n');
        }
        if let Some(action) = &self.action {
            out.push_str("action: ");
            push_scalar(&mut out, action);
            out.push('\n');
        }
        if !self.source_labels.is_empty() {
            out.push_str("source_labels: ");
            push_flow_list(&mut out, &self.source_labels);
            out.push('\n');
        }
        let scalars = [
            ("separator", self.separator.clone()),
            ("target_label", self.target_label.clone()),
            ("regex", self.regex.as_ref().map(|r| r.0.clone())),
            ("modulus", self.modulus.map(|m| m.to_string())),
            ("replacement", self.replacement.clone()),
            ("match", self.graphite_match.clone()),
        ];
        for (name, value) in scalars {
            if let Some(v) = value {
                out.push_str(name);
                out.push_str(": ");
                if name == "modulus" {
                    out.push_str(&v);
                } else {
                    push_scalar(&mut out, &v);
                }
                out.push('\n');
            }
        }
        if let Some(labels) = &self.labels {
            out.push_str("labels:\n");
            for (k, v) in labels {
                out.push_str("  ");
                push_scalar(&mut out, k);
                out.push_str(": ");
                push_scalar(&mut out, v);
                out.push('\n');
            }
        }
        out
    }
}

fn push_flow_list(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_scalar(out, s);
    }
    out.push(']');
}

/// Writes `s` bare when YAML would read it back as the same string, quoted otherwise.
fn push_scalar(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && !s.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.ends_with(char::is_whitespace)
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(|c: char| c.is_control() || ",[]{}".contains(c))
        && !s.ends_with(':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off"
        )
        && s.parse::<f64>().is_err();
    if plain {
        out.push_str(s);
        return;
    }
    out.push('\'');
    out.push_str(&s.replace('\'', "''"));
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_list_joins_with_pipe_and_scalars_read_as_text() {
        let c: Vec<RelabelConfig> =
            serde_saphyr::from_str("- regex: [foo, 1, true]\n- regex: 2.5\n  if: up\n").unwrap();
        assert_eq!(c[0].regex, Some(MultiLineRegex("foo|1|true".into())));
        assert_eq!(c[1].regex, Some(MultiLineRegex("2.5".into())));
        assert_eq!(c[1].if_expr, Some(IfSelectors(vec!["up".into()])));
    }

    #[test]
    fn embeds_in_json_too() {
        let c: Vec<RelabelConfig> =
            serde_json::from_str(r#"[{"regex": ["a", "b"], "if": ["x", "{a=\"b\"}"]}]"#).unwrap();
        assert_eq!(c[0].regex, Some(MultiLineRegex("a|b".into())));
        assert_eq!(c[0].if_expr.as_ref().unwrap().0.len(), 2);
    }

    #[test]
    fn rule_text_round_trips() {
        let yaml = "if: '{a=\"b\"}'\naction: replace\nsource_labels: [a, b c, '']\nseparator: ''\ntarget_label: x\nregex: 'f(.*): x'\nmodulus: 3\nreplacement: $1\n";
        let c: Vec<RelabelConfig> =
            serde_saphyr::from_str(&format!("- {}", yaml.replace('\n', "\n  "))).unwrap();
        let text = c[0].to_yaml();
        assert_eq!(text, yaml);
        let back: RelabelConfig = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, c[0]);
    }
}
