//! A negative corpus of JWTs, each driven through the server's gRPC API
//! (`Revoke{token}` without a key, `Check{token}` with one) and through the
//! gateway library, with the exact outcome asserted: refused with the code
//! `TokenError` maps to (INVALID_ARGUMENT for input that is not a usable
//! JWT, UNAUTHENTICATED for one that does not verify), the same refusal in
//! the gateway, never "not revoked" for a revoked token, never a panic.
//!
//! Three servers, each with a gateway built from the same key flags:
//! `pem` trusts the test HS256 secret, the P-256 and the RSA public keys;
//! `rsa` only the RSA public key; `jwks` only `tests/fixtures/keys/jwks.json`
//! (keys `rsa-1` and `ec-1`, matched by `kid`).

mod support;

use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revocd::gateway::{Denial, Gateway, Verdict};
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{CheckRequest, CheckResponse, RevokeRequest, RevokeResponse};
use revocd::time::unix_now;
use revocd::tokens::{TokenError, TokenVerifier};
use serde_json::{json, Value};
use support::{eventually, Deployment, ServingStatus, TestServer, ISSUER, SECRET};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Bound on every call and on anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);

/// The secret an attacker signs with.
const ATTACKER_SECRET: &str = "attacker-chosen-secret";

/// The order n of the P-256 group (SEC 2, §2.4.2), big-endian.
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

// === the servers ===

/// Which keys a server (and its gateway) trusts.
#[derive(Clone, Copy, Debug)]
enum Keys {
    /// The HS256 secret, the P-256 and the RSA public keys.
    Pem,
    /// Only the RSA public key.
    Rsa,
    /// Only the JWKS (`rsa-1`, `ec-1`).
    Jwks,
}

/// A server and a gateway following it, trusting the same keys.
struct Harness {
    server: TestServer,
    gateway: Gateway,
    /// Verifies as the server does, to learn what a token is.
    verifier: TokenVerifier,
    _deployment: Deployment,
}

impl Harness {
    async fn start(keys: Keys) -> Self {
        support::trace_init();
        let deployment = Deployment::new();
        let mut args = vec![
            "--api-keys-file".to_owned(),
            path_arg(&deployment.path("api-keys.toml")),
            "--jwt-issuer".to_owned(),
            ISSUER.to_owned(),
        ];
        let key_flags: &[(&str, PathBuf)] = match keys {
            Keys::Pem => &[
                ("--jwt-hs256-secret-file", deployment.path("secret")),
                ("--jwt-public-key-file", fixture("ec256_public.pem")),
                ("--jwt-public-key-file", fixture("rsa_public.pem")),
            ],
            Keys::Rsa => &[("--jwt-public-key-file", fixture("rsa_public.pem"))],
            Keys::Jwks => &[("--jwks-file", fixture("jwks.json"))],
        };
        for (flag, path) in key_flags {
            args.extend([flag.to_string(), path_arg(path)]);
        }
        let server = TestServer::start(&args).await;
        let jwt = support::serve_config(&args).jwt;
        let config = support::gateway_config([format!("http://{}", server.address)]);
        let gateway =
            Gateway::spawn(config, jwt.verifier(None).expect("verifier")).expect("gateway");
        assert!(
            gateway.ready(SOON).await,
            "{keys:?}: gateway got no snapshot"
        );
        Harness {
            server,
            gateway,
            verifier: jwt.verifier(None).expect("verifier"),
            _deployment: deployment,
        }
    }

    /// `Revoke{token}` without an API key: the token is its own proof.
    async fn revoke(&self, token: &str) -> Result<RevokeResponse, Status> {
        let request = RevokeRequest {
            token: token.to_owned(),
            ..Default::default()
        };
        let mut client = self.server.client(None).await;
        let reply = tokio::time::timeout(SOON, client.revoke(request)).await;
        reply
            .expect("Revoke answered in time")
            .map(|r| r.into_inner())
    }

    /// `Check{token}` with a read key.
    async fn check(&self, token: &str) -> Result<CheckResponse, Status> {
        let request = CheckRequest {
            token: token.to_owned(),
            ..Default::default()
        };
        let mut client = self.server.client(Some("key-read")).await;
        let reply = tokio::time::timeout(SOON, client.check(request)).await;
        reply
            .expect("Check answered in time")
            .map(|r| r.into_inner())
    }

    /// The gateway's final answer (filter, then the server if it must).
    async fn judge(&self, token: &str) -> Verdict {
        let verdict = tokio::time::timeout(SOON, self.gateway.check_confirmed(token)).await;
        verdict.expect("gateway answered in time")
    }

    /// Asserts `token` is refused everywhere with `code`, the message
    /// naming `because`: by `Revoke`, by `Check`, and by the gateway with
    /// the token error the server's code comes from.
    async fn assert_refused(&self, case: &str, token: &str, code: Code, because: &str) {
        for (call, outcome) in [
            ("Revoke", self.revoke(token).await.map(|r| format!("{r:?}"))),
            ("Check", self.check(token).await.map(|r| format!("{r:?}"))),
        ] {
            match outcome {
                Err(status) => assert!(
                    status.code() == code && status.message().contains(because),
                    "{case}: {call} refused with {:?} {:?}, expected {code:?} naming {because:?}",
                    status.code(),
                    status.message()
                ),
                Ok(reply) => panic!("{case}: {call} accepted the token: {reply}"),
            }
        }
        match self.judge(token).await {
            Verdict::Deny(Denial::Invalid(error)) => assert!(
                code_of(&error) == code && error.to_string().contains(because),
                "{case}: the gateway refused with {error:?}, expected {code:?} naming {because:?}"
            ),
            other => panic!("{case}: the gateway answered {other:?}"),
        }
    }

    /// Asserts `token` is accepted: revoking it by itself stores a new
    /// revocation, `Check` then says revoked, and the gateway denies it.
    async fn assert_revocable(&self, case: &str, token: &str) {
        assert!(
            matches!(self.judge(token).await, Verdict::Allow(_)),
            "{case}: the gateway refused a token it should accept"
        );
        let reply = self.revoke(token).await;
        assert!(
            reply.as_ref().is_ok_and(|r| r.newly_revoked),
            "{case}: Revoke: {reply:?}"
        );
        let status = self.check(token).await;
        assert!(
            status.as_ref().is_ok_and(|s| s.revoked),
            "{case}: Check: {status:?}"
        );
        self.until_denied(case, token, Denial::Revoked).await;
    }

    /// Waits until the gateway answers `Deny(denial)` for `token` (a
    /// revocation reaches it as a delta).
    async fn until_denied(&self, case: &str, token: &str, denial: Denial) {
        let expected = Verdict::Deny(denial);
        let what = format!("{case}: the gateway to answer {expected:?}");
        eventually(&what, SOON, Duration::from_millis(10), || async {
            match self.judge(token).await {
                verdict if verdict == expected => Ok(()),
                verdict => Err(verdict),
            }
        })
        .await;
    }

    /// Stops the server, failing if its task panicked.
    async fn stop(self) {
        assert_eq!(
            support::health(self.server.address).await,
            Some(ServingStatus::Serving),
            "the server stopped answering"
        );
        self.server.stop().await;
    }
}

/// The gRPC code the server answers a token error with (the mapping in
/// `src/server/error.rs`, `impl From<TokenError> for ApiError`).
fn code_of(error: &TokenError) -> Code {
    match error {
        TokenError::NoKeys => Code::FailedPrecondition,
        _ if error.is_malformed() => Code::InvalidArgument,
        _ => Code::Unauthenticated,
    }
}

// === tokens ===

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_owned()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Valid claims for a fresh `jti`, issued now, valid an hour.
fn claims(jti: &str) -> Value {
    let now = unix_now();
    json!({"iss": ISSUER, "sub": "corpus", "jti": jti, "iat": now, "exp": now + 3600})
}

/// A token over exactly these header and payload texts (which need not be
/// what serde would write), HMAC-signed with `secret`.
fn hs256_raw(header: &str, payload: &str, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let key = EncodingKey::from_secret(secret).expect("HMAC key");
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HMAC signing");
    format!("{message}.{signature}")
}

/// A token with exactly these header and payload texts and signature.
fn unsigned(header: &str, payload: &Value, signature: &str) -> String {
    let payload = payload.to_string();
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}

/// Signs `claims` under `header` with `key`.
fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("signing")
}

/// The fixture private key `name` (RSA, or EC of either curve).
fn private_key(name: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(name)).expect("fixture private key");
    match name {
        "rsa_private.pem" => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ec_pem(&pem),
    }
    .expect("parse fixture private key")
}

fn secret_key(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret).expect("HMAC key")
}

/// The other valid encoding of an ES256 signature: `s` replaced by `n − s`.
fn high_s(token: &str) -> String {
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let mut bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url signature");
    assert_eq!(bytes.len(), 64, "ES256 signatures are r ‖ s, 32 bytes each");
    let s: [u8; 32] = bytes[32..].try_into().expect("32 bytes");
    bytes[32..].copy_from_slice(&sub_256(&P256_ORDER, &s));
    format!("{message}.{}", b64(&bytes))
}

/// `a − b` for big-endian 256-bit numbers with `a > b`.
fn sub_256(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        out[i] = digit as u8;
    }
    assert_eq!(borrow, 0, "a must exceed b");
    out
}

#[test]
fn sub_256_borrows_across_bytes() {
    let small = |n: u16| {
        let mut x = [0u8; 32];
        x[30..].copy_from_slice(&n.to_be_bytes());
        x
    };
    assert_eq!(sub_256(&small(256), &small(1)), small(255));
    assert_eq!(sub_256(&small(0x1_00), &small(0xFF)), small(1));
    let mut n_minus_one = P256_ORDER;
    n_minus_one[31] -= 1;
    assert_eq!(sub_256(&P256_ORDER, &small(1)), n_minus_one);
    assert_eq!(sub_256(&P256_ORDER, &n_minus_one), small(1));
}

// === the corpus ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_tokens_and_algorithm_confusion_are_refused() {
    let pem = Harness::start(Keys::Pem).await;
    let rsa = Harness::start(Keys::Rsa).await;
    let body = claims("alg-none");
    // `none` in any spelling, or no `alg` at all, is not an algorithm here:
    // the header does not parse.
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"alg":""}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        for signature in ["", "AAAA"] {
            let token = unsigned(header, &body, signature);
            let case = format!("{header} / {signature:?}");
            for harness in [&pem, &rsa] {
                harness
                    .assert_refused(&case, &token, Code::InvalidArgument, "unreadable header")
                    .await;
            }
        }
    }
    // HS/RS confusion: HMAC keyed with the (public) RSA or EC key's PEM.
    for public in ["rsa_public.pem", "ec256_public.pem"] {
        let pem_bytes = std::fs::read(fixture(public)).expect("public key fixture");
        for secret in [&pem_bytes[..], pem_bytes.trim_ascii()] {
            let header = Header::new(Algorithm::HS256);
            let token = sign(&header, &claims("confused"), &secret_key(secret));
            let case = format!("HS256 keyed with {public}");
            let bad = "token signature does not verify";
            pem.assert_refused(&case, &token, Code::Unauthenticated, bad)
                .await;
            let not_accepted = "token algorithm HS256 is not accepted by any configured key";
            rsa.assert_refused(&case, &token, Code::Unauthenticated, not_accepted)
                .await;
        }
    }
    // Control: the same claims, RS256-signed by the RSA private key, pass.
    let header = Header::new(Algorithm::RS256);
    let token = sign(
        &header,
        &claims("rs256-ok"),
        &private_key("rsa_private.pem"),
    );
    rsa.assert_revocable("RS256 with the trusted key", &token)
        .await;
    pem.stop().await;
    rsa.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_non_numeric_and_far_future_exp() {
    let harness = Harness::start(Keys::Pem).await;
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let now = unix_now();
    let no_exp = format!(r#"{{"iss":"{ISSUER}","sub":"corpus","jti":"no-exp","iat":{now}}}"#);
    let token = hs256_raw(header, &no_exp, SECRET.as_bytes());
    harness
        .assert_refused("no exp", &token, Code::InvalidArgument, "no `exp` claim")
        .await;
    let text_exp = format!(r#"{{"iss":"{ISSUER}","jti":"text-exp","exp":"tomorrow"}}"#);
    let token = hs256_raw(header, &text_exp, SECRET.as_bytes());
    harness
        .assert_refused("exp as text", &token, Code::InvalidArgument, "malformed")
        .await;

    // Ten years ahead: a valid signature, but beyond --max-token-lifetime
    // (24 h). No revocation or cut-off could be kept for its whole life,
    // so it is refused everywhere: `Revoke` and `Check` name the bound,
    // the gateway (told the bound in its snapshot) denies it.
    let mut far = claims("far-future");
    far["sub"] = json!("far-future-subject");
    far["exp"] = json!(now + 10 * 366 * 86_400);
    let token = sign(&Header::default(), &far, &secret_key(SECRET.as_bytes()));
    for (call, refused) in [
        ("Revoke", harness.revoke(&token).await.map(drop)),
        ("Check", harness.check(&token).await.map(drop)),
    ] {
        let refused = refused.expect_err(call);
        assert_eq!(refused.code(), Code::InvalidArgument, "{call}: {refused:?}");
        assert!(
            refused.message().contains("--max-token-lifetime"),
            "{call}: {refused:?}"
        );
    }
    let verdict = harness.judge(&token).await;
    assert!(
        matches!(
            verdict,
            Verdict::Deny(Denial::Unrevocable(
                revocd::bounds::BoundsError::LifetimeTooLong { .. }
            ))
        ),
        "the gateway accepts tokens living longer than the server would revoke: {verdict:?}"
    );
    harness.stop().await;
}

/// A named pipe that reports whether anything opened it for reading: a
/// reader blocks in `open` until a writer comes, and the trap's thread
/// keeps trying to be that writer (without blocking itself).
struct FifoTrap {
    path: PathBuf,
    opened: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoTrap {
    fn new(path: PathBuf) -> Self {
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("running mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        let opened = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (path, opened, stop) = (path.clone(), opened.clone(), stop.clone());
            move || {
                // O_NONBLOCK (Linux): opening the write end fails with ENXIO
                // unless a reader has the pipe open.
                const O_NONBLOCK: i32 = 0o4000;
                while !stop.load(Ordering::SeqCst) {
                    let writer = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(O_NONBLOCK)
                        .open(&path);
                    if writer.is_ok() {
                        // Dropping it gives the reader end-of-file: unblocked.
                        opened.store(true, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        FifoTrap {
            path,
            opened,
            stop,
            thread: Some(thread),
        }
    }

    /// True once anything opened the pipe to read it.
    fn was_opened(&self) -> bool {
        self.opened.load(Ordering::SeqCst)
    }
}

impl Drop for FifoTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `path` reached from any working directory through `..` segments.
fn traversal_to(path: &Path) -> String {
    let relative = path.to_str().expect("UTF-8 path").trim_start_matches('/');
    format!("{}{relative}", "../".repeat(16))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_path_traversal_reads_no_file() {
    let jwks = Harness::start(Keys::Jwks).await;
    let pem = Harness::start(Keys::Pem).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let trap = FifoTrap::new(dir.path().join("key.pem"));
    // A file an attacker controls, holding the secret they sign with.
    let planted = dir.path().join("planted-secret");
    std::fs::write(&planted, ATTACKER_SECRET).expect("planted secret");

    let kids = [
        "../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        trap.path.to_str().expect("UTF-8").to_owned(),
        traversal_to(&trap.path),
        "rsa-1/../rsa-1".to_owned(),
    ];
    for kid in &kids {
        // Signed by a trusted key, but under a kid the set does not hold.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.clone());
        let token = sign(&header, &claims("kid"), &private_key("rsa_private.pem"));
        let unknown = format!("token names an unknown key id (kid) {kid:?}");
        jwks.assert_refused(kid, &token, Code::Unauthenticated, &unknown)
            .await;
    }
    // Where keys without a kid exist, an unknown kid falls back to them:
    // the secret in the planted file is not one of them...
    for kid in [traversal_to(&planted), planted.display().to_string()] {
        let header = Header {
            kid: Some(kid.clone()),
            ..Header::default()
        };
        let token = sign(
            &header,
            &claims("planted"),
            &secret_key(ATTACKER_SECRET.as_bytes()),
        );
        pem.assert_refused(
            &kid,
            &token,
            Code::Unauthenticated,
            "signature does not verify",
        )
        .await;
    }
    // ...and a token of the trusted secret naming the pipe verifies
    // without the pipe being opened (a read would block on it).
    let header = Header {
        kid: Some(traversal_to(&trap.path)),
        ..Header::default()
    };
    let token = sign(&header, &claims("kid-pipe"), &secret_key(SECRET.as_bytes()));
    pem.assert_revocable("trusted secret, kid naming a pipe", &token)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!trap.was_opened(), "something opened the file a kid named");
    jwks.stop().await;
    pem.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_x5u_and_embedded_jwk_are_never_trusted_or_fetched() {
    let pem = Harness::start(Keys::Pem).await;
    let jwks = Harness::start(Keys::Jwks).await;
    // Where the attacker's key set would be served: any connection to it
    // would show here.
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("non-blocking");
    let url = format!("http://{}/jwks.json", trap.local_addr().expect("address"));
    let pointing = |algorithm: Algorithm, kid: Option<&str>| Header {
        kid: kid.map(str::to_owned),
        jku: Some(url.clone()),
        x5u: Some(url.clone()),
        ..Header::new(algorithm)
    };
    let bad = "token signature does not verify";

    let forged = sign(
        &pointing(Algorithm::HS256, None),
        &claims("jku-hs"),
        &secret_key(ATTACKER_SECRET.as_bytes()),
    );
    pem.assert_refused("HS256 forged, jku/x5u", &forged, Code::Unauthenticated, bad)
        .await;
    // A P-384 key is foreign to the P-256 key `pem` trusts.
    let foreign = sign(
        &pointing(Algorithm::ES384, None),
        &claims("jku-es"),
        &private_key("ec384_private.pem"),
    );
    pem.assert_refused(
        "ES384 foreign key, jku/x5u",
        &foreign,
        Code::Unauthenticated,
        bad,
    )
    .await;
    let foreign = sign(
        &pointing(Algorithm::ES384, Some("ec-1")),
        &claims("jku-es-kid"),
        &private_key("ec384_private.pem"),
    );
    let not_accepted = "token algorithm ES384 is not accepted";
    jwks.assert_refused(
        "ES384 under kid ec-1, jku",
        &foreign,
        Code::Unauthenticated,
        not_accepted,
    )
    .await;
    let foreign_kid = sign(
        &pointing(Algorithm::RS256, Some("attacker-1")),
        &claims("jku-kid"),
        &private_key("rsa_private.pem"),
    );
    jwks.assert_refused(
        "unknown kid, jku",
        &foreign_kid,
        Code::Unauthenticated,
        "unknown key id",
    )
    .await;
    // The attacker's key embedded in the header (`jwk`) is not a key either.
    let embedded = format!(
        r#"{{"alg":"HS256","jwk":{{"kty":"oct","k":"{}"}}}}"#,
        b64(ATTACKER_SECRET.as_bytes())
    );
    let token = hs256_raw(
        &embedded,
        &claims("jwk").to_string(),
        ATTACKER_SECRET.as_bytes(),
    );
    pem.assert_refused("embedded jwk", &token, Code::Unauthenticated, bad)
        .await;

    // Signed by configured keys, the same headers are simply ignored.
    let token = sign(
        &pointing(Algorithm::HS256, None),
        &claims("jku-ok-hs"),
        &secret_key(SECRET.as_bytes()),
    );
    pem.assert_revocable("trusted secret with jku/x5u", &token)
        .await;
    let token = sign(
        &pointing(Algorithm::ES256, Some("ec-1")),
        &claims("jku-ok-es"),
        &private_key("ec256_private.pem"),
    );
    jwks.assert_revocable("trusted ec-1 with jku/x5u", &token)
        .await;

    tokio::time::sleep(Duration::from_millis(100)).await;
    let connection = trap.accept();
    assert!(
        matches!(&connection, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "something connected to the jku/x5u address: {connection:?}"
    );
    pem.stop().await;
    jwks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_s_reencoding_of_a_revoked_token_is_never_allowed() {
    let harness = Harness::start(Keys::Pem).await;
    let key = private_key("ec256_private.pem");
    let es256 = Header::new(Algorithm::ES256);

    // Revoke the token as issued; ask about its twin.
    let original = sign(&es256, &claims("high-s-a"), &key);
    let twin = high_s(&original);
    assert_ne!(twin, original);
    assert_eq!(high_s(&twin), original, "n − (n − s) = s");
    let reply = harness.revoke(&original).await.expect("Revoke");
    assert!(reply.newly_revoked);
    // Whichever way the verifier treats the twin, it is the same token or
    // no token: revoked, or refused as a bad signature.
    let twin_verifies = match harness.verifier.verify(&twin) {
        Ok(claims) => {
            assert_eq!(Ok(claims), harness.verifier.verify(&original));
            true
        }
        Err(error) => {
            assert_eq!(error, TokenError::BadSignature);
            false
        }
    };
    match harness.check(&twin).await {
        Ok(status) => assert!(twin_verifies && status.revoked, "{status:?}"),
        Err(status) => assert!(
            !twin_verifies && status.code() == Code::Unauthenticated,
            "{status:?}"
        ),
    }
    let expected = if twin_verifies {
        Denial::Revoked
    } else {
        Denial::Invalid(TokenError::BadSignature)
    };
    harness
        .until_denied("high-S twin", &twin, expected.clone())
        .await;
    if twin_verifies {
        // Keyed on (issuer, jti): revoking the twin is a repeat.
        let again = harness.revoke(&twin).await.expect("Revoke twin");
        assert!(!again.newly_revoked, "{again:?}");
    }

    // The other way round: revoke the twin, ask about the original.
    let original = sign(&es256, &claims("high-s-b"), &key);
    let twin = high_s(&original);
    match harness.revoke(&twin).await {
        Ok(reply) => {
            assert!(twin_verifies && reply.newly_revoked, "{reply:?}");
            let status = harness.check(&original).await.expect("Check");
            assert!(status.revoked, "{status:?}");
            harness
                .until_denied("original of a revoked twin", &original, Denial::Revoked)
                .await;
        }
        Err(status) => assert!(
            !twin_verifies && status.code() == Code::Unauthenticated,
            "{status:?}"
        ),
    }
    eprintln!("a high-S ES256 signature verifies: {twin_verifies}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_claims_get_one_answer_everywhere() {
    let harness = Harness::start(Keys::Pem).await;
    let exp = unix_now() + 3600;
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let body = |claims: &str| format!(r#"{{"sub":"dup",{claims}}}"#);
    let duplicate = "duplicate field";
    // (header, payload, what refuses it today)
    let cases = [
        (
            hs256,
            body(&format!(
                r#""iss":"{ISSUER}","jti":"dup-a","jti":"dup-b","exp":{exp}"#
            )),
            duplicate,
        ),
        (
            hs256,
            body(&format!(
                r#""iss":"https://evil.test","iss":"{ISSUER}","jti":"dup-iss","exp":{exp}"#
            )),
            duplicate,
        ),
        (
            hs256,
            body(&format!(
                r#""iss":"{ISSUER}","jti":"dup-exp","exp":{exp},"exp":1"#
            )),
            duplicate,
        ),
        (
            hs256,
            format!(r#"{{"iss":"{ISSUER}","sub":"a","sub":"b","jti":"dup-sub","exp":{exp}}}"#),
            duplicate,
        ),
        (
            r#"{"alg":"HS256","alg":"none"}"#,
            body(&format!(r#""iss":"{ISSUER}","jti":"dup-alg","exp":{exp}"#)),
            duplicate,
        ),
        // The first `alg` is read before the second is seen.
        (
            r#"{"alg":"none","alg":"HS256"}"#,
            body(&format!(r#""iss":"{ISSUER}","jti":"dup-alg2","exp":{exp}"#)),
            "unknown variant `none`",
        ),
        (
            r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
            body(&format!(r#""iss":"{ISSUER}","jti":"dup-kid","exp":{exp}"#)),
            duplicate,
        ),
    ];
    for (header, payload, refusal) in &cases {
        let case = format!("{header} {payload}");
        let token = hs256_raw(header, payload, SECRET.as_bytes());
        // Whatever serde makes of it, the server and the gateway agree,
        // and a token revoked by itself is revoked.
        match harness.revoke(&token).await {
            Ok(reply) => {
                assert!(reply.newly_revoked, "{case}: {reply:?}");
                let status = harness.check(&token).await;
                assert!(
                    status.as_ref().is_ok_and(|s| s.revoked),
                    "{case}: {status:?}"
                );
                harness.until_denied(&case, &token, Denial::Revoked).await;
            }
            Err(refused) => {
                let check = harness.check(&token).await.expect_err("Check refuses too");
                assert_eq!(check.code(), refused.code(), "{case}: {check:?}");
                match harness.judge(&token).await {
                    Verdict::Deny(Denial::Invalid(error)) => {
                        assert_eq!(code_of(&error), refused.code(), "{case}: {error:?}")
                    }
                    other => panic!("{case}: the server refused, the gateway answered {other:?}"),
                }
            }
        }
        // What happens today: serde refuses the token as malformed.
        harness
            .assert_refused(&case, &token, Code::InvalidArgument, refusal)
            .await;
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_and_the_server_keeps_answering() {
    let harness = Harness::start(Keys::Pem).await;
    let payload = claims("huge").to_string();
    // A header of 9 KiB makes the token larger than MAX_TOKEN_BYTES.
    let header = format!(
        r#"{{"alg":"HS256","typ":"JWT","pad":"{}"}}"#,
        "x".repeat(9 * 1024)
    );
    let token = hs256_raw(&header, &payload, SECRET.as_bytes());
    assert!(token.len() > revocd::tokens::MAX_TOKEN_BYTES);
    let limit = format!("the limit is {}", revocd::tokens::MAX_TOKEN_BYTES);
    harness
        .assert_refused("9 KiB header", &token, Code::InvalidArgument, &limit)
        .await;

    // `authorization` metadata far beyond any API key.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", harness.server.address))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    let mut client = RevocationServiceClient::new(channel);
    for size in [2 * 1024, 16 * 1024] {
        let mut request = tonic::Request::new(CheckRequest {
            jti: "huge-auth".into(),
            ..Default::default()
        });
        let value = format!("Bearer {}", "k".repeat(size));
        let value = MetadataValue::try_from(value).expect("ascii metadata");
        request.metadata_mut().insert("authorization", value);
        let reply = tokio::time::timeout(SOON, client.check(request))
            .await
            .expect("answered in time");
        let status = reply.expect_err("a huge authorization value is refused");
        eprintln!(
            "{size}-byte key: {:?} {:?}",
            status.code(),
            status.message()
        );
        // The server admits header lists up to 64 KiB, so the key check
        // itself refuses the value, with a status gRPC clients can read.
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{size}-byte key: {status:?}"
        );
        assert!(status.message().contains("Bearer <key>"), "{status:?}");
        // The same connection still serves an ordinary call.
        let mut ok = tonic::Request::new(CheckRequest {
            jti: "after-huge-auth".into(),
            ..Default::default()
        });
        let key = MetadataValue::try_from("Bearer key-read").expect("ascii");
        ok.metadata_mut().insert("authorization", key);
        let answer = tokio::time::timeout(SOON, client.check(ok)).await;
        let answer = answer.expect("in time").expect("an ordinary call after");
        assert!(!answer.into_inner().revoked);
    }
    harness.stop().await;
}
