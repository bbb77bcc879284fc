//! The gRPC API's behaviour, run against every backend: every test here runs
//! on the memory store, on a real `redis-server` of its own, and on a real
//! three-node Redis Cluster of its own with the log in 8 partitions.

mod support;

use revocd::pb::{
    revocation_record, CheckRequest, CheckResponse, ClaimRevocation, GetStatsRequest,
    ListChangesRequest, ListRevocationsRequest, RecordFilter, RecordKind, RevocationRecord,
    RevokeBatchRequest, RevokeClaimRequest, RevokeClaimResponse, RevokeRequest,
    RevokeSubjectRequest, Stats,
};
use revocd::time::unix_now;
use serde_json::json;
use support::{
    by_jti, by_token, token_for, token_with, Client, Deployment, RedisCluster, RedisServer,
    TestServer, ISSUER,
};
use tonic::{Code, Status};

/// Which store the server under test uses.
#[derive(Clone, Copy)]
enum Backend {
    Memory,
    Redis,
    Cluster,
}

/// A running server with the test deployment; keeps its Redis alive.
struct Harness {
    server: TestServer,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
    _deployment: Deployment,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        support::trace_init();
        let deployment = Deployment::new();
        let redis = matches!(backend, Backend::Redis).then(RedisServer::start);
        let cluster = matches!(backend, Backend::Cluster).then(|| RedisCluster::start(3));
        let mut extra = Vec::new();
        if let Some(redis) = &redis {
            extra = vec!["--redis-url".to_owned(), redis.url()];
        }
        if let Some(cluster) = &cluster {
            extra = [
                "--redis-cluster",
                &cluster.urls_flag(),
                "--log-partitions",
                "8",
            ]
            .map(str::to_owned)
            .to_vec();
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = TestServer::start(&deployment.args(&extra)).await;
        Harness {
            server,
            _redis: redis,
            _cluster: cluster,
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

/// Revocations made at once by several callers (which the Redis store
/// sends to Redis together) each get the outcome they would alone: one
/// revocation of a jti is new and the repeats are not, every new one has a
/// cursor of its own, and a key's live quota counts each.
async fn concurrent_revocations_each_get_their_own_outcome(backend: Backend) {
    let harness = Harness::start(backend).await;
    let expires_at = unix_now() + 600;
    let (revoke, quota) = (
        harness.client("key-revoke").await,
        harness.client("key-quota").await,
    );
    let calls = (0..40).map(|i| {
        let (mut client, jti) = match i {
            0..20 => (revoke.clone(), format!("together-{i}")),
            20..30 => (revoke.clone(), "together-same".to_owned()),
            _ => (quota.clone(), format!("together-quota-{i}")),
        };
        tokio::spawn(async move { (i, client.revoke(by_jti(&jti, expires_at)).await) })
    });
    let mut cursors = Vec::new();
    let (mut same_new, mut quota_new, mut quota_refused) = (0, 0, 0);
    for call in calls {
        let (i, answer) = call.await.expect("the call's task");
        match (i, answer) {
            (0..20, Ok(answer)) => {
                let answer = answer.into_inner();
                assert!(answer.newly_revoked, "{i}: {answer:?}");
                cursors.push(answer.cursor);
            }
            (20..30, Ok(answer)) => same_new += usize::from(answer.into_inner().newly_revoked),
            (30.., Ok(_)) => quota_new += 1,
            (30.., Err(status)) if status.code() == Code::ResourceExhausted => quota_refused += 1,
            (i, other) => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(same_new, 1, "one revocation of a jti is new");
    assert_eq!((quota_new, quota_refused), (5, 5), "the live quota is 5");
    let mut distinct = cursors.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 20, "a cursor each: {cursors:?}");
    assert!(cursors.iter().all(|cursor| !cursor.is_empty()));
    assert_eq!(harness.live_revocations().await, 20 + 1 + 5);
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

/// Signs a token for `subject` issued at `issued_at`, valid an hour.
fn issued_at(subject: &str, jti: &str, issued_at: i64) -> String {
    support::sign(&json!({
        "iss": ISSUER, "sub": subject, "jti": jti, "iat": issued_at, "exp": unix_now() + 3600,
    }))
}

/// `not_before = 0` is "every token issued up to and including the current
/// second": the cut-off in force is the next second, so a token issued in
/// the call's second (before or after the call) is revoked and one of the
/// next second is not.
async fn a_cutoff_of_now_covers_the_whole_current_second(backend: Backend) {
    let harness = Harness::start(backend).await;
    let before = unix_now();
    let reply = harness
        .client("key-revoke")
        .await
        .revoke_subject(subject("kate", 0))
        .await
        .expect("cut-off")
        .into_inner();
    let after = unix_now();
    let cut_off = reply.not_before;
    assert!(
        before < cut_off && cut_off <= after + 1,
        "the cut-off in force ({cut_off}) is the second after the call's ({before}..={after})"
    );
    for (jti, iat) in [("kate-before", before), ("kate-same-second", cut_off - 1)] {
        let status = harness.check_token(&issued_at("kate", jti, iat)).await;
        assert!(status.revoked && status.by_subject, "{jti}: {status:?}");
        assert_eq!(status.not_before, cut_off, "{jti}");
    }
    let next = harness
        .check_token(&issued_at("kate", "kate-next-second", cut_off))
        .await;
    assert!(!next.revoked, "a token of the next second is new: {next:?}");
}

/// An explicit `not_before = T` revokes `iat < T` only, and may be as late
/// as the current second plus the leeway (60 s here), no later.
async fn an_explicit_cutoff_keeps_tokens_issued_at_it(backend: Backend) {
    let harness = Harness::start(backend).await;
    let mut client = harness.client("key-revoke").await;
    let cut_off = unix_now() - 100;
    let reply = client
        .revoke_subject(subject("liam", cut_off))
        .await
        .expect("cut-off")
        .into_inner();
    assert_eq!(reply.not_before, cut_off);
    let older = harness
        .check_token(&issued_at("liam", "liam-older", cut_off - 1))
        .await;
    assert!(older.revoked && older.by_subject, "{older:?}");
    let at = harness
        .check_token(&issued_at("liam", "liam-at", cut_off))
        .await;
    assert!(!at.revoked, "iat == not_before is not revoked: {at:?}");

    let latest = unix_now() + 1 + 60;
    let reply = client
        .revoke_subject(subject("mia", latest))
        .await
        .expect("a cut-off within the leeway of the current second")
        .into_inner();
    assert_eq!(reply.not_before, latest);
    let status = client
        .revoke_subject(subject("mia", unix_now() + 1 + 60 + 5))
        .await
        .expect_err("a cut-off beyond the leeway");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("future"), "{status:?}");
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
        Backend::Cluster => "redis-cluster",
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
    Batch,
    List,
    Audit,
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
        Call::Batch => {
            let request = RevokeBatchRequest {
                items: vec![by_jti("authz-batch", now + 60)],
            };
            client.revoke_batch(request).await.map(drop)
        }
        Call::List => client
            .list_revocations(ListRevocationsRequest::default())
            .await
            .map(drop),
        Call::Audit => client
            .list_changes(ListChangesRequest::default())
            .await
            .map(drop),
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
        (Batch, None, NoKey),
        (Batch, Some("key-read"), Denied),
        (Batch, Some("key-revoke"), Allowed),
        (Batch, Some("key-admin"), Allowed),
        (List, None, NoKey),
        (List, Some("key-revoke"), Denied),
        (List, Some("key-subscribe"), Denied),
        (List, Some("key-read"), Allowed),
        (List, Some("key-admin"), Allowed),
        (Audit, Some("key-revoke"), Denied),
        (Audit, Some("key-read"), Allowed),
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

async fn a_batch_stores_good_items_and_reports_bad_ones(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let items = vec![
        by_jti("batch-1", now + 600),
        by_jti("", now + 600),
        by_token(&token_for("erin", "batch-token")),
        by_jti("batch-expired", now - 3_600),
        by_jti("batch-1", now + 600),
        by_jti("batch-far", now + 400 * 86_400),
    ];
    let results = harness
        .client("key-revoke")
        .await
        .revoke_batch(RevokeBatchRequest { items })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let summary: Vec<(i32, Option<bool>)> = results
        .iter()
        .map(|r| (r.code, r.response.as_ref().map(|r| r.newly_revoked)))
        .collect();
    let invalid = Code::InvalidArgument as i32;
    assert_eq!(
        summary,
        [
            (0, Some(true)),
            (invalid, None),
            (0, Some(true)),
            (0, Some(false)),
            (0, Some(false)),
            (invalid, None),
        ]
    );
    assert!(results[1].error.contains("`jti`"), "{results:?}");
    assert!(
        results[5].error.contains("max-token-lifetime"),
        "{results:?}"
    );
    assert_eq!(harness.live_revocations().await, 2);
    let stored = harness.check_token(&token_for("erin", "batch-token")).await;
    assert!(stored.revoked);
    assert_eq!(stored.revoked_by, "auth-server");

    let too_many = RevokeBatchRequest {
        items: (0..1_001)
            .map(|i| by_jti(&format!("m{i}"), now + 60))
            .collect(),
    };
    let status = harness
        .client("key-revoke")
        .await
        .revoke_batch(too_many)
        .await
        .expect_err("over the item limit");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("1001 items"), "{status:?}");
}

/// Every page of a listing, joined.
async fn list_all(
    client: &mut Client,
    filter: RecordFilter,
    page_size: u32,
) -> Vec<RevocationRecord> {
    let mut records = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1_000 {
        let request = ListRevocationsRequest {
            filter: Some(filter.clone()),
            page_size,
            page_token,
        };
        let page = client
            .list_revocations(request)
            .await
            .expect("list")
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return records;
        }
        page_token = page.next_page_token;
    }
    panic!("the listing never ended");
}

/// (kind, id) of a record, for comparing listings.
fn record_id(record: &RevocationRecord) -> String {
    match &record.record {
        Some(revocation_record::Record::Token(t)) => format!("token {}", t.jti),
        Some(revocation_record::Record::Subject(s)) => format!("subject {}", s.subject),
        Some(revocation_record::Record::Claim(c)) => format!("{} {}", c.claim, c.value),
        None => panic!("a record without its kind: {record:?}"),
    }
}

async fn listings_page_through_every_record_and_filter(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut revoker = harness.client("key-revoke").await;
    let items = (0..25)
        .map(|i| {
            let mut item = by_jti(&format!("listed-{i:02}"), now + 600);
            item.reason = "bulk".into();
            item
        })
        .collect();
    revoker
        .revoke_batch(RevokeBatchRequest { items })
        .await
        .expect("batch");
    let mut anonymous = harness.anonymous().await;
    for i in 0..3 {
        let token = token_for("frank", &format!("self-{i}"));
        anonymous
            .revoke(by_token(&token))
            .await
            .expect("self-revoke");
    }
    let mut admin = harness.client("key-admin").await;
    for who in ["grace", "heidi"] {
        admin
            .revoke_subject(subject(who, 0))
            .await
            .expect("cut-off");
    }

    let mut reader = harness.client("key-read").await;
    let everything = list_all(&mut reader, RecordFilter::default(), 1_000).await;
    let mut ids: Vec<String> = everything.iter().map(record_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "{ids:?}");
    let mut paged: Vec<String> = list_all(&mut reader, RecordFilter::default(), 4)
        .await
        .iter()
        .map(record_id)
        .collect();
    paged.sort();
    paged.dedup();
    assert_eq!(paged, ids, "small pages list the same records");

    let count = |filter: RecordFilter| {
        let mut reader = reader.clone();
        async move {
            let mut ids: Vec<String> = list_all(&mut reader, filter, 10)
                .await
                .iter()
                .map(record_id)
                .collect();
            ids.sort();
            ids.dedup();
            ids.len()
        }
    };
    let actor = |actor: &str| RecordFilter {
        actor: actor.into(),
        ..Default::default()
    };
    assert_eq!(count(actor("auth-server")).await, 25);
    assert_eq!(count(actor("self")).await, 3);
    assert_eq!(count(actor("operator")).await, 2);
    let of_subject = RecordFilter {
        subject: "frank".into(),
        ..Default::default()
    };
    assert_eq!(
        count(of_subject).await,
        3,
        "revoked by token: the subject is kept"
    );
    let subjects = RecordFilter {
        kind: RecordKind::Subject.into(),
        ..Default::default()
    };
    assert_eq!(count(subjects).await, 2);
    let future = RecordFilter {
        since: now + 3_600,
        ..Default::default()
    };
    assert_eq!(count(future).await, 0);
    let past = RecordFilter {
        until: now - 3_600,
        ..Default::default()
    };
    assert_eq!(count(past).await, 0);

    let record = everything
        .iter()
        .find(|r| record_id(r) == "token listed-07")
        .expect("listed-07");
    assert_eq!(record.actor, "auth-server");
    assert_eq!(record.reason, "bulk");
    assert!(record.source.starts_with("127.0.0.1:"), "{record:?}");
    assert!(record.revoked_at >= now);

    let bad_token = ListRevocationsRequest {
        page_token: "not-a-token".into(),
        ..Default::default()
    };
    let status = reader
        .list_revocations(bad_token)
        .await
        .expect_err("bad page token");
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn the_audit_trail_shows_every_change_in_order(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut revoker = harness.client("key-revoke").await;
    let mut first = by_jti("audit-a", now + 600);
    first.reason = "phished".into();
    revoker.revoke(first).await.expect("a");
    revoker
        .revoke(by_jti("audit-b", now + 600))
        .await
        .expect("b");
    revoker
        .revoke(by_jti("audit-a", now + 900))
        .await
        .expect("extend a");
    harness
        .client("key-admin")
        .await
        .revoke_subject(subject("ivan", 0))
        .await
        .expect("cut-off");

    let mut reader = harness.client("key-read").await;
    let mut changes = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListChangesRequest {
            filter: Some(RecordFilter {
                since: now - 5,
                ..Default::default()
            }),
            page_size: 1,
            page_token,
        };
        let page = reader
            .list_changes(request)
            .await
            .expect("audit")
            .into_inner();
        changes.extend(page.changes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let seen: Vec<(String, String)> = changes
        .iter()
        .map(|c| {
            let record = c.record.as_ref().expect("record");
            (record_id(record), record.actor.clone())
        })
        .collect();
    let expected = [
        ("token audit-a", "auth-server"),
        ("token audit-b", "auth-server"),
        ("token audit-a", "auth-server"),
        ("subject ivan", "operator"),
    ]
    .map(|(id, actor)| (id.to_owned(), actor.to_owned()));
    assert_eq!(seen, expected);
    let first = changes[0].record.as_ref().expect("record");
    assert_eq!(first.reason, "phished");
    assert!(first.source.starts_with("127.0.0.1:"), "{first:?}");
    assert!(changes
        .windows(2)
        .all(|w| w[0].logged_at_ms <= w[1].logged_at_ms));
    match &changes[2].record.as_ref().and_then(|r| r.record.clone()) {
        Some(revocation_record::Record::Token(t)) => assert_eq!(t.expires_at, now + 900),
        other => panic!("the extension: {other:?}"),
    }

    let later = ListChangesRequest {
        filter: Some(RecordFilter {
            since: now + 3_600,
            ..Default::default()
        }),
        ..Default::default()
    };
    let page = reader
        .list_changes(later)
        .await
        .expect("audit")
        .into_inner();
    assert!(page.changes.is_empty(), "{page:?}");
}

async fn quotas_refuse_only_the_key_over_them(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut bound = harness.client("key-quota").await;
    for i in 0..5 {
        bound
            .revoke(by_jti(&format!("quota-{i}"), now + 600))
            .await
            .expect("within the live quota");
    }
    let status = bound
        .revoke(by_jti("quota-5", now + 600))
        .await
        .expect_err("over the live quota");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("5 live revocations"),
        "{status:?}"
    );
    bound
        .revoke(by_jti("quota-0", now + 900))
        .await
        .expect("extending a held revocation adds nothing live");
    harness
        .client("key-revoke")
        .await
        .revoke(by_jti("unbound", now + 600))
        .await
        .expect("another key is not limited");

    // 7 revocations of a 20-per-second bucket are spent: a batch of 30 gets
    // at most 20, and those are over the live quota.
    let items = (0..30)
        .map(|i| by_jti(&format!("burst-{i}"), now + 600))
        .collect();
    let results = bound
        .revoke_batch(RevokeBatchRequest { items })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let over_rate = results
        .iter()
        .filter(|r| r.error.contains("per second"))
        .count();
    let over_live = results
        .iter()
        .filter(|r| r.error.contains("live revocations"))
        .count();
    assert!(over_rate >= 10, "{results:?}");
    assert!(over_live >= 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.code == Code::ResourceExhausted as i32),
        "{results:?}"
    );

    let request = || revocd::pb::SubscribeRequest {
        protocol: revocd::snapshot::STREAM_PROTOCOL,
        ..Default::default()
    };
    let _first = bound.subscribe(request()).await.expect("one stream");
    let status = bound
        .subscribe(request())
        .await
        .expect_err("max_streams = 1");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_streams"), "{status:?}");
}

// === claim cut-offs (`RevokeClaim`) ===

/// A `RevokeClaim` of the default issuer's tokens whose `claim` is `value`.
fn claim(claim: &str, value: &str, not_before: i64) -> RevokeClaimRequest {
    RevokeClaimRequest {
        claim: claim.to_owned(),
        value: value.to_owned(),
        not_before,
        ..Default::default()
    }
}

impl Harness {
    /// `RevokeClaim` with `key`.
    async fn revoke_claim(
        &self,
        key: &str,
        request: RevokeClaimRequest,
    ) -> Result<RevokeClaimResponse, Status> {
        let reply = self.client(key).await.revoke_claim(request).await;
        reply.map(tonic::Response::into_inner)
    }

    async fn stats(&self) -> Stats {
        let stats = self
            .client("key-read")
            .await
            .get_stats(GetStatsRequest {})
            .await;
        stats.expect("stats").into_inner()
    }
}

/// The claim cut-offs of a listing, as (claim, value, not_before), sorted.
fn claim_cutoffs(records: &[RevocationRecord]) -> Vec<(String, String, i64)> {
    let mut cutoffs: Vec<(String, String, i64)> = records
        .iter()
        .filter_map(|record| match &record.record {
            Some(revocation_record::Record::Claim(c)) => {
                Some((c.claim.clone(), c.value.clone(), c.not_before))
            }
            _ => None,
        })
        .collect();
    cutoffs.sort();
    cutoffs
}

/// `sid`: a session's tokens are revoked, not those of the user's other
/// sessions, nor tokens whose other claims happen to hold the same value.
async fn a_sid_claim_cutoff_revokes_that_session_only(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let in_session = token_with("alice", "s1-a", now - 60, json!({"sid": "sess-1"}));
    let other_user_same_session = token_with("bob", "s1-b", now - 60, json!({"sid": "sess-1"}));
    let other_session = token_with("alice", "s2-a", now - 60, json!({"sid": "sess-2"}));
    let no_session = token_with("alice", "none-a", now - 60, json!({}));
    let same_value_elsewhere = token_with(
        "sess-1",
        "elsewhere",
        now - 60,
        json!({"client_id": "sess-1", "azp": "sess-1"}),
    );
    for token in [&in_session, &other_session, &same_value_elsewhere] {
        assert!(!harness.check_token(token).await.revoked);
    }

    let mut request = claim("sid", "sess-1", 0);
    request.reason = "session ended".into();
    let before = unix_now();
    let reply = harness
        .revoke_claim("key-revoke", request)
        .await
        .expect("sid cut-off");
    let after = unix_now();
    assert!(
        before < reply.not_before && reply.not_before <= after + 1,
        "a cut-off of now ({}) is the second after the call's ({before}..={after})",
        reply.not_before
    );
    assert!(!reply.cursor.is_empty(), "a new cut-off is logged");

    for (name, token) in [("alice", &in_session), ("bob", &other_user_same_session)] {
        let status = harness.check_token(token).await;
        assert!(status.revoked, "{name}'s token of the session: {status:?}");
        assert!(!status.by_subject, "{status:?}");
        assert_eq!(status.claim, "sid", "{status:?}");
        assert_eq!(status.not_before, reply.not_before, "{status:?}");
        assert_eq!(status.revoked_by, "auth-server", "{status:?}");
        assert_eq!(status.reason, "session ended", "{status:?}");
        assert_eq!(status.expires_at, 0, "{status:?}");
    }
    for (name, token) in [
        ("another session", &other_session),
        ("no session", &no_session),
        ("the value in sub, client_id and azp", &same_value_elsewhere),
    ] {
        let status = harness.check_token(token).await;
        assert!(!status.revoked, "{name}: {status:?}");
        assert_eq!(status.claim, "", "{name}: {status:?}");
    }
    let stats = harness.stats().await;
    assert_eq!(
        (stats.live_claim_cutoffs, stats.live_subject_cutoffs),
        (1, 0)
    );
}

/// `client_id` at T revokes `iat < T` only; an `azp` cut-off is another
/// claim's, applied to `azp` only.
async fn a_client_claim_cutoff_revokes_only_tokens_issued_before_it(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let cut_off = now - 100;
    let app = |jti: &str, iat: i64| token_with("carol", jti, iat, json!({"client_id": "app-1"}));
    let older = app("app-older", cut_off - 1);
    let at = app("app-at", cut_off);
    let newer = app("app-newer", cut_off + 50);
    let other_app = token_with("carol", "app-2", cut_off - 1, json!({"client_id": "app-2"}));
    let by_azp = token_with("carol", "azp-older", cut_off - 1, json!({"azp": "app-1"}));

    let reply = harness
        .revoke_claim("key-revoke", claim("client_id", "app-1", cut_off))
        .await
        .expect("client_id cut-off");
    assert_eq!(reply.not_before, cut_off);
    assert!(!reply.cursor.is_empty());

    let status = harness.check_token(&older).await;
    assert!(status.revoked && !status.by_subject, "{status:?}");
    assert_eq!(
        (status.claim.as_str(), status.not_before),
        ("client_id", cut_off)
    );
    for (name, token) in [
        ("iat == not_before", &at),
        ("iat after the cut-off", &newer),
        ("another client", &other_app),
        ("the value as azp", &by_azp),
    ] {
        let status = harness.check_token(token).await;
        assert!(!status.revoked, "{name}: {status:?}");
    }

    let reply = harness
        .revoke_claim("key-revoke", claim("azp", "app-1", cut_off))
        .await
        .expect("azp cut-off");
    assert_eq!(reply.not_before, cut_off);
    let status = harness.check_token(&by_azp).await;
    assert!(status.revoked && !status.by_subject, "{status:?}");
    assert_eq!((status.claim.as_str(), status.not_before), ("azp", cut_off));
    assert!(!harness.check_token(&newer).await.revoked);
    assert_eq!(harness.stats().await.live_claim_cutoffs, 2);
}

/// `*` revokes every token of the issuer issued before the cut-off,
/// whoever and whatever it was issued to; only an `admin` key may.
async fn an_issuer_wide_claim_cutoff_needs_admin_and_covers_earlier_tokens(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let cut_off = now - 100;

    for (key, code) in [
        ("key-revoke", Code::PermissionDenied),
        ("key-mixed", Code::PermissionDenied),
        ("key-read", Code::PermissionDenied),
        ("key-subscribe", Code::PermissionDenied),
        ("bogus", Code::Unauthenticated),
    ] {
        let status = harness
            .revoke_claim(key, claim("*", "", cut_off))
            .await
            .expect_err("issuer-wide needs admin");
        assert_eq!(status.code(), code, "{key}: {status:?}");
    }
    let status = harness
        .anonymous()
        .await
        .revoke_claim(claim("*", "", cut_off))
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        harness.stats().await.live_claim_cutoffs,
        0,
        "a refused cut-off is not stored"
    );
    let untouched = token_with("alice", "untouched", cut_off - 1, json!({}));
    assert!(!harness.check_token(&untouched).await.revoked);

    let reply = harness
        .revoke_claim("key-admin", claim("*", "", cut_off))
        .await
        .expect("admin may");
    assert_eq!(reply.not_before, cut_off);
    assert!(!reply.cursor.is_empty());

    let revoked = [
        token_with("alice", "wide-alice", cut_off - 1, json!({})),
        token_with("bob", "wide-bob", cut_off - 600, json!({"sid": "s"})),
        token_with(
            "svc",
            "wide-svc",
            cut_off - 30,
            json!({"client_id": "c", "azp": "c"}),
        ),
    ];
    for token in &revoked {
        let status = harness.check_token(token).await;
        assert!(status.revoked && !status.by_subject, "{status:?}");
        assert_eq!((status.claim.as_str(), status.not_before), ("*", cut_off));
        assert_eq!(status.revoked_by, "operator", "{status:?}");
    }
    for (name, iat) in [("at the cut-off", cut_off), ("after it", now)] {
        let token = token_with("alice", &format!("wide-{iat}"), iat, json!({"sid": "s"}));
        let status = harness.check_token(&token).await;
        assert!(!status.revoked, "{name}: {status:?}");
    }
    assert_eq!(harness.stats().await.live_claim_cutoffs, 1);
}

/// Unknown claims, a value with `*`, no value otherwise: refused with a
/// message saying what is allowed, and nothing stored.
async fn claim_cutoffs_refuse_bad_input_naming_the_allowed_claims(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut failures = Vec::new();
    let cases: [(&str, RevokeClaimRequest, &[&str]); 8] = [
        (
            "unknown claim",
            claim("email", "a@example.test", 0),
            &["email", "sub", "sid", "client_id", "azp", "`*`"],
        ),
        (
            "empty claim",
            claim("", "x", 0),
            &["sub", "sid", "client_id", "azp", "`*`"],
        ),
        (
            "a claim differing only in case",
            claim("SID", "x", 0),
            &["sid", "client_id"],
        ),
        ("a value with `*`", claim("*", "x", 0), &["`value`", "`*`"]),
        ("no value", claim("sid", "", 0), &["`value`", "empty"]),
        (
            "value too long",
            claim("client_id", &"v".repeat(300), 0),
            &["limit is 256"],
        ),
        (
            "value with a newline",
            claim("sid", "a\nb", 0),
            &["control"],
        ),
        (
            "cut-off in the future",
            claim("sid", "s", now + 3_600),
            &["future"],
        ),
    ];
    for (name, request, needles) in cases {
        match harness.revoke_claim("key-admin", request).await {
            Ok(reply) => failures.push(format!("{name}: accepted ({reply:?})")),
            Err(status)
                if status.code() != Code::InvalidArgument
                    || !needles.iter().all(|n| status.message().contains(n)) =>
            {
                failures.push(format!(
                    "{name}: {:?} {:?} (wanted InvalidArgument naming {needles:?})",
                    status.code(),
                    status.message()
                ));
            }
            Err(_) => {}
        }
    }
    let elsewhere = RevokeClaimRequest {
        issuer: "https://other.test".into(),
        ..claim("sid", "s", 0)
    };
    match harness.revoke_claim("key-admin", elsewhere).await {
        Err(status) if status.code() == Code::InvalidArgument => {}
        other => failures.push(format!("another issuer: {other:?}")),
    }
    assert!(failures.is_empty(), "bad input:\n{}", failures.join("\n"));
    let stats = harness.stats().await;
    assert_eq!(
        (stats.live_claim_cutoffs, stats.live_subject_cutoffs),
        (0, 0),
        "nothing was stored"
    );
}

/// As for subjects: a later cut-off replaces an earlier one (one record,
/// moved), an earlier or equal one changes nothing and logs nothing.
async fn a_later_claim_cutoff_wins_and_an_earlier_one_never_moves_it_back(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let first = harness
        .revoke_claim("key-revoke", claim("sid", "s-9", now - 100))
        .await
        .expect("first");
    assert_eq!(first.not_before, now - 100);
    assert!(!first.cursor.is_empty());
    for (name, not_before) in [("earlier", now - 200), ("equal", now - 100)] {
        let reply = harness
            .revoke_claim("key-revoke", claim("sid", "s-9", not_before))
            .await
            .expect(name);
        assert_eq!(
            reply.not_before,
            now - 100,
            "{name}: the later cut-off stays"
        );
        assert_eq!(reply.cursor, "", "{name}: nothing is logged");
    }
    let mid = token_with("dan", "s9-mid", now - 75, json!({"sid": "s-9"}));
    let old = token_with("dan", "s9-old", now - 150, json!({"sid": "s-9"}));
    assert!(!harness.check_token(&mid).await.revoked);
    let status = harness.check_token(&old).await;
    assert!(status.revoked, "{status:?}");
    assert_eq!(status.not_before, now - 100, "not moved back: {status:?}");

    let later = harness
        .revoke_claim("key-revoke", claim("sid", "s-9", now - 50))
        .await
        .expect("later");
    assert_eq!(later.not_before, now - 50);
    assert!(!later.cursor.is_empty());
    assert_ne!(later.cursor, first.cursor);
    let status = harness.check_token(&mid).await;
    assert!(status.revoked && status.claim == "sid", "{status:?}");
    assert_eq!(status.not_before, now - 50);

    // Issuer-wide, the same.
    let wide = harness
        .revoke_claim("key-admin", claim("*", "", now - 300))
        .await
        .expect("issuer-wide");
    assert_eq!(wide.not_before, now - 300);
    let earlier = harness
        .revoke_claim("key-admin", claim("*", "", now - 400))
        .await
        .expect("earlier issuer-wide");
    assert_eq!(
        (earlier.not_before, earlier.cursor.as_str()),
        (now - 300, "")
    );

    let listed = list_all(
        &mut harness.client("key-read").await,
        RecordFilter {
            kind: RecordKind::Claim.into(),
            ..Default::default()
        },
        100,
    )
    .await;
    let mut listed = claim_cutoffs(&listed);
    listed.dedup();
    assert_eq!(
        listed,
        [
            ("*".to_owned(), String::new(), now - 300),
            ("sid".to_owned(), "s-9".to_owned(), now - 50),
        ],
        "one record per claim value, at the latest cut-off"
    );
    assert_eq!(harness.stats().await.live_claim_cutoffs, 2);
}

/// `RevokeClaim` by `sub` is `RevokeSubject`: the same record, answered
/// `by_subject`, listed and counted as a subject cut-off.
async fn a_claim_cutoff_by_sub_is_the_subject_cutoff(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let reply = harness
        .revoke_claim("key-revoke", claim("sub", "erin", now - 100))
        .await
        .expect("sub cut-off");
    assert_eq!(reply.not_before, now - 100);
    let token = token_with("erin", "erin-old", now - 150, json!({}));
    let status = harness.check_token(&token).await;
    assert!(status.revoked && status.by_subject, "{status:?}");
    assert_eq!(
        (status.claim.as_str(), status.not_before),
        ("sub", now - 100)
    );

    let earlier = harness
        .client("key-revoke")
        .await
        .revoke_subject(subject("erin", now - 200))
        .await
        .expect("earlier subject cut-off")
        .into_inner();
    assert_eq!(
        (earlier.not_before, earlier.cursor.as_str()),
        (now - 100, ""),
        "RevokeSubject sees the cut-off RevokeClaim made"
    );
    let later = harness
        .client("key-revoke")
        .await
        .revoke_subject(subject("erin", now - 50))
        .await
        .expect("later subject cut-off")
        .into_inner();
    assert_eq!(later.not_before, now - 50);
    let back = harness
        .revoke_claim("key-revoke", claim("sub", "erin", now - 100))
        .await
        .expect("earlier sub cut-off");
    assert_eq!((back.not_before, back.cursor.as_str()), (now - 50, ""));

    let stats = harness.stats().await;
    assert_eq!(
        (stats.live_subject_cutoffs, stats.live_claim_cutoffs),
        (1, 0)
    );
    let mut reader = harness.client("key-read").await;
    let subjects = RecordFilter {
        kind: RecordKind::Subject.into(),
        ..Default::default()
    };
    let listed: Vec<String> = list_all(&mut reader, subjects, 100)
        .await
        .iter()
        .map(record_id)
        .collect();
    assert_eq!(listed, ["subject erin"]);
    let claims = RecordFilter {
        kind: RecordKind::Claim.into(),
        ..Default::default()
    };
    assert!(list_all(&mut reader, claims, 100).await.is_empty());
}

/// Listing by `RECORD_KIND_CLAIM` gives the claim cut-offs and nothing
/// else, with their provenance; the audit trail shows each change; the
/// stats count them apart from subject cut-offs.
async fn claim_cutoffs_are_listed_audited_and_counted(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    harness
        .client("key-revoke")
        .await
        .revoke(by_jti("listed-token", now + 600))
        .await
        .expect("token");
    harness
        .client("key-revoke")
        .await
        .revoke_subject(subject("grace", now - 10))
        .await
        .expect("subject");
    let cuts = [
        ("key-revoke", "sid", "s-1", now - 10),
        ("key-revoke", "client_id", "app", now - 20),
        ("key-mixed", "azp", "web", now - 30),
        ("key-admin", "*", "", now - 40),
    ];
    for (key, name, value, not_before) in cuts {
        let mut request = claim(name, value, not_before);
        request.reason = format!("cut {name}");
        harness
            .revoke_claim(key, request)
            .await
            .unwrap_or_else(|status| panic!("{name}: {status:?}"));
    }

    let mut reader = harness.client("key-read").await;
    let of_kind = |kind: RecordKind| RecordFilter {
        kind: kind.into(),
        ..Default::default()
    };
    let claims = list_all(&mut reader, of_kind(RecordKind::Claim), 100).await;
    let mut expected: Vec<(String, String, i64)> = cuts
        .iter()
        .map(|&(_, name, value, nbf)| (name.to_owned(), value.to_owned(), nbf))
        .collect();
    expected.sort();
    let mut listed = claim_cutoffs(&claims);
    listed.dedup();
    assert_eq!(listed, expected, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|r| matches!(r.record, Some(revocation_record::Record::Claim(_)))),
        "only claim cut-offs: {claims:?}"
    );
    let paged = claim_cutoffs(&list_all(&mut reader, of_kind(RecordKind::Claim), 1).await);
    let mut paged_unique = paged.clone();
    paged_unique.dedup();
    assert_eq!(paged_unique, expected, "pages of one list the same");

    let leeway = revocd::bounds::DEFAULT_LEEWAY_SECONDS as i64;
    let lifetime = revocd::bounds::DEFAULT_MAX_TOKEN_LIFETIME.as_secs() as i64;
    for record in &claims {
        let Some(revocation_record::Record::Claim(ClaimRevocation {
            issuer,
            claim,
            value,
            not_before,
            keep_until,
        })) = &record.record
        else {
            unreachable!("checked above");
        };
        assert_eq!(issuer, ISSUER);
        assert_eq!(
            *keep_until,
            not_before + lifetime + leeway,
            "{claim} {value}: kept while a token it covers may live"
        );
        let (key, ..) = cuts.iter().find(|c| c.1 == claim).expect("a cut-off made");
        let actor = match *key {
            "key-revoke" => "auth-server",
            "key-mixed" => "mixed",
            _ => "operator",
        };
        assert_eq!(record.actor, actor, "{record:?}");
        assert_eq!(record.reason, format!("cut {claim}"));
        assert!(record.source.starts_with("127.0.0.1:"), "{record:?}");
        assert!(
            (now..=unix_now()).contains(&record.revoked_at),
            "{record:?}"
        );
    }

    let kinds_of = |records: &[RevocationRecord]| {
        let mut ids: Vec<String> = records.iter().map(record_id).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let subjects = list_all(&mut reader, of_kind(RecordKind::Subject), 100).await;
    assert_eq!(kinds_of(&subjects), ["subject grace"]);
    let tokens = list_all(&mut reader, of_kind(RecordKind::Token), 100).await;
    assert_eq!(kinds_of(&tokens), ["token listed-token"]);
    let everything = list_all(&mut reader, RecordFilter::default(), 100).await;
    assert_eq!(kinds_of(&everything).len(), 6, "{everything:?}");
    let by_operator = RecordFilter {
        actor: "operator".into(),
        ..of_kind(RecordKind::Claim)
    };
    assert_eq!(
        kinds_of(&list_all(&mut reader, by_operator, 100).await),
        ["* "]
    );
    let of_subject = RecordFilter {
        subject: "s-1".into(),
        ..Default::default()
    };
    assert!(
        list_all(&mut reader, of_subject, 100).await.is_empty(),
        "a claim's value is not a subject"
    );

    let stats = harness.stats().await;
    assert_eq!(
        (
            stats.live_revocations,
            stats.live_subject_cutoffs,
            stats.live_claim_cutoffs
        ),
        (1, 1, 4)
    );

    // The audit trail: every change in order, then only the claim ones.
    let audit = |filter: RecordFilter| {
        let mut reader = reader.clone();
        async move {
            let mut changes = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = ListChangesRequest {
                    filter: Some(filter.clone()),
                    page_size: 2,
                    page_token,
                };
                let page = reader
                    .list_changes(request)
                    .await
                    .expect("audit")
                    .into_inner();
                changes.extend(page.changes);
                if page.next_page_token.is_empty() {
                    return changes;
                }
                page_token = page.next_page_token;
            }
        }
    };
    let since = RecordFilter {
        since: now - 5,
        ..Default::default()
    };
    let seen: Vec<(String, String)> = audit(since.clone())
        .await
        .iter()
        .map(|change| {
            let record = change.record.as_ref().expect("record");
            (record_id(record), record.actor.clone())
        })
        .collect();
    let expected_trail = [
        ("token listed-token", "auth-server"),
        ("subject grace", "auth-server"),
        ("sid s-1", "auth-server"),
        ("client_id app", "auth-server"),
        ("azp web", "mixed"),
        ("* ", "operator"),
    ]
    .map(|(id, actor)| (id.to_owned(), actor.to_owned()));
    assert_eq!(seen, expected_trail);
    let claim_changes = audit(RecordFilter {
        kind: RecordKind::Claim.into(),
        ..since
    })
    .await;
    let claim_trail: Vec<String> = claim_changes
        .iter()
        .map(|c| record_id(c.record.as_ref().expect("record")))
        .collect();
    assert_eq!(claim_trail, ["sid s-1", "client_id app", "azp web", "* "]);
    match claim_changes[0]
        .record
        .as_ref()
        .and_then(|r| r.record.clone())
    {
        Some(revocation_record::Record::Claim(c)) => {
            assert_eq!((c.issuer.as_str(), c.not_before), (ISSUER, now - 10));
        }
        other => panic!("the sid cut-off's change: {other:?}"),
    }
}

/// Cut-off records of a subject and of another claim are named alike
/// (`<issuer>:<subject>` and `<issuer>:<claim>:<value>`, length-prefixed):
/// a subject spelled like a claim's name never stands for that claim's
/// cut-off, nor the reverse.
async fn a_subject_named_like_a_claim_cutoff_is_no_claim_cutoff(backend: Backend) {
    let harness = Harness::start(backend).await;
    let now = unix_now();
    let mut revoker = harness.client("key-revoke").await;
    revoker
        .revoke_subject(subject("3:sid:sess-x", now - 100))
        .await
        .expect("subject cut-off");
    harness
        .revoke_claim("key-revoke", claim("sid", "sess-y", now - 100))
        .await
        .expect("sid cut-off");

    let session_x = token_with("alice", "look-1", now - 150, json!({"sid": "sess-x"}));
    let subject_y = token_with("3:sid:sess-y", "look-2", now - 150, json!({}));
    for (name, token) in [
        ("sid sess-x (a subject cut-off's look-alike)", &session_x),
        (
            "subject 3:sid:sess-y (a sid cut-off's look-alike)",
            &subject_y,
        ),
    ] {
        let status = harness.check_token(token).await;
        assert!(!status.revoked, "{name}: {status:?}");
    }
    let subject_x = token_with("3:sid:sess-x", "look-3", now - 150, json!({}));
    let status = harness.check_token(&subject_x).await;
    assert!(status.revoked && status.by_subject, "{status:?}");
    let session_y = token_with("bob", "look-4", now - 150, json!({"sid": "sess-y"}));
    let status = harness.check_token(&session_y).await;
    assert!(status.revoked && status.claim == "sid", "{status:?}");

    let mut reader = harness.client("key-read").await;
    let mut ids: Vec<String> = list_all(&mut reader, RecordFilter::default(), 100)
        .await
        .iter()
        .map(record_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["sid sess-y", "subject 3:sid:sess-x"]);
    let stats = harness.stats().await;
    assert_eq!(
        (stats.live_subject_cutoffs, stats.live_claim_cutoffs),
        (1, 1)
    );
}

/// Runs each named test once per backend.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Redis).await })*
        }
        mod cluster {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Cluster).await })*
        }
    };
}

on_every_backend!(
    a_token_revokes_itself_and_check_sees_it,
    revoking_twice_changes_nothing_the_second_time,
    concurrent_revocations_each_get_their_own_outcome,
    a_revocation_records_who_and_why,
    an_expired_token_needs_no_revocation,
    a_subject_cutoff_revokes_only_older_tokens,
    a_later_cutoff_replaces_an_earlier_one_never_the_reverse,
    a_cutoff_of_now_covers_the_whole_current_second,
    an_explicit_cutoff_keeps_tokens_issued_at_it,
    stats_count_live_records,
    every_call_is_authorised_by_role,
    bad_input_gets_a_clear_error,
    an_oversize_message_is_refused,
    a_batch_stores_good_items_and_reports_bad_ones,
    listings_page_through_every_record_and_filter,
    the_audit_trail_shows_every_change_in_order,
    quotas_refuse_only_the_key_over_them,
    a_sid_claim_cutoff_revokes_that_session_only,
    a_client_claim_cutoff_revokes_only_tokens_issued_before_it,
    an_issuer_wide_claim_cutoff_needs_admin_and_covers_earlier_tokens,
    claim_cutoffs_refuse_bad_input_naming_the_allowed_claims,
    a_later_claim_cutoff_wins_and_an_earlier_one_never_moves_it_back,
    a_claim_cutoff_by_sub_is_the_subject_cutoff,
    claim_cutoffs_are_listed_audited_and_counted,
    a_subject_named_like_a_claim_cutoff_is_no_claim_cutoff,
);

/// The wire contract (`ClaimCutoff` in the proto) says an array claim
/// matches when any of its string elements does: a token whose `sid` or
/// `client_id` is an array holding the cut-off value is revoked.
#[tokio::test]
async fn an_array_claim_is_cut_off_by_any_of_its_values() {
    let harness = Harness::start(Backend::Memory).await;
    let now = unix_now();
    for (name, value) in [("sid", "arr-s"), ("client_id", "arr-c")] {
        harness
            .revoke_claim("key-revoke", claim(name, value, now))
            .await
            .expect("cut-off");
    }
    let sessions = token_with("ann", "arr-1", now - 30, json!({"sid": ["other", "arr-s"]}));
    let clients = token_with("ann", "arr-2", now - 30, json!({"client_id": ["arr-c"]}));
    let neither = token_with("ann", "arr-3", now - 30, json!({"sid": ["x", "y"]}));
    for (name, token, revoked_by) in [
        ("sid", &sessions, "sid"),
        ("client_id", &clients, "client_id"),
    ] {
        let status = harness.check_token(token).await;
        assert!(status.revoked, "{name} array holding the value: {status:?}");
        assert_eq!(status.claim, revoked_by);
    }
    assert!(!harness.check_token(&neither).await.revoked);
}
