//! Token revocations: [`REVOKE_SCRIPT`] and the Rust that fills its
//! arguments, one script call per partition for a batch.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures_util::future::try_join_all;
use redis::{Script, ToRedisArgs};

use super::{RedisStore, PRUNE_BATCH};
use crate::store::{record_name, Error, Revocation, RevokeOutcome};

/// Stores a batch of revocations, each atomic on its own. Returns one
/// `{outcome, cursor or false}` per item: outcome 1 for a new revocation, 0
/// for a repeat or an extension, 2 for a new one refused because the
/// caller holds its quota of live revocations.
///
/// KEYS: expiry index, log, the caller's live index, then each item's record.
/// ARGV: retention, now, prune batch, live quota (0: none, and the caller's
/// index is not kept), then 10 per item, as [`item_args`] lists them.
pub(super) const REVOKE_SCRIPT: &str = r#"
local retention, now, prune_batch, quota = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local replies = {}
for i = 4, #KEYS do
  local key = KEYS[i]
  local a = 4 + (i - 4) * 10
  local name, exp, keep_until, at, by, reason, iss, jti, sub, from = unpack(ARGV, a + 1, a + 10)
  local stored_until = tonumber(redis.call('HGET', key, 'until'))
  if stored_until and stored_until >= tonumber(keep_until) then
    replies[#replies + 1] = {0, false}
  elseif not stored_until and quota > 0
      and redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf') >= quota then
    replies[#replies + 1] = {2, false}
  else
    if stored_until then
      redis.call('HSET', key, 'exp', exp, 'until', keep_until)
    else
      redis.call('HSET', key, 'exp', exp, 'until', keep_until, 'at', at,
        'by', by, 'reason', reason, 'sub', sub, 'from', from)
    end
    redis.call('EXPIREAT', key, keep_until)
    redis.call('ZADD', KEYS[1], keep_until, name)
    if quota > 0 then redis.call('ZADD', KEYS[3], keep_until, name) end
    local cursor = redis.call('XADD', KEYS[2], 'MAXLEN', '~', retention, '*',
      'kind', 'jti', 'iss', iss, 'id', jti, 'sub', sub,
      'exp', exp, 'until', keep_until, 'at', at, 'by', by,
      'reason', reason, 'from', from)
    if stored_until then
      replies[#replies + 1] = {0, cursor}
    else
      replies[#replies + 1] = {1, cursor}
    end
  end
end
for _, index in ipairs(quota > 0 and {KEYS[1], KEYS[3]} or {KEYS[1]}) do
  local stale = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, prune_batch)
  if #stale > 0 then redis.call('ZREM', index, unpack(stale)) end
end
return replies
"#;

/// [`REVOKE_SCRIPT`], hashed once.
static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_SCRIPT));

/// One item's arguments, in the order the script unpacks them from
/// `a = 4 + (item - 1) * 10`:
///
/// | ARGV     | Lua          | value                     | stored as              |
/// |----------|--------------|---------------------------|------------------------|
/// | `a + 1`  | `name`       | the record name           | key and index member   |
/// | `a + 2`  | `exp`        | `expires_at`              | `exp`                  |
/// | `a + 3`  | `keep_until` | `keep_until`              | `until`, expiry, score |
/// | `a + 4`  | `at`         | `provenance.at`           | `at`                   |
/// | `a + 5`  | `by`         | `provenance.by`           | `by`                   |
/// | `a + 6`  | `reason`     | `provenance.reason`       | `reason`               |
/// | `a + 7`  | `iss`        | `issuer`                  | log entry's `iss`      |
/// | `a + 8`  | `jti`        | `jti`                     | log entry's `id`       |
/// | `a + 9`  | `sub`        | `subject`                 | `sub`                  |
/// | `a + 10` | `from`       | `provenance.source`       | `from`                 |
fn item_args<'a>(name: &'a str, revocation: &'a Revocation) -> impl ToRedisArgs + 'a {
    let Revocation {
        issuer,
        jti,
        subject,
        expires_at,
        keep_until,
        provenance,
    } = revocation;
    (
        name,
        expires_at,
        keep_until,
        provenance.at,
        &provenance.by,
        &provenance.reason,
        issuer,
        jti,
        subject,
        &provenance.source,
    )
}

// === impl RedisStore ===

impl RedisStore {
    pub(in crate::store) async fn revoke_batch(
        &self,
        revocations: &[Revocation],
        now: i64,
        live_quota: Option<u64>,
    ) -> Result<Vec<RevokeOutcome>, Error> {
        let mut outcomes = vec![RevokeOutcome::default(); revocations.len()];
        // With one partition the quota is checked in the write's script;
        // with several, room is reserved first.
        let (in_script_quota, admitted) = match live_quota {
            Some(quota) if self.keys.partitions.len() > 1 => {
                let admitted = self.reserve(revocations, now, quota).await?;
                for (outcome, admitted) in outcomes.iter_mut().zip(&admitted) {
                    outcome.over_quota = !admitted;
                }
                (0, admitted)
            }
            quota => (quota.unwrap_or(0), vec![true; revocations.len()]),
        };
        let names: Vec<String> = revocations
            .iter()
            .map(|revocation| record_name(&revocation.issuer, &revocation.jti))
            .collect();
        // Admitted items by partition, keeping their positions.
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (position, name) in names.iter().enumerate() {
            if admitted[position] {
                let (partition, _) = self.keys.partition_of(name);
                groups.entry(partition).or_default().push(position);
            }
        }
        let calls = groups.into_iter().map(|(partition, positions)| {
            let keys = &self.keys.partitions[partition];
            let mut invocation = REVOKE.prepare_invoke();
            let actor = &revocations[positions[0]].provenance.by;
            invocation
                .key(&keys.jti_expiry)
                .key(&keys.log)
                .key(keys.actor_live(actor))
                .arg(self.log_retention)
                .arg(now)
                .arg(PRUNE_BATCH)
                .arg(in_script_quota);
            for &position in &positions {
                let name = &names[position];
                invocation
                    .key(keys.jti(name))
                    .arg(item_args(name, &revocations[position]));
            }
            async move {
                let replies: Vec<(u8, Option<String>)> = self.write(&invocation).await?;
                Ok::<_, Error>((partition, positions, replies))
            }
        });
        for (partition, positions, replies) in try_join_all(calls).await? {
            for (position, (outcome, cursor)) in positions.into_iter().zip(replies) {
                outcomes[position] = RevokeOutcome {
                    newly_revoked: outcome == 1,
                    over_quota: outcome == 2,
                    cursor: self.write_cursor(partition, cursor),
                };
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::args_as_text;
    use super::*;
    use crate::store::Provenance;

    #[test]
    fn an_item_fills_exactly_the_scripts_stride() {
        let revocation = Revocation {
            issuer: "https://issuer.test".to_owned(),
            jti: "j1".to_owned(),
            subject: "alice".to_owned(),
            expires_at: 100,
            keep_until: 160,
            provenance: Provenance {
                at: 40,
                by: "ops".to_owned(),
                reason: "lost".to_owned(),
                source: "10.0.0.1:5000".to_owned(),
            },
        };
        let args = args_as_text(item_args("19:https://issuer.test:j1", &revocation));
        assert_eq!(
            args,
            [
                "19:https://issuer.test:j1",
                "100",
                "160",
                "40",
                "ops",
                "lost",
                "https://issuer.test",
                "j1",
                "alice",
                "10.0.0.1:5000"
            ]
        );
        // The script's stride is the item's length.
        let stride = args.len();
        assert!(REVOKE_SCRIPT.contains(&format!("(i - 4) * {stride}")));
        assert!(REVOKE_SCRIPT.contains(&format!("unpack(ARGV, a + 1, a + {stride})")));
    }
}
