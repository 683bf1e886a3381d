//! Go templates over one event: `body_template` of webhooks and the
//! `index`/`sourcetype`/`source`/`host` of Splunk HEC. A template sees the
//! event in its documented shape whatever `fields:` renames: `.time`,
//! `.metric`, `.value`, `.labels.<name>`, `.group`, `.rule`, `.type`,
//! `.annotations.<name>`, `.resolved` (and `$labels` / `$value` as in
//! vmalert). The function table is vmalert's; `run` hands it in as
//! [`Funcs`] because it lives above this layer.
//!
//! Most of these templates are a literal or one label (`{{ .labels.host }}`);
//! those never run the template engine. Renders are bounded by gtmpl-ng's
//! default [`gtmpl_ng::Limits`] (loops, output size, nesting), so a template
//! from a config cannot exhaust memory or stack.

use super::shape::{write_rfc3339_ms, EventRef};
use crate::model::value::value_text;
use gtmpl_ng::{Context, Func, Template, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The template functions to register (vmalert's, from `run`).
pub type Funcs = fn() -> Vec<(&'static str, Func)>;

/// What the template sees as variables, as vmalert's annotation templates do.
const HEADER: &str = "{{ $labels := .labels }}{{ $value := .value }}";

/// A parsed template.
#[derive(Clone)]
pub struct EventTemplate {
    source: String,
    how: How,
}

#[derive(Clone)]
enum How {
    Literal,
    Label(String),
    Go(Arc<Template>),
}

impl std::fmt::Debug for EventTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventTemplate({:?})", self.source)
    }
}

impl PartialEq for EventTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl EventTemplate {
    /// Parses `source`; the error gives the position in it.
    pub fn parse(source: &str, funcs: Funcs) -> Result<EventTemplate, String> {
        let how = if !source.contains("{{") {
            How::Literal
        } else if let Some(name) = single_label(source) {
            How::Label(name)
        } else {
            let mut t = Template::default();
            t.add_funcs(&funcs());
            t.parse(format!("{HEADER}{source}"))
                .map_err(|e| describe(&e))?;
            How::Go(Arc::new(t))
        };
        Ok(EventTemplate {
            source: source.to_string(),
            how,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text for one event.
    pub fn render(&self, ev: &EventRef<'_>) -> Result<String, String> {
        match &self.how {
            How::Literal => Ok(self.source.clone()),
            How::Label(name) => Ok(ev.labels.get(name).unwrap_or("").to_string()),
            How::Go(t) => {
                let out = t
                    .render(&Context::from(event_value(ev)))
                    .map_err(|e| format!("template {:?}: {e}", self.source))?;
                // vmalert renders with missingkey=zero.
                Ok(if self.source.contains("<no value>") {
                    out
                } else {
                    out.replace("<no value>", "")
                })
            }
        }
    }
}

fn describe(e: &gtmpl_ng::ParseError) -> String {
    match e {
        gtmpl_ng::ParseError::WithContext(ctx, msg) => {
            let col = if ctx.line == 1 {
                ctx.col.saturating_sub(HEADER.chars().count())
            } else {
                ctx.col
            };
            format!("line {}, column {}: {}", ctx.line, col, msg)
        }
        other => other.to_string(),
    }
}

/// `{{ .labels.x }}` or `{{ $labels.x }}` alone.
fn single_label(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner
        .strip_prefix(".labels.")
        .or_else(|| inner.strip_prefix("$labels."))?;
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then(|| name.to_string())
}

/// The event as template data.
pub fn event_value(ev: &EventRef<'_>) -> Value {
    let labels: HashMap<String, Value> = ev
        .labels
        .without_name()
        .map(|l| (l.name.clone(), Value::from(l.value.as_str())))
        .collect();
    let annotations: HashMap<String, Value> = ev
        .annotations
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect()
        })
        .unwrap_or_default();
    let mut time = Vec::new();
    write_rfc3339_ms(&mut time, ev.sample.timestamp_ms);
    let value = if ev.resolved() {
        Value::Nil
    } else if ev.sample.value.is_finite() {
        Value::from(ev.sample.value)
    } else {
        Value::from(value_text(ev.sample.value))
    };
    let mut m = HashMap::new();
    m.insert(
        "time".into(),
        Value::from(String::from_utf8_lossy(&time).into_owned()),
    );
    m.insert("metric".into(), Value::from(ev.metric()));
    m.insert("value".into(), value);
    m.insert("labels".into(), Value::Map(labels));
    m.insert("group".into(), Value::from(&*ev.origin.group));
    m.insert("rule".into(), Value::from(&*ev.origin.rule));
    m.insert("type".into(), Value::from(ev.origin.kind.as_str()));
    m.insert("annotations".into(), Value::Map(annotations));
    m.insert("resolved".into(), Value::from(ev.resolved()));
    Value::Map(m)
}

/// Go's builtins only, for tests and tools that have no vmalert table.
pub fn no_funcs() -> Vec<(&'static str, Func)> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExportKind, Labels, Origin, Sample};

    #[test]
    fn literal_label_and_go_templates() {
        let l = Labels::from_pairs([("__name__", "m"), ("host", "db1")]);
        let origin = Origin::rule(ExportKind::Alert, "g", "HighLoad");
        let ev = EventRef {
            sample: Sample::new(0, 12.5),
            labels: &l,
            origin: &origin,
            annotations: None,
        };
        let r = |s: &str| {
            EventTemplate::parse(s, no_funcs)
                .unwrap()
                .render(&ev)
                .unwrap()
        };
        assert_eq!(r("main"), "main");
        assert_eq!(r("{{ .labels.host }}"), "db1");
        assert_eq!(r("{{ $labels.missing }}"), "");
        assert_eq!(
            r("{{ .rule }} on {{ $labels.host }}: {{ $value }} {{ .labels.nope }}"),
            "HighLoad on db1: 12.5 "
        );
        let e = EventTemplate::parse("{{ .x", no_funcs).unwrap_err();
        assert!(e.starts_with("line 1, column"), "{e}");
        assert!(EventTemplate::parse("{{ nofunc 1 }}", no_funcs).is_err());
    }
}
