//! No secret reaches a log line. The real `revocd serve`, `revocd agent`
//! and `revoctl` run with everything they print captured, once per logging
//! set-up (the default level, `RUST_LOG=debug`, `RUST_LOG=revocd=trace`,
//! `RUST_LOG=trace`, and `RUST_LOG=debug` as JSON), against a password-protected
//! `redis-server`. Every RPC is called with good and bad keys and tokens,
//! the agent judges tokens, `revoctl` runs its subcommands, and Redis is
//! killed mid-run and brought back; start-ups that fail (wrong Redis
//! password, Redis unreachable) are captured too. Then every captured byte
//! is searched for the API keys, the Redis passwords, the HS256 secret, the
//! filter's digest key (hex, base64, and as a debug-printed byte array) and
//! every JWT the run used.

mod support;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine;
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{
    CheckRequest, GetStatsRequest, ListChangesRequest, ListRevocationsRequest, RevokeBatchRequest,
    RevokeRequest, RevokeSubjectRequest, SubscribeRequest,
};
use revocd::time::unix_now;
use serde_json::json;
use support::{
    by_token, eventually, eventually_blocking, free_port, wait_for_health, BearerKey, Client,
    Process, RedisServer, ServingStatus, ISSUER,
};
use tonic::transport::Channel;
use tonic::Code;

/// Bound on any call, start-up or state change that should come soon.
const SOON: Duration = Duration::from_secs(20);

/// How the processes of one run log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logging {
    /// No `RUST_LOG`: `revocd=info`.
    Default,
    /// `RUST_LOG=debug`: every crate, hyper and h2 included.
    Debug,
    /// `RUST_LOG=revocd=trace`.
    RevocdTrace,
    /// `RUST_LOG=trace`: everything every crate can say.
    Trace,
    /// `RUST_LOG=debug` and `--log-format json`.
    JsonDebug,
}

impl Logging {
    fn apply(self, command: &mut Command) {
        match self {
            Logging::Default => command.env_remove("RUST_LOG"),
            Logging::Debug | Logging::JsonDebug => command.env("RUST_LOG", "debug"),
            Logging::RevocdTrace => command.env("RUST_LOG", "revocd=trace"),
            Logging::Trace => command.env("RUST_LOG", "trace"),
        };
        if self == Logging::JsonDebug {
            command.args(["--log-format", "json"]);
        }
    }
}

/// The secrets of one run, fresh and distinctive so any match is a leak.
struct Secrets {
    /// (role, key): one key per role.
    keys: Vec<(&'static str, String)>,
    /// A key that is not configured (callers send wrong keys too).
    wrong_key: String,
    redis_password: String,
    /// A password Redis does not accept.
    wrong_password: String,
    hs256_secret: String,
    digest_key: [u8; 16],
}

impl Secrets {
    fn generate() -> Self {
        let tag = |what: &str| {
            format!(
                "{what}-{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            )
        };
        Secrets {
            keys: ["revoke", "read", "subscribe", "admin"]
                .into_iter()
                .map(|role| (role, tag(&format!("sk-{role}"))))
                .collect(),
            wrong_key: tag("sk-wrong"),
            redis_password: tag("redis-pw"),
            wrong_password: tag("redis-wrong-pw"),
            hs256_secret: tag("hs256-secret"),
            digest_key: rand::random(),
        }
    }

    fn key(&self, role: &str) -> &str {
        let (_, key) = self.keys.iter().find(|(r, _)| *r == role).expect("a role");
        key
    }

    /// Every form of every secret that must never be printed: (what, text).
    fn needles(&self) -> Vec<(String, String)> {
        let mut needles: Vec<(String, String)> = self
            .keys
            .iter()
            .map(|(role, key)| (format!("API key ({role})"), key.clone()))
            .collect();
        let key = &self.digest_key;
        let engines = [
            base64::engine::general_purpose::STANDARD.encode(key),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(key),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        ];
        needles.extend([
            ("wrong API key".into(), self.wrong_key.clone()),
            ("Redis password".into(), self.redis_password.clone()),
            ("wrong Redis password".into(), self.wrong_password.clone()),
            ("HS256 secret".into(), self.hs256_secret.clone()),
            ("digest key (hex)".into(), hex::encode(key)),
            ("digest key (HEX)".into(), hex::encode_upper(key)),
            ("digest key (bytes)".into(), format!("{:?}", key.as_slice())),
        ]);
        needles.extend(engines.map(|text| ("digest key (base64)".to_owned(), text)));
        needles
    }
}

/// One run: its files, its Redis, every JWT it used, every log it wrote.
struct Run {
    logging: Logging,
    secrets: Secrets,
    dir: tempfile::TempDir,
    redis: RedisServer,
    tokens: Vec<String>,
    logs: Vec<PathBuf>,
}

impl Run {
    fn new(logging: Logging) -> Self {
        let secrets = Secrets::generate();
        let dir = tempfile::tempdir().expect("temp dir");
        let keys: String = secrets
            .keys
            .iter()
            .map(|(role, key)| {
                let digest = revocd::auth::key_digest_hex(key);
                format!("[[key]]\nname = \"{role}-client\"\nsha256 = \"{digest}\"\nroles = [\"{role}\"]\n\n")
            })
            .collect();
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("writing a deployment file")
        };
        write("api-keys.toml", &keys);
        write("secret", &format!("{}\n", secrets.hs256_secret));
        write("digest-key", &hex::encode(secrets.digest_key));
        write("agent.key", &format!("{}\n", secrets.key("subscribe")));
        let redis = RedisServer::start_with_password(&secrets.redis_password);
        Run {
            logging,
            secrets,
            dir,
            redis,
            tokens: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("UTF-8")
            .to_owned()
    }

    /// A token signed with the run's secret (or `secret`), remembered.
    fn token(&mut self, claims: serde_json::Value, secret: Option<&str>) -> String {
        let secret = secret.unwrap_or(&self.secrets.hs256_secret);
        let token = support::sign_with(&claims, secret);
        self.tokens.push(token.clone());
        token
    }

    fn valid_token(&mut self, jti: &str) -> String {
        let now = unix_now();
        let claims =
            json!({"iss": ISSUER, "sub": "alice", "jti": jti, "iat": now, "exp": now + 3600});
        self.token(claims, None)
    }

    /// A new log file for `what`.
    fn log(&mut self, what: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("{}-{what}.log", self.logs.len()));
        self.logs.push(path.clone());
        path
    }

    /// `binary args...` with this run's logging, no `REVOCD_*` from the
    /// test's environment, stdout and stderr into `log`.
    fn command(&self, binary: &str, args: &[String], log: &Path) -> Command {
        let mut command = Command::new(support::binary(binary));
        for (name, _) in std::env::vars() {
            if name.starts_with("REVOCD_") {
                command.env_remove(&name);
            }
        }
        if binary == "revocd" {
            self.logging.apply(&mut command);
        } else {
            command.env("RUST_LOG", "debug");
        }
        let file = File::create(log).expect("log file");
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file);
        command
    }

    /// Runs a command that exits by itself; killed past [`SOON`].
    fn run(
        &mut self,
        what: &str,
        binary: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> ExitStatus {
        let log = self.log(what);
        let mut command = self.command(binary, args, &log);
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("spawning");
        let deadline = std::time::Instant::now() + SOON;
        loop {
            if let Some(status) = child.try_wait().expect("waiting") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} ran past {SOON:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `revocd serve` flags of this run, listening on `listen`.
    fn serve_args(&self, listen: SocketAddr, redis_url: &str) -> Vec<String> {
        [
            "serve",
            "--listen",
            &listen.to_string(),
            "--redis-url",
            redis_url,
            "--redis-timeout",
            "500ms",
            "--api-keys-file",
            &self.path("api-keys.toml"),
            "--jwt-hs256-secret-file",
            &self.path("secret"),
            "--jwt-issuer",
            ISSUER,
            "--digest-key-file",
            &self.path("digest-key"),
            "--heartbeat-interval",
            "200ms",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Every captured byte, by file, with terminal colour codes removed
    /// (the text format colours field names even into a file).
    fn captured(&self) -> Vec<(PathBuf, String)> {
        self.logs
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path).unwrap_or_default();
                (path.clone(), strip_ansi(&String::from_utf8_lossy(&bytes)))
            })
            .collect()
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Up to and including the final letter of the sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `revocd serve` and waits until it reports SERVING.
async fn start_server(run: &mut Run) -> (Process, SocketAddr, PathBuf) {
    let address = support::nginx::loopback(free_port());
    let log = run.log("serve");
    let args = run.serve_args(address, &run.redis.url());
    let mut server = Process::spawn(&mut run.command("revocd", &args, &log), "revocd serve");
    let every = Duration::from_millis(50);
    eventually("revocd serve to be healthy", SOON, every, || {
        server.assert_running(&log);
        async move {
            match support::health(address).await {
                Some(ServingStatus::Serving) => Ok(()),
                other => Err(other),
            }
        }
    })
    .await;
    (server, address, log)
}

/// Starts `revocd agent` following `server`, its key given one of three
/// ways (file, flag, environment), and waits for its first snapshot.
fn start_agent(run: &mut Run, server: SocketAddr) -> (Process, SocketAddr, PathBuf) {
    let http = support::nginx::loopback(free_port());
    let metrics = support::nginx::loopback(free_port());
    let mut args: Vec<String> = [
        "agent",
        "--server",
        &format!("http://{server}"),
        "--jwt-hs256-secret-file",
        &run.path("secret"),
        "--jwt-issuer",
        ISSUER,
        "--http-listen",
        &http.to_string(),
        "--metrics-listen",
        &metrics.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let key = run.secrets.key("subscribe").to_owned();
    let log = run.log("agent");
    let mut command = match run.logging {
        Logging::Debug => {
            args.extend(["--api-key".to_owned(), key]);
            run.command("revocd", &args, &log)
        }
        Logging::RevocdTrace => {
            let mut command = run.command("revocd", &args, &log);
            command.env("REVOCD_API_KEY", key);
            command
        }
        Logging::Default | Logging::JsonDebug | Logging::Trace => {
            args.extend(["--api-key-file".to_owned(), run.path("agent.key")]);
            run.command("revocd", &args, &log)
        }
    };
    let mut agent = Process::spawn(&mut command, "revocd agent");
    let every = Duration::from_millis(20);
    eventually_blocking("revocd agent to be healthy", SOON, every, || {
        match support::nginx::http_get(metrics, "/healthz", &[]).map(|r| r.status) {
            Ok(200) => Ok(()),
            status => {
                agent.assert_running(&log);
                Err(status)
            }
        }
    });
    (agent, http, log)
}

/// The agent's HTTP status for `Authorization: <value>`.
fn agent_status(agent: SocketAddr, authorization: &str) -> u16 {
    support::nginx::http_get(agent, "/api", &[("Authorization", authorization)])
        .expect("forward-auth answers")
        .status
}

/// A client sending exactly `authorization` (or nothing).
async fn raw_client(address: SocketAddr, authorization: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connecting");
    let value = authorization.map(|v| v.parse().expect("ascii metadata"));
    RevocationServiceClient::with_interceptor(channel, BearerKey::new(value))
}

/// The code of a call's outcome, `Ok` included; bounded by [`SOON`].
async fn code<T>(call: impl std::future::Future<Output = Result<T, tonic::Status>>) -> Code {
    match tokio::time::timeout(SOON, call)
        .await
        .expect("answered in time")
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn by_jti(jti: &str) -> RevokeRequest {
    RevokeRequest {
        jti: jti.to_owned(),
        expires_at: unix_now() + 600,
        reason: "log test".into(),
        ..Default::default()
    }
}

fn check_token(token: &str) -> CheckRequest {
    CheckRequest {
        token: token.to_owned(),
        ..Default::default()
    }
}

/// Every RPC as each kind of caller would make it; asserts each outcome so
/// the logged paths are the ones meant. Returns a token it revoked.
async fn exercise_rpcs(run: &mut Run, address: SocketAddr) -> String {
    let live = run.valid_token("live-1");
    let revoked = run.valid_token("revoked-1");
    let batched = run.valid_token("batched-1");
    let now = unix_now();
    let forged = run.token(
        json!({"iss": ISSUER, "sub": "mallory", "jti": "forged-1", "exp": now + 3600}),
        Some("not-the-secret-at-all"),
    );
    let foreign = run.token(
        json!({"iss": "https://elsewhere.test", "sub": "alice", "jti": "foreign-1", "exp": now + 3600}),
        None,
    );
    let expired = run.token(
        json!({"iss": ISSUER, "sub": "alice", "jti": "expired-1", "exp": now - 7200}),
        None,
    );
    let no_exp = run.token(
        json!({"iss": ISSUER, "sub": "alice", "jti": "no-exp-1"}),
        None,
    );
    let secrets = &run.secrets;
    let bearer = |key: &str| format!("Bearer {key}");
    let mut anonymous = raw_client(address, None).await;
    let mut revoker = raw_client(address, Some(&bearer(secrets.key("revoke")))).await;
    let mut reader = raw_client(address, Some(&bearer(secrets.key("read")))).await;
    let mut subscriber = raw_client(address, Some(&bearer(secrets.key("subscribe")))).await;
    let mut admin = raw_client(address, Some(&bearer(secrets.key("admin")))).await;

    // With the right keys.
    assert_eq!(code(anonymous.revoke(by_token(&revoked))).await, Code::Ok);
    assert_eq!(code(anonymous.revoke(by_token(&expired))).await, Code::Ok);
    assert_eq!(code(revoker.revoke(by_jti("by-jti-1"))).await, Code::Ok);
    let subject = RevokeSubjectRequest {
        subject: "bob".into(),
        ..Default::default()
    };
    assert_eq!(code(revoker.revoke_subject(subject)).await, Code::Ok);
    let batch = RevokeBatchRequest {
        items: vec![by_token(&batched), by_jti("by-jti-2"), by_token(&forged)],
    };
    assert_eq!(code(revoker.revoke_batch(batch)).await, Code::Ok);
    assert_eq!(code(reader.check(check_token(&live))).await, Code::Ok);
    assert_eq!(code(reader.check(check_token(&revoked))).await, Code::Ok);
    let by_jti_check = CheckRequest {
        jti: "by-jti-1".into(),
        ..Default::default()
    };
    assert_eq!(code(subscriber.check(by_jti_check)).await, Code::Ok);
    assert_eq!(code(reader.get_stats(GetStatsRequest {})).await, Code::Ok);
    assert_eq!(code(admin.get_stats(GetStatsRequest {})).await, Code::Ok);
    let list = ListRevocationsRequest::default();
    assert_eq!(code(reader.list_revocations(list)).await, Code::Ok);
    let changes = ListChangesRequest::default();
    assert_eq!(code(admin.list_changes(changes)).await, Code::Ok);
    let stream = tokio::time::timeout(
        SOON,
        subscriber.subscribe(SubscribeRequest {
            protocol: revocd::snapshot::STREAM_PROTOCOL,
            ..Default::default()
        }),
    );
    let mut stream = stream
        .await
        .expect("in time")
        .expect("Subscribe")
        .into_inner();
    let first = tokio::time::timeout(SOON, stream.message()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "a snapshot: {first:?}");
    drop(stream);

    // Bad tokens, with and without keys.
    for token in [&forged, &foreign, &no_exp, &"abc.def.ghi".to_owned()] {
        assert_ne!(code(anonymous.revoke(by_token(token))).await, Code::Ok);
        assert_ne!(code(reader.check(check_token(token))).await, Code::Ok);
    }
    // A key without the role.
    let denied = code(reader.revoke(by_jti("by-jti-3"))).await;
    assert_eq!(denied, Code::PermissionDenied);

    exercise_wrong_keys(address, secrets, &live).await;
    revoked
}

/// Every RPC with a wrong key, a JWT sent as a key, and keys without
/// `Bearer`: all UNAUTHENTICATED.
async fn exercise_wrong_keys(address: SocketAddr, secrets: &Secrets, jwt: &str) {
    let subject = RevokeSubjectRequest {
        subject: "bob".into(),
        ..Default::default()
    };
    let batch = RevokeBatchRequest {
        items: vec![by_jti("wrong-key-batch")],
    };
    let by_jti_check = CheckRequest {
        jti: "by-jti-1".into(),
        ..Default::default()
    };
    let wrong_values = [
        format!("Bearer {}", secrets.wrong_key),
        format!("Bearer {jwt}"),
        secrets.key("admin").to_owned(),
        format!("Basic {}", secrets.key("read")),
    ];
    for value in &wrong_values {
        let mut client = raw_client(address, Some(value)).await;
        let outcomes = [
            code(client.revoke(by_jti("wrong-key"))).await,
            code(client.revoke_subject(subject.clone())).await,
            code(client.revoke_batch(batch.clone())).await,
            code(client.check(by_jti_check.clone())).await,
            code(client.get_stats(GetStatsRequest {})).await,
            code(client.list_revocations(ListRevocationsRequest::default())).await,
            code(client.list_changes(ListChangesRequest::default())).await,
            code(client.subscribe(SubscribeRequest {
                protocol: revocd::snapshot::STREAM_PROTOCOL,
                ..Default::default()
            }))
            .await,
        ];
        assert!(
            outcomes.iter().all(|c| *c == Code::Unauthenticated),
            "{outcomes:?}"
        );
    }
}

/// The agent judging good, revoked, forged and misplaced credentials.
fn exercise_agent(run: &mut Run, agent: SocketAddr, revoked: &str) {
    let live = run.valid_token("agent-live-1");
    let forged = run.token(
        json!({"iss": ISSUER, "sub": "mallory", "jti": "agent-forged", "exp": unix_now() + 600}),
        Some("still-not-the-secret"),
    );
    assert_eq!(agent_status(agent, &format!("Bearer {live}")), 200);
    assert_eq!(agent_status(agent, &format!("Bearer {forged}")), 401);
    let admin = run.secrets.key("admin").to_owned();
    assert_eq!(agent_status(agent, &format!("Bearer {admin}")), 401);
    assert_eq!(agent_status(agent, &run.secrets.hs256_secret.clone()), 401);
    let every = Duration::from_millis(20);
    eventually_blocking(
        "the agent to deny the revoked token",
        SOON,
        every,
        || match agent_status(agent, &format!("Bearer {revoked}")) {
            401 => Ok(()),
            status => Err(status),
        },
    );
}

/// Every revoctl subcommand, with good and bad keys and tokens.
fn exercise_revoctl(run: &mut Run, address: SocketAddr) {
    let live = run.valid_token("cli-live-1");
    let revoked = run.valid_token("cli-revoked-1");
    let forged = run.token(
        json!({"iss": ISSUER, "jti": "cli-forged", "exp": unix_now() + 600}),
        Some("yet-another-wrong-secret"),
    );
    let expires_at = unix_now() + 600;
    let import = run.dir.path().join("import.csv");
    let csv = format!("jti,expires_at,issuer,reason\nimported-1,{expires_at},,bulk\n");
    std::fs::write(&import, csv).expect("import file");
    let import = import.to_str().expect("UTF-8").to_owned();
    let export = run.path("export.csv");
    let secrets = &run.secrets;
    let (read, revoke) = (secrets.key("read"), secrets.key("revoke"));
    let (admin, subscribe) = (secrets.key("admin"), secrets.key("subscribe"));
    let wrong = &secrets.wrong_key;
    // (arguments after `--server`, separated by spaces; succeeds)
    let cases = [
        (
            format!("--api-key {read} status --token {live} --json"),
            true,
        ),
        (format!("revoke --token {revoked} --reason logs"), true),
        (
            format!("--api-key {revoke} revoke --jti cli-jti --expires-at {expires_at}"),
            true,
        ),
        (format!("--api-key {revoke} revoke-subject carol"), true),
        (format!("--api-key {admin} stats --json"), true),
        (format!("--api-key {subscribe} watch --count 1"), true),
        (format!("--api-key {read} list --json"), true),
        (format!("--api-key {read} audit"), true),
        (format!("--api-key {read} export --output {export}"), true),
        (
            format!("--api-key {revoke} import {import} --no-progress"),
            true,
        ),
        (format!("--api-key {wrong} status --token {live}"), false),
        (format!("--api-key {wrong} stats"), false),
        (format!("--api-key {wrong} list"), false),
        (
            format!("--api-key {wrong} import {import} --no-progress"),
            false,
        ),
        (format!("--api-key {read} status --token {forged}"), false),
        (format!("revoke --token {forged}"), false),
        (format!("--api-key {read} revoke-subject dave"), false),
    ];
    for (args, succeeds) in cases {
        let mut argv = vec!["--server".to_owned(), address.to_string()];
        argv.extend(args.split(' ').map(str::to_owned));
        let status = run.run("revoctl", "revoctl", &argv, &[]);
        assert_eq!(status.success(), succeeds, "revoctl {args}: {status}");
    }
    // The key from the environment.
    let argv = ["--server", &address.to_string(), "status", "cli-jti"].map(str::to_owned);
    let read = run.secrets.key("read").to_owned();
    let status = run.run(
        "revoctl-env",
        "revoctl",
        &argv,
        &[("REVOCD_API_KEY", &read)],
    );
    assert!(status.success(), "revoctl with REVOCD_API_KEY: {status}");
    // The exported file is output too.
    run.logs.push(PathBuf::from(export));
}

/// Redis dies: calls fail as unavailable, health turns NOT_SERVING, the
/// agent answers from its filter; Redis returns and so does the service.
async fn exercise_redis_failure(run: &mut Run, address: SocketAddr, agent: SocketAddr) {
    let live = run.valid_token("outage-live");
    let mut revoker = raw_client(
        address,
        Some(&format!("Bearer {}", run.secrets.key("revoke"))),
    )
    .await;
    let mut reader = raw_client(
        address,
        Some(&format!("Bearer {}", run.secrets.key("read"))),
    )
    .await;
    run.redis.kill();
    assert_eq!(
        code(revoker.revoke(by_jti("outage-1"))).await,
        Code::Unavailable
    );
    assert_eq!(
        code(reader.check(check_token(&live))).await,
        Code::Unavailable
    );
    assert_eq!(
        code(revoker.revoke(by_token(&live))).await,
        Code::Unavailable
    );
    wait_for_health(address, ServingStatus::NotServing, SOON).await;
    assert_eq!(agent_status(agent, &format!("Bearer {live}")), 200);
    let args = [
        "--server".to_owned(),
        address.to_string(),
        "--api-key".to_owned(),
        run.secrets.key("revoke").to_owned(),
        "revoke".to_owned(),
        "--token".to_owned(),
        live,
    ];
    let status = run.run("revoctl-outage", "revoctl", &args, &[]);
    assert!(
        !status.success(),
        "revoctl revoke during the outage: {status}"
    );

    run.redis.restart();
    wait_for_health(address, ServingStatus::Serving, SOON).await;
    assert_eq!(code(revoker.revoke(by_jti("outage-2"))).await, Code::Ok);
}

/// Start-ups that fail: a wrong Redis password, an unreachable Redis; and
/// the effective configuration printed with the URL in it.
fn exercise_failed_starts(run: &mut Run) {
    let listen = support::nginx::loopback(free_port());
    let wrong = format!(
        "redis://:{}@127.0.0.1:{}",
        run.secrets.wrong_password,
        run.redis.port()
    );
    let args = run.serve_args(listen, &wrong);
    let status = run.run("serve-wrong-password", "revocd", &args, &[]);
    assert!(!status.success(), "started with a wrong Redis password");
    let unreachable = format!(
        "redis://:{}@127.0.0.1:{}",
        run.secrets.redis_password,
        free_port()
    );
    let args = run.serve_args(listen, &unreachable);
    let status = run.run("serve-unreachable", "revocd", &args, &[]);
    assert!(!status.success(), "started without a Redis");
    let mut args = run.serve_args(listen, &run.redis.url());
    args.push("--print-config".into());
    let status = run.run("print-config", "revocd", &args, &[]);
    assert!(status.success(), "--print-config: {status}");
}

/// Asserts no captured byte holds a secret or a used JWT, and that the
/// logs hold what this logging set-up should show (so a silent process
/// cannot pass).
fn assert_no_secrets(run: &Run, server_log: &Path, agent_log: &Path) {
    let captured = run.captured();
    let mut needles = run.secrets.needles();
    needles.extend(run.tokens.iter().map(|t| ("a JWT".to_owned(), t.clone())));
    let mut leaks = Vec::new();
    for (path, text) in &captured {
        for (what, needle) in &needles {
            for line in text.lines().filter(|line| line.contains(needle.as_str())) {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let shown: String = line.chars().take(400).collect();
                leaks.push(format!("{name}: {what}: {shown}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{:?}: secrets in the output:\n{}",
        run.logging,
        leaks.join("\n")
    );

    let text = |path: &Path| {
        let (_, text) = captured.iter().find(|(p, _)| p == path).expect("captured");
        text.clone()
    };
    let (server, agent) = (text(server_log), text(agent_log));
    let total: usize = captured.iter().map(|(_, t)| t.len()).sum();
    eprintln!(
        "{:?}: {} files, {total} bytes searched for {} secrets; server log {} lines, agent log {} lines",
        run.logging,
        captured.len(),
        needles.len(),
        server.lines().count(),
        agent.lines().count()
    );
    for expected in [
        "listening",
        "store unavailable",
        "store unreachable",
        "shutting down",
    ] {
        assert!(
            server.contains(expected),
            "{:?}: the server log lacks {expected:?}:\n{server}",
            run.logging
        );
    }
    assert!(
        agent.contains("snapshot applied"),
        "{:?}: agent log:\n{agent}",
        run.logging
    );
    match run.logging {
        Logging::Default => assert!(!server.contains("DEBUG"), "the default level is info"),
        Logging::Debug | Logging::JsonDebug => {
            assert!(
                server.contains("revoked") && server.contains("h2"),
                "debug from every crate"
            )
        }
        Logging::RevocdTrace => {
            assert!(
                server.contains("TRACE") && !server.contains(" h2::"),
                "trace from revocd only"
            )
        }
        Logging::Trace => assert!(server.contains("TRACE h2::"), "trace from every crate"),
    }
    if run.logging == Logging::JsonDebug {
        for line in server.lines().chain(agent.lines()) {
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            assert!(parsed.is_ok(), "not a JSON line: {line}");
        }
    }
}

async fn scenario(logging: Logging) {
    let started = std::time::Instant::now();
    let mut run = Run::new(logging);
    exercise_failed_starts(&mut run);
    let (server, address, server_log) = start_server(&mut run).await;
    let (agent, agent_http, agent_log) = start_agent(&mut run, address);
    let revoked = exercise_rpcs(&mut run, address).await;
    exercise_agent(&mut run, agent_http, &revoked);
    exercise_revoctl(&mut run, address);
    exercise_redis_failure(&mut run, address, agent_http).await;
    // Off the runtime's thread, which must keep answering the server's
    // shutdown PINGs on the test's own connections.
    let stopped = tokio::task::spawn_blocking(move || {
        agent.terminate(SOON);
        server.terminate(SOON);
    });
    stopped.await.expect("stopping the processes");
    assert_no_secrets(&run, &server_log, &agent_log);
    eprintln!("{logging:?}: {:?}", started.elapsed());
}

#[tokio::test]
async fn no_secret_at_the_default_level() {
    scenario(Logging::Default).await;
}

#[tokio::test]
async fn no_secret_at_debug() {
    scenario(Logging::Debug).await;
}

#[tokio::test]
async fn no_secret_at_revocd_trace() {
    scenario(Logging::RevocdTrace).await;
}

#[tokio::test]
async fn no_secret_at_trace_from_every_crate() {
    scenario(Logging::Trace).await;
}

#[tokio::test]
async fn no_secret_in_json_logs_at_debug() {
    scenario(Logging::JsonDebug).await;
}
