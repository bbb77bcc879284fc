//! `RevokeBatch`: up to [`MAX_BATCH_ITEMS`] `Revoke` items with one key
//! holding `revoke`, stored in one write. Each item gets its own answer:
//! what `Revoke` would have answered, or its refusal.

use std::time::Instant;

use tonic::Request;
use tracing::debug;

use super::revoke::Prepared;
use super::{count_revocations, over_live_quota, over_rate_quota, source_address, RevocationApi};
use crate::auth::{Access, Caller, Role};
use crate::pb::{self, RevokeBatchResult};
use crate::server::convert::revoke_response;
use crate::server::error::ApiError;
use crate::server::limits::MAX_BATCH_ITEMS;
use crate::store::{Revocation, RevokeOutcome};
use crate::time::unix_now;

/// A batch on its way: every item's answer so far, and the revocations
/// still to store with their items' positions.
struct Batch {
    results: Vec<RevokeBatchResult>,
    revocations: Vec<Revocation>,
    positions: Vec<usize>,
}

impl RevocationApi {
    /// `RevokeBatch`: checks every item, takes the key's rate quota for
    /// those to store (refusing the rest), stores them in one write.
    pub(crate) async fn revoke_batch(
        &self,
        request: Request<pb::RevokeBatchRequest>,
    ) -> Result<pb::RevokeBatchResponse, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Revoke])?.clone();
        let source = source_address(&request);
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(ApiError::invalid(format!(
                "the batch has {} items; the limit is {MAX_BATCH_ITEMS}",
                items.len()
            )));
        }
        let now = unix_now();
        let mut batch = self.prepare_batch(&caller, items, &source, now);
        let granted = self
            .rate
            .take(&caller, batch.revocations.len(), Instant::now());
        batch.refuse_beyond(granted, &caller);
        let live_quota = caller.limits.max_live_revocations;
        let outcomes = self
            .state
            .store
            .revoke_batch(&batch.revocations, now, live_quota)
            .await?;
        batch.answer(outcomes, &caller.name, live_quota);
        debug!(
            items = batch.results.len(),
            stored = batch.revocations.len(),
            "batch revoked"
        );
        Ok(pb::RevokeBatchResponse {
            results: batch.results,
        })
    }

    /// Checks every item as `Revoke` would.
    fn prepare_batch(
        &self,
        caller: &Caller,
        items: Vec<pb::RevokeRequest>,
        source: &str,
        now: i64,
    ) -> Batch {
        let mut batch = Batch {
            results: vec![RevokeBatchResult::default(); items.len()],
            revocations: Vec::with_capacity(items.len()),
            positions: Vec::with_capacity(items.len()),
        };
        for (position, item) in items.into_iter().enumerate() {
            match self.prepare_revocation(Some(caller), item, source, now) {
                Ok(Prepared::Store(revocation)) => {
                    batch.revocations.push(revocation);
                    batch.positions.push(position);
                }
                Ok(Prepared::Expired(response)) => {
                    batch.results[position].response = Some(response);
                }
                Err(error) => batch.results[position] = RevokeBatchResult::from(error),
            }
        }
        batch
    }
}

impl Batch {
    /// Refuses the revocations past the first `granted`: the rate quota of
    /// `caller` has no room for them.
    fn refuse_beyond(&mut self, granted: usize, caller: &Caller) {
        for &position in &self.positions[granted..] {
            self.results[position] = RevokeBatchResult::from(over_rate_quota(caller));
        }
        self.revocations.truncate(granted);
    }

    /// Records the store's outcome of each revocation in its item's answer.
    fn answer(&mut self, outcomes: Vec<RevokeOutcome>, actor: &str, live_quota: Option<u64>) {
        count_revocations(outcomes.iter().filter(|outcome| !outcome.over_quota));
        let stored = self.revocations.iter().zip(outcomes).zip(&self.positions);
        for ((revocation, outcome), &position) in stored {
            if outcome.over_quota {
                let refusal = over_live_quota(actor, live_quota);
                self.results[position] = RevokeBatchResult::from(refusal);
                continue;
            }
            self.results[position].response = Some(revoke_response(revocation, outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::super::testing::{self, api, refusal, request};
    use super::*;

    fn item(jti: &str, expires_at: i64) -> pb::RevokeRequest {
        pb::RevokeRequest {
            jti: jti.into(),
            expires_at,
            ..Default::default()
        }
    }

    fn batch(items: Vec<pb::RevokeRequest>) -> pb::RevokeBatchRequest {
        pb::RevokeBatchRequest { items }
    }

    #[tokio::test]
    async fn a_batch_needs_the_revoke_role_and_a_key() {
        let api = api().await;
        let items = || batch(vec![item("j", unix_now() + 60)]);
        let read = api.revoke_batch(request(items(), testing::READ)).await;
        assert_eq!(refusal(read).0, Code::PermissionDenied);
        let keyless = api.revoke_batch(request(items(), testing::KEYLESS)).await;
        assert_eq!(refusal(keyless).0, Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_batch_over_the_item_limit_is_refused_whole() {
        let api = api().await;
        let items = vec![item("j", unix_now() + 60); MAX_BATCH_ITEMS + 1];
        let (code, message) = refusal(
            api.revoke_batch(request(batch(items), testing::REVOKE))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument);
        assert_eq!(message, "the batch has 1001 items; the limit is 1000");
        let full = vec![item("j", unix_now() + 60); MAX_BATCH_ITEMS];
        assert!(api
            .revoke_batch(request(batch(full), testing::REVOKE))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn every_item_gets_its_own_answer() {
        let api = api().await;
        let now = unix_now();
        let items = vec![
            item("fresh", now + 60),
            item("", now + 60),
            item("gone", now - 600),
        ];
        let request = request(batch(items), testing::REVOKE);
        let results = api.revoke_batch(request).await.unwrap().results;
        assert_eq!(results[0].code, 0);
        assert!(results[0].response.as_ref().unwrap().newly_revoked);
        assert_eq!(results[1].code, Code::InvalidArgument as i32);
        assert_eq!(results[1].error, "set `token`, or `jti` with `expires_at`");
        let expired = results[2].response.as_ref().expect("answered");
        assert!(results[2].code == 0 && !expired.newly_revoked && expired.cursor.is_empty());
        assert_eq!(api.state.store.counts(now).await.unwrap().revocations, 1);
    }

    #[tokio::test]
    async fn items_past_the_rate_quota_are_refused_one_by_one() {
        let api = api().await;
        let expires_at = unix_now() + 60;
        let items = (0..5)
            .map(|n| item(&format!("q-{n}"), expires_at))
            .collect();
        let results = api
            .revoke_batch(request(batch(items), testing::QUOTA))
            .await
            .unwrap()
            .results;
        let codes: Vec<i32> = results.iter().map(|result| result.code).collect();
        let exhausted = Code::ResourceExhausted as i32;
        assert_eq!(codes, [0, 0, 0, exhausted, exhausted]);
        assert!(results[4]
            .error
            .contains("quota of 3 revocations per second"));
    }
}
