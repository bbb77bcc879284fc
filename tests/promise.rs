//! The core promise, against real processes: once `Revoke` is acknowledged,
//! no gateway lets that token through while it is unexpired. Each test here
//! replays a sequence of events that once broke it.
//!
//! Everything is real: a `redis-server` of the test's own, `revocd serve`
//! replicas (the built binary) and gateways of the library over gRPC.

mod support;

use std::time::Duration;

use std::net::SocketAddr;

use revocd::bounds::BoundsError;
use revocd::gateway::{Denial, Gateway, Verdict};
use revocd::pb::revocation_record::Record;
use revocd::pb::{CheckRequest, ListChangesRequest, RevokeBatchRequest, RevokeRequest};
use revocd::time::unix_now;
use serde_json::json;
use support::{Deployment, RedisServer, Replica, ISSUER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

/// Bound on anything that should happen "soon" (a reload, a snapshot).
const SOON: Duration = Duration::from_secs(30);
/// The smallest change log a server accepts (`--log-retention`).
const RETENTION: usize = 10_000;
/// Items of one `RevokeBatch` (the server's limit).
const BATCH: usize = 1_000;

/// A gateway following `replica` alone, once it holds a first snapshot.
async fn gateway(replica: &Replica, id: &str) -> Gateway {
    gateway_at(replica.address, id).await
}

/// A gateway following the server at `address`, once it holds a snapshot.
async fn gateway_at(address: SocketAddr, id: &str) -> Gateway {
    let config = support::gateway_config([format!("http://{address}")]).gateway_id(id);
    let gateway = Gateway::spawn(config, support::verifier()).expect("gateway");
    assert!(gateway.ready(SOON).await, "{id}: no snapshot");
    gateway
}

/// A token carrying `jti`, signed with the deployment's secret.
fn token_with(jti: &str) -> String {
    support::token_for("user", jti)
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
    // The tokens' own `exp`: gateways look in the slice of the token's.
    let expires_at = *support::TOKEN_EXP;
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

/// While a deployment moves to log entries of format 2
/// (`--log-entry-format`), replicas writing either format share one log:
/// each one's gateways deny what the other revoked, a replica started
/// later loads both, and the audit trail reads both. A replica that
/// skipped or misread the other format would let those tokens through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_writing_either_log_entry_format_follow_each_other() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let fields = replica_on_redis(&redis, &deployment, &["--log-entry-format", "1"]).await;
    let packed = replica_on_redis(&redis, &deployment, &["--log-entry-format", "2"]).await;
    let gateways = [
        gateway(&fields, "on-format-1").await,
        gateway(&packed, "on-format-2").await,
    ];

    let mut revoked = revoke_many(&packed, 20).await;
    for (replica, jti) in [(&fields, "by-token-1"), (&packed, "by-token-2")] {
        let mut client = replica.client(None).await;
        let reply = client.revoke(support::by_token(&token_with(jti))).await;
        assert!(reply.expect("revoked").into_inner().newly_revoked, "{jti}");
        revoked.push(jti.to_owned());
    }
    let all: Vec<&String> = revoked.iter().collect();
    for gateway in &gateways {
        let missed = still_allowed(gateway, &all).await;
        assert!(missed.is_empty(), "a gateway allows {missed:?}");
    }
    let newcomer = replica_on_redis(&redis, &deployment, &["--log-entry-format", "1"]).await;
    let missed = still_allowed(&gateway(&newcomer, "on-a-newcomer").await, &all).await;
    assert!(
        missed.is_empty(),
        "a new replica's gateway allows {missed:?}"
    );

    let changes = newcomer
        .client(Some("key-admin"))
        .await
        .list_changes(ListChangesRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("the audit trail")
        .into_inner();
    let mut listed: Vec<String> = changes
        .changes
        .iter()
        .filter_map(|change| match &change.record.as_ref()?.record {
            Some(Record::Token(token)) => Some(token.jti.clone()),
            _ => None,
        })
        .collect();
    listed.sort();
    revoked.sort();
    assert_eq!(listed, revoked, "the audit trail lists every revocation");
}

/// A replica on its own Redis with `extra` flags.
async fn replica_on_redis(redis: &RedisServer, deployment: &Deployment, extra: &[&str]) -> Replica {
    let url = redis.url();
    let mut flags = vec!["--redis-url", url.as_str(), "--heartbeat-interval", "200ms"];
    flags.extend_from_slice(extra);
    Replica::spawn(&deployment.args(&flags)).await
}

/// A token living longer than the server keeps revocations cannot be kept
/// revoked (`Revoke{token}` refuses it, a cut-off lapses before it
/// expires): gateways refuse it, and `Check` gives it no "not revoked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_outliving_the_servers_lifetime_bound_is_refused() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let flags = ["--max-token-lifetime", "60s", "--leeway", "1"];
    let replica = replica_on_redis(&redis, &deployment, &flags).await;
    let gateway = gateway(&replica, "lifetime").await;
    let now = unix_now();
    let hour_long = support::sign(&json!({
        "iss": ISSUER, "sub": "user", "jti": "hour-long", "iat": now, "exp": now + 3600,
    }));
    let no_iat = support::sign(&json!({
        "iss": ISSUER, "sub": "user", "jti": "no-iat", "exp": now + 30,
    }));

    let mut client = replica.client(None).await;
    let revoke = client
        .revoke(RevokeRequest {
            token: hour_long.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        revoke.map_err(|s| s.code()).err(),
        Some(Code::InvalidArgument)
    );
    assert!(matches!(
        gateway.check(&hour_long),
        Verdict::Deny(Denial::Unrevocable(BoundsError::LifetimeTooLong { .. }))
    ));
    assert!(matches!(
        gateway.check(&no_iat),
        Verdict::Deny(Denial::Unrevocable(BoundsError::NoIssuedAt))
    ));
    let mut reader = replica.client(Some("key-read")).await;
    let check = reader
        .check(CheckRequest {
            token: hour_long,
            ..Default::default()
        })
        .await;
    assert_eq!(
        check.map_err(|s| s.code()).err(),
        Some(Code::InvalidArgument)
    );
}

/// A gateway whose leeway is larger than the server's must not accept a
/// revoked token after the server has dropped its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_never_accepts_beyond_the_servers_leeway() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let replica = replica_on_redis(&redis, &deployment, &["--leeway", "1"]).await;
    // The gateway's own verifier allows 60 s past `exp`.
    let gateway = gateway(&replica, "leeway").await;
    let now = unix_now();
    let expires_at = now + 2;
    let token = support::sign(&json!({
        "iss": ISSUER, "sub": "user", "jti": "short", "iat": now, "exp": expires_at,
    }));
    let mut client = replica.client(None).await;
    client
        .revoke(RevokeRequest {
            token: token.clone(),
            ..Default::default()
        })
        .await
        .expect("revoked");
    // Past `exp` plus the server's leeway its record is gone.
    while unix_now() <= expires_at + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verdict = gateway.check_confirmed(&token).await;
    assert!(
        matches!(verdict, Verdict::Deny(Denial::Expired)),
        "{verdict:?}"
    );
}

/// A loopback TCP proxy to `upstream`: the first connection is relayed as
/// it is, every later one has each chunk from the server held for `delay`.
/// A gateway's subscription is its first connection, its confirm calls
/// come later: their answers arrive late.
async fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let hold = if connection == 0 {
                Duration::ZERO
            } else {
                delay
            };
            tokio::spawn(relay(client, server, hold));
        }
    });
    address
}

/// Relays both ways until either side closes, holding each chunk from the
/// server for `hold`.
async fn relay(client: TcpStream, server: TcpStream, hold: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
    let downstream = async {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let read = server_read.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<_, std::io::Error>(());
            }
            tokio::time::sleep(hold).await;
            client_write.write_all(&buffer[..read]).await?;
        }
    };
    let _ = tokio::join!(upstream, downstream);
}

/// A "not revoked" answer that was under way while the delta revoking the
/// same token arrived must not be cached: the token would be allowed until
/// it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_answer_overtaken_by_the_revocation_is_not_cached() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let replica = replica_on_redis(&redis, &deployment, &[]).await;
    // Fill the filter to its design size, so some unrevoked tokens are
    // false positives that need a confirm.
    let revoked = revoke_many(&replica, 10_000).await;
    let delay = Duration::from_millis(1_500);
    let proxy = delaying_proxy(replica.address, delay).await;
    let gateway = gateway_at(proxy, "confirm-race").await;
    let key = gateway.view().expect("a view").digest_key().clone();
    // Warm the confirm connection (its handshake crosses the delay too,
    // and may take longer than a call's timeout the first time).
    let mut warm = Verdict::Deny(Denial::NoToken);
    for _ in 0..5 {
        warm = gateway.check_confirmed(&token_with(&revoked[0])).await;
        if matches!(warm, Verdict::Deny(Denial::Revoked)) {
            break;
        }
    }
    assert!(matches!(warm, Verdict::Deny(Denial::Revoked)), "{warm:?}");

    let mut client = replica.client(Some("key-revoke")).await;
    let mut probes = (0..).map(|n| format!("probe-{n}"));
    for _attempt in 0..5 {
        let (issued_at, expires_at) = (unix_now(), unix_now() + 3600);
        let victim = probes
            .by_ref()
            .take(1_000_000)
            .find(|jti| {
                let view = gateway.view().expect("a view");
                view.may_be_revoked(&key.token(ISSUER, jti), Some(expires_at))
            })
            .expect("a false positive among a million");
        let token = support::sign(&serde_json::json!({
            "iss": ISSUER, "sub": "user", "jti": victim, "iat": issued_at, "exp": expires_at,
        }));
        let confirming = {
            let gateway = gateway.clone();
            let token = token.clone();
            tokio::spawn(async move { gateway.check_confirmed(&token).await })
        };
        // The server answers at once; the answer is held in the proxy
        // while the token is revoked and the delta reaches the gateway.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = gateway.view().expect("a view").cursor().to_owned();
        client
            .revoke(RevokeRequest {
                jti: victim.clone(),
                expires_at,
                issuer: ISSUER.to_owned(),
                ..Default::default()
            })
            .await
            .expect("revoked");
        let deadline = tokio::time::Instant::now() + SOON;
        while gateway.view().expect("a view").cursor() == before {
            assert!(tokio::time::Instant::now() < deadline, "no delta in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let overtaken = confirming.await.expect("confirm task");
        if !matches!(overtaken, Verdict::Allow(_)) {
            // The call reached the server after the revocation (a loaded
            // machine): no race was staged; try again.
            continue;
        }
        assert!(
            !allows(&gateway, &token),
            "the overtaken answer was cached: {victim} is allowed"
        );
        return;
    }
    panic!("no attempt staged the race: every confirm reached the server after its revocation");
}
