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

fn main() -> ExitCode {
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
