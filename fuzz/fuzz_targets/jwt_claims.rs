//! Tokens → `TokenVerifier::verify` (header parsing, key choice, signature,
//! `iss`/`aud`/`nbf`, claims extraction), with verifiers built once over
//! fixed HS256, P-256 (PEM) and JWKS keys from `tests/fixtures/keys`.
//!
//! The first byte picks how the rest becomes a token (`TokenMode`): taken
//! as text, or read as `header \n payload` and signed with a trusted key,
//! so arbitrary headers and claims get past the signature.
//!
//! Never panics; an accepted token has an `exp`; the strict verifier
//! accepts only its issuer, and nothing the lax one (same keys, any issuer
//! and audience, more leeway) refuses.
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use revocd::tokens::TokenVerifier;
use revocd_fuzz::{signed_token, signing_key, verifiers, TokenMode, ISSUER};

struct Fixture {
    verifiers: [TokenVerifier; 2],
    hs256: (EncodingKey, Algorithm),
    es256: (EncodingKey, Algorithm),
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        revocd::tokens::ensure_crypto_backend().expect("one jsonwebtoken backend");
        Fixture {
            verifiers: verifiers(),
            hs256: signing_key(TokenMode::SignedHs256).expect("a signing mode"),
            es256: signing_key(TokenMode::SignedEs256).expect("a signing mode"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let token = match TokenMode::of(first) {
        TokenMode::Raw => String::from_utf8_lossy(rest).into_owned(),
        mode => {
            let (key, alg) = match mode {
                TokenMode::SignedHs256 => &fixture.hs256,
                _ => &fixture.es256,
            };
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (header, payload) = rest.split_at(split);
            signed_token(header, payload.get(1..).unwrap_or_default(), key, *alg)
        }
    };
    let [strict, lax] = &fixture.verifiers;
    let lax_verdict = lax.verify(&token);
    if let Ok(claims) = &lax_verdict {
        assert!(claims.expires_at.is_some());
    }
    if let Ok(claims) = strict.verify(&token) {
        assert!(claims.expires_at.is_some());
        assert_eq!(claims.issuer, ISSUER);
        // The same keys with fewer conditions and more leeway.
        assert_eq!(lax_verdict, Ok(claims), "the lax verifier refused");
    }
});
