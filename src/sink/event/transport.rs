//! Delivering a batch of items to one receiver, per type. A sender task
//! owns one [`Transport`] (its own connection or file) and hands it
//! [`Batch`]es; one [`Transport::attempt`] sends what is still pending and
//! sorts every item into delivered, refused (for the dead-letter file) or
//! still pending. `Err` with a retriable error means "try the rest again
//! after a pause" (the caller runs the one retry policy,
//! [`crate::client::RetryPolicy::run`]); `Err` with a refusal (4xx other
//! than 429) refuses everything still pending.

use super::config::{EventConfig, Target};
use super::elasticsearch::{self, ItemResult};
use super::file::FileWriter;
use super::syslog::{tls_connector, SyslogConnection};
use super::{split_items, splunk, webhook, EventKind};
use crate::client::{Client, ClientError};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The items of the queue records a sender took, and where each stands.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records' payloads, kept as read (not copied together).
    payloads: Vec<Vec<u8>>,
    /// Per item: its payload and its bytes there.
    ranges: Vec<(usize, Range<usize>)>,
    /// Indexes of items not delivered or refused yet, in order.
    pub pending: Vec<usize>,
    pub delivered: u64,
    /// Item, HTTP status if any, reason.
    pub refused: Vec<(usize, Option<u16>, String)>,
}

impl Batch {
    /// From queue record payloads; `Err` if one is damaged.
    pub fn new(payloads: Vec<Vec<u8>>) -> Result<Batch, String> {
        let mut b = Batch::default();
        for (n, p) in payloads.iter().enumerate() {
            let start_of = |item: &[u8]| item.as_ptr() as usize - p.as_ptr() as usize;
            for item in split_items(p)? {
                let s = start_of(item);
                b.ranges.push((n, s..s + item.len()));
            }
        }
        b.payloads = payloads;
        b.pending = (0..b.ranges.len()).collect();
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn item(&self, i: usize) -> &[u8] {
        let (p, r) = &self.ranges[i];
        &self.payloads[*p][r.clone()]
    }

    pub fn pending_items(&self) -> Vec<&[u8]> {
        self.pending.iter().map(|&i| self.item(i)).collect()
    }

    /// The pending items back to back, in one exactly sized buffer (a
    /// growing one cost the bulk path a tenth of its CPU in copies and
    /// page faults).
    pub fn pending_concat(&self) -> Vec<u8> {
        let len = self.pending.iter().map(|&i| self.ranges[i].1.len()).sum();
        let mut out = Vec::with_capacity(len);
        for &i in &self.pending {
            out.extend_from_slice(self.item(i));
        }
        out
    }

    /// Marks the first `n` pending items delivered.
    fn deliver_first(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.pending.drain(..n);
        self.delivered += n as u64;
    }

    fn deliver_all(&mut self) {
        self.deliver_first(self.pending.len());
    }

    /// Refuses every pending item with `status`/`reason`.
    pub fn refuse_all(&mut self, status: Option<u16>, reason: &str) {
        for i in std::mem::take(&mut self.pending) {
            self.refused.push((i, status, reason.to_string()));
        }
    }
}

/// One sender's way to its receiver.
pub enum Transport {
    Syslog {
        cfg: Arc<EventConfig>,
        tls: Option<tokio_rustls::TlsConnector>,
        conn: Option<SyslogConnection>,
        buf: Vec<u8>,
    },
    Http {
        cfg: Arc<EventConfig>,
        client: Client,
    },
    File(Arc<Mutex<FileWriter>>),
}

fn not_acked(url: String, reason: String) -> ClientError {
    ClientError::Connect { url, reason }
}

impl Transport {
    /// For `cfg`; HTTP types use `client` (with its auth and TLS).
    pub fn new(cfg: Arc<EventConfig>, client: &Client) -> Result<Transport, String> {
        Ok(match &cfg.target {
            Target::Syslog(s) => Transport::Syslog {
                tls: if s.transport == super::config::SyslogTransport::Tls {
                    Some(tls_connector(&s.tls)?)
                } else {
                    None
                },
                cfg: Arc::clone(&cfg),
                conn: None,
                buf: Vec::new(),
            },
            Target::File(f) => {
                let header = if f.format == super::config::FileFormat::Csv {
                    cfg.shape.csv_header()
                } else {
                    Vec::new()
                };
                Transport::File(Arc::new(Mutex::new(FileWriter::new(f.clone(), header))))
            }
            _ => Transport::Http {
                cfg: Arc::clone(&cfg),
                client: client.clone(),
            },
        })
    }

    /// One attempt at what `batch` still holds (see the module docs).
    pub async fn attempt(&mut self, batch: &mut Batch) -> Result<(), ClientError> {
        if batch.pending.is_empty() {
            return Ok(());
        }
        match self {
            Transport::Syslog {
                cfg,
                tls,
                conn,
                buf,
            } => {
                let Target::Syslog(s) = &cfg.target else {
                    unreachable!("syslog transport for a syslog target")
                };
                if conn.as_mut().is_some_and(|c| c.closed_by_peer()) {
                    if let Some(c) = conn.take() {
                        c.close().await;
                    }
                }
                if conn.is_none() {
                    *conn = Some(SyslogConnection::open(s, tls.as_ref()).await?);
                }
                let c = conn.as_mut().expect("connected above");
                let items = batch.pending_items();
                match c.send(s, &items, buf).await {
                    Ok(refused) => {
                        drop(items);
                        let refused: std::collections::HashMap<usize, String> =
                            refused.into_iter().collect();
                        let pending = std::mem::take(&mut batch.pending);
                        for (k, i) in pending.into_iter().enumerate() {
                            match refused.get(&k) {
                                Some(r) => batch.refused.push((i, None, r.clone())),
                                None => batch.delivered += 1,
                            }
                        }
                        Ok(())
                    }
                    Err(e) => {
                        drop(items);
                        // RELP says how many were acknowledged before the break.
                        if let ClientError::Connect { reason, .. } = &e {
                            if let Some(n) = relp_acked(reason) {
                                batch.deliver_first(n);
                            }
                        }
                        // A broken connection may hold half a frame: start anew.
                        *conn = None;
                        Err(e)
                    }
                }
            }
            Transport::File(w) => {
                let lines = batch.pending_concat();
                let w = Arc::clone(w);
                let dir = {
                    let g = w.lock().unwrap_or_else(|p| p.into_inner());
                    g.live_path().display().to_string()
                };
                let r = tokio::task::spawn_blocking(move || {
                    w.lock().unwrap_or_else(|p| p.into_inner()).write(&lines)
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                r.map_err(|e| ClientError::Connect {
                    url: dir,
                    reason: e.to_string(),
                })?;
                batch.deliver_all();
                Ok(())
            }
            Transport::Http { cfg, client } => match cfg.kind {
                EventKind::Elasticsearch => bulk(cfg, client, batch).await,
                EventKind::SplunkHec => hec(cfg, client, batch).await,
                _ => hook(cfg, client, batch).await,
            },
        }
    }

    /// Closes a connection politely (RELP `close`).
    pub async fn close(self) {
        if let Transport::Syslog { conn: Some(c), .. } = self {
            c.close().await;
        }
    }
}

/// "RELP: ... (after N acknowledged messages)" → N.
fn relp_acked(reason: &str) -> Option<usize> {
    let rest = reason.rsplit_once("(after ")?.1;
    rest.split(' ').next()?.parse().ok()
}

async fn post(
    client: &Client,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Vec<u8>, ClientError> {
    let mut req = client.request(reqwest::Method::POST, path)?;
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let resp = client.send_once(req.body(body)).await?;
    let url = client.endpoint().join(path).to_string();
    let bytes = resp.bytes().await.map_err(|e| ClientError::Connect {
        url,
        reason: format!("reading the answer: {e}"),
    })?;
    Ok(bytes.to_vec())
}

async fn bulk(cfg: &EventConfig, client: &Client, batch: &mut Batch) -> Result<(), ClientError> {
    let Target::Elasticsearch(es) = &cfg.target else {
        unreachable!("bulk for an elasticsearch target")
    };
    let mut body = batch.pending_concat();
    let mut headers = vec![("Content-Type", "application/x-ndjson".to_string())];
    if es.gzip {
        body = elasticsearch::gzip(&body);
        headers.push(("Content-Encoding", "gzip".into()));
    }
    let answer = post(client, "/_bulk", &headers, body).await?;
    let url = client.endpoint().join("/_bulk").to_string();
    let results = elasticsearch::parse_answer(&answer, batch.pending.len()).map_err(|reason| {
        ClientError::Connect {
            url: url.clone(),
            reason,
        }
    })?;
    let pending = std::mem::take(&mut batch.pending);
    let mut retry_status = None;
    for (i, r) in pending.into_iter().zip(results) {
        match r {
            ItemResult::Delivered => batch.delivered += 1,
            ItemResult::Retry(s) => {
                retry_status = Some(s);
                batch.pending.push(i);
            }
            ItemResult::Refused(s, reason) => batch.refused.push((i, Some(s), reason)),
        }
    }
    match retry_status {
        None => Ok(()),
        Some(s) => Err(ClientError::Status {
            url,
            status: if s == 0 { 503 } else { s },
            body: format!("{} bulk items to send again", batch.pending.len()),
        }),
    }
}

async fn hec(cfg: &EventConfig, client: &Client, batch: &mut Batch) -> Result<(), ClientError> {
    let Target::Splunk(s) = &cfg.target else {
        unreachable!("hec for a splunk target")
    };
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    if s.ack {
        headers.push(("X-Splunk-Request-Channel", s.channel.clone()));
    }
    let url = client.endpoint().join(splunk::EVENT_PATH).to_string();
    // Each round delivers or refuses at least one event, so this ends.
    while !batch.pending.is_empty() {
        let body = batch.pending_concat();
        let answer = match post(client, splunk::EVENT_PATH, &headers, body).await {
            Ok(a) => a,
            Err(e) => match invalid_event(&e, batch.pending.len()) {
                Some((n, reason)) => {
                    // HEC indexed the events before N and none after it.
                    batch.deliver_first(n);
                    let bad = batch.pending.remove(0);
                    batch.refused.push((bad, e.status(), reason));
                    continue;
                }
                None => return Err(e),
            },
        };
        let id = splunk::ack_id(&answer).map_err(|reason| ClientError::Connect {
            url: url.clone(),
            reason,
        })?;
        if let (true, Some(id)) = (s.ack, id) {
            wait_for_ack(client, s, id).await?;
        } else if s.ack {
            tracing::warn!(
                url = %url,
                "ack: true, but the HEC answered without an ackId (indexer acknowledgement is off for this token?); taking the batch as delivered"
            );
        }
        batch.deliver_all();
    }
    Ok(())
}

/// A HEC refusal naming one event of the request (`invalid-event-number`
/// within `pending`): that event's index and the reason to keep with it.
fn invalid_event(e: &ClientError, pending: usize) -> Option<(usize, String)> {
    let ClientError::Status { body, .. } = e else {
        return None;
    };
    let n = splunk::invalid_event_number(body.as_bytes())?;
    (n < pending).then(|| (n, e.to_string()))
}

/// Polls `/services/collector/ack` until `id` is acknowledged or
/// `ack_timeout` passes (then the batch is sent again).
async fn wait_for_ack(
    client: &Client,
    s: &super::config::SplunkConfig,
    id: u64,
) -> Result<(), ClientError> {
    let url = client.endpoint().join(splunk::ACK_PATH).to_string();
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(s.ack_poll_interval).await;
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("X-Splunk-Request-Channel", s.channel.clone()),
        ];
        let body = format!("{{\"acks\":[{id}]}}").into_bytes();
        match post(client, splunk::ACK_PATH, &headers, body).await {
            Ok(answer) => {
                if splunk::acked(&answer, id).unwrap_or(false) {
                    return Ok(());
                }
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!("HEC ack poll: {e}");
            }
            Err(e) => return Err(e),
        }
        if started.elapsed() >= s.ack_timeout {
            return Err(not_acked(
                url,
                format!(
                    "ackId {id} not acknowledged within ack_timeout ({:?}); sending the batch again",
                    s.ack_timeout
                ),
            ));
        }
    }
}

async fn hook(cfg: &EventConfig, client: &Client, batch: &mut Batch) -> Result<(), ClientError> {
    let Target::Webhook(w) = &cfg.target else {
        unreachable!("webhook for a webhook target")
    };
    let headers = [("Content-Type", w.content_type.clone())];
    if !w.one_event_per_request {
        let body = webhook::array_body(&batch.pending_items());
        post(client, &w.path, &headers, body).await?;
        batch.deliver_all();
        return Ok(());
    }
    while let Some(&i) = batch.pending.first() {
        let body = batch.item(i).to_vec();
        match post(client, &w.path, &headers, body).await {
            Ok(_) => batch.deliver_first(1),
            Err(e) if refused(&e) => {
                batch.pending.remove(0);
                batch.refused.push((i, e.status(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A 4xx answer other than 429: the same bytes would be refused again.
pub fn refused(e: &ClientError) -> bool {
    e.status()
        .is_some_and(|s| (400..500).contains(&s) && s != 429)
}

/// The poll interval of HEC acks unless configured.
pub const DEFAULT_ACK_POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::event::config::{SyslogFormat, SyslogTransport, TlsFiles};
    use crate::sink::event::push_item;
    use tokio::io::AsyncReadExt;

    /// The receiver drops the first connection after a few bytes, in the
    /// middle of a frame; the batch goes again, whole, on a new connection.
    #[tokio::test]
    async fn a_broken_connection_never_leaves_a_torn_frame() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            let mut some = [0u8; 10];
            first.read_exact(&mut some).await.unwrap();
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            second.read_to_end(&mut all).await.unwrap();
            all
        });
        let cfg = Arc::new(EventConfig {
            kind: EventKind::Syslog,
            shape: Default::default(),
            target: Target::Syslog(crate::sink::event::config::SyslogConfig {
                transport: SyslogTransport::Tcp,
                address: addr,
                server_name: "127.0.0.1".into(),
                format: SyslogFormat::Json,
                app_name: "a".into(),
                facility: 1,
                hostname: "h".into(),
                severity_from: "severity".into(),
                tls: TlsFiles::default(),
                timeout: Duration::from_secs(5),
                relp_window: crate::sink::event::relp::DEFAULT_WINDOW,
            }),
            dead_letter: "/nonexistent".into(),
            dead_letter_max_bytes: 1 << 20,
        });
        let client = Client::new(crate::client::ClientConfig {
            url: "http://127.0.0.1".into(),
            ..Default::default()
        })
        .unwrap();
        let mut t = Transport::new(cfg, &client).unwrap();
        let mut block = Vec::new();
        let msgs: Vec<String> = (0..20_000)
            .map(|i| format!("<13>1 - - - - - message {i}"))
            .collect();
        for m in &msgs {
            push_item(&mut block, |o| o.extend_from_slice(m.as_bytes()));
        }
        let mut batch = Batch::new(vec![block.clone()]).unwrap();
        // The peer may still take the first writes into its buffers: retry
        // as the sender would, until the batch went through whole.
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 20, "never delivered");
            // Give the receiver time to drop the first connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if t.attempt(&mut batch).await.is_ok() && batch.pending.is_empty() {
                if attempts > 1 {
                    break;
                }
                // Delivered into a dead connection's buffers: send again,
                // as a retry after a failed check would.
                batch = Batch::new(vec![block.clone()]).unwrap();
            }
        }
        t.close().await;
        let got = server.await.unwrap();
        // Octet counting: LEN SP MSG, repeated, nothing torn.
        let mut rest = &got[..];
        let mut n = 0;
        while !rest.is_empty() {
            let sp = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
            let msg = &rest[sp + 1..sp + 1 + len];
            assert_eq!(msg, msgs[n].as_bytes());
            rest = &rest[sp + 1 + len..];
            n += 1;
        }
        assert_eq!(n, msgs.len());
    }

    #[test]
    fn batches_index_items_across_records() {
        let mut a = Vec::new();
        push_item(&mut a, |o| o.extend_from_slice(b"x"));
        push_item(&mut a, |o| o.extend_from_slice(b"yy"));
        let mut b = Vec::new();
        push_item(&mut b, |o| o.extend_from_slice(b"zzz"));
        let mut batch = Batch::new(vec![a, b]).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.pending_items(), vec![&b"x"[..], b"yy", b"zzz"]);
        batch.deliver_first(1);
        assert_eq!(batch.pending_items(), vec![&b"yy"[..], b"zzz"]);
        assert_eq!(batch.pending_concat(), b"yyzzz");
        batch.refuse_all(Some(400), "no");
        assert_eq!(batch.refused.len(), 2);
        assert_eq!(batch.delivered, 1);
        assert_eq!(
            relp_acked("RELP: broken (after 12 acknowledged messages)"),
            Some(12)
        );
    }
}
