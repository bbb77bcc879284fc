//! Shared helpers for the integration tests: a real server over real gRPC on
//! `127.0.0.1:0`, a real `redis-server`, callers with API keys, and tokens.
//! `examples/agent_wrk.rs` includes it too (with `#[path]`), for the real
//! `revocd` processes, nginx and Redis.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

pub mod nginx;
mod redis_cluster;
mod redis_server;

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use revocd::backoff::ExponentialBackoff;
use revocd::config::ServeConfig;
use revocd::gateway::GatewayConfig;
use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::RevokeRequest;
use revocd::server;
use revocd::time::unix_now;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

#[allow(unused_imports)] // each test binary uses a different subset
pub use self::redis_cluster::RedisCluster;
#[allow(unused_imports)] // each test binary uses a different subset
pub use self::redis_server::{free_port, RedisServer};

/// The HS256 secret the test servers trust.
pub const SECRET: &str = "integration-test-secret-0123456789";
/// The issuer the test servers accept (and default to).
pub const ISSUER: &str = "https://issuer.test";

/// API keys of the test deployment, by role: (name, key, roles).
pub const KEYS: [(&str, &str, &str); 5] = [
    ("auth-server", "key-revoke", r#"["revoke"]"#),
    ("support-desk", "key-read", r#"["read"]"#),
    ("edge-gateway", "key-subscribe", r#"["subscribe"]"#),
    ("operator", "key-admin", r#"["admin"]"#),
    ("mixed", "key-mixed", r#"["revoke", "read"]"#),
];

/// A key with quotas: (name, key, roles and quota lines).
pub const QUOTA_KEY: (&str, &str, &str) = (
    "rate-bound",
    "key-quota",
    "[\"revoke\", \"subscribe\"]\nmax_revocations_per_second = 20\nmax_live_revocations = 5\nmax_streams = 1",
);

/// The `revocd serve` flags that select log entry format `format`: none
/// for 1, the server's default, so a benchmark can also measure a binary
/// built before `--log-entry-format` existed.
pub fn log_entry_format_flags(format: u8) -> Vec<String> {
    match format {
        1 => Vec::new(),
        _ => vec!["--log-entry-format".to_owned(), format.to_string()],
    }
}

/// The built binary `name` (`revocd` or `revoctl`): in tests, the one cargo
/// built for them (`CARGO_BIN_EXE_<name>`); elsewhere (an example, run from
/// `target/<profile>/examples/`), `target/<profile>/<name>`, so a release
/// example runs the release binaries.
pub fn binary(name: &str) -> PathBuf {
    let built = match name {
        "revocd" => option_env!("CARGO_BIN_EXE_revocd"),
        "revoctl" => option_env!("CARGO_BIN_EXE_revoctl"),
        _ => None,
    };
    built.map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        profile_dir.join(name)
    })
}

/// `cargo build --bins` in the profile the running example was built in,
/// when cargo runs it (it says where it is in `CARGO`), so the binaries
/// [`binary`] finds are current; nothing otherwise. For the benchmark
/// examples.
///
/// # Errors
/// When cargo cannot be run or the build fails.
pub fn build_binaries() -> std::io::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut command = std::process::Command::new(cargo);
    command
        .args(["build", "--bins", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cargo build --bins failed: {status}"
        )))
    }
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name
/// (the state first, then the parent's pid...); `None` if it cannot be read.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    Some(fields.split_whitespace().map(str::to_owned).collect())
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// Linux everywhere that matters).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) a process has used, 0 if unreadable.
pub fn cpu_seconds(pid: u32) -> f64 {
    // After the command name: state is field 0, utime 11, stime 12.
    let ticks = proc_stat(pid).map_or(0, |fields| {
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    });
    ticks as f64 / TICKS_PER_SECOND
}

/// Read and write system calls a process has made (`syscr` + `syscw` of
/// `/proc/<pid>/io`: `read`, `recv*`, `write`, `writev`, `send*` and the
/// like; not `epoll_wait` or `futex`), 0 if unreadable.
pub fn io_syscalls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .filter_map(|line| {
            let count = line
                .strip_prefix("syscr: ")
                .or_else(|| line.strip_prefix("syscw: "))?;
            count.parse::<u64>().ok()
        })
        .sum()
}

/// A process's resident set size (`VmRSS` of `/proc/<pid>/status`), in
/// KiB; `None` if unreadable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let parent_of = |pid: u32| proc_stat(pid)?.get(1)?.parse::<u32>().ok();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// Installs a tracing subscriber once for the whole test binary (`RUST_LOG`
/// selects what is shown).
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Asks `probe` every `every` until it answers `Ok`, and returns that
/// answer: for what a test cannot wait on directly (a process becoming
/// healthy, a revocation reaching an agent).
///
/// # Panics
/// Once `timeout` has passed, naming `what` and the last `Err` answer.
pub fn eventually_blocking<T, E: Debug>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last:?}"
        );
        std::thread::sleep(every);
    }
}

/// [`eventually_blocking`] for a probe that awaits, on tokio's clock (so
/// paused time applies to the timeout and the pauses).
///
/// # Panics
/// Once `timeout` has passed, naming `what` and the last `Err` answer.
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Files a test deployment needs: the HS256 secret and the API-keys file.
pub struct Deployment {
    dir: tempfile::TempDir,
}

impl Deployment {
    /// Writes the secret and the API keys to a fresh temp dir.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).expect("secret file");
        let keys: String = KEYS
            .iter()
            .chain([&QUOTA_KEY])
            .map(|(name, key, roles)| {
                let digest = revocd::auth::key_digest_hex(key);
                format!("[[key]]\nname = \"{name}\"\nsha256 = \"{digest}\"\nroles = {roles}\n\n")
            })
            .collect();
        std::fs::write(dir.path().join("api-keys.toml"), keys).expect("keys file");
        Deployment { dir }
    }

    /// A file in the deployment's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `revocd serve` flags for this deployment, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--api-keys-file".into(),
            path_string(&self.path("api-keys.toml")),
            "--jwt-hs256-secret-file".into(),
            path_string(&self.path("secret")),
            "--jwt-issuer".into(),
            ISSUER.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `revocd agent` flags: following the server at `server` with the
    /// subscribe key from a file, accepting the deployment's issuer, plus
    /// `extra` (key flags, policies).
    pub fn agent_args(&self, server: SocketAddr, extra: &[&str]) -> Vec<String> {
        let key_file = self.path("agent.key");
        std::fs::write(&key_file, "key-subscribe\n").expect("agent key file");
        let mut args: Vec<String> = vec![
            "--server".into(),
            format!("http://{server}"),
            "--api-key-file".into(),
            path_string(&key_file),
            "--jwt-issuer".into(),
            ISSUER.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }
}

fn path_string(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

#[derive(Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Parses `revocd serve` flags as the binary would.
pub fn serve_config(args: &[String]) -> ServeConfig {
    let argv = std::iter::once("revocd".to_owned()).chain(args.iter().cloned());
    ServeCli::try_parse_from(argv)
        .expect("valid serve flags")
        .serve
}

/// A revocd server running in this process over real gRPC.
pub struct TestServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// Where its HTTP doors listen, with `--http-listen` among its flags.
    pub http: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with `revocd serve` flags on `127.0.0.1:0`.
    pub async fn start(args: &[String]) -> Self {
        let config = serve_config(args);
        let state = config.start_state(None).await.expect("server state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("bound address");
        let http = match config.http_listen {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .expect("bind --http-listen"),
            ),
            None => None,
        };
        let http_address = http
            .as_ref()
            .map(|listener| listener.local_addr().expect("bound address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stopped.await;
            };
            server::run(
                listener,
                http,
                Arc::new(state),
                stop,
                Duration::from_secs(1),
            )
            .await
            .expect("server runs");
        });
        TestServer {
            address,
            http: http_address,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// A client sending `key` (or no key) as its bearer API key.
    pub async fn client(&self, key: Option<&str>) -> Client {
        client(self.address, key).await
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.expect("server task");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token verifier of the test deployment's gateways: its HS256
/// secret and issuer, 60 s of leeway.
pub fn verifier() -> revocd::tokens::TokenVerifier {
    revocd::tokens::TokenVerifier::builder()
        .hs256_secret(SECRET.as_bytes())
        .expect("HS256 secret")
        .issuers(&[ISSUER.to_owned()])
        .leeway_seconds(60)
        .build()
        .expect("one issuer owns the secret")
}

/// A gateway config following `servers` (URLs) with the subscribe key,
/// reconnecting fast: 10 ms doubling to 200 ms, no jitter.
pub fn gateway_config<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> GatewayConfig {
    let backoff =
        ExponentialBackoff::try_new(Duration::from_millis(10), Duration::from_millis(200), 0.0)
            .expect("valid backoff");
    GatewayConfig::new(servers)
        .api_key("key-subscribe")
        .expect("ascii key")
        .backoff(backoff)
}

/// A gRPC client of the revocation service with a fixed API key.
pub type Client = RevocationServiceClient<InterceptedService<Channel, BearerKey>>;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct BearerKey(Option<MetadataValue<Ascii>>);

impl BearerKey {
    /// Sends `value` (the whole `Bearer <key>`), or nothing.
    pub fn new(value: Option<MetadataValue<Ascii>>) -> Self {
        BearerKey(value)
    }
}

impl Interceptor for BearerKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Connects a client to `address`.
pub async fn client(address: SocketAddr, key: Option<&str>) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connecting to the test server");
    let key = key.map(|k| format!("Bearer {k}").parse().expect("ascii key"));
    RevocationServiceClient::with_interceptor(channel, BearerKey(key))
}

/// Signs `claims` with the test secret (HS256).
pub fn sign(claims: &serde_json::Value) -> String {
    sign_with(claims, SECRET)
}

/// Signs `claims` with another HS256 secret.
pub fn sign_with(claims: &serde_json::Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("signing")
}

/// A `Revoke` of `token` (its own claims say what and until when).
pub fn by_token(token: &str) -> RevokeRequest {
    RevokeRequest {
        token: token.to_owned(),
        ..Default::default()
    }
}

/// A `Revoke` of the token id `jti` until `expires_at` (Unix seconds).
pub fn by_jti(jti: &str, expires_at: i64) -> RevokeRequest {
    RevokeRequest {
        jti: jti.to_owned(),
        expires_at,
        ..Default::default()
    }
}

/// A valid token for `subject` with a fresh jti, issued now, valid an hour.
pub fn token_for(subject: &str, jti: &str) -> String {
    sign(&serde_json::json!({
        "iss": ISSUER, "sub": subject, "jti": jti, "iat": unix_now(), "exp": *TOKEN_EXP,
    }))
}

/// The `exp` of [`token_for`]'s and [`token_with`]'s tokens: an hour from
/// the first use, the same for every token of the process, so a test can
/// revoke one by jti with its own `exp` (gateways look for a revocation in
/// the filter slice of the token's `exp`).
pub static TOKEN_EXP: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| unix_now() + 3600);

/// A token of `subject` issued at `issued_at`, valid an hour from now,
/// with the `extra` claims (`sid`, `client_id`, `azp`...).
pub fn token_with(subject: &str, jti: &str, issued_at: i64, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "jti": jti, "iat": issued_at, "exp": *TOKEN_EXP,
    });
    let (Some(claims_map), Some(extra)) = (claims.as_object_mut(), extra.as_object()) else {
        panic!("claims are JSON objects");
    };
    claims_map.extend(extra.clone());
    sign(&claims)
}

/// `binary subcommand args...`, logging errors only, with no `REVOCD_*`
/// client settings from the environment.
fn revocd_command(binary: &Path, args: &[String]) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .args(args)
        .env("RUST_LOG", "revocd=error")
        .env_remove("REVOCD_SERVER")
        .env_remove("REVOCD_API_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    command
}

/// The value of `series` (a metric name, with its labels as Prometheus
/// prints them) in Prometheus text, `None` when absent.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == series).then(|| value.trim().parse().ok())?
    })
}

/// A real `revocd serve` process (the built binary), killed when dropped.
pub struct Replica {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its command line after the binary (`serve ...`).
    pub args: Vec<String>,
    child: std::process::Child,
}

impl Replica {
    /// Starts `revocd serve` with `args` on a free loopback port and waits
    /// until its health service reports SERVING.
    pub async fn spawn(args: &[String]) -> Self {
        Self::spawn_with(&binary("revocd"), args).await
    }

    /// [`Replica::spawn`] with another `revocd` binary.
    pub async fn spawn_with(binary: &Path, args: &[String]) -> Self {
        let address = nginx::loopback(free_port());
        let mut all = vec!["serve".to_owned()];
        all.extend_from_slice(args);
        all.extend(["--listen".to_owned(), address.to_string()]);
        let child = revocd_command(binary, &all)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let replica = Replica {
            address,
            args: all,
            child,
        };
        wait_for_health(address, ServingStatus::Serving, Duration::from_secs(20)).await;
        replica
    }

    /// The overall health the replica reports, `None` when unreachable.
    pub async fn health(&self) -> Option<ServingStatus> {
        health(self.address).await
    }

    /// A client sending `key` as its bearer API key.
    pub async fn client(&self, key: Option<&str>) -> Client {
        client(self.address, key).await
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use tonic_health::pb::health_check_response::ServingStatus;

/// A client of the gRPC health service of the server at `address` (no API
/// key), `None` when it cannot connect.
pub async fn health_client(address: SocketAddr) -> Option<HealthClient> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}")).ok()?;
    let channel = endpoint
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()?;
    Some(HealthClient::new(channel))
}

/// A client of the gRPC health service.
pub type HealthClient = tonic_health::pb::health_client::HealthClient<Channel>;

/// The overall (`""`) health `client`'s server reports, `None` when it
/// cannot be asked.
pub async fn overall_health(client: &mut HealthClient) -> Option<ServingStatus> {
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let reply = client.check(request).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

/// The overall (`""`) health of the server at `address`, `None` when it
/// cannot be asked.
pub async fn health(address: SocketAddr) -> Option<ServingStatus> {
    overall_health(&mut health_client(address).await?).await
}

/// Waits until the server at `address` reports the overall health
/// `wanted`.
///
/// # Panics
/// If it does not within `timeout`.
pub async fn wait_for_health(address: SocketAddr, wanted: ServingStatus, timeout: Duration) {
    let what = format!("{address} to report {wanted:?}");
    eventually(&what, timeout, Duration::from_millis(50), || async move {
        match health(address).await {
            Some(status) if status == wanted => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// A real `revocd agent` process (the built binary), killed when dropped.
pub struct AgentProcess {
    /// Forward-auth HTTP (`--http-listen`).
    pub http: SocketAddr,
    /// Envoy ext_authz gRPC (`--ext-authz-listen`).
    pub ext_authz: SocketAddr,
    /// `/healthz` and `/metrics` (`--metrics-listen`).
    pub metrics: SocketAddr,
    /// Its command line after the binary (`agent ...`).
    pub args: Vec<String>,
    /// The `revocd` binary run.
    binary: PathBuf,
    child: Option<std::process::Child>,
}

impl AgentProcess {
    /// Starts `revocd agent` with `args` and its three listeners on free
    /// loopback ports, and waits until `/healthz` answers 200 (a first
    /// snapshot is loaded).
    pub fn spawn(args: &[String]) -> Self {
        Self::spawn_with(&binary("revocd"), args)
    }

    /// [`AgentProcess::spawn`] with another `revocd` binary.
    pub fn spawn_with(binary: &Path, args: &[String]) -> Self {
        let http = nginx::loopback(free_port());
        let ext_authz = nginx::loopback(free_port());
        let metrics = nginx::loopback(free_port());
        let mut all = vec!["agent".to_owned()];
        all.extend_from_slice(args);
        for (flag, address) in [
            ("--http-listen", http),
            ("--ext-authz-listen", ext_authz),
            ("--metrics-listen", metrics),
        ] {
            all.extend([flag.to_owned(), address.to_string()]);
        }
        let mut agent = AgentProcess {
            http,
            ext_authz,
            metrics,
            args: all,
            binary: binary.to_owned(),
            child: None,
        };
        agent.start();
        agent
    }

    /// Starts the process (again, after [`AgentProcess::kill`]) with the
    /// same command line, so on the same ports, and waits until `/healthz`
    /// answers 200.
    ///
    /// # Panics
    /// If it exits at start or is not healthy within 20 s.
    pub fn start(&mut self) {
        let child = revocd_command(&self.binary, &self.args)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} agent: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let health = nginx::http_get(self.metrics, "/healthz", &[]).map(|r| r.status);
            if matches!(health, Ok(200)) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("revocd agent exited at start: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "revocd agent did not become healthy: {health:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's Prometheus metrics.
    pub fn metrics_text(&self) -> String {
        nginx::http_get(self.metrics, "/metrics", &[])
            .expect("GET /metrics from the agent")
            .body
    }

    /// The value of the series `name` (with its labels as printed, if
    /// any), if exported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics_text(), name)
    }

    /// Its process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Kills the agent at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process started from a command line the test wrote itself (the
/// compose file's, a logging set-up's), killed when dropped.
pub struct Process {
    child: std::process::Child,
    /// What it is, for failure messages.
    what: String,
}

impl Process {
    /// Starts `command`.
    ///
    /// # Panics
    /// If it cannot be started.
    pub fn spawn(command: &mut std::process::Command, what: &str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Process {
            child,
            what: what.to_owned(),
        }
    }

    /// Stops it as an orchestrator would (SIGTERM), so its shutdown runs
    /// (and logs) too.
    ///
    /// # Panics
    /// If it has not exited within `grace` (it is then killed).
    pub fn terminate(mut self, grace: Duration) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not stop within {grace:?} of SIGTERM", self.what);
    }

    /// Panics with the text of `log` (where it writes) if it has exited.
    pub fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{} exited ({status}):\n{text}", self.what);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === restarting a replica (tests/chaos.rs) ===

impl Replica {
    /// Kills the replica at once (SIGKILL), as a crash would. Its address
    /// and arguments are kept, so [`Replica::restart`] brings it back where
    /// it was.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// [`Replica::restart_with`] the built `revocd` ([`binary`]).
    pub async fn restart(&mut self) {
        self.restart_with(&binary("revocd")).await;
    }

    /// Kills the replica if it runs, starts `binary` again with the same
    /// arguments (so on the same address) and waits until it reports
    /// SERVING.
    ///
    /// # Panics
    /// If it exits or is not SERVING within 20 s (its store must answer).
    pub async fn restart_with(&mut self, binary: &Path) {
        self.kill();
        self.child = revocd_command(binary, &self.args)
            .spawn()
            .unwrap_or_else(|e| panic!("restarting {}: {e}", binary.display()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.health().await != Some(ServingStatus::Serving) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("replica {} exited on restart: {status}", self.address);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {} did not become healthy after a restart",
                self.address
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
