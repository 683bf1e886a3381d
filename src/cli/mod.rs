//! Command-line definitions only: doc comments become `--help`. Each
//! command's arguments turn into that command's options here; the work is
//! done by the command modules.

use crate::client::{BasicAuthSpec, ConnectionSpec, Secret, TlsSpec};
use crate::export::ExportFile;
use crate::transform::threshold::ThresholdSpec;
pub mod bundle;
pub mod capture;
pub mod generate;
pub mod http;
pub mod progress;
pub mod run;
pub mod ui;

pub use run::{RelabelArgs, ReplayArgs, RulesArgs, RulesCommand, RunArgs};

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "spillway",
    version = crate::build_info::LONG_VERSION,
    about = "Export time series out of VictoriaMetrics, Prometheus and VictoriaLogs when thresholds are crossed.",
    after_help = "Exit codes: 0 success (stdout's reader going away, as with `| head`, is no error); 1 the command ran but part of it failed (e.g. a query); 2 bad usage, bad config or a fatal error; 130 stopped by SIGINT or SIGTERM (`run` and `ui` stop gracefully with 0)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Batch threshold export: fetch a range by PromQL, flag samples against
    /// thresholds, write CSV / JSON / JSONL / SQLite / Parquet (alerts apart).
    Export(ExportArgs),
    /// Continuous threshold export: evaluate vmalert rule files on a
    /// schedule and route what breaches (and what arrives by remote write /
    /// VM import) through relabeling to queued destinations.
    Run(RunArgs),
    /// Evaluate the rules of a run config over a past range and export the
    /// breaches with their original timestamps (backfill).
    Replay(ReplayArgs),
    /// Rule file tools: `check` (lint) and `preview` (evaluate once, show
    /// what each destination would get).
    Rules(RulesArgs),
    /// Show what relabel_configs do to one series, step by step.
    Relabel(RelabelArgs),
    /// Copy the raw samples of a selector over a time range, once, by hand,
    /// to destinations of a run config (the path breach captures take).
    Capture(capture::CaptureArgs),
    /// Support bundle: export series (obfuscated, windowed, resumable) into a
    /// checksummed ZIP in vmgather's layout; or validate, discover, sample, verify.
    Gather(bundle::GatherArgs),
    /// Load a support bundle (.zip or .jsonl) into VictoriaMetrics, resumably.
    Import(bundle::ImportArgs),
    /// Web UI: the gather wizard and the import page, with their REST API under /api.
    Ui(ui::UiArgs),
    /// Probe a running `spillway run` or `ui`: exit 0 when its /health
    /// answers 200, 1 otherwise (Docker HEALTHCHECK in an image without curl).
    Health(HealthArgs),
    /// Write shell completions and man pages (for packagers).
    #[command(hide = true)]
    GenerateAssets(generate::GenerateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8880")]
    pub url: String,
    /// USER:PASSWORD when the server runs with --http.auth (read from the same variable).
    #[arg(
        long = "http.auth",
        value_name = "USER:PASSWORD",
        env = "SPILLWAY_HTTP_AUTH",
        hide_env_values = true
    )]
    pub http_auth: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = crate::model::time::duration_arg)]
    pub timeout: std::time::Duration,
}

impl HealthArgs {
    pub fn to_probe(&self) -> crate::run::probe::Probe {
        crate::run::probe::Probe {
            url: self.url.clone(),
            auth: self.http_auth.clone(),
            timeout: self.timeout,
        }
    }
}

/// How to reach a server: shared by every command that talks to one.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// Server URL: http://vm:8428, http://vmselect:8481/select/0/prometheus, a vmauth URL, or Prometheus.
    #[arg(long)]
    pub url: Option<String>,
    /// Basic auth user.
    #[arg(long)]
    pub username: Option<String>,
    /// Basic auth password (prefer --password-file or SPILLWAY_PASSWORD: arguments show in `ps`).
    #[arg(long, env = "SPILLWAY_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    /// File holding the basic auth password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Bearer token (prefer --bearer-token-file or SPILLWAY_BEARER_TOKEN).
    #[arg(long, env = "SPILLWAY_BEARER_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token; read at every request.
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<Secret>,
    /// VictoriaMetrics cluster tenant AccountID[:ProjectID], sent as AccountID/ProjectID headers.
    #[arg(long)]
    pub tenant: Option<String>,
    /// PEM file with the CA that signs the server's certificate.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    pub tls_insecure_skip_verify: bool,
    /// Timeout of one request (e.g. 30s, 2m).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Retries after the first attempt on connection errors and 5xx (4xx are never retried).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Largest answer read whole, and largest series of a streamed one (default 64MiB).
    #[arg(long, value_name = "SIZE")]
    pub max_response_bytes: Option<String>,
}

impl ConnectionArgs {
    pub fn to_spec(&self) -> ConnectionSpec {
        let basic_auth = self.username.as_ref().map(|u| BasicAuthSpec {
            username: u.clone(),
            password: self.password.clone(),
            password_file: self.password_file.clone(),
        });
        let tls = (self.tls_ca_file.is_some() || self.tls_insecure_skip_verify).then(|| TlsSpec {
            ca_file: self.tls_ca_file.clone(),
            insecure_skip_verify: self.tls_insecure_skip_verify,
        });
        ConnectionSpec {
            url: self.url.clone(),
            basic_auth,
            bearer_token: self.bearer_token.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            headers: self.headers.clone(),
            tenant: self.tenant.clone(),
            tls,
            timeout: self.timeout.clone(),
            retries: self.retries,
            max_response_bytes: self.max_response_bytes.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  spillway export --url http://127.0.0.1:8428 --query 'cpu_usage_percent' \\\n    --since 24h --step 1m --thresholds thresholds.yml --format csv,parquet --out ./out"
)]
pub struct ExportArgs {
    /// YAML file holding any of these options (flags override it).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// PromQL / MetricsQL query (repeatable); sent to the server unchanged.
    #[arg(long = "query", short = 'Q')]
    pub queries: Vec<String>,
    /// Export the last DURATION (e.g. 24h) up to --to or now.
    #[arg(long, value_parser = crate::model::time::duration_text_arg)]
    pub since: Option<String>,
    /// Range start: RFC 3339, unix seconds, or now-DURATION.
    #[arg(long, value_parser = crate::model::time::time_text_arg, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Range end: RFC 3339, unix seconds, now or now-DURATION (default: now minus --lag).
    #[arg(long, value_parser = crate::model::time::time_text_arg, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Resolution of the exported points (default 1m).
    #[arg(long, value_parser = crate::model::time::duration_text_arg)]
    pub step: Option<String>,
    /// Points per query_range call (default 720), or a duration; long ranges are split into such windows.
    #[arg(long)]
    pub window: Option<String>,
    /// When --to is not given, stop this far behind now (default 1m) so late points are not missed.
    #[arg(long, value_parser = crate::model::time::duration_text_arg)]
    pub lag: Option<String>,
    /// YAML file with thresholds (a list, or `thresholds:` holding one).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Output formats, comma-separated: csv, json, jsonl, sqlite, parquet (default csv).
    #[arg(long, value_delimiter = ',')]
    pub format: Vec<String>,
    /// Output directory (created if missing; default: current directory).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// State file: each run continues exactly where the previous one ended.
    #[arg(long, value_name = "STATE")]
    pub incremental: Option<PathBuf>,
    /// Parquet as a Hive-partitioned tree under OUT/samples: day, hour or metric.
    #[arg(long, value_name = "BY")]
    pub partition_by: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Same as --url (the pandas vmselect processor's name for it).
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    pub base_url: Option<String>,
    /// Same as --since Nh: export the last N hours (the pandas processor's flag).
    #[arg(long, value_name = "N", conflicts_with_all = ["since", "from"], value_parser = parse_hours)]
    pub hours: Option<f64>,
    /// Queries, several after one flag (the pandas processor's form): --queries 'up' 'cpu'.
    #[arg(long = "queries", value_name = "QUERY", num_args = 1..)]
    pub queries_list: Vec<String>,
    /// Same as --out (the pandas processor's name for it).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub output_dir: Option<PathBuf>,
}

fn parse_hours(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(h) if h > 0.0 && h.is_finite() => Ok(h),
        _ => Err(format!(
            "{s:?}: expected a number of hours above 0, e.g. 24"
        )),
    }
}

impl ExportArgs {
    /// The flags as a partial config, to lay over the file.
    pub fn to_file(&self) -> ExportFile {
        let mut datasource = self.connection.to_spec();
        if datasource.url.is_none() {
            datasource.url = self.base_url.clone();
        }
        // Whole seconds, so fractions of an hour stay exact.
        let hours = self
            .hours
            .map(|h| format!("{}s", (h * 3600.0).round() as u64));
        ExportFile {
            datasource,
            queries: self
                .queries
                .iter()
                .chain(&self.queries_list)
                .cloned()
                .collect(),
            since: self.since.clone().or(hours),
            from: self.from.clone(),
            to: self.to.clone(),
            step: self.step.clone(),
            window: self.window.clone(),
            lag: self.lag.clone(),
            thresholds: Vec::<ThresholdSpec>::new(),
            thresholds_file: self.thresholds.clone(),
            format: (!self.format.is_empty()).then(|| self.format.clone()),
            out: self.out.clone().or_else(|| self.output_dir.clone()),
            incremental: self.incremental.clone(),
            partition_by: self.partition_by.clone(),
            flags: self.given_flags(),
        }
    }

    /// The config fields these flags set, so errors name them as flags.
    fn given_flags(&self) -> std::collections::BTreeSet<&'static str> {
        [
            ("since", self.since.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("step", self.step.is_some()),
            ("window", self.window.is_some()),
            ("lag", self.lag.is_some()),
            ("partition_by", self.partition_by.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, given)| given.then_some(f))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn export_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "export",
            "--url",
            "http://x:1",
            "--query",
            "a",
            "-Q",
            "b",
            "--format",
            "csv,parquet",
            "--since",
            "2h",
        ])
        .unwrap();
        let Command::Export(e) = cli.command else {
            panic!("not export")
        };
        let f = e.to_file();
        assert_eq!(f.queries, ["a", "b"]);
        assert_eq!(f.format.unwrap(), ["csv", "parquet"]);
        assert_eq!(f.datasource.url.as_deref(), Some("http://x:1"));
    }

    /// Issue 11, item 9: the pandas processor's flags, as in its cron lines.
    #[test]
    fn vmselect_processor_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "export",
            "--base-url",
            "http://vmselect:8481/select/0/prometheus",
            "--hours",
            "24",
            "--queries",
            "up",
            "cpu_usage_percent",
            "memory_usage_percent",
            "--output-dir",
            "exports",
            "--verbose",
        ])
        .unwrap();
        assert_eq!(cli.global.verbose, 1);
        let Command::Export(e) = cli.command else {
            panic!("not export")
        };
        let f = e.to_file();
        assert_eq!(
            f.datasource.url.as_deref(),
            Some("http://vmselect:8481/select/0/prometheus")
        );
        assert_eq!(f.since.as_deref(), Some("86400s"));
        assert_eq!(
            f.queries,
            ["up", "cpu_usage_percent", "memory_usage_percent"]
        );
        assert_eq!(f.out, Some(PathBuf::from("exports")));
        let f = Cli::try_parse_from(["spillway", "export", "--hours", "1.5", "--query", "x"])
            .map(|c| match c.command {
                Command::Export(e) => e.to_file(),
                _ => unreachable!(),
            })
            .unwrap();
        assert_eq!(f.since.as_deref(), Some("5400s"));
        for bad in [
            vec!["--hours", "0"],
            vec!["--hours", "1", "--since", "2h"],
            vec!["--base-url", "http://a", "--url", "http://b"],
            vec!["--output-dir", "a", "--out", "b"],
        ] {
            let mut args = vec!["spillway", "export"];
            args.extend(bad.iter().copied());
            assert!(Cli::try_parse_from(&args).is_err(), "{bad:?}");
        }
    }
}
