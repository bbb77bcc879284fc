//! The claims revocd reads from a token: those returned once it verifies,
//! and the one (`iss`) read before, to pick the keys that may verify it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::TokenError;

/// The claims revocd reads from a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `iss`, or empty when the token has none.
    pub issuer: String,
    /// `jti`, if present.
    pub jti: Option<String>,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `exp` in unix seconds, if present.
    pub expires_at: Option<i64>,
    /// `iat` in unix seconds, if present.
    pub issued_at: Option<i64>,
}

/// The JSON shape of the claims; unknown claims are ignored, a claim given
/// twice is an error (serde rejects duplicate fields).
#[derive(Deserialize)]
pub(super) struct RawClaims {
    iss: Option<String>,
    jti: Option<String>,
    sub: Option<String>,
    /// NumericDate may be fractional (RFC 7519 §2); whole seconds are kept.
    exp: Option<f64>,
    iat: Option<f64>,
}

/// The one claim read before the signature is checked: the issuer, which
/// picks the keys to try. A duplicated `iss` is an error here too.
#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

impl From<RawClaims> for Claims {
    fn from(raw: RawClaims) -> Self {
        Claims {
            issuer: raw.iss.unwrap_or_default(),
            jti: raw.jti,
            subject: raw.sub,
            expires_at: raw.exp.map(|t| t.floor() as i64),
            issued_at: raw.iat.map(|t| t.floor() as i64),
        }
    }
}

/// The `iss` of a token whose header has been read, before its signature
/// is checked: only to pick the keys, whose validation then requires that
/// same issuer.
pub(super) fn unverified_issuer(token: &str) -> Result<Option<String>, TokenError> {
    // header.payload.signature, split as jsonwebtoken splits it.
    let mut parts = token.rsplitn(3, '.');
    let payload = parts.nth(1).ok_or_else(|| {
        TokenError::Malformed("not a JWT (expected header.payload.signature in base64url)".into())
    })?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| TokenError::Malformed(format!("unreadable claims: {e}")))?;
    let claims: UnverifiedIssuer = serde_json::from_slice(&json)
        .map_err(|e| TokenError::Malformed(format!("unreadable claims: {e}")))?;
    Ok(claims.iss)
}
