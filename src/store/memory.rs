//! The embedded store: the same semantics as Redis, in process memory, with
//! no durability. Used by `revocd serve` without `--redis-url` (a warning
//! says so) and by unit tests.
//!
//! Expired records are invisible to reads at once and are purged whenever
//! the map has doubled since the last purge, so memory follows the live
//! count with amortised O(1) cost per write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{
    cutoff_name, record_name, AuditEntry, Change, Counts, Cutoff, CutoffOutcome, Error, LogTail,
    LoggedChange, Page, Record, RecordFilter, RecordKind, Revocation, RevokeOutcome, TokenStatus,
};
use crate::filter::DigestKey;

/// An in-memory revocation store; clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    // A std mutex, not tokio's: it is never held across an `.await`, and
    // every critical section is a few map operations.
    state: Arc<Mutex<State>>,
    /// Wakes log readers when an entry is appended.
    appended: Arc<Notify>,
    /// Random per process: a memory store is never shared between replicas.
    digest_key: DigestKey,
}

#[derive(Debug, Default)]
struct State {
    revocations: ExpiringMap<Revocation>,
    /// Cut-offs of every claim, by [`Cutoff::name`] and kind (a subject
    /// cut-off's name may equal another claim's).
    cutoffs: ExpiringMap<Cutoff>,
    /// The change log, oldest first; the cursor is the sequence number.
    log: VecDeque<LogEntry>,
    /// Entries kept in `log`.
    log_retention: usize,
    /// Sequence number of the last change-log entry.
    last_sequence: u64,
}

/// One change-log entry: the record as the change wrote it.
#[derive(Debug)]
struct LogEntry {
    sequence: u64,
    logged_at_ms: i64,
    record: Record,
}

/// Follows a [`MemoryStore`]'s change log.
#[derive(Debug)]
pub struct MemoryLogReader {
    store: MemoryStore,
}

/// Records keyed by [`record_name`], each with the time it may be forgotten.
#[derive(Debug)]
struct ExpiringMap<T> {
    records: HashMap<String, (i64, T)>,
    /// Map size right after the last purge; a purge runs at twice this.
    purged_at_len: usize,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store keeping about `log_retention` change-log entries.
    pub fn new(log_retention: usize) -> Self {
        let state = State {
            log_retention: log_retention.max(1),
            ..State::default()
        };
        MemoryStore {
            state: Arc::new(Mutex::new(state)),
            appended: Arc::new(Notify::new()),
            digest_key: DigestKey::random(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a map half-updated
        // (each update is a single insert), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn revoke(
        &self,
        revocation: &Revocation,
        now: i64,
        live_quota: Option<u64>,
    ) -> RevokeOutcome {
        let mut state = self.lock();
        let name = record_name(&revocation.issuer, &revocation.jti);
        let previous = state.revocations.get(&name, now).cloned();
        if let Some(previous) = &previous {
            if previous.keep_until >= revocation.keep_until {
                return RevokeOutcome::default();
            }
        }
        if let (None, Some(quota)) = (&previous, live_quota) {
            // A linear count: the memory store serves trials, not fleets.
            let actor = &revocation.provenance.by;
            let held = state
                .revocations
                .live_records(now)
                .filter(|r| &r.provenance.by == actor)
                .count() as u64;
            if held >= quota {
                return RevokeOutcome {
                    over_quota: true,
                    ..RevokeOutcome::default()
                };
            }
        }
        // An extension keeps who revoked the token first; only the expiry moves.
        let newly_revoked = previous.is_none();
        let provenance = previous.map_or_else(|| revocation.provenance.clone(), |p| p.provenance);
        let stored = Revocation {
            provenance,
            ..revocation.clone()
        };
        state
            .revocations
            .insert(name, revocation.keep_until, stored, now);
        let cursor = state.append(Record::Token(revocation.clone()));
        self.appended.notify_waiters();
        RevokeOutcome {
            newly_revoked,
            over_quota: false,
            cursor: Some(cursor),
        }
    }

    pub(super) fn cut(&self, cutoff: &Cutoff, now: i64) -> CutoffOutcome {
        let mut state = self.lock();
        let name = memory_cutoff_name(&cutoff.issuer, &cutoff.claim, &cutoff.value);
        if let Some(current) = state.cutoffs.get(&name, now) {
            if current.not_before >= cutoff.not_before {
                return CutoffOutcome {
                    not_before: current.not_before,
                    cursor: None,
                };
            }
        }
        state
            .cutoffs
            .insert(name, cutoff.keep_until, cutoff.clone(), now);
        let cursor = state.append(Record::Cutoff(cutoff.clone()));
        self.appended.notify_waiters();
        CutoffOutcome {
            not_before: cutoff.not_before,
            cursor: Some(cursor),
        }
    }

    pub(super) fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        claims: &[(&str, &str)],
        now: i64,
    ) -> TokenStatus {
        let state = self.lock();
        let revocation = jti.and_then(|jti| state.revocations.get(&record_name(issuer, jti), now));
        let cutoffs = claims.iter().filter_map(|(claim, value)| {
            let name = memory_cutoff_name(issuer, claim, value);
            state.cutoffs.get(&name, now).cloned()
        });
        TokenStatus {
            revocation: revocation.cloned(),
            cutoffs: cutoffs.collect(),
        }
    }

    pub(super) fn digest_key(&self) -> DigestKey {
        self.digest_key.clone()
    }

    pub(super) fn log_tail(&self, count: usize) -> LogTail {
        let state = self.lock();
        let skip = state.log.len().saturating_sub(count);
        let entries: Vec<LoggedChange> = state.log.iter().skip(skip).map(logged).collect();
        // Sequences start at 1, so "0" is before the first entry ever.
        let first = state
            .log
            .get(skip)
            .map_or(state.last_sequence + 1, |entry| entry.sequence);
        LogTail {
            head: state.last_sequence.to_string(),
            entries,
            start: (first == 1).then(|| "0".to_owned()),
        }
    }

    /// Lists in (kind, record name) order; the page token is the last
    /// record's kind tag and name, so paging is exact under writes.
    pub(super) fn list(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
        now: i64,
    ) -> Result<Page<Record>, Error> {
        let after = match page_token {
            None => None,
            Some(token) => Some(parse_list_token(token).ok_or(Error::BadPageToken)?),
        };
        let state = self.lock();
        let tokens = state
            .revocations
            .live_named(now)
            .map(|(name, r)| (ListKey(RecordKind::Token, name), Record::Token(r.clone())));
        let subjects = state.cutoffs.live_named(now).map(|(name, c)| {
            let record = Record::Cutoff(c.clone());
            (ListKey(record.kind(), name), record)
        });
        let mut matching: Vec<(ListKey<'_>, Record)> = tokens
            .chain(subjects)
            .filter(|(key, record)| {
                after.as_ref().is_none_or(|after| key > &after.borrow()) && filter.matches(record)
            })
            .collect();
        matching.sort_by(|a, b| a.0.cmp(&b.0));
        let more = matching.len() > page_size;
        matching.truncate(page_size);
        let next = more
            .then(|| matching.last().map(|(key, _)| key.token()))
            .flatten();
        Ok(Page {
            items: matching.into_iter().map(|(_, record)| record).collect(),
            next,
        })
    }

    pub(super) fn audit(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<AuditEntry>, Error> {
        let after: u64 = match page_token {
            None => 0,
            Some(token) => token.parse().map_err(|_| Error::BadPageToken)?,
        };
        let state = self.lock();
        let mut items = Vec::new();
        for entry in state.log.iter().filter(|e| e.sequence > after) {
            if items.len() == page_size.max(1) {
                return Ok(Page {
                    next: items.last().map(|e: &AuditEntry| e.cursor.clone()),
                    items,
                });
            }
            if filter.matches(&entry.record) {
                items.push(AuditEntry {
                    cursor: entry.sequence.to_string(),
                    logged_at_ms: entry.logged_at_ms,
                    record: entry.record.clone(),
                });
            }
        }
        Ok(Page { items, next: None })
    }

    pub(super) fn log_reader(&self) -> MemoryLogReader {
        MemoryLogReader {
            store: self.clone(),
        }
    }

    pub(super) fn live_changes(&self, now: i64) -> Vec<Change> {
        let state = self.lock();
        let revocations = state
            .revocations
            .live_records(now)
            .map(|r| Change::Revoked {
                issuer: r.issuer.clone(),
                jti: r.jti.clone(),
                keep_until: r.keep_until,
            });
        let cutoffs = state
            .cutoffs
            .live_records(now)
            .map(|c| Record::Cutoff(c.clone()).change());
        revocations.chain(cutoffs).collect()
    }

    pub(super) fn counts(&self, now: i64) -> Counts {
        let state = self.lock();
        let (subject_cutoffs, claim_cutoffs) =
            state
                .cutoffs
                .live_records(now)
                .fold((0, 0), |(subjects, claims), c| match c.is_subject() {
                    true => (subjects + 1, claims),
                    false => (subjects, claims + 1),
                });
        Counts {
            revocations: state.revocations.live(now),
            subject_cutoffs,
            claim_cutoffs,
        }
    }
}

// === impl State ===

impl State {
    /// Appends an entry to the change log and returns its cursor.
    fn append(&mut self, record: Record) -> String {
        self.last_sequence += 1;
        self.log.push_back(LogEntry {
            sequence: self.last_sequence,
            logged_at_ms: crate::time::unix_now_ms(),
            record,
        });
        if self.log.len() > self.log_retention {
            self.log.pop_front();
        }
        self.last_sequence.to_string()
    }

    /// Up to `max` entries after `cursor` (an unparsable cursor reads from
    /// the start). [`Error::LogGap`] when the entry right after `cursor`
    /// was trimmed already.
    fn entries_after(&self, cursor: &str, max: usize) -> Result<Vec<LoggedChange>, Error> {
        let after: u64 = cursor.parse().unwrap_or(0);
        let oldest_kept = self.log.front().map_or(after + 1, |entry| entry.sequence);
        if oldest_kept > after + 1 {
            return Err(Error::LogGap {
                cursor: cursor.to_owned(),
            });
        }
        let start = self.log.partition_point(|entry| entry.sequence <= after);
        Ok(self.log.range(start..).take(max).map(logged).collect())
    }
}

/// The memory map's key of a cut-off: its record name, tagged with its
/// kind, since a subject cut-off's name may equal another claim's.
fn memory_cutoff_name(issuer: &str, claim: &str, value: &str) -> String {
    let tag = if claim == super::SUBJECT_CLAIM {
        's'
    } else {
        'c'
    };
    format!("{tag}{}", cutoff_name(issuer, claim, value))
}

fn logged(entry: &LogEntry) -> LoggedChange {
    LoggedChange {
        cursor: entry.sequence.to_string(),
        logged_at_ms: entry.logged_at_ms,
        change: entry.record.change(),
    }
}

/// Where a memory listing is: a record's kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ListKey<'a>(RecordKind, &'a str);

impl ListKey<'_> {
    fn token(&self) -> String {
        match self.0 {
            RecordKind::Token => format!("t:{}", self.1),
            RecordKind::Subject => format!("s:{}", self.1),
            RecordKind::Claim => format!("c:{}", self.1),
        }
    }
}

/// The owned form of a [`ListKey`], parsed from a page token.
struct OwnedListKey(RecordKind, String);

impl OwnedListKey {
    fn borrow(&self) -> ListKey<'_> {
        ListKey(self.0, &self.1)
    }
}

fn parse_list_token(token: &str) -> Option<OwnedListKey> {
    let (tag, name) = token.split_once(':')?;
    let kind = match tag {
        "t" => RecordKind::Token,
        "s" => RecordKind::Subject,
        "c" => RecordKind::Claim,
        _ => return None,
    };
    Some(OwnedListKey(kind, name.to_owned()))
}

// === impl MemoryLogReader ===

impl MemoryLogReader {
    pub(super) async fn read_after(
        &mut self,
        cursor: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LoggedChange>, Error> {
        // Register for the wake-up before looking, so an append between the
        // look and the wait is not missed.
        let appended = self.store.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let entries = self.store.lock().entries_after(cursor, max)?;
        if !entries.is_empty() {
            return Ok(entries);
        }
        let _ = tokio::time::timeout(wait, appended).await;
        self.store.lock().entries_after(cursor, max)
    }
}

// === impl ExpiringMap ===

impl<T> Default for ExpiringMap<T> {
    fn default() -> Self {
        Self {
            records: HashMap::new(),
            purged_at_len: 0,
        }
    }
}

impl<T> ExpiringMap<T> {
    fn get(&self, name: &str, now: i64) -> Option<&T> {
        match self.records.get(name) {
            Some((keep_until, record)) if *keep_until > now => Some(record),
            _ => None,
        }
    }

    fn insert(&mut self, name: String, keep_until: i64, record: T, now: i64) {
        self.records.insert(name, (keep_until, record));
        if self.records.len() >= (2 * self.purged_at_len).max(64) {
            self.records.retain(|_, (keep_until, _)| *keep_until > now);
            self.purged_at_len = self.records.len();
        }
    }

    fn live(&self, now: i64) -> u64 {
        self.live_records(now).count() as u64
    }

    fn live_named(&self, now: i64) -> impl Iterator<Item = (&str, &T)> {
        self.records
            .iter()
            .filter(move |(_, (keep_until, _))| *keep_until > now)
            .map(|(name, (_, record))| (name.as_str(), record))
    }

    fn live_records(&self, now: i64) -> impl Iterator<Item = &T> {
        self.records
            .values()
            .filter(move |(keep_until, _)| *keep_until > now)
            .map(|(_, record)| record)
    }
}

#[cfg(test)]
mod tests;
