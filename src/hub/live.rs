//! The live cut-offs, as digests, with when each may be forgotten; the
//! live token digests by slice, kept beside the sliced filter so that it
//! can be rebuilt from them; and the changes as the filter sees them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::filter::Digest;

/// One change as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FilterChange {
    /// A token's digest was revoked, kept in slice `slice`.
    Token {
        /// The token's digest.
        digest: Digest,
        /// Its slice in the filter.
        slice: i64,
    },
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

/// Live cut-offs, each until its `keep_until`.
#[derive(Default)]
pub(super) struct LiveSet {
    /// Live cut-offs: key → (not_before, keep_until).
    cutoffs: HashMap<CutKey, (i64, i64)>,
    /// How many of `cutoffs` are on another claim than `sub`.
    claim_cutoffs: usize,
    /// (keep_until, key) of cut-offs, to expire them in order.
    cutoff_expiry: BTreeSet<(i64, CutKey)>,
}

impl LiveSet {
    /// Records a cut-off kept until `keep_until`. A later cut-off of the
    /// same claim value wins, and so does a later `keep_until`.
    pub(super) fn track(&mut self, key: CutKey, not_before: i64, keep_until: i64) {
        let entry = self.cutoffs.entry(key).or_insert_with(|| {
            if key.claim != ClaimTable::SUBJECT {
                self.claim_cutoffs += 1;
            }
            (not_before, keep_until)
        });
        *entry = (entry.0.max(not_before), entry.1.max(keep_until));
        self.cutoff_expiry.insert((keep_until, key));
    }

    /// Drops cut-offs whose records have expired by `now`.
    pub(super) fn expire(&mut self, now: i64) {
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
    }

    /// Live cut-offs: (subject ones, the others).
    pub(super) fn cutoff_counts(&self) -> (usize, usize) {
        (self.cutoffs.len() - self.claim_cutoffs, self.claim_cutoffs)
    }

    /// The live cut-offs: (key, not_before).
    pub(super) fn cutoffs(&self) -> impl Iterator<Item = (CutKey, i64)> + '_ {
        self.cutoffs.iter().map(|(key, (nbf, _))| (*key, *nbf))
    }

    /// The cut-off in force on a key.
    pub(super) fn cutoff(&self, key: &CutKey) -> Option<i64> {
        self.cutoffs.get(key).map(|(not_before, _)| *not_before)
    }
}

/// The live token digests, by slice: what the sliced filter holds, kept
/// so that a filter grown into a long chain can be rebuilt compact (the
/// state module's "Compaction"). 16 bytes per live revocation.
#[derive(Default)]
pub(super) struct TokenDigests {
    slices: BTreeMap<i64, SliceDigests>,
}

/// The digests of one slice.
#[derive(Default)]
struct SliceDigests {
    /// In the order inserted; a digest inserted twice is here twice.
    digests: Vec<Digest>,
    /// How many of `digests` the slice's filter was built with (the rest
    /// went into filters opened since).
    built_with: usize,
}

impl TokenDigests {
    /// Records a digest in `slice`.
    pub(super) fn insert(&mut self, slice: i64, digest: Digest) {
        self.slices.entry(slice).or_default().digests.push(digest);
    }

    /// Digests recorded in `slice`: (all, since its filter was built).
    pub(super) fn counts(&self, slice: i64) -> (u64, u64) {
        self.slices.get(&slice).map_or((0, 0), |s| {
            let all = s.digests.len();
            (all as u64, (all - s.built_with) as u64)
        })
    }

    /// Digests recorded in each slice, duplicates included.
    pub(super) fn slice_counts(&self) -> impl Iterator<Item = usize> + '_ {
        self.slices.values().map(|s| s.digests.len())
    }

    /// The numbers of the slices holding digests, ascending.
    pub(super) fn slice_numbers(&self) -> Vec<i64> {
        self.slices.keys().copied().collect()
    }

    /// The digests of `slice`, sorted and without duplicates, for a filter
    /// built with all of them.
    pub(super) fn rebuilt(&mut self, slice: i64) -> &[Digest] {
        let slice = self.slices.entry(slice).or_default();
        slice.digests.sort_unstable();
        slice.digests.dedup();
        slice.digests.shrink_to_fit();
        slice.built_with = slice.digests.len();
        &slice.digests
    }

    /// Forgets the slices before `first_kept`.
    pub(super) fn drop_before(&mut self, first_kept: i64) {
        self.slices = self.slices.split_off(&first_kept);
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
        live.track(key(0, 2), 100, 10);
        live.track(key(0, 2), 50, 30);
        assert_eq!(live.cutoff(&key(0, 2)), Some(100));
        live.expire(15);
        assert_eq!(live.cutoff_counts(), (1, 0), "the extension keeps it");
        live.expire(30);
        assert_eq!(live.cutoff_counts(), (0, 0));
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
        live.track(key(ClaimTable::SUBJECT, 7), 100, 50);
        live.track(key(sid, 7), 200, 60);
        assert_eq!(live.cutoff(&key(ClaimTable::SUBJECT, 7)), Some(100));
        assert_eq!(live.cutoff(&key(sid, 7)), Some(200));
        assert_eq!(live.cutoff_counts(), (1, 1));
        live.expire(55);
        assert_eq!(live.cutoff_counts(), (0, 1));
    }
}
