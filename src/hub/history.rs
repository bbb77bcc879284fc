//! The delta history: the most recent changes with their cursors, so a
//! gateway that reconnects with a cursor still in it gets only the deltas
//! since, not a snapshot.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::live::{ClaimTable, CutKey, FilterChange};
use crate::filter::{Digest, DIGEST_BYTES};
use crate::pb::{self, filter_update::Update};

/// Most digests in one Delta frame (18 bytes each on the wire: well under
/// the 4 MiB message limit).
const MAX_DELTA_DIGESTS: usize = 100_000;

/// Recent changes, oldest first, each with the cursor right after it.
pub(super) struct History {
    entries: VecDeque<(String, FilterChange)>,
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

    /// Adds a change; the oldest is dropped past the limit.
    pub(super) fn remember(&mut self, cursor: String, change: FilterChange) {
        self.entries.push_back((cursor, change));
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
        let mut digests = DigestBuffer::default();
        let mut delta = pb::Delta::default();
        for (entry_cursor, change) in self.entries.range(first..) {
            match change {
                FilterChange::Token(digest) => digests.push(digest),
                FilterChange::Cut(key, not_before) => {
                    let cutoffs = (&mut delta.subjects, &mut delta.claims);
                    push_cutoff(cutoffs, claims, *key, *not_before);
                }
            }
            delta.cursor.clone_from(entry_cursor);
            if digests.len() >= MAX_DELTA_DIGESTS {
                delta.digests = digests.take();
                frames.push(update(Update::Delta(std::mem::take(&mut delta))));
            }
        }
        if !delta.cursor.is_empty() {
            delta.digests = digests.take();
            frames.push(update(Update::Delta(delta)));
        }
        Some(frames)
    }
}

/// A delta's digests, gathered in one buffer and handed out as slices of
/// it: one allocation per delta, shared by every subscriber it goes to.
#[derive(Default)]
pub(super) struct DigestBuffer(BytesMut);

impl DigestBuffer {
    /// Adds a digest.
    pub(super) fn push(&mut self, digest: &Digest) {
        self.0.extend_from_slice(&digest.0);
    }

    fn len(&self) -> usize {
        self.0.len() / DIGEST_BYTES
    }

    /// The digests gathered so far, leaving the buffer empty.
    pub(super) fn take(&mut self) -> Vec<Bytes> {
        let all = self.0.split().freeze();
        (0..all.len() / DIGEST_BYTES)
            .map(|i| all.slice(i * DIGEST_BYTES..(i + 1) * DIGEST_BYTES))
            .collect()
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

    fn token(n: u8) -> FilterChange {
        FilterChange::Token(Digest([n; DIGEST_BYTES]))
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
                assert_eq!(delta.digests.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
