//! `revocation.v1.RevocationService` wired to [`RevocationApi`]: each RPC
//! runs its handler inside [`observed`], which maps its error to a status
//! (the one mapping, in `error.rs`) and records the call.

use std::future::Future;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::error::ApiError;
use super::handlers::{FilterStream, RevocationApi};
use crate::pb::{self, revocation_service_server::RevocationService};

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        observed("Revoke", RevocationApi::revoke(self, request)).await
    }

    async fn revoke_subject(
        &self,
        request: Request<pb::RevokeSubjectRequest>,
    ) -> Result<Response<pb::RevokeSubjectResponse>, Status> {
        observed(
            "RevokeSubject",
            RevocationApi::revoke_subject(self, request),
        )
        .await
    }

    async fn revoke_claim(
        &self,
        request: Request<pb::RevokeClaimRequest>,
    ) -> Result<Response<pb::RevokeClaimResponse>, Status> {
        observed("RevokeClaim", RevocationApi::revoke_claim(self, request)).await
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        observed("Check", RevocationApi::check(self, request)).await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        observed("GetStats", self.stats(request)).await
    }

    async fn revoke_batch(
        &self,
        request: Request<pb::RevokeBatchRequest>,
    ) -> Result<Response<pb::RevokeBatchResponse>, Status> {
        observed("RevokeBatch", RevocationApi::revoke_batch(self, request)).await
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        observed(
            "ListRevocations",
            RevocationApi::list_revocations(self, request),
        )
        .await
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        observed("ListChanges", RevocationApi::list_changes(self, request)).await
    }

    type SubscribeStream = FilterStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Counts the call and how long opening the stream took.
        observed("Subscribe", RevocationApi::subscribe(self, request)).await
    }
}

/// Runs one call, maps its error to a status, and records it:
/// `revocd_rpc_requests_total{method, code}` and
/// `revocd_rpc_duration_seconds{method}`.
async fn observed<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    // One span per RPC; `caller` is filled in once the key is known. Never
    // a secret: a key's name, not the key.
    let span = tracing::info_span!("rpc", method, caller = tracing::field::Empty);
    let result = call
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from);
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::counter!("revocd_rpc_requests_total", "method" => method, "code" => format!("{code:?}"))
        .increment(1);
    metrics::histogram!("revocd_rpc_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}
