//! `revoctl`: the operator CLI for a revocd server.
//!
//! Most subcommands make one gRPC call, print the answer (a readable table,
//! or one JSON object with `--json`; `watch` prints one line per frame) and
//! exit 0; any error prints one line starting with `error:` on stderr and
//! exits 1. The bulk subcommands page through `ListRevocations` (`list`,
//! `export`) and `ListChanges` (`audit`), or send `RevokeBatch` calls
//! (`import`, which exits 2 when some lines were rejected).
//!
//! # Layout
//!
//! - `main.rs`: the command line and the one-call subcommands
//! - `rpc.rs`: connecting, the API key, retries, error text
//! - `list.rs`: `list` and `audit`, and the record walk `export` shares
//! - `import.rs`: `import`: batches in flight, results per line, summary
//! - `input.rs`: an import file (CSV or JSON lines) into batches
//! - `export.rs`: `export`
//! - `csv.rs`: the CSV dialect; `timestamp.rs`: times people type
//! - `progress.rs`: `import`'s progress line

mod csv;
mod export;
mod import;
mod input;
mod list;
mod progress;
mod rpc;
mod timestamp;

use std::future::Future;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tonic::{Request, Response, Status};

use revocd::pb::filter_update::Update;
use revocd::pb::{
    CheckRequest, GetStatsRequest, RevokeClaimRequest, RevokeRequest, RevokeSubjectRequest,
    SubscribeRequest,
};
use revocd::time::{format_unix, unix_now_ms};
use revocd::tokens::ISSUER_WIDE;

use rpc::{authorized, connect, describe, Client};

/// Operate a revocd server: revoke tokens and subjects, check tokens, read
/// statistics.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Server address: `http://host:port`, `https://host:port`, or a bare
    /// `host:port`.
    #[arg(
        long,
        env = "REVOCD_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,

    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "REVOCD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,

    /// TLS towards the server (with an `https://` --server).
    #[command(flatten)]
    tls: revocd::tls::ClientTlsArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Revoke one token, by the token itself or by its jti and expiry.
    Revoke(RevokeArgs),
    /// Revoke every token of a subject issued before a time (default: every
    /// token issued up to and including the current second).
    RevokeSubject(RevokeSubjectArgs),
    /// Revoke every token whose CLAIM (`sub`, `sid`, `client_id` or `azp`)
    /// is VALUE, issued before a time (default: every token issued up to
    /// and including the current second).
    RevokeClaim(RevokeClaimArgs),
    /// Revoke every token an issuer signed before a time, as after a leak
    /// of its signing key (needs the `admin` role).
    RevokeIssuer(RevokeIssuerArgs),
    /// Show whether a token is revoked, by jti or by the token itself.
    Status(StatusArgs),
    /// Show the server's counts and version.
    Stats(JsonFlag),
    /// Follow the filter stream live: snapshot size, each delta, cursor, lag.
    Watch(WatchArgs),
    /// List live token revocations and subject cut-offs: who revoked what,
    /// when and why (needs the `read` role).
    ///
    /// A table by default, one JSON object per line with --json. Paging is
    /// stable under concurrent writes: a record live during the whole
    /// listing is shown exactly once.
    List(list::ListArgs),
    /// Show the audit trail: every change, oldest first, with who made it,
    /// from where and why (needs the `read` role).
    ///
    /// One line per change: time, actor, source address, what, reason.
    /// Goes back as far as the server's change log (--log-retention).
    Audit(list::ListArgs),
    /// Revoke many tokens, and restore cut-offs, from a CSV or JSON-lines
    /// file (needs the `revoke` role; issuer-wide cut-offs need `admin`).
    ///
    /// CSV: `jti,expires_at,issuer,reason` per line, fields quoted as in
    /// RFC 4180 (a reason may hold commas and doubled quotes), issuer and
    /// reason optional; a first line starting with `jti` is a header (its
    /// columns may come in any order). JSON lines: one object per line with
    /// those keys, or a cut-off with `claim`, `value`, `not_before`,
    /// `issuer` and `reason` (sent as RevokeClaim; what `export --json`
    /// writes). The first non-blank character decides: `{` means JSON
    /// lines. `expires_at` and `not_before` are unix seconds or an RFC 3339
    /// time; an empty issuer is the server's default. Blank lines are
    /// skipped.
    ///
    /// Lines go in RevokeBatch calls of up to 1,000, several in flight;
    /// calls that fail to reach the server are retried (revocations are
    /// idempotent). A bad line never stops the others. Prints `imported N,
    /// already revoked M, rejected K` and each rejected line's number and
    /// reason on stderr. Exit status: 0 when every line was taken (imported,
    /// already revoked, or already expired), 2 when some were rejected, 1
    /// when the import could not finish.
    Import(import::ImportArgs),
    /// Write the live revocations in a form `import` reads back (needs the
    /// `read` role).
    ///
    /// CSV: the token revocations, columns `jti,expires_at,issuer,reason`
    /// under a header (CSV has no place for cut-offs). `--json`: every live
    /// record, cut-offs included, as JSON lines.
    Export(export::ExportArgs),
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Resume after this cursor (with --generation) instead of starting
    /// with a snapshot.
    #[arg(long, default_value = "")]
    cursor: String,
    /// The generation the cursor belongs to.
    #[arg(long, default_value_t = 0)]
    generation: u64,
    /// Stop after this many frames (default: follow until interrupted).
    #[arg(long)]
    count: Option<usize>,
    /// The name this watcher gives the server.
    #[arg(long, default_value = "revoctl-watch")]
    gateway_id: String,
    #[command(flatten)]
    output: JsonFlag,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The token (JWT) to revoke.
    #[arg(long, conflicts_with_all = ["jti", "expires_at", "issuer"], required_unless_present = "jti")]
    token: Option<String>,
    /// The token's jti.
    #[arg(long, requires = "expires_at")]
    jti: Option<String>,
    /// The token's exp, in unix seconds (with --jti).
    #[arg(long, allow_negative_numbers = true)]
    expires_at: Option<i64>,
    /// The token's issuer (with --jti); default: the server's.
    #[arg(long)]
    issuer: Option<String>,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    output: JsonFlag,
}

#[derive(Debug, Args)]
struct RevokeSubjectArgs {
    /// The subject (`sub` claim).
    subject: String,
    /// Revoke tokens with `iat` before this unix time (a token issued at it
    /// is kept); 0: every token issued up to and including the current
    /// second (a login in that same second must retry after it).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    not_before: i64,
    #[command(flatten)]
    cut: CutArgs,
}

/// What a subject or claim cut-off names besides its value and time.
#[derive(Debug, Args)]
struct CutArgs {
    /// The tokens' issuer; default: the server's.
    #[arg(long, default_value = "")]
    issuer: String,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    output: JsonFlag,
}

#[derive(Debug, Args)]
struct RevokeClaimArgs {
    /// The claim: `sub`, `sid`, `client_id` or `azp`.
    claim: String,
    /// The claim's value.
    value: String,
    /// Revoke tokens with `iat` before this time: `now` (every token issued
    /// up to and including the current second), unix seconds, an RFC 3339
    /// time, or a duration ago (`10m`).
    #[arg(long, default_value = "now", value_parser = timestamp::parse_cutoff)]
    before: i64,
    #[command(flatten)]
    cut: CutArgs,
}

#[derive(Debug, Args)]
struct RevokeIssuerArgs {
    /// The issuer (`iss`) whose tokens to revoke.
    issuer: String,
    /// Revoke tokens with `iat` before this time: `now`, unix seconds, an
    /// RFC 3339 time, or a duration ago (`10m`).
    #[arg(long, value_parser = timestamp::parse_cutoff)]
    before: i64,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    output: JsonFlag,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The token's jti.
    #[arg(required_unless_present = "token", conflicts_with = "token")]
    jti: Option<String>,
    /// The token itself (also finds subject cut-offs).
    #[arg(long)]
    token: Option<String>,
    /// The token's issuer (with a jti); default: the server's.
    #[arg(long, default_value = "", conflicts_with = "token")]
    issuer: String,
    #[command(flatten)]
    output: JsonFlag,
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print JSON instead of a table: one object, or one per line for
    /// lists.
    #[arg(long)]
    json: bool,
}

// Single-threaded: the CLI makes one call at a time, or (`import`) waits on
// a few in flight over one connection while a thread of its own reads the
// file; a current-thread runtime starts faster and spawns no worker threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let tls = cli.tls.client_config().map_err(|e| format!("TLS: {e}"))?;
    let mut client = connect(&cli.server, tls).await?;
    let key = cli.api_key.as_deref();
    match cli.command {
        Command::Revoke(args) => {
            let request = RevokeRequest {
                token: args.token.unwrap_or_default(),
                jti: args.jti.unwrap_or_default(),
                expires_at: args.expires_at.unwrap_or_default(),
                reason: args.reason,
                issuer: args.issuer.unwrap_or_default(),
            };
            let reply = unary(&client, key, request, |mut client, request| async move {
                client.revoke(request).await
            })
            .await?;
            print(
                args.output.json,
                json!({
                    "newly_revoked": reply.newly_revoked,
                    "expires_at": reply.expires_at,
                    "cursor": reply.cursor,
                }),
                &[
                    ("newly revoked", yes_no(reply.newly_revoked)),
                    ("expires at", time_cell(reply.expires_at)),
                    ("cursor", reply.cursor.clone()),
                ],
            );
        }
        Command::RevokeSubject(args) => {
            let request = RevokeSubjectRequest {
                subject: args.subject,
                not_before: args.not_before,
                reason: args.cut.reason,
                issuer: args.cut.issuer,
            };
            let reply = unary(&client, key, request, |mut client, request| async move {
                client.revoke_subject(request).await
            })
            .await?;
            print_cutoff(args.cut.output.json, reply.not_before, &reply.cursor);
        }
        Command::RevokeClaim(args) => {
            let request = RevokeClaimRequest {
                issuer: args.cut.issuer,
                claim: args.claim,
                value: args.value,
                not_before: args.before,
                reason: args.cut.reason,
            };
            revoke_claim(&client, key, request, args.cut.output.json).await?;
        }
        Command::RevokeIssuer(args) => {
            let request = RevokeClaimRequest {
                issuer: args.issuer,
                claim: ISSUER_WIDE.to_owned(),
                value: String::new(),
                not_before: args.before,
                reason: args.reason,
            };
            revoke_claim(&client, key, request, args.output.json).await?;
        }
        Command::Status(args) => {
            let request = CheckRequest {
                jti: args.jti.unwrap_or_default(),
                token: args.token.unwrap_or_default(),
                issuer: args.issuer,
            };
            let r = unary(&client, key, request, |mut client, request| async move {
                client.check(request).await
            })
            .await?;
            print(
                args.output.json,
                json!({
                    "revoked": r.revoked,
                    "revoked_at": r.revoked_at,
                    "expires_at": r.expires_at,
                    "reason": r.reason,
                    "revoked_by": r.revoked_by,
                    "by_subject": r.by_subject,
                    "not_before": r.not_before,
                    "claim": r.claim,
                }),
                &[
                    ("revoked", yes_no(r.revoked)),
                    ("by subject", yes_no(r.by_subject)),
                    ("by claim", r.claim.clone()),
                    ("revoked at", time_cell(r.revoked_at)),
                    ("expires at", time_cell(r.expires_at)),
                    ("not before", time_cell(r.not_before)),
                    ("revoked by", r.revoked_by.clone()),
                    ("reason", r.reason.clone()),
                ],
            );
        }
        Command::Stats(output) => {
            let s = unary(
                &client,
                key,
                GetStatsRequest {},
                |mut client, request| async move { client.get_stats(request).await },
            )
            .await?;
            print(
                output.json,
                json!({
                    "live_revocations": s.live_revocations,
                    "live_subject_cutoffs": s.live_subject_cutoffs,
                    "live_claim_cutoffs": s.live_claim_cutoffs,
                    "store": s.store,
                    "version": s.version,
                    "uptime_seconds": s.uptime_seconds,
                    "filter_generation": s.filter_generation,
                    "filter_bits": s.filter_bits,
                    "subscribers": s.subscribers,
                }),
                &[
                    ("live revocations", s.live_revocations.to_string()),
                    ("live subject cut-offs", s.live_subject_cutoffs.to_string()),
                    ("live claim cut-offs", s.live_claim_cutoffs.to_string()),
                    ("store", s.store.clone()),
                    ("version", s.version.clone()),
                    ("uptime", format!("{} s", s.uptime_seconds)),
                    ("filter generation", s.filter_generation.to_string()),
                    ("filter size", format!("{} bits", s.filter_bits)),
                    ("subscribers", s.subscribers.to_string()),
                ],
            );
        }
        Command::Watch(args) => watch(&mut client, key, args).await?,
        Command::List(args) => list::list(&client, key, args).await?,
        Command::Audit(args) => list::audit(&client, key, args).await?,
        Command::Import(args) => return import::import(&client, key, args).await,
        Command::Export(args) => export::export(&client, key, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes one call, not retried: `message` with the API key, sent through
/// `send` on a handle to `client`'s connection. The reply, or one line
/// saying why not.
async fn unary<M, R, F, Fut>(
    client: &Client,
    key: Option<&str>,
    message: M,
    send: F,
) -> Result<R, String>
where
    F: FnOnce(Client, Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let reply = send(client.clone(), authorized(message, key)?)
        .await
        .map_err(describe)?;
    Ok(reply.into_inner())
}

/// Sends a `RevokeClaim` and prints the cut-off in force.
async fn revoke_claim(
    client: &Client,
    key: Option<&str>,
    request: RevokeClaimRequest,
    json: bool,
) -> Result<(), String> {
    let reply = unary(client, key, request, |mut client, request| async move {
        client.revoke_claim(request).await
    })
    .await?;
    print_cutoff(json, reply.not_before, &reply.cursor);
    Ok(())
}

/// Prints the cut-off in force after a call, and its cursor (empty when an
/// equal or later one was in force already).
fn print_cutoff(json: bool, not_before: i64, cursor: &str) {
    print(
        json,
        json!({ "not_before": not_before, "cursor": cursor }),
        &[
            ("not before", time_cell(not_before)),
            ("cursor", cursor.to_owned()),
        ],
    );
}

/// Prints each frame of the filter stream, one line (or JSON object) each.
async fn watch(client: &mut Client, key: Option<&str>, args: WatchArgs) -> Result<(), String> {
    let request = SubscribeRequest {
        cursor: args.cursor,
        generation: args.generation,
        gateway_id: args.gateway_id,
        protocol: revocd::snapshot::STREAM_PROTOCOL,
    };
    let mut stream = client
        .subscribe(authorized(request, key)?)
        .await
        .map_err(describe)?
        .into_inner();
    let mut seen = 0usize;
    let mut parts = revocd::snapshot::Assembler::default();
    while args.count.is_none_or(|count| seen < count) {
        let Some(frame) = stream.message().await.map_err(describe)? else {
            return Err("the server ended the stream".into());
        };
        seen += 1;
        let mut whole = None;
        let (object, line) = match frame.update {
            Some(Update::Snapshot(s)) => {
                let described = (
                    json!({"type": "snapshot", "generation": s.generation, "part": s.part, "parts": s.parts,
                           "bytes": s.filter.len(), "subjects": s.subjects.len(), "claims": s.claims.len(),
                           "cursor": s.cursor}),
                    format!(
                        "snapshot   generation={} part={}/{} bytes={} subjects={} claims={} cursor={}",
                        s.generation,
                        s.part + 1,
                        s.parts,
                        s.filter.len(),
                        s.subjects.len(),
                        s.claims.len(),
                        s.cursor
                    ),
                );
                whole = parts.push(s).map_err(|e| e.to_string())?;
                described
            }
            Some(Update::Delta(d)) => {
                let digests = d.added_digests().count();
                let opened = d.slices.iter().filter(|s| s.open.is_some()).count();
                (
                    json!({"type": "delta", "digests": digests, "slices": d.slices.len(),
                           "opened": opened, "subjects": d.subjects.len(),
                           "claims": d.claims.len(), "cursor": d.cursor}),
                    format!(
                        "delta      digests={digests} slices={} opened={opened} subjects={} claims={} cursor={}",
                        d.slices.len(),
                        d.subjects.len(),
                        d.claims.len(),
                        d.cursor
                    ),
                )
            }
            Some(Update::Heartbeat(h)) => {
                let lag_ms = unix_now_ms() - h.server_time_ms;
                (
                    json!({"type": "heartbeat", "cursor": h.cursor, "lag_ms": lag_ms}),
                    format!("heartbeat  cursor={} lag={lag_ms}ms", h.cursor),
                )
            }
            None => continue,
        };
        if args.output.json {
            println!("{object}");
        } else {
            println!("{line}");
        }
        if let Some(whole) = whole {
            print_slices(args.output.json, whole.filter.to_vec())?;
        }
    }
    Ok(())
}

/// Prints the slices of a whole snapshot's filter: one line (or one JSON
/// object) each, with the time its revocations are kept until at most.
fn print_slices(as_json: bool, filter: Vec<u8>) -> Result<(), String> {
    let sliced = revocd::filter::SlicedFilter::from_bytes(filter)
        .map_err(|e| format!("the snapshot's filter: {e}"))?;
    let seconds = i64::from(sliced.slice_seconds());
    for (number, slice) in sliced.slices() {
        let filters = slice.filters();
        let bits: u64 = filters.iter().map(|f| f.filter.bits()).sum();
        let capacity: u64 = filters.iter().map(|f| f.capacity).sum();
        let ends_at = (number + 1) * seconds;
        if as_json {
            let object = json!({"type": "slice", "slice": number, "ends_at": ends_at,
                                "filters": filters.len(), "capacity": capacity, "bits": bits});
            println!("{object}");
        } else {
            println!(
                "  slice    {number} until={} filters={} capacity={capacity} bits={bits}",
                time_cell(ends_at),
                filters.len()
            );
        }
    }
    Ok(())
}

fn print(as_json: bool, object: serde_json::Value, rows: &[(&str, String)]) {
    if as_json {
        println!("{object}");
        return;
    }
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{label:<width$}  {value}");
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// Unix seconds for people: `2026-11-28T19:00:00Z (1795892400)`, `-` for 0.
fn time_cell(seconds: i64) -> String {
    if seconds == 0 {
        "-".to_owned()
    } else {
        format!("{} ({seconds})", format_unix(seconds))
    }
}
