//! `revocation.v1.RevocationService` wired to [`RevocationApi`]: each RPC
//! runs its handler inside [`observed`], which maps its error to a status
//! (the one mapping, in `error.rs`) and records the call.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use super::error::ApiError;
use super::handlers::{FilterStream, RevocationApi};
use crate::pb::{self, revocation_service_server::RevocationService};

/// The [`RpcMetrics`] of `method`, a static of the calling function.
macro_rules! rpc_metrics {
    ($method:literal) => {{
        static METRICS: RpcMetrics = RpcMetrics::new($method);
        &METRICS
    }};
}

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        observed(rpc_metrics!("Revoke"), RevocationApi::revoke(self, request)).await
    }

    async fn revoke_subject(
        &self,
        request: Request<pb::RevokeSubjectRequest>,
    ) -> Result<Response<pb::RevokeSubjectResponse>, Status> {
        observed(
            rpc_metrics!("RevokeSubject"),
            RevocationApi::revoke_subject(self, request),
        )
        .await
    }

    async fn revoke_claim(
        &self,
        request: Request<pb::RevokeClaimRequest>,
    ) -> Result<Response<pb::RevokeClaimResponse>, Status> {
        observed(
            rpc_metrics!("RevokeClaim"),
            RevocationApi::revoke_claim(self, request),
        )
        .await
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        observed(rpc_metrics!("Check"), RevocationApi::check(self, request)).await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        observed(rpc_metrics!("GetStats"), self.stats(request)).await
    }

    async fn revoke_batch(
        &self,
        request: Request<pb::RevokeBatchRequest>,
    ) -> Result<Response<pb::RevokeBatchResponse>, Status> {
        observed(
            rpc_metrics!("RevokeBatch"),
            RevocationApi::revoke_batch(self, request),
        )
        .await
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        observed(
            rpc_metrics!("ListRevocations"),
            RevocationApi::list_revocations(self, request),
        )
        .await
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        observed(
            rpc_metrics!("ListChanges"),
            RevocationApi::list_changes(self, request),
        )
        .await
    }

    type SubscribeStream = FilterStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Counts the call and how long opening the stream took.
        observed(
            rpc_metrics!("Subscribe"),
            RevocationApi::subscribe(self, request),
        )
        .await
    }
}

/// Runs one call, maps its error to a status, and records it:
/// `revocd_rpc_requests_total{method, code}` and
/// `revocd_rpc_duration_seconds{method}`.
async fn observed<T>(
    metrics: &'static RpcMetrics,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    // One span per RPC; `caller` is filled in once the key is known. Never
    // a secret: a key's name, not the key.
    let method = metrics.method;
    let span = tracing::info_span!("rpc", method, caller = tracing::field::Empty);
    let result = call
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from);
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    metrics.requests(code).increment(1);
    metrics.duration().record(started.elapsed().as_secs_f64());
    result
}

/// The metric handles of one RPC method, each resolved on first use and
/// then kept: looking a series up by name and labels on every call (a
/// label string formatted, hashed and found in the registry) cost more than
/// recording into it.
///
/// A handle is resolved in the recorder installed at the time, so the
/// recorder must be installed before the first call, as
/// [`crate::telemetry::prometheus`] says.
struct RpcMetrics {
    /// The `method` label.
    method: &'static str,
    /// `revocd_rpc_requests_total{method, code}`, by [`Code`] (0..=16).
    requests: [OnceLock<Counter>; CODES],
    /// `revocd_rpc_duration_seconds{method}`.
    duration: OnceLock<Histogram>,
}

/// The number of gRPC status codes.
const CODES: usize = 17;

impl RpcMetrics {
    const fn new(method: &'static str) -> Self {
        Self {
            method,
            requests: [const { OnceLock::new() }; CODES],
            duration: OnceLock::new(),
        }
    }

    /// The request counter of status `code`.
    fn requests(&self, code: Code) -> &Counter {
        let method = self.method;
        // `Code` is a fieldless enum of the 17 codes, 0..=16.
        self.requests[code as usize].get_or_init(|| {
            metrics::counter!("revocd_rpc_requests_total", "method" => method, "code" => format!("{code:?}"))
        })
    }

    /// The duration histogram.
    fn duration(&self) -> &Histogram {
        let method = self.method;
        self.duration
            .get_or_init(|| metrics::histogram!("revocd_rpc_duration_seconds", "method" => method))
    }
}
