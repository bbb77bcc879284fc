//! Capped, jittered exponential backoff for reconnecting clients.
//!
//! The n-th delay is `min · 2ⁿ`, capped at `max`, then spread by up to
//! `±jitter` of itself so that many clients cut off at once do not return
//! at once ("full jitter" would also work; a bounded spread keeps the cap
//! meaningful).

use std::time::Duration;

/// A backoff schedule; [`ExponentialBackoff::next_delay`] walks it.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

/// Parameters that make no schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBackoff {
    /// `min` is zero or above `max`.
    #[error("backoff minimum must be above zero and at most the maximum")]
    MinAboveMax,
    /// `jitter` is outside `[0, 1]`.
    #[error("backoff jitter must be between 0 and 1")]
    Jitter,
}

impl ExponentialBackoff {
    /// A schedule from `min` to `max` with `jitter` in `[0, 1]`.
    ///
    /// # Errors
    /// [`InvalidBackoff`] for parameters that make no schedule.
    pub fn try_new(min: Duration, max: Duration, jitter: f64) -> Result<Self, InvalidBackoff> {
        if min.is_zero() || min > max {
            return Err(InvalidBackoff::MinAboveMax);
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidBackoff::Jitter);
        }
        Ok(ExponentialBackoff {
            min,
            max,
            jitter,
            attempt: 0,
        })
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let spread = 1.0 + self.jitter * (2.0 * rand::random::<f64>() - 1.0);
        base.mul_f64(spread).min(self.max)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut backoff = ExponentialBackoff::try_new(100 * MS, 1_000 * MS, 0.0).unwrap();
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_its_share_and_the_cap() {
        let mut backoff = ExponentialBackoff::try_new(100 * MS, 10_000 * MS, 0.5).unwrap();
        for attempt in 0..10 {
            let delay = backoff.next_delay();
            let base = (100 * MS * (1 << attempt)).min(10_000 * MS);
            assert!(
                delay >= base.mul_f64(0.5) && delay <= base.mul_f64(1.5).min(10_000 * MS),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(
            ExponentialBackoff::try_new(Duration::ZERO, MS, 0.1).unwrap_err(),
            InvalidBackoff::MinAboveMax
        );
        assert_eq!(
            ExponentialBackoff::try_new(2 * MS, MS, 0.1).unwrap_err(),
            InvalidBackoff::MinAboveMax
        );
        assert_eq!(
            ExponentialBackoff::try_new(MS, MS, 1.5).unwrap_err(),
            InvalidBackoff::Jitter
        );
    }
}
