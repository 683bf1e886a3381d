//! Writes the event of one sample (see the module docs of
//! [`crate::sink::event`]) as JSON, CSV or CEF, straight into a byte buffer:
//! no intermediate map, since every exported sample passes through here.

use crate::model::labels::METRIC_NAME;
use crate::model::value::{push_json_value, push_value};
use crate::model::{Annotations, Labels, Origin, Sample};
use std::collections::BTreeMap;

/// The fields of an event, in the order they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Time,
    Metric,
    Value,
    Labels,
    Group,
    Rule,
    Type,
    Annotations,
    Resolved,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::Time,
        Field::Metric,
        Field::Value,
        Field::Labels,
        Field::Group,
        Field::Rule,
        Field::Type,
        Field::Annotations,
        Field::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::Metric => "metric",
            Field::Value => "value",
            Field::Labels => "labels",
            Field::Group => "group",
            Field::Rule => "rule",
            Field::Type => "type",
            Field::Annotations => "annotations",
            Field::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// One sample with everything its event shows.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    pub sample: Sample,
    /// With `__name__`.
    pub labels: &'a Labels,
    pub origin: &'a Origin,
    pub annotations: Option<&'a Annotations>,
}

impl EventRef<'_> {
    pub fn metric(&self) -> &str {
        self.labels.metric_name()
    }

    pub fn resolved(&self) -> bool {
        self.sample.is_stale()
    }
}

/// How a destination's events look: field names (or dropped) and where
/// labels go.
#[derive(Clone, Debug, PartialEq)]
pub struct EventShape {
    /// Per [`Field`], in `Field::ALL` order: the name written, `None` = dropped.
    names: Vec<Option<String>>,
    pub labels_as_fields: bool,
}

impl Default for EventShape {
    fn default() -> Self {
        EventShape {
            names: Field::ALL
                .iter()
                .map(|f| Some(f.as_str().to_string()))
                .collect(),
            labels_as_fields: false,
        }
    }
}

impl EventShape {
    /// From `fields:` (field → new name; `""` or null drops it). Errors
    /// name the unknown field or the clash.
    pub fn new(
        fields: &BTreeMap<String, Option<String>>,
        labels_as_fields: bool,
    ) -> Result<EventShape, String> {
        let mut shape = EventShape {
            labels_as_fields,
            ..EventShape::default()
        };
        for (k, v) in fields {
            let Some(f) = Field::parse(k) else {
                let known: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
                return Err(format!(
                    "unknown event field {k:?}; the fields are {}",
                    known.join(", ")
                ));
            };
            shape.names[f as usize] = v.clone().filter(|n| !n.is_empty());
        }
        let mut seen = std::collections::HashSet::new();
        for n in shape.names.iter().flatten() {
            if !seen.insert(n.as_str()) {
                return Err(format!("two event fields would both be named {n:?}"));
            }
        }
        Ok(shape)
    }

    /// The name `field` is written under, `None` when dropped.
    pub fn name(&self, field: Field) -> Option<&str> {
        self.names[field as usize].as_deref()
    }

    /// Writes the event as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>, ev: &EventRef<'_>) {
        out.push(b'{');
        let mut first = true;
        for f in Field::ALL {
            if f == Field::Labels && self.labels_as_fields {
                continue;
            }
            let Some(name) = self.name(f) else { continue };
            key(out, &mut first, name);
            self.write_value(out, f, ev);
        }
        if self.labels_as_fields {
            for l in ev.labels.without_name() {
                let taken = self.names.iter().flatten().any(|n| *n == l.name);
                if taken {
                    key(out, &mut first, &format!("label_{}", l.name));
                } else {
                    key(out, &mut first, &l.name);
                }
                json_str(out, &l.value);
            }
        }
        out.push(b'}');
    }

    fn write_value(&self, out: &mut Vec<u8>, f: Field, ev: &EventRef<'_>) {
        match f {
            Field::Time => {
                out.push(b'"');
                write_rfc3339_ms(out, ev.sample.timestamp_ms);
                out.push(b'"');
            }
            Field::Metric => json_str(out, ev.metric()),
            Field::Value => json_value(out, ev.sample),
            Field::Labels => {
                out.push(b'{');
                let mut first = true;
                for l in ev.labels.without_name() {
                    key(out, &mut first, &l.name);
                    json_str(out, &l.value);
                }
                out.push(b'}');
            }
            Field::Group => json_str(out, &ev.origin.group),
            Field::Rule => json_str(out, &ev.origin.rule),
            Field::Type => json_str(out, ev.origin.kind.as_str()),
            Field::Annotations => {
                out.push(b'{');
                let mut first = true;
                for (k, v) in ev.annotations.map(|a| a.iter()).into_iter().flatten() {
                    key(out, &mut first, k);
                    json_str(out, v);
                }
                out.push(b'}');
            }
            Field::Resolved => {
                out.extend_from_slice(if ev.resolved() { b"true" } else { b"false" })
            }
        }
    }

    /// The CSV header: the kept fields in order (labels and annotations are
    /// one JSON column each; CSV columns cannot follow a label set).
    pub fn csv_header(&self) -> Vec<u8> {
        let names: Vec<&str> = Field::ALL.iter().filter_map(|f| self.name(*f)).collect();
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(&names);
        w.into_inner().unwrap_or_default()
    }

    /// One CSV record (with its line end), fields as in [`Self::csv_header`].
    pub fn write_csv(&self, out: &mut Vec<u8>, ev: &EventRef<'_>) {
        let mut cells: Vec<Vec<u8>> = Vec::with_capacity(Field::ALL.len());
        for f in Field::ALL {
            if self.name(f).is_none() {
                continue;
            }
            let mut cell = Vec::new();
            match f {
                Field::Time => write_rfc3339_ms(&mut cell, ev.sample.timestamp_ms),
                Field::Metric => cell.extend_from_slice(ev.metric().as_bytes()),
                Field::Group => cell.extend_from_slice(ev.origin.group.as_bytes()),
                Field::Rule => cell.extend_from_slice(ev.origin.rule.as_bytes()),
                Field::Type => cell.extend_from_slice(ev.origin.kind.as_str().as_bytes()),
                Field::Value if ev.resolved() => {}
                Field::Value => push_value(&mut cell, ev.sample.value),
                other => self.write_value(&mut cell, other, ev),
            }
            cells.push(cell);
        }
        let mut w = csv::Writer::from_writer(std::mem::take(out));
        let _ = w.write_record(&cells);
        *out = w.into_inner().unwrap_or_default();
    }
}

fn key(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    json_str(out, name);
    out.push(b':');
}

/// A JSON string literal.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    // Label names and values rarely need escaping: copy those whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json escapes exactly what JSON requires; it cannot fail on a Vec.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_value(out: &mut Vec<u8>, s: Sample) {
    let v = s.value;
    if s.is_stale() {
        out.extend_from_slice(b"null");
    } else {
        push_json_value(out, v);
    }
}

/// `2024-05-01T12:00:00.000Z`: always milliseconds, always UTC.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ts_ms: i64) {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        let _ = std::io::Write::write_fmt(
            out,
            format_args!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
                sod / 3600,
                sod / 60 % 60,
                sod % 60
            ),
        );
        return;
    }
    // Every event writes one: digits by hand, no formatting machinery.
    let two = |n: i64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
    out.extend_from_slice(&two(y / 100));
    out.extend_from_slice(&two(y % 100));
    out.push(b'-');
    out.extend_from_slice(&two(i64::from(m)));
    out.push(b'-');
    out.extend_from_slice(&two(i64::from(d)));
    out.push(b'T');
    out.extend_from_slice(&two(sod / 3600));
    out.push(b':');
    out.extend_from_slice(&two(sod / 60 % 60));
    out.push(b':');
    out.extend_from_slice(&two(sod % 60));
    out.push(b'.');
    out.push(b'0' + (ms / 100) as u8);
    out.extend_from_slice(&two(ms % 100));
    out.push(b'Z');
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The label as written in CEF and syslog: `__name__` is the metric.
pub fn is_metric_name(name: &str) -> bool {
    name == METRIC_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_str_writes_what_serde_json_writes() {
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "line\nbreak",
            "\u{1}\u{1f}",
            "\u{7f}",
            "grüße ✓",
            "tab\t",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
    use crate::model::ExportKind;
    use std::sync::Arc;

    fn labels() -> Labels {
        Labels::from_pairs([("__name__", "up"), ("job", "a\"b"), ("value", "x")])
    }

    fn render(shape: &EventShape, sample: Sample) -> serde_json::Value {
        let origin = Origin::rule(ExportKind::Alert, "g", "r");
        let ann: Annotations = Arc::new(BTreeMap::from([("summary".into(), "hi\nthere".into())]));
        let l = labels();
        let ev = EventRef {
            sample,
            labels: &l,
            origin: &origin,
            annotations: Some(&ann),
        };
        let mut out = Vec::new();
        shape.write_json(&mut out, &ev);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn the_documented_shape() {
        let v = render(&EventShape::default(), Sample::new(1_714_564_800_123, 2.5));
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2024-05-01T12:00:00.123Z", "metric": "up", "value": 2.5,
                "labels": {"job": "a\"b", "value": "x"}, "group": "g", "rule": "r",
                "type": "alert", "annotations": {"summary": "hi\nthere"}, "resolved": false
            })
        );
        let stale = render(&EventShape::default(), Sample::stale(0));
        assert_eq!(stale["value"], serde_json::Value::Null);
        assert_eq!(stale["resolved"], true);
        assert_eq!(stale["time"], "1970-01-01T00:00:00.000Z");
        let inf = render(&EventShape::default(), Sample::new(0, f64::INFINITY));
        assert_eq!(inf["value"], "+Inf");
    }

    #[test]
    fn fields_rename_drop_and_flatten() {
        let fields = BTreeMap::from([
            ("time".to_string(), Some("@timestamp".to_string())),
            ("group".to_string(), None),
            ("rule".to_string(), Some(String::new())),
        ]);
        let shape = EventShape::new(&fields, true).unwrap();
        let v = render(&shape, Sample::new(-1, 1.0));
        assert_eq!(v["@timestamp"], "1969-12-31T23:59:59.999Z");
        assert!(v.get("group").is_none() && v.get("rule").is_none());
        assert!(v.get("labels").is_none());
        assert_eq!(v["job"], "a\"b");
        // A label named like a field keeps its value apart.
        assert_eq!(v["value"], 1);
        assert_eq!(v["label_value"], "x");
        let e = EventShape::new(&BTreeMap::from([("tim".into(), None)]), false).unwrap_err();
        assert!(e.contains("unknown event field \"tim\""), "{e}");
        let clash = BTreeMap::from([("group".to_string(), Some("rule".to_string()))]);
        assert!(EventShape::new(&clash, false).is_err());
    }

    #[test]
    fn csv_columns_follow_the_shape() {
        let shape = EventShape::default();
        assert_eq!(
            String::from_utf8(shape.csv_header()).unwrap(),
            "time,metric,value,labels,group,rule,type,annotations,resolved\n"
        );
        let origin = Origin::received();
        let l = labels();
        let mut out = Vec::new();
        shape.write_csv(
            &mut out,
            &EventRef {
                sample: Sample::new(0, 3.0),
                labels: &l,
                origin: &origin,
                annotations: None,
            },
        );
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000Z,up,3,\"{\"\"job\"\":\"\"a\\\"\"b\"\",\"\"value\"\":\"\"x\"\"}\",,,received,{},false\n"
        );
    }

    #[test]
    fn dates_agree_with_chrono() {
        for ts in [
            0i64,
            951_782_400_000,
            4_102_444_799_999,
            -86_400_001,
            1_709_164_800_000,
        ] {
            let mut out = Vec::new();
            write_rfc3339_ms(&mut out, ts);
            let ours = String::from_utf8(out).unwrap();
            let theirs = chrono::DateTime::from_timestamp_millis(ts)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(ours, theirs);
        }
    }
}
