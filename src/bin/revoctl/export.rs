//! `export`: the live revocations in a form `import` reads back: CSV of the
//! token revocations, or JSON lines of every record, cut-offs included.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use revocd::pb::revocation_record::Record;
use revocd::pb::{RecordFilter, RecordKind, RevocationRecord};
use revocd::store::SUBJECT_CLAIM;

use crate::csv::write_record;
use crate::input::COLUMNS;
use crate::list::{stdout_error, RecordWalk, MAX_PAGE_SIZE};
use crate::progress::grouped;
use crate::rpc::Client;

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout. The file appears complete or
    /// not at all: it is written beside its final name and renamed.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// JSON lines instead of CSV, with the cut-offs (by subject, by claim
    /// and issuer-wide) as well as the token revocations.
    #[arg(long)]
    json: bool,
}

/// How many records of each kind were written.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    tokens: u64,
    cutoffs: u64,
}

/// Writes every live token revocation, one CSV record each under a
/// header (or, with `--json`, every live record as a JSON line), and
/// tells on stderr how many.
///
/// # Errors
/// A call failed for good, or the output could not be written (a partly
/// written `--output` is removed).
pub async fn export(client: &Client, key: Option<&str>, args: ExportArgs) -> Result<(), String> {
    let count = match &args.output {
        None => {
            let mut out = BufWriter::new(io::stdout().lock());
            let count = write_records(client, key, args.json, &mut out).await?;
            out.flush().map_err(stdout_error)?;
            count
        }
        Some(path) => {
            let temporary = temporary_path(path);
            let written = write_file(client, key, args.json, &temporary).await;
            let renamed = written.and_then(|count| {
                fs::rename(&temporary, path).map(|()| count).map_err(|e| {
                    format!(
                        "renaming {} to {}: {e}",
                        temporary.display(),
                        path.display()
                    )
                })
            });
            if renamed.is_err() {
                let _ = fs::remove_file(&temporary);
            }
            renamed?
        }
    };
    if args.json {
        eprintln!(
            "exported {} token revocations and {} cut-offs",
            grouped(count.tokens),
            grouped(count.cutoffs)
        );
    } else {
        eprintln!("exported {} token revocations", grouped(count.tokens));
    }
    Ok(())
}

/// `<dir>/.<name>.<pid>.tmp`: beside the target, so the rename stays on
/// one file system and is atomic.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

async fn write_file(
    client: &Client,
    key: Option<&str>,
    json: bool,
    path: &Path,
) -> Result<Written, String> {
    let describe = |e: io::Error| format!("writing {}: {e}", path.display());
    let file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(describe)?;
    let mut out = BufWriter::new(file);
    let count = write_records(client, key, json, &mut out).await?;
    let file = out.into_inner().map_err(|e| describe(e.into_error()))?;
    // On disk before the rename makes it visible under its name.
    file.sync_all().map_err(describe)?;
    Ok(count)
}

/// Walks the live records into `out`, as CSV (token revocations under a
/// header) or as JSON lines (every record); returns how many. The CSV
/// header is written once the first page came, so a refused call writes
/// nothing.
async fn write_records(
    client: &Client,
    key: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<Written, String> {
    let write_error = |e: io::Error| format!("writing the export: {e}");
    let kind = if json {
        RecordKind::Any
    } else {
        RecordKind::Token
    };
    let filter = RecordFilter {
        kind: kind as i32,
        ..Default::default()
    };
    let mut walk = RecordWalk::new(client, key, filter, MAX_PAGE_SIZE);
    let mut page = walk.next_page().await?;
    if !json {
        write_record(out, &COLUMNS).map_err(write_error)?;
    }
    let mut written = Written::default();
    while let Some(records) = page {
        for record in records {
            let is_token = matches!(record.record, Some(Record::Token(_)));
            let wrote = if json {
                write_json(out, &record)
            } else {
                write_csv(out, &record)
            };
            match (wrote.map_err(write_error)?, is_token) {
                (false, _) => {}
                (true, true) => written.tokens += 1,
                (true, false) => written.cutoffs += 1,
            }
        }
        page = walk.next_page().await?;
    }
    Ok(written)
}

/// A token revocation as a CSV record; false (nothing written) for a
/// cut-off.
fn write_csv(out: &mut impl Write, record: &RevocationRecord) -> io::Result<bool> {
    let Some(Record::Token(token)) = &record.record else {
        return Ok(false);
    };
    let expires_at = token.expires_at.to_string();
    let fields = [
        token.jti.as_str(),
        &expires_at,
        &token.issuer,
        &record.reason,
    ];
    write_record(out, &fields)?;
    Ok(true)
}

/// A record as one JSON line in the shape `import` reads: a token with
/// `jti` and `expires_at`, a cut-off with `claim`, `value` and
/// `not_before` (a subject cut-off is claim `sub`). False (nothing
/// written) for a record of a kind this build does not know.
fn write_json(out: &mut impl Write, record: &RevocationRecord) -> io::Result<bool> {
    let line = match &record.record {
        Some(Record::Token(t)) => json!({
            "jti": t.jti, "expires_at": t.expires_at, "issuer": t.issuer,
            "reason": record.reason,
        }),
        Some(Record::Subject(s)) => json!({
            "claim": SUBJECT_CLAIM, "value": s.subject, "not_before": s.not_before,
            "issuer": s.issuer, "reason": record.reason,
        }),
        Some(Record::Claim(c)) => json!({
            "claim": c.claim, "value": c.value, "not_before": c.not_before,
            "issuer": c.issuer, "reason": record.reason,
        }),
        None => return Ok(false),
    };
    writeln!(out, "{line}")?;
    Ok(true)
}
