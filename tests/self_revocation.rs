//! Keyless self-revocation (`Revoke{token}` without an API key) is bounded
//! on each replica: per (issuer, subject), per source address and for the
//! replica as a whole. A refused call gets `RESOURCE_EXHAUSTED`, stores
//! nothing, and leaves callers with a key unaffected. Runs on the memory
//! store and on a real `redis-server` of its own.

mod support;

use revocd::pb::{CheckRequest, GetStatsRequest, RevokeRequest};
use support::{token_for, Client, Deployment, RedisServer, TestServer};
use tonic::{Code, Status};

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
    /// Starts a server on `backend` with the extra `revocd serve` flags.
    async fn start(backend: Backend, flags: &[&str]) -> Self {
        support::trace_init();
        let deployment = Deployment::new();
        let redis = matches!(backend, Backend::Redis).then(RedisServer::start);
        let url = redis.as_ref().map(RedisServer::url);
        let mut extra: Vec<&str> = flags.to_vec();
        if let Some(url) = &url {
            extra.extend(["--redis-url", url]);
        }
        let server = TestServer::start(&deployment.args(&extra)).await;
        Harness {
            server,
            _redis: redis,
            _deployment: deployment,
        }
    }

    async fn anonymous(&self) -> Client {
        self.server.client(None).await
    }

    async fn revoked(&self, token: &str) -> bool {
        let request = CheckRequest {
            token: token.to_owned(),
            ..Default::default()
        };
        let mut reader = self.server.client(Some("key-read")).await;
        let reply = reader.check(request).await.expect("check");
        reply.into_inner().revoked
    }

    async fn live_revocations(&self) -> u64 {
        let mut reader = self.server.client(Some("key-read")).await;
        let stats = reader.get_stats(GetStatsRequest {}).await.expect("stats");
        stats.into_inner().live_revocations
    }
}

fn by_token(token: &str) -> RevokeRequest {
    RevokeRequest {
        token: token.to_owned(),
        ..Default::default()
    }
}

/// Self-revokes fresh tokens of `subjects` in turn until one is refused
/// (at most `attempts` calls); returns how many were granted and the
/// refusal with its token.
async fn revoke_until_refused(
    client: &mut Client,
    subjects: &[&str],
    attempts: usize,
) -> (usize, Option<(Status, String)>) {
    for n in 0..attempts {
        let subject = subjects[n % subjects.len()];
        let token = token_for(subject, &format!("{subject}-{n}"));
        if let Err(status) = client.revoke(by_token(&token)).await {
            return (n, Some((status, token)));
        }
    }
    (attempts, None)
}

/// The refusal says what limit was reached and what to do instead.
fn assert_explained(status: &Status, limit: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    for needle in [limit, "API key", "`revoke`"] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

async fn one_subject_is_bounded_while_others_and_keys_are_not(backend: Backend) {
    // The defaults: 10 self-revocations per subject per minute.
    let harness = Harness::start(backend, &[]).await;
    let mut anonymous = harness.anonymous().await;
    let (granted, refused) = revoke_until_refused(&mut anonymous, &["alice"], 50).await;
    let (status, token) = refused.expect("a subject's self-revocations are bounded");
    assert_eq!(granted, 10, "the default bound per subject");
    assert_explained(&status, "per subject");
    assert!(
        !harness.revoked(&token).await,
        "a refused call stores nothing"
    );
    assert_eq!(harness.live_revocations().await, 10);

    let bob = token_for("bob", "bob-0");
    anonymous
        .revoke(by_token(&bob))
        .await
        .expect("another subject may still revoke its own token");
    harness
        .server
        .client(Some("key-revoke"))
        .await
        .revoke(by_token(&token))
        .await
        .expect("a caller with a key is not bounded by the keyless quota");
    assert!(harness.revoked(&token).await);
    assert_eq!(harness.live_revocations().await, 12);
}

async fn one_source_address_is_bounded(backend: Backend) {
    let harness = Harness::start(backend, &["--keyless-source-per-minute", "3"]).await;
    let mut anonymous = harness.anonymous().await;
    let subjects = ["carol", "dave", "erin", "frank"];
    let (granted, refused) = revoke_until_refused(&mut anonymous, &subjects, 10).await;
    let (status, token) = refused.expect("a source address's self-revocations are bounded");
    assert_eq!(granted, 3);
    assert_explained(&status, "per source address");
    assert!(
        !harness.revoked(&token).await,
        "a refused call stores nothing"
    );
    harness
        .server
        .client(Some("key-mixed"))
        .await
        .revoke(by_token(&token))
        .await
        .expect("a caller with a key is not bounded by the keyless quota");
    assert_eq!(harness.live_revocations().await, 4);
}

async fn the_replica_bounds_all_keyless_callers_together(backend: Backend) {
    let flags = [
        "--keyless-per-minute",
        "2",
        "--keyless-source-per-minute",
        "100",
    ];
    let harness = Harness::start(backend, &flags).await;
    let mut anonymous = harness.anonymous().await;
    let (granted, refused) = revoke_until_refused(&mut anonymous, &["gina", "hank"], 10).await;
    let (status, token) = refused.expect("all keyless self-revocations are bounded");
    assert_eq!(granted, 2);
    assert_explained(&status, "on this replica");
    assert!(
        !harness.revoked(&token).await,
        "a refused call stores nothing"
    );
    assert_eq!(harness.live_revocations().await, 2);
}

/// Runs each named test once per backend.
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Redis).await })*
        }
    };
}

on_each_backend!(
    one_subject_is_bounded_while_others_and_keys_are_not,
    one_source_address_is_bounded,
    the_replica_bounds_all_keyless_callers_together,
);
