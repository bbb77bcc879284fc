//! A token revocation packed into one string: the value of its record key
//! (a Redis string, so one `SET NX EXAT` creates the record with its
//! expiry) and the `rec` field of its change-log entry.
//!
//! # Bytes
//!
//! ```text
//! 2 <exp> <until> <at> <len>:<by><len>:<sub><len>:<from><len>:<reason>
//! ```
//!
//! - `2`: the packing's version. A token revocation's record was a hash
//!   (version 1, the key table of `redis`) before; [`unpack`] refuses any
//!   other first field by name, so a future version meets a clear error
//!   rather than a misread.
//! - `exp`, `until`, `at`: the token's `exp`, the record's keep-until time
//!   and the time of the change, in unix seconds, as decimal integers
//!   (a leading `-` allowed), separated by one space.
//! - then one space and the four texts `by`, `sub`, `from` and `reason`,
//!   each as its length in bytes (decimal), `:` and the UTF-8 bytes
//!   themselves, with nothing between them. A length prefix rather than a
//!   separator lets any text through unescaped.
//!
//! The revoke script reads and rewrites only the head, `2 <exp> <until> `,
//! with Lua patterns (`revoke.rs`): an extension keeps the rest, that is
//! the first revocation's provenance.
//!
//! # A change-log entry of format 2
//!
//! With `--log-entry-format 2` a token revocation's log entry is one field,
//! `rev`:
//!
//! ```text
//! <len>:<iss><len>:<jti><packed>
//! ```
//!
//! the head ([`entry_head`]: the issuer and the jti, each as its length in
//! bytes (decimal), `:` and the bytes), then the packed revocation exactly
//! as above, which the revoke script appends. An entry of
//! format 1 holds the same in five fields (`kind`, `iss`, `id`, `until`,
//! `rec`); a follower reads 4 values of the `XREAD` reply for an entry of
//! format 2 and 13 for one of format 1. [`unpack_entry`] reads it.

use crate::store::Revocation;

/// The packing's version, the value's first field.
pub(super) const VERSION: &str = "2";

/// The fields of a packed token revocation, as text borrowed from the
/// value, in the names the readers of `decode.rs` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unpacked<'a> {
    pub(super) expires_at: &'a str,
    pub(super) keep_until: &'a str,
    pub(super) at: &'a str,
    pub(super) by: &'a str,
    pub(super) subject: &'a str,
    pub(super) source: &'a str,
    pub(super) reason: &'a str,
}

/// Packs `revocation` (its issuer and jti are in the record's name, not
/// here): the value of its record key in Redis.
pub fn pack(revocation: &Revocation) -> String {
    let provenance = &revocation.provenance;
    let texts = [
        &provenance.by,
        &revocation.subject,
        &provenance.source,
        &provenance.reason,
    ];
    // Allocated once at its longest (20 bytes a decimal at most, and the
    // separators), the numbers written without `fmt`: every revocation is
    // packed, and `format!` here was 3,000 instructions of a `Revoke`.
    let longest = VERSION.len() + 3 * 21 + 1 + texts.iter().map(|t| 21 + t.len()).sum::<usize>();
    let mut value = String::with_capacity(longest);
    let mut decimal = itoa::Buffer::new();
    value.push_str(VERSION);
    for number in [revocation.expires_at, revocation.keep_until, provenance.at] {
        value.push(' ');
        value.push_str(decimal.format(number));
    }
    value.push(' ');
    for text in texts {
        value.push_str(decimal.format(text.len()));
        value.push(':');
        value.push_str(text);
    }
    value
}

/// Reads a packed value; why not, when it is no packed token revocation.
pub(super) fn unpack(value: &str) -> Result<Unpacked<'_>, String> {
    let mut head = value.splitn(5, ' ');
    let version = head.next().unwrap_or_default();
    if version != VERSION {
        return Err(format!(
            "packed token revocation version {version:?} is not supported (expected {VERSION})"
        ));
    }
    let mut number = |name: &str| {
        let text = head.next().unwrap_or_default();
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("packed `{name}` {text:?} is not an integer"));
        }
        Ok(text)
    };
    let (expires_at, keep_until, at) = (number("exp")?, number("until")?, number("at")?);
    let mut rest = head.next().unwrap_or_default();
    let unpacked = Unpacked {
        expires_at,
        keep_until,
        at,
        by: take_text(&mut rest, "by")?,
        subject: take_text(&mut rest, "sub")?,
        source: take_text(&mut rest, "from")?,
        reason: take_text(&mut rest, "reason")?,
    };
    if !rest.is_empty() {
        return Err(format!("{} bytes follow the packed fields", rest.len()));
    }
    Ok(unpacked)
}

/// The head of a change-log entry of format 2 (module doc) of the
/// revocation of (`issuer`, `jti`).
pub(super) fn entry_head(issuer: &str, jti: &str) -> String {
    let mut head = String::with_capacity(2 * 21 + issuer.len() + jti.len());
    let mut decimal = itoa::Buffer::new();
    for text in [issuer, jti] {
        head.push_str(decimal.format(text.len()));
        head.push(':');
        head.push_str(text);
    }
    head
}

/// Reads the `rev` field of a change-log entry of format 2 (module doc):
/// the issuer, the jti and the packed revocation.
pub(super) fn unpack_entry(value: &str) -> Result<(&str, &str, Unpacked<'_>), String> {
    let mut rest = value;
    let issuer = take_text(&mut rest, "iss")?;
    let jti = take_text(&mut rest, "jti")?;
    Ok((issuer, jti, unpack(rest)?))
}

/// Takes the text `<len>:<bytes>` named `name` off the front of `rest`.
fn take_text<'a>(rest: &mut &'a str, name: &str) -> Result<&'a str, String> {
    let (length, after) = rest
        .split_once(':')
        .ok_or_else(|| format!("packed `{name}` has no length"))?;
    let length: usize = length
        .parse()
        .map_err(|_| format!("packed `{name}` length {length:?} is not a number"))?;
    let text = after
        .get(..length)
        .ok_or_else(|| format!("packed `{name}` is shorter than its length {length}"))?;
    *rest = &after[length..];
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Provenance;

    fn revocation(by: &str, subject: &str, reason: &str) -> Revocation {
        Revocation {
            issuer: "https://issuer.test".to_owned(),
            jti: "j1".to_owned(),
            subject: subject.to_owned(),
            expires_at: 1_700_000_100,
            keep_until: 1_700_000_160,
            provenance: Provenance {
                at: -40,
                by: by.to_owned(),
                reason: reason.to_owned(),
                source: "10.0.0.1:5000".to_owned(),
            },
        }
    }

    #[test]
    fn the_bytes_are_as_documented() {
        let packed = pack(&revocation("ops", "alice", "lost laptop"));
        assert_eq!(
            packed,
            "2 1700000100 1700000160 -40 3:ops5:alice13:10.0.0.1:500011:lost laptop"
        );
    }

    #[test]
    fn any_text_round_trips_however_it_looks_like_the_format() {
        let awkward = ["", " ", "3:abc", "12:", "ünï 2 1 1", ":::", "a b\nc"];
        for by in awkward {
            for subject in awkward {
                for reason in awkward {
                    let original = revocation(by, subject, reason);
                    let packed = pack(&original);
                    let unpacked = unpack(&packed).unwrap();
                    assert_eq!(
                        (unpacked.by, unpacked.subject, unpacked.reason),
                        (by, subject, reason),
                        "{packed:?}"
                    );
                    assert_eq!(unpacked.source, original.provenance.source);
                    assert_eq!(
                        (unpacked.expires_at, unpacked.keep_until, unpacked.at),
                        ("1700000100", "1700000160", "-40")
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_or_unknown_values_are_refused_with_the_reason() {
        let good = pack(&revocation("ops", "alice", "lost"));
        let cases = [
            (
                "3 1 2 3 0:0:0:0:",
                "version \"3\" is not supported (expected 2)",
            ),
            ("exp 1 2", "version \"exp\" is not supported"),
            ("2 1 x 3 0:0:0:0:", "packed `until` \"x\" is not an integer"),
            ("2 1 2 - 0:0:0:0:", "packed `at` \"-\" is not an integer"),
            ("2 1 2 3 0:0:0:", "packed `reason` has no length"),
            (
                "2 1 2 3 0:0:0:x:abc",
                "packed `reason` length \"x\" is not a number",
            ),
            (
                "2 1 2 3 0:0:0:4:abc",
                "packed `reason` is shorter than its length 4",
            ),
            ("2 1 2 3 0:0:0:0:x", "1 bytes follow the packed fields"),
            ("", "version \"\" is not supported"),
        ];
        for (value, reason) in cases {
            let error = unpack(value).unwrap_err();
            assert!(error.contains(reason), "{value:?}: {error}");
        }
        // A length that cuts a character in two is refused, not a panic.
        assert!(unpack("2 1 2 3 1:é0:0:0:").is_err());
        assert!(unpack(&good).is_ok());
    }

    /// The `rev` value of format 2 as the module doc describes it, built
    /// here rather than by the revoke script that writes it in Redis.
    fn entry_value(issuer: &str, jti: &str, packed: &str) -> String {
        format!("{}:{issuer}{}:{jti}{packed}", issuer.len(), jti.len())
    }

    #[test]
    fn an_entry_of_format_2_reads_back_whatever_its_texts_hold() {
        let original = revocation("ops", "alice", "lost");
        let packed = pack(&original);
        for (issuer, jti) in [("https://issuer.test", "j1"), ("", "2:x"), ("ü:1", " ")] {
            let value = entry_value(issuer, jti, &packed);
            assert_eq!(entry_head(issuer, jti) + &packed, value, "as written");
            let (read_issuer, read_jti, unpacked) = unpack_entry(&value).unwrap();
            assert_eq!((read_issuer, read_jti), (issuer, jti), "{value:?}");
            assert_eq!(unpacked, unpack(&packed).unwrap());
        }
        let cases = [
            ("", "packed `iss` has no length"),
            ("3:ab", "packed `iss` is shorter than its length 3"),
            ("0:x:", "packed `jti` length \"x\" is not a number"),
            ("0:0:", "version \"\" is not supported"),
            ("0:1:j3 1 2 3 0:0:0:0:", "version \"3\" is not supported"),
        ];
        for (value, reason) in cases {
            let error = unpack_entry(value).unwrap_err();
            assert!(error.contains(reason), "{value:?}: {error}");
        }
    }
}
