//! The `spillway` binary: parse arguments, start logging, run the command,
//! map the outcome to an exit code (0 ok, 1 partial failure, 2 error, 130 interrupted).

use clap::Parser;
use spillway::cli::{
    progress::{ReplayBar, WindowProgress},
    Cli, Command, LogFormat, RulesCommand,
};
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // `run` handles SIGINT itself (graceful stop), so it is not raced against Ctrl-C here.
    if let Command::Run(args) = &cli.command {
        let opts = args.to_options();
        return runtime.block_on(run_command(opts));
    }
    let replaying = matches!(cli.command, Command::Replay(_));
    runtime.block_on(async {
        tokio::select! {
            code = run(cli) => code,
            _ = tokio::signal::ctrl_c() => {
                if replaying {
                    // Queued blocks are on disk; the queues' flocks die with the process.
                    eprintln!("interrupted; what was queued stays queued and is delivered by the next `spillway run` or replay");
                } else {
                    // Dropping the command's future drops its sinks, which remove their temp files.
                    eprintln!("interrupted; no partial output was kept");
                }
                ExitCode::from(130)
            }
        }
    })
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
            RulesCommand::Check(c) => rules_check(c),
            RulesCommand::Preview(p) => rules_preview(p).await,
        },
        Command::Relabel(args) => relabel(args),
        Command::Health(args) => match spillway::run::probe::probe(&args.to_probe()).await {
            Ok(answer) => {
                println!("{}: {answer}", args.url);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::from(1)
            }
        },
        Command::GenerateAssets(args) => match spillway::cli::generate::generate(&args) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&[format!("writing into {}: {e}", args.out.display())]),
        },
    }
}

async fn replay(args: spillway::cli::ReplayArgs, quiet: bool) -> ExitCode {
    let progress = ReplayBar::new(quiet);
    match spillway::run::tools::replay_command(&args.to_options(), &progress).await {
        Ok(outcome) => {
            print!("{}", outcome.render());
            if outcome.report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(problems) => fail(&problems),
    }
}

fn rules_check(args: spillway::cli::run::RulesCheckArgs) -> ExitCode {
    match spillway::run::tools::rules_check(&args.to_options()) {
        Ok(outcome) => {
            let (out, err) = outcome.render();
            eprint!("{err}");
            print!("{out}");
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
            print!("{}", outcome.render());
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
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(problems) => fail(&problems),
    }
}

fn fail(errors: &[String]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
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
                print!("{}", report.summary.render());
            }
            println!("summary: {}", report.summary_path.display());
            if report.summary.samples == 0 && report.summary.failed_queries.is_empty() {
                eprintln!(
                    "note: the queries returned no data in {} .. {}",
                    report.summary.from, report.summary.to
                );
            }
            if report.summary.failed_queries.is_empty() {
                ExitCode::SUCCESS
            } else {
                for q in &report.summary.queries {
                    if let Some(e) = &q.error {
                        eprintln!("error: query {:?} failed: {e}", q.query);
                    }
                }
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&[format!("{e:#}")]),
    }
}
