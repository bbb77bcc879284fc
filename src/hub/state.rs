//! The hub's state, owned by one task: the filter built from the live set
//! ([`super::live`]), the delta history for resuming subscribers
//! ([`super::history`]), and the subscribers with their fan-out and lag
//! policy. A load builds a new live set and history beside the current
//! ones and replaces them as values when complete ([`Loading`]).
//!
//! # Expiry, slices and generations
//!
//! The filter is sliced by the time each revocation is kept until
//! ([`SlicedFilter`]): a slice is dropped whole once that time has passed
//! for all of it, on the hub's tick, and gateways drop it by their own
//! clock, so expiry costs nothing on the stream. A slice's first filter is
//! sized for the entries a slice is expected to collect: the rate of
//! token revocations (an average over a slice's seconds, and at least
//! [`RATE_WINDOW`]) times the slice's seconds, plus the headroom
//! (`--filter-headroom`), and at least `min_capacity`. A slice that still
//! overfills gets a further filter (announced in the delta by its header
//! alone) for as many entries as went into the slice since it was built
//! (so the entries at least double with each filter), or the ones still
//! expected in it, if more, at a quarter of the false-positive rate of the
//! one before, down to [`MAX_TIGHTENING`] quarters, so a slice's rate
//! stays below 4/3 of the target however far it outgrows its guess (the
//! sum `p·(1 + 1/4 + 1/16 + …)`; Almeida et al., "Scalable Bloom
//! Filters", 2007), and a gateway can always decode the filters: a slice
//! is never rebuilt on its own.
//! At a load, each slice is sized for its loaded entries plus the headroom
//! and for the fullest loaded slice, the best guess of what a slice
//! collects.
//!
//! # Compaction
//!
//! A burst into one slice (an import, a preload, a mass logout by token)
//! outruns the averaged rate: the slice's first filter is small, and the
//! burst fills a chain of filters, each at a tighter rate, up to about 29
//! bits per entry at 0.1% where one filter for them needs 14.4. So the hub
//! keeps the live digests beside the filter ([`TokenDigests`], 16 bytes
//! per revocation) and, on a tick, rebuilds the filter from them: each
//! chained slice (of more than one filter) as one filter for exactly its
//! entries, each other slice as it was sized. It does so when the chained
//! slices have more than [`COMPACT_OVER`] times the bits they would have
//! compact during a burst, or [`COMPACT_OVER_AFTER_BURST`] times once the
//! last tick's rate has fallen under [`BURST_ENDED`] of the averaged one,
//! and that saves at least `--filter-compaction-min-kib`. During a burst,
//! a compaction comes at least [`COMPACT_INTERVAL`] after the last build,
//! twice as long after each compaction of the same burst (so a long burst,
//! or a rate ramping up, re-sends the filter a logarithmic number of
//! times); after it, a compaction leaves no chain, and only new
//! overfilling makes one. A slice of one filter is never bloat: it was
//! sized as slices are, from the rate when it opened, so steady churn
//! (whose slices ahead of now are partly filled, as foreseen) and a rate
//! falling after a burst never compact. One cost remains: a slice opened
//! late in a burst is sized from the rate measured so far and may get
//! far fewer entries than it has room for.
//!
//! A compaction is a new generation: every subscriber gets a snapshot of
//! the compact filter (its memory shrinks to it), and the next gateway's
//! snapshot is small. A 20k/s burst of a million revocations is compacted
//! about three times, each re-sending under 2 MB to each gateway, against
//! the 16 MB of digests its deltas carried.
//!
//! Each load or compaction builds a new filter: a new *generation*;
//! subscribers get a snapshot of it.
//!
//! A generation's high 32 bits name the deployment (the digest key's
//! fingerprint, the same on every replica), its low 32 bits this replica's
//! build (random at start, then counting). A subscriber resumes with
//! deltas when its generation names this deployment and its cursor is in
//! this replica's history, whichever replica built its filter: every
//! replica follows the one change log, never sends a delta across a gap in
//! it (a gap means a reload), so a filter at a cursor holds every change up
//! to it, and the changes after it are the same everywhere. A gateway that
//! fails over to another replica thus resumes without a snapshot; one from
//! another deployment, or whose cursor this replica's history does not
//! hold (an older one, or another interleaving of the log's partitions),
//! gets a snapshot.
//!
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant as ClockInstant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::history::{update, DeltaBuilder, History, SliceOpening, Step};
use super::live::{ClaimTable, CutKey, FilterChange, LiveSet, TokenDigests};
use super::{
    Command, Event, HubConfig, HubStats, Outgoing, SubscribeError, SubscribeParams, Updates,
    FOLLOWER_SILENCE,
};
use crate::filter::{DigestKey, RevocationFilter, SlicedFilter};
use crate::pb::{self, filter_update::Update};
use crate::snapshot::STREAM_PROTOCOL;
use crate::store::{Change, LogTail, LoggedChange};

/// A cached snapshot is reused (with a catch-up delta) for this long.
const SNAPSHOT_REUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// Filters opened in an overfilled slice take a quarter of the rate of the
/// one before, down to `4^-MAX_TIGHTENING` of the target: at 0.1% that
/// needs 20 hash functions, well within the 32 a gateway accepts, and
/// each further filter adds under 0.1% of the target to the slice's rate.
const MAX_TIGHTENING: i32 = 5;
/// Chained slices of more than this many times the bits they would have
/// compact get the filter rebuilt (see "Compaction" above).
const COMPACT_OVER: f64 = 2.0;
/// The same once a burst has ended.
const COMPACT_OVER_AFTER_BURST: f64 = 1.1;
/// A burst has ended when the last tick's revocation rate is under this
/// share of the averaged one.
const BURST_ENDED: f64 = 0.25;
/// Shortest time between a build of the filter and a compaction during a
/// burst; it doubles with each compaction of the same burst, up to
/// [`MAX_COMPACT_INTERVAL`].
const COMPACT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest it grows to.
const MAX_COMPACT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(640);
/// The estimated false-positive rate (a count of every bitmap's bits) is
/// published at most this often.
const FP_ESTIMATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// The revocation rate that sizes new slices is averaged over a slice's
/// seconds, and at least this many.
const RATE_WINDOW: f64 = 60.0;

/// How a build sizes each slice's first filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sizing {
    /// After a load: for its entries plus the headroom, and for what a
    /// slice is expected to collect.
    Loaded,
    /// A compaction: a chained slice for exactly its entries (more go
    /// into filters opened then), a slice of one filter as it was.
    Compacted,
}

impl Sizing {
    /// The `reason` label of `revocd_filter_rebuilds_total`.
    fn reason(self) -> &'static str {
        match self {
            Sizing::Loaded => "loaded",
            Sizing::Compacted => "compacted",
        }
    }
}

/// A connected gateway.
struct Subscriber {
    id: u64,
    gateway_id: String,
    queue: mpsc::Sender<Outgoing>,
    /// Waiting for a snapshot (new, re-based, or new generation): gets no
    /// deltas until it has one.
    needs_snapshot: bool,
}

/// Snapshot frames built at some cursor, shared by subscribers.
struct CachedSnapshot {
    cursor: String,
    frames: Arc<[pb::FilterUpdate]>,
    built: Instant,
}

/// A load under way: what will replace the filter, the live cut-offs, the
/// history and the cursor when it completes.
struct Loading {
    cursor: String,
    /// Token digests loaded, by slice; the filter is sized once all are in.
    tokens: TokenDigests,
    live: LiveSet,
    history: History,
}

/// Everything the hub task owns.
pub(super) struct HubState {
    config: HubConfig,
    digest_key: DigestKey,
    /// False until the first load completes: no subscriber is served before.
    ready: bool,
    generation: u64,
    /// Cursor of the last change applied.
    cursor: String,
    /// Live token digests, by slice.
    filter: SlicedFilter,
    /// The digests in `filter`, to rebuild it compact.
    tokens: TokenDigests,
    /// When the filter was last built (Tokio's clock).
    built_at: ClockInstant,
    /// Shortest time from `built_at` to a compaction during a burst.
    compact_interval: std::time::Duration,
    /// Token revocations per second, averaged over a slice's seconds (at
    /// least [`RATE_WINDOW`]).
    rate: f64,
    /// Token revocations per second over the last tick.
    recent_rate: f64,
    /// Token revocations applied since the rate was last updated.
    revoked_since_tick: u64,
    /// When the rate was last updated (Tokio's clock).
    rate_updated_at: ClockInstant,
    /// When the estimated false-positive rate was last published.
    fp_estimated_at: ClockInstant,
    /// The live cut-offs.
    live: LiveSet,
    /// The claims of the cut-offs in `live`, `history` and a load.
    claims: ClaimTable,
    /// Recent changes, for resuming subscribers.
    history: History,
    snapshot: Option<CachedSnapshot>,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    /// True from a completed load until the follower reports the log lost
    /// or a reload begins: only then are changes being applied.
    following: bool,
    /// When a read of the follower last reached the log's head (Tokio's
    /// clock, so tests can move it).
    caught_up_at: ClockInstant,
    /// A load in progress.
    loading: Option<Loading>,
    /// Subscriptions waiting for the first load, or for the hub to apply
    /// the log up to its head as of the call (module doc of `hub`, "Read
    /// your writes").
    waiting: Vec<Waiting>,
}

/// A subscription not answered yet.
struct Waiting {
    params: SubscribeParams,
    /// The log's head when the call came.
    through: String,
    reply: Reply,
}

/// Where a subscription's answer goes.
type Reply = tokio::sync::oneshot::Sender<Result<Updates, SubscribeError>>;

impl HubState {
    pub(super) fn new(digest_key: DigestKey, config: HubConfig) -> Self {
        let generation =
            (u64::from(digest_key.fingerprint()) << 32) | (u64::from(rand::random::<u16>()) << 16);
        HubState {
            filter: SlicedFilter::new(config.slice_seconds),
            tokens: TokenDigests::default(),
            built_at: ClockInstant::now(),
            compact_interval: COMPACT_INTERVAL,
            rate: 0.0,
            recent_rate: 0.0,
            revoked_since_tick: 0,
            rate_updated_at: ClockInstant::now(),
            // So the first publication estimates it.
            fp_estimated_at: ClockInstant::now()
                .checked_sub(FP_ESTIMATE_INTERVAL)
                .unwrap_or_else(ClockInstant::now),
            history: History::new(config.history, None),
            config,
            digest_key,
            ready: false,
            generation,
            cursor: String::new(),
            live: LiveSet::default(),
            claims: ClaimTable::default(),
            snapshot: None,
            subscribers: Vec::new(),
            next_subscriber: 0,
            following: false,
            caught_up_at: ClockInstant::now(),
            loading: None,
            waiting: Vec::new(),
        }
    }

    /// The hub task: serves events, commands and ticks until `stop`, or
    /// until every [`super::FilterHub`] handle (every command sender) is gone.
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(event) = events.recv() => self.on_event(event),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break, // every `FilterHub` handle is gone
                },
                _ = tick.tick() => self.on_tick(),
                else => break,
            }
        }
        info!(
            subscribers = self.subscribers.len(),
            "filter hub stopped; closing streams"
        );
        // Say why the stream ends, so gateways move to another replica at
        // once. A full queue needs no word: its gateway is re-based anyway.
        let goodbye = tonic::Status::unavailable(
            "this revocd replica is shutting down; reconnect to another",
        );
        for subscriber in &self.subscribers {
            let _ = subscriber.queue.try_send(Outgoing::End(goodbye.clone()));
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                params,
                through,
                reply,
            } => {
                self.waiting.push(Waiting {
                    params,
                    through,
                    reply,
                });
                self.serve_waiting();
            }
            Command::Stats { reply } => {
                let _ = reply.send(HubStats {
                    generation: if self.ready { self.generation } else { 0 },
                    filter_bits: self.filter.bits(),
                    subscribers: self.subscribers.len(),
                });
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::LoadStarted(tail) => {
                self.following = false;
                self.loading = Some(self.start_loading(tail));
            }
            Event::LoadPage(page) => {
                if let Some(mut loading) = self.loading.take() {
                    let now = self.config.clock.now();
                    for change in &page {
                        let keep_until = change.keep_until();
                        if keep_until <= now {
                            continue;
                        }
                        match self.filter_change(change) {
                            FilterChange::Token { digest, slice } => {
                                loading.tokens.insert(slice, digest);
                            }
                            FilterChange::Cut(key, not_before) => {
                                loading.live.track(key, not_before, keep_until);
                            }
                        }
                    }
                    self.loading = Some(loading);
                }
            }
            Event::LoadDone => {
                if let Some(loading) = self.loading.take() {
                    self.install(loading);
                }
            }
            Event::Tail { entries, caught_up } => {
                self.apply(entries);
                if caught_up {
                    self.caught_up_at = ClockInstant::now();
                }
                if !self.waiting.is_empty() {
                    self.serve_waiting();
                }
            }
            Event::Lost => {
                if self.following {
                    warn!(
                        cursor = self.cursor,
                        "change log lost; no heartbeats until it is loaded again"
                    );
                }
                self.following = false;
                self.loading = None;
                self.serve_waiting();
            }
        }
    }

    /// True while every change of the log is being applied (see "What a
    /// heartbeat means" in the module above): only then are heartbeats
    /// sent and subscriptions taken.
    fn is_live(&self) -> bool {
        self.ready && self.following && self.caught_up_at.elapsed() < FOLLOWER_SILENCE
    }

    /// A load beginning at the log's tail: the history pre-filled with the
    /// tail's entries, the live set empty until pages arrive.
    fn start_loading(&mut self, tail: LogTail) -> Loading {
        let mut history = History::new(self.config.history, tail.start);
        for entry in tail.entries {
            let change = self.filter_change(&entry.change);
            history.remember(entry.cursor, Step::Change(change));
        }
        Loading {
            cursor: tail.head,
            tokens: TokenDigests::default(),
            live: LiveSet::default(),
            history,
        }
    }

    /// Makes a completed load current: a new generation for everyone.
    fn install(&mut self, loading: Loading) {
        self.cursor = loading.cursor;
        self.live = loading.live;
        self.history = loading.history;
        self.ready = true;
        self.following = true;
        self.caught_up_at = ClockInstant::now();
        self.build(loading.tokens, Sizing::Loaded);
        self.serve_waiting();
    }

    /// Answers the waiting subscriptions that can be answered: once the
    /// first load is complete, those whose log head the hub has applied,
    /// and all of them while it is not live (they are refused, as
    /// [`HubState::subscribe`] refuses). Forgets those whose caller gave up.
    fn serve_waiting(&mut self) {
        if !self.ready {
            return;
        }
        let live = self.is_live();
        for waiting in std::mem::take(&mut self.waiting) {
            if waiting.reply.is_closed() {
                continue;
            }
            if live && !crate::cursor::has_reached(&self.cursor, &waiting.through) {
                self.waiting.push(waiting);
                continue;
            }
            let _ = waiting.reply.send(self.subscribe(waiting.params));
        }
    }

    /// Applies a batch from the log and sends one delta to subscribers.
    fn apply(&mut self, entries: Vec<LoggedChange>) {
        let Some(last) = entries.last() else {
            return;
        };
        self.cursor.clone_from(&last.cursor);
        let logged_at_ms = last.logged_at_ms;
        let lag_ms = self
            .config
            .clock
            .now_ms()
            .saturating_sub(logged_at_ms)
            .max(0);
        metrics::histogram!("revocd_change_log_lag_seconds").record(lag_ms as f64 / 1_000.0);
        let now = self.config.clock.now();
        let mut delta = DeltaBuilder::default();
        let mut opened = false;
        for entry in entries {
            let keep_until = entry.change.keep_until();
            if keep_until <= now {
                continue;
            }
            let change = self.filter_change(&entry.change);
            match change {
                FilterChange::Token { digest, slice } => {
                    if let Some(opening) = self.make_room(slice) {
                        opened = true;
                        delta.open(opening);
                        self.history
                            .remember(entry.cursor.clone(), Step::Open(opening));
                    }
                    self.filter.insert(slice, &digest);
                    self.tokens.insert(slice, digest);
                    self.revoked_since_tick += 1;
                    delta.push(change, &self.claims);
                }
                FilterChange::Cut(key, not_before) => {
                    self.live.track(key, not_before, keep_until);
                    // The cut-off in force: a later one may be held already.
                    let in_force = self.live.cutoff(&key).unwrap_or(not_before);
                    delta.push_cutoff(&self.claims, key, in_force);
                }
            }
            self.history.remember(entry.cursor, Step::Change(change));
        }
        delta.cursor.clone_from(&self.cursor);
        trace!(cursor = self.cursor, digests = delta.digests(), "applied");
        metrics::counter!("revocd_filter_changes_applied_total")
            .increment((delta.digests() + delta.cutoffs()) as u64);
        self.broadcast(update(Update::Delta(delta.finish(logged_at_ms))));
        metrics::counter!("revocd_filter_deltas_sent_total").increment(self.up_to_date() as u64);
        if opened {
            self.publish_filter_metrics();
        }
    }

    /// Opens a filter in `slice` when it has none or its newest is full;
    /// returns what was opened, for the stream and the history.
    fn make_room(&mut self, slice: i64) -> Option<SliceOpening> {
        let (capacity, fp_rate) = match self.filter.slice(slice) {
            Some(open) if !open.is_full() => return None,
            Some(full) => {
                let chained = full.filters().len() as i32;
                let (entries, since_built) = self.tokens.counts(slice);
                metrics::counter!("revocd_filter_rebuilds_total", "reason" => "overfilled")
                    .increment(1);
                debug!(slice, entries, "slice full; another filter opened in it");
                let tightening = 4f64.powi(chained.min(MAX_TIGHTENING));
                let still_expected = self.expected_per_slice().saturating_sub(entries);
                let capacity = since_built
                    .max(still_expected)
                    .max(self.config.min_capacity.max(1) as u64);
                (capacity, self.config.fp_rate / tightening)
            }
            None => (self.expected_per_slice(), self.config.fp_rate),
        };
        Some(self.open(slice, capacity, fp_rate))
    }

    /// Entries a new slice is sized for: the expected ones plus the
    /// headroom, at least `min_capacity`.
    fn expected_per_slice(&self) -> u64 {
        let expected = self.rate * f64::from(self.filter.slice_seconds());
        self.sized(expected)
    }

    fn sized(&self, entries: f64) -> u64 {
        let with_headroom = (entries * (1.0 + self.config.headroom)).ceil() as u64;
        with_headroom.max(self.config.min_capacity.max(1) as u64)
    }

    /// Opens an empty filter for `capacity` entries at `fp_rate` in `slice`.
    fn open(&mut self, slice: i64, capacity: u64, fp_rate: f64) -> SliceOpening {
        let filter = RevocationFilter::new(capacity as usize, fp_rate);
        let header = filter.header();
        self.filter.open(slice, capacity, filter);
        SliceOpening {
            slice,
            capacity,
            header,
        }
    }

    /// Sets the filter gauges; the estimated false-positive rate (which
    /// reads every bitmap) at most every [`FP_ESTIMATE_INTERVAL`].
    fn publish_filter_metrics(&mut self) {
        if self.fp_estimated_at.elapsed() >= FP_ESTIMATE_INTERVAL {
            self.fp_estimated_at = ClockInstant::now();
            let rate = self.filter.estimated_fp_rate();
            metrics::gauge!("revocd_filter_estimated_fp_rate").set(rate);
        }
        // The low 32 bits count this replica's loads and fit a float.
        metrics::gauge!("revocd_filter_generation")
            .set((self.generation & u64::from(u32::MAX)) as f64);
        metrics::gauge!("revocd_filter_bits").set(self.filter.bits() as f64);
        metrics::gauge!("revocd_filter_slices").set(self.filter.slices().count() as f64);
        metrics::gauge!("revocd_filter_fp_rate_target").set(self.config.fp_rate);
        metrics::gauge!("revocd_revocations_live").set(self.filter.entries() as f64);
        let (subject_cutoffs, claim_cutoffs) = self.live.cutoff_counts();
        metrics::gauge!("revocd_subject_cutoffs_live").set(subject_cutoffs as f64);
        metrics::gauge!("revocd_claim_cutoffs_live").set(claim_cutoffs as f64);
    }

    /// Subscribers receiving deltas (not waiting for a snapshot).
    fn up_to_date(&self) -> usize {
        self.subscribers
            .iter()
            .filter(|s| !s.needs_snapshot)
            .count()
    }

    fn on_tick(&mut self) {
        let now = self.config.clock.now();
        self.drop_expired(now);
        self.live.expire(now);
        self.update_rate();
        self.compact_if_bloated();
        self.serve_pending_snapshots();
        self.serve_waiting();
        if self.is_live() {
            self.broadcast(self.heartbeat());
        }
        metrics::gauge!("revocd_subscribers_connected").set(self.subscribers.len() as f64);
        self.publish_filter_metrics();
    }

    /// Forgets the slices whose revocations have all expired by `now`;
    /// returns how many went.
    fn drop_expired(&mut self, now: i64) -> usize {
        self.tokens.drop_before(self.filter.slice_of(now));
        self.filter.drop_expired(now)
    }

    /// Folds the revocations since the last tick into the averaged rate.
    fn update_rate(&mut self) {
        let elapsed = self.rate_updated_at.elapsed().as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        let window = RATE_WINDOW.max(f64::from(self.filter.slice_seconds()));
        let weight = (elapsed / window).min(1.0);
        self.recent_rate = self.revoked_since_tick as f64 / elapsed;
        self.rate += weight * (self.recent_rate - self.rate);
        self.revoked_since_tick = 0;
        self.rate_updated_at = ClockInstant::now();
    }

    /// Rebuilds the filter compact ([`Sizing::Compacted`]) when its chained
    /// slices have grown well beyond their entries (the state module's
    /// "Compaction"); only while following the log (a load builds anyway).
    fn compact_if_bloated(&mut self) {
        let burst_ended = self.recent_rate < BURST_ENDED * self.rate;
        if burst_ended {
            self.compact_interval = COMPACT_INTERVAL;
        }
        let (over, interval) = if burst_ended {
            (COMPACT_OVER_AFTER_BURST, std::time::Duration::ZERO)
        } else {
            (COMPACT_OVER, self.compact_interval)
        };
        if !self.is_live() || self.built_at.elapsed() < interval {
            return;
        }
        // Only chains are bloat: a slice of one filter was sized as a
        // slice is, from the rate when it opened.
        let (mut bits, mut compact) = (0, 0);
        for (number, slice) in self.filter.slices() {
            if slice.filters().len() > 1 {
                bits += slice.bits();
                let (entries, _) = self.tokens.counts(number);
                let capacity = entries.max(self.config.min_capacity as u64);
                compact += RevocationFilter::bits_for(capacity as usize, self.config.fp_rate);
            }
        }
        if bits as f64 > over * compact as f64
            && bits.saturating_sub(compact) >= self.config.compaction_min_saving_bits
        {
            self.compact();
            if !burst_ended {
                self.compact_interval = (2 * self.compact_interval).min(MAX_COMPACT_INTERVAL);
            }
        }
    }

    /// Rebuilds the filter from its digests as a new generation: a chained
    /// slice as one filter for exactly its entries, a slice of one filter
    /// as it was sized.
    fn compact(&mut self) {
        let tokens = std::mem::take(&mut self.tokens);
        self.build(tokens, Sizing::Compacted);
    }

    /// Builds the filter from `tokens` as a new generation: every
    /// subscriber gets a snapshot of it.
    fn build(&mut self, mut tokens: TokenDigests, sizing: Sizing) {
        let started = Instant::now();
        let bits_before = self.filter.bits();
        if sizing == Sizing::Loaded {
            // The fullest slice is the best guess of what a slice collects.
            let fullest = tokens.slice_counts().max().unwrap_or(0);
            self.rate = self
                .rate
                .max(fullest as f64 / f64::from(self.filter.slice_seconds()));
        }
        let old = std::mem::replace(
            &mut self.filter,
            SlicedFilter::new(self.config.slice_seconds),
        );
        for slice in tokens.slice_numbers() {
            let unchained = old.slice(slice).filter(|s| s.filters().len() == 1);
            if let (Sizing::Compacted, Some(kept)) = (sizing, unchained) {
                // Sized as slices are: kept as it is, nothing rehashed.
                self.filter.adopt(slice, kept.clone());
                continue;
            }
            let digests = tokens.rebuilt(slice);
            let entries = digests.len() as u64;
            let capacity = match sizing {
                Sizing::Loaded => self.sized(entries as f64).max(self.expected_per_slice()),
                Sizing::Compacted => entries.max(self.config.min_capacity as u64),
            };
            self.open(slice, capacity, self.config.fp_rate);
            for digest in digests {
                self.filter.insert(slice, digest);
            }
        }
        self.tokens = tokens;
        self.built_at = ClockInstant::now();
        self.generation += 1;
        self.snapshot = None;
        for subscriber in &mut self.subscribers {
            subscriber.needs_snapshot = true;
        }
        info!(
            generation = self.generation,
            reason = sizing.reason(),
            live = self.filter.entries(),
            slices = self.filter.slices().count(),
            bits_before,
            bits = self.filter.bits(),
            took_ms = started.elapsed().as_millis() as u64,
            "filter built"
        );
        metrics::counter!("revocd_filter_rebuilds_total", "reason" => sizing.reason()).increment(1);
        self.publish_filter_metrics();
        self.serve_pending_snapshots();
    }

    /// The change as the filter sees it: digests under the deployment's
    /// key, a token's slice, claims by their number in `claims`.
    fn filter_change(&mut self, change: &Change) -> FilterChange {
        let key = &self.digest_key;
        match change {
            Change::Revoked {
                issuer,
                jti,
                keep_until,
            } => FilterChange::Token {
                digest: key.token(issuer, jti),
                slice: self.filter.slice_of(*keep_until),
            },
            Change::Cut {
                issuer,
                claim,
                value,
                not_before,
                ..
            } => {
                let id = self.claims.id(claim);
                let digest = match id {
                    ClaimTable::SUBJECT => key.subject(issuer, value),
                    _ => key.claim(issuer, claim, value),
                };
                FilterChange::Cut(CutKey { claim: id, digest }, *not_before)
            }
        }
    }
}

mod fanout;
#[cfg(test)]
mod tests;
