//! `spillway gather` and `spillway import`: flags (doc comments are the
//! `--help`) and their translation into [`crate::bundle`] parameters
//! (here); driving the jobs with progress (`drive.rs`, through
//! [`crate::bundle::drive`], as the web UI does); what the commands print
//! (`print.rs`). The work is done by `crate::bundle`.

mod drive;
mod print;

pub use drive::{gather, import};

use super::ConnectionArgs;
use crate::bundle::import::WireFormat;
use crate::client::ClientConfig;
use crate::model::range::{self, RangeDefaults, RangeInput};
use crate::model::size::size_usize_arg;
use crate::model::time::{duration_ms, now_ms, parse_duration};
use crate::transform::obfuscate::ObfuscationOptions;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Fixed window per request, clamped to 30s..24h (default: sized from the data, see --batch-samples).
    #[arg(long)]
    pub batch_window: Option<String>,
    /// Without --batch-window: samples per request the windows are sized for (default 40M), from the series count, then from what each window held.
    #[arg(long, value_name = "N", conflicts_with = "batch_window", value_parser = clap::value_parser!(u64).range(1000..=1_000_000_000))]
    pub batch_samples: Option<u64>,
    /// Read /api/v1/export (JSON lines) instead of the native export (/api/v1/export/native, read by default where the server has it): the server then prints every value, many times the CPU.
    #[arg(long)]
    pub json_export: bool,
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
    /// Requests in flight at once (1 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Continue an interrupted import from its saved offset.
    #[arg(long)]
    pub resume: bool,
    /// Move the bundle's time range so that it ends now.
    #[arg(long)]
    pub shift_to_now: bool,
    /// Check the bundle and show what would be imported; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// What chunks travel as: `native` blocks (/api/v1/import/native, what
    /// vmctl's vm-native mode sends; less CPU for the target), `json` lines
    /// (/api/v1/import), or `auto`: native where the target reads it.
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = WireFormat::parse)]
    pub wire_format: WireFormat,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

pub(crate) fn client_config(conn: &ConnectionArgs) -> Result<ClientConfig, String> {
    conn.to_spec().to_client_config("connection").map_err(|e| {
        if e.contains("url is missing") {
            "--url is required: the server, e.g. http://127.0.0.1:8428".to_string()
        } else {
            e.replace("connection.", "--")
        }
    })
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    crate::errln!("error: {msg}");
    ExitCode::from(2)
}

/// `--since/--from/--to`, read as every command reads them (`model::range`).
pub(crate) fn range(args: &GatherArgs) -> Result<(i64, i64), String> {
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

pub(crate) fn opt_duration(flag: &str, v: &Option<String>) -> Result<Option<i64>, String> {
    v.as_deref()
        .map(|s| match parse_duration(s).map(duration_ms) {
            Ok(ms) if ms > 0 => Ok(ms),
            Ok(_) => Err(format!("{flag}: must be greater than zero")),
            Err(e) => Err(format!("{flag}: {e}")),
        })
        .transpose()
}

pub(crate) fn obfuscation(args: &GatherArgs) -> Result<ObfuscationOptions, String> {
    let mut o = ObfuscationOptions {
        labels: args.obfuscate_labels.clone(),
        drop_labels: args.drop_labels.clone(),
        ..Default::default()
    };
    o.set_kinds(&args.obfuscate)?;
    o.check()?;
    Ok(o)
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
        let adaptive = [
            "spillway",
            "gather",
            "--url",
            "http://x:1",
            "--batch-samples",
        ];
        let parse = |n: &str| Cli::try_parse_from(adaptive.iter().copied().chain([n]));
        let Command::Gather(g) = parse("5000").unwrap().command else {
            panic!("not gather")
        };
        assert_eq!(g.batch_samples, Some(5000));
        assert!(parse("10").is_err(), "below 1000");
        assert!(Cli::try_parse_from(adaptive.iter().copied().chain([
            "5000",
            "--batch-window",
            "1m"
        ]))
        .is_err());
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
            "--concurrency",
            "2",
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
        assert_eq!(i.concurrency, 2);
        assert!(
            Cli::try_parse_from(["spillway", "import", "b.zip", "--concurrency", "0"]).is_err()
        );
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
