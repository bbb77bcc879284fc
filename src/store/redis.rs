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
//! | `{prefix}v1:digest-key`        | string | the 16-byte key of filter digests          | permanent; set once with `SET NX` |
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

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script};

use super::{
    parse_record_name, record_name, Change, Counts, CutoffOutcome, Error, LogTail, LoggedChange,
    Provenance, Revocation, RevokeOutcome, SubjectCutoff, TokenStatus,
};
use crate::filter::DigestKey;

/// Layout version, part of every key.
const LAYOUT: &str = "v1";
/// Index entries pruned per write at most, to bound a script's run time.
const PRUNE_BATCH: u32 = 64;
/// Records asked for per `ZSCAN` call when walking the live set.
const SCAN_PAGE: usize = 1_000;
/// The cursor before the first entry of a stream.
const LOG_ORIGIN: &str = "0-0";

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
    client: redis::Client,
    response_timeout: Duration,
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
    digest_key: String,
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
        Ok(Self {
            client,
            response_timeout: options.response_timeout,
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
        let keys = &self.store.keys;
        let key = match index {
            ScanIndex::Revocations => &keys.jti_expiry,
            ScanIndex::Cutoffs => &keys.sub_expiry,
        };
        let mut connection = self.store.connection.clone();
        let (next, members): (u64, Vec<(String, i64)>) = redis::cmd("ZSCAN")
            .arg(key)
            .arg(scan_cursor)
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(&mut connection)
            .await?;
        self.position = match (next, index) {
            (0, ScanIndex::Revocations) => Some((ScanIndex::Cutoffs, 0)),
            (0, ScanIndex::Cutoffs) => None,
            (next, index) => Some((index, next)),
        };
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
fn logged_change(log: &str, entry: &StreamId) -> Result<LoggedChange, Error> {
    let corrupt = |detail: &str| Error::Corrupt {
        key: format!("{log} {}", entry.id),
        detail: detail.to_owned(),
    };
    let text = |field: &str| {
        entry
            .get::<String>(field)
            .ok_or_else(|| corrupt(&format!("field `{field}` is missing")))
    };
    let number = |field: &str| {
        text(field)?
            .parse::<i64>()
            .map_err(|_| corrupt(&format!("field `{field}` is not an integer")))
    };
    let change = match text("kind")?.as_str() {
        "jti" => Change::Revoked {
            issuer: text("iss")?,
            jti: text("id")?,
            keep_until: number("until")?,
        },
        "sub" => Change::SubjectCut {
            issuer: text("iss")?,
            subject: text("id")?,
            not_before: number("nbf")?,
            keep_until: number("until")?,
        },
        other => return Err(corrupt(&format!("unknown kind {other:?}"))),
    };
    Ok(LoggedChange {
        cursor: entry.id.clone(),
        change,
    })
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
