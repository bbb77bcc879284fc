//! What a run counted: checks made, violations found, and the summary
//! table printed at the end.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::nemesis::{FaultKind, FaultRecord};

/// Violations kept with their details per phase and kind; past this only
/// counted, so one flood does not hide what later phases found.
const DETAILS_KEPT: usize = 10;

/// A broken invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    /// An acknowledged revocation is not in Redis.
    Lost,
    /// `Check` said "not revoked" about a token whose `Revoke` was OK.
    CheckAfterAck,
    /// `Revoke` answered OK though sent and answered during a Redis outage.
    FalseOk,
    /// A `Revoke` or `Check` failed with something other than UNAVAILABLE,
    /// not explained by a fault of the replica asked.
    UnexpectedError,
    /// A subscriber allowed a token whose change its cursor includes.
    AllowedPastCursor,
    /// A subscriber, connected for the propagation bound since the
    /// revocation was acknowledged, allowed the token.
    AllowedPastBound,
    /// During a Redis outage, a subscriber did not answer, or refused a
    /// token that was never revoked.
    OutageServing,
    /// A token that was never revoked was refused as revoked.
    FalseRevocation,
    /// A subscriber or replica disagreed with Redis (or was not connected
    /// and serving) when the convergence bound after the faults ran out.
    NotConverged,
    /// A subscriber accepted a token signed with one issuer's key that
    /// claims another issuer.
    ForgedAccepted,
    /// A replica acknowledged a keyless `Revoke` of such a token.
    ForgedRevoked,
    /// A replica sent a frame to a gateway too old to enforce the claim
    /// cut-offs in force.
    OutdatedServed,
    /// A subscription made after a revocation was acknowledged was
    /// answered with a filter without it.
    SnapshotBehindAck,
}

impl ViolationKind {
    /// A short label for the table.
    pub fn label(self) -> &'static str {
        match self {
            ViolationKind::Lost => "lost",
            ViolationKind::CheckAfterAck => "check-after-ack",
            ViolationKind::FalseOk => "false-ok",
            ViolationKind::UnexpectedError => "unexpected-error",
            ViolationKind::AllowedPastCursor => "allowed-past-cursor",
            ViolationKind::AllowedPastBound => "allowed-past-bound",
            ViolationKind::OutageServing => "outage-serving",
            ViolationKind::FalseRevocation => "false-revocation",
            ViolationKind::NotConverged => "not-converged",
            ViolationKind::ForgedAccepted => "forged-accepted",
            ViolationKind::ForgedRevoked => "forged-revoked",
            ViolationKind::OutdatedServed => "outdated-served",
            ViolationKind::SnapshotBehindAck => "snapshot-behind-ack",
        }
    }
}

/// One broken invariant, where and about what.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The phase it was seen in.
    pub phase: usize,
    /// Which invariant.
    pub kind: ViolationKind,
    /// The component that broke it (`gateway-2`, `agent-0`, `redis`...).
    pub who: String,
    /// The token, the answer, the times.
    pub detail: String,
}

/// What a check was about, for the counters.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// A key read from Redis directly.
    Redis,
    /// A `Check` RPC by a load client.
    Rpc,
    /// A subscriber asked about a token.
    Subscriber,
    /// A subscriber asked during a Redis outage.
    Outage,
}

/// Counters shared by every part of the run.
#[derive(Default)]
pub struct Tally {
    phase: AtomicUsize,
    checks: [AtomicU64; 4],
    violations: Mutex<Vec<Violation>>,
    /// (who, what) already reported through [`Tally::violation_once`].
    reported: Mutex<HashSet<(String, String)>>,
    /// Details kept per (phase, kind).
    kept: Mutex<BTreeMap<(usize, ViolationKind), usize>>,
    violation_count: AtomicU64,
    by_kind: Mutex<BTreeMap<ViolationKind, u64>>,
}

impl Tally {
    /// Attributes what follows to `phase`.
    pub fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// The current phase.
    pub fn phase(&self) -> usize {
        self.phase.load(Ordering::Relaxed)
    }

    /// Counts `n` checks of `kind`.
    pub fn checked(&self, kind: Check, n: u64) {
        self.checks[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Checks of `kind` so far.
    pub fn checks(&self, kind: Check) -> u64 {
        self.checks[kind as usize].load(Ordering::Relaxed)
    }

    /// All checks so far.
    pub fn all_checks(&self) -> u64 {
        self.checks.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Records a violation in the current phase (and prints it at once, so
    /// a long run shows trouble as it happens).
    pub fn violation(&self, kind: ViolationKind, who: &str, detail: String) {
        let phase = self.phase();
        self.violation_count.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_kind).entry(kind).or_default() += 1;
        let kept = {
            let mut kept = lock(&self.kept);
            let kept = kept.entry((phase, kind)).or_default();
            *kept += 1;
            *kept
        };
        if kept <= DETAILS_KEPT {
            println!("VIOLATION phase {phase} {} {who}: {detail}", kind.label());
            lock(&self.violations).push(Violation {
                phase,
                kind,
                who: who.to_owned(),
                detail,
            });
        }
    }

    /// Records a violation unless one was already recorded for `who` and
    /// `what` (a token's jti): a gateway caught allowing a token is
    /// reported once, by whichever check caught it first.
    pub fn violation_once(&self, kind: ViolationKind, who: &str, what: &str, detail: String) {
        let first = lock(&self.reported).insert((who.to_owned(), what.to_owned()));
        if first {
            self.violation(kind, who, detail);
        }
    }

    /// Violations so far (including those whose details were not kept).
    pub fn violation_count(&self) -> u64 {
        self.violation_count.load(Ordering::Relaxed)
    }

    /// The violations kept.
    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.violations).clone()
    }

    /// Violations by kind, all of them counted.
    pub fn violations_by_kind(&self) -> BTreeMap<ViolationKind, u64> {
        lock(&self.by_kind).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One phase's line in the table.
#[derive(Debug, Clone, Default)]
pub struct PhaseRow {
    /// 1-based.
    pub index: usize,
    /// The faults injected.
    pub faults: Vec<FaultRecord>,
    /// From the phase's start to the end of its checks.
    pub took: Duration,
    /// Revokes answered OK.
    pub acked: usize,
    /// Revokes that failed; of those, found stored afterwards.
    pub unknown: usize,
    /// Unknown revokes found in Redis afterwards.
    pub unknown_stored: usize,
    /// Revokes sent during a Redis outage and refused.
    pub refused_in_outage: usize,
    /// Failed revokes by gRPC code.
    pub errors: BTreeMap<String, usize>,
    /// Checks made during the phase.
    pub checks: u64,
    /// From the end of the faults until everything agreed with Redis;
    /// `None` if it did not within the bound.
    pub converged_in: Option<Duration>,
    /// The component that agreed last.
    pub slowest: String,
    /// Violations found during the phase.
    pub violations: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed of the run's random choices.
    pub seed: u64,
    /// What ran: replicas, subscribers, Redis settings.
    pub setup: String,
    /// One per phase.
    pub rows: Vec<PhaseRow>,
    /// Checks by kind: Redis, RPC, subscriber, during outages.
    pub checks: [u64; 4],
    /// Total violations (details of the first ones in `violations`).
    pub violation_count: u64,
    /// Total violations by kind.
    pub violations_by_kind: BTreeMap<ViolationKind, u64>,
    /// The violations kept.
    pub violations: Vec<Violation>,
    /// The whole run.
    pub took: Duration,
}

impl Report {
    /// Faults injected, by kind.
    pub fn faults(&self) -> BTreeMap<FaultKind, usize> {
        let mut faults = BTreeMap::new();
        for fault in self.rows.iter().flat_map(|r| &r.faults) {
            *faults.entry(fault.kind).or_default() += fault.count;
        }
        faults
    }

    /// Revokes acknowledged in the whole run.
    pub fn acked(&self) -> usize {
        self.rows.iter().map(|r| r.acked).sum()
    }

    /// Revokes with an unknown outcome in the whole run.
    pub fn unknown(&self) -> usize {
        self.rows.iter().map(|r| r.unknown).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos run, seed {} ({})", self.seed, self.setup)?;
        let faults: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let each: Vec<String> = row.faults.iter().map(ToString::to_string).collect();
                each.join(" + ")
            })
            .collect();
        let width = faults.iter().map(String::len).max().unwrap_or(0).max(6);
        writeln!(
            f,
            "{:>5}  {:<width$} {:>6} {:>7} {:>13} {:>8} {:>7} {:>8} {:>19} {:>10}",
            "phase",
            "faults",
            "secs",
            "acked",
            "unknown(kept)",
            "refused",
            "errors",
            "checks",
            "converged",
            "violations"
        )?;
        for (row, faults) in self.rows.iter().zip(&faults) {
            let errors: usize = row.errors.values().sum();
            let converged = row.converged_in.map_or("NO".to_owned(), |d| {
                format!("{:.2}s {}", d.as_secs_f64(), row.slowest)
            });
            writeln!(
                f,
                "{:>5}  {:<width$} {:>6.1} {:>7} {:>13} {:>8} {:>7} {:>8} {:>19} {:>10}",
                row.index,
                faults,
                row.took.as_secs_f64(),
                row.acked,
                format!("{}({})", row.unknown, row.unknown_stored),
                row.refused_in_outage,
                errors,
                row.checks,
                converged,
                row.violations,
            )?;
        }
        let mut totals = String::new();
        for (kind, count) in self.faults() {
            let _ = write!(totals, "{} {count}, ", kind.label());
        }
        writeln!(f, "faults: {}", totals.trim_end_matches(", "))?;
        let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
        for (code, count) in self.rows.iter().flat_map(|r| &r.errors) {
            *errors.entry(code).or_default() += count;
        }
        writeln!(
            f,
            "revocations: {} acknowledged, {} unknown ({} found stored); failures by code {:?}",
            self.acked(),
            self.unknown(),
            self.rows.iter().map(|r| r.unknown_stored).sum::<usize>(),
            errors,
        )?;
        writeln!(
            f,
            "checks: {} Redis reads, {} Check RPCs, {} subscriber answers, {} during Redis outages",
            self.checks[Check::Redis as usize],
            self.checks[Check::Rpc as usize],
            self.checks[Check::Subscriber as usize],
            self.checks[Check::Outage as usize],
        )?;
        write!(f, "violations: {}", self.violation_count)?;
        for (kind, count) in &self.violations_by_kind {
            write!(f, ", {} {count}", kind.label())?;
        }
        writeln!(f, "; took {:.1}s", self.took.as_secs_f64())?;
        for violation in self.violations.iter().take(60) {
            writeln!(
                f,
                "  phase {} {} {}: {}",
                violation.phase,
                violation.kind.label(),
                violation.who,
                violation.detail
            )?;
        }
        Ok(())
    }
}
