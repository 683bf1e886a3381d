//! `spillway export` options: one YAML file (`--config`) holding all of
//! them, overridden field by field by command-line flags, then checked into
//! [`ExportOptions`], which cannot hold an invalid combination.

use crate::client::{ClientConfig, ConnectionSpec};
use crate::model::time::{now_ms, parse_duration, parse_timestamp_ms};
use crate::model::yaml;
use crate::sink::file::Format;
use crate::transform::threshold::{ThresholdSpec, Thresholds};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The YAML file, every field optional; also what the flags fill in.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    #[serde(default)]
    pub datasource: ConnectionSpec,
    #[serde(default)]
    pub queries: Vec<String>,
    pub since: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
    /// Evaluation points per window (default 720) or a duration.
    pub window: Option<String>,
    /// How far behind now an open-ended range stops (default 1m), so points still arriving are not skipped.
    pub lag: Option<String>,
    #[serde(default)]
    pub thresholds: Vec<ThresholdSpec>,
    pub thresholds_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "formats")]
    pub format: Option<Vec<String>>,
    pub out: Option<PathBuf>,
    pub incremental: Option<PathBuf>,
}

fn formats<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(
        match <OneOrMany as serde::Deserialize>::deserialize(d)? {
            OneOrMany::One(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
            OneOrMany::Many(v) => v,
        },
    ))
}

/// A thresholds file: either `thresholds: [...]` or a bare list, in YAML or
/// JSON (the pandas processor's `[{"metric_name", ...}]` is such a list).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ThresholdsFile {
    Wrapped { thresholds: Vec<ThresholdSpec> },
    List(Vec<ThresholdSpec>),
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub client: ClientConfig,
    pub queries: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Whether `to` was given; if not, incremental runs end at now minus lag.
    pub to_is_now: bool,
    pub step_ms: i64,
    pub window_points: i64,
    pub thresholds: Thresholds,
    pub formats: Vec<Format>,
    pub out: PathBuf,
    pub incremental: Option<PathBuf>,
}

const DEFAULT_WINDOW_POINTS: i64 = 720;

impl ExportFile {
    pub fn load(path: &Path) -> Result<ExportFile, String> {
        yaml::from_file(path).map_err(|e| e.message)
    }

    /// Flags (`over`) win over the file, field by field.
    pub fn overlay(mut self, over: ExportFile) -> ExportFile {
        self.datasource = self.datasource.overlay(over.datasource);
        if !over.queries.is_empty() {
            self.queries = over.queries;
        }
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        // --since on the command line replaces a `from:` in the file, and the other way round.
        if over.since.is_some() && over.from.is_none() {
            self.from = None;
        }
        if over.from.is_some() && over.since.is_none() {
            self.since = None;
        }
        take!(
            since,
            from,
            to,
            step,
            window,
            lag,
            thresholds_file,
            format,
            out,
            incremental
        );
        if !over.thresholds.is_empty() {
            self.thresholds = over.thresholds;
        }
        self
    }

    /// Checks everything and reports every problem found, not just the first.
    pub fn check(self) -> Result<ExportOptions, Vec<String>> {
        let mut errs = Vec::new();
        let client = self
            .datasource
            .to_client_config("datasource")
            .map_err(|e| {
                errs.push(e.replace(
                    "datasource.url is missing",
                    "the datasource URL is missing (--url or datasource.url)",
                ))
            })
            .ok();
        if self.queries.is_empty() {
            errs.push(
                "no query given: use --query EXPR (repeatable) or `queries:` in the config".into(),
            );
        }
        if self.queries.iter().any(|q| q.trim().is_empty()) {
            errs.push("a query is empty".into());
        }
        let dur = |field: &str, v: &Option<String>, errs: &mut Vec<String>| -> Option<Duration> {
            v.as_deref().and_then(|s| {
                parse_duration(s)
                    .map_err(|e| errs.push(format!("{field}: {e}")))
                    .ok()
            })
        };
        let step = dur("step", &self.step, &mut errs).unwrap_or(Duration::from_secs(60));
        let since = dur("since", &self.since, &mut errs);
        let lag = dur("lag", &self.lag, &mut errs).unwrap_or(Duration::from_secs(60));
        let step_ms = step.as_millis() as i64;
        if step_ms <= 0 {
            errs.push("step: must be greater than zero".into());
        }
        let window_points = match self.window.as_deref() {
            None => DEFAULT_WINDOW_POINTS,
            Some(w) => match w.parse::<i64>() {
                Ok(n) if n > 0 => n,
                _ => match parse_duration(w) {
                    Ok(d) if step_ms > 0 => ((d.as_millis() as i64) / step_ms).max(1),
                    _ => {
                        errs.push(format!(
                            "window: {w:?} is neither a point count nor a duration"
                        ));
                        DEFAULT_WINDOW_POINTS
                    }
                },
            },
        };
        let ts = |field: &str, v: &Option<String>, errs: &mut Vec<String>| {
            v.as_deref().and_then(|s| {
                parse_timestamp_ms(s)
                    .map_err(|e| errs.push(format!("--{field}: {e}")))
                    .ok()
            })
        };
        let from = ts("from", &self.from, &mut errs);
        let to = ts("to", &self.to, &mut errs);
        let now = now_ms();
        let to_is_now = to.is_none();
        let to_ms = to.unwrap_or(now - lag.as_millis() as i64);
        let from_ms = match (from, since) {
            (Some(_), Some(_)) => {
                errs.push("use either --since or --from, not both".into());
                0
            }
            (Some(f), None) => f,
            (None, Some(s)) => to_ms - s.as_millis() as i64,
            (None, None) => to_ms - 3_600_000,
        };
        if from_ms > to_ms {
            errs.push(format!(
                "--from ({}) is after --to ({}): the range must run forward",
                crate::model::time::format_rfc3339_ms(from_ms),
                crate::model::time::format_rfc3339_ms(to_ms)
            ));
        }
        let mut specs = self.thresholds;
        if let Some(path) = &self.thresholds_file {
            match yaml::from_file::<ThresholdsFile>(path) {
                Ok(ThresholdsFile::Wrapped { thresholds })
                | Ok(ThresholdsFile::List(thresholds)) => specs.extend(thresholds),
                Err(e) => errs.push(explain_thresholds_error(path, e.message)),
            }
        }
        let thresholds = Thresholds::from_specs(specs).unwrap_or_else(|e| {
            errs.extend(e);
            Thresholds::default()
        });
        let mut formats = Vec::new();
        for f in self.format.unwrap_or_else(|| vec!["csv".into()]) {
            match f.parse::<Format>() {
                Ok(f) if !formats.contains(&f) => formats.push(f),
                Ok(_) => {}
                Err(e) => errs.push(format!("--format: {e}")),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(ExportOptions {
            client: client.expect("checked above"),
            queries: self.queries,
            from_ms,
            to_ms,
            to_is_now,
            step_ms,
            window_points,
            thresholds,
            formats,
            out: self.out.unwrap_or_else(|| PathBuf::from(".")),
            incremental: self.incremental,
        })
    }
}

/// Untagged enums hide the real error; parse again as the list to get file:line:field.
fn explain_thresholds_error(path: &Path, untagged: String) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        #[allow(dead_code)]
        thresholds: Vec<ThresholdSpec>,
    }
    let src = path.display().to_string();
    let detail = if text.trim_start().starts_with(['-', '[']) {
        yaml::from_str::<Vec<ThresholdSpec>>(&text, &src).err()
    } else {
        yaml::from_str::<Wrapped>(&text, &src).err()
    };
    match detail {
        Some(e) => format!("thresholds file {}", e.message),
        None => format!("thresholds file {untagged}"),
    }
}
