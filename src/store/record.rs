//! The store's domain records, the same for every backend: what a
//! revocation and a cut-off hold, the change-log forms of them, and what the
//! store's calls answer.
//!
//! A cut-off revokes every token of an issuer whose claim has a value and
//! that was issued before a time: by `sub` (a subject cut-off, "log this
//! user out everywhere"), by another claim (`sid`, `client_id`, `azp`), or
//! by every token of the issuer (claim `*`, an empty value).

/// Who made a change, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// When the change was made (unix seconds).
    pub at: i64,
    /// The API key's name, or `self` for a token that revoked itself.
    pub by: String,
    /// The reason the caller gave; may be empty.
    pub reason: String,
    /// The caller's network address (`ip:port`), empty when unknown.
    pub source: String,
}

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The token's `iss` (empty when it has none).
    pub issuer: String,
    /// The token's `jti`.
    pub jti: String,
    /// The token's `sub` when known (empty when revoked by jti alone).
    pub subject: String,
    /// The token's `exp` (unix seconds).
    pub expires_at: i64,
    /// When the record may be forgotten: `expires_at` plus leeway.
    pub keep_until: i64,
    /// Who revoked it, when and why.
    pub provenance: Provenance,
}

/// The claim of subject cut-offs.
pub const SUBJECT_CLAIM: &str = "sub";

/// "Every token of `issuer` whose `claim` is `value` issued before
/// `not_before` is revoked."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoff {
    /// The tokens' `iss` (empty when they have none).
    pub issuer: String,
    /// The claim matched: `sub`, `sid`, `client_id`, `azp`, or `*` for
    /// every token of the issuer.
    pub claim: String,
    /// The claim's value; empty for `*`.
    pub value: String,
    /// Tokens whose `iat` is earlier are revoked (unix seconds). A cut-off
    /// of "now" is stored as the next second, so it covers every token of
    /// the second it was made in.
    pub not_before: i64,
    /// When the record may be forgotten: once every token it covers has
    /// expired (`not_before` + maximum token lifetime + leeway).
    pub keep_until: i64,
    /// Who made the cut-off, when and why.
    pub provenance: Provenance,
}

impl Cutoff {
    /// True for a cut-off by `sub`.
    pub fn is_subject(&self) -> bool {
        self.claim == SUBJECT_CLAIM
    }

    /// The record name: a subject cut-off's is `record_name(issuer,
    /// subject)`, as it always was; another claim's names the claim too,
    /// `record_name(issuer, record_name(claim, value))`.
    pub(crate) fn name(&self) -> String {
        cutoff_name(&self.issuer, &self.claim, &self.value)
    }
}

/// The record name of the cut-off on (issuer, claim, value); see
/// [`Cutoff::name`].
pub(crate) fn cutoff_name(issuer: &str, claim: &str, value: &str) -> String {
    if claim == SUBJECT_CLAIM {
        record_name(issuer, value)
    } else {
        record_name(issuer, &record_name(claim, value))
    }
}

/// A stored record of either kind, as listings and the audit trail show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A revoked token.
    Token(Revocation),
    /// A cut-off.
    Cutoff(Cutoff),
}

impl Record {
    /// Who made the change, when and why.
    pub fn provenance(&self) -> &Provenance {
        match self {
            Record::Token(r) => &r.provenance,
            Record::Cutoff(c) => &c.provenance,
        }
    }

    /// The issuer of the tokens it revokes.
    pub fn issuer(&self) -> &str {
        match self {
            Record::Token(r) => &r.issuer,
            Record::Cutoff(c) => &c.issuer,
        }
    }

    /// The subject of the tokens it revokes (empty when unknown, and for
    /// cut-offs by another claim).
    pub fn subject(&self) -> &str {
        match self {
            Record::Token(r) => &r.subject,
            Record::Cutoff(c) if c.is_subject() => &c.value,
            Record::Cutoff(_) => "",
        }
    }

    /// Its kind, as listings filter by it.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Token(_) => RecordKind::Token,
            Record::Cutoff(c) if c.is_subject() => RecordKind::Subject,
            Record::Cutoff(_) => RecordKind::Claim,
        }
    }

    /// The change-log form of the record.
    pub fn change(&self) -> Change {
        match self {
            Record::Token(r) => Change::Revoked {
                issuer: r.issuer.clone(),
                jti: r.jti.clone(),
                keep_until: r.keep_until,
            },
            Record::Cutoff(c) => Change::Cut {
                issuer: c.issuer.clone(),
                claim: c.claim.clone(),
                value: c.value.clone(),
                not_before: c.not_before,
                keep_until: c.keep_until,
            },
        }
    }
}

/// Which records a listing or the audit trail returns; empty fields and
/// zero times match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Only token revocations, only subject cut-offs, only other cut-offs,
    /// or all (`None`).
    pub kind: Option<RecordKind>,
    /// Only records of this subject.
    pub subject: String,
    /// Only records of this issuer.
    pub issuer: String,
    /// Only records made by this actor (API key name or `self`).
    pub actor: String,
    /// Only records made at or after this time (unix seconds; 0: any).
    pub since: i64,
    /// Only records made before this time (unix seconds; 0: any).
    pub until: i64,
}

/// The kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordKind {
    /// Token revocations.
    Token,
    /// Subject cut-offs.
    Subject,
    /// Cut-offs by another claim, and issuer-wide ones.
    Claim,
}

impl RecordFilter {
    /// True when `record` passes every condition.
    pub fn matches(&self, record: &Record) -> bool {
        let provenance = record.provenance();
        self.kind.is_none_or(|k| k == record.kind())
            && (self.subject.is_empty() || self.subject == record.subject())
            && (self.issuer.is_empty() || self.issuer == record.issuer())
            && (self.actor.is_empty() || self.actor == provenance.by)
            && provenance.at >= self.since
            && (self.until == 0 || provenance.at < self.until)
    }
}

/// One page of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<String>,
}

/// One change as the audit trail shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The change's position in the log.
    pub cursor: String,
    /// When the change was appended (unix milliseconds, store clock).
    pub logged_at_ms: i64,
    /// The record as the change wrote it; its provenance is the caller of
    /// this change (for an extension, the caller that extended it).
    pub record: Record,
}

/// The result of storing a revocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// True when no revocation of this (issuer, jti) existed before.
    pub newly_revoked: bool,
    /// True when it was refused, nothing stored: the caller already holds
    /// its quota of live revocations.
    pub over_quota: bool,
    /// Change-log position of the change, `None` when nothing changed.
    pub cursor: Option<String>,
}

/// The result of storing a cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoffOutcome {
    /// The cut-off in force afterwards (the stored one if it was later).
    pub not_before: i64,
    /// Change-log position of the change, `None` when nothing changed.
    pub cursor: Option<String>,
}

/// What the store knows about one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenStatus {
    /// The token's own revocation, if any.
    pub revocation: Option<Revocation>,
    /// The cut-offs in force on the claim values asked about.
    pub cutoffs: Vec<Cutoff>,
}

/// One change, as the change log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A token was revoked, or its revocation extended, until `keep_until`.
    Revoked {
        /// The token's issuer.
        issuer: String,
        /// The token's jti.
        jti: String,
        /// When the record may be forgotten.
        keep_until: i64,
    },
    /// A cut-off was set.
    Cut {
        /// The tokens' issuer.
        issuer: String,
        /// The claim matched (`sub`, `sid`, ..., or `*`).
        claim: String,
        /// The claim's value; empty for `*`.
        value: String,
        /// Tokens issued before this are revoked.
        not_before: i64,
        /// When the record may be forgotten.
        keep_until: i64,
    },
}

impl Change {
    /// When the change stops mattering.
    pub fn keep_until(&self) -> i64 {
        match self {
            Change::Revoked { keep_until, .. } | Change::Cut { keep_until, .. } => *keep_until,
        }
    }
}

/// A change with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// The change's cursor (opaque; ordered within one log).
    pub cursor: String,
    /// When the change was appended (unix milliseconds, store clock).
    pub logged_at_ms: i64,
    /// What changed.
    pub change: Change,
}

/// The newest end of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    /// Cursor of the newest entry, or the log's origin when it is empty:
    /// reading after it yields exactly the entries not yet written.
    pub head: String,
    /// The newest entries, oldest first.
    pub entries: Vec<LoggedChange>,
    /// The cursor just before `entries[0]` when `entries` is the whole log
    /// (so a reader at that cursor needs exactly these); `None` when older
    /// entries exist.
    pub start: Option<String>,
}

/// Numbers of live records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Token revocations not yet past `keep_until`.
    pub revocations: u64,
    /// Subject cut-offs not yet past `keep_until`.
    pub subject_cutoffs: u64,
    /// Other cut-offs (by another claim, or issuer-wide) not yet past
    /// `keep_until`.
    pub claim_cutoffs: u64,
}

/// The record name of an (issuer, id) pair, unambiguous for any issuer:
/// `<issuer byte length>:<issuer>:<id>`, e.g. `19:https://issuer.test:abc`.
pub(crate) fn record_name(issuer: &str, id: &str) -> String {
    // Allocated once at its length, the length written without `fmt`: a
    // name is built on every call.
    let mut decimal = itoa::Buffer::new();
    let length = decimal.format(issuer.len());
    let mut name = String::with_capacity(length.len() + issuer.len() + id.len() + 2);
    name.push_str(length);
    name.push(':');
    name.push_str(issuer);
    name.push(':');
    name.push_str(id);
    name
}

/// Splits a record name back into (issuer, id).
pub(crate) fn parse_record_name(name: &str) -> Option<(&str, &str)> {
    let (length, rest) = name.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let issuer = rest.get(..length)?;
    let id = rest.get(length..)?.strip_prefix(':')?;
    Some((issuer, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_parse_back() {
        for (issuer, id) in [("", "x"), ("https://a:b/c", "j:t:i"), ("é", "ü")] {
            assert_eq!(
                parse_record_name(&record_name(issuer, id)),
                Some((issuer, id))
            );
        }
        assert_eq!(parse_record_name("5:ab:c"), None);
        assert_eq!(parse_record_name("x:ab"), None);
    }

    #[test]
    fn record_names_do_not_collide_across_the_separator() {
        // ("a:b", "c") and ("a", "b:c") must name different records.
        assert_ne!(record_name("a:b", "c"), record_name("a", "b:c"));
        assert_eq!(record_name("", "x"), "0::x");
    }
}
