//! Key material: HMAC secrets, PEM public keys and JWK sets read into
//! [`TrustedKey`]s, each with the algorithms its kind of key may verify
//! (see the parent module for which issuer a key speaks for).

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::KeyError;

/// One trusted key and the algorithms it may verify.
pub(super) struct TrustedKey {
    /// `kid` from a JWKS; PEM files and secrets have none.
    pub(super) kid: Option<String>,
    /// The algorithms it verifies, fixed by the kind of key.
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) key: DecodingKey,
}

/// The algorithms an RSA public key verifies.
pub(super) const RSA_ALGORITHMS: [Algorithm; 6] = [
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

/// An HMAC secret as a key; `path` names it in errors.
pub(super) fn secret_key(secret: &[u8], path: &Path) -> Result<TrustedKey, KeyError> {
    if secret.is_empty() {
        return Err(invalid(path, "the secret is empty"));
    }
    let key = DecodingKey::from_secret(secret).map_err(|e| invalid(path, &e.to_string()))?;
    Ok(TrustedKey {
        kid: None,
        algorithms: vec![Algorithm::HS256],
        key,
    })
}

/// The public key in PEM text `pem` (of the file `path`).
pub(super) fn pem_key(pem: &[u8], path: &Path) -> Result<TrustedKey, KeyError> {
    if pem
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(invalid(
            path,
            "this is a private key; give its public half (openssl pkey -in KEY -pubout)",
        ));
    }
    let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (key, RSA_ALGORITHMS.to_vec())
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        (key, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err(invalid(
            path,
            "no RSA, EC or Ed25519 public key in PEM form",
        ));
    };
    Ok(TrustedKey {
        kid: None,
        algorithms,
        key,
    })
}

/// The signing keys of the JWK set `text` (of the file `path`).
pub(super) fn jwks_keys(text: &[u8], path: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|e| invalid(path, &format!("not a JWK set: {e}")))?;
    let mut keys = Vec::new();
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
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| invalid(path, &format!("key {label}: {e}")))?;
        keys.push(TrustedKey {
            kid,
            algorithms,
            key,
        });
    }
    Ok(keys)
}

pub(super) fn read_trimmed(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = std::fs::read(path).map_err(|e| KeyError::read(path, e))?;
    Ok(bytes.trim_ascii().to_vec())
}

fn invalid(path: &Path, detail: &str) -> KeyError {
    KeyError::invalid(path, detail)
}
