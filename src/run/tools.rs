//! The one-shot commands around `spillway run`, on the same config and
//! check path ([`Setup`]):
//!
//! - `spillway replay -c CONFIG --from T --to T`: evaluates the rules over a
//!   past range ([`replay`]) and routes what breaches through the run's
//!   global relabeling and destinations, queues included, with the original
//!   timestamps; then gives the destinations time to deliver.
//! - `spillway rules check FILES...`: checks rule files as `run` loads them,
//!   every file on its own, every problem with file:line; with
//!   `--datasource` / `--vlogs-datasource` the servers parse each query too.
//! - `spillway rules preview -c CONFIG`: evaluates every rule once, now
//!   ([`preview`]), and shows per destination the series it would receive,
//!   without sending anything.

use super::datasource::{ClientDatasource, Datasource, RuleQuery};
use super::replay::{replay, ReplayOptions, ReplayProgress, ReplayReport};
use super::route::{dry_route, dry_route_events, Pipeline};
use super::rules::load_files;
use super::rules::RuleType;
use super::setup::{load_options, Setup};
use super::{preview, PreviewRule, ResultSink};
use crate::client::{Client, ClientConfig};
use crate::model::range::{resolve_ends, FLAGS};
use crate::model::time::{format_rfc3339_ms, now_ms, TimeArg};
use crate::model::Series;
use crate::output::plural;
use crate::sink::destination::{queue_dir_name, DestinationStatus};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `spillway replay`.
#[derive(Clone, Debug)]
pub struct ReplayCommand {
    pub config: PathBuf,
    pub from: TimeArg,
    pub to: TimeArg,
    /// Only these groups (all when empty).
    pub groups: Vec<String>,
    /// Points per range request (vmalert's `-replay.maxDatapointsPerQuery`).
    pub max_datapoints_per_query: usize,
    /// How long to wait for the destinations to deliver at the end.
    pub drain_timeout: Duration,
    /// Replaces `storage.path` (e.g. while `spillway run` holds the queues).
    pub storage_path: Option<PathBuf>,
    /// Open breach captures for the breaches found (`None`: when the
    /// config has `captures:`).
    pub captures: Option<bool>,
    /// Replay only the groups this cluster member owns.
    pub cluster: super::cluster::ClusterFlags,
}

/// What a replay did, for the summary.
#[derive(Debug)]
pub struct ReplayOutcome {
    pub from_ms: i64,
    pub to_ms: i64,
    pub report: ReplayReport,
    /// What the breach captures copied, when they ran.
    pub captures: Option<super::capture::CaptureReport>,
    pub destinations: Vec<DestinationStatus>,
    pub elapsed: Duration,
}

impl ReplayOutcome {
    pub fn render(&self) -> String {
        let r = &self.report;
        let mut out = format!(
            "replayed {} .. {} in {:.1}s: {}, {}, {}, {} series, {} samples exported\n",
            format_rfc3339_ms(self.from_ms),
            format_rfc3339_ms(self.to_ms),
            self.elapsed.as_secs_f64(),
            plural(r.groups as u64, "group"),
            plural(r.rules as u64, "rule"),
            plural(r.requests, "range request"),
            r.series,
            r.samples,
        );
        for d in &self.destinations {
            let filtered = d.samples_dropped.get("relabel").copied().unwrap_or(0);
            let dropped: Vec<String> = d
                .samples_dropped
                .iter()
                .filter(|(k, n)| **k != "relabel" && **n > 0)
                .map(|(k, n)| format!("{n} dropped ({k})"))
                .collect();
            let _ = writeln!(
                out,
                "  destination {}: {} samples queued, {} delivered, {} still queued, {} not for it (relabeling){}",
                d.name,
                d.samples_queued,
                d.samples_sent,
                d.pending_samples,
                filtered,
                if dropped.is_empty() {
                    String::new()
                } else {
                    format!(", {}", dropped.join(", "))
                },
            );
        }
        if let Some(c) = &self.captures {
            let _ = writeln!(
                out,
                "  captures: {}, {} series, {} raw samples copied in {}",
                plural(c.captures, "capture"),
                c.series,
                c.samples,
                plural(c.chunks, "chunk"),
            );
            if let Some(m) = &c.method {
                let _ = writeln!(out, "  captures' source: {m}");
            }
            for t in &c.truncated {
                let _ = writeln!(out, "  capture truncated: {t}");
            }
            if c.pending_ms > 0 {
                let _ = writeln!(
                    out,
                    "  captures: {}s of data not copied yet (too recent; `spillway run` with the same storage.path continues them)",
                    c.pending_ms / 1000
                );
            }
        }
        if self.destinations.iter().any(|d| d.pending_samples > 0) {
            out.push_str(
                "  what is still queued is delivered by the next `spillway run` (or replay) with the same storage.path\n",
            );
        }
        for e in &r.errors {
            let _ = writeln!(out, "  failed: {e}");
        }
        out
    }
}

/// Runs `spillway replay`. `Err` holds config problems or a fatal error;
/// rules that failed are in the report (the others still ran).
pub async fn replay_command(
    opts: &ReplayCommand,
    progress: &dyn ReplayProgress,
) -> Result<ReplayOutcome, Vec<String>> {
    let started = std::time::Instant::now();
    let (from_ms, to_ms) = resolve_range(&opts.from, &opts.to)?;
    let path = opts.config.clone();
    let flags = opts.cluster.clone();
    let mut setup = tokio::task::spawn_blocking(move || Setup::load_with(&path, &flags))
        .await
        .map_err(|e| vec![format!("reading the config: {e}")])??;
    for w in &setup.warnings {
        tracing::warn!("{w}");
    }
    let groups = setup.select_groups(&opts.groups).map_err(|e| vec![e])?;
    if groups.is_empty() {
        let m = &setup.cluster.membership;
        let why = if setup.cluster.others.is_empty() {
            String::new()
        } else {
            format!(
                " owned by cluster member {} of {}; the other members own the other {}",
                m.member_num,
                m.members_count,
                setup.cluster.others.len()
            )
        };
        return Err(vec![format!(
            "{}: rule_files: no rule groups to replay{why}",
            setup.loaded.source
        )]);
    }
    // Refuse a range too long to replay before any queue directory is made.
    let check_opts = ReplayOptions {
        max_datapoints_per_query: opts.max_datapoints_per_query,
        engine: setup.engine.clone(),
        ..ReplayOptions::default()
    };
    super::replay::plan(&groups, from_ms, to_ms, &check_opts).map_err(|e| vec![e.to_string()])?;
    if let Some(dir) = &opts.storage_path {
        for d in &mut setup.pipeline.destinations {
            d.queue_dir = dir.join(queue_dir_name(&d.name));
        }
        setup.captures.state_dir = dir.join(super::capture::config::STATE_DIR);
    }
    if opts.captures == Some(true) && setup.captures.is_empty() {
        return Err(vec![format!(
            "--captures: {} has no `captures:` to open",
            setup.loaded.source
        )]);
    }
    let with_captures = opts.captures.unwrap_or(!setup.captures.is_empty());
    let config = setup.pipeline.clone();
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::open(config))
        .await
        .map_err(|e| vec![format!("opening destinations: {e}")])?
        .map_err(|e| {
            vec![format!(
                "opening destinations: {e}; if `spillway run` uses this storage.path, give replay its own with --storage.path DIR"
            )]
        })?;
    let pipeline = Arc::new(pipeline);
    pipeline.start();
    let captures = if with_captures {
        let c = super::capture::Captures::open(
            setup.captures.clone(),
            setup.capture_source.clone(),
            Arc::clone(&pipeline) as Arc<dyn super::capture::CaptureRouter>,
            Arc::new(super::SystemClock),
            super::capture::Mode::Batch,
        )
        .map_err(|e| vec![e.to_string()])?;
        pipeline.set_observer(Some(Arc::new(c.clone())));
        Some(c)
    } else {
        None
    };
    let replay_opts = ReplayOptions {
        max_datapoints_per_query: opts.max_datapoints_per_query,
        engine: setup.engine.clone(),
        ..ReplayOptions::default()
    };
    let sink: &dyn ResultSink = &*pipeline;
    let result = replay(
        &groups,
        &*setup.datasource,
        sink,
        from_ms,
        to_ms,
        &replay_opts,
        progress,
    )
    .await;
    progress.finish();
    let capture_report = match (&captures, &result) {
        (Some(c), Ok(_)) => {
            c.finish_breaches();
            tracing::info!("replay done; copying the raw data of the breaches found");
            Some(c.run_until_idle().await)
        }
        _ => None,
    };
    // Whatever happened, what was queued gets its chance to be delivered.
    tracing::info!(
        timeout = ?opts.drain_timeout,
        "replay done; waiting for the destinations to deliver"
    );
    pipeline.shutdown(opts.drain_timeout).await;
    let mut report = result.map_err(|e| vec![e.to_string()])?;
    if let Some(c) = &capture_report {
        report.errors.extend(c.errors.iter().cloned());
    }
    Ok(ReplayOutcome {
        from_ms,
        to_ms,
        report,
        captures: capture_report,
        destinations: pipeline.statuses(),
        elapsed: started.elapsed(),
    })
}

/// `--from`/`--to` against one `now`, checked as every command's range.
fn resolve_range(from: &TimeArg, to: &TimeArg) -> Result<(i64, i64), Vec<String>> {
    let r = resolve_ends(from, to, &FLAGS, now_ms()).map_err(|e| vec![e.to_string()])?;
    Ok((r.from_ms, r.to_ms))
}

/// `spillway rules check`.
#[derive(Clone, Debug)]
pub struct RulesCheck {
    /// Files or glob patterns, each checked on its own.
    pub files: Vec<String>,
    /// vmalert's `-rule.defaultRuleType`.
    pub default_rule_type: Option<String>,
    /// Have this Prometheus-compatible server parse every PromQL/MetricsQL expr.
    pub datasource: Option<String>,
    /// Have this VictoriaLogs parse every LogsQL expr.
    pub vlogs_datasource: Option<String>,
}

/// One file's verdict.
#[derive(Clone, Debug)]
pub struct FileCheck {
    pub name: String,
    /// `(groups, rules)` or every problem, each starting with `file:line:`.
    pub result: Result<(usize, usize), Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct CheckOutcome {
    pub files: Vec<FileCheck>,
}

impl CheckOutcome {
    pub fn failed(&self) -> usize {
        self.files.iter().filter(|f| f.result.is_err()).count()
    }

    /// Good files on stdout's text; problems are returned apart (stderr).
    pub fn render(&self) -> (String, String) {
        let (mut out, mut err) = (String::new(), String::new());
        for f in &self.files {
            match &f.result {
                Ok((g, r)) => {
                    let _ = writeln!(
                        out,
                        "{}: OK ({}, {})",
                        f.name,
                        plural(*g as u64, "group"),
                        plural(*r as u64, "rule")
                    );
                }
                Err(problems) => {
                    for p in problems {
                        let _ = writeln!(err, "{p}");
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "{} files checked: {} OK, {} with errors",
            self.files.len(),
            self.files.len() - self.failed(),
            self.failed()
        );
        (out, err)
    }
}

/// Checks every file (or pattern) on its own; `Err` only for bad options.
/// With `datasource` / `vlogs_datasource`, every expression of a file that
/// passed is also sent to that server once to be parsed (see
/// [`ClientDatasource::check_query`]), so syntax errors show before `run`.
pub async fn rules_check(opts: &RulesCheck) -> Result<CheckOutcome, String> {
    let load = load_options(opts.default_rule_type.as_deref())
        .map_err(|e| e.replace("evaluation.default_rule_type", "--rule-type"))?;
    let server = check_datasource(opts)?;
    let mut unreachable = Vec::new();
    let mut files = Vec::new();
    for pattern in &opts.files {
        let name = pattern.clone();
        let result = match super::rules::expand(pattern) {
            Ok(found) if found.is_empty() => Err(vec![format!(
                "{pattern}: no such file (nor files matching it)"
            )]),
            Err(e) => Err(vec![format!("{pattern}: {e}")]),
            Ok(_) => match load_files(std::slice::from_ref(pattern), &load) {
                Ok(groups) => {
                    let problems = match &server {
                        Some(ds) => server_check(ds, &groups, &mut unreachable).await,
                        None => Vec::new(),
                    };
                    if problems.is_empty() {
                        Ok((
                            groups.len(),
                            groups.iter().map(|g| g.rules.len()).sum::<usize>(),
                        ))
                    } else {
                        Err(problems)
                    }
                }
                Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
            },
        };
        files.push(FileCheck { name, result });
    }
    Ok(CheckOutcome { files })
}

/// The servers `--datasource` / `--vlogs-datasource` name, if any.
fn check_datasource(opts: &RulesCheck) -> Result<Option<ClientDatasource>, String> {
    let client = |flag: &str, url: &Option<String>| -> Result<Option<Client>, String> {
        url.as_ref()
            .map(|u| {
                Client::new(ClientConfig {
                    url: u.clone(),
                    timeout: Some(Duration::from_secs(30)),
                    ..ClientConfig::default()
                })
                .map_err(|e| format!("{flag}: {e}"))
            })
            .transpose()
    };
    let prometheus = client("--datasource", &opts.datasource)?;
    let vlogs = client("--vlogs-datasource", &opts.vlogs_datasource)?;
    if prometheus.is_none() && vlogs.is_none() {
        return Ok(None);
    }
    Ok(Some(ClientDatasource::new(prometheus, vlogs)))
}

/// Every expression of `groups` that `ds` can judge, parsed by the server;
/// one problem per rejected expression. A type whose server cannot be
/// reached is reported once (in `unreachable`) and not asked again.
async fn server_check(
    ds: &ClientDatasource,
    groups: &[super::rules::Group],
    unreachable: &mut Vec<RuleType>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for g in groups {
        if ds.supports(g.rule_type).is_err() || unreachable.contains(&g.rule_type) {
            continue;
        }
        for rule in &g.rules {
            let query = RuleQuery::new(g, &rule.expr, 0);
            let Err(e) = ds.check_query(&query).await else {
                continue;
            };
            let at = format!(
                "{}:{}: group {:?}, rule {:?}",
                g.file,
                rule.line,
                g.name,
                rule.name()
            );
            if e.unreachable {
                problems.push(format!(
                    "{at}: cannot have the query checked: {e}; the {} expressions were not checked by the server",
                    g.rule_type
                ));
                unreachable.push(g.rule_type);
                break;
            }
            problems.push(format!("{at}: the datasource rejects the query: {e}"));
        }
    }
    problems
}

/// `spillway rules preview`.
#[derive(Clone, Debug)]
pub struct RulesPreview {
    pub config: PathBuf,
    /// Only these groups (all when empty).
    pub groups: Vec<String>,
    /// Evaluate as if it were this time (default: now).
    pub at: Option<TimeArg>,
}

#[derive(Debug)]
pub struct PreviewOutcome {
    pub rules: Vec<PreviewRule>,
    /// Per destination in config order: name, type, URL, and its series.
    pub destinations: Vec<(String, String, String, Vec<Series>)>,
    /// Per destination, in the same order: the events an event destination
    /// would send (empty for metric destinations).
    pub events: Vec<Vec<String>>,
}

impl PreviewOutcome {
    pub fn errors(&self) -> usize {
        self.rules.iter().filter(|r| r.error.is_some()).count()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rules ({} evaluated once, nothing sent):",
            self.rules.len()
        );
        for r in &self.rules {
            let at = format_rfc3339_ms(r.at_ms);
            match &r.error {
                Some(e) => {
                    let _ = writeln!(out, "  {} / {} @ {at}: error: {e}", r.group, r.rule);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  {} / {} @ {at}: {} series",
                        r.group,
                        r.rule,
                        r.series.len()
                    );
                }
            }
        }
        for (d, (name, kind, url, series)) in self.destinations.iter().enumerate() {
            if let Some(events) = self
                .events
                .get(d)
                .filter(|_| crate::sink::event::EventKind::parse(kind).is_some())
            {
                let _ = writeln!(
                    out,
                    "\ndestination {name} ({kind} {url}) would receive {} events:",
                    events.len()
                );
                for e in events {
                    for line in e.lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
                continue;
            }
            let _ = writeln!(
                out,
                "\ndestination {name} ({kind} {url}) would receive {} series:",
                series.len()
            );
            let mut lines: Vec<String> = series
                .iter()
                .map(|s| {
                    let v = s
                        .samples
                        .last()
                        .map(|p| {
                            if p.is_stale() {
                                "stale".to_string()
                            } else {
                                p.value.to_string()
                            }
                        })
                        .unwrap_or_default();
                    format!("  {} {v}", s.labels)
                })
                .collect();
            lines.sort();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

/// Runs `spillway rules preview`.
pub async fn rules_preview(opts: &RulesPreview) -> Result<PreviewOutcome, Vec<String>> {
    let path = opts.config.clone();
    let setup = tokio::task::spawn_blocking(move || Setup::load(&path))
        .await
        .map_err(|e| vec![format!("reading the config: {e}")])??;
    for w in &setup.warnings {
        tracing::warn!("{w}");
    }
    let groups = setup.select_groups(&opts.groups).map_err(|e| vec![e])?;
    let at = match &opts.at {
        Some(t) => t
            .resolve(now_ms())
            .map_err(|e| vec![format!("--at: {e}")])?,
        None => now_ms(),
    };
    let rules = preview(&groups, &*setup.datasource, &setup.engine, at)
        .await
        .map_err(|e| {
            e.to_string()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })?;
    let all: Vec<Series> = rules.iter().flat_map(|r| r.series.clone()).collect();
    let routed = dry_route(&setup.pipeline, all);
    let batches: Vec<crate::model::ExportBatch> = rules.iter().map(|r| r.export.clone()).collect();
    let events = dry_route_events(&setup.pipeline, &batches);
    let destinations = setup
        .pipeline
        .destinations
        .iter()
        .zip(routed)
        .map(|(d, (_, series))| {
            let url = match &d.event {
                Some(e) => e.display_target(&d.client.url),
                None => crate::client::Endpoint::parse(&d.client.url)
                    .map(|(e, _)| e.display_at(&d.kind.request_path(&d.client.url)))
                    .unwrap_or_else(|_| "<invalid url>".into()),
            };
            (d.name.clone(), d.kind.as_str().to_string(), url, series)
        })
        .collect();
    Ok(PreviewOutcome {
        rules,
        destinations,
        events,
    })
}
