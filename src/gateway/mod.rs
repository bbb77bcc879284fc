//! The gateway library: check every request's token in-process, against a
//! filter streamed from revocd.
//!
//! ```no_run
//! # async fn example(verifier: revocd::tokens::TokenVerifier) -> Result<(), revocd::gateway::Error> {
//! use revocd::gateway::{token_of, Decision, Gateway, GatewayConfig};
//!
//! let config = GatewayConfig::new(["http://revocd-a:50051", "http://revocd-b:50051"])
//!     .api_key("subscribe-key")?;
//! let gateway = Gateway::spawn(config, verifier)?;
//! match gateway.decide(token_of("Bearer eyJ...")).await {
//!     Decision::Allow(claims) => { /* serve the request */ }
//!     Decision::Deny(denial) => { /* 401 (or 503 if denial.is_unavailable()) */ }
//! }
//! # Ok(()) }
//! ```
//!
//! # How a token is judged
//!
//! [`Gateway::check`] is synchronous and never touches the network:
//! verify the JWT (signature, `iss`, `aud`, `nbf`, `exp` with leeway) →
//! the subject's cut-off (exact) → the filter. "Not in the filter" means
//! certainly not revoked: allow. "Maybe" means revoked or a false positive
//! (0.1% by default): [`Verdict::Confirm`], which [`Gateway::confirm`]
//! settles with the server's authoritative `Check`, cached until the token
//! expires (and dropped if a later delta names the token; an answer whose
//! call was under way when such a delta arrived is not cached at all).
//!
//! # What is accepted at all
//!
//! Only tokens the server can keep revoked for their whole life (see
//! [`crate::bounds`]): a token is expired at `exp` plus the smaller of the
//! verifier's leeway and the server's, on the server's clock as far as its
//! heartbeats show it ahead of ours; and a token without `iat`, issued in
//! the future, living longer than the server's `--max-token-lifetime`, or
//! with a `jti`/`sub`/`iss` the server could not store, is refused
//! ([`Denial::Unrevocable`]). The server announces its numbers in every
//! snapshot.
//!
//! # Staleness
//!
//! Staleness is the time since the last heartbeat (every 2 s by default).
//! A server sends heartbeats only while it applies every change of its log
//! (not while it reloads or catches up), so a heartbeat means: every
//! change up to its cursor is in this gateway's filter. Deltas alone do not
//! refresh it. Past `max_staleness` (default 30 s), or before the first
//! snapshot, the [`StalePolicy`] decides: `CheckOnline` (the default) asks
//! the server about every token — correct, at a network call per request,
//! and a refusal (503) while no replica answers; `FailClosed` refuses every
//! token; `FailOpen` keeps answering from the last filter, so revocations
//! made during the outage are missed until it reconnects — availability
//! over the promise, to be chosen knowingly.

mod clock;
mod config;
mod confirm;
mod layer;
mod state;
mod view;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::bounds::BoundsError;
use crate::pb::revocation_service_client::RevocationServiceClient;
use crate::pb::CheckRequest;
use crate::tokens::{Claims, TokenError, TokenVerifier};

pub use self::config::{Error, GatewayConfig, StalePolicy, DEFAULT_MAX_STALENESS};
pub use self::layer::{
    bearer_token, challenge, refusal, token_of, RevocationLayer, RevocationService,
};
pub use self::state::{StateError, SAVE_INTERVAL};
pub use self::view::{FilterView, FrameError, SnapshotAssembler, MAX_CLAIMS, MAX_CLAIM_NAME_BYTES};

use self::confirm::ConfirmCache;

/// Largest frame accepted from the server. Snapshot parts hold 16 KiB of
/// filter and a delta at most 100,000 digests (about 1.8 MiB); the rest is
/// room for servers configured otherwise.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// The answer for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and not revoked.
    Allow(Claims),
    /// Refused; the denial says why.
    Deny(Denial),
    /// Valid, but only the server can say whether it is revoked (a filter
    /// "maybe", or a stale filter under `CheckOnline`).
    Confirm(Claims),
}

/// The final answer for a request: a [`Verdict`] with every "maybe"
/// settled by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Valid and not revoked; the claims describe the caller.
    Allow(Claims),
    /// Refused; the denial says why.
    Deny(Denial),
}

impl From<Decision> for Verdict {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Allow(claims) => Verdict::Allow(claims),
            Decision::Deny(denial) => Verdict::Deny(denial),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The request carries no bearer token.
    #[error("no bearer token")]
    NoToken,
    /// The token does not verify.
    #[error("{0}")]
    Invalid(#[from] TokenError),
    /// `exp` (plus leeway) has passed.
    #[error("the token has expired")]
    Expired,
    /// The token has no `jti`, so it cannot be checked for revocation.
    #[error("the token has no jti claim")]
    NoJti,
    /// The server could not keep the token revoked for its whole life
    /// (see [`crate::bounds`]).
    #[error("{0}")]
    Unrevocable(BoundsError),
    /// Revoked by its own record.
    #[error("the token has been revoked")]
    Revoked,
    /// Revoked by its subject's cut-off.
    #[error("the token has been revoked (all tokens of its subject issued before a cut-off)")]
    RevokedBySubject,
    /// Revoked by a cut-off on another claim (`sid`, `client_id`, `azp`),
    /// or issuer-wide (`*`).
    #[error("the token has been revoked (all tokens of {} issued before a cut-off)", claim_scope(.0))]
    RevokedByClaim(String),
    /// The filter is stale and the policy is `FailClosed`.
    #[error("revocation data is stale; refusing tokens until it is current")]
    Stale,
    /// The server could not confirm (`CheckOnline`, or a filter "maybe").
    #[error("the revocation service could not be asked: {0}")]
    Unconfirmed(String),
}

/// What a cut-off on `claim` covers, for people: "its sid", or "its
/// issuer" for an issuer-wide one.
fn claim_scope(claim: &str) -> String {
    match claim {
        crate::tokens::ISSUER_WIDE => "its issuer".to_owned(),
        claim => format!("its {claim}"),
    }
}

impl Denial {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::Invalid(_) => "invalid",
            Denial::Expired => "expired",
            Denial::NoJti => "no_jti",
            Denial::Unrevocable(_) => "unrevocable",
            Denial::Revoked => "revoked",
            Denial::RevokedBySubject => "revoked_by_subject",
            Denial::RevokedByClaim(_) => "revoked_by_claim",
            Denial::Stale => "stale",
            Denial::Unconfirmed(_) => "unconfirmed",
        }
    }

    /// True when the denial is about the service, not the token (the HTTP
    /// answer is 503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Denial::Stale | Denial::Unconfirmed(_))
    }
}

/// A gateway: a streamed filter and the checks made against it. Cheap to
/// clone; the subscription stops when the last clone is dropped.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<watch::Shared>,
    verifier: Arc<TokenVerifier>,
    leeway: i64,
    max_staleness: Duration,
    on_stale: StalePolicy,
    api_key: Option<MetadataValue<Ascii>>,
    /// Balanced over every confirm endpoint, for `Check` calls.
    confirm_channel: Channel,
    _stop: DropGuard,
}

impl Gateway {
    /// Starts subscribing (on the current Tokio runtime) and returns at
    /// once; until the first snapshot arrives the filter counts as stale.
    ///
    /// # Errors
    /// [`Error`] for an endpoint or key that cannot be used.
    pub fn spawn(config: GatewayConfig, verifier: TokenVerifier) -> Result<Gateway, Error> {
        let endpoints = config.parsed_endpoints()?;
        let confirm_channel = Channel::balance_list(config.parsed_confirm_endpoints()?.into_iter());
        let shared = Arc::new(watch::Shared::new(crate::time::Clock::System));
        let stop = CancellationToken::new();
        let verifier = Arc::new(verifier);
        tokio::spawn(watch::run(
            Arc::clone(&shared),
            Arc::clone(&verifier),
            config.clone(),
            endpoints,
            stop.clone(),
        ));
        Ok(Gateway {
            inner: Arc::new(Inner {
                shared,
                leeway: verifier.leeway() as i64,
                verifier,
                max_staleness: config.max_staleness,
                on_stale: config.on_stale,
                api_key: config.api_key,
                confirm_channel,
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// Judges a token from memory: see the module doc.
    pub fn check(&self, token: &str) -> Verdict {
        match self.inner.verifier.verify(token) {
            Ok(claims) => self.check_claims(claims),
            Err(error) => Verdict::Deny(Denial::Invalid(error)),
        }
    }

    /// Judges verified claims from memory; allocation-free unless the
    /// verdict is `Confirm` or `Deny`.
    pub fn check_claims(&self, claims: Claims) -> Verdict {
        let guard = self.inner.shared.view.load();
        let view = guard.as_deref();
        let now = self.inner.shared.server_now();
        if claims
            .expires_at
            .is_some_and(|exp| exp + self.leeway(view) <= now)
        {
            return Verdict::Deny(Denial::Expired);
        }
        if let Some(bounds) = view.and_then(FilterView::bounds) {
            if let Err(error) = bounds.judge(&claims, now) {
                return Verdict::Deny(Denial::Unrevocable(error));
            }
        }
        let Some(jti) = claims.jti.as_deref() else {
            return Verdict::Deny(Denial::NoJti);
        };
        let stale = self
            .staleness()
            .is_none_or(|s| s > self.inner.max_staleness);
        if stale && self.inner.on_stale == StalePolicy::FailClosed {
            return Verdict::Deny(Denial::Stale);
        }
        // Cut-offs held are applied even when stale: they only ever deny.
        // `iat < cut-off`, as everywhere: a "now" cut-off is stored as the
        // next second, so it covers the whole second it was made in (see
        // the server's `cutoff_time`); a token without `iat` is covered.
        let covers = |cutoff: Option<i64>| {
            cutoff.is_some_and(|cutoff| claims.issued_at.is_none_or(|iat| iat < cutoff))
        };
        let mut unreadable_claim = false;
        if let Some(view) = view {
            if let Some(subject) = claims.subject.as_deref() {
                let digest = view.digest_key().subject(&claims.issuer, subject);
                if covers(view.subject_cutoff(&digest)) {
                    return Verdict::Deny(Denial::RevokedBySubject);
                }
            }
            for claim in view.claims_cut() {
                let cut_off = claims.any_cut_value(claim, |value| {
                    let digest = view.digest_key().claim(&claims.issuer, claim, value);
                    covers(view.claim_cutoff(claim, &digest))
                });
                match cut_off {
                    Some(true) => return Verdict::Deny(Denial::RevokedByClaim(claim.to_owned())),
                    Some(false) => {}
                    // Cut-offs of a claim this library does not read: only
                    // the server can tell.
                    None => unreadable_claim = true,
                }
            }
        }
        if unreadable_claim || (stale && self.inner.on_stale == StalePolicy::CheckOnline) {
            return Verdict::Confirm(claims);
        }
        let Some(view) = view else {
            // Fail-open with no filter yet: nothing to check against.
            return Verdict::Allow(claims);
        };
        let digest = view.digest_key().token(&claims.issuer, jti);
        if !view.may_be_revoked(&digest, claims.expires_at) {
            return Verdict::Allow(claims);
        }
        let cached = self.inner.shared.confirmed.get(&digest, now);
        if cached.is_some() {
            metrics::counter!("revocd_gateway_confirm_cache_hits_total").increment(1);
        }
        match cached {
            Some(false) => Verdict::Allow(claims),
            Some(true) => Verdict::Deny(Denial::Revoked),
            None => Verdict::Confirm(claims),
        }
    }

    /// The leeway past `exp` within which a token is still accepted: the
    /// verifier's, or the server's when that is smaller (its records are
    /// gone after it).
    fn leeway(&self, view: Option<&FilterView>) -> i64 {
        let server = view.and_then(FilterView::bounds).map(|b| b.leeway);
        server.map_or(self.inner.leeway, |server| server.min(self.inner.leeway))
    }

    /// Settles a [`Verdict::Confirm`] with the server's `Check` by jti; the
    /// answer is cached until the token expires. A check by jti cannot see
    /// subject cut-offs the gateway does not hold yet; [`Gateway::check_confirmed`]
    /// sends the whole token and can.
    pub async fn confirm(&self, claims: Claims) -> Verdict {
        self.confirm_with(claims, None).await.into()
    }

    async fn confirm_with(&self, claims: Claims, token: Option<&str>) -> Decision {
        let Some(jti) = claims.jti.clone() else {
            return Decision::Deny(Denial::NoJti);
        };
        let view = self.inner.shared.view.load_full();
        // Taken before the call, so a delta naming the token while the call
        // is under way keeps a "not revoked" answer out of the cache.
        let ticket = view.as_ref().map(|view| {
            let digest = view.digest_key().token(&claims.issuer, &jti);
            (digest, self.inner.shared.confirmed.begin(digest))
        });
        let check = match token {
            Some(token) => CheckRequest {
                token: token.to_owned(),
                ..Default::default()
            },
            None => CheckRequest {
                jti,
                issuer: claims.issuer.clone(),
                ..Default::default()
            },
        };
        let mut request = tonic::Request::new(check);
        if let Some(key) = &self.inner.api_key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        let mut client = RevocationServiceClient::new(self.inner.confirm_channel.clone());
        let answer = match client.check(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                metrics::counter!("revocd_gateway_confirms_total", "result" => "error")
                    .increment(1);
                return Decision::Deny(Denial::Unconfirmed(status.message().to_owned()));
            }
        };
        let result = if answer.revoked {
            "revoked"
        } else {
            "not_revoked"
        };
        metrics::counter!("revocd_gateway_confirms_total", "result" => result).increment(1);
        if let Some((digest, ticket)) = ticket {
            let until = claims.expires_at.unwrap_or_default() + self.leeway(view.as_deref());
            let cache = &self.inner.shared.confirmed;
            cache.put(digest, ticket, answer.revoked, until);
        }
        if answer.revoked {
            Decision::Deny(if answer.by_subject {
                Denial::RevokedBySubject
            } else if !answer.claim.is_empty() {
                Denial::RevokedByClaim(
                    answer
                        .claim
                        .chars()
                        .take(view::MAX_CLAIM_NAME_BYTES)
                        .collect(),
                )
            } else {
                Denial::Revoked
            })
        } else {
            Decision::Allow(claims)
        }
    }

    /// [`Gateway::check`], then [`Gateway::confirm`] if needed: the answer
    /// is always `Allow` or `Deny` (see [`Gateway::decide`]).
    pub async fn check_confirmed(&self, token: &str) -> Verdict {
        self.decide(Some(token)).await.into()
    }

    /// The final answer for a request's token (`None`: the request carries
    /// none): [`Gateway::check`], and a "maybe" confirmed with the server
    /// (the whole token is sent, so the server also sees cut-offs this
    /// gateway does not hold yet).
    pub async fn decide(&self, token: Option<&str>) -> Decision {
        let Some(token) = token else {
            return Decision::Deny(Denial::NoToken);
        };
        match self.check(token) {
            Verdict::Allow(claims) => Decision::Allow(claims),
            Verdict::Deny(denial) => Decision::Deny(denial),
            Verdict::Confirm(claims) => self.confirm_with(claims, Some(token)).await,
        }
    }

    /// Whole snapshots this gateway has applied since it started: 1 after
    /// a cold start, 0 after resuming from its state directory, one more
    /// at every re-basing or new generation.
    pub fn snapshots_applied(&self) -> u64 {
        self.inner
            .shared
            .snapshots
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Time since the last frame; `None` before the first.
    pub fn staleness(&self) -> Option<Duration> {
        self.inner.shared.staleness()
    }

    /// The current filter view, `None` before the first snapshot.
    pub fn view(&self) -> Option<Arc<FilterView>> {
        self.inner.shared.view.load_full()
    }

    /// Waits until a snapshot has been applied or `timeout` passes; true if
    /// one has.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.view().is_none() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("view", &self.view())
            .field("staleness", &self.staleness())
            .finish_non_exhaustive()
    }
}
