//! `spillway gather` and `spillway import`: flags (doc comments are the
//! `--help`), their translation into [`crate::bundle`] parameters, and what
//! the commands print. The work is done by `crate::bundle`.

use super::ConnectionArgs;
use crate::bundle::{
    self, BundleError, Discovery, ExportJob, ExportParams, ExportProgress, ExportStage, ImportJob,
    ImportParams, ImportProgress, ImportStage, SafetyLimits, SampleRow, ValidateReport,
    VerifyReport,
};
use crate::client::{Client, ClientConfig};
use crate::model::range::{self, RangeDefaults, RangeInput};
use crate::model::size::{format_size_short, size_usize_arg};
use crate::model::time::{duration_ms, format_duration, format_rfc3339_ms, now_ms, parse_duration};
use crate::source::vm_export::ExportMethod;
use crate::transform::obfuscate::ObfuscationOptions;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  spillway gather --url http://127.0.0.1:8428 --job vmstorage --since 6h --obfuscate ips,jobs --out ./bundles
  spillway gather --url http://vmauth:8427/select/0/prometheus --username u --validate-only
  spillway gather --url http://127.0.0.1:8428 --sample 20 --obfuscate ips,jobs
  spillway gather --verify ./bundles/vmexport_3f9a1c2e_20240102_150405.zip

An interrupted gather keeps its finished windows in the staging directory; run the same
command with --resume to continue without fetching them again.")]
pub struct GatherArgs {
    /// Series selector to export (repeatable), e.g. 'up' or '{job="vmstorage"}'. Default: every series (of --job).
    #[arg(long = "selector", value_name = "S")]
    pub selectors: Vec<String>,
    /// Export only these jobs (repeatable).
    #[arg(long = "job", value_name = "J")]
    pub jobs: Vec<String>,
    /// Export the last DURATION up to --to or now (default 1h).
    #[arg(long, value_parser = crate::model::time::duration_text_arg)]
    pub since: Option<String>,
    /// Range start: RFC 3339, unix seconds, or now-DURATION.
    #[arg(long, value_parser = crate::model::time::time_text_arg, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Range end: RFC 3339, unix seconds, now or now-DURATION (default now).
    #[arg(long, value_parser = crate::model::time::time_text_arg, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Keep one point per STEP (the last of each interval); with the query_range fallback, its step.
    #[arg(long)]
    pub step: Option<String>,
    /// Window per request (default: 30s up to 15m of range, 1m up to 6h, else 5m); clamped to 30s..24h.
    #[arg(long)]
    pub batch_window: Option<String>,
    /// What to obfuscate: ips, jobs (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "ips,jobs")]
    pub obfuscate: Vec<String>,
    /// Replace the values of this label by salted hashes (repeatable).
    #[arg(long = "obfuscate-label", value_name = "K")]
    pub obfuscate_labels: Vec<String>,
    /// Remove this label from every series (repeatable).
    #[arg(long = "drop-label", value_name = "K")]
    pub drop_labels: Vec<String>,
    /// Write the original → obfuscated mapping here (kept local; never put in the bundle).
    #[arg(long, value_name = "FILE")]
    pub obfuscation_map: Option<PathBuf>,
    /// Where the bundle goes (default: current directory).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where finished windows wait until packed (default: <out>/spillway-staging).
    #[arg(long, value_name = "DIR")]
    pub staging: Option<PathBuf>,
    /// Continue the gather interrupted in the staging directory (with its range and windows).
    #[arg(long)]
    pub resume: bool,
    /// Only check the connection: reachability, auth, flavour, version, export API.
    #[arg(long)]
    pub validate_only: bool,
    /// Only list components and jobs with their series counts.
    #[arg(long)]
    pub discover: bool,
    /// Only preview N series (obfuscated as the bundle would be).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Print --validate-only / --discover / --sample / --verify results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Check a bundle (checksums, ZIP safety, every line) and exit.
    #[arg(long, value_name = "BUNDLE")]
    pub verify: Option<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:
  spillway import ./vmexport_3f9a1c2e_20240102_150405.zip --url http://127.0.0.1:8428 --shift-to-now

On failure the committed offset is saved in <BUNDLE>.import-state.json beside the bundle;
run the same command with --resume to continue from it.")]
pub struct ImportArgs {
    /// The bundle: a .zip written by `spillway gather` or vmgather, or a .jsonl file.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Bytes per /api/v1/import request, cut at line ends (e.g. 512KiB, 4MiB; 1KiB to 64MiB).
    #[arg(long, default_value = "512KiB", value_parser = size_usize_arg)]
    pub chunk_size: usize,
    /// Continue an interrupted import from its saved offset.
    #[arg(long)]
    pub resume: bool,
    /// Move the bundle's time range so that it ends now.
    #[arg(long)]
    pub shift_to_now: bool,
    /// Check the bundle and show what would be imported; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

fn client_config(conn: &ConnectionArgs) -> Result<ClientConfig, String> {
    conn.to_spec().to_client_config("connection").map_err(|e| {
        if e.contains("url is missing") {
            "--url is required: the server, e.g. http://127.0.0.1:8428".to_string()
        } else {
            e.replace("connection.", "--")
        }
    })
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    crate::errln!("error: {msg}");
    ExitCode::from(2)
}

/// `--since/--from/--to`, read as every command reads them (`model::range`).
fn range(args: &GatherArgs) -> Result<(i64, i64), String> {
    let input = RangeInput {
        since: args.since.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let r = input
        .resolve(&range::FLAGS, &RangeDefaults::default(), now_ms())
        .map_err(|e| e.to_string())?;
    Ok((r.from_ms, r.to_ms))
}

fn opt_duration(flag: &str, v: &Option<String>) -> Result<Option<i64>, String> {
    v.as_deref()
        .map(|s| match parse_duration(s).map(duration_ms) {
            Ok(ms) if ms > 0 => Ok(ms),
            Ok(_) => Err(format!("{flag}: must be greater than zero")),
            Err(e) => Err(format!("{flag}: {e}")),
        })
        .transpose()
}

fn obfuscation(args: &GatherArgs) -> Result<ObfuscationOptions, String> {
    let mut o = ObfuscationOptions {
        labels: args.obfuscate_labels.clone(),
        drop_labels: args.drop_labels.clone(),
        ..Default::default()
    };
    o.set_kinds(&args.obfuscate)?;
    o.check()?;
    Ok(o)
}

/// Runs `spillway gather`.
pub async fn gather(args: GatherArgs, quiet: bool) -> ExitCode {
    if let Some(bundle) = &args.verify {
        return verify(bundle, args.json);
    }
    let client_cfg = match client_config(&args.connection) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (from_ms, to_ms) = match range(&args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (step_ms, window_ms) = match (
        opt_duration("--step", &args.step),
        opt_duration("--batch-window", &args.batch_window),
    ) {
        (Ok(s), Ok(w)) => (s, w),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let obf = match obfuscation(&args) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    if args.validate_only || args.discover || args.sample.is_some() {
        return inspect(&args, client_cfg, from_ms, to_ms, step_ms, obf).await;
    }
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
    let params = ExportParams {
        client: client_cfg,
        selectors: args.selectors.clone(),
        jobs: args.jobs.clone(),
        from_ms,
        to_ms,
        step_ms,
        batch_window_ms: window_ms,
        obfuscation: obf,
        obfuscation_map: args.obfuscation_map.clone(),
        out_dir,
        staging_dir: args.staging.clone(),
        resume: args.resume,
    };
    let staging = params.staging();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ExportProgress>(64);
    let handle = ExportJob::start(params, Some(tx));
    let mut view = View::new(quiet, "windows", false);
    let shown = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            view.export(&p);
        }
        view.finish();
    });
    let result = handle.wait().await;
    let _ = shown.await;
    match result {
        Ok(o) => {
            let m = &o.metadata;
            crate::outln!("bundle: {}", o.bundle.display());
            crate::outln!("sha256: {}  ({})", o.sha256, o.checksum_file.display());
            crate::outln!(
                "{} lines, {} samples, {} windows{}, {} via {}, {} in {}",
                m.metrics_count,
                m.samples_count.unwrap_or(0),
                o.windows,
                if o.resumed_windows > 0 {
                    format!(" ({} resumed)", o.resumed_windows)
                } else {
                    String::new()
                },
                human_bytes(o.archive_bytes),
                m.export_method.as_deref().unwrap_or("export"),
                m.source_flavour.as_deref().unwrap_or("unknown"),
                format_duration(Duration::from_millis(o.elapsed.as_millis() as u64)),
            );
            if m.obfuscated {
                crate::outln!(
                    "obfuscated: yes{}",
                    match &o.obfuscation_map {
                        Some(p) =>
                            format!(" (mapping written to {}, keep it private)", p.display()),
                        None => String::new(),
                    }
                );
            }
            if m.metrics_count == 0 {
                crate::errln!("note: the selectors matched no data in the range");
            }
            ExitCode::SUCCESS
        }
        Err(BundleError::Cancelled) => {
            crate::errln!(
                "interrupted; finished windows are kept in {}: continue with --resume",
                staging.display()
            );
            ExitCode::from(130)
        }
        Err(e) => {
            crate::errln!("error: {e}");
            if staging.join("gather.json").exists() {
                crate::errln!(
                    "  finished windows are kept in {}: fix the cause and continue with --resume",
                    staging.display()
                );
            }
            ExitCode::from(2)
        }
    }
}

async fn inspect(
    args: &GatherArgs,
    cfg: ClientConfig,
    from_ms: i64,
    to_ms: i64,
    step_ms: Option<i64>,
    obf: ObfuscationOptions,
) -> ExitCode {
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let report = match bundle::validate(&client).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.validate_only {
        if args.json {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        } else {
            print_validate(&report);
        }
        return ExitCode::SUCCESS;
    }
    let selectors = match bundle::build_selectors(&args.selectors, &args.jobs) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let discovery = match bundle::discover(&client, &selectors, from_ms, to_ms).await {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if args.discover {
        if args.json {
            let v = serde_json::json!({"validate": report, "discover": discovery});
            crate::outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            print_validate(&report);
            crate::outln!();
            print_discovery(&discovery);
        }
        return ExitCode::SUCCESS;
    }
    let n = args.sample.unwrap_or(10);
    let method = if report.export_api {
        ExportMethod::Export
    } else {
        ExportMethod::QueryRange {
            step_ms: step_ms.unwrap_or(bundle::batch_window_ms(to_ms - from_ms, None)),
        }
    };
    match bundle::sample(
        &client,
        &selectors,
        method,
        to_ms,
        n,
        &obf,
        discovery.job_components(),
    )
    .await
    {
        Ok(rows) if args.json => {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            print_sample(&rows);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn verify(bundle: &std::path::Path, json: bool) -> ExitCode {
    match bundle::verify_bundle(bundle, SafetyLimits::default()) {
        Ok(r) if json => {
            crate::outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print_verify(&r);
            crate::outln!("OK: the bundle is intact");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn print_validate(r: &ValidateReport) {
    let flavour = match r.backend {
        Some(b) => format!("{} (in front of {b})", r.flavour),
        None => r.flavour.to_string(),
    };
    table(&[
        vec!["url".into(), r.url.clone()],
        vec!["flavour".into(), flavour],
        vec![
            "version".into(),
            r.version.clone().unwrap_or_else(|| "unknown".into()),
        ],
        vec![
            "tenant".into(),
            r.tenant.clone().unwrap_or_else(|| "-".into()),
        ],
        vec![
            "export API".into(),
            if r.export_api {
                "yes"
            } else {
                "no (query_range fallback)"
            }
            .into(),
        ],
    ]);
    for n in &r.notes {
        crate::outln!("note: {n}");
    }
}

fn print_discovery(d: &Discovery) {
    let mut rows = vec![vec![
        "JOB".into(),
        "COMPONENT".into(),
        "INSTANCES".into(),
        "SERIES".into(),
    ]];
    for j in &d.jobs {
        rows.push(vec![
            j.job.clone(),
            j.component.clone().unwrap_or_else(|| "-".into()),
            j.instances.to_string(),
            j.series
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&rows);
    if d.jobs.is_empty() {
        crate::outln!("(no jobs found in the range)");
    }
    if !d.components.is_empty() {
        crate::outln!();
        let mut rows = vec![vec!["COMPONENT".into(), "JOBS".into(), "VERSIONS".into()]];
        for c in &d.components {
            rows.push(vec![
                c.name.clone(),
                c.jobs.join(", "),
                c.versions.join(", "),
            ]);
        }
        table(&rows);
    }
    for n in &d.notes {
        crate::outln!("note: {n}");
    }
}

fn print_sample(rows: &[SampleRow]) {
    let mut t = vec![vec![
        "METRIC".into(),
        "LABELS".into(),
        "VALUE".into(),
        "TIME".into(),
    ]];
    for r in rows {
        t.push(vec![
            r.labels.metric_name().to_string(),
            r.labels.format_without_name(),
            r.value.to_string(),
            format_rfc3339_ms(r.timestamp_ms),
        ]);
    }
    table(&t);
    if rows.is_empty() {
        crate::outln!("(no series in the last 5 minutes of the range)");
    }
}

fn print_verify(r: &VerifyReport) {
    let check = |c: Option<bool>, what: &str| match c {
        Some(true) => format!("ok ({what})"),
        Some(false) => "MISMATCH".into(),
        None => format!("not checked (no {what})"),
    };
    let range = match (r.min_ts, r.max_ts) {
        (Some(a), Some(b)) => format!("{} .. {}", format_rfc3339_ms(a), format_rfc3339_ms(b)),
        _ => "-".into(),
    };
    table(&[
        vec!["bundle".into(), r.path.display().to_string()],
        vec!["sha256".into(), r.archive_sha256.clone()],
        vec![
            "archive checksum".into(),
            check(r.archive_checksum, ".sha256 file"),
        ],
        vec![
            "metrics checksum".into(),
            check(r.metrics_checksum, "metrics_sha256 in metadata.json"),
        ],
        vec!["lines".into(), r.lines.to_string()],
        vec!["series".into(), r.series.to_string()],
        vec!["samples".into(), r.samples.to_string()],
        vec!["range".into(), range],
        vec!["metrics.jsonl".into(), human_bytes(r.bytes)],
    ]);
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        crate::outln!("{}", line.trim_end());
    }
}

pub fn human_bytes(n: u64) -> String {
    format_size_short(n)
}

/// A bar with ETA on a terminal, a log line every few seconds otherwise.
enum View {
    Bar(ProgressBar),
    Log { last: Option<Instant> },
    Silent,
}

impl View {
    fn new(quiet: bool, unit: &str, bytes: bool) -> View {
        if quiet {
            View::Silent
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let template = if bytes {
                "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes}, ETA {eta} {msg}"
                    .to_string()
            } else {
                format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit}, ETA {{eta}} {{msg}}")
            };
            bar.set_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            View::Bar(bar)
        } else {
            View::Log { last: None }
        }
    }

    /// Log lines at most every 2 s, plus every message and stage change.
    fn due(&mut self, force: bool) -> bool {
        match self {
            View::Log { last } => {
                let due = force || last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            _ => false,
        }
    }

    fn export(&mut self, p: &ExportProgress) {
        if let View::Bar(b) = self {
            b.set_length(p.windows_total);
            b.set_position(p.windows_done);
            b.set_message(format!("{} samples, {}", p.samples, human_bytes(p.bytes)));
            if let Some(m) = &p.message {
                b.println(m);
            }
            return;
        }
        let force = p.message.is_some()
            || p.stage != ExportStage::Exporting
            || p.windows_done == p.windows_total;
        if self.due(force) {
            if let Some(m) = &p.message {
                tracing::info!("{m}");
            }
            tracing::info!(
                stage = ?p.stage,
                windows = format!("{}/{}", p.windows_done, p.windows_total),
                lines = p.lines,
                samples = p.samples,
                bytes = p.bytes,
                eta = p.eta.map(|d| format_duration(Duration::from_secs(d.as_secs()))).unwrap_or_default(),
                "gather progress"
            );
        }
    }

    fn import(&mut self, p: &ImportProgress) {
        if let View::Bar(b) = self {
            b.set_length(p.bytes_total);
            b.set_position(p.bytes_done);
            b.set_message(format!("{:?}: {} samples", p.stage, p.samples).to_lowercase());
            if let Some(m) = &p.message {
                b.println(m);
            }
            return;
        }
        let force =
            p.message.is_some() || matches!(p.stage, ImportStage::Verifying | ImportStage::Done);
        if self.due(force) {
            if let Some(m) = &p.message {
                tracing::info!("{m}");
            }
            tracing::info!(
                stage = ?p.stage,
                bytes = format!("{}/{}", p.bytes_done, p.bytes_total),
                lines = p.lines,
                samples = p.samples,
                skipped_samples = p.skipped_samples,
                chunks = p.chunks,
                eta = p.eta.map(|d| format_duration(Duration::from_secs(d.as_secs()))).unwrap_or_default(),
                "import progress"
            );
        }
    }

    fn finish(&self) {
        if let View::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// Runs `spillway import`.
pub async fn import(args: ImportArgs, quiet: bool) -> ExitCode {
    let client_cfg = match client_config(&args.connection) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let chunk = args.chunk_size;
    let mut params = ImportParams::new(client_cfg, args.bundle.clone());
    params.chunk_bytes = chunk;
    params.resume = args.resume;
    params.shift_to_now = args.shift_to_now;
    params.dry_run = args.dry_run;
    let state_path = params.state_path();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ImportProgress>(64);
    let handle = ImportJob::start(params, Some(tx));
    let mut view = View::new(quiet, "bytes", true);
    let shown = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            view.import(&p);
        }
        view.finish();
    });
    let result = handle.wait().await;
    let _ = shown.await;
    match result {
        Ok(o) => {
            let c = &o.check;
            crate::outln!(
                "bundle: {} ({} lines, {} series, {} samples; checksums: archive {}, metrics.jsonl {})",
                o.bundle.display(),
                c.lines,
                c.series,
                c.samples,
                match c.archive_checksum {
                    Some(true) => "ok",
                    _ => "no .sha256 file",
                },
                match c.metrics_checksum {
                    Some(true) => "ok",
                    _ => "not in metadata",
                },
            );
            if o.shift_ms != 0 {
                crate::outln!(
                    "shifted by {} to end now",
                    format_duration(Duration::from_millis(o.shift_ms.unsigned_abs()))
                );
            }
            match (o.retention_cutoff_ms, &o.retention_source) {
                (Some(c), Some(src)) => crate::outln!(
                    "target retention ({src}): points before {} {} skipped: {} samples, {} whole lines",
                    format_rfc3339_ms(c),
                    if o.dry_run { "would be" } else { "were" },
                    o.skipped_samples,
                    o.skipped_lines
                ),
                _ => crate::outln!("target retention: unknown (nothing skipped)"),
            }
            let verb = if o.dry_run {
                "would import"
            } else {
                "imported"
            };
            crate::outln!(
                "{verb} {} samples in {} lines ({} chunks){}",
                o.samples_sent,
                o.lines_sent,
                o.chunks,
                if o.resumed_from > 0 {
                    format!(", resumed at byte {}", o.resumed_from)
                } else {
                    String::new()
                }
            );
            let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
            crate::outln!(
                "checked in {}, {} in {}, verified in {}",
                secs(o.check_elapsed),
                if o.dry_run { "planned" } else { "uploaded" },
                secs(o.upload_elapsed),
                secs(o.verify_elapsed)
            );
            match (o.verified, o.series_found) {
                (Some(true), Some(found)) => {
                    crate::outln!("verified: {found} series visible on the target, {} expected from the bundle", o.series_expected);
                    ExitCode::SUCCESS
                }
                (Some(false), _) => {
                    crate::errln!("warning: {}", o.verify_note.clone().unwrap_or_default());
                    ExitCode::from(1)
                }
                _ => {
                    if let Some(n) = &o.verify_note {
                        crate::outln!("verification: {n}");
                    }
                    if o.dry_run {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
            }
        }
        Err(BundleError::Cancelled) => {
            crate::errln!(
                "interrupted; the offset is saved in {}: continue with --resume",
                state_path.display()
            );
            ExitCode::from(130)
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn gather_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "gather",
            "--url",
            "http://x:1",
            "--selector",
            "up",
            "--job",
            "a",
            "--job",
            "b",
            "--since",
            "2h",
            "--obfuscate",
            "ips,jobs",
            "--obfuscate-label",
            "pod",
            "--drop-label",
            "x",
            "--obfuscation-map",
            "m.json",
            "--out",
            "o",
            "--staging",
            "s",
            "--resume",
            "--batch-window",
            "1m",
        ])
        .unwrap();
        let Command::Gather(g) = cli.command else {
            panic!("not gather")
        };
        assert_eq!(g.jobs, ["a", "b"]);
        assert_eq!(g.obfuscate, ["ips", "jobs"]);
        let o = obfuscation(&g).unwrap();
        assert!(o.ips && o.jobs && o.labels == ["pod"] && o.drop_labels == ["x"]);
        let (from, to) = range(&g).unwrap();
        assert_eq!(to - from, 7_200_000);
    }

    #[test]
    fn import_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "import",
            "b.zip",
            "--url",
            "http://x:1",
            "--tenant",
            "3:4",
            "--chunk-size",
            "1MiB",
            "--resume",
            "--shift-to-now",
            "--dry-run",
        ])
        .unwrap();
        let Command::Import(i) = cli.command else {
            panic!("not import")
        };
        assert!(i.resume && i.shift_to_now && i.dry_run);
        assert_eq!(i.chunk_size, 1 << 20);
        assert_eq!(
            client_config(&i.connection)
                .unwrap()
                .tenant
                .unwrap()
                .to_string(),
            "3:4"
        );
    }
}
