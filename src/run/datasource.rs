//! The datasource side of evaluation: which API a rule's query goes to and
//! with which parameters, the way vmalert's `datasource` package sends them.
//!
//! * `type: prometheus` (PromQL/MetricsQL): `/api/v1/query` with `query`,
//!   `time` and `step` (vmalert's `-datasource.queryStep`, 5m by default, or
//!   the group interval when it is unset); ranges go to `/api/v1/query_range`
//!   with `step` = the group interval (and `nocache=1`, so VictoriaMetrics
//!   does not move `start`/`end` to its cache grid).
//! * `type: vlogs` (LogsQL), see [`VlogsWindow`]. A query without a `_time`
//!   filter reads the interval before its timestamp: by default exactly
//!   `[T - interval, T)`, asked as one `stats_query_range` bucket, which is
//!   also what `replay` asks for each timestamp, so live evaluation and
//!   backfill export the same values; with `vlogs_window: vmalert`,
//!   `/select/logsql/stats_query` with `start=T-interval&end=T` as vmalert
//!   sends it, which VictoriaLogs reads as `[T - interval, T + 1s)`. A query
//!   with a `_time` filter goes to `stats_query` at `time=T` unchanged;
//!   ranges of such queries are refused, as vmalert refuses them.
//!   Range answers are moved to the end of their buckets: the value at `T`
//!   is the bucket `[T - interval, T)`, as live evaluation sees it.
//! * Group `params` replace parameters of the same name, group `headers`
//!   replace the client's headers of the same name, per request.
//!
//! [`Datasource`] is the seam the engine queries through, so unit tests can
//! answer with a function instead of a server.

use crate::client::{
    duration_param, logsql_has_time_filter, Client, ClientError, InstantAnswer, QueryForm,
    SeriesStream, STATS_QUERY_RANGE_PATH,
};
use crate::model::Series;
use crate::run::rules::{Group, RuleType};
use futures_util::future::BoxFuture;
use std::time::Duration;

/// Default of vmalert's `-datasource.queryStep`.
pub const DEFAULT_QUERY_STEP: Duration = Duration::from_secs(300);

/// Which logs a live evaluation of a LogsQL rule at `T` reads (the run
/// config's `evaluation.vlogs_window`). Queries with their own `_time`
/// filter are not bounded either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VlogsWindow {
    /// `[T - interval, T)`: each log line is counted by exactly one
    /// evaluation. Asked as the one bucket `[T - interval, T)` of
    /// `stats_query_range`, the request `replay` makes for every timestamp,
    /// so both export the same: in particular a window without matching
    /// lines gives no point (a bare `count()` gives no 0), live and replayed.
    #[default]
    Exact,
    /// vmalert's `stats_query` with `start=T-interval&end=T`, which
    /// VictoriaLogs reads as `[T - interval, T + 1s)`: lines of the second
    /// at `T` are counted by two evaluations, and a bare `count()` over no
    /// lines gives 0 (replay still reads exact buckets).
    Vmalert,
}

impl VlogsWindow {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(VlogsWindow::Exact),
            "vmalert" => Ok(VlogsWindow::Vmalert),
            other => Err(format!(
                "{other:?} is not a window; want `exact` ([T-interval, T), the default) or `vmalert` ([T-interval, T+1s) as vmalert reads)"
            )),
        }
    }
}

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

    /// How far behind `now_ms` the source answers `probe` (a `time()`
    /// query) sent now, in ms; `None` when it cannot tell (see
    /// `run::margin`).
    fn answer_lag<'a>(&'a self, probe: &'a RuleQuery, now_ms: i64) -> BoxFuture<'a, Option<i64>> {
        let _ = (probe, now_ms);
        Box::pin(async { None })
    }
}

/// The real datasources: a Prometheus-compatible one and, optionally,
/// VictoriaLogs.
#[derive(Clone, Debug)]
pub struct ClientDatasource {
    prometheus: Option<Client>,
    vlogs: Option<Client>,
    query_step: Option<Duration>,
    vlogs_window: VlogsWindow,
}

impl ClientDatasource {
    pub fn new(prometheus: Option<Client>, vlogs: Option<Client>) -> Self {
        ClientDatasource {
            prometheus,
            vlogs,
            query_step: Some(DEFAULT_QUERY_STEP),
            vlogs_window: VlogsWindow::default(),
        }
    }

    /// How live evaluations of LogsQL rules bound their logs.
    pub fn with_vlogs_window(mut self, window: VlogsWindow) -> Self {
        self.vlogs_window = window;
        self
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

    /// Has the server parse `q` without reading data (`spillway rules check
    /// --datasource/--vlogs-datasource`): an instant query at the Unix
    /// epoch, and for LogsQL a window of zero length there, with the
    /// group's params and headers. `Err` carries the server's verdict, or
    /// why it could not be asked (`unreachable`).
    pub async fn check_query(&self, q: &RuleQuery) -> Result<(), QueryError> {
        let client = self.client(q.rule_type)?;
        match q.rule_type {
            RuleType::Vlogs => {
                client
                    .stats_query(&q.expr, 0, Some((0, 0)), &q.params, &q.headers)
                    .await?;
            }
            _ => {
                let form = self.prometheus_instant_form(q, 0);
                client.query_instant_form("/api/v1/query", &form).await?;
            }
        }
        Ok(())
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
                    let window = match self.vlogs_window {
                        _ if logsql_has_time_filter(&q.expr) => None,
                        VlogsWindow::Vmalert => Some((ts_ms - q.interval_ms, ts_ms)),
                        VlogsWindow::Exact => {
                            let stream = vlogs_buckets(client, q, ts_ms, ts_ms).await?;
                            return collect_instant(stream, ts_ms).await;
                        }
                    };
                    Ok(client
                        .stats_query(&q.expr, ts_ms, window, &q.params, &q.headers)
                        .await?)
                }
                _ => {
                    let form = self.prometheus_instant_form(q, ts_ms);
                    Ok(client.query_instant_form("/api/v1/query", &form).await?)
                }
            }
        })
    }

    fn answer_lag<'a>(&'a self, probe: &'a RuleQuery, now_ms: i64) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move {
            let client = self.prometheus.as_ref()?;
            if probe.rule_type != RuleType::Prometheus {
                return None;
            }
            let form = self.prometheus_instant_form(probe, now_ms);
            let answer = client
                .query_instant_form("/api/v1/query", &form)
                .await
                .ok()?;
            let used_s = answer.series.first()?.samples.first()?.value;
            if !used_s.is_finite() {
                return None;
            }
            Some(now_ms - (used_s * 1000.0).round() as i64)
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
                    vlogs_buckets(client, q, start_ms, end_ms).await
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

/// The values live evaluation gets at the grid timestamps `first..=last`
/// of a LogsQL rule: the buckets `[T - interval, T)` of one
/// `stats_query_range`, each moved from its start (where VictoriaLogs stamps
/// it) to `T`. `end` is `last - 1ms`, so the last bucket is whole and none
/// begins at `end` (VictoriaLogs cuts the data at `end` before bucketing);
/// `offset` puts the bucket edges on the group's grid.
async fn vlogs_buckets(
    client: &Client,
    q: &RuleQuery,
    first_ms: i64,
    last_ms: i64,
) -> Result<SeriesStream, QueryError> {
    let step = q.interval_ms.max(1);
    let start = first_ms - step;
    let inner = client
        .stats_query_range(
            &q.expr,
            start,
            last_ms - 1,
            step,
            start.rem_euclid(step),
            &q.params,
            &q.headers,
        )
        .await?;
    let url = client.endpoint().join(STATS_QUERY_RANGE_PATH).to_string();
    Ok(inner.map(move |s| to_bucket_ends(s, start, step, &url)))
}

/// Moves each point of a range answer from its bucket's start to its end.
/// A bucket off the grid means the server ignored `offset`.
fn to_bucket_ends(
    mut series: Series,
    start_ms: i64,
    step_ms: i64,
    url: &str,
) -> Result<Series, ClientError> {
    for p in &mut series.samples {
        if (p.timestamp_ms - start_ms).rem_euclid(step_ms) != 0 {
            return Err(ClientError::Decode {
                url: url.to_string(),
                reason: format!(
                    "a bucket starts at {}, off the group's grid (buckets of {} from {}); this VictoriaLogs ignores the `offset` parameter: upgrade it, or give the group an interval that divides a day and no eval_offset",
                    crate::model::time::format_rfc3339_ms(p.timestamp_ms),
                    duration_param(step_ms),
                    crate::model::time::format_rfc3339_ms(start_ms),
                ),
            });
        }
        p.timestamp_ms += step_ms;
    }
    Ok(series)
}

/// The instant answer at `ts_ms` out of a one-bucket range answer.
async fn collect_instant(
    mut stream: SeriesStream,
    ts_ms: i64,
) -> Result<InstantAnswer, QueryError> {
    let mut series = Vec::new();
    while let Some(item) = stream.recv().await {
        let mut s = item?;
        s.samples.retain(|p| p.timestamp_ms == ts_ms);
        if !s.samples.is_empty() {
            series.push(s);
        }
    }
    Ok(InstantAnswer {
        series,
        series_fetched: None,
    })
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
    fn range_points_move_to_the_end_of_their_bucket() {
        let s = Series::new(
            crate::model::Labels::from_pairs([("stats_result", "n")]),
            vec![
                crate::model::Sample::new(60_000, 1.0),
                crate::model::Sample::new(120_000, 2.0),
            ],
        );
        let moved = to_bucket_ends(s.clone(), 0, 60_000, "u").unwrap();
        let stamps: Vec<i64> = moved.samples.iter().map(|p| p.timestamp_ms).collect();
        assert_eq!(stamps, [120_000, 180_000]);
        // A server that ignored `offset` answers off the grid.
        let e = to_bucket_ends(s, 3_000, 60_000, "u")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ignores the `offset` parameter"), "{e}");
        assert_eq!(VlogsWindow::parse("vmalert"), Ok(VlogsWindow::Vmalert));
        assert!(VlogsWindow::parse("loose").unwrap_err().contains("`exact`"));
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
