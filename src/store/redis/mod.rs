//! The Redis store: durable, shared by every replica, on one Redis (with
//! its replicas) or a Redis Cluster.
//!
//! Each write is one Lua script: the record, its index entry and its log
//! entry are written together or not at all, and the reply (with the
//! cursor) is sent only after Redis executed all of it. A batch of token
//! revocations is one script call per partition, each item atomic on its
//! own.
//!
//! # Layout
//!
//! - `keys.rs`: the key names of the table below, and the partitions.
//! - `revoke.rs`, `reserve.rs`, `cutoff.rs`: one write script each,
//!   beside the Rust that fills its arguments.
//! - `decode.rs`: the one reader of records and log entries.
//! - `durability.rs`: when a write is acknowledged (`WAITAOF`, `WAIT`,
//!   `appendfsync` at start).
//! - `connection.rs`: one Redis or a cluster, and what a Redis error means
//!   to callers.
//! - `log.rs`: following the change log, cursors and gap detection;
//!   `history.rs`: its newest end and the audit trail.
//! - `scan.rs`: listings and the filter's full load.
//! - here: the store, connecting, lookups and counts.
//!
//! # Keys
//!
//! Every key starts with the configured prefix (default `revocd:`) followed by
//! a layout version, so a future layout can live beside this one.
//! A record name is `<issuer byte length>:<issuer>:<id>` (see `record_name`),
//! which is unambiguous whatever the issuer contains.
//!
//! The change log is split into `partitions` (1 unless configured; fixed per
//! deployment, recorded in Redis and checked at start). A record belongs to
//! partition `fnv1a64(record name) mod partitions`, and every key of a
//! partition carries the hash tag `{p<n>}`, so a record, its index entries and
//! its log entry share a cluster slot and one script writes them atomically.
//!
//! | key                                   | type   | contents                                   | lifetime                         |
//! |---------------------------------------|--------|--------------------------------------------|----------------------------------|
//! | `{prefix}v1:{p<n>}:jti:<record>`      | string | the revocation packed (`packed.rs`): `exp`, `until`, `at`, `by`, `sub`, `from`, `reason`; a hash of those fields when written before packing | `EXAT until` (`exp` + leeway) |
//! | `{prefix}v1:{p<n>}:sub:<record>`      | hash   | `nbf`, `until`, `at`, `by`, `reason`, `from` | `EXPIREAT until` (`nbf` + max token lifetime + leeway) |
//! | `{prefix}v1:{p<n>}:cut:<record>`      | hash   | as `sub:`, for a cut-off by another claim; the record name is `record_name(issuer, record_name(claim, value))` | as `sub:` |
//! | `{prefix}v1:{p<n>}:jti-expiry`        | zset   | record name scored by `until`              | permanent; expired members pruned on write |
//! | `{prefix}v1:{p<n>}:sub-expiry`        | zset   | the same for subject cut-offs              | permanent; pruned likewise       |
//! | `{prefix}v1:{p<n>}:cut-expiry`        | zset   | the same for the other cut-offs            | permanent; pruned likewise       |
//! | `{prefix}v1:{p<n>}:log`               | stream | one entry per change (see below)           | trimmed to about `retention` entries |
//! | `{prefix}v1:{p<n>}:actor-live:<key name>` | zset | record names of the key's revocations, scored by `until` | kept only for keys with `max_live_revocations`; pruned on write |
//! | `{prefix}v1:digest-key`               | string | the 16-byte key of filter digests          | permanent; set once with `SET NX` |
//! | `{prefix}v1:partitions`               | string | the number of log partitions               | permanent; set once with `SET NX` |
//!
//! A log entry has the fields `kind` (`jti`, `sub` or `claim`), `iss`, `id`
//! (the jti, subject or claim value) and `until`: what a follower applies.
//! A token revocation's entry adds `rec`, the revocation packed as its
//! record is; with `--log-entry-format 2` ([`EntryFormat`]) it is instead
//! the one field `rev`, holding the issuer, the jti and the packed
//! revocation (`packed.rs`). A cut-off's adds `claim` (the claim), `nbf`, `at`, `by`,
//! `reason` and `from` (the caller's address). A token revocation's entry
//! written before packing has `sub`, `exp`, `at`, `by`, `reason` and `from`
//! instead of `rec`. Its stream ID's first part is the time of the append
//! in milliseconds, which is what the audit trail's time range uses. `sub`
//! and `from` may be missing from records written before they existed. The
//! scripts that write records and entries are in `revoke.rs` and
//! `cutoff.rs`; the one reader of both is `decode.rs`.
//!
//! Token revocations were packed into one string (record and entry) to
//! cut what each costs Redis: one `SET NX EXAT` instead of `HGET`, `HSET`
//! of seven fields and `EXPIREAT`, and five entry fields instead of ten.
//! Hashes written before remain readable, and are extended as hashes,
//! until they expire; a replica of the earlier version meets a packed
//! record as a `WRONGTYPE` error, never a wrong answer, so a rolling
//! upgrade answers errors from old replicas until they are replaced.
//!
//! A log cursor is the stream ID of each partition, joined by `,` (with one
//! partition, just the stream ID); see the `log` module.
//!
//! The expiry indexes let the live counts be read with one `ZCOUNT` per
//! partition, and let the live set be walked in pages without `SCAN`ning the
//! keyspace.
//!
//! # Durability
//!
//! Writes are acknowledged once Redis has executed them
//! ([`Durability::Fast`]) or once they are on disk
//! ([`Durability::Strict`]), and optionally once replicas have them; see
//! `durability.rs` for what each mode costs and checks.

mod connection;
mod cutoff;
mod decode;
mod durability;
mod history;
mod keys;
mod log;
mod packed;
mod reserve;
mod revoke;
mod scan;

use std::time::Duration;

use futures_util::future::try_join_all;

use self::connection::Connection;
use self::decode::{packed_revocation, Fields, Picked, CUTOFF_FIELDS, TOKEN_FIELDS};
use self::durability::WritePolicy;
use self::keys::Keys;
use super::{cutoff_name, record_name, Counts, Error, Revocation, TokenStatus, SUBJECT_CLAIM};
use crate::filter::DigestKey;

pub use self::connection::RedisNodes;
pub use self::durability::Durability;
pub use self::keys::MAX_PARTITIONS;
pub use self::log::RedisLogReader;
pub use self::packed::pack as pack_revocation;
pub use self::scan::RedisLiveScan;

/// Index entries a write prunes at most, to bound a script's run time.
const PRUNE_BATCH: u32 = 64;

/// A script's arguments as text, for tests that hold them against its Lua.
#[cfg(test)]
fn args_as_text(args: impl redis::ToRedisArgs) -> Vec<String> {
    let args = args.to_redis_args().into_iter();
    args.map(|arg| String::from_utf8(arg).expect("text arguments"))
        .collect()
}

/// A token revocation of every field, for tests of what is written and
/// read back.
#[cfg(test)]
fn sample_revocation() -> Revocation {
    Revocation {
        issuer: "https://issuer.test".to_owned(),
        jti: "j1".to_owned(),
        subject: "alice".to_owned(),
        expires_at: 100,
        keep_until: 160,
        provenance: super::Provenance {
            at: 40,
            by: "ops".to_owned(),
            reason: "lost".to_owned(),
            source: "10.0.0.1:5000".to_owned(),
        },
    }
}

/// How the revoke script writes a token revocation's change-log entry.
/// Every replica that has this setting reads both formats; replicas built
/// before it read format 1 only, and meet an entry of format 2 as a corrupt
/// log, which they reload from, again and again, without heartbeats.
/// So format 2 is for a deployment whose replicas all have the setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EntryFormat {
    /// Five fields: `kind`, `iss`, `id`, `until` and `rec` (the module doc).
    #[default]
    #[value(name = "1")]
    Fields = 1,
    /// One field, `rev` (`packed.rs`): Redis writes and sends, and every
    /// follower parses, 4 values of an `XREAD` reply per entry instead of
    /// 13.
    #[value(name = "2")]
    Packed = 2,
}

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
    /// How token revocations' log entries are written.
    pub entry_format: EntryFormat,
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
    entry_format: EntryFormat,
    write_policy: WritePolicy,
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
        let connection = Connection::open(&options.nodes, options.response_timeout).await?;
        let mut store = Self {
            nodes: options.nodes.clone(),
            response_timeout: options.response_timeout,
            connection,
            keys: Keys::new(&options.key_prefix, options.partitions),
            log_retention: options.log_retention,
            entry_format: options.entry_format,
            write_policy: WritePolicy::default(),
        };
        store.check_partitions().await?;
        store.write_policy = WritePolicy::detect(&store.connection, options).await?;
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
        let configured = self.keys.partitions.len() as u64;
        let key = &self.keys.partition_count;
        self.pin(key, configured, |stored| {
            format!("this deployment's change log has {stored} partitions (recorded in Redis at {key}); --log-partitions {configured} would look for records in the wrong places. Use --log-partitions {stored}")
        })
        .await
    }

    /// Records the leeway on first use; refuses another one later, since
    /// gateways look for a revocation in the filter slice of the token's
    /// `exp` plus the leeway, which the records' keep-until times must
    /// match.
    pub(super) async fn pin_leeway(&self, leeway: u64) -> Result<(), Error> {
        let key = &self.keys.leeway;
        self.pin(key, leeway, |stored| {
            format!("this deployment's revocations are kept {stored} s past the tokens' exp (recorded in Redis at {key}); --leeway {leeway} would make gateways look for them in the wrong filter slices. Use --leeway {stored}")
        })
        .await
    }

    /// Stores `configured` at `key` unless a value is there; an error of
    /// `refusal(stored)` when the stored value differs.
    async fn pin(
        &self,
        key: &str,
        configured: u64,
        refusal: impl FnOnce(u64) -> String,
    ) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let (stored,): (u64,) = redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg(configured)
            .arg("NX")
            .ignore()
            .get(key)
            .query_async(&mut connection)
            .await?;
        if stored != configured {
            return Err(Error::Unsuitable(refusal(stored)));
        }
        Ok(())
    }

    /// A write's cursor: the stream ID, prefixed with its partition when
    /// there are several (a change is in one partition's log only).
    fn write_cursor(&self, partition: usize, id: Option<String>) -> Option<String> {
        match self.keys.partitions.len() {
            1 => id,
            _ => id.map(|id| format!("{partition}:{id}")),
        }
    }

    /// Reads the fields `names` of one record hash (`HMGET`); empty when
    /// there is no record.
    async fn hash(&self, key: &str, names: &'static [&'static str]) -> Result<Picked, Error> {
        let mut connection = self.connection.clone();
        let values = redis::cmd("HMGET")
            .arg(key)
            .arg(names)
            .query_async(&mut connection)
            .await?;
        Ok(Picked::new(names, values))
    }

    /// The token revocation of (issuer, jti) from the reply to `GET key`:
    /// the packed value, none, or, when the key holds a hash (a record
    /// written before packing), the hash's fields.
    pub(super) async fn revocation_from(
        &self,
        key: &str,
        reply: redis::RedisResult<Option<String>>,
        issuer: &str,
        jti: &str,
    ) -> Result<Option<Revocation>, Error> {
        match reply {
            Ok(None) => Ok(None),
            Ok(Some(value)) => packed_revocation(key, &value, issuer, jti).map(Some),
            Err(error) if error.code() == Some("WRONGTYPE") => {
                let fields = self.hash(key, &TOKEN_FIELDS).await?;
                if fields.is_empty() {
                    return Ok(None);
                }
                Fields::stored(key, &fields)
                    .revocation(issuer, jti)
                    .map(Some)
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn status(
        &self,
        issuer: &str,
        jti: Option<&str>,
        claims: &[(&str, &str)],
        now: i64,
    ) -> Result<TokenStatus, Error> {
        // Keys of several partitions may live on several nodes: one command
        // each, sent together over the multiplexed connection.
        let read = |key: String, names| async move {
            let fields = self.hash(&key, names).await?;
            Ok::<_, Error>((key, fields))
        };
        let revocation = async {
            let Some(jti) = jti else {
                return Ok(None);
            };
            let name = record_name(issuer, jti);
            let key = self.keys.partition_of(&name).1.jti(&name);
            let mut connection = self.connection.clone();
            let reply = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await;
            self.revocation_from(&key, reply, issuer, jti).await
        };
        let cutoffs = claims.iter().map(|&(claim, value)| async move {
            let name = cutoff_name(issuer, claim, value);
            let keys = self.keys.partition_of(&name).1;
            let key = match claim {
                SUBJECT_CLAIM => keys.sub(&name),
                _ => keys.cut(&name),
            };
            let (key, fields) = read(key, &CUTOFF_FIELDS).await?;
            if fields.is_empty() {
                return Ok(None);
            }
            let fields = Fields::stored(&key, &fields);
            fields
                .cutoff(issuer.to_owned(), claim.to_owned(), value.to_owned())
                .map(Some)
        });
        let (revocation, cutoffs) = tokio::try_join!(revocation, try_join_all(cutoffs))?;
        // Redis expires keys on its own clock; hide records our clock says
        // are past, so both backends answer alike.
        Ok(TokenStatus {
            revocation: revocation.filter(|r| r.keep_until > now),
            cutoffs: cutoffs
                .into_iter()
                .flatten()
                .filter(|c| c.keep_until > now)
                .collect(),
        })
    }

    pub(super) async fn counts(&self, now: i64) -> Result<Counts, Error> {
        let live_from = format!("({now}");
        let per_partition = self.keys.partitions.iter().map(|keys| {
            let mut connection = self.connection.clone();
            let live_from = &live_from;
            async move {
                let counts: (u64, u64, u64) = redis::pipe()
                    .zcount(&keys.jti_expiry, live_from, "+inf")
                    .zcount(&keys.sub_expiry, live_from, "+inf")
                    .zcount(&keys.cut_expiry, live_from, "+inf")
                    .query_async(&mut connection)
                    .await?;
                Ok::<_, Error>(counts)
            }
        });
        let counts = try_join_all(per_partition).await?;
        Ok(Counts {
            revocations: counts.iter().map(|c| c.0).sum(),
            subject_cutoffs: counts.iter().map(|c| c.1).sum(),
            claim_cutoffs: counts.iter().map(|c| c.2).sum(),
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
