//! YAML loading whose errors name the file, the line and the field, so a
//! user can fix a config without guessing (serde-saphyr gives line and
//! column; we add the file and the key written on that line).
//!
//! Every YAML document spillway reads goes through [`options`]: a budget
//! that bounds nesting depth, node count and text size, so no input can
//! exhaust the stack or memory, sized so that a 50,000-rule vmalert file
//! still loads. A breached budget is worded by [`budget_message`].

use std::path::Path;

/// Nesting of lists and mappings, as serde-saphyr's default: deep enough for
/// any config, shallow enough for the recursive deserializers it feeds.
pub const MAX_DEPTH: usize = 64;
/// Values, lists and mappings in one file: a vmalert alerting rule with two
/// labels and two annotations takes 19, so this holds 63,000 of them (a
/// 50,000-rule file loads). Checking a rule file costs up to about 300
/// bytes per node, so the budget also bounds what a hostile one can cost.
pub const MAX_NODES: usize = 1_200_000;
/// Parser events (nodes plus their ends and document markers).
pub const MAX_EVENTS: usize = 2 * MAX_NODES + 4096;
/// Bytes of scalar text in one file (files are capped at 32 MiB anyway).
pub const MAX_SCALAR_BYTES: usize = 32 << 20;

/// The parser options every YAML read uses.
pub fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_EVENTS;
    budget.max_total_scalar_bytes = MAX_SCALAR_BYTES;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o
}

/// `serde_saphyr::from_str` with [`options`].
pub fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// `serde_saphyr::from_multiple` (one value per document) with [`options`].
pub fn parse_multiple<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<Vec<T>, serde_saphyr::Error> {
    serde_saphyr::from_multiple_with_options(text, options())
}

/// A breached budget in words, naming the limit; `None` for other errors.
pub fn budget_message(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach as B;
    let depth = || {
        format!(
            "the YAML nests lists and mappings more than {MAX_DEPTH} levels deep, the most spillway reads"
        )
    };
    let serde_saphyr::Error::Budget { breach, .. } = e.without_snippet() else {
        // The scanner's own limit on `[`/`{` nesting, reported as a parse error.
        return e
            .without_snippet()
            .to_string()
            .contains("recursion limit exceeded")
            .then(depth);
    };
    let split = "; split it into several files";
    Some(match breach {
        B::Nodes { .. } | B::Events { .. } => format!(
            "the YAML holds more than {} values, lists and mappings, the most spillway reads from one file{split}",
            crate::model::range::group_digits(MAX_NODES as u64)
        ),
        B::Depth { .. } => depth(),
        B::ScalarBytes { .. } | B::InputBytes { .. } => format!(
            "the YAML's text adds up to more than {}, the most spillway reads from one file{split}",
            crate::model::size::format_size(MAX_SCALAR_BYTES as u64)
        ),
        B::Documents { .. } => {
            "the file holds more than 1024 YAML documents (`---` separators), the most spillway reads".to_string()
        }
        B::Aliases { .. }
        | B::Anchors { .. }
        | B::AliasAnchorRatio { .. }
        | B::RecordedAnchorEvents { .. }
        | B::RecordedAnchorBytes { .. }
        | B::MergeKeys { .. } => {
            "the YAML repeats anchors (`&a`, `*a`, `<<`) more than spillway expands; write the values out".to_string()
        }
        _ => "the YAML is too large or too complex to read".to_string(),
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    pub line: Option<usize>,
}

/// Parses `text` read from `source` (a path or a description such as `--config`).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str, source: &str) -> Result<T, YamlError> {
    parse::<T>(text).map_err(|e| match budget_message(&e) {
        Some(m) => YamlError {
            message: format!("{source}: {m}"),
            line: None,
        },
        None => describe(&e.to_string(), text, source),
    })
}

/// Reads (at most [`MAX_CONFIG_FILE_BYTES`](super::input::MAX_CONFIG_FILE_BYTES))
/// and parses `path`; `what` names the kind of file in a size error.
pub fn from_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, YamlError> {
    let text = super::input::read_config(path, what).map_err(|e| YamlError {
        message: e.to_string(),
        line: None,
    })?;
    from_str(&text, &path.display().to_string())
}

fn describe(raw: &str, text: &str, source: &str) -> YamlError {
    let first = raw
        .lines()
        .next()
        .unwrap_or(raw)
        .trim_start_matches("error: ");
    let (line, col, reason) = parse_location(first).unwrap_or((0, 0, first.to_string()));
    if line == 0 {
        return YamlError {
            message: format!("{source}: {reason}"),
            line: None,
        };
    }
    let field = text
        .lines()
        .nth(line - 1)
        .and_then(key_on_line)
        .map(|k| format!(" field `{k}`:"))
        .unwrap_or_default();
    let shown = text.lines().nth(line - 1).unwrap_or("").trim_end();
    YamlError {
        message: format!("{source}:{line}:{col}:{field} {reason}\n    {line} | {shown}"),
        line: Some(line),
    }
}

/// `line 4 column 8: invalid floating point` → (4, 8, "invalid floating point").
fn parse_location(s: &str) -> Option<(usize, usize, String)> {
    let rest = s.strip_prefix("line ")?;
    let (line, rest) = rest.split_once(" column ")?;
    let (col, reason) = rest.split_once(": ")?;
    Some((
        line.trim().parse().ok()?,
        col.trim().parse().ok()?,
        reason.to_string(),
    ))
}

fn key_on_line(line: &str) -> Option<String> {
    let t = line.trim_start().trim_start_matches("- ").trim_start();
    let (k, _) = t.split_once(':')?;
    let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
    (!k.is_empty() && !k.contains(' ')).then(|| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: Option<u32>,
        b: Option<Vec<Inner>>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: f64,
    }

    #[test]
    fn names_file_line_and_field() {
        let e = from_str::<T>("a: 1\nb:\n  - x: 1\n  - x: oops\n", "t.yml").unwrap_err();
        assert!(
            e.message.starts_with("t.yml:4:8: field `x`:"),
            "{}",
            e.message
        );
        assert_eq!(e.line, Some(4));
        let e = from_str::<T>("a: 1\nzzz: 2\n", "t.yml").unwrap_err();
        assert!(
            e.message.contains("t.yml:2:1: field `zzz`: unknown field"),
            "{}",
            e.message
        );
    }

    /// Regression (#14.13): a breached budget printed serde-saphyr's raw
    /// `budget breached: Nodes { nodes: 250001 }`.
    #[test]
    fn budget_breaches_are_worded() {
        for deep in [
            format!("{}1{}", "[".repeat(100), "]".repeat(100)),
            format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
            format!(
                "a:\n{}",
                (1..100)
                    .map(|i| format!("{}- \n", "  ".repeat(i)))
                    .collect::<String>()
            ),
        ] {
            let e = from_str::<serde_json::Value>(&deep, "t.yml").unwrap_err();
            assert_eq!(
                e.message,
                "t.yml: the YAML nests lists and mappings more than 64 levels deep, the most spillway reads"
            );
        }
        let wide = format!("[{}]", "1,".repeat(MAX_NODES));
        let e = from_str::<serde::de::IgnoredAny>(&wide, "t.yml").unwrap_err();
        assert!(
            e.message
                .starts_with("t.yml: the YAML holds more than 1,200,000 values"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("budget"), "{}", e.message);
    }
}
