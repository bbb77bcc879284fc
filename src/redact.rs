//! Redaction of secrets before they are printed or logged: Redis URLs in
//! `--print-config`, server URLs in the gateway's and the CLI's logs.
//!
//! A leaf module, so the gateway library can log endpoints without the
//! settings machinery.

/// What stands in for a secret, or a URL's password, in printed settings
/// and logs.
pub const REDACTED: &str = "<redacted>";

/// `secret` for printing: a URL with its password and query (where
/// `redis+unix:` URLs carry one) replaced by [`REDACTED`], anything else
/// (including anything with a control character) replaced whole. It cuts
/// at the last `@`, so a password holding `@` or `/` goes whole, and when
/// that `@` is not in the authority (a `/`, `?` or `#` before it, outside
/// the password) the whole URL goes: this errs towards hiding too much.
pub fn redact(secret: &str) -> String {
    // A line break would spill the rest of the value out of a comment.
    if secret.chars().any(char::is_control) {
        return REDACTED.to_owned();
    }
    let Some((scheme, rest)) = secret.split_once("://") else {
        return REDACTED.to_owned();
    };
    let in_authority = |part: &str| !part.contains(['/', '?', '#']);
    let (userinfo, host) = match rest.rsplit_once('@') {
        None => (String::new(), rest),
        Some((info, host)) => match info.split_once(':') {
            Some((user, _password)) if in_authority(user) => (format!("{user}:{REDACTED}@"), host),
            None if in_authority(info) => (format!("{info}@"), host),
            _ => return REDACTED.to_owned(),
        },
    };
    let host = match host.split_once('?') {
        Some((host, _query)) => format!("{host}?{REDACTED}"),
        None => host.to_owned(),
    };
    format!("{scheme}://{userinfo}{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_all_but_the_password() {
        for (secret, shown) in [
            (
                "redis://user:pw@host:6379/0",
                "redis://user:<redacted>@host:6379/0",
            ),
            ("rediss://:pw@host", "rediss://:<redacted>@host"),
            (
                "redis://user:p@ss/w:rd@host",
                "redis://user:<redacted>@host",
            ),
            ("redis://host:6379", "redis://host:6379"),
            ("redis://user@host", "redis://user@host"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw",
                "redis+unix:///run/redis.sock?<redacted>",
            ),
            ("redis+unix:///run/redis.sock?pass=p@ss", "<redacted>"),
            ("redis://host/0?user=a:p@ss", "<redacted>"),
            ("just-a-key", "<redacted>"),
            ("a://\n", "<redacted>"),
            ("redis://h\nkey_prefix = \"x\"", "<redacted>"),
            ("", "<redacted>"),
        ] {
            assert_eq!(redact(secret), shown, "{secret}");
        }
    }
}
