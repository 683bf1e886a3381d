//! Arguments of `spillway capture`: copy a selector's raw data once, by
//! hand, through the breach-capture path of a run config.

use crate::model::range::{resolve_ends, FLAGS};
use crate::model::time::{duration_arg, now_ms, time_arg, TimeArg};
use crate::run::capture::CaptureCommand;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  spillway capture -c spillway.yml --match '{instance=\"db1:9100\"}' \\\n    --from 2024-05-01T02:00:00Z --to 2024-05-01T03:00:00Z --destination debug_storage\n\n\
Raw samples come from the config's datasource (/api/v1/export, Prometheus remote read, or\n\
query_range as a fallback) and go through each destination's relabeling and disk queue.\n\
Ranges already copied under the same --name and selectors are not sent again.\n\
Exit 1 if a chunk failed (what was copied stays copied; run it again to finish)."
)]
pub struct CaptureArgs {
    /// The run config: its datasource, destinations and storage.path.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Series selector of the raw series to copy (repeatable).
    #[arg(long = "match", value_name = "SELECTOR", required = true)]
    pub matches: Vec<String>,
    /// Range start: RFC 3339, unix seconds, or now-DURATION.
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    pub from: TimeArg,
    /// Range end, inclusive (default: now; data newer than evaluation.eval_delay waits).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    pub to: Option<TimeArg>,
    /// A destination of the config to copy to (repeatable).
    #[arg(long = "destination", value_name = "NAME", required = true)]
    pub destinations: Vec<String>,
    /// Capture name: with the selectors, it keys the ranges already copied.
    #[arg(long, default_value = "manual")]
    pub name: String,
    /// Most series copied (beyond: truncated and reported).
    #[arg(long)]
    pub max_series: Option<usize>,
    /// Most samples copied (beyond: truncated and reported).
    #[arg(long)]
    pub max_samples: Option<u64>,
    /// Data per fetch (the range is copied chunk by chunk; an interrupted run
    /// copies its last chunk again).
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    pub chunk: std::time::Duration,
    /// Label NAME=VALUE set on every copied series (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// How long to wait at the end for the destinations to deliver; what is
    /// left stays queued for the next run.
    #[arg(long, default_value = "1m", value_parser = duration_arg)]
    pub drain_timeout: std::time::Duration,
    /// Queue and state directory instead of storage.path (needed while `spillway run` holds them).
    #[arg(long = "storage.path", value_name = "DIR")]
    pub storage_path: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.is_empty() => {
            Ok((k.trim().to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=VALUE, both non-empty")),
    }
}

impl CaptureArgs {
    /// The command's options; `--from`/`--to` are read against one `now`
    /// and checked as every command's range.
    pub fn to_options(&self) -> Result<CaptureCommand, String> {
        let to = self.to.clone().unwrap_or(TimeArg::Now);
        let range = resolve_ends(&self.from, &to, &FLAGS, now_ms()).map_err(|e| e.to_string())?;
        Ok(CaptureCommand {
            config: self.config.clone(),
            matches: self.matches.clone(),
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            destinations: self.destinations.clone(),
            name: self.name.clone(),
            max_series: self.max_series,
            max_samples: self.max_samples,
            chunk: self.chunk,
            labels: self.labels.clone(),
            drain_timeout: self.drain_timeout,
            storage_path: self.storage_path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn capture_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "capture",
            "-c",
            "run.yml",
            "--match",
            "{instance=\"a\"}",
            "--match",
            "up",
            "--from",
            "1700000000",
            "--to",
            "1700003600",
            "--destination",
            "debug",
            "--label",
            "why=incident-42",
        ])
        .unwrap();
        let Command::Capture(c) = cli.command else {
            panic!("not capture")
        };
        let o = c.to_options().unwrap();
        assert_eq!(o.matches.len(), 2);
        assert_eq!((o.from_ms, o.to_ms), (1_700_000_000_000, 1_700_003_600_000));
        assert_eq!(o.labels, [("why".to_string(), "incident-42".to_string())]);
        assert_eq!(o.name, "manual");
        // The destination is required, and labels need a value.
        assert!(Cli::try_parse_from([
            "spillway", "capture", "-c", "x", "--match", "up", "--from", "-1h"
        ])
        .is_err());
        assert!(super::parse_label("a=").is_err());
    }
}
