//! Per-metric thresholds of `spillway export`: `min`/`max` bound the
//! acceptable range (outside → `out_of_range`), `alert_above`/`alert_below`
//! raise `alert`. A threshold applies to series by metric name, by series
//! selector, or to every series of one query; the first that applies wins,
//! in file order, so specific entries go first.
//!
//! The pandas "vmselect data processor" wrote the same thing as
//! `{"metric_name", "min_value", "max_value", "alert_threshold"}` ("alert if
//! the value exceeds this", strictly, like `alert_above`); those names are
//! accepted as aliases, so its thresholds JSON loads unchanged (`null` is
//! "not set", as its `None`).

use crate::model::{Labels, Selector};

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Exact metric name (`__name__`).
    #[serde(alias = "metric_name")]
    pub metric: Option<String>,
    /// Series selector, e.g. `{__name__="http_latency", job="api"}`.
    pub selector: Option<String>,
    /// The query text as given in `queries`, for results without a metric name.
    pub query: Option<String>,
    #[serde(alias = "min_value")]
    pub min: Option<f64>,
    #[serde(alias = "max_value")]
    pub max: Option<f64>,
    #[serde(alias = "alert_threshold")]
    pub alert_above: Option<f64>,
    pub alert_below: Option<f64>,
}

#[derive(Clone, Debug)]
enum Target {
    Metric(String),
    Selector(Selector),
    Query(String),
}

#[derive(Clone, Debug)]
pub struct Threshold {
    target: Target,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub alert_above: Option<f64>,
    pub alert_below: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub out_of_range: bool,
    pub alert: bool,
}

impl Threshold {
    /// Checks one spec; `index` is its position, used in messages.
    pub fn from_spec(spec: ThresholdSpec, index: usize) -> Result<Threshold, String> {
        let at = format!("thresholds[{index}]");
        let target = match (spec.metric, spec.selector, spec.query) {
            (Some(m), None, None) if !m.is_empty() => Target::Metric(m),
            (None, Some(s), None) => Target::Selector(
                Selector::parse(&s).map_err(|e| format!("{at}.selector: {e}"))?,
            ),
            (None, None, Some(q)) if !q.is_empty() => Target::Query(q),
            _ => {
                return Err(format!(
                    "{at}: give exactly one of `metric`, `selector` or `query` to say which series it applies to"
                ))
            }
        };
        if spec.min.is_none()
            && spec.max.is_none()
            && spec.alert_above.is_none()
            && spec.alert_below.is_none()
        {
            return Err(format!(
                "{at}: set at least one of `min`, `max`, `alert_above`, `alert_below`"
            ));
        }
        if let (Some(lo), Some(hi)) = (spec.min, spec.max) {
            if lo > hi {
                return Err(format!("{at}: `min` ({lo}) is greater than `max` ({hi})"));
            }
        }
        for (name, v) in [
            ("min", spec.min),
            ("max", spec.max),
            ("alert_above", spec.alert_above),
            ("alert_below", spec.alert_below),
        ] {
            if v.is_some_and(f64::is_nan) {
                return Err(format!("{at}.{name}: must be a number, not NaN"));
            }
        }
        Ok(Threshold {
            target,
            min: spec.min,
            max: spec.max,
            alert_above: spec.alert_above,
            alert_below: spec.alert_below,
        })
    }

    fn applies(&self, query: &str, labels: &Labels) -> bool {
        match &self.target {
            Target::Metric(m) => labels.metric_name() == m,
            Target::Selector(s) => s.matches(labels),
            Target::Query(q) => q == query,
        }
    }

    /// NaN is never in range and never alerts: it is "no value", not a breach.
    pub fn flags(&self, value: f64) -> Flags {
        if value.is_nan() {
            return Flags::default();
        }
        Flags {
            out_of_range: self.min.is_some_and(|m| value < m)
                || self.max.is_some_and(|m| value > m),
            alert: self.alert_above.is_some_and(|a| value > a)
                || self.alert_below.is_some_and(|b| value < b),
        }
    }

    pub fn describe(&self) -> String {
        match &self.target {
            Target::Metric(m) => format!("metric {m}"),
            Target::Selector(s) => format!("selector {s}"),
            Target::Query(q) => format!("query {q}"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Thresholds(Vec<Threshold>);

impl Thresholds {
    pub fn from_specs(specs: Vec<ThresholdSpec>) -> Result<Thresholds, Vec<String>> {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (i, s) in specs.into_iter().enumerate() {
            match Threshold::from_spec(s, i) {
                Ok(t) => ok.push(t),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Thresholds(ok))
        } else {
            Err(errors)
        }
    }

    /// The first threshold that applies to this series of this query.
    pub fn find(&self, query: &str, labels: &Labels) -> Option<&Threshold> {
        self.0.iter().find(|t| t.applies(query, labels))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ThresholdSpec {
        crate::model::yaml::from_str(yaml, "t").unwrap()
    }

    #[test]
    fn flags_follow_bounds() {
        let t = Threshold::from_spec(
            spec("metric: cpu\nmin: 0\nmax: 100\nalert_above: 80\nalert_below: 5"),
            0,
        )
        .unwrap();
        assert_eq!(t.flags(50.0), Flags::default());
        assert_eq!(
            t.flags(90.0),
            Flags {
                out_of_range: false,
                alert: true
            }
        );
        assert_eq!(
            t.flags(120.0),
            Flags {
                out_of_range: true,
                alert: true
            }
        );
        assert_eq!(
            t.flags(-1.0),
            Flags {
                out_of_range: true,
                alert: true
            }
        );
        assert_eq!(t.flags(80.0), Flags::default(), "alert_above is strict");
        assert_eq!(t.flags(f64::NAN), Flags::default());
        assert_eq!(
            t.flags(f64::INFINITY),
            Flags {
                out_of_range: true,
                alert: true
            }
        );
    }

    #[test]
    fn first_applicable_wins() {
        let ts = Thresholds::from_specs(vec![
            spec(
                r#"selector: '{__name__="cpu", host="a"}'
alert_above: 10"#,
            ),
            spec("metric: cpu\nalert_above: 90"),
            spec("query: rate(x[5m])\nmax: 1"),
        ])
        .unwrap();
        let a = Labels::from_pairs([("__name__", "cpu"), ("host", "a")]);
        let b = Labels::from_pairs([("__name__", "cpu"), ("host", "b")]);
        assert_eq!(ts.find("cpu", &a).unwrap().alert_above, Some(10.0));
        assert_eq!(ts.find("cpu", &b).unwrap().alert_above, Some(90.0));
        assert_eq!(
            ts.find("rate(x[5m])", &Labels::new()).unwrap().max,
            Some(1.0)
        );
        assert!(ts.find("other", &Labels::new()).is_none());
    }

    /// Issue 11, item 9: the pandas processor's thresholds, as JSON.
    #[test]
    fn vmselect_processor_shape() {
        let specs: Vec<ThresholdSpec> = crate::model::yaml::from_str(
            r#"[
  {"metric_name": "cpu_usage_percent", "min_value": 0, "max_value": 100, "alert_threshold": 80},
  {"metric_name": "response_time_seconds", "min_value": null, "max_value": 60, "alert_threshold": 5.0}
]"#,
            "thresholds.json",
        )
        .unwrap();
        let ts = Thresholds::from_specs(specs).unwrap();
        let cpu = Labels::from_pairs([("__name__", "cpu_usage_percent")]);
        let t = ts.find("q", &cpu).unwrap();
        assert_eq!(
            (t.min, t.max, t.alert_above),
            (Some(0.0), Some(100.0), Some(80.0))
        );
        assert_eq!(t.flags(80.0), Flags::default(), "exceeds: strictly above");
        assert_eq!(
            t.flags(80.5),
            Flags {
                out_of_range: false,
                alert: true
            }
        );
        assert!(t.flags(-0.5).out_of_range);
        let rt = ts
            .find(
                "q",
                &Labels::from_pairs([("__name__", "response_time_seconds")]),
            )
            .unwrap();
        assert_eq!((rt.min, rt.max), (None, Some(60.0)));
        assert!(rt.flags(61.0).out_of_range && rt.flags(61.0).alert);
    }

    #[test]
    fn bad_specs_are_all_reported() {
        let errs = Thresholds::from_specs(vec![
            spec("min: 1"),
            spec("metric: a"),
            spec("metric: a\nmin: 5\nmax: 1"),
            spec("selector: '{a=~\"(\"}'\nmax: 1"),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("thresholds[0]") && errs[0].contains("exactly one"));
        assert!(errs[1].contains("at least one"));
        assert!(errs[2].contains("greater than"));
        assert!(errs[3].contains("thresholds[3].selector"));
    }
}
