//! The Redis store: durable, shared by every replica, on one Redis (with
//! its replicas) or a Redis Cluster.
//!
//! # Keys
//!
//! Every key starts with the configured prefix (default `revocd:`) followed by
//! a layout version, so a future layout can live beside this one. A record
//! name is `<issuer byte length>:<issuer>:<id>` (see `record_name`), which is
//! unambiguous whatever the issuer contains.
//!
//! The change log is split into `partitions` (1 unless configured; fixed per
//! deployment, recorded in Redis and checked at start). A record belongs to
//! partition `fnv1a64(record name) mod partitions`, and every key of a
//! partition carries the hash tag `{p<n>}`, so a record, its index entries and
//! its log entry share a cluster slot and one script writes them atomically.
//!
//! | key                                   | type   | contents                                   | lifetime                         |
//! |---------------------------------------|--------|--------------------------------------------|----------------------------------|
//! | `{prefix}v1:{p<n>}:jti:<record>`      | hash   | `exp`, `until`, `at`, `by`, `reason`, `sub`, `from` | `EXPIREAT until` (`exp` + leeway) |
//! | `{prefix}v1:{p<n>}:sub:<record>`      | hash   | `nbf`, `until`, `at`, `by`, `reason`, `from` | `EXPIREAT until` (`nbf` + max token lifetime + leeway) |
//! | `{prefix}v1:{p<n>}:jti-expiry`        | zset   | record name scored by `until`              | permanent; expired members pruned on write |
//! | `{prefix}v1:{p<n>}:sub-expiry`        | zset   | the same for subject cut-offs              | permanent; pruned likewise       |
//! | `{prefix}v1:{p<n>}:log`               | stream | one entry per change (see below)           | trimmed to about `retention` entries |
//! | `{prefix}v1:{p<n>}:actor-live:<key name>` | zset | record names of the key's revocations, scored by `until` | kept only for keys with `max_live_revocations`; pruned on write |
//! | `{prefix}v1:digest-key`               | string | the 16-byte key of filter digests          | permanent; set once with `SET NX` |
//! | `{prefix}v1:partitions`               | string | the number of log partitions               | permanent; set once with `SET NX` |
//!
//! A log entry has the fields `kind` (`jti` or `sub`), `iss`, `id` (the jti
//! or subject), `sub` (jti: the token's subject, when known), `exp` (jti) or
//! `nbf` (sub), `until`, `at`, `by`, `reason` and `from` (the caller's
//! address). Its stream ID's first part is the time of the append in
//! milliseconds, which is what the audit trail's time range uses. `sub` and
//! `from` may be missing from records written before they existed.
//!
//! A log cursor is the stream ID of each partition, joined by `,` (with one
//! partition, just the stream ID); see the `log` module.
//!
//! The expiry indexes let the live counts be read with one `ZCOUNT` per
//! partition, and let the live set be walked in pages without `SCAN`ning the
//! keyspace.
//!
//! Each write is one Lua script: the record, its index entry and its log
//! entry are written together or not at all, and the reply (with the
//! cursor) is sent only after Redis executed all of it. A batch of token
//! revocations is one script call per partition, each item atomic on its
//! own.
//!
//! # Durability
//!
//! [`Durability::Fast`] acknowledges once Redis has executed the script: what
//! survives a crash of Redis is what its `appendfsync` policy wrote (with the
//! usual `everysec`, up to a second of acknowledged writes can be lost).
//! [`Durability::Strict`] acknowledges only once the write is on disk:
//! `WAITAOF 1 0` on Redis 7.2 and later; on older Redis it refuses to start
//! unless `appendonly yes` and `appendfsync always` are set (on every node
//! named), under which Redis writes to disk before it replies.
//! `wait_replicas` adds `WAIT`, so the write has also reached that many
//! replicas. The waits travel in the write's own pipeline, so they go to the
//! node that took the write, in cluster mode too.

mod log;
mod scan;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Script, ServerErrorKind, Value};

use super::{
    record_name, Counts, CutoffOutcome, Error, Provenance, Revocation, RevokeOutcome,
    SubjectCutoff, TokenStatus,
};
use crate::filter::DigestKey;

pub use self::log::RedisLogReader;
pub use self::scan::RedisLiveScan;

/// Layout version, part of every key.
const LAYOUT: &str = "v1";
/// Index entries pruned per write at most, to bound a script's run time.
const PRUNE_BATCH: u32 = 64;
/// Most log partitions a deployment may have.
pub const MAX_PARTITIONS: u16 = 1_024;

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

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisNodes {
    /// One Redis (or whatever one URL reaches):
    /// `redis://[user:password@]host:port[/db]` or a Unix socket
    /// (`redis+unix:///path`); this build has no TLS, so no `rediss://`.
    Single(String),
    /// A Redis Cluster, through any of these nodes' URLs.
    Cluster(Vec<String>),
}

/// Reserves room under a caller's quota of live revocations when the log
/// has several partitions (the caller's index then lives in a partition of
/// its own, so the count cannot be taken in the write's script). Returns 1
/// per reserved item, 0 per item over the quota. A record already reserved
/// is reserved again at no cost; a reservation whose write then fails
/// counts until the record would have expired, which errs on the safe side.
///
/// KEYS: the caller's live index.
/// ARGV: now, quota, prune batch, then per item: record name, until.
const RESERVE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[3])
if #stale > 0 then redis.call('ZREM', KEYS[1], unpack(stale)) end
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local replies = {}
for a = 4, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[a]) then
    redis.call('ZADD', KEYS[1], 'GT', ARGV[a + 1], ARGV[a])
    replies[#replies + 1] = 1
  elseif live < quota then
    redis.call('ZADD', KEYS[1], ARGV[a + 1], ARGV[a])
    live = live + 1
    replies[#replies + 1] = 1
  else
    replies[#replies + 1] = 0
  end
end
return replies
"#;

/// How to reach Redis and lay out the keys.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// Where Redis is.
    pub nodes: RedisNodes,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Number of log partitions; fixed for the life of a deployment.
    pub partitions: u16,
    /// Approximate number of change-log entries kept per partition
    /// (`XADD MAXLEN ~`).
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
/// multiplexed connection (one per node in a cluster), which reconnects by
/// itself after Redis returns.
#[derive(Clone)]
pub struct RedisStore {
    nodes: RedisNodes,
    response_timeout: Duration,
    connection: Connection,
    keys: Keys,
    log_retention: u64,
    write_policy: WritePolicy,
    revoke_script: Script,
    revoke_subject_script: Script,
    reserve_script: Script,
}

/// A connection to one Redis or to a cluster; commands and pipelines go
/// through it alike (a cluster pipeline must stay within one slot).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The key names, built once from the prefix.
#[derive(Debug, Clone)]
struct Keys {
    partitions: Vec<PartitionKeys>,
    digest_key: String,
    partition_count: String,
}

/// The keys of one partition; they share its hash tag.
#[derive(Debug, Clone)]
struct PartitionKeys {
    jti_prefix: String,
    sub_prefix: String,
    jti_expiry: String,
    sub_expiry: String,
    log: String,
    actor_prefix: String,
}

// === impl RedisStore ===

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may hold a password.
        f.debug_struct("RedisStore")
            .field("partitions", &self.keys.partitions.len())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis, checks that it answers and that the deployment's
    /// partition count is the one configured.
    ///
    /// # Errors
    /// A malformed URL, a Redis that cannot be reached now, or one that
    /// cannot give what the options ask ([`Error::Unsuitable`]).
    pub async fn connect(options: &RedisStoreOptions) -> Result<Self, Error> {
        let connection = match &options.nodes {
            RedisNodes::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(Error::Backend)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.response_timeout))
                    .set_response_timeout(Some(options.response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                Connection::Single(ConnectionManager::new_with_config(client, config).await?)
            }
            RedisNodes::Cluster(urls) => {
                let client = redis::cluster::ClusterClient::builder(urls.clone())
                    .connection_timeout(options.response_timeout)
                    .response_timeout(options.response_timeout)
                    .retries(2)
                    .build()
                    .map_err(Error::Backend)?;
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        let mut store = Self {
            nodes: options.nodes.clone(),
            response_timeout: options.response_timeout,
            connection,
            keys: Keys::new(&options.key_prefix, options.partitions),
            log_retention: options.log_retention,
            write_policy: WritePolicy::default(),
            revoke_script: Script::new(REVOKE_SCRIPT),
            revoke_subject_script: Script::new(REVOKE_SUBJECT_SCRIPT),
            reserve_script: Script::new(RESERVE_SCRIPT),
        };
        store.check_partitions().await?;
        store.write_policy = store.write_policy(options).await?;
        Ok(store)
    }

    /// The store's name as `GetStats` reports it.
    pub(super) fn kind(&self) -> &'static str {
        match self.nodes {
            RedisNodes::Single(_) => "redis",
            RedisNodes::Cluster(_) => "redis-cluster",
        }
    }

    /// Records the partition count on first use; refuses another one later,
    /// since records would be looked for in the wrong partition.
    async fn check_partitions(&self) -> Result<(), Error> {
        let configured = self.keys.partitions.len();
        let mut connection = self.connection.clone();
        let (stored,): (usize,) = redis::pipe()
            .cmd("SET")
            .arg(&self.keys.partition_count)
            .arg(configured)
            .arg("NX")
            .ignore()
            .get(&self.keys.partition_count)
            .query_async(&mut connection)
            .await?;
        if stored != configured {
            return Err(Error::Unsuitable(format!(
                "this deployment's change log has {stored} partitions (recorded in Redis at {}); --log-partitions {configured} would look for records in the wrong places. Use --log-partitions {stored}",
                self.keys.partition_count
            )));
        }
        Ok(())
    }

    /// Decides what writes wait for; refuses a Redis that cannot give what
    /// `options.durability` asks. In a cluster, every node named in the
    /// options is checked.
    async fn write_policy(&self, options: &RedisStoreOptions) -> Result<WritePolicy, Error> {
        let mut policy = WritePolicy {
            wait_aof: false,
            wait_replicas: options.wait_replicas,
        };
        if options.durability == Durability::Fast {
            return Ok(policy);
        }
        let nodes = match &self.nodes {
            RedisNodes::Single(_) => vec![self.connection.clone()],
            RedisNodes::Cluster(urls) => {
                let mut nodes = Vec::with_capacity(urls.len());
                for url in urls {
                    let client = redis::Client::open(url.as_str()).map_err(Error::Backend)?;
                    nodes.push(Connection::Single(ConnectionManager::new(client).await?));
                }
                nodes
            }
        };
        let mut versions = Vec::with_capacity(nodes.len());
        for node in &nodes {
            versions.push(redis_version(&mut node.clone()).await?);
        }
        if versions.iter().all(|v| v.as_slice() >= [7, 2].as_slice()) {
            policy.wait_aof = true;
            return Ok(policy);
        }
        for node in &nodes {
            let appendonly = setting(&mut node.clone(), "appendonly").await?;
            let appendfsync = setting(&mut node.clone(), "appendfsync").await?;
            if appendonly != "yes" || appendfsync != "always" {
                return Err(not_strict(format!(
                    "this Redis is older than 7.2 and has appendonly {appendonly:?}, appendfsync {appendfsync:?}"
                )));
            }
        }
        Ok(policy)
    }

    /// Runs a write script, then the waits the write policy asks for, on
    /// one connection in one pipeline (so the waits cover this write, and go
    /// to the node that took it).
    async fn write<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        // The waits share half the response timeout, so Redis answers them
        // (with what it reached) before the client gives up on the reply.
        let policy = self.write_policy;
        let waits = u32::from(policy.wait_aof) + u32::from(policy.wait_replicas > 0);
        let timeout_ms = (self.response_timeout / (2 * waits.max(1)))
            .as_millis()
            .max(1) as u64;
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
        let mut replies: Vec<Value> = match pipe.query_async(&mut connection).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                invocation.load_async(&mut connection).await?;
                pipe.query_async(&mut connection).await?
            }
            reply => reply?,
        };
        if self.write_policy.wait_replicas > 0 {
            let reached: u32 = redis::from_redis_value(replies.pop().unwrap_or(Value::Nil))?;
            if reached < self.write_policy.wait_replicas {
                return Err(Error::NotDurable(format!(
                    "the write reached {reached} of the {} replicas asked for in time",
                    self.write_policy.wait_replicas
                )));
            }
        }
        if self.write_policy.wait_aof {
            let (local, _replicas): (u32, u32) =
                redis::from_redis_value(replies.pop().unwrap_or(Value::Nil))?;
            if local == 0 {
                return Err(Error::NotDurable(
                    "Redis did not confirm the write on disk in time (WAITAOF)".to_owned(),
                ));
            }
        }
        let reply = replies.pop().unwrap_or(Value::Nil);
        Ok(redis::from_redis_value(reply)?)
    }

    /// The partition a record belongs to, and its keys.
    fn partition_of(&self, name: &str) -> (usize, &PartitionKeys) {
        let index = partition_index(name, self.keys.partitions.len());
        (index, &self.keys.partitions[index])
    }

    /// A write's cursor: the stream ID, prefixed with its partition when
    /// there are several (a change is in one partition's log only).
    fn write_cursor(&self, partition: usize, id: Option<String>) -> Option<String> {
        match self.keys.partitions.len() {
            1 => id,
            _ => id.map(|id| format!("{partition}:{id}")),
        }
    }

    pub(super) async fn revoke_batch(
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
        // Admitted items by partition, keeping their positions.
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (position, revocation) in revocations.iter().enumerate() {
            if admitted[position] {
                let name = record_name(&revocation.issuer, &revocation.jti);
                groups
                    .entry(self.partition_of(&name).0)
                    .or_default()
                    .push(position);
            }
        }
        let calls = groups.into_iter().map(|(partition, positions)| {
            let keys = &self.keys.partitions[partition];
            let mut invocation = self.revoke_script.prepare_invoke();
            let actor = &revocations[positions[0]].provenance.by;
            invocation
                .key(&keys.jti_expiry)
                .key(&keys.log)
                .key(format!("{}{actor}", keys.actor_prefix))
                .arg(self.log_retention)
                .arg(now)
                .arg(PRUNE_BATCH)
                .arg(in_script_quota);
            for &position in &positions {
                let revocation = &revocations[position];
                let name = record_name(&revocation.issuer, &revocation.jti);
                invocation
                    .key(format!("{}{name}", keys.jti_prefix))
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

    /// Reserves room for each revocation under its caller's quota (see
    /// [`RESERVE_SCRIPT`]); true per admitted item.
    async fn reserve(
        &self,
        revocations: &[Revocation],
        now: i64,
        quota: u64,
    ) -> Result<Vec<bool>, Error> {
        let Some(first) = revocations.first() else {
            return Ok(Vec::new());
        };
        let actor = &first.provenance.by;
        let (_, keys) = self.partition_of(actor);
        let mut invocation = self.reserve_script.prepare_invoke();
        invocation
            .key(format!("{}{actor}", keys.actor_prefix))
            .arg(now)
            .arg(quota)
            .arg(PRUNE_BATCH);
        for revocation in revocations {
            invocation
                .arg(record_name(&revocation.issuer, &revocation.jti))
                .arg(revocation.keep_until);
        }
        let replies: Vec<u8> = self.write(&invocation).await?;
        Ok(replies.into_iter().map(|reply| reply == 1).collect())
    }

    pub(super) async fn revoke_subject(
        &self,
        cutoff: &SubjectCutoff,
        now: i64,
    ) -> Result<CutoffOutcome, Error> {
        let name = record_name(&cutoff.issuer, &cutoff.subject);
        let (partition, keys) = self.partition_of(&name);
        let mut invocation = self.revoke_subject_script.prepare_invoke();
        invocation
            .key(format!("{}{name}", keys.sub_prefix))
            .key(&keys.sub_expiry)
            .key(&keys.log)
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
        Ok(CutoffOutcome {
            not_before,
            cursor: self.write_cursor(partition, cursor),
        })
    }

    /// Reads one record hash; empty when there is none.
    async fn hash(&self, key: &str) -> Result<HashMap<String, String>, Error> {
        let mut connection = self.connection.clone();
        Ok(redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut connection)
            .await?)
    }

    pub(super) async fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        subject: Option<&str>,
        now: i64,
    ) -> Result<TokenStatus, Error> {
        let jti_key = jti.map(|jti| {
            let name = record_name(issuer, jti);
            format!("{}{name}", self.partition_of(&name).1.jti_prefix)
        });
        let sub_key = subject.map(|subject| {
            let name = record_name(issuer, subject);
            format!("{}{name}", self.partition_of(&name).1.sub_prefix)
        });
        // Two keys of two partitions may live on two nodes: two commands,
        // sent together over the multiplexed connection.
        let read = |key: Option<String>| async move {
            match key {
                Some(key) => {
                    let fields = self.hash(&key).await?;
                    Ok::<_, Error>(Some((key, fields)).filter(|(_, f)| !f.is_empty()))
                }
                None => Ok(None),
            }
        };
        let (revocation_fields, cutoff_fields) = tokio::try_join!(read(jti_key), read(sub_key))?;
        let revocation = match (jti, revocation_fields) {
            (Some(jti), Some((key, fields))) => {
                Some(Fields::new(&key, &fields).revocation(issuer, jti)?)
            }
            _ => None,
        };
        let cutoff = match (subject, cutoff_fields) {
            (Some(subject), Some((key, fields))) => {
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
        let live_from = format!("({now}");
        let per_partition = self.keys.partitions.iter().map(|keys| {
            let mut connection = self.connection.clone();
            let live_from = &live_from;
            async move {
                let counts: (u64, u64) = redis::pipe()
                    .zcount(&keys.jti_expiry, live_from, "+inf")
                    .zcount(&keys.sub_expiry, live_from, "+inf")
                    .query_async(&mut connection)
                    .await?;
                Ok::<_, Error>(counts)
            }
        });
        let counts = try_join_all(per_partition).await?;
        Ok(Counts {
            revocations: counts.iter().map(|c| c.0).sum(),
            subject_cutoffs: counts.iter().map(|c| c.1).sum(),
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

    pub(super) async fn ping(&self) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(Error::from)
    }
}

/// The server's version, as numbers (`[7, 0, 15]`).
async fn redis_version(node: &mut Connection) -> Result<Vec<u32>, Error> {
    let info: String = redis::cmd("INFO").arg("server").query_async(node).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(|v| {
            v.trim()
                .split('.')
                .map(|part| part.parse::<u32>().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default())
}

/// One configuration value (`CONFIG GET`).
async fn setting(node: &mut Connection, name: &str) -> Result<String, Error> {
    let reply: Result<Vec<String>, redis::RedisError> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(node)
        .await;
    match reply.map_err(Error::from) {
        Ok(pair) => Ok(pair.get(1).cloned().unwrap_or_default()),
        Err(error) if error.is_unavailable() => Err(error),
        Err(error) => Err(not_strict(format!(
            "this Redis is older than 7.2 and `CONFIG GET {name}` failed ({error})"
        ))),
    }
}

fn not_strict(detail: String) -> Error {
    Error::Unsuitable(format!(
        "--durability strict needs Redis 7.2 or later (for WAITAOF) or `appendonly yes` with `appendfsync always`; {detail}"
    ))
}

/// The partition of a record name: FNV-1a (64-bit) modulo the count, the
/// same in every process and version.
fn partition_index(name: &str, partitions: usize) -> usize {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % partitions as u64) as usize
}

// === impl Keys ===

impl Keys {
    fn new(prefix: &str, partitions: u16) -> Self {
        let partitions = (0..partitions.max(1))
            .map(|n| {
                let base = format!("{prefix}{LAYOUT}:{{p{n}}}:");
                PartitionKeys {
                    jti_prefix: format!("{base}jti:"),
                    sub_prefix: format!("{base}sub:"),
                    jti_expiry: format!("{base}jti-expiry"),
                    sub_expiry: format!("{base}sub-expiry"),
                    log: format!("{base}log"),
                    actor_prefix: format!("{base}actor-live:"),
                }
            })
            .collect();
        Self {
            partitions,
            digest_key: format!("{prefix}{LAYOUT}:digest-key"),
            partition_count: format!("{prefix}{LAYOUT}:partitions"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_records_evenly_and_never_move_them() {
        let mut counts = [0usize; 8];
        for i in 0..8_000 {
            counts[partition_index(&record_name("https://issuer.test", &format!("jti-{i}")), 8)] +=
                1;
        }
        assert!(
            counts.iter().all(|&c| (800..1_200).contains(&c)),
            "{counts:?}"
        );
        // Fixed values: a change of hash would strand every stored record.
        assert_eq!(
            partition_index("19:https://issuer.test:abc", 16),
            partition_index("19:https://issuer.test:abc", 16)
        );
        assert_eq!(
            partition_index("", 7),
            (0xcbf2_9ce4_8422_2325_u64 % 7) as usize
        );
    }

    #[test]
    fn every_key_of_a_partition_shares_its_hash_tag() {
        let keys = Keys::new("revocd:", 3);
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            key[open + 1..close].to_owned()
        };
        for (n, partition) in keys.partitions.iter().enumerate() {
            let expected = format!("p{n}");
            for key in [
                format!("{}7:iss:{{}}x", partition.jti_prefix),
                format!("{}7:iss:x", partition.sub_prefix),
                partition.jti_expiry.clone(),
                partition.sub_expiry.clone(),
                partition.log.clone(),
                format!("{}auth-server", partition.actor_prefix),
            ] {
                assert_eq!(tag(&key), expected, "{key}");
            }
        }
    }
}
