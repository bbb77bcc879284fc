//! The Redis store: durable, shared by every replica.
//!
//! # Keys
//!
//! Every key starts with the configured prefix (default `revocd:`) followed by
//! a layout version, so a future layout can live beside this one. A record
//! name is `<issuer byte length>:<issuer>:<id>` (see `record_name`), which is
//! unambiguous whatever the issuer contains.
//!
//! | key                            | type   | contents                                   | lifetime                         |
//! |--------------------------------|--------|--------------------------------------------|----------------------------------|
//! | `{prefix}v1:jti:<record>`      | hash   | `exp`, `until`, `at`, `by`, `reason`, `sub`, `from` | `EXPIREAT until` (`exp` + leeway) |
//! | `{prefix}v1:sub:<record>`      | hash   | `nbf`, `until`, `at`, `by`, `reason`, `from` | `EXPIREAT until` (`nbf` + max token lifetime + leeway) |
//! | `{prefix}v1:jti-expiry`        | zset   | record name scored by `until`              | permanent; expired members pruned on write |
//! | `{prefix}v1:sub-expiry`        | zset   | the same for subject cut-offs              | permanent; pruned likewise       |
//! | `{prefix}v1:log`               | stream | one entry per change (see below)           | trimmed to about `retention` entries |
//! | `{prefix}v1:digest-key`        | string | the 16-byte key of filter digests          | permanent; set once with `SET NX` |
//! | `{prefix}v1:actor-live:<key name>` | zset | record names of the key's revocations, scored by `until` | kept only for keys with `max_live_revocations`; pruned on write |
//!
//! A log entry has the fields `kind` (`jti` or `sub`), `iss`, `id` (the jti
//! or subject), `sub` (jti: the token's subject, when known), `exp` (jti) or
//! `nbf` (sub), `until`, `at`, `by`, `reason` and `from` (the caller's
//! address). The stream ID is the cursor; its first part is the time of the
//! append in milliseconds, which is what the audit trail's time range uses.
//! `sub` and `from` may be missing from records written before they existed.
//!
//! The expiry indexes let the live counts be read with one `ZCOUNT`, and let
//! the live set be walked in pages without `SCAN`ning the keyspace.
//!
//! Each write is one Lua script: the record, its index entry and its log
//! entry are written together or not at all, and the reply (with the
//! cursor) is sent only after Redis executed all of it. A batch of token
//! revocations is one script call too, each item atomic on its own.
//!
//! # Durability
//!
//! [`Durability::Fast`] acknowledges once Redis has executed the script: what
//! survives a crash of Redis is what its `appendfsync` policy wrote (with the
//! usual `everysec`, up to a second of acknowledged writes can be lost).
//! [`Durability::Strict`] acknowledges only once the write is on disk:
//! `WAITAOF 1 0` on Redis 7.2 and later; on older Redis it refuses to start
//! unless `appendonly yes` and `appendfsync always` are set, under which
//! Redis writes to disk before it replies. `wait_replicas` adds `WAIT`, so
//! the write has also reached that many replicas.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, ErrorKind, Script, ServerErrorKind};

use super::{
    parse_record_name, record_name, AuditEntry, Change, Counts, CutoffOutcome, Error, LogTail,
    LoggedChange, Page, Provenance, Record, RecordFilter, RecordKind, Revocation, RevokeOutcome,
    SubjectCutoff, TokenStatus,
};
use crate::filter::DigestKey;

/// Layout version, part of every key.
const LAYOUT: &str = "v1";
/// Index entries pruned per write at most, to bound a script's run time.
const PRUNE_BATCH: u32 = 64;
/// Records asked for per `ZSCAN` call when walking the live set.
const SCAN_PAGE: usize = 1_000;
/// Store calls one page of a listing or the audit trail may take at most,
/// so a filter that matches little cannot keep a call going for long.
const MAX_SCANS_PER_PAGE: usize = 16;
/// The cursor before the first entry of a stream.
const LOG_ORIGIN: &str = "0-0";

/// Stores a batch of revocations, each atomic on its own. Returns one
/// `{outcome, cursor or false}` per item: outcome 1 for a new revocation, 0
/// for a repeat or an extension, 2 for a new one refused because the
/// caller holds its quota of live revocations.
///
/// KEYS: expiry index, log, the caller's live index, then each item's record.
/// ARGV: retention, now, prune batch, live quota (0: none, and the caller's
/// index is not kept), then per item: record name, exp, until, at, by,
/// reason, issuer, jti, subject, source.
const REVOKE_SCRIPT: &str = r#"
local replies = {}
local now = tonumber(ARGV[2])
local quota = tonumber(ARGV[4])
for i = 4, #KEYS do
  local key = KEYS[i]
  local a = 4 + (i - 4) * 10
  local stored_until = tonumber(redis.call('HGET', key, 'until'))
  if stored_until and stored_until >= tonumber(ARGV[a + 3]) then
    replies[#replies + 1] = {0, false}
  elseif not stored_until and quota > 0
      and redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf') >= quota then
    replies[#replies + 1] = {2, false}
  else
    if stored_until then
      redis.call('HSET', key, 'exp', ARGV[a + 2], 'until', ARGV[a + 3])
    else
      redis.call('HSET', key, 'exp', ARGV[a + 2], 'until', ARGV[a + 3], 'at', ARGV[a + 4],
        'by', ARGV[a + 5], 'reason', ARGV[a + 6], 'sub', ARGV[a + 9], 'from', ARGV[a + 10])
    end
    redis.call('EXPIREAT', key, ARGV[a + 3])
    redis.call('ZADD', KEYS[1], ARGV[a + 3], ARGV[a + 1])
    if quota > 0 then redis.call('ZADD', KEYS[3], ARGV[a + 3], ARGV[a + 1]) end
    local cursor = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
      'kind', 'jti', 'iss', ARGV[a + 7], 'id', ARGV[a + 8], 'sub', ARGV[a + 9],
      'exp', ARGV[a + 2], 'until', ARGV[a + 3], 'at', ARGV[a + 4], 'by', ARGV[a + 5],
      'reason', ARGV[a + 6], 'from', ARGV[a + 10])
    if stored_until then
      replies[#replies + 1] = {0, cursor}
    else
      replies[#replies + 1] = {1, cursor}
    end
  end
end
for _, index in ipairs(quota > 0 and {KEYS[1], KEYS[3]} or {KEYS[1]}) do
  local stale = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, ARGV[3])
  if #stale > 0 then redis.call('ZREM', index, unpack(stale)) end
end
return replies
"#;

/// Stores a subject cut-off unless an equal or later one is in force.
/// Returns `{not_before in force, cursor or false}`.
///
/// KEYS: record, expiry index, log.
/// ARGV: record name, nbf, until, at, by, reason, issuer, subject, retention, now, prune batch, source.
const REVOKE_SUBJECT_SCRIPT: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'nbf'))
if current and current >= tonumber(ARGV[2]) then
  return {current, false}
end
redis.call('HSET', KEYS[1], 'nbf', ARGV[2], 'until', ARGV[3], 'at', ARGV[4], 'by', ARGV[5],
  'reason', ARGV[6], 'from', ARGV[12])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[10], 'LIMIT', 0, ARGV[11])
if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end
local cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*',
  'kind', 'sub', 'iss', ARGV[7], 'id', ARGV[8], 'nbf', ARGV[2], 'until', ARGV[3],
  'at', ARGV[4], 'by', ARGV[5], 'reason', ARGV[6], 'from', ARGV[12])
return {tonumber(ARGV[2]), cursor}
"#;

/// How to reach Redis and lay out the keys.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`).
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Approximate number of change-log entries kept (`XADD MAXLEN ~`).
    pub log_retention: u64,
    /// Time allowed for one command before it fails as unavailable.
    pub response_timeout: Duration,
    /// When a write is acknowledged.
    pub durability: Durability,
    /// Replicas each write must reach before it is acknowledged (`WAIT`).
    pub wait_replicas: u32,
}

/// When a write is acknowledged (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Once Redis has executed it; a Redis crash can lose what its
    /// `appendfsync` policy had not yet written (about a second with
    /// `everysec`).
    #[default]
    Fast,
    /// Once it is on Redis's disk (`WAITAOF`, or `appendfsync always` on
    /// Redis before 7.2, checked at start).
    Strict,
}

/// What each write waits for after the script, as decided at connect.
#[derive(Debug, Clone, Copy, Default)]
struct WritePolicy {
    /// Send `WAITAOF 1 0` (Redis 7.2+ in strict mode).
    wait_aof: bool,
    /// Send `WAIT n` when above zero.
    wait_replicas: u32,
}

/// A revocation store in Redis. Cheap to clone: clones share one
/// multiplexed connection, which reconnects by itself after Redis returns.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    response_timeout: Duration,
    connection: ConnectionManager,
    keys: Keys,
    log_retention: u64,
    write_policy: WritePolicy,
    revoke_script: Script,
    revoke_subject_script: Script,
}

/// The key names, built once from the prefix.
#[derive(Debug, Clone)]
struct Keys {
    jti_prefix: String,
    sub_prefix: String,
    jti_expiry: String,
    sub_expiry: String,
    log: String,
    digest_key: String,
    actor_prefix: String,
}

/// Follows the change log with `XREAD BLOCK` on a connection of its own,
/// whose response timeout allows for the block (the shared connection's
/// would cut it short). Reconnects on the next read after an error.
pub struct RedisLogReader {
    client: redis::Client,
    response_timeout: Duration,
    log: String,
    connection: Option<MultiplexedConnection>,
}

/// Walks the expiry indexes with `ZSCAN`: revocations first, then subject
/// cut-offs (whose `nbf` is read with one pipelined `HGET` per page).
pub struct RedisLiveScan {
    store: RedisStore,
    now: i64,
    /// The index being walked, and its `ZSCAN` cursor; `None` when done.
    position: Option<(ScanIndex, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanIndex {
    Revocations,
    Cutoffs,
}

impl ScanIndex {
    /// The index a walk over `kind` starts with.
    fn first(kind: Option<RecordKind>) -> Self {
        match kind {
            Some(RecordKind::Subject) => ScanIndex::Cutoffs,
            _ => ScanIndex::Revocations,
        }
    }

    /// Where a walk over `kind` goes after a `ZSCAN` of this index
    /// answered `next`; `None` when it is done.
    fn advance(self, next: u64, kind: Option<RecordKind>) -> Option<(Self, u64)> {
        match (next, self) {
            (0, ScanIndex::Revocations) if kind != Some(RecordKind::Token) => {
                Some((ScanIndex::Cutoffs, 0))
            }
            (0, _) => None,
            (next, index) => Some((index, next)),
        }
    }

    /// A page token: `t:<cursor>` or `s:<cursor>`.
    fn token(self, scan_cursor: u64) -> String {
        match self {
            ScanIndex::Revocations => format!("t:{scan_cursor}"),
            ScanIndex::Cutoffs => format!("s:{scan_cursor}"),
        }
    }

    fn parse_token(token: &str) -> Result<(Self, u64), Error> {
        let (tag, cursor) = token.split_once(':').ok_or(Error::BadPageToken)?;
        let cursor = cursor.parse().map_err(|_| Error::BadPageToken)?;
        match tag {
            "t" => Ok((ScanIndex::Revocations, cursor)),
            "s" => Ok((ScanIndex::Cutoffs, cursor)),
            _ => Err(Error::BadPageToken),
        }
    }
}

/// True for `<digits>-<digits>`.
fn is_stream_id(text: &str) -> bool {
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    text.split_once('-')
        .is_some_and(|(millis, sequence)| all_digits(millis) && all_digits(sequence))
}

// === impl RedisStore ===

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection holds the URL, which may hold a password.
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis and checks that it answers.
    ///
    /// # Errors
    /// A malformed URL, or a Redis that cannot be reached now.
    pub async fn connect(options: &RedisStoreOptions) -> Result<Self, Error> {
        let client = redis::Client::open(options.url.as_str()).map_err(Error::Backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.response_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client.clone(), config).await?;
        let mut store = Self {
            client,
            response_timeout: options.response_timeout,
            connection,
            keys: Keys::new(&options.key_prefix),
            log_retention: options.log_retention,
            write_policy: WritePolicy::default(),
            revoke_script: Script::new(REVOKE_SCRIPT),
            revoke_subject_script: Script::new(REVOKE_SUBJECT_SCRIPT),
        };
        store.write_policy = store.write_policy(options).await?;
        Ok(store)
    }

    /// Decides what writes wait for; refuses a Redis that cannot give what
    /// `options.durability` asks.
    async fn write_policy(&self, options: &RedisStoreOptions) -> Result<WritePolicy, Error> {
        let mut policy = WritePolicy {
            wait_aof: false,
            wait_replicas: options.wait_replicas,
        };
        if options.durability == Durability::Fast {
            return Ok(policy);
        }
        let mut connection = self.connection.clone();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| {
                v.trim()
                    .split('.')
                    .map(|part| part.parse::<u32>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if version.as_slice() >= [7, 2].as_slice() {
            policy.wait_aof = true;
            return Ok(policy);
        }
        let unsuitable = |detail: String| {
            Error::Unsuitable(format!(
                "--durability strict needs Redis 7.2 or later (for WAITAOF) or `appendonly yes` with `appendfsync always`; {detail}"
            ))
        };
        let setting = |name: &'static str| {
            let mut connection = self.connection.clone();
            async move {
                let reply: Result<Vec<String>, redis::RedisError> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut connection)
                    .await;
                match reply.map_err(Error::from) {
                    Ok(pair) => Ok(pair.get(1).cloned().unwrap_or_default()),
                    Err(error) if error.is_unavailable() => Err(error),
                    Err(error) => Err(unsuitable(format!(
                        "this Redis is older than 7.2 and `CONFIG GET {name}` failed ({error})"
                    ))),
                }
            }
        };
        let appendonly = setting("appendonly").await?;
        let appendfsync = setting("appendfsync").await?;
        if appendonly != "yes" || appendfsync != "always" {
            return Err(unsuitable(format!(
                "this Redis is older than 7.2 and has appendonly {appendonly:?}, appendfsync {appendfsync:?}"
            )));
        }
        Ok(policy)
    }

    /// Runs a write script, then the waits the write policy asks for, on
    /// one connection in one pipeline (so the waits cover this write).
    async fn write<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let timeout_ms = self.response_timeout.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation);
        if self.write_policy.wait_aof {
            pipe.cmd("WAITAOF").arg(1).arg(0).arg(timeout_ms);
        }
        if self.write_policy.wait_replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.write_policy.wait_replicas)
                .arg(timeout_ms);
        }
        let mut connection = self.connection.clone();
        let mut replies: Vec<redis::Value> = match pipe.query_async(&mut connection).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                invocation.load_async(&mut connection).await?;
                pipe.query_async(&mut connection).await?
            }
            reply => reply?,
        };
        if self.write_policy.wait_replicas > 0 {
            let reached: u32 = redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?;
            if reached < self.write_policy.wait_replicas {
                return Err(Error::NotDurable(format!(
                    "the write reached {reached} of the {} replicas asked for in time",
                    self.write_policy.wait_replicas
                )));
            }
        }
        if self.write_policy.wait_aof {
            let (local, _replicas): (u32, u32) =
                redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?;
            if local == 0 {
                return Err(Error::NotDurable(
                    "Redis did not confirm the write on disk in time (WAITAOF)".to_owned(),
                ));
            }
        }
        let reply = replies.pop().unwrap_or(redis::Value::Nil);
        Ok(redis::from_redis_value(reply)?)
    }

    pub(super) async fn revoke_batch(
        &self,
        revocations: &[Revocation],
        now: i64,
        live_quota: Option<u64>,
    ) -> Result<Vec<RevokeOutcome>, Error> {
        let Some(first) = revocations.first() else {
            return Ok(Vec::new());
        };
        let mut invocation = self.revoke_script.prepare_invoke();
        invocation
            .key(&self.keys.jti_expiry)
            .key(&self.keys.log)
            .key(format!("{}{}", self.keys.actor_prefix, first.provenance.by))
            .arg(self.log_retention)
            .arg(now)
            .arg(PRUNE_BATCH)
            .arg(live_quota.unwrap_or(0));
        for revocation in revocations {
            let name = record_name(&revocation.issuer, &revocation.jti);
            invocation
                .key(format!("{}{name}", self.keys.jti_prefix))
                .arg(name)
                .arg(revocation.expires_at)
                .arg(revocation.keep_until)
                .arg(revocation.provenance.at)
                .arg(&revocation.provenance.by)
                .arg(&revocation.provenance.reason)
                .arg(&revocation.issuer)
                .arg(&revocation.jti)
                .arg(&revocation.subject)
                .arg(&revocation.provenance.source);
        }
        let replies: Vec<(u8, Option<String>)> = self.write(&invocation).await?;
        Ok(replies
            .into_iter()
            .map(|(outcome, cursor)| RevokeOutcome {
                newly_revoked: outcome == 1,
                over_quota: outcome == 2,
                cursor,
            })
            .collect())
    }

    pub(super) async fn revoke_subject(
        &self,
        cutoff: &SubjectCutoff,
        now: i64,
    ) -> Result<CutoffOutcome, Error> {
        let name = record_name(&cutoff.issuer, &cutoff.subject);
        let mut invocation = self.revoke_subject_script.prepare_invoke();
        invocation
            .key(format!("{}{name}", self.keys.sub_prefix))
            .key(&self.keys.sub_expiry)
            .key(&self.keys.log)
            .arg(&name)
            .arg(cutoff.not_before)
            .arg(cutoff.keep_until)
            .arg(cutoff.provenance.at)
            .arg(&cutoff.provenance.by)
            .arg(&cutoff.provenance.reason)
            .arg(&cutoff.issuer)
            .arg(&cutoff.subject)
            .arg(self.log_retention)
            .arg(now)
            .arg(PRUNE_BATCH)
            .arg(&cutoff.provenance.source);
        let (not_before, cursor): (i64, Option<String>) = self.write(&invocation).await?;
        Ok(CutoffOutcome { not_before, cursor })
    }

    pub(super) async fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        subject: Option<&str>,
        now: i64,
    ) -> Result<TokenStatus, Error> {
        let jti_key =
            jti.map(|jti| format!("{}{}", self.keys.jti_prefix, record_name(issuer, jti)));
        let sub_key =
            subject.map(|sub| format!("{}{}", self.keys.sub_prefix, record_name(issuer, sub)));
        let mut pipe = redis::pipe();
        for key in jti_key.iter().chain(sub_key.iter()) {
            pipe.hgetall(key);
        }
        let mut connection = self.connection.clone();
        let mut hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut connection).await?;
        // Replies come in the order asked: the subject's last.
        let cutoff_fields = sub_key.as_ref().and_then(|_| hashes.pop());
        let revocation_fields = jti_key.as_ref().and_then(|_| hashes.pop());
        let revocation = match (jti, jti_key, revocation_fields) {
            (Some(jti), Some(key), Some(fields)) if !fields.is_empty() => {
                Some(Fields::new(&key, &fields).revocation(issuer, jti)?)
            }
            _ => None,
        };
        let cutoff = match (subject, sub_key, cutoff_fields) {
            (Some(subject), Some(key), Some(fields)) if !fields.is_empty() => {
                Some(Fields::new(&key, &fields).cutoff(issuer, subject)?)
            }
            _ => None,
        };
        // Redis expires keys on its own clock; hide records our clock says
        // are past, so both backends answer alike.
        Ok(TokenStatus {
            revocation: revocation.filter(|r| r.keep_until > now),
            cutoff: cutoff.filter(|c| c.keep_until > now),
        })
    }

    pub(super) async fn counts(&self, now: i64) -> Result<Counts, Error> {
        let mut connection = self.connection.clone();
        let live_from = format!("({now}");
        let (revocations, subject_cutoffs): (u64, u64) = redis::pipe()
            .zcount(&self.keys.jti_expiry, &live_from, "+inf")
            .zcount(&self.keys.sub_expiry, &live_from, "+inf")
            .query_async(&mut connection)
            .await?;
        Ok(Counts {
            revocations,
            subject_cutoffs,
        })
    }

    pub(super) async fn digest_key(&self) -> Result<DigestKey, Error> {
        let mut connection = self.connection.clone();
        let candidate = DigestKey::random();
        let (stored,): (Vec<u8>,) = redis::pipe()
            .cmd("SET")
            .arg(&self.keys.digest_key)
            .arg(candidate.as_bytes().as_slice())
            .arg("NX")
            .ignore()
            .get(&self.keys.digest_key)
            .query_async(&mut connection)
            .await?;
        DigestKey::from_slice(&stored).map_err(|e| Error::Corrupt {
            key: self.keys.digest_key.clone(),
            detail: e.to_string(),
        })
    }

    pub(super) async fn log_tail(&self, count: usize) -> Result<LogTail, Error> {
        let mut connection = self.connection.clone();
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.keys.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut connection)
            .await?;
        let head = reply
            .ids
            .first()
            .map_or_else(|| LOG_ORIGIN.to_owned(), |e| e.id.clone());
        let mut entries = reply
            .ids
            .iter()
            .take(count)
            .map(|entry| logged_change(&self.keys.log, entry))
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        let start = (reply.ids.len() < count.max(1)).then(|| LOG_ORIGIN.to_owned());
        Ok(LogTail {
            head,
            entries,
            start,
        })
    }

    pub(super) async fn list(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
        now: i64,
    ) -> Result<Page<Record>, Error> {
        let mut position = match page_token {
            None => Some((ScanIndex::first(filter.kind), 0)),
            Some(token) => Some(ScanIndex::parse_token(token)?),
        };
        let mut items = Vec::new();
        let mut calls = 0;
        while let Some((index, scan_cursor)) = position {
            if items.len() >= page_size || calls == MAX_SCANS_PER_PAGE {
                break;
            }
            calls += 1;
            let (next, members) = self.zscan(index, scan_cursor, page_size).await?;
            position = index.advance(next, filter.kind);
            let live: Vec<String> = members
                .into_iter()
                .filter(|(_, until)| *until > now)
                .map(|(name, _)| name)
                .collect();
            let records = self.read_records(index, &live, now).await?;
            items.extend(records.into_iter().filter(|r| filter.matches(r)));
        }
        Ok(Page {
            items,
            next: position.map(|(index, cursor)| index.token(cursor)),
        })
    }

    /// One `ZSCAN` call over an expiry index: (next cursor, (name, until)).
    async fn zscan(
        &self,
        index: ScanIndex,
        scan_cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, i64)>), Error> {
        let key = match index {
            ScanIndex::Revocations => &self.keys.jti_expiry,
            ScanIndex::Cutoffs => &self.keys.sub_expiry,
        };
        let mut connection = self.connection.clone();
        Ok(redis::cmd("ZSCAN")
            .arg(key)
            .arg(scan_cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut connection)
            .await?)
    }

    /// Reads the named records of one kind in one pipeline; records that
    /// expired meanwhile are skipped.
    async fn read_records(
        &self,
        index: ScanIndex,
        names: &[String],
        now: i64,
    ) -> Result<Vec<Record>, Error> {
        if names.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let prefix = match index {
            ScanIndex::Revocations => &self.keys.jti_prefix,
            ScanIndex::Cutoffs => &self.keys.sub_prefix,
        };
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(format!("{prefix}{name}"));
        }
        let mut connection = self.connection.clone();
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut connection).await?;
        let mut records = Vec::with_capacity(names.len());
        for (name, fields) in names.iter().zip(hashes) {
            let Some((issuer, id)) = parse_record_name(name) else {
                continue;
            };
            if fields.is_empty() {
                continue;
            }
            let key = format!("{prefix}{name}");
            let fields = Fields::new(&key, &fields);
            let record = match index {
                ScanIndex::Revocations => Record::Token(fields.revocation(issuer, id)?),
                ScanIndex::Cutoffs => Record::Subject(fields.cutoff(issuer, id)?),
            };
            if record.change().keep_until() > now {
                records.push(record);
            }
        }
        Ok(records)
    }

    pub(super) async fn audit(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<AuditEntry>, Error> {
        let mut start = match page_token {
            Some(token) if is_stream_id(token) => format!("({token}"),
            Some(_) => return Err(Error::BadPageToken),
            None => format!("{}-0", filter.since.max(0).saturating_mul(1000)),
        };
        let end = match filter.until {
            until if until > 0 => (until.saturating_mul(1000) - 1).to_string(),
            _ => "+".to_owned(),
        };
        let count = page_size.max(1);
        let mut items = Vec::new();
        let mut connection = self.connection.clone();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let reply: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.log)
                .arg(&start)
                .arg(&end)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut connection)
                .await?;
            let Some(last) = reply.ids.last() else {
                return Ok(Page { items, next: None });
            };
            start = format!("({}", last.id);
            let full = reply.ids.len() == count;
            for entry in &reply.ids {
                let entry = log_entry(&self.keys.log, entry)?;
                if filter.matches(&entry.record) {
                    items.push(entry);
                }
            }
            if !full {
                return Ok(Page { items, next: None });
            }
            if items.len() >= count {
                break;
            }
        }
        Ok(Page {
            items,
            next: Some(start[1..].to_owned()),
        })
    }

    pub(super) fn log_reader(&self) -> RedisLogReader {
        RedisLogReader {
            client: self.client.clone(),
            response_timeout: self.response_timeout,
            log: self.keys.log.clone(),
            connection: None,
        }
    }

    pub(super) fn scan_live(&self, now: i64) -> RedisLiveScan {
        RedisLiveScan {
            store: self.clone(),
            now,
            position: Some((ScanIndex::Revocations, 0)),
        }
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(Error::from)
    }
}

// === impl Keys ===

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            jti_prefix: format!("{prefix}{LAYOUT}:jti:"),
            sub_prefix: format!("{prefix}{LAYOUT}:sub:"),
            jti_expiry: format!("{prefix}{LAYOUT}:jti-expiry"),
            sub_expiry: format!("{prefix}{LAYOUT}:sub-expiry"),
            log: format!("{prefix}{LAYOUT}:log"),
            digest_key: format!("{prefix}{LAYOUT}:digest-key"),
            actor_prefix: format!("{prefix}{LAYOUT}:actor-live:"),
        }
    }
}

// === impl RedisLogReader ===

impl std::fmt::Debug for RedisLogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLogReader")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl RedisLogReader {
    pub(super) async fn read_after(
        &mut self,
        cursor: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LoggedChange>, Error> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.response_timeout))
                    .set_response_timeout(Some(wait + self.response_timeout));
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                self.connection.insert(connection)
            }
        };
        let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.log)
            .arg(cursor)
            .query_async(connection)
            .await;
        let reply = reply.inspect_err(|_| self.connection = None)?;
        let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        entries
            .map(|entry| logged_change(&self.log, &entry))
            .collect()
    }
}

// === impl RedisLiveScan ===

impl std::fmt::Debug for RedisLiveScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLiveScan")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl RedisLiveScan {
    pub(super) async fn next_page(&mut self) -> Result<Option<Vec<Change>>, Error> {
        let Some((index, scan_cursor)) = self.position else {
            return Ok(None);
        };
        let (next, members) = self.store.zscan(index, scan_cursor, SCAN_PAGE).await?;
        self.position = index.advance(next, None);
        let live: Vec<(String, i64)> = members
            .into_iter()
            .filter(|(_, until)| *until > self.now)
            .collect();
        let page = match index {
            ScanIndex::Revocations => live
                .iter()
                .filter_map(|(name, keep_until)| {
                    let (issuer, jti) = parse_record_name(name)?;
                    Some(Change::Revoked {
                        issuer: issuer.to_owned(),
                        jti: jti.to_owned(),
                        keep_until: *keep_until,
                    })
                })
                .collect(),
            ScanIndex::Cutoffs => self.cutoffs(&live).await?,
        };
        Ok(Some(page))
    }

    /// Reads the `nbf` of each live cut-off in one pipeline; a record that
    /// expired meanwhile is skipped.
    async fn cutoffs(&self, live: &[(String, i64)]) -> Result<Vec<Change>, Error> {
        if live.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (name, _) in live {
            pipe.hget(format!("{}{name}", self.store.keys.sub_prefix), "nbf");
        }
        let mut connection = self.store.connection.clone();
        let not_befores: Vec<Option<i64>> = pipe.query_async(&mut connection).await?;
        let changes = live
            .iter()
            .zip(not_befores)
            .filter_map(|((name, keep_until), nbf)| {
                let (issuer, subject) = parse_record_name(name)?;
                Some(Change::SubjectCut {
                    issuer: issuer.to_owned(),
                    subject: subject.to_owned(),
                    not_before: nbf?,
                    keep_until: *keep_until,
                })
            });
        Ok(changes.collect())
    }
}

/// Reads one log entry (fields listed in the module doc).
fn log_entry(log: &str, entry: &StreamId) -> Result<AuditEntry, Error> {
    let key = format!("{log} {}", entry.id);
    let fields: HashMap<String, String> = entry
        .map
        .iter()
        .filter_map(|(field, value)| {
            Some((field.clone(), redis::from_redis_value(value.clone()).ok()?))
        })
        .collect();
    let fields = Fields::new(&key, &fields);
    let issuer = fields.text("iss")?;
    let id = fields.text("id")?;
    let record = match fields.text("kind")?.as_str() {
        "jti" => Record::Token(fields.revocation(&issuer, &id)?),
        "sub" => Record::Subject(fields.cutoff(&issuer, &id)?),
        other => {
            return Err(Error::Corrupt {
                key,
                detail: format!("unknown kind {other:?}"),
            })
        }
    };
    Ok(AuditEntry {
        logged_at_ms: stream_id_millis(&entry.id),
        cursor: entry.id.clone(),
        record,
    })
}

/// Reads one log entry as the filter needs it.
fn logged_change(log: &str, entry: &StreamId) -> Result<LoggedChange, Error> {
    let entry = log_entry(log, entry)?;
    Ok(LoggedChange {
        change: entry.record.change(),
        cursor: entry.cursor,
        logged_at_ms: entry.logged_at_ms,
    })
}

/// The time part of a stream ID (`<milliseconds>-<sequence>`).
fn stream_id_millis(id: &str) -> i64 {
    id.split_once('-')
        .and_then(|(millis, _)| millis.parse().ok())
        .unwrap_or(0)
}

/// A stored hash (or log entry) being read back into a record.
struct Fields<'a> {
    key: &'a str,
    fields: &'a HashMap<String, String>,
}

impl<'a> Fields<'a> {
    fn new(key: &'a str, fields: &'a HashMap<String, String>) -> Self {
        Self { key, fields }
    }

    fn revocation(&self, issuer: &str, jti: &str) -> Result<Revocation, Error> {
        Ok(Revocation {
            issuer: issuer.to_owned(),
            jti: jti.to_owned(),
            subject: self.optional("sub"),
            expires_at: self.number("exp")?,
            keep_until: self.number("until")?,
            provenance: self.provenance()?,
        })
    }

    fn cutoff(&self, issuer: &str, subject: &str) -> Result<SubjectCutoff, Error> {
        Ok(SubjectCutoff {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            not_before: self.number("nbf")?,
            keep_until: self.number("until")?,
            provenance: self.provenance()?,
        })
    }

    fn provenance(&self) -> Result<Provenance, Error> {
        Ok(Provenance {
            at: self.number("at")?,
            by: self.text("by")?,
            reason: self.text("reason")?,
            source: self.optional("from"),
        })
    }

    /// A field added after the first layout: empty when missing.
    fn optional(&self, field: &str) -> String {
        self.fields.get(field).cloned().unwrap_or_default()
    }

    fn text(&self, field: &str) -> Result<String, Error> {
        self.fields
            .get(field)
            .cloned()
            .ok_or_else(|| Error::Corrupt {
                key: self.key.to_owned(),
                detail: format!("field `{field}` is missing"),
            })
    }

    fn number(&self, field: &str) -> Result<i64, Error> {
        self.text(field)?.parse().map_err(|_| Error::Corrupt {
            key: self.key.to_owned(),
            detail: format!("field `{field}` is not an integer"),
        })
    }
}
