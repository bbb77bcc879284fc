//! `revocd`: the revocation server (`serve`) and the gateway sidecar
//! (`agent`).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rand::RngCore;
use tracing::{info, warn};

use revocd::agent::AgentError;
use revocd::config::{AgentConfig, ServeConfig, StartError};
use revocd::server;
use revocd::settings;

/// jemalloc returns freed pages to the system over time; glibc's malloc
/// kept fragmented arenas under the filter streams' churn, so a replica's
/// RSS crept up for the whole of a 10-minute soak (README, Soak).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): freed pages go back to the system after 1 s rather
/// than 10 s, so RSS follows the memory in use through the bursts of
/// snapshots a load sends every gateway. A thin pointer to a C string, as
/// jemalloc's `const char *malloc_conf` expects.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Exit status for an invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// revocd: JWT access-token revocation.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "REVOCD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// `--config` and `--print-config`.
    #[command(flatten)]
    settings: settings::FileArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the revocation API over gRPC (and its HTTP doors).
    Serve(Box<ServeConfig>),
    /// Run the gateway sidecar: forward-auth (nginx, Traefik, Caddy) and
    /// Envoy ext_authz answered from the streamed filter.
    Agent(Box<AgentConfig>),
}

fn main() -> ExitCode {
    let (cli, effective) = match settings::parse::<Cli>(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(settings::Error::Args(error)) => error.exit(),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.settings.print_config {
        print!("{effective}");
        return ExitCode::SUCCESS;
    }
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Serve(config) => runtime.block_on(serve(*config)),
        Command::Agent(config) => runtime.block_on(agent(*config)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(if is_config_error(&error) {
                EXIT_CONFIG
            } else {
                1
            })
        }
    }
}

/// True for mistakes in flags or the files they name, as opposed to a
/// failure of something the process depends on.
fn is_config_error(error: &anyhow::Error) -> bool {
    let start = error.downcast_ref::<StartError>().is_some_and(|e| match e {
        StartError::Store(revocd::store::Error::Unsuitable(_)) => true,
        // A wrong Redis password is a configuration mistake too.
        StartError::Store(error) => error.is_auth_failure(),
        _ => true,
    });
    let agent = error
        .downcast_ref::<AgentError>()
        .is_some_and(|e| !matches!(e, AgentError::Io(_) | AgentError::Transport(_)));
    start || agent
}

async fn agent(config: AgentConfig) -> anyhow::Result<()> {
    let agent = config.start_agent()?;
    let listeners = config
        .bind()
        .await
        .context("binding the agent's addresses")?;
    let servers: Vec<String> = config
        .servers
        .iter()
        .map(|url| revocd::redact::redact(url))
        .collect();
    info!(?servers, on_stale = ?config.on_stale, "agent started");
    revocd::agent::run(agent, listeners, revocd::shutdown::signal()).await?;
    info!("stopped");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "revocd=info".into());
    // Colours only for a person at a terminal, not in files or collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.fmt_fields(revocd::telemetry::LogFields).init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // An unbound secret is only unambiguous with at most one issuer; with
    // several, each needs its own (--jwt-issuer-hs256-secret-file).
    let several_issuers = config.jwt.issuers().len() > 1;
    if config.dev && several_issuers && config.jwt.jwt_hs256_secret_file.is_none() {
        warn!("--dev with several issuers: no HS256 secret is generated; bind one to each issuer with --jwt-issuer-hs256-secret-file");
    }
    let dev_secret = (config.dev && config.jwt.jwt_hs256_secret_file.is_none() && !several_issuers)
        .then(|| {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            hex::encode(secret)
        });
    revocd::telemetry::prometheus();
    let state = config
        .start_state(dev_secret.as_deref().map(str::as_bytes))
        .await?;
    if config.redis_url.is_none() && config.redis_cluster.is_empty() {
        warn!("no --redis-url: revocations live in this process's memory only and are lost when it exits");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    info!(%address, store = state.store.kind(), dev = config.dev, "listening");
    if config.dev {
        print_dev_banner(&config, address, dev_secret.as_deref())?;
    }
    // Metrics end with the process; they need no draining.
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let _stop_metrics = metrics_stop.clone().drop_guard();
    tokio::spawn(revocd::telemetry::upkeep(metrics_stop.clone()));
    if let Some(address) = config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding --metrics-listen {address}"))?;
        info!(%address, "metrics listening");
        tokio::spawn(revocd::telemetry::serve_metrics(metrics, metrics_stop));
    }
    let http = match config.http_listen {
        Some(address) => {
            let http = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding --http-listen {address}"))?;
            info!(address = %http.local_addr()?, "HTTP doors listening");
            Some(http)
        }
        None => None,
    };
    server::run(
        listener,
        http,
        Arc::new(state),
        revocd::shutdown::signal(),
        config.shutdown_grace,
    )
    .await
    .context("serving gRPC")?;
    info!("stopped");
    Ok(())
}

/// Prints what a newcomer needs to try the service: the secret and a token
/// signed with it, and the commands that revoke and check that token.
fn print_dev_banner(
    config: &ServeConfig,
    address: std::net::SocketAddr,
    generated_secret: Option<&str>,
) -> anyhow::Result<()> {
    let secret = match (generated_secret, &config.jwt.jwt_hs256_secret_file) {
        (Some(secret), _) => secret.as_bytes().to_vec(),
        (None, Some(path)) => std::fs::read(path)?.trim_ascii().to_vec(),
        (None, None) => return Ok(()),
    };
    let now = revocd::time::unix_now();
    let mut claims = serde_json::json!({
        "sub": "alice",
        "jti": format!("demo-{now}"),
        "iat": now,
        "exp": now + 3600,
    });
    if !config.jwt.default_issuer().is_empty() {
        claims["iss"] = config.jwt.default_issuer().into();
    }
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret)?,
    )?;
    let scheme = match config.tls.tls_cert {
        Some(_) => "https",
        None => "http",
    };
    let server = format!("{scheme}://{address}");
    println!("revocd is running in --dev mode on {server} (no API keys; loopback only).");
    if let Some(secret) = generated_secret {
        println!("\nDev HS256 secret (tokens signed with it are accepted):\n  {secret}");
    }
    println!("\nA demo token for subject alice, valid for an hour:\n  {token}");
    println!("\nTry, in another terminal:");
    println!("  cargo run --bin revoctl -- --server {server} status --token {token}");
    println!("  cargo run --bin revoctl -- --server {server} revoke --token {token} --reason demo");
    println!("  cargo run --bin revoctl -- --server {server} status --token {token}");
    println!("  cargo run --bin revoctl -- --server {server} revoke-subject alice --reason 'log out everywhere'");
    println!("  cargo run --bin revoctl -- --server {server} stats");
    Ok(())
}
