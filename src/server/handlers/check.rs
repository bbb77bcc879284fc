//! `Check`: whether a token is revoked, answered from the store, for keys
//! holding `read` or `subscribe`; and the same verdict as RFC 7662
//! introspection for the HTTP door.

use tonic::Request;

use super::RevocationApi;
use crate::auth::{Access, Role};
use crate::bounds::TokenBounds;
use crate::pb::{CheckRequest, CheckResponse};
use crate::server::convert::check_response;
use crate::server::error::ApiError;
use crate::server::limits;
use crate::time::unix_now;
use crate::tokens::{payload_object, Claims, Payload};

impl RevocationApi {
    /// `Check`: by `jti` (its own revocation only) or by the token (its
    /// revocation, then the cut-offs on its claims and its issuer).
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
            .status(&issuer, Some(&request.jti), &[], now)
            .await?;
        Ok(check_response(status, None))
    }

    /// A check by token.
    async fn check_token(&self, token: &str, now: i64) -> Result<CheckResponse, ApiError> {
        let (_claims, verdict) = self.judge_token(token, now).await?;
        Ok(verdict)
    }

    /// RFC 7662 introspection of a token, for a caller already authorised:
    /// its payload when it verifies, has not expired and no rule revokes
    /// it; `None` for anything else (revoked, expired, a bad signature, a
    /// foreign issuer, a token gateways refuse).
    ///
    /// # Errors
    /// Only when the store cannot say whether the token is revoked.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Option<Payload>, ApiError> {
        let now = unix_now();
        let (claims, verdict) = match self.judge_token(token, now).await {
            Ok(judged) => judged,
            Err(error @ (ApiError::Store(_) | ApiError::Unavailable(_))) => return Err(error),
            Err(_) => return Ok(None),
        };
        let expired = claims.expires_at.is_none_or(|exp| exp <= now);
        if verdict.revoked || expired {
            return Ok(None);
        }
        Ok(payload_object(token).ok())
    }

    /// A token verified and judged, with the verdict of its revocation and
    /// of the cut-offs on its claims and issuer. What gateways refuse,
    /// because no record could be kept for its whole life, gets no "not
    /// revoked" from here either.
    async fn judge_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Claims, CheckResponse), ApiError> {
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
        let cut_pairs = claims.cut_pairs();
        let status = self
            .state
            .store
            .status(&claims.issuer, claims.jti.as_deref(), &cut_pairs, now)
            .await?;
        let verdict = check_response(status, Some(claims.issued_at));
        Ok((claims, verdict))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tonic::Code;

    use super::super::testing::{self, api, refusal, request, sign, token, ISSUER};
    use super::*;
    use crate::pb::RevokeRequest;

    fn by_token(token: String) -> CheckRequest {
        CheckRequest {
            token,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_check_needs_the_read_or_subscribe_role() {
        let api = api().await;
        let check = |key| api.check(request(by_token(token("alice", "a")), key));
        assert_eq!(
            refusal(check(testing::REVOKE).await).0,
            Code::PermissionDenied
        );
        assert_eq!(
            refusal(check(testing::KEYLESS).await).0,
            Code::Unauthenticated
        );
        assert!(!check(testing::READ).await.unwrap().revoked);
        assert!(!check(testing::SUBSCRIBE).await.unwrap().revoked);
    }

    #[tokio::test]
    async fn a_revoked_token_is_seen_by_token_and_by_jti() {
        let api = api().await;
        let revoke = RevokeRequest {
            token: token("alice", "a-1"),
            reason: "logout".into(),
            ..Default::default()
        };
        api.revoke(request(revoke, testing::REVOKE)).await.unwrap();
        let checked = api.check(request(by_token(token("alice", "a-1")), testing::READ));
        let checked = checked.await.unwrap();
        assert!(checked.revoked && !checked.by_subject);
        assert_eq!(
            (checked.reason.as_str(), checked.revoked_by.as_str()),
            ("logout", "auth-server")
        );
        let jti = CheckRequest {
            jti: "a-1".into(),
            ..Default::default()
        };
        assert!(
            api.check(request(jti, testing::READ))
                .await
                .unwrap()
                .revoked
        );
    }

    #[tokio::test]
    async fn a_token_gateways_refuse_gets_no_answer() {
        let api = api().await;
        let now = unix_now();
        let long_lived = sign(&json!({
            "iss": ISSUER, "sub": "alice", "jti": "long", "iat": now, "exp": now + 30 * 86_400,
        }));
        let (code, message) = refusal(
            api.check(request(by_token(long_lived), testing::READ))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument);
        assert!(
            message.contains("longer than") && message.ends_with("; gateways refuse it"),
            "{message}"
        );
        let no_iat = sign(&json!({ "iss": ISSUER, "sub": "alice", "exp": now + 60 }));
        let (code, message) = refusal(api.check(request(by_token(no_iat), testing::READ)).await);
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("no `iat` claim"), "{message}");
    }

    #[tokio::test]
    async fn a_check_names_its_token_one_way_and_something_revocable() {
        let api = api().await;
        let both = CheckRequest {
            jti: "a".into(),
            ..by_token(token("alice", "a"))
        };
        let (code, message) = refusal(api.check(request(both, testing::READ)).await);
        assert_eq!(
            (code, message.as_str()),
            (
                Code::InvalidArgument,
                "set either `token` or `jti`/`issuer`, not both"
            )
        );
        let malformed = api.check(request(by_token("a.b".into()), testing::READ));
        assert_eq!(refusal(malformed.await).0, Code::InvalidArgument);
        let now = unix_now();
        let anonymous = sign(&json!({ "iss": ISSUER, "iat": now, "exp": now + 60 }));
        let (code, message) = refusal(api.check(request(by_token(anonymous), testing::READ)).await);
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("neither `jti` nor `sub`"), "{message}");
    }
}
