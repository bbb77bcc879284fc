//! `revocd serve` configuration: every flag also reads a `REVOCD_*`
//! environment variable; [`ServeConfig::validate`] turns mistakes into typed
//! errors before anything starts.
//!
//! - [`serve`]: `revocd serve` flags and their checks;
//! - [`agent`]: `revocd agent` flags;
//! - [`jwt`]: how tokens are verified, the same for both;
//! - [`start`]: the running parts they describe: a replica's
//!   [`State`](crate::server::State) and the [`Agent`](crate::agent::Agent).
//!
//! This is the top of the library: it builds the server, hub, store and
//! agent, and none of them reads it.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use crate::bounds::DEFAULT_MAX_TOKEN_LIFETIME;
use crate::gateway::DEFAULT_MAX_STALENESS;
use crate::hub::DEFAULT_HEARTBEAT_INTERVAL;

mod agent;
mod jwt;
mod serve;
mod ssf;
mod start;

pub use self::agent::{AgentConfig, DEFAULT_AGENT_HTTP_LISTEN};
pub use self::jwt::{IssuerFile, JwtArgs};
pub use self::serve::{
    ServeConfig, DEFAULT_KEY_PREFIX, DEFAULT_LISTEN_ADDR, DEFAULT_LOG_RETENTION,
    DEFAULT_REDIS_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, MAX_REVOCABLE_CLAIMS, MIN_LOG_RETENTION,
};
pub use self::ssf::{TransmitterSpec, TransmitterValue};
pub use self::start::StartError;
pub use crate::server::{
    DEFAULT_KEYLESS_PER_MINUTE, DEFAULT_KEYLESS_SOURCE_PER_MINUTE,
    DEFAULT_KEYLESS_SUBJECT_PER_MINUTE,
};

// Defaults kept as durations by the modules that use them, as flag text.
static HEARTBEAT_INTERVAL_TEXT: LazyLock<String> =
    LazyLock::new(|| duration_text(DEFAULT_HEARTBEAT_INTERVAL));
static MAX_STALENESS_TEXT: LazyLock<String> =
    LazyLock::new(|| duration_text(DEFAULT_MAX_STALENESS));
static MAX_TOKEN_LIFETIME_TEXT: LazyLock<String> =
    LazyLock::new(|| duration_text(DEFAULT_MAX_TOKEN_LIFETIME));

/// `duration` as flag text, in the largest unit that keeps it whole (`2s`,
/// `30s`, `24h`): what `--help` and `--print-config` show, and what the
/// flag's parser (humantime) reads back as the same duration.
fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    match seconds {
        0 => "0s".to_owned(),
        _ if seconds.is_multiple_of(3_600) => format!("{}h", seconds / 3_600),
        _ if seconds.is_multiple_of(60) => format!("{}m", seconds / 60),
        _ => format!("{seconds}s"),
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The Shared Signals transmitters do not fit together.
    #[error("Shared Signals: {0}")]
    Transmitter(String),
    /// No API keys and not `--dev`.
    #[error("no --api-keys-file given: every call must be authenticated. Create one (see README, \"API keys\") or pass --dev for a local trial")]
    NoApiKeys,
    /// `--dev` on a non-loopback address.
    #[error("--dev serves without authentication, so it only listens on loopback; --listen {0} is not a loopback address")]
    DevNotLoopback(SocketAddr),
    /// Durability or replica waits asked of the memory store.
    #[error("--durability strict and --wait-replicas need --redis-url or --redis-cluster: the memory store keeps nothing on disk")]
    DurabilityWithoutRedis,
    /// Log partitions asked of the memory store.
    #[error("--log-partitions needs --redis-url or --redis-cluster")]
    PartitionsWithoutRedis,
    /// A key prefix that would change the keys' cluster hash tags.
    #[error("--key-prefix may not contain `{{` or `}}` on a Redis Cluster: they would change which slot each key lands in")]
    BracesInPrefix,
    /// A `--revocable-claim` that cannot be one.
    #[error("--revocable-claim {0:?}: a claim name of 1 to 64 printable bytes, other than `sub`, `sid`, `client_id` and `azp` (always revocable) and `*`")]
    RevocableClaim(String),
    /// A zero or absurd duration.
    #[error("--{flag} must be between {min} and {max}")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// Smallest accepted value.
        min: &'static str,
        /// Largest accepted value.
        max: &'static str,
    },
}

#[cfg(test)]
mod tests;
