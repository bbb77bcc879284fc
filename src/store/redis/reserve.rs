//! Quotas of live revocations over several partitions: [`RESERVE_SCRIPT`]
//! and the Rust that fills its arguments.

use std::sync::LazyLock;

use redis::{Script, ToRedisArgs};

use super::{RedisStore, PRUNE_BATCH};
use crate::store::{record_name, Error, Revocation};

/// Reserves room under a caller's quota of live revocations when the log
/// has several partitions (the caller's index then lives in a partition of
/// its own, so the count cannot be taken in the write's script). Returns 1
/// per reserved item, 0 per item over the quota. A record already reserved
/// is reserved again at no cost; a reservation whose write then fails
/// counts until the record would have expired, which errs on the safe side.
///
/// KEYS: the caller's live index.
/// ARGV: now, quota, prune batch, then 2 per item, as [`item_args`] lists
/// them.
pub(super) const RESERVE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[3])
if #stale > 0 then redis.call('ZREM', KEYS[1], unpack(stale)) end
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local replies = {}
for a = 4, #ARGV, 2 do
  local name, keep_until = ARGV[a], ARGV[a + 1]
  if redis.call('ZSCORE', KEYS[1], name) then
    redis.call('ZADD', KEYS[1], 'GT', keep_until, name)
    replies[#replies + 1] = 1
  elseif live < quota then
    redis.call('ZADD', KEYS[1], keep_until, name)
    live = live + 1
    replies[#replies + 1] = 1
  else
    replies[#replies + 1] = 0
  end
end
return replies
"#;

/// [`RESERVE_SCRIPT`], hashed once.
static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE_SCRIPT));

/// One item's arguments, in the order the script reads them from
/// `a = 4 + (item - 1) * 2`:
///
/// | ARGV    | Lua          | value             | stored as             |
/// |---------|--------------|-------------------|-----------------------|
/// | `a`     | `name`       | the record name   | live index member     |
/// | `a + 1` | `keep_until` | `keep_until`      | its score             |
fn item_args(revocation: &Revocation) -> impl ToRedisArgs {
    (
        record_name(&revocation.issuer, &revocation.jti),
        revocation.keep_until,
    )
}

// === impl RedisStore ===

impl RedisStore {
    /// Reserves room for each revocation under its caller's quota (see
    /// [`RESERVE_SCRIPT`]); true per admitted item.
    pub(super) async fn reserve(
        &self,
        revocations: &[Revocation],
        now: i64,
        quota: u64,
    ) -> Result<Vec<bool>, Error> {
        let Some(first) = revocations.first() else {
            return Ok(Vec::new());
        };
        let actor = &first.provenance.by;
        let (_, keys) = self.keys.partition_of(actor);
        let mut invocation = RESERVE.prepare_invoke();
        invocation
            .key(keys.actor_live(actor))
            .arg(now)
            .arg(quota)
            .arg(PRUNE_BATCH);
        for revocation in revocations {
            invocation.arg(item_args(revocation));
        }
        let replies: Vec<u8> = self.write(&invocation).await?;
        Ok(replies.into_iter().map(|reply| reply == 1).collect())
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
            issuer: "iss".to_owned(),
            jti: "j1".to_owned(),
            subject: String::new(),
            expires_at: 100,
            keep_until: 160,
            provenance: Provenance {
                at: 40,
                by: "ops".to_owned(),
                reason: String::new(),
                source: String::new(),
            },
        };
        let args = args_as_text(item_args(&revocation));
        assert_eq!(args, ["3:iss:j1", "160"]);
        // The script's stride is the item's length.
        let stride = args.len();
        assert!(RESERVE_SCRIPT.contains(&format!("for a = 4, #ARGV, {stride} do")));
    }
}
