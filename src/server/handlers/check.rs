//! `Check`: whether a token is revoked, answered from the store, for keys
//! holding `read` or `subscribe`.

use tonic::Request;

use super::RevocationApi;
use crate::auth::{Access, Role};
use crate::bounds::TokenBounds;
use crate::pb::{CheckRequest, CheckResponse};
use crate::server::convert::check_response;
use crate::server::error::ApiError;
use crate::server::limits;
use crate::time::unix_now;

impl RevocationApi {
    /// `Check`: by `jti` (its own revocation only) or by the token (its
    /// revocation, then its subject's cut-off).
    pub(crate) async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<CheckResponse, ApiError> {
        let caller = self.caller(&request)?;
        Access::require(caller.as_ref(), &[Role::Read, Role::Subscribe])?;
        let request = request.get_ref();
        let now = unix_now();
        if request.token.is_empty() {
            return self.check_jti(request, now).await;
        }
        if !request.jti.is_empty() || !request.issuer.is_empty() {
            return Err(ApiError::invalid(
                "set either `token` or `jti`/`issuer`, not both",
            ));
        }
        self.check_token(&request.token, now).await
    }

    /// A check by `jti`: cut-offs are not seen, having no `iat` to judge.
    async fn check_jti(&self, request: &CheckRequest, now: i64) -> Result<CheckResponse, ApiError> {
        limits::identifier("jti", &request.jti)?;
        let issuer = self.issuer(&request.issuer)?;
        let status = self
            .state
            .store
            .status(&issuer, Some(&request.jti), None, now)
            .await?;
        Ok(check_response(&status, None))
    }

    /// A check by token. What gateways refuse, because no record could be
    /// kept for its whole life, gets no "not revoked" from here either.
    async fn check_token(&self, token: &str, now: i64) -> Result<CheckResponse, ApiError> {
        let claims = self.state.verifier.verify(token)?;
        let bounds = TokenBounds {
            leeway: self.state.policy.leeway,
            max_token_lifetime: self.state.policy.max_token_lifetime,
        };
        bounds
            .judge(&claims, now)
            .map_err(|error| ApiError::invalid(format!("{error}; gateways refuse it")))?;
        if claims.jti.is_none() && claims.subject.is_none() {
            return Err(ApiError::invalid(
                "the token has neither `jti` nor `sub`; nothing can revoke it",
            ));
        }
        let status = self
            .state
            .store
            .status(
                &claims.issuer,
                claims.jti.as_deref(),
                claims.subject.as_deref(),
                now,
            )
            .await?;
        Ok(check_response(&status, Some(claims.issued_at)))
    }
}
