//! Checking the parts of a destination that event types and schedules add
//! (see [`crate::sink::event`] and [`crate::sink::schedule`]): which field
//! belongs to which type, URL schemes, templates, sizes, durations, time
//! zones; every problem as `FILE:LINE: destinations[i].field: ...`.

use super::check::Place;
use crate::client::{ClientConfig, Secret};
use crate::model::size::parse_size;
use crate::model::time::parse_duration;
use crate::run::config::DestinationSpec;
use crate::sink::destination::queue_dir_name;
use crate::sink::event::config::*;
use crate::sink::event::template::EventTemplate;
use crate::sink::event::{EventConfig, EventKind, EventShape};
use crate::sink::schedule::{Outside, Schedule, ScheduleRoute};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The event fields that are set, with the types that take each.
fn event_fields(spec: &DestinationSpec) -> Vec<(&'static str, bool, &'static [EventKind])> {
    use EventKind::*;
    const ALL: &[EventKind] = &[Syslog, Elasticsearch, SplunkHec, Webhook, File];
    vec![
        ("format", spec.format.is_some(), &[Syslog, SplunkHec, File]),
        ("fields", !spec.fields.is_empty(), ALL),
        (
            "event_labels_as_fields",
            spec.event_labels_as_fields.is_some(),
            ALL,
        ),
        ("client_cert", spec.client_cert.is_some(), &[Syslog]),
        ("app_name", spec.app_name.is_some(), &[Syslog]),
        ("facility", spec.facility.is_some(), &[Syslog]),
        ("hostname", spec.hostname.is_some(), &[Syslog]),
        ("severity_from", spec.severity_from.is_some(), &[Syslog]),
        ("relp_window", spec.relp_window.is_some(), &[Syslog]),
        ("index", spec.index.is_some(), &[Elasticsearch, SplunkHec]),
        ("op_type", spec.op_type.is_some(), &[Elasticsearch]),
        ("pipeline", spec.pipeline.is_some(), &[Elasticsearch]),
        ("gzip", spec.gzip.is_some(), &[Elasticsearch]),
        ("api_key", spec.api_key.is_some(), &[Elasticsearch]),
        (
            "api_key_file",
            spec.api_key_file.is_some(),
            &[Elasticsearch],
        ),
        ("token", spec.token.is_some(), &[SplunkHec]),
        ("token_file", spec.token_file.is_some(), &[SplunkHec]),
        ("token_env", spec.token_env.is_some(), &[SplunkHec]),
        ("sourcetype", spec.sourcetype.is_some(), &[SplunkHec]),
        ("source", spec.source.is_some(), &[SplunkHec]),
        ("host", spec.host.is_some(), &[SplunkHec]),
        ("ack", spec.ack.is_some(), &[SplunkHec]),
        ("ack_timeout", spec.ack_timeout.is_some(), &[SplunkHec]),
        ("channel", spec.channel.is_some(), &[SplunkHec]),
        ("body_template", spec.body_template.is_some(), &[Webhook]),
        (
            "one_event_per_request",
            spec.one_event_per_request.is_some(),
            &[Webhook],
        ),
        ("content_type", spec.content_type.is_some(), &[Webhook]),
        ("directory", spec.directory.is_some(), &[File]),
        ("file_name", spec.file_name.is_some(), &[File]),
        ("max_bytes", spec.max_bytes.is_some(), &[File]),
        ("rotate_every", spec.rotate_every.is_some(), &[File]),
        ("keep", spec.keep.is_some(), &[File]),
        (
            "dead_letter_max_bytes",
            spec.dead_letter_max_bytes.is_some(),
            ALL,
        ),
    ]
}

/// Fields of another type set on this one.
fn misplaced(spec: &DestinationSpec, kind: Option<EventKind>, place: &Place<'_>) -> Vec<String> {
    let name = kind.map_or("remote_write/vm_import", |k| k.as_str());
    event_fields(spec)
        .into_iter()
        .filter(|(_, set, takes)| *set && !kind.is_some_and(|k| takes.contains(&k)))
        .map(|(field, _, takes)| {
            let types: Vec<&str> = takes.iter().map(|k| k.as_str()).collect();
            format!(
                "{}: not a field of type {name}; it applies to {}",
                place.at(field),
                types.join(", ")
            )
        })
        .collect()
}

/// Metric destinations: no event field may be set.
pub(super) fn check_metric_fields(spec: &DestinationSpec, place: &Place<'_>) -> Vec<String> {
    misplaced(spec, None, place)
}

/// The settings of an event destination, and what its HTTP client needs
/// (auth headers, the request URL). `client` is `None` for syslog and
/// file, which have no HTTP client.
pub(super) fn check_event(
    spec: &DestinationSpec,
    kind: EventKind,
    place: &Place<'_>,
    storage: &Path,
    client: Option<&mut ClientConfig>,
    problems: &mut Vec<String>,
) -> Option<Arc<EventConfig>> {
    let before = problems.len();
    problems.extend(misplaced(spec, Some(kind), place));
    let at = |f: &str| place.at(f);
    let dead_letter_max_bytes = dead_letter_max_bytes(spec.dead_letter_max_bytes.as_deref())
        .map_err(|e| problems.push(format!("{}: {e}", at("dead_letter_max_bytes"))))
        .unwrap_or_default();
    let shape = EventShape::new(&spec.fields, spec.event_labels_as_fields.unwrap_or(false))
        .map_err(|e| problems.push(format!("{}: {e}", at("fields"))))
        .ok();
    let target = match kind {
        EventKind::Syslog => syslog(spec, place, problems).map(Target::Syslog),
        EventKind::Elasticsearch => {
            elasticsearch(spec, place, client, problems).map(Target::Elasticsearch)
        }
        EventKind::SplunkHec => splunk(spec, place, client, problems).map(Target::Splunk),
        EventKind::Webhook => webhook(spec, place, client, problems).map(Target::Webhook),
        EventKind::File => file(spec, place, problems).map(Target::File),
    };
    match (shape, target) {
        (Some(shape), Some(target)) if problems.len() == before => Some(Arc::new(EventConfig {
            kind,
            shape,
            target,
            dead_letter: storage
                .join("dead-letter")
                .join(format!("{}.jsonl", queue_dir_name(&spec.name))),
            dead_letter_max_bytes,
        })),
        _ => None,
    }
}

fn one_of<'a>(
    value: Option<&'a str>,
    default: &'a str,
    allowed: &[&str],
    field: &str,
    place: &Place<'_>,
    problems: &mut Vec<String>,
) -> &'a str {
    let v = value.unwrap_or(default);
    if !allowed.contains(&v) {
        problems.push(format!(
            "{}: {v:?} is not one of {}",
            place.at(field),
            allowed.join(", ")
        ));
    }
    v
}

fn duration(
    value: Option<&str>,
    default: Duration,
    field: &str,
    place: &Place<'_>,
    problems: &mut Vec<String>,
) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.push(format!("{}: must be more than 0", place.at(field)));
            default
        }
        Some(Err(e)) => {
            problems.push(format!("{}: {e}", place.at(field)));
            default
        }
    }
}

fn template(
    value: Option<&str>,
    field: &str,
    place: &Place<'_>,
    problems: &mut Vec<String>,
) -> Option<EventTemplate> {
    let v = value?;
    match EventTemplate::parse(v, crate::run::rules::template_functions) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!(
                "{}: template {v:?} does not parse: {e}",
                place.at(field)
            ));
            None
        }
    }
}

fn syslog(
    spec: &DestinationSpec,
    place: &Place<'_>,
    problems: &mut Vec<String>,
) -> Option<SyslogConfig> {
    let at = |f: &str| place.at(f);
    let Some(raw) = spec.url.as_deref() else {
        problems.push(format!(
            "{}: missing; give the receiver as tcp://host:514, tls://host:6514, udp://host:514 or relp://host:2514",
            at("url")
        ));
        return None;
    };
    let (transport, host, port) = match url::Url::parse(raw.trim()) {
        Ok(u) => {
            let t = SyslogTransport::parse(u.scheme());
            match (t, u.host_str(), u.port()) {
                (Some(t), Some(h), Some(p)) => (t, h.to_string(), p),
                (None, _, _) => {
                    problems.push(format!(
                        "{}: scheme {:?} is not a syslog transport; use tcp://, tls://, udp:// or relp://",
                        at("url"),
                        u.scheme()
                    ));
                    return None;
                }
                _ => {
                    problems.push(format!(
                        "{}: {raw:?} needs a host and a port, e.g. tcp://siem:514",
                        at("url")
                    ));
                    return None;
                }
            }
        }
        Err(e) => {
            problems.push(format!(
                "{}: {raw:?} is not a URL ({e}); e.g. tcp://siem:514",
                at("url")
            ));
            return None;
        }
    };
    let http_only = [
        ("basic_auth", spec.basic_auth.is_some()),
        ("bearer_token", spec.bearer_token.is_some()),
        ("bearer_token_file", spec.bearer_token_file.is_some()),
        ("headers", !spec.headers.is_empty()),
        ("tenant", spec.tenant.is_some()),
    ];
    for (f, set) in http_only {
        if set {
            problems.push(format!(
                "{}: syslog destinations have no HTTP settings",
                at(f)
            ));
        }
    }
    let format = match one_of(
        spec.format.as_deref(),
        "json",
        &["json", "cef"],
        "format",
        place,
        problems,
    ) {
        "cef" => SyslogFormat::Cef,
        _ => SyslogFormat::Json,
    };
    let facility_name = spec.facility.as_deref().unwrap_or("local0");
    let facility = facility_code(facility_name).unwrap_or_else(|| {
        problems.push(format!(
            "{}: {facility_name:?} is not a syslog facility; use kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, solaris-cron, local0..local7 or 0..23",
            at("facility")
        ));
        16
    });
    let app_name = spec.app_name.as_deref().unwrap_or("spillway");
    if app_name.is_empty() || crate::sink::event::syslog::printable(app_name, 48) != app_name {
        problems.push(format!(
            "{}: {app_name:?} must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)",
            at("app_name")
        ));
    }
    let hostname = match spec.hostname.as_deref() {
        None => crate::sink::event::syslog::local_hostname(),
        Some(h) if !h.is_empty() && crate::sink::event::syslog::printable(h, 255) == h => {
            h.to_string()
        }
        Some(h) => {
            problems.push(format!(
                "{}: {h:?} must be 1 to 255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)",
                at("hostname")
            ));
            String::new()
        }
    };
    let tls_spec = spec.tls.clone().unwrap_or_default();
    if transport != SyslogTransport::Tls && (spec.tls.is_some() || spec.client_cert.is_some()) {
        problems.push(format!(
            "{}: TLS settings need a tls:// URL",
            at(if spec.tls.is_some() {
                "tls"
            } else {
                "client_cert"
            })
        ));
    }
    let tls = TlsFiles {
        ca_file: tls_spec.ca_file,
        cert_file: spec.client_cert.as_ref().map(|c| c.cert_file.clone()),
        key_file: spec.client_cert.as_ref().map(|c| c.key_file.clone()),
        insecure_skip_verify: tls_spec.insecure_skip_verify,
    };
    if transport == SyslogTransport::Tls {
        if let Err(e) = crate::sink::event::syslog::tls_connector(&tls) {
            let field = if e.starts_with("tls.") {
                "tls"
            } else {
                "client_cert"
            };
            problems.push(format!("{}: {e}", at(field)));
        }
    }
    let relp_window = match spec.relp_window {
        None => crate::sink::event::relp::DEFAULT_WINDOW,
        Some(w) if transport != SyslogTransport::Relp => {
            problems.push(format!("{}: needs a relp:// URL", at("relp_window")));
            w as usize
        }
        Some(w @ 1..=crate::sink::event::relp::MAX_WINDOW) => w as usize,
        Some(w) => {
            problems.push(format!(
                "{}: {w} is not between 1 and {}",
                at("relp_window"),
                crate::sink::event::relp::MAX_WINDOW
            ));
            crate::sink::event::relp::DEFAULT_WINDOW
        }
    };
    let timeout = duration(
        spec.timeout.as_deref(),
        Duration::from_secs(10),
        "timeout",
        place,
        problems,
    );
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some(SyslogConfig {
        transport,
        address,
        server_name: host,
        format,
        app_name: app_name.to_string(),
        facility,
        hostname,
        severity_from: spec
            .severity_from
            .clone()
            .unwrap_or_else(|| "severity".into()),
        tls,
        timeout,
        relp_window,
    })
}

/// Adds `Authorization: <scheme> <secret>` to the client.
fn auth_header(client: &mut ClientConfig, scheme: &str, secret: &str) {
    client.headers.push((
        "Authorization".into(),
        Secret::new(format!("{scheme} {secret}")),
    ));
}

fn elasticsearch(
    spec: &DestinationSpec,
    place: &Place<'_>,
    client: Option<&mut ClientConfig>,
    problems: &mut Vec<String>,
) -> Option<ElasticsearchConfig> {
    let at = |f: &str| place.at(f);
    let op_type = match one_of(
        spec.op_type.as_deref(),
        "index",
        &["index", "create"],
        "op_type",
        place,
        problems,
    ) {
        "create" => OpType::Create,
        _ => OpType::Index,
    };
    let index = spec
        .index
        .clone()
        .unwrap_or_else(|| "spillway-%Y.%m.%d".into());
    if let Err(e) = crate::sink::event::elasticsearch::check_index(&index, op_type) {
        problems.push(format!("{}: {e}", at("index")));
    }
    let key = match (&spec.api_key, &spec.api_key_file) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{}: set api_key or api_key_file, not both",
                at("api_key")
            ));
            None
        }
        (Some(k), None) => Some(k.clone()),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(k) => Some(k.trim().to_string()),
            Err(e) => {
                problems.push(format!("{}: {}: {e}", at("api_key_file"), f.display()));
                None
            }
        },
        (None, None) => None,
    };
    if let Some(client) = client {
        if let Some(key) = key {
            if !matches!(client.auth, crate::client::Auth::None) {
                problems.push(format!(
                    "{}: use api_key or basic_auth/bearer_token, not both",
                    at("api_key")
                ));
            }
            auth_header(client, "ApiKey", &key);
        }
        if let Some(p) = &spec.pipeline {
            // A URL that does not parse is reported with `url`.
            if let Ok(mut u) = url::Url::parse(client.url.trim()) {
                u.query_pairs_mut().append_pair("pipeline", p);
                client.url = u.to_string();
            }
        }
    }
    Some(ElasticsearchConfig {
        index,
        op_type,
        pipeline: spec.pipeline.clone(),
        gzip: spec.gzip.unwrap_or(false),
    })
}

fn splunk(
    spec: &DestinationSpec,
    place: &Place<'_>,
    client: Option<&mut ClientConfig>,
    problems: &mut Vec<String>,
) -> Option<SplunkConfig> {
    let at = |f: &str| place.at(f);
    let format = match one_of(
        spec.format.as_deref(),
        "event",
        &["event", "metric"],
        "format",
        place,
        problems,
    ) {
        "metric" => HecFormat::Metric,
        _ => HecFormat::Event,
    };
    let token = match (&spec.token, &spec.token_file, &spec.token_env) {
        (Some(t), None, None) => Some(t.clone()),
        (None, Some(f), None) => match std::fs::read_to_string(f) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => {
                problems.push(format!("{}: {} is empty", at("token_file"), f.display()));
                None
            }
            Err(e) => {
                problems.push(format!("{}: {}: {e}", at("token_file"), f.display()));
                None
            }
        },
        (None, None, Some(v)) => match std::env::var(v) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => {
                problems.push(format!(
                    "{}: the environment variable {v} is not set or empty",
                    at("token_env")
                ));
                None
            }
        },
        (None, None, None) => {
            problems.push(format!(
                "{}: missing; give the HEC token as token, token_file or token_env",
                at("token")
            ));
            None
        }
        _ => {
            problems.push(format!(
                "{}: give only one of token, token_file, token_env",
                at("token")
            ));
            None
        }
    };
    if let Some(client) = client {
        if let Some(t) = token {
            auth_header(client, "Splunk", &t);
        }
        // The URL may name the endpoint; requests add it themselves.
        if let Ok(mut u) = url::Url::parse(client.url.trim()) {
            if let Some(i) = u.path().find("/services/collector") {
                let base = u.path()[..i].to_string();
                u.set_path(&base);
                client.url = u.to_string();
            }
        }
    }
    let ack = spec.ack.unwrap_or(false);
    let channel = spec
        .channel
        .clone()
        .unwrap_or_else(crate::sink::event::splunk::new_channel);
    Some(SplunkConfig {
        format,
        index: template(spec.index.as_deref(), "index", place, problems),
        sourcetype: template(spec.sourcetype.as_deref(), "sourcetype", place, problems),
        source: template(spec.source.as_deref(), "source", place, problems),
        host: template(spec.host.as_deref(), "host", place, problems),
        ack,
        ack_timeout: duration(
            spec.ack_timeout.as_deref(),
            Duration::from_secs(60),
            "ack_timeout",
            place,
            problems,
        ),
        ack_poll_interval: crate::sink::event::transport::DEFAULT_ACK_POLL,
        channel,
    })
}

fn webhook(
    spec: &DestinationSpec,
    place: &Place<'_>,
    client: Option<&mut ClientConfig>,
    problems: &mut Vec<String>,
) -> Option<WebhookConfig> {
    let mut path = String::from("/");
    if let Some(client) = client {
        // The client's base is the origin, so the path is posted as given
        // (a webhook path may contain anything, `/api/v1/...` included).
        if let Ok(mut u) = url::Url::parse(client.url.trim()) {
            path = u.path().to_string();
            u.set_path("");
            client.url = u.to_string();
        }
    }
    Some(WebhookConfig {
        path,
        body_template: template(
            spec.body_template.as_deref(),
            "body_template",
            place,
            problems,
        ),
        one_event_per_request: spec.one_event_per_request.unwrap_or(false),
        content_type: spec
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".into()),
    })
}

fn file(
    spec: &DestinationSpec,
    place: &Place<'_>,
    problems: &mut Vec<String>,
) -> Option<FileConfig> {
    let at = |f: &str| place.at(f);
    if spec.url.is_some() {
        problems.push(format!(
            "{}: a file destination has no URL; give `directory`",
            at("url")
        ));
    }
    let Some(directory) = spec.directory.clone() else {
        problems.push(format!(
            "{}: missing; give the directory the event files go to",
            at("directory")
        ));
        return None;
    };
    let format = match one_of(
        spec.format.as_deref(),
        "jsonl",
        &["jsonl", "csv"],
        "format",
        place,
        problems,
    ) {
        "csv" => FileFormat::Csv,
        _ => FileFormat::Jsonl,
    };
    let name = spec
        .file_name
        .clone()
        .unwrap_or_else(|| queue_dir_name(&spec.name));
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        problems.push(format!(
            "{}: {name:?} must be a plain file name without / or a leading dot",
            at("file_name")
        ));
    }
    let max_bytes = match spec.max_bytes.as_deref().map(parse_size) {
        None => None,
        Some(Ok(n)) if n >= 1024 => Some(n),
        Some(Ok(n)) => {
            problems.push(format!(
                "{}: {n} bytes is too small; give at least 1KiB",
                at("max_bytes")
            ));
            None
        }
        Some(Err(e)) => {
            problems.push(format!("{}: {e}", at("max_bytes")));
            None
        }
    };
    let rotate_every = spec.rotate_every.as_deref().map(|_| {
        duration(
            spec.rotate_every.as_deref(),
            Duration::from_secs(3600),
            "rotate_every",
            place,
            problems,
        )
    });
    Some(FileConfig {
        directory,
        name,
        format,
        max_bytes,
        rotate_every,
        keep: spec.keep.unwrap_or(10),
    })
}

/// `schedule:` and `outside_schedule:` of any destination; the fallback's
/// existence is checked once all names are known.
pub(super) fn check_schedule(
    spec: &DestinationSpec,
    place: &Place<'_>,
    problems: &mut Vec<String>,
) -> Option<Arc<ScheduleRoute>> {
    let Some(s) = &spec.schedule else {
        if spec.outside_schedule.is_some() {
            problems.push(format!(
                "{}: only means something with a `schedule`",
                place.at("outside_schedule")
            ));
        }
        return None;
    };
    let schedule = match Schedule::new(s) {
        Ok(s) => s,
        Err(list) => {
            for (field, e) in list {
                problems.push(format!("{}.{field}: {e}", place.at("schedule")));
            }
            return None;
        }
    };
    let outside = match spec.outside_schedule.as_deref().map(str::trim) {
        None | Some("drop") => Outside::Drop,
        Some(name) if name == spec.name => {
            problems.push(format!(
                "{}: {name:?} is this destination itself; name another destination or `drop`",
                place.at("outside_schedule")
            ));
            return None;
        }
        Some(name) => Outside::Fallback(name.to_string()),
    };
    Some(Arc::new(ScheduleRoute { schedule, outside }))
}

#[cfg(test)]
mod tests {
    use crate::model::{ExportBatch, ExportKind, Labels, Origin, Sample, Series};
    use crate::run::config::RunConfig;
    use crate::run::route::{dry_route_events, PipelineConfig};

    fn check(destinations: &str) -> Result<PipelineConfig, Vec<String>> {
        let text = format!("storage: {{path: /tmp/x}}\ndestinations:\n{destinations}");
        PipelineConfig::check(&RunConfig::parse(&text, "s.yml").unwrap())
    }

    #[test]
    fn preview_shows_each_event_destination_its_wire_form() {
        let c = check(
            "  - {name: siem, type: syslog, url: 'udp://127.0.0.1:514', format: cef, hostname: h}\n  - {name: es, type: elasticsearch, url: 'http://127.0.0.1:9200', index: 'x-%Y', relabel_configs: [{action: drop, source_labels: [job], regex: b}]}\n  - {name: vm, url: 'http://127.0.0.1:8428'}\n  - {name: night, type: file, directory: /tmp/x, schedule: {hours: '00:00-06:00'}}\n",
        )
        .unwrap();
        let batch = ExportBatch::new(
            Origin::rule(ExportKind::Recording, "g", "r"),
            vec![
                Series::new(
                    Labels::from_pairs([("__name__", "m"), ("job", "a")]),
                    vec![Sample::new(43_200_000, 1.0)],
                ),
                Series::new(
                    Labels::from_pairs([("__name__", "m"), ("job", "b")]),
                    vec![Sample::new(0, 2.0)],
                ),
            ],
        );
        let out = dry_route_events(&c, &[batch]);
        assert_eq!(out[0].len(), 2);
        assert!(
            out[0][0].starts_with(
                "<133>1 1970-01-01T12:00:00.000Z h spillway - recording - CEF:0|spillway|spillway|"
            ),
            "{}",
            out[0][0]
        );
        assert_eq!(out[1].len(), 1, "relabeling applies");
        assert!(out[1][0].starts_with("{\"index\":{\"_index\":\"x-1970\"}}\n{\"time\""));
        assert!(out[2].is_empty(), "metric destinations show series");
        assert_eq!(out[3].len(), 1, "only the sample inside the schedule");
        assert!(out[3][0].contains("\"value\":2"));
    }

    #[test]
    fn fields_of_other_types_and_http_settings_are_refused() {
        let e = check("  - {name: f, type: file, directory: /tmp/x, url: 'http://x', token: t}\n")
            .unwrap_err();
        assert!(
            e.iter().any(|p| p.contains(
                "destinations[0].token: not a field of type file; it applies to splunk_hec"
            )),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|p| p.contains("destinations[0].url: a file destination has no URL")),
            "{e:#?}"
        );
        let e = check("  - {name: v, url: 'http://x', format: cef}\n").unwrap_err();
        assert!(
            e[0].contains("destinations[0].format: not a field of type remote_write/vm_import"),
            "{e:#?}"
        );
        let e = check(
            "  - {name: s, type: syslog, url: 'tcp://x:1', bearer_token: t, concurrency: 2}\n",
        )
        .unwrap_err();
        assert!(
            e[0].contains("syslog destinations have no HTTP settings"),
            "{e:#?}"
        );
        let e =
            check("  - {name: f, type: file, directory: /tmp/x, concurrency: 3}\n").unwrap_err();
        assert!(e[0].contains("a file destination has one writer"), "{e:#?}");
        let e = check(
            "  - {name: s, type: syslog, url: 'tls://x:1', tls: {ca_file: /nonexistent/ca.pem}}\n",
        )
        .unwrap_err();
        assert!(
            e[0].contains("destinations[0].tls: tls.ca_file /nonexistent/ca.pem"),
            "{e:#?}"
        );
    }
}
