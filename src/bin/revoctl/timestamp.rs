//! Times typed by people or found in import files, as unix seconds.

use std::time::UNIX_EPOCH;

use revocd::time::unix_now;

/// A point in time for `--since`/`--until`: a duration ago (`1h`, `30m`,
/// `7d`, humantime syntax), an RFC 3339 time, or unix seconds. A clap
/// value parser.
///
/// # Errors
/// None of the three, or a time before 1970.
pub fn parse_moment(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_secs()).unwrap_or(i64::MAX);
        return Ok(unix_now().saturating_sub(ago).max(0));
    }
    parse_unix_or_rfc3339(text).map_err(|_| {
        format!(
            "{text:?} is neither a duration ago (1h, 30m, 7d), an RFC 3339 time nor unix seconds"
        )
    })
}

/// The time of a cut-off: `now` (0: the server takes its current second
/// + 1), or what [`parse_moment`] reads. A clap value parser.
///
/// # Errors
/// As [`parse_moment`].
pub fn parse_cutoff(text: &str) -> Result<i64, String> {
    match text.trim() {
        "now" => Ok(0),
        other => parse_moment(other),
    }
}

/// Unix seconds (`1767225600`) or an RFC 3339 time (`2026-01-01T00:00:00Z`,
/// `2026-01-01T01:00:00+01:00`; without an offset, UTC). Fractions of a
/// second are dropped.
///
/// # Errors
/// Neither form, or a time before 1970 (`()`: the caller knows the field).
pub fn parse_unix_or_rfc3339(text: &str) -> Result<i64, ()> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return if seconds >= 0 { Ok(seconds) } else { Err(()) };
    }
    let (local, offset) = split_offset(text);
    let at = humantime::parse_rfc3339_weak(local).map_err(|_| ())?;
    let seconds = at.duration_since(UNIX_EPOCH).map_err(|_| ())?.as_secs();
    let utc = i64::try_from(seconds).map_err(|_| ())? - offset;
    if utc >= 0 {
        Ok(utc)
    } else {
        Err(())
    }
}

/// Splits a trailing `Z` or `±HH:MM` off an RFC 3339 time: (the time
/// without it, the offset east of UTC in seconds). humantime reads only UTC.
fn split_offset(text: &str) -> (&str, i64) {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return (local, 0);
    }
    // `2026-01-01T00:00:00` is 19 bytes; an offset is the 6 after it.
    let Some(split) = text.len().checked_sub(6).filter(|&at| at >= 19) else {
        return (text, 0);
    };
    let (local, offset) = text.split_at(split);
    let bytes = offset.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return (text, 0),
    };
    let number = |digits: &str| digits.parse::<i64>().ok();
    match (number(&offset[1..3]), &offset[3..4], number(&offset[4..6])) {
        (Some(hours), ":", Some(minutes)) if hours < 24 && minutes < 60 => {
            (local, sign * (hours * 3_600 + minutes * 60))
        }
        _ => (text, 0),
    }
}

/// Unix milliseconds as RFC 3339 with milliseconds, for the audit trail.
pub fn format_millis(millis: i64) -> String {
    match u64::try_from(millis) {
        Ok(millis) => {
            let at = UNIX_EPOCH + std::time::Duration::from_millis(millis);
            humantime::format_rfc3339_millis(at).to_string()
        }
        Err(_) => millis.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unix_seconds_and_rfc3339_with_any_offset() {
        assert_eq!(parse_unix_or_rfc3339("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_unix_or_rfc3339(" 0 "), Ok(0));
        assert_eq!(
            parse_unix_or_rfc3339("2026-01-01T00:00:00Z"),
            Ok(1_767_225_600)
        );
        assert_eq!(
            parse_unix_or_rfc3339("2026-01-01T00:00:00.750Z"),
            Ok(1_767_225_600)
        );
        assert_eq!(
            parse_unix_or_rfc3339("2026-01-01 00:00:00"),
            Ok(1_767_225_600)
        );
        assert_eq!(
            parse_unix_or_rfc3339("2026-01-01T01:30:00+01:30"),
            Ok(1_767_225_600)
        );
        assert_eq!(
            parse_unix_or_rfc3339("2025-12-31T19:00:00-05:00"),
            Ok(1_767_225_600)
        );
        for bad in [
            "",
            "-5",
            "soon",
            "2026-13-01T00:00:00Z",
            "1.5",
            "2026-01-01",
        ] {
            assert_eq!(parse_unix_or_rfc3339(bad), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn moments_are_durations_ago_times_or_unix_seconds() {
        let now = unix_now();
        let hour_ago = parse_moment("1h").unwrap();
        assert!(
            (now - 3_601..=now - 3_599).contains(&hour_ago),
            "{hour_ago}"
        );
        assert_eq!(parse_moment("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_moment("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        let error = parse_moment("yesterday").unwrap_err();
        assert!(error.contains("duration ago"), "{error}");
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(format_millis(1_767_225_600_250), "2026-01-01T00:00:00.250Z");
    }
}
