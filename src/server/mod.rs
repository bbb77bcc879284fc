//! The gRPC server: what a replica serves from ([`State`]) and how it runs
//! ([`run`]).
//!
//! Beside `revocation.v1.RevocationService` it serves `grpc.health.v1.Health`
//! (SERVING only while the store answers) and gRPC reflection describing
//! both, without authentication; and, on a port of their own, the HTTP
//! doors of [`http`].
//!
//! The service, in layers:
//!
//! - `handlers/`: [`RevocationApi`], one file of handlers an area of the API;
//! - `service.rs`: the generated trait wired to the handlers, with metrics;
//! - `error.rs`: `ApiError` and its one mapping to a gRPC status;
//! - `limits.rs`: limits of request fields, batches, pages and streams;
//! - `convert.rs`: store types to and from the wire types;
//! - `quota/`: rate quotas of keys and of keyless self-revocation;
//! - `http/`: the HTTP doors (RFC 7009, RFC 7662, back-channel logout,
//!   Shared Signals), calling the same handlers.

mod convert;
mod error;
mod handlers;
pub mod http;
mod limits;
mod quota;
mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::ServerTlsConfig;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::auth::Access;
use crate::hub::FilterHub;
use crate::pb::revocation_service_server::RevocationServiceServer;
use crate::store::Store;
use crate::tokens::TokenVerifier;

pub use self::handlers::RevocationApi;
pub use self::quota::{
    KeylessLimits, KeylessRefusal, DEFAULT_KEYLESS_PER_MINUTE, DEFAULT_KEYLESS_SOURCE_PER_MINUTE,
    DEFAULT_KEYLESS_SUBJECT_PER_MINUTE,
};

/// Largest request message accepted, in bytes; every request is small.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest HTTP/2 header list a request may carry (hyper's default is
/// 16 KiB).
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// HTTP/2 streams one connection may hold open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Longest a unary call may run before it is cancelled.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the store is pinged to drive the health service.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Rules applied to every request, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Clock leeway in seconds; records outlive `exp` by this much.
    pub leeway: i64,
    /// Longest token lifetime accepted, in seconds.
    pub max_token_lifetime: i64,
    /// Issuer of requests that name none.
    pub default_issuer: String,
    /// Most filter streams one caller may hold open.
    pub max_streams_per_key: usize,
    /// Quotas of revoking a token by itself without an API key.
    pub keyless: KeylessLimits,
    /// Claims `RevokeClaim` may name besides the built-in ones
    /// (`--revocable-claim`).
    pub revocable_claims: Vec<String>,
}

/// Everything a replica serves from; shared by all calls.
#[derive(Debug)]
pub struct State {
    /// Where revocations are kept.
    pub store: Store,
    /// Verifies presented tokens.
    pub verifier: TokenVerifier,
    /// Authenticates callers.
    pub access: Access,
    /// Request rules.
    pub policy: Policy,
    /// This replica's filter and its subscribers.
    pub hub: FilterHub,
    /// When this replica started, for `uptime_seconds`.
    pub started: Instant,
    /// TLS of the gRPC server; `None` serves plain HTTP/2.
    pub tls: Option<ServerTlsConfig>,
    /// What the HTTP doors verify logout tokens and security events with.
    pub doors: http::Doors,
}

/// Serves gRPC on `listener` (and the HTTP doors on `http`, if given)
/// until `shutdown` completes, then gives open calls `grace` to finish.
///
/// # Errors
/// A transport error of the gRPC server.
pub async fn run(
    listener: TcpListener,
    http: Option<TcpListener>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let monitor = tokio::spawn(watch_store_health(state.store.clone(), health.clone()));
    // The descriptor set is compiled in by build.rs from the same proto, so
    // building the reflection services cannot fail.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("embedded descriptor set is valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor set is valid");
    let api = RevocationApi::new(Arc::clone(&state));
    let revocation =
        RevocationServiceServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST_BYTES);

    let stopping = CancellationToken::new();
    let poller = tokio::spawn(http::poll(api.clone(), stopping.clone()));
    // Shares the API (and so its quotas) with gRPC; stops with it.
    let doors = http.map(|listener| {
        let doors = http::serve(listener, api, stopping.clone());
        tokio::spawn(async move {
            if let Err(error) = doors.await {
                warn!(%error, "the HTTP doors stopped");
            }
        })
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &state.tls {
        builder = builder.tls_config(tls.clone())?;
    }
    let serve = builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // Room for a header list well past the API-key limit, so an
        // oversize key is refused by the key check (UNAUTHENTICATED), not
        // by HTTP/2 with a status gRPC clients cannot read.
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .timeout(REQUEST_TIMEOUT)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(revocation)
        .serve_with_incoming_shutdown(
            // Replies are small and latency-bound: no Nagle delay.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopping.clone().cancelled_owned(),
        );
    tokio::pin!(serve);
    let result = tokio::select! {
        result = &mut serve => result,
        () = shutdown => {
            info!("shutting down; draining open calls");
            // Load balancers and gateways probing health move away first.
            monitor.abort();
            set_health(&health, ServingStatus::NotServing).await;
            // End the filter streams: they never finish by themselves.
            state.hub.shutdown();
            stopping.cancel();
            match tokio::time::timeout(grace, &mut serve).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(grace_seconds = grace.as_secs(), "calls still open after the grace period; closing them");
                    Ok(())
                }
            }
        }
    };
    monitor.abort();
    poller.abort();
    if let Some(doors) = doors {
        doors.abort();
    }
    result
}

/// Reports `status` for `""` and the revocation service.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    let service = <RevocationServiceServer<RevocationApi> as NamedService>::NAME;
    health.set_service_status("", status).await;
    health.set_service_status(service, status).await;
}

/// Pings the store every [`HEALTH_PROBE_INTERVAL`] and reports SERVING only
/// while it answers, for `""` and the revocation service.
async fn watch_store_health(store: Store, health: HealthReporter) {
    let mut last = None;
    let mut interval = tokio::time::interval(HEALTH_PROBE_INTERVAL);
    loop {
        interval.tick().await;
        let status = match tokio::time::timeout(HEALTH_PROBE_INTERVAL, store.ping()).await {
            Ok(Ok(())) => ServingStatus::Serving,
            Ok(Err(error)) => {
                if last != Some(ServingStatus::NotServing) {
                    warn!(%error, "store unreachable; reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            if last.is_some() && status == ServingStatus::Serving {
                info!("store reachable again; reporting SERVING");
            }
            set_health(&health, status).await;
            last = Some(status);
        }
    }
}
