//! The earlier-version fault: a replica of the version before token
//! revocations were packed (`src/store/redis/packed.rs`) keeps writing
//! during a rolling upgrade. Every [`EVERY`], one fresh token is revoked
//! the way that version's revoke script wrote it: a hash of seven fields
//! with `EXPIREAT`, the expiry index entry, and a log entry of ten fields,
//! in one `MULTI`/`EXEC` as the script was atomic. Once Redis has
//! answered, the revocation joins the ledger as acknowledged, with its
//! change's position, and every invariant holds for it as for the
//! others: the current replicas must follow the old entries and load the
//! old records after a restart. Each is also checked at once through a
//! replica (taking turns): "not revoked" is a violation, and so is an
//! error other than UNAVAILABLE from a replica that was up.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::issuer::{Issuer, LEEWAY};
use super::ledger::Token;
use super::load::{check, lazy_client};
use super::nemesis::{secs, Stage};
use super::report::ViolationKind;
use super::verify::{explained, log_key, partition_of, record_key};

/// Pause between two writes.
const EVERY: Duration = Duration::from_millis(100);
/// The earlier version's log retention, as the test bed's replicas use.
const RETENTION: u64 = super::testbed::LOG_RETENTION;

/// Writes as the earlier version did, for `hold`.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let url = stage.bed.redis_url.clone();
    let mut clients: Vec<_> = stage
        .bed
        .replica_addresses
        .iter()
        .map(|address| lazy_client(*address))
        .collect();
    let started = Instant::now();
    let (mut written, mut failed) = (0, 0);
    while started.elapsed() < hold {
        let issuer = if rng.random() { Issuer::A } else { Issuer::B };
        let jti = format!("p{}-earlier-{written}-{}", stage.phase, rng.random::<u32>());
        let token = Token::of(issuer, "chaos-earlier", &jti);
        let (url, written_token, partitions) = (url.clone(), token.clone(), stage.partitions);
        let write = move || write_as_earlier(&url, &written_token, partitions);
        match tokio::task::spawn_blocking(write).await.expect("writer") {
            Ok(cursor) => {
                written += 1;
                let entry = stage.ledger.acknowledge(stage.phase, token, &cursor);
                let replica = written % clients.len();
                let checked = check(&mut clients[replica], replica, entry, stage.tally).await;
                if let Err((code, message)) = checked.answer {
                    let windows = stage.timeline.windows();
                    if !explained(code, replica, checked.sent, checked.answered, &windows) {
                        let detail = format!("Check {jti}: {code:?} {message:?}");
                        stage.tally.violation(
                            ViolationKind::UnexpectedError,
                            &format!("replica-{replica}"),
                            detail,
                        );
                    }
                }
            }
            // Redis may be out meanwhile (another fault): nothing written.
            Err(_) => failed += 1,
        }
        tokio::time::sleep(EVERY).await;
    }
    let detail = format!(
        "{written} revocations written as the earlier version did in {} ({failed} failed)",
        secs(started.elapsed())
    );
    (written, detail)
}

/// Revokes `token` by jti as the earlier revoke script did for a new
/// revocation; returns the change's cursor as a replica would have
/// answered it.
fn write_as_earlier(url: &str, token: &Token, partitions: u16) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    let issuer = token.claims.issuer.clone();
    let jti = token.jti().to_owned();
    let exp = token.claims.expires_at.expect("chaos tokens expire");
    let until = exp + LEEWAY;
    let now = revocd::time::unix_now();
    let partition = partition_of(&issuer, &jti, partitions);
    let name = format!("{}:{issuer}:{jti}", issuer.len());
    let key = record_key(token, partitions);
    let (exp, until_text, at) = (exp.to_string(), until.to_string(), now.to_string());
    let fields = [
        ("exp", exp.as_str()),
        ("until", &until_text),
        ("at", &at),
        ("by", "earlier-version"),
        ("reason", "rolling upgrade"),
        ("sub", "chaos-earlier"),
        ("from", "127.0.0.1:1"),
    ];
    let (id,): (String,) = redis::pipe()
        .atomic()
        .hset_multiple(&key, &fields)
        .ignore()
        .cmd("EXPIREAT")
        .arg(&key)
        .arg(until)
        .ignore()
        .zadd(
            format!("revocd:v1:{{p{partition}}}:jti-expiry"),
            &name,
            until,
        )
        .ignore()
        .cmd("XADD")
        .arg(log_key(partition))
        .arg("MAXLEN")
        .arg("~")
        .arg(RETENTION)
        .arg("*")
        .arg(&[("kind", "jti"), ("iss", issuer.as_str()), ("id", &jti)])
        .arg(&fields)
        .query(&mut connection)?;
    Ok(match partitions {
        0 | 1 => id,
        _ => format!("{partition}:{id}"),
    })
}
