//! Destinations of `spillway run`: Prometheus remote write 1.0 or
//! VictoriaMetrics `/api/v1/import` endpoints, each fed from its own
//! crash-safe disk queue ([`crate::queue`]). Uses `queue`, `client`, `codec`,
//! `model`, and the relabel engine of `transform` for the destination's own
//! `relabel_configs`.
//!
//! # Flow
//!
//! ```text
//! accept(batch) ──► relabel_configs ──► external_labels ──► lane = hash(labels) ──► encode blocks per lane ──► queue.push_lanes (fsync) ──► Ok
//!                     (per series, a copy only when a rule changes it)                                            │
//! sender i of concurrency ◄── read_next_lane(i) ◄─────────────────────────────────────────────────────────────────┘
//!   └─ POST ─► 2xx: ack │ 5xx, 429, no answer: retry forever (backoff + jitter) │ other 4xx: log body, count, ack
//! ```
//!
//! # Order
//!
//! Each series always goes through the same sender: at accept a series is
//! put in lane `hash(labels) % concurrency`, its blocks carry the lane, and
//! sender `i` takes only lane `i`'s blocks, oldest first, one request at a
//! time. So whatever the concurrency, a destination receives each series'
//! samples in the order they were accepted, which Prometheus requires (it
//! answers 400 "out of order sample" otherwise). A catch-up burst after an
//! outage stays in order too. (A reload that changes `concurrency` maps the
//! queued blocks' lanes onto the new senders; series moving sender then may
//! briefly overtake their backlog.)
//!
//! Prometheus answers 400 "out of order sample", "duplicate sample for
//! timestamp" or "out of bounds" for data it holds already, e.g. blocks sent
//! again after a crash, and then stores nothing of the request. A request of
//! several blocks so refused is sent again block by block, so blocks it
//! never had are not lost with the others; a single block so refused is
//! counted in `spillway_samples_duplicate_total` and acknowledged: not
//! retried, and not counted as dropped.
//!
//! # When the queue is full
//!
//! `on_full` decides what an accept does when the queue would pass
//! `max_disk_bytes`: `drop_oldest` (the default) drops whole oldest queue
//! segments, `drop_newest` drops the new batch; both count the samples as
//! `disk_full`. `block` drops nothing: the accept fails with
//! [`DestinationError::Full`], the receiver answers 429 with `Retry-After`,
//! and the engine holds its results until there is room (counting the wait).
//! Only delivered data makes room then.
//!
//! [`Destination::accept`] returns only once the series are on disk: a
//! receiver answers its client after every destination accepted, so the
//! client's own retry covers everything before our queue, and the queue
//! covers everything after. Series are encoded once, on accept, into blocks
//! of at most `max_batch_samples` samples (remote write: protobuf + snappy;
//! vm_import: JSON lines), and those bytes are what the queue keeps and the
//! sender posts, so a replay after a restart rebuilds nothing.
//!
//! # Guarantee: at-least-once
//!
//! Data accepted is delivered or counted as dropped, never silently lost,
//! `kill -9` included. What can happen instead:
//! - duplicates: a crash after a send but before its acknowledgement is
//!   stored re-sends it. The queue stores what was acknowledged (in any
//!   order: a sender waiting out a backoff on the oldest block does not hold
//!   back the others') at most once a second ([`CURSOR_SYNC_INTERVAL`], as
//!   vmagent stores its queue metadata), so a crash re-sends at most about
//!   a second of delivered data, plus the requests in flight.
//!   VictoriaMetrics and Prometheus keep one sample per series and
//!   timestamp, so duplicates do not show in queries.
//! - drops, each counted in `spillway_samples_dropped_total{reason}`:
//!   `disk_full` (past `max_disk_bytes` the oldest blocks go, in whole queue
//!   segments), `rejected_4xx` (the destination answered 4xx other than 429:
//!   retrying the same bytes cannot succeed; its body is logged),
//!   `too_large` (one block does not fit in `max_disk_bytes` at all),
//!   `damaged` (a block that fails its checksum on disk, or that a damaged
//!   or cut queue file lost: found at open, logged once with the segment,
//!   offset, blocks and samples), and `relabel` (the
//!   destination's `relabel_configs` filtered the series out: by design, but
//!   counted so that accepted = sent + duplicate + dropped + pending adds
//!   up; `duplicate` is what the destination said it held already, see Order).
//!
//! # Cost per sample
//!
//! Encoding happens once (remote write: about 20 bytes of protobuf per
//! sample plus the labels of its series, snappy-compressed). A series that
//! came by remote write and leaves unchanged (no rule edited it, no
//! external label was missing) is not encoded at all: its `TimeSeries`
//! bytes are copied from the request ([`crate::model::WireForm`]). Each
//! accept costs one `fdatasync` for all its blocks; each delivered block
//! costs an in-memory acknowledgement, with the queue's meta file (what was
//! delivered, what was written) stored (temp file, fsync, rename) at most
//! once a second. On disk a block carries a 40-byte header. A series' lane
//! is one xxh64 of its labels per accept (skipped when `concurrency` is
//! 1). Small blocks (rule results of a few samples, a batch cut into lanes)
//! are merged by the sender into requests of up to `max_batch_samples`,
//! waiting at most `flush_interval` for company, so a trickle of tiny
//! results does not become a trickle of tiny requests; snappy blocks merge
//! by concatenation, without being decompressed. The wait also ends when
//! the producers say they are done ([`Destination::producers_idle`], which
//! the rule engine calls at the end of each group iteration): nothing more
//! is coming to share the request, and waiting would only delay results.
//!
//! Measured (`cargo bench --bench relabel`, batches of 10k one-sample
//! series, fsync included): an accept costs 150–230 ns per series; a
//! `keep`/`drop`-only rule list decides in about 15 ns per series without
//! copying labels. End to end, `scripts/bench-router.sh` (remote write in,
//! two relabel-routed destinations out) is where the whole path is
//! measured against vmagent; the figures are in the README.
//!
//! # Queue directories
//!
//! `<storage.path>/<name>` with the name reduced to `[A-Za-z0-9._-]` (other
//! characters become `_`), created (with its parent fsynced) at the first
//! open. A destination removed from the config leaves its
//! directory alone: its pending data is not deleted by an edit, and comes
//! back if the destination does (vmagent deletes such queues; we prefer not
//! to destroy data on a typo). Delete the directory by hand when it is no
//! longer wanted. A reload that changes a destination stops it without
//! draining and opens the same directory again with the new settings, so
//! what was queued is delivered by the new settings (URL included); a
//! renamed destination is a removed one plus a new, empty one.

mod encode;
mod event_sender;
mod sender;
mod stats;

pub use stats::{Counters, DestinationStatus, DropReason};

use crate::client::{Client, ClientConfig, RetryPolicy};
use crate::codec::CodecError;
use crate::model::{BatchMeta, Labels, Origin, Series};
use crate::queue::OnFull;
use crate::queue::{Queue, QueueError, QueueOptions, RecoveryReport};
use crate::sink::event::{EventConfig, EventKind};
use crate::transform::relabel::RelabelRules;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Samples per block (and per request) unless configured: vmagent's
/// `-remoteWrite.maxRowsPerBlock` default.
pub const DEFAULT_MAX_BATCH_SAMPLES: usize = 10_000;
/// Longest a small block waits for others to share a request with. Rule
/// results of one evaluation arrive within milliseconds of each other, so a
/// short wait merges them as well as a long one, and a breach reaches its
/// destination a second sooner than with vmagent's 1s (scripts/bench-run.sh).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Queue cap unless configured.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 1 << 30;
/// Smallest `max_disk_bytes` accepted: a few blocks of default size.
pub const MIN_MAX_DISK_BYTES: u64 = 1 << 20;
/// How often the queue's read position is stored (see the module docs).
pub const CURSOR_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Most senders a destination runs: each owns a lane, and a queue record
/// has one byte for its lane.
pub const MAX_CONCURRENCY: usize = 256;
/// Most queued blocks one request merges: each sender's share of the
/// queue's in-flight records, so a sender stuck on its lane never holds
/// back the others'.
const MAX_BLOCKS_PER_REQUEST: usize = 256;
/// What a full destination with `on_full: block` tells its clients to wait.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Requests in parallel unless configured: two per CPU, vmagent's
/// `-remoteWrite.queues` default, so spillway behind a vmalert keeps up
/// like the vmagent it replaces. A destination that must see samples in
/// order sets `concurrency: 1`.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| 2 * n.get())
}

/// The retry policy of every destination: forever (the queue holds the
/// data meanwhile), from 0.5 s up to 10 s between attempts, so a destination
/// that comes back is found within seconds.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: None,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(10),
        all_but_refusals: true,
    }
}

/// Which remote-write protocol a `remote_write` destination speaks
/// (`protocol:`; see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteProtocol {
    /// vmagent's default: the VictoriaMetrics protocol (zstd) until the
    /// destination answers 400 or 415 to it, then Prometheus remote write
    /// 1.0 (snappy) for the rest of the process' life.
    #[default]
    Auto,
    /// Prometheus remote write 1.0 only.
    Prometheus,
    /// The VictoriaMetrics protocol; a block refused with 400/415 is still
    /// sent once more as Prometheus remote write, as vmagent's
    /// `-remoteWrite.useVMProto` does, but the next ones stay zstd.
    VictoriaMetrics,
}

impl WriteProtocol {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(WriteProtocol::Auto),
            "prometheus" => Ok(WriteProtocol::Prometheus),
            "victoriametrics" => Ok(WriteProtocol::VictoriaMetrics),
            other => Err(format!(
                "unknown remote write protocol {other:?}: expected auto, prometheus or victoriametrics"
            )),
        }
    }

    /// `protocol:` of a destination of `kind`: only remote write has one.
    pub fn check(value: Option<&str>, kind: DestinationKind) -> Result<Self, String> {
        match value {
            None => Ok(WriteProtocol::default()),
            Some(_) if kind != DestinationKind::RemoteWrite => Err(format!(
                "only remote_write destinations choose a protocol, this one is {}; remove `protocol`",
                kind.as_str()
            )),
            Some(v) => WriteProtocol::parse(v),
        }
    }
}

/// What an accept does when the queue is full (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFullPolicy {
    #[default]
    DropOldest,
    DropNewest,
    Block,
}

impl OnFullPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "drop_oldest" => Ok(OnFullPolicy::DropOldest),
            "drop_newest" => Ok(OnFullPolicy::DropNewest),
            "block" => Ok(OnFullPolicy::Block),
            other => Err(format!(
                "unknown on_full policy {other:?}: expected drop_oldest, drop_newest or block"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnFullPolicy::DropOldest => "drop_oldest",
            OnFullPolicy::DropNewest => "drop_newest",
            OnFullPolicy::Block => "block",
        }
    }
}

/// The wire format a destination speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// Prometheus remote write 1.0: protobuf `WriteRequest`, snappy block.
    RemoteWrite,
    /// VictoriaMetrics `/api/v1/import` JSON lines.
    VmImport,
    /// One event per sample to a SIEM or log pipeline ([`crate::sink::event`]).
    Event(EventKind),
}

impl DestinationKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "remote_write" => Ok(DestinationKind::RemoteWrite),
            "vm_import" => Ok(DestinationKind::VmImport),
            other => EventKind::parse(other).map(DestinationKind::Event).ok_or_else(|| {
                format!(
                    "unknown destination type {other:?}: expected remote_write, vm_import, syslog, elasticsearch, splunk_hec, webhook or file"
                )
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::RemoteWrite => "remote_write",
            DestinationKind::VmImport => "vm_import",
            DestinationKind::Event(k) => k.as_str(),
        }
    }

    /// The path requests go to, from the URL the user gave: remote write
    /// URLs are taken as given (`/api/v1/write`, `/api/v1/push`, ...), and a
    /// bare server or cluster-insert URL gets `/api/v1/write`; vm_import
    /// always posts to `<base>/api/v1/import`, whichever API path the URL
    /// named (`http://vm:8428`, `.../insert/0/prometheus`, `.../api/v1/import`).
    pub fn request_path(self, url: &str) -> String {
        match self {
            // Event transports know their own paths.
            DestinationKind::Event(_) => String::new(),
            DestinationKind::VmImport => "/api/v1/import".to_string(),
            DestinationKind::RemoteWrite => {
                let path = url::Url::parse(url.trim())
                    .map(|u| u.path().trim_end_matches('/').to_string())
                    .unwrap_or_default();
                match path.find("/api/v1/") {
                    Some(i) => path[i..].to_string(),
                    None if path.ends_with("/api/v1") => "/api/v1/write".to_string(),
                    // Anything else is the base; the client joins this to it.
                    None => "/api/v1/write".to_string(),
                }
            }
        }
    }
}

/// A checked destination config; `run` builds it from the YAML.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: DestinationKind,
    /// URL, auth, tenant, TLS, headers, timeout. Its retry policy is
    /// replaced by [`retry_policy`].
    pub client: ClientConfig,
    pub relabel: RelabelRules,
    /// Added to series that lack them, after `relabel` (Prometheus'
    /// `external_labels` rule: the series' own value wins).
    pub external_labels: Vec<(String, String)>,
    pub max_batch_samples: usize,
    pub flush_interval: Duration,
    pub concurrency: usize,
    pub max_disk_bytes: u64,
    pub on_full: OnFullPolicy,
    /// The queue directory, `<storage.path>/<queue_dir_name(name)>`.
    pub queue_dir: PathBuf,
    /// The settings of an event destination (`kind` is `Event`).
    pub event: Option<Arc<EventConfig>>,
    /// `schedule:` and `outside_schedule:`; the pipeline applies them
    /// before this destination sees a batch.
    pub schedule: Option<Arc<crate::sink::schedule::ScheduleRoute>>,
    /// Remote write only: VictoriaMetrics (zstd) or Prometheus (snappy).
    pub protocol: WriteProtocol,
}

impl DestinationConfig {
    /// A config with every default, for code and tests.
    pub fn new(
        name: &str,
        kind: DestinationKind,
        client: ClientConfig,
        storage: &Path,
    ) -> DestinationConfig {
        DestinationConfig {
            name: name.to_string(),
            kind,
            client,
            relabel: RelabelRules::empty(Default::default()),
            external_labels: Vec::new(),
            max_batch_samples: DEFAULT_MAX_BATCH_SAMPLES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            concurrency: default_concurrency(),
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            on_full: OnFullPolicy::DropOldest,
            queue_dir: storage.join(queue_dir_name(name)),
            event: None,
            schedule: None,
            protocol: WriteProtocol::default(),
        }
    }
}

/// The directory name of a destination's queue: the name with everything
/// but `[A-Za-z0-9._-]` turned into `_` (and `.`/`..` made harmless).
pub fn queue_dir_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("destination {name}: {reason}")]
    Config { name: String, reason: String },
    #[error("destination {name} is shutting down and takes no more data")]
    Closed { name: String },
    #[error("destination {name}: queue {dir}: {source}")]
    Queue {
        name: String,
        dir: PathBuf,
        #[source]
        source: QueueError,
    },
    #[error("destination {name}: cannot encode the batch: {source}")]
    Encode {
        name: String,
        #[source]
        source: CodecError,
    },
    #[error(
        "destination {name}: queue is full (max_disk_bytes) and on_full is block; \
         retry in {}s, once the destination has taken some of it",
        retry_after.as_secs()
    )]
    Full { name: String, retry_after: Duration },
}

/// What one accept did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Samples now in the queue.
    pub samples: u64,
    /// Samples the destination's relabeling filtered out.
    pub relabel_dropped: u64,
    /// Samples dropped because the queue was full (`on_full: drop_newest`).
    pub full_dropped: u64,
    /// Blocks written.
    pub blocks: usize,
}

/// Lifecycle of the senders, broadcast to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Deliver what is queued, then stop.
    Draining,
    /// Stop now; what is in flight stays queued for the next start.
    Stopped,
}

/// One destination: its queue and its senders. Share it in an `Arc`.
pub struct Destination {
    shared: Arc<Shared>,
    tasks: Mutex<Tasks>,
}

pub(crate) struct Shared {
    name: String,
    kind: DestinationKind,
    /// Where requests go, relative to the client's base URL.
    path: String,
    display_url: String,
    relabel: RelabelRules,
    external_labels: Vec<(String, String)>,
    max_batch_samples: usize,
    flush_interval: Duration,
    concurrency: usize,
    on_full: OnFullPolicy,
    queue: Queue,
    client: Client,
    retry: RetryPolicy,
    stats: stats::Stats,
    /// Per-accept buffers, handed back after each accept (see [`Scratch`]).
    scratch: Mutex<Vec<Scratch>>,
    /// Woken by the queue whenever a record may have become readable.
    wake: Arc<Notify>,
    phase: watch::Sender<Phase>,
    accepting: AtomicBool,
    /// The queue refused a push for room since the last one it took.
    full: AtomicBool,
    /// Accepts begun, and how many had begun at the last
    /// [`Destination::producers_idle`]: while the two are equal nothing
    /// more is on its way, so a sender stops waiting for company.
    accepts_begun: AtomicU64,
    accepts_at_idle: AtomicU64,
    /// Accepts finished (pushed, refused or failed): a sender that read
    /// nothing knows its read saw every block of the accepts the hint
    /// counted only if they had all finished before it read.
    accepts_done: AtomicU64,
    /// Set for event destinations.
    event: Option<Arc<EventConfig>>,
    protocol: WriteProtocol,
    /// Remote write: new blocks and merged requests use the VictoriaMetrics
    /// protocol (zstd). Cleared for good when `Auto` learns the destination
    /// does not take it.
    vm_proto: AtomicBool,
}

impl Destination {
    /// Opens (and repairs, after a crash) the queue and the client. Senders
    /// start with [`Destination::start`]. Blocking: opening a queue reads
    /// what it holds, so call it before serving or from `spawn_blocking`.
    pub fn open(
        config: DestinationConfig,
    ) -> Result<(Destination, RecoveryReport), DestinationError> {
        let name = config.name.clone();
        let cfg_err = |reason: String| DestinationError::Config {
            name: name.clone(),
            reason,
        };
        if config.max_batch_samples == 0 {
            return Err(cfg_err("max_batch_samples must be at least 1".into()));
        }
        if !(1..=MAX_CONCURRENCY).contains(&config.concurrency) {
            return Err(cfg_err(format!(
                "concurrency must be 1 to {MAX_CONCURRENCY}, got {}",
                config.concurrency
            )));
        }
        let path = config.kind.request_path(&config.client.url);
        let mut client_config = config.client;
        client_config.retry = retry_policy();
        let event = config.event.clone();
        if matches!(config.kind, DestinationKind::Event(k) if !k.is_http()) {
            // Syslog and file transports own their connections; the client
            // is there for the shape of `Shared` only and never called.
            client_config.url = "http://127.0.0.1".into();
        }
        let client = Client::new(client_config).map_err(|e| cfg_err(e.to_string()))?;
        let mut display_url = client.endpoint().display_at(&path);
        if let Some(e) = &event {
            display_url = e.display_target(&display_url);
        }

        let mut opts = QueueOptions::new(config.max_disk_bytes);
        // Senders merge small blocks, so each may hold many at once (but
        // no more than its share, see `sender::run`).
        opts.max_in_flight = config.concurrency.saturating_mul(MAX_BLOCKS_PER_REQUEST);
        opts.cursor_sync_interval = CURSOR_SYNC_INTERVAL;
        opts.on_full = match config.on_full {
            OnFullPolicy::DropOldest => OnFull::DropOldest,
            OnFullPolicy::DropNewest | OnFullPolicy::Block => OnFull::Refuse,
        };
        let (queue, report) =
            Queue::open(&config.queue_dir, opts).map_err(|source| DestinationError::Queue {
                name: name.clone(),
                dir: config.queue_dir.clone(),
                source,
            })?;
        let wake = Arc::new(Notify::new());
        let hook = Arc::clone(&wake);
        queue.set_notify_hook(move || hook.notify_waiters());
        let (phase, _) = watch::channel(Phase::Running);
        log_damage(&name, &report);
        let shared = Shared {
            stats: stats::Stats::new(&name),
            name,
            kind: config.kind,
            path,
            display_url,
            relabel: config.relabel,
            external_labels: config.external_labels,
            max_batch_samples: config.max_batch_samples,
            flush_interval: config.flush_interval,
            concurrency: config.concurrency,
            on_full: config.on_full,
            queue,
            client,
            retry: retry_policy(),
            scratch: Mutex::new(Vec::new()),
            wake,
            phase,
            accepting: AtomicBool::new(true),
            full: AtomicBool::new(false),
            accepts_begun: AtomicU64::new(0),
            accepts_at_idle: AtomicU64::new(0),
            accepts_done: AtomicU64::new(0),
            event,
            protocol: config.protocol,
            vm_proto: AtomicBool::new(
                config.kind == DestinationKind::RemoteWrite
                    && config.protocol != WriteProtocol::Prometheus,
            ),
        };
        Ok((
            Destination {
                shared: Arc::new(shared),
                tasks: Mutex::new(Tasks::default()),
            },
            report,
        ))
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn kind(&self) -> DestinationKind {
        self.shared.kind
    }

    pub fn on_full(&self) -> OnFullPolicy {
        self.shared.on_full
    }

    /// The URL requests go to, without credentials.
    pub fn display_url(&self) -> &str {
        &self.shared.display_url
    }

    /// Starts the senders (and the timer that stores the queue's read
    /// position). Call once, from inside the runtime.
    pub fn start(&self) {
        let mut tasks = lock(&self.tasks);
        if tasks.timer.is_some() {
            return;
        }
        for worker in 0..self.shared.concurrency {
            let shared = Arc::clone(&self.shared);
            let task = match &self.shared.event {
                Some(e) => tokio::spawn(event_sender::run(shared, Arc::clone(e), worker)),
                None => tokio::spawn(sender::run(shared, worker)),
            };
            tasks.senders.push(task);
        }
        tasks.timer = Some(tokio::spawn(sender::sync_cursor(Arc::clone(&self.shared))));
    }

    /// Relabels, encodes and durably queues `batch` (see the module docs).
    /// Blocking (it waits for fsync): async callers use
    /// [`Destination::accept_async`].
    pub fn accept(&self, batch: &[Series]) -> Result<Accepted, DestinationError> {
        let origin = Origin::received();
        self.accept_with(
            batch,
            BatchMeta {
                origin: &origin,
                annotations: &[],
                wire: None,
            },
        )
    }

    /// [`Destination::accept`] with where the batch came from (rule,
    /// group, kind, annotations), which event destinations put in every
    /// event; metric destinations use only its wire form, if any.
    pub fn accept_with(
        &self,
        batch: &[Series],
        meta: BatchMeta<'_>,
    ) -> Result<Accepted, DestinationError> {
        self.shared.accept(batch, meta, true)
    }

    /// [`Destination::accept_with`] for series another destination already
    /// relabeled (a schedule's fallback takes them as they are): neither
    /// this destination's `relabel_configs` nor its `external_labels` apply.
    pub fn accept_as_is(
        &self,
        batch: &[Series],
        meta: BatchMeta<'_>,
    ) -> Result<Accepted, DestinationError> {
        self.shared.accept(batch, meta, false)
    }

    /// [`Destination::accept`] on the blocking pool.
    pub async fn accept_async(
        &self,
        batch: Arc<Vec<Series>>,
    ) -> Result<Accepted, DestinationError> {
        let shared = Arc::clone(&self.shared);
        crate::blocking::spawn_short(move || {
            let origin = Origin::received();
            let meta = BatchMeta {
                origin: &origin,
                annotations: &[],
                wire: None,
            };
            shared.accept(&batch, meta, true)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Says that the producers are done for now (the rule engine ends
    /// each group iteration with it): senders send what they gathered
    /// instead of waiting up to `flush_interval` for more. A later accept
    /// cancels it.
    pub fn producers_idle(&self) {
        let begun = self.shared.accepts_begun.load(Ordering::SeqCst);
        self.shared.accepts_at_idle.store(begun, Ordering::SeqCst);
        self.shared.wake.notify_waiters();
    }

    /// Queue depth and counters, for `/api/v1/destinations`.
    pub fn status(&self) -> DestinationStatus {
        self.shared.stats.status(&self.shared)
    }

    /// Counts samples this destination did not take for `reason` (the
    /// pipeline's `schedule` decisions).
    pub fn count_dropped(&self, reason: DropReason, samples: u64) {
        if samples > 0 {
            self.shared.stats.dropped(reason, samples);
        }
    }

    /// The labels this destination would send for a series (its
    /// `relabel_configs` and `external_labels`), `None` when it drops it.
    pub fn relabeled_labels(&self, labels: &Labels) -> Option<Labels> {
        self.shared.relabeled(labels).map(Cow::into_owned)
    }

    /// Refreshes this destination's `/metrics` gauges and counters.
    pub fn collect_metrics(&self) {
        self.shared.stats.collect(
            &self.shared.queue.stats(),
            self.shared.queue.options().max_disk_bytes,
        );
    }

    /// Stops taking data, delivers what is queued for at most `timeout`,
    /// then stops the senders and closes the queue. What was not delivered
    /// stays queued for the next start.
    pub async fn shutdown(&self, timeout: Duration) {
        self.halt(Some(timeout)).await
    }

    /// Stops taking data and stops the senders at once, without waiting for
    /// deliveries (a send in progress is abandoned and stays queued), then
    /// closes the queue. For a reload that rebuilds or removes the
    /// destination: its queue directory keeps everything undelivered.
    pub async fn stop(&self) {
        self.halt(None).await
    }

    /// Whether nothing but this handle uses the queue any more (after
    /// [`Destination::stop`]), so dropping it releases the queue directory
    /// for a rebuilt destination.
    pub fn released(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// The counters so far (see [`Destination::continue_counters`]).
    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot(&self.shared.queue.stats())
    }

    /// Continues the counters of the destination this one replaces (same
    /// name, rebuilt by a reload), so `/metrics` counters do not restart.
    pub fn continue_counters(&self, previous: &Counters) {
        self.shared.stats.continue_from(previous);
    }

    async fn halt(&self, drain: Option<Duration>) {
        let shared = &self.shared;
        shared.accepting.store(false, Ordering::SeqCst);
        let Tasks { mut senders, timer } = std::mem::take(&mut *lock(&self.tasks));
        if let Some(timeout) = drain {
            shared.phase.send_replace(Phase::Draining);
            shared.wake.notify_waiters();
            let drained = tokio::time::timeout(timeout, join_all(&mut senders))
                .await
                .is_ok();
            if !drained {
                tracing::warn!(
                    destination = %shared.name,
                    pending_samples = shared.queue.stats().pending_samples,
                    "shutdown timeout reached before the queue was delivered; the rest stays queued for the next start"
                );
            }
        }
        shared.phase.send_replace(Phase::Stopped);
        shared.wake.notify_waiters();
        join_all(&mut senders).await;
        if let Some(t) = timer {
            t.abort();
            let _ = t.await;
        }
        let queue_owner = Arc::clone(shared);
        match tokio::task::spawn_blocking(move || queue_owner.queue.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(destination = %shared.name, "closing the queue: {e}"),
            Err(e) => tracing::error!(destination = %shared.name, "closing the queue: {e}"),
        }
    }
}

#[derive(Default)]
struct Tasks {
    senders: Vec<JoinHandle<()>>,
    /// Stores the queue's read position every [`CURSOR_SYNC_INTERVAL`].
    timer: Option<JoinHandle<()>>,
}

/// Awaits every handle, removing each as it finishes, so a caller that gave
/// up (a timeout) can await the rest again later.
async fn join_all(handles: &mut Vec<JoinHandle<()>>) {
    while let Some(h) = handles.last_mut() {
        let result = h.await;
        handles.pop();
        if let Err(e) = result {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// Buffers one accept works with, pooled per destination and handed back
/// after each: a batch of 10,000 series otherwise allocated its list of
/// kept series afresh, and the kernel faulted in and zeroed its pages every
/// time (`scripts/bench-router.sh` under `perf`).
struct Scratch {
    enc: encode::BlockEncoder,
    /// The series kept, in batch order: lane, index in the batch, and the
    /// labels relabeling made when it changed them.
    kept: Vec<(u8, usize, Option<Labels>)>,
    lane_key: Vec<u8>,
}

/// Relabels as vmagent's remote-write path does: the rules, then labels
/// starting with `__` (but `__name__`) are removed, the usual home of
/// temporary labels; a series left without labels is dropped. `false`
/// means dropped.
pub fn relabel_like_vmagent(rules: &RelabelRules, labels: &mut Labels) -> bool {
    if !rules.apply(labels) {
        return false;
    }
    crate::transform::relabel::finalize(labels);
    !labels.is_empty()
}

/// [`relabel_like_vmagent`] that also says whether it changed the labels:
/// `None` when the series is dropped, `Some(changed)` otherwise.
/// Filter-only rules decide without editing, so a kept series is unchanged
/// unless it had temporary (`__`) labels to remove.
pub fn relabel_like_vmagent_marking(rules: &RelabelRules, labels: &mut Labels) -> Option<bool> {
    match rules.keeps(labels) {
        Some(false) => None,
        Some(true) => {
            if !crate::transform::relabel::has_temporary(labels) {
                return (!labels.is_empty()).then_some(false);
            }
            crate::transform::relabel::finalize(labels);
            (!labels.is_empty()).then_some(true)
        }
        None => relabel_like_vmagent(rules, labels).then_some(true),
    }
}

/// The lane (and so the sender) of a series: the same labels always map
/// to the same one, so a series' samples leave in the order they came.
/// The labels are laid out in `key` (reused) and hashed in one call: the
/// same xxh64 as feeding them piece by piece, without the streaming
/// hasher's cost per piece.
fn lane_of(labels: &Labels, lanes: usize, key: &mut Vec<u8>) -> u8 {
    if lanes <= 1 {
        return 0;
    }
    key.clear();
    for l in labels.iter() {
        key.extend_from_slice(l.name.as_bytes());
        key.push(0xff);
        key.extend_from_slice(l.value.as_bytes());
        key.push(0xfe);
    }
    (xxhash_rust::xxh64::xxh64(key, 0) % lanes as u64) as u8
}

/// Indices of `lanes` (each below `count`) grouped by lane in lane order,
/// each lane's in their original order: a counting sort, since there are
/// few lanes and many series.
fn lane_order(lanes: impl Iterator<Item = u8> + Clone, count: usize) -> Vec<usize> {
    let mut start = vec![0usize; count.max(1) + 1];
    for l in lanes.clone() {
        start[usize::from(l) + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut order = vec![0; start[start.len() - 1]];
    for (i, l) in lanes.enumerate() {
        let at = &mut start[usize::from(l)];
        order[*at] = i;
        *at += 1;
    }
    order
}

/// Logs each spot of damage recovery found, once, with what was lost.
fn log_damage(name: &str, report: &RecoveryReport) {
    for c in &report.corruptions {
        tracing::error!(
            destination = %name,
            segment = %c.segment.display(),
            offset = c.offset,
            skipped_bytes = c.skipped_bytes,
            lost_blocks = c.records,
            lost_samples = ?c.samples,
            "queue damaged: {}; the lost samples are counted in spillway_samples_dropped_total{{reason=\"damaged\"}}",
            c.reason
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts an accept as finished on every way out of it, panics included.
struct AcceptDone<'a>(&'a AtomicU64);

impl Drop for AcceptDone<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// How many accepts had finished: take it before reading the queue,
    /// for [`Shared::producers_are_idle`].
    pub(super) fn accepts_done(&self) -> u64 {
        self.accepts_done.load(Ordering::SeqCst)
    }

    /// No accept began since the last [`Destination::producers_idle`], and
    /// every accept it counted had finished by `done_before_read` (else an
    /// accept racing the read may have pushed blocks after it, and the
    /// hint that followed would send the batch without them).
    pub(super) fn producers_are_idle(&self, done_before_read: u64) -> bool {
        let at_idle = self.accepts_at_idle.load(Ordering::SeqCst);
        at_idle == self.accepts_begun.load(Ordering::SeqCst) && done_before_read >= at_idle
    }

    fn accept(
        &self,
        batch: &[Series],
        meta: BatchMeta<'_>,
        relabel: bool,
    ) -> Result<Accepted, DestinationError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(DestinationError::Closed {
                name: self.name.clone(),
            });
        }
        self.accepts_begun.fetch_add(1, Ordering::SeqCst);
        let _done = AcceptDone(&self.accepts_done);
        if let Some(e) = &self.event {
            return self.accept_events(e, batch, meta, relabel);
        }
        let mut scratch = lock(&self.scratch).pop().unwrap_or_else(|| Scratch {
            enc: encode::BlockEncoder::new(self.kind, self.max_batch_samples),
            kept: Vec::new(),
            lane_key: Vec::new(),
        });
        scratch.enc.set_compression(self.compression());
        let result = self.encode_and_push(batch, meta, relabel, &mut scratch);
        scratch.enc.reset();
        scratch.kept.clear();
        lock(&self.scratch).push(scratch);
        result
    }

    fn encode_and_push(
        &self,
        batch: &[Series],
        // Metric kinds encode labels and samples only, and copy a series'
        // received encoding when they send it unchanged.
        meta: BatchMeta<'_>,
        relabel: bool,
        scratch: &mut Scratch,
    ) -> Result<Accepted, DestinationError> {
        let encode_err = |source| DestinationError::Encode {
            name: self.name.clone(),
            source,
        };
        let mut out = Accepted::default();
        let Scratch {
            enc,
            kept,
            lane_key,
        } = scratch;
        for (i, s) in batch.iter().enumerate() {
            if s.samples.is_empty() {
                continue;
            }
            let labels = if relabel {
                self.relabeled(&s.labels)
            } else {
                Some(Cow::Borrowed(&s.labels))
            };
            let Some(labels) = labels else {
                out.relabel_dropped += s.samples.len() as u64;
                continue;
            };
            let lane = lane_of(&labels, self.concurrency, lane_key);
            let changed = match labels {
                Cow::Borrowed(_) => None,
                Cow::Owned(l) => Some(l),
            };
            kept.push((lane, i, changed));
        }
        self.stats.relabel_dropped(out.relabel_dropped);
        for k in lane_order(kept.iter().map(|k| k.0), self.concurrency) {
            let (lane, i, changed) = &kept[k];
            let s = &batch[*i];
            // Only a series sent as it came may reuse its received encoding.
            let wire = match (changed, meta.wire) {
                (None, Some(w)) => w.series_bytes(*i),
                _ => None,
            };
            enc.set_lane(*lane).map_err(encode_err)?;
            enc.add_wire(wire, changed.as_ref().unwrap_or(&s.labels), &s.samples)
                .map_err(encode_err)?;
        }
        let blocks = enc.finish().map_err(encode_err)?;
        if blocks.is_empty() {
            return Ok(out);
        }
        out.blocks = blocks.len();
        out.samples = blocks.iter().map(|b| b.1).sum();
        let result = self.push_blocks(&blocks, out);
        enc.recycle(blocks);
        result
    }

    fn push_blocks(
        &self,
        blocks: &[(Vec<u8>, u64, u8)],
        mut out: Accepted,
    ) -> Result<Accepted, DestinationError> {
        let records: Vec<(&[u8], u64, u8)> = blocks
            .iter()
            .map(|(b, n, lane)| (b.as_slice(), *n, *lane))
            .collect();
        match self.queue.push_lanes(&records) {
            Ok(outcome) => {
                self.stats.queued(out.samples, outcome.dropped_samples);
                self.full.store(false, Ordering::Relaxed);
                if outcome.dropped_samples > 0 {
                    tracing::warn!(
                        destination = %self.name,
                        dropped_samples = outcome.dropped_samples,
                        "queue reached max_disk_bytes: dropped its oldest data; raise max_disk_bytes or fix the destination"
                    );
                }
                Ok(out)
            }
            Err(QueueError::TooLarge { .. }) if records.len() > 1 => {
                // The batch as a whole does not fit: queue what does, block by block.
                let mut full = 0;
                for record in records {
                    full += self.push_one(record)?;
                }
                out.samples -= full;
                out.full_dropped = full;
                Ok(out)
            }
            Err(QueueError::TooLarge { .. }) => {
                let full = self.push_one(records[0])?;
                out.samples -= full;
                out.full_dropped = full;
                Ok(out)
            }
            Err(QueueError::Full { .. }) => {
                let samples = out.samples;
                self.refused_full(samples)?;
                out.samples = 0;
                out.full_dropped = samples;
                Ok(out)
            }
            Err(source) => Err(self.queue_err(source)),
        }
    }

    /// A push the queue refused for room: `drop_newest` drops and counts
    /// it (warning once per full spell), `block` refuses the accept.
    fn refused_full(&self, samples: u64) -> Result<(), DestinationError> {
        if self.on_full == OnFullPolicy::Block {
            self.stats.full_refusal();
            return Err(DestinationError::Full {
                name: self.name.clone(),
                retry_after: FULL_RETRY_AFTER,
            });
        }
        // Queued and dropped at once, so queued = sent + dropped + pending holds.
        self.stats.queued(samples, samples);
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                destination = %self.name,
                dropped_samples = samples,
                "queue reached max_disk_bytes: dropping new data (on_full: drop_newest) until the destination takes some; raise max_disk_bytes or fix the destination"
            );
        }
        Ok(())
    }

    /// The series' labels as this destination sends them, or `None` when
    /// relabeling drops it. Copies the labels only when something changes
    /// them: filter-only rules (`keep`, `drop`, ...) decide on the original.
    fn relabeled<'a>(&self, labels: &'a Labels) -> Option<Cow<'a, Labels>> {
        let verdict = if self.relabel.is_empty() {
            Some(true)
        } else {
            self.relabel.keeps(labels)
        };
        let mut owned = match verdict {
            Some(false) => return None,
            Some(true) => {
                let temporary =
                    !self.relabel.is_empty() && crate::transform::relabel::has_temporary(labels);
                let missing = self
                    .external_labels
                    .iter()
                    .any(|(k, _)| labels.get(k).is_none());
                if !temporary && !missing {
                    return Some(Cow::Borrowed(labels));
                }
                let mut l = labels.clone();
                if temporary {
                    crate::transform::relabel::finalize(&mut l);
                    if l.is_empty() {
                        return None;
                    }
                }
                l
            }
            None => {
                let mut l = labels.clone();
                if !relabel_like_vmagent(&self.relabel, &mut l) {
                    return None;
                }
                l
            }
        };
        for (k, v) in &self.external_labels {
            if owned.get(k).is_none() {
                owned.set(k.as_str(), v.as_str());
            }
        }
        Some(Cow::Owned(owned))
    }

    /// Pushes one block; one that cannot fit in `max_disk_bytes` at all is
    /// dropped and counted (retrying it could never succeed). Returns the
    /// samples dropped because the queue was full (`drop_newest`).
    fn push_one(&self, (bytes, samples, lane): (&[u8], u64, u8)) -> Result<u64, DestinationError> {
        match self.queue.push_lanes(&[(bytes, samples, lane)]) {
            Ok(outcome) => {
                self.stats.queued(samples, outcome.dropped_samples);
                Ok(0)
            }
            Err(QueueError::TooLarge {
                bytes: size,
                max_disk_bytes,
                ..
            }) => {
                self.stats.dropped(DropReason::TooLarge, samples);
                let msg = format!(
                    "a block of {samples} samples ({size} bytes) cannot fit in max_disk_bytes = {max_disk_bytes}: dropped; raise max_disk_bytes or lower max_batch_samples"
                );
                tracing::error!(destination = %self.name, "{msg}");
                self.stats.set_last_error(msg);
                Ok(0)
            }
            Err(QueueError::Full { .. }) => self.refused_full(samples).map(|()| samples),
            Err(source) => Err(self.queue_err(source)),
        }
    }

    fn queue_err(&self, source: QueueError) -> DestinationError {
        DestinationError::Queue {
            name: self.name.clone(),
            dir: self.queue.dir().to_path_buf(),
            source,
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }
}

#[cfg(test)]
mod tests;
