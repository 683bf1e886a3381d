//! Sender tasks: each takes the oldest unsent block from the queue (with
//! small neighbours merged in, see [`super::encode`]), posts it, and
//! acknowledges it once the destination answered 2xx. `concurrency` of them
//! run per destination; blocks are independent, so they may arrive out of
//! order, as they do from vmagent's parallel queues.
//!
//! There is one retry loop, [`crate::client::RetryPolicy::run`] with no
//! limit: connection errors, timeouts, 5xx and 429 wait (backoff with
//! jitter) and try again, so the queue grows while a destination is down.
//! Only a 4xx answer other than 429 ends it early: the same bytes would be
//! refused again, so they are logged with the destination's answer,
//! counted as `rejected_4xx` and acknowledged. Before each attempt the
//! sender checks that its blocks are still queued: a block the queue
//! dropped for room meanwhile (already counted as `disk_full`) is not sent
//! after all, which keeps `sent + dropped` exact.

use super::{encode, DestinationKind, DropReason, Phase, Shared, CURSOR_SYNC_INTERVAL};
use crate::client::ClientError;
use crate::codec::remote_write::{CONTENT_ENCODING, CONTENT_TYPE, VERSION, VERSION_HEADER};
use crate::queue::Record;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One sender: read, merge, deliver, until told to stop (or, draining,
/// until nothing is left to read).
pub(super) async fn run(shared: Arc<Shared>, worker: usize) {
    tracing::debug!(destination = %shared.name, worker, "sender started");
    let max = shared.max_batch_samples as u64;
    let small = (max / 2).max(1);
    let mut carry: Option<Record> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match next_record(&shared, None).await {
                Some(r) => r,
                None => break,
            },
        };
        let mut samples = first.samples;
        let mut records = vec![first];
        if samples < small {
            let deadline = Instant::now() + shared.flush_interval;
            while samples < small {
                match next_record(&shared, Some(deadline)).await {
                    Some(r) if samples + r.samples > max => {
                        carry = Some(r);
                        break;
                    }
                    Some(r) => {
                        samples += r.samples;
                        records.push(r);
                    }
                    None => break,
                }
            }
        }
        if shared.phase() == Phase::Stopped {
            break;
        }
        deliver(&shared, records).await;
    }
    tracing::debug!(destination = %shared.name, worker, "sender stopped");
}

/// The next readable block; `None` when stopped, when draining and nothing
/// is left to read, or at `deadline`.
pub(super) async fn next_record(shared: &Arc<Shared>, deadline: Option<Instant>) -> Option<Record> {
    let mut phase = shared.phase.subscribe();
    loop {
        // Registered before looking, so a push landing in between still wakes us.
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now_phase = *phase.borrow_and_update();
        if now_phase == Phase::Stopped {
            return None;
        }
        let s = Arc::clone(shared);
        match tokio::task::spawn_blocking(move || s.queue.read_next()).await {
            Ok(Ok(Some(r))) => return Some(r),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                let msg = format!("reading the queue: {e}");
                tracing::error!(destination = %shared.name, "{msg}");
                shared.stats.set_last_error(msg);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
        if now_phase == Phase::Draining {
            let q = shared.queue.stats();
            if q.pending_records == q.in_flight_records {
                return None;
            }
        }
        // A periodic look as well, in case a wake-up is ever missed.
        let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
        tokio::select! {
            _ = &mut notified => {}
            _ = phase.changed() => {}
            _ = tokio::time::sleep_until(until) => {
                if deadline.is_some() {
                    return None;
                }
            }
        }
    }
}

enum Outcome {
    Delivered,
    /// The queue dropped every block for room while we retried.
    AlreadyDropped,
    /// The blocks would not decompress: damage the checksums missed.
    Undecodable(String),
}

enum Prepared {
    Body(bytes::Bytes),
    Nothing,
    Undecodable(String),
}

/// Sends `records` as one request until it is delivered, refused (4xx) or
/// the destination is stopped (then they stay queued).
async fn deliver(shared: &Arc<Shared>, mut records: Vec<Record>) {
    let mut body: Option<bytes::Bytes> = None;
    let mut attempts = 0u32;
    let what = format!("destination {}", shared.name);
    let mut phase = shared.phase.subscribe();
    let result = {
        let send = shared.retry.run(&what, || {
            let before = records.len();
            records.retain(|r| shared.queue.is_pending(r.id));
            if records.len() != before {
                body = None;
            }
            if attempts > 0 {
                shared.stats.retry();
            }
            attempts += 1;
            let prepared = if records.is_empty() {
                Prepared::Nothing
            } else if let Some(b) = &body {
                Prepared::Body(b.clone())
            } else if let [only] = records.as_mut_slice() {
                // One block goes as queued: move it, no copy.
                let b = bytes::Bytes::from(std::mem::take(&mut only.payload));
                body = Some(b.clone());
                Prepared::Body(b)
            } else {
                let parts: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
                match encode::merge(shared.kind, &parts) {
                    Ok(b) => {
                        let b = bytes::Bytes::from(b);
                        body = Some(b.clone());
                        Prepared::Body(b)
                    }
                    Err(e) => Prepared::Undecodable(e.to_string()),
                }
            };
            let shared = Arc::clone(shared);
            async move {
                match prepared {
                    Prepared::Nothing => Ok(Outcome::AlreadyDropped),
                    Prepared::Undecodable(m) => Ok(Outcome::Undecodable(m)),
                    Prepared::Body(b) => shared.post(b).await.map(|()| Outcome::Delivered),
                }
            }
        });
        tokio::select! {
            r = send => Some(r),
            _ = stopped(&mut phase) => None,
        }
    };
    let samples: u64 = records.iter().map(|r| r.samples).sum();
    match result {
        None => return,
        Some(Ok(Outcome::AlreadyDropped)) => return,
        Some(Ok(Outcome::Delivered)) => shared.stats.sent(samples),
        Some(Ok(Outcome::Undecodable(m))) => {
            let msg = format!("dropped {samples} queued samples that cannot be decoded: {m}");
            tracing::error!(destination = %shared.name, "{msg}");
            shared.stats.dropped(DropReason::Damaged, samples);
            shared.stats.set_last_error(msg);
        }
        Some(Err(e)) => {
            let msg = format!("dropped {samples} samples the destination refused: {e}");
            tracing::warn!(destination = %shared.name, "{msg}");
            shared.stats.dropped(DropReason::Rejected4xx, samples);
            shared.stats.set_last_error(msg);
        }
    }
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    let s = Arc::clone(shared);
    let acked = tokio::task::spawn_blocking(move || {
        for id in ids {
            s.queue.ack(id)?;
        }
        Ok::<(), crate::queue::QueueError>(())
    })
    .await;
    match acked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(destination = %shared.name, "acknowledging delivered blocks: {e}; they may be sent again after a restart")
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

pub(super) async fn stopped(phase: &mut watch::Receiver<Phase>) {
    loop {
        if *phase.borrow_and_update() == Phase::Stopped {
            return;
        }
        if phase.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Shared {
    /// One attempt. Errors that are neither a 4xx answer nor retriable by
    /// the client's rules (an unreadable token file, a redirect loop, a
    /// broken answer) are made retriable: for a durable destination, only
    /// the destination saying "no" drops data.
    async fn post(&self, body: bytes::Bytes) -> Result<(), ClientError> {
        let started = std::time::Instant::now();
        let result = async {
            let req = self.client.request(reqwest::Method::POST, &self.path)?;
            let req = match self.kind {
                DestinationKind::RemoteWrite => req
                    .header("Content-Encoding", CONTENT_ENCODING)
                    .header("Content-Type", CONTENT_TYPE)
                    .header(VERSION_HEADER, VERSION),
                DestinationKind::VmImport => req.header("Content-Type", "application/json"),
                // Event destinations send through `event_sender`.
                DestinationKind::Event(_) => req,
            };
            let resp = self.client.send_once(req.body(body)).await?;
            let status = resp.status().as_u16();
            // Read the (normally empty) answer so the connection is reused.
            let _ = resp.bytes().await;
            Ok::<u16, ClientError>(status)
        }
        .await;
        let status = match &result {
            Ok(s) => Some(*s),
            Err(e) => e.status(),
        };
        self.stats.attempt(started.elapsed().as_secs_f64(), status);
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let refused = e
                    .status()
                    .is_some_and(|s| (400..500).contains(&s) && s != 429);
                if refused {
                    return Err(e);
                }
                self.stats.set_last_error(e.to_string());
                if e.is_retriable() {
                    Err(e)
                } else {
                    Err(ClientError::Connect {
                        url: self.display_url.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}

/// Stores the queue's read position every [`CURSOR_SYNC_INTERVAL`] (acks
/// defer it; see the module docs) and deletes delivered segments.
pub(super) async fn sync_cursor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(CURSOR_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let s = Arc::clone(&shared);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.queue.flush()).await {
            tracing::error!(destination = %shared.name, "storing the queue position: {e}");
        }
    }
}
