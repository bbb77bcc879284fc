//! What the revocation check adds to a gateway's JWT verification, for
//! HS256 and ES256 tokens.
//!
//! ```text
//! cargo bench --bench gateway [-- --warm-up-time 1 --measurement-time 3]
//! ```
//!
//! # What is measured
//!
//! For each algorithm, on one valid, unrevoked token (the common case):
//!
//! - `decode`: the baseline, bare `jsonwebtoken::decode` of the token with
//!   the same key and the same `Validation` the verifier prepares (issuer,
//!   audience, `nbf` with 60 s leeway, `exp` left to the caller) into a
//!   struct of the five claims revocd reads;
//! - `verify`: [`TokenVerifier::verify`] (header, key choice, decode);
//! - `check`: [`Gateway::check`], the whole in-process judgement: `verify`
//!   plus the revocation part;
//! - `check_claims`: [`Gateway::check_claims`] alone on already verified
//!   claims: the revocation part measured directly (inputs cloned and
//!   outputs dropped outside the clock).
//!
//! A second round measures `check_claims` of the same HS256 token again
//! after cut-offs of four claims came into force over the stream (100,000
//! `sid` ones, a `client_id`, an `azp` and an issuer-wide one, none covering
//! the token): what each claim in force adds, target <= 60 ns.
//!
//! The report gives the revocation part as a share of the bare decode, both
//! measured directly (`check_claims / decode`) and as the difference
//! `(check - verify) / decode`. Targets: <= 5% for ES256, <= 20% for HS256.
//!
//! # Why a real gateway behind a real server
//!
//! The revocation part is measured on a real [`Gateway`] whose filter came
//! over gRPC from an in-process revocd, rather than on a `FilterView` built
//! from a hand-made snapshot: `check_claims` then runs exactly as in
//! production (expiry test, staleness clock, the `ArcSwap` load of the
//! current view, subject cut-off lookup, token digest and filter probe), with
//! nothing re-implemented here that could drift from it. The server is
//! `revocd serve --dev` (memory store) built by `ServeConfig::start_state`; its
//! store is filled with 1,000,000 revocations and 1,000 subject cut-offs
//! through the store's own `revoke` methods before it serves, and a fresh
//! filter hub loads them as at any start-up, so the gateway holds the filter a
//! server of that size really sends (sized for twice the live count, as
//! every rebuild is), not a cache-friendly empty one. Its heartbeats keep the
//! view fresh during the run; the server and the gateway's stream run on a
//! background Tokio runtime and are idle while criterion measures.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use criterion::Criterion;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use revocd::gateway::{Denial, Gateway, GatewayConfig, Verdict};
use revocd::hub::FilterHub;
use revocd::store::{Cutoff, Provenance, Revocation, Store};
use revocd::time::unix_now;
use revocd::tokens::{Claims, TokenVerifier};

#[allow(dead_code)] // shared with the other benchmarks; each uses a subset
#[path = "support/mod.rs"]
mod support;

use support::{human, serve_config, token_id, verdict, Medians, RunningServer};

/// Revocations the server holds, so the gateway's filter has their size.
const REVOCATIONS: u64 = 1_000_000;
/// Subject cut-offs the server holds.
const SUBJECT_CUTOFFS: u64 = 1_000;
/// Session (`sid`) cut-offs added for the second round; with one
/// `client_id`, one `azp` and one issuer-wide cut-off, four claims are
/// then in force.
const SESSION_CUTOFFS: u64 = 100_000;
/// Claims with cut-offs in force in the second round.
const CLAIMS_IN_FORCE: f64 = 4.0;
/// Target: what each claim in force may add to `check_claims`.
const PER_CLAIM_TARGET_NS: f64 = 60.0;
/// The issuer of every token.
const ISSUER: &str = "https://issuer.example";
/// The audience of every token.
const AUDIENCE: &str = "https://api.example";
/// The HS256 secret.
const SECRET: &[u8] = b"gateway-benchmark-secret-0123456789abcdef";
/// Clock leeway of the verifier and the server, in seconds.
const LEEWAY: u64 = 60;
/// Lifetime of the tokens and of the revocations, in seconds.
const LIFETIME: i64 = 3_600;
/// The EC P-256 test key pair (see `tests/fixtures/keys/README.md`).
const EC_PRIVATE_PEM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/keys/ec256_private.pem"
);
/// See [`EC_PRIVATE_PEM`].
const EC_PUBLIC_PEM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/keys/ec256_public.pem"
);
/// Longest wait for the gateway's first snapshot.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Claims cloned ahead of each timed batch of `check_claims`.
const CLAIMS_BATCH: usize = 1_024;
/// Targets: revocation part / bare decode.
const HS256_TARGET: f64 = 0.20;
/// See [`HS256_TARGET`].
const ES256_TARGET: f64 = 0.05;

/// The claims of a benchmark token: what an access token typically holds.
#[derive(Serialize)]
struct TokenClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    scope: &'a str,
    sid: String,
    client_id: &'a str,
    azp: &'a str,
}

/// What the baseline decodes into: the five claims revocd reads, the same
/// fields as the verifier's own claim struct.
#[derive(Deserialize)]
#[allow(dead_code)] // read by serde only
struct BareClaims {
    iss: Option<String>,
    jti: Option<String>,
    sub: Option<String>,
    exp: Option<f64>,
    iat: Option<f64>,
}

/// One algorithm's token, with the baseline's key and validation.
struct Case {
    name: &'static str,
    token: String,
    key: DecodingKey,
    validation: Validation,
    target: f64,
}

impl Case {
    fn hs256(claims: &TokenClaims) -> Result<Self> {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET)?,
        )?;
        Ok(Case {
            name: "hs256",
            token,
            key: DecodingKey::from_secret(SECRET)?,
            validation: validation(Algorithm::HS256),
            target: HS256_TARGET,
        })
    }

    fn es256(claims: &TokenClaims) -> Result<Self> {
        let private = std::fs::read(EC_PRIVATE_PEM).context(EC_PRIVATE_PEM)?;
        let public = std::fs::read(EC_PUBLIC_PEM).context(EC_PUBLIC_PEM)?;
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            claims,
            &EncodingKey::from_ec_pem(&private)?,
        )?;
        Ok(Case {
            name: "es256",
            token,
            key: DecodingKey::from_ec_pem(&public)?,
            validation: validation(Algorithm::ES256),
            target: ES256_TARGET,
        })
    }

    /// The baseline: bare `jsonwebtoken::decode`.
    fn decode(&self) -> BareClaims {
        jsonwebtoken::decode::<BareClaims>(&self.token, &self.key, &self.validation)
            .expect("the benchmark token decodes")
            .claims
    }
}

/// The `Validation` `TokenVerifierBuilder` prepares for one issuer, one
/// audience and [`LEEWAY`], so the baseline does the same checks.
fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = true;
    validation.leeway = LEEWAY;
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    validation
}

/// The gateway's verifier: the HS256 secret and the EC public key.
fn verifier() -> Result<TokenVerifier> {
    Ok(TokenVerifier::builder()
        .hs256_secret(SECRET)?
        .public_key_pem_file(Path::new(EC_PUBLIC_PEM))?
        .issuers(&[ISSUER.to_owned()])
        .audiences(&[AUDIENCE.to_owned()])
        .leeway_seconds(LEEWAY)
        .build()?)
}

/// The subject of cut-off `index`.
fn subject(index: u64) -> String {
    format!("user-{index}")
}

/// The session of cut-off `index`.
fn session(index: u64) -> String {
    format!("session-{index}")
}

/// Adds [`SESSION_CUTOFFS`] session cut-offs, a `client_id`, an `azp` and
/// an issuer-wide one (older than every benchmark token) to the running
/// server's store; they reach the gateway as deltas.
async fn add_claim_cutoffs(store: &Store, now: i64) -> Result<()> {
    let provenance = Provenance {
        at: now,
        by: "bench".into(),
        reason: String::new(),
        source: String::new(),
    };
    let cutoff = |claim: &str, value: String, not_before: i64| Cutoff {
        issuer: ISSUER.into(),
        claim: claim.into(),
        value,
        not_before,
        keep_until: now + 2 * LIFETIME,
        provenance: provenance.clone(),
    };
    for index in 0..SESSION_CUTOFFS {
        store
            .cut(&cutoff("sid", session(index), now - 10), now)
            .await?;
    }
    store
        .cut(&cutoff("client_id", "leaked-app".into(), now - 10), now)
        .await?;
    store
        .cut(&cutoff("azp", "old-web".into(), now - 10), now)
        .await?;
    store
        .cut(&cutoff("*", String::new(), now - LIFETIME), now)
        .await?;
    Ok(())
}

/// Waits until the gateway holds every cut-off [`add_claim_cutoffs`] made.
async fn claim_cutoffs_arrived(gateway: &Gateway) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let view = gateway.view().expect("the gateway is ready");
        let last = view
            .digest_key()
            .claim(ISSUER, "sid", &session(SESSION_CUTOFFS - 1));
        if view.claims_cut().count() == CLAIMS_IN_FORCE as usize
            && view.claim_cutoff("sid", &last).is_some()
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the claim cut-offs did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fills a store with [`REVOCATIONS`] revocations and [`SUBJECT_CUTOFFS`]
/// cut-offs (all subjects' tokens issued before now).
async fn fill(store: &Store, now: i64) -> Result<()> {
    let provenance = Provenance {
        at: now,
        by: "benchmark".into(),
        reason: String::new(),
        source: String::new(),
    };
    for index in 0..REVOCATIONS {
        let revocation = Revocation {
            issuer: ISSUER.into(),
            jti: token_id(index),
            subject: String::new(),
            expires_at: now + LIFETIME,
            keep_until: now + LIFETIME + LEEWAY as i64,
            provenance: provenance.clone(),
        };
        store.revoke(&revocation, now).await?;
    }
    for index in 0..SUBJECT_CUTOFFS {
        let cutoff = Cutoff {
            issuer: ISSUER.into(),
            claim: "sub".into(),
            value: subject(index),
            not_before: now - 10,
            keep_until: now + 2 * LIFETIME,
            provenance: provenance.clone(),
        };
        store.cut(&cutoff, now).await?;
    }
    Ok(())
}

/// revocd serving the filled store, and a gateway subscribed to it.
struct Setup {
    server: RunningServer,
    /// The server's store, to add cut-offs while it serves.
    store: Store,
    gateway: Gateway,
    /// Time from the gateway's start to its first snapshot applied.
    ready_after: Duration,
}

impl Setup {
    /// Starts both on the current runtime and waits for the gateway's view.
    async fn start(now: i64) -> Result<Self> {
        let leeway = LEEWAY.to_string();
        let config = serve_config(&["--dev", "--jwt-issuer", ISSUER, "--leeway", &leeway])?;
        // The memory store, as `revocd serve --dev` without Redis has it.
        let mut state = config.start_state(None).await?;
        fill(&state.store, now).await?;
        // The state's hub loaded the store while it was empty; a new one
        // loads the filled store as a replica does at start-up.
        state.hub.shutdown();
        let digest_key = state.store.digest_key(None).await?;
        state.hub = FilterHub::spawn(state.store.clone(), digest_key, config.hub_config());
        let store = state.store.clone();
        let server = RunningServer::start(state).await?;
        let started = Instant::now();
        let gateway = Gateway::spawn(GatewayConfig::new([server.url()]), verifier()?)?;
        ensure!(
            gateway.ready(READY_TIMEOUT).await,
            "the gateway got no snapshot in {READY_TIMEOUT:?}"
        );
        Ok(Setup {
            server,
            store,
            gateway,
            ready_after: started.elapsed(),
        })
    }
}

/// Claims of a valid token by a subject without cut-off, whose jti the
/// gateway's filter does not flag (an unrevoked jti that is a false
/// positive is skipped: it would measure the rare `Confirm` path).
fn unrevoked_claims(gateway: &Gateway, now: i64) -> TokenClaims<'static> {
    let mut claims = TokenClaims {
        iss: ISSUER,
        sub: subject(SUBJECT_CUTOFFS + 1),
        aud: AUDIENCE,
        jti: String::new(),
        iat: now,
        nbf: now,
        exp: now + LIFETIME,
        scope: "orders:read orders:write",
        sid: session(SESSION_CUTOFFS + 1),
        client_id: "orders-app",
        azp: "orders-web",
    };
    let view = gateway.view().expect("the gateway is ready");
    claims.jti = (REVOCATIONS..)
        .map(token_id)
        .find(|jti| !view.may_be_revoked(&view.digest_key().token(ISSUER, jti), None))
        .expect("some jti is not a false positive");
    claims
}

/// Fails unless the gateway judges like a server holding the filled store.
fn sanity_check(gateway: &Gateway, cases: &[Case], now: i64) -> Result<()> {
    for case in cases {
        ensure!(
            matches!(gateway.check(&case.token), Verdict::Allow(_)),
            "{}: the benchmark token is not allowed",
            case.name
        );
    }
    let verifier = verifier()?;
    let claims = verifier.verify(&cases[0].token)?;
    let revoked = Claims {
        jti: Some(token_id(0)),
        ..claims.clone()
    };
    ensure!(
        matches!(gateway.check_claims(revoked), Verdict::Confirm(_)),
        "a revoked jti is not flagged: the filter is not the server's"
    );
    let cut_off = Claims {
        subject: Some(subject(0)),
        issued_at: Some(now - 60),
        ..claims
    };
    ensure!(
        gateway.check_claims(cut_off) == Verdict::Deny(Denial::RevokedBySubject),
        "a subject cut-off is not applied"
    );
    Ok(())
}

/// Fails unless the gateway applies the claim cut-offs and still allows
/// the benchmark token.
fn claim_sanity_check(gateway: &Gateway, claims: &Claims, now: i64) -> Result<()> {
    ensure!(
        matches!(gateway.check_claims(claims.clone()), Verdict::Allow(_)),
        "the benchmark token is not allowed under the claim cut-offs"
    );
    let cut_session = Claims {
        session: Some(session(7).as_str().into()),
        issued_at: Some(now - 60),
        ..claims.clone()
    };
    ensure!(
        gateway.check_claims(cut_session) == Verdict::Deny(Denial::RevokedByClaim("sid".into())),
        "a session cut-off is not applied"
    );
    Ok(())
}

fn main() -> Result<()> {
    // Workers for the server and the gateway's stream; criterion measures
    // on the main thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("revocd")
        .build()?;
    let now = unix_now();
    let setup = runtime.block_on(Setup::start(now))?;
    let claims = unrevoked_claims(&setup.gateway, now);
    let cases = [Case::hs256(&claims)?, Case::es256(&claims)?];
    sanity_check(&setup.gateway, &cases, now)?;

    let mut criterion = Criterion::default().configure_from_args();
    let medians = Medians::default();
    let verifier = verifier()?;
    let gateway = &setup.gateway;
    let check_claims = |group: &mut support::Group<'_>, verified: &Claims| {
        group.bench_batched(
            "check_claims",
            CLAIMS_BATCH,
            || verified.clone(),
            |claims| gateway.check_claims(claims),
        );
    };
    for case in &cases {
        let verified = verifier.verify(&case.token)?;
        let mut group = medians.group(&mut criterion, case.name);
        group.bench("decode", || case.decode());
        group.bench("verify", || verifier.verify(&case.token));
        group.bench("check", || gateway.check(&case.token));
        check_claims(&mut group, &verified);
        group.finish();
    }
    // The second round: the same token with four claims' cut-offs in force.
    runtime.block_on(async {
        add_claim_cutoffs(&setup.store, now).await?;
        claim_cutoffs_arrived(gateway).await
    })?;
    let verified = verifier.verify(&cases[0].token)?;
    claim_sanity_check(gateway, &verified, now)?;
    let mut group = medians.group(&mut criterion, "hs256-claim-rules");
    check_claims(&mut group, &verified);
    group.finish();
    criterion.final_summary();

    print_report(&medians, &cases, &setup);
    print_claim_rules(&medians);
    runtime.block_on(setup.server.stop())
}

/// What the claim cut-offs in force add to the revocation part, per claim.
fn print_claim_rules(medians: &Medians) {
    let before = medians.ns("hs256/check_claims");
    let after = medians.ns("hs256-claim-rules/check_claims");
    let per_claim = before
        .zip(after)
        .map(|(before, after)| (after - before) / CLAIMS_IN_FORCE);
    let target = per_claim.map_or(String::new(), |ns| {
        format!(
            "<= {PER_CLAIM_TARGET_NS:.0} ns {}",
            verdict(ns <= PER_CLAIM_TARGET_NS)
        )
    });
    println!();
    println!(
        "claim rules: check_claims of the HS256 token with cut-offs of {CLAIMS_IN_FORCE} claims in force ({SESSION_CUTOFFS} sid, 1 client_id, 1 azp, 1 issuer-wide): {} (without: {}); added per claim: {}  target {target}",
        human(after),
        human(before),
        per_claim.map_or("-".to_owned(), |ns| format!("{ns:.1} ns")),
    );
}

fn print_report(medians: &Medians, cases: &[Case], setup: &Setup) {
    let view = setup.gateway.view().expect("the gateway is ready");
    println!();
    println!(
        "gateway check of a valid, unrevoked token; the gateway's filter came from revocd holding {REVOCATIONS} revocations and {SUBJECT_CUTOFFS} subject cut-offs ({view:?}, first snapshot applied {:.2} s after the gateway started)",
        setup.ready_after.as_secs_f64()
    );
    println!(
        "{:<6} {:>11} {:>11} {:>11} {:>13} {:>11} {:>11} {:>10}  target (revocation / decode)",
        "alg",
        "decode",
        "verify",
        "check",
        "check_claims",
        "rev/decode",
        "(chk-ver)/d",
        "chk/dec-1"
    );
    for case in cases {
        let ns = |id: &str| medians.ns(&format!("{}/{id}", case.name));
        let (decode, verify, check, revocation) =
            (ns("decode"), ns("verify"), ns("check"), ns("check_claims"));
        let share = |part: Option<f64>| part.zip(decode).map(|(part, decode)| part / decode);
        let percent =
            |share: Option<f64>| share.map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0));
        let direct = share(revocation);
        let difference = share(check.zip(verify).map(|(c, v)| c - v));
        let total = share(check.zip(decode).map(|(c, d)| c - d));
        let target = direct.map_or(String::new(), |share| {
            format!(
                "<= {:.0}% {}",
                case.target * 100.0,
                verdict(share <= case.target)
            )
        });
        println!(
            "{:<6} {:>11} {:>11} {:>11} {:>13} {:>11} {:>11} {:>10}  {target}",
            case.name.to_uppercase(),
            human(decode),
            human(verify),
            human(check),
            human(revocation),
            percent(direct),
            percent(difference),
            percent(total),
        );
    }
    println!("columns: medians of jsonwebtoken::decode (baseline), TokenVerifier::verify, Gateway::check (verify + revocation part), Gateway::check_claims (revocation part alone);");
    println!("rev/decode = check_claims / decode (the target); (chk-ver)/d = (check - verify) / decode; chk/dec-1 = whole check over the bare decode");
}
