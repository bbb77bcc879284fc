//! The change log in Redis: one stream per partition, read as one ordered
//! log.
//!
//! A cursor names a position in every partition: the stream IDs joined by
//! `,` in partition order (one partition: just its stream ID). Entries of
//! one partition are always read in order; entries of different partitions
//! are merged by their IDs' time. The cursor of an entry is the position
//! right after it, so resuming at it reads exactly what followed. The
//! parsing and ordering of cursors live in [`crate::cursor`].
//!
//! On one Redis the reader waits with one `XREAD BLOCK` over every
//! partition, on a connection of its own. A cluster would need a blocked
//! connection per node, so there the reader polls every partition without
//! blocking, every [`CLUSTER_POLL`] while the log is quiet.
//!
//! # Gaps
//!
//! Each stream is trimmed to about `retention` entries (`XADD MAXLEN ~`),
//! always from its oldest end. A reader that falls that far behind (a
//! stalled process, a long load) would read on after its cursor as if
//! nothing were missing, so after every read that returned entries of a
//! partition the reader asks that stream ([`LOG_STATE_SCRIPT`]) and
//! answers [`Error::LogGap`] when entries after its cursor may be gone:
//!
//! - the cursor names an entry (the last one read, or the newest at load)
//!   and that entry is no longer in the stream: it was trimmed, and so may
//!   have been some after it; or the stream lost it otherwise (a failover
//!   to a Redis replica that had not received it, a flush). False alarms
//!   are possible only for a reader `retention` entries behind, which had
//!   better reload anyway.
//! - the cursor is the origin (the stream did not exist at load) and the
//!   stream has lost entries since (`entries-added` above its length).
//!
//! Asking *after* the read is enough: an entry gone when the read ran is
//! still gone, so a gap that existed then is seen.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, ParsingError, Value};

use super::{connection, decode, RedisNodes, RedisStore};
use crate::cursor::{EntryId, Positions};
use crate::store::{Error, LoggedChange};

/// How often a cluster reader looks for new entries while the log is quiet.
pub const CLUSTER_POLL: Duration = Duration::from_millis(10);
/// Reports what a reader at a position needs to know about a partition's
/// stream for gap detection (see the module documentation).
///
/// KEYS: the partition's log. ARGV: the reader's position in it. Returns
/// `{1 if the entry at the position is still there else 0, entries ever
/// added, length}`; `{0, 0, 0}` when the stream does not exist.
/// `entries-added` exists from Redis 7.0 on (0 before: then a gap at the
/// origin goes unnoticed).
const LOG_STATE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0} end
local kept = #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local added, length = 0, 0
for i = 1, #info, 2 do
  local name, value = info[i], info[i + 1]
  if name == 'length' then length = value
  elseif name == 'entries-added' then added = value
  end
end
return {kept, added, length}
"#;

/// [`LOG_STATE_SCRIPT`], hashed once.
static LOG_STATE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(LOG_STATE_SCRIPT));

/// Entries of several partitions, as read: (partition, entry).
pub(super) type Fetched = Vec<(usize, LogEntry)>;

/// One change-log entry as Redis sent it: its ID and its fields, names
/// and values, in the order written.
///
/// Names are compared as bytes and a value becomes text only when read,
/// so a reader pays nothing for the fields it skips. The `redis` crate's
/// `StreamId` turned every name into a `String` keyed in a map of its own,
/// which every replica's follower paid for every entry: about a third of
/// the CPU time of a batch's items.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct LogEntry {
    /// The stream ID, `<millis>-<sequence>`.
    pub(super) id: String,
    fields: Vec<(Value, Value)>,
}

impl LogEntry {
    /// The text of field `name`; `None` when it is missing or not text.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        let (_, value) = self.fields.iter().find(|(field, _)| match field {
            Value::BulkString(bytes) => bytes == name.as_bytes(),
            Value::SimpleString(text) => text == name,
            _ => false,
        })?;
        String::from_redis_value_ref(value).ok()
    }

    /// An entry of `fields`, for tests of its readers.
    #[cfg(test)]
    pub(super) fn with_fields(id: &str, fields: &[(&str, &str)]) -> Self {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        Self {
            id: id.to_owned(),
            fields: fields
                .iter()
                .map(|(name, value)| (bulk(name), bulk(value)))
                .collect(),
        }
    }
}

/// An `XREAD` reply: each stream's key and entries, in the order Redis
/// sent them; empty when a blocking read timed out.
///
/// Read by moving every value out of the reply. The `redis` crate's
/// `StreamReadReply` clones the whole reply before converting it, twice
/// over nested tuples, which every replica's follower paid for every
/// entry.
#[derive(Debug, Default)]
struct XreadReply(Vec<(String, Vec<LogEntry>)>);

impl FromRedisValue for XreadReply {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        // RESP2: [[key, entries], ...]; RESP3: {key: entries, ...}.
        let streams = match value {
            Value::Nil => return Ok(Self::default()),
            Value::Array(streams) => streams
                .into_iter()
                .map(|stream| match stream {
                    Value::Array(pair) => two(pair),
                    other => Err(unexpected("a stream", &other)),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Value::Map(streams) => streams,
            other => return Err(unexpected("an XREAD reply", &other)),
        };
        let streams = streams.into_iter().map(|(key, entries)| {
            Ok::<_, ParsingError>((
                String::from_redis_value(key)?,
                RangeReply::from_redis_value(entries)?.0,
            ))
        });
        Ok(Self(streams.collect::<Result<_, _>>()?))
    }
}

/// An `XRANGE` or `XREVRANGE` reply, or one stream's entries in an
/// `XREAD` reply: the entries in the order Redis sent them.
#[derive(Debug, Default)]
pub(super) struct RangeReply(pub(super) Vec<LogEntry>);

impl FromRedisValue for RangeReply {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let Value::Array(entries) = value else {
            return Err(unexpected("a stream's entries", &value));
        };
        let entries = entries.into_iter().map(stream_entry);
        Ok(Self(entries.collect::<Result<_, _>>()?))
    }
}

/// One entry, `[id, [field, value, ...]]` (or its fields as a map).
fn stream_entry(entry: Value) -> Result<LogEntry, ParsingError> {
    let Value::Array(pair) = entry else {
        return Err(unexpected("a stream entry", &entry));
    };
    let (id, fields) = two(pair)?;
    let fields = match fields {
        Value::Array(flat) if flat.len() % 2 == 0 => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                pairs.push((name, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        other => return Err(unexpected("an entry's fields", &other)),
    };
    Ok(LogEntry {
        id: String::from_redis_value(id)?,
        fields,
    })
}

/// The two items of a reply's pair.
fn two(pair: Vec<Value>) -> Result<(Value, Value), ParsingError> {
    let length = pair.len();
    let mut items = pair.into_iter();
    match (items.next(), items.next(), items.next()) {
        (Some(first), Some(second), None) => Ok((first, second)),
        _ => Err(format!("expected a pair, got {length} items").into()),
    }
}

fn unexpected(what: &str, value: &Value) -> ParsingError {
    format!("expected {what}, got {value:?}").into()
}

/// Sorts fetched entries into log order: by ID time, then partition.
///
/// # Errors
/// [`Error::Corrupt`] for an entry whose ID is no stream ID: skipping it
/// could skip a revocation.
pub(super) fn merge(fetched: Fetched) -> Result<Vec<(EntryId, usize, LogEntry)>, Error> {
    let mut merged = fetched
        .into_iter()
        .map(|(partition, entry)| match EntryId::parse(&entry.id) {
            Some(id) => Ok((id, partition, entry)),
            None => Err(Error::Corrupt {
                key: "change-log entry".to_owned(),
                detail: format!("{:?} is not a stream ID", entry.id),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    merged.sort_by_key(|(id, partition, _)| (*id, *partition));
    Ok(merged)
}

// === impl RedisStore ===

impl RedisStore {
    fn cursor_error(&self, cursor: &str) -> Error {
        Error::Corrupt {
            key: "change-log cursor".to_owned(),
            detail: format!(
                "{cursor:?} is not {} stream IDs joined by `,`",
                self.keys.partitions.len()
            ),
        }
    }

    pub(in crate::store) fn log_reader(&self) -> RedisLogReader {
        RedisLogReader {
            store: self.clone(),
            blocking: None,
        }
    }
}

/// Follows the change log; see the module documentation.
pub struct RedisLogReader {
    store: RedisStore,
    /// On one Redis: the reader's own connection, whose response timeout
    /// allows for the block (the shared connection's would cut it short).
    /// Made on the first read, and again after an error.
    blocking: Option<MultiplexedConnection>,
}

impl std::fmt::Debug for RedisLogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLogReader")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl RedisLogReader {
    pub(in crate::store) async fn read_after(
        &mut self,
        cursor: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LoggedChange>, Error> {
        let partitions = self.store.keys.partitions.len();
        let mut position =
            Positions::parse(cursor, partitions).ok_or_else(|| self.store.cursor_error(cursor))?;
        let fetched = match &self.store.nodes {
            RedisNodes::Single(url) => {
                let url = url.clone();
                self.read_blocking(&url, &position, max, wait).await?
            }
            RedisNodes::Cluster(_) => self.poll(&position, max, wait).await?,
        };
        let mut read = vec![false; partitions];
        for (partition, _) in &fetched {
            read[*partition] = true;
        }
        self.check_no_gap(&position, &read, cursor).await?;
        let mut merged = merge(fetched)?;
        merged.truncate(max.max(1));
        merged
            .into_iter()
            .map(|(id, partition, entry)| {
                position.0[partition] = id;
                logged_change(
                    &self.store.keys.partitions[partition].log,
                    id,
                    &entry,
                    &position,
                )
            })
            .collect()
    }

    /// [`Error::LogGap`] when entries right after `position` may have
    /// been trimmed from a partition that was `read` (module doc, "Gaps").
    async fn check_no_gap(
        &self,
        position: &Positions,
        read: &[bool],
        cursor: &str,
    ) -> Result<(), Error> {
        let probes = self
            .store
            .keys
            .partitions
            .iter()
            .zip(&position.0)
            .zip(read)
            .filter(|(_, read)| **read)
            .map(|((keys, at), _)| {
                let mut connection = self.store.connection.clone();
                async move {
                    let (kept, added, length): (u8, u64, u64) = LOG_STATE
                        .key(&keys.log)
                        .arg(at.to_string())
                        .invoke_async(&mut connection)
                        .await?;
                    Ok::<_, Error>(may_have_lost(*at, kept == 1, added, length))
                }
            });
        if try_join_all(probes).await?.contains(&true) {
            return Err(Error::LogGap {
                cursor: cursor.to_owned(),
            });
        }
        Ok(())
    }

    /// One `XREAD BLOCK` over every partition.
    async fn read_blocking(
        &mut self,
        url: &str,
        position: &Positions,
        max: usize,
        wait: Duration,
    ) -> Result<Fetched, Error> {
        let connection = match &mut self.blocking {
            Some(connection) => connection,
            None => {
                let timeout = self.store.response_timeout;
                let connection = connection::blocking(url, timeout, wait).await?;
                self.blocking.insert(connection)
            }
        };
        let logs = &self.store.keys.partitions;
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS");
        for keys in logs {
            command.arg(&keys.log);
        }
        for id in &position.0 {
            command.arg(id.to_string());
        }
        let reply: Result<XreadReply, _> = command.query_async(connection).await;
        let reply = reply.inspect_err(|_| self.blocking = None)?;
        let partition_of: HashMap<&str, usize> = logs
            .iter()
            .enumerate()
            .map(|(n, keys)| (keys.log.as_str(), n))
            .collect();
        Ok(reply
            .0
            .into_iter()
            .filter_map(|(key, entries)| Some((*partition_of.get(key.as_str())?, entries)))
            .flat_map(|(partition, entries)| entries.into_iter().map(move |e| (partition, e)))
            .collect())
    }

    /// Reads every partition without blocking, again every
    /// [`CLUSTER_POLL`], until something arrives or `wait` has passed.
    async fn poll(
        &self,
        position: &Positions,
        max: usize,
        wait: Duration,
    ) -> Result<Fetched, Error> {
        let deadline = Instant::now() + wait;
        loop {
            let reads = self
                .store
                .keys
                .partitions
                .iter()
                .zip(&position.0)
                .enumerate()
                .map(|(partition, (keys, id))| {
                    let mut connection = self.store.connection.clone();
                    async move {
                        let reply: XreadReply = redis::cmd("XREAD")
                            .arg("COUNT")
                            .arg(max.max(1))
                            .arg("STREAMS")
                            .arg(&keys.log)
                            .arg(id.to_string())
                            .query_async(&mut connection)
                            .await?;
                        let entries = reply.0.into_iter().flat_map(|(_, entries)| entries);
                        Ok::<_, Error>(entries.map(|e| (partition, e)).collect::<Fetched>())
                    }
                });
            let fetched: Fetched = try_join_all(reads).await?.into_iter().flatten().collect();
            let now = Instant::now();
            if !fetched.is_empty() || now >= deadline {
                return Ok(fetched);
            }
            tokio::time::sleep(CLUSTER_POLL.min(deadline - now)).await;
        }
    }
}

/// True when a stream that had `added` entries of which `length` remain,
/// and which still holds the entry at `at` or not (`kept`), may have lost
/// entries after position `at` (module doc, "Gaps").
fn may_have_lost(at: EntryId, kept: bool, added: u64, length: u64) -> bool {
    if at == EntryId::ORIGIN {
        return added > length;
    }
    !kept
}

/// Reads one log entry of the stream `log`, whose ID parsed as `id`, as a
/// follower applies it, with the cursor after it, `after`.
pub(super) fn logged_change(
    log: &str,
    id: EntryId,
    entry: &LogEntry,
    after: &Positions,
) -> Result<LoggedChange, Error> {
    // With one partition the cursor is the entry's ID, as Redis wrote it:
    // no formatting for every entry of every follower.
    let cursor = match after.0.as_slice() {
        [_] => entry.id.clone(),
        _ => after.to_string(),
    };
    Ok(LoggedChange {
        cursor,
        // When the entry was appended (unix milliseconds, store clock).
        logged_at_ms: id.millis as i64,
        change: decode::entry_change(log, entry)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// An entry as Redis sends it, with `fields` flat.
    fn entry(id: &str, fields: &[&str]) -> Value {
        let fields = fields.iter().map(|f| bulk(f)).collect();
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    #[test]
    fn an_xread_reply_reads_as_the_redis_crates_own_reader_reads_it() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("log-0"),
                Value::Array(vec![
                    entry("5-0", &["kind", "jti", "iss", "", "id", "a", "until", "9"]),
                    entry("5-1", &["kind", "jti", "rec", "2 1 9 0 0:0:0:0:"]),
                ]),
            ]),
            Value::Array(vec![bulk("log-1"), Value::Array(vec![entry("4-0", &[])])]),
        ]);
        let ours = XreadReply::from_redis_value(reply.clone()).unwrap();
        let theirs = redis::streams::StreamReadReply::from_redis_value(reply).unwrap();
        let keys = |streams: &[(String, Vec<LogEntry>)]| {
            let keys = streams.iter().map(|(key, _)| key.clone());
            keys.collect::<Vec<_>>()
        };
        let their_keys = theirs.keys.iter().map(|k| k.key.clone());
        assert_eq!(keys(&ours.0), their_keys.collect::<Vec<_>>());
        for ((_, ours), theirs) in ours.0.iter().zip(&theirs.keys) {
            assert_eq!(ours.len(), theirs.ids.len());
            for (ours, theirs) in ours.iter().zip(&theirs.ids) {
                assert_eq!(ours.id, theirs.id);
                assert_eq!(ours.fields.len(), theirs.map.len());
                for name in theirs.map.keys() {
                    assert_eq!(ours.get(name), theirs.get::<String>(name), "{name}");
                }
            }
        }
        assert_eq!(ours.0[0].1[0].get("id").as_deref(), Some("a"));
        assert_eq!(ours.0[0].1[0].get("sub"), None, "a field not written");
    }

    #[test]
    fn an_xread_reply_of_resp3_or_a_timed_out_block_reads_too() {
        let map = Value::Map(vec![(
            bulk("log-0"),
            Value::Array(vec![entry("5-0", &["kind", "jti"])]),
        )]);
        let read = XreadReply::from_redis_value(map).unwrap();
        assert_eq!(read.0[0].0, "log-0");
        assert_eq!(read.0[0].1[0].id, "5-0");
        assert_eq!(read.0[0].1[0].get("kind").as_deref(), Some("jti"));
        assert!(XreadReply::from_redis_value(Value::Nil)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn a_malformed_xread_reply_is_an_error_not_a_panic() {
        let odd_fields = Value::Array(vec![Value::Array(vec![
            bulk("log-0"),
            Value::Array(vec![entry("5-0", &["kind"])]),
        ])]);
        let cases = [
            Value::Int(3),
            Value::Array(vec![bulk("log-0")]),
            Value::Array(vec![Value::Array(vec![bulk("log-0"), Value::Int(1)])]),
            odd_fields,
        ];
        for case in cases {
            let error = XreadReply::from_redis_value(case.clone()).unwrap_err();
            assert!(error.to_string().contains("expected"), "{case:?}: {error}");
        }
    }

    #[test]
    fn a_stream_that_lost_the_cursors_entry_may_have_lost_more() {
        let id = |text: &str| EntryId::parse(text).unwrap();
        assert!(
            !may_have_lost(id("5-3"), true, 10, 3),
            "the cursor's entry is kept"
        );
        assert!(
            may_have_lost(id("5-3"), false, 10, 3),
            "the cursor's entry is gone"
        );
        assert!(may_have_lost(id("5-3"), false, 0, 0), "the stream is gone");
        assert!(
            !may_have_lost(EntryId::ORIGIN, false, 4, 4),
            "nothing trimmed yet"
        );
        assert!(
            may_have_lost(EntryId::ORIGIN, false, 5, 4),
            "trimmed since load"
        );
    }
}
