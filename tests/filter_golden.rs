//! Pins the filter's wire format. `tests/fixtures/filter-v1.bin` was made by
//! `tests/fixtures/make_filter_v1.py`, an independent implementation of the
//! documented format (digests and bloom filter) in Python, as a gateway in
//! another language would write it. revocd must produce the same bytes and
//! answer the same; a change to the format breaks this test on purpose. The
//! sliced format 2 is pinned likewise, below.

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

/// Format 2, the filter sliced by expiry: `tests/fixtures/filter-v2.bin`
/// and the answers in `filter-v2-probes.txt` were made by
/// `tests/fixtures/make_filter_v2.py` (see its doc for the slices).
mod sliced {
    use revocd::filter::{DecodeError, DigestKey, RevocationFilter, SlicedFilter};

    const FIXTURE: &[u8] = include_bytes!("fixtures/filter-v2.bin");
    const PROBES: &str = include_str!("fixtures/filter-v2-probes.txt");
    const ISSUER: &str = "https://issuer.test";
    const LEEWAY: i64 = 30;
    const BASE: i64 = 1_700_000_000;

    fn seed(n: u8) -> [u8; 32] {
        std::array::from_fn(|i| n.wrapping_add(i as u8))
    }

    #[test]
    fn revocd_builds_the_bytes_the_reference_script_built() {
        let key = DigestKey::new(std::array::from_fn(|i| i as u8));
        type Filters<'a> = &'a [(u64, f64, u8, &'a [&'a str])];
        let slices: [(i64, Filters); 3] = [
            (-3, &[(10, 0.001, 200, &["c-0"])]),
            (
                BASE.div_euclid(60),
                &[(20, 0.01, 3, &["a-0", "a-1", "a-2"])],
            ),
            (
                BASE.div_euclid(60) + 7,
                &[
                    (4, 0.01, 40, &["b-0", "b-1", "b-2", "b-3"]),
                    (8, 0.0025, 90, &["b-4", "b-5"]),
                ],
            ),
        ];
        let mut sliced = SlicedFilter::new(60);
        for (number, filters) in slices {
            for (capacity, rate, seed_of, jtis) in filters {
                let filter =
                    RevocationFilter::with_seed(*capacity as usize, *rate, &seed(*seed_of));
                sliced.open(number, *capacity, filter);
                for jti in *jtis {
                    assert!(sliced.insert(number, &key.token(ISSUER, jti)));
                }
            }
        }
        assert_eq!(sliced.to_bytes(), FIXTURE);
    }

    #[test]
    fn the_fixture_answers_every_probe_as_the_reference_lookup_does() {
        let sliced = SlicedFilter::from_bytes(FIXTURE.to_vec()).expect("fixture decodes");
        let key = DigestKey::new(std::array::from_fn(|i| i as u8));
        let mut lines = 0;
        for line in PROBES.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let (jti, exp, expected) = (
                fields[0],
                fields[1].parse::<i64>().unwrap(),
                fields[2] == "1",
            );
            let found = sliced.contains(Some(exp + LEEWAY), &key.token(ISSUER, jti));
            assert_eq!(found, expected, "{line}");
            lines += 1;
        }
        assert_eq!(lines, 40);
    }

    #[test]
    fn an_old_decoder_refuses_format_2_by_name() {
        // A gateway of protocol 2 decodes `Snapshot.filter` as format 1.
        assert_eq!(
            RevocationFilter::from_bytes(FIXTURE.to_vec()).unwrap_err(),
            DecodeError::UnknownVersion(2)
        );
        assert_eq!(
            DecodeError::UnknownVersion(2).to_string(),
            "filter format version 2 is not supported (expected 1)"
        );
    }
}
