//! Single revocations of many callers sent to Redis together (group
//! commit): each `Revoke` is one item of [`REVOKE_SCRIPT`], and a script
//! call costs Redis far more to start than an item costs to run (measured
//! with `examples/load.rs`: ~16 µs for a call of one item, ~12 µs an item
//! in calls of 100).
//!
//! Each partition has a [`Lane`]. A revocation queued while no call of its
//! lane is in flight starts one at once, so a quiet server sends every
//! revocation alone and waits for nothing; revocations queued while a call
//! is in flight go together in the next call, one per caller (key name and
//! live quota: the script takes one of each). At most one call per lane is
//! in flight, so the calls grow with the load instead of their number.
//!
//! Nothing changes for an item: the script treats each alone, exactly as
//! when it was sent alone, and its caller gets its own outcome (or the
//! call's error). The calls run in a task of their own, so a caller that
//! goes away (a cancelled RPC) neither stops nor loses the others' writes;
//! its own revocation may then be stored or not, as before.
//!
//! [`REVOKE_SCRIPT`]: super::revoke::REVOKE_SCRIPT

use std::collections::HashMap;
use std::mem;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::RedisStore;
use crate::store::{Error, Revocation};

/// One item's answer from the script: outcome and cursor.
pub(super) type Reply = (u8, Option<String>);

/// The queue of one partition.
#[derive(Debug, Default)]
pub(super) struct Lane {
    /// Revocations waiting, and whether a call is in flight. A std mutex:
    /// it is held only to push or take, never across an await.
    state: Mutex<LaneState>,
}

#[derive(Debug, Default)]
struct LaneState {
    /// True while a drain task runs for this lane.
    flushing: bool,
    queued: Vec<Job>,
}

/// A revocation waiting for its call.
#[derive(Debug)]
pub(super) struct Job {
    /// Its record name.
    pub(super) name: String,
    pub(super) revocation: Revocation,
    /// The caller's clock when it asked.
    pub(super) now: i64,
    /// The live quota checked in the script (0: none).
    pub(super) quota: u64,
    reply: oneshot::Sender<Result<Reply, Error>>,
}

// === impl Lane ===

impl Lane {
    /// One lane per partition.
    pub(super) fn per_partition(partitions: usize) -> Arc<[Lane]> {
        (0..partitions).map(|_| Lane::default()).collect()
    }
}

impl RedisStore {
    /// Stores one revocation through its partition's lane: alone when the
    /// lane is idle, else with those queued meanwhile.
    pub(super) async fn revoke_queued(
        &self,
        partition: usize,
        name: String,
        revocation: Revocation,
        now: i64,
        quota: u64,
    ) -> Result<Reply, Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            name,
            revocation,
            now,
            quota,
            reply,
        };
        let start = {
            let mut state = lock(&self.lanes[partition]);
            state.queued.push(job);
            !mem::replace(&mut state.flushing, true)
        };
        if start {
            tokio::spawn(self.clone().drain(partition));
        }
        answer.await.unwrap_or_else(|_| {
            // The drain task ended without answering: it panicked.
            Err(Error::Unavailable(crate::store::BackendError::new(
                "the write was abandoned",
                false,
            )))
        })
    }

    /// Sends the lane's queued revocations, one script call per caller, and
    /// again until the queue is empty.
    async fn drain(self, partition: usize) {
        let lane = &self.lanes[partition];
        // Should a call panic, the lane must not stay "flushing" forever:
        // the guard clears it (and drops the queue, so its callers fail).
        let _guard = ClearOnPanic(lane);
        loop {
            let jobs = {
                let mut state = lock(lane);
                if state.queued.is_empty() {
                    state.flushing = false;
                    return;
                }
                mem::take(&mut state.queued)
            };
            let mut groups: HashMap<(String, u64), Vec<Job>> = HashMap::new();
            for job in jobs {
                let caller = (job.revocation.provenance.by.clone(), job.quota);
                groups.entry(caller).or_default().push(job);
            }
            let calls = groups
                .into_values()
                .map(|jobs| self.send_group(partition, jobs));
            futures_util::future::join_all(calls).await;
        }
    }

    /// One script call for `jobs` (one caller's), answering each.
    async fn send_group(&self, partition: usize, jobs: Vec<Job>) {
        // The newest clock of the group: pruning and the quota count are
        // judged as of then, as for the last caller alone.
        let now = jobs.iter().map(|job| job.now).max().unwrap_or_default();
        let items = jobs.iter().map(|job| (job.name.as_str(), &job.revocation));
        let invocation = self.revoke_invocation(partition, now, jobs[0].quota, items);
        let result: Result<Vec<Reply>, Error> = self.write(&invocation).await;
        match result {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for job in jobs {
                    let reply = replies.next().ok_or_else(|| short_reply(&job));
                    let _ = job.reply.send(reply);
                }
            }
            Err(error) => {
                for job in jobs {
                    let _ = job.reply.send(Err(error.copy()));
                }
            }
        }
    }
}

/// The error of a script that answered fewer items than it was sent.
fn short_reply(job: &Job) -> Error {
    Error::Corrupt {
        key: job.name.clone(),
        detail: "the revoke script answered fewer items than it was sent".to_owned(),
    }
}

fn lock(lane: &Lane) -> std::sync::MutexGuard<'_, LaneState> {
    // A panic never happens while the lock is held (push and take only).
    lane.state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Clears a lane's `flushing` and queue when its drain task panics. (On a
/// normal end the task has cleared `flushing` itself, and another may have
/// set it since.)
struct ClearOnPanic<'a>(&'a Lane);

impl Drop for ClearOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = lock(self.0);
            state.flushing = false;
            state.queued.clear();
        }
    }
}
