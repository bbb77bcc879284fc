//! `Subscribe`, the filter stream gateways follow (keys holding
//! `subscribe`, a bounded number each), and `GetStats` (keys holding
//! `read`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Request, Status};

use super::RevocationApi;
use crate::auth::{Access, Caller, Role};
use crate::hub::Updates;
use crate::pb::{self, GetStatsRequest, Stats};
use crate::server::error::ApiError;
use crate::server::limits::{self, StreamPermit};
use crate::time::unix_now;

/// A filter stream holding its caller's permit until it ends.
pub struct FilterStream {
    updates: Updates,
    _permit: StreamPermit,
}

impl tokio_stream::Stream for FilterStream {
    type Item = Result<pb::FilterUpdate, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.updates).poll_next(cx)
    }
}

impl RevocationApi {
    /// `Subscribe`: the replica's filter, then its changes, while the
    /// caller holds fewer streams than its `max_streams` (else
    /// `--max-streams-per-key`).
    pub(crate) async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<FilterStream, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Subscribe])?;
        let permit = self.stream_permit(caller)?;
        let request = request.into_inner();
        limits::text("gateway_id", &request.gateway_id, limits::MAX_ID_BYTES)?;
        limits::text("cursor", &request.cursor, limits::MAX_CURSOR_BYTES)?;
        let updates = self.state.hub.subscribe(request.into()).await?;
        Ok(FilterStream {
            updates,
            _permit: permit,
        })
    }

    /// One more open stream for `caller`, within its limit.
    fn stream_permit(&self, caller: &Caller) -> Result<StreamPermit, ApiError> {
        let limit = caller
            .limits
            .max_streams
            .unwrap_or(self.state.policy.max_streams_per_key);
        self.streams.acquire(&caller.name, limit).ok_or_else(|| {
            ApiError::ResourceExhausted(format!(
                "API key {:?} already holds {limit} filter streams on this replica (its max_streams, else --max-streams-per-key)",
                caller.name
            ))
        })
    }

    /// `GetStats`: the store's live counts and this replica's filter.
    pub(crate) async fn stats(&self, request: Request<GetStatsRequest>) -> Result<Stats, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read])?;
        let counts = self.state.store.counts(unix_now()).await?;
        let hub = self.state.hub.stats().await.unwrap_or_default();
        Ok(Stats {
            live_revocations: counts.revocations,
            live_subject_cutoffs: counts.subject_cutoffs,
            live_claim_cutoffs: counts.claim_cutoffs,
            store: self.state.store.kind().to_owned(),
            version: crate::VERSION.to_owned(),
            uptime_seconds: self.state.started.elapsed().as_secs(),
            filter_generation: hub.generation,
            filter_bits: hub.filter_bits,
            subscribers: hub.subscribers as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::super::testing::{self, api, refusal, request};
    use super::*;
    use crate::pb::RevokeRequest;

    /// Subscribes with `key`, waiting for the filter's first load.
    async fn subscribe(api: &RevocationApi, key: Option<&str>) -> Result<FilterStream, ApiError> {
        for _ in 0..500 {
            let current = pb::SubscribeRequest {
                protocol: crate::snapshot::STREAM_PROTOCOL,
                ..Default::default()
            };
            match api.subscribe(request(current, key)).await {
                Err(ApiError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                result => return result,
            }
        }
        panic!("the filter never loaded");
    }

    #[tokio::test]
    async fn a_stream_needs_the_subscribe_role() {
        let api = api().await;
        assert_eq!(
            refusal(subscribe(&api, testing::READ).await).0,
            Code::PermissionDenied
        );
        assert_eq!(
            refusal(subscribe(&api, testing::KEYLESS).await).0,
            Code::Unauthenticated
        );
        assert!(subscribe(&api, testing::SUBSCRIBE).await.is_ok());
    }

    #[tokio::test]
    async fn a_key_holds_at_most_its_streams_until_one_ends() {
        let api = api().await;
        let first = subscribe(&api, testing::QUOTA).await.expect("first stream");
        let (code, message) = refusal(subscribe(&api, testing::QUOTA).await);
        assert_eq!(code, Code::ResourceExhausted);
        assert!(
            message.contains("already holds 1 filter streams"),
            "{message}"
        );
        assert!(
            subscribe(&api, testing::SUBSCRIBE).await.is_ok(),
            "other keys are not held to it"
        );
        drop(first);
        assert!(subscribe(&api, testing::QUOTA).await.is_ok());
    }

    #[tokio::test]
    async fn an_oversize_gateway_id_is_refused() {
        let api = api().await;
        let request = request(
            pb::SubscribeRequest {
                gateway_id: "g".repeat(limits::MAX_ID_BYTES + 1),
                ..Default::default()
            },
            testing::SUBSCRIBE,
        );
        assert_eq!(
            refusal(api.subscribe(request).await).0,
            Code::InvalidArgument
        );
    }

    #[tokio::test]
    async fn stats_need_the_read_role_and_count_live_records() {
        let api = api().await;
        let denied = api
            .stats(request(GetStatsRequest {}, testing::SUBSCRIBE))
            .await;
        assert_eq!(refusal(denied).0, Code::PermissionDenied);
        let revoke = RevokeRequest {
            jti: "j-1".into(),
            expires_at: unix_now() + 60,
            ..Default::default()
        };
        api.revoke(request(revoke, testing::REVOKE)).await.unwrap();
        let stats = api
            .stats(request(GetStatsRequest {}, testing::READ))
            .await
            .unwrap();
        assert_eq!(
            (stats.live_revocations, stats.store.as_str()),
            (1, "memory")
        );
        assert_eq!(stats.version, crate::VERSION);
    }
}
