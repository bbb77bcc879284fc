//! What the handler tests share: a [`RevocationApi`] over the memory store,
//! built from `revocd serve` flags as the binary builds it; requests from
//! keys of each role (or none); and signed tokens.

use std::sync::Arc;

use clap::Parser;
use serde_json::json;
use tonic::{Code, Request};

use super::RevocationApi;
use crate::auth::{key_digest_hex, Access};
use crate::config::ServeConfig;
use crate::server::error::ApiError;
use crate::server::State;
use crate::time::unix_now;

/// The HS256 secret the API trusts.
pub const SECRET: &str = "handler-test-secret-0123456789abcdef";
/// The issuer the API accepts, and its default.
pub const ISSUER: &str = "https://issuer.test";

/// The API keys: (name, key, roles and quotas).
const KEYS: [(&str, &str, &str); 5] = [
    ("auth-server", "key-revoke", r#"["revoke"]"#),
    ("support-desk", "key-read", r#"["read"]"#),
    ("edge-gateway", "key-subscribe", r#"["subscribe"]"#),
    ("operator", "key-admin", r#"["admin"]"#),
    (
        "rate-bound",
        "key-quota",
        "[\"revoke\", \"subscribe\"]\nmax_revocations_per_second = 3\nmax_streams = 1",
    ),
];

/// A key holding `revoke`.
pub const REVOKE: Option<&str> = Some("key-revoke");
/// A key holding `read`.
pub const READ: Option<&str> = Some("key-read");
/// A key holding `subscribe`.
pub const SUBSCRIBE: Option<&str> = Some("key-subscribe");
/// A key holding `admin`.
pub const ADMIN: Option<&str> = Some("key-admin");
/// A key holding `revoke` and `subscribe`, 3 revocations a second and one
/// stream.
pub const QUOTA: Option<&str> = Some("key-quota");
/// No key: a keyless caller.
pub const KEYLESS: Option<&str> = None;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

/// An API over a fresh memory store, configured by `revocd serve --dev`
/// and `flags`, with [`KEYS`] in place of `--dev`'s open access.
pub async fn api(flags: &[&str]) -> RevocationApi {
    let dev = [
        "revocd",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--jwt-issuer",
        ISSUER,
    ];
    let argv = dev.iter().chain(flags);
    let config = Cli::try_parse_from(argv).expect("valid flags").serve;
    let mut state = State::from_config(&config, Some(SECRET.as_bytes()))
        .await
        .expect("server state");
    state.access = Access::from_toml(&keys_toml()).expect("valid keys");
    RevocationApi::new(Arc::new(state))
}

fn keys_toml() -> String {
    let entry = |(name, key, roles): &(&str, &str, &str)| {
        let digest = key_digest_hex(key);
        format!("[[key]]\nname = \"{name}\"\nsha256 = \"{digest}\"\nroles = {roles}\n\n")
    };
    KEYS.iter().map(entry).collect()
}

/// `message` sent with `key` as `authorization: Bearer <key>`, or with none.
pub fn request<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().expect("ASCII key");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// `claims` signed with [`SECRET`].
pub fn sign(claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("signing")
}

/// A token of `subject` with `jti`, issued now, valid an hour.
pub fn token(subject: &str, jti: &str) -> String {
    let now = unix_now();
    sign(&json!({ "iss": ISSUER, "sub": subject, "jti": jti, "iat": now, "exp": now + 3600 }))
}

/// The code and message a call's error reaches the client with.
///
/// # Panics
/// When the call succeeded.
pub fn refusal<T>(result: Result<T, ApiError>) -> (Code, String) {
    let Err(error) = result else {
        panic!("the call succeeded; a refusal was expected");
    };
    let status = tonic::Status::from(error);
    (status.code(), status.message().to_owned())
}
