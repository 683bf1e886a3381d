//! A series' identity: label pairs kept sorted by name, `__name__` included.
//!
//! Sorted order makes equality, hashing and printing canonical, so two label
//! sets built in different orders compare equal and print identically.

use std::fmt;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// Sorted, de-duplicated label pairs. Empty values are never stored: as in
/// Prometheus, a label set to `""` is the same as an absent label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Vec<Label>);

impl Labels {
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Builds from pairs in any order; a later duplicate name wins, empty values are dropped.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        // One sort (or just a check, for input that is already sorted, as
        // maps and wire formats give it) instead of an insert per pair.
        Labels::from_vec(
            pairs
                .into_iter()
                .map(|(k, v)| Label {
                    name: k.into(),
                    value: v.into(),
                })
                .collect(),
        )
    }

    /// Builds from a vector in any order with the same rules as
    /// [`Labels::from_pairs`] (a later duplicate wins, empty values are
    /// dropped), reusing the vector: already sorted input, the usual case
    /// from a wire format, is only checked.
    pub fn from_vec(mut v: Vec<Label>) -> Self {
        if is_clean(&v) {
            return Labels(v);
        }
        // Stable, so among equal names the last one stays last.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(prev) if prev.name == l.name => *prev = l,
                _ => out.push(l),
            }
        }
        out.retain(|l| !l.value.is_empty());
        Labels(out)
    }

    /// [`Labels::from_vec`] for a vector its maker already checked: names
    /// strictly ascending, no empty value (a decoder that compared each
    /// name with the previous one as it read them).
    pub fn from_clean_vec(v: Vec<Label>) -> Self {
        debug_assert!(is_clean(&v));
        Labels(v)
    }

    /// The label vector, for reuse of its strings (see [`Labels::from_vec`]).
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    #[inline]
    pub fn get(&self, name: &str) -> Option<&str> {
        // Series rarely have many labels: a scan that compares lengths
        // (stored inline) before bytes (behind a pointer) touches less
        // memory than a binary search, which is what lookups cost here.
        if self.0.len() <= 16 {
            return self
                .0
                .iter()
                .find(|l| l.name.len() == name.len() && l.name == name)
                .map(|l| l.value.as_str());
        }
        self.position(name).ok().map(|i| self.0[i].value.as_str())
    }

    /// Value or `""` when absent, the way relabeling and selectors read labels.
    #[inline]
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    pub fn metric_name(&self) -> &str {
        self.value(METRIC_NAME)
    }

    /// Sets a label; an empty value removes it. Names and values are only
    /// copied when stored: replacing a value reuses the old one's buffer.
    pub fn set(
        &mut self,
        name: impl AsRef<str> + Into<String>,
        value: impl AsRef<str> + Into<String>,
    ) {
        let new = value.as_ref();
        match self.position(name.as_ref()) {
            Ok(i) if new.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => {
                let old = &mut self.0[i].value;
                if old != new {
                    old.clear();
                    old.push_str(new);
                }
            }
            Err(_) if new.is_empty() => {}
            Err(i) => self.0.insert(
                i,
                Label {
                    name: name.into(),
                    value: value.into(),
                },
            ),
        }
    }

    /// Sets a label like [`Labels::set`] and hands back the value it
    /// replaced or removed, so a caller can undo the change.
    pub fn replace(&mut self, name: &str, value: String) -> Option<String> {
        match self.position(name) {
            Ok(i) if value.is_empty() => Some(self.0.remove(i).value),
            Ok(i) => Some(std::mem::replace(&mut self.0[i].value, value)),
            Err(_) if value.is_empty() => None,
            Err(i) => {
                self.0.insert(
                    i,
                    Label {
                        name: name.to_string(),
                        value,
                    },
                );
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.position(name).ok().map(|i| self.0.remove(i).value)
    }

    pub fn retain(&mut self, keep: impl FnMut(&Label) -> bool) {
        self.0.retain(keep)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// Labels other than `__name__`, in order.
    pub fn without_name(&self) -> impl Iterator<Item = &Label> {
        self.0.iter().filter(|l| l.name != METRIC_NAME)
    }

    /// `{a="b", c="d"}` without the metric name, values escaped as PromQL strings.
    pub fn format_without_name(&self) -> String {
        let mut out = String::from("{");
        for (i, l) in self.without_name().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_name(&mut out, &l.name);
            out.push('=');
            push_quoted(&mut out, &l.value);
        }
        out.push('}');
        out
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name))
    }
}

/// Whether `name` reads back unquoted in a selector (letters, digits, `_`,
/// `:` and `.`, not starting with a digit).
fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '_' | ':' | '.'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.'))
}

/// Appends a label name, quoted (as in Prometheus 3's text format,
/// `{"dropme-please"="x"}`) when it is not plain.
fn push_name(out: &mut String, name: &str) {
    if is_plain_name(name) {
        out.push_str(name);
    } else {
        push_quoted(out, name);
    }
}

/// Appends `value` as a double-quoted string with Go/PromQL escapes.
pub fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Prints as `name{a="b"}`, the notation of PromQL and vmagent's debug pages.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if !name.is_empty() && !is_plain_name(name) {
            // `__name__` stays inside the braces, where it can be quoted.
            let mut out = String::from("{");
            for (i, l) in self.0.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_name(&mut out, &l.name);
                out.push('=');
                push_quoted(&mut out, &l.value);
            }
            out.push('}');
            return f.write_str(&out);
        }
        let rest = self.format_without_name();
        if name.is_empty() {
            f.write_str(&rest)
        } else if rest == "{}" {
            f.write_str(name)
        } else {
            write!(f, "{name}{rest}")
        }
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Labels::from_pairs(iter)
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for l in &self.0 {
            map.serialize_entry(&l.name, &l.value)?;
        }
        map.end()
    }
}

/// A map of names to string values, read straight into label pairs:
/// [`Labels::from_vec`] then sorts (wire formats send them sorted, so it
/// only checks) and lets a later duplicate win, as a map would. A map in
/// between cost a node allocation and a tree walk per series of every
/// query answer.
impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> serde::de::Visitor<'de> for PairsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of label names to string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Labels, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    pairs.push(Label { name, value });
                }
                Ok(Labels::from_vec(pairs))
            }
        }
        d.deserialize_map(PairsVisitor)
    }
}

/// Names strictly ascending, no value empty: what a [`Labels`] holds.
fn is_clean(v: &[Label]) -> bool {
    v.windows(2).all(|w| name_before(&w[0].name, &w[1].name))
        && v.iter().all(|l| !l.value.is_empty())
}

/// `a < b` for label names, byte by byte in line: names are short and
/// nearly always differ in their first bytes, and `str`'s `<` calls libc's
/// `memcmp` for every pair. Checking the order of decoded remote-write
/// labels that way was a tenth of the router's CPU in
/// `scripts/bench-router.sh` (perf, six labels a series).
#[inline]
pub fn name_before(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => x < y,
        None => a.len() < b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_before_orders_as_str_does() {
        let names = [
            "",
            "a",
            "b",
            "ab",
            "abc",
            "abd",
            "__name__",
            "_",
            "job",
            "jobs",
            "instance",
            "region",
            "route",
            "kubernetes_pod_name",
            "kubernetes_pod_namespace",
            "é",
            "e\u{7f}",
        ];
        for a in names {
            for b in names {
                assert_eq!(name_before(a, b), a < b, "{a:?} < {b:?}");
            }
        }
    }

    #[test]
    fn sorted_and_unique_whatever_the_input_order() {
        let a = Labels::from_pairs([("b", "2"), ("__name__", "m"), ("a", "1"), ("b", "3")]);
        let names: Vec<_> = a.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "b"]);
        assert_eq!(a.get("b"), Some("3"));
        assert_eq!(a.to_string(), r#"m{a="1", b="3"}"#);
    }

    #[test]
    fn from_vec_matches_from_pairs() {
        let pairs = [
            ("b", "2"),
            ("__name__", "m"),
            ("a", ""),
            ("b", "3"),
            ("c", "1"),
        ];
        let v: Vec<Label> = pairs
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect();
        assert_eq!(Labels::from_vec(v), Labels::from_pairs(pairs));
        let sorted = Labels::from_pairs([("a", "1"), ("b", "2")]);
        assert_eq!(Labels::from_vec(sorted.as_slice().to_vec()), sorted);
    }

    #[test]
    fn empty_value_removes() {
        let mut a = Labels::from_pairs([("a", "1"), ("z", "")]);
        assert_eq!(a.len(), 1);
        a.set("a", "");
        assert!(a.is_empty());
    }

    #[test]
    fn quoting_escapes() {
        let a = Labels::from_pairs([("a", "x\"y\\z\n")]);
        assert_eq!(a.to_string(), r#"{a="x\"y\\z\n"}"#);
    }
}
