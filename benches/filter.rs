//! The in-process revocation check, next to the Redis round trip it
//! replaces, on a filter of 1,000,000 live revocations at 0.1%, sliced by
//! expiry as a replica holds it.
//!
//! ```text
//! cargo bench --bench filter [-- --warm-up-time 1 --measurement-time 3]
//! ```
//!
//! # What is measured
//!
//! The filter is a [`SlicedFilter`] holding the digests of 1,000,000
//! distinct UUID-shaped jtis of one issuer, their tokens' expiry spread
//! evenly over an hour in 64 slices of 56 s (a replica's slices for
//! `--max-token-lifetime 1h`), each slice one filter sized as a replica
//! sizes a loaded slice: its entries plus the default headroom, at 0.1%.
//! Every per-token benchmark cycles through 65,536 different jtis spread
//! over the whole id range, so the bitmaps are read at cold places as with
//! real traffic, not at one key's ten hot cache lines.
//!
//! - `check/present`, `check/absent`: what a gateway does per token once
//!   the JWT has verified: [`DigestKey::token`]`(issuer, jti)` (keyed
//!   SipHash-2-4-128) and [`SlicedFilter::contains`] with the token's
//!   keep-until time (its slice found by binary search, then its filter),
//!   for jtis in the filter and never inserted. `check/digest` is the digest alone, and
//!   `check/present_one_key` one present jti over and over (its ten bitmap
//!   lines stay in L1 cache: the lower bound, not what traffic sees).
//! - `redis/exists_present`, `redis/exists_absent`: the baseline. One
//!   `EXISTS` of the same jtis' keys per iteration over a synchronous
//!   `redis::Connection`, to a `redis-server` started for the run on
//!   loopback (the present keys are `SET` first). A synchronous round trip
//!   pays for waking `redis-server` and then this thread: on a virtual
//!   machine whose idle cores halt, those wake-ups dominate it, so it is
//!   several times shorter while other work keeps the cores busy.
//! - `filter/insert`: adding one (precomputed) digest to a slice.
//! - `filter/to_bytes`, `filter/from_bytes`: serializing the 1M filter
//!   (format 2) and decoding it with validation, as a gateway does with a
//!   snapshot.
//!
//! Measured once, outside criterion: the false-positive rate over 1,000,000
//! jtis never inserted, and the snapshot's size on the wire (the
//! `FilterUpdate` frames of the whole filter in the hub's parts,
//! protobuf-encoded, each plus gRPC's 5-byte message prefix) in bits per
//! entry.
//!
//! The run ends with a table of criterion's medians: in-process check vs
//! Redis `EXISTS`. Targets: check <= 100 ns, >= 300x faster than Redis,
//! <= 15 bits per entry on the wire.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use criterion::Criterion;
use prost::Message;

use revocd::filter::{Digest, DigestKey, RevocationFilter, SlicedFilter};
use revocd::hub::{slice_seconds_for, DEFAULT_HEADROOM, DEFAULT_SNAPSHOT_PART_BYTES};
use revocd::pb;

#[allow(dead_code)] // shared with the other benchmarks; each uses a subset
#[path = "support/mod.rs"]
mod support;

// Shared with the integration tests; only `start` and `connection` are used.
#[allow(dead_code)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;
use support::{human, token_id, verdict, Medians};

/// Live revocations in the filter.
const ENTRIES: u64 = 1_000_000;
/// Slices their tokens' expiry spreads over.
const SLICES: u64 = 64;
/// Unix time of the first slice's start.
const EPOCH: i64 = 1_800_000_000;
/// False-positive rate the filter is sized for.
const FP_RATE: f64 = 0.001;
/// The issuer of every token.
const ISSUER: &str = "https://issuer.example";
/// Distinct jtis each per-token benchmark cycles through (a power of two).
const POOL: usize = 1 << 16;
/// Step between the inserted ids picked for the present pool: a prime, so
/// the pool spreads over all of `0..ENTRIES` without repeats.
const POOL_STRIDE: u64 = 15_485_863;
/// Target median of the in-process check.
const CHECK_TARGET_NS: f64 = 100.0;
/// Target of Redis EXISTS time / in-process check time.
const SPEEDUP_TARGET: f64 = 300.0;
/// Target snapshot size on the wire.
const BITS_PER_ENTRY_TARGET: f64 = 15.0;

/// The filter and the jtis the benchmarks use.
struct Fixture {
    key: DigestKey,
    filter: SlicedFilter,
    /// `POOL` tokens in the filter: (number, jti).
    present: Vec<(u64, String)>,
    /// `POOL` tokens never inserted.
    absent: Vec<(u64, String)>,
    /// Time to insert the `ENTRIES` digests (jtis and digests made before).
    build: Duration,
}

impl Fixture {
    fn new() -> Self {
        let key = DigestKey::random();
        let digests: Vec<Digest> = (0..ENTRIES)
            .map(|i| key.token(ISSUER, &token_id(i)))
            .collect();
        let mut filter = SlicedFilter::new(slice_seconds_for(Duration::from_secs(3_600)));
        let per_slice = (ENTRIES / SLICES) as f64 * (1.0 + DEFAULT_HEADROOM);
        for i in 0..SLICES {
            let slice = filter.slice_of(keep_until(i));
            let capacity = per_slice.ceil() as u64;
            filter.open(
                slice,
                capacity,
                RevocationFilter::new(capacity as usize, FP_RATE),
            );
        }
        let started = Instant::now();
        for (i, digest) in (0..ENTRIES).zip(&digests) {
            filter.insert(filter.slice_of(keep_until(i)), digest);
        }
        let build = started.elapsed();
        let token = |id: u64| (id, token_id(id));
        let present = (0..POOL as u64)
            .map(|k| token(k * POOL_STRIDE % ENTRIES))
            .collect();
        // Ids from ENTRIES on were never inserted.
        let absent = (0..POOL as u64).map(|k| token(ENTRIES + k)).collect();
        Fixture {
            key,
            filter,
            present,
            absent,
            build,
        }
    }

    /// The in-process check of one token: (number, jti).
    #[inline]
    fn check(&self, (id, jti): &(u64, String)) -> bool {
        self.filter
            .contains(Some(keep_until(*id)), &self.key.token(ISSUER, jti))
    }

    /// False positives among `ENTRIES` jtis never inserted.
    fn measured_fp_rate(&self) -> f64 {
        let hits = (ENTRIES..2 * ENTRIES)
            .filter(|&i| self.check(&(i, token_id(i))))
            .count();
        hits as f64 / ENTRIES as f64
    }

    /// Bytes of the filter's snapshot on the wire, framed as the hub
    /// frames it (`revocd::snapshot::split` into parts of
    /// `DEFAULT_SNAPSHOT_PART_BYTES`).
    fn snapshot_wire_bytes(&self) -> usize {
        let whole = pb::Snapshot {
            generation: 1,
            filter: self.filter.to_bytes().into(),
            subjects: Vec::new(),
            claims: Vec::new(),
            cursor: "1700000000000-0".into(),
            digest_key: self.key.as_bytes().to_vec(),
            part: 0,
            parts: 1,
            leeway: 60,
            max_token_lifetime: 86_400,
        };
        revocd::snapshot::split(whole, DEFAULT_SNAPSHOT_PART_BYTES)
            .into_iter()
            .map(|part| pb::FilterUpdate {
                update: Some(pb::filter_update::Update::Snapshot(part)),
            })
            // gRPC prefixes each message with a flag byte and a 4-byte length.
            .map(|frame| frame.encoded_len() + 5)
            .sum()
    }
}

/// When the revocation of token `id` is kept until: the tokens' expiry
/// spreads over the slices.
fn keep_until(id: u64) -> i64 {
    let seconds = i64::from(slice_seconds_for(Duration::from_secs(3_600)));
    EPOCH + (id % SLICES) as i64 * seconds + 1
}

/// The Redis key of a jti (one string per revoked token, as a store keyed
/// on (issuer, jti) would have it).
fn redis_key(jti: &str) -> String {
    format!("revoked:{ISSUER}:{jti}")
}

/// Cycles through a pool's indexes, one step per call.
struct Cycle(usize);

impl Cycle {
    fn next(&mut self) -> usize {
        self.0 = (self.0 + 1) & (POOL - 1);
        self.0
    }
}

fn main() -> Result<()> {
    let mut criterion = Criterion::default().configure_from_args();
    let medians = Medians::default();

    let fixture = Fixture::new();
    ensure!(
        fixture.present.iter().all(|jti| fixture.check(jti)),
        "an inserted jti is not found"
    );

    let redis = RedisServer::start();
    let mut connection = redis.connection();
    let present_keys: Vec<String> = fixture.present.iter().map(|(_, j)| redis_key(j)).collect();
    let absent_keys: Vec<String> = fixture.absent.iter().map(|(_, j)| redis_key(j)).collect();
    let mut load = redis::pipe();
    for key in &present_keys {
        load.cmd("SET").arg(key).arg(1).ignore();
    }
    load.query::<()>(&mut connection)
        .context("loading the present keys into Redis")?;
    let exists = |connection: &mut redis::Connection, key: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query(connection)
            .expect("EXISTS on the benchmark's redis-server")
    };
    ensure!(
        exists(&mut connection, &present_keys[0]) && !exists(&mut connection, &absent_keys[0]),
        "Redis does not hold the keys it should"
    );

    let mut group = medians.group(&mut criterion, "check");
    let mut cycle = Cycle(0);
    group.bench("present", || fixture.check(&fixture.present[cycle.next()]));
    group.bench("absent", || fixture.check(&fixture.absent[cycle.next()]));
    let hot = &fixture.present[0];
    group.bench("present_one_key", || fixture.check(black_box(hot)));
    group.bench("digest", || {
        fixture.key.token(ISSUER, &fixture.absent[cycle.next()].1)
    });
    group.finish();

    let mut group = medians.group(&mut criterion, "redis");
    group.bench("exists_present", || {
        exists(&mut connection, &present_keys[cycle.next()])
    });
    group.bench("exists_absent", || {
        exists(&mut connection, &absent_keys[cycle.next()])
    });
    group.finish();

    let mut group = medians.group(&mut criterion, "filter");
    let fresh: Vec<Digest> = (0..POOL as u64)
        .map(|k| fixture.key.token(ISSUER, &token_id(3 * ENTRIES + k)))
        .collect();
    let mut growing = fixture.filter.clone();
    let slice = growing.slice_of(keep_until(0));
    group.bench("insert", || growing.insert(slice, &fresh[cycle.next()]));
    drop(growing);
    let bytes = fixture.filter.to_bytes();
    group.bench_batched("to_bytes", 1, || (), |()| fixture.filter.to_bytes());
    group.bench_batched(
        "from_bytes",
        1,
        || bytes.clone(),
        |copy| SlicedFilter::from_bytes(copy).expect("the filter's own bytes decode"),
    );
    group.finish();

    criterion.final_summary();

    let report = Report {
        medians: &medians,
        fp_measured: fixture.measured_fp_rate(),
        fp_estimated: fixture.filter.estimated_fp_rate(),
        wire_bytes: fixture.snapshot_wire_bytes(),
        filter: &fixture.filter,
        build: fixture.build,
    };
    report.print();
    Ok(())
}

/// The table printed at the end.
struct Report<'a> {
    medians: &'a Medians,
    fp_measured: f64,
    fp_estimated: f64,
    wire_bytes: usize,
    filter: &'a SlicedFilter,
    build: Duration,
}

impl Report<'_> {
    fn print(&self) {
        let ns = |key| self.medians.ns(key);
        let check = [ns("check/present"), ns("check/absent")];
        let redis = [ns("redis/exists_present"), ns("redis/exists_absent")];
        let ratio = [0, 1].map(|i| redis[i].zip(check[i]).map(|(r, c)| r / c));
        let worst_check = check[0].zip(check[1]).map(|(p, a)| p.max(a));
        let worst_ratio = ratio[0].zip(ratio[1]).map(|(p, a)| p.min(a));
        let times = |ratio: Option<f64>| ratio.map_or("-".to_owned(), |r| format!("{r:.0}x"));
        let bits_per_entry = self.wire_bytes as f64 * 8.0 / ENTRIES as f64;

        println!();
        println!(
            "revocation check: filter of {ENTRIES} live entries at {}% in {} slices ({} bits); medians of criterion's samples",
            FP_RATE * 100.0,
            self.filter.slices().count(),
            self.filter.bits(),
        );
        let line = |name: &str, present: String, absent: String, target: String| {
            let text = format!("{name:<44} {present:>11} {absent:>11}  {target}");
            println!("{}", text.trim_end());
        };
        line("", "present".into(), "absent".into(), "target".into());
        line(
            "in-process check (digest + contains)",
            human(check[0]),
            human(check[1]),
            worst_check.map_or(String::new(), |worst| {
                let met = worst <= CHECK_TARGET_NS;
                format!("<= {CHECK_TARGET_NS:.0} ns {}", verdict(met))
            }),
        );
        line(
            "redis EXISTS round trip (loopback, sync)",
            human(redis[0]),
            human(redis[1]),
            String::new(),
        );
        line(
            "ratio redis / in-process",
            times(ratio[0]),
            times(ratio[1]),
            worst_ratio.map_or(String::new(), |worst| {
                let met = worst >= SPEEDUP_TARGET;
                format!(">= {SPEEDUP_TARGET:.0}x {}", verdict(met))
            }),
        );
        println!();
        let single = |name: &str, value: String, target: String| {
            let text = format!("{name:<44} {value:>11}  {target}");
            println!("{}", text.trim_end());
        };
        single(
            "snapshot on the wire, bits per entry",
            format!("{bits_per_entry:.2}"),
            format!(
                "<= {BITS_PER_ENTRY_TARGET:.0} {} ({} bytes in one frame)",
                verdict(bits_per_entry <= BITS_PER_ENTRY_TARGET),
                self.wire_bytes
            ),
        );
        single(
            "false-positive rate, 1M jtis never inserted",
            format!("{:.4}%", self.fp_measured * 100.0),
            format!(
                "sized for {}%; estimated from the fill {:.4}%",
                FP_RATE * 100.0,
                self.fp_estimated * 100.0
            ),
        );
        single(
            "digest alone (SipHash-2-4-128)",
            human(ns("check/digest")),
            String::new(),
        );
        single(
            "check of one present jti over and over",
            human(ns("check/present_one_key")),
            "bitmap lines hot in L1: the lower bound".into(),
        );
        single(
            "insert of one digest",
            human(ns("filter/insert")),
            String::new(),
        );
        single(
            "insert of 1M digests",
            human(Some(self.build.as_nanos() as f64)),
            "one run, not criterion".into(),
        );
        single(
            "to_bytes, 1M filter",
            human(ns("filter/to_bytes")),
            String::new(),
        );
        single(
            "from_bytes, 1M filter",
            human(ns("filter/from_bytes")),
            "validates the header; keeps the buffer".into(),
        );
    }
}
