//! The filter-burst fault: a burst of revocations into one expiry slice,
//! faster than the rate each replica sizes slices by, so its filter grows
//! into a chain of filters and is then rebuilt compact from the digests
//! it keeps: a new generation, a snapshot for every subscriber. The
//! testbed's replicas compact from a saving of 1 KiB
//! (`--filter-compaction-min-kib 1`), so a burst of [`BURST`] does it
//! wherever the slice was sized for fewer; a replica that measured a rate
//! high enough to size it for the burst has nothing to compact, and the
//! detail says how many rebuilt.
//!
//! Nothing of the burst may be lost on the way: every revocation of it is
//! in the ledger, so the monitor and the verification ask every subscriber
//! about it; and once a replica has rebuilt, a gateway subscribing to it
//! must find every acknowledged revocation of the burst in the first
//! filter it is answered with (a `snapshot-behind-ack` violation if not).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use revocd::pb::GetStatsRequest;

use super::fresh::first_view;
use super::issuer::Issuer;
use super::ledger::Token;
use super::load::{lazy_client, revoke_batch, subscriber_client, BATCH};
use super::nemesis::{secs, Stage};
use super::report::{Check, ViolationKind};
use crate::support::Client;

/// Revocations in one burst, in batches of [`BATCH`]: from a slice's
/// first small filter, a chain of about seven.
const BURST: usize = 8_000;
/// Longest wait for every replica to rebuild after the burst: builds are
/// at least 10 s apart, and a compaction comes on a tick.
const REBUILD_WAIT: Duration = Duration::from_secs(15);
/// Pause between two looks at the replicas' generations.
const POLL: Duration = Duration::from_millis(250);

/// Injects the fault: the burst, the wait for the rebuilds, a fresh
/// gateway's first filter from each replica that rebuilt.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng) -> (usize, String) {
    let addresses = &stage.bed.replica_addresses;
    let mut readers: Vec<Client> = addresses.iter().map(|a| lazy_client(*a)).collect();
    let before = generations(&mut readers).await;
    let through = rng.random_range(0..addresses.len());
    let mut writer = lazy_client(addresses[through]);
    let started = Instant::now();
    // Only wholly acknowledged batches are looked for in fresh filters;
    // the ledger holds every acknowledged item anyway.
    let mut acked: Vec<Token> = Vec::new();
    for batch in 0..BURST / BATCH {
        let issuer = if rng.random() { Issuer::A } else { Issuer::B };
        let tokens: Vec<Token> = (0..BATCH)
            .map(|n| {
                let jti = format!("p{}-burst-{batch}-{n}", stage.phase);
                Token::of(issuer, "chaos-burst", &jti)
            })
            .collect();
        let ok = revoke_batch(
            &mut writer,
            through,
            tokens.clone(),
            stage.ledger,
            stage.phase,
        )
        .await;
        stage.tally.checked(Check::Rpc, 1);
        if ok == tokens.len() {
            acked.extend(tokens);
        }
    }
    let burst_took = started.elapsed();

    let mut rebuilt = vec![false; addresses.len()];
    let deadline = Instant::now() + REBUILD_WAIT;
    while Instant::now() < deadline && rebuilt.contains(&false) {
        tokio::time::sleep(POLL).await;
        for (replica, now) in generations(&mut readers).await.into_iter().enumerate() {
            rebuilt[replica] |= matches!((before[replica], now), (Some(b), Some(n)) if b != n);
        }
    }

    let (mut answered, mut refused) = (0, 0);
    for (replica, address) in addresses.iter().enumerate() {
        if !rebuilt[replica] {
            continue;
        }
        let Some(view) = first_view(&mut subscriber_client(*address)).await else {
            refused += 1;
            continue;
        };
        answered += 1;
        stage.tally.checked(Check::Subscriber, 1);
        let key = view.digest_key();
        let missing: Vec<&str> = acked
            .iter()
            .filter(|t| {
                let digest = key.token(&t.claims.issuer, t.jti());
                !view.may_be_revoked(&digest, t.claims.expires_at)
            })
            .map(Token::jti)
            .collect();
        if let Some(first) = missing.first() {
            stage.tally.violation(
                ViolationKind::SnapshotBehindAck,
                &format!("replica-{replica}"),
                format!(
                    "after its filter was rebuilt, a new gateway's first filter lacks {} of the burst's {} acknowledged revocations ({first} …)",
                    missing.len(),
                    acked.len()
                ),
            );
        }
    }
    let detail = format!(
        "{BURST} revocations through replica-{through} in {} ({} in whole batches acknowledged); {} of {} replicas rebuilt their filter; {answered} new gateways' first filters checked, {refused} refused",
        secs(burst_took),
        acked.len(),
        rebuilt.iter().filter(|r| **r).count(),
        addresses.len(),
    );
    (BURST, detail)
}

/// Each replica's filter generation; `None` for a replica that does not
/// answer or is loading.
async fn generations(clients: &mut [Client]) -> Vec<Option<u64>> {
    let mut generations = Vec::with_capacity(clients.len());
    for client in clients {
        let stats = client.get_stats(GetStatsRequest {}).await;
        let generation = stats.ok().map(|s| s.into_inner().filter_generation);
        generations.push(generation.filter(|g| *g != 0));
    }
    generations
}
