//! Change-log cursors: how they are written, parsed and ordered.
//!
//! A cursor names a position in the change log: every logged change
//! carries the cursor right after it, and a reader (the hub's follower, a
//! gateway resuming its stream, a page of the audit trail) hands one back
//! to read what followed. To API clients cursors are opaque strings; only
//! this module and the stores look inside. Their form depends on the store:
//!
//! - **Redis**: one stream entry ID per partition of the log,
//!   `<milliseconds>-<sequence>` as Redis writes them, joined by `,` in
//!   partition order (`1700000000000-0,1700000000004-2`; with one
//!   partition just its ID). [`EntryId::ORIGIN`] (`0-0`) is before every
//!   entry. Parsed by [`Positions::parse`].
//! - **memory**: the decimal sequence number of the last change read
//!   (`42`; `0` before the first).
//!
//! Two Redis cursors of the same log compare partition by partition
//! ([`is_behind`]); memory cursors, and cursors of different partition
//! counts, do not compare with anything.
//!
//! Pure: no I/O, no allocation beyond the parsed positions.

use std::fmt;

/// A stream entry ID, `<milliseconds>-<sequence>`, ordered as Redis orders
/// them: by milliseconds, then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    /// The entry's time, in Unix milliseconds (of the Redis clock).
    pub millis: u64,
    /// Its number among the entries of that millisecond.
    pub sequence: u64,
}

impl EntryId {
    /// Before every entry of a stream.
    pub const ORIGIN: EntryId = EntryId {
        millis: 0,
        sequence: 0,
    };

    /// Parses `<milliseconds>-<sequence>`: two runs of ASCII digits, no
    /// sign, no blanks. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (millis, sequence) = text.split_once('-')?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(millis) || !digits(sequence) {
            return None;
        }
        Some(EntryId {
            millis: millis.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    }

    /// The greatest ID below this one: reading after it yields this entry.
    pub fn before(self) -> Self {
        match (self.millis, self.sequence) {
            (_, sequence) if sequence > 0 => EntryId {
                sequence: sequence - 1,
                ..self
            },
            (0, _) => EntryId::ORIGIN,
            (millis, _) => EntryId {
                millis: millis - 1,
                sequence: u64::MAX,
            },
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.sequence)
    }
}

/// A position in every partition of a Redis change log: the parsed form of
/// a Redis cursor, one [`EntryId`] per partition in partition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions(pub Vec<EntryId>);

impl Positions {
    /// The start of a log of `partitions` partitions.
    pub fn origin(partitions: usize) -> Self {
        Positions(vec![EntryId::ORIGIN; partitions])
    }

    /// Parses a cursor of exactly `partitions` positions.
    pub fn parse(text: &str, partitions: usize) -> Option<Self> {
        Self::parse_any(text).filter(|positions| positions.0.len() == partitions)
    }

    /// Parses a cursor of any number of positions.
    fn parse_any(text: &str) -> Option<Self> {
        text.split(',')
            .map(EntryId::parse)
            .collect::<Option<Vec<_>>>()
            .map(Positions)
    }
}

impl fmt::Display for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, id) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// True when cursor `offered` is at or before `held` in every partition
/// and strictly before in one: a reader at `offered` has not seen some of
/// what a reader at `held` has. False for cursors that do not compare
/// (memory cursors, another partition count, anything unparsable): not
/// known to be behind.
pub fn is_behind(offered: &str, held: &str) -> bool {
    match (Positions::parse_any(offered), Positions::parse_any(held)) {
        (Some(offered), Some(held)) if offered.0.len() == held.0.len() => {
            let pairs = || offered.0.iter().zip(&held.0);
            pairs().all(|(o, h)| o <= h) && pairs().any(|(o, h)| o < h)
        }
        _ => false,
    }
}

/// True when a reader that has applied the log up to cursor `applied`
/// has applied everything up to cursor `target` too: in every partition at
/// or past it (Redis), or at or past its sequence number (memory). Cursors
/// that do not compare (another partition count, another store's form,
/// anything unparsable) count as reached, so nobody waits on them forever.
pub fn has_reached(applied: &str, target: &str) -> bool {
    if let (Ok(applied), Ok(target)) = (applied.parse::<u64>(), target.parse::<u64>()) {
        return applied >= target;
    }
    match (Positions::parse_any(applied), Positions::parse_any(target)) {
        (Some(applied), Some(target)) if applied.0.len() == target.0.len() => {
            applied.0.iter().zip(&target.0).all(|(a, t)| a >= t)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_just_before_another_reads_it_next() {
        let id = |text: &str| EntryId::parse(text).unwrap();
        assert_eq!(id("5-3").before(), id("5-2"));
        assert_eq!(
            id("5-0").before(),
            EntryId {
                millis: 4,
                sequence: u64::MAX
            }
        );
        assert_eq!(id("0-0").before(), EntryId::ORIGIN);
        assert!(id("4-18446744073709551615") < id("5-0"));
        assert_eq!(EntryId::parse("5"), None);
        assert_eq!(EntryId::parse("-5-1"), None);
    }

    #[test]
    fn cursors_name_every_partition() {
        let positions = Positions::parse("1-0,0-0,7-2", 3).unwrap();
        assert_eq!(positions.to_string(), "1-0,0-0,7-2");
        assert_eq!(Positions::parse("1-0,0-0", 3), None);
        assert_eq!(Positions::origin(1).to_string(), "0-0");
    }

    #[test]
    fn a_cursor_is_behind_only_when_no_partition_is_ahead() {
        assert!(is_behind("0-0", "5-1"));
        assert!(is_behind("5-0,7-1", "5-1,7-1"));
        assert!(!is_behind("5-1,7-1", "5-1,7-1"), "equal is not behind");
        assert!(!is_behind("6-0,7-0", "5-1,7-1"), "ahead in one partition");
        assert!(!is_behind("3", "9"), "memory-store cursors do not compare");
        assert!(!is_behind("1-0", "5-1,7-1"), "another partition count");
        assert!(!is_behind("", "5-1"), "no cursor yet");
    }

    #[test]
    fn a_cursor_has_reached_another_when_no_partition_is_short_of_it() {
        assert!(has_reached("5-1", "5-1"), "equal has reached");
        assert!(has_reached("6-0,7-1", "5-1,7-1"));
        assert!(!has_reached("5-0", "5-1"));
        assert!(!has_reached("9-0,7-0", "5-1,7-1"), "short in one partition");
        assert!(has_reached("12", "9"), "memory cursors compare as numbers");
        assert!(!has_reached("9", "12"));
        assert!(has_reached("1-0", "5-1,7-1"), "another partition count");
        assert!(
            has_reached("", "5-1"),
            "what does not compare counts as reached"
        );
    }
}
