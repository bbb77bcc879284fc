//! Keys bound to issuers, end to end: two issuers, each with its own ES256
//! key (made by the test), served by a real `revocd serve` on a real
//! `redis-server` (keys bound with `--jwt-issuer-key`) and enforced by a
//! real `revocd agent` (keys bound with `[[jwt.issuer]]` tables). A token signed with A's key that
//! claims to be B's is nobody's token: it cannot revoke B's token of the
//! same `jti` without an API key, and the agent never lets it through as
//! one of B's users.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revocd::pb::{CheckRequest, RevokeRequest};
use revocd::time::unix_now;
use serde_json::{json, Value};
use support::nginx::{http_get, HttpResponse};
use support::{AgentProcess, Deployment, RedisServer, Replica};
use tonic::Code;

const ISSUER_A: &str = "https://a.issuer.test";
const ISSUER_B: &str = "https://b.issuer.test";
/// The `jti` both issuers happen to use.
const SHARED_JTI: &str = "jti-shared-by-a-and-b";

/// An issuer's signing key (kept by the test) and its public half (a PEM
/// file revocd is given).
struct Tenant {
    issuer: &'static str,
    signing: EncodingKey,
    public_pem: PathBuf,
}

impl Tenant {
    /// A fresh P-256 key pair for `issuer`, its public half written to
    /// `<name>.pem` in the deployment's directory.
    fn generate(deployment: &Deployment, issuer: &'static str, name: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
        let signing =
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC signing key");
        let public_pem = deployment.path(&format!("{name}.pem"));
        std::fs::write(&public_pem, pair.public_key_pem()).expect("public key file");
        Tenant {
            issuer,
            signing,
            public_pem,
        }
    }

    /// An ES256 token signed with this tenant's key, claiming `claims`.
    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.signing)
            .expect("signing")
    }

    fn public_pem(&self) -> String {
        self.public_pem.to_str().expect("UTF-8 path").to_owned()
    }
}

/// Claims of a fresh token of `issuer` for `subject`, valid an hour.
fn claims(issuer: &str, subject: &str, jti: &str) -> Value {
    let now = unix_now();
    json!({"iss": issuer, "sub": subject, "jti": jti, "iat": now, "exp": now + 3600})
}

/// `revocd serve` flags binding each tenant's key to its issuer.
fn key_flags(tenants: &[&Tenant]) -> Vec<String> {
    tenants
        .iter()
        .flat_map(|tenant| {
            [
                "--jwt-issuer-key".to_owned(),
                format!("{}={}", tenant.issuer, tenant.public_pem()),
            ]
        })
        .collect()
}

/// A settings file binding each tenant's key to its issuer with
/// `[[jwt.issuer]]` tables, as the agent is configured here.
fn key_tables(deployment: &Deployment, tenants: &[&Tenant]) -> PathBuf {
    let tables: String = tenants
        .iter()
        .map(|tenant| {
            format!(
                "[[jwt.issuer]]\nissuer = {:?}\npublic_key_file = {:?}\n\n",
                tenant.issuer,
                tenant.public_pem()
            )
        })
        .collect();
    let path = deployment.path("agent.toml");
    std::fs::write(&path, tables).expect("agent settings file");
    path
}

/// The agent's forward-auth answer for `token`.
fn forward_auth(agent: &AgentProcess, token: &str) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_get(agent.http, "/", &[("Authorization", &bearer)]).expect("GET from the agent")
}

/// Asserts the agent let `token` through as `subject` of `issuer`.
fn assert_allowed(response: &HttpResponse, issuer: &str, subject: &str) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("x-auth-issuer"),
        Some(issuer),
        "{response:?}"
    );
    assert_eq!(
        response.header("x-auth-subject"),
        Some(subject),
        "{response:?}"
    );
}

/// Asserts the agent refused the request and named no identity.
fn assert_refused(response: &HttpResponse) {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.header("x-auth-issuer"), None, "{response:?}");
    assert_eq!(response.header("x-auth-subject"), None, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_verifies_another_issuers_token() {
    support::trace_init();
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let a = Tenant::generate(&deployment, ISSUER_A, "issuer-a");
    let b = Tenant::generate(&deployment, ISSUER_B, "issuer-b");
    let mut serve_args = vec![
        "--api-keys-file".to_owned(),
        deployment.path("api-keys.toml").display().to_string(),
        "--redis-url".into(),
        redis.url(),
        "--heartbeat-interval".into(),
        "200ms".into(),
    ];
    serve_args.extend(key_flags(&[&a, &b]));
    let replica = Replica::spawn(&serve_args).await;
    let key_file = deployment.path("agent.key");
    std::fs::write(&key_file, "key-subscribe\n").expect("agent key file");
    let mut agent_args = vec![
        "--server".to_owned(),
        format!("http://{}", replica.address),
        "--api-key-file".into(),
        key_file.display().to_string(),
    ];
    let settings = key_tables(&deployment, &[&a, &b]);
    agent_args.extend(["--config".to_owned(), settings.display().to_string()]);
    let agent = AgentProcess::spawn(&agent_args);

    let genuine_b = b.sign(&claims(ISSUER_B, "bob", SHARED_JTI));
    let genuine_a = a.sign(&claims(ISSUER_A, "alice", SHARED_JTI));
    // A's key, B's name: what a user (or a breach) of issuer A can make.
    let forged = a.sign(&claims(ISSUER_B, "mallory", SHARED_JTI));

    assert_allowed(&forward_auth(&agent, &genuine_b), ISSUER_B, "bob");
    assert_allowed(&forward_auth(&agent, &genuine_a), ISSUER_A, "alice");
    assert_refused(&forward_auth(&agent, &forged));

    // Keyless self-revocation: the token is its own proof, so a forged one
    // proves nothing.
    let mut anonymous = replica.client(None).await;
    let revoke = |token: &str| RevokeRequest {
        token: token.to_owned(),
        reason: "logout".into(),
        ..Default::default()
    };
    let refused = anonymous
        .revoke(revoke(&forged))
        .await
        .expect_err("a forged token revokes nothing");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let mut reader = replica.client(Some("key-read")).await;
    let check = |token: &str| CheckRequest {
        token: token.to_owned(),
        ..Default::default()
    };
    let status = reader.check(check(&genuine_b)).await.expect("Check B");
    assert!(!status.into_inner().revoked, "B's token was revoked");
    assert_allowed(&forward_auth(&agent, &genuine_b), ISSUER_B, "bob");

    // A's real logout revokes A's token of that jti, and only A's.
    let reply = anonymous
        .revoke(revoke(&genuine_a))
        .await
        .expect("A's user logs out");
    assert!(reply.into_inner().newly_revoked);
    let status = reader.check(check(&genuine_a)).await.expect("Check A");
    assert!(status.into_inner().revoked);
    let status = reader.check(check(&genuine_b)).await.expect("Check B");
    assert!(!status.into_inner().revoked, "A's logout revoked B's token");
    let deadline = Instant::now() + Duration::from_secs(5);
    while forward_auth(&agent, &genuine_a).status != 401 {
        assert!(Instant::now() < deadline, "the agent never saw A's logout");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_allowed(&forward_auth(&agent, &genuine_b), ISSUER_B, "bob");
    assert_refused(&forward_auth(&agent, &forged));
}
