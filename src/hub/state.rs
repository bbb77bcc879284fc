//! The hub's state, owned by one task: the filter built from the live set
//! ([`super::live`]), the delta history for resuming subscribers
//! ([`super::history`]), and the subscribers with their fan-out and lag
//! policy. A load builds a new live set and history beside the current
//! ones and replaces them as values when complete ([`Loading`]).
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
//! are ~14 times rarer.
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
//! Rebuilding here, rather than slicing the filter by expiry time, keeps
//! the wire format one plain bloom filter that any gateway can check with
//! one lookup.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant as ClockInstant;
use tokio_util::sync::CancellationToken;
use tracing::{info, trace, warn};

use super::history::{push_cutoff, update, DigestBuffer, History};
use super::live::{ClaimTable, CutKey, FilterChange, LiveSet};
use super::{
    Command, Event, HubConfig, HubStats, Outgoing, SubscribeError, SubscribeParams, Updates,
    FOLLOWER_SILENCE,
};
use crate::filter::{DigestKey, RevocationFilter};
use crate::pb::{self, filter_update::Update};
use crate::snapshot::CLAIMS_PROTOCOL;
use crate::store::{Change, LogTail, LoggedChange};

/// A cached snapshot is reused (with a catch-up delta) for this long.
const SNAPSHOT_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// A connected gateway.
struct Subscriber {
    id: u64,
    gateway_id: String,
    /// The newest stream protocol it enforces.
    protocol: u32,
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

/// A load under way: what will replace the live set, the history and the
/// cursor when it completes.
struct Loading {
    cursor: String,
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
    filter: RevocationFilter,
    /// Entries the current filter was sized for.
    capacity: usize,
    /// What the filter is built from.
    live: LiveSet,
    /// The claims of the cut-offs in `live`, `history` and a load.
    claims: ClaimTable,
    /// Entries still in the filter whose tokens have expired.
    expired_in_filter: usize,
    /// Inserts since the fill was last measured.
    inserts_since_measure: usize,
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
    /// Subscriptions made before the first load completed, served by it.
    waiting: Vec<(SubscribeParams, Reply)>,
}

/// Where a subscription's answer goes.
type Reply = tokio::sync::oneshot::Sender<Result<Updates, SubscribeError>>;

/// Why a filter is built anew (each build a new generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// A load of the live set completed.
    Loaded,
    /// The false-positive rate neared its bound.
    Overfilled,
    /// Expired entries outnumbered live ones.
    Expired,
}

impl Rebuild {
    /// The `reason` label of `revocd_filter_rebuilds_total`.
    fn label(self) -> &'static str {
        match self {
            Rebuild::Loaded => "loaded",
            Rebuild::Overfilled => "overfilled",
            Rebuild::Expired => "expired",
        }
    }

    /// For the log.
    fn describe(self) -> &'static str {
        match self {
            Rebuild::Loaded => "loaded",
            Rebuild::Overfilled => "false-positive rate near its bound",
            Rebuild::Expired => "expired entries outnumber live ones",
        }
    }
}

impl HubState {
    pub(super) fn new(digest_key: DigestKey, config: HubConfig) -> Self {
        let capacity = config.min_capacity.max(1);
        let generation =
            (u64::from(digest_key.fingerprint()) << 32) | (u64::from(rand::random::<u16>()) << 16);
        HubState {
            filter: RevocationFilter::new(capacity, config.fp_rate),
            capacity,
            history: History::new(config.history, None),
            config,
            digest_key,
            ready: false,
            generation,
            cursor: String::new(),
            live: LiveSet::default(),
            claims: ClaimTable::default(),
            expired_in_filter: 0,
            inserts_since_measure: 0,
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
                self.loading = Some(self.start_loading(tail));
            }
            Event::LoadPage(page) => {
                if let Some(loading) = &mut self.loading {
                    let now = self.config.clock.now();
                    for change in &page {
                        let keep_until = change.keep_until();
                        if keep_until > now {
                            let change = filter_change(&self.digest_key, &mut self.claims, change);
                            loading.live.track(change, keep_until);
                        }
                    }
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

    /// A load beginning at the log's tail: the history pre-filled with the
    /// tail's entries, the live set empty until pages arrive.
    fn start_loading(&mut self, tail: LogTail) -> Loading {
        let mut history = History::new(self.config.history, tail.start);
        for entry in tail.entries {
            let change = filter_change(&self.digest_key, &mut self.claims, &entry.change);
            history.remember(entry.cursor, change);
        }
        Loading {
            cursor: tail.head,
            live: LiveSet::default(),
            history,
        }
    }

    /// Makes a completed load current: a new generation for everyone.
    fn install(&mut self, loading: Loading) {
        self.cursor = loading.cursor;
        self.live = loading.live;
        self.history = loading.history;
        if self.live.cutoff_counts().1 > 0 {
            // A load is how a replica restarted (or reconnected) meets
            // claim cut-offs made meanwhile: no older gateway stays.
            self.end_outdated_subscribers();
        }
        self.ready = true;
        self.following = true;
        self.caught_up_at = ClockInstant::now();
        self.rebuild(Rebuild::Loaded);
        for (params, reply) in std::mem::take(&mut self.waiting) {
            let _ = reply.send(self.subscribe(params));
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
        let mut digests = DigestBuffer::default();
        let (mut subjects, mut claims) = (Vec::new(), Vec::new());
        for entry in entries {
            let keep_until = entry.change.keep_until();
            if keep_until <= now {
                continue;
            }
            let change = filter_change(&self.digest_key, &mut self.claims, &entry.change);
            self.live.track(change, keep_until);
            match change {
                FilterChange::Token(digest) => {
                    self.filter.insert(&digest);
                    self.inserts_since_measure += 1;
                    digests.push(&digest);
                }
                FilterChange::Cut(key, _) => {
                    // The cut-off in force: a later one may be held already.
                    let not_before = self.live.cutoff(&key).unwrap_or_default();
                    push_cutoff((&mut subjects, &mut claims), &self.claims, key, not_before);
                }
            }
            self.history.remember(entry.cursor, change);
        }
        if !claims.is_empty() {
            self.end_outdated_subscribers();
        }
        let delta = pb::Delta {
            cursor: self.cursor.clone(),
            digests: digests.take(),
            subjects,
            logged_at_ms,
            claims,
        };
        trace!(
            cursor = self.cursor,
            digests = delta.digests.len(),
            "applied"
        );
        metrics::counter!("revocd_filter_changes_applied_total")
            .increment((delta.digests.len() + delta.subjects.len() + delta.claims.len()) as u64);
        metrics::gauge!("revocd_revocations_live").set(self.live.token_count() as f64);
        self.broadcast(update(Update::Delta(delta)));
        metrics::counter!("revocd_filter_deltas_sent_total").increment(self.up_to_date() as u64);
        if self.overfilled() {
            self.rebuild(Rebuild::Overfilled);
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
        metrics::gauge!("revocd_revocations_live").set(self.live.token_count() as f64);
        let (subject_cutoffs, claim_cutoffs) = self.live.cutoff_counts();
        metrics::gauge!("revocd_subject_cutoffs_live").set(subject_cutoffs as f64);
        metrics::gauge!("revocd_claim_cutoffs_live").set(claim_cutoffs as f64);
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
        self.expire(self.config.clock.now());
        if self.expired_in_filter >= self.live.token_count().max(self.config.min_capacity) {
            self.rebuild(Rebuild::Expired);
        }
        self.serve_pending_snapshots();
        if self.is_live() {
            self.broadcast(self.heartbeat());
        }
        metrics::gauge!("revocd_subscribers_connected").set(self.subscribers.len() as f64);
        metrics::gauge!("revocd_revocations_live").set(self.live.token_count() as f64);
    }

    /// Drops tokens and cut-offs whose records have expired.
    fn expire(&mut self, now: i64) {
        self.expired_in_filter += self.live.expire(now);
    }

    /// Builds a new filter of the live tokens, sized for their count plus
    /// the headroom,
    /// as a new generation; every subscriber gets a snapshot of it.
    fn rebuild(&mut self, why: Rebuild) {
        let started = Instant::now();
        let sized = (self.live.token_count() as f64 * (1.0 + self.config.headroom)).ceil() as usize;
        self.capacity = sized.max(self.config.min_capacity).max(1);
        let mut filter = RevocationFilter::new(self.capacity, self.config.fp_rate);
        for digest in self.live.tokens() {
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
            why = why.describe(),
            generation = self.generation,
            live = self.live.token_count(),
            bits = self.filter.bits(),
            took_ms = started.elapsed().as_millis() as u64,
            "filter built"
        );
        metrics::counter!("revocd_filter_rebuilds_total", "reason" => why.label()).increment(1);
        self.publish_filter_metrics();
        self.serve_pending_snapshots();
    }
}

/// The change as the filter sees it: digests under the deployment's key,
/// claims by their number in `claims`.
fn filter_change(key: &DigestKey, claims: &mut ClaimTable, change: &Change) -> FilterChange {
    match change {
        Change::Revoked { issuer, jti, .. } => FilterChange::Token(key.token(issuer, jti)),
        Change::Cut {
            issuer,
            claim,
            value,
            not_before,
            ..
        } => {
            let id = claims.id(claim);
            let digest = match id {
                ClaimTable::SUBJECT => key.subject(issuer, value),
                _ => key.claim(issuer, claim, value),
            };
            FilterChange::Cut(CutKey { claim: id, digest }, *not_before)
        }
    }
}

mod fanout;
#[cfg(test)]
mod tests;
