//! Subject cut-offs: [`REVOKE_SUBJECT_SCRIPT`] and the Rust that fills its
//! arguments.

use std::sync::LazyLock;

use redis::{Script, ToRedisArgs};

use super::{RedisStore, PRUNE_BATCH};
use crate::store::{record_name, CutoffOutcome, Error, SubjectCutoff};

/// Stores a subject cut-off unless an equal or later one is in force.
/// Returns `{not_before in force, cursor or false}`.
///
/// KEYS: record, expiry index, log.
/// ARGV: as [`args`] lists them.
pub(super) const REVOKE_SUBJECT_SCRIPT: &str = r#"
local name, nbf, keep_until, at, by, reason, iss, subject, retention, now, prune_batch, from =
  unpack(ARGV, 1, 12)
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
  'kind', 'sub', 'iss', iss, 'id', subject, 'nbf', nbf, 'until', keep_until,
  'at', at, 'by', by, 'reason', reason, 'from', from)
return {tonumber(nbf), cursor}
"#;

/// [`REVOKE_SUBJECT_SCRIPT`], hashed once.
static REVOKE_SUBJECT: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_SUBJECT_SCRIPT));

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
/// | 8    | `subject`     | `subject`               | log entry's `id`       |
/// | 9    | `retention`   | the log's retention     | `XADD MAXLEN ~`        |
/// | 10   | `now`         | the time (unix seconds) | prunes the index       |
/// | 11   | `prune_batch` | [`PRUNE_BATCH`]         | prunes the index       |
/// | 12   | `from`        | `provenance.source`     | `from`                 |
fn args<'a>(
    name: &'a str,
    cutoff: &'a SubjectCutoff,
    retention: u64,
    now: i64,
) -> impl ToRedisArgs + 'a {
    let SubjectCutoff {
        issuer,
        subject,
        not_before,
        keep_until,
        provenance,
    } = cutoff;
    (
        name,
        not_before,
        keep_until,
        provenance.at,
        &provenance.by,
        &provenance.reason,
        issuer,
        subject,
        retention,
        now,
        PRUNE_BATCH,
        &provenance.source,
    )
}

// === impl RedisStore ===

impl RedisStore {
    pub(in crate::store) async fn revoke_subject(
        &self,
        cutoff: &SubjectCutoff,
        now: i64,
    ) -> Result<CutoffOutcome, Error> {
        let name = record_name(&cutoff.issuer, &cutoff.subject);
        let (partition, keys) = self.keys.partition_of(&name);
        let mut invocation = REVOKE_SUBJECT.prepare_invoke();
        invocation
            .key(keys.sub(&name))
            .key(&keys.sub_expiry)
            .key(&keys.log)
            .arg(args(&name, cutoff, self.log_retention, now));
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

    #[test]
    fn the_arguments_are_the_ones_the_script_unpacks() {
        let cutoff = SubjectCutoff {
            issuer: "iss".to_owned(),
            subject: "alice".to_owned(),
            not_before: 50,
            keep_until: 90,
            provenance: Provenance {
                at: 49,
                by: "ops".to_owned(),
                reason: "left".to_owned(),
                source: "10.0.0.1:5000".to_owned(),
            },
        };
        let args = args_as_text(args("3:iss:alice", &cutoff, 1_000, 49));
        assert_eq!(
            args,
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
                "10.0.0.1:5000"
            ]
        );
        assert!(REVOKE_SUBJECT_SCRIPT.contains(&format!("unpack(ARGV, 1, {})", args.len())));
    }
}
