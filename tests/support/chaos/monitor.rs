//! The monitor: asks every subscriber about tokens all through the run,
//! faults included, and records the answers that break an invariant.
//!
//! Per subscriber, every [`TICK`]:
//!
//! - **Past the propagation bound.** A subscriber is *fresh* while its
//!   last frame is under [`FRESH`] old (heartbeats come every 200 ms).
//!   Once it has been fresh for the bound, every revocation acknowledged
//!   up to `bound` ago must be in its filter, and must stay there whatever
//!   happens next (stale, failed over, Redis out): its `covered_until`
//!   only moves forward. Each entry is asked once when it becomes covered,
//!   and a random sample of older ones again every tick.
//! - **Past its cursor** (gateways in this process, whose view cursor is
//!   readable). An entry whose change position is at or below the highest
//!   cursor the gateway has held must not be allowed, whatever the time:
//!   the cursor is read before asking, so this never blames a late delta,
//!   and a view that moved back (a snapshot older than what it held) does
//!   not excuse forgetting.
//! - **Never-revoked tokens** must not be refused as revoked; during a
//!   Redis outage every subscriber must still answer from its filter:
//!   allow them (or, for a bloom "maybe", say it cannot confirm).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::ledger::{Entry, HighWater, Ledger, Token};
use super::nemesis::Timeline;
use super::report::{Check, Tally, ViolationKind};
use super::testbed::{Answer, Subscriber};

/// How often each subscriber is asked.
const TICK: Duration = Duration::from_millis(200);
/// A subscriber whose last frame is younger than this is connected.
pub const FRESH: Duration = Duration::from_secs(1);
/// Newly covered entries asked of an agent per tick (each is an HTTP
/// request); the rest wait for the next tick.
const AGENT_BATCH: usize = 50;
/// Older covered entries asked again per tick.
const RESAMPLE: usize = 10;
/// Uncovered entries searched for ones past a gateway's cursor, newest
/// first.
const CURSOR_WINDOW: usize = 1_000;
/// Never-revoked tokens asked per tick.
const GOOD_PER_TICK: usize = 2;

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
            fresh_since: None,
            covered_until: None,
            checked: 0,
            held: HighWater::default(),
            reported: HashSet::new(),
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
    /// Since when it has been fresh without a break.
    fresh_since: Option<Instant>,
    /// Every entry acknowledged up to this time must be in its filter.
    covered_until: Option<Instant>,
    /// Covered entries asked once already (a prefix of the ledger).
    checked: usize,
    /// The highest cursor it has held.
    held: HighWater,
    /// Tokens it was already caught allowing: reported once each.
    reported: HashSet<String>,
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
                self.fresh_since = None;
                continue;
            }
            self.tick().await;
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let cursor = self.subscriber.cursor();
        self.update_freshness(now).await;
        let covered = self
            .covered_until
            .map_or(0, |until| self.shared.ledger.acked_until(until));
        self.ask_covered(covered).await;
        if let Some(cursor) = cursor {
            self.held.raise(&cursor);
            self.ask_past_cursor(covered).await;
        }
        self.ask_good().await;
    }

    async fn update_freshness(&mut self, now: Instant) {
        let fresh = self
            .subscriber
            .staleness()
            .await
            .is_some_and(|s| s <= FRESH);
        if !fresh {
            self.fresh_since = None;
            return;
        }
        let since = *self.fresh_since.get_or_insert(now);
        let bound = self.shared.bound;
        if let Some(covered) = now.checked_sub(bound).filter(|t| *t >= since) {
            self.covered_until = Some(self.covered_until.map_or(covered, |c| c.max(covered)));
        }
    }

    /// Newly covered entries, then a sample of older ones: none allowed.
    async fn ask_covered(&mut self, covered: usize) {
        let batch = if self.subscriber.in_process() {
            usize::MAX
        } else {
            AGENT_BATCH
        };
        let end = covered.min(self.checked.saturating_add(batch));
        let mut entries = self.shared.ledger.range(self.checked..end);
        self.checked = end;
        entries.extend(self.shared.ledger.sample(&mut self.rng, end, RESAMPLE));
        if let Some(entry) = entries.last().cloned() {
            // One through the whole path, a server `Check` included.
            let answer = self.subscriber.ask_confirmed(&entry.token).await;
            self.judge_covered(&entry, &answer, "confirmed");
        }
        for entry in &entries {
            let answer = self.subscriber.ask(&entry.token).await;
            self.judge_covered(entry, &answer, "from memory");
        }
    }

    fn judge_covered(&mut self, entry: &Entry, answer: &Answer, how: &str) {
        self.count(1);
        if *answer == Answer::Allow && self.reported.insert(entry.token.jti().to_owned()) {
            let detail = format!(
                "allowed {} ({how}), acknowledged {:?} ago; fresh for {:?}; cursor {:?}",
                entry.token.jti(),
                entry.acked_at.elapsed(),
                self.fresh_since.map(|t| t.elapsed()),
                self.subscriber.cursor(),
            );
            self.violation(ViolationKind::AllowedPastBound, detail);
        }
    }

    /// Entries not yet covered by time but by the highest cursor held:
    /// none allowed.
    async fn ask_past_cursor(&mut self, covered: usize) {
        let len = self.shared.ledger.len();
        let from = covered.max(len.saturating_sub(CURSOR_WINDOW));
        for entry in self.shared.ledger.range(from..len) {
            let Some(position) = entry.position else {
                continue;
            };
            if !self.held.covers(position) {
                continue;
            }
            let answer = self.subscriber.ask(&entry.token).await;
            self.count(1);
            if answer == Answer::Allow && self.reported.insert(entry.token.jti().to_owned()) {
                let now = self.subscriber.cursor().unwrap_or_default();
                let moved_back = if self.held.is_above(&now) {
                    " (its view moved back)"
                } else {
                    ""
                };
                let detail = format!(
                    "allowed {} at {position:?}, at or below the highest cursor it held {}; \
                     cursor now {now:?}{moved_back}",
                    entry.token.jti(),
                    self.held,
                );
                self.violation(ViolationKind::AllowedPastCursor, detail);
            }
        }
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
                self.violation(kind, detail);
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

    fn violation(&self, kind: ViolationKind, detail: String) {
        self.shared
            .tally
            .violation(kind, &self.subscriber.name, detail);
    }
}
