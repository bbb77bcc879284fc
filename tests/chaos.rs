//! The short fault-injection run (the engine and its invariants are in
//! `tests/support/chaos/`): every fault kind once against 2 real replicas,
//! 5 gateways of the library, 2 `revocd agent` processes and a real
//! `redis-server`, under load. Prints the summary table; set
//! `REVOCD_CHAOS_SEED` to replay a schedule, `REVOCD_CHAOS_FAULTS` (labels,
//! comma separated) to inject only some kinds. The long run is
//! `examples/chaos.rs`.

mod support;

#[path = "support/chaos/mod.rs"]
mod chaos;

use chaos::ChaosConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_invariant_breaks_under_every_kind_of_fault() {
    support::trace_init();
    let config = ChaosConfig::short(chaos::seed_from_env(), support::binary("revocd"));
    let report = chaos::run(config).await;
    println!("{report}");

    let faults = report.faults();
    for kind in chaos::faults_from_env() {
        assert!(
            faults.get(&kind).copied().unwrap_or(0) > 0,
            "{} was never injected",
            kind.label()
        );
    }
    for row in &report.rows {
        assert!(row.acked > 0, "phase {}: nothing acknowledged", row.index);
        let redis_outage = row.faults.iter().any(|f| f.kind.is_redis_outage());
        assert!(
            !redis_outage || row.refused_in_outage > 0,
            "phase {}: the Redis outage refused no revoke: did it happen?",
            row.index
        );
    }
    assert_eq!(
        report.violation_count, 0,
        "invariants broken (seed {}): {:#?}",
        report.seed, report.violations
    );
}
