//! Quotas of keyless self-revocation: `Revoke{token}` without an API key,
//! allowed because holding a valid token is proof enough to revoke it.
//!
//! Without a bound, anyone holding valid tokens could grow the filter (and
//! send every gateway a snapshot at each growth) as fast as they can log in.
//! So each replica keeps three token buckets, each holding one minute's
//! worth and refilling continuously, and a call takes one revocation from
//! all three or from none:
//!
//! | bucket | default | why |
//! |---|---|---|
//! | per (issuer, subject) | 10 a minute | a person logs out a few times a minute at most |
//! | per source address | 60 a minute | one host (or NAT) revoking many subjects' tokens |
//! | the replica | 1,200 a minute | the bound on filter growth: many hosts and subjects together |
//!
//! A source is an IP address; IPv6 addresses count by their /64 prefix, the
//! block a single host is usually given, so a host cannot pick a fresh
//! address per call. Behind an L7 proxy every keyless call shares the
//! proxy's address (raise `--keyless-source-per-minute` there). Tokens
//! without `sub` share one subject bucket per issuer.
//!
//! # Memory
//!
//! A bucket is created only when a call is granted, and a bucket that has
//! refilled to capacity is the same as none, so idle buckets are dropped
//! every [`PRUNE_INTERVAL`]. Grants are bounded by the replica bucket, so at
//! most about two minutes' worth of replica grants are tracked per kind. As
//! a backstop each kind holds at most [`MAX_TRACKED`] buckets; past that a
//! new caller is refused until pruning makes room. Subjects and sources are
//! kept as 64-bit SipHash digests under a per-process random key, not as
//! text: an entry is a few dozen bytes however long the subject, and two
//! callers share a bucket only on a digest collision, which an attacker
//! cannot aim for without the key.

use std::collections::hash_map::{HashMap, RandomState};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Bucket, Rate};

/// Most buckets of each kind (subjects, source addresses) held at once.
pub const MAX_TRACKED: usize = 100_000;

/// How often idle (full) buckets are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Keyless self-revocations per minute on one replica, all callers
/// together, by default: 20 a second, the bound on how fast holders of
/// valid tokens can grow the filter (bulk revokers use an API key).
pub const DEFAULT_KEYLESS_PER_MINUTE: u32 = 1_200;
/// Keyless self-revocations per minute of one (issuer, subject) by
/// default: a person logs out a few times a minute at most.
pub const DEFAULT_KEYLESS_SUBJECT_PER_MINUTE: u32 = 10;
/// Keyless self-revocations per minute from one source address by default:
/// a household or small office behind one address.
pub const DEFAULT_KEYLESS_SOURCE_PER_MINUTE: u32 = 60;

/// Limits of keyless self-revocation on one replica, each a number per
/// minute with a burst of one minute's worth. Zero is refused by the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeylessLimits {
    /// All keyless self-revocations on the replica together.
    pub per_minute: u32,
    /// Those of the tokens of one (issuer, subject).
    pub per_subject_per_minute: u32,
    /// Those from one source address (an IPv6 /64 counts as one).
    pub per_source_per_minute: u32,
}

impl Default for KeylessLimits {
    fn default() -> Self {
        KeylessLimits {
            per_minute: DEFAULT_KEYLESS_PER_MINUTE,
            per_subject_per_minute: DEFAULT_KEYLESS_SUBJECT_PER_MINUTE,
            per_source_per_minute: DEFAULT_KEYLESS_SOURCE_PER_MINUTE,
        }
    }
}

/// Which limit refused a keyless self-revocation; the message is for the
/// person who made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeylessRefusal {
    /// The token's (issuer, subject) has used its bucket.
    #[error("self-revocation limit reached: at most {0} tokens per subject per minute may be revoked without an API key on this replica; retry in a minute, or revoke with an API key holding the role `revoke`")]
    Subject(u32),
    /// The caller's source address has used its bucket.
    #[error("self-revocation limit reached: at most {0} tokens per source address per minute may be revoked without an API key on this replica; retry in a minute, or use an API key with the role `revoke` for bulk revocation")]
    Source(u32),
    /// The replica's bucket is used up.
    #[error("self-revocation limit reached: at most {0} tokens per minute may be revoked without an API key on this replica, all callers together; retry shortly, or use an API key with the role `revoke` for bulk revocation")]
    Replica(u32),
    /// [`MAX_TRACKED`] callers of one kind are being tracked.
    #[error("self-revocation limit reached: this replica already tracks {0} keyless callers; retry shortly, or use an API key with the role `revoke` for bulk revocation")]
    Crowded(usize),
}

impl KeylessRefusal {
    /// The `limit` label of `revocd_keyless_refusals_total`.
    pub fn label(&self) -> &'static str {
        match self {
            KeylessRefusal::Subject(_) => "subject",
            KeylessRefusal::Source(_) => "source",
            KeylessRefusal::Replica(_) => "replica",
            KeylessRefusal::Crowded(_) => "tracked",
        }
    }
}

/// The keyless buckets of one replica.
#[derive(Debug)]
pub struct KeylessQuota {
    limits: KeylessLimits,
    /// [`MAX_TRACKED`], smaller in tests.
    max_tracked: usize,
    /// Digests subjects and sources (see the module doc).
    hasher: RandomState,
    /// A `std` mutex: held for a few map operations, never across an
    /// await; pruning walks the maps at most every [`PRUNE_INTERVAL`].
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    replica: Bucket,
    subjects: HashMap<u64, Bucket>,
    sources: HashMap<u64, Bucket>,
    /// When idle buckets were last dropped.
    pruned: Instant,
}

/// The three rates of [`KeylessLimits`].
#[derive(Debug, Clone, Copy)]
struct Rates {
    replica: Rate,
    subject: Rate,
    source: Rate,
}

// === impl KeylessQuota ===

impl KeylessQuota {
    /// Full buckets for `limits`, as of `now`.
    pub fn new(limits: KeylessLimits, now: Instant) -> Self {
        Self::with_max_tracked(limits, MAX_TRACKED, now)
    }

    fn with_max_tracked(limits: KeylessLimits, max_tracked: usize, now: Instant) -> Self {
        let replica = Bucket::full(Rate::per_minute(limits.per_minute), now);
        KeylessQuota {
            limits,
            max_tracked,
            hasher: RandomState::new(),
            buckets: Mutex::new(Buckets {
                replica,
                subjects: HashMap::new(),
                sources: HashMap::new(),
                pruned: now,
            }),
        }
    }

    /// Takes one revocation at `now` for a token of `issuer` and `subject`
    /// presented from `source` (`None` when the transport has no address:
    /// those calls share one bucket), from all three buckets or, when one
    /// is empty, from none.
    ///
    /// # Errors
    /// The first limit reached, in the order subject, source, replica.
    pub fn take(
        &self,
        issuer: &str,
        subject: &str,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), KeylessRefusal> {
        let subject_key = self.hasher.hash_one((issuer, subject));
        let source_key = self.hasher.hash_one(source.map(source_prefix));
        let rates = self.rates();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(buckets.pruned) >= PRUNE_INTERVAL {
            buckets.prune(rates, now);
        }
        let subject = current(&buckets.subjects, subject_key, rates.subject, now);
        if subject.whole() == 0 {
            return Err(KeylessRefusal::Subject(self.limits.per_subject_per_minute));
        }
        let source = current(&buckets.sources, source_key, rates.source, now);
        if source.whole() == 0 {
            return Err(KeylessRefusal::Source(self.limits.per_source_per_minute));
        }
        buckets.replica.refill(rates.replica, now);
        if buckets.replica.whole() == 0 {
            return Err(KeylessRefusal::Replica(self.limits.per_minute));
        }
        let crowded = |map: &HashMap<u64, Bucket>, key| {
            map.len() >= self.max_tracked && !map.contains_key(&key)
        };
        if crowded(&buckets.subjects, subject_key) || crowded(&buckets.sources, source_key) {
            return Err(KeylessRefusal::Crowded(self.max_tracked));
        }
        buckets.replica.available -= 1.0;
        buckets.subjects.insert(subject_key, spent(subject));
        buckets.sources.insert(source_key, spent(source));
        Ok(())
    }

    fn rates(&self) -> Rates {
        Rates {
            replica: Rate::per_minute(self.limits.per_minute),
            subject: Rate::per_minute(self.limits.per_subject_per_minute),
            source: Rate::per_minute(self.limits.per_source_per_minute),
        }
    }

    /// Buckets held: (subjects, sources).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        (buckets.subjects.len(), buckets.sources.len())
    }
}

impl Buckets {
    /// Drops the buckets that have refilled to capacity, and gives back
    /// the room of a map that has shrunk to a quarter of it.
    fn prune(&mut self, rates: Rates, now: Instant) {
        retain_and_shrink(&mut self.subjects, |b| !b.is_full(rates.subject, now));
        retain_and_shrink(&mut self.sources, |b| !b.is_full(rates.source, now));
        self.pruned = now;
    }
}

fn retain_and_shrink(map: &mut HashMap<u64, Bucket>, keep: impl Fn(&Bucket) -> bool) {
    map.retain(|_, bucket| keep(bucket));
    if map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// The bucket at `key` brought up to `now`, or a full one when there is
/// none (nothing is inserted: a refused call creates no bucket).
fn current(map: &HashMap<u64, Bucket>, key: u64, rate: Rate, now: Instant) -> Bucket {
    let mut bucket = map
        .get(&key)
        .copied()
        .unwrap_or_else(|| Bucket::full(rate, now));
    bucket.refill(rate, now);
    bucket
}

/// `bucket` with one revocation taken.
fn spent(mut bucket: Bucket) -> Bucket {
    bucket.available -= 1.0;
    bucket
}

/// What a source counts as: an IPv4 address, or the /64 prefix of an IPv6
/// one (an IPv4-mapped IPv6 address is its IPv4 address).
fn source_prefix(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://issuer.test";

    fn limits(per_minute: u32, per_subject: u32, per_source: u32) -> KeylessLimits {
        KeylessLimits {
            per_minute,
            per_subject_per_minute: per_subject,
            per_source_per_minute: per_source,
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("an IP address"))
    }

    /// Calls `take` until it refuses (at most 1,000 times); returns the
    /// number granted and the refusal.
    fn drain(
        quota: &KeylessQuota,
        subject: impl Fn(usize) -> String,
        source: Option<IpAddr>,
        now: Instant,
    ) -> (usize, Option<KeylessRefusal>) {
        for n in 0..1_000 {
            if let Err(refusal) = quota.take(ISSUER, &subject(n), source, now) {
                return (n, Some(refusal));
            }
        }
        (1_000, None)
    }

    #[test]
    fn a_subject_gets_a_minutes_worth_then_one_per_refill_period() {
        let start = Instant::now();
        let quota = KeylessQuota::new(limits(1_000, 10, 1_000), start);
        let alice = |_| "alice".to_owned();
        assert_eq!(
            drain(&quota, alice, ip("192.0.2.1"), start),
            (10, Some(KeylessRefusal::Subject(10)))
        );
        // 10 a minute refill one every 6 s: 7 s later, one is back.
        let later = start + Duration::from_secs(7);
        assert_eq!(drain(&quota, alice, ip("192.0.2.1"), later).0, 1);
        let much_later = later + Duration::from_secs(3_600);
        assert_eq!(drain(&quota, alice, ip("192.0.2.1"), much_later).0, 10);
        assert!(quota.take(ISSUER, "bob", ip("192.0.2.1"), start).is_ok());
        assert!(
            quota
                .take("https://other.test", "alice", ip("192.0.2.1"), start)
                .is_ok(),
            "a subject is per issuer"
        );
    }

    #[test]
    fn a_source_and_the_replica_bound_many_subjects() {
        let start = Instant::now();
        let quota = KeylessQuota::new(limits(1_000, 10, 5), start);
        let many = |n: usize| format!("user-{n}");
        assert_eq!(
            drain(&quota, many, ip("192.0.2.1"), start),
            (5, Some(KeylessRefusal::Source(5)))
        );
        assert!(quota.take(ISSUER, "x", ip("192.0.2.2"), start).is_ok());

        let quota = KeylessQuota::new(limits(3, 10, 5), start);
        let sources = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"];
        for (n, source) in sources.into_iter().enumerate() {
            let granted = quota.take(ISSUER, &many(n), ip(source), start);
            let expected = if n < 3 {
                Ok(())
            } else {
                Err(KeylessRefusal::Replica(3))
            };
            assert_eq!(granted, expected, "call {n}");
        }
    }

    #[test]
    fn a_refused_call_takes_from_no_bucket() {
        let start = Instant::now();
        let quota = KeylessQuota::new(limits(1_000, 2, 3), start);
        let source = ip("192.0.2.1");
        for _ in 0..2 {
            quota.take(ISSUER, "alice", source, start).unwrap();
        }
        for _ in 0..5 {
            let refused = quota.take(ISSUER, "alice", source, start);
            assert_eq!(refused, Err(KeylessRefusal::Subject(2)));
        }
        assert!(
            quota.take(ISSUER, "bob", source, start).is_ok(),
            "the source kept its third revocation"
        );
        assert_eq!(
            quota.take(ISSUER, "carol", source, start),
            Err(KeylessRefusal::Source(3))
        );
        assert_eq!(quota.tracked(), (2, 1), "carol got no bucket");
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        let start = Instant::now();
        let quota = KeylessQuota::new(limits(1_000, 100, 2), start);
        let many = |n: usize| format!("user-{n}");
        quota
            .take(ISSUER, &many(0), ip("2001:db8:1:2::1"), start)
            .unwrap();
        quota
            .take(ISSUER, &many(1), ip("2001:db8:1:2:ffff::9"), start)
            .unwrap();
        assert_eq!(
            quota.take(ISSUER, &many(2), ip("2001:db8:1:2::abcd"), start),
            Err(KeylessRefusal::Source(2)),
            "one /64 is one source"
        );
        assert!(quota
            .take(ISSUER, &many(3), ip("2001:db8:1:3::1"), start)
            .is_ok());
        quota
            .take(ISSUER, &many(4), ip("192.0.2.7"), start)
            .unwrap();
        quota
            .take(ISSUER, &many(5), ip("::ffff:192.0.2.7"), start)
            .unwrap();
        assert_eq!(
            quota.take(ISSUER, &many(6), ip("192.0.2.7"), start),
            Err(KeylessRefusal::Source(2))
        );
    }

    #[test]
    fn idle_buckets_are_dropped_and_busy_ones_kept() {
        let start = Instant::now();
        let quota = KeylessQuota::new(limits(10_000, 10, 10), start);
        for n in 0..1_000 {
            let source = IpAddr::from([198, 18, (n / 256) as u8, (n % 256) as u8]);
            quota
                .take(ISSUER, &format!("user-{n}"), Some(source), start)
                .unwrap();
        }
        assert_eq!(quota.tracked(), (1_000, 1_000));
        // Not yet due: nothing is walked.
        let soon = start + PRUNE_INTERVAL / 2;
        quota.take(ISSUER, "busy", ip("192.0.2.1"), soon).unwrap();
        assert_eq!(quota.tracked(), (1_001, 1_001));
        // One revocation of 10 a minute refills in 6 s: the 1,000 are idle
        // at the next prune; "busy" (taken 5 s before) is not.
        let due = start + PRUNE_INTERVAL;
        quota.take(ISSUER, "busy", ip("192.0.2.1"), due).unwrap();
        assert_eq!(quota.tracked(), (1, 1));
        let idle = due + Duration::from_secs(60) + PRUNE_INTERVAL;
        quota.take(ISSUER, "late", ip("192.0.2.2"), idle).unwrap();
        assert_eq!(quota.tracked(), (1, 1), "only the newest caller is held");
    }

    #[test]
    fn past_the_tracking_cap_new_callers_wait_for_pruning() {
        let start = Instant::now();
        let quota = KeylessQuota::with_max_tracked(limits(10_000, 10, 10_000), 3, start);
        let source = ip("192.0.2.1");
        for subject in ["a", "b", "c"] {
            quota.take(ISSUER, subject, source, start).unwrap();
        }
        assert_eq!(
            quota.take(ISSUER, "d", source, start),
            Err(KeylessRefusal::Crowded(3))
        );
        assert!(
            quota.take(ISSUER, "a", source, start).is_ok(),
            "a tracked caller goes on"
        );
        let later = start + PRUNE_INTERVAL + Duration::from_secs(60);
        assert!(quota.take(ISSUER, "d", source, later).is_ok());
        assert_eq!(quota.tracked(), (1, 1));
    }
}
