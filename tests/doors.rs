//! The HTTP doors of `revocd serve --http-listen` as identity providers and
//! gateways use them: a real `revocd serve` process on its own
//! `redis-server`, real HTTP/1.1 requests in the shapes Kong's
//! `oauth2-introspection`, Traefik's introspection middleware and
//! MuleSoft's OAuth policy send, an OpenID provider's back-channel logout,
//! and a Shared Signals transmitter pushing signed events.

mod support;

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revocd::pb::{CheckRequest, ListRevocationsRequest, RevocationRecord};
use revocd::time::unix_now;
use serde_json::{json, Value};
use support::nginx::{http_post, loopback, HttpResponse, Nginx};
use support::{
    free_port, token_for, token_with, AgentProcess, Deployment, RedisServer, Replica, ISSUER,
};

/// The client id this deployment is registered under at the provider.
const RP_CLIENT: &str = "revocd-rp";
/// The Shared Signals transmitter.
const TRANSMITTER: &str = "https://ssf.transmitter.test";
/// Another tenant's issuer, accepted by the server.
const TENANT_B: &str = "https://tenant-b.test";
/// Tenant B's own transmitter, which may cut off tenant B's tokens only.
const TENANT_B_TRANSMITTER: &str = "https://ssf.tenant-b.test";
/// Our audience at the transmitter.
const RECEIVER: &str = "https://revocd.receiver.test";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const SET: (&str, &str) = ("Content-Type", "application/secevent+jwt");
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// A replica with every door open, its Redis, and the transmitter's key.
struct Doors {
    replica: Replica,
    http: SocketAddr,
    transmitter_key: EncodingKey,
    /// The key of tenant B's own transmitter ([`TENANT_B_TRANSMITTER`]).
    tenant_b_transmitter_key: EncodingKey,
    _redis: RedisServer,
    _deployment: Deployment,
}

impl Doors {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Doors::start`] with more `revocd serve` flags.
    async fn start_with(extra: &[&str]) -> Self {
        let redis = RedisServer::start();
        let deployment = Deployment::new();
        let transmitter_pair = |name: &str| {
            let pair = rcgen::KeyPair::generate().expect("an EC key");
            let public_key = deployment.path(name);
            std::fs::write(&public_key, pair.public_key_pem()).expect("the public key");
            let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key");
            (key, public_key)
        };
        let (transmitter_key, public_key) = transmitter_pair("transmitter.pem");
        let (tenant_b_transmitter_key, tenant_b_public_key) = transmitter_pair("tenant-b-tx.pem");
        let http = loopback(free_port());
        let (http_flag, redis_url, key_file) = (
            http.to_string(),
            redis.url(),
            public_key.to_str().expect("UTF-8 path").to_owned(),
        );
        // Two tenants, each bound to its own secret: the transmitter may
        // cut off tokens of the first only.
        let tenant_b_secret = deployment.path("tenant-b.secret");
        std::fs::write(&tenant_b_secret, "the secret of tenant b, 32 bytes+\n").expect("secret");
        let bound = |issuer: &str, path: &std::path::Path| {
            format!("{issuer}={}", path.to_str().expect("UTF-8 path"))
        };
        let (keys, own, other) = (
            deployment.path("api-keys.toml"),
            bound(ISSUER, &deployment.path("secret")),
            bound(TENANT_B, &tenant_b_secret),
        );
        let args: Vec<String> = [
            "--api-keys-file",
            keys.to_str().expect("UTF-8 path"),
            "--jwt-issuer-hs256-secret-file",
            &own,
            "--jwt-issuer-hs256-secret-file",
            &other,
            "--redis-url",
            &redis_url,
            "--http-listen",
            &http_flag,
            "--backchannel-audience",
            RP_CLIENT,
            "--ssf-issuer",
            TRANSMITTER,
            "--ssf-jwks-file",
            &key_file,
            "--ssf-audience",
            RECEIVER,
            "--ssf-token-issuer",
            ISSUER,
            "--ssf-transmitter",
            &bound(TENANT_B_TRANSMITTER, &tenant_b_public_key),
            "--ssf-transmitter-token-issuer",
            &format!("{TENANT_B_TRANSMITTER}={TENANT_B}"),
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        let replica = Replica::spawn(&args).await;
        Doors {
            replica,
            http,
            transmitter_key,
            tenant_b_transmitter_key,
            _redis: redis,
            _deployment: deployment,
        }
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        http_post(self.http, path, headers, body.as_bytes()).expect("an HTTP answer")
    }

    /// Whether the server says `token` is revoked.
    async fn revoked(&self, token: &str) -> bool {
        let mut client = self.replica.client(Some("key-read")).await;
        let request = CheckRequest {
            token: token.to_owned(),
            ..Default::default()
        };
        client
            .check(request)
            .await
            .expect("Check")
            .into_inner()
            .revoked
    }

    /// Every live record.
    async fn records(&self) -> Vec<RevocationRecord> {
        let mut client = self.replica.client(Some("key-read")).await;
        let request = ListRevocationsRequest {
            page_size: 1_000,
            ..Default::default()
        };
        let page = client.list_revocations(request).await.expect("List");
        page.into_inner().records
    }

    /// A SET from the transmitter, signed with `key` (ES256).
    fn set(&self, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, key).expect("signing")
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn json_body(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"))
}

/// `application/x-www-form-urlencoded` of `pairs` (the values are
/// base64url tokens and plain words: nothing to escape but what is).
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", value.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn rfc7009_revokes_a_token_by_itself_or_with_a_key_and_says_200_for_what_is_not_ours() {
    let doors = Doors::start().await;
    // The holder revokes its own token, keyless, as a logout hook does.
    let own = token_for("alice", "d-own");
    let answer = doors.post("/oauth2/revoke", &[FORM], &form(&[("token", &own)]));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(doors.revoked(&own).await);
    // An auth server with its key, as HTTP Basic (name and key).
    let other = token_for("bob", "d-other");
    let body = form(&[("token", &other), ("token_type_hint", "access_token")]);
    let auth = basic("auth-server", "key-revoke");
    let answer = doors.post("/oauth2/revoke", &[FORM, ("Authorization", &auth)], &body);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(doors.revoked(&other).await);
    let records = doors.records().await;
    let sources: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.actor.as_str(), r.source.as_str()))
        .collect();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(
        sources
            .iter()
            .all(|(_, source)| source.starts_with("oauth2 127.0.0.1:")),
        "{sources:?}"
    );
    assert!(
        sources.iter().any(|(actor, _)| *actor == "auth-server"),
        "{sources:?}"
    );

    // Not ours, or not a token at all: 200 as RFC 7009 says, nothing stored.
    let foreign = support::sign_with(
        &json!({"iss": ISSUER, "sub": "eve", "jti": "d-forged", "iat": unix_now(), "exp": unix_now() + 60}),
        "another secret entirely, 32 bytes+",
    );
    for token in [foreign.as_str(), "not-a-jwt"] {
        let answer = doors.post("/oauth2/revoke", &[FORM], &form(&[("token", token)]));
        assert_eq!(answer.status, 200, "{token}: {answer:?}");
    }
    assert_eq!(doors.records().await.len(), 2);

    // What is refused says why.
    let refresh = form(&[("token", &own), ("token_type_hint", "refresh_token")]);
    let answer = doors.post("/oauth2/revoke", &[FORM], &refresh);
    assert_eq!(answer.status, 400);
    assert_eq!(json_body(&answer)["error"], "unsupported_token_type");
    let wrong = basic("auth-server", "not-the-key");
    let answer = doors.post("/oauth2/revoke", &[FORM, ("Authorization", &wrong)], &body);
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(json_body(&answer)["error"], "invalid_client");
    assert!(answer
        .header("WWW-Authenticate")
        .is_some_and(|c| c.contains("Basic")));
    let impostor = basic("support-desk", "key-revoke");
    let answer = doors.post(
        "/oauth2/revoke",
        &[FORM, ("Authorization", &impostor)],
        &body,
    );
    assert_eq!(
        answer.status, 401,
        "a key under another key's name: {answer:?}"
    );
    let answer = doors.post("/oauth2/revoke", &[FORM], "");
    assert_eq!(answer.status, 400);
    assert_eq!(json_body(&answer)["error"], "invalid_request");
    let answer = doors.post(
        "/oauth2/revoke",
        &[("Content-Type", "text/plain")],
        "token=x",
    );
    assert!(
        (400..500).contains(&answer.status),
        "another content type: {answer:?}"
    );
    let oversize = format!("token={}", "a".repeat(100 * 1024));
    let answer = doors.post("/oauth2/revoke", &[FORM], &oversize);
    assert_eq!(answer.status, 413, "{answer:?}");
}

#[tokio::test]
async fn rfc7009_never_says_200_for_a_revocation_redis_did_not_store() {
    let mut doors = Doors::start().await;
    doors._redis.kill();
    let token = token_for("alice", "d-unstored");
    let answer = doors.post("/oauth2/revoke", &[FORM], &form(&[("token", &token)]));
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("Retry-After").is_some(), "{answer:?}");
    assert_eq!(json_body(&answer)["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn introspection_answers_kong_traefik_and_mulesoft_shapes() {
    let doors = Doors::start().await;
    let now = unix_now();
    let token = token_with(
        "alice",
        "d-intro",
        now - 5,
        json!({"aud": "api", "client_id": "web", "scope": ["read", "write"], "sid": "s-1"}),
    );
    // Kong's oauth2-introspection: Basic, with a hint.
    let kong = [FORM, ("Authorization", &basic("support-desk", "key-read"))];
    let kong_body = form(&[("token", &token), ("token_type_hint", "access_token")]);
    // Traefik's middleware: a bearer key, no hint.
    let bearer = "Bearer key-subscribe".to_owned();
    let traefik = [
        FORM,
        ("Authorization", &bearer),
        ("Accept", "application/json"),
    ];
    // MuleSoft's OAuth policy: Basic, the token alone.
    let mule = [FORM, ("Authorization", &basic("mixed", "key-mixed"))];
    let plain = form(&[("token", &token)]);
    for (headers, body) in [
        (&kong[..], &kong_body),
        (&traefik[..], &plain),
        (&mule[..], &plain),
    ] {
        let answer = doors.post("/oauth2/introspect", headers, body);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("Cache-Control"), Some("no-store"));
        let body = json_body(&answer);
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["iss"], ISSUER);
        assert_eq!(body["sub"], "alice");
        assert_eq!(body["jti"], "d-intro");
        assert_eq!(body["iat"], now - 5);
        assert_eq!(body["aud"], "api");
        assert_eq!(body["client_id"], "web");
        assert_eq!(body["scope"], "read write");
        assert!(body["exp"].as_i64().is_some_and(|exp| exp > now));
    }

    // Anything else is a bare `active: false`.
    let inactive = |token: &str| {
        let answer = doors.post("/oauth2/introspect", &kong, &form(&[("token", token)]));
        assert_eq!(answer.status, 200, "{answer:?}");
        json_body(&answer)
    };
    let expired = support::sign(&json!({
        "iss": ISSUER, "sub": "alice", "jti": "d-old", "iat": now - 120, "exp": now - 60,
    }));
    let forged = support::sign_with(
        &json!({"iss": ISSUER, "sub": "alice", "jti": "d-f", "iat": now, "exp": now + 60}),
        "another secret entirely, 32 bytes+",
    );
    for token in [expired.as_str(), forged.as_str(), "not-a-jwt"] {
        assert_eq!(inactive(token), json!({"active": false}), "{token}");
    }
    let mut client = doors.replica.client(Some("key-revoke")).await;
    let cut = revocd::pb::RevokeClaimRequest {
        issuer: ISSUER.into(),
        claim: "sid".into(),
        value: "s-1".into(),
        ..Default::default()
    };
    client.revoke_claim(cut).await.expect("RevokeClaim");
    assert_eq!(inactive(&token), json!({"active": false}));

    // The caller must be one.
    let answer = doors.post("/oauth2/introspect", &[FORM], &plain);
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.header("WWW-Authenticate").is_some());
    let revoker = [FORM, ("Authorization", &basic("auth-server", "key-revoke"))];
    let answer = doors.post("/oauth2/introspect", &revoker, &plain);
    assert_eq!(
        answer.status, 403,
        "a key without read or subscribe: {answer:?}"
    );
}

/// A logout token of the test issuer for `sid` (and `sub`), issued now.
fn logout_token(sid: Option<&str>, jti: &str, extra: Value) -> String {
    let now = unix_now();
    let mut claims = json!({
        "iss": ISSUER, "aud": RP_CLIENT, "iat": now, "exp": now + 120, "jti": jti,
        "sub": "alice", "events": {LOGOUT_EVENT: {}},
    });
    if let Some(sid) = sid {
        claims["sid"] = json!(sid);
    }
    for (key, value) in extra.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    support::sign(&claims)
}

#[tokio::test]
async fn a_backchannel_logout_cuts_off_its_session_once_and_refuses_what_the_spec_forbids() {
    let doors = Doors::start().await;
    let before = unix_now() - 10;
    let laptop = token_with("alice", "d-laptop", before, json!({"sid": "laptop"}));
    let phone = token_with("alice", "d-phone", before, json!({"sid": "phone"}));
    let logout = logout_token(Some("laptop"), "logout-1", json!({}));
    let body = form(&[("logout_token", &logout)]);
    let answer = doors.post("/oidc/backchannel-logout", &[FORM], &body);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(doors.revoked(&laptop).await);
    assert!(
        !doors.revoked(&phone).await,
        "the user's other session stays"
    );
    let records = doors.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].actor, format!("backchannel:{ISSUER}"));
    assert!(records[0].source.starts_with("backchannel 127.0.0.1:"));

    // A replay is answered as the first, and changes nothing.
    let again = doors.post("/oidc/backchannel-logout", &[FORM], &body);
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(doors.records().await, records);

    // A logout token without `sid` logs the subject out everywhere.
    let everywhere = logout_token(None, "logout-2", json!({}));
    let answer = doors.post(
        "/oidc/backchannel-logout",
        &[FORM],
        &form(&[("logout_token", &everywhere)]),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(doors.revoked(&phone).await);

    let refused = |token: String| {
        let answer = doors.post(
            "/oidc/backchannel-logout",
            &[FORM],
            &form(&[("logout_token", &token)]),
        );
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(json_body(&answer)["error"], "invalid_request");
        json_body(&answer)["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let count = doors.records().await.len();
    let why = refused(logout_token(
        Some("s"),
        "l-3",
        json!({"aud": "another-client"}),
    ));
    assert!(why.contains("audience"), "{why}");
    let why = refused(logout_token(Some("s"), "l-4", json!({"nonce": "n"})));
    assert!(why.contains("nonce"), "{why}");
    let why = refused(logout_token(
        Some("s"),
        "l-5",
        json!({"events": {"other": {}}}),
    ));
    assert!(why.contains("events"), "{why}");
    let why = refused(logout_token(
        Some("s"),
        "l-6",
        json!({"iat": unix_now() - 3_600}),
    ));
    assert!(why.contains("iat"), "{why}");
    let unsigned = {
        let header = STANDARD.encode(r#"{"alg":"none"}"#).replace('=', "");
        let claims = json!({"iss": ISSUER, "aud": RP_CLIENT, "sid": "s", "jti": "l-7",
            "iat": unix_now(), "exp": unix_now() + 60, "events": {LOGOUT_EVENT: {}}});
        let payload = STANDARD.encode(claims.to_string()).replace('=', "");
        format!("{header}.{payload}.")
    };
    refused(unsigned);
    let forged = support::sign_with(
        &json!({"iss": ISSUER, "aud": RP_CLIENT, "sid": "s", "jti": "l-8",
            "iat": unix_now(), "exp": unix_now() + 60, "events": {LOGOUT_EVENT: {}}}),
        "another secret entirely, 32 bytes+",
    );
    refused(forged);
    let logout = logout_token(Some("s"), "l-9", json!({}));
    let as_text = doors.post(
        "/oidc/backchannel-logout",
        &[("Content-Type", "text/plain")],
        &form(&[("logout_token", &logout)]),
    );
    assert_eq!(as_text.status, 415, "another content type: {as_text:?}");
    let oversize = form(&[("logout_token", &"a".repeat(100 * 1024))]);
    let answer = doors.post("/oidc/backchannel-logout", &[FORM], &oversize);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(
        doors.records().await.len(),
        count,
        "nothing refused was stored"
    );
}

#[tokio::test]
async fn a_transmitter_pushes_caep_events_that_cut_off_subjects_and_sessions() {
    let doors = Doors::start().await;
    let now = unix_now();
    let alice = token_with("alice", "d-alice", now - 10, json!({"sid": "a-1"}));
    let bob = token_with("bob", "d-bob", now - 10, json!({"sid": "b-1"}));
    let bob_other = token_with("bob", "d-bob-2", now - 10, json!({"sid": "b-2"}));
    let set = |jti: &str, event: Value| {
        doors.set(
            &doors.transmitter_key,
            &json!({"iss": TRANSMITTER, "aud": RECEIVER, "iat": now, "jti": jti,
                "events": {SESSION_REVOKED: event}}),
        )
    };
    let by_subject = set(
        "set-1",
        json!({"subject": {"format": "iss_sub", "iss": ISSUER, "sub": "alice"}, "event_timestamp": now}),
    );
    let answer = doors.post("/ssf/events", &[SET], &by_subject);
    assert_eq!(answer.status, 202, "{answer:?}");
    assert!(doors.revoked(&alice).await);
    let by_session = set(
        "set-2",
        json!({"subject": {"format": "complex",
            "user": {"format": "iss_sub", "iss": ISSUER, "sub": "bob"},
            "session": {"format": "opaque", "id": "b-1"}}}),
    );
    let answer = doors.post("/ssf/events", &[SET], &by_session);
    assert_eq!(answer.status, 202, "{answer:?}");
    assert!(doors.revoked(&bob).await);
    assert!(
        !doors.revoked(&bob_other).await,
        "bob's other session stays"
    );
    let records = doors.records().await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records
        .iter()
        .all(|r| r.actor == format!("ssf:{TRANSMITTER}")));

    // A replay is accepted and changes nothing.
    let answer = doors.post("/ssf/events", &[SET], &by_session);
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(doors.records().await, records);

    // Refusals name the RFC 8935 error, and store nothing.
    let refused = |set: &str, content_type: (&str, &str)| {
        let answer = doors.post("/ssf/events", &[content_type], set);
        (
            answer.status,
            json_body(&answer)["err"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let claims = |iss: &str, aud: &str| {
        json!({"iss": iss, "aud": aud, "iat": now, "jti": "set-x",
            "events": {SESSION_REVOKED: {"subject": {"format": "iss_sub", "iss": ISSUER, "sub": "carol"}}}})
    };
    let other_key = EncodingKey::from_ec_pem(
        rcgen::KeyPair::generate()
            .unwrap()
            .serialize_pem()
            .as_bytes(),
    )
    .unwrap();
    let wrong_key = doors.set(&other_key, &claims(TRANSMITTER, RECEIVER));
    assert_eq!(refused(&wrong_key, SET), (400, "invalid_key".into()));
    let wrong_audience = doors.set(&doors.transmitter_key, &claims(TRANSMITTER, "someone-else"));
    assert_eq!(
        refused(&wrong_audience, SET),
        (400, "invalid_audience".into())
    );
    let wrong_issuer = doors.set(&doors.transmitter_key, &claims("https://unknown", RECEIVER));
    assert_eq!(refused(&wrong_issuer, SET), (400, "invalid_issuer".into()));
    let good = doors.set(&doors.transmitter_key, &claims(TRANSMITTER, RECEIVER));
    assert_eq!(
        refused(&good, ("Content-Type", "application/json")),
        (415, "invalid_request".into())
    );
    let oversize = "a".repeat(100 * 1024);
    let answer = doors.post("/ssf/events", &[SET], &oversize);
    assert_eq!(answer.status, 413, "{answer:?}");
    let foreign = doors.set(
        &doors.transmitter_key,
        &json!({"iss": TRANSMITTER, "aud": RECEIVER, "iat": now, "jti": "set-y",
            "events": {SESSION_REVOKED: {"subject": {"format": "iss_sub", "iss": TENANT_B, "sub": "x"}}}}),
    );
    let answer = doors.post("/ssf/events", &[SET], &foreign);
    assert_eq!(answer.status, 400, "{answer:?}");
    let why = json_body(&answer)["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("may not cut off tokens of issuer"), "{why}");
    assert_eq!(doors.records().await, records, "nothing refused was stored");
}

// === end to end: each door ends in a token nginx refuses ===

impl Doors {
    /// A `revocd agent` following the replica (keys bound as the server's),
    /// with the introspection keys, and nginx in front of it.
    fn agent_behind_nginx(&self) -> (AgentProcess, Nginx) {
        let deployment = &self._deployment;
        let own = format!(
            "{ISSUER}={}",
            deployment.path("secret").to_str().expect("UTF-8 path")
        );
        let keys = deployment.path("api-keys.toml");
        let extra = [
            "--jwt-issuer-hs256-secret-file",
            &own,
            "--introspection-keys-file",
            keys.to_str().expect("UTF-8 path"),
        ];
        let agent = AgentProcess::spawn(&deployment.agent_args(self.replica.address, &extra));
        let nginx = Nginx::start(agent.http);
        (agent, nginx)
    }
}

/// Waits until nginx refuses `token` (401), as the agent learns of its
/// revocation from the stream.
fn refused_by_nginx(nginx: &Nginx, token: &str) {
    let refused = support::eventually_blocking(
        "nginx to refuse the token",
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(5),
        || match nginx.get("/", Some(token)) {
            response if response.status == 401 => Ok(response),
            response => Err(response.status),
        },
    );
    assert!(refused.header("www-authenticate").is_some(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_door_ends_in_a_token_a_real_agent_behind_nginx_refuses() {
    let doors = Doors::start().await;
    let (agent, nginx) = doors.agent_behind_nginx();
    let before = unix_now() - 10;
    let tokens: Vec<String> = ["oauth2", "backchannel", "ssf", "untouched"]
        .iter()
        .map(|name| {
            token_with(
                name,
                &format!("e2e-{name}"),
                before,
                json!({"sid": format!("s-{name}")}),
            )
        })
        .collect();
    for token in &tokens {
        assert_eq!(nginx.get("/", Some(token)).status, 200);
    }

    // RFC 7009, keyless.
    let answer = doors.post("/oauth2/revoke", &[FORM], &form(&[("token", &tokens[0])]));
    assert_eq!(answer.status, 200, "{answer:?}");
    refused_by_nginx(&nginx, &tokens[0]);
    // Back-channel logout of the session.
    let logout = logout_token(
        Some("s-backchannel"),
        "e2e-logout",
        json!({"sub": "backchannel"}),
    );
    let answer = doors.post(
        "/oidc/backchannel-logout",
        &[FORM],
        &form(&[("logout_token", &logout)]),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    refused_by_nginx(&nginx, &tokens[1]);
    // A CAEP session-revoked event.
    let set = doors.set(
        &doors.transmitter_key,
        &json!({"iss": TRANSMITTER, "aud": RECEIVER, "iat": unix_now(), "jti": "e2e-set",
            "events": {SESSION_REVOKED: {"subject": {"format": "iss_sub", "iss": ISSUER, "sub": "ssf"}}}}),
    );
    let answer = doors.post("/ssf/events", &[SET], &set);
    assert_eq!(answer.status, 202, "{answer:?}");
    refused_by_nginx(&nginx, &tokens[2]);
    assert_eq!(
        nginx.get("/", Some(&tokens[3])).status,
        200,
        "the others stay"
    );

    // The agent's own introspection agrees, from its filter.
    let introspect = |token: &str| {
        let auth = basic("edge-gateway", "key-subscribe");
        let answer = http_post(
            agent.http,
            "/oauth2/introspect",
            &[FORM, ("Authorization", &auth)],
            form(&[("token", token)]).as_bytes(),
        )
        .expect("an HTTP answer");
        assert_eq!(answer.status, 200, "{answer:?}");
        json_body(&answer)
    };
    for token in &tokens[..3] {
        assert_eq!(introspect(token), json!({"active": false}));
    }
    let active = introspect(&tokens[3]);
    assert_eq!(
        (active["active"].clone(), active["sub"].clone()),
        (json!(true), json!("untouched"))
    );
    let keyless = http_post(
        agent.http,
        "/oauth2/introspect",
        &[FORM],
        form(&[("token", &tokens[3])]).as_bytes(),
    )
    .expect("an HTTP answer");
    assert_eq!(keyless.status, 401, "{keyless:?}");
    let revoker = basic("auth-server", "key-revoke");
    let forbidden = http_post(
        agent.http,
        "/oauth2/introspect",
        &[FORM, ("Authorization", &revoker)],
        form(&[("token", &tokens[3])]).as_bytes(),
    )
    .expect("an HTTP answer");
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
}

// === SSF poll delivery: a transmitter revocd polls ===

/// A Shared Signals transmitter's poll endpoint (RFC 8936), as a test
/// serves it: SETs queued by the test go out until acknowledged or
/// reported; what revocd says of them is kept.
#[derive(Default)]
struct PollEndpoint {
    pending: std::collections::BTreeMap<String, String>,
    acknowledged: Vec<String>,
    errors: serde_json::Map<String, Value>,
    polls: usize,
    refused: usize,
}

type SharedEndpoint = std::sync::Arc<std::sync::Mutex<PollEndpoint>>;
const POLL_TOKEN: &str = "poll-token-of-the-test";

async fn poll_endpoint(
    axum::extract::State(endpoint): axum::extract::State<SharedEndpoint>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut endpoint = endpoint.lock().unwrap();
    let bearer = format!("Bearer {POLL_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        endpoint.refused += 1;
        return (axum::http::StatusCode::UNAUTHORIZED, String::new());
    }
    endpoint.polls += 1;
    for jti in request["ack"].as_array().into_iter().flatten() {
        let jti = jti.as_str().unwrap_or_default().to_owned();
        endpoint.pending.remove(&jti);
        endpoint.acknowledged.push(jti);
    }
    for (jti, error) in request["setErrs"].as_object().into_iter().flatten() {
        endpoint.pending.remove(jti);
        endpoint.errors.insert(jti.clone(), error.clone());
    }
    let sets = json!({"sets": endpoint.pending, "moreAvailable": false});
    (axum::http::StatusCode::OK, sets.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_transmitter_has_its_events_applied_acknowledged_and_enforced_by_nginx() {
    let endpoint = SharedEndpoint::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/poll", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/poll", axum::routing::post(poll_endpoint))
        .with_state(endpoint.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{POLL_TOKEN}\n")).unwrap();
    let doors = Doors::start_with(&[
        "--ssf-poll-url",
        &url,
        "--ssf-poll-token-file",
        token_file.path().to_str().unwrap(),
        "--ssf-poll-interval",
        "100ms",
    ])
    .await;
    let (_agent, nginx) = doors.agent_behind_nginx();
    let now = unix_now();
    let dave = token_with("dave", "poll-dave", now - 10, json!({}));
    let erin = token_with("erin", "poll-erin", now - 10, json!({}));
    assert_eq!(nginx.get("/", Some(&dave)).status, 200);

    let event = |sub: &str| json!({SESSION_REVOKED: {"subject": {"format": "iss_sub", "iss": ISSUER, "sub": sub}}});
    let good = doors.set(
        &doors.transmitter_key,
        &json!({"iss": TRANSMITTER, "aud": RECEIVER, "iat": now, "jti": "poll-1", "events": event("dave")}),
    );
    let misaddressed = doors.set(
        &doors.transmitter_key,
        &json!({"iss": TRANSMITTER, "aud": "another-receiver", "iat": now, "jti": "poll-2", "events": event("erin")}),
    );
    {
        let mut endpoint = endpoint.lock().unwrap();
        endpoint.pending.insert("poll-1".into(), good);
        endpoint.pending.insert("poll-2".into(), misaddressed);
    }
    refused_by_nginx(&nginx, &dave);
    support::eventually(
        "revocd to report both SETs",
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(20),
        || async {
            let endpoint = endpoint.lock().unwrap();
            match endpoint.pending.is_empty() {
                true => Ok(()),
                false => Err(endpoint.pending.keys().cloned().collect::<Vec<_>>()),
            }
        },
    )
    .await;
    {
        let endpoint = endpoint.lock().unwrap();
        assert_eq!(endpoint.acknowledged, ["poll-1"]);
        assert_eq!(
            endpoint.errors["poll-2"]["err"], "invalid_audience",
            "{:?}",
            endpoint.errors
        );
        assert_eq!(endpoint.refused, 0, "every poll carried the token");
        assert!(endpoint.polls >= 2);
    }
    assert_eq!(
        nginx.get("/", Some(&erin)).status,
        200,
        "a refused SET changes nothing"
    );
    let records = doors.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].source.starts_with("ssf-poll http://127.0.0.1:"),
        "{records:?}"
    );
}

#[tokio::test]
async fn each_transmitter_cuts_off_the_tokens_of_its_own_tenant_only() {
    let doors = Doors::start().await;
    let now = unix_now();
    let tenant_b_token = support::sign_with(
        &json!({"iss": TENANT_B, "sub": "frank", "jti": "b-1", "iat": now - 10, "exp": now + 600}),
        "the secret of tenant b, 32 bytes+",
    );
    let tenant_a_token = token_with("frank", "a-1", now - 10, json!({}));
    let event = |issuer: &str, jti: &str| {
        json!({"iss": TENANT_B_TRANSMITTER, "aud": RECEIVER, "iat": now, "jti": jti,
            "events": {SESSION_REVOKED: {"subject": {"format": "iss_sub", "iss": issuer, "sub": "frank"}}}})
    };
    let key = &doors.tenant_b_transmitter_key;
    let answer = doors.post(
        "/ssf/events",
        &[SET],
        &doors.set(key, &event(TENANT_B, "b-set-1")),
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    assert!(doors.revoked(&tenant_b_token).await);
    let answer = doors.post(
        "/ssf/events",
        &[SET],
        &doors.set(key, &event(ISSUER, "b-set-2")),
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        !doors.revoked(&tenant_a_token).await,
        "tenant A's tokens are not B's to cut off"
    );
    // Signed with the other transmitter's key: not B's event.
    let forged = doors.set(&doors.transmitter_key, &event(TENANT_B, "b-set-3"));
    assert_eq!(
        json_body(&doors.post("/ssf/events", &[SET], &forged))["err"],
        "invalid_key"
    );
}
