//! The long fault-injection run: random faults against real replicas,
//! gateways, agents and Redis for as long as asked, with the invariants of
//! `tests/support/chaos/` checked all along and a summary table at the end.
//!
//! ```text
//! apt-get install -y redis-server
//! cargo build --release --bin revocd --example chaos
//! cargo run --release --example chaos -- --duration 10m [--seed N]
//!     [--gateways 5] [--agents 2] [--replicas 2] [--log-partitions 2]
//!     [--revocd-bin target/release/revocd]
//! ```
//!
//! Each phase injects one fault drawn from the seed (kill -9 a replica and
//! restart it, SIGSTOP a replica, SIGSTOP Redis, kill -9 Redis and restart
//! it from its AOF, SIGSTOP an agent, cut streams at the proxies, stall a
//! replica past the log's retention, hold confirms across a revocation,
//! `CLIENT KILL` Redis's connections, forged cross-issuer tokens, a gateway
//! too old for claim cut-offs subscribing), now and
//! then with a subscriber stop or stream drop on top, then checks strict
//! durability, the answers given during the outage and convergence within
//! 8 s; `REVOCD_CHAOS_FAULTS` (labels, comma separated) draws from some
//! kinds only. Violations print as they are found. Exit status 1 if any
//! was. `tests/chaos.rs` is the short version CI runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

// The integration tests' helpers (Redis, real `revocd` processes, tokens)
// and the chaos engine built on them.
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/chaos/mod.rs"]
mod chaos;

/// Random faults against a whole revocd deployment on loopback.
#[derive(Debug, Parser)]
struct Options {
    /// How long to keep injecting faults (the phase in progress finishes).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Seed of the fault schedule (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,

    /// `revocd serve` replicas.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=8))]
    replicas: u16,

    /// Gateways of the library in this process.
    #[arg(long, default_value_t = 5)]
    gateways: usize,

    /// `revocd agent` processes (at least one: they are what SIGSTOP
    /// stalls).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    agents: u16,

    /// `--log-partitions` of the replicas.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    log_partitions: u16,

    /// The `revocd` binary (default: beside this example's directory, i.e.
    /// `target/release/revocd` for a release build).
    #[arg(long)]
    revocd_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let binary = options
        .revocd_bin
        .clone()
        .unwrap_or_else(|| support::binary("revocd"));
    if !binary.is_file() {
        eprintln!(
            "error: {} not found: run `cargo build --release --bin revocd --example chaos` first",
            binary.display()
        );
        return ExitCode::FAILURE;
    }
    let seed = options.seed.unwrap_or_else(chaos::seed_from_env);
    let config = chaos::ChaosConfig {
        replicas: options.replicas.into(),
        gateways: options.gateways,
        agents: options.agents.into(),
        log_partitions: options.log_partitions,
        ..chaos::ChaosConfig::long(seed, binary, options.duration)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let report = runtime.block_on(chaos::run(config));
    println!("{report}");
    if report.violation_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
