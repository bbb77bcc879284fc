//! The outdated-gateway fault: a gateway of stream protocol 0, which
//! knows nothing of claim cut-offs, subscribes to one replica after the
//! other while the load cuts sessions off. Served a filter, it would let
//! every token of a cut-off session through, so once a session cut-off
//! has been acknowledged for the propagation bound, every replica must
//! refuse it (FAILED_PRECONDITION) or end its stream: any frame it is sent
//! after that, a heartbeat included (it keeps an old gateway fresh), is a
//! violation.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use revocd::pb::SubscribeRequest;
use tonic::Code;

use super::issuer::Issuer;
use super::ledger::{Rule, Token};
use super::load::{lazy_client, revoke_session, subscriber_client};
use super::nemesis::{secs, Stage};
use super::report::{Check, ViolationKind};

/// How long one subscription is followed before the next replica is tried.
const FOLLOW: Duration = Duration::from_millis(700);
/// Pause between two subscriptions.
const PAUSE: Duration = Duration::from_millis(50);

/// Injects the fault for `hold`.
pub async fn inject(stage: &Stage<'_>, rng: &mut StdRng, hold: Duration) -> (usize, String) {
    let bed = stage.bed;
    let cut_off = ensure_session_cut_off(stage, rng).await;
    let started = Instant::now();
    let (mut attempts, mut refused, mut frames) = (0, 0, 0);
    let mut replica = rng.random_range(0..bed.replica_addresses.len());
    while started.elapsed() < hold {
        replica = (replica + 1) % bed.replica_addresses.len();
        attempts += 1;
        let (was_refused, sent) = follow(stage, replica).await;
        refused += usize::from(was_refused);
        frames += sent;
        tokio::time::sleep(PAUSE).await;
    }
    let detail = format!(
        "{attempts} protocol-0 subscriptions in {}{cut_off}: {refused} refused, {frames} frames sent",
        secs(started.elapsed())
    );
    (attempts, detail)
}

/// Subscribes to `replica` as a protocol-0 gateway and reads for
/// [`FOLLOW`]; returns whether it was refused as outdated, and how many
/// frames came. Every frame that came once a session cut-off had been
/// acknowledged for the propagation bound is reported.
async fn follow(stage: &Stage<'_>, replica: usize) -> (bool, usize) {
    let who = format!("replica-{replica}");
    let mut client = subscriber_client(stage.bed.replica_addresses[replica]);
    let request = SubscribeRequest {
        gateway_id: "chaos-protocol-0".into(),
        protocol: 0,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + FOLLOW;
    let subscribed = tokio::time::timeout_at(deadline, client.subscribe(request)).await;
    let mut stream = match subscribed {
        Err(_elapsed) => return (false, 0),
        Ok(Err(status)) => return (is_outdated(&status), 0),
        Ok(Ok(stream)) => stream.into_inner(),
    };
    let mut frames = 0;
    loop {
        let message = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_elapsed) => return (false, frames),
            Ok(Err(status)) => return (is_outdated(&status), frames),
            Ok(Ok(None)) => return (false, frames),
            Ok(Ok(Some(message))) => message,
        };
        frames += 1;
        stage.tally.checked(Check::Subscriber, 1);
        if let Some(cut_at) = session_cut_since(stage) {
            let detail = format!(
                "sent a {} frame to a protocol-0 gateway {} after a session cut-off was acknowledged",
                frame_kind(&message),
                secs(cut_at.elapsed())
            );
            stage
                .tally
                .violation_once(ViolationKind::OutdatedServed, &who, "frame", detail);
        }
    }
}

/// Makes sure a session cut-off was acknowledged the propagation bound
/// ago, so the invariant applies from the first subscription: cuts one
/// off through a random replica when the run has none yet, and waits out
/// what is left of the bound (in the run's first phase). Says how long
/// that took.
async fn ensure_session_cut_off(stage: &Stage<'_>, rng: &mut StdRng) -> String {
    let started = Instant::now();
    if stage.ledger.first_acked(Rule::Session).is_none() {
        let replica = rng.random_range(0..stage.bed.replica_addresses.len());
        let mut client = lazy_client(stage.bed.replica_addresses[replica]);
        let jti = format!("p{}-outdated-{}", stage.phase, rng.random::<u32>());
        let token = Token::of(Issuer::A, "chaos-outdated", &jti);
        let attempt = revoke_session(&mut client, replica, token).await;
        stage.ledger.record(stage.phase, attempt);
    }
    let Some(acked) = stage.ledger.first_acked(Rule::Session) else {
        return " (no session cut-off could be made)".to_owned();
    };
    let ready = acked + stage.propagation_bound;
    if ready <= Instant::now() {
        return String::new();
    }
    tokio::time::sleep_until(ready.into()).await;
    format!(" (after {} for a session cut-off)", secs(started.elapsed()))
}

/// When the earliest session cut-off was acknowledged, if that was the
/// propagation bound ago or more (every session cut-off of the run lives
/// until the run ends).
fn session_cut_since(stage: &Stage<'_>) -> Option<Instant> {
    let acked = stage.ledger.first_acked(Rule::Session)?;
    (acked.elapsed() >= stage.propagation_bound).then_some(acked)
}

fn is_outdated(status: &tonic::Status) -> bool {
    status.code() == Code::FailedPrecondition
}

fn frame_kind(message: &revocd::pb::FilterUpdate) -> &'static str {
    use revocd::pb::filter_update::Update;
    match message.update {
        Some(Update::Snapshot(_)) => "snapshot",
        Some(Update::Delta(_)) => "delta",
        Some(Update::Heartbeat(_)) => "heartbeat",
        _ => "other",
    }
}
