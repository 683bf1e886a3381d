//! `type: syslog`: RFC 5424 messages whose MSG is the event as JSON or as
//! CEF, over TCP (RFC 6587 octet counting), TLS (RFC 5425), UDP (RFC 5426)
//! or RELP ([`super::relp`]).
//!
//! ```text
//! <PRI>1 2024-05-01T12:00:00.000Z HOSTNAME APP-NAME - TYPE - MSG
//! ```
//!
//! PRI = facility × 8 + severity; the severity comes from the label named
//! by `severity_from` (default `severity`): `emerg`/`emergency`/`panic` 0,
//! `alert` 1, `crit`/`critical` 2, `err`/`error`/`high` 3,
//! `warning`/`warn`/`medium` 4, `notice`/`low` 5, `info`/`informational` 6,
//! `debug` 7, or a digit 0–7 (any case); absent or unknown: 5 (notice).
//! MSGID is the event type (`alert`, `recording`, ...).
//!
//! CEF (ArcSight Common Event Format 25): `CEF:0|spillway|spillway|<version>|<rule>|<metric>|<severity 0-10>|<extension>`,
//! the CEF severity from the syslog one (0→10, 1→9, 2→8, 3→7, 4→5, 5→3,
//! 6→1, 7→0); the rule is the metric for received data. Header fields escape
//! `\` and `|` (line breaks become spaces); extension values escape `\`, `=`,
//! and line breaks as `\n` / `\r`. The extension holds
//! `rt` (event time, ms), `cat` (type), `cs1`=group, `cs2`=rule, `cfp1`=value
//! (with their `…Label` keys), `outcome` (`resolved` or `breach`), `msg`
//! (the `summary` annotation, else `description`, else the series), every label
//! as `<name>=<value>` (`label_<name>` when it would clash with a key above),
//! and every annotation as `annotation_<name>`.
//!
//! Neither format contains a raw line break (JSON and CEF escape them), so
//! even receivers that split on newlines see one message per event; octet
//! counting makes TCP framing exact anyway.

use super::config::{SyslogConfig, SyslogFormat, SyslogTransport, TlsFiles};
use super::relp::RelpConnection;
use super::shape::{write_rfc3339_ms, EventRef, EventShape};
use crate::client::ClientError;
use crate::model::value::value_text;
use std::io::Write as _;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// The syslog severity of a label value (see the module docs).
pub fn severity(value: Option<&str>) -> u8 {
    const NAMES: [(&str, u8); 17] = [
        ("emerg", 0),
        ("emergency", 0),
        ("panic", 0),
        ("alert", 1),
        ("crit", 2),
        ("critical", 2),
        ("err", 3),
        ("error", 3),
        ("high", 3),
        ("warning", 4),
        ("warn", 4),
        ("medium", 4),
        ("notice", 5),
        ("low", 5),
        ("info", 6),
        ("informational", 6),
        ("debug", 7),
    ];
    let Some(v) = value else { return 5 };
    let v = v.trim();
    // Every event asks: compare in place instead of lowercasing a copy.
    if let [d @ b'0'..=b'7'] = v.as_bytes() {
        return d - b'0';
    }
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(v))
        .map_or(5, |&(_, s)| s)
}

/// CEF severity 0–10 from a syslog severity.
pub fn cef_severity(syslog: u8) -> u8 {
    [10, 9, 8, 7, 5, 3, 1, 0][usize::from(syslog.min(7))]
}

/// Writes one RFC 5424 message (no framing).
pub fn write_message(out: &mut Vec<u8>, cfg: &SyslogConfig, shape: &EventShape, ev: &EventRef<'_>) {
    let sev = severity(ev.labels.get(&cfg.severity_from));
    let pri = u16::from(cfg.facility) * 8 + u16::from(sev);
    out.push(b'<');
    write_small(out, pri);
    out.extend_from_slice(b">1 ");
    write_rfc3339_ms(out, ev.sample.timestamp_ms);
    for part in [&cfg.hostname, &cfg.app_name] {
        out.push(b' ');
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b" - ");
    out.extend_from_slice(ev.origin.kind.as_str().as_bytes());
    out.extend_from_slice(b" - ");
    match cfg.format {
        SyslogFormat::Json => shape.write_json(out, ev),
        SyslogFormat::Cef => write_cef(out, cef_severity(sev), ev),
    }
}

/// A number below 1000 in decimal, without the formatting machinery.
fn write_small(out: &mut Vec<u8>, n: u16) {
    if n >= 100 {
        out.push(b'0' + (n / 100 % 10) as u8);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10 % 10) as u8);
    }
    out.push(b'0' + (n % 10) as u8);
}

/// One CEF record (see the module docs).
pub fn write_cef(out: &mut Vec<u8>, severity: u8, ev: &EventRef<'_>) {
    let rule: &str = if ev.origin.rule.is_empty() {
        ev.metric()
    } else {
        &ev.origin.rule
    };
    out.extend_from_slice(b"CEF:0|spillway|spillway|");
    cef_header(out, env!("CARGO_PKG_VERSION"));
    out.push(b'|');
    cef_header(out, rule);
    out.push(b'|');
    cef_header(out, ev.metric());
    let _ = write!(out, "|{severity}|rt={}", ev.sample.timestamp_ms);
    let mut ext = |k: &str, v: &str| {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        cef_value(out, v);
    };
    ext("cat", ev.origin.kind.as_str());
    ext("cs1Label", "group");
    ext("cs1", &ev.origin.group);
    ext("cs2Label", "rule");
    ext("cs2", &ev.origin.rule);
    if !ev.resolved() {
        ext("cfp1Label", "value");
        ext("cfp1", &value_text(ev.sample.value));
    }
    ext("outcome", if ev.resolved() { "resolved" } else { "breach" });
    let ann = ev.annotations;
    let msg = ann
        .and_then(|a| a.get("summary").or_else(|| a.get("description")))
        .cloned()
        .unwrap_or_else(|| ev.labels.to_string());
    ext("msg", &msg);
    const OURS: [&str; 11] = [
        "rt",
        "cat",
        "cs1Label",
        "cs1",
        "cs2Label",
        "cs2",
        "cfp1Label",
        "cfp1",
        "outcome",
        "msg",
        "CEF",
    ];
    for l in ev.labels.without_name() {
        if OURS.contains(&l.name.as_str()) {
            ext(&format!("label_{}", l.name), &l.value);
        } else {
            ext(&l.name, &l.value);
        }
    }
    for (k, v) in ann.map(|a| a.iter()).into_iter().flatten() {
        let key: String = k
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        ext(&format!("annotation_{key}"), v);
    }
}

fn cef_header(out: &mut Vec<u8>, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '|' => out.extend_from_slice(b"\\|"),
            '\r' | '\n' => out.push(b' '),
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

fn cef_value(out: &mut Vec<u8>, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '=' => out.extend_from_slice(b"\\="),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// The local host name for HOSTNAME when none is configured: printable
/// ASCII only (RFC 5424 `PRINTUSASCII`), `-` when unknown.
pub fn local_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let h = printable(raw.trim(), 255);
    if h.is_empty() {
        "-".into()
    } else {
        h
    }
}

/// `s` reduced to RFC 5424's PRINTUSASCII (33..=126), at most `max` bytes.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| ('!'..='~').contains(c))
        .take(max)
        .collect()
}

/// One open connection to the receiver.
pub enum SyslogConnection {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Udp(UdpSocket),
    Relp(Box<RelpConnection>),
}

fn connect_err(cfg: &SyslogConfig, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Connect {
        url: format!("{}://{}", cfg.transport.scheme(), cfg.address),
        reason: reason.to_string(),
    }
}

impl SyslogConnection {
    pub async fn open(
        cfg: &SyslogConfig,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<SyslogConnection, ClientError> {
        let t = cfg.timeout;
        let tcp = || async {
            let s = tokio::time::timeout(t, TcpStream::connect(&cfg.address))
                .await
                .map_err(|_| connect_err(cfg, format!("no connection within {t:?}")))?
                .map_err(|e| connect_err(cfg, e))?;
            let _ = s.set_nodelay(true);
            Ok::<_, ClientError>(s)
        };
        match cfg.transport {
            SyslogTransport::Tcp => Ok(SyslogConnection::Tcp(tcp().await?)),
            SyslogTransport::Tls => {
                let connector = tls.ok_or_else(|| connect_err(cfg, "TLS is not set up"))?;
                let name = rustls_pki_types::ServerName::try_from(cfg.server_name.clone())
                    .map_err(|e| connect_err(cfg, e))?;
                let stream = tcp().await?;
                let s = tokio::time::timeout(t, connector.connect(name, stream))
                    .await
                    .map_err(|_| connect_err(cfg, format!("no TLS handshake within {t:?}")))?
                    .map_err(|e| connect_err(cfg, format!("TLS handshake: {e}")))?;
                Ok(SyslogConnection::Tls(Box::new(s)))
            }
            SyslogTransport::Udp => {
                let bind = if cfg.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let s = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| connect_err(cfg, e))?;
                s.connect(&cfg.address)
                    .await
                    .map_err(|e| connect_err(cfg, e))?;
                Ok(SyslogConnection::Udp(s))
            }
            SyslogTransport::Relp => Ok(SyslogConnection::Relp(Box::new(
                RelpConnection::open(tcp().await?, t, cfg.relp_window)
                    .await
                    .map_err(|e| connect_err(cfg, e))?,
            ))),
        }
    }

    /// Whether the receiver closed the connection (seen without blocking):
    /// a write into a closed TCP connection "succeeds" once, losing what
    /// it wrote, so look before sending.
    pub fn closed_by_peer(&mut self) -> bool {
        use futures_util::FutureExt;
        let mut b = [0u8; 1];
        let tcp = match self {
            SyslogConnection::Tcp(s) => s,
            SyslogConnection::Tls(s) => s.get_mut().0,
            SyslogConnection::Relp(r) => r.stream(),
            SyslogConnection::Udp(_) => return false,
        };
        matches!(tcp.peek(&mut b).now_or_never(), Some(Ok(0)) | Some(Err(_)))
    }

    /// Sends every message; `Ok` once written (TCP, TLS, UDP) or acknowledged
    /// (RELP). Items that a datagram cannot carry come back in `Ok`.
    pub async fn send(
        &mut self,
        cfg: &SyslogConfig,
        items: &[&[u8]],
        buf: &mut Vec<u8>,
    ) -> Result<Vec<(usize, String)>, ClientError> {
        let t = cfg.timeout;
        let io = |e: std::io::Error| connect_err(cfg, e);
        match self {
            SyslogConnection::Tcp(_) | SyslogConnection::Tls(_) => {
                buf.clear();
                for m in items {
                    let _ = write!(buf, "{} ", m.len());
                    buf.extend_from_slice(m);
                }
                let write = async {
                    match self {
                        SyslogConnection::Tcp(s) => {
                            s.write_all(buf).await?;
                            s.flush().await
                        }
                        SyslogConnection::Tls(s) => {
                            s.write_all(buf).await?;
                            s.flush().await
                        }
                        _ => Ok(()),
                    }
                };
                tokio::time::timeout(t.max(std::time::Duration::from_secs(30)), write)
                    .await
                    .map_err(|_| connect_err(cfg, "the receiver stopped reading"))?
                    .map_err(io)?;
                Ok(Vec::new())
            }
            SyslogConnection::Udp(s) => {
                let mut refused = Vec::new();
                for (i, m) in items.iter().enumerate() {
                    match s.send(m).await {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(90) => refused.push((
                            i,
                            format!("{} bytes do not fit in a datagram: {e}", m.len()),
                        )),
                        Err(e) => return Err(io(e)),
                    }
                }
                Ok(refused)
            }
            SyslogConnection::Relp(r) => {
                r.send_all(items).await.map_err(|e| connect_err(cfg, e))?;
                Ok(Vec::new())
            }
        }
    }

    /// Closes politely (RELP `close`); errors do not matter any more.
    pub async fn close(self) {
        match self {
            SyslogConnection::Relp(r) => r.close().await,
            SyslogConnection::Tcp(mut s) => {
                let _ = s.shutdown().await;
            }
            SyslogConnection::Tls(mut s) => {
                let _ = s.shutdown().await;
            }
            SyslogConnection::Udp(_) => {}
        }
    }
}

/// The TLS client settings: the CA file's roots (else the system's), the
/// client certificate if given, or no verification at all on request.
pub fn tls_connector(tls: &TlsFiles) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else if let Some(ca) = &tls.ca_file {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "tls.ca_file {}: no certificate in it",
                ca.display()
            ));
        }
        builder.with_root_certificates(roots)
    } else {
        let v = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("the system's certificate roots: {e}; give tls.ca_file"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(v))
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls.cert_file/key_file: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("tls: give both cert_file and key_file, or neither".into()),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `tls.insecure_skip_verify`: any certificate, signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Annotations, ExportKind, Labels, Origin, Sample};
    use std::collections::BTreeMap;

    fn cfg(format: SyslogFormat) -> SyslogConfig {
        SyslogConfig {
            transport: SyslogTransport::Tcp,
            address: "127.0.0.1:1".into(),
            server_name: "127.0.0.1".into(),
            format,
            app_name: "spillway".into(),
            facility: 10,
            hostname: "h1".into(),
            severity_from: "severity".into(),
            tls: TlsFiles::default(),
            timeout: std::time::Duration::from_secs(1),
            relp_window: crate::sink::event::relp::DEFAULT_WINDOW,
        }
    }

    #[test]
    fn rfc5424_header_and_json_body() {
        let l = Labels::from_pairs([("__name__", "ALERTS"), ("severity", "Critical")]);
        let o = Origin::rule(ExportKind::Alert, "g", "r");
        let ev = EventRef {
            sample: Sample::new(1_714_564_800_000, 1.0),
            labels: &l,
            origin: &o,
            annotations: None,
        };
        let mut out = Vec::new();
        write_message(
            &mut out,
            &cfg(SyslogFormat::Json),
            &EventShape::default(),
            &ev,
        );
        let s = String::from_utf8(out).unwrap();
        // authpriv (10) * 8 + crit (2)
        assert!(
            s.starts_with("<82>1 2024-05-01T12:00:00.000Z h1 spillway - alert - {\"time\":"),
            "{s}"
        );
    }

    #[test]
    fn cef_escapes_per_the_spec() {
        let l = Labels::from_pairs([
            ("__name__", "m|x"),
            ("path", "C:\\dir=a\nb"),
            ("cat", "pipe|ok"),
            ("severity", "warning"),
        ]);
        let o = Origin::rule(ExportKind::Alert, "g", "Rule|1\\");
        let ann: Annotations = Arc::new(BTreeMap::from([(
            "summary".to_string(),
            "ü=1\r\n".to_string(),
        )]));
        let ev = EventRef {
            sample: Sample::new(5, 2.5),
            labels: &l,
            origin: &o,
            annotations: Some(&ann),
        };
        let mut out = Vec::new();
        write_cef(&mut out, cef_severity(severity(l.get("severity"))), &ev);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            format!(
                "CEF:0|spillway|spillway|{}|Rule\\|1\\\\|m\\|x|5|rt=5 cat=alert cs1Label=group cs1=g cs2Label=rule cs2=Rule|1\\\\ cfp1Label=value cfp1=2.5 outcome=breach msg=ü\\=1\\r\\n label_cat=pipe|ok path=C:\\\\dir\\=a\\nb severity=warning annotation_summary=ü\\=1\\r\\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn severities() {
        assert_eq!(severity(None), 5);
        assert_eq!(severity(Some("PAGE")), 5);
        assert_eq!(severity(Some("error")), 3);
        assert_eq!(severity(Some("7")), 7);
        assert_eq!(cef_severity(0), 10);
        assert_eq!(cef_severity(6), 1);
        assert_eq!(printable("a b\u{e9}c", 255), "abc");
    }
}
