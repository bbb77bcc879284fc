//! The system under test, every part real and on loopback: one
//! `redis-server` (AOF, `appendfsync always`), `revocd serve` replicas in
//! strict durability mode with the smallest change-log retention they
//! accept, two issuers each with its own key ([`super::issuer`]), a TCP
//! proxy in front of each replica for the filter streams, gateways of the
//! library in this process (each confirming through proxies of its own)
//! and `revocd agent` processes, every subscriber following all replicas
//! (through the proxies).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use revocd::backoff::ExponentialBackoff;
use revocd::gateway::{Denial, Gateway, GatewayConfig, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::issuer;
use super::ledger::Token;
use super::proxy::Proxy;
use super::ChaosConfig;
use crate::support::nginx::parse_response;
use crate::support::{metric_value, AgentProcess, Deployment, RedisServer, Replica};

/// How long a subscriber's answer may take before it counts as
/// unavailable (a confirm through a dead replica, a stopped agent).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Redis flags under which a reply means the write is on disk.
const FSYNC_ALWAYS: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];
/// `--log-retention` of the replicas: the least the server accepts (at
/// least 10,000 and twice the largest `RevokeBatch`), so the nemesis can
/// push the log past a stalled replica in a few seconds.
pub const LOG_RETENTION: u64 = 10_000;
/// Every subscriber's `max_staleness`: it calls itself fresh while its
/// last frame is younger (heartbeats come every 200 ms).
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

/// Everything started for a run; stopped (stopped processes resumed
/// first) when dropped.
pub struct Testbed {
    /// The one Redis; a std mutex, as its kill and restart block.
    pub redis: Mutex<RedisServer>,
    /// `redis://127.0.0.1:<port>`, unchanged by restarts.
    pub redis_url: String,
    /// The replicas, by index.
    pub replicas: Vec<tokio::sync::Mutex<Replica>>,
    /// Their addresses (fixed: a restart reuses the port).
    pub replica_addresses: Vec<SocketAddr>,
    /// Their HTTP doors (`--http-listen`, fixed likewise).
    pub door_addresses: Vec<SocketAddr>,
    /// One proxy per replica, same index; subscribers connect through them.
    pub proxies: Vec<Proxy>,
    /// Gateways first, then agents.
    pub subscribers: Vec<Arc<Subscriber>>,
    /// The `revocd` binary run.
    pub binary: PathBuf,
    /// The JWT flags of every part ([`issuer::jwt_flags`]).
    jwt_flags: Vec<String>,
    /// Processes stopped with SIGSTOP and not yet resumed.
    stopped: Mutex<HashSet<u32>>,
    /// The agent processes, by agent number (killed when dropped).
    pub agent_processes: Vec<Mutex<AgentProcess>>,
    /// Keeps the secret and key files.
    _deployment: Deployment,
}

impl Testbed {
    /// Starts Redis, the replicas, the proxies, and the subscribers, and
    /// waits until every subscriber holds a snapshot.
    pub async fn start(config: &ChaosConfig) -> Testbed {
        let redis = RedisServer::start_with(&FSYNC_ALWAYS);
        let redis_url = redis.url();
        let deployment = Deployment::new();
        let jwt_flags = issuer::jwt_flags(&deployment);
        let args = serve_args(&deployment, &jwt_flags, &redis, config);
        let mut replicas = Vec::new();
        let mut proxies = Vec::new();
        let mut door_addresses = Vec::new();
        for replica in 0..config.replicas {
            let door = crate::support::nginx::loopback(crate::support::free_port());
            let mut args = args.clone();
            args.extend(["--http-listen".to_owned(), door.to_string()]);
            // Replicas alternate the two log entry formats, as during a
            // move to format 2: every invariant holds across both.
            let entry_format = 1 + replica % 2;
            args.extend(["--log-entry-format".to_owned(), entry_format.to_string()]);
            door_addresses.push(door);
            let replica = Replica::spawn_with(&config.binary, &args).await;
            proxies.push(Proxy::start(replica.address).await);
            replicas.push(replica);
        }
        let replica_addresses: Vec<SocketAddr> = replicas.iter().map(|r| r.address).collect();
        let urls: Vec<String> = proxies.iter().map(Proxy::url).collect();
        let mut subscribers = Vec::new();
        for id in 0..config.gateways {
            let mut confirm_proxies = Vec::new();
            for address in &replica_addresses {
                confirm_proxies.push(Proxy::start(*address).await);
            }
            let confirm_urls: Vec<String> = confirm_proxies.iter().map(Proxy::url).collect();
            let endpoints = Endpoints {
                streams: rotated(&urls, id),
                confirms: rotated(&confirm_urls, id),
            };
            let gateway = gateway(id, endpoints, &jwt_flags, confirm_proxies).await;
            subscribers.push(Arc::new(gateway));
        }
        let mut agents = Vec::new();
        for id in 0..config.agents {
            let process = agent(&deployment, &jwt_flags, config, id, &rotated(&urls, id));
            subscribers.push(Arc::new(Subscriber {
                name: format!("agent-{id}"),
                kind: SubscriberKind::Agent {
                    http: process.http,
                    metrics: process.metrics,
                    pid: AtomicU32::new(process.pid().expect("a running agent")),
                    number: id,
                },
                frozen: tokio::sync::RwLock::new(false),
                confirm_proxies: Vec::new(),
            }));
            agents.push(process);
        }
        Testbed {
            redis: Mutex::new(redis),
            redis_url,
            replicas: replicas.into_iter().map(tokio::sync::Mutex::new).collect(),
            replica_addresses,
            door_addresses,
            proxies,
            subscribers,
            binary: config.binary.clone(),
            jwt_flags,
            stopped: Mutex::new(HashSet::new()),
            agent_processes: agents.into_iter().map(Mutex::new).collect(),
            _deployment: deployment,
        }
    }

    /// Sends `SIGSTOP` to `pid` and waits until it is stopped.
    ///
    /// # Panics
    /// If `kill` fails or the process is not stopped within a second.
    pub async fn stop_process(&self, pid: u32) {
        self.lock_stopped().insert(pid);
        signal(pid, "STOP");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while crate::support::proc_stat(pid).and_then(|s| s.first().cloned())
            != Some("T".to_owned())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "process {pid} did not stop"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends `SIGCONT` to a process stopped with [`Testbed::stop_process`].
    pub fn resume_process(&self, pid: u32) {
        signal(pid, "CONT");
        self.lock_stopped().remove(&pid);
    }

    fn lock_stopped(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A gateway following only replica `index`, directly: what it holds is
    /// what that replica serves. Named `replica-<index>`; it stops when
    /// dropped.
    pub fn probe(&self, index: usize) -> Subscriber {
        let id = format!("chaos-probe-{index}");
        let url = format!("http://{}", self.replica_addresses[index]);
        let endpoints = Endpoints {
            streams: vec![url.clone()],
            confirms: vec![url],
        };
        Subscriber {
            name: format!("replica-{index}"),
            kind: SubscriberKind::Gateway(spawn_gateway(&id, endpoints, &self.jwt_flags)),
            frozen: tokio::sync::RwLock::new(false),
            confirm_proxies: Vec::new(),
        }
    }

    /// Runs one command on Redis over a connection of its own (blocking
    /// calls, on a blocking thread).
    ///
    /// # Errors
    /// Redis's, or the connection's.
    pub async fn redis_query<T>(&self, command: redis::Cmd) -> redis::RedisResult<T>
    where
        T: redis::FromRedisValue + Send + 'static,
    {
        let url = self.redis_url.clone();
        tokio::task::spawn_blocking(move || {
            let client = redis::Client::open(url)?;
            let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
            connection.set_read_timeout(Some(Duration::from_secs(5)))?;
            command.query(&mut connection)
        })
        .await
        .expect("Redis command thread")
    }

    /// The agents' process ids, with their subscriber index.
    pub fn agents(&self) -> Vec<(usize, u32)> {
        self.subscribers
            .iter()
            .enumerate()
            .filter_map(|(index, s)| match &s.kind {
                SubscriberKind::Agent { pid, .. } => Some((index, pid.load(Ordering::Relaxed))),
                SubscriberKind::Gateway(_) => None,
            })
            .collect()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // A stopped process would ignore SIGTERM and hold its ports; resume
        // it so that the kills that follow find it running.
        for pid in self.lock_stopped().drain() {
            signal(pid, "CONT");
        }
    }
}

/// `kill -<name> <pid>` (libc is not a dependency).
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid}: {status}");
}

/// `revocd serve` flags of every replica.
fn serve_args(
    deployment: &Deployment,
    jwt_flags: &[String],
    redis: &RedisServer,
    config: &ChaosConfig,
) -> Vec<String> {
    let mut args = vec![
        "--api-keys-file".to_owned(),
        deployment.path("api-keys.toml").display().to_string(),
    ];
    args.extend(redis.strict_serve_flags());
    args.extend([
        "--log-partitions".to_owned(),
        config.log_partitions.to_string(),
        "--log-retention".to_owned(),
        LOG_RETENTION.to_string(),
        // Any burst gets a filter rebuilt compact (the filter-burst fault).
        "--filter-compaction-min-kib".to_owned(),
        "1".to_owned(),
    ]);
    args.extend_from_slice(jwt_flags);
    args
}

/// `urls` starting at `first`, so subscribers spread over the replicas.
fn rotated(urls: &[String], first: usize) -> Vec<String> {
    let mut rotated = urls.to_vec();
    rotated.rotate_left(first % urls.len().max(1));
    rotated
}

/// Where a gateway in this process subscribes and where it confirms.
struct Endpoints {
    streams: Vec<String>,
    confirms: Vec<String>,
}

/// A gateway of the library, named `id`. The idle timeout is 10
/// heartbeats, so a hung replica is left quickly.
fn spawn_gateway(id: &str, endpoints: Endpoints, jwt_flags: &[String]) -> Gateway {
    let backoff =
        ExponentialBackoff::try_new(Duration::from_millis(50), Duration::from_secs(1), 0.2)
            .expect("valid backoff");
    let config = GatewayConfig::new(endpoints.streams)
        .confirm_endpoints(endpoints.confirms)
        .api_key("key-subscribe")
        .expect("ascii key")
        .gateway_id(id)
        .max_staleness(MAX_STALENESS)
        .idle_timeout(Duration::from_secs(2))
        .backoff(backoff);
    Gateway::spawn(config, issuer::verifier(jwt_flags)).expect("gateway")
}

/// A gateway following `endpoints`, once it holds a snapshot; its confirms
/// go through `confirm_proxies`.
async fn gateway(
    id: usize,
    endpoints: Endpoints,
    jwt_flags: &[String],
    confirm_proxies: Vec<Proxy>,
) -> Subscriber {
    let gateway = spawn_gateway(&format!("chaos-gateway-{id}"), endpoints, jwt_flags);
    assert!(
        gateway.ready(Duration::from_secs(20)).await,
        "gateway {id}: no snapshot"
    );
    Subscriber {
        name: format!("gateway-{id}"),
        kind: SubscriberKind::Gateway(gateway),
        frozen: tokio::sync::RwLock::new(false),
        confirm_proxies,
    }
}

/// A `revocd agent` following `urls`, once healthy.
fn agent(
    deployment: &Deployment,
    jwt_flags: &[String],
    config: &ChaosConfig,
    id: usize,
    urls: &[String],
) -> AgentProcess {
    let gateway_id = format!("chaos-agent-{id}");
    let max_staleness = format!("{}ms", MAX_STALENESS.as_millis());
    // Kept on disk: the agent-restart fault restarts it from there.
    let state_dir = deployment.path(&format!("agent-{id}-state"));
    let state_dir = state_dir.to_str().expect("UTF-8 path");
    let mut extra: Vec<&str> = jwt_flags.iter().map(String::as_str).collect();
    extra.extend([
        "--gateway-id",
        &gateway_id,
        "--max-staleness",
        &max_staleness,
        "--state-dir",
        state_dir,
    ]);
    for url in &urls[1..] {
        extra.extend(["--server", url]);
    }
    let first: SocketAddr = urls[0]
        .trim_start_matches("http://")
        .parse()
        .expect("proxy address");
    let args = deployment.agent_args(first, &extra);
    // `spawn_with` polls `/healthz` with blocking sleeps.
    tokio::task::block_in_place(|| AgentProcess::spawn_with(&config.binary, &args))
}

// === Subscriber ===

/// A gateway in this process or an agent process, asked the same way.
pub struct Subscriber {
    /// `gateway-<n>` or `agent-<n>`.
    pub name: String,
    /// What it is.
    pub kind: SubscriberKind,
    /// True while the nemesis holds the process stopped. Askers hold the
    /// read lock while asking, so a stop waits for their answers and
    /// nobody asks a stopped process.
    pub frozen: tokio::sync::RwLock<bool>,
    /// A gateway's own proxies to the replicas for its confirms (`Check`
    /// calls), so their replies can be held; none for agents and probes.
    pub confirm_proxies: Vec<Proxy>,
}

/// The two kinds of subscriber.
pub enum SubscriberKind {
    /// The library, in this process.
    Gateway(Gateway),
    /// `revocd agent`, asked over forward-auth HTTP.
    Agent {
        /// Forward-auth address.
        http: SocketAddr,
        /// `/metrics` address.
        metrics: SocketAddr,
        /// Its process (a new one after a restart).
        pid: AtomicU32,
        /// Its number: its process is `agent_processes[number]`.
        number: usize,
    },
}

/// A subscriber's answer about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not revoked.
    Allow,
    /// The filter says "maybe" (a gateway asked from memory only).
    Maybe,
    /// Revoked.
    Revoked,
    /// Refused for another reason (invalid, expired...).
    Refused(String),
    /// It could not tell (the server unreachable for a confirm, a timeout).
    Unavailable(String),
}

impl Subscriber {
    /// The answer from memory: a gateway's `check_claims` (no network), an
    /// agent's forward-auth decision.
    pub async fn ask(&self, token: &Token) -> Answer {
        match &self.kind {
            SubscriberKind::Gateway(gateway) => {
                from_verdict(gateway.check_claims(token.claims.clone()))
            }
            SubscriberKind::Agent { http, .. } => forward_auth(*http, &token.jwt).await,
        }
    }

    /// The answer from the token itself, signature and issuer verified: a
    /// gateway's `check`, an agent's forward-auth decision.
    pub async fn ask_verified(&self, token: &Token) -> Answer {
        match &self.kind {
            SubscriberKind::Gateway(gateway) => from_verdict(gateway.check(&token.jwt)),
            SubscriberKind::Agent { http, .. } => forward_auth(*http, &token.jwt).await,
        }
    }

    /// The gateway in this process, if it is one.
    pub fn gateway(&self) -> Option<&Gateway> {
        match &self.kind {
            SubscriberKind::Gateway(gateway) => Some(gateway),
            SubscriberKind::Agent { .. } => None,
        }
    }

    /// The final answer: a gateway's `check_confirmed` (a `Check` for a
    /// "maybe"), an agent's forward-auth decision.
    pub async fn ask_confirmed(&self, token: &Token) -> Answer {
        match &self.kind {
            SubscriberKind::Gateway(gateway) => {
                match tokio::time::timeout(ANSWER_TIMEOUT, gateway.check_confirmed(&token.jwt))
                    .await
                {
                    Ok(verdict) => from_verdict(verdict),
                    Err(_) => Answer::Unavailable("confirm timed out".into()),
                }
            }
            SubscriberKind::Agent { http, .. } => forward_auth(*http, &token.jwt).await,
        }
    }

    /// Time since its last frame; `None` before the first or when it
    /// cannot be asked.
    pub async fn staleness(&self) -> Option<Duration> {
        match &self.kind {
            SubscriberKind::Gateway(gateway) => gateway.staleness(),
            SubscriberKind::Agent { metrics, .. } => {
                let text = http_get(*metrics, "/metrics", None).await.ok()?.body;
                let seconds = metric_value(&text, "revocd_agent_filter_staleness_seconds")?;
                Duration::try_from_secs_f64(seconds).ok()
            }
        }
    }

    /// The cursor of its filter (gateways in this process only).
    pub fn cursor(&self) -> Option<String> {
        match &self.kind {
            SubscriberKind::Gateway(gateway) => gateway.view().map(|v| v.cursor().to_owned()),
            SubscriberKind::Agent { .. } => None,
        }
    }

    /// Whether it is a gateway in this process (cheap to ask).
    pub fn in_process(&self) -> bool {
        matches!(self.kind, SubscriberKind::Gateway(_))
    }
}

fn from_verdict(verdict: Verdict) -> Answer {
    match verdict {
        Verdict::Allow(_) => Answer::Allow,
        Verdict::Confirm(_) => Answer::Maybe,
        Verdict::Deny(Denial::Revoked | Denial::RevokedBySubject | Denial::RevokedByClaim(_)) => {
            Answer::Revoked
        }
        Verdict::Deny(denial) if denial.is_unavailable() => Answer::Unavailable(denial.to_string()),
        Verdict::Deny(denial) => Answer::Refused(denial.to_string()),
    }
}

/// The agent's forward-auth decision for `jwt`.
async fn forward_auth(http: SocketAddr, jwt: &str) -> Answer {
    match http_get(http, "/", Some(jwt)).await {
        Ok(response) => match response.status {
            200 => Answer::Allow,
            401 => {
                let challenge = response.header("www-authenticate").unwrap_or_default();
                if challenge.contains("revoked") {
                    Answer::Revoked
                } else {
                    Answer::Refused(challenge.to_owned())
                }
            }
            status => Answer::Unavailable(format!("HTTP {status}")),
        },
        Err(error) => Answer::Unavailable(error.to_string()),
    }
}

/// `GET path` with an optional bearer token, over a fresh connection,
/// within [`ANSWER_TIMEOUT`].
async fn http_get(
    address: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> std::io::Result<crate::support::nginx::HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        if let Some(token) = bearer {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
