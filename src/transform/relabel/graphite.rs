//! vmagent's `action: graphite`: match a dotted metric name against a
//! template such as `foo.*.bar`, where each `*` takes part of one segment
//! (never a dot), then build labels from `$N` / `${N}` references to the
//! captures (`$0` is the whole name).

/// A parsed `match:` template: literal pieces and `*` holes (stored as `"*"`,
/// which no literal piece can be).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphiteMatch {
    parts: Vec<String>,
}

impl GraphiteMatch {
    pub fn new(template: &str) -> Self {
        let mut parts = Vec::new();
        for (i, piece) in template.split('*').enumerate() {
            if i > 0 {
                parts.push("*".to_string());
            }
            if !piece.is_empty() {
                parts.push(piece.to_string());
            }
        }
        GraphiteMatch { parts }
    }

    /// The captures (`[0]` is `name`), or `None` when `name` does not fit.
    /// A `*` ends at the first occurrence of the piece after it, as in vmagent.
    pub fn captures<'a>(&self, name: &'a str) -> Option<Vec<&'a str>> {
        if let Some(last) = self.parts.last() {
            if last != "*" && !name.ends_with(last.as_str()) {
                return None;
            }
        }
        let mut caps = vec![name];
        let mut s = name;
        let mut i = 0;
        while i < self.parts.len() {
            let p = &self.parts[i];
            if p != "*" {
                s = s.strip_prefix(p.as_str())?;
                i += 1;
                continue;
            }
            let Some(next) = self.parts.get(i + 1) else {
                if s.contains('.') {
                    return None;
                }
                caps.push(s);
                return Some(caps);
            };
            i += 2;
            let n = s.find(next.as_str())?;
            if s[..n].contains('.') {
                return None;
            }
            caps.push(&s[..n]);
            s = &s[n + next.len()..];
        }
        s.is_empty().then_some(caps)
    }
}

/// A `labels:` value of a graphite rule, e.g. `${1}-job`.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphiteTemplate {
    parts: Vec<(String, Option<usize>)>,
}

impl GraphiteTemplate {
    pub fn new(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut s = template;
        while let Some(n) = s.find('$') {
            if n > 0 {
                parts.push((s[..n].to_string(), None));
            }
            s = &s[n + 1..];
            if let Some(braced) = s.strip_prefix('{') {
                let Some(end) = braced.find('}') else {
                    parts.push((format!("${s}"), None));
                    s = "";
                    break;
                };
                let idx = &braced[..end];
                parts.push((format!("${{{idx}}}"), parse_index(idx)));
                s = &braced[end + 1..];
            } else {
                let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
                parts.push((format!("${}", &s[..end]), parse_index(&s[..end])));
                s = &s[end..];
            }
        }
        if !s.is_empty() {
            parts.push((s.to_string(), None));
        }
        GraphiteTemplate { parts }
    }

    pub fn expand(&self, caps: &[&str]) -> String {
        let mut out = String::new();
        for (text, index) in &self.parts {
            match index.and_then(|i| caps.get(i)) {
                Some(c) => out.push_str(c),
                None => out.push_str(text),
            }
        }
        out
    }
}

/// A reference number as Go's `strconv.Atoi` reads it; negative ones stay text.
fn parse_index(s: &str) -> Option<usize> {
    s.parse::<i64>().ok().and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_take_one_segment_each() {
        let m = GraphiteMatch::new("foo.*.baz");
        assert_eq!(m.captures("foo.bar.baz"), Some(vec!["foo.bar.baz", "bar"]));
        assert_eq!(m.captures("foo.bar.bazz"), None);
        assert_eq!(m.captures("foo.b.r.baz"), None);
        let m = GraphiteMatch::new("*.x*");
        assert_eq!(m.captures("a.xyz"), Some(vec!["a.xyz", "a", "yz"]));
        assert_eq!(m.captures("a.xy.z"), None);
    }

    #[test]
    fn templates_reference_captures() {
        let t = GraphiteTemplate::new("${1}-$2:$0/$x${-1}${");
        assert_eq!(t.expand(&["n", "a", "b"]), "a-b:n/$x${-1}${");
        assert_eq!(t.expand(&["n"]), "${1}-$2:n/$x${-1}${");
    }
}
