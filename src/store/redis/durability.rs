//! When a write is acknowledged.
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

use redis::{ErrorKind, FromRedisValue, ScriptInvocation, ServerErrorKind, Value};

use super::connection::Connection;
use super::{RedisNodes, RedisStore, RedisStoreOptions};
use crate::store::Error;

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
pub(super) struct WritePolicy {
    /// Send `WAITAOF 1 0` (Redis 7.2+ in strict mode).
    wait_aof: bool,
    /// Send `WAIT n` when above zero.
    wait_replicas: u32,
}

// === impl WritePolicy ===

impl WritePolicy {
    /// Decides what writes wait for; refuses a Redis that cannot give what
    /// `options.durability` asks. `connection` is the store's; in a
    /// cluster, every node named in the options is checked on a connection
    /// of its own.
    ///
    /// # Errors
    /// [`Error::Unsuitable`] for a Redis that cannot give strict
    /// durability; a Redis that cannot be reached now.
    pub(super) async fn detect(
        connection: &Connection,
        options: &RedisStoreOptions,
    ) -> Result<Self, Error> {
        let mut policy = WritePolicy {
            wait_aof: false,
            wait_replicas: options.wait_replicas,
        };
        if options.durability == Durability::Fast {
            return Ok(policy);
        }
        let nodes = match &options.nodes {
            RedisNodes::Single(_) => vec![connection.clone()],
            RedisNodes::Cluster(urls) => {
                let mut nodes = Vec::with_capacity(urls.len());
                for url in urls {
                    nodes.push(Connection::node(url).await?);
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

// === impl RedisStore ===

impl RedisStore {
    /// Runs a write script, then the waits the write policy asks for, on
    /// one connection in one pipeline (so the waits cover this write, and go
    /// to the node that took it); with no waits, the script alone.
    ///
    /// # Errors
    /// [`Error::NotDurable`] when a wait fell short; [`Error::Unavailable`].
    pub(super) async fn write<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let policy = self.write_policy;
        let waits = u32::from(policy.wait_aof) + u32::from(policy.wait_replicas > 0);
        let mut connection = self.connection.clone();
        if waits == 0 {
            // The script alone: no pipeline to build and take apart.
            return Ok(invocation.invoke_async(&mut connection).await?);
        }
        // The waits share half the response timeout, so Redis answers them
        // (with what it reached) before the client gives up on the reply.
        let timeout_ms = (self.response_timeout / (2 * waits)).as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation);
        if policy.wait_aof {
            pipe.cmd("WAITAOF").arg(1).arg(0).arg(timeout_ms);
        }
        if policy.wait_replicas > 0 {
            pipe.cmd("WAIT").arg(policy.wait_replicas).arg(timeout_ms);
        }
        let mut replies: Vec<Value> = match pipe.query_async(&mut connection).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                invocation.load_async(&mut connection).await?;
                pipe.query_async(&mut connection).await?
            }
            reply => reply?,
        };
        if policy.wait_replicas > 0 {
            let reached: u32 = redis::from_redis_value(replies.pop().unwrap_or(Value::Nil))?;
            if reached < policy.wait_replicas {
                return Err(Error::NotDurable(format!(
                    "the write reached {reached} of the {} replicas asked for in time",
                    policy.wait_replicas
                )));
            }
        }
        if policy.wait_aof {
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
}
