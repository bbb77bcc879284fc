//! The delta history: the most recent changes with their cursors, so a
//! gateway that reconnects with a cursor still in it gets only the deltas
//! since, not a snapshot.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::live::{ClaimTable, CutKey, FilterChange};
use crate::filter::{Digest, HEADER_BYTES};
use crate::pb::{self, filter_update::Update};

/// Most digests in one Delta frame (16 bytes each on the wire: well under
/// the 4 MiB message limit).
const MAX_DELTA_DIGESTS: usize = 100_000;

/// A filter opened in a slice: what a gateway needs to open the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SliceOpening {
    pub(super) slice: i64,
    pub(super) capacity: u64,
    pub(super) header: [u8; HEADER_BYTES],
}

/// One step of the filter's history: a change from the log, or a filter
/// opened for the change after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Change(FilterChange),
    Open(SliceOpening),
}

/// Recent steps, oldest first, each with the cursor right after the change
/// it belongs to (a filter opened for a change carries that change's
/// cursor, so a subscriber before the change gets both).
pub(super) struct History {
    entries: VecDeque<(String, Step)>,
    /// The cursor just before the first entry, when known: a subscriber
    /// there needs all of `entries`.
    start: Option<String>,
    /// Most entries kept.
    limit: usize,
}

impl History {
    /// An empty history keeping `limit` entries, starting after `start`
    /// when that is known.
    pub(super) fn new(limit: usize, start: Option<String>) -> Self {
        History {
            entries: VecDeque::new(),
            start,
            limit,
        }
    }

    /// Adds a step; the oldest is dropped past the limit.
    pub(super) fn remember(&mut self, cursor: String, step: Step) {
        self.entries.push_back((cursor, step));
        if self.entries.len() > self.limit {
            self.start = self.entries.pop_front().map(|(cursor, _)| cursor);
        }
    }

    /// True when a subscriber at `cursor` can be caught up from here.
    pub(super) fn holds(&self, cursor: &str) -> bool {
        self.position(cursor).is_some()
    }

    /// Index of the first entry after `cursor`, if the history holds
    /// everything after it.
    fn position(&self, cursor: &str) -> Option<usize> {
        if self.start.as_deref() == Some(cursor) {
            return Some(0);
        }
        self.entries
            .iter()
            .rposition(|(c, _)| c == cursor)
            .map(|i| i + 1)
    }

    /// Delta frames taking a subscriber from `cursor` to `current` (the
    /// cursor of the last change applied), or `None` if `cursor` is not in
    /// the history.
    pub(super) fn deltas_since(
        &self,
        cursor: &str,
        current: &str,
        claims: &ClaimTable,
    ) -> Option<Vec<pb::FilterUpdate>> {
        if cursor.is_empty() {
            return None;
        }
        if cursor == current {
            return Some(Vec::new());
        }
        let first = self.position(cursor)?;
        let mut frames = Vec::new();
        let mut delta = DeltaBuilder::default();
        for (entry_cursor, step) in self.entries.range(first..) {
            match *step {
                Step::Change(change) => delta.push(change, claims),
                Step::Open(opening) => delta.open(opening),
            }
            delta.cursor.clone_from(entry_cursor);
            if delta.digests >= MAX_DELTA_DIGESTS {
                frames.push(update(Update::Delta(std::mem::take(&mut delta).finish(0))));
            }
        }
        if !delta.cursor.is_empty() {
            frames.push(update(Update::Delta(delta.finish(0))));
        }
        Some(frames)
    }
}

/// A delta being gathered: digests by slice in one buffer per slice entry,
/// handed out as `Bytes` shared by every subscriber the delta goes to.
#[derive(Default)]
pub(super) struct DeltaBuilder {
    /// Cursor of the last change included.
    pub(super) cursor: String,
    slices: Vec<(i64, Option<pb::SliceOpen>, BytesMut)>,
    /// Index in `slices` of each slice's last entry.
    last: HashMap<i64, usize>,
    subjects: Vec<pb::SubjectCutoff>,
    claims: Vec<pb::ClaimCutoff>,
    digests: usize,
}

impl DeltaBuilder {
    /// Adds a change: a digest to its slice's last entry, or a cut-off.
    pub(super) fn push(&mut self, change: FilterChange, claims: &ClaimTable) {
        match change {
            FilterChange::Token { digest, slice } => self.push_digest(slice, &digest),
            FilterChange::Cut(key, not_before) => {
                push_cutoff(
                    (&mut self.subjects, &mut self.claims),
                    claims,
                    key,
                    not_before,
                );
            }
        }
    }

    /// Adds a cut-off as it is in force (a later one may be held already).
    pub(super) fn push_cutoff(&mut self, claims: &ClaimTable, key: CutKey, not_before: i64) {
        push_cutoff(
            (&mut self.subjects, &mut self.claims),
            claims,
            key,
            not_before,
        );
    }

    fn push_digest(&mut self, slice: i64, digest: &Digest) {
        let index = match self.last.get(&slice) {
            Some(&index) => index,
            None => self.new_entry(slice, None),
        };
        self.slices[index].2.extend_from_slice(&digest.0);
        self.digests += 1;
    }

    /// Adds a filter opened in a slice: a new entry, which the slice's
    /// next digests join.
    pub(super) fn open(&mut self, opening: SliceOpening) {
        let open = pb::SliceOpen {
            capacity: opening.capacity,
            header: opening.header.to_vec(),
        };
        self.new_entry(opening.slice, Some(open));
    }

    fn new_entry(&mut self, slice: i64, open: Option<pb::SliceOpen>) -> usize {
        self.slices.push((slice, open, BytesMut::new()));
        let index = self.slices.len() - 1;
        self.last.insert(slice, index);
        index
    }

    /// Digests gathered.
    pub(super) fn digests(&self) -> usize {
        self.digests
    }

    /// Cut-offs gathered.
    pub(super) fn cutoffs(&self) -> usize {
        self.subjects.len() + self.claims.len()
    }

    /// The delta, its newest change logged at `logged_at_ms`.
    pub(super) fn finish(self, logged_at_ms: i64) -> pb::Delta {
        pb::Delta {
            cursor: self.cursor,
            digests: Vec::new(),
            subjects: self.subjects,
            logged_at_ms,
            claims: self.claims,
            slices: self
                .slices
                .into_iter()
                .map(|(slice, open, digests)| pb::SliceDelta {
                    slice,
                    open,
                    digests: Bytes::from(digests),
                })
                .collect(),
        }
    }
}

/// A frame carrying `update`.
pub(super) fn update(update: Update) -> pb::FilterUpdate {
    pb::FilterUpdate {
        update: Some(update),
    }
}

/// Adds a cut-off as it travels to the subject cut-offs or to the claim
/// cut-offs of a frame.
pub(super) fn push_cutoff(
    (subjects, others): (&mut Vec<pb::SubjectCutoff>, &mut Vec<pb::ClaimCutoff>),
    claims: &ClaimTable,
    key: CutKey,
    not_before: i64,
) {
    let digest = key.digest.0.to_vec();
    match key.claim {
        ClaimTable::SUBJECT => subjects.push(pb::SubjectCutoff { digest, not_before }),
        claim => others.push(pb::ClaimCutoff {
            digest,
            not_before,
            claim: claims.name(claim).to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Step {
        Step::Change(FilterChange::Token {
            digest: Digest([n; crate::filter::DIGEST_BYTES]),
            slice: 1,
        })
    }

    #[test]
    fn a_subscriber_is_caught_up_only_from_a_cursor_still_held() {
        let mut history = History::new(2, Some("0".into()));
        assert!(history.holds("0"));
        for n in 1..=3u8 {
            history.remember(n.to_string(), token(n));
        }
        assert!(!history.holds("0"), "dropped past the limit");
        assert!(history.holds("1"), "the cursor before the oldest kept");
        assert_eq!(history.deltas_since("0", "3", &ClaimTable::default()), None);
        assert_eq!(
            history.deltas_since("3", "3", &ClaimTable::default()),
            Some(Vec::new())
        );
        let frames = history
            .deltas_since("1", "3", &ClaimTable::default())
            .expect("held");
        assert_eq!(frames.len(), 1);
        match &frames[0].update {
            Some(Update::Delta(delta)) => {
                assert_eq!(delta.cursor, "3");
                assert_eq!(delta.slices.len(), 1, "one slice");
                assert_eq!(delta.slices[0].digests.len(), 2 * 16);
            }
            other => panic!("{other:?}"),
        }
    }
}
