//! What a gateway may accept: only tokens that the server can keep revoked
//! for as long as they are accepted.
//!
//! The server keeps a token's revocation until the token's `exp` plus its
//! leeway, and a cut-off ("every token of subject X issued before T") until
//! `T` plus the longest token lifetime it accepts (`--max-token-lifetime`)
//! plus its leeway. So a token stays revocable exactly while:
//!
//! - it is judged expired at `exp` plus a leeway no larger than the
//!   server's (a gateway uses the smaller of its own and the server's, on
//!   the server's clock as far as its heartbeats show it);
//! - it carries `iat`, not later than now plus the leeway, and lives at
//!   most the server's longest lifetime (`exp - iat`): a cut-off made
//!   after it was issued then outlives it, and `Revoke{token}` accepts its
//!   `exp`. A token without `iat` could have been issued at any time, so
//!   no cut-off could be kept long enough to cover it;
//! - its `jti`, `sub` and `iss` are values the server can store (length,
//!   no control characters), so `Revoke` and `RevokeSubject` accept them.
//!
//! Servers announce their numbers in every snapshot ([`TokenBounds`]), and
//! gateways refuse what falls outside them; `Check{token}` answers such a
//! token with INVALID_ARGUMENT.

use std::time::Duration;

use crate::tokens::{ClaimValue, Claims};

/// Clock leeway for `exp` and `nbf` by default, in seconds (`--leeway`).
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// Longest token lifetime accepted by default (`--max-token-lifetime`).
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3_600);
/// Longest `jti` or subject the server stores, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest issuer the server stores, in bytes (issuers are URLs).
pub const MAX_ISSUER_BYTES: usize = 512;
/// Most values an array claim that cut-offs match (`sid`, `client_id`,
/// `azp`) may hold: each is one lookup of every check.
pub const MAX_CLAIM_VALUES: usize = 16;

/// The server's retention numbers, as its snapshots announce them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBounds {
    /// Seconds a record outlives the token's `exp` (`--leeway`).
    pub leeway: i64,
    /// Longest token lifetime, `exp - iat`, in seconds
    /// (`--max-token-lifetime`).
    pub max_token_lifetime: i64,
}

/// Why a token cannot be kept revoked for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// No `iat`: no cut-off could be kept long enough to cover it.
    #[error("the token has no `iat` claim, so no cut-off could be kept for its whole life")]
    NoIssuedAt,
    /// `iat` later than now plus the leeway.
    #[error("the token's `iat` is {0} s in the future")]
    IssuedInFuture(i64),
    /// `exp - iat` beyond the server's longest lifetime.
    #[error("the token lives {lifetime} s, longer than the {max} s the revocation service keeps revocations for (--max-token-lifetime)")]
    LifetimeTooLong {
        /// `exp - iat`.
        lifetime: i64,
        /// The server's longest lifetime.
        max: i64,
    },
    /// A claim the server could not store.
    #[error("the token's `{0}` is longer than the revocation service stores, holds control characters, or has more than 16 values")]
    Unstorable(String),
}

impl Default for TokenBounds {
    /// The server's numbers by default: [`DEFAULT_LEEWAY_SECONDS`] and
    /// [`DEFAULT_MAX_TOKEN_LIFETIME`].
    fn default() -> Self {
        TokenBounds {
            leeway: DEFAULT_LEEWAY_SECONDS as i64,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME.as_secs() as i64,
        }
    }
}

impl TokenBounds {
    /// The server's numbers from a snapshot; `None` when it sent none (a
    /// server from before they were announced).
    pub fn announced(leeway: i64, max_token_lifetime: i64) -> Option<Self> {
        (max_token_lifetime > 0).then_some(TokenBounds {
            leeway: leeway.max(0),
            max_token_lifetime,
        })
    }

    /// Checks that a verified token can be kept revoked for its whole
    /// life (see the module documentation); `now` in unix seconds on the
    /// server's clock.
    ///
    /// # Errors
    /// [`BoundsError`] saying which rule the token breaks.
    pub fn judge(&self, claims: &Claims, now: i64) -> Result<(), BoundsError> {
        let storable = |value: &str, limit: usize| value.len() <= limit && is_printable(value);
        if !claims
            .jti
            .as_deref()
            .is_none_or(|v| storable(v, MAX_ID_BYTES))
        {
            return Err(BoundsError::Unstorable("jti".into()));
        }
        if !claims
            .subject
            .as_deref()
            .is_none_or(|v| storable(v, MAX_ID_BYTES))
        {
            return Err(BoundsError::Unstorable("sub".into()));
        }
        if !storable(&claims.issuer, MAX_ISSUER_BYTES) {
            return Err(BoundsError::Unstorable("iss".into()));
        }
        // A value no cut-off could name would leave its session or client
        // unrevocable; so would more values than a check may look up.
        for (claim, value) in claims.cut_claims() {
            let values = value.map_or(&[][..], ClaimValue::values);
            if values.len() > MAX_CLAIM_VALUES
                || !values.iter().all(|value| storable(value, MAX_ID_BYTES))
            {
                return Err(BoundsError::Unstorable(claim.to_owned()));
            }
        }
        let issued_at = claims.issued_at.ok_or(BoundsError::NoIssuedAt)?;
        if issued_at > now + self.leeway {
            return Err(BoundsError::IssuedInFuture(issued_at - now));
        }
        let lifetime = claims
            .expires_at
            .unwrap_or(i64::MAX)
            .saturating_sub(issued_at);
        if lifetime > self.max_token_lifetime {
            return Err(BoundsError::LifetimeTooLong {
                lifetime,
                max: self.max_token_lifetime,
            });
        }
        Ok(())
    }
}

/// True when `value` holds no control characters.
pub fn is_printable(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const BOUNDS: TokenBounds = TokenBounds {
        leeway: 5,
        max_token_lifetime: 600,
    };

    fn claims(issued_at: Option<i64>, expires_at: i64) -> Claims {
        Claims {
            issuer: "https://issuer.test".into(),
            jti: Some("j".into()),
            subject: Some("alice".into()),
            expires_at: Some(expires_at),
            issued_at,
            ..Claims::default()
        }
    }

    #[test]
    fn a_token_within_the_servers_lifetime_is_accepted() {
        assert_eq!(BOUNDS.judge(&claims(Some(NOW), NOW + 600), NOW), Ok(()));
        assert_eq!(BOUNDS.judge(&claims(Some(NOW + 5), NOW + 60), NOW), Ok(()));
    }

    #[test]
    fn a_token_the_server_could_not_keep_revoked_is_refused() {
        assert_eq!(
            BOUNDS.judge(&claims(Some(NOW), NOW + 601), NOW),
            Err(BoundsError::LifetimeTooLong {
                lifetime: 601,
                max: 600
            })
        );
        assert_eq!(
            BOUNDS.judge(&claims(None, NOW + 60), NOW),
            Err(BoundsError::NoIssuedAt)
        );
        assert_eq!(
            BOUNDS.judge(&claims(Some(NOW + 6), NOW + 60), NOW),
            Err(BoundsError::IssuedInFuture(6))
        );
        let mut long_jti = claims(Some(NOW), NOW + 60);
        long_jti.jti = Some("x".repeat(MAX_ID_BYTES + 1));
        assert_eq!(
            BOUNDS.judge(&long_jti, NOW),
            Err(BoundsError::Unstorable("jti".into()))
        );
        let mut odd_subject = claims(Some(NOW), NOW + 60);
        odd_subject.subject = Some("a\nb".into());
        assert_eq!(
            BOUNDS.judge(&odd_subject, NOW),
            Err(BoundsError::Unstorable("sub".into()))
        );
        let sessions = |count: usize| ClaimValue::Many((0..count).map(|i| i.to_string()).collect());
        let mut many_sessions = claims(Some(NOW), NOW + 60);
        many_sessions.session = Some(sessions(MAX_CLAIM_VALUES));
        assert_eq!(BOUNDS.judge(&many_sessions, NOW), Ok(()));
        many_sessions.session = Some(sessions(MAX_CLAIM_VALUES + 1));
        assert_eq!(
            BOUNDS.judge(&many_sessions, NOW),
            Err(BoundsError::Unstorable("sid".into()))
        );
        let mut long_client = claims(Some(NOW), NOW + 60);
        long_client.client_id = Some("c".repeat(MAX_ID_BYTES + 1).as_str().into());
        assert_eq!(
            BOUNDS.judge(&long_client, NOW),
            Err(BoundsError::Unstorable("client_id".into()))
        );
    }

    #[test]
    fn servers_that_announce_nothing_impose_nothing() {
        assert_eq!(TokenBounds::announced(60, 0), None);
        assert_eq!(
            TokenBounds::announced(-1, 60),
            Some(TokenBounds {
                leeway: 0,
                max_token_lifetime: 60
            })
        );
    }
}
