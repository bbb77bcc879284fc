//! Instructions per call: a release `revocd serve` and its `redis-server`
//! under valgrind's callgrind, revocd answering `Revoke{jti}`,
//! `Revoke{token}`, `RevokeBatch` and `Check{jti}` over gRPC, with the
//! instructions each process executed per call of each.
//!
//! ```text
//! cargo build --release --bins --examples
//! ./target/release/examples/instructions [--calls 4000] [--revocd-bin PATH] [--keep-profiles DIR] [--log-entry-format 1|2]
//! ```
//!
//! Needs `valgrind` (`apt-get install -y valgrind`), whose
//! `callgrind_control` this runs.
//!
//! # Why a second measure
//!
//! CPU time per call (`examples/load.rs`) is what a deployment pays, but
//! on a shared two-core VM it moves by a quarter between runs of the same
//! binary. The instructions revocd executes for the same calls moved by
//! under 0.5% between runs on an otherwise idle VM, so a change to a hot
//! path shows as a number that can be held against another binary's,
//! measured in the same conditions: with a build running beside it, the
//! same binary counted 1-2% more per call and up to 16% more per batch
//! item, as timing changes how replies and change-log entries group into
//! reads. They do not count the kernel (system calls,
//! the TCP stack, wake-ups), which is 40% of a call's CPU time, nor cache
//! misses; and under valgrind revocd's threads take turns, so cross-thread
//! hand-offs cost less than they do for real.
//!
//! # What runs
//!
//! A `redis-server` of its own on a free port, and revocd (`--revocd-bin`, the
//! release build by default) on it with the test deployment's API keys,
//! HS256 secret and issuer, as `examples/load.rs` starts it, both under
//! `valgrind --tool=callgrind`. Then, for each phase, 16 clients over 4
//! gRPC connections send 1,600 calls to warm up, callgrind's counters are
//! zeroed, the clients send `--calls` calls (rounded up to a multiple of
//! 1,600, so every client sends whole batches), revocd is let to go idle
//! (its change-log follower applies the last entries) and the counters
//! are dumped: the instructions of all of revocd's threads, and of Redis,
//! over that window, divided by the calls. The phases:
//!
//! 1. `Revoke{jti}` of new jtis, `expires_at` the test tokens' `exp`;
//! 2. `Revoke{token}` of new HS256 tokens (signed by the client, whose
//!    instructions are not counted);
//! 3. `RevokeBatch` of 100 new jtis a call, per item (`--calls` items);
//! 4. `Check{jti}` of the jtis revoked in phase 1;
//! 5. the gRPC floor: `grpc.health.v1.Health/Check` of the server overall,
//!    served on the same port through the same stack (HTTP/2, tonic, its
//!    timeout layer and router) with no API key, metrics, span or store:
//!    what any unary call to revocd costs before revocd's own work.
//!
//! Every answer is checked, so a misbehaving server fails the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

use revocd::pb::{CheckRequest, RevokeBatchRequest};

// The integration tests' helpers: the deployment's files, tokens, the
// health probe and redis-server.
#[path = "../tests/support/mod.rs"]
mod support;

use support::{
    by_jti, by_token, Client, Deployment, HealthClient, RedisServer, ServingStatus, TOKEN_EXP,
};

/// Clients sending calls at once, and the connections they share.
const CLIENTS: usize = 16;
/// See [`CLIENTS`].
const CONNECTIONS: usize = 4;
/// Calls before each measured window (items, for batches).
const WARMUP_CALLS: usize = 1_600;
/// Items of a `RevokeBatch`.
const BATCH: usize = 100;
/// Time for revocd to finish what the last calls started (its follower
/// applying their entries) before the counters are read.
const SETTLE: Duration = Duration::from_secs(2);

/// Instructions revocd executes per call, under callgrind.
#[derive(Debug, Parser)]
struct Options {
    /// Calls measured per phase.
    #[arg(long, default_value_t = 4_000, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    calls: u64,

    /// The `revocd` binary to measure (default: the release build beside
    /// this example).
    #[arg(long)]
    revocd_bin: Option<PathBuf>,

    /// Keep callgrind's dumps in this directory (`revocd.<pid>.<n>` and
    /// `redis.<pid>.<n>`, one per phase in order, for `callgrind_annotate`)
    /// instead of a temporary one.
    #[arg(long)]
    keep_profiles: Option<PathBuf>,

    /// revocd's `--log-entry-format`; 1, the server's default, is not
    /// passed on, so a binary without the flag can be measured.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    log_entry_format: u8,
}

/// One measured phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    RevokeJti,
    RevokeToken,
    RevokeBatch,
    Check,
    Floor,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::RevokeJti => "Revoke{jti}",
            Phase::RevokeToken => "Revoke{token}",
            Phase::RevokeBatch => "RevokeBatch item",
            Phase::Check => "Check{jti}",
            Phase::Floor => "gRPC floor",
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = Options::parse();
    let binary = options
        .revocd_bin
        .clone()
        .unwrap_or_else(|| support::binary("revocd"));
    ensure!(
        binary.exists(),
        "{} is missing: run `cargo build --release --bins`",
        binary.display()
    );
    let calls = usize::try_from(options.calls)?.next_multiple_of(CLIENTS * BATCH);

    let deployment = Deployment::new();
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let profiles = match &options.keep_profiles {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => temporary.path().to_owned(),
    };
    let redis = RedisServer::start_wrapped(&callgrind(&profiles, "redis"));
    let format_flags = support::log_entry_format_flags(options.log_entry_format);
    let mut serve_flags = vec!["--redis-url".to_owned(), redis.url()];
    serve_flags.extend_from_slice(&format_flags);
    let revocd = Revocd::spawn(&binary, &deployment, &serve_flags, &profiles)?;
    let mut counters = [
        Counters::new("revocd", revocd.child.id(), &profiles),
        Counters::new(
            "redis",
            redis.pid().context("redis-server runs")?,
            &profiles,
        ),
    ];
    support::wait_for_health(
        revocd.address,
        ServingStatus::Serving,
        Duration::from_secs(120),
    )
    .await;
    let pools = Pools {
        writers: connections(revocd.address, "key-revoke").await,
        readers: connections(revocd.address, "key-read").await,
        probes: probes(revocd.address).await?,
    };

    println!(
        "revocd:  {} serve {}",
        binary.display(),
        format_flags.join(" ")
    );
    println!("calls:   {calls} per phase after {WARMUP_CALLS} to warm up; {CLIENTS} clients over {CONNECTIONS} connections");
    println!();
    println!("{:<16}{:>14}{:>14}", "phase", "revocd", "redis");
    for phase in [
        Phase::RevokeJti,
        Phase::RevokeToken,
        Phase::RevokeBatch,
        Phase::Check,
        Phase::Floor,
    ] {
        send(&pools, phase, "warm", WARMUP_CALLS).await?;
        for process in &mut counters {
            process.zero()?;
        }
        send(&pools, phase, "load", calls).await?;
        tokio::time::sleep(SETTLE).await;
        let [revocd, redis] = [counters[0].dump()?, counters[1].dump()?];
        let per_call = |instructions: u64| instructions as f64 / calls as f64;
        println!(
            "{:<16}{:>14.0}{:>14.0}",
            phase.name(),
            per_call(revocd),
            per_call(redis)
        );
    }
    Ok(())
}

/// The connections the clients share, [`CONNECTIONS`] of each kind.
struct Pools {
    /// With the API key `key-revoke`.
    writers: Vec<Client>,
    /// With the API key `key-read`.
    readers: Vec<Client>,
    /// Of the health service.
    probes: Vec<HealthClient>,
}

/// [`CONNECTIONS`] clients of the health service of revocd at `address`.
async fn probes(address: SocketAddr) -> Result<Vec<HealthClient>> {
    let mut probes = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let probe = support::health_client(address).await;
        probes.push(probe.context("connecting to the health service")?);
    }
    Ok(probes)
}

/// [`CONNECTIONS`] clients of revocd at `address` with the API key `key`.
async fn connections(address: SocketAddr, key: &str) -> Vec<Client> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(support::client(address, Some(key)).await);
    }
    clients
}

/// `calls` calls of `phase` (items, for batches) from [`CLIENTS`] clients
/// sharing `pools`; the jtis are `<round>-<client>-<n>`, so a check finds
/// what a `load` round of `Revoke{jti}` revoked.
async fn send(pools: &Pools, phase: Phase, round: &str, calls: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for client_number in 0..CLIENTS {
        let connection = client_number % CONNECTIONS;
        let pool = if phase == Phase::Check {
            &pools.readers
        } else {
            &pools.writers
        };
        let mut client = pool[connection].clone();
        let mut probe = pools.probes[connection].clone();
        let round = round.to_owned();
        tasks.spawn(async move {
            let per_call = if phase == Phase::RevokeBatch {
                BATCH
            } else {
                1
            };
            for n in 0..calls / CLIENTS / per_call {
                let jti = format!("{round}-{client_number}-{n}");
                match phase {
                    Phase::RevokeJti => {
                        let reply = client.revoke(by_jti(&jti, *TOKEN_EXP)).await?.into_inner();
                        ensure!(reply.newly_revoked, "{jti} was revoked already");
                    }
                    Phase::RevokeToken => {
                        let token = support::token_for("alice", &format!("token-{jti}"));
                        let reply = client.revoke(by_token(&token)).await?.into_inner();
                        ensure!(reply.newly_revoked, "token {jti} was revoked already");
                    }
                    Phase::RevokeBatch => {
                        let items = (0..BATCH)
                            .map(|item| by_jti(&format!("batch-{jti}-{item}"), *TOKEN_EXP))
                            .collect();
                        let request = RevokeBatchRequest { items };
                        let reply = client.revoke_batch(request).await?.into_inner();
                        let new = reply.results.iter().filter(|result| {
                            result.response.as_ref().is_some_and(|r| r.newly_revoked)
                        });
                        ensure!(new.count() == BATCH, "batch {jti}: not all {BATCH} new");
                    }
                    Phase::Check => {
                        // Warm-up checks read the warm-up revocations.
                        let request = CheckRequest {
                            jti: jti.clone(),
                            ..CheckRequest::default()
                        };
                        let reply = client.check(request).await?.into_inner();
                        ensure!(reply.revoked, "{jti} is not revoked");
                    }
                    Phase::Floor => {
                        let status = support::overall_health(&mut probe).await;
                        ensure!(status == Some(ServingStatus::Serving), "health: {status:?}");
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// The program and arguments that run a process under callgrind, its
/// dumps written as `<profiles>/<name>.<pid>.<n>`.
fn callgrind(profiles: &Path, name: &str) -> Vec<String> {
    let out_file = profiles.join(format!("{name}.%p"));
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out_file.display()),
    ]
}

/// The counters of a process running under [`callgrind`]: zeroed and
/// dumped through `callgrind_control`.
struct Counters {
    /// The dumps' file name prefix.
    name: &'static str,
    pid: u32,
    profiles: PathBuf,
    dumps: u32,
}

impl Counters {
    fn new(name: &'static str, pid: u32, profiles: &Path) -> Self {
        Self {
            name,
            pid,
            profiles: profiles.to_owned(),
            dumps: 0,
        }
    }

    /// Sets callgrind's counters to zero.
    fn zero(&mut self) -> Result<()> {
        self.control("-z")
    }

    /// Writes the counters since the last zero and returns their
    /// instructions (the dump's `summary:` line).
    fn dump(&mut self) -> Result<u64> {
        self.control("-d")?;
        self.dumps += 1;
        let path = self
            .profiles
            .join(format!("{}.{}.{}", self.name, self.pid, self.dumps));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading callgrind's dump {}", path.display()))?;
        let Some(summary) = text.lines().find_map(|line| line.strip_prefix("summary: ")) else {
            bail!("{} has no `summary:` line", path.display());
        };
        summary
            .trim()
            .parse()
            .with_context(|| format!("callgrind's summary {summary:?}"))
    }

    fn control(&self, verb: &str) -> Result<()> {
        let status = Command::new("callgrind_control")
            .args([verb, &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running callgrind_control")?;
        ensure!(status.success(), "callgrind_control {verb} failed");
        Ok(())
    }
}

/// `revocd serve` under callgrind, killed when dropped.
struct Revocd {
    address: SocketAddr,
    child: Child,
}

impl Revocd {
    fn spawn(
        binary: &Path,
        deployment: &Deployment,
        serve_flags: &[String],
        profiles: &Path,
    ) -> Result<Self> {
        let address = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let wrapper = callgrind(profiles, "revocd");
        let child = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(binary)
            .arg("serve")
            .args(deployment.args(&["--listen", &address.to_string()]))
            .args(serve_flags)
            .env("RUST_LOG", "revocd=info")
            .env_remove("REVOCD_SERVER")
            .env_remove("REVOCD_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting valgrind (install it: apt-get install -y valgrind)")?;
        Ok(Self { address, child })
    }
}

impl Drop for Revocd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
