//! `spillway ui` flags; the server is `crate::ui`.

use crate::model::time::parse_duration;
use crate::ui::{UiOptions, DEFAULT_MAX_UPLOAD_BYTES};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  spillway ui                                  # http://127.0.0.1:8080/ (next free port if busy)
  spillway ui --open --staging ./bundles
  spillway ui --addr 0.0.0.0:8080 --auth admin:s3cret   # other machines need --auth")]
pub struct UiArgs {
    /// Address to listen on; if its port is busy, the next free one is used.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Open the UI in the default browser.
    #[arg(long)]
    pub open: bool,
    /// Require HTTP basic auth USER:PASSWORD (mandatory on a non-loopback address).
    #[arg(
        long,
        env = "SPILLWAY_UI_AUTH",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub auth: Option<String>,
    /// Where bundles, staged windows and uploads go; the API reaches no file outside it.
    #[arg(long, value_name = "DIR", default_value = "spillway-ui")]
    pub staging: PathBuf,
    /// How long finished jobs and their files are kept.
    #[arg(long, default_value = "1h")]
    pub retention: String,
    /// Largest bundle the import page accepts (bytes).
    #[arg(long, default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
}

/// Runs `spillway ui` until interrupted.
pub async fn ui(args: UiArgs) -> ExitCode {
    let retention = match parse_duration(&args.retention) {
        Ok(d) => d,
        Err(e) => {
            crate::errln!("error: --retention: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = UiOptions {
        addr: args.addr,
        open: args.open,
        auth: args.auth,
        staging: args.staging,
        retention,
        max_upload_bytes: args.max_upload_bytes,
    };
    match crate::ui::run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
