//! The subscription loop: keeps a gateway's [`FilterView`] current.
//!
//! Connects to the configured endpoints in turn, subscribes with the cursor
//! and generation of the view it holds (so a reconnect resumes with deltas
//! when the server still has them), applies frames, and on any error backs
//! off (capped, jittered) and moves to the next endpoint. A malformed frame
//! is refused and the stream dropped; the last good view stays in use.
//! With a state directory, the view is saved as it changes and the saved
//! one offered at start ([`super::state`]). Stops when the gateway is
//! dropped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::clock::LeadWindow;
use super::state::{StateFile, SAVE_INTERVAL};
use super::view::{FilterView, FrameError, SnapshotAssembler};
use super::{ConfirmCache, GatewayConfig};
use crate::backoff::ExponentialBackoff;
use crate::pb::filter_update::Update;
use crate::pb::revocation_service_client::RevocationServiceClient;
use crate::pb::SubscribeRequest;
use crate::snapshot::STREAM_PROTOCOL;
use crate::time::Clock;
use crate::tokens::{TokenVerifier, CUT_CLAIMS, ISSUER_WIDE};

/// What the loop shares with the gateway's readers.
pub(super) struct Shared {
    /// The current view; `None` until the first snapshot.
    pub view: ArcSwapOption<FilterView>,
    /// Milliseconds since `epoch` when the last heartbeat was sent (dated
    /// as [`super::clock`] explains): the server's word that every change
    /// up to its cursor is applied. Deltas do not count: a replica catching
    /// up sends them while it still lacks newer changes.
    pub last_frame_ms: AtomicU64,
    /// Zero point of `last_frame_ms`.
    pub epoch: Instant,
    /// Our unix time.
    pub clock: Clock,
    /// How far the server's clock runs ahead of ours, in milliseconds, as
    /// the least delayed recent heartbeat shows it (never more than the
    /// truth). Expiry is judged on the server's clock, which is what drops
    /// its records.
    pub server_lead_ms: AtomicI64,
    /// The samples behind `server_lead_ms`; only the stream loop writes.
    lead_window: std::sync::Mutex<LeadWindow>,
    /// Answers confirmed with the server; cleared of digests that deltas
    /// report and wholly on a new snapshot.
    pub confirmed: ConfirmCache,
    /// Snapshots applied since the gateway started.
    pub snapshots: AtomicU64,
}

impl Shared {
    pub(super) fn new(clock: Clock) -> Self {
        Shared {
            view: ArcSwapOption::empty(),
            last_frame_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            clock,
            server_lead_ms: AtomicI64::new(0),
            lead_window: std::sync::Mutex::default(),
            confirmed: ConfirmCache::default(),
            snapshots: AtomicU64::new(0),
        }
    }

    /// Time since the last heartbeat, `None` before the first.
    pub(super) fn staleness(&self) -> Option<Duration> {
        let last = self.last_frame_ms.load(Ordering::Acquire);
        (last != 0).then(|| {
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last))
        })
    }

    /// Unix seconds now on the server's clock, as far as the last heartbeat
    /// showed it ahead of ours (never behind ours).
    pub(super) fn server_now(&self) -> i64 {
        let lead = self.server_lead_ms.load(Ordering::Relaxed).max(0);
        (self.clock.now_ms() + lead).div_euclid(1_000)
    }

    /// Records a heartbeat sent at `server_time_ms`: the server's lead,
    /// and freshness from when it was sent.
    fn heartbeat(&self, server_time_ms: i64) {
        let read_at = self.epoch.elapsed().as_millis().max(1) as u64;
        let mut window = self.lead_window.lock().unwrap_or_else(|p| p.into_inner());
        let (lead, sent_at) = window.record(server_time_ms, self.clock.now_ms(), read_at);
        self.server_lead_ms.store(lead, Ordering::Relaxed);
        self.last_frame_ms.fetch_max(sent_at, Ordering::AcqRel);
    }
}

/// Why one subscription ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("server: {0}")]
    Status(#[from] tonic::Status),
    #[error("no frame for {0:?}")]
    Silent(Duration),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream ended")]
    Ended,
}

/// Runs until `stop` is cancelled.
pub(super) async fn run(
    shared: Arc<Shared>,
    verifier: Arc<TokenVerifier>,
    config: GatewayConfig,
    endpoints: Vec<Endpoint>,
    stop: CancellationToken,
) {
    let state = (config.state_dir.as_deref()).map(|dir| StateFile::new(dir, &config.endpoints));
    let mut saved = match &state {
        Some(file) => load_saved(file.clone()).await,
        None => None,
    };
    if let Some(file) = state {
        tokio::spawn(persist(Arc::clone(&shared), file, stop.clone()));
    }
    let mut backoff = config.backoff.clone();
    let mut next = 0usize;
    let mut fresh = false;
    loop {
        let endpoint = &endpoints[next % endpoints.len()];
        let follow = follow(
            &shared,
            &verifier,
            &config,
            endpoint,
            &mut backoff,
            &mut saved,
            fresh,
        );
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = follow => outcome,
        };
        // A frame the held view could not take would come again on a
        // resume: ask for a snapshot instead (the view stays in use).
        fresh = matches!(&outcome, StreamError::Frame(error) if !matches!(error, FrameError::Behind { .. }));
        next += 1;
        let delay = backoff.next_delay();
        warn!(endpoint = %crate::redact::redact(&endpoint.uri().to_string()), error = %outcome, retry_in_ms = delay.as_millis() as u64, "filter stream lost; reconnecting");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The view saved in `file`, if one can be offered; a file that cannot
/// be used is reported and left for the next save to replace.
async fn load_saved(file: StateFile) -> Option<FilterView> {
    let path = file.path().display().to_string();
    match tokio::task::spawn_blocking(move || file.load()).await {
        Ok(Ok(Some(view))) => {
            info!(
                path,
                generation = view.generation(),
                cursor = view.cursor(),
                "offering the saved filter to resume from"
            );
            Some(view)
        }
        Ok(Ok(None)) => None,
        Ok(Err(error)) => {
            warn!(path, %error, "ignoring the saved filter state; starting from a snapshot");
            None
        }
        Err(_) => None,
    }
}

/// Saves the view to `file` until `stop`: a new generation (a snapshot)
/// at once, deltas at most every [`SAVE_INTERVAL`].
async fn persist(shared: Arc<Shared>, file: StateFile, stop: CancellationToken) {
    let mut saved: Option<(u64, String)> = None;
    let mut saved_at = Instant::now();
    let mut every = tokio::time::interval(SAVE_INTERVAL / 8);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(view) = shared.view.load_full() else {
            continue;
        };
        let due = match &saved {
            None => true,
            Some((generation, cursor)) => {
                *generation != view.generation()
                    || (cursor != view.cursor() && saved_at.elapsed() >= SAVE_INTERVAL)
            }
        };
        if !due {
            continue;
        }
        let position = (view.generation(), view.cursor().to_owned());
        let writer = file.clone();
        match tokio::task::spawn_blocking(move || writer.save(&view)).await {
            Ok(Ok(())) => (saved, saved_at) = (Some(position), Instant::now()),
            Ok(Err(error)) => {
                warn!(path = %file.path().display(), %error, "saving the filter state failed");
                saved_at = Instant::now();
            }
            Err(_) => return,
        }
    }
}

/// One subscription, until it fails. While no view is held, a `saved` one
/// offers its position; the server's first frame decides its fate: a
/// snapshot drops it, anything else (the server resumed from it) makes it
/// the view, which that frame then updates. A `fresh` subscription offers
/// no position, so it starts with a snapshot.
async fn follow(
    shared: &Shared,
    verifier: &TokenVerifier,
    config: &GatewayConfig,
    endpoint: &Endpoint,
    backoff: &mut ExponentialBackoff,
    saved: &mut Option<FilterView>,
    fresh: bool,
) -> StreamError {
    let channel: Channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => return error.into(),
    };
    let mut client =
        RevocationServiceClient::new(channel).max_decoding_message_size(super::MAX_FRAME_BYTES);
    let held = shared.view.load_full();
    let offered = held.as_deref().or(saved.as_ref()).filter(|_| !fresh);
    let mut request = tonic::Request::new(SubscribeRequest {
        cursor: offered.map(|v| v.cursor().to_owned()).unwrap_or_default(),
        generation: offered.map_or(0, FilterView::generation),
        gateway_id: config.gateway_id.clone(),
        protocol: STREAM_PROTOCOL,
    });
    if let Some(key) = &config.api_key {
        request.metadata_mut().insert("authorization", key.clone());
    }
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status.into(),
    };
    debug!(endpoint = %crate::redact::redact(&endpoint.uri().to_string()), "subscribed");
    let mut assembler = SnapshotAssembler::default();
    loop {
        let frame = match tokio::time::timeout(config.idle_timeout, stream.message()).await {
            Err(_) => return StreamError::Silent(config.idle_timeout),
            Ok(Err(status)) => return status.into(),
            Ok(Ok(None)) => return StreamError::Ended,
            Ok(Ok(Some(frame))) => frame,
        };
        if let Some(view) = saved.take() {
            if matches!(frame.update, Some(Update::Snapshot(_))) {
                info!("the server sent a snapshot; the saved filter is dropped");
            } else if shared.view.load().is_none() {
                info!(cursor = view.cursor(), "resumed from the saved filter");
                shared.view.store(Some(Arc::new(view)));
            }
        }
        if let Err(error) = apply(shared, &mut assembler, frame.update, config.max_staleness) {
            return error.into();
        }
        learn_claims(shared, verifier);
        backoff.reset();
    }
}

/// Has `verifier` read the deployment's own revocable claims (those other
/// than `sub`, `sid`, `client_id`, `azp`) that the view holds cut-offs of,
/// so the gateway can judge tokens on them rather than ask the server.
fn learn_claims(shared: &Shared, verifier: &TokenVerifier) {
    let Some(view) = shared.view.load_full() else {
        return;
    };
    let wanted = || {
        view.claims_cut()
            .filter(|claim| !CUT_CLAIMS.contains(claim) && *claim != ISSUER_WIDE)
    };
    // Every frame passes here: compare first, allocate only on a change.
    if !wanted().eq(verifier.claims_read().iter().map(|claim| &**claim)) {
        let wanted: Vec<Box<str>> = wanted().map(Box::from).collect();
        info!(claims = ?wanted, "reading the deployment's own revocable claims from tokens");
        verifier.read_claims(wanted);
    }
}

/// Applies one frame to the shared view. A snapshot behind the view held
/// (a replica that lags the one left) is refused while the held view is
/// fresh: installing it would forget revocations already enforced.
fn apply(
    shared: &Shared,
    assembler: &mut SnapshotAssembler,
    update: Option<Update>,
    max_staleness: Duration,
) -> Result<(), FrameError> {
    match update {
        Some(Update::Snapshot(part)) => {
            metrics::counter!("revocd_gateway_frames_total", "kind" => "snapshot").increment(1);
            if let Some(view) = assembler.push(part)? {
                let held = shared.view.load_full();
                let fresh = shared.staleness().is_some_and(|s| s <= max_staleness);
                if let Some(held) = held.filter(|_| fresh) {
                    if crate::cursor::is_behind(view.cursor(), held.cursor()) {
                        return Err(FrameError::Behind {
                            offered: view.cursor().to_owned(),
                            held: held.cursor().to_owned(),
                        });
                    }
                }
                info!(
                    generation = view.generation(),
                    cursor = view.cursor(),
                    "snapshot applied"
                );
                shared.confirmed.clear();
                shared.view.store(Some(Arc::new(view)));
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Update::Delta(delta)) => {
            metrics::counter!("revocd_gateway_frames_total", "kind" => "delta").increment(1);
            let current = shared.view.load_full().ok_or(FrameError::NoSnapshot)?;
            let next = current.with_delta(&delta)?;
            let next = next.without_expired(shared.server_now()).unwrap_or(next);
            shared.confirmed.forget(delta.added_digests());
            shared.view.store(Some(Arc::new(next)));
            // From the append to the store's log to use here (clock skew
            // between the hosts included); absent from older servers.
            if delta.logged_at_ms > 0 {
                let delay_ms = shared.clock.now_ms() - delta.logged_at_ms;
                metrics::histogram!("revocd_propagation_delay_seconds")
                    .record(delay_ms.max(0) as f64 / 1_000.0);
            }
        }
        // A heartbeat changes nothing but the staleness, which only
        // heartbeats refresh; its server time shows how far behind the
        // stream runs (clock skew included).
        Some(Update::Heartbeat(heartbeat)) => {
            let lag_ms = shared.clock.now_ms() - heartbeat.server_time_ms;
            shared.heartbeat(heartbeat.server_time_ms);
            let lag = lag_ms.max(0) as f64 / 1_000.0;
            metrics::gauge!("revocd_gateway_heartbeat_lag_seconds").set(lag);
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heartbeat frame sent at `server_time_ms`.
    fn heartbeat(server_time_ms: i64) -> Option<Update> {
        Some(Update::Heartbeat(crate::pb::Heartbeat {
            cursor: String::new(),
            server_time_ms,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_is_judged_on_the_servers_clock_when_it_runs_ahead() {
        let shared = Shared::new(Clock::tokio());
        let clock = shared.clock;
        let mut assembler = SnapshotAssembler::default();
        // A server behind us never moves expiry later than our own clock.
        let behind = clock.now_ms() - 600_000;
        apply(&shared, &mut assembler, heartbeat(behind), Duration::ZERO).unwrap();
        assert!(shared.server_now() >= clock.now());
        assert!(shared.server_now() <= clock.now() + 1);
        let ahead = clock.now_ms() + 600_000;
        apply(&shared, &mut assembler, heartbeat(ahead), Duration::ZERO).unwrap();
        assert!(shared.server_now() >= clock.now() + 599);
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_read_long_after_it_was_sent_leaves_the_gateway_stale() {
        let shared = Shared::new(Clock::tokio());
        let clock = shared.clock;
        let mut assembler = SnapshotAssembler::default();
        let now = clock.now_ms();
        apply(&shared, &mut assembler, heartbeat(now), Duration::ZERO).unwrap();
        assert!(shared.staleness().unwrap() < Duration::from_secs(1));
        // A heartbeat sent 5 s ago, read only now (it sat in a buffer while
        // the gateway was paused): it vouches for then, not for now. A
        // fresh gateway already counts from the newest it had.
        let fresh = Shared::new(clock);
        apply(&fresh, &mut assembler, heartbeat(now), Duration::ZERO).unwrap();
        tokio::time::advance(Duration::from_millis(1_100)).await;
        let sent = clock.now_ms() - 5_000;
        apply(&fresh, &mut assembler, heartbeat(sent), Duration::ZERO).unwrap();
        assert!(
            fresh.staleness().unwrap() >= Duration::from_secs(1),
            "a late heartbeat made the gateway fresh"
        );
    }
}
