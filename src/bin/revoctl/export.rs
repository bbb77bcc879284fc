//! `export`: the live token revocations as the CSV `import` reads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use revocd::pb::revocation_record::Record;
use revocd::pb::{RecordFilter, RecordKind};

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
}

/// Writes every live token revocation, one CSV record each under a
/// header, and tells on stderr how many.
///
/// # Errors
/// A call failed for good, or the output could not be written (a partly
/// written `--output` is removed).
pub async fn export(client: &Client, key: Option<&str>, args: ExportArgs) -> Result<(), String> {
    let count = match &args.output {
        None => {
            let mut out = BufWriter::new(io::stdout().lock());
            let count = write_csv(client, key, &mut out).await?;
            out.flush().map_err(stdout_error)?;
            count
        }
        Some(path) => {
            let temporary = temporary_path(path);
            let written = write_file(client, key, &temporary).await;
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
    eprintln!("exported {} token revocations", grouped(count));
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

async fn write_file(client: &Client, key: Option<&str>, path: &Path) -> Result<u64, String> {
    let describe = |e: io::Error| format!("writing {}: {e}", path.display());
    let file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(describe)?;
    let mut out = BufWriter::new(file);
    let count = write_csv(client, key, &mut out).await?;
    let file = out.into_inner().map_err(|e| describe(e.into_error()))?;
    // On disk before the rename makes it visible under its name.
    file.sync_all().map_err(describe)?;
    Ok(count)
}

/// Walks the live token revocations into `out` as CSV; returns how many.
/// The header is written once the first page came, so a refused call
/// writes nothing.
async fn write_csv(
    client: &Client,
    key: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, String> {
    let write_error = |e: io::Error| format!("writing the export: {e}");
    let filter = RecordFilter {
        kind: RecordKind::Token as i32,
        ..Default::default()
    };
    let mut walk = RecordWalk::new(client, key, filter, MAX_PAGE_SIZE);
    let mut page = walk.next_page().await?;
    write_record(out, &COLUMNS).map_err(write_error)?;
    let mut count = 0;
    while let Some(records) = page {
        for record in records {
            let Some(Record::Token(token)) = &record.record else {
                continue;
            };
            let expires_at = token.expires_at.to_string();
            let fields = [
                token.jti.as_str(),
                &expires_at,
                &token.issuer,
                &record.reason,
            ];
            write_record(out, &fields).map_err(write_error)?;
            count += 1;
        }
        page = walk.next_page().await?;
    }
    Ok(count)
}
