//! Relabel regexes with Go's RE2 meaning on top of Rust's `regex` crate.
//!
//! Users copy regexes from Prometheus and vmagent configs, so a pattern must
//! mean here what it means in Go: `\d \w \s \b` are ASCII, `{` that does not
//! start a repetition is a literal, `\Q...\E` quotes, `\<` is a plain `<`.
//! [`go_to_rust`] rewrites those spots and leaves the rest alone (the two
//! syntaxes agree on everything else users write).
//!
//! Anchoring depends on the dialect (`^(?s:re)$` for Prometheus, one `^`/`$`
//! stripped then `^(?:re)$` for vmagent). Replacement templates follow Go's
//! `Regexp.Expand` and are parsed once, when the rules are compiled. The
//! default regex `(.*)`, plain literals and `a|b|c` lists of literals skip the
//! regex engine: they are most of what real configs hold.

use super::Dialect;
use regex::{Captures, Regex};
use std::borrow::Cow;

pub use crate::model::goregex::go_to_rust;

/// Compiles a Go pattern, reporting Rust's reason without its caret diagram
/// (which would point into the rewritten pattern, not the user's).
fn compile(written: &str, wrapped: &str) -> Result<Regex, String> {
    Regex::new(wrapped).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(text.lines().last().unwrap_or("invalid"))
            .to_string();
        format!("invalid regex {written:?}: {reason}")
    })
}

fn is_plain_literal(s: &str) -> bool {
    !s.chars().any(|c| "\\.+*?()|[]{}^$".contains(c))
}

/// How a full-string match can be decided without the regex engine.
#[derive(Debug, Clone)]
enum Fast {
    /// The default `(.*)`: everything matches, `$0` and `$1` are the whole value.
    Any,
    Literal(Box<str>),
    OneOf(Box<[Box<str>]>),
    Engine,
}

/// A regex matched against a whole value (`replace`, `keep`, `labelmap`, ...).
#[derive(Debug, Clone)]
pub struct AnchoredRegex {
    re: Regex,
    fast: Fast,
}

impl AnchoredRegex {
    /// The regex a rule gets when `regex` is not set.
    pub fn default_regex() -> Self {
        AnchoredRegex {
            re: Regex::new("^(?s:(.*))$").expect("valid"),
            fast: Fast::Any,
        }
    }

    pub fn new(written: &str, dialect: Dialect) -> Result<Self, String> {
        let body = match dialect {
            Dialect::Prometheus => written,
            Dialect::VictoriaMetrics => strip_anchors(written),
        };
        let is_default = match dialect {
            Dialect::Prometheus => written == "(.*)",
            // vmagent replaces anything that simplifies to `.*` with its
            // default `^(.*)$`, so `$1` is the whole value even for `.*`.
            Dialect::VictoriaMetrics => matches!(
                body,
                ".*" | "(.*)" | "(?:.*)" | "(?s:.*)" | "(?s).*" | "(?s:(.*))" | "(?s)(.*)"
            ),
        };
        if is_default {
            return Ok(Self::default_regex());
        }
        let translated = go_to_rust(body);
        let wrapped = match dialect {
            Dialect::Prometheus => format!("^(?s:{translated})$"),
            Dialect::VictoriaMetrics => format!("^(?:{translated})$"),
        };
        let re = compile(written, &wrapped)?;
        let fast = if is_plain_literal(body) {
            Fast::Literal(body.into())
        } else if body.contains('|') && body.split('|').all(is_plain_literal) {
            Fast::OneOf(body.split('|').map(Into::into).collect())
        } else {
            Fast::Engine
        };
        Ok(AnchoredRegex { re, fast })
    }

    /// True for the default `(.*)`, which matches any value.
    pub fn is_any(&self) -> bool {
        matches!(self.fast, Fast::Any)
    }

    #[inline]
    pub fn is_match(&self, s: &str) -> bool {
        match &self.fast {
            Fast::Any => true,
            Fast::Literal(l) => **l == *s,
            Fast::OneOf(set) => set.iter().any(|l| **l == *s),
            Fast::Engine => self.re.is_match(s),
        }
    }

    /// Match groups, or `None` when `s` does not match. Cheap unless
    /// `need_groups` and the regex really has to run.
    pub fn groups<'s>(&self, s: &'s str, need_groups: bool) -> Option<Groups<'s>> {
        match &self.fast {
            Fast::Any => Some(Groups::Whole { s, groups: 2 }),
            // `captures` allocates even on a miss, and misses are the common
            // case (`labelmap` tries every label name): test first.
            Fast::Engine if need_groups => {
                if self.re.is_match(s) {
                    self.re.captures(s).map(Groups::Caps)
                } else {
                    None
                }
            }
            _ => self.is_match(s).then_some(Groups::Whole { s, groups: 1 }),
        }
    }

    pub fn template(&self, template: &str) -> Template {
        Template::parse(template, &self.re)
    }
}

/// vmagent strips one leading `^` and one trailing unescaped `$` before anchoring.
fn strip_anchors(re: &str) -> &str {
    let re = re.strip_prefix('^').unwrap_or(re);
    match re.strip_suffix('$') {
        Some(rest) if !rest.ends_with('\\') => rest,
        _ => re,
    }
}

/// A regex applied to every occurrence (`replace_all`, `labelmap_all`).
#[derive(Debug, Clone)]
pub struct UnanchoredRegex {
    re: Regex,
    literal: Option<Box<str>>,
}

impl UnanchoredRegex {
    pub fn new(written: &str, dialect: Dialect) -> Result<Self, String> {
        let translated = go_to_rust(written);
        let wrapped = match dialect {
            Dialect::Prometheus => format!("(?s:{translated})"),
            Dialect::VictoriaMetrics => translated,
        };
        let re = compile(written, &wrapped)?;
        let literal = (is_plain_literal(written) && !written.is_empty()).then(|| written.into());
        Ok(UnanchoredRegex { re, literal })
    }

    pub fn template(&self, template: &str) -> Template {
        Template::parse(template, &self.re)
    }

    /// Go's `ReplaceAllString`: every non-overlapping match expanded with `template`.
    pub fn replace_all<'s>(&self, s: &'s str, template: &Template) -> Cow<'s, str> {
        if let Some(lit) = &self.literal {
            if !s.contains(&**lit) {
                return Cow::Borrowed(s);
            }
        }
        let mut out = String::new();
        let mut last = 0;
        let mut matched = false;
        for caps in self.re.captures_iter(s) {
            matched = true;
            let m = caps.get(0).expect("group 0 always exists");
            out.push_str(&s[last..m.start()]);
            template.expand_into(&Groups::Caps(caps), &mut out);
            last = m.end();
        }
        if !matched {
            return Cow::Borrowed(s);
        }
        out.push_str(&s[last..]);
        Cow::Owned(out)
    }
}

/// The groups of one match.
pub enum Groups<'s> {
    /// A match decided without the engine: groups `0..groups` are all `s`.
    Whole {
        s: &'s str,
        groups: usize,
    },
    Caps(Captures<'s>),
}

impl<'s> Groups<'s> {
    fn get(&self, i: usize) -> Option<&'s str> {
        match self {
            Groups::Whole { s, groups } => (i < *groups).then_some(*s),
            Groups::Caps(c) => c.get(i).map(|m| m.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Group(usize),
}

/// A `replacement` or `target_label` parsed the way Go's `Regexp.Expand`
/// reads it: `$$` is `$`, `$1`/`${1}` a group by number, `$name`/`${name}` by
/// name (the longest run of letters, digits and `_`), a missing group is
/// empty, a malformed `$` is kept as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(template: &str, re: &Regex) -> Template {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = template;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            rest = &rest[pos + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let Some((name, after)) = extract_group_name(rest) else {
                lit.push('$');
                continue;
            };
            rest = after;
            let index = match group_number(name) {
                Some(n) => (n < re.captures_len()).then_some(n),
                None => re.capture_names().position(|n| n == Some(name)),
            };
            if let Some(i) = index {
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Group(i));
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Template { parts }
    }

    pub fn has_groups(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Group(_)))
    }

    pub fn expand<'a>(&'a self, groups: &Groups<'a>) -> Cow<'a, str> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(""),
            [Part::Lit(s)] => Cow::Borrowed(s),
            [Part::Group(i)] => Cow::Borrowed(groups.get(*i).unwrap_or("")),
            _ => {
                let mut out = String::new();
                self.expand_into(groups, &mut out);
                Cow::Owned(out)
            }
        }
    }

    fn expand_into(&self, groups: &Groups<'_>, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Group(i) => out.push_str(groups.get(*i).unwrap_or("")),
            }
        }
    }
}

/// Go's `extract`: the name after `$`, braced or not, and what follows it.
fn extract_group_name(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        let rest = body[end..].strip_prefix('}')?;
        Some((name, rest))
    } else {
        Some((name, &body[end..]))
    }
}

/// A group number as Go reads it: decimal digits, no leading zero, below 1e8.
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    name.parse::<usize>().ok().filter(|&n| n < 100_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchored(re: &str, d: Dialect) -> AnchoredRegex {
        AnchoredRegex::new(re, d).unwrap()
    }

    #[test]
    fn go_classes_are_ascii_inside_and_outside_brackets() {
        for d in [Dialect::Prometheus, Dialect::VictoriaMetrics] {
            assert!(anchored(r"\d+", d).is_match("123"));
            assert!(!anchored(r"\d+", d).is_match("١٢٣"));
            assert!(anchored(r"[\d.]+", d).is_match("1.5"));
            assert!(!anchored(r"[\d.]+", d).is_match("1,5"));
            assert!(anchored(r"\D+", d).is_match("é-x"));
            assert!(anchored(r"[^\W]+", d).is_match("ab_1"));
            assert!(anchored(r"a\sb", d).is_match("a\tb"));
            assert!(anchored(r"[\S]+", d).is_match("ab"));
        }
    }

    #[test]
    fn go_literal_braces_escapes_and_quotes() {
        let d = Dialect::VictoriaMetrics;
        assert!(anchored("a{", d).is_match("a{"));
        assert!(anchored("a{,2}", d).is_match("a{,2}"));
        assert!(anchored("a{2}", d).is_match("aa"));
        assert!(anchored("x}", d).is_match("x}"));
        assert!(anchored(r"\<b\>", d).is_match("<b>"));
        assert!(anchored(r"\Qa.b*\E+", d).is_match("a.b**"));
        assert!(!anchored(r"\Qa.b*\E", d).is_match("axb"));
        assert!(anchored(r"[]a]+", d).is_match("]a]"));
        assert!(anchored(r"[a&&b]+", d).is_match("a&&b"));
        assert!(anchored(r"[[:digit:]x]+", d).is_match("1x2"));
        assert!(anchored(r"\101", d).is_match("A"));
    }

    #[test]
    fn anchoring_and_dot_per_dialect() {
        assert!(anchored("line1.*line2", Dialect::Prometheus).is_match("line1\nline2"));
        assert!(!anchored("line1.*line2", Dialect::VictoriaMetrics).is_match("line1\nline2"));
        assert!(!anchored("f|o", Dialect::Prometheus).is_match("foo"));
        assert!(anchored("^foo$", Dialect::VictoriaMetrics).is_match("foo"));
        assert!(anchored(r"foo\$$", Dialect::VictoriaMetrics).is_match("foo$"));
        assert!(anchored(r"foo\$", Dialect::VictoriaMetrics).is_match("foo$"));
        let bad = AnchoredRegex::new("a(", Dialect::Prometheus).unwrap_err();
        assert!(bad.starts_with("invalid regex \"a(\": "), "{bad}");
    }

    #[test]
    fn fast_paths_agree_with_the_engine() {
        for re in ["foo", "foo|bar", "", "a|", "(.*)"] {
            for d in [Dialect::Prometheus, Dialect::VictoriaMetrics] {
                let fast = anchored(re, d);
                let slow = Regex::new(&format!("^(?s:{re})$")).unwrap();
                for s in ["", "foo", "bar", "a", "foobar", "x\ny"] {
                    assert_eq!(fast.is_match(s), slow.is_match(s), "{re:?} on {s:?}");
                }
            }
        }
    }

    #[test]
    fn vm_default_regex_forms_capture_the_whole_value() {
        let re = anchored(".*", Dialect::VictoriaMetrics);
        let t = re.template("<$1>");
        let g = re.groups("a\nb", true).unwrap();
        assert_eq!(t.expand(&g), "<a\nb>");
        let re = anchored(".*", Dialect::Prometheus);
        let t = re.template("<$1>");
        assert_eq!(t.expand(&re.groups("ab", true).unwrap()), "<>");
    }

    #[test]
    fn expand_follows_go() {
        let re = Regex::new("^(?s:(?<first>a+)(b)?)$").unwrap();
        let caps = re.captures("aa").unwrap();
        let g = Groups::Caps(caps);
        let cases = [
            ("$1", "aa"),
            ("${1}x", "aax"),
            ("$1x", ""), // `1x` is a name, and no group has it
            ("$first-$2-", "aa--"),
            ("${first}", "aa"),
            ("$$1", "$1"),
            ("$", "$"),
            ("${1", "${1"),
            ("$-", "$-"),
            ("$01", ""),
            ("$9", ""),
            ("a${0}b", "aaab"),
            ("a$0b", "a"), // `0b` is a name too
        ];
        for (t, want) in cases {
            assert_eq!(Template::parse(t, &re).expand(&g), want, "template {t:?}");
        }
    }

    #[test]
    fn replace_all_like_go() {
        let re = UnanchoredRegex::new("a*", Dialect::VictoriaMetrics).unwrap();
        assert_eq!(re.replace_all("baaac", &re.template("-")), "-b-c-");
        let re = UnanchoredRegex::new("(;)", Dialect::VictoriaMetrics).unwrap();
        assert_eq!(re.replace_all("y;y;", &re.template("-$1-")), "y-;-y-;-");
        let re = UnanchoredRegex::new("-", Dialect::VictoriaMetrics).unwrap();
        assert!(matches!(
            re.replace_all("abc", &re.template(".")),
            Cow::Borrowed("abc")
        ));
    }
}
