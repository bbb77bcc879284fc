//! Claims a deployment makes revocable besides the built-in ones
//! (`--revocable-claim groups`), read from a verified token's payload only
//! when some are wanted, so tokens of deployments without any pay nothing.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::claims::{claim_value, payload_json, unreadable_claims, ClaimValue, OtherClaims};
use super::TokenError;

/// The values of the `wanted` claims of `token` (whose signature has been
/// checked), one entry per wanted claim, `None` where the token lacks it
/// or holds no string there.
///
/// # Errors
/// [`TokenError::Malformed`] for an unreadable payload or a wanted claim
/// given twice.
pub(super) fn read(token: &str, wanted: &[Box<str>]) -> Result<OtherClaims, TokenError> {
    let json = payload_json(token)?;
    let mut deserializer = serde_json::Deserializer::from_slice(&json);
    let values = Wanted(wanted)
        .deserialize(&mut deserializer)
        .map_err(unreadable_claims)?;
    Ok(wanted.iter().cloned().zip(values).collect())
}

/// Reads the values of the claims it names out of a JSON object.
struct Wanted<'a>(&'a [Box<str>]);

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Vec<Option<ClaimValue>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Vec<Option<ClaimValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values: Vec<Option<ClaimValue>> = vec![None; self.0.len()];
        let mut seen = vec![false; self.0.len()];
        while let Some(index) = map.next_key_seed(KeyIndex(self.0))? {
            let Some(index) = index else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate field `{}`",
                    self.0[index]
                )));
            }
            values[index] = map.next_value_seed(ValueSeed)?;
        }
        Ok(values)
    }
}

/// A key: the index of the wanted claim it names, `None` for another.
struct KeyIndex<'a>(&'a [Box<str>]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a claim name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|wanted| &**wanted == key))
    }
}

/// A wanted claim's value, read as the built-in ones are.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Option<ClaimValue>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        claim_value(deserializer)
    }
}
