//! Envoy's `envoy.service.auth.v3.Authorization/Check`, answered with the
//! same decision as forward-auth: OK with the `x-auth-*` headers added
//! upstream, or UNAUTHENTICATED with an HTTP 401 (503 when stale under
//! `fail-closed`) and the same `WWW-Authenticate` challenge.

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::{Agent, Decision};
use crate::gateway::challenge;

/// The ext_authz service over an [`Agent`].
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    agent: Agent,
}

impl ExtAuthz {
    /// The service deciding with `agent`.
    pub fn new(agent: Agent) -> Self {
        ExtAuthz { agent }
    }
}

/// Serves ext_authz on `listener` until `stop`.
pub(super) async fn serve(
    listener: TcpListener,
    agent: Agent,
    stop: CancellationToken,
) -> Result<(), super::AgentError> {
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(ExtAuthz::new(agent)))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        )
        .await?;
    Ok(())
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // Envoy sends header names in lower case, as does `HeaderName`.
        let header = self.agent.token_header().as_str();
        let value = request
            .get_ref()
            .get_client_headers()
            .and_then(|headers| headers.get(header))
            .map(String::as_str);
        let response = match self.agent.decide(value).await {
            Decision::Allow(claims) => {
                let mut ok = OkHttpResponseBuilder::new();
                // Replace what the client sent, never append to it: an
                // upstream reading the first value must see ours.
                for (name, value) in super::identity(&claims) {
                    match value {
                        Some(value) => {
                            ok.add_header(
                                name,
                                value,
                                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                                false,
                            );
                        }
                        None => {
                            ok.remove_header(name);
                        }
                    }
                }
                let mut response = CheckResponse::with_status(Status::ok(""));
                response.set_http_response(ok);
                response
            }
            Decision::Deny(denial) => {
                let (status, http_status) = if denial.is_unavailable() {
                    (
                        Status::unavailable(denial.to_string()),
                        HttpStatusCode::ServiceUnavailable,
                    )
                } else {
                    (
                        Status::unauthenticated(denial.to_string()),
                        HttpStatusCode::Unauthorized,
                    )
                };
                let challenge = challenge(&denial);
                let mut denied = DeniedHttpResponseBuilder::new();
                denied.set_http_status(http_status);
                denied.add_header(
                    "www-authenticate",
                    challenge.to_str().unwrap_or("Bearer"),
                    None,
                    false,
                );
                let mut response = CheckResponse::with_status(status);
                response.set_http_response(denied);
                response
            }
        };
        Ok(Response::new(response))
    }
}
