//! The Subscribe stream at the protocol level: snapshot then deltas, resume
//! from a cursor, re-basing of a slow subscriber, propagation between
//! replicas through the shared change log.

mod support;

use std::time::Duration;

use revocd::filter::{DigestKey, SlicedFilter};
use revocd::pb::filter_update::Update;
use revocd::pb::{self, FilterUpdate, RevokeRequest, SubscribeRequest};
use revocd::time::unix_now;
use support::{Client, Deployment, RedisCluster, RedisServer, TestServer, ISSUER};
use tonic::Streaming;

/// Longest wait for any expected frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

async fn subscribe(client: &mut Client, cursor: &str, generation: u64) -> Streaming<FilterUpdate> {
    support::trace_init();
    let request = SubscribeRequest {
        cursor: cursor.to_owned(),
        generation,
        gateway_id: "test".into(),
        protocol: revocd::snapshot::STREAM_PROTOCOL,
    };
    client
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner()
}

/// A subscription of this build's protocol, from the start.
fn current() -> SubscribeRequest {
    SubscribeRequest {
        protocol: revocd::snapshot::STREAM_PROTOCOL,
        ..Default::default()
    }
}

async fn next_update(stream: &mut Streaming<FilterUpdate>) -> Update {
    let frame = tokio::time::timeout(FRAME_TIMEOUT, stream.message())
        .await
        .expect("a frame in time")
        .expect("a healthy stream")
        .expect("an open stream");
    frame.update.expect("a frame with content")
}

/// A complete snapshot (all parts), as the first frames of a stream.
async fn snapshot(stream: &mut Streaming<FilterUpdate>) -> (pb::Snapshot, SlicedFilter) {
    match next_update(stream).await {
        Update::Snapshot(first) => snapshot_from(stream, first).await,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// The snapshot whose first part is `first`, its other parts read next.
async fn snapshot_from(
    stream: &mut Streaming<FilterUpdate>,
    first: pb::Snapshot,
) -> (pb::Snapshot, SlicedFilter) {
    let mut done = first.part + 1 == first.parts;
    let mut parts = vec![first];
    while !done {
        match next_update(stream).await {
            Update::Snapshot(part) => {
                done = part.part + 1 == part.parts;
                parts.push(part);
            }
            other => panic!("expected snapshot parts, got {other:?}"),
        }
    }
    let bytes: Vec<u8> = parts
        .iter()
        .flat_map(|p| p.filter.iter().copied())
        .collect();
    let filter = SlicedFilter::from_bytes(bytes).expect("a valid filter");
    (parts.swap_remove(0), filter)
}

/// Collects delta digests until `wanted` of them arrived; heartbeats are
/// skipped, a snapshot fails the test.
async fn delta_digests(
    stream: &mut Streaming<FilterUpdate>,
    wanted: usize,
) -> (Vec<Vec<u8>>, String) {
    let mut digests = Vec::new();
    let mut cursor = String::new();
    while digests.len() < wanted {
        match next_update(stream).await {
            Update::Delta(delta) => {
                digests.extend(delta.added_digests().map(<[u8]>::to_vec));
                cursor = delta.cursor;
            }
            Update::Heartbeat(_) => {}
            Update::Snapshot(_) => panic!("a snapshot where deltas were expected"),
        }
    }
    (digests, cursor)
}

async fn revoke(client: &mut Client, jti: &str) -> String {
    let request = RevokeRequest {
        jti: jti.to_owned(),
        expires_at: unix_now() + 600,
        ..Default::default()
    };
    client
        .revoke(request)
        .await
        .expect("revoke")
        .into_inner()
        .cursor
}

fn key_of(snapshot: &pb::Snapshot) -> DigestKey {
    DigestKey::from_slice(&snapshot.digest_key).expect("16-byte digest key")
}

#[tokio::test]
async fn a_snapshot_holds_what_was_revoked_before_and_deltas_what_follows() {
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let mut admin = server.client(Some("key-admin")).await;
    revoke(&mut admin, "before").await;

    let mut gateway = server.client(Some("key-subscribe")).await;
    let mut stream = subscribe(&mut gateway, "", 0).await;
    let (first, filter) = snapshot(&mut stream).await;
    let key = key_of(&first);
    assert!(filter.contains(None, &key.token(ISSUER, "before")));
    assert!(!filter.contains(None, &key.token(ISSUER, "after")));

    let cursor = revoke(&mut admin, "after").await;
    let (digests, delta_cursor) = delta_digests(&mut stream, 1).await;
    assert_eq!(digests, vec![key.token(ISSUER, "after").0.to_vec()]);
    assert_eq!(
        delta_cursor, cursor,
        "the delta carries the revocation's cursor"
    );
}

#[tokio::test]
async fn subscribing_needs_the_subscribe_role() {
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let request = current();
    let denied = server
        .client(Some("key-revoke"))
        .await
        .subscribe(request.clone())
        .await;
    assert_eq!(
        denied.expect_err("no role").code(),
        tonic::Code::PermissionDenied
    );
    let anonymous = server.client(None).await.subscribe(request).await;
    assert_eq!(
        anonymous.expect_err("no key").code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_subscriber_of_one_replica_sees_revocations_made_through_another() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let args = deployment.args(&["--redis-url", &redis.url()]);
    let a = TestServer::start(&args).await;
    let b = TestServer::start(&args).await;
    let mut stream = subscribe(&mut a.client(Some("key-subscribe")).await, "", 0).await;
    let (first, _) = snapshot(&mut stream).await;

    revoke(&mut b.client(Some("key-revoke")).await, "via-b").await;
    let (digests, _) = delta_digests(&mut stream, 1).await;
    assert_eq!(
        digests,
        vec![key_of(&first).token(ISSUER, "via-b").0.to_vec()]
    );
}

#[tokio::test]
async fn a_gateway_subscribing_after_a_revoke_through_another_replica_finds_it_in_its_snapshot() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let args = deployment.args(&["--redis-url", &redis.url()]);
    let a = TestServer::start(&args).await;
    let b = TestServer::start(&args).await;
    // Batches through b keep a's follower busy, so it is often behind the
    // log's head when a subscription comes.
    let mut writer = b.client(Some("key-revoke")).await;
    let churn = tokio::spawn(async move {
        for round in 0.. {
            let items = (0..100)
                .map(|i| support::by_jti(&format!("churn-{round}-{i}"), unix_now() + 600))
                .collect();
            let request = pb::RevokeBatchRequest { items };
            if writer.revoke_batch(request).await.is_err() {
                return;
            }
            // Within what a debug build's follower applies, so a stays live.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut revoker = b.client(Some("key-revoke")).await;
    let mut gateway = a.client(Some("key-subscribe")).await;
    let mut lacking = Vec::new();
    for round in 0..30 {
        let jti = format!("acknowledged-{round}");
        revoke(&mut revoker, &jti).await;
        let mut stream = subscribe(&mut gateway, "", 0).await;
        // What the subscription was answered with: the snapshot (maybe a
        // cached one), the deltas catching it up, then a heartbeat.
        let (first, filter) = snapshot(&mut stream).await;
        let digest = key_of(&first).token(ISSUER, &jti);
        let mut found = filter.contains(None, &digest);
        loop {
            match next_update(&mut stream).await {
                Update::Delta(delta) => {
                    found |= delta.added_digests().any(|added| added == digest.0);
                }
                Update::Heartbeat(_) => break,
                Update::Snapshot(_) => panic!("a second snapshot before the first heartbeat"),
            }
        }
        if !found {
            lacking.push(jti);
        }
    }
    churn.abort();
    assert_eq!(
        lacking,
        Vec::<String>::new(),
        "snapshots lacking a revocation acknowledged before the Subscribe call"
    );
}

#[tokio::test]
async fn a_known_cursor_resumes_with_deltas_only() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--redis-url", &redis.url()])).await;
    let mut gateway = server.client(Some("key-subscribe")).await;
    let (first, _) = snapshot(&mut subscribe(&mut gateway, "", 0).await).await;

    let mut admin = server.client(Some("key-admin")).await;
    for jti in ["r1", "r2", "r3"] {
        revoke(&mut admin, jti).await;
    }
    let mut resumed = subscribe(&mut gateway, &first.cursor, first.generation).await;
    let (digests, _) = delta_digests(&mut resumed, 3).await;
    let key = key_of(&first);
    let expected: Vec<Vec<u8>> = ["r1", "r2", "r3"]
        .iter()
        .map(|j| key.token(ISSUER, j).0.to_vec())
        .collect();
    assert_eq!(digests, expected);
}

#[tokio::test]
async fn an_unknown_cursor_or_another_deployments_generation_gets_a_snapshot() {
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--delta-history", "2"])).await;
    let mut gateway = server.client(Some("key-subscribe")).await;
    let (first, _) = snapshot(&mut subscribe(&mut gateway, "", 0).await).await;
    let mut admin = server.client(Some("key-admin")).await;
    for i in 0..5 {
        revoke(&mut admin, &format!("r{i}")).await;
    }
    // The cursor fell out of the two-entry history.
    let mut stale = subscribe(&mut gateway, &first.cursor, first.generation).await;
    let (again, filter) = snapshot(&mut stale).await;
    assert!((0..5).all(|i| filter.contains(None, &key_of(&again).token(ISSUER, &format!("r{i}")))));
    // A generation of another deployment (its high 32 bits).
    let other_deployment = again.generation ^ (1 << 63);
    let mut foreign = subscribe(&mut gateway, &again.cursor, other_deployment).await;
    assert!(matches!(
        next_update(&mut foreign).await,
        Update::Snapshot(_)
    ));
    // Another build of this deployment (another replica's, say) with a
    // cursor in the history resumes: the change log is the same.
    let other_build = again.generation + 1;
    let mut resumed = subscribe(&mut gateway, &again.cursor, other_build).await;
    assert!(matches!(
        next_update(&mut resumed).await,
        Update::Heartbeat(_)
    ));
}

#[tokio::test]
async fn a_stalled_subscriber_slows_no_one_and_is_re_based_with_a_snapshot() {
    let deployment = Deployment::new();
    // A queue of 16 frames: the stalled subscriber's fills within the
    // burst below, while the live one has room for the moments its reader
    // waits for a core (the hub runs on a thread of its own, so nothing
    // makes it wait for the reader).
    let args = deployment.args(&["--subscriber-buffer", "16", "--heartbeat-interval", "50ms"]);
    let server = TestServer::start(&args).await;
    // One subscriber that reads nothing for a while (with a tiny HTTP/2
    // window, so the server's queue for it fills fast), one that keeps up.
    let mut stalled = subscribe(&mut narrow_client(&server).await, "", 0).await;
    let mut live = subscribe(&mut server.client(Some("key-subscribe")).await, "", 0).await;
    let (first, _) = snapshot(&mut live).await;
    let key = key_of(&first);

    // Enough deltas to fill the stalled stream's window and queue.
    const REVOCATIONS: usize = 300;
    let mut admin = server.client(Some("key-admin")).await;
    let reader = tokio::spawn(async move { delta_digests(&mut live, REVOCATIONS).await });
    for i in 0..REVOCATIONS {
        revoke(&mut admin, &format!("burst-{i}")).await;
    }
    let (digests, _) = tokio::time::timeout(FRAME_TIMEOUT, reader)
        .await
        .expect("live subscriber kept up")
        .unwrap();
    assert_eq!(digests.len(), REVOCATIONS);

    // The stalled one now reads: its first snapshot and what was queued,
    // then a fresh snapshot, and the delta catching that snapshot up: with
    // them it holds every revocation, never a silent gap.
    snapshot(&mut stalled).await;
    let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
    let rebased = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no re-basing snapshot"
        );
        if let Update::Snapshot(part) = next_update(&mut stalled).await {
            break snapshot_from(&mut stalled, part).await.1;
        }
    };
    let mut missing: Vec<usize> = (0..REVOCATIONS)
        .filter(|i| !rebased.contains(None, &key.token(ISSUER, &format!("burst-{i}"))))
        .collect();
    while !missing.is_empty() {
        let (digests, _) = delta_digests(&mut stalled, 1).await;
        missing.retain(|i| !digests.contains(&key.token(ISSUER, &format!("burst-{i}")).0.to_vec()));
    }
}

/// A subscriber's client whose HTTP/2 stream window is 1 KiB.
async fn narrow_client(server: &TestServer) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let key = "Bearer key-subscribe".parse().unwrap();
    pb::revocation_service_client::RevocationServiceClient::with_interceptor(
        channel,
        support::BearerKey::new(Some(key)),
    )
}

#[tokio::test]
async fn shutting_down_ends_the_streams_telling_gateways_to_go_elsewhere() {
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let mut stream = subscribe(&mut server.client(Some("key-subscribe")).await, "", 0).await;
    snapshot(&mut stream).await;
    tokio::time::timeout(FRAME_TIMEOUT, server.stop())
        .await
        .expect("stopped within the grace period");
    let end = tokio::time::timeout(FRAME_TIMEOUT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    });
    let status = end
        .await
        .expect("the stream ended")
        .expect_err("ended with a status that says why");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
}

#[tokio::test]
async fn streams_per_key_are_limited_and_released_when_closed() {
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&["--max-streams-per-key", "1"])).await;
    let mut client = server.client(Some("key-subscribe")).await;
    let first = subscribe(&mut client, "", 0).await;
    let refused = client
        .subscribe(current())
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-streams-per-key"),
        "{}",
        refused.message()
    );
    // Another key is not affected.
    let mut other = server.client(Some("key-admin")).await;
    snapshot(&mut subscribe(&mut other, "", 0).await).await;

    drop(first);
    let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
    while client.subscribe(current()).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's permit was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream IDs a cursor names, one per log partition, as (millis, seq).
fn cursor_positions(cursor: &str) -> Vec<(u64, u64)> {
    cursor
        .split(',')
        .map(|id| {
            let (millis, sequence) = id.split_once('-').expect("a stream ID");
            (millis.parse().unwrap(), sequence.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn on_a_cluster_a_subscriber_sees_every_partition_in_order() {
    const PARTITIONS: usize = 6;
    let cluster = RedisCluster::start(3);
    let deployment = Deployment::new();
    let partitions = PARTITIONS.to_string();
    let args = [
        "--redis-cluster",
        &cluster.urls_flag(),
        "--log-partitions",
        &partitions,
    ];
    let writer = TestServer::start(&deployment.args(&args)).await;
    let mut admin = writer.client(Some("key-admin")).await;
    for jti in ["before-0", "before-1"] {
        revoke(&mut admin, jti).await;
    }
    // A second replica: it loads what is there, then follows every
    // partition's log; the writes go through the first.
    let reader = TestServer::start(&deployment.args(&args)).await;
    let mut gateway = reader.client(Some("key-subscribe")).await;
    let mut stream = subscribe(&mut gateway, "", 0).await;
    let (first, filter) = snapshot(&mut stream).await;
    let key = key_of(&first);
    assert!(filter.contains(None, &key.token(ISSUER, "before-1")));
    assert_eq!(cursor_positions(&first.cursor).len(), PARTITIONS);

    let jtis: Vec<String> = (0..60).map(|i| format!("spread-{i}")).collect();
    let mut write_partitions = std::collections::BTreeSet::new();
    for jti in &jtis {
        let cursor = revoke(&mut admin, jti).await;
        write_partitions.insert(cursor.split_once(':').expect("partition:id").0.to_owned());
    }
    assert_eq!(
        write_partitions.len(),
        PARTITIONS,
        "60 jtis land in every partition"
    );

    // Every delta's cursor moves each partition forward, never back.
    let mut seen = Vec::new();
    let mut last = cursor_positions(&first.cursor);
    while seen.len() < jtis.len() {
        match next_update(&mut stream).await {
            Update::Delta(delta) => {
                let now = cursor_positions(&delta.cursor);
                for (partition, (before, after)) in last.iter().zip(&now).enumerate() {
                    assert!(
                        after >= before,
                        "partition {partition} went back: {before:?} -> {after:?}"
                    );
                }
                last = now;
                seen.extend(delta.added_digests().map(<[u8]>::to_vec));
            }
            Update::Heartbeat(_) => {}
            Update::Snapshot(_) => panic!("a snapshot where deltas were expected"),
        }
    }
    let mut expected: Vec<Vec<u8>> = jtis
        .iter()
        .map(|j| key.token(ISSUER, j).0.to_vec())
        .collect();
    let mut got = seen.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "each revocation exactly once");
    // Per partition, the digests arrive in the order they were written.
    for partition in 0..PARTITIONS {
        let order_written: Vec<&String> = jtis
            .iter()
            .filter(|j| {
                let cursor_partition = revocd_partition(j, PARTITIONS);
                cursor_partition == partition
            })
            .collect();
        let order_seen: Vec<&String> = seen
            .iter()
            .filter_map(|digest| {
                jtis.iter()
                    .find(|j| key.token(ISSUER, j).0.as_slice() == digest.as_slice())
            })
            .filter(|j| revocd_partition(j, PARTITIONS) == partition)
            .collect();
        assert_eq!(order_seen, order_written, "partition {partition}");
    }

    // Resuming from the last cursor gets deltas only.
    revoke(&mut admin, "after-resume").await;
    let mut resumed = subscribe(&mut gateway, &last_cursor(&last), first.generation).await;
    let (digests, _) = delta_digests(&mut resumed, 1).await;
    assert_eq!(digests, [key.token(ISSUER, "after-resume").0.to_vec()]);
}

/// The cursor text of positions.
fn last_cursor(positions: &[(u64, u64)]) -> String {
    positions
        .iter()
        .map(|(millis, sequence)| format!("{millis}-{sequence}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The partition revocd stores a jti of the test issuer in: FNV-1a of the
/// record name, as documented in `src/store/redis/mod.rs`.
fn revocd_partition(jti: &str, partitions: usize) -> usize {
    let name = format!("{}:{ISSUER}:{jti}", ISSUER.len());
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % partitions as u64) as usize
}

// === claim cut-offs and the stream protocol ===

/// Subscribes declaring stream `protocol`; the refusal, if any.
async fn subscribe_as(
    client: &mut Client,
    protocol: u32,
    cursor: &str,
    generation: u64,
) -> Result<Streaming<FilterUpdate>, tonic::Status> {
    support::trace_init();
    let request = SubscribeRequest {
        cursor: cursor.to_owned(),
        generation,
        gateway_id: format!("protocol-{protocol}"),
        protocol,
    };
    client
        .subscribe(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The next delta; heartbeats are skipped, a snapshot fails the test.
async fn next_delta(stream: &mut Streaming<FilterUpdate>) -> pb::Delta {
    loop {
        match next_update(stream).await {
            Update::Delta(delta) => return delta,
            Update::Heartbeat(_) => {}
            Update::Snapshot(_) => panic!("a snapshot where a delta was expected"),
        }
    }
}

/// The next delta carrying claim cut-offs; others are skipped.
async fn next_claims_delta(stream: &mut Streaming<FilterUpdate>) -> pb::Delta {
    loop {
        let delta = next_delta(stream).await;
        if !delta.claims.is_empty() {
            return delta;
        }
    }
}

/// The claim cut-offs a stream's first snapshot and its catch-up deltas
/// hold, up to the first heartbeat (sent once the state is current).
async fn claims_when_current(stream: &mut Streaming<FilterUpdate>) -> Vec<pb::ClaimCutoff> {
    let (first, _) = snapshot(stream).await;
    let mut claims = first.claims;
    loop {
        match next_update(stream).await {
            Update::Delta(delta) => claims.extend(delta.claims),
            Update::Heartbeat(_) => return claims,
            Update::Snapshot(_) => panic!("a second snapshot before a heartbeat"),
        }
    }
}

/// The next delta carrying cut-offs (subject or claim ones).
async fn next_cutoff_delta(stream: &mut Streaming<FilterUpdate>) -> pb::Delta {
    loop {
        let delta = next_delta(stream).await;
        if !delta.subjects.is_empty() || !delta.claims.is_empty() {
            return delta;
        }
    }
}

async fn revoke_claim(
    client: &mut Client,
    claim: &str,
    value: &str,
) -> revocd::pb::RevokeClaimResponse {
    let request = pb::RevokeClaimRequest {
        claim: claim.to_owned(),
        value: value.to_owned(),
        ..Default::default()
    };
    client
        .revoke_claim(request)
        .await
        .expect("revoke claim")
        .into_inner()
}

async fn revoke_subject(client: &mut Client, subject: &str) -> i64 {
    let request = pb::RevokeSubjectRequest {
        subject: subject.to_owned(),
        ..Default::default()
    };
    client
        .revoke_subject(request)
        .await
        .expect("revoke subject")
        .into_inner()
        .not_before
}

fn assert_outdated(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("protocol 3") && status.message().contains("upgrade"),
        "the refusal says why: {status:?}"
    );
}

/// Gateways below protocol 3 are refused, fresh or resuming, with or
/// without cut-offs live (they could not read the sliced filter); this
/// build's gateways get subject and claim cut-offs by snapshot, delta and
/// resume.
#[tokio::test]
async fn older_gateways_are_refused_and_current_ones_get_every_cutoff() {
    let deployment = Deployment::new();
    let server = TestServer::start(&deployment.args(&[])).await;
    let mut gateway = server.client(Some("key-subscribe")).await;
    let mut admin = server.client(Some("key-admin")).await;
    let mut current = subscribe(&mut gateway, "", 0).await;
    let (first, _) = snapshot(&mut current).await;
    let key = key_of(&first);
    assert!(first.claims.is_empty(), "{first:?}");
    for protocol in [0, 1, 2] {
        let status = subscribe_as(&mut gateway, protocol, "", 0)
            .await
            .map(drop)
            .expect_err(&format!("protocol {protocol} refused"));
        assert_outdated(&status);
    }

    let not_before = revoke_subject(&mut admin, "alice").await;
    let delta = next_cutoff_delta(&mut current).await;
    assert_eq!(
        delta.subjects,
        [pb::SubjectCutoff {
            digest: key.subject(ISSUER, "alice").0.to_vec(),
            not_before,
        }]
    );
    let cut = revoke_claim(&mut admin, "sid", "s-1").await;
    let expected = pb::ClaimCutoff {
        digest: key.claim(ISSUER, "sid", "s-1").0.to_vec(),
        not_before: cut.not_before,
        claim: "sid".into(),
    };
    let delta = next_claims_delta(&mut current).await;
    assert_eq!(delta.claims, std::slice::from_ref(&expected));
    assert_eq!(delta.cursor, cut.cursor);
    for protocol in [0, 2] {
        let status = subscribe_as(&mut gateway, protocol, &delta.cursor, first.generation)
            .await
            .map(drop)
            .expect_err(&format!("protocol {protocol} refused on resume"));
        assert_outdated(&status);
    }

    let mut fresh = subscribe(&mut gateway, "", 0).await;
    assert_eq!(claims_when_current(&mut fresh).await, [expected]);
    let mut resumed = subscribe(&mut gateway, &first.cursor, first.generation).await;
    let delta = next_cutoff_delta(&mut resumed).await;
    assert_eq!(delta.subjects.len(), 1, "{delta:?}");
    let delta = if delta.claims.is_empty() {
        next_cutoff_delta(&mut resumed).await
    } else {
        delta
    };
    assert_eq!(delta.claims.len(), 1, "{delta:?}");
    assert_eq!(delta.claims[0].claim, "sid");
}
