//! A gateway's copy of the server's filter, built from stream frames.
//!
//! A [`FilterView`] is immutable once built; each frame yields a new view
//! that readers pick up with one atomic load. So that a delta does not cost
//! a copy of the whole filter, a view is a shared *base* filter, sliced by
//! expiry ([`SlicedFilter`]), plus a small exact set of *recent* digests: a
//! delta copies only the recent set, and once that holds [`MERGE_AT`]
//! digests they are folded into a new base (a copy of the bitmaps they
//! touch, once per `MERGE_AT` revocations). A delta that opens a filter
//! folds them in first, so each digest lands in the filter the server put
//! it in.
//!
//! Slices whose revocations have all expired are dropped by the gateway's
//! own clock ([`FilterView::without_expired`]), [`PRUNE_MARGIN`] late.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::bounds::TokenBounds;
use crate::filter::{
    DecodeError, Digest, DigestKey, RevocationFilter, SlicedFilter, DIGEST_BYTES, MAX_BITMAP_BYTES,
};
use crate::pb;
use crate::snapshot::{self, PartError};

/// Recent digests kept beside the base filter before they are merged in.
pub const MERGE_AT: usize = 1_024;
/// Most distinct claims a view holds cut-offs of; a server has a handful.
pub const MAX_CLAIMS: usize = 32;
/// Longest claim name accepted from a server.
pub const MAX_CLAIM_NAME_BYTES: usize = 64;
/// Seconds after its end a slice is kept by a gateway: its clock, and the
/// server time it estimates, may run ahead of the time a check uses by
/// this much before a dropped slice could matter.
pub const PRUNE_MARGIN: i64 = 300;

/// Why a frame was refused; the view it would have changed stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The filter bytes or a digest do not decode.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// Snapshot parts out of order, of mixed generations, or too many.
    #[error("snapshot part {part} of {parts} (generation {generation}) does not continue the snapshot being received")]
    PartOutOfOrder {
        /// The part received.
        part: u32,
        /// Its declared number of parts.
        parts: u32,
        /// Its generation.
        generation: u64,
    },
    /// A snapshot larger than any filter this library accepts.
    #[error("snapshot exceeds {MAX_BITMAP_BYTES} bytes")]
    TooLarge,
    /// A delta before any snapshot.
    #[error("delta received before any snapshot")]
    NoSnapshot,
    /// Unsliced digests (`Delta.digests`, protocol 2) for a sliced filter:
    /// a replica of an older version resumed a view built by a newer one.
    #[error("delta of stream protocol 2 for a filter sliced by expiry; a snapshot is needed")]
    Unsliced,
    /// Digests for a slice the view has no filter in (it was built by
    /// another replica, or from a server of an older protocol).
    #[error("delta names slice {0}, which the filter held does not have; a snapshot is needed")]
    UnknownSlice(i64),
    /// Cut-offs of more claims than [`MAX_CLAIMS`], or a claim name that
    /// is empty or longer than [`MAX_CLAIM_NAME_BYTES`].
    #[error("claim cut-off of an unacceptable claim name or of too many claims ({0:?})")]
    BadClaim(String),
    /// A snapshot older than the filter held (from a lagging replica).
    #[error("the snapshot offered (cursor {offered}) is behind the filter held (cursor {held}); waiting for another replica")]
    Behind {
        /// The offered snapshot's cursor.
        offered: String,
        /// The held view's cursor.
        held: String,
    },
}

impl From<PartError> for FrameError {
    fn from(error: PartError) -> Self {
        match error {
            PartError::OutOfOrder {
                part,
                parts,
                generation,
            } => FrameError::PartOutOfOrder {
                part,
                parts,
                generation,
            },
            PartError::TooLarge => FrameError::TooLarge,
        }
    }
}

/// Hashes a [`Digest`] by its first 8 bytes: digests are uniformly random
/// already, so hashing them again would only cost time.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut prefix = [0u8; 8];
        let take = bytes.len().min(8);
        prefix[..take].copy_from_slice(&bytes[..take]);
        self.0 ^= u64::from_le_bytes(prefix);
    }
}

type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;
type DigestSet = HashSet<Digest, BuildHasherDefault<DigestHasher>>;

/// One immutable state of the filter as a gateway holds it.
#[derive(Clone)]
pub struct FilterView {
    generation: u64,
    cursor: String,
    digest_key: DigestKey,
    /// What the server keeps revocable, as its snapshot announced it.
    bounds: Option<TokenBounds>,
    base: Arc<SlicedFilter>,
    /// Digests not yet in `base`, with their slices, in arrival order.
    recent: Vec<(i64, Digest)>,
    /// The same digests, to look up.
    recent_set: DigestSet,
    /// Slices below this were dropped as expired.
    pruned_below: i64,
    subjects: Arc<DigestMap<i64>>,
    claims: Arc<ClaimCutoffs>,
}

/// Claim cut-offs in force: a few claims, each with many values' digests.
#[derive(Clone, Default)]
struct ClaimCutoffs(Vec<(Box<str>, DigestMap<i64>)>);

impl ClaimCutoffs {
    /// Adds cut-offs; for a digest held already the later one stays.
    fn extend(&mut self, cutoffs: &[pb::ClaimCutoff]) -> Result<(), FrameError> {
        for cutoff in cutoffs {
            let digest = Digest::from_slice(&cutoff.digest)?;
            let claim = cutoff.claim.as_str();
            let index = match self.0.iter().position(|(name, _)| &**name == claim) {
                Some(index) => index,
                None if self.0.len() < MAX_CLAIMS
                    && !claim.is_empty()
                    && claim.len() <= MAX_CLAIM_NAME_BYTES =>
                {
                    self.0.push((claim.into(), DigestMap::default()));
                    self.0.len() - 1
                }
                None => return Err(FrameError::BadClaim(claim.chars().take(80).collect())),
            };
            let entry = self.0[index].1.entry(digest).or_insert(cutoff.not_before);
            *entry = (*entry).max(cutoff.not_before);
        }
        Ok(())
    }
}

impl FilterView {
    /// Builds a view from a complete snapshot (all parts, in order).
    ///
    /// # Errors
    /// [`FrameError`] when the parts do not form a valid snapshot.
    pub fn from_snapshot(parts: &[pb::Snapshot]) -> Result<Self, FrameError> {
        let whole = snapshot::join(parts.to_vec()).ok_or(FrameError::NoSnapshot)?;
        Self::from_whole(whole)
    }

    /// Builds a view from a whole snapshot, its parts joined.
    fn from_whole(whole: pb::Snapshot) -> Result<Self, FrameError> {
        let mut subjects = DigestMap::default();
        for cutoff in &whole.subjects {
            let digest = Digest::from_slice(&cutoff.digest)?;
            let entry = subjects.entry(digest).or_insert(cutoff.not_before);
            *entry = (*entry).max(cutoff.not_before);
        }
        let mut claims = ClaimCutoffs::default();
        claims.extend(&whole.claims)?;
        Ok(FilterView {
            generation: whole.generation,
            digest_key: DigestKey::from_slice(&whole.digest_key)?,
            bounds: TokenBounds::announced(whole.leeway, whole.max_token_lifetime),
            base: Arc::new(SlicedFilter::from_bytes(whole.filter.into())?),
            cursor: whole.cursor,
            recent: Vec::new(),
            recent_set: DigestSet::default(),
            pruned_below: i64::MIN,
            subjects: Arc::new(subjects),
            claims: Arc::new(claims),
        })
    }

    /// The view after a delta. Copies the recent set (and the subject or
    /// claim cut-offs when the delta moves one); merges recent digests into
    /// a new base when there are [`MERGE_AT`] of them, or when the delta
    /// opens a filter.
    ///
    /// # Errors
    /// [`FrameError::Decode`] for a digest that is not 16 bytes or a filter
    /// header that does not decode; [`FrameError::UnknownSlice`] for
    /// digests of a slice the view lacks; [`FrameError::Unsliced`] for
    /// unsliced digests to a sliced view.
    pub fn with_delta(&self, delta: &pb::Delta) -> Result<Self, FrameError> {
        if !delta.digests.is_empty() && self.base.slice_seconds() != 0 {
            // They belong to no slice: kept anywhere, a probe would miss them.
            return Err(FrameError::Unsliced);
        }
        let mut next = self.clone();
        for digest in &delta.digests {
            let digest = Digest::from_slice(digest)?;
            next.add_recent(0, digest);
        }
        for entry in &delta.slices {
            next.apply_slice(entry)?;
        }
        if !delta.subjects.is_empty() {
            let subjects = Arc::make_mut(&mut next.subjects);
            for cutoff in &delta.subjects {
                let digest = Digest::from_slice(&cutoff.digest)?;
                let entry = subjects.entry(digest).or_insert(cutoff.not_before);
                *entry = (*entry).max(cutoff.not_before);
            }
        }
        if !delta.claims.is_empty() {
            Arc::make_mut(&mut next.claims).extend(&delta.claims)?;
        }
        if next.recent.len() >= MERGE_AT {
            next.merge_recent();
        }
        next.cursor.clone_from(&delta.cursor);
        Ok(next)
    }

    /// Opens the entry's filter, if any, then notes its digests.
    fn apply_slice(&mut self, entry: &pb::SliceDelta) -> Result<(), FrameError> {
        if entry.slice < self.pruned_below {
            // Expired here already: its tokens are judged expired.
            return Ok(());
        }
        if self.base.slice_seconds() == 0 {
            return Err(FrameError::UnknownSlice(entry.slice));
        }
        if let Some(open) = &entry.open {
            let filter = RevocationFilter::empty_from_header(&open.header)?;
            // Digests before the opening go into the filters before it.
            self.merge_recent();
            Arc::make_mut(&mut self.base).open(entry.slice, open.capacity, filter);
        } else if self.base.slice(entry.slice).is_none() {
            return Err(FrameError::UnknownSlice(entry.slice));
        }
        if !entry.digests.len().is_multiple_of(DIGEST_BYTES) {
            return Err(DecodeError::WrongSize {
                field: "slice digests",
                expected: DIGEST_BYTES,
                got: entry.digests.len() % DIGEST_BYTES,
            }
            .into());
        }
        for bytes in entry.digests.chunks_exact(DIGEST_BYTES) {
            self.add_recent(entry.slice, Digest::from_slice(bytes)?);
        }
        Ok(())
    }

    fn add_recent(&mut self, slice: i64, digest: Digest) {
        self.recent.push((slice, digest));
        self.recent_set.insert(digest);
    }

    /// Folds the recent digests into the base: copies of the filters they
    /// go into.
    fn merge_recent(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let base = Arc::make_mut(&mut self.base);
        for (slice, digest) in self.recent.drain(..) {
            // A slice dropped meanwhile took its digests' tokens with it.
            base.insert(slice, &digest);
        }
        self.recent_set.clear();
    }

    /// The view without the slices whose revocations all expired
    /// [`PRUNE_MARGIN`] or more before `now`; `None` when none did.
    pub fn without_expired(&self, now: i64) -> Option<Self> {
        let horizon = now - PRUNE_MARGIN;
        let seconds = i64::from(self.base.slice_seconds());
        let expired = self
            .base
            .slices()
            .next()
            .is_some_and(|(first, _)| seconds > 0 && (first + 1) * seconds <= horizon);
        if !expired {
            return None;
        }
        let mut next = self.clone();
        next.merge_recent();
        Arc::make_mut(&mut next.base).drop_expired(horizon);
        next.pruned_below = horizon.div_euclid(seconds);
        Some(next)
    }

    /// The view as one whole snapshot (recent digests merged into the
    /// filter): what [`FilterView::from_snapshot`] reads back as an equal
    /// view. The gateway keeps it on disk in this form.
    pub fn to_snapshot(&self) -> pb::Snapshot {
        let mut merged = self.clone();
        merged.merge_recent();
        let subjects = self
            .subjects
            .iter()
            .map(|(digest, not_before)| pb::SubjectCutoff {
                digest: digest.as_bytes().to_vec(),
                not_before: *not_before,
            })
            .collect();
        let claims = self
            .claims
            .0
            .iter()
            .flat_map(|(claim, cutoffs)| {
                cutoffs.iter().map(|(digest, not_before)| pb::ClaimCutoff {
                    digest: digest.as_bytes().to_vec(),
                    not_before: *not_before,
                    claim: claim.to_string(),
                })
            })
            .collect();
        let (leeway, max_token_lifetime) = self
            .bounds
            .map_or((0, 0), |b| (b.leeway, b.max_token_lifetime));
        pb::Snapshot {
            generation: self.generation,
            filter: merged.base.to_bytes().into(),
            subjects,
            cursor: self.cursor.clone(),
            digest_key: self.digest_key.as_bytes().to_vec(),
            part: 0,
            parts: 1,
            leeway,
            max_token_lifetime,
            claims,
        }
    }

    /// A view from one whole snapshot, as [`FilterView::to_snapshot`]
    /// writes it.
    ///
    /// # Errors
    /// [`FrameError`] when it is not a valid whole snapshot.
    pub fn from_whole_snapshot(whole: pb::Snapshot) -> Result<Self, FrameError> {
        if (whole.part, whole.parts) != (0, 1) {
            return Err(FrameError::NoSnapshot);
        }
        Self::from_whole(whole)
    }

    /// The generation this view belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Cursor of the last change applied.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// The deployment's digest key.
    pub fn digest_key(&self) -> &DigestKey {
        &self.digest_key
    }

    /// The server's leeway and longest token lifetime, `None` from a
    /// server that announces none (see [`crate::bounds`]).
    pub fn bounds(&self) -> Option<TokenBounds> {
        self.bounds
    }

    /// False when the token, by its digest and `exp`, is certainly not
    /// revoked by its own record; true when it may be (confirm with the
    /// server). Its slice is that of `exp` plus the server's leeway; a
    /// token without `exp` is looked for in every slice.
    #[inline]
    pub fn may_be_revoked(&self, digest: &Digest, exp: Option<i64>) -> bool {
        let keep_until = exp.zip(self.bounds).map(|(exp, b)| exp + b.leeway);
        self.recent_set.contains(digest) || self.base.contains(keep_until, digest)
    }

    /// The filter, sliced by expiry (recent digests not included).
    pub fn filter(&self) -> &SlicedFilter {
        &self.base
    }

    /// The cut-off of a subject digest, if one is in force.
    #[inline]
    pub fn subject_cutoff(&self, digest: &Digest) -> Option<i64> {
        self.subjects.get(digest).copied()
    }

    /// The claims that cut-offs are in force for (`*`: issuer-wide), in
    /// the order their first cut-off arrived.
    pub fn claims_cut(&self) -> impl Iterator<Item = &str> {
        self.claims.0.iter().map(|(claim, _)| &**claim)
    }

    /// The cut-off of a claim value's digest ([`DigestKey::claim`]), if
    /// one is in force.
    #[inline]
    pub fn claim_cutoff(&self, claim: &str, digest: &Digest) -> Option<i64> {
        let (_, cutoffs) = self.claims.0.iter().find(|(name, _)| &**name == claim)?;
        cutoffs.get(digest).copied()
    }
}

impl std::fmt::Debug for FilterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterView")
            .field("generation", &self.generation)
            .field("cursor", &self.cursor)
            .field("bits", &self.base.bits())
            .field("slices", &self.base.slices().count())
            .field("recent", &self.recent.len())
            .field("subjects", &self.subjects.len())
            .field("claims", &self.claims.0.len())
            .finish()
    }
}

/// Collects the parts of a snapshot until it is complete (see
/// [`snapshot::Assembler`]), then decodes it into a view.
#[derive(Debug, Default)]
pub struct SnapshotAssembler(snapshot::Assembler);

impl SnapshotAssembler {
    /// Adds a part; returns the complete snapshot's view after the last one.
    ///
    /// # Errors
    /// [`FrameError`] for a part that does not continue the snapshot, or a
    /// complete snapshot that does not decode; the partial one is dropped.
    pub fn push(&mut self, part: pb::Snapshot) -> Result<Option<FilterView>, FrameError> {
        match self.0.push(part)? {
            Some(whole) => FilterView::from_whole(whole).map(Some),
            None => Ok(None),
        }
    }

    /// Forgets a partial snapshot (after a reconnect).
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(
        filter: &RevocationFilter,
        key: &DigestKey,
        part_bytes: usize,
    ) -> Vec<pb::Snapshot> {
        let whole = pb::Snapshot {
            generation: 7,
            filter: filter.to_bytes().into(),
            cursor: "c1".into(),
            digest_key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        snapshot::split(whole, part_bytes)
    }

    #[test]
    fn a_chunked_snapshot_reassembles_and_deltas_apply() {
        let key = DigestKey::random();
        let mut filter = RevocationFilter::new(1_000, 0.001);
        filter.insert(&key.token("iss", "old"));
        let mut assembler = SnapshotAssembler::default();
        let parts = snapshot(&filter, &key, 500);
        assert!(parts.len() > 2);
        let mut view = None;
        for part in parts {
            view = assembler.push(part).unwrap();
        }
        let view = view.expect("complete after the last part");
        assert!(view.may_be_revoked(&key.token("iss", "old"), None));
        assert!(!view.may_be_revoked(&key.token("iss", "new"), None));

        let delta = pb::Delta {
            cursor: "c2".into(),
            digests: vec![key.token("iss", "new").0.to_vec().into()],
            subjects: vec![pb::SubjectCutoff {
                digest: key.subject("iss", "alice").0.to_vec(),
                not_before: 100,
            }],
            ..Default::default()
        };
        let next = view.with_delta(&delta).unwrap();
        assert!(next.may_be_revoked(&key.token("iss", "new"), None));
        assert_eq!(next.subject_cutoff(&key.subject("iss", "alice")), Some(100));
        assert_eq!(next.claims_cut().count(), 0);
        assert_eq!(next.cursor(), "c2");
        assert!(
            !view.may_be_revoked(&key.token("iss", "new"), None),
            "the old view is unchanged"
        );
    }

    #[test]
    fn recent_digests_merge_into_the_base() {
        let key = DigestKey::random();
        let filter = RevocationFilter::new(10_000, 0.001);
        let mut view = FilterView::from_snapshot(&snapshot(&filter, &key, 1 << 20)).unwrap();
        let digests: Vec<Digest> = (0..MERGE_AT + 10)
            .map(|i| key.token("iss", &i.to_string()))
            .collect();
        for chunk in digests.chunks(100) {
            let delta = pb::Delta {
                cursor: "c".into(),
                digests: chunk
                    .iter()
                    .map(|d| bytes::Bytes::copy_from_slice(&d.0))
                    .collect(),
                ..Default::default()
            };
            view = view.with_delta(&delta).unwrap();
        }
        assert!(view.recent.len() < MERGE_AT);
        assert!(digests.iter().all(|d| view.may_be_revoked(d, None)));
    }

    #[test]
    fn a_sliced_view_refuses_unsliced_digests_and_an_unsliced_one_slices() {
        let key = DigestKey::random();
        let mut sliced = SlicedFilter::new(60);
        sliced.open(5, 10, RevocationFilter::new(10, 0.001));
        let whole = pb::Snapshot {
            filter: sliced.to_bytes().into(),
            digest_key: key.as_bytes().to_vec(),
            leeway: 60,
            max_token_lifetime: 3_600,
            ..Default::default()
        };
        let view = FilterView::from_snapshot(&[whole]).unwrap();
        let legacy = pb::Delta {
            cursor: "c".into(),
            digests: vec![key.token("iss", "old-server").0.to_vec().into()],
            ..Default::default()
        };
        assert!(matches!(
            view.with_delta(&legacy),
            Err(FrameError::Unsliced)
        ));
        let into_slice = pb::Delta {
            cursor: "c".into(),
            slices: vec![pb::SliceDelta {
                slice: 5,
                open: None,
                digests: key.token("iss", "new").0.to_vec().into(),
            }],
            ..Default::default()
        };
        let next = view.with_delta(&into_slice).unwrap();
        assert!(next.may_be_revoked(&key.token("iss", "new"), Some(5 * 60 + 1 - 60)));
        let unsliced =
            FilterView::from_snapshot(&snapshot(&RevocationFilter::new(10, 0.001), &key, 1 << 20))
                .unwrap();
        assert!(matches!(
            unsliced.with_delta(&into_slice),
            Err(FrameError::UnknownSlice(5))
        ));
    }

    #[test]
    fn bad_frames_are_refused() {
        let key = DigestKey::random();
        let filter = RevocationFilter::new(1_000, 0.001);
        let mut parts = snapshot(&filter, &key, 500);
        let mut assembler = SnapshotAssembler::default();
        assert!(matches!(
            assembler.push(parts[1].clone()),
            Err(FrameError::PartOutOfOrder { .. })
        ));
        parts[0].digest_key = vec![1, 2, 3];
        parts.truncate(1);
        parts[0].parts = 1;
        assert!(matches!(
            assembler.push(parts[0].clone()),
            Err(FrameError::Decode(_))
        ));
        let view = FilterView::from_snapshot(&snapshot(&filter, &key, 1 << 20)).unwrap();
        let bad_delta = pb::Delta {
            cursor: "x".into(),
            digests: vec![vec![0; 15].into()],
            ..Default::default()
        };
        assert!(view.with_delta(&bad_delta).is_err());
    }

    #[test]
    fn claim_cutoffs_arrive_by_snapshot_and_delta_and_the_later_one_stays() {
        let key = DigestKey::random();
        let filter = RevocationFilter::new(1_000, 0.001);
        let cut = |claim: &str, value: &str, not_before: i64| pb::ClaimCutoff {
            digest: key.claim("iss", claim, value).0.to_vec(),
            not_before,
            claim: claim.into(),
        };
        let mut parts = snapshot(&filter, &key, 1 << 20);
        parts[0].claims = vec![cut("sid", "s-1", 50), cut("*", "", 40)];
        let view = FilterView::from_snapshot(&parts).unwrap();
        assert_eq!(view.claims_cut().collect::<Vec<_>>(), ["sid", "*"]);
        let sid = key.claim("iss", "sid", "s-1");
        assert_eq!(view.claim_cutoff("sid", &sid), Some(50));
        assert_eq!(view.claim_cutoff("client_id", &sid), None, "another claim");
        let delta = pb::Delta {
            cursor: "c2".into(),
            claims: vec![cut("sid", "s-1", 30), cut("client_id", "app", 70)],
            ..Default::default()
        };
        let next = view.with_delta(&delta).unwrap();
        assert_eq!(next.claim_cutoff("sid", &sid), Some(50), "never moved back");
        let app = key.claim("iss", "client_id", "app");
        assert_eq!(next.claim_cutoff("client_id", &app), Some(70));
        assert_eq!(
            view.claim_cutoff("client_id", &app),
            None,
            "the old view is unchanged"
        );
    }

    #[test]
    fn claim_cutoffs_of_unacceptable_claims_are_refused() {
        let key = DigestKey::random();
        let filter = RevocationFilter::new(1_000, 0.001);
        let view = FilterView::from_snapshot(&snapshot(&filter, &key, 1 << 20)).unwrap();
        let delta = |claims: Vec<String>| pb::Delta {
            cursor: "c".into(),
            claims: claims
                .into_iter()
                .map(|claim| pb::ClaimCutoff {
                    digest: vec![1; 16],
                    not_before: 1,
                    claim,
                })
                .collect(),
            ..Default::default()
        };
        let too_many = (0..=MAX_CLAIMS).map(|i| format!("c{i}")).collect();
        assert!(matches!(
            view.with_delta(&delta(too_many)),
            Err(FrameError::BadClaim(_))
        ));
        let too_long = vec!["x".repeat(MAX_CLAIM_NAME_BYTES + 1)];
        assert!(matches!(
            view.with_delta(&delta(too_long)),
            Err(FrameError::BadClaim(_))
        ));
        assert!(view.with_delta(&delta(vec![String::new()])).is_err());
        assert!(view
            .with_delta(&delta((0..MAX_CLAIMS).map(|i| format!("c{i}")).collect()))
            .is_ok());
    }
}
