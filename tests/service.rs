//! The gRPC API's behaviour, run against both backends: every test here runs
//! once on the memory store and once on a real `redis-server` of its own.

mod support;

use revocd::pb::{
    CheckRequest, CheckResponse, GetStatsRequest, RevokeRequest, RevokeSubjectRequest,
};
use revocd::time::unix_now;
use serde_json::json;
use support::{token_for, Client, Deployment, RedisServer, TestServer, ISSUER};
use tonic::Code;

/// Which store the server under test uses.
#[derive(Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

/// A running server with the test deployment; keeps its Redis alive.
struct Harness {
    server: TestServer,
    _redis: Option<RedisServer>,
    _deployment: Deployment,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        support::trace_init();
        let deployment = Deployment::new();
        let redis = matches!(backend, Backend::Redis).then(RedisServer::start);
        let mut extra = Vec::new();
        if let Some(redis) = &redis {
            extra = vec!["--redis-url".to_owned(), redis.url()];
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = TestServer::start(&deployment.args(&extra)).await;
        Harness {
            server,
            _redis: redis,
            _deployment: deployment,
        }
    }

    async fn client(&self, key: &str) -> Client {
        self.server.client(Some(key)).await
    }

    async fn anonymous(&self) -> Client {
        self.server.client(None).await
    }

    async fn check_token(&self, token: &str) -> CheckResponse {
        let request = CheckRequest {
            token: token.to_owned(),
            ..Default::default()
        };
        self.client("key-read")
            .await
            .check(request)
            .await
            .expect("check")
            .into_inner()
    }

    async fn live_revocations(&self) -> u64 {
        let stats = self
            .client("key-read")
            .await
            .get_stats(GetStatsRequest {})
            .await;
        stats.expect("stats").into_inner().live_revocations
    }
}

fn by_token(token: &str) -> RevokeRequest {
    RevokeRequest {
        token: token.to_owned(),
        ..Default::default()
    }
}

fn by_jti(jti: &str, expires_at: i64) -> RevokeRequest {
    RevokeRequest {
        jti: jti.to_owned(),
        expires_at,
        ..Default::default()
    }
}

fn subject(subject: &str, not_before: i64) -> RevokeSubjectRequest {
    RevokeSubjectRequest {
        subject: subject.to_owned(),
        not_before,
        ..Default::default()
    }
}

/// Signs a token for alice with the given `iat` and `exp`.
fn token_at(jti: &str, issued_at: i64, expires_at: i64) -> String {
    support::sign(&json!({
        "iss": ISSUER, "sub": "alice", "jti": jti, "iat": issued_at, "exp": expires_at,
    }))
}

async fn a_token_revokes_itself_and_check_sees_it(backend: Backend) {
    let harness = Harness::start(backend).await;
    let token = token_for("alice", "jti-1");
    assert!(!harness.check_token(&token).await.revoked);

    let reply = harness
        .anonymous()
        .await
        .revoke(by_token(&token))
        .await
        .expect("revoke");
    let reply = reply.into_inner();
    assert!(reply.newly_revoked);
    assert!(!reply.cursor.is_empty());

    let status = harness.check_token(&token).await;
    assert!(status.revoked);
    assert!(!status.by_subject);
    assert_eq!(status.revoked_by, "self");
    assert_eq!(status.expires_at, reply.expires_at);
    let now = unix_now();
    assert!(
        (now - 5..=now).contains(&status.revoked_at),
        "revoked_at {}",
        status.revoked_at
    );

    let by_jti = CheckRequest {
        jti: "jti-1".into(),
        ..Default::default()
    };
    let status = harness
        .client("key-subscribe")
        .await
        .check(by_jti)
        .await
        .expect("check");
    assert!(status.into_inner().revoked);
}

async fn revoking_twice_changes_nothing_the_second_time(backend: Backend) {
    let harness = Harness::start(backend).await;
    let mut client = harness.client("key-revoke").await;
    let expires_at = unix_now() + 600;
    let first = client
        .revoke(by_jti("twice", expires_at))
        .await
        .expect("first")
        .into_inner();
    let second = client
        .revoke(by_jti("twice", expires_at))
        .await
        .expect("second")
        .into_inner();
    assert!(first.newly_revoked);
    assert!(!second.newly_revoked);
    assert_eq!(second.cursor, "", "a repeat appends nothing to the log");
    assert_eq!(harness.live_revocations().await, 1);
}

async fn a_revocation_records_who_and_why(backend: Backend) {
    let harness = Harness::start(backend).await;
    let mut request = by_jti("audited", unix_now() + 600);
    request.reason = "laptop stolen".into();
    harness
        .client("key-revoke")
        .await
        .revoke(request)
        .await
        .expect("revoke");
    let check = CheckRequest {
        jti: "audited".into(),
        issuer: ISSUER.into(),
        ..Default::default()
    };
    let status = harness
        .client("key-admin")
        .await
        .check(check)
        .await
        .expect("check")
        .into_inner();
    assert!(status.revoked);
    assert_eq!(status.revoked_by, "auth-server");
    assert_eq!(status.reason, "laptop stolen");
}

async fn an_expired_token_needs_no_revocation(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    // Expired beyond the 60 s leeway: nothing to store.
    let expired = token_at("old", now - 7200, now - 120);
    let reply = harness
        .anonymous()
        .await
        .revoke(by_token(&expired))
        .await
        .expect("revoke");
    let reply = reply.into_inner();
    assert!(!reply.newly_revoked);
    assert_eq!(reply.expires_at, now - 120);
    assert_eq!(reply.cursor, "");
    let reply = harness
        .client("key-revoke")
        .await
        .revoke(by_jti("old-jti", now - 120))
        .await;
    assert!(!reply.expect("revoke by jti").into_inner().newly_revoked);
    assert_eq!(harness.live_revocations().await, 0);

    // Expired but within leeway: gateways still accept it, so it is stored.
    let recent = token_at("recent", now - 7200, now - 10);
    let reply = harness
        .anonymous()
        .await
        .revoke(by_token(&recent))
        .await
        .expect("revoke");
    assert!(reply.into_inner().newly_revoked);
    assert_eq!(harness.live_revocations().await, 1);
}

async fn a_subject_cutoff_revokes_only_older_tokens(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let older = token_at("older", now - 300, now + 3000);
    let newer = token_at("newer", now - 30, now + 3000);
    let cutoff = now - 100;
    let mut client = harness.client("key-revoke").await;
    let reply = client
        .revoke_subject(subject("alice", cutoff))
        .await
        .expect("cutoff")
        .into_inner();
    assert_eq!(reply.not_before, cutoff);
    assert!(!reply.cursor.is_empty());

    let status = harness.check_token(&older).await;
    assert!(status.revoked && status.by_subject);
    assert_eq!(status.not_before, cutoff);
    assert_eq!(status.revoked_by, "auth-server");
    assert!(!harness.check_token(&newer).await.revoked);
    let bob = support::sign(
        &json!({"iss": ISSUER, "sub": "bob", "jti": "b", "iat": now - 300, "exp": now + 60}),
    );
    assert!(
        !harness.check_token(&bob).await.revoked,
        "other subjects are untouched"
    );
}

async fn a_later_cutoff_replaces_an_earlier_one_never_the_reverse(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut client = harness.client("key-revoke").await;
    client
        .revoke_subject(subject("alice", now - 100))
        .await
        .expect("first");
    let earlier = client
        .revoke_subject(subject("alice", now - 200))
        .await
        .expect("earlier");
    let earlier = earlier.into_inner();
    assert_eq!(earlier.not_before, now - 100, "the later cut-off stays");
    assert_eq!(earlier.cursor, "");
    let later = client
        .revoke_subject(subject("alice", now - 50))
        .await
        .expect("later");
    assert_eq!(later.into_inner().not_before, now - 50);
    let token = token_at("mid", now - 75, now + 600);
    assert!(harness.check_token(&token).await.by_subject);
}

async fn stats_count_live_records(backend: Backend) {
    let harness = Harness::start(backend).await;
    let mut client = harness.client("key-admin").await;
    for jti in ["a", "b", "c"] {
        client
            .revoke(by_jti(jti, unix_now() + 600))
            .await
            .expect("revoke");
    }
    client
        .revoke_subject(subject("alice", 0))
        .await
        .expect("cutoff");
    let stats = client
        .get_stats(GetStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.live_revocations, 3);
    assert_eq!(stats.live_subject_cutoffs, 1);
    let expected_store = match backend {
        Backend::Memory => "memory",
        Backend::Redis => "redis",
    };
    assert_eq!(stats.store, expected_store);
    assert_eq!(stats.version, env!("CARGO_PKG_VERSION"));
}

/// Which call an authorisation case makes.
#[derive(Debug, Clone, Copy)]
enum Call {
    RevokeJti,
    RevokeToken,
    RevokeSubject,
    Check,
    Stats,
}

async fn call(client: &mut Client, call: Call) -> Code {
    let now = unix_now();
    let result = match call {
        Call::RevokeJti => client.revoke(by_jti("authz", now + 60)).await.map(drop),
        Call::RevokeToken => client
            .revoke(by_token(&token_for("carol", "authz-token")))
            .await
            .map(drop),
        Call::RevokeSubject => client.revoke_subject(subject("dave", 0)).await.map(drop),
        Call::Check => {
            let request = CheckRequest {
                jti: "authz".into(),
                ..Default::default()
            };
            client.check(request).await.map(drop)
        }
        Call::Stats => client.get_stats(GetStatsRequest {}).await.map(drop),
    };
    result.map_or_else(|status| status.code(), |()| Code::Ok)
}

async fn every_call_is_authorised_by_role(backend: Backend) {
    use Call::*;
    use Code::{Ok as Allowed, PermissionDenied as Denied, Unauthenticated as NoKey};
    let harness = Harness::start(backend).await;
    // (call, key, expected): `None` is no key, "bogus" an unknown key.
    let matrix: &[(Call, Option<&str>, Code)] = &[
        (RevokeJti, None, NoKey),
        (RevokeJti, Some("bogus"), NoKey),
        (RevokeJti, Some("key-read"), Denied),
        (RevokeJti, Some("key-subscribe"), Denied),
        (RevokeJti, Some("key-revoke"), Allowed),
        (RevokeJti, Some("key-admin"), Allowed),
        (RevokeToken, None, Allowed),
        (RevokeToken, Some("key-read"), Allowed),
        (RevokeToken, Some("bogus"), NoKey),
        (RevokeSubject, None, NoKey),
        (RevokeSubject, Some("key-read"), Denied),
        (RevokeSubject, Some("key-subscribe"), Denied),
        (RevokeSubject, Some("key-revoke"), Allowed),
        (RevokeSubject, Some("key-admin"), Allowed),
        (Check, None, NoKey),
        (Check, Some("key-revoke"), Denied),
        (Check, Some("key-read"), Allowed),
        (Check, Some("key-subscribe"), Allowed),
        (Check, Some("key-admin"), Allowed),
        (Check, Some("key-mixed"), Allowed),
        (Stats, None, NoKey),
        (Stats, Some("key-revoke"), Denied),
        (Stats, Some("key-subscribe"), Denied),
        (Stats, Some("key-read"), Allowed),
        (Stats, Some("key-admin"), Allowed),
    ];
    let mut failures = Vec::new();
    for &(rpc, key, expected) in matrix {
        let mut client = harness.server.client(key).await;
        let got = call(&mut client, rpc).await;
        if got != expected {
            failures.push(format!(
                "{rpc:?} with {key:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "authorisation matrix:\n{}",
        failures.join("\n")
    );
}

async fn bad_input_gets_a_clear_error(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut client = harness.client("key-admin").await;
    let no_jti = support::sign(&json!({"iss": ISSUER, "sub": "alice", "exp": now + 60}));
    let no_exp = support::sign(&json!({"iss": ISSUER, "sub": "alice", "jti": "x"}));
    let forged = support::sign_with(
        &json!({"iss": ISSUER, "jti": "x", "exp": now + 60}),
        "not-the-secret",
    );
    let foreign = support::sign(&json!({"iss": "https://evil.test", "jti": "x", "exp": now + 60}));
    let huge = support::sign(
        &json!({"iss": ISSUER, "jti": "x", "exp": now + 60, "pad": "p".repeat(9000)}),
    );
    let long_jti = support::sign(&json!({"iss": ISSUER, "jti": "j".repeat(300), "exp": now + 60}));
    let revoke_cases: Vec<(&str, RevokeRequest, Code, &str)> = vec![
        (
            "malformed token",
            by_token("not-a-jwt"),
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "forged token",
            by_token(&forged),
            Code::Unauthenticated,
            "signature",
        ),
        (
            "foreign issuer",
            by_token(&foreign),
            Code::Unauthenticated,
            "issuer",
        ),
        (
            "no jti",
            by_token(&no_jti),
            Code::InvalidArgument,
            "RevokeSubject",
        ),
        ("no exp", by_token(&no_exp), Code::InvalidArgument, "exp"),
        (
            "token over 8 KiB",
            by_token(&huge),
            Code::InvalidArgument,
            "limit",
        ),
        (
            "jti in token too long",
            by_token(&long_jti),
            Code::InvalidArgument,
            "limit is 256",
        ),
        (
            "jti too long",
            by_jti(&"j".repeat(257), now + 60),
            Code::InvalidArgument,
            "limit is 256",
        ),
        (
            "jti with a newline",
            by_jti("a\nb", now + 60),
            Code::InvalidArgument,
            "control",
        ),
        (
            "jti without expiry",
            by_jti("x", 0),
            Code::InvalidArgument,
            "expires_at",
        ),
        (
            "negative expiry",
            by_jti("x", -5),
            Code::InvalidArgument,
            "negative",
        ),
        (
            "absurd expiry",
            by_jti("x", now + 400 * 86_400),
            Code::InvalidArgument,
            "--max-token-lifetime",
        ),
        (
            "neither token nor jti",
            RevokeRequest::default(),
            Code::InvalidArgument,
            "jti",
        ),
        (
            "unknown issuer",
            RevokeRequest {
                issuer: "https://other.test".into(),
                ..by_jti("x", now + 60)
            },
            Code::InvalidArgument,
            "--jwt-issuer",
        ),
        (
            "token and jti together",
            RevokeRequest {
                jti: "x".into(),
                ..by_token(&token_for("alice", "y"))
            },
            Code::InvalidArgument,
            "not both",
        ),
        (
            "reason too long",
            RevokeRequest {
                reason: "r".repeat(600),
                ..by_jti("x", now + 60)
            },
            Code::InvalidArgument,
            "reason",
        ),
    ];
    let mut failures = Vec::new();
    for (name, request, code, needle) in revoke_cases {
        match client.revoke(request).await {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(status) if status.code() != code || !status.message().contains(needle) => failures
                .push(format!(
                    "{name}: {:?} {:?}",
                    status.code(),
                    status.message()
                )),
            Err(_) => {}
        }
    }
    let subject_cases = [
        ("empty subject", subject("", 0), "empty"),
        ("future cut-off", subject("alice", now + 3600), "future"),
        ("negative cut-off", subject("alice", -1), "negative"),
    ];
    for (name, request, needle) in subject_cases {
        match client.revoke_subject(request).await {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(status)
                if status.code() != Code::InvalidArgument || !status.message().contains(needle) =>
            {
                failures.push(format!(
                    "{name}: {:?} {:?}",
                    status.code(),
                    status.message()
                ))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "bad input:\n{}", failures.join("\n"));
    assert_eq!(harness.live_revocations().await, 0, "nothing was stored");
}

async fn an_oversize_message_is_refused(backend: Backend) {
    let harness = Harness::start(backend).await;
    let request = RevokeRequest {
        reason: "r".repeat(100 * 1024),
        ..by_jti("x", unix_now() + 60)
    };
    let status = harness
        .client("key-admin")
        .await
        .revoke(request)
        .await
        .expect_err("refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
}

/// Runs each named test once per backend.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Redis).await })*
        }
    };
}

on_both_backends!(
    a_token_revokes_itself_and_check_sees_it,
    revoking_twice_changes_nothing_the_second_time,
    a_revocation_records_who_and_why,
    an_expired_token_needs_no_revocation,
    a_subject_cutoff_revokes_only_older_tokens,
    a_later_cutoff_replaces_an_earlier_one_never_the_reverse,
    stats_count_live_records,
    every_call_is_authorised_by_role,
    bad_input_gets_a_clear_error,
    an_oversize_message_is_refused,
);
