//! The checked settings of an event destination, one struct per type. `run`
//! builds them from the YAML (with file:line errors); nothing here can hold
//! an invalid state.

use super::shape::EventShape;
use super::template::EventTemplate;
use super::EventKind;
use std::path::PathBuf;
use std::time::Duration;

/// Everything an event destination needs besides the queue and the HTTP client.
#[derive(Clone, Debug, PartialEq)]
pub struct EventConfig {
    pub kind: EventKind,
    pub shape: EventShape,
    pub target: Target,
    /// `<storage.path>/dead-letter/<queue dir name>.jsonl`.
    pub dead_letter: PathBuf,
    /// `dead_letter_max_bytes`: both dead-letter files together.
    pub dead_letter_max_bytes: u64,
}

/// `dead_letter_max_bytes` as written (a size like `256MiB`), checked:
/// at least 2 KiB, so that each of the two files holds a line or more.
pub fn dead_letter_max_bytes(text: Option<&str>) -> Result<u64, String> {
    let Some(text) = text else {
        return Ok(super::dead_letter::DEFAULT_MAX_BYTES);
    };
    match crate::model::size::parse_size(text)? {
        n if n >= 2048 => Ok(n),
        n => Err(format!("{n} bytes is too small; give at least 2KiB")),
    }
}

impl EventConfig {
    /// Where events go, for logs and `/api/v1/destinations` (no credentials).
    pub fn display_target(&self, http_url: &str) -> String {
        match &self.target {
            Target::Syslog(s) => format!("{}://{}", s.transport.scheme(), s.address),
            Target::File(f) => f.directory.display().to_string(),
            _ => http_url.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Syslog(SyslogConfig),
    Elasticsearch(ElasticsearchConfig),
    Splunk(SplunkConfig),
    Webhook(WebhookConfig),
    File(FileConfig),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogTransport {
    /// RFC 6587 octet counting over TCP.
    Tcp,
    /// The same over TLS (RFC 5425).
    Tls,
    /// One message per datagram (RFC 5426).
    Udp,
    /// RELP: every message acknowledged by the receiver.
    Relp,
}

impl SyslogTransport {
    pub fn parse(scheme: &str) -> Option<SyslogTransport> {
        match scheme {
            "tcp" => Some(SyslogTransport::Tcp),
            "tls" => Some(SyslogTransport::Tls),
            "udp" => Some(SyslogTransport::Udp),
            "relp" => Some(SyslogTransport::Relp),
            _ => None,
        }
    }

    pub fn scheme(self) -> &'static str {
        match self {
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Tls => "tls",
            SyslogTransport::Udp => "udp",
            SyslogTransport::Relp => "relp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogFormat {
    Json,
    Cef,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyslogConfig {
    pub transport: SyslogTransport,
    /// `host:port`.
    pub address: String,
    /// The host name TLS verifies (the URL's host).
    pub server_name: String,
    pub format: SyslogFormat,
    pub app_name: String,
    /// 0..=23.
    pub facility: u8,
    /// RFC 5424 HOSTNAME.
    pub hostname: String,
    /// The label whose value gives the severity.
    pub severity_from: String,
    pub tls: TlsFiles,
    /// How long a connection attempt or an unanswered RELP window may take.
    pub timeout: Duration,
    /// RELP: frames written before their answers are awaited.
    pub relp_window: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpType {
    Index,
    Create,
}

impl OpType {
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Index => "index",
            OpType::Create => "create",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ElasticsearchConfig {
    /// An index name, a strftime-like pattern (`spillway-%Y.%m.%d`, from the
    /// event time, UTC), or a data stream name.
    pub index: String,
    pub op_type: OpType,
    pub pipeline: Option<String>,
    pub gzip: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HecFormat {
    Event,
    Metric,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SplunkConfig {
    pub format: HecFormat,
    pub index: Option<EventTemplate>,
    pub sourcetype: Option<EventTemplate>,
    pub source: Option<EventTemplate>,
    pub host: Option<EventTemplate>,
    /// Indexer acknowledgement.
    pub ack: bool,
    pub ack_timeout: Duration,
    pub ack_poll_interval: Duration,
    /// `X-Splunk-Request-Channel`.
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    /// The URL's path, posted to as given (the client's base is the origin).
    pub path: String,
    /// Renders one event; see [`super::webhook`].
    pub body_template: Option<EventTemplate>,
    pub one_event_per_request: bool,
    pub content_type: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Jsonl,
    Csv,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FileConfig {
    pub directory: PathBuf,
    /// File name without extension; the live file is `<name>.<ext>`.
    pub name: String,
    pub format: FileFormat,
    pub max_bytes: Option<u64>,
    pub rotate_every: Option<Duration>,
    /// Rotated files kept; older ones are deleted.
    pub keep: usize,
}

/// Syslog facilities by name (RFC 5424 table 1).
pub fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
        .or_else(|| name.parse::<u8>().ok().filter(|n| *n < 24))
}
