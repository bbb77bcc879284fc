//! The forged-issuer fault: tokens signed with issuer A's key that claim
//! issuer B ([`super::issuer`]). Every [`EVERY`], one new forgery is
//! asked of every subscriber, which must refuse it as invalid, and
//! revoked without an API key (proof of possession) through one replica
//! after the other, which must refuse it: accepted, it would let anyone
//! holding A's key revoke B's tokens. A forgery a replica acknowledged
//! goes to the ledger, as the revocation it stored.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::ledger::{Outcome, Token};
use super::load::{keyless_client, revoke};
use super::nemesis::{secs, Stage};
use super::report::{Check, ViolationKind};
use super::testbed::Answer;

/// Pause between two forgeries.
const EVERY: Duration = Duration::from_millis(250);

/// Injects the fault for `hold`.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let bed = stage.bed;
    let mut clients: Vec<_> = bed
        .replica_addresses
        .iter()
        .map(|a| keyless_client(*a))
        .collect();
    let started = Instant::now();
    let (mut forged, mut accepted, mut revoked) = (0, 0, 0);
    while started.elapsed() < hold {
        let jti = format!("p{}-forged-{forged}-{}", stage.phase, rng.random::<u32>());
        let token = Token::forged("chaos-forger", &jti);
        forged += 1;
        accepted += ask_everyone(stage, &token).await;
        let replica = forged % clients.len();
        let attempt = revoke(&mut clients[replica], replica, token).await;
        stage.tally.checked(Check::Rpc, 1);
        if let Outcome::Acked(cursor) = &attempt.outcome {
            revoked += 1;
            let detail = format!(
                "keyless Revoke of {jti} (signed with issuer A's key, claiming B) acknowledged, cursor {cursor:?}"
            );
            stage.tally.violation(
                ViolationKind::ForgedRevoked,
                &format!("replica-{replica}"),
                detail,
            );
            stage.ledger.record(stage.phase, attempt);
        }
        tokio::time::sleep(EVERY).await;
    }
    let detail = format!(
        "{forged} forgeries in {}: {accepted} accepted by subscribers, {revoked} revoked",
        secs(started.elapsed())
    );
    (forged, detail)
}

/// Asks every subscriber not held stopped; returns how many accepted the
/// forgery (each a violation).
async fn ask_everyone(stage: &Stage<'_>, token: &Token) -> usize {
    let mut accepted = 0;
    for subscriber in &stage.bed.subscribers {
        let frozen = subscriber.frozen.read().await;
        if *frozen {
            continue;
        }
        let answer = subscriber.ask_verified(token).await;
        stage.tally.checked(Check::Subscriber, 1);
        // Only a token that verified reaches the filter: a "maybe" (or an
        // agent's 503 for one it cannot confirm) is an acceptance too.
        let verified = match &answer {
            Answer::Allow | Answer::Maybe | Answer::Revoked => true,
            Answer::Unavailable(why) => why.starts_with("HTTP 503"),
            Answer::Refused(_) => false,
        };
        if verified {
            accepted += 1;
            let detail = format!(
                "{} (signed with issuer A's key, claiming B) accepted: {answer:?}",
                token.jti()
            );
            stage
                .tally
                .violation(ViolationKind::ForgedAccepted, &subscriber.name, detail);
        }
    }
    accepted
}
