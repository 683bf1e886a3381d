//! Running `spillway gather` and `spillway import`: the jobs go through
//! [`crate::bundle::drive`] (the web UI's driver too) with a progress bar on
//! a terminal or a log line every few seconds otherwise; the inspection
//! modes (`--validate-only`, `--discover`, `--sample`, `--verify`) answer
//! at once.

use super::print::{
    print_discovery, print_export_outcome, print_import_outcome, print_sample, print_validate,
    print_verify,
};
use super::{client_config, fail, obfuscation, opt_duration, range, GatherArgs, ImportArgs};
use crate::bundle::{
    self, drive, BundleError, ExportJob, ExportParams, ExportProgress, ExportStage, ImportJob,
    ImportParams, ImportProgress, ImportStage, SafetyLimits,
};
use crate::client::{Client, ClientConfig};
use crate::model::size::format_size_short;
use crate::model::time::format_duration;
use crate::source::vm_export::ExportMethod;
use crate::transform::obfuscate::ObfuscationOptions;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
        batch_samples: args.batch_samples,
        native: !args.json_export,
        obfuscation: obf,
        obfuscation_map: args.obfuscation_map.clone(),
        out_dir,
        staging_dir: args.staging.clone(),
        resume: args.resume,
    };
    let staging = params.staging();
    let mut view = View::new(quiet, "windows", false);
    let result = drive(
        |tx| {
            let h = ExportJob::start(params, tx);
            (h.cancel_token(), h.wait())
        },
        std::future::pending(),
        |p: ExportProgress| view.export(&p),
    )
    .await;
    view.finish();
    match result {
        Ok(o) => {
            print_export_outcome(&o);
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
            b.set_message(format!(
                "{} samples, {}",
                p.samples,
                format_size_short(p.bytes)
            ));
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
    params.concurrency = usize::from(args.concurrency);
    params.resume = args.resume;
    params.shift_to_now = args.shift_to_now;
    params.dry_run = args.dry_run;
    params.wire = args.wire_format;
    let state_path = params.state_path();
    let mut view = View::new(quiet, "bytes", true);
    let result = drive(
        |tx| {
            let h = ImportJob::start(params, tx);
            (h.cancel_token(), h.wait())
        },
        std::future::pending(),
        |p: ImportProgress| view.import(&p),
    )
    .await;
    view.finish();
    match result {
        Ok(o) => {
            print_import_outcome(&o);
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
