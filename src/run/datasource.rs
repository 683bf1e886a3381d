//! The datasource side of evaluation: which API a rule's query goes to and
//! with which parameters, the way vmalert's `datasource` package sends them.
//!
//! * `type: prometheus` (PromQL/MetricsQL): `/api/v1/query` with `query`,
//!   `time` and `step` (vmalert's `-datasource.queryStep`, 5m by default, or
//!   the group interval when it is unset); ranges go to `/api/v1/query_range`
//!   with `step` = the group interval (and `nocache=1`, so VictoriaMetrics
//!   does not move `start`/`end` to its cache grid).
//! * `type: vlogs` (LogsQL): `/select/logsql/stats_query` with `query` and
//!   `time`, plus `start`/`end` = the last interval when the query has no
//!   `_time` filter; ranges go to `stats_query_range`, refused for queries
//!   with a `_time` filter as vmalert refuses them.
//! * Group `params` replace parameters of the same name, group `headers`
//!   replace the client's headers of the same name, per request.
//!
//! [`Datasource`] is the seam the engine queries through, so unit tests can
//! answer with a function instead of a server.

use crate::client::{
    duration_param, logsql_has_time_filter, Client, ClientError, InstantAnswer, QueryForm,
    SeriesStream,
};
use crate::run::rules::{Group, RuleType};
use futures_util::future::BoxFuture;
use std::time::Duration;

/// Default of vmalert's `-datasource.queryStep`.
pub const DEFAULT_QUERY_STEP: Duration = Duration::from_secs(300);

/// One rule's query with what its group adds.
#[derive(Clone, Debug)]
pub struct RuleQuery {
    pub rule_type: RuleType,
    pub expr: String,
    /// The group's evaluation interval (ms): `step` of range queries, the
    /// default `step` of instant ones, the bound of LogsQL queries.
    pub interval_ms: i64,
    /// Group `params`, flattened in order.
    pub params: Vec<(String, String)>,
    /// Group `headers`.
    pub headers: Vec<(String, String)>,
}

impl RuleQuery {
    pub fn new(group: &Group, expr: &str, interval_ms: i64) -> RuleQuery {
        RuleQuery {
            rule_type: group.rule_type,
            expr: expr.to_string(),
            interval_ms,
            params: group
                .params
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            headers: group
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    }
}

/// A failed query. `unreachable` marks failures that may pass (connection
/// errors, timeouts, 5xx, 429 after the client's retries): the engine keeps
/// the timestamp and evaluates it again once the datasource answers.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
    pub unreachable: bool,
}

impl QueryError {
    pub fn new(message: impl Into<String>, unreachable: bool) -> Self {
        QueryError {
            message: message.into(),
            unreachable,
        }
    }
}

impl From<ClientError> for QueryError {
    fn from(e: ClientError) -> Self {
        QueryError {
            unreachable: e.is_retriable(),
            message: e.to_string(),
        }
    }
}

/// Where rule queries go.
pub trait Datasource: Send + Sync {
    /// `Err` with the reason when groups of this type cannot be evaluated.
    fn supports(&self, rule_type: RuleType) -> Result<(), String>;

    /// Instant query at `ts_ms`.
    fn instant<'a>(
        &'a self,
        q: &'a RuleQuery,
        ts_ms: i64,
    ) -> BoxFuture<'a, Result<InstantAnswer, QueryError>>;

    /// Range query over `[start, end]` with `step` = the group interval.
    fn range<'a>(
        &'a self,
        q: &'a RuleQuery,
        start_ms: i64,
        end_ms: i64,
    ) -> BoxFuture<'a, Result<SeriesStream, QueryError>>;
}

/// The real datasources: a Prometheus-compatible one and, optionally,
/// VictoriaLogs.
#[derive(Clone, Debug)]
pub struct ClientDatasource {
    prometheus: Option<Client>,
    vlogs: Option<Client>,
    query_step: Option<Duration>,
}

impl ClientDatasource {
    pub fn new(prometheus: Option<Client>, vlogs: Option<Client>) -> Self {
        ClientDatasource {
            prometheus,
            vlogs,
            query_step: Some(DEFAULT_QUERY_STEP),
        }
    }

    /// vmalert's `-datasource.queryStep`; `None` (or zero) sends the group
    /// interval instead.
    pub fn with_query_step(mut self, step: Option<Duration>) -> Self {
        self.query_step = step.filter(|s| !s.is_zero());
        self
    }

    /// The form of an instant PromQL query.
    pub fn prometheus_instant_form(&self, q: &RuleQuery, ts_ms: i64) -> QueryForm {
        let step_ms = self
            .query_step
            .map(|s| s.as_millis() as i64)
            .unwrap_or(q.interval_ms);
        let mut base = vec![
            ("query".to_string(), q.expr.clone()),
            ("time".to_string(), crate::client::seconds_param(ts_ms)),
        ];
        if step_ms > 0 {
            base.push(("step".to_string(), duration_param(step_ms)));
        }
        let mut form = QueryForm::with_overrides(base, &q.params);
        form.headers = q.headers.clone();
        form
    }

    /// The form of a PromQL range query.
    pub fn prometheus_range_form(q: &RuleQuery, start_ms: i64, end_ms: i64) -> QueryForm {
        let base = vec![
            ("query".to_string(), q.expr.clone()),
            ("start".to_string(), crate::client::seconds_param(start_ms)),
            ("end".to_string(), crate::client::seconds_param(end_ms)),
            ("step".to_string(), duration_param(q.interval_ms)),
            ("nocache".to_string(), "1".to_string()),
        ];
        let mut form = QueryForm::with_overrides(base, &q.params);
        form.headers = q.headers.clone();
        form
    }

    fn client(&self, t: RuleType) -> Result<&Client, QueryError> {
        self.supports(t).map_err(|e| QueryError::new(e, false))?;
        Ok(match t {
            RuleType::Vlogs => self.vlogs.as_ref(),
            _ => self.prometheus.as_ref(),
        }
        .expect("checked by supports"))
    }
}

impl Datasource for ClientDatasource {
    fn supports(&self, rule_type: RuleType) -> Result<(), String> {
        match rule_type {
            RuleType::Prometheus if self.prometheus.is_some() => Ok(()),
            RuleType::Prometheus => Err(
                "groups of type `prometheus` need a datasource: set `datasource.url` in the config"
                    .into(),
            ),
            RuleType::Vlogs if self.vlogs.is_some() => Ok(()),
            RuleType::Vlogs => Err(
                "groups of type `vlogs` need a VictoriaLogs datasource: set `vlogs_datasource.url` in the config"
                    .into(),
            ),
            RuleType::Graphite => Err(
                "type `graphite` is not supported by spillway (no Graphite datasource); \
                 evaluate this group with vmalert or rewrite it as PromQL/MetricsQL"
                    .into(),
            ),
        }
    }

    fn instant<'a>(
        &'a self,
        q: &'a RuleQuery,
        ts_ms: i64,
    ) -> BoxFuture<'a, Result<InstantAnswer, QueryError>> {
        Box::pin(async move {
            let client = self.client(q.rule_type)?;
            match q.rule_type {
                RuleType::Vlogs => {
                    let bound = (!logsql_has_time_filter(&q.expr)).then_some(q.interval_ms);
                    Ok(client
                        .stats_query(&q.expr, ts_ms, bound, &q.params, &q.headers)
                        .await?)
                }
                _ => {
                    let form = self.prometheus_instant_form(q, ts_ms);
                    Ok(client.query_instant_form("/api/v1/query", &form).await?)
                }
            }
        })
    }

    fn range<'a>(
        &'a self,
        q: &'a RuleQuery,
        start_ms: i64,
        end_ms: i64,
    ) -> BoxFuture<'a, Result<SeriesStream, QueryError>> {
        Box::pin(async move {
            let client = self.client(q.rule_type)?;
            match q.rule_type {
                RuleType::Vlogs => {
                    if logsql_has_time_filter(&q.expr) {
                        return Err(QueryError::new(
                            format!(
                                "range query is not supported for LogsQL expression {:?} because it contains time filter. \
                                 Remove time filter from the expression and try again",
                                q.expr
                            ),
                            false,
                        ));
                    }
                    Ok(client
                        .stats_query_range(
                            &q.expr,
                            start_ms,
                            end_ms,
                            q.interval_ms,
                            &q.params,
                            &q.headers,
                        )
                        .await?)
                }
                _ => {
                    let form = Self::prometheus_range_form(q, start_ms, end_ms);
                    Ok(client
                        .query_range_form("/api/v1/query_range", &form)
                        .await?)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(params: &[(&str, &str)], headers: &[(&str, &str)]) -> RuleQuery {
        RuleQuery {
            rule_type: RuleType::Prometheus,
            expr: "up == 0".into(),
            interval_ms: 60_000,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn instant_form_as_vmalert_sends_it() {
        let ds = ClientDatasource::new(None, None);
        let f = ds.prometheus_instant_form(&query(&[], &[]), 1_700_000_040_000);
        assert_eq!(
            f.pairs,
            [
                ("query".to_string(), "up == 0".to_string()),
                ("time".to_string(), "1700000040".to_string()),
                ("step".to_string(), "300s".to_string()),
            ]
        );
        // Without -datasource.queryStep the interval is the step.
        let ds = ds.with_query_step(None);
        let f = ds.prometheus_instant_form(&query(&[], &[]), 0);
        assert_eq!(f.get("step"), Some("60s"));
        // Group params win and may repeat; headers ride along.
        let f = ds.prometheus_instant_form(
            &query(
                &[
                    ("step", "15s"),
                    ("extra_label", "a=1"),
                    ("extra_label", "b=2"),
                ],
                &[("AccountID", "3")],
            ),
            0,
        );
        assert_eq!(f.get("step"), Some("15s"));
        assert_eq!(
            f.pairs.iter().filter(|(k, _)| k == "extra_label").count(),
            2
        );
        assert_eq!(f.headers, [("AccountID".to_string(), "3".to_string())]);
    }

    #[test]
    fn range_form_steps_by_the_interval() {
        let f = ClientDatasource::prometheus_range_form(&query(&[], &[]), 0, 3_600_000);
        assert_eq!(f.get("step"), Some("60s"));
        assert_eq!(f.get("start"), Some("0"));
        assert_eq!(f.get("end"), Some("3600"));
        assert_eq!(f.get("nocache"), Some("1"));
    }

    #[test]
    fn unsupported_types_are_named() {
        let ds = ClientDatasource::new(None, None);
        assert!(ds
            .supports(RuleType::Graphite)
            .unwrap_err()
            .contains("graphite"));
        assert!(ds
            .supports(RuleType::Vlogs)
            .unwrap_err()
            .contains("vlogs_datasource.url"));
        assert!(ds
            .supports(RuleType::Prometheus)
            .unwrap_err()
            .contains("datasource.url"));
    }
}
