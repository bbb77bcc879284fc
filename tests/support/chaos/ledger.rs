//! The ledger: every `Revoke` the load clients sent and what it answered.
//!
//! An OK answer puts the token in the acknowledged list, in the order the
//! answers arrived (so by acknowledgement time), with the change's cursor.
//! Any other answer makes the token *unknown*: it may or may not be stored,
//! and the verifier asks Redis after the phase. Unknown tokens found
//! stored join the list then (they are revocations from that moment on).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;
use revocd::tokens::Claims;
use tonic::Code;

use super::issuer::{self, Issuer};

/// A token of the run and its claims (so subscribers in this process can
/// be asked with `check_claims`, without verifying the JWT each time).
#[derive(Debug, Clone)]
pub struct Token {
    /// The signed JWT (HS256, the deployment's secret).
    pub jwt: String,
    /// Its claims, as a gateway would read them.
    pub claims: Claims,
    /// How the run revokes it.
    pub rule: Rule,
}

/// How a token of the run is revoked, and so which record keeps it revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// By its jti (`Revoke`, `RevokeBatch`).
    Jti,
    /// By a cut-off on its session (`RevokeClaim` of its `sid`).
    Session,
}

impl Token {
    /// A token of `issuer` for `subject` carrying `jti`, signed with the
    /// issuer's own key, issued now, valid an hour.
    pub fn of(issuer: Issuer, subject: &str, jti: &str) -> Token {
        Token::living(issuer, subject, jti, issuer::LIFETIME)
    }

    /// [`Token::of`] with `exp` `lifetime` seconds from now (negative:
    /// already past; the token and its revocation then last the leeway).
    pub fn living(issuer: Issuer, subject: &str, jti: &str, lifetime: i64) -> Token {
        let (jwt, claims) = issuer::token(issuer, issuer, subject, jti, lifetime);
        Token {
            jwt,
            claims,
            rule: Rule::Jti,
        }
    }

    /// A forgery: signed with issuer A's key, claiming issuer B.
    pub fn forged(subject: &str, jti: &str) -> Token {
        let (jwt, claims) = issuer::token(Issuer::A, Issuer::B, subject, jti, issuer::LIFETIME);
        Token {
            jwt,
            claims,
            rule: Rule::Jti,
        }
    }

    /// Whether the token will have expired `margin` from now (past `exp`
    /// and the leeway): then it is refused as expired and its revocation
    /// record is gone, so nothing is asked about it.
    pub fn expires_within(&self, margin: std::time::Duration) -> bool {
        let exp = self.claims.expires_at.unwrap_or(i64::MAX - issuer::LEEWAY);
        exp + issuer::LEEWAY <= revocd::time::unix_now() + margin.as_secs() as i64
    }

    /// The jti.
    pub fn jti(&self) -> &str {
        self.claims.jti.as_deref().unwrap_or_default()
    }
}

/// A position in one partition's change log: a Redis stream ID, ordered
/// as Redis orders them.
pub type StreamId = (u64, u64);

/// Where a change was appended: (partition, stream ID). Parsed from a
/// `Revoke` reply's cursor: `<id>` with one partition,
/// `<partition>:<id>` with several.
pub fn change_position(cursor: &str) -> Option<(usize, StreamId)> {
    match cursor.split_once(':') {
        Some((partition, id)) => Some((partition.parse().ok()?, stream_id(id)?)),
        None => Some((0, stream_id(cursor)?)),
    }
}

/// The highest stream ID seen in each partition of a subscriber's view
/// cursors (one stream ID per partition, joined by `,`): everything up to
/// it has reached the subscriber, even if its view later moved back.
#[derive(Debug, Default, Clone)]
pub struct HighWater(Vec<StreamId>);

impl HighWater {
    /// Raises the marks to a cursor just read.
    pub fn raise(&mut self, cursor: &str) {
        for (partition, id) in cursor.split(',').enumerate() {
            let Some(id) = stream_id(id) else {
                continue;
            };
            if self.0.len() <= partition {
                self.0.resize(partition + 1, (0, 0));
            }
            self.0[partition] = self.0[partition].max(id);
        }
    }

    /// Whether the change at `position` is at or below the mark.
    pub fn covers(&self, position: (usize, StreamId)) -> bool {
        self.0
            .get(position.0)
            .is_some_and(|held| *held >= position.1)
    }

    /// The mark of `partition`, if one was seen.
    pub fn get(&self, partition: usize) -> Option<StreamId> {
        self.0.get(partition).copied()
    }

    /// Whether `cursor` is below the mark in some partition.
    pub fn is_above(&self, cursor: &str) -> bool {
        let mut now = HighWater::default();
        now.raise(cursor);
        (0..self.0.len()).any(|p| now.0.get(p).copied().unwrap_or((0, 0)) < self.0[p])
    }
}

impl std::fmt::Display for HighWater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self
            .0
            .iter()
            .map(|(ms, seq)| format!("{ms}-{seq}"))
            .collect();
        write!(f, "{}", ids.join(","))
    }
}

/// Parses a Redis stream ID, `<ms>-<seq>`. With [`HighWater`], the only
/// place cursors are looked into: they are opaque to everything else.
pub fn stream_id(text: &str) -> Option<StreamId> {
    let (ms, seq) = text.trim().split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A revocation the run knows is stored.
#[derive(Debug)]
pub struct Entry {
    /// The revoked token.
    pub token: Token,
    /// When the OK arrived (or, for an unknown found stored, when Redis
    /// was read).
    pub acked_at: Instant,
    /// Its change's position, when the reply carried one.
    pub position: Option<(usize, StreamId)>,
    /// The phase in which it was acknowledged.
    pub phase: usize,
}

/// What one `Revoke` answered.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// OK, with the reply's cursor (empty when nothing was appended).
    Acked(String),
    /// An error status.
    Failed(Code, String),
}

/// One `Revoke` call.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The token sent.
    pub token: Token,
    /// The replica it was sent to (index).
    pub replica: usize,
    /// When the request left.
    pub sent: Instant,
    /// When the answer arrived.
    pub answered: Instant,
    /// The answer.
    pub outcome: Outcome,
}

/// The ledger, shared by the clients, the monitor and the verifier.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Ordered by `acked_at`: appended under the lock with the time read
    /// under it.
    acked: Vec<Arc<Entry>>,
    /// This phase's attempts, taken by the verifier.
    attempts: Vec<Attempt>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a `Revoke` call made in `phase`; an OK also goes to the
    /// acknowledged list. Returns the new entry for an OK.
    pub fn record(&self, phase: usize, attempt: Attempt) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        let entry = match &attempt.outcome {
            Outcome::Acked(cursor) => {
                let entry = Arc::new(Entry {
                    token: attempt.token.clone(),
                    acked_at: Instant::now(),
                    position: change_position(cursor),
                    phase,
                });
                inner.acked.push(Arc::clone(&entry));
                Some(entry)
            }
            Outcome::Failed(..) => None,
        };
        inner.attempts.push(attempt);
        entry
    }

    /// Adds a revocation written straight to Redis, not through a replica,
    /// as acknowledged once Redis answered, with its change's `cursor`.
    pub fn acknowledge(&self, phase: usize, token: Token, cursor: &str) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            token,
            acked_at: Instant::now(),
            position: change_position(cursor),
            phase,
        });
        self.lock().acked.push(Arc::clone(&entry));
        entry
    }

    /// Adds tokens found stored although their `Revoke` failed.
    pub fn settle(&self, phase: usize, tokens: impl IntoIterator<Item = Token>) {
        let mut inner = self.lock();
        for token in tokens {
            let entry = Entry {
                token,
                acked_at: Instant::now(),
                position: None,
                phase,
            };
            inner.acked.push(Arc::new(entry));
        }
    }

    /// Takes the attempts recorded since the last call.
    pub fn take_attempts(&self) -> Vec<Attempt> {
        std::mem::take(&mut self.lock().attempts)
    }

    /// How many acknowledged entries there are.
    pub fn len(&self) -> usize {
        self.lock().acked.len()
    }

    /// How many entries were acknowledged at or before `time`.
    pub fn acked_until(&self, time: Instant) -> usize {
        self.lock().acked.partition_point(|e| e.acked_at <= time)
    }

    /// The entries in `range` (indices into the acknowledged list).
    pub fn range(&self, range: std::ops::Range<usize>) -> Vec<Arc<Entry>> {
        let inner = self.lock();
        let end = range.end.min(inner.acked.len());
        inner.acked[range.start.min(end)..end].to_vec()
    }

    /// Up to `count` entries drawn at random (with repeats) from the first
    /// `below`.
    pub fn sample(&self, rng: &mut StdRng, below: usize, count: usize) -> Vec<Arc<Entry>> {
        let inner = self.lock();
        let below = below.min(inner.acked.len());
        if below == 0 {
            return Vec::new();
        }
        (0..count)
            .map(|_| Arc::clone(&inner.acked[rng.random_range(0..below)]))
            .collect()
    }

    /// When the earliest entry revoked by `rule` was acknowledged.
    pub fn first_acked(&self, rule: Rule) -> Option<Instant> {
        let inner = self.lock();
        let entry = inner.acked.iter().find(|e| e.token.rule == rule)?;
        Some(entry.acked_at)
    }

    /// Every entry.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.lock().acked.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_water_marks_cover_changes_per_partition() {
        assert_eq!(change_position("17-3"), Some((0, (17, 3))));
        assert_eq!(change_position("1:17-3"), Some((1, (17, 3))));
        assert_eq!(change_position(""), None);
        let mut held = HighWater::default();
        assert!(!held.covers((0, (1, 0))));
        held.raise("17-3");
        assert!(held.covers((0, (17, 3))));
        assert!(!held.covers((0, (17, 4))));
        assert!(!held.covers((1, (1, 0))));
        held.raise("16-0,17-4");
        assert!(
            held.covers((0, (17, 3))),
            "a lower cursor does not lower the mark"
        );
        assert!(held.covers((1, (17, 4))));
        assert!(!held.covers((1, (17, 5))));
        assert!(held.is_above("16-0,17-4"));
        assert!(!held.is_above("17-3,17-4"));
        assert_eq!(held.to_string(), "17-3,17-4");
    }
}
