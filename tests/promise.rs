//! The core promise, against real processes: once `Revoke` is acknowledged,
//! no gateway lets that token through while it is unexpired. Each test here
//! replays a sequence of events that once broke it.
//!
//! Everything is real: a `redis-server` of the test's own, `revocd serve`
//! replicas (the built binary) and gateways of the library over gRPC.

mod support;

use std::time::Duration;

use revocd::backoff::ExponentialBackoff;
use revocd::gateway::{Gateway, GatewayConfig, Verdict};
use revocd::pb::{RevokeBatchRequest, RevokeRequest};
use revocd::time::unix_now;
use serde_json::json;
use support::{Deployment, RedisServer, Replica, ISSUER};

/// Bound on anything that should happen "soon" (a reload, a snapshot).
const SOON: Duration = Duration::from_secs(30);
/// The smallest change log a server accepts (`--log-retention`).
const RETENTION: usize = 10_000;
/// Items of one `RevokeBatch` (the server's limit).
const BATCH: usize = 1_000;

/// A gateway following `replica` alone, once it holds a first snapshot.
async fn gateway(replica: &Replica, id: &str) -> Gateway {
    let config = GatewayConfig::new([format!("http://{}", replica.address)])
        .api_key("key-subscribe")
        .expect("ascii key")
        .gateway_id(id)
        .backoff(
            ExponentialBackoff::try_new(Duration::from_millis(10), Duration::from_millis(200), 0.0)
                .expect("valid backoff"),
        );
    let gateway = Gateway::spawn(config, support::verifier()).expect("gateway");
    assert!(gateway.ready(SOON).await, "{id}: no snapshot");
    gateway
}

/// A token carrying `jti`, signed with the deployment's secret.
fn token_with(jti: &str) -> String {
    let now = unix_now();
    support::sign(&json!({
        "iss": ISSUER, "sub": "user", "jti": jti, "iat": now, "exp": now + 3600,
    }))
}

/// True when the gateway lets the token through from memory (its filter
/// certainly does not hold the revocation).
fn allows(gateway: &Gateway, token: &str) -> bool {
    matches!(gateway.check(token), Verdict::Allow(_))
}

/// Sends `SIGSTOP` or `SIGCONT` to a process.
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Revokes `count` fresh jtis through `replica` in batches; returns them
/// in the order revoked.
async fn revoke_many(replica: &Replica, count: usize) -> Vec<String> {
    let mut client = replica.client(Some("key-revoke")).await;
    let jtis: Vec<String> = (0..count).map(|n| format!("bulk-{n}")).collect();
    let expires_at = unix_now() + 3600;
    for chunk in jtis.chunks(BATCH) {
        let items = chunk
            .iter()
            .map(|jti| RevokeRequest {
                jti: jti.clone(),
                expires_at,
                issuer: ISSUER.to_owned(),
                ..Default::default()
            })
            .collect();
        let reply = client
            .revoke_batch(RevokeBatchRequest { items })
            .await
            .expect("batch revoked")
            .into_inner();
        assert!(
            reply.results.iter().all(|r| r.response.is_some()),
            "every item stored"
        );
    }
    jtis
}

/// Waits until `gateway` denies (or must confirm) every token of `jtis`;
/// returns those it still allows at the deadline.
async fn still_allowed(gateway: &Gateway, jtis: &[&String]) -> Vec<String> {
    let tokens: Vec<(String, String)> = jtis
        .iter()
        .map(|jti| ((*jti).clone(), token_with(jti)))
        .collect();
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let allowed: Vec<String> = tokens
            .iter()
            .filter(|(_, token)| allows(gateway, token))
            .map(|(jti, _)| jti.clone())
            .collect();
        if allowed.is_empty() || tokio::time::Instant::now() >= deadline {
            return allowed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica stalled while the change log was trimmed past its cursor must
/// not read on as if nothing were missing: it reloads, and its gateways
/// (old and new) deny every token revoked meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stalled_past_the_logs_retention_reloads_instead_of_skipping() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let retention = RETENTION.to_string();
    let args = deployment.args(&[
        "--redis-url",
        &redis.url(),
        "--log-retention",
        &retention,
        "--redis-timeout",
        "30s",
        "--heartbeat-interval",
        "200ms",
    ]);
    let writer = Replica::spawn(&args).await;
    let stalled = Replica::spawn(&args).await;
    let following_stalled = gateway(&stalled, "on-the-stalled-replica").await;

    signal(stalled.pid(), "STOP");
    let revoked = revoke_many(&writer, 3 * RETENTION).await;
    signal(stalled.pid(), "CONT");

    // The first, the ones around the retention marks, and the last.
    let probes: Vec<&String> = [
        0,
        RETENTION / 2,
        RETENTION,
        3 * RETENTION / 2,
        2 * RETENTION,
    ]
    .iter()
    .map(|&n| &revoked[n])
    .chain(revoked.last())
    .collect();
    let missed = still_allowed(&following_stalled, &probes).await;
    assert!(
        missed.is_empty(),
        "the gateway of the stalled replica still allows {missed:?}"
    );
    let newcomer = gateway(&stalled, "new-on-the-stalled-replica").await;
    let missed = still_allowed(&newcomer, &probes).await;
    assert!(
        missed.is_empty(),
        "a new gateway of the stalled replica allows {missed:?}"
    );
}
