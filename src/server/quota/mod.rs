//! Rate quotas of revocations on this replica, as token buckets:
//!
//! - [`RevocationRate`]: one bucket per API key with
//!   `max_revocations_per_second`, holding one second's worth. Keys come
//!   from the configuration, so that map is bounded by it.
//! - [`KeylessQuota`] (`keyless.rs`): the buckets of keyless
//!   self-revocation, per subject, per source address and for the replica.
//!
//! Every bucket is read with a caller-supplied `now`, so the tests move
//! time without sleeping.

mod keyless;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::auth::Caller;

pub use self::keyless::{
    KeylessLimits, KeylessQuota, KeylessRefusal, DEFAULT_KEYLESS_PER_MINUTE,
    DEFAULT_KEYLESS_SOURCE_PER_MINUTE, DEFAULT_KEYLESS_SUBJECT_PER_MINUTE,
};

/// A bucket's size and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    /// Most revocations the bucket holds: the burst.
    capacity: f64,
    /// Revocations added back per second.
    per_second: f64,
}

impl Rate {
    /// `n` a second, with a burst of one second's worth.
    fn per_second(n: u32) -> Self {
        Rate {
            capacity: f64::from(n),
            per_second: f64::from(n),
        }
    }

    /// `n` a minute, with a burst of one minute's worth.
    fn per_minute(n: u32) -> Self {
        Rate {
            capacity: f64::from(n),
            per_second: f64::from(n) / 60.0,
        }
    }
}

/// A token bucket. It starts full; a full bucket is the same as no bucket,
/// which is what lets idle ones be forgotten.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Revocations that may be made now (fractional while refilling).
    available: f64,
    /// When `available` was last brought up to date.
    refilled: Instant,
}

impl Bucket {
    /// A full bucket of `rate`.
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            available: rate.capacity,
            refilled: now,
        }
    }

    /// Adds what `rate` refilled since the last call, up to its capacity.
    /// A `now` earlier than the last refill adds nothing.
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.available = (self.available + elapsed * rate.per_second).min(rate.capacity);
        self.refilled = self.refilled.max(now);
    }

    /// Whole revocations available now.
    fn whole(&self) -> usize {
        self.available.floor() as usize
    }

    /// True when the bucket has refilled to capacity by `now`.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(rate, now);
        probe.available >= rate.capacity
    }
}

// === impl RevocationRate ===

/// The buckets of every key with `max_revocations_per_second`.
#[derive(Debug, Default)]
pub struct RevocationRate {
    /// By key name. A `std` mutex: held for a few arithmetic operations,
    /// never across an await.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RevocationRate {
    /// Takes up to `wanted` revocations from the caller's bucket and returns
    /// how many it may make at `now`: all of them when its key has no rate
    /// quota.
    pub fn take(&self, caller: &Caller, wanted: usize, now: Instant) -> usize {
        let Some(rate) = caller.limits.max_revocations_per_second else {
            return wanted;
        };
        let rate = Rate::per_second(rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(caller.name.clone())
            .or_insert_with(|| Bucket::full(rate, now));
        bucket.refill(rate, now);
        let granted = bucket.whole().min(wanted);
        bucket.available -= granted as f64;
        granted
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::Access;

    fn caller(toml_quota: &str) -> Caller {
        let toml = format!(
            "[[key]]\nname = \"k\"\nsha256 = \"{}\"\nroles = [\"revoke\"]\n{toml_quota}\n",
            crate::auth::key_digest_hex("k")
        );
        let access = Access::from_toml(&toml).unwrap();
        access.caller(Some(b"Bearer k"), None).unwrap().unwrap()
    }

    #[test]
    fn a_bucket_grants_one_seconds_worth_then_refills_with_time() {
        let rate = RevocationRate::default();
        let limited = caller("max_revocations_per_second = 10");
        let start = Instant::now();
        assert_eq!(rate.take(&limited, 4, start), 4);
        assert_eq!(
            rate.take(&limited, 100, start),
            6,
            "a burst of one second's worth"
        );
        assert_eq!(rate.take(&limited, 1, start), 0);
        let later = start + Duration::from_millis(250);
        assert_eq!(rate.take(&limited, 100, later), 2, "250 ms at 10/s");
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            rate.take(&limited, 100, much_later),
            10,
            "never past the burst"
        );
    }

    #[test]
    fn a_key_without_a_quota_is_not_limited() {
        let rate = RevocationRate::default();
        assert_eq!(rate.take(&caller(""), 1_000_000, Instant::now()), 1_000_000);
    }

    #[test]
    fn a_clock_read_out_of_order_neither_adds_nor_panics() {
        let rate = Rate::per_minute(6);
        let start = Instant::now();
        let mut bucket = Bucket::full(rate, start + Duration::from_secs(10));
        bucket.available = 0.0;
        bucket.refill(rate, start);
        assert_eq!(bucket.whole(), 0);
        bucket.refill(rate, start + Duration::from_secs(25));
        assert_eq!(bucket.whole(), 1, "15 s at 6 a minute");
        assert!(!bucket.is_full(rate, start + Duration::from_secs(25)));
        assert!(bucket.is_full(rate, start + Duration::from_secs(75)));
    }
}
