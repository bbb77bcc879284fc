//! The hub's state, owned by one task: the filter and what it contains, the
//! recent history for resuming subscribers, and the subscribers.
//!
//! # Expiry and generations
//!
//! A bloom filter cannot forget, so expired entries are dropped by
//! rebuilding: when the entries that have expired since the last build
//! outnumber the live ones (and a minimum), or when the measured
//! false-positive rate passes 1.25× the target (well before the 1.5× bound;
//! the fill is measured every `capacity/64` inserts, too few for the rate
//! to jump past the bound in between), a new filter is built from the live
//! set, sized for the live count plus a headroom (`--filter-headroom`,
//! 4% by default). Memory thus follows the live count, not the all-time
//! count. Each build is a new *generation*; subscribers get a snapshot of it.
//!
//! The headroom trades snapshot size against snapshot frequency: at 4% a
//! snapshot costs 15 bits per live entry at 0.1%, and a filter is rebuilt
//! after about 7% of its live count in new revocations (the fill reaches
//! 1.25× the target rate); at 100% a snapshot costs twice that and rebuilds
//! are ~14 times rarer. Generations start at a random multiple of 2³² per
//! replica start, so a gateway that moves to another replica never mistakes
//! its filter for the new replica's.
//!
//! Rebuilding here, rather than slicing the filter by expiry time, keeps
//! the wire format one plain bloom filter that any gateway can check with
//! one lookup.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::time::Instant as ClockInstant;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::{
    Command, Event, HubConfig, HubStats, Outgoing, SubscribeError, SubscribeParams, Updates,
    FOLLOWER_SILENCE,
};
use crate::filter::{Digest, DigestKey, RevocationFilter, DIGEST_BYTES};
use crate::pb::{self, filter_update::Update};
use crate::store::{Change, LoggedChange};
use crate::time::unix_now;

/// Most digests in one Delta frame (18 bytes each on the wire: well under
/// the 4 MiB message limit).
const MAX_DELTA_DIGESTS: usize = 100_000;
/// A cached snapshot is reused (with a catch-up delta) for this long.
const SNAPSHOT_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// One change as the filter sees it.
#[derive(Debug, Clone, Copy)]
enum FilterChange {
    Token(Digest),
    Subject(Digest, i64),
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

/// Everything the hub task owns.
pub(super) struct HubState {
    config: HubConfig,
    digest_key: DigestKey,
    /// False until the first load completes: no subscriber is served before.
    ready: bool,
    generation: u64,
    /// Cursor of the last change applied.
    cursor: String,
    filter: RevocationFilter,
    /// Entries the current filter was sized for.
    capacity: usize,
    /// Live token digests and when each expires.
    tokens: HashMap<Digest, i64>,
    /// Entries `tokens` had room for when last grown (see [`Self::track`]).
    tokens_room: usize,
    /// Live subject cut-offs: digest → (not_before, keep_until).
    subjects: HashMap<Digest, (i64, i64)>,
    /// (keep_until, digest) of tokens and subjects, to expire them in order.
    token_expiry: BTreeSet<(i64, Digest)>,
    subject_expiry: BTreeSet<(i64, Digest)>,
    /// Entries still in the filter whose tokens have expired.
    expired_in_filter: usize,
    /// Inserts since the fill was last measured.
    inserts_since_measure: usize,
    /// Recent changes, oldest first, for resuming subscribers.
    history: VecDeque<(String, FilterChange)>,
    /// The cursor just before `history`'s first entry, when known: a
    /// subscriber there needs all of `history`.
    history_start: Option<String>,
    snapshot: Option<CachedSnapshot>,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    /// True from a completed load until the follower reports the log lost
    /// or a reload begins: only then are changes being applied.
    following: bool,
    /// When a read of the follower last reached the log's head (Tokio's
    /// clock, so tests can move it).
    caught_up_at: ClockInstant,
    /// A load in progress: the state being built.
    loading: Option<Box<HubState>>,
    /// Subscriptions made before the first load completed, served by it.
    waiting: Vec<(SubscribeParams, Reply)>,
}

/// Where a subscription's answer goes.
type Reply = tokio::sync::oneshot::Sender<Result<Updates, SubscribeError>>;

impl HubState {
    pub(super) fn new(digest_key: DigestKey, config: HubConfig) -> Self {
        let capacity = config.min_capacity.max(1);
        HubState {
            filter: RevocationFilter::new(capacity, config.fp_rate),
            capacity,
            config,
            digest_key,
            ready: false,
            generation: u64::from(rand::random::<u32>()) << 32,
            cursor: String::new(),
            tokens: HashMap::new(),
            tokens_room: 0,
            subjects: HashMap::new(),
            token_expiry: BTreeSet::new(),
            subject_expiry: BTreeSet::new(),
            expired_in_filter: 0,
            inserts_since_measure: 0,
            history: VecDeque::new(),
            history_start: None,
            snapshot: None,
            subscribers: Vec::new(),
            next_subscriber: 0,
            following: false,
            caught_up_at: ClockInstant::now(),
            loading: None,
            waiting: Vec::new(),
        }
    }

    /// The hub task: serves events, commands and ticks until `stop`.
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
                Some(command) = commands.recv() => self.on_command(command),
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
            Command::Subscribe { params, reply } if !self.ready => {
                self.waiting.push((params, reply));
            }
            Command::Subscribe { params, reply } => {
                let _ = reply.send(self.subscribe(params));
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
                let mut building = HubState::new(self.digest_key.clone(), self.config.clone());
                building.cursor = tail.head;
                building.history_start = tail.start;
                for entry in &tail.entries {
                    let change = building.filter_change(&entry.change);
                    building.remember(entry.cursor.clone(), change);
                }
                self.loading = Some(Box::new(building));
            }
            Event::LoadPage(page) => {
                if let Some(building) = &mut self.loading {
                    let now = unix_now();
                    for change in &page {
                        building.track(change, now);
                    }
                }
            }
            Event::LoadDone => {
                if let Some(building) = self.loading.take() {
                    self.install(*building);
                }
            }
            Event::Tail { entries, caught_up } => {
                self.apply(entries);
                if caught_up {
                    self.caught_up_at = ClockInstant::now();
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
            }
        }
    }

    /// True while every change of the log is being applied (see "What a
    /// heartbeat means" in the module above): only then are heartbeats
    /// sent and subscriptions taken.
    fn is_live(&self) -> bool {
        self.ready && self.following && self.caught_up_at.elapsed() < FOLLOWER_SILENCE
    }

    /// Makes a completed load current: a new generation for everyone.
    fn install(&mut self, building: HubState) {
        self.cursor = building.cursor;
        self.tokens = building.tokens;
        self.tokens_room = building.tokens_room;
        self.subjects = building.subjects;
        self.token_expiry = building.token_expiry;
        self.subject_expiry = building.subject_expiry;
        self.history = building.history;
        self.history_start = building.history_start;
        self.ready = true;
        self.following = true;
        self.caught_up_at = ClockInstant::now();
        self.rebuild("loaded");
        for (params, reply) in std::mem::take(&mut self.waiting) {
            let _ = reply.send(self.subscribe(params));
        }
    }

    /// Records a change in the live sets (not in the filter).
    fn track(&mut self, change: &Change, now: i64) -> Option<FilterChange> {
        if change.keep_until() <= now {
            return None;
        }
        let filter_change = self.filter_change(change);
        match filter_change {
            FilterChange::Token(digest) => {
                let keep_until = change.keep_until();
                self.keep_tokens_half_full();
                let entry = self.tokens.entry(digest).or_insert(keep_until);
                *entry = (*entry).max(keep_until);
                self.token_expiry.insert((keep_until, digest));
            }
            FilterChange::Subject(digest, not_before) => {
                let keep_until = change.keep_until();
                let entry = self
                    .subjects
                    .entry(digest)
                    .or_insert((not_before, keep_until));
                *entry = (entry.0.max(not_before), entry.1.max(keep_until));
                self.subject_expiry.insert((keep_until, digest));
            }
        }
        Some(filter_change)
    }

    /// Grows `tokens` to twice the room its entries need before it is half
    /// full. Under steady churn (as many expiring as arriving) a table
    /// fuller than half cannot clear the markers its removals leave in
    /// place, so it doubles, long after the live set stopped growing: in a
    /// soak, RSS stepped up minutes after warm-up. Kept at most half full it
    /// reaches its size with the live set and then only rehashes in place.
    fn keep_tokens_half_full(&mut self) {
        let wanted = 2 * (self.tokens.len() + 1);
        if wanted > self.tokens_room {
            self.tokens.reserve(wanted - self.tokens.len());
            self.tokens_room = self.tokens.capacity();
        }
    }

    fn filter_change(&self, change: &Change) -> FilterChange {
        match change {
            Change::Revoked { issuer, jti, .. } => {
                FilterChange::Token(self.digest_key.token(issuer, jti))
            }
            Change::SubjectCut {
                issuer,
                subject,
                not_before,
                ..
            } => FilterChange::Subject(self.digest_key.subject(issuer, subject), *not_before),
        }
    }

    fn remember(&mut self, cursor: String, change: FilterChange) {
        self.history.push_back((cursor, change));
        if self.history.len() > self.config.history {
            self.history_start = self.history.pop_front().map(|(cursor, _)| cursor);
        }
    }

    /// Applies a batch from the log and sends one delta to subscribers.
    fn apply(&mut self, entries: Vec<LoggedChange>) {
        let Some(last) = entries.last() else {
            return;
        };
        self.cursor.clone_from(&last.cursor);
        let logged_at_ms = last.logged_at_ms;
        let lag_ms = crate::time::unix_now_ms()
            .saturating_sub(logged_at_ms)
            .max(0);
        metrics::histogram!("revocd_change_log_lag_seconds").record(lag_ms as f64 / 1_000.0);
        let now = unix_now();
        let mut digests = DigestBuffer::default();
        let mut subjects = Vec::new();
        for entry in entries {
            let Some(change) = self.track(&entry.change, now) else {
                continue;
            };
            match change {
                FilterChange::Token(digest) => {
                    self.filter.insert(&digest);
                    self.inserts_since_measure += 1;
                    digests.push(&digest);
                }
                FilterChange::Subject(digest, _) => {
                    let (not_before, _) = self.subjects[&digest];
                    subjects.push(subject_cutoff(&digest, not_before));
                }
            }
            self.remember(entry.cursor, change);
        }
        let delta = pb::Delta {
            cursor: self.cursor.clone(),
            digests: digests.take(),
            subjects,
            logged_at_ms,
        };
        trace!(
            cursor = self.cursor,
            digests = delta.digests.len(),
            "applied"
        );
        metrics::counter!("revocd_filter_changes_applied_total")
            .increment((delta.digests.len() + delta.subjects.len()) as u64);
        metrics::gauge!("revocd_revocations_live").set(self.tokens.len() as f64);
        self.broadcast(update(Update::Delta(delta)));
        metrics::counter!("revocd_filter_deltas_sent_total").increment(self.up_to_date() as u64);
        if self.overfilled() {
            self.rebuild("false-positive rate near its bound");
        }
    }

    /// Measures the fill every `capacity/64` inserts; true when the
    /// false-positive rate passed 1.25× the target. Past the target itself
    /// a warning is logged, so operators see a filter nearing its bound.
    fn overfilled(&mut self) -> bool {
        if self.inserts_since_measure < (self.capacity / 64).max(64) {
            return false;
        }
        self.inserts_since_measure = 0;
        let rate = self.publish_filter_metrics();
        if rate > self.config.fp_rate {
            warn!(
                generation = self.generation,
                estimated_fp_rate = rate,
                target = self.config.fp_rate,
                "filter false-positive rate above its target; it is rebuilt past 1.25x"
            );
        }
        rate > 1.25 * self.config.fp_rate
    }

    /// Sets the filter gauges; returns the estimated false-positive rate.
    fn publish_filter_metrics(&self) -> f64 {
        let rate = self.filter.estimated_fp_rate();
        // The low 32 bits count this replica's rebuilds and fit a float.
        metrics::gauge!("revocd_filter_generation")
            .set((self.generation & u64::from(u32::MAX)) as f64);
        metrics::gauge!("revocd_filter_bits").set(self.filter.bits() as f64);
        metrics::gauge!("revocd_filter_fill_ratio").set(self.filter.fill_ratio());
        metrics::gauge!("revocd_filter_estimated_fp_rate").set(rate);
        metrics::gauge!("revocd_filter_fp_rate_target").set(self.config.fp_rate);
        metrics::gauge!("revocd_revocations_live").set(self.tokens.len() as f64);
        metrics::gauge!("revocd_subject_cutoffs_live").set(self.subjects.len() as f64);
        rate
    }

    /// Subscribers receiving deltas (not waiting for a snapshot).
    fn up_to_date(&self) -> usize {
        self.subscribers
            .iter()
            .filter(|s| !s.needs_snapshot)
            .count()
    }

    fn on_tick(&mut self) {
        self.expire(unix_now());
        if self.expired_in_filter >= self.tokens.len().max(self.config.min_capacity) {
            self.rebuild("expired entries outnumber live ones");
        }
        self.serve_pending_snapshots();
        if self.is_live() {
            self.broadcast(self.heartbeat());
        }
        metrics::gauge!("revocd_subscribers_connected").set(self.subscribers.len() as f64);
        metrics::gauge!("revocd_revocations_live").set(self.tokens.len() as f64);
    }

    /// Drops tokens and cut-offs whose records have expired.
    fn expire(&mut self, now: i64) {
        while let Some(&(keep_until, digest)) = self.token_expiry.first() {
            if keep_until > now {
                break;
            }
            self.token_expiry.pop_first();
            // An extended revocation has a later entry; only the last counts.
            if self.tokens.get(&digest) == Some(&keep_until) {
                self.tokens.remove(&digest);
                self.expired_in_filter += 1;
            }
        }
        while let Some(&(keep_until, digest)) = self.subject_expiry.first() {
            if keep_until > now {
                break;
            }
            self.subject_expiry.pop_first();
            if self.subjects.get(&digest).map(|(_, until)| *until) == Some(keep_until) {
                self.subjects.remove(&digest);
            }
        }
    }

    /// Builds a new filter of the live tokens, sized for their count plus
    /// the headroom,
    /// as a new generation; every subscriber gets a snapshot of it.
    fn rebuild(&mut self, why: &str) {
        let started = Instant::now();
        let sized = (self.tokens.len() as f64 * (1.0 + self.config.headroom)).ceil() as usize;
        self.capacity = sized.max(self.config.min_capacity).max(1);
        let mut filter = RevocationFilter::new(self.capacity, self.config.fp_rate);
        for digest in self.tokens.keys() {
            filter.insert(digest);
        }
        self.filter = filter;
        self.generation += 1;
        self.expired_in_filter = 0;
        self.inserts_since_measure = 0;
        self.snapshot = None;
        for subscriber in &mut self.subscribers {
            subscriber.needs_snapshot = true;
        }
        info!(
            why,
            generation = self.generation,
            live = self.tokens.len(),
            bits = self.filter.bits(),
            took_ms = started.elapsed().as_millis() as u64,
            "filter built"
        );
        metrics::counter!("revocd_filter_rebuilds_total").increment(1);
        self.publish_filter_metrics();
        self.serve_pending_snapshots();
    }

    fn subscribe(&mut self, params: SubscribeParams) -> Result<Updates, SubscribeError> {
        // A filter that may lack acknowledged revocations must not replace
        // a gateway's newer one: send it elsewhere (heartbeats stop for the
        // same reason, so subscribers already here go stale).
        if !self.is_live() {
            return Err(SubscribeError::Lagging);
        }
        self.subscribers.retain(|s| !s.queue.is_closed());
        if self.subscribers.len() >= self.config.max_subscribers {
            return Err(SubscribeError::Full);
        }
        let (queue, updates) = mpsc::channel(self.config.subscriber_buffer.max(2));
        let updates = Updates::new(updates);
        self.next_subscriber += 1;
        let mut subscriber = Subscriber {
            id: self.next_subscriber,
            gateway_id: params.gateway_id,
            queue,
            needs_snapshot: true,
        };
        let resumed = (params.generation == self.generation)
            .then(|| self.deltas_since(&params.cursor))
            .flatten();
        match resumed {
            Some(mut frames) => {
                // Something to show the stream is live, even with no deltas.
                let deltas = frames.len();
                frames.push(self.heartbeat());
                subscriber.needs_snapshot = !offer_all(&subscriber, [frames.into()]);
                debug!(
                    subscriber = subscriber.id,
                    gateway = subscriber.gateway_id,
                    deltas,
                    "resumed"
                );
            }
            None => {
                self.offer_snapshot(&mut subscriber);
                debug!(
                    subscriber = subscriber.id,
                    gateway = subscriber.gateway_id,
                    "snapshot sent"
                );
            }
        }
        self.subscribers.push(subscriber);
        Ok(updates)
    }

    fn heartbeat(&self) -> pb::FilterUpdate {
        update(Update::Heartbeat(pb::Heartbeat {
            cursor: self.cursor.clone(),
            server_time_ms: crate::time::unix_now_ms(),
        }))
    }

    /// Delta frames taking a subscriber from `cursor` to now, or `None` if
    /// `cursor` is not in the retained history.
    fn deltas_since(&self, cursor: &str) -> Option<Vec<pb::FilterUpdate>> {
        if cursor.is_empty() {
            return None;
        }
        if cursor == self.cursor {
            return Some(Vec::new());
        }
        let first = self.history_position(cursor)?;
        let mut frames = Vec::new();
        let mut digests = DigestBuffer::default();
        let mut delta = pb::Delta::default();
        for (entry_cursor, change) in self.history.range(first..) {
            match change {
                FilterChange::Token(digest) => digests.push(digest),
                FilterChange::Subject(digest, not_before) => {
                    delta.subjects.push(subject_cutoff(digest, *not_before));
                }
            }
            delta.cursor.clone_from(entry_cursor);
            if digests.len() >= MAX_DELTA_DIGESTS {
                delta.digests = digests.take();
                frames.push(update(Update::Delta(std::mem::take(&mut delta))));
            }
        }
        if !delta.cursor.is_empty() {
            delta.digests = digests.take();
            frames.push(update(Update::Delta(delta)));
        }
        Some(frames)
    }

    /// Index of the first history entry after `cursor`, if the history
    /// holds everything after it.
    fn history_position(&self, cursor: &str) -> Option<usize> {
        if self.history_start.as_deref() == Some(cursor) {
            return Some(0);
        }
        self.history
            .iter()
            .rposition(|(c, _)| c == cursor)
            .map(|i| i + 1)
    }

    /// Sends a snapshot (and the delta catching it up) if the subscriber's
    /// queue has room for both; otherwise it stays pending.
    fn offer_snapshot(&mut self, subscriber: &mut Subscriber) {
        let (cursor, snapshot) = self.current_snapshot();
        let mut catch_up = self.deltas_since(&cursor).unwrap_or_default();
        // Fresh from the start when the state sent is current.
        if self.is_live() {
            catch_up.push(self.heartbeat());
        }
        if subscriber.queue.capacity() >= 2 {
            subscriber.needs_snapshot = !offer_all(subscriber, [snapshot, catch_up.into()]);
            if !subscriber.needs_snapshot {
                metrics::counter!("revocd_filter_snapshots_sent_total").increment(1);
            }
        }
    }

    /// Snapshot frames and their cursor, reused while recent and still
    /// catchable-up.
    fn current_snapshot(&mut self) -> (String, Arc<[pb::FilterUpdate]>) {
        let reusable = self.snapshot.as_ref().is_some_and(|s| {
            s.built.elapsed() < SNAPSHOT_REUSE
                && (s.cursor == self.cursor || self.history_position(&s.cursor).is_some())
        });
        if !reusable {
            self.snapshot = Some(CachedSnapshot {
                cursor: self.cursor.clone(),
                frames: self.snapshot_frames().into(),
                built: Instant::now(),
            });
        }
        // Set just above when absent.
        let cached = self.snapshot.as_ref().expect("snapshot cached");
        (cached.cursor.clone(), Arc::clone(&cached.frames))
    }

    /// The whole state as Snapshot frames of at most `snapshot_part_bytes`
    /// of filter each, subjects spread over the parts.
    fn snapshot_frames(&self) -> Vec<pb::FilterUpdate> {
        let bytes = Bytes::from(self.filter.to_bytes());
        let part_bytes = self.config.snapshot_part_bytes.max(1);
        // ~30 bytes per subject on the wire.
        let subjects_per_part = (part_bytes / 30).max(1);
        let subjects: Vec<pb::SubjectCutoff> = self
            .subjects
            .iter()
            .map(|(digest, (not_before, _))| subject_cutoff(digest, *not_before))
            .collect();
        let parts = bytes
            .len()
            .div_ceil(part_bytes)
            .max(subjects.len().div_ceil(subjects_per_part))
            .max(1);
        let mut subject_chunks = subjects.chunks(subjects_per_part);
        (0..parts)
            .map(|part| {
                let start = (part * part_bytes).min(bytes.len());
                let end = ((part + 1) * part_bytes).min(bytes.len());
                update(Update::Snapshot(pb::Snapshot {
                    generation: self.generation,
                    filter: bytes.slice(start..end),
                    subjects: subject_chunks.next().map(<[_]>::to_vec).unwrap_or_default(),
                    cursor: self.cursor.clone(),
                    digest_key: self.digest_key.as_bytes().to_vec(),
                    part: part as u32,
                    parts: parts as u32,
                    leeway: self.config.bounds.leeway,
                    max_token_lifetime: self.config.bounds.max_token_lifetime,
                }))
            })
            .collect()
    }

    fn serve_pending_snapshots(&mut self) {
        let mut subscribers = std::mem::take(&mut self.subscribers);
        for subscriber in subscribers.iter_mut().filter(|s| s.needs_snapshot) {
            self.offer_snapshot(subscriber);
        }
        self.subscribers = subscribers;
    }

    /// Offers a frame to every up-to-date subscriber (shared, not copied); a
    /// full queue marks the subscriber for re-basing, a closed one removes
    /// it.
    fn broadcast(&mut self, frame: pb::FilterUpdate) {
        let frames: Arc<[pb::FilterUpdate]> = Arc::new([frame]);
        self.subscribers.retain_mut(|subscriber| {
            if subscriber.needs_snapshot {
                return !subscriber.queue.is_closed();
            }
            match subscriber
                .queue
                .try_send(Outgoing::Frames(Arc::clone(&frames)))
            {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("revocd_subscriber_rebases_total").increment(1);
                    debug!(
                        subscriber = subscriber.id,
                        gateway = subscriber.gateway_id,
                        "queue full; will re-base with a snapshot"
                    );
                    subscriber.needs_snapshot = true;
                    true
                }
                Err(TrySendError::Closed(_)) => {
                    debug!(
                        subscriber = subscriber.id,
                        gateway = subscriber.gateway_id,
                        "unsubscribed"
                    );
                    false
                }
            }
        });
    }
}

/// Queues each group of frames with `try_send` (an empty group is
/// skipped); false if any did not fit.
fn offer_all<const N: usize>(
    subscriber: &Subscriber,
    groups: [Arc<[pb::FilterUpdate]>; N],
) -> bool {
    groups
        .into_iter()
        .filter(|frames| !frames.is_empty())
        .all(|frames| subscriber.queue.try_send(Outgoing::Frames(frames)).is_ok())
}

/// A delta's digests, gathered in one buffer and handed out as slices of
/// it: one allocation per delta, shared by every subscriber it goes to.
#[derive(Default)]
struct DigestBuffer(BytesMut);

impl DigestBuffer {
    fn push(&mut self, digest: &Digest) {
        self.0.extend_from_slice(&digest.0);
    }

    fn len(&self) -> usize {
        self.0.len() / DIGEST_BYTES
    }

    /// The digests gathered so far, leaving the buffer empty.
    fn take(&mut self) -> Vec<Bytes> {
        let all = self.0.split().freeze();
        (0..all.len() / DIGEST_BYTES)
            .map(|i| all.slice(i * DIGEST_BYTES..(i + 1) * DIGEST_BYTES))
            .collect()
    }
}

fn update(update: Update) -> pb::FilterUpdate {
    pb::FilterUpdate {
        update: Some(update),
    }
}

fn subject_cutoff(digest: &Digest, not_before: i64) -> pb::SubjectCutoff {
    pb::SubjectCutoff {
        digest: digest.0.to_vec(),
        not_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::FilterView;

    fn hub() -> HubState {
        let config = HubConfig {
            min_capacity: 1_000,
            ..HubConfig::default()
        };
        let mut hub = HubState::new(DigestKey::random(), config);
        hub.install(HubState::new(hub.digest_key.clone(), hub.config.clone()));
        hub
    }

    fn revoked(jti: &str, keep_until: i64, cursor: u64) -> LoggedChange {
        LoggedChange {
            cursor: cursor.to_string(),
            logged_at_ms: 0,
            change: Change::Revoked {
                issuer: "iss".into(),
                jti: jti.into(),
                keep_until,
            },
        }
    }

    fn decoded_view(hub: &HubState) -> FilterView {
        let parts: Vec<pb::Snapshot> = hub
            .snapshot_frames()
            .into_iter()
            .map(|frame| match frame.update {
                Some(Update::Snapshot(part)) => part,
                other => panic!("not a snapshot part: {other:?}"),
            })
            .collect();
        FilterView::from_snapshot(&parts).expect("a decodable snapshot")
    }

    #[test]
    fn a_gateway_copy_answers_exactly_as_the_server_filter() {
        let mut hub = hub();
        let now = unix_now();
        hub.apply(
            (0..5_000)
                .map(|i| revoked(&i.to_string(), now + 600, i))
                .collect(),
        );
        let view = decoded_view(&hub);
        for _ in 0..100_000 {
            let digest = Digest(rand::random());
            assert_eq!(view.may_be_revoked(&digest), hub.filter.contains(&digest));
        }
        let key = hub.digest_key.clone();
        assert!((0..5_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()))));
    }

    #[test]
    fn snapshots_are_split_into_parts_that_reassemble() {
        let mut hub = hub();
        hub.config.snapshot_part_bytes = 700;
        let now = unix_now();
        hub.apply(
            (0..2_000)
                .map(|i| revoked(&i.to_string(), now + 600, i))
                .collect(),
        );
        assert!(hub.snapshot_frames().len() > 3);
        let view = decoded_view(&hub);
        let key = hub.digest_key.clone();
        assert!((0..2_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()))));
    }

    #[tokio::test]
    async fn a_snapshot_of_more_parts_than_queue_slots_streams_whole_then_deltas_follow() {
        use tokio_stream::StreamExt;
        let mut hub = hub();
        hub.config.snapshot_part_bytes = 700;
        hub.config.subscriber_buffer = 2;
        let now = unix_now();
        hub.apply(
            (0..2_000)
                .map(|i| revoked(&i.to_string(), now + 600, i))
                .collect(),
        );
        let parts = hub.snapshot_frames().len();
        assert!(parts > hub.config.subscriber_buffer, "{parts} parts");
        let mut updates = hub
            .subscribe(SubscribeParams::default())
            .expect("subscribed");
        let mut received = Vec::new();
        for _ in 0..parts {
            match updates.next().await {
                Some(Ok(pb::FilterUpdate {
                    update: Some(Update::Snapshot(part)),
                })) => received.push(part),
                other => panic!("expected a snapshot part, got {other:?}"),
            }
        }
        let view = FilterView::from_snapshot(&received).expect("parts in order");
        let key = hub.digest_key.clone();
        assert!((0..2_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()))));
        assert!(
            matches!(
                updates.next().await,
                Some(Ok(pb::FilterUpdate {
                    update: Some(Update::Heartbeat(_))
                }))
            ),
            "a live hub vouches for the snapshot at once"
        );

        hub.apply(vec![
            revoked("a", now + 600, 2_000),
            revoked("b", now + 600, 2_001),
        ]);
        match updates.next().await {
            Some(Ok(pb::FilterUpdate {
                update: Some(Update::Delta(delta)),
            })) => {
                let digests: Vec<&[u8]> = delta.digests.iter().map(|d| d.as_ref()).collect();
                assert_eq!(
                    digests,
                    [&key.token("iss", "a").0[..], &key.token("iss", "b").0[..]]
                );
                assert_eq!(delta.cursor, "2001");
            }
            other => panic!("expected the delta, got {other:?}"),
        }
    }

    /// The kinds of the frames queued for a subscriber, in order.
    fn queued(updates: &mut Updates) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        while let Ok(Outgoing::Frames(frames)) = updates.queue.try_recv() {
            kinds.extend(frames.iter().map(|frame| match frame.update {
                Some(Update::Snapshot(_)) => "snapshot",
                Some(Update::Delta(_)) => "delta",
                Some(Update::Heartbeat(_)) => "heartbeat",
                None => "empty",
            }));
        }
        kinds
    }

    fn tail(entries: Vec<LoggedChange>, caught_up: bool) -> Event {
        Event::Tail { entries, caught_up }
    }

    #[tokio::test(start_paused = true)]
    async fn no_heartbeat_vouches_for_a_reload_in_progress() {
        let mut hub = hub();
        let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
        assert_eq!(queued(&mut updates).last(), Some(&"heartbeat"));
        // A reload begins (after a Redis blip): pages arrive, nothing of
        // the log is applied meanwhile.
        hub.on_event(Event::LoadStarted(crate::store::LogTail {
            head: "9".into(),
            entries: Vec::new(),
            start: None,
        }));
        hub.on_event(Event::LoadPage(Vec::new()));
        hub.on_tick();
        assert_eq!(queued(&mut updates), Vec::<&str>::new());
        assert_eq!(
            hub.subscribe(SubscribeParams::default()).err(),
            Some(SubscribeError::Lagging)
        );
        hub.on_event(Event::LoadDone);
        hub.on_tick();
        let kinds = queued(&mut updates);
        assert_eq!(kinds.first(), Some(&"snapshot"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"heartbeat"), "{kinds:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_log_stops_heartbeats_at_once() {
        let mut hub = hub();
        let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
        queued(&mut updates);
        hub.on_event(Event::Lost);
        hub.on_tick();
        assert_eq!(queued(&mut updates), Vec::<&str>::new());
        assert_eq!(
            hub.subscribe(SubscribeParams::default()).err(),
            Some(SubscribeError::Lagging)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_that_stays_behind_the_head_stops_heartbeats() {
        let mut hub = hub();
        let now = unix_now();
        let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
        queued(&mut updates);
        // Whole batches, one after another: the follower is catching up.
        for i in 0..4u64 {
            tokio::time::advance(FOLLOWER_SILENCE / 3).await;
            hub.on_event(tail(vec![revoked(&i.to_string(), now + 600, i)], false));
        }
        hub.on_tick();
        assert_eq!(queued(&mut updates), ["delta"; 4]);
        hub.on_event(tail(vec![revoked("head", now + 600, 9)], true));
        hub.on_tick();
        assert_eq!(queued(&mut updates), ["delta", "heartbeat"]);
    }

    #[test]
    fn the_live_digest_table_keeps_its_size_under_steady_churn() {
        let mut hub = hub();
        const LIVE: i64 = 20_000;
        let start = unix_now();
        // One revocation a (virtual) second, each living LIVE seconds: the
        // live set reaches LIVE, then as many expire as arrive. Returns the
        // most entries the table had room for on the way.
        let churn = |hub: &mut HubState, from: i64, to: i64| {
            let mut most_room = 0;
            for t in from..to {
                hub.apply(vec![revoked(&t.to_string(), start + t + LIVE, t as u64)]);
                hub.expire(start + t);
                most_room = most_room.max(hub.tokens.capacity());
            }
            most_room
        };
        let room = churn(&mut hub, 0, LIVE);
        assert_eq!(hub.tokens.len() as i64, LIVE);
        // Removals only shrink `capacity()`; a regrown table would exceed it.
        assert_eq!(
            churn(&mut hub, LIVE, 8 * LIVE),
            room,
            "the table grew under churn"
        );
        assert_eq!(hub.tokens.len() as i64, LIVE);
    }

    #[test]
    fn expired_revocations_leave_the_filter_and_memory_returns_to_baseline() {
        let mut hub = hub();
        let baseline_bits = hub.filter.bits();
        let now = unix_now();
        // Grow the filter well past its minimum with short-lived entries.
        hub.apply(
            (0..20_000)
                .map(|i| revoked(&i.to_string(), now + 5, i))
                .collect(),
        );
        assert!(hub.filter.bits() > baseline_bits, "the filter grew");
        let generation = hub.generation;
        let key = hub.digest_key.clone();
        assert!(hub.filter.contains(&key.token("iss", "7")));

        hub.expire(now + 6);
        assert!(hub.tokens.is_empty());
        assert!(hub.expired_in_filter >= hub.config.min_capacity);
        hub.rebuild("test");
        assert!(hub.generation > generation);
        assert_eq!(hub.filter.bits(), baseline_bits, "back to the minimum size");
        let still = (0..20_000).filter(|i| hub.filter.contains(&key.token("iss", &i.to_string())));
        assert!(
            still.count() < 40,
            "expired entries are gone (up to false positives)"
        );
    }

    #[test]
    fn an_overfilling_filter_is_rebuilt_before_its_rate_passes_one_and_a_half_times_the_target() {
        let mut hub = hub();
        let now = unix_now();
        let target = hub.config.fp_rate;
        for batch in 0..100u64 {
            let entries = (0..1_000)
                .map(|i| revoked(&format!("{batch}-{i}"), now + 600, batch * 1_000 + i))
                .collect();
            hub.apply(entries);
            let rate = hub.filter.estimated_fp_rate();
            assert!(
                rate <= 1.5 * target,
                "rate {rate} after {} entries",
                (batch + 1) * 1_000
            );
        }
        assert_eq!(hub.tokens.len(), 100_000);
    }
}
