//! [`TokenVerifier`]: a token's signature and claims checked against the
//! keys of the issuer it names.

use jsonwebtoken::{Algorithm, Validation};

use super::builder::TokenVerifierBuilder;
use super::claims::{payload_object, unverified_issuer, Claims, Payload, RawClaims};
use super::error::token_error;
use super::keys::TrustedKey;
use super::TokenError;

/// Longest token accepted, in bytes. Real access tokens are well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most keys tried for one token that names no `kid`, bounding the work a
/// forged token can cause.
pub(super) const MAX_KEYS_TRIED: usize = 8;

/// The keys of one issuer, or of every issuer when none is configured.
pub(super) struct IssuerKeys {
    /// `None`: any issuer, and `iss` is not checked (no issuer configured).
    pub(super) issuer: Option<String>,
    pub(super) keys: Vec<TrustedKey>,
    /// One prepared `Validation` per algorithm of these keys, built once;
    /// each accepts only `issuer`.
    pub(super) validations: Vec<(Algorithm, Validation)>,
}

/// Verifies tokens against the configured keys, issuers and audiences.
pub struct TokenVerifier {
    /// Keys by issuer; an issuer without keys has no entry.
    pub(super) by_issuer: Vec<IssuerKeys>,
    /// Algorithms some key verifies, so a token of another algorithm is
    /// refused before its claims are read.
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) leeway_seconds: u64,
    pub(super) issuers: Vec<String>,
    /// The deployment's own revocable claims to read from every token
    /// (see [`TokenVerifier::read_claims`]).
    pub(super) other_claims: arc_swap::ArcSwap<Vec<Box<str>>>,
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

    /// Reads `names` too from every token verified from now on, into
    /// [`Claims::other`]: the claims a deployment made revocable
    /// (`--revocable-claim`). A gateway learns them from the cut-offs it
    /// receives; tokens verified before cannot be judged on them, and the
    /// gateway asks the server about those.
    pub fn read_claims(&self, names: Vec<Box<str>>) {
        self.other_claims.store(std::sync::Arc::new(names));
    }

    /// The claims [`TokenVerifier::read_claims`] set.
    pub fn claims_read(&self) -> std::sync::Arc<Vec<Box<str>>> {
        self.other_claims.load_full()
    }

    /// Verifies a token's signature, `iss`, `aud` and `nbf` and returns its
    /// claims. `exp` must be present but is not judged here. Only the keys
    /// of the issuer the token names are tried (see the module doc).
    ///
    /// # Errors
    /// A [`TokenError`] saying what is wrong with the token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut claims = self.verify_signed(token)?;
        if claims.expires_at.is_none() {
            return Err(TokenError::MissingClaim("exp"));
        }
        let other = self.other_claims.load();
        if !other.is_empty() {
            claims.other = super::extra::read(token, &other)?;
        }
        Ok(claims)
    }

    /// Verifies a signed event (an OpenID back-channel logout token, a
    /// Security Event Token) as [`TokenVerifier::verify`] verifies a token
    /// (signature, `iss`, `aud`, `nbf`), except that `exp` may be absent
    /// (a SET carries none), and returns its claims with its whole payload,
    /// for the caller to read as the event's specification says.
    ///
    /// # Errors
    /// A [`TokenError`] saying what is wrong with the token.
    pub fn verify_event(&self, token: &str) -> Result<(Claims, Payload), TokenError> {
        let claims = self.verify_signed(token)?;
        Ok((claims, payload_object(token)?))
    }

    /// The signature, `iss`, `aud` and `nbf` checks of `verify`.
    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
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
        outcome
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
