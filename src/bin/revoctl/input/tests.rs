//! Unit tests for reading import files: CSV and JSON lines into
//! revocations, and lines into batches within their limits.

use super::*;

fn parse_all(text: &str) -> Vec<Line> {
    let mut parser = LineParser::default();
    text.lines()
        .map(|line| parser.parse(line).expect("readable"))
        .collect()
}

fn item(jti: &str, expires_at: i64, issuer: &str, reason: &str) -> Line {
    Line::Item(RevokeRequest {
        token: String::new(),
        jti: jti.into(),
        expires_at,
        reason: reason.into(),
        issuer: issuer.into(),
    })
}

fn rejected(line: &Line) -> &str {
    match line {
        Line::Rejected(reason) => reason,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn csv_with_a_header_quotes_and_blank_lines() {
    let lines = parse_all(concat!(
        "\u{feff}jti,expires_at,issuer,reason\n",
        "a,100,,\"lost, then \"\"found\"\"\"\n",
        "\n",
        "b,2026-01-01T00:00:00Z,https://i.test\n",
        "c,100\n",
    ));
    assert_eq!(
        lines,
        [
            Line::Skip,
            item("a", 100, "", "lost, then \"found\""),
            Line::Skip,
            item("b", 1_767_225_600, "https://i.test", ""),
            item("c", 100, "", ""),
        ]
    );
}

#[test]
fn csv_without_a_header_is_positional_and_a_header_may_reorder() {
    assert_eq!(parse_all("x,5,iss,why"), [item("x", 5, "iss", "why")]);
    assert_eq!(
        parse_all("JTI,reason,expires_at\nx,why,5"),
        [Line::Skip, item("x", 5, "", "why")]
    );
    let mut parser = LineParser::default();
    let error = parser.parse("jti,expires_at,colour").unwrap_err();
    assert!(error.contains("\"colour\""), "{error}");
    assert!(
        parser.parse("jti,issuer").is_err(),
        "expires_at is required"
    );
}

#[test]
fn bad_csv_lines_are_rejected_with_a_reason() {
    let lines = parse_all(concat!(
        "jti,expires_at,issuer,reason\n",
        "a,tomorrow\n",
        ",100\n",
        "a\n",
        "a,1,b,c,d\n",
        "a,-5\n",
        "a,\"1\n",
    ));
    assert!(rejected(&lines[1]).contains("\"tomorrow\""));
    assert_eq!(rejected(&lines[2]), "`jti` is empty");
    assert!(rejected(&lines[3]).contains("1 fields"));
    assert!(rejected(&lines[4]).contains("5 fields"));
    assert!(rejected(&lines[5]).contains("\"-5\""));
    assert!(rejected(&lines[6]).contains("closing quote"));
}

#[test]
fn json_lines() {
    let lines = parse_all(concat!(
        "  {\"jti\": \"a\", \"expires_at\": 100, \"reason\": \"r\", \"extra\": 1}\n",
        "{\"jti\": \"b\", \"expires_at\": \"2026-01-01T00:00:00Z\", \"issuer\": \"i\"}\n",
        "{\"jti\": \"c\"}\n",
        "{\"jti\": \"d\", \"expires_at\": 1.5}\n",
        "{\"jti\": 7, \"expires_at\": 1}\n",
        "[1]\n",
        "{\"jti\": \n",
        "{\"expires_at\": 1}\n",
    ));
    assert_eq!(lines[0], item("a", 100, "", "r"));
    assert_eq!(lines[1], item("b", 1_767_225_600, "i", ""));
    assert_eq!(rejected(&lines[2]), "`expires_at` is missing");
    assert!(rejected(&lines[3]).contains("whole unix seconds"));
    assert_eq!(rejected(&lines[4]), "`jti` is not a string");
    assert_eq!(rejected(&lines[5]), "not a JSON object");
    let invalid = rejected(&lines[6]);
    assert!(
        invalid.starts_with("not valid JSON") && !invalid.contains("line 1"),
        "{invalid}"
    );
    assert_eq!(rejected(&lines[7]), "`jti` is empty");
}

fn chunks(text: &str, limits: BatchLimits) -> Vec<Chunk> {
    let (sender, mut receiver) = mpsc::channel(1_000);
    read_batches(text.as_bytes(), limits, sender);
    std::iter::from_fn(|| receiver.blocking_recv())
        .map(|chunk| chunk.expect("readable"))
        .collect()
}

#[test]
fn batches_keep_to_the_item_and_byte_limits_and_remember_lines() {
    let text: String = (0..10).map(|i| format!("jti-{i},100\n\n")).collect();
    let by_items = chunks(
        &text,
        BatchLimits {
            items: 4,
            bytes: 1 << 16,
        },
    );
    let sizes: Vec<usize> = by_items.iter().map(|c| c.batch.items.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(by_items[1].batch.lines, [9, 11, 13, 15]);
    assert_eq!(by_items[2].lines_read, 20);
    assert_eq!(by_items[2].bytes_read, text.len() as u64);

    let one = framed_len(&RevokeRequest {
        jti: "jti-0".into(),
        expires_at: 100,
        ..Default::default()
    });
    let by_bytes = chunks(
        &text,
        BatchLimits {
            items: 1_000,
            bytes: 3 * one,
        },
    );
    let sizes: Vec<usize> = by_bytes.iter().map(|c| c.batch.items.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    for chunk in &by_bytes {
        let request = revocd::pb::RevokeBatchRequest {
            items: chunk.batch.items.clone(),
        };
        assert_eq!(request.encoded_len(), chunk.batch.bytes);
    }

    let huge = format!("a,100,,{}\nb,100\n", "x".repeat(200));
    let chunks = chunks(
        &huge,
        BatchLimits {
            items: 10,
            bytes: 100,
        },
    );
    let rejected: Vec<u64> = chunks
        .iter()
        .flat_map(|c| &c.rejected)
        .map(|r| r.0)
        .collect();
    assert_eq!(rejected, [1]);
    assert_eq!(chunks.last().unwrap().batch.lines, [2]);
}

#[test]
fn an_unreadable_header_stops_the_reading() {
    let (sender, mut receiver) = mpsc::channel(10);
    read_batches(
        "jti,expires,x\na,1\n".as_bytes(),
        BatchLimits {
            items: 10,
            bytes: 1000,
        },
        sender,
    );
    let first = receiver.blocking_recv().expect("one message");
    assert!(first.unwrap_err().starts_with("line 1: "));
    assert!(receiver.blocking_recv().is_none());
}

#[test]
fn json_lines_with_a_claim_are_cutoffs() {
    let lines = parse_all(concat!(
        "{\"claim\": \"sid\", \"value\": \"s-1\", \"not_before\": 50, \"issuer\": \"i\", \"reason\": \"r\"}\n",
        "{\"claim\": \"*\", \"not_before\": \"2026-01-01T00:00:00Z\"}\n",
        "{\"claim\": \"sid\", \"value\": \"s-1\"}\n",
        "{\"claim\": \"sid\", \"jti\": \"a\", \"not_before\": 1}\n",
        "{\"claim\": \"\", \"not_before\": 1}\n",
        "{\"jti\": \"a\", \"expires_at\": 100}\n",
    ));
    assert_eq!(
        lines[0],
        Line::Cutoff(RevokeClaimRequest {
            issuer: "i".into(),
            claim: "sid".into(),
            value: "s-1".into(),
            not_before: 50,
            reason: "r".into(),
        })
    );
    let Line::Cutoff(issuer_wide) = &lines[1] else {
        panic!("{:?}", lines[1]);
    };
    assert_eq!(
        (issuer_wide.claim.as_str(), issuer_wide.value.as_str()),
        ("*", "")
    );
    assert_eq!(issuer_wide.not_before, 1_767_225_600);
    assert_eq!(rejected(&lines[2]), "`not_before` is missing");
    assert!(rejected(&lines[3]).contains("either `jti`"));
    assert_eq!(rejected(&lines[4]), "`claim` is empty");
    assert_eq!(lines[5], item("a", 100, "", ""));
}

#[test]
fn cutoffs_travel_in_chunks_beside_the_batches() {
    let text = concat!(
        "{\"jti\": \"a\", \"expires_at\": 100}\n",
        "{\"claim\": \"sid\", \"value\": \"s\", \"not_before\": 5}\n",
        "{\"claim\": \"sid\", \"value\": \"t\", \"not_before\": 5}\n",
    );
    let limits = BatchLimits {
        items: 2,
        bytes: 1 << 16,
    };
    let read = chunks(text, limits);
    let cutoff_lines: Vec<u64> = read
        .iter()
        .flat_map(|c| c.cutoffs.iter().map(|(line, _)| *line))
        .collect();
    assert_eq!(cutoff_lines, [2, 3]);
    let item_lines: Vec<u64> = read.iter().flat_map(|c| c.batch.lines.clone()).collect();
    assert_eq!(item_lines, [1]);
}
