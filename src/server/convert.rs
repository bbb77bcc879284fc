//! Conversions between the store's types and the wire (`pb`) types, at the
//! service boundary: records and audit entries out, filters and
//! subscriptions in, and the answers of `Revoke` and `Check`.

use tonic::Status;

use super::error::ApiError;
use crate::hub::SubscribeParams;
use crate::pb;
use crate::store::{AuditEntry, Cutoff, Record, RecordFilter, RecordKind, Revocation};
use crate::store::{RevokeOutcome, TokenStatus};

// === out: store -> wire ===

impl From<&Record> for pb::RevocationRecord {
    fn from(record: &Record) -> Self {
        let provenance = record.provenance();
        let record_field = match record {
            Record::Token(r) => pb::revocation_record::Record::Token(pb::TokenRevocation {
                issuer: r.issuer.clone(),
                jti: r.jti.clone(),
                subject: r.subject.clone(),
                expires_at: r.expires_at,
                keep_until: r.keep_until,
            }),
            Record::Cutoff(c) if c.is_subject() => {
                pb::revocation_record::Record::Subject(pb::SubjectRevocation {
                    issuer: c.issuer.clone(),
                    subject: c.value.clone(),
                    not_before: c.not_before,
                    keep_until: c.keep_until,
                })
            }
            Record::Cutoff(c) => pb::revocation_record::Record::Claim(pb::ClaimRevocation {
                issuer: c.issuer.clone(),
                claim: c.claim.clone(),
                value: c.value.clone(),
                not_before: c.not_before,
                keep_until: c.keep_until,
            }),
        };
        pb::RevocationRecord {
            record: Some(record_field),
            revoked_at: provenance.at,
            actor: provenance.by.clone(),
            reason: provenance.reason.clone(),
            source: provenance.source.clone(),
        }
    }
}

impl From<&AuditEntry> for pb::ChangeRecord {
    fn from(entry: &AuditEntry) -> Self {
        pb::ChangeRecord {
            cursor: entry.cursor.clone(),
            logged_at_ms: entry.logged_at_ms,
            record: Some(pb::RevocationRecord::from(&entry.record)),
        }
    }
}

/// A batch item that failed: its status's code and message, no response.
impl From<ApiError> for pb::RevokeBatchResult {
    fn from(error: ApiError) -> Self {
        let status = Status::from(error);
        pb::RevokeBatchResult {
            code: status.code() as i32,
            error: status.message().to_owned(),
            ..Default::default()
        }
    }
}

/// The answer to a `Revoke` that stored `revocation`.
pub fn revoke_response(revocation: &Revocation, outcome: RevokeOutcome) -> pb::RevokeResponse {
    pb::RevokeResponse {
        newly_revoked: outcome.newly_revoked,
        expires_at: revocation.expires_at,
        cursor: outcome.cursor.unwrap_or_default(),
    }
}

/// Builds the answer to `Check`. `issued_at` is `Some` for a check by token
/// (then the cut-offs apply, a subject's first); a token without `iat`
/// cannot show it was issued after a cut-off, so any cut-off revokes it.
/// Takes the status by value: its texts move into the answer.
pub fn check_response(status: TokenStatus, issued_at: Option<Option<i64>>) -> pb::CheckResponse {
    if let Some(revocation) = status.revocation {
        return pb::CheckResponse {
            revoked: true,
            revoked_at: revocation.provenance.at,
            expires_at: revocation.expires_at,
            reason: revocation.provenance.reason,
            revoked_by: revocation.provenance.by,
            by_subject: false,
            not_before: 0,
            claim: String::new(),
        };
    }
    let Some(iat) = issued_at else {
        return pb::CheckResponse::default();
    };
    let mut cutoffs = status.cutoffs;
    let covers = |cutoff: &Cutoff| iat.is_none_or(|iat| iat < cutoff.not_before);
    let chosen = cutoffs
        .iter()
        .position(|cutoff| covers(cutoff) && cutoff.is_subject())
        .or_else(|| cutoffs.iter().position(covers));
    match chosen {
        Some(index) => cut_off(cutoffs.swap_remove(index)),
        None => pb::CheckResponse::default(),
    }
}

/// "Revoked by a cut-off".
fn cut_off(cutoff: Cutoff) -> pb::CheckResponse {
    pb::CheckResponse {
        revoked: true,
        revoked_at: cutoff.provenance.at,
        expires_at: 0,
        by_subject: cutoff.is_subject(),
        reason: cutoff.provenance.reason,
        revoked_by: cutoff.provenance.by,
        not_before: cutoff.not_before,
        claim: cutoff.claim,
    }
}

// === in: wire -> store ===

/// The store's filter of a listing's filter. Its text fields are checked
/// by the caller (`page_request`); here only `kind` and the times.
///
/// # Errors
/// A negative time or an unknown `kind`.
pub fn record_filter(filter: pb::RecordFilter) -> Result<RecordFilter, ApiError> {
    if filter.since < 0 || filter.until < 0 {
        return Err(ApiError::invalid(
            "`filter.since` and `filter.until` are unix seconds, not negative",
        ));
    }
    let kind = match pb::RecordKind::try_from(filter.kind) {
        Ok(pb::RecordKind::Any) => None,
        Ok(pb::RecordKind::Token) => Some(RecordKind::Token),
        Ok(pb::RecordKind::Subject) => Some(RecordKind::Subject),
        Ok(pb::RecordKind::Claim) => Some(RecordKind::Claim),
        Err(_) => return Err(ApiError::invalid("`filter.kind` is not a known RecordKind")),
    };
    Ok(RecordFilter {
        kind,
        subject: filter.subject,
        issuer: filter.issuer,
        actor: filter.actor,
        since: filter.since,
        until: filter.until,
    })
}

impl From<pb::SubscribeRequest> for SubscribeParams {
    fn from(request: pb::SubscribeRequest) -> Self {
        SubscribeParams {
            cursor: request.cursor,
            generation: request.generation,
            gateway_id: request.gateway_id,
            protocol: request.protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Provenance;

    fn provenance(at: i64, by: &str) -> Provenance {
        Provenance {
            at,
            by: by.into(),
            reason: "logout".into(),
            source: "10.0.0.1:4242".into(),
        }
    }

    fn cutoff() -> Cutoff {
        Cutoff {
            issuer: "https://issuer.test".into(),
            claim: "sub".into(),
            value: "alice".into(),
            not_before: 1_000,
            keep_until: 2_000,
            provenance: provenance(900, "auth-server"),
        }
    }

    #[test]
    fn a_cutoff_revokes_tokens_issued_before_it_not_at_it() {
        let status = TokenStatus {
            revocation: None,
            cutoffs: vec![cutoff()],
        };
        let revoked = |iat| check_response(status.clone(), Some(iat)).revoked;
        assert!(revoked(Some(999)));
        assert!(!revoked(Some(1_000)));
        assert!(
            revoked(None),
            "without `iat` a token cannot show it is newer"
        );
        assert!(
            !check_response(status.clone(), None).revoked,
            "a check by jti does not see cut-offs"
        );
        let answer = check_response(status.clone(), Some(Some(999)));
        assert!(answer.by_subject && answer.not_before == 1_000 && answer.expires_at == 0);
        assert_eq!(answer.claim, "sub");
    }

    #[test]
    fn a_check_names_the_claim_of_the_cutoff_that_covers_the_token() {
        let session = Cutoff {
            claim: "sid".into(),
            value: "s-1".into(),
            not_before: 1_500,
            ..cutoff()
        };
        let status = TokenStatus {
            revocation: None,
            cutoffs: vec![session.clone(), cutoff()],
        };
        let answer = check_response(status.clone(), Some(Some(1_200)));
        assert!(answer.revoked && !answer.by_subject);
        assert_eq!((answer.claim.as_str(), answer.not_before), ("sid", 1_500));
        let answer = check_response(status.clone(), Some(Some(900)));
        assert!(
            answer.by_subject,
            "the subject's comes first when both cover"
        );
        assert!(!check_response(status.clone(), Some(Some(1_500))).revoked);
        let message = pb::RevocationRecord::from(&Record::Cutoff(session));
        let Some(pb::revocation_record::Record::Claim(claim)) = message.record else {
            panic!("a claim record: {message:?}");
        };
        assert_eq!((claim.claim.as_str(), claim.value.as_str()), ("sid", "s-1"));
    }

    #[test]
    fn records_keep_their_provenance_on_the_wire() {
        let message = pb::RevocationRecord::from(&Record::Cutoff(cutoff()));
        assert_eq!(message.revoked_at, 900);
        assert_eq!(message.actor, "auth-server");
        assert_eq!(message.source, "10.0.0.1:4242");
        let Some(pb::revocation_record::Record::Subject(subject)) = message.record else {
            panic!("a subject record: {message:?}");
        };
        assert_eq!(
            (subject.subject.as_str(), subject.not_before),
            ("alice", 1_000)
        );
    }

    #[test]
    fn a_failed_batch_item_carries_its_status() {
        let result = pb::RevokeBatchResult::from(ApiError::invalid("`jti` is empty"));
        assert_eq!(result.code, tonic::Code::InvalidArgument as i32);
        assert_eq!(result.error, "`jti` is empty");
        assert!(result.response.is_none());
    }

    #[test]
    fn listing_filters_refuse_negative_times_and_unknown_kinds() {
        let negative = pb::RecordFilter {
            since: -1,
            ..Default::default()
        };
        assert!(record_filter(negative).is_err());
        let unknown = pb::RecordFilter {
            kind: 99,
            ..Default::default()
        };
        assert!(record_filter(unknown).is_err());
        let tokens = pb::RecordFilter {
            kind: pb::RecordKind::Token as i32,
            ..Default::default()
        };
        assert_eq!(record_filter(tokens).unwrap().kind, Some(RecordKind::Token));
    }
}
