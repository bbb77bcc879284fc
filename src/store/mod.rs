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

use std::time::Duration;

use crate::filter::DigestKey;

pub use self::memory::{MemoryLogReader, MemoryStore};
pub use self::redis::{
    Durability, RedisLiveScan, RedisLogReader, RedisNodes, RedisStore, RedisStoreOptions,
    MAX_PARTITIONS,
};

/// Who made a change, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// When the change was made (unix seconds).
    pub at: i64,
    /// The API key's name, or `self` for a token that revoked itself.
    pub by: String,
    /// The reason the caller gave; may be empty.
    pub reason: String,
    /// The caller's network address (`ip:port`), empty when unknown.
    pub source: String,
}

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The token's `iss` (empty when it has none).
    pub issuer: String,
    /// The token's `jti`.
    pub jti: String,
    /// The token's `sub` when known (empty when revoked by jti alone).
    pub subject: String,
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
    /// Tokens whose `iat` is earlier are revoked (unix seconds). A cut-off
    /// of "now" is stored as the next second, so it covers every token of
    /// the second it was made in.
    pub not_before: i64,
    /// When the record may be forgotten: once every token it covers has
    /// expired (`not_before` + maximum token lifetime + leeway).
    pub keep_until: i64,
    /// Who made the cut-off, when and why.
    pub provenance: Provenance,
}

/// A stored record of either kind, as listings and the audit trail show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A revoked token.
    Token(Revocation),
    /// A subject cut-off.
    Subject(SubjectCutoff),
}

impl Record {
    /// Who made the change, when and why.
    pub fn provenance(&self) -> &Provenance {
        match self {
            Record::Token(r) => &r.provenance,
            Record::Subject(c) => &c.provenance,
        }
    }

    /// The issuer of the tokens it revokes.
    pub fn issuer(&self) -> &str {
        match self {
            Record::Token(r) => &r.issuer,
            Record::Subject(c) => &c.issuer,
        }
    }

    /// The subject of the tokens it revokes (empty when unknown).
    pub fn subject(&self) -> &str {
        match self {
            Record::Token(r) => &r.subject,
            Record::Subject(c) => &c.subject,
        }
    }

    /// The change-log form of the record.
    pub fn change(&self) -> Change {
        match self {
            Record::Token(r) => Change::Revoked {
                issuer: r.issuer.clone(),
                jti: r.jti.clone(),
                keep_until: r.keep_until,
            },
            Record::Subject(c) => Change::SubjectCut {
                issuer: c.issuer.clone(),
                subject: c.subject.clone(),
                not_before: c.not_before,
                keep_until: c.keep_until,
            },
        }
    }
}

/// Which records a listing or the audit trail returns; empty fields and
/// zero times match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Only token revocations, only subject cut-offs, or both (`None`).
    pub kind: Option<RecordKind>,
    /// Only records of this subject.
    pub subject: String,
    /// Only records of this issuer.
    pub issuer: String,
    /// Only records made by this actor (API key name or `self`).
    pub actor: String,
    /// Only records made at or after this time (unix seconds; 0: any).
    pub since: i64,
    /// Only records made before this time (unix seconds; 0: any).
    pub until: i64,
}

/// The two kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordKind {
    /// Token revocations.
    Token,
    /// Subject cut-offs.
    Subject,
}

impl RecordFilter {
    /// True when `record` passes every condition.
    pub fn matches(&self, record: &Record) -> bool {
        let kind = match record {
            Record::Token(_) => RecordKind::Token,
            Record::Subject(_) => RecordKind::Subject,
        };
        let provenance = record.provenance();
        self.kind.is_none_or(|k| k == kind)
            && (self.subject.is_empty() || self.subject == record.subject())
            && (self.issuer.is_empty() || self.issuer == record.issuer())
            && (self.actor.is_empty() || self.actor == provenance.by)
            && provenance.at >= self.since
            && (self.until == 0 || provenance.at < self.until)
    }
}

/// One page of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<String>,
}

/// One change as the audit trail shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The change's position in the log.
    pub cursor: String,
    /// When the change was appended (unix milliseconds, store clock).
    pub logged_at_ms: i64,
    /// The record as the change wrote it; its provenance is the caller of
    /// this change (for an extension, the caller that extended it).
    pub record: Record,
}

/// The result of storing a revocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// True when no revocation of this (issuer, jti) existed before.
    pub newly_revoked: bool,
    /// True when it was refused, nothing stored: the caller already holds
    /// its quota of live revocations.
    pub over_quota: bool,
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

/// One change, as the change log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A token was revoked, or its revocation extended, until `keep_until`.
    Revoked {
        /// The token's issuer.
        issuer: String,
        /// The token's jti.
        jti: String,
        /// When the record may be forgotten.
        keep_until: i64,
    },
    /// A subject cut-off was set.
    SubjectCut {
        /// The tokens' issuer.
        issuer: String,
        /// The tokens' subject.
        subject: String,
        /// Tokens issued before this are revoked.
        not_before: i64,
        /// When the record may be forgotten.
        keep_until: i64,
    },
}

impl Change {
    /// When the change stops mattering.
    pub fn keep_until(&self) -> i64 {
        match self {
            Change::Revoked { keep_until, .. } | Change::SubjectCut { keep_until, .. } => {
                *keep_until
            }
        }
    }
}

/// A change with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// The change's cursor (opaque; ordered within one log).
    pub cursor: String,
    /// When the change was appended (unix milliseconds, store clock).
    pub logged_at_ms: i64,
    /// What changed.
    pub change: Change,
}

/// The newest end of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    /// Cursor of the newest entry, or the log's origin when it is empty:
    /// reading after it yields exactly the entries not yet written.
    pub head: String,
    /// The newest entries, oldest first.
    pub entries: Vec<LoggedChange>,
    /// The cursor just before `entries[0]` when `entries` is the whole log
    /// (so a reader at that cursor needs exactly these); `None` when older
    /// entries exist.
    pub start: Option<String>,
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
}

impl From<::redis::ParsingError> for Error {
    fn from(error: ::redis::ParsingError) -> Self {
        Error::Backend(error.into())
    }
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

/// The record name of an (issuer, id) pair, unambiguous for any issuer:
/// `<issuer byte length>:<issuer>:<id>`, e.g. `19:https://issuer.test:abc`.
pub(crate) fn record_name(issuer: &str, id: &str) -> String {
    format!("{}:{issuer}:{id}", issuer.len())
}

/// Splits a record name back into (issuer, id).
pub(crate) fn parse_record_name(name: &str) -> Option<(&str, &str)> {
    let (length, rest) = name.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let issuer = rest.get(..length)?;
    let id = rest.get(length..)?.strip_prefix(':')?;
    Some((issuer, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_parse_back() {
        for (issuer, id) in [("", "x"), ("https://a:b/c", "j:t:i"), ("é", "ü")] {
            assert_eq!(
                parse_record_name(&record_name(issuer, id)),
                Some((issuer, id))
            );
        }
        assert_eq!(parse_record_name("5:ab:c"), None);
        assert_eq!(parse_record_name("x:ab"), None);
    }

    #[test]
    fn record_names_do_not_collide_across_the_separator() {
        // ("a:b", "c") and ("a", "b:c") must name different records.
        assert_ne!(record_name("a:b", "c"), record_name("a", "b:c"));
        assert_eq!(record_name("", "x"), "0::x");
    }
}
