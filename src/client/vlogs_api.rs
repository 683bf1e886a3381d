//! VictoriaLogs stats API: `/select/logsql/stats_query` (instant) and
//! `/select/logsql/stats_query_range`, whose answers have the Prometheus
//! query-API shape and go through the same parsers.
//!
//! Two things are done the way vmalert does them (`datasource/client_vlogs.go`):
//! the stats function's result name, which VictoriaLogs returns as
//! `__name__`, becomes the label `stats_result` (one query may compute
//! several stats, so the name is kept rather than dropped); and a query
//! without a `_time` filter is bounded with the `start` / `end` parameters,
//! so an evaluation reads one interval of logs, not all of them (which
//! interval exactly is the caller's choice: see `run::datasource`).
//! Tenants travel as the `AccountID` / `ProjectID` headers VictoriaLogs
//! reads, like everywhere else.
//!
//! How VictoriaLogs reads `start` / `end` (v1.26, measured): both bound the
//! `_time` filter inclusively, at the precision they are written in, so
//! `end=1700000060` covers up to the end of that second and
//! `end=1700000059.999` up to the end of that millisecond. Range queries add
//! `_time:step` (shifted by `offset`) to the stats pipe's `by (...)`: each
//! bucket is stamped with its start, buckets are aligned to multiples of
//! `step` since the Unix epoch plus `offset`, and `end` cuts the data before
//! bucketing, so a bucket that starts at `end` holds only what `end` lets in.
//!
//! The lexer here ([`logsql_has_time_filter`], [`logsql_has_stats_pipe`])
//! reads just enough LogsQL for the checks the engine needs; the server
//! remains the judge of the syntax (`spillway rules check --vlogs-datasource`).

use super::prom_api::{seconds, InstantAnswer, QueryForm, SeriesStream};
use super::{duration_param, Client, ClientError};
use crate::model::{Labels, Series};

pub const STATS_QUERY_PATH: &str = "/select/logsql/stats_query";
pub const STATS_QUERY_RANGE_PATH: &str = "/select/logsql/stats_query_range";
/// The label that receives VictoriaLogs' `__name__` (vmalert's name for it).
pub const STATS_RESULT_LABEL: &str = "stats_result";

impl Client {
    /// `stats_query` evaluated at `time_ms`. `window` (`(start, end)` in ms,
    /// for queries without a `_time` filter, see [`logsql_has_time_filter`])
    /// adds `start` and `end`. `extra` parameters replace the defaults of the
    /// same name; `headers` replace the client's own.
    pub async fn stats_query(
        &self,
        expr: &str,
        time_ms: i64,
        window: Option<(i64, i64)>,
        extra: &[(String, String)],
        headers: &[(String, String)],
    ) -> Result<InstantAnswer, ClientError> {
        let form = stats_query_form(expr, time_ms, window, extra, headers);
        let mut answer = self.query_instant_form(STATS_QUERY_PATH, &form).await?;
        for s in &mut answer.series {
            rename_stats_result(&mut s.labels);
        }
        Ok(answer)
    }

    /// `stats_query_range` over `[start, end]` with `step` (buckets shifted
    /// by `offset_ms` from the epoch's multiples of `step`); series stream in
    /// with `__name__` already renamed to `stats_result`. Points carry the
    /// start of their bucket, as VictoriaLogs stamps them.
    #[allow(clippy::too_many_arguments)]
    pub async fn stats_query_range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        offset_ms: i64,
        extra: &[(String, String)],
        headers: &[(String, String)],
    ) -> Result<SeriesStream, ClientError> {
        let form =
            stats_query_range_form(expr, start_ms, end_ms, step_ms, offset_ms, extra, headers);
        let stream = self.query_range_form(STATS_QUERY_RANGE_PATH, &form).await?;
        Ok(stream.map(|mut s: Series| {
            rename_stats_result(&mut s.labels);
            Ok(s)
        }))
    }
}

/// The parameters of an instant stats query. Times are written in whole
/// seconds unless they fall between seconds (then with milliseconds), which
/// also decides how far VictoriaLogs extends `end` (see the module docs).
pub fn stats_query_form(
    expr: &str,
    time_ms: i64,
    window: Option<(i64, i64)>,
    extra: &[(String, String)],
    headers: &[(String, String)],
) -> QueryForm {
    let mut base = vec![
        ("query".to_string(), expr.to_string()),
        ("time".to_string(), seconds(time_ms)),
    ];
    if let Some((start, end)) = window {
        base.push(("start".to_string(), seconds(start)));
        base.push(("end".to_string(), seconds(end)));
    }
    let mut form = QueryForm::with_overrides(base, extra);
    form.headers = headers.to_vec();
    form
}

/// The parameters of a range stats query; `offset` is sent only when the
/// buckets are not on the epoch's multiples of `step` (older VictoriaLogs
/// versions do not know it).
pub fn stats_query_range_form(
    expr: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    offset_ms: i64,
    extra: &[(String, String)],
    headers: &[(String, String)],
) -> QueryForm {
    let mut base = vec![
        ("query".to_string(), expr.to_string()),
        ("start".to_string(), seconds(start_ms)),
        ("end".to_string(), seconds(end_ms)),
        ("step".to_string(), duration_param(step_ms)),
    ];
    let offset = offset_ms.rem_euclid(step_ms.max(1));
    if offset != 0 {
        base.push(("offset".to_string(), duration_param(offset)));
    }
    let mut form = QueryForm::with_overrides(base, extra);
    form.headers = headers.to_vec();
    form
}

/// Moves `__name__` to `stats_result`, as vmalert does with every series a
/// VictoriaLogs datasource returns.
pub fn rename_stats_result(labels: &mut Labels) {
    if let Some(name) = labels.remove(crate::model::labels::METRIC_NAME) {
        labels.set(STATS_RESULT_LABEL, name);
    }
}

/// Whether a LogsQL query restricts `_time` for the whole query, i.e. has a
/// `_time:` filter joined by AND at the top level of the filter part (before
/// the first `|` pipe). vmalert asks VictoriaLogs' own parser
/// (`HasGlobalTimeFilter`); no Rust LogsQL parser exists, so this reads just
/// enough of the syntax: quoted strings, parentheses, `{...}` stream
/// filters, `or`, and negation (`not`, `!`, `-`). A top-level `or` means the
/// time filter does not bound every branch, so the answer is `false`.
pub fn logsql_has_time_filter(query: &str) -> bool {
    let words = top_level_words(query);
    if words.iter().any(|w| w.eq_ignore_ascii_case("or")) {
        return false;
    }
    let mut negated = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        if w.eq_ignore_ascii_case("not") || w == "!" || w == "-" {
            negated = true;
            i += 1;
            continue;
        }
        let (neg, body) = match w.strip_prefix(['!', '-']) {
            Some(rest) => (true, rest),
            None => (false, w),
        };
        // `_time:5m`, or `_time :5m` / `_time: 5m` split by spaces.
        let is_time = body.starts_with("_time:")
            || (body == "_time" && words.get(i + 1).is_some_and(|n| n.starts_with(':')));
        if is_time && !negated && !neg {
            return true;
        }
        negated = false;
        i += 1;
    }
    false
}

/// The LogsQL stats functions, which may open a pipe without the `stats`
/// keyword (`error | count() as n` is `error | stats count() as n`).
const STATS_FUNCTIONS: &[&str] = &[
    "avg",
    "count",
    "count_empty",
    "count_uniq",
    "count_uniq_hash",
    "histogram",
    "max",
    "median",
    "min",
    "quantile",
    "rate",
    "rate_sum",
    "row_any",
    "row_max",
    "row_min",
    "sum",
    "sum_len",
    "uniq_values",
    "values",
];

/// Whether `query` is a stats query: a filter, then a `| stats ...` pipe
/// (or its short forms `| count() ...`, `| by (f) count()`), possibly
/// followed by more pipes (`| filter`, `| math`, ...). vmalert refuses
/// other queries at load (VictoriaLogs answers them with 422 "missing
/// `| stats ...` pipe"); this reads only the pipe structure, the server
/// judges the rest.
pub fn logsql_has_stats_pipe(query: &str) -> bool {
    let pipes = top_level_pipes(query);
    let Some((filter, rest)) = pipes.split_first() else {
        return false;
    };
    if filter.trim().is_empty() {
        return false;
    }
    rest.iter().any(|pipe| {
        let p = pipe.trim_start();
        let word: String = p
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = p[word.len()..].trim_start();
        let word = word.to_ascii_lowercase();
        word == "stats"
            || (word == "by" && after.starts_with('('))
            || (STATS_FUNCTIONS.contains(&word.as_str()) && after.starts_with('('))
    })
}

/// `query` cut at every `|` outside quotes, parentheses and braces.
fn top_level_pipes(query: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0usize;
    let mut chars = query.chars();
    while let Some(c) = chars.next() {
        let cur = out.last_mut().expect("never empty");
        match c {
            '"' | '\'' | '`' => {
                cur.push(c);
                while let Some(q) = chars.next() {
                    cur.push(q);
                    if q == '\\' && c != '`' {
                        if let Some(esc) = chars.next() {
                            cur.push(esc);
                        }
                    } else if q == c {
                        break;
                    }
                }
            }
            '(' | '{' => {
                depth += 1;
                cur.push(c);
            }
            ')' | '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            '|' if depth == 0 => out.push(String::new()),
            c => cur.push(c),
        }
    }
    out
}

/// The whitespace-separated words of the filter part of `query` that are
/// not inside parentheses or braces; quoted text stays inside its word.
fn top_level_words(query: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut chars = query.chars().peekable();
    let flush = |cur: &mut String, words: &mut Vec<String>, depth: usize| {
        if !cur.is_empty() {
            if depth == 0 {
                words.push(std::mem::take(cur));
            } else {
                cur.clear();
            }
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                cur.push(c);
                while let Some(q) = chars.next() {
                    cur.push(q);
                    if q == '\\' && c != '`' {
                        if let Some(esc) = chars.next() {
                            cur.push(esc);
                        }
                    } else if q == c {
                        break;
                    }
                }
            }
            '(' | '{' => {
                flush(&mut cur, &mut words, depth);
                depth += 1;
            }
            ')' | '}' => {
                flush(&mut cur, &mut words, depth);
                depth = depth.saturating_sub(1);
            }
            '|' if depth == 0 => break,
            c if c.is_whitespace() => flush(&mut cur, &mut words, depth),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut words, depth);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters() {
        for q in [
            "_time:5m level:error | stats count()",
            "level:error _time:5m | stats count()",
            "_time:[2024-01-01, 2024-01-02) error | stats count() c",
            "_time:>1h error | stats count()",
            "error AND _time:5m | stats count()",
            "_time: 5m error | stats count()",
            "{app=\"x|y\"} _time:5m | stats count()",
        ] {
            assert!(logsql_has_time_filter(q), "{q}");
        }
        for q in [
            "level:error | stats count()",
            "level:error | stats count() | filter _time:5m",
            "\"_time:5m\" error | stats count()",
            "(_time:5m or error) | stats count()",
            "_time:5m error or warn | stats count()",
            "not _time:5m | stats count()",
            "-_time:5m | stats count()",
            "!_time:5m | stats count()",
            "msg:_time | stats count()",
        ] {
            assert!(!logsql_has_time_filter(q), "{q}");
        }
    }

    #[test]
    fn forms() {
        // vmalert's window: whole seconds, so `end` covers its whole second.
        let f = stats_query_form(
            "error | stats count()",
            1_700_000_060_000,
            Some((1_700_000_000_000, 1_700_000_060_000)),
            &[],
            &[],
        );
        assert_eq!(f.get("time"), Some("1700000060"));
        assert_eq!(f.get("start"), Some("1700000000"));
        assert_eq!(f.get("end"), Some("1700000060"));
        // An end just before a second is written with its milliseconds.
        let f = stats_query_form(
            "error | stats count()",
            1_700_000_060_000,
            Some((1_700_000_000_000, 1_700_000_059_999)),
            &[],
            &[],
        );
        assert_eq!(f.get("end"), Some("1700000059.999"));
        let f = stats_query_form(
            "_time:5m | stats count()",
            1_700_000_060_000,
            None,
            &[],
            &[],
        );
        assert_eq!(f.get("start"), None);
        let f = stats_query_range_form("x | stats count()", 0, 3_600_000, 60_000, 0, &[], &[]);
        assert_eq!(f.get("step"), Some("60s"));
        assert_eq!(f.get("offset"), None);
        let f = stats_query_range_form("x | stats count()", 3_000, 66_999, 7_000, 3_000, &[], &[]);
        assert_eq!(f.get("offset"), Some("3s"));
        assert_eq!(f.get("end"), Some("66.999"));
    }

    #[test]
    fn stats_pipes() {
        for q in [
            "level:error | stats count()",
            "level:error | stats by (service) count() as n | filter n:>10",
            "* | extract \"ip=<ip> \" | stats by (ip) count() if (code:!~200) as failed| math failed / 2 as x",
            "error | count() as n",
            "error | by (host) count()",
            "error|STATS count()",
            "{app=\"a|b\"} error | stats count()",
        ] {
            assert!(logsql_has_stats_pipe(q), "{q}");
        }
        for q in [
            "level:error",
            "stats count(*) as requests",
            "service: \"nginx\"",
            "sum(up == 0 ) by (host)",
            "error | fields a, b",
            "\"a | stats count()\"",
            "msg:~\"x|stats count()\"",
            " | stats count()",
            "",
        ] {
            assert!(!logsql_has_stats_pipe(q), "{q}");
        }
    }

    #[test]
    fn stats_result_label() {
        let mut l = Labels::from_pairs([("__name__", "error_count"), ("service", "api")]);
        rename_stats_result(&mut l);
        assert_eq!(
            l.to_string(),
            r#"{service="api", stats_result="error_count"}"#
        );
    }
}
