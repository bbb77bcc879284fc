//! Per-key rate quotas: a token bucket per API key on this replica, holding
//! one second's worth of revocations. Keys come from the configuration, so
//! the map is bounded by it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::auth::Caller;

/// The buckets of every key with `max_revocations_per_second`.
#[derive(Debug, Default)]
pub struct RevocationRate {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// Revocations that may be made now (fractional while refilling).
    available: f64,
    refilled: Instant,
}

impl RevocationRate {
    /// Takes up to `wanted` revocations from the caller's bucket and returns
    /// how many it may make now: all of them when its key has no rate quota.
    pub fn take(&self, caller: &Caller, wanted: usize) -> usize {
        let Some(rate) = caller.limits.max_revocations_per_second else {
            return wanted;
        };
        let rate = f64::from(rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(caller.name.clone())
            .or_insert_with(|| Bucket {
                available: rate,
                refilled: now,
            });
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.available = (bucket.available + refill).min(rate);
        bucket.refilled = now;
        let granted = (bucket.available.floor() as usize).min(wanted);
        bucket.available -= granted as f64;
        granted
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(rate.take(&limited, 4), 4);
        assert_eq!(rate.take(&limited, 100), 6, "a burst of one second's worth");
        assert_eq!(rate.take(&limited, 1), 0);
        std::thread::sleep(std::time::Duration::from_millis(250));
        let refilled = rate.take(&limited, 100);
        assert!(
            (2..=4).contains(&refilled),
            "{refilled} after 250 ms at 10/s"
        );
    }

    #[test]
    fn a_key_without_a_quota_is_not_limited() {
        let rate = RevocationRate::default();
        assert_eq!(rate.take(&caller(""), 1_000_000), 1_000_000);
    }
}
