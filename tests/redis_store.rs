//! The Redis backend seen from outside: what lands in Redis, what happens
//! when Redis dies and comes back, and several replicas sharing one Redis.
//! Every test starts its own `redis-server`; none is ever skipped.

mod support;

use std::time::Duration;

use redis::Commands;
use revocd::pb::revocation_record::Record;
use revocd::pb::{
    CheckRequest, ListChangesRequest, ListRevocationsRequest, RevokeRequest, RevokeSubjectRequest,
};
use revocd::time::unix_now;
use support::{
    by_jti, by_token, token_for, wait_for_health, Deployment, RedisServer, Replica, ServingStatus,
    TestServer, ISSUER,
};
use tonic::Code;

/// The record key of a jti of the test issuer, as documented in
/// `src/store/redis.rs`.
fn jti_key(jti: &str) -> String {
    format!("revocd:v1:{{p0}}:jti:{}:{ISSUER}:{jti}", ISSUER.len())
}

/// Bound on a change of health or a recovery after an outage.
const SOON: Duration = Duration::from_secs(10);

async fn start(redis: &RedisServer, deployment: &Deployment) -> TestServer {
    support::trace_init();
    TestServer::start(&deployment.args(&["--redis-url", &redis.url(), "--redis-timeout", "500ms"]))
        .await
}

#[tokio::test]
async fn a_record_expires_at_exp_plus_leeway() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let server = start(&redis, &deployment).await;
    let expires_at = unix_now() + 600;
    let mut client = server.client(Some("key-admin")).await;
    client
        .revoke(by_jti("ttl", expires_at))
        .await
        .expect("revoke");
    let not_before = unix_now() - 10;
    let cutoff = RevokeSubjectRequest {
        subject: "alice".into(),
        not_before,
        ..Default::default()
    };
    client.revoke_subject(cutoff).await.expect("cutoff");

    let mut redis_connection = redis.connection();
    let expire_time: i64 = redis::cmd("EXPIRETIME")
        .arg(jti_key("ttl"))
        .query(&mut redis_connection)
        .unwrap();
    assert_eq!(expire_time, expires_at + 60, "token exp + default leeway");
    let subject_key = format!("revocd:v1:{{p0}}:sub:{}:{ISSUER}:alice", ISSUER.len());
    let expire_time: i64 = redis::cmd("EXPIRETIME")
        .arg(&subject_key)
        .query(&mut redis_connection)
        .unwrap();
    assert_eq!(
        expire_time,
        not_before + 24 * 3600 + 60,
        "cut-off + max token lifetime + leeway"
    );
}

/// A packed token revocation, read as `src/store/redis/packed.rs`
/// documents its bytes: `2 <exp> <until> <at> ` and then `by`, `sub`,
/// `from` and `reason`, each as `<byte length>:<text>`.
#[derive(Debug, PartialEq)]
struct Packed {
    expires_at: i64,
    keep_until: i64,
    at: i64,
    by: String,
    subject: String,
    source: String,
    reason: String,
}

impl Packed {
    fn read(value: &str) -> Packed {
        let mut head = value.splitn(5, ' ');
        assert_eq!(head.next(), Some("2"), "the packing's version: {value:?}");
        let mut number = || head.next().unwrap().parse::<i64>().unwrap();
        let (expires_at, keep_until, at) = (number(), number(), number());
        let mut rest = head.next().unwrap().as_bytes();
        let mut text = || {
            let colon = rest.iter().position(|&b| b == b':').unwrap();
            let length: usize = std::str::from_utf8(&rest[..colon])
                .unwrap()
                .parse()
                .unwrap();
            let text = String::from_utf8(rest[colon + 1..colon + 1 + length].to_vec()).unwrap();
            rest = &rest[colon + 1 + length..];
            text
        };
        let packed = Packed {
            expires_at,
            keep_until,
            at,
            by: text(),
            subject: text(),
            source: text(),
            reason: text(),
        };
        assert!(rest.is_empty(), "{value:?} has bytes after its fields");
        packed
    }
}

#[tokio::test]
async fn each_change_is_logged_once_with_its_cursor() {
    logged_once_with_cursor("1").await;
}

#[tokio::test]
async fn each_change_is_logged_once_with_its_cursor_in_entries_of_format_2() {
    logged_once_with_cursor("2").await;
}

/// A token revocation's log entry of `--log-entry-format` `format`, read
/// as `src/store/redis/packed.rs` and `src/store/redis/mod.rs` document it:
/// (iss, jti, packed revocation).
fn logged_token(format: &str, entry: &redis::streams::StreamId) -> (String, String, Packed) {
    let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
    if format == "1" {
        assert_eq!(entry.map.len(), 5, "{entry:?}");
        assert_eq!(field("kind"), "jti");
        let packed = Packed::read(&field("rec"));
        assert_eq!(field("until"), packed.keep_until.to_string());
        return (field("iss"), field("id"), packed);
    }
    // One field: `<len>:<iss><len>:<jti>` and the packed revocation.
    assert_eq!(entry.map.len(), 1, "{entry:?}");
    let value = field("rev");
    let mut rest = value.as_str();
    let mut text = || {
        let (length, after) = rest.split_once(':').expect("a length");
        let (text, after) = after.split_at(length.parse().expect("a number"));
        rest = after;
        text.to_owned()
    };
    let (issuer, jti) = (text(), text());
    (issuer, jti, Packed::read(rest))
}

async fn logged_once_with_cursor(format: &str) {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    support::trace_init();
    let server = TestServer::start(&deployment.args(&[
        "--redis-url",
        &redis.url(),
        "--log-entry-format",
        format,
    ]))
    .await;
    let mut client = server.client(Some("key-revoke")).await;
    let expires_at = unix_now() + 600;
    let mut request = by_jti("logged", expires_at);
    request.reason = "incident 42: lost 2:laptops".into();
    let first = client
        .revoke(request.clone())
        .await
        .expect("revoke")
        .into_inner();
    client.revoke(request.clone()).await.expect("repeat");
    // An extension (a later exp) is logged with its own provenance; the
    // record keeps the first.
    request.expires_at = expires_at + 100;
    request.reason = "extended".into();
    let extension = client.revoke(request).await.expect("extend").into_inner();

    let mut redis_connection = redis.connection();
    let entries: redis::streams::StreamRangeReply = redis_connection
        .xrange_all("revocd:v1:{p0}:log")
        .expect("XRANGE");
    assert_eq!(entries.ids.len(), 2, "a repeat appends nothing");
    let ids: Vec<&str> = entries.ids.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(ids, [first.cursor.as_str(), extension.cursor.as_str()]);
    let logged: Vec<Packed> = entries
        .ids
        .iter()
        .map(|entry| {
            let (issuer, jti, packed) = logged_token(format, entry);
            assert_eq!((issuer.as_str(), jti.as_str()), (ISSUER, "logged"));
            packed
        })
        .collect();
    assert_eq!(
        (logged[0].by.as_str(), logged[0].reason.as_str()),
        ("auth-server", "incident 42: lost 2:laptops")
    );
    assert_eq!(logged[0].expires_at, expires_at);
    assert_eq!(
        logged[0].keep_until,
        expires_at + 60,
        "exp + default leeway"
    );
    assert!(logged[0].source.starts_with("127.0.0.1:"), "{logged:?}");
    assert_eq!(logged[1].reason, "extended");
    assert_eq!(logged[1].expires_at, expires_at + 100);

    let record: String = redis_connection.get(jti_key("logged")).expect("GET");
    let record = Packed::read(&record);
    assert_eq!(
        record,
        Packed {
            expires_at: expires_at + 100,
            keep_until: expires_at + 160,
            ..logged_token(format, &entries.ids[0]).2
        },
        "the first revocation's provenance with the extension's exp"
    );
    let expire_time: i64 = redis::cmd("EXPIRETIME")
        .arg(jti_key("logged"))
        .query(&mut redis_connection)
        .unwrap();
    assert_eq!(expire_time, expires_at + 160);
}

#[tokio::test]
async fn a_revocation_stored_before_packing_is_found_listed_and_extended() {
    let redis = RedisServer::start();
    let expires_at = unix_now() + 600;
    let keep_until = expires_at + 60;
    // A record, index entry and log entry as revocd wrote them before
    // token revocations were packed: a hash and ten entry fields.
    let mut redis_connection = redis.connection();
    let (exp, until) = (expires_at.to_string(), keep_until.to_string());
    let fields = [
        ("exp", exp.as_str()),
        ("until", until.as_str()),
        ("at", "1700000000"),
        ("by", "old-key"),
        ("reason", "from before"),
        ("sub", "alice"),
        ("from", "10.0.0.9:1"),
    ];
    let name = format!("{}:{ISSUER}:hashed", ISSUER.len());
    let _: () = redis::pipe()
        .hset_multiple(jti_key("hashed"), &fields)
        .ignore()
        .cmd("EXPIREAT")
        .arg(jti_key("hashed"))
        .arg(keep_until)
        .ignore()
        .zadd("revocd:v1:{p0}:jti-expiry", &name, keep_until)
        .ignore()
        .cmd("XADD")
        .arg("revocd:v1:{p0}:log")
        .arg("*")
        .arg(&[("kind", "jti"), ("iss", ISSUER), ("id", "hashed")])
        .arg(&fields)
        .ignore()
        .query(&mut redis_connection)
        .expect("writing the old record");

    let deployment = Deployment::new();
    let server = start(&redis, &deployment).await;
    let mut client = server.client(Some("key-admin")).await;
    let check = CheckRequest {
        jti: "hashed".into(),
        ..Default::default()
    };
    let answer = client
        .check(check.clone())
        .await
        .expect("check")
        .into_inner();
    assert!(answer.revoked, "{answer:?}");
    assert_eq!(
        (answer.revoked_by.as_str(), answer.reason.as_str()),
        ("old-key", "from before")
    );
    let listed = client
        .list_revocations(ListRevocationsRequest::default())
        .await
        .expect("list")
        .into_inner();
    let Some(Record::Token(token)) = listed.records.first().and_then(|r| r.record.clone()) else {
        panic!("the old record is listed: {listed:?}");
    };
    assert_eq!(
        (token.subject.as_str(), token.expires_at),
        ("alice", expires_at)
    );
    let changes = client
        .list_changes(ListChangesRequest::default())
        .await
        .expect("audit trail")
        .into_inner();
    assert_eq!(changes.changes.len(), 1, "{changes:?}");
    assert_eq!(changes.changes[0].record.as_ref().unwrap().actor, "old-key");

    // A repeat changes nothing; a later exp extends the hash in place.
    let repeat = client
        .revoke(by_jti("hashed", expires_at))
        .await
        .expect("repeat")
        .into_inner();
    assert!(repeat.cursor.is_empty(), "{repeat:?}");
    client
        .revoke(by_jti("hashed", expires_at + 100))
        .await
        .expect("extend");
    let kind: String = redis::cmd("TYPE")
        .arg(jti_key("hashed"))
        .query(&mut redis_connection)
        .unwrap();
    assert_eq!(kind, "hash");
    let (exp, until, by): (i64, i64, String) = redis::cmd("HMGET")
        .arg(jti_key("hashed"))
        .arg(&["exp", "until", "by"])
        .query(&mut redis_connection)
        .unwrap();
    assert_eq!(
        (exp, until, by.as_str()),
        (expires_at + 100, keep_until + 100, "old-key")
    );
    let expire_time: i64 = redis::cmd("EXPIRETIME")
        .arg(jti_key("hashed"))
        .query(&mut redis_connection)
        .unwrap();
    assert_eq!(expire_time, keep_until + 100);
    let answer = client.check(check).await.expect("check").into_inner();
    assert_eq!(answer.expires_at, expires_at + 100);
}

#[tokio::test]
async fn a_dead_redis_means_unavailable_then_recovery_without_loss() {
    // Durable Redis, so a restart keeps what it acknowledged.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let deployment = Deployment::new();
    let server = start(&redis, &deployment).await;
    let mut client = server.client(Some("key-admin")).await;
    let acknowledged = token_for("alice", "before-outage");
    client
        .revoke(RevokeRequest {
            token: acknowledged.clone(),
            ..Default::default()
        })
        .await
        .expect("revoke");

    redis.kill();
    let status = client
        .revoke(by_jti("during-outage", unix_now() + 600))
        .await
        .expect_err("no Redis");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let check = CheckRequest {
        token: acknowledged.clone(),
        ..Default::default()
    };
    assert_eq!(
        client
            .check(check.clone())
            .await
            .expect_err("no Redis")
            .code(),
        Code::Unavailable
    );
    wait_for_health(server.address, ServingStatus::NotServing, SOON).await;

    redis.restart();
    wait_for_health(server.address, ServingStatus::Serving, SOON).await;
    let deadline = tokio::time::Instant::now() + SOON;
    let reply = loop {
        match client
            .revoke(by_jti("after-outage", unix_now() + 600))
            .await
        {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "did not recover: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(reply.newly_revoked);
    let status = client
        .check(check)
        .await
        .expect("check after recovery")
        .into_inner();
    assert!(
        status.revoked,
        "the revocation acknowledged before the outage survived"
    );
}

#[tokio::test]
async fn replicas_on_one_redis_behave_as_one_service() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let args = deployment.args(&["--redis-url", &redis.url()]);
    let a = Replica::spawn(&args).await;
    let b = Replica::spawn(&args).await;
    let token = token_for("alice", "shared");

    let first = a.client(None).await.revoke(by_token(&token)).await;
    assert!(first.expect("revoke via A").into_inner().newly_revoked);
    let again = b.client(None).await.revoke(by_token(&token)).await;
    assert!(
        !again.expect("revoke via B").into_inner().newly_revoked,
        "B sees A's revocation"
    );

    let check = CheckRequest {
        token,
        ..Default::default()
    };
    let status = b
        .client(Some("key-read"))
        .await
        .check(check)
        .await
        .expect("check via B");
    assert!(status.into_inner().revoked);

    let cutoff = RevokeSubjectRequest {
        subject: "bob".into(),
        ..Default::default()
    };
    b.client(Some("key-revoke"))
        .await
        .revoke_subject(cutoff)
        .await
        .expect("cutoff via B");
    let now = unix_now();
    let bob = support::sign(
        &serde_json::json!({"iss": ISSUER, "sub": "bob", "jti": "b1", "iat": now - 60, "exp": now + 600}),
    );
    let status = a
        .client(Some("key-read"))
        .await
        .check(CheckRequest {
            token: bob,
            ..Default::default()
        })
        .await;
    assert!(status.expect("check via A").into_inner().by_subject);
}

#[tokio::test]
async fn deployments_with_different_prefixes_do_not_see_each_other() {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let blue = TestServer::start(&deployment.args(&[
        "--redis-url",
        &redis.url(),
        "--key-prefix",
        "blue:",
    ]))
    .await;
    let green = TestServer::start(&deployment.args(&[
        "--redis-url",
        &redis.url(),
        "--key-prefix",
        "green:",
    ]))
    .await;
    blue.client(Some("key-revoke"))
        .await
        .revoke(by_jti("p", unix_now() + 600))
        .await
        .expect("revoke");
    let check = CheckRequest {
        jti: "p".into(),
        ..Default::default()
    };
    let in_green = green
        .client(Some("key-read"))
        .await
        .check(check.clone())
        .await
        .expect("green");
    let in_blue = blue
        .client(Some("key-read"))
        .await
        .check(check)
        .await
        .expect("blue");
    assert!(!in_green.into_inner().revoked);
    assert!(in_blue.into_inner().revoked);
}

/// The newest end of the log, where a replica starts following, is read in
/// pages (one reply of `--delta-history` entries could outlast the Redis
/// timeout): the pages join into the newest entries, in log order, ending
/// at the head.
#[tokio::test]
async fn the_logs_newest_end_is_read_whole_across_pages() {
    use revocd::pb::RevokeBatchRequest;
    use revocd::store::{
        Durability, EntryFormat, RedisNodes, RedisStore, RedisStoreOptions, Store,
    };
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let server = start(&redis, &deployment).await;
    let mut client = server.client(Some("key-revoke")).await;
    let mut last_cursor = String::new();
    for batch in 0..3 {
        let items = (0..1_000)
            .map(|n| by_jti(&format!("paged-{batch}-{n}"), unix_now() + 600))
            .collect();
        let reply = client
            .revoke_batch(RevokeBatchRequest { items })
            .await
            .expect("batch")
            .into_inner();
        // Items are appended in order: the last one's cursor is the newest.
        last_cursor = reply
            .results
            .last()
            .and_then(|r| r.response.as_ref())
            .map(|r| r.cursor.clone())
            .expect("stored");
    }
    let store = Store::Redis(
        RedisStore::connect(&RedisStoreOptions {
            nodes: RedisNodes::Single(redis.url()),
            key_prefix: "revocd:".into(),
            partitions: 1,
            log_retention: 100_000,
            response_timeout: Duration::from_secs(5),
            durability: Durability::Fast,
            wait_replicas: 0,
            entry_format: EntryFormat::default(),
        })
        .await
        .expect("store"),
    );
    let tail = store.log_tail(2_500).await.expect("tail");
    assert_eq!(tail.entries.len(), 2_500);
    assert_eq!(tail.head, last_cursor);
    assert_eq!(
        tail.entries.last().map(|e| e.cursor.as_str()),
        Some(last_cursor.as_str())
    );
    let in_order = tail.entries.windows(2).all(|pair| {
        let id = |c: &str| -> (u64, u64) {
            let (ms, seq) = c.split_once('-').expect("stream id");
            (ms.parse().unwrap(), seq.parse().unwrap())
        };
        id(&pair[0].cursor) < id(&pair[1].cursor)
    });
    assert!(in_order, "entries in log order");
    assert_eq!(tail.start, None, "older entries exist");
    let all = store.log_tail(5_000).await.expect("tail");
    assert_eq!(all.entries.len(), 3_000);
}

/// Gateways look for a revocation in the filter slice of the token's `exp`
/// plus the leeway, so a replica keeping records for another leeway than
/// the deployment's would file them where no gateway looks: it refuses to
/// start, naming the leeway to use, and the first one's is kept.
#[tokio::test]
async fn a_replica_with_another_leeway_than_the_deployments_refuses_to_start() {
    let redis = RedisServer::start();
    let deployment = support::Deployment::new();
    let with_leeway = |leeway: &str| {
        support::serve_config(&deployment.args(&["--redis-url", &redis.url(), "--leeway", leeway]))
    };
    let first = with_leeway("60").start_state(None).await;
    assert!(first.is_ok(), "the first replica records its leeway");
    let Err(refused) = with_leeway("120").start_state(None).await else {
        panic!("a replica with another leeway started");
    };
    let message = refused.to_string();
    assert!(
        message.contains("--leeway 120") && message.contains("Use --leeway 60"),
        "{message}"
    );
    assert!(
        with_leeway("60").start_state(None).await.is_ok(),
        "the same leeway starts"
    );
}
