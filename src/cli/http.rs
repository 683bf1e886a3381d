//! The HTTP flags `spillway run` and `spillway ui` share: one vocabulary,
//! one policy (`crate::server::guard`). `ui`'s old `--addr` and `--auth`
//! remain as aliases.

use crate::client::Secret;
use crate::server::HttpOptions;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// Address to listen on (ui: 127.0.0.1:8080, the next free port if busy;
    /// run: server.listen or 127.0.0.1:8880). An address other machines can
    /// reach requires --http.auth-file or --http.auth.
    #[arg(long = "http.listen", visible_alias = "addr", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Require HTTP basic auth USER:PASSWORD on every route but /health.
    /// Arguments show in `ps`: prefer --http.auth-file or the environment
    /// variable.
    #[arg(
        long = "http.auth",
        visible_alias = "auth",
        value_name = "USER:PASSWORD",
        env = "SPILLWAY_HTTP_AUTH",
        hide_env_values = true
    )]
    pub auth: Option<Secret>,
    /// File whose first line is USER:PASSWORD for HTTP basic auth.
    #[arg(long = "http.auth-file", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// More Host names to serve, comma-separated or repeated: a name
    /// (spillway.example), a domain suffix (.example) or * for any. IP
    /// addresses, localhost and the listen host are always served; any
    /// other Host is refused (against DNS rebinding).
    #[arg(
        long = "http.allowed-hosts",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
}

impl HttpArgs {
    pub fn to_options(&self) -> HttpOptions {
        HttpOptions {
            listen: self.listen.clone(),
            auth: self.auth.clone(),
            auth_file: self.auth_file.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
        }
    }
}
