//! Forward-auth and introspection benchmark: `revocd agent` behind a real
//! nginx, measured with `wrk` next to nginx without auth and next to a
//! check-per-request agent, and the agent's RFC 7662 introspection alone,
//! all in one run.
//!
//! ```text
//! apt-get install -y wrk nginx redis-server
//! cargo build --release --bins --examples
//! cargo run --release --example agent_wrk -- [--seconds 5] [--threads 1] [--connections 64]
//!     [--agent-connections 4] [--nginx-workers 1] [--revocd-bin target/release/revocd]
//! ```
//!
//! # What is measured
//!
//! Six phases, one after another. Each is a 1 s `wrk` warm-up and then a
//! measured `wrk -t<threads> -c<connections> -d<seconds>s --latency` (a
//! closed loop: every connection keeps one request in flight) on loopback
//! with a valid HS256 token: A to D' send `GET /` with `Authorization:
//! Bearer <token>`, E posts the token to introspection; throughput is
//! wrk's `Requests/sec`, p50/p99 its latency distribution.
//!
//! - **A, nginx without auth**: a second `server {}` in the same nginx
//!   proxying to the same application (`upstream revocd_protected_app`)
//!   with the same non-auth `proxy_set_header`s as `revocd-protect.conf`,
//!   and no `auth_request`: nginx's own per-request cost.
//! - **B, nginx + agent**: `deploy/nginx/site.conf` and its two snippets as
//!   shipped (rendered by `tests/support/nginx.rs`), `auth_request` to a
//!   `revocd agent` following the server (default `--on-stale fail-open`,
//!   so every answer comes from the streamed filter in memory).
//! - **C, nginx + check-online agent**: the same site in front of an agent
//!   run with `--on-stale check-online --max-staleness 0s`. Staleness (time
//!   since the last frame, heartbeats every 2 s) is then always over the
//!   limit, so the agent asks the server's `Check` about every request, as
//!   a call to a central introspection endpoint per request would; the
//!   server reads Redis for it.
//! - **D, agent alone**: wrk straight at B's agent's forward-auth port with
//!   `--agent-connections` (4) connections, for the latency target: in a
//!   closed loop, latency is concurrency over throughput (Little's law), so
//!   D uses few connections, enough to pass 50,000 req/s. **D'** repeats it
//!   with `--connections` (64) for the agent's peak throughput.
//! - **E, agent introspection**: wrk straight at the same port of B's agent
//!   (started with `--introspection-keys-file` on the deployment's
//!   `api-keys.toml`), with `--agent-connections` (4) connections as in D:
//!   `POST /oauth2/introspect`, form body `token=<token>`, authenticated as
//!   the `subscribe` key `edge-gateway` with `Authorization: Basic`, as an
//!   API gateway's introspection plugin would. wrk sends it from a Lua
//!   script (`-s`, written to a temporary directory, reading the token from
//!   `$TOKEN`) that sets `wrk.method`, `wrk.body` and `wrk.headers`.
//!
//! Every phase is checked, so a broken setup fails instead of looking fast:
//! before measuring, A, B and C must answer 200 with the upstream's body,
//! B and C must pass the token's subject to the upstream and refuse a
//! request without a token (401), D must answer 200 with the subject, and
//! E must answer 200 with `"active": true` and the subject, and refuse a
//! POST without a key (401); during the runs, wrk must see no non-2xx
//! answer. Around every measured run the agent's
//! `revocd_agent_decisions_total` and Redis's `HGETALL` count (`INFO
//! commandstats`) are read and printed per request: one decision per
//! request in B, C, D and E; no Redis read in B, D and E; in C three
//! `HGETALL`s per request (a `Check` of a whole token reads the jti's
//! record, the subject's cut-off and the issuer-wide one in one pipeline):
//! one `Check` per request really happened. For D and E, the agent's own
//! `revocd_agent_decision_seconds` histogram (token to verdict, inside its
//! handler) shows how much of the latency is the decision itself.
//!
//! Results: the agent's added cost per request, `(1/B - 1/A) / (1/A)` =
//! `A/B - 1` (target <= 25%); the speedup over check-online, `B/C`
//! (target >= 5x); the agent alone, D (targets: at least 50,000 req/s
//! with a p99 of at most 1 ms, in the same run); the agent's introspection,
//! E (targets: at least 20,000 introspections/s with a p99 of at most
//! 1 ms, in the same run), with the agent's CPU per introspection next to
//! its CPU per forward-auth decision in D.
//!
//! # Setup, and what the figures mean on this machine
//!
//! Loopback only; everything is a real process started for the run in its
//! own temporary directory and stopped at the end: `redis-server`, the
//! release `revocd serve` (beside this example's directory:
//! `target/release/revocd`, or `--revocd-bin`), two release `revocd
//! agent`s (B's also answers D, D' and E) and two nginx (one per agent;
//! B's also serves A). nginx runs the configuration
//! `tests/support/nginx.rs` writes (access log on) with
//! `worker_connections` raised to 1024 for the load; the application is a
//! `return 200` server in the same nginx, to which nginx opens a new
//! connection per request (the shipped `upstream` has no `keepalive`), in
//! A as in B.
//!
//! The VM has 2 cores, shared by wrk, nginx, the agent, revocd and Redis,
//! so no figure is of one process alone. The default gives wrk one thread
//! (`-t1`) and nginx one worker (`--nginx-workers 1`): a single-worker
//! nginx is the bottleneck of A and B (about one core), the agent runs on
//! the other core beside wrk, as a sidecar with a core to spare would, and
//! `A/B - 1` is then the extra work `auth_request` makes nginx's worker do
//! per request (its sub-request and the proxying to the agent). It does
//! not count the agent's own CPU, which is why the CPU time of every
//! process is printed too: utime + stime from `/proc/<pid>/stat` (10 ms
//! ticks; wrk's read as it exits) over the measured run, in µs per request,
//! with the machine's busy share from `/proc/stat`. "by CPU" lines compare
//! those: nginx's extra plus the agent's CPU against nginx's own in A, and
//! the whole auth step of B (nginx's extra + agent) against C's (nginx's
//! extra + agent + revocd + Redis). In C the auth side, not nginx, is the
//! bottleneck, on the core nginx leaves; since both B and C also pay
//! nginx's own cost per request, B/C is bounded by (nginx + C's auth step)
//! / (nginx + B's auth step) whatever the agent does. With
//! `--nginx-workers 2` nginx takes both cores and every phase competes for
//! all the CPU (throughput then follows total CPU per request, wrk's
//! included).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::Parser;

// The integration tests' helpers: the deployment's files and tokens, the
// real `revocd serve` and `revocd agent` processes, redis-server, and nginx
// on the deploy site.
#[path = "../tests/support/mod.rs"]
mod support;

// Shared with the benchmarks; this uses `verdict` only.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod bench;

use bench::verdict;
use support::nginx::{self, http_get, http_post, HttpResponse, Nginx, NginxOptions};
use support::{proc_stat, AgentProcess, Deployment, RedisServer, Replica};

/// wrk's warm-up before every measured run.
const WARMUP: Duration = Duration::from_secs(1);
/// The subject of the benchmark's token.
const SUBJECT: &str = "bench-user";
/// Where the agent answers RFC 7662 introspection (phase E).
const INTROSPECT_PATH: &str = "/oauth2/introspect";
/// The deployment's key phase E introspects with (role `subscribe`).
const INTROSPECTION_KEY: &str = "edge-gateway";
/// The content type of an introspection request.
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// `revocd agent` through nginx with wrk, against nginx without auth and
/// against a check-online agent, and its introspection alone.
#[derive(Debug, Parser)]
struct Options {
    /// Measured seconds per phase, after a 1 s warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    seconds: u64,

    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// wrk connections through nginx (`-c`, phases A, B and C) and to the
    /// agent at its peak (D').
    #[arg(long, default_value_t = 64)]
    connections: usize,

    /// wrk connections straight to the agent (`-c`, phases D and E).
    #[arg(long, default_value_t = 4)]
    agent_connections: usize,

    /// nginx `worker_processes`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    nginx_workers: u32,

    /// The `revocd` binary (default: beside this example's directory, i.e.
    /// `target/release/revocd` for a release build).
    #[arg(long)]
    revocd_bin: Option<PathBuf>,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(
        options.threads >= 1
            && options.connections >= options.threads
            && options.agent_connections >= options.threads,
        "need at least one thread and at least as many connections as threads"
    );
    let binary = options
        .revocd_bin
        .clone()
        .unwrap_or_else(|| support::binary("revocd"));
    ensure!(
        binary.is_file(),
        "{} not found: run `cargo build --release --bins --examples` first",
        binary.display()
    );
    let wrk_version = Command::new("wrk")
        .arg("--version")
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let wrk_version = String::from_utf8_lossy(&wrk_version.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&wrk_version.stderr).lines())
        .find(|line| line.starts_with("wrk"))
        .map(|line| line.split(" Copyright").next().unwrap_or(line).to_owned())
        .unwrap_or_else(|| "wrk (unknown version)".into());
    let nginx_version = Command::new(nginx::binary())
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();

    // Processes, stopped in reverse order when dropped.
    let redis = RedisServer::start();
    let deployment = Deployment::new();
    let server_args = deployment.args(&["--redis-url", &redis.url()]);
    let server = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(Replica::spawn_with(&binary, &server_args));
    let secret = deployment.path("secret");
    let hs256 = ["--jwt-hs256-secret-file", secret.to_str().context("path")?];
    let check_online = ["--on-stale", "check-online", "--max-staleness", "0s"];
    let keys = deployment.path("api-keys.toml");
    let introspection_keys = ["--introspection-keys-file", keys.to_str().context("path")?];
    let agent = |extra: &[&str]| {
        AgentProcess::spawn_with(&binary, &deployment.agent_args(server.address, extra))
    };
    let filter_agent = agent(&[&hs256[..], &introspection_keys[..]].concat());
    let online_agent = agent(&[&hs256[..], &check_online[..]].concat());
    // Room for the benchmark's connections (clients, the application's both
    // ends, the agent); B's nginx also serves A.
    let nginx_options = NginxOptions {
        workers: options.nginx_workers,
        worker_connections: 1024,
        without_auth: true,
    };
    let nginx_b = Nginx::start_with(filter_agent.http, nginx_options);
    let nginx_c = Nginx::start_with(
        online_agent.http,
        NginxOptions {
            without_auth: false,
            ..nginx_options
        },
    );

    let token = support::token_for(SUBJECT, &format!("bench-{}", std::process::id()));
    let introspection = Introspection::write()?;
    let (many, few) = (options.connections, options.agent_connections);
    let (filter, online) = (Some(&filter_agent), Some(&online_agent));
    let phases = [
        Phase::new("A nginx, no auth", many, Some(&nginx_b), None)?,
        Phase::new("B nginx + agent", many, Some(&nginx_b), filter)?,
        Phase::new("C nginx + check-online", many, Some(&nginx_c), online)?,
        Phase::new("D agent alone", few, None, filter)?,
        Phase::new("D' agent alone, peak", many, None, filter)?,
        Phase::introspection("E agent introspection", few, &filter_agent, &introspection),
    ];
    for phase in &phases {
        phase.sanity_check(&token)?;
    }

    let ticks_per_second = clock_ticks();
    let mut results = Vec::new();
    for phase in &phases {
        let processes = Processes {
            nginx: phase.nginx.map(Nginx::pids).unwrap_or_default(),
            agent: phase.agent.and_then(AgentProcess::pid),
            revocd: server.pid(),
            redis: redis.pid().context("redis-server's pid")?,
        };
        run_wrk(&options, phase, &token, WARMUP)?;
        let counters_before = phase.agent.map(Counters::read);
        let hgetall_before = hgetall_calls(&redis)?;
        let cpu_before = processes.sample()?;
        let wrk = run_wrk(
            &options,
            phase,
            &token,
            Duration::from_secs(options.seconds),
        )?;
        let cpu_after = processes.sample()?;
        let hgetall = hgetall_calls(&redis)? - hgetall_before;
        let counters = match (phase.agent, counters_before) {
            (Some(agent), Some(before)) => Some(Counters::read(agent).minus(before)),
            _ => None,
        };
        ensure!(
            wrk.non_2xx == 0,
            "{}: wrk saw {} non-2xx answers:\n{}",
            phase.name,
            wrk.non_2xx,
            wrk.raw
        );
        let mut cpu = cpu_after.minus(&cpu_before, ticks_per_second);
        cpu.wrk = wrk.cpu_ticks.map(|ticks| ticks as f64 / ticks_per_second);
        results.push(Measured {
            connections: phase.connections,
            wrk,
            cpu,
            counters,
            hgetall,
        });
    }

    print_setup(
        &options,
        &server,
        &wrk_version,
        &nginx_version,
        &token,
        &introspection,
        &phases,
    );
    print_table(&phases, &results);
    print_verdicts(&results, options.nginx_workers)
}

/// An agent's counters at one moment (or their change over a run).
#[derive(Clone, Copy, Default)]
struct Counters {
    /// Decisions made.
    decisions: f64,
    /// Decisions timed by `revocd_agent_decision_seconds` (from the token
    /// header to the verdict, inside the agent's handler).
    timed: f64,
    /// Of those, how many took at most 100 µs.
    within_100us: f64,
    /// ... and at most 1 ms.
    within_1ms: f64,
}

impl Counters {
    /// The agent's decision counters and decision-time histogram.
    fn read(agent: &AgentProcess) -> Counters {
        let text = agent.metrics_text();
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter(|line| line.starts_with(prefix))
                .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
                .sum()
        };
        Counters {
            decisions: sum("revocd_agent_decisions_total"),
            timed: sum("revocd_agent_decision_seconds_count "),
            within_100us: sum("revocd_agent_decision_seconds_bucket{le=\"0.0001\"}"),
            within_1ms: sum("revocd_agent_decision_seconds_bucket{le=\"0.001\"}"),
        }
    }

    fn minus(self, before: Counters) -> Counters {
        Counters {
            decisions: self.decisions - before.decisions,
            timed: self.timed - before.timed,
            within_100us: self.within_100us - before.within_100us,
            within_1ms: self.within_1ms - before.within_1ms,
        }
    }
}

/// What phase E sends: the key's `Authorization` and the wrk script that
/// posts the token (`$TOKEN`) with it.
struct Introspection {
    /// `Basic base64(name:key)` of [`INTROSPECTION_KEY`].
    authorization: String,
    /// The wrk Lua script, in `_dir`.
    script: PathBuf,
    _dir: tempfile::TempDir,
}

impl Introspection {
    /// Writes the script to a fresh temp dir, with the deployment's key
    /// [`INTROSPECTION_KEY`].
    fn write() -> Result<Self> {
        let (name, key, _) = support::KEYS
            .iter()
            .find(|(name, ..)| *name == INTROSPECTION_KEY)
            .context("the introspection key is not in the deployment")?;
        let authorization = format!("Basic {}", STANDARD.encode(format!("{name}:{key}")));
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("introspect.lua");
        std::fs::write(&script, Self::script_text(&authorization))?;
        Ok(Introspection {
            authorization,
            script,
            _dir: dir,
        })
    }

    /// The script: wrk then sends the same request on every connection.
    fn script_text(authorization: &str) -> String {
        let (content_type, form) = FORM;
        format!(
            "-- agent_wrk, phase E: RFC 7662 introspection of $TOKEN\n\
             wrk.method = \"POST\"\n\
             wrk.body = \"token=\" .. os.getenv(\"TOKEN\")\n\
             wrk.headers[\"{content_type}\"] = \"{form}\"\n\
             wrk.headers[\"Authorization\"] = \"{authorization}\"\n"
        )
    }
}

/// What a phase's requests are.
#[derive(Clone, Copy)]
enum Door<'a> {
    /// `GET /` with `Authorization: Bearer <token>`: forward-auth, through
    /// nginx or straight to the agent.
    ForwardAuth,
    /// `POST /oauth2/introspect` with the token in the form, straight to
    /// the agent, as the script sends it.
    Introspection(&'a Introspection),
}

/// One benchmark phase.
struct Phase<'a> {
    name: &'static str,
    /// Where wrk sends its requests.
    address: SocketAddr,
    connections: usize,
    nginx: Option<&'a Nginx>,
    agent: Option<&'a AgentProcess>,
    door: Door<'a>,
}

impl<'a> Phase<'a> {
    /// A forward-auth phase through `nginx` (to its server without auth if
    /// there is no `agent`), or straight to `agent`.
    fn new(
        name: &'static str,
        connections: usize,
        nginx: Option<&'a Nginx>,
        agent: Option<&'a AgentProcess>,
    ) -> Result<Self> {
        let address = match (nginx, agent) {
            (Some(nginx), Some(_)) => nginx.address(),
            (Some(nginx), None) => nginx.without_auth().context("the no-auth server")?,
            (None, Some(agent)) => agent.http,
            (None, None) => bail!("{name}: neither nginx nor an agent"),
        };
        Ok(Phase {
            name,
            address,
            connections,
            nginx,
            agent,
            door: Door::ForwardAuth,
        })
    }

    /// An introspection phase straight to `agent`.
    fn introspection(
        name: &'static str,
        connections: usize,
        agent: &'a AgentProcess,
        introspection: &'a Introspection,
    ) -> Self {
        Phase {
            name,
            address: agent.http,
            connections,
            nginx: None,
            agent: Some(agent),
            door: Door::Introspection(introspection),
        }
    }

    fn url(&self) -> String {
        let path = match self.door {
            Door::ForwardAuth => "/",
            Door::Introspection(_) => INTROSPECT_PATH,
        };
        format!("http://{}{path}", self.address)
    }

    /// The answers the phase is meant to give, before it is measured.
    fn sanity_check(&self, token: &str) -> Result<()> {
        match self.door {
            Door::ForwardAuth => self.check_forward_auth(token),
            Door::Introspection(introspection) => {
                self.check_introspection(token, &introspection.authorization)
            }
        }
    }

    /// 200 (with the upstream's body through nginx, and the subject when
    /// an agent decides), and 401 without a token when an agent decides.
    fn check_forward_auth(&self, token: &str) -> Result<()> {
        let bearer = format!("Bearer {token}");
        let get = |headers: &[(&str, &str)]| -> Result<HttpResponse> {
            http_get(self.address, "/", headers).with_context(|| format!("{}: GET /", self.name))
        };
        let answer = get(&[("Authorization", &bearer)])?;
        ensure!(answer.status == 200, "{}: {answer:?}", self.name);
        if self.nginx.is_some() {
            ensure!(
                answer.body == "upstream ok\n",
                "{}: not the upstream: {answer:?}",
                self.name
            );
        }
        if self.agent.is_some() {
            let subject = match self.nginx {
                Some(_) => answer.header("x-seen-auth-subject"),
                None => answer.header("x-auth-subject"),
            };
            ensure!(
                subject == Some(SUBJECT),
                "{}: the token's subject did not come through: {answer:?}",
                self.name
            );
            let refused = get(&[])?;
            ensure!(
                refused.status == 401,
                "{}: a request without a token was not refused: {refused:?}",
                self.name
            );
        }
        Ok(())
    }

    /// 200 with `"active": true` and the subject for the key's
    /// `authorization`, and 401 without a key.
    fn check_introspection(&self, token: &str, authorization: &str) -> Result<()> {
        let body = format!("token={token}");
        let post = |headers: &[(&str, &str)]| -> Result<HttpResponse> {
            http_post(self.address, INTROSPECT_PATH, headers, body.as_bytes())
                .with_context(|| format!("{}: POST {INTROSPECT_PATH}", self.name))
        };
        let answer = post(&[FORM, ("Authorization", authorization)])?;
        ensure!(answer.status == 200, "{}: {answer:?}", self.name);
        let json: serde_json::Value = serde_json::from_str(&answer.body)
            .with_context(|| format!("{}: not JSON: {answer:?}", self.name))?;
        ensure!(
            json["active"] == true && json["sub"] == SUBJECT,
            "{}: the token is not active for its subject: {answer:?}",
            self.name
        );
        let refused = post(&[FORM])?;
        ensure!(
            refused.status == 401,
            "{}: a request without a key was not refused: {refused:?}",
            self.name
        );
        Ok(())
    }
}

/// What one wrk run reported.
struct Wrk {
    requests: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    socket_errors: Option<String>,
    raw: String,
    /// utime + stime of the wrk process, if it could be read.
    cpu_ticks: Option<u64>,
}

/// `wrk` on the phase's URL for `duration`, with the token (in the
/// `Authorization` header, and as `$TOKEN` for the script).
fn run_wrk(options: &Options, phase: &Phase, token: &str, duration: Duration) -> Result<Wrk> {
    let args = wrk_args(options, phase, &format!("Bearer {token}"), duration);
    let mut child = Command::new("wrk")
        .args(&args)
        .env("TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running wrk")?;
    let pid = child.id();
    let mut raw = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut raw)?;
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)?;
    }
    // Its CPU time, read while it is a zombie (exited, not yet reaped).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut cpu_ticks = None;
    while Instant::now() < deadline {
        let state = proc_stat(pid).and_then(|fields| fields.first().cloned());
        if state.as_deref() == Some("Z") {
            cpu_ticks = process_ticks(pid).ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = child.wait()?;
    ensure!(status.success(), "wrk failed ({status}): {raw}{stderr}");
    let mut wrk = parse_wrk(&raw).with_context(|| format!("parsing wrk's output:\n{raw}"))?;
    wrk.cpu_ticks = cpu_ticks;
    Ok(wrk)
}

/// wrk's arguments for the phase: forward-auth with `Authorization:
/// <bearer>`, introspection with the script.
fn wrk_args(options: &Options, phase: &Phase, bearer: &str, duration: Duration) -> Vec<String> {
    let mut args = vec![
        format!("-t{}", options.threads),
        format!("-c{}", phase.connections),
        format!("-d{}s", duration.as_secs()),
        "--latency".into(),
    ];
    match phase.door {
        Door::ForwardAuth => args.extend(["-H".into(), format!("Authorization: {bearer}")]),
        Door::Introspection(introspection) => {
            args.extend(["-s".into(), introspection.script.display().to_string()]);
        }
    }
    args.push(phase.url());
    args
}

fn parse_wrk(raw: &str) -> Result<Wrk> {
    let mut requests = None;
    let mut requests_per_second = None;
    let mut p50_ms = None;
    let mut p99_ms = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in raw.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_second = Some(rest.trim().parse::<f64>()?);
        } else if let Some(rest) = line.strip_prefix("50%") {
            p50_ms = Some(wrk_millis(rest.trim())?);
        } else if let Some(rest) = line.strip_prefix("99%") {
            p99_ms = Some(wrk_millis(rest.trim())?);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = rest.trim().parse()?;
        } else if line.starts_with("Socket errors:") {
            socket_errors = Some(line.to_owned());
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(count.trim().parse::<f64>()?);
        }
    }
    Ok(Wrk {
        requests: requests.context("no request count")?,
        requests_per_second: requests_per_second.context("no Requests/sec")?,
        p50_ms: p50_ms.context("no 50% latency")?,
        p99_ms: p99_ms.context("no 99% latency")?,
        non_2xx,
        socket_errors,
        raw: raw.to_owned(),
        cpu_ticks: None,
    })
}

/// wrk's `123.45us` / `1.23ms` / `1.01s` / `2.00m` as milliseconds.
fn wrk_millis(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        other => bail!("unknown unit {other:?}"),
    })
}

/// `INFO commandstats`'s `HGETALL` call count.
fn hgetall_calls(redis: &RedisServer) -> Result<f64> {
    let mut connection = redis.connection();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)?;
    Ok(info
        .lines()
        .find_map(|line| {
            let calls = line.strip_prefix("cmdstat_hgetall:calls=")?;
            calls.split(',').next()?.parse().ok()
        })
        .unwrap_or(0.0))
}

/// The pids whose CPU time is sampled in a phase.
struct Processes {
    nginx: Vec<u32>,
    agent: Option<u32>,
    revocd: u32,
    redis: u32,
}

/// CPU ticks used so far, per process group, and the machine's busy and
/// total ticks.
struct CpuSample {
    nginx: u64,
    agent: u64,
    revocd: u64,
    redis: u64,
    machine_busy: u64,
    machine_total: u64,
}

/// CPU seconds used during a run.
struct CpuUse {
    /// The measured wrk run's own (filled in after the run).
    wrk: Option<f64>,
    nginx: f64,
    agent: f64,
    revocd: f64,
    redis: f64,
    /// Busy share of all cores.
    machine_busy: f64,
}

impl Processes {
    fn sample(&self) -> Result<CpuSample> {
        let (machine_busy, machine_total) = machine_ticks()?;
        let mut nginx = 0;
        for &pid in &self.nginx {
            nginx += process_ticks(pid)?;
        }
        Ok(CpuSample {
            nginx,
            agent: self.agent.map(process_ticks).transpose()?.unwrap_or(0),
            revocd: process_ticks(self.revocd)?,
            redis: process_ticks(self.redis)?,
            machine_busy,
            machine_total,
        })
    }
}

impl CpuSample {
    fn minus(&self, before: &CpuSample, ticks_per_second: f64) -> CpuUse {
        let seconds =
            |after: u64, before: u64| after.saturating_sub(before) as f64 / ticks_per_second;
        let total = self
            .machine_total
            .saturating_sub(before.machine_total)
            .max(1) as f64;
        CpuUse {
            wrk: None,
            nginx: seconds(self.nginx, before.nginx),
            agent: seconds(self.agent, before.agent),
            revocd: seconds(self.revocd, before.revocd),
            redis: seconds(self.redis, before.redis),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy) as f64 / total,
        }
    }
}

/// utime + stime of `pid` (all its threads), in clock ticks.
fn process_ticks(pid: u32) -> Result<u64> {
    // The 14th and 15th fields of the whole line.
    let fields = proc_stat(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// The machine's (busy, total) ticks over all cores, from `/proc/stat`.
fn machine_ticks() -> Result<(u64, u64)> {
    let file = std::fs::File::open("/proc/stat")?;
    let mut line = String::new();
    BufReader::new(file).read_line(&mut line)?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(values.len() >= 5, "unexpected /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values[4];
    Ok((total - idle, total))
}

/// `getconf CLK_TCK`, 100 if it cannot be asked.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One phase's figures.
struct Measured {
    connections: usize,
    wrk: Wrk,
    cpu: CpuUse,
    counters: Option<Counters>,
    hgetall: f64,
}

impl Measured {
    /// CPU microseconds per request.
    fn per_request(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.wrk.requests
    }
}

fn print_setup(
    options: &Options,
    server: &Replica,
    wrk_version: &str,
    nginx_version: &str,
    token: &str,
    introspection: &Introspection,
    phases: &[Phase],
) {
    let args: Vec<String> = std::env::args().collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("command:  {}", args.join(" "));
    println!(
        "machine:  {cores} cores, shared by wrk, nginx, the agent, revocd and redis-server (all on loopback)"
    );
    println!("tools:    {wrk_version}; {nginx_version}, deploy/nginx/site.conf as shipped");
    println!("server:   revocd {}", server.args.join(" "));
    if let Some(agent) = phases[1].agent {
        println!("agent B/D/E: revocd {}", agent.args.join(" "));
    }
    if let Some(agent) = phases[2].agent {
        println!("agent C:  revocd {}", agent.args.join(" "));
    }
    println!(
        "load:     {} s measured after a {} s warm-up per phase; wrk -t{}, nginx worker_processes {}",
        options.seconds,
        WARMUP.as_secs(),
        options.threads,
        options.nginx_workers,
    );
    println!("export TOKEN={token}");
    for phase in phases {
        let args = wrk_args(
            options,
            phase,
            "Bearer $TOKEN",
            Duration::from_secs(options.seconds),
        );
        let quoted: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.clone()
                }
            })
            .collect();
        println!("  {:<24} wrk {}", phase.name, quoted.join(" "));
    }
    println!("{}:", introspection.script.display());
    let script = Introspection::script_text(&introspection.authorization);
    for line in script.lines() {
        println!("  {line}");
    }
    println!();
}

fn print_table(phases: &[Phase], results: &[Measured]) {
    println!(
        "{:<22} {:>3} {:>7} {:>7} {:>7} | {:>5} {:>5} {:>5} {:>6} {:>5} {:>5} {:>4} | {:>5} {:>5}",
        "phase",
        "-c",
        "req/s",
        "p50",
        "p99",
        "wrk",
        "nginx",
        "agent",
        "revocd",
        "redis",
        "sum",
        "busy",
        "decis",
        "HGET",
    );
    println!(
        "{:<22} {:>3} {:>7} {:>7} {:>7} | {:<41} | {:<11}",
        "", "", "", "ms", "ms", "CPU µs per request; machine busy %", "per request"
    );
    for (phase, result) in phases.iter().zip(results) {
        let cpu = &result.cpu;
        let per = |seconds: Option<f64>| {
            seconds.map_or("-".into(), |s| format!("{:.1}", result.per_request(s)))
        };
        let sum = cpu
            .wrk
            .map(|wrk| wrk + cpu.nginx + cpu.agent + cpu.revocd + cpu.redis);
        let decisions = result.counters.map_or("-".into(), |c| {
            format!("{:.3}", c.decisions / result.wrk.requests)
        });
        let mut line = format!(
            "{:<22} {:>3} {:>7.0} {:>7.3} {:>7.3} | {:>5} {:>5} {:>5} {:>6} {:>5} {:>5} {:>4.0} | {:>5} {:>5.3}",
            phase.name,
            phase.connections,
            result.wrk.requests_per_second,
            result.wrk.p50_ms,
            result.wrk.p99_ms,
            per(cpu.wrk),
            per(phase.nginx.map(|_| cpu.nginx)),
            per(phase.agent.map(|_| cpu.agent)),
            per(Some(cpu.revocd)),
            per(Some(cpu.redis)),
            per(sum),
            cpu.machine_busy * 100.0,
            decisions,
            result.hgetall / result.wrk.requests,
        );
        if let Some(errors) = &result.wrk.socket_errors {
            let _ = write!(line, "  ({errors})");
        }
        println!("{line}");
    }
    println!();
}

// The targets, checked by `print_verdicts`.
/// Most added cost per request, as a share of nginx's own (A/B - 1).
const ADDED_COST_TARGET: f64 = 0.25;
/// Least speedup of the agent over check-online (B/C).
const SPEEDUP_TARGET: f64 = 5.0;
/// Least throughput of the agent alone (D), requests per second.
const ALONE_RPS_TARGET: f64 = 50_000.0;
/// Largest p99 of the agent alone (D), milliseconds.
const ALONE_P99_TARGET_MS: f64 = 1.0;
/// Least throughput of the agent's introspection (E), per second.
const INTROSPECTION_RPS_TARGET: f64 = 20_000.0;
/// Largest p99 of the agent's introspection (E), milliseconds.
const INTROSPECTION_P99_TARGET_MS: f64 = 1.0;

fn print_verdicts(results: &[Measured], nginx_workers: u32) -> Result<()> {
    let [a, b, c, d, peak, e] = results else {
        bail!("six phases expected");
    };
    let rps = |m: &Measured| m.wrk.requests_per_second;
    let added = rps(a) / rps(b) - 1.0;
    println!(
        "added cost per request, (1/B - 1/A) / (1/A): {:>6.1}%   target <= {:.0}%: {}",
        added * 100.0,
        ADDED_COST_TARGET * 100.0,
        verdict(added <= ADDED_COST_TARGET)
    );
    let bottleneck = if nginx_workers == 1 {
        ": nginx's one worker is the bottleneck (~1 core), the agent runs beside it"
    } else {
        ""
    };
    println!(
        "  wall time per request {:.1} µs -> {:.1} µs{bottleneck}",
        1e6 / rps(a),
        1e6 / rps(b)
    );
    let nginx_a = a.per_request(a.cpu.nginx);
    let nginx_b = b.per_request(b.cpu.nginx);
    let agent_b = b.per_request(b.cpu.agent);
    println!(
        "  by CPU: nginx {nginx_a:.1} µs in A; nginx {nginx_b:.1} + agent {agent_b:.1} µs in B = +{:.0}% of nginx's own",
        (nginx_b + agent_b - nginx_a) / nginx_a * 100.0
    );
    let speedup = rps(b) / rps(c);
    println!(
        "speedup over check-online, B/C:              {:>6.1}x   target >= {:.0}x: {}",
        speedup,
        SPEEDUP_TARGET,
        verdict(speedup >= SPEEDUP_TARGET)
    );
    let auth_b = nginx_b - nginx_a + agent_b;
    let auth_c = c.per_request(c.cpu.nginx) - nginx_a
        + c.per_request(c.cpu.agent)
        + c.per_request(c.cpu.revocd)
        + c.per_request(c.cpu.redis);
    println!(
        "  by CPU, the auth step alone (nginx's extra + agent [+ revocd + redis]): {auth_b:.1} µs in B, {auth_c:.1} µs in C = {:.1}x",
        auth_c / auth_b
    );
    println!(
        "  one Check per request in C: {:.3} HGETALLs per request (a token's Check reads 3), {:.3} in B",
        c.hgetall / c.wrk.requests,
        b.hgetall / b.wrk.requests
    );
    print_rate_verdicts("agent alone, D:", d, ALONE_RPS_TARGET, ALONE_P99_TARGET_MS);
    print_decision_time("D", d);
    println!(
        "  at {} connections (D'): {:.0}/s, p99 {:.3} ms",
        peak.connections,
        rps(peak),
        peak.wrk.p99_ms
    );
    print_rate_verdicts(
        "agent introspection, E:",
        e,
        INTROSPECTION_RPS_TARGET,
        INTROSPECTION_P99_TARGET_MS,
    );
    print_decision_time("E", e);
    let (agent_d, agent_e) = (d.per_request(d.cpu.agent), e.per_request(e.cpu.agent));
    println!(
        "  by CPU: agent {agent_e:.1} µs per introspection in E, {agent_d:.1} µs per forward-auth decision in D ({:+.1} µs; E also checks the key, reads the form and writes JSON)",
        agent_e - agent_d
    );
    Ok(())
}

/// The throughput and p99 of a phase straight at the agent against their
/// targets.
fn print_rate_verdicts(label: &str, measured: &Measured, rps_target: f64, p99_target_ms: f64) {
    let (rate, p99) = (measured.wrk.requests_per_second, measured.wrk.p99_ms);
    println!(
        "{label:<45}{rate:>6.0}/s   target >= {rps_target:.0}/s: {}",
        verdict(rate >= rps_target)
    );
    println!(
        "{:<40}p99 {p99:>6.3} ms   target <= {p99_target_ms:.0} ms: {}",
        "",
        verdict(p99 <= p99_target_ms)
    );
}

/// The agent's own decision time in `phase` (its histogram, from the token
/// to the verdict inside its handler), if it timed any decision.
fn print_decision_time(phase: &str, measured: &Measured) {
    if let Some(counters) = measured.counters.filter(|c| c.timed > 0.0) {
        println!(
            "  the agent's own decision time in {phase} (its histogram, token to verdict): {:.2}% <= 100 µs, {:.3}% <= 1 ms",
            counters.within_100us / counters.timed * 100.0,
            counters.within_1ms / counters.timed * 100.0
        );
    }
}
