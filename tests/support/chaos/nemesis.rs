//! The nemesis: the faults, how each is injected and healed, and the
//! timeline of outages the verifier judges answers against. The faults
//! that drive traffic of their own live beside it: [`super::trim`],
//! [`super::race`] and [`super::forgery`].

use std::fmt;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::ledger::Ledger;
use super::report::Tally;
use super::testbed::{SubscriberKind, Testbed};
use super::{burst, earlier, forgery, fresh, outdated, race, trim};

/// How long `CLIENT KILL`s go on: longer than the propagation bound, so a
/// replica that keeps heartbeating while its follower reloads again and
/// again leaves its gateways fresh past the bound without the changes.
const CLIENT_KILL_HOLD: Duration = Duration::from_millis(5_500);
/// Pause between two `CLIENT KILL`s: shorter than a reload of the live set
/// (about a second for 10,000 records in a debug build), so none finishes.
const CLIENT_KILL_EVERY: Range<Duration> = Duration::from_millis(50)..Duration::from_millis(150);

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL a replica, then start it again on the same port.
    ReplicaKill,
    /// SIGSTOP a replica (a hung server), then SIGCONT.
    ReplicaStop,
    /// SIGSTOP Redis (requests hang), then SIGCONT.
    RedisStop,
    /// SIGKILL Redis, then restart it from its AOF.
    RedisKill,
    /// SIGSTOP an agent (a stalled subscriber), then SIGCONT.
    SubscriberStop,
    /// Close a random share of the streams through a replica's proxy, a
    /// few times.
    StreamDrop,
    /// SIGSTOP a replica, push the change log past its position (more
    /// revocations through another replica than the log retains), SIGCONT,
    /// then move the subscribers onto it.
    LogTrim,
    /// Delay the gateways' `Check` replies so that a "not revoked" answer
    /// arrives after the delta revoking the token.
    ConfirmRace,
    /// `CLIENT KILL TYPE normal` on Redis again and again: every replica's
    /// connections, its change-log follower's included, are dropped and
    /// the follower reloads under load (a live set made large first, so
    /// no reload finishes between two kills).
    ClientKill,
    /// Tokens signed with issuer A's key claiming issuer B: asked of every
    /// subscriber, and revoked without an API key through every replica.
    ForgedIssuer,
    /// A gateway of stream protocol 0 subscribes to every replica while
    /// session cut-offs are live: it must be refused.
    OutdatedGateway,
    /// SIGKILL an agent, then start it again from the filter it kept on
    /// disk (`--state-dir`), revocations going on meanwhile.
    AgentRestart,
    /// Revocations written as the version before packed token records
    /// wrote them (hashes, ten-field log entries), as by an old replica
    /// during a rolling upgrade.
    EarlierVersion,
    /// Revoke through one replica, then at once subscribe to another: the
    /// filter the subscription is answered with must hold the revocation
    /// (read your writes).
    FreshSubscriber,
    /// A burst of revocations into one expiry slice, so each replica's
    /// filter grows into a chain and is rebuilt compact: a new gateway's
    /// first filter afterwards must hold the whole burst.
    FilterBurst,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 15] = [
        FaultKind::ReplicaKill,
        FaultKind::ReplicaStop,
        FaultKind::RedisStop,
        FaultKind::RedisKill,
        FaultKind::SubscriberStop,
        FaultKind::StreamDrop,
        FaultKind::LogTrim,
        FaultKind::ConfirmRace,
        FaultKind::ClientKill,
        FaultKind::ForgedIssuer,
        FaultKind::OutdatedGateway,
        FaultKind::AgentRestart,
        FaultKind::EarlierVersion,
        FaultKind::FreshSubscriber,
        FaultKind::FilterBurst,
    ];

    /// A short label for the table.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::ReplicaKill => "replica-kill",
            FaultKind::ReplicaStop => "replica-stop",
            FaultKind::RedisStop => "redis-stop",
            FaultKind::RedisKill => "redis-kill",
            FaultKind::SubscriberStop => "subscriber-stop",
            FaultKind::StreamDrop => "stream-drop",
            FaultKind::LogTrim => "log-trim",
            FaultKind::ConfirmRace => "confirm-race",
            FaultKind::ClientKill => "client-kill",
            FaultKind::ForgedIssuer => "forged-issuer",
            FaultKind::OutdatedGateway => "outdated-gateway",
            FaultKind::AgentRestart => "agent-restart",
            FaultKind::EarlierVersion => "earlier-version",
            FaultKind::FreshSubscriber => "fresh-subscriber",
            FaultKind::FilterBurst => "filter-burst",
        }
    }

    /// Whether the fault makes Redis unreachable.
    pub fn is_redis_outage(self) -> bool {
        matches!(self, FaultKind::RedisStop | FaultKind::RedisKill)
    }
}

/// One fault as injected.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Its kind.
    pub kind: FaultKind,
    /// How many times (stream drops come in bursts; 1 otherwise).
    pub count: usize,
    /// Its target and size: `replica 1 1.8s`, `12 links`...
    pub detail: String,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.label(), self.detail)
    }
}

// === Timeline ===

/// What an outage window is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Redis was stopped or dead: no write could be acknowledged.
    Redis,
    /// This replica was dead or stopped.
    Replica(usize),
}

/// A period during which `target` was out.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// What was out.
    pub target: Target,
    /// When the fault had taken effect.
    pub start: Instant,
    /// When healing began; `None` while the fault lasts.
    pub end: Option<Instant>,
}

impl Window {
    /// Whether the window overlaps `[from, to]`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start <= to && self.end.is_none_or(|end| end >= from)
    }
}

/// Every outage window of the run.
#[derive(Default)]
pub struct Timeline {
    windows: Mutex<Vec<Window>>,
}

impl Timeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a window for `target` now; returns its id for [`Timeline::close`].
    pub fn open(&self, target: Target) -> usize {
        let mut windows = self.lock();
        windows.push(Window {
            target,
            start: Instant::now(),
            end: None,
        });
        windows.len() - 1
    }

    /// Ends the window `id` now.
    pub fn close(&self, id: usize) {
        if let Some(window) = self.lock().get_mut(id) {
            window.end = Some(Instant::now());
        }
    }

    /// Every window so far.
    pub fn windows(&self) -> Vec<Window> {
        self.lock().clone()
    }

    /// The start of the Redis outage in progress, if one is.
    pub fn redis_out_since(&self) -> Option<Instant> {
        self.lock()
            .iter()
            .find(|w| w.target == Target::Redis && w.end.is_none())
            .map(|w| w.start)
    }
}

// === injecting ===

/// What an injection works with.
pub struct Stage<'a> {
    /// The system under test.
    pub bed: &'a Testbed,
    /// Where outage windows go.
    pub timeline: &'a Timeline,
    /// Where revocations the nemesis makes itself go.
    pub ledger: &'a Arc<Ledger>,
    /// Where violations it sees itself go.
    pub tally: &'a Arc<Tally>,
    /// The phase injecting.
    pub phase: usize,
    /// The replicas' `--log-partitions`.
    pub partitions: u16,
    /// Time from an acknowledgement within which every replica and
    /// subscriber must have acted on it.
    pub propagation_bound: Duration,
}

/// Injects `kind`, holds it for a time drawn from `hold`, heals it, and
/// says what was done. Returns once healed (a restarted replica serving,
/// a restarted Redis answering PING).
pub async fn inject(
    kind: FaultKind,
    stage: &Stage<'_>,
    rng: &mut StdRng,
    hold: Range<Duration>,
) -> FaultRecord {
    let hold = rng.random_range(hold);
    let (bed, timeline) = (stage.bed, stage.timeline);
    let (count, detail) = match kind {
        FaultKind::ReplicaKill => replica_down(bed, timeline, rng, hold, true).await,
        FaultKind::ReplicaStop => replica_down(bed, timeline, rng, hold, false).await,
        FaultKind::RedisStop => redis_stop(bed, timeline, hold).await,
        FaultKind::RedisKill => redis_kill(bed, timeline, hold).await,
        FaultKind::SubscriberStop => subscriber_stop(bed, rng, hold).await,
        FaultKind::StreamDrop => stream_drop(bed, rng, hold).await,
        FaultKind::LogTrim => trim::inject(stage, rng, hold).await,
        FaultKind::ConfirmRace => race::inject(stage, rng).await,
        FaultKind::ClientKill => client_kill(stage, rng).await,
        FaultKind::ForgedIssuer => forgery::inject(stage, rng, hold).await,
        FaultKind::OutdatedGateway => outdated::inject(stage, rng, hold).await,
        FaultKind::AgentRestart => agent_restart(bed, rng, hold).await,
        FaultKind::EarlierVersion => earlier::inject(stage, rng, hold).await,
        FaultKind::FreshSubscriber => fresh::inject(stage, rng, hold).await,
        FaultKind::FilterBurst => burst::inject(stage, rng).await,
    };
    FaultRecord {
        kind,
        count,
        detail,
    }
}

/// Formats a duration for the table: `1.8s`.
pub fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Takes a replica chosen at random down for `hold`, its outage window
/// open meanwhile: SIGKILL and a restart on the same port when `kill`,
/// else SIGSTOP and SIGCONT.
async fn replica_down(
    bed: &Testbed,
    timeline: &Timeline,
    rng: &mut StdRng,
    hold: Duration,
    kill: bool,
) -> (usize, String) {
    let index = rng.random_range(0..bed.replicas.len());
    let mut replica = bed.replicas[index].lock().await;
    let window = timeline.open(Target::Replica(index));
    if kill {
        replica.kill();
    } else {
        bed.stop_process(replica.pid()).await;
    }
    tokio::time::sleep(hold).await;
    let restart = Instant::now();
    if kill {
        replica.restart_with(&bed.binary).await;
    } else {
        bed.resume_process(replica.pid());
    }
    timeline.close(window);
    let detail = if kill {
        format!(
            "r{index} {} (+{} restart)",
            secs(hold),
            secs(restart.elapsed())
        )
    } else {
        format!("r{index} {}", secs(hold))
    };
    (1, detail)
}

async fn redis_stop(bed: &Testbed, timeline: &Timeline, hold: Duration) -> (usize, String) {
    let pid = bed
        .redis
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pid()
        .expect("redis-server runs");
    bed.stop_process(pid).await;
    // Opened once stopped: a request sent from now on cannot be executed
    // before the window closes, which is just before SIGCONT.
    let window = timeline.open(Target::Redis);
    tokio::time::sleep(hold).await;
    timeline.close(window);
    bed.resume_process(pid);
    (1, secs(hold))
}

async fn redis_kill(bed: &Testbed, timeline: &Timeline, hold: Duration) -> (usize, String) {
    // kill() and restart() wait for the process with blocking calls.
    let lock = || bed.redis.lock().unwrap_or_else(|p| p.into_inner());
    tokio::task::block_in_place(|| lock().kill());
    let window = timeline.open(Target::Redis);
    tokio::time::sleep(hold).await;
    timeline.close(window);
    let restart = Instant::now();
    tokio::task::block_in_place(|| lock().restart());
    (
        1,
        format!("{} (+{} AOF load)", secs(hold), secs(restart.elapsed())),
    )
}

async fn subscriber_stop(bed: &Testbed, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let agents = bed.agents();
    assert!(!agents.is_empty(), "subscriber-stop needs an agent process");
    let (index, pid) = agents[rng.random_range(0..agents.len())];
    let subscriber = &bed.subscribers[index];
    {
        // Waits for answers in progress; nobody asks it from now on.
        let mut frozen = subscriber.frozen.write().await;
        *frozen = true;
        bed.stop_process(pid).await;
    }
    tokio::time::sleep(hold).await;
    let mut frozen = subscriber.frozen.write().await;
    bed.resume_process(pid);
    *frozen = false;
    (1, format!("{} {}", subscriber.name, secs(hold)))
}

async fn stream_drop(bed: &Testbed, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let bursts = rng.random_range(2..=4usize);
    let mut links = 0;
    for _ in 0..bursts {
        tokio::time::sleep(hold / bursts as u32).await;
        let proxy = &bed.proxies[rng.random_range(0..bed.proxies.len())];
        let share = rng.random_range(0.3..=1.0);
        links += proxy.drop_links(rng, share);
    }
    (bursts, format!("{bursts}x, {links} links"))
}

/// Kills an agent chosen at random, holds it down for `hold`, and starts
/// it again on the same ports from its state directory; nobody asks it
/// meanwhile. Says whether it resumed or took a snapshot.
async fn agent_restart(bed: &Testbed, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let agents = bed.agents();
    assert!(!agents.is_empty(), "agent-restart needs an agent process");
    let (index, _) = agents[rng.random_range(0..agents.len())];
    let subscriber = &bed.subscribers[index];
    let SubscriberKind::Agent { pid, number, .. } = &subscriber.kind else {
        unreachable!("bed.agents() lists agents only");
    };
    let mut frozen = subscriber.frozen.write().await;
    *frozen = true;
    let lock = || {
        bed.agent_processes[*number]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    tokio::task::block_in_place(|| lock().kill());
    tokio::time::sleep(hold).await;
    let restart = Instant::now();
    let snapshots = tokio::task::block_in_place(|| {
        let mut process = lock();
        process.start();
        pid.store(process.pid().expect("a running agent"), Ordering::Relaxed);
        process.metric(r#"revocd_gateway_frames_total{kind="snapshot"}"#)
    });
    *frozen = false;
    let how = match snapshots {
        None => "resumed from disk",
        Some(_) => "took a snapshot",
    };
    let detail = format!(
        "{} down {} (+{} restart), {how}",
        subscriber.name,
        secs(hold),
        secs(restart.elapsed())
    );
    (1, detail)
}

/// Kills every normal client of Redis again and again for
/// [`CLIENT_KILL_HOLD`], after a fill that makes each reload last about a
/// second: none finishes while the kills go on.
async fn client_kill(stage: &Stage<'_>, rng: &mut StdRng) -> (usize, String) {
    let bed = stage.bed;
    super::load::fill(stage, "kill").await;
    let started = Instant::now();
    let (mut kills, mut clients) = (0, 0);
    while started.elapsed() < CLIENT_KILL_HOLD {
        let mut kill = redis::cmd("CLIENT");
        kill.arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes");
        // Refused while Redis loads or is out: then nothing was killed.
        if let Ok(killed) = bed.redis_query::<u64>(kill).await {
            kills += 1;
            clients += killed;
        }
        tokio::time::sleep(rng.random_range(CLIENT_KILL_EVERY)).await;
    }
    let detail = format!(
        "{kills}x over {}, {clients} connections",
        secs(started.elapsed())
    );
    (kills, detail)
}
