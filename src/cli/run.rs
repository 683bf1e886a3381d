//! Arguments of `spillway run` and `spillway relabel`.

use crate::model::time::parse_duration;
use crate::run::relabel::RelabelOptions;
use crate::run::RunOptions;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  spillway run -c spillway.yml --http.listen 127.0.0.1:8880\n\n\
Stops gracefully on SIGINT/SIGTERM (a second signal stops at once); queued data survives any stop."
)]
pub struct RunArgs {
    /// The run config (YAML): destinations, relabeling, storage, server.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// HTTP listen address (overrides server.listen; default 127.0.0.1:8880).
    #[arg(long = "http.listen", value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// How long a graceful stop waits for requests in progress and for
    /// destinations to deliver what they hold (what is left stays queued).
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub shutdown_timeout: std::time::Duration,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl RunArgs {
    pub fn to_options(&self) -> RunOptions {
        RunOptions {
            config: self.config.clone(),
            listen: self.http_listen.clone(),
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  spillway relabel --config relabel.yml --labels '{__name__=\"up\",job=\"node\"}'\n  \
spillway relabel --config spillway.yml --destination incidents --labels 'up{job=\"node\"}'"
)]
pub struct RelabelArgs {
    /// A relabel_configs list, or a run config (then global_relabel_configs apply).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The series to relabel: {__name__="x", a="b"} or x{a="b"}.
    #[arg(long)]
    pub labels: String,
    /// With a run config: continue through this destination's relabel_configs.
    #[arg(long)]
    pub destination: Option<String>,
}

impl RelabelArgs {
    pub fn to_options(&self) -> RelabelOptions {
        RelabelOptions {
            config: self.config.clone(),
            labels: self.labels.clone(),
            destination: self.destination.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn run_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "run",
            "-c",
            "x.yml",
            "--http.listen",
            "127.0.0.1:1",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let o = r.to_options();
        assert_eq!(o.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(o.shutdown_timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn relabel_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "relabel",
            "--config",
            "r.yml",
            "--labels",
            "{a=\"b\"}",
            "--destination",
            "d",
        ])
        .unwrap();
        let Command::Relabel(r) = cli.command else {
            panic!("not relabel")
        };
        assert_eq!(r.to_options().destination.as_deref(), Some("d"));
    }
}
