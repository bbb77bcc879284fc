//! `revocd serve` configuration: every flag also reads a `REVOCD_*`
//! environment variable; [`ServeConfig::validate`] turns mistakes into typed
//! errors before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::store::Durability;
use crate::tokens::{TokenVerifier, UnboundKeys};

/// Address served by default: loopback, the gRPC port revocd documents.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50051";
/// Key prefix in Redis by default.
pub const DEFAULT_KEY_PREFIX: &str = "revocd:";
/// Change-log entries kept by default (about 20 MB of Redis memory).
pub const DEFAULT_LOG_RETENTION: u64 = 100_000;
/// Fewest change-log entries `--log-retention` may keep: ten times what a
/// follower reads at once and what one `RevokeBatch` appends, so that one
/// write never trims entries no replica could have read yet. (A follower
/// that still falls behind detects the gap and reloads.)
pub const MIN_LOG_RETENTION: u64 = 10_000;
/// Clock leeway for `exp`/`nbf` by default, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// Longest token lifetime accepted by default.
pub const DEFAULT_MAX_TOKEN_LIFETIME: &str = "24h";
/// Time a Redis command may take before it fails as unavailable.
pub const DEFAULT_REDIS_TIMEOUT: &str = "2s";
/// Time given to open calls to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";
/// Interval between heartbeats on filter streams by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: &str = "2s";
/// Keyless self-revocations per minute on one replica, all callers
/// together, by default: 20 a second, the bound on how fast holders of
/// valid tokens can grow the filter (bulk revokers use an API key).
pub const DEFAULT_KEYLESS_PER_MINUTE: u32 = 1_200;
/// Keyless self-revocations per minute of one (issuer, subject) by
/// default: a person logs out a few times a minute at most.
pub const DEFAULT_KEYLESS_SUBJECT_PER_MINUTE: u32 = 10;
/// Keyless self-revocations per minute from one source address by default:
/// a household or small office behind one address.
pub const DEFAULT_KEYLESS_SOURCE_PER_MINUTE: u32 = 60;

/// Flags of `revocd serve`.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct ServeConfig {
    /// Address to serve gRPC on.
    #[arg(long, env = "REVOCD_LISTEN", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen: SocketAddr,

    /// Local trial mode: no API keys (every caller is an admin), a generated
    /// HS256 secret unless one is given, loopback addresses only.
    #[arg(long, env = "REVOCD_DEV")]
    pub dev: bool,

    /// Redis to store revocations in (`redis://[user:pass@]host:port[/db]`).
    /// Without it, revocations live in this process's memory only.
    #[arg(long, env = "REVOCD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis Cluster to store revocations in: the URLs of some of its nodes,
    /// comma-separated (`redis://host1:6379,redis://host2:6379`).
    #[arg(
        long,
        env = "REVOCD_REDIS_CLUSTER",
        hide_env_values = true,
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster: Vec<String>,

    /// Partitions of the change log, fixed for the life of a deployment
    /// (recorded in Redis; a replica started with another number refuses to
    /// start). More partitions spread a cluster's writes over more nodes.
    /// Default: 1 on one Redis, 16 on a cluster.
    #[arg(long, env = "REVOCD_LOG_PARTITIONS")]
    pub log_partitions: Option<u16>,

    /// Prefix of every Redis key, so deployments can share one Redis.
    #[arg(long, env = "REVOCD_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// When a write is acknowledged: `fast` once Redis executed it (a Redis
    /// crash loses what `appendfsync` had not yet written, up to a second
    /// with `everysec`); `strict` once it is on Redis's disk (`WAITAOF` on
    /// Redis 7.2+, else Redis must run with `appendfsync always`).
    #[arg(long, env = "REVOCD_DURABILITY", value_enum, default_value_t = Durability::Fast)]
    pub durability: Durability,

    /// Replicas every write must reach before it is acknowledged (Redis
    /// `WAIT`); 0 for none.
    #[arg(long, env = "REVOCD_WAIT_REPLICAS", default_value_t = 0)]
    pub wait_replicas: u32,

    /// Approximate number of change-log entries kept in Redis (also how
    /// far back the audit trail reaches). At least 10000: a replica whose
    /// follower falls further behind than this reloads its filter.
    #[arg(long, env = "REVOCD_LOG_RETENTION", default_value_t = DEFAULT_LOG_RETENTION)]
    pub log_retention: u64,

    /// Time one Redis command may take before the call fails as unavailable.
    #[arg(long, env = "REVOCD_REDIS_TIMEOUT", default_value = DEFAULT_REDIS_TIMEOUT, value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// TLS of the gRPC server (and mutual TLS).
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,

    /// TOML file of API keys (name, SHA-256 of the key, roles). Required
    /// unless `--dev`.
    #[arg(long, env = "REVOCD_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Keys, issuers, audiences and leeway of the tokens.
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Longest lifetime of a token revocd will store a revocation for (and
    /// how long a subject cut-off is kept), e.g. `24h`, `7d`.
    #[arg(long, env = "REVOCD_MAX_TOKEN_LIFETIME", default_value = DEFAULT_MAX_TOKEN_LIFETIME, value_parser = humantime::parse_duration)]
    pub max_token_lifetime: Duration,

    /// File holding the 16-byte digest key of the filter, as 32 hex digits.
    /// Without it, the key is kept in Redis (created by the first replica)
    /// or, with the memory store, made up at start.
    #[arg(long, env = "REVOCD_DIGEST_KEY_FILE")]
    pub digest_key_file: Option<PathBuf>,

    /// False-positive rate the revocation filter is sized for, in (0, 0.5).
    #[arg(long, env = "REVOCD_FILTER_FP_RATE", default_value_t = crate::hub::DEFAULT_FP_RATE)]
    pub filter_fp_rate: f64,

    /// Room a rebuilt filter leaves beyond the live count, as a share of it:
    /// larger means rarer rebuilds (each one a snapshot to every gateway),
    /// smaller means smaller snapshots.
    #[arg(long, env = "REVOCD_FILTER_HEADROOM", default_value_t = crate::hub::DEFAULT_HEADROOM)]
    pub filter_headroom: f64,

    /// Interval between heartbeats on filter streams.
    #[arg(long, env = "REVOCD_HEARTBEAT_INTERVAL", default_value = DEFAULT_HEARTBEAT_INTERVAL, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Queue slots per subscriber (a delta, a heartbeat or a whole snapshot
    /// each) before it is re-based with a snapshot.
    #[arg(long, env = "REVOCD_SUBSCRIBER_BUFFER", default_value_t = crate::hub::DEFAULT_SUBSCRIBER_BUFFER)]
    pub subscriber_buffer: usize,

    /// Recent changes kept in memory to resume subscribers with deltas.
    #[arg(long, env = "REVOCD_DELTA_HISTORY", default_value_t = crate::hub::DEFAULT_HISTORY)]
    pub delta_history: usize,

    /// Most filter subscribers this replica serves at once.
    #[arg(long, env = "REVOCD_MAX_SUBSCRIBERS", default_value_t = 10_000)]
    pub max_subscribers: usize,

    /// Most filter streams one API key may hold open on this replica.
    #[arg(long, env = "REVOCD_MAX_STREAMS_PER_KEY", default_value_t = 1_000)]
    pub max_streams_per_key: usize,

    /// Keyless self-revocations (`Revoke` of a token by itself, without an
    /// API key) per minute on this replica, all callers together; a burst
    /// of one minute's worth. Over it: RESOURCE_EXHAUSTED.
    #[arg(long, env = "REVOCD_KEYLESS_PER_MINUTE", default_value_t = DEFAULT_KEYLESS_PER_MINUTE, value_parser = per_minute())]
    pub keyless_per_minute: u32,

    /// Keyless self-revocations per minute of the tokens of one (issuer,
    /// subject) on this replica; a burst of one minute's worth.
    #[arg(long, env = "REVOCD_KEYLESS_SUBJECT_PER_MINUTE", default_value_t = DEFAULT_KEYLESS_SUBJECT_PER_MINUTE, value_parser = per_minute())]
    pub keyless_subject_per_minute: u32,

    /// Keyless self-revocations per minute from one source address (an
    /// IPv6 /64 counts as one) on this replica; a burst of one minute's
    /// worth. Behind an L7 proxy all callers share the proxy's address.
    #[arg(long, env = "REVOCD_KEYLESS_SOURCE_PER_MINUTE", default_value_t = DEFAULT_KEYLESS_SOURCE_PER_MINUTE, value_parser = per_minute())]
    pub keyless_source_per_minute: u32,

    /// Address of Prometheus `GET /metrics` (off unless given).
    #[arg(long, env = "REVOCD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Time open calls get to finish at shutdown.
    #[arg(long, env = "REVOCD_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE, value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// A per-minute quota: 1 or more (0 would refuse every call; a large
/// number is no limit in practice).
fn per_minute() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

/// Flags of `revocd agent`, the gateway sidecar.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct AgentConfig {
    /// revocd server to follow (`http://host:port`); repeatable, tried in
    /// turn when one is unreachable.
    #[arg(
        long = "server",
        env = "REVOCD_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub servers: Vec<String>,

    /// File holding the API key (role `subscribe`) sent to the servers.
    #[arg(long, env = "REVOCD_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,

    /// The API key itself (prefer --api-key-file: arguments are visible to
    /// other local users).
    #[arg(long, env = "REVOCD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// TLS towards the servers (with `https://` server URLs).
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,

    /// Keys, issuers, audiences and leeway of the tokens.
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Address of the HTTP forward-auth endpoint (nginx `auth_request`,
    /// Traefik ForwardAuth, Caddy `forward_auth`); every path answers.
    #[arg(long, env = "REVOCD_HTTP_LISTEN", default_value = DEFAULT_AGENT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    /// Address of the Envoy `ext_authz` gRPC endpoint (off unless given).
    #[arg(long, env = "REVOCD_EXT_AUTHZ_LISTEN")]
    pub ext_authz_listen: Option<SocketAddr>,

    /// Address of `/healthz` and `/metrics` (off unless given).
    #[arg(long, env = "REVOCD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Request header holding the token, as `Bearer <token>` or bare.
    #[arg(long, env = "REVOCD_TOKEN_HEADER", default_value = "authorization")]
    pub token_header: String,

    /// What to do when the filter is stale: `check-online` (ask the
    /// server about every token; 503 while none answers), `fail-closed`
    /// (503 for every token) or `fail-open` (keep answering from the last
    /// filter, missing revocations made meanwhile).
    #[arg(long, env = "REVOCD_ON_STALE", default_value = "check-online")]
    pub on_stale: crate::gateway::StalePolicy,

    /// Time without a heartbeat from the server after which --on-stale
    /// applies (heartbeats come every 2 s while the server is current).
    #[arg(long, env = "REVOCD_MAX_STALENESS", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_staleness: Duration,

    /// The name this agent gives the servers, for their logs.
    #[arg(long, env = "REVOCD_GATEWAY_ID", default_value = "revocd-agent")]
    pub gateway_id: String,
}

/// The forward-auth address of `revocd agent` by default.
pub const DEFAULT_AGENT_HTTP_LISTEN: &str = "127.0.0.1:8081";

/// How tokens are verified: the same flags for `revocd serve` and
/// `revocd agent`.
///
/// Every key verifies the tokens of one issuer (see [`crate::tokens`]).
/// `--jwt-issuer-key` and `--jwt-issuer-hs256-secret-file` bind a key to
/// its issuer, and the issuer is then accepted. The older key flags bind
/// nothing: their keys belong to the one accepted issuer, or to any issuer
/// when none is given; with two or more issuers they are refused at start,
/// as a key that speaks for every issuer lets each one sign for the others.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct JwtArgs {
    /// File holding the HS256 secret that signs tokens (of the one
    /// --jwt-issuer; bind it with --jwt-issuer-hs256-secret-file when there
    /// are several).
    #[arg(long, env = "REVOCD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// PEM file of a public key (RSA, EC or Ed25519) that signs tokens (of
    /// the one --jwt-issuer); repeatable.
    #[arg(long, env = "REVOCD_JWT_PUBLIC_KEY_FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,

    /// JWKS file of the keys that sign tokens (of the one --jwt-issuer),
    /// matched by `kid`.
    #[arg(long, env = "REVOCD_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Public keys of one issuer, as `ISSUER=PATH`: a PEM public key or a
    /// JWKS file (told apart by its content); they verify that issuer's
    /// tokens only, and the issuer is accepted. Repeatable.
    #[arg(
        long,
        env = "REVOCD_JWT_ISSUER_KEY",
        value_delimiter = ',',
        value_name = "ISSUER=PATH"
    )]
    pub jwt_issuer_key: Vec<IssuerFile>,

    /// HS256 secret of one issuer, as `ISSUER=PATH` (a file holding the
    /// secret); it verifies that issuer's tokens only, and the issuer is
    /// accepted. Repeatable.
    #[arg(
        long,
        env = "REVOCD_JWT_ISSUER_HS256_SECRET_FILE",
        value_delimiter = ',',
        value_name = "ISSUER=PATH"
    )]
    pub jwt_issuer_hs256_secret_file: Vec<IssuerFile>,

    /// Accepted token issuer (`iss`); repeatable. Issuers bound to a key
    /// are accepted too. With exactly one issuer in all, it is the default
    /// issuer of requests that name none, and owns the unbound keys.
    #[arg(long, env = "REVOCD_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,

    /// Accepted token audience (`aud`); repeatable. Unset: `aud` is not
    /// checked.
    #[arg(long, env = "REVOCD_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Clock leeway for `exp` and `nbf`, in seconds; revocation records
    /// outlive their token's `exp` by this much.
    #[arg(long, env = "REVOCD_LEEWAY", default_value_t = DEFAULT_LEEWAY_SECONDS)]
    pub leeway: u64,
}

impl JwtArgs {
    /// The verifier these flags describe, also trusting `extra_secret` (the
    /// generated `--dev` secret) for HS256, unbound.
    ///
    /// # Errors
    /// An unusable key file, unbound keys beside several issuers, or a
    /// build without a crypto backend.
    pub fn verifier(&self, extra_secret: Option<&[u8]>) -> Result<TokenVerifier, VerifierError> {
        crate::tokens::ensure_crypto_backend()?;
        let mut builder = TokenVerifier::builder()
            .issuers(&self.jwt_issuer)
            .audiences(&self.jwt_audience)
            .leeway_seconds(self.leeway);
        if let Some(path) = &self.jwt_hs256_secret_file {
            builder = builder.hs256_secret_file(path)?;
        }
        if let Some(secret) = extra_secret {
            builder = builder.hs256_secret(secret)?;
        }
        for path in &self.jwt_public_key_file {
            builder = builder.public_key_pem_file(path)?;
        }
        if let Some(path) = &self.jwks_file {
            builder = builder.jwks_file(path)?;
        }
        for bound in &self.jwt_issuer_key {
            builder = builder.issuer_key_file(&bound.issuer, &bound.path)?;
        }
        for bound in &self.jwt_issuer_hs256_secret_file {
            builder = builder.issuer_hs256_secret_file(&bound.issuer, &bound.path)?;
        }
        Ok(builder.build()?)
    }

    /// The issuers accepted: those of --jwt-issuer, then those bound to a
    /// key, each once.
    pub fn issuers(&self) -> Vec<&str> {
        let bound = self
            .jwt_issuer_key
            .iter()
            .chain(&self.jwt_issuer_hs256_secret_file)
            .map(|file| file.issuer.as_str());
        let mut issuers: Vec<&str> = Vec::new();
        for issuer in self.jwt_issuer.iter().map(String::as_str).chain(bound) {
            if !issuers.contains(&issuer) {
                issuers.push(issuer);
            }
        }
        issuers
    }

    /// The issuer of requests that name none: the one accepted issuer,
    /// else the empty issuer.
    pub fn default_issuer(&self) -> &str {
        match self.issuers().as_slice() {
            [only] => only,
            _ => "",
        }
    }
}

/// A key file bound to the issuer whose tokens it verifies: the value of
/// `--jwt-issuer-key` and `--jwt-issuer-hs256-secret-file`, written
/// `ISSUER=PATH`. The issuer ends at the first `=`, so it cannot hold one
/// (OpenID Connect issuers have no query part); the path may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerFile {
    /// The issuer (`iss`) the key speaks for.
    pub issuer: String,
    /// The key file.
    pub path: PathBuf,
}

impl std::str::FromStr for IssuerFile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((issuer, path)) = text.split_once('=') else {
            return Err(
                "expected ISSUER=PATH, e.g. https://auth.example.com=/etc/revocd/auth.pem".into(),
            );
        };
        if issuer.trim().is_empty() || path.trim().is_empty() {
            return Err("expected ISSUER=PATH with neither part empty".into());
        }
        Ok(IssuerFile {
            issuer: issuer.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

impl std::fmt::Display for IssuerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.issuer, self.path.display())
    }
}

/// Why the token verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// A key file is unusable.
    #[error("JWT keys: {0}")]
    Keys(#[from] FileError),
    /// Keys bound to no issuer beside several issuers. Not a `source`: the
    /// message already holds all of it, and is printed once.
    #[error("JWT keys: {0}")]
    Unbound(UnboundKeys),
    /// The build cannot verify tokens.
    #[error(transparent)]
    Crypto(#[from] crate::tokens::NoCryptoBackend),
}

impl From<UnboundKeys> for VerifierError {
    fn from(error: UnboundKeys) -> Self {
        VerifierError::Unbound(error)
    }
}

/// A file named by a flag that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's contents are not usable.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, for a person to fix.
        detail: String,
    },
}

impl FileError {
    /// A read failure of `path`.
    pub fn read(path: &std::path::Path, source: std::io::Error) -> Self {
        FileError::Read {
            path: path.display().to_string(),
            source,
        }
    }

    /// Unusable contents of `path`.
    pub fn invalid(path: &std::path::Path, detail: impl Into<String>) -> Self {
        FileError::Invalid {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
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

impl ServeConfig {
    /// Checks the flags fit together.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dev && !self.listen.ip().is_loopback() {
            return Err(ConfigError::DevNotLoopback(self.listen));
        }
        if !self.dev && self.api_keys_file.is_none() {
            return Err(ConfigError::NoApiKeys);
        }
        let redis = self.redis_url.is_some() || !self.redis_cluster.is_empty();
        if !redis && (self.durability == Durability::Strict || self.wait_replicas > 0) {
            return Err(ConfigError::DurabilityWithoutRedis);
        }
        if !redis && self.log_partitions.is_some() {
            return Err(ConfigError::PartitionsWithoutRedis);
        }
        if self
            .log_partitions
            .is_some_and(|n| n == 0 || n > crate::store::MAX_PARTITIONS)
        {
            return Err(ConfigError::OutOfRange {
                flag: "log-partitions",
                min: "1",
                max: "1024",
            });
        }
        if !self.redis_cluster.is_empty() && self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::BracesInPrefix);
        }
        if self.log_retention < MIN_LOG_RETENTION || self.log_retention > u64::from(u32::MAX) {
            return Err(ConfigError::OutOfRange {
                flag: "log-retention",
                min: "10000",
                max: "4294967295",
            });
        }
        let lifetime = self.max_token_lifetime;
        if lifetime < Duration::from_secs(60) || lifetime > Duration::from_secs(366 * 86_400) {
            return Err(ConfigError::OutOfRange {
                flag: "max-token-lifetime",
                min: "1m",
                max: "366d",
            });
        }
        if self.jwt.leeway > 3_600 {
            return Err(ConfigError::OutOfRange {
                flag: "leeway",
                min: "0",
                max: "3600 seconds",
            });
        }
        if !(self.filter_fp_rate > 0.0 && self.filter_fp_rate < 0.5) {
            return Err(ConfigError::OutOfRange {
                flag: "filter-fp-rate",
                min: "more than 0",
                max: "less than 0.5",
            });
        }
        if !(0.0..=10.0).contains(&self.filter_headroom) {
            return Err(ConfigError::OutOfRange {
                flag: "filter-headroom",
                min: "0",
                max: "10",
            });
        }
        if self.heartbeat_interval < Duration::from_millis(10) || self.subscriber_buffer < 2 {
            return Err(ConfigError::OutOfRange {
                flag: "heartbeat-interval / --subscriber-buffer",
                min: "10ms / 2",
                max: "any",
            });
        }
        if self.redis_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                flag: "redis-timeout",
                min: "1ms",
                max: "any",
            });
        }
        Ok(())
    }

    /// The keyless self-revocation quotas.
    pub fn keyless_limits(&self) -> crate::server::KeylessLimits {
        crate::server::KeylessLimits {
            per_minute: self.keyless_per_minute,
            per_subject_per_minute: self.keyless_subject_per_minute,
            per_source_per_minute: self.keyless_source_per_minute,
        }
    }

    /// The filter hub's settings.
    pub fn hub_config(&self) -> crate::hub::HubConfig {
        crate::hub::HubConfig {
            fp_rate: self.filter_fp_rate,
            headroom: self.filter_headroom,
            heartbeat_interval: self.heartbeat_interval,
            subscriber_buffer: self.subscriber_buffer,
            history: self.delta_history,
            max_subscribers: self.max_subscribers,
            bounds: crate::bounds::TokenBounds {
                leeway: self.jwt.leeway as i64,
                max_token_lifetime: self.max_token_lifetime.as_secs() as i64,
            },
            ..crate::hub::HubConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn parse(args: &[&str]) -> ServeConfig {
        let argv = std::iter::once("revocd").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").serve
    }

    #[test]
    fn defaults_need_api_keys() {
        assert_eq!(parse(&[]).validate(), Err(ConfigError::NoApiKeys));
        assert_eq!(parse(&["--api-keys-file", "k.toml"]).validate(), Ok(()));
        assert_eq!(parse(&["--dev"]).validate(), Ok(()));
    }

    #[test]
    fn the_log_keeps_at_least_ten_thousand_entries() {
        let retention = |n: &str| parse(&["--dev", "--log-retention", n]).validate();
        assert!(matches!(
            retention("9999"),
            Err(ConfigError::OutOfRange {
                flag: "log-retention",
                ..
            })
        ));
        assert_eq!(retention("10000"), Ok(()));
    }

    #[test]
    fn dev_refuses_a_public_address() {
        let config = parse(&["--dev", "--listen", "0.0.0.0:50051"]);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DevNotLoopback(_))
        ));
        assert_eq!(parse(&["--dev", "--listen", "[::1]:1"]).validate(), Ok(()));
    }

    #[test]
    fn durations_are_human_and_bounded() {
        let config = parse(&["--dev", "--max-token-lifetime", "7d"]);
        assert_eq!(config.max_token_lifetime, Duration::from_secs(7 * 86_400));
        let config = parse(&["--dev", "--max-token-lifetime", "10s"]);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange {
                flag: "max-token-lifetime",
                ..
            })
        ));
    }

    #[test]
    fn keyless_quotas_default_and_refuse_zero() {
        let limits = parse(&["--dev"]).keyless_limits();
        assert_eq!(limits.per_minute, DEFAULT_KEYLESS_PER_MINUTE);
        assert_eq!(
            limits.per_subject_per_minute,
            DEFAULT_KEYLESS_SUBJECT_PER_MINUTE
        );
        assert_eq!(
            limits.per_source_per_minute,
            DEFAULT_KEYLESS_SOURCE_PER_MINUTE
        );
        let set = parse(&["--keyless-subject-per-minute", "3"]).keyless_limits();
        assert_eq!(set.per_subject_per_minute, 3);
        let argv = ["revocd", "--keyless-per-minute", "0"];
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "0 would refuse every call"
        );
    }

    #[test]
    fn one_issuer_is_the_default_issuer() {
        assert_eq!(
            parse(&["--jwt-issuer", "https://a"]).jwt.default_issuer(),
            "https://a"
        );
        assert_eq!(
            parse(&["--jwt-issuer", "https://a", "--jwt-issuer", "https://b"])
                .jwt
                .default_issuer(),
            ""
        );
        assert_eq!(parse(&[]).jwt.default_issuer(), "");
    }

    #[test]
    fn issuer_keys_are_issuer_and_path() {
        let config = parse(&[
            "--jwt-issuer-key",
            "https://a=/keys/a=1.pem",
            "--jwt-issuer-hs256-secret-file",
            "https://b=/run/b",
        ]);
        let bound = IssuerFile {
            issuer: "https://a".into(),
            path: "/keys/a=1.pem".into(),
        };
        assert_eq!(bound.to_string(), "https://a=/keys/a=1.pem");
        assert_eq!(config.jwt.jwt_issuer_key, [bound]);
        assert_eq!(config.jwt.issuers(), ["https://a", "https://b"]);
        assert_eq!(config.jwt.default_issuer(), "");
        for wrong in ["https://a", "=/a.pem", "https://a="] {
            assert!(wrong.parse::<IssuerFile>().is_err(), "{wrong}");
        }
    }

    #[test]
    fn an_issuer_bound_to_a_key_is_accepted_and_may_be_the_default() {
        let config = parse(&[
            "--jwt-issuer",
            "https://a",
            "--jwt-issuer-key",
            "https://a=a.pem",
        ]);
        assert_eq!(config.jwt.issuers(), ["https://a"]);
        assert_eq!(config.jwt.default_issuer(), "https://a");
    }

    #[test]
    fn unbound_keys_beside_two_issuers_stop_the_verifier() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret").expect("secret file");
        let secret = secret.to_str().expect("UTF-8 path");
        let one = parse(&[
            "--jwt-issuer",
            "https://a",
            "--jwt-hs256-secret-file",
            secret,
        ]);
        assert!(one.jwt.verifier(None).is_ok());
        let bound = format!("https://b={secret}");
        let two = parse(&[
            "--jwt-issuer",
            "https://a",
            "--jwt-hs256-secret-file",
            secret,
            "--jwt-issuer-hs256-secret-file",
            &bound,
        ]);
        let refused = two.jwt.verifier(None).expect_err("ambiguous");
        assert!(matches!(refused, VerifierError::Unbound(_)), "{refused:?}");
        let message = refused.to_string();
        assert!(
            message.contains("--jwt-issuer-key ISSUER=PATH"),
            "{message}"
        );
    }
}
