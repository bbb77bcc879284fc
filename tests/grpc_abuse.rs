//! The server under abuse at the gRPC and HTTP/2 level: oversize messages,
//! more streams than allowed per connection and per key, a burst of
//! streams opened and reset at once, raw TCP clients that send garbage or
//! stall. Each test runs the real `revocd` binary (memory store), so
//! "still healthy" is measured from outside the process under attack.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{
    CheckRequest, FilterUpdate, GetStatsRequest, RevokeBatchRequest, RevokeRequest,
    SubscribeRequest,
};
use revocd::server::{MAX_CONCURRENT_STREAMS, MAX_REQUEST_BYTES};
use revocd::time::unix_now;
use support::{token_for, Client, Deployment, Replica, ServingStatus};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Bound on anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);
/// How fast health must answer while the server is being abused.
const HEALTH_DEADLINE: Duration = Duration::from_secs(1);

/// A `revocd serve` process of the test deployment with `extra` flags.
async fn replica(extra: &[&str]) -> (Replica, Deployment) {
    support::trace_init();
    let deployment = Deployment::new();
    let replica = Replica::spawn(&deployment.args(extra)).await;
    (replica, deployment)
}

/// Asserts health answers SERVING, over a new connection, within
/// [`HEALTH_DEADLINE`].
async fn assert_healthy(address: SocketAddr, when: &str) {
    let started = Instant::now();
    let health = tokio::time::timeout(HEALTH_DEADLINE, support::health(address)).await;
    assert_eq!(
        health.ok().flatten(),
        Some(ServingStatus::Serving),
        "{when}: no SERVING within {HEALTH_DEADLINE:?} (waited {:?})",
        started.elapsed()
    );
}

/// Asserts an ordinary Revoke then Check works, on a new connection.
async fn assert_serves(replica: &Replica, jti: &str) {
    let token = token_for("abuse", jti);
    let mut client = replica.client(Some("key-admin")).await;
    let revoke = RevokeRequest {
        token: token.clone(),
        ..Default::default()
    };
    let reply = tokio::time::timeout(SOON, client.revoke(revoke)).await;
    let reply = reply.expect("Revoke in time").expect("Revoke").into_inner();
    assert!(reply.newly_revoked, "{reply:?}");
    let check = CheckRequest {
        token,
        ..Default::default()
    };
    let status = tokio::time::timeout(SOON, client.check(check)).await;
    let status = status.expect("Check in time").expect("Check").into_inner();
    assert!(status.revoked, "{status:?}");
}

/// A connection of its own to `replica`, with no API key interceptor.
async fn channel(replica: &Replica) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", replica.address))
        .expect("endpoint")
        .connect()
        .await
        .expect("connecting")
}

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("ascii key");
    request.metadata_mut().insert("authorization", value);
    request
}

fn subscribe_request(id: usize) -> SubscribeRequest {
    SubscribeRequest {
        gateway_id: format!("abuse-{id}"),
        protocol: revocd::snapshot::STREAM_PROTOCOL,
        ..Default::default()
    }
}

/// Opens a filter stream and waits for its first frame.
async fn open_stream(client: &mut Client, id: usize) -> Result<Streaming<FilterUpdate>, Status> {
    let call = client.subscribe(subscribe_request(id));
    let mut stream = tokio::time::timeout(SOON, call)
        .await
        .expect("Subscribe answered in time")?
        .into_inner();
    let first = tokio::time::timeout(SOON, stream.message()).await;
    let first = first.expect("a first frame in time")?;
    assert!(first.is_some(), "the stream ended before its snapshot");
    Ok(stream)
}

/// `call`'s outcome, failing the test past [`SOON`].
async fn within<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SOON, call)
        .await
        .expect("answered in time")
}

/// Asserts `status` is the refusal of a message over the request limit.
fn assert_too_large(status: &Status, what: &str) {
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains(&MAX_REQUEST_BYTES.to_string()),
        "{what}: the refusal names the limit: {status:?}"
    );
}

#[tokio::test]
async fn oversize_messages_are_refused_and_the_connection_keeps_serving() {
    let (replica, _deployment) = replica(&[]).await;
    let mut client = RevocationServiceClient::new(channel(&replica).await);

    let huge_token = CheckRequest {
        token: "a".repeat(MAX_REQUEST_BYTES + 1),
        ..Default::default()
    };
    let status = within(client.check(keyed(huge_token, "key-read"))).await;
    assert_too_large(&status.expect_err("refused"), "Check, token over 64 KiB");

    let huge_reason = RevokeRequest {
        jti: "oversize".into(),
        expires_at: unix_now() + 600,
        reason: "r".repeat(2 * MAX_REQUEST_BYTES),
        ..Default::default()
    };
    let status = within(client.revoke(keyed(huge_reason, "key-revoke"))).await;
    assert_too_large(&status.expect_err("refused"), "Revoke, 128 KiB reason");

    let items = (0..2_000)
        .map(|i| RevokeRequest {
            jti: format!("batch-item-{i:032}"),
            expires_at: unix_now() + 600,
            ..Default::default()
        })
        .collect();
    let batch = keyed(RevokeBatchRequest { items }, "key-revoke");
    let status = within(client.revoke_batch(batch)).await;
    assert_too_large(&status.expect_err("refused"), "RevokeBatch of 2,000 items");

    // Far past tonic's own 4 MiB default too; refused without being read.
    let giant = CheckRequest {
        token: "a".repeat(8 << 20),
        ..Default::default()
    };
    let started = Instant::now();
    let status = within(client.check(keyed(giant, "key-read"))).await;
    assert_too_large(&status.expect_err("refused"), "Check, 8 MiB");
    eprintln!("8 MiB message refused in {:?}", started.elapsed());

    // Just under the message limit, the request reaches the handler and is
    // refused by the token size rule instead.
    let under = CheckRequest {
        token: "a".repeat(MAX_REQUEST_BYTES - 1024),
        ..Default::default()
    };
    let status = within(client.check(keyed(under, "key-read"))).await;
    let status = status.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("the limit is 8192"), "{status:?}");

    // The same connection still serves.
    let ordinary = CheckRequest {
        jti: "ordinary".into(),
        ..Default::default()
    };
    let answer = within(client.check(keyed(ordinary, "key-read"))).await;
    assert!(!answer.expect("an ordinary Check").into_inner().revoked);
    assert_healthy(replica.address, "after oversize messages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_connection_limit_wait_while_the_server_stays_healthy() {
    let (replica, _deployment) = replica(&[]).await;
    let limit = MAX_CONCURRENT_STREAMS as usize;
    let extra = 24;
    let mut client = replica.client(Some("key-subscribe")).await;
    // One call first, so the server's SETTINGS (and its stream limit) have
    // reached the client before the flood.
    let warm = CheckRequest {
        jti: "warm-up".into(),
        ..Default::default()
    };
    within(client.check(warm)).await.expect("a first call");

    let (opened, mut arrivals) = mpsc::unbounded_channel();
    for id in 0..limit + extra {
        let mut client = client.clone();
        let opened = opened.clone();
        tokio::spawn(async move {
            let outcome = client.subscribe(subscribe_request(id)).await;
            let _ = opened.send(outcome.map(tonic::Response::into_inner));
        });
    }
    drop(opened);

    // Collect until every call got an answer, or nothing new came for a
    // while after the limit was reached.
    let mut served = Vec::new();
    let mut failed = Vec::new();
    let deadline = Instant::now() + SOON;
    while served.len() + failed.len() < limit + extra && Instant::now() < deadline {
        let quiet = if served.len() + failed.len() >= limit {
            Duration::from_millis(500)
        } else {
            SOON
        };
        match tokio::time::timeout(quiet, arrivals.recv()).await {
            Ok(Some(Ok(stream))) => served.push(stream),
            Ok(Some(Err(status))) => failed.push(status),
            Ok(None) | Err(_) => break,
        }
    }
    let waiting = limit + extra - served.len() - failed.len();
    eprintln!(
        "{} streams on one connection: {} served, {} failed, {} waiting",
        limit + extra,
        served.len(),
        failed.len(),
        waiting
    );
    assert!(
        served.len() <= limit,
        "{} streams served at once on one connection, the limit is {limit}",
        served.len()
    );
    assert!(
        served.len() >= limit - extra,
        "the limit is {limit}, yet only {} streams were served",
        served.len()
    );
    assert!(
        waiting + failed.len() >= extra,
        "the extra streams were not held back"
    );
    assert_healthy(replica.address, "with the connection full").await;
    assert_serves(&replica, "connection-full").await;

    // Streams that wait are served as others end.
    if waiting > 0 {
        let release = waiting.min(served.len());
        served.truncate(served.len() - release);
        let mut later = 0;
        while later < release {
            let arrival = tokio::time::timeout(SOON, arrivals.recv()).await;
            match arrival.expect("a waiting stream is served once others end") {
                Some(Ok(stream)) => {
                    later += 1;
                    served.push(stream);
                }
                other => panic!("a waiting stream failed: {other:?}"),
            }
        }
        assert!(served.len() <= limit);
    }
}

#[tokio::test]
async fn one_key_holds_at_most_its_stream_limit() {
    let (replica, _deployment) = replica(&["--max-streams-per-key", "2"]).await;
    let mut client = replica.client(Some("key-subscribe")).await;
    let first = open_stream(&mut client, 1).await.expect("first stream");
    let _second = open_stream(&mut client, 2).await.expect("second stream");
    let refused = open_stream(&mut client, 3)
        .await
        .expect_err("third refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("already holds 2 filter streams")
            && refused.message().contains("--max-streams-per-key"),
        "the refusal names the limit: {refused:?}"
    );
    // Another key is not held back by this one's streams.
    let mut admin = replica.client(Some("key-admin")).await;
    let _other = open_stream(&mut admin, 4)
        .await
        .expect("another key's stream");

    // Ending a stream gives its place back.
    drop(first);
    let deadline = Instant::now() + SOON;
    let _third = loop {
        match open_stream(&mut client, 5).await {
            Ok(stream) => break stream,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "a closed stream's place was never given back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_healthy(replica.address, "after the per-key limit").await;
}

/// What became of one call of the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Dropped before any answer: cancelled before sending or in flight.
    Cancelled,
    /// A filter stream opened, then dropped at once (RST_STREAM).
    Reset,
    /// Answered (a Check, or a Subscribe refused over the key's limit).
    Answered,
}

/// The sum of `revocd_rpc_requests_total` for `method`, all codes.
fn requests_completed(metrics: SocketAddr, method: &str) -> f64 {
    let text = support::nginx::http_get(metrics, "/metrics", &[])
        .expect("GET /metrics")
        .body;
    let series = format!("revocd_rpc_requests_total{{method=\"{method}\"");
    text.lines()
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reset_streams_leaves_the_server_healthy() {
    let per_key = 100;
    let metrics = support::nginx::loopback(support::free_port());
    let (replica, _deployment) = replica(&[
        "--max-streams-per-key",
        &per_key.to_string(),
        "--heartbeat-interval",
        "100ms",
        "--metrics-listen",
        &metrics.to_string(),
    ])
    .await;
    let burst = 600;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(RevocationServiceClient::new(channel(&replica).await));
    }
    let mut tasks = Vec::with_capacity(burst);
    for i in 0..burst {
        let mut client = clients[i % clients.len()].clone();
        // Cancelled at staggered points: before sending, in flight, or
        // (one call in three) once its stream is open.
        let patience = Duration::from_micros((i as u64 * 37) % 5_000);
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => {
                    // Every call of this kind is to open a stream and reset
                    // it, so it asks again when refused for the key's quota
                    // (which streams of this burst hold until the server
                    // sees them reset: later on a slower machine) or when
                    // its connection was closed (h2's guard against rapid
                    // resets ends a connection that resets too many streams
                    // before they are accepted; the channel reconnects).
                    let deadline = Instant::now() + SOON;
                    loop {
                        let call = client.subscribe(keyed(subscribe_request(i), "key-subscribe"));
                        match tokio::time::timeout_at(deadline, call).await {
                            Ok(Ok(stream)) => {
                                drop(stream);
                                break Fate::Reset;
                            }
                            Ok(Err(status))
                                if matches!(
                                    status.code(),
                                    Code::ResourceExhausted | Code::Unavailable | Code::Unknown
                                ) =>
                            {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Ok(Err(_)) => break Fate::Answered,
                            Err(_) => panic!("Subscribe {i} not opened in {SOON:?}"),
                        }
                    }
                }
                1 => {
                    let call = client.subscribe(keyed(subscribe_request(i), "key-subscribe"));
                    match tokio::time::timeout(patience, call).await {
                        Ok(_) => Fate::Answered,
                        Err(_) => Fate::Cancelled,
                    }
                }
                _ => {
                    let check = CheckRequest {
                        jti: format!("burst-{i}"),
                        ..Default::default()
                    };
                    let call = client.check(keyed(check, "key-read"));
                    match tokio::time::timeout(patience, call).await {
                        Ok(_) => Fate::Answered,
                        Err(_) => Fate::Cancelled,
                    }
                }
            }
        }));
    }
    let mut fates = Vec::with_capacity(burst);
    for task in tasks {
        fates.push(task.await.expect("burst task"));
    }
    drop(clients);
    let count = |fate: Fate| fates.iter().filter(|f| **f == fate).count();
    let completed = requests_completed(metrics, "Subscribe") + requests_completed(metrics, "Check");
    eprintln!(
        "{}",
        support::nginx::http_get(metrics, "/metrics", &[])
            .unwrap()
            .body
            .lines()
            .filter(|l| l.starts_with("revocd_rpc_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{burst} calls: {} streams reset once open, {} cancelled, {} answered; {completed} calls ran to completion in the server",
        count(Fate::Reset),
        count(Fate::Cancelled),
        count(Fate::Answered)
    );
    assert!(
        completed >= count(Fate::Reset) as f64,
        "the server counted fewer calls than the streams it opened"
    );
    assert!(
        count(Fate::Reset) >= per_key / 2,
        "too few streams opened to test resetting them: {}",
        count(Fate::Reset)
    );

    assert_healthy(replica.address, "right after the burst").await;
    assert_serves(&replica, "after-burst").await;

    // Every reset stream gave back its subscription and its key's place:
    // the hub counts none, and the key can open its full quota again.
    let mut reader = replica.client(Some("key-read")).await;
    let deadline = Instant::now() + SOON;
    loop {
        let stats = within(reader.get_stats(GetStatsRequest {})).await;
        let stats = stats.expect("stats");
        let subscribers = stats.into_inner().subscribers;
        if subscribers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{subscribers} subscriptions still held after the burst"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = replica.client(Some("key-subscribe")).await;
    let mut streams = Vec::new();
    for id in 0..per_key {
        let stream = open_stream(&mut client, id).await;
        streams.push(stream.unwrap_or_else(|s| panic!("stream {id} of {per_key}: {s:?}")));
    }
}

/// A raw TCP connection to `address` that sends `bytes` and then waits.
fn raw_connection(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&address, SOON).expect("raw connect");
    stream.write_all(bytes).expect("raw write");
    stream
}

/// True when the server closes `stream` within `timeout` (end of file or
/// a reset; anything it says before is discarded).
fn closed_by_server(mut stream: &TcpStream, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test]
async fn garbage_and_stalled_connections_do_not_stop_others() {
    let (replica, _deployment) = replica(&[]).await;
    let address = replica.address;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut garbage = Vec::new();
    let mut stalled = Vec::new();
    for i in 0..20u8 {
        let noise: Vec<u8> = (0..512u16)
            .map(|j| (j as u8).wrapping_mul(31) ^ i)
            .collect();
        garbage.push(raw_connection(address, &noise));
        garbage.push(raw_connection(
            address,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ));
    }
    for _ in 0..50 {
        // Half a preface, then nothing.
        stalled.push(raw_connection(address, &preface[..10]));
        // A whole preface, then half a frame header.
        let mut partial = preface.to_vec();
        partial.extend_from_slice(&[0, 0, 6, 4]);
        stalled.push(raw_connection(address, &partial));
    }

    // While all of them are connected, others are served.
    assert_healthy(address, "with 100 stalled and 40 garbage connections").await;
    assert_serves(&replica, "beside-stalled").await;

    // Garbage is answered by closing the connection.
    let still_open = tokio::task::spawn_blocking(move || {
        garbage
            .iter()
            .filter(|stream| !closed_by_server(stream, Duration::from_secs(5)))
            .count()
    })
    .await
    .expect("reading the garbage connections");
    assert_eq!(
        still_open, 0,
        "connections that sent garbage were left open"
    );
    assert_healthy(address, "after the garbage").await;
    drop(stalled);
}
