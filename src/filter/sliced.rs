//! The filter sliced by expiry (format 2): one bloom filter, or a short
//! chain of them, per slice of the time until which revocations are kept,
//! so that expiry drops a slice whole instead of forcing a new filter on
//! every gateway.
//!
//! A token revocation is kept until the token's `exp` plus the server's
//! leeway, and goes into the slice of that time:
//! `(exp + leeway).div_euclid(slice_seconds)`. A gateway probes only the
//! slice of the token it checks (its verified `exp` and the leeway the
//! server announces pick it), so slicing adds no hash and no false
//! positives. A slice is forgotten once every revocation in it has
//! expired: when `(slice + 1) · slice_seconds <= now`.
//!
//! A slice starts with one filter, sized by the server from the rate it
//! observes. A slice that fills up is not rebuilt on the stream: the
//! server *opens* a further filter in it (announced with its header only,
//! as its bitmap is all zeros), and new digests go into the slice's newest
//! filter. A digest is in a slice when any of its filters holds it. Only a
//! new generation (a load, or a compaction of chained slices) sizes
//! slices afresh, and comes to gateways as a snapshot.
//!
//! # Format 2 (the `Snapshot.filter` bytes of stream protocol 3)
//!
//! All integers little-endian.
//!
//! | size | field |
//! |---|---|
//! | 1 | version, `2` |
//! | 4 | `slice_seconds`, u32, at least 1 |
//! | 4 | number of slices `S`, u32 |
//! | … | `S` slices, by ascending slice number |
//!
//! A slice:
//!
//! | size | field |
//! |---|---|
//! | 8 | slice number, i64 (`(exp + leeway).div_euclid(slice_seconds)`) |
//! | 4 | number of filters `F`, u32, at least 1 |
//! | … | `F` filters, oldest first |
//!
//! A filter:
//!
//! | size | field |
//! |---|---|
//! | 8 | entries it was sized for, u64 (informative) |
//! | 8 | length `N` of what follows, u64 |
//! | `N` | a format-1 bloom filter ([`RevocationFilter::from_bytes`]) |
//!
//! Format 1, one unsliced filter, is what servers of stream protocol 2 and
//! older send; it decodes as an unsliced [`SlicedFilter`] that every probe
//! checks whole, so a gateway of this version also follows older servers.

use std::sync::Arc;

use super::{DecodeError, Digest, RevocationFilter, FORMAT_VERSION, HEADER_BYTES};

/// The version byte of the sliced format.
pub const SLICED_VERSION: u8 = 2;
/// Most slices accepted when decoding (a day of one-second slices, and more).
pub const MAX_SLICES: u32 = 1 << 17;
/// Most filters accepted in one slice when decoding.
pub const MAX_FILTERS_PER_SLICE: u32 = 64;

/// One filter of a slice and the entries it was sized for.
#[derive(Clone, Debug)]
pub struct SliceFilter {
    /// Entries it was sized for.
    pub capacity: u64,
    /// The bloom filter, shared between the views that hold it unchanged.
    pub filter: Arc<RevocationFilter>,
}

/// The filters of one slice, oldest first, and the digests put into the
/// newest since it was opened.
#[derive(Clone, Debug, Default)]
pub struct Slice {
    filters: Vec<SliceFilter>,
    newest_inserts: u64,
    /// Digests put into it (by this process: 0 after decoding).
    entries: u64,
}

/// Revoked-token digests by expiry slice (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct SlicedFilter {
    /// Seconds of `exp` per slice; 0 for an unsliced format-1 filter, whose
    /// one slice (number 0) every probe checks.
    slice_seconds: u32,
    /// By ascending slice number.
    slices: Vec<(i64, Slice)>,
}

// === impl Slice ===

impl Slice {
    /// The slice's filters, oldest first.
    pub fn filters(&self) -> &[SliceFilter] {
        &self.filters
    }

    /// Bits in the slice's filters.
    pub fn bits(&self) -> u64 {
        self.filters.iter().map(|f| f.filter.bits()).sum()
    }

    /// True when the newest filter holds as many digests as it was sized
    /// for: the next digest deserves a new filter.
    pub fn is_full(&self) -> bool {
        self.filters
            .last()
            .is_none_or(|newest| self.newest_inserts >= newest.capacity)
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.filters.iter().any(|f| f.filter.contains(digest))
    }
}

// === impl SlicedFilter ===

impl SlicedFilter {
    /// An empty filter of `slice_seconds` (at least 1) per slice.
    pub fn new(slice_seconds: u32) -> Self {
        SlicedFilter {
            slice_seconds: slice_seconds.max(1),
            slices: Vec::new(),
        }
    }

    /// Seconds of `exp` per slice; 0 when unsliced.
    pub fn slice_seconds(&self) -> u32 {
        self.slice_seconds
    }

    /// The slice of a revocation kept until `keep_until`.
    #[inline]
    pub fn slice_of(&self, keep_until: i64) -> i64 {
        match self.slice_seconds {
            0 => 0,
            seconds => keep_until.div_euclid(i64::from(seconds)),
        }
    }

    /// The slices, by ascending number.
    pub fn slices(&self) -> impl Iterator<Item = (i64, &Slice)> {
        self.slices.iter().map(|(number, slice)| (*number, slice))
    }

    /// The slice numbered `number`, if open.
    pub fn slice(&self, number: i64) -> Option<&Slice> {
        self.position(number).ok().map(|i| &self.slices[i].1)
    }

    fn position(&self, number: i64) -> Result<usize, usize> {
        self.slices.binary_search_by_key(&number, |(n, _)| *n)
    }

    /// False when the token is certainly not in the filter: its digest,
    /// and when its revocation would be kept until (`exp` plus the
    /// server's leeway). A token without `exp` is looked for in every slice.
    #[inline]
    pub fn contains(&self, keep_until: Option<i64>, digest: &Digest) -> bool {
        match keep_until {
            Some(keep_until) if self.slice_seconds > 0 => self
                .position(self.slice_of(keep_until))
                .is_ok_and(|i| self.slices[i].1.contains(digest)),
            _ => self.slices.iter().any(|(_, slice)| slice.contains(digest)),
        }
    }

    /// Adds an empty filter sized for `capacity` to slice `number`, which
    /// is created if absent; digests go into it from now on.
    pub fn open(&mut self, number: i64, capacity: u64, filter: RevocationFilter) {
        let index = match self.position(number) {
            Ok(index) => index,
            Err(index) => {
                self.slices.insert(index, (number, Slice::default()));
                index
            }
        };
        let slice = &mut self.slices[index].1;
        slice.filters.push(SliceFilter {
            capacity,
            filter: Arc::new(filter),
        });
        slice.newest_inserts = 0;
    }

    /// Puts `slice` (taken from another filter of the same slice seconds)
    /// in as slice `number`, in place of any slice of that number.
    pub fn adopt(&mut self, number: i64, slice: Slice) {
        match self.position(number) {
            Ok(index) => self.slices[index].1 = slice,
            Err(index) => self.slices.insert(index, (number, slice)),
        }
    }

    /// Adds a digest to the newest filter of slice `number`; false when
    /// that slice is not open.
    pub fn insert(&mut self, number: i64, digest: &Digest) -> bool {
        let Ok(index) = self.position(number) else {
            return false;
        };
        let slice = &mut self.slices[index].1;
        let Some(newest) = slice.filters.last_mut() else {
            return false;
        };
        Arc::make_mut(&mut newest.filter).insert(digest);
        slice.newest_inserts += 1;
        slice.entries += 1;
        true
    }

    /// Forgets the slices whose revocations have all expired by `now`;
    /// returns how many went.
    pub fn drop_expired(&mut self, now: i64) -> usize {
        if self.slice_seconds == 0 {
            return 0;
        }
        let seconds = i64::from(self.slice_seconds);
        let before = self.slices.len();
        self.slices
            .retain(|(number, _)| number.saturating_add(1).saturating_mul(seconds) > now);
        before - self.slices.len()
    }

    /// Digests inserted into the slices held (a digest inserted twice
    /// counts twice; 0 for what was decoded).
    pub fn entries(&self) -> u64 {
        self.slices.iter().map(|(_, s)| s.entries).sum()
    }

    /// Bits in all filters.
    pub fn bits(&self) -> u64 {
        self.slices.iter().map(|(_, s)| s.bits()).sum()
    }

    /// The highest estimated false-positive rate of any slice (the sum of
    /// its filters' rates; see [`RevocationFilter::estimated_fp_rate`]).
    pub fn estimated_fp_rate(&self) -> f64 {
        self.slices
            .iter()
            .map(|(_, s)| s.filters.iter().map(|f| f.filter.estimated_fp_rate()).sum())
            .fold(0.0, f64::max)
    }

    /// The serialized filter: format 2 (see the module doc), or format 1
    /// for an unsliced filter (what it was decoded from).
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.slice_seconds == 0 {
            let filter = self.slices.first().and_then(|(_, s)| s.filters.first());
            return filter.map(|f| f.filter.to_bytes()).unwrap_or_default();
        }
        let size: usize = 9 + self
            .slices
            .iter()
            .map(|(_, s)| {
                12 + s
                    .filters
                    .iter()
                    .map(|f| 16 + f.filter.byte_len())
                    .sum::<usize>()
            })
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.push(SLICED_VERSION);
        out.extend_from_slice(&self.slice_seconds.to_le_bytes());
        out.extend_from_slice(&(self.slices.len() as u32).to_le_bytes());
        for (number, slice) in &self.slices {
            out.extend_from_slice(&number.to_le_bytes());
            out.extend_from_slice(&(slice.filters.len() as u32).to_le_bytes());
            for filter in &slice.filters {
                let bytes = filter.filter.to_bytes();
                out.extend_from_slice(&filter.capacity.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    /// Decodes format 2, or format 1 as an unsliced filter, checking every
    /// field (see the module doc).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field that is wrong.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&FORMAT_VERSION) => {
                let filter = RevocationFilter::from_bytes(bytes)?;
                let capacity = 0;
                let mut unsliced = SlicedFilter {
                    slice_seconds: 0,
                    slices: Vec::new(),
                };
                unsliced.open(0, capacity, filter);
                Ok(unsliced)
            }
            Some(&SLICED_VERSION) => Reader(&bytes[1..]).sliced(),
            Some(&other) => Err(DecodeError::UnknownVersion(other)),
            None => Err(DecodeError::Truncated { field: "version" }),
        }
    }
}

/// What remains to decode of format-2 bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, field: &'static str, len: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < len {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(field, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(field, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }

    fn sliced(mut self) -> Result<SlicedFilter, DecodeError> {
        let slice_seconds = self.u32("slice_seconds")?;
        if slice_seconds == 0 {
            return Err(DecodeError::Invalid("slice_seconds is 0"));
        }
        let count = self.u32("slice count")?;
        if count > MAX_SLICES {
            return Err(DecodeError::Invalid("more slices than accepted"));
        }
        let mut sliced = SlicedFilter::new(slice_seconds);
        for _ in 0..count {
            let number = self.u64("slice number")? as i64;
            if sliced
                .slices
                .last()
                .is_some_and(|(last, _)| *last >= number)
            {
                return Err(DecodeError::Invalid("slices not in ascending order"));
            }
            let filters = self.u32("filter count")?;
            if !(1..=MAX_FILTERS_PER_SLICE).contains(&filters) {
                return Err(DecodeError::Invalid(
                    "a slice's filter count is 0 or too many",
                ));
            }
            for _ in 0..filters {
                let capacity = self.u64("filter capacity")?;
                let len = self.u64("filter length")?;
                if len < HEADER_BYTES as u64 || len > self.0.len() as u64 {
                    return Err(DecodeError::Truncated { field: "filter" });
                }
                let filter =
                    RevocationFilter::from_bytes(self.take("filter", len as usize)?.to_vec())?;
                sliced.open(number, capacity, filter);
            }
        }
        if !self.0.is_empty() {
            return Err(DecodeError::Invalid("bytes after the last slice"));
        }
        Ok(sliced)
    }
}

#[cfg(test)]
mod tests;
