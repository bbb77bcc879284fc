//! `revocd agent` end to end, every part a real process on loopback: a real
//! `redis-server`, a real `revocd serve`, real `revocd agent`s, and a real
//! nginx running `deploy/nginx/` (forward-auth through `auth_request`),
//! plus the agent's Envoy ext_authz gRPC port asked by a real gRPC client.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse as ExtHttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, OkHttpResponse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revocd::time::unix_now;
use serde_json::{json, Value};

use support::nginx::{HttpResponse, Nginx, NginxConfig};
use support::{
    eventually, eventually_blocking, AgentProcess, Deployment, RedisServer, Replica, ISSUER,
};

/// `tests/fixtures/keys/<name>`.
fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Redis, the deployment's files and one `revocd serve` on them, with
/// heartbeats every 200 ms.
async fn server() -> (RedisServer, Deployment, Replica) {
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let args = deployment.args(&["--redis-url", &redis.url(), "--heartbeat-interval", "200ms"]);
    let replica = Replica::spawn(&args).await;
    (redis, deployment, replica)
}

/// `revocd agent` following `replica` with the subscribe key from a file,
/// accepting the deployment's issuer, plus `extra` (key flags, policies).
fn agent(deployment: &Deployment, replica: &Replica, extra: &[&str]) -> AgentProcess {
    AgentProcess::spawn(&deployment.agent_args(replica.address, extra))
}

/// An agent trusting the deployment's HS256 secret, plus `extra`.
fn hs256_agent(deployment: &Deployment, replica: &Replica, extra: &[&str]) -> AgentProcess {
    let secret = deployment.path("secret");
    let mut args = vec![
        "--jwt-hs256-secret-file",
        secret.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    agent(deployment, replica, &args)
}

/// The real `revoctl` with the revoke key; it must succeed.
fn revoctl(replica: &Replica, args: &[&str]) -> Output {
    revoctl_as("key-revoke", replica, args)
}

/// The real `revoctl` with `key`; it must succeed.
fn revoctl_as(key: &str, replica: &Replica, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_revoctl"))
        .args(["--server", &replica.address.to_string()])
        .args(["--api-key", key])
        .args(args)
        .env_remove("REVOCD_API_KEY")
        .env_remove("REVOCD_SERVER")
        .output()
        .expect("running revoctl");
    assert!(
        output.status.success(),
        "revoctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An HS256 token with the deployment's secret for `subject`, issued at
/// `issued_at`, valid an hour from now.
fn token_issued_at(subject: &str, jti: &str, issued_at: i64) -> String {
    support::sign(&json!({
        "iss": ISSUER, "sub": subject, "jti": jti, "iat": issued_at, "exp": unix_now() + 3600,
    }))
}

/// Claims that verify with any trusted key: the issuer, a jti, fresh.
fn claims(jti: &str) -> Value {
    let now = unix_now();
    json!({"iss": ISSUER, "sub": "alice", "jti": jti, "iat": now, "exp": now + 3600})
}

fn encode(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("signing")
}

/// RS256 with the fixture private key.
fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rsa_private.pem")).expect("RSA private key fixture");
    encode(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
        claims,
    )
}

/// HS256 "signed" with the bytes of `secret` (e.g. an RSA public key).
fn hs256_with(secret: &[u8], claims: &Value) -> String {
    encode(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret).expect("HMAC key"),
        claims,
    )
}

/// An unsigned token: `{"alg":"none"}`, empty signature.
fn alg_none(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// `response` if it is a refusal (not 200), for [`eventually_blocking`].
fn refusal(response: HttpResponse) -> Result<HttpResponse, u16> {
    match response.status {
        200 => Err(200),
        _ => Ok(response),
    }
}

/// Asserts `response` is the upstream's answer for `subject`'s token `jti`.
fn assert_upstream(response: &HttpResponse, subject: &str, jti: &str) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "upstream ok\n", "{response:?}");
    assert_eq!(response.header("x-seen-auth-subject"), Some(subject));
    assert_eq!(response.header("x-seen-auth-jti"), Some(jti));
    assert_eq!(response.header("x-seen-auth-issuer"), Some(ISSUER));
}

/// Asserts `response` is nginx's 401 with exactly one RFC 6750 challenge
/// naming an invalid token; returns the challenge.
fn assert_invalid_token(response: &HttpResponse) -> String {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.body, "unauthorized\n", "{response:?}");
    assert!(
        response.header("x-seen-auth-subject").is_none(),
        "a refused request never reaches the upstream: {response:?}"
    );
    let challenge = response
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {response:?}"));
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    challenge.to_owned()
}

/// Asserts `response` is the deploy config's 503 for an agent that cannot
/// decide or cannot be reached.
fn assert_unavailable(response: &HttpResponse) {
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body, "revocation service unavailable\n");
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[test]
fn the_deploy_config_passes_nginx_t() {
    let agent = support::nginx::loopback(support::free_port());
    let config = NginxConfig::new(agent);
    let output = config.test();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nginx -t failed:\n{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");
    // The three example addresses were replaced, nothing else.
    let site = std::fs::read_to_string(config.dir().join("site.conf")).unwrap();
    assert!(site.contains(&format!("listen {};", config.listen)));
    assert!(site.contains(&format!("server {};", config.app)));
    assert!(site.contains(&format!("server {agent};")));
    assert_eq!(
        site.lines().count(),
        support::nginx::SITE.lines().count(),
        "{site}"
    );
}

#[test]
fn http_responses_parse_with_a_length_or_in_chunks() {
    let plain = support::nginx::parse_response(
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 3\r\n\r\nabcdef",
    )
    .unwrap();
    assert_eq!(plain.status, 401);
    assert_eq!(plain.header("www-authenticate"), Some("Bearer"));
    assert_eq!(plain.body, "abc");
    let chunked = support::nginx::parse_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(chunked.body, "abcde");
    assert!(support::nginx::parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lets_a_valid_token_through_and_refuses_it_within_100ms_of_revoking() {
    let (_redis, deployment, replica) = server().await;
    let agent = hs256_agent(&deployment, &replica, &[]);
    let nginx = Nginx::start(agent.http);
    let token = support::token_for("alice", "nginx-1");
    let other = support::token_for("alice", "nginx-2");

    let allowed = nginx.get("/some/page?x=1", Some(&token));
    assert_upstream(&allowed, "alice", "nginx-1");

    // The identity headers come from the agent only.
    let spoofed = nginx.get_with(
        "/",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Auth-Subject", "mallory"),
            ("X-Auth-Jti", "forged"),
        ],
    );
    assert_upstream(&spoofed, "alice", "nginx-1");
    let anonymous = support::sign(&json!({
        "iss": ISSUER, "jti": "no-sub", "iat": unix_now(), "exp": unix_now() + 3600,
    }));
    let spoofed = nginx.get_with(
        "/",
        &[
            ("Authorization", &format!("Bearer {anonymous}")),
            ("X-Auth-Subject", "mallory"),
        ],
    );
    assert_eq!(spoofed.status, 200, "{spoofed:?}");
    assert_eq!(
        spoofed.header("x-seen-auth-subject"),
        None,
        "a token without sub must not let the client name the subject"
    );

    let missing = nginx.get("/", None);
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    revoctl(&replica, &["revoke", "--token", &token, "--reason", "test"]);
    let revoked_at = Instant::now();
    let refused = eventually_blocking(
        "the revoked token to be refused",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || refusal(nginx.get("/", Some(&token))),
    );
    let latency = revoked_at.elapsed();
    eprintln!("first 401 {latency:?} after revoctl exited");
    let challenge = assert_invalid_token(&refused);
    assert!(challenge.contains("revoked"), "{challenge}");
    assert!(
        latency <= Duration::from_millis(100),
        "first 401 came {latency:?} after revoctl exited"
    );
    // It stays refused; the subject's other token is untouched.
    for _ in 0..3 {
        assert_invalid_token(&nginx.get("/", Some(&token)));
    }
    assert_upstream(&nginx.get("/", Some(&other)), "alice", "nginx-2");
    let log = nginx.error_log();
    assert!(!log.contains("[emerg]"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_a_subjects_tokens_issued_before_its_cutoff() {
    let (_redis, deployment, replica) = server().await;
    let agent = hs256_agent(&deployment, &replica, &[]);
    let nginx = Nginx::start(agent.http);
    let now = unix_now();
    let older = token_issued_at("alice", "alice-older", now - 600);
    let old = token_issued_at("alice", "alice-old", now - 60);
    let new = token_issued_at("alice", "alice-new", now);
    let bob = token_issued_at("bob", "bob-old", now - 60);
    for (token, subject, jti) in [
        (&older, "alice", "alice-older"),
        (&old, "alice", "alice-old"),
        (&new, "alice", "alice-new"),
        (&bob, "bob", "bob-old"),
    ] {
        assert_upstream(&nginx.get("/", Some(token)), subject, jti);
    }

    let cutoff = (now - 5).to_string();
    revoctl(
        &replica,
        &["revoke-subject", "alice", "--not-before", &cutoff],
    );
    let refused = eventually_blocking(
        "alice's old token to be refused",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || refusal(nginx.get("/", Some(&old))),
    );
    let challenge = assert_invalid_token(&refused);
    assert!(challenge.contains("subject"), "{challenge}");
    assert_invalid_token(&nginx.get("/", Some(&older)));
    assert_upstream(&nginx.get("/", Some(&new)), "alice", "alice-new");
    assert_upstream(&nginx.get("/", Some(&bob)), "bob", "bob-old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_a_sessions_tokens_and_then_every_older_token_of_the_issuer() {
    let (_redis, deployment, replica) = server().await;
    let agent = hs256_agent(&deployment, &replica, &[]);
    let nginx = Nginx::start(agent.http);
    let now = unix_now();
    let in_session = |sid: &str, jti: &str, issued_at: i64| {
        support::token_with("alice", jti, issued_at, json!({ "sid": sid }))
    };
    let laptop = in_session("laptop", "alice-laptop", now - 60);
    let phone = in_session("phone", "alice-phone", now - 60);
    let fresh = in_session("tablet", "alice-tablet", now);
    for (token, jti) in [(&laptop, "alice-laptop"), (&phone, "alice-phone")] {
        assert_upstream(&nginx.get("/", Some(token)), "alice", jti);
    }

    revoctl(&replica, &["revoke-claim", "sid", "laptop"]);
    let refused = eventually_blocking(
        "the laptop session's token to be refused",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || refusal(nginx.get("/", Some(&laptop))),
    );
    let challenge = assert_invalid_token(&refused);
    assert!(challenge.contains("sid"), "{challenge}");
    assert_upstream(&nginx.get("/", Some(&phone)), "alice", "alice-phone");

    // The issuer's signing key leaked a few seconds ago: every older token
    // goes, the ones issued since stay.
    let before = (now - 5).to_string();
    revoctl_as(
        "key-admin",
        &replica,
        &["revoke-issuer", ISSUER, "--before", &before],
    );
    let refused = eventually_blocking(
        "the phone session's token to be refused",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || refusal(nginx.get("/", Some(&phone))),
    );
    let challenge = assert_invalid_token(&refused);
    assert!(challenge.contains("its issuer"), "{challenge}");
    assert_upstream(&nginx.get("/", Some(&fresh)), "alice", "alice-tablet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_tokens_that_cannot_be_accepted() {
    let (_redis, deployment, replica) = server().await;
    let rsa_public = fixture("rsa_public.pem");
    // Trusts the HS256 secret and the RSA key: the classic set-up for
    // algorithm confusion.
    let both = hs256_agent(
        &deployment,
        &replica,
        &["--jwt-public-key-file", &rsa_public],
    );
    let rsa_only = agent(
        &deployment,
        &replica,
        &["--jwt-public-key-file", &rsa_public],
    );
    let nginx = Nginx::start(both.http);
    let rsa_nginx = Nginx::start(rsa_only.http);
    let now = unix_now();
    let pem = std::fs::read(&rsa_public).expect("RSA public key fixture");

    // Controls: each agent accepts what it should.
    assert_upstream(
        &nginx.get("/", Some(&support::sign(&claims("hs")))),
        "alice",
        "hs",
    );
    assert_upstream(&nginx.get("/", Some(&rs256(&claims("rs")))), "alice", "rs");
    assert_upstream(
        &rsa_nginx.get("/", Some(&rs256(&claims("rs")))),
        "alice",
        "rs",
    );

    let expired = support::sign(&json!({
        "iss": ISSUER, "sub": "alice", "jti": "expired", "iat": now - 7200, "exp": now - 3600,
    }));
    let challenge = assert_invalid_token(&nginx.get("/", Some(&expired)));
    assert!(challenge.contains("expired"), "{challenge}");

    let refused = [
        (
            "forged (another secret)",
            support::sign_with(&claims("forged"), "not-the-deployment-secret"),
        ),
        ("alg none", alg_none(&claims("none"))),
        (
            "HS256 keyed with the RSA public key",
            hs256_with(&pem, &claims("confused")),
        ),
        (
            "HS256 keyed with the trimmed RSA public key",
            hs256_with(pem.trim_ascii(), &claims("confused-trimmed")),
        ),
        (
            "another issuer",
            support::sign(&json!({
                "iss": "https://elsewhere.test", "sub": "alice", "jti": "stranger",
                "iat": now, "exp": now + 3600,
            })),
        ),
        (
            "no jti",
            support::sign(&json!({"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 3600})),
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    for (what, token) in &refused {
        let response = nginx.get("/", Some(token));
        assert_eq!(response.status, 401, "{what}: {response:?}");
        assert_invalid_token(&response);
    }
    for (what, token) in [
        ("alg none", alg_none(&claims("none"))),
        (
            "HS256 keyed with the RSA public key",
            hs256_with(&pem, &claims("confused")),
        ),
        (
            "HS256 with the real secret, not trusted here",
            support::sign(&claims("hs")),
        ),
    ] {
        let response = rsa_nginx.get("/", Some(&token));
        assert_eq!(response.status, 401, "RSA-only agent, {what}: {response:?}");
        assert_invalid_token(&response);
    }
    let basic = nginx.get_with("/", &[("Authorization", "Basic YWxpY2U6cHc=")]);
    assert_eq!(basic.status, 401, "{basic:?}");
    assert_eq!(basic.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_server_dies_fail_open_serves_and_fail_closed_answers_503() {
    let (_redis, deployment, replica) = server().await;
    let staleness = ["--max-staleness", "1s"];
    let mut open = hs256_agent(
        &deployment,
        &replica,
        &[&["--on-stale", "fail-open"][..], &staleness].concat(),
    );
    let closed = hs256_agent(
        &deployment,
        &replica,
        &[&["--on-stale", "fail-closed"][..], &staleness].concat(),
    );
    let open_nginx = Nginx::start(open.http);
    let closed_nginx = Nginx::start(closed.http);
    let valid = support::token_for("alice", "outage-valid");
    let gone = support::token_for("alice", "outage-gone");
    assert_upstream(&open_nginx.get("/", Some(&valid)), "alice", "outage-valid");
    assert_upstream(
        &closed_nginx.get("/", Some(&valid)),
        "alice",
        "outage-valid",
    );

    // A revocation both agents have seen before the outage.
    revoctl(&replica, &["revoke", "--token", &gone]);
    for nginx in [&open_nginx, &closed_nginx] {
        let refused = eventually_blocking(
            "the revoked token to be refused",
            Duration::from_secs(5),
            Duration::from_millis(5),
            || refusal(nginx.get("/", Some(&gone))),
        );
        assert_invalid_token(&refused);
    }

    drop(replica); // SIGKILL: no goodbye to the agents
    let killed_at = Instant::now();
    let unavailable = eventually_blocking(
        "fail-closed to answer 503",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || refusal(closed_nginx.get("/", Some(&valid))),
    );
    let after = killed_at.elapsed();
    eprintln!("fail-closed answered 503 {after:?} after the server was killed");
    assert_unavailable(&unavailable);
    // Heartbeats came every 200 ms: stale means about 0.8 s or more.
    assert!(
        after >= Duration::from_millis(600),
        "fail-closed refused {after:?} after the kill, before --max-staleness 1s"
    );
    assert_unavailable(&closed_nginx.get("/", Some(&gone)));

    let stale = open
        .metric("revocd_agent_filter_staleness_seconds")
        .expect("staleness gauge");
    assert!(stale > 1.0, "fail-open agent staleness {stale}");
    let snapshots = open.metric(r#"revocd_gateway_frames_total{kind="snapshot"}"#);
    assert!(
        snapshots.is_some_and(|n| n >= 1.0),
        "snapshot frames {snapshots:?}"
    );
    assert_upstream(&open_nginx.get("/", Some(&valid)), "alice", "outage-valid");
    // What it already knew still applies.
    assert_invalid_token(&open_nginx.get("/", Some(&gone)));

    // No agent at all: nginx answers 503, never lets through.
    open.kill();
    assert_unavailable(&open_nginx.get("/", Some(&valid)));
}

/// The agent's ext_authz answer for a request with `headers`.
async fn ext_authz_check(agent: &AgentProcess, headers: &[(&str, &str)]) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{}", agent.ext_authz))
        .await
        .expect("connecting to ext_authz");
    let http = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    client
        .check(request)
        .await
        .expect("ext_authz Check")
        .into_inner()
}

/// The allow part of an ext_authz answer; panics on anything else.
fn ok_response(answer: &CheckResponse) -> &OkHttpResponse {
    match &answer.http_response {
        Some(ExtHttpResponse::OkResponse(ok)) => ok,
        _ => panic!("not an OkHttpResponse: {answer:?}"),
    }
}

/// The value of header `name` among `headers`, if there.
fn header_option<'a>(
    headers: &'a [HeaderValueOption],
    name: &str,
) -> Option<&'a HeaderValueOption> {
    headers.iter().find(|h| {
        h.header
            .as_ref()
            .is_some_and(|h| h.key.eq_ignore_ascii_case(name))
    })
}

fn header_value<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    header_option(headers, name)
        .and_then(|h| h.header.as_ref())
        .map(|h| h.value.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_allows_valid_tokens_and_refuses_revoked_ones() {
    let (_redis, deployment, replica) = server().await;
    let agent = hs256_agent(&deployment, &replica, &[]);
    let token = support::token_for("alice", "envoy-1");
    let bearer = format!("Bearer {token}");

    let allowed = ext_authz_check(&agent, &[("authorization", &bearer)]).await;
    assert_eq!(
        allowed.status.as_ref().map(|s| s.code),
        Some(0),
        "{allowed:?}"
    );
    let ok = ok_response(&allowed);
    assert_eq!(header_value(&ok.headers, "x-auth-subject"), Some("alice"));
    assert_eq!(header_value(&ok.headers, "x-auth-jti"), Some("envoy-1"));
    assert_eq!(header_value(&ok.headers, "x-auth-issuer"), Some(ISSUER));

    revoctl(&replica, &["revoke", "--token", &token]);
    let denied = eventually(
        "the revoked token to be denied",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || async {
            let response = ext_authz_check(&agent, &[("authorization", &bearer)]).await;
            match response.status.as_ref().map(|s| s.code) {
                Some(0) => Err(response),
                _ => Ok(response),
            }
        },
    )
    .await;
    assert_eq!(
        denied.status.as_ref().map(|s| s.code),
        Some(16),
        "{denied:?}"
    );
    let Some(ExtHttpResponse::DeniedResponse(refusal)) = &denied.http_response else {
        panic!("not a DeniedHttpResponse: {denied:?}");
    };
    assert_eq!(refusal.status.as_ref().map(|s| s.code), Some(401));
    let challenge = header_value(&refusal.headers, "www-authenticate").expect("a challenge");
    assert!(
        challenge.contains(r#"error="invalid_token""#) && challenge.contains("revoked"),
        "{challenge}"
    );

    let missing = ext_authz_check(&agent, &[]).await;
    assert_eq!(
        missing.status.as_ref().map(|s| s.code),
        Some(16),
        "{missing:?}"
    );
    let Some(ExtHttpResponse::DeniedResponse(refusal)) = &missing.http_response else {
        panic!("not a DeniedHttpResponse: {missing:?}");
    };
    assert_eq!(
        header_value(&refusal.headers, "www-authenticate"),
        Some("Bearer")
    );
}

/// Envoy appends an `OkHttpResponse` header to a same-named one the client
/// sent unless told to overwrite: the identity headers must overwrite (and
/// be removed when the token has no such claim), or a client can name
/// itself to the upstream.
/// An ext_authz check of `token` whose client claims to be "mallory".
async fn spoofed_check(agent: &AgentProcess, token: &str) -> CheckResponse {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-auth-subject", "mallory"),
    ];
    ext_authz_check(agent, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_identity_headers_replace_the_clients() {
    let (_redis, deployment, replica) = server().await;
    let agent = hs256_agent(&deployment, &replica, &[]);
    let token = support::token_for("alice", "envoy-spoof");
    let allowed = spoofed_check(&agent, &token).await;
    let ok = ok_response(&allowed);
    for name in ["x-auth-subject", "x-auth-jti", "x-auth-issuer"] {
        let option = header_option(&ok.headers, name).expect(name);
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{name}"
        );
    }
    let anonymous = support::sign(&json!({
        "iss": ISSUER, "jti": "envoy-no-sub", "iat": unix_now(), "exp": unix_now() + 3600,
    }));
    let allowed = spoofed_check(&agent, &anonymous).await;
    let ok = ok_response(&allowed);
    assert!(
        ok.headers_to_remove.iter().any(|h| h == "x-auth-subject"),
        "{ok:?}"
    );
}

/// An agent restarted with `--state-dir` resumes from the filter it saved:
/// no snapshot, and nginx refuses both the token revoked before the restart
/// and the one revoked while the agent was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_with_a_state_dir_resumes_without_a_snapshot() {
    let (_redis, deployment, replica) = server().await;
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().to_str().expect("UTF-8 path");
    let before = token_issued_at("alice", "before-the-restart", unix_now() - 5);
    revoctl(&replica, &["revoke", "--token", &before]);
    let mut first = hs256_agent(&deployment, &replica, &["--state-dir", state_dir]);
    let nginx = Nginx::start(first.http);
    eventually_blocking(
        "the token revoked before the restart to be refused",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || refusal(nginx.get("/", Some(&before))),
    );
    std::thread::sleep(revocd::gateway::SAVE_INTERVAL * 2);
    first.kill();
    drop(nginx);

    let during = token_issued_at("bob", "while-the-agent-was-down", unix_now() - 5);
    revoctl(&replica, &["revoke", "--token", &during]);
    let second = hs256_agent(&deployment, &replica, &["--state-dir", state_dir]);
    let nginx = Nginx::start(second.http);
    for token in [&before, &during] {
        let refused = eventually_blocking(
            "a revoked token to be refused after the restart",
            Duration::from_secs(5),
            Duration::from_millis(5),
            || refusal(nginx.get("/", Some(token))),
        );
        assert_invalid_token(&refused);
    }
    let fresh = token_issued_at("carol", "never-revoked", unix_now() - 5);
    assert_upstream(&nginx.get("/", Some(&fresh)), "carol", "never-revoked");
    assert_eq!(
        second.metric(r#"revocd_gateway_frames_total{kind="snapshot"}"#),
        None,
        "the restarted agent took a snapshot"
    );
}
