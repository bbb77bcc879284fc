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
//!
//! # Layout
//!
//! `builder.rs` puts keys, issuers and audiences together into a verifier;
//! `verifier.rs` checks tokens with it; `claims.rs` reads a token's claims;
//! `keys.rs` reads key material; `error.rs` says why a token or a verifier
//! is refused.

mod builder;
mod claims;
mod error;
mod extra;
mod keys;
#[cfg(test)]
mod tests;
mod verifier;

pub use self::builder::TokenVerifierBuilder;
pub use self::claims::{
    payload_object, ClaimValue, Claims, OtherClaims, Payload, CUT_CLAIMS, ISSUER_WIDE,
};
pub use self::error::{
    ensure_crypto_backend, KeyError, NoCryptoBackend, TokenError, UnboundKeys, VerifierError,
};
pub use self::verifier::{TokenVerifier, MAX_TOKEN_BYTES};

#[cfg(test)]
use self::keys::RSA_ALGORITHMS;
#[cfg(test)]
use self::verifier::MAX_KEYS_TRIED;
