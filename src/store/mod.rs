//! Where revocations live: Redis in production, memory for first runs and
//! tests. Both backends have the same semantics:
//!
//! - a token revocation is keyed on (issuer, jti) and kept until its
//!   `keep_until` (the token's `exp` plus leeway), then forgotten;
//! - a subject cut-off is keyed on (issuer, subject) and only ever moves
//!   later;
//! - every change is written together with an entry in an ordered change log,
//!   in one atomic step, and its position (the cursor) is returned only after
//!   the write is acknowledged.
//!
//! The backend is an enum rather than a trait object: there are two, both
//! known here, and a `match` keeps the async methods free of boxing.

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreOptions};

/// Who made a change, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// When the change was made (unix seconds).
    pub at: i64,
    /// The API key's name, or `self` for a token that revoked itself.
    pub by: String,
    /// The reason the caller gave; may be empty.
    pub reason: String,
}

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The token's `iss` (empty when it has none).
    pub issuer: String,
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp` (unix seconds).
    pub expires_at: i64,
    /// When the record may be forgotten: `expires_at` plus leeway.
    pub keep_until: i64,
    /// Who revoked it, when and why.
    pub provenance: Provenance,
}

/// "Every token of `subject` issued before `not_before` is revoked."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectCutoff {
    /// The tokens' `iss` (empty when they have none).
    pub issuer: String,
    /// The tokens' `sub`.
    pub subject: String,
    /// Tokens whose `iat` is earlier are revoked (unix seconds).
    pub not_before: i64,
    /// When the record may be forgotten: once every token it covers has
    /// expired (`not_before` + maximum token lifetime + leeway).
    pub keep_until: i64,
    /// Who made the cut-off, when and why.
    pub provenance: Provenance,
}

/// The result of storing a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// True when no revocation of this (issuer, jti) existed before.
    pub newly_revoked: bool,
    /// Change-log position of the change, `None` when nothing changed.
    pub cursor: Option<String>,
}

/// The result of storing a subject cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoffOutcome {
    /// The cut-off in force afterwards (the stored one if it was later).
    pub not_before: i64,
    /// Change-log position of the change, `None` when nothing changed.
    pub cursor: Option<String>,
}

/// What the store knows about one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenStatus {
    /// The token's own revocation, if any.
    pub revocation: Option<Revocation>,
    /// Its subject's cut-off, if a subject was asked about and one exists.
    pub cutoff: Option<SubjectCutoff>,
}

/// Numbers of live records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Token revocations not yet past `keep_until`.
    pub revocations: u64,
    /// Subject cut-offs not yet past `keep_until`.
    pub subject_cutoffs: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached right now (connection refused or lost,
    /// timeout, loading, failover). Whether a write took effect is unknown;
    /// writes are idempotent, so the caller retries.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] ::redis::RedisError),
    /// The backend answered something this code does not expect.
    #[error("store error: {0}")]
    Backend(#[source] ::redis::RedisError),
    /// A stored record could not be read back.
    #[error("corrupt record {key}: {detail}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl From<::redis::RedisError> for Error {
    fn from(error: ::redis::RedisError) -> Self {
        use ::redis::{ErrorKind, ServerErrorKind};
        let transient = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
            || matches!(
                error.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
            );
        if transient {
            Error::Unavailable(error)
        } else {
            Error::Backend(error)
        }
    }
}

/// A storage backend.
// One `Store` exists per process, so the size difference between the
// variants costs nothing worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Store {
    /// Redis: durable, shared by every replica.
    Redis(RedisStore),
    /// Process memory: one replica only, lost on exit.
    Memory(MemoryStore),
}

impl Store {
    /// The backend's name as `GetStats` reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Redis(_) => "redis",
            Store::Memory(_) => "memory",
        }
    }

    /// Stores a revocation and appends it to the change log, atomically.
    ///
    /// An existing revocation of the same (issuer, jti) is kept; if the new
    /// one expires later, its expiry is extended (and that is logged).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached.
    pub async fn revoke(&self, revocation: &Revocation, now: i64) -> Result<RevokeOutcome, Error> {
        match self {
            Store::Redis(store) => store.revoke(revocation, now).await,
            Store::Memory(store) => Ok(store.revoke(revocation, now)),
        }
    }

    /// Stores a subject cut-off unless an equal or later one is in force,
    /// and appends it to the change log, atomically.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached.
    pub async fn revoke_subject(
        &self,
        cutoff: &SubjectCutoff,
        now: i64,
    ) -> Result<CutoffOutcome, Error> {
        match self {
            Store::Redis(store) => store.revoke_subject(cutoff, now).await,
            Store::Memory(store) => Ok(store.revoke_subject(cutoff, now)),
        }
    }

    /// Looks up a token's revocation and, when `subject` is given, its
    /// subject's cut-off, in one round trip. Records past `keep_until` are
    /// not returned.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached;
    /// [`Error::Corrupt`] when a record cannot be parsed.
    pub async fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        subject: Option<&str>,
        now: i64,
    ) -> Result<TokenStatus, Error> {
        match self {
            Store::Redis(store) => store.status(issuer, jti, subject, now).await,
            Store::Memory(store) => Ok(store.status(issuer, jti, subject, now)),
        }
    }

    /// Counts the live records.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached.
    pub async fn counts(&self, now: i64) -> Result<Counts, Error> {
        match self {
            Store::Redis(store) => store.counts(now).await,
            Store::Memory(store) => Ok(store.counts(now)),
        }
    }

    /// Succeeds while the backend answers.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached.
    pub async fn ping(&self) -> Result<(), Error> {
        match self {
            Store::Redis(store) => store.ping().await,
            Store::Memory(_) => Ok(()),
        }
    }
}

/// The record name of an (issuer, id) pair, unambiguous for any issuer:
/// `<issuer byte length>:<issuer>:<id>`, e.g. `19:https://issuer.test:abc`.
pub(crate) fn record_name(issuer: &str, id: &str) -> String {
    format!("{}:{issuer}:{id}", issuer.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_do_not_collide_across_the_separator() {
        // ("a:b", "c") and ("a", "b:c") must name different records.
        assert_ne!(record_name("a:b", "c"), record_name("a", "b:c"));
        assert_eq!(record_name("", "x"), "0::x");
    }
}
