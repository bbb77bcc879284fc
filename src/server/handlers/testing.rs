//! What the handler tests share: a [`RevocationApi`] over the memory store
//! with `revocd serve`'s defaults; requests from keys of each role (or
//! none); and signed tokens.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tonic::{Code, Request};

use super::RevocationApi;
use crate::auth::{key_digest_hex, Access};
use crate::bounds::{DEFAULT_LEEWAY_SECONDS, DEFAULT_MAX_TOKEN_LIFETIME};
use crate::hub::{FilterHub, HubConfig};
use crate::server::error::ApiError;
use crate::server::{KeylessLimits, Policy, State};
use crate::store::{MemoryStore, Store};
use crate::time::unix_now;
use crate::tokens::TokenVerifier;

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

/// An API over a fresh memory store with the default policy, trusting
/// [`SECRET`] from [`ISSUER`] and answering [`KEYS`].
pub async fn api() -> RevocationApi {
    api_with(|_| {}).await
}

/// [`api`] with its policy changed by `adjust`.
pub async fn api_with(adjust: impl FnOnce(&mut Policy)) -> RevocationApi {
    let store = Store::Memory(MemoryStore::new(10_000));
    let digest_key = store.digest_key(None).await.expect("digest key");
    let verifier = TokenVerifier::builder()
        .issuers(&[ISSUER.to_owned()])
        .leeway_seconds(DEFAULT_LEEWAY_SECONDS)
        .hs256_secret(SECRET.as_bytes())
        .expect("HMAC key")
        .build()
        .expect("verifier");
    let mut policy = Policy {
        leeway: DEFAULT_LEEWAY_SECONDS as i64,
        max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME.as_secs() as i64,
        default_issuer: ISSUER.to_owned(),
        max_streams_per_key: 1_000,
        keyless: KeylessLimits::default(),
        revocable_claims: Vec::new(),
    };
    adjust(&mut policy);
    verifier.read_claims(
        policy
            .revocable_claims
            .iter()
            .map(|c| c.as_str().into())
            .collect(),
    );
    let state = State {
        store: store.clone(),
        verifier,
        access: Access::from_toml(&keys_toml()).expect("valid keys"),
        policy,
        hub: FilterHub::spawn(store, digest_key, HubConfig::default()),
        started: Instant::now(),
        tls: None,
        doors: Default::default(),
    };
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
