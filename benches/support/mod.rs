//! Helpers shared by the benchmarks (`benches/filter.rs`,
//! `benches/gateway.rs`) and the examples, included in each with `#[path]`
//! (a `benches/support/` folder, so cargo does not take it for a benchmark
//! of its own). Each user needs a different subset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use revocd::config::ServeConfig;
use revocd::server::{self, State};

/// Samples taken per benchmark unless a group says otherwise (criterion's
/// default, set explicitly so [`Medians`] knows which calls were samples).
pub const SAMPLES: usize = 100;
/// Time a stopped in-process revocd gets to finish open calls.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

// === criterion medians ===

/// The median time per iteration of each benchmark run, as criterion
/// computes it, so a benchmark can end with a comparison table.
///
/// Criterion calls a benchmark's routine during warm-up and then once per
/// sample; its reported median is the median over the samples of (sample
/// time / iterations). [`Group`] times every call itself (as
/// `Bencher::iter` does) and keeps the same median over the last
/// `sample_size` calls, which are the samples.
#[derive(Debug, Default)]
pub struct Medians {
    /// Per-iteration nanoseconds of every call of the benchmark running now.
    calls: RefCell<Vec<f64>>,
    /// Median nanoseconds by `group/id`, for benchmarks that ran.
    medians: RefCell<HashMap<String, f64>>,
}

impl Medians {
    /// A benchmark group whose benchmarks record their medians here.
    pub fn group<'a>(&'a self, criterion: &'a mut Criterion, name: &str) -> Group<'a> {
        let mut group = criterion.benchmark_group(name);
        group.sample_size(SAMPLES);
        Group {
            group,
            name: name.to_owned(),
            samples: SAMPLES,
            medians: self,
        }
    }

    /// Median nanoseconds per iteration of `group/id`; `None` when it did
    /// not run (filtered out on the command line, or `--list`).
    pub fn ns(&self, key: &str) -> Option<f64> {
        self.medians.borrow().get(key).copied()
    }

    fn record(&self, elapsed: Duration, iterations: u64) {
        let per_iteration = elapsed.as_nanos() as f64 / iterations.max(1) as f64;
        self.calls.borrow_mut().push(per_iteration);
    }

    /// Ends one benchmark: the median of its last `samples` calls.
    fn finish(&self, key: String, samples: usize) {
        let mut calls = self.calls.take();
        if calls.is_empty() {
            return;
        }
        let mut sampled = calls.split_off(calls.len().saturating_sub(samples));
        sampled.sort_by(f64::total_cmp);
        let middle = sampled.len() / 2;
        let median = if sampled.len().is_multiple_of(2) {
            (sampled[middle - 1] + sampled[middle]) / 2.0
        } else {
            sampled[middle]
        };
        self.medians.borrow_mut().insert(key, median);
    }
}

/// A criterion benchmark group that records each benchmark's median in
/// [`Medians`] under `group/id`.
pub struct Group<'a> {
    group: BenchmarkGroup<'a, WallTime>,
    name: String,
    samples: usize,
    medians: &'a Medians,
}

impl Group<'_> {
    /// Samples per benchmark of this group (criterion needs at least 10).
    pub fn sample_size(&mut self, samples: usize) -> &mut Self {
        self.group.sample_size(samples);
        self.samples = samples;
        self
    }

    /// Benchmarks `routine` like `Bencher::iter`: its output is dropped
    /// inside the timed loop.
    pub fn bench<O>(&mut self, id: &str, mut routine: impl FnMut() -> O) -> &mut Self {
        self.bench_timed(id, |iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(routine());
            }
            started.elapsed()
        })
    }

    /// Benchmarks with a routine that runs `iterations` times and returns
    /// the time they took (`Bencher::iter_custom`), for set-up that must
    /// stay out of the timing.
    pub fn bench_timed(&mut self, id: &str, mut timed: impl FnMut(u64) -> Duration) -> &mut Self {
        let medians = self.medians;
        self.group.bench_function(id, |bencher| {
            bencher.iter_custom(|iterations| {
                let elapsed = timed(iterations);
                medians.record(elapsed, iterations);
                elapsed
            });
        });
        medians.finish(format!("{}/{id}", self.name), self.samples);
        self
    }

    /// Benchmarks `routine` on inputs made by `setup`, timing only
    /// `routine`: inputs are made `batch` at a time before the clock starts,
    /// and outputs dropped after it stops.
    pub fn bench_batched<I, O>(
        &mut self,
        id: &str,
        batch: usize,
        mut setup: impl FnMut() -> I,
        mut routine: impl FnMut(I) -> O,
    ) -> &mut Self {
        let batch = batch.max(1) as u64;
        self.bench_timed(id, |iterations| {
            let mut elapsed = Duration::ZERO;
            let mut left = iterations;
            while left > 0 {
                let size = left.min(batch);
                let inputs: Vec<I> = (0..size).map(|_| setup()).collect();
                let mut outputs = Vec::with_capacity(inputs.len());
                let started = Instant::now();
                for input in inputs {
                    outputs.push(routine(input));
                }
                elapsed += started.elapsed();
                drop(black_box(outputs));
                left -= size;
            }
            elapsed
        })
    }

    /// Ends the group (criterion prints its summary).
    pub fn finish(self) {
        self.group.finish();
    }
}

// === fixtures and report helpers ===

/// A token id shaped like the UUIDs real issuers put in `jti`, distinct for
/// each `index` below 2^48 (its last group is the index; the others are a
/// mix of it, so ids do not share long prefixes).
pub fn token_id(index: u64) -> String {
    // splitmix64's finaliser.
    let mut mixed = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 31;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        mixed >> 32,
        (mixed >> 16) & 0xffff,
        (mixed >> 4) & 0xfff,
        (mixed >> 52) & 0xfff,
        index & 0xffff_ffff_ffff
    )
}

/// Nanoseconds in the unit that suits them (`38.2 ns`, `1.52 µs`, `3.10 ms`);
/// `-` for a benchmark that did not run.
pub fn human(ns: Option<f64>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(ns) if ns < 1e3 => format!("{ns:.1} ns"),
        Some(ns) if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{:.2} ms", ns / 1e6),
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// "met" or "MISSED", for the target column of a report.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

// === an in-process revocd ===

/// revocd's own flags, parsed by its own clap definitions.
#[derive(Debug, Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeConfig,
}

/// The configuration `revocd serve ARGS` would run with.
///
/// # Errors
/// Flags revocd does not accept.
pub fn serve_config(args: &[&str]) -> Result<ServeConfig> {
    let argv = std::iter::once("revocd").chain(args.iter().copied());
    Ok(ServeCli::try_parse_from(argv)?.serve)
}

/// A multi-threaded Tokio runtime whose threads are called `name`.
///
/// # Errors
/// If the runtime cannot start.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

/// revocd serving in this process on a free loopback port, on the runtime
/// it was started on.
pub struct RunningServer {
    /// Where it listens.
    pub address: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Serves `state` (from `ServeConfig::start_state`) on `127.0.0.1:0` with
    /// [`server::run`], as `revocd serve` does.
    ///
    /// # Errors
    /// If no loopback port can be bound.
    pub async fn start(state: State) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port for revocd")?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let serving = tokio::spawn(server::run(
            listener,
            None,
            Arc::new(state),
            shutdown,
            SHUTDOWN_GRACE,
        ));
        Ok(Self {
            address,
            stop,
            serving,
        })
    }

    /// `http://<address>`, for gRPC clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Shuts revocd down and waits for it.
    ///
    /// # Errors
    /// A transport error of the server, or a panic in it.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.serving.await.context("revocd panicked")??;
        Ok(())
    }
}
