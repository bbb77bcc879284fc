//! The agent's HTTP side: forward-auth on every path but `POST
//! /oauth2/introspect` (RFC 7662), and `/healthz` + `/metrics` on their
//! own port (so a forward-auth path can never be mistaken for them).

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Agent, Decision};
use crate::auth::{Access, Role};
use crate::gateway::refusal;
use crate::oauth::{active, authenticate, error_answer, json_answer};
use crate::tokens::{payload_object, Claims};

/// Largest introspection request body: a form with one token.
const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;

/// Serves forward-auth decisions on `listener` until `stop`.
pub(super) async fn serve_forward_auth(
    listener: TcpListener,
    agent: Agent,
    stop: CancellationToken,
) -> Result<(), super::AgentError> {
    let router = Router::new()
        .route("/oauth2/introspect", post(introspect))
        .fallback(forward_auth)
        .layer(DefaultBodyLimit::max(MAX_INTROSPECTION_BYTES))
        .with_state(agent);
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

/// The form of an introspection request.
#[derive(Debug, Deserialize)]
struct IntrospectionForm {
    token: Option<String>,
}

/// `POST /oauth2/introspect`: the forward-auth decision on the form's
/// `token`, as RFC 7662 says it. Needs a key of
/// `--introspection-keys-file` holding `read` or `subscribe` (401 with a
/// challenge, or 403). A token the filter and the cut-offs allow (a bloom
/// "maybe" confirmed with the server, as for forward-auth) is
/// `{"active": true, ...}` with its claims; a refused one `{"active":
/// false}`; 503 when the agent cannot decide (a stale filter under
/// `fail-closed`, or `check-online` with no server answering).
async fn introspect(
    State(agent): State<Agent>,
    headers: HeaderMap,
    form: Result<Form<IntrospectionForm>, FormRejection>,
) -> Response {
    let Some(access) = agent.introspection() else {
        let why = "introspection is not set up on this agent (--introspection-keys-file)";
        return error_answer(StatusCode::NOT_FOUND, "invalid_request", why);
    };
    let caller = match authenticate(access, &headers) {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            let why = "introspection needs an API key (Bearer, or Basic with its name)";
            return error_answer(StatusCode::UNAUTHORIZED, "invalid_client", why);
        }
        Err(refusal) => {
            return error_answer(StatusCode::UNAUTHORIZED, "invalid_client", &refusal.0)
        }
    };
    if let Err(error) = Access::require(Some(&caller.caller), &[Role::Read, Role::Subscribe]) {
        return error_answer(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            &error.to_string(),
        );
    }
    let token = match form {
        Ok(Form(IntrospectionForm { token: Some(token) })) if !token.is_empty() => token,
        Ok(_) => {
            return error_answer(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the form has no `token`",
            )
        }
        Err(rejection) => {
            return error_answer(
                rejection.status(),
                "invalid_request",
                &rejection.body_text(),
            )
        }
    };
    match agent.decide(Some(&token)).await {
        Decision::Allow(_) => {
            let body =
                payload_object(&token).map_or_else(|_| json!({"active": false}), |p| active(&p));
            json_answer(StatusCode::OK, &body)
        }
        Decision::Deny(denial) if denial.is_unavailable() => error_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &denial.to_string(),
        ),
        Decision::Deny(_) => json_answer(StatusCode::OK, &json!({"active": false})),
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
    // The low 32 bits count the replica's loads (the high ones name the
    // deployment) and fit a float exactly.
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
