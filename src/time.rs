//! Unix-time helpers. Every timestamp revocd stores or sends is whole unix
//! seconds (UTC), as in JWT `exp`/`iat` claims.

use std::time::{SystemTime, UNIX_EPOCH};

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
