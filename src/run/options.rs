//! Settings every rule group shares ([`EngineOptions`], from the run
//! config's `evaluation:`) and the rule as evaluation sees it
//! ([`rule_spec`]). `group` (live evaluation), `replay` and `engine`
//! (start, reload, preview) all read them from here, so none of those
//! depends on another for them.

use crate::run::config::EvaluationSpec;
use crate::run::eval::{AlertSpec, RuleSpec};
use crate::run::rules::{Group, Rule, RuleKind};
use std::collections::BTreeMap;
use std::time::Duration;

/// Settings that apply to all groups.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineOptions {
    /// Interval of groups without `interval:` (vmalert's `-evaluationInterval`, 1m).
    pub default_interval: Duration,
    /// `eval_delay` of groups that set none (vmalert's `-rule.evalDelay`, 30s:
    /// VictoriaMetrics hides the last 30s by default, `-search.latencyOffset`).
    pub default_eval_delay: Duration,
    /// How far back missed evaluations are made up (1h; zero disables).
    pub max_catch_up: Duration,
    /// `external_labels` of the run config: added to every rule's labels
    /// with the lowest priority, as vmalert's `-external.label`.
    pub external_labels: BTreeMap<String, String>,
    /// Evaluations kept per rule for the API (overridden by a rule's
    /// `update_entries_limit`).
    pub history_len: usize,
    /// Add `alertgroup` to alert series (vmalert unless `-disableAlertgroupLabel`).
    pub alertgroup_label: bool,
    /// How long after a timestamp is due the group wakes (capped at 3/4 of
    /// the interval). VictoriaMetrics clamps a query's time to `now -
    /// max(search.latencyOffset, 1s)`: measured on 1.79, a query for T sent
    /// before T+1s (latencyOffset 0) or T+5s (latencyOffset 5s) answers for
    /// T-1s while still stamping T. `eval_delay` is meant to equal the
    /// latency offset, so waking exactly at `T + eval_delay` would hit this
    /// in every evaluation. vmalert escapes it (mostly) by waking at a random
    /// phase of the interval; spillway waits this fixed margin (1.2s: one
    /// second plus room for clock skew between the hosts).
    pub wake_margin: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            default_interval: Duration::from_secs(60),
            default_eval_delay: Duration::from_secs(30),
            max_catch_up: Duration::from_secs(3600),
            external_labels: BTreeMap::new(),
            history_len: 30,
            alertgroup_label: true,
            wake_margin: Duration::from_millis(1200),
        }
    }
}

impl EngineOptions {
    /// Reads `evaluation:` of the run config; errors name the field.
    pub fn from_spec(
        spec: &EvaluationSpec,
        external_labels: &BTreeMap<String, String>,
    ) -> Result<EngineOptions, String> {
        use crate::model::time::parse_duration;
        let mut o = EngineOptions {
            external_labels: external_labels.clone(),
            ..EngineOptions::default()
        };
        let field = |name: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
            v.as_deref()
                .map(|s| parse_duration(s).map_err(|e| format!("evaluation.{name}: {e}")))
                .transpose()
        };
        if let Some(d) = field("interval", &spec.interval)? {
            if d.is_zero() {
                return Err("evaluation.interval: must be above 0, e.g. 1m".into());
            }
            let max = crate::run::rules::MAX_RULE_DURATION;
            if d > max {
                return Err(format!(
                    "evaluation.interval: {} is longer than {}, the longest accepted (as for a group's interval)",
                    crate::model::time::format_duration(d),
                    crate::model::time::format_duration(max)
                ));
            }
            o.default_interval = d;
        }
        if let Some(d) = field("max_catch_up", &spec.max_catch_up)? {
            o.max_catch_up = d;
        }
        if let Some(d) = field("eval_delay", &spec.eval_delay)? {
            o.default_eval_delay = d;
        }
        Ok(o)
    }
}

/// The rule as evaluation sees it.
pub fn rule_spec(group: &Group, rule: &Rule, opts: &EngineOptions) -> RuleSpec {
    let mut labels = opts.external_labels.clone();
    labels.extend(group.rule_labels(rule));
    RuleSpec {
        group: group.name.clone(),
        file: group.file.clone(),
        rule_type: group.rule_type,
        name: rule.name().to_string(),
        expr: rule.expr.clone(),
        labels,
        limit: group.limit,
        external_labels: opts.external_labels.clone(),
        alert: match &rule.kind {
            RuleKind::Alerting {
                for_,
                keep_firing_for,
                ..
            } => Some(AlertSpec {
                for_: *for_,
                keep_firing_for: *keep_firing_for,
                group_label: opts.alertgroup_label,
            }),
            RuleKind::Recording { .. } => None,
        },
        annotations: match &rule.kind {
            RuleKind::Alerting { annotations, .. } => annotations.clone(),
            RuleKind::Recording { .. } => BTreeMap::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_run_config() {
        let spec = EvaluationSpec {
            interval: Some("30s".into()),
            max_catch_up: Some("0".into()),
            eval_delay: Some("10s".into()),
            ..EvaluationSpec::default()
        };
        let labels = BTreeMap::from([("cluster".to_string(), "eu1".to_string())]);
        let o = EngineOptions::from_spec(&spec, &labels).unwrap();
        assert_eq!(o.default_interval, Duration::from_secs(30));
        assert_eq!(o.max_catch_up, Duration::ZERO);
        assert_eq!(o.default_eval_delay, Duration::from_secs(10));
        assert_eq!(o.external_labels, labels);
        let d = EngineOptions::from_spec(&EvaluationSpec::default(), &BTreeMap::new()).unwrap();
        assert_eq!(
            (d.default_interval, d.default_eval_delay, d.max_catch_up),
            (
                Duration::from_secs(60),
                Duration::from_secs(30),
                Duration::from_secs(3600)
            )
        );
        let bad = EvaluationSpec {
            max_catch_up: Some("an hour".into()),
            ..EvaluationSpec::default()
        };
        let e = EngineOptions::from_spec(&bad, &BTreeMap::new()).unwrap_err();
        assert!(
            e.starts_with("evaluation.max_catch_up: invalid duration \"an hour\""),
            "{e}"
        );
        let zero = EvaluationSpec {
            interval: Some("0s".into()),
            ..EvaluationSpec::default()
        };
        assert!(EngineOptions::from_spec(&zero, &BTreeMap::new()).is_err());
    }
}
