//! YAML loading whose errors name the file, the line and the field, so a
//! user can fix a config without guessing (serde-saphyr gives line and
//! column; we add the file and the key written on that line).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    pub line: Option<usize>,
}

/// Parses `text` read from `source` (a path or a description such as `--config`).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str, source: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| describe(&e.to_string(), text, source))
}

pub fn from_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, YamlError> {
    let text = std::fs::read_to_string(path).map_err(|e| YamlError {
        message: format!("cannot read {}: {e}", path.display()),
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
}
