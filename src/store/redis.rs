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
//! | `{prefix}v1:jti:<record>`      | hash   | `exp`, `until`, `at`, `by`, `reason`       | `EXPIREAT until` (`exp` + leeway) |
//! | `{prefix}v1:sub:<record>`      | hash   | `nbf`, `until`, `at`, `by`, `reason`       | `EXPIREAT until` (`nbf` + max token lifetime + leeway) |
//! | `{prefix}v1:jti-expiry`        | zset   | record name scored by `until`              | permanent; expired members pruned on write |
//! | `{prefix}v1:sub-expiry`        | zset   | the same for subject cut-offs              | permanent; pruned likewise       |
//! | `{prefix}v1:log`               | stream | one entry per change (see below)           | trimmed to about `retention` entries |
//!
//! A log entry has the fields `kind` (`jti` or `sub`), `iss`, `id` (the jti
//! or subject), `exp` (jti) or `nbf` (sub), `until`, `at`, `by`, `reason`.
//! The stream ID is the cursor.
//!
//! The expiry indexes let the live counts be read with one `ZCOUNT`, and let
//! the live set be walked in pages without `SCAN`ning the keyspace.
//!
//! Each write is one Lua script: the record, its index entry and its log
//! entry are written together or not at all, and the reply (with the
//! cursor) is sent only after Redis executed all of it.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{
    record_name, Counts, CutoffOutcome, Error, Provenance, Revocation, RevokeOutcome,
    SubjectCutoff, TokenStatus,
};

/// Layout version, part of every key.
const LAYOUT: &str = "v1";
/// Index entries pruned per write at most, to bound a script's run time.
const PRUNE_BATCH: u32 = 64;

/// Stores a revocation. Returns `{newly_revoked (0/1), cursor or false}`.
///
/// KEYS: record, expiry index, log.
/// ARGV: record name, exp, until, at, by, reason, issuer, jti, retention, now, prune batch.
const REVOKE_SCRIPT: &str = r#"
local stored_until = tonumber(redis.call('HGET', KEYS[1], 'until'))
if stored_until and stored_until >= tonumber(ARGV[3]) then
  return {0, false}
end
if stored_until then
  redis.call('HSET', KEYS[1], 'exp', ARGV[2], 'until', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'exp', ARGV[2], 'until', ARGV[3], 'at', ARGV[4], 'by', ARGV[5], 'reason', ARGV[6])
end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[10], 'LIMIT', 0, ARGV[11])
if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end
local cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*',
  'kind', 'jti', 'iss', ARGV[7], 'id', ARGV[8], 'exp', ARGV[2], 'until', ARGV[3],
  'at', ARGV[4], 'by', ARGV[5], 'reason', ARGV[6])
if stored_until then return {0, cursor} end
return {1, cursor}
"#;

/// Stores a subject cut-off unless an equal or later one is in force.
/// Returns `{not_before in force, cursor or false}`.
///
/// KEYS: record, expiry index, log.
/// ARGV: record name, nbf, until, at, by, reason, issuer, subject, retention, now, prune batch.
const REVOKE_SUBJECT_SCRIPT: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'nbf'))
if current and current >= tonumber(ARGV[2]) then
  return {current, false}
end
redis.call('HSET', KEYS[1], 'nbf', ARGV[2], 'until', ARGV[3], 'at', ARGV[4], 'by', ARGV[5], 'reason', ARGV[6])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[10], 'LIMIT', 0, ARGV[11])
if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end
local cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*',
  'kind', 'sub', 'iss', ARGV[7], 'id', ARGV[8], 'nbf', ARGV[2], 'until', ARGV[3],
  'at', ARGV[4], 'by', ARGV[5], 'reason', ARGV[6])
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
}

/// A revocation store in Redis. Cheap to clone: clones share one
/// multiplexed connection, which reconnects by itself after Redis returns.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    keys: Keys,
    log_retention: u64,
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
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            keys: Keys::new(&options.key_prefix),
            log_retention: options.log_retention,
            revoke_script: Script::new(REVOKE_SCRIPT),
            revoke_subject_script: Script::new(REVOKE_SUBJECT_SCRIPT),
        })
    }

    pub(super) async fn revoke(
        &self,
        revocation: &Revocation,
        now: i64,
    ) -> Result<RevokeOutcome, Error> {
        let name = record_name(&revocation.issuer, &revocation.jti);
        let mut connection = self.connection.clone();
        let (newly_revoked, cursor): (u8, Option<String>) = self
            .revoke_script
            .key(format!("{}{name}", self.keys.jti_prefix))
            .key(&self.keys.jti_expiry)
            .key(&self.keys.log)
            .arg(&name)
            .arg(revocation.expires_at)
            .arg(revocation.keep_until)
            .arg(revocation.provenance.at)
            .arg(&revocation.provenance.by)
            .arg(&revocation.provenance.reason)
            .arg(&revocation.issuer)
            .arg(&revocation.jti)
            .arg(self.log_retention)
            .arg(now)
            .arg(PRUNE_BATCH)
            .invoke_async(&mut connection)
            .await?;
        Ok(RevokeOutcome {
            newly_revoked: newly_revoked == 1,
            cursor,
        })
    }

    pub(super) async fn revoke_subject(
        &self,
        cutoff: &SubjectCutoff,
        now: i64,
    ) -> Result<CutoffOutcome, Error> {
        let name = record_name(&cutoff.issuer, &cutoff.subject);
        let mut connection = self.connection.clone();
        let (not_before, cursor): (i64, Option<String>) = self
            .revoke_subject_script
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
            .invoke_async(&mut connection)
            .await?;
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
                Some(Record::new(&key, &fields).revocation(issuer, jti)?)
            }
            _ => None,
        };
        let cutoff = match (subject, sub_key, cutoff_fields) {
            (Some(subject), Some(key), Some(fields)) if !fields.is_empty() => {
                Some(Record::new(&key, &fields).cutoff(issuer, subject)?)
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
        }
    }
}

/// A stored hash being read back into a record.
struct Record<'a> {
    key: &'a str,
    fields: &'a HashMap<String, String>,
}

impl<'a> Record<'a> {
    fn new(key: &'a str, fields: &'a HashMap<String, String>) -> Self {
        Self { key, fields }
    }

    fn revocation(&self, issuer: &str, jti: &str) -> Result<Revocation, Error> {
        Ok(Revocation {
            issuer: issuer.to_owned(),
            jti: jti.to_owned(),
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
        })
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
