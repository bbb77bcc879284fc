//! The live set: every token revocation and cut-off whose record has not
//! expired, as digests, with when each may be forgotten. The filter is
//! built from it, and it is what a load produces.

use std::collections::{BTreeSet, HashMap};

use crate::filter::Digest;

/// One change as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FilterChange {
    /// A token's digest was revoked.
    Token(Digest),
    /// A claim value's digest got a cut-off.
    Cut(CutKey, i64),
}

/// A cut-off's claim, by its number in the hub's [`ClaimTable`].
pub(super) type ClaimId = u32;

/// What a cut-off is on: a claim and the digest of its value (for `sub`,
/// [`DigestKey::subject`](crate::filter::DigestKey::subject); for others,
/// [`DigestKey::claim`](crate::filter::DigestKey::claim)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct CutKey {
    pub(super) claim: ClaimId,
    pub(super) digest: Digest,
}

/// The claims cut-offs were seen on, numbered in the order first seen;
/// `sub` is always [`ClaimTable::SUBJECT`]. Numbers never change, so the
/// live set, the history and a load in progress share them.
pub(super) struct ClaimTable(Vec<Box<str>>);

impl Default for ClaimTable {
    fn default() -> Self {
        ClaimTable(vec![crate::store::SUBJECT_CLAIM.into()])
    }
}

impl ClaimTable {
    /// The number of `sub`.
    pub(super) const SUBJECT: ClaimId = 0;

    /// The number of `claim`, given one if it has none yet.
    pub(super) fn id(&mut self, claim: &str) -> ClaimId {
        match self.0.iter().position(|name| &**name == claim) {
            Some(index) => index as ClaimId,
            None => {
                self.0.push(claim.into());
                (self.0.len() - 1) as ClaimId
            }
        }
    }

    /// The name of claim number `id`.
    pub(super) fn name(&self, id: ClaimId) -> &str {
        &self.0[id as usize]
    }
}

/// Live token digests and cut-offs, each until its `keep_until`.
#[derive(Default)]
pub(super) struct LiveSet {
    /// Live token digests and when each expires.
    tokens: HashMap<Digest, i64>,
    /// Entries `tokens` had room for when last grown (see
    /// [`LiveSet::keep_tokens_half_full`]).
    tokens_room: usize,
    /// Live cut-offs: key → (not_before, keep_until).
    cutoffs: HashMap<CutKey, (i64, i64)>,
    /// How many of `cutoffs` are on another claim than `sub`.
    claim_cutoffs: usize,
    /// (keep_until, digest) of tokens and cut-offs, to expire them in order.
    token_expiry: BTreeSet<(i64, Digest)>,
    cutoff_expiry: BTreeSet<(i64, CutKey)>,
}

impl LiveSet {
    /// Records a change kept until `keep_until`. A later cut-off of the
    /// same claim value wins, and so does a later `keep_until`.
    pub(super) fn track(&mut self, change: FilterChange, keep_until: i64) {
        match change {
            FilterChange::Token(digest) => {
                self.keep_tokens_half_full();
                let entry = self.tokens.entry(digest).or_insert(keep_until);
                *entry = (*entry).max(keep_until);
                self.token_expiry.insert((keep_until, digest));
            }
            FilterChange::Cut(key, not_before) => {
                let entry = self.cutoffs.entry(key).or_insert_with(|| {
                    if key.claim != ClaimTable::SUBJECT {
                        self.claim_cutoffs += 1;
                    }
                    (not_before, keep_until)
                });
                *entry = (entry.0.max(not_before), entry.1.max(keep_until));
                self.cutoff_expiry.insert((keep_until, key));
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
        while let Some(&(keep_until, key)) = self.cutoff_expiry.first() {
            if keep_until > now {
                break;
            }
            self.cutoff_expiry.pop_first();
            if self.cutoffs.get(&key).map(|(_, until)| *until) == Some(keep_until) {
                self.cutoffs.remove(&key);
                if key.claim != ClaimTable::SUBJECT {
                    self.claim_cutoffs -= 1;
                }
            }
        }
        tokens_expired
    }

    /// Live token revocations.
    pub(super) fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Live cut-offs: (subject ones, the others).
    pub(super) fn cutoff_counts(&self) -> (usize, usize) {
        (self.cutoffs.len() - self.claim_cutoffs, self.claim_cutoffs)
    }

    /// The live token digests.
    pub(super) fn tokens(&self) -> impl Iterator<Item = &Digest> {
        self.tokens.keys()
    }

    /// The live cut-offs: (key, not_before).
    pub(super) fn cutoffs(&self) -> impl Iterator<Item = (CutKey, i64)> + '_ {
        self.cutoffs.iter().map(|(key, (nbf, _))| (*key, *nbf))
    }

    /// The cut-off in force on a key.
    pub(super) fn cutoff(&self, key: &CutKey) -> Option<i64> {
        self.cutoffs.get(key).map(|(not_before, _)| *not_before)
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

    fn key(claim: ClaimId, n: u8) -> CutKey {
        CutKey {
            claim,
            digest: digest(n),
        }
    }

    #[test]
    fn a_later_keep_until_or_cutoff_wins_and_expiry_honours_it() {
        let mut live = LiveSet::default();
        live.track(FilterChange::Token(digest(1)), 10);
        live.track(FilterChange::Token(digest(1)), 20);
        live.track(FilterChange::Cut(key(0, 2), 100), 10);
        live.track(FilterChange::Cut(key(0, 2), 50), 30);
        assert_eq!(live.cutoff(&key(0, 2)), Some(100));
        assert_eq!(live.expire(15), 0, "the extension keeps the token");
        assert_eq!(live.token_count(), 1);
        assert_eq!(live.cutoff_counts(), (1, 0));
        assert_eq!(live.expire(30), 1);
        assert_eq!((live.token_count(), live.cutoff_counts()), (0, (0, 0)));
    }

    #[test]
    fn the_same_digest_under_two_claims_is_two_cutoffs() {
        let mut claims = ClaimTable::default();
        let sid = claims.id("sid");
        assert_eq!(
            (claims.id("sub"), claims.id("sid"), claims.name(sid)),
            (0, sid, "sid")
        );
        let mut live = LiveSet::default();
        live.track(FilterChange::Cut(key(ClaimTable::SUBJECT, 7), 100), 50);
        live.track(FilterChange::Cut(key(sid, 7), 200), 60);
        assert_eq!(live.cutoff(&key(ClaimTable::SUBJECT, 7)), Some(100));
        assert_eq!(live.cutoff(&key(sid, 7)), Some(200));
        assert_eq!(live.cutoff_counts(), (1, 1));
        live.expire(55);
        assert_eq!(live.cutoff_counts(), (0, 1));
    }
}
