//! Why a call failed ([`ApiError`]) and the one mapping of it to a gRPC
//! [`Status`].
//!
//! The codes are the ones clients act on: `INVALID_ARGUMENT` (fix the
//! request), `UNAUTHENTICATED` / `PERMISSION_DENIED` (fix the key),
//! `FAILED_PRECONDITION` (fix the server), `RESOURCE_EXHAUSTED` and
//! `UNAVAILABLE` (retry later), `INTERNAL` (nothing to fix on the client).
//! Store failures are logged once, here, and counted in
//! `revocd_store_errors_total{kind}`; an internal one reaches the client as
//! a generic message only.

use tonic::Status;
use tracing::{error, warn};

use super::quota::KeylessRefusal;
use crate::auth::AuthError;
use crate::hub::SubscribeError;
use crate::store;
use crate::tokens::TokenError;

/// Why a call failed, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller (or its token) is not authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The server is not set up for this call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not now; retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl ApiError {
    /// An [`ApiError::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidArgument(message.into())
    }
}

// === conversions into ApiError ===

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::NoKeys => ApiError::FailedPrecondition(error.to_string()),
            _ if error.is_malformed() => ApiError::InvalidArgument(error.to_string()),
            _ => ApiError::Unauthenticated(error.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Forbidden { .. } => ApiError::PermissionDenied(error.to_string()),
            _ => ApiError::Unauthenticated(error.to_string()),
        }
    }
}

impl From<KeylessRefusal> for ApiError {
    fn from(refusal: KeylessRefusal) -> Self {
        ApiError::ResourceExhausted(refusal.to_string())
    }
}

impl From<SubscribeError> for ApiError {
    fn from(error: SubscribeError) -> Self {
        match error {
            SubscribeError::Full => ApiError::ResourceExhausted(error.to_string()),
            SubscribeError::NotReady | SubscribeError::Closed | SubscribeError::Lagging => {
                ApiError::Unavailable(error.to_string())
            }
            SubscribeError::Outdated => ApiError::FailedPrecondition(error.to_string()),
        }
    }
}

// === the mapping to Status ===

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(message) => Status::invalid_argument(message),
            ApiError::Unauthenticated(message) => Status::unauthenticated(message),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::Unavailable(message) => Status::unavailable(message),
            ApiError::ResourceExhausted(message) => Status::resource_exhausted(message),
            ApiError::Store(cause) => store_status(cause),
        }
    }
}

/// The status of a store failure: a bad page token is the caller's
/// mistake; the rest are logged and counted, and only "retry" or "internal
/// error" reaches the caller.
fn store_status(error: store::Error) -> Status {
    match error {
        store::Error::BadPageToken => {
            Status::invalid_argument(store::Error::BadPageToken.to_string())
        }
        store::Error::NotDurable(detail) => {
            metrics::counter!("revocd_store_errors_total", "kind" => "not_durable").increment(1);
            warn!(detail, "write not confirmed durable");
            Status::unavailable(format!(
                "the write was not confirmed durable ({detail}); retry (revocations are idempotent)"
            ))
        }
        store::Error::Unavailable(cause) => {
            metrics::counter!("revocd_store_errors_total", "kind" => "unavailable").increment(1);
            warn!(error = %cause, "store unavailable");
            Status::unavailable(
                "the revocation store is unavailable; retry (revocations are idempotent)",
            )
        }
        cause => {
            metrics::counter!("revocd_store_errors_total", "kind" => "internal").increment(1);
            // Log the cause once here; the caller learns nothing internal.
            error!(error = %cause, "store error");
            Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn status(error: impl Into<ApiError>) -> Status {
        Status::from(error.into())
    }

    #[test]
    fn request_errors_keep_their_code_and_message() {
        let cases = [
            (ApiError::invalid("bad"), Code::InvalidArgument),
            (
                ApiError::Unauthenticated("who".into()),
                Code::Unauthenticated,
            ),
            (
                ApiError::PermissionDenied("no".into()),
                Code::PermissionDenied,
            ),
            (
                ApiError::FailedPrecondition("set".into()),
                Code::FailedPrecondition,
            ),
            (ApiError::Unavailable("later".into()), Code::Unavailable),
            (
                ApiError::ResourceExhausted("full".into()),
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
    }

    #[test]
    fn token_errors_split_into_malformed_unverified_and_unconfigured() {
        let malformed = status(TokenError::Malformed("not a JWT".into()));
        assert_eq!(malformed.code(), Code::InvalidArgument);
        assert_eq!(malformed.message(), "token is malformed: not a JWT");
        assert_eq!(
            status(TokenError::MissingClaim("exp")).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            status(TokenError::BadSignature).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            status(TokenError::WrongIssuer).code(),
            Code::Unauthenticated
        );
        assert_eq!(status(TokenError::NoKeys).code(), Code::FailedPrecondition);
    }

    #[test]
    fn a_missing_key_is_unauthenticated_and_a_missing_role_denied() {
        assert_eq!(status(AuthError::MissingKey).code(), Code::Unauthenticated);
        assert_eq!(status(AuthError::UnknownKey).code(), Code::Unauthenticated);
        let forbidden = AuthError::Forbidden {
            name: "reader".into(),
            needed: "revoke, admin".into(),
        };
        assert_eq!(status(forbidden).code(), Code::PermissionDenied);
    }

    #[test]
    fn refusals_of_quotas_and_subscriptions_say_when_to_retry() {
        assert_eq!(
            status(KeylessRefusal::Subject(10)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(status(SubscribeError::Full).code(), Code::ResourceExhausted);
        for error in [
            SubscribeError::NotReady,
            SubscribeError::Closed,
            SubscribeError::Lagging,
        ] {
            assert_eq!(status(error).code(), Code::Unavailable, "{error:?}");
        }
    }

    #[test]
    fn store_errors_tell_the_caller_to_retry_or_nothing_internal() {
        let bad_page = status(store::Error::BadPageToken);
        assert_eq!(bad_page.code(), Code::InvalidArgument);
        assert_eq!(bad_page.message(), store::Error::BadPageToken.to_string());
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "10.0.0.7");
        let unavailable = status(store::Error::Unavailable(store::BackendError::new(
            refused, false,
        )));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert!(
            !unavailable.message().contains("10.0.0.7"),
            "{unavailable:?}"
        );
        let not_durable = status(store::Error::NotDurable("WAITAOF 0 of 1".into()));
        assert_eq!(not_durable.code(), Code::Unavailable);
        assert!(not_durable.message().contains("retry"), "{not_durable:?}");
        let corrupt = store::Error::Corrupt {
            key: "revocd:v1:secret-key".into(),
            detail: "bad json".into(),
        };
        let internal = status(corrupt);
        assert_eq!(
            (internal.code(), internal.message()),
            (Code::Internal, "internal error")
        );
    }
}
