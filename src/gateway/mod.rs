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

mod layer;
mod view;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::backoff::ExponentialBackoff;
use crate::bounds::BoundsError;
use crate::filter::Digest;
use crate::pb::revocation_service_client::RevocationServiceClient;
use crate::pb::CheckRequest;
use crate::tokens::{Claims, TokenError, TokenVerifier};

pub use self::layer::{
    bearer_token, challenge, refusal, token_of, RevocationLayer, RevocationService,
};
pub use self::view::{FilterView, FrameError, SnapshotAssembler};

/// Largest frame accepted from the server. Snapshot parts hold 16 KiB of
/// filter and a delta at most 100,000 digests (about 1.8 MiB); the rest is
/// room for servers configured otherwise.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// Default staleness past which the [`StalePolicy`] applies.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);
/// Most confirmed answers cached; the cache is cleared when full.
const CONFIRM_CACHE_ENTRIES: usize = 100_000;

/// What to do when the filter is stale or not loaded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalePolicy {
    /// Keep answering from the last filter (revocations made meanwhile are
    /// missed until the stream returns).
    FailOpen,
    /// Refuse every token.
    FailClosed,
    /// Ask the server about every token (the default: safe, and available
    /// while any replica answers).
    #[default]
    CheckOnline,
}

impl std::str::FromStr for StalePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fail-open" => Ok(StalePolicy::FailOpen),
            "fail-closed" => Ok(StalePolicy::FailClosed),
            "check-online" => Ok(StalePolicy::CheckOnline),
            other => Err(format!(
                "{other:?} is not fail-open, fail-closed or check-online"
            )),
        }
    }
}

/// How a gateway reaches revocd.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    endpoints: Vec<String>,
    /// Where `Check` calls (confirms) go; empty: `endpoints`.
    confirm_endpoints: Vec<String>,
    api_key: Option<MetadataValue<Ascii>>,
    gateway_id: String,
    max_staleness: Duration,
    on_stale: StalePolicy,
    /// A stream silent this long is dropped and re-established.
    idle_timeout: Duration,
    connect_timeout: Duration,
    backoff: ExponentialBackoff,
    tls: Option<ClientTlsConfig>,
}

/// Why a gateway could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint, or one that is not a URL.
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    /// An API key that cannot be sent as metadata.
    #[error("the API key contains characters not allowed in gRPC metadata")]
    ApiKey,
    /// A TLS configuration the transport refuses.
    #[error("TLS: {0}")]
    Tls(String),
}

impl GatewayConfig {
    /// Endpoints to subscribe to, tried in turn (`http://host:port`).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        GatewayConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            confirm_endpoints: Vec::new(),
            api_key: None,
            gateway_id: "gateway".into(),
            max_staleness: DEFAULT_MAX_STALENESS,
            on_stale: StalePolicy::default(),
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            // Valid constants: min below max, jitter within [0, 1].
            backoff: ExponentialBackoff::try_new(
                Duration::from_millis(100),
                Duration::from_secs(5),
                0.3,
            )
            .expect("valid backoff"),
            tls: None,
        }
    }

    /// Endpoints for the `Check` calls that settle a filter "maybe"
    /// (`http://host:port`, balanced over all of them), when they must
    /// differ from the subscription endpoints: a path through another
    /// proxy, or replicas kept for reads. By default confirms go to the
    /// endpoints given to [`GatewayConfig::new`].
    pub fn confirm_endpoints<S: Into<String>>(
        mut self,
        endpoints: impl IntoIterator<Item = S>,
    ) -> Self {
        self.confirm_endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// TLS towards the servers (for `https://` endpoints): the CA to trust
    /// and, for mutual TLS, the certificate to present.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The API key (role `subscribe`) sent with every call.
    ///
    /// # Errors
    /// [`Error::ApiKey`] for a key that is not ASCII metadata.
    pub fn api_key(mut self, key: &str) -> Result<Self, Error> {
        let value = format!("Bearer {}", key.trim())
            .parse()
            .map_err(|_| Error::ApiKey)?;
        self.api_key = Some(value);
        Ok(self)
    }

    /// A name for this gateway in the server's logs.
    pub fn gateway_id(mut self, id: impl Into<String>) -> Self {
        self.gateway_id = id.into();
        self
    }

    /// Staleness past which `on_stale` applies.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = staleness;
        self
    }

    /// What to do when stale.
    pub fn on_stale(mut self, policy: StalePolicy) -> Self {
        self.on_stale = policy;
        self
    }

    /// The reconnect schedule.
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A stream silent this long is re-established (default 10 s; keep it
    /// above the server's heartbeat interval).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The subscription endpoints, parsed.
    fn parsed_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.parse(&self.endpoints)
    }

    /// The confirm endpoints, parsed, with their call timeout.
    fn parsed_confirm_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        let urls = if self.confirm_endpoints.is_empty() {
            &self.endpoints
        } else {
            &self.confirm_endpoints
        };
        let endpoints = self.parse(urls)?;
        Ok(endpoints
            .into_iter()
            .map(|e| e.timeout(self.connect_timeout))
            .collect())
    }

    fn parse(&self, urls: &[String]) -> Result<Vec<Endpoint>, Error> {
        if urls.is_empty() {
            return Err(Error::Endpoint(String::new()));
        }
        urls.iter()
            .map(|url| {
                let mut endpoint =
                    Endpoint::from_shared(url.clone()).map_err(|_| Error::Endpoint(url.clone()))?;
                if let Some(tls) = &self.tls {
                    endpoint = endpoint
                        .tls_config(tls.clone())
                        .map_err(|e| Error::Tls(e.to_string()))?;
                }
                // No call timeout here: a subscription may wait for a
                // replica's first load; confirm calls set their own.
                Ok(endpoint.connect_timeout(self.connect_timeout))
            })
            .collect()
    }
}

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
    /// The filter is stale and the policy is `FailClosed`.
    #[error("revocation data is stale; refusing tokens until it is current")]
    Stale,
    /// The server could not confirm (`CheckOnline`, or a filter "maybe").
    #[error("the revocation service could not be asked: {0}")]
    Unconfirmed(String),
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

/// A confirm cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmed {
    /// A `Check` is under way, started with this ticket.
    Pending(u64),
    /// The server's answer, kept until `until` (unix seconds).
    Answer { revoked: bool, until: i64 },
}

/// Confirmed answers by token digest (the digest covers issuer and jti).
///
/// A "not revoked" answer is only as good as the moment the server read
/// it: a delta naming the token may arrive while the call is under way,
/// and caching the answer after that delta's [`ConfirmCache::forget`]
/// would allow a revoked token until it expires. So a call takes a ticket
/// first ([`ConfirmCache::begin`]); `forget` and `clear` drop tickets with
/// the answers, and a "not revoked" answer is cached only if its own ticket
/// is still there. "Revoked" is always cached: it cannot become wrong.
#[derive(Default)]
pub(crate) struct ConfirmCache {
    entries: Mutex<HashMap<Digest, Confirmed>>,
    next_ticket: AtomicU64,
}

impl ConfirmCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Confirmed>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, digest: &Digest, now: i64) -> Option<bool> {
        match self.lock().get(digest) {
            Some(Confirmed::Answer { revoked, until }) if *until > now => Some(*revoked),
            _ => None,
        }
    }

    /// Marks a `Check` of `digest` as under way; returns its ticket.
    fn begin(&self, digest: Digest) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.insert(digest, Confirmed::Pending(ticket));
        ticket
    }

    /// Caches the answer of the call holding `ticket` (see the type doc).
    fn put(&self, digest: Digest, ticket: u64, revoked: bool, until: i64) {
        let answer = Confirmed::Answer { revoked, until };
        if revoked {
            self.insert(digest, answer);
            return;
        }
        let mut cache = self.lock();
        if let Some(entry) = cache.get_mut(&digest) {
            if *entry == Confirmed::Pending(ticket) {
                *entry = answer;
            }
        }
    }

    fn insert(&self, digest: Digest, entry: Confirmed) {
        let mut cache = self.lock();
        if cache.len() >= CONFIRM_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, entry);
    }

    /// Drops the answers (and calls under way) for digests a delta reports
    /// as revoked.
    fn forget(&self, digests: &[bytes::Bytes]) {
        let mut cache = self.lock();
        if cache.is_empty() {
            return;
        }
        for bytes in digests {
            if let Ok(digest) = Digest::from_slice(bytes) {
                cache.remove(&digest);
            }
        }
    }

    fn clear(&self) {
        self.lock().clear();
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
    verifier: TokenVerifier,
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
        let shared = Arc::new(watch::Shared::new());
        let stop = CancellationToken::new();
        tokio::spawn(watch::run(
            Arc::clone(&shared),
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
        if let (Some(view), Some(subject)) = (view, claims.subject.as_deref()) {
            let digest = view.digest_key().subject(&claims.issuer, subject);
            if let Some(cutoff) = view.subject_cutoff(&digest) {
                // `iat < cut-off`, as everywhere: a "now" cut-off is stored
                // as the next second, so it covers the whole second it was
                // made in (see the server's `cutoff_time`).
                if claims.issued_at.is_none_or(|iat| iat < cutoff) {
                    return Verdict::Deny(Denial::RevokedBySubject);
                }
            }
        }
        if stale && self.inner.on_stale == StalePolicy::CheckOnline {
            return Verdict::Confirm(claims);
        }
        let Some(view) = view else {
            // Fail-open with no filter yet: nothing to check against.
            return Verdict::Allow(claims);
        };
        let digest = view.digest_key().token(&claims.issuer, jti);
        if !view.may_be_revoked(&digest) {
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
