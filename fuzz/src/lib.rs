//! What the fuzz targets and the seed-corpus generator
//! (`examples/seed_corpus.rs`) must agree on: how a target's input is cut
//! into frames or tokens, and the fixed keys the JWT target trusts.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey};
use prost::Message;
use revocd::pb::FilterUpdate;
use revocd::tokens::TokenVerifier;

/// Most frames taken from one input: enough for a chunked snapshot and a
/// run of deltas, few enough that one input stays fast.
pub const MAX_FRAMES: usize = 64;

/// The `subscribe_frames` input: `FilterUpdate` messages, each prefixed by
/// its length as a protobuf varint (prost's length-delimited encoding),
/// until the bytes end or one does not decode. The gateway receives the
/// same messages with gRPC's 5-byte prefix; the varint lets a mutation that
/// changes a message's size keep the frames after it.
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = FilterUpdate> + '_ {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        FilterUpdate::decode_length_delimited(&mut data).ok()
    })
    .take(MAX_FRAMES)
}

/// Encodes frames as [`frames`] reads them.
pub fn encode_frames(updates: &[FilterUpdate]) -> Vec<u8> {
    let mut out = Vec::new();
    for update in updates {
        // Writing to a Vec cannot run out of space.
        update
            .encode_length_delimited(&mut out)
            .expect("a Vec grows");
    }
    out
}

/// The HS256 secret the JWT target trusts (and signs with).
pub const HS256_SECRET: &[u8] = b"revocd-fuzz-hs256-secret";
/// The issuer the strict verifier accepts.
pub const ISSUER: &str = "https://auth.example.com";
/// The audience the strict verifier requires.
pub const AUDIENCE: &str = "api";

/// How the `jwt_claims` input becomes a token, chosen by its first byte
/// modulo 3 (so the seeds can start with the digits `0`, `1` and `2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// The rest of the input is the token, as text.
    Raw,
    /// The rest is `header JSON \n payload JSON`, signed here with the
    /// trusted HS256 secret: reaches claims extraction past the signature.
    SignedHs256,
    /// The same, signed with the trusted P-256 key.
    SignedEs256,
}

impl TokenMode {
    /// The mode of a first byte.
    pub fn of(byte: u8) -> Self {
        match byte % 3 {
            0 => TokenMode::Raw,
            1 => TokenMode::SignedHs256,
            _ => TokenMode::SignedEs256,
        }
    }

    /// The first byte that selects this mode.
    pub fn byte(self) -> u8 {
        match self {
            TokenMode::Raw => b'0',
            TokenMode::SignedHs256 => b'1',
            TokenMode::SignedEs256 => b'2',
        }
    }
}

/// `tests/fixtures/keys/<name>` (fuzz targets run from this checkout).
pub fn key_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keys")
        .join(name)
}

/// Verifiers over the same trusted keys (the HS256 secret, the P-256 public
/// key as PEM and the JWKS of RSA and P-256 keys): one requiring
/// [`ISSUER`] and [`AUDIENCE`] with no leeway, one accepting any issuer and
/// audience with the largest leeway `revocd serve` accepts (an hour).
///
/// # Panics
/// When a fixture is missing or unreadable: the target cannot run without.
pub fn verifiers() -> [TokenVerifier; 2] {
    let trusted = || {
        TokenVerifier::builder()
            .hs256_secret(HS256_SECRET)
            .and_then(|b| b.public_key_pem_file(&key_fixture("ec256_public.pem")))
            .and_then(|b| b.jwks_file(&key_fixture("jwks.json")))
            .expect("tests/fixtures/keys")
    };
    let strict = trusted()
        .issuers(&[ISSUER.to_owned()])
        .audiences(&[AUDIENCE.to_owned()])
        .build()
        .expect("one issuer owns every key");
    let lax = trusted()
        .leeway_seconds(3_600)
        .build()
        .expect("no issuer: every key verifies any");
    [strict, lax]
}

/// The key and algorithm a signing mode signs with; `None` for
/// [`TokenMode::Raw`].
///
/// # Panics
/// When the P-256 private key fixture is missing.
pub fn signing_key(mode: TokenMode) -> Option<(EncodingKey, Algorithm)> {
    match mode {
        TokenMode::Raw => None,
        TokenMode::SignedHs256 => Some((
            EncodingKey::from_secret(HS256_SECRET).expect("an HMAC key of any length"),
            Algorithm::HS256,
        )),
        TokenMode::SignedEs256 => {
            let pem = std::fs::read(key_fixture("ec256_private.pem")).expect("P-256 fixture");
            let key = EncodingKey::from_ec_pem(&pem).expect("a P-256 PKCS#8 PEM");
            Some((key, Algorithm::ES256))
        }
    }
}

/// `base64url(header).base64url(payload).signature`, for any bytes.
pub fn signed_token(header: &[u8], payload: &[u8], key: &EncodingKey, alg: Algorithm) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    // HMAC and ECDSA signing fail only on a key of the wrong kind.
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    format!("{message}.{signature}")
}
