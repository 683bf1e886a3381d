//! Sender tasks: sender `i` takes the oldest unsent block of its lane from
//! the queue (with small neighbours of the same lane merged in, see
//! [`super::encode`]), posts it, and acknowledges it once the destination
//! answered 2xx. `concurrency` of them run per destination; each owns one
//! lane and sends one request at a time, so a series (always in the same
//! lane) reaches the destination in order, while different series travel
//! in parallel.
//!
//! There is one retry loop and one retry decision,
//! [`crate::client::RetryPolicy`] with `all_but_refusals` and no limit:
//! connection errors, timeouts, 5xx, 429 and anything else but a refusal
//! wait (backoff with jitter) and try again, so the queue grows while a
//! destination is down. Only a refusal (a 4xx other than 429) ends it
//! early: the same bytes would be refused again, so they are logged with
//! the destination's answer, counted as `rejected_4xx` and acknowledged,
//! unless the destination said it holds the data already (see
//! [`already_stored`]). Before each attempt the sender checks that its
//! blocks are still queued: a block the queue dropped for room meanwhile
//! (already counted as `disk_full`) is not sent after all, which keeps
//! `sent + dropped` exact.

use super::{
    encode, DestinationKind, DropReason, Phase, Shared, WriteProtocol, CURSOR_SYNC_INTERVAL,
};
use crate::client::ClientError;
use crate::codec::Compression;
use crate::queue::Record;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One sender: read, merge, deliver, until told to stop (or, draining,
/// until nothing is left to read).
pub(super) async fn run(shared: Arc<Shared>, worker: usize) {
    let lane = Some((worker, shared.concurrency));
    tracing::debug!(destination = %shared.name, worker, "sender started");
    let mut carry: Option<Record> = None;
    while let Some(records) =
        next_batch(&shared, lane, &mut carry, super::MAX_BLOCKS_PER_REQUEST).await
    {
        if shared.phase() == Phase::Stopped {
            break;
        }
        deliver(&shared, records).await;
    }
    tracing::debug!(destination = %shared.name, worker, "sender stopped");
}

/// The next request's records for a sender: the oldest record, then more
/// until `max_batch_samples / 2` or `max_blocks` records are gathered,
/// `flush_interval` passed, or the producers went idle (nothing readable
/// and no accept since [`super::Destination::producers_idle`]); a record
/// that would pass `max_batch_samples` is left in `carry` for the next
/// batch. `None` once the queue is closed.
pub(super) async fn next_batch(
    shared: &Arc<Shared>,
    lanes: Option<(usize, usize)>,
    carry: &mut Option<Record>,
    max_blocks: usize,
) -> Option<Vec<Record>> {
    let max = shared.max_batch_samples as u64;
    let small = (max / 2).max(1);
    let first = match carry.take() {
        Some(r) => r,
        None => next_record(shared, lanes, None).await?,
    };
    let mut samples = first.samples;
    let mut records = vec![first];
    if samples < small {
        let deadline = Instant::now() + shared.flush_interval;
        while samples < small && records.len() < max_blocks {
            match next_record(shared, lanes, Some(deadline)).await {
                Some(r) if samples + r.samples > max => {
                    *carry = Some(r);
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
    Some(records)
}

/// The next readable block of `lanes` (index, of), or of any lane when
/// `None` (event destinations, whose order is not per series); `None` when
/// stopped, when draining and nothing is left to read, or at `deadline`.
pub(super) async fn next_record(
    shared: &Arc<Shared>,
    lanes: Option<(usize, usize)>,
    deadline: Option<Instant>,
) -> Option<Record> {
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
        let done_before_read = shared.accepts_done();
        let s = Arc::clone(shared);
        let read = move || match lanes {
            Some((index, of)) => s.queue.read_next_lane(index, of),
            None => s.queue.read_next(),
        };
        match crate::blocking::spawn_short(read).await {
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
        // Waiting for company is pointless once the producers said they
        // are done and the read saw all they pushed (an accept that
        // finishes later wakes `notified`).
        if deadline.is_some() && shared.producers_are_idle(done_before_read) {
            return None;
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
/// the destination is stopped (then they stay queued), and settles them. A
/// request of several blocks refused as already stored is sent again one
/// block at a time: the destination stored none of it, and only some of
/// the blocks may be what it holds already.
async fn deliver(shared: &Arc<Shared>, mut records: Vec<Record>) {
    let Some(result) = send(shared, &mut records).await else {
        return;
    };
    match result {
        Err(e) if records.len() > 1 && already_stored(shared.kind, &e) => {
            tracing::debug!(destination = %shared.name, blocks = records.len(), "refused as already stored; sending block by block");
            for r in records {
                let mut one = vec![r];
                let Some(result) = send(shared, &mut one).await else {
                    return;
                };
                settle(shared, one, result).await;
            }
        }
        result => settle(shared, records, result).await,
    }
}

/// One request for `records`, retried until it is delivered or refused;
/// `None` when the destination was stopped meanwhile. A remote-write
/// request in the VictoriaMetrics protocol refused with 400 or 415 is sent
/// again at once as Prometheus remote write, as vmagent does (see
/// [`Shared::fall_back`]).
async fn send(
    shared: &Arc<Shared>,
    records: &mut Vec<Record>,
) -> Option<Result<Outcome, ClientError>> {
    let mut to = shared.compression();
    loop {
        let result = send_as(shared, records, to).await?;
        match &result {
            Err(e) if to == Compression::Zstd && matches!(e.status(), Some(400 | 415)) => {
                shared.fall_back(e);
                to = Compression::Snappy;
            }
            _ => return Some(result),
        }
    }
}

/// [`send`] with the remote-write compression fixed.
async fn send_as(
    shared: &Arc<Shared>,
    records: &mut Vec<Record>,
    to: Compression,
) -> Option<Result<Outcome, ClientError>> {
    let mut body: Option<bytes::Bytes> = None;
    let mut attempts = 0u32;
    let what = format!("destination {}", shared.name);
    let mut phase = shared.phase.subscribe();
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
        let prepared = prepare(shared, records, &mut body, to);
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
}

/// The request body for `records`, built once and kept in `body` across
/// attempts (until the set of records changes).
fn prepare(
    shared: &Shared,
    records: &mut [Record],
    body: &mut Option<bytes::Bytes>,
    to: Compression,
) -> Prepared {
    if records.is_empty() {
        return Prepared::Nothing;
    }
    if let Some(b) = body {
        return Prepared::Body(b.clone());
    }
    let b = match records {
        // A zstd block may be refused and resent as snappy (see `send`):
        // keep it queued in memory for that, send a copy.
        [only] if to == Compression::Zstd && Compression::of(&only.payload) == to => {
            bytes::Bytes::copy_from_slice(&only.payload)
        }
        // One block goes as queued: move it, no copy.
        [only]
            if shared.kind != DestinationKind::RemoteWrite
                || Compression::of(&only.payload) == to =>
        {
            bytes::Bytes::from(std::mem::take(&mut only.payload))
        }
        _ => {
            let parts: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
            match encode::merge(shared.kind, &parts, to) {
                Ok(b) => bytes::Bytes::from(b),
                Err(e) => return Prepared::Undecodable(e.to_string()),
            }
        }
    };
    *body = Some(b.clone());
    Prepared::Body(b)
}

/// Counts what became of `records` and acknowledges them.
async fn settle(shared: &Arc<Shared>, records: Vec<Record>, result: Result<Outcome, ClientError>) {
    let samples: u64 = records.iter().map(|r| r.samples).sum();
    match result {
        Ok(Outcome::AlreadyDropped) => return,
        Ok(Outcome::Delivered) => shared.stats.sent(samples),
        Ok(Outcome::Undecodable(m)) => {
            let msg = format!("dropped {samples} queued samples that cannot be decoded: {m}");
            tracing::error!(destination = %shared.name, "{msg}");
            shared.stats.dropped(DropReason::Damaged, samples);
            shared.stats.set_last_error(msg);
        }
        Err(e) if already_stored(shared.kind, &e) => {
            tracing::info!(destination = %shared.name, samples, "the destination holds these samples already (sent again after a restart?): {e}");
            shared.stats.duplicate(samples);
        }
        Err(e) => {
            let msg = format!("dropped {samples} samples the destination refused: {e}");
            tracing::warn!(destination = %shared.name, "{msg}");
            shared.stats.dropped(DropReason::Rejected4xx, samples);
            shared.stats.set_last_error(msg);
        }
    }
    ack(shared, &records, "blocks").await;
}

/// Acknowledges delivered `records` in the queue; a failure is logged (they
/// may be sent again after a restart), naming them as `what`.
pub(super) async fn ack(shared: &Arc<Shared>, records: &[Record], what: &str) {
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    let s = Arc::clone(shared);
    let acked = crate::blocking::spawn_short(move || {
        for id in ids {
            s.queue.ack(id)?;
        }
        Ok::<(), crate::queue::QueueError>(())
    })
    .await;
    match acked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(destination = %shared.name, "acknowledging delivered {what}: {e}; they may be sent again after a restart")
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Whether a refusal means "I hold these samples already": Prometheus'
/// answers to samples at or before the newest it has for their series
/// (what a block sent again after a crash gets). The whole request is then
/// stored nowhere.
pub(super) fn already_stored(kind: DestinationKind, e: &ClientError) -> bool {
    const ANSWERS: [&str; 4] = [
        "out of order sample",
        "duplicate sample for timestamp",
        "out of bounds",
        "too old sample",
    ];
    match e {
        ClientError::Status {
            status: 400, body, ..
        } if kind == DestinationKind::RemoteWrite => {
            let body = body.to_ascii_lowercase();
            ANSWERS.iter().any(|a| body.contains(a))
        }
        _ => false,
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
    /// How new remote-write blocks and requests are compressed now.
    pub(super) fn compression(&self) -> Compression {
        if self.vm_proto.load(Ordering::Relaxed) {
            Compression::Zstd
        } else {
            Compression::Snappy
        }
    }

    /// The destination refused a VictoriaMetrics-protocol request with
    /// `e` (400 or 415): with `protocol: auto` it is taken as not speaking
    /// it, and gets Prometheus remote write from now on (until a restart),
    /// as vmagent does.
    fn fall_back(&self, e: &ClientError) {
        if self.protocol == WriteProtocol::Auto && self.vm_proto.swap(false, Ordering::Relaxed) {
            tracing::info!(
                destination = %self.name,
                "the destination refused the VictoriaMetrics remote-write protocol (zstd): {e}; \
                 sending Prometheus remote write 1.0 (snappy) from now on (set `protocol: prometheus` to skip the first try)"
            );
        }
    }

    /// One attempt; what to do about a failure is the retry policy's call.
    async fn post(&self, body: bytes::Bytes) -> Result<(), ClientError> {
        let started = std::time::Instant::now();
        let zstd = self.kind == DestinationKind::RemoteWrite
            && Compression::of(&body) == Compression::Zstd;
        let result = async {
            let req = self.client.request(reqwest::Method::POST, &self.path)?;
            let req = match self.kind {
                // The body says which protocol it is in, as vmagent decides.
                DestinationKind::RemoteWrite => Compression::of(&body)
                    .headers()
                    .into_iter()
                    .fold(req, |req, (k, v)| req.header(k, v)),
                DestinationKind::VmImport => req.header("Content-Type", "application/json"),
                // Event destinations send through `event_sender`.
                DestinationKind::Event(_) => req,
            };
            let resp = self.client.send_once(req.body(body)).await?;
            let status = resp.status().as_u16();
            // Read the (normally empty) answer so the connection is reused; never a huge one.
            self.client.discard_body(resp).await;
            Ok::<u16, ClientError>(status)
        }
        .await;
        let status = match &result {
            Ok(s) => Some(*s),
            Err(e) => e.status(),
        };
        let seconds = started.elapsed().as_secs_f64();
        if zstd && matches!(status, Some(400 | 415)) {
            // Protocol negotiation, not a refusal of the data: the request is
            // sent again at once as snappy, and that answer is what counts.
            self.stats.protocol_refusal(seconds);
        } else {
            self.stats.attempt(seconds, status);
        }
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                if !e.is_refusal() {
                    self.stats.set_last_error(e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// Stores the queue's meta file (what was delivered, in any order, and what
/// was written) every [`CURSOR_SYNC_INTERVAL`] (acks and pushes defer it;
/// see the module docs) and deletes delivered segments.
pub(super) async fn sync_cursor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(CURSOR_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let s = Arc::clone(&shared);
        if let Ok(Err(e)) = crate::blocking::spawn_short(move || s.queue.flush()).await {
            tracing::error!(destination = %shared.name, "storing the queue's meta file: {e}");
        }
    }
}
