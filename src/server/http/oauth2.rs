//! `POST /oauth2/revoke` (RFC 7009) and `POST /oauth2/introspect`
//! (RFC 7662), both with the form `token` and an optional
//! `token_type_hint`.
//!
//! Revocation: a verified JWT revokes itself without a key (as
//! `Revoke{token}`), or with a key holding `revoke`. 200 once stored, and,
//! as RFC 7009 §2.2 says, for a token that is invalid or not ours; 503
//! with `Retry-After` when the store cannot confirm the write, so 200 is
//! never said of a revocation that was not stored. A hint other than
//! `access_token` is `unsupported_token_type`: revocd revokes access
//! tokens only.
//!
//! Introspection: a key holding `read` or `subscribe` is required (401
//! with a challenge otherwise). A valid, unexpired token no rule revokes
//! is `{"active": true}` with the claims RFC 7662 §2.2 names that it has;
//! anything else is a bare `{"active": false}`.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::json;
use tracing::debug;

use super::{answer, call, oauth_error, rejection_status, retry_message, Api};
use crate::auth::{Access, Role};
use crate::oauth::{active, authenticate, HttpCaller};
use crate::pb::RevokeRequest;
use crate::server::error::ApiError;

/// The door's name in metrics and in the audit trail.
const DOOR: &str = "oauth2";
const REVOKE: &str = "oauth2_revoke";
const INTROSPECT: &str = "oauth2_introspect";
/// The only token type revocd revokes and introspects.
const ACCESS_TOKEN: &str = "access_token";
/// The reason recorded for a revocation through this door.
const REASON: &str = "RFC 7009 revocation";
/// The form both endpoints take.
#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    token: Option<String>,
    token_type_hint: Option<String>,
}

/// Why a request is refused: the status and the RFC 6749 §5.2 error.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Refusal {
            status,
            error,
            description: description.into(),
        }
    }

    fn answer(self, door: &'static str) -> Response {
        oauth_error(door, self.status, self.error, &self.description)
    }
}

/// The form's token, or why it is missing or unreadable.
fn token_of(form: Result<Form<TokenForm>, FormRejection>) -> Result<TokenForm, Refusal> {
    let Form(form) = form.map_err(|rejection| {
        let status = rejection_status(&rejection);
        Refusal::new(status, "invalid_request", rejection.body_text())
    })?;
    match &form.token {
        Some(token) if !token.is_empty() => Ok(form),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the form has no `token`",
        )),
    }
}

/// The caller, if it presents a key; a key that does not authenticate is
/// refused with 401.
fn caller_of(api: &Api, headers: &HeaderMap) -> Result<Option<HttpCaller>, Refusal> {
    authenticate(&api.state().access, headers)
        .map_err(|refusal| Refusal::new(StatusCode::UNAUTHORIZED, "invalid_client", refusal.0))
}

/// `POST /oauth2/revoke`.
pub(super) async fn revoke(
    api: Api,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    revoke_token(&api, peer, &headers, form)
        .await
        .unwrap_or_else(|refusal| refusal.answer(REVOKE))
}

async fn revoke_token(
    api: &Api,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, Refusal> {
    let caller = caller_of(api, headers)?;
    let form = token_of(form)?;
    if let Some(hint) = form
        .token_type_hint
        .as_deref()
        .filter(|h| *h != ACCESS_TOKEN)
    {
        let description = format!("revocd revokes access tokens only, not {hint:?}");
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            description,
        ));
    }
    let message = RevokeRequest {
        token: form.token.unwrap_or_default(),
        reason: REASON.to_owned(),
        ..Default::default()
    };
    let request = call(message, caller.as_ref(), peer, DOOR);
    match api.revoke(request).await {
        Ok(_) => Ok(answer(REVOKE, StatusCode::OK, &json!({}))),
        Err(error) => revoke_refusal(error),
    }
}

/// What a refused revocation answers: 200 for a token that is not ours
/// to revoke (RFC 7009 §2.2), an error for the rest.
fn revoke_refusal(error: ApiError) -> Result<Response, Refusal> {
    match error {
        ApiError::InvalidArgument(why)
        | ApiError::Unauthenticated(why)
        | ApiError::FailedPrecondition(why) => {
            debug!(why, "RFC 7009: an invalid token, answered 200");
            Ok(answer(REVOKE, StatusCode::OK, &json!({})))
        }
        ApiError::PermissionDenied(why) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            why,
        )),
        ApiError::ResourceExhausted(why) => Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            why,
        )),
        error => Err(unavailable(error)),
    }
}

/// 503 for a store that could not answer; the description says why
/// without the store's internals.
fn unavailable(error: ApiError) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        retry_message(error),
    )
}

/// `POST /oauth2/introspect`.
pub(super) async fn introspect(
    api: Api,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    introspect_token(&api, &headers, form)
        .await
        .unwrap_or_else(|refusal| refusal.answer(INTROSPECT))
}

async fn introspect_token(
    api: &Api,
    headers: &HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, Refusal> {
    let caller = caller_of(api, headers)?.ok_or_else(|| {
        let why = "introspection needs an API key (Bearer, or Basic with its name)";
        Refusal::new(StatusCode::UNAUTHORIZED, "invalid_client", why)
    })?;
    Access::require(Some(&caller.caller), &[Role::Read, Role::Subscribe]).map_err(|error| {
        Refusal::new(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            error.to_string(),
        )
    })?;
    let form = token_of(form)?;
    let token = form.token.unwrap_or_default();
    let body = match api.introspect(&token).await.map_err(unavailable)? {
        Some(payload) => active(&payload),
        None => json!({"active": false}),
    };
    Ok(answer(INTROSPECT, StatusCode::OK, &body))
}
