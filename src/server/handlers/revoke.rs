//! `Revoke`: one token, by the token itself (with a key, or keyless by its
//! holder) or by `jti` and `expires_at` (with a key holding `revoke`).

use std::net::IpAddr;

use tonic::Request;
use tracing::debug;

use super::{count_revocations, over_live_quota, source_address, RevocationApi};
use crate::auth::{Access, Caller, Role};
use crate::pb::{RevokeRequest, RevokeResponse};
use crate::server::convert::revoke_response;
use crate::server::error::ApiError;
use crate::server::limits;
use crate::store::{Provenance, Revocation};
use crate::time::unix_now;

/// The author recorded for a token that revoked itself.
const SELF_AUTHOR: &str = "self";

/// A checked `Revoke` item.
pub(super) enum Prepared {
    /// A revocation to store.
    Store(Revocation),
    /// The token has expired: the answer, with nothing to store.
    Expired(RevokeResponse),
}

/// The token a `Revoke` item names, and who revokes it.
struct Target {
    issuer: String,
    jti: String,
    /// Empty when revoked by jti.
    subject: String,
    expires_at: i64,
    /// The key's name, or [`SELF_AUTHOR`].
    by: String,
}

impl RevocationApi {
    /// `Revoke`: stores the revocation after the caller's quota (a key's
    /// rate and live quotas, or the keyless ones) allows it.
    pub(crate) async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<RevokeResponse, ApiError> {
        let caller = self.caller(&request)?;
        let source = source_address(&request);
        let source_ip = request.remote_addr().map(|address| address.ip());
        let now = unix_now();
        let revocation =
            match self.prepare_revocation(caller.as_ref(), request.into_inner(), &source, now)? {
                Prepared::Store(revocation) => revocation,
                Prepared::Expired(response) => return Ok(response),
            };
        let live_quota = self.take_quota(caller.as_ref(), &revocation, source_ip)?;
        let outcome = self
            .state
            .store
            .revoke_batch(std::slice::from_ref(&revocation), now, live_quota)
            .await?
            .pop()
            .unwrap_or_default();
        if outcome.over_quota {
            return Err(over_live_quota(&revocation.provenance.by, live_quota));
        }
        count_revocations([&outcome]);
        debug!(
            jti = revocation.jti,
            by = revocation.provenance.by,
            newly = outcome.newly_revoked,
            "revoked"
        );
        Ok(revoke_response(&revocation, outcome))
    }

    /// Takes the rate quota of a key, or the keyless quotas; returns the
    /// key's live quota, if any.
    fn take_quota(
        &self,
        caller: Option<&Caller>,
        revocation: &Revocation,
        source_ip: Option<IpAddr>,
    ) -> Result<Option<u64>, ApiError> {
        match caller {
            Some(caller) => {
                self.take_rate(caller)?;
                Ok(caller.limits.max_live_revocations)
            }
            None => {
                self.take_keyless(revocation, source_ip)?;
                Ok(None)
            }
        }
    }

    /// Checks one `Revoke` request and builds the record it stores.
    pub(super) fn prepare_revocation(
        &self,
        caller: Option<&Caller>,
        request: RevokeRequest,
        source: &str,
        now: i64,
    ) -> Result<Prepared, ApiError> {
        limits::reason(&request.reason)?;
        let target = if request.token.is_empty() {
            self.target_by_jti(caller, &request)?
        } else {
            self.target_by_token(caller, &request)?
        };
        self.check_expiry(target.expires_at, now)?;
        let keep_until = target.expires_at + self.state.policy.leeway;
        if keep_until <= now {
            debug!(jti = target.jti, "token already expired; nothing to revoke");
            return Ok(Prepared::Expired(RevokeResponse {
                newly_revoked: false,
                expires_at: target.expires_at,
                cursor: String::new(),
            }));
        }
        Ok(Prepared::Store(Revocation {
            issuer: target.issuer,
            jti: target.jti,
            subject: target.subject,
            expires_at: target.expires_at,
            keep_until,
            provenance: Provenance {
                at: now,
                by: target.by,
                reason: request.reason,
                source: source.to_owned(),
            },
        }))
    }

    /// A revocation by `jti` and `expires_at`: only with the role `revoke`.
    fn target_by_jti(
        &self,
        caller: Option<&Caller>,
        request: &RevokeRequest,
    ) -> Result<Target, ApiError> {
        let caller = Access::require(caller, &[Role::Revoke])?;
        if request.jti.is_empty() {
            return Err(ApiError::invalid("set `token`, or `jti` with `expires_at`"));
        }
        limits::identifier("jti", &request.jti)?;
        if request.expires_at == 0 {
            return Err(ApiError::invalid("`expires_at` is required with `jti`"));
        }
        Ok(Target {
            issuer: self.issuer(&request.issuer)?,
            jti: request.jti.clone(),
            subject: String::new(),
            expires_at: request.expires_at,
            by: caller.name.clone(),
        })
    }

    /// A revocation by the token itself: anyone holding a valid token may
    /// revoke it, with a key or without.
    fn target_by_token(
        &self,
        caller: Option<&Caller>,
        request: &RevokeRequest,
    ) -> Result<Target, ApiError> {
        if !request.jti.is_empty() || request.expires_at != 0 || !request.issuer.is_empty() {
            return Err(ApiError::invalid(
                "set either `token` or `jti`/`expires_at`/`issuer`, not both",
            ));
        }
        let claims = self.state.verifier.verify(&request.token)?;
        let jti = claims.jti.ok_or_else(|| {
            ApiError::invalid(
                "the token has no `jti` claim, so it cannot be revoked alone; revoke its subject with RevokeSubject",
            )
        })?;
        limits::identifier("jti", &jti)?;
        Ok(Target {
            issuer: claims.issuer,
            jti,
            subject: claims.subject.unwrap_or_default(),
            // `verify` guarantees `exp` is present.
            expires_at: claims.expires_at.unwrap_or_default(),
            by: caller.map_or_else(|| SELF_AUTHOR.to_owned(), |c| c.name.clone()),
        })
    }

    /// `expires_at` must be positive and within `--max-token-lifetime`.
    fn check_expiry(&self, expires_at: i64, now: i64) -> Result<(), ApiError> {
        let policy = &self.state.policy;
        if expires_at < 0 {
            return Err(ApiError::invalid(
                "`expires_at` is negative; it is unix seconds",
            ));
        }
        let latest = now + policy.max_token_lifetime + policy.leeway;
        if expires_at > latest {
            return Err(ApiError::invalid(format!(
                "`expires_at` is {} s from now, beyond the longest token lifetime this server accepts ({} s); if your tokens really live that long, raise --max-token-lifetime",
                expires_at - now,
                policy.max_token_lifetime
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tonic::Code;

    use super::super::testing::{self, api, api_with, refusal, request, sign, token, ISSUER};
    use super::*;

    fn by_jti(jti: &str) -> RevokeRequest {
        RevokeRequest {
            jti: jti.into(),
            expires_at: unix_now() + 600,
            ..Default::default()
        }
    }

    fn by_token(token: String) -> RevokeRequest {
        RevokeRequest {
            token,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn revoking_by_jti_needs_the_revoke_role() {
        let api = api().await;
        let refused = |key| api.revoke(request(by_jti("j-1"), key));
        assert_eq!(
            refusal(refused(testing::READ).await).0,
            Code::PermissionDenied
        );
        assert_eq!(
            refusal(refused(testing::SUBSCRIBE).await).0,
            Code::PermissionDenied
        );
        assert_eq!(
            refusal(refused(testing::KEYLESS).await).0,
            Code::Unauthenticated
        );
        let first = api
            .revoke(request(by_jti("j-1"), testing::REVOKE))
            .await
            .unwrap();
        assert!(first.newly_revoked && !first.cursor.is_empty());
        let again = api
            .revoke(request(by_jti("j-1"), testing::ADMIN))
            .await
            .unwrap();
        assert!(!again.newly_revoked, "revoking twice changes nothing");
    }

    #[tokio::test]
    async fn a_malformed_token_is_an_invalid_argument() {
        let api = api().await;
        let malformed = api.revoke(request(by_token("not-a-jwt".into()), testing::REVOKE));
        let (code, message) = refusal(malformed.await);
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.starts_with("token is malformed"), "{message}");
        // Alice's claims under a signature made for Bob's.
        let (alice, bob) = (token("alice", "a"), token("bob", "b"));
        let part = |token: &str, n: usize| token.split('.').nth(n).unwrap().to_owned();
        let forged = [part(&alice, 0), part(&alice, 1), part(&bob, 2)].join(".");
        let (code, message) = refusal(
            api.revoke(request(by_token(forged), testing::KEYLESS))
                .await,
        );
        assert_eq!(
            (code, message.as_str()),
            (Code::Unauthenticated, "token signature does not verify")
        );
    }

    #[tokio::test]
    async fn an_expired_token_is_answered_and_nothing_stored() {
        let api = api().await;
        let now = unix_now();
        let expired = sign(&json!({
            "iss": ISSUER, "sub": "alice", "jti": "old", "iat": now - 7_200, "exp": now - 3_600,
        }));
        let answer = api
            .revoke(request(by_token(expired), testing::KEYLESS))
            .await
            .unwrap();
        assert!(!answer.newly_revoked && answer.cursor.is_empty());
        assert_eq!(answer.expires_at, now - 3_600);
        assert_eq!(api.state.store.counts(now).await.unwrap().revocations, 0);
    }

    #[tokio::test]
    async fn a_token_revokes_itself_without_a_key_within_the_keyless_quota() {
        let api = api_with(|policy| policy.keyless.per_subject_per_minute = 1).await;
        let own = request(by_token(token("alice", "a-1")), testing::KEYLESS);
        assert!(api.revoke(own).await.unwrap().newly_revoked);
        let status = api.state.store.status(ISSUER, Some("a-1"), &[], unix_now());
        let revocation = status.await.unwrap().revocation.expect("stored");
        assert_eq!(
            (
                revocation.provenance.by.as_str(),
                revocation.subject.as_str()
            ),
            ("self", "alice")
        );
        let second = request(by_token(token("alice", "a-2")), testing::KEYLESS);
        assert_eq!(refusal(api.revoke(second).await).0, Code::ResourceExhausted);
        let with_key = request(by_token(token("alice", "a-3")), testing::REVOKE);
        assert!(
            api.revoke(with_key).await.is_ok(),
            "a key is not held to it"
        );
    }

    #[tokio::test]
    async fn a_keyless_caller_cannot_revoke_by_jti() {
        let api = api().await;
        let (code, message) = refusal(api.revoke(request(by_jti("j"), testing::KEYLESS)).await);
        assert_eq!(code, Code::Unauthenticated);
        assert!(message.contains("needs an API key"), "{message}");
    }

    #[tokio::test]
    async fn fields_are_checked_before_anything_is_stored() {
        let api = api().await;
        let mixed = RevokeRequest {
            jti: "j".into(),
            ..by_token(token("alice", "j"))
        };
        let far = RevokeRequest {
            expires_at: unix_now() + 30 * 86_400,
            ..by_jti("j")
        };
        let no_expiry = RevokeRequest {
            expires_at: 0,
            ..by_jti("j")
        };
        let stranger = RevokeRequest {
            issuer: "https://elsewhere.test".into(),
            ..by_jti("j")
        };
        for (item, expected) in [
            (mixed, "not both"),
            (far, "raise --max-token-lifetime"),
            (no_expiry, "`expires_at` is required"),
            (stranger, "is not one this server accepts"),
        ] {
            let (code, message) = refusal(api.revoke(request(item, testing::REVOKE)).await);
            assert_eq!(code, Code::InvalidArgument, "{message}");
            assert!(message.contains(expected), "{message}");
        }
        assert_eq!(
            api.state
                .store
                .counts(unix_now())
                .await
                .unwrap()
                .revocations,
            0
        );
    }
}
