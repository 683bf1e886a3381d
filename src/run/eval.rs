//! What one rule makes of one query result: the series to export, the
//! memory it keeps for the next evaluation, or the error that discards the
//! result. Pure functions, no I/O: the group runner (`group.rs`) queries,
//! calls [`evaluate`], hands the series to the sink, then keeps the memory.
//!
//! The semantics are vmalert's (`app/vmalert/rule/recording.go`,
//! `alerting.go`), checked against vmalert itself where its version allows
//! (see `tests/engine.rs`):
//!
//! * Recording rules: the result's `__name__` becomes `record`; each rule
//!   label (external < group < rule) is added; a result label of the same
//!   name and another value is kept as `exported_<name>`; an empty rule
//!   label removes the label; two result series that end with the same
//!   labels are an error ("result contains metrics with the same labelset
//!   ..."), as is a result longer than the group's `limit` (checked before
//!   any labelling). An error discards the whole result and leaves the
//!   memory as it was.
//! * Alerting rules keep alerts keyed by their labels: the result's labels
//!   without `__name__`, plus the rendered rule labels (`$labels`, `$value`,
//!   `$expr`; a clash keeps the original as `exported_<name>`), `alertname`
//!   and `alertgroup`. An alert is pending when it first appears, firing
//!   once it has been active for `for:`; a pending alert that disappears is
//!   dropped, a firing one keeps firing for `keep_firing_for` after its last
//!   appearance. Exported, as vmalert writes them through remote write, are
//!   `ALERTS{<labels>, alertstate="firing"} 1` and
//!   `ALERTS_FOR_STATE{<labels>} <activeAt, unix seconds>`, but for firing
//!   alerts only: spillway exports breaches, and a pending alert is not one
//!   yet. More than `limit` pending and firing alerts resets the rule's
//!   alerts and is an error.
//! * Stale markers: every series exported by the previous successful
//!   evaluation and absent now gets one sample with the Prometheus stale NaN
//!   at the current timestamp, so destinations see the breach end.

use crate::model::labels::METRIC_NAME;
use crate::model::{Annotations, ExportKind, Label, Labels, Origin, Sample, Series};
use crate::run::rules::{render_labels_with, RuleType, TemplateData};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

mod exported;
pub use exported::Exported;

/// Metric name of the series that says an alert fires.
pub const ALERTS_METRIC: &str = "ALERTS";
/// Metric name of the series holding when the alert became active.
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";

const DUPLICATE: &str =
    "result contains metrics with the same labelset after applying rule labels; \
see https://docs.victoriametrics.com/vmalert/#series-with-the-same-labelset";

/// One rule, as evaluation needs it.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub group: String,
    pub file: String,
    pub rule_type: RuleType,
    /// `record:` or `alert:` name.
    pub name: String,
    pub expr: String,
    /// External, group and rule labels merged (the rule's win). Literal for
    /// recording rules, templates for alerting rules.
    pub labels: BTreeMap<String, String>,
    /// The group's `limit`; 0 = none.
    pub limit: usize,
    /// `external_labels` of the run, for `$externalLabels` in templates.
    pub external_labels: BTreeMap<String, String>,
    pub alert: Option<AlertSpec>,
    /// An alerting rule's `annotations:` templates (empty otherwise); they
    /// go to event destinations only.
    pub annotations: BTreeMap<String, String>,
}

impl RuleSpec {
    /// What the rule's exports carry to event destinations and captures.
    pub fn origin(&self) -> Origin {
        let kind = if self.alert.is_some() {
            ExportKind::Alert
        } else {
            ExportKind::Recording
        };
        Origin::rule(kind, &self.group, &self.name)
    }
}

/// What only alerting rules have.
#[derive(Clone, Debug)]
pub struct AlertSpec {
    pub for_: Duration,
    pub keep_firing_for: Duration,
    /// Add `alertgroup="<group>"` (vmalert does unless `-disableAlertgroupLabel`).
    pub group_label: bool,
}

/// An alert of an alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub state: AlertState,
    /// Evaluation timestamp at which it appeared (ms).
    pub active_at_ms: i64,
    /// Timestamp at which it started firing (ms).
    pub fired_at_ms: Option<i64>,
    /// Set while a firing alert is kept by `keep_firing_for`.
    pub keep_firing_since_ms: Option<i64>,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// Separates names and values in a packed label set: UTF-8 text never
/// holds the byte 0xFF, so the packing cannot be ambiguous.
const PACK_SEPARATOR: u8 = 0xFF;

/// `labels` as `name 0xFF value 0xFF ...` into `buf` (cleared first).
pub fn pack(labels: &Labels, buf: &mut Vec<u8>) {
    buf.clear();
    for l in labels.iter() {
        buf.extend_from_slice(l.name.as_bytes());
        buf.push(PACK_SEPARATOR);
        buf.extend_from_slice(l.value.as_bytes());
        buf.push(PACK_SEPARATOR);
    }
}

/// The labels [`pack`] packed.
pub fn unpack(packed: &[u8]) -> Labels {
    let mut parts = packed
        .split(|b| *b == PACK_SEPARATOR)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut pairs = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        pairs.push(Label { name, value });
    }
    Labels::from_vec(pairs)
}

/// The hasher of the label-set maps kept between evaluations: foldhash
/// (SipHash was a tenth of `run`'s CPU), its seed still random per process.
pub type LabelHasher = foldhash::quality::RandomState;

/// What a rule remembers between evaluations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleMemory {
    /// Series exported by the last successful evaluation, for stale markers.
    pub exported: Exported,
    /// Pending and firing alerts (alerting rules only).
    pub alerts: HashMap<Labels, Alert>,
}

/// The result of one evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Series to export, sorted by labels; stale markers included.
    pub export: Vec<Series>,
    /// The memory after this evaluation; `None` keeps the previous one.
    pub memory: Option<RuleMemory>,
    /// Why the result was discarded.
    pub error: Option<String>,
}

impl Outcome {
    fn error(msg: String) -> Outcome {
        Outcome {
            error: Some(msg),
            ..Outcome::default()
        }
    }
}

/// Evaluates `spec` at `ts_ms` on `result` (one sample per series; the last
/// one counts if there are more), given what it remembers.
pub fn evaluate(spec: &RuleSpec, memory: &RuleMemory, ts_ms: i64, result: Vec<Series>) -> Outcome {
    match &spec.alert {
        None => evaluate_recording(spec, memory, ts_ms, result),
        Some(a) => evaluate_alerting(spec, a, memory, ts_ms, result),
    }
}

/// The labels vmalert gives a recording rule's result series.
pub fn recorded_labels(
    record: &str,
    rule_labels: &BTreeMap<String, String>,
    result: &Labels,
) -> Labels {
    let mut out = result.clone();
    record_in_place(record, rule_labels, &mut out, &mut Undo::new());
    out
}

/// What [`record_in_place`] replaced or removed, oldest first: a label's
/// name and its value before (`None`: it was absent).
type Undo<'a> = Vec<(Cow<'a, str>, Option<String>)>;

/// [`recorded_labels`] on the result's own labels: the evaluation owns
/// them, and copying every label of tens of thousands of results per round
/// was most of its allocations. `undo` (cleared first) gets what it takes
/// to give the original back for an error message ([`undo_record`]).
fn record_in_place<'a>(
    record: &str,
    rule_labels: &'a BTreeMap<String, String>,
    labels: &mut Labels,
    undo: &mut Undo<'a>,
) {
    undo.clear();
    let before = labels.replace(METRIC_NAME, record.to_string());
    undo.push((Cow::Borrowed(METRIC_NAME), before));
    for (k, v) in rule_labels {
        if v.is_empty() {
            if let Some(before) = labels.remove(k) {
                undo.push((Cow::Borrowed(k), Some(before)));
            }
            continue;
        }
        match labels.get(k) {
            Some(existing) if existing == v => continue,
            Some(existing) => {
                let existing = existing.to_string();
                let exported = format!("exported_{k}");
                let before = labels.replace(&exported, existing);
                undo.push((Cow::Owned(exported), before));
            }
            None => {}
        }
        let before = labels.replace(k, v.clone());
        undo.push((Cow::Borrowed(k), before));
    }
}

/// Gives back the labels [`record_in_place`] started from.
fn undo_record(labels: &mut Labels, undo: &mut Undo) {
    while let Some((name, before)) = undo.pop() {
        match before {
            Some(value) => {
                labels.replace(&name, value);
            }
            None => {
                labels.remove(&name);
            }
        }
    }
}

fn evaluate_recording(
    spec: &RuleSpec,
    memory: &RuleMemory,
    ts: i64,
    result: Vec<Series>,
) -> Outcome {
    if spec.limit > 0 && result.len() > spec.limit {
        return Outcome::error(format!(
            "exec exceeded limit of {} with {} series",
            spec.limit,
            result.len()
        ));
    }
    let mut memo = Remember::new(&memory.exported, result.len());
    let mut export = Vec::with_capacity(result.len());
    let mut undo = Undo::new();
    for s in result {
        let Series {
            mut labels,
            mut samples,
        } = s;
        let Some(value) = samples.last().map(|last| last.value) else {
            continue;
        };
        record_in_place(&spec.name, &spec.labels, &mut labels, &mut undo);
        if !memo.add(&labels) {
            let recorded = labels.to_string();
            undo_record(&mut labels, &mut undo);
            return Outcome::error(format!(
                "original metric {labels}; resulting labels {recorded}: {DUPLICATE}"
            ));
        }
        samples.clear();
        samples.push(Sample::new(ts, value));
        export.push(Series::new(labels, samples));
    }
    finish(export, memo, HashMap::new(), ts)
}

/// Builds the memory of one evaluation from the one before.
struct Remember<'a> {
    before: &'a Exported,
    current: Exported,
    /// Series of `current` that `before` holds too.
    reused: usize,
    scratch: Vec<u8>,
}

impl<'a> Remember<'a> {
    fn new(before: &'a Exported, capacity: usize) -> Self {
        Remember {
            before,
            current: Exported::next_after(before, capacity),
            reused: 0,
            scratch: Vec::new(),
        }
    }

    /// Adds `labels`; `false` when they were added already.
    fn add(&mut self, labels: &Labels) -> bool {
        pack(labels, &mut self.scratch);
        let hash = self.current.hash(&self.scratch);
        let added = self.current.insert(hash, &self.scratch);
        if added && self.before.contains(hash, &self.scratch) {
            self.reused += 1;
        }
        added
    }
}

/// Adds stale markers for what disappeared and sorts the export. `reused`
/// series of `current` were in the memory already (each once: duplicates
/// were refused before); when that is all of the memory, nothing
/// disappeared, and the pass looking for it (a hash per series) is skipped.
fn finish(
    mut export: Vec<Series>,
    memo: Remember,
    alerts: HashMap<Labels, Alert>,
    ts: i64,
) -> Outcome {
    let Remember {
        before,
        current,
        reused,
        ..
    } = memo;
    if reused < before.len() {
        for gone in before.missing_from(&current) {
            export.push(Series::new(unpack(gone), vec![Sample::stale(ts)]));
        }
    }
    export.sort_by(|a, b| a.labels.cmp(&b.labels));
    Outcome {
        export,
        memory: Some(RuleMemory {
            exported: current,
            alerts,
        }),
        error: None,
    }
}

/// vmalert's `labelSet`: the result's labels without `__name__`, then each
/// extra label; a clash with a different original value keeps the original
/// as `exported_<name>`.
pub fn alert_labels(
    result: &Labels,
    rendered: &BTreeMap<String, String>,
    alertname: &str,
    alertgroup: Option<&str>,
) -> Labels {
    let mut origin: BTreeMap<String, String> = result
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    let mut processed: BTreeMap<String, String> = result
        .without_name()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    let mut add = |k: &str, v: &str| {
        processed.insert(k.to_string(), v.to_string());
        match origin.get(k) {
            None => {
                origin.insert(k.to_string(), v.to_string());
            }
            Some(ov) if ov != v => {
                processed.insert(format!("exported_{k}"), ov.clone());
            }
            Some(_) => {}
        }
    };
    for (k, v) in rendered {
        add(k, v);
    }
    add("alertname", alertname);
    if let Some(g) = alertgroup {
        add("alertgroup", g);
    }
    Labels::from_pairs(processed)
}

fn evaluate_alerting(
    spec: &RuleSpec,
    a: &AlertSpec,
    memory: &RuleMemory,
    ts: i64,
    result: Vec<Series>,
) -> Outcome {
    let group_label = a.group_label.then_some(spec.group.as_str());
    let mut expanded = Vec::with_capacity(result.len());
    for s in &result {
        let Some(sample) = s.samples.last() else {
            continue;
        };
        let data = TemplateData {
            labels: Some(&s.labels),
            value: sample.value,
            expr: &spec.expr,
            external_labels: Some(&spec.external_labels),
            for_: a.for_,
            rule_type: spec.rule_type.as_str(),
        };
        let rendered = match render_labels_with(&spec.labels, &data) {
            Ok(r) => r,
            Err(e) => return Outcome::error(format!("failed to expand labels: {e}")),
        };
        expanded.push((
            alert_labels(&s.labels, &rendered, &spec.name, group_label),
            sample.value,
        ));
    }

    let mut alerts = memory.alerts.clone();
    let mut updated = HashSet::with_capacity(expanded.len());
    for (labels, value) in expanded {
        if !updated.insert(labels.clone()) {
            return Outcome::error(format!("labels {labels}: {DUPLICATE}"));
        }
        match alerts.get_mut(&labels) {
            Some(alert) => {
                alert.value = value;
                alert.keep_firing_since_ms = None;
            }
            None => {
                alerts.insert(
                    labels.clone(),
                    Alert {
                        labels,
                        state: AlertState::Pending,
                        active_at_ms: ts,
                        fired_at_ms: None,
                        keep_firing_since_ms: None,
                        value,
                    },
                );
            }
        }
    }

    let for_ms = a.for_.as_millis() as i64;
    let keep_ms = a.keep_firing_for.as_millis() as i64;
    alerts.retain(|labels, alert| {
        if !updated.contains(labels) {
            match alert.state {
                AlertState::Pending => return false,
                AlertState::Firing => {
                    if keep_ms == 0 {
                        return false;
                    }
                    let since = *alert.keep_firing_since_ms.get_or_insert(ts);
                    if ts - since >= keep_ms {
                        return false;
                    }
                }
            }
        }
        if alert.state == AlertState::Pending && ts - alert.active_at_ms >= for_ms {
            alert.state = AlertState::Firing;
            alert.fired_at_ms = Some(ts);
        }
        true
    });

    if spec.limit > 0 && alerts.len() > spec.limit {
        return Outcome {
            memory: Some(RuleMemory {
                exported: memory.exported.clone(),
                alerts: HashMap::new(),
            }),
            ..Outcome::error(format!(
                "exec exceeded limit of {} with {} alerts",
                spec.limit,
                alerts.len()
            ))
        };
    }

    let mut export = Vec::new();
    let mut memo = Remember::new(&memory.exported, alerts.len() * 2);
    for alert in alerts.values().filter(|a| a.state == AlertState::Firing) {
        for s in alert_series(alert, ts) {
            memo.add(&s.labels);
            export.push(s);
        }
    }
    finish(export, memo, alerts, ts)
}

/// The rendered annotations of each exported series of an alerting rule,
/// aligned with `export` (empty when the rule has none): rendered as
/// vmalert does, with the alert's labels as `$labels` and its value as
/// `$value`. Stale markers (the alert is gone) get none. A template that
/// fails leaves its annotation out, and says so in the log.
pub fn annotate(
    spec: &RuleSpec,
    memory: &RuleMemory,
    export: &[Series],
) -> Vec<Option<Annotations>> {
    let Some(a) = &spec.alert else {
        return Vec::new();
    };
    if spec.annotations.is_empty() {
        return Vec::new();
    }
    let mut cache: HashMap<Labels, Option<Annotations>> = HashMap::new();
    export
        .iter()
        .map(|s| {
            if s.samples.iter().all(|p| p.is_stale()) {
                return None;
            }
            let mut key = s.labels.clone();
            key.remove(METRIC_NAME);
            key.remove("alertstate");
            cache
                .entry(key)
                .or_insert_with_key(|key| {
                    let alert = memory.alerts.get(key)?;
                    Some(render_annotations(spec, a, &alert.labels, alert.value))
                })
                .clone()
        })
        .collect()
}

/// `annotations:` of an alerting rule for one alert.
pub fn render_annotations(
    spec: &RuleSpec,
    a: &AlertSpec,
    labels: &Labels,
    value: f64,
) -> Annotations {
    let data = TemplateData {
        labels: Some(labels),
        value,
        expr: &spec.expr,
        external_labels: Some(&spec.external_labels),
        for_: a.for_,
        rule_type: spec.rule_type.as_str(),
    };
    let rendered = match render_labels_with(&spec.annotations, &data) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(group = %spec.group, rule = %spec.name, "annotations: {e}");
            // Keep what renders on its own.
            spec.annotations
                .iter()
                .filter_map(|(k, v)| {
                    let one = BTreeMap::from([(k.clone(), v.clone())]);
                    render_labels_with(&one, &data)
                        .ok()
                        .and_then(|mut m| m.remove(k).map(|r| (k.clone(), r)))
                })
                .collect()
        }
    };
    std::sync::Arc::new(rendered)
}

/// `ALERTS{..., alertstate="firing"} 1` and `ALERTS_FOR_STATE{...} activeAt`.
fn alert_series(alert: &Alert, ts: i64) -> [Series; 2] {
    let mut state = alert.labels.clone();
    state.set(METRIC_NAME, ALERTS_METRIC);
    state.set("alertstate", alert.state.as_str());
    let mut for_state = alert.labels.clone();
    for_state.set(METRIC_NAME, ALERTS_FOR_STATE_METRIC);
    [
        Series::new(state, vec![Sample::new(ts, 1.0)]),
        Series::new(
            for_state,
            vec![Sample::new(ts, alert.active_at_ms.div_euclid(1000) as f64)],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector::parse_label_set;

    /// `m{a="1"} 5` lines in, series out.
    fn result(lines: &[&str]) -> Vec<Series> {
        lines
            .iter()
            .map(|l| {
                let (labels, value) = l.rsplit_once(' ').unwrap();
                Series::new(
                    parse_label_set(labels).unwrap(),
                    vec![Sample::new(0, value.parse().unwrap())],
                )
            })
            .collect()
    }

    /// Series as `name{...} value @ts` lines, stale markers as `stale`.
    fn show(series: &[Series]) -> Vec<String> {
        series
            .iter()
            .flat_map(|s| {
                s.samples.iter().map(move |x| {
                    let v = if x.is_stale() {
                        "stale".to_string()
                    } else {
                        x.value.to_string()
                    };
                    format!("{} {v} @{}", s.labels, x.timestamp_ms)
                })
            })
            .collect()
    }

    fn record(name: &str, labels: &[(&str, &str)]) -> RuleSpec {
        RuleSpec {
            group: "g".into(),
            file: "f.yml".into(),
            rule_type: RuleType::Prometheus,
            name: name.into(),
            expr: "expr".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            limit: 0,
            external_labels: BTreeMap::new(),
            alert: None,
            annotations: BTreeMap::new(),
        }
    }

    fn alert(labels: &[(&str, &str)], for_s: u64, keep_s: u64) -> RuleSpec {
        RuleSpec {
            alert: Some(AlertSpec {
                for_: Duration::from_secs(for_s),
                keep_firing_for: Duration::from_secs(keep_s),
                group_label: true,
            }),
            expr: "m > 10".into(),
            ..record("HighM", labels)
        }
    }

    #[test]
    fn record_renames_and_adds_labels() {
        let spec = record("job:m:high", &[("env", "prod"), ("team", "db")]);
        let out = evaluate(
            &spec,
            &RuleMemory::default(),
            1000,
            result(&[r#"m{instance="a", env="dev"} 5"#, r#"{instance="b"} 7"#]),
        );
        assert_eq!(out.error, None);
        assert_eq!(
            show(&out.export),
            [
                r#"job:m:high{env="prod", exported_env="dev", instance="a", team="db"} 5 @1000"#,
                r#"job:m:high{env="prod", instance="b", team="db"} 7 @1000"#,
            ]
        );
    }

    #[test]
    fn same_value_is_not_exported_and_empty_label_deletes() {
        let spec = record("r", &[("env", "prod"), ("instance", "")]);
        let out = evaluate(
            &spec,
            &RuleMemory::default(),
            1000,
            result(&[r#"m{instance="a", env="prod"} 1"#]),
        );
        assert_eq!(show(&out.export), [r#"r{env="prod"} 1 @1000"#]);
    }

    #[test]
    fn duplicates_after_labelling_are_an_error() {
        // Deleting `instance` makes the two series one.
        let spec = record("r", &[("instance", "")]);
        let before = RuleMemory {
            exported: [packed(r#"r{x="1"}"#)].into_iter().collect(),
            alerts: HashMap::new(),
        };
        let out = evaluate(
            &spec,
            &before,
            1000,
            result(&[r#"m{instance="a"} 1"#, r#"m{instance="b"} 2"#]),
        );
        let err = out.error.unwrap();
        assert!(
            err.contains(
                "result contains metrics with the same labelset after applying rule labels"
            ),
            "{err}"
        );
        assert!(
            err.contains(r#"original metric m{instance="b"}; resulting labels r"#),
            "{err}"
        );
        assert!(out.export.is_empty());
        assert_eq!(
            out.memory, None,
            "memory kept: no stale markers for an error"
        );
    }

    fn packed(text: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        pack(&parse_label_set(text).unwrap(), &mut buf);
        buf
    }

    #[test]
    fn packed_label_sets_unpack_to_the_same_labels() {
        for text in [
            r#"m{}"#,
            r#"m{a="1",b="x y",c="ünï\"cødé\n",d="=,{}"}"#,
            r#"{"dotted.name"="v",__name__="m"}"#,
        ] {
            let labels = parse_label_set(text).unwrap();
            let mut buf = Vec::new();
            pack(&labels, &mut buf);
            assert_eq!(unpack(&buf), labels, "{text}");
        }
        // Different sets never pack alike (names and values cannot run into
        // each other).
        assert_ne!(packed(r#"m{ab="c"}"#), packed(r#"m{a="bc"}"#));
    }

    #[test]
    fn labelling_in_place_is_undone_exactly() {
        // Every kind of change: the name, a removal, a clash moved to
        // `exported_job` (over an existing one), an addition, an equal value.
        let rule_labels: BTreeMap<String, String> = [
            ("instance", ""),
            ("job", "rule"),
            ("team", "a"),
            ("zone", "z1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let original =
            parse_label_set(r#"m{instance="i",job="orig",exported_job="older",zone="z1",x="1"}"#)
                .unwrap();
        let mut labels = original.clone();
        let mut undo = Undo::new();
        record_in_place("r", &rule_labels, &mut labels, &mut undo);
        assert_eq!(
            labels,
            recorded_labels("r", &rule_labels, &original),
            "the same labels as a copy gets"
        );
        assert_eq!(
            labels.to_string(),
            r#"r{exported_job="orig", job="rule", team="a", x="1", zone="z1"}"#
        );
        undo_record(&mut labels, &mut undo);
        assert_eq!(labels, original);
        assert!(undo.is_empty());
    }

    #[test]
    fn limit_discards_the_result() {
        let spec = RuleSpec {
            limit: 1,
            ..record("r", &[])
        };
        let out = evaluate(
            &spec,
            &RuleMemory::default(),
            1000,
            result(&["{a=\"1\"} 1", "{a=\"2\"} 1"]),
        );
        assert_eq!(
            out.error.as_deref(),
            Some("exec exceeded limit of 1 with 2 series")
        );
        assert!(out.export.is_empty());
        let out = evaluate(
            &spec,
            &RuleMemory::default(),
            1000,
            result(&["{a=\"1\"} 1"]),
        );
        assert_eq!(out.error, None);
    }

    #[test]
    fn stale_markers_when_a_series_stops_breaching() {
        let spec = record("r", &[]);
        let t1 = evaluate(
            &spec,
            &RuleMemory::default(),
            1000,
            result(&["{a=\"1\"} 1", "{a=\"2\"} 2"]),
        );
        let m1 = t1.memory.unwrap();
        let t2 = evaluate(&spec, &m1, 2000, result(&["{a=\"2\"} 3"]));
        assert_eq!(
            show(&t2.export),
            [r#"r{a="1"} stale @2000"#, r#"r{a="2"} 3 @2000"#]
        );
        // Only once: the next evaluation does not repeat the marker.
        let t3 = evaluate(&spec, t2.memory.as_ref().unwrap(), 3000, result(&[]));
        assert_eq!(show(&t3.export), [r#"r{a="2"} stale @3000"#]);
        let t4 = evaluate(&spec, t3.memory.as_ref().unwrap(), 4000, result(&[]));
        assert!(t4.export.is_empty());
        assert!(t2.export[0].samples[0].is_stale());
    }

    /// Runs an alerting rule over `steps` of (ts, result lines), returning the
    /// export of each step.
    fn run_alert(spec: &RuleSpec, steps: &[(i64, &[&str])]) -> Vec<Vec<String>> {
        let mut memory = RuleMemory::default();
        let mut out = Vec::new();
        for (ts, lines) in steps {
            let o = evaluate(spec, &memory, *ts, result(lines));
            assert_eq!(o.error, None);
            out.push(show(&o.export));
            memory = o.memory.unwrap();
        }
        out
    }

    #[test]
    fn alert_fires_after_for_and_only_firing_is_exported() {
        let spec = alert(&[("severity", "page")], 20, 0);
        let on: &[&str] = &[r#"m{instance="a"} 50"#];
        let off: &[&str] = &[];
        let out = run_alert(
            &spec,
            &[
                (0, on),
                (10_000, on),
                (20_000, on),
                (30_000, on),
                (40_000, off),
            ],
        );
        let labels = r#"alertgroup="g", alertname="HighM", instance="a", severity="page""#;
        let state = r#"alertgroup="g", alertname="HighM", alertstate="firing", instance="a", severity="page""#;
        assert!(out[0].is_empty(), "pending at 0s");
        assert!(out[1].is_empty(), "pending at 10s");
        assert_eq!(
            out[2],
            [
                format!("ALERTS{{{state}}} 1 @20000"),
                format!("ALERTS_FOR_STATE{{{labels}}} 0 @20000"),
            ]
        );
        assert_eq!(out[3].len(), 2);
        assert_eq!(
            out[4],
            [
                format!("ALERTS{{{state}}} stale @40000"),
                format!("ALERTS_FOR_STATE{{{labels}}} stale @40000"),
            ]
        );
    }

    #[test]
    fn pending_alert_that_disappears_starts_over() {
        let spec = alert(&[], 20, 0);
        let on: &[&str] = &[r#"m{instance="a"} 50"#];
        let off: &[&str] = &[];
        let out = run_alert(
            &spec,
            &[
                (0, on),
                (10_000, off),
                (20_000, on),
                (30_000, on),
                (40_000, on),
            ],
        );
        assert!(out[..4].iter().all(|o| o.is_empty()), "{out:?}");
        // Active again since 20s: fires at 40s with activeAt 20.
        assert!(out[4][1].ends_with("} 20 @40000"), "{:?}", out[4]);
    }

    #[test]
    fn keep_firing_for_holds_a_resolved_alert() {
        let spec = alert(&[], 0, 15);
        let on: &[&str] = &[r#"m{instance="a"} 50"#];
        let off: &[&str] = &[];
        let out = run_alert(
            &spec,
            &[
                (0, on),
                (10_000, off),
                (20_000, off),
                (30_000, off),
                (40_000, on),
            ],
        );
        // for: 0 fires at once.
        assert_eq!(out[0].len(), 2);
        // Absent since 10s: kept at 10s and 20s (10s < 15s), resolved at 30s.
        assert_eq!(out[1].len(), 2);
        assert!(out[1][0].ends_with("1 @10000"));
        assert_eq!(out[2].len(), 2);
        assert!(
            out[3].iter().all(|l| l.contains("stale @30000")),
            "{:?}",
            out[3]
        );
        // Back at 40s: a new alert, active since 40s.
        assert!(out[4][1].ends_with("} 40 @40000"), "{:?}", out[4]);
    }

    #[test]
    fn keep_firing_for_is_reset_when_the_alert_returns() {
        let spec = alert(&[], 0, 15);
        let on: &[&str] = &[r#"m{instance="a"} 50"#];
        let off: &[&str] = &[];
        let out = run_alert(
            &spec,
            &[
                (0, on),
                (10_000, off),
                (20_000, on),
                (30_000, off),
                (40_000, off),
                (50_000, off),
            ],
        );
        assert!(out.iter().take(5).all(|o| o.len() == 2), "{out:?}");
        // Same alert all along: activeAt stays 0.
        assert!(out[4][1].ends_with("} 0 @40000"), "{:?}", out[4]);
        assert!(out[5].iter().all(|l| l.contains("stale")));
    }

    #[test]
    fn alert_labels_are_templated_and_clashes_exported() {
        let spec = alert(
            &[
                (
                    "severity",
                    "{{ if gt $value 100.0 }}page{{ else }}ticket{{ end }}",
                ),
                ("instance", "{{ $labels.instance }}-x"),
                ("summary", "{{ $labels.__name__ }} {{ $value }}"),
                ("env", ""),
            ],
            0,
            0,
        );
        let out = run_alert(&spec, &[(0, &[r#"m{instance="a", env="prod"} 500"#])]);
        assert_eq!(
            out[0][0],
            "ALERTS{alertgroup=\"g\", alertname=\"HighM\", alertstate=\"firing\", exported_env=\"prod\", exported_instance=\"a\", instance=\"a-x\", severity=\"page\", summary=\"m 500\"} 1 @0"
        );
    }

    #[test]
    fn alert_limit_resets_alerts() {
        let spec = RuleSpec {
            limit: 1,
            ..alert(&[], 0, 0)
        };
        let two = result(&[r#"m{instance="a"} 50"#, r#"m{instance="b"} 50"#]);
        let o = evaluate(&spec, &RuleMemory::default(), 0, two);
        assert_eq!(
            o.error.as_deref(),
            Some("exec exceeded limit of 1 with 2 alerts")
        );
        assert!(o.export.is_empty());
        assert!(o.memory.unwrap().alerts.is_empty());
    }

    #[test]
    fn alert_duplicates_are_an_error() {
        // Dropping __name__ makes m{a} and n{a} the same alert.
        let spec = alert(&[], 0, 0);
        let o = evaluate(
            &spec,
            &RuleMemory::default(),
            0,
            result(&[r#"m{instance="a"} 50"#, r#"n{instance="a"} 50"#]),
        );
        assert!(o.error.unwrap().contains("same labelset"));
    }

    #[test]
    fn annotations_are_rendered_per_alert_for_events() {
        let mut spec = alert(&[("severity", "page")], 0, 0);
        spec.annotations = BTreeMap::from([
            (
                "summary".to_string(),
                "{{ $labels.instance }} at {{ $value | humanize }} ({{ $labels.severity }})"
                    .to_string(),
            ),
            ("static".to_string(), "x".to_string()),
        ]);
        let o = evaluate(
            &spec,
            &RuleMemory::default(),
            0,
            result(&[r#"m{instance="a"} 1234.5"#]),
        );
        let notes = annotate(&spec, o.memory.as_ref().unwrap(), &o.export);
        assert_eq!(notes.len(), 2, "ALERTS and ALERTS_FOR_STATE");
        let n = notes[0].as_ref().unwrap();
        assert_eq!(n["summary"], "a at 1.234k (page)");
        assert_eq!(n["static"], "x");
        // The breach ends: its stale markers carry no annotations.
        let o2 = evaluate(&spec, o.memory.as_ref().unwrap(), 1000, result(&[]));
        assert!(annotate(&spec, o2.memory.as_ref().unwrap(), &o2.export)
            .iter()
            .all(Option::is_none));
        // Recording rules have none.
        assert!(annotate(&record("r", &[]), &RuleMemory::default(), &o.export).is_empty());
    }

    #[test]
    fn template_error_is_a_rule_error() {
        let spec = alert(&[("x", "{{ query \"up\" }}")], 0, 0);
        let o = evaluate(&spec, &RuleMemory::default(), 0, result(&["m 1"]));
        assert!(o.error.unwrap().starts_with("failed to expand labels"));
    }
}
