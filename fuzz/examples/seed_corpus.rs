//! Writes the generated part of the seed corpora, `fuzz/corpus/<target>/`:
//! real filters, real Subscribe frames encoded with prost, real tokens,
//! each beside near-valid variants. Hand-written seeds (copies of
//! `deploy/` files, the golden filter) are listed in `fuzz/README.md`.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//!
//! Deterministic except the ES256 signatures (ECDSA signing is randomised).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey};
use revocd::filter::{DigestKey, RevocationFilter, SlicedFilter, DIGEST_BYTES, HEADER_BYTES};
use revocd::pb::{self, filter_update::Update, FilterUpdate};
use revocd_fuzz::{encode_frames, signed_token, signing_key, TokenMode, AUDIENCE, ISSUER};

/// Seeds of the filter: two halves that differ (see `RevocationFilter::with_seed`).
const SEED: [u8; 32] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, //
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
];
/// `revocd::gateway::view::MERGE_AT`, which is not public (the `view`
/// module is private and re-exports only its types).
const MERGE_AT: usize = 1_024;
/// 2100-01-01, so seed tokens stay unexpired for as long as it matters.
const EXP: i64 = 4_102_444_800;
/// The slice of sliced seed filters: seed tokens' `exp` plus the 60 s
/// leeway, in 60-second slices.
const SLICE: i64 = (EXP + 60) / 60;

fn main() {
    filter_decode();
    subscribe_frames();
    jwt_claims();
}

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("creating the corpus directory");
    dir
}

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let path = corpus(target).join(name);
    std::fs::write(&path, bytes).expect("writing a seed");
    println!("{}", path.display());
}

fn key() -> DigestKey {
    DigestKey::new(std::array::from_fn(|i| i as u8))
}

fn filter_with(entries: usize) -> RevocationFilter {
    let key = key();
    let mut filter = RevocationFilter::with_seed(entries.max(10), 0.001, &SEED);
    for i in 0..entries {
        filter.insert(&key.token(ISSUER, &format!("jti-{i}")));
    }
    filter
}

/// A format-2 filter: two slices, the second with a further filter, as a
/// replica of stream protocol 3 sends it.
fn sliced_with(entries: usize) -> SlicedFilter {
    let key = key();
    let mut sliced = SlicedFilter::new(60);
    sliced.open(SLICE, 10, RevocationFilter::with_seed(10, 0.001, &SEED));
    sliced.open(SLICE + 1, 4, RevocationFilter::with_seed(4, 0.001, &SEED));
    sliced.open(SLICE + 1, 8, RevocationFilter::with_seed(8, 0.00025, &SEED));
    for i in 0..entries {
        sliced.insert(
            SLICE + (i % 2) as i64,
            &key.token(ISSUER, &format!("jti-{i}")),
        );
    }
    sliced
}

fn filter_decode() {
    let sliced = sliced_with(12).to_bytes();
    write("filter_decode", "valid-sliced", &sliced);
    write(
        "filter_decode",
        "valid-sliced-empty",
        SlicedFilter::new(1).to_bytes(),
    );
    let mut unordered = sliced.clone();
    unordered[9..17].copy_from_slice(&(SLICE + 5).to_le_bytes());
    write("filter_decode", "sliced-slices-unordered", unordered);
    write(
        "filter_decode",
        "sliced-truncated",
        &sliced[..sliced.len() - 1],
    );
    let good = filter_with(20).to_bytes();
    write("filter_decode", "valid-20-entries", &good);
    write("filter_decode", "valid-empty", filter_with(0).to_bytes());
    let edit = |name: &str, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        change(&mut bytes);
        write("filter_decode", name, bytes);
    };
    edit("bad-version", &|b| b[0] = 2);
    edit("bad-hash-count-0", &|b| {
        b[9..13].copy_from_slice(&0u32.to_le_bytes())
    });
    edit("bad-hash-count-33", &|b| {
        b[9..13].copy_from_slice(&33u32.to_le_bytes())
    });
    edit("bitmap-one-short", &|b| {
        b.pop();
    });
    edit("bitmap-one-long", &|b| b.push(0xff));
    edit("header-only", &|b| b.truncate(HEADER_BYTES));
    edit("header-truncated", &|b| b.truncate(HEADER_BYTES - 1));
    edit("length-huge", &|b| {
        b[1..9].copy_from_slice(&u64::MAX.to_le_bytes())
    });
}

/// The filter (its bytes) as the hub frames it: parts of at most
/// `part_bytes` filter bytes, one subject cut-off (in part 0).
fn snapshot_parts(filter: Vec<u8>, part_bytes: usize, generation: u64) -> Vec<pb::Snapshot> {
    let whole = pb::Snapshot {
        generation,
        filter: filter.into(),
        subjects: vec![cutoff("alice", 1_700_000_000)],
        claims: vec![claim_cutoff("sid", "session-1", 1_700_000_000)],
        cursor: "1700000000000-0".into(),
        digest_key: key().as_bytes().to_vec(),
        part: 0,
        parts: 1,
        leeway: 60,
        max_token_lifetime: 86_400,
    };
    revocd::snapshot::split(whole, part_bytes)
}

fn cutoff(subject: &str, not_before: i64) -> pb::SubjectCutoff {
    pb::SubjectCutoff {
        digest: key().subject(ISSUER, subject).0.to_vec(),
        not_before,
    }
}

fn claim_cutoff(claim: &str, value: &str, not_before: i64) -> pb::ClaimCutoff {
    pb::ClaimCutoff {
        digest: key().claim(ISSUER, claim, value).0.to_vec(),
        not_before,
        claim: claim.into(),
    }
}

fn delta(
    cursor: &str,
    jtis: impl IntoIterator<Item = String>,
    subjects: Vec<pb::SubjectCutoff>,
) -> pb::Delta {
    pb::Delta {
        cursor: cursor.into(),
        digests: jtis
            .into_iter()
            .map(|jti| Bytes::copy_from_slice(&key().token(ISSUER, &jti).0))
            .collect(),
        subjects,
        logged_at_ms: 1_700_000_000_123,
        claims: vec![claim_cutoff("*", "", 1_700_000_000)],
        slices: Vec::new(),
    }
}

/// A protocol-3 delta: the jtis' digests in `slice`, after the filter it
/// opens, if any.
fn slice_delta(
    cursor: &str,
    slice: i64,
    open: Option<&RevocationFilter>,
    jtis: &[&str],
) -> pb::Delta {
    let digests: Vec<u8> = jtis
        .iter()
        .flat_map(|jti| key().token(ISSUER, jti).0)
        .collect();
    pb::Delta {
        cursor: cursor.into(),
        slices: vec![pb::SliceDelta {
            slice,
            open: open.map(|filter| pb::SliceOpen {
                capacity: 16,
                header: filter.header().to_vec(),
            }),
            digests: digests.into(),
        }],
        ..pb::Delta::default()
    }
}

fn frame(update: Update) -> FilterUpdate {
    FilterUpdate {
        update: Some(update),
    }
}

fn snapshot_frames(parts: Vec<pb::Snapshot>) -> Vec<FilterUpdate> {
    parts
        .into_iter()
        .map(|p| frame(Update::Snapshot(p)))
        .collect()
}

fn heartbeat() -> FilterUpdate {
    frame(Update::Heartbeat(pb::Heartbeat {
        cursor: "1700000000000-0".into(),
        server_time_ms: 1_700_000_001_000,
    }))
}

fn subscribe_frames() {
    let filter = filter_with(20);
    let target = "subscribe_frames";

    // One part, then a delta with a token and a cut-off, then a heartbeat.
    let mut frames = snapshot_frames(snapshot_parts(filter.to_bytes(), 1 << 20, 7));
    frames.push(frame(Update::Delta(delta(
        "1700000000001-0",
        ["new-1".to_owned()],
        vec![cutoff("bob", 1_700_000_001)],
    ))));
    frames.push(heartbeat());
    write(target, "snapshot-delta-heartbeat", encode_frames(&frames));

    // A snapshot in three parts (as the server chunks big ones), deltas.
    let mut frames = snapshot_frames(snapshot_parts(filter.to_bytes(), 32, 8));
    assert!(frames.len() >= 3);
    for n in 0..3 {
        let jtis = (0..4).map(|i| format!("d{n}-{i}"));
        frames.push(frame(Update::Delta(delta(&format!("c{n}"), jtis, vec![]))));
    }
    write(target, "chunked-snapshot-deltas", encode_frames(&frames));

    // Enough delta digests to fold the recent set into the base filter
    // (`gateway::view::MERGE_AT`); also sets libFuzzer's -max_len.
    let mut frames = snapshot_frames(snapshot_parts(filter.to_bytes(), 1 << 20, 9));
    let jtis = (0..MERGE_AT + 16).map(|i| format!("bulk-{i}"));
    frames.push(frame(Update::Delta(delta("bulk", jtis, vec![]))));
    write(target, "delta-merges-into-base", encode_frames(&frames));

    // Protocol 3: a sliced snapshot, a delta into a slice held, one
    // opening a new slice, one opening a further filter in a slice.
    let sliced = sliced_with(12).to_bytes();
    let mut frames = snapshot_frames(snapshot_parts(sliced.clone(), 64, 16));
    let opened = RevocationFilter::with_seed(16, 0.001, &SEED);
    frames.extend([
        frame(Update::Delta(slice_delta(
            "s1",
            SLICE,
            None,
            &["s-a", "s-b"],
        ))),
        frame(Update::Delta(slice_delta(
            "s2",
            SLICE + 9,
            Some(&opened),
            &["s-c"],
        ))),
        frame(Update::Delta(slice_delta(
            "s3",
            SLICE,
            Some(&opened),
            &["s-d"],
        ))),
        heartbeat(),
    ]);
    write(target, "sliced-snapshot-deltas", encode_frames(&frames));
    let mut frames = snapshot_frames(snapshot_parts(sliced, 1 << 20, 17));
    frames.push(frame(Update::Delta(slice_delta(
        "s4",
        SLICE + 40,
        None,
        &["s-e"],
    ))));
    write(target, "sliced-delta-unknown-slice", encode_frames(&frames));

    // Near-valid streams the gateway must refuse.
    let delta_first = vec![
        frame(Update::Delta(delta("c", ["x".to_owned()], vec![]))),
        heartbeat(),
    ];
    write(target, "delta-before-snapshot", encode_frames(&delta_first));
    let mut parts = snapshot_parts(filter.to_bytes(), 32, 10);
    parts.swap(0, 1);
    write(
        target,
        "parts-out-of-order",
        encode_frames(&snapshot_frames(parts)),
    );
    let mut parts = snapshot_parts(filter.to_bytes(), 32, 11);
    parts[1].generation = 12;
    write(
        target,
        "parts-mixed-generations",
        encode_frames(&snapshot_frames(parts)),
    );
    let mut parts = snapshot_parts(filter.to_bytes(), 1 << 20, 13);
    parts[0].digest_key.pop();
    write(
        target,
        "bad-digest-key",
        encode_frames(&snapshot_frames(parts)),
    );
    let mut frames = snapshot_frames(snapshot_parts(filter.to_bytes(), 1 << 20, 14));
    let mut short = delta("c", ["y".to_owned()], vec![]);
    short.digests[0].truncate(DIGEST_BYTES - 1);
    frames.push(frame(Update::Delta(short)));
    write(target, "delta-short-digest", encode_frames(&frames));
    let mut parts = snapshot_parts(filter.to_bytes(), 1 << 20, 15);
    parts[0].filter = parts[0].filter.slice(..HEADER_BYTES + 3);
    write(
        target,
        "snapshot-truncated-filter",
        encode_frames(&snapshot_frames(parts)),
    );
}

fn jwt_claims() {
    let target = "jwt_claims";
    let claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","jti":"j-1","iat":1700000000,"exp":{EXP}}}"#
    );
    let hs256 = signing_key(TokenMode::SignedHs256).expect("signing mode");
    let es256 = signing_key(TokenMode::SignedEs256).expect("signing mode");
    let raw = |name: &str, token: &str| {
        write(
            target,
            name,
            [&[TokenMode::Raw.byte()], token.as_bytes()].concat(),
        )
    };
    let sign = |(key, alg): &(EncodingKey, Algorithm), header: &str, payload: &str| {
        signed_token(header.as_bytes(), payload.as_bytes(), key, *alg)
    };

    // The claims signed under a header: whole, real tokens (they verify
    // under both verifiers), then near-valid ones.
    for (name, key, header) in [
        ("raw-hs256-valid", &hs256, r#"{"alg":"HS256","typ":"JWT"}"#),
        ("raw-es256-valid", &es256, r#"{"alg":"ES256","typ":"JWT"}"#),
        (
            "raw-es256-kid-ec-1",
            &es256,
            r#"{"alg":"ES256","kid":"ec-1"}"#,
        ),
        ("raw-unknown-kid", &hs256, r#"{"alg":"HS256","kid":"nope"}"#),
        (
            "raw-rs256-hmac-signed",
            &hs256,
            r#"{"alg":"RS256","kid":"rsa-1"}"#,
        ),
    ] {
        raw(name, &sign(key, header, &claims));
    }
    // Near-valid: no signature at all.
    raw(
        "raw-alg-none",
        &format!(
            "{}.",
            sign(&hs256, r#"{"alg":"none"}"#, &claims)
                .rsplit_once('.')
                .unwrap()
                .0
        ),
    );
    raw("raw-three-dots", "a.b.c");
    raw("raw-empty-parts", "..");

    // Header and claims, signed by the target.
    let signed = |name: &str, mode: TokenMode, header: &str, payload: &str| {
        write(
            target,
            name,
            format!("{}{header}\n{payload}", mode.byte() as char),
        );
    };
    let hs = TokenMode::SignedHs256;
    let es = TokenMode::SignedEs256;
    let hs_header = r#"{"alg":"HS256","typ":"JWT"}"#;
    signed("hs256-valid", hs, hs_header, &claims);
    signed("es256-valid", es, r#"{"alg":"ES256"}"#, &claims);
    signed(
        "hs256-aud-array",
        hs,
        hs_header,
        &format!(r#"{{"iss":"{ISSUER}","aud":["x","{AUDIENCE}"],"exp":{EXP}}}"#),
    );
    signed(
        "hs256-no-exp",
        hs,
        hs_header,
        &format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#),
    );
    signed(
        "hs256-exp-text",
        hs,
        hs_header,
        &format!(r#"{{"iss":"{ISSUER}","exp":"{EXP}"}}"#),
    );
    signed(
        "hs256-exp-fraction",
        hs,
        hs_header,
        r#"{"exp":1.5e300,"iat":-1e300,"nbf":0.5}"#,
    );
    signed(
        "hs256-nbf-future",
        hs,
        hs_header,
        &format!(r#"{{"exp":{EXP},"nbf":{EXP}}}"#),
    );
    signed(
        "hs256-duplicate-claim",
        hs,
        hs_header,
        &format!(r#"{{"exp":{EXP},"exp":1}}"#),
    );
    signed(
        "hs256-wrong-issuer",
        hs,
        hs_header,
        &format!(r#"{{"iss":"https://evil.example","aud":"{AUDIENCE}","exp":{EXP}}}"#),
    );
    signed("hs256-not-json", hs, hs_header, "not json");
    signed(
        "hs256-crit-header",
        hs,
        r#"{"alg":"HS256","crit":["exp"],"b64":false}"#,
        &claims,
    );
}
