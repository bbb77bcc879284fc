//! The gateway library against real servers over real gRPC: the streamed
//! filter, propagation between replicas through Redis, failover, the stale
//! policies, the tower layer, and resuming with deltas after a reconnect.

mod support;

use std::time::Duration;

use revocd::backoff::ExponentialBackoff;
use revocd::gateway::{Denial, Gateway, GatewayConfig, RevocationLayer, StalePolicy, Verdict};
use revocd::pb::{CheckRequest, RevokeClaimRequest, RevokeRequest, RevokeSubjectRequest};
use revocd::time::unix_now;
use revocd::tokens::{Claims, TokenError};
use serde_json::json;
use support::{eventually, token_for, token_with, Deployment, RedisServer, TestServer, ISSUER};

/// Bound on anything that should happen "soon" (a delta, a reconnect).
const SOON: Duration = Duration::from_secs(10);

fn url(server: &TestServer) -> String {
    format!("http://{}", server.address)
}

/// A gateway config for `servers` with the subscribe key and a short,
/// unjittered backoff.
fn config(servers: &[&TestServer]) -> GatewayConfig {
    support::gateway_config(servers.iter().map(|s| url(s))).gateway_id("gateway-test")
}

/// Spawns a gateway and waits for its first snapshot.
async fn ready(config: GatewayConfig) -> Gateway {
    let gateway = Gateway::spawn(config, support::verifier()).expect("gateway");
    assert!(
        gateway.ready(SOON).await,
        "the gateway got no snapshot within {SOON:?}"
    );
    gateway
}

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `gateway` judges `token` `expected` with `check_confirmed`.
async fn until_confirmed(gateway: &Gateway, token: &str, expected: Verdict) {
    eventually(
        &format!("check_confirmed = {expected:?}"),
        SOON,
        POLL,
        || {
            let expected = expected.clone();
            async move {
                let verdict = gateway.check_confirmed(token).await;
                if verdict == expected {
                    Ok(())
                } else {
                    Err(verdict)
                }
            }
        },
    )
    .await;
}

/// Waits until `gateway`'s filter has stopped allowing `token` from memory.
async fn until_not_allowed(gateway: &Gateway, token: &str) {
    eventually(
        "check to stop allowing the token",
        SOON,
        POLL,
        || async move {
            match gateway.check(token) {
                verdict @ Verdict::Allow(_) => Err(verdict),
                _ => Ok(()),
            }
        },
    )
    .await;
}

/// Waits until `gateway` has had no frame for more than `staleness`.
async fn until_stale(gateway: &Gateway, staleness: Duration) {
    eventually(
        &format!("staleness > {staleness:?}"),
        SOON,
        POLL,
        || async move {
            match gateway.staleness() {
                Some(s) if s > staleness => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
}

async fn revoke(server: &TestServer, token: &str) {
    let reply = server
        .client(Some("key-revoke"))
        .await
        .revoke(RevokeRequest {
            token: token.to_owned(),
            ..Default::default()
        })
        .await
        .expect("revoke")
        .into_inner();
    assert!(reply.newly_revoked, "{reply:?}");
}

/// Cuts `subject` off at `not_before` (0: now); returns the cut-off in
/// force.
async fn revoke_subject(server: &TestServer, subject: &str, not_before: i64) -> i64 {
    server
        .client(Some("key-revoke"))
        .await
        .revoke_subject(RevokeSubjectRequest {
            subject: subject.to_owned(),
            not_before,
            ..Default::default()
        })
        .await
        .expect("revoke subject")
        .into_inner()
        .not_before
}

/// Starts two replicas of `deployment` on one Redis.
async fn two_replicas(redis: &RedisServer, deployment: &Deployment) -> (TestServer, TestServer) {
    let args = deployment.args(&["--redis-url", &redis.url()]);
    (
        TestServer::start(&args).await,
        TestServer::start(&args).await,
    )
}

/// A token of `subject` with the given `iat`, valid an hour from now.
fn token_issued_at(subject: &str, jti: &str, issued_at: i64) -> String {
    support::sign(&json!({
        "iss": ISSUER, "sub": subject, "jti": jti, "iat": issued_at, "exp": unix_now() + 3600,
    }))
}

fn allowed(verdict: &Verdict) -> Option<&Claims> {
    match verdict {
        Verdict::Allow(claims) => Some(claims),
        _ => None,
    }
}

/// Recent (delta-applied, not yet merged) digests of the gateway's view: a
/// snapshot starts with none, each delta adds its digests.
fn recent_digests(gateway: &Gateway) -> usize {
    let view = gateway.view().expect("a view");
    let debug = format!("{view:?}");
    let count = debug
        .split("recent: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok());
    count.unwrap_or_else(|| panic!("no recent count in {debug}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_denied_once_its_delta_arrives() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;

    let token = token_for("alice", "gateway-revoked");
    let other = token_for("alice", "gateway-kept");
    let claims = allowed(&gateway.check(&token))
        .cloned()
        .expect("a fresh token is allowed");
    assert_eq!(claims.jti.as_deref(), Some("gateway-revoked"));
    assert_eq!(claims.subject.as_deref(), Some("alice"));
    assert_eq!(claims.issuer, ISSUER);

    revoke(&server, &token).await;
    until_confirmed(&gateway, &token, Verdict::Deny(Denial::Revoked)).await;
    let from_memory = gateway.check(&token);
    assert!(
        matches!(
            from_memory,
            Verdict::Confirm(_) | Verdict::Deny(Denial::Revoked)
        ),
        "{from_memory:?}"
    );

    assert!(allowed(&gateway.check(&other)).is_some());
    assert!(allowed(&gateway.check_confirmed(&other).await).is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_go_to_the_confirm_endpoints() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let other = TestServer::start(&deployment.args(&[])).await;
    let to_other = ready(config(&[&server]).confirm_endpoints([url(&other)])).await;
    let token = token_for("alice", "confirmed-elsewhere");
    revoke(&server, &token).await;
    until_not_allowed(&to_other, &token).await;
    // The other server shares no store: it has never heard of the token.
    let verdict = to_other.check_confirmed(&token).await;
    assert!(allowed(&verdict).is_some(), "{verdict:?}");

    other.stop().await;
    let token = token_for("alice", "confirmed-nowhere");
    revoke(&server, &token).await;
    until_not_allowed(&to_other, &token).await;
    let verdict = to_other.check_confirmed(&token).await;
    assert!(
        matches!(verdict, Verdict::Deny(Denial::Unconfirmed(_))),
        "{verdict:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_cutoff_denies_older_tokens_from_memory() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;

    let now = unix_now();
    let older = token_issued_at("alice", "alice-older", now - 30);
    let newer = token_issued_at("alice", "alice-newer", now + 1);
    let bob = token_issued_at("bob", "bob-older", now - 30);
    assert!(allowed(&gateway.check(&older)).is_some());

    revoke_subject(&server, "alice", now).await;
    eventually("alice's older token to be refused", SOON, POLL, || {
        let older = older.as_str();
        let gateway = &gateway;
        async move {
            match gateway.check(older) {
                Verdict::Deny(Denial::RevokedBySubject) => Ok(()),
                other => Err(other),
            }
        }
    })
    .await;

    let newer_verdict = gateway.check(&newer);
    assert!(allowed(&newer_verdict).is_some(), "{newer_verdict:?}");
    let bob_verdict = gateway.check(&bob);
    assert!(allowed(&bob_verdict).is_some(), "{bob_verdict:?}");
    server.stop().await;
}

/// `not_before = 0` cuts off every token issued up to and including the
/// second of the call, even one issued in that second after the call; a
/// token of the next second is a new login and is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutoff_of_now_denies_tokens_of_its_own_second() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;

    let before = unix_now();
    let same_second = token_issued_at("nora", "nora-same-second", before);
    assert!(allowed(&gateway.check(&same_second)).is_some());
    let cut_off = revoke_subject(&server, "nora", 0).await;
    assert!(
        cut_off > before,
        "the cut-off {cut_off} must cover the call's second {before}"
    );
    let last_covered = token_issued_at("nora", "nora-last-covered", cut_off - 1);
    let next_second = token_issued_at("nora", "nora-next-second", cut_off);
    eventually(
        "nora's token of the logout's second to be refused",
        SOON,
        POLL,
        || {
            let gateway = &gateway;
            let same_second = same_second.as_str();
            async move {
                match gateway.check(same_second) {
                    Verdict::Deny(Denial::RevokedBySubject) => Ok(()),
                    other => Err(other),
                }
            }
        },
    )
    .await;
    let view = gateway.view().expect("view");
    assert_eq!(
        view.subject_cutoff(&view.digest_key().subject(ISSUER, "nora")),
        Some(cut_off)
    );
    assert_eq!(
        gateway.check(&last_covered),
        Verdict::Deny(Denial::RevokedBySubject)
    );
    let verdict = gateway.check_confirmed(&next_second).await;
    assert!(allowed(&verdict).is_some(), "{verdict:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_cannot_be_accepted_are_denied() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;
    let now = unix_now();

    let expired = support::sign(&json!({
        "iss": ISSUER, "sub": "alice", "jti": "expired", "iat": now - 7200, "exp": now - 3600,
    }));
    assert_eq!(gateway.check(&expired), Verdict::Deny(Denial::Expired));
    assert_eq!(
        gateway.check_confirmed(&expired).await,
        Verdict::Deny(Denial::Expired)
    );

    // Within the leeway: still accepted.
    let just_expired = support::sign(&json!({
        "iss": ISSUER, "sub": "alice", "jti": "just-expired", "iat": now - 600, "exp": now - 5,
    }));
    let verdict = gateway.check(&just_expired);
    assert!(allowed(&verdict).is_some(), "{verdict:?}");

    let forged = support::sign_with(
        &json!({"iss": ISSUER, "sub": "alice", "jti": "forged", "iat": now, "exp": now + 3600}),
        "not-the-deployment-secret",
    );
    assert_eq!(
        gateway.check(&forged),
        Verdict::Deny(Denial::Invalid(TokenError::BadSignature))
    );
    let garbage = gateway.check("not-a-jwt");
    assert!(
        matches!(garbage, Verdict::Deny(Denial::Invalid(ref e)) if e.is_malformed()),
        "{garbage:?}"
    );
    let stranger = support::sign(&json!({
        "iss": "https://elsewhere.test", "sub": "alice", "jti": "stranger", "iat": now, "exp": now + 3600,
    }));
    assert_eq!(
        gateway.check(&stranger),
        Verdict::Deny(Denial::Invalid(TokenError::WrongIssuer))
    );

    let no_jti = support::sign(&json!({
        "iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 3600,
    }));
    assert_eq!(gateway.check(&no_jti), Verdict::Deny(Denial::NoJti));
    assert_eq!(
        gateway.check_confirmed(&no_jti).await,
        Verdict::Deny(Denial::NoJti)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_another_replica_reaches_the_gateway() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let (a, b) = two_replicas(&redis, &deployment).await;
    let gateway = ready(config(&[&a])).await;

    let token = token_for("alice", "through-b");
    let other = token_for("alice", "not-revoked");
    assert!(allowed(&gateway.check(&token)).is_some());

    revoke(&b, &token).await;
    until_not_allowed(&gateway, &token).await;
    until_confirmed(&gateway, &token, Verdict::Deny(Denial::Revoked)).await;
    assert!(allowed(&gateway.check_confirmed(&other).await).is_some());

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_fails_over_with_deltas_and_misses_no_revocation() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let (a, b) = two_replicas(&redis, &deployment).await;
    let gateway = ready(config(&[&a, &b])).await;
    let first_generation = gateway.view().expect("view").generation();

    let token = token_for("alice", "during-failover");
    let other = token_for("alice", "kept-through-failover");
    assert!(allowed(&gateway.check(&token)).is_some());

    a.stop().await;
    revoke(&b, &token).await;
    until_confirmed(&gateway, &token, Verdict::Deny(Denial::Revoked)).await;

    // It follows B now, fresh, having resumed A's filter with B's deltas:
    // the replicas share the change log, so no snapshot was needed.
    until_not_allowed(&gateway, &token).await;
    assert_eq!(
        gateway.view().expect("view").generation(),
        first_generation,
        "a snapshot replaced the filter"
    );
    assert_eq!(
        gateway.snapshots_applied(),
        1,
        "failed over with a snapshot instead of deltas"
    );
    let staleness = gateway.staleness().expect("frames arrived");
    assert!(staleness < Duration::from_secs(5), "{staleness:?}");
    assert!(allowed(&gateway.check_confirmed(&other).await).is_some());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_policies_apply_when_the_server_is_gone() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "50ms"])).await;
    let max_staleness = Duration::from_millis(300);
    let gateway = |policy| {
        config(&[&server])
            .max_staleness(max_staleness)
            .idle_timeout(Duration::from_millis(200))
            .on_stale(policy)
    };
    let fail_closed = ready(gateway(StalePolicy::FailClosed)).await;
    let check_online = ready(gateway(StalePolicy::CheckOnline)).await;
    let fail_open = ready(gateway(StalePolicy::FailOpen)).await;

    let valid = token_for("alice", "valid-through-outage");
    let revoked = token_for("alice", "revoked-before-outage");
    revoke(&server, &revoked).await;
    for gateway in [&fail_closed, &check_online, &fail_open] {
        until_not_allowed(gateway, &revoked).await;
        // Fresh: every policy answers from the filter.
        let verdict = gateway.check(&valid);
        assert!(allowed(&verdict).is_some(), "{verdict:?}");
    }

    server.stop().await;
    for gateway in [&fail_closed, &check_online, &fail_open] {
        until_stale(gateway, max_staleness).await;
    }
    // Every confirmation below must fail fast, not hang.
    let confirmed = |gateway: &Gateway, token: &str| {
        let (gateway, token) = (gateway.clone(), token.to_owned());
        async move {
            tokio::time::timeout(SOON, gateway.check_confirmed(&token))
                .await
                .expect("check_confirmed returns while the server is gone")
        }
    };

    assert_eq!(fail_closed.check(&valid), Verdict::Deny(Denial::Stale));
    assert_eq!(fail_closed.check(&revoked), Verdict::Deny(Denial::Stale));
    assert_eq!(
        confirmed(&fail_closed, &valid).await,
        Verdict::Deny(Denial::Stale)
    );

    let verdict = check_online.check(&valid);
    assert!(
        matches!(verdict, Verdict::Confirm(ref c) if c.jti.as_deref() == Some("valid-through-outage")),
        "{verdict:?}"
    );
    let verdict = confirmed(&check_online, &valid).await;
    assert!(
        matches!(verdict, Verdict::Deny(Denial::Unconfirmed(_))),
        "{verdict:?}"
    );

    let verdict = fail_open.check(&valid);
    assert!(allowed(&verdict).is_some(), "{verdict:?}");
    let verdict = fail_open.check(&revoked);
    assert!(matches!(verdict, Verdict::Confirm(_)), "{verdict:?}");
    let verdict = confirmed(&fail_open, &revoked).await;
    assert!(
        matches!(verdict, Verdict::Deny(Denial::Unconfirmed(_))),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_layer_lets_through_only_allowed_requests() {
    use tower::{Layer, ServiceExt};

    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;
    let service = RevocationLayer::new(gateway.clone()).layer(tower::service_fn(
        |request: http::Request<String>| async move {
            let subject = request
                .extensions()
                .get::<Claims>()
                .map(|c| c.subject.clone().unwrap_or_default())
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(format!("hello {subject}")))
        },
    ));
    let call = |authorization: Option<String>| {
        let service = service.clone();
        async move {
            let mut request = http::Request::builder().uri("/hello");
            if let Some(value) = authorization {
                request = request.header(http::header::AUTHORIZATION, value);
            }
            let request = request.body(String::new()).expect("request");
            service.oneshot(request).await.expect("infallible")
        }
    };
    let challenge = |response: &http::Response<String>| {
        response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("ascii challenge").to_owned())
    };

    let token = token_for("alice", "layer-token");
    let response = call(Some(format!("Bearer {token}"))).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.into_body(), "hello alice");

    let response = call(None).await;
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&response).as_deref(), Some("Bearer"));
    assert_eq!(response.into_body(), "");

    let forged = support::sign_with(
        &json!({"iss": ISSUER, "sub": "alice", "jti": "x", "iat": unix_now(), "exp": unix_now() + 60}),
        "not-the-deployment-secret",
    );
    let response = call(Some(format!("Bearer {forged}"))).await;
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
    let header = challenge(&response).expect("a challenge");
    assert!(header.contains("error=\"invalid_token\""), "{header}");

    revoke(&server, &token).await;
    until_not_allowed(&gateway, &token).await;
    let response = call(Some(format!("Bearer {token}"))).await;
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
    let header = challenge(&response).expect("a challenge");
    assert!(header.starts_with("Bearer "), "{header}");
    assert!(header.contains("error=\"invalid_token\""), "{header}");
    assert!(header.contains("revoked"), "{header}");
    assert_eq!(response.into_body(), "");
    server.stop().await;
}

/// A gateway whose stream goes silent (no heartbeat for 30 s, idle timeout
/// 200 ms, 300 ms away after each drop) reconnects over and over. Revokes a
/// token while it is away, `rounds` times, and checks that each arrives as a
/// delta on the resumed stream, never in a new snapshot (a snapshot folds
/// every digest into the base, leaving no recent ones).
async fn revocations_while_away_arrive_as_deltas(server: &TestServer, rounds: usize) {
    let idle_timeout = Duration::from_millis(200);
    let gateway = ready(
        config(&[server]).idle_timeout(idle_timeout).backoff(
            ExponentialBackoff::try_new(
                Duration::from_millis(300),
                Duration::from_millis(300),
                0.0,
            )
            .expect("valid backoff"),
        ),
    )
    .await;
    let generation = gateway.view().expect("view").generation();
    assert_eq!(
        recent_digests(&gateway),
        0,
        "a snapshot has no recent digests"
    );

    let mut revoked = Vec::new();
    for round in 0..rounds {
        // Past the idle timeout: the gateway has dropped the stream and
        // waits out its backoff before resubscribing.
        until_stale(&gateway, idle_timeout + Duration::from_millis(50)).await;
        let token = token_for("alice", &format!("while-away-{round}"));
        revoke(server, &token).await;
        until_not_allowed(&gateway, &token).await;
        revoked.push(token);

        let view = gateway.view().expect("view");
        assert_eq!(view.generation(), generation, "{view:?}");
        assert_eq!(
            recent_digests(&gateway),
            revoked.len(),
            "round {round}: a snapshot replaced the deltas: {view:?}"
        );
    }
    for token in &revoked {
        until_confirmed(&gateway, token, Verdict::Deny(Denial::Revoked)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_gateway_resumes_with_deltas() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "30s"])).await;
    // A change before the gateway subscribes: its cursor is a logged one.
    revoke(&server, &token_for("alice", "before-the-gateway")).await;
    revocations_while_away_arrive_as_deltas(&server, 3).await;
    server.stop().await;
}

/// The same with an empty change log when the gateway subscribes: its
/// cursor is then the log's origin ("0" in memory, "0-0" in Redis), which is
/// no entry of the hub's history, yet every change since is retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_subscribed_to_an_empty_log_resumes_with_deltas() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "30s"])).await;
    revocations_while_away_arrive_as_deltas(&server, 1).await;
    server.stop().await;
}

/// With Redis, the live scan reads the cut-offs of each page of the cut-off
/// index with one pipeline; with no live cut-off the pipeline is empty,
/// which redis-rs refuses ("empty command"). The load must still complete,
/// or a deployment that never cut off a subject would never serve a filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_replica_without_subject_cutoffs_serves_subscribers() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--redis-url", &redis.url()])).await;
    let gateway = Gateway::spawn(config(&[&server]), support::verifier()).expect("gateway");
    assert!(
        gateway.ready(SOON).await,
        "no snapshot within {SOON:?}: the replica's filter never loaded"
    );
    let token = token_for("alice", "no-cutoffs");
    revoke(&server, &token).await;
    until_confirmed(&gateway, &token, Verdict::Deny(Denial::Revoked)).await;
    server.stop().await;
}

/// `CheckOnline` is documented as correct while stale ("asks the server
/// about every token"), but a stale `check` returns `Confirm` before looking
/// at the subject cut-off, and `confirm` asks the server by `jti` only, which
/// cannot see cut-offs: a token of a cut-off subject is allowed although
/// the gateway's own view holds the cut-off and the server knows it (and,
/// with no view, although the server knows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn check_online_sees_subject_cutoffs_while_stale() {
    support::trace_init();
    let deployment = Deployment::new();
    // Heartbeats every minute: the stream is alive but silent, so the
    // gateway counts as stale soon after its snapshot.
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "60s"])).await;
    let now = unix_now();
    let older = token_issued_at("alice", "alice-before-cutoff", now - 30);
    revoke_subject(&server, "alice", now).await;

    let max_staleness = Duration::from_millis(100);
    let gateway = ready(
        config(&[&server])
            .max_staleness(max_staleness)
            .idle_timeout(Duration::from_secs(120))
            .on_stale(StalePolicy::CheckOnline),
    )
    .await;
    let view = gateway.view().expect("view");
    assert_eq!(
        view.subject_cutoff(&view.digest_key().subject(ISSUER, "alice")),
        Some(now),
        "the snapshot carries alice's cut-off"
    );
    until_stale(&gateway, max_staleness).await;

    let verdict = gateway.check_confirmed(&older).await;
    assert_eq!(
        verdict,
        Verdict::Deny(Denial::RevokedBySubject),
        "a token issued before its subject's cut-off must not be allowed"
    );

    // No view at all (this key may `Check` but not `Subscribe`, as when the
    // stream cannot be had but the server answers): only the server knows
    // the cut-off, and `Check` by jti does not consult it.
    let streamless = Gateway::spawn(
        config(&[&server])
            .api_key("key-read")
            .expect("ascii key")
            .on_stale(StalePolicy::CheckOnline),
        support::verifier(),
    )
    .expect("gateway");
    assert!(streamless.view().is_none());
    let verdict = streamless.check_confirmed(&older).await;
    assert_eq!(
        verdict,
        Verdict::Deny(Denial::RevokedBySubject),
        "the server knows the cut-off; a confirmation must consult it"
    );
    server.stop().await;
}

// === claim cut-offs (`RevokeClaim`) ===

/// Cuts off the tokens whose `claim` is `value` at `not_before` (0: now)
/// with `key`; returns the cut-off in force.
async fn revoke_claim(
    server: &TestServer,
    key: &str,
    claim: &str,
    value: &str,
    not_before: i64,
) -> i64 {
    server
        .client(Some(key))
        .await
        .revoke_claim(RevokeClaimRequest {
            claim: claim.to_owned(),
            value: value.to_owned(),
            not_before,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("revoke claim {claim} {value:?}: {status:?}"))
        .into_inner()
        .not_before
}

/// Waits until `gateway` judges `token` `expected` from memory (`check`).
async fn until_checked(gateway: &Gateway, token: &str, expected: Verdict) {
    eventually(&format!("check = {expected:?}"), SOON, POLL, || {
        let expected = expected.clone();
        async move {
            let verdict = gateway.check(token);
            if verdict == expected {
                Ok(())
            } else {
                Err(verdict)
            }
        }
    })
    .await;
}

fn by_claim(claim: &str) -> Verdict {
    Verdict::Deny(Denial::RevokedByClaim(claim.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sid_claim_cutoff_denies_that_session_and_no_other() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;

    let now = unix_now();
    let session = token_with("alice", "sid-1-old", now - 30, json!({"sid": "sid-1"}));
    let other_session = token_with("alice", "sid-2-old", now - 30, json!({"sid": "sid-2"}));
    let no_session = token_with("alice", "no-sid-old", now - 30, json!({}));
    let value_as_client = token_with("alice", "cid-old", now - 30, json!({"client_id": "sid-1"}));
    assert!(allowed(&gateway.check(&session)).is_some());

    let cut_off = revoke_claim(&server, "key-revoke", "sid", "sid-1", 0).await;
    assert!(cut_off > now, "a cut-off of now covers the current second");
    let next_login = token_with("alice", "sid-1-new", cut_off, json!({"sid": "sid-1"}));
    until_checked(&gateway, &session, by_claim("sid")).await;

    let view = gateway.view().expect("view");
    let digest = view.digest_key().claim(ISSUER, "sid", "sid-1");
    assert_eq!(view.claim_cutoff("sid", &digest), Some(cut_off));
    assert_eq!(
        gateway.check_confirmed(&session).await,
        by_claim("sid"),
        "confirmed the same"
    );
    for (name, token) in [
        ("another session", &other_session),
        ("no session", &no_session),
        ("the value as client_id", &value_as_client),
        ("the session's next login", &next_login),
    ] {
        let verdict = gateway.check(token);
        assert!(allowed(&verdict).is_some(), "{name}: {verdict:?}");
        let verdict = gateway.check_confirmed(token).await;
        assert!(allowed(&verdict).is_some(), "{name}: {verdict:?}");
    }
    server.stop().await;
}

/// A claim the deployment made revocable (`--revocable-claim groups`):
/// the gateway was built knowing nothing of it, learns it from the first
/// cut-off it receives, and denies a token whose array holds the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_own_array_claim_is_enforced_once_its_first_cutoff_arrives() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--revocable-claim", "groups"])).await;
    let gateway = ready(config(&[&server])).await;

    let now = unix_now();
    let in_ops = token_with(
        "ops-1",
        "ops-1",
        now - 30,
        json!({"groups": ["admins", "ops"]}),
    );
    let in_dev = token_with("dev-1", "dev-1", now - 30, json!({"groups": ["dev"]}));
    let no_groups = token_with("none-1", "none-1", now - 30, json!({}));
    assert!(allowed(&gateway.check(&in_ops)).is_some());

    revoke_claim(&server, "key-revoke", "groups", "ops", 0).await;
    until_checked(&gateway, &in_ops, by_claim("groups")).await;
    for (name, token) in [("another group", &in_dev), ("no groups", &no_groups)] {
        let verdict = gateway.check(token);
        assert!(allowed(&verdict).is_some(), "{name}: {verdict:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_wide_claim_cutoff_denies_every_earlier_token() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let gateway = ready(config(&[&server])).await;

    let now = unix_now();
    let earlier = [
        token_with("alice", "wide-alice", now - 30, json!({})),
        token_with("bob", "wide-bob", now - 3000, json!({"sid": "b"})),
        token_with("svc", "wide-svc", now - 1, json!({"client_id": "c"})),
    ];
    let at_cutoff = token_with("carol", "wide-carol", now, json!({}));
    for token in &earlier {
        assert!(allowed(&gateway.check(token)).is_some());
    }
    let cut_off = revoke_claim(&server, "key-admin", "*", "", now).await;
    assert_eq!(cut_off, now);
    for token in &earlier {
        until_checked(&gateway, token, by_claim("*")).await;
        assert_eq!(gateway.check_confirmed(token).await, by_claim("*"));
    }
    let verdict = gateway.check_confirmed(&at_cutoff).await;
    assert!(allowed(&verdict).is_some(), "iat == cut-off: {verdict:?}");
    let view = gateway.view().expect("view");
    assert_eq!(view.claims_cut().collect::<Vec<_>>(), ["*"]);
    server.stop().await;
}

/// A gateway that subscribes after the cut-offs were made holds them from
/// its first snapshot, for every claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_subscribing_after_claim_cutoffs_gets_them_in_its_snapshot() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let now = unix_now();
    let cuts = [
        ("key-revoke", "sid", "s-snap", now - 100),
        ("key-revoke", "client_id", "app-snap", now - 200),
        ("key-revoke", "azp", "web-snap", now - 300),
        ("key-admin", "*", "", now - 400),
    ];
    for (key, claim, value, not_before) in cuts {
        assert_eq!(
            revoke_claim(&server, key, claim, value, not_before).await,
            not_before
        );
    }

    let gateway = ready(config(&[&server])).await;
    // No waiting: the first view is the snapshot, which must hold them.
    let view = gateway.view().expect("view");
    let mut claims: Vec<&str> = view.claims_cut().collect();
    claims.sort_unstable();
    assert_eq!(claims, ["*", "azp", "client_id", "sid"]);
    for (_, claim, value, not_before) in cuts {
        let digest = view.digest_key().claim(ISSUER, claim, value);
        assert_eq!(
            view.claim_cutoff(claim, &digest),
            Some(not_before),
            "{claim}"
        );
    }
    let cases = [
        ("sid", json!({"sid": "s-snap"}), now - 101, now - 100),
        (
            "client_id",
            json!({"client_id": "app-snap"}),
            now - 201,
            now - 200,
        ),
        ("azp", json!({"azp": "web-snap"}), now - 301, now - 300),
        ("*", json!({}), now - 401, now - 400),
    ];
    for (claim, extra, before, at) in cases {
        let older = token_with("dave", &format!("{claim}-older"), before, extra.clone());
        assert_eq!(gateway.check(&older), by_claim(claim), "{claim}");
        let newer = token_with("dave", &format!("{claim}-at"), at, extra);
        let verdict = gateway.check(&newer);
        assert!(
            allowed(&verdict).is_some(),
            "{claim} at the cut-off: {verdict:?}"
        );
    }
    server.stop().await;
}

/// Claim cut-offs live in Redis: a gateway keeps enforcing them when its
/// replica goes away and it fails over (a snapshot of another replica),
/// a replica started afterwards loads them, and one made through a
/// replica reaches a gateway following another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_cutoffs_survive_a_replica_restart_and_a_failover() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let (a, b) = two_replicas(&redis, &deployment).await;
    let gateway = ready(config(&[&a, &b])).await;
    let first_generation = gateway.view().expect("view").generation();

    let now = unix_now();
    let session = token_with("erin", "erin-s", now - 30, json!({"sid": "erin-sid"}));
    let client = token_with("erin", "erin-c", now - 30, json!({"client_id": "erin-app"}));
    let other = token_with("erin", "erin-o", now - 30, json!({"sid": "kept-sid"}));
    revoke_claim(&a, "key-revoke", "sid", "erin-sid", now).await;
    until_checked(&gateway, &session, by_claim("sid")).await;

    a.stop().await;
    // Following B now (it resumed A's filter with B's deltas: the same
    // generation), as a revocation through B shows.
    let through_b = token_for("erin", "revoked-through-b");
    revoke(&b, &through_b).await;
    until_confirmed(&gateway, &through_b, Verdict::Deny(Denial::Revoked)).await;
    assert_eq!(gateway.view().expect("view").generation(), first_generation);
    assert_eq!(
        gateway.check(&session),
        by_claim("sid"),
        "the cut-off made through A holds on B's stream"
    );

    // A replica started now loads the cut-off from Redis.
    let restarted = TestServer::start(&deployment.args(&["--redis-url", &redis.url()])).await;
    let fresh = ready(config(&[&restarted])).await;
    assert_eq!(fresh.check(&session), by_claim("sid"));
    let status = restarted
        .client(Some("key-read"))
        .await
        .check(CheckRequest {
            token: session.clone(),
            ..Default::default()
        })
        .await
        .expect("check")
        .into_inner();
    assert!(status.revoked && status.claim == "sid", "{status:?}");

    // Made through the restarted replica, it reaches the gateway on B.
    revoke_claim(&restarted, "key-revoke", "client_id", "erin-app", now).await;
    until_checked(&gateway, &client, by_claim("client_id")).await;
    until_checked(&fresh, &client, by_claim("client_id")).await;
    for gateway in [&gateway, &fresh] {
        let verdict = gateway.check_confirmed(&other).await;
        assert!(allowed(&verdict).is_some(), "{verdict:?}");
    }
    b.stop().await;
    restarted.stop().await;
}

/// A claim cut-off made while a gateway is away arrives on its resumed
/// stream as a delta (same generation, its recent digests kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cutoff_made_while_a_gateway_is_away_arrives_on_resume() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "30s"])).await;
    let idle_timeout = Duration::from_millis(200);
    let gateway = ready(
        config(&[&server]).idle_timeout(idle_timeout).backoff(
            ExponentialBackoff::try_new(
                Duration::from_millis(300),
                Duration::from_millis(300),
                0.0,
            )
            .expect("valid backoff"),
        ),
    )
    .await;
    let generation = gateway.view().expect("view").generation();
    let revoked = token_for("frank", "revoked-while-here");
    revoke(&server, &revoked).await;
    until_not_allowed(&gateway, &revoked).await;
    assert_eq!(recent_digests(&gateway), 1, "a delta brought it");

    let now = unix_now();
    let session = token_with("frank", "frank-s", now - 30, json!({"sid": "frank-sid"}));
    // No frame since that delta for longer than the idle timeout: the
    // gateway has dropped the stream and waits out its backoff.
    tokio::time::sleep(idle_timeout + Duration::from_millis(50)).await;
    revoke_claim(&server, "key-admin", "sid", "frank-sid", now).await;
    until_checked(&gateway, &session, by_claim("sid")).await;
    let view = gateway.view().expect("view");
    assert_eq!(view.generation(), generation, "{view:?}");
    assert_eq!(
        recent_digests(&gateway),
        1,
        "a snapshot replaced the deltas: {view:?}"
    );
    server.stop().await;
}

/// Under `CheckOnline` while stale, claim cut-offs held still deny, and a
/// gateway without a view asks the server, which answers by claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_sees_claim_cutoffs_while_stale() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "60s"])).await;
    let now = unix_now();
    let older = token_with("gina", "gina-old", now - 30, json!({"azp": "gina-web"}));
    let newer = token_with("gina", "gina-new", now, json!({"azp": "gina-web"}));
    revoke_claim(&server, "key-revoke", "azp", "gina-web", now).await;

    let max_staleness = Duration::from_millis(100);
    let gateway = ready(
        config(&[&server])
            .max_staleness(max_staleness)
            .idle_timeout(Duration::from_secs(120))
            .on_stale(StalePolicy::CheckOnline),
    )
    .await;
    until_stale(&gateway, max_staleness).await;
    assert_eq!(gateway.check(&older), by_claim("azp"));
    assert_eq!(gateway.check_confirmed(&older).await, by_claim("azp"));
    let verdict = gateway.check_confirmed(&newer).await;
    assert!(allowed(&verdict).is_some(), "{verdict:?}");

    let streamless = Gateway::spawn(
        config(&[&server])
            .api_key("key-read")
            .expect("ascii key")
            .on_stale(StalePolicy::CheckOnline),
        support::verifier(),
    )
    .expect("gateway");
    assert!(streamless.view().is_none());
    assert_eq!(
        streamless.check_confirmed(&older).await,
        by_claim("azp"),
        "the server knows the cut-off; a confirmation must consult it"
    );
    let verdict = streamless.check_confirmed(&newer).await;
    assert!(allowed(&verdict).is_some(), "{verdict:?}");
    server.stop().await;
}

/// Waits until `gateway` allows `token` from memory (fresh, and the
/// token not in its filter).
async fn until_allowed(gateway: &Gateway, token: &str) {
    eventually("check to allow the token", SOON, POLL, || async move {
        match gateway.check(token) {
            Verdict::Allow(_) => Ok(()),
            verdict => Err(verdict),
        }
    })
    .await;
}

/// Waits until the state the gateway saves has had time to be written
/// after its last change.
async fn until_saved() {
    tokio::time::sleep(revocd::gateway::SAVE_INTERVAL * 2).await;
}

/// A gateway restarted with its state directory resumes from the filter
/// it saved: it takes no snapshot, and denies both the revocations it held
/// and those made while it was down, while allowing the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_from_its_state_dir_with_deltas() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "200ms"])).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let held = token_for("alice", "held-before-restart");
    revoke(&server, &held).await;
    let first = ready(config(&[&server]).state_dir(dir.path())).await;
    until_not_allowed(&first, &held).await;
    assert_eq!(
        first.snapshots_applied(),
        1,
        "a cold start takes a snapshot"
    );
    until_saved().await;
    drop(first);

    let missed = token_for("bob", "revoked-while-down");
    revoke(&server, &missed).await;
    let second = ready(config(&[&server]).state_dir(dir.path())).await;
    let fine = token_for("carol", "never-revoked");
    until_allowed(&second, &fine).await;
    for token in [&held, &missed] {
        assert!(
            !matches!(second.check(token), Verdict::Allow(_)),
            "a revoked token allowed after the restart"
        );
        until_confirmed(&second, token, Verdict::Deny(Denial::Revoked)).await;
    }
    assert_eq!(
        second.snapshots_applied(),
        0,
        "the restarted gateway resumed with deltas, without a snapshot"
    );
    server.stop().await;
}

/// A state file that is damaged, or was written for other servers, is
/// ignored: the gateway starts from a snapshot and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_foreign_state_file_costs_a_snapshot_and_nothing_else() {
    support::trace_init();
    let deployment = Deployment::new();
    let one = TestServer::start(&deployment.args(&["--heartbeat-interval", "200ms"])).await;
    let other = TestServer::start(&deployment.args(&["--heartbeat-interval", "200ms"])).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = ready(config(&[&one]).state_dir(dir.path())).await;
    until_saved().await;
    drop(first);

    // Saved for `one`, offered to `other`: foreign.
    let revoked = token_for("dave", "revoked-on-the-other");
    revoke(&other, &revoked).await;
    let foreign = ready(config(&[&other]).state_dir(dir.path())).await;
    until_confirmed(&foreign, &revoked, Verdict::Deny(Denial::Revoked)).await;
    assert_eq!(foreign.snapshots_applied(), 1);
    drop(foreign);

    let state = std::fs::read_dir(dir.path())
        .expect("the state dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_none())
        .expect("a state file");
    let mut bytes = std::fs::read(&state).expect("the state file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&state, bytes).expect("damaging the state file");
    let damaged = ready(config(&[&other]).state_dir(dir.path())).await;
    until_confirmed(&damaged, &revoked, Verdict::Deny(Denial::Revoked)).await;
    assert_eq!(damaged.snapshots_applied(), 1);
    one.stop().await;
    other.stop().await;
}

/// A saved filter never decides by itself: with its server gone, a
/// restarted gateway holds no view, and asks (here: cannot ask) the server
/// about every token, rather than answer from a file that may lack every
/// revocation made since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_filter_is_not_used_before_a_server_resumes_from_it() {
    support::trace_init();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--heartbeat-interval", "200ms"])).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = ready(config(&[&server]).state_dir(dir.path())).await;
    until_saved().await;
    drop(first);
    let address = url(&server);
    server.stop().await;

    let config = support::gateway_config([address]).state_dir(dir.path());
    let restarted = Gateway::spawn(config, support::verifier()).expect("gateway");
    assert!(
        !restarted.ready(Duration::from_secs(1)).await,
        "the saved filter became the view before any server resumed from it"
    );
    let token = token_for("erin", "revoked-after-the-save-perhaps");
    assert!(matches!(restarted.check(&token), Verdict::Confirm(_)));
}

/// Replicas of two deployments (each its own store and digest key) never
/// resume each other's filters: a gateway moving from one to the other
/// takes a snapshot, and misses nothing of the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_moving_to_another_deployment_takes_a_snapshot() {
    support::trace_init();
    let deployment = Deployment::new();
    let a = TestServer::start(&deployment.args(&["--heartbeat-interval", "200ms"])).await;
    let b = TestServer::start(&deployment.args(&["--heartbeat-interval", "200ms"])).await;
    // The same number of changes on both: their memory cursors coincide.
    revoke(&a, &token_for("x", "on-a")).await;
    revoke(&b, &token_for("y", "on-b")).await;
    let gateway = ready(config(&[&a, &b])).await;
    a.stop().await;
    let token = token_for("alice", "revoked-on-b");
    revoke(&b, &token).await;
    // Fresh on B's stream (a token never revoked is allowed from memory),
    // and denying B's revocation from memory.
    until_allowed(&gateway, &token_for("carol", "never-revoked")).await;
    until_not_allowed(&gateway, &token).await;
    assert_eq!(
        gateway.snapshots_applied(),
        2,
        "resumed another deployment's filter"
    );
    b.stop().await;
}
