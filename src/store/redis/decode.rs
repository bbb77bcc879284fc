//! Reading records back, from a record key or a change-log entry alike.
//!
//! A log entry holds its record's fields (the key table in the module doc
//! of `redis`) under the same names, plus `kind`, `iss` and `id`, which a
//! record has in its key instead; a token revocation's record and entry
//! hold them packed (`packed.rs`: the key's string value, the entry's
//! `rec` field) since packing version 2, as hashes and entry fields
//! before; an entry of format 2 holds all of it in its one field `rev`.
//! So one reader, [`Fields`], serves all of them: listings and lookups
//! read records, the audit trail reads whole entries ([`entry_record`]),
//! and followers read only what a change needs ([`entry_change`]): an
//! entry of format 1 holds it unpacked, one of format 2 in the head of
//! `rev` and the packed `until`.

use std::collections::HashMap;

use super::log::LogEntry;
use super::packed::{unpack, unpack_entry, Unpacked};
use crate::store::{Change, Cutoff, Error, Provenance, Record, Revocation, SUBJECT_CLAIM};

/// The field names, as the scripts write them.
pub(super) mod field {
    /// Log entries: `jti` ([`KIND_TOKEN`]), `sub` ([`KIND_SUBJECT`]) or
    /// `claim` ([`KIND_CLAIM`]).
    pub const KIND: &str = "kind";
    /// Log entries: the record's issuer.
    pub const ISSUER: &str = "iss";
    /// Log entries: the token's jti, or the cut-off's subject or value.
    pub const ID: &str = "id";
    /// Log entries of claim cut-offs: the claim (`sid`, ..., or `*`).
    pub const CLAIM: &str = "claim";
    /// Token revocations: the token's subject, when known.
    pub const SUBJECT: &str = "sub";
    /// Token revocations: the token's `exp`.
    pub const EXPIRES_AT: &str = "exp";
    /// Cut-offs: tokens issued earlier are revoked.
    pub const NOT_BEFORE: &str = "nbf";
    /// When the record may be forgotten.
    pub const KEEP_UNTIL: &str = "until";
    /// Provenance: when the change was made.
    pub const AT: &str = "at";
    /// Provenance: who made it.
    pub const BY: &str = "by";
    /// Provenance: why.
    pub const REASON: &str = "reason";
    /// Provenance: the caller's address.
    pub const SOURCE: &str = "from";
    /// Log entries of token revocations: the record packed (`packed.rs`),
    /// holding `sub`, `exp`, `at`, `by`, `reason` and `from`.
    pub const PACKED: &str = "rec";
    /// Log entries of token revocations of format 2, the entry's one
    /// field: the issuer, the jti and the record packed (`packed.rs`).
    pub const PACKED_ENTRY: &str = "rev";
    /// The `kind` of a token revocation's entry.
    pub const KIND_TOKEN: &str = "jti";
    /// The `kind` of a subject cut-off's entry.
    pub const KIND_SUBJECT: &str = "sub";
    /// The `kind` of the entry of a cut-off by another claim.
    pub const KIND_CLAIM: &str = "claim";
}

/// What a record or log entry is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    /// The revocation of (issuer, jti).
    Token {
        /// The token's `iss`.
        issuer: String,
        /// The token's `jti`.
        jti: String,
    },
    /// The cut-off on (issuer, claim, value).
    Cutoff {
        /// The tokens' `iss`.
        issuer: String,
        /// `sub`, another claim, or `*`.
        claim: String,
        /// The claim's value.
        value: String,
    },
}

/// Where fields are read from.
pub(super) trait FieldSource {
    /// The field's value; `None` when it is missing or not text.
    fn field(&self, name: &str) -> Option<String>;
}

/// A record hash, as `HGETALL` returns it.
impl FieldSource for HashMap<String, String> {
    fn field(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The fields of a record hash read with `HMGET`: each name asked for
/// ([`TOKEN_FIELDS`] or [`CUTOFF_FIELDS`]) beside its value, `None` when
/// the hash has no such field. A lookup asks for exactly the fields it
/// reads, so Redis sends no field names and the reply is parsed into
/// one vector rather than a map.
pub(super) struct Picked {
    names: &'static [&'static str],
    values: Vec<Option<String>>,
}

/// What [`Fields::revocation`] reads of a token revocation's hash.
pub(super) const TOKEN_FIELDS: [&str; 7] = [
    field::SUBJECT,
    field::EXPIRES_AT,
    field::KEEP_UNTIL,
    field::AT,
    field::BY,
    field::REASON,
    field::SOURCE,
];

/// What [`Fields::cutoff`] reads of a cut-off's hash.
pub(super) const CUTOFF_FIELDS: [&str; 6] = [
    field::NOT_BEFORE,
    field::KEEP_UNTIL,
    field::AT,
    field::BY,
    field::REASON,
    field::SOURCE,
];

impl Picked {
    /// `values` as `HMGET` answered for `names`, in that order.
    pub(super) fn new(names: &'static [&'static str], values: Vec<Option<String>>) -> Self {
        Self { names, values }
    }

    /// True when the hash has none of the fields: every record has
    /// `until`, so there is no record.
    pub(super) fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }
}

impl FieldSource for Picked {
    fn field(&self, name: &str) -> Option<String> {
        let at = self.names.iter().position(|asked| *asked == name)?;
        self.values.get(at)?.clone()
    }
}

/// A change-log entry.
impl FieldSource for LogEntry {
    fn field(&self, name: &str) -> Option<String> {
        self.get(name)
    }
}

/// A packed token revocation: a record key's value, or an entry's `rec`.
impl FieldSource for Unpacked<'_> {
    fn field(&self, name: &str) -> Option<String> {
        let value = match name {
            field::EXPIRES_AT => self.expires_at,
            field::KEEP_UNTIL => self.keep_until,
            field::AT => self.at,
            field::BY => self.by,
            field::SUBJECT => self.subject,
            field::SOURCE => self.source,
            field::REASON => self.reason,
            _ => return None,
        };
        Some(value.to_owned())
    }
}

/// A change-log entry with a packed record: its own fields, then the
/// packed ones.
struct PackedEntry<'a> {
    entry: &'a LogEntry,
    packed: Unpacked<'a>,
}

impl FieldSource for PackedEntry<'_> {
    fn field(&self, name: &str) -> Option<String> {
        self.entry.get(name).or_else(|| self.packed.field(name))
    }
}

/// A stored record or log entry being read back into a record.
pub(super) struct Fields<'a> {
    /// The record's key, or the entry's stream: named in [`Error::Corrupt`].
    key: &'a str,
    /// The entry's ID, for a log entry.
    entry_id: Option<&'a str>,
    source: &'a dyn FieldSource,
}

impl<'a> Fields<'a> {
    /// The fields of the record at `key`: a hash's, all of them
    /// (`HGETALL`) or those [`Picked`], or a packed value's.
    pub(super) fn stored(key: &'a str, fields: &'a dyn FieldSource) -> Self {
        Self {
            key,
            entry_id: None,
            source: fields,
        }
    }

    /// The fields of an entry of the stream `log`, read from `source`.
    fn entry(log: &'a str, entry: &'a LogEntry, source: &'a dyn FieldSource) -> Self {
        Self {
            key: log,
            entry_id: Some(&entry.id),
            source,
        }
    }

    /// The record named.
    pub(super) fn record(&self, named: Named) -> Result<Record, Error> {
        Ok(match named {
            Named::Token { issuer, jti } => Record::Token(self.revocation(&issuer, &jti)?),
            Named::Cutoff {
                issuer,
                claim,
                value,
            } => Record::Cutoff(self.cutoff(issuer, claim, value)?),
        })
    }

    /// A token revocation of (issuer, jti).
    pub(super) fn revocation(&self, issuer: &str, jti: &str) -> Result<Revocation, Error> {
        Ok(Revocation {
            issuer: issuer.to_owned(),
            jti: jti.to_owned(),
            subject: self.optional(field::SUBJECT),
            expires_at: self.number(field::EXPIRES_AT)?,
            keep_until: self.number(field::KEEP_UNTIL)?,
            provenance: self.provenance()?,
        })
    }

    /// The cut-off on (issuer, claim, value).
    pub(super) fn cutoff(
        &self,
        issuer: String,
        claim: String,
        value: String,
    ) -> Result<Cutoff, Error> {
        Ok(Cutoff {
            issuer,
            claim,
            value,
            not_before: self.number(field::NOT_BEFORE)?,
            keep_until: self.number(field::KEEP_UNTIL)?,
            provenance: self.provenance()?,
        })
    }

    fn provenance(&self) -> Result<Provenance, Error> {
        Ok(Provenance {
            at: self.number(field::AT)?,
            by: self.text(field::BY)?,
            reason: self.text(field::REASON)?,
            source: self.optional(field::SOURCE),
        })
    }

    /// What a log entry names.
    fn entry_head(&self) -> Result<Named, Error> {
        let issuer = self.text(field::ISSUER)?;
        let id = self.text(field::ID)?;
        Ok(match self.text(field::KIND)?.as_str() {
            field::KIND_TOKEN => Named::Token { issuer, jti: id },
            field::KIND_SUBJECT => Named::Cutoff {
                issuer,
                claim: SUBJECT_CLAIM.to_owned(),
                value: id,
            },
            field::KIND_CLAIM => Named::Cutoff {
                issuer,
                claim: self.text(field::CLAIM)?,
                value: id,
            },
            other => return Err(self.corrupt(format!("unknown kind {other:?}"))),
        })
    }

    /// A field added after the first layout: empty when missing.
    fn optional(&self, name: &str) -> String {
        self.source.field(name).unwrap_or_default()
    }

    fn text(&self, name: &str) -> Result<String, Error> {
        self.source
            .field(name)
            .ok_or_else(|| self.corrupt(format!("field `{name}` is missing")))
    }

    fn number(&self, name: &str) -> Result<i64, Error> {
        self.text(name)?
            .parse()
            .map_err(|_| self.corrupt(format!("field `{name}` is not an integer")))
    }

    fn corrupt(&self, detail: String) -> Error {
        let key = match self.entry_id {
            Some(id) => format!("{} {id}", self.key),
            None => self.key.to_owned(),
        };
        Error::Corrupt { key, detail }
    }
}

/// The token revocation of (issuer, jti) whose record at `key` holds the
/// packed `value`.
pub(super) fn packed_revocation(
    key: &str,
    value: &str,
    issuer: &str,
    jti: &str,
) -> Result<Revocation, Error> {
    let packed = unpack(value).map_err(|detail| Error::Corrupt {
        key: key.to_owned(),
        detail,
    })?;
    Fields::stored(key, &packed).revocation(issuer, jti)
}

/// The issuer, jti and packed revocation of `value`, the `rev` field of
/// `entry`, an entry of format 2 of the stream `log`.
fn read_packed_entry<'v>(
    log: &str,
    entry: &LogEntry,
    value: &'v str,
) -> Result<(&'v str, &'v str, Unpacked<'v>), Error> {
    unpack_entry(value).map_err(|detail| Fields::entry(log, entry, entry).corrupt(detail))
}

/// The record a log entry of the stream `log` wrote, as the audit trail
/// shows it.
pub(super) fn entry_record(log: &str, entry: &LogEntry) -> Result<Record, Error> {
    if let Some(value) = entry.get(field::PACKED_ENTRY) {
        let (issuer, jti, packed) = read_packed_entry(log, entry, &value)?;
        let revocation = Fields::entry(log, entry, &packed).revocation(issuer, jti)?;
        return Ok(Record::Token(revocation));
    }
    let Some(value) = entry.get(field::PACKED) else {
        let fields = Fields::entry(log, entry, entry);
        return fields.record(fields.entry_head()?);
    };
    let packed =
        unpack(&value).map_err(|detail| Fields::entry(log, entry, entry).corrupt(detail))?;
    let source = PackedEntry { entry, packed };
    let fields = Fields::entry(log, entry, &source);
    fields.record(fields.entry_head()?)
}

/// The change a log entry of the stream `log` made, as a follower applies
/// it: only the fields a change needs.
pub(super) fn entry_change(log: &str, entry: &LogEntry) -> Result<Change, Error> {
    if let Some(value) = entry.get(field::PACKED_ENTRY) {
        let (issuer, jti, packed) = read_packed_entry(log, entry, &value)?;
        return Ok(Change::Revoked {
            issuer: issuer.to_owned(),
            jti: jti.to_owned(),
            keep_until: Fields::entry(log, entry, &packed).number(field::KEEP_UNTIL)?,
        });
    }
    let fields = Fields::entry(log, entry, entry);
    let named = fields.entry_head()?;
    let keep_until = fields.number(field::KEEP_UNTIL)?;
    Ok(match named {
        Named::Token { issuer, jti } => Change::Revoked {
            issuer,
            jti,
            keep_until,
        },
        Named::Cutoff {
            issuer,
            claim,
            value,
        } => Change::Cut {
            issuer,
            claim,
            value,
            not_before: fields.number(field::NOT_BEFORE)?,
            keep_until,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> LogEntry {
        LogEntry::with_fields("7-1", fields)
    }

    #[test]
    fn an_entry_reads_as_the_record_and_the_change_it_wrote() {
        let entry = entry(&[
            ("kind", "jti"),
            ("iss", "https://issuer.test"),
            ("id", "j1"),
            ("sub", "alice"),
            ("exp", "100"),
            ("until", "160"),
            ("at", "40"),
            ("by", "ops"),
            ("reason", "lost"),
            ("from", "10.0.0.1:5000"),
        ]);
        let Record::Token(revocation) = entry_record("log", &entry).unwrap() else {
            panic!("a token revocation's entry");
        };
        assert_eq!(
            (revocation.jti.as_str(), revocation.subject.as_str()),
            ("j1", "alice")
        );
        assert_eq!((revocation.expires_at, revocation.keep_until), (100, 160));
        assert_eq!(revocation.provenance.source, "10.0.0.1:5000");
        assert_eq!(
            entry_change("log", &entry).unwrap(),
            Record::Token(revocation).change()
        );
    }

    #[test]
    fn a_packed_entry_reads_as_the_record_and_the_change_it_wrote() {
        let revocation = super::super::sample_revocation();
        let packed = super::super::packed::pack(&revocation);
        let entry = entry(&[
            ("kind", "jti"),
            ("iss", "https://issuer.test"),
            ("id", "j1"),
            ("until", "160"),
            ("rec", &packed),
        ]);
        let record = Record::Token(revocation);
        assert_eq!(entry_record("log", &entry).unwrap(), record);
        assert_eq!(entry_change("log", &entry).unwrap(), record.change());
        let damaged = self::entry(&[("kind", "jti"), ("iss", ""), ("id", "j"), ("rec", "9")]);
        let error = entry_record("log", &damaged).unwrap_err().to_string();
        assert_eq!(
            error,
            "corrupt record log 7-1: packed token revocation version \"9\" is not supported (expected 2)"
        );
    }

    #[test]
    fn an_entry_of_format_2_reads_as_the_record_and_the_change_it_wrote() {
        let revocation = super::super::sample_revocation();
        let packed = super::super::packed::pack(&revocation);
        // `<len>:<iss><len>:<jti><packed>`, as `packed.rs` documents it.
        let value = format!("19:https://issuer.test2:j1{packed}");
        let entry = entry(&[("rev", &value)]);
        let record = Record::Token(revocation);
        assert_eq!(entry_record("log", &entry).unwrap(), record);
        assert_eq!(entry_change("log", &entry).unwrap(), record.change());
        let damaged = self::entry(&[("rev", "19:https://issuer.test2:j1")]);
        let error = entry_change("log", &damaged).unwrap_err().to_string();
        assert_eq!(
            error,
            "corrupt record log 7-1: packed token revocation version \"\" is not supported (expected 2)"
        );
        assert!(entry_record("log", &damaged).is_err());
    }

    #[test]
    fn a_cutoff_entry_needs_no_provenance_to_be_applied() {
        let entry = entry(&[
            ("kind", "sub"),
            ("iss", ""),
            ("id", "bob"),
            ("nbf", "50"),
            ("until", "90"),
        ]);
        assert_eq!(
            entry_change("log", &entry).unwrap(),
            Change::Cut {
                issuer: String::new(),
                claim: "sub".to_owned(),
                value: "bob".to_owned(),
                not_before: 50,
                keep_until: 90,
            }
        );
        let missing = entry_record("log", &entry).unwrap_err().to_string();
        assert_eq!(missing, "corrupt record log 7-1: field `at` is missing");
    }

    #[test]
    fn a_claim_cutoff_entry_names_its_claim() {
        let claim_entry = entry(&[
            ("kind", "claim"),
            ("iss", "iss"),
            ("id", "s-1"),
            ("claim", "sid"),
            ("nbf", "50"),
            ("until", "90"),
            ("at", "40"),
            ("by", "ops"),
            ("reason", ""),
        ]);
        let Record::Cutoff(cutoff) = entry_record("log", &claim_entry).unwrap() else {
            panic!("a cut-off's entry");
        };
        assert_eq!(
            (cutoff.claim.as_str(), cutoff.value.as_str()),
            ("sid", "s-1")
        );
        let change = entry_change("log", &claim_entry).unwrap();
        assert_eq!(change, Record::Cutoff(cutoff).change());
        let nameless = entry(&[("kind", "claim"), ("iss", ""), ("id", "y"), ("until", "9")]);
        let error = entry_change("log", &nameless).unwrap_err().to_string();
        assert_eq!(error, "corrupt record log 7-1: field `claim` is missing");
    }

    #[test]
    fn an_unknown_kind_is_corrupt() {
        let entry = entry(&[("kind", "x"), ("iss", ""), ("id", "y")]);
        let error = entry_change("log", &entry).unwrap_err().to_string();
        assert_eq!(error, "corrupt record log 7-1: unknown kind \"x\"");
    }

    #[test]
    fn the_scripts_write_every_field_read_here() {
        use super::super::{cutoff, revoke};
        let scripts = [revoke::REVOKE_SCRIPT, cutoff::CUTOFF_SCRIPT].concat();
        // `exp` and a token's `sub` are read from records and entries
        // written before packing; packed ones hold them in `rec`. The
        // cut-offs' kinds are the cut-off script's arguments (`cutoff.rs`).
        for name in [
            field::KIND,
            field::ISSUER,
            field::ID,
            field::PACKED,
            field::PACKED_ENTRY,
            field::NOT_BEFORE,
            field::KEEP_UNTIL,
            field::AT,
            field::BY,
            field::REASON,
            field::SOURCE,
            field::KIND_TOKEN,
            field::CLAIM,
        ] {
            assert!(scripts.contains(&format!("'{name}'")), "{name}");
        }
    }
}
