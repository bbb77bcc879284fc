//! `revocd agent` flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{JwtArgs, MAX_STALENESS_TEXT};

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
    /// Traefik ForwardAuth, Caddy `forward_auth`); every path answers but
    /// `POST /oauth2/introspect` (RFC 7662, see
    /// --introspection-keys-file).
    #[arg(long, env = "REVOCD_HTTP_LISTEN", default_value = DEFAULT_AGENT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    /// API keys (the server's TOML format) that may call `POST
    /// /oauth2/introspect` on --http-listen: keys with role `read` or
    /// `subscribe`, as Bearer or HTTP Basic. Without it, introspection is
    /// closed (404).
    #[arg(long, env = "REVOCD_INTROSPECTION_KEYS_FILE")]
    pub introspection_keys_file: Option<PathBuf>,

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
    #[arg(long, env = "REVOCD_MAX_STALENESS", default_value = MAX_STALENESS_TEXT.as_str(), value_parser = humantime::parse_duration)]
    pub max_staleness: Duration,

    /// Directory where the agent keeps its filter between runs (created if
    /// needed), so a restart resumes with the deltas it missed instead of
    /// a whole snapshot when the server still has them. A damaged or
    /// foreign file is ignored with a warning.
    #[arg(long, env = "REVOCD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// The name this agent gives the servers, for their logs.
    #[arg(long, env = "REVOCD_GATEWAY_ID", default_value = "revocd-agent")]
    pub gateway_id: String,
}

/// The forward-auth address of `revocd agent` by default.
pub const DEFAULT_AGENT_HTTP_LISTEN: &str = "127.0.0.1:8081";
