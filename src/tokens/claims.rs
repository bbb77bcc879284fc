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
    /// `sid` (the session), when it is a string.
    pub session: Option<String>,
    /// `client_id`, when it is a string.
    pub client_id: Option<String>,
    /// `azp` (the authorized party), when it is a string.
    pub authorized_party: Option<String>,
}

/// The claims a cut-off may match, besides the issuer-wide `*`: what
/// `RevokeClaim` accepts and gateways read.
pub const CUT_CLAIMS: [&str; 4] = ["sub", "sid", "client_id", "azp"];
/// The claim name of issuer-wide cut-offs: every token of the issuer.
pub const ISSUER_WIDE: &str = "*";

impl Claims {
    /// The value a cut-off on `claim` matches: `Some(None)` when the token
    /// lacks the claim (or it is not a string), `Some(Some(""))` for the
    /// issuer-wide `*`, and `None` for a claim this library does not read.
    pub fn cut_value(&self, claim: &str) -> Option<Option<&str>> {
        let value = match claim {
            ISSUER_WIDE => Some(""),
            "sub" => self.subject.as_deref(),
            "sid" => self.session.as_deref(),
            "client_id" => self.client_id.as_deref(),
            "azp" => self.authorized_party.as_deref(),
            _ => return None,
        };
        Some(value)
    }

    /// Every (claim, value) of the token a cut-off may match: its `sub`,
    /// `sid`, `client_id` and `azp` when present, and `("*", "")`.
    pub fn cut_pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        CUT_CLAIMS
            .into_iter()
            .chain([ISSUER_WIDE])
            .filter_map(|claim| Some((claim, self.cut_value(claim)??)))
    }
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
    #[serde(default, deserialize_with = "string_or_nothing")]
    sid: Option<String>,
    #[serde(default, deserialize_with = "string_or_nothing")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "string_or_nothing")]
    azp: Option<String>,
}

/// A claim that cut-offs match as a string: any other JSON value (a number,
/// an object) is read as absent rather than refusing the token, since no
/// cut-off value can equal it.
fn string_or_nothing<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct StringOrNothing;
    impl<'de> serde::de::Visitor<'de> for StringOrNothing {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(Some(value.to_owned()))
        }

        fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
            Ok(Some(value))
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    deserializer.deserialize_any(StringOrNothing)
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
            session: raw.sid,
            client_id: raw.client_id,
            authorized_party: raw.azp,
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
