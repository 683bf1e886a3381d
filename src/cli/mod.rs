//! Command-line definitions only: doc comments become `--help`. Each
//! command's arguments turn into that command's options here; the work is
//! done by the command modules.

use crate::client::{BasicAuthSpec, ConnectionSpec, TlsSpec};
use crate::export::ExportFile;
use crate::transform::threshold::ThresholdSpec;
pub mod bundle;
pub mod generate;
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
    after_help = "Exit codes: 0 success; 1 the command ran but part of it failed (e.g. a query); 2 bad usage, bad config or a fatal error; 130 interrupted."
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
    #[arg(long, default_value = "5s", value_parser = run::parse_duration_arg)]
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
    pub password: Option<String>,
    /// File holding the basic auth password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Bearer token (prefer --bearer-token-file or SPILLWAY_BEARER_TOKEN).
    #[arg(long, env = "SPILLWAY_BEARER_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<String>,
    /// File holding the bearer token; read at every request.
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
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
    #[arg(long)]
    pub since: Option<String>,
    /// Range start: RFC 3339 or unix seconds.
    #[arg(long)]
    pub from: Option<String>,
    /// Range end: RFC 3339 or unix seconds (default: now minus --lag).
    #[arg(long)]
    pub to: Option<String>,
    /// Resolution of the exported points (default 1m).
    #[arg(long)]
    pub step: Option<String>,
    /// Points per query_range call (default 720), or a duration; long ranges are split into such windows.
    #[arg(long)]
    pub window: Option<String>,
    /// When --to is not given, stop this far behind now (default 1m) so late points are not missed.
    #[arg(long)]
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
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

impl ExportArgs {
    /// The flags as a partial config, to lay over the file.
    pub fn to_file(&self) -> ExportFile {
        ExportFile {
            datasource: self.connection.to_spec(),
            queries: self.queries.clone(),
            since: self.since.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            step: self.step.clone(),
            window: self.window.clone(),
            lag: self.lag.clone(),
            thresholds: Vec::<ThresholdSpec>::new(),
            thresholds_file: self.thresholds.clone(),
            format: (!self.format.is_empty()).then(|| self.format.clone()),
            out: self.out.clone(),
            incremental: self.incremental.clone(),
        }
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
}
