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
    /// `sid` (the session), when it is a string or an array of strings.
    pub session: Option<ClaimValue>,
    /// `client_id`, likewise.
    pub client_id: Option<ClaimValue>,
    /// `azp` (the authorized party), likewise.
    pub authorized_party: Option<ClaimValue>,
    /// The deployment's own revocable claims (`--revocable-claim`) the
    /// verifier was asked to read, each with its value if the token has
    /// one.
    pub other: OtherClaims,
}

/// The deployment's own revocable claims of a token: each claim read, with
/// its value if the token has one.
pub type OtherClaims = Vec<(Box<str>, Option<ClaimValue>)>;

/// A claim that cut-offs match: a string, or the strings of an array, any
/// of which a cut-off may match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    /// A string.
    One(String),
    /// The strings of an array (other elements are left out).
    Many(Vec<String>),
}

impl ClaimValue {
    /// Its strings.
    pub fn values(&self) -> &[String] {
        match self {
            ClaimValue::One(value) => std::slice::from_ref(value),
            ClaimValue::Many(values) => values,
        }
    }
}

impl From<&str> for ClaimValue {
    fn from(value: &str) -> Self {
        ClaimValue::One(value.to_owned())
    }
}

/// The claims a cut-off may match, besides the issuer-wide `*`: what
/// `RevokeClaim` accepts and gateways read.
pub const CUT_CLAIMS: [&str; 4] = ["sub", "sid", "client_id", "azp"];
/// The claim name of issuer-wide cut-offs: every token of the issuer.
pub const ISSUER_WIDE: &str = "*";

impl Claims {
    /// True when `matches` holds for a value of `claim` that a cut-off may
    /// match: each string of the claim (none when the token lacks it), and
    /// `""` for the issuer-wide `*`. `None` for a claim this library does
    /// not read.
    pub fn any_cut_value(
        &self,
        claim: &str,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Option<bool> {
        let values = match claim {
            ISSUER_WIDE => return Some(matches("")),
            "sub" => return Some(self.subject.as_deref().is_some_and(matches)),
            "sid" => &self.session,
            "client_id" => &self.client_id,
            "azp" => &self.authorized_party,
            other => {
                let (_, value) = self.other.iter().find(|(name, _)| &**name == other)?;
                value
            }
        };
        let values = values.as_ref().map_or(&[][..], ClaimValue::values);
        Some(values.iter().any(|value| matches(value)))
    }

    /// The claims a cut-off may match other than `sub`, by name: the
    /// built-in ones and those the verifier read for the deployment.
    pub fn cut_claims(&self) -> impl Iterator<Item = (&str, Option<&ClaimValue>)> {
        [
            ("sid", self.session.as_ref()),
            ("client_id", self.client_id.as_ref()),
            ("azp", self.authorized_party.as_ref()),
        ]
        .into_iter()
        .chain(
            self.other
                .iter()
                .map(|(name, value)| (&**name, value.as_ref())),
        )
    }

    /// Every (claim, value) of the token a cut-off may match: its `sub`,
    /// each string of its `sid`, `client_id` and `azp`, and `("*", "")`.
    pub fn cut_pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs = Vec::new();
        if let Some(subject) = &self.subject {
            pairs.push(("sub", subject.as_str()));
        }
        for (claim, value) in self.cut_claims() {
            let values = value.map_or(&[][..], ClaimValue::values);
            pairs.extend(values.iter().map(|value| (claim, value.as_str())));
        }
        pairs.push((ISSUER_WIDE, ""));
        pairs
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
    #[serde(default, deserialize_with = "claim_value")]
    sid: Option<ClaimValue>,
    #[serde(default, deserialize_with = "claim_value")]
    client_id: Option<ClaimValue>,
    #[serde(default, deserialize_with = "claim_value")]
    azp: Option<ClaimValue>,
}

/// A claim that cut-offs match: a string, or an array whose strings are
/// kept. Any other JSON value (a number, an object) is read as absent
/// rather than refusing the token, since no cut-off value can equal it.
pub(super) fn claim_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ClaimValue>, D::Error> {
    struct StringOrNothing;
    impl<'de> serde::de::Visitor<'de> for StringOrNothing {
        type Value = Option<ClaimValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(Some(ClaimValue::One(value.to_owned())))
        }

        fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
            Ok(Some(ClaimValue::One(value)))
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
            let mut values = Vec::new();
            while let Some(element) = seq.next_element::<ArrayElement>()? {
                values.extend(element.0);
            }
            Ok((!values.is_empty()).then_some(ClaimValue::Many(values)))
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

/// An element of an array claim: its string, or nothing for another value.
struct ArrayElement(Option<String>);

impl<'de> Deserialize<'de> for ArrayElement {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ArrayElement(match claim_value(deserializer)? {
            Some(ClaimValue::One(value)) => Some(value),
            // A nested array is no value of the claim.
            _ => None,
        }))
    }
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
            other: Vec::new(),
        }
    }
}

/// The `iss` of a token whose header has been read, before its signature
/// is checked: only to pick the keys, whose validation then requires that
/// same issuer.
pub(super) fn unverified_issuer(token: &str) -> Result<Option<String>, TokenError> {
    let claims: UnverifiedIssuer =
        serde_json::from_slice(&payload_json(token)?).map_err(unreadable_claims)?;
    Ok(claims.iss)
}

/// The JSON bytes of a token's payload (claims), decoded from base64url.
///
/// # Errors
/// [`TokenError::Malformed`] when the token has no payload or it does not
/// decode.
pub(super) fn payload_json(token: &str) -> Result<Vec<u8>, TokenError> {
    // header.payload.signature, split as jsonwebtoken splits it.
    let mut parts = token.rsplitn(3, '.');
    let payload = parts.nth(1).ok_or_else(|| {
        TokenError::Malformed("not a JWT (expected header.payload.signature in base64url)".into())
    })?;
    URL_SAFE_NO_PAD.decode(payload).map_err(unreadable_claims)
}

/// A token's whole payload: its claims by name.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// The payload of `token` as a JSON object, read without checking the
/// signature: only for a token a verifier has accepted.
///
/// # Errors
/// [`TokenError::Malformed`] for a payload that is not a JSON object.
pub fn payload_object(token: &str) -> Result<Payload, TokenError> {
    serde_json::from_slice(&payload_json(token)?).map_err(unreadable_claims)
}

/// A payload that does not read as claims.
pub(super) fn unreadable_claims(error: impl std::fmt::Display) -> TokenError {
    TokenError::Malformed(format!("unreadable claims: {error}"))
}
