//! JWT verification: which keys are trusted, for which algorithms, and which
//! issuers and audiences are accepted.
//!
//! The algorithm a token may use follows from the key that verifies it, never
//! from the token alone: an HMAC secret verifies only `HS256`, an RSA key only
//! `RS*`/`PS*`, an EC key only `ES256`/`ES384`, an Ed25519 key only `EdDSA`.
//! `alg: none` is not an algorithm here at all, and an RSA public key can
//! never be used as an HMAC secret (no HS/RS confusion).
//!
//! [`TokenVerifier::verify`] checks the signature, `iss`, `aud` and `nbf`
//! but leaves `exp` to the caller: a server asked to revoke an expired token
//! answers "nothing to do", while a gateway refuses it.
//!
//! # Issuers and keys
//!
//! Every key verifies the tokens of one issuer only, so that one tenant's
//! key (or a breach of it) can never speak for another: a token signed
//! with A's key that claims `iss: B` is refused, rather than revoking B's
//! token of that `jti` or passing a gateway as one of B's users. A key is
//! bound to its issuer when it is added (`issuer_*` builder methods); an
//! issuer bound to a key is accepted even if [`TokenVerifierBuilder::issuers`]
//! does not list it. Keys added without an issuer ("unbound") belong to
//! the only accepted issuer when there is one, and to every issuer when
//! none is configured (`iss` is then not checked, as before issuers were
//! bound). With two or more accepted issuers an unbound key is ambiguous:
//! [`TokenVerifierBuilder::build`] refuses it with [`UnboundKeys`] rather
//! than guess.
//!
//! [`TokenVerifier::verify`] reads the token's `iss` before any signature
//! is checked (it must: it picks the keys) and tries only that issuer's
//! keys, with a validation that accepts only that issuer, so the issuer
//! returned is always the one whose key verified the signature. A token of
//! an issuer with no keys is [`TokenError::WrongIssuer`]; there is no
//! fallback to other issuers' keys.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

#[cfg(test)]
use self::keys::RSA_ALGORITHMS;
use self::keys::{jwks_keys, pem_key, read_trimmed, secret_key, TrustedKey};

/// Longest token accepted, in bytes. Real access tokens are well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most keys tried for one token that names no `kid`, bounding the work a
/// forged token can cause.
const MAX_KEYS_TRIED: usize = 8;

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
struct RawClaims {
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

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token is {0} bytes; the limit is {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    /// Not a well-formed JWT.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// The server has no JWT keys at all.
    #[error("this server has no JWT keys configured (--jwt-hs256-secret-file, --jwt-public-key-file or --jwks-file)")]
    NoKeys,
    /// No configured key verifies tokens of this algorithm.
    #[error("token algorithm {0:?} is not accepted by any configured key")]
    AlgorithmNotAccepted(Algorithm),
    /// The token names a key this server does not know.
    #[error("token names an unknown key id (kid) {0:?}")]
    UnknownKeyId(String),
    /// No trusted key verifies the signature.
    #[error("token signature does not verify")]
    BadSignature,
    /// `nbf` is in the future (beyond leeway).
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iss` is missing or not an accepted issuer.
    #[error("token issuer is not accepted by this server")]
    WrongIssuer,
    /// `aud` is missing or names no accepted audience.
    #[error("token audience is not accepted by this server")]
    WrongAudience,
    /// A claim revocd needs is absent.
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
}

impl TokenError {
    /// True when the token is not a JWT at all (as opposed to a JWT that
    /// does not verify). Callers map this to "invalid argument" and the rest
    /// to "unauthenticated".
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            TokenError::TooLarge(_) | TokenError::Malformed(_) | TokenError::MissingClaim(_)
        )
    }
}

/// Why a key file could not be loaded (a [`FileError`] by another name).
pub use crate::config::FileError as KeyError;

/// The build has no single jsonwebtoken crypto backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this build has no single jsonwebtoken crypto backend (enable exactly one of `aws_lc_rs`, `rust_crypto`)")]
pub struct NoCryptoBackend;

/// Keys bound to no issuer while several issuers are accepted: which
/// issuer's tokens they verify would be a guess, and verifying all of them
/// would let each issuer's key sign for the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} bound to no issuer ({}), but {} issuers are accepted ({}): a key may only verify the tokens of its own issuer. \
     Bind each key to its issuer with --jwt-issuer-key ISSUER=PATH (PEM or JWKS) or --jwt-issuer-hs256-secret-file ISSUER=PATH, \
     or with [[jwt.issuer]] tables in the --config file",
    if keys.len() == 1 { "a key is" } else { "keys are" },
    keys.join(", "),
    issuers.len(),
    issuers.join(", ")
)]
pub struct UnboundKeys {
    /// The unbound keys: their files, or what stands for a key given
    /// directly.
    pub keys: Vec<String>,
    /// The issuers accepted.
    pub issuers: Vec<String>,
}

/// Fails unless exactly one jsonwebtoken crypto backend is compiled in.
/// With none, or two (feature unification can enable both), jsonwebtoken
/// would panic at the first verification instead of at start-up.
///
/// # Errors
/// [`NoCryptoBackend`].
pub fn ensure_crypto_backend() -> Result<(), NoCryptoBackend> {
    jsonwebtoken::crypto::CryptoProvider::try_get_default()
        .map(drop)
        .ok_or(NoCryptoBackend)
}

/// The keys of one issuer, or of every issuer when none is configured.
struct IssuerKeys {
    /// `None`: any issuer, and `iss` is not checked (no issuer configured).
    issuer: Option<String>,
    keys: Vec<TrustedKey>,
    /// One prepared `Validation` per algorithm of these keys, built once;
    /// each accepts only `issuer`.
    validations: Vec<(Algorithm, Validation)>,
}

/// Verifies tokens against the configured keys, issuers and audiences.
pub struct TokenVerifier {
    /// Keys by issuer; an issuer without keys has no entry.
    by_issuer: Vec<IssuerKeys>,
    /// Algorithms some key verifies, so a token of another algorithm is
    /// refused before its claims are read.
    algorithms: Vec<Algorithm>,
    leeway_seconds: u64,
    issuers: Vec<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let keys: usize = self.by_issuer.iter().map(|group| group.keys.len()).sum();
        f.debug_struct("TokenVerifier")
            .field("keys", &keys)
            .field("issuers", &self.issuers)
            .finish()
    }
}

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

// === impl TokenVerifier ===

impl TokenVerifier {
    /// Starts a verifier configuration.
    pub fn builder() -> TokenVerifierBuilder {
        TokenVerifierBuilder::default()
    }

    /// True when at least one key is trusted.
    pub fn has_keys(&self) -> bool {
        self.by_issuer.iter().any(|group| !group.keys.is_empty())
    }

    /// Clock leeway in seconds, for the caller's `exp` check.
    pub fn leeway(&self) -> u64 {
        self.leeway_seconds
    }

    /// The issuers accepted (listed, or bound to a key); empty means any.
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    /// Verifies a token's signature, `iss`, `aud` and `nbf` and returns its
    /// claims. `exp` must be present but is not judged here. Only the keys
    /// of the issuer the token names are tried (see the module doc).
    ///
    /// # Errors
    /// A [`TokenError`] saying what is wrong with the token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        if !self.has_keys() {
            return Err(TokenError::NoKeys);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidToken => TokenError::Malformed(
                "not a JWT (expected header.payload.signature in base64url)".into(),
            ),
            _ => TokenError::Malformed(format!("unreadable header: {e}")),
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAccepted(header.alg));
        }
        let group = self.issuer_keys(token)?;
        let validation = group
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .map(|(_, validation)| validation)
            .ok_or(TokenError::AlgorithmNotAccepted(header.alg))?;
        let mut outcome = Err(TokenError::AlgorithmNotAccepted(header.alg));
        for key in group.candidates(header.kid.as_deref(), header.alg)? {
            outcome = jsonwebtoken::decode::<RawClaims>(token, &key.key, validation)
                .map(|data| Claims::from(data.claims))
                .map_err(token_error);
            if outcome != Err(TokenError::BadSignature) {
                break;
            }
        }
        let claims = outcome?;
        if claims.expires_at.is_none() {
            return Err(TokenError::MissingClaim("exp"));
        }
        Ok(claims)
    }

    /// The keys that may verify `token`: those of the issuer its (not yet
    /// verified) `iss` names, or the keys of any issuer when no issuer is
    /// configured (its claims are then not read here at all).
    fn issuer_keys(&self, token: &str) -> Result<&IssuerKeys, TokenError> {
        if let [any @ IssuerKeys { issuer: None, .. }] = self.by_issuer.as_slice() {
            return Ok(any);
        }
        let issuer = unverified_issuer(token)?.ok_or(TokenError::WrongIssuer)?;
        self.by_issuer
            .iter()
            .find(|group| group.issuer.as_deref() == Some(issuer.as_str()))
            .ok_or(TokenError::WrongIssuer)
    }
}

// === impl IssuerKeys ===

impl IssuerKeys {
    /// The keys to try for a token: those with its `kid` if it names one
    /// we know, else those without a `kid`; only keys for its algorithm,
    /// at most [`MAX_KEYS_TRIED`].
    fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        algorithm: Algorithm,
    ) -> Result<impl Iterator<Item = &'a TrustedKey> + 'a, TokenError> {
        let known_kid = kid.filter(|kid| self.keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
        if let (Some(kid), None) = (kid, known_kid) {
            if !self.keys.iter().any(|k| k.kid.is_none()) {
                return Err(TokenError::UnknownKeyId(kid.to_owned()));
            }
        }
        Ok(self
            .keys
            .iter()
            .filter(move |k| k.kid.as_deref() == known_kid)
            .filter(move |k| k.algorithms.contains(&algorithm))
            .take(MAX_KEYS_TRIED))
    }
}

/// The `iss` of a token whose header has been read, before its signature
/// is checked: only to pick the keys, whose validation then requires that
/// same issuer.
fn unverified_issuer(token: &str) -> Result<Option<String>, TokenError> {
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

fn token_error(error: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::WrongAudience,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        _ => TokenError::Malformed(error.to_string()),
    }
}

mod keys;
#[cfg(test)]
mod tests;
