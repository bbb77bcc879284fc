//! Reading an import file into batches of revocations.
//!
//! # Formats
//!
//! The first non-blank line decides: `{` starts JSON lines, anything else
//! is CSV.
//!
//! - **CSV** (see [`crate::csv`] for quoting): `jti,expires_at,issuer,reason`,
//!   the last two optional. A first line whose first field is `jti` is a
//!   header; it may name the same columns in another order (`jti` and
//!   `expires_at` required).
//! - **JSON lines**: one object per line. A token revocation has the keys
//!   `jti`, `expires_at` (a number, or a string as below), `issuer` and
//!   `reason` (strings, optional). A cut-off (what `export --json` writes
//!   for subject, claim and issuer-wide cut-offs) has `claim` (`sub`, `sid`,
//!   …, or `*`), `value` (empty with `*`), `not_before`, `issuer` and
//!   `reason`, and is sent as a `RevokeClaim` call. Other keys are ignored.
//!
//! `expires_at` and `not_before` are unix seconds or an RFC 3339 time. An empty issuer means
//! the server's default. Blank lines are skipped. Lines are numbered from 1,
//! header and blank lines included, so a number points into the file.
//!
//! Only what a line must hold to be sent is checked here (a jti, a
//! readable expiry); the server judges the rest (lengths, lifetimes,
//! issuers) and answers per item.

use std::io::BufRead;

use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;

use revocd::pb::{RevokeClaimRequest, RevokeRequest};

use crate::csv;
use crate::timestamp::parse_unix_or_rfc3339;

/// The columns, in the order of a file without a header (and of `export`).
pub const COLUMNS: [&str; 4] = ["jti", "expires_at", "issuer", "reason"];

/// What one line holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Nothing (blank, or a CSV header).
    Skip,
    /// A token revocation to send.
    Item(RevokeRequest),
    /// A cut-off to send.
    Cutoff(RevokeClaimRequest),
    /// Why the line cannot be a revocation.
    Rejected(String),
}

/// Where each column of a CSV record is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Columns {
    jti: usize,
    expires_at: usize,
    issuer: Option<usize>,
    reason: Option<usize>,
    /// Fields a record may have at most.
    width: usize,
}

impl Columns {
    /// The order of a file without a header.
    const POSITIONAL: Columns = Columns {
        jti: 0,
        expires_at: 1,
        issuer: Some(2),
        reason: Some(3),
        width: 4,
    };

    /// The order a header line names.
    fn from_header(names: &[String]) -> Result<Self, String> {
        let position = |wanted: &str| {
            names
                .iter()
                .position(|n| n.trim().eq_ignore_ascii_case(wanted))
        };
        if let Some(unknown) = names
            .iter()
            .find(|n| !COLUMNS.iter().any(|c| n.trim().eq_ignore_ascii_case(c)))
        {
            return Err(format!(
                "the header names a column {unknown:?}; the columns are {}",
                COLUMNS.join(",")
            ));
        }
        let expires_at = position("expires_at")
            .ok_or_else(|| "the header has no `expires_at` column".to_owned())?;
        Ok(Columns {
            // The header was recognised by its `jti`.
            jti: position("jti").unwrap_or(0),
            expires_at,
            issuer: position("issuer"),
            reason: position("reason"),
            width: names.len(),
        })
    }

    /// The revocation a record names.
    fn item(&self, mut fields: Vec<String>) -> Result<RevokeRequest, String> {
        let needed = self.jti.max(self.expires_at) + 1;
        if fields.len() > self.width || fields.len() < needed {
            return Err(format!(
                "{} fields; expected {} to {} ({})",
                fields.len(),
                needed,
                self.width,
                COLUMNS.join(",")
            ));
        }
        let mut take = |index: Option<usize>| {
            index
                .and_then(|i| fields.get_mut(i))
                .map(std::mem::take)
                .unwrap_or_default()
        };
        let jti = take(Some(self.jti));
        let expires_at = take(Some(self.expires_at));
        let request = RevokeRequest {
            token: String::new(),
            issuer: take(self.issuer),
            reason: take(self.reason),
            expires_at: expiry(&expires_at)?,
            jti,
        };
        require_jti(request)
    }
}

/// Turns the lines of one file into revocations.
#[derive(Debug, Default)]
pub struct LineParser {
    /// Decided by the first non-blank line.
    format: Option<Format>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    Csv(Columns),
    JsonLines,
}

impl LineParser {
    /// Reads one line, without its line terminator.
    ///
    /// # Errors
    /// A CSV header naming unknown columns: the file cannot be read at all.
    pub fn parse(&mut self, line: &str) -> Result<Line, String> {
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        if line.trim().is_empty() {
            return Ok(Line::Skip);
        }
        let format = match &self.format {
            Some(format) => format,
            None if line.trim_start().starts_with('{') => self.format.insert(Format::JsonLines),
            None => {
                let header = csv::parse_line(line)
                    .ok()
                    .filter(|fields| fields[0].trim().eq_ignore_ascii_case("jti"));
                if let Some(names) = header {
                    self.format = Some(Format::Csv(Columns::from_header(&names)?));
                    return Ok(Line::Skip);
                }
                self.format.insert(Format::Csv(Columns::POSITIONAL))
            }
        };
        let line = match format {
            Format::JsonLines => json_line(line),
            Format::Csv(columns) => csv::parse_line(line)
                .map_err(|e| e.to_string())
                .and_then(|fields| columns.item(fields))
                .map(Line::Item),
        };
        Ok(line.unwrap_or_else(Line::Rejected))
    }
}

/// The token revocation or the cut-off one JSON line names.
fn json_line(line: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        // serde's text ends with "at line 1 column N"; the line is ours.
        let text = e.to_string();
        let text = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(t, _)| t);
        format!("not valid JSON ({text} at column {})", e.column())
    })?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".to_owned());
    };
    let text = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(format!("`{key}` is not a string")),
    };
    let time = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Err(format!("`{key}` is missing")),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|&seconds| seconds >= 0)
            .ok_or_else(|| format!("`{key}` {n} is not whole unix seconds")),
        Some(Value::String(text)) => unix_time(key, text),
        Some(_) => Err(format!("`{key}` is not a number or a string")),
    };
    if object.contains_key("claim") {
        if object.contains_key("jti") {
            return Err("a line holds either `jti` (a token) or `claim` (a cut-off)".to_owned());
        }
        let claim = text("claim")?;
        if claim.is_empty() {
            return Err("`claim` is empty".to_owned());
        }
        return Ok(Line::Cutoff(RevokeClaimRequest {
            issuer: text("issuer")?,
            claim,
            value: text("value")?,
            // Required: a cut-off at "now" would move with every import.
            not_before: time("not_before")?,
            reason: text("reason")?,
        }));
    }
    require_jti(RevokeRequest {
        token: String::new(),
        jti: text("jti")?,
        expires_at: time("expires_at")?,
        reason: text("reason")?,
        issuer: text("issuer")?,
    })
    .map(Line::Item)
}

fn expiry(text: &str) -> Result<i64, String> {
    unix_time("expires_at", text)
}

fn unix_time(key: &str, text: &str) -> Result<i64, String> {
    parse_unix_or_rfc3339(text)
        .map_err(|()| format!("`{key}` {text:?} is neither unix seconds nor an RFC 3339 time"))
}

fn require_jti(request: RevokeRequest) -> Result<RevokeRequest, String> {
    if request.jti.is_empty() {
        Err("`jti` is empty".to_owned())
    } else {
        Ok(request)
    }
}

// === batches ===

/// How large one `RevokeBatch` may be.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Items per call (the server takes at most 1,000).
    pub items: usize,
    /// Encoded bytes per call (the server refuses requests over 64 KiB).
    pub bytes: usize,
}

/// Revocations to send together, with the line each came from.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<RevokeRequest>,
    /// `lines[i]` is the line of `items[i]`.
    pub lines: Vec<u64>,
    /// Encoded size of the `RevokeBatchRequest` holding `items`.
    bytes: usize,
}

/// What the reader hands over: a batch to send, the cut-offs and the
/// rejected lines met while filling it, and how far the reader got
/// (totals so far).
#[derive(Debug, Default)]
pub struct Chunk {
    pub batch: Batch,
    /// Cut-offs, each with its line: one `RevokeClaim` call each.
    pub cutoffs: Vec<(u64, RevokeClaimRequest)>,
    pub rejected: Vec<(u64, String)>,
    pub lines_read: u64,
    pub bytes_read: u64,
}

/// Reads `input` to its end, sending a [`Chunk`] each time a batch is full
/// and one at the end. Runs on a thread of its own (file reads block), so
/// sending stays busy meanwhile; the bounded channel keeps it at most a
/// few batches ahead. Stops early when the receiver is gone. A read error,
/// or a header that cannot be read, is sent as `Err` and ends the reading.
pub fn read_batches(
    mut input: impl BufRead,
    limits: BatchLimits,
    chunks: mpsc::Sender<Result<Chunk, String>>,
) {
    let mut parser = LineParser::default();
    let mut batcher = Batcher {
        limits,
        chunk: Chunk::default(),
    };
    let mut buffer = Vec::new();
    let (mut number, mut bytes_read) = (0u64, 0u64);
    loop {
        buffer.clear();
        let read = match input.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) => {
                let _ = chunks.blocking_send(Err(format!("reading the input: {error}")));
                return;
            }
        };
        number += 1;
        bytes_read += read as u64;
        let line = match std::str::from_utf8(trim_terminator(&buffer)) {
            Ok(text) => parser.parse(text),
            Err(_) => Ok(Line::Rejected("not UTF-8 text".to_owned())),
        };
        let ready = match line {
            Err(error) => {
                let _ = chunks.blocking_send(Err(format!("line {number}: {error}")));
                return;
            }
            Ok(Line::Skip) => None,
            Ok(Line::Rejected(reason)) => batcher.reject(number, reason),
            Ok(Line::Item(item)) => batcher.add(number, item),
            Ok(Line::Cutoff(cutoff)) => batcher.add_cutoff(number, cutoff),
        };
        if let Some(mut chunk) = ready {
            (chunk.lines_read, chunk.bytes_read) = (number, bytes_read);
            if chunks.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    }
    let mut last = batcher.chunk;
    (last.lines_read, last.bytes_read) = (number, bytes_read);
    let _ = chunks.blocking_send(Ok(last));
}

/// Fills batches within [`BatchLimits`].
struct Batcher {
    limits: BatchLimits,
    /// The chunk being filled.
    chunk: Chunk,
}

impl Batcher {
    /// Adds `item` (from line `number`); returns a chunk to send when its
    /// batch is full. An item that would push the batch past
    /// `limits.bytes` starts the next batch instead.
    fn add(&mut self, number: u64, item: RevokeRequest) -> Option<Chunk> {
        let size = framed_len(&item);
        if size > self.limits.bytes {
            let reason = format!(
                "too large to send ({size} bytes encoded; a request holds at most {})",
                self.limits.bytes
            );
            return self.reject(number, reason);
        }
        // A batch is sent as soon as it holds `limits.items`, so with a
        // limit of one item it is always empty here and at most one chunk
        // is ever ready.
        let ready = (self.chunk.batch.bytes + size > self.limits.bytes)
            .then(|| std::mem::take(&mut self.chunk));
        self.chunk.batch.push(number, item, size);
        ready.or_else(|| {
            (self.chunk.batch.items.len() >= self.limits.items)
                .then(|| std::mem::take(&mut self.chunk))
        })
    }

    /// Adds a cut-off; returns a chunk to send when many piled up.
    fn add_cutoff(&mut self, number: u64, cutoff: RevokeClaimRequest) -> Option<Chunk> {
        self.chunk.cutoffs.push((number, cutoff));
        self.full_of(self.chunk.cutoffs.len())
    }

    /// Notes a rejected line; returns a chunk to hand over when many
    /// piled up, so a file of bad lines still shows progress.
    fn reject(&mut self, number: u64, reason: String) -> Option<Chunk> {
        self.chunk.rejected.push((number, reason));
        self.full_of(self.chunk.rejected.len())
    }

    /// The chunk, taken, once `count` of one kind fills a batch.
    fn full_of(&mut self, count: usize) -> Option<Chunk> {
        (count >= self.limits.items).then(|| std::mem::take(&mut self.chunk))
    }
}

impl Batch {
    fn push(&mut self, line: u64, item: RevokeRequest, size: usize) {
        self.items.push(item);
        self.lines.push(line);
        self.bytes += size;
    }
}

/// Bytes `item` adds to a `RevokeBatchRequest`: its field tag, its length
/// and itself.
fn framed_len(item: &RevokeRequest) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

fn trim_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;
