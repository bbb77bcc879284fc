//! The agent's HTTP side: forward-auth on every path, and `/healthz` +
//! `/metrics` on their own port (so a forward-auth path can never be
//! mistaken for them).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Agent, Decision};
use crate::gateway::refusal;
use crate::tokens::Claims;

/// Serves forward-auth decisions on `listener` until `stop`.
pub(super) async fn serve_forward_auth(
    listener: TcpListener,
    agent: Agent,
    stop: CancellationToken,
) -> Result<(), super::AgentError> {
    let router = Router::new().fallback(forward_auth).with_state(agent);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves `/healthz` and `/metrics` on `listener` until `stop`.
pub(super) async fn serve_metrics(
    listener: TcpListener,
    agent: Agent,
    stop: CancellationToken,
) -> Result<(), super::AgentError> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(agent);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    Ok(())
}

/// Any method, any path: the decision for the request's token.
async fn forward_auth(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    let value = headers
        .get(agent.token_header())
        .and_then(|v| v.to_str().ok());
    match agent.decide(value).await {
        Decision::Allow(claims) => (StatusCode::OK, identity_headers(&claims)).into_response(),
        Decision::Deny(denial) => refusal::<axum::body::Body>(&denial),
    }
}

/// `X-Auth-Subject`, `X-Auth-Jti`, `X-Auth-Issuer`; a claim that cannot be
/// a header value (non-ASCII) is left out rather than mangled.
fn identity_headers(claims: &Claims) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in super::identity(claims) {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// 200 once a snapshot is loaded, 503 before.
async fn healthz(State(agent): State<Agent>) -> StatusCode {
    if agent.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Prometheus text format, with the filter's state read at scrape time.
async fn metrics(State(agent): State<Agent>) -> impl IntoResponse {
    let gateway = agent.gateway();
    let staleness = gateway
        .staleness()
        .map_or(f64::INFINITY, |s| s.as_secs_f64());
    metrics::gauge!("revocd_agent_filter_staleness_seconds").set(staleness);
    // The low 32 bits count the replica's rebuilds (the high ones are
    // random per replica start) and fit a float exactly.
    let generation = gateway
        .view()
        .map_or(0, |view| view.generation() & u64::from(u32::MAX));
    metrics::gauge!("revocd_agent_filter_generation").set(generation as f64);
    metrics::gauge!("revocd_agent_ready").set(if agent.is_ready() { 1.0 } else { 0.0 });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::telemetry::TEXT_FORMAT,
        )],
        crate::telemetry::render(),
    )
}
