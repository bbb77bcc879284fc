//! Snapshot framing: how a whole filter snapshot travels as `Snapshot`
//! parts on a Subscribe stream, and how the parts become one again.
//!
//! The hub [`split`]s its snapshot into parts, so that no message (and no
//! subscriber's encoder buffer, which keeps the size of the largest message
//! it encoded) grows with the filter. A gateway's [`Assembler`] checks the
//! parts as they arrive and [`join`]s them once the last one is in.
//!
//! # Parts
//!
//! - `part` counts from 0 to `parts - 1`; the parts of one snapshot are
//!   sent in order, back to back.
//! - Every part repeats `generation`, `cursor`, `digest_key`, `leeway`,
//!   `max_token_lifetime` and `parts`. [`join`] takes them from part 0; the
//!   [`Assembler`] refuses a part whose `generation` or `parts` differ.
//! - `filter` holds consecutive slices of the filter's bytes
//!   (`RevocationFilter::to_bytes`), at most `part_bytes` each: in order
//!   they are the whole filter.
//! - `subjects` holds the subject cut-offs, spread over the parts, about
//!   `part_bytes / 30` a part (a cut-off takes about 30 bytes encoded);
//!   `claims` the claim cut-offs likewise, about `part_bytes / 48` a part.
//! - There are as many parts as the largest of the three needs, and at
//!   least one, so a part may hold only filter bytes, only cut-offs, or
//!   neither (the one part of an empty snapshot).
//!
//! A whole snapshot is one `Snapshot` message of part 0 of 1: what
//! [`split`] takes and [`join`] gives back.

use bytes::BytesMut;

use crate::filter::{HEADER_BYTES, MAX_BITMAP_BYTES};
use crate::pb;

/// The newest stream protocol this build speaks (`SubscribeRequest.protocol`):
/// 1, token digests and subject cut-offs; 2, claim cut-offs too; 3, the
/// filter sliced by expiry (format 2, [`crate::filter::sliced`]). A server
/// of this build refuses gateways below it; a gateway of this build also
/// follows servers of protocol 2 (format 1 and `Delta.digests`).
pub const STREAM_PROTOCOL: u32 = 3;

/// Bytes a subject cut-off takes on the wire, roughly: a 16-byte digest,
/// an 8-byte time, and the protobuf tags and lengths around them.
const SUBJECT_WIRE_BYTES: usize = 30;
/// Bytes a claim cut-off takes on the wire, roughly: a subject cut-off's
/// and a claim name of up to 16 bytes.
const CLAIM_WIRE_BYTES: usize = 48;

/// Largest filter a snapshot may carry, header included: the most the
/// filter decoder accepts.
const MAX_SNAPSHOT_BYTES: u64 = MAX_BITMAP_BYTES + HEADER_BYTES as u64;

/// Why a part does not continue the snapshot being received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// A part out of order, of another generation or part count, or one
    /// that numbers itself beyond its own count.
    #[error("snapshot part {part} of {parts} (generation {generation}) does not continue the snapshot being received")]
    OutOfOrder {
        /// The part received.
        part: u32,
        /// Its declared number of parts.
        parts: u32,
        /// Its generation.
        generation: u64,
    },
    /// More filter bytes than any filter the decoder accepts.
    #[error("snapshot exceeds {MAX_BITMAP_BYTES} bytes")]
    TooLarge,
}

/// Cuts a whole snapshot into parts of at most `part_bytes` filter bytes
/// each (1 at least), cut-offs spread over them (see the module doc). The
/// parts share `whole`'s filter buffer: slicing `Bytes` copies nothing.
pub fn split(whole: pb::Snapshot, part_bytes: usize) -> Vec<pb::Snapshot> {
    let part_bytes = part_bytes.max(1);
    let subjects_per_part = (part_bytes / SUBJECT_WIRE_BYTES).max(1);
    let claims_per_part = (part_bytes / CLAIM_WIRE_BYTES).max(1);
    let filter_bytes = whole.filter.len();
    let parts = filter_bytes
        .div_ceil(part_bytes)
        .max(whole.subjects.len().div_ceil(subjects_per_part))
        .max(whole.claims.len().div_ceil(claims_per_part))
        .max(1);
    let mut subjects = whole.subjects.into_iter();
    let mut claims = whole.claims.into_iter();
    (0..parts)
        .map(|part| {
            let start = (part * part_bytes).min(filter_bytes);
            let end = ((part + 1) * part_bytes).min(filter_bytes);
            pb::Snapshot {
                generation: whole.generation,
                filter: whole.filter.slice(start..end),
                subjects: subjects.by_ref().take(subjects_per_part).collect(),
                claims: claims.by_ref().take(claims_per_part).collect(),
                cursor: whole.cursor.clone(),
                digest_key: whole.digest_key.clone(),
                part: part as u32,
                parts: parts as u32,
                leeway: whole.leeway,
                max_token_lifetime: whole.max_token_lifetime,
            }
        })
        .collect()
}

/// Puts parts back together: the filter slices and the cut-offs of every
/// part, in order, under part 0's fields. `None` without parts. Checks
/// nothing: the [`Assembler`] decides what belongs together.
pub fn join(parts: Vec<pb::Snapshot>) -> Option<pb::Snapshot> {
    let filter_bytes = parts.iter().map(|part| part.filter.len()).sum();
    let mut parts = parts.into_iter();
    let mut whole = parts.next()?;
    let mut filter = BytesMut::with_capacity(filter_bytes);
    filter.extend_from_slice(&whole.filter);
    for part in parts {
        filter.extend_from_slice(&part.filter);
        whole.subjects.extend(part.subjects);
        whole.claims.extend(part.claims);
    }
    whole.filter = filter.freeze();
    whole.part = 0;
    whole.parts = 1;
    Some(whole)
}

/// Collects the parts of a snapshot until it is complete.
///
/// A part that does not continue the snapshot, or a snapshot larger than
/// any filter, drops what was collected: the stream it came from is not to
/// be trusted, and the next snapshot starts again at part 0.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The parts received so far, in order.
    parts: Vec<pb::Snapshot>,
    /// Their filter bytes, checked against [`MAX_SNAPSHOT_BYTES`] as they
    /// arrive, so a hostile stream cannot make us buffer without bound.
    bytes: u64,
}

impl Assembler {
    /// Adds a part; returns the whole snapshot after the last one.
    ///
    /// # Errors
    /// [`PartError`] for a part that does not continue the snapshot, or
    /// filter bytes beyond the largest filter; the partial snapshot is
    /// dropped.
    pub fn push(&mut self, part: pb::Snapshot) -> Result<Option<pb::Snapshot>, PartError> {
        let continues = match self.parts.first() {
            None => part.part == 0,
            Some(first) => {
                part.generation == first.generation
                    && part.parts == first.parts
                    && part.part as usize == self.parts.len()
            }
        };
        if !continues || part.parts == 0 || part.part >= part.parts {
            let error = PartError::OutOfOrder {
                part: part.part,
                parts: part.parts,
                generation: part.generation,
            };
            self.reset();
            return Err(error);
        }
        self.bytes += part.filter.len() as u64;
        if self.bytes > MAX_SNAPSHOT_BYTES {
            self.reset();
            return Err(PartError::TooLarge);
        }
        let complete = part.part + 1 == part.parts;
        self.parts.push(part);
        if !complete {
            return Ok(None);
        }
        let parts = std::mem::take(&mut self.parts);
        self.reset();
        Ok(join(parts))
    }

    /// Forgets a partial snapshot (after a reconnect).
    pub fn reset(&mut self) {
        self.parts.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cutoff(n: u8) -> pb::SubjectCutoff {
        pb::SubjectCutoff {
            digest: vec![n; 16],
            not_before: i64::from(n),
        }
    }

    fn claim(n: u8) -> pb::ClaimCutoff {
        pb::ClaimCutoff {
            digest: vec![n; 16],
            not_before: i64::from(n),
            claim: "sid".into(),
        }
    }

    fn whole(filter_bytes: usize, subjects: u8) -> pb::Snapshot {
        pb::Snapshot {
            generation: 7,
            filter: (0..filter_bytes).map(|i| i as u8).collect(),
            subjects: (0..subjects).map(cutoff).collect(),
            claims: (0..subjects / 2).map(claim).collect(),
            cursor: "5-1".into(),
            digest_key: vec![9; 16],
            part: 0,
            parts: 1,
            leeway: 60,
            max_token_lifetime: 86_400,
        }
    }

    fn assemble(parts: Vec<pb::Snapshot>) -> Result<Option<pb::Snapshot>, PartError> {
        let mut assembler = Assembler::default();
        let mut last = Ok(None);
        for part in parts {
            last = assembler.push(part);
        }
        last
    }

    #[test]
    fn split_parts_join_back_into_the_whole() {
        for (filter_bytes, subjects, part_bytes) in [
            (0, 0, 16),
            (1_000, 0, 300),
            (1_000, 40, 60),
            (10, 25, 1_000),
        ] {
            let original = whole(filter_bytes, subjects);
            let parts = split(original.clone(), part_bytes);
            assert!(parts.iter().all(|p| p.filter.len() <= part_bytes.max(1)));
            assert!(parts.iter().all(|p| p.parts == parts.len() as u32));
            assert_eq!(assemble(parts), Ok(Some(original)));
        }
    }

    #[test]
    fn parts_follow_the_larger_of_filter_and_subjects() {
        assert_eq!(split(whole(0, 0), 16).len(), 1, "an empty snapshot");
        assert_eq!(split(whole(1_000, 0), 300).len(), 4);
        // 60 bytes a part: two cut-offs each.
        let parts = split(whole(10, 9), 60);
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[0].filter.len(), 10);
        assert_eq!(parts[4].subjects, [cutoff(8)]);
        // 96 bytes a part: three subject cut-offs or two claim cut-offs.
        let mut claims_only = whole(0, 0);
        claims_only.claims = (0..7).map(claim).collect();
        let parts = split(claims_only, 96);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[3].claims, [claim(6)]);
    }

    #[test]
    fn parts_that_do_not_continue_are_refused_and_reset() {
        let parts = split(whole(100, 0), 40);
        let mut assembler = Assembler::default();
        let out_of_order = assembler.push(parts[1].clone());
        assert!(matches!(
            out_of_order,
            Err(PartError::OutOfOrder { part: 1, .. })
        ));
        assert_eq!(assembler.push(parts[0].clone()), Ok(None));
        let mut other_generation = parts[1].clone();
        other_generation.generation = 8;
        assert!(assembler.push(other_generation).is_err());
        // Reset: the snapshot starts again at part 0.
        assert!(assembler.push(parts[1].clone()).is_err());
        let mut beyond = parts[0].clone();
        beyond.part = 3;
        assert!(Assembler::default().push(beyond).is_err());
        assert_eq!(join(Vec::new()), None);
    }
}
