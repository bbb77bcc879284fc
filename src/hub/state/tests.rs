use std::time::Duration;

use super::*;
use crate::filter::Digest;
use crate::gateway::FilterView;
use crate::time::{unix_now, Clock};

fn hub() -> HubState {
    loaded(HubConfig {
        min_capacity: 1_000,
        slice_seconds: 10,
        clock: Clock::tokio(),
        ..HubConfig::default()
    })
}

/// A hub of `config` that has loaded an empty log.
fn loaded(config: HubConfig) -> HubState {
    let mut hub = HubState::new(DigestKey::random(), config);
    hub.install(Loading {
        cursor: String::new(),
        tokens: TokenDigests::default(),
        live: LiveSet::default(),
        history: History::new(hub.config.history, None),
    });
    hub
}

/// A subscription of this build's protocol.
fn current() -> SubscribeParams {
    SubscribeParams {
        protocol: crate::snapshot::STREAM_PROTOCOL,
        ..SubscribeParams::default()
    }
}

/// The token's `exp` when its revocation is kept until `keep_until`.
fn exp(hub: &HubState, keep_until: i64) -> Option<i64> {
    Some(keep_until - hub.config.bounds.leeway)
}

fn revoked(jti: &str, keep_until: i64, cursor: u64) -> LoggedChange {
    LoggedChange {
        cursor: cursor.to_string(),
        logged_at_ms: 0,
        change: Change::Revoked {
            issuer: "iss".into(),
            jti: jti.into(),
            keep_until,
        },
    }
}

fn decoded_view(hub: &HubState) -> FilterView {
    let parts: Vec<pb::Snapshot> = hub
        .snapshot_frames()
        .into_iter()
        .map(|frame| match frame.update {
            Some(Update::Snapshot(part)) => part,
            other => panic!("not a snapshot part: {other:?}"),
        })
        .collect();
    FilterView::from_snapshot(&parts).expect("a decodable snapshot")
}

#[test]
fn a_gateway_copy_answers_exactly_as_the_server_filter() {
    let mut hub = hub();
    let now = unix_now();
    hub.apply(
        (0..5_000)
            .map(|i| revoked(&i.to_string(), now + 600, i))
            .collect(),
    );
    let view = decoded_view(&hub);
    let exp = exp(&hub, now + 600);
    for _ in 0..100_000 {
        let digest = Digest(rand::random());
        assert_eq!(
            view.may_be_revoked(&digest, exp),
            hub.filter.contains(Some(now + 600), &digest)
        );
    }
    let key = hub.digest_key.clone();
    assert!((0..5_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()), exp)));
    assert_eq!(view.filter().to_bytes(), hub.filter.to_bytes());
}

#[test]
fn snapshots_are_split_into_parts_that_reassemble() {
    let mut hub = hub();
    hub.config.snapshot_part_bytes = 700;
    let now = unix_now();
    hub.apply(
        (0..2_000)
            .map(|i| revoked(&i.to_string(), now + 600, i))
            .collect(),
    );
    assert!(hub.snapshot_frames().len() > 3);
    let view = decoded_view(&hub);
    let key = hub.digest_key.clone();
    let exp = exp(&hub, now + 600);
    assert!((0..2_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()), exp)));
}

#[tokio::test]
async fn a_snapshot_of_more_parts_than_queue_slots_streams_whole_then_deltas_follow() {
    use tokio_stream::StreamExt;
    let mut hub = hub();
    hub.config.snapshot_part_bytes = 700;
    hub.config.subscriber_buffer = 2;
    let now = unix_now();
    hub.apply(
        (0..2_000)
            .map(|i| revoked(&i.to_string(), now + 600, i))
            .collect(),
    );
    let parts = hub.snapshot_frames().len();
    assert!(parts > hub.config.subscriber_buffer, "{parts} parts");
    let mut updates = hub.subscribe(current()).expect("subscribed");
    let mut received = Vec::new();
    for _ in 0..parts {
        match updates.next().await {
            Some(Ok(pb::FilterUpdate {
                update: Some(Update::Snapshot(part)),
            })) => received.push(part),
            other => panic!("expected a snapshot part, got {other:?}"),
        }
    }
    let view = FilterView::from_snapshot(&received).expect("parts in order");
    let key = hub.digest_key.clone();
    let exp = exp(&hub, now + 600);
    assert!((0..2_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()), exp)));
    assert!(
        matches!(
            updates.next().await,
            Some(Ok(pb::FilterUpdate {
                update: Some(Update::Heartbeat(_))
            }))
        ),
        "a live hub vouches for the snapshot at once"
    );

    hub.apply(vec![
        revoked("a", now + 600, 2_000),
        revoked("b", now + 600, 2_001),
    ]);
    match updates.next().await {
        Some(Ok(pb::FilterUpdate {
            update: Some(Update::Delta(delta)),
        })) => {
            assert!(
                delta.digests.is_empty(),
                "protocol 3 sends digests by slice"
            );
            assert_eq!(delta.slices.len(), 1);
            let digests: Vec<&[u8]> = delta.slices[0].digests.chunks(16).collect();
            assert_eq!(
                digests,
                [&key.token("iss", "a").0[..], &key.token("iss", "b").0[..]]
            );
            assert_eq!(delta.cursor, "2001");
        }
        other => panic!("expected the delta, got {other:?}"),
    }
}

/// The kinds of the frames queued for a subscriber, in order.
fn queued(updates: &mut Updates) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    while let Ok(Outgoing::Frames(frames)) = updates.queue.try_recv() {
        kinds.extend(frames.iter().map(|frame| match frame.update {
            Some(Update::Snapshot(_)) => "snapshot",
            Some(Update::Delta(_)) => "delta",
            Some(Update::Heartbeat(_)) => "heartbeat",
            None => "empty",
        }));
    }
    kinds
}

fn tail(entries: Vec<LoggedChange>, caught_up: bool) -> Event {
    Event::Tail { entries, caught_up }
}

#[tokio::test(start_paused = true)]
async fn no_heartbeat_vouches_for_a_reload_in_progress() {
    let mut hub = hub();
    let mut updates = hub.subscribe(current()).unwrap();
    assert_eq!(queued(&mut updates).last(), Some(&"heartbeat"));
    // A reload begins (after a Redis blip): pages arrive, nothing of
    // the log is applied meanwhile.
    hub.on_event(Event::LoadStarted(crate::store::LogTail {
        head: "9".into(),
        entries: Vec::new(),
        start: None,
    }));
    hub.on_event(Event::LoadPage(Vec::new()));
    hub.on_tick();
    assert_eq!(queued(&mut updates), Vec::<&str>::new());
    assert_eq!(
        hub.subscribe(current()).err(),
        Some(SubscribeError::Lagging)
    );
    hub.on_event(Event::LoadDone);
    hub.on_tick();
    let kinds = queued(&mut updates);
    assert_eq!(kinds.first(), Some(&"snapshot"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"heartbeat"), "{kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lost_log_stops_heartbeats_at_once() {
    let mut hub = hub();
    let mut updates = hub.subscribe(current()).unwrap();
    queued(&mut updates);
    hub.on_event(Event::Lost);
    hub.on_tick();
    assert_eq!(queued(&mut updates), Vec::<&str>::new());
    assert_eq!(
        hub.subscribe(current()).err(),
        Some(SubscribeError::Lagging)
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_stays_behind_the_head_stops_heartbeats() {
    let mut hub = hub();
    let now = unix_now();
    let mut updates = hub.subscribe(current()).unwrap();
    queued(&mut updates);
    // Whole batches, one after another: the follower is catching up.
    for i in 0..4u64 {
        tokio::time::advance(FOLLOWER_SILENCE / 3).await;
        hub.on_event(tail(vec![revoked(&i.to_string(), now + 600, i)], false));
    }
    hub.on_tick();
    assert_eq!(queued(&mut updates), ["delta"; 4]);
    hub.on_event(tail(vec![revoked("head", now + 600, 9)], true));
    hub.on_tick();
    assert_eq!(queued(&mut updates), ["delta", "heartbeat"]);
}

#[test]
fn memory_follows_the_live_slices_under_steady_churn() {
    let mut hub = hub();
    const LIVE: i64 = 2_000;
    let start = unix_now();
    // Ten revocations a (virtual) second, each kept LIVE seconds: the
    // live set reaches 10·LIVE, then as many expire as arrive. Returns the
    // most bits the filter had on the way.
    let churn = |hub: &mut HubState, from: i64, to: i64| {
        let mut most_bits = 0;
        for t in from..to {
            let entries = (0..10)
                .map(|i| revoked(&format!("{t}-{i}"), start + t + LIVE, t as u64))
                .collect();
            hub.apply(entries);
            hub.drop_expired(start + t);
            hub.rate = 10.0;
            most_bits = most_bits.max(hub.filter.bits());
        }
        most_bits
    };
    let warm = churn(&mut hub, 0, LIVE);
    let generation = hub.generation;
    let later = churn(&mut hub, LIVE, 4 * LIVE);
    assert!(
        later <= warm * 11 / 10,
        "the filter grew under churn: {warm} then {later} bits"
    );
    assert_eq!(hub.generation, generation, "expiry never rebuilds");
    let slices = hub.filter.slices().count() as i64;
    assert!(slices <= LIVE / 10 + 1, "{slices} slices");
}

#[test]
fn expired_slices_leave_the_filter_whole_without_a_new_generation() {
    let mut hub = hub();
    let now = unix_now();
    hub.apply(
        (0..20_000)
            .map(|i| revoked(&i.to_string(), now + 5 + i as i64 % 100, i))
            .collect(),
    );
    let generation = hub.generation;
    let key = hub.digest_key.clone();
    assert!(hub
        .filter
        .contains(Some(now + 5 + 7), &key.token("iss", "7")));
    let slices = hub.filter.slices().count();
    assert!(slices >= 10, "{slices} slices");

    // Up to the end of the slice of `now + 50`: about half the slices go.
    let dropped = hub.drop_expired((now + 50).div_euclid(10) * 10);
    assert!(dropped > 0 && dropped < slices, "{dropped} of {slices}");
    assert!(!hub.filter.contains(Some(now + 5), &key.token("iss", "0")));
    assert!(hub
        .filter
        .contains(Some(now + 104), &key.token("iss", "99")));
    hub.drop_expired(now + 200);
    assert_eq!((hub.filter.slices().count(), hub.filter.bits()), (0, 0));
    assert_eq!(hub.generation, generation, "no new generation");
}

#[test]
fn an_overfilling_slice_opens_filters_and_stays_under_one_and_a_half_times_the_target_rate() {
    let mut hub = hub();
    let now = unix_now();
    let target = hub.config.fp_rate;
    for batch in 0..100u64 {
        let entries = (0..1_000)
            .map(|i| revoked(&format!("{batch}-{i}"), now + 600, batch * 1_000 + i))
            .collect();
        hub.apply(entries);
        let rate = hub.filter.estimated_fp_rate();
        assert!(
            rate <= 1.5 * target,
            "rate {rate} after {} entries",
            (batch + 1) * 1_000
        );
    }
    let slice = hub.filter.slice(hub.filter.slice_of(now + 600)).unwrap();
    assert!(
        slice.filters().len() <= 8,
        "{} filters",
        slice.filters().len()
    );
    assert_eq!(hub.filter.entries(), 100_000);
}

#[tokio::test(start_paused = true)]
async fn ticks_drop_revocations_once_the_clock_passes_their_end_and_date_heartbeats_by_it() {
    let mut hub = hub();
    let clock = hub.config.clock;
    let now = clock.now();
    let mut updates = hub.subscribe(current()).unwrap();
    queued(&mut updates);
    let entries = vec![revoked("short", now + 5, 1), revoked("long", now + 600, 2)];
    hub.on_event(tail(entries, true));
    hub.on_tick();
    assert_eq!(hub.filter.slices().count(), 2);
    let short_ends = (now + 5).div_euclid(10) * 10 + 10;
    tokio::time::advance(Duration::from_secs((short_ends - now - 1) as u64)).await;
    hub.on_event(tail(Vec::new(), true));
    hub.on_tick();
    assert_eq!(hub.filter.slices().count(), 2, "dropped before its end");
    tokio::time::advance(Duration::from_secs(2)).await;
    hub.on_event(tail(Vec::new(), true));
    hub.on_tick();
    assert_eq!(hub.filter.slices().count(), 1, "kept past its end");
    let mut sent_at = Vec::new();
    while let Ok(Outgoing::Frames(frames)) = updates.queue.try_recv() {
        for frame in frames.iter() {
            if let Some(Update::Heartbeat(heartbeat)) = &frame.update {
                sent_at.push(heartbeat.server_time_ms);
            }
        }
    }
    assert_eq!(sent_at.last(), Some(&clock.now_ms()), "{sent_at:?}");
}

fn cut(claim: &str, value: &str, not_before: i64, cursor: u64) -> LoggedChange {
    LoggedChange {
        cursor: cursor.to_string(),
        logged_at_ms: 0,
        change: Change::Cut {
            issuer: "iss".into(),
            claim: claim.into(),
            value: value.into(),
            not_before,
            keep_until: unix_now() + 600,
        },
    }
}

#[tokio::test(start_paused = true)]
async fn claim_cutoffs_travel_apart_from_subject_ones() {
    let mut hub = hub();
    let mut new = hub.subscribe(current()).unwrap();
    queued(&mut new);
    hub.on_event(tail(vec![cut("sub", "alice", 10, 1)], true));
    assert_eq!(queued(&mut new), ["delta"]);
    hub.on_event(tail(vec![cut("sid", "s-1", 20, 2)], true));
    let Ok(Outgoing::Frames(frames)) = new.queue.try_recv() else {
        panic!("no delta for the current gateway");
    };
    let Some(Update::Delta(delta)) = &frames[0].update else {
        panic!("not a delta: {frames:?}");
    };
    let key = hub.digest_key.clone();
    assert!(delta.subjects.is_empty());
    assert_eq!(delta.claims.len(), 1);
    assert_eq!(delta.claims[0].claim, "sid");
    assert_eq!(delta.claims[0].digest, key.claim("iss", "sid", "s-1").0);
    let view = decoded_view(&hub);
    assert_eq!(view.subject_cutoff(&key.subject("iss", "alice")), Some(10));
    assert_eq!(
        view.claim_cutoff("sid", &key.claim("iss", "sid", "s-1")),
        Some(20)
    );
    assert_eq!(
        view.claim_cutoff("sid", &key.claim("iss", "sid", "alice")),
        None
    );
    // Resuming from before the cut-off replays it from the history.
    let resumed = hub
        .subscribe(SubscribeParams {
            cursor: "1".into(),
            generation: hub.generation,
            ..current()
        })
        .unwrap();
    let mut resumed = resumed;
    let Ok(Outgoing::Frames(frames)) = resumed.queue.try_recv() else {
        panic!("no frames on resume");
    };
    let Some(Update::Delta(replayed)) = &frames[0].update else {
        panic!("not resumed with a delta: {frames:?}");
    };
    assert_eq!(replayed.claims.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn gateways_of_older_protocols_are_refused_with_the_reason() {
    let mut hub = hub();
    for protocol in 0..crate::snapshot::STREAM_PROTOCOL {
        let old = SubscribeParams {
            protocol,
            ..SubscribeParams::default()
        };
        let refused = hub.subscribe(old).err();
        assert_eq!(
            refused,
            Some(SubscribeError::Outdated),
            "protocol {protocol}"
        );
    }
    assert!(SubscribeError::Outdated.to_string().contains("protocol 3"));
    assert!(hub.subscribe(current()).is_ok());
}

/// A burst into one slice before any rate is known opens filter after
/// filter; their hash functions stay within what a gateway decodes, and
/// the snapshot holding them decodes.
#[test]
fn a_long_chain_of_filters_stays_decodable() {
    let mut hub = hub();
    hub.config.min_capacity = 4;
    let now = unix_now();
    hub.apply(
        (0..70_000)
            .map(|i| revoked(&i.to_string(), now + 600, i))
            .collect(),
    );
    let slice = hub.filter.slice(hub.filter.slice_of(now + 600)).unwrap();
    assert!(
        slice.filters().len() > 10,
        "{} filters",
        slice.filters().len()
    );
    let most = slice
        .filters()
        .iter()
        .map(|f| f.filter.hash_functions())
        .max();
    assert!(most <= Some(crate::filter::MAX_HASH_FUNCTIONS), "{most:?}");
    let view = decoded_view(&hub);
    let key = hub.digest_key.clone();
    let exp = exp(&hub, now + 600);
    assert!((0..70_000)
        .step_by(97)
        .all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()), exp)));
}

/// A gateway's copy as the hub streams it: frames applied as
/// `gateway/watch.rs` applies them.
struct Follower {
    updates: Updates,
    assembler: crate::gateway::SnapshotAssembler,
    view: Option<FilterView>,
}

impl Follower {
    fn subscribe(hub: &mut HubState, held: Option<FilterView>) -> Self {
        let params = SubscribeParams {
            cursor: held
                .as_ref()
                .map(|v| v.cursor().to_owned())
                .unwrap_or_default(),
            generation: held.as_ref().map_or(0, FilterView::generation),
            ..current()
        };
        Follower {
            updates: hub.subscribe(params).expect("subscribed"),
            assembler: Default::default(),
            view: held,
        }
    }

    /// Applies what is queued; the error a gateway would reconnect on.
    fn catch_up(&mut self, now: i64) -> Result<(), crate::gateway::FrameError> {
        while let Ok(Outgoing::Frames(frames)) = self.updates.queue.try_recv() {
            for frame in frames.iter() {
                match &frame.update {
                    Some(Update::Snapshot(part)) => {
                        if let Some(view) = self.assembler.push(part.clone())? {
                            self.view = Some(view);
                        }
                    }
                    Some(Update::Delta(delta)) => {
                        let view = self.view.as_ref().expect("a snapshot first");
                        let next = view.with_delta(delta)?;
                        self.view = Some(next.without_expired(now).unwrap_or(next));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn view(&self) -> &FilterView {
        self.view.as_ref().expect("a view")
    }
}

/// The slices of `filter` as bytes, by number.
fn slice_bytes(filter: &SlicedFilter) -> Vec<(i64, Vec<Vec<u8>>)> {
    filter
        .slices()
        .map(|(number, slice)| {
            let filters = slice
                .filters()
                .iter()
                .map(|f| f.filter.to_bytes())
                .collect();
            (number, filters)
        })
        .collect()
}

/// Random revocations, ticks, restarts from disk, compactions and
/// fail-overs between two replicas of one deployment: a gateway never lacks a live
/// revocation, and a gateway that follows one replica from its snapshot
/// holds exactly that replica's filter (but for slices only it has kept,
/// all expired), across slice drops, overfilled slices and new slices.
#[tokio::test(start_paused = true)]
async fn a_gateway_copy_never_misses_a_revocation_and_matches_its_replica() {
    use rand::{Rng, SeedableRng};
    for seed in 0..12u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let key = DigestKey::random();
        // One clock: replicas a second apart would each rightly drop what
        // the other still holds, as the test's own clock would not.
        let clock = Clock::tokio();
        let replica = |key: &DigestKey| {
            let mut hub = HubState::new(
                key.clone(),
                HubConfig {
                    min_capacity: 4,
                    slice_seconds: 5,
                    clock,
                    ..HubConfig::default()
                },
            );
            hub.install(Loading {
                cursor: "0".into(),
                tokens: TokenDigests::default(),
                live: LiveSet::default(),
                history: History::new(10_000, Some("0".into())),
            });
            hub
        };
        let mut replicas = [replica(&key), replica(&key)];
        let (mut on, mut exact) = (0, true);
        let mut gateway = Follower::subscribe(&mut replicas[on], None);
        let start = replicas[on].config.clock.now();
        gateway.catch_up(start).expect("the first snapshot applies");
        let mut live: Vec<(String, i64)> = Vec::new();
        let mut cursor = 0u64;
        for step in 0..300 {
            let now = replicas[0].config.clock.now();
            match rng.random_range(0..21) {
                0..=11 => {
                    let batch: Vec<LoggedChange> = (0..rng.random_range(1..40))
                        .map(|_| {
                            cursor += 1;
                            let keep_until = now + rng.random_range(1..60);
                            live.push((format!("{seed}-{cursor}"), keep_until));
                            revoked(&format!("{seed}-{cursor}"), keep_until, cursor)
                        })
                        .collect();
                    for hub in &mut replicas {
                        hub.on_event(tail(batch.clone(), true));
                    }
                }
                12..=16 => {
                    tokio::time::advance(Duration::from_millis(rng.random_range(100..3_000))).await;
                    for hub in &mut replicas {
                        // The follower's read that reached the log's head.
                        hub.on_event(tail(Vec::new(), true));
                        hub.on_tick();
                    }
                }
                17 => {
                    // Restart from disk: the state file's round trip.
                    let saved = gateway.view().to_snapshot();
                    let restored = FilterView::from_whole_snapshot(saved).expect("reads back");
                    gateway = Follower::subscribe(&mut replicas[on], Some(restored));
                }
                18 => {
                    // A compaction: a new generation, snapshots for all.
                    replicas[rng.random_range(0..2)].compact();
                }
                _ => {
                    // Fail-over, resuming from the position held.
                    on = 1 - on;
                    exact = false;
                    let held = gateway.view.take();
                    gateway = Follower::subscribe(&mut replicas[on], held);
                }
            }
            let now = replicas[0].config.clock.now();
            if gateway.catch_up(now).is_err() {
                // What a gateway does on a frame it cannot take: a
                // snapshot of the replica it is on.
                gateway = Follower::subscribe(&mut replicas[on], None);
                gateway.catch_up(now).expect("a snapshot applies");
                exact = true;
            }
            live.retain(|(_, keep_until)| *keep_until > now);
            let view = gateway.view();
            for (jti, keep_until) in &live {
                let exp = Some(keep_until - replicas[0].config.bounds.leeway);
                let digest = key.token("iss", jti);
                assert!(
                    view.may_be_revoked(&digest, exp),
                    "seed {seed} step {step}: {jti} missed"
                );
            }
            if exact {
                let merged = FilterView::from_whole_snapshot(view.to_snapshot()).unwrap();
                let seconds = i64::from(replicas[on].filter.slice_seconds());
                let unexpired = |filter: &SlicedFilter| {
                    let mut slices = slice_bytes(filter);
                    slices.retain(|(number, _)| (number + 1) * seconds > now);
                    slices
                };
                assert_eq!(
                    unexpired(merged.filter()),
                    unexpired(&replicas[on].filter),
                    "seed {seed} step {step}"
                );
            }
        }
    }
}

/// A `Subscribe` command as [`super::super::FilterHub::subscribe`] sends
/// it, made when the log's head was at `through`.
fn subscribe_command(
    through: &str,
) -> (
    Command,
    tokio::sync::oneshot::Receiver<Result<Updates, SubscribeError>>,
) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = Command::Subscribe {
        params: current(),
        through: through.to_owned(),
        reply,
    };
    (command, answer)
}

#[tokio::test(start_paused = true)]
async fn a_subscription_is_answered_once_the_log_head_of_its_call_is_applied() {
    let mut hub = hub();
    let now = unix_now();
    hub.on_event(tail(vec![revoked("a", now + 600, 1)], true));
    // Revocation 2 was acknowledged before the call; the follower has not
    // read it yet.
    let (command, mut answer) = subscribe_command("2");
    hub.on_command(command);
    assert!(
        answer.try_recv().is_err(),
        "answered before the hub applied the head"
    );
    hub.on_tick();
    assert!(answer.try_recv().is_err(), "a tick answered it early");
    hub.on_event(tail(vec![revoked("b", now + 600, 2)], true));
    let updates = answer.try_recv().expect("answered").expect("subscribed");
    let mut follower = Follower {
        updates,
        assembler: Default::default(),
        view: None,
    };
    follower.catch_up(now).unwrap();
    let key = hub.digest_key.clone();
    let exp = exp(&hub, now + 600);
    assert!(
        follower.view().may_be_revoked(&key.token("iss", "b"), exp),
        "the snapshot lacks what was acknowledged before the call"
    );
    assert_eq!(follower.view().cursor(), "2");

    // At the head already: answered at once.
    let (command, mut answer) = subscribe_command("2");
    hub.on_command(command);
    assert!(matches!(answer.try_recv(), Ok(Ok(_))));
}

#[tokio::test(start_paused = true)]
async fn a_subscription_waiting_for_the_log_head_is_refused_when_the_log_is_lost() {
    let mut hub = hub();
    hub.on_event(tail(vec![revoked("a", unix_now() + 600, 1)], true));
    let (command, mut answer) = subscribe_command("7");
    hub.on_command(command);
    assert!(answer.try_recv().is_err());
    hub.on_event(Event::Lost);
    assert_eq!(
        answer.try_recv().expect("answered").err(),
        Some(SubscribeError::Lagging)
    );
    assert!(hub.waiting.is_empty());
}

/// A hub of `slice_seconds` and the default sizing that has loaded an
/// empty log.
fn loaded_hub(slice_seconds: u32) -> HubState {
    loaded(HubConfig {
        slice_seconds,
        clock: Clock::tokio(),
        ..HubConfig::default()
    })
}

/// One virtual second of the follower's life: `revocations` in batches of
/// a log read, each kept until `keep_until(n)` for the `n`-th revocation
/// made, then a read that reached the head and a tick.
async fn follow_one_second(
    hub: &mut HubState,
    made: &mut u64,
    revocations: u64,
    keep_until: impl Fn(u64) -> i64,
) {
    let batches = revocations.div_ceil(1_000);
    for _ in 0..batches {
        let entries = (0..revocations / batches)
            .map(|_| {
                *made += 1;
                revoked(&made.to_string(), keep_until(*made), *made)
            })
            .collect();
        hub.on_event(tail(entries, true));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    hub.on_event(tail(Vec::new(), true));
    hub.on_tick();
}

/// A burst of up to a million revocations into one slice, sized from a
/// rate that lags it, opens filter after filter; the hub compacts the
/// filter during the burst and once it ends, so a new gateway's snapshot
/// three seconds after the burst is within a quarter of the bits of a
/// filter sized for exactly its entries, wherever the burst stops, and
/// holds every revocation. (A burst that crosses into a new slice late
/// leaves that slice sized from the rate measured so far: the state
/// module's "Compaction" says so.)
#[tokio::test(start_paused = true)]
async fn a_burst_into_one_slice_is_compacted_to_near_the_well_sized_filter() {
    for burst_seconds in (12..60).step_by(3) {
        let mut hub = loaded_hub(300);
        // So that the smallest bursts are compacted too.
        hub.config.compaction_min_saving_bits = 1 << 18;
        let generation = hub.generation;
        // An hour ahead, at the start of a slice: the whole burst (under
        // a minute of expiry times) stays in it.
        let slice_start = (hub.config.clock.now() + 3_600).div_euclid(300) * 300 + 300;
        let mut made = 0;
        for second in 0..burst_seconds + 3 {
            let revocations = if second < burst_seconds { 20_000 } else { 0 };
            follow_one_second(&mut hub, &mut made, revocations, |_| slice_start + second).await;
        }
        let bits = 8.0 * hub.filter.to_bytes().len() as f64;
        let well_sized = RevocationFilter::bits_for(made as usize, hub.config.fp_rate) as f64;
        assert!(
            bits <= 1.25 * well_sized,
            "a {burst_seconds} s burst: {:.1} bits per entry, well sized {:.1}",
            bits / made as f64,
            well_sized / made as f64
        );
        assert_ne!(hub.generation, generation, "compacted");
        let view = decoded_view(&hub);
        let key = hub.digest_key.clone();
        let missed = (1..=made)
            .step_by(7)
            .filter(|n| !view.may_be_revoked(&key.token("iss", &n.to_string()), None))
            .count();
        assert_eq!(missed, 0, "a {burst_seconds} s burst");
    }
}

/// A rate ramping up from nothing (a new deployment's churn, with expiry
/// times spread over the token lifetime) outruns the averaged rate, so
/// slices chain, and the hub compacts a logarithmic number of times; once
/// the rate is known, slices ahead of now are partly filled, as their
/// sizing foresaw: that is no bloat, and the filter is never rebuilt.
#[tokio::test(start_paused = true)]
async fn churn_compacts_while_its_rate_ramps_up_and_never_once_steady() {
    let mut hub = loaded_hub(10);
    let start = unix_now();
    let mut made = 0;
    let mut churn = async |hub: &mut HubState, seconds: std::ops::Range<i64>| {
        let generation = hub.generation;
        for second in seconds {
            // Uniform over the next 600 s, by a stride coprime with 600.
            let keep_until = |n: u64| start + second + 1 + (n * 7 % 600) as i64;
            follow_one_second(hub, &mut made, 1_500, keep_until).await;
        }
        hub.generation - generation
    };
    let ramping = churn(&mut hub, 0..900).await;
    assert!((1..=7).contains(&ramping), "{ramping} compactions");
    let steady = churn(&mut hub, 900..1_500).await;
    assert!(hub.filter.entries() > 400_000, "{}", hub.filter.entries());
    assert_eq!(steady, 0, "rebuilt under steady churn");
}
