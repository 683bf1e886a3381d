//! Series selectors: `metric{a="b", c=~"d.*"}`, as written in PromQL, in
//! vmagent's `if:` and in spillway's threshold files.
//!
//! Regexes are anchored the way Prometheus anchors them (`^(?:re)$`) and use
//! ASCII classes for `\d \w \s`, as Go's RE2 does. VictoriaMetrics' `or`
//! inside braces (`{a="1" or b="2"}`) is accepted: the selector then matches
//! when any of its alternatives matches.

use super::Labels;
use regex::Regex;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid series selector {input:?}: {reason} (at byte {position})")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
    pub position: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, String> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(anchored_regex(&value)?),
            _ => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.value(&self.name);
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// Compiles `re` the way Prometheus does: fully anchored, Go-style ASCII classes.
pub fn anchored_regex(re: &str) -> Result<Regex, String> {
    compile_go_style(&format!("^(?:{re})$")).map_err(|_| format!("invalid regex {re:?}"))
}

/// Compiles a Go RE2 pattern with Rust's `regex`, keeping Go's meaning.
pub fn compile_go_style(pattern: &str) -> Result<Regex, String> {
    Regex::new(&super::goregex::go_to_rust(pattern))
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

/// One or more alternatives (`or`); each alternative is a conjunction of matchers.
#[derive(Clone, Debug)]
pub struct Selector {
    source: String,
    alternatives: Vec<Vec<Matcher>>,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).parse()
    }

    /// A selector matching series whose `__name__` equals `name`.
    pub fn metric(name: &str) -> Self {
        let m = Matcher::new("__name__", MatchOp::Equal, name).expect("equality never fails");
        Selector {
            source: name.to_string(),
            alternatives: vec![vec![m]],
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.alternatives
            .iter()
            .any(|all| all.iter().all(|m| m.matches(labels)))
    }

    pub fn alternatives(&self) -> &[Vec<Matcher>] {
        &self.alternatives
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Parses a label set literal `{a="b", c="d"}` or `metric{a="b"}` (equality
/// only); names that are not plain are quoted (`{"dropme-please"="x"}`), and
/// `{}` is the empty set.
pub fn parse_label_set(input: &str) -> Result<Labels, SelectorError> {
    let inner = input
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'));
    if inner.is_some_and(|r| r.trim().is_empty()) {
        return Ok(Labels::new());
    }
    let selector = Selector::parse(input)?;
    let mut labels = Labels::new();
    let [matchers] = selector.alternatives.as_slice() else {
        return Err(SelectorError {
            input: input.into(),
            reason: "a label set cannot use `or`".into(),
            position: 0,
        });
    };
    for m in matchers {
        if m.op != MatchOp::Equal {
            return Err(SelectorError {
                input: input.into(),
                reason: format!("label {:?} must use `=` in a label set", m.name),
                position: 0,
            });
        }
        if labels.get(&m.name).is_some() {
            return Err(SelectorError {
                input: input.into(),
                reason: format!(
                    "label {:?} is given twice; a series has one value per label",
                    m.name
                ),
                position: 0,
            });
        }
        labels.set(m.name.clone(), m.value.clone());
    }
    Ok(labels)
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser { input, pos: 0 }
    }

    fn err(&self, reason: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            reason: reason.into(),
            position: self.pos,
        }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c == '_'
                    || c == ':'
                    || c == '.'
                    || c.is_ascii_alphabetic()
                    || (i > 0 && c.is_ascii_digit()))
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(&rest[..len])
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let metric = self.ident().map(str::to_string);
        let mut alternatives = vec![Vec::new()];
        if self.eat("{") {
            alternatives = self.parse_braces()?;
        }
        self.skip_ws();
        if !self.rest().is_empty() {
            return Err(self.err(format!("unexpected {:?}", self.rest())));
        }
        if metric.is_none() && alternatives.iter().all(Vec::is_empty) {
            return Err(self.err("expected a metric name or at least one label matcher"));
        }
        if let Some(name) = metric {
            for alt in &mut alternatives {
                let m = Matcher::new("__name__", MatchOp::Equal, name.clone())
                    .map_err(|e| self.err(e))?;
                alt.insert(0, m);
            }
        }
        Ok(Selector {
            source: self.input.trim().to_string(),
            alternatives,
        })
    }

    fn parse_braces(&mut self) -> Result<Vec<Vec<Matcher>>, SelectorError> {
        let mut alternatives = vec![Vec::new()];
        loop {
            if self.eat("}") {
                return Ok(alternatives);
            }
            let matcher = self.parse_matcher()?;
            alternatives.last_mut().expect("never empty").push(matcher);
            if self.eat(",") {
                continue;
            }
            self.skip_ws();
            if self.rest().starts_with("or")
                && !self.rest()[2..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                self.pos += 2;
                alternatives.push(Vec::new());
                continue;
            }
            if self.eat("}") {
                return Ok(alternatives);
            }
            return Err(self.err("expected `,`, `or` or `}`"));
        }
    }

    fn parse_matcher(&mut self) -> Result<Matcher, SelectorError> {
        let name = match self.ident() {
            Some(n) => n.to_string(),
            None => {
                self.skip_ws();
                if self.rest().starts_with('"') {
                    self.parse_string()?
                } else {
                    return Err(self.err("expected a label name"));
                }
            }
        };
        let op = if self.eat("=~") {
            MatchOp::Regex
        } else if self.eat("!~") {
            MatchOp::NotRegex
        } else if self.eat("!=") {
            MatchOp::NotEqual
        } else if self.eat("=") {
            MatchOp::Equal
        } else {
            return Err(self.err(format!("expected `=`, `!=`, `=~` or `!~` after {name:?}")));
        };
        self.skip_ws();
        let value = self.parse_string()?;
        Matcher::new(name, op, value).map_err(|e| self.err(e))
    }

    fn parse_string(&mut self) -> Result<String, SelectorError> {
        let quote = match self.rest().chars().next() {
            Some(q @ ('"' | '\'' | '`')) => q,
            _ => return Err(self.err("expected a quoted string")),
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 1;
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                let at = self.pos + i;
                let unescaped = unescape(&mut chars, quote).map_err(|reason| SelectorError {
                    input: self.input.to_string(),
                    reason,
                    position: at,
                })?;
                out.push(unescaped);
            } else {
                out.push(c);
            }
        }
        Err(self.err("unterminated string"))
    }
}

/// One escape sequence after a backslash, as Go's `strconv.Unquote` (which
/// PromQL and MetricsQL use) reads it; anything else is an error rather than
/// the character itself, so `\q` or `\.` is not silently taken as `q` or `.`.
fn unescape(chars: &mut std::str::CharIndices<'_>, quote: char) -> Result<char, String> {
    let (_, esc) = chars.next().ok_or("unterminated escape")?;
    let hex = |chars: &mut std::str::CharIndices<'_>, n: usize| -> Result<char, String> {
        let digits: String = chars.take(n).map(|(_, c)| c).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .ok_or_else(|| {
                format!("invalid escape \\{esc}{digits}: expected {n} hex digits of a character")
            })
    };
    Ok(match esc {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        '\\' => '\\',
        q if q == quote => q,
        'x' => hex(chars, 2)?,
        'u' => hex(chars, 4)?,
        'U' => hex(chars, 8)?,
        '0'..='7' => {
            let rest: String = chars.take(2).map(|(_, c)| c).collect();
            let digits = format!("{esc}{rest}");
            u32::from_str_radix(&digits, 8)
                .ok()
                .filter(|&v| rest.len() == 2 && v <= 0xff)
                .and_then(char::from_u32)
                .ok_or_else(|| format!("invalid escape \\{digits}: expected three octal digits"))?
        }
        other => {
            return Err(format!(
                "unknown escape \\{other}; write \\\\{other} for a backslash followed by {other:?}"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn metric_and_matchers() {
        let s = Selector::parse(r#"up{job=~"node|vm", instance!="a"}"#).unwrap();
        assert!(s.matches(&labels(&[
            ("__name__", "up"),
            ("job", "node"),
            ("instance", "b")
        ])));
        assert!(!s.matches(&labels(&[("__name__", "up"), ("job", "nodes")])));
        assert!(!s.matches(&labels(&[
            ("__name__", "up"),
            ("job", "vm"),
            ("instance", "a")
        ])));
    }

    #[test]
    fn regex_is_anchored_and_absent_label_is_empty() {
        let s = Selector::parse(r#"{x=~"a"}"#).unwrap();
        assert!(!s.matches(&labels(&[("x", "ab")])));
        let s = Selector::parse(r#"{x=~".*"}"#).unwrap();
        assert!(s.matches(&labels(&[])));
        let s = Selector::parse(r#"{x!~".+"}"#).unwrap();
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn go_ascii_classes() {
        let s = Selector::parse(r#"{x=~"\\d+"}"#).unwrap();
        assert!(s.matches(&labels(&[("x", "123")])));
        assert!(!s.matches(&labels(&[("x", "١٢٣")])));
    }

    #[test]
    fn go_classes_inside_brackets_and_negated() {
        let s = Selector::parse(r#"{a=~"[\\d.]+"}"#).unwrap();
        assert!(s.matches(&labels(&[("a", "1.2")])));
        assert!(!s.matches(&labels(&[("a", "ABC")])));
        let s = Selector::parse(r#"{a=~"\\W"}"#).unwrap();
        assert!(s.matches(&labels(&[("a", "-")])));
    }

    #[test]
    fn or_alternatives_and_dotted_names() {
        let s = Selector::parse(r#"{a="1" or foo.bar="2"}"#).unwrap();
        assert!(s.matches(&labels(&[("foo.bar", "2")])));
        assert!(s.matches(&labels(&[("a", "1")])));
        assert!(!s.matches(&labels(&[("a", "2")])));
    }

    #[test]
    fn errors_say_where() {
        let e = Selector::parse(r#"{a="1""#).unwrap_err();
        assert!(e.reason.contains("expected"), "{e}");
        assert!(Selector::parse("{}").is_err());
        assert!(Selector::parse(r#"{a=~"("}"#).is_err());
    }

    /// Regression (#14.13): `spillway relabel --labels` took a label given
    /// twice (the last won) and an unknown escape (`\q` became `q`) silently.
    #[test]
    fn label_sets_refuse_duplicates_and_unknown_escapes() {
        let e = parse_label_set(r#"{a="1", a="2"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label \"a\" is given twice"), "{e}");
        let e = parse_label_set(r#"{a="x\qy"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown escape \\q"), "{e}");
        let e = Selector::parse(r#"{a=~"x\.y"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown escape \\."), "{e}");
        let l = parse_label_set(r#"{a="\x41\u00e9\101\"\\\n", b='it\'s', c=`raw\q`}"#).unwrap();
        assert_eq!(l.get("a"), Some("A\u{e9}A\"\\\n"));
        assert_eq!(l.get("b"), Some("it's"));
        assert_eq!(l.get("c"), Some("raw\\q"));
        assert!(parse_label_set(r#"{a="\x4"}"#).is_err());
        assert!(parse_label_set(r#"{a="\"#).is_err());
    }

    #[test]
    fn label_set_literal() {
        let l = parse_label_set(r#"{__name__="x", a="b"}"#).unwrap();
        assert_eq!(l.to_string(), r#"x{a="b"}"#);
        assert!(parse_label_set(r#"{a=~"b"}"#).is_err());
        assert!(parse_label_set(" { } ").unwrap().is_empty());
        assert!(
            Selector::parse("{}").is_err(),
            "a selector still needs a matcher"
        );
        // Names that are not plain are written quoted and read back.
        for text in [
            r#"{a="b", "dropme-please"="x"}"#,
            r#"{__name__="my-metric", "le 1"="2"}"#,
            r#"dotted.name{"x/y"="1"}"#,
        ] {
            let l = parse_label_set(text).unwrap();
            assert_eq!(l.to_string(), text);
            assert_eq!(parse_label_set(&l.to_string()).unwrap(), l);
        }
    }
}
