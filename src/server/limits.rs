//! Limits of requests: their fields, checked before anything is stored
//! (each check names the field and the rule, so the caller can fix the
//! request), the sizes of batches and pages, and the filter streams one
//! caller may hold open ([`StreamCounter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::ApiError;

pub use crate::bounds::{MAX_ID_BYTES, MAX_ISSUER_BYTES};
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Longest change-log cursor or page token, in bytes: a stream ID for each
/// of up to 1,024 log partitions.
pub const MAX_CURSOR_BYTES: usize = 32 * 1024;
/// Most items of one `RevokeBatch`.
pub const MAX_BATCH_ITEMS: usize = 1_000;
/// Page size of listings when the caller names none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size of listings; larger requests get this.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// A `jti` or subject: not empty, at most [`MAX_ID_BYTES`], no control
/// characters.
pub fn identifier(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("`{field}` is empty")));
    }
    text(field, value, MAX_ID_BYTES)
}

/// An issuer: at most [`MAX_ISSUER_BYTES`], no control characters; empty
/// is the "no issuer" issuer.
pub fn issuer(value: &str) -> Result<(), ApiError> {
    text("issuer", value, MAX_ISSUER_BYTES)
}

/// A reason: at most [`MAX_REASON_BYTES`], no control characters.
pub fn reason(value: &str) -> Result<(), ApiError> {
    text("reason", value, MAX_REASON_BYTES)
}

/// Any text field: at most `limit` bytes, no control characters.
pub fn text(field: &str, value: &str, limit: usize) -> Result<(), ApiError> {
    if value.len() > limit {
        return Err(ApiError::invalid(format!(
            "`{field}` is {} bytes; the limit is {limit}",
            value.len()
        )));
    }
    if !crate::bounds::is_printable(value) {
        return Err(ApiError::invalid(format!(
            "`{field}` contains control characters"
        )));
    }
    Ok(())
}

// === impl StreamCounter ===

/// Open filter streams per caller, so one key cannot take them all.
///
/// A `std` mutex: it is held for one map update, never across an await.
#[derive(Debug, Default)]
pub struct StreamCounter(Mutex<HashMap<String, usize>>);

/// One open stream of a caller; the count drops with it.
#[derive(Debug)]
pub struct StreamPermit {
    counter: Arc<StreamCounter>,
    caller: String,
}

impl StreamCounter {
    /// A permit for one more stream of `caller`, or `None` when it already
    /// holds `limit`.
    pub fn acquire(self: &Arc<Self>, caller: &str, limit: usize) -> Option<StreamPermit> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(caller.to_owned()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(StreamPermit {
            counter: Arc::clone(self),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.counter.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_bounded_and_printable() {
        assert!(identifier("jti", "abc-123").is_ok());
        assert!(identifier("jti", "").is_err());
        assert!(identifier("jti", &"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(identifier("jti", &"x".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(identifier("jti", "a\nb").is_err());
        assert!(identifier("jti", "a\u{7f}b").is_err());
        assert!(issuer("").is_ok());
        assert!(reason("user clicked \"log out\"").is_ok());
    }

    #[test]
    fn a_caller_holds_at_most_its_limit_of_streams_and_gets_them_back() {
        let counter = Arc::new(StreamCounter::default());
        let first = counter.acquire("edge", 2).expect("first stream");
        let second = counter.acquire("edge", 2).expect("second stream");
        assert!(counter.acquire("edge", 2).is_none(), "over the limit");
        assert!(
            counter.acquire("other", 2).is_some(),
            "limits are per caller"
        );
        drop(first);
        assert!(
            counter.acquire("edge", 2).is_some(),
            "a closed stream frees one"
        );
        drop(second);
        assert!(
            counter.0.lock().unwrap().is_empty(),
            "idle callers are forgotten"
        );
    }

    #[test]
    fn texts_name_the_field_and_the_rule() {
        let long = text("cursor", &"x".repeat(11), 10).unwrap_err().to_string();
        assert_eq!(long, "`cursor` is 11 bytes; the limit is 10");
        let control = text("reason", "a\tb", 10).unwrap_err().to_string();
        assert_eq!(control, "`reason` contains control characters");
        let empty = identifier("subject", "").unwrap_err().to_string();
        assert_eq!(empty, "`subject` is empty");
    }
}
