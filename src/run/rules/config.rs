//! The raw view of a vmalert rule file, exactly as YAML spells it.
//!
//! Nothing here is checked beyond the YAML shape: every scalar is kept as the
//! text the user wrote ([`Text`]), so `validate.rs` can parse durations and
//! integers itself and name the field in its message. Each mapping remembers
//! the line of every key and every key it did not know, instead of failing on
//! the first one the way `#[serde(deny_unknown_fields)]` would: vmalert lists
//! all unknown keys of a mapping in one error ("unknown fields in rule: type"),
//! and the group and rule names are only known once the whole mapping is read.
//! That is why the `Deserialize` impls are written by the `yaml_mapping!`
//! macro below rather than derived.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// A YAML scalar as written. vmalert decodes with yaml.v2, which stores any
/// scalar into a Go string as its source text (`expr: 0.95`, `recording: true`)
/// and leaves it empty for null; serde-saphyr hands a plain scalar to
/// `deserialize_string` verbatim, so reading `Option<String>` gives the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<String>::deserialize(d).map(|s| Text(s.unwrap_or_default()))
    }
}

/// `labels:` / `annotations:`: string to string, in key order. A null value
/// is an empty string, as in Go.
pub(crate) type TextMap = BTreeMap<String, Text>;

/// A value together with the line of the key that introduced it.
#[derive(Clone, Debug)]
pub(crate) struct Field<T> {
    pub value: T,
    pub line: u64,
}

/// A key the mapping does not define, with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    pub name: String,
    pub line: u64,
}

/// Generates a struct whose fields are all optional [`Field`]s, plus a
/// `Deserialize` impl that records the mapping's first line and its unknown
/// keys. A key given as YAML null counts as absent, as yaml.v2 leaves the Go
/// field at its zero value.
/// Groups and rules in one file. vmalert sets no limit, but each raw
/// mapping costs some 500 bytes before it is checked, so a file of
/// `- {name: x}` repeated within the YAML node budget would take half a
/// gigabyte; a real 50,000-rule file has 500 groups.
pub(crate) const MAX_GROUPS_PER_FILE: usize = 10_000;
pub(crate) const MAX_RULES_PER_FILE: usize = 100_000;

thread_local! {
    /// Groups and rules read so far from the file being parsed on this thread.
    static READ: std::cell::Cell<[usize; 2]> = const { std::cell::Cell::new([0, 0]) };
}

/// Counts one more group (`kind` 0) or rule (1); an error past the limit.
fn count_item(kind: Option<usize>) -> Result<(), String> {
    let Some(kind) = kind else { return Ok(()) };
    let mut read = READ.get();
    read[kind] += 1;
    READ.set(read);
    let (limit, what) = [
        (MAX_GROUPS_PER_FILE, "groups"),
        (MAX_RULES_PER_FILE, "rules"),
    ][kind];
    if read[kind] > limit {
        return Err(format!(
            "more than {limit} {what} in one file, the most spillway reads from one rule file; split it into several files"
        ));
    }
    Ok(())
}

macro_rules! yaml_mapping {
    (
        $(#[$meta:meta])*
        $name:ident, $counted:expr, $expecting:literal {
            $( $field:ident : $ty:ty = $key:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default)]
        pub(crate) struct $name {
            $( pub $field: Option<Field<$ty>>, )*
            /// Line of the mapping's first key (0 when the mapping is empty).
            pub line: u64,
            pub unknown: Vec<UnknownKey>,
        }

        impl $name {
            /// The keys vmalert accepts here, for "allowed: ..." hints.
            pub const KEYS: &'static [&'static str] = &[$($key),*];
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        count_item($counted).map_err(de::Error::custom)?;
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<Spanned<String>>()? {
                            let line = key.referenced.line();
                            if out.line == 0 {
                                out.line = line;
                            }
                            match key.value.as_str() {
                                $(
                                    $key => {
                                        if out.$field.is_some() {
                                            return Err(de::Error::custom(format_args!(
                                                "mapping key {:?} already defined", $key
                                            )));
                                        }
                                        let value: Option<$ty> = map.next_value()?;
                                        out.$field = value.map(|value| Field { value, line });
                                    }
                                )*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                    out.unknown.push(UnknownKey { name: key.value, line });
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                // `deserialize_any` so that a scalar or a list where a mapping
                // belongs reports "invalid type: ..., expected <expecting>".
                d.deserialize_any(V)
            }
        }
    };
}

yaml_mapping! {
    /// One YAML document of a rule file.
    RawFile, None, "a mapping with a `groups:` list" {
        groups: Vec<RawGroup> = "groups",
    }
}

yaml_mapping! {
    /// One entry of `groups:`. Keys as in vmalert's `config.Group`.
    RawGroup, Some(0), "a group mapping (name, interval, rules, ...)" {
        name: Text = "name",
        interval: Text = "interval",
        eval_offset: Text = "eval_offset",
        eval_delay: Text = "eval_delay",
        eval_alignment: Text = "eval_alignment",
        limit: Text = "limit",
        rule_type: Text = "type",
        concurrency: Text = "concurrency",
        labels: TextMap = "labels",
        params: BTreeMap<String, Option<Vec<Text>>> = "params",
        headers: Vec<Text> = "headers",
        notifier_headers: Vec<Text> = "notifier_headers",
        debug: Text = "debug",
        rules: Vec<RawRule> = "rules",
    }
}

yaml_mapping! {
    /// One entry of `rules:`. Keys as in vmalert's `config.Rule`.
    RawRule, Some(1), "a rule mapping (record or alert, expr, labels, ...)" {
        record: Text = "record",
        alert: Text = "alert",
        expr: Text = "expr",
        for_: Text = "for",
        keep_firing_for: Text = "keep_firing_for",
        labels: TextMap = "labels",
        annotations: TextMap = "annotations",
        debug: Text = "debug",
        update_entries_limit: Text = "update_entries_limit",
    }
}

/// The documents of one file, in order. Empty documents (`---` alone, a
/// comment, or `groups:` with nothing) contribute nothing, as in vmalert.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<RawFile>, serde_saphyr::Error> {
    READ.set([0, 0]);
    crate::model::yaml::parse_multiple(text)
}
