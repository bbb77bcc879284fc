//! Unit tests for [`TokenVerifier`]: keys and algorithms, claims, and the
//! builder's key loading. Tokens are minted with `jsonwebtoken` from the
//! throwaway keys in `tests/fixtures/keys/` (see its README).

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

/// Absolute path of a file in `tests/fixtures/keys/`.
macro_rules! fixture {
    ($name:literal) => {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/",
            $name
        ))
    };
}

const SECRET: &[u8] = b"revocd-unit-test-secret-0123456789";
const ISSUER: &str = "https://issuer.example";

// === helpers ===

fn now() -> i64 {
    crate::time::unix_now()
}

/// Typical claims of a valid token, expiring in an hour.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "jti": "jti-1",
        "sub": "user-1",
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// `claims()` with `changes` merged in; a `null` change removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    let map = claims.as_object_mut().expect("claims are an object");
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// What `verify` returns for a token minted from `claims`.
fn expected(claims: &Value) -> Claims {
    Claims {
        issuer: claims["iss"].as_str().unwrap_or_default().to_owned(),
        jti: claims["jti"].as_str().map(str::to_owned),
        subject: claims["sub"].as_str().map(str::to_owned),
        expires_at: claims["exp"].as_i64(),
        issued_at: claims["iat"].as_i64(),
        session: claims["sid"].as_str().map(ClaimValue::from),
        client_id: claims["client_id"].as_str().map(ClaimValue::from),
        authorized_party: claims["azp"].as_str().map(ClaimValue::from),
        other: Vec::new(),
    }
}

fn mint(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode token")
}

fn secret_key(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret).expect("HMAC encoding key")
}

/// An HS256 token signed with [`SECRET`].
fn hs256(claims: &Value) -> String {
    mint(Algorithm::HS256, None, &secret_key(SECRET), claims)
}

/// One of `EncodingKey::from_{rsa,ec,ed}_pem`.
type PemLoader = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

/// The fixture private key for `algorithm`.
fn private_key(algorithm: Algorithm) -> EncodingKey {
    let (path, load): (&Path, PemLoader) = match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => (fixture!("rsa_private.pem"), EncodingKey::from_rsa_pem),
        Algorithm::ES256 => (fixture!("ec256_private.pem"), EncodingKey::from_ec_pem),
        Algorithm::ES384 => (fixture!("ec384_private.pem"), EncodingKey::from_ec_pem),
        Algorithm::EdDSA => (fixture!("ed25519_private.pem"), EncodingKey::from_ed_pem),
        other => panic!("no fixture private key for {other:?}"),
    };
    let pem = std::fs::read(path).expect("read private key fixture");
    load(&pem).expect("parse private key fixture")
}

/// A token of `algorithm` signed with its fixture private key.
fn signed(algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    mint(algorithm, kid, &private_key(algorithm), claims)
}

fn hs256_builder() -> TokenVerifierBuilder {
    TokenVerifier::builder()
        .hs256_secret(SECRET)
        .expect("HS256 secret")
}

fn hs256_verifier() -> TokenVerifier {
    hs256_builder().build().expect("verifier")
}

fn pem_verifier(path: &Path) -> TokenVerifier {
    TokenVerifier::builder()
        .public_key_pem_file(path)
        .expect("load public key")
        .build()
        .expect("verifier")
}

fn jwks_verifier() -> TokenVerifier {
    TokenVerifier::builder()
        .jwks_file(fixture!("jwks.json"))
        .expect("load JWKS")
        .build()
        .expect("verifier")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token from a raw header and payload JSON, with the given signature.
fn raw_token(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}

/// An HS256 token over exactly `payload` (which need not be what serde
/// would write), signed with `secret`.
fn hs256_raw(payload: &str, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(payload.as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &secret_key(secret), Algorithm::HS256)
            .expect("HMAC sign");
    format!("{message}.{signature}")
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn temp_file(contents: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(contents).expect("write temp file");
    file
}

fn invalid_detail(result: Result<TokenVerifierBuilder, KeyError>) -> (String, String) {
    match result {
        Err(KeyError::Invalid { path, detail }) => (path, detail),
        Err(other) => panic!("expected KeyError::Invalid, got {other:?}"),
        Ok(_) => panic!("expected KeyError::Invalid, got a builder"),
    }
}

// === HS256 and claims ===

#[test]
fn hs256_round_trip_returns_the_claims() {
    let claims = claims();
    let verified = hs256_verifier().verify(&hs256(&claims)).unwrap();
    assert_eq!(verified, expected(&claims));
    assert_eq!(verified.issuer, ISSUER);
    assert_eq!(verified.jti.as_deref(), Some("jti-1"));
    assert_eq!(verified.subject.as_deref(), Some("user-1"));
}

#[test]
fn fractional_numeric_dates_are_floored() {
    let claims = claims_with(json!({ "exp": 1.9e9 + 0.5, "iat": 1.7e9 + 0.999 }));
    let verified = hs256_verifier().verify(&hs256(&claims)).unwrap();
    assert_eq!(verified.expires_at, Some(1_900_000_000));
    assert_eq!(verified.issued_at, Some(1_700_000_000));
}

#[test]
fn absent_optional_claims_come_back_empty() {
    let claims = json!({ "exp": 1_900_000_000 });
    let verified = hs256_verifier().verify(&hs256(&claims)).unwrap();
    assert_eq!(
        verified,
        Claims {
            expires_at: Some(1_900_000_000),
            ..Claims::default()
        }
    );
}

#[test]
fn unknown_claims_are_ignored() {
    let claims = claims_with(json!({ "scope": "read write", "nested": { "a": [1, 2] } }));
    assert_eq!(
        hs256_verifier().verify(&hs256(&claims)),
        Ok(expected(&claims))
    );
}

#[test]
fn the_claims_cutoffs_match_are_read_and_other_shapes_of_them_ignored() {
    let claims = claims_with(json!({ "sid": "s-1", "client_id": "app", "azp": "web" }));
    let verified = hs256_verifier().verify(&hs256(&claims)).unwrap();
    assert_eq!(verified, expected(&claims));
    let pairs = verified.cut_pairs();
    let subject = claims["sub"].as_str().unwrap();
    assert_eq!(
        pairs,
        [
            ("sub", subject),
            ("sid", "s-1"),
            ("client_id", "app"),
            ("azp", "web"),
            ("*", "")
        ]
    );
    assert_eq!(
        verified.any_cut_value("groups", |_| true),
        None,
        "a claim not read here"
    );
    let sessions = claims_with(json!({ "sid": ["s-1", 7, ["s-2"], "s-3"] }));
    let verified = hs256_verifier().verify(&hs256(&sessions)).unwrap();
    let many = ClaimValue::Many(vec!["s-1".into(), "s-3".into()]);
    assert_eq!(verified.session, Some(many), "the strings of an array");
    assert_eq!(
        verified.any_cut_value("sid", |value| value == "s-3"),
        Some(true)
    );
    assert_eq!(
        verified.any_cut_value("sid", |value| value == "s-2"),
        Some(false)
    );
    // A number, an array or an object where a string is expected can match
    // no cut-off value: the token is not refused for it.
    let odd = claims_with(json!({ "sid": 7, "client_id": [7, {}], "azp": { "x": null } }));
    let verified = hs256_verifier().verify(&hs256(&odd)).unwrap();
    assert_eq!(
        (
            verified.session,
            verified.client_id,
            verified.authorized_party
        ),
        (None, None, None)
    );
}

#[test]
fn missing_exp_is_a_missing_claim() {
    let absent = claims_with(json!({ "exp": null }));
    let mut null = claims();
    null["exp"] = Value::Null;
    for claims in [absent, null] {
        let error = hs256_verifier().verify(&hs256(&claims)).unwrap_err();
        assert_eq!(error, TokenError::MissingClaim("exp"), "claims {claims}");
        assert!(error.is_malformed());
    }
}

#[test]
fn non_numeric_exp_is_malformed() {
    let claims = claims_with(json!({ "exp": "tomorrow" }));
    assert!(matches!(
        hs256_verifier().verify(&hs256(&claims)),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn expired_token_still_verifies() {
    let claims = claims_with(json!({ "iat": now() - 7200, "exp": now() - 3600 }));
    let verifier = hs256_builder().leeway_seconds(0).build().expect("verifier");
    assert_eq!(verifier.verify(&hs256(&claims)), Ok(expected(&claims)));
}

#[test]
fn nbf_in_the_past_verifies() {
    let claims = claims_with(json!({ "nbf": now() - 60 }));
    assert_eq!(
        hs256_verifier().verify(&hs256(&claims)),
        Ok(expected(&claims))
    );
}

#[test]
fn nbf_beyond_leeway_is_not_yet_valid() {
    let verifier = hs256_builder()
        .leeway_seconds(60)
        .build()
        .expect("verifier");
    let claims = claims_with(json!({ "nbf": now() + 600 }));
    assert_eq!(
        verifier.verify(&hs256(&claims)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn nbf_within_leeway_verifies() {
    let verifier = hs256_builder()
        .leeway_seconds(60)
        .build()
        .expect("verifier");
    let claims = claims_with(json!({ "nbf": now() + 30 }));
    assert_eq!(verifier.verify(&hs256(&claims)), Ok(expected(&claims)));
}

#[test]
fn nbf_in_the_future_without_leeway_is_not_yet_valid() {
    let claims = claims_with(json!({ "nbf": now() + 30 }));
    assert_eq!(
        hs256_verifier().verify(&hs256(&claims)),
        Err(TokenError::NotYetValid)
    );
}

// === issuers and audiences ===

/// Accepts two issuers; the secret is [`ISSUER`]'s.
fn issuer_verifier() -> TokenVerifier {
    TokenVerifier::builder()
        .issuer_hs256_secret(ISSUER, SECRET)
        .expect("HS256 secret")
        .issuers(&strings(&["https://other.example", ISSUER]))
        .build()
        .expect("verifier")
}

#[test]
fn accepted_issuer_verifies() {
    let claims = claims();
    assert_eq!(
        issuer_verifier().verify(&hs256(&claims)),
        Ok(expected(&claims))
    );
    assert_eq!(
        issuer_verifier().issuers(),
        strings(&["https://other.example", ISSUER])
    );
}

#[test]
fn wrong_issuer_is_rejected() {
    let claims = claims_with(json!({ "iss": "https://evil.example" }));
    assert_eq!(
        issuer_verifier().verify(&hs256(&claims)),
        Err(TokenError::WrongIssuer)
    );
}

#[test]
fn missing_issuer_is_rejected_when_issuers_are_configured() {
    let claims = claims_with(json!({ "iss": null }));
    assert_eq!(
        issuer_verifier().verify(&hs256(&claims)),
        Err(TokenError::WrongIssuer)
    );
}

#[test]
fn any_issuer_verifies_when_none_is_configured() {
    let claims = claims_with(json!({ "iss": "https://anyone.example" }));
    let verifier = hs256_verifier();
    assert!(verifier.issuers().is_empty());
    assert_eq!(verifier.verify(&hs256(&claims)), Ok(expected(&claims)));
}

fn audience_verifier() -> TokenVerifier {
    hs256_builder()
        .audiences(&strings(&["revocd", "gateway"]))
        .build()
        .expect("verifier")
}

#[test]
fn accepted_audience_verifies_as_string_or_array() {
    for aud in [json!("revocd"), json!(["someone-else", "gateway"])] {
        let claims = claims_with(json!({ "aud": aud }));
        assert_eq!(
            audience_verifier().verify(&hs256(&claims)),
            Ok(expected(&claims)),
            "aud {aud}"
        );
    }
}

#[test]
fn wrong_audience_is_rejected() {
    for aud in [json!("someone-else"), json!(["a", "b"])] {
        let claims = claims_with(json!({ "aud": aud }));
        assert_eq!(
            audience_verifier().verify(&hs256(&claims)),
            Err(TokenError::WrongAudience),
            "aud {aud}"
        );
    }
}

#[test]
fn missing_audience_is_rejected_when_audiences_are_configured() {
    assert_eq!(
        audience_verifier().verify(&hs256(&claims())),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn any_audience_verifies_when_none_is_configured() {
    for aud in [json!("someone-else"), json!(["a", "b"])] {
        let claims = claims_with(json!({ "aud": aud }));
        assert_eq!(
            hs256_verifier().verify(&hs256(&claims)),
            Ok(expected(&claims)),
            "aud {aud}"
        );
    }
}

// === signatures ===

#[test]
fn other_secret_is_a_bad_signature() {
    let token = mint(
        Algorithm::HS256,
        None,
        &secret_key(b"some-other-secret"),
        &claims(),
    );
    assert_eq!(
        hs256_verifier().verify(&token),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = claims_with(json!({ "sub": "admin" }));
    let payload = b64(forged.to_string().as_bytes());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(
        hs256_verifier().verify(&tampered),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn altered_signature_is_a_bad_signature() {
    let token = hs256(&claims());
    let (message, signature) = token.rsplit_once('.').unwrap();
    // Changing the first character keeps the base64url canonical.
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let altered = format!("{message}.{first}{}", &signature[1..]);
    assert_eq!(
        hs256_verifier().verify(&altered),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn rotated_secrets_each_verify() {
    let verifier = TokenVerifier::builder()
        .hs256_secret(b"old-secret")
        .and_then(|b| b.hs256_secret(b"new-secret"))
        .unwrap()
        .build()
        .expect("verifier");
    for secret in [&b"old-secret"[..], b"new-secret"] {
        let token = mint(Algorithm::HS256, None, &secret_key(secret), &claims());
        assert!(verifier.verify(&token).is_ok(), "secret {secret:?}");
    }
}

#[test]
fn at_most_max_keys_tried_are_tried() {
    let secret = |i: usize| format!("secret-number-{i}").into_bytes();
    let mut builder = TokenVerifier::builder();
    for i in 0..=MAX_KEYS_TRIED {
        builder = builder.hs256_secret(&secret(i)).unwrap();
    }
    let verifier = builder.build().expect("verifier");
    let token_of = |i: usize| mint(Algorithm::HS256, None, &secret_key(&secret(i)), &claims());

    assert!(verifier.verify(&token_of(MAX_KEYS_TRIED - 1)).is_ok());
    assert_eq!(
        verifier.verify(&token_of(MAX_KEYS_TRIED)),
        Err(TokenError::BadSignature)
    );
}

// === public keys and algorithms ===

/// Verifies a token of `algorithm` against the PEM public key at `public`.
fn assert_pem_round_trip(algorithm: Algorithm, public: &Path) {
    let claims = claims();
    assert_eq!(
        pem_verifier(public).verify(&signed(algorithm, None, &claims)),
        Ok(expected(&claims)),
        "{algorithm:?} with {}",
        public.display()
    );
}

#[test]
fn rs256_verifies_with_the_rsa_public_key() {
    assert_pem_round_trip(Algorithm::RS256, fixture!("rsa_public.pem"));
}

#[test]
fn ps256_verifies_with_the_rsa_public_key() {
    assert_pem_round_trip(Algorithm::PS256, fixture!("rsa_public.pem"));
}

#[test]
fn every_rsa_algorithm_verifies_with_the_rsa_public_key() {
    for algorithm in RSA_ALGORITHMS {
        assert_pem_round_trip(algorithm, fixture!("rsa_public.pem"));
    }
}

#[test]
fn es256_verifies_with_the_p256_public_key() {
    assert_pem_round_trip(Algorithm::ES256, fixture!("ec256_public.pem"));
}

#[test]
fn es384_verifies_with_the_p384_public_key() {
    assert_pem_round_trip(Algorithm::ES384, fixture!("ec384_public.pem"));
}

#[test]
fn eddsa_verifies_with_the_ed25519_public_key() {
    assert_pem_round_trip(Algorithm::EdDSA, fixture!("ed25519_public.pem"));
}

#[test]
fn es256_token_against_only_an_rsa_key_is_not_accepted() {
    let token = signed(Algorithm::ES256, None, &claims());
    assert_eq!(
        pem_verifier(fixture!("rsa_public.pem")).verify(&token),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::ES256))
    );
}

#[test]
fn rs256_token_against_only_an_hmac_secret_is_not_accepted() {
    let token = signed(Algorithm::RS256, None, &claims());
    assert_eq!(
        hs256_verifier().verify(&token),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::RS256))
    );
}

#[test]
fn eddsa_token_against_only_an_ec_key_is_not_accepted() {
    let token = signed(Algorithm::EdDSA, None, &claims());
    assert_eq!(
        pem_verifier(fixture!("ec256_public.pem")).verify(&token),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::EdDSA))
    );
}

#[test]
fn es256_token_against_a_p384_key_is_a_bad_signature() {
    // A PEM EC key is trusted for ES256 and ES384 whatever its curve; the
    // curve mismatch then fails as a signature, never as a success.
    let token = signed(Algorithm::ES256, None, &claims());
    assert_eq!(
        pem_verifier(fixture!("ec384_public.pem")).verify(&token),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn ec_keys_of_both_curves_each_verify_their_own_tokens() {
    let verifier = TokenVerifier::builder()
        .public_key_pem_file(fixture!("ec384_public.pem"))
        .and_then(|b| b.public_key_pem_file(fixture!("ec256_public.pem")))
        .unwrap()
        .build()
        .expect("verifier");
    for algorithm in [Algorithm::ES256, Algorithm::ES384] {
        let claims = claims();
        assert_eq!(
            verifier.verify(&signed(algorithm, None, &claims)),
            Ok(expected(&claims)),
            "{algorithm:?}"
        );
    }
}

#[test]
fn alg_none_is_rejected() {
    let claims = claims().to_string();
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
        for signature in ["", "AAAA"] {
            let token = raw_token(header, &claims, signature);
            let outcome = hs256_verifier().verify(&token);
            // "none" is not an `Algorithm`, so the header itself fails to parse.
            assert!(
                matches!(&outcome, Err(TokenError::Malformed(m)) if m.contains("header")),
                "{header} / {signature:?}: {outcome:?}"
            );
        }
    }
}

#[test]
fn rsa_public_key_as_hmac_secret_is_not_accepted() {
    // HS/RS confusion: an attacker HMACs with the (public) RSA key bytes.
    let pem = std::fs::read(fixture!("rsa_public.pem")).unwrap();
    let verifier = pem_verifier(fixture!("rsa_public.pem"));
    for secret in [&pem[..], pem.trim_ascii()] {
        let token = mint(Algorithm::HS256, None, &secret_key(secret), &claims());
        assert_eq!(
            verifier.verify(&token),
            Err(TokenError::AlgorithmNotAccepted(Algorithm::HS256))
        );
    }
}

#[test]
fn rsa_public_key_as_hmac_secret_fails_even_beside_a_real_secret() {
    let pem = std::fs::read(fixture!("rsa_public.pem")).unwrap();
    let verifier = hs256_builder()
        .public_key_pem_file(fixture!("rsa_public.pem"))
        .unwrap()
        .build()
        .expect("verifier");
    for secret in [&pem[..], pem.trim_ascii()] {
        let token = mint(Algorithm::HS256, None, &secret_key(secret), &claims());
        assert_eq!(verifier.verify(&token), Err(TokenError::BadSignature));
    }
}

// === JWKS ===

#[test]
fn jwks_keys_verify_by_kid() {
    let verifier = jwks_verifier();
    for (algorithm, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::PS256, "rsa-1"),
        (Algorithm::RS512, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
    ] {
        let claims = claims();
        assert_eq!(
            verifier.verify(&signed(algorithm, Some(kid), &claims)),
            Ok(expected(&claims)),
            "{algorithm:?} kid {kid}"
        );
    }
}

#[test]
fn unknown_kid_with_only_jwks_keys_is_rejected() {
    let token = signed(Algorithm::RS256, Some("rsa-2"), &claims());
    assert_eq!(
        jwks_verifier().verify(&token),
        Err(TokenError::UnknownKeyId("rsa-2".into()))
    );
}

#[test]
fn kid_pins_the_key() {
    // A valid RSA signature under the EC key's kid: only `ec-1` is tried,
    // and it does not verify RS256.
    let token = signed(Algorithm::RS256, Some("ec-1"), &claims());
    assert_eq!(
        jwks_verifier().verify(&token),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::RS256))
    );
}

#[test]
fn jwks_alg_member_restricts_the_key() {
    // `ec-1` says `"alg": "ES256"`; the P-384 key signs ES384 under its kid.
    let token = signed(Algorithm::ES384, Some("ec-1"), &claims());
    assert_eq!(
        jwks_verifier().verify(&token),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::ES384))
    );
}

#[test]
fn token_without_kid_against_only_jwks_keys_is_not_accepted() {
    // JWKS keys are only tried for the kid that names them.
    let token = signed(Algorithm::RS256, None, &claims());
    assert_eq!(
        jwks_verifier().verify(&token),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::RS256))
    );
}

#[test]
fn unknown_kid_falls_back_to_keys_without_kid() {
    let verifier = TokenVerifier::builder()
        .jwks_file(fixture!("jwks.json"))
        .and_then(|b| b.public_key_pem_file(fixture!("ed25519_public.pem")))
        .unwrap()
        .build()
        .expect("verifier");
    let claims = claims();
    let token = signed(Algorithm::EdDSA, Some("retired-kid"), &claims);
    assert_eq!(verifier.verify(&token), Ok(expected(&claims)));
}

#[test]
fn jwks_file_errors() {
    let not_json = temp_file(b"not json");
    let (path, detail) = invalid_detail(TokenVerifier::builder().jwks_file(not_json.path()));
    assert_eq!(path, not_json.path().display().to_string());
    assert!(detail.starts_with("not a JWK set"), "{detail}");

    let missing = TokenVerifier::builder().jwks_file(Path::new("/nonexistent/jwks.json"));
    assert!(matches!(missing, Err(KeyError::Read { .. })));
}

/// The fixture JWKS plus an RSA encryption key (as identity providers such
/// as Keycloak publish beside their signing keys), in a temp file.
fn jwks_with_encryption_key(alg: Option<&str>) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(fixture!("jwks.json")).unwrap();
    let mut jwks: Value = serde_json::from_str(&text).unwrap();
    let mut enc = jwks["keys"][0].clone();
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    if let Some(alg) = alg {
        enc["alg"] = json!(alg);
    }
    jwks["keys"].as_array_mut().unwrap().push(enc);
    temp_file(jwks.to_string().as_bytes())
}

#[test]
fn jwks_encryption_keys_are_skipped() {
    for alg in [Some("RSA-OAEP"), None] {
        let file = jwks_with_encryption_key(alg);
        let verifier = TokenVerifier::builder()
            .jwks_file(file.path())
            .expect("a JWKS with an encryption key loads")
            .build()
            .expect("verifier");
        assert!(verifier
            .verify(&signed(Algorithm::RS256, Some("rsa-1"), &claims()))
            .is_ok());
        assert_eq!(
            verifier.verify(&signed(Algorithm::RS256, Some("enc-1"), &claims())),
            Err(TokenError::UnknownKeyId("enc-1".into())),
            "alg {alg:?}"
        );
    }
}

// === malformed input ===

#[test]
fn oversize_token_is_too_large() {
    let token = "a".repeat(MAX_TOKEN_BYTES + 1);
    for verifier in [
        hs256_verifier(),
        TokenVerifier::builder().build().expect("verifier"),
    ] {
        let error = verifier.verify(&token).unwrap_err();
        assert_eq!(error, TokenError::TooLarge(MAX_TOKEN_BYTES + 1));
        assert!(error.is_malformed());
    }
}

#[test]
fn token_of_exactly_max_bytes_is_not_too_large() {
    let token = "a".repeat(MAX_TOKEN_BYTES);
    assert!(matches!(
        hs256_verifier().verify(&token),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn garbage_is_malformed() {
    for token in ["abc", "", "a.b", "a.b.c", "..", "abc.def.ghi.jkl"] {
        let outcome = hs256_verifier().verify(token);
        assert!(
            matches!(outcome, Err(TokenError::Malformed(_))),
            "{token:?}: {outcome:?}"
        );
    }
}

#[test]
fn signature_that_is_not_base64url_is_malformed() {
    let token = hs256(&claims());
    let (message, _) = token.rsplit_once('.').unwrap();
    let outcome = hs256_verifier().verify(&format!("{message}.!!!"));
    assert!(
        matches!(outcome, Err(TokenError::Malformed(_))),
        "{outcome:?}"
    );
}

#[test]
fn payload_that_is_not_json_is_malformed() {
    let token = hs256_raw("not json", SECRET);
    let outcome = hs256_verifier().verify(&token);
    assert!(
        matches!(outcome, Err(TokenError::Malformed(_))),
        "{outcome:?}"
    );
}

#[test]
fn duplicated_claim_is_malformed() {
    let exp = now() + 3600;
    for payload in [
        format!(r#"{{"jti":"a","jti":"b","exp":{exp}}}"#),
        format!(r#"{{"jti":"a","exp":{exp},"exp":1}}"#),
    ] {
        let outcome = hs256_verifier().verify(&hs256_raw(&payload, SECRET));
        assert!(
            matches!(&outcome, Err(TokenError::Malformed(m)) if m.contains("duplicate field")),
            "{payload}: {outcome:?}"
        );
    }
    // The same hand-built token without the duplicate verifies, so the
    // rejection above is the duplicate's doing.
    let single = format!(r#"{{"jti":"a","exp":{exp}}}"#);
    let verified = hs256_verifier()
        .verify(&hs256_raw(&single, SECRET))
        .unwrap();
    assert_eq!(verified.jti.as_deref(), Some("a"));
}

#[test]
fn is_malformed_separates_bad_input_from_bad_tokens() {
    let malformed = [
        TokenError::TooLarge(MAX_TOKEN_BYTES + 1),
        TokenError::Malformed("x".into()),
        TokenError::MissingClaim("exp"),
    ];
    let unauthenticated = [
        TokenError::NoKeys,
        TokenError::AlgorithmNotAccepted(Algorithm::HS256),
        TokenError::UnknownKeyId("k".into()),
        TokenError::BadSignature,
        TokenError::NotYetValid,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
    ];
    for error in malformed {
        assert!(error.is_malformed(), "{error:?}");
    }
    for error in unauthenticated {
        assert!(!error.is_malformed(), "{error:?}");
    }
}

// === builder and key loading ===

#[test]
fn verifier_without_keys_says_no_keys() {
    let verifier = TokenVerifier::builder()
        .issuers(&strings(&[ISSUER]))
        .build()
        .expect("verifier");
    assert!(!verifier.has_keys());
    assert_eq!(verifier.verify(&hs256(&claims())), Err(TokenError::NoKeys));
    assert_eq!(verifier.verify("abc"), Err(TokenError::NoKeys));
}

#[test]
fn verifier_with_a_key_has_keys() {
    assert!(hs256_verifier().has_keys());
}

#[test]
fn empty_secret_is_invalid() {
    let (path, detail) = invalid_detail(TokenVerifier::builder().hs256_secret(b""));
    assert_eq!(path, "HS256 secret");
    assert_eq!(detail, "the secret is empty");
}

#[test]
fn secret_file_is_trimmed() {
    let file = temp_file(b"  file-secret\r\n\t\n");
    let verifier = TokenVerifier::builder()
        .hs256_secret_file(file.path())
        .unwrap()
        .build()
        .expect("verifier");
    let token_for = |secret: &[u8]| mint(Algorithm::HS256, None, &secret_key(secret), &claims());

    assert!(verifier.verify(&token_for(b"file-secret")).is_ok());
    assert_eq!(
        verifier.verify(&token_for(b"  file-secret\r\n\t\n")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn empty_secret_file_is_invalid() {
    for contents in [&b""[..], b" \n\t\r\n"] {
        let file = temp_file(contents);
        let (path, detail) =
            invalid_detail(TokenVerifier::builder().hs256_secret_file(file.path()));
        assert_eq!(path, file.path().display().to_string());
        assert_eq!(detail, "the secret is empty");
    }
}

#[test]
fn missing_secret_file_is_a_read_error() {
    let missing = Path::new("/nonexistent/revocd/secret");
    match TokenVerifier::builder().hs256_secret_file(missing) {
        Err(KeyError::Read { path, source }) => {
            assert_eq!(path, missing.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        Err(other) => panic!("expected KeyError::Read, got {other:?}"),
        Ok(_) => panic!("expected KeyError::Read, got a builder"),
    }
}

#[test]
fn public_key_file_without_a_key_is_invalid() {
    for path in [fixture!("README.md"), fixture!("jwks.json")] {
        let (reported, detail) = invalid_detail(TokenVerifier::builder().public_key_pem_file(path));
        assert_eq!(reported, path.display().to_string());
        assert_eq!(detail, "no RSA, EC or Ed25519 public key in PEM form");
    }
}

#[test]
fn ec_and_ed25519_private_keys_are_not_public_keys() {
    for path in [
        fixture!("ec256_private.pem"),
        fixture!("ec384_private.pem"),
        fixture!("ed25519_private.pem"),
    ] {
        let (reported, _) = invalid_detail(TokenVerifier::builder().public_key_pem_file(path));
        assert_eq!(reported, path.display().to_string());
    }
}

#[test]
fn rsa_private_key_is_not_a_public_key() {
    let path = fixture!("rsa_private.pem");
    let (reported, _) = invalid_detail(TokenVerifier::builder().public_key_pem_file(path));
    assert_eq!(reported, path.display().to_string());
}

#[test]
fn the_crypto_backend_is_compiled_in() {
    assert!(ensure_crypto_backend().is_ok());
}

#[test]
fn debug_never_prints_key_material() {
    let verifier = hs256_builder()
        .issuers(&strings(&[ISSUER]))
        .build()
        .expect("verifier");
    let printed = format!("{verifier:?}");
    assert!(printed.contains("keys: 1"), "{printed}");
    assert!(printed.contains(ISSUER), "{printed}");
    assert!(
        !printed.contains(std::str::from_utf8(SECRET).unwrap()),
        "{printed}"
    );
}

// === keys bound to issuers ===

const ISSUER_A: &str = "https://a.example";
const ISSUER_B: &str = "https://b.example";

/// A fresh P-256 key pair: its signing key, and its public half as PEM.
fn p256_pair() -> (EncodingKey, rcgen::KeyPair) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
    let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key");
    (signing, pair)
}

/// Claims of [`claims`] from `issuer`.
fn claims_of(issuer: &str) -> Value {
    claims_with(json!({ "iss": issuer }))
}

#[test]
fn an_hs256_secret_verifies_its_own_issuers_tokens_only() {
    let verifier = TokenVerifier::builder()
        .issuer_hs256_secret(ISSUER_A, b"secret-of-a")
        .and_then(|b| b.issuer_hs256_secret(ISSUER_B, b"secret-of-b"))
        .unwrap()
        .build()
        .expect("every key is bound");
    let of_a = secret_key(b"secret-of-a");
    let of_b = secret_key(b"secret-of-b");
    for (issuer, key) in [(ISSUER_A, &of_a), (ISSUER_B, &of_b)] {
        let claims = claims_of(issuer);
        let token = mint(Algorithm::HS256, None, key, &claims);
        assert_eq!(verifier.verify(&token), Ok(expected(&claims)), "{issuer}");
    }
    // A's secret, B's name; and the other way round.
    for (issuer, key) in [(ISSUER_B, &of_a), (ISSUER_A, &of_b)] {
        let forged = mint(Algorithm::HS256, None, key, &claims_of(issuer));
        assert_eq!(
            verifier.verify(&forged),
            Err(TokenError::BadSignature),
            "{issuer}"
        );
    }
}

#[test]
fn a_pem_key_verifies_its_own_issuers_tokens_only() {
    let (b_signing, b_pair) = p256_pair();
    let b_public = temp_file(b_pair.public_key_pem().as_bytes());
    let verifier = TokenVerifier::builder()
        .issuer_key_file(ISSUER_A, fixture!("ec256_public.pem"))
        .and_then(|b| b.issuer_key_file(ISSUER_B, b_public.path()))
        .unwrap()
        .build()
        .expect("every key is bound");
    let of_a = private_key(Algorithm::ES256);
    let genuine = claims_of(ISSUER_B);
    let token = mint(Algorithm::ES256, None, &b_signing, &genuine);
    assert_eq!(verifier.verify(&token), Ok(expected(&genuine)));
    let forged = mint(Algorithm::ES256, None, &of_a, &claims_of(ISSUER_B));
    assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
    let forged = mint(Algorithm::ES256, None, &b_signing, &claims_of(ISSUER_A));
    assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
}

/// A JWKS holding the public half of `pair` (P-256) under `kid`.
fn p256_jwks(pair: &rcgen::KeyPair, kid: &str) -> tempfile::NamedTempFile {
    // The uncompressed point: 0x04 || x || y, 32 bytes each.
    let point = pair.public_key_raw();
    assert_eq!(
        (point.len(), point[0]),
        (65, 4),
        "an uncompressed P-256 point"
    );
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
    }]});
    temp_file(jwks.to_string().as_bytes())
}

#[test]
fn a_jwks_key_verifies_its_own_issuers_tokens_only_even_under_a_shared_kid() {
    // B's JWKS uses A's kid `ec-1` for a key of its own.
    let (b_signing, b_pair) = p256_pair();
    let b_jwks = p256_jwks(&b_pair, "ec-1");
    let verifier = TokenVerifier::builder()
        .issuer_key_file(ISSUER_A, fixture!("jwks.json"))
        .and_then(|b| b.issuer_key_file(ISSUER_B, b_jwks.path()))
        .unwrap()
        .build()
        .expect("every key is bound");
    for (issuer, key) in [
        (ISSUER_A, &private_key(Algorithm::ES256)),
        (ISSUER_B, &b_signing),
    ] {
        let claims = claims_of(issuer);
        let token = mint(Algorithm::ES256, Some("ec-1"), key, &claims);
        assert_eq!(verifier.verify(&token), Ok(expected(&claims)), "{issuer}");
    }
    let of_a = private_key(Algorithm::ES256);
    let forged = mint(Algorithm::ES256, Some("ec-1"), &of_a, &claims_of(ISSUER_B));
    assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
    // A's other key is unknown to B.
    let forged = signed(Algorithm::RS256, Some("rsa-1"), &claims_of(ISSUER_B));
    assert_eq!(
        verifier.verify(&forged),
        Err(TokenError::AlgorithmNotAccepted(Algorithm::RS256))
    );
    let forged = signed(Algorithm::ES256, Some("rsa-1"), &claims_of(ISSUER_B));
    assert_eq!(
        verifier.verify(&forged),
        Err(TokenError::UnknownKeyId("rsa-1".into()))
    );
}

#[test]
fn an_issuer_without_keys_is_the_wrong_issuer() {
    // B is accepted (requests may name it) but has no key: A's key never
    // stands in for it.
    let verifier = TokenVerifier::builder()
        .issuer_hs256_secret(ISSUER_A, SECRET)
        .unwrap()
        .issuers(&strings(&[ISSUER_B]))
        .build()
        .expect("every key is bound");
    assert_eq!(verifier.issuers(), strings(&[ISSUER_B, ISSUER_A]));
    for forged in [claims_of(ISSUER_B), claims_of("https://c.example")] {
        assert_eq!(
            verifier.verify(&hs256(&forged)),
            Err(TokenError::WrongIssuer)
        );
    }
    let no_iss = claims_with(json!({ "iss": null }));
    assert_eq!(
        verifier.verify(&hs256(&no_iss)),
        Err(TokenError::WrongIssuer)
    );
    assert!(verifier.verify(&hs256(&claims_of(ISSUER_A))).is_ok());
}

#[test]
fn unbound_keys_belong_to_the_single_issuer() {
    let verifier = TokenVerifier::builder()
        .hs256_secret(SECRET)
        .and_then(|b| b.public_key_pem_file(fixture!("ec256_public.pem")))
        .unwrap()
        .issuers(&strings(&[ISSUER]))
        .build()
        .expect("one issuer owns the unbound keys");
    let claims = claims();
    assert_eq!(verifier.verify(&hs256(&claims)), Ok(expected(&claims)));
    let es256 = signed(Algorithm::ES256, None, &claims);
    assert_eq!(verifier.verify(&es256), Ok(expected(&claims)));
    let other = claims_of(ISSUER_B);
    assert_eq!(
        verifier.verify(&hs256(&other)),
        Err(TokenError::WrongIssuer)
    );

    // The single issuer may also come from a bound key.
    let (_, b_pair) = p256_pair();
    let b_public = temp_file(b_pair.public_key_pem().as_bytes());
    let verifier = hs256_builder()
        .issuer_key_file(ISSUER, b_public.path())
        .unwrap()
        .build()
        .expect("one issuer owns the unbound keys");
    assert_eq!(verifier.issuers(), strings(&[ISSUER]));
    assert_eq!(verifier.verify(&hs256(&claims)), Ok(expected(&claims)));
}

#[test]
fn unbound_keys_beside_two_issuers_are_refused() {
    let two = strings(&[ISSUER_A, ISSUER_B]);
    let error = hs256_builder()
        .public_key_pem_file(fixture!("ec256_public.pem"))
        .unwrap()
        .issuers(&two)
        .build()
        .expect_err("unbound keys with two issuers");
    let pem = fixture!("ec256_public.pem").display().to_string();
    assert_eq!(
        error,
        UnboundKeys {
            keys: vec!["an HS256 secret given directly".into(), pem],
            issuers: two.clone(),
        }
    );
    let message = error.to_string();
    for part in [
        "2 issuers",
        "--jwt-issuer-key ISSUER=PATH",
        "[[jwt.issuer]]",
    ] {
        assert!(message.contains(part), "{message}");
    }
    // The second issuer may be one a key is bound to.
    let error = hs256_builder()
        .issuer_key_file(ISSUER_B, fixture!("ec256_public.pem"))
        .unwrap()
        .issuers(&strings(&[ISSUER_A]))
        .build()
        .expect_err("an unbound secret beside A and B");
    assert_eq!(error.issuers, two);
}

#[test]
fn an_issuer_key_file_is_a_pem_public_key_or_a_jwks_never_a_secret() {
    let secret = temp_file(SECRET);
    let (path, detail) =
        invalid_detail(TokenVerifier::builder().issuer_key_file(ISSUER, secret.path()));
    assert_eq!(path, secret.path().display().to_string());
    assert!(
        detail.contains("no RSA, EC or Ed25519 public key"),
        "{detail}"
    );
    let not_jwks = temp_file(b"{\"keys\": 1}");
    let (_, detail) =
        invalid_detail(TokenVerifier::builder().issuer_key_file(ISSUER, not_jwks.path()));
    assert!(detail.starts_with("not a JWK set"), "{detail}");
    let private = TokenVerifier::builder().issuer_key_file(ISSUER, fixture!("ec256_private.pem"));
    assert!(invalid_detail(private).1.contains("private key"));
}

#[test]
fn a_duplicated_iss_is_malformed_before_any_key_is_picked() {
    let verifier = issuer_verifier();
    let exp = now() + 3600;
    let payload = format!(r#"{{"iss":"https://other.example","iss":"{ISSUER}","exp":{exp}}}"#);
    let result = verifier.verify(&hs256_raw(&payload, SECRET));
    assert!(
        matches!(&result, Err(TokenError::Malformed(m)) if m.contains("duplicate field")),
        "{result:?}"
    );
}

#[test]
fn a_deployments_own_claims_are_read_once_asked_for() {
    let verifier = hs256_verifier();
    let claims = claims_with(json!({ "groups": ["admins", 7, "ops"], "email": "a@b.c" }));
    let token = hs256(&claims);
    assert!(
        verifier.verify(&token).unwrap().other.is_empty(),
        "nothing asked yet"
    );
    assert_eq!(
        verifier
            .verify(&token)
            .unwrap()
            .any_cut_value("groups", |_| true),
        None
    );
    verifier.read_claims(vec!["groups".into(), "team".into()]);
    let verified = verifier.verify(&token).unwrap();
    let groups = ClaimValue::Many(vec!["admins".into(), "ops".into()]);
    assert_eq!(
        verified.other,
        [("groups".into(), Some(groups)), ("team".into(), None)]
    );
    assert_eq!(
        verified.any_cut_value("groups", |value| value == "ops"),
        Some(true)
    );
    assert_eq!(
        verified.any_cut_value("team", |_| true),
        Some(false),
        "absent"
    );
    let pairs = verified.cut_pairs();
    assert!(pairs.contains(&("groups", "admins")) && pairs.contains(&("groups", "ops")));
    // A wanted claim given twice is as malformed as a built-in one.
    let exp = now() + 3600;
    let twice = format!(r#"{{"jti":"a","exp":{exp},"groups":["a"],"groups":["b"]}}"#);
    let outcome = verifier.verify(&hs256_raw(&twice, SECRET));
    assert!(
        matches!(&outcome, Err(TokenError::Malformed(m)) if m.contains("duplicate field")),
        "{outcome:?}"
    );
}
