//! Reaching Redis: one server or a cluster behind one [`Connection`], the
//! extra connections the store makes for start-up checks and blocking log
//! reads, and what a Redis error means to the store's callers.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture,
    ServerErrorKind, Value,
};

use crate::store::{BackendError, Error};

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

/// A connection to one Redis or to a cluster; commands and pipelines go
/// through it alike (a cluster pipeline must stay within one slot).
#[derive(Clone)]
pub(super) enum Connection {
    /// Reconnects by itself after Redis returns.
    Single(ConnectionManager),
    /// One multiplexed connection per node, routed by slot.
    Cluster(ClusterConnection),
}

// === impl Connection ===

impl Connection {
    /// Connects to `nodes`; every command is given `response_timeout`.
    ///
    /// # Errors
    /// A malformed URL ([`Error::Backend`]), or a Redis that cannot be
    /// reached now.
    pub(super) async fn open(
        nodes: &RedisNodes,
        response_timeout: Duration,
    ) -> Result<Self, Error> {
        Ok(match nodes {
            RedisNodes::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(response_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                let manager = ConnectionManager::new_with_config(client(url)?, config).await?;
                Connection::Single(manager)
            }
            RedisNodes::Cluster(urls) => {
                let client = ClusterClient::builder(urls.clone())
                    .connection_timeout(response_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .build()
                    .map_err(refused)?;
                Connection::Cluster(client.get_async_connection().await?)
            }
        })
    }

    /// A connection to the one node at `url`, with the client's defaults:
    /// for start-up checks of each node a cluster was named by.
    ///
    /// # Errors
    /// A malformed URL, or a node that cannot be reached now.
    pub(super) async fn node(url: &str) -> Result<Self, Error> {
        Ok(Connection::Single(
            ConnectionManager::new(client(url)?).await?,
        ))
    }
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

/// A connection of its own to the Redis at `url`, for a log reader's
/// `XREAD BLOCK`: its response timeout allows for the `wait` of the block
/// (the shared connection's would cut it short).
///
/// # Errors
/// A malformed URL, or a Redis that cannot be reached now.
pub(super) async fn blocking(
    url: &str,
    response_timeout: Duration,
    wait: Duration,
) -> Result<MultiplexedConnection, Error> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(response_timeout))
        .set_response_timeout(Some(wait + response_timeout));
    Ok(client(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A client for `url`; nothing is sent yet.
fn client(url: &str) -> Result<Client, Error> {
    Client::open(url).map_err(refused)
}

// === impl Error ===

/// A Redis error that retrying cannot mend (a malformed URL, say).
fn refused(error: RedisError) -> Error {
    Error::Backend(backend_error(error))
}

/// Wraps a Redis error, noting what [`Error`]'s methods tell callers.
fn backend_error(error: RedisError) -> BackendError {
    let auth_failure = error.kind() == ErrorKind::AuthenticationFailed;
    BackendError::new(error, auth_failure)
}

impl From<RedisError> for Error {
    /// Connection-class errors (I/O, timeouts, a dropped connection, a node
    /// loading or failing over) are [`Error::Unavailable`], which callers
    /// retry; the rest are [`Error::Backend`].
    fn from(error: RedisError) -> Self {
        let transient = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
            || matches!(
                error.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
            );
        if transient {
            Error::Unavailable(backend_error(error))
        } else {
            refused(error)
        }
    }
}

impl From<redis::ParsingError> for Error {
    fn from(error: redis::ParsingError) -> Self {
        refused(error.into())
    }
}
