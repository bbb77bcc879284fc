//! The filter hub: each replica's bloom filter of live revocations, kept
//! current from the change log and streamed to subscribed gateways.
//!
//! Two tasks, on a thread of their own (`revocd-hub`, one single-threaded
//! runtime; see "A thread of its own"):
//!
//! - the **follower** loads the live set from the store (a paged scan, so
//!   memory stays bounded), then tails the change log (`XREAD BLOCK` on its
//!   own connection) and forwards every batch, the replica's own writes
//!   included: one path, no double bookkeeping. On a store error, or when
//!   the log was trimmed past its cursor ([`crate::store::Error::LogGap`]),
//!   it backs off and loads again, which starts a new generation;
//! - the **hub** owns all state ([`state::HubState`]): it applies batches
//!   to the filter sliced by expiry, drops expired slices, and feeds each
//!   subscriber's bounded queue.
//!
//! # A thread of its own
//!
//! Every replica applies every change of the whole deployment, so its
//! follower must keep up with the write rate of all replicas together,
//! while its own gRPC calls compete with it. As one task among the calls
//! on the shared runtime, a follower under a burst of `RevokeBatch` calls
//! got a share of the workers' time that shrank with the number of calls
//! in flight; on its own thread it gets the operating system's share of a
//! thread, and its `XREAD` replies wake no worker of the call runtime. A
//! snapshot's encoding or a large load page no longer holds up a worker
//! that answers calls, either. The hub stops when it is shut down or when
//! the last [`FilterHub`] handle is dropped.
//!
//! # Read your writes
//!
//! A gateway that subscribes after a `Revoke` was acknowledged (by any
//! replica) gets a snapshot holding that revocation: [`FilterHub::subscribe`]
//! reads the log's head first, and the hub answers only once it has applied
//! the log that far ([`crate::cursor::has_reached`]). On an idle log that
//! is at once; under load it is the follower's lag, at most [`LOAD_WAIT`]
//! (then the call fails with [`SubscribeError::NotReady`] and the gateway
//! retries). Without it, a subscriber could get a snapshot a few
//! milliseconds older than a revocation it had seen acknowledged, and
//! depend on the next delta for it.
//!
//! # Lag policy
//!
//! Frames are offered to a subscriber with `try_send`; the hub never waits
//! for one. When a subscriber's queue is full it is marked for re-basing:
//! it gets no more deltas, and as soon as its queue has two free slots (a
//! whole snapshot takes one, the delta catching it up the other) it gets a
//! snapshot (at the next heartbeat tick). So a stalled gateway slows no
//! one, holds at most its queue's worth of frames (shared with the other
//! subscribers, not copied), and never misses a change silently.
//!
//! # What a heartbeat means
//!
//! A heartbeat says: every change of the log up to its cursor is applied,
//! and the follower reached the log's head less than [`FOLLOWER_SILENCE`]
//! ago. So the hub sends none while it is not *following*: from the moment
//! the follower reports a lost log (or a gap) until a reload completes, and
//! while the follower has not caught up with the head (reads that fill
//! whole batches) for that long. Gateways count their staleness from the
//! last heartbeat, so they see such a replica going stale and apply their
//! policy; new subscriptions are refused meanwhile
//! ([`SubscribeError::Lagging`]).

mod history;
mod live;
mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::backoff::ExponentialBackoff;
use crate::filter::DigestKey;
use crate::pb;
use crate::store::{Change, LogTail, Store};
use crate::time::Clock;

use self::state::HubState;

/// False-positive rate the filter is sized for by default.
pub const DEFAULT_FP_RATE: f64 = 0.001;
/// Room a slice's filter has beyond the entries expected, by default.
pub const DEFAULT_HEADROOM: f64 = 0.1;
/// Smallest saving, in KiB of bitmap, that rebuilds the filter compact
/// by default (see the state module's "Compaction").
pub const DEFAULT_COMPACTION_MIN_KIB: u64 = 256;
/// Fewest entries a slice's filter is sized for by default (256 bytes of
/// bitmap at 0.1%).
pub const DEFAULT_MIN_CAPACITY: usize = 128;

/// Seconds per filter slice for a deployment whose tokens live at most
/// `max_token_lifetime`: a 64th of it, from 1 s to 5 minutes. A revocation
/// stays in the filter until its slice ends, so at most a slice longer
/// than its record; a day's lifetime makes 288 slices.
pub fn slice_seconds_for(max_token_lifetime: Duration) -> u32 {
    (max_token_lifetime.as_secs() / 64).clamp(1, 300) as u32
}
/// Queue slots a subscriber has by default (a delta, a heartbeat, or a
/// whole snapshot each).
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 64;
/// Filter bytes in one Snapshot frame by default: under tonic's 32 KiB
/// yield threshold, so a subscriber's encoder buffer stays at 64 KiB.
pub const DEFAULT_SNAPSHOT_PART_BYTES: usize = 16 << 10;
/// Change-log entries kept for resuming subscribers by default.
pub const DEFAULT_HISTORY: usize = 100_000;
/// Interval between heartbeats on filter streams by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Most subscribers one replica serves at once by default.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;
/// Longest a log read blocks; also how often the follower proves it is alive.
const TAIL_WAIT: Duration = Duration::from_secs(1);
/// The follower reads at least once per [`TAIL_WAIT`]; longer without a
/// read that reached the log's head means the replica is not following the
/// log (stuck, or behind), and heartbeats stop.
pub const FOLLOWER_SILENCE: Duration = Duration::from_secs(3);
/// Most entries read from the log at once.
const TAIL_BATCH: usize = 1_000;
/// Longest a subscription waits for the filter's first load.
pub const LOAD_WAIT: Duration = Duration::from_secs(10);
/// Longest pause between attempts to reach a failing store.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Wait before reloading after the first error since the last good load.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// How the hub sizes its filter and serves subscribers.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Target false-positive rate of the filter, in (0, 0.5).
    pub fp_rate: f64,
    /// How often subscribers get a heartbeat.
    pub heartbeat_interval: Duration,
    /// Queue slots each subscriber has before it is re-based (a delta, a
    /// heartbeat, or a whole snapshot each).
    pub subscriber_buffer: usize,
    /// Change-log entries kept for resuming subscribers with deltas.
    pub history: usize,
    /// Most subscribers at once; more are refused.
    pub max_subscribers: usize,
    /// Fewest entries a filter of a slice is sized for.
    pub min_capacity: usize,
    /// Share of the entries expected in a slice that its filter has room
    /// for beyond them (see the state module's "Expiry, slices and
    /// generations").
    pub headroom: f64,
    /// Fewest bits a compaction of the filter must save.
    pub compaction_min_saving_bits: u64,
    /// Seconds of keep-until time per filter slice
    /// ([`slice_seconds_for`]).
    pub slice_seconds: u32,
    /// Largest filter share in one Snapshot frame. Small parts keep the
    /// gRPC encoder's buffer of each subscriber small: it grows to the
    /// largest message it has encoded and keeps that size for the life of
    /// the stream, so 3 MiB parts cost up to 3 MiB per subscriber.
    pub snapshot_part_bytes: usize,
    /// The server's leeway and longest token lifetime, announced in every
    /// snapshot so gateways accept only what stays revocable.
    pub bounds: crate::bounds::TokenBounds,
    /// Unix time, for expiry and heartbeats.
    pub clock: Clock,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            fp_rate: DEFAULT_FP_RATE,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            history: DEFAULT_HISTORY,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            min_capacity: DEFAULT_MIN_CAPACITY,
            headroom: DEFAULT_HEADROOM,
            compaction_min_saving_bits: DEFAULT_COMPACTION_MIN_KIB * 8 * 1024,
            slice_seconds: slice_seconds_for(crate::bounds::DEFAULT_MAX_TOKEN_LIFETIME),
            snapshot_part_bytes: DEFAULT_SNAPSHOT_PART_BYTES,
            bounds: crate::bounds::TokenBounds::default(),
            clock: Clock::System,
        }
    }
}

/// Where a subscriber starts.
#[derive(Debug, Clone, Default)]
pub struct SubscribeParams {
    /// Cursor of the last frame it applied (empty at first).
    pub cursor: String,
    /// Generation it holds (0 at first).
    pub generation: u64,
    /// Its name, for logs.
    pub gateway_id: String,
    /// The newest stream protocol it enforces
    /// ([`STREAM_PROTOCOL`](crate::snapshot::STREAM_PROTOCOL)).
    pub protocol: u32,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The filter has not been loaded from the store yet, or has not
    /// caught up with the log's head as of the call.
    #[error("the filter is still loading from the store, or catching up with the change log; retry shortly")]
    NotReady,
    /// [`HubConfig::max_subscribers`] reached.
    #[error("this replica serves the most subscribers it allows; retry on another")]
    Full,
    /// The hub is shutting down.
    #[error("this replica is shutting down")]
    Closed,
    /// The replica has lost its change log (the store is unreachable), so
    /// its filter may lack recent revocations.
    #[error("this replica has lost touch with the change log, so its filter may be behind; subscribe to another")]
    Lagging,
    /// The gateway speaks a stream protocol older than
    /// [`STREAM_PROTOCOL`](crate::snapshot::STREAM_PROTOCOL).
    #[error("this server streams filters sliced by expiry (stream protocol 3), and this gateway subscribes with an older protocol: upgrade it (gateways before servers); until then it follows its stale policy")]
    Outdated,
}

/// What a subscriber's queue carries: frames shared by every subscriber
/// they go to (one slot however many frames, so a whole snapshot fits in
/// one), or why the stream ends.
enum Outgoing {
    Frames(Arc<[pb::FilterUpdate]>),
    End(tonic::Status),
}

/// The frames a subscriber receives, as a stream. It ends when the hub
/// drops the subscriber (shutdown); the hub notices a dropped `Updates` at
/// the next frame or heartbeat.
///
/// Frames are queued shared and copied one at a time as the stream is
/// polled, so a queued snapshot costs a reference count, and the gRPC
/// encoder never holds more than one snapshot part of a subscriber.
pub struct Updates {
    queue: mpsc::Receiver<Outgoing>,
    /// Frames being handed out, and the index of the next one.
    current: Option<(Arc<[pb::FilterUpdate]>, usize)>,
    /// `revocd_filter_bytes_sent_total`, resolved once for the stream.
    bytes_sent: BytesSent,
}

impl Updates {
    fn new(queue: mpsc::Receiver<Outgoing>) -> Self {
        Updates {
            queue,
            current: None,
            bytes_sent: BytesSent::new(),
        }
    }
}

/// `revocd_filter_bytes_sent_total{kind}`: a frame handed to a stream is
/// counted with its encoding and gRPC's 5-byte message prefix, as it goes
/// on the wire (before HTTP/2 framing).
struct BytesSent {
    snapshot: metrics::Counter,
    delta: metrics::Counter,
    heartbeat: metrics::Counter,
}

impl BytesSent {
    fn new() -> Self {
        let kind = |kind: &'static str| metrics::counter!("revocd_filter_bytes_sent_total", "kind" => kind);
        BytesSent {
            snapshot: kind("snapshot"),
            delta: kind("delta"),
            heartbeat: kind("heartbeat"),
        }
    }

    fn count(&self, frame: &pb::FilterUpdate) {
        use prost::Message;
        let counter = match &frame.update {
            Some(pb::filter_update::Update::Snapshot(_)) => &self.snapshot,
            Some(pb::filter_update::Update::Delta(_)) => &self.delta,
            Some(pb::filter_update::Update::Heartbeat(_)) => &self.heartbeat,
            None => return,
        };
        counter.increment(frame.encoded_len() as u64 + 5);
    }
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

impl tokio_stream::Stream for Updates {
    type Item = Result<pb::FilterUpdate, tonic::Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some((frames, next)) = &mut this.current {
                if let Some(frame) = frames.get(*next) {
                    *next += 1;
                    this.bytes_sent.count(frame);
                    return std::task::Poll::Ready(Some(Ok(frame.clone())));
                }
                this.current = None;
            }
            match std::task::ready!(this.queue.poll_recv(cx)) {
                Some(Outgoing::Frames(frames)) => this.current = Some((frames, 0)),
                Some(Outgoing::End(status)) => return std::task::Poll::Ready(Some(Err(status))),
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

/// A handle to a running hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct FilterHub {
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
    /// Where the log's head is read for each subscription.
    store: Store,
}

enum Command {
    Subscribe {
        params: SubscribeParams,
        /// The log's head when the call came: its snapshot waits until the
        /// hub has applied the log this far.
        through: String,
        reply: oneshot::Sender<Result<Updates, SubscribeError>>,
    },
    Stats {
        reply: oneshot::Sender<HubStats>,
    },
}

/// What the hub holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HubStats {
    /// Current generation (0 before the first load).
    pub generation: u64,
    /// Bits of the filter.
    pub filter_bits: u64,
    /// Connected subscribers.
    pub subscribers: usize,
}

/// What the follower tells the hub.
enum Event {
    /// A (re)load begins: the log's tail for resuming subscribers.
    LoadStarted(LogTail),
    /// A page of the live set.
    LoadPage(Vec<Change>),
    /// The load is complete; later batches follow the log.
    LoadDone,
    /// New log entries (maybe none: then proof the follower is alive), and
    /// whether the read reached the log's head (fewer than a whole batch).
    Tail {
        entries: Vec<crate::store::LoggedChange>,
        caught_up: bool,
    },
    /// The follower lost the log (a store error, or a gap): nothing is
    /// applied until the next load completes.
    Lost,
}

// === impl FilterHub ===

impl FilterHub {
    /// Starts the follower and the hub on a thread of their own (module
    /// doc, "A thread of its own").
    ///
    /// # Panics
    /// When the operating system refuses a thread or its runtime's I/O
    /// driver, at start-up.
    pub fn spawn(store: Store, digest_key: DigestKey, config: HubConfig) -> FilterHub {
        let stop = CancellationToken::new();
        let (events_tx, events) = mpsc::channel(16);
        let (commands, commands_rx) = mpsc::channel(256);
        let follower = follow(store.clone(), config.history, config.clock, events_tx);
        let hub = HubState::new(digest_key, config).run(events, commands_rx, stop.clone());
        let task = async move {
            tokio::select! {
                () = hub => {}
                () = follower => {}
            }
        }
        .in_current_span();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the hub's runtime starts");
        std::thread::Builder::new()
            .name("revocd-hub".into())
            .spawn(move || runtime.block_on(task))
            .expect("the hub's thread starts");
        FilterHub {
            commands,
            stop,
            store,
        }
    }

    /// Subscribes a gateway, with a snapshot holding every change
    /// acknowledged before this call (module doc, "Read your writes").
    /// Before the filter's first load completes, or while the hub is
    /// behind the log's head as of this call, the call waits, up to
    /// [`LOAD_WAIT`] in all.
    ///
    /// # Errors
    /// [`SubscribeError`] when the hub cannot take it now;
    /// [`SubscribeError::Lagging`] when the log's head cannot be read.
    pub async fn subscribe(&self, params: SubscribeParams) -> Result<Updates, SubscribeError> {
        let waited = async {
            let through = self.store.log_head().await.map_err(|error| {
                warn!(%error, "cannot read the change log's head for a subscription");
                SubscribeError::Lagging
            })?;
            let (reply, answer) = oneshot::channel();
            let command = Command::Subscribe {
                params,
                through,
                reply,
            };
            self.commands
                .send(command)
                .await
                .map_err(|_| SubscribeError::Closed)?;
            answer.await.map_err(|_| SubscribeError::Closed)?
        };
        match tokio::time::timeout(LOAD_WAIT, waited).await {
            Ok(answer) => answer,
            Err(_) => Err(SubscribeError::NotReady),
        }
    }

    /// The hub's current numbers, `None` once it has stopped.
    pub async fn stats(&self) -> Option<HubStats> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Stats { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Stops the hub: every subscriber's stream ends, so gateways move to
    /// another replica while this one drains.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// The follower: load, then tail; on a store error, back off and load
/// again. Ends when the hub is gone.
async fn follow(store: Store, history: usize, clock: Clock, events: mpsc::Sender<Event>) {
    // Valid constants: the first delay is above zero and below the last.
    let mut backoff = ExponentialBackoff::try_new(FIRST_RETRY_DELAY, MAX_RETRY_DELAY, 0.3)
        .expect("valid backoff");
    loop {
        match follow_once(&store, history, clock, &events, &mut backoff).await {
            Ok(()) => return, // the hub stopped listening
            Err(error) => {
                metrics::counter!("revocd_change_log_errors_total").increment(1);
                if events.send(Event::Lost).await.is_err() {
                    return;
                }
                let delay = backoff.next_delay();
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "change log lost; will reload");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One load-then-tail run. `Ok` means the hub is gone. A completed load
/// resets `backoff`, so the next error is retried quickly again.
async fn follow_once(
    store: &Store,
    history: usize,
    clock: Clock,
    events: &mpsc::Sender<Event>,
    backoff: &mut ExponentialBackoff,
) -> Result<(), crate::store::Error> {
    let tail = store.log_tail(history).await?;
    let mut cursor = tail.head.clone();
    if events.send(Event::LoadStarted(tail)).await.is_err() {
        return Ok(());
    }
    let mut scan = store.scan_live(clock.now());
    let mut loaded = 0usize;
    while let Some(page) = scan.next_page().await? {
        loaded += page.len();
        if events.send(Event::LoadPage(page)).await.is_err() {
            return Ok(());
        }
    }
    if events.send(Event::LoadDone).await.is_err() {
        return Ok(());
    }
    backoff.reset();
    info!(
        records = loaded,
        cursor, "filter loaded; following the change log"
    );
    let mut reader = store.log_reader();
    loop {
        let entries = reader.read_after(&cursor, TAIL_BATCH, TAIL_WAIT).await?;
        if let Some(last) = entries.last() {
            cursor.clone_from(&last.cursor);
        }
        let caught_up = entries.len() < TAIL_BATCH;
        if events
            .send(Event::Tail { entries, caught_up })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}
