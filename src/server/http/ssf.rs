//! `POST /ssf/events`: OpenID Shared Signals Framework 1.0 push delivery
//! (RFC 8935) of CAEP events. The body is one Security Event Token
//! (`application/secevent+jwt`) signed by a configured transmitter.
//!
//! A SET is verified with the keys of the transmitter its `iss` names,
//! bound to that issuer, and must name our audience; it needs `jti`, `iat`
//! and a non-empty `events` object. The subject is the event's `subject`
//! (CAEP) or the SET's `sub_id` (SSF 1.0). What each event cuts off, at
//! its `event_timestamp` (else the SET's `iat`):
//!
//! | event | subject | cut-off |
//! |---|---|---|
//! | `session-revoked` | `iss_sub` | the subject's tokens of that issuer |
//! | `session-revoked` | `complex` with a `session` id | that `sid` |
//! | `session-revoked` | `email` | the `email` claim, when it is revocable (`--revocable-claim email`); else ignored |
//! | `credential-change`, `change_type` revoke, update or delete | as above, the user | the subject's tokens |
//!
//! Other events, and `credential-change` of type `create`, are accepted and
//! ignored. A transmitter cuts off tokens of its own issuer only, unless
//! more are configured for it (`--ssf-token-issuer`): one tenant's
//! transmitter can never log out another's users. A replayed SET asks for
//! the same cut-offs again, which changes nothing.
//!
//! 202 when every cut-off is stored; 400 `{"err": "invalid_request" |
//! "invalid_key" | "invalid_issuer" | "invalid_audience", "description"}`
//! for a SET refused (RFC 8935 §2.3), nothing stored; 415 for another
//! content type; 503 with `Retry-After` when the store cannot confirm.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{answer, cut_for_event, Api, CutFailure};
use crate::server::handlers::CutoffRequest;
use crate::server::handlers::RevocationApi;
use crate::store::SUBJECT_CLAIM;
use crate::tokens::{Claims, Payload, TokenError, TokenVerifier};

/// The door's name in metrics and in the audit trail.
const DOOR: &str = "ssf";
/// The media type of a pushed SET (RFC 8935 §2).
const SET_MEDIA_TYPE: &str = "application/secevent+jwt";
/// CAEP's event types handled here.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// See [`SESSION_REVOKED`].
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// The claim an `email` subject is cut off by.
const EMAIL_CLAIM: &str = "email";

/// A Shared Signals transmitter whose security events are applied.
#[derive(Debug)]
pub struct Transmitter {
    /// Its `iss`.
    pub issuer: String,
    /// Verifies its SETs: its keys, bound to `issuer`, and our audience.
    pub verifier: TokenVerifier,
    /// The issuers of the access tokens its events may cut off; the first
    /// is meant when a subject names none.
    pub token_issuers: Vec<String>,
    /// Where to poll it for events (RFC 8936), if revocd polls it.
    pub poll: Option<super::Poll>,
}

/// Why a SET is refused: an RFC 8935 error code and a description.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal(pub(super) &'static str, pub(super) String);

impl Refusal {
    fn request(description: impl Into<String>) -> Self {
        Refusal("invalid_request", description.into())
    }
}

/// One cut-off an event asks for.
#[derive(Debug, PartialEq, Eq)]
struct EventCut {
    issuer: String,
    claim: &'static str,
    value: String,
    at: i64,
    /// The event type, for the reason recorded.
    event: &'static str,
}

/// Why a SET was not applied.
#[derive(Debug)]
pub(super) enum Failure {
    /// The SET is refused; sending it again changes nothing.
    Refused(Refusal),
    /// The store could not confirm a cut-off: apply it again later.
    Unavailable(String),
}

/// `POST /ssf/events`.
pub(super) async fn push(
    api: Api,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media_type.is_some_and(|t| t.eq_ignore_ascii_case(SET_MEDIA_TYPE)) {
        let why = format!("the body must be one SET, Content-Type {SET_MEDIA_TYPE}");
        return refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, Refusal::request(why));
    }
    let Ok(set) = std::str::from_utf8(&body) else {
        let why = Refusal::request("the SET is not UTF-8 text");
        return refused(StatusCode::BAD_REQUEST, why);
    };
    match apply(&api, set.trim(), &format!("{DOOR} {peer}"), None).await {
        Ok(()) => answer(DOOR, StatusCode::ACCEPTED, &json!({})),
        Err(Failure::Refused(refusal)) => refused(StatusCode::BAD_REQUEST, refusal),
        Err(Failure::Unavailable(why)) => {
            let mut response = refused(StatusCode::SERVICE_UNAVAILABLE, Refusal::request(why));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
    }
}

/// Verifies one SET and stores the cut-offs its events ask for, audited
/// as made by `ssf:<transmitter>` from `source`. A SET polled from one
/// transmitter (`from`) must be signed by that one.
///
/// # Errors
/// [`Failure`]: refused, or not (wholly) stored yet.
pub(super) async fn apply(
    api: &RevocationApi,
    set: &str,
    source: &str,
    from: Option<&str>,
) -> Result<(), Failure> {
    let state = api.state();
    let email_revocable = state
        .policy
        .revocable_claims
        .iter()
        .any(|c| c == EMAIL_CLAIM);
    let (transmitter, claims, payload) =
        verify(&state.doors.transmitters, set).map_err(Failure::Refused)?;
    if from.is_some_and(|from| from != transmitter.issuer) {
        let why = "the SET is signed by another transmitter than the one polled";
        return Err(Failure::Refused(Refusal("invalid_issuer", why.into())));
    }
    let cuts =
        cutoffs(transmitter, &claims, &payload, email_revocable).map_err(Failure::Refused)?;
    let actor = format!("{DOOR}:{}", transmitter.issuer);
    for cut in &cuts {
        let reason = format!("CAEP {}", cut.event);
        let request = CutoffRequest {
            issuer: &cut.issuer,
            claim: cut.claim,
            value: &cut.value,
            not_before: cut.at,
            reason: &reason,
        };
        cut_for_event(api, &actor, &request, source.to_owned())
            .await
            .map_err(|failure| match failure {
                CutFailure::Retry(why) => Failure::Unavailable(why),
                CutFailure::Refused(why) => Failure::Refused(Refusal::request(why)),
            })?;
    }
    Ok(())
}

fn refused(status: StatusCode, Refusal(code, description): Refusal) -> Response {
    answer(
        DOOR,
        status,
        &json!({"err": code, "description": description}),
    )
}

/// The transmitter that signed `set`, with the SET's claims and payload.
fn verify<'t>(
    transmitters: &'t [Transmitter],
    set: &str,
) -> Result<(&'t Transmitter, Claims, Payload), Refusal> {
    if transmitters.is_empty() {
        return Err(Refusal(
            "invalid_issuer",
            "no transmitter is configured here (--ssf-issuer)".into(),
        ));
    }
    for transmitter in transmitters {
        match transmitter.verifier.verify_event(set) {
            Err(TokenError::WrongIssuer) => continue,
            Ok((claims, payload)) => return Ok((transmitter, claims, payload)),
            Err(error) => return Err(refusal_of(&error)),
        }
    }
    Err(Refusal(
        "invalid_issuer",
        "the SET's `iss` is not a configured transmitter".into(),
    ))
}

/// The RFC 8935 code for a SET that does not verify.
fn refusal_of(error: &TokenError) -> Refusal {
    let code = match error {
        TokenError::WrongAudience => "invalid_audience",
        TokenError::WrongIssuer => "invalid_issuer",
        TokenError::BadSignature
        | TokenError::UnknownKeyId(_)
        | TokenError::AlgorithmNotAccepted(_) => "invalid_key",
        _ => "invalid_request",
    };
    Refusal(code, error.to_string())
}

/// The cut-offs a verified SET asks for.
fn cutoffs(
    transmitter: &Transmitter,
    claims: &Claims,
    payload: &Payload,
    email_revocable: bool,
) -> Result<Vec<EventCut>, Refusal> {
    if claims.jti.is_none() {
        return Err(Refusal::request("the SET has no `jti`"));
    }
    let issued_at = claims
        .issued_at
        .ok_or_else(|| Refusal::request("the SET has no `iat`"))?;
    let events = payload
        .get("events")
        .and_then(Value::as_object)
        .filter(|events| !events.is_empty())
        .ok_or_else(|| Refusal::request("the SET has no `events` object"))?;
    let mut cuts = Vec::new();
    for (event_type, event) in events {
        let event_name = match event_type.as_str() {
            SESSION_REVOKED => "session-revoked",
            CREDENTIAL_CHANGE if is_revoking_change(event) => "credential-change",
            _ => continue,
        };
        let event = event
            .as_object()
            .ok_or_else(|| Refusal::request(format!("the event {event_type} is not an object")))?;
        let subject = event
            .get("subject")
            .or_else(|| payload.get("sub_id"))
            .and_then(Value::as_object)
            .ok_or_else(|| Refusal::request(format!("the event {event_type} has no subject")))?;
        let at = match event.get("event_timestamp") {
            None => issued_at,
            Some(time) => time
                .as_i64()
                .ok_or_else(|| Refusal::request("`event_timestamp` is not whole unix seconds"))?,
        };
        let sessions = event_name == "session-revoked";
        let Some((issuer, claim, value)) = target(transmitter, subject, sessions)? else {
            continue;
        };
        if claim == EMAIL_CLAIM && !email_revocable {
            tracing::info!(event = event_name, "an email subject, but `email` is not revocable here (--revocable-claim email); ignored");
            continue;
        }
        if !transmitter.token_issuers.contains(&issuer) {
            return Err(Refusal::request(format!(
                "this transmitter may not cut off tokens of issuer {issuer:?} (--ssf-token-issuer)"
            )));
        }
        cuts.push(EventCut {
            issuer,
            claim,
            value,
            at,
            event: event_name,
        });
    }
    Ok(cuts)
}

/// A `credential-change` that makes the user's tokens untrustworthy.
fn is_revoking_change(event: &Value) -> bool {
    let change = event.get("change_type").and_then(Value::as_str);
    matches!(change, Some("revoke" | "update" | "delete"))
}

/// What a subject identifier names: (token issuer, claim, value); `None`
/// for a format that names nothing revocd can cut off by. With
/// `sessions`, a `complex` subject's session wins over its user.
fn target(
    transmitter: &Transmitter,
    subject: &Map<String, Value>,
    sessions: bool,
) -> Result<Option<(String, &'static str, String)>, Refusal> {
    let text = |object: &Map<String, Value>, key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Refusal::request(format!("the subject has no string `{key}`")))
    };
    let default_issuer = || transmitter.token_issuers[0].clone();
    let format = subject
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match format {
        "iss_sub" => Ok(Some((
            text(subject, "iss")?,
            SUBJECT_CLAIM,
            text(subject, "sub")?,
        ))),
        "email" => Ok(Some((
            default_issuer(),
            EMAIL_CLAIM,
            text(subject, "email")?,
        ))),
        "complex" => {
            let part = |key: &str| subject.get(key).and_then(Value::as_object);
            let user = part("user")
                .map(|user| target(transmitter, user, false))
                .transpose()?
                .flatten();
            match part("session").filter(|_| sessions) {
                Some(session) => {
                    let issuer = user.map_or_else(default_issuer, |(issuer, _, _)| issuer);
                    Ok(Some((issuer, "sid", text(session, "id")?)))
                }
                None => Ok(user),
            }
        }
        "" => Err(Refusal::request("the subject has no `format`")),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
