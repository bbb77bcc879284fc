//! Fan-out: subscribing, snapshots and deltas to each subscriber's
//! bounded queue, and the lag policy of the hub's module doc.

use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::debug;

use super::*;
use crate::hub::history::push_cutoff;

impl HubState {
    pub(super) fn subscribe(&mut self, params: SubscribeParams) -> Result<Updates, SubscribeError> {
        // A filter that may lack acknowledged revocations must not replace
        // a gateway's newer one: send it elsewhere (heartbeats stop for the
        // same reason, so subscribers already here go stale).
        if !self.is_live() {
            return Err(SubscribeError::Lagging);
        }
        if params.protocol < STREAM_PROTOCOL {
            metrics::counter!("revocd_outdated_gateways_total").increment(1);
            return Err(SubscribeError::Outdated);
        }
        self.subscribers.retain(|s| !s.queue.is_closed());
        if self.subscribers.len() >= self.config.max_subscribers {
            return Err(SubscribeError::Full);
        }
        let (queue, updates) = mpsc::channel(self.config.subscriber_buffer.max(2));
        let updates = Updates::new(updates);
        self.next_subscriber += 1;
        let mut subscriber = Subscriber {
            id: self.next_subscriber,
            gateway_id: params.gateway_id,
            queue,
            needs_snapshot: true,
        };
        // Any replica of this deployment (see the module doc of `state`).
        let same_deployment = params.generation >> 32 == self.generation >> 32;
        let resumed = same_deployment
            .then(|| {
                self.history
                    .deltas_since(&params.cursor, &self.cursor, &self.claims)
            })
            .flatten();
        match resumed {
            Some(mut frames) => {
                // Something to show the stream is live, even with no deltas.
                let deltas = frames.len();
                frames.push(self.heartbeat());
                subscriber.needs_snapshot = !offer_all(&subscriber, [frames.into()]);
                debug!(
                    subscriber = subscriber.id,
                    gateway = subscriber.gateway_id,
                    deltas,
                    "resumed"
                );
            }
            None => {
                self.offer_snapshot(&mut subscriber);
                debug!(
                    subscriber = subscriber.id,
                    gateway = subscriber.gateway_id,
                    "snapshot sent"
                );
            }
        }
        self.subscribers.push(subscriber);
        Ok(updates)
    }

    pub(super) fn heartbeat(&self) -> pb::FilterUpdate {
        update(Update::Heartbeat(pb::Heartbeat {
            cursor: self.cursor.clone(),
            server_time_ms: self.config.clock.now_ms(),
        }))
    }

    /// Sends a snapshot (and the delta catching it up) if the subscriber's
    /// queue has room for both; otherwise it stays pending.
    pub(super) fn offer_snapshot(&mut self, subscriber: &mut Subscriber) {
        let (cursor, snapshot) = self.current_snapshot();
        let mut catch_up = self
            .history
            .deltas_since(&cursor, &self.cursor, &self.claims)
            .unwrap_or_default();
        // Fresh from the start when the state sent is current.
        if self.is_live() {
            catch_up.push(self.heartbeat());
        }
        if subscriber.queue.capacity() >= 2 {
            subscriber.needs_snapshot = !offer_all(subscriber, [snapshot, catch_up.into()]);
            if !subscriber.needs_snapshot {
                metrics::counter!("revocd_filter_snapshots_sent_total").increment(1);
            }
        }
    }

    /// Snapshot frames and their cursor, reused while recent and still
    /// catchable-up.
    pub(super) fn current_snapshot(&mut self) -> (String, Arc<[pb::FilterUpdate]>) {
        let reusable = self.snapshot.as_ref().is_some_and(|s| {
            s.built.elapsed() < SNAPSHOT_REUSE
                && (s.cursor == self.cursor || self.history.holds(&s.cursor))
        });
        if !reusable {
            self.snapshot = Some(CachedSnapshot {
                cursor: self.cursor.clone(),
                frames: self.snapshot_frames().into(),
                built: Instant::now(),
            });
        }
        // Set just above when absent.
        let cached = self.snapshot.as_ref().expect("snapshot cached");
        (cached.cursor.clone(), Arc::clone(&cached.frames))
    }

    /// The whole state as Snapshot frames of at most `snapshot_part_bytes`
    /// of filter each, subjects spread over the parts.
    pub(super) fn snapshot_frames(&self) -> Vec<pb::FilterUpdate> {
        let (mut subjects, mut claims) = (Vec::new(), Vec::new());
        for (key, not_before) in self.live.cutoffs() {
            push_cutoff((&mut subjects, &mut claims), &self.claims, key, not_before);
        }
        let whole = pb::Snapshot {
            generation: self.generation,
            filter: Bytes::from(self.filter.to_bytes()),
            subjects,
            claims,
            cursor: self.cursor.clone(),
            digest_key: self.digest_key.as_bytes().to_vec(),
            part: 0,
            parts: 1,
            leeway: self.config.bounds.leeway,
            max_token_lifetime: self.config.bounds.max_token_lifetime,
        };
        crate::snapshot::split(whole, self.config.snapshot_part_bytes)
            .into_iter()
            .map(|part| update(Update::Snapshot(part)))
            .collect()
    }

    pub(super) fn serve_pending_snapshots(&mut self) {
        let mut subscribers = std::mem::take(&mut self.subscribers);
        for subscriber in subscribers.iter_mut().filter(|s| s.needs_snapshot) {
            self.offer_snapshot(subscriber);
        }
        self.subscribers = subscribers;
    }

    /// Offers a frame to every up-to-date subscriber (shared, not copied); a
    /// full queue marks the subscriber for re-basing, a closed one removes
    /// it.
    pub(super) fn broadcast(&mut self, frame: pb::FilterUpdate) {
        let frames: Arc<[pb::FilterUpdate]> = Arc::new([frame]);
        self.subscribers.retain_mut(|subscriber| {
            if subscriber.needs_snapshot {
                return !subscriber.queue.is_closed();
            }
            match subscriber
                .queue
                .try_send(Outgoing::Frames(Arc::clone(&frames)))
            {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("revocd_subscriber_rebases_total").increment(1);
                    debug!(
                        subscriber = subscriber.id,
                        gateway = subscriber.gateway_id,
                        "queue full; will re-base with a snapshot"
                    );
                    subscriber.needs_snapshot = true;
                    true
                }
                Err(TrySendError::Closed(_)) => {
                    debug!(
                        subscriber = subscriber.id,
                        gateway = subscriber.gateway_id,
                        "unsubscribed"
                    );
                    false
                }
            }
        });
    }
}

/// Queues each group of frames with `try_send` (an empty group is
/// skipped); false if any did not fit.
fn offer_all<const N: usize>(
    subscriber: &Subscriber,
    groups: [Arc<[pb::FilterUpdate]>; N],
) -> bool {
    groups
        .into_iter()
        .filter(|frames| !frames.is_empty())
        .all(|frames| subscriber.queue.try_send(Outgoing::Frames(frames)).is_ok())
}
