//! The fresh-subscriber fault: a gateway subscribing right after a
//! revocation was acknowledged through another replica, while the load
//! keeps every follower busy.
//!
//! Read your writes: what a subscription is answered with (the snapshot,
//! the deltas catching it up, then its first heartbeat) must hold every
//! revocation acknowledged before the call; otherwise the new gateway
//! allows the token until a later delta brings it. Each round revokes a
//! fresh token through one replica and, once that is acknowledged,
//! subscribes to another replica at once, applies those first frames as a
//! gateway does ([`SnapshotAssembler`], [`FilterView::with_delta`]) and
//! asks the view. A refusal (the replica loading, lagging, stopped) is no
//! violation; a view without the token is.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use revocd::gateway::{FilterView, SnapshotAssembler};
use revocd::pb::filter_update::Update;
use revocd::pb::SubscribeRequest;

use super::issuer::Issuer;
use super::ledger::{Outcome, Token};
use super::load::{lazy_client, revoke, subscriber_client};
use super::nemesis::{secs, Stage};
use super::report::{Check, ViolationKind};
use crate::support::Client;

/// Pause between two rounds.
const PAUSE: Duration = Duration::from_millis(40);
/// Longest a subscription may take to be answered, up to its first
/// heartbeat, before it counts as refused (a stopped replica never
/// answers).
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Injects the fault for `hold`.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let addresses = &stage.bed.replica_addresses;
    let mut writers: Vec<Client> = addresses.iter().map(|a| lazy_client(*a)).collect();
    let mut readers: Vec<Client> = addresses.iter().map(|a| subscriber_client(*a)).collect();
    let started = Instant::now();
    let (mut rounds, mut held, mut refused) = (0, 0, 0);
    while started.elapsed() < hold {
        rounds += 1;
        let writer = rng.random_range(0..addresses.len());
        // Another replica when there is one: its follower must have read
        // the change from the log before it answers.
        let reader = (writer + rng.random_range(1..addresses.len().max(2))) % addresses.len();
        let issuer = if rng.random() { Issuer::A } else { Issuer::B };
        let jti = format!("p{}-fresh-{rounds}-{}", stage.phase, rng.random::<u32>());
        let token = Token::of(issuer, "chaos-fresh", &jti);
        let attempt = revoke(&mut writers[writer], writer, token.clone()).await;
        stage.tally.checked(Check::Rpc, 1);
        let acked = matches!(attempt.outcome, Outcome::Acked(_));
        stage.ledger.record(stage.phase, attempt);
        if !acked {
            continue;
        }
        match first_view(&mut readers[reader]).await {
            None => refused += 1,
            Some(view) => {
                stage.tally.checked(Check::Subscriber, 1);
                let digest = view.digest_key().token(&token.claims.issuer, &jti);
                if view.may_be_revoked(&digest, token.claims.expires_at) {
                    held += 1;
                } else {
                    let detail = format!(
                        "a gateway subscribing after {jti} was acknowledged through replica-{writer} got a filter without it (cursor {:?})",
                        view.cursor()
                    );
                    stage.tally.violation(
                        ViolationKind::SnapshotBehindAck,
                        &format!("replica-{reader}"),
                        detail,
                    );
                }
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    let detail = format!(
        "{rounds} revoke-then-subscribe rounds in {}: {held} first filters held the revocation, {refused} subscriptions refused",
        secs(started.elapsed())
    );
    (rounds, detail)
}

/// Subscribes through `client` and applies what the subscription is
/// answered with, up to its first heartbeat, as a gateway does; `None`
/// when it is refused, ends, breaks or takes longer than [`ANSWER_WAIT`].
pub async fn first_view(client: &mut Client) -> Option<FilterView> {
    let request = SubscribeRequest {
        gateway_id: "chaos-fresh".into(),
        protocol: revocd::snapshot::STREAM_PROTOCOL,
        ..Default::default()
    };
    let answered = async {
        let mut stream = client.subscribe(request).await.ok()?.into_inner();
        let mut assembler = SnapshotAssembler::default();
        let mut view: Option<FilterView> = None;
        loop {
            let frame = stream.message().await.ok()??;
            match frame.update? {
                Update::Snapshot(part) => view = assembler.push(part).ok()?.or(view),
                Update::Delta(delta) => view = Some(view?.with_delta(&delta).ok()?),
                Update::Heartbeat(_) => return view,
            }
        }
    };
    tokio::time::timeout(ANSWER_WAIT, answered)
        .await
        .ok()
        .flatten()
}
