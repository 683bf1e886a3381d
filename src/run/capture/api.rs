//! What the captures show: `/api/v1/captures` (keys, instances, limits
//! hit), the chart of one key, and the `/metrics` gauges and counters.

use super::*;

impl Captures {
    /// Refreshes the `/metrics` gauges.
    pub fn collect_metrics(&self) {
        let config = self.config();
        let mut open: BTreeMap<String, u64> = config
            .defs
            .iter()
            .map(|d| (d.name.to_string(), 0))
            .collect();
        for k in lock(&self.inner.keys).values() {
            if let Some(n) = open.get_mut(&k.capture) {
                *n += k.instances.len() as u64;
            }
        }
        for (capture, n) in open {
            metrics::gauge!("spillway_captures_open", "capture" => capture).set(n as f64);
        }
    }

    /// `GET /api/v1/captures`: open captures, then recent closed ones.
    pub fn api_json(&self) -> serde_json::Value {
        let config = self.config();
        let now = self.inner.clock.now_ms();
        let horizon = now - config.lag_ms;
        let keys = lock(&self.inner.keys);
        let mut open = Vec::new();
        let mut recent = Vec::new();
        for k in keys.values() {
            for i in &k.instances {
                open.push(instance_json(k, i, horizon));
            }
            for s in &k.history {
                recent.push((s.closed_at_ms, summary_json(k, s)));
            }
        }
        let order = |c: &serde_json::Value| {
            ["from", "name", "key"].map(|f| c[f].as_str().unwrap_or_default().to_string())
        };
        open.sort_by_key(order);
        recent.sort_by_key(|r| std::cmp::Reverse(r.0));
        recent.truncate(100);
        let (method, note) = read(&self.inner.source)
            .as_ref()
            .map(|s| s.method())
            .unwrap_or((None, None));
        serde_json::json!({
            "status": "success",
            "data": {
                "configured": config.defs.iter().map(|d| serde_json::json!({
                    "name": &*d.name,
                    "match": d.matches,
                    "destinations": d.destinations,
                    "before": d.before_ms / 1000,
                    "after": d.after_ms / 1000,
                })).collect::<Vec<_>>(),
                "source": {"method": method.map(Method::as_str), "note": note},
                "captures": open.into_iter().chain(recent.into_iter().map(|r| r.1)).collect::<Vec<_>>(),
            }
        })
    }

    /// `GET /api/v1/captures/chart?key=K`: the captured series of the
    /// key's latest capture, read back from the source at about 200 points.
    pub async fn chart_json(&self, key: &str) -> Result<serde_json::Value, String> {
        let config = self.config();
        let horizon = self.inner.clock.now_ms() - config.lag_ms;
        let (selectors, from, to) = {
            let keys = lock(&self.inner.keys);
            let k = keys
                .get(key)
                .ok_or_else(|| format!("no capture key {key:?}"))?;
            let (from, to) = match (k.instances.last(), k.history.last()) {
                (Some(i), _) => (i.from_ms, i.end_ms().min(horizon)),
                (None, Some(s)) => (s.from_ms, s.to_ms),
                (None, None) => return Err(format!("capture key {key:?} has no capture")),
            };
            (k.selectors.clone(), from, to)
        };
        let source = read(&self.inner.source).clone().ok_or("no datasource")?;
        let series = source
            .chart(&selectors, from, to.max(from + 1000), 10, 200)
            .await
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({
            "status": "success",
            "data": {
                "from": format_rfc3339_ms(from),
                "to": format_rfc3339_ms(to),
                "series": series.iter().map(|s| serde_json::json!({
                    "labels": s.labels.to_string(),
                    "points": s.samples.iter().filter(|p| p.value.is_finite()).map(|p| [p.timestamp_ms as f64, p.value]).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }
        }))
    }
}

fn instance_json(k: &KeyState, i: &Instance, horizon: i64) -> serde_json::Value {
    let state = if i.stopped {
        "stopped"
    } else if i.breaching() {
        "open"
    } else {
        "closing"
    };
    let end = i.end_ms();
    let copied = k.copied.covered_ms(i.from_ms, end);
    serde_json::json!({
        "name": k.capture,
        "key": k.key,
        "selectors": k.selectors,
        "state": state,
        "breaching": k.breaching.values().collect::<Vec<_>>(),
        "breach_start": format_rfc3339_ms(i.breach_start_ms),
        "breach_end": i.breach_end_ms.map(format_rfc3339_ms),
        "from": format_rfc3339_ms(i.from_ms),
        "to": if i.breaching() && !i.truncated.contains("max_duration") { None } else { Some(format_rfc3339_ms(end)) },
        "copied_seconds": copied / 1000,
        "pending_seconds": ((end.min(horizon.max(i.from_ms)) - i.from_ms) - copied).max(0) / 1000,
        "series": i.admitted.len(),
        "samples": i.samples,
        "refused_series": i.refused_series,
        "truncated": i.truncated,
        "last_error": k.last_error,
    })
}

fn summary_json(k: &KeyState, s: &state::Summary) -> serde_json::Value {
    serde_json::json!({
        "name": k.capture,
        "key": k.key,
        "selectors": k.selectors,
        "state": "closed",
        "breaching": [],
        "breach_start": format_rfc3339_ms(s.breach_start_ms),
        "breach_end": s.breach_end_ms.map(format_rfc3339_ms),
        "from": format_rfc3339_ms(s.from_ms),
        "to": format_rfc3339_ms(s.to_ms),
        "closed_at": format_rfc3339_ms(s.closed_at_ms),
        "series": s.series,
        "samples": s.samples,
        "truncated": s.truncated,
        "last_error": null,
    })
}

/// `GET /api/v1/captures` and the chart route.
pub fn api_router(captures: Option<Captures>) -> axum::Router {
    use axum::extract::Query;
    use axum::routing::get;
    #[derive(serde::Deserialize)]
    struct ChartQuery {
        key: String,
    }
    let list = captures.clone();
    axum::Router::new()
        .route(
            "/api/v1/captures",
            get(move || {
                let c = list.clone();
                async move {
                    axum::Json(match c {
                        Some(c) => c.api_json(),
                        None => serde_json::json!({"status": "success", "data": {"configured": [], "source": null, "captures": []}}),
                    })
                }
            }),
        )
        .route(
            "/api/v1/captures/chart",
            get(move |Query(q): Query<ChartQuery>| {
                let c = captures.clone();
                async move {
                    let Some(c) = c else {
                        return Err(crate::server::ApiError::BadRequest("no captures configured".into()));
                    };
                    c.chart_json(&q.key)
                        .await
                        .map(axum::Json)
                        .map_err(crate::server::ApiError::BadRequest)
                }
            }),
        )
}

pub(super) fn describe_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!("spillway_captures_opened_total", "Breach captures opened (a breach whose window overlaps an open capture joins it).");
        metrics::describe_counter!("spillway_captures_closed_total", "Breach captures whose window was copied after their breach ended.");
        metrics::describe_counter!("spillway_captures_truncated_total", "Breach captures that hit a limit: max_series, max_samples or max_duration.");
        metrics::describe_counter!("spillway_capture_samples_total", "Raw samples a capture handed to a destination (before the destination's relabeling).");
        metrics::describe_gauge!("spillway_captures_open", "Breach captures open now (breaching, or copying their after-part).");
        metrics::describe_counter!("spillway_capture_errors_total", "Breaches that opened no capture (reason bad_selector, max_breaching) and chunk copies that failed (reason copy; retried).");
    });
}
