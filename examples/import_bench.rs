//! Bulk-import benchmark: `revoctl import` of a CSV through a real `revocd
//! serve` into Redis, next to the same records written to Redis with raw
//! pipelined commands, in one run.
//!
//! ```text
//! cargo run --release --example import_bench -- [--records 200000] [--concurrency 4] [--cold-start]
//! ```
//!
//! (`IMPORT_BENCH_RECORDS` sets `--records` too.) Under `cargo run` the
//! release `revocd` and `revoctl` binaries are built first (`cargo build
//! --release --bins`; `--no-build` skips that); run any other way, they
//! must already be in `target/release/`.
//!
//! # What is measured
//!
//! 1. **revoctl import**: a CSV of `--records` lines (`jti,expires_at,,reason`,
//!    a header, distinct jtis expiring within the next hours) is written to
//!    a temporary directory. The release `revoctl import FILE --concurrency
//!    N` runs against a release `revocd serve` (API keys, HS256, one
//!    `--jwt-issuer`, defaults otherwise) on its own `redis-server`. The time
//!    is the whole `revoctl` process, start to exit: reading and parsing
//!    the file, batching, `RevokeBatch` calls of 1,000 with N in flight,
//!    and every batch acknowledged, so every revocation is in Redis. The
//!    run must exit 0 with `imported <records>`, and `GetStats` must then
//!    count that many live revocations.
//! 2. **raw Redis**: a fresh `redis-server` (the first is stopped with
//!    revocd, so neither competes with the other) gets the same records,
//!    read from the same file, as the commands the server's revoke script
//!    runs for a new revocation (`src/store/redis/revoke.rs`): `SET NX EXAT`
//!    of the packed record at `exp` + leeway, `ZADD` to the expiry index
//!    and `XADD` of the log entry with `MAXLEN ~` the
//!    default retention, under the server's default key names (one log
//!    partition, no quotas, as the benchmark's server runs). They go in pipelines
//!    of 1,000 records (3,000 commands) with N pipelines in flight on one
//!    multiplexed connection, from a single-threaded runtime like revoctl's.
//!    The time runs from opening the file to the last pipeline's reply;
//!    `ZCARD` of the index must then equal the record count.
//!
//! 3. **cold start** (`--cold-start`, which skips phase 1): a release
//!    `revocd serve` started on phase 2's Redis, holding the records. The
//!    time runs from spawning the process to its `GetStats` reporting a
//!    filter generation (0 while it loads), polled every 20 ms: the load
//!    of every live record and the filter built from them. Its RSS is then
//!    read from `/proc/<pid>/status`, beside the RSS of a replica on an
//!    empty Redis started the same way, and `GetStats` must count every
//!    record. Targets: 10,000,000 loaded in at most 30 s, at most 64 bytes
//!    of RSS per live revocation.
//!
//! The ratio import/raw is the share of bare-Redis write speed left after
//! gRPC, revocd's per-item checks and its Lua script (which also reads each
//! record first, so a repeat is not logged twice), the change-log follower
//! that feeds the replica's filter, and revoctl itself. Target: at least
//! 100,000 revocations/s imported.
//!
//! # Setup
//!
//! Loopback only. Everything is a real process started for the run, in its
//! own temporary directory, and stopped at the end (on error too: the
//! helpers kill their process when dropped): two `redis-server`s (one at a
//! time) and `revocd serve`. On the 2-core development VM, `revoctl`,
//! `revocd` and Redis share the cores; the CPU seconds each process used
//! during a phase are printed (from `/proc`; revoctl's sampled every 10 ms
//! while it runs), so the table shows where the time went. Other work on
//! the machine shows as wall time well above the sum of CPU seconds.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use tokio::task::JoinSet;

use revocd::bounds::DEFAULT_LEEWAY_SECONDS;
use revocd::config::DEFAULT_LOG_RETENTION;
use revocd::pb::GetStatsRequest;
use revocd::store::{pack_revocation, Provenance, Revocation};
use revocd::time::unix_now;

// The integration tests' helpers: the deployment's files, the real
// `revocd serve` process and redis-server.
#[path = "../tests/support/mod.rs"]
mod support;
// The benchmarks' report helpers.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod bench_support;

use bench_support::grouped;

use support::{cpu_seconds, rss_kib, Deployment, RedisServer, Replica, ISSUER};

/// Records per `RevokeBatch` call and per raw pipeline.
const BATCH: usize = 1_000;
/// The reason every record carries.
const REASON: &str = "bulk import benchmark";
/// The key name revoctl's API key has in the test deployment.
const IMPORTER: &str = "auth-server";
/// The server's default key names for its one log partition: prefix,
/// layout version, partition hash tag.
const KEYS: &str = "revocd:v1:{p0}:";
/// The target, revocations per second.
const TARGET_PER_SECOND: f64 = 100_000.0;
/// How often revoctl's CPU time is sampled while it runs. Its stderr is
/// read only after it exits, which is safe: it prints a line or two.
const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// `revoctl import` through revocd against raw pipelined Redis writes.
#[derive(Debug, Parser)]
struct Options {
    /// Revocations in the file.
    #[arg(long, env = "IMPORT_BENCH_RECORDS", default_value_t = 200_000)]
    records: usize,

    /// Batches (pipelines) in flight at once, on both sides.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,

    /// Do not build the release binaries first.
    #[arg(long)]
    no_build: bool,

    /// Skip `revoctl import`; time a replica's cold start on the records
    /// written raw instead (phase 3).
    #[arg(long)]
    cold_start: bool,
}

/// The cold-start targets: seconds to load 10,000,000, and RSS bytes per
/// live revocation.
const COLD_START_TARGETS: (f64, f64) = (30.0, 64.0);

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(options.records > 0, "--records must be at least 1");
    ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    if !options.no_build {
        support::build_binaries()?;
    }
    let (revocd, revoctl) = (support::binary("revocd"), support::binary("revoctl"));
    for binary in [&revocd, &revoctl] {
        ensure!(
            binary.exists(),
            "{} is missing: run `cargo build --release --bins`",
            binary.display()
        );
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let csv = dir.path().join("revocations.csv");
    let csv_bytes = write_csv(&csv, options.records)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if options.cold_start {
        let redis = RedisServer::start();
        let raw = runtime.block_on(measure_raw(&options, &csv, &redis))?;
        let cold = runtime.block_on(measure_cold_start(&options, &revocd, &redis))?;
        print_report(&options, csv_bytes, None, &raw);
        print_cold_start(&options, &cold);
        return Ok(());
    }
    let import = runtime.block_on(measure_import(&options, &revocd, &revoctl, &csv))?;
    let raw = runtime.block_on(measure_raw(&options, &csv, &RedisServer::start()))?;

    print_report(&options, csv_bytes, Some(&import), &raw);
    Ok(())
}

/// Writes the header and `records` lines; returns the file's size.
fn write_csv(path: &Path, records: usize) -> Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path).context("creating the CSV")?);
    writeln!(out, "jti,expires_at,issuer,reason")?;
    let base = unix_now() + 3_600;
    let pid = std::process::id();
    for i in 0..records {
        // Spread over an hour, as real tokens' expiries are.
        let expires_at = base + (i % 3_600) as i64;
        writeln!(out, "bench-{pid}-{i:08},{expires_at},,{REASON}")?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// What one phase measured.
struct Measured {
    elapsed: Duration,
    /// CPU seconds used meanwhile by the named server processes.
    cpu: Vec<(&'static str, f64)>,
}

impl Measured {
    fn per_second(&self, records: usize) -> f64 {
        records as f64 / self.elapsed.as_secs_f64()
    }
}

async fn measure_import(
    options: &Options,
    revocd: &Path,
    revoctl: &Path,
    csv: &Path,
) -> Result<Measured> {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let replica =
        Replica::spawn_with(revocd, &deployment.args(&["--redis-url", &redis.url()])).await;
    let server = replica.address.to_string();
    let redis_pid = redis.pid().context("redis-server is running")?;
    let before = [cpu_seconds(replica.pid()), cpu_seconds(redis_pid)];

    let started = Instant::now();
    let mut child = Command::new(revoctl)
        .args(["--server", &server, "--api-key", "key-revoke", "import"])
        .arg(csv)
        .args([
            "--no-progress",
            "--concurrency",
            &options.concurrency.to_string(),
        ])
        .env_remove("REVOCD_SERVER")
        .env_remove("REVOCD_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting revoctl import")?;
    // Its CPU time can only be read while it runs: sample until it exits
    // (the last few milliseconds are missed).
    let mut revoctl_cpu = 0.0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        revoctl_cpu = cpu_seconds(child.id()).max(revoctl_cpu);
        std::thread::sleep(CPU_SAMPLE_INTERVAL);
    };
    let elapsed = started.elapsed();
    let after = [cpu_seconds(replica.pid()), cpu_seconds(redis_pid)];
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("piped stderr")?
        .read_to_string(&mut stderr)?;

    ensure!(status.success(), "revoctl import failed: {stderr}");
    let expected = format!(
        "imported {}, already revoked 0, rejected 0",
        grouped(options.records as u64)
    );
    ensure!(stderr.contains(&expected), "unexpected summary: {stderr}");
    let mut client = replica.client(Some("key-read")).await;
    let stats = client.get_stats(GetStatsRequest {}).await?.into_inner();
    ensure!(
        stats.live_revocations == options.records as u64,
        "the server counts {} live revocations, not {}",
        stats.live_revocations,
        options.records
    );
    Ok(Measured {
        elapsed,
        cpu: vec![
            ("revoctl", revoctl_cpu),
            ("revocd", after[0] - before[0]),
            ("redis-server", after[1] - before[1]),
        ],
    })
}

async fn measure_raw(options: &Options, csv: &Path, redis: &RedisServer) -> Result<Measured> {
    let connection = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let redis_pid = redis.pid().context("redis-server is running")?;
    let before = cpu_seconds(redis_pid);

    let started = Instant::now();
    let mut lines = BufReader::new(std::fs::File::open(csv)?).lines();
    lines.next().transpose()?; // the header
    let now = unix_now();
    let mut in_flight = JoinSet::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut done = false;
    while !done {
        match lines.next().transpose()? {
            Some(line) => {
                batch.push(RawRecord::parse(&line)?);
                if batch.len() < BATCH {
                    continue;
                }
            }
            None => done = true,
        }
        if batch.is_empty() {
            continue;
        }
        if in_flight.len() == options.concurrency {
            in_flight.join_next().await.expect("tasks in flight")??;
        }
        let pipe = pipeline(&std::mem::take(&mut batch), now);
        let mut connection = connection.clone();
        in_flight.spawn(async move { pipe.query_async::<()>(&mut connection).await });
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let redis_cpu = cpu_seconds(redis_pid) - before;

    let mut connection = connection.clone();
    let stored: usize = redis::cmd("ZCARD")
        .arg(format!("{KEYS}jti-expiry"))
        .query_async(&mut connection)
        .await?;
    ensure!(
        stored == options.records,
        "Redis holds {stored} records, not {}",
        options.records
    );
    Ok(Measured {
        elapsed,
        cpu: vec![("redis-server", redis_cpu)],
    })
}

/// What a replica's cold start measured.
struct ColdStart {
    /// From spawning the process to its first filter generation.
    loaded: Duration,
    /// Its RSS then, and that of a replica on an empty Redis, in bytes.
    rss: u64,
    empty_rss: u64,
}

/// Phase 3: a replica started on `redis`, which holds the records.
async fn measure_cold_start(
    options: &Options,
    revocd: &Path,
    redis: &RedisServer,
) -> Result<ColdStart> {
    let deployment = Deployment::new();
    let started = Instant::now();
    let replica =
        Replica::spawn_with(revocd, &deployment.args(&["--redis-url", &redis.url()])).await;
    let mut client = replica.client(Some("key-read")).await;
    let stats = loop {
        let stats = client.get_stats(GetStatsRequest {}).await?.into_inner();
        if stats.filter_generation != 0 {
            break stats;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "no filter after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let loaded = started.elapsed();
    let rss = 1024 * rss_kib(replica.pid()).context("reading the replica's RSS")?;
    ensure!(
        stats.live_revocations == options.records as u64,
        "the replica counts {} live revocations, not {}",
        stats.live_revocations,
        options.records
    );
    drop(replica);
    let empty_redis = RedisServer::start();
    let empty = Replica::spawn_with(
        revocd,
        &deployment.args(&["--redis-url", &empty_redis.url()]),
    )
    .await;
    let mut client = empty.client(Some("key-read")).await;
    while client
        .get_stats(GetStatsRequest {})
        .await?
        .into_inner()
        .filter_generation
        == 0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let empty_rss = 1024 * rss_kib(empty.pid()).context("reading the empty replica's RSS")?;
    Ok(ColdStart {
        loaded,
        rss,
        empty_rss,
    })
}

fn print_cold_start(options: &Options, cold: &ColdStart) {
    let records = options.records as f64;
    let seconds = cold.loaded.as_secs_f64();
    let per_entry = cold.rss as f64 / records;
    let added_per_entry = cold.rss.saturating_sub(cold.empty_rss) as f64 / records;
    let (seconds_target, bytes_target) = COLD_START_TARGETS;
    let scaled = seconds * 10_000_000.0 / records;
    let verdict = |met: bool| if met { "met" } else { "missed" };
    println!(
        "cold start: {} records loaded in {seconds:.2} s ({}/s; scaled to 10M: {scaled:.1} s, target <= {seconds_target} s: {})",
        grouped(options.records as u64),
        grouped((records / seconds) as u64),
        verdict(scaled <= seconds_target),
    );
    println!(
        "replica RSS: {:.1} MiB loaded, {:.1} MiB empty; {per_entry:.1} bytes per live revocation ({added_per_entry:.1} above the empty replica; target <= {bytes_target}: {})",
        cold.rss as f64 / 1_048_576.0,
        cold.empty_rss as f64 / 1_048_576.0,
        verdict(per_entry <= bytes_target),
    );
}

/// One line of the benchmark's CSV (written by [`write_csv`]: no quoting).
struct RawRecord {
    jti: String,
    expires_at: i64,
}

impl RawRecord {
    fn parse(line: &str) -> Result<Self> {
        let mut fields = line.split(',');
        let (Some(jti), Some(expires_at)) = (fields.next(), fields.next()) else {
            bail!("malformed line {line:?}");
        };
        Ok(RawRecord {
            jti: jti.to_owned(),
            expires_at: expires_at.parse()?,
        })
    }
}

/// The commands the revoke script runs for each new revocation: the
/// packed record's `SET NX EXAT`, the index's `ZADD` and the log entry's
/// `XADD`.
fn pipeline(records: &[RawRecord], now: i64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for record in records {
        let revocation = Revocation {
            issuer: ISSUER.to_owned(),
            jti: record.jti.clone(),
            subject: String::new(),
            expires_at: record.expires_at,
            keep_until: record.expires_at + DEFAULT_LEEWAY_SECONDS as i64,
            provenance: Provenance {
                at: now,
                by: IMPORTER.to_owned(),
                reason: REASON.to_owned(),
                source: "127.0.0.1:1".to_owned(),
            },
        };
        let packed = pack_revocation(&revocation);
        // The server's record name: `<issuer length>:<issuer>:<jti>`.
        let name = format!("{}:{ISSUER}:{}", ISSUER.len(), record.jti);
        let until = revocation.keep_until;
        pipe.cmd("SET")
            .arg(format!("{KEYS}jti:{name}"))
            .arg(&packed)
            .arg("NX")
            .arg("EXAT")
            .arg(until)
            .ignore()
            .cmd("ZADD")
            .arg(format!("{KEYS}jti-expiry"))
            .arg(until)
            .arg(&name)
            .ignore()
            .cmd("XADD")
            .arg(format!("{KEYS}log"))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEFAULT_LOG_RETENTION)
            .arg("*")
            .arg(&[
                ("kind", "jti"),
                ("iss", ISSUER),
                ("id", record.jti.as_str()),
                ("until", &until.to_string()),
                ("rec", &packed),
            ])
            .ignore();
    }
    pipe
}

fn print_report(options: &Options, csv_bytes: u64, import: Option<&Measured>, raw: &Measured) {
    let records = options.records;
    let raw_rate = raw.per_second(records);
    let cpu = |m: &Measured| {
        m.cpu
            .iter()
            .map(|(name, seconds)| format!("{name} {seconds:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let redis_version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "import_bench: {} revocations, CSV of {:.1} MB; batches of {BATCH} with {} in flight; {} cores; {redis_version}",
        grouped(records as u64),
        csv_bytes as f64 / 1e6,
        options.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        report,
        "{:<48} {:>8} {:>15}  CPU meanwhile",
        "phase", "seconds", "revocations/s"
    );
    if let Some(import) = import {
        let _ = writeln!(
            report,
            "{:<48} {:>8.3} {:>15}  {}",
            "revoctl import -> revocd RevokeBatch -> Redis",
            import.elapsed.as_secs_f64(),
            grouped(import.per_second(records) as u64),
            cpu(import)
        );
    }
    let _ = writeln!(
        report,
        "{:<48} {:>8.3} {:>15}  {}",
        "raw Redis pipelines (SET NX EXAT+ZADD+XADD)",
        raw.elapsed.as_secs_f64(),
        grouped(raw_rate as u64),
        cpu(raw)
    );
    let Some(import) = import else {
        print!("{report}");
        return;
    };
    let import_rate = import.per_second(records);
    let verdict = if import_rate >= TARGET_PER_SECOND {
        "met"
    } else {
        "missed"
    };
    let _ = writeln!(
        report,
        "ratio import/raw: {:.2}; target >= {} revocations/s imported: {verdict}",
        import_rate / raw_rate,
        grouped(TARGET_PER_SECOND as u64)
    );
    print!("{report}");
}
