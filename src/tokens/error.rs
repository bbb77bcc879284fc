//! Why a token is refused and why a verifier cannot be built, with the
//! start-up check for a crypto backend.

use jsonwebtoken::Algorithm;

use super::MAX_TOKEN_BYTES;

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
pub use crate::file::FileError as KeyError;

/// Why a token verifier could not be built from key files and issuers
/// (what `--jwt-*` flags and `[[jwt.issuer]]` settings describe).
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// A key file is unusable.
    #[error("JWT keys: {0}")]
    Keys(#[from] KeyError),
    /// Keys bound to no issuer beside several issuers. Not a `source`: the
    /// message already holds all of it, and is printed once.
    #[error("JWT keys: {0}")]
    Unbound(UnboundKeys),
    /// The build cannot verify tokens.
    #[error(transparent)]
    Crypto(#[from] NoCryptoBackend),
}

impl From<UnboundKeys> for VerifierError {
    fn from(error: UnboundKeys) -> Self {
        VerifierError::Unbound(error)
    }
}

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

/// The [`TokenError`] a failed `jsonwebtoken` decode stands for.
pub(super) fn token_error(error: jsonwebtoken::errors::Error) -> TokenError {
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
