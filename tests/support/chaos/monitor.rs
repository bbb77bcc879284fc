//! The monitor: asks every subscriber about tokens all through the run,
//! faults included, and records the answers that break an invariant.
//!
//! # The invariant
//!
//! For every acknowledged revocation R and every subscriber G, R is
//! *required* of G from the first moment one of these holds, and from then
//! on G must deny R's token until it expires, whatever happens next
//! (stale, failed over, Redis out, a snapshot older than what it held):
//!
//! - **by position**: G reports a cursor at or past R's (gateways in this
//!   process, whose view cursor is readable). The highest cursor G has
//!   held counts, so a view that moved back does not excuse forgetting.
//!   The cursor is read before asking, so a late delta is never blamed;
//! - **by time**: G reports itself fresh (staleness at most its
//!   `max_staleness`, [`MAX_STALENESS`]) at two readings in a row, a tick
//!   apart, and R was acknowledged the propagation bound before the first
//!   of them. Two readings, because a process that drains a backlog of
//!   frames is fresh by its first frame while the last is not applied yet. This is
//!   also "G never reports itself fresh while missing a change older than
//!   its staleness bound", the bound being `max_staleness` plus the 3 s a
//!   replica may heartbeat after its change-log follower last reached the
//!   log's head (see [`super::PROPAGATION_BOUND`]).
//!
//! "Until it expires": an entry whose token expires within [`EXPIRY_MARGIN`]
//! is no longer judged.
//!
//! # How it is asked
//!
//! Every [`TICK`], per subscriber: every newly required entry once; the
//! newest [`CURSOR_WINDOW`] entries not yet required by time, for those
//! its cursor includes; and, to catch forgetting, a sweep of
//! [`SWEEP_PER_TICK`] entries moving round the whole ledger (gateways in
//! this process), or [`RESAMPLE`] random required entries (agents, asked
//! over HTTP). One answer per tick goes through the whole path, a server
//! `Check` included. Never-revoked tokens must not be refused as revoked;
//! during a Redis outage every subscriber must still answer from its
//! filter: allow them (or, for a bloom "maybe", say it cannot confirm).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::ledger::{Entry, HighWater, Ledger, Token};
use super::nemesis::Timeline;
use super::report::{Check, Tally, ViolationKind};
use super::testbed::{Answer, Subscriber, MAX_STALENESS};

/// How often each subscriber is asked.
const TICK: Duration = Duration::from_millis(200);
/// Newly required entries asked of an agent per tick (each is an HTTP
/// request); past this, a random share of them.
const AGENT_BATCH: usize = 50;
/// Required entries asked of an agent again per tick.
const RESAMPLE: usize = 10;
/// Entries a gateway in this process is asked again per tick, in turn.
const SWEEP_PER_TICK: usize = 250;
/// Entries not yet required by time searched for ones within a gateway's
/// cursor, newest first.
const CURSOR_WINDOW: usize = 1_000;
/// Never-revoked tokens asked per tick.
const GOOD_PER_TICK: usize = 2;
/// Entries whose tokens expire this soon are not judged: at the instant of
/// expiry the record goes while a check may have passed the expiry test.
const EXPIRY_MARGIN: Duration = Duration::from_secs(3);

/// What every watcher shares.
pub struct Shared {
    /// The acknowledged revocations.
    pub ledger: Arc<Ledger>,
    /// Outage windows (to know when Redis is out).
    pub timeline: Arc<Timeline>,
    /// Counters and violations.
    pub tally: Arc<Tally>,
    /// Tokens never revoked.
    pub good: Arc<Vec<Token>>,
    /// The propagation bound.
    pub bound: Duration,
}

/// Watches every subscriber until `stop`.
pub async fn run(
    subscribers: Vec<Arc<Subscriber>>,
    shared: Arc<Shared>,
    seed: u64,
    stop: CancellationToken,
) {
    let mut watchers = tokio::task::JoinSet::new();
    for (n, subscriber) in subscribers.into_iter().enumerate() {
        let watcher = Watcher {
            subscriber,
            shared: Arc::clone(&shared),
            rng: StdRng::seed_from_u64(seed.wrapping_add(n as u64)),
            fresh_at: None,
            by_time: 0,
            asked: 0,
            sweep: 0,
            held: HighWater::default(),
        };
        watchers.spawn(watcher.run(stop.clone()));
    }
    while let Some(done) = watchers.join_next().await {
        done.expect("watcher");
    }
}

/// One subscriber's watch.
struct Watcher {
    subscriber: Arc<Subscriber>,
    shared: Arc<Shared>,
    rng: StdRng,
    /// When the last reading found it fresh, if it did.
    fresh_at: Option<Instant>,
    /// Ledger entries required by time: a prefix, only ever growing.
    by_time: usize,
    /// Entries of that prefix asked once already.
    asked: usize,
    /// Where the sweep goes on.
    sweep: usize,
    /// The highest cursor it has held, per partition.
    held: HighWater,
}

/// Why an entry is required of a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Required {
    ByTime,
    ByPosition,
}

impl Watcher {
    async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let subscriber = Arc::clone(&self.subscriber);
            let frozen = subscriber.frozen.read().await;
            if *frozen {
                self.fresh_at = None;
                continue;
            }
            self.tick().await;
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        if let Some(cursor) = self.subscriber.cursor() {
            self.held.raise(&cursor);
        }
        self.update_freshness(now).await;
        let mut entries = self.newly_required();
        if self.subscriber.in_process() {
            entries.extend(self.within_cursor());
            entries.extend(self.swept());
        } else {
            let required = self.by_time;
            let sample = self.shared.ledger.sample(&mut self.rng, required, RESAMPLE);
            entries.extend(sample.into_iter().map(|e| (e, Required::ByTime)));
        }
        if let Some((entry, why)) = entries.last().cloned() {
            let answer = self.subscriber.ask_confirmed(&entry.token).await;
            self.judge(&entry, why, &answer, "confirmed");
        }
        for (entry, why) in &entries {
            let answer = self.subscriber.ask(&entry.token).await;
            self.judge(entry, *why, &answer, "from memory");
        }
        self.ask_good().await;
    }

    /// Fresh at this reading and the one before: every entry acknowledged
    /// the bound before the one before is required.
    async fn update_freshness(&mut self, now: Instant) {
        let fresh = self
            .subscriber
            .staleness()
            .await
            .is_some_and(|s| s <= MAX_STALENESS);
        let before = std::mem::replace(&mut self.fresh_at, fresh.then_some(now));
        let Some(before) = before.filter(|_| fresh) else {
            return;
        };
        if let Some(until) = before.checked_sub(self.shared.bound) {
            let required = self.shared.ledger.acked_until(until);
            self.by_time = self.by_time.max(required);
        }
    }

    /// Entries required by time and not asked yet (for an agent, at most
    /// [`AGENT_BATCH`], drawn at random when more are waiting).
    fn newly_required(&mut self) -> Vec<(Arc<Entry>, Required)> {
        let fresh = self.shared.ledger.range(self.asked..self.by_time);
        self.asked = self.asked.max(self.by_time);
        let fresh = if self.subscriber.in_process() || fresh.len() <= AGENT_BATCH {
            fresh
        } else {
            fresh
                .choose_multiple(&mut self.rng, AGENT_BATCH)
                .cloned()
                .collect()
        };
        fresh.into_iter().map(|e| (e, Required::ByTime)).collect()
    }

    /// The newest entries not required by time whose change its highest
    /// cursor includes.
    fn within_cursor(&self) -> Vec<(Arc<Entry>, Required)> {
        let len = self.shared.ledger.len();
        let from = self.by_time.max(len.saturating_sub(CURSOR_WINDOW));
        self.shared
            .ledger
            .range(from..len)
            .into_iter()
            .filter(|e| e.position.is_some_and(|p| self.held.covers(p)))
            .map(|e| (e, Required::ByPosition))
            .collect()
    }

    /// The next [`SWEEP_PER_TICK`] entries of the ledger, round and round,
    /// those required.
    fn swept(&mut self) -> Vec<(Arc<Entry>, Required)> {
        let len = self.shared.ledger.len();
        if self.sweep >= len {
            self.sweep = 0;
        }
        let end = (self.sweep + SWEEP_PER_TICK).min(len);
        let range = self.sweep..end;
        self.sweep = end;
        range
            .clone()
            .zip(self.shared.ledger.range(range))
            .filter_map(|(index, entry)| {
                let why = if index < self.by_time {
                    Required::ByTime
                } else if entry.position.is_some_and(|p| self.held.covers(p)) {
                    Required::ByPosition
                } else {
                    return None;
                };
                Some((entry, why))
            })
            .collect()
    }

    fn judge(&self, entry: &Entry, why: Required, answer: &Answer, how: &str) {
        self.count(1);
        if *answer != Answer::Allow || entry.token.expires_within(EXPIRY_MARGIN) {
            return;
        }
        let jti = entry.token.jti();
        let now = self.subscriber.cursor().unwrap_or_default();
        let (kind, detail) = match why {
            Required::ByTime => (
                ViolationKind::AllowedPastBound,
                format!(
                    "allowed {jti} ({how}), acknowledged {:?} ago, while fresh; cursor {now:?}",
                    entry.acked_at.elapsed(),
                ),
            ),
            Required::ByPosition => {
                let moved_back = if self.held.is_above(&now) {
                    " (its view moved back)"
                } else {
                    ""
                };
                let detail = format!(
                    "allowed {jti} ({how}) at {:?}, within the highest cursor it held {}; \
                     cursor now {now:?}{moved_back}",
                    entry.position, self.held,
                );
                (ViolationKind::AllowedPastCursor, detail)
            }
        };
        let tally = &self.shared.tally;
        tally.violation_once(kind, &self.subscriber.name, jti, detail);
    }

    /// Never-revoked tokens: never refused as revoked; answered from the
    /// filter during a Redis outage.
    async fn ask_good(&mut self) {
        let good = Arc::clone(&self.shared.good);
        for token in good.choose_multiple(&mut self.rng, GOOD_PER_TICK) {
            let outage = self.shared.timeline.redis_out_since().is_some();
            let answer = self.subscriber.ask(token).await;
            let (kind, check) = match (&answer, outage) {
                (Answer::Revoked, _) => (Some(ViolationKind::FalseRevocation), outage),
                (Answer::Refused(_), false) => (Some(ViolationKind::FalseRevocation), false),
                (Answer::Refused(_), true) => (Some(ViolationKind::OutageServing), true),
                // An agent says 503 for a "maybe" it cannot confirm; any
                // other failure to answer means it is not serving.
                (Answer::Unavailable(why), true) if !why.starts_with("HTTP 503") => {
                    (Some(ViolationKind::OutageServing), true)
                }
                _ => (None, outage),
            };
            let tally = &self.shared.tally;
            tally.checked(
                if check {
                    Check::Outage
                } else {
                    Check::Subscriber
                },
                1,
            );
            if let Some(kind) = kind {
                let detail = format!("never-revoked {}: {answer:?}", token.jti());
                self.shared
                    .tally
                    .violation(kind, &self.subscriber.name, detail);
            }
        }
    }

    fn count(&self, n: u64) {
        let kind = match self.shared.timeline.redis_out_since() {
            Some(_) => Check::Outage,
            None => Check::Subscriber,
        };
        self.shared.tally.checked(kind, n);
    }
}
