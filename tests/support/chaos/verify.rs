//! The checks made after each phase, once its faults are healed and its
//! load has stopped: the answers given during the phase, strict
//! durability (Redis read directly), and convergence of every subscriber.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tonic::Code;

use super::ledger::{Attempt, Entry, Outcome, Rule, Token};
use super::load::Checked;
use super::nemesis::{Target, Window};
use super::report::{Check, Tally, ViolationKind};
use super::testbed::{Answer, Subscriber, Testbed, MAX_STALENESS};
use crate::support::{health, ServingStatus};

/// Older acknowledged entries asked at convergence: of an agent (each is
/// an HTTP request), of a gateway in this process (the monitor sweeps
/// them all anyway).
const AGENT_OLDER_SAMPLE: usize = 200;
const GATEWAY_OLDER_SAMPLE: usize = 2_000;
/// The phase's own entries asked of an agent at convergence, at most (a
/// log-trim phase revokes over ten thousand; each ask is an HTTP request).
const AGENT_PHASE_SAMPLE: usize = 300;
/// Entries a gateway confirms with the server at convergence.
const CONFIRMED_SAMPLE: usize = 10;
/// Never-revoked tokens asked at convergence.
const GOOD_SAMPLE: usize = 16;
/// Requests in flight to one agent at convergence.
const AGENT_CONCURRENCY: usize = 16;
/// Keys per Redis pipeline.
const PIPELINE: usize = 1_000;

/// What the phase's `Revoke` answers came to.
#[derive(Debug, Default)]
pub struct Answers {
    /// Answered OK.
    pub acked: usize,
    /// Failed: stored or not, Redis will say.
    pub unknown: Vec<Token>,
    /// Failed because sent during a Redis outage.
    pub refused_in_outage: usize,
    /// Failures by gRPC code.
    pub errors: BTreeMap<String, usize>,
}

/// Judges the phase's calls against the outage windows: no OK for a
/// `Revoke` sent and answered while Redis was out, and no error but
/// UNAVAILABLE unless the replica asked was itself down or stopped.
pub fn answers(
    attempts: &[Attempt],
    checks: &[Checked],
    windows: &[Window],
    tally: &Tally,
) -> Answers {
    let mut answers = Answers::default();
    let redis_out = |from: Instant, to: Instant| {
        windows.iter().any(|w| {
            w.target == Target::Redis && w.start <= from && w.end.is_some_and(|end| to <= end)
        })
    };
    for attempt in attempts {
        let who = format!("replica-{}", attempt.replica);
        match &attempt.outcome {
            Outcome::Acked(cursor) => {
                answers.acked += 1;
                if redis_out(attempt.sent, attempt.answered) {
                    let detail = format!(
                        "Revoke {} answered OK (cursor {cursor:?}) while Redis was out",
                        attempt.token.jti()
                    );
                    tally.violation(ViolationKind::FalseOk, &who, detail);
                }
            }
            Outcome::Failed(code, message) => {
                answers.unknown.push(attempt.token.clone());
                *answers.errors.entry(format!("{code:?}")).or_default() += 1;
                if windows
                    .iter()
                    .any(|w| w.target == Target::Redis && w.overlaps(attempt.sent, attempt.sent))
                {
                    answers.refused_in_outage += 1;
                }
                let (from, to) = (attempt.sent, attempt.answered);
                if !explained(*code, attempt.replica, from, to, windows) {
                    let detail = format!("Revoke {}: {code:?} {message:?}", attempt.token.jti());
                    tally.violation(ViolationKind::UnexpectedError, &who, detail);
                }
            }
        }
    }
    for check in checks {
        if let Err((code, message)) = &check.answer {
            if !explained(*code, check.replica, check.sent, check.answered, windows) {
                let who = format!("replica-{}", check.replica);
                let detail = format!("Check {}: {code:?} {message:?}", check.entry.token.jti());
                tally.violation(ViolationKind::UnexpectedError, &who, detail);
            }
        }
    }
    answers
}

/// UNAVAILABLE is always a fair answer; anything else only from a replica
/// that was down or stopped during the call.
pub fn explained(
    code: Code,
    replica: usize,
    from: Instant,
    to: Instant,
    windows: &[Window],
) -> bool {
    code == Code::Unavailable
        || windows
            .iter()
            .any(|w| w.target == Target::Replica(replica) && w.overlaps(from, to))
}

// === durability ===

/// Whether each token's revocation record exists in Redis, read directly
/// (`EXISTS` on the key `src/store/redis/mod.rs` documents), retrying
/// while Redis loads its AOF.
///
/// # Panics
/// If Redis cannot be read for 10 s.
pub async fn stored(
    bed: &Testbed,
    partitions: u16,
    tokens: Vec<Token>,
    tally: &Tally,
) -> Vec<bool> {
    tally.checked(Check::Redis, tokens.len() as u64);
    let url = bed.redis_url.clone();
    let keys: Vec<String> = tokens.iter().map(|t| record_key(t, partitions)).collect();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match exists(&url, &keys) {
                Ok(found) => return found,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("reading Redis: {error}"),
            }
        }
    })
    .await
    .expect("Redis reader")
}

/// The key of the record that keeps `token` revoked, as
/// `src/store/redis/mod.rs` documents it: by jti,
/// `revocd:v1:{p<n>}:jti:<issuer length>:<issuer>:<jti>`; by session,
/// `revocd:v1:{p<n>}:cut:<issuer length>:<issuer>:3:sid:<sid>`.
pub fn record_key(token: &Token, partitions: u16) -> String {
    let issuer = &token.claims.issuer;
    let (family, id) = match token.rule {
        Rule::Jti => ("jti", token.jti().to_owned()),
        Rule::Session => {
            // Every token of the run is a session named by its jti.
            ("cut", format!("3:sid:{}", token.jti()))
        }
    };
    let partition = partition_of(issuer, &id, partitions);
    format!(
        "revocd:v1:{{p{partition}}}:{family}:{}:{issuer}:{id}",
        issuer.len()
    )
}

/// The log partition of (`issuer`, `id`)'s record, as
/// `src/store/redis/mod.rs` documents it: `fnv1a64(record name) mod
/// partitions`, the record name being `<issuer length>:<issuer>:<id>`.
pub fn partition_of(issuer: &str, id: &str, partitions: u16) -> u16 {
    let record = format!("{}:{issuer}:{id}", issuer.len());
    let hash = record
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % u64::from(partitions.max(1))) as u16
}

/// The change-log stream of `partition`.
pub fn log_key(partition: u16) -> String {
    format!("revocd:v1:{{p{partition}}}:log")
}

fn exists(url: &str, keys: &[String]) -> redis::RedisResult<Vec<bool>> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    connection.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("EXISTS").arg(key);
        }
        let answers: Vec<bool> = pipe.query(&mut connection)?;
        found.extend(answers);
    }
    Ok(found)
}

/// Entries whose tokens expire this soon are no longer checked: their
/// records may be gone by the time they are read.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Every acknowledged revocation is in Redis (until its token expires).
pub async fn durability(bed: &Testbed, partitions: u16, entries: &[Arc<Entry>], tally: &Tally) {
    let entries: Vec<&Arc<Entry>> = entries
        .iter()
        .filter(|e| !e.token.expires_within(EXPIRY_MARGIN))
        .collect();
    let tokens = entries.iter().map(|e| e.token.clone()).collect();
    let found = stored(bed, partitions, tokens, tally).await;
    for (entry, found) in entries.iter().zip(found) {
        if !found {
            let detail = format!(
                "{} acknowledged in phase {} {:?} ago is not in Redis",
                entry.token.jti(),
                entry.phase,
                entry.acked_at.elapsed()
            );
            tally.violation(ViolationKind::Lost, "redis", detail);
        }
    }
}

// === convergence ===

/// What a subscriber must say about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Revoked (from memory a gateway may say "maybe").
    Revoked,
    /// Revoked, asked through the whole path (a gateway confirms).
    RevokedConfirmed,
    /// Not revoked.
    Allowed,
}

/// The tokens a subscriber is asked about at convergence.
pub struct Expectations {
    /// Every acknowledged entry.
    pub revoked: Vec<Arc<Entry>>,
    /// Those of this phase (all asked of agents; others are sampled).
    pub this_phase: usize,
    /// This phase's unknown tokens that Redis does not hold (those it
    /// holds have joined `revoked`).
    pub not_stored: Vec<Token>,
    /// Tokens never revoked.
    pub good: Arc<Vec<Token>>,
}

/// How convergence went: when the last component agreed (from the end
/// of the faults), and which one it was.
#[derive(Debug, Clone)]
pub struct Convergence {
    /// From the end of the faults to the last agreement; `None` if some
    /// component did not agree within the bound.
    pub took: Option<Duration>,
    /// The slowest component (`gateway-3`, `replica-0`...).
    pub slowest: String,
}

/// Waits until every replica serves (health SERVING, and a gateway
/// following it alone agrees with Redis) and every subscriber is
/// connected and agrees with Redis, until `deadline`, recording a
/// violation for each component that does not.
pub async fn convergence(
    bed: &Testbed,
    expectations: &Expectations,
    rng: &mut StdRng,
    healed: Instant,
    deadline: Instant,
    tally: &Arc<Tally>,
) -> Convergence {
    // What each replica serves, through a gateway of its own: a replica
    // that answers health checks but no longer follows the change log
    // serves old snapshots to whoever fails over to it.
    let probes: Vec<Arc<Subscriber>> = (0..bed.replica_addresses.len())
        .map(|index| Arc::new(bed.probe(index)))
        .collect();
    let mut waits = tokio::task::JoinSet::new();
    for subscriber in bed.subscribers.iter().chain(&probes) {
        let asks = asks_for(subscriber, expectations, rng);
        let subscriber = Arc::clone(subscriber);
        let tally = Arc::clone(tally);
        waits.spawn(async move {
            let at = converge(&subscriber, asks, deadline, &tally).await;
            (subscriber.name.clone(), at)
        });
    }
    let mut outcomes = replicas_serving(bed, deadline, tally).await;
    while let Some(done) = waits.join_next().await {
        outcomes.push(done.expect("convergence task"));
    }
    let slowest = outcomes
        .iter()
        .max_by_key(|(_, at)| at.unwrap_or(deadline + Duration::from_secs(3600)))
        .map(|(name, _)| name.clone())
        .unwrap_or_default();
    let took = outcomes
        .iter()
        .map(|(_, at)| *at)
        .collect::<Option<Vec<Instant>>>()
        .and_then(|times| times.into_iter().max())
        .map(|at| at.saturating_duration_since(healed));
    Convergence { took, slowest }
}

fn asks_for(
    subscriber: &Subscriber,
    expect: &Expectations,
    rng: &mut StdRng,
) -> Vec<(Token, Expect)> {
    let mut asks: Vec<(Token, Expect)> = Vec::new();
    let phase_start = expect.revoked.len() - expect.this_phase;
    let (older, this_phase) = expect.revoked.split_at(phase_start);
    let revoked: Vec<&Arc<Entry>> = if subscriber.in_process() {
        older
            .choose_multiple(rng, GATEWAY_OLDER_SAMPLE)
            .chain(this_phase)
            .collect()
    } else {
        older
            .choose_multiple(rng, AGENT_OLDER_SAMPLE)
            .chain(this_phase.choose_multiple(rng, AGENT_PHASE_SAMPLE))
            .collect()
    };
    let revoked: Vec<&Arc<Entry>> = revoked
        .into_iter()
        .filter(|e| !e.token.expires_within(EXPIRY_MARGIN))
        .collect();
    asks.extend(revoked.iter().map(|e| (e.token.clone(), Expect::Revoked)));
    if subscriber.in_process() {
        let sample = revoked.choose_multiple(rng, CONFIRMED_SAMPLE);
        asks.extend(sample.map(|e| (e.token.clone(), Expect::RevokedConfirmed)));
    }
    asks.extend(
        expect
            .not_stored
            .iter()
            .map(|t| (t.clone(), Expect::Allowed)),
    );
    let good = expect.good.choose_multiple(rng, GOOD_SAMPLE);
    asks.extend(good.map(|t| (t.clone(), Expect::Allowed)));
    asks
}

/// Asks again, until `deadline`, whatever does not agree yet; returns
/// when the last answer agreed and the subscriber was connected, or
/// `None` after recording a violation. An answer that agrees is not asked
/// again (the monitor catches a subscriber that forgets).
async fn converge(
    subscriber: &Subscriber,
    mut pending: Vec<(Token, Expect)>,
    deadline: Instant,
    tally: &Tally,
) -> Option<Instant> {
    let mut agreed_at: Option<Instant> = None;
    let mut fresh_since: Option<Instant> = None;
    loop {
        let pass = Instant::now();
        let staleness = subscriber.staleness().await;
        if staleness.is_some_and(|s| s <= MAX_STALENESS) {
            fresh_since.get_or_insert(pass);
        } else {
            fresh_since = None;
        }
        let answers = ask_all(subscriber, &pending).await;
        tally.checked(Check::Subscriber, answers.len() as u64);
        let mut disagreeing = Vec::new();
        let mut examples = Vec::new();
        for ((token, expect), (answer, at)) in pending.into_iter().zip(answers) {
            if agrees(expect, &answer) {
                agreed_at = agreed_at.max(Some(at));
                continue;
            }
            if examples.len() < 3 {
                examples.push(format!("{} {expect:?}: {answer:?}", token.jti()));
            }
            disagreeing.push((token, expect));
        }
        pending = disagreeing;
        if pending.is_empty() {
            if let Some(since) = fresh_since {
                let at = agreed_at.max(Some(since)).unwrap_or(since);
                if at <= deadline {
                    return Some(at);
                }
                let detail = format!("agreed only {:?} after the bound", at - deadline);
                tally.violation(ViolationKind::NotConverged, &subscriber.name, detail);
                return None;
            }
        }
        if Instant::now() >= deadline {
            let detail = format!(
                "{} answers still disagree with Redis (e.g. {examples:?}); staleness {staleness:?}",
                pending.len()
            );
            tally.violation(ViolationKind::NotConverged, &subscriber.name, detail);
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answers to `asks`, each with the time it came; an agent is asked
/// [`AGENT_CONCURRENCY`] requests at a time.
async fn ask_all(subscriber: &Subscriber, asks: &[(Token, Expect)]) -> Vec<(Answer, Instant)> {
    let mut answers = Vec::with_capacity(asks.len());
    for chunk in asks.chunks(AGENT_CONCURRENCY) {
        let chunk = chunk.iter().map(|(token, expect)| async move {
            let answer = answer(subscriber, token, *expect).await;
            (answer, Instant::now())
        });
        answers.extend(futures_util::future::join_all(chunk).await);
    }
    answers
}

async fn answer(subscriber: &Subscriber, token: &Token, expect: Expect) -> Answer {
    let answer = match expect {
        Expect::RevokedConfirmed => return subscriber.ask_confirmed(token).await,
        _ => subscriber.ask(token).await,
    };
    // A bloom false positive: what the gateway would answer after its
    // confirm.
    if expect == Expect::Allowed && answer == Answer::Maybe {
        return subscriber.ask_confirmed(token).await;
    }
    answer
}

fn agrees(expect: Expect, answer: &Answer) -> bool {
    match expect {
        Expect::Revoked => matches!(answer, Answer::Revoked | Answer::Maybe),
        Expect::RevokedConfirmed => *answer == Answer::Revoked,
        Expect::Allowed => *answer == Answer::Allow,
    }
}

/// Waits until every replica reports SERVING: per replica, when, or
/// `None` (and a violation) at `deadline`.
async fn replicas_serving(
    bed: &Testbed,
    deadline: Instant,
    tally: &Tally,
) -> Vec<(String, Option<Instant>)> {
    let mut outcomes = Vec::new();
    for (index, address) in bed.replica_addresses.iter().enumerate() {
        let who = format!("replica-{index} health");
        let serving = loop {
            let status = health(*address).await;
            if status == Some(ServingStatus::Serving) {
                break Some(Instant::now());
            }
            if Instant::now() >= deadline {
                let detail = format!("health {status:?} when the convergence bound ran out");
                tally.violation(ViolationKind::NotConverged, &who, detail);
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        outcomes.push((who, serving));
    }
    outcomes
}
