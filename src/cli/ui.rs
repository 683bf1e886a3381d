//! `spillway ui` flags; the server is `crate::ui`.

use super::http::HttpArgs;
use crate::model::size::parse_size;
use crate::model::time::parse_duration;
use crate::ui::jobs::JobLimits;
use crate::ui::{UiOptions, UploadLimits};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  spillway ui                                  # http://127.0.0.1:8080/ (next free port if busy)
  spillway ui --open --staging ./bundles
  spillway ui --http.listen 0.0.0.0:8080 --http.auth-file ./ui-auth   # other machines need auth
  spillway ui --http.allowed-hosts spillway.example                   # served under a DNS name")]
pub struct UiArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Open the UI in the default browser.
    #[arg(long)]
    pub open: bool,
    /// Where bundles, staged windows and uploads go; the API reaches no file outside it.
    #[arg(long, value_name = "DIR", default_value = "spillway-ui")]
    pub staging: PathBuf,
    /// How long finished jobs, their files and unimported uploads are kept.
    #[arg(long, default_value = "1h")]
    pub retention: String,
    /// Largest bundle the import page accepts (e.g. 1GiB); uploads waiting
    /// for import may hold four times this.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub max_upload_bytes: String,
    /// Exports that may wait for one of the 3 running ones (more are refused with 429).
    #[arg(long, default_value_t = JobLimits::default().max_queued_exports)]
    pub max_queued_exports: usize,
    /// Imports that may run at once (more are refused with 429).
    #[arg(long, default_value_t = JobLimits::default().max_running_imports)]
    pub max_running_imports: usize,
}

impl UiArgs {
    pub fn to_options(&self) -> Result<UiOptions, String> {
        let retention = parse_duration(&self.retention).map_err(|e| format!("--retention: {e}"))?;
        let max_upload =
            parse_size(&self.max_upload_bytes).map_err(|e| format!("--max-upload-bytes: {e}"))?;
        let mut http = self.http.to_options();
        // The variable `spillway ui` read before the flags were shared.
        if http.auth.is_none() && http.auth_file.is_none() {
            http.auth = std::env::var("SPILLWAY_UI_AUTH").ok().map(Into::into);
        }
        Ok(UiOptions {
            http,
            open: self.open,
            staging: self.staging.clone(),
            jobs: JobLimits {
                retention,
                max_queued_exports: self.max_queued_exports,
                max_running_imports: self.max_running_imports.max(1),
            },
            uploads: UploadLimits::new(max_upload),
        })
    }
}

/// Runs `spillway ui` until interrupted.
pub async fn ui(args: UiArgs) -> ExitCode {
    let result = match args.to_options() {
        Ok(opts) => crate::ui::run(opts).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn old_flags_are_aliases() {
        let cli = Cli::try_parse_from([
            "spillway",
            "ui",
            "--addr",
            "0.0.0.0:9",
            "--auth",
            "a:b",
            "--max-upload-bytes",
            "2GiB",
            "--http.allowed-hosts",
            "x.example,.corp",
        ])
        .unwrap();
        let Command::Ui(u) = cli.command else {
            panic!("not ui")
        };
        let o = u.to_options().unwrap();
        assert_eq!(o.http.listen.as_deref(), Some("0.0.0.0:9"));
        assert_eq!(o.http.auth.unwrap().expose(), "a:b");
        assert_eq!(o.http.allowed_hosts, ["x.example", ".corp"]);
        assert_eq!(o.uploads.max_upload_bytes, 2 << 30);
        assert!(!format!("{:?}", u.http).contains("a:b"));
        let cli = Cli::try_parse_from(["spillway", "ui"]).unwrap();
        let Command::Ui(u) = cli.command else {
            panic!("not ui")
        };
        let o = u.to_options().unwrap();
        assert_eq!(
            o.uploads.max_upload_bytes,
            crate::ui::DEFAULT_MAX_UPLOAD_BYTES
        );
    }
}
