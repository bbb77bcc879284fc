//! Pins the filter's wire format. `tests/fixtures/filter-v1.bin` was made by
//! `tests/fixtures/make_filter_v1.py`, an independent implementation of the
//! documented format (digests and bloom filter) in Python, as a gateway in
//! another language would write it. revocd must produce the same bytes and
//! answer the same; a change to the format breaks this test on purpose.

use revocd::filter::{DecodeError, DigestKey, RevocationFilter};

const FIXTURE: &[u8] = include_bytes!("fixtures/filter-v1.bin");
const ISSUER: &str = "https://issuer.test";

fn digest_key() -> DigestKey {
    DigestKey::new(std::array::from_fn(|i| i as u8))
}

fn seed() -> [u8; 32] {
    std::array::from_fn(|i| i as u8 + 1)
}

#[test]
fn revocd_builds_the_bytes_the_reference_script_built() {
    let key = digest_key();
    let mut filter = RevocationFilter::with_seed(100, 0.01, &seed());
    for i in 0..10 {
        filter.insert(&key.token(ISSUER, &format!("jti-{i}")));
    }
    assert_eq!(filter.to_bytes(), FIXTURE);
}

#[test]
fn the_fixture_decodes_and_answers_for_its_entries() {
    let filter = RevocationFilter::from_bytes(FIXTURE.to_vec()).expect("fixture decodes");
    let key = digest_key();
    assert!((0..10).all(|i| filter.contains(&key.token(ISSUER, &format!("jti-{i}")))));
    let strangers =
        (0..1_000).filter(|i| filter.contains(&key.token(ISSUER, &format!("other-{i}"))));
    assert!(strangers.count() < 30, "a 1% filter with 10 of 100 entries");
    assert_eq!(filter.hash_functions(), u32::from(FIXTURE[9]));
}

#[test]
fn a_damaged_fixture_is_refused() {
    let mut wrong_version = FIXTURE.to_vec();
    wrong_version[0] = 9;
    assert_eq!(
        RevocationFilter::from_bytes(wrong_version).unwrap_err(),
        DecodeError::UnknownVersion(9)
    );
    let truncated = FIXTURE[..FIXTURE.len() - 1].to_vec();
    assert!(matches!(
        RevocationFilter::from_bytes(truncated),
        Err(DecodeError::BadLength { .. })
    ));
}

#[test]
fn claim_digests_are_the_ones_the_reference_script_computes() {
    // Made by `make_filter_v1.py --claim-digests`: claim, value, hex digest.
    let fixture = include_str!("fixtures/claim-digests-v1.txt");
    let key = digest_key();
    let mut rows = 0;
    for line in fixture.lines() {
        let [claim, value, expected] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("malformed fixture line {line:?}");
        };
        let digest = key.claim(ISSUER, claim, value);
        assert_eq!(hex::encode(digest.0), expected, "{claim} = {value:?}");
        rows += 1;
    }
    assert_eq!(rows, 5);
}
