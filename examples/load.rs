//! End-to-end load benchmark: revocd's `Revoke` and `Check` RPCs next to a
//! plain Rust Redis client doing the same Redis work, measured in one run.
//!
//! ```text
//! cargo run --release --example load -- [--seconds 5] [--concurrency 64] [--channels 4] [--redis-url URL]
//! ```
//!
//! # What is measured
//!
//! Four phases run one after another. In each, `--concurrency` clients send
//! requests back to back (a closed loop: one request in flight per client)
//! for a 1 s warm-up and then `--seconds` of measurement. Throughput counts
//! the requests started in the measured window; p50 and p99 are over their
//! latencies as the client sees them.
//!
//! 1. `redis REVOKE_SCRIPT`: the baseline for `Revoke`. One `EVALSHA` of
//!    the server's own `REVOKE_SCRIPT` (taken verbatim from
//!    `src/store/redis/revoke.rs` at compile time) with the keys and arguments the
//!    server passes for a new revocation by jti. That is the only Redis
//!    command the server sends per `Revoke`.
//! 2. `revocd Revoke`: gRPC `Revoke { jti, expires_at: now + 1h }`, a new
//!    jti every request.
//! 3. `redis HGETALL`: the baseline for `Check`. A one-command pipeline
//!    holding `HGETALL` of a record written in phase 1, as the server sends
//!    per `Check` by jti.
//! 4. `revocd Check`: gRPC `Check { jti }` of jtis revoked in phase 2.
//!
//! Every answer is checked (a new revocation, a revoked token), so a
//! misbehaving server fails the run instead of looking fast. The ratio
//! revocd/baseline is the share of bare-Redis throughput left after gRPC,
//! request handling and the server's own client. Targets: `Revoke` >= 0.50,
//! `Check` >= 0.60.
//!
//! # Setup
//!
//! Redis is a `redis-server` started on a free loopback port in a temporary
//! directory (killed at exit), or `--redis-url`. Each side writes under its
//! own key prefix, so neither sees the other's indexes; with `--redis-url`
//! the permanent keys (expiry index, change log) are deleted at the end and
//! the records expire an hour later by themselves.
//!
//! revocd runs in this process (`--dev`: no API keys, jti revokes allowed)
//! on its own Tokio runtime, as it would in its own process; the clients
//! run on another. Both share the machine's cores with `redis-server`, so
//! the revocd phases also pay for the gRPC client's CPU time.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use revocd::bounds::DEFAULT_LEEWAY_SECONDS;
use revocd::config::DEFAULT_LOG_RETENTION;
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{CheckRequest, RevokeRequest};
use revocd::time::unix_now;

// Shared with the integration tests; the benchmark needs only `start` and `url`.
#[allow(dead_code)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;
// Shared with the other benchmarks; this one needs the in-process server.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod support;

use redis_server::RedisServer;
use support::{runtime, serve_config, RunningServer};

/// Requests before the measured window, to open connections, load the
/// script and warm caches.
const WARMUP: Duration = Duration::from_secs(1);
/// Lifetime of the tokens revoked: `expires_at` is now plus this, in seconds.
const TOKEN_LIFETIME: i64 = 3_600;
/// The caller revocd records in `--dev` (`Access::Open`).
const DEV_CALLER: &str = "dev";
/// Source of revocd's revoke script, which the baseline takes verbatim, so
/// it cannot drift from the server.
const REVOKE_SOURCE: &str = include_str!("../src/store/redis/revoke.rs");
/// Source of revocd's Redis store, from which the baseline takes the prune
/// batch.
const REDIS_STORE_SOURCE: &str = include_str!("../src/store/redis/mod.rs");
/// Throughput share of the baseline each revocd RPC should reach.
const REVOKE_TARGET: f64 = 0.50;
/// See [`REVOKE_TARGET`].
const CHECK_TARGET: f64 = 0.60;

/// Load benchmark: revocd `Revoke`/`Check` against the same work sent to
/// Redis directly.
#[derive(Debug, Parser)]
struct Options {
    /// Measured seconds per phase, after a 1 s warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,

    /// Concurrent clients in every phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// gRPC connections to revocd, shared round-robin by the clients.
    #[arg(long, default_value_t = 4)]
    channels: usize,

    /// Redis to use instead of starting a `redis-server` on loopback.
    #[arg(long)]
    redis_url: Option<String>,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    ensure!(options.channels > 0, "--channels must be at least 1");
    // Bound for the whole run: dropping it kills the redis-server.
    let (redis_url, _own_redis) = match &options.redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let server = RedisServer::start();
            (server.url(), Some(server))
        }
    };
    let server_runtime = runtime("revocd")?;
    let client_runtime = runtime("load-client")?;
    client_runtime.block_on(benchmark(&options, &redis_url, server_runtime.handle()))
}

/// Starts revocd, runs the four phases and prints the table.
async fn benchmark(options: &Options, redis_url: &str, server_runtime: &Handle) -> Result<()> {
    let namespace = format!("revocd-load:{}:", std::process::id());
    let baseline_keys = Layout::new(format!("{namespace}baseline:"));
    let revocd_keys = Layout::new(format!("{namespace}revocd:"));

    let serve_args = revocd_args(redis_url, &revocd_keys.prefix);
    let config = serve_config(&serve_args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let server = server_runtime
        .spawn(async move { RunningServer::start(config.start_state(None).await?).await })
        .await
        .context("revocd start-up panicked")??;
    let redis = redis::Client::open(redis_url)
        .context("parsing the Redis URL")?
        .get_connection_manager()
        .await
        .context("connecting to Redis")?;
    let redis_version = redis_version(&mut redis.clone()).await?;
    let baseline = Arc::new(RedisBaseline::new(redis.clone(), baseline_keys.clone())?);
    let revocd = Arc::new(Revocd::connect(server.address, options.channels).await?);

    let load = Load {
        concurrency: options.concurrency,
        warmup: WARMUP,
        measured: Duration::from_secs(options.seconds),
    };
    let redis_revoke = drive(load, &baseline, |redis, task, seq| async move {
        redis.revoke(&jti(task, seq)).await
    })
    .await
    .context("phase `redis REVOKE_SCRIPT`")?;
    let revocd_revoke = drive(load, &revocd, |revocd, task, seq| async move {
        revocd.revoke(task, &jti(task, seq)).await
    })
    .await
    .context("phase `revocd Revoke`")?;
    let written = redis_revoke.completed.clone();
    let redis_check = drive(load, &baseline, move |redis, task, seq| {
        let jti = written_jti(&written, task, seq);
        async move { redis.check(&jti).await }
    })
    .await
    .context("phase `redis HGETALL`")?;
    let written = revocd_revoke.completed.clone();
    let revocd_check = drive(load, &revocd, move |revocd, task, seq| {
        let jti = written_jti(&written, task, seq);
        async move { revocd.check(task, &jti).await }
    })
    .await
    .context("phase `revocd Check`")?;

    server.stop().await?;
    delete_permanent_keys(&mut redis.clone(), &[&baseline_keys, &revocd_keys]).await?;

    print_setup(options, redis_url, &redis_version, &serve_args);
    print_table(&[
        Row::baseline("redis REVOKE_SCRIPT", &redis_revoke),
        Row::revocd(
            "revocd Revoke",
            &revocd_revoke,
            &redis_revoke,
            REVOKE_TARGET,
        ),
        Row::baseline("redis HGETALL", &redis_check),
        Row::revocd("revocd Check", &revocd_check, &redis_check, CHECK_TARGET),
    ]);
    Ok(())
}

// === the load driver ===

/// How every phase runs.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Clients, each with one request in flight.
    concurrency: usize,
    /// Time before the measured window.
    warmup: Duration,
    /// Length of the measured window.
    measured: Duration,
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
}

/// Runs one phase: `load.concurrency` clients each call `op(target, client
/// index, request number)` back to back until the measured window ends.
///
/// # Errors
/// The first failed request (the phase's numbers would mean nothing).
async fn drive<T, F, Fut>(load: Load, target: &Arc<T>, op: F) -> Result<Measured>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let measure_from = Instant::now() + load.warmup;
    let until = measure_from + load.measured;
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
    Ok(Measured {
        latencies,
        completed,
        window: load.measured,
    })
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
}

/// The jti of client `client`'s request `seq`; unique within a phase.
fn jti(client: usize, seq: u64) -> String {
    format!("load-{client}-{seq}")
}

/// A jti that client `client` revoked in a phase that completed
/// `written[client]` requests per client, cycling through them.
fn written_jti(written: &[u64], client: usize, seq: u64) -> String {
    jti(client, seq % written[client].max(1))
}

// === the two targets ===

/// revocd's Redis key layout (see the module docs of `src/store/redis/mod.rs`)
/// under one key prefix.
#[derive(Debug, Clone)]
struct Layout {
    prefix: String,
}

impl Layout {
    fn new(prefix: String) -> Self {
        Self { prefix }
    }

    /// The record of `jti` of the empty issuer (what `--dev` defaults to).
    /// A record name is `<issuer byte length>:<issuer>:<id>`.
    fn record(&self, jti: &str) -> String {
        format!("{}v1:{{p0}}:jti:{}", self.prefix, Self::record_name(jti))
    }

    fn record_name(jti: &str) -> String {
        format!("0::{jti}")
    }

    fn expiry_index(&self) -> String {
        format!("{}v1:{{p0}}:jti-expiry", self.prefix)
    }

    fn actor_index(&self) -> String {
        format!("{}v1:{{p0}}:actor-live:{DEV_CALLER}", self.prefix)
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
}

impl RedisBaseline {
    /// # Errors
    /// If `src/store/redis/revoke.rs` no longer holds `REVOKE_SCRIPT`, or
    /// `src/store/redis/mod.rs` `PRUNE_BATCH`, in the expected form.
    fn new(redis: ConnectionManager, keys: Layout) -> Result<Self> {
        let script = between(REVOKE_SOURCE, "const REVOKE_SCRIPT: &str = r#\"", "\"#;")?;
        let prune_batch = between(REDIS_STORE_SOURCE, "const PRUNE_BATCH: u32 = ", ";")?
            .parse()
            .context("PRUNE_BATCH in src/store/redis/mod.rs is not a number")?;
        Ok(Self {
            redis,
            keys,
            revoke_script: Script::new(script),
            prune_batch,
        })
    }

    /// What `RedisStore::revoke` sends for a new revocation by jti.
    async fn revoke(&self, jti: &str) -> Result<()> {
        let now = unix_now();
        let expires_at = now + TOKEN_LIFETIME;
        let name = Layout::record_name(jti);
        // One (outcome, cursor) pair per item; one item here.
        let replies: Vec<(u8, Option<String>)> = self
            .revoke_script
            .key(self.keys.expiry_index())
            .key(self.keys.log())
            .key(self.keys.actor_index())
            .key(self.keys.record(jti))
            .arg(DEFAULT_LOG_RETENTION)
            .arg(now)
            .arg(self.prune_batch)
            .arg(0) // no live quota
            .arg(&name)
            .arg(expires_at)
            .arg(expires_at + DEFAULT_LEEWAY_SECONDS as i64)
            .arg(now)
            .arg(DEV_CALLER)
            .arg("") // reason
            .arg("") // issuer
            .arg(jti)
            .arg("") // subject
            .arg("") // source
            .invoke_async(&mut self.redis.clone())
            .await?;
        ensure!(
            matches!(replies.as_slice(), [(1, Some(_))]),
            "{jti}: the script answered {replies:?}, not a new revocation"
        );
        Ok(())
    }

    /// What `RedisStore::status` sends for a `Check` by jti.
    async fn check(&self, jti: &str) -> Result<()> {
        let hashes: Vec<HashMap<String, String>> = redis::pipe()
            .hgetall(self.keys.record(jti))
            .query_async(&mut self.redis.clone())
            .await?;
        ensure!(
            hashes.first().is_some_and(|fields| !fields.is_empty()),
            "{jti} has no record"
        );
        Ok(())
    }
}

/// The text of `source` between the first `start` and the next `end`.
fn between<'a>(source: &'a str, start: &str, end: &str) -> Result<&'a str> {
    let from = source.find(start).map(|at| at + start.len());
    let text = from.and_then(|from| Some(&source[from..from + source[from..].find(end)?]));
    text.with_context(|| format!("the store's source has no `{start}…{end}`"))
}

/// revocd's gRPC API. A client channel is one HTTP/2 connection, driven by
/// one task on each side: 64 clients on one channel would measure that
/// connection's framing and I/O, which a real fleet of callers spreads over
/// many connections, so the clients share a few channels round-robin.
struct Revocd {
    clients: Vec<RevocationServiceClient<Channel>>,
}

impl Revocd {
    /// Opens `channels` connections to revocd at `address`.
    async fn connect(address: SocketAddr, channels: usize) -> Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?;
        let mut clients = Vec::with_capacity(channels);
        for _ in 0..channels {
            let channel = endpoint.connect().await.context("connecting to revocd")?;
            clients.push(RevocationServiceClient::new(channel));
        }
        Ok(Self { clients })
    }

    /// The client of client task `task`. `--dev` needs no `authorization`
    /// metadata.
    fn client(&self, task: usize) -> RevocationServiceClient<Channel> {
        self.clients[task % self.clients.len()].clone()
    }

    /// `Revoke` of a new jti.
    async fn revoke(&self, task: usize, jti: &str) -> Result<()> {
        let request = RevokeRequest {
            jti: jti.to_owned(),
            expires_at: unix_now() + TOKEN_LIFETIME,
            ..RevokeRequest::default()
        };
        let reply = self.client(task).revoke(request).await?.into_inner();
        ensure!(reply.newly_revoked, "{jti} was revoked already");
        Ok(())
    }

    /// `Check` by jti of a revoked token.
    async fn check(&self, task: usize, jti: &str) -> Result<()> {
        let request = CheckRequest {
            jti: jti.to_owned(),
            ..CheckRequest::default()
        };
        let reply = self.client(task).check(request).await?.into_inner();
        ensure!(reply.revoked, "{jti} is not revoked");
        Ok(())
    }
}

/// The flags revocd is started with.
fn revocd_args(redis_url: &str, key_prefix: &str) -> Vec<String> {
    [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        redis_url,
        "--key-prefix",
        key_prefix,
    ]
    .map(str::to_owned)
    .to_vec()
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

/// Deletes the keys that do not expire by themselves (records do).
async fn delete_permanent_keys(redis: &mut ConnectionManager, layouts: &[&Layout]) -> Result<()> {
    let keys: Vec<String> = layouts
        .iter()
        .flat_map(|layout| [layout.expiry_index(), layout.log()])
        .collect();
    redis::cmd("DEL")
        .arg(keys)
        .query_async::<()>(redis)
        .await
        .context("deleting the benchmark's keys")
}

// === the report ===

/// One line of the table.
struct Row<'a> {
    phase: &'a str,
    measured: &'a Measured,
    /// The baseline's measurement and the target ratio, for revocd phases.
    against: Option<(&'a Measured, f64)>,
}

impl<'a> Row<'a> {
    fn baseline(phase: &'a str, measured: &'a Measured) -> Self {
        Self {
            phase,
            measured,
            against: None,
        }
    }

    fn revocd(phase: &'a str, measured: &'a Measured, baseline: &'a Measured, target: f64) -> Self {
        Self {
            phase,
            measured,
            against: Some((baseline, target)),
        }
    }
}

fn print_setup(options: &Options, redis_url: &str, redis_version: &str, serve_args: &[String]) {
    let args: Vec<String> = std::env::args().collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let redis = match options.redis_url {
        Some(_) => "given by --redis-url",
        None => "own redis-server, loopback",
    };
    println!("command:  {}", args.join(" "));
    println!(
        "revocd:   in-process, revocd serve {}",
        serve_args.join(" ")
    );
    println!("redis:    {redis_url} ({redis}), version {redis_version}");
    println!(
        "load:     {} clients, {} gRPC channels, {} s measured after {} s warm-up per phase, {cores} cores",
        options.concurrency,
        options.channels,
        options.seconds,
        WARMUP.as_secs(),
    );
    println!("baseline: `redis` crate, one ConnectionManager; REVOKE_SCRIPT = EVALSHA of the server's script text, HGETALL = 1-command pipeline");
    println!();
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>7}  target",
        "phase", "ops/s", "p50", "p99", "ratio"
    );
    for row in rows {
        let comparison = match row.against {
            Some((baseline, target)) => {
                let ratio = row.measured.throughput() / baseline.throughput();
                let verdict = if ratio >= target { "met" } else { "MISSED" };
                format!("{ratio:>7.2}  >= {target:.2} {verdict}")
            }
            None => String::new(),
        };
        let line = format!(
            "{:<20} {:>9.0} {:>9} {:>9} {comparison}",
            row.phase,
            row.measured.throughput(),
            millis(row.measured.percentile(0.50)),
            millis(row.measured.percentile(0.99)),
        );
        println!("{}", line.trim_end());
    }
}

/// Microseconds as milliseconds with two decimals.
fn millis(micros: u32) -> String {
    format!("{:.2}ms", f64::from(micros) / 1000.0)
}
