//! Arguments of `spillway run`, `replay`, `rules` and `relabel`.

use crate::model::time::{duration_arg, time_arg, TimeArg};
use crate::run::cluster::ClusterFlags;
use crate::run::relabel::RelabelOptions;
use crate::run::tools::{ReplayCommand, RulesCheck, RulesPreview};
use crate::run::RunOptions;
use crate::transform::relabel::Dialect;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  spillway run -c spillway.yml --http.listen 127.0.0.1:8880\n  \
spillway run -c spillway.yml --http.listen 0.0.0.0:8880 --http.auth-file /etc/spillway/http-auth --http.allowed-hosts spillway.example\n\n\
Web page at http://ADDR/ ; APIs: /api/v1/rules, /api/v1/destinations, /metrics, /health.\n\
Reload: SIGHUP or `curl -X POST http://ADDR/-/reload` (a bad config is refused; the old one keeps running).\n\
Stops gracefully on SIGINT/SIGTERM (a second signal stops at once); queued data survives any stop."
)]
pub struct RunArgs {
    /// The run config (YAML): datasources, rule files, destinations, relabeling, storage, server.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    #[command(flatten)]
    pub http: super::http::HttpArgs,
    /// How long a graceful stop waits for requests in progress and for
    /// destinations to deliver what they hold (what is left stays queued).
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub shutdown_timeout: std::time::Duration,
    /// Check the config and every rule file it names, print a summary and
    /// exit (0 valid, 2 with every problem listed); nothing is started.
    #[arg(long)]
    pub dry_run: bool,
    /// Reload when the config or a rule file changes on disk, checking this
    /// often (e.g. 30s; Kubernetes ConfigMaps); off by default.
    #[arg(long = "config.check-interval", value_name = "DURATION", value_parser = duration_arg)]
    pub config_check_interval: Option<std::time::Duration>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Sharding rule groups across replicas; each flag overrides the run
/// config's `cluster:` section.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// How many members share the rule groups (each group is evaluated by
    /// the member(s) a consistent hash of its file and name picks).
    #[arg(long = "cluster.members-count", value_name = "N")]
    pub members_count: Option<u32>,
    /// This member: 0..N-1, or a pod name ending in it (spillway-2).
    #[arg(long = "cluster.member-num", value_name = "I")]
    pub member_num: Option<String>,
    /// Members evaluating each group (HA); set the destination's
    /// -dedup.minScrapeInterval to collapse the identical copies.
    #[arg(long = "cluster.replication-factor", value_name = "R")]
    pub replication_factor: Option<u32>,
}

impl ClusterArgs {
    pub fn to_flags(&self) -> ClusterFlags {
        ClusterFlags {
            members_count: self.members_count,
            member_num: self.member_num.clone(),
            replication_factor: self.replication_factor,
        }
    }
}

impl RunArgs {
    pub fn to_options(&self) -> RunOptions {
        RunOptions {
            config: self.config.clone(),
            http: self.http.to_options(),
            shutdown_timeout: self.shutdown_timeout,
            dry_run: self.dry_run,
            cluster: self.cluster.to_flags(),
            config_check_interval: self.config_check_interval,
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  spillway replay -c spillway.yml --from 2024-05-01T00:00:00Z --to 2024-05-02T00:00:00Z\n  \
spillway replay -c spillway.yml --from now-6h --group static_thresholds\n\n\
Breaches are exported with their original timestamps through global_relabel_configs and each\n\
destination's relabeling and disk queue. Exit 1 if a rule failed (the others still ran)."
)]
pub struct ReplayArgs {
    /// The run config: the same datasources, rule files and destinations as `spillway run`.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Range start: RFC 3339, unix seconds, or now-DURATION.
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    pub from: TimeArg,
    /// Range end: RFC 3339, unix seconds, now or now-DURATION (default: now).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    pub to: Option<TimeArg>,
    /// Replay only this group (repeatable).
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Points per range request (vmalert's -replay.maxDatapointsPerQuery), 1 to 1000000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_datapoints_per_query: u32,
    /// How long to wait at the end for the destinations to deliver; what is
    /// left stays queued for the next run.
    #[arg(long, default_value = "1m", value_parser = duration_arg)]
    pub drain_timeout: std::time::Duration,
    /// Queue directory instead of storage.path (needed while `spillway run` holds those queues).
    #[arg(long = "storage.path", value_name = "DIR")]
    pub storage_path: Option<PathBuf>,
    /// Open the config's breach captures for the breaches found and copy
    /// their raw data (the default when the config has `captures:`).
    #[arg(long, conflicts_with = "no_captures")]
    pub captures: bool,
    /// Replay the rules only, without breach captures.
    #[arg(long)]
    pub no_captures: bool,
    /// Replay only the groups this cluster member owns, as `run` evaluates them.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl ReplayArgs {
    pub fn to_options(&self) -> ReplayCommand {
        ReplayCommand {
            config: self.config.clone(),
            from: self.from.clone(),
            to: self.to.clone().unwrap_or(TimeArg::Now),
            groups: self.groups.clone(),
            max_datapoints_per_query: self.max_datapoints_per_query as usize,
            drain_timeout: self.drain_timeout,
            storage_path: self.storage_path.clone(),
            captures: match (self.captures, self.no_captures) {
                (_, true) => Some(false),
                (true, false) => Some(true),
                (false, false) => None,
            },
            cluster: self.cluster.to_flags(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum RulesCommand {
    /// Check vmalert rule files as `spillway run` loads them; every file
    /// is checked and every problem printed with file:line (exit 1 if any).
    Check(RulesCheckArgs),
    /// Evaluate every rule once, now, and print per destination the series
    /// it would receive after relabeling. Nothing is sent.
    Preview(RulesPreviewArgs),
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  spillway rules check rules/*.yml\n  spillway rules check --rule-type vlogs logs/*.yml\n  \
spillway rules check --datasource http://127.0.0.1:8428 --vlogs-datasource http://127.0.0.1:9428 rules/*.yml"
)]
pub struct RulesCheckArgs {
    /// Rule files or glob patterns (quoted globs are expanded as vmalert's -rule).
    #[arg(required = true, value_name = "FILES")]
    pub files: Vec<String>,
    /// Type of groups without `type:` (vmalert's -rule.defaultRuleType): prometheus or vlogs.
    #[arg(long = "rule-type", value_name = "TYPE")]
    pub rule_type: Option<String>,
    /// Also have this Prometheus/VictoriaMetrics server parse every PromQL/MetricsQL
    /// expr (one instant query at the Unix epoch each; no data is read).
    #[arg(long, value_name = "URL")]
    pub datasource: Option<String>,
    /// Also have this VictoriaLogs parse every LogsQL expr (one stats query
    /// over a zero-length window each).
    #[arg(long = "vlogs-datasource", value_name = "URL")]
    pub vlogs_datasource: Option<String>,
}

impl RulesCheckArgs {
    pub fn to_options(&self) -> RulesCheck {
        RulesCheck {
            files: self.files.clone(),
            default_rule_type: self.rule_type.clone(),
            datasource: self.datasource.clone(),
            vlogs_datasource: self.vlogs_datasource.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  spillway rules preview -c spillway.yml")]
pub struct RulesPreviewArgs {
    /// The run config.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Only this group (repeatable).
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Evaluate as of this time instead of now (RFC 3339, unix seconds, now-DURATION).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    pub at: Option<TimeArg>,
}

impl RulesPreviewArgs {
    pub fn to_options(&self) -> RulesPreview {
        RulesPreview {
            config: self.config.clone(),
            groups: self.groups.clone(),
            at: self.at.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  spillway relabel --config relabel.yml --labels '{__name__=\"up\",job=\"node\"}'\n  \
spillway relabel --config spillway.yml --destination incidents --labels 'up{job=\"node\"}'\n  \
spillway relabel --config shard.yml --dialect prometheus --labels '{\"dropme-please\"=\"x\"}'"
)]
pub struct RelabelArgs {
    /// A relabel_configs list, or a run config (then global_relabel_configs apply).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The series to relabel: {__name__="x", a="b"}, x{a="b"}, {} (no labels);
    /// quote names that are not Prometheus-style: {"dropme-please"="x"}.
    #[arg(long, allow_hyphen_values = true)]
    pub labels: String,
    /// With a run config: continue through this destination's relabel_configs.
    #[arg(long)]
    pub destination: Option<String>,
    /// Relabel as `prometheus` or `victoriametrics` (vmagent) does, whatever
    /// the config says (default: the config's `relabel_dialect`, else victoriametrics).
    #[arg(long, value_name = "DIALECT", value_parser = Dialect::parse)]
    pub dialect: Option<Dialect>,
}

impl RelabelArgs {
    pub fn to_options(&self) -> RelabelOptions {
        RelabelOptions {
            config: self.config.clone(),
            labels: self.labels.clone(),
            destination: self.destination.clone(),
            dialect: self.dialect,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use crate::model::time::TimeArg;
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
        assert_eq!(o.http.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(o.shutdown_timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn cluster_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "run",
            "-c",
            "x.yml",
            "--cluster.members-count",
            "3",
            "--cluster.member-num",
            "spillway-2",
            "--cluster.replication-factor",
            "2",
            "--config.check-interval",
            "30s",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let o = r.to_options();
        assert_eq!(o.cluster.members_count, Some(3));
        assert_eq!(o.cluster.member_num.as_deref(), Some("spillway-2"));
        assert_eq!(o.cluster.replication_factor, Some(2));
        assert_eq!(
            o.config_check_interval,
            Some(std::time::Duration::from_secs(30))
        );
    }

    #[test]
    fn auth_flag() {
        let cli =
            Cli::try_parse_from(["spillway", "run", "-c", "x.yml", "--http.auth", "u:p"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.to_options().http.auth.is_some());
        // Checked when the server starts, so a bad value is never echoed.
        let cli = Cli::try_parse_from([
            "spillway",
            "run",
            "-c",
            "x.yml",
            "--http.auth",
            "s3cret-without-user",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let e = r
            .to_options()
            .http
            .resolve("127.0.0.1:1", crate::server::ServerKind::Run)
            .unwrap_err();
        assert!(e.contains("USER:PASSWORD") && !e.contains("s3cret"), "{e}");
        let cli = Cli::try_parse_from([
            "spillway",
            "run",
            "-c",
            "x.yml",
            "--http.auth-file",
            "/a",
            "--http.allowed-hosts",
            "a,b",
            "--http.allowed-hosts",
            "c",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let o = r.to_options();
        assert_eq!(o.http.auth_file.unwrap().to_str(), Some("/a"));
        assert_eq!(o.http.allowed_hosts, ["a", "b", "c"]);
    }

    #[test]
    fn replay_flags() {
        let cli = Cli::try_parse_from([
            "spillway",
            "replay",
            "-c",
            "x.yml",
            "--from",
            "2024-05-01T00:00:00Z",
            "--to",
            "1714525200",
            "--group",
            "a",
            "--group",
            "b",
        ])
        .unwrap();
        let Command::Replay(r) = cli.command else {
            panic!("not replay")
        };
        let o = r.to_options();
        assert_eq!(o.from, TimeArg::At(1_714_521_600_000));
        assert_eq!(o.to, TimeArg::At(1_714_525_200_000));
        assert_eq!(o.groups, ["a", "b"]);
        assert_eq!(o.max_datapoints_per_query, 1000);
        let cli =
            Cli::try_parse_from(["spillway", "replay", "-c", "x.yml", "--from", "-6h"]).unwrap();
        let Command::Replay(r) = cli.command else {
            panic!("not replay")
        };
        let o = r.to_options();
        assert_eq!(o.to, TimeArg::Now);
        assert!(matches!(o.from, TimeArg::Ago { ago, .. } if ago.as_secs() == 6 * 3600));
        assert!(
            Cli::try_parse_from(["spillway", "replay", "-c", "x", "--from", "yesterday"]).is_err()
        );
    }

    /// Regression (#14.13): `--from=-9223372036854775808` was taken as "now"
    /// (a duration that wrapped), and `--max-datapoints-per-query` had no bound.
    #[test]
    fn replay_refuses_out_of_range_values() {
        let e = Cli::try_parse_from([
            "spillway",
            "replay",
            "-c",
            "x",
            "--from=-9223372036854775808",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("before 1970-01-01T00:00:00Z"), "{e}");
        assert!(!e.contains("\"now\""), "{e}");
        for bad in ["0", "18446744073709551615"] {
            assert!(Cli::try_parse_from([
                "spillway",
                "replay",
                "-c",
                "x",
                "--from",
                "-1h",
                "--max-datapoints-per-query",
                bad
            ])
            .is_err());
        }
    }

    #[test]
    fn rules_flags() {
        use super::RulesCommand;
        let cli = Cli::try_parse_from([
            "spillway",
            "rules",
            "check",
            "--rule-type",
            "vlogs",
            "a",
            "b",
        ])
        .unwrap();
        let Command::Rules(r) = cli.command else {
            panic!("not rules")
        };
        let RulesCommand::Check(c) = r.command else {
            panic!("not check")
        };
        let o = c.to_options();
        assert_eq!(o.files, ["a", "b"]);
        assert_eq!(o.default_rule_type.as_deref(), Some("vlogs"));
        assert!(Cli::try_parse_from(["spillway", "rules", "check"]).is_err());
        let cli = Cli::try_parse_from(["spillway", "rules", "preview", "-c", "x.yml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rules(super::RulesArgs {
                command: RulesCommand::Preview(_)
            })
        ));
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
        assert_eq!(r.to_options().dialect, None);
        let cli = Cli::try_parse_from([
            "spillway",
            "relabel",
            "-c",
            "r.yml",
            "--labels",
            "{}",
            "--dialect",
            "prometheus",
        ])
        .unwrap();
        let Command::Relabel(r) = cli.command else {
            panic!("not relabel")
        };
        assert_eq!(
            r.to_options().dialect,
            Some(crate::transform::relabel::Dialect::Prometheus)
        );
        let e = Cli::try_parse_from([
            "spillway",
            "relabel",
            "-c",
            "r.yml",
            "--labels",
            "{}",
            "--dialect",
            "promql",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("victoriametrics"), "{e}");
    }
}
