//! Step 2 and 3 of a gather: what is there (components and jobs, series per
//! job) and what it looks like (a bounded preview, already obfuscated).
//!
//! Components come from `vm_app_version`: its `version` label starts with
//! the component (`vmstorage-20240412-...`, `victoria-metrics-...`); jobs
//! and instances from `up`; series per job from `count by (job)` over the
//! selected series. All are instant queries at the end of the range over
//! `last_over_time(...[range])`, so series seen anywhere in the range count,
//! and they work on VictoriaMetrics and Prometheus alike.

use super::BundleError;
use crate::client::{Client, QueryParams};
use crate::codec::parse_vm_json_line;
use crate::model::{Labels, Series};
use crate::source::vm_export::{ExportMethod, Flow, LineSink, VmExportSource};
use crate::transform::obfuscate::{ObfuscationOptions, Obfuscator};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Discovery {
    pub components: Vec<Component>,
    pub jobs: Vec<JobInfo>,
    /// Queries that failed (the rest is still useful).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Component {
    pub name: String,
    pub jobs: Vec<String>,
    pub versions: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct JobInfo {
    pub job: String,
    pub component: Option<String>,
    pub instances: u64,
    /// Series the selectors match for this job in the range.
    pub series: Option<u64>,
}

impl Discovery {
    /// Job → component, for naming obfuscated jobs.
    pub fn job_components(&self) -> HashMap<String, String> {
        self.jobs
            .iter()
            .filter_map(|j| Some((j.job.clone(), j.component.clone()?)))
            .collect()
    }

    /// Components of `jobs` (all when empty), sorted.
    pub fn components_of(&self, jobs: &[String]) -> Vec<String> {
        let set: BTreeSet<String> = self
            .jobs
            .iter()
            .filter(|j| jobs.is_empty() || jobs.contains(&j.job))
            .filter_map(|j| j.component.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// The component in a `vm_app_version` version string.
pub fn component_of_version(version: &str) -> Option<String> {
    // Cut before the build date (`-20240412-`) or the tag (`-v1.2.3`).
    let parts: Vec<&str> = version.split('-').collect();
    let cut = parts.iter().position(|p| {
        (p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit()))
            || (p.starts_with('v') && p[1..].starts_with(|c: char| c.is_ascii_digit()))
    })?;
    (cut > 0).then(|| parts[..cut].join("-"))
}

fn range_secs(from_ms: i64, to_ms: i64) -> i64 {
    ((to_ms - from_ms) / 1000).max(60)
}

/// Only the components (one cheap `vm_app_version` query), for a gather's
/// metadata and job names; [`discover`] adds instances and series counts.
pub async fn discover_components(client: &Client, from_ms: i64, to_ms: i64) -> Discovery {
    let mut d = Discovery::default();
    let (job_component, versions) = components(client, from_ms, to_ms, &mut d.notes).await;
    d.jobs = job_component
        .iter()
        .map(|(job, c)| JobInfo {
            job: job.clone(),
            component: Some(c.clone()),
            instances: 0,
            series: None,
        })
        .collect();
    d.components = group_components(&job_component, &versions);
    d
}

type Versions = BTreeMap<String, BTreeSet<String>>;

async fn components(
    client: &Client,
    from_ms: i64,
    to_ms: i64,
    notes: &mut Vec<String>,
) -> (BTreeMap<String, String>, Versions) {
    let range = range_secs(from_ms, to_ms);
    let mut job_component: BTreeMap<String, String> = BTreeMap::new();
    let mut versions: Versions = BTreeMap::new();
    let q = format!("max by (job, version) (last_over_time(vm_app_version[{range}s]))");
    match client.query(&q, to_ms, &QueryParams::default()).await {
        Ok(rows) => {
            for s in rows {
                let (Some(job), Some(c)) = (
                    s.labels.get("job"),
                    s.labels.get("version").and_then(component_of_version),
                ) else {
                    continue;
                };
                versions
                    .entry(c.clone())
                    .or_default()
                    .insert(s.labels.value("version").to_string());
                job_component.insert(job.to_string(), c);
            }
        }
        Err(e) => notes.push(format!("components (vm_app_version): {e}")),
    }
    (job_component, versions)
}

fn group_components(
    job_component: &BTreeMap<String, String>,
    versions: &Versions,
) -> Vec<Component> {
    let mut by_component: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (job, c) in job_component {
        by_component.entry(c.clone()).or_default().push(job.clone());
    }
    by_component
        .into_iter()
        .map(|(name, jobs)| Component {
            versions: versions
                .get(&name)
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default(),
            name,
            jobs,
        })
        .collect()
}

/// Components, jobs and series estimates for the selected series in `[from, to]`.
pub async fn discover(
    client: &Client,
    selectors: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Result<Discovery, BundleError> {
    let range = range_secs(from_ms, to_ms);
    let params = QueryParams::default();
    let mut d = Discovery::default();
    let (job_component, versions) = components(client, from_ms, to_ms, &mut d.notes).await;
    let mut instances: BTreeMap<String, u64> = BTreeMap::new();
    let q = format!("count by (job) (max by (job, instance) (last_over_time(up[{range}s])))");
    match client.query(&q, to_ms, &params).await {
        Ok(rows) => {
            for s in rows {
                if let (Some(job), Some(v)) = (s.labels.get("job"), s.samples.first()) {
                    instances.insert(job.to_string(), v.value as u64);
                }
            }
        }
        Err(e) => d.notes.push(format!("jobs (up): {e}")),
    }
    let mut series: BTreeMap<String, u64> = BTreeMap::new();
    for sel in selectors {
        let q = format!("count by (job) (last_over_time({sel}[{range}s]))");
        match client.query(&q, to_ms, &params).await {
            Ok(rows) => {
                for s in rows {
                    if let Some(v) = s.samples.first() {
                        *series.entry(s.labels.value("job").to_string()).or_default() +=
                            v.value as u64;
                    }
                }
            }
            Err(e) => d.notes.push(format!("series count for {sel}: {e}")),
        }
    }
    let jobs: BTreeSet<String> = instances
        .keys()
        .chain(series.keys())
        .chain(job_component.keys())
        .cloned()
        .collect();
    for job in jobs {
        d.jobs.push(JobInfo {
            component: job_component.get(&job).cloned(),
            instances: instances.get(&job).copied().unwrap_or(0),
            series: series.get(&job).copied(),
            job,
        });
    }
    d.components = group_components(&job_component, &versions);
    Ok(d)
}

/// One previewed series: its labels (obfuscated) and its latest sample.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SampleRow {
    pub labels: Labels,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// Up to `limit` series near the end of the range, obfuscated as the bundle
/// would be: read from the export API (first `limit` lines of the last five
/// minutes), or with `topk` when only the query API is there.
pub async fn sample(
    client: &Client,
    selectors: &[String],
    method: ExportMethod,
    to_ms: i64,
    limit: usize,
    obfuscation: &ObfuscationOptions,
    job_components: HashMap<String, String>,
) -> Result<Vec<SampleRow>, BundleError> {
    let limit = limit.clamp(1, 10_000);
    let series: Vec<Series> = match method {
        ExportMethod::Export => {
            struct Take(Vec<Series>, usize, Option<String>);
            impl LineSink for Take {
                fn line(&mut self, line: &[u8]) -> Result<Flow, String> {
                    match parse_vm_json_line(line) {
                        Ok(s) => self.0.push(s),
                        Err(e) => self.2 = Some(e.to_string()),
                    }
                    Ok(if self.0.len() >= self.1 {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    })
                }
            }
            let source = VmExportSource::new(client.clone(), selectors.to_vec(), method);
            let (take, r) = source
                .fetch_window(
                    to_ms - 300_000,
                    to_ms,
                    Take(Vec::new(), limit, None),
                    std::future::pending(),
                )
                .await;
            r?;
            take.0
        }
        ExportMethod::QueryRange { .. } => {
            let union = selectors
                .iter()
                .map(|s| format!("({s})"))
                .collect::<Vec<_>>()
                .join(" or ");
            let q = format!("topk({limit}, {union})");
            client.query(&q, to_ms, &QueryParams::default()).await?
        }
    };
    let mut obf = Obfuscator::new(obfuscation.clone());
    obf.set_components(job_components);
    let mut rows = Vec::new();
    for mut s in series.into_iter().take(limit) {
        let Some(last) = s.samples.last().copied() else {
            continue;
        };
        obf.apply(&mut s.labels);
        rows.push(SampleRow {
            labels: s.labels,
            timestamp_ms: last.timestamp_ms,
            value: last.value,
        });
    }
    rows.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_from_versions() {
        assert_eq!(
            component_of_version("vmstorage-20240412-093453-tags-v1.100.1-cluster-0-g1").as_deref(),
            Some("vmstorage")
        );
        assert_eq!(
            component_of_version("victoria-metrics-20230313-123456-tags-v1.79.5-0-gabc").as_deref(),
            Some("victoria-metrics")
        );
        assert_eq!(
            component_of_version("vmagent-v1.93.0").as_deref(),
            Some("vmagent")
        );
        assert_eq!(component_of_version(""), None);
        assert_eq!(component_of_version("custom"), None);
    }
}
