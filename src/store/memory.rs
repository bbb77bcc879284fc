//! The embedded store: the same semantics as Redis, in process memory, with
//! no durability. Used by `revocd serve` without `--redis-url` (a warning
//! says so) and by unit tests.
//!
//! Expired records are invisible to reads at once and are purged whenever
//! the map has doubled since the last purge, so memory follows the live
//! count with amortised O(1) cost per write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    record_name, Counts, CutoffOutcome, Revocation, RevokeOutcome, SubjectCutoff, TokenStatus,
};

/// An in-memory revocation store; clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    // A std mutex, not tokio's: it is never held across an `.await`, and
    // every critical section is a few map operations.
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    revocations: ExpiringMap<Revocation>,
    cutoffs: ExpiringMap<SubjectCutoff>,
    /// Sequence number of the last change-log entry; the cursor.
    last_sequence: u64,
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
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a map half-updated
        // (each update is a single insert), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn revoke(&self, revocation: &Revocation, now: i64) -> RevokeOutcome {
        let mut state = self.lock();
        let name = record_name(&revocation.issuer, &revocation.jti);
        let previous = state.revocations.get(&name, now).cloned();
        if let Some(previous) = &previous {
            if previous.keep_until >= revocation.keep_until {
                return RevokeOutcome {
                    newly_revoked: false,
                    cursor: None,
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
        RevokeOutcome {
            newly_revoked,
            cursor: Some(state.append()),
        }
    }

    pub(super) fn revoke_subject(&self, cutoff: &SubjectCutoff, now: i64) -> CutoffOutcome {
        let mut state = self.lock();
        let name = record_name(&cutoff.issuer, &cutoff.subject);
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
        CutoffOutcome {
            not_before: cutoff.not_before,
            cursor: Some(state.append()),
        }
    }

    pub(super) fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        subject: Option<&str>,
        now: i64,
    ) -> TokenStatus {
        let state = self.lock();
        let revocation = jti.and_then(|jti| state.revocations.get(&record_name(issuer, jti), now));
        let cutoff =
            subject.and_then(|subject| state.cutoffs.get(&record_name(issuer, subject), now));
        TokenStatus {
            revocation: revocation.cloned(),
            cutoff: cutoff.cloned(),
        }
    }

    pub(super) fn counts(&self, now: i64) -> Counts {
        let state = self.lock();
        Counts {
            revocations: state.revocations.live(now),
            subject_cutoffs: state.cutoffs.live(now),
        }
    }
}

// === impl State ===

impl State {
    /// Appends an entry to the change log and returns its cursor.
    fn append(&mut self) -> String {
        self.last_sequence += 1;
        self.last_sequence.to_string()
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
        self.records
            .values()
            .filter(|(keep, _)| *keep > now)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Provenance;

    fn revocation(jti: &str, keep_until: i64) -> Revocation {
        Revocation {
            issuer: "iss".into(),
            jti: jti.into(),
            expires_at: keep_until - 60,
            keep_until,
            provenance: Provenance {
                at: 0,
                by: "test".into(),
                reason: String::new(),
            },
        }
    }

    #[test]
    fn expired_records_are_invisible_and_eventually_purged() {
        let store = MemoryStore::new();
        for i in 0..100 {
            store.revoke(&revocation(&format!("old-{i}"), 10), 0);
        }
        assert_eq!(store.counts(9).revocations, 100);
        assert_eq!(store.counts(10).revocations, 0);
        assert!(store
            .status("iss", Some("old-1"), None, 10)
            .revocation
            .is_none());
        // Writes after expiry trigger a purge once the map doubles.
        for i in 0..200 {
            store.revoke(&revocation(&format!("new-{i}"), 1_000), 20);
        }
        let held = store.lock().revocations.records.len();
        assert!(held < 300, "expired records were not purged: {held} held");
        assert_eq!(store.counts(20).revocations, 200);
    }

    #[test]
    fn a_later_expiry_extends_the_record_and_keeps_its_author() {
        let store = MemoryStore::new();
        let first = store.revoke(&revocation("a", 100), 0);
        assert!(first.newly_revoked);
        let mut later = revocation("a", 200);
        later.provenance.by = "someone-else".into();
        let second = store.revoke(&later, 0);
        assert!(!second.newly_revoked);
        assert!(second.cursor.is_some(), "an extension is a logged change");
        let stored = store
            .status("iss", Some("a"), None, 150)
            .revocation
            .unwrap();
        assert_eq!(stored.keep_until, 200);
        assert_eq!(stored.provenance.by, "test");
    }
}
