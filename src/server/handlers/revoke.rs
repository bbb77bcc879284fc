//! `Revoke`: one token, by the token itself (with a key, or keyless by its
//! holder) or by `jti` and `expires_at` (with a key holding `revoke`).

use std::net::IpAddr;

use tonic::Request;
use tracing::debug;

use super::{count_revocation, over_live_quota, source_address, RevocationApi};
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
        count_revocation(&outcome);
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
