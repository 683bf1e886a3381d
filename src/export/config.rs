//! `spillway export` options: one YAML file (`--config`) holding all of
//! them, overridden field by field by command-line flags, then checked into
//! [`ExportOptions`], which cannot hold an invalid combination.

use crate::client::{ClientConfig, ConnectionSpec};
use crate::model::range::{check_windows, Grid, RangeDefaults, RangeInput, RangeNames};
use crate::model::time::{format_duration, format_rfc3339_ms, now_ms, parse_duration};
use crate::model::yaml;
use crate::sink::file::{Format, PartitionBy};
use crate::transform::threshold::{ThresholdSpec, Thresholds};
use std::collections::BTreeSet;
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
    /// Parquet as a Hive-partitioned tree: `day`, `hour` or `metric`.
    pub partition_by: Option<String>,
    /// The fields that came from the command line, so that an error names
    /// `--since` or `since:` as the user wrote it.
    #[serde(skip)]
    pub flags: BTreeSet<&'static str>,
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
    /// `--step` or `step`, as the user gave it, for messages.
    pub step_name: String,
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
    /// Set only with the parquet format.
    pub partition_by: Option<PartitionBy>,
}

const DEFAULT_WINDOW_POINTS: i64 = 720;
/// The most evaluation points one `query_range` request may ask for
/// (VictoriaMetrics refuses more than 30,000 by default anyway).
pub const MAX_WINDOW_POINTS: i64 = 1_000_000;

impl ExportFile {
    pub fn load(path: &Path) -> Result<ExportFile, String> {
        yaml::from_file(path, "an export config").map_err(|e| e.message)
    }

    /// `since` when the value came from the config file, `--since` when it
    /// came from the command line or was not given (then a hint names the flag).
    fn name(&self, field: &'static str) -> String {
        let in_file = !self.flags.contains(field)
            && match field {
                "since" => self.since.is_some(),
                "from" => self.from.is_some(),
                "to" => self.to.is_some(),
                "step" => self.step.is_some(),
                "window" => self.window.is_some(),
                "lag" => self.lag.is_some(),
                "partition_by" => self.partition_by.is_some(),
                _ => false,
            };
        if in_file {
            field.to_string()
        } else {
            format!("--{field}")
        }
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
        self.flags.extend(over.flags.iter().copied());
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
            incremental,
            partition_by
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
        let dur =
            |field: &'static str, v: &Option<String>, errs: &mut Vec<String>| -> Option<Duration> {
                v.as_deref().and_then(|s| {
                    parse_duration(s)
                        .map_err(|e| errs.push(format!("{}: {e}", self.name(field))))
                        .ok()
                })
            };
        let step = dur("step", &self.step, &mut errs).unwrap_or(Duration::from_secs(60));
        let lag = dur("lag", &self.lag, &mut errs).unwrap_or(Duration::from_secs(60));
        // Bounded by the duration parser, far inside i64.
        let step_ms = crate::model::time::duration_ms(step);
        if step_ms <= 0 {
            errs.push(format!("{}: must be greater than zero", self.name("step")));
        }
        let window_points = self.window_points(step_ms, &mut errs);
        let [since_name, from_name, to_name] = ["since", "from", "to"].map(|f| self.name(f));
        let names = RangeNames {
            since: &since_name,
            from: &from_name,
            to: &to_name,
        };
        let (from_ms, to_ms) = match self.range_input().resolve(
            &names,
            &RangeDefaults {
                since: Duration::from_secs(3600),
                to_lag: lag,
            },
            now_ms(),
        ) {
            Ok(r) => (r.from_ms, r.to_ms),
            Err(e) => {
                errs.push(e.to_string());
                (0, 0)
            }
        };
        let to_is_now = self.to.is_none();
        if errs.is_empty() {
            if let Err(e) = self.check_requests(from_ms, to_ms, step_ms, window_points) {
                errs.push(e);
            }
        }
        let mut specs = self.thresholds.clone();
        if let Some(path) = &self.thresholds_file {
            match load_thresholds(path) {
                Ok(t) => specs.extend(t),
                Err(e) => errs.push(e),
            }
        }
        let thresholds = Thresholds::from_specs(specs).unwrap_or_else(|e| {
            errs.extend(e);
            Thresholds::default()
        });
        let step_name = self.name("step");
        let mut formats = Vec::new();
        let partition_text = self.partition_by.clone();
        let partition_name = match self.name("partition_by").as_str() {
            "--partition_by" => "--partition-by".to_string(),
            other => other.to_string(),
        };
        for f in self.format.unwrap_or_else(|| vec!["csv".into()]) {
            match f.parse::<Format>() {
                Ok(f) if !formats.contains(&f) => formats.push(f),
                Ok(_) => {}
                Err(e) => errs.push(format!("--format: {e}")),
            }
        }
        let partition_by = partition_by(
            partition_text.as_deref(),
            &partition_name,
            &formats,
            &mut errs,
        );
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(ExportOptions {
            client: client.expect("checked above"),
            step_name,
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
            partition_by,
        })
    }
}

/// `--partition-by` / `partition_by:`, valid only with the parquet format.
fn partition_by(
    text: Option<&str>,
    name: &str,
    formats: &[Format],
    errs: &mut Vec<String>,
) -> Option<PartitionBy> {
    let by = text?
        .parse::<PartitionBy>()
        .map_err(|e| errs.push(format!("{name}: {e}")))
        .ok()?;
    if !formats.contains(&Format::Parquet) {
        errs.push(format!(
            "{name} {by}: partitions apply to the parquet format only; add parquet to --format"
        ));
    }
    Some(by)
}

impl ExportFile {
    fn range_input(&self) -> RangeInput {
        RangeInput {
            since: self.since.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }

    /// `window:` as points per request: a count, or a duration divided by the step.
    fn window_points(&self, step_ms: i64, errs: &mut Vec<String>) -> i64 {
        let Some(w) = self.window.as_deref() else {
            return DEFAULT_WINDOW_POINTS;
        };
        let points = match w.trim().parse::<i64>() {
            Ok(n) if n > 0 => n,
            _ => match parse_duration(w) {
                Ok(d) if step_ms > 0 => (crate::model::time::duration_ms(d) / step_ms).max(1),
                _ => {
                    errs.push(format!(
                        "{}: {w:?} is neither a point count nor a duration",
                        self.name("window")
                    ));
                    return DEFAULT_WINDOW_POINTS;
                }
            },
        };
        if points > MAX_WINDOW_POINTS {
            errs.push(format!(
                "{}: {w} makes {points} points per request, more than the {MAX_WINDOW_POINTS} allowed",
                self.name("window")
            ));
            return DEFAULT_WINDOW_POINTS;
        }
        points
    }

    /// Refuses a range that would take more than `MAX_WINDOWS` requests per query.
    fn check_requests(
        &self,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
        points: i64,
    ) -> Result<(), String> {
        let Some(grid) = Grid::inward(from_ms, to_ms, step_ms) else {
            return Ok(());
        };
        check_windows(
            grid.windows(points.unsigned_abs()).remaining(),
            &format!(
                "the range {} .. {} at {} {}, {points} points per request,",
                format_rfc3339_ms(from_ms),
                format_rfc3339_ms(to_ms),
                self.name("step"),
                format_duration(Duration::from_millis(step_ms.unsigned_abs()))
            ),
            &format!(
                "use a larger {} or {}, or a shorter range",
                self.name("step"),
                self.name("window")
            ),
        )
    }
}

/// Reads a thresholds file (a list, or `thresholds:` holding one).
fn load_thresholds(path: &Path) -> Result<Vec<ThresholdSpec>, String> {
    let text = crate::model::input::read_config(path, "a thresholds file")
        .map_err(|e| format!("thresholds file: {e}"))?;
    let src = path.display().to_string();
    match yaml::from_str::<ThresholdsFile>(&text, &src) {
        Ok(ThresholdsFile::Wrapped { thresholds }) | Ok(ThresholdsFile::List(thresholds)) => {
            Ok(thresholds)
        }
        Err(e) => Err(explain_thresholds_error(&text, &src, e.message)),
    }
}

/// Untagged enums hide the real error; parse again as the list to get file:line:field.
fn explain_thresholds_error(text: &str, src: &str, untagged: String) -> String {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        #[allow(dead_code)]
        thresholds: Vec<ThresholdSpec>,
    }
    if text.trim().is_empty() {
        return format!("thresholds file {src} is empty: expected a list of thresholds, or `thresholds:` holding one");
    }
    let detail = if text.trim_start().starts_with(['-', '[']) {
        yaml::from_str::<Vec<ThresholdSpec>>(text, src).err()
    } else {
        yaml::from_str::<Wrapped>(text, src).err()
    };
    match detail {
        Some(e) => format!("thresholds file {}", e.message),
        None => format!("thresholds file {untagged}"),
    }
}
