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
//!
//! # Layout
//!
//! - `record.rs`: the records and answers both backends share.
//! - `memory.rs`: the memory backend.
//! - `redis/`: the Redis backend; its `mod.rs` says which file holds what.
//!
//! No backend's own types cross this module's boundary: a Redis failure
//! reaches callers as an [`Error`] wrapping a [`BackendError`].

mod memory;
mod record;
mod redis;

use std::time::Duration;

use crate::filter::DigestKey;

pub use self::memory::{MemoryLogReader, MemoryStore};
pub(crate) use self::record::{cutoff_name, parse_record_name, record_name};
pub use self::record::{
    AuditEntry, Change, Counts, Cutoff, CutoffOutcome, LogTail, LoggedChange, Page, Provenance,
    Record, RecordFilter, RecordKind, Revocation, RevokeOutcome, TokenStatus, SUBJECT_CLAIM,
};
pub use self::redis::{
    pack_revocation, Durability, EntryFormat, RedisLiveScan, RedisLogReader, RedisNodes,
    RedisStore, RedisStoreOptions, MAX_PARTITIONS,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached right now (connection refused or lost,
    /// timeout, loading, failover). Whether a write took effect is unknown;
    /// writes are idempotent, so the caller retries.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BackendError),
    /// The backend answered something this code does not expect.
    #[error("store error: {0}")]
    Backend(#[source] BackendError),
    /// The write was executed but not confirmed durable as the
    /// `--durability` mode asks; it may or may not survive a crash. Writes
    /// are idempotent, so the caller retries.
    #[error("write not confirmed durable: {0}")]
    NotDurable(String),
    /// The backend cannot give what the configuration asks (found at start).
    #[error("{0}")]
    Unsuitable(String),
    /// A page token this store did not hand out.
    #[error("the page token is not one this server handed out")]
    BadPageToken,
    /// Entries after a log reader's cursor were trimmed from the change log
    /// before it read them: whatever follows that cursor is incomplete, so
    /// the reader's state must be loaded again from the records.
    #[error(
        "the change log was trimmed past cursor {cursor:?}: entries after it are gone; reload"
    )]
    LogGap {
        /// The cursor the reader stood at.
        cursor: String,
    },
    /// A stored record could not be read back.
    #[error("corrupt record {key}: {detail}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Error {
    /// True when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::NotDurable(_))
    }

    /// True when the backend refused the store's credentials (a wrong
    /// password or user name): at start, a mistake in the configuration
    /// rather than an outage.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(cause) | Error::Backend(cause) if cause.auth_failure
        )
    }
}

/// A failure the backend itself reported, behind [`Error::Unavailable`] and
/// [`Error::Backend`]. It shows the backend's message and source chain as
/// they are, and keeps what the store made of it; the backend client's own
/// error type stays inside the store.
#[derive(Debug)]
pub struct BackendError {
    /// The backend client's error.
    source: Box<dyn std::error::Error + Send + Sync>,
    /// True when the backend refused the store's credentials; decided where
    /// the backend's error kinds are known (see [`Error::is_auth_failure`]).
    auth_failure: bool,
}

impl BackendError {
    /// Wraps a backend client's error.
    pub(crate) fn new(
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        auth_failure: bool,
    ) -> Self {
        Self {
            source: source.into(),
            auth_failure,
        }
    }
}

// Transparent: the message and the chain are the backend's own.
impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
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
            Store::Redis(store) => store.kind(),
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
        let mut outcomes = self
            .revoke_batch(std::slice::from_ref(revocation), now, None)
            .await?;
        Ok(outcomes.pop().unwrap_or_default())
    }

    /// Stores several revocations of one caller in one round trip, each as
    /// [`Store::revoke`] would (each atomic on its own); one outcome per
    /// revocation, in order. With `live_quota`, a new revocation is refused
    /// (`over_quota`) while the caller (`provenance.by`, the same for every
    /// item) holds that many live ones.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached: then any
    /// of the batch may or may not be stored (retrying is safe).
    pub async fn revoke_batch(
        &self,
        revocations: &[Revocation],
        now: i64,
        live_quota: Option<u64>,
    ) -> Result<Vec<RevokeOutcome>, Error> {
        match self {
            Store::Redis(store) => store.revoke_batch(revocations, now, live_quota).await,
            Store::Memory(store) => Ok(revocations
                .iter()
                .map(|revocation| store.revoke(revocation, now, live_quota))
                .collect()),
        }
    }

    /// A page of live records matching `filter`, starting at `page_token`
    /// (from the previous page). Paging is stable under concurrent writes:
    /// a record live throughout a walk is returned at least once (rarely
    /// twice with Redis, when an index is resized meanwhile). The order is
    /// the store's own; a page may hold somewhat more or fewer than
    /// `page_size` items, and may be empty with more to come.
    ///
    /// # Errors
    /// [`Error::BadPageToken`]; [`Error::Unavailable`]; [`Error::Corrupt`].
    pub async fn list(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
        now: i64,
    ) -> Result<Page<Record>, Error> {
        match self {
            Store::Redis(store) => store.list(filter, page_size, page_token, now).await,
            Store::Memory(store) => store.list(filter, page_size, page_token, now),
        }
    }

    /// A page of the change log (the audit trail), oldest first, from
    /// `filter.since` or after `page_token`, holding the changes that match
    /// `filter`. It reaches back as far as the log is retained.
    ///
    /// # Errors
    /// [`Error::BadPageToken`]; [`Error::Unavailable`]; [`Error::Corrupt`].
    pub async fn audit(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<AuditEntry>, Error> {
        match self {
            Store::Redis(store) => store.audit(filter, page_size, page_token).await,
            Store::Memory(store) => store.audit(filter, page_size, page_token),
        }
    }

    /// Stores a cut-off unless an equal or later one is in force on the
    /// same (issuer, claim, value), and appends it to the change log,
    /// atomically.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached.
    pub async fn cut(&self, cutoff: &Cutoff, now: i64) -> Result<CutoffOutcome, Error> {
        match self {
            Store::Redis(store) => store.cut(cutoff, now).await,
            Store::Memory(store) => Ok(store.cut(cutoff, now)),
        }
    }

    /// Looks up a token's revocation and the cut-offs on each of its
    /// `(claim, value)` pairs (`("*", "")` for the issuer-wide one), in one
    /// round trip. Records past `keep_until` are not returned.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached;
    /// [`Error::Corrupt`] when a record cannot be parsed.
    pub async fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        claims: &[(&str, &str)],
        now: i64,
    ) -> Result<TokenStatus, Error> {
        match self {
            Store::Redis(store) => store.status(issuer, jti, claims, now).await,
            Store::Memory(store) => Ok(store.status(issuer, jti, claims, now)),
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

    /// The deployment's digest key: `preset` if given, else the one stored
    /// (created at random by the first replica to ask, atomically).
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::Corrupt`] for a stored key of the
    /// wrong size.
    pub async fn digest_key(&self, preset: Option<DigestKey>) -> Result<DigestKey, Error> {
        match (preset, self) {
            (Some(key), _) => Ok(key),
            (None, Store::Redis(store)) => store.digest_key().await,
            (None, Store::Memory(store)) => Ok(store.digest_key()),
        }
    }

    /// Records the deployment's leeway on first use; refuses another one
    /// later ([`Error::Unsuitable`]): records kept for another leeway sit
    /// in other filter slices than gateways look in.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::Unsuitable`] for another leeway.
    pub async fn pin_leeway(&self, leeway: u64) -> Result<(), Error> {
        match self {
            Store::Redis(store) => store.pin_leeway(leeway).await,
            Store::Memory(_) => Ok(()),
        }
    }

    /// The newest `count` log entries and the head cursor.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::Corrupt`] for an unreadable entry.
    pub async fn log_tail(&self, count: usize) -> Result<LogTail, Error> {
        match self {
            Store::Redis(store) => store.log_tail(count).await,
            Store::Memory(store) => Ok(store.log_tail(count)),
        }
    }

    /// The cursor of the log's newest entry: a reader that has applied the
    /// log up to it holds every change acknowledged before this call.
    ///
    /// # Errors
    /// As [`Store::log_tail`].
    pub async fn log_head(&self) -> Result<String, Error> {
        Ok(self.log_tail(1).await?.head)
    }

    /// A reader that follows the change log. Redis readers use a connection
    /// of their own, since a blocking read would stall every other command.
    pub fn log_reader(&self) -> LogReader {
        match self {
            Store::Redis(store) => LogReader::Redis(store.log_reader()),
            Store::Memory(store) => LogReader::Memory(store.log_reader()),
        }
    }

    /// Walks every live revocation and subject cut-off, a page at a time,
    /// so memory stays bounded whatever the store holds. A record may be
    /// seen twice; applying it twice is harmless.
    pub fn scan_live(&self, now: i64) -> LiveScan {
        match self {
            Store::Redis(store) => LiveScan::Redis(store.scan_live(now)),
            Store::Memory(store) => LiveScan::Memory(Some(store.live_changes(now))),
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

/// Follows the change log; see [`Store::log_reader`].
// One reader exists per replica: not worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LogReader {
    /// Over a dedicated Redis connection.
    Redis(RedisLogReader),
    /// Over the memory store's log.
    Memory(MemoryLogReader),
}

impl LogReader {
    /// The entries after `cursor`, at most `max`, waiting up to `wait` for
    /// the first one. An empty result means none arrived in time. Never
    /// skips an entry silently: when entries after `cursor` were trimmed
    /// from the log before they could be read, the answer is
    /// [`Error::LogGap`], and the reader must reload.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::LogGap`]; [`Error::Corrupt`] for an
    /// unreadable entry.
    pub async fn read_after(
        &mut self,
        cursor: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LoggedChange>, Error> {
        match self {
            LogReader::Redis(reader) => reader.read_after(cursor, max, wait).await,
            LogReader::Memory(reader) => reader.read_after(cursor, max, wait).await,
        }
    }
}

/// Pages of live records; see [`Store::scan_live`].
// One scan runs at a time per replica: not worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LiveScan {
    /// Walking Redis's expiry indexes with `ZSCAN`.
    Redis(RedisLiveScan),
    /// The memory store's records, in one page.
    Memory(Option<Vec<Change>>),
}

impl LiveScan {
    /// The next page, or `None` when the walk is done.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::Corrupt`] for an unreadable record.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Change>>, Error> {
        match self {
            LiveScan::Redis(scan) => scan.next_page().await,
            LiveScan::Memory(page) => Ok(page.take()),
        }
    }
}
