//! Churn benchmark: what the filter stream costs each gateway while
//! revocations of short-lived tokens keep coming, beside the floor (the
//! digests a gateway must learn in any design), and how gateways resume
//! after a fail-over or a restart. It measures the server and gateway code
//! it is built with, and assumes nothing about how they resume.
//!
//! ```text
//! cargo run --release --example churn -- [--subscribers 20] [--rate 400]
//!     [--lifetime 20] [--seconds 100] [--restarts 5]
//! ```
//!
//! # What is measured
//!
//! 1. **Bytes per gateway per minute** during the churn: `--rate`
//!    revocations per second by jti, of tokens living `--lifetime` seconds
//!    (`expires_at` = now + lifetime), for `--seconds`, made through replica
//!    1 with `RevokeBatch`, a batch of rate/10 every 100 ms (every item
//!    must be accepted as newly revoked). Each of `--subscribers` raw
//!    `Subscribe` streams on replica 1 applies frames as a gateway does
//!    (`SnapshotAssembler`, `FilterView::with_delta`) and counts each
//!    frame's bytes on the wire (its protobuf encoding plus gRPC's 5-byte
//!    prefix) by kind: snapshot, delta, heartbeat. The first snapshot of
//!    each, taken before the churn, is left out. The window runs from the
//!    first batch until every subscriber's cursor is at the last
//!    revocation's (a subscriber that does not get there within 15 s fails
//!    the run). The **delta floor** is measured in the same run: 16 bytes
//!    (a digest) per revocation acknowledged. Target: total <= 1.2 × the
//!    floor.
//! 2. **Snapshots** received (complete snapshots, not parts) per gateway
//!    and in total, and replica 1's **new generations** over the window:
//!    the rise of its `GetStats.filter_generation` (every new filter is a
//!    new generation, announced to every subscriber by a snapshot). A snapshot
//!    of the generation already held is the re-basing of a lagging
//!    subscriber, counted apart.
//! 3. **Fail-over resumes**: after the churn every subscriber leaves
//!    replica 1 and subscribes to replica 2 with the cursor and generation
//!    it held. Resumed with deltas: its first frame other than a heartbeat
//!    is a delta, or it gets only heartbeats; otherwise it was sent a
//!    snapshot.
//! 4. **Restart resumes** on replica 1, for `--restarts` of the
//!    subscribers, in two ways: without state (a gateway without a state
//!    dir keeps nothing, so it subscribes with an empty cursor and always
//!    gets a snapshot), and from the state a gateway's state dir keeps (the
//!    view held at the end of the churn, through its on-disk form
//!    `FilterView::to_snapshot` → `from_whole_snapshot`, offered with its
//!    cursor and generation; a real gateway saves at most every 2 s while
//!    deltas flow, so its file may be a little older).
//!
//! At the end of each phase every subscriber's filter must hold the last
//! revocation, or the run fails.
//!
//! # Setup
//!
//! Loopback only. Redis is a `redis-server` started for the run on a free
//! port in a temporary directory (killed at exit). Two revocd replicas run
//! in this process on one Tokio runtime, each as `revocd serve --dev
//! --redis-url URL --heartbeat-interval 1s --max-token-lifetime 1h` with
//! the same key prefix (one change log, one digest key; the lifetime makes
//! filter slices of 56 s, so slices expire during the run); the clients
//! run on another runtime, each subscriber on its own HTTP/2 connection.
//! With the default leeway (60 s) a record lives lifetime + 60 s, so the
//! live set grows for the first 80 s of the default run and then holds at
//! about rate × 80. Every phase is
//! bounded in time and the run stops by itself.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use prost::Message;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use revocd::cursor::is_behind;
use revocd::filter::DIGEST_BYTES;
use revocd::gateway::{FilterView, SnapshotAssembler, MAX_FRAME_BYTES};
use revocd::pb::filter_update::Update;
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{
    FilterUpdate, GetStatsRequest, RevokeBatchRequest, RevokeRequest, Stats, SubscribeRequest,
};
use revocd::snapshot::STREAM_PROTOCOL;
use revocd::time::unix_now;

#[allow(dead_code)] // shared with the benchmarks; this uses a subset
#[path = "../benches/support/mod.rs"]
mod support;

// Shared with the integration tests; only `start` and `url` are used.
#[allow(dead_code)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;
use support::{grouped, runtime, serve_config, verdict, RunningServer};

/// Time between two `RevokeBatch` calls of the churn.
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Batches per second at that interval.
const BATCHES_PER_SECOND: u64 = 10;
/// gRPC frames each message with a flag byte and a 4-byte length.
const GRPC_PREFIX_BYTES: usize = 5;
/// Prefix of both replicas' Redis keys: they share one change log.
const KEY_PREFIX: &str = "churn:";
/// Longest wait for the subscribers' first snapshots.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait, after the last batch, for every subscriber to be at the
/// last revocation's cursor.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a resuming subscriber may take to be at that cursor again.
const RESUME_TIMEOUT: Duration = Duration::from_secs(15);
/// Target of a gateway's bytes over the delta floor.
const RATIO_TARGET: f64 = 1.2;

/// Churn benchmark: the filter stream's bytes per gateway under steady
/// revocations of short-lived tokens, and resumes after fail-over and
/// restart.
#[derive(Debug, Parser)]
struct Options {
    /// Raw subscribers on replica 1.
    #[arg(long, default_value_t = 20)]
    subscribers: usize,

    /// Revocations per second (at most 1,000 per batch: 10,000).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rate: u64,

    /// Lifetime of the tokens revoked, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    lifetime: u64,

    /// Length of the churn, in seconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,

    /// Subscribers that restart at the end, in each way (at most
    /// --subscribers).
    #[arg(long, default_value_t = 5)]
    restarts: usize,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(
        (1..=options.subscribers).contains(&options.restarts),
        "--subscribers must be at least 1, --restarts within 1..=--subscribers"
    );
    // Bound for the whole run: dropping it kills the redis-server.
    let redis = RedisServer::start();
    let server_runtime = runtime("revocd")?;
    let client_runtime = runtime("client")?;
    let report =
        client_runtime.block_on(benchmark(&options, &redis.url(), server_runtime.handle()))?;
    report.print(&options);
    Ok(())
}

/// Starts both replicas, measures, and stops them.
async fn benchmark(options: &Options, redis_url: &str, server_runtime: &Handle) -> Result<Report> {
    let serve_args = [
        "--dev",
        "--redis-url",
        redis_url,
        "--key-prefix",
        KEY_PREFIX,
        "--heartbeat-interval",
        "1s",
        "--max-token-lifetime",
        "1h",
        // Every --dev caller is the same caller; let it hold every stream.
        "--max-streams-per-key",
        "100000",
    ];
    let config = serve_config(&serve_args)?;
    let mut replicas = Vec::with_capacity(2);
    for _ in 0..2 {
        let config = config.clone();
        let start = async move { RunningServer::start(config.start_state(None).await?).await };
        let replica = server_runtime.spawn(start).await;
        replicas.push(replica.context("revocd start-up panicked")??);
    }
    let measured = measure(options, &replicas[0].url(), &replicas[1].url()).await;
    for replica in replicas {
        let stopped = server_runtime.spawn(replica.stop()).await;
        stopped.context("revocd shutdown panicked")??;
    }
    let mut report = measured?;
    report.serve = format!("revocd serve {}", serve_args.join(" "));
    report.leeway = config.jwt.leeway;
    Ok(report)
}

/// The churn with its subscribers, then the fail-over and restart resumes.
async fn measure(options: &Options, primary: &str, secondary: &str) -> Result<Report> {
    let mut calls = connect(primary).await?;
    let mut secondary_calls = connect(secondary).await?;

    let (goal, goal_rx) = watch::channel(None);
    let (synced, mut ready) = mpsc::channel(options.subscribers);
    let fresh = vec![None; options.subscribers];
    let tasks = spawn_all(primary, fresh, Some(&synced), &goal_rx).await?;
    drop(synced);
    let all_synced = async {
        for _ in 0..options.subscribers {
            ready.recv().await.context("a subscriber ended first")?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(SETUP_TIMEOUT, all_synced)
        .await
        .context("the subscribers did not all get a snapshot in time")??;

    let before = [stats(&mut calls).await?, stats(&mut secondary_calls).await?];
    let started = Instant::now();
    let churned = churn(calls.clone(), options).await?;
    goal.send_replace(Some(churned.last_cursor.clone()));
    let jti = &churned.last_jti;
    let followed = finish_all(tasks, DRAIN_TIMEOUT, jti)
        .await
        .context("the churn")?;
    let window = started.elapsed();
    let after = [stats(&mut calls).await?, stats(&mut secondary_calls).await?];

    let held: Vec<_> = followed.iter().map(|s| s.view.clone()).collect();
    // What a state dir gives back: the view as one whole snapshot.
    let mut saved = Vec::with_capacity(options.restarts);
    for view in held[..options.restarts].iter().flatten() {
        saved.push(Some(FilterView::from_whole_snapshot(view.to_snapshot())?));
    }
    let tasks = spawn_all(secondary, held, None, &goal_rx).await?;
    let failover = finish_all(tasks, RESUME_TIMEOUT, jti)
        .await
        .context("fail-over")?;
    let tasks = spawn_all(primary, vec![None; options.restarts], None, &goal_rx).await?;
    let cold = finish_all(tasks, RESUME_TIMEOUT, jti)
        .await
        .context("restarts")?;
    let tasks = spawn_all(primary, saved, None, &goal_rx).await?;
    let warm = finish_all(tasks, RESUME_TIMEOUT, jti)
        .await
        .context("restarts")?;
    Ok(Report {
        serve: String::new(),
        leeway: 0,
        first_sync: followed.iter().map(|f| f.first_sync).collect(),
        traffic: followed.iter().map(|f| f.traffic).collect(),
        churned,
        window,
        rebuilds: [0, 1].map(|r| after[r].filter_generation - before[r].filter_generation),
        end: after[0].clone(),
        failover,
        restarts: [cold, warm],
    })
}

// === clients ===

type Client = RevocationServiceClient<Channel>;

/// A client of `url` on a connection of its own.
async fn connect(url: &str) -> Result<Client> {
    let channel = Endpoint::from_shared(url.to_owned())?.connect().await?;
    Ok(RevocationServiceClient::new(channel).max_decoding_message_size(MAX_FRAME_BYTES))
}

/// The replica's `GetStats`.
async fn stats(client: &mut Client) -> Result<Stats> {
    Ok(client.get_stats(GetStatsRequest {}).await?.into_inner())
}

/// Awaits every task, failing on the first error or panic.
async fn join_all<T>(tasks: Vec<JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    for (index, task) in tasks.into_iter().enumerate() {
        let result = task.await.context("a task panicked")?;
        results.push(result.with_context(|| format!("subscriber {index}"))?);
    }
    Ok(results)
}

/// True when a subscriber at cursor `held` has everything up to `goal`.
fn reached(held: &str, goal: &str) -> bool {
    held == goal || is_behind(goal, held)
}

/// True when `view` may hold the revocation of `jti` (of the default
/// issuer, empty in `--dev`).
fn holds(view: &FilterView, jti: &str) -> bool {
    view.may_be_revoked(&view.digest_key().token("", jti), None)
}

/// The subscription of gateway `index`, resuming from `held` (if any) with
/// the stream protocol gateways speak.
fn subscribe_request(index: usize, held: Option<&FilterView>) -> SubscribeRequest {
    SubscribeRequest {
        cursor: held.map(|v| v.cursor().to_owned()).unwrap_or_default(),
        generation: held.map_or(0, FilterView::generation),
        gateway_id: format!("churn-{index}"),
        protocol: STREAM_PROTOCOL,
    }
}

// === subscribers ===

/// Bytes on the wire a subscriber received, by frame kind, and its
/// snapshots.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    snapshot_bytes: u64,
    delta_bytes: u64,
    heartbeat_bytes: u64,
    /// Complete snapshots (all their parts received).
    snapshots: u64,
    /// Of those, snapshots of the generation already held: a lagging
    /// subscriber re-based.
    rebases: u64,
}

impl Traffic {
    fn total(&self) -> u64 {
        self.snapshot_bytes + self.delta_bytes + self.heartbeat_bytes
    }
}

/// A raw subscriber: frames applied as a gateway applies them, and what
/// they cost.
struct Follower {
    assembler: SnapshotAssembler,
    view: Option<FilterView>,
    /// Its traffic (after the first sync, when that is set apart).
    traffic: Traffic,
    /// Its traffic until its first view was in place, when set apart.
    first_sync: Traffic,
    /// How it was served: with deltas (or only heartbeats), or a
    /// snapshot; decided by its first frame other than a heartbeat.
    with_deltas: Option<bool>,
}

impl Follower {
    /// A subscriber holding `view` (none when it starts afresh).
    fn new(view: Option<FilterView>) -> Self {
        Follower {
            assembler: SnapshotAssembler::default(),
            view,
            traffic: Traffic::default(),
            first_sync: Traffic::default(),
            with_deltas: None,
        }
    }

    /// Counts and applies one frame.
    fn apply(&mut self, frame: FilterUpdate) -> Result<()> {
        let bytes = (frame.encoded_len() + GRPC_PREFIX_BYTES) as u64;
        let traffic = &mut self.traffic;
        let with_deltas = match frame.update.context("a frame without an update")? {
            Update::Snapshot(part) => {
                traffic.snapshot_bytes += bytes;
                let Some(next) = self.assembler.push(part)? else {
                    return Ok(());
                };
                traffic.snapshots += 1;
                let held = self.view.as_ref().map(FilterView::generation);
                traffic.rebases += u64::from(held == Some(next.generation()));
                self.view = Some(next);
                Some(false)
            }
            Update::Delta(delta) => {
                traffic.delta_bytes += bytes;
                let view = self.view.as_ref().context("a delta before any snapshot")?;
                self.view = Some(view.with_delta(&delta)?);
                Some(true)
            }
            Update::Heartbeat(_) => {
                traffic.heartbeat_bytes += bytes;
                // Only heartbeats while a view is held: nothing was missed.
                self.view.as_ref().map(|_| true)
            }
        };
        self.with_deltas = self.with_deltas.or(with_deltas);
        Ok(())
    }
}

/// Subscriber `index` on `client`'s replica, offering `held` (none: it
/// starts afresh): applies frames until its cursor is at the one `goal`
/// names (set once the churn is over). With `synced`, it reports there
/// once it holds a view, and its traffic until then is set apart.
async fn subscriber(
    mut client: Client,
    index: usize,
    held: Option<FilterView>,
    mut synced: Option<mpsc::Sender<()>>,
    mut goal: watch::Receiver<Option<String>>,
) -> Result<Follower> {
    let request = subscribe_request(index, held.as_ref());
    let mut stream = client.subscribe(request).await?.into_inner();
    let mut follower = Follower::new(held);
    loop {
        let done = match (goal.borrow_and_update().as_deref(), &follower.view) {
            (Some(goal), Some(view)) => {
                follower.with_deltas.is_some() && reached(view.cursor(), goal)
            }
            _ => false,
        };
        if done {
            // Dropping the stream leaves the replica.
            return Ok(follower);
        }
        tokio::select! {
            frame = stream.message() => follower.apply(frame?.context("the stream ended")?)?,
            changed = goal.changed() => changed.context("the benchmark stopped")?,
        }
        if follower.view.is_some() {
            if let Some(synced) = synced.take() {
                follower.first_sync = std::mem::take(&mut follower.traffic);
                let _ = synced.send(()).await;
            }
        }
    }
}

// === the churn ===

/// What the churn made.
#[derive(Default)]
struct Churned {
    /// Revocations acknowledged (every item must be).
    acknowledged: u64,
    /// `RevokeBatch` calls made.
    batches: u64,
    /// From the first batch to the last one's reply.
    elapsed: Duration,
    /// Cursor of the latest revocation in the change log.
    last_cursor: String,
    /// The jti revoked there.
    last_jti: String,
}

/// `--rate` revocations per second for `--seconds`, a batch every
/// [`BATCH_INTERVAL`]; fails on any item not newly revoked.
async fn churn(mut client: Client, options: &Options) -> Result<Churned> {
    let mut churned = Churned::default();
    let mut ticks = tokio::time::interval(BATCH_INTERVAL);
    let started = Instant::now();
    let mut next_jti = 0;
    for batch in 0..options.seconds * BATCHES_PER_SECOND {
        ticks.tick().await;
        // rate/10 each, spread evenly when the rate is no multiple of 10.
        let size = (batch + 1) * options.rate / BATCHES_PER_SECOND
            - batch * options.rate / BATCHES_PER_SECOND;
        let jtis: Vec<String> = (next_jti..next_jti + size)
            .map(|n| format!("churn-{n:09}"))
            .collect();
        next_jti += size;
        if jtis.is_empty() {
            continue;
        }
        let expires_at = unix_now() + options.lifetime as i64;
        let items = jtis
            .iter()
            .map(|jti| RevokeRequest {
                jti: jti.clone(),
                expires_at,
                ..RevokeRequest::default()
            })
            .collect();
        let reply = client.revoke_batch(RevokeBatchRequest { items }).await?;
        churned.batches += 1;
        let results = reply.into_inner().results;
        ensure!(results.len() == jtis.len(), "a batch lost results");
        for (jti, result) in jtis.into_iter().zip(results) {
            ensure!(
                result.code == 0,
                "{jti} refused: {} (code {})",
                result.error,
                result.code
            );
            let response = result
                .response
                .context("an accepted item without response")?;
            ensure!(response.newly_revoked, "{jti} was not newly revoked");
            if churned.last_cursor.is_empty() || is_behind(&churned.last_cursor, &response.cursor) {
                churned.last_cursor = response.cursor;
                churned.last_jti = jti;
            }
            churned.acknowledged += 1;
        }
        if (batch + 1).is_multiple_of(10 * BATCHES_PER_SECOND) {
            eprintln!(
                "churn: {} s of {}, {} revocations acknowledged",
                (batch + 1) / BATCHES_PER_SECOND,
                options.seconds,
                churned.acknowledged
            );
        }
    }
    churned.elapsed = started.elapsed();
    ensure!(churned.acknowledged > 0, "nothing was revoked");
    Ok(churned)
}

// === subscribers by the group ===

/// One subscriber per `held` view (none: it starts afresh) on `url`, each
/// on a connection of its own, following until the cursor `goal` names.
async fn spawn_all(
    url: &str,
    held: Vec<Option<FilterView>>,
    synced: Option<&mpsc::Sender<()>>,
    goal: &watch::Receiver<Option<String>>,
) -> Result<Vec<JoinHandle<Result<Follower>>>> {
    let mut tasks = Vec::with_capacity(held.len());
    for (index, view) in held.into_iter().enumerate() {
        let client = connect(url).await?;
        let follower = subscriber(client, index, view, synced.cloned(), goal.clone());
        tasks.push(tokio::spawn(follower));
    }
    Ok(tasks)
}

/// The subscribers, once all are at the goal within `timeout`
/// (from now) with the revocation of `last_jti` in their filters.
async fn finish_all(
    tasks: Vec<JoinHandle<Result<Follower>>>,
    timeout: Duration,
    last_jti: &str,
) -> Result<Vec<Follower>> {
    let followers = tokio::time::timeout(timeout, join_all(tasks))
        .await
        .with_context(|| {
            format!("not every subscriber at the last revocation's cursor within {timeout:?}")
        })??;
    for (index, follower) in followers.iter().enumerate() {
        let view = follower.view.as_ref().context("no view")?;
        ensure!(
            holds(view, last_jti),
            "subscriber {index}'s filter lacks the last revocation"
        );
    }
    Ok(followers)
}

// === the report ===

/// Everything measured.
struct Report {
    /// The replicas' command line.
    serve: String,
    /// Seconds a record outlives its token (`--leeway`).
    leeway: u64,
    /// Each subscriber's first snapshot (left out of the window).
    first_sync: Vec<Traffic>,
    /// Each subscriber's traffic over the window.
    traffic: Vec<Traffic>,
    churned: Churned,
    /// From the first batch until every subscriber had the last revocation.
    window: Duration,
    /// Filter rebuilds of replicas 1 and 2 over the window.
    rebuilds: [u64; 2],
    /// Replica 1's `GetStats` at the end of the window.
    end: Stats,
    failover: Vec<Follower>,
    /// Restarts without state, and from a state dir's.
    restarts: [Vec<Follower>; 2],
}

/// Prints how `resumes` were served: with deltas or a snapshot, and the
/// bytes each got on average.
fn print_resumes(what: &str, resumes: &[Follower]) {
    let served = |with_deltas: bool| {
        let traffic = resumes
            .iter()
            .filter(|r| r.with_deltas == Some(with_deltas));
        let (count, bytes) = traffic.fold((0, 0), |(n, b), r| (n + 1, b + r.traffic.total()));
        (count, grouped(bytes / count.max(1)))
    };
    let ((deltas, delta_bytes), (snapshots, snapshot_bytes)) = (served(true), served(false));
    println!(
        "{what}: {deltas} of {} with deltas ({delta_bytes} bytes each), {snapshots} with a snapshot ({snapshot_bytes} bytes each)",
        resumes.len()
    );
}

impl Report {
    fn print(&self, options: &Options) {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let (churned, serve, leeway) = (&self.churned, &self.serve, self.leeway);
        let (rate, lifetime, seconds) = (options.rate, options.lifetime, options.seconds);
        let (calls, acked) = (grouped(churned.batches), grouped(churned.acknowledged));
        let took = churned.elapsed.as_secs_f64();
        let per_second = churned.acknowledged as f64 / took;
        let gateways = self.traffic.len();
        let window = self.window.as_secs_f64();
        let first =
            grouped(self.first_sync.iter().map(Traffic::total).sum::<u64>() / gateways as u64);
        let [rebuilds, rebuilds_2] = self.rebuilds;
        let (live, bits) = (
            grouped(self.end.live_revocations),
            grouped(self.end.filter_bits),
        );
        println!();
        println!("command: {command}");
        println!("revocd:  2 in-process replicas on one Redis, each `{serve}` (one Tokio runtime; {cores} cores shared with the clients and redis-server)");
        println!("churn:   {rate} revocations/s by jti of {lifetime} s tokens (records kept {} s with the {leeway} s leeway) for {seconds} s through replica 1, {calls} RevokeBatch calls {} ms apart: {acked} acknowledged in {took:.1} s ({per_second:.0}/s), every item accepted", lifetime + leeway, BATCH_INTERVAL.as_millis());
        println!("window:  {window:.1} s, from the first batch until all {gateways} subscribers of replica 1 were at the last revocation's cursor");
        println!(
            "left out: each subscriber's first sync before the churn, {first} bytes on average"
        );
        println!("new generations: replica 1 {rebuilds} (rise of GetStats filter_generation), replica 2 {rebuilds_2}; replica 1 at the end: {live} live revocations, filter {bits} bits");

        // Bytes summed over the gateways, per gateway per minute.
        let per_minute = |bytes: u64| bytes as f64 / gateways as f64 / window * 60.0;
        let sum = |field: fn(&Traffic) -> u64| self.traffic.iter().map(field).sum::<u64>();
        // What each gateway must learn: every digest once.
        let floor = (churned.acknowledged * DIGEST_BYTES as u64) as f64 / window * 60.0;
        let row = |name: &str, bytes: f64, note: &str| {
            let bytes_text = grouped(bytes.round() as u64);
            let line = format!(
                "  {name:<22} {bytes_text:>12} {:>8.2}  {note}",
                bytes / floor
            );
            println!("{}", line.trim_end());
        };
        let (snapshots, deltas) = (
            per_minute(sum(|t| t.snapshot_bytes)),
            per_minute(sum(|t| t.delta_bytes)),
        );
        let total = per_minute(sum(Traffic::total));
        let met = verdict(total / floor <= RATIO_TARGET);
        println!();
        println!("per gateway per minute      bytes/min   × floor");
        row(
            "snapshots",
            snapshots,
            &format!("{:.2}× the deltas", snapshots / deltas),
        );
        row("deltas", deltas, "");
        row("heartbeats", per_minute(sum(|t| t.heartbeat_bytes)), "");
        row(
            "total",
            total,
            &format!("target <= {RATIO_TARGET} × floor {met}"),
        );
        row("delta floor", floor, "16 bytes per revocation acknowledged");

        let counts: Vec<u64> = self.traffic.iter().map(|t| t.snapshots).collect();
        let (min, max) = (
            counts.iter().min().unwrap_or(&0),
            counts.iter().max().unwrap_or(&0),
        );
        let (received, rebases) = (sum(|t| t.snapshots), sum(|t| t.rebases));
        let each = received as f64 / gateways as f64;
        println!();
        println!("snapshots received: {each:.1} per gateway (min {min}, max {max}), {received} in total ({rebases} re-basings of a lagging subscriber); replica 1 made {rebuilds} new generations");
        print_resumes(
            "fail-over resumes (replica 1 → 2, with the cursor and generation held)",
            &self.failover,
        );
        print_resumes(
            "restart resumes (no state kept: empty cursor)",
            &self.restarts[0],
        );
        print_resumes(
            "restart resumes (from a state dir's saved view)",
            &self.restarts[1],
        );
    }
}
