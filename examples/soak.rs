//! Soak benchmark: a steady load for a long time, watching for drift.
//!
//! ```text
//! cargo build --release --bin revocd
//! cargo run --release --example soak -- [--duration 10m] [--rate 1000]
//!     [--subscribers 200] [--lifetime 120s]
//! ```
//!
//! The real `revocd serve` binary (`target/release/revocd`) runs against a
//! `redis-server` started for the run (own port, own temp dir, loopback).
//! `--subscribers` raw `Subscribe` streams (spread over HTTP/2 connections
//! of at most 100 streams) follow it, and `Revoke` calls arrive at `--rate`
//! per second, each for a token living `--lifetime`, so after one lifetime
//! as many records expire as arrive and the filter is rebuilt now and then:
//! the steady state of a real deployment.
//!
//! Every 2 s it samples the server's `VmRSS` and open file descriptors;
//! every subscriber measures each delta's propagation delay (its arrival
//! minus `Delta.logged_at_ms`, the time the change was appended to the log;
//! same host, same clock). Per minute it prints revocations made, the
//! median and largest RSS, fds and propagation p50/p99, then the checks,
//! each comparing the last minute with the first minute after warm-up (the
//! first `--lifetime` plus a minute):
//!
//! - RSS drift: the last minute's median RSS over the first's; target
//!   <= 5%. Medians, because RSS swings within a minute: every filter
//!   rebuild sends each subscriber a snapshot at once, and those copies
//!   are in flight together for a moment. The largest RSS of each of the
//!   two minutes is compared too, so growing peaks would show;
//! - file descriptors: the largest count after warm-up minus the count at
//!   its end; target 0 (stable);
//! - propagation p99 of the last minute over the first; target <= 1.5.
//!
//! The run stops by itself after `--duration` and kills what it started.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use revocd::pb::filter_update::Update;
use revocd::pb::{RevokeRequest, SubscribeRequest};
use revocd::time::{unix_now, unix_now_ms};
use support::{Deployment, RedisServer, Replica};

/// Subscribe streams per HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 100;
/// Concurrent callers making the revocations.
const CALLERS: usize = 8;
/// How often RSS and fds are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

struct Options {
    duration: Duration,
    rate: u64,
    subscribers: usize,
    lifetime: Duration,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Options {
            duration: Duration::from_secs(600),
            rate: 1_000,
            subscribers: 200,
            lifetime: Duration::from_secs(120),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--duration" => options.duration = humantime::parse_duration(&value)?,
                "--rate" => options.rate = value.parse()?,
                "--subscribers" => options.subscribers = value.parse()?,
                "--lifetime" => options.lifetime = humantime::parse_duration(&value)?,
                other => bail!("unknown flag {other}"),
            }
        }
        if options.rate == 0 || options.subscribers == 0 {
            bail!("--rate and --subscribers must be above 0");
        }
        Ok(options)
    }

    /// When warm-up ends: a lifetime (the live set reaches its steady
    /// size) plus a minute.
    fn warm_up(&self) -> Duration {
        self.lifetime + Duration::from_secs(60)
    }
}

/// Propagation delays of one minute, in milliseconds.
#[derive(Default)]
struct MinuteDelays(Vec<Vec<u32>>);

impl MinuteDelays {
    fn record(&mut self, minute: usize, delay_ms: u32) {
        if self.0.len() <= minute {
            self.0.resize_with(minute + 1, Vec::new);
        }
        self.0[minute].push(delay_ms);
    }

    /// (p50, p99) of a minute, in ms.
    fn percentiles(&self, minute: usize) -> Option<(u32, u32)> {
        let mut delays = self.0.get(minute)?.clone();
        if delays.is_empty() {
            return None;
        }
        delays.sort_unstable();
        let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
}

fn main() -> Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> Result<()> {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let server = Replica::spawn(&deployment.args(&["--redis-url", &redis.url()])).await;
    let pid = server.pid();
    println!(
        "soak: {} revocations/s for {:?}, {} subscribers, tokens living {:?}; revocd pid {pid}",
        options.rate, options.duration, options.subscribers, options.lifetime
    );

    let started = Instant::now();
    let delays = Arc::new(Mutex::new(MinuteDelays::default()));
    let frames = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for connection in 0..options.subscribers.div_ceil(STREAMS_PER_CONNECTION) {
        let client = server.client(Some("key-subscribe")).await;
        let streams =
            STREAMS_PER_CONNECTION.min(options.subscribers - connection * STREAMS_PER_CONNECTION);
        for _ in 0..streams {
            let mut client = client.clone();
            let delays = Arc::clone(&delays);
            let frames = Arc::clone(&frames);
            subscribers.push(tokio::spawn(async move {
                let request = SubscribeRequest {
                    gateway_id: "soak".into(),
                    protocol: revocd::snapshot::STREAM_PROTOCOL,
                    ..Default::default()
                };
                let mut stream = client.subscribe(request).await?.into_inner();
                while let Some(frame) = stream.message().await? {
                    frames.fetch_add(1, Ordering::Relaxed);
                    if let Some(Update::Delta(delta)) = frame.update {
                        let delay = (unix_now_ms() - delta.logged_at_ms).max(0) as u32;
                        let minute = (started.elapsed().as_secs() / 60) as usize;
                        delays.lock().expect("delays").record(minute, delay);
                    }
                }
                anyhow::Ok(())
            }));
        }
    }

    let revoked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = started + options.duration;
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let mut client = server.client(Some("key-revoke")).await;
        let revoked = Arc::clone(&revoked);
        let failed = Arc::clone(&failed);
        let period = Duration::from_secs_f64(CALLERS as f64 / options.rate as f64);
        let lifetime = options.lifetime.as_secs() as i64;
        callers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                n += 1;
                let request = RevokeRequest {
                    jti: format!("soak-{caller}-{n}"),
                    expires_at: unix_now() + lifetime,
                    ..Default::default()
                };
                match client.revoke(request).await {
                    Ok(_) => revoked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let mut samples = Vec::new();
    let mut last_minute_printed = 0;
    println!("minute  revoked/s  rss MiB median/max  fds  propagation p50/p99 ms");
    while Instant::now() < deadline {
        tokio::time::sleep(SAMPLE_EVERY.min(deadline - Instant::now())).await;
        let at = started.elapsed();
        samples.push(Sample {
            at,
            rss_kib: support::rss_kib(pid).context("VmRSS in /proc/<pid>/status")?,
            fds: open_fds(pid)?,
        });
        let minute = (at.as_secs() / 60) as usize;
        if minute > last_minute_printed || Instant::now() >= deadline {
            let done = last_minute_printed;
            last_minute_printed = minute;
            let fds = samples.last().expect("a sample").fds;
            let (median, max) = rss_in_minute(&samples, done).unwrap_or_default();
            let (p50, p99) = delays
                .lock()
                .expect("delays")
                .percentiles(done)
                .unwrap_or_default();
            println!(
                "{:>6}  {:>9.0}  {:>18}  {fds:>3}  {p50}/{p99}",
                done + 1,
                revoked.load(Ordering::Relaxed) as f64 / at.as_secs_f64(),
                format!("{:.1}/{:.1}", mib(median), mib(max)),
            );
        }
    }
    for caller in callers {
        caller.await?;
    }
    for subscriber in &subscribers {
        subscriber.abort();
    }
    let delays = delays.lock().expect("delays");
    report(&options, &samples, &delays, &revoked, &failed)
}

fn report(
    options: &Options,
    samples: &[Sample],
    delays: &MinuteDelays,
    revoked: &AtomicU64,
    failed: &AtomicU64,
) -> Result<()> {
    let warm_up = options.warm_up();
    let Some(base) = samples.iter().rev().find(|s| s.at <= warm_up) else {
        bail!("the run ended before warm-up ({warm_up:?}); give a longer --duration");
    };
    let first_minute = warm_up.as_secs().div_ceil(60) as usize;
    let last_minute = (options.duration.as_secs() / 60).saturating_sub(1) as usize;
    if last_minute <= first_minute {
        bail!("no whole minute after the first one past warm-up ({warm_up:?}); give a longer --duration");
    }
    let (Some((first_median, first_max)), Some((last_median, last_max))) = (
        rss_in_minute(samples, first_minute),
        rss_in_minute(samples, last_minute),
    ) else {
        bail!(
            "no RSS sample in minute {} or {}",
            first_minute + 1,
            last_minute + 1
        );
    };
    let max_fds = samples
        .iter()
        .filter(|s| s.at > warm_up)
        .map(|s| s.fds)
        .max()
        .unwrap_or(base.fds);
    let drift = last_median as f64 / first_median as f64 - 1.0;
    let peak_drift = last_max as f64 / first_max as f64 - 1.0;
    let (_, first_p99) = delays.percentiles(first_minute).unwrap_or_default();
    let (_, last_p99) = delays.percentiles(last_minute).unwrap_or_default();
    let p99_ratio = f64::from(last_p99) / f64::from(first_p99.max(1));
    println!();
    println!(
        "revocations: {} acknowledged, {} failed",
        revoked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "RSS drift after warm-up: {:+.1}% (median {:.1} MiB in minute {} -> {:.1} MiB in minute {}); target <= 5%",
        drift * 100.0,
        mib(first_median),
        first_minute + 1,
        mib(last_median),
        last_minute + 1,
    );
    println!(
        "RSS peaks: {:+.1}% (largest {:.1} MiB in minute {} -> {:.1} MiB in minute {})",
        peak_drift * 100.0,
        mib(first_max),
        first_minute + 1,
        mib(last_max),
        last_minute + 1,
    );
    println!(
        "file descriptors: {} at warm-up end, max {} after; target: stable",
        base.fds, max_fds
    );
    println!(
        "propagation p99: {first_p99} ms in minute {} -> {last_p99} ms in minute {}: {p99_ratio:.2}x; target <= 1.5x",
        first_minute + 1,
        last_minute + 1
    );
    Ok(())
}

/// Median and largest RSS (KiB) sampled in `minute` (0-based).
fn rss_in_minute(samples: &[Sample], minute: usize) -> Option<(u64, u64)> {
    let mut rss: Vec<u64> = samples
        .iter()
        .filter(|s| s.at.as_secs() / 60 == minute as u64)
        .map(|s| s.rss_kib)
        .collect();
    rss.sort_unstable();
    Some((*rss.get(rss.len() / 2)?, *rss.last()?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
