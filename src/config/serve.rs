//! `revocd serve` flags: every flag also reads a `REVOCD_*` variable;
//! [`ServeConfig::validate`] turns mistakes into typed errors before
//! anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{
    ConfigError, IssuerFile, JwtArgs, TransmitterValue, HEARTBEAT_INTERVAL_TEXT,
    MAX_TOKEN_LIFETIME_TEXT,
};
use crate::gateway::MAX_CLAIM_NAME_BYTES;
use crate::hub::DEFAULT_MAX_SUBSCRIBERS;
use crate::server::{
    DEFAULT_KEYLESS_PER_MINUTE, DEFAULT_KEYLESS_SOURCE_PER_MINUTE,
    DEFAULT_KEYLESS_SUBJECT_PER_MINUTE,
};
use crate::store::{Durability, EntryFormat};
use crate::tokens::{CUT_CLAIMS, ISSUER_WIDE};

/// Most `--revocable-claim`s: each one a gateway holds cut-offs of costs a
/// lookup of every check.
pub const MAX_REVOCABLE_CLAIMS: usize = 16;

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
/// Largest `--filter-compaction-min-kib` (4 GiB, beyond any filter: never
/// compact).
pub const MAX_COMPACTION_MIN_KIB: u64 = 4 << 20;
/// Time a Redis command may take before it fails as unavailable.
pub const DEFAULT_REDIS_TIMEOUT: &str = "2s";
/// Time given to open calls to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";
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

    /// How token revocations are written to the change log in Redis: `1`,
    /// five fields, which every version of revocd reads; `2`, one field,
    /// which costs Redis and every replica less, but which only replicas
    /// that have this flag can read. Every replica reads both. Set `2` once
    /// no replica without this flag is left; an older replica meeting an
    /// entry of format 2 reloads its filter over and over and stops
    /// sending heartbeats.
    #[arg(long, env = "REVOCD_LOG_ENTRY_FORMAT", value_enum, default_value_t = EntryFormat::Fields)]
    pub log_entry_format: EntryFormat,

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
    #[arg(long, env = "REVOCD_MAX_TOKEN_LIFETIME", default_value = MAX_TOKEN_LIFETIME_TEXT.as_str(), value_parser = humantime::parse_duration)]
    pub max_token_lifetime: Duration,

    /// File holding the 16-byte digest key of the filter, as 32 hex digits.
    /// Without it, the key is kept in Redis (created by the first replica)
    /// or, with the memory store, made up at start.
    #[arg(long, env = "REVOCD_DIGEST_KEY_FILE")]
    pub digest_key_file: Option<PathBuf>,

    /// False-positive rate the revocation filter is sized for, in (0, 0.5).
    #[arg(long, env = "REVOCD_FILTER_FP_RATE", default_value_t = crate::hub::DEFAULT_FP_RATE)]
    pub filter_fp_rate: f64,

    /// Room each expiry slice's filter leaves beyond the entries expected
    /// in it, as a share of them: larger means fewer slices overfilling
    /// (each then opens a further filter), smaller means smaller snapshots.
    #[arg(long, env = "REVOCD_FILTER_HEADROOM", default_value_t = crate::hub::DEFAULT_HEADROOM)]
    pub filter_headroom: f64,

    /// Smallest saving, in KiB of bitmap, for which the filter is rebuilt
    /// compact after a burst has grown it into chains of filters; every
    /// gateway then gets a snapshot of the compact filter. Set it above the
    /// filter's size to never compact.
    #[arg(long, env = "REVOCD_FILTER_COMPACTION_MIN_KIB", default_value_t = crate::hub::DEFAULT_COMPACTION_MIN_KIB)]
    pub filter_compaction_min_kib: u64,

    /// Interval between heartbeats on filter streams.
    #[arg(long, env = "REVOCD_HEARTBEAT_INTERVAL", default_value = HEARTBEAT_INTERVAL_TEXT.as_str(), value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Queue slots per subscriber (a delta, a heartbeat or a whole snapshot
    /// each) before it is re-based with a snapshot.
    #[arg(long, env = "REVOCD_SUBSCRIBER_BUFFER", default_value_t = crate::hub::DEFAULT_SUBSCRIBER_BUFFER)]
    pub subscriber_buffer: usize,

    /// Recent changes kept in memory to resume subscribers with deltas.
    #[arg(long, env = "REVOCD_DELTA_HISTORY", default_value_t = crate::hub::DEFAULT_HISTORY)]
    pub delta_history: usize,

    /// Most filter subscribers this replica serves at once.
    #[arg(long, env = "REVOCD_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Most filter streams one API key may hold open on this replica.
    #[arg(long, env = "REVOCD_MAX_STREAMS_PER_KEY", default_value_t = 1_000)]
    pub max_streams_per_key: usize,

    /// A claim besides `sub`, `sid`, `client_id` and `azp` that
    /// `RevokeClaim` may name (repeatable, e.g. `groups`, `email`); a token
    /// matches when the claim equals the value or, for an array, holds it.
    /// Fixed per deployment; gateways learn it from the cut-offs they get.
    #[arg(
        long = "revocable-claim",
        env = "REVOCD_REVOCABLE_CLAIM",
        value_delimiter = ','
    )]
    pub revocable_claim: Vec<String>,

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

    /// Address of the HTTP doors (off unless given): `POST /oauth2/revoke`
    /// (RFC 7009), `/oauth2/introspect` (RFC 7662),
    /// `/oidc/backchannel-logout` and `/ssf/events`; over TLS with
    /// --tls-cert (and the client certificates of --tls-client-ca), as
    /// gRPC.
    #[arg(long, env = "REVOCD_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// An audience OpenID back-channel logout tokens may name: the client
    /// id this deployment is registered under at the provider;
    /// repeatable. Without one, `/oidc/backchannel-logout` is closed.
    #[arg(
        long = "backchannel-audience",
        env = "REVOCD_BACKCHANNEL_AUDIENCE",
        value_delimiter = ','
    )]
    pub backchannel_audience: Vec<String>,

    /// Issuer (`iss`) of a Shared Signals transmitter whose security
    /// events are applied (with --ssf-jwks-file); more with
    /// --ssf-transmitter or `[[ssf.transmitter]]` tables.
    #[arg(long, env = "REVOCD_SSF_ISSUER", requires = "ssf_jwks_file")]
    pub ssf_issuer: Option<String>,

    /// The --ssf-issuer transmitter's public keys: a JWKS (or a PEM public
    /// key) file.
    #[arg(long, env = "REVOCD_SSF_JWKS_FILE", requires = "ssf_issuer")]
    pub ssf_jwks_file: Option<PathBuf>,

    /// The audience every transmitter's events must name (this receiver).
    #[arg(long, env = "REVOCD_SSF_AUDIENCE")]
    pub ssf_audience: Option<String>,

    /// An issuer of access tokens the --ssf-issuer transmitter's events
    /// may cut off; repeatable. Default: the transmitter's own issuer only.
    #[arg(
        long = "ssf-token-issuer",
        env = "REVOCD_SSF_TOKEN_ISSUER",
        value_delimiter = ',',
        requires = "ssf_issuer"
    )]
    pub ssf_token_issuer: Vec<String>,

    /// The --ssf-issuer transmitter's RFC 8936 poll endpoint: revocd polls
    /// it for events (beside or instead of push to `/ssf/events`),
    /// acknowledging each once applied. `https` trusts the system's CA
    /// certificates.
    #[arg(long, env = "REVOCD_SSF_POLL_URL", requires = "ssf_issuer")]
    pub ssf_poll_url: Option<hyper::Uri>,

    /// File holding the bearer token the poll endpoint expects.
    #[arg(long, env = "REVOCD_SSF_POLL_TOKEN_FILE", requires = "ssf_poll_url")]
    pub ssf_poll_token_file: Option<PathBuf>,

    /// Another transmitter and its public keys, as `ISSUER=PATH` (a JWKS
    /// or PEM public key file); repeatable. The `--ssf-transmitter-*`
    /// flags give it what --ssf-token-issuer, --ssf-poll-url and
    /// --ssf-poll-token-file give --ssf-issuer's.
    #[arg(
        long,
        env = "REVOCD_SSF_TRANSMITTER",
        value_delimiter = ',',
        value_name = "ISSUER=PATH"
    )]
    pub ssf_transmitter: Vec<IssuerFile>,

    /// An issuer of access tokens a --ssf-transmitter's events may cut
    /// off, as `TRANSMITTER=ISSUER`; repeatable.
    #[arg(
        long,
        env = "REVOCD_SSF_TRANSMITTER_TOKEN_ISSUER",
        value_delimiter = ',',
        value_name = "TRANSMITTER=ISSUER"
    )]
    pub ssf_transmitter_token_issuer: Vec<TransmitterValue>,

    /// A --ssf-transmitter's poll endpoint, as `TRANSMITTER=URL`.
    #[arg(
        long,
        env = "REVOCD_SSF_TRANSMITTER_POLL_URL",
        value_name = "TRANSMITTER=URL"
    )]
    pub ssf_transmitter_poll_url: Vec<TransmitterValue>,

    /// A --ssf-transmitter's poll bearer token file, as
    /// `TRANSMITTER=PATH`.
    #[arg(
        long,
        env = "REVOCD_SSF_TRANSMITTER_POLL_TOKEN_FILE",
        value_delimiter = ',',
        value_name = "TRANSMITTER=PATH"
    )]
    pub ssf_transmitter_poll_token_file: Vec<IssuerFile>,

    /// Pause between polls while a transmitter has nothing pending.
    #[arg(long, env = "REVOCD_SSF_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub ssf_poll_interval: Duration,

    /// Time open calls get to finish at shutdown.
    #[arg(long, env = "REVOCD_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE, value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// A per-minute quota: 1 or more (0 would refuse every call; a large
/// number is no limit in practice).
fn per_minute() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
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
        if !(1..=MAX_COMPACTION_MIN_KIB).contains(&self.filter_compaction_min_kib) {
            return Err(ConfigError::OutOfRange {
                flag: "filter-compaction-min-kib",
                min: "1",
                max: "4194304 (4 GiB)",
            });
        }
        if self.heartbeat_interval < Duration::from_millis(10) || self.subscriber_buffer < 2 {
            return Err(ConfigError::OutOfRange {
                flag: "heartbeat-interval / --subscriber-buffer",
                min: "10ms / 2",
                max: "any",
            });
        }
        self.transmitters()?;
        if self.revocable_claim.len() > MAX_REVOCABLE_CLAIMS {
            return Err(ConfigError::OutOfRange {
                flag: "revocable-claim (how many)",
                min: "0",
                max: "16",
            });
        }
        if let Some(claim) = self.revocable_claim.iter().find(|claim| {
            claim.is_empty()
                || claim.len() > MAX_CLAIM_NAME_BYTES
                || !crate::bounds::is_printable(claim)
                || CUT_CLAIMS.contains(&claim.as_str())
                || claim.as_str() == ISSUER_WIDE
        }) {
            return Err(ConfigError::RevocableClaim(claim.clone()));
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
            compaction_min_saving_bits: self.filter_compaction_min_kib * 8 * 1024,
            heartbeat_interval: self.heartbeat_interval,
            subscriber_buffer: self.subscriber_buffer,
            history: self.delta_history,
            max_subscribers: self.max_subscribers,
            slice_seconds: crate::hub::slice_seconds_for(self.max_token_lifetime),
            bounds: crate::bounds::TokenBounds {
                leeway: self.jwt.leeway as i64,
                max_token_lifetime: self.max_token_lifetime.as_secs() as i64,
            },
            ..crate::hub::HubConfig::default()
        }
    }
}
