//! Unit tests of the state file: a view read back as it was saved, and
//! every file that must not be used refused with its reason.

use super::*;
use crate::filter::{DigestKey, RevocationFilter};

fn endpoints() -> Vec<String> {
    vec!["http://b:50051".into(), "http://a:50051".into()]
}

/// A view holding a token revocation in its base, one in its recent set,
/// a subject cut-off and a claim cut-off.
fn view(key: &DigestKey) -> FilterView {
    let mut filter = RevocationFilter::new(1_000, 0.001);
    filter.insert(&key.token("iss", "in-base"));
    let whole = pb::Snapshot {
        generation: 42,
        filter: filter.to_bytes().into(),
        cursor: "1-0".into(),
        digest_key: key.as_bytes().to_vec(),
        part: 0,
        parts: 1,
        leeway: 30,
        max_token_lifetime: 3_600,
        ..Default::default()
    };
    let delta = pb::Delta {
        cursor: "2-0".into(),
        digests: vec![key.token("iss", "in-recent").as_bytes().to_vec().into()],
        subjects: vec![pb::SubjectCutoff {
            digest: key.subject("iss", "alice").as_bytes().to_vec(),
            not_before: 100,
        }],
        claims: vec![pb::ClaimCutoff {
            digest: key.claim("iss", "sid", "s-1").as_bytes().to_vec(),
            not_before: 200,
            claim: "sid".into(),
        }],
        ..Default::default()
    };
    FilterView::from_whole_snapshot(whole)
        .and_then(|view| view.with_delta(&delta))
        .expect("a valid view")
}

#[test]
fn a_saved_view_reads_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let key = DigestKey::random();
    let file = StateFile::new(dir.path(), &endpoints());
    assert!(file.load().unwrap().is_none(), "no file yet");
    let saved = view(&key);
    file.save(&saved).unwrap();
    // The same servers in another order are the same servers.
    let mut reordered = endpoints();
    reordered.reverse();
    let loaded = StateFile::new(dir.path(), &reordered)
        .load()
        .unwrap()
        .expect("a view");
    assert_eq!((loaded.generation(), loaded.cursor()), (42, "2-0"));
    assert_eq!(loaded.digest_key().as_bytes(), key.as_bytes());
    for id in ["in-base", "in-recent"] {
        assert!(loaded.may_be_revoked(&key.token("iss", id), None), "{id}");
    }
    assert_eq!(
        loaded.subject_cutoff(&key.subject("iss", "alice")),
        Some(100)
    );
    assert_eq!(
        loaded.claim_cutoff("sid", &key.claim("iss", "sid", "s-1")),
        Some(200)
    );
    assert_eq!(loaded.bounds(), saved.bounds());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(leftovers, [FILE_NAME], "no temporary file is left");
}

#[test]
fn a_damaged_foreign_or_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path(), &endpoints());
    file.save(&view(&DigestKey::random())).unwrap();
    let saved = std::fs::read(file.path()).unwrap();
    let refusal = |bytes: &[u8]| {
        std::fs::write(file.path(), bytes).unwrap();
        file.load().map(|v| v.is_some()).unwrap_err().to_string()
    };
    let mut flipped = saved.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(refusal(&flipped).contains("checksum"));
    assert!(refusal(&saved[..saved.len() / 2]).contains("checksum"));
    assert!(refusal(b"not a state file at all, just text").contains("header"));
    let mut newer = saved.clone();
    newer[11] = 2;
    assert!(refusal(&newer).contains("version 2"));
    std::fs::write(file.path(), &saved).unwrap();
    let other = StateFile::new(dir.path(), &["http://elsewhere:50051".to_owned()]);
    let foreign = other.load().map(|v| v.is_some()).unwrap_err();
    assert!(matches!(foreign, StateError::Foreign(_)), "{foreign}");
}
