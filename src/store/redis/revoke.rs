//! Token revocations: [`REVOKE_SCRIPT`] and the Rust that fills its
//! arguments, one script call per partition for a batch.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures_util::future::try_join_all;
use redis::{FromRedisValue, ParsingError, RedisWrite, Script, ToRedisArgs, Value};

use super::packed::{entry_head, pack};
use super::{EntryFormat, RedisStore, PRUNE_BATCH};
use crate::store::{record_name, Error, Revocation, RevokeOutcome};

/// Stores a batch of revocations, each atomic on its own. Returns one
/// string: per item, its outcome, and for a change its log entry's ID
/// after a `:`, the items separated by spaces (`1:1700000000000-0 0 2`;
/// read by [`Outcomes`]). The outcome is 1 for a new revocation, 0 for a
/// repeat or an extension, 2 for a new one refused because the caller
/// holds its quota of live revocations. One string rather than a pair per
/// item: the client parses each value of a reply, and a batch of 100 was
/// 301 of them.
///
/// A new record is one `SET NX EXAT` of the packed revocation
/// (`packed.rs`). When the key exists, the record is extended if the new
/// keep-until time is later: its head (`2 <exp> <until> `) is replaced and
/// the rest, the first revocation's provenance, kept. A record written as
/// a hash, before packing, is extended as a hash.
///
/// Each change's log entry is of the format the store was configured with
/// ([`EntryFormat`]): format 1 holds what followers apply unpacked
/// (`kind`, `iss`, `id`, `until`) and the packed revocation in `rec`;
/// format 2 holds all of it in the one field `rev` (`packed.rs`). Expired
/// index members are pruned by the first write of each millisecond (its
/// entry ID ends in `-0`), which bounds the pruning's cost at high write
/// rates.
///
/// KEYS: expiry index, log, the caller's live index, then each item's record.
/// ARGV: retention, now, prune batch, live quota (0: none, and the caller's
/// index is not kept), entry format (`1` or `2`), then per item 5 (format
/// 1) or 4 (format 2), as [`ItemArgs`] lists them.
///
/// Numbers stay text from ARGV to the commands: Lua turns a number into
/// text with `printf("%.14g")`, which was 5% of Redis's instructions per
/// revocation.
pub(super) const REVOKE_SCRIPT: &str = r#"
local retention, now, prune_batch, quota = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local packed_entries = ARGV[5] == '2'
local stride = packed_entries and 4 or 5
local replies, prune = {}, false
for i = 4, #KEYS do
  local key = KEYS[i]
  local a = 5 + (i - 4) * stride
  local name, keep_until, packed = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local outcome
  if quota > 0 and redis.call('EXISTS', key) == 0
      and redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf') >= quota then
    outcome = '2'
  elseif redis.call('SET', key, packed, 'NX', 'EXAT', keep_until) then
    outcome = '1'
  elseif redis.call('TYPE', key).ok == 'hash' then
    if tonumber(redis.call('HGET', key, 'until')) < tonumber(keep_until) then
      redis.call('HSET', key, 'exp', string.match(packed, '^2 (%-?%d+) '), 'until', keep_until)
      redis.call('EXPIREAT', key, keep_until)
      outcome = '0'
    end
  else
    local stored = redis.call('GET', key)
    local stored_until, rest = string.match(stored, '^2 %-?%d+ (%-?%d+) (.*)$')
    if not stored_until then
      return redis.error_reply('revocd: the record at ' .. key .. ' is not a packed token revocation of version 2')
    end
    if tonumber(stored_until) < tonumber(keep_until) then
      redis.call('SET', key, string.match(packed, '^2 %-?%d+ %-?%d+ ') .. rest, 'EXAT', keep_until)
      outcome = '0'
    end
  end
  if outcome == '0' or outcome == '1' then
    redis.call('ZADD', KEYS[1], keep_until, name)
    if quota > 0 then redis.call('ZADD', KEYS[3], keep_until, name) end
    local cursor
    if packed_entries then
      cursor = redis.call('XADD', KEYS[2], 'MAXLEN', '~', retention, '*',
        'rev', ARGV[a + 4] .. packed)
    else
      cursor = redis.call('XADD', KEYS[2], 'MAXLEN', '~', retention, '*',
        'kind', 'jti', 'iss', ARGV[a + 4], 'id', ARGV[a + 5], 'until', keep_until, 'rec', packed)
    end
    prune = prune or string.sub(cursor, -2) == '-0'
    replies[#replies + 1] = outcome .. ':' .. cursor
  else
    replies[#replies + 1] = outcome or '0'
  end
end
if prune then
  for _, index in ipairs(quota > 0 and {KEYS[1], KEYS[3]} or {KEYS[1]}) do
    local stale = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, prune_batch)
    if #stale > 0 then redis.call('ZREM', index, unpack(stale)) end
  end
end
return table.concat(replies, ' ')
"#;

/// [`REVOKE_SCRIPT`], hashed once.
static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_SCRIPT));

/// One item's arguments, in the order the script reads them from
/// `a = 5 + (item - 1) * stride`, the stride being 5 for entries of format
/// 1 and 4 for format 2:
///
/// | ARGV    | Lua          | value                          | stored as                  |
/// |---------|--------------|--------------------------------|----------------------------|
/// | `a + 1` | `name`       | the record name                | key and index member       |
/// | `a + 2` | `keep_until` | `keep_until`                   | expiry, score, entry's `until` (1) |
/// | `a + 3` | `packed`     | the revocation packed          | the record; entry's `rec` (1) or the end of its `rev` (2) |
/// | `a + 4` |              | 1: `issuer`; 2: the entry's head, `<len>:<iss><len>:<jti>` | entry's `iss` (1); the start of its `rev` (2) |
/// | `a + 5` |              | 1: `jti`                       | entry's `id` (1)           |
struct ItemArgs<'a> {
    name: &'a str,
    revocation: &'a Revocation,
    format: EntryFormat,
}

impl ToRedisArgs for ItemArgs<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        let revocation = self.revocation;
        out.write_arg(self.name.as_bytes());
        out.write_arg(itoa::Buffer::new().format(revocation.keep_until).as_bytes());
        out.write_arg(pack(revocation).as_bytes());
        match self.format {
            EntryFormat::Fields => {
                out.write_arg(revocation.issuer.as_bytes());
                out.write_arg(revocation.jti.as_bytes());
            }
            EntryFormat::Packed => {
                out.write_arg(entry_head(&revocation.issuer, &revocation.jti).as_bytes());
            }
        }
    }
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
                .arg(in_script_quota)
                .arg(self.entry_format as u8);
            for &position in &positions {
                let name = &names[position];
                invocation.key(keys.jti(name)).arg(ItemArgs {
                    name,
                    revocation: &revocations[position],
                    format: self.entry_format,
                });
            }
            async move {
                let Outcomes(replies) = self.write(&invocation).await?;
                if replies.len() != positions.len() {
                    return Err(Error::from(ParsingError::from(format!(
                        "the revoke script answered {} outcomes for {} items",
                        replies.len(),
                        positions.len()
                    ))));
                }
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

/// The revoke script's answer, read: per item its outcome and, for a
/// change, the ID of its log entry.
struct Outcomes(Vec<(u8, Option<String>)>);

impl FromRedisValue for Outcomes {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let Value::BulkString(bytes) = value else {
            return Err(format!("expected the revoke script's outcomes, got {value:?}").into());
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ParsingError::from("the revoke script's outcomes are not UTF-8"))?;
        let item = |item: &str| {
            let (outcome, cursor) = match item.split_once(':') {
                Some((outcome, cursor)) => (outcome, Some(cursor.to_owned())),
                None => (item, None),
            };
            match outcome.parse() {
                Ok(outcome @ 0..=2) => Ok((outcome, cursor)),
                _ => Err(ParsingError::from(format!(
                    "the revoke script answered {item:?}, not an outcome"
                ))),
            }
        };
        Ok(Self(text.split(' ').map(item).collect::<Result<_, _>>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::args_as_text;
    use super::*;

    #[test]
    fn the_scripts_outcomes_read_back_and_anything_else_is_refused() {
        let read = |text: &str| {
            Outcomes::from_redis_value(Value::BulkString(text.as_bytes().to_vec())).map(|o| o.0)
        };
        assert_eq!(
            read("1:1700000000000-0 0 2 0:1700000000001-7").unwrap(),
            [
                (1, Some("1700000000000-0".to_owned())),
                (0, None),
                (2, None),
                (0, Some("1700000000001-7".to_owned())),
            ]
        );
        for wrong in ["", "3", "1:5-0  0", "x:5-0", "-1"] {
            assert!(read(wrong).is_err(), "{wrong:?} was read");
        }
        assert!(Outcomes::from_redis_value(Value::Array(vec![])).is_err());
    }

    #[test]
    fn an_item_fills_exactly_the_scripts_stride() {
        let revocation = super::super::sample_revocation();
        let name = "19:https://issuer.test:j1";
        let args = |format| {
            args_as_text(ItemArgs {
                name,
                revocation: &revocation,
                format,
            })
        };
        let packed = pack(&revocation);
        let fields = args(EntryFormat::Fields);
        assert_eq!(
            fields,
            [name, "160", packed.as_str(), "https://issuer.test", "j1"]
        );
        let one_field = args(EntryFormat::Packed);
        assert_eq!(
            one_field,
            [name, "160", packed.as_str(), "19:https://issuer.test2:j1"]
        );
        // The script's strides are the items' lengths.
        let strides = format!("packed_entries and {} or {}", one_field.len(), fields.len());
        assert!(REVOKE_SCRIPT.contains(&strides), "{strides}");
        assert!(REVOKE_SCRIPT.contains("local a = 5 + (i - 4) * stride"));
    }
}
