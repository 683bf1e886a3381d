//! The run summary: per query series, samples, min/avg/max, out-of-range
//! and alert counts, duration and error; printed and saved as
//! `summary_<run>.json`.

use crate::model::Labels;
use crate::sink::file::FlaggedSample;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct QuerySummary {
    pub query: String,
    pub series: u64,
    pub samples: u64,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    pub out_of_range: u64,
    pub alerts: u64,
    pub windows: u64,
    pub duration_seconds: f64,
    pub from: String,
    pub to: String,
    pub error: Option<String>,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    counted: u64,
    #[serde(skip)]
    seen: HashSet<u64>,
}

impl QuerySummary {
    pub fn new(query: &str) -> Self {
        QuerySummary {
            query: query.to_string(),
            ..Default::default()
        }
    }

    /// Series are counted by identity across windows; a hash keeps memory small.
    pub fn add_series(&mut self, labels: &Labels) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut h);
        if self.seen.insert(h.finish()) {
            self.series += 1;
        }
    }

    /// Counts one series' samples; the average is divided once per call,
    /// not per sample.
    pub fn add_samples(&mut self, samples: &[FlaggedSample]) {
        for s in samples {
            self.count(s.value, s.out_of_range, s.alert);
        }
        if self.counted > 0 {
            self.avg = Some(self.sum / self.counted as f64);
        }
    }

    fn count(&mut self, value: f64, out_of_range: bool, alert: bool) {
        self.samples += 1;
        self.out_of_range += out_of_range as u64;
        self.alerts += alert as u64;
        if value.is_nan() {
            return;
        }
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        self.sum += value;
        self.counted += 1;
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub url: String,
    pub from: String,
    pub to: String,
    pub step_seconds: f64,
    pub formats: Vec<String>,
    pub files: Vec<String>,
    pub queries: Vec<QuerySummary>,
    pub samples: u64,
    pub alerts: u64,
    pub failed_queries: Vec<String>,
    pub duration_seconds: f64,
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_string(),
        |v| {
            format!("{v:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        },
    )
}

impl RunSummary {
    /// A plain table for the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "run {}  {} .. {}  step {}s\n",
            self.run_id, self.from, self.to, self.step_seconds
        ));
        out.push_str(&format!(
            "{:<40} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}  status\n",
            "query", "series", "samples", "min", "avg", "max", "out", "alerts", "secs"
        ));
        for q in &self.queries {
            let name: String = if q.query.chars().count() > 40 {
                q.query
                    .chars()
                    .take(39)
                    .chain(std::iter::once('…'))
                    .collect()
            } else {
                q.query.clone()
            };
            out.push_str(&format!(
                "{:<40} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8.2}  {}\n",
                name,
                q.series,
                q.samples,
                num(q.min),
                num(q.avg),
                num(q.max),
                q.out_of_range,
                q.alerts,
                q.duration_seconds,
                q.error
                    .as_deref()
                    .map_or("ok".to_string(), |e| format!("FAILED: {e}"))
            ));
        }
        out.push_str(&format!(
            "total: {} samples, {} alerts, {} failed queries, {:.2}s\n",
            self.samples,
            self.alerts,
            self.failed_queries.len(),
            self.duration_seconds
        ));
        for f in &self.files {
            out.push_str(&format!("wrote {f}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_ignore_nan_and_count_series_once() {
        let mut q = QuerySummary::new("x");
        let a = Labels::from_pairs([("a", "1")]);
        q.add_series(&a);
        q.add_series(&a);
        q.add_series(&Labels::from_pairs([("a", "2")]));
        let sample = |value, out_of_range, alert| FlaggedSample {
            timestamp_ms: 0,
            value,
            out_of_range,
            alert,
        };
        q.add_samples(&[sample(1.0, false, false), sample(3.0, true, true)]);
        q.add_samples(&[]);
        q.add_samples(&[sample(f64::NAN, false, false)]);
        assert_eq!(
            (q.series, q.samples, q.out_of_range, q.alerts),
            (2, 3, 1, 1)
        );
        assert_eq!((q.min, q.avg, q.max), (Some(1.0), Some(2.0), Some(3.0)));
    }
}
