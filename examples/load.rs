//! End-to-end load benchmark: a release `revocd serve` process answering
//! `Check`, `Revoke` (by jti and by token) and `RevokeBatch` over gRPC,
//! next to a plain Rust Redis client doing the same Redis work, measured
//! in one run, with the CPU time each call costs revocd and Redis.
//!
//! ```text
//! cargo run --release --example load -- [--seconds 3] [--concurrency 64] [--channels 4] [--batch 100] [--no-build] [--log-entry-format 1|2] [--perf DIR]
//! ```
//!
//! Under `cargo run` the release `revocd` is built first (`cargo build
//! --release --bins`; `--no-build` skips that); run any other way, it must
//! already be in `target/release/`.
//!
//! # What is measured
//!
//! Eight phases run one after another. In each, `--concurrency` clients
//! send requests back to back (a closed loop: one request in flight per
//! client) for a 1 s warm-up and then `--seconds` of measurement.
//! Throughput counts the requests started in the measured window; p50 and
//! p99 are over their latencies as the client sees them. The CPU time
//! (user + system, `/proc/<pid>/stat`) of the `revocd` and `redis-server`
//! processes is read at the start of the phase and again once both are
//! idle after it (the change-log follower may still be catching up when
//! the clients stop), and divided by the items of every call of the phase,
//! warm-up included: µs per call, per item for batches. Redis's share of a
//! write includes revocd's follower reading the entry back. revocd's read
//! and write system calls (`syscr` + `syscw` of `/proc/<pid>/io`) are
//! counted over the same time and printed per item.
//!
//! 1. `redis revoke`: the baseline for `Revoke`. One `EVALSHA` of the
//!    server's own `REVOKE_SCRIPT` (taken verbatim from
//!    `src/store/redis/revoke.rs` at compile time) with the keys and
//!    arguments the server passes for a new revocation by jti. That is the
//!    only Redis command the server sends per `Revoke`.
//! 2. `revocd Revoke{jti}`: gRPC `Revoke { jti, expires_at: now + 1h }`, a
//!    new jti every request.
//! 3. `revocd Revoke{token}`: gRPC `Revoke { token }` of a new HS256 token
//!    (signed by the client before the call) with `iss`, `sub`, `jti`,
//!    `iat` and `exp`.
//! 4. `redis revoke xN`: the baseline for `RevokeBatch`: one `EVALSHA` of
//!    the script with `--batch` new revocations, as the server sends for a
//!    batch in one log partition.
//! 5. `revocd RevokeBatch`: gRPC `RevokeBatch` of `--batch` new jtis; rates
//!    and CPU are per item.
//! 6. `redis GET`: the baseline for `Check`. `GET` of a record written in
//!    phase 1 (a packed token revocation), as the server sends per `Check`
//!    by jti (before records were packed it sent `HMGET` of a hash's
//!    fields, and `HGETALL` before that; so did the baseline).
//! 7. `revocd Check{jti}`: gRPC `Check { jti }` of jtis revoked in phase 2.
//! 8. `revocd gRPC floor`: gRPC `grpc.health.v1.Health/Check` of the
//!    server overall, on connections of its own. revocd serves it on the
//!    same port through the same stack (HTTP/2, tonic, its timeout layer
//!    and router) with no API key, metrics, span or store: what any unary
//!    call to revocd costs on this machine before revocd's own work.
//!
//! Every answer is checked (a new revocation, a revoked token), so a
//! misbehaving server fails the run instead of looking fast. The ratio is
//! revocd's items per second over its baseline's. The CPU targets (issue
//! 16) are revocd µs per `Check` <= 15, per `Revoke{jti}` <= 25, per
//! `Revoke{token}` <= 30, per `RevokeBatch` item <= 6, and Redis µs per
//! revocation <= 12.
//!
//! # Setup
//!
//! Loopback only. Everything is a real process started for the run, in its
//! own temporary directory, and killed at the end (on error too): a
//! `redis-server` on a free port, and the release `revocd serve` on it with
//! the test deployment's API keys (every call authenticated: `revoke` for
//! the writes, `read` for `Check`), its HS256 secret and issuer, and
//! `RUST_LOG=revocd=info` (the default). The clients run in this process.
//! The baseline writes under its own key prefix, so revocd's change-log
//! follower never sees it. On the 2-core development VM the client, revocd
//! and Redis share the cores, so throughput is bounded by all three; the
//! CPU per call is each process's own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::task::JoinHandle;

use revocd::bounds::DEFAULT_LEEWAY_SECONDS;
use revocd::config::DEFAULT_LOG_RETENTION;
use revocd::pb::{CheckRequest, RevokeBatchRequest};
use revocd::store::{pack_revocation, Provenance, Revocation};
use revocd::time::unix_now;

// The integration tests' helpers: the deployment's files, tokens, the
// health probe and redis-server.
#[path = "../tests/support/mod.rs"]
mod support;

use support::{
    by_jti, by_token, cpu_seconds, io_syscalls, Client, Deployment, HealthClient, RedisServer,
    ServingStatus, ISSUER, TICKS_PER_SECOND,
};

/// Requests before the measured window, to open connections, load the
/// script and warm caches.
const WARMUP: Duration = Duration::from_secs(1);
/// Lifetime of the tokens revoked: `expires_at` is now plus this, in seconds.
const TOKEN_LIFETIME: i64 = 3_600;
/// The API key revocd's writes are made with, and its name (the author
/// recorded, and the baseline's `by`).
const REVOKE_KEY: (&str, &str) = ("key-revoke", "auth-server");
/// The API key of `Check`.
const READ_KEY: &str = "key-read";
/// Source of revocd's revoke script, which the baseline takes verbatim, so
/// it cannot drift from the server.
const REVOKE_SOURCE: &str = include_str!("../src/store/redis/revoke.rs");
/// Source of revocd's Redis store, from which the baseline takes the prune
/// batch.
const REDIS_STORE_SOURCE: &str = include_str!("../src/store/redis/mod.rs");
/// How often [`Pids::quiet`] looks at the processes' CPU time.
const QUIET_POLL: Duration = Duration::from_millis(100);
/// Clock ticks in a [`QUIET_POLL`] below which a process counts as idle
/// (10% of a core).
const QUIET_TICKS: f64 = 1.0;
/// Longest [`Pids::quiet`] waits.
const QUIET_MAX: Duration = Duration::from_secs(10);
/// CPU targets of issue 16, in µs: revocd per `Check`, `Revoke{jti}`,
/// `Revoke{token}`, `RevokeBatch` item; Redis per revocation.
const CHECK_CPU_TARGET: f64 = 15.0;
/// See [`CHECK_CPU_TARGET`].
const REVOKE_CPU_TARGET: f64 = 25.0;
/// See [`CHECK_CPU_TARGET`].
const TOKEN_CPU_TARGET: f64 = 30.0;
/// See [`CHECK_CPU_TARGET`].
const BATCH_ITEM_CPU_TARGET: f64 = 6.0;
/// See [`CHECK_CPU_TARGET`].
const REDIS_WRITE_CPU_TARGET: f64 = 12.0;

/// Load benchmark: revocd's RPCs against the same work sent to Redis
/// directly, with CPU per call.
#[derive(Debug, Parser)]
struct Options {
    /// Measured seconds per phase, after a 1 s warm-up.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,

    /// Concurrent clients in every phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// gRPC connections to revocd per API key, shared round-robin by the
    /// clients.
    #[arg(long, default_value_t = 4)]
    channels: usize,

    /// Items per `RevokeBatch` call (and per baseline script call).
    #[arg(long, default_value_t = 100)]
    batch: usize,

    /// Do not build the release binaries first.
    #[arg(long)]
    no_build: bool,

    /// revocd's `--log-entry-format` (the baseline's script writes the
    /// same); 1, the server's default, is not passed on, so a binary
    /// without the flag can be measured.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    log_entry_format: u8,

    /// Record a `perf record --call-graph dwarf` profile of revocd and of redis-server
    /// over each revocd phase's measured window, into this directory
    /// (`<phase>.revocd.data`, `<phase>.redis.data`).
    #[arg(long)]
    perf: Option<PathBuf>,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    ensure!(options.channels > 0, "--channels must be at least 1");
    ensure!(
        (1..=1_000).contains(&options.batch),
        "--batch must be 1..=1000"
    );
    if !options.no_build {
        support::build_binaries()?;
    }
    let binary = support::binary("revocd");
    ensure!(
        binary.exists(),
        "{} is missing: run `cargo build --release --bins`",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load-client")
        .build()
        .context("starting the client runtime")?;
    runtime.block_on(benchmark(&options, &binary))
}

/// Starts Redis and revocd, runs the phases and prints the table.
async fn benchmark(options: &Options, binary: &Path) -> Result<()> {
    let redis_server = RedisServer::start();
    let deployment = Deployment::new();
    let revocd = RevocdProcess::spawn(
        binary,
        &deployment,
        &redis_server.url(),
        options.log_entry_format,
    )
    .await?;
    let pids = Pids {
        revocd: revocd.pid(),
        redis: redis_server.pid().context("redis-server is running")?,
    };
    let redis = redis::Client::open(redis_server.url())
        .context("parsing the Redis URL")?
        .get_connection_manager()
        .await
        .context("connecting to Redis")?;
    let redis_version = redis_version(&mut redis.clone()).await?;
    let baseline = Arc::new(RedisBaseline::new(
        redis.clone(),
        Layout::new("load-baseline:"),
        options.log_entry_format,
    )?);
    let api = Arc::new(Revocd::connect(revocd.address, options.channels).await?);

    let load = Load {
        concurrency: options.concurrency,
        warmup: WARMUP,
        measured: Duration::from_secs(options.seconds),
        pids,
        redis: redis.clone(),
    };
    let batch = options.batch;
    let profile = |phase| options.perf.clone().map(|dir| (dir, phase));
    let redis_revoke = drive(&load, None, &baseline, |redis, task, seq| async move {
        redis.revoke(&[jti("load", task, seq)]).await
    })
    .await
    .context("phase `redis revoke`")?;
    let revoke_jti = drive(
        &load,
        profile("revoke-jti"),
        &api,
        |api, task, seq| async move { api.revoke_jti(task, &jti("load", task, seq)).await },
    )
    .await
    .context("phase `revocd Revoke{jti}`")?;
    let revoke_token = drive(
        &load,
        profile("revoke-token"),
        &api,
        |api, task, seq| async move { api.revoke_token(task, &jti("token", task, seq)).await },
    )
    .await
    .context("phase `revocd Revoke{token}`")?;
    let redis_batch = drive(&load, None, &baseline, move |redis, task, seq| async move {
        redis.revoke(&batch_jtis(task, seq, batch)).await
    })
    .await
    .context("phase `redis revoke xN`")?;
    let revoke_batch =
        drive(
            &load,
            profile("revoke-batch"),
            &api,
            move |api, task, seq| async move {
                api.revoke_batch(task, &batch_jtis(task, seq, batch)).await
            },
        )
        .await
        .context("phase `revocd RevokeBatch`")?;
    let written = redis_revoke.completed.clone();
    let redis_check = drive(&load, None, &baseline, move |redis, task, seq| {
        let jti = written_jti(&written, task, seq);
        async move { redis.check(&jti).await }
    })
    .await
    .context("phase `redis GET`")?;
    let written = revoke_jti.completed.clone();
    let check = drive(&load, profile("check"), &api, move |api, task, seq| {
        let jti = written_jti(&written, task, seq);
        async move { api.check(task, &jti).await }
    })
    .await
    .context("phase `revocd Check{jti}`")?;
    let floor = drive(&load, profile("floor"), &api, |api, task, _| async move {
        api.health(task).await
    })
    .await
    .context("phase `revocd gRPC floor`")?;

    print_setup(options, &redis_version, &revocd.args);
    let batch_label = format!("redis revoke x{batch}");
    print_table(&[
        Row::baseline("redis revoke", &redis_revoke, 1),
        Row::revocd("revocd Revoke{jti}", &revoke_jti, 1, &redis_revoke)
            .targets(REVOKE_CPU_TARGET, Some(REDIS_WRITE_CPU_TARGET)),
        Row::revocd("revocd Revoke{token}", &revoke_token, 1, &redis_revoke)
            .targets(TOKEN_CPU_TARGET, Some(REDIS_WRITE_CPU_TARGET)),
        Row::baseline(&batch_label, &redis_batch, batch),
        Row::revocd("revocd RevokeBatch", &revoke_batch, batch, &redis_batch)
            .targets(BATCH_ITEM_CPU_TARGET, Some(REDIS_WRITE_CPU_TARGET)),
        Row::baseline("redis GET", &redis_check, 1),
        Row::revocd("revocd Check{jti}", &check, 1, &redis_check).targets(CHECK_CPU_TARGET, None),
        Row::baseline("revocd gRPC floor", &floor, 1),
    ]);
    let warnings = revocd.warnings();
    println!();
    println!("revocd logged {} warnings or errors", warnings.len());
    for line in warnings.iter().take(5) {
        println!("  {line}");
    }
    Ok(())
}

// === the load driver ===

/// How every phase runs.
#[derive(Clone)]
struct Load {
    /// Clients, each with one request in flight.
    concurrency: usize,
    /// Time before the measured window.
    warmup: Duration,
    /// Length of the measured window.
    measured: Duration,
    /// The processes whose CPU time is measured.
    pids: Pids,
    /// A connection to the Redis measured, for its command statistics.
    redis: ConnectionManager,
}

/// Where a phase's profiles go: `--perf` and the phase's file name.
type Profile = Option<(PathBuf, &'static str)>;

/// The server processes of the run.
#[derive(Debug, Clone, Copy)]
struct Pids {
    revocd: u32,
    redis: u32,
}

/// CPU seconds (user + system) of the server processes, and revocd's read
/// and write system calls.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    revocd: f64,
    redis: f64,
    revocd_io: u64,
}

impl Pids {
    fn cpu(self) -> Cpu {
        Cpu {
            revocd: cpu_seconds(self.revocd),
            redis: cpu_seconds(self.redis),
            revocd_io: io_syscalls(self.revocd),
        }
    }

    /// Waits until both processes are idle (less than [`QUIET_TICKS`] of
    /// CPU in a [`QUIET_POLL`]; at most [`QUIET_MAX`]), so work a phase left
    /// behind (the change-log follower catching up) is counted in it and not
    /// in the next; returns their CPU times then.
    async fn quiet(self) -> Cpu {
        let deadline = Instant::now() + QUIET_MAX;
        let mut last = self.cpu();
        loop {
            tokio::time::sleep(QUIET_POLL).await;
            let now = self.cpu();
            let busy = (now.revocd - last.revocd).max(now.redis - last.redis);
            if busy * TICKS_PER_SECOND < QUIET_TICKS || Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    }
}

/// What one phase measured.
#[derive(Debug)]
struct Measured {
    /// Latency of every request started in the measured window, in
    /// microseconds, sorted.
    latencies: Vec<u32>,
    /// Requests each client completed, warm-up included: client `t` made
    /// requests `0..completed[t]`.
    completed: Vec<u64>,
    /// Length of the measured window.
    window: Duration,
    /// CPU time the server processes used from the phase's start (warm-up
    /// included) until they were idle after it.
    cpu: Cpu,
    /// Redis's commands over the same time: (name, calls, µs inside Redis),
    /// most time first.
    commands: Vec<(String, u64, u64)>,
}

/// Runs one phase: `load.concurrency` clients each call `op(target, client
/// index, request number)` back to back until the measured window ends; the
/// server processes' CPU time is read at the start and once they are idle
/// after it.
///
/// # Errors
/// The first failed request (the phase's numbers would mean nothing).
async fn drive<T, F, Fut>(load: &Load, profile: Profile, target: &Arc<T>, op: F) -> Result<Measured>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let measure_from = Instant::now() + load.warmup;
    let until = measure_from + load.measured;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut load.redis.clone())
        .await?;
    let before = load.pids.cpu();
    let profiler = profile.map(|(dir, phase)| {
        tokio::spawn(record_profiles(load.pids, dir, phase, measure_from, until))
    });
    let clients: Vec<JoinHandle<Result<ClientRun>>> = (0..load.concurrency)
        .map(|client| {
            let (op, target) = (Arc::clone(&op), Arc::clone(target));
            tokio::spawn(async move {
                let call = |seq| (*op)(Arc::clone(&target), client, seq);
                client_loop(call, measure_from, until).await
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut completed = Vec::with_capacity(clients.len());
    for (index, client) in clients.into_iter().enumerate() {
        let run = client
            .await
            .context("a client panicked")?
            .with_context(|| format!("client {index}"))?;
        latencies.extend(run.latencies);
        completed.push(run.requests);
    }
    latencies.sort_unstable();
    if let Some(profiler) = profiler {
        profiler.await.context("the profiler panicked")??;
    }
    let after = load.pids.quiet().await;
    Ok(Measured {
        latencies,
        completed,
        window: load.measured,
        cpu: Cpu {
            revocd: after.revocd - before.revocd,
            redis: after.redis - before.redis,
            revocd_io: after.revocd_io - before.revocd_io,
        },
        commands: command_stats(&mut load.redis.clone()).await?,
    })
}

/// Runs `perf record` (DWARF call graphs, 999 Hz) on revocd and on redis-server from `from` to
/// `until`, writing `dir/<phase>.revocd.data` and `dir/<phase>.redis.data`.
async fn record_profiles(
    pids: Pids,
    dir: PathBuf,
    phase: &'static str,
    from: Instant,
    until: Instant,
) -> Result<()> {
    tokio::time::sleep_until(from.into()).await;
    let mut recorders = Vec::new();
    for (pid, process) in [(pids.revocd, "revocd"), (pids.redis, "redis")] {
        let output = dir.join(format!("{phase}.{process}.data"));
        let recorder = Command::new("perf")
            .args(["record", "-q", "-F", "999", "--call-graph", "dwarf,16384"])
            .args(["-p", &pid.to_string(), "-o"])
            .arg(&output)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        recorders.push(recorder);
    }
    tokio::time::sleep_until(until.into()).await;
    for mut recorder in recorders {
        // perf writes its file on SIGINT.
        Command::new("kill")
            .args(["-INT", &recorder.id().to_string()])
            .status()?;
        recorder.wait()?;
    }
    Ok(())
}

/// What one client of a phase did.
struct ClientRun {
    /// Latencies of its requests started in the measured window, in µs.
    latencies: Vec<u32>,
    /// Requests it made, warm-up included.
    requests: u64,
}

/// One client: calls `call(0)`, `call(1)`, … until `until`, timing the
/// calls started from `measure_from`.
async fn client_loop<F, Fut>(call: F, measure_from: Instant, until: Instant) -> Result<ClientRun>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut latencies = Vec::new();
    let mut seq = 0;
    loop {
        let started = Instant::now();
        if started >= until {
            return Ok(ClientRun {
                latencies,
                requests: seq,
            });
        }
        call(seq).await.with_context(|| format!("request {seq}"))?;
        seq += 1;
        if started >= measure_from {
            let micros = started.elapsed().as_micros();
            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
}

impl Measured {
    /// Requests per second in the measured window.
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    /// The nearest-rank `p`-quantile latency (`p` in 0..=1), in µs.
    fn percentile(&self, p: f64) -> u32 {
        let n = self.latencies.len();
        if n == 0 {
            return 0;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }

    /// CPU µs per item of the `seconds` used in the phase, for calls of
    /// `items` items each: over every call of the phase, warm-up included.
    fn micros_per_item(&self, seconds: f64, items: usize) -> f64 {
        let calls: u64 = self.completed.iter().sum();
        seconds * 1e6 / (calls as f64 * items as f64).max(1.0)
    }
}

/// The jti of client `client`'s request `seq` in a phase `kind`; unique
/// within a run.
fn jti(kind: &str, client: usize, seq: u64) -> String {
    format!("{kind}-{client}-{seq}")
}

/// The `items` jtis of client `client`'s batch `seq`.
fn batch_jtis(client: usize, seq: u64, items: usize) -> Vec<String> {
    (0..items)
        .map(|item| format!("batch-{client}-{seq}-{item}"))
        .collect()
}

/// A jti that client `client` revoked in a phase that completed
/// `written[client]` requests per client, cycling through them.
fn written_jti(written: &[u64], client: usize, seq: u64) -> String {
    jti("load", client, seq % written[client].max(1))
}

/// Redis's `INFO commandstats` since the last `CONFIG RESETSTAT`: (name,
/// calls, µs), most time first.
async fn command_stats(redis: &mut ConnectionManager) -> Result<Vec<(String, u64, u64)>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await?;
    let mut stats: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|line| {
            let (name, values) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let value = |key: &str| {
                values
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((name.to_owned(), value("calls")?, value("usec")?))
        })
        .filter(|(name, _, _)| !matches!(name.as_str(), "config" | "info"))
        .collect();
    stats.sort_by_key(|&(_, _, usec)| std::cmp::Reverse(usec));
    Ok(stats)
}

// === the two targets ===

/// revocd's Redis key layout (see the module docs of `src/store/redis/mod.rs`)
/// under one key prefix.
#[derive(Debug, Clone)]
struct Layout {
    prefix: String,
}

impl Layout {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The record of `jti` of the deployment's issuer.
    fn record(&self, jti: &str) -> String {
        format!("{}v1:{{p0}}:jti:{}", self.prefix, Self::record_name(jti))
    }

    /// A record name is `<issuer byte length>:<issuer>:<id>`.
    fn record_name(jti: &str) -> String {
        format!("{}:{ISSUER}:{jti}", ISSUER.len())
    }

    fn expiry_index(&self) -> String {
        format!("{}v1:{{p0}}:jti-expiry", self.prefix)
    }

    fn actor_index(&self) -> String {
        format!("{}v1:{{p0}}:actor-live:{}", self.prefix, REVOKE_KEY.1)
    }

    fn log(&self) -> String {
        format!("{}v1:{{p0}}:log", self.prefix)
    }
}

/// The baseline: the Redis commands revocd sends, from a plain `redis`
/// client over one multiplexed `ConnectionManager`, as the server uses.
struct RedisBaseline {
    redis: ConnectionManager,
    keys: Layout,
    revoke_script: Script,
    prune_batch: u32,
    /// The log entry format the script writes (its `ARGV[5]`).
    entry_format: u8,
}

impl RedisBaseline {
    /// # Errors
    /// If `src/store/redis/revoke.rs` no longer holds `REVOKE_SCRIPT`, or
    /// `src/store/redis/mod.rs` `PRUNE_BATCH`, in the expected form.
    fn new(redis: ConnectionManager, keys: Layout, entry_format: u8) -> Result<Self> {
        let script = between(REVOKE_SOURCE, "const REVOKE_SCRIPT: &str = r#\"", "\"#;")?;
        let prune_batch = between(REDIS_STORE_SOURCE, "const PRUNE_BATCH: u32 = ", ";")?
            .parse()
            .context("PRUNE_BATCH in src/store/redis/mod.rs is not a number")?;
        Ok(Self {
            redis,
            keys,
            revoke_script: Script::new(script),
            entry_format,
            prune_batch,
        })
    }

    /// What `RedisStore::revoke_batch` sends for new revocations by jti in
    /// one partition (one item for a `Revoke`).
    async fn revoke(&self, jtis: &[String]) -> Result<()> {
        let now = unix_now();
        let expires_at = now + TOKEN_LIFETIME;
        let mut invocation = self.revoke_script.prepare_invoke();
        invocation
            .key(self.keys.expiry_index())
            .key(self.keys.log())
            .key(self.keys.actor_index())
            .arg(DEFAULT_LOG_RETENTION)
            .arg(now)
            .arg(self.prune_batch)
            .arg(0) // no live quota
            .arg(self.entry_format);
        for jti in jtis {
            let revocation = Revocation {
                issuer: ISSUER.to_owned(),
                jti: jti.clone(),
                subject: String::new(),
                expires_at,
                keep_until: expires_at + DEFAULT_LEEWAY_SECONDS as i64,
                provenance: Provenance {
                    at: now,
                    by: REVOKE_KEY.1.to_owned(),
                    reason: String::new(),
                    source: "127.0.0.1:50000".to_owned(),
                },
            };
            invocation
                .key(self.keys.record(jti))
                .arg(Layout::record_name(jti))
                .arg(revocation.keep_until)
                .arg(pack_revocation(&revocation));
            match self.entry_format {
                // The entry's fields `iss` and `id`.
                1 => invocation.arg(ISSUER).arg(jti),
                // The head of the entry's one field (`src/store/redis/packed.rs`).
                _ => invocation.arg(format!("{}:{ISSUER}{}:{jti}", ISSUER.len(), jti.len())),
            };
        }
        // One `<outcome>:<cursor>` per item, separated by spaces.
        let replies: String = invocation.invoke_async(&mut self.redis.clone()).await?;
        let new = replies.split(' ').filter(|item| item.starts_with("1:"));
        ensure!(
            new.count() == jtis.len(),
            "{}…: the script answered {replies:?}, not {} new revocations",
            jtis[0],
            jtis.len()
        );
        Ok(())
    }

    /// What `RedisStore::status` sends for a `Check` by jti: `GET` of
    /// the fields a token revocation's record has.
    async fn check(&self, jti: &str) -> Result<()> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.keys.record(jti))
            .query_async(&mut self.redis.clone())
            .await?;
        ensure!(value.is_some(), "{jti} has no record");
        Ok(())
    }
}

/// The text of `source` between the first `start` and the next `end`.
fn between<'a>(source: &'a str, start: &str, end: &str) -> Result<&'a str> {
    let from = source.find(start).map(|at| at + start.len());
    let text = from.and_then(|from| Some(&source[from..from + source[from..].find(end)?]));
    text.with_context(|| format!("the store's source has no `{start}…{end}`"))
}

/// A release `revocd serve` process, killed when dropped.
struct RevocdProcess {
    address: SocketAddr,
    /// Its command line after the binary.
    args: Vec<String>,
    child: Child,
    /// Holds its log file, `revocd.log`.
    dir: tempfile::TempDir,
}

impl RevocdProcess {
    /// Starts `binary serve` for `deployment` on the Redis at `redis_url`
    /// and waits until it reports SERVING.
    async fn spawn(
        binary: &Path,
        deployment: &Deployment,
        redis_url: &str,
        entry_format: u8,
    ) -> Result<Self> {
        let address = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let mut args = vec!["serve".to_owned()];
        args.extend(deployment.args(&["--redis-url", redis_url, "--listen", &address.to_string()]));
        args.extend(support::log_entry_format_flags(entry_format));
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let log = std::fs::File::create(dir.path().join("revocd.log"))?;
        let child = Command::new(binary)
            .args(&args)
            .env("RUST_LOG", "revocd=info")
            .env_remove("REVOCD_SERVER")
            .env_remove("REVOCD_API_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let process = RevocdProcess {
            address,
            args,
            child,
            dir,
        };
        support::wait_for_health(address, ServingStatus::Serving, Duration::from_secs(20)).await;
        Ok(process)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The warnings and errors it logged.
    fn warnings(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("revocd.log")).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RevocdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// revocd's gRPC API. A client channel is one HTTP/2 connection, driven by
/// one task on each side: 64 clients on one channel would measure that
/// connection's framing and I/O, which a real fleet of callers spreads over
/// many connections, so the clients share a few channels round-robin.
struct Revocd {
    /// Clients with the `revoke` key.
    writers: Vec<Client>,
    /// Clients with the `read` key.
    readers: Vec<Client>,
    /// Clients of the health service.
    probes: Vec<HealthClient>,
}

impl Revocd {
    /// Opens `channels` connections per API key to revocd at `address`.
    async fn connect(address: SocketAddr, channels: usize) -> Result<Self> {
        let mut writers = Vec::with_capacity(channels);
        let mut readers = Vec::with_capacity(channels);
        let mut probes = Vec::with_capacity(channels);
        for _ in 0..channels {
            writers.push(support::client(address, Some(REVOKE_KEY.0)).await);
            readers.push(support::client(address, Some(READ_KEY)).await);
            let probe = support::health_client(address).await;
            probes.push(probe.context("connecting to the health service")?);
        }
        Ok(Self {
            writers,
            readers,
            probes,
        })
    }

    fn writer(&self, task: usize) -> Client {
        self.writers[task % self.writers.len()].clone()
    }

    fn reader(&self, task: usize) -> Client {
        self.readers[task % self.readers.len()].clone()
    }

    /// `Revoke` of a new jti.
    async fn revoke_jti(&self, task: usize, jti: &str) -> Result<()> {
        let request = by_jti(jti, unix_now() + TOKEN_LIFETIME);
        let reply = self.writer(task).revoke(request).await?.into_inner();
        ensure!(reply.newly_revoked, "{jti} was revoked already");
        Ok(())
    }

    /// `Revoke` of a new HS256 token with the jti `jti`.
    async fn revoke_token(&self, task: usize, jti: &str) -> Result<()> {
        let token = support::token_for("alice", jti);
        let request = by_token(&token);
        let reply = self.writer(task).revoke(request).await?.into_inner();
        ensure!(reply.newly_revoked, "the token {jti} was revoked already");
        Ok(())
    }

    /// `RevokeBatch` of new jtis.
    async fn revoke_batch(&self, task: usize, jtis: &[String]) -> Result<()> {
        let expires_at = unix_now() + TOKEN_LIFETIME;
        let items = jtis.iter().map(|jti| by_jti(jti, expires_at)).collect();
        let request = RevokeBatchRequest { items };
        let reply = self.writer(task).revoke_batch(request).await?.into_inner();
        ensure!(
            reply.results.len() == jtis.len(),
            "{} answers to {} items",
            reply.results.len(),
            jtis.len()
        );
        for (result, jti) in reply.results.iter().zip(jtis) {
            let newly = result.response.as_ref().is_some_and(|r| r.newly_revoked);
            ensure!(
                result.code == 0 && newly,
                "{jti}: {} {}",
                result.code,
                result.error
            );
        }
        Ok(())
    }

    /// `grpc.health.v1.Health/Check` of the server overall, which must be
    /// SERVING.
    async fn health(&self, task: usize) -> Result<()> {
        let mut probe = self.probes[task % self.probes.len()].clone();
        let status = support::overall_health(&mut probe).await;
        ensure!(status == Some(ServingStatus::Serving), "health: {status:?}");
        Ok(())
    }

    /// `Check` by jti of a revoked token.
    async fn check(&self, task: usize, jti: &str) -> Result<()> {
        let request = CheckRequest {
            jti: jti.to_owned(),
            ..CheckRequest::default()
        };
        let reply = self.reader(task).check(request).await?.into_inner();
        ensure!(reply.revoked, "{jti} is not revoked");
        Ok(())
    }
}

/// The `redis_version` of the server's `INFO`.
async fn redis_version(redis: &mut ConnectionManager) -> Result<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(redis).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .to_owned())
}

// === the report ===

/// One line of the table.
struct Row<'a> {
    phase: &'a str,
    measured: &'a Measured,
    /// Items per call.
    items: usize,
    /// The baseline's measurement and its items per call, for revocd phases.
    against: Option<(&'a Measured, usize)>,
    /// The CPU targets in µs per item: revocd's, and Redis's for writes.
    targets: Option<(f64, Option<f64>)>,
}

impl<'a> Row<'a> {
    fn baseline(phase: &'a str, measured: &'a Measured, items: usize) -> Self {
        Self {
            phase,
            measured,
            items,
            against: None,
            targets: None,
        }
    }

    fn revocd(
        phase: &'a str,
        measured: &'a Measured,
        items: usize,
        baseline: &'a Measured,
    ) -> Self {
        Self {
            phase,
            measured,
            items,
            // A phase's baseline does as many items per call.
            against: Some((baseline, items)),
            targets: None,
        }
    }

    fn targets(mut self, revocd: f64, redis: Option<f64>) -> Self {
        self.targets = Some((revocd, redis));
        self
    }

    fn items_per_second(&self) -> f64 {
        self.measured.throughput() * self.items as f64
    }
}

fn print_setup(options: &Options, redis_version: &str, revocd_args: &[String]) {
    let args: Vec<String> = std::env::args().collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("command:  {}", args.join(" "));
    println!("revocd:   release binary, revocd {}", revocd_args.join(" "));
    println!("redis:    own redis-server on loopback, version {redis_version}");
    println!(
        "load:     {} clients, {} gRPC channels per key, batches of {}, {} s measured after {} s warm-up per phase, {cores} cores",
        options.concurrency,
        options.channels,
        options.batch,
        options.seconds,
        WARMUP.as_secs(),
    );
    println!("baseline: `redis` crate, one ConnectionManager; revoke = EVALSHA of the server's script text writing log entries of format {}, GET of the packed record", options.log_entry_format);
    println!("CPU:      /proc/<pid>/stat utime+stime from the phase start (warm-up included) until both are idle, per item of every call");
    println!();
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:>9} {:>9} {:>8} {:>8} {:>10} {:>9} {:>6}  targets (µs per item)",
        "phase", "calls/s", "items/s", "p50", "p99", "revocd µs", "redis µs", "ratio"
    );
    for row in rows {
        let m = row.measured;
        let ratio = match row.against {
            Some((baseline, items)) => {
                let base = baseline.throughput() * items as f64;
                format!("{:>6.2}", row.items_per_second() / base)
            }
            None => String::new(),
        };
        let revocd_us = m.micros_per_item(m.cpu.revocd, row.items);
        let redis_us = m.micros_per_item(m.cpu.redis, row.items);
        let targets = match row.targets {
            Some((revocd, redis)) => {
                let mut text = format!("revocd <= {revocd} {}", verdict(revocd_us <= revocd));
                if let Some(redis) = redis {
                    text += &format!(", redis <= {redis} {}", verdict(redis_us <= redis));
                }
                text
            }
            None => String::new(),
        };
        let line = format!(
            "{:<22} {:>9.0} {:>9.0} {:>8} {:>8} {:>10.1} {:>9.1} {ratio:>6}  {targets}",
            row.phase,
            m.throughput(),
            row.items_per_second(),
            millis(m.percentile(0.50)),
            millis(m.percentile(0.99)),
            revocd_us,
            redis_us,
        );
        println!("{}", line.trim_end());
    }
    println!();
    println!("revocd read and write system calls per item (/proc/<pid>/io syscr + syscw):");
    for row in rows.iter().filter(|row| row.phase.starts_with("revocd")) {
        let calls: u64 = row.measured.completed.iter().sum();
        let items = (calls as f64 * row.items as f64).max(1.0);
        let per_item = row.measured.cpu.revocd_io as f64 / items;
        println!("  {:<22} {per_item:.2}", row.phase);
    }
    println!();
    println!("Redis commands per item (calls, µs inside Redis):");
    for row in rows {
        let calls: u64 = row.measured.completed.iter().sum();
        let items = (calls as f64 * row.items as f64).max(1.0);
        let commands: Vec<String> = row
            .measured
            .commands
            .iter()
            .map(|(name, calls, usec)| {
                format!(
                    "{name} {:.3} ({:.1} µs)",
                    *calls as f64 / items,
                    *usec as f64 / items
                )
            })
            .collect();
        println!("  {:<22} {}", row.phase, commands.join(", "));
    }
}

/// "met" or "MISSED".
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Microseconds as milliseconds with two decimals.
fn millis(micros: u32) -> String {
    format!("{:.2}ms", f64::from(micros) / 1000.0)
}
