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

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

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

/// One trusted key and the algorithms it may verify.
struct TrustedKey {
    /// `kid` from a JWKS; PEM files and secrets have none.
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Verifies tokens against the configured keys, issuers and audiences.
pub struct TokenVerifier {
    keys: Vec<TrustedKey>,
    leeway_seconds: u64,
    /// One prepared `Validation` per accepted algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    issuers: Vec<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("issuers", &self.issuers)
            .finish()
    }
}

/// Builds a [`TokenVerifier`] from key files and settings.
#[derive(Default)]
pub struct TokenVerifierBuilder {
    keys: Vec<TrustedKey>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway_seconds: u64,
}

// === impl TokenVerifierBuilder ===

impl TokenVerifierBuilder {
    /// Trusts an HMAC secret for `HS256`.
    ///
    /// # Errors
    /// An empty secret.
    pub fn hs256_secret(mut self, secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::Invalid {
                path: "HS256 secret".into(),
                detail: "the secret is empty".into(),
            });
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| KeyError::Invalid {
            path: "HS256 secret".into(),
            detail: e.to_string(),
        })?;
        self.keys.push(TrustedKey {
            kid: None,
            algorithms: vec![Algorithm::HS256],
            key,
        });
        Ok(self)
    }

    /// Trusts the HMAC secret in a file; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// An unreadable file or an empty secret.
    pub fn hs256_secret_file(self, path: &Path) -> Result<Self, KeyError> {
        let secret = read_trimmed(path)?;
        self.hs256_secret(&secret)
            .map_err(|_| invalid(path, "the secret is empty"))
    }

    /// Trusts a PEM public key (RSA, EC P-256/P-384, or Ed25519).
    ///
    /// # Errors
    /// An unreadable file or one with no public key of these kinds.
    pub fn public_key_pem_file(mut self, path: &Path) -> Result<Self, KeyError> {
        let pem = read_trimmed(path)?;
        if pem
            .windows(b"PRIVATE KEY".len())
            .any(|w| w == b"PRIVATE KEY")
        {
            return Err(invalid(
                path,
                "this is a private key; give its public half (openssl pkey -in KEY -pubout)",
            ));
        }
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (key, RSA_ALGORITHMS.to_vec())
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (key, vec![Algorithm::ES256, Algorithm::ES384])
        } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
            (key, vec![Algorithm::EdDSA])
        } else {
            return Err(invalid(
                path,
                "no RSA, EC or Ed25519 public key in PEM form",
            ));
        };
        self.keys.push(TrustedKey {
            kid: None,
            algorithms,
            key,
        });
        Ok(self)
    }

    /// Trusts every signing key of a JWKS file, under its `kid`.
    ///
    /// # Errors
    /// An unreadable file, invalid JSON, or a key that cannot be used.
    pub fn jwks_file(mut self, path: &Path) -> Result<Self, KeyError> {
        let text = read_trimmed(path)?;
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|e| invalid(path, &format!("not a JWK set: {e}")))?;
        for jwk in &set.keys {
            // Identity providers publish encryption keys beside signing keys:
            // those never verify a signature, and must not stop the rest.
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let algorithms = match jwk.common.key_algorithm {
                Some(named) => match Algorithm::try_from(named) {
                    Ok(algorithm) => vec![algorithm],
                    Err(_) => continue,
                },
                None => algorithms_for(&jwk.algorithm),
            };
            let kid = jwk.common.key_id.clone();
            let label = kid.as_deref().unwrap_or("without kid");
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| invalid(path, &format!("key {label}: {e}")))?;
            self.keys.push(TrustedKey {
                kid,
                algorithms,
                key,
            });
        }
        Ok(self)
    }

    /// Accepts only tokens whose `iss` is one of `issuers` (none: any).
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

    /// Prepares the verifier.
    pub fn build(self) -> TokenVerifier {
        let mut accepted: Vec<Algorithm> = Vec::new();
        for algorithm in self.keys.iter().flat_map(|k| k.algorithms.iter()) {
            if !accepted.contains(algorithm) {
                accepted.push(*algorithm);
            }
        }
        let validations = accepted
            .into_iter()
            .map(|algorithm| (algorithm, self.validation(algorithm)))
            .collect();
        TokenVerifier {
            leeway_seconds: self.leeway_seconds,
            keys: self.keys,
            validations,
            issuers: self.issuers,
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        // `exp` is the caller's to judge (see the module doc); `nbf` is ours.
        validation.validate_exp = false;
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        let mut required: Vec<&str> = Vec::new();
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
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

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The algorithms a JWK without an `alg` member may verify.
fn algorithms_for(parameters: &AlgorithmParameters) -> Vec<Algorithm> {
    match parameters {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![Algorithm::HS256],
        // `Other` and parameter kinds added later: no algorithm.
        _ => Vec::new(),
    }
}

fn read_trimmed(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = std::fs::read(path).map_err(|e| KeyError::read(path, e))?;
    Ok(bytes.trim_ascii().to_vec())
}

fn invalid(path: &Path, detail: &str) -> KeyError {
    KeyError::invalid(path, detail)
}

// === impl TokenVerifier ===

impl TokenVerifier {
    /// Starts a verifier configuration.
    pub fn builder() -> TokenVerifierBuilder {
        TokenVerifierBuilder::default()
    }

    /// True when at least one key is trusted.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Clock leeway in seconds, for the caller's `exp` check.
    pub fn leeway(&self) -> u64 {
        self.leeway_seconds
    }

    /// The issuers accepted; empty means any.
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }

    /// Verifies a token's signature, `iss`, `aud` and `nbf` and returns its
    /// claims. `exp` must be present but is not judged here.
    ///
    /// # Errors
    /// A [`TokenError`] saying what is wrong with the token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        if self.keys.is_empty() {
            return Err(TokenError::NoKeys);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidToken => TokenError::Malformed(
                "not a JWT (expected header.payload.signature in base64url)".into(),
            ),
            _ => TokenError::Malformed(format!("unreadable header: {e}")),
        })?;
        let validation = self
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .map(|(_, validation)| validation)
            .ok_or(TokenError::AlgorithmNotAccepted(header.alg))?;
        let mut outcome = Err(TokenError::AlgorithmNotAccepted(header.alg));
        for key in self.candidates(header.kid.as_deref(), header.alg)? {
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

    /// The keys to try for a token: those with its `kid` if it names one
    /// we know, else those without a `kid`; only keys for its algorithm.
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

#[cfg(test)]
mod tests;
