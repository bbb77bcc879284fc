//! A Subscribe stream as a gateway decodes it: length-delimited
//! `FilterUpdate` frames (see `revocd_fuzz::frames`) → prost → the
//! gateway's public decode path, `SnapshotAssembler::push` for snapshot
//! parts and `FilterView::with_delta` for deltas, in the order
//! `gateway/watch.rs` applies them.
//!
//! Never panics; a refused frame leaves the last good view in use (the
//! gateway then reconnects with a fresh assembler); an applied delta's
//! digests and cut-offs are all in the view it yields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revocd::filter::Digest;
use revocd::gateway::{FilterView, SnapshotAssembler};
use revocd::pb::filter_update::Update;

fuzz_target!(|data: &[u8]| {
    let mut assembler = SnapshotAssembler::default();
    let mut view: Option<FilterView> = None;
    for frame in revocd_fuzz::frames(data) {
        match frame.update {
            Some(Update::Snapshot(part)) => match assembler.push(part) {
                Ok(Some(complete)) => view = Some(complete),
                Ok(None) => {}
                // The gateway drops the stream and starts a new one.
                Err(_) => assembler = SnapshotAssembler::default(),
            },
            Some(Update::Delta(delta)) => {
                let Some(current) = &view else { continue };
                let Ok(next) = current.with_delta(&delta) else {
                    assembler = SnapshotAssembler::default();
                    continue;
                };
                for bytes in &delta.digests {
                    let digest = Digest::from_slice(bytes).expect("the delta was accepted");
                    assert!(
                        next.may_be_revoked(&digest, None),
                        "a delta digest is missing"
                    );
                }
                for entry in &delta.slices {
                    for bytes in entry.digests.chunks(16) {
                        let digest = Digest::from_slice(bytes).expect("the delta was accepted");
                        assert!(
                            next.may_be_revoked(&digest, None),
                            "a slice digest is missing"
                        );
                    }
                }
                for cutoff in &delta.subjects {
                    let digest = Digest::from_slice(&cutoff.digest).expect("accepted");
                    let held = next
                        .subject_cutoff(&digest)
                        .expect("a delta cut-off is missing");
                    assert!(held >= cutoff.not_before, "a cut-off moved back");
                }
                assert_eq!(next.cursor(), delta.cursor);
                assert_eq!(next.generation(), current.generation());
                view = Some(next);
            }
            Some(Update::Heartbeat(_)) | None => {}
        }
    }
    if let Some(view) = view {
        // Lookups on whatever was built.
        let probe = Digest([0x5a; 16]);
        let _ = (
            view.may_be_revoked(&probe, None),
            view.subject_cutoff(&probe),
        );
        let _ = format!("{view:?}");
    }
});
