//! Cut-offs: [`CUTOFF_SCRIPT`] and the Rust that fills its arguments.
//!
//! A subject cut-off lives in the `sub:` family with the log kind `sub`, as
//! it always has; a cut-off by another claim (or issuer-wide) in the `cut:`
//! family with the log kind `claim` and the claim in the entry's `claim`
//! field. A replica too old to know `claim` entries stops at the first one
//! (an unknown kind is a corrupt entry) instead of skipping it.

use std::sync::LazyLock;

use redis::{Script, ToRedisArgs};

use super::decode::field;
use super::{RedisStore, PRUNE_BATCH};
use crate::store::{Cutoff, CutoffOutcome, Error};

/// Stores a cut-off unless an equal or later one is in force.
/// Returns `{not_before in force, cursor or false}`.
///
/// KEYS: record, expiry index, log.
/// ARGV: as [`args`] lists them.
pub(super) const CUTOFF_SCRIPT: &str = r#"
local name, nbf, keep_until, at, by, reason, iss, value, retention, now, prune_batch, from,
  kind, claim = unpack(ARGV, 1, 14)
local current = tonumber(redis.call('HGET', KEYS[1], 'nbf'))
if current and current >= tonumber(nbf) then
  return {current, false}
end
redis.call('HSET', KEYS[1], 'nbf', nbf, 'until', keep_until, 'at', at, 'by', by,
  'reason', reason, 'from', from)
redis.call('EXPIREAT', KEYS[1], keep_until)
redis.call('ZADD', KEYS[2], keep_until, name)
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, prune_batch)
if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end
local cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', retention, '*',
  'kind', kind, 'claim', claim, 'iss', iss, 'id', value, 'nbf', nbf, 'until', keep_until,
  'at', at, 'by', by, 'reason', reason, 'from', from)
return {tonumber(nbf), cursor}
"#;

/// [`CUTOFF_SCRIPT`], hashed once.
static CUTOFF: LazyLock<Script> = LazyLock::new(|| Script::new(CUTOFF_SCRIPT));

/// The script's arguments, in the order it unpacks them:
///
/// | ARGV | Lua           | value                   | stored as              |
/// |------|---------------|-------------------------|------------------------|
/// | 1    | `name`        | the record name         | key and index member   |
/// | 2    | `nbf`         | `not_before`            | `nbf`                  |
/// | 3    | `keep_until`  | `keep_until`            | `until`, expiry, score |
/// | 4    | `at`          | `provenance.at`         | `at`                   |
/// | 5    | `by`          | `provenance.by`         | `by`                   |
/// | 6    | `reason`      | `provenance.reason`     | `reason`               |
/// | 7    | `iss`         | `issuer`                | log entry's `iss`      |
/// | 8    | `value`       | `value`                 | log entry's `id`       |
/// | 9    | `retention`   | the log's retention     | `XADD MAXLEN ~`        |
/// | 10   | `now`         | the time (unix seconds) | prunes the index       |
/// | 11   | `prune_batch` | [`PRUNE_BATCH`]         | prunes the index       |
/// | 12   | `from`        | `provenance.source`     | `from`                 |
/// | 13   | `kind`        | `sub` or `claim`        | log entry's `kind`     |
/// | 14   | `claim`       | `claim`                 | log entry's `claim`    |
fn args<'a>(name: &'a str, cutoff: &'a Cutoff, retention: u64, now: i64) -> impl ToRedisArgs + 'a {
    let Cutoff {
        issuer,
        claim,
        value,
        not_before,
        keep_until,
        provenance,
    } = cutoff;
    let kind = if cutoff.is_subject() {
        field::KIND_SUBJECT
    } else {
        field::KIND_CLAIM
    };
    (
        (
            name,
            not_before,
            keep_until,
            provenance.at,
            &provenance.by,
            &provenance.reason,
            issuer,
            value,
        ),
        (retention, now, PRUNE_BATCH, &provenance.source, kind, claim),
    )
}

// === impl RedisStore ===

impl RedisStore {
    pub(in crate::store) async fn cut(
        &self,
        cutoff: &Cutoff,
        now: i64,
    ) -> Result<CutoffOutcome, Error> {
        let name = cutoff.name();
        let (partition, keys) = self.keys.partition_of(&name);
        let (record, expiry) = match cutoff.is_subject() {
            true => (keys.sub(&name), &keys.sub_expiry),
            false => (keys.cut(&name), &keys.cut_expiry),
        };
        let mut invocation = CUTOFF.prepare_invoke();
        invocation.key(record).key(expiry).key(&keys.log).arg(args(
            &name,
            cutoff,
            self.log_retention,
            now,
        ));
        let (not_before, cursor): (i64, Option<String>) = self.write(&invocation).await?;
        Ok(CutoffOutcome {
            not_before,
            cursor: self.write_cursor(partition, cursor),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::args_as_text;
    use super::*;
    use crate::store::Provenance;

    fn cutoff(claim: &str, value: &str) -> Cutoff {
        Cutoff {
            issuer: "iss".to_owned(),
            claim: claim.to_owned(),
            value: value.to_owned(),
            not_before: 50,
            keep_until: 90,
            provenance: Provenance {
                at: 49,
                by: "ops".to_owned(),
                reason: "left".to_owned(),
                source: "10.0.0.1:5000".to_owned(),
            },
        }
    }

    #[test]
    fn the_arguments_are_the_ones_the_script_unpacks() {
        let subject = args_as_text(args("3:iss:alice", &cutoff("sub", "alice"), 1_000, 49));
        assert_eq!(
            subject,
            [
                "3:iss:alice",
                "50",
                "90",
                "49",
                "ops",
                "left",
                "iss",
                "alice",
                "1000",
                "49",
                "64",
                "10.0.0.1:5000",
                "sub",
                "sub"
            ]
        );
        assert!(CUTOFF_SCRIPT.contains(&format!("unpack(ARGV, 1, {})", subject.len())));
        let claim = args_as_text(args("n", &cutoff("sid", "s-1"), 1_000, 49));
        assert_eq!(claim[7], "s-1");
        assert_eq!(claim[12..], ["claim", "sid"]);
    }
}
