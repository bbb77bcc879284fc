//! The log-trim fault: a replica stalled past the change log's retention.
//!
//! The replicas run with `--log-retention` [`LOG_RETENTION`] (`XADD MAXLEN
//! ~`, per partition). The nemesis cuts a replica off from the subscribers
//! (its proxy closes every connection) and stalls it: SIGSTOP, with a
//! [`RUN`] of SIGCONT every [`STALL`], so that its change-log follower
//! crawls but its reads never outlive their deadline (1.5 s: a read that
//! times out makes the follower reload, and nothing is skipped). Meanwhile
//! tokens of one partition are revoked through another replica with
//! `RevokeBatch` until that partition's first entry is past the stalled
//! replica's cursor (read from a gateway following it alone): the entries
//! it has not read are gone. Then it runs again, and the streams through
//! the other replicas' proxies are cut, so the subscribers move onto it.
//! A replica that resumes reading after its old cursor misses the trimmed
//! changes and serves a filter without them; one that notices the gap
//! reloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::issuer::Issuer;
use super::ledger::{stream_id, HighWater, StreamId, Token};
use super::load::{self, lazy_client, BATCH};
use super::nemesis::{secs, Stage, Target};
use super::testbed::{Subscriber, Testbed, LOG_RETENTION};
use super::verify::{log_key, partition_of};

/// Batches sent at most: three times the retention.
const MAX_BATCHES: usize = 3 * LOG_RETENTION as usize / BATCH;
/// How long before now the flood's tokens expired: they last another
/// [`super::issuer::LEEWAY`] less this, 25 s, enough for the phase's checks.
const FLOOD_EXPIRED_FOR: i64 = 35;
/// `RevokeBatch` calls in flight at once.
const CONCURRENT_BATCHES: usize = 3;
/// How long the stalled replica is stopped at a time: well under its
/// follower's read deadline (`TAIL_WAIT` + `--redis-timeout`, 1.5 s).
const STALL: Duration = Duration::from_millis(250);
/// How long it runs in between.
const RUN: Duration = Duration::from_millis(15);
/// Time between the end of the stall and cutting the other replicas'
/// streams, for the resumed follower to read again (a replica whose
/// follower has been silent refuses subscribers).
const RESUME_SETTLE: Duration = Duration::from_millis(300);

/// Injects the fault.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng, _hold: Duration) -> (usize, String) {
    let bed = stage.bed;
    let stalled = rng.random_range(0..bed.replicas.len());
    let via = (stalled + 1) % bed.replicas.len();
    let partition = rng.random_range(0..stage.partitions);
    let probe = bed.probe(stalled);
    let replica = bed.replicas[stalled].lock().await;
    let pid = replica.pid();
    bed.proxies[stalled].set_blocked(true);
    let window = stage.timeline.open(Target::Replica(stalled));
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let flood = async {
        let outcome = flood(stage, &probe, via, partition).await;
        done.store(true, Ordering::Relaxed);
        outcome
    };
    let ((acked, past), stops) = tokio::join!(flood, stutter(bed, pid, &done));
    stage.timeline.close(window);
    drop(replica);
    bed.proxies[stalled].set_blocked(false);
    tokio::time::sleep(RESUME_SETTLE).await;
    let mut cut = 0;
    for (index, proxy) in bed.proxies.iter().enumerate() {
        if index != stalled {
            cut += proxy.drop_links(rng, 1.0);
        }
    }
    let outcome = match past {
        Some((ms, seq)) => format!("trimmed past its cursor {ms}-{seq}"),
        None => "NOT trimmed past its cursor".to_owned(),
    };
    let detail = format!(
        "r{stalled} stalled {} ({stops} stops), p{partition} {outcome} by {acked} revocations, \
         {cut} links cut",
        secs(started.elapsed()),
    );
    (1, detail)
}

/// Stops `pid`, letting it run for [`RUN`] every [`STALL`], until `done`;
/// leaves it running. Returns how many stops it made.
async fn stutter(bed: &Testbed, pid: u32, done: &AtomicBool) -> usize {
    let mut stops = 0;
    while !done.load(Ordering::Relaxed) {
        bed.stop_process(pid).await;
        stops += 1;
        tokio::time::sleep(STALL).await;
        bed.resume_process(pid);
        tokio::time::sleep(RUN).await;
    }
    stops
}

/// Revokes tokens of `partition` through replica `via` until the
/// partition's first entry is past the stalled replica's cursor (as
/// `probe` holds it), at most [`MAX_BATCHES`]. Returns how many were
/// acknowledged, and the cursor trimmed past.
async fn flood(
    stage: &Stage<'_>,
    probe: &Subscriber,
    via: usize,
    partition: u16,
) -> (usize, Option<StreamId>) {
    let client = lazy_client(stage.bed.replica_addresses[via]);
    let mut acked = 0;
    for round in 0..MAX_BATCHES / CONCURRENT_BATCHES {
        let batches =
            (0..CONCURRENT_BATCHES).map(|n| {
                let tokens = tokens(stage, partition, round * CONCURRENT_BATCHES + n);
                let mut client = client.clone();
                async move {
                    load::revoke_batch(&mut client, via, tokens, stage.ledger, stage.phase).await
                }
            });
        acked += futures_util::future::join_all(batches)
            .await
            .into_iter()
            .sum::<usize>();
        let mut held = HighWater::default();
        held.raise(&probe.cursor().unwrap_or_default());
        let Some(cursor) = held.get(usize::from(partition)) else {
            continue;
        };
        if first_entry(stage.bed, partition).await > cursor {
            return (acked, Some(cursor));
        }
    }
    (acked, None)
}

/// [`BATCH`] fresh tokens of issuer A whose records fall in `partition`.
/// Their `exp` is [`FLOOD_EXPIRED_FOR`] past, so they and their records
/// last a little while (the leeway less that): they are there to push the
/// log, and a live set twice the size would slow every later reload.
fn tokens(stage: &Stage<'_>, partition: u16, batch: usize) -> Vec<Token> {
    (0..)
        .map(|n| format!("p{}-trim-{batch}-{n}", stage.phase))
        .filter(|jti| partition_of(Issuer::A.name(), jti, stage.partitions) == partition)
        .take(BATCH)
        .map(|jti| Token::living(Issuer::A, "chaos-trim", &jti, -FLOOD_EXPIRED_FOR))
        .collect()
}

/// The ID of the first entry of a partition's log; `(0, 0)` when it is
/// empty or cannot be read.
async fn first_entry(bed: &Testbed, partition: u16) -> StreamId {
    let mut read = redis::cmd("XRANGE");
    read.arg(log_key(partition))
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
    let entries: Vec<(String, Vec<(String, String)>)> =
        bed.redis_query(read).await.unwrap_or_default();
    entries
        .first()
        .and_then(|(id, _)| stream_id(id))
        .unwrap_or((0, 0))
}
