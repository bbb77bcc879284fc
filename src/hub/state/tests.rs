use std::time::Duration;

use super::*;
use crate::filter::Digest;
use crate::gateway::FilterView;
use crate::time::{unix_now, Clock};

fn hub() -> HubState {
    let config = HubConfig {
        min_capacity: 1_000,
        clock: Clock::tokio(),
        ..HubConfig::default()
    };
    let mut hub = HubState::new(DigestKey::random(), config);
    hub.install(Loading {
        cursor: String::new(),
        live: LiveSet::default(),
        history: History::new(hub.config.history, None),
    });
    hub
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
    for _ in 0..100_000 {
        let digest = Digest(rand::random());
        assert_eq!(view.may_be_revoked(&digest), hub.filter.contains(&digest));
    }
    let key = hub.digest_key.clone();
    assert!((0..5_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()))));
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
    assert!((0..2_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()))));
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
    let mut updates = hub
        .subscribe(SubscribeParams::default())
        .expect("subscribed");
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
    assert!((0..2_000).all(|i| view.may_be_revoked(&key.token("iss", &i.to_string()))));
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
            let digests: Vec<&[u8]> = delta.digests.iter().map(|d| d.as_ref()).collect();
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
    let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
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
        hub.subscribe(SubscribeParams::default()).err(),
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
    let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
    queued(&mut updates);
    hub.on_event(Event::Lost);
    hub.on_tick();
    assert_eq!(queued(&mut updates), Vec::<&str>::new());
    assert_eq!(
        hub.subscribe(SubscribeParams::default()).err(),
        Some(SubscribeError::Lagging)
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_stays_behind_the_head_stops_heartbeats() {
    let mut hub = hub();
    let now = unix_now();
    let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
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
fn the_live_digest_table_keeps_its_size_under_steady_churn() {
    let mut hub = hub();
    const LIVE: i64 = 20_000;
    let start = unix_now();
    // One revocation a (virtual) second, each living LIVE seconds: the
    // live set reaches LIVE, then as many expire as arrive. Returns the
    // most entries the table had room for on the way.
    let churn = |hub: &mut HubState, from: i64, to: i64| {
        let mut most_room = 0;
        for t in from..to {
            hub.apply(vec![revoked(&t.to_string(), start + t + LIVE, t as u64)]);
            hub.expire(start + t);
            most_room = most_room.max(hub.live.tokens_capacity());
        }
        most_room
    };
    let room = churn(&mut hub, 0, LIVE);
    assert_eq!(hub.live.token_count() as i64, LIVE);
    // Removals only shrink `capacity()`; a regrown table would exceed it.
    assert_eq!(
        churn(&mut hub, LIVE, 8 * LIVE),
        room,
        "the table grew under churn"
    );
    assert_eq!(hub.live.token_count() as i64, LIVE);
}

#[test]
fn expired_revocations_leave_the_filter_and_memory_returns_to_baseline() {
    let mut hub = hub();
    let baseline_bits = hub.filter.bits();
    let now = unix_now();
    // Grow the filter well past its minimum with short-lived entries.
    hub.apply(
        (0..20_000)
            .map(|i| revoked(&i.to_string(), now + 5, i))
            .collect(),
    );
    assert!(hub.filter.bits() > baseline_bits, "the filter grew");
    let generation = hub.generation;
    let key = hub.digest_key.clone();
    assert!(hub.filter.contains(&key.token("iss", "7")));

    hub.expire(now + 6);
    assert_eq!(hub.live.token_count(), 0);
    assert!(hub.expired_in_filter >= hub.config.min_capacity);
    hub.rebuild(Rebuild::Expired);
    assert!(hub.generation > generation);
    assert_eq!(hub.filter.bits(), baseline_bits, "back to the minimum size");
    let still = (0..20_000).filter(|i| hub.filter.contains(&key.token("iss", &i.to_string())));
    assert!(
        still.count() < 40,
        "expired entries are gone (up to false positives)"
    );
}

#[test]
fn an_overfilling_filter_is_rebuilt_before_its_rate_passes_one_and_a_half_times_the_target() {
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
    assert_eq!(hub.live.token_count(), 100_000);
}

#[tokio::test(start_paused = true)]
async fn ticks_drop_revocations_once_the_clock_passes_their_end_and_date_heartbeats_by_it() {
    let mut hub = hub();
    let clock = hub.config.clock;
    let now = clock.now();
    let mut updates = hub.subscribe(SubscribeParams::default()).unwrap();
    queued(&mut updates);
    let entries = vec![revoked("short", now + 5, 1), revoked("long", now + 600, 2)];
    hub.on_event(tail(entries, true));
    hub.on_tick();
    assert_eq!(hub.live.token_count(), 2);
    tokio::time::advance(Duration::from_secs(4)).await;
    hub.on_event(tail(Vec::new(), true));
    hub.on_tick();
    assert_eq!(hub.live.token_count(), 2, "dropped before its end");
    tokio::time::advance(Duration::from_secs(2)).await;
    hub.on_event(tail(Vec::new(), true));
    hub.on_tick();
    assert_eq!(hub.live.token_count(), 1, "kept past its end");
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
async fn claim_cutoffs_travel_apart_from_subject_ones_and_end_older_gateways_streams() {
    let mut hub = hub();
    let current = SubscribeParams {
        protocol: crate::snapshot::STREAM_PROTOCOL,
        ..SubscribeParams::default()
    };
    let mut old = hub.subscribe(SubscribeParams::default()).unwrap();
    let mut new = hub.subscribe(current.clone()).unwrap();
    queued(&mut old);
    queued(&mut new);
    // A subject cut-off: every gateway can enforce it.
    hub.on_event(tail(vec![cut("sub", "alice", 10, 1)], true));
    assert_eq!(queued(&mut old), ["delta"]);
    assert_eq!(queued(&mut new), ["delta"]);
    hub.on_event(tail(vec![cut("sid", "s-1", 20, 2)], true));
    match old.queue.try_recv() {
        Ok(Outgoing::End(status)) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        }
        _ => panic!("the older gateway's stream goes on"),
    }
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
    assert_eq!(
        hub.subscribe(SubscribeParams::default()).err(),
        Some(SubscribeError::Outdated)
    );
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
            ..current
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
async fn a_load_that_brings_claim_cutoffs_ends_older_gateways_streams() {
    let mut hub = hub();
    let mut old = hub.subscribe(SubscribeParams::default()).unwrap();
    queued(&mut old);
    hub.on_event(Event::LoadStarted(crate::store::LogTail {
        head: "9".into(),
        entries: Vec::new(),
        start: None,
    }));
    hub.on_event(Event::LoadPage(vec![cut("client_id", "app", 20, 9).change]));
    hub.on_event(Event::LoadDone);
    match old.queue.try_recv() {
        Ok(Outgoing::End(status)) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        }
        _ => panic!("the older gateway's stream goes on after the load"),
    }
}
