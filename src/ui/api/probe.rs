//! `validate`, `discover` and `sample` (with its chart): looking at a
//! server before exporting from it. Nothing is written.

use super::{ApiJson, ApiResult, Connection, Obfuscation, Selection};
use crate::bundle::{self, Discovery, SampleRow, ValidateReport};
use crate::client::Client;
use crate::source::vm_export::ExportMethod;
use crate::transform::obfuscate::{ObfuscationOptions, Obfuscator};
use crate::ui::AppState;
use axum::routing::{post, MethodRouter};
use axum::Json;
use serde::{Deserialize, Serialize};

pub(super) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/validate"),
    ("POST", "/api/discover"),
    ("POST", "/api/sample"),
];

pub(super) fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/api/validate" => post(validate),
        "/api/discover" => post(discover),
        "/api/sample" => post(sample),
        other => unreachable!("route {other} in ROUTES has no handler"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub connection: Connection,
}

async fn validate(ApiJson(req): ApiJson<ValidateRequest>) -> ApiResult<ValidateReport> {
    let client = req.connection.client()?;
    Ok(Json(bundle::validate(&client).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverRequest {
    pub connection: Connection,
    #[serde(default, flatten)]
    pub selection: Selection,
}

#[derive(Serialize)]
pub struct DiscoverResponse {
    pub from_ms: i64,
    pub to_ms: i64,
    #[serde(flatten)]
    pub discovery: Discovery,
}

async fn discover(ApiJson(req): ApiJson<DiscoverRequest>) -> ApiResult<DiscoverResponse> {
    let client = req.connection.client()?;
    let (from_ms, to_ms) = req.selection.range()?;
    let selectors = req.selection.selectors()?;
    let discovery = bundle::discover(&client, &selectors, from_ms, to_ms).await?;
    Ok(Json(DiscoverResponse {
        from_ms,
        to_ms,
        discovery,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRequest {
    pub connection: Connection,
    #[serde(default, flatten)]
    pub selection: Selection,
    #[serde(default)]
    pub obfuscation: Obfuscation,
    /// Rows of the preview table (default 20, at most 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Serialize)]
pub struct ChartSeries {
    pub name: String,
    /// `[timestamp_ms, value]`.
    pub points: Vec<(i64, f64)>,
}

#[derive(Serialize)]
pub struct SampleResponse {
    pub rows: Vec<SampleRow>,
    /// A few series over the range, obfuscated the same way, for the chart.
    pub chart: Vec<ChartSeries>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub notes: Vec<String>,
}

const CHART_SERIES: usize = 3;
const CHART_POINTS: i64 = 60;

async fn sample(ApiJson(req): ApiJson<SampleRequest>) -> ApiResult<SampleResponse> {
    let client = req.connection.client()?;
    let (from_ms, to_ms) = req.selection.range()?;
    let selectors = req.selection.selectors()?;
    let obf = req.obfuscation.options()?;
    let report = bundle::validate(&client).await?;
    let components = bundle::discover_components(&client, from_ms, to_ms).await;
    let method = if report.export_api {
        ExportMethod::Export
    } else {
        ExportMethod::QueryRange {
            step_ms: bundle::batch_window_ms(to_ms - from_ms, None),
        }
    };
    let limit = req.limit.unwrap_or(20).clamp(1, 200);
    let rows = bundle::sample(
        &client,
        &selectors,
        method,
        to_ms,
        limit,
        &obf,
        components.job_components(),
    )
    .await?;
    let mut notes = components.notes.clone();
    let chart = match chart(&client, &selectors, from_ms, to_ms, &obf, &components).await {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("chart: {e}"));
            Vec::new()
        }
    };
    Ok(Json(SampleResponse {
        rows,
        chart,
        from_ms,
        to_ms,
        notes,
    }))
}

/// The first few series of the selection over the range, obfuscated.
async fn chart(
    client: &Client,
    selectors: &[String],
    from_ms: i64,
    to_ms: i64,
    obf: &ObfuscationOptions,
    components: &Discovery,
) -> Result<Vec<ChartSeries>, crate::client::ClientError> {
    let union = selectors
        .iter()
        .map(|s| format!("({s})"))
        .collect::<Vec<_>>()
        .join(" or ");
    let step = ((to_ms - from_ms) / CHART_POINTS).max(1000);
    let mut stream = client
        .query_range(&union, from_ms, to_ms, step, &Default::default())
        .await?;
    let mut o = Obfuscator::new(obf.clone());
    o.set_components(components.job_components());
    let mut out = Vec::new();
    while let Some(s) = stream.recv().await {
        let mut s = s?;
        o.apply(&mut s.labels);
        out.push(ChartSeries {
            name: s.labels.to_string(),
            points: s
                .samples
                .iter()
                .filter(|p| p.value.is_finite())
                .map(|p| (p.timestamp_ms, p.value))
                .collect(),
        });
        if out.len() >= CHART_SERIES {
            break;
        }
    }
    Ok(out)
}
