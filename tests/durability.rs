//! `--durability` and `--wait-replicas` against real `redis-server`s and
//! the real `revocd` binary:
//!
//! - strict mode on a Redis with `appendonly yes` and `appendfsync always`,
//!   killed with SIGKILL under load and restarted from its AOF, loses no
//!   acknowledged revocation, and every gateway catches up with all of them;
//! - strict mode refuses a Redis that cannot give it (exit 64, naming
//!   `appendfsync`) and starts on one that can;
//! - `--wait-replicas 1` answers UNAVAILABLE while no replica is attached,
//!   and succeeds once one is.
//!
//! Fast mode with `appendfsync everysec` can lose up to a second of
//! acknowledged writes on a Redis crash; that is documented (README,
//! "Durability"), not tested: a test of a loss that may or may not happen
//! proves nothing either way.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use revocd::gateway::{Denial, Gateway, Verdict};
use revocd::pb::{CheckRequest, RevokeRequest};
use support::{wait_for_health, Deployment, RedisServer, Replica, ServingStatus, ISSUER};
use tokio::time::Instant;
use tonic::Code;

/// Bound on anything that should happen "soon" (recovery, catching up).
const SOON: Duration = Duration::from_secs(10);
/// Concurrent clients of the load generator.
const LOAD_CLIENTS: usize = 4;
/// Revokes one client sends at most, so the ledger stays bounded.
const MAX_REVOKES_PER_CLIENT: usize = 5_000;
/// Gateways following the replica.
const GATEWAYS: usize = 2;
/// Redis flags under which a reply means the write is on disk.
const FSYNC_ALWAYS: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

// === the ledger ===

/// What the load generator saw: every jti whose `Revoke` answered OK, and
/// those that failed (stored or not: the caller cannot know).
#[derive(Debug, Default)]
struct Ledger {
    acknowledged: Vec<String>,
    unacknowledged: Vec<String>,
    /// Failures by gRPC code; only UNAVAILABLE is expected.
    failures: BTreeMap<String, usize>,
}

impl Ledger {
    /// Records the answer to the `Revoke` of `jti`: `None` for OK.
    fn record(&mut self, jti: String, failure: Option<tonic::Status>) {
        match failure {
            None => self.acknowledged.push(jti),
            Some(status) => {
                self.unacknowledged.push(jti);
                *self
                    .failures
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }
}

/// A `Revoke` by jti of the token [`token_with`] makes: its own `exp`.
fn revoke_request(jti: &str) -> RevokeRequest {
    RevokeRequest {
        jti: jti.to_owned(),
        expires_at: *support::TOKEN_EXP,
        issuer: ISSUER.to_owned(),
        reason: "durability test".to_owned(),
        ..Default::default()
    }
}

/// One load client: revokes fresh jtis until `stop`, recording each answer
/// in `ledger`. After a failure it pauses briefly, as a client backing off
/// would, so an outage does not become a busy loop.
async fn load_client(
    replica: std::net::SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut client = support::client(replica, Some("key-revoke")).await;
    for n in 0..MAX_REVOKES_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let jti = format!("load-{id}-{n}");
        let answer = client.revoke(revoke_request(&jti)).await;
        let failed = answer.is_err();
        ledger
            .lock()
            .expect("ledger lock")
            .record(jti, answer.err());
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// === helpers ===

/// A gateway following `replica`, once it holds a first snapshot.
async fn gateway(replica: &Replica, id: usize) -> Gateway {
    let config = support::gateway_config([format!("http://{}", replica.address)])
        .gateway_id(format!("durability-gateway-{id}"));
    let gateway = Gateway::spawn(config, support::verifier()).expect("gateway");
    assert!(gateway.ready(SOON).await, "gateway {id}: no snapshot");
    gateway
}

/// A token carrying `jti`, signed with the deployment's secret.
fn token_with(jti: &str) -> String {
    support::token_for("load", jti)
}

/// The major and minor version of the Redis behind `redis`.
fn redis_version(redis: &RedisServer) -> (u32, u32) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut redis.connection())
        .expect("INFO server");
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .expect("redis_version in INFO");
    let mut parts = version.trim().split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether the server holds a revocation of `jti`, asked with `Check`
/// (retrying UNAVAILABLE for a while, as Redis may still be loading).
async fn revoked_on_server(client: &mut support::Client, jti: &str) -> bool {
    let deadline = Instant::now() + SOON;
    loop {
        let request = CheckRequest {
            jti: jti.to_owned(),
            issuer: ISSUER.to_owned(),
            ..Default::default()
        };
        match client.check(request).await {
            Ok(reply) => return reply.into_inner().revoked,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("Check {jti}: {status:?}"),
        }
    }
}

/// Waits until `gateway`'s filter no longer allows any of `tokens` from
/// memory (each is a bloom "maybe" or a cached denial); returns how many it
/// still allows at the deadline.
async fn until_filter_holds(gateway: &Gateway, tokens: &[String]) -> usize {
    let deadline = Instant::now() + SOON;
    loop {
        let allowed = tokens
            .iter()
            .filter(|token| matches!(gateway.check(token), Verdict::Allow(_)))
            .count();
        if allowed == 0 || Instant::now() >= deadline {
            return allowed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_loses_no_acknowledged_revocation_when_redis_is_killed() {
    support::trace_init();
    let mut redis = RedisServer::start_with(&FSYNC_ALWAYS);
    let deployment = Deployment::new();
    let mut args = deployment.args(&[]);
    args.extend(redis.strict_serve_flags());
    let replica = Replica::spawn(&args).await;
    let mut gateways = Vec::new();
    for id in 0..GATEWAYS {
        gateways.push(gateway(&replica, id).await);
    }

    // Load before, through and after the outage.
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|id| {
            tokio::spawn(load_client(
                replica.address,
                id,
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = ledger.lock().expect("ledger lock").acknowledged.len();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // `restart` polls PING with blocking sleeps; keep the load running on
    // the other worker meanwhile.
    tokio::task::block_in_place(|| redis.restart());
    let at_restart = ledger.lock().expect("ledger lock").acknowledged.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("load client");
    }
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger lock"));

    // Every acknowledged revocation is in Redis.
    wait_for_health(replica.address, ServingStatus::Serving, SOON).await;
    let mut checker = replica.client(Some("key-read")).await;
    let mut missing = Vec::new();
    for jti in &ledger.acknowledged {
        if !revoked_on_server(&mut checker, jti).await {
            missing.push(jti.clone());
        }
    }
    let mut unacknowledged_stored = 0;
    for jti in &ledger.unacknowledged {
        if revoked_on_server(&mut checker, jti).await {
            unacknowledged_stored += 1;
        }
    }
    println!(
        "ledger: {} acknowledged ({before_kill} before the kill, {} after the restart), \
         {} unacknowledged ({unacknowledged_stored} of them stored anyway), failures {:?}, \
         {} missing",
        ledger.acknowledged.len(),
        ledger.acknowledged.len() - at_restart,
        ledger.unacknowledged.len(),
        ledger.failures,
        missing.len(),
    );
    assert!(
        before_kill > 0,
        "no revocation acknowledged before the kill"
    );
    assert!(
        ledger.acknowledged.len() > at_restart,
        "no revocation acknowledged after the restart"
    );
    assert!(
        !ledger.unacknowledged.is_empty(),
        "the outage refused nothing: was Redis killed?"
    );
    assert!(
        ledger.failures.keys().all(|code| code == "Unavailable"),
        "only UNAVAILABLE is expected during the outage: {:?}",
        ledger.failures
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged revocations lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // Every gateway catches up with every acknowledged revocation: its
    // filter stops allowing the token, and confirming it says revoked.
    let tokens: Vec<String> = ledger.acknowledged.iter().map(|j| token_with(j)).collect();
    for (id, gateway) in gateways.iter().enumerate() {
        let still_allowed = until_filter_holds(gateway, &tokens).await;
        println!("gateway {id}: {still_allowed} acknowledged revocations not in its filter");
        assert_eq!(
            still_allowed, 0,
            "gateway {id} did not catch up within {SOON:?}"
        );
        for token in &tokens {
            let verdict = gateway.check_confirmed(token).await;
            assert_eq!(verdict, Verdict::Deny(Denial::Revoked), "gateway {id}");
        }
    }
}

/// Runs `revocd serve` with `args` until it exits (at most [`SOON`]);
/// its exit code and stderr.
fn serve_until_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(support::binary("revocd"))
        .arg("serve")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{}", support::free_port())])
        .env("RUST_LOG", "revocd=error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting revocd");
    let deadline = std::time::Instant::now() + SOON;
    while child.try_wait().expect("polling revocd").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("revocd serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("revocd's output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_needs_a_redis_that_writes_to_disk_before_replying() {
    support::trace_init();
    let deployment = Deployment::new();
    let strict = |redis: &RedisServer| {
        deployment.args(&["--redis-url", &redis.url(), "--durability", "strict"])
    };

    // AOF on, but fsynced once a second: a reply may precede the disk.
    let everysec = RedisServer::start_with(&["--appendonly", "yes"]);
    if redis_version(&everysec) >= (7, 2) {
        // WAITAOF makes any Redis 7.2+ suitable: strict starts.
        Replica::spawn(&strict(&everysec)).await;
    } else {
        let (code, stderr) = serve_until_exit(&strict(&everysec));
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("appendfsync"), "{stderr}");
        assert!(stderr.contains("--durability strict"), "{stderr}");
    }

    // appendfsync always: it starts and acknowledges writes.
    let always = RedisServer::start_with(&FSYNC_ALWAYS);
    let replica = Replica::spawn(&strict(&always)).await;
    let reply = replica
        .client(Some("key-revoke"))
        .await
        .revoke(revoke_request("strict-accepted"))
        .await
        .expect("a revoke in strict mode")
        .into_inner();
    assert!(reply.newly_revoked, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_refuses_writes_until_a_replica_is_attached() {
    support::trace_init();
    let primary = RedisServer::start();
    let deployment = Deployment::new();
    let args = deployment.args(&[
        "--redis-url",
        &primary.url(),
        "--wait-replicas",
        "1",
        "--redis-timeout",
        "300ms",
    ]);
    let replica = Replica::spawn(&args).await;
    let mut client = replica.client(Some("key-revoke")).await;

    let status = client
        .revoke(revoke_request("unreplicated"))
        .await
        .expect_err("no Redis replica attached");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("not confirmed"),
        "{}",
        status.message()
    );
    assert_eq!(
        replica.health().await,
        Some(ServingStatus::Serving),
        "revocd still serves after a refused write"
    );

    // A real replica of the primary: writes are acknowledged once it has
    // synchronised.
    let port = primary.port().to_string();
    let _secondary = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let deadline = Instant::now() + SOON;
    // A refused write may still be on the primary; each attempt names a
    // fresh token, so the acknowledged one is new.
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        match client
            .revoke(revoke_request(&format!("replicated-{attempt}")))
            .await
        {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "no write acknowledged with a replica attached: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(reply.newly_revoked, "{reply:?}");
}
