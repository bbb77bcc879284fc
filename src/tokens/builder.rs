//! [`TokenVerifierBuilder`]: keys, issuers, audiences and leeway, put
//! together into a [`TokenVerifier`] with each key under the issuer it
//! verifies.

use std::path::Path;

use jsonwebtoken::{Algorithm, Validation};

use super::keys::{jwks_keys, pem_key, read_trimmed, secret_key, TrustedKey};
use super::verifier::IssuerKeys;
use super::{KeyError, TokenVerifier, UnboundKeys};

/// A key as added to the builder: the issuer it is bound to, if any.
struct AddedKey {
    issuer: Option<String>,
    /// Its file, or what stands for a key given directly, for errors.
    source: String,
    key: TrustedKey,
}

/// Builds a [`TokenVerifier`] from key files and settings.
#[derive(Default)]
pub struct TokenVerifierBuilder {
    keys: Vec<AddedKey>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway_seconds: u64,
}

// === impl TokenVerifierBuilder ===

impl TokenVerifierBuilder {
    /// Trusts an HMAC secret for `HS256`, bound to no issuer (see the
    /// module doc).
    ///
    /// # Errors
    /// An empty secret.
    pub fn hs256_secret(self, secret: &[u8]) -> Result<Self, KeyError> {
        let key = secret_key(secret, Path::new("HS256 secret"))?;
        Ok(self.add(None, "an HS256 secret given directly", vec![key]))
    }

    /// Trusts the HMAC secret in a file, bound to no issuer; surrounding
    /// whitespace is ignored.
    ///
    /// # Errors
    /// An unreadable file or an empty secret.
    pub fn hs256_secret_file(self, path: &Path) -> Result<Self, KeyError> {
        let key = secret_key(&read_trimmed(path)?, path)?;
        Ok(self.add(None, &path.display().to_string(), vec![key]))
    }

    /// Trusts a PEM public key (RSA, EC P-256/P-384, or Ed25519), bound to
    /// no issuer.
    ///
    /// # Errors
    /// An unreadable file or one with no public key of these kinds.
    pub fn public_key_pem_file(self, path: &Path) -> Result<Self, KeyError> {
        let key = pem_key(&read_trimmed(path)?, path)?;
        Ok(self.add(None, &path.display().to_string(), vec![key]))
    }

    /// Trusts every signing key of a JWKS file, under its `kid`, bound to
    /// no issuer.
    ///
    /// # Errors
    /// An unreadable file, invalid JSON, or a key that cannot be used.
    pub fn jwks_file(self, path: &Path) -> Result<Self, KeyError> {
        let keys = jwks_keys(&read_trimmed(path)?, path)?;
        Ok(self.add(None, &path.display().to_string(), keys))
    }

    /// Trusts an HMAC secret for `HS256` tokens of `issuer` only.
    ///
    /// # Errors
    /// An empty secret.
    pub fn issuer_hs256_secret(self, issuer: &str, secret: &[u8]) -> Result<Self, KeyError> {
        let key = secret_key(secret, Path::new("HS256 secret"))?;
        Ok(self.add(Some(issuer), "an HS256 secret given directly", vec![key]))
    }

    /// Trusts the HMAC secret in a file for tokens of `issuer` only;
    /// surrounding whitespace is ignored.
    ///
    /// # Errors
    /// An unreadable file or an empty secret.
    pub fn issuer_hs256_secret_file(self, issuer: &str, path: &Path) -> Result<Self, KeyError> {
        let key = secret_key(&read_trimmed(path)?, path)?;
        Ok(self.add(Some(issuer), &path.display().to_string(), vec![key]))
    }

    /// Trusts the public keys of a file for tokens of `issuer` only: a JWKS
    /// (a JSON object, keys matched by `kid`) or a PEM public key, told
    /// apart by the first character. Never an HMAC secret: a public key
    /// read as one would let anyone sign.
    ///
    /// # Errors
    /// An unreadable file, or one that is neither a usable JWKS nor a PEM
    /// public key.
    pub fn issuer_key_file(self, issuer: &str, path: &Path) -> Result<Self, KeyError> {
        let text = read_trimmed(path)?;
        let keys = match text.first() {
            Some(b'{') => jwks_keys(&text, path)?,
            _ => vec![pem_key(&text, path)?],
        };
        Ok(self.add(Some(issuer), &path.display().to_string(), keys))
    }

    fn add(mut self, issuer: Option<&str>, source: &str, keys: Vec<TrustedKey>) -> Self {
        self.keys.extend(keys.into_iter().map(|key| AddedKey {
            issuer: issuer.map(str::to_owned),
            source: source.to_owned(),
            key,
        }));
        self
    }

    /// Accepts only tokens whose `iss` is one of `issuers` or an issuer a
    /// key is bound to (none of either: any issuer). Unbound keys belong to
    /// the one accepted issuer, if there is exactly one.
    pub fn issuers(mut self, issuers: &[String]) -> Self {
        self.issuers = issuers.to_vec();
        self
    }

    /// Accepts only tokens whose `aud` names one of `audiences` (none: any,
    /// and `aud` is not checked).
    pub fn audiences(mut self, audiences: &[String]) -> Self {
        self.audiences = audiences.to_vec();
        self
    }

    /// Clock leeway for `nbf` (and for the caller's `exp` check).
    pub fn leeway_seconds(mut self, leeway: u64) -> Self {
        self.leeway_seconds = leeway;
        self
    }

    /// Prepares the verifier: each key under the issuer it verifies.
    ///
    /// # Errors
    /// [`UnboundKeys`] when keys bound to no issuer meet two or more
    /// accepted issuers.
    pub fn build(mut self) -> Result<TokenVerifier, UnboundKeys> {
        let issuers = self.accepted_issuers();
        let unbound: Vec<String> = self
            .keys
            .iter()
            .filter(|added| added.issuer.is_none())
            .map(|added| added.source.clone())
            .fold(Vec::new(), push_new);
        let owner = match issuers.as_slice() {
            [_, _, ..] if !unbound.is_empty() => {
                return Err(UnboundKeys {
                    keys: unbound,
                    issuers,
                })
            }
            // One issuer: unbound keys are its keys. None: every key is
            // unbound, and verifies any issuer.
            [only] => Some(only.clone()),
            _ => None,
        };
        let by_issuer: Vec<IssuerKeys> = group_by_issuer(std::mem::take(&mut self.keys), owner)
            .into_iter()
            .map(|(issuer, keys)| self.issuer_keys(issuer, keys))
            .collect();
        let algorithms = by_issuer
            .iter()
            .flat_map(|group| group.validations.iter().map(|(algorithm, _)| *algorithm))
            .fold(Vec::new(), push_new);
        Ok(TokenVerifier {
            by_issuer,
            algorithms,
            leeway_seconds: self.leeway_seconds,
            issuers,
            other_claims: arc_swap::ArcSwap::default(),
        })
    }

    /// The issuers listed, then those keys are bound to, each once.
    fn accepted_issuers(&self) -> Vec<String> {
        let bound = self.keys.iter().filter_map(|added| added.issuer.clone());
        self.issuers
            .iter()
            .cloned()
            .chain(bound)
            .fold(Vec::new(), push_new)
    }

    fn issuer_keys(&self, issuer: Option<String>, keys: Vec<TrustedKey>) -> IssuerKeys {
        let algorithms = keys
            .iter()
            .flat_map(|key| key.algorithms.iter().copied())
            .fold(Vec::new(), push_new);
        let validations = algorithms
            .into_iter()
            .map(|algorithm| (algorithm, self.validation(algorithm, issuer.as_deref())))
            .collect();
        IssuerKeys {
            issuer,
            keys,
            validations,
        }
    }

    fn validation(&self, algorithm: Algorithm, issuer: Option<&str>) -> Validation {
        let mut validation = Validation::new(algorithm);
        // `exp` is the caller's to judge (see the module doc); `nbf` is ours.
        validation.validate_exp = false;
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        let mut required: Vec<&str> = Vec::new();
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// `keys` by the issuer they verify, unbound ones under `owner`, in the
/// order the issuers first appear.
fn group_by_issuer(
    keys: Vec<AddedKey>,
    owner: Option<String>,
) -> Vec<(Option<String>, Vec<TrustedKey>)> {
    let mut groups: Vec<(Option<String>, Vec<TrustedKey>)> = Vec::new();
    for added in keys {
        let issuer = added.issuer.or_else(|| owner.clone());
        match groups.iter_mut().find(|(i, _)| *i == issuer) {
            Some((_, keys)) => keys.push(added.key),
            None => groups.push((issuer, vec![added.key])),
        }
    }
    groups
}

/// `items` with `item` added unless already there (a fold step that keeps
/// the first order).
fn push_new<T: PartialEq>(mut items: Vec<T>, item: T) -> Vec<T> {
    if !items.contains(&item) {
        items.push(item);
    }
    items
}
