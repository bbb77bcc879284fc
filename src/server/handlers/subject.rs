//! `RevokeSubject`: a cut-off revoking every token of a subject issued
//! before a time, with a key holding `revoke`.

use tonic::Request;
use tracing::debug;

use super::{source_address, RevocationApi};
use crate::auth::{Access, Role};
use crate::pb::{RevokeSubjectRequest, RevokeSubjectResponse};
use crate::server::error::ApiError;
use crate::server::limits;
use crate::store::{Provenance, SubjectCutoff};
use crate::time::unix_now;

impl RevocationApi {
    /// `RevokeSubject`: stores the cut-off, kept as long as a token issued
    /// just before it may live. One that could cover no live token is
    /// answered without being stored.
    pub(crate) async fn revoke_subject(
        &self,
        request: Request<RevokeSubjectRequest>,
    ) -> Result<RevokeSubjectResponse, ApiError> {
        let caller = self.caller(&request)?;
        let caller = Access::require(caller.as_ref(), &[Role::Revoke])?;
        self.take_rate(caller)?;
        let source = source_address(&request);
        let request = request.get_ref();
        limits::identifier("subject", &request.subject)?;
        limits::reason(&request.reason)?;
        let issuer = self.issuer(&request.issuer)?;
        let now = unix_now();
        let policy = &self.state.policy;
        let not_before = cutoff_time(request.not_before, now, policy.leeway)?;
        let keep_until = not_before + policy.max_token_lifetime + policy.leeway;
        if keep_until <= now {
            // Every token it would cover has expired already.
            return Ok(RevokeSubjectResponse {
                not_before,
                cursor: String::new(),
            });
        }
        let cutoff = SubjectCutoff {
            issuer,
            subject: request.subject.clone(),
            not_before,
            keep_until,
            provenance: Provenance {
                at: now,
                by: caller.name.clone(),
                reason: request.reason.clone(),
                source,
            },
        };
        self.store_cutoff(&cutoff, now).await
    }

    /// Stores `cutoff` and counts it in `revocd_subject_cutoffs_total`.
    async fn store_cutoff(
        &self,
        cutoff: &SubjectCutoff,
        now: i64,
    ) -> Result<RevokeSubjectResponse, ApiError> {
        let outcome = self.state.store.revoke_subject(cutoff, now).await?;
        metrics::counter!("revocd_subject_cutoffs_total").increment(1);
        debug!(
            subject = cutoff.subject,
            not_before = outcome.not_before,
            "subject cut-off"
        );
        Ok(RevokeSubjectResponse {
            not_before: outcome.not_before,
            cursor: outcome.cursor.unwrap_or_default(),
        })
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
}
