//! Unit tests for the in-memory store: its change log and its records'
//! expiry.

use super::*;
use crate::store::Provenance;

#[tokio::test]
async fn the_log_keeps_the_newest_entries_and_wakes_readers() {
    let store = MemoryStore::new(3);
    for i in 0..5 {
        store.revoke(&revocation(&format!("j{i}"), 100), 0, None);
    }
    let tail = store.log_tail(10);
    assert_eq!(tail.head, "5");
    let cursors: Vec<&str> = tail.entries.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(cursors, ["3", "4", "5"]);

    let mut reader = store.log_reader();
    let writer = store.clone();
    let wait =
        tokio::spawn(async move { reader.read_after("5", 10, Duration::from_secs(5)).await });
    tokio::task::yield_now().await;
    writer.revoke(&revocation("late", 100), 0, None);
    let entries = wait.await.unwrap().expect("no gap");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].cursor, "6");
    assert!(matches!(&entries[0].change, Change::Revoked { jti, .. } if jti == "late"));
}

#[tokio::test]
async fn a_reader_whose_next_entry_was_trimmed_is_told_so() {
    let store = MemoryStore::new(3);
    for i in 0..5 {
        store.revoke(&revocation(&format!("j{i}"), 100), 0, None);
    }
    // Entries 1 and 2 are gone: a reader at 0 or 1 would miss them.
    let mut reader = store.log_reader();
    for cursor in ["0", "1"] {
        let read = reader.read_after(cursor, 10, Duration::ZERO).await;
        assert!(
            matches!(&read, Err(Error::LogGap { cursor: at }) if at == cursor),
            "{cursor}: {read:?}"
        );
    }
    // At 2 the next entry (3) is still there.
    let read = reader.read_after("2", 10, Duration::ZERO).await.unwrap();
    assert_eq!(read.len(), 3);
}

fn revocation(jti: &str, keep_until: i64) -> Revocation {
    Revocation {
        issuer: "iss".into(),
        jti: jti.into(),
        subject: String::new(),
        expires_at: keep_until - 60,
        keep_until,
        provenance: Provenance {
            at: 0,
            by: "test".into(),
            reason: String::new(),
            source: String::new(),
        },
    }
}

#[test]
fn expired_records_are_invisible_and_eventually_purged() {
    let store = MemoryStore::new(100);
    for i in 0..100 {
        store.revoke(&revocation(&format!("old-{i}"), 10), 0, None);
    }
    assert_eq!(store.counts(9).revocations, 100);
    assert_eq!(store.counts(10).revocations, 0);
    assert!(store
        .status("iss", Some("old-1"), &[], 10)
        .revocation
        .is_none());
    // Writes after expiry trigger a purge once the map doubles.
    for i in 0..200 {
        store.revoke(&revocation(&format!("new-{i}"), 1_000), 20, None);
    }
    let held = store.lock().revocations.records.len();
    assert!(held < 300, "expired records were not purged: {held} held");
    assert_eq!(store.counts(20).revocations, 200);
}

#[test]
fn a_later_expiry_extends_the_record_and_keeps_its_author() {
    let store = MemoryStore::new(100);
    let first = store.revoke(&revocation("a", 100), 0, None);
    assert!(first.newly_revoked);
    let mut later = revocation("a", 200);
    later.provenance.by = "someone-else".into();
    let second = store.revoke(&later, 0, None);
    assert!(!second.newly_revoked);
    assert!(second.cursor.is_some(), "an extension is a logged change");
    let stored = store.status("iss", Some("a"), &[], 150).revocation.unwrap();
    assert_eq!(stored.keep_until, 200);
    assert_eq!(stored.provenance.by, "test");
}
