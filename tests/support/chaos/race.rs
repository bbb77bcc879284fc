//! The confirm-race fault: a gateway's `Check` answering "not revoked"
//! arrives after the delta revoking the same token.
//!
//! The gateways in this process confirm through proxies of their own
//! (`GatewayConfig::confirm_endpoints`), which can hold the replicas'
//! replies back. False positives are rare
//! in a filter far below the 10,000 entries it is sized for at least, so
//! the fault first revokes [`load::FILL`] short-lived tokens: near its
//! capacity about one token in 2,000 is a "maybe". Then each round, on one
//! gateway:
//!
//! 1. find a token its filter calls "maybe" although it is not revoked (a
//!    bloom false positive), so `check` asks for a confirm;
//! 2. hold its confirm proxies' replies and send the confirm: the replica
//!    answers "not revoked" at once, and the answer waits at the proxy;
//! 3. revoke the token through a replica and wait until the gateway's
//!    cursor includes the change (the delta is applied);
//! 4. release the answer, then ask the gateway from memory.
//!
//! From step 3 on the gateway holds the change, so it must deny the token
//! until it expires; caching the late "not revoked" would allow it. A
//! round counts as staged when the delta was applied while the answer was
//! held (within [`DELTA_WAIT`]).

use std::time::Duration;

use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::Rng;
use revocd::gateway::{Gateway, Verdict};
use tokio::time::Instant;

use super::issuer::Issuer;
use super::ledger::{HighWater, Token};
use super::load::{self, lazy_client, revoke};
use super::nemesis::Stage;
use super::proxy::Proxy;
use super::report::ViolationKind;
use super::testbed::{Answer, Subscriber};

/// Longest wait for the delta, the answer held meanwhile (the proxies let
/// it go after 2 s anyway, under the gateways' 3 s call timeout).
const DELTA_WAIT: Duration = Duration::from_millis(1_500);
/// Time the replica gets to answer the confirm before the revocation is
/// sent (its answer is then "not revoked").
const SETTLE: Duration = Duration::from_millis(50);
/// Rounds per gateway; the gateways run theirs at the same time.
const ROUNDS: usize = 3;
/// Candidate tokens tried for a false positive, at most.
const MAX_TRIES: usize = 200_000;

/// How a round went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The delta was applied while the "not revoked" answer was held.
    Staged,
    /// Not staged: no false positive, no acknowledgement, or a delta late.
    Missed,
}

/// Injects the fault: [`ROUNDS`] rounds on every gateway in this process.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng) -> (usize, String) {
    let bed = stage.bed;
    load::fill(stage, "race").await;
    // The gateways apply the fill (and rebuild their filters) meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rounds = bed
        .subscribers
        .iter()
        .filter(|s| s.in_process())
        .enumerate()
        .map(|(n, subscriber)| {
            let replica = rng.random_range(0..bed.replica_addresses.len());
            rounds_on(stage, subscriber, n, replica)
        });
    let outcomes: Vec<Round> = join_all(rounds).await.into_iter().flatten().collect();
    let staged = outcomes.iter().filter(|r| **r == Round::Staged).count();
    let detail = format!("{staged} of {} rounds staged", outcomes.len());
    (outcomes.len(), detail)
}

/// The rounds on one gateway, revoking through replica `replica`.
async fn rounds_on(
    stage: &Stage<'_>,
    subscriber: &Subscriber,
    n: usize,
    replica: usize,
) -> Vec<Round> {
    let Some(gateway) = subscriber.gateway() else {
        return Vec::new();
    };
    let mut client = lazy_client(stage.bed.replica_addresses[replica]);
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let label = format!("p{}-race-g{n}-{round}", stage.phase);
        let Some(token) = false_positive(gateway, &label) else {
            outcomes.push(Round::Missed);
            continue;
        };
        let outcome = race(stage, subscriber, gateway, &mut client, replica, token).await;
        outcomes.push(outcome);
    }
    outcomes
}

/// One round with `token`, a "maybe" of `gateway`'s filter.
async fn race(
    stage: &Stage<'_>,
    subscriber: &Subscriber,
    gateway: &Gateway,
    client: &mut crate::support::Client,
    replica: usize,
    token: Token,
) -> Round {
    let Verdict::Confirm(claims) = gateway.check(&token.jwt) else {
        return Round::Missed;
    };
    let proxies = &subscriber.confirm_proxies;
    proxies.iter().for_each(Proxy::hold);
    let confirming = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.confirm(claims).await }
    });
    tokio::time::sleep(SETTLE).await;
    let attempt = revoke(client, replica, token.clone()).await;
    let entry = stage.ledger.record(stage.phase, attempt);
    let Some(position) = entry.and_then(|e| e.position) else {
        proxies.iter().for_each(Proxy::release);
        let _ = confirming.await;
        return Round::Missed;
    };
    let deadline = Instant::now() + DELTA_WAIT;
    let holds = || {
        let mut held = HighWater::default();
        held.raise(
            &gateway
                .view()
                .map(|v| v.cursor().to_owned())
                .unwrap_or_default(),
        );
        held.covers(position)
    };
    while !holds() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let staged = holds() && !confirming.is_finished();
    proxies.iter().for_each(Proxy::release);
    let _ = confirming.await;
    // Judged as the monitor judges "by position": the gateway reports the
    // change, so it must deny the token.
    let answer = subscriber.ask(&token).await;
    if holds() && answer == Answer::Allow {
        let detail = format!(
            "allowed {} at {position:?} within its cursor: a \"not revoked\" confirm, answered \
             before the revocation, was delivered after its delta",
            token.jti(),
        );
        let tally = stage.tally;
        tally.violation_once(
            ViolationKind::AllowedPastCursor,
            &subscriber.name,
            token.jti(),
            detail,
        );
    }
    if staged {
        Round::Staged
    } else {
        Round::Missed
    }
}

/// A token of issuer A, never revoked, that `gateway`'s filter calls
/// "maybe"; jtis start with `label`.
fn false_positive(gateway: &Gateway, label: &str) -> Option<Token> {
    // The token itself is checked: its `exp` picks the filter slice.
    (0..MAX_TRIES).find_map(|n| {
        let token = Token::of(Issuer::A, "chaos-race", &format!("{label}-{n}"));
        matches!(
            gateway.check_claims(token.claims.clone()),
            Verdict::Confirm(_)
        )
        .then_some(token)
    })
}
