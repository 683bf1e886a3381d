//! What the engine tells about itself: per-rule health, last evaluation and
//! a short history, and a snapshot of all groups in the JSON shape of
//! vmalert's `/api/v1/rules`, which Grafana and vmui already read.
//!
//! The shape follows vmalert (`app/vmalert/rule/web.go`, and the answer of
//! vmalert 1.79): `{"status":"success","data":{"groups":[{name, file, id,
//! interval (s), type, concurrency, lastEvaluation, labels, params, headers,
//! eval_offset, eval_delay, rules:[{name, query, type, health, lastError,
//! lastEvaluation, evaluationTime (s), lastSamples, lastSeriesFetched,
//! labels, state, alerts, duration, keep_firing_for, id, group_id, ...}]}]}}`.
//! Ids are vmalert's FNV-1a hashes, so they equal vmalert's for the same
//! files. Two additions: `updates` (the last evaluations, newest first, for
//! charts) and `exported` in each update. Header values that look like
//! credentials are shown as `<redacted>`.

use crate::model::time::format_rfc3339_ms;
use crate::model::Labels;
use crate::run::eval::{Alert, AlertState};
use crate::run::rules::{Group, Rule, RuleKind};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One evaluation of a rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    /// Wall-clock time the evaluation started (ms).
    pub time_ms: i64,
    /// The evaluation timestamp (ms).
    pub at_ms: i64,
    /// Query and processing time.
    pub duration: Duration,
    /// Series the datasource returned.
    pub samples: usize,
    /// `stats.seriesFetched` of the answer, when the datasource reports it.
    pub series_fetched: Option<u64>,
    /// Series handed to the destinations (stale markers included).
    pub exported: usize,
    pub error: Option<String>,
}

/// Health and history of one rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleStatus {
    /// Oldest first; at most `capacity`.
    pub updates: VecDeque<Update>,
    pub capacity: usize,
    /// Pending and firing alerts (alerting rules), by labels.
    pub alerts: Vec<Alert>,
}

impl RuleStatus {
    pub fn new(capacity: usize) -> Self {
        RuleStatus {
            updates: VecDeque::new(),
            capacity: capacity.max(1),
            alerts: Vec::new(),
        }
    }

    pub fn push(&mut self, u: Update) {
        while self.updates.len() >= self.capacity {
            self.updates.pop_front();
        }
        self.updates.push_back(u);
    }

    pub fn last(&self) -> Option<&Update> {
        self.updates.back()
    }

    pub fn healthy(&self) -> bool {
        self.last().is_none_or(|u| u.error.is_none())
    }
}

/// A rule and its status, as of a snapshot.
#[derive(Clone, Debug)]
pub struct RuleState {
    pub rule: Rule,
    /// External, group and rule labels merged.
    pub labels: BTreeMap<String, String>,
    pub status: RuleStatus,
}

/// A group and its rules, as of a snapshot.
#[derive(Clone, Debug)]
pub struct GroupState {
    pub group: Group,
    /// The interval in effect (the group's or the default).
    pub interval: Duration,
    pub last_evaluation_ms: Option<i64>,
    pub rules: Vec<RuleState>,
}

/// All groups, as of a snapshot (see [`crate::run::EngineHandle::snapshot`]).
#[derive(Clone, Debug, Default)]
pub struct GroupsState {
    pub groups: Vec<GroupState>,
}

/// 64-bit FNV-1a, vmalert's hash for group, rule and alert ids.
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// vmalert's group id: FNV-1a of file, `\xff`, name and type, as vmalert
/// 1.79 computes it (verified against its `/api/v1/rules`; later versions
/// also hash the interval and offset).
pub fn group_id(group: &Group) -> u64 {
    fnv1a64(&[
        group.file.as_bytes(),
        b"\xff",
        group.name.as_bytes(),
        group.rule_type.as_str().as_bytes(),
    ])
}

/// vmalert's alert id: label names and values (without `__name__`), each
/// pair followed by `\xff`.
pub fn alert_id(labels: &Labels) -> u64 {
    let mut parts: Vec<&[u8]> = Vec::new();
    for l in labels.without_name() {
        parts.push(l.name.as_bytes());
        parts.push(l.value.as_bytes());
        parts.push(b"\xff");
    }
    fnv1a64(&parts)
}

/// Go's zero `time.Time`, which vmalert prints for "never".
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time_json(ms: Option<i64>) -> Value {
    Value::String(
        ms.map(format_rfc3339_ms)
            .unwrap_or_else(|| GO_ZERO_TIME.into()),
    )
}

fn map_json(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

fn redact_header(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let secret = ["auth", "token", "key", "secret", "cookie", "password"]
        .iter()
        .any(|w| lower.contains(w));
    if secret {
        format!("{name}: <redacted>")
    } else {
        format!("{name}: {value}")
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 32)`, which vmalert uses for alert values.
fn alert_value(v: f64) -> String {
    let f = v as f32;
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{f}")
    }
}

impl GroupState {
    pub fn id(&self) -> u64 {
        group_id(&self.group)
    }

    fn to_api_json(&self) -> Value {
        let g = &self.group;
        let gid = self.id();
        let mut o = Map::new();
        o.insert("name".into(), json!(g.name));
        o.insert(
            "rules".into(),
            Value::Array(self.rules.iter().map(|r| r.to_api_json(g, gid)).collect()),
        );
        o.insert("interval".into(), json!(self.interval.as_secs_f64()));
        o.insert("lastEvaluation".into(), time_json(self.last_evaluation_ms));
        o.insert("type".into(), json!(g.rule_type.as_str()));
        o.insert("id".into(), json!(gid.to_string()));
        o.insert("file".into(), json!(g.file));
        o.insert("concurrency".into(), json!(g.concurrency));
        if !g.params.is_empty() {
            let params: Vec<String> = g
                .params
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
                .collect();
            o.insert("params".into(), json!(params));
        }
        if !g.headers.is_empty() {
            let mut h: Vec<String> = g
                .headers
                .iter()
                .map(|h| redact_header(&h.name, &h.value))
                .collect();
            h.sort();
            o.insert("headers".into(), json!(h));
        }
        if !g.notifier_headers.is_empty() {
            let mut h: Vec<String> = g
                .notifier_headers
                .iter()
                .map(|h| redact_header(&h.name, &h.value))
                .collect();
            h.sort();
            o.insert("notifier_headers".into(), json!(h));
        }
        if !g.labels.is_empty() {
            o.insert("labels".into(), map_json(&g.labels));
        }
        if let Some(off) = g.eval_offset.filter(|d| !d.is_zero()) {
            o.insert("eval_offset".into(), json!(off.as_secs_f64()));
        }
        if let Some(d) = g.eval_delay.filter(|d| !d.is_zero()) {
            o.insert("eval_delay".into(), json!(d.as_secs_f64()));
        }
        if g.limit > 0 {
            o.insert("limit".into(), json!(g.limit));
        }
        Value::Object(o)
    }
}

impl RuleState {
    fn to_api_json(&self, g: &Group, gid: u64) -> Value {
        let r = &self.rule;
        let last = self.status.last();
        let mut o = Map::new();
        let (kind, state) = match &r.kind {
            RuleKind::Recording { .. } => ("recording", String::new()),
            RuleKind::Alerting { .. } => {
                let state = if self
                    .status
                    .alerts
                    .iter()
                    .any(|a| a.state == AlertState::Firing)
                {
                    "firing"
                } else if self.status.alerts.is_empty() {
                    "inactive"
                } else {
                    "pending"
                };
                ("alerting", state.to_string())
            }
        };
        o.insert("state".into(), json!(state));
        o.insert("name".into(), json!(r.name()));
        o.insert("query".into(), json!(r.expr));
        let (for_s, keep_s) = match &r.kind {
            RuleKind::Alerting {
                for_,
                keep_firing_for,
                ..
            } => (for_.as_secs_f64(), keep_firing_for.as_secs_f64()),
            RuleKind::Recording { .. } => (0.0, 0.0),
        };
        o.insert("duration".into(), json!(for_s));
        o.insert("keep_firing_for".into(), json!(keep_s));
        if !self.labels.is_empty() {
            o.insert("labels".into(), map_json(&self.labels));
        }
        if let RuleKind::Alerting { annotations, .. } = &r.kind {
            if !annotations.is_empty() {
                o.insert("annotations".into(), map_json(annotations));
            }
        }
        o.insert(
            "lastError".into(),
            json!(last.and_then(|u| u.error.clone()).unwrap_or_default()),
        );
        o.insert(
            "evaluationTime".into(),
            json!(last.map(|u| u.duration.as_secs_f64()).unwrap_or(0.0)),
        );
        o.insert("lastEvaluation".into(), time_json(last.map(|u| u.time_ms)));
        if r.is_alerting() && !self.status.alerts.is_empty() {
            let alerts: Vec<Value> = self
                .status
                .alerts
                .iter()
                .map(|a| {
                    json!({
                        "state": a.state.as_str(),
                        "name": r.name(),
                        "value": alert_value(a.value),
                        "labels": labels_json(&a.labels),
                        "annotations": {},
                        "activeAt": format_rfc3339_ms(a.active_at_ms),
                        "id": alert_id(&a.labels).to_string(),
                        "rule_id": r.id.to_string(),
                        "group_id": gid.to_string(),
                        "expression": r.expr,
                        "source": "",
                        "restored": false,
                        "stabilizing": a.keep_firing_since_ms.is_some(),
                    })
                })
                .collect();
            o.insert("alerts".into(), Value::Array(alerts));
        }
        o.insert(
            "health".into(),
            json!(if self.status.healthy() { "ok" } else { "err" }),
        );
        o.insert("type".into(), json!(kind));
        o.insert("datasourceType".into(), json!(g.rule_type.as_str()));
        o.insert(
            "lastSamples".into(),
            json!(last.map(|u| u.samples).unwrap_or(0)),
        );
        if let Some(n) = last.and_then(|u| u.series_fetched) {
            o.insert("lastSeriesFetched".into(), json!(n));
        }
        o.insert("id".into(), json!(r.id.to_string()));
        o.insert("group_id".into(), json!(gid.to_string()));
        o.insert("group_name".into(), json!(g.name));
        o.insert("file".into(), json!(g.file));
        o.insert("debug".into(), json!(g.rule_debug(r)));
        o.insert("max_updates_entries".into(), json!(self.status.capacity));
        let updates: Vec<Value> = self
            .status
            .updates
            .iter()
            .rev()
            .map(|u| {
                json!({
                    "time": format_rfc3339_ms(u.time_ms),
                    "at": format_rfc3339_ms(u.at_ms),
                    "duration": u.duration.as_secs_f64(),
                    "samples": u.samples,
                    "series_fetched": u.series_fetched,
                    "exported": u.exported,
                    "error": u.error.clone().unwrap_or_default(),
                })
            })
            .collect();
        o.insert("updates".into(), Value::Array(updates));
        Value::Object(o)
    }
}

impl GroupsState {
    /// The answer of `GET /api/v1/rules`.
    pub fn to_api_json(&self) -> Value {
        json!({
            "status": "success",
            "data": {
                "groups": self.groups.iter().map(GroupState::to_api_json).collect::<Vec<_>>(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::rules::load_str;

    const FILE: &str = "/tmp/engexp/rules.yml";
    const RULES: &str = r#"groups:
- name: g1
  interval: 5s
  labels: {env: group, team: g}
  rules:
  - record: r1
    expr: m > 10
    labels: {env: rule, x: ""}
  - alert: A1
    expr: m > 10
    for: 10s
    labels: {sev: "{{ $labels.instance }}", team: r}
"#;

    fn group() -> Group {
        let opts = crate::run::rules::LoadOptions::default();
        load_str(FILE, RULES, &opts).unwrap().remove(0)
    }

    /// Ids as vmalert 1.79 reported them in `/api/v1/rules` for this very
    /// file at this path.
    #[test]
    fn ids_match_vmalert() {
        let g = group();
        assert_eq!(group_id(&g), 16490155125753754596);
        assert_eq!(g.rules[0].id, 3838815025236637192);
        assert_eq!(g.rules[1].id, 4872272112711159998);
    }

    fn state(updates: Vec<Update>, alerts: Vec<Alert>) -> GroupsState {
        let g = group();
        let rules = g
            .rules
            .iter()
            .map(|r| {
                let mut status = RuleStatus::new(3);
                for u in &updates {
                    status.push(u.clone());
                }
                if r.is_alerting() {
                    status.alerts = alerts.clone();
                }
                RuleState {
                    rule: r.clone(),
                    labels: g.rule_labels(r),
                    status,
                }
            })
            .collect();
        GroupsState {
            groups: vec![GroupState {
                interval: Duration::from_secs(5),
                last_evaluation_ms: Some(1_795_308_940_000),
                rules,
                group: g,
            }],
        }
    }

    #[test]
    fn api_shape_before_any_evaluation() {
        let v = state(vec![], vec![]).to_api_json();
        assert_eq!(v["status"], "success");
        let g = &v["data"]["groups"][0];
        assert_eq!(g["name"], "g1");
        assert_eq!(g["file"], FILE);
        assert_eq!(g["interval"], 5.0);
        assert_eq!(g["type"], "prometheus");
        assert_eq!(g["id"], "16490155125753754596");
        assert_eq!(g["concurrency"], 1);
        assert_eq!(g["labels"], json!({"env": "group", "team": "g"}));
        assert_eq!(g["lastEvaluation"], "2026-11-22T00:55:40Z");
        let r = &g["rules"][0];
        assert_eq!(r["name"], "r1");
        assert_eq!(r["type"], "recording");
        assert_eq!(r["state"], "");
        assert_eq!(r["health"], "ok");
        assert_eq!(r["lastError"], "");
        assert_eq!(r["lastEvaluation"], "0001-01-01T00:00:00Z");
        assert_eq!(r["labels"], json!({"env": "rule", "team": "g", "x": ""}));
        assert_eq!(r["id"], "3838815025236637192");
        assert_eq!(r["group_id"], "16490155125753754596");
        assert_eq!(r["datasourceType"], "prometheus");
        assert!(r.get("lastSeriesFetched").is_none());
        let a = &g["rules"][1];
        assert_eq!(a["type"], "alerting");
        assert_eq!(a["state"], "inactive");
        assert_eq!(a["duration"], 10.0);
        assert_eq!(a["labels"]["team"], "r");
        assert!(a.get("alerts").is_none());
    }

    #[test]
    fn api_shape_with_errors_alerts_and_history() {
        let updates = (0..5)
            .map(|i| Update {
                time_ms: 1_000 * i,
                at_ms: 1_000 * i,
                duration: Duration::from_millis(2),
                samples: i as usize,
                series_fetched: Some(7),
                exported: 1,
                error: (i == 4).then(|| "failed to execute query \"m > 10\": boom".to_string()),
            })
            .collect();
        let alert = Alert {
            labels: Labels::from_pairs([("alertname", "A1"), ("instance", "b")]),
            state: AlertState::Firing,
            active_at_ms: 1_795_308_784_000,
            fired_at_ms: Some(1_795_308_794_000),
            keep_firing_since_ms: None,
            value: 50.0,
        };
        let v = state(updates, vec![alert]).to_api_json();
        let r = &v["data"]["groups"][0]["rules"][0];
        assert_eq!(r["health"], "err");
        assert_eq!(r["lastError"], "failed to execute query \"m > 10\": boom");
        assert_eq!(r["lastSamples"], 4);
        assert_eq!(r["lastSeriesFetched"], 7);
        assert_eq!(r["evaluationTime"], 0.002);
        assert_eq!(r["lastEvaluation"], "1970-01-01T00:00:04Z");
        // History keeps the last 3, newest first.
        let at: Vec<&str> = r["updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["at"].as_str().unwrap())
            .collect();
        assert_eq!(
            at,
            [
                "1970-01-01T00:00:04Z",
                "1970-01-01T00:00:03Z",
                "1970-01-01T00:00:02Z"
            ]
        );
        assert_eq!(r["max_updates_entries"], 3);
        let a = &v["data"]["groups"][0]["rules"][1];
        assert_eq!(a["state"], "firing");
        let al = &a["alerts"][0];
        assert_eq!(al["state"], "firing");
        assert_eq!(al["value"], "50");
        assert_eq!(al["activeAt"], "2026-11-22T00:53:04Z");
        assert_eq!(al["labels"], json!({"alertname": "A1", "instance": "b"}));
        assert_eq!(al["rule_id"], "4872272112711159998");
    }

    #[test]
    fn credentials_in_headers_are_redacted() {
        assert_eq!(redact_header("AccountID", "1"), "AccountID: 1");
        assert_eq!(
            redact_header("Authorization", "Bearer x"),
            "Authorization: <redacted>"
        );
        assert_eq!(redact_header("X-Api-Key", "x"), "X-Api-Key: <redacted>");
    }
}
