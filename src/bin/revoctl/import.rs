//! `import`: revoke the tokens a file lists, in `RevokeBatch` calls, and
//! restore its cut-offs, one `RevokeClaim` call each.
//!
//! A reader thread turns the file into batches ([`crate::input`]); this
//! side keeps up to `--concurrency` batches in flight on one HTTP/2
//! connection, maps every item's result back to its line, and sums up.
//! A batch that fails for a connection-class reason is sent again (see
//! [`crate::rpc::RETRY_SCHEDULE`]): revocations are idempotent, so a batch
//! the server did store before the failure is answered "already revoked"
//! the second time. Items the server refuses for the key's quota
//! (`RESOURCE_EXHAUSTED`: revocations per second, live revocations) are sent
//! again after a pause for as long as it keeps taking some. A line counts
//! as taken only once its batch was acknowledged. A cut-off the server
//! refuses (e.g. issuer-wide without the `admin` role) rejects its line.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use revocd::pb::{
    RevokeBatchRequest, RevokeBatchResult, RevokeClaimRequest, RevokeRequest, RevokeResponse,
};

use crate::input::{self, Batch, BatchLimits, Chunk};

use crate::progress::{grouped, Progress};
use crate::rpc::{self, describe, retried, warn_retry, Client, RETRY_SCHEDULE};

/// Room left under the server's request limit for gRPC's own framing.
const REQUEST_MARGIN_BYTES: usize = 1_024;
/// Rejected lines named one by one in the summary; the rest are counted.
const MAX_LISTED: usize = 100;
/// Exit status when some lines were rejected.
const EXIT_REJECTED: u8 = 2;
/// Read buffer: large reads keep the reader thread cheap.
const READ_BUFFER_BYTES: usize = 1 << 16;

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: CSV or JSON lines (see above); `-` reads stdin.
    file: String,
    /// RevokeBatch calls in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Revocations per RevokeBatch call (1 to 1,000; fewer when a call
    /// would pass the server's 64 KiB request limit).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u16).range(1..=1_000))]
    batch_size: u16,
    /// Show no progress on stderr.
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as one JSON object on stdout instead of text on
    /// stderr.
    #[arg(long)]
    json: bool,
}

/// Imports the file: 0 when every line was taken, 2 when some were
/// rejected.
///
/// # Errors
/// The file cannot be opened or read, its header cannot be read, or a
/// batch failed for good (after retries, or refused as a whole, e.g.
/// without the `revoke` role). What was acknowledged before is summed up
/// on stderr first.
pub async fn import(
    client: &Client,
    key: Option<&str>,
    args: ImportArgs,
) -> Result<ExitCode, String> {
    let (input, size) = open(&args.file)?;
    let limits = BatchLimits {
        items: usize::from(args.batch_size),
        bytes: revocd::server::MAX_REQUEST_BYTES - REQUEST_MARGIN_BYTES,
    };
    let concurrency = usize::from(args.concurrency);
    let (sender, mut chunks) = mpsc::channel(concurrency);
    std::thread::Builder::new()
        .name("import-reader".into())
        .spawn(move || input::read_batches(input, limits, sender))
        .map_err(|e| format!("starting the reader thread: {e}"))?;

    let mut progress = Progress::new(!args.no_progress, size);
    let mut summary = Summary::default();
    let mut in_flight = JoinSet::new();
    let mut input_done = false;
    let failure = loop {
        tokio::select! {
            chunk = chunks.recv(), if !input_done && in_flight.len() < concurrency => match chunk {
                None => input_done = true,
                Some(Err(error)) => break Some(error),
                Some(Ok(Chunk { batch, cutoffs, rejected, lines_read, bytes_read })) => {
                    for (line, reason) in rejected {
                        summary.reject(line, reason);
                    }
                    progress.read(lines_read, bytes_read);
                    if !batch.items.is_empty() {
                        let key = key.map(str::to_owned);
                        in_flight.spawn(send(client.clone(), key, batch));
                    }
                    if !cutoffs.is_empty() {
                        let key = key.map(str::to_owned);
                        in_flight.spawn(send_cutoffs(client.clone(), key, cutoffs));
                    }
                }
            },
            Some(sent) = in_flight.join_next(), if !in_flight.is_empty() => {
                let outcome = sent
                    .map_err(|e| format!("internal error: {e}"))
                    .and_then(|sent| sent)
                    .and_then(|(lines, results)| summary.record(&lines, results));
                if let Err(error) = outcome {
                    break Some(error);
                }
                progress.taken(summary.taken());
            },
            else => break None,
        }
    };
    progress.clear();
    match failure {
        Some(error) => {
            // Batches still in flight are abandoned (dropping the set
            // aborts them): their lines are not counted as taken.
            drop(in_flight);
            if summary.taken() > 0 || summary.rejected > 0 {
                eprint!("{}", summary.text());
            }
            let advice = if summary.taken() > 0 {
                "; importing the file again is safe"
            } else {
                "; nothing was imported"
            };
            Err(format!("{error}{advice}"))
        }
        None if args.json => {
            println!("{}", summary.json());
            Ok(summary.exit_code())
        }
        None => {
            eprint!("{}", summary.text());
            Ok(summary.exit_code())
        }
    }
}

/// The input and its size (known for a regular file).
fn open(path: &str) -> Result<(Box<dyn BufRead + Send>, Option<u64>), String> {
    if path == "-" {
        let stdin = BufReader::with_capacity(READ_BUFFER_BYTES, io::stdin());
        return Ok((Box::new(stdin), None));
    }
    let file = File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let size = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    Ok((
        Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, file)),
        size,
    ))
}

/// Sends one batch; returns the lines of its items and one result per
/// item.
///
/// A call that fails for a connection-class reason is sent again (see
/// [`with_retry`]). Items refused with `RESOURCE_EXHAUSTED` (the key's
/// quota: revocations per second, or live revocations) are sent again
/// after a pause for as long as the server keeps taking some of them; once
/// a whole [`RETRY_SCHEDULE`] passes without any taken, the refusals stand.
async fn send(
    client: Client,
    key: Option<String>,
    batch: Batch,
) -> Result<(Vec<u64>, Vec<RevokeBatchResult>), String> {
    let first_line = batch.lines[0];
    let mut results = vec![RevokeBatchResult::default(); batch.items.len()];
    let mut pending: Vec<usize> = (0..batch.items.len()).collect();
    let mut stalls = RETRY_SCHEDULE.iter();
    while !pending.is_empty() {
        let items = pending.iter().map(|&i| batch.items[i].clone()).collect();
        let replies = call(&client, key.as_deref(), items, first_line).await?;
        if replies.len() != pending.len() {
            return Err(format!(
                "the server answered {} results for a batch of {} (the batch from line {first_line})",
                replies.len(),
                pending.len(),
            ));
        }
        let before = pending.len();
        let mut refused = Vec::new();
        for (i, result) in pending.drain(..).zip(replies) {
            if result.code == tonic::Code::ResourceExhausted as i32 {
                refused.push(i);
            }
            results[i] = result;
        }
        if refused.len() < before {
            stalls = RETRY_SCHEDULE.iter();
        }
        let Some(&wait) = stalls.next().filter(|_| !refused.is_empty()) else {
            break;
        };
        if refused.len() == before {
            let status = tonic::Status::resource_exhausted(results[refused[0]].error.clone());
            warn_retry(&format!("the batch from line {first_line}"), &status, wait);
        }
        tokio::time::sleep(wait).await;
        pending = refused;
    }
    Ok((batch.lines, results))
}

/// One `RevokeBatch` call, retried while the server cannot be reached.
async fn call(
    client: &Client,
    key: Option<&str>,
    items: Vec<RevokeRequest>,
    first_line: u64,
) -> Result<Vec<RevokeBatchResult>, String> {
    let message = RevokeBatchRequest { items };
    let what = format!("the batch from line {first_line}");
    let reply = retried(
        client,
        key,
        message,
        &what,
        |mut client, request| async move { client.revoke_batch(request).await },
    )
    .await
    .map_err(|status| format!("{} ({what})", describe(status)))?;
    Ok(reply.results)
}

/// Sends cut-offs one `RevokeClaim` call each (they are few: one per
/// user, session or client logged out everywhere); returns their lines
/// and one result each, shaped as a batch's so one summary counts both.
/// A call the server answers with an error rejects its line; a call that
/// cannot reach the server is retried like a batch.
async fn send_cutoffs(
    client: Client,
    key: Option<String>,
    cutoffs: Vec<(u64, RevokeClaimRequest)>,
) -> Result<(Vec<u64>, Vec<RevokeBatchResult>), String> {
    let mut lines = Vec::with_capacity(cutoffs.len());
    let mut results = Vec::with_capacity(cutoffs.len());
    for (line, cutoff) in cutoffs {
        let what = format!("the cut-off on line {line}");
        let reply = retried(
            &client,
            key.as_deref(),
            cutoff,
            &what,
            |mut client, request| async move { client.revoke_claim(request).await },
        )
        .await;
        let result = match reply {
            Ok(reply) => RevokeBatchResult {
                response: Some(RevokeResponse {
                    // An empty cursor: an equal or later cut-off was in force.
                    newly_revoked: !reply.cursor.is_empty(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Err(status)
                if rpc::should_retry(&status) || status.code() == tonic::Code::Unauthenticated =>
            {
                return Err(format!("{} ({what})", describe(status)));
            }
            Err(status) => RevokeBatchResult {
                code: status.code() as i32,
                error: describe(status),
                response: None,
            },
        };
        lines.push(line);
        results.push(result);
    }
    Ok((lines, results))
}

/// What became of the lines.
#[derive(Debug, Default)]
struct Summary {
    /// Newly revoked.
    imported: u64,
    /// Taken with nothing to do: revoked before, or already expired.
    already: u64,
    rejected: u64,
    /// The [`MAX_LISTED`] lowest rejected lines and why (a max-heap, so
    /// the highest is dropped first).
    listed: BinaryHeap<(u64, String)>,
}

impl Summary {
    /// Lines the server took.
    fn taken(&self) -> u64 {
        self.imported + self.already
    }

    fn reject(&mut self, line: u64, reason: String) {
        self.rejected += 1;
        self.listed.push((line, reason));
        if self.listed.len() > MAX_LISTED {
            self.listed.pop();
        }
    }

    /// Counts one acknowledged batch.
    fn record(&mut self, lines: &[u64], results: Vec<RevokeBatchResult>) -> Result<(), String> {
        if results.len() != lines.len() {
            return Err(format!(
                "the server answered {} results for a batch of {} (the batch from line {})",
                results.len(),
                lines.len(),
                lines[0]
            ));
        }
        for (&line, result) in lines.iter().zip(results) {
            match (result.code, result.response) {
                (0, Some(response)) if response.newly_revoked => self.imported += 1,
                (0, _) => self.already += 1,
                (code, _) => {
                    let reason = if result.error.is_empty() {
                        format!("refused ({:?})", tonic::Code::from_i32(code))
                    } else {
                        result.error
                    };
                    self.reject(line, reason);
                }
            }
        }
        Ok(())
    }

    /// The rejected lines named, lowest first.
    fn listed(&self) -> Vec<(u64, String)> {
        let mut listed = self.listed.clone().into_vec();
        listed.sort();
        listed
    }

    /// `imported N, already revoked M, rejected K`, then a line per
    /// rejected line.
    fn text(&self) -> String {
        let mut text = format!(
            "imported {}, already revoked {}, rejected {}\n",
            grouped(self.imported),
            grouped(self.already),
            grouped(self.rejected)
        );
        let listed = self.listed();
        for (line, reason) in &listed {
            text.push_str(&format!("line {line}: {reason}\n"));
        }
        let unlisted = self.rejected - listed.len() as u64;
        if unlisted > 0 {
            text.push_str(&format!("and {} more\n", grouped(unlisted)));
        }
        text
    }

    fn json(&self) -> serde_json::Value {
        let listed = self.listed();
        let lines: Vec<_> = listed
            .iter()
            .map(|(line, reason)| json!({"line": line, "error": reason}))
            .collect();
        json!({
            "imported": self.imported,
            "already_revoked": self.already,
            "rejected": self.rejected,
            "rejected_lines": lines,
            "rejected_not_listed": self.rejected - listed.len() as u64,
        })
    }

    fn exit_code(&self) -> ExitCode {
        if self.rejected > 0 {
            ExitCode::from(EXIT_REJECTED)
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revocd::pb::RevokeResponse;

    fn result(code: i32, newly_revoked: bool) -> RevokeBatchResult {
        RevokeBatchResult {
            response: (code == 0).then_some(RevokeResponse {
                newly_revoked,
                ..Default::default()
            }),
            code,
            error: if code == 0 {
                String::new()
            } else {
                format!("bad {code}")
            },
        }
    }

    #[test]
    fn results_map_back_to_their_lines() {
        let mut summary = Summary::default();
        summary.reject(2, "unreadable".into());
        summary
            .record(
                &[3, 5, 9],
                vec![result(0, true), result(3, false), result(0, false)],
            )
            .unwrap();
        assert_eq!(
            (summary.imported, summary.already, summary.rejected),
            (1, 1, 2)
        );
        assert_eq!(
            summary.text(),
            "imported 1, already revoked 1, rejected 2\nline 2: unreadable\nline 5: bad 3\n"
        );
        assert_eq!(summary.json()["rejected_lines"][1]["line"], 5);
        assert!(summary.record(&[1, 2], vec![result(0, true)]).is_err());
    }

    #[test]
    fn the_listing_keeps_the_first_lines_and_counts_the_rest() {
        let mut summary = Summary::default();
        for line in (1..=250).rev() {
            summary.reject(line, "no".into());
        }
        let listed = summary.listed();
        assert_eq!(listed.len(), MAX_LISTED);
        assert_eq!(listed[0].0, 1);
        assert_eq!(listed[MAX_LISTED - 1].0, MAX_LISTED as u64);
        assert!(summary.text().ends_with("and 150 more\n"));
    }
}
