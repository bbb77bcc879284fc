//! The confirm cache: the server's answers to bloom "maybe"s, kept until
//! the token expires, and never a stale "not revoked".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::filter::Digest;

/// Most confirmed answers cached; the cache is cleared when full.
const CONFIRM_CACHE_ENTRIES: usize = 100_000;

/// A confirm cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmed {
    /// A `Check` is under way, started with this ticket.
    Pending(u64),
    /// The server's answer, kept until `until` (unix seconds).
    Answer { revoked: bool, until: i64 },
}

/// Confirmed answers by token digest (the digest covers issuer and jti).
///
/// A "not revoked" answer is only as good as the moment the server read
/// it: a delta naming the token may arrive while the call is under way,
/// and caching the answer after that delta's [`ConfirmCache::forget`]
/// would allow a revoked token until it expires. So a call takes a ticket
/// first ([`ConfirmCache::begin`]); `forget` and `clear` drop tickets with
/// the answers, and a "not revoked" answer is cached only if its own ticket
/// is still there. "Revoked" is always cached: it cannot become wrong.
#[derive(Default)]
pub(crate) struct ConfirmCache {
    entries: Mutex<HashMap<Digest, Confirmed>>,
    next_ticket: AtomicU64,
}

impl ConfirmCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Confirmed>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, digest: &Digest, now: i64) -> Option<bool> {
        match self.lock().get(digest) {
            Some(Confirmed::Answer { revoked, until }) if *until > now => Some(*revoked),
            _ => None,
        }
    }

    /// Marks a `Check` of `digest` as under way; returns its ticket.
    pub(super) fn begin(&self, digest: Digest) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.insert(digest, Confirmed::Pending(ticket));
        ticket
    }

    /// Caches the answer of the call holding `ticket` (see the type doc).
    pub(super) fn put(&self, digest: Digest, ticket: u64, revoked: bool, until: i64) {
        let answer = Confirmed::Answer { revoked, until };
        if revoked {
            self.insert(digest, answer);
            return;
        }
        let mut cache = self.lock();
        if let Some(entry) = cache.get_mut(&digest) {
            if *entry == Confirmed::Pending(ticket) {
                *entry = answer;
            }
        }
    }

    fn insert(&self, digest: Digest, entry: Confirmed) {
        let mut cache = self.lock();
        if cache.len() >= CONFIRM_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, entry);
    }

    /// Drops the answers (and calls under way) for digests a delta reports
    /// as revoked.
    pub(super) fn forget<'a>(&self, digests: impl IntoIterator<Item = &'a [u8]>) {
        let mut cache = self.lock();
        if cache.is_empty() {
            return;
        }
        for bytes in digests {
            if let Ok(digest) = Digest::from_slice(bytes) {
                cache.remove(&digest);
            }
        }
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}
