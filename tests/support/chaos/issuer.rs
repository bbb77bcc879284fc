//! The two issuers of the test bed, each with its own key, the JWT flags
//! every replica, agent and gateway is configured with, and the forged
//! tokens: signed with one issuer's key while claiming the other.
//!
//! - **A** is the deployment's issuer (`support::ISSUER`), HS256 with the
//!   deployment's secret;
//! - **B** signs with ES256 (`tests/fixtures/keys/ec256_*.pem`).
//!
//! A key verifies only the tokens of the issuer it is bound to, by
//! [`ISSUER_KEY_FLAG`] (public keys) and [`ISSUER_SECRET_FLAG`] (HS256
//! secrets). A build that does not know them is given the keys and issuers
//! unbound (so a forged token verifies, and the forged-issuer phase
//! reports it).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revocd::config::JwtArgs;
use revocd::time::unix_now;
use revocd::tokens::{Claims, TokenVerifier};

use crate::support::{Deployment, ISSUER, SECRET};

/// The flag binding a public key file to the one issuer it may verify:
/// `<flag> <issuer>=<path>`, repeatable. Its spelling lives here only.
pub const ISSUER_KEY_FLAG: &str = "--jwt-issuer-key";
/// The same for an HS256 secret file.
pub const ISSUER_SECRET_FLAG: &str = "--jwt-issuer-hs256-secret-file";
/// Issuer B's name.
pub const ISSUER_B: &str = "https://issuer-b.test";
/// Lifetime of the run's tokens, unless made otherwise.
pub const LIFETIME: i64 = 3600;
/// The clock leeway of every part (the default `--leeway`): a token is
/// refused as expired, and its revocation record dropped, this long after
/// its `exp`.
pub const LEEWAY: i64 = 60;

/// Which issuer a token claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// The deployment's issuer, HS256.
    A,
    /// The second issuer, ES256.
    B,
}

impl Issuer {
    /// Its `iss`.
    pub fn name(self) -> &'static str {
        match self {
            Issuer::A => ISSUER,
            Issuer::B => ISSUER_B,
        }
    }

    /// Signs `claims` with this issuer's own key.
    pub fn sign(self, claims: &serde_json::Value) -> String {
        static B_KEY: OnceLock<EncodingKey> = OnceLock::new();
        let (algorithm, key) = match self {
            Issuer::A => (
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()).expect("HMAC key"),
            ),
            Issuer::B => (
                Algorithm::ES256,
                B_KEY.get_or_init(|| {
                    let pem = std::fs::read(fixture("ec256_private.pem")).expect("issuer B's key");
                    EncodingKey::from_ec_pem(&pem).expect("ES256 key")
                }),
            ),
        };
        jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("signing")
    }
}

/// A token's JWT and claims, signed by `signer` while claiming `claimed`
/// (the same issuer, except for forgeries), with `exp` `lifetime` seconds
/// from now.
pub fn token(
    signer: Issuer,
    claimed: Issuer,
    subject: &str,
    jti: &str,
    lifetime: i64,
) -> (String, Claims) {
    let now = unix_now();
    let exp = now + lifetime;
    // Issued a minute before `exp` at the latest, so a short-lived token
    // still has a plausible life.
    let iat = now.min(exp - 60);
    // Each token is a session of its own, so the load can revoke it by
    // `sid` as well as by `jti`.
    let jwt = signer.sign(&serde_json::json!({
        "iss": claimed.name(), "sub": subject, "jti": jti, "sid": jti, "iat": iat, "exp": exp,
    }));
    let claims = Claims {
        issuer: claimed.name().to_owned(),
        jti: Some(jti.to_owned()),
        subject: Some(subject.to_owned()),
        expires_at: Some(exp),
        issued_at: Some(iat),
        session: Some(jti.into()),
        ..Claims::default()
    };
    (jwt, claims)
}

/// A key file of the fixtures.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

/// The JWT flags of every part of the test bed: both issuers, each bound
/// to its own key when the build knows how.
pub fn jwt_flags(deployment: &Deployment) -> Vec<String> {
    let secret = deployment.path("secret").display().to_string();
    let public = fixture("ec256_public.pem").display().to_string();
    let mut flags = Vec::new();
    if binding_supported() {
        let a = format!("{}={secret}", Issuer::A.name());
        let b = format!("{}={public}", Issuer::B.name());
        flags.extend([ISSUER_SECRET_FLAG.to_owned(), a]);
        flags.extend([ISSUER_KEY_FLAG.to_owned(), b]);
    } else {
        flags.extend(["--jwt-hs256-secret-file".to_owned(), secret]);
        flags.extend(["--jwt-public-key-file".to_owned(), public]);
    }
    for issuer in [Issuer::A, Issuer::B] {
        flags.extend(["--jwt-issuer".to_owned(), issuer.name().to_owned()]);
    }
    flags
}

/// The verifier of a gateway in this process, from [`jwt_flags`] (so it
/// binds keys exactly as the processes do).
pub fn verifier(flags: &[String]) -> TokenVerifier {
    jwt_args(flags)
        .expect("valid JWT flags")
        .verifier(None)
        .expect("usable JWT keys")
}

/// Whether this build's JWT flags include [`ISSUER_KEY_FLAG`] and
/// [`ISSUER_SECRET_FLAG`].
pub fn binding_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        [ISSUER_KEY_FLAG, ISSUER_SECRET_FLAG]
            .into_iter()
            .all(
                |flag| match jwt_args(&[flag.to_owned(), "x=y".to_owned()]) {
                    Ok(_) => true,
                    Err(error) => error.kind() != clap::error::ErrorKind::UnknownArgument,
                },
            )
    })
}

#[derive(Parser)]
struct JwtCli {
    #[command(flatten)]
    jwt: JwtArgs,
}

fn jwt_args(flags: &[String]) -> Result<JwtArgs, clap::Error> {
    let argv = std::iter::once("revocd".to_owned()).chain(flags.iter().cloned());
    JwtCli::try_parse_from(argv).map(|cli| cli.jwt)
}
