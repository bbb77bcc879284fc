//! Filter bytes as a gateway receives them (a snapshot's `filter` field,
//! or a stored filter) → `SlicedFilter::from_bytes` (format 2, or format 1
//! as unsliced) and `RevocationFilter::from_bytes` (format 1).
//!
//! Never panics, and a filter that decodes is exactly its bytes: it
//! re-encodes to the input, answers lookups, and finds what is inserted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revocd::filter::{Digest, RevocationFilter, SlicedFilter, DIGEST_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(sliced) = SlicedFilter::from_bytes(data.to_vec()) {
        assert_eq!(
            sliced.to_bytes(),
            data,
            "decode then encode changed the bytes"
        );
        let probe = Digest([0x5a; DIGEST_BYTES]);
        let slices: Vec<i64> = sliced.slices().map(|(number, _)| number).collect();
        for number in slices {
            let seconds = i64::from(sliced.slice_seconds().max(1));
            let _ = sliced.contains(Some(number.saturating_mul(seconds)), &probe);
        }
        let _ = sliced.contains(None, &probe);
    }
    let Ok(mut filter) = RevocationFilter::from_bytes(data.to_vec()) else {
        return;
    };
    assert_eq!(
        filter.to_bytes(),
        data,
        "decode then encode changed the bytes"
    );
    assert!(filter.bits() > 0 && filter.hash_functions() > 0);
    let fill = filter.fill_ratio();
    assert!((0.0..=1.0).contains(&fill), "fill ratio {fill}");
    // Digests taken from the input itself, so lookups hit set and unset bits.
    let digests: Vec<Digest> = data
        .chunks_exact(DIGEST_BYTES)
        .take(8)
        .map(|chunk| Digest::from_slice(chunk).expect("chunks of 16 bytes"))
        .collect();
    for digest in &digests {
        let _ = filter.contains(digest);
        filter.insert(digest);
        assert!(filter.contains(digest), "an inserted digest is missing");
    }
    let reencoded = RevocationFilter::from_bytes(filter.to_bytes()).expect("own bytes decode");
    assert!(digests.iter().all(|d| reencoded.contains(d)));
});
