//! `POST /oidc/backchannel-logout`: OpenID Connect Back-Channel Logout
//! 1.0. The provider posts the form `logout_token`, a JWT it signed; the
//! session it names is cut off.
//!
//! The logout token is verified with the keys bound to its issuer and
//! must name one of the `--backchannel-audience` audiences (§2.6): its
//! `events` holds the back-channel logout event, `sid` and/or `sub` are
//! present, `nonce` is absent, `jti` is present, `exp` has not passed and
//! `iat` is within [`MAX_AGE_SECONDS`] (plus the leeway) of now. A `sid`
//! becomes a `sid` cut-off, a `sub` alone a subject cut-off, both at the
//! logout token's `iat`: the session's tokens issued before the logout
//! are revoked, a new login's are not. A replayed logout token asks for
//! the same cut-off again, which changes nothing (cut-offs only move
//! forward), and is answered 200 like the first.
//!
//! 200 on success; 400 `{"error": "invalid_request", ...}` for a token
//! that does not pass (§2.8); 503 with `Retry-After` when the store cannot
//! confirm the cut-off, so a provider that retries delivers it later.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, cut_for_event, oauth_error, rejection_status, Api, CutFailure};
use crate::server::handlers::CutoffRequest;
use crate::store::SUBJECT_CLAIM;
use crate::time::unix_now;
use crate::tokens::{Claims, Payload};

/// The door's name in metrics and in the audit trail.
const DOOR: &str = "backchannel";
/// The event a logout token carries (§2.4).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token's `iat` may be: a provider sends it at logout.
pub const MAX_AGE_SECONDS: i64 = 300;
/// The reason recorded for its cut-off.
const REASON: &str = "OpenID back-channel logout";

/// The form the provider posts.
#[derive(Debug, Deserialize)]
pub(super) struct LogoutForm {
    logout_token: Option<String>,
}

/// What a logout token asks to cut off.
#[derive(Debug, PartialEq, Eq)]
struct Logout {
    issuer: String,
    /// `sid`, else `sub`.
    claim: &'static str,
    value: String,
    /// The logout token's `iat`.
    at: i64,
}

/// `POST /oidc/backchannel-logout`.
pub(super) async fn logout(
    api: Api,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let Some(verifier) = &api.state().doors.logout_tokens else {
        let why = "back-channel logout is not set up here (--backchannel-audience)";
        return oauth_error(DOOR, StatusCode::NOT_FOUND, "invalid_request", why);
    };
    let token = match form {
        Ok(Form(LogoutForm {
            logout_token: Some(token),
        })) if !token.is_empty() => token,
        Ok(_) => return invalid("the form has no `logout_token`"),
        Err(rejection) => {
            let status = rejection_status(&rejection);
            return oauth_error(DOOR, status, "invalid_request", &rejection.body_text());
        }
    };
    let logout = verifier
        .verify_event(&token)
        .map_err(|e| e.to_string())
        .and_then(|(claims, payload)| read_logout(claims, &payload, unix_now(), verifier.leeway()));
    let logout = match logout {
        Ok(logout) => logout,
        Err(why) => return invalid(&format!("the logout token is refused: {why}")),
    };
    let actor = format!("{DOOR}:{}", logout.issuer);
    let cut = CutoffRequest {
        issuer: &logout.issuer,
        claim: logout.claim,
        value: &logout.value,
        not_before: logout.at,
        reason: REASON,
    };
    let source = format!("{DOOR} {peer}");
    match cut_for_event(&api, &actor, &cut, source).await {
        Ok(()) => answer(DOOR, StatusCode::OK, &json!({})),
        Err(CutFailure::Retry(why)) => oauth_error(
            DOOR,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &why,
        ),
        Err(CutFailure::Refused(why)) => invalid(&why),
    }
}

fn invalid(why: &str) -> Response {
    oauth_error(DOOR, StatusCode::BAD_REQUEST, "invalid_request", why)
}

/// The cut-off a verified logout token asks for, at `now`, after the
/// checks of §2.6 that its signature did not cover.
fn read_logout(claims: Claims, payload: &Payload, now: i64, leeway: u64) -> Result<Logout, String> {
    let leeway = leeway as i64;
    let has_event = payload
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|events| events.get(LOGOUT_EVENT).is_some_and(Value::is_object));
    if !has_event {
        return Err(format!("its `events` has no {LOGOUT_EVENT:?} object"));
    }
    if payload.contains_key("nonce") {
        return Err("it has a `nonce`, which a logout token must not".into());
    }
    if claims.jti.is_none() {
        return Err("it has no `jti`".into());
    }
    let at = claims.issued_at.ok_or("it has no `iat`")?;
    if at > now + leeway || at < now - MAX_AGE_SECONDS - leeway {
        return Err(format!(
            "its `iat` is {} s from now; it must be within {MAX_AGE_SECONDS} s",
            at - now
        ));
    }
    if claims.expires_at.is_none_or(|exp| exp + leeway <= now) {
        return Err("it has no `exp`, or has expired".into());
    }
    let session = payload.get("sid").and_then(Value::as_str);
    let (claim, value) = match (session, claims.subject) {
        (Some(sid), _) => ("sid", sid.to_owned()),
        (None, Some(subject)) => (SUBJECT_CLAIM, subject),
        (None, None) => return Err("it has neither `sid` nor `sub`".into()),
    };
    Ok(Logout {
        issuer: claims.issuer,
        claim,
        value,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn read(payload: Value) -> Result<Logout, String> {
        let payload: Payload = serde_json::from_value(payload).unwrap();
        let claims = Claims {
            issuer: payload["iss"].as_str().unwrap_or_default().to_owned(),
            jti: payload
                .get("jti")
                .and_then(Value::as_str)
                .map(str::to_owned),
            subject: payload
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_owned),
            expires_at: payload.get("exp").and_then(Value::as_i64),
            issued_at: payload.get("iat").and_then(Value::as_i64),
            ..Claims::default()
        };
        read_logout(claims, &payload, NOW, 5)
    }

    fn logout_token() -> Value {
        json!({
            "iss": "https://op", "aud": "rp", "iat": NOW - 2, "exp": NOW + 120,
            "jti": "l-1", "sub": "alice", "sid": "s-1",
            "events": {LOGOUT_EVENT: {}},
        })
    }

    #[test]
    fn a_sid_is_cut_off_before_a_sub_at_the_logout_time() {
        let logout = read(logout_token()).unwrap();
        let expected = Logout {
            issuer: "https://op".into(),
            claim: "sid",
            value: "s-1".into(),
            at: NOW - 2,
        };
        assert_eq!(logout, expected);
        let mut by_subject = logout_token();
        by_subject.as_object_mut().unwrap().remove("sid");
        let logout = read(by_subject).unwrap();
        assert_eq!((logout.claim, logout.value.as_str()), ("sub", "alice"));
    }

    #[test]
    fn what_the_specification_forbids_is_refused_with_its_reason() {
        let with = |key: &str, value: Value| {
            let mut token = logout_token();
            token[key] = value;
            read(token).unwrap_err()
        };
        let without = |keys: &[&str]| {
            let mut token = logout_token();
            for key in keys {
                token.as_object_mut().unwrap().remove(*key);
            }
            read(token).unwrap_err()
        };
        assert!(with("events", json!({"other": {}})).contains("events"));
        assert!(with("events", json!({LOGOUT_EVENT: "yes"})).contains("events"));
        assert!(with("nonce", json!("n")).contains("nonce"));
        assert!(with("iat", json!(NOW - 3_600)).contains("iat"));
        assert!(with("iat", json!(NOW + 60)).contains("iat"));
        assert!(with("exp", json!(NOW - 60)).contains("expired"));
        assert!(without(&["jti"]).contains("jti"));
        assert!(without(&["sid", "sub"]).contains("neither"));
    }
}
