//! `revocd agent`: a sidecar that lets any gateway use revocd.
//!
//! It holds the streamed filter in memory (the [`gateway`](crate::gateway)
//! library) and answers authorisation sub-requests from it, in
//! microseconds and with no call to the server per request:
//!
//! - HTTP forward-auth on `--http-listen` ([`http`]): nginx `auth_request`,
//!   Traefik ForwardAuth, Caddy `forward_auth`. Every path answers: 200 with
//!   `X-Auth-Subject`, `X-Auth-Jti`, `X-Auth-Issuer` for a valid, unrevoked
//!   token; 401 with an RFC 6750 `WWW-Authenticate` challenge otherwise; 503
//!   when the filter is stale under `fail-closed`.
//! - RFC 7662 introspection on the same port, `POST /oauth2/introspect`
//!   ([`http`]), for callers with a key of `--introspection-keys-file`:
//!   the same decision, as `{"active": ...}`, so a gateway's
//!   introspection plugin can point at the local sidecar.
//! - Envoy `ext_authz` gRPC on `--ext-authz-listen` ([`ext_authz`]): the
//!   same decision, as a `CheckResponse`.
//! - `/healthz` (200 once a snapshot is loaded) and `/metrics` (Prometheus)
//!   on `--metrics-listen`.

pub mod ext_authz;
pub mod http;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::Access;
use crate::file::FileError;
use crate::gateway::{self, Decision, Gateway};
use crate::tokens::{Claims, VerifierError};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The token verifier cannot be built.
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    /// The API-key file is unusable.
    #[error("--api-key-file: {0}")]
    ApiKey(FileError),
    /// A server URL or the API key is unusable.
    #[error(transparent)]
    Gateway(#[from] gateway::Error),
    /// The introspection keys file is unusable.
    #[error("--introspection-keys-file: {0}")]
    IntrospectionKeys(FileError),
    /// A TLS file is unusable.
    #[error("TLS: {0}")]
    Tls(FileError),
    /// `--token-header` is not a header name.
    #[error("--token-header {0:?} is not a valid header name")]
    TokenHeader(String),
    /// A listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// The ext_authz server failed.
    #[error("serving ext_authz: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The agent's shared state: the gateway and how to find the token.
#[derive(Debug, Clone)]
pub struct Agent {
    gateway: Gateway,
    token_header: ::http::HeaderName,
    /// Who may introspect; `None`: introspection is closed.
    introspection: Option<Arc<Access>>,
}

impl Agent {
    /// An agent deciding with `gateway`, reading the token from
    /// `token_header`.
    pub fn new(gateway: Gateway, token_header: ::http::HeaderName) -> Agent {
        Agent {
            gateway,
            token_header,
            introspection: None,
        }
    }

    /// The agent, answering RFC 7662 introspection for callers with a key
    /// of `access` holding `read` or `subscribe`.
    pub fn with_introspection(self, access: Access) -> Agent {
        Agent {
            introspection: Some(Arc::new(access)),
            ..self
        }
    }

    /// Who may introspect, when introspection is open.
    pub fn introspection(&self) -> Option<&Access> {
        self.introspection.as_deref()
    }

    /// The name of the header that carries the token (lower case).
    pub fn token_header(&self) -> &::http::HeaderName {
        &self.token_header
    }

    /// The gateway the agent decides with.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Decides on a request from the value of its token header, and counts
    /// the decision in the metrics.
    pub async fn decide(&self, header_value: Option<&str>) -> Decision {
        let started = Instant::now();
        let token = header_value.and_then(gateway::token_of);
        let decision = self.gateway.decide(token).await;
        let outcome = match &decision {
            Decision::Allow(_) => "allow",
            Decision::Deny(denial) => denial.label(),
        };
        metrics::counter!("revocd_agent_decisions_total", "outcome" => outcome).increment(1);
        metrics::histogram!("revocd_agent_decision_seconds")
            .record(started.elapsed().as_secs_f64());
        decision
    }

    /// True once a snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.gateway.view().is_some()
    }
}

/// The identity headers an allowed request carries upstream, with the
/// claim each comes from (`None` when the token lacks it).
pub fn identity(claims: &Claims) -> [(&'static str, Option<&str>); 3] {
    [
        ("x-auth-subject", claims.subject.as_deref()),
        ("x-auth-jti", claims.jti.as_deref()),
        ("x-auth-issuer", Some(claims.issuer.as_str())),
    ]
}

/// The agent's sockets, bound before it starts (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// Forward-auth HTTP.
    pub http: TcpListener,
    /// Envoy ext_authz gRPC.
    pub ext_authz: Option<TcpListener>,
    /// `/healthz` and `/metrics`.
    pub metrics: Option<TcpListener>,
}

/// Serves the agent on `listeners` until `shutdown` completes.
///
/// # Errors
/// [`AgentError`] when a listener fails.
pub async fn run(
    agent: Agent,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let upkeep = stop.clone();
    tasks.spawn(async move {
        crate::telemetry::upkeep(upkeep).await;
        Ok(())
    });
    info!(address = %listeners.http.local_addr()?, "forward-auth listening");
    tasks.spawn(http::serve_forward_auth(
        listeners.http,
        agent.clone(),
        stop.clone(),
    ));
    if let Some(listener) = listeners.metrics {
        info!(address = %listener.local_addr()?, "metrics listening");
        tasks.spawn(http::serve_metrics(listener, agent.clone(), stop.clone()));
    }
    if let Some(listener) = listeners.ext_authz {
        info!(address = %listener.local_addr()?, "ext_authz listening");
        tasks.spawn(ext_authz::serve(listener, agent.clone(), stop.clone()));
    }
    tokio::select! {
        () = shutdown => info!("shutting down"),
        Some(finished) = tasks.join_next() => {
            stop.cancel();
            // A listener ended on its own: report why.
            finished.map_err(|e| std::io::Error::other(e.to_string()))??;
        }
    }
    stop.cancel();
    while let Some(finished) = tasks.join_next().await {
        finished.map_err(|e| std::io::Error::other(e.to_string()))??;
    }
    Ok(())
}
