//! Mutual TLS end to end: a server with `--tls-cert/--tls-key/--tls-client-ca`
//! and certificates made for the test (a CA, the server's for 127.0.0.1,
//! clients' signed by that CA or by a stranger). Clients with the CA and a
//! known certificate get the roles of the API-keys entry naming its common
//! name; clients without one, or with a stranger's, never get an answer.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use revocd::gateway::{Gateway, GatewayConfig, Verdict};
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{CheckRequest, GetStatsRequest, RevokeRequest};
use revocd::time::unix_now;
use support::{sign, AgentProcess, TestServer, ISSUER, SECRET};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// The common name the API-keys file grants roles to.
const GATEWAY_CN: &str = "edge-gateway-cert";

/// The test's certificates and the server's files, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = authority("revocd test CA");
        let stranger = authority("someone else's CA");
        let pki = Pki { dir };
        pki.write("ca.pem", &ca.pem());
        pki.leaf("server", "localhost", &ca, &["localhost", "127.0.0.1"]);
        pki.leaf("gateway", GATEWAY_CN, &ca, &[]);
        pki.leaf("nameless", "no-entry-names-me", &ca, &[]);
        pki.leaf("stranger", GATEWAY_CN, &stranger, &[]);
        std::fs::write(pki.path("secret"), format!("{SECRET}\n")).expect("secret");
        let keys = format!(
            "[[key]]\nname = \"auth-server\"\nsha256 = \"{}\"\nroles = [\"revoke\"]\n\n\
             [[key]]\nname = \"edge-by-cert\"\nclient_cert_cn = \"{GATEWAY_CN}\"\nroles = [\"subscribe\"]\n",
            revocd::auth::key_digest_hex("key-revoke")
        );
        std::fs::write(pki.path("api-keys.toml"), keys).expect("keys");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("PEM file")
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("writing a PEM file");
    }

    /// `<name>.pem` and `<name>.key`: a certificate for `cn` signed by `ca`.
    fn leaf(&self, name: &str, cn: &str, ca: &CertifiedIssuer<'static, KeyPair>, sans: &[&str]) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key pair");
        let cert = params.signed_by(&key, ca).expect("signing");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }

    /// `revocd serve` flags: TLS with client certificates required.
    fn serve_args(&self) -> Vec<String> {
        [
            ("--tls-cert", "server.pem"),
            ("--tls-key", "server.key"),
            ("--tls-client-ca", "ca.pem"),
            ("--api-keys-file", "api-keys.toml"),
            ("--jwt-hs256-secret-file", "secret"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_owned(), path_string(&self.path(file))])
        .chain(["--jwt-issuer".to_owned(), ISSUER.to_owned()])
        .collect()
    }

    /// The clients' TLS: trusting the test CA, presenting `identity`'s
    /// certificate if named.
    fn client_tls(&self, identity: Option<&str>) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.text("ca.pem")))
            .domain_name("localhost");
        if let Some(name) = identity {
            tls = tls.identity(Identity::from_pem(
                self.text(&format!("{name}.pem")),
                self.text(&format!("{name}.key")),
            ));
        }
        tls
    }

    /// Client TLS flags of `revoctl` and `revocd agent`.
    fn client_flags(&self, identity: &str) -> Vec<String> {
        [
            ("--tls-ca", "ca.pem".to_owned()),
            ("--tls-cert", format!("{identity}.pem")),
            ("--tls-key", format!("{identity}.key")),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_owned(), path_string(&self.path(&file))])
        .collect()
    }
}

fn authority(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("CA key pair");
    CertifiedIssuer::self_signed(params, key).expect("self-signed CA")
}

fn path_string(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

async fn tls_client(
    server: &TestServer,
    tls: ClientTlsConfig,
) -> Result<RevocationServiceClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("https://{}", server.address))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(RevocationServiceClient::new(channel))
}

fn token(jti: &str) -> String {
    let now = unix_now();
    sign(&serde_json::json!({
        "iss": ISSUER, "sub": "alice", "jti": jti, "iat": now, "exp": now + 600,
    }))
}

#[tokio::test]
async fn a_known_client_certificate_is_a_caller_and_others_are_refused() {
    support::trace_init();
    let pki = Pki::new();
    let server = TestServer::start(&pki.serve_args()).await;

    // The certificate's common name stands in for an API key: `subscribe`
    // may check, not read statistics.
    let mut gateway = tls_client(&server, pki.client_tls(Some("gateway")))
        .await
        .expect("a TLS connection with a known certificate");
    let check = CheckRequest {
        token: token("by-cert"),
        ..Default::default()
    };
    let answer = gateway.check(check).await.expect("check").into_inner();
    assert!(!answer.revoked);
    let status = gateway
        .get_stats(GetStatsRequest {})
        .await
        .expect_err("stats need the read role");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("edge-by-cert"), "{status:?}");

    // A certificate the CA signed but no entry names: authenticated by TLS,
    // yet no caller, so calls that need a role are refused.
    let mut nameless = tls_client(&server, pki.client_tls(Some("nameless")))
        .await
        .expect("a TLS connection");
    let status = nameless
        .get_stats(GetStatsRequest {})
        .await
        .expect_err("no role");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // An API key still works over mutual TLS.
    let mut request = tonic::Request::new(RevokeRequest {
        jti: "by-key".into(),
        expires_at: unix_now() + 600,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer key-revoke".parse().unwrap());
    let revoked = nameless.revoke(request).await.expect("revoke with a key");
    assert!(revoked.into_inner().newly_revoked);

    // No certificate, or one from another CA: the handshake fails, so no
    // call gets an answer.
    for identity in [None, Some("stranger")] {
        let outcome = match tls_client(&server, pki.client_tls(identity)).await {
            Err(_) => None,
            Ok(mut client) => Some(client.get_stats(GetStatsRequest {}).await),
        };
        if let Some(Ok(answer)) = outcome {
            panic!("{identity:?} got an answer: {answer:?}");
        }
        if let Some(Err(status)) = &outcome {
            // The server's TLS alert, as the client's transport reports it.
            let detail = format!("{status:?}");
            assert!(detail.contains("alert"), "{identity:?}: {detail}");
        }
    }
    // Plain HTTP/2 gets nothing either.
    let mut plain = support::client(server.address, Some("key-revoke")).await;
    assert!(plain.get_stats(GetStatsRequest {}).await.is_err());
}

// Multi-threaded: revoctl and the agent are waited for synchronously while
// the in-process server answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_library_revoctl_and_the_agent_speak_mutual_tls() {
    support::trace_init();
    let pki = Pki::new();
    let server = TestServer::start(&pki.serve_args()).await;
    let url = format!("https://127.0.0.1:{}", server.address.port());

    // revoctl with the CA and a certificate plus a key for the role.
    let revoked = token("revoked-over-tls");
    let mut revoctl = std::process::Command::new(support::binary("revoctl"));
    revoctl
        .args(["--server", &url, "--api-key", "key-revoke"])
        .args(pki.client_flags("nameless"))
        .args(["revoke", "--token", &revoked]);
    let output = revoctl.output().expect("running revoctl");
    assert!(
        output.status.success(),
        "revoctl over mutual TLS: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The gateway library, authenticated by its certificate alone.
    let config = GatewayConfig::new([url.clone()])
        .tls(pki.client_tls(Some("gateway")))
        .max_staleness(Duration::from_secs(30));
    let gateway = Gateway::spawn(config, support::verifier()).expect("gateway");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Verdict::Deny(_) = gateway.check_confirmed(&revoked).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never denied the revoked token over TLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        gateway.check_confirmed(&token("fine")).await,
        Verdict::Allow(_)
    ));

    // The agent, with the same flags: it becomes healthy only once it has
    // the filter over mutual TLS, and then refuses the revoked token.
    let mut args = vec![
        "--server".to_owned(),
        url.clone(),
        "--jwt-hs256-secret-file".to_owned(),
        path_string(&pki.path("secret")),
        "--jwt-issuer".to_owned(),
        ISSUER.to_owned(),
    ];
    args.extend(pki.client_flags("gateway"));
    let agent = AgentProcess::spawn(&args);
    let bearer = format!("Bearer {revoked}");
    let response = support::nginx::http_get(agent.http, "/", &[("authorization", &bearer)])
        .expect("asking the agent");
    assert_eq!(response.status, 401);
}

/// `POST path` over TLS to `address` (HTTP/1.1, trusting the test CA,
/// presenting `identity`'s certificate if named), read to the end.
async fn https_post(
    pki: &Pki,
    address: std::net::SocketAddr,
    identity: Option<&str>,
    path: &str,
    body: &str,
) -> std::io::Result<support::nginx::HttpResponse> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{crypto, ClientConfig, RootCertStore};

    let certificates = |name: &str| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(pki.path(name))
            .expect("a PEM file")
            .map(|c| c.expect("a certificate"))
            .collect()
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates("ca.pem") {
        roots.add(certificate).expect("the test CA");
    }
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let key =
                PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("a PEM key");
            builder
                .with_client_auth_cert(certificates(&format!("{name}.pem")), key)
                .expect("a client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").expect("a server name");
    let mut tls = connector.connect(name, tcp).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await?;
    support::nginx::parse_response(&raw)
}

#[tokio::test]
async fn the_http_doors_serve_the_same_tls_and_want_the_same_client_certificates() {
    let pki = Pki::new();
    let http = support::nginx::loopback(support::free_port());
    let mut args = pki.serve_args();
    args.extend(["--http-listen".to_owned(), http.to_string()]);
    let server = TestServer::start(&args).await;
    let http = server.http.expect("the HTTP doors");

    // A client the CA certified revokes a token by itself, over TLS.
    let revoked = token("https-1");
    let body = format!("token={revoked}");
    let answer = https_post(&pki, http, Some("gateway"), "/oauth2/revoke", &body)
        .await
        .expect("an answer over TLS");
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut gateway = tls_client(&server, pki.client_tls(Some("gateway")))
        .await
        .expect("connecting over mutual TLS");
    let check = CheckRequest {
        token: revoked.clone(),
        ..Default::default()
    };
    let checked = gateway.check(check).await.expect("Check").into_inner();
    assert!(checked.revoked, "{checked:?}");

    // Without a certificate, or one of a stranger's CA, or in plain text:
    // no answer at all.
    for identity in [None, Some("stranger")] {
        let refused = https_post(&pki, http, identity, "/oauth2/revoke", &body).await;
        assert!(refused.is_err(), "{identity:?}: {refused:?}");
    }
    // (rustls waits for a whole record that never comes: the handshake
    // times out, as the client's read does.)
    let plain = support::nginx::http_post(http, "/oauth2/revoke", &[], body.as_bytes());
    assert!(plain.is_err(), "plain HTTP on the TLS port: {plain:?}");
}
