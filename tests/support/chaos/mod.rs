//! Fault injection: revocd under load while a nemesis breaks its parts,
//! with a ledger of what was acknowledged and invariants checked all
//! along. Shared by `tests/chaos.rs` (the short run CI makes) and
//! `examples/chaos.rs` (the long run, on demand).
//!
//! # What runs
//!
//! Everything is real and on loopback ([`testbed`]): a `redis-server`
//! with `appendonly yes` and `appendfsync always`; `revocd serve`
//! replicas with `--durability strict --redis-timeout 500ms`, heartbeats
//! every 200 ms, several log partitions and `--log-retention 10000`,
//! writing log entries of format 1 and 2 by turns (`--log-entry-format`,
//! one shared log, as during a move to format 2); two
//! issuers, each bound to its own key ([`issuer`]); a TCP proxy in front
//! of each replica; gateways of the library in this process (confirming
//! through proxies of their own) and `revocd agent` processes, each
//! following every replica through the proxies, each with a
//! `max_staleness` of 1 s. Load clients ([`load`]) revoke fresh tokens of
//! both issuers (by gRPC, by session cut-off, and through the replicas'
//! RFC 7009 HTTP door) and `Check` each acknowledged one through another
//! replica.
//!
//! # Phases
//!
//! A phase starts the load, injects one fault or two at once
//! ([`nemesis::FaultKind`]: kill -9 a replica and restart it, SIGSTOP a
//! replica, SIGSTOP Redis, kill -9 Redis and restart it from its AOF,
//! SIGSTOP an agent, cut streams at the proxies; stall a replica while the
//! log is trimmed past it ([`trim`]); hold a gateway's "not revoked"
//! confirm until the delta revoking the token has arrived ([`race`]);
//! `CLIENT KILL` every Redis connection again and again; forged
//! cross-issuer tokens ([`forgery`]); a gateway too old for claim
//! cut-offs subscribing ([`outdated`]); kill -9 an agent and restart it
//! from the filter it keeps on disk; revocations written as the version
//! before packed token records wrote them ([`earlier`]); subscribe to one
//! replica right after revoking through another ([`fresh`]); a burst into
//! one expiry slice that gets the replicas' filters rebuilt compact
//! ([`burst`])), heals it, keeps the load up half a second more, stops it
//! and checks ([`verify`]).
//!
//! # Invariants
//!
//! - **Strict durability**: every acknowledged revocation is in Redis
//!   (read directly) after every phase; `Check` never says "not revoked"
//!   about one.
//! - **No false OK**: a `Revoke` sent and answered while Redis was out
//!   (stopped or dead) is never OK; failures are UNAVAILABLE unless the
//!   replica asked was itself down.
//! - **Propagation** ([`monitor`], all through the run): for every
//!   acknowledged revocation R and every subscriber G, once G reports a
//!   cursor at or past R's, or reports itself fresh the propagation bound
//!   after R, G denies R's token until it expires; a never-revoked token
//!   is never refused.
//! - **One issuer, one key**: a token signed with one issuer's key that
//!   claims the other is refused by every subscriber, and a keyless
//!   `Revoke` of it by every replica.
//! - **Read your writes**: a subscription made after a revocation was
//!   acknowledged (through any replica) is answered with a filter that
//!   holds it, or refused; so is one made after a replica rebuilt its
//!   filter compact.
//! - **No filter for a gateway that cannot enforce it**: once a session
//!   cut-off has been acknowledged for the propagation bound, no replica
//!   sends a single frame to a gateway of stream protocol 0.
//! - **Serving through a Redis outage**: every subscriber keeps answering
//!   from its filter.
//! - **Convergence**: within the bound after the faults end, every replica
//!   is SERVING and serves a current filter (checked through a gateway
//!   following it alone), and every subscriber is connected and agrees
//!   with Redis about every acknowledged token, every unknown one and
//!   never-revoked ones.
//!
//! Everything is bounded in time and count; random choices come from the
//! seed, printed first, so a failing schedule can be replayed.

mod burst;
mod earlier;
mod forgery;
mod fresh;
mod issuer;
mod ledger;
mod load;
mod monitor;
mod nemesis;
mod outdated;
mod proxy;
mod race;
mod report;
mod testbed;
mod trim;
mod verify;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use self::issuer::Issuer;
use self::ledger::{Ledger, Token};
use self::load::Load;
use self::nemesis::{FaultRecord, Stage, Timeline};
use self::report::{Check, PhaseRow, Tally};
use self::testbed::Testbed;

pub use self::nemesis::FaultKind;
pub use self::report::Report;

/// Environment variable that fixes the seed of a run.
pub const ENV_SEED: &str = "REVOCD_CHAOS_SEED";
/// Environment variable naming the fault kinds to inject (labels, comma
/// separated; all by default), to replay one fault alone.
pub const ENV_FAULTS: &str = "REVOCD_CHAOS_FAULTS";
/// Load before the faults of a phase.
const WARMUP: Range<Duration> = Duration::from_millis(500)..Duration::from_millis(1_000);
/// Load after the faults are healed, before it stops.
const AFTER_HEAL: Duration = Duration::from_millis(500);
/// How long after an acknowledgement a fresh subscriber must hold the
/// revocation: the README's promise ("Guarantees") is every change logged
/// more than `max_staleness` + 3 s ago, 3 s being how long a replica may
/// heartbeat after its change-log follower last reached the log's head
/// (`FOLLOWER_SILENCE` in `src/hub/state.rs`). So
/// [`testbed::MAX_STALENESS`] (1 s) + 3 s + two heartbeats (400 ms),
/// rounded up. Propagation itself takes milliseconds.
const PROPAGATION_BOUND: Duration = Duration::from_millis(4_500);
/// Never-revoked tokens the subscribers are asked about.
const GOOD_TOKENS: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Seed of every random choice of the nemesis.
    pub seed: u64,
    /// Which faults, in how many phases.
    pub plan: Plan,
    /// The kinds of fault injected.
    pub faults: Vec<FaultKind>,
    /// The `revocd` binary.
    pub binary: PathBuf,
    /// `revocd serve` processes.
    pub replicas: usize,
    /// Gateways of the library in this process.
    pub gateways: usize,
    /// `revocd agent` processes.
    pub agents: usize,
    /// `--log-partitions`.
    pub log_partitions: u16,
    /// Load clients.
    pub clients: usize,
    /// Pause between a client's revokes.
    pub pace: Duration,
    /// How long a fault lasts.
    pub hold: Range<Duration>,
    /// Time from an acknowledgement within which a connected subscriber
    /// must hold the revocation.
    pub propagation_bound: Duration,
    /// Time from the end of the faults within which everything agrees.
    pub convergence_bound: Duration,
}

/// The phases of a run.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One phase per fault kind, in an order drawn from the seed.
    EveryKindOnce,
    /// Phases of random faults (one, or one plus a subscriber stop or
    /// stream drop) until this much time has passed.
    #[allow(dead_code)] // examples/chaos.rs only
    For(Duration),
}

impl ChaosConfig {
    /// The short run: every fault kind once, 2 replicas, 5 gateways and 2
    /// agents, faults of 1.5 to 2.5 s. Convergence may take 8 s: after a
    /// Redis outage or a run of killed connections the follower retries on
    /// a doubling schedule (up to 3.2 s apart by then), and reloading the
    /// 20,000-odd live records of the run takes a debug build 1 to 2 s.
    pub fn short(seed: u64, binary: PathBuf) -> Self {
        ChaosConfig {
            seed,
            plan: Plan::EveryKindOnce,
            faults: faults_from_env(),
            binary,
            replicas: 2,
            gateways: 5,
            agents: 2,
            log_partitions: 2,
            clients: 2,
            pace: Duration::from_millis(10),
            hold: Duration::from_millis(1_500)..Duration::from_millis(2_500),
            propagation_bound: PROPAGATION_BOUND,
            convergence_bound: Duration::from_secs(8),
        }
    }

    /// The long run: random faults for `duration`, faults of 1 to 5 s.
    #[allow(dead_code)] // examples/chaos.rs only
    pub fn long(seed: u64, binary: PathBuf, duration: Duration) -> Self {
        ChaosConfig {
            plan: Plan::For(duration),
            hold: Duration::from_secs(1)..Duration::from_secs(5),
            ..Self::short(seed, binary)
        }
    }
}

/// The fault kinds [`ENV_FAULTS`] names, else all of them.
///
/// # Panics
/// On a label that names no kind.
pub fn faults_from_env() -> Vec<FaultKind> {
    let Ok(labels) = std::env::var(ENV_FAULTS) else {
        return FaultKind::ALL.to_vec();
    };
    labels
        .split(',')
        .map(|label| {
            let label = label.trim();
            FaultKind::ALL
                .into_iter()
                .find(|kind| kind.label() == label)
                .unwrap_or_else(|| panic!("{ENV_FAULTS}: no fault kind {label:?}"))
        })
        .collect()
}

/// The seed from [`ENV_SEED`], else a random one.
pub fn seed_from_env() -> u64 {
    std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random)
}

/// What the phases share.
struct Context {
    config: ChaosConfig,
    bed: Testbed,
    ledger: Arc<Ledger>,
    timeline: Arc<Timeline>,
    tally: Arc<Tally>,
    good: Arc<Vec<Token>>,
}

/// Runs the whole schedule and returns the report; everything started is
/// stopped before it returns.
///
/// # Panics
/// If a part cannot be started or restarted (a missing `redis-server`, a
/// replica that does not come back): that is a broken test bed, not a
/// violation.
pub async fn run(config: ChaosConfig) -> Report {
    let started = Instant::now();
    println!(
        "chaos: seed {} (replay with {ENV_SEED}={} or --seed {})",
        config.seed, config.seed, config.seed
    );
    let bed = Testbed::start(&config).await;
    println!(
        "chaos: test bed up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let good = (0..GOOD_TOKENS)
        .map(|n| {
            let issuer = if n % 2 == 0 { Issuer::A } else { Issuer::B };
            Token::of(issuer, "chaos-good", &format!("good-{n}"))
        })
        .collect();
    let context = Context {
        config,
        bed,
        ledger: Arc::default(),
        timeline: Arc::default(),
        tally: Arc::default(),
        good: Arc::new(good),
    };
    let stop = CancellationToken::new();
    let monitor = tokio::spawn(monitor::run(
        context.bed.subscribers.clone(),
        Arc::new(monitor::Shared {
            ledger: Arc::clone(&context.ledger),
            timeline: Arc::clone(&context.timeline),
            tally: Arc::clone(&context.tally),
            good: Arc::clone(&context.good),
            bound: context.config.propagation_bound,
        }),
        context.config.seed,
        stop.clone(),
    ));
    let rows = phases(&context).await;
    stop.cancel();
    monitor.await.expect("monitor");
    report(&context, rows, started)
}

async fn phases(context: &Context) -> Vec<PhaseRow> {
    let config = &context.config;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order = FaultKind::ALL.to_vec();
    order.shuffle(&mut rng);
    order.retain(|kind| config.faults.contains(kind));
    let started = Instant::now();
    let mut rows = Vec::new();
    loop {
        let faults = match config.plan {
            Plan::EveryKindOnce => match order.get(rows.len()) {
                Some(kind) => vec![*kind],
                None => break,
            },
            Plan::For(duration) if started.elapsed() < duration => {
                random_faults(&config.faults, &mut rng)
            }
            Plan::For(_) => break,
        };
        let row = phase(context, rows.len() + 1, &faults, &mut rng).await;
        println!(
            "chaos: phase {} done: {} ({} violations so far)",
            row.index,
            row.faults
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" + "),
            context.tally.violation_count()
        );
        rows.push(row);
    }
    rows
}

/// One fault, sometimes with a subscriber stop or a stream drop at the
/// same time.
fn random_faults(kinds: &[FaultKind], rng: &mut StdRng) -> Vec<FaultKind> {
    let primary = kinds[rng.random_range(0..kinds.len())];
    let mut faults = vec![primary];
    if rng.random_bool(0.3) {
        let overlay = [FaultKind::SubscriberStop, FaultKind::StreamDrop][rng.random_range(0..2)];
        if overlay != primary {
            faults.push(overlay);
        }
    }
    faults
}

async fn phase(
    context: &Context,
    index: usize,
    faults: &[FaultKind],
    rng: &mut StdRng,
) -> PhaseRow {
    let Context {
        config,
        bed,
        ledger,
        timeline,
        tally,
        good,
    } = context;
    let started = Instant::now();
    tally.set_phase(index);
    let checks_before = tally.all_checks();
    let violations_before = tally.violation_count();
    let acked_before = ledger.len();

    let load = Load::start(
        index,
        config.clients,
        config.pace,
        &bed.replica_addresses,
        &bed.door_addresses,
        ledger,
        tally,
    );
    tokio::time::sleep(rng.random_range(WARMUP)).await;
    let records = inject_all(context, index, faults, rng).await;
    let healed = Instant::now();
    tokio::time::sleep(AFTER_HEAL).await;
    let checked = load.stop().await;

    let attempts = ledger.take_attempts();
    let answers = verify::answers(&attempts, &checked, &timeline.windows(), tally);
    verify::durability(bed, config.log_partitions, &ledger.all(), tally).await;
    let found = verify::stored(bed, config.log_partitions, answers.unknown.clone(), tally).await;
    let (stored, not_stored): (Vec<_>, Vec<_>) = answers
        .unknown
        .iter()
        .cloned()
        .zip(found)
        .partition(|(_, found)| *found);
    let unknown_stored = stored.len();
    ledger.settle(index, stored.into_iter().map(|(token, _)| token));
    let expectations = verify::Expectations {
        revoked: ledger.all(),
        this_phase: ledger.len() - acked_before,
        not_stored: not_stored.into_iter().map(|(token, _)| token).collect(),
        good: Arc::clone(good),
    };
    let deadline = healed + config.convergence_bound;
    let convergence = verify::convergence(bed, &expectations, rng, healed, deadline, tally).await;
    let outage = faults.iter().any(|f| f.is_redis_outage());
    if outage && answers.refused_in_outage == 0 {
        println!("chaos: phase {index}: no revoke was refused during the Redis outage");
    }

    PhaseRow {
        index,
        faults: records,
        took: started.elapsed(),
        acked: answers.acked,
        unknown: answers.unknown.len(),
        unknown_stored,
        refused_in_outage: answers.refused_in_outage,
        errors: answers.errors,
        checks: tally.all_checks() - checks_before,
        converged_in: convergence.took,
        slowest: convergence.slowest,
        violations: tally.violation_count() - violations_before,
    }
}

/// Injects `faults` at once, each with its own generator drawn from `rng`.
async fn inject_all(
    context: &Context,
    phase: usize,
    faults: &[FaultKind],
    rng: &mut StdRng,
) -> Vec<FaultRecord> {
    let mut rngs: Vec<StdRng> = faults
        .iter()
        .map(|_| StdRng::seed_from_u64(rng.random()))
        .collect();
    let stage = Stage {
        bed: &context.bed,
        timeline: &context.timeline,
        ledger: &context.ledger,
        tally: &context.tally,
        phase,
        partitions: context.config.log_partitions,
        propagation_bound: context.config.propagation_bound,
    };
    let stage = &stage;
    let injections = faults
        .iter()
        .zip(rngs.iter_mut())
        .map(|(kind, rng)| nemesis::inject(*kind, stage, rng, context.config.hold.clone()));
    futures_util::future::join_all(injections).await
}

fn report(context: &Context, rows: Vec<PhaseRow>, started: Instant) -> Report {
    let config = &context.config;
    let tally = &context.tally;
    Report {
        seed: config.seed,
        setup: format!(
            "{} replicas --durability strict --redis-timeout 500ms --log-partitions {} \
             --log-retention {} --log-entry-format 1 and 2 by turns, issuers A (HS256) and B (ES256){}, {} gateways + {} agents, \
             redis appendfsync always, {} clients",
            config.replicas,
            config.log_partitions,
            testbed::LOG_RETENTION,
            if issuer::binding_supported() {
                " bound to their keys"
            } else {
                ", keys not bound"
            },
            config.gateways,
            config.agents,
            config.clients
        ),
        rows,
        checks: [Check::Redis, Check::Rpc, Check::Subscriber, Check::Outage]
            .map(|c| tally.checks(c)),
        violation_count: tally.violation_count(),
        violations_by_kind: tally.violations_by_kind(),
        violations: tally.violations(),
        took: started.elapsed(),
    }
}
