//! Limits on request fields, checked before anything is stored. Each check
//! names the field and the rule, so the caller can fix the request.

use super::service::ApiError;

pub use crate::bounds::{MAX_ID_BYTES, MAX_ISSUER_BYTES};
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Longest change-log cursor or page token, in bytes: a stream ID for each
/// of up to 1,024 log partitions.
pub const MAX_CURSOR_BYTES: usize = 32 * 1024;

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
}
