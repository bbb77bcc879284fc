//! What the HTTP doors of the server and the agent share: callers
//! authenticated from an `Authorization` header, the RFC 7662 answer for
//! an active token, and the JSON answers and OAuth errors both send.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::auth::{Access, Caller};
use crate::tokens::Payload;

/// The `WWW-Authenticate` challenge of a 401: either scheme is taken.
pub const CHALLENGE: &str = r#"Basic realm="revocd", Bearer realm="revocd""#;

/// The claims an active introspection answer copies from the token
/// (RFC 7662 §2.2).
const INTROSPECTED: [&str; 9] = [
    "iss",
    "sub",
    "exp",
    "iat",
    "jti",
    "aud",
    "client_id",
    "scope",
    "token_type",
];

/// Why a caller is not authenticated.
#[derive(Debug)]
pub struct Unauthenticated(pub String);

/// Who calls, from the `Authorization` header: `None` without one. The
/// key goes on as gRPC metadata carries it (`Bearer <key>`), so the
/// handlers authenticate it as they do any call.
pub struct HttpCaller {
    /// The key's caller.
    pub caller: Caller,
    /// `Bearer <key>`.
    pub authorization: String,
}

/// Authenticates the caller of an HTTP request, if it presents a key:
/// `Bearer <key>`, or Basic with the key's name and the key.
pub fn authenticate(
    access: &Access,
    headers: &HeaderMap,
) -> Result<Option<HttpCaller>, Unauthenticated> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Unauthenticated("the Authorization header is not ASCII".into()))?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let (authorization, name) = if scheme.eq_ignore_ascii_case("basic") {
        let (name, key) = basic_credentials(credentials.trim())?;
        (format!("Bearer {key}"), Some(name))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        (format!("Bearer {}", credentials.trim()), None)
    } else {
        return Err(Unauthenticated(
            "the Authorization header is neither Bearer nor Basic".into(),
        ));
    };
    let caller = access
        .caller(Some(authorization.as_bytes()), None)
        .map_err(|e| Unauthenticated(e.to_string()))?
        .ok_or_else(|| Unauthenticated("no API key presented".into()))?;
    let keyed = matches!(access, Access::Keys(_));
    if keyed && name.is_some_and(|name| name != caller.name) {
        return Err(Unauthenticated(
            "the Basic user name is not the name of the key given as password".into(),
        ));
    }
    Ok(Some(HttpCaller {
        caller,
        authorization,
    }))
}

/// `name:key` of HTTP Basic credentials.
fn basic_credentials(encoded: &str) -> Result<(String, String), Unauthenticated> {
    let unreadable = || Unauthenticated("the Basic credentials are not base64 of name:key".into());
    let decoded = STANDARD.decode(encoded).map_err(|_| unreadable())?;
    let text = String::from_utf8(decoded).map_err(|_| unreadable())?;
    let (name, key) = text.split_once(':').ok_or_else(unreadable)?;
    Ok((name.to_owned(), key.to_owned()))
}

/// `{"active": true}` with the claims of [`INTROSPECTED`] the token has;
/// `scope` as one space-separated string when the token holds a list.
pub fn active(payload: &Payload) -> Value {
    let mut body = Map::new();
    body.insert("active".into(), Value::Bool(true));
    for name in INTROSPECTED {
        let Some(value) = payload.get(name) else {
            continue;
        };
        let value = match (name, value) {
            ("scope", Value::Array(scopes)) => Value::String(
                scopes
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => value.clone(),
        };
        body.insert(name.into(), value);
    }
    Value::Object(body)
}

/// A JSON answer, never cached.
pub fn json_answer(status: StatusCode, body: &Value) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (status, headers, body.to_string()).into_response()
}

/// An OAuth error (RFC 6749 §5.2 shape): `{"error", "error_description"}`;
/// a 401 carries the [`CHALLENGE`], a 503 or 429 `Retry-After: 1`.
pub fn error_answer(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    let mut response = json_answer(status, &body);
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
