//! `RevokeSubject` and `RevokeClaim`: cut-offs revoking every token of a
//! subject, a session, a client (or every token of an issuer) issued
//! before a time, with a key holding `revoke` (`admin` for issuer-wide).

use tonic::Request;
use tracing::debug;

use super::{source_address, RevocationApi};
use crate::auth::{Access, Caller, Role};
use crate::pb::RevokeSubjectResponse;
use crate::pb::{RevokeClaimRequest, RevokeClaimResponse, RevokeSubjectRequest};
use crate::server::error::ApiError;
use crate::server::limits;
use crate::store::{Cutoff, CutoffOutcome, Provenance, SUBJECT_CLAIM};
use crate::time::unix_now;
use crate::tokens::{CUT_CLAIMS, ISSUER_WIDE};

/// What a cut-off request asks for.
pub(crate) struct CutoffRequest<'a> {
    /// Empty: the default issuer.
    pub issuer: &'a str,
    pub claim: &'a str,
    pub value: &'a str,
    /// 0: now.
    pub not_before: i64,
    pub reason: &'a str,
}

impl RevocationApi {
    /// `RevokeSubject`: the cut-off on the subject's `sub`.
    pub(crate) async fn revoke_subject(
        &self,
        request: Request<RevokeSubjectRequest>,
    ) -> Result<RevokeSubjectResponse, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Revoke])?;
        let source = source_address(&request);
        let request = request.get_ref();
        limits::identifier("subject", &request.subject)?;
        let cut = CutoffRequest {
            issuer: &request.issuer,
            claim: SUBJECT_CLAIM,
            value: &request.subject,
            not_before: request.not_before,
            reason: &request.reason,
        };
        let outcome = self.cut(caller, &cut, source).await?;
        Ok(RevokeSubjectResponse {
            not_before: outcome.not_before,
            cursor: outcome.cursor.unwrap_or_default(),
        })
    }

    /// `RevokeClaim`: the cut-off on a claim's value, or issuer-wide.
    pub(crate) async fn revoke_claim(
        &self,
        request: Request<RevokeClaimRequest>,
    ) -> Result<RevokeClaimResponse, ApiError> {
        let caller = self.caller(&request)?;
        let source = source_address(&request);
        let request = request.get_ref();
        let issuer_wide = request.claim == ISSUER_WIDE;
        // Every token of an issuer is an operator's call, not an app's.
        let roles: &[Role] = if issuer_wide { &[] } else { &[Role::Revoke] };
        let caller = Access::require(caller.as_ref(), roles)?;
        if issuer_wide {
            if !request.value.is_empty() {
                return Err(ApiError::invalid(
                    "`value` must be empty with claim `*`: the cut-off covers every token of the issuer",
                ));
            }
        } else if self.is_revocable(&request.claim) {
            limits::identifier("value", &request.value)?;
        } else {
            let configured = &self.state.policy.revocable_claims;
            let allowed: Vec<&str> = CUT_CLAIMS
                .into_iter()
                .chain(configured.iter().map(String::as_str))
                .collect();
            return Err(ApiError::invalid(format!(
                "tokens cannot be revoked by claim {:?}; the revocable claims are {} (more with --revocable-claim), and `*` for every token of the issuer",
                request.claim.chars().take(64).collect::<String>(),
                allowed.join(", ")
            )));
        }
        let cut = CutoffRequest {
            issuer: &request.issuer,
            claim: &request.claim,
            value: &request.value,
            not_before: request.not_before,
            reason: &request.reason,
        };
        let outcome = self.cut(caller, &cut, source).await?;
        Ok(RevokeClaimResponse {
            not_before: outcome.not_before,
            cursor: outcome.cursor.unwrap_or_default(),
        })
    }

    /// True for a claim `RevokeClaim` may name with a value: a built-in one
    /// or one of `--revocable-claim`.
    fn is_revocable(&self, claim: &str) -> bool {
        CUT_CLAIMS.contains(&claim)
            || self
                .state
                .policy
                .revocable_claims
                .iter()
                .any(|c| c == claim)
    }

    /// A cut-off a signed event asks for (an OpenID back-channel logout
    /// token, a security event), already verified: no API key, so no
    /// key's quota; `actor` names the event's issuer in the audit trail
    /// (`backchannel:<iss>`, `ssf:<iss>`). The claim must be revocable.
    pub(crate) async fn cut_for_event(
        &self,
        actor: &str,
        request: &CutoffRequest<'_>,
        source: String,
    ) -> Result<CutoffOutcome, ApiError> {
        if !self.is_revocable(request.claim) {
            return Err(ApiError::invalid(format!(
                "claim {:?} is not revocable here (--revocable-claim)",
                request.claim
            )));
        }
        limits::identifier("value", request.value)?;
        self.store_cut(actor, request, source).await
    }

    /// Takes the caller's rate quota, then stores the cut-off.
    async fn cut(
        &self,
        caller: &Caller,
        request: &CutoffRequest<'_>,
        source: String,
    ) -> Result<CutoffOutcome, ApiError> {
        self.take_rate(caller)?;
        self.store_cut(&caller.name, request, source).await
    }

    /// Stores a checked cut-off made by `actor`, kept as long as a token
    /// issued just before it may live, and counts it. One that could cover
    /// no live token is answered without being stored.
    async fn store_cut(
        &self,
        actor: &str,
        request: &CutoffRequest<'_>,
        source: String,
    ) -> Result<CutoffOutcome, ApiError> {
        limits::reason(request.reason)?;
        let issuer = self.issuer(request.issuer)?;
        let now = unix_now();
        let policy = &self.state.policy;
        let not_before = cutoff_time(request.not_before, now, policy.leeway)?;
        let keep_until = not_before + policy.max_token_lifetime + policy.leeway;
        if keep_until <= now {
            // Every token it would cover has expired already.
            return Ok(CutoffOutcome {
                not_before,
                cursor: None,
            });
        }
        let cutoff = Cutoff {
            issuer,
            claim: request.claim.to_owned(),
            value: request.value.to_owned(),
            not_before,
            keep_until,
            provenance: Provenance {
                at: now,
                by: actor.to_owned(),
                reason: request.reason.to_owned(),
                source,
            },
        };
        let outcome = self.state.store.cut(&cutoff, now).await?;
        if cutoff.is_subject() {
            metrics::counter!("revocd_subject_cutoffs_total").increment(1);
        } else {
            metrics::counter!("revocd_claim_cutoffs_total", "claim" => cutoff.claim.clone())
                .increment(1);
        }
        debug!(
            claim = cutoff.claim,
            not_before = outcome.not_before,
            "cut-off"
        );
        Ok(outcome)
    }
}

/// The cut-off a `RevokeSubject` asks for, at `now`: tokens with
/// `iat < cut-off` are revoked, here, in the stores and in gateways.
///
/// `iat` has whole seconds, so "now" cannot be told apart from the rest of
/// its second. `0` takes the safe side: every token issued up to and
/// including the current second is revoked (the cut-off is `now + 1`),
/// including one issued in that second after the call; a client that logs
/// in again within that second gets a token already cut off and must retry
/// once the second ends. An explicit `t` keeps its meaning (`iat == t`
/// survives) and may be as late as `now + 1 + leeway`: every token issued up
/// to the current second on an issuer whose clock runs `leeway` ahead.
fn cutoff_time(requested: i64, now: i64, leeway: i64) -> Result<i64, ApiError> {
    let latest = now + 1 + leeway;
    match requested {
        0 => Ok(now + 1),
        t if t < 0 => Err(ApiError::invalid(
            "`not_before` is negative; it is unix seconds",
        )),
        t if t > latest => Err(ApiError::invalid(format!(
            "`not_before` is {} s in the future; a cut-off applies to tokens already issued, so it may be at most the clock leeway ({leeway} s) past the current second (0 means every token issued up to now)",
            t - now
        ))),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::super::testing::{self, api, refusal, request, token, ISSUER};
    use super::*;
    use crate::pb::CheckRequest;

    fn subject(name: &str, not_before: i64) -> RevokeSubjectRequest {
        RevokeSubjectRequest {
            subject: name.into(),
            not_before,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_cutoff_needs_the_revoke_role_and_revokes_older_tokens() {
        let api = api().await;
        let read = api.revoke_subject(request(subject("alice", 0), testing::READ));
        assert_eq!(refusal(read.await).0, Code::PermissionDenied);
        let keyless = api.revoke_subject(request(subject("alice", 0), testing::KEYLESS));
        assert_eq!(refusal(keyless.await).0, Code::Unauthenticated);
        let older = token("alice", "before");
        let before = unix_now();
        let answer = api.revoke_subject(request(subject("alice", 0), testing::REVOKE));
        let answer = answer.await.unwrap();
        assert!((before + 1..=unix_now() + 1).contains(&answer.not_before));
        let check = CheckRequest {
            token: older,
            ..Default::default()
        };
        let checked = api.check(request(check, testing::READ)).await.unwrap();
        assert!(checked.revoked && checked.by_subject);
        assert_eq!(checked.revoked_by, "auth-server");
    }

    #[tokio::test]
    async fn a_cutoff_older_than_any_live_token_is_answered_not_stored() {
        let api = api().await;
        let answer = api.revoke_subject(request(subject("alice", 1), testing::REVOKE));
        let answer = answer.await.unwrap();
        assert_eq!((answer.not_before, answer.cursor.as_str()), (1, ""));
        let counts = api.state.store.counts(unix_now()).await.unwrap();
        assert_eq!(counts.subject_cutoffs, 0);
    }

    #[tokio::test]
    async fn a_cutoff_names_a_subject_and_an_accepted_issuer() {
        let api = api().await;
        let nameless = api.revoke_subject(request(subject("", 0), testing::REVOKE));
        assert_eq!(
            refusal(nameless.await),
            (Code::InvalidArgument, "`subject` is empty".into())
        );
        let elsewhere = RevokeSubjectRequest {
            issuer: format!("{ISSUER}/other"),
            ..subject("alice", 0)
        };
        let elsewhere = api.revoke_subject(request(elsewhere, testing::REVOKE));
        assert_eq!(refusal(elsewhere.await).0, Code::InvalidArgument);
    }

    #[test]
    fn a_cutoff_of_now_covers_the_current_second_and_explicit_ones_keep_theirs() {
        let (now, leeway) = (1_000, 60);
        assert_eq!(cutoff_time(0, now, leeway).unwrap(), now + 1);
        assert_eq!(cutoff_time(now - 5, now, leeway).unwrap(), now - 5);
        assert_eq!(cutoff_time(now + 1, now, 0).unwrap(), now + 1, "as 0 would");
        assert_eq!(cutoff_time(now + 61, now, leeway).unwrap(), now + 61);
        let late = cutoff_time(now + 62, now, leeway).unwrap_err().to_string();
        assert!(late.contains("future") && late.contains("60 s"), "{late}");
        assert!(cutoff_time(-1, now, leeway).is_err());
    }

    fn claim(claim: &str, value: &str, not_before: i64) -> RevokeClaimRequest {
        RevokeClaimRequest {
            claim: claim.into(),
            value: value.into(),
            not_before,
            ..Default::default()
        }
    }

    /// `claims` signed, with the handler tests' issuer, `jti` and an hour
    /// to live from `iat`.
    fn token_with(jti: &str, iat: i64, extra: serde_json::Value) -> String {
        let mut claims = serde_json::json!({
            "iss": ISSUER, "sub": "alice", "jti": jti, "iat": iat, "exp": iat + 3600,
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        testing::sign(&claims)
    }

    async fn revoked_by(api: &RevocationApi, token: String) -> (bool, String) {
        let check = CheckRequest {
            token,
            ..Default::default()
        };
        let answer = api.check(request(check, testing::READ)).await.unwrap();
        (answer.revoked, answer.claim)
    }

    #[tokio::test]
    async fn a_session_cutoff_revokes_that_sessions_older_tokens_only() {
        let api = api().await;
        let now = unix_now();
        let first = token_with("a", now - 10, serde_json::json!({ "sid": "s-1" }));
        let other = token_with("b", now - 10, serde_json::json!({ "sid": "s-2" }));
        let answer = api.revoke_claim(request(claim("sid", "s-1", 0), testing::REVOKE));
        let answer = answer.await.unwrap();
        assert_eq!(answer.not_before, now + 1);
        assert!(!answer.cursor.is_empty());
        assert_eq!(revoked_by(&api, first).await, (true, "sid".into()));
        assert_eq!(revoked_by(&api, other).await, (false, String::new()));
        let counts = api.state.store.counts(unix_now()).await.unwrap();
        assert_eq!((counts.subject_cutoffs, counts.claim_cutoffs), (0, 1));
    }

    #[tokio::test]
    async fn an_issuer_wide_cutoff_needs_admin_and_covers_every_older_token() {
        let api = api().await;
        let now = unix_now();
        let by_revoker = api.revoke_claim(request(claim("*", "", now), testing::REVOKE));
        assert_eq!(refusal(by_revoker.await).0, Code::PermissionDenied);
        let with_value = api.revoke_claim(request(claim("*", "x", now), testing::ADMIN));
        assert_eq!(refusal(with_value.await).0, Code::InvalidArgument);
        let cut = api.revoke_claim(request(claim("*", "", now - 5), testing::ADMIN));
        assert_eq!(cut.await.unwrap().not_before, now - 5);
        let older = token_with("old", now - 6, serde_json::json!({}));
        let newer = token_with("new", now - 5, serde_json::json!({}));
        assert_eq!(revoked_by(&api, older).await, (true, "*".into()));
        assert_eq!(revoked_by(&api, newer).await, (false, String::new()));
    }

    #[tokio::test]
    async fn only_the_revocable_claims_are_accepted_and_a_later_cutoff_stays() {
        let api = api().await;
        let now = unix_now();
        let unknown = api.revoke_claim(request(claim("email", "a@b", 0), testing::REVOKE));
        let (code, message) = refusal(unknown.await);
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("sid, client_id, azp"), "{message}");
        let empty = api.revoke_claim(request(claim("client_id", "", 0), testing::REVOKE));
        assert_eq!(refusal(empty.await).0, Code::InvalidArgument);
        let later = api.revoke_claim(request(claim("client_id", "app", now), testing::REVOKE));
        assert_eq!(later.await.unwrap().not_before, now);
        let earlier = claim("client_id", "app", now - 100);
        let earlier = api
            .revoke_claim(request(earlier, testing::REVOKE))
            .await
            .unwrap();
        assert_eq!((earlier.not_before, earlier.cursor.as_str()), (now, ""));
        let by_sub = api.revoke_claim(request(claim("sub", "alice", 0), testing::REVOKE));
        assert!(
            !by_sub.await.unwrap().cursor.is_empty(),
            "`sub` is RevokeSubject"
        );
        let token = token_with("t", now - 1, serde_json::json!({}));
        let check = CheckRequest {
            token,
            ..Default::default()
        };
        let answer = api.check(request(check, testing::READ)).await.unwrap();
        assert!(answer.revoked && answer.by_subject && answer.claim == "sub");
    }

    #[tokio::test]
    async fn a_deployments_own_claim_is_revocable_and_an_array_matches_any_value() {
        let api = testing::api_with(|policy| policy.revocable_claims = vec!["groups".into()]).await;
        let now = unix_now();
        let ops = token_with(
            "o",
            now - 10,
            serde_json::json!({ "groups": ["admins", "ops"] }),
        );
        let dev = token_with("d", now - 10, serde_json::json!({ "groups": ["dev"] }));
        let cut = api.revoke_claim(request(claim("groups", "ops", 0), testing::REVOKE));
        assert!(!cut.await.unwrap().cursor.is_empty());
        assert_eq!(revoked_by(&api, ops).await, (true, "groups".into()));
        assert_eq!(revoked_by(&api, dev).await, (false, String::new()));
        let email = api.revoke_claim(request(claim("email", "a@b", 0), testing::REVOKE));
        let (code, message) = refusal(email.await);
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("azp, groups"), "{message}");
    }
}
