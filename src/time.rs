//! Unix-time helpers. Every timestamp revocd stores or sends is whole unix
//! seconds (UTC), as in JWT `exp`/`iat` claims.
//!
//! The parts whose behaviour is driven by time (the hub's expiry and
//! heartbeats, the gateway's staleness and its view of the server's clock)
//! read unix time from a [`Clock`] and measure intervals with tokio's
//! `Instant`. Tests give them [`Clock::tokio`] and run on paused tokio
//! time: `tokio::time::advance` then moves both together, with no sleeps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where unix time comes from.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The system's wall clock: what production runs on.
    #[default]
    System,
    /// Unix time that moves with tokio's clock, from `unix_ms` at
    /// `started`: under paused time it advances only when the test
    /// advances tokio's.
    Tokio {
        /// Unix milliseconds at `started`.
        unix_ms: i64,
        /// When the clock was made.
        started: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads the system's now and then follows tokio's time.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            unix_ms: unix_now_ms(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => unix_now_ms(),
            Clock::Tokio { unix_ms, started } => unix_ms + started.elapsed().as_millis() as i64,
        }
    }

    /// Now, in whole unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1_000)
    }
}

/// Now, in whole unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // The clock of a running server is past 1970.
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, in unix milliseconds (heartbeat times).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Formats unix seconds as RFC 3339 (`2026-11-28T19:00:00Z`) for people.
pub fn format_unix(seconds: i64) -> String {
    match u64::try_from(seconds) {
        Ok(secs) => {
            let at = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            humantime::format_rfc3339_seconds(at).to_string()
        }
        Err(_) => seconds.to_string(),
    }
}
