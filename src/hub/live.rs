//! The live set: every token revocation and subject cut-off whose record
//! has not expired, as digests, with when each may be forgotten. The filter
//! is built from it, and it is what a load produces.

use std::collections::{BTreeSet, HashMap};

use crate::filter::Digest;

/// One change as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FilterChange {
    /// A token's digest was revoked.
    Token(Digest),
    /// A subject's digest got a cut-off.
    Subject(Digest, i64),
}

/// Live token digests and subject cut-offs, each until its `keep_until`.
#[derive(Default)]
pub(super) struct LiveSet {
    /// Live token digests and when each expires.
    tokens: HashMap<Digest, i64>,
    /// Entries `tokens` had room for when last grown (see
    /// [`LiveSet::keep_tokens_half_full`]).
    tokens_room: usize,
    /// Live subject cut-offs: digest → (not_before, keep_until).
    subjects: HashMap<Digest, (i64, i64)>,
    /// (keep_until, digest) of tokens and subjects, to expire them in order.
    token_expiry: BTreeSet<(i64, Digest)>,
    subject_expiry: BTreeSet<(i64, Digest)>,
}

impl LiveSet {
    /// Records a change kept until `keep_until`. A later cut-off of the
    /// same subject wins, and so does a later `keep_until`.
    pub(super) fn track(&mut self, change: FilterChange, keep_until: i64) {
        match change {
            FilterChange::Token(digest) => {
                self.keep_tokens_half_full();
                let entry = self.tokens.entry(digest).or_insert(keep_until);
                *entry = (*entry).max(keep_until);
                self.token_expiry.insert((keep_until, digest));
            }
            FilterChange::Subject(digest, not_before) => {
                let entry = self
                    .subjects
                    .entry(digest)
                    .or_insert((not_before, keep_until));
                *entry = (entry.0.max(not_before), entry.1.max(keep_until));
                self.subject_expiry.insert((keep_until, digest));
            }
        }
    }

    /// Grows `tokens` to twice the room its entries need before it is half
    /// full. Under steady churn (as many expiring as arriving) a table
    /// fuller than half cannot clear the markers its removals leave in
    /// place, so it doubles, long after the live set stopped growing: in a
    /// soak, RSS stepped up minutes after warm-up. Kept at most half full it
    /// reaches its size with the live set and then only rehashes in place.
    fn keep_tokens_half_full(&mut self) {
        let wanted = 2 * (self.tokens.len() + 1);
        if wanted > self.tokens_room {
            self.tokens.reserve(wanted - self.tokens.len());
            self.tokens_room = self.tokens.capacity();
        }
    }

    /// Drops tokens and cut-offs whose records have expired by `now`;
    /// returns how many tokens left (they stay in the filter until it is
    /// rebuilt).
    pub(super) fn expire(&mut self, now: i64) -> usize {
        let mut tokens_expired = 0;
        while let Some(&(keep_until, digest)) = self.token_expiry.first() {
            if keep_until > now {
                break;
            }
            self.token_expiry.pop_first();
            // An extended revocation has a later entry; only the last counts.
            if self.tokens.get(&digest) == Some(&keep_until) {
                self.tokens.remove(&digest);
                tokens_expired += 1;
            }
        }
        while let Some(&(keep_until, digest)) = self.subject_expiry.first() {
            if keep_until > now {
                break;
            }
            self.subject_expiry.pop_first();
            if self.subjects.get(&digest).map(|(_, until)| *until) == Some(keep_until) {
                self.subjects.remove(&digest);
            }
        }
        tokens_expired
    }

    /// Live token revocations.
    pub(super) fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Live subject cut-offs.
    pub(super) fn subject_count(&self) -> usize {
        self.subjects.len()
    }

    /// The live token digests.
    pub(super) fn tokens(&self) -> impl Iterator<Item = &Digest> {
        self.tokens.keys()
    }

    /// The live cut-offs: (subject digest, not_before).
    pub(super) fn subjects(&self) -> impl Iterator<Item = (&Digest, i64)> {
        self.subjects
            .iter()
            .map(|(digest, (nbf, _))| (digest, *nbf))
    }

    /// The cut-off in force for a subject digest.
    pub(super) fn subject_cutoff(&self, digest: &Digest) -> Option<i64> {
        self.subjects.get(digest).map(|(not_before, _)| *not_before)
    }

    /// Entries the token table has room for now.
    #[cfg(test)]
    pub(super) fn tokens_capacity(&self) -> usize {
        self.tokens.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest([n; crate::filter::DIGEST_BYTES])
    }

    #[test]
    fn a_later_keep_until_or_cutoff_wins_and_expiry_honours_it() {
        let mut live = LiveSet::default();
        live.track(FilterChange::Token(digest(1)), 10);
        live.track(FilterChange::Token(digest(1)), 20);
        live.track(FilterChange::Subject(digest(2), 100), 10);
        live.track(FilterChange::Subject(digest(2), 50), 30);
        assert_eq!(live.subject_cutoff(&digest(2)), Some(100));
        assert_eq!(live.expire(15), 0, "the extension keeps the token");
        assert_eq!(live.token_count(), 1);
        assert_eq!(live.subject_count(), 1);
        assert_eq!(live.expire(30), 1);
        assert_eq!((live.token_count(), live.subject_count()), (0, 0));
    }
}
