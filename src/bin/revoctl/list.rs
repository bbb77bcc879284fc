//! `list` and `audit`: who revoked what, from `ListRevocations` and
//! `ListChanges`, walked page by page until the server's page token runs
//! out.

use std::collections::HashSet;
use std::hash::Hasher;
use std::io::{self, BufWriter, Write};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use siphasher::sip128::{Hasher128, SipHasher13};

use revocd::pb::revocation_record::Record;
use revocd::pb::{
    ChangeRecord, ClaimRevocation, ListChangesRequest, ListRevocationsRequest, RecordFilter,
    RecordKind, RevocationRecord,
};
use revocd::tokens::ISSUER_WIDE;

use crate::rpc::{describe, retried, Client};
use crate::timestamp::{format_millis, parse_moment};
use crate::{time_cell, JsonFlag};

/// Records asked for per page: the server's largest.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Conditions shared by `list` and `audit`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only records of this subject (a token revoked by jti alone has none).
    #[arg(long)]
    subject: Option<String>,
    /// Only records of this issuer.
    #[arg(long)]
    issuer: Option<String>,
    /// Only records made by this actor: an API key's name, or `self`.
    #[arg(long)]
    actor: Option<String>,
    /// Only records made at or after this time: a duration ago (`1h`, `30m`,
    /// `7d`), an RFC 3339 time, or unix seconds.
    #[arg(long, value_parser = parse_moment)]
    since: Option<i64>,
    /// Only records made before this time (same forms as --since).
    #[arg(long, value_parser = parse_moment)]
    until: Option<i64>,
    /// Only this kind of record.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
}

/// A kind of record, as `--kind` names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// Token revocations.
    Token,
    /// Subject cut-offs.
    Subject,
    /// Cut-offs by another claim, and issuer-wide ones.
    Claim,
}

/// Arguments of `list` and `audit`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// Records asked for per call (1 to 1,000).
    #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    page_size: u32,
    #[command(flatten)]
    output: JsonFlag,
}

impl FilterArgs {
    /// The filter as the API takes it.
    fn to_message(&self) -> RecordFilter {
        RecordFilter {
            subject: self.subject.clone().unwrap_or_default(),
            issuer: self.issuer.clone().unwrap_or_default(),
            actor: self.actor.clone().unwrap_or_default(),
            since: self.since.unwrap_or(0),
            until: self.until.unwrap_or(0),
            kind: match self.kind {
                None => RecordKind::Any,
                Some(Kind::Token) => RecordKind::Token,
                Some(Kind::Subject) => RecordKind::Subject,
                Some(Kind::Claim) => RecordKind::Claim,
            } as i32,
        }
    }
}

// === walking ===

/// Walks `ListRevocations` a page at a time. A record live during the
/// whole walk comes exactly once: the server may return one twice (its
/// paging never skips, but can repeat), and the walk drops repeats by a
/// 128-bit digest of (kind, issuer, id), 16 bytes per record seen.
pub struct RecordWalk<'a> {
    client: Client,
    key: Option<&'a str>,
    filter: RecordFilter,
    page_size: u32,
    /// The next page's token; `None` once the last page was read.
    next: Option<String>,
    seen: HashSet<u128>,
}

impl<'a> RecordWalk<'a> {
    /// A walk over the records `filter` selects.
    pub fn new(
        client: &Client,
        key: Option<&'a str>,
        filter: RecordFilter,
        page_size: u32,
    ) -> Self {
        RecordWalk {
            client: client.clone(),
            key,
            filter,
            page_size,
            next: Some(String::new()),
            seen: HashSet::new(),
        }
    }

    /// The next page's records not seen before (possibly none), or `None`
    /// when the walk is over. Calls that fail to reach the server are
    /// retried (see [`RETRY_SCHEDULE`]).
    ///
    /// # Errors
    /// The call failed for good.
    pub async fn next_page(&mut self) -> Result<Option<Vec<RevocationRecord>>, String> {
        let Some(token) = self.next.take() else {
            return Ok(None);
        };
        let message = ListRevocationsRequest {
            filter: Some(self.filter.clone()),
            page_size: self.page_size,
            page_token: token,
        };
        let (client, key) = (&self.client, self.key);
        let page = retried(
            client,
            key,
            message,
            "listing",
            |mut client, request| async move { client.list_revocations(request).await },
        )
        .await
        .map_err(describe)?;
        if !page.next_page_token.is_empty() {
            self.next = Some(page.next_page_token);
        }
        let seen = &mut self.seen;
        Ok(Some(
            page.records
                .into_iter()
                .filter(|record| seen.insert(identity(record)))
                .collect(),
        ))
    }
}

/// A digest naming a record: its kind, issuer, claim (cut-offs by another
/// claim) and jti, subject or value.
fn identity(record: &RevocationRecord) -> u128 {
    let mut hasher = SipHasher13::new();
    let (kind, issuer, claim, id) = match &record.record {
        Some(Record::Token(t)) => (1u8, t.issuer.as_str(), "", t.jti.as_str()),
        Some(Record::Subject(s)) => (2u8, s.issuer.as_str(), "", s.subject.as_str()),
        Some(Record::Claim(c)) => (3u8, c.issuer.as_str(), c.claim.as_str(), c.value.as_str()),
        None => (0u8, "", "", ""),
    };
    hasher.write_u8(kind);
    // Length-prefixed, so no issuer/claim/id split can collide with another.
    for part in [issuer, claim] {
        hasher.write_usize(part.len());
        hasher.write(part.as_bytes());
    }
    hasher.write(id.as_bytes());
    hasher.finish128().as_u128()
}

// === list ===

/// Prints the records that match: a table, or JSON lines with `--json`.
///
/// # Errors
/// A call failed for good, or stdout could not be written.
pub async fn list(client: &Client, key: Option<&str>, args: ListArgs) -> Result<(), String> {
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut walk = RecordWalk::new(client, key, args.filter.to_message(), args.page_size);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut rows = Vec::new();
    let mut shown = 0;
    'walk: while let Some(records) = walk.next_page().await? {
        for record in records {
            if shown == limit {
                break 'walk;
            }
            shown += 1;
            if args.output.json {
                writeln!(out, "{}", record_json(&record)).map_err(stdout_error)?;
            } else {
                rows.push(record_row(&record));
            }
        }
    }
    if !args.output.json {
        print_table(&mut out, &rows).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)
}

/// A record as one JSON object, the same fields for both kinds where they
/// apply.
fn record_json(record: &RevocationRecord) -> Value {
    let mut object = match &record.record {
        Some(Record::Token(t)) => json!({
            "kind": "token", "issuer": t.issuer, "jti": t.jti, "subject": t.subject,
            "expires_at": t.expires_at, "keep_until": t.keep_until,
        }),
        Some(Record::Subject(s)) => json!({
            "kind": "subject", "issuer": s.issuer, "subject": s.subject,
            "not_before": s.not_before, "keep_until": s.keep_until,
        }),
        Some(Record::Claim(c)) => json!({
            "kind": "claim", "issuer": c.issuer, "claim": c.claim, "value": c.value,
            "not_before": c.not_before, "keep_until": c.keep_until,
        }),
        None => json!({ "kind": "unknown" }),
    };
    object["revoked_at"] = json!(record.revoked_at);
    object["actor"] = json!(record.actor);
    object["reason"] = json!(record.reason);
    object["source"] = json!(record.source);
    object
}

/// The table's columns.
const COLUMNS: [&str; 8] = [
    "KIND",
    "ISSUER",
    "JTI/SUBJECT/CLAIM",
    "EXPIRES/NOT BEFORE",
    "REVOKED AT",
    "BY",
    "REASON",
    "SOURCE",
];

fn record_row(record: &RevocationRecord) -> [String; 8] {
    let (kind, issuer, id, time) = match &record.record {
        Some(Record::Token(t)) => ("token", &t.issuer, t.jti.clone(), t.expires_at),
        Some(Record::Subject(s)) => ("subject", &s.issuer, s.subject.clone(), s.not_before),
        Some(Record::Claim(c)) => ("claim", &c.issuer, claim_cell(c), c.not_before),
        None => return Default::default(),
    };
    let dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    [
        kind.to_owned(),
        dash(issuer),
        id,
        time_cell(time),
        time_cell(record.revoked_at),
        dash(&record.actor),
        dash(&record.reason),
        dash(&record.source),
    ]
}

/// A cut-off's claim and value as a cell: `sid=s-1`, or `*` for a whole
/// issuer.
fn claim_cell(cutoff: &ClaimRevocation) -> String {
    if cutoff.claim == ISSUER_WIDE {
        ISSUER_WIDE.to_owned()
    } else {
        format!("{}={}", cutoff.claim, cutoff.value)
    }
}

/// Rows under a header, each column as wide as its widest cell.
fn print_table(out: &mut impl Write, rows: &[[String; 8]]) -> io::Result<()> {
    let mut widths = COLUMNS.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&COLUMNS)?;
    for row in rows {
        line(&row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

// === audit ===

/// Prints the change log, oldest first: one line per change, or JSON lines
/// with `--json`.
///
/// # Errors
/// A call failed for good, or stdout could not be written.
pub async fn audit(client: &Client, key: Option<&str>, args: ListArgs) -> Result<(), String> {
    let limit = args.limit.unwrap_or(usize::MAX);
    let filter = args.filter.to_message();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut token = String::new();
    let mut shown = 0;
    loop {
        let message = ListChangesRequest {
            filter: Some(filter.clone()),
            page_size: args.page_size,
            page_token: token,
        };
        let what = "reading the audit trail";
        let page = retried(
            client,
            key,
            message,
            what,
            |mut client, request| async move { client.list_changes(request).await },
        )
        .await
        .map_err(describe)?;
        for change in &page.changes {
            if shown == limit {
                return out.flush().map_err(stdout_error);
            }
            shown += 1;
            if args.output.json {
                writeln!(out, "{}", change_json(change)).map_err(stdout_error)?;
            } else {
                writeln!(out, "{}", change_line(change)).map_err(stdout_error)?;
            }
        }
        // Lines as they come: the trail can be long.
        out.flush().map_err(stdout_error)?;
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

fn change_json(change: &ChangeRecord) -> Value {
    let mut object = change
        .record
        .as_ref()
        .map_or_else(|| json!({}), record_json);
    object["cursor"] = json!(change.cursor);
    object["logged_at_ms"] = json!(change.logged_at_ms);
    object
}

/// `time  actor  source  what  reason: "…"`.
fn change_line(change: &ChangeRecord) -> String {
    let time = format_millis(change.logged_at_ms);
    let Some(record) = &change.record else {
        return format!("{time}  (empty change {})", change.cursor);
    };
    let what = match &record.record {
        Some(Record::Token(t)) => {
            let subject = if t.subject.is_empty() {
                String::new()
            } else {
                format!(", subject {:?}", t.subject)
            };
            format!(
                "revoked token {:?} (issuer {:?}{subject}, expires {})",
                t.jti,
                t.issuer,
                time_cell(t.expires_at)
            )
        }
        Some(Record::Subject(s)) => format!(
            "cut off subject {:?} (issuer {:?}) for tokens issued before {}",
            s.subject,
            s.issuer,
            time_cell(s.not_before)
        ),
        Some(Record::Claim(c)) if c.claim == ISSUER_WIDE => format!(
            "cut off every token of issuer {:?} issued before {}",
            c.issuer,
            time_cell(c.not_before)
        ),
        Some(Record::Claim(c)) => format!(
            "cut off {} {:?} (issuer {:?}) for tokens issued before {}",
            c.claim,
            c.value,
            c.issuer,
            time_cell(c.not_before)
        ),
        None => "(unknown change)".to_owned(),
    };
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    format!(
        "{time}  {}  {}  {what}  reason: {:?}",
        or_dash(&record.actor),
        or_dash(&record.source),
        record.reason
    )
}

/// Writing to stdout failed (a closed pipe, a full disk).
pub fn stdout_error(error: io::Error) -> String {
    format!("writing to stdout: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use revocd::pb::{SubjectRevocation, TokenRevocation};

    fn token(issuer: &str, jti: &str) -> RevocationRecord {
        RevocationRecord {
            record: Some(Record::Token(TokenRevocation {
                issuer: issuer.into(),
                jti: jti.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn identity_tells_kinds_issuers_and_ids_apart() {
        let subject = RevocationRecord {
            record: Some(Record::Subject(SubjectRevocation {
                issuer: "i".into(),
                subject: "a".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let ids = [
            identity(&token("i", "a")),
            identity(&token("i:", "a")),
            identity(&token("", "i:a")),
            identity(&subject),
        ];
        let distinct: HashSet<u128> = ids.into_iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let mut again = token("i", "a");
        again.reason = "changed".into();
        assert_eq!(identity(&again), ids[0], "the same record");
    }

    #[test]
    fn the_table_aligns_columns_and_trims_line_ends() {
        let rows = [
            record_row(&token("https://issuer.test", "j1")),
            record_row(&token("x", "a-much-longer-jti")),
        ];
        let mut out = Vec::new();
        print_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let column = |line: &str| {
            line.find("JTI")
                .or_else(|| line.find("j1"))
                .or_else(|| line.find("a-much"))
        };
        assert_eq!(column(lines[0]), column(lines[1]));
        assert_eq!(column(lines[1]), column(lines[2]));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }
}
