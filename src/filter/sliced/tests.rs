use super::*;
use crate::filter::DigestKey;

fn filter(capacity: usize) -> RevocationFilter {
    RevocationFilter::new(capacity, 0.001)
}

fn digest(n: u32) -> Digest {
    DigestKey::new([7; 16]).token("iss", &n.to_string())
}

#[test]
fn a_digest_is_found_in_its_slice_only() {
    let mut sliced = SlicedFilter::new(60);
    let (early, late) = (sliced.slice_of(1_000), sliced.slice_of(5_000));
    sliced.open(early, 100, filter(100));
    sliced.open(late, 100, filter(100));
    assert!(sliced.insert(early, &digest(1)));
    assert!(
        !sliced.insert(sliced.slice_of(9_000), &digest(2)),
        "not open"
    );
    assert!(sliced.contains(Some(1_001), &digest(1)));
    assert!(!sliced.contains(Some(5_001), &digest(1)), "another slice");
    assert!(!sliced.contains(Some(9_001), &digest(1)), "no such slice");
    assert!(
        sliced.contains(None, &digest(1)),
        "without exp: every slice"
    );
}

#[test]
fn a_full_slice_takes_further_filters_and_all_are_probed() {
    let mut sliced = SlicedFilter::new(10);
    sliced.open(3, 2, filter(2));
    for n in 0..2 {
        sliced.insert(3, &digest(n));
    }
    assert!(sliced.slice(3).unwrap().is_full());
    sliced.open(3, 4, filter(4));
    assert!(!sliced.slice(3).unwrap().is_full());
    sliced.insert(3, &digest(9));
    assert_eq!(sliced.slice(3).unwrap().filters().len(), 2);
    assert!([0, 1, 9]
        .iter()
        .all(|n| sliced.contains(Some(35), &digest(*n))));
    assert_eq!(sliced.entries(), 3);
}

#[test]
fn slices_are_dropped_once_their_end_has_passed() {
    let mut sliced = SlicedFilter::new(10);
    for slice in [1, 2, 3] {
        sliced.open(slice, 10, filter(10));
    }
    assert_eq!(sliced.drop_expired(29), 1, "slice 1 ends at 20");
    assert_eq!(sliced.drop_expired(30), 1, "slice 2 ends at 30");
    assert_eq!(sliced.slices().map(|(n, _)| n).collect::<Vec<_>>(), [3]);
}

#[test]
fn the_format_round_trips_and_format_1_reads_as_unsliced() {
    let mut sliced = SlicedFilter::new(30);
    sliced.open(-2, 5, filter(5));
    sliced.open(40, 5, filter(5));
    sliced.open(40, 10, filter(10));
    sliced.insert(-2, &digest(1));
    sliced.insert(40, &digest(2));
    let bytes = sliced.to_bytes();
    let decoded = SlicedFilter::from_bytes(bytes.clone()).unwrap();
    assert_eq!(decoded.to_bytes(), bytes);
    assert_eq!(decoded.slice_seconds(), 30);
    assert!(decoded.contains(Some(-60), &digest(1)));
    assert!(decoded.contains(Some(1_200), &digest(2)));

    let mut single = filter(10);
    single.insert(&digest(3));
    let unsliced = SlicedFilter::from_bytes(single.to_bytes()).unwrap();
    assert_eq!(unsliced.slice_seconds(), 0);
    assert!(unsliced.contains(Some(123), &digest(3)), "any exp");
    assert!(unsliced.contains(None, &digest(3)));
}

#[test]
fn malformed_format_2_is_refused_with_the_field_named() {
    let mut sliced = SlicedFilter::new(30);
    sliced.open(1, 5, filter(5));
    sliced.open(2, 5, filter(5));
    let good = sliced.to_bytes();
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        edit(&mut bytes);
        SlicedFilter::from_bytes(bytes).unwrap_err()
    };
    assert_eq!(with(&|b| b[0] = 3), DecodeError::UnknownVersion(3));
    assert_eq!(
        with(&|b| b[1..5].copy_from_slice(&0u32.to_le_bytes())),
        DecodeError::Invalid("slice_seconds is 0")
    );
    assert_eq!(
        with(&|b| b[5..9].copy_from_slice(&u32::MAX.to_le_bytes())),
        DecodeError::Invalid("more slices than accepted")
    );
    assert!(matches!(
        with(&|b| b.truncate(b.len() - 1)),
        DecodeError::Truncated { .. } | DecodeError::BadLength { .. }
    ));
    assert_eq!(
        with(&|b| b.push(0)),
        DecodeError::Invalid("bytes after the last slice")
    );
    assert_eq!(
        with(&|b| b[9..17].copy_from_slice(&5i64.to_le_bytes())),
        DecodeError::Invalid("slices not in ascending order")
    );
    assert_eq!(
        with(&|b| b[17..21].copy_from_slice(&0u32.to_le_bytes())),
        DecodeError::Invalid("a slice's filter count is 0 or too many")
    );
    assert_eq!(
        SlicedFilter::from_bytes(Vec::new()).unwrap_err(),
        DecodeError::Truncated { field: "version" }
    );
}

#[test]
fn an_empty_filter_is_made_from_its_header_alone() {
    let original = filter(1_000);
    let copy = RevocationFilter::empty_from_header(&original.header()).unwrap();
    assert_eq!(copy.to_bytes(), original.to_bytes());
    assert!(RevocationFilter::empty_from_header(&[1; 10]).is_err());
    let mut absurd = original.header();
    absurd[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(RevocationFilter::empty_from_header(&absurd).is_err());
}
