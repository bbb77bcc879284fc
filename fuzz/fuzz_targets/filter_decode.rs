//! Filter bytes as a gateway receives them (a snapshot's `filter` field,
//! or a stored filter) → `RevocationFilter::from_bytes`.
//!
//! Never panics, and a filter that decodes is exactly its bytes: it
//! re-encodes to the input, answers lookups, and finds what is inserted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revocd::filter::{Digest, RevocationFilter, DIGEST_BYTES};

fuzz_target!(|data: &[u8]| {
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
