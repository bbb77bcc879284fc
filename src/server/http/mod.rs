//! The HTTP doors of a replica (`revocd serve --http-listen`): the
//! standards identity providers and gateways already speak, each mapped
//! onto the same handlers as the gRPC API.
//!
//! - `POST /oauth2/revoke` (RFC 7009) and `POST /oauth2/introspect`
//!   (RFC 7662): `oauth2.rs`;
//! - `POST /oidc/backchannel-logout` (OpenID Connect Back-Channel Logout
//!   1.0): `backchannel.rs`;
//! - `POST /ssf/events` (OpenID Shared Signals push delivery, RFC 8935):
//!   `ssf.rs`; and poll delivery (RFC 8936), where revocd is the client:
//!   `poll.rs`;
//! - TLS of the port: `tls.rs`.
//!
//! Callers authenticate with `Authorization: Bearer <api key>`, or HTTP
//! Basic with the key's name as user and the key as password (what
//! introspection clients send); a logout token or a security event is
//! authenticated by its own signature instead. Bodies are limited to
//! [`MAX_BODY_BYTES`]. Every answer is counted in
//! `revocd_http_requests_total{door, code}`, and every change made
//! through a door is audited with the door in front of the caller's
//! address (`oauth2 127.0.0.1:50000`).

mod backchannel;
mod oauth2;
mod poll;
mod ssf;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpConnectInfo;

use self::tls::TlsListener;
use super::error::ApiError;
use super::handlers::{CutoffRequest, Door, RevocationApi};
use crate::oauth::{error_answer, json_answer, HttpCaller};
use crate::tokens::TokenVerifier;

pub use self::poll::Poll;
pub use self::ssf::Transmitter;

/// Largest request body accepted, in bytes: a form with one token, a
/// logout token or a security event is far smaller.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the event doors verify with, fixed at start-up.
#[derive(Debug, Default)]
pub struct Doors {
    /// Verifies back-channel logout tokens: the JWT keys, with the
    /// `--backchannel-audience` audiences. `None` (no audience
    /// configured) closes the door.
    pub logout_tokens: Option<TokenVerifier>,
    /// The Shared Signals transmitters whose security events are applied.
    pub transmitters: Vec<Transmitter>,
    /// TLS of the port (the gRPC port's certificate); `None` serves plain
    /// HTTP.
    pub tls: Option<Arc<ServerConfig>>,
}

/// Polls every transmitter of `api`'s doors that has a poll endpoint,
/// until `stop`.
pub async fn poll(api: RevocationApi, stop: CancellationToken) {
    let mut pollers = tokio::task::JoinSet::new();
    for transmitter in &api.state().doors.transmitters {
        if let Some(poll) = transmitter.poll.clone() {
            let issuer = transmitter.issuer.clone();
            pollers.spawn(poll::run(api.clone(), issuer, poll, stop.clone()));
        }
    }
    while pollers.join_next().await.is_some() {}
}

/// Serves the doors on `listener` (over TLS when the doors have it) until
/// `stop`.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: TcpListener,
    api: RevocationApi,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let tls = api.state().doors.tls.clone();
    let router = Router::new()
        .route("/oauth2/revoke", post(oauth2::revoke))
        .route("/oauth2/introspect", post(oauth2::introspect))
        .route("/oidc/backchannel-logout", post(backchannel::logout))
        .route("/ssf/events", post(ssf::push))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api);
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let stopped = stop.cancelled_owned();
    match tls {
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .await
        }
        Some(config) => {
            // `tap_io` gives the listener's addresses to `ConnectInfo`.
            let listener = TlsListener::new(listener, config).tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

// === answers ===

/// The status of a form the extractor refused: its own when it is the
/// client's fault (413 too large, 415 not a form), else 400.
fn rejection_status(rejection: &FormRejection) -> StatusCode {
    let status = rejection.status();
    if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// An answer: a status and a JSON body, never cached, counted by door.
fn answer(door: &'static str, status: StatusCode, body: &Value) -> Response {
    count(door, status);
    json_answer(status, body)
}

/// An OAuth error ([`error_answer`]), counted by door.
fn oauth_error(door: &'static str, status: StatusCode, error: &str, description: &str) -> Response {
    count(door, status);
    error_answer(status, error, description)
}

/// Counts an answer in `revocd_http_requests_total{door, code}`.
fn count(door: &'static str, status: StatusCode) {
    metrics::counter!("revocd_http_requests_total", "door" => door, "code" => status.as_str().to_owned())
        .increment(1);
}

/// Why a cut-off an event asks for was not stored.
pub(super) enum CutFailure {
    /// The store could not confirm it: deliver the event again later.
    Retry(String),
    /// The event asks for what cannot be stored; the message says why.
    Refused(String),
}

/// Stores the cut-off a verified event asks for (see
/// `RevocationApi::cut_for_event`).
async fn cut_for_event(
    api: &RevocationApi,
    actor: &str,
    request: &CutoffRequest<'_>,
    source: String,
) -> Result<(), CutFailure> {
    match api.cut_for_event(actor, request, source).await {
        Ok(_) => Ok(()),
        Err(error @ (ApiError::Store(_) | ApiError::Unavailable(_))) => {
            Err(CutFailure::Retry(retry_message(error)))
        }
        Err(error) => Err(CutFailure::Refused(error.to_string())),
    }
}

/// What a caller is told of a write the store could not confirm: the
/// status message (the mapping logs and counts the failure), never the
/// store's internals.
fn retry_message(error: ApiError) -> String {
    let status = tonic::Status::from(error);
    format!("not stored, retry: {}", status.message())
}

/// `message` as a call of the gRPC handlers: with the caller's key, its
/// address and the door it came through.
fn call<T>(
    message: T,
    caller: Option<&HttpCaller>,
    peer: SocketAddr,
    door: &str,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = caller.and_then(|c| MetadataValue::try_from(&c.authorization).ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    let extensions = request.extensions_mut();
    extensions.insert(TcpConnectInfo {
        local_addr: None,
        remote_addr: Some(peer),
    });
    extensions.insert(Door(door.to_owned()));
    request
}

/// The API the doors call, as their shared state.
type Api = axum::extract::State<RevocationApi>;
