//! Propagation benchmark: how long a revocation takes to reach every
//! subscribed gateway, next to Redis streams doing the same fan-out, plus the
//! snapshot's size, a new subscriber's time to be in sync, and the server's
//! memory per idle subscriber.
//!
//! ```text
//! cargo build --release --bin revocd    # for the memory measurement (see below)
//! cargo run --release --example propagation -- [--subscribers 1,100,1000] [--revocations 200]
//!     [--snapshot-test [--preload 1000000]]
//! ```
//!
//! # What is measured
//!
//! 1. **Propagation**, for each `--subscribers` count N:
//!    - baseline: Redis `XADD` → `XREAD`. N readers, each on its own
//!      connection, block in `XREAD BLOCK` on a fresh stream while one
//!      writer `XADD`s `--revocations` entries, `--spacing-ms` apart. An
//!      entry's latency at a reader is from the writer's `XADD` reply to the
//!      reader's `XREAD` reply;
//!    - revocd: N raw `Subscribe` streams spread over `--connections` HTTP/2
//!      connections (at most 256 streams each, the server's limit), each
//!      applying frames as a gateway does (`SnapshotAssembler`,
//!      `FilterView::with_delta`). Once all are in sync, `--revocations`
//!      `Revoke` RPCs of new jtis are made one at a time, `--spacing-ms`
//!      apart, on a connection of their own. A revocation's latency at a
//!      subscriber is from the `Revoke` reply to the delta naming its digest
//!      being applied (or a re-basing snapshot holding it).
//!
//!    "every" is, per revocation (entry), the latency until the last of the
//!    N has it; "each" is the distribution over all (subscriber,
//!    revocation) pairs. Both are measured from the sender's reply ("ack",
//!    as the targets are defined) and, since the change often reaches the
//!    receivers before the sender has read its reply (such arrivals count as
//!    0 from the ack), also from the moment the request was sent ("send":
//!    the whole time from asking to revoke to the change being everywhere).
//!    Targets (p99 of ack → every): <= 10 ms at 100 subscribers, <= 50 ms
//!    at 1,000.
//! 2. **Memory per idle subscriber**: `VmRSS` of the server before and
//!    after `--idle-subscribers` more streams are opened and have their
//!    snapshot (after warm-up streams, and with heartbeats flowing). The
//!    server is the real `revocd` binary (`--revocd-bin`, by default
//!    `revocd` beside this example's directory, i.e. `target/release/revocd`),
//!    run as `revocd serve --dev` with the memory store, so the figure is
//!    the server's alone. Without the binary the in-process server is used
//!    and the figure includes the clients' side of each stream (said so in
//!    the output). Target: <= 64 KiB per subscriber.
//! 3. With `--snapshot-test`: **snapshot size and time to sync**. `--preload`
//!    revocations (default 1,000,000) are made through the `Revoke` RPC by
//!    `--preload-concurrency` concurrent callers (nothing is written to
//!    Redis behind the server's back). Then new subscribers subscribe one at
//!    a time, more than a second apart so each gets a freshly built snapshot
//!    (the server reuses one for a second): the time from the `Subscribe`
//!    call to the snapshot received and decoded by `SnapshotAssembler`, and
//!    the snapshot's bytes on the wire (each frame's protobuf encoding plus
//!    gRPC's 5-byte prefix) per live revocation. Targets: <= 300 ms,
//!    <= 15 bits per entry.
//!
//! # Setup
//!
//! Loopback only. Redis is a `redis-server` started for the run on a free
//! port in a temporary directory (killed at exit). revocd runs in this
//! process on its own Tokio runtime, as `revocd serve --dev --redis-url URL
//! --heartbeat-interval 1s`; the clients run on another runtime and share
//! the machine's cores with both servers, so with 1,000 subscribers the
//! client work of applying every frame 1,000 times is in the measured
//! latency too (an upper bound for gateways on their own machines). Every
//! phase is bounded in time and the run stops by itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use prost::Message;
use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use revocd::filter::{Digest, DigestKey};
use revocd::gateway::{FilterView, SnapshotAssembler, MAX_FRAME_BYTES};
use revocd::pb::filter_update::Update;
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{GetStatsRequest, RevokeRequest, SubscribeRequest};
use revocd::server::MAX_CONCURRENT_STREAMS;
use revocd::time::unix_now;

#[allow(dead_code)] // shared with the benchmarks; this uses a subset
#[path = "../benches/support/mod.rs"]
mod support;

// Shared with the integration tests; only `start`, `url` and `free_port`
// are used.
#[allow(dead_code)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use redis_server::{free_port, RedisServer};
use support::{runtime, serve_config, verdict, RunningServer};

/// Lifetime of the tokens revoked, in seconds.
const TOKEN_LIFETIME: i64 = 3_600;
/// Most streams opened per HTTP/2 connection: under the server's limit,
/// with room to spare.
const STREAMS_PER_CONNECTION: usize = MAX_CONCURRENT_STREAMS as usize * 3 / 4;
/// Longest wait for subscribers to be in sync, or readers connected.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait, after the last revocation, for every receiver to have it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a reader's `XREAD` blocks before it asks again.
const XREAD_BLOCK: Duration = Duration::from_secs(1);
/// Streams opened before the idle-memory baseline is read, so one-off
/// allocations (first snapshot, connection buffers) are not counted.
const WARM_SUBSCRIBERS: usize = 20;
/// Time for the heartbeat-driven state of idle streams to settle.
const SETTLE: Duration = Duration::from_millis(2_500);
/// New subscribers timed in the snapshot test.
const SYNC_SAMPLES: usize = 5;
/// The server reuses a built snapshot for a second; samples are spaced
/// wider so each gets a fresh one.
const SYNC_SPACING: Duration = Duration::from_millis(1_100);
/// Preloaded revocations by default with `--snapshot-test`.
const DEFAULT_PRELOAD: u64 = 1_000_000;
/// Target p99 of "every subscriber" latency, by subscriber count.
const LATENCY_TARGETS: [(usize, Duration); 2] = [
    (100, Duration::from_millis(10)),
    (1_000, Duration::from_millis(50)),
];
/// Target snapshot size on the wire.
const BITS_PER_ENTRY_TARGET: f64 = 15.0;
/// Target time for a new subscriber to be in sync.
const SYNC_TARGET: Duration = Duration::from_millis(300);
/// Target server memory per idle subscriber, in KiB.
const IDLE_KIB_TARGET: f64 = 64.0;

/// Propagation benchmark: revocd's filter stream next to Redis streams.
#[derive(Debug, Parser)]
struct Options {
    /// Subscriber (and Redis reader) counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100, 1_000])]
    subscribers: Vec<usize>,

    /// Revocations (and Redis entries) per subscriber count.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    revocations: u64,

    /// Milliseconds between two revocations.
    #[arg(long, default_value_t = 5)]
    spacing_ms: u64,

    /// HTTP/2 connections the subscribers share (more are opened if one
    /// would carry more than 192 streams).
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Idle subscribers opened for the memory measurement (0: skip it).
    #[arg(long, default_value_t = 1_000)]
    idle_subscribers: usize,

    /// The `revocd` binary for the memory measurement; default: `revocd`
    /// beside this example's directory (`target/release/revocd`).
    #[arg(long)]
    revocd_bin: Option<PathBuf>,

    /// Also measure the snapshot of `--preload` live revocations.
    #[arg(long)]
    snapshot_test: bool,

    /// Revocations made before the snapshot test (default 1,000,000).
    #[arg(long, requires = "snapshot_test")]
    preload: Option<u64>,

    /// Concurrent `Revoke` callers while preloading.
    #[arg(long, default_value_t = 256)]
    preload_concurrency: usize,
}

impl Options {
    fn spacing(&self) -> Duration {
        Duration::from_millis(self.spacing_ms)
    }
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(
        options.subscribers.iter().all(|&n| n > 0),
        "--subscribers must be positive"
    );
    ensure!(options.connections > 0, "--connections must be at least 1");
    ensure!(
        options.preload_concurrency > 0,
        "--preload-concurrency must be at least 1"
    );
    // Bound for the whole run: dropping it kills the redis-server.
    let redis = RedisServer::start();
    let server_runtime = runtime("revocd")?;
    let client_runtime = runtime("client")?;
    client_runtime.block_on(benchmark(&options, &redis.url(), server_runtime.handle()))
}

/// Runs every phase and prints the report.
async fn benchmark(options: &Options, redis_url: &str, server_runtime: &Handle) -> Result<()> {
    let serve_args = [
        "--dev",
        "--redis-url",
        redis_url,
        "--key-prefix",
        "propagation:",
        "--heartbeat-interval",
        "1s",
        // Every --dev caller is the same caller; let it hold every stream.
        "--max-streams-per-key",
        "100000",
    ];
    let config = serve_config(&serve_args)?;
    let server = server_runtime
        .spawn(async move { RunningServer::start(config.start_state(None).await?).await })
        .await
        .context("revocd start-up panicked")??;
    let revocd = Revocd::connect(&server.url()).await?;

    let mut rows = Vec::new();
    for &count in &options.subscribers {
        let stream = format!("propagation:baseline:{count}");
        let baseline = redis_fanout(redis_url, &stream, count, options)
            .await
            .with_context(|| format!("Redis fan-out to {count} readers"))?;
        let measured = revocd_fanout(&revocd, count, options)
            .await
            .with_context(|| format!("revocd fan-out to {count} subscribers"))?;
        rows.push((count, baseline, measured));
    }
    let memory = match options.idle_subscribers {
        0 => None,
        idle => Some(
            idle_memory(options, idle, &server.url())
                .await
                .context("idle-subscriber memory")?,
        ),
    };
    let snapshot = if options.snapshot_test {
        let preload = options.preload.unwrap_or(DEFAULT_PRELOAD);
        Some(snapshot_test(&revocd, preload, options).await?)
    } else {
        None
    };
    server_runtime
        .spawn(server.stop())
        .await
        .context("revocd shutdown panicked")??;

    print_setup(options, &serve_args);
    print_propagation(options, &rows);
    if let Some(memory) = &memory {
        memory.print();
    }
    if let Some(snapshot) = &snapshot {
        snapshot.print();
    }
    Ok(())
}

// === latencies ===

/// When each receiver got each event.
struct Fanout {
    /// Measured from each event's acknowledgement to its sender.
    from_ack: Latencies,
    /// Measured from the moment its sender sent it.
    from_send: Latencies,
    /// (receiver, event) pairs never received in time.
    lost: usize,
    /// Subscribers that fell behind and were re-based with a snapshot.
    rebased: usize,
}

/// Latencies of a fan-out from one origin per event.
struct Latencies {
    /// Per event: time until the last receiver had it, sorted; events some
    /// receiver never got are left out.
    every: Vec<Duration>,
    /// Every (receiver, event) latency, sorted.
    each: Vec<Duration>,
}

impl Latencies {
    /// `arrivals[r][e]` is when receiver `r` got event `e`, which started at
    /// `origins[e]`; an arrival before its origin counts as 0.
    fn new(origins: &[Instant], arrivals: &[Vec<Option<Instant>>]) -> Self {
        let mut every = Vec::with_capacity(origins.len());
        let mut each = Vec::with_capacity(origins.len() * arrivals.len());
        for (event, origin) in origins.iter().enumerate() {
            let mut last = Some(Duration::ZERO);
            for receiver in arrivals {
                match receiver.get(event).copied().flatten() {
                    Some(at) => {
                        let latency = at.saturating_duration_since(*origin);
                        each.push(latency);
                        last = last.map(|l| l.max(latency));
                    }
                    None => last = None,
                }
            }
            every.extend(last);
        }
        every.sort_unstable();
        each.sort_unstable();
        Latencies { every, each }
    }
}

/// When each event was sent and acknowledged to its sender.
#[derive(Default)]
struct Sent {
    sent: Vec<Instant>,
    acked: Vec<Instant>,
}

impl Sent {
    /// Times `send`, one event.
    async fn time<F: std::future::Future<Output = Result<()>>>(&mut self, send: F) -> Result<()> {
        let sent = Instant::now();
        send.await?;
        self.acked.push(Instant::now());
        self.sent.push(sent);
        Ok(())
    }
}

impl Fanout {
    fn new(events: &Sent, arrivals: &[Vec<Option<Instant>>], rebased: usize) -> Self {
        let lost = arrivals
            .iter()
            .map(|receiver| {
                let got = receiver.iter().take(events.acked.len()).flatten().count();
                events.acked.len() - got
            })
            .sum();
        Fanout {
            from_ack: Latencies::new(&events.acked, arrivals),
            from_send: Latencies::new(&events.sent, arrivals),
            lost,
            rebased,
        }
    }
}

/// The nearest-rank `p`-quantile (`p` in 0..=1) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
}

/// A duration in milliseconds with two decimals, `-` for none.
fn millis(duration: Option<Duration>) -> String {
    duration.map_or("-".to_owned(), |d| {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    })
}

/// Cancels `token` after `timeout` unless aborted first.
fn cancel_after(token: &CancellationToken, timeout: Duration) -> JoinHandle<()> {
    let token = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        token.cancel();
    })
}

/// Awaits every task, failing on the first error or panic.
async fn join_all<T>(tasks: Vec<JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    for (index, task) in tasks.into_iter().enumerate() {
        results.push(
            task.await
                .context("a task panicked")?
                .with_context(|| format!("task {index}"))?,
        );
    }
    Ok(results)
}

// === the Redis baseline ===

/// N readers block in `XREAD` on `stream` while one writer `XADD`s.
async fn redis_fanout(
    url: &str,
    stream: &str,
    readers: usize,
    options: &Options,
) -> Result<Fanout> {
    let client = redis::Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SETUP_TIMEOUT))
        .set_response_timeout(Some(XREAD_BLOCK + Duration::from_secs(2)));
    let events = options.revocations as usize;
    let stop = CancellationToken::new();
    let (connected, mut ready) = mpsc::channel(readers);
    let tasks: Vec<JoinHandle<Result<Vec<Option<Instant>>>>> = (0..readers)
        .map(|_| {
            let (client, config, stream) = (client.clone(), config.clone(), stream.to_owned());
            let (connected, stop) = (connected.clone(), stop.clone());
            tokio::spawn(async move {
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let _ = connected.send(()).await;
                read_stream(connection, &stream, events, &stop).await
            })
        })
        .collect();
    drop(connected);
    wait_for(&mut ready, readers, "Redis readers connected").await?;
    // Each reader sends its first XREAD right after connecting.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut writer = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut sent = Sent::default();
    for seq in 0..events {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(stream).arg("*").arg("seq").arg(seq);
        sent.time(async {
            xadd.query_async::<String>(&mut writer).await?;
            Ok(())
        })
        .await?;
        tokio::time::sleep(options.spacing()).await;
    }
    let timer = cancel_after(&stop, DRAIN_TIMEOUT);
    let arrivals = join_all(tasks).await?;
    timer.abort();
    redis::cmd("DEL")
        .arg(stream)
        .query_async::<()>(&mut writer)
        .await?;
    Ok(Fanout::new(&sent, &arrivals, 0))
}

/// One reader: `XREAD BLOCK` from the stream's start until it has `events`
/// entries or `stop`; when it got each entry, by its `seq` field.
async fn read_stream(
    mut connection: redis::aio::MultiplexedConnection,
    stream: &str,
    events: usize,
    stop: &CancellationToken,
) -> Result<Vec<Option<Instant>>> {
    let mut arrivals = vec![None; events];
    let mut received = 0;
    let mut last_id = "0-0".to_owned();
    while received < events && !stop.is_cancelled() {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(XREAD_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(&last_id)
            .query_async(&mut connection)
            .await?;
        let now = Instant::now();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let seq: usize = entry.get("seq").context("an entry without seq")?;
            if let Some(slot) = arrivals.get_mut(seq).filter(|slot| slot.is_none()) {
                *slot = Some(now);
                received += 1;
            }
            last_id = entry.id;
        }
    }
    Ok(arrivals)
}

/// Waits for `count` messages on `ready`.
async fn wait_for(ready: &mut mpsc::Receiver<()>, count: usize, what: &str) -> Result<()> {
    let all = async {
        for _ in 0..count {
            ready
                .recv()
                .await
                .context("a task ended before it was ready")?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(SETUP_TIMEOUT, all)
        .await
        .with_context(|| format!("not all {count} {what} within {SETUP_TIMEOUT:?}"))?
}

// === revocd ===

type Client = RevocationServiceClient<Channel>;

/// gRPC connections to revocd: one for calls, more for subscribers.
struct Revocd {
    endpoint: Endpoint,
    /// For `Revoke` and `GetStats`.
    calls: Client,
}

impl Revocd {
    async fn connect(url: &str) -> Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_owned())?;
        let calls = Self::client(endpoint.connect().await?);
        Ok(Revocd { endpoint, calls })
    }

    fn client(channel: Channel) -> Client {
        RevocationServiceClient::new(channel).max_decoding_message_size(MAX_FRAME_BYTES)
    }

    /// Clients on their own HTTP/2 connections for `streams` concurrent
    /// streams: `count` connections, more if one would carry over
    /// [`STREAMS_PER_CONNECTION`], fewer if there are fewer streams.
    async fn clients(&self, count: usize, streams: usize) -> Result<Vec<Client>> {
        let count = count
            .max(streams.div_ceil(STREAMS_PER_CONNECTION))
            .min(streams.max(1));
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(Self::client(self.endpoint.connect().await?));
        }
        Ok(clients)
    }

    /// Revokes `jti` (of the default issuer) for [`TOKEN_LIFETIME`].
    async fn revoke(mut client: Client, jti: String) -> Result<()> {
        let request = RevokeRequest {
            jti,
            expires_at: unix_now() + TOKEN_LIFETIME,
            ..RevokeRequest::default()
        };
        let reply = client.revoke(request).await?.into_inner();
        ensure!(reply.newly_revoked, "a jti was revoked already");
        Ok(())
    }
}

/// What one subscriber saw.
struct Subscription {
    /// When the revocation of each jti was applied.
    arrivals: Vec<Option<Instant>>,
    /// Snapshots after the first (re-basing).
    rebased: usize,
}

/// N subscribers in sync, then revocations one at a time.
async fn revocd_fanout(revocd: &Revocd, subscribers: usize, options: &Options) -> Result<Fanout> {
    let clients = revocd.clients(options.connections, subscribers).await?;
    let run = format!("propagation-{}-{subscribers}", std::process::id());
    let jtis: Arc<Vec<String>> = Arc::new(
        (0..options.revocations)
            .map(|i| format!("{run}-{i}"))
            .collect(),
    );
    let stop = CancellationToken::new();
    let (synced, mut ready) = mpsc::channel(subscribers);
    let tasks: Vec<JoinHandle<Result<Subscription>>> = (0..subscribers)
        .map(|index| {
            let client = clients[index % clients.len()].clone();
            let (jtis, synced, stop) = (Arc::clone(&jtis), synced.clone(), stop.clone());
            tokio::spawn(
                async move { follow(client, &jtis, synced, &stop, Until::AllApplied).await },
            )
        })
        .collect();
    drop(synced);
    wait_for(&mut ready, subscribers, "subscribers in sync").await?;

    let mut sent = Sent::default();
    for jti in jtis.iter() {
        sent.time(Revocd::revoke(revocd.calls.clone(), jti.clone()))
            .await?;
        tokio::time::sleep(options.spacing()).await;
    }
    let timer = cancel_after(&stop, DRAIN_TIMEOUT);
    let runs = join_all(tasks).await?;
    timer.abort();
    let rebased = runs.iter().filter(|run| run.rebased > 0).count();
    let arrivals: Vec<_> = runs.into_iter().map(|run| run.arrivals).collect();
    Ok(Fanout::new(&sent, &arrivals, rebased))
}

/// When a subscriber stops following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Once every revocation it waits for is applied (or `stop`).
    AllApplied,
    /// Only at `stop`: an idle subscriber holding its stream.
    Stopped,
}

/// One subscriber, applying frames as a gateway does: reports on `synced`
/// once its first snapshot is applied, then records when the revocation of
/// each of `jtis` is applied, until `until` or `stop`.
async fn follow(
    mut client: Client,
    jtis: &[String],
    synced: mpsc::Sender<()>,
    stop: &CancellationToken,
    until: Until,
) -> Result<Subscription> {
    let request = SubscribeRequest {
        gateway_id: "propagation".into(),
        protocol: revocd::snapshot::STREAM_PROTOCOL,
        ..SubscribeRequest::default()
    };
    let mut stream = client.subscribe(request).await?.into_inner();
    let mut assembler = SnapshotAssembler::default();
    let mut view: Option<FilterView> = None;
    // Digests not applied yet → index in `jtis`; filled from the first
    // snapshot's key.
    let mut pending: HashMap<Digest, usize> = HashMap::new();
    let mut arrivals = vec![None; jtis.len()];
    let mut rebased = 0;
    while view.is_none() || !pending.is_empty() || until == Until::Stopped {
        let frame = tokio::select! {
            frame = stream.message() => frame?.context("the stream ended")?,
            () = stop.cancelled() => break,
        };
        match frame.update {
            Some(Update::Snapshot(part)) => {
                let Some(next) = assembler.push(part)? else {
                    continue;
                };
                let now = Instant::now();
                if view.is_none() {
                    pending = digests(next.digest_key(), jtis);
                    let _ = synced.send(()).await;
                } else {
                    // Re-based: the snapshot holds what this one missed.
                    rebased += 1;
                    pending.retain(|digest, &mut index| {
                        let held = next.may_be_revoked(digest, None);
                        if held {
                            arrivals[index] = Some(now);
                        }
                        !held
                    });
                }
                view = Some(next);
            }
            Some(Update::Delta(delta)) => {
                let current = view.as_ref().context("a delta before any snapshot")?;
                let next = current.with_delta(&delta)?;
                let now = Instant::now();
                for bytes in delta.added_digests() {
                    let index = Digest::from_slice(bytes)
                        .ok()
                        .and_then(|digest| pending.remove(&digest));
                    if let Some(index) = index {
                        arrivals[index] = Some(now);
                    }
                }
                view = Some(next);
            }
            Some(Update::Heartbeat(_)) | None => {}
        }
    }
    Ok(Subscription { arrivals, rebased })
}

/// The digest of each jti of the default issuer (empty in `--dev`), by
/// index.
fn digests(key: &DigestKey, jtis: &[String]) -> HashMap<Digest, usize> {
    jtis.iter()
        .enumerate()
        .map(|(index, jti)| (key.token("", jti), index))
        .collect()
}

// === memory per idle subscriber ===

/// Where the idle subscribers' server runs.
enum Target {
    /// The real binary: its own process.
    Process(ChildGuard),
    /// This process (the in-process server): RSS includes the clients.
    InProcess,
}

/// A child process killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The idle-memory measurement.
struct Memory {
    subscribers: usize,
    before_kib: u64,
    after_kib: u64,
    /// What was measured, for the report.
    described: String,
}

/// Opens `idle` subscribers (after warm-up ones) and reads the server's
/// RSS before and after.
async fn idle_memory(options: &Options, idle: usize, in_process_url: &str) -> Result<Memory> {
    let binary = options.revocd_bin.clone().unwrap_or_else(default_binary);
    let (target, url, described) = if binary.is_file() {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args(["serve", "--dev", "--listen", &listen])
            .args(["--heartbeat-interval", "1s"])
            .args(["--max-streams-per-key", "100000"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let described = format!(
            "{} serve --dev --listen {listen} --heartbeat-interval 1s (memory store, own process {})",
            binary.display(),
            child.id()
        );
        (
            Target::Process(ChildGuard(child)),
            format!("http://{listen}"),
            described,
        )
    } else {
        let described = format!(
            "the in-process revocd ({} not found: `cargo build --release --bin revocd`); RSS of this process, so it includes the clients' side of each stream",
            binary.display()
        );
        (Target::InProcess, in_process_url.to_owned(), described)
    };
    let pid = match &target {
        Target::Process(child) => child.0.id(),
        Target::InProcess => std::process::id(),
    };

    let revocd = connect_with_retry(&url).await?;
    let clients = revocd
        .clients(options.connections, WARM_SUBSCRIBERS + idle)
        .await?;
    let stop = CancellationToken::new();
    let (synced, mut ready) = mpsc::channel(WARM_SUBSCRIBERS + idle);
    let open = |range: std::ops::Range<usize>| -> Vec<JoinHandle<Result<Subscription>>> {
        range
            .map(|index| {
                let client = clients[index % clients.len()].clone();
                let (synced, stop) = (synced.clone(), stop.clone());
                tokio::spawn(
                    async move { follow(client, &[], synced, &stop, Until::Stopped).await },
                )
            })
            .collect()
    };
    let mut tasks = open(0..WARM_SUBSCRIBERS);
    wait_for(&mut ready, WARM_SUBSCRIBERS, "warm-up subscribers in sync").await?;
    tokio::time::sleep(SETTLE).await;
    let before_kib = rss_kib(pid)?;
    tasks.extend(open(WARM_SUBSCRIBERS..WARM_SUBSCRIBERS + idle));
    wait_for(&mut ready, idle, "idle subscribers in sync").await?;
    tokio::time::sleep(SETTLE).await;
    let after_kib = rss_kib(pid)?;
    stop.cancel();
    join_all(tasks).await?;
    drop(target);
    Ok(Memory {
        subscribers: idle,
        before_kib,
        after_kib,
        described,
    })
}

/// `target/<profile>/revocd`: this example runs from
/// `target/<profile>/examples/`.
fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    profile_dir.join("revocd")
}

/// Connects to a revocd that may still be starting.
async fn connect_with_retry(url: &str) -> Result<Revocd> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        match Revocd::connect(url).await {
            Ok(revocd) => return Ok(revocd),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("revocd at {url} did not start")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .with_context(|| format!("{path} has no VmRSS"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("VmRSS {line:?} in {path}"))
}

impl Memory {
    fn per_subscriber_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.subscribers as f64
    }

    fn print(&self) {
        let per = self.per_subscriber_kib();
        println!();
        println!("memory per idle subscriber: {}", self.described);
        println!(
            "  VmRSS {} KiB with {WARM_SUBSCRIBERS} warm-up streams, {} KiB with {} more idle streams in sync: {per:.1} KiB each   target <= {IDLE_KIB_TARGET:.0} KiB {}",
            self.before_kib,
            self.after_kib,
            self.subscribers,
            verdict(per <= IDLE_KIB_TARGET)
        );
    }
}

// === snapshot size and time to sync ===

/// The snapshot test's results.
struct SnapshotReport {
    preloaded: u64,
    concurrency: usize,
    preload_time: Duration,
    /// Live revocations the server reported when the snapshots were taken.
    live: u64,
    filter_bits: u64,
    parts: usize,
    wire_bytes: usize,
    /// Subscribe → snapshot decoded, per sample.
    sync_times: Vec<Duration>,
}

/// Preloads revocations through `Revoke`, waits until the server's filter
/// holds them, then times new subscribers' snapshots.
async fn snapshot_test(revocd: &Revocd, preload: u64, options: &Options) -> Result<SnapshotReport> {
    let started = Instant::now();
    preload_revocations(revocd, preload, options).await?;
    let preload_time = started.elapsed();
    wait_until_applied(revocd).await?;

    let clients = revocd.clients(1, 1).await?;
    let mut sync_times = Vec::with_capacity(SYNC_SAMPLES);
    let mut frames = (0, 0);
    for _ in 0..SYNC_SAMPLES {
        tokio::time::sleep(SYNC_SPACING).await;
        let (elapsed, parts, wire_bytes, view) = time_to_sync(clients[0].clone()).await?;
        ensure!(
            view.may_be_revoked(&view.digest_key().token("", &preload_jti(0)), None),
            "the snapshot lacks a preloaded revocation"
        );
        sync_times.push(elapsed);
        frames = (parts, wire_bytes);
    }
    // After the samples, so the filter's bits are those of the last
    // snapshot (a filter grown through the preload is compacted meanwhile).
    let stats = revocd
        .calls
        .clone()
        .get_stats(GetStatsRequest {})
        .await?
        .into_inner();
    Ok(SnapshotReport {
        preloaded: preload,
        concurrency: options.preload_concurrency,
        preload_time,
        live: stats.live_revocations,
        filter_bits: stats.filter_bits,
        parts: frames.0,
        wire_bytes: frames.1,
        sync_times,
    })
}

/// The jti of preloaded revocation `index`.
fn preload_jti(index: u64) -> String {
    format!("preload-{}-{index}", std::process::id())
}

/// `count` revocations by `--preload-concurrency` concurrent callers over
/// `--connections` connections.
async fn preload_revocations(revocd: &Revocd, count: u64, options: &Options) -> Result<()> {
    let clients = revocd
        .clients(options.connections, options.preload_concurrency)
        .await?;
    let next = Arc::new(AtomicU64::new(0));
    let progress = {
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = next.load(Ordering::Relaxed).min(count);
                eprintln!("preloading: {done} of {count} revocations made");
            }
        })
    };
    let tasks: Vec<JoinHandle<Result<()>>> = (0..options.preload_concurrency)
        .map(|caller| {
            let client = clients[caller % clients.len()].clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return Ok(());
                    }
                    Revocd::revoke(client.clone(), preload_jti(index)).await?;
                }
            })
        })
        .collect();
    let result = join_all(tasks).await;
    progress.abort();
    result.map(drop)
}

/// Waits until the server's hub has applied everything revoked so far: a
/// subscriber sees a revocation made after all of them (the change log is
/// ordered, so the hub applies it last).
async fn wait_until_applied(revocd: &Revocd) -> Result<()> {
    let clients = revocd.clients(1, 1).await?;
    let sentinel = vec![format!("sentinel-{}", std::process::id())];
    let stop = CancellationToken::new();
    let (synced, mut ready) = mpsc::channel(1);
    let watcher = {
        let (client, sentinel, stop) = (clients[0].clone(), sentinel.clone(), stop.clone());
        tokio::spawn(
            async move { follow(client, &sentinel, synced, &stop, Until::AllApplied).await },
        )
    };
    wait_for(&mut ready, 1, "watcher in sync").await?;
    Revocd::revoke(revocd.calls.clone(), sentinel[0].clone()).await?;
    let timer = cancel_after(&stop, SETUP_TIMEOUT);
    let seen = watcher.await.context("the watcher panicked")??;
    timer.abort();
    if seen.arrivals[0].is_none() {
        bail!("the server did not apply the preloaded revocations within {SETUP_TIMEOUT:?}");
    }
    Ok(())
}

/// Subscribes and times until the snapshot is received and decoded;
/// returns that time, the snapshot's parts and bytes on the wire, and the
/// view.
async fn time_to_sync(mut client: Client) -> Result<(Duration, usize, usize, FilterView)> {
    let started = Instant::now();
    let request = SubscribeRequest {
        gateway_id: "propagation-sync".into(),
        protocol: revocd::snapshot::STREAM_PROTOCOL,
        ..SubscribeRequest::default()
    };
    let mut stream = client.subscribe(request).await?.into_inner();
    let mut assembler = SnapshotAssembler::default();
    let (mut parts, mut wire_bytes) = (0, 0);
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, stream.message())
            .await
            .context("no snapshot in time")??
            .context("the stream ended before a snapshot")?;
        // gRPC frames each message with a flag byte and a 4-byte length.
        let frame_bytes = frame.encoded_len() + 5;
        if let Some(Update::Snapshot(part)) = frame.update {
            parts += 1;
            wire_bytes += frame_bytes;
            if let Some(view) = assembler.push(part)? {
                return Ok((started.elapsed(), parts, wire_bytes, view));
            }
        }
    }
}

impl SnapshotReport {
    fn print(&self) {
        let bits_per_entry = self.wire_bytes as f64 * 8.0 / self.live.max(1) as f64;
        let mut sorted = self.sync_times.clone();
        sorted.sort_unstable();
        let median = percentile(&sorted, 0.5);
        let worst = sorted.last().copied();
        println!();
        println!(
            "snapshot test: {} revocations preloaded through Revoke by {} concurrent callers in {:.1} s ({:.0}/s)",
            self.preloaded,
            self.concurrency,
            self.preload_time.as_secs_f64(),
            self.preloaded as f64 / self.preload_time.as_secs_f64()
        );
        println!(
            "  snapshot of {} live revocations: {} part(s), {} bytes on the wire (filter {} bits = {:.2} bits/entry): {bits_per_entry:.2} bits per entry   target <= {BITS_PER_ENTRY_TARGET:.0} {}",
            self.live,
            self.parts,
            self.wire_bytes,
            self.filter_bits,
            self.filter_bits as f64 / self.live.max(1) as f64,
            verdict(bits_per_entry <= BITS_PER_ENTRY_TARGET)
        );
        let samples: Vec<String> = self.sync_times.iter().map(|t| millis(Some(*t))).collect();
        println!(
            "  new subscriber in sync (Subscribe → snapshot received and decoded), {} samples each with a freshly built snapshot: {}; median {}, max {}   target <= {}ms {}",
            self.sync_times.len(),
            samples.join(" "),
            millis(median),
            millis(worst),
            SYNC_TARGET.as_millis(),
            verdict(worst.is_some_and(|w| w <= SYNC_TARGET))
        );
    }
}

// === the report ===

fn print_setup(options: &Options, serve_args: &[&str]) {
    let args: Vec<String> = std::env::args().collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!("command: {}", args.join(" "));
    println!(
        "revocd:  in-process, revocd serve {} (own Tokio runtime); {cores} cores shared with the clients and redis-server",
        serve_args.join(" ")
    );
    println!(
        "load:    per row {} revocations (Redis: XADDs) {} ms apart, one at a time; subscribers on >= {} HTTP/2 connections (<= {STREAMS_PER_CONNECTION} streams each); Redis readers one connection each",
        options.revocations, options.spacing_ms, options.connections
    );
}

fn print_propagation(options: &Options, rows: &[(usize, Fanout, Fanout)]) {
    println!();
    println!("propagation: from the sender's acknowledgement (\"ack\") or send (\"send\") to the last receiver (\"every\", one value per event) or to each receiver (\"each\", every pair)");
    println!(
        "{:<24} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>5} {:>7}  target (ack→every p99)",
        "path", "N", "ack→every", "p99", "max", "ack→each", "p99", "send→every", "p99", "lost", "rebased"
    );
    for (count, baseline, measured) in rows {
        for (path, fanout, is_revocd) in [
            ("redis XADD → XREAD", baseline, false),
            ("revocd Revoke → applied", measured, true),
        ] {
            let (ack, send) = (&fanout.from_ack, &fanout.from_send);
            let p99 = percentile(&ack.every, 0.99);
            let target = LATENCY_TARGETS
                .iter()
                .find(|(n, _)| n == count)
                .filter(|_| is_revocd)
                .map_or(String::new(), |(_, target)| {
                    let met = fanout.lost == 0 && p99.is_some_and(|p| p <= *target);
                    format!("<= {}ms {}", target.as_millis(), verdict(met))
                });
            let line = format!(
                "{path:<24} {count:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>5} {:>7}  {target}",
                millis(percentile(&ack.every, 0.50)),
                millis(p99),
                millis(ack.every.last().copied()),
                millis(percentile(&ack.each, 0.50)),
                millis(percentile(&ack.each, 0.99)),
                millis(percentile(&send.every, 0.50)),
                millis(percentile(&send.every, 0.99)),
                fanout.lost,
                if is_revocd {
                    fanout.rebased.to_string()
                } else {
                    "-".to_owned()
                },
            );
            println!("{}", line.trim_end());
        }
    }
    println!(
        "({} events per row, p50 unless marked; an arrival before the ack counts as 0 (the receiver often has the change before the sender has read its reply); lost = pairs not received within {} s of the last event)",
        options.revocations,
        DRAIN_TIMEOUT.as_secs()
    );
}
