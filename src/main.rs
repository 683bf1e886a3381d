//! The `spillway` binary: parse arguments, start logging, run the command,
//! map the outcome to an exit code (0 ok, 1 partial failure, 2 error, 130
//! stopped by SIGINT or SIGTERM; stdout's reader going away is no error).

use clap::Parser;
use spillway::cli::{
    progress::{ReplayBar, WindowProgress},
    Cli, Command, LogFormat, RulesCommand,
};
use spillway::server::shutdown::StopSignals;
use std::process::ExitCode;

// `run` allocates a label vector and its strings for every series it
// receives; with glibc's malloc a third of the router's CPU went to
// malloc/free and freed memory lingered in per-thread arenas. Built
// without transparent huge pages (`no_thp`): with them, every large
// buffer freed and allocated again cost the kernel a 2 MiB page to zero.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's defaults (transparent huge pages, eagerly committed arenas,
/// freed memory given back after a second) more than doubled the resident
/// memory of `spillway run` under a steady rule load (scripts/bench-run.sh:
/// about 120 MiB for 19 MiB of live heap); these settings bring it to about
/// 50 MiB for some 10-20% more CPU. A `MIMALLOC_<OPTION>` environment
/// variable still wins. The option numbers are those of the mimalloc 3
/// enum; three known defaults are checked first, so a mimalloc with another
/// layout is left alone.
#[cfg(target_os = "linux")]
fn tune_allocator() {
    use std::os::raw::{c_int, c_long};
    extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
        fn mi_option_set(option: c_int, value: c_long);
        fn prctl(option: c_int, ...) -> c_int;
    }
    const OS_TAG: c_int = 18;
    const MAX_ERRORS: c_int = 19;
    const MAX_WARNINGS: c_int = 20;
    const SETTINGS: [(c_int, &str, c_long); 3] = [
        (43, "MIMALLOC_ALLOW_THP", 0),
        (4, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (15, "MIMALLOC_PURGE_DELAY", 10),
    ];
    const PR_SET_THP_DISABLE: c_int = 41;
    // SAFETY: plain option reads and writes of the linked mimalloc, and a
    // prctl that only sets a flag on this process.
    unsafe {
        let layout_known = mi_option_get(OS_TAG) == 100
            && mi_option_get(MAX_ERRORS) == 32
            && mi_option_get(MAX_WARNINGS) == 32;
        if !layout_known {
            return;
        }
        for (option, env, value) in SETTINGS {
            if std::env::var_os(env).is_none() {
                mi_option_set(option, value);
            }
        }
        // Arenas reserved before main were already marked for huge pages.
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            prctl(
                PR_SET_THP_DISABLE,
                1 as c_long,
                0 as c_long,
                0 as c_long,
                0 as c_long,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    spillway::telemetry::init(
        cli.global.verbose,
        cli.global.quiet,
        cli.global.log_format == LogFormat::Json,
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers_set = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    if let Some(workers) = async_workers(&cli.command, workers_set, cores) {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            spillway::errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(command(cli));
    // Blocking tasks finish their cleanup here (a file writer removing its
    // temp file); bounded, so a stuck one cannot hold the process. Whatever
    // it leaves is removed by the next run's sweep of stale temp files.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    spillway::output::exit_code(code)
}

/// `spillway run` keeps one async worker per two cores (at least one)
/// instead of tokio's one per core: its CPU work (decoding received bodies,
/// relabeling, encoding, queue pushes, parsing query answers) runs on the
/// short-work pool (one thread per core, src/blocking.rs) and tokio's
/// blocking pool, so its workers mostly move bytes between sockets and
/// those pools, and each extra worker is one more thread with its own
/// allocator pages. Measured on 2 cores, one worker against two, 3 runs
/// each: `scripts/bench-run.sh` peaked at 26.9-28.5 MiB instead of
/// 32.3-32.6 with 0.88-0.90 CPU-s a minute instead of 0.95-1.04;
/// `scripts/bench-router.sh` at 64.8 MiB instead of 67.6 with the same CPU
/// per sample and throughput. `TOKIO_WORKER_THREADS` still wins.
fn async_workers(command: &Command, workers_set: bool, cores: usize) -> Option<usize> {
    if !matches!(command, Command::Run(_)) || workers_set {
        return None;
    }
    Some((cores / 2).max(1))
}

/// Runs the command until it ends or SIGINT/SIGTERM stops it (exit 130).
/// `run` and `ui` stop gracefully on their own and exit 0.
async fn command(cli: Cli) -> ExitCode {
    if let Command::Run(args) = &cli.command {
        return run_command(args.to_options()).await;
    }
    if let Command::Ui(args) = cli.command {
        return spillway::cli::ui::ui(args).await;
    }
    // Listening from before the command starts: the default action of
    // SIGTERM would end the process without removing its temp files.
    let mut signals = match StopSignals::new() {
        Ok(s) => s,
        Err(e) => return fail(&[format!("cannot listen for SIGINT/SIGTERM: {e}")]),
    };
    let note = interrupted_note(&cli.command);
    let mut running = Box::pin(run(cli));
    let signal = tokio::select! {
        code = &mut running => return code,
        s = signals.recv() => s,
    };
    signals.exit_on_next(130);
    // Dropping the command drops its sinks, which remove their temp files.
    drop(running);
    spillway::errln!("{signal}: stopped; {note}");
    ExitCode::from(130)
}

/// What an interrupted command leaves behind, for its last words.
fn interrupted_note(command: &Command) -> &'static str {
    match command {
        // Queued blocks are on disk; the queues' flocks die with the process.
        Command::Replay(_) | Command::Capture(_) => {
            "what was queued stays queued and is delivered by the next `spillway run` or replay"
        }
        Command::Gather(_) => {
            "finished windows stay in the staging directory: continue with --resume"
        }
        Command::Import(_) => "the offset is saved beside the bundle: continue with --resume",
        _ => "no partial output was kept",
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Export(args) => export(args, cli.global.quiet).await,
        Command::Gather(args) => spillway::cli::bundle::gather(args, cli.global.quiet).await,
        Command::Import(args) => spillway::cli::bundle::import(args, cli.global.quiet).await,
        Command::Run(args) => run_command(args.to_options()).await,
        Command::Ui(args) => spillway::cli::ui::ui(args).await,
        Command::Replay(args) => replay(args, cli.global.quiet).await,
        Command::Rules(args) => match args.command {
            RulesCommand::Check(c) => rules_check(c).await,
            RulesCommand::Preview(p) => rules_preview(p).await,
        },
        Command::Relabel(args) => relabel(args),
        Command::Capture(args) => capture(args).await,
        Command::Health(args) => match spillway::run::probe::probe(&args.to_probe()).await {
            Ok(answer) => {
                spillway::outln!("{}: {answer}", args.url);
                ExitCode::SUCCESS
            }
            Err(e) => {
                spillway::errln!("unhealthy: {e}");
                ExitCode::from(1)
            }
        },
        Command::GenerateAssets(args) => match spillway::cli::generate::generate(&args) {
            Ok(files) => {
                for f in files {
                    spillway::outln!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&[format!("writing into {}: {e}", args.out.display())]),
        },
    }
}

async fn capture(args: spillway::cli::capture::CaptureArgs) -> ExitCode {
    let opts = match args.to_options() {
        Ok(o) => o,
        Err(e) => return fail(&[e]),
    };
    match spillway::run::capture::capture_command(&opts).await {
        Ok(outcome) => {
            spillway::out!("{}", outcome.render());
            if outcome.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(problems) => fail(&problems),
    }
}

async fn replay(args: spillway::cli::ReplayArgs, quiet: bool) -> ExitCode {
    let progress = ReplayBar::new(quiet);
    match spillway::run::tools::replay_command(&args.to_options(), &progress).await {
        Ok(outcome) => {
            spillway::out!("{}", outcome.render());
            if outcome.report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(problems) => fail(&problems),
    }
}

async fn rules_check(args: spillway::cli::run::RulesCheckArgs) -> ExitCode {
    match spillway::run::tools::rules_check(&args.to_options()).await {
        Ok(outcome) => {
            let (out, err) = outcome.render();
            spillway::err!("{err}");
            spillway::out!("{out}");
            if outcome.failed() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&[e]),
    }
}

async fn rules_preview(args: spillway::cli::run::RulesPreviewArgs) -> ExitCode {
    match spillway::run::tools::rules_preview(&args.to_options()).await {
        Ok(outcome) => {
            spillway::out!("{}", outcome.render());
            if outcome.errors() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(problems) => fail(&problems),
    }
}

async fn run_command(opts: spillway::run::RunOptions) -> ExitCode {
    match spillway::run::run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(spillway::run::RunError::Config(problems)) => fail(&problems),
        Err(e) => fail(&[e.to_string()]),
    }
}

fn relabel(args: spillway::cli::RelabelArgs) -> ExitCode {
    match spillway::run::relabel::explain(&args.to_options()) {
        Ok(text) => {
            spillway::out!("{text}");
            ExitCode::SUCCESS
        }
        Err(problems) => fail(&problems),
    }
}

fn fail(errors: &[String]) -> ExitCode {
    for e in errors {
        spillway::errln!("error: {e}");
    }
    ExitCode::from(2)
}

async fn export(args: spillway::cli::ExportArgs, quiet: bool) -> ExitCode {
    let file = match &args.config {
        Some(path) => match spillway::export::ExportFile::load(path) {
            Ok(f) => f,
            Err(e) => return fail(&[format!("config {e}")]),
        },
        None => Default::default(),
    };
    let opts = match file.overlay(args.to_file()).check() {
        Ok(o) => o,
        Err(errs) => return fail(&errs),
    };
    let progress = WindowProgress::new(quiet);
    match spillway::export::run(opts, &progress).await {
        Ok(report) => {
            if !quiet {
                spillway::out!("{}", report.summary.render());
            }
            spillway::outln!("summary: {}", report.summary_path.display());
            if report.summary.samples == 0 && report.summary.failed_queries.is_empty() {
                spillway::errln!(
                    "note: the queries returned no data in {} .. {}",
                    report.summary.from,
                    report.summary.to
                );
            }
            if report.summary.failed_queries.is_empty() {
                ExitCode::SUCCESS
            } else {
                for q in &report.summary.queries {
                    if let Some(e) = &q.error {
                        spillway::errln!("error: query {:?} failed: {e}", q.query);
                    }
                }
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&[format!("{e:#}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_gets_one_async_worker_per_two_cores_unless_the_environment_says() {
        let run = Cli::parse_from(["spillway", "run", "-c", "run.yml"]).command;
        let by_cores: Vec<_> = [1, 2, 3, 4, 16]
            .map(|cores| async_workers(&run, false, cores))
            .into();
        assert_eq!(by_cores, [Some(1), Some(1), Some(1), Some(2), Some(8)]);
        assert_eq!(
            async_workers(&run, true, 16),
            None,
            "TOKIO_WORKER_THREADS wins"
        );
        let export = Cli::parse_from([
            "spillway",
            "export",
            "--url",
            "http://127.0.0.1:1",
            "--query",
            "up",
        ]);
        assert_eq!(async_workers(&export.command, false, 16), None);
    }
}
